//! The Claude Code CLI run by the bench alone, with nothing around it: the floor the
//! turn figures are compared with. Started as Chroxy starts it (its arguments, the
//! same scripted model), in a home and directory of its own.

use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::time::Instant;

use crate::client::STEP;

pub struct BareCli {
    child: Child,
    stdin: ChildStdin,
    lines: Lines<BufReader<ChildStdout>>,
    /// Its home and working directory; removed when it is dropped.
    _dir: tempfile::TempDir,
}

impl BareCli {
    pub fn start(claude: &Path, env: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().expect("a directory for the bare CLI");
        let mut child = tokio::process::Command::new(claude)
            .args(chroxy::agent::STREAM_JSON_ARGS)
            .args(["--permission-mode", "default"])
            .current_dir(dir.path())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", dir.path())
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("starting the bare CLI");
        let stdin = child.stdin.take().expect("its stdin");
        let lines = BufReader::new(child.stdout.take().expect("its stdout")).lines();
        Self {
            child,
            stdin,
            lines,
            _dir: dir,
        }
    }

    /// Sends `initialize` as Chroxy does and waits for the answer: from then on the CLI
    /// is up, as a session's `claude_ready` tells a phone.
    pub async fn initialize(&mut self) {
        let request = json!({"type": "control_request", "request_id": "bench-init",
                             "request": {"subtype": "initialize", "hooks": null}});
        self.write(&request).await;
        self.until(
            |v| v["type"] == "control_response",
            "its answer to initialize",
        )
        .await;
    }

    /// One turn: seconds from its stdin line written to its `result` line read.
    pub async fn turn(&mut self, text: &str) -> f64 {
        let line = json!({"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]}});
        let sent = Instant::now();
        self.write(&line).await;
        let result = self.until(|v| v["type"] == "result", "its result").await;
        assert_eq!(
            result["is_error"], false,
            "the bare CLI's turn failed: {result}"
        );
        sent.elapsed().as_secs_f64()
    }

    /// Closes its stdin and waits for it to exit.
    pub async fn stop(self) {
        let Self {
            mut child, stdin, ..
        } = self;
        drop(stdin);
        let _ = child.wait().await;
    }

    async fn write(&mut self, line: &Value) {
        self.stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("writing to the bare CLI");
    }

    async fn until(&mut self, pred: impl Fn(&Value) -> bool, what: &str) -> Value {
        loop {
            let line = tokio::time::timeout(STEP, self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("the bare CLI gave no {what} in time"))
                .expect("reading the bare CLI")
                .unwrap_or_else(|| panic!("the bare CLI exited before {what}"));
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if pred(&v) {
                return v;
            }
        }
    }
}
