//! The real Claude Code CLI against the demo model, started exactly as the agent driver
//! starts it. Every agent path the product relies on (streaming, tool permission allow and
//! deny, AskUserQuestion, interrupt, API errors, resume, model changes) runs here with only
//! the model scripted.
//!
//! The CLI is found through `CHROXY_TEST_CLAUDE`, else at
//! `target/tools/claude-code/node_modules/.bin/claude`; a missing CLI fails the tests.
//! Each test gets its own demo server (port 0) and a temporary HOME, TMPDIR and working
//! directory, so tests run in parallel and never touch the real `~/.claude`.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use chroxy::demo::{self, DemoHandle, ASK_QUESTION};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

/// Deadline for any one expected line or request. Generous: tests run in parallel on small
/// CI machines and each CLI takes ~0.6 s of CPU to start.
const WAIT: Duration = Duration::from_secs(60);

/// The pinned CLI, or a failure that says how to get it.
fn claude_bin() -> PathBuf {
    if let Some(path) = std::env::var_os("CHROXY_TEST_CLAUDE") {
        let path = PathBuf::from(path);
        assert!(
            path.exists(),
            "CHROXY_TEST_CLAUDE={} does not exist",
            path.display()
        );
        return path;
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target/tools/claude-code/node_modules/.bin/claude");
    assert!(
        path.exists(),
        "the Claude Code CLI is missing at {}: run the install step \
         (`npm install --prefix target/tools/claude-code @anthropic-ai/claude-code@2.1.197`) \
         or set CHROXY_TEST_CLAUDE",
        path.display()
    );
    path
}

/// One demo server plus the directories a CLI needs; stops the server when dropped.
struct Scene {
    demo: DemoHandle,
    stop: CancellationToken,
    root: tempfile::TempDir,
}

impl Scene {
    async fn start() -> Scene {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind loopback");
        let stop = CancellationToken::new();
        let (demo, _task) = demo::spawn(listener, stop.clone()).expect("demo server starts");
        let root = tempfile::tempdir().expect("temp dir");
        for dir in ["home", "work", "tmp"] {
            std::fs::create_dir(root.path().join(dir)).expect("create scene dir");
        }
        Scene { demo, stop, root }
    }

    /// The CLI's working directory, as the CLI reports it.
    fn work(&self) -> PathBuf {
        std::fs::canonicalize(self.root.path().join("work")).expect("work dir exists")
    }

    /// Starts the CLI the way the agent driver does, plus `extra` flags.
    fn cli(&self, extra: &[&str]) -> Cli {
        let root = self.root.path();
        let stderr_path = root.join(format!("stderr-{}.log", uuid::Uuid::new_v4()));
        let stderr = std::fs::File::create(&stderr_path).expect("stderr log");
        let mut cmd = Command::new(claude_bin());
        cmd.args(chroxy::agent::STREAM_JSON_ARGS)
            .args(extra)
            .current_dir(self.work())
            // Only what the CLI needs: nothing from the developer's shell may leak in
            // (a real ANTHROPIC_* key or base URL, a CLAUDE_CONFIG_DIR ...).
            .env_clear()
            .env(
                "PATH",
                std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
            )
            .env("HOME", root.join("home"))
            .env("TMPDIR", root.join("tmp"))
            .envs(self.demo.cli_env())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("spawn the Claude Code CLI");
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        Cli {
            child,
            stdin: Some(stdin),
            stdout,
            seen: Vec::new(),
            stderr_path,
            next_id: 0,
        }
    }
}

impl Drop for Scene {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A running CLI: write JSON lines, wait for lines matching a predicate.
struct Cli {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Lines<BufReader<ChildStdout>>,
    /// Every stdout line so far, parsed, for assertions and failure messages.
    seen: Vec<Value>,
    stderr_path: PathBuf,
    next_id: u32,
}

impl Cli {
    async fn send(&mut self, msg: Value) {
        let stdin = self.stdin.as_mut().expect("stdin still open");
        let line = format!("{msg}\n");
        stdin
            .write_all(line.as_bytes())
            .await
            .expect("write to CLI stdin");
        stdin.flush().await.expect("flush CLI stdin");
    }

    /// Sends a control request and waits for its control_response.
    async fn control(&mut self, request: Value) -> Value {
        self.next_id += 1;
        let id = format!("req_{}", self.next_id);
        self.send(json!({"type": "control_request", "request_id": id, "request": request}))
            .await;
        self.wait_for(&format!("control_response to {id}"), |v| {
            v["type"] == "control_response" && v["response"]["request_id"] == id.as_str()
        })
        .await
    }

    async fn initialize(&mut self) {
        let resp = self
            .control(json!({"subtype": "initialize", "hooks": null}))
            .await;
        assert_eq!(resp["response"]["subtype"], "success", "{resp}");
    }

    async fn say(&mut self, text: &str) {
        self.send(json!({"type": "user", "message": {"role": "user",
            "content": [{"type": "text", "text": text}]}}))
            .await;
    }

    /// Reads stdout until a line matches `pred`, failing after [`WAIT`].
    async fn wait_for(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let line = match tokio::time::timeout_at(deadline, self.stdout.next_line()).await {
                Err(_elapsed) => panic!("{what}: not seen within {WAIT:?}\n{}", self.transcript()),
                Ok(Err(err)) => panic!("{what}: reading CLI stdout failed: {err}"),
                Ok(Ok(None)) => panic!(
                    "{what}: the CLI closed stdout ({:?})\n{}",
                    self.child.try_wait(),
                    self.transcript()
                ),
                Ok(Ok(Some(line))) => line,
            };
            let value: Value = serde_json::from_str(&line)
                .unwrap_or_else(|err| panic!("CLI printed a non-JSON line ({err}): {line}"));
            self.seen.push(value.clone());
            if pred(&value) {
                return value;
            }
        }
    }

    async fn result(&mut self) -> Value {
        self.wait_for("result", |v| v["type"] == "result").await
    }

    async fn permission_request(&mut self, tool: &str) -> Value {
        self.wait_for(&format!("can_use_tool for {tool}"), |v| {
            v["type"] == "control_request"
                && v["request"]["subtype"] == "can_use_tool"
                && v["request"]["tool_name"] == tool
        })
        .await
    }

    /// Answers a `can_use_tool` request.
    async fn answer(&mut self, request: &Value, response: Value) {
        self.send(json!({"type": "control_response", "response": {
            "subtype": "success", "request_id": request["request_id"], "response": response}}))
            .await;
    }

    /// Closes stdin (how the host ends a session) and waits for the exit.
    async fn finish(mut self) -> ExitStatus {
        drop(self.stdin.take());
        tokio::time::timeout(WAIT, self.child.wait())
            .await
            .unwrap_or_else(|_| {
                panic!("CLI did not exit after stdin closed\n{}", self.transcript())
            })
            .expect("wait for CLI")
    }

    /// The `text_delta` pieces streamed since the CLI started.
    fn text_deltas(&self) -> Vec<String> {
        self.seen
            .iter()
            .filter(|v| v["type"] == "stream_event" && v["event"]["delta"]["type"] == "text_delta")
            .filter_map(|v| v["event"]["delta"]["text"].as_str().map(str::to_owned))
            .collect()
    }

    /// The last stdout lines and the stderr log, for failure messages.
    fn transcript(&self) -> String {
        let mut out = String::from("--- last stdout lines:\n");
        for v in self.seen.iter().rev().take(25).rev() {
            let line = v.to_string();
            out.push_str(&line.chars().take(400).collect::<String>());
            out.push('\n');
        }
        let stderr = std::fs::read_to_string(&self.stderr_path).unwrap_or_default();
        out.push_str("--- stderr:\n");
        out.push_str(&stderr.chars().take(4000).collect::<String>());
        out
    }
}

/// Every text in a message (string content or text / tool_result blocks).
fn texts(message: &Value) -> Vec<String> {
    match &message["content"] {
        Value::String(s) => vec![s.clone()],
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b["type"].as_str() {
                Some("text") => b["text"].as_str().map(str::to_owned),
                Some("tool_result") => Some(match &b["content"] {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// The last `role: user` message of a recorded request body.
fn last_user(messages: &[Value]) -> &Value {
    messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .expect("request has a user message")
}

// ---------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn reply_streams_word_by_word_and_becomes_the_result() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&[]);
    cli.initialize().await;

    cli.say("REPLY Hello from the scripted model.").await;
    let init = cli
        .wait_for("system/init", |v| v["subtype"] == "init")
        .await;
    assert_eq!(init["cwd"], scene.work().display().to_string());
    let result = cli.result().await;
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["is_error"], false);
    assert_eq!(result["result"], "Hello from the scripted model.");
    let deltas = cli.text_deltas();
    assert!(deltas.len() >= 4, "streamed in pieces: {deltas:?}");
    assert_eq!(deltas.concat(), "Hello from the scripted model.");

    // Anything that is not a directive gets the demo's own answer.
    cli.say("what can you do?").await;
    let result = cli.result().await;
    let text = result["result"].as_str().expect("result text");
    assert!(text.contains("Chroxy's demo model"), "{text}");
    assert!(text.contains("what can you do?"), "{text}");

    assert!(cli.finish().await.success());
    assert_eq!(scene.demo.turns_seen(), 2);
}

#[tokio::test]
async fn allowed_write_and_bash_run_in_the_working_directory() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&[]);
    cli.initialize().await;

    cli.say("PLEASE_WRITE notes/hello.txt hello from the phone")
        .await;
    let req = cli.permission_request("Write").await;
    let input = req["request"]["input"].clone();
    let target = scene.work().join("notes/hello.txt");
    assert_eq!(input["file_path"], target.display().to_string());
    let json_pieces = cli
        .seen
        .iter()
        .filter(|v| v["event"]["delta"]["type"] == "input_json_delta")
        .count();
    assert!(
        json_pieces >= 2,
        "tool input streamed in pieces ({json_pieces})"
    );
    cli.answer(&req, json!({"behavior": "allow", "updatedInput": input}))
        .await;
    let result = cli.result().await;
    assert_eq!(result["is_error"], false, "{result}");
    let text = result["result"].as_str().expect("result text");
    assert!(
        text.starts_with("Tool result: File created successfully"),
        "{text}"
    );
    assert_eq!(
        std::fs::read_to_string(&target).expect("file written"),
        "hello from the phone"
    );

    cli.say("PLEASE_BASH touch made.txt").await;
    let req = cli.permission_request("Bash").await;
    assert_eq!(req["request"]["input"]["command"], "touch made.txt");
    let input = req["request"]["input"].clone();
    cli.answer(&req, json!({"behavior": "allow", "updatedInput": input}))
        .await;
    let result = cli.result().await;
    assert_eq!(result["is_error"], false, "{result}");
    assert!(scene.work().join("made.txt").exists());
    assert!(cli.finish().await.success());
}

#[tokio::test]
async fn denied_write_sends_the_denial_to_the_model() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&[]);
    cli.initialize().await;

    cli.say("PLEASE_WRITE secret.txt nope").await;
    let req = cli.permission_request("Write").await;
    cli.answer(
        &req,
        json!({"behavior": "deny", "message": "Denied from the phone"}),
    )
    .await;
    let result = cli.result().await;
    assert_eq!(result["result"], "Tool error: Denied from the phone");
    assert_eq!(result["permission_denials"][0]["tool_name"], "Write");
    assert!(!scene.work().join("secret.txt").exists());

    let second = scene
        .demo
        .wait_for_request(2, WAIT)
        .await
        .expect("follow-up request");
    let last = last_user(second.messages());
    let result_block = last["content"]
        .as_array()
        .and_then(|blocks| blocks.iter().find(|b| b["type"] == "tool_result"))
        .unwrap_or_else(|| panic!("last user message carries a tool_result: {last}"));
    assert_eq!(result_block["is_error"], true);
    assert_eq!(result_block["content"], "Denied from the phone");
    assert!(cli.finish().await.success());
}

