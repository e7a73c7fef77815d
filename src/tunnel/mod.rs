//! The way in from anywhere: `cloudflared` (or `tailscale serve`), a child of the
//! supervisor pointed at the public port, so worker restarts never touch it. It is kept up forever: a tunnel that
//! dies, or does not come up within its deadline, is restarted after a backoff (by
//! default 1 s doubling to 60 s, reset once it has been up for 5 minutes: `[tunnel]`
//! in [`TunnelConfig`]) — never given up on, because a user away from the desk has no
//! other way back in. Every change (state, URL, last error) is published for the status
//! page, the window and the pairing QR ([`TunnelStatus`], `status.rs`).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::config::TunnelConfig;
use crate::process;
use crate::token::ApiToken;

mod choice;
mod record;
pub mod setup;
mod status;

pub use choice::{ChoiceError, TunnelChoice, TunnelResolver};
pub use record::{record_file, stop_leftover};
pub use status::{TunnelMode, TunnelState, TunnelStatus};

/// How phones reach the machine from elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    /// A Cloudflare quick tunnel: no account, a new `trycloudflare.com` URL each start.
    Quick,
    /// A named tunnel of the user's Cloudflare account, on their own hostname.
    Named {
        /// The public hostname routed to this tunnel (e.g. `chroxy.example.com`).
        hostname: String,
        /// The tunnel's token (handed to cloudflared in `TUNNEL_TOKEN`, never argv).
        token: ApiToken,
    },
    /// Tailscale Serve in the foreground: `https://<machine>.<tailnet>.ts.net`, the same
    /// every start, reachable from the tailnet's devices only. Ended with the process,
    /// so no serve config outlives Chroxy. (Not Funnel: every connection comes from
    /// tailscaled on 127.0.0.1, so the public port's per-address limits would put the
    /// whole internet under one address, the owner's phone included.)
    Tailscale,
}

impl Mode {
    /// Which it is, as views name it.
    pub fn kind(&self) -> TunnelMode {
        match self {
            Mode::Quick => TunnelMode::Quick,
            Mode::Named { .. } => TunnelMode::Named,
            Mode::Tailscale => TunnelMode::Tailscale,
        }
    }

    /// The program that carries it.
    pub fn program(&self) -> Program {
        match self {
            Mode::Quick | Mode::Named { .. } => Program::Cloudflared,
            Mode::Tailscale => Program::Tailscale,
        }
    }
}

/// A program that carries a tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    /// Cloudflare's `cloudflared` (quick and named tunnels).
    Cloudflared,
    /// `tailscale` (its daemon, `tailscaled`, running and logged in).
    Tailscale,
}

impl Program {
    /// Its name on `PATH`.
    pub fn name(self) -> &'static str {
        match self {
            Program::Cloudflared => "cloudflared",
            Program::Tailscale => "tailscale",
        }
    }

    /// The variable that points at it.
    pub fn variable(self) -> &'static str {
        match self {
            Program::Cloudflared => "CHROXY_CLOUDFLARED",
            Program::Tailscale => "CHROXY_TAILSCALE",
        }
    }

    /// How to install it.
    pub fn install_hint(self) -> &'static str {
        match self {
            Program::Cloudflared => INSTALL_HINT,
            Program::Tailscale => "install Tailscale (https://tailscale.com/download/linux), log this machine in with `sudo tailscale up`, enable HTTPS for your tailnet in its admin console, or point CHROXY_TAILSCALE at it",
        }
    }

    /// The configured path (its variable) if given, else `PATH`. The error says how to
    /// install it.
    pub fn find(self, configured: Option<&Path>) -> Result<PathBuf, TunnelError> {
        match configured {
            Some(path) if path.is_file() => Ok(path.to_path_buf()),
            Some(path) => Err(TunnelError::NotFoundAt(self, path.to_path_buf())),
            None => which::which(self.name()).map_err(|_| TunnelError::NotOnPath(self)),
        }
    }
}

