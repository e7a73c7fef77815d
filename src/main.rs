//! The `chroxy` command line: a thin shell that resolves paths, settings and secrets
//! from flags and the environment, then hands plain values to the library.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

use chroxy::agent::AgentEnv;
use chroxy::config::Config;
use chroxy::control::WorkerEvent;
use chroxy::secrets::ApiToken;
use chroxy::session::{Hub, SessionsConfig};
use chroxy::store::Paths;
use chroxy::worker::WorkerSignals;

/// Supervise Claude Code on this machine from your phone.
#[derive(Parser)]
#[command(version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("CHROXY_COMMIT"), ")"), about, long_about = None)]
struct Cli {
    /// Keep every file (config, token, sessions, logs) under this directory.
    #[arg(long, env = "CHROXY_HOME", global = true)]
    home: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server worker that phones connect to (normally started by `chroxy start`).
    Worker {
        /// Port on 127.0.0.1; 0 picks a free one (printed in the `ready` line on stdout).
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// Directory of the default session.
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Answer with Chroxy's built-in scripted model instead of Anthropic's API, to
        /// try everything without an account (Claude Code itself is still needed).
        #[arg(long)]
        demo: bool,
        /// Started by a supervisor: follow its commands on stdin, send heartbeats on
        /// stdout, and stop when stdin closes.
        #[arg(long, hide = true)]
        supervised: bool,
    },
    /// Show the API token phones authenticate with.
    Token {
        #[command(subcommand)]
        action: TokenAction,
    },
    /// The "allow always" permission rules phones have created.
    Rules {
        #[command(subcommand)]
        action: RulesAction,
    },
}

#[derive(Subcommand)]
enum RulesAction {
    /// Print every rule, by project directory.
    List,
    /// Delete a rule, as `list` prints it (e.g. "Bash(touch made.txt)").
    Remove {
        /// The rule.
        rule: String,
        /// Only in this project directory (default: every project).
        #[arg(long)]
        project: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum TokenAction {
    /// Print the token (keep it secret: it grants control of Claude Code on this machine).
    Show,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let paths = Paths::resolve(cli.home.clone())?;
    match cli.command {
        Command::Worker {
            port,
            cwd,
            demo,
            supervised,
        } => {
            init_logging();
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run_worker(paths, port, cwd, demo, supervised))
        }
        Command::Rules { action } => rules(&paths, action),
        Command::Token {
            action: TokenAction::Show,
        } => {
            let token = ApiToken::load_or_create(&paths).with_context(|| {
                format!("reading the token in {}", paths.token_file().display())
            })?;
            println!("{}", token.expose());
            Ok(())
        }
    }
}

fn rules(paths: &Paths, action: RulesAction) -> Result<()> {
    let store = chroxy::rules::RuleStore::new(paths);
    match action {
        RulesAction::List => {
            let file = store.load()?;
            if file.projects.is_empty() {
                println!("no rules (phones add them with \"Always\" on a permission prompt)");
            }
            for (project, rules) in &file.projects {
                println!("{}", project.display());
                for rule in rules {
                    println!("  {rule}");
                }
            }
        }
        RulesAction::Remove { rule, project } => {
            let project = project
                .map(|p| {
                    p.canonicalize()
                        .with_context(|| format!("{} does not exist", p.display()))
                })
                .transpose()?;
            let removed = store.remove(project.as_deref(), &rule)?;
            if removed == 0 {
                anyhow::bail!("no rule `{rule}` found; `chroxy rules list` shows them");
            }
            println!("removed {removed} rule(s)");
        }
    }
    Ok(())
}

fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("CHROXY_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

async fn run_worker(
    paths: Paths,
    port: u16,
    cwd: Option<PathBuf>,
    demo: bool,
    supervised: bool,
) -> Result<()> {
    let config = Config::load(&paths.config_file())?;
    // The supervisor hands the token over in the environment, never on a command line.
    let token = match std::env::var("CHROXY_TOKEN") {
        Ok(t) if !t.trim().is_empty() => ApiToken::new(t.trim()),
        _ => ApiToken::load_or_create(&paths)
            .with_context(|| format!("reading the token in {}", paths.token_file().display()))?,
    };
    let claude = std::env::var_os("CHROXY_CLAUDE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| config.worker.claude.clone());
    let cwd = match cwd {
        Some(dir) => dir,
        None => std::env::current_dir().context("reading the current directory")?,
    };
    let cwd = cwd
        .canonicalize()
        .with_context(|| format!("the session directory {} does not exist", cwd.display()))?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}; is another Chroxy running? choose another port with --port"
        )
    })?;
    let bound = listener.local_addr()?.port();

    let stop = CancellationToken::new();
    let mut agent_env = AgentEnv {
        remove: vec!["CHROXY_TOKEN".into()],
        set: vec![],
    };
    if demo {
        let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .await
            .context("starting the demo model")?;
        let (model, _task) = chroxy::demo::spawn(listener, stop.child_token())?;
        agent_env.set = model.cli_env();
        // The demo's conversations stay out of the user's real Claude Code settings.
        let claude_dir = paths.state_dir().join("demo-claude");
        agent_env
            .set
            .push(("CLAUDE_CONFIG_DIR".into(), claude_dir.display().to_string()));
        tracing::info!(model = %model.base_url(), "demo mode: answers come from Chroxy's scripted model");
    }
    let hub = Hub::start(SessionsConfig {
        sessions_dir: paths.sessions_dir(),
        claude,
        default_cwd: cwd.clone(),
        coalesce: config.worker.coalesce(),
        models: config.worker.models.clone(),
        agent_env,
        permission_timeout: config.worker.permission_timeout(),
        interrupt_grace: config.worker.interrupt_grace(),
        rules: chroxy::rules::RuleStore::new(&paths),
        // The CLI refuses to skip permissions for root unless told it is in a sandbox.
        allow_bypass: !nix::unistd::geteuid().is_root() || std::env::var_os("IS_SANDBOX").is_some(),
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
        tokio::spawn(chroxy::worker::follow_supervisor(
            tokio::io::stdin(),
            tokio::io::stdout(),
            hub.clone(),
            signals.clone(),
            config.worker.heartbeat(),
            stop.clone(),
        ))
    });
    let served = chroxy::worker::serve(
        listener,
        hub.clone(),
        token,
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

/// SIGTERM or Ctrl-C starts an orderly stop: while phones are still connected, input
/// is refused and waiting prompts are denied and announced; then connections close with
/// `server_shutdown`, agents stop and sessions are saved (after `serve` returns).
async fn stop_on_signal(hub: Hub, stop: CancellationToken) {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGTERM");
            return;
        }
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
        // Stopped for another reason (the server failed): nothing to drain.
        _ = stop.cancelled() => return,
    }
    tracing::info!("stopping");
    hub.drain().await;
    stop.cancel();
}
