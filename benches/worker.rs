//! Worker benchmarks: how fast, how promptly and how small the bridge between one agent
//! process and its phones is. Sessions (the CLI at ~300 MB and 0.6 s each) are the
//! expensive resource; these figures check that the worker around them stays cheap.
//!
//! Each figure starts real `chroxy worker` processes on a temporary CHROXY_HOME, bound to
//! 127.0.0.1, with `fake-claude` as the agent (`BENCH <n> <interval_us>` makes it stream
//! `n` deltas whose text is the wall-clock time they were written), and drives them with
//! WebSocket clients from this process. Nothing sleeps to let things start: every wait
//! is on a signal (the `ready` line, a frame) under a deadline, and anything unexpected
//! panics with what was seen — this bench never prints a number it did not measure.
//!
//! `cargo bench --bench worker`; `CHROXY_BENCH_QUICK=1` shrinks the counts for CI.

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
/// Deadline of every single step (start, connect, a frame, a short turn).
const STEP: Duration = Duration::from_secs(30);
/// Deadline of one whole streamed turn.
const STREAM: Duration = Duration::from_secs(120);
/// Clients watching the session in the throughput figure.
const CLIENTS: usize = 10;
/// Sessions with one turn each in the memory figure (the protocol's limit).
const SESSIONS: usize = 5;

/// How much work each figure does.
struct Plan {
    mode: &'static str,
    throughput_runs: usize,
    throughput_deltas: u64,
    latency_deltas: u64,
    latency_interval_us: u64,
    rss_runs: usize,
}

impl Plan {
    fn from_env() -> Self {
        if std::env::var("CHROXY_BENCH_QUICK").is_ok_and(|v| v == "1") {
            Self {
                mode: "quick (CHROXY_BENCH_QUICK=1)",
                throughput_runs: 2,
                throughput_deltas: 20_000,
                latency_deltas: 1_000,
                latency_interval_us: 100,
                rss_runs: 1,
            }
        } else {
            Self {
                mode: "full",
                throughput_runs: 8,
                throughput_deltas: 100_000,
                latency_deltas: 20_000,
                latency_interval_us: 100,
                rss_runs: 3,
            }
        }
    }
}

fn main() {
    let plan = Plan::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("starting the bench's tokio runtime");
    let started = std::time::Instant::now();
    let rows = runtime.block_on(async {
        let mut rows = Vec::new();
        rows.extend(throughput(&plan).await);
        rows.extend(latency(&plan).await);
        rows.extend(memory(&plan).await);
        rows
    });
    print_table(&plan, &rows, started.elapsed());
}

// ---- figures ------------------------------------------------------------------------

/// One row of the table.
struct Row {
    figure: String,
    /// p50, or the value.
    mid: String,
    /// p99, or the range.
    spread: String,
    samples: String,
}

/// Deltas per second through one session to 10 clients, coalescing at its default.
/// A run's clock starts at the first delta's timestamp (written by the CLI) and stops
/// when the last of the 10 clients has all `n` of them: n / that is the figure.
async fn throughput(plan: &Plan) -> Vec<Row> {
    let n = plan.throughput_deltas;
    let worker = Worker::start("throughput", None).await;
    let mut clients = Vec::new();
    for i in 0..CLIENTS {
        clients.push(worker.client(&format!("throughput client {i}")).await);
    }
    // The first input starts the agent; measure only a warm one.
    turn_on_all(&mut clients, "warm up").await;

    let (mut rates, mut emit_rates, mut tails) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.throughput_runs {
        clients[0]
            .send(json!({"type": "input", "data": format!("BENCH {n} 0")}))
            .await;
        let deadline = Instant::now() + STREAM;
        let tasks: Vec<_> = clients
            .into_iter()
            .map(|mut c| {
                tokio::spawn(async move {
                    let got = c.read_bench(n, deadline).await;
                    (c, got)
                })
            })
            .collect();
        clients = Vec::new();
        let mut runs = Vec::new();
        for task in tasks {
            let (c, got) = task.await.expect("a bench client panicked");
            clients.push(c);
            runs.push(got);
        }
        let first = runs[0].first_ts;
        let last = runs[0].last_ts;
        assert!(
            runs.iter()
                .all(|r| r.first_ts == first && r.last_ts == last),
            "the clients did not receive the same text"
        );
        let done = runs
            .iter()
            .map(|r| r.last_received)
            .max()
            .expect("at least one client");
        rates.push(n as f64 / secs(done.saturating_sub(first)));
        emit_rates.push(n as f64 / secs(last.saturating_sub(first)).max(1e-9));
        tails.push(done.saturating_sub(last) as f64 / 1e6);
    }
    let (rss, peak) = (worker.status_kb("VmRSS"), worker.status_kb("VmHWM"));
    worker.stop().await;

    let runs = format!("{} runs × {n} deltas", plan.throughput_runs);
    vec![
        Row {
            figure: format!("deltas/s, 1 session → {CLIENTS} clients, coalesce 50 ms"),
            mid: format!("{} /s", si(median(&rates))),
            spread: format!("{}–{}", si(min(&rates)), si(max(&rates))),
            samples: runs.clone(),
        },
        Row {
            figure: "  of which: CLI emission rate (pipe back-pressure)".into(),
            mid: format!("{} /s", si(median(&emit_rates))),
            spread: format!("{}–{}", si(min(&emit_rates)), si(max(&emit_rates))),
            samples: runs.clone(),
        },
        Row {
            figure: "  last delta written → all clients have it".into(),
            mid: format!("{:.1} ms", median(&tails)),
            spread: format!("{:.1}–{:.1} ms", min(&tails), max(&tails)),
            samples: runs,
        },
        Row {
            figure: "  worker RSS after those runs (VmRSS / VmHWM peak)".into(),
            mid: format!("{:.1} MiB", rss as f64 / 1024.0),
            spread: format!("peak {:.1} MiB", peak as f64 / 1024.0),
            samples: "1 worker".into(),
        },
    ]
}

