//! What the desktop session does for the tray app, without a toolkit: the clipboard
//! (X11's, through `arboard`), the opener (`xdg-open`, through `open`), Start at login (an
//! XDG autostart entry, through `auto-launch`), and one app per user (a name on the
//! session bus, through `zbus`).

use std::path::Path;
use std::sync::Mutex;

/// The app's name on the desktop: its autostart entry's.
const APP_NAME: &str = "Chroxy";

/// What the autostart entry adds to the app's command line.
const AT_LOGIN: &str = "--minimized";

/// The clipboard. On X11 the text copied is served by the process that copied it, for
/// as long as it holds the clipboard: the tray app holds it for its whole life.
#[derive(Default)]
pub struct Clipboard(Mutex<Option<arboard::Clipboard>>);

impl Clipboard {
    /// Puts `text` on the clipboard.
    pub fn copy(&self, text: String) -> Result<(), arboard::Error> {
        let mut held = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let clipboard = match held.as_mut() {
            Some(clipboard) => clipboard,
            None => held.insert(arboard::Clipboard::new()?),
        };
        clipboard.set_text(text)
    }
}

/// Opens `target`, a page or a folder, with the desktop's opener (the first of the
/// openers `open` knows that starts), which is given none of Chroxy's secrets: the
/// browser it starts would keep them.
pub fn open(target: &str) -> std::io::Result<()> {
    let mut last = std::io::Error::other("no opener on this desktop (xdg-open, gio…)");
    for opener in open::commands(target) {
        let mut opener = tokio::process::Command::from(opener);
        crate::agent::env::withhold_private(&mut opener, &[]);
        opener
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        match opener.spawn() {
            Ok(mut started) => {
                // Reaped when it is done (xdg-open hands over to the browser and ends).
                tokio::spawn(async move { started.wait().await });
                return Ok(());
            }
            Err(err) => last = err,
        }
    }
    Err(last)
}

/// Start at login: the XDG autostart entry that starts `app` (this program) minimized.
pub struct LoginItem(auto_launch::AutoLaunch);

impl LoginItem {
    /// The entry for `app`.
    pub fn new(app: &Path) -> Result<Self, auto_launch::Error> {
        let built = auto_launch::AutoLaunchBuilder::new()
            .set_app_name(APP_NAME)
            .set_app_path(&app.to_string_lossy())
            .set_args(&[AT_LOGIN])
            .build()?;
        Ok(Self(built))
    }

    /// Whether it is on (off when that cannot be read).
    pub fn is_on(&self) -> bool {
        self.0.is_enabled().unwrap_or(false)
    }

    /// Turns it over.
    pub fn toggle(&self) -> Result<(), auto_launch::Error> {
        if self.is_on() {
            self.0.disable()
        } else {
            self.0.enable()
        }
    }
}

/// The bus name the first app of this user holds while it runs (the one Tauri's
/// single-instance plugin used, so an app of either kind finds the other).
const INSTANCE_NAME: &str = "dev.chroxy.desktop.SingleInstance";
const INSTANCE_PATH: &str = "/dev/chroxy/desktop/SingleInstance";

/// Whether this app is the first of its user.
pub enum Instance {
    /// It is: it holds the name for as long as it keeps this connection.
    First {
        /// Holds the name.
        _bus: zbus::Connection,
    },
    /// Another one runs; it was asked to show its window.
    Second,
    /// No session bus to ask: run (two apps then meet at the home's lock).
    Unknown,
}

/// A second launch's call.
struct Launched<F>(F);

#[zbus::interface(name = "org.SingleInstance.DBus")]
impl<F: Fn() + Send + Sync + 'static> Launched<F> {
    fn execute_callback(&self, _argv: Vec<String>, _cwd: String) {
        (self.0)();
    }
}

impl Instance {
    /// Takes the name, or asks the app that holds it to show its window. `launched`
    /// runs in the first app at every later launch.
    pub async fn claim(launched: impl Fn() + Send + Sync + 'static) -> Self {
        let Ok(bus) = zbus::Connection::session().await else {
            return Instance::Unknown;
        };
        // Served before the name is taken: a launch that finds the name finds this.
        if let Err(err) = bus
            .object_server()
            .at(INSTANCE_PATH, Launched(launched))
            .await
        {
            tracing::warn!(%err, "cannot serve later launches");
            return Instance::Unknown;
        }
        let flags = zbus::fdo::RequestNameFlags::DoNotQueue.into();
        match bus.request_name_with_flags(INSTANCE_NAME, flags).await {
            Ok(zbus::fdo::RequestNameReply::PrimaryOwner) => Instance::First { _bus: bus },
            Ok(_) | Err(zbus::Error::NameTaken) => {
                let argv: Vec<String> = std::env::args().collect();
                let cwd = std::env::current_dir().unwrap_or_default();
                let asked = bus
                    .call_method(
                        Some(INSTANCE_NAME),
                        INSTANCE_PATH,
                        Some("org.SingleInstance.DBus"),
                        "ExecuteCallback",
                        &(argv, cwd.to_string_lossy().as_ref()),
                    )
                    .await;
                if let Err(err) = asked {
                    tracing::warn!(%err, "the running app did not answer");
                }
                Instance::Second
            }
            Err(err) => {
                tracing::warn!(%err, "cannot ask the session bus for other instances");
                Instance::Unknown
            }
        }
    }
}
