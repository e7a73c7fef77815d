//! What the window and the tray show, derived from the supervisor's status and the
//! current pairing alone, so the icon, the tooltip and the window never disagree.

use serde::Serialize;

use crate::pairing::Pairing;
use crate::supervisor::status::{StateName, Status};
use crate::tunnel::{TunnelChoice, TunnelMode};

/// Everything the window renders, sent whole on every change.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct View {
    /// The supervisor's status; `None` when it could not start.
    pub status: Option<Status>,
    /// Why it could not start.
    pub error: Option<String>,
    /// What the phone scans; `None` until the tunnel has a URL.
    pub pairing: Option<PairingView>,
    /// The Tunnel menu's choice.
    pub tunnel_choice: TunnelChoice,
    /// The icon's state.
    pub look: Look,
    /// The tooltip's text.
    pub summary: String,
    /// The tray menu's first line, the tooltip in a few words ("Healthy · 2 phones ·
    /// tunnel up"): Linux panels show no tooltip.
    pub status_line: String,
    /// Under the address, while it is a quick tunnel's: it will not survive a restart.
    pub address_note: Option<&'static str>,
}

/// What the window says under a quick tunnel's address.
pub const QUICK_ADDRESS_NOTE: &str = "This address changes each time Chroxy starts, and phones must scan again. For one that stays: Tunnel ▸ Named or Tailscale in the tray menu.";

impl View {
    /// The view of a running supervisor.
    pub fn running(status: Status, pairing: Option<&Pairing>, tunnel_choice: TunnelChoice) -> Self {
        Self {
            look: Look::of(Some(&status)),
            summary: summary(Some(&status), None),
            status_line: status_line(Some(&status)),
            address_note: (status.tunnel.mode == TunnelMode::Quick).then_some(QUICK_ADDRESS_NOTE),
            status: Some(status),
            error: None,
            pairing: pairing.and_then(PairingView::new),
            tunnel_choice,
        }
    }

    /// The view when the supervisor could not start, and why.
    pub fn failed(error: &str, tunnel_choice: TunnelChoice) -> Self {
        Self {
            status: None,
            look: Look::Failed,
            summary: summary(None, Some(error)),
            status_line: status_line(None),
            address_note: None,
            error: Some(error.to_owned()),
            pairing: None,
            tunnel_choice,
        }
    }
}

/// The pairing as the window shows it. The link holds a pairing code (and the token
/// while tokens are let in): it goes to the window (which shows it as a QR code and
/// copies it) and nowhere else.
#[derive(Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PairingView {
    /// The link the QR encodes.
    pub link: String,
    /// The public page, without the token.
    pub public_url: String,
    /// The QR code.
    pub svg: String,
    /// Why no phone could use it, when none could ([`crate::pairing::UNENCRYPTABLE`]).
    pub unusable: Option<&'static str>,
}

impl std::fmt::Debug for PairingView {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PairingView")
            .field("public_url", &self.public_url)
            .finish_non_exhaustive()
    }
}

impl PairingView {
    /// `None` if the QR code cannot be drawn (a link too long for one).
    pub fn new(pairing: &Pairing) -> Option<Self> {
        Some(Self {
            link: pairing.link(),
            public_url: pairing.public_url(),
            svg: pairing.svg().ok()?,
            unusable: (!pairing.usable_by_browsers()).then_some(crate::pairing::UNENCRYPTABLE),
        })
    }
}

/// The tray icon's four looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Look {
    /// A healthy worker serves, and the tunnel (if any) is up.
    Healthy,
    /// Starting, restarting, rolling back or draining: phones wait.
    Restarting,
    /// The worker is healthy but phones elsewhere cannot reach it.
    TunnelDown,
    /// Given up (or never started): a person must act.
    Failed,
}

impl Look {
    /// From the status (`None`: the supervisor could not start).
    pub fn of(status: Option<&Status>) -> Self {
        let Some(s) = status else {
            return Look::Failed;
        };
        match s.state {
            StateName::Failed => Look::Failed,
            StateName::Healthy if s.tunnel.is_unreachable() => Look::TunnelDown,
            StateName::Healthy => Look::Healthy,
            StateName::Starting
            | StateName::Restarting
            | StateName::RollingBack
            | StateName::Draining => Look::Restarting,
        }
    }
}

/// One line for the tooltip: the state, and what it means for the phone.
fn summary(status: Option<&Status>, error: Option<&str>) -> String {
    let Some(s) = status else {
        return format!(
            "Chroxy could not start: {}",
            error.unwrap_or("unknown error")
        );
    };
    let phones = phones(s.clients);
    match Look::of(Some(s)) {
        Look::Healthy => format!("Chroxy: healthy, {phones} connected"),
        Look::Restarting => format!("Chroxy: {} — phones wait", state_words(s.state)),
        Look::TunnelDown => format!(
            "Chroxy: tunnel {} — phones elsewhere cannot connect",
            s.tunnel.state
        ),
        Look::Failed => format!(
            "Chroxy: failed — {}",
            s.failed_reason.as_deref().unwrap_or("see the window")
        ),
    }
}

