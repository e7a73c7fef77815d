//! One supervisor per `CHROXY_HOME`: an advisory lock held for the supervisor's whole
//! life, and beside it a small file saying who holds it (pid, ports, worker pids) so a
//! second `chroxy start` can name the running one and `chroxy status` can find its
//! status page. The kernel drops the lock when its holder dies, however it dies; the
//! next supervisor then stops any worker and any cloudflared the old one left behind.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::process::Reach;
use crate::store::{atomic_write, ensure_private_dir, remove_stale_temp_files, Paths, StoreError};

/// A temporary file this old is nobody's write in progress.
const STALE_TEMP_AGE: Duration = Duration::from_secs(60);

/// Who holds the instance lock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InstanceInfo {
    /// The supervisor's process id.
    pub pid: u32,
    /// The public port phones connect to.
    pub public_port: u16,
    /// The status page's port.
    pub status_port: u16,
    /// Milliseconds since the epoch.
    pub started_at: u64,
    /// Worker processes it runs now (for the next supervisor to clean up after a crash).
    #[serde(default)]
    pub workers: Vec<u32>,
    /// What runs it, so that a second one can say how to stop it.
    #[serde(default)]
    pub runs_as: RunsAs,
}

/// What a supervisor runs as: the tray app and the systemd service never run both for
/// one home (the lock), and the one refused says which one holds it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RunsAs {
    /// `chroxy start` in a terminal (or under some other process manager).
    #[default]
    Terminal,
    /// The tray app.
    TrayApp,
    /// A systemd service (`chroxy service install`).
    Service,
}

impl RunsAs {
    /// This process: the tray app is the `chroxy-desktop` binary (whatever started it:
    /// a login session's autostart runs it as a systemd unit too); the service is
    /// `chroxy start` in the `chroxy.service` unit (its cgroup says so, and the unit
    /// sets [`crate::service::SERVICE_VARIABLE`]).
    pub fn this_process() -> Self {
        let exe = std::env::current_exe().ok();
        let name = exe.as_deref().and_then(Path::file_name);
        if name
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with("chroxy-desktop"))
        {
            return Self::TrayApp;
        }
        let unit = format!("/{}", crate::service::UNIT);
        let in_unit = std::fs::read_to_string("/proc/self/cgroup")
            .is_ok_and(|c| c.lines().any(|l| l.trim_end().ends_with(&unit)));
        let marked = std::env::var_os(crate::service::SERVICE_VARIABLE)
            .is_some_and(|v| v == crate::service::UNIT);
        if in_unit || marked {
            Self::Service
        } else {
            Self::Terminal
        }
    }

    /// What it is, and how a person stops it.
    pub fn how_to_stop(self) -> &'static str {
        match self {
            Self::Terminal => "`chroxy start`: Ctrl-C in its terminal",
            Self::TrayApp => "the tray app: Quit Chroxy in its tray menu",
            Self::Service => {
                "the systemd service: `systemctl --user stop chroxy` (or `chroxy service uninstall`)"
            }
        }
    }
}

/// Why the instance could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    /// Another supervisor holds the lock.
    #[error("Chroxy is already running for {home} ({who}); stop it first ({how}), or use another CHROXY_HOME")]
    Running {
        /// The state directory both would share.
        home: PathBuf,
        /// "pid 123, public port 8765, status page http://127.0.0.1:8766" when known.
        who: String,
        /// What it runs as and how to stop it ([`RunsAs::how_to_stop`]).
        how: &'static str,
    },
    /// The lock or the instance file could not be used.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The held lock. Dropping it removes the lock and instance files, then unlocks.
#[derive(Debug)]
pub struct Instance {
    lock_path: PathBuf,
    info_path: PathBuf,
    file: File,
    info: InstanceInfo,
}

impl Instance {
    /// Takes the lock or says who has it. Leftovers of a supervisor that died without
    /// cleaning up (its workers, if they still run) are stopped first.
    pub fn acquire(paths: &Paths) -> Result<Self, InstanceError> {
        let lock_path = paths.lock_file("supervisor");
        let info_path = paths.instance_file();
        ensure_private_dir(paths.state_dir())?;
        let file = loop {
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .read(true)
                .write(true)
                .open(&lock_path)
                .map_err(|e| StoreError::io("opening lock file", &lock_path, e))?;
            match file.try_lock() {
                Ok(()) => {}
                Err(std::fs::TryLockError::WouldBlock) => {
                    let info = read_info(&info_path);
                    return Err(InstanceError::Running {
                        home: paths.state_dir().to_path_buf(),
                        who: info
                            .as_ref()
                            .map(describe)
                            .unwrap_or_else(|| "its details are not written yet".into()),
                        how: match info {
                            Some(i) => i.runs_as.how_to_stop(),
                            None => "Ctrl-C in its terminal, quit the tray app, or `systemctl --user stop chroxy`",
                        },
                    });
                }
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io("locking", &lock_path, e).into())
                }
            }
            // The previous holder removes the file before unlocking; if we locked a file
            // that was unlinked meanwhile, the lock guards nothing: open the new one.
            if same_file(&file, &lock_path) {
                break file;
            }
        };
        if let Some(old) = read_info(&info_path) {
            stop_leftover_workers(&old.workers);
        }
        crate::tunnel::stop_leftover(&crate::tunnel::record_file(paths));
        // Half-written files of processes killed mid-write (their targets are intact).
        let dirs = [
            paths.config_dir().to_path_buf(),
            paths.state_dir().to_path_buf(),
            paths.sessions_dir(),
            paths.releases_dir(),
        ];
        let removed: usize = dirs
            .iter()
            .map(|d| remove_stale_temp_files(d, STALE_TEMP_AGE))
            .sum();
        if removed > 0 {
            tracing::info!(removed, "removed temporary files left by a killed process");
        }
        Ok(Self {
            lock_path,
            info_path,
            file,
            info: InstanceInfo {
                pid: std::process::id(),
                public_port: 0,
                status_port: 0,
                started_at: crate::protocol::now_ms(),
                workers: Vec::new(),
                runs_as: RunsAs::this_process(),
            },
        })
    }

    /// Publishes the ports once they are bound.
    pub fn set_ports(&mut self, public_port: u16, status_port: u16) -> Result<(), StoreError> {
        self.info.public_port = public_port;
        self.info.status_port = status_port;
        self.write()
    }

    /// Records the worker pids now running.
    pub fn set_workers(&mut self, workers: Vec<u32>) -> Result<(), StoreError> {
        if self.info.workers == workers {
            return Ok(());
        }
        self.info.workers = workers;
        self.write()
    }

    fn write(&self) -> Result<(), StoreError> {
        // Serializing a struct of integers cannot fail.
        let json = serde_json::to_vec_pretty(&self.info).unwrap_or_default();
        atomic_write(&self.info_path, &json)
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // Remove while still locked, so nobody reads a half-gone instance as running.
        let _ = std::fs::remove_file(&self.info_path);
        let _ = std::fs::remove_file(&self.lock_path);
        let _ = self.file.unlock();
    }
}

