//! Web Push (README "Notifications"): a phone in a pocket is told when Claude waits for
//! it, when a long turn is done, and when the supervisor gives up or rolls back.
//!
//! Three parts, in three processes' hands:
//!
//! - `store.rs`: each device's push subscription and the events it wants, in
//!   `<state>/push.json`. The worker writes it when a phone opts in or out; the
//!   supervisor reads it to deliver, and forgets an endpoint the push service says is
//!   gone (404/410).
//! - `alerts.rs` (worker): decides *whether* to push — a prompt still unanswered after
//!   a grace period with no phone looking, a turn that ran long and finished with no
//!   phone on its session — and hands each [`Notice`] to the supervisor over the
//!   control channel.
//! - `deliver.rs` (supervisor): encrypts each notice for every subscribed, approved
//!   device (RFC 8291), signs with the home's VAPID key (RFC 8292, kept in the keyring
//!   like the other secrets) and posts it to the device's push service (RFC 8030).
//!
//! The worker never holds the VAPID key: a release being tried out gets no more than
//! it needs (it is told only the public half, which phones subscribe with). A notice
//! says which session and what kind of thing waits — never code, paths, commands or a
//! tool's input — since it crosses the phone vendor's push service.

mod alerts;
mod deliver;
mod resolve;
mod store;

pub use alerts::{Alerts, AlertsConfig};
pub use deliver::{DeliverError, Delivery, Outbox, Pusher};
pub use store::{Reach, Subscription, SubscriptionError, Subscriptions};

use serde::{Deserialize, Serialize};

use crate::protocol::PushEvents;

/// The environment variable a supervisor hands its worker the VAPID public key in
/// (base64url, uncompressed P-256 point): the `applicationServerKey` phones subscribe
/// with. Public, so an environment variable is fine; without it phones are told that
/// notifications need `chroxy start` or the tray app.
pub const PUBLIC_KEY_VAR: &str = "CHROXY_PUSH_PUBLIC_KEY";

// `[push]` as this module applies it (config stays a leaf that knows no push type).
impl crate::config::PushConfig {
    /// Which push services phones may subscribe with.
    pub fn reach(&self) -> Reach {
        if self.loopback_push_service {
            Reach::AlsoLoopback
        } else {
            Reach::Public
        }
    }

    /// What the worker applies.
    pub fn alerts(&self) -> AlertsConfig {
        AlertsConfig {
            grace: std::time::Duration::from_secs(self.grace_secs),
            long_turn: std::time::Duration::from_secs(self.long_turn_secs),
        }
    }
}

/// Why a worker cannot push, as phones are told.
const OFF: &str = "notifications are turned off on the computer ([push] enabled = false)";
const UNSUPERVISED: &str = "notifications need Chroxy started with `chroxy start` or the tray app";
const NO_KEY: &str = "the running Chroxy gave this server no push key: its log says why (an older Chroxy cannot push; restart it after an update)";

/// What the worker needs for Web Push.
#[derive(Debug, Clone)]
pub struct WorkerPush {
    /// Where phones' subscriptions are kept.
    pub subscriptions: Subscriptions,
    /// The key phones subscribe with; `None` when this worker cannot push (why is
    /// `off_because`).
    pub public_key: Option<String>,
    /// Why there is no key, for phones to show.
    pub off_because: &'static str,
    /// Which push services phones may subscribe with.
    pub reach: Reach,
    /// Whether to push.
    pub alerts: Alerts,
}

impl WorkerPush {
    /// A worker's push, as its start found it: `key` is what its supervisor handed
    /// ([`PUBLIC_KEY_VAR`]), `None` without a supervisor or with pushes turned off.
    /// Also returns the notices for the control channel.
    pub fn new(
        paths: &crate::store::Paths,
        cfg: &crate::config::PushConfig,
        supervised: bool,
        key: Option<String>,
    ) -> (Self, tokio::sync::mpsc::Receiver<Notice>) {
        let (alerts, notices) = Alerts::new(cfg.alerts());
        let (public_key, off_because, alerts) = match (cfg.enabled, supervised, key) {
            (false, _, _) => (None, OFF, Alerts::off()),
            (true, false, _) => (None, UNSUPERVISED, Alerts::off()),
            (true, true, None) => (None, NO_KEY, Alerts::off()),
            (true, true, Some(key)) => (Some(key), "", alerts),
        };
        (
            Self {
                subscriptions: Subscriptions::new(paths),
                public_key,
                off_because,
                reach: cfg.reach(),
                alerts,
            },
            notices,
        )
    }
}