/// Everything the tunnel needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Quick or named.
    pub mode: Mode,
    /// The program to run ([`Mode::program`]): its variable (`CHROXY_CLOUDFLARED`,
    /// `CHROXY_TAILSCALE`), else found on `PATH` at each start.
    pub binary: Option<PathBuf>,
    /// The supervisor's public port, on 127.0.0.1.
    pub port: u16,
    /// A start that shows no URL within this is killed and retried.
    pub start_timeout: Duration,
    /// Delays between retries.
    pub backoff: Backoff,
    /// Up this long and the backoff starts over.
    pub healthy_reset: Duration,
    /// Where the running cloudflared is recorded ([`record_file`]), so that the next
    /// supervisor can stop it if this one dies without doing so; `None`: not recorded.
    pub record: Option<PathBuf>,
}

impl TunnelSpec {
    /// `mode` on `port`, with the deadline and retries of the `[tunnel]` settings.
    pub fn new(mode: Mode, binary: Option<PathBuf>, port: u16, config: &TunnelConfig) -> Self {
        Self {
            mode,
            binary,
            port,
            start_timeout: config.start_timeout(),
            backoff: config.backoff(),
            healthy_reset: config.healthy_reset(),
            record: None,
        }
    }
}

/// How to install cloudflared, for every message that says it is missing.
pub const INSTALL_HINT: &str = "install cloudflared (https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/; on Debian: the `cloudflared` package from pkg.cloudflare.com) or point CHROXY_CLOUDFLARED at it";

/// Why cloudflared is not carrying the tunnel. Every one is retried after a backoff,
/// but a missing binary leaves the tunnel `down` rather than `reconnecting`: nothing
/// will change until a person installs it.
#[derive(Debug, thiserror::Error)]
pub enum TunnelError {
    /// Its variable (`CHROXY_CLOUDFLARED`, `CHROXY_TAILSCALE`) names no file.
    #[error("{} not found at {} ({}); {}", .0.name(), .1.display(), .0.variable(), .0.install_hint())]
    NotFoundAt(Program, PathBuf),
    /// Not on `PATH`.
    #[error("{} not found on PATH; {}", .0.name(), .0.install_hint())]
    NotOnPath(Program),
    /// It is there but would not start.
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        /// The binary.
        binary: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// It ran but showed no tunnel within the start deadline.
    #[error("{} showed no tunnel within {} s{}", program.name(), timeout.as_secs(), last_words(last, " (last: ", ")"))]
    NoTunnel {
        /// Which program.
        program: Program,
        /// The deadline.
        timeout: Duration,
        /// Its last `ERR` line, if any.
        last: Option<String>,
    },
    /// It exited.
    #[error("{} exited ({how}){}", program.name(), last_words(last, ": ", ""))]
    Exited {
        /// Which program.
        program: Program,
        /// Exit code or signal.
        how: String,
        /// Its last `ERR` line, if any.
        last: Option<String>,
    },
}

impl TunnelError {
    /// Where the tunnel is while this stands in its way.
    fn state(&self) -> TunnelState {
        match self {
            TunnelError::NotFoundAt(..) | TunnelError::NotOnPath(_) => TunnelState::Down,
            TunnelError::Spawn { .. }
            | TunnelError::NoTunnel { .. }
            | TunnelError::Exited { .. } => TunnelState::Reconnecting,
        }
    }
}

/// cloudflared's last error line for a message, between `before` and `after`.
fn last_words(last: &Option<String>, before: &str, after: &str) -> String {
    last.as_ref()
        .map(|e| format!("{before}{e}{after}"))
        .unwrap_or_default()
}

