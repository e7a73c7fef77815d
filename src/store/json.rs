//! JSON files that several Chroxy processes read and change — the device registry, the
//! "Always" rules: read whole, changed under the inter-process lock, written atomically
//! and only when something changed. One copy of that sequence, so no file gets a step
//! of it wrong (a write without the lock loses another process's change).

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{atomic_write, FileLock, StoreError};

/// The file at `path` as `F`; a missing file is `F::default()`. The inner error is the
/// parser's, for the caller to name its file as invalid (and leave it as it is).
pub fn read_json<F: DeserializeOwned + Default>(
    path: &Path,
) -> Result<Result<F, serde_json::Error>, StoreError> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(serde_json::from_slice(&bytes)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Ok(F::default())),
        Err(e) => Err(StoreError::io("reading", path, e)),
    }
}

/// Read-modify-write of `path` under the lock at `lock`: `load` reads it, `change`
/// changes it, and it is written only if it changed and `change` succeeded (nothing
/// half-decided reaches the disk).
pub fn modify_json<F, T, E>(
    path: &Path,
    lock: &Path,
    load: impl FnOnce() -> Result<F, E>,
    change: impl FnOnce(&mut F) -> Result<T, E>,
) -> Result<T, E>
where
    F: Clone + PartialEq + Serialize,
    E: From<StoreError>,
{
    let mut held = FileLock::open(lock)?;
    held.exclusive(|| {
        let mut file = load()?;
        let before = file.clone();
        let out = change(&mut file)?;
        if file != before {
            // Plain data (strings, numbers, maps) always serializes.
            let bytes = serde_json::to_vec_pretty(&file).unwrap_or_default();
            atomic_write(path, &bytes)?;
        }
        Ok(out)
    })?
}
