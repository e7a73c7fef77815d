//! The user's settings file (`config.toml` in the config directory). Every key is
//! optional; a missing file means defaults. A file that does not parse is an error that
//! names the file and the problem — we never guess around a typo, and never overwrite it.
//!
//! Keys carry their unit (`drain_idle_ms`); code gets a `Duration` from the section's
//! method of the same name (`drain_idle()`), the one place a number becomes a time.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::backoff::Backoff;
use crate::protocol::ModelInfo;

/// Why the settings could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The config file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("{path} is not a valid Chroxy config: {message}\nfix the file or move it away to use the defaults")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// What the parser said, with line and column.
        message: String,
    },
}

/// Everything configurable, by section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[worker]`.
    pub worker: WorkerConfig,
    /// `[supervisor]`.
    pub supervisor: SupervisorConfig,
    /// `[tunnel]`.
    pub tunnel: TunnelConfig,
    /// `[security]`.
    pub security: SecurityConfig,
    /// `[push]`.
    pub push: PushConfig,
    /// `[deploy]`.
    pub deploy: DeployConfig,
}

/// `[deploy]`: how `chroxy deploy --source` builds and checks a source tree (README
/// "Deploy from a source tree"). Read again for each build, so a change applies to the
/// next one without a restart.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeployConfig {
    /// The cargo profile the binary is built with.
    pub profile: String,
    /// The command (program, then arguments) run in the checked-out tree after the
    /// build; the release is stored only if it succeeds. `cargo` as the program is the
    /// `cargo` of the build. Unset: the library's unit tests in the build's profile. An
    /// empty list runs no check (the release's manifest says so).
    pub check: Option<Vec<String>>,
    /// The build is stopped (and fails) after this long.
    pub build_timeout_secs: u64,
    /// The check is stopped (and fails) after this long.
    pub check_timeout_secs: u64,
    /// `cargo` to build with; unset: found on PATH, else in `~/.cargo/bin`.
    pub cargo: Option<PathBuf>,
    /// Where builds keep their compiled artifacts between deploys (so the second build
    /// is incremental); unset: `builds/target` in the state directory.
    pub target_dir: Option<PathBuf>,
}

impl Default for DeployConfig {
    fn default() -> Self {
        Self {
            profile: "release".into(),
            check: None,
            build_timeout_secs: 30 * 60,
            check_timeout_secs: 15 * 60,
            cargo: None,
            target_dir: None,
        }
    }
}

impl DeployConfig {
    /// The check command: the configured one, else `cargo test --lib` in the build's
    /// profile (so it reuses what the build compiled).
    pub fn check_command(&self) -> Vec<String> {
        self.check.clone().unwrap_or_else(|| {
            [
                "cargo",
                "test",
                "--locked",
                "--lib",
                "--profile",
                &self.profile,
            ]
            .map(String::from)
            .into_iter()
            .collect()
        })
    }

    /// `build_timeout_secs` as a duration.
    pub fn build_timeout(&self) -> Duration {
        Duration::from_secs(self.build_timeout_secs)
    }

    /// `check_timeout_secs` as a duration.
    pub fn check_timeout(&self) -> Duration {
        Duration::from_secs(self.check_timeout_secs)
    }
}

/// `[push]`: notifications to phones that are not looking (README "Notifications").
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PushConfig {
    /// `false`: nothing is pushed, and phones are told notifications are off.
    pub enabled: bool,
    /// A prompt unanswered this long with no phone on screen is pushed.
    pub grace_secs: u64,
    /// A turn that ran at least this long is pushed when it is done, if no phone is on
    /// its session.
    pub long_turn_secs: u64,
    /// Who runs this server, as push services ask (RFC 8292): a `mailto:` or
    /// `https:` URL. Apple's service refuses pushes whose contact is not a real
    /// address (`@localhost` among them): set your own.
    pub contact: String,
    /// Also accept a push service on this machine's loopback over plain http (a
    /// self-hosted one; the tests' own). Off: only `https://` to public addresses.
    pub loopback_push_service: bool,
}