/// A running tunnel keeper.
#[derive(Debug)]
pub struct Tunnel {
    mode: TunnelMode,
    changes: Option<mpsc::UnboundedReceiver<TunnelStatus>>,
    restart: std::sync::Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

/// The tunnel's status, with every change sent on, in order: a death and the next
/// start a few milliseconds apart are two events, never one sampled state.
struct Publisher {
    current: TunnelStatus,
    changes: mpsc::UnboundedSender<TunnelStatus>,
}

impl Publisher {
    fn modify(&mut self, change: impl FnOnce(&mut TunnelStatus)) {
        let before = self.current.clone();
        change(&mut self.current);
        if self.current != before {
            let _ = self.changes.send(self.current.clone());
        }
    }
}

impl Tunnel {
    /// Starts keeping the tunnel up until `stop` is cancelled. `pid` always holds the
    /// running cloudflared's process id (the public port believes what that process
    /// says of the phones it carries, and no other).
    pub fn start(
        spec: TunnelSpec,
        stop: CancellationToken,
        pid: tokio::sync::watch::Sender<Option<u32>>,
    ) -> Self {
        let (tx, changes) = mpsc::unbounded_channel();
        let mode = spec.mode.kind();
        let publisher = Publisher {
            current: TunnelStatus::starting(mode),
            changes: tx,
        };
        let restart = std::sync::Arc::new(Notify::new());
        let task = tokio::spawn(keep_up(spec, publisher, restart.clone(), stop, pid));
        Self {
            mode,
            changes: Some(changes),
            restart,
            task,
        }
    }

    /// Quick or named.
    pub fn mode(&self) -> TunnelMode {
        self.mode
    }

    /// Every change of state, URL or last error, in order (once: the runner owns it).
    pub fn take_changes(&mut self) -> Option<mpsc::UnboundedReceiver<TunnelStatus>> {
        self.changes.take()
    }

    /// Drops the current connection and starts a new one now ("force reconnect").
    pub fn restart(&self) {
        self.restart.notify_one();
    }

    /// Waits until the tunnel is stopped (after `stop` was cancelled).
    pub async fn stopped(self) {
        let _ = self.task.await;
    }
}

async fn keep_up(
    spec: TunnelSpec,
    mut status: Publisher,
    restart: std::sync::Arc<Notify>,
    stop: CancellationToken,
    pid: tokio::sync::watch::Sender<Option<u32>>,
) {
    let mut attempt = 0u32;
    loop {
        let outcome = run_once(&spec, &mut status, &restart, &stop, &pid).await;
        let (up_for, error) = match outcome {
            Outcome::Stopped => {
                status.modify(|s| {
                    s.state = TunnelState::Down;
                    s.url = None;
                    s.last_error = None;
                });
                return;
            }
            Outcome::Restart => {
                attempt = 0;
                continue;
            }
            Outcome::Failed { up_for, error } => (up_for, error),
        };
        if up_for >= spec.healthy_reset {
            attempt = 0;
        }
        let delay = spec.backoff.delay(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "tunnel down; retrying"
        );
        status.modify(|s| {
            s.state = error.state();
            s.url = None;
            s.last_error = Some(error.to_string());
        });
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = tokio::time::sleep(delay) => {}
            _ = restart.notified() => attempt = 0,
        }
    }
}

enum Outcome {
    Stopped,
    Restart,
    Failed {
        up_for: Duration,
        error: TunnelError,
    },
}

/// Publishes a running cloudflared's pid, and takes it back however `run_once` ends.
struct PidGuard<'a>(&'a tokio::sync::watch::Sender<Option<u32>>);

impl<'a> PidGuard<'a> {
    fn publish(pid: &'a tokio::sync::watch::Sender<Option<u32>>, id: Option<u32>) -> Self {
        pid.send_replace(id);
        Self(pid)
    }
}

impl Drop for PidGuard<'_> {
    fn drop(&mut self) {
        self.0.send_replace(None);
    }
}