/// Longest session name a notice carries, in characters.
const MAX_NAME_CHARS: usize = 60;

/// What a notice is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NoticeKind {
    /// A permission prompt waits.
    Permission,
    /// A question (AskUserQuestion) waits.
    Question,
    /// A turn that ran long is done.
    TurnDone,
    /// The supervisor gave up restarting the server.
    Failed,
    /// The supervisor rolled a release back.
    RolledBack,
}

impl NoticeKind {
    /// Whether a device with these settings wants it.
    pub fn wanted_by(self, events: &PushEvents) -> bool {
        match self {
            NoticeKind::Permission | NoticeKind::Question => events.prompts,
            NoticeKind::TurnDone => events.turns,
            NoticeKind::Failed | NoticeKind::RolledBack => events.supervisor,
        }
    }

    /// How long a push service should keep trying to deliver it: a prompt is denied
    /// after its timeout anyway; a supervisor in trouble stays news for a while.
    fn ttl_secs(self) -> u64 {
        match self {
            NoticeKind::Permission | NoticeKind::Question => 5 * 60,
            NoticeKind::TurnDone => 60 * 60,
            NoticeKind::Failed | NoticeKind::RolledBack => 12 * 60 * 60,
        }
    }

    /// RFC 8030 `Urgency`: a waiting prompt may wake a sleeping phone.
    fn urgency(self) -> &'static str {
        match self {
            NoticeKind::Permission | NoticeKind::Question | NoticeKind::Failed => "high",
            NoticeKind::TurnDone | NoticeKind::RolledBack => "normal",
        }
    }
}

/// One push: the whole payload a phone's service worker receives (decrypted).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Notice {
    /// What it is about.
    pub kind: NoticeKind,
    /// The session it concerns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// That session's name (cut short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
    /// The tool a permission is asked for (its name only, never its input).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<String>,
    /// The waiting prompt's id, so that a tap opens it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prompt_id: Option<String>,
}

impl Notice {
    /// A notice about session `session_id` named `name`.
    pub fn about(kind: NoticeKind, session_id: &str, name: &str) -> Self {
        Self {
            kind,
            session_id: Some(session_id.to_owned()),
            session: Some(name.chars().take(MAX_NAME_CHARS).collect()),
            tool: None,
            prompt_id: None,
        }
    }

    /// This notice with every field cut to a size that fits a push (at most 4 KiB
    /// travel): whatever a worker sent, the supervisor posts no more.
    pub fn bounded(&self) -> Self {
        let cut = |s: &Option<String>, n: usize| s.as_ref().map(|s| s.chars().take(n).collect());
        Self {
            kind: self.kind,
            session_id: cut(&self.session_id, 64),
            session: cut(&self.session, MAX_NAME_CHARS),
            tool: cut(&self.tool, 64),
            prompt_id: cut(&self.prompt_id, 128),
        }
    }

    /// A notice about the supervisor (no session).
    pub fn supervisor(kind: NoticeKind) -> Self {
        Self {
            kind,
            session_id: None,
            session: None,
            tool: None,
            prompt_id: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_a_release_makes_as_large_as_it_likes_is_posted_within_a_push() {
        let huge = "x".repeat(1 << 20);
        let notice = Notice {
            kind: NoticeKind::Permission,
            session_id: Some(huge.clone()),
            session: Some(huge.clone()),
            tool: Some(huge.clone()),
            prompt_id: Some(huge),
        };
        let posted = serde_json::to_vec(&notice.bounded()).unwrap();
        // RFC 8291's record leaves 3 993 bytes of a 4 096-byte push for the payload.
        assert!(posted.len() < 3993, "{} bytes", posted.len());
        assert_eq!(notice.bounded().kind, NoticeKind::Permission);
    }
}
