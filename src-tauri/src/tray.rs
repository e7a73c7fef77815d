//! The tray icon and its menu, drawn from `chroxy::desktop::tray` (the menu as data, and
//! the pure [`plan`] of what it shows); [`install`] and [`show`] only draw plans. Each
//! item is one window command or one window/OS action ([`on_item`]).

use chroxy::desktop::tray::{plan, Drawn, Entry, Item, MENU, TUNNELS};
use chroxy::desktop::{Desktop, View};
use tauri::image::Image;
use tauri::menu::{
    CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu,
};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_opener::OpenerExt as _;

use crate::error::ShellError;
use crate::{commands, window};

/// The tray as drawn, kept (as managed state) to follow the view.
struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    checks: Vec<(Item, CheckMenuItem<R>)>,
    drawn: Drawn,
}

/// Draws the tray for the view now and keeps it to follow the next ones.
pub fn install<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let now = plan(&app.state::<Desktop>().view(), autostart(app));
    let mut checks = Vec::new();
    let mut item = |item: Item, label: &str| -> tauri::Result<Box<dyn IsMenuItem<R>>> {
        let (id, no_shortcut) = (item.id(), None::<&str>);
        let Some(on) = now.check(item) else {
            let plain = MenuItem::with_id(app, id, label, true, no_shortcut)?;
            return Ok(Box::new(plain));
        };
        let check = CheckMenuItem::with_id(app, id, label, true, on, no_shortcut)?;
        checks.push((item, check.clone()));
        Ok(Box::new(check))
    };
    let menu = Menu::new(app)?;
    for entry in MENU {
        match entry {
            Entry::One(one, label) => menu.append(item(one, label)?.as_ref())?,
            Entry::Separator => menu.append(&PredefinedMenuItem::separator(app)?)?,
            Entry::Tunnels => {
                let submenu = Submenu::new(app, "Tunnel", true)?;
                for (choice, label) in TUNNELS {
                    submenu.append(item(Item::Tunnel(choice), label)?.as_ref())?;
                }
                menu.append(&submenu)?;
            }
        }
    }
    let icon = TrayIconBuilder::with_id("chroxy")
        .icon(Image::from_bytes(now.icon())?)
        .tooltip(&now.tooltip)
        .menu(&menu)
        .show_menu_on_left_click(false)
        .on_menu_event(on_menu_event)
        .on_tray_icon_event(on_icon_event)
        .build(app)?;
    let drawn = Drawn::new(now);
    app.manage(Tray {
        icon,
        checks,
        drawn,
    });
    Ok(())
}

/// Follows the view (only what changed, unless `whole`: see [`Drawn::follow`]). Not on
/// the main thread: drawing waits for it. Nothing to do where there is no tray (on the
/// mock runtime).
pub fn show<R: Runtime>(app: &AppHandle<R>, view: &View, whole: bool) {
    let Some(tray) = app.try_state::<Tray<R>>() else {
        return;
    };
    let drawn = tray
        .drawn
        .follow(plan(view, autostart(app)), whole, |icon, now| {
            if let Some(icon) = icon {
                tray.icon.set_icon(Some(Image::from_bytes(icon)?))?;
            }
            tray.icon.set_tooltip(Some(&now.tooltip))?;
            for (item, check) in &tray.checks {
                check.set_checked(now.check(*item) == Some(true))?;
            }
            Ok::<_, tauri::Error>(())
        });
    if let Err(err) = drawn {
        tracing::warn!(%err, "cannot update the tray icon");
    }
}

/// Draws the whole tray for the view now (after a click on a check item).
pub fn refresh<R: Runtime>(app: &AppHandle<R>) {
    show(app, &app.state::<Desktop>().view(), true);
}

fn autostart<R: Runtime>(app: &AppHandle<R>) -> bool {
    app.autolaunch().is_enabled().unwrap_or(false)
}

fn on_menu_event<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    if let Some(item) = Item::from_id(event.id().as_ref()) {
        on_item(app.clone(), item);
    }
}

/// A left click on the icon shows the window (where the platform reports one; Linux
/// shows the menu instead).
fn on_icon_event<R: Runtime>(tray: &TrayIcon<R>, event: TrayIconEvent) {
    if let TrayIconEvent::Click {
        button: MouseButton::Left,
        button_state: MouseButtonState::Up,
        ..
    } = event
    {
        window::show(tray.app_handle());
    }
}

/// What each item does, off the menu's (main) thread: drawing the tray waits for it.
/// A command's answer goes to the window, as a button's; the others only say why not.
fn on_item<R: Runtime>(app: AppHandle<R>, item: Item) {
    tauri::async_runtime::spawn(async move {
        let answer = match item {
            Item::Show => return window::show(&app),
            Item::ShowQr => return window::point_at_qr(&app),
            Item::Quit => return app.state::<Desktop>().quit(),
            Item::Reconnect => commands::reconnect(app.clone()).await,
            Item::Rollback => commands::rollback(app.clone()).await,
            Item::Restart => commands::restart(app.clone()).await,
            Item::Tunnel(choice) => commands::set_tunnel(app.clone(), choice).await,
            Item::Autostart => return refused(&app, toggle_autostart(&app)),
            Item::StatusPage => return refused(&app, commands::open_status_page(app.clone())),
            Item::Logs => return refused(&app, open_logs(&app)),
        };
        window::tell(&app, answer);
    });
}

/// Tells the window why an item did nothing, if it did nothing.
fn refused<R: Runtime>(app: &AppHandle<R>, done: Result<(), ShellError>) {
    if let Err(err) = done {
        window::tell(app, Err(err));
    }
}

/// Turns Start at login over, then shows what is true.
fn toggle_autostart<R: Runtime>(app: &AppHandle<R>) -> Result<(), ShellError> {
    let (launcher, on) = (app.autolaunch(), autostart(app));
    let done = if on {
        launcher.disable()
    } else {
        launcher.enable()
    };
    refresh(app);
    Ok(done?)
}

fn open_logs<R: Runtime>(app: &AppHandle<R>) -> Result<(), ShellError> {
    let dir = app.state::<Desktop>().paths().logs_dir();
    app.opener()
        .open_path(dir.to_string_lossy(), None::<&str>)
        .map_err(|source| ShellError::Open {
            what: dir.display().to_string(),
            source: Box::new(source),
        })
}
