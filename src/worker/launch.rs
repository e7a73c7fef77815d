//! A worker as `chroxy worker` starts it — the twin in shape of [`crate::launch::start`],
//! which starts the supervisor: its token (handed over on stdin by a supervisor, else
//! `CHROXY_TOKEN`, else this home's keyring), its listener, its sessions (and the demo
//! model), the `ready` line, the control channel when supervised, and an orderly stop on
//! SIGTERM / Ctrl-C.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::{Credentials, WorkerError, WorkerSignals};
use crate::agent::AgentEnv;
use crate::config::{Config, ConfigError};
use crate::control::{FatalCause, WorkerEvent};
use crate::demo::DemoError;
use crate::environment::{claude_binary, env_token, session_dir, EnvironmentError};
use crate::secrets::{Secrets, SecretsError};
use crate::session::{Hub, SessionsConfig};
use crate::signals::StopSignals;
use crate::store::Paths;

/// The options of `chroxy worker`.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Port on 127.0.0.1; 0 picks a free one (printed in the `ready` line on stdout).
    #[arg(long, default_value_t = 8765)]
    pub port: u16,
    /// Directory of the default session.
    #[arg(long)]
    pub cwd: Option<PathBuf>,
    /// Answer with Chroxy's built-in scripted model instead of Anthropic's API, to
    /// try everything without an account (Claude Code itself is still needed).
    #[arg(long)]
    pub demo: bool,
    /// Started by a supervisor: follow its commands on stdin, send heartbeats on
    /// stdout, and stop when stdin closes.
    #[arg(long, hide = true)]
    pub supervised: bool,
}

impl WorkerArgs {
    /// What to start: these options in the home `paths` (`home`: `CHROXY_HOME` as given).
    pub fn launch(self, home: Option<PathBuf>, paths: Paths) -> Launch {
        Launch {
            home,
            paths,
            port: self.port,
            cwd: self.cwd,
            demo: self.demo,
            supervised: self.supervised,
        }
    }
}

/// What to start.
#[derive(Debug, Clone)]
pub struct Launch {
    /// `CHROXY_HOME` as given, if any (where the keyring entry of a hand-run worker is).
    pub home: Option<PathBuf>,
    /// The resolved directories.
    pub paths: Paths,
    /// Port on 127.0.0.1; 0 picks a free one (said in the `ready` line).
    pub port: u16,
    /// Directory of the default session (default: the current one).
    pub cwd: Option<PathBuf>,
    /// Answer with the built-in scripted model.
    pub demo: bool,
    /// Started by a supervisor: token on stdin, its commands on stdin, heartbeats out.
    pub supervised: bool,
}

