//! Owning child processes: every child Chroxy starts (agents, workers, cloudflared)
//! runs in its own process group, dies with its owner (`kill_on_drop`), and is stopped
//! in two steps so it can finish writing first. What a worker started outlives a
//! `kill -9` of the worker itself, so a worker's whole process tree carries a mark
//! ([`WORKER_MARK`]) by which its supervisor finds and ends it ([`kill_marked`];
//! `process/mark.rs`).

mod mark;

pub use mark::{kill_marked, kill_worker_tree, WORKER_MARK};

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

/// Makes this process's memory and start environment unreadable to other processes of
/// the same user (Linux `PR_SET_DUMPABLE` 0: no `ptrace`, no `/proc/<pid>/mem`,
/// `environ` or `fd`), so an agent's tool cannot lift the tokens a supervisor, worker or
/// CLI holds in memory. Children are unaffected (`execve` resets it). Both shells call
/// it first thing; elsewhere it does nothing.
pub fn keep_memory_private() {
    #[cfg(target_os = "linux")]
    if let Err(err) = nix::sys::prctl::set_dumpable(false) {
        tracing::debug!(%err, "cannot make this process non-dumpable");
    }
}

/// A child's stderr into its owner's log, line by line, each with the level the child
/// logged it at (`<time>  LEVEL target: message`, our tracing format) or `None` for a
/// line without one (a panic's message, a library's warning): `log` writes it. Ends
/// when the child closes its stderr, i.e. exits. A line over 16 KiB or not UTF-8 is
/// skipped: one runaway line must not fill memory or the log.
pub async fn log_lines(
    stderr: impl tokio::io::AsyncRead + Unpin,
    mut log: impl FnMut(Option<tracing::Level>, &str),
) {
    use futures_util::StreamExt;
    use tokio_util::codec::{FramedRead, LinesCodec, LinesCodecError};
    let mut lines = FramedRead::new(stderr, LinesCodec::new_with_max_length(16 * 1024));
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(LinesCodecError::MaxLineLengthExceeded) => continue,
            Err(LinesCodecError::Io(err)) => {
                // Not UTF-8 is one bad line; a closed pipe ends the stream by itself.
                if err.kind() == io::ErrorKind::InvalidData {
                    continue;
                }
                break;
            }
        };
        let level = match line.split_whitespace().nth(1).unwrap_or_default() {
            "ERROR" => Some(tracing::Level::ERROR),
            "WARN" => Some(tracing::Level::WARN),
            "INFO" => Some(tracing::Level::INFO),
            "DEBUG" => Some(tracing::Level::DEBUG),
            "TRACE" => Some(tracing::Level::TRACE),
            _ => None,
        };
        log(level, &line);
    }
}

/// Makes `cmd` a group leader that is killed if its owner drops it.
pub fn own(cmd: &mut Command) -> &mut Command {
    cmd.kill_on_drop(true);
    #[cfg(unix)]
    cmd.process_group(0);
    cmd
}

/// SIGTERM the child's group, wait `grace`, then SIGKILL the group.
pub async fn stop_gracefully(child: &mut Child, grace: Duration) -> io::Result<ExitStatus> {
    let Some(pid) = child.id() else {
        return child.wait().await; // already reaped
    };
    let group = Pid::from_raw(pid as i32);
    let _ = killpg(group, Signal::SIGTERM); // ESRCH only means it is already gone
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(status) => status,
        Err(_elapsed) => {
            tracing::warn!(
                pid,
                grace_ms = grace.as_millis() as u64,
                "child ignored SIGTERM; killing it"
            );
            let _ = killpg(group, Signal::SIGKILL);
            child.wait().await
        }
    }
}

/// How [`stop_left_behind`] signals a pid: that process alone, or its whole group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// The process.
    Process,
    /// The process group it leads.
    Group,
}

/// Stops processes a predecessor that died left running: not children of this process,
/// so there is nothing to wait on. SIGTERM, up to `grace` for them to go, then SIGKILL
/// to those still there. `alive` says whether a pid still runs what it ran then: pids
/// are reused, and one now running something else is never signalled again. Blocking.
pub fn stop_left_behind(pids: &[u32], reach: Reach, grace: Duration, alive: impl Fn(u32) -> bool) {
    let send = |pid: u32, sig: Signal| {
        let pid = Pid::from_raw(pid as i32);
        // ESRCH only means it is already gone.
        let _ = match reach {
            Reach::Process => nix::sys::signal::kill(pid, sig),
            Reach::Group => killpg(pid, sig),
        };
    };
    let living = || pids.iter().copied().filter(|&p| alive(p));
    living().for_each(|pid| send(pid, Signal::SIGTERM));
    let deadline = std::time::Instant::now() + grace;
    while std::time::Instant::now() < deadline && living().next().is_some() {
        std::thread::sleep(Duration::from_millis(20));
    }
    living().for_each(|pid| send(pid, Signal::SIGKILL));
}

/// SIGKILL the child's group at once and reap it.
pub async fn kill_group(child: &mut Child) -> io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    child.wait().await
}