impl Default for PushConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            grace_secs: 15,
            long_turn_secs: 60,
            contact: DEFAULT_CONTACT.into(),
            loopback_push_service: false,
        }
    }
}

/// What push services are told runs this server when the owner has not said: a real
/// domain (Apple refuses `localhost`) that reaches nobody, hence the README's advice
/// to set `[push] contact`.
const DEFAULT_CONTACT: &str = "mailto:chroxy@users.noreply.github.com";

impl PushConfig {
    /// A contact push services accept: `mailto:` or `https:`, not on `localhost`.
    fn check(&self) -> Result<(), String> {
        let c = self.contact.trim().to_ascii_lowercase();
        if !(c.starts_with("mailto:") || c.starts_with("https://")) {
            return Err(format!(
                "[push] contact = {:?} must be a mailto: or https:// address (RFC 8292)",
                self.contact
            ));
        }
        if c.contains("localhost") {
            return Err(format!(
                "[push] contact = {:?}: Apple's push service refuses a localhost contact; give a real e-mail address or web page",
                self.contact
            ));
        }
        Ok(())
    }
}

/// `[security]`: who may connect besides the owner's approved devices.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecurityConfig {
    /// A new device needs a pairing code from a QR code shown on this computer, or the
    /// owner's approval (README "Pairing and approving devices"). `false`: the API
    /// token alone lets any device in, as before; the status page and window say so.
    pub approve_new_devices: bool,
    /// Version 1's token `auth` is accepted from phones too, for clients that cannot
    /// speak protocol v2 (docs/protocol.md "Version 2"). Off by default: with it, the
    /// tunnel sees the token and every frame; views say so in amber.
    pub allow_token_auth: bool,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            approve_new_devices: true,
            allow_token_auth: false,
        }
    }
}

/// `[tunnel]`: how phones reach the machine from elsewhere.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TunnelConfig {
    /// The public hostname of a named tunnel (`--tunnel named`), e.g. `chroxy.example.com`.
    pub hostname: Option<String>,
    /// A cloudflared start that shows no tunnel within this is killed and retried.
    pub start_timeout_ms: u64,
    /// First retry delay after the tunnel dies; doubles per failure up to `backoff_cap_ms`.
    pub backoff_floor_ms: u64,
    /// Longest retry delay.
    pub backoff_cap_ms: u64,
    /// Up this long and the backoff starts over.
    pub healthy_reset_ms: u64,
    /// The public URL pairing links use when there is no tunnel (e.g. your LAN address,
    /// `http://192.168.1.20:8765`); default `http://127.0.0.1:<port>`.
    pub public_url: Option<String>,
}

impl Default for TunnelConfig {
    /// A 30 s start deadline, retries 1 s doubling to 60 s, the backoff reset after 5
    /// minutes up: a tunnel is never given up on, since a user away from the desk has no
    /// other way back in.
    fn default() -> Self {
        Self {
            hostname: None,
            start_timeout_ms: 30_000,
            backoff_floor_ms: 1_000,
            backoff_cap_ms: 60_000,
            healthy_reset_ms: 300_000,
            public_url: None,
        }
    }
}

impl TunnelConfig {
    /// `start_timeout_ms` as a duration.
    pub fn start_timeout(&self) -> Duration {
        Duration::from_millis(self.start_timeout_ms)
    }

    /// `backoff_floor_ms` up to `backoff_cap_ms`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            floor: Duration::from_millis(self.backoff_floor_ms),
            cap: Duration::from_millis(self.backoff_cap_ms),
        }
    }

    /// `healthy_reset_ms` as a duration.
    pub fn healthy_reset(&self) -> Duration {
        Duration::from_millis(self.healthy_reset_ms)
    }
}

