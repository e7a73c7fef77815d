//! Drives one Claude Code CLI process per session (DESIGN.md "Agent").
//!
//! The CLI speaks JSON lines: we write user turns and control requests to its stdin and
//! read stream-json from its stdout. This module owns the process (its group, its
//! stdin, its exit) and turns its output into [`AgentEvent`]s tagged with a generation
//! number, so a session never mistakes a dead process's last words for the new one's.
//! Everything the CLI prints on stderr goes to the log, never to a phone.

pub(crate) mod env;
mod events;
pub mod subagents;

pub(crate) use env::is_private;
pub use env::{agent_ancestor, MARK};
pub use events::{AgentEvent, LineError, StreamParser, TurnResult};

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use std::os::fd::AsFd;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::keeper::Link;
use crate::process;
use crate::protocol::{PermissionMode, SlashCommand};

/// How to install the CLI, for every message that says it is missing.
pub const INSTALL_HINT: &str =
    "install Claude Code with `npm install -g @anthropic-ai/claude-code` (then run `claude` once to log in), or set CHROXY_CLAUDE to the path of the `claude` binary";

/// Lines longer than this are dropped: a tool result can be big, but a runaway child
/// must not make us buffer without bound.
const MAX_LINE_BYTES: usize = 32 * 1024 * 1024;
/// After stdin closes the CLI exits by itself; only then do signals follow.
const EXIT_AFTER_EOF: Duration = Duration::from_secs(3);
/// SIGTERM → SIGKILL.
const TERM_GRACE: Duration = Duration::from_secs(3);

/// Why an agent could not be started or reached.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// No `claude` binary where we looked.
    #[error("Claude Code (`claude`) was not found {searched}; {INSTALL_HINT}")]
    NotFound {
        /// Where we looked, for the user ("on PATH", "at /x/claude").
        searched: String,
    },
    /// The binary exists but would not start.
    #[error("could not start Claude Code at {program}: {source}; {INSTALL_HINT}")]
    Spawn {
        /// The binary.
        program: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The process has exited; its input is gone.
    #[error("Claude Code has exited")]
    Gone,
}

/// Finds the CLI: an explicit path (from `CHROXY_CLAUDE` or the config) wins, else `PATH`.
pub fn find_claude(configured: Option<&Path>) -> Result<PathBuf, AgentError> {
    match configured {
        Some(path) if path.is_file() => Ok(path.to_path_buf()),
        Some(path) => Err(AgentError::NotFound {
            searched: format!("at {}", path.display()),
        }),
        None => which::which("claude").map_err(|_| AgentError::NotFound {
            searched: "on PATH".into(),
        }),
    }
}

/// At most this many slash commands are passed on, and so much of each description.
const MAX_COMMANDS: usize = 200;
const MAX_DESCRIPTION: usize = 200;

/// The slash commands in the CLI's answer to `initialize` (`commands`: name,
/// description, argumentHint). What is not a plain name is left out: the list goes to
/// every phone, which shows it as text, and a name is what the person sends back.
pub fn slash_commands(initialized: &Value) -> Vec<SlashCommand> {
    let text = |v: &Value, key: &str, limit: usize| -> String {
        let s = v[key].as_str().unwrap_or_default();
        match s.char_indices().nth(limit) {
            Some((cut, _)) => format!("{}…", &s[..cut]),
            None => s.to_owned(),
        }
    };
    let plain = |name: &str| {
        (1..=64).contains(&name.len())
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_:.".contains(c))
    };
    initialized["commands"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["name"].as_str().is_some_and(plain))
        .take(MAX_COMMANDS)
        .map(|c| SlashCommand {
            name: text(c, "name", 64),
            description: text(c, "description", MAX_DESCRIPTION),
            argument_hint: text(c, "argumentHint", MAX_DESCRIPTION),
        })
        .collect()
}

/// `provider_list`'s one provider: Claude Code's CLI, and what Chroxy's clients may
/// offer with it (no terminal view, no thinking-level setting here).
pub fn providers() -> Value {
    serde_json::json!([{
        "name": "claude-cli",
        "capabilities": {
            "permissions": true,
            "modelSwitch": true,
            "permissionModeSwitch": true,
            "planMode": true,
            "resume": true,
            "streaming": true,
            "sessionRules": true,
            "terminal": false,
            "thinkingLevel": false,
        },
    }])
}

