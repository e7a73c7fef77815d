//! The tray icon and its menu as data: the items, their order and labels, what each
//! asks of the app ([`Item::ask`]), and [`plan`], which decides everything the tray shows
//! from the view (the icon, the tooltip, which items are checked). The shell only draws
//! plans and carries out what each item asks.

use super::ask::Ask;
use super::view::{Look, View};
use crate::tunnel::TunnelChoice;

/// One item of the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Item {
    /// Shows the window.
    Show,
    /// Shows the window at the QR code.
    ShowQr,
    /// Copies the pairing link to the clipboard (for a phone that cannot scan: paste
    /// it into a message to yourself).
    CopyLink,
    /// Force reconnect.
    Reconnect,
    /// Roll back to the known-good release.
    Rollback,
    /// Restart the worker.
    Restart,
    /// One choice of the Tunnel ▸ submenu.
    Tunnel(TunnelChoice),
    /// Start at login (checked while it is on).
    Autostart,
    /// Opens the status page in the browser.
    StatusPage,
    /// Opens the log directory.
    Logs,
    /// Quits in order.
    Quit,
}

/// A line of the menu.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Entry {
    /// The state in a few words ([`TrayPlan::status`]), not clickable: Linux panels
    /// show no tooltip, so the menu says it.
    Status,
    /// "Chroxy 0.1.0 (abc1234)" ([`version_line`]), not clickable.
    Version,
    /// An item with its label.
    One(Item, &'static str),
    /// A separator.
    Separator,
    /// The Tunnel ▸ submenu: one item per choice of [`TUNNELS`].
    Tunnels,
}

/// The Tunnel ▸ submenu's choices, with their labels.
pub const TUNNELS: [(TunnelChoice, &str); 4] = [
    (TunnelChoice::Quick, "Quick (trycloudflare.com)"),
    (TunnelChoice::Named, "Named (your hostname)"),
    (TunnelChoice::Tailscale, "Tailscale (your tailnet)"),
    (TunnelChoice::None, "None (this machine only)"),
];

/// The menu, top to bottom.
pub const MENU: [Entry; 17] = [
    Entry::Status,
    Entry::Separator,
    Entry::One(Item::Show, "Show window"),
    Entry::One(Item::ShowQr, "Show QR code"),
    Entry::One(Item::CopyLink, "Copy pairing link"),
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
    Entry::Version,
    Entry::One(Item::Quit, "Quit Chroxy"),
];

/// The version line of the menu, as `chroxy --version` says it.
pub fn version_line() -> String {
    format!(
        "Chroxy {} ({})",
        crate::worker::VERSION,
        crate::worker::COMMIT
    )
}

impl Item {
    /// What a click on it asks of the app.
    pub fn ask(self) -> Ask {
        match self {
            Item::Show => Ask::ShowWindow,
            Item::ShowQr => Ask::ShowQr,
            Item::CopyLink => Ask::CopyLink,
            Item::Reconnect => Ask::Reconnect,
            Item::Rollback => Ask::Rollback,
            Item::Restart => Ask::Restart,
            Item::Tunnel(choice) => Ask::SetTunnel { choice },
            Item::Autostart => Ask::ToggleAutostart,
            Item::StatusPage => Ask::OpenStatusPage,
            Item::Logs => Ask::OpenLogs,
            Item::Quit => Ask::Quit,
        }
    }

    /// Every item, in menu order.
    #[cfg(test)]
    fn all() -> impl Iterator<Item = Item> {
        MENU.iter().flat_map(|entry| match entry {
            Entry::One(item, _) => vec![*item],
            Entry::Separator | Entry::Status | Entry::Version => vec![],
            Entry::Tunnels => TUNNELS.map(|(choice, _)| Item::Tunnel(choice)).to_vec(),
        })
    }
}

