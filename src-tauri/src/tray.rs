//! The tray icon and its menu. The icon's colour and tooltip follow the view; each item
//! is one supervisor action or one window/OS action.

use std::sync::Mutex;

use chroxy::launch::TunnelChoice;
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, Menu, MenuItem, PredefinedMenuItem, Submenu};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Wry};

use crate::view::{Look, View};

/// The menu's items, by id: what `on_menu` receives.
pub mod item {
    pub const SHOW: &str = "show";
    pub const SHOW_QR: &str = "show-qr";
    pub const RECONNECT: &str = "reconnect";
    pub const ROLLBACK: &str = "rollback";
    pub const RESTART: &str = "restart";
    pub const TUNNEL_QUICK: &str = "tunnel-quick";
    pub const TUNNEL_NAMED: &str = "tunnel-named";
    pub const TUNNEL_NONE: &str = "tunnel-none";
    pub const AUTOSTART: &str = "autostart";
    pub const STATUS_PAGE: &str = "status-page";
    pub const LOGS: &str = "logs";
    pub const QUIT: &str = "quit";
}

/// The tunnel a Tunnel ▸ item stands for.
pub fn tunnel_of(id: &str) -> Option<TunnelChoice> {
    match id {
        item::TUNNEL_QUICK => Some(TunnelChoice::Quick),
        item::TUNNEL_NAMED => Some(TunnelChoice::Named),
        item::TUNNEL_NONE => Some(TunnelChoice::None),
        _ => None,
    }
}

fn icon(look: Look) -> tauri::Result<Image<'static>> {
    Image::from_bytes(match look {
        Look::Healthy => include_bytes!("../../icons/tray-healthy.png"),
        Look::Restarting => include_bytes!("../../icons/tray-restarting.png"),
        Look::TunnelDown => include_bytes!("../../icons/tray-tunnel-down.png"),
        Look::Failed => include_bytes!("../../icons/tray-failed.png"),
    })
}

/// The tray, kept to follow the view.
pub struct Tray {
    icon: TrayIcon,
    tunnels: [(TunnelChoice, CheckMenuItem<Wry>); 3],
    autostart: CheckMenuItem<Wry>,
    shown: Mutex<Option<(Look, String, TunnelChoice)>>,
}

impl Tray {
    /// Builds the icon and its menu; `on_menu` gets each item's id, `on_click` a left
    /// click on the icon (where the platform reports one; Linux shows the menu instead).
    pub fn build(
        app: &AppHandle,
        view: &View,
        autostart: bool,
        on_menu: impl Fn(&AppHandle, &str) + Send + Sync + 'static,
        on_click: impl Fn(&AppHandle) + Send + Sync + 'static,
    ) -> tauri::Result<Self> {
        let check = |id: &str, text: &str, on: bool| {
            CheckMenuItem::with_id(app, id, text, true, on, None::<&str>)
        };
        let tunnels = [
            (
                TunnelChoice::Quick,
                check(item::TUNNEL_QUICK, "Quick (trycloudflare.com)", false)?,
            ),
            (
                TunnelChoice::Named,
                check(item::TUNNEL_NAMED, "Named (your hostname)", false)?,
            ),
            (
                TunnelChoice::None,
                check(item::TUNNEL_NONE, "None (this machine only)", false)?,
            ),
        ];
        let tunnel_menu = Submenu::with_items(
            app,
            "Tunnel",
            true,
            &[&tunnels[0].1, &tunnels[1].1, &tunnels[2].1],
        )?;
        let autostart = check(item::AUTOSTART, "Start at login", autostart)?;
        let plain = |id: &str, text: &str| MenuItem::with_id(app, id, text, true, None::<&str>);
        let menu = Menu::with_items(
            app,
            &[
                &plain(item::SHOW, "Show window")?,
                &plain(item::SHOW_QR, "Show QR code")?,
                &PredefinedMenuItem::separator(app)?,
                &plain(item::RECONNECT, "Force reconnect")?,
                &plain(item::ROLLBACK, "Roll back to known-good")?,
                &plain(item::RESTART, "Restart worker")?,
                &tunnel_menu,
                &PredefinedMenuItem::separator(app)?,
                &autostart,
                &plain(item::STATUS_PAGE, "Open status page")?,
                &plain(item::LOGS, "Open logs")?,
                &PredefinedMenuItem::separator(app)?,
                &plain(item::QUIT, "Quit Chroxy")?,
            ],
        )?;
        let icon = TrayIconBuilder::with_id("chroxy")
            .icon(icon(view.look)?)
            .tooltip(&view.summary)
            .menu(&menu)
            .show_menu_on_left_click(false)
            .on_menu_event(move |app, event| on_menu(app, event.id().as_ref()))
            .on_tray_icon_event(move |tray, event| {
                if let TrayIconEvent::Click {
                    button: MouseButton::Left,
                    button_state: MouseButtonState::Up,
                    ..
                } = event
                {
                    on_click(tray.app_handle());
                }
            })
            .build(app)?;
        let tray = Self {
            icon,
            tunnels,
            autostart,
            shown: Mutex::new(None),
        };
        tray.show(view);
        Ok(tray)
    }

    /// Follows the view: icon, tooltip, the Tunnel ▸ checks. Unchanged parts are left
    /// alone (each change is a D-Bus round trip for the panel).
    pub fn show(&self, view: &View) {
        let now = (view.look, view.summary.clone(), view.tunnel_choice);
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        if shown.as_ref() == Some(&now) {
            return;
        }
        let before = shown.replace(now);
        let result = (|| -> tauri::Result<()> {
            if before.as_ref().map(|b| b.0) != Some(view.look) {
                self.icon.set_icon(Some(icon(view.look)?))?;
            }
            self.icon.set_tooltip(Some(&view.summary))?;
            for (choice, item) in &self.tunnels {
                item.set_checked(*choice == view.tunnel_choice)?;
            }
            Ok(())
        })();
        if let Err(err) = result {
            tracing::warn!(%err, "cannot update the tray icon");
        }
    }

    /// Shows the view even where nothing changed (after a check item toggled itself).
    pub fn refresh(&self, view: &View) {
        self.shown.lock().unwrap_or_else(|e| e.into_inner()).take();
        self.show(view);
    }

    /// Puts the Start at login check back to what is true.
    pub fn set_autostart(&self, on: bool) {
        if let Err(err) = self.autostart.set_checked(on) {
            tracing::warn!(%err, "cannot update the Start at login item");
        }
    }
}
