//! Where Chroxy keeps its files, and how it writes them so a crash or a full disk never
//! leaves one half-written.
//!
//! Every path comes from one [`Paths`] value; nothing else in the library asks the OS
//! for a home directory. `CHROXY_HOME` (resolved by the shells) relocates everything at
//! once, which is how every test keeps away from the real home directory.

mod atomic;
mod json;
mod lock;
mod paths;

pub use atomic::{atomic_write, atomic_write_with, ensure_private_dir, remove_stale_temp_files};
pub use json::{modify_json, read_json};
pub use lock::FileLock;
pub use paths::Paths;

use std::path::PathBuf;

/// Failures of the file store. Each names the path so the user knows what to look at.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// No home directory could be found and `CHROXY_HOME` was not set.
    #[error(
        "cannot find a home directory for Chroxy's files; set CHROXY_HOME to a writable directory"
    )]
    NoHome,
    /// Reading, writing or locking failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("writing", "locking", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The OS error (e.g. "No space left on device").
        #[source]
        source: std::io::Error,
    },
}

impl StoreError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
        source: std::io::Error,
    ) -> Self {
        StoreError::Io {
            action,
            path: path.into(),
            source,
        }
    }
}
