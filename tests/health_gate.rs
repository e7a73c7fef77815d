//! The supervisor's health gate (`chroxy::supervisor::health::gate`) against real
//! processes started the way the supervisor starts them (`worker --port 0 --supervised`,
//! the token as the first line on stdin, stdin kept open): the real `chroxy worker`, and `bad-worker`,
//! the test suite's stand-in for a bad release, which must fail at exactly the step its
//! mode breaks. Loopback only; every process has a temporary CHROXY_HOME and is killed
//! when its test ends.

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use chroxy::control::{to_line, token_line, SupervisorCommand, WorkerEvent};
use chroxy::protocol::ShutdownReason;
use chroxy::supervisor::health::{gate, GateFailure, Step};
use chroxy::token::ApiToken;
use common::*;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_tungstenite::tungstenite::Message;

/// Far above what a healthy local worker needs; a failing step must not need it.
const DEADLINE: Duration = Duration::from_secs(20);

fn token() -> ApiToken {
    ApiToken::new(TOKEN)
}

/// The signing key these tests' workers are handed, as a supervisor's would be.
fn voucher() -> chroxy::forwarded::Voucher {
    chroxy::forwarded::Voucher::new(&token())
}

/// A worker process as the supervisor holds it: its control channel on stdin/stdout.
struct Supervised {
    child: Child,
    port: u16,
    /// Open for as long as the test wants the process alive: closing it stops a worker.
    stdin: ChildStdin,
    events: Lines<BufReader<ChildStdout>>,
    log: PathBuf,
}

impl Supervised {
    /// Spawns `cmd`, hands it the token on stdin as a supervisor does, and waits for
    /// its `ready` line.
    async fn start(mut cmd: Command, log: PathBuf) -> Self {
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("starting the worker");
        let mut stdin = child.stdin.take().unwrap();
        let identity = chroxy::channel::KeyPair::generate().unwrap();
        let line = token_line(&token(), &voucher(), &identity);
        stdin.write_all(line.as_bytes()).await.unwrap();
        let events = BufReader::new(child.stdout.take().unwrap()).lines();
        let pid = child.id().unwrap();
        let mut w = Self {
            child,
            port: 0,
            stdin,
            events,
            log,
        };
        match w.event().await {
            WorkerEvent::Ready { port, pid: said } => {
                assert_eq!(said, pid, "the ready line names the process");
                assert_ne!(port, 0, "the ready line names the bound port");
                w.port = port;
            }
            other => panic!("expected `ready` first, got {other:?}"),
        }
        w
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next control-channel event, within WAIT.
    async fn event(&mut self) -> WorkerEvent {
        let line = tokio::time::timeout(WAIT, self.events.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("no control line within {WAIT:?}; log:\n{}", self.log_text())
            })
            .unwrap()
            .unwrap_or_else(|| panic!("the worker closed stdout; log:\n{}", self.log_text()));
        serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a control-channel event ({e}): {line}"))
    }

    /// Reads heartbeats until their `server_faults` add up to at least `at_least`;
    /// returns the sum (everything counted since the worker started).
    async fn server_faults_reach(&mut self, at_least: u64) -> u64 {
        let mut total = 0;
        while total < at_least {
            if let WorkerEvent::Heartbeat { server_faults, .. } = self.event().await {
                total += server_faults;
            }
        }
        total
    }

    /// Reads heartbeats up to the first that reports `clients` phones; returns the
    /// `server_faults` they add up to.
    async fn server_faults_until_clients(&mut self, clients: u32) -> u64 {
        let mut total = 0;
        loop {
            if let WorkerEvent::Heartbeat {
                server_faults,
                clients: now,
                ..
            } = self.event().await
            {
                total += server_faults;
                if now == clients {
                    return total;
                }
            }
        }
    }

    async fn command(&mut self, cmd: &SupervisorCommand) {
        self.stdin.write_all(to_line(cmd).as_bytes()).await.unwrap();
        self.stdin.flush().await.unwrap();
    }

    /// Waits for the process to exit; its code.
    async fn exit_code(&mut self) -> Option<i32> {
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .expect("the worker did not exit")
            .unwrap()
            .code()
    }
}

