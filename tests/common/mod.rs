//! Test harness: a real `chroxy worker` process on a temporary CHROXY_HOME, the real
//! Claude Code CLI behind it, the scripted model (`chroxy::demo`) in this process, and
//! WebSocket clients. Everything binds 127.0.0.1 port 0; nothing sleeps for readiness.

#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod benchmarks_doc;
pub mod browser;
pub mod clock;
pub mod deploy;
pub mod desktop;
pub mod flood;
pub mod keyring;
pub mod package;
pub mod supervisor;
pub mod x11;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

pub const TOKEN: &str = "test-token-0123456789abcdef0123456789abcdef";
/// The key of the phone every test home has approved (`Home::new`), which
/// [`Client::auth`] presents: new devices need approval by default, as for a user.
pub const DEVICE_KEY: &str = "test-device-key-0123456789abcdef0123456789";
/// Generous: the CLI takes ~0.6 s to start and CI machines are slow.
pub const WAIT: Duration = Duration::from_secs(45);

/// The repository (the workspace root), whichever package's tests run.
pub fn repo_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.ancestors()
        .find(|dir| dir.join("Cargo.lock").exists())
        .unwrap_or(here)
        .to_path_buf()
}

/// A binary of the `chroxy` package. Cargo names it to this package's own tests; the
/// tray app's tests (another package) find it beside their executable's directory,
/// where the same `cargo test --workspace` built it.
pub fn package_bin(name: &str, from_cargo: Option<&'static str>) -> &'static str {
    if let Some(path) = from_cargo {
        return path;
    }
    static FOUND: std::sync::Mutex<Vec<(String, &'static str)>> = std::sync::Mutex::new(Vec::new());
    let mut found = FOUND.lock().unwrap();
    if let Some((_, path)) = found.iter().find(|(n, _)| n == name) {
        return path;
    }
    let exe = std::env::current_exe().unwrap();
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join(name))
        .unwrap();
    assert!(
        path.is_file(),
        "{} is missing; run the tests with `cargo test --workspace` (scripts/test does)",
        path.display()
    );
    // Once per binary and test process: a path that lives as long as the tests.
    let path: &'static str = Box::leak(path.to_string_lossy().into_owned().into_boxed_str());
    found.push((name.to_owned(), path));
    path
}

/// The `chroxy` binary the tests run (release zero of every test home).
pub fn chroxy_bin() -> &'static str {
    package_bin("chroxy", option_env!("CARGO_BIN_EXE_chroxy"))
}

/// The pinned Claude Code CLI installed by the test command. A missing CLI fails the
/// test: a skipped test would count as passing.
pub fn claude_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("CHROXY_TEST_CLAUDE").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let p = repo_root().join("target/tools/claude-code/node_modules/.bin/claude");
    assert!(
        p.exists(),
        "Claude Code CLI not found at {}; run ./scripts/test (it installs the pinned version) or set CHROXY_TEST_CLAUDE",
        p.display()
    );
    p
}

/// The scripted model, served from this test process.
pub struct Model {
    pub handle: chroxy::demo::DemoHandle,
    stop: CancellationToken,
}

impl Model {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let stop = CancellationToken::new();
        let (handle, _task) = chroxy::demo::spawn(listener, stop.clone()).unwrap();
        Self { handle, stop }
    }
}

