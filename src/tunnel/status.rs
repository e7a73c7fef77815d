//! What the tunnel reports of itself: `tunnel` of the status JSON (docs/protocol.md
//! "Status page"). The tunnel publishes it and the supervisor carries it; views read
//! `mode` and `state` as the words below, and code matches on the variants.

use std::fmt;

use serde::{Deserialize, Serialize};

/// `tunnel` of the status JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// Which tunnel, if any.
    pub mode: TunnelMode,
    /// Where it is.
    pub state: TunnelState,
    /// The public URL, when up.
    pub url: Option<String>,
    /// The last error, while not up.
    pub last_error: Option<String>,
}

impl TunnelStatus {
    /// A tunnel of `mode` just started.
    pub fn starting(mode: TunnelMode) -> Self {
        Self {
            mode,
            state: TunnelState::Starting,
            url: None,
            last_error: None,
        }
    }

    /// Phones away from this machine cannot reach it now: there is a tunnel, and it is
    /// not up. (Without a tunnel, they were never meant to.)
    pub fn is_unreachable(&self) -> bool {
        self.mode != TunnelMode::None && self.state != TunnelState::Up
    }
}

impl Default for TunnelStatus {
    /// No tunnel: this machine only.
    fn default() -> Self {
        Self {
            mode: TunnelMode::None,
            state: TunnelState::Off,
            url: None,
            last_error: None,
        }
    }
}

/// Which tunnel, as views name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelMode {
    /// None: phones reach this machine on the local network only.
    None,
    /// A Cloudflare quick tunnel.
    Quick,
    /// A named tunnel of the user's Cloudflare account.
    Named,
    /// Tailscale Serve (or Funnel).
    Tailscale,
}

/// Where the tunnel is, as views name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TunnelState {
    /// cloudflared runs and has not shown a tunnel yet.
    Starting,
    /// Phones can reach the public URL.
    Up,
    /// It went down (or was restarted) and is being brought back.
    Reconnecting,
    /// Stopped, or cannot run (cloudflared missing); `lastError` says which.
    Down,
    /// There is no tunnel (mode `none`).
    Off,
}

impl TunnelMode {
    /// The word of the status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelMode::None => "none",
            TunnelMode::Quick => "quick",
            TunnelMode::Named => "named",
            TunnelMode::Tailscale => "tailscale",
        }
    }
}

impl TunnelState {
    /// The word of the status JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            TunnelState::Starting => "starting",
            TunnelState::Up => "up",
            TunnelState::Reconnecting => "reconnecting",
            TunnelState::Down => "down",
            TunnelState::Off => "off",
        }
    }
}

impl fmt::Display for TunnelMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for TunnelState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_json_says_the_words_of_the_protocol_and_display_says_the_same() {
        let up = TunnelStatus {
            mode: TunnelMode::Quick,
            state: TunnelState::Up,
            url: Some("https://a-b.trycloudflare.com".into()),
            last_error: None,
        };
        assert_eq!(
            serde_json::to_value(&up).unwrap(),
            serde_json::json!({"mode": "quick", "state": "up", "url": "https://a-b.trycloudflare.com", "lastError": null})
        );
        let off = serde_json::to_value(TunnelStatus::default()).unwrap();
        assert_eq!(
            (off["mode"].as_str(), off["state"].as_str()),
            (Some("none"), Some("off"))
        );
        for state in [
            TunnelState::Starting,
            TunnelState::Up,
            TunnelState::Reconnecting,
            TunnelState::Down,
            TunnelState::Off,
        ] {
            assert_eq!(serde_json::to_value(state).unwrap(), state.to_string());
        }
        for mode in [TunnelMode::None, TunnelMode::Quick, TunnelMode::Named] {
            assert_eq!(serde_json::to_value(mode).unwrap(), mode.to_string());
        }
        assert!(
            serde_json::from_value::<TunnelState>("sideways".into()).is_err(),
            "an unknown state is refused, not taken for another"
        );
    }

    #[test]
    fn unreachable_means_a_tunnel_that_is_not_up() {
        assert!(
            !TunnelStatus::default().is_unreachable(),
            "no tunnel is no tunnel down"
        );
        let mut s = TunnelStatus::starting(TunnelMode::Named);
        assert!(s.is_unreachable());
        s.state = TunnelState::Up;
        assert!(!s.is_unreachable());
    }
}
