//! What the supervisor reports: the JSON of the status page (docs/protocol.md "Status page"),
//! the window, and `chroxy status`. One value, published through a `watch` channel
//! every time anything in it changes, so every view tells the same truth.

use serde::{Deserialize, Serialize};

/// The supervisor's state as views name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateName {
    /// First worker starting.
    Starting,
    /// A healthy worker serves the public port.
    Healthy,
    /// The worker is being replaced after a crash or on request.
    Restarting,
    /// Stopping in order.
    Draining,
    /// Switching back to the known-good release.
    RollingBack,
    /// Gave up, or cannot go on without a person; `failed_reason` says why. Nothing is
    /// retried until a human acts, except a start an invalid config stopped (retried
    /// now and then, so the fixed file is picked up by itself).
    Failed,
}

/// The worker currently serving (or last started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerStatus {
    /// OS process id, while running.
    pub pid: Option<u32>,
    /// Release id it runs.
    pub release: Option<String>,
    /// Its private loopback port.
    pub port: Option<u16>,
    /// Milliseconds since the epoch.
    pub started_at: Option<u64>,
    /// Restarts since the supervisor started.
    pub restarts: u32,
}

/// One release in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseInfo {
    /// Release id (directory name under `releases/`).
    pub id: String,
    /// Version of the binary.
    pub version: String,
    /// Git commit it was built from.
    pub commit: String,
    /// Milliseconds since the epoch.
    pub built_at: u64,
    /// Hex sha256 of the binary.
    pub sha256: String,
    /// Why this release cannot run (manifest unreadable or missing, binary missing or
    /// changed); `None` while it is intact. A damaged release is listed, never run.
    #[serde(default)]
    pub damaged: Option<String>,
}

/// `releases` of the status JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasesStatus {
    /// The release the supervisor runs.
    pub current: Option<String>,
    /// The last release that survived its canary window.
    pub known_good: Option<String>,
    /// Every release in the store, oldest first.
    pub list: Vec<ReleaseInfo>,
}

/// `canary` of the status JSON: a deployed release serving while it is watched, before
/// it is trusted as known-good. Without it a view can only say "healthy" and the user
/// cannot tell whether a deploy has been accepted yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CanaryStatus {
    /// The release being watched.
    pub release: String,
    /// When it becomes known-good if nothing goes wrong (milliseconds since the epoch).
    pub ends_at: u64,
    /// Server faults (what the worker itself got wrong, never a client's mistakes)
    /// counted so far in the window.
    pub errors: u64,
    /// More errors than this roll it back.
    pub error_limit: u64,
}

/// `tunnel` of the status JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TunnelStatus {
    /// `quick`, `named` or `none`.
    pub mode: String,
    /// `starting`, `up`, `reconnecting`, `down`, or `off` for mode none.
    pub state: String,
    /// The public URL, when up.
    pub url: Option<String>,
    /// The last error, while not up.
    pub last_error: Option<String>,
}

impl Default for TunnelStatus {
    fn default() -> Self {
        Self {
            mode: "none".into(),
            state: "off".into(),
            url: None,
            last_error: None,
        }
    }
}

/// `connections` of the status JSON: the public port's bounds, and whether a flood has
/// met them. Without it a person whose phone was turned away could not tell a flood
/// from a fault.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionsStatus {
    /// Connections the public port holds now.
    pub open: usize,
    /// Of those, how many have not authenticated yet.
    pub unauthenticated: usize,
    /// The bound on `open` (configured, and lowered to what the file-descriptor limit allows).
    pub max_connections: usize,
    /// The bound on `unauthenticated`.
    pub max_unauthenticated: usize,
    /// Unauthenticated connections closed to make room for newcomers, since start.
    pub evicted: u64,
    /// Newcomers turned away because every place was held by an authenticated phone.
    pub refused: u64,
    /// When a bound was last met (milliseconds since the epoch).
    pub last_limit_at: Option<u64>,
}

