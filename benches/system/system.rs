//! One whole Chroxy on loopback: a real `chroxy start` (supervisor, public port, status
//! page, a supervised worker, no tunnel) on a temporary CHROXY_HOME, with either the
//! real Claude Code CLI answering from the scripted model, or `fake-claude`. What the
//! bench reads from it is what a user could read: the status page, the public port,
//! `/proc` for memory.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use chroxy::channel::KeyPair;
use chroxy::supervisor::status::{StateName, Status};
use tempfile::TempDir;
use tokio::process::{Child, Command};
use tokio::time::{timeout_at, Instant};

use crate::client::{Client, RETRY, STEP, TOKEN};

/// Which `claude` the sessions run.
pub enum Agent {
    /// The pinned Claude Code CLI with the scripted Messages API (in this process)
    /// behind it: `env` points it there.
    Real {
        claude: PathBuf,
        env: Vec<(String, String)>,
    },
    /// `tests/fixtures/fake_claude.rs`: exact timing on cue.
    Fake,
}

impl Agent {
    /// How the table names it.
    pub fn label(&self) -> &'static str {
        match self {
            Agent::Real { .. } => "Claude Code CLI",
            Agent::Fake => "fake-claude",
        }
    }
}

/// A running `chroxy start`.
pub struct System {
    name: String,
    dir: TempDir,
    child: Child,
    /// The public port (phones, the tunnel).
    pub public: u16,
    /// The status page.
    pub status_port: u16,
    log: PathBuf,
}