impl Model {
    /// The conversation of the first main-turn request after the `after`-th, as text:
    /// what the model was sent.
    pub async fn conversation_after(&self, after: u64) -> String {
        let req = self.handle.wait_for_request(after + 1, WAIT).await.unwrap();
        serde_json::to_string(req.messages()).unwrap()
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A temporary home for one test: CHROXY_HOME, the CLI's HOME, a project directory.
pub struct Home {
    pub dir: TempDir,
}

impl Home {
    /// A home whose registry has one approved device: the test phone of [`DEVICE_KEY`].
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["chroxy", "user", "project"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let home = Self { dir };
        let about = chroxy::devices::About {
            name: Some("test"),
            platform: Some("test"),
            address: None,
        };
        home.devices()
            .add_approved(
                &chroxy::devices::DeviceKey::new(DEVICE_KEY),
                about,
                chroxy::protocol::now_ms(),
            )
            .unwrap();
        home.config("");
        home
    }
    /// This home's device registry.
    pub fn devices(&self) -> chroxy::devices::Devices {
        chroxy::devices::Devices::new(&chroxy::store::Paths::under(self.chroxy()))
    }
    pub fn chroxy(&self) -> PathBuf {
        self.dir.path().join("chroxy")
    }
    pub fn user_home(&self) -> PathBuf {
        self.dir.path().join("user")
    }
    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project").canonicalize().unwrap()
    }
    pub fn sessions_dir(&self) -> PathBuf {
        self.chroxy().join("state/sessions")
    }
    /// Writes CHROXY_HOME/config/config.toml. [`Client`] speaks protocol v1 (the
    /// token), so unless `toml` says otherwise the file lets tokens in; protocol v2 is
    /// what the phone client speaks (every browser test) and `tests/encryption.rs`.
    pub fn config(&self, toml: &str) {
        let dir = self.chroxy().join("config");
        std::fs::create_dir_all(&dir).unwrap();
        // Added last, so a test's own line numbers stay as it wrote them.
        let text = if toml.contains("allow_token_auth") {
            toml.to_owned()
        } else if toml.contains("[security]\n") {
            toml.replacen("[security]\n", "[security]\nallow_token_auth = true\n", 1)
        } else {
            format!("{toml}\n[security]\nallow_token_auth = true\n")
        };
        std::fs::write(dir.join("config.toml"), text).unwrap();
    }
}

/// How to start a worker.
pub struct WorkerOpts {
    /// The agent binary; `None` points CHROXY_CLAUDE at a path that does not exist.
    pub claude: Option<PathBuf>,
    pub env: Vec<(String, String)>,
}

impl WorkerOpts {
    /// The real CLI, answering from `model`, with debug logs.
    pub fn real_cli(model: &Model) -> Self {
        Self {
            claude: Some(claude_bin()),
            env: model.handle.cli_env(),
        }
        .env("CHROXY_LOG", "info,chroxy=debug")
    }

    /// `fake-claude` as the agent, for what the real CLI cannot do on cue.
    pub fn fake_cli() -> Self {
        Self {
            claude: Some(PathBuf::from(package_bin(
                "fake-claude",
                option_env!("CARGO_BIN_EXE_fake-claude"),
            ))),
            env: vec![],
        }
        .env("CHROXY_LOG", "info,chroxy=debug")
    }

    /// No agent installed.
    pub fn missing_cli() -> Self {
        Self {
            claude: None,
            env: vec![],
        }
    }