/// One entry of the recent-events list, newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// Milliseconds since the epoch.
    pub at: u64,
    /// `worker_started`, `worker_exited`, `health_failed`, `rollback`, `deployed`,
    /// `promoted`, `failed`, `restart_requested`, `reconnect`, `tunnel`,
    /// `release_damaged`, `config_invalid`, `releases_pruned`, …
    pub kind: String,
    /// Human-readable, secret-free detail (exit status, failing health step, reason).
    pub message: String,
}

/// Everything a view shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    /// The state.
    pub state: StateName,
    /// Why the state is `failed` (or why the last restart happened).
    pub failed_reason: Option<String>,
    /// The serving worker.
    pub worker: WorkerStatus,
    /// The release store.
    pub releases: ReleasesStatus,
    /// The canary watch, while a deployed release is on trial.
    #[serde(default)]
    pub canary: Option<CanaryStatus>,
    /// The tunnel.
    pub tunnel: TunnelStatus,
    /// Phones connected (from the worker's heartbeat).
    pub clients: u32,
    /// The public port's connection bounds and how often a flood met them.
    #[serde(default)]
    pub connections: ConnectionsStatus,
    /// Sessions (from the worker's heartbeat).
    pub sessions: u32,
    /// Where secrets are kept: `keyring` or `file`.
    pub secrets_backend: String,
    /// Answers come from the built-in scripted model, not Anthropic's API.
    pub demo: bool,
    /// The public port phones (and the tunnel) connect to.
    pub public_port: u16,
    /// The status page's port.
    pub status_port: u16,
    /// Supervisor uptime in milliseconds.
    pub uptime_ms: u64,
    /// Recent events, newest last (bounded).
    pub events: Vec<StatusEvent>,
}

/// How many events the status keeps.
pub const MAX_EVENTS: usize = 50;

impl Status {
    /// A status before anything has happened.
    pub fn new(public_port: u16, status_port: u16, demo: bool, secrets_backend: &str) -> Self {
        Self {
            state: StateName::Starting,
            failed_reason: None,
            worker: WorkerStatus::default(),
            releases: ReleasesStatus::default(),
            canary: None,
            tunnel: TunnelStatus::default(),
            clients: 0,
            connections: ConnectionsStatus::default(),
            sessions: 0,
            secrets_backend: secrets_backend.to_owned(),
            demo,
            public_port,
            status_port,
            uptime_ms: 0,
            events: Vec::new(),
        }
    }

    /// Appends an event, dropping the oldest beyond [`MAX_EVENTS`].
    pub fn push_event(&mut self, kind: &str, message: impl Into<String>) {
        self.events.push(StatusEvent {
            at: crate::protocol::now_ms(),
            kind: kind.to_owned(),
            message: message.into(),
        });
        if self.events.len() > MAX_EVENTS {
            let excess = self.events.len() - MAX_EVENTS;
            self.events.drain(..excess);
        }
    }
}

/// What a view may ask the supervisor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Switch to the known-good release (or the given one) and restart.
    Rollback {
        /// A specific release; `None` means known-good.
        to: Option<String>,
    },
    /// Restart the worker (drain, stop, start, health gate).
    Restart,
    /// Restart the tunnel, tell every phone to reconnect now, re-run the health gate.
    Reconnect,
    /// Replace the tunnel (the tray's Tunnel menu); `None` serves this machine only.
    /// Workers and the phones connected through them are not touched. The supervisor
    /// resolves the choice (a named tunnel's token included) and refuses one that
    /// cannot run, keeping the tunnel it has.
    Tunnel {
        /// The person's choice.
        choice: crate::tunnel::TunnelChoice,
    },
    /// The API token was rotated in the store: start workers with the new one (phones
    /// holding the old one get `auth_fail` and must pair again).
    ReloadToken,
    /// Start a release already added to the store (by `chroxy deploy`) as a canary.
    Deploy {
        /// Its id.
        release: String,
    },
}
