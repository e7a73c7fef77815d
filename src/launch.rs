//! Starting Chroxy from what a person chose — flags of `chroxy start`, or the tray app's
//! menu — so both run the very same supervisor: settings, secrets and the session
//! directory resolved into [`supervisor::Options`], and the pairing a phone needs,
//! followed as the tunnel's URL or the token changes.
//!
//! Children: `env.rs` (what the environment says, and where the `chroxy` program is),
//! `signals.rs` (SIGTERM / Ctrl-C, and the two-step stop), `pairing.rs` (the pairing
//! followed and printed). The worker's twin of [`start`] is [`crate::worker::launch`].

mod pairing;

// The environment and the signals, for the shells, which take everything from here.
pub use crate::environment::{
    api_token, claude_binary, cloudflared_binary, env_token, session_dir, worker_binary,
    EnvironmentError,
};
pub use crate::signals::{StopSignals, StopSwitch};
pub use pairing::{follow_pairing, print_pairing};

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, TunnelConfig};
use crate::pairing::Pairing;
use crate::secrets::{Secrets, SecretsError};
use crate::status_page::{self, StatusPage};
use crate::store::Paths;
use crate::supervisor::{Supervisor, SupervisorError};
use crate::token::ApiToken;
use crate::tunnel::{Mode, TunnelSpec};

/// How phones reach this machine from elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum TunnelChoice {
    /// A Cloudflare quick tunnel: no account needed, a new trycloudflare.com URL each start.
    Quick,
    /// Your named Cloudflare tunnel (`[tunnel] hostname` in the config, token stored with
    /// `chroxy token set-tunnel`).
    Named,
    /// Local only: 127.0.0.1.
    None,
}

/// Why Chroxy could not start; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keyring (or its fallback files) failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// A named tunnel without its hostname.
    #[error("a named tunnel needs its hostname: add `[tunnel]` `hostname = \"chroxy.example.com\"` to {0}")]
    NamedWithoutHostname(PathBuf),
    /// A named tunnel without its token.
    #[error("a named tunnel needs its token: `chroxy token set-tunnel < token.txt` (from the Cloudflare dashboard)")]
    NamedWithoutToken,
    /// The supervisor itself refused to start (port taken, another instance, store).
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
    /// What the environment names is not there (the session directory, the `chroxy`
    /// program workers run).
    #[error(transparent)]
    Environment(#[from] EnvironmentError),
}

/// The options of `chroxy start`, shared with the tray app's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct StartArgs {
    /// Public port on 127.0.0.1 (phones and the tunnel connect here).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Status page port on 127.0.0.1.
    #[arg(long, default_value_t = 8766)]
    pub status_port: u16,
    /// Address of the public port: 127.0.0.1 keeps it on this machine (the tunnel
    /// still reaches it); 0.0.0.0 also serves the local network (then set
    /// `[tunnel] public_url` to this machine's LAN address for pairing links).
    #[arg(long, default_value_t = std::net::IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub bind: std::net::IpAddr,
    /// How phones reach this machine from elsewhere [default: quick; the tray app
    /// remembers the last choice of its Tunnel menu].
    #[arg(long, value_enum)]
    pub tunnel: Option<TunnelChoice>,
    /// Directory of the default session.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Answer with Chroxy's built-in scripted model instead of Anthropic's API, to
    /// try everything without an account (Claude Code itself is still needed).
    #[arg(long)]
    pub demo: bool,
}

impl StartArgs {
    /// What to start: these options, the home, and `tunnel` when none was given.
    pub fn launch(
        self,
        home: Option<PathBuf>,
        paths: Paths,
        fallback_tunnel: TunnelChoice,
        installed: PathBuf,
    ) -> Result<Launch, LaunchError> {
        Ok(Launch {
            home,
            paths,
            public_addr: SocketAddr::new(self.bind, self.port),
            status_port: self.status_port,
            tunnel: self.tunnel.unwrap_or(fallback_tunnel),
            cwd: session_dir(self.cwd)?,
            demo: self.demo,
            installed,
        })
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `CHROXY_HOME` as given (handed on to workers), if any.
    pub home: Option<PathBuf>,
    /// The resolved directories.
    pub paths: Paths,
    /// The public port's address (phones and the tunnel connect here).
    pub public_addr: SocketAddr,
    /// The status page's port on 127.0.0.1.
    pub status_port: u16,
    /// How phones reach this machine from elsewhere.
    pub tunnel: TunnelChoice,
    /// Directory of the default session.
    pub cwd: PathBuf,
    /// Answer with the built-in scripted model.
    pub demo: bool,
    /// The `chroxy` binary workers run as release 0 (it has the `worker` command).
    pub installed: PathBuf,
}

/// A started Chroxy.
pub struct Started {
    /// The supervisor (wait on it after cancelling `shutdown`).
    pub supervisor: Supervisor,
    /// The current pairing: `None` until a tunnel has a URL.
    pub pairing: watch::Receiver<Option<Pairing>>,
    /// The status page's admin token (for the views that show it).
    pub admin: ApiToken,
    /// This home's secrets (named tunnel token, rotation).
    pub secrets: Secrets,
    /// The settings file as read at start.
    pub config: Config,
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("public_port", &self.supervisor.public_port())
            .field("status_port", &self.supervisor.status_port())
            .finish_non_exhaustive()
    }
}