/// The CLI's name for a permission mode.
pub fn cli_mode(mode: PermissionMode) -> &'static str {
    match mode {
        PermissionMode::Approve => "default",
        PermissionMode::AcceptEdits => "acceptEdits",
        PermissionMode::Auto => "bypassPermissions",
        PermissionMode::Plan => "plan",
    }
}

/// How Claude Code is driven: JSON lines both ways, partial messages streamed,
/// permission prompts asked over stdio (DESIGN.md "Agent").
pub const STREAM_JSON_ARGS: &[&str] = &[
    "-p",
    "--input-format",
    "stream-json",
    "--output-format",
    "stream-json",
    "--verbose",
    "--include-partial-messages",
    "--permission-prompt-tool",
    "stdio",
];

/// What to start.
#[derive(Debug, Clone)]
pub struct AgentSpec {
    /// The `claude` binary.
    pub program: PathBuf,
    /// The session's working directory.
    pub cwd: PathBuf,
    /// `--model`, when the session chose one.
    pub model: Option<String>,
    /// `--permission-mode`.
    pub mode: PermissionMode,
    /// `--resume`: the agent session to continue.
    pub resume: Option<String>,
    /// Launch so that a phone may later switch to `auto` (the CLI refuses the switch
    /// otherwise, and refuses this flag for root unless `IS_SANDBOX=1`): see
    /// [`bypass_allowed`].
    pub allow_bypass: bool,
}

/// Whether the CLI will accept `--allow-dangerously-skip-permissions`: always for a
/// normal user; for root only inside a declared sandbox, which Claude Code recognises
/// by `IS_SANDBOX=1` and by no other value (with any other it refuses to start at all,
/// so every turn would fail).
pub fn bypass_allowed(is_root: bool, is_sandbox: Option<&std::ffi::OsStr>) -> bool {
    !is_root || is_sandbox.is_some_and(|v| v == "1")
}

impl AgentSpec {
    /// The command line (DESIGN.md "Agent").
    pub fn args(&self) -> Vec<String> {
        let mut args: Vec<String> = STREAM_JSON_ARGS.iter().map(|a| (*a).to_owned()).collect();
        args.extend([
            "--permission-mode".to_owned(),
            cli_mode(self.mode).to_owned(),
        ]);
        if self.allow_bypass {
            args.push("--allow-dangerously-skip-permissions".to_owned());
        }
        if let Some(model) = &self.model {
            args.extend(["--model".to_owned(), model.clone()]);
        }
        if let Some(id) = &self.resume {
            args.extend(["--resume".to_owned(), id.clone()]);
        }
        args
    }
}

/// Additions to the environment the agent inherits from the worker. Whatever is added,
/// an agent never gets a `CHROXY_*` variable or `TUNNEL_TOKEN`, and always gets
/// [`MARK`].
#[derive(Debug, Clone, Default)]
pub struct AgentEnv {
    /// Variables to set (e.g. the demo model's address).
    pub set: Vec<(String, String)>,
}

/// What an agent process reports to its session.
#[derive(Debug)]
pub enum AgentOutput {
    /// Parsed stdout.
    Event(AgentEvent),
    /// The process is gone; no more events follow from this generation.
    Exited {
        /// "exit status 1", "killed by signal 9", …
        status: String,
    },
}

/// A running CLI process. Dropping it stops the process (stdin closed, then signals).
pub struct Agent {
    generation: u64,
    input: mpsc::Sender<String>,
    stop: CancellationToken,
    task: Option<JoinHandle<()>>,
    pid: Option<u32>,
    next_request: u64,
    /// The supervisor's keeper holds its pipes too (a supervised worker's CLI).
    kept: Option<(Link, String)>,
}

/// A supervised worker's keeper, and the session a CLI is started for: the CLI's pipes
/// are handed to the supervisor so that it can outlive this worker ([`crate::keeper`]).
#[derive(Debug, Clone, Copy)]
pub struct Keep<'a> {
    /// The keeper channel.
    pub link: &'a Link,
    /// Chroxy's session id.
    pub session: &'a str,
}

/// The process behind an [`Agent`]: this worker's child, or a CLI adopted from a lost
/// worker, which is nobody's child here: its end is seen as its stdout closing.
enum Proc {
    Child(tokio::process::Child),
    Adopted {
        pid: u32,
        start_ticks: Option<u64>,
        /// Cancelled when its stdout closes.
        eof: CancellationToken,
    },
}

impl Proc {
    async fn wait(&mut self) -> String {
        match self {
            Proc::Child(child) => describe(child.wait().await),
            Proc::Adopted { eof, .. } => {
                eof.cancelled().await;
                "exited (its output closed)".into()
            }
        }
    }