/// `[supervisor]`: restart policy, health gate, canary watch, drain.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SupervisorConfig {
    /// First restart delay after a crash; doubles per consecutive crash.
    pub backoff_floor_ms: u64,
    /// Longest restart delay.
    pub backoff_cap_ms: u64,
    /// A worker healthy this long starts the backoff over.
    pub healthy_reset_ms: u64,
    /// More crashes than this within `crash_window_ms` roll back to known-good (or,
    /// for known-good itself, stop retrying: state `failed`).
    pub crash_budget: usize,
    /// See `crash_budget`.
    pub crash_window_ms: u64,
    /// A new release is watched this long before it becomes known-good.
    pub canary_window_ms: u64,
    /// More server faults (never a client's mistakes) than this within the canary
    /// window roll back.
    pub canary_error_limit: u64,
    /// How often the serving worker is health-probed (a failed probe in the canary
    /// window rolls back; later it counts as a crash).
    pub probe_interval_ms: u64,
    /// The whole health gate (HTTP, upgrade, auth, ping, round trip) must pass within this.
    pub gate_timeout_ms: u64,
    /// Heartbeats a worker may miss before the watchdog kills it.
    pub heartbeat_misses: u32,
    /// How long a draining worker may wait for running turns.
    pub drain_idle_ms: u64,
    /// After the drain, how long a worker may take to exit before SIGTERM, then SIGKILL.
    pub stop_grace_ms: u64,
    /// `failed` reached through failed probes (not exits) is retried after this long,
    /// doubling per retry up to an hour.
    pub failed_retry_ms: u64,
    /// Connections the public port holds at once (lowered to what the process's
    /// file-descriptor limit allows).
    pub max_connections: usize,
    /// Of those, connections that have not authenticated yet; past it the oldest of the
    /// busiest address is closed to make room for a newcomer.
    pub max_unauthenticated: usize,
    /// Releases kept in the store: the newest this many, plus current, known-good and
    /// release 0; older ones are removed once a new release is promoted.
    pub keep_releases: usize,
    /// Keep a spare worker of the serving release started and health-gated beside it,
    /// so a crash of the serving one is taken over at once instead of after a restart.
    /// It costs one idle worker process (its memory is in the status).
    pub standby: bool,
}

impl Default for SupervisorConfig {
    fn default() -> Self {
        Self {
            backoff_floor_ms: 500,
            backoff_cap_ms: 10_000,
            healthy_reset_ms: 60_000,
            crash_budget: 5,
            crash_window_ms: 120_000,
            canary_window_ms: 60_000,
            canary_error_limit: 10,
            probe_interval_ms: 5_000,
            gate_timeout_ms: 10_000,
            heartbeat_misses: 3,
            drain_idle_ms: 30_000,
            stop_grace_ms: 5_000,
            failed_retry_ms: 300_000,
            max_connections: 1024,
            max_unauthenticated: 128,
            keep_releases: 5,
            standby: true,
        }
    }
}

impl SupervisorConfig {
    /// `backoff_floor_ms` up to `backoff_cap_ms`.
    pub fn backoff(&self) -> Backoff {
        Backoff {
            floor: Duration::from_millis(self.backoff_floor_ms),
            cap: Duration::from_millis(self.backoff_cap_ms),
        }
    }

    /// `healthy_reset_ms` as a duration.
    pub fn healthy_reset(&self) -> Duration {
        Duration::from_millis(self.healthy_reset_ms)
    }

    /// `crash_window_ms` as a duration.
    pub fn crash_window(&self) -> Duration {
        Duration::from_millis(self.crash_window_ms)
    }

    /// `canary_window_ms` as a duration.
    pub fn canary_window(&self) -> Duration {
        Duration::from_millis(self.canary_window_ms)
    }

    /// `probe_interval_ms` as a duration, at least 100 ms: probing faster would be the
    /// supervisor's own load on the worker.
    pub fn probe_interval(&self) -> Duration {
        Duration::from_millis(self.probe_interval_ms.max(100))
    }

    /// `gate_timeout_ms` as a duration.
    pub fn gate_timeout(&self) -> Duration {
        Duration::from_millis(self.gate_timeout_ms)
    }

    /// `drain_idle_ms` as a duration.
    pub fn drain_idle(&self) -> Duration {
        Duration::from_millis(self.drain_idle_ms)
    }