    /// Runs the CLI through a shim that appends everything Chroxy writes to its stdin to
    /// `log`, so a test can count exactly what reached the CLI.
    pub fn recording_stdin(mut self, home: &Home, log: &Path) -> Self {
        let shim = home.dir.path().join("claude-recording");
        let real = self.claude.take().expect("a CLI to wrap");
        std::fs::write(
            &shim,
            format!(
                "#!/bin/sh\ntee -a '{}' | exec '{}' \"$@\"\n",
                log.display(),
                real.display()
            ),
        )
        .unwrap();
        let mut perms = std::fs::metadata(&shim).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&shim, perms).unwrap();
        self.claude = Some(shim);
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// A worker whose agents' stdin is recorded (see `answers_for`).
pub async fn recording_worker(home: &Home, model: &Model) -> (Worker, std::path::PathBuf) {
    let log = home.dir.path().join("stdin.jsonl");
    let w = Worker::start_with(
        home,
        WorkerOpts::real_cli(model).recording_stdin(home, &log),
    )
    .await;
    (w, log)
}

/// The JSON lines of a stdin recording.
pub fn recorded_lines(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

/// The answers Chroxy sent the CLI for one of its control requests.
pub fn answers_for(log: &Path, request_id: &str) -> Vec<Value> {
    recorded_lines(log)
        .into_iter()
        .filter(|v| v["type"] == "control_response" && v["response"]["request_id"] == request_id)
        .map(|v| v["response"]["response"].clone())
        .collect()
}

/// A running `chroxy worker`.
pub struct Worker {
    pub child: Child,
    pub port: u16,
    pub log: PathBuf,
}

impl Worker {
    /// Starts a worker with the real CLI pointed at `model`.
    pub async fn start(home: &Home, model: &Model) -> Self {
        Self::start_with(home, WorkerOpts::real_cli(model)).await
    }

    pub async fn start_with(home: &Home, opts: WorkerOpts) -> Self {
        let (mut cmd, log) = chroxy_command(home, &opts, "worker");
        cmd.args(["worker", "--port", "0", "--cwd"])
            .arg(home.project())
            .stdout(Stdio::piped());
        let mut child = cmd.spawn().expect("starting chroxy worker");
        let stdout = child.stdout.take().unwrap();
        let mut lines = BufReader::new(stdout).lines();
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "worker not ready; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .unwrap()
            .unwrap_or_else(|| {
                panic!(
                    "worker exited; log: {}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            });
        let ready: Value = serde_json::from_str(&line).unwrap();
        assert_eq!(ready["type"], "ready", "{line}");
        let port = ready["port"].as_u64().unwrap() as u16;
        // Keep reading stdout so the worker never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, port, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.id().unwrap()
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn connect(&self) -> Client {
        Client::connect(self.port).await
    }

    /// Connects and authenticates; returns the client after the welcome sequence
    /// (up to `history_replay_end`).
    pub async fn client(&self) -> Client {
        let mut c = self.connect().await;
        c.auth(TOKEN).await;
        c.until_type("history_replay_end").await;
        c
    }

    pub async fn kill9(&mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }

    /// PIDs of the worker's child processes (the agents).
    pub fn children(&self) -> Vec<u32> {
        children_of(self.pid())
    }
}

/// `chroxy` run as a test runs it: only PATH from this environment, the test's homes,
/// the test token, the agent of `opts`, stderr into a fresh log file (returned).
pub fn chroxy_command(home: &Home, opts: &WorkerOpts, what: &str) -> (Command, PathBuf) {
    chroxy_command_limited(home, opts, what, None)
}

/// [`chroxy_command`] with its file-descriptor limit (soft and hard) set to `nofile`,
/// as `ulimit -n` would (through util-linux's `prlimit`, which execs: same pid).
pub fn chroxy_command_limited(
    home: &Home,
    opts: &WorkerOpts,
    what: &str,
    nofile: Option<u64>,
) -> (Command, PathBuf) {
    let log = log_file(home, what);
    let mut cmd = match nofile {
        Some(n) => {
            let mut cmd = Command::new("prlimit");
            cmd.arg(format!("--nofile={n}:{n}"))
                .arg("--")
                .arg(chroxy_bin());
            cmd
        }
        None => Command::new(chroxy_bin()),
    };
    cmd.env_clear()
        .envs(test_env(home, opts))
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    (cmd, log)
}

/// A new log file under the test's directory, named after `what`.
pub fn log_file(home: &Home, what: &str) -> PathBuf {
    let logs = home.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let n = std::fs::read_dir(&logs).unwrap().count();
    logs.join(format!("{what}-{n}.log"))
}

/// The whole environment of a chroxy process in a test: its home, a temporary HOME,
/// the test token, the agent of `opts` and its variables — nothing of the user's.
pub fn test_env(home: &Home, opts: &WorkerOpts) -> Vec<(String, std::ffi::OsString)> {
    let mut env: Vec<(String, std::ffi::OsString)> = vec![
        ("PATH".into(), std::env::var_os("PATH").unwrap_or_default()),
        ("CHROXY_HOME".into(), home.chroxy().into()),
        ("HOME".into(), home.user_home().into()),
        ("CHROXY_TOKEN".into(), TOKEN.into()),
    ];
    env.push((
        "CHROXY_CLAUDE".into(),
        match &opts.claude {
            Some(p) => p.clone().into(),
            None => "/nonexistent/claude".into(),
        },
    ));
    for (k, v) in &opts.env {
        env.push((k.clone(), v.into()));
    }
    env
}

/// Waits for state that has no event to wait on (a file, a process, another process's
/// HTTP answer): calls `probe` every 25 ms until it gives `Ok`, for at most [`WAIT`].
/// Each `Err` says what was seen instead; the last one is in the failure message, so a
/// test that times out says how far things got.
pub async fn eventually<T, E: std::fmt::Display>(
    what: &str,
    probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    eventually_within(what, WAIT, probe).await
}

/// [`eventually`] for what takes longer (or must happen sooner) by design.
pub async fn eventually_within<T, E: std::fmt::Display>(
    what: &str,
    wait: Duration,
    mut probe: impl AsyncFnMut() -> Result<T, E>,
) -> T {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let seen = match probe().await {
            Ok(done) => return done,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            panic!("never happened within {wait:?}: {what}\nlast seen: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// `Ok` when `cond` holds, else what was seen: for [`eventually`]'s yes-or-no probes.
pub fn holds(cond: bool, seen: impl std::fmt::Display) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(seen.to_string())
    }
}

/// Direct children of `pid`, from /proc.
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(child) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{child}/stat")) else {
            continue;
        };
        // Field 4 (ppid) comes after the parenthesized command name.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let ppid: u32 = after.split(' ').nth(1).unwrap().parse().unwrap();
        if ppid == pid {
            out.push(child);
        }
    }
    out
}

/// A child started in a process group of its own, which goes with it: killing a
/// WebDriver server alone would leave the browser (or app) it started running.
pub struct Group(Child);

impl Group {
    /// Spawns `cmd` as the leader of a new process group.
    pub fn spawn(cmd: &mut Command) -> Self {
        Self(cmd.process_group(0).spawn().unwrap())
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        if let Some(pid) = self.0.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// Every process below `pid`: children, their children, and so on.
pub fn descendants_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for child in children_of(p) {
            out.push(child);
            next.push(child);
        }
    }
    out
}

/// A process's name (`/proc/<pid>/comm`; empty once it is gone).
pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

/// The tray app `pid`'s window: its process (`chroxy-desktop-window`) and WebKit's.
pub fn window_of(pid: u32) -> Vec<u32> {
    descendants_of(pid)
        .into_iter()
        .filter(|p| {
            let comm = comm(*p);
            comm.starts_with("WebKit") || comm.starts_with("chroxy-desktop")
        })
        .collect()
}

/// A WebSocket client speaking the protocol: v1 (text frames) unless
/// [`Client::handshake`] set up v2's encrypted channel, after which every frame is
/// sealed and opened by it.
pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    /// Every frame received so far, in order.
    pub seen: Vec<Value>,
    /// v2: both halves of the channel.
    pub sealed: Option<(chroxy::channel::Sealer, chroxy::channel::Opener)>,
}

/// Protocol v2's handshake on `ws` as `device`, with the machine that must hold
/// `server`'s key: message 1 out, message 2 back (each read within `wait`). The tests'
/// [`Client`] and the bench's phone both start their channel here.
pub async fn handshake_on(
    ws: &mut WebSocketStream<MaybeTlsStream<TcpStream>>,
    device: &chroxy::channel::KeyPair,
    server: &[u8; 32],
    wait: Duration,
) -> Result<(chroxy::channel::Sealer, chroxy::channel::Opener), HandshakeFailed> {
    let (hello, initiating) =
        chroxy::channel::initiate(device, server).map_err(HandshakeFailed::Refused)?;
    ws.send(Message::binary(hello)).await.unwrap();
    let reply = loop {
        match tokio::time::timeout(wait, ws.next()).await {
            Ok(Some(Ok(Message::Binary(b)))) => break b,
            Ok(Some(Ok(Message::Ping(_) | Message::Pong(_)))) => continue,
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Err(HandshakeFailed::Closed(frame.map(|f| u16::from(f.code))))
            }
            other => panic!("no handshake reply: {other:?}"),
        }
    };
    initiating.finish(&reply).map_err(HandshakeFailed::Refused)
}

/// A frame as a v1 reader sees it: on a v2 connection (`sealed`), the binary frame
/// opened to its text. The tests' [`Client`] and the bench's phone both read through it.
pub fn unsealed<E>(
    msg: Option<Result<Message, E>>,
    sealed: &mut Option<(chroxy::channel::Sealer, chroxy::channel::Opener)>,
) -> Result<Option<Result<Message, E>>, chroxy::channel::ChannelError> {
    Ok(match (msg, sealed) {
        (Some(Ok(Message::Binary(b))), Some((_, opener))) => {
            Some(Ok(Message::text(opener.open(&b)?)))
        }
        (msg, _) => msg,
    })
}

/// Why [`Client::handshake`] did not set up the channel.
#[derive(Debug)]
pub enum HandshakeFailed {
    /// The server closed, with this code.
    Closed(Option<u16>),
    /// Its answer did not verify: not the machine whose key was pinned.
    Refused(chroxy::channel::ChannelError),
}

#[derive(Debug)]
pub enum Next {
    Msg(Value),
    Closed(Option<u16>),
}

impl Client {
    pub async fn connect(port: u16) -> Self {
        Self::try_connect(port).await.unwrap()
    }

    /// [`Client::connect`], saying why it could not.
    pub async fn try_connect(port: u16) -> Result<Self, tokio_tungstenite::tungstenite::Error> {
        let (ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws")).await?;
        Ok(Self {
            ws,
            seen: Vec::new(),
            sealed: None,
        })
    }

    /// Protocol v2's handshake as `device`, with the server that must hold `server`'s
    /// key; what the phone does before its sealed `auth`.
    pub async fn handshake(
        &mut self,
        device: &chroxy::channel::KeyPair,
        server: &[u8; 32],
    ) -> Result<(), HandshakeFailed> {
        self.sealed = Some(handshake_on(&mut self.ws, device, server, WAIT).await?);
        Ok(())
    }

    /// Protocol v2: the handshake, then the sealed `auth` (with `code` while pairing);
    /// the server's answer.
    pub async fn auth_v2(
        &mut self,
        device: &chroxy::channel::KeyPair,
        server: &[u8; 32],
        code: Option<&str>,
    ) -> Value {
        self.handshake(device, server).await.unwrap();
        let mut auth = json!({"type": "auth", "protocolVersion": 2,
            "deviceInfo": {"deviceName": "v2 phone", "deviceType": "phone", "platform": "test"}});
        if let Some(code) = code {
            auth["pairingCode"] = json!(code);
        }
        self.send(auth).await;
        self.recv().await
    }

    pub async fn send(&mut self, v: Value) {
        let frame = match &mut self.sealed {
            Some((sealer, _)) => Message::binary(sealer.seal(&v.to_string()).unwrap()),
            None => Message::text(v.to_string()),
        };
        self.ws.send(frame).await.unwrap();
    }

    pub async fn send_raw(&mut self, m: Message) {
        self.ws.send(m).await.unwrap();
    }

    /// The next text frame or the close, within WAIT.
    pub async fn next(&mut self) -> Next {
        // One deadline for the whole call: control frames (pings) must not extend it.
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "no frame within {WAIT:?}; seen so far: {:#?}",
                        tail(&self.seen)
                    )
                });
            let m = unsealed(m, &mut self.sealed).expect("a frame that opens");
            match m {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap();
                    self.seen.push(v.clone());
                    return Next::Msg(v);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    pub async fn recv(&mut self) -> Value {
        match self.next().await {
            Next::Msg(v) => v,
            Next::Closed(code) => panic!(
                "connection closed ({code:?}); seen: {:#?}",
                tail(&self.seen)
            ),
        }
    }

    /// Reads until a frame satisfies `pred`; returns it.
    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        loop {
            let v = self.recv().await;
            if pred(&v) {
                return v;
            }
        }
    }

    /// Like `until`, but a frame already received counts too (for messages whose order
    /// relative to others is not fixed).
    pub async fn seen_or_until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        self.until(pred).await
    }

