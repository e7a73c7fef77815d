//! The tray icon and its menu, drawn from `chroxy::desktop::tray` (the menu as data, and
//! the pure [`plan`] of what it shows); [`install`] and [`show`] only draw plans, and a
//! click carries out what its item asks ([`Item::ask`]).

use chroxy::desktop::tray::{plan, version_line, Drawn, Entry, Item, MENU, TUNNELS};
use chroxy::desktop::{Desktop, Reply, View};
use tauri::image::Image;
use tauri::menu::{CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Emitter, Manager, Runtime};
use tauri_plugin_autostart::ManagerExt as _;

use crate::commands;

/// The tray as drawn, kept (as managed state) to follow the view.
struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    /// The check items, each with what it is.
    items: Vec<(Item, CheckMenuItem<R>)>,
    /// The status line.
    status: MenuItem<R>,
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
    // Disabled: lines to read, not to click.
    let status = MenuItem::new(app, &now.status, false, None::<&str>)?;
    for entry in MENU {
        match entry {
            Entry::Status => menu.append(&status)?,
            Entry::Version => {
                menu.append(&MenuItem::new(app, version_line(), false, None::<&str>)?)?
            }
            Entry::One(one, label) => menu.append(item(one, label)?.as_ref())?,
            Entry::Separator => menu.append(&PredefinedMenuItem::separator(app)?)?,
            Entry::Tunnels => {
                let submenu = tauri::menu::Submenu::new(app, "Tunnel", true)?;
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
        .on_menu_event(on_item)
        // A left click shows the window (where the platform reports one; Linux shows
        // the menu instead).
        .on_tray_icon_event(|tray, event| {
            if let TrayIconEvent::Click {
                button: MouseButton::Left,
                button_state: MouseButtonState::Up,
                ..
            } = event
            {
                crate::show_window(tray.app_handle(), false);
            }
        })
        .build(app)?;
    let (items, drawn) = (checks, Drawn::new(now));
    app.manage(Tray {
        icon,
        items,
        status,
        drawn,
    });
    Ok(())
}

/// Follows the view (only what changed, unless `whole`: see [`Drawn::follow`]). Not on
/// the main thread: drawing waits for it. No tray (the mock runtime): nothing to do.
pub fn show<R: Runtime>(app: &AppHandle<R>, view: &View, whole: bool) {
    let Some(tray) = app.try_state::<Tray<R>>() else {
        return;
    };
    let now = plan(view, autostart(app));
    let drawn = tray.drawn.follow(now, whole, |icon, now| {
        if let Some(icon) = icon {
            tray.icon.set_icon(Some(Image::from_bytes(icon)?))?;
        }
        tray.icon.set_tooltip(Some(&now.tooltip))?;
        tray.status.set_text(&now.status)?;
        let mut checks = tray.items.iter();
        checks.try_for_each(|(item, check)| check.set_checked(now.check(*item) == Some(true)))
    });
    if let Err(err) = drawn {
        tracing::warn!(%err, "cannot update the tray icon");
    }
}

fn autostart<R: Runtime>(app: &AppHandle<R>) -> bool {
    app.autolaunch().is_enabled().unwrap_or(false)
}

/// Carries out what a clicked item asks, off the menu's (main) thread: drawing the tray
/// waits for it. A sentence or a refusal goes to the window (and the log), as a button's.
fn on_item<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    let (app, item) = (app.clone(), Item::from_id(event.id().as_ref()));
    tauri::async_runtime::spawn(async move {
        let Some(item) = item else { return };
        let answer = match commands::perform(&app, item.ask()).await {
            Ok(Reply::Said(sentence)) => Ok(sentence),
            Ok(_) => return,
            Err(err) => Err(err.to_string()),
        };
        match &answer {
            Ok(message) => tracing::info!(%message, "action done"),
            Err(message) => tracing::warn!(%message, "action refused"),
        }
        let _ = app.emit_to(crate::MAIN, "answer", &answer);
    });
}