/// CLI line → client frame, coalescing off: the client's receive time minus the
/// timestamp the CLI wrote into the delta (one machine, one clock).
async fn latency(plan: &Plan) -> Vec<Row> {
    let (n, us) = (plan.latency_deltas, plan.latency_interval_us);
    let worker = Worker::start("latency", Some("[worker]\ncoalesce_ms = 0\n")).await;
    let mut client = worker.client("latency client").await;
    turn_on_all(std::slice::from_mut(&mut client), "warm up").await;
    client
        .send(json!({"type": "input", "data": format!("BENCH {n} {us}")}))
        .await;
    let got = client.read_bench(n, Instant::now() + STREAM).await;
    worker.stop().await;

    let mut micros: Vec<f64> = got.latencies_ns.iter().map(|&l| l as f64 / 1e3).collect();
    micros.sort_by(f64::total_cmp);
    let late = micros.iter().filter(|&&us| us > 1000.0).count();
    vec![
        Row {
            figure: format!("CLI line → client frame latency, coalesce 0, 1 delta/{us} µs"),
            mid: format!("{:.0} µs", pct(&micros, 50.0)),
            spread: format!("{:.0} µs (max {:.0})", pct(&micros, 99.0), max(&micros)),
            samples: format!("{n} deltas"),
        },
        Row {
            figure: "  p90; share of deltas later than 1 ms".into(),
            mid: format!("{:.0} µs", pct(&micros, 90.0)),
            spread: format!("{:.1} % late", 100.0 * late as f64 / micros.len() as f64),
            samples: format!("{n} deltas"),
        },
        Row {
            figure: "  stream_delta frames per CLI delta".into(),
            mid: format!("{:.3}", got.frames as f64 / n as f64),
            spread: "-".into(),
            samples: format!("{} frames", got.frames),
        },
    ]
}

/// Worker RSS idle with one client, then with 5 sessions that each ran one turn.
async fn memory(plan: &Plan) -> Vec<Row> {
    let (mut idle, mut busy) = (Vec::new(), Vec::new());
    for run in 0..plan.rss_runs {
        let worker = Worker::start(&format!("memory {run}"), None).await;
        let mut client = worker.client("memory client").await;
        idle.push(worker.status_kb("VmRSS") as f64 / 1024.0);

        let mut sessions = vec![client.active_session()];
        for i in 1..SESSIONS {
            client
                .send(json!({"type": "create_session", "name": format!("bench {i}")}))
                .await;
            let switched = client
                .until_type("session_switched", "create_session")
                .await;
            sessions.push(str_field(&switched, "sessionId"));
        }
        for id in &sessions {
            client
                .send(json!({"type": "input", "data": "hello", "sessionId": id}))
                .await;
            client
                .until(
                    |v| v["type"] == "agent_idle" && v["sessionId"] == id.as_str(),
                    "agent_idle",
                )
                .await;
        }
        let agents = children_of(worker.pid);
        assert_eq!(
            agents.len(),
            SESSIONS,
            "expected one fake-claude per session, found {agents:?}"
        );
        busy.push(worker.status_kb("VmRSS") as f64 / 1024.0);
        worker.stop().await;
    }
    let runs = format!("{} worker(s)", plan.rss_runs);
    vec![
        Row {
            figure: "worker RSS, idle, 1 client connected".into(),
            mid: format!("{:.1} MiB", median(&idle)),
            spread: format!("{:.1}–{:.1} MiB", min(&idle), max(&idle)),
            samples: runs.clone(),
        },
        Row {
            figure: format!("worker RSS, {SESSIONS} sessions × 1 turn (agents excluded)"),
            mid: format!("{:.1} MiB", median(&busy)),
            spread: format!("{:.1}–{:.1} MiB", min(&busy), max(&busy)),
            samples: runs,
        },
    ]
}