async fn run_once(
    spec: &TunnelSpec,
    status: &mut Publisher,
    restart: &Notify,
    stop: &CancellationToken,
    pid: &tokio::sync::watch::Sender<Option<u32>>,
) -> Outcome {
    if stop.is_cancelled() {
        return Outcome::Stopped;
    }
    let program = spec.mode.program();
    let binary = match program.find(spec.binary.as_deref()) {
        Ok(b) => b,
        Err(error) => {
            return Outcome::Failed {
                up_for: Duration::ZERO,
                error,
            }
        }
    };
    let mut cmd = Command::new(&binary);
    cmd.env_clear()
        .envs(program_env(program, std::env::vars_os()));
    let origin = format!("http://127.0.0.1:{}", spec.port);
    match &spec.mode {
        Mode::Quick => {
            cmd.args(["tunnel", "--no-autoupdate", "--url", &origin]);
        }
        Mode::Named { token, .. } => {
            // The token in the environment: argv is readable by every user of the machine.
            // The hostname's ingress (set in the Cloudflare dashboard) points at `origin`.
            cmd.args(["tunnel", "--no-autoupdate", "run"])
                .env("TUNNEL_TOKEN", token.expose());
        }
        Mode::Tailscale => {
            // In the foreground (no `--bg`): the serve config lives as long as this
            // process, so a Chroxy that stops, however it stops, leaves nothing served.
            cmd.args(["serve", "--https=443", &origin]);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    process::own(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(source) => {
            return Outcome::Failed {
                up_for: Duration::ZERO,
                error: TunnelError::Spawn { binary, source },
            }
        }
    };
    let _pid = PidGuard::publish(pid, child.id());
    // Gone with this function, once the child is reaped; left behind only if the
    // supervisor dies first.
    let _recorded = match (&spec.record, child.id()) {
        (Some(file), Some(pid)) => {
            record::RecordGuard::write(file.clone(), pid, binary.clone()).await
        }
        _ => None,
    };
    status.modify(|s| {
        if s.state != TunnelState::Reconnecting {
            s.state = TunnelState::Starting;
        }
    });
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    // cloudflared logs to stderr; read both so neither pipe ever fills.
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(pipe).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    drop(lines_tx);

    let deadline = Instant::now() + spec.start_timeout;
    let mut up_since: Option<Instant> = None;
    // tailscale: its address counts only under its "Available …" header.
    let mut announced = false;
    let mut last_error: Option<String> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => {
                let _ = process::stop_gracefully(&mut child, Duration::from_secs(5)).await;
                return Outcome::Stopped;
            }
            _ = restart.notified() => {
                tracing::info!("tunnel restart requested");
                let _ = process::stop_gracefully(&mut child, Duration::from_secs(5)).await;
                status.modify(|s| {
                    s.state = TunnelState::Reconnecting;
                    s.url = None;
                    s.last_error = Some("restarted on request".into());
                });
                return Outcome::Restart;
            }
            _ = sleep_until(deadline), if up_since.is_none() => {
                let _ = process::kill_group(&mut child).await;
                return Outcome::Failed {
                    up_for: Duration::ZERO,
                    error: TunnelError::NoTunnel { program, timeout: spec.start_timeout, last: last_error },
                };
            }
            exit = child.wait() => {
                // Its last words may still be in the pipes: read them, for a while (a
                // process it left behind may hold the pipes open).
                let rest = async {
                    while let Some(line) = lines.recv().await {
                        note_error(&spec.mode, &redact(&spec.mode, line), &mut last_error);
                    }
                };
                let _ = tokio::time::timeout(Duration::from_millis(500), rest).await;
                let how = exit.map(|s| process::describe(&s)).unwrap_or_else(|e| e.to_string());
                return Outcome::Failed {
                    up_for: up_since.map(|t| t.elapsed()).unwrap_or_default(),
                    error: TunnelError::Exited { program, how, last: last_error },
                };
            }
            Some(line) = lines.recv() => {
                let line = redact(&spec.mode, line);
                tracing::debug!(target: "chroxy::tunnel::program", program = program.name(), "{line}");
                note_error(&spec.mode, &line, &mut last_error);
                if up_since.is_some() {
                    continue;
                }
                announced |= line.trim_start().starts_with("Available ");
                let url = match &spec.mode {
                    Mode::Quick => quick_url(&line),
                    Mode::Named { hostname, .. } => line
                        .contains("Registered tunnel connection")
                        .then(|| format!("https://{hostname}")),
                    Mode::Tailscale => tailscale_url(&line).filter(|_| announced),
                };
                if let Some(url) = url {
                    tracing::info!(%url, "tunnel up");
                    up_since = Some(Instant::now());
                    // What it said before it was up is not why it may stop later.
                    last_error = None;
                    status.modify(|s| {
                        s.state = TunnelState::Up;
                        s.url = Some(url);
                        s.last_error = None;
                    });
                }
            }
        }
    }
}

