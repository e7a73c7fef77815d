//! The release store: `releases/<id>/` with a worker binary and its manifest, and two
//! pointers, `current` (what the supervisor runs) and `known_good` (what it falls back
//! to). Rollback is a pointer switch plus a restart: nothing is rebuilt or reinstalled.
//! The installed binary is release "0", so there is always something to fall back to.
//!
//! Every write is atomic and every read-modify-write holds the store's advisory lock,
//! so `chroxy deploy` in a terminal and a running supervisor never trample each other.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use super::release_id::{ReleaseId, INSTALLED};
use super::status::{ReleaseInfo, ReleasesStatus};
use crate::store::{atomic_write, ensure_private_dir, FileLock, Paths, StoreError};

/// File name of a stored release's binary.
const BINARY: &str = "chroxy";
const MANIFEST: &str = "manifest.json";
/// Prefix of a release directory still being copied.
const PARTIAL: &str = ".partial-";
/// A binary that does not say its version within this is not a Chroxy release.
const VERSION_TIMEOUT: Duration = Duration::from_secs(5);

/// One release as its manifest describes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    /// Its id.
    pub id: ReleaseId,
    /// What `chroxy --version` says.
    pub version: String,
    /// Git commit it was built from.
    pub commit: String,
    /// The binary's modification time, ms since the epoch.
    pub built_at: u64,
    /// Hex sha256 of the binary.
    pub sha256: String,
    /// When it was added, ms since the epoch.
    pub added_at: u64,
    /// The binary to run.
    pub binary: PathBuf,
    /// Size in bytes (with `built_at`, tells whether the installed binary changed).
    #[serde(default)]
    pub size: u64,
    /// How `chroxy deploy --source` made it; `None` for a binary deployed as it was.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<BuiltFrom>,
}

/// What a release built from a source tree records of its making: what was built, in
/// what state, and what vouched for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuiltFrom {
    /// The source tree's directory.
    pub dir: PathBuf,
    /// The commit checked out (for a dirty tree: a snapshot commit of its changes on
    /// top of `HEAD`, which is `base`).
    pub commit: String,
    /// The tree had uncommitted changes, deployed with `--allow-dirty`.
    pub dirty: bool,
    /// With `dirty`, the commit the changes were made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// The check command and its outcome: `passed`, or `skipped` when none is set.
    pub check: String,
    /// How long the build took, in milliseconds.
    pub build_ms: u64,
    /// How long the check took, in milliseconds.
    pub check_ms: u64,
}

impl BuiltFrom {
    /// One line for a person: `abc123456789 (dirty), check passed, built in 83 s`.
    pub fn describe(&self) -> String {
        format!(
            "{}{}, check {}, built in {} s",
            self.commit.get(..12).unwrap_or(&self.commit),
            if self.dirty { " (dirty)" } else { "" },
            self.check,
            self.build_ms.div_ceil(1000)
        )
    }
}

impl From<&Manifest> for ReleaseInfo {
    fn from(m: &Manifest) -> Self {
        ReleaseInfo {
            id: m.id.clone(),
            version: m.version.clone(),
            commit: m.commit.clone(),
            built_at: m.built_at,
            sha256: m.sha256.clone(),
            damaged: None,
            source: m.source.clone(),
        }
    }
}

impl ReleaseInfo {
    /// A release that cannot be described (its manifest is unreadable or missing).
    fn damaged(id: &str, why: String) -> Self {
        ReleaseInfo {
            id: id.into(),
            version: String::new(),
            commit: String::new(),
            built_at: 0,
            sha256: String::new(),
            damaged: Some(why),
            source: None,
        }
    }
}

/// Why the store refused.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// Reading or writing the store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Not a Chroxy binary (or not runnable).
    #[error("{path} is not a chroxy binary: {detail}")]
    NotChroxy {
        /// The file offered.
        path: PathBuf,
        /// What went wrong when asking it for its version.
        detail: String,
    },
    /// No such release.
    #[error("there is no release `{0}`; `chroxy releases` lists them")]
    Unknown(String),
    /// The binary no longer matches its manifest.
    #[error("release `{0}` was refused: its binary does not match the checksum in its manifest (changed or damaged after it was added); deploy it again")]
    ChecksumMismatch(String),
    /// A manifest that cannot be read.
    #[error(
        "the manifest of release `{id}` is damaged ({detail}); remove {dir} and deploy it again"
    )]
    BadManifest {
        /// The release.
        id: String,
        /// Its directory.
        dir: PathBuf,
        /// The parse error.
        detail: String,
    },
    /// A release directory without its manifest (an interrupted or manual copy).
    #[error("release `{id}` has no manifest; remove {dir} and deploy it again")]
    MissingManifest {
        /// The release.
        id: String,
        /// Its directory.
        dir: PathBuf,
    },
    /// The binary a manifest names is gone.
    #[error("the binary of release `{id}` is missing ({path}); deploy it again")]
    MissingBinary {
        /// The release.
        id: String,
        /// Where the manifest says it is.
        path: PathBuf,
    },
}