    /// `stop_grace_ms` as a duration.
    pub fn stop_grace(&self) -> Duration {
        Duration::from_millis(self.stop_grace_ms)
    }

    /// `failed_retry_ms` as a duration.
    pub fn failed_retry(&self) -> Duration {
        Duration::from_millis(self.failed_retry_ms)
    }
}

/// `[worker]`: the phone-facing server and its sessions.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// A client must authenticate within this many milliseconds.
    pub auth_timeout_ms: u64,
    /// Delay before the first failed `auth_fail` of an address; doubles per failure.
    pub auth_backoff_base_ms: u64,
    /// Cap of that delay.
    pub auth_backoff_max_ms: u64,
    /// Text deltas are merged for this long before being sent; 0 sends each at once.
    pub coalesce_ms: u64,
    /// WebSocket ping interval; a peer that misses one ping is dropped.
    pub ws_ping_secs: u64,
    /// A supervised worker reports liveness this often; three missed beats and the
    /// supervisor treats it as hung.
    pub heartbeat_ms: u64,
    /// Per-connection message budget per minute.
    pub messages_per_minute: u32,
    /// Burst allowance on top of the steady rate.
    pub message_burst: u32,
    /// Frames a client may have waiting to be sent before it counts as too slow (1013).
    pub client_queue: usize,
    /// Bytes a client may have waiting to be sent before it counts as too slow (1013);
    /// a history replay larger than this still reaches a phone whose queue is empty.
    pub client_queue_bytes: usize,
    /// A frame the client does not take within this is a phone that stopped reading:
    /// it is dropped, and its socket and queue freed.
    pub write_timeout_ms: u64,
    /// WebSocket connections that have not authenticated yet; more get HTTP 503. The
    /// supervisor's public port has its own bound (`[supervisor] max_unauthenticated`);
    /// this one guards the worker's private port.
    pub max_unauthenticated: usize,
    /// Unanswered permission prompts and questions are denied after this long.
    pub permission_timeout_ms: u64,
    /// An agent that ignores `interrupt` this long is stopped (and resumed on the next input).
    pub interrupt_grace_ms: u64,
    /// Claude Code CLIs started ahead of input for the sessions phones most recently
    /// opened, so a first input reaches a process that is already up (each costs
    /// ~200–300 MB while it waits); 0 starts a CLI only when input arrives.
    pub warm_clis: usize,
    /// A CLI with no turn for this long is stopped; the next input resumes its
    /// conversation (`--resume`). 0: never.
    pub cli_idle_secs: u64,
    /// Path of the `claude` binary; default: `CHROXY_CLAUDE`, then `PATH`.
    pub claude: Option<PathBuf>,
    /// What phones may choose in `set_model`.
    pub models: Vec<ModelInfo>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        let model = ModelInfo::alias;
        Self {
            auth_timeout_ms: 10_000,
            auth_backoff_base_ms: 1_000,
            auth_backoff_max_ms: 60_000,
            coalesce_ms: 50,
            ws_ping_secs: 30,
            heartbeat_ms: 1_000,
            messages_per_minute: 100,
            message_burst: 20,
            client_queue: 1024,
            client_queue_bytes: 16 * 1024 * 1024,
            write_timeout_ms: 15_000,
            max_unauthenticated: 256,
            permission_timeout_ms: 5 * 60 * 1000,
            interrupt_grace_ms: 10_000,
            warm_clis: 2,
            cli_idle_secs: 600,
            claude: None,
            models: vec![
                model("sonnet", "Sonnet"),
                model("opus", "Opus"),
                model("haiku", "Haiku"),
            ],
        }
    }
}

impl WorkerConfig {
    /// `auth_backoff_base_ms` up to `auth_backoff_max_ms`.
    pub fn auth_backoff(&self) -> Backoff {
        Backoff {
            floor: Duration::from_millis(self.auth_backoff_base_ms),
            cap: Duration::from_millis(self.auth_backoff_max_ms),
        }
    }

    /// `ws_ping_secs` as a duration, at least a second.
    pub fn ws_ping(&self) -> Duration {
        Duration::from_secs(self.ws_ping_secs.max(1))
    }