/// What the tray shows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrayPlan {
    /// The icon's colour.
    pub look: Look,
    /// The tooltip.
    pub tooltip: String,
    /// The menu's first line.
    pub status: String,
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
        status: view.status_line.clone(),
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

    /// The icon of `look`, a PNG.
    pub fn icon_of(look: Look) -> &'static [u8] {
        match look {
            Look::Healthy => include_bytes!("../../icons/tray-healthy.png"),
            Look::Restarting => include_bytes!("../../icons/tray-restarting.png"),
            Look::TunnelDown => include_bytes!("../../icons/tray-tunnel-down.png"),
            Look::Failed => include_bytes!("../../icons/tray-failed.png"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::desktop::view::tests::status;
    use crate::supervisor::status::StateName;

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
                "Healthy · 0 phones · tunnel up",
            ),
            (
                StateName::Healthy,
                "none",
                "off",
                green,
                "Chroxy: healthy, 0 phones connected".to_owned(),
                "Healthy · 0 phones · this machine only",
            ),
            (
                StateName::Healthy,
                "quick",
                "reconnecting",
                grey,
                "Chroxy: tunnel reconnecting — phones elsewhere cannot connect".to_owned(),
                "Healthy · 0 phones · tunnel reconnecting",
            ),
            (
                StateName::Starting,
                "none",
                "off",
                amber,
                phones_wait("starting"),
                "Starting · phones wait",
            ),
            (
                StateName::Restarting,
                "quick",
                "up",
                amber,
                phones_wait("restarting"),
                "Restarting · phones wait",
            ),
            (
                StateName::RollingBack,
                "quick",
                "up",
                amber,
                phones_wait("rolling back"),
                "Rolling back · phones wait",
            ),
            (
                StateName::Draining,
                "quick",
                "up",
                amber,
                phones_wait("stopping"),
                "Stopping · phones wait",
            ),
            (
                StateName::Failed,
                "quick",
                "up",
                red,
                "Chroxy: failed — see the window".to_owned(),
                "Failed · see the window",
            ),
        ];
        for (state, mode, tunnel, icon, tooltip, line) in cases {
            for ((choice, _), autostart) in TUNNELS.into_iter().zip([false, true, false]) {
                let view = View::running(status(state, mode, tunnel), None, choice);
                let plan = plan(&view, autostart);
                let case = format!("{state:?}, tunnel {mode}/{tunnel}, {choice:?}");
                assert!(
                    TrayPlan::icon_of(plan.look) == icon,
                    "the wrong icon for {case}"
                );
                assert_eq!(plan.tooltip, tooltip, "{case}");
                assert_eq!(plan.status, line, "{case}");
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
        assert!(
            TrayPlan::icon_of(plan.look) == red,
            "could not start: the red icon"
        );
        assert_eq!(plan.tooltip, "Chroxy could not start: port 8765 is in use");
        assert_eq!(plan.status, "Could not start · see the window");
        assert_eq!(plan.check(Item::Tunnel(TunnelChoice::Quick)), Some(true));
        let mut one = status(StateName::Healthy, "named", "up");
        one.clients = 1;
        let view = View::running(one, None, TunnelChoice::Named);
        assert_eq!(
            super::plan(&view, false).status,
            "Healthy · 1 phone · tunnel up"
        );
    }

    /// Where an icon is white (the drawing, not the state's colour).
    fn drawing(png: &[u8]) -> Vec<bool> {
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).unwrap();
        let step = frame.color_type.samples();
        buf[..frame.buffer_size()]
            .chunks(step)
            .map(|px| px[..3].iter().all(|&c| c > 200) && px.get(3).is_none_or(|&a| a > 128))
            .collect()
    }

    #[test]
    fn the_states_icons_differ_in_shape_not_only_colour() {
        let looks = [
            Look::Healthy,
            Look::Restarting,
            Look::TunnelDown,
            Look::Failed,
        ];
        let shapes: Vec<(Look, Vec<bool>)> = looks
            .iter()
            .map(|&look| (look, drawing(TrayPlan::icon_of(look))))
            .collect();
        for (i, (a, sa)) in shapes.iter().enumerate() {
            for (b, sb) in &shapes[i + 1..] {
                let differ = sa.iter().zip(sb).filter(|(x, y)| x != y).count();
                // Told apart without colour: by a badge, dozens of pixels, not a speck.
                assert!(
                    differ > 40,
                    "{a:?} and {b:?} differ in {differ} pixels of the drawing"
                );
            }
        }
    }

    #[test]
    fn each_item_asks_what_its_label_says() {
        let asks: Vec<(Item, Ask)> = Item::all().map(|item| (item, item.ask())).collect();
        let choice = |choice| Ask::SetTunnel { choice };
        assert_eq!(
            asks,
            [
                (Item::Show, Ask::ShowWindow),
                (Item::ShowQr, Ask::ShowQr),
                (Item::CopyLink, Ask::CopyLink),
                (Item::Reconnect, Ask::Reconnect),
                (Item::Rollback, Ask::Rollback),
                (Item::Restart, Ask::Restart),
                (
                    Item::Tunnel(TunnelChoice::Quick),
                    choice(TunnelChoice::Quick)
                ),
                (
                    Item::Tunnel(TunnelChoice::Named),
                    choice(TunnelChoice::Named)
                ),
                (
                    Item::Tunnel(TunnelChoice::Tailscale),
                    choice(TunnelChoice::Tailscale)
                ),
                (Item::Tunnel(TunnelChoice::None), choice(TunnelChoice::None)),
                (Item::Autostart, Ask::ToggleAutostart),
                (Item::StatusPage, Ask::OpenStatusPage),
                (Item::Logs, Ask::OpenLogs),
                (Item::Quit, Ask::Quit),
            ]
        );
    }
}