/// The store under `paths.releases_dir()`.
#[derive(Debug, Clone)]
pub struct Releases {
    dir: PathBuf,
    lock: PathBuf,
}

impl Releases {
    /// The store of `paths` (nothing is created until it is written).
    pub fn open(paths: &Paths) -> Self {
        Self {
            dir: paths.releases_dir(),
            lock: paths.lock_file("releases"),
        }
    }

    fn locked<T>(&self, f: impl FnOnce() -> Result<T, ReleaseError>) -> Result<T, ReleaseError> {
        ensure_private_dir(&self.dir)?;
        FileLock::open(&self.lock)?.exclusive(f)?
    }

    /// Registers the installed binary as release "0" (in place, not copied), re-hashing
    /// it only when its size or time changed (an upgrade by the package manager), and
    /// points `current` and `known_good` at it if they point nowhere yet. Removes what
    /// an interrupted `add` left.
    pub fn ensure_installed(&self, installed: &Path) -> Result<Manifest, ReleaseError> {
        self.locked(|| {
            self.remove_partials();
            let (size, built_at) = stat(installed)?;
            let manifest = match self.read_manifest(INSTALLED) {
                Ok(m) if m.binary == installed && m.size == size && m.built_at == built_at => m,
                _ => {
                    let m = describe(installed, INSTALLED.into(), installed.to_path_buf())?;
                    let dir = self.dir.join(INSTALLED);
                    ensure_private_dir(&dir)?;
                    write_manifest(&dir, &m)?;
                    m
                }
            };
            for pointer in ["current", "known_good"] {
                if self.read_pointer(pointer).is_none() {
                    atomic_write(&self.dir.join(pointer), INSTALLED.as_bytes())?;
                }
            }
            Ok(manifest)
        })
    }

    /// Copies `binary` in as a new release (pointers unchanged). A half-copied release
    /// never appears: it is built in a temporary directory and renamed into place.
    pub fn add(&self, binary: &Path) -> Result<Manifest, ReleaseError> {
        self.add_built(binary, None)
    }

    /// [`Releases::add`] for a binary built from a source tree, recorded in its manifest.
    pub fn add_built(
        &self,
        binary: &Path,
        source: Option<BuiltFrom>,
    ) -> Result<Manifest, ReleaseError> {
        let binary = binary.canonicalize().map_err(|e| ReleaseError::NotChroxy {
            path: binary.to_path_buf(),
            detail: e.to_string(),
        })?;
        // Ask it first: a file that is not Chroxy never enters the store.
        let (version, commit) = version_of(&binary)?;
        self.locked(|| {
            let next = self
                .ids()?
                .iter()
                .filter_map(|id| id.split('-').next()?.parse::<u64>().ok())
                .max()
                .unwrap_or(0)
                + 1;
            let partial = tempfile::Builder::new()
                .prefix(PARTIAL)
                .tempdir_in(&self.dir)
                .map_err(|e| StoreError::io("creating a directory in", &self.dir, e))?;
            let copy = partial.path().join(BINARY);
            std::fs::copy(&binary, &copy)
                .map_err(|e| StoreError::io("copying the release binary to", &copy, e))?;
            File::open(&copy)
                .and_then(|f| f.sync_all())
                .map_err(|e| StoreError::io("syncing", &copy, e))?;
            set_mode(&copy, 0o700)?;
            let sha256 = hash(&copy)?;
            let id = format!("{next}-{}", &sha256[..8]);
            let dir = self.dir.join(&id);
            let (size, built_at) = stat(&binary)?;
            let manifest = Manifest {
                id: id.as_str().into(),
                version: version.clone(),
                commit: commit.clone(),
                built_at,
                sha256,
                added_at: crate::protocol::now_ms(),
                binary: dir.join(BINARY),
                size,
                source,
            };
            write_manifest(partial.path(), &manifest)?;
            let partial = partial.keep();
            std::fs::rename(&partial, &dir)
                .map_err(|e| StoreError::io("moving the new release into", &dir, e))?;
            sync_dir(&self.dir)?;
            tracing::info!(release = %id, %version, %commit, "release added");
            Ok(manifest)
        })
    }

