//! Running one step's command (the build, the check): in the checked-out tree, with a
//! time limit, stopped when the build is cancelled, its output read line by line
//! (stdout and stderr as they come) and handed on redacted, whatever its size: a line
//! is cut at [`MAX_LINE`], and what the log file keeps is bounded by [`MAX_LOG`].

use std::io::Write;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::token::ApiToken;

/// The longest line handed on; the rest of it is dropped.
pub(super) const MAX_LINE: usize = 2000;
/// The most a build's log file holds.
pub(super) const MAX_LOG: u64 = 16 * 1024 * 1024;
/// How long the output is still read after the command exited.
const LAST_LINES: Duration = Duration::from_secs(2);

/// How a step's command ended when it did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Ended {
    /// It exited unsuccessfully (how, for a person).
    Failed(String),
    /// It ran past its time limit and was killed.
    TimedOut,
    /// The build was cancelled and it was killed.
    Cancelled,
    /// It could not be started.
    NotStarted(String),
}

/// Where a build's output goes: the log file (bounded) and the step's callback.
pub(super) struct Output {
    log: Option<std::fs::File>,
    written: u64,
    secrets: Vec<ApiToken>,
}

impl Output {
    /// Output into `log` (created or truncated) with `secrets` redacted. A log that
    /// cannot be written is warned of once and the build goes on without it.
    pub(super) fn new(log: &std::path::Path, secrets: Vec<ApiToken>) -> Self {
        let log = crate::store::ensure_private_dir(log.parent().unwrap_or(log))
            .ok()
            .and_then(|()| std::fs::File::create(log).ok());
        if log.is_none() {
            tracing::warn!("cannot write the build log; the build goes on without it");
        }
        Self {
            log,
            written: 0,
            secrets,
        }
    }

    /// `line` redacted, also written to the log while it has room.
    pub(super) fn line(&mut self, line: String) -> String {
        let line = self
            .secrets
            .iter()
            .fold(line, |line, secret| secret.redact(line, "[secret]"));
        if let Some(log) = &mut self.log {
            if self.written < MAX_LOG {
                self.written += line.len() as u64 + 1;
                let fits = self.written < MAX_LOG;
                let text = if fits {
                    line.as_str()
                } else {
                    "[the log is full: output cut]"
                };
                if writeln!(log, "{text}").is_err() {
                    self.log = None;
                }
            }
        }
        line
    }
}

/// Runs `cmd` to its end, each output line through `out` and then `each`; `Ok` when
/// it exits successfully within `limit`. Its whole process group is killed on a time
/// out or a cancel.
pub(super) async fn run(
    mut cmd: Command,
    limit: Duration,
    cancel: &CancellationToken,
    out: &mut Output,
    mut each: impl FnMut(String),
) -> Result<(), Ended> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    crate::process::own(&mut cmd);
    let mut child = cmd.spawn().map_err(|e| Ended::NotStarted(e.to_string()))?;
    let group = child.id().map(|pid| nix::unistd::Pid::from_raw(pid as i32));
    let (tx, mut lines) = mpsc::channel(256);
    if let Some(stdout) = child.stdout.take() {
        tokio::spawn(read_lines(stdout, tx.clone()));
    }
    if let Some(stderr) = child.stderr.take() {
        tokio::spawn(read_lines(stderr, tx));
    }
    let deadline = tokio::time::sleep(limit);
    tokio::pin!(deadline);
    let mut open = true;
    // Once the command has exited, what it left running may still hold its output
    // open (a daemon a build script started): its lines are read for a moment more,
    // not until the time limit.
    let mut exited = None;
    let late = tokio::time::sleep(Duration::MAX);
    tokio::pin!(late);
    let status = loop {
        if !open {
            if let Some(status) = exited.take() {
                break status;
            }
        }
        tokio::select! {
            line = lines.recv(), if open => match line {
                Some(line) => each(out.line(line)),
                None => open = false,
            },
            status = child.wait(), if exited.is_none() => {
                exited = Some(status.map_err(|e| e.to_string()));
                late.as_mut().reset(tokio::time::Instant::now() + LAST_LINES);
            }
            () = &mut late, if exited.is_some() => open = false,
            () = &mut deadline => {
                let _ = crate::process::kill_group(&mut child).await;
                return Err(Ended::TimedOut);
            }
            () = cancel.cancelled() => {
                let _ = crate::process::kill_group(&mut child).await;
                return Err(Ended::Cancelled);
            }
        }
    };
    // What it left in its process group ends with it.
    if let Some(group) = group {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    match status {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(Ended::Failed(crate::process::describe(&status))),
        Err(err) => Err(Ended::Failed(err)),
    }
}

