//! What a deploy or a rollback switches to, and the check it must pass before anything
//! is stopped. One rule for both places that switch: the running supervisor's actions
//! (`runner.rs`), and `chroxy deploy|rollback` when no supervisor runs, which only move
//! the `current` pointer for the next start. Without it the two would drift, and a
//! stopped Chroxy could be pointed at a release a running one would refuse.

use super::release::{ReleaseError, ReleaseId, Releases};

/// A person's request to change the release that runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Switch {
    /// Run this release (added to the store by `chroxy deploy`) as a canary.
    Deploy(ReleaseId),
    /// Go back to this release; `None` goes to known-good.
    Rollback(Option<ReleaseId>),
}

impl Switch {
    /// The release this switches to; a rollback without one goes to `known_good`.
    pub fn target(&self, known_good: &ReleaseId) -> ReleaseId {
        match self {
            Switch::Deploy(id) | Switch::Rollback(Some(id)) => id.clone(),
            Switch::Rollback(None) => known_good.clone(),
        }
    }
}

/// The release `switch` goes to, once it is known to exist and still match its checksum:
/// a mistyped, damaged or tampered release is refused before the one that runs is
/// stopped. `known_good` is where a rollback without a target goes. Blocking (it reads
/// the whole binary).
pub fn check(
    releases: &Releases,
    switch: &Switch,
    known_good: &ReleaseId,
) -> Result<ReleaseId, ReleaseError> {
    let target = switch.target(known_good);
    releases.verify(target.as_str())?;
    Ok(target)
}

/// With no supervisor running: points `current` at what `switch` goes to, checked as
/// [`check`] does, so the next `chroxy start` runs it. `known_good` stays where it is,
/// so a deployed release starts as a canary. Returns the release. Blocking.
pub fn switch_stopped(releases: &Releases, switch: &Switch) -> Result<ReleaseId, ReleaseError> {
    let target = check(releases, switch, &releases.known_good()?)?;
    releases.set_current(target.as_str())?;
    Ok(target)
}

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use super::*;
    use crate::store::Paths;

    /// A shell script that answers `--version` like chroxy `version`.
    fn fake_chroxy(dir: &Path, version: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = dir.join(format!("chroxy-{version}"));
        std::fs::write(
            &path,
            format!("#!/bin/sh\necho 'chroxy {version} (abcdef123456)'\n"),
        )
        .unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    /// A store with the installed release 0 and one deployed release (its id).
    fn store() -> (tempfile::TempDir, Releases, ReleaseId) {
        let dir = tempfile::tempdir().unwrap();
        let releases = Releases::open(&Paths::under(dir.path().join("home")));
        releases
            .ensure_installed(&fake_chroxy(dir.path(), "1.0.0"))
            .unwrap();
        let added = releases.add(&fake_chroxy(dir.path(), "1.1.0")).unwrap();
        (dir, releases, added.id)
    }

    #[test]
    fn a_rollback_goes_to_the_named_release_or_else_to_known_good() {
        let known_good = ReleaseId::from("3-abc");
        assert_eq!(Switch::Rollback(None).target(&known_good), "3-abc");
        assert_eq!(Switch::Rollback(Some("0".into())).target(&known_good), "0");
        assert_eq!(Switch::Deploy("4-def".into()).target(&known_good), "4-def");
    }

    #[test]
    fn a_stopped_deploy_makes_the_release_current_and_leaves_known_good_behind() {
        let (_dir, releases, id) = store();
        let switched = switch_stopped(&releases, &Switch::Deploy(id.clone())).unwrap();
        assert_eq!(switched, id);
        assert_eq!(releases.current().unwrap(), id);
        assert_eq!(
            releases.known_good().unwrap(),
            "0",
            "the next start runs it as a canary"
        );

        let back = switch_stopped(&releases, &Switch::Rollback(None)).unwrap();
        assert_eq!(back, "0", "to known-good");
        assert_eq!(releases.current().unwrap(), "0");
        let again = switch_stopped(&releases, &Switch::Rollback(Some(id.clone()))).unwrap();
        assert_eq!((again, releases.current().unwrap()), (id.clone(), id));
    }

    #[test]
    fn an_unknown_or_tampered_release_is_refused_and_current_stays() {
        let (_dir, releases, id) = store();
        let unknown = switch_stopped(&releases, &Switch::Rollback(Some("9-nothere".into())));
        assert!(
            matches!(&unknown, Err(ReleaseError::Unknown(id)) if id == "9-nothere"),
            "{unknown:?}"
        );
        let escape = switch_stopped(&releases, &Switch::Rollback(Some("../0".into())));
        assert!(
            matches!(escape, Err(ReleaseError::Unknown(_))),
            "{escape:?}"
        );

        // Same size, other bytes: only the checksum can tell.
        let binary = releases.get(&id).unwrap().binary;
        let mut bytes = std::fs::read(&binary).unwrap();
        bytes[12] ^= 1;
        std::fs::write(&binary, bytes).unwrap();
        let tampered = switch_stopped(&releases, &Switch::Deploy(id.clone()));
        assert!(
            matches!(&tampered, Err(ReleaseError::ChecksumMismatch(bad)) if id == bad.as_str()),
            "{tampered:?}"
        );
        assert_eq!(releases.current().unwrap(), "0", "nothing moved");
    }
}
