//! The supervisor at work: one task that feeds the [`Machine`] what happened (worker
//! reports, timers, actions from views, shutdown) and carries out the effects it
//! returns. Everything that blocks (a drain, a health gate, hashing a binary) runs in
//! a worker's own task, so this loop always answers — the status page and the tray stay
//! truthful while a worker is stuck.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::child::{self, LaunchSpec, Report, WorkerCommand, WorkerRef, WorkerReport};
use super::handle::{ActionError, Handle, Request};
use super::instance::{Instance, InstanceError};
use super::proxy::{self, Route};
use super::release::{ReleaseError, ReleaseId, Releases, INSTALLED};
use super::state::{self, Effect, Event, Machine};
use super::status::{
    Action, CanaryStatus, DeployOrigin, PendingDeployStatus, StandbyStatus, StateName, Status,
    WorkerStatus,
};
use super::switch::{self, Switch};
use crate::config::SupervisorConfig;
use crate::control::DeployNews;
use crate::store::Paths;
use crate::token::ApiToken;
use crate::tunnel::{TunnelMode, TunnelState, TunnelStatus};

/// What phones are told to expect when a worker is replaced on purpose.
const RESTART_ETA_MS: u64 = 2_000;

/// What phones are told to expect when asked to reconnect to the same worker.
const RECONNECT_ETA_MS: u64 = 500;

/// What workers are started with: the shell's choices, and the public half of the
/// push key, which phones subscribe with.
fn worker_env(opts: &Options) -> Vec<(OsString, OsString)> {
    let mut env = opts.worker_env.clone();
    if let Some(push) = &opts.push {
        env.push((crate::push::PUBLIC_KEY_VAR.into(), push.public_key().into()));
    }
    env
}

/// Everything a supervisor needs; the shells (CLI, tray app) fill it in.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where everything lives.
    pub paths: Paths,
    /// The public address phones and the tunnel connect to.
    pub public_addr: SocketAddr,
    /// The status page's address (loopback).
    pub status_addr: SocketAddr,
    /// The API token, handed to workers in their environment.
    pub token: ApiToken,
    /// `[supervisor]` settings.
    pub config: SupervisorConfig,
    /// The workers' heartbeat interval (`[worker] heartbeat_ms`).
    pub heartbeat: Duration,
    /// The installed `chroxy` binary: release zero.
    pub installed: PathBuf,
    /// Extra arguments for `chroxy worker` (`--cwd`, `--demo`).
    pub worker_args: Vec<OsString>,
    /// Extra environment for workers.
    pub worker_env: Vec<(OsString, OsString)>,
    /// Workers answer with the scripted demo model.
    pub demo: bool,
    /// `keyring` or `file`.
    pub secrets_backend: String,
    /// The tunnel to keep up (its port is set to the public port); `None` = local only.
    pub tunnel: Option<crate::tunnel::TunnelSpec>,
    /// What a tunnel chosen later ([`Action::Tunnel`]) becomes, its secret included.
    pub tunnels: crate::tunnel::TunnelResolver,
    /// Where a rotated API token is read back from; `None` when the token was given
    /// (`CHROXY_TOKEN`) and rotation does not apply.
    pub secrets: Option<crate::secrets::Secrets>,
    /// `[security] approve_new_devices`, as workers apply it (shown in the status).
    pub approve_new_devices: bool,
    /// The desktop's identity key, handed to workers with the token.
    pub identity: crate::channel::KeyPair,
    /// `[security] allow_token_auth`, as workers apply it (shown in the status).
    pub allow_token_auth: bool,
    /// Sends notifications to phones ([`crate::push`]); `None`: none are sent, and
    /// workers tell phones so.
    pub push: Option<crate::push::Pusher>,
}

