//! Secrets and where they are kept (DESIGN.md "Secrets"): the API token phones pair
//! with, the admin token of the status page's actions, a named tunnel's token, and the
//! desktop's identity key (protocol v2, [`crate::channel`]).
//!
//! They live in the OS keyring (Secret Service on Linux, Keychain, Credential Manager).
//! Where no keyring is usable — no Secret Service on the bus, a locked one that cannot
//! prompt — each lives in a 0600 file in the config directory instead, and every view
//! says so (`secretsBackend: "file"`). Tokens are made once, under an advisory lock so
//! that two processes starting together agree on one. Only [`Secrets::rotate_api_token`]
//! replaces one; nothing else — a crash, a failed reconnect, a rollback — ever deletes
//! or changes a secret.
//!
//! Each `CHROXY_HOME` is its own instance with its own entries (the keyring service
//! name carries the home's path), so tests and second instances never touch the
//! user's real tokens.

use std::path::{Path, PathBuf};

use crate::channel::KeyPair;
use crate::store::{atomic_write, FileLock, Paths, StoreError};
use crate::token::{ApiToken, NoRandomness};

/// The keyring service name of the default home.
const SERVICE: &str = "chroxy";

/// Why no secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretsError {
    /// A secret file could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The OS random source failed.
    #[error(transparent)]
    Random(#[from] NoRandomness),
    /// A secret file exists but is empty.
    #[error("the secret file {0} is empty; run `chroxy token rotate` to make a new token")]
    EmptyFile(PathBuf),
    /// The identity key kept is not a key; it is left as it is, since a new one would
    /// make every paired phone refuse this machine.
    #[error("the desktop's identity key kept in the {0} is damaged; if it cannot be restored, remove it (every phone must then be paired again)")]
    DamagedIdentity(&'static str),
    /// The keyring answered with an error after it was found usable.
    #[error("the OS keyring failed while {action} the {what}: {detail}")]
    Keyring {
        /// "reading" or "storing".
        action: &'static str,
        /// Which secret.
        what: &'static str,
        /// The keyring's message (never the secret).
        detail: String,
    },
}

/// The secrets there are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Api,
    Admin,
    Tunnel,
    Identity,
    Push,
}

impl Kind {
    /// Keyring account and file name.
    fn key(self) -> &'static str {
        match self {
            Kind::Api => "token",
            Kind::Admin => "admin-token",
            Kind::Tunnel => "tunnel-token",
            Kind::Identity => "identity-key",
            Kind::Push => "push-key",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Api => "API token",
            Kind::Admin => "admin token",
            Kind::Tunnel => "named tunnel's token",
            Kind::Identity => "identity key",
            Kind::Push => "push signing key",
        }
    }
}

/// Where secrets are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Backend {
    /// The OS keyring, under this service name.
    Keyring(String),
    /// 0600 files in the config directory, because no keyring is usable (the reason).
    File(String),
}

/// The secrets of one `CHROXY_HOME`.
#[derive(Debug, Clone)]
pub struct Secrets {
    paths: Paths,
    backend: Backend,
}

impl Secrets {
    /// Finds out where this home's secrets are kept: the OS keyring if one answers,
    /// files otherwise. `home` is `CHROXY_HOME` when set (its own keyring entries).
    /// Blocking (it may talk to the Secret Service): call from `spawn_blocking` in
    /// async code.
    pub fn open(paths: &Paths, home: Option<&Path>) -> Self {
        let bus =
            std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_some() || !cfg!(target_os = "linux");
        Self::open_with(paths, home, bus)
    }

    fn open_with(paths: &Paths, home: Option<&Path>, session_bus: bool) -> Self {
        let service = match home {
            Some(h) => format!("{SERVICE}:{}", h.display()),
            None => SERVICE.to_owned(),
        };
        let probed = if session_bus {
            probe(&service)
        } else {
            Err("no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)".to_owned())
        };
        let backend = match probed {
            Ok(()) => Backend::Keyring(service),
            Err(why) => {
                tracing::info!(%why, "no usable OS keyring: secrets are kept in 0600 files");
                Backend::File(why)
            }
        };
        Self {
            paths: paths.clone(),
            backend,
        }
    }