    /// Every release, "0" first, then in the order they were added. A damaged one (its
    /// manifest unreadable or missing, its binary missing or resized) is listed with
    /// why, never left out and never an error: one broken old release must not hide
    /// the others, nor stop a supervisor from starting. Only a checksum needs
    /// [`Releases::verify`] (it reads the whole binary).
    pub fn list(&self) -> Result<Vec<ReleaseInfo>, ReleaseError> {
        let mut ids = self.ids()?;
        ids.sort_by_key(|id| ordinal(id));
        Ok(ids
            .iter()
            .map(|id| match self.check(id) {
                Ok(m) => ReleaseInfo::from(&m),
                Err(err) => ReleaseInfo::damaged(id, err.to_string()),
            })
            .collect())
    }

    /// One release's manifest.
    pub fn get(&self, id: &str) -> Result<Manifest, ReleaseError> {
        self.read_manifest(valid(id)?)
    }

    /// The binary of `id`, after checking it still matches its manifest.
    pub fn verify(&self, id: &str) -> Result<PathBuf, ReleaseError> {
        let m = self.check(valid(id)?)?;
        if hash(&m.binary)? != m.sha256 {
            return Err(ReleaseError::ChecksumMismatch(m.id.to_string()));
        }
        Ok(m.binary)
    }

    /// The manifest of `id`, if it reads and its binary is there with the size it had.
    fn check(&self, id: &str) -> Result<Manifest, ReleaseError> {
        let m = self.read_manifest(id)?;
        match std::fs::metadata(&m.binary) {
            Ok(meta) if meta.is_file() && (m.size == 0 || meta.len() == m.size) => Ok(m),
            Ok(meta) if meta.is_file() => Err(ReleaseError::ChecksumMismatch(m.id.to_string())),
            _ => Err(ReleaseError::MissingBinary {
                id: m.id.to_string(),
                path: m.binary,
            }),
        }
    }

    /// The release the supervisor runs.
    pub fn current(&self) -> Result<ReleaseId, ReleaseError> {
        Ok(self
            .read_pointer("current")
            .map_or_else(ReleaseId::installed, ReleaseId::from))
    }

    /// The release to fall back to.
    pub fn known_good(&self) -> Result<ReleaseId, ReleaseError> {
        Ok(self
            .read_pointer("known_good")
            .map_or_else(ReleaseId::installed, ReleaseId::from))
    }

    /// Points `current` at `id` (which must exist, undamaged).
    pub fn set_current(&self, id: &str) -> Result<(), ReleaseError> {
        self.set_pointer("current", id)
    }

    /// Points `known_good` at `id` (which must exist, undamaged).
    pub fn set_known_good(&self, id: &str) -> Result<(), ReleaseError> {
        self.set_pointer("known_good", id)
    }

    /// Removes old releases: all but the newest `keep`, `0` and those in `protect`
    /// (current, known-good, any a worker runs). Each is first renamed away, so one
    /// cut short is never seen as a damaged release (the next start removes what is
    /// left of it). Returns the ids removed.
    pub fn prune(&self, keep: usize, protect: &[&str]) -> Result<Vec<String>, ReleaseError> {
        self.locked(|| {
            let doomed = prune_plan(self.ids()?, keep, protect);
            for id in &doomed {
                let dir = self.dir.join(id);
                let away = self.dir.join(format!("{PARTIAL}{id}"));
                std::fs::rename(&dir, &away)
                    .map_err(|e| StoreError::io("moving an old release out of", &dir, e))?;
                std::fs::remove_dir_all(&away).map_err(|e| StoreError::io("removing", &away, e))?;
                tracing::info!(release = %id, "old release removed");
            }
            sync_dir(&self.dir)?;
            Ok(doomed)
        })
    }

    /// What the status page shows.
    pub fn status(&self) -> Result<ReleasesStatus, ReleaseError> {
        Ok(ReleasesStatus {
            current: Some(self.current()?),
            known_good: Some(self.known_good()?),
            list: self.list()?,
        })
    }

