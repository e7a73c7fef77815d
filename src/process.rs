//! Owning child processes: every child Chroxy starts (agents, workers; cloudflared
//! later) runs in its own process group, dies with its owner
//! (`kill_on_drop`), and is stopped in two steps so it can finish writing first.

use std::io;
use std::process::ExitStatus;
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

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

/// SIGKILL the child's group at once and reap it.
pub async fn kill_group(child: &mut Child) -> io::Result<ExitStatus> {
    if let Some(pid) = child.id() {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    child.wait().await
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
