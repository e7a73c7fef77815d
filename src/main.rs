//! The `chroxy` command line: a thin shell that resolves paths, settings and secrets
//! from flags and the environment, then hands plain values to the library — one call
//! per command.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use chroxy::launch::{Launch, StartArgs, StopSwitch, TunnelChoice};
use chroxy::pairing;
use chroxy::secrets::Secrets;
use chroxy::store::Paths;
use chroxy::supervisor::release::ReleaseId;
use chroxy::supervisor::terminal::{self, Presence};

/// Said by `chroxy start` instead of the pairing when its output is not a terminal.
const PAIRING_ON_TERMINALS_ONLY: &str = "The pairing link and QR code hold a one-time pairing code (and the token, while `allow_token_auth` is on), so they are printed only to a terminal (this output is not one, and may be kept in a log): run `chroxy pair --format terminal` in a terminal, or open the tray app's window.";

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
        #[arg(required_unless_present_any = ["approve", "refuse", "source"])]
        binary: Option<PathBuf>,
        /// Build the binary from this source tree (a git checkout of Chroxy) in a
        /// worktree of its own, check it, then deploy it.
        #[arg(long, value_name = "DIR", conflicts_with_all = ["binary", "approve", "refuse"])]
        source: Option<PathBuf>,
        /// With --source: the revision to build (default: HEAD).
        #[arg(long, requires = "source")]
        rev: Option<String>,
        /// With --source: build the tree's uncommitted changes too (the release says so).
        #[arg(long, requires = "source", conflicts_with = "rev")]
        allow_dirty: bool,
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
        to: Option<ReleaseId>,
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
        #[arg(long, value_enum, default_value_t = pairing::Format::Url)]
        format: pairing::Format,
    },
    /// Run the server worker that phones connect to (normally started by `chroxy start`).
    Worker(chroxy::worker::WorkerArgs),
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
    /// The devices that may connect: approve or refuse those waiting, revoke, rename.
    Devices {
        #[command(subcommand)]
        action: chroxy::devices::DevicesCommand,
    },
    /// A named Cloudflare tunnel: an address for phones that stays the same.
    Tunnel {
        #[command(subcommand)]
        action: TunnelAction,
    },
    /// Run Chroxy as a systemd user service (a machine without a desktop).
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand)]
enum TunnelAction {
    /// Set up a named tunnel: says what to create in the Cloudflare dashboard, takes its
    /// Public Hostname and token (the token from a terminal, unseen, or from standard
    /// input: `--hostname H < token.txt`), writes `[tunnel] hostname`, stores the token,
    /// and checks that the hostname reaches this machine.
    Setup {
        /// The tunnel's Public Hostname, e.g. chroxy.example.com (asked for at a terminal).
        #[arg(long)]
        hostname: Option<String>,
        /// The public port the Public Hostname's service points at, as for `chroxy start`.
        #[arg(long, default_value_t = 8765)]
        port: u16,
        /// Only write the settings: do not start cloudflared to check the hostname.
        #[arg(long)]
        no_check: bool,
        /// Fetch the check from this URL instead of https://<hostname> (for tests).
        #[arg(long, hide = true)]
        check_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Write the unit (`~/.config/systemd/user/chroxy.service`) for this home, with the
    /// paths of chroxy, claude and cloudflared as this shell finds them, then enable and
    /// start it. Arguments after `--` go to `chroxy start` (e.g. `-- --tunnel named`).
    Install {
        /// The directory Claude Code works in (default: the current one).
        #[arg(long)]
        cwd: Option<PathBuf>,
        /// Only write the unit; do not ask systemd to start it.
        #[arg(long)]
        no_start: bool,
        /// More `chroxy start` arguments.
        #[arg(last = true)]
        start_args: Vec<String>,
    },
    /// Stop and disable the service, and remove its unit.
    Uninstall,
    /// Whether the service is installed and running, and what it runs.
    Status,
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
    /// holds the token (`deploy`, `rollback`), the rules that let tools run, or which
    /// devices may connect (an agent approving its own stranger).
    fn kept_from_agents(&self) -> Option<&'static str> {
        match self {
            Command::Status { .. }
            | Command::Releases
            | Command::Doctor { .. }
            | Command::Rules {
                action: RulesAction::List,
            }
            | Command::Service {
                action: ServiceAction::Status,
            } => None,
            Command::Start(_) => Some("start"),
            Command::Deploy { .. } => Some("deploy"),
            Command::Rollback { .. } => Some("rollback"),
            Command::Pair { .. } => Some("pair"),
            Command::Worker(_) => Some("worker"),
            Command::Token { .. } => Some("token"),
            Command::Rules { .. } => Some("rules remove"),
            Command::Devices { .. } => Some("devices"),
            // An agent must not make itself a process that outlives its session.
            Command::Service { .. } => Some("service"),
            // It stores a secret, and starts cloudflared with it.
            Command::Tunnel { .. } => Some("tunnel"),
        }
    }
}

