//! Atomic, private file writes: temp file in the same directory, fsync, rename, fsync
//! the directory. A reader sees the old file or the new one, never a torn one, and a
//! failed write (full disk, kill -9) leaves the old file untouched.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

use super::StoreError;

/// Creates `dir` (and parents) readable by the owner only.
pub fn ensure_private_dir(dir: &Path) -> Result<(), StoreError> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(|e| StoreError::io("creating directory", dir, e))
}

/// Temporary files of `atomic_write` start with this.
const TEMP_PREFIX: &str = ".tmp-";

/// Removes temporary files that a killed process left in `dir` (not recursive). Only
/// files older than `min_age` go: a younger one may belong to a write in progress.
pub fn remove_stale_temp_files(dir: &Path, min_age: std::time::Duration) -> usize {
    let mut removed = 0;
    for entry in fs::read_dir(dir).into_iter().flatten().flatten() {
        let stale = entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX)
            && entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age >= min_age);
        if stale && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

/// Replaces `path` with `bytes` atomically, mode 0600.
pub fn atomic_write(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    atomic_write_with(path, |out| out.write_all(bytes))
}

/// Replaces `path` atomically, mode 0600, with what `write` writes (buffered): large
/// values are streamed to the file instead of being rendered in memory first.
pub fn atomic_write_with(
    path: &Path,
    write: impl FnOnce(&mut dyn Write) -> io::Result<()>,
) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    ensure_private_dir(dir)?;
    // tempfile creates the file 0600 and removes it again if we bail out early.
    let tmp = tempfile::Builder::new()
        .prefix(TEMP_PREFIX)
        .tempfile_in(dir)
        .map_err(|e| StoreError::io("creating a temporary file in", dir, e))?;
    let mut out = io::BufWriter::new(tmp);
    write(&mut out)
        .and_then(|()| out.flush())
        .map_err(|e| StoreError::io("writing", path, e))?;
    let tmp = out
        .into_inner()
        .map_err(|e| StoreError::io("writing", path, e.into_error()))?;
    tmp.as_file()
        .sync_all()
        .map_err(|e| StoreError::io("syncing", path, e))?;
    tmp.persist(path)
        .map_err(|e| StoreError::io("replacing", path, e.error))?;
    // The rename is durable only once the directory entry is on disk too.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing directory", dir, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_temp_files_go_and_everything_else_stays() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(".tmp-abc"), b"half a write").unwrap();
        fs::write(dir.path().join("session.json"), b"{}").unwrap();
        assert_eq!(
            remove_stale_temp_files(dir.path(), std::time::Duration::from_secs(3600)),
            0,
            "too young: may be a write in progress"
        );
        assert_eq!(
            remove_stale_temp_files(dir.path(), std::time::Duration::ZERO),
            1
        );
        assert!(!dir.path().join(".tmp-abc").exists());
        assert!(dir.path().join("session.json").exists());
    }

    #[test]
    fn writes_replace_whole_files_with_private_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        atomic_write(&path, b"one").unwrap();
        atomic_write(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            assert_eq!(
                fs::metadata(&path).unwrap().permissions().mode() & 0o777,
                0o600
            );
        }
        let leftovers: Vec<_> = fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp-"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temp files left behind: {leftovers:?}"
        );
    }

    #[test]
    fn a_write_that_fails_half_way_leaves_the_old_file_and_no_temp_file() {
        /// A disk that fills up after `room` bytes.
        struct FillsUp<'a> {
            out: &'a mut dyn Write,
            room: usize,
        }
        impl Write for FillsUp<'_> {
            fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
                if buf.len() > self.room {
                    return Err(io::ErrorKind::StorageFull.into());
                }
                self.room -= buf.len();
                self.out.write(buf)
            }
            fn flush(&mut self) -> io::Result<()> {
                self.out.flush()
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session.json");
        atomic_write(&path, b"the old state").unwrap();
        // Streamed the way session records are, through serde_json.
        let big = vec!["a line of history"; 100_000];
        let err = atomic_write_with(&path, |out| {
            let out = FillsUp {
                out,
                room: 64 * 1024,
            };
            serde_json::to_writer(out, &big).map_err(io::Error::from)
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("session.json"),
            "the error names the file: {err}"
        );
        match &err {
            StoreError::Io { source, .. } => assert_eq!(
                source.kind(),
                io::ErrorKind::StorageFull,
                "the OS error survives serde: {err}"
            ),
            other => panic!("not an I/O error: {other}"),
        }
        assert_eq!(fs::read(&path).unwrap(), b"the old state");
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["session.json"], "only the old file is left");
    }
}
