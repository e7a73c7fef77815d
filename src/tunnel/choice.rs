//! A person's tunnel choice (`chroxy start --tunnel`, the tray's Tunnel menu) and what
//! turns it into a tunnel to run. A choice is what views send ([`Action::Tunnel`]); the
//! [`TunnelResolver`] that makes it a [`TunnelSpec`] holds the `[tunnel]` settings and
//! the secrets, so a named tunnel's token is read where it is used (at start, and by
//! the supervisor for a change) and never passes through a view.
//!
//! [`Action::Tunnel`]: crate::supervisor::status::Action::Tunnel

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::{Mode, TunnelSpec};
use crate::config::TunnelConfig;
use crate::secrets::{Secrets, SecretsError};

/// How phones reach this machine from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TunnelChoice {
    /// A Cloudflare quick tunnel: no account needed, a new trycloudflare.com URL each start.
    Quick,
    /// Your named Cloudflare tunnel (`[tunnel] hostname` in the config, token stored with
    /// `chroxy token set-tunnel`).
    Named,
    /// Tailscale Serve: `https://<machine>.<tailnet>.ts.net`, the same every start, for
    /// the tailnet's devices.
    Tailscale,
    /// Local only: 127.0.0.1.
    None,
}

/// Why a choice cannot run; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ChoiceError {
    /// A named tunnel without its hostname.
    #[error("a named tunnel needs its hostname: add `[tunnel]` `hostname = \"chroxy.example.com\"` to {0}")]
    NamedWithoutHostname(PathBuf),
    /// A named tunnel without its token.
    #[error("a named tunnel needs its token: `chroxy token set-tunnel < token.txt` (from the Cloudflare dashboard)")]
    NamedWithoutToken,
    /// The keyring (or its fallback files) failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
}

/// What a [`TunnelChoice`] needs to become a [`TunnelSpec`]: the settings as read at
/// start, and the secrets where a named tunnel's token is (read at each resolution, so
/// a token stored since start is used).
#[derive(Debug, Clone)]
pub struct TunnelResolver {
    config: TunnelConfig,
    /// The config file, named when a setting is missing.
    config_file: PathBuf,
    secrets: Secrets,
    /// `cloudflared` to run; `None`: found on `PATH` at each start.
    binary: Option<PathBuf>,
    /// `tailscale` to run; `None`: found on `PATH` at each start.
    tailscale: Option<PathBuf>,
}

impl TunnelResolver {
    /// A resolver over these settings and secrets; `binary` and `tailscale` are the
    /// programs' paths where given (`CHROXY_CLOUDFLARED`, `CHROXY_TAILSCALE`).
    pub fn new(
        config: TunnelConfig,
        config_file: PathBuf,
        secrets: Secrets,
        binary: Option<PathBuf>,
        tailscale: Option<PathBuf>,
    ) -> Self {
        Self {
            config,
            config_file,
            secrets,
            binary,
            tailscale,
        }
    }

    /// What `choice` needs to run: `None` for local only. The port is the supervisor's to
    /// fill. It may read the keyring: call it off the async threads.
    pub fn spec(&self, choice: TunnelChoice) -> Result<Option<TunnelSpec>, ChoiceError> {
        let mode = match choice {
            TunnelChoice::None => return Ok(None),
            TunnelChoice::Quick => Mode::Quick,
            TunnelChoice::Named => {
                let hostname =
                    self.config.hostname.clone().ok_or_else(|| {
                        ChoiceError::NamedWithoutHostname(self.config_file.clone())
                    })?;
                let token = self
                    .secrets
                    .tunnel_token()?
                    .ok_or(ChoiceError::NamedWithoutToken)?;
                Mode::Named { hostname, token }
            }
            TunnelChoice::Tailscale => Mode::Tailscale,
        };
        let binary = match mode.program() {
            super::Program::Cloudflared => self.binary.clone(),
            super::Program::Tailscale => self.tailscale.clone(),
        };
        let spec = TunnelSpec::new(mode, binary, 0, &self.config);
        Ok(Some(spec))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Paths;

    #[test]
    fn each_tunnel_choice_becomes_what_it_needs_or_says_what_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let secrets = Secrets::files(&paths);
        let mut config = TunnelConfig {
            backoff_floor_ms: 1234,
            ..TunnelConfig::default()
        };
        let resolver = |config: &TunnelConfig| {
            TunnelResolver::new(
                config.clone(),
                paths.config_file(),
                secrets.clone(),
                Some("/opt/cloudflared".into()),
                Some("/opt/tailscale".into()),
            )
        };
        let none = resolver(&config).spec(TunnelChoice::None).unwrap();
        assert!(none.is_none(), "local only: no tunnel");

        let quick = resolver(&config)
            .spec(TunnelChoice::Quick)
            .unwrap()
            .unwrap();
        assert_eq!(quick.mode, Mode::Quick);
        assert_eq!(quick.binary, Some("/opt/cloudflared".into()));
        assert_eq!(
            quick.backoff.floor,
            Duration::from_millis(1234),
            "the settings apply"
        );

        let err = resolver(&config).spec(TunnelChoice::Named).unwrap_err();
        assert!(
            matches!(&err, ChoiceError::NamedWithoutHostname(file) if *file == paths.config_file()),
            "{err}"
        );
        assert!(err.to_string().contains("hostname = "), "{err}");

        config.hostname = Some("chroxy.example.com".into());
        let named = resolver(&config);
        let err = named.spec(TunnelChoice::Named).unwrap_err();
        assert!(matches!(err, ChoiceError::NamedWithoutToken), "{err}");
        assert!(err.to_string().contains("chroxy token set-tunnel"), "{err}");

        let tailscale = resolver(&config)
            .spec(TunnelChoice::Tailscale)
            .unwrap()
            .unwrap();
        assert_eq!(tailscale.mode, Mode::Tailscale);
        assert_eq!(
            tailscale.binary,
            Some("/opt/tailscale".into()),
            "its own program"
        );

        // A token stored after the resolver was made (`chroxy token set-tunnel` while
        // the tray app runs) is the one a later switch uses.
        secrets.set_tunnel_token("cf-tunnel-token").unwrap();
        match named.spec(TunnelChoice::Named).unwrap().unwrap().mode {
            Mode::Named { hostname, token } => {
                assert_eq!(hostname, "chroxy.example.com");
                assert_eq!(token.expose(), "cf-tunnel-token");
            }
            other => panic!("{other:?}"),
        }
    }
}
