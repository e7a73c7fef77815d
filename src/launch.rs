//! Starting Chroxy from what a person chose — flags of `chroxy start`, or the tray app's
//! menu — so both run the very same supervisor: settings, secrets and the session
//! directory resolved into [`supervisor::Options`], and the pairing a phone needs,
//! followed as the tunnel's URL or the token changes.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, ConfigError, TunnelConfig};
use crate::pairing::Pairing;
use crate::secrets::{ApiToken, Secrets, SecretsError};
use crate::store::Paths;
use crate::supervisor::handle::Handle;
use crate::supervisor::status::Status;
use crate::supervisor::{Supervisor, SupervisorError};
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
    /// The session directory does not exist.
    #[error("the session directory {0} does not exist")]
    NoSessionDir(PathBuf),
    /// The supervisor itself refused to start (port taken, another instance, store).
    #[error(transparent)]
    Supervisor(#[from] SupervisorError),
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

/// `--cwd`, or the current directory, as an absolute path that exists.
pub fn session_dir(cwd: Option<PathBuf>) -> Result<PathBuf, LaunchError> {
    let cwd = match cwd {
        Some(dir) => dir,
        None => std::env::current_dir().map_err(|_| LaunchError::NoSessionDir(".".into()))?,
    };
    cwd.canonicalize()
        .map_err(|_| LaunchError::NoSessionDir(cwd))
}

/// `CHROXY_TOKEN` (how the supervisor hands it to a worker: in the environment, never on
/// a command line, where every user of the machine could read it), else the stored one.
pub fn api_token(secrets: &Secrets) -> Result<ApiToken, SecretsError> {
    match std::env::var("CHROXY_TOKEN") {
        Ok(t) if !t.trim().is_empty() => Ok(ApiToken::new(t.trim())),
        _ => secrets.api_token(),
    }
}

/// The tunnels a person may choose, resolved with this home's settings and secrets.
/// `cloudflared` is `CHROXY_CLOUDFLARED`, else found on `PATH` at each start.
fn tunnel_resolver(paths: &Paths, secrets: &Secrets, config: &TunnelConfig) -> TunnelResolver {
    let binary = std::env::var_os("CHROXY_CLOUDFLARED")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from);
    TunnelResolver::new(config.clone(), paths.config_file(), secrets.clone(), binary)
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
    let tunnels = tunnel_resolver(&paths, &secrets, &config.tunnel);
    let tunnel = tunnels.spec(tunnel)?;
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
    let rotation_source = std::env::var("CHROXY_TOKEN")
        .map_or(true, |t| t.trim().is_empty())
        .then(|| secrets.clone());
    let opts = crate::supervisor::Options {
        paths,
        public_addr,
        status_addr: SocketAddr::from((Ipv4Addr::LOCALHOST, status_port)),
        token: token.clone(),
        admin: admin.clone(),
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
    };
    let supervisor = Supervisor::start(opts, shutdown, force).await?;
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
    })
}

/// The pairing phones need, now and after every change of the tunnel's URL or of the
/// token (`chroxy token rotate` makes the old link dead). With a tunnel, only its URL
/// reaches a phone elsewhere, so until it has one the pairing is `None`.
pub fn follow_pairing(
    handle: Handle,
    mut token: ApiToken,
    secrets: Option<Secrets>,
    configured: Option<String>,
) -> watch::Receiver<Option<Pairing>> {
    let (tx, rx) = watch::channel(None);
    let rotations = |s: &Status| {
        s.events
            .iter()
            .rev()
            .find(|e| e.kind == "token_rotated")
            .map(|e| e.at)
    };
    tokio::spawn(async move {
        let mut status = handle.watch();
        let mut rotated = rotations(&status.borrow());
        let mut sent: Option<(String, ApiToken)> = None;
        loop {
            let (url, port, mode, now_rotated) = {
                let s = status.borrow_and_update();
                (
                    s.tunnel.url.clone(),
                    s.public_port,
                    s.tunnel.mode.clone(),
                    rotations(&s),
                )
            };
            if now_rotated != rotated {
                rotated = now_rotated;
                if let Some(secrets) = secrets.clone() {
                    if let Ok(Ok(new)) =
                        tokio::task::spawn_blocking(move || secrets.api_token()).await
                    {
                        token = new;
                    }
                }
            }
            let usable = url.is_some() || mode == "none";
            let public = crate::pairing::public_url(url.as_deref(), configured.as_deref(), port);
            let next = usable.then(|| (public, token.clone()));
            if next != sent {
                let pairing = next.as_ref().and_then(|(public, token)| {
                    Pairing::new(public, token.clone())
                        .map_err(|err| tracing::error!(%err, "cannot make a pairing link"))
                        .ok()
                });
                sent = next;
                tx.send_replace(pairing);
            }
            tokio::select! {
                changed = status.changed() => if changed.is_err() { return },
                _ = tx.closed() => return,
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_directory_that_does_not_exist_is_named() {
        let err = session_dir(Some("/nonexistent/project".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the session directory /nonexistent/project does not exist"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            session_dir(Some(dir.path().into())).unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }
}