/// What a tunnel program may inherit: what any program needs to run, find its files,
/// speak the locale and reach the network (proxies, certificates); cloudflared also
/// its own `TUNNEL_*` settings ([`program_env`]; e.g. `TUNNEL_TRANSPORT_PROTOCOL=http2`
/// where UDP is blocked). Nothing else: not Chroxy's variables nor the API keys of the
/// person's shell. An inherited `TUNNEL_TOKEN` is dropped too: only a named tunnel gets
/// one, set by us.
const PROGRAM_ENV: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LOGNAME",
    "TMPDIR",
    "TZ",
    "LANG",
    "LANGUAGE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    // Windows: without these a program cannot even open a socket.
    "SYSTEMROOT",
    "SYSTEMDRIVE",
    "WINDIR",
    "TEMP",
    "TMP",
    "USERPROFILE",
    "APPDATA",
    "LOCALAPPDATA",
    "PROGRAMDATA",
    "PATHEXT",
    "COMSPEC",
];

/// The part of `vars` (this process's environment) that `program` gets: cloudflared
/// also its own `TUNNEL_*` settings, tailscale none of them.
fn program_env(
    program: Program,
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> impl Iterator<Item = (OsString, OsString)> {
    vars.filter(move |(name, _)| {
        // Upper-cased: proxies are often lower case, and Windows ignores case.
        let name = name.to_string_lossy().to_ascii_uppercase();
        let own = match program {
            Program::Cloudflared => name.starts_with("TUNNEL_") && name != "TUNNEL_TOKEN",
            Program::Tailscale => false,
        };
        PROGRAM_ENV.contains(&name.as_str()) || name.starts_with("LC_") || own
    })
}

/// `line` without a named tunnel's token in it. cloudflared is not known to print it,
/// but its lines go to the log, the status page and `chroxy tunnel setup`'s errors, so
/// one that did (a future version's debug output, a wrapper script) must not carry it.
fn redact(mode: &Mode, line: String) -> String {
    match mode {
        Mode::Named { token, .. } => token.redact(line, "[tunnel token]"),
        _ => line,
    }
}

/// The quick tunnel's URL in a line of cloudflared's banner, if there is one.
pub fn quick_url(line: &str) -> Option<String> {
    line.split(|c: char| c.is_whitespace() || c == '|')
        .find(|w| {
            w.strip_prefix("https://")
                .and_then(|host| host.strip_suffix(".trycloudflare.com"))
                .is_some_and(|name| {
                    !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                })
        })
        .map(str::to_owned)
}

/// Keeps what `line` says of an error in `last`. tailscale says one thing over several
/// lines ("Serve is not enabled on your tailnet." "To enable, visit:" <link>): those
/// are kept together.
fn note_error(mode: &Mode, line: &str, last: &mut Option<String>) {
    let Some(said) = error_of(mode, line) else {
        return;
    };
    match last {
        Some(before) if mode.program() == Program::Tailscale => {
            before.push(' ');
            before.push_str(&said);
            // The latest words matter most.
            let over = before.chars().count().saturating_sub(MAX_ERROR_CHARS);
            *before = before.chars().skip(over).collect();
        }
        _ => *last = Some(said),
    }
}

/// The address `tailscale serve` prints once it serves:
/// `https://<machine>.<tailnet>.ts.net/` on a line of its own.
pub fn tailscale_url(line: &str) -> Option<String> {
    let url = line.trim().trim_end_matches('/');
    let host = url.strip_prefix("https://")?.strip_suffix(".ts.net")?;
    let plain = |part: &str| {
        !part.is_empty() && part.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    };
    (host.split('.').count() == 2 && host.split('.').all(plain)).then(|| url.to_owned())
}

/// The message of an error line, for `last_error`: cloudflared's `ERR` lines; any
/// line of tailscale's but what it says when it serves (its errors are plain text,
/// e.g. "Serve is not enabled on your tailnet" with the link to enable it).
fn error_of(mode: &Mode, line: &str) -> Option<String> {
    let text = match mode {
        Mode::Quick | Mode::Named { .. } => line.split_once(" ERR ")?.1,
        Mode::Tailscale => {
            let serving = ["Available ", "|--", "Press Ctrl+C"];
            let line = line.trim();
            if line.is_empty()
                || serving.iter().any(|s| line.starts_with(s))
                || tailscale_url(line).is_some()
            {
                return None;
            }
            line
        }
    };
    Some(text.trim().chars().take(MAX_ERROR_CHARS).collect())
}

/// The longest `last_error` kept.
const MAX_ERROR_CHARS: usize = 300;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_quick_url_is_found_in_the_banner_and_nowhere_else() {
        assert_eq!(
            quick_url(
                "2026-01-01T00:00:00Z INF |  https://tender-quiet-words-1.trycloudflare.com   |"
            ),
            Some("https://tender-quiet-words-1.trycloudflare.com".into())
        );
        assert_eq!(
            quick_url("INF If you intend to use Tunnels in production you should use a pre-created named tunnel by following: https://developers.cloudflare.com/cloudflare-one/connections/connect-networks"),
            None
        );
        assert_eq!(
            quick_url("INF Requesting new quick Tunnel on trycloudflare.com..."),
            None
        );
        assert_eq!(quick_url("https://evil.com/x.trycloudflare.com"), None);
    }

    #[test]
    fn only_a_missing_cloudflared_leaves_the_tunnel_down_and_the_message_says_how_to_fix_it() {
        let missing = Program::Cloudflared
            .find(Some(Path::new("/nonexistent/cloudflared")))
            .unwrap_err();
        assert_eq!(missing.state(), TunnelState::Down);
        let text = missing.to_string();
        assert!(
            text.contains("/nonexistent/cloudflared") && text.contains("install cloudflared"),
            "{text}"
        );
        assert_eq!(
            TunnelError::NotOnPath(Program::Cloudflared).state(),
            TunnelState::Down
        );
        let tailscale = TunnelError::NotOnPath(Program::Tailscale).to_string();
        assert!(
            tailscale.starts_with("tailscale not found on PATH")
                && tailscale.contains("tailscale up"),
            "{tailscale}"
        );
        let died = TunnelError::Exited {
            program: Program::Cloudflared,
            how: "exit status: 1".into(),
            last: Some("failed to dial to edge".into()),
        };
        assert_eq!(died.state(), TunnelState::Reconnecting);
        assert_eq!(
            died.to_string(),
            "cloudflared exited (exit status: 1): failed to dial to edge"
        );
        let silent = TunnelError::NoTunnel {
            program: Program::Cloudflared,
            timeout: Duration::from_secs(30),
            last: None,
        };
        assert_eq!(silent.state(), TunnelState::Reconnecting);
        assert_eq!(
            silent.to_string(),
            "cloudflared showed no tunnel within 30 s"
        );
    }

    #[test]
    fn the_tunnel_programs_get_what_they_need_and_none_of_the_secrets_around_them() {
        let vars = [
            "PATH=/usr/bin",
            "HOME=/home/me",
            "LANG=C.UTF-8",
            "LC_ALL=C",
            "https_proxy=http://proxy:3128",
            "NO_PROXY=localhost",
            "TUNNEL_TRANSPORT_PROTOCOL=http2",
            "TUNNEL_TOKEN=stray-token",
            "CHROXY_TOKEN=api-token",
            "CHROXY_HOME=/home/me/.chroxy",
            "ANTHROPIC_API_KEY=sk-ant-secret",
            "AWS_SECRET_ACCESS_KEY=aws-secret",
            "GITHUB_TOKEN=ghp-secret",
            "DBUS_SESSION_BUS_ADDRESS=unix:path=/run/user/1000/bus",
        ];
        let given = vars.iter().map(|v| {
            let (k, v) = v.split_once('=').unwrap();
            (OsString::from(k), OsString::from(v))
        });
        let kept: Vec<String> = program_env(Program::Cloudflared, given.clone())
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            kept,
            [
                "PATH",
                "HOME",
                "LANG",
                "LC_ALL",
                "https_proxy",
                "NO_PROXY",
                "TUNNEL_TRANSPORT_PROTOCOL"
            ]
        );
        // tailscale: not even cloudflared's settings.
        let kept: Vec<String> = program_env(Program::Tailscale, given)
            .map(|(k, _)| k.to_string_lossy().into_owned())
            .collect();
        assert_eq!(
            kept,
            ["PATH", "HOME", "LANG", "LC_ALL", "https_proxy", "NO_PROXY"]
        );
    }

    #[test]
    fn a_named_tunnels_token_never_leaves_in_a_line_of_cloudflared() {
        let named = Mode::Named {
            hostname: "chroxy.example.com".into(),
            token: ApiToken::new("eyJhIjoic2VjcmV0In0="),
        };
        let line =
            "2026-11-25T00:00:01Z ERR bad token=eyJhIjoic2VjcmV0In0= again eyJhIjoic2VjcmV0In0=";
        let said = redact(&named, line.to_owned());
        assert_eq!(
            said,
            "2026-11-25T00:00:01Z ERR bad token=[tunnel token] again [tunnel token]"
        );
        assert_eq!(redact(&Mode::Quick, line.to_owned()), line);
    }

    #[test]
    fn errors_are_taken_from_err_lines() {
        assert_eq!(
            error_of(
                &Mode::Quick,
                "2026-11-25T00:00:01Z ERR failed to serve tunnel connection error=\"x\""
            ),
            Some("failed to serve tunnel connection error=\"x\"".into())
        );
        assert_eq!(error_of(&Mode::Quick, "INF all good"), None);
        let ts = Mode::Tailscale;
        for serving in [
            "Available within your tailnet:",
            "",
            "|-- proxy http://127.0.0.1:8765",
            "Press Ctrl+C to exit.",
        ] {
            assert_eq!(error_of(&ts, serving), None, "{serving:?}");
        }
        assert_eq!(
            error_of(&ts, "Serve is not enabled on your tailnet."),
            Some("Serve is not enabled on your tailnet.".into())
        );
    }

    #[test]
    fn the_tailscale_address_is_a_ts_net_machine_and_nothing_else() {
        assert_eq!(
            tailscale_url("https://box.tail2527fa.ts.net/"),
            Some("https://box.tail2527fa.ts.net".into())
        );
        for not in [
            "https://login.tailscale.com/f/serve?node=nABCDEF",
            "https://box.tail2527fa.ts.net.evil.com/",
            "https://ts.net/",
            "https://a.b.c.ts.net/",
            "|-- proxy http://127.0.0.1:8765",
            "https://box.tail/../x.ts.net/",
        ] {
            assert_eq!(tailscale_url(not), None, "{not}");
        }
    }
}