    /// SIGTERM, then SIGKILL, to its process group.
    async fn stop(&mut self) -> String {
        match self {
            Proc::Child(child) => describe(process::stop_gracefully(child, TERM_GRACE).await),
            Proc::Adopted {
                pid, start_ticks, ..
            } => {
                let (pid, ticks) = (*pid, *start_ticks);
                // Not our child: a pid that now names another process is left alone.
                let alive = move |p: u32| {
                    process::stat_of(p)
                        .is_some_and(|s| s.state != 'Z' && ticks.is_none_or(|t| t == s.start_ticks))
                };
                let stop = move || {
                    process::stop_left_behind(&[pid], process::Reach::Group, TERM_GRACE, alive)
                };
                let _ = tokio::task::spawn_blocking(stop).await;
                "stopped".into()
            }
        }
    }
}

fn describe(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(s) => process::describe(&s),
        Err(e) => format!("unknown ({e})"),
    }
}

impl Agent {
    /// Starts the CLI. Output arrives on `out` as `(generation, AgentOutput)`.
    pub fn spawn(
        spec: &AgentSpec,
        generation: u64,
        env: &AgentEnv,
        out: mpsc::Sender<(u64, AgentOutput)>,
        keep: Option<Keep<'_>>,
    ) -> Result<Self, AgentError> {
        let mut cmd = Command::new(&spec.program);
        cmd.args(spec.args())
            .current_dir(&spec.cwd)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        env::confine(&mut cmd, env);
        // Its own mark under this worker's: the supervisor can spare it (and its tools)
        // when this worker dies, and kill it by it when nobody adopts it.
        let mark = keep
            .as_ref()
            .map(|k| k.link.mark_for(k.session, generation));
        if let Some(mark) = &mark {
            cmd.env(process::WORKER_MARK, mark);
        }
        process::own(&mut cmd);
        let mut child = cmd.spawn().map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => AgentError::NotFound {
                searched: format!("at {}", spec.program.display()),
            },
            _ => AgentError::Spawn {
                program: spec.program.clone(),
                source,
            },
        })?;
        let pid = child.id();
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            let _ = child.start_kill();
            return Err(AgentError::Spawn {
                program: spec.program.clone(),
                source: std::io::Error::other("its pipes were not set up"),
            });
        };
        let kept = match (keep, mark, pid) {
            (Some(k), Some(mark), Some(pid)) => {
                let agent = crate::keeper::AgentId {
                    mark: mark.clone(),
                    session: k.session.to_owned(),
                    pid,
                    start_ticks: process::stat_of(pid).map(|s| s.start_ticks),
                };
                k.link
                    .keep(agent, [stdin.as_fd(), stdout.as_fd(), stderr.as_fd()]);
                Some((k.link.clone(), mark))
            }
            _ => None,
        };
        tracing::info!(pid, generation, resume = spec.resume.is_some(), model = ?spec.model, "agent started");
        let io = Io {
            stdin,
            stdout,
            stderr,
            partial_first: false,
        };
        Ok(Self::run(
            Proc::Child(child),
            pid,
            io,
            generation,
            out,
            kept,
        ))
    }

    /// Carries on with a CLI a lost worker ran: its pipes come from the supervisor, and
    /// its output goes on where that worker stopped reading (at the next whole line).
    pub fn adopt(
        kept: crate::keeper::Kept,
        generation: u64,
        out: mpsc::Sender<(u64, AgentOutput)>,
        link: Option<&Link>,
    ) -> std::io::Result<Self> {
        let crate::keeper::Kept { agent, pipes, .. } = kept;
        // Whatever happens next, the supervisor must let go when this worker does.
        let kept = link.map(|l| (l.clone(), agent.mark.clone()));
        let io = (|| {
            Ok::<_, std::io::Error>(Io {
                stdin: pipe::Sender::from_owned_fd(pipes.stdin)?,
                stdout: pipe::Receiver::from_owned_fd(pipes.stdout)?,
                stderr: pipe::Receiver::from_owned_fd(pipes.stderr)?,
                partial_first: true,
            })
        })();
        let io = match io {
            Ok(io) => io,
            Err(err) => {
                if let Some((link, mark)) = &kept {
                    link.release(mark);
                }
                return Err(err);
            }
        };
        tracing::info!(
            pid = agent.pid,
            generation,
            "agent adopted from the lost worker"
        );
        let proc = Proc::Adopted {
            pid: agent.pid,
            start_ticks: agent.start_ticks,
            eof: CancellationToken::new(),
        };
        Ok(Self::run(proc, Some(agent.pid), io, generation, out, kept))
    }

    fn run<W, R, E>(
        mut proc: Proc,
        pid: Option<u32>,
        io: Io<W, R, E>,
        generation: u64,
        out: mpsc::Sender<(u64, AgentOutput)>,
        kept: Option<(Link, String)>,
    ) -> Self
    where
        W: AsyncWrite + Unpin + Send + 'static,
        R: AsyncRead + Unpin + Send + 'static,
        E: AsyncRead + Unpin + Send + 'static,
    {
        let (input, input_rx) = mpsc::channel::<String>(64);
        let stop = CancellationToken::new();
        let span = tracing::info_span!("agent", pid, generation);
        let eof = match &proc {
            Proc::Adopted { eof, .. } => eof.clone(),
            Proc::Child(_) => CancellationToken::new(),
        };
        let release = kept.clone();
        let task_stop = stop.clone();
        let task = tokio::spawn(
            async move {
                let Io {
                    stdin,
                    stdout,
                    stderr,
                    partial_first,
                } = io;
                let writer = tokio::spawn(write_lines(stdin, input_rx, task_stop.clone()));
                let reader = tokio::spawn(
                    read_events(stdout, generation, out.clone(), partial_first, eof)
                        .in_current_span(),
                );
                let errlog = tokio::spawn(log_stderr(stderr).in_current_span());
                let let_go = || {
                    if let Some((link, mark)) = &release {
                        link.release(mark);
                    }
                };
                let status = tokio::select! {
                    status = proc.wait() => status,
                    _ = task_stop.cancelled() => {
                        // The writer drops stdin on cancel; a CLI exits on EOF by itself,
                        // once the supervisor has let go of its copy too.
                        let_go();
                        match tokio::time::timeout(EXIT_AFTER_EOF, proc.wait()).await {
                            Ok(status) => status,
                            Err(_) => proc.stop().await,
                        }
                    }
                };
                let_go();
                task_stop.cancel();
                for handle in [writer, reader, errlog] {
                    // Grandchildren may hold the pipes open; don't wait on them forever.
                    let _ = tokio::time::timeout(Duration::from_secs(2), handle).await;
                }
                tracing::info!(%status, "agent exited");
                let _ = out.send((generation, AgentOutput::Exited { status })).await;
            }
            .instrument(span),
        );
        Self {
            generation,
            input,
            stop,
            task: Some(task),
            pid,
            next_request: 0,
            kept,
        }
    }

    /// Tells the supervisor what a successor would need to carry on with this CLI.
    /// `None` when no supervisor keeps it; else resolves to whether the note went
    /// ([`Link::note`]).
    pub fn note(
        &self,
        note: crate::keeper::AgentNote,
    ) -> Option<tokio::sync::oneshot::Receiver<bool>> {
        let (link, mark) = self.kept.as_ref()?;
        Some(link.note(mark, note))
    }

    /// This process's generation number.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The OS process id.
    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    async fn write(&self, value: Value) -> Result<(), AgentError> {
        self.input
            .send(value.to_string())
            .await
            .map_err(|_| AgentError::Gone)
    }

    /// Sends a user turn: the files' content blocks first (Claude reads images best
    /// before the question about them), then the typed text, if any.
    pub async fn send_user(&self, text: &str, files: &[Value]) -> Result<(), AgentError> {
        let mut content = files.to_vec();
        if !text.is_empty() || content.is_empty() {
            content.push(json!({"type": "text", "text": text}));
        }
        self.write(json!({
            "type": "user",
            "message": {"role": "user", "content": content},
        }))
        .await
    }

    /// Sends a control request (`initialize`, `interrupt`, `set_model`, …); returns its
    /// id, which the matching [`AgentEvent::ControlResponse`] carries.
    pub async fn control(&mut self, subtype: &str, fields: Value) -> Result<String, AgentError> {
        self.next_request += 1;
        let request_id = format!("chroxy-{}-{}", self.generation, self.next_request);
        let mut request = json!({ "subtype": subtype });
        if let (Some(req), Value::Object(extra)) = (request.as_object_mut(), fields) {
            req.extend(extra);
        }
        self.write(
            json!({"type": "control_request", "request_id": request_id, "request": request}),
        )
        .await?;
        Ok(request_id)
    }

    /// Answers one of the CLI's control requests (e.g. `can_use_tool`).
    pub async fn respond(&self, request_id: &str, response: Value) -> Result<(), AgentError> {
        self.write(json!({
            "type": "control_response",
            "response": {"subtype": "success", "request_id": request_id, "response": response},
        }))
        .await
    }

    /// Stops the process (stdin closed, then SIGTERM/SIGKILL) and waits until it is gone.
    pub async fn shutdown(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // The process task notices and stops the child; nobody waits for it here.
        self.stop.cancel();
    }
}

