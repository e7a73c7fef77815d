//! What the supervisor reports: the JSON of the status page (docs/protocol.md "Status page"),
//! the window, and `chroxy status`. One value, published through a `watch` channel
//! every time anything in it changes, so every view tells the same truth.

use serde::{Deserialize, Serialize};

use super::release_id::ReleaseId;
use crate::tunnel::TunnelStatus;

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
    pub release: Option<ReleaseId>,
    /// Its private loopback port.
    pub port: Option<u16>,
    /// Milliseconds since the epoch.
    pub started_at: Option<u64>,
    /// Restarts since the supervisor started.
    pub restarts: u32,
}

/// The spare worker kept beside the serving one (`[supervisor] standby`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StandbyStatus {
    /// Release id it runs (the serving one's).
    pub release: ReleaseId,
    /// OS process id, once started.
    pub pid: Option<u32>,
    /// It passed its health gate and can take over.
    pub ready: bool,
    /// Its resident memory as of its last heartbeat, in bytes: what it costs.
    pub rss_bytes: Option<u64>,
}

/// One release in the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseInfo {
    /// Release id (directory name under `releases/`).
    pub id: ReleaseId,
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
    /// How `chroxy deploy --source` built it, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<super::release::BuiltFrom>,
}

/// `releases` of the status JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReleasesStatus {
    /// The release the supervisor runs.
    pub current: Option<ReleaseId>,
    /// The last release that survived its canary window.
    pub known_good: Option<ReleaseId>,
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
    pub release: ReleaseId,
    /// When it becomes known-good if nothing goes wrong (milliseconds since the epoch).
    pub ends_at: u64,
    /// Server faults (what the worker itself got wrong, never a client's mistakes)
    /// counted so far in the window.
    pub errors: u64,
    /// More errors than this roll it back.
    pub error_limit: u64,
    /// [`CanaryStatus::describe`] as of the answer it is in: every view shows this
    /// sentence rather than making its own. Filled by [`Handle::status`](super::handle::Handle::status).
    #[serde(default)]
    pub summary: Option<String>,
}

impl CanaryStatus {
    /// The trial in a sentence, at `now_ms` (milliseconds since the epoch).
    pub fn describe(&self, now_ms: u64) -> String {
        let left = self.ends_at.saturating_sub(now_ms) / 1000;
        let when = match left {
            0 => "any moment now".to_owned(),
            1..120 => format!("in {left} s"),
            _ => format!("in {} min", left / 60),
        };
        format!(
            "release {} on trial: known-good {when} unless it fails ({} of {} errors)",
            self.release, self.errors, self.error_limit
        )
    }
}

/// Where a deploy was asked for. Only a person at this machine's desk may replace what
/// phones are served without a further click: anything else (a script, `curl` with the
/// admin token, a command with no terminal) waits for one. A same-user process holding
/// the admin token can claim `desk`; the boundary this draws is against unattended
/// deploys, not against the user's own processes (README "Deploy").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployOrigin {
    /// The tray window, or `chroxy deploy` on an interactive terminal.
    Desk,
    /// Anything else; the default when a request does not say.
    #[default]
    Remote,
}

impl DeployOrigin {
    /// `chroxy deploy`'s origin: `desk` when both its standard input and output are a
    /// terminal (a person typed it), `remote` otherwise (a script, a pipe, a cron job).
    /// The CLI refuses to deploy from inside an agent's process tree before this.
    pub fn of_this_terminal() -> Self {
        use std::io::IsTerminal;
        if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
            Self::Desk
        } else {
            Self::Remote
        }
    }
}

/// `pendingDeploy` of the status JSON: a deploy asked for from away from the desk,
/// waiting for a person to approve or refuse it. Until then nothing changes for phones.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingDeployStatus {
    /// The release that would be deployed.
    pub release: ReleaseId,
    /// Its version (from its manifest), or empty when the listing does not have it.
    pub version: String,
    /// When it was asked for (milliseconds since the epoch).
    pub requested_at: u64,
    /// When it is dropped unless answered (milliseconds since the epoch).
    pub expires_at: u64,
    /// Where it was asked for (`remote`: a desk deploy never waits).
    pub origin: DeployOrigin,
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

/// `devices` of the status JSON: who may connect, and who waits for the owner. Read
/// from the registry ([`crate::devices`]); never a key or a code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevicesStatus {
    /// New devices need a pairing code or approval (`[security] approve_new_devices`);
    /// `false`: the API token alone lets any device in, and views say so.
    pub approve_new: bool,
    /// Version 1's token `auth` is accepted on the public port too (`[security]
    /// allow_token_auth`): views show it in amber, since the tunnel then sees the token.
    #[serde(default)]
    pub allow_token_auth: bool,
    /// Every device, oldest first.
    pub list: Vec<crate::devices::Device>,
    /// Why the registry cannot be read (then no device gets in until it is fixed).
    pub error: Option<String>,
    /// The ids of the devices with a connection to the serving worker now (from its
    /// heartbeat).
    #[serde(default)]
    pub connected: Vec<String>,
}

