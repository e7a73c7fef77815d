//! The way in from anywhere: `cloudflared`, a child of the supervisor pointed at the
//! public port, so worker restarts never touch it. It is kept up forever: a tunnel that
//! dies, or does not come up within its deadline, is restarted after a backoff (1 s
//! doubling to 60 s, reset once it has been up for 5 minutes) — never given up on,
//! because a user away from the desk has no other way back in. Every change (state,
//! URL, last error) is published for the status page, the window and the pairing QR.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, Notify};
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use crate::process;
use crate::secrets::ApiToken;
use crate::supervisor::status::TunnelStatus;

mod choice;
mod record;

pub use choice::{ChoiceError, TunnelChoice, TunnelResolver};
pub use record::{record_file, stop_leftover};

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
}

impl Mode {
    /// `quick` or `named`.
    pub fn name(&self) -> &'static str {
        match self {
            Mode::Quick => "quick",
            Mode::Named { .. } => "named",
        }
    }
}

/// Everything the tunnel needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// Quick or named.
    pub mode: Mode,
    /// `cloudflared` to run: `CHROXY_CLOUDFLARED`, else found on `PATH` at each start.
    pub binary: Option<PathBuf>,
    /// The supervisor's public port, on 127.0.0.1.
    pub port: u16,
    /// A start that shows no URL within this is killed and retried.
    pub start_timeout: Duration,
    /// First retry delay; doubles per failure.
    pub backoff_floor: Duration,
    /// Longest retry delay.
    pub backoff_cap: Duration,
    /// Up this long and the backoff starts over.
    pub healthy_reset: Duration,
    /// Where the running cloudflared is recorded ([`record_file`]), so that the next
    /// supervisor can stop it if this one dies without doing so; `None`: not recorded.
    pub record: Option<PathBuf>,
}

impl TunnelSpec {
    /// The numbers: 30 s start deadline, 1 s → 60 s backoff, reset after 5 min.
    pub fn new(mode: Mode, binary: Option<PathBuf>, port: u16) -> Self {
        Self {
            mode,
            binary,
            port,
            start_timeout: Duration::from_secs(30),
            backoff_floor: Duration::from_secs(1),
            backoff_cap: Duration::from_secs(60),
            healthy_reset: Duration::from_secs(300),
            record: None,
        }
    }

    fn backoff(&self, attempt: u32) -> Duration {
        self.backoff_floor
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.backoff_cap)
    }
}

/// How to install cloudflared, for every message that says it is missing.
pub const INSTALL_HINT: &str = "install cloudflared (https://developers.cloudflare.com/cloudflare-one/connections/connect-networks/downloads/; on Debian: the `cloudflared` package from pkg.cloudflare.com) or point CHROXY_CLOUDFLARED at it";

