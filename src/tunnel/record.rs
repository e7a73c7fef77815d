//! Which cloudflared runs, on disk: a supervisor killed with `kill -9` cannot stop its
//! tunnel, and cloudflared (a process group of its own) runs on; without this record
//! the next start would run a second tunnel beside it.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::{self, Reach};
use crate::store::{atomic_write, Paths};

/// Where a supervisor of `paths` records the cloudflared it runs.
pub fn record_file(paths: &Paths) -> PathBuf {
    paths.state_dir().join("cloudflared.json")
}

/// One cloudflared process, exactly: the pid with its start time (pids are reused;
/// the pair is not) and its binary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Running {
    pid: u32,
    start_ticks: u64,
    binary: PathBuf,
}

impl Running {
    /// Whether this very process still runs (and is no zombie).
    fn is_alive(&self) -> bool {
        let same = process::stat_of(self.pid)
            .is_some_and(|s| s.start_ticks == self.start_ticks && s.state != 'Z');
        // Also its binary, where the system says (" (deleted)" after an upgrade).
        let exe = std::fs::read_link(format!("/proc/{}/exe", self.pid)).ok();
        let binary = self.binary.to_string_lossy();
        same && exe.is_none_or(|exe| exe.to_string_lossy().starts_with(&*binary))
    }
}

/// The record of a running cloudflared on disk; removed when dropped (when the
/// cloudflared has been reaped).
pub(super) struct RecordGuard(PathBuf);

impl RecordGuard {
    pub(super) async fn write(file: PathBuf, pid: u32, binary: PathBuf) -> Option<Self> {
        let start_ticks = process::stat_of(pid)?.start_ticks;
        let running = Running {
            pid,
            start_ticks,
            binary: binary.canonicalize().unwrap_or(binary),
        };
        let json = serde_json::to_vec(&running).ok()?;
        let path = file.clone();
        let written = tokio::task::spawn_blocking(move || atomic_write(&path, &json)).await;
        match written {
            Ok(Ok(())) => Some(Self(file)),
            Ok(Err(err)) => {
                tracing::warn!(%err, "cannot record the running cloudflared");
                None
            }
            Err(_) => None,
        }
    }
}

impl Drop for RecordGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Stops the cloudflared a supervisor that died (kill -9, power cut) left running, if
/// `file` records one and that very process still runs, so that a new start never runs a
/// second tunnel beside it. Blocking (up to ~5 s); for the next supervisor's start.
pub fn stop_leftover(file: &std::path::Path) {
    let Some(old) = std::fs::read(file)
        .ok()
        .and_then(|raw| serde_json::from_slice::<Running>(&raw).ok())
    else {
        return;
    };
    if old.is_alive() {
        tracing::warn!(
            pid = old.pid,
            "stopping the cloudflared a previous supervisor left running"
        );
        let grace = Duration::from_secs(5);
        process::stop_left_behind(&[old.pid], Reach::Group, grace, |_| old.is_alive());
    }
    let _ = std::fs::remove_file(file);
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_very_process_recorded_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("cloudflared.json");
        let binary = which::which("sleep").unwrap().canonicalize().unwrap();
        let mut cmd = tokio::process::Command::new(&binary);
        cmd.arg("600");
        process::own(&mut cmd);
        let mut child = cmd.spawn().unwrap();
        let pid = child.id().unwrap();
        let guard = RecordGuard::write(file.clone(), pid, binary.clone())
            .await
            .unwrap();
        std::mem::forget(guard); // as if the supervisor had been killed

        // The same pid with another start time is another process: left alone.
        let mut other: Running = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
        other.start_ticks += 1;
        let stranger = dir.path().join("stranger.json");
        atomic_write(&stranger, &serde_json::to_vec(&other).unwrap()).unwrap();
        stop_leftover(&stranger);
        assert!(
            child.try_wait().unwrap().is_none(),
            "a stranger was stopped"
        );

        tokio::task::spawn_blocking(move || stop_leftover(&file))
            .await
            .unwrap();
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .expect("the recorded process was not stopped")
            .unwrap();
        assert!(!status.success());
        assert!(!dir.path().join("cloudflared.json").exists());
    }
}