/// Why a supervisor could not start (or stopped badly).
#[derive(Debug, thiserror::Error)]
pub enum SupervisorError {
    /// Another supervisor runs for this home.
    #[error(transparent)]
    Instance(#[from] InstanceError),
    /// A port was taken.
    #[error("cannot listen on {addr} for the {what}: {source}; choose another port with {flag}")]
    Bind {
        /// "public port" or "status page".
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The flag that changes it.
        flag: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The release store could not be set up.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The instance file could not be written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A start-up step running off the async threads panicked or was cancelled.
    #[error("a start-up task of the supervisor failed: {0}")]
    Task(#[from] tokio::task::JoinError),
    /// No key to sign the public port's word with.
    #[error(transparent)]
    Key(#[from] crate::forwarded::NoRandomness),
}

/// A running supervisor.
#[derive(Debug)]
pub struct Supervisor {
    handle: Handle,
    public_port: u16,
    status_port: u16,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Claims the instance, binds both ports, registers the installed binary as
    /// release zero, starts the current release, and returns at once. Cancel
    /// `shutdown` for an orderly stop; cancel `force` too to stop waiting for drains.
    ///
    /// `page` serves the status port, given its listener, the supervisor's handle and
    /// a token cancelled once everything else has stopped: the shell says what the page
    /// is (the supervisor knows no view), the supervisor keeps it up for its whole life,
    /// so it tells the truth while no worker runs.
    pub async fn start<P, F>(
        opts: Options,
        page: P,
        shutdown: CancellationToken,
        force: CancellationToken,
    ) -> Result<Self, SupervisorError>
    where
        P: FnOnce(TcpListener, Handle, CancellationToken) -> F,
        F: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
    {
        let paths = opts.paths.clone();
        let mut instance = tokio::task::spawn_blocking(move || Instance::acquire(&paths)).await??;
        // A build this home's last supervisor died in the middle of is removed first.
        super::build::sweep(&opts.paths).await;
        let public = bind(opts.public_addr, "public port", "--port").await?;
        let status_listener = bind(opts.status_addr, "status page", "--status-port").await?;
        let public_port = public.local_addr().map(|a| a.port()).unwrap_or_default();
        let status_port = status_listener
            .local_addr()
            .map(|a| a.port())
            .unwrap_or_default();
        instance.set_ports(public_port, status_port)?;

        let releases = Arc::new(Releases::open(&opts.paths));
        let store = releases.clone();
        let installed = opts.installed.clone();
        let (plan, listing) = tokio::task::spawn_blocking(move || {
            store.ensure_installed(&installed)?;
            let (current, known_good) = (store.current()?, store.known_good()?);
            let listing = store.status()?;
            // Every release listed is checked cheaply; the one start-up will run, fully
            // (its checksum): current, else known-good, else 0.
            let mut damaged: BTreeMap<String, String> = listing
                .list
                .iter()
                .filter_map(|r| Some((r.id.to_string(), r.damaged.clone()?)))
                .collect();
            for id in [&current, &known_good, INSTALLED] {
                if damaged.contains_key(id) {
                    continue;
                }
                match store.verify(id) {
                    Ok(_) => break,
                    Err(err) => damaged.insert(id.to_owned(), err.to_string()),
                };
            }
            let plan = state::start_plan(&current, &known_good, &damaged);
            Ok::<_, ReleaseError>((plan, listing))
        })
        .await??;
        let (current, known_good) = (plan.current, plan.known_good);

        let mut status = Status::new(public_port, status_port, opts.demo, &opts.secrets_backend);
        status.releases = listing;
        status.identity.fingerprint = opts.identity.fingerprint();
        let (status_tx, status_rx) = watch::channel(status);
        let (actions_tx, actions_rx) = mpsc::channel(16);
        let handle = Handle::new(status_rx, actions_tx);

        let (route_tx, route_rx) = watch::channel(Route {
            port: None,
            voucher: None,
            state: StateName::Starting,
            retry_after_secs: 1,
        });
        let accepting = CancellationToken::new();
        let connections = TaskTracker::new();
        // The public port's word to workers on who each client is, and the probe's
        // proof: a key of this supervisor's own, handed to each worker with its token.
        let voucher = crate::forwarded::Voucher::generate()?;
        let limits =
            proxy::Limits::fitting(opts.config.max_connections, opts.config.max_unauthenticated);
        let (tunnel_pid, tunnel_pid_rx) = watch::channel(None);
        tokio::spawn(proxy::serve(
            public,
            route_rx,
            tunnel_pid_rx,
            limits,
            status_tx.clone(),
            accepting.clone(),
            connections.clone(),
        ));
        let page_stop = CancellationToken::new();
        tokio::spawn(super::devices::follow(
            crate::devices::Devices::new(&opts.paths),
            opts.approve_new_devices,
            opts.allow_token_auth,
            status_tx.clone(),
            page_stop.clone(),
        ));
        let page_task = tokio::spawn(page(status_listener, handle.clone(), page_stop.clone()));
        tracing::info!(
            public_port,
            status_port,
            %current,
            %known_good,
            "supervisor started"
        );

        // The tunnel points at the public port, so worker restarts never touch it; it
        // stops only after the workers have drained (its own token, cancelled last).
        let tunnel_stop = CancellationToken::new();
        let tunnel = TunnelSlot::new(
            tunnel_stop.clone(),
            public_port,
            tunnel_pid,
            crate::tunnel::record_file(&opts.paths),
        );
        let (machine, mut first) =
            Machine::start(state::Policy::from(&opts.config), current, known_good);
        first.splice(0..0, plan.effects);
        let (mut runner, reports_rx) = Runner::new(Parts {
            paths: opts.paths.clone(),
            spec: LaunchSpec {
                releases: releases.clone(),
                args: opts.worker_args.clone(),
                env: worker_env(&opts),
                token: opts.token.clone(),
                voucher: voucher.clone(),
                identity: opts.identity.clone(),
                gate_timeout: opts.config.gate_timeout(),
                heartbeat: opts.heartbeat,
                heartbeat_misses: opts.config.heartbeat_misses,
                probe_interval: opts.config.probe_interval(),
                drain_idle: opts.config.drain_idle(),
                stop_grace: opts.config.stop_grace(),
                marks: format!("{}-{}", std::process::id(), crate::protocol::now_ms()),
                keeper_dir: opts.paths.state_dir().to_path_buf(),
                orphans: Default::default(),
                standby: false,
            },
            machine,
            releases,
            instance,
            route_tx,
            status_tx,
            tunnel,
            secrets: opts.secrets.clone(),
            tunnels: opts.tunnels.clone(),
            keep_releases: opts.config.keep_releases,
            starter: Box::new(Processes),
            push: opts.push.clone(),
            notices: handle.notice_sender(),
        });
        runner.switch_tunnel(opts.tunnel.clone()).await;
        let task = tokio::spawn(async move {
            let tunnel = runner
                .run(
                    first,
                    Inbox {
                        reports: reports_rx,
                        actions: actions_rx,
                    },
                    shutdown,
                    force,
                    accepting,
                )
                .await;
            tunnel_stop.cancel();
            tunnel.stopped().await;
            // Spliced connections end with their worker; don't wait on stragglers.
            connections.close();
            page_stop.cancel();
            let _ = page_task.await;
            tracing::info!("supervisor stopped");
        });
        Ok(Self {
            handle,
            public_port,
            status_port,
            task,
        })
    }

    /// For views: status and actions.
    pub fn handle(&self) -> Handle {
        self.handle.clone()
    }

    /// The bound public port.
    pub fn public_port(&self) -> u16 {
        self.public_port
    }

    /// The bound status-page port.
    pub fn status_port(&self) -> u16 {
        self.status_port
    }

    /// Waits until the supervisor has stopped (after `shutdown`): workers drained and
    /// reaped, ports closed, instance released.
    pub async fn wait(self) {
        let _ = self.task.await;
    }
}

/// Connections the kernel holds for a listener before `accept`. A burst of a few
/// thousand (a flood) must wait there, not be dropped: a phone's dropped SYN is only
/// sent again a second later. The kernel caps it at `net.core.somaxconn`.
const BACKLOG: u32 = 4096;

async fn bind(
    addr: SocketAddr,
    what: &'static str,
    flag: &'static str,
) -> Result<TcpListener, SupervisorError> {
    let listen = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        // As `TcpListener::bind` does: a restart may bind while old sockets linger.
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(BACKLOG)
    };
    listen().map_err(|source| SupervisorError::Bind {
        what,
        addr,
        flag,
        source,
    })
}

/// What the runner hears from: its workers and the views (the tunnel is in its slot).
struct Inbox {
    reports: mpsc::UnboundedReceiver<Report>,
    actions: mpsc::Receiver<Request>,
}

/// The tunnel being kept up, if any, and where its changes arrive. It can be replaced
/// while workers serve (the tray's Tunnel menu) and stops last, after the drain.
struct TunnelSlot {
    current: Option<(crate::tunnel::Tunnel, CancellationToken)>,
    changes: Option<mpsc::UnboundedReceiver<TunnelStatus>>,
    /// Cancelled when the supervisor stops; each tunnel's own token is its child.
    stop: CancellationToken,
    public_port: u16,
    /// The running cloudflared's pid, for the public port.
    pid: watch::Sender<Option<u32>>,
    /// Where the running cloudflared is recorded for the next supervisor's start.
    record: PathBuf,
}

impl TunnelSlot {
    fn new(
        stop: CancellationToken,
        public_port: u16,
        pid: watch::Sender<Option<u32>>,
        record: PathBuf,
    ) -> Self {
        Self {
            current: None,
            changes: None,
            stop,
            public_port,
            pid,
            record,
        }
    }

    /// Stops the current tunnel (waiting for cloudflared to exit) and starts `spec`'s.
    async fn replace(&mut self, spec: Option<crate::tunnel::TunnelSpec>) -> TunnelStatus {
        self.changes = None;
        if let Some((old, stop)) = self.current.take() {
            stop.cancel();
            old.stopped().await;
        }
        let Some(mut spec) = spec else {
            return TunnelStatus::default();
        };
        spec.port = self.public_port;
        spec.record = Some(self.record.clone());
        let stop = self.stop.child_token();
        let mut tunnel = crate::tunnel::Tunnel::start(spec, stop.clone(), self.pid.clone());
        self.changes = tunnel.take_changes();
        let status = TunnelStatus::starting(tunnel.mode());
        self.current = Some((tunnel, stop));
        status
    }

    fn restart(&self) {
        if let Some((t, _)) = &self.current {
            t.restart();
        }
    }

    /// Waits until the tunnel has stopped (after the supervisor's stop was cancelled).
    async fn stopped(self) {
        if let Some((t, _)) = self.current {
            t.stopped().await;
        }
    }
}

/// The next tunnel change; never resolves without a tunnel.
async fn next_change(
    rx: &mut Option<mpsc::UnboundedReceiver<TunnelStatus>>,
) -> Option<TunnelStatus> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// A worker the machine knows about.
struct Live {
    release: ReleaseId,
    worker: WorkerRef,
    pid: Option<u32>,
    port: Option<u16>,
    started_at: Option<u64>,
}

impl Live {
    fn new(release: ReleaseId, worker: WorkerRef) -> Self {
        Self {
            release,
            worker,
            pid: None,
            port: None,
            started_at: None,
        }
    }
}

/// A worker on its way out; its `exited` token gates its successor.
struct Leaving {
    release: ReleaseId,
    worker: WorkerRef,
    pid: Option<u32>,
    planned: bool,
    /// It was drained while a successor already served (a deploy): once it has saved
    /// and exited, the successor re-reads the sessions.
    handover: bool,
}

/// How the runner starts a worker: as a `chroxy worker` process ([`Processes`]), or,
/// in its tests, as a script the test plays (as watchexec's supervisor swaps in a test
/// child). Mirrors [`child::launch`].
trait StartWorker: Send + Sync {
    /// Starts worker `id` of `release` once every `after` is cancelled; it reports to
    /// `reports`.
    fn start(
        &mut self,
        spec: LaunchSpec,
        id: u64,
        release: ReleaseId,
        after: Vec<CancellationToken>,
        reports: mpsc::UnboundedSender<Report>,
    ) -> WorkerRef;
}

/// Workers as processes: the real thing.
struct Processes;

impl StartWorker for Processes {
    fn start(
        &mut self,
        spec: LaunchSpec,
        id: u64,
        release: ReleaseId,
        after: Vec<CancellationToken>,
        reports: mpsc::UnboundedSender<Report>,
    ) -> WorkerRef {
        child::launch(spec, id, release, after, reports)
    }
}

/// A source build the supervisor runs.
struct RunningBuild {
    /// Stops it (the supervisor is stopping).
    cancel: CancellationToken,
    /// Its progress, then its end.
    events: mpsc::UnboundedReceiver<BuildEvent>,
    /// Where it was asked for: a remote request's release waits for approval.
    origin: DeployOrigin,
    /// Its last status, once it says the build ended: shown only when the build's task
    /// is done, so nobody told "failed" can ask again and hear that one still runs.
    ended: Option<Box<crate::protocol::deploy::BuildStatus>>,
}

/// What a build's task tells the runner.
enum BuildEvent {
    /// The build's status changed.
    Progress(Box<crate::protocol::deploy::BuildStatus>),
    /// It ended: the release it added, or why not (worded for a person).
    Done(Result<ReleaseId, String>),
}

/// The running build's next event; never, while none runs.
async fn next_build_event(build: &mut Option<RunningBuild>) -> BuildEvent {
    match build {
        Some(build) => build.events.recv().await.unwrap_or_else(|| {
            BuildEvent::Done(Err("the build stopped unexpectedly; see the log".into()))
        }),
        None => std::future::pending().await,
    }
}

/// What a runner is made of; the rest of it starts empty.
struct Parts {
    paths: Paths,
    spec: LaunchSpec,
    machine: Machine,
    releases: Arc<Releases>,
    instance: Instance,
    route_tx: watch::Sender<Route>,
    status_tx: watch::Sender<Status>,
    tunnel: TunnelSlot,
    secrets: Option<crate::secrets::Secrets>,
    tunnels: crate::tunnel::TunnelResolver,
    keep_releases: usize,
    starter: Box<dyn StartWorker>,
    push: Option<crate::push::Pusher>,
    notices: tokio::sync::broadcast::Sender<crate::push::Notice>,
}

struct Runner {
    /// Where everything lives.
    paths: Paths,
    /// The source build running ([`Action::DeploySource`]); one at a time.
    build: Option<RunningBuild>,
    /// Starts workers.
    starter: Box<dyn StartWorker>,
    spec: LaunchSpec,
    machine: Machine,
    releases: Arc<Releases>,
    instance: Instance,
    workers: HashMap<ReleaseId, Live>,
    /// The spare worker of the serving release ([`Effect::SpawnStandby`]); not in
    /// `workers`, which holds one per release.
    standby: Option<Live>,
    /// Its resident memory as of its last heartbeat, in bytes.
    standby_rss: Option<u64>,
    stopping: HashMap<u64, Leaving>,
    next_id: u64,
    routed: Option<ReleaseId>,
    timer: Option<Instant>,
    /// When the pending deploy's request expires (a timer beside `timer`).
    expiry: Option<Instant>,
    route_tx: watch::Sender<Route>,
    status_tx: watch::Sender<Status>,
    reports_tx: mpsc::UnboundedSender<Report>,
    clients: u32,
    sessions: u32,
    /// The devices connected to the routed worker, as its last heartbeat said.
    connected: Vec<String>,
    exiting: bool,
    /// The worker whose exit is being handled, while its CLIs wait for a verdict.
    lost: Option<u64>,
    tunnel: TunnelSlot,
    secrets: Option<crate::secrets::Secrets>,
    tunnels: crate::tunnel::TunnelResolver,
    /// `[supervisor] keep_releases`.
    keep_releases: usize,
    /// Sends notifications to phones.
    push: Option<crate::push::Outbox>,
    /// Tells the views of each notice (the tray app shows some on the desktop).
    notices: tokio::sync::broadcast::Sender<crate::push::Notice>,
}

impl Runner {
    /// A runner with no worker yet, and the receiving end of its workers' reports.
    fn new(parts: Parts) -> (Self, mpsc::UnboundedReceiver<Report>) {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        let runner = Self {
            paths: parts.paths,
            build: None,
            starter: parts.starter,
            spec: parts.spec,
            machine: parts.machine,
            releases: parts.releases,
            instance: parts.instance,
            workers: HashMap::new(),
            standby: None,
            standby_rss: None,
            stopping: HashMap::new(),
            next_id: 0,
            routed: None,
            timer: None,
            expiry: None,
            route_tx: parts.route_tx,
            status_tx: parts.status_tx,
            reports_tx,
            clients: 0,
            sessions: 0,
            connected: Vec::new(),
            exiting: false,
            lost: None,
            tunnel: parts.tunnel,
            secrets: parts.secrets,
            tunnels: parts.tunnels,
            keep_releases: parts.keep_releases,
            push: parts.push.map(crate::push::Pusher::outbox),
            notices: parts.notices,
        };
        (runner, reports_rx)
    }

    async fn run(
        mut self,
        first: Vec<Effect>,
        inbox: Inbox,
        shutdown: CancellationToken,
        force: CancellationToken,
        accepting: CancellationToken,
    ) -> TunnelSlot {
        let Inbox {
            mut reports,
            mut actions,
        } = inbox;
        self.apply(first).await;
        self.publish();
        let mut forced = false;
        loop {
            if self.exiting
                && self.workers.is_empty()
                && self.standby.is_none()
                && self.stopping.is_empty()
                && self.build.is_none()
            {
                break;
            }
            let (timer, expiry) = (self.timer, self.expiry);
            tokio::select! {
                _ = shutdown.cancelled(), if !self.exiting => {
                    // Order: stop accepting, then drain and wait for the worker's exit.
                    accepting.cancel();
                    // A build stops and removes its tree; the loop waits for that.
                    if let Some(build) = &self.build {
                        build.cancel.cancel();
                    }
                    let fx = self.machine.step(Event::Shutdown, Instant::now());
                    self.apply(fx).await;
                }
                _ = force.cancelled(), if !forced => {
                    forced = true;
                    tracing::warn!("forced stop: killing workers without waiting for their drain");
                    for w in self.workers.values().chain(&self.standby) { w.worker.send(WorkerCommand::Kill); }
                    for w in self.stopping.values() { w.worker.send(WorkerCommand::Kill); }
                }
                Some(report) = reports.recv() => self.on_report(report).await,
                Some(request) = actions.recv() => self.on_action(request).await,
                event = next_build_event(&mut self.build) => self.on_build(event).await,
                _ = sleep_until(timer.unwrap_or_else(Instant::now)), if timer.is_some() => {
                    self.timer = None;
                    let fx = self.machine.step(Event::Timer, Instant::now());
                    self.apply(fx).await;
                }
                _ = sleep_until(expiry.unwrap_or_else(Instant::now)), if expiry.is_some() => {
                    self.expiry = None;
                    self.step(Event::DeployExpiry).await;
                }
                Some(now) = next_change(&mut self.tunnel.changes) => self.tunnel_changed(now),
            }
            self.publish();
        }
        // Nothing a worker started outlives the supervisor.
        self.spec.orphans.end_all().await;
        // The instance (lock and pid file) goes last, after every worker is reaped;
        // the caller stops the tunnel after that.
        drop(self.instance);
        self.tunnel
    }

    /// Replaces the tunnel (`None`: local only); workers and their phones are untouched.
    async fn switch_tunnel(&mut self, spec: Option<crate::tunnel::TunnelSpec>) {
        let now = self.tunnel.replace(spec).await;
        self.status_tx.send_modify(|s| s.tunnel = now);
    }

    /// Records what a person needs to know of a tunnel change.
    fn tunnel_changed(&self, now: TunnelStatus) {
        let before = self.status_tx.borrow().tunnel.clone();
        if now.url != before.url {
            if let Some(url) = &now.url {
                self.record("tunnel", format!("tunnel up at {url}"));
            }
        }
        if now.state != before.state && now.state != TunnelState::Up {
            let why = now.last_error.clone().unwrap_or_default();
            self.record("tunnel", format!("tunnel {}: {why}", now.state));
        }
        self.status_tx.send_modify(|s| s.tunnel = now);
    }

    async fn step(&mut self, event: Event) {
        let fx = self.machine.step(event, Instant::now());
        self.apply(fx).await;
    }

    /// [`Runner::step`] for a person's request: the machine's refusal, if it says one,
    /// is the answer; else its reply, if it gives one.
    async fn step_answering(&mut self, event: Event) -> Result<String, ActionError> {
        let fx = self.machine.step(event, Instant::now());
        let mut answer = Ok(String::new());
        for effect in &fx {
            match effect {
                Effect::Refuse(why) => answer = Err(ActionError::Refused(why.clone())),
                Effect::Reply(text) if answer.is_ok() => answer = Ok(text.clone()),
                _ => {}
            }
        }
        self.apply(fx).await;
        answer
    }

    async fn on_report(&mut self, report: Report) {
        // A worker that died may have left CLIs ([`crate::keeper::Orphans`]): the
        // standby that takes over in this step adopts them (`PromoteStandby` takes
        // `lost`); otherwise they are killed now, before any other successor starts.
        if matches!(report.what, WorkerReport::Exited { .. }) {
            self.lost = Some(report.id);
        }
        self.handle_report(report).await;
        if let Some(id) = self.lost.take() {
            self.spec.orphans.abandon(id);
        }
    }

    async fn handle_report(&mut self, report: Report) {
        if let Some(leaving) = self.stopping.get(&report.id) {
            if let WorkerReport::Exited { status } = &report.what {
                if leaving.planned {
                    let message = format!("release {} stopped ({status})", leaving.release);
                    self.record("worker_stopped", message);
                }
                if leaving.handover {
                    if let Some(w) = self.routed.as_ref().and_then(|r| self.workers.get(r)) {
                        w.worker.send(WorkerCommand::Resync {
                            closed_there: false,
                            adopt_from: None,
                        });
                    }
                }
                self.stopping.remove(&report.id);
                self.save_pids();
            }
            return;
        }
        if self
            .standby
            .as_ref()
            .is_some_and(|s| s.worker.id == report.id)
        {
            return self.on_standby_report(report.what).await;
        }
        let Some(release) = self
            .workers
            .iter()
            .find(|(_, w)| w.worker.id == report.id)
            .map(|(r, _)| r.clone())
        else {
            return;
        };
        match report.what {
            WorkerReport::Started { pid, port } => {
                if let Some(w) = self.workers.get_mut(&release) {
                    w.pid = Some(pid);
                    w.port = Some(port);
                    w.started_at = Some(crate::protocol::now_ms());
                }
                self.save_pids();
            }
            WorkerReport::Healthy => self.step(Event::Healthy { release }).await,
            WorkerReport::Notify(notice) => self.notify(notice),
            WorkerReport::Deploy {
                source,
                requested_by,
                allowed,
                allow_dirty,
            } => {
                // Only phones of the worker that serves: a leaving or gated one has none.
                if self.routed.as_deref() != Some(release.as_str()) {
                    return;
                }
                // Marked by the person as allowed to deploy: as if asked at the desk.
                let origin = if allowed {
                    DeployOrigin::Desk
                } else {
                    DeployOrigin::Remote
                };
                let request = crate::protocol::deploy::BuildRequest {
                    source,
                    rev: None,
                    allow_dirty,
                };
                if let Err(err) = self.start_build(request, origin, requested_by) {
                    let news = crate::control::DeployNews::Refused(err.to_string());
                    self.tell_phones(news);
                }
            }
            WorkerReport::Beat {
                clients,
                sessions,
                server_faults,
                devices,
            } => {
                if self.routed.as_deref() == Some(release.as_str()) {
                    self.clients = clients;
                    self.sessions = sessions;
                    self.connected = devices;
                }
                if server_faults > 0 {
                    self.step(Event::ServerFaults {
                        release,
                        count: server_faults,
                    })
                    .await;
                }
            }
            WorkerReport::Unhealthy { step, detail } => {
                self.retire(&release, false);
                self.step(Event::Unhealthy {
                    release,
                    step,
                    detail,
                })
                .await;
            }
            WorkerReport::Hung => {
                self.retire(&release, false);
                self.step(Event::Hung { release }).await;
            }
            WorkerReport::ConfigInvalid { message } => {
                self.retire(&release, false);
                self.step(Event::ConfigInvalid { release, message }).await;
            }
            WorkerReport::Exited { status } => {
                self.retire(&release, false);
                self.stopping.remove(&report.id);
                self.step(Event::Exited { release, status }).await;
            }
        }
    }

    /// What the spare worker says: only whether it can take over matters. Its phones
    /// (none) and faults (no traffic) are nobody's concern until it serves.
    async fn on_standby_report(&mut self, what: WorkerReport) {
        let Some(standby) = &mut self.standby else {
            return;
        };
        let release = standby.release.clone();
        let why = match what {
            WorkerReport::Started { pid, port } => {
                standby.pid = Some(pid);
                standby.port = Some(port);
                standby.started_at = Some(crate::protocol::now_ms());
                self.standby_rss = resident_bytes(pid);
                self.save_pids();
                return;
            }
            WorkerReport::Healthy => return self.step(Event::StandbyHealthy { release }).await,
            WorkerReport::Beat { .. } => {
                self.standby_rss = standby.pid.and_then(resident_bytes);
                return;
            }
            WorkerReport::Notify(_) | WorkerReport::Deploy { .. } => return,
            WorkerReport::Unhealthy { step, detail } => {
                format!("failed its health gate at {step}: {detail}")
            }
            WorkerReport::Hung => "stopped sending heartbeats and was killed".into(),
            WorkerReport::ConfigInvalid { message } => format!("cannot start: {message}"),
            WorkerReport::Exited { status } => format!("exited ({status})"),
        };
        self.retire_standby();
        self.step(Event::StandbyLost { release, why }).await;
    }

    /// Moves the spare worker to the leaving ones (it is stopping or gone).
    fn retire_standby(&mut self) {
        self.standby_rss = None;
        if let Some(live) = self.standby.take() {
            self.stopping.insert(
                live.worker.id,
                Leaving {
                    release: live.release,
                    worker: live.worker,
                    pid: live.pid,
                    planned: false,
                    handover: false,
                },
            );
        }
    }

    /// Promotes a release in the store as a canary; from away from the desk, once a
    /// person approves it.
    async fn deploy(
        &mut self,
        release: ReleaseId,
        origin: DeployOrigin,
    ) -> Result<String, ActionError> {
        let release = self.check_release(Switch::Deploy(release)).await?;
        // Listed before anything else is shown about it (its version, for one).
        self.refresh_listing().await;
        self.step_answering(Event::Deploy {
            release: release.clone(),
            origin,
        })
        .await?;
        Ok(match origin {
            DeployOrigin::Desk => format!("deploying release {release} as a canary"),
            DeployOrigin::Remote => format!(
                "release {release} awaits approval at the desk (the Chroxy window, the status page, or `chroxy deploy --approve` at a terminal); nothing changes until then"
            ),
        })
    }

    /// Starts a source build in a task of its own; its progress and end come back as
    /// [`BuildEvent`]s. A second request while one runs is refused, naming it.
    fn start_build(
        &mut self,
        request: crate::protocol::deploy::BuildRequest,
        origin: DeployOrigin,
        requested_by: String,
    ) -> Result<String, ActionError> {
        if self.build.is_some() {
            let status = self.status_tx.borrow();
            let running = status.build.as_ref().map_or_else(String::new, |b| {
                let step = b
                    .running_step()
                    .map(|s| format!(", now at its {s} step"))
                    .unwrap_or_default();
                format!(
                    " ({} at {} for {}{step})",
                    b.source.display(),
                    b.rev,
                    b.requested_by
                )
            });
            return Err(ActionError::Refused(format!(
                "a build is already running{running}; wait for it to finish"
            )));
        }
        // Read now: a change to [deploy] applies to the next build without a restart.
        let config = crate::config::Config::load(&self.paths.config_file())
            .map_err(|e| ActionError::Refused(e.to_string()))?;
        let builder = super::build::Builder::new(
            self.paths.clone(),
            config.deploy,
            format!("{}-build", self.spec.marks),
            vec![self.spec.token.clone()],
        );
        let claim = builder
            .claim()
            .map_err(|e| ActionError::Refused(e.to_string()))?;
        let (tx, events) = mpsc::unbounded_channel();
        let cancel = CancellationToken::new();
        let stop = cancel.clone();
        let what = format!(
            "{} at {}",
            request.source.display(),
            request.rev.as_deref().unwrap_or("HEAD")
        );
        self.record(
            "build_started",
            format!("building {what} for {requested_by}"),
        );
        tokio::spawn(async move {
            let progress = tx.clone();
            let mut report = move |status: &crate::protocol::deploy::BuildStatus| {
                let _ = progress.send(BuildEvent::Progress(Box::new(status.clone())));
            };
            let built = builder
                .run(&claim, &request, &requested_by, &mut report, &stop)
                .await;
            drop(claim);
            let _ = tx.send(BuildEvent::Done(
                built.map(|m| m.id).map_err(|e| e.to_string()),
            ));
        });
        self.build = Some(RunningBuild {
            cancel,
            events,
            origin,
            ended: None,
        });
        Ok(format!(
            "building {what}; `chroxy status` follows it, and the release is deployed as a canary if it builds and passes its check"
        ))
    }

    /// A source build's progress, or its end: its release is deployed as a canary.
    async fn on_build(&mut self, event: BuildEvent) {
        let (release, origin) = match event {
            BuildEvent::Progress(status) => {
                match &mut self.build {
                    Some(build) if status.outcome != crate::protocol::deploy::Outcome::Running => {
                        build.ended = Some(status);
                    }
                    _ => {
                        self.tell_phones(DeployNews::Status(status.clone()));
                        self.status_tx.send_modify(|s| s.build = Some(*status));
                    }
                }
                return;
            }
            BuildEvent::Done(result) => {
                let Some(build) = self.build.take() else {
                    return;
                };
                if let Some(ended) = build.ended {
                    self.status_tx.send_modify(|s| s.build = Some(*ended));
                }
                match result {
                    Ok(release) => (release, build.origin),
                    Err(why) => {
                        self.record("build_failed", why);
                        let ended = self.status_tx.borrow().build.clone();
                        if let Some(ended) = ended {
                            self.tell_phones(DeployNews::Status(Box::new(ended)));
                        }
                        return;
                    }
                }
            }
        };
        self.record("build_stored", format!("built release {release}"));
        let answer = if self.exiting {
            Err(format!("not deployed: Chroxy was stopping; `chroxy deploy` at a terminal can still send release {release}"))
        } else {
            self.deploy(release, origin)
                .await
                .map_err(|err| format!("not deployed: {err}"))
        };
        // From away from the desk, the deploy's pending event was recorded before this
        // answer existed to follow it; the answer is that event.
        let pending = answer.is_ok() && origin == DeployOrigin::Remote;
        let answer = crate::protocol::deploy::DeployAnswer {
            ok: answer.is_ok(),
            message: answer.unwrap_or_else(|why| why),
            event: pending.then(|| "deploy_pending".to_owned()),
        };
        if !answer.ok {
            self.record("deploy_refused", answer.message.clone());
        }
        let mut told = None;
        self.status_tx.send_modify(|s| {
            if let Some(build) = &mut s.build {
                build.deploy = Some(answer);
                build.summarize();
                told = Some(build.clone());
            }
        });
        if let Some(build) = told {
            self.tell_phones(DeployNews::Status(Box::new(build)));
        }
    }

    async fn on_action(&mut self, Request { action, reply }: Request) {
        let answer = self.act(action).await;
        let _ = reply.send(answer);
    }

    async fn act(&mut self, action: Action) -> Result<String, ActionError> {
        if self.exiting {
            return Err(ActionError::Stopping);
        }
        match action {
            Action::Restart => {
                self.step(Event::Restart).await;
                Ok("restarting the worker".into())
            }
            Action::Rollback { to } => {
                let target = self.check_release(Switch::Rollback(to)).await?;
                self.step(Event::Rollback { to: target.clone() }).await;
                Ok(format!("rolling back to release {target}"))
            }
            Action::ReloadToken => {
                let Some(secrets) = self.secrets.clone() else {
                    return Err(ActionError::Refused(
                        "this supervisor was given its token in CHROXY_TOKEN; restart it with the new token".into(),
                    ));
                };
                let token = tokio::task::spawn_blocking(move || secrets.api_token())
                    .await
                    .map_err(|e| ActionError::Refused(e.to_string()))?
                    .map_err(|e| ActionError::Refused(e.to_string()))?;
                if token == self.spec.token {
                    return Ok("the token has not changed".into());
                }
                self.spec.token = token;
                self.record(
                    "token_rotated",
                    "the API token was rotated: restarting the worker; phones must pair again"
                        .into(),
                );
                self.step(Event::Restart).await;
                Ok("restarting the worker with the new token".into())
            }
            Action::Deploy { release, origin } => self.deploy(release, origin).await,
            Action::DeploySource {
                request,
                origin,
                requested_by,
            } => self.start_build(request, origin, requested_by),
            Action::ApproveDeploy { release } => {
                // Checked again: the binary may have changed while it waited.
                if let Some(waiting) = self.machine.pending_deploy() {
                    let waiting = waiting.release.clone();
                    self.check_release(Switch::Deploy(waiting)).await?;
                }
                let waiting = self.machine.pending_deploy().map(|p| p.release.clone());
                self.step_answering(Event::ApproveDeploy { release })
                    .await?;
                let waiting = waiting.map(|r| r.to_string()).unwrap_or_default();
                Ok(format!("approved: deploying release {waiting} as a canary"))
            }
            Action::RefuseDeploy { release } => {
                let waiting = self.machine.pending_deploy().map(|p| p.release.clone());
                self.step_answering(Event::RefuseDeploy { release }).await?;
                let waiting = waiting.map(|r| r.to_string()).unwrap_or_default();
                Ok(format!("refused the deploy of release {waiting}"))
            }
            Action::Tunnel { choice } => {
                // A named tunnel's token is read here, off the async threads.
                let tunnels = self.tunnels.clone();
                let spec = tokio::task::spawn_blocking(move || tunnels.spec(choice))
                    .await
                    .map_err(|e| ActionError::Refused(e.to_string()))?
                    .map_err(|e| ActionError::Refused(e.to_string()))?;
                let mode = spec.as_ref().map_or(TunnelMode::None, |s| s.mode.kind());
                self.switch_tunnel(spec).await;
                let message = format!("tunnel switched to {mode}");
                self.record("tunnel", message.clone());
                Ok(message)
            }
            Action::Reconnect => self.step_answering(Event::Reconnect).await,
        }
    }

    /// The release an action switches to, checked by the store's one rule before
    /// anything is stopped.
    async fn check_release(&self, switch: Switch) -> Result<ReleaseId, ActionError> {
        let releases = self.releases.clone();
        let known_good = self.machine.known_good().clone();
        match tokio::task::spawn_blocking(move || switch::check(&releases, &switch, &known_good))
            .await
        {
            Ok(Ok(target)) => Ok(target),
            Ok(Err(ReleaseError::Unknown(id))) => Err(ActionError::UnknownRelease(id)),
            Ok(Err(ReleaseError::ChecksumMismatch(id))) => Err(ActionError::ChecksumMismatch(id)),
            Ok(Err(err)) => Err(ActionError::Refused(err.to_string())),
            Err(err) => Err(ActionError::Refused(err.to_string())),
        }
    }

    async fn apply(&mut self, effects: Vec<Effect>) {
        for effect in effects {
            match effect {
                Effect::Spawn { release } => self.spawn(release),
                Effect::SpawnStandby { release } => {
                    // Never two: the machine stops one before it asks for another.
                    if let Some(old) = &self.standby {
                        old.worker.send(WorkerCommand::Kill);
                    }
                    self.retire_standby();
                    // Beside the serving worker, waiting for nobody that is leaving.
                    let worker = self.start_worker(release.clone(), Vec::new(), true);
                    self.standby = Some(Live::new(release, worker));
                }
                Effect::StopStandby => {
                    if let Some(s) = &self.standby {
                        s.worker.send(WorkerCommand::Kill);
                    }
                    self.retire_standby();
                }
                Effect::PromoteStandby { release } => {
                    // The lost worker was retired when its loss was reported.
                    self.retire(&release, false);
                    if let Some(live) = self.standby.take() {
                        self.standby_rss = None;
                        // Its sessions are as it read them at its start: the lost
                        // worker's since then are on disk.
                        // And it carries on with the CLIs the lost worker ran.
                        live.worker.send(WorkerCommand::Resync {
                            closed_there: true,
                            adopt_from: self.lost.take(),
                        });
                        self.workers.insert(release, live);
                    }
                }
                Effect::Route { release } => {
                    let port = self.workers.get(&release).and_then(|w| w.port);
                    self.routed = port.map(|_| release);
                    self.route(port);
                }
                Effect::Stop {
                    release,
                    drain,
                    notice,
                } => {
                    if let Some(w) = self.workers.get(&release) {
                        w.worker.send(WorkerCommand::Stop {
                            drain,
                            reason: notice,
                            restart_eta_ms: RESTART_ETA_MS,
                        });
                    }
                    self.retire(&release, true);
                }
                Effect::Handover { from } => {
                    // The newest of `from`'s leaving workers: the one just stopped.
                    let leaving = self.stopping.iter_mut().filter(|(_, l)| l.release == from);
                    if let Some((_, l)) = leaving.max_by_key(|(id, _)| **id) {
                        l.handover = true;
                    }
                }
                Effect::SetCurrent(id) => self.move_pointer(id, false).await,
                Effect::SetKnownGood(id) => self.move_pointer(id, true).await,
                Effect::PruneReleases => self.prune().await,
                Effect::ArmTimer(at) => self.timer = Some(at),
                Effect::ArmDeployExpiry(at) => self.expiry = Some(at),
                Effect::Reconnect { release } => {
                    if let Some(w) = self.workers.get(&release) {
                        w.worker.send(WorkerCommand::Reconnect {
                            restart_eta_ms: RECONNECT_ETA_MS,
                        });
                    }
                }
                Effect::RestartTunnel => self.tunnel.restart(),
                // The caller of `step_answering` answers with them.
                Effect::Refuse(_) | Effect::Reply(_) => {}
                Effect::Record { kind, message } => self.record(kind, message),
                Effect::Notify(kind) => self.notify(crate::push::Notice::supervisor(kind)),
                Effect::Exit => self.exiting = true,
            }
        }
    }

    fn spawn(&mut self, release: ReleaseId) {
        // A worker of the same release still in the table is replaced, never doubled.
        self.retire(&release, true);
        // Nor before a lost worker's CLIs are dead: two would run one conversation.
        let after = self
            .stopping
            .values()
            .map(|l| l.worker.exited.clone())
            .chain(self.spec.orphans.pending())
            .collect();
        let worker = self.start_worker(release.clone(), after, false);
        self.workers
            .insert(release.clone(), Live::new(release, worker));
    }

    /// Starts a worker of `release` once every `after` is cancelled.
    /// A `standby` takes no input until it is promoted ([`LaunchSpec::standby`]).
    fn start_worker(
        &mut self,
        release: ReleaseId,
        after: Vec<CancellationToken>,
        standby: bool,
    ) -> WorkerRef {
        self.next_id += 1;
        let spec = LaunchSpec {
            standby,
            ..self.spec.clone()
        };
        self.starter
            .start(spec, self.next_id, release, after, self.reports_tx.clone())
    }

    /// Moves a worker out of the table (it is stopping or gone); unroutes it.
    fn retire(&mut self, release: &str, planned: bool) {
        let Some(live) = self.workers.remove(release) else {
            return;
        };
        if self.routed.as_deref() == Some(release) {
            // Unrouted when the event is handled, not now: a standby about to take over
            // is routed in the same step, and a request waiting for the lost worker's
            // successor must see it, never a moment of "restarting" in between.
            self.routed = None;
            self.clients = 0;
            self.sessions = 0;
            self.connected.clear();
        }
        self.stopping.insert(
            live.worker.id,
            Leaving {
                release: live.release,
                worker: live.worker,
                pid: live.pid,
                planned,
                handover: false,
            },
        );
    }

    fn route(&self, port: Option<u16>) {
        let state = self.machine.state_name();
        let retry_after_secs = self.machine.retry_after(Instant::now()).as_secs();
        let voucher = port.map(|_| self.spec.voucher.clone());
        self.route_tx.send_replace(Route {
            port,
            voucher,
            state,
            retry_after_secs,
        });
    }

    async fn move_pointer(&mut self, id: ReleaseId, known_good: bool) {
        let releases = self.releases.clone();
        let target = id.clone();
        let result = tokio::task::spawn_blocking(move || {
            if known_good {
                releases.set_known_good(&target)?;
            } else {
                releases.set_current(&target)?;
            }
            releases.status()
        })
        .await;
        match result {
            Ok(Ok(listing)) => {
                // What led here (a promotion ends the canary) is shown before the
                // pointer: a view never sees the new known-good still on trial.
                self.publish();
                self.status_tx.send_modify(|s| s.releases = listing)
            }
            Ok(Err(err)) => self.record(
                "store_error",
                format!("cannot move a pointer to {id}: {err}"),
            ),
            Err(err) => self.record(
                "store_error",
                format!("cannot move a pointer to {id}: {err}"),
            ),
        }
    }

    /// Reads the store's listing again (a release was added behind the supervisor's back).
    async fn refresh_listing(&mut self) {
        let releases = self.releases.clone();
        match tokio::task::spawn_blocking(move || releases.status()).await {
            Ok(Ok(listing)) => self.status_tx.send_modify(|s| s.releases = listing),
            Ok(Err(err)) => self.record("store_error", format!("cannot list releases: {err}")),
            Err(err) => self.record("store_error", format!("cannot list releases: {err}")),
        }
    }

    /// Removes old releases, never one a worker runs.
    async fn prune(&mut self) {
        // What led here (a promotion) is shown first, not after the disk work.
        self.publish();
        let releases = self.releases.clone();
        let keep = self.keep_releases;
        let mut protect: Vec<ReleaseId> = vec![
            self.machine.current().clone(),
            self.machine.known_good().clone(),
        ];
        protect.extend(self.workers.keys().cloned());
        protect.extend(self.stopping.values().map(|l| l.release.clone()));
        let result = tokio::task::spawn_blocking(move || {
            let protect: Vec<&str> = protect.iter().map(|id| id.as_str()).collect();
            let removed = releases.prune(keep, &protect)?;
            Ok::<_, ReleaseError>((removed, releases.status()?))
        })
        .await;
        match result {
            Ok(Ok((removed, listing))) => {
                self.status_tx.send_modify(|s| s.releases = listing);
                if !removed.is_empty() {
                    let message = format!(
                        "removed old releases {} (keeping the newest {keep}, current, known-good and 0)",
                        removed.join(", ")
                    );
                    self.record("releases_pruned", message);
                }
            }
            Ok(Err(err)) => {
                self.record("store_error", format!("cannot remove old releases: {err}"))
            }
            Err(err) => self.record("store_error", format!("cannot remove old releases: {err}")),
        }
    }

    /// Pushes `notice` to the phones that want it, in the background and in order: a
    /// slow push service never holds up the supervisor.
    fn notify(&self, notice: crate::push::Notice) {
        // No view listening is no error.
        let _ = self.notices.send(notice.clone());
        if let Some(push) = &self.push {
            push.send(notice);
        }
    }

    fn record(&self, kind: &str, message: String) {
        tracing::info!(kind, "{message}");
        let mut followed = None;
        self.status_tx.send_modify(|s| {
            if let Some(build) = &mut s.build {
                if build.follow(kind, &message) {
                    followed = Some(build.clone());
                }
            }
            s.push_event(kind, message);
        });
        if let Some(build) = followed {
            self.tell_phones(DeployNews::Status(Box::new(build)));
        }
    }

    /// Tells the phones of the serving worker how a source build goes.
    fn tell_phones(&self, news: DeployNews) {
        if let Some(w) = self.routed.as_ref().and_then(|r| self.workers.get(r)) {
            w.worker.send(WorkerCommand::DeployNews(news));
        }
    }

    fn save_pids(&mut self) {
        let pids = self
            .workers
            .values()
            .chain(&self.standby)
            .filter_map(|w| w.pid)
            .chain(self.stopping.values().filter_map(|l| l.pid))
            .collect();
        if let Err(err) = self.instance.set_workers(pids) {
            tracing::warn!(%err, "cannot record worker pids");
        }
    }

    /// Pushes the current truth to every view (only if something changed).
    fn publish(&self) {
        let state = self.machine.state_name();
        let serving = self.routed.as_ref().and_then(|r| self.workers.get(r));
        // The route follows what is routed, and its state word the machine's.
        let port = serving.and_then(|w| w.port);
        let stale = {
            let route = self.route_tx.borrow();
            route.state != state || route.port != port
        };
        if stale {
            self.route(port);
        }
        let shown = serving.or_else(|| self.workers.get(self.machine.current()));
        let worker = WorkerStatus {
            pid: shown.and_then(|w| w.pid),
            release: shown.map(|w| w.release.clone()),
            port: shown.and_then(|w| w.port),
            started_at: shown.and_then(|w| w.started_at),
            restarts: self.machine.restarts(),
        };
        let standby = self.standby.as_ref().map(|s| StandbyStatus {
            release: s.release.clone(),
            pid: s.pid,
            ready: matches!(self.machine.standby(), Some(state::Standby::Ready(_))),
            rss_bytes: self.standby_rss,
        });
        let failed_reason = self.machine.failed_reason().map(str::to_owned);
        let (clients, sessions) = (self.clients, self.sessions);
        let connected = self.connected.clone();
        let canary = self.machine.canary().map(|(release, c)| {
            let left = c.until.saturating_duration_since(Instant::now());
            CanaryStatus {
                release: release.to_owned(),
                ends_at: crate::protocol::now_ms() + left.as_millis() as u64,
                errors: c.errors,
                error_limit: self.machine.canary_error_limit(),
                summary: None,
            }
        });
        let pending = self.machine.pending_deploy().map(|p| {
            let (now, at) = (Instant::now(), crate::protocol::now_ms());
            PendingDeployStatus {
                release: p.release.clone(),
                version: String::new(),
                requested_at: at
                    .saturating_sub(now.duration_since(p.requested_at).as_millis() as u64),
                expires_at: at + p.expires_at.saturating_duration_since(now).as_millis() as u64,
                origin: DeployOrigin::Remote,
            }
        });
        self.status_tx.send_if_modified(|s| {
            let before = (
                s.state,
                s.failed_reason.clone(),
                s.worker.clone(),
                s.standby.clone(),
                s.clients,
                s.sessions,
                s.canary.clone(),
                s.pending_deploy.clone(),
                s.devices.connected.clone(),
            );
            s.state = state;
            s.devices.connected = connected;
            s.failed_reason = failed_reason;
            s.worker = worker;
            s.standby = standby;
            s.clients = clients;
            s.sessions = sessions;
            s.canary = canary.map(|mut c| {
                // The end was fixed when the watch began: recomputing it from the
                // clock at every publish would make it move by milliseconds.
                if let Some(shown) = s.canary.as_ref().filter(|o| o.release == c.release) {
                    c.ends_at = shown.ends_at;
                }
                c
            });
            s.pending_deploy = pending.map(|mut p| {
                // As for the canary: the times were fixed when the request came.
                match s.pending_deploy.as_ref().filter(|o| o.release == p.release) {
                    Some(shown) => p.clone_from(shown),
                    None => {
                        let listed = s.releases.list.iter().find(|r| r.id == p.release);
                        p.version = listed.map(|r| r.version.clone()).unwrap_or_default();
                    }
                }
                p
            });
            before
                != (
                    s.state,
                    s.failed_reason.clone(),
                    s.worker.clone(),
                    s.standby.clone(),
                    s.clients,
                    s.sessions,
                    s.canary.clone(),
                    s.pending_deploy.clone(),
                    s.devices.connected.clone(),
                )
        });
    }
}

/// A process's resident memory, in bytes (Linux: `/proc/PID/statm`; elsewhere `None`).
fn resident_bytes(pid: u32) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // Every Linux Chroxy runs on uses 4 KiB pages but a few arm64 kernels (16/64 KiB);
    // sysconf says which.
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
        .ok()
        .flatten()
        .and_then(|p| u64::try_from(p).ok())?;
    Some(pages * page)
}

#[cfg(test)]
mod tests {
    use std::future::Future;

    use super::*;
    use crate::protocol::ShutdownReason;

    /// A worker the test plays: what it was started as, and the commands it is sent.
    struct Started {
        id: u64,
        release: ReleaseId,
        commands: mpsc::UnboundedReceiver<WorkerCommand>,
    }

    /// Workers that are only a reference: each start is handed to the test.
    struct Scripted(mpsc::UnboundedSender<Started>);

    impl StartWorker for Scripted {
        fn start(
            &mut self,
            _spec: LaunchSpec,
            id: u64,
            release: ReleaseId,
            _after: Vec<CancellationToken>,
            _reports: mpsc::UnboundedSender<Report>,
        ) -> WorkerRef {
            let (worker, commands) = WorkerRef::new(id);
            let _ = self.0.send(Started {
                id,
                release,
                commands,
            });
            worker
        }
    }

    /// A runner over scripted workers, running release "0" (known-good), and the test's
    /// ends of everything it talks to.
    struct Rig {
        _home: tempfile::TempDir,
        handle: Handle,
        route: watch::Receiver<Route>,
        reports: mpsc::UnboundedSender<Report>,
        starts: mpsc::UnboundedReceiver<Started>,
        shutdown: CancellationToken,
        task: JoinHandle<()>,
    }

    /// What the test waits for, or a failure naming it: never a hang.
    async fn within<T>(what: &str, wait: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .unwrap_or_else(|_| panic!("timed out waiting for {what}"))
    }

    impl Rig {
        /// Without a standby: the tests of restarts count every start.
        async fn start() -> Self {
            let policy = state::Policy {
                standby: false,
                ..Default::default()
            };
            Self::with(policy).await
        }

        async fn with(policy: state::Policy) -> Self {
            let home = tempfile::tempdir().unwrap();
            let paths = Paths::under(home.path());
            let (status_tx, status_rx) = watch::channel(Status::new(0, 0, true, "file"));
            let (actions_tx, actions_rx) = mpsc::channel(16);
            let (route_tx, route) = watch::channel(Route {
                port: None,
                voucher: None,
                state: StateName::Starting,
                retry_after_secs: 1,
            });
            let (starts_tx, starts) = mpsc::unbounded_channel();
            let releases = Arc::new(Releases::open(&paths));
            let tunnel = TunnelSlot::new(
                CancellationToken::new(),
                0,
                watch::channel(None).0,
                crate::tunnel::record_file(&paths),
            );
            let (machine, first) = Machine::start(policy, "0".into(), "0".into());
            let (runner, reports_rx) = Runner::new(Parts {
                paths: paths.clone(),
                spec: LaunchSpec {
                    releases: releases.clone(),
                    args: vec![],
                    env: vec![],
                    token: ApiToken::new("test-token"),
                    voucher: crate::forwarded::Voucher::generate().unwrap(),
                    identity: crate::channel::KeyPair::generate().unwrap(),
                    gate_timeout: Duration::from_secs(5),
                    heartbeat: Duration::from_secs(1),
                    heartbeat_misses: 3,
                    probe_interval: Duration::from_secs(30),
                    drain_idle: Duration::from_secs(1),
                    stop_grace: Duration::from_secs(1),
                    marks: "test".into(),
                    keeper_dir: paths.state_dir().to_path_buf(),
                    orphans: Default::default(),
                    standby: false,
                },
                machine,
                releases,
                instance: Instance::acquire(&paths).unwrap(),
                route_tx,
                status_tx,
                tunnel,
                secrets: None,
                tunnels: crate::tunnel::TunnelResolver::new(
                    Default::default(),
                    paths.config_file(),
                    crate::secrets::Secrets::files(&paths),
                    None,
                    None,
                ),
                keep_releases: 3,
                starter: Box::new(Scripted(starts_tx)),
                push: None,
                notices: tokio::sync::broadcast::Sender::new(4),
            });
            let reports = runner.reports_tx.clone();
            let shutdown = CancellationToken::new();
            let inbox = Inbox {
                reports: reports_rx,
                actions: actions_rx,
            };
            let stop = shutdown.clone();
            let (force, accepting) = (CancellationToken::new(), CancellationToken::new());
            let task = tokio::spawn(async move {
                runner.run(first, inbox, stop, force, accepting).await;
            });
            Self {
                _home: home,
                handle: Handle::new(status_rx, actions_tx),
                route,
                reports,
                starts,
                shutdown,
                task,
            }
        }

        async fn next_start(&mut self) -> Started {
            within("a worker to start", self.starts.recv())
                .await
                .expect("the runner is gone")
        }

        fn report(&self, id: u64, what: WorkerReport) {
            self.reports.send(Report { id, what }).unwrap();
        }

        /// Starts worker `id` listening on `port` and passes its gate.
        fn up(&self, id: u64, port: u16) {
            self.report(id, WorkerReport::Started { pid: 4000, port });
            self.report(id, WorkerReport::Healthy);
        }

        async fn routed_to(&mut self, port: Option<u16>) -> Route {
            let seen = within(
                "the public port's route",
                self.route.wait_for(|r| r.port == port),
            );
            seen.await.unwrap().clone()
        }

        async fn state(&self, state: StateName) {
            let mut status = self.handle.watch();
            within("the status", status.wait_for(|s| s.state == state))
                .await
                .unwrap();
        }
    }

    async fn command(worker: &mut Started) -> WorkerCommand {
        within("a command to the worker", worker.commands.recv())
            .await
            .expect("the runner dropped the worker")
    }

    #[tokio::test]
    async fn a_healthy_worker_is_routed_and_a_reconnect_reaches_its_phones() {
        let mut rig = Rig::start().await;
        let mut worker = rig.next_start().await;
        assert_eq!((worker.id, worker.release.as_str()), (1, "0"));
        let route = rig.route.borrow().clone();
        assert_eq!((route.port, route.state), (None, StateName::Starting));

        rig.up(1, 4242);
        let route = rig.routed_to(Some(4242)).await;
        assert_eq!(route.state, StateName::Healthy);
        assert!(route.voucher.is_some(), "a routed worker gets the voucher");
        rig.state(StateName::Healthy).await;

        let answer = rig.handle.act(Action::Reconnect).await.unwrap();
        assert_eq!(answer, "phones told to reconnect; health gate re-run");
        assert_eq!(
            command(&mut worker).await,
            WorkerCommand::Reconnect {
                restart_eta_ms: RECONNECT_ETA_MS
            }
        );
        let events = rig.handle.status().events;
        assert!(events.iter().any(|e| e.kind == "reconnect"), "{events:?}");
    }

    #[tokio::test]
    async fn a_crash_unroutes_asks_phones_to_wait_and_starts_the_release_again() {
        let mut rig = Rig::start().await;
        rig.next_start().await;
        rig.up(1, 4242);
        rig.routed_to(Some(4242)).await;

        rig.report(
            1,
            WorkerReport::Exited {
                status: "exit status 1".into(),
            },
        );
        let restarting = rig
            .route
            .wait_for(|r| r.port.is_none() && r.state == StateName::Restarting);
        let route = within("the route to say restarting", restarting)
            .await
            .unwrap()
            .clone();
        assert_eq!(route.retry_after_secs, 1, "0.5 s of backoff, rounded up");
        let again = rig.next_start().await;
        assert_eq!((again.id, again.release.as_str()), (2, "0"));
        rig.up(2, 4343);
        rig.routed_to(Some(4343)).await;
        assert_eq!(rig.handle.status().worker.restarts, 1);
    }

    #[tokio::test]
    async fn a_restart_replaces_the_worker_and_the_old_ones_late_exit_changes_nothing() {
        let mut rig = Rig::start().await;
        let mut first = rig.next_start().await;
        rig.up(1, 4242);
        rig.routed_to(Some(4242)).await;

        rig.handle.act(Action::Restart).await.unwrap();
        assert_eq!(
            command(&mut first).await,
            WorkerCommand::Stop {
                drain: true,
                reason: ShutdownReason::Restart,
                restart_eta_ms: RESTART_ETA_MS
            },
            "phones are told to come back"
        );
        let second = rig.next_start().await;
        assert_eq!(second.id, 2);
        rig.report(
            1,
            WorkerReport::Exited {
                status: "exit status 0".into(),
            },
        );
        rig.up(2, 4343);
        rig.routed_to(Some(4343)).await;
        rig.state(StateName::Healthy).await;
        let events = rig.handle.status().events;
        let kinds: Vec<&str> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds.iter().filter(|k| **k == "restart_requested").count(),
            1,
            "{kinds:?}"
        );
        assert!(kinds.contains(&"worker_stopped"), "{kinds:?}");
        assert!(
            !kinds.contains(&"worker_exited"),
            "a planned stop is no crash: {kinds:?}"
        );
    }

    #[tokio::test]
    async fn a_shutdown_tells_phones_it_is_for_good_and_ends_only_after_the_exit() {
        let mut rig = Rig::start().await;
        let mut worker = rig.next_start().await;
        rig.up(1, 4242);
        rig.routed_to(Some(4242)).await;

        rig.shutdown.cancel();
        assert_eq!(
            command(&mut worker).await,
            WorkerCommand::Stop {
                drain: true,
                reason: ShutdownReason::Shutdown,
                restart_eta_ms: RESTART_ETA_MS
            }
        );
        rig.state(StateName::Draining).await;
        assert_eq!(
            rig.handle.act(Action::Restart).await,
            Err(ActionError::Stopping),
            "nothing is started while stopping"
        );
        assert!(!rig.task.is_finished(), "it waits for the worker's exit");
        rig.report(
            1,
            WorkerReport::Exited {
                status: "exit status 0".into(),
            },
        );
        within("the runner to end", rig.task).await.unwrap();
        assert!(rig.starts.try_recv().is_err(), "no worker started after");
    }

    #[tokio::test]
    async fn a_crash_of_the_serving_worker_routes_its_standby_at_once_and_starts_another() {
        let mut rig = Rig::with(state::Policy::default()).await;
        let mut serving = rig.next_start().await;
        rig.up(1, 4242);
        rig.routed_to(Some(4242)).await;
        let mut standby = rig.next_start().await;
        assert_eq!((standby.id, standby.release.as_str()), (2, "0"));
        rig.up(2, 4343);
        let mut status = rig.handle.watch();
        let ready = status.wait_for(|s| s.standby.as_ref().is_some_and(|s| s.ready));
        within("the standby to be ready", ready).await.unwrap();
        assert_eq!(
            rig.route.borrow().port,
            Some(4242),
            "nothing is routed to it"
        );

        // The standby's own death is replaced; the serving worker hears nothing.
        rig.report(
            2,
            WorkerReport::Exited {
                status: "signal: 9 (SIGKILL)".into(),
            },
        );
        standby = rig.next_start().await;
        assert_eq!(standby.id, 3);
        rig.up(3, 4444);
        let ready = status.wait_for(|s| {
            s.standby
                .as_ref()
                .is_some_and(|s| s.ready && s.pid == Some(4000))
                && s.events.iter().any(|e| e.kind == "standby_lost")
        });
        within("the second standby to be ready", ready)
            .await
            .unwrap();
        assert!(serving.commands.try_recv().is_err());

        rig.report(
            1,
            WorkerReport::Exited {
                status: "signal: 9 (SIGKILL)".into(),
            },
        );
        let route = rig.routed_to(Some(4444)).await;
        assert_eq!(route.state, StateName::Healthy);
        assert_eq!(
            command(&mut standby).await,
            WorkerCommand::Resync {
                closed_there: true,
                adopt_from: Some(1)
            },
            "it reads the sessions the lost worker saved"
        );
        let next = rig.next_start().await;
        assert_eq!((next.id, next.release.as_str()), (4, "0"), "a new standby");
        let status = rig.handle.status();
        assert_eq!(status.worker.port, Some(4444));
        assert_eq!(status.worker.restarts, 1);
        assert!(
            status
                .events
                .iter()
                .any(|e| e.kind == "worker_exited" && e.message.contains("its standby took over")),
            "{:?}",
            status.events
        );
    }
}
