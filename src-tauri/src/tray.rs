//! The tray icon and its menu. [`plan`] decides everything they show from the view (the
//! icon, the tooltip, which items are checked); [`install`] and [`show`] only draw plans.
//! Each item is one window command or one window/OS action ([`on_item`]).

use std::future::Future;
use std::sync::Mutex;

use chroxy::launch::TunnelChoice;
use tauri::image::Image;
use tauri::menu::{
    CheckMenuItem, IsMenuItem, Menu, MenuEvent, MenuItem, PredefinedMenuItem, Submenu,
};
use tauri::tray::{MouseButton, MouseButtonState, TrayIcon, TrayIconBuilder, TrayIconEvent};
use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_opener::OpenerExt as _;

use crate::app::Desktop;
use crate::error::ShellError;
use crate::view::{Look, View};
use crate::{commands, window};

/// One item of the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    Show,
    ShowQr,
    Reconnect,
    Rollback,
    Restart,
    Tunnel(TunnelChoice),
    Autostart,
    StatusPage,
    Logs,
    Quit,
}

/// A line of the menu.
enum Entry {
    One(Item, &'static str),
    Separator,
    /// The Tunnel ▸ submenu: one item per choice.
    Tunnels,
}

const TUNNELS: [(TunnelChoice, &str); 3] = [
    (TunnelChoice::Quick, "Quick (trycloudflare.com)"),
    (TunnelChoice::Named, "Named (your hostname)"),
    (TunnelChoice::None, "None (this machine only)"),
];

/// The menu, top to bottom, with each item's label.
const MENU: [Entry; 13] = [
    Entry::One(Item::Show, "Show window"),
    Entry::One(Item::ShowQr, "Show QR code"),
    Entry::Separator,
    Entry::One(Item::Reconnect, "Force reconnect"),
    Entry::One(Item::Rollback, "Roll back to known-good"),
    Entry::One(Item::Restart, "Restart worker"),
    Entry::Tunnels,
    Entry::Separator,
    Entry::One(Item::Autostart, "Start at login"),
    Entry::One(Item::StatusPage, "Open status page"),
    Entry::One(Item::Logs, "Open logs"),
    Entry::Separator,
    Entry::One(Item::Quit, "Quit Chroxy"),
];

impl Item {
    /// Its menu id, what a click reports: only this module reads it back.
    fn id(self) -> String {
        format!("{self:?}")
    }

    /// Every item, in menu order.
    fn all() -> impl Iterator<Item = Item> {
        MENU.iter().flat_map(|entry| match entry {
            Entry::One(item, _) => vec![*item],
            Entry::Separator => vec![],
            Entry::Tunnels => TUNNELS.map(|(choice, _)| Item::Tunnel(choice)).to_vec(),
        })
    }
}

/// What the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayPlan {
    /// The icon's colour.
    pub look: Look,
    pub tooltip: String,
    /// The checked Tunnel ▸ item.
    pub tunnel: TunnelChoice,
    /// Whether Start at login is checked.
    pub autostart: bool,
}

/// The tray for `view`, with Start at login as the desktop has it.
pub fn plan(view: &View, autostart: bool) -> TrayPlan {
    TrayPlan {
        look: view.look,
        tooltip: view.summary.clone(),
        tunnel: view.tunnel_choice,
        autostart,
    }
}

impl TrayPlan {
    /// Whether `item` is checked; `None` for an item without a check mark.
    pub fn check(&self, item: Item) -> Option<bool> {
        match item {
            Item::Tunnel(choice) => Some(choice == self.tunnel),
            Item::Autostart => Some(self.autostart),
            _ => None,
        }
    }

    /// The icon, a PNG.
    pub fn icon(&self) -> &'static [u8] {
        match self.look {
            Look::Healthy => include_bytes!("../../icons/tray-healthy.png"),
            Look::Restarting => include_bytes!("../../icons/tray-restarting.png"),
            Look::TunnelDown => include_bytes!("../../icons/tray-tunnel-down.png"),
            Look::Failed => include_bytes!("../../icons/tray-failed.png"),
        }
    }
}