/// Sends `text` from the first client and waits until every client saw the turn end.
async fn turn_on_all(clients: &mut [Client], text: &str) {
    clients[0]
        .send(json!({"type": "input", "data": text}))
        .await;
    for c in clients.iter_mut() {
        c.until_type("agent_idle", text).await;
    }
}

// ---- the worker -----------------------------------------------------------------------

/// A `chroxy worker` on its own temporary CHROXY_HOME, with `fake-claude` as the agent.
struct Worker {
    child: Child,
    pid: u32,
    port: u16,
    name: String,
    _home: TempDir,
}

impl Worker {
    async fn start(name: &str, config: Option<&str>) -> Self {
        let home = tempfile::tempdir().expect("creating a temporary CHROXY_HOME");
        let (chroxy, user, project) = (
            home.path().join("chroxy"),
            home.path().join("user"),
            home.path().join("project"),
        );
        for dir in [&chroxy, &user, &project] {
            std::fs::create_dir_all(dir).expect("creating the bench's directories");
        }
        if let Some(toml) = config {
            let dir = chroxy.join("config");
            std::fs::create_dir_all(&dir).expect("creating the config directory");
            std::fs::write(dir.join("config.toml"), toml).expect("writing config.toml");
        }
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_chroxy"));
        cmd.args(["worker", "--port", "0", "--cwd"])
            .arg(&project)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", &user)
            .env("CHROXY_HOME", &chroxy)
            .env("CHROXY_TOKEN", TOKEN)
            .env("CHROXY_CLAUDE", env!("CARGO_BIN_EXE_fake-claude"))
            // Warnings (a client kicked as too slow, agent stderr) show up in the output.
            .env("CHROXY_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn().unwrap_or_else(|e| {
            panic!("{name}: cannot start {}: {e}", env!("CARGO_BIN_EXE_chroxy"))
        });
        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let line = timeout_at(Instant::now() + STEP, lines.next_line())
            .await
            .unwrap_or_else(|_| panic!("{name}: worker printed no ready line within {STEP:?}"))
            .unwrap_or_else(|e| panic!("{name}: reading the worker's stdout: {e}"))
            .unwrap_or_else(|| panic!("{name}: worker exited before it was ready (see stderr)"));
        let ready: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("{name}: ready line {line:?} is not JSON: {e}"));
        assert_eq!(
            ready["type"], "ready",
            "{name}: unexpected first line {line}"
        );
        let port = u16::try_from(ready["port"].as_u64().unwrap_or(0))
            .unwrap_or_else(|_| panic!("{name}: bad port in {line}"));
        let pid = ready["pid"]
            .as_u64()
            .and_then(|p| u32::try_from(p).ok())
            .unwrap_or_else(|| panic!("{name}: no pid in {line}"));
        assert_eq!(
            Some(pid),
            child.id(),
            "{name}: ready line names another pid"
        );
        // Keep reading so the worker never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self {
            child,
            pid,
            port,
            name: name.to_owned(),
            _home: home,
        }
    }

    /// Connects and authenticates a client; returns it after the welcome replay.
    async fn client(&self, name: &str) -> Client {
        let url = format!("ws://127.0.0.1:{}/ws", self.port);
        let (ws, _) = timeout_at(Instant::now() + STEP, tokio_tungstenite::connect_async(url))
            .await
            .unwrap_or_else(|_| panic!("{name}: no WebSocket upgrade within {STEP:?}"))
            .unwrap_or_else(|e| panic!("{name}: WebSocket connect failed: {e}"));
        let mut c = Client {
            ws,
            name: name.to_owned(),
            seen: Vec::new(),
        };
        c.send(json!({"type": "auth", "token": TOKEN,
                      "deviceInfo": {"deviceName": name, "deviceType": "phone", "platform": "bench"}}))
            .await;
        let ok = c.recv("auth").await;
        assert_eq!(ok["type"], "auth_ok", "{name}: authentication failed: {ok}");
        c.until_type("history_replay_end", "the welcome").await;
        c
    }

    /// A `kB` line of /proc/<pid>/status (VmRSS, VmHWM): the worker process only.
    fn status_kb(&self, key: &str) -> u64 {
        let path = format!("/proc/{}/status", self.pid);
        let status = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: reading {path}: {e}", self.name));
        status
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
            .and_then(|v| v.trim().strip_suffix("kB")?.trim().parse().ok())
            .unwrap_or_else(|| panic!("{}: no `{key}` in {path}", self.name))
    }

    /// SIGTERM, then waits for an orderly exit (agents stopped, state saved).
    async fn stop(mut self) {
        let pid = nix::unistd::Pid::from_raw(self.pid as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM)
            .unwrap_or_else(|e| panic!("{}: SIGTERM failed: {e}", self.name));
        let status = timeout_at(Instant::now() + STEP, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("{}: worker still running {STEP:?} after SIGTERM", self.name)
            })
            .unwrap_or_else(|e| panic!("{}: waiting for the worker: {e}", self.name));
        assert!(
            status.success(),
            "{}: worker exited with {status}",
            self.name
        );
    }
}