/// Why the worker could not start or stopped serving; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The keyring (or its fallback files) failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// Stdin could not be read.
    #[error("reading the token from the supervisor")]
    ReadToken(#[source] std::io::Error),
    /// Stdin did not start with a token.
    #[error("a supervised worker needs its token as the first line on stdin (`chroxy start` hands it over; to run a worker by hand, leave out --supervised)")]
    NoHandedToken,
    /// The session directory does not exist.
    #[error(transparent)]
    SessionDir(#[from] EnvironmentError),
    /// The port is taken.
    #[error("cannot listen on {addr}; is another Chroxy running? choose another port with --port")]
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The demo model has no port.
    #[error("starting the demo model")]
    DemoListen(#[source] std::io::Error),
    /// The demo model did not start.
    #[error(transparent)]
    Demo(#[from] DemoError),
    /// Stdout (the `ready` line) or the listener failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The server failed.
    #[error(transparent)]
    Serve(#[from] WorkerError),
}

impl LaunchError {
    /// What the supervisor is told this was: a config error is a person's to fix, and
    /// no reason to roll a release back.
    pub fn cause(&self) -> FatalCause {
        match self {
            LaunchError::Config(_) => FatalCause::Config,
            _ => FatalCause::Other,
        }
    }
}

/// Runs a worker until it is stopped (SIGTERM, Ctrl-C, or its supervisor), then stops its
/// agents and saves its sessions. A supervised worker that fails tells its supervisor why
/// on stdout before returning the error.
pub async fn launch(launch: Launch) -> Result<(), LaunchError> {
    let supervised = launch.supervised;
    let result = run(launch).await;
    if let (true, Err(err)) = (supervised, &result) {
        super::say_fatal(err.cause(), with_sources(err));
    }
    result
}

async fn run(launch: Launch) -> Result<(), LaunchError> {
    let Launch {
        home,
        paths,
        port,
        cwd,
        demo,
        supervised,
    } = launch;
    let config = Config::load(&paths.config_file())?;
    // A supervised worker never opens the keyring (a release being tried out gets no
    // more than it needs): its supervisor hands it the token on stdin.
    let (token, voucher, identity) = match env_token() {
        // A person's choice, or a supervisor from before the hand-over on stdin.
        Some(token) => (token, None, None),
        None if supervised => {
            let handed = blocking(read_handed_token).await?;
            (handed.token, handed.voucher, handed.identity)
        }
        None => {
            let (paths, home) = (paths.clone(), home.clone());
            let token = blocking(move || Secrets::open(&paths, home.as_deref()).api_token());
            (token.await?, None, None)
        }
    };
    let identity = match identity {
        Some(identity) => identity,
        None => {
            let (paths, home) = (paths.clone(), home.clone());
            blocking(move || Secrets::open(&paths, home.as_deref()).identity()).await?
        }
    };
    let claude = claude_binary(&config.worker);
    let cwd = session_dir(cwd)?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| LaunchError::Listen { addr, source })?;
    let bound = listener.local_addr()?.port();

    let stop = CancellationToken::new();
    let mut agent_env = AgentEnv::default();
    if demo {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .map_err(LaunchError::DemoListen)?;
        let (model, _task) = crate::demo::spawn(listener, stop.child_token())?;
        agent_env.set = model.cli_env();
        // The demo's conversations stay out of the user's real Claude Code settings.
        let claude_dir = paths.state_dir().join("demo-claude");
        agent_env
            .set
            .push(("CLAUDE_CONFIG_DIR".into(), claude_dir.display().to_string()));
        tracing::info!(model = %model.base_url(), "demo mode: answers come from Chroxy's scripted model");
    }
    // Where the CLI keeps the user's settings, as it finds it.
    let claude_config_dir = agent_env
        .set
        .iter()
        .find(|(key, _)| key == "CLAUDE_CONFIG_DIR")
        .map(|(_, dir)| PathBuf::from(dir))
        .or_else(|| std::env::var_os("CLAUDE_CONFIG_DIR").map(PathBuf::from))
        .or_else(|| directories::BaseDirs::new().map(|b| b.home_dir().join(".claude")));
    // Pushes go through the supervisor, which keeps the signing key and hands this
    // worker only its public half.
    let (push, notices) = crate::push::WorkerPush::new(
        &paths,
        &config.push,
        supervised,
        std::env::var(crate::push::PUBLIC_KEY_VAR).ok(),
    );
    // A phone's deploy request goes to the supervisor; one at a time is plenty.
    let (deploy_asks, deploys) = tokio::sync::mpsc::channel(1);
    let deploy = supervised.then(|| {
        crate::session::DeployLink::new(deploy_asks, crate::devices::Devices::new(&paths))
    });
    // The supervisor holds the CLIs' pipes too, so that they outlive this worker.
    // Its CLIs are marked under this worker's mark, which the supervisor set.
    let keeper_at = std::env::var_os(crate::keeper::KEEPER_VAR)
        .zip(std::env::var(crate::process::WORKER_MARK).ok());
    let (keeper, adopted) = match keeper_at {
        Some((path, mark)) if supervised => {
            match crate::keeper::Link::connect(path.as_ref(), &mark).await {
                Ok((link, adopted)) => (Some(link), Some(adopted)),
                Err(err) => {
                    tracing::warn!(%err, "CLIs will not outlive this worker");
                    (None, None)
                }
            }
        }
        _ => (None, None),
    };
    let hub = Hub::start(SessionsConfig {
        sessions_dir: paths.sessions_dir(),
        claude,
        default_cwd: cwd.clone(),
        coalesce: config.worker.coalesce(),
        models: config.worker.models.clone(),
        agent_env,
        permission_timeout: config.worker.permission_timeout(),
        interrupt_grace: config.worker.interrupt_grace(),
        warm_clis: config.worker.warm_clis,
        cli_idle: config.worker.cli_idle(),
        rules: crate::rules::RuleStore::new(&paths),
        spend: crate::session::spend::Spend::new(&paths),
        allow_bypass: crate::agent::bypass_allowed(
            nix::unistd::geteuid().is_root(),
            std::env::var_os("IS_SANDBOX").as_deref(),
        ),
        claude_config_dir,
        welcome_notice: demo.then(|| crate::demo::NOTICE.to_owned()),
        push,
        deploy,
        keeper,
        standby: supervised
            && std::env::var_os(crate::control::STANDBY_VAR).is_some_and(|v| v == "1"),
    })
    .await;

    tokio::spawn(stop_on_signal(hub.clone(), stop.clone()));

    let ready = WorkerEvent::Ready {
        port: bound,
        pid: std::process::id(),
    };
    let mut out = std::io::stdout().lock();
    out.write_all(ready.to_line().as_bytes())?;
    out.flush()?;
    drop(out);
    tracing::info!(port = bound, cwd = %cwd.display(), "worker ready");

    let signals = WorkerSignals::default();
    let control = supervised.then(|| {
        super::count_panics(&signals);
        tokio::spawn(super::follow_supervisor(
            tokio::io::stdin(),
            tokio::io::stdout(),
            hub.clone(),
            signals.clone(),
            config.worker.heartbeat(),
            super::Upward {
                notices,
                deploys,
                adopted,
            },
            stop.clone(),
        ))
    });
    let served = super::serve(
        listener,
        hub.clone(),
        Credentials::new(
            token,
            voucher,
            identity,
            crate::devices::Devices::new(&paths),
        )
        .approving(config.security.approve_new_devices)
        .allowing_tokens(config.security.allow_token_auth),
        config.worker,
        cwd.display().to_string(),
        signals,
        stop.clone(),
    )
    .await;
    hub.shutdown().await;
    if let Some(control) = control {
        stop.cancel();
        let _ = control.await;
        let mut out = tokio::io::stdout();
        let _ = tokio::io::AsyncWriteExt::write_all(
            &mut out,
            WorkerEvent::DrainDone.to_line().as_bytes(),
        )
        .await;
        let _ = tokio::io::AsyncWriteExt::flush(&mut out).await;
    }
    tracing::info!("worker stopped");
    Ok(served?)
}

/// Runs `f` off the async runtime (stdin and the keyring block); its panic stays one.
async fn blocking<T, E>(f: impl FnOnce() -> Result<T, E> + Send + 'static) -> Result<T, LaunchError>
where
    T: Send + 'static,
    E: Into<LaunchError> + Send + 'static,
{
    match tokio::task::spawn_blocking(f).await {
        Ok(result) => result.map_err(Into::into),
        Err(err) => std::panic::resume_unwind(err.into_panic()),
    }
}

/// The token (and keys) a supervisor writes as the first line on a supervised worker's
/// stdin (blocking). The rest of stdin, the supervisor's commands, stays buffered for
/// `follow_supervisor`: both read through the process's one stdin buffer.
fn read_handed_token() -> Result<crate::control::Handed, LaunchError> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(64 * 1024)
        .read_line(&mut line)
        .map_err(LaunchError::ReadToken)?;
    crate::control::token_from_line(&line).ok_or(LaunchError::NoHandedToken)
}

/// SIGTERM or Ctrl-C starts an orderly stop: while phones are still connected, input
/// is refused and waiting prompts are denied and announced; then connections close with
/// `server_shutdown`, agents stop and sessions are saved (after `serve` returns).
async fn stop_on_signal(hub: Hub, stop: CancellationToken) {
    let mut signals = match StopSignals::listen() {
        Ok(signals) => signals,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM and SIGINT");
            return;
        }
    };
    tokio::select! {
        _ = signals.next() => {}
        // Stopped for another reason (the server failed): nothing to drain.
        _ = stop.cancelled() => return,
    }
    tracing::info!("stopping");
    hub.drain().await;
    stop.cancel();
}

/// `err` and its sources, `: `-separated (what the supervisor shows as the reason).
fn with_sources(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_config_error_is_reported_as_one_and_the_reason_names_every_cause() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "[worker]\nno_such_key = 1\n").unwrap();
        let config = LaunchError::from(Config::load(&file).unwrap_err());
        assert_eq!(config.cause(), FatalCause::Config);
        assert!(with_sources(&config).contains("config.toml"), "{config}");

        let taken = LaunchError::Listen {
            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 8765)),
            source: std::io::Error::from(std::io::ErrorKind::AddrInUse),
        };
        assert_eq!(taken.cause(), FatalCause::Other);
        let reason = with_sources(&taken);
        assert!(
            reason.starts_with("cannot listen on 127.0.0.1:8765; ")
                && reason.ends_with(&format!(
                    ": {}",
                    std::io::Error::from(std::io::ErrorKind::AddrInUse)
                )),
            "{reason}"
        );
    }
}
