//! Finding a worker's processes by the mark in their start environment, and killing
//! them. What a worker started outlives a `kill -9` of the worker in groups and sessions
//! of its own, re-parented; the mark ([`WORKER_MARK`]) is what still ties it to the
//! worker. The supervisor calls [`kill_worker_tree`] when a worker has stopped, builds
//! and the keeper call [`kill_marked`].
//!
//! A process in the middle of an exec shows /proc a blank environment until the kernel
//! has laid the new one out: a scan in that moment cannot tell whether it is marked.
//! So a kill looks again, for a bounded time, while a process may be in that moment
//! ([`may_be_mid_exec`], [`Unsettled`]); otherwise a tool a dead worker's CLI was just
//! starting would be missed and outlive it.

use std::collections::HashMap;
use std::time::Duration;

use nix::sys::signal::Signal;
use nix::unistd::Pid;
use tokio::time::Instant;

use super::ProcStat;

/// In a worker's environment, and so in the start environment of everything it starts:
/// its agents and their tools, whatever group or session they move to (Claude Code runs
/// each Bash command in a session of its own) and wherever they are re-parented when
/// their parent dies. The value names one worker of one supervisor, so no other process
/// matches it, whatever pids are reused. (Not `CHROXY_*`: agents inherit none of those.)
pub const WORKER_MARK: &str = "UNDER_CHROXY_WORKER";

/// SIGKILLs every process whose start environment holds [`WORKER_MARK`]`=mark`, again
/// until none is left alive (a dying shell may still fork) and none may still be
/// starting with it, for at most `patience`. Returns the pids still alive then.
/// Processes of other users cannot be read and are never touched; a process that
/// cleared its environment is not found. Linux only (elsewhere there is no `/proc` to
/// search, and nothing is done).
pub async fn kill_marked(mark: &str, patience: Duration) -> Vec<u32> {
    let mark = mark.to_owned();
    kill_matching(move |value| value == mark.as_bytes(), patience).await
}

/// Like [`kill_marked`], for a worker's whole tree: the worker's own mark, and the marks
/// of the CLIs it started (`<mark>.<session>.<generation>`), except those in `spare`
/// (CLIs its supervisor keeps for a successor, [`crate::keeper`]).
pub async fn kill_worker_tree(mark: &str, spare: Vec<String>, patience: Duration) -> Vec<u32> {
    let own = mark.as_bytes().to_vec();
    let prefix = format!("{mark}.").into_bytes();
    let matches = move |value: &[u8]| {
        value == own.as_slice()
            || (value.starts_with(&prefix) && !spare.iter().any(|s| s.as_bytes() == value))
    };
    kill_matching(matches, patience).await
}

/// Between two scans: long enough for a killed process to be gone, or a starting one to
/// show its environment, short enough that a kill costs little more than its scans.
const RESCAN: Duration = Duration::from_millis(20);

