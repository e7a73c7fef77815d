//! One worker process, from launch to reaping, owned by one task. The task starts the
//! release's binary on a fresh loopback port, health-gates it, then watches it:
//! heartbeats (the watchdog), periodic probes, and the commands of the runner (drain,
//! reconnect, kill). Whatever happens is reported back as a [`Report`]; the runner
//! decides what it means. The process never outlives the task (`kill_on_drop`), and
//! nothing it started outlives its exit report: its agents resume their Claude Code
//! sessions in the next worker, and two CLIs must never run one session.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::{sleep_until, Instant};
use tokio_util::sync::CancellationToken;

use super::health::{self, GateFailure};
use super::release::{ReleaseId, Releases};
use crate::control::{
    to_line, token_line, FatalCause, SupervisorCommand, WorkerEvent, STANDBY_VAR,
};
use crate::keeper::keeping::{Held, KeepingHandle};
use crate::keeper::{Keeping, Orphans};
use crate::process;
use crate::protocol::ShutdownReason;
use crate::token::ApiToken;

/// How a worker is started and watched; the same for every worker of one supervisor.
#[derive(Debug, Clone)]
pub struct LaunchSpec {
    /// The release store (to find and verify the binary).
    pub releases: Arc<Releases>,
    /// Arguments after `worker --port 0 --supervised` (e.g. `--cwd`, `--demo`).
    pub args: Vec<OsString>,
    /// Extra environment (`CHROXY_HOME`, …). Never the token.
    pub env: Vec<(OsString, OsString)>,
    /// Handed over as the first line on the worker's stdin ([`token_line`]): never on
    /// its command line or in its environment, where its agents could read it.
    pub token: ApiToken,
    /// The supervisor's signing key, handed over with the token ([`crate::forwarded`]).
    pub voucher: crate::forwarded::Voucher,
    /// The desktop's identity key (protocol v2), handed over with the token.
    pub identity: crate::channel::KeyPair,
    /// Ready line plus the whole health gate must come within this.
    pub gate_timeout: Duration,
    /// The worker's heartbeat interval.
    pub heartbeat: Duration,
    /// Missed beats before the watchdog kills it.
    pub heartbeat_misses: u32,
    /// How often a healthy worker is probed.
    pub probe_interval: Duration,
    /// How long a drain may wait for running turns.
    pub drain_idle: Duration,
    /// After that, how long until SIGTERM, then SIGKILL.
    pub stop_grace: Duration,
    /// Names this supervisor among all processes (its pid and start time): worker `id`
    /// is marked `<marks>-<id>` ([`process::WORKER_MARK`]).
    pub marks: String,
    /// Where each worker's keeper listens (`keeper-<id>.sock`): a private directory.
    pub keeper_dir: PathBuf,
    /// The CLIs of lost workers, waiting for the runner's verdict.
    pub orphans: Arc<Orphans>,
    /// Started as the standby: its sessions take no input until its promotion's
    /// `resync` (and the CLIs it adopts then) is done ([`STANDBY_VAR`]).
    pub standby: bool,
}

/// How long the processes a dead worker left behind may take to die of SIGKILL.
const LEFTOVER_PATIENCE: Duration = Duration::from_secs(5);
/// How long a dead worker's stdout is still read for its last words.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// What the runner asks of a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerCommand {
    /// Stop: drained (phones told `reason`) or killed at once.
    Stop {
        /// Drain first.
        drain: bool,
        /// What phones are told.
        reason: ShutdownReason,
        /// When phones should try again.
        restart_eta_ms: u64,
    },
    /// Tell every phone to reconnect now, and probe.
    Reconnect {
        /// The ETA phones are told.
        restart_eta_ms: u64,
    },
    /// Re-read the sessions the worker it replaced saved; `closed_there`: it was a
    /// standby, and sessions no longer saved were closed there.
    Resync {
        /// See [`crate::control::SupervisorCommand::Resync`].
        closed_there: bool,
        /// The lost worker whose CLIs it takes over ([`Orphans`]).
        adopt_from: Option<u64>,
    },
    /// Tell its phones how a source build goes.
    DeployNews(crate::control::DeployNews),
    /// Stop waiting politely (a second Ctrl-C): SIGKILL now.
    Kill,
}

/// What happened to worker `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The worker (unique per supervisor).
    pub id: u64,
    /// What.
    pub what: WorkerReport,
}