    /// `auth_timeout_ms` as a duration.
    pub fn auth_timeout(&self) -> Duration {
        Duration::from_millis(self.auth_timeout_ms)
    }

    /// `write_timeout_ms` as a duration.
    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms.max(1))
    }

    /// `heartbeat_ms` as a duration.
    pub fn heartbeat(&self) -> Duration {
        Duration::from_millis(self.heartbeat_ms.max(10))
    }

    /// `permission_timeout_ms` as a duration.
    pub fn permission_timeout(&self) -> Duration {
        Duration::from_millis(self.permission_timeout_ms)
    }

    /// `interrupt_grace_ms` as a duration.
    pub fn interrupt_grace(&self) -> Duration {
        Duration::from_millis(self.interrupt_grace_ms)
    }

    /// `cli_idle_secs` as a duration; `None` for never.
    pub fn cli_idle(&self) -> Option<Duration> {
        (self.cli_idle_secs > 0).then(|| Duration::from_secs(self.cli_idle_secs))
    }

    /// `coalesce_ms` as a duration.
    pub fn coalesce(&self) -> Duration {
        Duration::from_millis(self.coalesce_ms)
    }
}

impl Config {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(path, &text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// `text` as the config at `path` (named in errors).
    pub(crate) fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        };
        let config: Self =
            toml::from_str(text).map_err(|e| invalid(e.to_string().trim().to_owned()))?;
        config.push.check().map_err(invalid)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_push_contact_push_services_refuse_is_named_at_load() {
        let path = Path::new("config.toml");
        for bad in [
            "mailto:me@localhost",
            "me@example.com",
            "http://example.com",
        ] {
            let err = Config::parse(path, &format!("[push]\ncontact = {bad:?}\n")).unwrap_err();
            assert!(err.to_string().contains("[push] contact"), "{err}");
        }
        let ok = Config::parse(path, "[push]\ncontact = \"mailto:ana@example.com\"\n").unwrap();
        assert_eq!(ok.push.contact, "mailto:ana@example.com");
        assert!(Config::default().push.check().is_ok());
    }

    #[test]
    fn missing_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let c = Config::load(&dir.path().join("config.toml")).unwrap();
        assert_eq!(c.worker.auth_timeout_ms, 10_000);
        assert_eq!(c.worker.coalesce_ms, 50);
        assert!(
            c.security.approve_new_devices,
            "new devices need approval by default"
        );
        assert!(
            !c.security.allow_token_auth,
            "phones must speak protocol v2 by default"
        );
        let off = Config::parse(
            Path::new("c.toml"),
            "[security]\napprove_new_devices = false\nallow_token_auth = true\n",
        )
        .unwrap();
        assert!(!off.security.approve_new_devices);
        assert!(off.security.allow_token_auth);
    }

    #[test]
    fn the_tunnel_retries_from_one_second_to_a_minute_and_resets_after_five() {
        let t = TunnelConfig::default();
        assert_eq!(t.start_timeout(), Duration::from_secs(30));
        let delays: Vec<u64> = (0..8).map(|a| t.backoff().delay(a).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(t.healthy_reset(), Duration::from_secs(300));
    }

    #[test]
    fn keys_override_defaults() {
        let c = Config::parse(Path::new("c.toml"), "[worker]\nauth_timeout_ms = 200\n").unwrap();
        assert_eq!(c.worker.auth_timeout(), Duration::from_millis(200));
        assert_eq!(c.worker.messages_per_minute, 100);
    }

    #[test]
    fn a_typo_is_named_not_ignored() {
        let err = Config::parse(
            Path::new("/x/config.toml"),
            "[worker]\nauth_timout_ms = 5\n",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("/x/config.toml") && err.contains("auth_timout_ms"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_file_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(&path, "[worker\n\u{0}garbage").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains(&path.display().to_string()), "{err}");
        assert_eq!(
            std::fs::read(&path).unwrap(),
            b"[worker\n\0garbage",
            "config was modified"
        );
    }
}