/// A running tunnel keeper.
#[derive(Debug)]
pub struct Tunnel {
    mode: &'static str,
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
        let mode = spec.mode.name();
        let publisher = Publisher {
            current: TunnelStatus {
                mode: mode.into(),
                state: "starting".into(),
                url: None,
                last_error: None,
            },
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

    /// `quick` or `named`.
    pub fn mode(&self) -> &'static str {
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
                    s.state = "down".into();
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
        let delay = spec.backoff(attempt);
        attempt = attempt.saturating_add(1);
        tracing::warn!(
            error = %error,
            retry_in_ms = delay.as_millis() as u64,
            "tunnel down; retrying"
        );
        status.modify(|s| {
            s.state = if error.starts_with("cloudflared not found") {
                "down".into()
            } else {
                "reconnecting".into()
            };
            s.url = None;
            s.last_error = Some(error);
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
    Failed { up_for: Duration, error: String },
}

fn resolve(spec: &TunnelSpec) -> Result<PathBuf, String> {
    find_cloudflared(spec.binary.as_deref())
}

/// Finds cloudflared: the configured path (`CHROXY_CLOUDFLARED`) if given, else `PATH`.
/// The error says how to install it.
pub fn find_cloudflared(configured: Option<&std::path::Path>) -> Result<PathBuf, String> {
    match configured {
        Some(path) if path.is_file() => Ok(path.to_path_buf()),
        Some(path) => Err(format!(
            "cloudflared not found at {} (CHROXY_CLOUDFLARED); {INSTALL_HINT}",
            path.display()
        )),
        None => which::which("cloudflared")
            .map_err(|_| format!("cloudflared not found on PATH; {INSTALL_HINT}")),
    }
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
    let binary = match resolve(spec) {
        Ok(b) => b,
        Err(error) => {
            return Outcome::Failed {
                up_for: Duration::ZERO,
                error,
            }
        }
    };
    let mut cmd = Command::new(&binary);
    cmd.env_clear().envs(cloudflared_env(std::env::vars_os()));
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
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    process::own(&mut cmd);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Failed {
                up_for: Duration::ZERO,
                error: format!("cannot run {}: {e}", binary.display()),
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
        if s.state != "reconnecting" {
            s.state = "starting".into();
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
                    s.state = "reconnecting".into();
                    s.url = None;
                    s.last_error = Some("restarted on request".into());
                });
                return Outcome::Restart;
            }
            _ = sleep_until(deadline), if up_since.is_none() => {
                let _ = process::kill_group(&mut child).await;
                return Outcome::Failed {
                    up_for: Duration::ZERO,
                    error: format!(
                        "cloudflared showed no tunnel within {} s{}",
                        spec.start_timeout.as_secs(),
                        last_error.map(|e| format!(" (last: {e})")).unwrap_or_default()
                    ),
                };
            }
            exit = child.wait() => {
                let how = exit.map(|s| process::describe(&s)).unwrap_or_else(|e| e.to_string());
                return Outcome::Failed {
                    up_for: up_since.map(|t| t.elapsed()).unwrap_or_default(),
                    error: format!(
                        "cloudflared exited ({how}){}",
                        last_error.map(|e| format!(": {e}")).unwrap_or_default()
                    ),
                };
            }
            Some(line) = lines.recv() => {
                tracing::debug!(target: "chroxy::tunnel::cloudflared", "{line}");
                if let Some(e) = error_of(&line) {
                    last_error = Some(e);
                }
                if up_since.is_some() {
                    continue;
                }
                let url = match &spec.mode {
                    Mode::Quick => quick_url(&line),
                    Mode::Named { hostname, .. } => line
                        .contains("Registered tunnel connection")
                        .then(|| format!("https://{hostname}")),
                };
                if let Some(url) = url {
                    tracing::info!(%url, "tunnel up");
                    up_since = Some(Instant::now());
                    status.modify(|s| {
                        s.state = "up".into();
                        s.url = Some(url);
                        s.last_error = None;
                    });
                }
            }
        }
    }
}

/// What cloudflared may inherit: what any program needs to run, find its files, speak
/// the locale and reach the network (proxies, certificates), and cloudflared's own
/// `TUNNEL_*` settings (e.g. `TUNNEL_TRANSPORT_PROTOCOL=http2` where UDP is blocked).
/// Nothing else: not Chroxy's variables nor the API keys of the person's shell. An
/// inherited `TUNNEL_TOKEN` is dropped too: only a named tunnel gets one, set by us.
const CLOUDFLARED_ENV: &[&str] = &[
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

/// The part of `vars` (this process's environment) that cloudflared gets.
fn cloudflared_env(
    vars: impl Iterator<Item = (OsString, OsString)>,
) -> impl Iterator<Item = (OsString, OsString)> {
    vars.filter(|(name, _)| {
        // Upper-cased: proxies are often lower case, and Windows ignores case.
        let name = name.to_string_lossy().to_ascii_uppercase();
        CLOUDFLARED_ENV.contains(&name.as_str())
            || name.starts_with("LC_")
            || (name.starts_with("TUNNEL_") && name != "TUNNEL_TOKEN")
    })
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

/// The message of an `ERR` line, for `last_error`.
fn error_of(line: &str) -> Option<String> {
    let (_, rest) = line.split_once(" ERR ")?;
    Some(rest.trim().chars().take(300).collect())
}

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
    fn backoff_doubles_from_one_second_to_a_minute() {
        let spec = TunnelSpec::new(Mode::Quick, None, 1);
        let got: Vec<u64> = (0..8).map(|a| spec.backoff(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
    }

    #[test]
    fn cloudflared_gets_what_it_needs_and_none_of_the_secrets_around_it() {
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
        let kept: Vec<String> = cloudflared_env(given)
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
    }

    #[test]
    fn errors_are_taken_from_err_lines() {
        assert_eq!(
            error_of("2026-11-25T00:00:01Z ERR failed to serve tunnel connection error=\"x\""),
            Some("failed to serve tunnel connection error=\"x\"".into())
        );
        assert_eq!(error_of("INF all good"), None);
    }
}