/// What `/proc/<pid>/stat` says of a process (Linux).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    /// `R`, `S`, `D`, `Z` (zombie: dead, not yet reaped), …
    pub state: char,
    /// Its parent's pid.
    pub parent: u32,
    /// When it started, in clock ticks since boot: with the pid, names one process
    /// for the machine's uptime (pids are reused, this pair is not).
    pub start_ticks: u64,
    /// A kernel thread (`PF_KTHREAD`): it has no user memory, so its environment reads
    /// blank for good.
    pub kernel_thread: bool,
    /// Dying (`PF_EXITING`): between a kill (or its exit) and becoming a zombie, it has
    /// let go of its memory, and its environment reads blank.
    pub exiting: bool,
    /// Where its start environment ends in its memory. 0 until an exec has laid the
    /// environment out; also for a process with no memory (a kernel thread, one
    /// exiting), one this process may not read, and on kernels before 3.5, which do not
    /// say.
    pub env_end: u64,
}

/// The flag of a kernel thread in `/proc/<pid>/stat` (`include/linux/sched.h`).
const PF_KTHREAD: u32 = 0x0020_0000;
/// The flag of a process in its exit.
const PF_EXITING: u32 = 0x0000_0004;

/// The stat of `pid`, if it exists (Linux; `None` elsewhere).
pub fn stat_of(pid: u32) -> Option<ProcStat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // "pid (comm) state ppid …": comm may hold spaces and parentheses.
    let fields: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
    // Field 9.
    let flags = fields.get(6)?.parse::<u32>().ok()?;
    Some(ProcStat {
        state: fields.first()?.chars().next()?,
        parent: fields.get(1)?.parse().ok()?,
        // Field 22 of the whole line, the 20th after the command.
        start_ticks: fields.get(19)?.parse().ok()?,
        kernel_thread: flags & PF_KTHREAD != 0,
        exiting: flags & PF_EXITING != 0,
        // Field 51.
        env_end: fields
            .get(48)
            .and_then(|f| f.trim_end().parse().ok())
            .unwrap_or(0),
    })
}

/// The first line `<binary> --version` prints, if it answers within `timeout`
/// (blocking). The error says what went wrong, for messages.
pub fn version_line(binary: &std::path::Path, timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    let spawn = || {
        std::process::Command::new(binary)
            .arg("--version")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
    };
    // A binary just written (a release just copied in) is "busy" while any process forked
    // in that instant still holds the writer's descriptor, until it execs: try again.
    let mut spawned = spawn();
    for _ in 0..20 {
        match &spawned {
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ETXTBSY as i32) => {
                std::thread::sleep(Duration::from_millis(25));
                spawned = spawn();
            }
            _ => break,
        }
    }
    let mut child = spawned.map_err(|e| format!("cannot run it: {e}"))?;
    // Read on the side so a chatty binary never blocks on a full pipe.
    let reader = child.stdout.take().map(|mut out| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = out.read_to_string(&mut text);
            text
        })
    });
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10))
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`--version` gave no answer within {} s",
                    timeout.as_secs()
                ));
            }
        }
    }
    let text = reader.and_then(|r| r.join().ok()).unwrap_or_default();
    Ok(text.lines().next().unwrap_or_default().trim().to_owned())
}

/// "exit status 1", "killed by signal 9": for messages a user reads.
pub fn describe(status: &ExitStatus) -> String {
    #[cfg(unix)]
    {
        use std::os::unix::process::ExitStatusExt;
        if let Some(sig) = status.signal() {
            return format!("killed by signal {sig}");
        }
    }
    match status.code() {
        Some(code) => format!("exit status {code}"),
        None => "unknown exit status".to_owned(),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[test]
    fn this_process_keeps_its_memory_to_itself() {
        keep_memory_private();
        assert_eq!(nix::sys::prctl::get_dumpable(), Ok(false));
    }

    /// Runs (and, as a zombie, has not yet been reaped)?
    fn running(pid: u32) -> bool {
        stat_of(pid).is_some_and(|s| s.state != 'Z')
    }

    #[test]
    fn what_was_left_behind_is_stopped_a_deaf_one_killed_and_a_reused_pid_spared() {
        let spawn = |script: &str| {
            std::process::Command::new("sh")
                .args(["-c", script])
                .spawn()
                .unwrap()
        };
        let mut polite = spawn("exec sleep 600");
        // Ignores SIGTERM: only the SIGKILL after the grace ends it.
        let mut deaf = spawn("trap '' TERM; while :; do sleep 1; done");
        // Stands for a pid reused by something else: `alive` says it is not ours.
        let mut other = spawn("exec sleep 600");
        let (p, d, o) = (polite.id(), deaf.id(), other.id());
        // The shell must have installed its trap before the SIGTERM comes: the TERM bit
        // of its ignored-signals mask (other bits may be inherited, SIGPIPE's from us).
        let term = 1u64 << (Signal::SIGTERM as i32 - 1);
        let ignoring = || {
            let status = std::fs::read_to_string(format!("/proc/{d}/status")).unwrap_or_default();
            status
                .lines()
                .find_map(|l| l.strip_prefix("SigIgn:"))
                .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
                .is_some_and(|mask| mask & term != 0)
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while !ignoring() {
            assert!(std::time::Instant::now() < deadline, "the trap never came");
            std::thread::sleep(Duration::from_millis(5));
        }

        let ours = |pid: u32| pid != o && running(pid);
        stop_left_behind(&[p, d, o], Reach::Process, Duration::from_millis(300), ours);

        use std::os::unix::process::ExitStatusExt;
        assert_eq!(
            polite.wait().unwrap().signal(),
            Some(Signal::SIGTERM as i32)
        );
        assert_eq!(deaf.wait().unwrap().signal(), Some(Signal::SIGKILL as i32));
        assert!(
            other.try_wait().unwrap().is_none(),
            "a pid not ours is never signalled"
        );
        other.kill().unwrap();
        other.wait().unwrap();
    }
}
