//! The API token phones authenticate with, and where it is kept.
//!
//! Until the OS keyring lands (DESIGN.md "Secrets"), the token lives in a 0600 file in
//! the config directory, created once on first run under an advisory lock so that two
//! processes starting together agree on one token. Nothing here ever deletes it.

use std::fmt;

use base64::Engine;
use subtle::ConstantTimeEq;

use crate::store::{atomic_write, FileLock, Paths, StoreError};

/// Why no token could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// The token file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed.
    #[error("the system random generator failed: {0}")]
    Random(String),
    /// The token file exists but is empty.
    #[error("the token file {0} is empty; run `chroxy token rotate` to make a new token")]
    EmptyFile(std::path::PathBuf),
}

/// A secret bearer token. `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiToken(String);

impl ApiToken {
    /// Wraps a token received from elsewhere (e.g. `CHROXY_TOKEN`).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// 32 random bytes, base64url without padding.
    pub fn generate() -> Result<Self, SecretsError> {
        let mut bytes = [0u8; 32];
        getrandom::fill(&mut bytes).map_err(|e| SecretsError::Random(e.to_string()))?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    /// Constant-time comparison, so response timing reveals nothing about the token.
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }

    /// The secret itself, for the few places that must hand it on (child environment,
    /// pairing link). Never log the result.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The API token phones authenticate with, from its file, created on first use.
    pub fn load_or_create(paths: &Paths) -> Result<Self, SecretsError> {
        Self::load_or_create_at(&paths.token_file(), &paths.lock_file("token"), "API token")
    }

    /// The admin token the status page's actions require (`X-Chroxy-Admin`), from its
    /// file, created on first use. Separate from the API token so that a phone's
    /// pairing never grants rollbacks.
    pub fn admin_load_or_create(paths: &Paths) -> Result<Self, SecretsError> {
        Self::load_or_create_at(
            &paths.admin_token_file(),
            &paths.lock_file("admin-token"),
            "admin token",
        )
    }

    /// The named tunnel's token, if the user stored one (`chroxy token set-tunnel`).
    pub fn tunnel_load(paths: &Paths) -> Result<Option<Self>, SecretsError> {
        let path = paths.tunnel_token_file();
        match std::fs::read_to_string(&path) {
            Ok(text) if !text.trim().is_empty() => Ok(Some(Self(text.trim().to_owned()))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io("reading", path, e).into()),
        }
    }

    /// Stores the named tunnel's token (0600, atomically).
    pub fn tunnel_store(paths: &Paths, token: &str) -> Result<(), SecretsError> {
        atomic_write(&paths.tunnel_token_file(), token.trim().as_bytes())?;
        Ok(())
    }

    fn load_or_create_at(
        path: &std::path::Path,
        lock_path: &std::path::Path,
        what: &str,
    ) -> Result<Self, SecretsError> {
        let mut lock = FileLock::open(lock_path)?;
        lock.exclusive(|| match std::fs::read_to_string(path) {
            Ok(text) => {
                let token = text.trim();
                if token.is_empty() {
                    Err(SecretsError::EmptyFile(path.to_path_buf()))
                } else {
                    Ok(Self(token.to_owned()))
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = Self::generate()?;
                atomic_write(path, token.0.as_bytes())?;
                tracing::info!(path = %path.display(), "created a new {what}");
                Ok(token)
            }
            Err(e) => Err(StoreError::io("reading", path.to_path_buf(), e).into()),
        })?
    }
}

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_file_is_created_once_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let a = ApiToken::load_or_create(&paths).unwrap();
        let b = ApiToken::load_or_create(&paths).unwrap();
        assert_eq!(a, b);
        let admin = ApiToken::admin_load_or_create(&paths).unwrap();
        assert_ne!(admin, a, "the admin token is its own secret");
        assert_eq!(ApiToken::admin_load_or_create(&paths).unwrap(), admin);
        assert_eq!(a.expose().len(), 43, "32 bytes base64url");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(paths.token_file())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn comparison_and_debug() {
        let t = ApiToken::new("s3cret-value");
        assert!(t.matches("s3cret-value"));
        assert!(!t.matches("s3cret-valu"));
        assert!(!t.matches(""));
        assert!(!format!("{t:?}").contains("s3cret"));
    }
}