/// The real `chroxy worker --port 0 --supervised`; no agent is needed for the gate.
async fn chroxy_worker(home: &Home) -> Supervised {
    let (mut cmd, log) = chroxy_command(home, &WorkerOpts::missing_cli(), "worker");
    cmd.args(["worker", "--port", "0", "--supervised", "--cwd"])
        .arg(home.project())
        .env_remove("CHROXY_TOKEN");
    Supervised::start(cmd, log).await
}

/// `bad-worker`, started exactly like a release of chroxy, misbehaving as `mode` says.
fn bad_command(home: &Home, mode: &str) -> (Command, PathBuf) {
    let log = home.dir.path().join(format!("bad-worker-{mode}.log"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_bad-worker"));
    cmd.args(["worker", "--port", "0", "--supervised", "--cwd"])
        .arg(home.project())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHROXY_HOME", home.chroxy())
        .env("HOME", home.user_home())
        .env("CHROXY_BAD_MODE", mode)
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    (cmd, log)
}

async fn bad_worker(home: &Home, mode: &str) -> Supervised {
    let (cmd, log) = bad_command(home, mode);
    Supervised::start(cmd, log).await
}

/// The gate's failure, which must exist.
async fn failure(port: u16, token: &ApiToken, deadline: Duration) -> GateFailure {
    // Bounded from outside too: a gate that ignored its deadline would hang the test.
    tokio::time::timeout(
        deadline + WAIT,
        gate(port, token, Some(&voucher()), deadline),
    )
    .await
    .expect("the gate outlived its deadline")
    .expect_err("the gate passed")
}

#[tokio::test]
async fn a_healthy_worker_passes_and_neither_probes_nor_client_mistakes_count_as_faults() {
    let home = Home::new();
    home.config("[worker]\nheartbeat_ms = 50\n");
    let mut w = chroxy_worker(&home).await;
    // Probed again and again, as during a canary window.
    for _ in 0..3 {
        gate(w.port, &token(), Some(&voucher()), DEADLINE)
            .await
            .unwrap_or_else(|f| panic!("{f}; log:\n{}", w.log_text()));
    }
    // The canary counts server faults: neither the probes nor a phone's mistakes (a
    // type this release does not know, a frame that is not JSON, a missing field, a
    // wrong token) are the release's fault.
    let mut phone = Client::connect(w.port).await;
    assert_eq!(phone.auth(TOKEN).await["type"], "auth_ok");
    // From a heartbeat that saw the phone to one that saw it gone, every mistake it
    // makes in between is covered.
    w.server_faults_until_clients(1).await;
    for (frame, code) in [
        (json!({"type": "no_such_type"}).to_string(), "UNKNOWN_TYPE"),
        ("not json".to_owned(), "INVALID_MESSAGE"),
        (json!({"type": "input"}).to_string(), "INVALID_MESSAGE"),
    ] {
        phone.send_raw(Message::text(frame)).await;
        let answer = phone.until_type("error").await;
        assert_eq!(answer["code"], code, "{answer}");
    }
    let mut wrong = Client::connect(w.port).await;
    assert_eq!(wrong.auth("wrong-token").await["type"], "auth_fail");
    phone.ws.close(None).await.unwrap();
    let faults = w.server_faults_until_clients(0).await;
    assert_eq!(faults, 0, "log:\n{}", w.log_text());
}

#[tokio::test]
async fn a_wrong_token_fails_at_auth_and_the_report_holds_no_token() {
    let home = Home::new();
    home.config("[worker]\nauth_backoff_base_ms = 10\n");
    let w = chroxy_worker(&home).await;
    let wrong = ApiToken::new("wrong-token-fedcba9876543210");
    let f = failure(w.port, &wrong, DEADLINE).await;
    assert_eq!(f.step, Step::Auth, "{f}");
    assert!(f.detail.contains("invalid_token"), "{f}");
    let report = f.to_string();
    assert!(
        report.starts_with("health gate failed at auth: "),
        "{report}"
    );
    assert!(!report.contains(wrong.expose()) && !report.contains(TOKEN));
    // A failed probe does not lock the right token out.
    gate(w.port, &token(), Some(&voucher()), DEADLINE)
        .await
        .unwrap();
}

#[tokio::test]
async fn nothing_listening_fails_at_http_health() {
    let port = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap().port()
    }; // closed again here
    let f = failure(port, &token(), DEADLINE).await;
    assert_eq!(f.step, Step::Http, "{f}");
    assert_eq!(f.step.as_str(), "http_health");
}

#[tokio::test]
async fn a_port_that_accepts_but_never_answers_fails_at_http_health_by_the_deadline() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    // Accepts and holds every connection, says nothing.
    let _holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    let f = failure(port, &token(), Duration::from_millis(500)).await;
    assert_eq!(f.step, Step::Http, "{f}");
    assert!(f.detail.contains("deadline"), "{f}");
}