fn main() -> Result<()> {
    chroxy::process::keep_memory_private();
    let cli = Cli::parse();
    if let Some(what) = cli.command.kept_from_agents() {
        refuse_inside_agent(what)?;
    }
    let (home, paths) = (cli.home.clone(), Paths::resolve(cli.home)?);
    // This home's secrets: the OS keyring, or files where there is none. Blocking, so
    // opened before the command's runtime starts (the keyring runs its own).
    let secrets = || Secrets::open(&paths, home.as_deref());
    let out = &mut std::io::stdout();
    match cli.command {
        Command::Worker(args) => {
            init_logging();
            let launch = args.launch(home, paths);
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            Ok(runtime.block_on(chroxy::worker::launch(launch))?)
        }
        Command::Start(args) => {
            init_logging();
            let installed = std::env::current_exe().context("finding the chroxy binary")?;
            let launch = args.launch(home, paths, TunnelChoice::Quick, installed)?;
            let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
            runtime.block_on(run_supervisor(launch))
        }
        Command::Status { json } => match block_on(terminal::status(&paths, json, out))? {
            Presence::Running => Ok(()),
            Presence::Stopped => std::process::exit(3),
        },
        Command::Deploy {
            binary: Some(binary),
            ..
        } => block_on(terminal::deploy(&paths, &secrets(), &binary, out)),
        Command::Deploy {
            source: Some(source),
            rev,
            allow_dirty,
            ..
        } => {
            let source = std::path::absolute(&source)
                .with_context(|| format!("finding {}", source.display()))?;
            let request = chroxy::protocol::deploy::BuildRequest {
                source,
                rev,
                allow_dirty,
            };
            block_on(terminal::deploy_source(&paths, &secrets(), request, out))
        }
        Command::Deploy { approve, .. } => {
            block_on(terminal::answer_deploy(&paths, &secrets(), approve, out))
        }
        Command::Rollback { to } => block_on(terminal::rollback(&paths, &secrets(), to, out)),
        Command::Releases => {
            let releases = chroxy::supervisor::release::Releases::open(&paths).status()?;
            print!("{}", releases.to_text());
            Ok(())
        }
        Command::Doctor { port, status_port } => {
            let inputs = chroxy::doctor::Inputs::resolve(&paths, [port, status_port])?;
            Ok(chroxy::doctor::report(&inputs, &secrets(), out)?)
        }
        Command::Pair { format } => block_on(terminal::pair(&paths, &secrets(), format, out)),
        Command::Rules {
            action: RulesAction::List,
        } => {
            print!("{}", chroxy::session::rules_listing(&paths)?);
            Ok(())
        }
        Command::Rules {
            action: RulesAction::Remove { rule, project },
        } => {
            let removed = chroxy::rules::remove(&paths, &rule, project.as_deref())?;
            println!("removed {removed} rule(s)");
            Ok(())
        }
        Command::Service { action } => {
            let unit = chroxy::service::unit_path(&config_home()?);
            let said = match action {
                ServiceAction::Install {
                    cwd,
                    no_start,
                    start_args,
                } => {
                    let spec = service_spec(&paths, home.clone(), cwd, start_args)?;
                    chroxy::service::install(&unit, &spec, !no_start)?
                }
                ServiceAction::Uninstall => {
                    let home = home
                        .as_deref()
                        .map(|h| std::path::absolute(h).unwrap_or(h.into()));
                    chroxy::service::uninstall(&unit, home.as_deref())?
                }
                ServiceAction::Status => chroxy::service::status(&unit),
            };
            for line in said {
                println!("{line}");
            }
            Ok(())
        }
        Command::Devices { action } => {
            let now = chroxy::protocol::now_ms();
            println!("{}", chroxy::devices::run_command(&paths, action, now)?);
            Ok(())
        }
        Command::Tunnel {
            action:
                TunnelAction::Setup {
                    hostname,
                    port,
                    no_check,
                    check_url,
                },
        } => tunnel_setup(
            &paths,
            &secrets(),
            hostname,
            port,
            !no_check,
            check_url,
            out,
        ),
        Command::Token {
            action: TokenAction::SetTunnel,
        } => Ok(terminal::set_tunnel_token(
            &secrets(),
            std::io::stdin(),
            out,
        )?),
        Command::Token {
            action: TokenAction::Rotate,
        } => block_on(terminal::rotate_token(&paths, &secrets(), out)),
        Command::Token {
            action: TokenAction::Show { admin },
        } => Ok(terminal::show_token(&secrets(), admin, out)?),
    }
}

