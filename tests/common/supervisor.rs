//! A real `chroxy start` process on a temporary CHROXY_HOME, its status API, and the
//! release store as the CLI sees it. Ports are picked by the OS (`--port 0`) and read
//! from the supervisor's instance file.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

pub use super::chroxy_bin;
use super::{chroxy_command_limited, eventually, Client, Home, WorkerOpts, TOKEN, WAIT};

/// A running supervisor: a `chroxy start` of the test's, or (attached) the one inside
/// the tray app.
pub struct Sup {
    child: Option<Child>,
    pid: u32,
    pub public: u16,
    pub status: u16,
    pub log: PathBuf,
    home: PathBuf,
}

/// The misbehaving stand-in release built by the test suite.
pub fn bad_worker_bin() -> &'static str {
    super::package_bin("bad-worker", option_env!("CARGO_BIN_EXE_bad-worker"))
}

/// What the real `cloudflared` prints, on cue.
pub fn fake_cloudflared_bin() -> &'static str {
    super::package_bin(
        "fake-cloudflared",
        option_env!("CARGO_BIN_EXE_fake-cloudflared"),
    )
}

/// Settings under which a release that keeps crashing is rolled back (and then fails)
/// within a second: two crashes allowed, 50–100 ms apart.
pub const CRASH_FAST: &str = "[supervisor]\nbackoff_floor_ms = 50\nbackoff_cap_ms = 100\ncrash_budget = 2\ncrash_window_ms = 60000\n";

/// Two releases of `bad-worker` added to `home`'s store beside release 0 (the installed
/// `chroxy`): the older known-good, the newer current. With `CHROXY_BAD_MODE=crash`, a
/// supervisor rolls back from the one to the other, then fails. Returns their ids.
pub fn bad_releases(home: &Home) -> (String, String) {
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    releases.ensure_installed(Path::new(chroxy_bin())).unwrap();
    let bad = Path::new(bad_worker_bin());
    let good = releases.add(bad).unwrap();
    releases.set_known_good(&good.id).unwrap();
    let newest = releases.add(bad).unwrap();
    releases.set_current(&newest.id).unwrap();
    (good.id.to_string(), newest.id.to_string())
}

/// `chroxy <args>` on `home`, as a user would run it; returns (status, stdout, stderr).
pub async fn cli(home: &Home, args: &[&str]) -> (ExitStatus, String, String) {
    cli_env(home, args, &[]).await
}

/// `chroxy <args>` on `home` with the environment a user's shell gives it.
fn cli_command(home: &Home, args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(chroxy_bin());
    cmd.args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHROXY_HOME", home.chroxy())
        .env("HOME", home.user_home())
        .env("CHROXY_TOKEN", TOKEN)
        .envs(env.iter().copied());
    cmd
}