/// What `choice` needs to run: `None` for local only. The port is the supervisor's to
/// fill; `cloudflared` is `CHROXY_CLOUDFLARED`, else found on `PATH` at each start.
pub fn tunnel_spec(
    paths: &Paths,
    secrets: &Secrets,
    config: &TunnelConfig,
    choice: TunnelChoice,
) -> Result<Option<TunnelSpec>, LaunchError> {
    let mode = match choice {
        TunnelChoice::None => return Ok(None),
        TunnelChoice::Quick => Mode::Quick,
        TunnelChoice::Named => {
            let hostname = config
                .hostname
                .clone()
                .ok_or_else(|| LaunchError::NamedWithoutHostname(paths.config_file()))?;
            let token = secrets
                .tunnel_token()?
                .ok_or(LaunchError::NamedWithoutToken)?;
            Mode::Named { hostname, token }
        }
    };
    let binary = cloudflared_binary();
    Ok(Some(TunnelSpec::new(mode, binary, 0, config)))
}

/// This home's secrets, opened off the async runtime (the keyring runs its own).
pub async fn open_secrets(paths: &Paths, home: Option<&Path>) -> Secrets {
    let (paths, home) = (paths.clone(), home.map(Path::to_path_buf));
    match tokio::task::spawn_blocking(move || Secrets::open(&paths, home.as_deref())).await {
        Ok(secrets) => secrets,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// Starts the supervisor (and its tunnel, status page and first worker) and the pairing
/// follower. Stops when `shutdown` is cancelled; `force` stops waiting for drains.
pub async fn start(
    launch: Launch,
    shutdown: CancellationToken,
    force: CancellationToken,
) -> Result<Started, LaunchError> {
    let Launch {
        home,
        paths,
        public_addr,
        status_port,
        tunnel,
        cwd,
        demo,
        installed,
    } = launch;
    let config = Config::load(&paths.config_file())?;
    let secrets = open_secrets(&paths, home.as_deref()).await;
    let tunnel = tunnel_spec(&paths, &secrets, &config.tunnel, tunnel)?;
    let token = api_token(&secrets)?;
    let admin = secrets.admin_token()?;
    let mut worker_args: Vec<std::ffi::OsString> = vec!["--cwd".into(), cwd.into()];
    if demo {
        worker_args.push("--demo".into());
    }
    let worker_env = home
        .map(|h| vec![("CHROXY_HOME".into(), h.into_os_string())])
        .unwrap_or_default();
    // A token given in CHROXY_TOKEN is pinned: rotation in the store cannot apply.
    let rotation_source = env_token().is_none().then(|| secrets.clone());
    let opts = crate::supervisor::Options {
        paths,
        public_addr,
        status_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, status_port)),
        token: token.clone(),
        config: config.supervisor.clone(),
        heartbeat: config.worker.heartbeat(),
        installed,
        worker_args,
        worker_env,
        demo,
        secrets_backend: secrets.backend_name().into(),
        tunnel,
        secrets: rotation_source.clone(),
        approve_new_devices: config.security.approve_new_devices,
    };
    let devices = crate::devices::Devices::new(&opts.paths);
    let page_admin = admin.clone();
    let page = move |listener: tokio::net::TcpListener, handle, stop| {
        let port = listener.local_addr().map(|a| a.port()).unwrap_or_default();
        let page = StatusPage {
            handle,
            admin: page_admin,
            port,
            devices,
        };
        status_page::serve(listener, page, stop)
    };
    let supervisor = Supervisor::start(opts, page, shutdown, force).await?;
    let pairing = follow_pairing(
        supervisor.handle(),
        token,
        rotation_source,
        config.tunnel.public_url.clone(),
    );
    Ok(Started {
        supervisor,
        pairing,
        admin,
        secrets,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn home() -> (tempfile::TempDir, Paths, Secrets) {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let secrets = Secrets::files(&paths);
        (dir, paths, secrets)
    }

    #[test]
    fn each_tunnel_choice_becomes_what_it_needs_or_says_what_is_missing() {
        let (_dir, paths, secrets) = home();
        let mut config = TunnelConfig {
            backoff_floor_ms: 1234,
            ..TunnelConfig::default()
        };
        let none = tunnel_spec(&paths, &secrets, &config, TunnelChoice::None).unwrap();
        assert!(none.is_none(), "local only: no tunnel");

        let quick = tunnel_spec(&paths, &secrets, &config, TunnelChoice::Quick)
            .unwrap()
            .unwrap();
        assert_eq!(quick.mode, Mode::Quick);
        assert_eq!(
            quick.backoff.floor,
            std::time::Duration::from_millis(1234),
            "the settings apply"
        );

        let err = tunnel_spec(&paths, &secrets, &config, TunnelChoice::Named).unwrap_err();
        assert!(
            matches!(&err, LaunchError::NamedWithoutHostname(file) if *file == paths.config_file()),
            "{err}"
        );
        assert!(err.to_string().contains("hostname = "), "{err}");

        config.hostname = Some("chroxy.example.com".into());
        let err = tunnel_spec(&paths, &secrets, &config, TunnelChoice::Named).unwrap_err();
        assert!(matches!(err, LaunchError::NamedWithoutToken), "{err}");
        assert!(err.to_string().contains("chroxy token set-tunnel"), "{err}");

        secrets.set_tunnel_token("cf-tunnel-token").unwrap();
        let named = tunnel_spec(&paths, &secrets, &config, TunnelChoice::Named)
            .unwrap()
            .unwrap();
        match named.mode {
            Mode::Named { hostname, token } => {
                assert_eq!(hostname, "chroxy.example.com");
                assert_eq!(token.expose(), "cf-tunnel-token");
            }
            other => panic!("{other:?}"),
        }
    }
}
