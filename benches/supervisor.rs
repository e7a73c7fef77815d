//! Supervisor benchmarks: how long a phone is without its machine when things go wrong.
//!
//! - worker kill -9 → the public port serves again and a client has re-authenticated
//!   through it (each kill an independent crash: the backoff is at its 0.5 s floor);
//! - rollback command (`POST /api/rollback`, what `chroxy rollback` sends) → the
//!   known-good release serves and a client has authenticated through the public port.
//!
//! A real `chroxy start` on a temporary CHROXY_HOME, `fake-claude` as the agent, all on
//! 127.0.0.1. Every wait is on a condition under a deadline; nothing here prints a number
//! it did not measure. `cargo bench --bench supervisor`; `CHROXY_BENCH_QUICK=1` for CI.

use std::process::Stdio;
use std::time::Duration;

use chroxy::secrets::ApiToken;
use chroxy::supervisor::remote;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::process::{Child, Command};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
/// Deadline of every single wait.
const STEP: Duration = Duration::from_secs(60);

fn main() {
    let quick = std::env::var("CHROXY_BENCH_QUICK").is_ok_and(|v| v == "1");
    let (kills, rollbacks) = if quick { (3, 2) } else { (20, 10) };
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let started = Instant::now();
        let sup = Sup::start().await;
        let kill = kill_to_healthy(&sup, kills).await;
        let rollback = rollback_to_serving(&sup, rollbacks).await;
        let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
        println!();
        println!(
            "chroxy supervisor bench — {} run, {cpus} CPUs, agent = fake-claude, took {:.1} s",
            if quick {
                "quick (CHROXY_BENCH_QUICK=1)"
            } else {
                "full"
            },
            started.elapsed().as_secs_f64()
        );
        println!(
            "{:<52} {:>9} {:>9} {:>9} {:>5}",
            "figure", "p50", "p95", "max", "runs"
        );
        for (figure, samples) in [
            (
                "worker kill -9 → public port healthy + re-authenticated",
                &kill,
            ),
            ("rollback command → known-good serving", &rollback),
        ] {
            let mut s = samples.clone();
            s.sort_by(f64::total_cmp);
            println!(
                "{figure:<52} {:>7.0}ms {:>7.0}ms {:>7.0}ms {:>5}",
                pct(&s, 50.0),
                pct(&s, 95.0),
                s[s.len() - 1],
                s.len()
            );
        }
    });
}

struct Sup {
    _home: tempfile::TempDir,
    child: Child,
    public: u16,
    status: u16,
    admin: ApiToken,
}

impl Drop for Sup {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Sup {
    async fn start() -> Self {
        let home = tempfile::tempdir().unwrap();
        let config = home.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        // Every kill is measured as one independent crash; the crash-loop rules are the
        // state machine's (tested there), not what this figure is about.
        std::fs::write(
            config.join("config.toml"),
            "[supervisor]\nhealthy_reset_ms = 0\ncrash_budget = 1000\n",
        )
        .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_chroxy"))
            .args([
                "start",
                "--port",
                "0",
                "--status-port",
                "0",
                "--tunnel",
                "none",
            ])
            .arg("--cwd")
            .arg(home.path())
            .env("CHROXY_HOME", home.path())
            .env("CHROXY_TOKEN", TOKEN)
            .env("CHROXY_CLAUDE", env!("CARGO_BIN_EXE_fake-claude"))
            .env("CHROXY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chroxy start");
        let paths = chroxy::store::Paths::under(home.path());
        let deadline = Instant::now() + STEP;
        let (public, status) = loop {
            let running = chroxy::supervisor::instance::running(&paths);
            if let Some(i) = running.filter(|i| i.public_port != 0 && i.status_port != 0) {
                break (i.public_port, i.status_port);
            }
            assert!(
                Instant::now() < deadline,
                "chroxy start never wrote its ports"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let admin = std::fs::read_to_string(config.join("admin-token")).unwrap();
        let sup = Self {
            _home: home,
            child,
            public,
            status,
            admin: ApiToken::new(admin.trim()),
        };
        sup.serving(|_| true).await;
        sup
    }

    /// Waits until the status satisfies `pred` and a client authenticates through the
    /// public port; returns the status.
    async fn serving(&self, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            assert!(Instant::now() < deadline, "never serving");
            let status = remote::status(self.status).await.expect("status page");
            let v = serde_json::to_value(&status).unwrap();
            if v["state"] == "healthy" && pred(&v) && authenticates(self.public).await {
                return v;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

/// Connects through the public port and authenticates; false while it answers 503.
async fn authenticates(port: u16) -> bool {
    let Ok((mut ws, _)) =
        tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await
    else {
        return false;
    };
    let auth = json!({"type": "auth", "token": TOKEN, "deviceInfo": {"deviceName": "bench"}});
    if ws.send(Message::text(auth.to_string())).await.is_err() {
        return false;
    }
    while let Ok(Some(Ok(frame))) = tokio::time::timeout(STEP, ws.next()).await {
        if let Message::Text(t) = frame {
            let v: Value = serde_json::from_str(&t).unwrap_or_default();
            match v["type"].as_str() {
                Some("auth_ok") => return true,
                Some("auth_fail") => panic!("the bench token was refused"),
                _ => {}
            }
        }
    }
    false
}

async fn kill_to_healthy(sup: &Sup, runs: usize) -> Vec<f64> {
    let mut samples = Vec::new();
    for _ in 0..runs {
        let status = sup.serving(|_| true).await;
        let pid = status["worker"]["pid"].as_i64().unwrap();
        let t0 = Instant::now();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
        sup.serving(|s| s["worker"]["pid"].as_i64() != Some(pid))
            .await;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    samples
}

async fn rollback_to_serving(sup: &Sup, runs: usize) -> Vec<f64> {
    // A second release to roll back from: a copy of the same binary.
    let paths = chroxy::store::Paths::under(sup._home.path());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    let newer = releases
        .add(std::path::Path::new(env!("CARGO_BIN_EXE_chroxy")))
        .unwrap()
        .id;
    let mut samples = Vec::new();
    for _ in 0..runs {
        let body = json!({ "to": newer });
        remote::act(sup.status, &sup.admin, "rollback", Some(body))
            .await
            .unwrap();
        sup.serving(|s| s["worker"]["release"] == newer.as_str())
            .await;
        let t0 = Instant::now();
        remote::act(sup.status, &sup.admin, "rollback", None)
            .await
            .unwrap();
        sup.serving(|s| s["worker"]["release"] == "0").await;
        samples.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    samples
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