/// A CLI's three pipes, as this worker reads and writes them.
struct Io<W, R, E> {
    stdin: W,
    stdout: R,
    stderr: E,
    /// Another worker read from stdout before: the first line may be the tail of one.
    partial_first: bool,
}

async fn write_lines(
    mut stdin: impl AsyncWrite + Unpin,
    mut rx: mpsc::Receiver<String>,
    stop: CancellationToken,
) {
    loop {
        let line = tokio::select! {
            // Written in order; a stop still lets everything already queued out (a
            // final "deny" must reach the CLI before its stdin closes).
            biased;
            line = rx.recv() => line,
            _ = stop.cancelled() => rx.try_recv().ok(),
        };
        let Some(mut line) = line else { break };
        line.push('\n');
        if let Err(err) = async {
            stdin.write_all(line.as_bytes()).await?;
            stdin.flush().await
        }
        .await
        {
            tracing::warn!(%err, "writing to the agent failed");
            break;
        }
    }
    // Dropping stdin is the CLI's signal to finish and exit.
}

async fn read_events(
    stdout: impl AsyncRead + Unpin,
    generation: u64,
    out: mpsc::Sender<(u64, AgentOutput)>,
    partial_first: bool,
    eof: CancellationToken,
) {
    let _eof = eof.drop_guard();
    let mut lines = FramedRead::new(stdout, LinesCodec::new_with_max_length(MAX_LINE_BYTES));
    let mut parser = StreamParser::new(format!("g{generation}"));
    let mut first = partial_first;
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => {
                tracing::warn!(
                    limit = MAX_LINE_BYTES,
                    "agent printed an over-long line; skipped"
                );
                continue;
            }
            Err(LinesCodecError::Io(err)) => {
                tracing::warn!(%err, "reading agent output failed");
                break;
            }
        };
        let fed = parser.feed(&line);
        if std::mem::take(&mut first) && fed.is_err() {
            tracing::debug!("skipped the tail of a line the lost worker had begun to read");
            continue;
        }
        match fed {
            Ok(events) => {
                for event in events {
                    if out
                        .send((generation, AgentOutput::Event(event)))
                        .await
                        .is_err()
                    {
                        return; // the session is gone
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "ignoring agent output"),
        }
    }
}