/// [`cli`] with more environment.
pub async fn cli_env(
    home: &Home,
    args: &[&str],
    env: &[(&str, &str)],
) -> (ExitStatus, String, String) {
    let out = cli_command(home, args, env).output().await.unwrap();
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// [`cli`] typed at a terminal: its standard input and output are a pseudo-terminal of
/// the test's, as when a person at the desk runs it (`chroxy deploy` is then `desk`).
pub async fn cli_at_terminal(home: &Home, args: &[&str]) -> (ExitStatus, String, String) {
    let pty = nix::pty::openpty(None, None).unwrap();
    let mut cmd = cli_command(home, args, &[]);
    cmd.stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave))
        .stderr(Stdio::piped());
    let child = cmd.spawn().unwrap();
    // Our copies of the terminal's other end go with `cmd`, so reading ends with the child.
    drop(cmd);
    let printed = tokio::task::spawn_blocking(move || {
        let mut out = Vec::new();
        // The terminal reads as an error (EIO) once the child has closed it; what came
        // before is in `out`.
        let _ = std::io::Read::read_to_end(&mut std::fs::File::from(pty.master), &mut out);
        out
    });
    let out = child.wait_with_output().await.unwrap();
    let printed = printed.await.unwrap();
    (
        out.status,
        String::from_utf8_lossy(&printed).replace("\r\n", "\n"),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl Sup {
    /// `chroxy start --port 0 --status-port 0` with the agent of `opts` and its env.
    pub async fn start(home: &Home, opts: WorkerOpts) -> Self {
        Self::start_args(home, opts, &[]).await
    }

    pub async fn start_args(home: &Home, opts: WorkerOpts, extra: &[&str]) -> Self {
        Self::start_limited(home, opts, extra, None).await
    }

    /// [`Sup::start_args`] under a file-descriptor limit (`ulimit -n`), when given.
    pub async fn start_limited(
        home: &Home,
        opts: WorkerOpts,
        extra: &[&str],
        nofile: Option<u64>,
    ) -> Self {
        let (mut cmd, log) = chroxy_command_limited(home, &opts, "supervisor", nofile);
        cmd.arg("start");
        // Ports picked by the OS unless the test names one (to come back on the same).
        if !extra.contains(&"--port") {
            cmd.args(["--port", "0"]);
        }
        cmd.args(["--status-port", "0", "--cwd"])
            .arg(home.project())
            .args(extra)
            .stdout(Stdio::null());
        if !extra.contains(&"--tunnel") {
            cmd.args(["--tunnel", "none"]);
        }
        if !opts.env.iter().any(|(k, _)| k == "CHROXY_LOG") {
            cmd.env("CHROXY_LOG", "info,chroxy=debug");
        }
        let mut child = cmd.spawn().expect("starting chroxy start");
        let paths = chroxy::store::Paths::under(home.chroxy());
        let (public, status) = eventually("chroxy start writes its ports", async || {
            if let Some(ports) = ports_of(&paths, child.id().unwrap_or_default()) {
                return Ok(ports);
            }
            if let Ok(Some(exit)) = child.try_wait() {
                panic!(
                    "chroxy start exited ({exit}); log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            Err("no ports in its instance file")
        })
        .await;
        Self {
            pid: child.id().unwrap(),
            child: Some(child),
            public,
            status,
            log,
            home: home.chroxy(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The supervisor running for `home` in another process than a test's own child
    /// (the tray app): found through its instance file, as `chroxy status` finds it.
    pub async fn attach(home: &Home, log: PathBuf) -> Self {
        let paths = chroxy::store::Paths::under(home.chroxy());
        let info =
            eventually(
                "a supervisor comes up",
                async || match chroxy::supervisor::instance::running(&paths) {
                    Some(info) if info.public_port != 0 && info.status_port != 0 => Ok(info),
                    seen => Err(format!(
                        "instance {seen:?}; log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    )),
                },
            )
            .await;
        Self {
            child: None,
            pid: info.pid,
            public: info.public_port,
            status: info.status_port,
            log,
            home: home.chroxy(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The admin token the supervisor created.
    pub fn admin(&self) -> String {
        std::fs::read_to_string(self.home.join("config/admin-token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// `GET /api/status`.
    pub async fn status(&self) -> Value {
        let (code, body) = http(self.status, "GET", "/api/status", &[], "").await;
        assert_eq!(code, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Polls the status API until `pred` holds (the status has no push channel for
    /// tests; each poll is a real request a user's page would make).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, async || {
            let s = self.status().await;
            if pred(&s) {
                Ok(s)
            } else {
                Err(format!("status {s:#}\nlog:\n{}", self.log_text()))
            }
        })
        .await
    }

    /// Waits until a worker serves, and returns the status then.
    pub async fn healthy(&self) -> Value {
        self.wait_for("healthy", |s| s["state"] == "healthy").await
    }

    /// `POST /api/<action>` with the admin token (or `admin` given explicitly).
    pub async fn post(&self, action: &str, admin: Option<&str>, body: &str) -> (u16, Value) {
        let token = admin.map(str::to_owned).unwrap_or_else(|| self.admin());
        let (code, text) = http(
            self.status,
            "POST",
            &format!("/api/{action}"),
            &[("X-Chroxy-Admin", token.as_str())],
            body,
        )
        .await;
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// A phone: connected through the public port, authenticated, welcome read.
    pub async fn client(&self) -> Client {
        self.authenticated(Client::connect(self.public).await).await
    }

    /// A phone told `server_shutdown` coming back: like every client, it tries again
    /// when a connection is cut before it is set up (the sweep that told it to come
    /// back may still be closing sockets), until WAIT.
    pub async fn client_coming_back(&self) -> Client {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match Client::try_connect(self.public).await {
                Ok(c) => return self.authenticated(c).await,
                Err(err) if tokio::time::Instant::now() < deadline => {
                    eprintln!("a connection coming back was cut ({err}); trying again");
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(err) => panic!("no way back in: {err}; log:\n{}", self.log_text()),
            }
        }
    }

    async fn authenticated(&self, mut c: Client) -> Client {
        let ok = c.auth(TOKEN).await;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        c.until_type("history_replay_end").await;
        c
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid() as i32), sig).unwrap();
    }

    /// Waits (under WAIT) for the supervisor to exit.
    pub async fn exited(&mut self) -> ExitStatus {
        let child = self.child.as_mut().expect("a supervisor this test started");
        tokio::time::timeout(WAIT, child.wait())
            .await
            .unwrap_or_else(|_| panic!("supervisor did not exit; log:\n{}", self.log_text()))
            .unwrap()
    }
}

impl Drop for Sup {
    fn drop(&mut self) {
        // A test's own supervisor dies with the test (SIGKILL, `kill_on_drop`), and its
        // cloudflared, a process group of its own, would run on for ever: stop it as
        // the next start in this home would.
        if let Some(child) = self.child.as_mut() {
            let _ = child.start_kill();
            let paths = chroxy::store::Paths::under(&self.home);
            chroxy::tunnel::stop_leftover(&chroxy::tunnel::record_file(&paths));
        }
    }
}

/// The ports of the running supervisor, once `pid` (not a predecessor) has bound them.
pub fn ports_of(paths: &chroxy::store::Paths, pid: u32) -> Option<(u16, u16)> {
    let info = chroxy::supervisor::instance::running(paths)?;
    (info.pid == pid && info.public_port != 0 && info.status_port != 0)
        .then_some((info.public_port, info.status_port))
}

/// One HTTP/1.1 request on 127.0.0.1; returns status code and body.
pub async fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        req.push_str("Content-Type: application/json\r\n");
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let code = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (code, body)
}

fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = s.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        s = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// The events of a status, as (kind, message).
pub fn events(status: &Value) -> Vec<(String, String)> {
    status["events"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap_or_default().to_owned(),
                        e["message"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a process still runs (and is not a zombie).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            let state = s
                .rsplit(')')
                .next()
                .and_then(|r| r.split_whitespace().next());
            state != Some("Z")
        })
        .unwrap_or(false)
}

/// utime + stime of a process, in clock ticks.
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    // After the command: state is field 3, so utime (14) and stime (15) are at 11 and 12.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}
