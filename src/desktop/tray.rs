//! The tray icon and its menu as data: the items, their order and labels, what each
//! asks of the app ([`Item::ask`]), and [`plan`], which decides everything the tray shows
//! from the view (the icon, the tooltip, which items are checked). The shell only draws
//! plans and carries out what each item asks.

use std::sync::Mutex;

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
    /// Its menu id, what a click reports ([`Item::from_id`] reads it back).
    pub fn id(self) -> String {
        format!("{self:?}")
    }

    /// The item a click on the menu id `id` means; `None` for any other id.
    pub fn from_id(id: &str) -> Option<Item> {
        Item::all().find(|item| item.id() == id)
    }

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

/// The plan the tray shows, so that a new view draws only what changed: each change is
/// a D-Bus round trip for the panel, and the status changes with every heartbeat.
#[derive(Debug)]
pub struct Drawn(Mutex<Option<TrayPlan>>);

impl Drawn {
    /// The tray as first drawn.
    pub fn new(plan: TrayPlan) -> Self {
        Self(Mutex::new(Some(plan)))
    }

    /// Draws `now` with `draw(icon, now)` unless it is what the tray shows already;
    /// `icon` is the new icon, `None` when the icon has not changed. `whole` draws it
    /// all, even what is drawn right: a check item toggles itself when clicked, whatever
    /// the click then does. The lock is held while drawing, so draws never cross.
    pub fn follow<E>(
        &self,
        now: TrayPlan,
        whole: bool,
        draw: impl FnOnce(Option<&'static [u8]>, &TrayPlan) -> Result<(), E>,
    ) -> Result<(), E> {
        let mut shown = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let before = shown.take().filter(|_| !whole);
        if before.as_ref() == Some(&now) {
            *shown = before;
            return Ok(());
        }
        let icon = (before.map(|b| b.look) != Some(now.look)).then(|| now.icon());
        let drawn = draw(icon, &now);
        *shown = Some(now);
        drawn
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
                assert!(plan.icon() == icon, "the wrong icon for {case}");
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
        assert!(plan.icon() == red, "could not start: the red icon");
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
            .map(|&look| {
                let icon = TrayPlan {
                    look,
                    tooltip: String::new(),
                    status: String::new(),
                    tunnel: TunnelChoice::Quick,
                    autostart: false,
                }
                .icon();
                (look, drawing(icon))
            })
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

    #[test]
    fn a_click_names_its_item_and_nothing_else() {
        let items: Vec<Item> = Item::all().collect();
        assert_eq!(items.len(), 14, "every item once: {items:?}");
        for item in &items {
            assert_eq!(Item::from_id(&item.id()), Some(*item));
        }
        assert_eq!(
            Item::from_id("Tunnel(Named)"),
            Some(Item::Tunnel(TunnelChoice::Named))
        );
        for other in ["", "quit", "Tunnel", "Tunnel(Carrier)", "Quit "] {
            assert_eq!(Item::from_id(other), None, "{other:?}");
        }
    }

    #[test]
    fn only_what_changed_is_drawn_again_unless_the_whole_tray_is_asked_for() {
        let healthy = |choice| {
            let view = View::running(status(StateName::Healthy, "none", "off"), None, choice);
            plan(&view, false)
        };
        let failed = plan(
            &View::failed("port 8765 is in use", TunnelChoice::None),
            false,
        );
        let drawn = Drawn::new(healthy(TunnelChoice::Quick));
        // What `follow` draws: whether with a new icon, and the tunnel checked.
        let follow = |now: TrayPlan, whole: bool| {
            let mut draw = None;
            let done = drawn.follow(now, whole, |icon, now| {
                draw = Some((icon.is_some(), now.tunnel));
                Ok::<_, ()>(())
            });
            assert_eq!(done, Ok(()));
            draw
        };
        assert_eq!(
            follow(healthy(TunnelChoice::Quick), false),
            None,
            "as shown"
        );
        assert_eq!(
            follow(healthy(TunnelChoice::None), false),
            Some((false, TunnelChoice::None)),
            "a new check, the same icon"
        );
        assert_eq!(
            follow(healthy(TunnelChoice::None), true),
            Some((true, TunnelChoice::None)),
            "asked for, all of it, the icon too"
        );
        assert_eq!(
            follow(failed.clone(), false),
            Some((true, TunnelChoice::None)),
            "a new look, a new icon"
        );
        assert_eq!(follow(failed, false), None);
    }
}