/// `chroxy tunnel setup`: the settings at the terminal (or from a pipe), then the check.
fn tunnel_setup(
    paths: &Paths,
    secrets: &Secrets,
    hostname: Option<String>,
    port: u16,
    check: bool,
    check_url: Option<String>,
    out: &mut std::io::Stdout,
) -> Result<()> {
    use chroxy::tunnel::setup;
    use std::io::Write;
    writeln!(out, "{}", setup::instructions(port))?;
    let mut answers = StdinAnswers {
        terminal: std::io::stdin().is_terminal(),
    };
    let done = setup::configure(
        &paths.config_file(),
        secrets,
        hostname.as_deref(),
        &mut answers,
        out,
    )?;
    if check {
        let spec = setup::CheckSpec {
            hostname: done.hostname.clone(),
            token: done.token,
            port,
            cloudflared: chroxy::environment::cloudflared_binary(),
            tunnel: done.config.tunnel,
            url: check_url,
            running_port: chroxy::supervisor::instance::running(paths).map(|i| i.public_port),
        };
        let base = spec.base_url();
        block_on(setup::check(&spec, out)).with_context(|| {
            format!(
                "the hostname and token are saved, but {base} was not shown to reach this machine"
            )
        })?;
        writeln!(
            out,
            "Checked: {base} reaches this machine through your tunnel."
        )?;
    } else {
        writeln!(out, "Skipped the check (--no-check).")?;
    }
    writeln!(out, "{}", setup::next_steps(&done.hostname, port))?;
    Ok(())
}

/// `chroxy tunnel setup`'s answers from standard input: at a terminal one line each,
/// the token unseen; from a pipe, the whole input is the token.
struct StdinAnswers {
    terminal: bool,
}

impl chroxy::tunnel::setup::Answers for StdinAnswers {
    fn is_terminal(&self) -> bool {
        self.terminal
    }

    fn line(&mut self) -> std::io::Result<Option<String>> {
        let mut line = String::new();
        Ok((std::io::stdin().read_line(&mut line)? > 0).then_some(line))
    }

    fn secret(&mut self) -> std::io::Result<String> {
        let stdin = std::io::stdin();
        if !self.terminal {
            let mut all = String::new();
            std::io::Read::read_to_string(&mut stdin.lock(), &mut all)?;
            return Ok(all);
        }
        use nix::sys::termios::{tcgetattr, tcsetattr, LocalFlags, SetArg};
        // Echo off (the newline still shows), for one line; back on however it ends.
        let before = tcgetattr(&stdin)?;
        let mut quiet = before.clone();
        quiet.local_flags.remove(LocalFlags::ECHO);
        quiet.local_flags.insert(LocalFlags::ECHONL);
        tcsetattr(&stdin, SetArg::TCSANOW, &quiet)?;
        let mut line = String::new();
        let read = stdin.read_line(&mut line);
        let _ = tcsetattr(&stdin, SetArg::TCSANOW, &before);
        read.map(|_| line)
    }
}

/// Where the user's configuration lives (`XDG_CONFIG_HOME`, else `~/.config`).
fn config_home() -> Result<PathBuf> {
    let dirs =
        directories::BaseDirs::new().context("finding your home directory (is HOME set?)")?;
    Ok(dirs.config_dir().to_path_buf())
}