/// Sends `from`'s lines (lossy UTF-8, each cut at [`MAX_LINE`]) until it ends.
async fn read_lines(mut from: impl AsyncRead + Unpin, to: mpsc::Sender<String>) {
    let mut pending = Vec::new();
    // Within a line longer than MAX_LINE: its rest is dropped up to the newline.
    let mut dropping = false;
    let mut chunk = vec![0u8; 8192];
    loop {
        let n = match from.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &chunk[..n] {
            if byte == b'\n' {
                if !dropping && to.send(text(&pending)).await.is_err() {
                    return;
                }
                pending.clear();
                dropping = false;
            } else if !dropping {
                pending.push(byte);
                if pending.len() >= MAX_LINE {
                    let mut cut = text(&pending);
                    cut.push('…');
                    if to.send(cut).await.is_err() {
                        return;
                    }
                    pending.clear();
                    dropping = true;
                }
            }
        }
    }
    if !pending.is_empty() && !dropping {
        let _ = to.send(text(&pending)).await;
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .trim_end_matches('\r')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(script: &str, limit: Duration) -> (Result<(), Ended>, Vec<String>, String) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("build.log");
        let secret = ApiToken::new("s3cret-token-value");
        let rt = tokio::runtime::Runtime::new().unwrap();
        let (result, lines) = rt.block_on(async {
            let mut out = Output::new(&log, vec![secret]);
            let mut lines = Vec::new();
            let mut cmd = Command::new("sh");
            cmd.arg("-c").arg(script);
            let cancel = CancellationToken::new();
            let result = run(cmd, limit, &cancel, &mut out, |l| lines.push(l)).await;
            (result, lines)
        });
        (result, lines, std::fs::read_to_string(log).unwrap())
    }

    #[test]
    fn both_streams_are_read_redacted_and_a_failure_says_how_it_ended() {
        let (result, lines, log) = collect(
            "echo out; echo err >&2; echo 'the token is s3cret-token-value'; exit 3",
            Duration::from_secs(30),
        );
        assert_eq!(result, Err(Ended::Failed("exit status 3".into())));
        assert!(lines.contains(&"out".to_owned()) && lines.contains(&"err".to_owned()));
        assert!(
            lines.contains(&"the token is [secret]".to_owned()),
            "{lines:?}"
        );
        assert!(!log.contains("s3cret") && log.contains("[secret]"), "{log}");
    }

    #[test]
    fn a_line_without_end_is_cut_and_the_rest_still_read() {
        let script = format!(
            "head -c {} /dev/zero | tr '\\\\0' x; echo; echo after",
            MAX_LINE * 50
        );
        let (result, lines, _) = collect(&script, Duration::from_secs(30));
        assert_eq!(result, Ok(()));
        assert_eq!(
            lines.len(),
            2,
            "{:?}",
            lines.iter().map(String::len).collect::<Vec<_>>()
        );
        assert!(lines[0].chars().count() <= MAX_LINE + 1 && lines[0].ends_with('…'));
        assert_eq!(lines[1], "after");
    }

    /// Waits (bounded) for `pid` to be gone, or a zombie; whether it is.
    fn dies(pid: u32) -> bool {
        let alive = || crate::process::stat_of(pid).is_some_and(|s| s.state != 'Z');
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while alive() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        !alive()
    }

    #[test]
    fn a_daemon_holding_the_output_open_does_not_hold_the_step_nor_outlive_it() {
        // The command exits at once; what it started keeps stdout open for 300 s.
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!(
            "echo started; (sleep 300 & echo $! > {}); exit 0",
            pid_file.display()
        );
        let (result, lines, _) = collect(&script, Duration::from_secs(60));
        assert_eq!(result, Ok(()));
        assert_eq!(lines, ["started"]);
        let pid: u32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(dies(pid), "the step's daemon outlived it");
    }

    #[test]
    fn a_command_past_its_limit_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 300 & echo $! > {}; wait", pid_file.display());
        let (result, _, _) = collect(&script, Duration::from_millis(500));
        assert_eq!(result, Err(Ended::TimedOut));
        let pid: i32 = std::fs::read_to_string(&pid_file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild was in the group: killed too (a zombie at most, until init
        // reaps it).
        assert!(
            dies(pid as u32),
            "the step's background process outlived the time limit"
        );
    }
}