impl Default for DevicesStatus {
    fn default() -> Self {
        Self {
            approve_new: true,
            allow_token_auth: false,
            list: Vec::new(),
            error: None,
            connected: Vec::new(),
        }
    }
}

/// `identity` of the status JSON: the desktop's key as phones pin it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IdentityStatus {
    /// [`crate::channel::fingerprint`] of the public key: what the phone shows too.
    pub fingerprint: String,
}

/// One entry of the recent-events list, newest last.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusEvent {
    /// Milliseconds since the epoch.
    pub at: u64,
    /// `worker_started`, `worker_exited`, `health_failed`, `rollback`, `deployed`,
    /// `promoted`, `failed`, `restart_requested`, `reconnect`, `tunnel`, `deploy_pending`,
    /// `deploy_approved`, `deploy_refused`, `deploy_expired`, `build_started`,
    /// `build_failed`, `build_stored`,
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
    /// The spare worker, while one runs.
    #[serde(default)]
    pub standby: Option<StandbyStatus>,
    /// The release store.
    pub releases: ReleasesStatus,
    /// The canary watch, while a deployed release is on trial.
    #[serde(default)]
    pub canary: Option<CanaryStatus>,
    /// A deploy waiting for a person's approval.
    #[serde(default)]
    pub pending_deploy: Option<PendingDeployStatus>,
    /// The running source build (`chroxy deploy --source`), or the last one.
    #[serde(default)]
    pub build: Option<crate::protocol::deploy::BuildStatus>,
    /// The tunnel.
    pub tunnel: TunnelStatus,
    /// Phones connected (from the worker's heartbeat).
    pub clients: u32,
    /// The public port's connection bounds and how often a flood met them.
    #[serde(default)]
    pub connections: ConnectionsStatus,
    /// Sessions (from the worker's heartbeat).
    pub sessions: u32,
    /// The devices that may connect or wait to.
    #[serde(default)]
    pub devices: DevicesStatus,
    /// The desktop's identity (protocol v2).
    #[serde(default)]
    pub identity: IdentityStatus,
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
            standby: None,
            releases: ReleasesStatus::default(),
            canary: None,
            pending_deploy: None,
            build: None,
            tunnel: TunnelStatus::default(),
            clients: 0,
            connections: ConnectionsStatus::default(),
            sessions: 0,
            devices: DevicesStatus::default(),
            identity: IdentityStatus::default(),
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

impl Status {
    /// What `chroxy status` prints: one line per part, then the ten newest events.
    /// `supervisor` says who runs it ([`super::instance::describe`]); `now` (ms since
    /// the epoch) dates the canary's end and the events.
    pub fn to_text(&self, supervisor: &str, now: u64) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let mut line = |text: String| {
            let _ = writeln!(out, "{text}");
        };
        let state = serde_json::to_value(self.state).unwrap_or_default();
        line(format!(
            "state:        {}",
            state.as_str().unwrap_or_default()
        ));
        if let Some(reason) = &self.failed_reason {
            line(format!("reason:       {reason}"));
        }
        if self.demo {
            line("mode:         DEMO (scripted model)".into());
        }
        line(format!("supervisor:   {supervisor}"));
        let w = &self.worker;
        let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".into());
        line(format!(
            "worker:       release {} pid {} port {} restarts {}",
            or_dash(w.release.as_ref().map(|r| r.to_string())),
            or_dash(w.pid.map(|p| p.to_string())),
            or_dash(w.port.map(|p| p.to_string())),
            w.restarts
        ));
        if let Some(s) = &self.standby {
            let rss = s
                .rss_bytes
                .map(|b| format!(", {} MB", b / 1_000_000))
                .unwrap_or_default();
            let state = if s.ready { "ready" } else { "starting" };
            line(format!(
                "standby:      release {} pid {} {state}{rss}",
                s.release,
                or_dash(s.pid.map(|p| p.to_string()))
            ));
        }
        line(format!(
            "releases:     current {} known-good {}",
            or_dash(self.releases.current.as_ref().map(|r| r.to_string())),
            or_dash(self.releases.known_good.as_ref().map(|r| r.to_string()))
        ));
        if let Some(c) = &self.canary {
            line(format!("canary:       {}", c.describe(now)));
        }
        if let Some(p) = &self.pending_deploy {
            let left = p.expires_at.saturating_sub(now) / 1000;
            line(format!("pending:      deploy of release {} awaits approval for {left} s more (`chroxy deploy --approve` or `--refuse`)", p.release));
        }
        if let Some(build) = &self.build {
            let mut lines = build.describe().into_iter();
            if let Some(first) = lines.next() {
                line(format!("build:        {first}"));
            }
            lines.for_each(|l| line(format!("              {l}")));
        }
        line(format!(
            "clients:      {}   sessions: {}",
            self.clients, self.sessions
        ));
        line(format!(
            "tunnel:       {} ({})",
            self.tunnel.mode, self.tunnel.state
        ));
        if !self.events.is_empty() {
            line("recent events:".into());
            for e in self.events.iter().rev().take(10) {
                let ago = format!("{} s ago", now.saturating_sub(e.at) / 1000);
                line(format!("  {ago:>10}  {:<18} {}", e.kind, e.message));
            }
        }
        out
    }
}