/// The kinds of [`Report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerReport {
    /// The process is up and listening.
    Started {
        /// Its pid.
        pid: u32,
        /// Its private port.
        port: u16,
    },
    /// It passed the health gate.
    Healthy,
    /// It failed the gate (or could not start); it has been stopped.
    Unhealthy {
        /// The failing step.
        step: String,
        /// What went wrong, secret-free.
        detail: String,
    },
    /// Its latest heartbeat.
    Beat {
        /// Connected phones.
        clients: u32,
        /// Sessions.
        sessions: u32,
        /// Server faults since the previous beat.
        server_faults: u64,
        /// The devices connected now (registry ids).
        devices: Vec<String>,
    },
    /// Its phones should hear of this ([`crate::push`]).
    Notify(crate::push::Notice),
    /// A phone asked for a source build of this directory.
    Deploy {
        /// The directory.
        source: PathBuf,
        /// The device's name.
        requested_by: String,
        /// The device may deploy without approval.
        allowed: bool,
        /// Build its uncommitted changes too.
        allow_dirty: bool,
    },
    /// It missed its heartbeats and was killed.
    Hung,
    /// It stopped because the settings file is invalid (a person must fix it).
    ConfigInvalid {
        /// Its error: the file, the line, what to do.
        message: String,
    },
    /// It exited (reported last, once the process is reaped).
    Exited {
        /// "exit status 1", "killed by signal 9".
        status: String,
    },
}

/// The runner's side of one worker.
#[derive(Debug)]
pub struct WorkerRef {
    /// Unique per supervisor.
    pub id: u64,
    /// Cancelled once the process is reaped (or never started).
    pub exited: CancellationToken,
    commands: mpsc::UnboundedSender<WorkerCommand>,
}

impl WorkerRef {
    /// A reference to worker `id`, and where the commands sent to it arrive.
    pub fn new(id: u64) -> (Self, mpsc::UnboundedReceiver<WorkerCommand>) {
        let (commands, rx) = mpsc::unbounded_channel();
        let worker = Self {
            id,
            exited: CancellationToken::new(),
            commands,
        };
        (worker, rx)
    }

    /// Sends a command; a worker that is already gone needs none.
    pub fn send(&self, cmd: WorkerCommand) {
        let _ = self.commands.send(cmd);
    }
}

/// Starts the task for a worker of `release`. It first waits for `after` (workers being
/// stopped: they must have saved their sessions before a successor reads them).
pub fn launch(
    spec: LaunchSpec,
    id: u64,
    release: ReleaseId,
    after: Vec<CancellationToken>,
    reports: mpsc::UnboundedSender<Report>,
) -> WorkerRef {
    let (worker, rx) = WorkerRef::new(id);
    let path = spec.keeper_dir.join(format!("keeper-{id}.sock"));
    let keeping = Keeping::listen(path.clone(), worker_mark(&spec.marks, id))
        .map_err(|err| tracing::warn!(%err, "no keeper for this worker: its CLIs die with it"))
        .ok();
    let orphans = spec.orphans.clone();
    let task = Task {
        keeper: keeping.as_ref().map(|k| (k.handle(), path)),
        spec,
        id,
        release,
        reports,
        commands: rx,
        stdin: None,
        last_words: None,
    };
    let done = worker.exited.clone();
    let reports = task.reports.clone();
    let mark = task.mark();
    tokio::spawn(async move {
        // On its own task, so that even a panic in it ends in the `Exited` report the
        // runner waits for before it may stop (the process dies with the task).
        let (last, died) = match tokio::spawn(task.run(after)).await {
            Ok(last) => last,
            Err(err) => {
                let status = format!("killed: the task watching it failed ({err})");
                (WorkerReport::Exited { status }, false)
            }
        };
        let Held { kept, adopted } = match keeping {
            Some(keeping) => keeping.finish().await,
            None => Held::default(),
        };
        // Its agents (own process groups) and their tools (own sessions) run on after a
        // `kill -9` of the worker: they go before anyone may start its successor, which
        // resumes their Claude Code sessions. Except the CLIs whose pipes are kept, when
        // it died by itself: a standby may carry on with them, and the runner decides.
        let spare = match died {
            true => kept.iter().map(|k| k.agent.mark.clone()).collect(),
            false => Vec::new(),
        };
        let mut left = process::kill_worker_tree(&mark, spare.clone(), LEFTOVER_PATIENCE).await;
        // The tools of CLIs it adopted carry their first worker's mark.
        for foreign in adopted.iter().filter(|m| !spare.contains(m)) {
            left.extend(process::kill_marked(foreign, LEFTOVER_PATIENCE).await);
        }
        if !left.is_empty() {
            tracing::error!(?left, "processes of a stopped worker would not die");
        }
        match died {
            true => orphans.leave(id, kept),
            // Stopped, hung or failed: what it ran (adopted CLIs too) goes with it.
            false => crate::keeper::keeping::end(kept).await,
        }
        // Cancelled first: a successor that waits on us may start the moment the runner
        // sees this report.
        done.cancel();
        let _ = reports.send(Report { id, what: last });
    });
    worker
}

