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
use chroxy::launch::{api_token, session_dir, Launch, StartArgs, TunnelChoice};
use chroxy::pairing::Pairing;
use chroxy::secrets::{ApiToken, Secrets};
use chroxy::session::{Hub, SessionsConfig};
use chroxy::store::Paths;
use chroxy::worker::WorkerSignals;

/// What phones and the terminal are told in demo mode.
const DEMO_NOTICE: &str = "DEMO mode: answers come from Chroxy's built-in scripted model, not Claude. Start Chroxy without --demo (after `claude` is installed and logged in) for the real thing.";

/// Said by `chroxy start` instead of the pairing when its output is not a terminal.
const PAIRING_ON_TERMINALS_ONLY: &str = "The pairing link and QR code hold the token, so they are printed only to a terminal (this output is not one, and may be kept in a log): run `chroxy pair --format terminal` in a terminal, or open the tray app's window.";

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
    /// Run Chroxy: the supervisor that keeps a healthy worker behind the public port,
    /// with a status page on the second port.
    Start(StartArgs),
    /// Show what the running supervisor is doing (or that none runs).
    Status {
        /// Print the status page's JSON.
        #[arg(long)]
        json: bool,
    },
    /// Add a chroxy binary as a new release and promote it as a canary. Run from
    /// anything but an interactive terminal, it waits for a person's approval.
    Deploy {
        /// The new `chroxy` binary.
        #[arg(required_unless_present_any = ["approve", "refuse"])]
        binary: Option<PathBuf>,
        /// Approve the deploy awaiting approval (at a terminal).
        #[arg(long, conflicts_with_all = ["binary", "refuse"])]
        approve: bool,
        /// Refuse the deploy awaiting approval (at a terminal).
        #[arg(long, conflicts_with = "binary")]
        refuse: bool,
    },
    /// Switch back to the known-good release (or another one) and restart.
    Rollback {
        /// Release id (`chroxy releases` lists them); default: known-good.
        #[arg(long)]
        to: Option<String>,
    },
    /// List the releases in the store.
    Releases,
    /// Check what Chroxy needs on this machine, and say how to fix what is missing.
    Doctor {
        /// The public port to check.
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// The status page port to check.
        #[arg(long, default_value_t = 8766)]
        status_port: u16,
    },
    /// Print the pairing link (or its QR code) a phone needs to connect.
    Pair {
        /// `url` (the https link the QR encodes), `chroxy` (for the Chroxy app), `svg`
        /// (the QR code as SVG) or `terminal` (the QR code as text).
        #[arg(long, value_enum, default_value_t = PairFormat::Url)]
        format: PairFormat,
    },
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
    /// Print every rule: by project directory, then those kept to one session.
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
    Show {
        /// Print the admin token instead (status-page actions: rollback, restart, reconnect).
        #[arg(long)]
        admin: bool,
    },
    /// Store your named Cloudflare tunnel's token, read from standard input.
    SetTunnel,
    /// Replace the API token: every paired phone must scan the new QR code.
    Rotate,
}

impl Command {
    /// The commands an agent's tools must not run, by name: all but those that only
    /// read what the status page shows anyway. An allow-list, so a command added later
    /// is kept from agents until someone decides otherwise: the others print a token or
    /// a pairing, open the keyring (`start`, a hand-run `worker`), change the code that
    /// holds the token (`deploy`, `rollback`) or the rules that let tools run.
    fn kept_from_agents(&self) -> Option<&'static str> {
        match self {
            Command::Status { .. }
            | Command::Releases
            | Command::Doctor { .. }
            | Command::Rules {
                action: RulesAction::List,
            } => None,
            Command::Start(_) => Some("start"),
            Command::Deploy { .. } => Some("deploy"),
            Command::Rollback { .. } => Some("rollback"),
            Command::Pair { .. } => Some("pair"),
            Command::Worker { .. } => Some("worker"),
            Command::Token { .. } => Some("token"),
            Command::Rules { .. } => Some("rules remove"),
        }
    }
}

/// `chroxy pair --format`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum PairFormat {
    Url,
    Chroxy,
    Svg,
    Terminal,
}