async fn kill_matching(
    matches: impl Fn(&[u8]) -> bool + Clone + Send + 'static,
    patience: Duration,
) -> Vec<u32> {
    let deadline = Instant::now() + patience;
    let mut unsettled = Unsettled::default();
    loop {
        let wanted = matches.clone();
        let found = tokio::task::spawn_blocking(move || scan(&wanted))
            .await
            .unwrap_or_default();
        let now = Instant::now();
        // Noted on every scan, so that the bound counts from the first blank sight.
        let look_again = unsettled.worth_another_look(&found.unsettled, now);
        if (found.matched.is_empty() && !look_again) || now >= deadline {
            if found.matched.is_empty() && look_again {
                // Any of them may be ours: say so, as the caller only hears of the marked.
                tracing::debug!(pids = ?found.unsettled, "still starting when the kill gave up");
            }
            return found.matched;
        }
        for &pid in &found.matched {
            let _ = nix::sys::signal::kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        tokio::time::sleep(RESCAN).await;
    }
}

/// What one look through `/proc` found.
#[derive(Debug, Default)]
struct Scan {
    /// Living processes, except this one, whose start environment gives
    /// [`WORKER_MARK`] a value that the kill's `matches` accepts.
    matched: Vec<u32>,
    /// Processes whose environment read blank, that [`may_be_mid_exec`], and whose
    /// parent is marked (or cannot say: [`parent_may_mark`]): marked or not, `/proc`
    /// cannot say yet.
    unsettled: Vec<u32>,
}

/// Reads every process's start environment (and, for one that reads blank, its stat).
/// Linux: elsewhere there is no `/proc`, or no environment in it, and it finds nothing.
fn scan(matches: &dyn Fn(&[u8]) -> bool) -> Scan {
    let me = std::process::id();
    let name = format!("{WORKER_MARK}=").into_bytes();
    let mut found = Scan::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    // Of unknown age (no uptime), as if old: the rule's other half still holds.
    let uptime = uptime();
    let age = |s: &ProcStat| uptime.map_or(Duration::MAX, |u| started_ago(s.start_ticks, u));
    let is_marked = |env: &[u8]| {
        env.split(|&b| b == 0)
            .any(|var| var.strip_prefix(name.as_slice()).is_some_and(matches))
    };
    let pids = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids.filter(|&pid| pid != me) {
        // Another user's process cannot be read (an error, not a blank): never ours.
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if env.is_empty() {
            let unsettled = super::stat_of(pid).is_some_and(|s| {
                may_be_mid_exec(&s, age(&s))
                    && parent_may_mark(s.parent, me, || {
                        std::fs::read(format!("/proc/{}/environ", s.parent))
                            .is_ok_and(|env| is_marked(&env))
                    })
            });
            if unsettled {
                found.unsettled.push(pid);
            }
        } else if is_marked(&env) && super::stat_of(pid).is_some_and(|s| s.state != 'Z') {
            found.matched.push(pid);
        }
    }
    found
}

/// Whether a process mid-exec whose parent is `parent` may be starting with the mark.
/// It inherits its environment from the parent that forked it, so a mark comes from a
/// marked parent (`parent_marked`): a build's compiler or a shell's command elsewhere on
/// the machine, exec'ing at the moment of the scan, holds up no kill (a worker's
/// successor waits on this one). A parent that cannot say is counted: init (pid 1), to
/// which a process whose parent died is re-parented, and the caller itself (its own
/// children; a test's). (Re-parented to a subreaper instead, such as `systemd --user`,
/// it is not waited for: its parent died within its exec.)
fn parent_may_mark(parent: u32, me: u32, parent_marked: impl FnOnce() -> bool) -> bool {
    parent == 1 || parent == me || parent_marked()
}

/// How long after its start a process whose environment is set but empty may still be
/// having it written ([`may_be_mid_exec`]). A spawn forks and execs at once, and the
/// writing takes microseconds: a second covers a machine too loaded to run them, and is
/// all that a process started with no environment costs a kill.
const FRESH: Duration = Duration::from_secs(1);

/// Whether a process whose start environment read blank may be in the middle of an exec,
/// so that a look a moment later may show it marked. `started_ago` is its age.
///
/// The kernel gives a process new memory at the start of an exec and sets where the
/// environment ends in it last, after mapping the binary and its loader (which may read
/// the disk) and writing a pointer to each argument: until then that end (`env_end`) is
/// 0 and the environment reads blank, whatever the process's age (a shell may fork long
/// before it execs). Only an exec looks like that, or an exit between freeing the memory
/// and becoming a zombie, or a kernel thread (no user memory, ever): dying processes
/// (a kill's own victims, each scan after the first), zombies and kernel threads never
/// count. While the kernel then writes a pointer to each
/// variable, the end equals the start and the environment reads blank too, as that of a
/// process started with none (`env -i`) does for good. Only the age tells these
/// apart, so that case counts while the process is [`FRESH`]: one that lives on with
/// no environment delays no kill. A pid counts for a bounded time in any case
/// ([`UNSETTLED_LIMIT`]).
fn may_be_mid_exec(stat: &ProcStat, started_ago: Duration) -> bool {
    stat.state != 'Z'
        && !stat.kernel_thread
        && !stat.exiting
        && (stat.env_end == 0 || started_ago < FRESH)
}

/// How long a process that started `start_ticks` after boot has run, `uptime` after boot.
fn started_ago(start_ticks: u64, uptime: Duration) -> Duration {
    // Start times count USER_HZ ticks, which sysconf tells (100 on common targets).
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|t| u32::try_from(t).ok())
        .filter(|&t| t > 0)
        .unwrap_or(100);
    uptime.saturating_sub(Duration::from_secs(start_ticks) / per_second)
}

/// Time since boot, as `/proc/uptime` says (the clock of processes' start times).
fn uptime() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/uptime").ok()?;
    Duration::try_from_secs_f64(text.split(' ').next()?.parse().ok()?).ok()
}

/// How long a kill keeps looking again for a process that reads blank, from its first
/// blank sight. An exec lays out the environment within milliseconds even on a loaded
/// machine; a process blank for longer is stuck in the kernel (a hung file system) and
/// must not hold up every kill for its whole patience, nor the successor waiting on it.
const UNSETTLED_LIMIT: Duration = Duration::from_secs(1);

/// When each process a kill is waiting to see was first seen blank.
#[derive(Debug, Default)]
struct Unsettled {
    since: HashMap<u32, Instant>,
}

impl Unsettled {
    /// Notes the processes one scan found unsettled at `now`, and says whether one of
    /// them is worth another look: one first seen blank less than [`UNSETTLED_LIMIT`]
    /// ago. A process that has shown its environment since is forgotten, so a pid that
    /// reads blank again (its next exec, or a reuse) is waited for afresh.
    fn worth_another_look(&mut self, pids: &[u32], now: Instant) -> bool {
        self.since.retain(|pid, _| pids.contains(pid));
        for &pid in pids {
            self.since.entry(pid).or_insert(now);
        }
        self.since
            .values()
            .any(|&first| now.duration_since(first) < UNSETTLED_LIMIT)
    }
}

#[cfg(test)]
mod tests;