/// The tray as drawn, kept (as managed state) to follow the view.
struct Tray<R: Runtime> {
    icon: TrayIcon<R>,
    checks: Vec<(Item, CheckMenuItem<R>)>,
    /// The plan last drawn.
    shown: Mutex<Option<TrayPlan>>,
}

/// Draws the tray for the view now and keeps it to follow the next ones.
pub fn install<R: Runtime>(app: &AppHandle<R>) -> tauri::Result<()> {
    let now = plan(&app.state::<Desktop>().view(), autostart(app));
    let mut checks = Vec::new();
    let mut item = |item: Item, label: &str| -> tauri::Result<Box<dyn IsMenuItem<R>>> {
        Ok(match now.check(item) {
            Some(on) => {
                let check = CheckMenuItem::with_id(app, item.id(), label, true, on, None::<&str>)?;
                checks.push((item, check.clone()));
                Box::new(check)
            }
            None => Box::new(MenuItem::with_id(
                app,
                item.id(),
                label,
                true,
                None::<&str>,
            )?),
        })
    };
    let menu = Menu::new(app)?;
    for entry in &MENU {
        match entry {
            Entry::One(one, label) => menu.append(item(*one, label)?.as_ref())?,
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
    app.manage(Tray {
        icon,
        checks,
        shown: Mutex::new(Some(now)),
    });
    Ok(())
}

/// Follows the view: only what differs from the plan last drawn is drawn again (each
/// change is a D-Bus round trip for the panel). Nothing to do where there is no tray
/// (on the mock runtime).
pub fn show<R: Runtime>(app: &AppHandle<R>, view: &View) {
    let Some(tray) = app.try_state::<Tray<R>>() else {
        return;
    };
    let now = plan(view, autostart(app));
    let mut shown = tray.shown.lock().unwrap_or_else(|e| e.into_inner());
    if shown.as_ref() == Some(&now) {
        return;
    }
    if let Err(err) = tray.draw(shown.as_ref(), &now) {
        tracing::warn!(%err, "cannot update the tray icon");
    }
    *shown = Some(now);
}

/// Draws the whole plan, even what was drawn right: a check item toggles itself when
/// clicked, whatever the click then does. Not on the main thread (nor is [`show`]):
/// drawing waits for it.
pub fn refresh<R: Runtime>(app: &AppHandle<R>, view: &View) {
    if let Some(tray) = app.try_state::<Tray<R>>() {
        tray.shown.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
    show(app, view);
}

impl<R: Runtime> Tray<R> {
    fn draw(&self, before: Option<&TrayPlan>, now: &TrayPlan) -> tauri::Result<()> {
        if before.map(|b| b.look) != Some(now.look) {
            self.icon.set_icon(Some(Image::from_bytes(now.icon())?))?;
        }
        self.icon.set_tooltip(Some(&now.tooltip))?;
        for (item, check) in &self.checks {
            check.set_checked(now.check(*item) == Some(true))?;
        }
        Ok(())
    }
}

fn autostart<R: Runtime>(app: &AppHandle<R>) -> bool {
    app.autolaunch().is_enabled().unwrap_or(false)
}

fn on_menu_event<R: Runtime>(app: &AppHandle<R>, event: MenuEvent) {
    if let Some(item) = Item::all().find(|item| item.id() == event.id().as_ref()) {
        on_item(app, item);
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

/// What each item does.
fn on_item<R: Runtime>(app: &AppHandle<R>, item: Item) {
    match item {
        Item::Show => window::show(app),
        Item::ShowQr => window::point_at_qr(app),
        Item::Reconnect => answer(app, commands::reconnect),
        Item::Rollback => answer(app, commands::rollback),
        Item::Restart => answer(app, commands::restart),
        Item::Tunnel(choice) => answer(app, move |app| commands::set_tunnel(app, choice)),
        Item::Autostart => {
            // Off the menu's (main) thread: drawing the tray waits for that thread.
            let app = app.clone();
            tauri::async_runtime::spawn(async move { refused(&app, toggle_autostart(&app)) });
        }
        Item::StatusPage => refused(app, commands::open_status_page(app.clone())),
        Item::Logs => refused(app, open_logs(app)),
        Item::Quit => app.state::<Desktop>().quit(),
    }
}

/// Runs a command off the menu's thread; its answer goes to the window, as a button's.
fn answer<R, F>(app: &AppHandle<R>, command: impl FnOnce(AppHandle<R>) -> F + Send + 'static)
where
    R: Runtime,
    F: Future<Output = Result<String, ShellError>> + Send + 'static,
{
    let app = app.clone();
    tauri::async_runtime::spawn(async move {
        let answer = command(app.clone()).await;
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
    let launcher = app.autolaunch();
    let done = if launcher.is_enabled().unwrap_or(false) {
        launcher.disable()
    } else {
        launcher.enable()
    };
    refresh(app, &app.state::<Desktop>().view());
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

#[cfg(test)]
mod tests {
    use chroxy::supervisor::status::StateName;

    use super::*;
    use crate::view::tests::status;

    #[test]
    fn each_supervisor_state_has_its_icon_and_tooltip_and_the_checks_follow_the_choices() {
        let green = include_bytes!("../../icons/tray-healthy.png").as_slice();
        let amber = include_bytes!("../../icons/tray-restarting.png").as_slice();
        let grey = include_bytes!("../../icons/tray-tunnel-down.png").as_slice();
        let red = include_bytes!("../../icons/tray-failed.png").as_slice();
        let phones_wait = |what: &str| format!("Chroxy: {what} — phones wait");
        let cases = [
            (
                StateName::Healthy,
                "quick",
                "up",
                green,
                "Chroxy: healthy, 0 phones connected".to_owned(),
            ),
            (
                StateName::Healthy,
                "none",
                "off",
                green,
                "Chroxy: healthy, 0 phones connected".to_owned(),
            ),
            (
                StateName::Healthy,
                "quick",
                "reconnecting",
                grey,
                "Chroxy: tunnel reconnecting — phones elsewhere cannot connect".to_owned(),
            ),
            (
                StateName::Starting,
                "none",
                "off",
                amber,
                phones_wait("starting"),
            ),
            (
                StateName::Restarting,
                "quick",
                "up",
                amber,
                phones_wait("restarting"),
            ),
            (
                StateName::RollingBack,
                "quick",
                "up",
                amber,
                phones_wait("rolling back"),
            ),
            (
                StateName::Draining,
                "quick",
                "up",
                amber,
                phones_wait("stopping"),
            ),
            (
                StateName::Failed,
                "quick",
                "up",
                red,
                "Chroxy: failed — see the window".to_owned(),
            ),
        ];
        for (state, mode, tunnel, icon, tooltip) in cases {
            for ((choice, _), autostart) in TUNNELS.into_iter().zip([false, true, false]) {
                let view = View::running(status(state, mode, tunnel), None, choice);
                let plan = plan(&view, autostart);
                let case = format!("{state:?}, tunnel {mode}/{tunnel}, {choice:?}");
                assert!(plan.icon() == icon, "the wrong icon for {case}");
                assert_eq!(plan.tooltip, tooltip, "{case}");
                let checked: Vec<Item> = Item::all()
                    .filter(|item| plan.check(*item) == Some(true))
                    .collect();
                let mut expected = vec![Item::Tunnel(choice)];
                expected.extend(autostart.then_some(Item::Autostart));
                assert_eq!(checked, expected, "{case}");
            }
        }
        let plan = plan(
            &View::failed("port 8765 is in use", TunnelChoice::Quick),
            false,
        );
        assert!(plan.icon() == red, "could not start: the red icon");
        assert_eq!(plan.tooltip, "Chroxy could not start: port 8765 is in use");
        assert_eq!(plan.check(Item::Tunnel(TunnelChoice::Quick)), Some(true));
    }
}