fn status_line(status: Option<&Status>) -> String {
    let Some(s) = status else {
        return "Could not start · see the window".into();
    };
    let tunnel = match s.tunnel.mode {
        TunnelMode::None => "this machine only".to_owned(),
        TunnelMode::Quick | TunnelMode::Named | TunnelMode::Tailscale => {
            format!("tunnel {}", s.tunnel.state)
        }
    };
    match Look::of(Some(s)) {
        Look::Healthy | Look::TunnelDown => {
            format!("Healthy · {} · {tunnel}", phones(s.clients))
        }
        Look::Restarting => {
            let words = state_words(s.state);
            let mut first = words.chars();
            let head = first.next().map(|c| c.to_ascii_uppercase());
            format!(
                "{}{} · phones wait",
                head.unwrap_or_default(),
                first.as_str()
            )
        }
        Look::Failed => "Failed · see the window".into(),
    }
}

fn phones(n: u32) -> String {
    match n {
        1 => "1 phone".to_owned(),
        n => format!("{n} phones"),
    }
}

fn state_words(state: StateName) -> &'static str {
    match state {
        StateName::Starting => "starting",
        StateName::Healthy => "healthy",
        StateName::Restarting => "restarting",
        StateName::Draining => "stopping",
        StateName::RollingBack => "rolling back",
        StateName::Failed => "failed",
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A status in `state`, with the tunnel in `mode` and `tunnel` state.
    pub(crate) fn status(state: StateName, mode: &str, tunnel: &str) -> Status {
        let mut s = Status::new(1, 2, false, "keyring");
        s.state = state;
        s.tunnel.mode = serde_json::from_value(mode.into()).unwrap();
        s.tunnel.state = serde_json::from_value(tunnel.into()).unwrap();
        s
    }

    #[test]
    fn the_icon_tells_the_four_states_apart() {
        let cases = [
            (StateName::Healthy, "none", "off", Look::Healthy),
            (StateName::Healthy, "quick", "up", Look::Healthy),
            (
                StateName::Healthy,
                "quick",
                "reconnecting",
                Look::TunnelDown,
            ),
            (StateName::Healthy, "named", "starting", Look::TunnelDown),
            (StateName::Restarting, "quick", "up", Look::Restarting),
            (StateName::Starting, "none", "off", Look::Restarting),
            (StateName::RollingBack, "quick", "down", Look::Restarting),
            (StateName::Failed, "quick", "up", Look::Failed),
        ];
        for (state, mode, tunnel, look) in cases {
            assert_eq!(
                Look::of(Some(&status(state, mode, tunnel))),
                look,
                "{state:?} with tunnel {mode}/{tunnel}"
            );
        }
        assert_eq!(Look::of(None), Look::Failed);
    }

    #[test]
    fn the_tooltip_says_what_it_means_for_the_phone() {
        let mut s = status(StateName::Healthy, "quick", "up");
        s.clients = 2;
        assert_eq!(
            summary(Some(&s), None),
            "Chroxy: healthy, 2 phones connected"
        );
        s.tunnel.state = crate::tunnel::TunnelState::Down;
        assert!(summary(Some(&s), None).contains("phones elsewhere cannot connect"));
        s.state = StateName::Failed;
        s.failed_reason = Some("crash loop on the known-good release".into());
        assert_eq!(
            summary(Some(&s), None),
            "Chroxy: failed — crash loop on the known-good release"
        );
        assert_eq!(
            summary(None, Some("port 8765 is in use")),
            "Chroxy could not start: port 8765 is in use"
        );
    }

    #[test]
    fn only_a_quick_tunnels_address_is_said_to_change_at_the_next_start() {
        for (mode, tunnel, note) in [
            ("quick", "up", Some(QUICK_ADDRESS_NOTE)),
            ("quick", "reconnecting", Some(QUICK_ADDRESS_NOTE)),
            ("named", "up", None),
            ("tailscale", "up", None),
            ("none", "off", None),
        ] {
            let view = View::running(
                status(StateName::Healthy, mode, tunnel),
                None,
                TunnelChoice::Quick,
            );
            assert_eq!(view.address_note, note, "{mode}");
        }
        assert_eq!(View::failed("x", TunnelChoice::Quick).address_note, None);
    }

    #[test]
    fn a_pairing_no_phone_could_use_says_why() {
        let token = crate::token::ApiToken::new("t");
        let lan = Pairing::new("http://192.168.1.20:8765", token.clone(), [1; 32]).unwrap();
        let shown = PairingView::new(&lan).unwrap();
        assert_eq!(shown.unusable, Some(crate::pairing::UNENCRYPTABLE));
        assert_eq!(
            PairingView::new(&lan.allowing_tokens(true))
                .unwrap()
                .unusable,
            None
        );
        let tunnel = Pairing::new("https://a.trycloudflare.com", token, [1; 32]).unwrap();
        assert_eq!(PairingView::new(&tunnel).unwrap().unusable, None);
    }
}