impl System {
    /// Starts `chroxy start --port 0 --status-port 0 --tunnel none` with `config` as its
    /// config.toml, and waits until a worker serves and a phone can authenticate.
    pub async fn start(name: &str, agent: &Agent, config: &str) -> Self {
        let dir = tempfile::tempdir().expect("creating a temporary home");
        for sub in ["chroxy/config", "user", "project", "tmp"] {
            std::fs::create_dir_all(dir.path().join(sub))
                .expect("creating the bench's directories");
        }
        // The bench's phones speak v1 (the token) besides the v2 rows of their own.
        let config = format!("{config}\n[security]\nallow_token_auth = true\n");
        std::fs::write(dir.path().join("chroxy/config/config.toml"), config)
            .expect("writing config.toml");
        let devices =
            chroxy::devices::Devices::new(&chroxy::store::Paths::under(dir.path().join("chroxy")));
        devices
            .add_approved(
                &chroxy::devices::DeviceKey::new(crate::client::DEVICE_KEY),
                chroxy::devices::About::default(),
                chroxy::protocol::now_ms(),
            )
            .expect("approving the bench's phone");
        let log = dir.path().join("chroxy.log");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chroxy"));
        cmd.args([
            "start",
            "--port",
            "0",
            "--status-port",
            "0",
            "--tunnel",
            "none",
            "--cwd",
        ])
        .arg(dir.path().join("project"));
        Self::environment(&mut cmd, dir.path());
        let claude = match agent {
            Agent::Real { claude, env } => {
                cmd.envs(env.iter().map(|(k, v)| (k, v)));
                claude.clone()
            }
            Agent::Fake => PathBuf::from(env!("CARGO_BIN_EXE_fake-claude")),
        };
        cmd.env("CHROXY_CLAUDE", claude)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("creating the log file"))
            .kill_on_drop(true);
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start chroxy: {e}"));
        let paths = chroxy::store::Paths::under(dir.path().join("chroxy"));
        let pid = child.id().expect("a running child has a pid");
        // The instance file is the only place the ports appear; it has no event to wait on.
        let deadline = Instant::now() + STEP;
        let (public, status_port) = loop {
            let info = chroxy::supervisor::instance::running(&paths);
            if let Some(i) =
                info.filter(|i| i.pid == pid && i.public_port != 0 && i.status_port != 0)
            {
                break (i.public_port, i.status_port);
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!("{name}: chroxy start exited ({exit}); log:\n{}", tail(&log));
            }
            assert!(
                Instant::now() < deadline,
                "{name}: chroxy start never wrote its ports; log:\n{}",
                tail(&log)
            );
            tokio::time::sleep(RETRY).await;
        };
        let system = Self {
            name: name.to_owned(),
            dir,
            child,
            public,
            status_port,
            log,
        };
        system.serving().await;
        system
    }

    /// Only PATH from this environment; every home the system could write to is ours.
    fn environment(cmd: &mut Command, dir: &Path) {
        cmd.env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.join("user"))
            .env("TMPDIR", dir.join("tmp"))
            .env("CHROXY_HOME", dir.join("chroxy"))
            .env("CHROXY_TOKEN", TOKEN)
            .stdin(Stdio::null());
    }

    /// `chroxy <args>` against this system, as a user would type it.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chroxy"));
        cmd.args(args);
        Self::environment(&mut cmd, self.dir.path());
        cmd.kill_on_drop(true);
        cmd
    }

    pub fn paths(&self) -> chroxy::store::Paths {
        chroxy::store::Paths::under(self.dir.path().join("chroxy"))
    }

    pub fn supervisor_pid(&self) -> u32 {
        self.child.id().expect("the supervisor is running")
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Status {
        chroxy::supervisor::remote::status(self.status_port)
            .await
            .unwrap_or_else(|e| {
                panic!("{}: status page: {e}; log:\n{}", self.name, self.log_tail())
            })
    }

    /// Waits until the status page says healthy with a worker pid, and a phone can
    /// authenticate through the public port; returns that status.
    /// [`System::serving`], once its standby worker is ready to take over too.
    pub async fn standby_ready(&self) -> Status {
        let deadline = Instant::now() + STEP;
        loop {
            let status = self.serving().await;
            if status.standby.as_ref().is_some_and(|s| s.ready) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no standby ready; last status {:?}; log:\n{}",
                self.name,
                status.standby,
                self.log_tail()
            );
            tokio::time::sleep(RETRY).await;
        }
    }

    pub async fn serving(&self) -> Status {
        let deadline = Instant::now() + STEP;
        loop {
            let status = self.status().await;
            if status.state == StateName::Healthy && status.worker.pid.is_some() {
                Client::reconnect(self.public, "bench probe", deadline).await;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "{}: never healthy; last status {:?}; log:\n{}",
                self.name,
                status.state,
                self.log_tail()
            );
            tokio::time::sleep(RETRY).await;
        }
    }

    /// The serving worker's pid.
    pub async fn worker_pid(&self) -> u32 {
        self.serving()
            .await
            .worker
            .pid
            .expect("a serving worker has a pid")
    }

    pub async fn phone(&self, name: &str) -> Client {
        Client::phone(self.public, name).await
    }

    /// The desktop's public key, as the pairing link carries it (the system keeps its
    /// secrets in files: its environment has no session bus).
    pub fn identity(&self) -> [u8; 32] {
        *chroxy::secrets::Secrets::files(&self.paths())
            .identity()
            .expect("the system's identity key")
            .public()
    }

    /// A phone speaking protocol v2 as `device`, paired now with a fresh code (as a
    /// scanned QR does) unless it is paired already.
    pub async fn phone_v2(&self, name: &str, device: &KeyPair, pair: bool) -> (Client, Duration) {
        let code = pair.then(|| {
            chroxy::devices::Devices::new(&self.paths())
                .mint_code(chroxy::protocol::now_ms())
                .expect("minting a pairing code")
        });
        let code = code.as_ref().map(|c| c.expose());
        Client::phone_v2(self.public, name, &self.identity(), device, code).await
    }

    pub fn log_tail(&self) -> String {
        tail(&self.log)
    }

    /// Stops it as a user would (SIGTERM: drain, stop the worker, exit) and waits.
    pub async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.supervisor_pid() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .unwrap_or_else(|e| panic!("{}: SIGTERM: {e}", self.name));
        let status = timeout_at(Instant::now() + STEP, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "{}: still running {STEP:?} after SIGTERM; log:\n{}",
                    self.name,
                    tail(&self.log)
                )
            })
            .unwrap_or_else(|e| panic!("{}: waiting for chroxy: {e}", self.name));
        assert!(
            status.success(),
            "{}: chroxy exited with {status}; log:\n{}",
            self.name,
            tail(&self.log)
        );
    }
}

/// The last lines of a log, for panic messages.
fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A `kB` field of /proc/<pid>/status (VmRSS, VmHWM), in bytes: this process alone,
/// never its children.
pub fn status_bytes(pid: u32, key: &str) -> u64 {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no `{key}` in {path}"));
    kb * 1024
}