/// What a view may ask the supervisor to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Switch to the known-good release (or the given one) and restart.
    Rollback {
        /// A specific release; `None` means known-good.
        to: Option<ReleaseId>,
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
    /// Start a release already added to the store (by `chroxy deploy`) as a canary; from
    /// away from the desk, only once a person approves it.
    Deploy {
        /// Its id.
        release: ReleaseId,
        /// Where it was asked for.
        origin: DeployOrigin,
    },
    /// Go ahead with the deploy awaiting approval (the window, the status page,
    /// `chroxy deploy --approve`).
    ApproveDeploy {
        /// The release the person saw; refused if another one waits now. `None`:
        /// whichever waits.
        release: Option<ReleaseId>,
    },
    /// Drop the deploy awaiting approval; its release stays in the store, unpromoted.
    RefuseDeploy {
        /// As for [`Action::ApproveDeploy`].
        release: Option<ReleaseId>,
    },
    /// Build a source tree into a release ([`super::build`]), then deploy it as
    /// [`Action::Deploy`] does from `origin`. One build at a time.
    DeploySource {
        /// What to build.
        request: crate::protocol::deploy::BuildRequest,
        /// Where it was asked for.
        origin: DeployOrigin,
        /// Who asked, as the views name them (`terminal`, `window`, a device's name).
        requested_by: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_sentence_counts_down_to_known_good() {
        let c = CanaryStatus {
            release: "7".into(),
            ends_at: 1_000_000,
            errors: 2,
            error_limit: 10,
            summary: None,
        };
        assert_eq!(
            c.describe(1_000_000 - 42_500),
            "release 7 on trial: known-good in 42 s unless it fails (2 of 10 errors)"
        );
        assert_eq!(
            c.describe(1_000_000 - 600_000),
            "release 7 on trial: known-good in 10 min unless it fails (2 of 10 errors)"
        );
        assert!(c
            .describe(1_000_000 + 5)
            .contains("known-good any moment now"));
    }

    #[test]
    fn the_text_of_chroxy_status_says_every_part_and_the_newest_events_first() {
        let mut status = Status::new(8765, 8766, true, "file");
        status.state = StateName::RollingBack;
        status.failed_reason = Some("release 2-abc failed its health gate".into());
        status.worker = WorkerStatus {
            pid: Some(42),
            release: Some("0".into()),
            port: None,
            started_at: None,
            restarts: 3,
        };
        status.releases.current = Some("0".into());
        status.canary = Some(CanaryStatus {
            release: "2-abc".into(),
            ends_at: 100_000,
            errors: 1,
            error_limit: 10,
            summary: None,
        });
        status.clients = 2;
        status.sessions = 1;
        for (i, kind) in (0..12).zip(std::iter::repeat("worker_started")) {
            status.events.push(StatusEvent {
                at: 1_000 * i,
                kind: kind.into(),
                message: format!("event {i}"),
            });
        }
        let text = status.to_text("pid 7, public port 8765", 70_500);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[..9],
            [
                "state:        rolling_back",
                "reason:       release 2-abc failed its health gate",
                "mode:         DEMO (scripted model)",
                "supervisor:   pid 7, public port 8765",
                "worker:       release 0 pid 42 port - restarts 3",
                "releases:     current 0 known-good -",
                "canary:       release 2-abc on trial: known-good in 29 s unless it fails (1 of 10 errors)",
                "clients:      2   sessions: 1",
                "tunnel:       none (off)",
            ]
        );
        assert_eq!(lines[9], "recent events:");
        assert_eq!(lines[10], "    59 s ago  worker_started     event 11");
        assert_eq!(lines.len(), 20, "ten events, newest first:\n{text}");
        assert!(lines[19].ends_with("event 2"), "{text}");
    }

    #[test]
    fn a_quiet_status_leaves_out_what_it_does_not_have() {
        let text = Status::new(8765, 8766, false, "keyring").to_text("pid 7", 0);
        for absent in ["reason:", "mode:", "canary:", "recent events:"] {
            assert!(!text.contains(absent), "{absent} in\n{text}");
        }
        assert!(text.starts_with("state:        starting\n"), "{text}");
    }
}