    pub async fn until_type(&mut self, ty: &str) -> Value {
        self.until(|v| v["type"] == ty).await
    }

    /// Reads until the close frame; returns its code.
    pub async fn closed(&mut self) -> Option<u16> {
        loop {
            if let Next::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// Authenticates as the test home's approved phone ([`DEVICE_KEY`]).
    pub async fn auth(&mut self, token: &str) -> Value {
        self.send(json!({"type": "auth", "token": token, "deviceKey": DEVICE_KEY, "deviceInfo": {"deviceName": "test", "deviceType": "phone", "platform": "test"}}))
            .await;
        self.recv().await
    }

    /// Sends input and reads until the turn's `agent_idle`; returns the frames of the turn.
    pub async fn turn(&mut self, text: &str) -> Vec<Value> {
        let start = self.seen.len();
        self.send(json!({"type": "input", "data": text})).await;
        self.until(|v| v["type"] == "agent_busy").await;
        self.until(|v| v["type"] == "agent_idle").await;
        self.seen[start..].to_vec()
    }

    /// The active session id from the last `session_switched`.
    pub fn active_session(&self) -> String {
        self.seen
            .iter()
            .rev()
            .find(|v| v["type"] == "session_switched")
            .expect("no session_switched")["sessionId"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

/// The concatenated `stream_delta` text of `frames`.
pub fn streamed_text(frames: &[Value]) -> String {
    frames
        .iter()
        .filter(|v| v["type"] == "stream_delta")
        .map(|v| v["delta"].as_str().unwrap())
        .collect()
}

fn tail(seen: &[Value]) -> &[Value] {
    &seen[seen.len().saturating_sub(12)..]
}

pub fn close_code(c: CloseCode) -> u16 {
    u16::from(c)
}

/// A real PNG of `w`×`h` pixels in a gradient (so an image decoder has something to
/// decode and a screenshot shows it).
pub fn gradient_png(w: u32, h: u32) -> Vec<u8> {
    let mut out = Vec::new();
    let mut encoder = png::Encoder::new(&mut out, w, h);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    let pixels: Vec<u8> = (0..h)
        .flat_map(|y| (0..w).flat_map(move |x| [(x * 255 / w) as u8, (y * 255 / h) as u8, 160]))
        .collect();
    writer.write_image_data(&pixels).unwrap();
    writer.finish().unwrap();
    out
}