    /// Files only, whatever keyring there is.
    pub fn files(paths: &Paths) -> Self {
        Self {
            paths: paths.clone(),
            backend: Backend::File("chosen".into()),
        }
    }

    /// `keyring` or `file`, as the status page says it.
    pub fn backend_name(&self) -> &'static str {
        match self.backend {
            Backend::Keyring(_) => "keyring",
            Backend::File(_) => "file",
        }
    }

    /// Where they are kept, and why when it is files.
    pub fn backend(&self) -> &Backend {
        &self.backend
    }

    /// The API token phones authenticate with, made on first use.
    pub fn api_token(&self) -> Result<ApiToken, SecretsError> {
        self.get_or_create(Kind::Api)
    }

    /// The admin token the status page's actions need, made on first use. Separate
    /// from the API token so that pairing a phone never grants rollbacks.
    pub fn admin_token(&self) -> Result<ApiToken, SecretsError> {
        self.get_or_create(Kind::Admin)
    }

    /// The desktop's identity key pair, made on first use: its secret is 32 random
    /// bytes as base64url, made like a token and kept like one.
    pub fn identity(&self) -> Result<KeyPair, SecretsError> {
        let secret = self.get_or_create(Kind::Identity)?;
        KeyPair::from_secret(secret.expose()).map_err(|_| {
            SecretsError::DamagedIdentity(match self.backend {
                Backend::Keyring(_) => "OS keyring",
                Backend::File(_) => "secret file",
            })
        })
    }

    /// The secret half of the VAPID key pushes are signed with ([`crate::push`]),
    /// made on first use: 32 random bytes as base64url, kept like a token. Phones
    /// subscribe with its public half, so it is never replaced.
    pub fn push_key(&self) -> Result<ApiToken, SecretsError> {
        self.get_or_create(Kind::Push)
    }

    /// The named tunnel's token, if the user stored one.
    pub fn tunnel_token(&self) -> Result<Option<ApiToken>, SecretsError> {
        self.read(Kind::Tunnel)
    }

    /// Stores the named tunnel's token.
    pub fn set_tunnel_token(&self, token: &str) -> Result<(), SecretsError> {
        self.write(Kind::Tunnel, token.trim())
    }

    /// Replaces the API token: every pairing made with the old one stops working.
    pub fn rotate_api_token(&self) -> Result<ApiToken, SecretsError> {
        let mut lock = FileLock::open(&self.paths.lock_file(Kind::Api.key()))?;
        lock.exclusive(|| {
            let token = ApiToken::generate()?;
            self.write(Kind::Api, token.expose())?;
            tracing::info!("the API token was rotated");
            Ok(token)
        })?
    }

    fn file(&self, kind: Kind) -> PathBuf {
        self.paths.config_dir().join(kind.key())
    }

    fn get_or_create(&self, kind: Kind) -> Result<ApiToken, SecretsError> {
        let mut lock = FileLock::open(&self.paths.lock_file(kind.key()))?;
        lock.exclusive(|| {
            if let Some(token) = self.read(kind)? {
                return Ok(token);
            }
            let token = ApiToken::generate()?;
            self.write(kind, token.expose())?;
            tracing::info!(
                backend = self.backend_name(),
                "created a new {}",
                kind.what()
            );
            Ok(token)
        })?
    }

    fn read(&self, kind: Kind) -> Result<Option<ApiToken>, SecretsError> {
        let Backend::Keyring(service) = &self.backend else {
            return read_file(&self.file(kind));
        };
        let entry = entry(service, kind)?;
        match off_runtime(|| entry.get_password()) {
            Ok(value) if !value.trim().is_empty() => Ok(Some(ApiToken::new(value.trim()))),
            Ok(_) | Err(keyring::Error::NoEntry) => match read_file(&self.file(kind))? {
                // Kept in a file before a keyring was usable: move it in, so pairings
                // made back then keep working; the file goes only once the keyring
                // gives the same value back.
                Some(token) => {
                    self.write(kind, token.expose())?;
                    if matches!(off_runtime(|| entry.get_password()), Ok(v) if v == token.expose())
                    {
                        let _ = std::fs::remove_file(self.file(kind));
                        tracing::info!("moved the {} into the OS keyring", kind.what());
                    }
                    Ok(Some(token))
                }
                None => Ok(None),
            },
            Err(e) => Err(keyring_error("reading", kind, e)),
        }
    }

    fn write(&self, kind: Kind, value: &str) -> Result<(), SecretsError> {
        match &self.backend {
            Backend::Keyring(service) => {
                let entry = entry(service, kind)?;
                off_runtime(|| entry.set_password(value))
                    .map_err(|e| keyring_error("storing", kind, e))
            }
            Backend::File(_) => Ok(atomic_write(&self.file(kind), value.as_bytes())?),
        }
    }
}

