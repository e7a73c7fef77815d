//! Whether the desktop shows tray icons. Linux panels show them through a
//! StatusNotifierWatcher on the session bus (KDE, XFCE, most panels; GNOME only with the
//! AppIndicator extension). Without one the icon is nowhere to be seen, so an app
//! started `--minimized` (at login) would be invisible with no way to open it: the
//! window is shown instead, and `chroxy doctor` says why.

/// What the session bus says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TrayHost {
    /// A StatusNotifierWatcher is there: the icon shows.
    Present,
    /// A session bus without one (stock GNOME): the icon would not show.
    Absent,
    /// No session bus to ask (no desktop session, or not Linux).
    Unknown,
}

/// The bus name every StatusNotifierItem host registers under.
const WATCHER: &str = "org.kde.StatusNotifierWatcher";

/// Asks the session bus (blocking, at most a second).
pub fn probe() -> TrayHost {
    #[cfg(target_os = "linux")]
    {
        let asked = || -> zbus::Result<bool> {
            let bus = zbus::blocking::Connection::session()?;
            let daemon = zbus::blocking::fdo::DBusProxy::new(&bus)?;
            daemon
                .name_has_owner(WATCHER.try_into()?)
                .map_err(zbus::Error::from)
        };
        match asked() {
            Ok(true) => TrayHost::Present,
            Ok(false) => TrayHost::Absent,
            Err(_) => TrayHost::Unknown,
        }
    }
    #[cfg(not(target_os = "linux"))]
    {
        TrayHost::Unknown
    }
}

/// What `chroxy doctor` says of it.
pub fn advice(host: TrayHost) -> (bool, &'static str) {
    match host {
        TrayHost::Present => (true, "the desktop shows tray icons (a StatusNotifierWatcher is on the session bus)"),
        TrayHost::Absent => (false, "this desktop shows no tray icons (no StatusNotifierWatcher on the session bus, as on stock GNOME): the tray app shows its window at login instead of only an icon; on GNOME, install the \"AppIndicator and KStatusNotifierItem Support\" extension"),
        TrayHost::Unknown => (true, "no desktop session to ask about tray icons (fine for `chroxy start` and the service)"),
    }
}