    fn set_pointer(&self, name: &str, id: &str) -> Result<(), ReleaseError> {
        self.locked(|| {
            self.check(valid(id)?)?;
            atomic_write(&self.dir.join(name), id.as_bytes())?;
            Ok(())
        })
    }

    fn read_pointer(&self, name: &str) -> Option<String> {
        let id = std::fs::read_to_string(self.dir.join(name)).ok()?;
        let id = id.trim();
        valid(id).ok().map(str::to_owned)
    }

    fn ids(&self) -> Result<Vec<String>, ReleaseError> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(vec![]),
            Err(e) => return Err(StoreError::io("listing", &self.dir, e).into()),
        };
        // Every release directory, with or without a readable manifest: a damaged one
        // is still a release (listed as damaged, its number never reused).
        Ok(entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|name| valid(name).is_ok())
            .collect())
    }

    fn read_manifest(&self, id: &str) -> Result<Manifest, ReleaseError> {
        let dir = self.dir.join(id);
        let text = match std::fs::read(dir.join(MANIFEST)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && dir.is_dir() => {
                return Err(ReleaseError::MissingManifest {
                    id: id.to_owned(),
                    dir,
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ReleaseError::Unknown(id.to_owned()))
            }
            Err(e) => return Err(StoreError::io("reading", dir.join(MANIFEST), e).into()),
        };
        serde_json::from_slice(&text).map_err(|e| ReleaseError::BadManifest {
            id: id.to_owned(),
            dir,
            detail: e.to_string(),
        })
    }

    fn remove_partials(&self) {
        for entry in std::fs::read_dir(&self.dir).into_iter().flatten().flatten() {
            if entry.file_name().to_string_lossy().starts_with(PARTIAL) {
                tracing::info!(path = %entry.path().display(), "removing an interrupted release copy");
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

impl ReleasesStatus {
    /// What `chroxy releases` prints: a line per release, oldest first, with its marks
    /// (current, known-good); a damaged one says why.
    pub fn to_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if self.list.is_empty() {
            out.push_str("no releases yet (the first `chroxy start` registers the installed binary as release 0)\n");
        }
        for r in &self.list {
            let mut marks = Vec::new();
            if self.current.as_deref() == Some(r.id.as_str()) {
                marks.push("current");
            }
            if self.known_good.as_deref() == Some(r.id.as_str()) {
                marks.push("known-good");
            }
            let marks = marks.join(", ");
            // Writing to a String cannot fail.
            let _ = match &r.damaged {
                Some(why) => writeln!(out, "{:<12} DAMAGED: {why}  {marks}", r.id),
                None => writeln!(
                    out,
                    "{:<12} chroxy {:<10} {:<14} sha256 {}  {marks}",
                    r.id,
                    r.version,
                    r.commit,
                    short_sha(&r.sha256)
                ),
            };
            if let Some(source) = &r.source {
                let _ = writeln!(
                    out,
                    "{:<12} from {}: {}",
                    "",
                    source.dir.display(),
                    source.describe()
                );
            }
        }
        out
    }
}

/// The first 12 hex digits of a checksum: enough for a person to tell releases apart.
pub fn short_sha(sha256: &str) -> &str {
    sha256.get(..12).unwrap_or(sha256)
}

/// Which of `ids` a prune removes: all but the newest `keep` (by number), release 0
/// and `protect`; oldest first.
fn prune_plan(mut ids: Vec<String>, keep: usize, protect: &[&str]) -> Vec<String> {
    ids.retain(|id| id != INSTALLED);
    ids.sort_by_key(|id| std::cmp::Reverse(ordinal(id)));
    let mut doomed: Vec<String> = ids
        .into_iter()
        .skip(keep)
        .filter(|id| !protect.contains(&id.as_str()))
        .collect();
    doomed.reverse();
    doomed
}

/// A release's number, for ordering ("0" first, then as added).
fn ordinal(id: &str) -> u64 {
    id.split('-')
        .next()
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or(u64::MAX)
}

/// Ids come from people and URLs: never let one name a path outside the store.
fn valid(id: &str) -> Result<&str, ReleaseError> {
    let ok = !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(id)
    } else {
        Err(ReleaseError::Unknown(id.chars().take(64).collect()))
    }
}

fn describe(binary: &Path, id: String, run: PathBuf) -> Result<Manifest, ReleaseError> {
    let (version, commit) = version_of(binary)?;
    let (size, built_at) = stat(binary)?;
    Ok(Manifest {
        id: id.into(),
        version,
        commit,
        built_at,
        sha256: hash(binary)?,
        added_at: crate::protocol::now_ms(),
        binary: run,
        size,
        source: None,
    })
}

fn write_manifest(dir: &Path, m: &Manifest) -> Result<(), ReleaseError> {
    // A struct of strings and integers always serializes.
    let json = serde_json::to_vec_pretty(m).unwrap_or_default();
    atomic_write(&dir.join(MANIFEST), &json)?;
    Ok(())
}

/// `chroxy --version` prints `chroxy 0.1.0 (2e00c7993bd5)`.
fn version_of(binary: &Path) -> Result<(String, String), ReleaseError> {
    let not = |detail: String| ReleaseError::NotChroxy {
        path: binary.to_path_buf(),
        detail,
    };
    let out = crate::process::version_line(binary, VERSION_TIMEOUT).map_err(not)?;
    let line = out.as_str();
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some("chroxy"), Some(version), Some(commit))
            if commit.starts_with('(') && commit.ends_with(')') =>
        {
            Ok((
                version.to_owned(),
                commit.trim_matches(['(', ')']).to_owned(),
            ))
        }
        _ => Err(not(format!(
            "`--version` printed {:?}, not `chroxy <version> (<commit>)`",
            line.chars().take(80).collect::<String>()
        ))),
    }
}