fn main() -> Result<()> {
    chroxy::process::keep_memory_private();
    let cli = Cli::parse();
    if let Some(what) = cli.command.kept_from_agents() {
        refuse_inside_agent(what)?;
    }
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
            let result = runtime.block_on(run_worker(cli.home, paths, port, cwd, demo, supervised));
            if let (true, Err(err)) = (supervised, &result) {
                let cause = match err.downcast_ref::<chroxy::config::ConfigError>() {
                    Some(_) => chroxy::control::FatalCause::Config,
                    None => chroxy::control::FatalCause::Other,
                };
                chroxy::worker::say_fatal(cause, format!("{err:#}"));
            }
            result
        }
        Command::Start(args) => {
            init_logging();
            let installed = std::env::current_exe().context("finding the chroxy binary")?;
            let launch = args.launch(cli.home, paths, TunnelChoice::Quick, installed)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run_supervisor(launch))
        }
        Command::Status { json } => block_on(show_status(&paths, json)),
        Command::Deploy {
            binary: Some(binary),
            ..
        } => block_on(deploy(&paths, &secrets(&cli.home, &paths), &binary)),
        Command::Deploy { approve, .. } => {
            block_on(answer_deploy(&paths, &secrets(&cli.home, &paths), approve))
        }
        Command::Rollback { to } => block_on(rollback(&paths, &secrets(&cli.home, &paths), to)),
        Command::Releases => list_releases(&paths),
        Command::Doctor { port, status_port } => doctor(&cli.home, &paths, port, status_port),
        Command::Pair { format } => block_on(pair(&paths, &secrets(&cli.home, &paths), format)),
        Command::Rules { action } => rules(&paths, action),
        Command::Token {
            action: TokenAction::SetTunnel,
        } => {
            let mut token = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut token)
                .context("reading the tunnel token from standard input")?;
            if token.trim().is_empty() {
                anyhow::bail!(
                    "no token on standard input; use `chroxy token set-tunnel < token.txt`"
                );
            }
            secrets(&cli.home, &paths).set_tunnel_token(&token)?;
            println!("stored the named tunnel's token; start with `chroxy start --tunnel named`");
            Ok(())
        }
        Command::Token {
            action: TokenAction::Rotate,
        } => block_on(rotate(&paths, &secrets(&cli.home, &paths))),
        Command::Token {
            action: TokenAction::Show { admin },
        } => {
            let secrets = secrets(&cli.home, &paths);
            let token = if admin {
                secrets.admin_token()?
            } else {
                secrets.api_token()?
            };
            println!("{}", token.expose());
            Ok(())
        }
    }
}

/// Refuses `chroxy <what>` when a Claude Code agent's command runs it: an agent that
/// asks for the token of the machine it works on must not get it by running us.
fn refuse_inside_agent(what: &str) -> Result<()> {
    match chroxy::agent::agent_ancestor() {
        None => Ok(()),
        Some(pid) => anyhow::bail!(
            "`chroxy {what}` refused: it was started from inside a Claude Code agent that Chroxy runs (process {pid}), and agents get no access to Chroxy's tokens, pairing, releases or rules. Run it from your own terminal."
        ),
    }
}

/// This home's secrets: the OS keyring, or files where there is none. Blocking.
fn secrets(home: &Option<PathBuf>, paths: &Paths) -> Secrets {
    Secrets::open(paths, home.as_deref())
}

fn block_on<F: std::future::Future<Output = Result<()>>>(f: F) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(f)
}

/// `chroxy start`: runs until SIGTERM or Ctrl-C (a second one stops waiting for drains).
async fn run_supervisor(launch: Launch) -> Result<()> {
    let demo = launch.demo;
    let shutdown = CancellationToken::new();
    let force = CancellationToken::new();
    let started = chroxy::launch::start(launch, shutdown.clone(), force.clone()).await?;
    let supervisor = started.supervisor;
    println!(
        "Chroxy is running: phones connect to http://127.0.0.1:{}/ — status page http://127.0.0.1:{}/",
        supervisor.public_port(),
        supervisor.status_port()
    );
    // The link holds the token: a file or a pipe is where logs are collected.
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        tokio::spawn(print_pairing(started.pairing));
    } else {
        println!("{PAIRING_ON_TERMINALS_ONLY}");
    }
    if demo {
        println!("{DEMO_NOTICE}");
    }
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            tracing::error!("cannot listen for SIGTERM");
            return;
        };
        for round in 0.. {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            if round == 0 {
                tracing::info!("stopping: draining the worker (press Ctrl-C again to force)");
                shutdown.cancel();
            } else {
                force.cancel();
                return;
            }
        }
    });
    supervisor.wait().await;
    Ok(())
}

