//! Inter-process advisory locks (flock) for read-modify-write of shared files. The
//! kernel drops a lock when its holder dies, so no stale-PID guessing is ever needed.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};

use super::{ensure_private_dir, StoreError};

/// An open lock file; [`FileLock::exclusive`] blocks until the lock is held and runs the
/// closure under it.
pub struct FileLock {
    path: PathBuf,
    lock: fd_lock::RwLock<File>,
}

impl FileLock {
    /// Opens (creating) the lock file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .read(true)
            .write(true)
            .open(path)
            .map_err(|e| StoreError::io("opening lock file", path, e))?;
        Ok(Self {
            path: path.to_path_buf(),
            lock: fd_lock::RwLock::new(file),
        })
    }

    /// Runs `f` while holding the exclusive lock. Blocking: call from
    /// `spawn_blocking` in async code.
    pub fn exclusive<T>(&mut self, f: impl FnOnce() -> T) -> Result<T, StoreError> {
        let path = self.path.clone();
        let _guard = self
            .lock
            .write()
            .map_err(|e| StoreError::io("locking", path, e))?;
        Ok(f())
    }
}