fn hash(path: &Path) -> Result<String, ReleaseError> {
    let mut file = File::open(path).map_err(|e| StoreError::io("reading", path, e))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(|e| StoreError::io("reading", path, e))?;
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

fn stat(path: &Path) -> Result<(u64, u64), ReleaseError> {
    let meta = std::fs::metadata(path).map_err(|e| ReleaseError::NotChroxy {
        path: path.to_path_buf(),
        detail: e.to_string(),
    })?;
    let mtime = meta
        .modified()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .unwrap_or_default();
    Ok((meta.len(), mtime))
}

fn set_mode(path: &Path, mode: u32) -> Result<(), ReleaseError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| StoreError::io("setting the mode of", path, e))?;
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

fn sync_dir(dir: &Path) -> Result<(), ReleaseError> {
    #[cfg(unix)]
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| StoreError::io("syncing", dir, e))?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_release_list_marks_current_and_known_good_and_says_why_one_is_damaged() {
        let empty = ReleasesStatus::default().to_text();
        assert!(empty.starts_with("no releases yet"), "{empty}");
        let info = |id: &str, damaged: Option<&str>| ReleaseInfo {
            id: id.into(),
            version: "0.1.0".into(),
            commit: "abcdef123456".into(),
            built_at: 0,
            sha256: "0123456789abcdef".into(),
            damaged: damaged.map(Into::into),
            source: None,
        };
        let status = ReleasesStatus {
            current: Some("2-aa".into()),
            known_good: Some("0".into()),
            list: vec![
                info("0", None),
                info("1-bb", Some("its binary is missing")),
                ReleaseInfo {
                    source: Some(BuiltFrom {
                        dir: "/src/chroxy".into(),
                        commit: "fedcba9876543210".into(),
                        dirty: true,
                        base: Some("abcdef123456".into()),
                        check: "passed".into(),
                        build_ms: 82_100,
                        check_ms: 20_000,
                    }),
                    ..info("2-aa", None)
                },
            ],
        };
        assert_eq!(
            status.to_text(),
            "0            chroxy 0.1.0      abcdef123456   sha256 0123456789ab  known-good\n\
             1-bb         DAMAGED: its binary is missing  \n\
             2-aa         chroxy 0.1.0      abcdef123456   sha256 0123456789ab  current\n\
             \x20            from /src/chroxy: fedcba987654 (dirty), check passed, built in 83 s\n"
        );
    }

    /// A shell script that answers `--version` like chroxy.
    fn fake_chroxy(dir: &Path, name: &str, version: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho 'chroxy {version} (abcdef123456)'\n"),
        )
        .unwrap();
        set_mode(&path, 0o755).unwrap();
        path
    }

    fn store() -> (tempfile::TempDir, Releases, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let releases = Releases::open(&Paths::under(dir.path().join("home")));
        let installed = fake_chroxy(dir.path(), "installed", "1.0.0");
        (dir, releases, installed)
    }

    #[test]
    fn the_installed_binary_is_release_zero_and_both_pointers_start_there() {
        let (dir, r, installed) = store();
        let m = r.ensure_installed(&installed).unwrap();
        assert_eq!((m.id.as_str(), m.version.as_str()), ("0", "1.0.0"));
        assert_eq!(m.commit, "abcdef123456");
        assert_eq!(m.binary, installed, "run in place, not copied");
        assert_eq!(r.current().unwrap(), "0");
        assert_eq!(r.known_good().unwrap(), "0");
        // Unchanged binary: the manifest is not rewritten (no re-hash).
        let again = r.ensure_installed(&installed).unwrap();
        assert_eq!(again.added_at, m.added_at);
        // Upgraded in place: registered anew.
        fake_chroxy(dir.path(), "installed", "1.10.0"); // another size
        let upgraded = r.ensure_installed(&installed).unwrap();
        assert_eq!(upgraded.version, "1.10.0");
        assert_ne!(upgraded.sha256, m.sha256);
        r.verify("0").unwrap();
    }

    #[test]
    fn added_releases_are_exact_executable_copies_with_increasing_ids() {
        let (dir, r, installed) = store();
        r.ensure_installed(&installed).unwrap();
        let new = fake_chroxy(dir.path(), "new", "2.0.0");
        let a = r.add(&new).unwrap();
        let b = r.add(&new).unwrap();
        assert!(
            a.id.starts_with("1-") && b.id.starts_with("2-"),
            "{a:?} {b:?}"
        );
        assert_eq!(
            std::fs::read(&a.binary).unwrap(),
            std::fs::read(&new).unwrap()
        );
        assert_eq!(r.verify(&a.id).unwrap(), a.binary);
        assert_eq!(r.get(&a.id).unwrap(), a, "get reads back what add wrote");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&a.binary).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o700, "owner-only, executable");
        }
        // It runs from the store.
        let out = std::process::Command::new(&a.binary)
            .arg("--version")
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&out.stdout).starts_with("chroxy 2.0.0"));
        let ids: Vec<ReleaseId> = r.list().unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(ids, ["0".into(), a.id.clone(), b.id.clone()]);
        assert_eq!(r.current().unwrap(), "0", "adding moves no pointer");
        r.set_current(&b.id).unwrap();
        r.set_known_good(&a.id).unwrap();
        let s = r.status().unwrap();
        assert_eq!(s.current.as_deref(), Some(b.id.as_str()));
        assert_eq!(s.known_good.as_deref(), Some(a.id.as_str()));
        assert_eq!(s.list.len(), 3);
        // The next supervisor start must not undo a deploy or a promotion.
        r.ensure_installed(&installed).unwrap();
        assert_eq!(r.current().unwrap(), b.id);
        assert_eq!(r.known_good().unwrap(), a.id);
    }

    #[test]
    fn what_is_not_chroxy_never_enters_and_unknown_or_hostile_ids_are_refused() {
        let (dir, r, installed) = store();
        r.ensure_installed(&installed).unwrap();
        let other = dir.path().join("other");
        std::fs::write(&other, "#!/bin/sh\necho hello\n").unwrap();
        set_mode(&other, 0o755).unwrap();
        let err = r.add(&other).unwrap_err().to_string();
        assert!(
            err.contains("not a chroxy binary") && err.contains("hello"),
            "{err}"
        );
        let err = r.add(&dir.path().join("missing")).unwrap_err().to_string();
        assert!(err.contains("missing"), "{err}");
        assert_eq!(r.list().unwrap().len(), 1);
        for id in ["9-nothere", "../0", "", "a/b"] {
            assert!(
                matches!(r.set_current(id), Err(ReleaseError::Unknown(_))),
                "{id}"
            );
            assert!(
                matches!(r.verify(id), Err(ReleaseError::Unknown(_))),
                "{id}"
            );
        }
    }

    #[test]
    fn a_changed_binary_fails_verification() {
        let (dir, r, installed) = store();
        r.ensure_installed(&installed).unwrap();
        let m = r.add(&fake_chroxy(dir.path(), "new", "2.0.0")).unwrap();
        std::fs::write(&m.binary, "#!/bin/sh\necho 'chroxy 6.6.6 (evil)'\n").unwrap();
        assert!(
            matches!(r.verify(&m.id), Err(ReleaseError::ChecksumMismatch(id)) if m.id == id.as_str())
        );
    }

    #[test]
    fn an_interrupted_add_leaves_nothing_visible_and_is_cleaned_up() {
        let (_dir, r, installed) = store();
        r.ensure_installed(&installed).unwrap();
        let partial = r.dir.join(format!("{PARTIAL}xyz"));
        std::fs::create_dir_all(&partial).unwrap();
        std::fs::write(partial.join(BINARY), b"half").unwrap();
        assert_eq!(r.list().unwrap().len(), 1, "no manifest, no release");
        r.ensure_installed(&installed).unwrap();
        assert!(!partial.exists());
    }

    #[test]
    fn damaged_releases_are_listed_as_damaged_and_never_hide_the_others() {
        let (dir, r, installed) = store();
        r.ensure_installed(&installed).unwrap();
        let new = fake_chroxy(dir.path(), "new", "2.0.0");
        let garbled = r.add(&new).unwrap();
        let stripped = r.add(&new).unwrap();
        let resized = r.add(&new).unwrap();
        let intact = r.add(&new).unwrap();
        std::fs::write(r.dir.join(garbled.id.as_str()).join(MANIFEST), b"{not json").unwrap();
        std::fs::remove_file(&stripped.binary).unwrap();
        std::fs::write(&resized.binary, b"#!/bin/sh\n").unwrap();
        std::fs::create_dir(r.dir.join("9-nomanifest")).unwrap();
        let listed = r.status().unwrap().list;
        let damage: Vec<(&str, Option<&str>)> = listed
            .iter()
            .map(|i| (i.id.as_str(), i.damaged.as_deref()))
            .collect();
        assert_eq!(damage.len(), 6, "{damage:?}");
        assert_eq!(damage[0], ("0", None));
        for (id, what) in [
            (&garbled.id, "manifest"),
            (&stripped.id, "missing"),
            (&resized.id, "checksum"),
            (&"9-nomanifest".into(), "no manifest"),
        ] {
            let why = damage
                .iter()
                .find(|(i, _)| *i == id.as_str())
                .and_then(|(_, d)| *d)
                .unwrap_or_else(|| panic!("{id} not marked: {damage:?}"));
            assert!(why.contains(what) && why.contains(id.as_str()), "{why}");
            assert!(r.verify(id).is_err(), "{id} must not run");
            assert!(r.set_current(id).is_err(), "{id} must not become current");
        }
        assert!(damage.contains(&(intact.id.as_str(), None)));
        // Its number is never given out again.
        assert!(r.add(&new).unwrap().id.starts_with("10-"));
    }

    #[test]
    fn a_prune_keeps_the_newest_release_zero_current_and_known_good() {
        let ids = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let all = ids(&["0", "1-a", "2-b", "3-c", "4-d", "5-e", "6-f", "7-g"]);
        assert_eq!(prune_plan(all.clone(), 5, &[]), ids(&["1-a", "2-b"]));
        assert_eq!(prune_plan(all.clone(), 5, &["1-a", "0"]), ids(&["2-b"]));
        assert_eq!(
            prune_plan(all.clone(), 2, &["4-d"]),
            ids(&["1-a", "2-b", "3-c", "5-e"])
        );
        assert_eq!(
            prune_plan(all.clone(), 0, &["7-g"]).len(),
            6,
            "0 and 7-g stay"
        );
        assert!(prune_plan(all, 50, &[]).is_empty());

        let (dir, r, installed) = store();
        r.ensure_installed(&installed).unwrap();
        let new = fake_chroxy(dir.path(), "new", "2.0.0");
        let added: Vec<Manifest> = (0..4).map(|_| r.add(&new).unwrap()).collect();
        r.set_known_good(&added[0].id).unwrap();
        let removed = r.prune(1, &[added[0].id.as_str()]).unwrap();
        assert_eq!(removed, [added[1].id.to_string(), added[2].id.to_string()]);
        let left: Vec<ReleaseId> = r.list().unwrap().into_iter().map(|i| i.id).collect();
        assert_eq!(left, ["0".into(), added[0].id.clone(), added[3].id.clone()]);
        assert!(!r.dir.join(added[1].id.as_str()).exists());
        r.verify(&added[3].id).unwrap();
    }
}