/// The service's unit, from what this shell finds: the binary running now, `claude`,
/// `cloudflared` and `tailscale` as `chroxy start` would find them, PATH, and a stop
/// timeout longer than this home's drain.
fn service_spec(
    paths: &Paths,
    home: Option<PathBuf>,
    cwd: Option<PathBuf>,
    start_args: Vec<String>,
) -> Result<chroxy::service::UnitSpec> {
    let absolute = |p: PathBuf| std::path::absolute(&p).unwrap_or(p);
    let cwd = match cwd {
        Some(dir) => dir,
        None => std::env::current_dir().context("finding the current directory")?,
    };
    let cwd = cwd.canonicalize().with_context(|| {
        format!(
            "{} is not a directory Claude Code can work in",
            cwd.display()
        )
    })?;
    // Checked now, as `chroxy start` will read them: a unit that cannot start would
    // only fail over and over where nobody looks.
    #[derive(Parser)]
    struct Start {
        #[command(flatten)]
        start: StartArgs,
    }
    if let Some(taken) = start_args
        .iter()
        .find(|a| ["--cwd", "--home"].contains(&a.split('=').next().unwrap_or_default()))
    {
        anyhow::bail!("`{taken}` cannot follow `--`: give the directory with `chroxy service install --cwd DIR`, and the home with CHROXY_HOME or --home before `service`");
    }
    let words = std::iter::once("chroxy start").chain(start_args.iter().map(String::as_str));
    let parsed = Start::try_parse_from(words).map_err(|e| {
        anyhow::anyhow!(
            "the arguments after `--` are not `chroxy start`'s: {}",
            e.render().to_string().trim()
        )
    })?;
    let config = chroxy::config::Config::load(&paths.config_file())?;
    use chroxy::environment::{claude_binary, cloudflared_binary, tailscale_binary};
    use chroxy::tunnel::Program;
    let drain = config.supervisor.drain_idle() + config.supervisor.stop_grace();
    Ok(chroxy::service::UnitSpec {
        chroxy: std::env::current_exe().context("finding the chroxy binary")?,
        home: home.map(absolute),
        cwd,
        claude: chroxy::agent::find_claude(claude_binary(&config.worker).as_deref())
            .ok()
            .map(absolute),
        cloudflared: Program::Cloudflared
            .find(cloudflared_binary().as_deref())
            .ok()
            .map(absolute),
        tailscale: Program::Tailscale
            .find(tailscale_binary().as_deref())
            .ok()
            .map(absolute),
        path: std::env::var_os("PATH").unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into()),
        start_args,
        tunnel: parsed.start.tunnel.unwrap_or(TunnelChoice::Quick),
        stop_timeout: drain + std::time::Duration::from_secs(15),
    })
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

fn block_on<T, E>(f: impl std::future::Future<Output = Result<T, E>>) -> Result<T>
where
    anyhow::Error: From<E>,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build();
    Ok(runtime.context("starting the async runtime")?.block_on(f)?)
}

/// `chroxy start`: runs until SIGTERM or Ctrl-C (a second one stops waiting for drains).
async fn run_supervisor(launch: Launch) -> Result<()> {
    let demo = launch.demo;
    let devices = chroxy::devices::Devices::new(&launch.paths);
    let stop = StopSwitch::new();
    let started = chroxy::launch::start(launch, stop.shutdown(), stop.force()).await?;
    let supervisor = started.supervisor;
    println!(
        "Chroxy is running: phones connect to http://127.0.0.1:{}/ — status page http://127.0.0.1:{}/",
        supervisor.public_port(),
        supervisor.status_port()
    );
    // The link holds the token: a file or a pipe is where logs are collected.
    if std::io::stdout().is_terminal() {
        let printer = chroxy::launch::print_pairing(started.pairing, devices, std::io::stdout());
        tokio::spawn(printer);
    } else {
        println!("{PAIRING_ON_TERMINALS_ONLY}");
    }
    if demo {
        println!("{}", chroxy::demo::NOTICE);
    }
    stop.press_on_signals();
    supervisor.wait().await;
    Ok(())
}

fn init_logging() {
    use chroxy::environment::{log_colour, LOG_FILTER};
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env(LOG_FILTER).unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(log_colour(std::io::stderr().is_terminal()))
        // A worker's stderr is a pipe to its supervisor: once that dies, a line that
        // cannot be written must be dropped, not reported with `eprintln!` (which
        // panics on the same broken pipe, in whichever task was logging — the one
        // that notices the supervisor is gone and stops the worker, say).
        .log_internal_errors(false)
        .init();
}
