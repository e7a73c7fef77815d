//! The one place that decides where files live.

use std::path::{Path, PathBuf};

use super::StoreError;

/// Every file Chroxy reads or writes, under roots that tests (and users) can relocate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    config: PathBuf,
    state: PathBuf,
    logs: PathBuf,
}

impl Paths {
    /// Everything under one directory: `config/`, `state/`, `logs/`. This is what
    /// `CHROXY_HOME` selects.
    pub fn under(root: impl AsRef<Path>) -> Self {
        let root = root.as_ref();
        Self {
            config: root.join("config"),
            state: root.join("state"),
            logs: root.join("logs"),
        }
    }

    /// `CHROXY_HOME` when given, otherwise the platform's usual directories
    /// (`~/.config/chroxy`, `~/.local/share/chroxy`, … on Linux).
    pub fn resolve(chroxy_home: Option<PathBuf>) -> Result<Self, StoreError> {
        if let Some(root) = chroxy_home.filter(|p| !p.as_os_str().is_empty()) {
            return Ok(Self::under(root));
        }
        let dirs =
            directories::ProjectDirs::from("dev", "chroxy", "chroxy").ok_or(StoreError::NoHome)?;
        let state = dirs
            .state_dir()
            .unwrap_or_else(|| dirs.data_local_dir())
            .to_path_buf();
        Ok(Self {
            config: dirs.config_dir().to_path_buf(),
            logs: state.join("logs"),
            state,
        })
    }

    /// Settings the user may edit.
    pub fn config_file(&self) -> PathBuf {
        self.config.join("config.toml")
    }

    /// The release store: `releases/<id>/` plus the `current` and `known_good` pointers.
    pub fn releases_dir(&self) -> PathBuf {
        self.state.join("releases")
    }

    /// Where a running supervisor says who it is (pid, ports) while it holds the
    /// instance lock.
    pub fn instance_file(&self) -> PathBuf {
        self.state.join("supervisor.json")
    }

    /// One JSON file per session: settings, the agent's session id, history.
    pub fn sessions_dir(&self) -> PathBuf {
        self.state.join("sessions")
    }

    /// Source builds (`chroxy deploy --source`): the checked-out tree of the one running,
    /// its record, and the compiled artifacts kept for the next build.
    pub fn builds_dir(&self) -> PathBuf {
        self.state.join("builds")
    }

    /// Advisory lock files live beside what they guard.
    pub fn lock_file(&self, name: &str) -> PathBuf {
        self.state.join(format!("{name}.lock"))
    }

    /// Rolling logs.
    pub fn logs_dir(&self) -> PathBuf {
        self.logs.clone()
    }

    /// The configuration directory.
    pub fn config_dir(&self) -> &Path {
        &self.config
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chroxy_home_relocates_everything() {
        let p = Paths::resolve(Some(PathBuf::from("/tmp/ch"))).unwrap();
        for path in [
            p.config_file(),
            p.releases_dir(),
            p.instance_file(),
            p.sessions_dir(),
            p.lock_file("x"),
            p.logs_dir(),
            p.builds_dir(),
        ] {
            assert!(path.starts_with("/tmp/ch"), "{path:?} escaped CHROXY_HOME");
        }
    }

    #[test]
    fn empty_chroxy_home_is_ignored_not_the_cwd() {
        // An exported-but-empty variable must not put state in the current directory.
        let p = Paths::resolve(Some(PathBuf::new()));
        if let Ok(p) = p {
            assert!(p.config_file().is_absolute());
        }
    }
}
