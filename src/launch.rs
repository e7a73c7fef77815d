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

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError};
use crate::pairing::Pairing;
use crate::secrets::{Secrets, SecretsError};
use crate::status_page::{self, StatusPage};
use crate::store::Paths;
use crate::supervisor::{Supervisor, SupervisorError};
use crate::token::ApiToken;
pub use crate::tunnel::TunnelChoice;
use crate::tunnel::{ChoiceError, TunnelResolver};

/// Why Chroxy could not start; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keyring (or its fallback files) failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The tunnel chosen cannot run (a named tunnel without its hostname or token).
    #[error(transparent)]
    Tunnel(#[from] ChoiceError),
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
}

impl std::fmt::Debug for Started {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Started")
            .field("public_port", &self.supervisor.public_port())
            .field("status_port", &self.supervisor.status_port())
            .finish_non_exhaustive()
    }
}

/// This home's secrets, opened off the async runtime (the keyring runs its own).
pub async fn open_secrets(paths: &Paths, home: Option<&Path>) -> Secrets {
    let (paths, home) = (paths.clone(), home.map(Path::to_path_buf));
    match tokio::task::spawn_blocking(move || Secrets::open(&paths, home.as_deref())).await {
        Ok(secrets) => secrets,
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// What sends this home's notifications, if it can: a keyring that cannot give the
/// signing key costs the notifications (phones are told), never the start.
fn pusher(
    paths: &Paths,
    secrets: &Secrets,
    cfg: &crate::config::PushConfig,
) -> Option<crate::push::Pusher> {
    if !cfg.enabled {
        return None;
    }
    let made = secrets
        .push_key()
        .map_err(|e| e.to_string())
        .and_then(|key| {
            crate::push::Pusher::new(paths, key.expose(), &cfg.contact, cfg.reach())
                .map_err(|e| e.to_string())
        });
    made.map_err(|err| tracing::warn!(%err, "notifications to phones are off"))
        .ok()
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
    // What a tunnel chosen now or later becomes: the supervisor keeps it, so a change of
    // choice reads the named tunnel's token there, never in a view.
    let tunnels = TunnelResolver::new(
        config.tunnel.clone(),
        paths.config_file(),
        secrets.clone(),
        cloudflared_binary(),
        crate::environment::tailscale_binary(),
    );
    let tunnel = tunnels.spec(tunnel)?;
    let token = api_token(&secrets)?;
    let admin = secrets.admin_token()?;
    let identity = secrets.identity()?;
    let push = pusher(&paths, &secrets, &config.push);
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
        tunnels,
        secrets: rotation_source.clone(),
        approve_new_devices: config.security.approve_new_devices,
        identity: identity.clone(),
        allow_token_auth: config.security.allow_token_auth,
        push,
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
        *identity.public(),
        config.security.allow_token_auth,
    );
    Ok(Started {
        supervisor,
        pairing,
        admin,
    })
}
