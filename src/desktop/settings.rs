//! What the tray app remembers between runs: the Tunnel menu's choice. Kept in the
//! state directory as JSON, written atomically; a damaged file is reported and replaced
//! by the default, never a reason not to start.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::store::Paths;
use crate::tunnel::TunnelChoice;

/// The remembered choices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Settings {
    /// How phones reach this machine.
    pub tunnel: TunnelChoice,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            tunnel: TunnelChoice::Quick,
        }
    }
}

fn file(paths: &Paths) -> PathBuf {
    paths.state_dir().join("desktop.json")
}

impl Settings {
    /// The saved settings, or the defaults (with a warning if the file is damaged).
    pub fn load(paths: &Paths) -> Self {
        let path = file(paths);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), %err, "ignoring the damaged tray settings; using the defaults");
                Self::default()
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Self::default(),
            Err(err) => {
                tracing::warn!(path = %path.display(), %err, "cannot read the tray settings; using the defaults");
                Self::default()
            }
        }
    }

    /// Saves them for the next start.
    pub fn save(&self, paths: &Paths) -> Result<(), crate::store::StoreError> {
        crate::store::ensure_private_dir(paths.state_dir())?;
        // A struct of one enum always serializes.
        let json = serde_json::to_vec_pretty(self).unwrap_or_default();
        crate::store::atomic_write(&file(paths), &json)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tunnel_choice_survives_a_restart_and_a_damaged_file_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        assert_eq!(Settings::load(&paths), Settings::default());
        let chosen = Settings {
            tunnel: TunnelChoice::None,
        };
        chosen.save(&paths).unwrap();
        assert_eq!(Settings::load(&paths), chosen);
        std::fs::write(file(&paths), b"{\"tunnel\": \"carrier-pigeon\"").unwrap();
        assert_eq!(Settings::load(&paths), Settings::default());
    }
}