#[tokio::test]
async fn a_release_that_refuses_the_upgrade_fails_at_websocket_upgrade() {
    let home = Home::new();
    let w = bad_worker(&home, "upgrade").await;
    let f = failure(w.port, &token(), DEADLINE).await;
    assert_eq!(f.step, Step::Upgrade, "{f}");
    assert_eq!(f.step.as_str(), "websocket_upgrade");
    assert!(f.detail.contains("404"), "{f}");
}

#[tokio::test]
async fn a_release_that_refuses_the_token_fails_at_auth() {
    let home = Home::new();
    let w = bad_worker(&home, "auth").await;
    let f = failure(w.port, &token(), DEADLINE).await;
    assert_eq!(f.step, Step::Auth, "{f}");
    assert!(f.detail.contains("auth_fail"), "{f}");
    assert!(!f.to_string().contains(TOKEN));
}

#[tokio::test]
async fn a_release_that_never_answers_ping_fails_at_ping_when_the_deadline_expires() {
    let home = Home::new();
    let w = bad_worker(&home, "ping").await;
    let f = failure(w.port, &token(), Duration::from_secs(1)).await;
    assert_eq!(f.step, Step::Ping, "{f}");
    assert!(f.detail.contains("1000 ms deadline"), "{f}");
}

#[tokio::test]
async fn a_release_that_errors_on_valid_requests_passes_and_its_heartbeats_count_the_faults() {
    let home = Home::new();
    let (mut cmd, log) = bad_command(&home, "errors");
    cmd.env("CHROXY_BAD_HEARTBEAT_MS", "50");
    let mut w = Supervised::start(cmd, log).await;
    gate(w.port, &token(), Some(&voucher()), DEADLINE)
        .await
        .unwrap();
    let mut phone = Client::connect(w.port).await;
    assert_eq!(phone.auth(TOKEN).await["type"], "auth_ok");
    for i in 0..3 {
        phone
            .send(json!({"type": "input", "data": format!("hello {i}")}))
            .await;
        assert_eq!(phone.recv().await["type"], "error");
    }
    assert_eq!(w.server_faults_reach(3).await, 3);
    // It drains like a worker.
    w.command(&SupervisorCommand::Drain {
        reason: ShutdownReason::Restart,
        restart_eta_ms: 1_000,
        idle_wait_ms: 1_000,
    })
    .await;
    while w.event().await != WorkerEvent::DrainDone {}
    assert_eq!(w.exit_code().await, Some(0));
}

#[tokio::test]
async fn a_release_that_crashes_later_passes_first_then_exits_3() {
    let home = Home::new();
    let mut w = bad_worker(&home, "crash_later").await;
    gate(w.port, &token(), Some(&voucher()), DEADLINE)
        .await
        .unwrap();
    assert_eq!(w.exit_code().await, Some(3));
}

#[tokio::test]
async fn bad_worker_answers_the_command_line_like_chroxy() {
    let home = Home::new();
    let version = Command::new(env!("CARGO_BIN_EXE_bad-worker"))
        .arg("--version")
        .output()
        .await
        .unwrap();
    assert!(version.status.success());
    assert_eq!(
        String::from_utf8_lossy(&version.stdout),
        "chroxy 0.0.0-bad (badbadbadbad)\n"
    );
    // `crash`: a release that cannot start says nothing on the control channel.
    let (mut cmd, _) = bad_command(&home, "crash");
    let crashed = cmd.stdin(Stdio::null()).output().await.unwrap();
    assert_eq!(crashed.status.code(), Some(3));
    assert!(crashed.stdout.is_empty(), "no ready line before a crash");
    // No mode: a usage error, not a working worker.
    let (mut cmd, _) = bad_command(&home, "");
    let refused = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert_eq!(refused.status.code(), Some(2));
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(said.contains("CHROXY_BAD_MODE"), "{said}");
}