/// Direct children of `pid`, from /proc (field 4 of stat is the parent).
fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("reading /proc").flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) =
            std::fs::read_to_string(Path::new("/proc").join(child.to_string()).join("stat"))
        else {
            continue;
        };
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat[i + 2..].split(' ').nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            out.push(child);
        }
    }
    out
}

// ---- a WebSocket client -----------------------------------------------------------------

struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    name: String,
    /// The last frames, for panic messages.
    seen: Vec<Value>,
}

/// What one client saw of a `BENCH` turn.
struct BenchRun {
    /// Timestamps (ns since the epoch) of the first and last delta, as the CLI wrote them.
    first_ts: u64,
    last_ts: u64,
    /// When this client had the last one.
    last_received: u64,
    /// Receive time − write time of every delta.
    latencies_ns: Vec<u64>,
    /// `stream_delta` frames that carried them.
    frames: u64,
}

impl Client {
    async fn send(&mut self, v: Value) {
        timeout_at(
            Instant::now() + STEP,
            self.ws.send(Message::text(v.to_string())),
        )
        .await
        .unwrap_or_else(|_| panic!("{}: send blocked for {STEP:?}", self.name))
        .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.name));
    }

    /// The next text frame and when it arrived (ns since the epoch).
    async fn next(&mut self, deadline: Instant, waiting_for: &str) -> (Value, u64) {
        loop {
            let msg = timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no {waiting_for} before the deadline; last frames: {:#?}",
                        self.name,
                        self.tail()
                    )
                });
            let at = now_ns();
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("{}: frame is not JSON ({e}): {t}", self.name));
                    if matches!(
                        v["type"].as_str(),
                        Some("error" | "session_error" | "rate_limited")
                    ) {
                        panic!("{}: the worker refused something: {v}", self.name);
                    }
                    if v["type"] != "stream_delta" {
                        self.seen.push(v.clone());
                        if self.seen.len() > 12 {
                            self.seen.remove(0);
                        }
                    }
                    return (v, at);
                }
                Some(Ok(Message::Close(frame))) => panic!(
                    "{}: the worker closed the connection ({frame:?}) while waiting for {waiting_for}; last frames: {:#?}",
                    self.name,
                    self.tail()
                ),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("{}: WebSocket error: {e}", self.name),
                None => panic!("{}: connection ended while waiting for {waiting_for}", self.name),
            }
        }
    }

    async fn recv(&mut self, waiting_for: &str) -> Value {
        self.next(Instant::now() + STEP, waiting_for).await.0
    }

    async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool, waiting_for: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let (v, _) = self.next(deadline, waiting_for).await;
            if pred(&v) {
                return v;
            }
        }
    }

    async fn until_type(&mut self, ty: &str, context: &str) -> Value {
        self.until(|v| v["type"] == ty, &format!("{ty} ({context})"))
            .await
    }

    fn active_session(&self) -> String {
        let switched = self
            .seen
            .iter()
            .rev()
            .find(|v| v["type"] == "session_switched")
            .unwrap_or_else(|| panic!("{}: no session_switched in the welcome", self.name));
        str_field(switched, "sessionId")
    }

    /// Reads one `BENCH n` turn through `agent_idle`, checking that every timestamp
    /// arrives exactly once and in order.
    async fn read_bench(&mut self, n: u64, deadline: Instant) -> BenchRun {
        let mut run = BenchRun {
            first_ts: 0,
            last_ts: 0,
            last_received: 0,
            latencies_ns: Vec::with_capacity(n as usize),
            frames: 0,
        };
        let mut count = 0u64;
        loop {
            let (v, at) = self.next(deadline, "the BENCH stream").await;
            match v["type"].as_str() {
                Some("stream_delta") => {
                    run.frames += 1;
                    let delta = v["delta"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{}: stream_delta without text: {v}", self.name));
                    for piece in delta.split_terminator(';') {
                        let ts: u64 = piece.parse().unwrap_or_else(|_| {
                            panic!("{}: delta piece {piece:?} is not a timestamp", self.name)
                        });
                        assert!(
                            ts >= run.last_ts,
                            "{}: timestamps out of order ({ts} after {})",
                            self.name,
                            run.last_ts
                        );
                        if count == 0 {
                            run.first_ts = ts;
                        }
                        run.last_ts = ts;
                        run.latencies_ns.push(at.saturating_sub(ts));
                        count += 1;
                    }
                    assert!(
                        delta.ends_with(';'),
                        "{}: a delta split a timestamp: {delta:?}",
                        self.name
                    );
                    if count == n {
                        run.last_received = at;
                    }
                }
                Some("stream_end") => assert_eq!(
                    count, n,
                    "{}: stream ended after {count} of {n} deltas",
                    self.name
                ),
                Some("agent_idle") => {
                    assert_eq!(
                        count, n,
                        "{}: turn ended after {count} of {n} deltas",
                        self.name
                    );
                    return run;
                }
                _ => {}
            }
        }
    }

    fn tail(&self) -> &[Value] {
        &self.seen
    }
}