/// Runs a keyring call where it can run. The Secret Service client drives its own
/// runtime and refuses to start inside another one, so from async code (or a thread
/// of a runtime's blocking pool) the call gets a plain thread of its own.
fn off_runtime<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|scope| match scope.spawn(f).join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

fn entry(service: &str, kind: Kind) -> Result<keyring::Entry, SecretsError> {
    keyring::Entry::new(service, kind.key()).map_err(|e| keyring_error("opening", kind, e))
}

fn keyring_error(action: &'static str, kind: Kind, e: keyring::Error) -> SecretsError {
    SecretsError::Keyring {
        action,
        what: kind.what(),
        detail: e.to_string(),
    }
}

/// A keyring is usable if reading an entry answers "there" or "not there".
fn probe(service: &str) -> Result<(), String> {
    let entry = keyring::Entry::new(service, Kind::Api.key()).map_err(|e| e.to_string())?;
    match off_runtime(|| entry.get_password()) {
        Ok(_) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(e.to_string()),
    }
}

fn read_file(path: &Path) -> Result<Option<ApiToken>, SecretsError> {
    match std::fs::read_to_string(path) {
        Ok(text) if text.trim().is_empty() => Err(SecretsError::EmptyFile(path.to_path_buf())),
        Ok(text) => Ok(Some(ApiToken::new(text.trim()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::io("reading", path, e).into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_secrets_are_made_once_private_and_separate() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let s = Secrets::files(&paths);
        let a = s.api_token().unwrap();
        assert_eq!(s.api_token().unwrap(), a);
        assert_eq!(a.expose().len(), 43, "32 bytes base64url");
        let admin = s.admin_token().unwrap();
        assert_ne!(admin, a, "the admin token is its own secret");
        assert_eq!(s.admin_token().unwrap(), admin);
        assert_eq!(s.tunnel_token().unwrap(), None);
        s.set_tunnel_token(" tunnel-secret\n").unwrap();
        assert_eq!(s.tunnel_token().unwrap().unwrap().expose(), "tunnel-secret");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(paths.config_dir().join("token"))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let identity = s.identity().unwrap();
        assert_eq!(
            s.identity().unwrap().public(),
            identity.public(),
            "made once"
        );
        let rotated = s.rotate_api_token().unwrap();
        assert_ne!(rotated, a);
        assert_eq!(s.api_token().unwrap(), rotated);
        assert_eq!(
            s.admin_token().unwrap(),
            admin,
            "rotation touches only the API token"
        );
        assert_eq!(s.identity().unwrap().public(), identity.public());
        std::fs::write(paths.config_dir().join("identity-key"), "not a key").unwrap();
        assert!(
            matches!(
                s.identity(),
                Err(SecretsError::DamagedIdentity("secret file"))
            ),
            "a damaged key is an error, never silently replaced"
        );
        assert_eq!(
            std::fs::read_to_string(paths.config_dir().join("identity-key")).unwrap(),
            "not a key"
        );
    }

    #[test]
    fn without_a_session_bus_the_files_are_used_and_the_reason_given() {
        let dir = tempfile::tempdir().unwrap();
        let s = Secrets::open_with(&Paths::under(dir.path()), Some(dir.path()), false);
        assert_eq!(s.backend_name(), "file");
        assert!(matches!(s.backend(), Backend::File(why) if why.contains("D-Bus")));
    }
}