#[tokio::test]
async fn ask_user_question_arrives_as_can_use_tool() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&[]);
    cli.initialize().await;

    cli.say("PLEASE_ASK").await;
    let req = cli.permission_request("AskUserQuestion").await;
    let mut input = req["request"]["input"].clone();
    assert_eq!(input["questions"][0]["question"], ASK_QUESTION);
    assert_eq!(input["questions"][0]["options"][1]["label"], "Blue");
    input["answers"] = json!({ ASK_QUESTION: "Blue" });
    cli.answer(&req, json!({"behavior": "allow", "updatedInput": input}))
        .await;
    let result = cli.result().await;
    let text = result["result"].as_str().expect("result text");
    assert!(
        text.starts_with("Tool result:") && text.contains("\"Blue\""),
        "{text}"
    );
    assert!(cli.finish().await.success());
}

#[tokio::test]
async fn interrupt_ends_a_slow_turn_and_the_next_turn_works() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&[]);
    cli.initialize().await;

    // 40 words, 500 ms apart: 20 s if the interrupt did nothing.
    cli.say("SLOW 500").await;
    cli.wait_for("first slow delta", |v| {
        v["event"]["delta"]["type"] == "text_delta"
    })
    .await;
    let started = Instant::now();
    let resp = cli.control(json!({"subtype": "interrupt"})).await;
    assert_eq!(resp["response"]["subtype"], "success", "{resp}");
    let result = cli.result().await;
    assert_eq!(result["subtype"], "error_during_execution", "{result}");
    assert_eq!(result["is_error"], true);
    // The CLI hangs up on the stream; the server notices and stops sending.
    scene
        .demo
        .wait_streams_closed(WAIT)
        .await
        .expect("slow stream closed after the interrupt");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "interrupt took {:?}",
        started.elapsed()
    );

    cli.say("REPLY still here").await;
    let result = cli.result().await;
    assert_eq!(result["subtype"], "success", "{result}");
    assert_eq!(result["result"], "still here");
    assert!(cli.finish().await.success());
}