fn str_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{key}` in {v}"))
        .to_owned()
}

fn now_ns() -> u64 {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is before 1970");
    u64::try_from(since.as_nanos()).expect("the clock is past 2554")
}

// ---- numbers ------------------------------------------------------------------------------

fn secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[f64], p: f64) -> f64 {
    assert!(!sorted.is_empty(), "no samples");
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    pct(&v, 50.0)
}

fn min(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::INFINITY, f64::min)
}

fn max(xs: &[f64]) -> f64 {
    xs.iter().copied().fold(f64::NEG_INFINITY, f64::max)
}

/// 123456.0 → "123k".
fn si(x: f64) -> String {
    if x >= 1e6 {
        format!("{:.2}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.0}k", x / 1e3)
    } else {
        format!("{x:.0}")
    }
}

fn print_table(plan: &Plan, rows: &[Row], took: Duration) {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!();
    println!(
        "chroxy worker bench — {} run, {cpus} CPUs, agent = fake-claude, took {:.1} s",
        plan.mode,
        took.as_secs_f64()
    );
    let header = ["figure", "p50 / value", "p99 / range", "samples"];
    let w = [
        rows.iter()
            .map(|r| r.figure.chars().count())
            .max()
            .unwrap_or(0)
            .max(6),
        rows.iter()
            .map(|r| r.mid.chars().count())
            .max()
            .unwrap_or(0)
            .max(11),
        rows.iter()
            .map(|r| r.spread.chars().count())
            .max()
            .unwrap_or(0)
            .max(11),
        rows.iter()
            .map(|r| r.samples.chars().count())
            .max()
            .unwrap_or(0)
            .max(7),
    ];
    let line = |c: [&str; 4]| {
        println!(
            "{:<w0$}  {:>w1$}  {:>w2$}  {:<w3$}",
            c[0],
            c[1],
            c[2],
            c[3],
            w0 = w[0],
            w1 = w[1],
            w2 = w[2],
            w3 = w[3]
        );
    };
    line(header);
    println!("{}", "-".repeat(w.iter().sum::<usize>() + 6));
    for r in rows {
        line([&r.figure, &r.mid, &r.spread, &r.samples]);
    }
    println!();
    println!("throughput: clock from the first delta's CLI timestamp to the moment the last of");
    println!(
        "  {CLIENTS} clients holds all deltas (each checked: every timestamp once, in order)."
    );
    println!("latency: client receive time − the timestamp the CLI wrote just before the line;");
    println!("  same machine clock; includes the client's own WebSocket read.");
    println!("RSS: VmRSS of the worker process alone (/proc/<pid>/status); the fake-claude");
    println!("  children are separate processes, so their memory is excluded by construction.");
}