/// The running supervisor of `paths`, if any: its instance file, trusted only while
/// someone holds the lock.
pub fn running(paths: &Paths) -> Option<InstanceInfo> {
    let lock_path = paths.lock_file("supervisor");
    let file = File::open(&lock_path).ok()?;
    match file.try_lock_shared() {
        // Nobody holds it: whatever the file says is stale.
        Ok(()) => {
            let _ = file.unlock();
            None
        }
        Err(_) => read_info(&paths.instance_file()),
    }
}

/// "pid 123, public port 8765, status page http://127.0.0.1:8766".
pub fn describe(info: &InstanceInfo) -> String {
    format!(
        "pid {}, public port {}, status page http://127.0.0.1:{}",
        info.pid, info.public_port, info.status_port
    )
}

fn read_info(path: &Path) -> Option<InstanceInfo> {
    let text = std::fs::read(path).ok()?;
    serde_json::from_slice(&text).ok()
}

#[cfg(unix)]
fn same_file(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.ino() == b.ino() && a.dev() == b.dev(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// Workers exit by themselves when their supervisor's pipe closes, but one stuck in a
/// drain could still hold session files: stop any that remain. A pid is only signalled
/// if it still runs a supervised Chroxy worker (pids get reused).
fn stop_leftover_workers(pids: &[u32]) {
    let alive: Vec<u32> = pids
        .iter()
        .copied()
        .filter(|&p| is_supervised_worker(p))
        .collect();
    if alive.is_empty() {
        return;
    }
    tracing::warn!(
        ?alive,
        "stopping workers left behind by a supervisor that died"
    );
    let grace = Duration::from_secs(5);
    crate::process::stop_left_behind(&alive, Reach::Process, grace, is_supervised_worker);
}

fn is_supervised_worker(pid: u32) -> bool {
    // A zombie has an empty cmdline and is harmless.
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|raw| {
            let args: Vec<&[u8]> = raw.split(|&b| b == 0).collect();
            args.contains(&&b"worker"[..]) && args.contains(&&b"--supervised"[..])
        })
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_instance_is_refused_with_the_first_ones_details_and_nothing_is_left_after() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let mut first = Instance::acquire(&paths).unwrap();
        first.set_ports(18765, 18766).unwrap();
        let err = Instance::acquire(&paths).unwrap_err().to_string();
        assert!(
            err.contains(&format!("pid {}", std::process::id()))
                && err.contains("18765")
                && err.contains("18766")
                && err.contains("Ctrl-C in its terminal"),
            "{err}"
        );
        assert_eq!(running(&paths).map(|i| i.public_port), Some(18765));
        drop(first);
        assert_eq!(running(&paths), None);
        assert!(!paths.instance_file().exists());
        assert!(!paths.lock_file("supervisor").exists());
        let again = Instance::acquire(&paths);
        assert!(again.is_ok(), "free again after the first one stopped");
    }

    #[test]
    fn a_stale_instance_file_without_a_lock_holder_means_not_running() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        std::fs::write(
            paths.instance_file(),
            br#"{"pid":1,"publicPort":1,"statusPort":2,"startedAt":0,"workers":[1]}"#,
        )
        .unwrap();
        std::fs::write(paths.lock_file("supervisor"), b"").unwrap();
        assert_eq!(running(&paths), None);
        // pid 1 is not a Chroxy worker: it must not be signalled (we would die trying).
        let _held = Instance::acquire(&paths).unwrap();
    }

    #[test]
    fn the_one_refused_is_told_how_to_stop_the_service_or_the_tray_app_holding_the_home() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let mut first = Instance::acquire(&paths).unwrap();
        for (runs_as, said) in [
            (RunsAs::Service, "systemctl --user stop chroxy"),
            (RunsAs::TrayApp, "Quit Chroxy in its tray menu"),
        ] {
            first.info.runs_as = runs_as;
            first.set_ports(1, 2).unwrap();
            let err = Instance::acquire(&paths).unwrap_err().to_string();
            assert!(err.contains(said), "{err}");
        }
    }
}