struct Task {
    spec: LaunchSpec,
    /// Its keeper, and where the worker finds it.
    keeper: Option<(KeepingHandle, PathBuf)>,
    id: u64,
    release: ReleaseId,
    reports: mpsc::UnboundedSender<Report>,
    commands: mpsc::UnboundedReceiver<WorkerCommand>,
    /// Kept out of the `Child`: tokio closes a child's stdin when it is waited for,
    /// and a closed stdin tells the worker its supervisor is gone.
    stdin: Option<ChildStdin>,
    /// The error it said it stops on (`fatal`), for its exit report.
    last_words: Option<(FatalCause, String)>,
}

/// Why the watch loop ended, with the process still to be dealt with.
enum Ending {
    Exited(String),
    GateFailed(GateFailure),
    ProbeFailed(GateFailure),
    Hung,
    Stop {
        drain: bool,
        reason: ShutdownReason,
        restart_eta_ms: u64,
    },
    Kill,
}

impl Task {
    /// This worker's [`process::WORKER_MARK`].
    fn mark(&self) -> String {
        worker_mark(&self.spec.marks, self.id)
    }

    fn report(&self, what: WorkerReport) {
        let _ = self.reports.send(Report { id: self.id, what });
    }

    /// Starts, watches and ends the worker. Returns `Exited`, always and last: what went
    /// wrong before (a failed gate, a hang) is reported on the way, so the runner never
    /// waits for an exit that will not come. With it: whether the worker died by itself
    /// (rather than being stopped or killed here).
    async fn run(mut self, after: Vec<CancellationToken>) -> (WorkerReport, bool) {
        for predecessor in after {
            tokio::select! {
                _ = predecessor.cancelled() => {}
                cmd = self.commands.recv() => if matches!(cmd, None | Some(WorkerCommand::Stop { .. } | WorkerCommand::Kill)) {
                    return (WorkerReport::Exited { status: "stopped before it started".into() }, false);
                }
            }
        }
        let releases = self.spec.releases.clone();
        let id = self.release.clone();
        let verified = match tokio::task::spawn_blocking(move || releases.verify(&id)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(join) => Err(join.to_string()),
        };
        let binary = match verified {
            Ok(path) => path,
            Err(detail) => return (self.never_started("checksum", detail), false),
        };
        let mut child = match self.spawn(&binary) {
            Ok(child) => child,
            Err(err) => {
                let detail = format!("cannot run {}: {err}", binary.display());
                return (self.never_started("spawn", detail), false);
            }
        };
        if let (Some((keeper, _)), Some(pid)) = (&self.keeper, child.id()) {
            keeper.expect(pid);
        }
        if let Some(stderr) = child.stderr.take() {
            tokio::spawn(forward_stderr(stderr, self.release.clone(), self.id));
        }
        self.stdin = child.stdin.take();
        if let Some(stdin) = self.stdin.as_mut() {
            // A worker that cannot read it exits, which the ready loop below reports.
            let line = token_line(&self.spec.token, &self.spec.voucher, &self.spec.identity);
            let _ = async {
                stdin.write_all(line.as_bytes()).await?;
                stdin.flush().await
            }
            .await;
        }
        let Some(stdout) = child.stdout.take() else {
            let _ = process::kill_group(&mut child).await;
            return (self.never_started("spawn", "no stdout pipe".into()), false);
        };
        let mut lines = BufReader::new(stdout).lines();
        let started = Instant::now();
        let deadline = started + self.spec.gate_timeout;

        // ---- the ready line -----------------------------------------------------------
        let port = loop {
            tokio::select! {
                status = child.wait() => {
                    // Its last words may still be in the pipe.
                    let rest = async {
                        while let Ok(Some(line)) = lines.next_line().await {
                            self.hear(&line);
                        }
                    };
                    let _ = tokio::time::timeout(LAST_WORDS, rest).await;
                    return (self.exited(exit_text(status)), false);
                }
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        if let Some(WorkerEvent::Ready { port, pid }) = self.hear(&line) {
                            self.report(WorkerReport::Started { pid, port });
                            break port;
                        }
                    }
                    // stdout closed before ready: it is exiting; the next turn reaps it.
                    Ok(None) | Err(_) => {
                        let status = child.wait().await;
                        return (self.exited(exit_text(status)), false);
                    }
                },
                _ = sleep_until(deadline) => {
                    let status = exit_text(process::kill_group(&mut child).await);
                    self.report(WorkerReport::Unhealthy {
                        step: "ready".into(),
                        detail: format!("no ready line within {} ms", self.spec.gate_timeout.as_millis()),
                    });
                    return (WorkerReport::Exited { status }, false);
                }
                cmd = self.commands.recv() => if let Some(ending) = self.early_stop(cmd) {
                    return self.finish(ending, &mut child, lines).await;
                }
            }
        };

        let ending = self.watch(&mut child, &mut lines, port, deadline).await;
        self.finish(ending, &mut child, lines).await
    }

    /// A line of the control channel, read; last words are kept.
    fn hear(&mut self, line: &str) -> Option<WorkerEvent> {
        let event = serde_json::from_str::<WorkerEvent>(line)
            .map_err(|err| tracing::debug!(%err, "ignoring a line from the worker"))
            .ok()?;
        if let WorkerEvent::Fatal { cause, message } = &event {
            self.last_words = Some((*cause, message.clone()));
        }
        Some(event)
    }

    /// The exit report, with the worker's last words if it said any; an invalid
    /// config is also reported as such, first.
    fn exited(&mut self, status: String) -> WorkerReport {
        let Some((cause, message)) = self.last_words.take() else {
            return WorkerReport::Exited { status };
        };
        if cause == FatalCause::Config {
            self.report(WorkerReport::ConfigInvalid {
                message: message.clone(),
            });
        }
        WorkerReport::Exited {
            status: format!("{status}: {message}"),
        }
    }

    /// The worker could not be started at all: the failure, then its (non-)exit.
    fn never_started(&self, step: &str, detail: String) -> WorkerReport {
        self.report(WorkerReport::Unhealthy {
            step: step.into(),
            detail,
        });
        WorkerReport::Exited {
            status: "not started".into(),
        }
    }

    fn early_stop(&self, cmd: Option<WorkerCommand>) -> Option<Ending> {
        match cmd {
            None | Some(WorkerCommand::Kill) => Some(Ending::Kill),
            // Not serving yet: nothing to drain.
            Some(WorkerCommand::Stop { .. }) => Some(Ending::Kill),
            Some(
                WorkerCommand::Reconnect { .. }
                | WorkerCommand::Resync { .. }
                | WorkerCommand::DeployNews(_),
            ) => None,
        }
    }

    fn spawn(&self, binary: &PathBuf) -> std::io::Result<Child> {
        let mut cmd = Command::new(binary);
        cmd.arg("worker")
            .args(["--port", "0", "--supervised"])
            .args(&self.spec.args)
            .envs(self.spec.env.iter().map(|(k, v)| (k, v)))
            // A token this supervisor was given in its own environment stays there:
            // the worker gets it on stdin only.
            .env_remove("CHROXY_TOKEN")
            .env_remove("TUNNEL_TOKEN")
            .env(process::WORKER_MARK, self.mark())
            .env_remove(crate::keeper::KEEPER_VAR)
            .env_remove(STANDBY_VAR)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((_, path)) = &self.keeper {
            cmd.env(crate::keeper::KEEPER_VAR, path);
        }
        if self.spec.standby {
            cmd.env(STANDBY_VAR, "1");
        }
        process::own(&mut cmd);
        cmd.spawn()
    }

    /// Gate, then watch until something ends it.
    async fn watch(
        &mut self,
        child: &mut Child,
        lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
        port: u16,
        gate_deadline: Instant,
    ) -> Ending {
        let token = self.spec.token.clone();
        let gate_timeout = gate_deadline.saturating_duration_since(Instant::now());
        let mut check = Some(Box::pin(gate_owned(
            port,
            token.clone(),
            self.spec.voucher.clone(),
            gate_timeout,
        )));
        let mut healthy = false;
        let watchdog = self.spec.heartbeat * self.spec.heartbeat_misses.max(1);
        let mut last_beat = Instant::now();
        let mut next_probe = Instant::now() + self.spec.probe_interval;
        loop {
            tokio::select! {
                status = child.wait() => return Ending::Exited(exit_text(status)),
                line = lines.next_line() => match line {
                    Ok(Some(line)) => {
                        match self.hear(&line) {
                            Some(WorkerEvent::Heartbeat { clients, sessions, server_faults, devices, .. }) => {
                                last_beat = Instant::now();
                                self.report(WorkerReport::Beat { clients, sessions, server_faults, devices });
                            }
                            Some(WorkerEvent::Notify { notice }) => self.report(WorkerReport::Notify(notice)),
                            Some(WorkerEvent::Deploy { source, requested_by, allowed, allow_dirty }) => {
                                self.report(WorkerReport::Deploy { source, requested_by, allowed, allow_dirty });
                            }
                            _ => {}
                        }
                    }
                    Ok(None) | Err(_) => return Ending::Exited(exit_text(child.wait().await)),
                },
                result = async { check.as_mut().expect("guarded").await }, if check.is_some() => {
                    check = None;
                    match result {
                        Ok(()) if !healthy => {
                            healthy = true;
                            last_beat = Instant::now();
                            next_probe = Instant::now() + self.spec.probe_interval;
                            self.report(WorkerReport::Healthy);
                        }
                        Ok(()) => next_probe = Instant::now() + self.spec.probe_interval,
                        // The supervisor's own I/O failed: nothing is known of the worker,
                        // so nothing is held against it. Probe again later; the heartbeat
                        // watchdog still catches a worker that hangs meanwhile.
                        Err(failure) if failure.local => {
                            tracing::warn!(%failure, "the supervisor could not run its own health probe; the worker is not blamed");
                            next_probe = Instant::now() + self.spec.probe_interval;
                        }
                        Err(failure) if !healthy => return Ending::GateFailed(failure),
                        Err(failure) => return Ending::ProbeFailed(failure),
                    }
                }
                _ = sleep_until(next_probe), if check.is_none() => {
                    check = Some(Box::pin(gate_owned(port, token.clone(), self.spec.voucher.clone(), self.spec.gate_timeout)));
                }
                _ = sleep_until(last_beat + watchdog), if healthy => return Ending::Hung,
                cmd = self.commands.recv() => match cmd {
                    Some(WorkerCommand::Reconnect { restart_eta_ms }) => {
                        self.send_line(&SupervisorCommand::Reconnect { restart_eta_ms }).await;
                        if healthy && check.is_none() {
                            check = Some(Box::pin(gate_owned(port, token.clone(), self.spec.voucher.clone(), self.spec.gate_timeout)));
                        }
                    }
                    Some(WorkerCommand::Resync { closed_there, adopt_from }) => {
                        let adopt = self.hand_over(adopt_from).await;
                        self.send_line(&SupervisorCommand::Resync { closed_there, adopt }).await;
                    }
                    Some(WorkerCommand::DeployNews(news)) => {
                        self.send_line(&SupervisorCommand::DeployNews(news)).await;
                    }
                    Some(WorkerCommand::Stop { drain, reason, restart_eta_ms }) => {
                        return Ending::Stop { drain: drain && healthy, reason, restart_eta_ms };
                    }
                    Some(WorkerCommand::Kill) | None => return Ending::Kill,
                },
            }
        }
    }

    /// Hands the CLIs that worker `from` left to this one, on the keeper channel (before
    /// the resync line that tells how many came). Returns how many went.
    async fn hand_over(&self, from: Option<u64>) -> u32 {
        let kept = from
            .map(|id| self.spec.orphans.take(id))
            .unwrap_or_default();
        if kept.is_empty() {
            return 0;
        }
        match &self.keeper {
            Some((keeper, _)) => keeper.adopt(kept).await as u32,
            None => {
                crate::keeper::keeping::end(kept).await;
                0
            }
        }
    }

    async fn send_line(&mut self, cmd: &SupervisorCommand) {
        if let Some(stdin) = self.stdin.as_mut() {
            let _ = write_line(stdin, cmd).await;
        }
    }

    /// Deals with the process as the ending says; returns the final report.
    async fn finish(
        mut self,
        ending: Ending,
        child: &mut Child,
        mut lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    ) -> (WorkerReport, bool) {
        let died = matches!(ending, Ending::Exited(_));
        let mut stdin = self.stdin.take();
        let what = match ending {
            Ending::Exited(status) => self.exited(status),
            Ending::GateFailed(f) => {
                let _ = process::kill_group(child).await;
                WorkerReport::Unhealthy {
                    step: f.step.as_str().into(),
                    detail: f.detail,
                }
            }
            Ending::ProbeFailed(f) => {
                let _ = process::kill_group(child).await;
                WorkerReport::Unhealthy {
                    step: f.step.as_str().into(),
                    detail: format!("periodic probe: {}", f.detail),
                }
            }
            Ending::Hung => {
                let _ = process::kill_group(child).await;
                WorkerReport::Hung
            }
            Ending::Kill => WorkerReport::Exited {
                status: exit_text(process::kill_group(child).await),
            },
            Ending::Stop {
                drain,
                reason,
                restart_eta_ms,
            } => {
                if drain {
                    if let Some(stdin) = stdin.as_mut() {
                        let cmd = SupervisorCommand::Drain {
                            reason,
                            restart_eta_ms,
                            idle_wait_ms: self.spec.drain_idle.as_millis() as u64,
                        };
                        let _ = write_line(stdin, &cmd).await;
                    }
                    let patience = self.spec.drain_idle + self.spec.stop_grace;
                    // Keep reading its stdout so it never blocks on a full pipe.
                    let drained = async {
                        while let Ok(Some(_)) = lines.next_line().await {}
                        child.wait().await
                    };
                    tokio::select! {
                        status = tokio::time::timeout(patience, drained) => match status {
                            Ok(status) => WorkerReport::Exited { status: exit_text(status) },
                            Err(_) => {
                                tracing::warn!(release = %self.release, "worker did not finish its drain in time; stopping it");
                                WorkerReport::Exited { status: exit_text(process::stop_gracefully(child, self.spec.stop_grace).await) }
                            }
                        },
                        _ = wait_for_kill(&mut self.commands) => WorkerReport::Exited {
                            status: exit_text(process::kill_group(child).await),
                        },
                    }
                } else {
                    drop(stdin.take());
                    WorkerReport::Exited {
                        status: exit_text(
                            process::stop_gracefully(child, self.spec.stop_grace).await,
                        ),
                    }
                }
            }
        };
        drop(stdin);
        match &what {
            WorkerReport::Exited { .. } => (what, died),
            // The failure first, then (after `exited`) the exit, so the runner learns both.
            _ => {
                self.report(what);
                let status = exit_text(child.wait().await);
                (WorkerReport::Exited { status }, died)
            }
        }
    }
}