async fn log_stderr(stderr: impl AsyncRead + Unpin) {
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(64 * 1024));
    while let Some(line) = lines.next().await {
        match line {
            Ok(line) if !line.trim().is_empty() => tracing::warn!(stderr = %line, "agent stderr"),
            Ok(_) => {}
            Err(LinesCodecError::MaxLineLengthExceeded) => {}
            Err(LinesCodecError::Io(_)) => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_matches_the_design() {
        let spec = AgentSpec {
            program: "claude".into(),
            cwd: "/tmp".into(),
            model: Some("opus".into()),
            mode: PermissionMode::Auto,
            resume: Some("abc".into()),
            allow_bypass: false,
        };
        let args = spec.args().join(" ");
        for part in [
            "-p --input-format stream-json --output-format stream-json --verbose --include-partial-messages",
            "--permission-prompt-tool stdio",
            "--permission-mode bypassPermissions",
            "--model opus",
            "--resume abc",
        ] {
            assert!(args.contains(part), "{part:?} missing from {args}");
        }
    }

    #[test]
    fn root_may_skip_permissions_only_when_is_sandbox_is_exactly_1() {
        let val = |v: &'static str| Some(std::ffi::OsStr::new(v));
        assert!(bypass_allowed(false, None));
        assert!(bypass_allowed(false, val("yes")));
        assert!(bypass_allowed(true, val("1")));
        for other in [None, val(""), val("0"), val("yes"), val("true"), val("1 ")] {
            assert!(!bypass_allowed(true, other), "{other:?}");
        }
    }

    #[test]
    fn missing_binary_names_where_and_how_to_install() {
        let err = find_claude(Some(Path::new("/nonexistent/claude")))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("/nonexistent/claude") && err.contains("npm install"),
            "{err}"
        );
    }
}