/// The pairing for this home: the running supervisor's tunnel URL if it has one, else
/// the configured public URL, else its public port (or the default one).
async fn pairing(paths: &Paths, secrets: &Secrets) -> Result<Pairing> {
    use chroxy::supervisor::{instance, remote};
    let config = Config::load(&paths.config_file())?;
    let (tunnel_url, port) = match instance::running(paths) {
        Some(info) => {
            let status = remote::status(info.status_port).await?;
            (status.tunnel.url, info.public_port)
        }
        None => (None, 8765),
    };
    let url = chroxy::pairing::public_url(
        tunnel_url.as_deref(),
        config.tunnel.public_url.as_deref(),
        port,
    );
    Ok(Pairing::new(&url, api_token(secrets)?)?)
}

async fn pair(paths: &Paths, secrets: &Secrets, format: PairFormat) -> Result<()> {
    let pairing = pairing(paths, secrets).await?;
    let out = match format {
        PairFormat::Url => pairing.link(),
        PairFormat::Chroxy => pairing.chroxy_link(),
        PairFormat::Svg => pairing.svg()?,
        PairFormat::Terminal => pairing.terminal()?,
    };
    println!("{out}");
    Ok(())
}

/// Prints the link and QR a phone scans, now and whenever it changes (a new tunnel URL,
/// a rotated token). Only to a terminal.
async fn print_pairing(mut pairing: tokio::sync::watch::Receiver<Option<Pairing>>) {
    let mut printed: Option<String> = None;
    loop {
        let current = pairing.borrow_and_update().clone();
        if let Some(p) = current {
            let link = p.link();
            if printed.as_ref() != Some(&link) {
                if let Ok(qr) = p.terminal() {
                    println!("{qr}");
                }
                println!("Scan the code with your phone, or open {link}");
                printed = Some(link);
            }
        }
        if pairing.changed().await.is_err() {
            return;
        }
    }
}

fn doctor(home: &Option<PathBuf>, paths: &Paths, port: u16, status_port: u16) -> Result<()> {
    use chroxy::doctor::{Inputs, Verdict};
    let config = Config::load(&paths.config_file())?;
    let env_path = |key: &str| {
        std::env::var_os(key)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let inputs = Inputs {
        paths: paths.clone(),
        claude: env_path("CHROXY_CLAUDE").or(config.worker.claude.clone()),
        cloudflared: env_path("CHROXY_CLOUDFLARED"),
        ports: [port, status_port],
    };
    let checks = chroxy::doctor::run(&inputs, &secrets(home, paths));
    for c in &checks {
        let mark = match c.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
        };
        println!("{mark} {:<12} {}", c.name, c.detail);
    }
    let failed = checks.iter().filter(|c| c.verdict == Verdict::Fail).count();
    if failed > 0 {
        anyhow::bail!("{failed} check(s) failed; see above for how to fix each");
    }
    Ok(())
}

async fn rotate(paths: &Paths, secrets: &Secrets) -> Result<()> {
    use chroxy::supervisor::{instance, remote};
    secrets.rotate_api_token()?;
    println!("the API token was replaced; paired phones must scan the new QR code (`chroxy pair --format terminal`)");
    if let Some(info) = instance::running(paths) {
        let admin = secrets.admin_token()?;
        println!(
            "{}",
            remote::act(info.status_port, &admin, "reload-token", None).await?
        );
    }
    Ok(())
}