/// Worker `id`'s [`process::WORKER_MARK`].
fn worker_mark(marks: &str, id: u64) -> String {
    format!("{marks}-{id}")
}

async fn wait_for_kill(commands: &mut mpsc::UnboundedReceiver<WorkerCommand>) {
    while let Some(cmd) = commands.recv().await {
        if cmd == WorkerCommand::Kill {
            return;
        }
    }
    // The runner is gone: keep waiting for the drain rather than cut it.
    std::future::pending::<()>().await
}

async fn gate_owned(
    port: u16,
    token: ApiToken,
    voucher: crate::forwarded::Voucher,
    deadline: Duration,
) -> Result<(), GateFailure> {
    health::gate(port, &token, Some(&voucher), deadline).await
}

async fn write_line(stdin: &mut ChildStdin, cmd: &SupervisorCommand) -> std::io::Result<()> {
    stdin.write_all(to_line(cmd).as_bytes()).await?;
    stdin.flush().await
}

fn exit_text(status: std::io::Result<std::process::ExitStatus>) -> String {
    match status {
        Ok(status) => process::describe(&status),
        Err(err) => format!("could not be waited for: {err}"),
    }
}

/// A worker's stderr (its log, and a panic's message) goes into the supervisor's log,
/// so one log (`chroxy start`'s stderr, the tray app's "Open logs") tells the whole
/// story, at the level the worker logged it; a line without a level (a panic's) is an
/// error.
async fn forward_stderr(stderr: tokio::process::ChildStderr, release: ReleaseId, worker: u64) {
    use tracing::Level;
    process::log_lines(stderr, |level, line| match level {
        Some(Level::WARN) => tracing::warn!(target: "worker", %release, worker, "{line}"),
        Some(Level::INFO) => tracing::info!(target: "worker", %release, worker, "{line}"),
        Some(Level::DEBUG | Level::TRACE) => {
            tracing::debug!(target: "worker", %release, worker, "{line}")
        }
        Some(Level::ERROR) | None => {
            tracing::error!(target: "worker", %release, worker, "{line}")
        }
    })
    .await
}
