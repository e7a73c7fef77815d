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

/// The first line `<binary> --version` prints, if it answers within `timeout`
/// (blocking). The error says what went wrong, for messages.
pub fn version_line(binary: &std::path::Path, timeout: Duration) -> Result<String, String> {
    use std::io::Read;
    let mut child = std::process::Command::new(binary)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot run it: {e}"))?;
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