#[tokio::test]
async fn api_error_ends_the_turn_with_an_error_result_quickly() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&[]);
    cli.initialize().await;

    let started = Instant::now();
    cli.say("API_ERROR 500").await;
    let result = cli.result().await;
    assert_eq!(result["is_error"], true, "{result}");
    assert_eq!(result["api_error_status"], 500, "{result}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "no retry back-off expected, took {:?}",
        started.elapsed()
    );
    assert_eq!(
        scene.demo.turns_seen(),
        1,
        "x-should-retry: false means one attempt"
    );

    // 529 is retried whatever the header says; for Claude models the CLI stops after 3.
    cli.say("API_ERROR 529").await;
    let result = cli.result().await;
    assert_eq!(result["is_error"], true, "{result}");
    let text = result["result"].as_str().expect("result text");
    assert!(text.contains("529") || text.contains("verloaded"), "{text}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "took {:?}",
        started.elapsed()
    );

    // The session survives API errors.
    cli.say("REPLY recovered").await;
    let result = cli.result().await;
    assert_eq!(result["result"], "recovered", "{result}");
    cli.finish().await;
}

#[tokio::test]
async fn resume_in_a_fresh_process_sends_the_earlier_conversation() {
    let scene = Scene::start().await;
    let mut first = scene.cli(&[]);
    first.initialize().await;
    first.say("REPLY first answer").await;
    let result = first.result().await;
    let session_id = result["session_id"]
        .as_str()
        .expect("session id")
        .to_owned();
    assert!(first.finish().await.success());

    let mut second = scene.cli(&["--resume", &session_id]);
    second.initialize().await;
    second.say("REPLY second answer").await;
    let result = second.result().await;
    assert_eq!(result["result"], "second answer", "{result}");
    assert_eq!(result["session_id"], session_id.as_str());

    let request = scene
        .demo
        .wait_for_request(2, WAIT)
        .await
        .expect("resumed request");
    let messages = request.messages();
    let said = |role: &str, text: &str| {
        messages
            .iter()
            .any(|m| m["role"] == role && texts(m).iter().any(|t| t == text))
    };
    assert!(said("user", "REPLY first answer"), "earlier prompt resent");
    assert!(said("assistant", "first answer"), "earlier answer resent");
    assert!(said("user", "REPLY second answer"), "new prompt sent");
    assert!(second.finish().await.success());
}

#[tokio::test]
async fn model_flag_and_set_model_reach_the_request() {
    let scene = Scene::start().await;
    let mut cli = scene.cli(&["--model", "claude-sonnet-4-5"]);
    cli.initialize().await;

    cli.say("REPLY one").await;
    cli.result().await;
    let first = scene
        .demo
        .wait_for_request(1, WAIT)
        .await
        .expect("first request");
    assert_eq!(first.model(), Some("claude-sonnet-4-5"));

    let resp = cli
        .control(json!({"subtype": "set_model", "model": "claude-haiku-4-5"}))
        .await;
    assert_eq!(resp["response"]["subtype"], "success", "{resp}");
    cli.say("REPLY two").await;
    let result = cli.result().await;
    assert_eq!(result["result"], "two");
    let second = scene
        .demo
        .wait_for_request(2, WAIT)
        .await
        .expect("second request");
    assert_eq!(second.model(), Some("claude-haiku-4-5"));
    assert!(cli.finish().await.success());
}