async fn show_status(paths: &Paths, json: bool) -> Result<()> {
    use chroxy::supervisor::{instance, remote};
    let Some(info) = instance::running(paths) else {
        let releases = chroxy::supervisor::release::Releases::open(paths)
            .status()
            .ok();
        if json {
            println!(
                "{}",
                serde_json::json!({"state": "stopped", "releases": releases})
            );
        } else {
            println!("Chroxy is not running (start it with `chroxy start`)");
        }
        std::process::exit(3);
    };
    let status = remote::status(info.status_port).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&status)?);
        return Ok(());
    }
    let state = serde_json::to_value(status.state)?;
    println!("state:        {}", state.as_str().unwrap_or_default());
    if let Some(reason) = &status.failed_reason {
        println!("reason:       {reason}");
    }
    if status.demo {
        println!("mode:         DEMO (scripted model)");
    }
    println!("supervisor:   {}", instance::describe(&info));
    let w = &status.worker;
    println!(
        "worker:       release {} pid {} port {} restarts {}",
        w.release.as_deref().unwrap_or("-"),
        w.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        w.port.map(|p| p.to_string()).unwrap_or_else(|| "-".into()),
        w.restarts
    );
    println!(
        "releases:     current {} known-good {}",
        status.releases.current.as_deref().unwrap_or("-"),
        status.releases.known_good.as_deref().unwrap_or("-")
    );
    let now = chroxy::protocol::now_ms();
    if let Some(c) = &status.canary {
        let left = c.ends_at.saturating_sub(now) / 1000;
        println!(
            "canary:       release {} on trial, known-good in {left} s unless it fails ({} of {} errors)",
            c.release, c.errors, c.error_limit
        );
    }
    if let Some(p) = &status.pending_deploy {
        let left = p.expires_at.saturating_sub(now) / 1000;
        println!("pending:      deploy of release {} awaits approval for {left} s more (`chroxy deploy --approve` or `--refuse`)", p.release);
    }
    println!(
        "clients:      {}   sessions: {}",
        status.clients, status.sessions
    );
    println!(
        "tunnel:       {} ({})",
        status.tunnel.mode, status.tunnel.state
    );
    if !status.events.is_empty() {
        println!("recent events:");
        for e in status.events.iter().rev().take(10) {
            let ago = format!("{} s ago", now.saturating_sub(e.at) / 1000);
            println!("  {ago:>10}  {:<18} {}", e.kind, e.message);
        }
    }
    Ok(())
}

async fn deploy(paths: &Paths, secrets: &Secrets, binary: &std::path::Path) -> Result<()> {
    use chroxy::supervisor::{instance, release::Releases, remote, status::DeployOrigin};
    let origin = DeployOrigin::of_this_terminal();
    let releases = Releases::open(paths);
    let manifest = releases.add(binary)?;
    println!(
        "added release {} (chroxy {} {}, sha256 {})",
        manifest.id,
        manifest.version,
        manifest.commit,
        &manifest.sha256[..12.min(manifest.sha256.len())]
    );
    match instance::running(paths) {
        Some(info) => {
            let admin = secrets.admin_token()?;
            let body = serde_json::json!({ "release": manifest.id, "origin": origin });
            println!(
                "{}",
                remote::act(info.status_port, &admin, "deploy", Some(body)).await?
            );
        }
        None if origin == DeployOrigin::Desk => {
            releases.set_current(&manifest.id)?;
            println!("Chroxy is not running: release {} will start as a canary at the next `chroxy start`", manifest.id);
        }
        None => println!("Chroxy is not running, and this was not run at a terminal: release {} was added but not made current; run `chroxy deploy` at a terminal to deploy it", manifest.id),
    }
    Ok(())
}

/// `chroxy deploy --approve|--refuse`: a person at the desk answers a remote deploy.
async fn answer_deploy(paths: &Paths, secrets: &Secrets, approve: bool) -> Result<()> {
    use chroxy::supervisor::{instance, remote, status::DeployOrigin};
    if DeployOrigin::of_this_terminal() != DeployOrigin::Desk {
        anyhow::bail!("a deploy is approved or refused by a person: run this at a terminal, or click in the Chroxy window or on the status page");
    }
    let info =
        instance::running(paths).context("Chroxy is not running: no deploy awaits approval")?;
    let admin = secrets.admin_token()?;
    println!(
        "{}",
        remote::answer_deploy(info.status_port, &admin, approve).await?
    );
    Ok(())
}

async fn rollback(paths: &Paths, secrets: &Secrets, to: Option<String>) -> Result<()> {
    use chroxy::supervisor::{instance, release::Releases, remote};
    match instance::running(paths) {
        Some(info) => {
            let admin = secrets.admin_token()?;
            let body = to.map(|id| serde_json::json!({ "to": id }));
            println!(
                "{}",
                remote::act(info.status_port, &admin, "rollback", body).await?
            );
        }
        None => {
            let releases = Releases::open(paths);
            let target = match to {
                Some(id) => id,
                None => releases.known_good()?,
            };
            releases.verify(&target)?;
            releases.set_current(&target)?;
            println!("Chroxy is not running: release {target} is now current and starts at the next `chroxy start`");
        }
    }
    Ok(())
}

fn list_releases(paths: &Paths) -> Result<()> {
    let releases = chroxy::supervisor::release::Releases::open(paths);
    let status = releases.status()?;
    if status.list.is_empty() {
        println!("no releases yet (the first `chroxy start` registers the installed binary as release 0)");
    }
    for r in &status.list {
        let mut marks = Vec::new();
        if status.current.as_deref() == Some(r.id.as_str()) {
            marks.push("current");
        }
        if status.known_good.as_deref() == Some(r.id.as_str()) {
            marks.push("known-good");
        }
        if let Some(why) = &r.damaged {
            println!("{:<12} DAMAGED: {why}  {}", r.id, marks.join(", "));
            continue;
        }
        println!(
            "{:<12} chroxy {:<10} {:<14} sha256 {}  {}",
            r.id,
            r.version,
            r.commit,
            &r.sha256[..12.min(r.sha256.len())],
            marks.join(", ")
        );
    }
    Ok(())
}

fn rules(paths: &Paths, action: RulesAction) -> Result<()> {
    let store = chroxy::rules::RuleStore::new(paths);
    match action {
        RulesAction::List => {
            let file = store.load()?;
            let sessions: Vec<_> = chroxy::session::read_all(&paths.sessions_dir())
                .into_iter()
                .filter_map(|(_, rec)| rec.ok())
                .filter(|rec| !rec.rules.is_empty())
                .collect();
            if file.projects.is_empty() && sessions.is_empty() {
                println!("no rules (phones add them with \"Always\" on a permission prompt)");
            }
            let show = |rule: &chroxy::rules::Rule| match rule.inert() {
                Some(why) => println!("  {rule}    [allows nothing: {why}; remove it]"),
                None => println!("  {rule}"),
            };
            for (project, rules) in &file.projects {
                println!("{} (every session in it)", project.display());
                rules.iter().for_each(show);
            }
            for rec in &sessions {
                println!(
                    "{} (session {} \"{}\" only; gone when it is closed)",
                    rec.cwd.display(),
                    rec.session_id,
                    rec.name
                );
                rec.rules.iter().for_each(show);
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
    home: Option<PathBuf>,
    paths: Paths,
    port: u16,
    cwd: Option<PathBuf>,
    demo: bool,
    supervised: bool,
) -> Result<()> {
    let config = Config::load(&paths.config_file())?;
    // A supervised worker never opens the keyring (a release being tried out gets no
    // more than it needs): its supervisor hands it the token on stdin.
    let (token, voucher) = match std::env::var("CHROXY_TOKEN") {
        // A person's choice (then visible to the worker's whole process tree, README
        // "Environment"), or a supervisor from before the hand-over on stdin.
        Ok(t) if !t.trim().is_empty() => (ApiToken::new(t.trim()), None),
        _ if supervised => tokio::task::spawn_blocking(read_handed_token).await??,
        _ => {
            let (home, paths) = (home.clone(), paths.clone());
            let token = tokio::task::spawn_blocking(move || {
                Secrets::open(&paths, home.as_deref()).api_token()
            })
            .await??;
            (token, None)
        }
    };
    let claude = std::env::var_os("CHROXY_CLAUDE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| config.worker.claude.clone());
    let cwd = session_dir(cwd)?;

    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
        format!(
            "cannot listen on {addr}; is another Chroxy running? choose another port with --port"
        )
    })?;
    let bound = listener.local_addr()?.port();

    let stop = CancellationToken::new();
    let mut agent_env = AgentEnv::default();
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
        allow_bypass: chroxy::agent::bypass_allowed(
            nix::unistd::geteuid().is_root(),
            std::env::var_os("IS_SANDBOX").as_deref(),
        ),
        welcome_notice: demo.then(|| DEMO_NOTICE.to_owned()),
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
        chroxy::worker::count_panics(&signals);
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
        chroxy::worker::Credentials::new(token, voucher),
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

/// The token (and signing key) a supervisor writes as the first line on a supervised
/// worker's stdin (blocking). The rest of stdin, the supervisor's commands, stays
/// buffered for `follow_supervisor`: both read through the process's one stdin buffer.
fn read_handed_token() -> Result<(ApiToken, Option<chroxy::forwarded::Voucher>)> {
    use std::io::{BufRead, Read};
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .take(64 * 1024)
        .read_line(&mut line)
        .context("reading the token from the supervisor")?;
    chroxy::control::token_from_line(&line).context(
        "a supervised worker needs its token as the first line on stdin (`chroxy start` hands it over; to run a worker by hand, leave out --supervised)",
    )
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
