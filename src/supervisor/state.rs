//! The supervisor's decisions, as a pure state machine: `step(event, now)` returns the
//! effects to carry out, and nothing here touches a process, a port or a file. The
//! runner feeds it what happened (a worker passed its health gate, exited, missed its
//! heartbeats; a timer fired; a person asked for a rollback) and executes what it says.
//! Time is a parameter, so every rule — backoff, crash budget, canary window — is
//! tested as a table, without a runtime.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::time::Instant;

use super::release::{ReleaseId, INSTALLED};
use super::status::{DeployOrigin, StateName};
use crate::backoff::Backoff;
use crate::protocol::ShutdownReason;
use crate::push::NoticeKind;

/// The numbers behind the rules, from the `[supervisor]` settings (their defaults, in
/// `config`, are the one copy: 0.5 s → 10 s backoff, reset after 60 s healthy, more than
/// 5 crashes in 2 min rolls back, 60 s canary, > 10 faults).
#[derive(Debug, Clone)]
pub struct Policy {
    /// Restart delays: doubling per consecutive crash, from its floor to its cap.
    pub backoff: Backoff,
    /// Healthy this long and the backoff starts over.
    pub healthy_reset: Duration,
    /// More crashes than this within `crash_window` rolls back (or gives up).
    pub crash_budget: usize,
    /// See `crash_budget`.
    pub crash_window: Duration,
    /// A new release is watched this long before it becomes known-good.
    pub canary_window: Duration,
    /// More server faults than this in the canary window rolls back.
    pub canary_error_limit: u64,
    /// `failed` reached through failed probes or a hung worker (not exits) is retried
    /// after these delays, doubling per retry (up to [`FAILED_RETRY_CAP`], or the floor if
    /// that is longer): a probe can fail for reasons that pass (a loaded machine), and
    /// the owner may be far from the desk.
    pub failed_retry: Backoff,
    /// Keep a spare worker of a trusted serving release ready to take over from it.
    pub standby: bool,
}

/// Standby workers that may fail one after another before Chroxy goes on without one
/// (until the serving worker is next replaced): a release whose second worker cannot
/// start must not have one started again and again beside the one that serves.
pub const STANDBY_TRIES: u32 = 3;

/// How long a deploy from away from the desk waits for a person before it is dropped:
/// long enough to walk to the machine, short enough that a forgotten request does not
/// get approved by someone who no longer remembers what it was.
pub const DEPLOY_APPROVAL_WINDOW: Duration = Duration::from_secs(600);

/// What phones are told to wait while nothing will change until a person acts.
pub const RETRY_AFTER_FAILED: Duration = Duration::from_secs(30);

/// The longest wait between retries out of `failed`.
pub const FAILED_RETRY_CAP: Duration = Duration::from_secs(3600);

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A worker passed its health gate.
    Healthy {
        /// Its release.
        release: ReleaseId,
    },
    /// A worker failed its health gate (the runner has stopped it).
    Unhealthy {
        /// Its release.
        release: ReleaseId,
        /// The gate step that failed.
        step: String,
        /// What went wrong there.
        detail: String,
    },
    /// A worker exited.
    Exited {
        /// Its release.
        release: ReleaseId,
        /// How (exit code or signal).
        status: String,
    },
    /// The serving worker stopped sending heartbeats (the runner has killed it).
    Hung {
        /// Its release.
        release: ReleaseId,
    },
    /// A worker would not start because the settings file is invalid (it has exited).
    ConfigInvalid {
        /// Its release.
        release: ReleaseId,
        /// Its error: the file, the line, what to do.
        message: String,
    },
    /// Server faults (never client mistakes) reported by the serving worker since its
    /// last heartbeat.
    ServerFaults {
        /// Its release.
        release: ReleaseId,
        /// How many.
        count: u64,
    },
    /// The standby worker passed its health gate.
    StandbyHealthy {
        /// Its release.
        release: ReleaseId,
    },
    /// The standby worker failed its gate, exited, hung or could not start (the runner
    /// has stopped it).
    StandbyLost {
        /// Its release.
        release: ReleaseId,
        /// What happened, for a person.
        why: String,
    },
    /// The armed timer fired.
    Timer,
    /// A person asked for a restart.
    Restart,
    /// A person (or `chroxy rollback`) asked to switch releases.
    Rollback {
        /// The target, already checked against the store ([`super::switch::check`]
        /// resolves "known-good" to a release, so only one place does).
        to: ReleaseId,
    },
    /// A person asked phones to reconnect (the window, the tray, the status page).
    Reconnect,
    /// `chroxy deploy` added a release and wants it promoted.
    Deploy {
        /// The new release.
        release: ReleaseId,
        /// Where it was asked for: a remote deploy waits for a person's approval.
        origin: DeployOrigin,
    },
    /// A person approved the deploy waiting for it.
    ApproveDeploy {
        /// The release they saw; `None`: whichever waits.
        release: Option<ReleaseId>,
    },
    /// A person refused the deploy waiting for approval.
    RefuseDeploy {
        /// As for `ApproveDeploy`.
        release: Option<ReleaseId>,
    },
    /// The timer armed by `ArmDeployExpiry` fired.
    DeployExpiry,
    /// Stop everything in order.
    Shutdown,
}

/// What to do, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Start a worker on a fresh private port and health-gate it; report `Healthy`,
    /// `Unhealthy` or `Exited`. While no worker is routed, the public port answers
    /// "restarting".
    Spawn {
        /// The release to run.
        release: ReleaseId,
    },
    /// Start a spare worker of this release beside the serving one and health-gate it;
    /// report `StandbyHealthy` or `StandbyLost`. Nothing is routed to it.
    SpawnStandby {
        /// The serving release.
        release: ReleaseId,
    },
    /// Stop the spare worker (at once: no phone is on it).
    StopStandby,
    /// The spare worker becomes this release's worker in place of the one just lost,
    /// and re-reads the sessions that one saved; a `Route` to it follows.
    PromoteStandby {
        /// The release it serves.
        release: ReleaseId,
    },
    /// Send the public port's new connections to this release's (healthy) worker.
    Route {
        /// The release whose worker serves.
        release: ReleaseId,
    },
    /// Stop a worker.
    Stop {
        /// The release whose worker stops.
        release: ReleaseId,
        /// Drained first (phones told, sessions saved) when true, killed otherwise.
        drain: bool,
        /// What its phones are told: back in a moment, or gone for good.
        notice: ShutdownReason,
    },
    /// Tell the phones of this release's (serving) worker to reconnect now, and re-run
    /// its health probe.
    Reconnect {
        /// The serving release.
        release: ReleaseId,
    },
    /// Restart the tunnel (cloudflared), keeping its mode and address where it can.
    RestartTunnel,
    /// `from`'s worker, just stopped with a drain, hands its sessions over to the worker
    /// that already serves: once it has saved them and exited, the serving one re-reads
    /// them (a deploy; any other successor starts after the exit and reads them then).
    Handover {
        /// The release whose worker is leaving.
        from: ReleaseId,
    },
    /// Move the store's `current` pointer.
    SetCurrent(ReleaseId),
    /// Move the store's `known_good` pointer.
    SetKnownGood(ReleaseId),
    /// Remove old releases from the store (a release was just promoted: the store
    /// keeps the newest few, current, known-good and release 0).
    PruneReleases,
    /// Fire `Timer` at this instant (replaces any earlier timer).
    ArmTimer(Instant),
    /// Fire `DeployExpiry` at this instant. A timer of its own: a pending deploy waits
    /// beside whatever the state's own timer (backoff, canary) is counting.
    ArmDeployExpiry(Instant),
    /// The request fed in this step is refused, for this reason (worded for a person).
    /// Whoever asked gets it as the answer; nothing else is done for it.
    Refuse(String),
    /// The request fed in this step is answered with this (worded for a person), when
    /// what was done depends on the state.
    Reply(String),
    /// Phones should hear of this even when none is looking ([`crate::push`]).
    Notify(NoticeKind),
    /// An entry for the status page's event list.
    Record {
        /// Event kind (`worker_exited`, `rollback`, …).
        kind: &'static str,
        /// Human-readable detail.
        message: String,
    },
    /// Everything is stopped; the supervisor may exit.
    Exit,
}

/// Where the machine is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// A worker is starting and being gated; nothing is routed.
    Starting {
        /// Its release.
        release: ReleaseId,
        /// How views call this start (starting, restarting, rolling back).
        name: StateName,
    },
    /// A release serves phones, watched as a canary if it is not known-good yet.
    Serving {
        /// The serving release.
        release: ReleaseId,
        /// Serving since.
        since: Instant,
        /// The canary watch, while it lasts.
        canary: Option<Canary>,
    },
    /// A release serves while a deploy's candidate starts beside it.
    Deploying {
        /// The serving release.
        release: ReleaseId,
        /// Serving since.
        since: Instant,
        /// The release being gated.
        candidate: ReleaseId,
    },
    /// Waiting to restart a release.
    Backoff {
        /// The release to restart.
        release: ReleaseId,
        /// When.
        until: Instant,
    },
    /// Gave up on every release; waits for a person, or, when probes rather than exits
    /// brought it here, for `retry_at`.
    Failed {
        /// Why, for every view.
        reason: String,
        /// When it tries the current release again by itself.
        retry_at: Option<Instant>,
    },
    /// The settings file is invalid: no worker can start until a person fixes it. No
    /// release is to blame, so nothing counts as a crash and nothing is rolled back;
    /// the release is tried again now and then, so a fixed file is picked up by itself.
    Misconfigured {
        /// The release to start.
        release: ReleaseId,
        /// Why, for every view: the worker's error, naming the file and line.
        reason: String,
        /// When to try again.
        until: Instant,
    },
    /// Draining and stopping; then `Exit`.
    Stopping,
}

/// The spare worker beside the serving one ([`Policy::standby`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Standby {
    /// Started; its health gate has not passed yet.
    Starting(ReleaseId),
    /// Gated and idle: it can take over.
    Ready(ReleaseId),
}

impl Standby {
    /// The release it runs.
    pub fn release(&self) -> &ReleaseId {
        match self {
            Self::Starting(r) | Self::Ready(r) => r,
        }
    }
}

/// A release being watched before it is trusted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Canary {
    /// When it becomes known-good.
    pub until: Instant,
    /// Server faults counted so far.
    pub errors: u64,
}

/// A deploy asked for from away from the desk, waiting for a person. It lives beside
/// the state, not in it: whatever serves keeps serving, crashing and restarting as
/// before, and the request survives all of that until it is answered or expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingDeploy {
    /// The release that would be deployed.
    pub release: ReleaseId,
    /// When it was asked for.
    pub requested_at: Instant,
    /// When it is dropped unless answered.
    pub expires_at: Instant,
}

/// The supervisor's memory: state plus the history the rules need.
#[derive(Debug, Clone)]
pub struct Machine {
    policy: Policy,
    state: State,
    current: ReleaseId,
    known_good: ReleaseId,
    crashes: VecDeque<Instant>,
    attempt: u32,
    restarts: u32,
    /// Retries out of `failed` since a worker was last healthy.
    failed_retries: u32,
    /// Phones were told of `failed`; told again only after a healthy worker or a
    /// person's restart or rollback.
    failed_notified: bool,
    /// The last settings error recorded, so a retry that fails the same way adds no
    /// event; cleared once a worker is healthy.
    config_error: Option<String>,
    /// A remote deploy waiting for approval.
    pending: Option<PendingDeploy>,
    /// The spare worker, if one runs.
    standby: Option<Standby>,
    /// Standby workers lost one after another beside the same serving worker.
    standby_failures: u32,
}

impl Machine {
    /// A machine about to start `current`; returns it with the first effects.
    pub fn start(policy: Policy, current: ReleaseId, known_good: ReleaseId) -> (Self, Vec<Effect>) {
        let effects = vec![Effect::Spawn {
            release: current.clone(),
        }];
        let state = State::Starting {
            release: current.clone(),
            name: StateName::Starting,
        };
        let m = Self {
            policy,
            state,
            current,
            known_good,
            crashes: VecDeque::new(),
            attempt: 0,
            restarts: 0,
            failed_retries: 0,
            failed_notified: false,
            config_error: None,
            pending: None,
            standby: None,
            standby_failures: 0,
        };
        (m, effects)
    }

    /// The state.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// The state as views name it.
    pub fn state_name(&self) -> StateName {
        match &self.state {
            State::Starting { name, .. } => *name,
            State::Serving { .. } | State::Deploying { .. } => StateName::Healthy,
            State::Backoff { .. } => StateName::Restarting,
            State::Failed { .. } | State::Misconfigured { .. } => StateName::Failed,
            State::Stopping => StateName::Draining,
        }
    }

    /// The release on trial and its watch, while a canary serves.
    pub fn canary(&self) -> Option<(&ReleaseId, &Canary)> {
        match &self.state {
            State::Serving {
                release,
                canary: Some(c),
                ..
            } => Some((release, c)),
            _ => None,
        }
    }

    /// More server faults than this in the canary window roll back.
    pub fn canary_error_limit(&self) -> u64 {
        self.policy.canary_error_limit
    }

    /// Why it failed, while failed.
    pub fn failed_reason(&self) -> Option<&str> {
        match &self.state {
            State::Failed { reason, .. } | State::Misconfigured { reason, .. } => Some(reason),
            _ => None,
        }
    }

    /// How long phones turned away at the public port should wait before trying again.
    pub fn retry_after(&self, now: Instant) -> Duration {
        match &self.state {
            // Rounded up: a phone told 0 would come straight back.
            State::Backoff { until, .. } => {
                Duration::from_secs(until.saturating_duration_since(now).as_secs() + 1)
            }
            // Nothing will change until a person acts; phones needn't hammer.
            State::Failed { .. } | State::Misconfigured { .. } => RETRY_AFTER_FAILED,
            _ => Duration::from_secs(1),
        }
    }

    /// Restarts so far (crashes and requests).
    pub fn restarts(&self) -> u32 {
        self.restarts
    }

    /// The release `current` points at.
    pub fn current(&self) -> &ReleaseId {
        &self.current
    }

    /// The release `known_good` points at.
    pub fn known_good(&self) -> &ReleaseId {
        &self.known_good
    }

    /// The deploy waiting for a person's approval, if any.
    pub fn pending_deploy(&self) -> Option<&PendingDeploy> {
        self.pending.as_ref()
    }

    /// The spare worker, if one runs.
    pub fn standby(&self) -> Option<&Standby> {
        self.standby.as_ref()
    }

    /// Feeds one event; returns what to do.
    pub fn step(&mut self, event: Event, now: Instant) -> Vec<Effect> {
        tracing::trace!(state = ?self.state, ?event, "supervisor step");
        let state = std::mem::replace(&mut self.state, State::Stopping);
        let (state, mut effects) = self.transition(state, event, now);
        self.keep_standby(&state, &mut effects);
        self.state = state;
        effects
    }

    /// The standby follows the state, whatever led there: one worker of the serving
    /// release while a trusted release serves, none otherwise. A canary has none: a
    /// canary that crashes is rolled back, not taken over. So every rule above can
    /// ignore it, and none can leave one running beside the wrong release.
    fn keep_standby(&mut self, state: &State, fx: &mut Vec<Effect>) {
        let serving = match state {
            State::Serving {
                release,
                canary: None,
                ..
            } => Some(release),
            State::Serving { .. } => None,
            _ => {
                // The next worker that serves gets its standby tries afresh.
                self.standby_failures = 0;
                None
            }
        };
        let wanted =
            serving.filter(|_| self.policy.standby && self.standby_failures < STANDBY_TRIES);
        if self
            .standby
            .as_ref()
            .is_some_and(|s| Some(s.release()) != wanted)
        {
            self.standby = None;
            // Before anything else: on a shutdown it goes before the serving one drains.
            fx.insert(0, Effect::StopStandby);
        }
        if let (None, Some(release)) = (&self.standby, wanted) {
            fx.push(Effect::SpawnStandby {
                release: release.clone(),
            });
            self.standby = Some(Standby::Starting(release.clone()));
        }
    }

    /// The standby passed its gate: it can take over.
    fn standby_ready(&mut self, release: ReleaseId) {
        if self.standby == Some(Standby::Starting(release.clone())) {
            self.standby = Some(Standby::Ready(release));
            self.standby_failures = 0;
        }
    }

    /// The standby is gone: another is started (by [`Machine::keep_standby`]) unless
    /// too many were lost in a row.
    fn standby_lost(&mut self, release: ReleaseId, why: String) -> Vec<Effect> {
        if self.standby.as_ref().map(Standby::release) != Some(&release) {
            return vec![];
        }
        self.standby = None;
        self.standby_failures += 1;
        let then = if self.standby_failures >= STANDBY_TRIES {
            format!(
                "{STANDBY_TRIES} in a row: Chroxy goes on without one until the serving worker is replaced"
            )
        } else {
            "another is started".into()
        };
        vec![Effect::Record {
            kind: "standby_lost",
            message: format!("the standby worker of release {release} {why}; {then}"),
        }]
    }

    /// The serving worker exited for the first time since it was last steady, and a
    /// gated standby waits: it takes over at once, with no backoff. The loss still
    /// counts toward the crash budget, and a second one before `healthy_reset` backs
    /// off as any other; the budget spent, the usual rules decide. Only an exit: the
    /// runner reports it once everything the worker started is gone but the CLIs it
    /// kept for a successor, which the standby adopts (the same processes, so no Claude
    /// Code session runs twice); a hung or unhealthy worker is still being killed when
    /// it is reported, and its successor waits for that, as ever.
    fn take_over(
        &mut self,
        release: &ReleaseId,
        now: Instant,
        kind: &'static str,
        what: &str,
    ) -> Option<Vec<Effect>> {
        let ready = matches!(&self.standby, Some(Standby::Ready(r)) if r == release);
        self.forget_old_crashes(now);
        let first = self.attempt == 0 && self.crashes.len() < self.policy.crash_budget;
        if !ready || !first || kind != "worker_exited" {
            return None;
        }
        self.crashes.push_back(now);
        self.standby = None;
        self.attempt = 1;
        self.restarts += 1;
        Some(vec![
            Effect::Record {
                kind,
                message: format!("release {release} {what}; its standby took over"),
            },
            Effect::PromoteStandby {
                release: release.clone(),
            },
            Effect::Route {
                release: release.clone(),
            },
        ])
    }

    /// Crashes older than the crash window no longer count.
    fn forget_old_crashes(&mut self, now: Instant) {
        while self
            .crashes
            .front()
            .is_some_and(|t| now.duration_since(*t) > self.policy.crash_window)
        {
            self.crashes.pop_front();
        }
    }

    /// Routes the event to the rules of the state it arrives in. What holds in every
    /// state comes first: a stop wins over everything, a remote deploy and the answers
    /// to it live beside the state, and a reconnect is answered wherever it lands.
    fn transition(&mut self, state: State, event: Event, now: Instant) -> (State, Vec<Effect>) {
        use Event as E;
        match (state, event) {
            (State::Stopping, _) => (State::Stopping, vec![]),
            (state, E::Shutdown) => shut_down(state),
            (
                state,
                E::Deploy {
                    release,
                    origin: DeployOrigin::Remote,
                },
            ) => (state, self.hold_deploy(release, now)),
            (state, E::ApproveDeploy { release }) => self.approve_deploy(state, release, now),
            (state, E::RefuseDeploy { release }) => (state, self.refuse_deploy(release)),
            (state, E::DeployExpiry) => (state, self.expire_deploy(now)),
            (state, E::Reconnect) => self.reconnect(state, now),
            (state, E::StandbyHealthy { release }) => {
                self.standby_ready(release);
                (state, vec![])
            }
            (state, E::StandbyLost { release, why }) => {
                let fx = self.standby_lost(release, why);
                (state, fx)
            }
            (State::Starting { release, name }, event) => self.starting(release, name, event, now),
            (
                State::Serving {
                    release,
                    since,
                    canary,
                },
                event,
            ) => self.serving(release, since, canary, event, now),
            (
                State::Deploying {
                    release,
                    since,
                    candidate,
                },
                event,
            ) => self.deploying(release, since, candidate, event, now),
            (State::Backoff { release, until }, event) => {
                self.backing_off(release, until, event, now)
            }
            (
                State::Misconfigured {
                    release,
                    reason,
                    until,
                },
                event,
            ) => self.waiting_for_settings(release, reason, until, event, now),
            (State::Failed { reason, retry_at }, event) => {
                self.failed(reason, retry_at, event, now)
            }
        }
    }

    /// A worker is starting and being gated; nothing is routed.
    fn starting(
        &mut self,
        release: ReleaseId,
        name: StateName,
        event: Event,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        match event {
            E::Healthy { release: r } if r == release => {
                self.failed_retries = 0;
                self.failed_notified = false;
                self.config_error = None;
                let mut fx = vec![
                    Effect::Route {
                        release: release.clone(),
                    },
                    Effect::Record {
                        kind: "worker_started",
                        message: format!("release {release} is serving"),
                    },
                ];
                let canary = (release != self.known_good).then(|| {
                    let until = now + self.policy.canary_window;
                    fx.push(Effect::ArmTimer(until));
                    Canary { until, errors: 0 }
                });
                let state = State::Serving {
                    release,
                    since: now,
                    canary,
                };
                (state, fx)
            }
            E::Unhealthy {
                release: r,
                step,
                detail,
            } if r == release => {
                let why = format!("release {release} failed its health gate at {step}: {detail}");
                self.crashed(release, now, "health_failed", why)
            }
            E::Exited { release: r, status } if r == release => {
                let why = format!("release {release} exited while starting ({status})");
                self.crashed(release, now, "worker_exited", why)
            }
            E::ConfigInvalid {
                release: r,
                message,
            } if r == release => self.misconfigured(release, message, now),
            // A person acts while nothing serves: what is starting is killed, and what
            // they asked for starts in its place.
            E::Restart => {
                self.restarts += 1;
                let fx = vec![restart_requested(&release), stop(release.clone(), false)];
                respawn(fx, release)
            }
            E::Rollback { to } => self.roll_back_after(stop(release, false), to, None),
            E::Deploy {
                release: candidate, ..
            } => {
                let mut fx = vec![stop(release, false)];
                fx.extend(self.deploy_now(candidate));
                (self.restarting_state(), fx)
            }
            event => ignored(State::Starting { release, name }, event),
        }
    }

    /// A release serves phones, watched as a canary if it is not known-good yet.
    fn serving(
        &mut self,
        release: ReleaseId,
        since: Instant,
        canary: Option<Canary>,
        event: Event,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        let in_canary = canary.is_some();
        match event {
            E::Exited { release: r, status } if r == release => self.lost_serving(
                release,
                since,
                in_canary,
                now,
                "worker_exited",
                format!("exited ({status})"),
            ),
            E::Hung { release: r } if r == release => self.lost_serving(
                release,
                since,
                in_canary,
                now,
                "worker_hung",
                "stopped sending heartbeats and was killed".into(),
            ),
            E::Unhealthy {
                release: r,
                step,
                detail,
            } if r == release => self.lost_serving(
                release,
                since,
                in_canary,
                now,
                "health_failed",
                format!("failed a health probe at {step}: {detail}"),
            ),
            E::ServerFaults { release: r, count } if r == release && in_canary => {
                let errors = canary.as_ref().map_or(0, |c| c.errors) + count;
                if errors > self.policy.canary_error_limit {
                    let why = format!(
                        "{errors} server faults within the canary window (limit {})",
                        self.policy.canary_error_limit
                    );
                    let to = self.known_good.clone();
                    return self.roll_back_after(stop(release, true), to, Some(&why));
                }
                let state = State::Serving {
                    release,
                    since,
                    canary: canary.map(|c| Canary { errors, ..c }),
                };
                (state, vec![])
            }
            E::Timer if canary.as_ref().is_some_and(|c| now >= c.until) => {
                // The event first: a view that sees the new known-good pointer must
                // also see why it moved.
                let fx = vec![
                    Effect::Record {
                        kind: "promoted",
                        message: format!(
                            "release {release} survived its canary window and is now known-good"
                        ),
                    },
                    Effect::SetKnownGood(release.clone()),
                    Effect::PruneReleases,
                ];
                self.known_good = release.clone();
                let state = State::Serving {
                    release,
                    since,
                    canary: None,
                };
                (state, fx)
            }
            E::Restart => {
                self.restarts += 1;
                let fx = vec![restart_requested(&release), stop(release.clone(), true)];
                respawn(fx, release)
            }
            E::Rollback { to } => self.roll_back_after(stop(release, true), to, None),
            E::Deploy {
                release: candidate, ..
            } if candidate == release => {
                let message = format!("release {candidate} is already serving");
                let fx = vec![
                    Effect::Record {
                        kind: "deploy_refused",
                        message: message.clone(),
                    },
                    Effect::Refuse(message),
                ];
                let state = State::Serving {
                    release,
                    since,
                    canary,
                };
                (state, fx)
            }
            E::Deploy {
                release: candidate, ..
            } => {
                let fx = vec![
                    Effect::Record {
                        kind: "deploying",
                        message: format!("starting release {candidate} beside {release}"),
                    },
                    Effect::Spawn {
                        release: candidate.clone(),
                    },
                ];
                let state = State::Deploying {
                    release,
                    since,
                    candidate,
                };
                (state, fx)
            }
            event => ignored(
                State::Serving {
                    release,
                    since,
                    canary,
                },
                event,
            ),
        }
    }

    /// A release serves while a deploy's candidate is gated beside it: the old release
    /// serves until the candidate proves itself.
    fn deploying(
        &mut self,
        release: ReleaseId,
        since: Instant,
        candidate: ReleaseId,
        event: Event,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        match event {
            E::Deploy { .. } => {
                let why = "a deploy is already in progress; wait for it to finish";
                let state = State::Deploying {
                    release,
                    since,
                    candidate,
                };
                (state, vec![Effect::Refuse(why.into())])
            }
            E::Healthy { release: r } if r == candidate => {
                self.current = candidate.clone();
                let until = now + self.policy.canary_window;
                let fx = vec![
                    Effect::Route {
                        release: candidate.clone(),
                    },
                    Effect::SetCurrent(candidate.clone()),
                    stop(release.clone(), true),
                    Effect::Handover { from: release },
                    Effect::Record {
                        kind: "deployed",
                        message: format!(
                            "release {candidate} passed its health gate and now serves; watching it for {} s",
                            self.policy.canary_window.as_secs()
                        ),
                    },
                    Effect::ArmTimer(until),
                ];
                let state = State::Serving {
                    release: candidate,
                    since: now,
                    canary: Some(Canary { until, errors: 0 }),
                };
                (state, fx)
            }
            E::Unhealthy {
                release: r,
                step,
                detail,
            } if r == candidate => {
                let why = format!("was not promoted: health gate failed at {step}: {detail}");
                candidate_failed(release, since, &candidate, "health_failed", why)
            }
            E::ConfigInvalid {
                release: r,
                message,
            } if r == candidate => {
                let why = format!("cannot start: {message}");
                candidate_failed(release, since, &candidate, "config_invalid", why)
            }
            E::Exited { release: r, status } if r == candidate => {
                let why = format!("exited before its health gate passed ({status})");
                candidate_failed(release, since, &candidate, "worker_exited", why)
            }
            E::Exited { release: r, status } if r == release => {
                // The old one died while the new one starts: the candidate will serve if
                // it passes; meanwhile nothing is routed.
                let fx = vec![Effect::Record {
                    kind: "worker_exited",
                    message: format!("release {release} exited ({status}) during a deploy"),
                }];
                let state = State::Starting {
                    release: candidate,
                    name: StateName::Restarting,
                };
                (state, fx)
            }
            event @ (E::Rollback { .. } | E::Restart) => {
                // A person acts while a candidate is being gated: drop the candidate and
                // do what they asked of the release that serves.
                let mut fx = vec![
                    Effect::Record {
                        kind: "deploy_abandoned",
                        message: format!("deploy of release {candidate} abandoned on request"),
                    },
                    stop(candidate, false),
                ];
                let (state, more) = self.serving(release, since, None, event, now);
                fx.extend(more);
                (state, fx)
            }
            event => ignored(
                State::Deploying {
                    release,
                    since,
                    candidate,
                },
                event,
            ),
        }
    }

    /// Waiting to restart a release after a crash.
    fn backing_off(
        &mut self,
        release: ReleaseId,
        until: Instant,
        event: Event,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        match event {
            E::Timer if now >= until => respawn(vec![], release),
            // Nothing serves here either: a person's request is taken as while starting.
            event @ (E::Restart | E::Rollback { .. } | E::Deploy { .. }) => {
                self.starting(release, StateName::Restarting, event, now)
            }
            event => ignored(State::Backoff { release, until }, event),
        }
    }

    /// The settings file is invalid: retried now and then; a person's action is taken
    /// as from `failed`.
    fn waiting_for_settings(
        &mut self,
        release: ReleaseId,
        reason: String,
        until: Instant,
        event: Event,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        match event {
            E::Timer if now >= until => respawn(vec![], release),
            event @ (E::Restart | E::Rollback { .. } | E::Deploy { .. }) => {
                self.failed(reason, None, event, now)
            }
            event => ignored(
                State::Misconfigured {
                    release,
                    reason,
                    until,
                },
                event,
            ),
        }
    }

    /// Gave up: a person gets it going again, or the retry a probe failure earns.
    fn failed(
        &mut self,
        reason: String,
        retry_at: Option<Instant>,
        event: Event,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        use Event as E;
        match event {
            E::Timer if retry_at.is_some_and(|at| now >= at) => {
                self.failed_retries += 1;
                self.restarts += 1;
                let message = format!(
                    "trying release {} again by itself after failing: {reason}",
                    self.current
                );
                self.start_over("retry", message)
            }
            E::Restart => {
                // A person acted: a failure after this is news again.
                self.failed_notified = false;
                let message = format!("restarting release {} on request", self.current);
                self.start_over("restart_requested", message)
            }
            E::Rollback { to } => {
                self.failed_notified = false;
                self.crashes.clear();
                self.attempt = 0;
                let fx = self.roll_back(to, None);
                (self.rolling_back_state(), fx)
            }
            E::Deploy {
                release: candidate, ..
            } => {
                self.crashes.clear();
                self.attempt = 0;
                let fx = self.deploy_now(candidate);
                (self.restarting_state(), fx)
            }
            event => ignored(State::Failed { reason, retry_at }, event),
        }
    }

    /// A person asks phones to reconnect. The tunnel is the usual culprit when a phone
    /// cannot get through, so it restarts whatever the state; a serving worker tells its
    /// phones and re-runs its probe; with nothing serving or starting, one starts.
    fn reconnect(&mut self, state: State, now: Instant) -> (State, Vec<Effect>) {
        let mut fx = vec![Effect::RestartTunnel];
        match &state {
            State::Serving { release, .. } | State::Deploying { release, .. } => {
                fx.push(Effect::Reconnect {
                    release: release.clone(),
                });
                fx.push(Effect::Record {
                    kind: "reconnect",
                    message: "phones told to reconnect now; health gate re-run".into(),
                });
                fx.push(Effect::Reply(
                    "phones told to reconnect; health gate re-run".into(),
                ));
                (state, fx)
            }
            State::Starting { .. } => {
                fx.push(Effect::Reply(
                    "a worker is starting; phones reconnect as soon as it is healthy".into(),
                ));
                (state, fx)
            }
            State::Backoff { .. }
            | State::Failed { .. }
            | State::Misconfigured { .. }
            | State::Stopping => {
                fx.push(Effect::Record {
                    kind: "reconnect",
                    message: "no worker was serving: starting one now".into(),
                });
                fx.push(Effect::Reply(
                    "no worker was serving; starting one now".into(),
                ));
                let (state, more) = self.transition(state, Event::Restart, now);
                fx.extend(more);
                (state, fx)
            }
        }
    }

    /// After `stop`, a rollback to `to` (see [`Machine::roll_back`] for `why`).
    fn roll_back_after(
        &mut self,
        stop: Effect,
        to: ReleaseId,
        why: Option<&str>,
    ) -> (State, Vec<Effect>) {
        let mut fx = vec![stop];
        fx.extend(self.roll_back(to, why));
        (self.rolling_back_state(), fx)
    }

    /// The serving worker is gone. In its canary window that is a verdict on the
    /// release; otherwise a crash like any other.
    fn lost_serving(
        &mut self,
        release: ReleaseId,
        since: Instant,
        in_canary: bool,
        now: Instant,
        kind: &'static str,
        what: String,
    ) -> (State, Vec<Effect>) {
        if in_canary && release != self.known_good {
            let why = format!("release {release} {what} within its canary window");
            let mut fx = vec![Effect::Record {
                kind,
                message: why.clone(),
            }];
            let to = self.known_good.clone();
            fx.extend(self.roll_back(to, Some(&why)));
            return (self.rolling_back_state(), fx);
        }
        if now.duration_since(since) >= self.policy.healthy_reset {
            self.attempt = 0;
        }
        if let Some(fx) = self.take_over(&release, now, kind, &what) {
            let state = State::Serving {
                release,
                since: now,
                canary: None,
            };
            return (state, fx);
        }
        self.crashed(
            release.clone(),
            now,
            kind,
            format!("release {release} {what}"),
        )
    }

    /// The settings file keeps `release` from starting: wait for a person to fix it,
    /// trying again at the longest restart delay. Not a crash.
    fn misconfigured(
        &mut self,
        release: ReleaseId,
        message: String,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        let until = now + self.policy.backoff.cap;
        let reason = format!(
            "release {release} cannot start: {message} (Chroxy tries again every {:?}, or at once on a restart)",
            self.policy.backoff.cap
        );
        let mut fx = Vec::new();
        if self.config_error.as_ref() != Some(&message) {
            fx.push(Effect::Record {
                kind: "config_invalid",
                message: reason.clone(),
            });
            self.config_error = Some(message);
        }
        fx.push(Effect::ArmTimer(until));
        (
            State::Misconfigured {
                release,
                reason,
                until,
            },
            fx,
        )
    }

    /// A worker failed: restart after a backoff, roll back after too many, give up
    /// when even the known-good release keeps failing.
    fn crashed(
        &mut self,
        release: ReleaseId,
        now: Instant,
        kind: &'static str,
        why: String,
    ) -> (State, Vec<Effect>) {
        self.crashes.push_back(now);
        self.forget_old_crashes(now);
        let mut fx = vec![Effect::Record {
            kind,
            message: why.clone(),
        }];
        if self.crashes.len() > self.policy.crash_budget {
            if release != self.known_good {
                let reason = format!(
                    "{} failures in {} s",
                    self.crashes.len(),
                    self.policy.crash_window.as_secs()
                );
                self.crashes.clear();
                self.attempt = 0;
                let to = self.known_good.clone();
                fx.extend(self.roll_back(to, Some(&reason)));
                return (self.rolling_back_state(), fx);
            }
            // An exit is the worker's own verdict; a failed probe or a missed heartbeat
            // may be the machine's passing state, so those earn a retry, later and
            // later, while the owner is away.
            let retry_at = (kind != "worker_exited")
                .then(|| now + self.policy.failed_retry.delay(self.failed_retries));
            let then = match retry_at {
                Some(at) => format!(
                    "it is tried again by itself in {} s",
                    at.duration_since(now).as_secs()
                ),
                None => "nothing is retried until you act".into(),
            };
            let reason = format!(
                "the known-good release {release} failed {} times in {} s; last: {why}; {then}. Fix the problem, then restart or roll back: `chroxy rollback`, the status page or the tray app",
                self.crashes.len(),
                self.policy.crash_window.as_secs()
            );
            fx.push(Effect::Record {
                kind: "failed",
                message: reason.clone(),
            });
            // Once, not at each of its own later retries.
            if !self.failed_notified {
                self.failed_notified = true;
                fx.push(Effect::Notify(NoticeKind::Failed));
            }
            fx.extend(retry_at.map(Effect::ArmTimer));
            return (State::Failed { reason, retry_at }, fx);
        }
        let until = now + self.policy.backoff.delay(self.attempt);
        self.attempt += 1;
        self.restarts += 1;
        fx.push(Effect::ArmTimer(until));
        (State::Backoff { release, until }, fx)
    }

    /// Out of `failed`: the current release starts afresh (no crash counted against it).
    fn start_over(&mut self, kind: &'static str, message: String) -> (State, Vec<Effect>) {
        self.crashes.clear();
        self.attempt = 0;
        let release = self.current.clone();
        respawn(vec![Effect::Record { kind, message }], release)
    }

    /// Point `current` at `to` and start it: because of `why`, or (`None`) because a
    /// person asked.
    fn roll_back(&mut self, target: ReleaseId, why: Option<&str>) -> Vec<Effect> {
        let from = std::mem::replace(&mut self.current, target.clone());
        self.restarts += 1;
        let mut fx = vec![
            Effect::SetCurrent(target.clone()),
            Effect::Record {
                kind: "rollback",
                message: format!(
                    "rolling back from {from} to {target}: {}",
                    why.unwrap_or("requested")
                ),
            },
            Effect::Spawn { release: target },
        ];
        // The person who asked for it knows already.
        if why.is_some() {
            fx.push(Effect::Notify(NoticeKind::RolledBack));
        }
        fx
    }

    /// A remote deploy: kept for a person to answer. A second one while one waits is
    /// refused, not swapped in: what a person is about to approve must not change under
    /// their click, and a busy script must not push out the request they were shown.
    fn hold_deploy(&mut self, release: ReleaseId, now: Instant) -> Vec<Effect> {
        if let Some(waiting) = &self.pending {
            let why = format!(
                "release {} already awaits approval; release {release} was not queued: approve or refuse that one first (the Chroxy window, the status page, or `chroxy deploy --approve`/`--refuse` at a terminal), then deploy again",
                waiting.release
            );
            return vec![
                Effect::Record {
                    kind: "deploy_refused",
                    message: why.clone(),
                },
                Effect::Refuse(why),
            ];
        }
        let expires_at = now + DEPLOY_APPROVAL_WINDOW;
        let message = format!(
            "release {release} was sent from away from the desk and waits for approval: Approve in the Chroxy window or on the status page, or `chroxy deploy --approve` at a terminal, within {} min; until then nothing changes",
            DEPLOY_APPROVAL_WINDOW.as_secs() / 60
        );
        self.pending = Some(PendingDeploy {
            release,
            requested_at: now,
            expires_at,
        });
        vec![
            Effect::Record {
                kind: "deploy_pending",
                message,
            },
            Effect::ArmDeployExpiry(expires_at),
        ]
    }

    /// The pending deploy a person answers, if it is the one they saw.
    fn answered(&self, seen: Option<&ReleaseId>) -> Result<&PendingDeploy, String> {
        let Some(waiting) = &self.pending else {
            return Err("no deploy awaits approval".into());
        };
        match seen {
            Some(seen) if *seen != waiting.release => Err(format!(
                "the deploy awaiting approval is release {}, not {seen}; look again before answering",
                waiting.release
            )),
            _ => Ok(waiting),
        }
    }

    /// Approved: exactly what a deploy from the desk does, from whatever state serves.
    fn approve_deploy(
        &mut self,
        state: State,
        seen: Option<ReleaseId>,
        now: Instant,
    ) -> (State, Vec<Effect>) {
        let release = match self.answered(seen.as_ref()) {
            Ok(waiting) => waiting.release.clone(),
            Err(why) => return (state, vec![Effect::Refuse(why)]),
        };
        if let State::Deploying { candidate, .. } = &state {
            // Kept: the person may approve it once the deploy under way is settled.
            let why = format!(
                "release {candidate} is being deployed now; approve release {release} once that is settled"
            );
            return (state, vec![Effect::Refuse(why)]);
        }
        self.pending = None;
        let mut fx = vec![Effect::Record {
            kind: "deploy_approved",
            message: format!("the deploy of release {release} was approved"),
        }];
        let deploy = Event::Deploy {
            release,
            origin: DeployOrigin::Desk,
        };
        let (state, more) = self.transition(state, deploy, now);
        fx.extend(more);
        (state, fx)
    }

    fn refuse_deploy(&mut self, seen: Option<ReleaseId>) -> Vec<Effect> {
        let release = match self.answered(seen.as_ref()) {
            Ok(waiting) => waiting.release.clone(),
            Err(why) => return vec![Effect::Refuse(why)],
        };
        self.pending = None;
        vec![Effect::Record {
            kind: "deploy_refused",
            message: format!(
                "the deploy of release {release} was refused; it stays in the store, unpromoted"
            ),
        }]
    }

    fn expire_deploy(&mut self, now: Instant) -> Vec<Effect> {
        // A timer armed for a request answered since finds nothing to drop.
        let Some(release) = self
            .pending
            .take_if(|p| now >= p.expires_at)
            .map(|p| p.release)
        else {
            return vec![];
        };
        vec![Effect::Record {
            kind: "deploy_expired",
            message: format!(
                "the deploy of release {release} was not approved within {} min and was dropped; it stays in the store, unpromoted: deploy it again to ask again",
                DEPLOY_APPROVAL_WINDOW.as_secs() / 60
            ),
        }]
    }

    /// Nothing healthy serves, so a deploy cannot run beside it: switch and start the
    /// candidate directly; it is a canary like any release that is not known-good.
    fn deploy_now(&mut self, candidate: ReleaseId) -> Vec<Effect> {
        let from = std::mem::replace(&mut self.current, candidate.clone());
        self.restarts += 1;
        vec![
            Effect::SetCurrent(candidate.clone()),
            Effect::Record {
                kind: "deploying",
                message: format!(
                    "starting release {candidate} in place of {from}, which was not serving"
                ),
            },
            Effect::Spawn { release: candidate },
        ]
    }

    fn restarting_state(&self) -> State {
        State::Starting {
            release: self.current.clone(),
            name: StateName::Restarting,
        }
    }

    fn rolling_back_state(&self) -> State {
        State::Starting {
            release: self.current.clone(),
            name: StateName::RollingBack,
        }
    }
}

/// The releases a supervisor starts with, and what to record about them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StartPlan {
    /// The release to run.
    pub current: ReleaseId,
    /// The release to fall back to.
    pub known_good: ReleaseId,
    /// Pointer moves and events, before the machine's first effects.
    pub effects: Vec<Effect>,
}

/// Chooses what to start from the store's pointers and its `damaged` releases (id →
/// why). A damaged release is reported, never run, and never stops the start: without a
/// supervisor there is no status page and no rollback, so a damaged `current` falls back
/// to known-good, then to release 0 (the installed binary), saying so.
pub fn start_plan(
    current: &str,
    known_good: &str,
    damaged: &std::collections::BTreeMap<String, String>,
) -> StartPlan {
    let intact = |id: &&str| !damaged.contains_key(*id);
    let run = [current, known_good, INSTALLED]
        .into_iter()
        .find(intact)
        .unwrap_or(INSTALLED);
    let fallback = [known_good, INSTALLED]
        .into_iter()
        .find(intact)
        .unwrap_or(INSTALLED);
    let mut effects: Vec<Effect> = damaged
        .values()
        .map(|why| Effect::Record {
            kind: "release_damaged",
            message: why.clone(),
        })
        .collect();
    if fallback != known_good {
        effects.push(Effect::SetKnownGood(fallback.into()));
        effects.push(Effect::Record {
            kind: "rollback",
            message: format!(
                "the known-good release {known_good} is damaged; release {fallback} is known-good now"
            ),
        });
    }
    if run != current {
        effects.push(Effect::SetCurrent(run.into()));
        effects.push(Effect::Record {
            kind: "rollback",
            message: format!("release {current} is damaged; starting release {run} instead"),
        });
    }
    StartPlan {
        current: run.into(),
        known_good: fallback.into(),
        effects,
    }
}

/// Stop everything in order: drain what serves or starts, kill a deploy's candidate,
/// tell phones it is for good, then exit.
fn shut_down(state: State) -> (State, Vec<Effect>) {
    let for_good = |release: &ReleaseId, drain| Effect::Stop {
        release: release.clone(),
        drain,
        notice: ShutdownReason::Shutdown,
    };
    let mut fx = match &state {
        State::Serving { release, .. } | State::Starting { release, .. } => {
            vec![for_good(release, true)]
        }
        State::Deploying {
            release, candidate, ..
        } => vec![for_good(candidate, false), for_good(release, true)],
        State::Backoff { .. }
        | State::Failed { .. }
        | State::Misconfigured { .. }
        | State::Stopping => vec![],
    };
    fx.push(Effect::Exit);
    (State::Stopping, fx)
}

/// Stops `release`'s worker on the way to another (its phones are told to come back).
fn stop(release: ReleaseId, drain: bool) -> Effect {
    Effect::Stop {
        release,
        drain,
        notice: ShutdownReason::Restart,
    }
}

/// The event of a restart a person asked for.
fn restart_requested(release: &str) -> Effect {
    Effect::Record {
        kind: "restart_requested",
        message: format!("restarting release {release} on request"),
    }
}

/// An event that changes nothing here (a late report about a replaced worker).
fn ignored(state: State, event: Event) -> (State, Vec<Effect>) {
    tracing::debug!(?state, ?event, "event ignored in this state");
    (state, vec![])
}

/// After `fx`, starts `release` again: the way back from a crash, a request or `failed`.
fn respawn(mut fx: Vec<Effect>, release: ReleaseId) -> (State, Vec<Effect>) {
    fx.push(Effect::Spawn {
        release: release.clone(),
    });
    (
        State::Starting {
            release,
            name: StateName::Restarting,
        },
        fx,
    )
}

/// A deploy's candidate failed before serving: nothing changes for the phones, and the
/// event says so.
fn candidate_failed(
    release: ReleaseId,
    since: Instant,
    candidate: &str,
    kind: &'static str,
    why: String,
) -> (State, Vec<Effect>) {
    let fx = vec![Effect::Record {
        kind,
        message: format!("release {candidate} {why}; {release} keeps serving"),
    }];
    let state = State::Serving {
        release,
        since,
        canary: None,
    };
    (state, fx)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn machine() -> (Machine, Instant) {
        let (m, fx) = Machine::start(Policy::default(), "1-new".into(), "0-good".into());
        assert_eq!(
            fx,
            vec![Effect::Spawn {
                release: "1-new".into()
            }]
        );
        (m, Instant::now())
    }

    fn healthy(r: &str) -> Event {
        Event::Healthy { release: r.into() }
    }

    fn exited(r: &str) -> Event {
        Event::Exited {
            release: r.into(),
            status: "exit status 1".into(),
        }
    }

    fn spawns(fx: &[Effect]) -> Vec<&str> {
        fx.iter()
            .filter_map(|e| match e {
                Effect::Spawn { release } => Some(release.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_from_the_floor_to_the_cap() {
        let p = Policy::default();
        let got: Vec<u64> = (0..7)
            .map(|a| p.backoff.delay(a).as_millis() as u64)
            .collect();
        assert_eq!(got, [500, 1000, 2000, 4000, 8000, 10_000, 10_000]);
    }

    #[test]
    fn a_new_release_is_a_canary_and_becomes_known_good_after_the_window() {
        let (mut m, t0) = machine();
        let fx = m.step(healthy("1-new"), t0);
        assert!(fx.contains(&Effect::Route {
            release: "1-new".into()
        }));
        assert!(fx.contains(&Effect::ArmTimer(t0 + 60 * S)));
        assert_eq!(m.state_name(), StateName::Healthy);
        assert_eq!(m.step(Event::Timer, t0 + 30 * S), vec![], "too early");
        let fx = m.step(Event::Timer, t0 + 60 * S);
        assert!(fx.contains(&Effect::SetKnownGood("1-new".into())));
        assert_eq!(m.known_good(), "1-new");
        assert!(
            fx.contains(&Effect::PruneReleases),
            "old releases go once a new one is trusted"
        );
        assert_eq!(
            fx.last(),
            Some(&Effect::SpawnStandby {
                release: "1-new".into()
            }),
            "a trusted release gets a standby; a canary had none"
        );
    }

    #[test]
    fn crashes_back_off_then_roll_back_then_give_up() {
        let (mut m, t0) = machine();
        let mut now = t0;
        // Five failures of the new release: each waits longer before the next start.
        let mut delays = Vec::new();
        for _ in 0..5 {
            let fx = m.step(exited("1-new"), now);
            let until = fx
                .iter()
                .find_map(|e| {
                    if let Effect::ArmTimer(t) = e {
                        Some(*t)
                    } else {
                        None
                    }
                })
                .unwrap();
            delays.push((until - now).as_millis() as u64);
            now = until;
            assert_eq!(spawns(&m.step(Event::Timer, now)), ["1-new"]);
        }
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000]);
        // The sixth within two minutes rolls back to known-good.
        let fx = m.step(exited("1-new"), now);
        assert!(fx.contains(&Effect::SetCurrent("0-good".into())));
        assert!(fx.contains(&Effect::Notify(NoticeKind::RolledBack)));
        assert_eq!(spawns(&fx), ["0-good"]);
        assert_eq!(m.state_name(), StateName::RollingBack);
        // Known-good crashing the same way ends in Failed, with no more spawns.
        for _ in 0..5 {
            let fx = m.step(exited("0-good"), now);
            let until = fx
                .iter()
                .find_map(|e| {
                    if let Effect::ArmTimer(t) = e {
                        Some(*t)
                    } else {
                        None
                    }
                })
                .unwrap();
            now = until;
            m.step(Event::Timer, now);
        }
        let fx = m.step(exited("0-good"), now);
        assert_eq!(m.state_name(), StateName::Failed);
        assert!(fx.contains(&Effect::Notify(NoticeKind::Failed)), "{fx:?}");
        assert!(spawns(&fx).is_empty());
        assert!(m.failed_reason().unwrap().contains("0-good"));
        assert_eq!(
            m.step(Event::Timer, now + 3600 * S),
            vec![],
            "failed means no tight loop"
        );
        // A person restarts it.
        assert_eq!(spawns(&m.step(Event::Restart, now)), ["0-good"]);
    }

    /// Drives the known-good release into `failed` with `event` (its last failure).
    fn fail_known_good(event: impl Fn() -> Event) -> (Machine, Instant, Vec<Effect>) {
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let mut now = Instant::now();
        loop {
            let fx = m.step(event(), now);
            if m.state_name() == StateName::Failed {
                return (m, now, fx);
            }
            now += 10 * S;
            m.step(Event::Timer, now);
        }
    }

    #[test]
    fn phones_hear_of_failed_once_and_again_after_a_person_restarts() {
        let (mut m, mut now, fx) = fail_known_good(|| exited("0-good"));
        assert!(fx.contains(&Effect::Notify(NoticeKind::Failed)));
        assert_eq!(spawns(&m.step(Event::Restart, now)), ["0-good"]);
        let fx = loop {
            let fx = m.step(exited("0-good"), now);
            if m.state_name() == StateName::Failed {
                break fx;
            }
            now += 10 * S;
            m.step(Event::Timer, now);
        };
        assert!(fx.contains(&Effect::Notify(NoticeKind::Failed)), "{fx:?}");
    }

    fn timer(fx: &[Effect]) -> Option<Instant> {
        fx.iter().find_map(|e| match e {
            Effect::ArmTimer(t) => Some(*t),
            _ => None,
        })
    }

    #[test]
    fn failed_through_probes_retries_by_itself_later_and_later_but_not_through_exits() {
        let probe = || Event::Unhealthy {
            release: "0-good".into(),
            step: "websocket_upgrade".into(),
            detail: "no answer".into(),
        };
        let (mut m, now, fx) = fail_known_good(probe);
        let at = timer(&fx).expect("a retry is armed");
        assert_eq!(at - now, 300 * S);
        assert!(m
            .failed_reason()
            .unwrap()
            .contains("tried again by itself in 300 s"));
        assert_eq!(m.step(Event::Timer, at - S), vec![], "not before its time");
        let fx = m.step(Event::Timer, at);
        assert_eq!(spawns(&fx), ["0-good"]);
        assert_eq!(m.state_name(), StateName::Restarting);
        // Failing again waits twice as long; a healthy start resets that.
        let mut now = at;
        loop {
            let fx = m.step(probe(), now);
            if m.state_name() == StateName::Failed {
                assert_eq!(timer(&fx).unwrap() - now, 600 * S);
                assert!(
                    !fx.contains(&Effect::Notify(NoticeKind::Failed)),
                    "phones heard of `failed` once, not at each retry"
                );
                break;
            }
            now += 10 * S;
            m.step(Event::Timer, now);
        }
        // A serving worker that stops its heartbeats, again and again.
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let mut now = Instant::now();
        let fx = loop {
            m.step(healthy("0-good"), now);
            let fx = m.step(
                Event::Hung {
                    release: "0-good".into(),
                },
                now,
            );
            if m.state_name() == StateName::Failed {
                break fx;
            }
            now += 10 * S;
            m.step(Event::Timer, now);
        };
        assert_eq!(
            timer(&fx).map(|t| t - now),
            Some(300 * S),
            "a hang earns a retry too"
        );

        let (mut m, now, fx) = fail_known_good(|| exited("0-good"));
        assert_eq!(timer(&fx), None, "an exit is the worker's own verdict");
        assert!(m
            .failed_reason()
            .unwrap()
            .contains("nothing is retried until you act"));
        assert_eq!(m.step(Event::Timer, now + 7200 * S), vec![]);
    }

    #[test]
    fn crashes_spread_over_more_than_the_window_never_roll_back() {
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        m.step(Event::Timer, t0 + 60 * S); // now known-good itself
        let mut now = t0 + 61 * S;
        for _ in 0..20 {
            now += 61 * S; // healthy for over a minute between crashes: backoff resets
            let fx = m.step(exited("1-new"), now);
            assert!(
                fx.contains(&Effect::ArmTimer(now + Duration::from_millis(500))),
                "{fx:?}"
            );
            m.step(Event::Timer, now + S);
            m.step(healthy("1-new"), now + S);
        }
        assert_eq!(m.state_name(), StateName::Healthy);
    }

    #[test]
    fn a_crash_or_hang_in_the_canary_window_rolls_back_at_once() {
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        let fx = m.step(
            Event::Hung {
                release: "1-new".into(),
            },
            t0 + 10 * S,
        );
        assert_eq!(spawns(&fx), ["0-good"]);
        assert!(fx.contains(&Effect::SetCurrent("0-good".into())));
    }

    #[test]
    fn too_many_server_faults_in_the_canary_window_roll_back() {
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        assert_eq!(
            m.step(
                Event::ServerFaults {
                    release: "1-new".into(),
                    count: 10
                },
                t0 + S
            ),
            vec![]
        );
        let fx = m.step(
            Event::ServerFaults {
                release: "1-new".into(),
                count: 1,
            },
            t0 + 2 * S,
        );
        assert!(fx.contains(&Effect::Stop {
            release: "1-new".into(),
            drain: true,
            notice: ShutdownReason::Restart
        }));
        assert_eq!(spawns(&fx), ["0-good"]);
        let reason = fx.iter().find_map(|e| {
            if let Effect::Record {
                kind: "rollback",
                message,
            } = e
            {
                Some(message)
            } else {
                None
            }
        });
        assert!(reason.unwrap().contains("11 server faults"));
    }

    #[test]
    fn a_deploy_is_promoted_only_after_its_gate_and_a_failed_one_changes_nothing() {
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let t0 = Instant::now();
        m.step(healthy("0-good"), t0);
        let fx = m.step(
            Event::Deploy {
                release: "2-bad".into(),
                origin: DeployOrigin::Desk,
            },
            t0 + S,
        );
        assert_eq!(spawns(&fx), ["2-bad"]);
        assert!(
            !fx.iter()
                .any(|e| matches!(e, Effect::Route { .. } | Effect::Stop { .. })),
            "old keeps serving"
        );
        let fx = m.step(
            Event::Unhealthy {
                release: "2-bad".into(),
                step: "websocket_upgrade".into(),
                detail: "404".into(),
            },
            t0 + 2 * S,
        );
        assert!(!fx
            .iter()
            .any(|e| matches!(e, Effect::Route { .. } | Effect::SetCurrent(_))));
        assert_eq!(m.current(), "0-good");
        assert_eq!(
            m.state(),
            &State::Serving {
                release: "0-good".into(),
                since: t0,
                canary: None
            }
        );

        let fx = m.step(
            Event::Deploy {
                release: "3-ok".into(),
                origin: DeployOrigin::Desk,
            },
            t0 + 3 * S,
        );
        assert_eq!(spawns(&fx), ["3-ok"]);
        let fx = m.step(healthy("3-ok"), t0 + 4 * S);
        assert_eq!(
            &fx[..3],
            &[
                Effect::Route {
                    release: "3-ok".into()
                },
                Effect::SetCurrent("3-ok".into()),
                Effect::Stop {
                    release: "0-good".into(),
                    drain: true,
                    notice: ShutdownReason::Restart
                }
            ]
        );
        assert_eq!(
            fx[3],
            Effect::Handover {
                from: "0-good".into()
            },
            "the old worker's sessions go to the one already serving"
        );
        assert_eq!(m.known_good(), "0-good", "known-good only after the window");
    }

    #[test]
    fn rollback_and_restart_on_request_work_from_any_state() {
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        let fx = m.step(
            Event::Rollback {
                to: "0-good".into(),
            },
            t0 + S,
        );
        assert_eq!(
            fx[0],
            Effect::Stop {
                release: "1-new".into(),
                drain: true,
                notice: ShutdownReason::Restart
            }
        );
        assert_eq!(spawns(&fx), ["0-good"]);
        assert!(
            !fx.iter().any(|e| matches!(e, Effect::Notify(_))),
            "the person who asked is not notified: {fx:?}"
        );
        m.step(healthy("0-good"), t0 + 2 * S);
        let fx = m.step(Event::Restart, t0 + 3 * S);
        assert_eq!(spawns(&fx), ["0-good"]);
        assert_eq!(m.state_name(), StateName::Restarting);
        let fx = m.step(Event::Rollback { to: "1-new".into() }, t0 + 4 * S);
        assert_eq!(spawns(&fx), ["1-new"]);
    }

    #[test]
    fn shutdown_drains_the_serving_worker_and_exits_and_nothing_follows() {
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        let fx = m.step(Event::Shutdown, t0 + S);
        assert_eq!(
            fx,
            vec![
                Effect::Stop {
                    release: "1-new".into(),
                    drain: true,
                    notice: ShutdownReason::Shutdown
                },
                Effect::Exit
            ]
        );
        assert_eq!(m.step(exited("1-new"), t0 + 2 * S), vec![]);
        assert_eq!(m.state_name(), StateName::Draining);
    }

    #[test]
    fn a_failed_probe_rolls_a_canary_back_and_restarts_a_known_good_release() {
        let probe_failed = |r: &str| Event::Unhealthy {
            release: r.into(),
            step: "round_trip".into(),
            detail: "answered error".into(),
        };
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        let fx = m.step(probe_failed("1-new"), t0 + 5 * S);
        assert_eq!(
            spawns(&fx),
            ["0-good"],
            "canary: straight back to known-good"
        );
        m.step(healthy("0-good"), t0 + 6 * S);
        let fx = m.step(probe_failed("0-good"), t0 + 100 * S);
        assert_eq!(m.state_name(), StateName::Restarting);
        assert!(fx.contains(&Effect::ArmTimer(t0 + 100 * S + Duration::from_millis(500))));
    }

    #[test]
    fn a_deploy_while_failed_starts_the_candidate_as_a_canary() {
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let mut now = Instant::now();
        while m.state_name() != StateName::Failed {
            m.step(exited("0-good"), now);
            now += 11 * S;
            m.step(Event::Timer, now);
        }
        let fx = m.step(
            Event::Deploy {
                release: "1-fix".into(),
                origin: DeployOrigin::Desk,
            },
            now,
        );
        assert_eq!(spawns(&fx), ["1-fix"]);
        assert!(fx.contains(&Effect::SetCurrent("1-fix".into())));
        let fx = m.step(healthy("1-fix"), now + S);
        assert!(
            fx.contains(&Effect::ArmTimer(now + S + 60 * S)),
            "watched as a canary"
        );
    }

    #[test]
    fn a_rollback_during_a_deploy_drops_the_candidate() {
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let t0 = Instant::now();
        m.step(healthy("0-good"), t0);
        m.step(
            Event::Deploy {
                release: "1-new".into(),
                origin: DeployOrigin::Desk,
            },
            t0 + S,
        );
        let fx = m.step(
            Event::Rollback {
                to: "0-good".into(),
            },
            t0 + 2 * S,
        );
        assert!(fx.contains(&Effect::Stop {
            release: "1-new".into(),
            drain: false,
            notice: ShutdownReason::Restart
        }));
        assert_eq!(spawns(&fx), ["0-good"]);
        assert_eq!(m.current(), "0-good");
        // The candidate's late report changes nothing.
        assert_eq!(m.step(healthy("1-new"), t0 + 3 * S), vec![]);
    }

    #[test]
    fn late_reports_about_replaced_workers_are_ignored() {
        let (mut m, t0) = machine();
        m.step(healthy("1-new"), t0);
        m.step(
            Event::Rollback {
                to: "0-good".into(),
            },
            t0 + S,
        );
        assert_eq!(
            m.step(exited("1-new"), t0 + 2 * S),
            vec![],
            "the stopped release's exit"
        );
        assert_eq!(m.state_name(), StateName::RollingBack);
    }

    #[test]
    fn a_damaged_release_is_reported_and_a_damaged_current_falls_back_in_order() {
        let damaged = |ids: &[&str]| -> std::collections::BTreeMap<String, String> {
            ids.iter()
                .map(|id| ((*id).to_owned(), format!("release {id} is broken")))
                .collect()
        };
        // (current, known-good, damaged) → (run, known-good, pointer moves)
        let table: &[(&str, &str, &[&str], &str, &str)] = &[
            ("2-new", "1-good", &[], "2-new", "1-good"),
            ("2-new", "1-good", &["1-old"], "2-new", "1-good"),
            ("2-new", "1-good", &["2-new"], "1-good", "1-good"),
            ("2-new", "1-good", &["2-new", "1-good"], "0", "0"),
            ("2-new", "1-good", &["1-good"], "2-new", "0"),
            ("0", "0", &["0"], "0", "0"),
        ];
        for (current, known_good, broken, run, fallback) in table {
            let plan = start_plan(current, known_good, &damaged(broken));
            let case = format!("{current}/{known_good} with {broken:?} damaged");
            assert_eq!(
                (plan.current.as_str(), plan.known_good.as_str()),
                (*run, *fallback),
                "{case}"
            );
            let reported = plan
                .effects
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::Record {
                            kind: "release_damaged",
                            ..
                        }
                    )
                })
                .count();
            assert_eq!(
                reported,
                broken.len(),
                "{case}: each damaged release is reported"
            );
            assert_eq!(
                plan.effects.contains(&Effect::SetCurrent((*run).into())),
                run != current,
                "{case}: current moves only when it must"
            );
            assert_eq!(
                plan.effects
                    .contains(&Effect::SetKnownGood((*fallback).into())),
                fallback != known_good,
                "{case}"
            );
        }
        let plan = start_plan("2-new", "1-good", &damaged(&["2-new"]));
        assert!(
            plan.effects.iter().any(|e| matches!(e, Effect::Record { kind: "rollback", message } if message.contains("2-new is damaged") && message.contains("starting release 1-good"))),
            "{:?}",
            plan.effects
        );
    }

    #[test]
    fn an_invalid_config_is_waited_out_never_a_crash_nor_a_reason_to_roll_back() {
        let (mut m, t0) = machine();
        let invalid = |r: &str| Event::ConfigInvalid {
            release: r.into(),
            message: "config.toml line 4: unknown field `bakcoff_ms`; fix the file".into(),
        };
        let cap = Policy::default().backoff.cap;
        let mut now = t0;
        let mut recorded = 0;
        // Far more failures than the crash budget allows.
        for _ in 0..20 {
            let fx = m.step(invalid("1-new"), now);
            assert_eq!(m.state_name(), StateName::Failed);
            assert!(m.failed_reason().unwrap().contains("line 4"), "{m:?}");
            assert!(spawns(&fx).is_empty());
            assert!(
                !fx.iter().any(|e| matches!(e, Effect::SetCurrent(_))),
                "{fx:?}"
            );
            assert!(fx.contains(&Effect::ArmTimer(now + cap)));
            recorded += fx
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::Record {
                            kind: "config_invalid",
                            ..
                        }
                    )
                })
                .count();
            assert_eq!(
                m.step(Event::Timer, now + cap / 2),
                vec![],
                "not before its time"
            );
            now += cap;
            assert_eq!(spawns(&m.step(Event::Timer, now)), ["1-new"], "tried again");
        }
        assert_eq!(recorded, 1, "the same error is recorded once");
        assert_eq!(
            (m.current().as_str(), m.known_good().as_str()),
            ("1-new", "0-good")
        );
        // Fixed: it serves, and a crash later is counted from zero.
        m.step(healthy("1-new"), now);
        assert_eq!(m.state_name(), StateName::Healthy);
        m.step(invalid("1-new"), now); // a late report changes nothing
        assert_eq!(m.state_name(), StateName::Healthy);
        // A person need not wait: a restart tries at once.
        m.step(Event::Restart, now);
        m.step(invalid("1-new"), now);
        assert_eq!(spawns(&m.step(Event::Restart, now)), ["1-new"]);
        // A deploy's candidate that cannot read the config changes nothing.
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        m.step(healthy("0-good"), t0);
        m.step(
            Event::Deploy {
                release: "2-next".into(),
                origin: DeployOrigin::Desk,
            },
            t0,
        );
        let fx = m.step(invalid("2-next"), t0);
        assert!(spawns(&fx).is_empty());
        assert_eq!(m.state_name(), StateName::Healthy);
        assert_eq!(m.current(), "0-good");
    }

    fn remote(r: &str) -> Event {
        Event::Deploy {
            release: r.into(),
            origin: DeployOrigin::Remote,
        }
    }

    fn desk(r: &str) -> Event {
        Event::Deploy {
            release: r.into(),
            origin: DeployOrigin::Desk,
        }
    }

    fn approve(r: Option<&str>) -> Event {
        Event::ApproveDeploy {
            release: r.map(ReleaseId::from),
        }
    }

    fn refuse(r: Option<&str>) -> Event {
        Event::RefuseDeploy {
            release: r.map(ReleaseId::from),
        }
    }

    /// What a step did, in the terms the deploy rules speak of.
    #[derive(Debug, PartialEq, Eq)]
    struct Seen {
        /// Events recorded for the views, by kind.
        kinds: Vec<&'static str>,
        /// Releases started.
        spawns: Vec<String>,
        /// Whether the request was refused.
        refused: bool,
        /// Whether anything phones see changed (routing, stops, the current pointer).
        touched_phones: bool,
    }

    fn seen(fx: &[Effect]) -> Seen {
        Seen {
            kinds: fx
                .iter()
                .filter_map(|e| match e {
                    Effect::Record { kind, .. } => Some(*kind),
                    _ => None,
                })
                .collect(),
            spawns: spawns(fx).into_iter().map(str::to_owned).collect(),
            refused: fx.iter().any(|e| matches!(e, Effect::Refuse(_))),
            touched_phones: fx.iter().any(|e| {
                matches!(
                    e,
                    Effect::Route { .. } | Effect::Stop { .. } | Effect::SetCurrent(_)
                )
            }),
        }
    }

    /// `0-good` serving and known-good, from `t0`.
    fn serving_known_good() -> (Machine, Instant) {
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let t0 = Instant::now();
        m.step(healthy("0-good"), t0);
        (m, t0)
    }

    #[test]
    fn a_deploy_from_away_from_the_desk_waits_for_a_person() {
        const MIN: Duration = Duration::from_secs(60);
        let none: Vec<String> = vec![];
        // (what, steps before, the step, what it did, pending after, state after)
        type Setup = fn(&mut Machine, Instant);
        type Row = (
            &'static str,
            Setup,
            Event,
            Seen,
            Option<&'static str>,
            StateName,
        );
        let table: &[Row] = &[
            (
                "a remote deploy is held; nothing changes for the phones",
                |_, _| {},
                remote("1-new"),
                Seen {
                    kinds: vec!["deploy_pending"],
                    spawns: none.clone(),
                    refused: false,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Healthy,
            ),
            (
                "approving it runs exactly a desk deploy: the candidate starts beside",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                approve(None),
                Seen {
                    kinds: vec!["deploy_approved", "deploying"],
                    spawns: vec!["1-new".into()],
                    refused: false,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "approving the release the person saw",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                approve(Some("1-new")),
                Seen {
                    kinds: vec!["deploy_approved", "deploying"],
                    spawns: vec!["1-new".into()],
                    refused: false,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "approving a release that is not the one waiting is refused, the request kept",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                approve(Some("2-other")),
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Healthy,
            ),
            (
                "refusing drops it and starts nothing",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                refuse(None),
                Seen {
                    kinds: vec!["deploy_refused"],
                    spawns: none.clone(),
                    refused: false,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "nothing to approve",
                |_, _| {},
                approve(None),
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "nothing to refuse",
                |_, _| {},
                refuse(Some("1-new")),
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "a second remote deploy while one waits is refused; the first still waits",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                remote("2-next"),
                Seen {
                    kinds: vec!["deploy_refused"],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Healthy,
            ),
            (
                "its timer before it is due drops nothing",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                Event::DeployExpiry,
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: false,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Healthy,
            ),
            (
                "a desk deploy goes at once and leaves the remote one waiting for its own answer",
                |m, t| {
                    m.step(remote("1-new"), t);
                },
                desk("2-desk"),
                Seen {
                    kinds: vec!["deploying"],
                    spawns: vec!["2-desk".into()],
                    refused: false,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Healthy,
            ),
            (
                "approving while another deploy is being gated is refused, the request kept",
                |m, t| {
                    m.step(remote("1-new"), t);
                    m.step(desk("2-desk"), t);
                },
                approve(None),
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Healthy,
            ),
            (
                "a desk deploy while another is being gated is refused",
                |m, t| {
                    m.step(desk("2-desk"), t);
                },
                desk("3-desk"),
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "the request outlives a crash and restart of the worker, and is approved after",
                |m, t| {
                    m.step(remote("1-new"), t);
                    m.step(exited("0-good"), t);
                    m.step(Event::Timer, t + S);
                    m.step(healthy("0-good"), t + S);
                },
                approve(None),
                Seen {
                    kinds: vec!["deploy_approved", "deploying"],
                    spawns: vec!["1-new".into()],
                    refused: false,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "approved while the worker is down between restarts: the candidate replaces it",
                |m, t| {
                    m.step(remote("1-new"), t);
                    m.step(exited("0-good"), t);
                },
                approve(None),
                Seen {
                    kinds: vec!["deploy_approved", "deploying"],
                    spawns: vec!["1-new".into()],
                    refused: false,
                    touched_phones: true,
                },
                None,
                StateName::Restarting,
            ),
            (
                "a request for the release already serving is refused on approval",
                |m, t| {
                    m.step(remote("0-good"), t);
                },
                approve(None),
                Seen {
                    kinds: vec!["deploy_approved", "deploy_refused"],
                    spawns: none.clone(),
                    refused: true,
                    touched_phones: false,
                },
                None,
                StateName::Healthy,
            ),
            (
                "stopping: nothing is approved any more",
                |m, t| {
                    m.step(remote("1-new"), t);
                    m.step(Event::Shutdown, t);
                },
                approve(None),
                Seen {
                    kinds: vec![],
                    spawns: none.clone(),
                    refused: false,
                    touched_phones: false,
                },
                Some("1-new"),
                StateName::Draining,
            ),
        ];
        for (what, setup, event, want, pending, state) in table {
            let (mut m, t0) = serving_known_good();
            setup(&mut m, t0);
            let got = seen(&m.step(event.clone(), t0 + 2 * S));
            assert_eq!(&got, want, "{what}");
            assert_eq!(
                m.pending_deploy().map(|p| p.release.as_str()),
                *pending,
                "{what}"
            );
            assert_eq!(m.state_name(), *state, "{what}");
        }

        // Held: its expiry timer, beside the state's own.
        let (mut m, t0) = serving_known_good();
        let fx = m.step(remote("1-new"), t0);
        assert!(
            fx.contains(&Effect::ArmDeployExpiry(t0 + 10 * MIN)),
            "{fx:?}"
        );
        assert_eq!(m.current(), "0-good");
        assert_eq!(
            m.pending_deploy(),
            Some(&PendingDeploy {
                release: "1-new".into(),
                requested_at: t0,
                expires_at: t0 + 10 * MIN
            })
        );
        // Unanswered for ten minutes: dropped, said so, and then nothing to approve.
        assert_eq!(m.step(Event::DeployExpiry, t0 + 10 * MIN - S), vec![]);
        let fx = m.step(Event::DeployExpiry, t0 + 10 * MIN);
        assert_eq!(seen(&fx).kinds, ["deploy_expired"]);
        assert_eq!(m.pending_deploy(), None);
        assert!(seen(&m.step(approve(None), t0 + 11 * MIN)).refused);
        // A timer left from a request answered since drops a newer one only when due.
        let (mut m, t0) = serving_known_good();
        m.step(remote("1-new"), t0);
        m.step(refuse(None), t0 + S);
        m.step(remote("2-next"), t0 + 5 * MIN);
        assert_eq!(m.step(Event::DeployExpiry, t0 + 10 * MIN), vec![]);
        assert_eq!(
            m.pending_deploy().map(|p| p.release.as_str()),
            Some("2-next")
        );

        // Approved: the candidate is gated, then serves as a canary, as from the desk.
        let (mut m, t0) = serving_known_good();
        m.step(remote("1-new"), t0);
        m.step(approve(Some("1-new")), t0 + MIN);
        let fx = m.step(healthy("1-new"), t0 + MIN + S);
        assert!(fx.contains(&Effect::SetCurrent("1-new".into())));
        assert!(fx.contains(&Effect::ArmTimer(t0 + 2 * MIN + S)), "{fx:?}");
        assert_eq!(m.canary().map(|(r, _)| r.as_str()), Some("1-new"));
        assert_eq!(m.known_good(), "0-good");

        // Approved while failed: started in place of the release that is not serving.
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let mut now = Instant::now();
        m.step(remote("1-fix"), now);
        while m.state_name() != StateName::Failed {
            m.step(exited("0-good"), now);
            now += 11 * S;
            m.step(Event::Timer, now);
        }
        assert_eq!(
            m.pending_deploy().map(|p| p.release.as_str()),
            Some("1-fix")
        );
        let fx = m.step(approve(None), now);
        assert_eq!(spawns(&fx), ["1-fix"]);
        assert!(fx.contains(&Effect::SetCurrent("1-fix".into())));
    }

    /// A machine in each state a person can find it in, with the time it got there.
    fn in_every_state() -> Vec<(&'static str, Machine, Instant)> {
        let (starting, t0) = machine();
        let (mut serving, _) = machine();
        serving.step(healthy("1-new"), t0);
        let (mut deploying, _) = machine();
        deploying.step(healthy("1-new"), t0);
        deploying.step(
            Event::Deploy {
                release: "2-next".into(),
                origin: DeployOrigin::Desk,
            },
            t0,
        );
        let (mut backoff, _) = machine();
        backoff.step(exited("1-new"), t0);
        let (failed, t_failed, _) = fail_known_good(|| exited("0-good"));
        let (mut misconfigured, _) = machine();
        misconfigured.step(
            Event::ConfigInvalid {
                release: "1-new".into(),
                message: "config.toml line 3: unknown key".into(),
            },
            t0,
        );
        vec![
            ("starting", starting, t0),
            ("serving", serving, t0),
            ("deploying", deploying, t0),
            ("backoff", backoff, t0),
            ("failed", failed, t_failed),
            ("misconfigured", misconfigured, t0),
        ]
    }

    fn reply(fx: &[Effect]) -> Option<&str> {
        fx.iter().find_map(|e| match e {
            Effect::Reply(text) => Some(text.as_str()),
            _ => None,
        })
    }

    #[test]
    fn a_reconnect_restarts_the_tunnel_and_tells_phones_or_starts_a_worker_by_state() {
        // (state, the worker told to reconnect, the release started, the answer's start)
        let table = [
            ("starting", None, None, "a worker is starting"),
            ("serving", Some("1-new"), None, "phones told to reconnect"),
            ("deploying", Some("1-new"), None, "phones told to reconnect"),
            ("backoff", None, Some("1-new"), "no worker was serving"),
            ("failed", None, Some("0-good"), "no worker was serving"),
            (
                "misconfigured",
                None,
                Some("1-new"),
                "no worker was serving",
            ),
        ];
        for ((name, mut m, t), (want, told, started, answer)) in
            in_every_state().into_iter().zip(table)
        {
            assert_eq!(name, want);
            let fx = m.step(Event::Reconnect, t + S);
            assert_eq!(fx.first(), Some(&Effect::RestartTunnel), "{name}: {fx:?}");
            let reconnected: Vec<&str> = fx
                .iter()
                .filter_map(|e| match e {
                    Effect::Reconnect { release } => Some(release.as_str()),
                    _ => None,
                })
                .collect();
            assert_eq!(reconnected, Vec::from_iter(told), "{name}: {fx:?}");
            assert_eq!(spawns(&fx), Vec::from_iter(started), "{name}: {fx:?}");
            let said = reply(&fx).unwrap_or_default();
            assert!(said.starts_with(answer), "{name}: {said}");
        }
    }

    #[test]
    fn a_requested_restart_is_recorded_once_in_every_state() {
        for (name, mut m, t) in in_every_state() {
            let fx = m.step(Event::Restart, t + S);
            let recorded = fx
                .iter()
                .filter(|e| {
                    matches!(
                        e,
                        Effect::Record {
                            kind: "restart_requested",
                            ..
                        }
                    )
                })
                .count();
            assert_eq!(recorded, 1, "{name}: {fx:?}");
            assert_eq!(spawns(&fx).len(), 1, "{name}: {fx:?}");
            // The successor starts after the exit and reads the sessions then.
            let handover = fx.iter().any(|e| matches!(e, Effect::Handover { .. }));
            assert!(!handover, "{name}: {fx:?}");
        }
    }

    #[test]
    fn phones_are_told_a_stop_is_for_good_only_on_shutdown() {
        let notices = |fx: &[Effect]| -> Vec<ShutdownReason> {
            fx.iter()
                .filter_map(|e| match e {
                    Effect::Stop { notice, .. } => Some(*notice),
                    _ => None,
                })
                .collect()
        };
        for (name, mut m, t) in in_every_state() {
            let mut restarted = m.clone();
            let fx = restarted.step(Event::Restart, t + S);
            assert!(
                notices(&fx).iter().all(|n| *n == ShutdownReason::Restart),
                "{name}: {fx:?}"
            );
            let fx = m.step(Event::Shutdown, t + S);
            assert!(
                notices(&fx).iter().all(|n| *n == ShutdownReason::Shutdown),
                "{name}: {fx:?}"
            );
        }
        let (_, mut deploying, t) = in_every_state().swap_remove(2);
        let fx = deploying.step(Event::Shutdown, t + S);
        assert_eq!(notices(&fx), [ShutdownReason::Shutdown; 2], "{fx:?}");
    }

    #[test]
    fn phones_turned_away_wait_for_the_restart_or_long_while_a_person_must_act() {
        let table = [
            ("starting", Duration::from_secs(1)),
            ("serving", Duration::from_secs(1)),
            ("deploying", Duration::from_secs(1)),
            // The first backoff is 0.5 s: rounded up to a whole second.
            ("backoff", Duration::from_secs(1)),
            ("failed", RETRY_AFTER_FAILED),
            ("misconfigured", RETRY_AFTER_FAILED),
        ];
        for ((name, m, t), (want, wait)) in in_every_state().into_iter().zip(table) {
            assert_eq!(name, want);
            assert_eq!(m.retry_after(t), wait, "{name}");
        }
        // Later in a longer backoff, the wait is what is left of it, rounded up.
        let (mut m, t0) = machine();
        let mut now = t0;
        for _ in 0..4 {
            m.step(exited("1-new"), now);
            now += 20 * S;
            m.step(Event::Timer, now);
        }
        m.step(exited("1-new"), now);
        assert_eq!(m.state_name(), StateName::Restarting);
        let until = match m.state() {
            State::Backoff { until, .. } => *until,
            other => panic!("not backing off: {other:?}"),
        };
        assert_eq!(until - now, 8 * S, "the fifth crash waits 8 s");
        assert_eq!(m.retry_after(now + 3 * S), 6 * S);
    }

    fn standby_healthy(r: &str) -> Event {
        Event::StandbyHealthy { release: r.into() }
    }

    fn spawns_standby(r: &str) -> Effect {
        Effect::SpawnStandby { release: r.into() }
    }

    /// Known-good release "0-good" serving, with its standby gated.
    fn serving_with_standby() -> (Machine, Instant) {
        let (mut m, t0) = serving_known_good();
        assert_eq!(m.standby(), Some(&Standby::Starting("0-good".into())));
        assert_eq!(m.step(standby_healthy("0-good"), t0), vec![]);
        assert_eq!(m.standby(), Some(&Standby::Ready("0-good".into())));
        (m, t0)
    }

    #[test]
    fn a_standby_takes_over_the_first_crash_at_once_and_repeated_crashes_back_off_as_before() {
        let (mut m, _) = Machine::start(Policy::default(), "0-good".into(), "0-good".into());
        let t0 = Instant::now();
        let fx = m.step(healthy("0-good"), t0);
        assert_eq!(fx.last(), Some(&spawns_standby("0-good")));
        m.step(standby_healthy("0-good"), t0);

        // A kill -9 of the serving worker: no backoff, the standby is routed at once and
        // a new standby is started behind it.
        let fx = m.step(exited("0-good"), t0 + S);
        assert_eq!(
            fx,
            vec![
                Effect::Record {
                    kind: "worker_exited",
                    message: "release 0-good exited (exit status 1); its standby took over".into()
                },
                Effect::PromoteStandby {
                    release: "0-good".into()
                },
                Effect::Route {
                    release: "0-good".into()
                },
                spawns_standby("0-good"),
            ]
        );
        assert_eq!(m.state_name(), StateName::Healthy);
        assert_eq!(m.restarts(), 1);
        assert_eq!(m.standby(), Some(&Standby::Starting("0-good".into())));

        // A second crash soon after, new standby ready or not: the rules as before.
        m.step(standby_healthy("0-good"), t0 + 2 * S);
        let fx = m.step(exited("0-good"), t0 + 3 * S);
        assert_eq!(fx.first(), Some(&Effect::StopStandby), "{fx:?}");
        assert!(
            fx.contains(&Effect::ArmTimer(t0 + 4 * S)),
            "1 s backoff: {fx:?}"
        );
        assert_eq!(m.state_name(), StateName::Restarting);
        assert_eq!(m.standby(), None);

        // Back, and steady for the reset time: the next crash is a first one again.
        m.step(Event::Timer, t0 + 4 * S);
        let fx = m.step(healthy("0-good"), t0 + 5 * S);
        assert_eq!(fx.last(), Some(&spawns_standby("0-good")));
        m.step(standby_healthy("0-good"), t0 + 6 * S);
        let fx = m.step(exited("0-good"), t0 + 70 * S);
        assert!(fx.contains(&Effect::PromoteStandby {
            release: "0-good".into()
        }));
    }

    #[test]
    fn crashes_with_a_standby_still_roll_back_and_reach_failed_within_the_budget() {
        let (mut m, t0) = serving_with_standby();
        let mut now = t0;
        // Each time the worker is back, its standby is ready before it crashes again.
        let mut took_over = 0;
        for _ in 0..6 {
            now += S;
            let fx = m.step(exited("0-good"), now);
            if fx.contains(&Effect::PromoteStandby {
                release: "0-good".into(),
            }) {
                took_over += 1;
            }
            if m.state_name() == StateName::Failed {
                break;
            }
            if let Some(at) = timer(&fx) {
                now = at;
                m.step(Event::Timer, now);
                m.step(healthy("0-good"), now);
            }
            m.step(standby_healthy("0-good"), now);
        }
        assert_eq!(took_over, 1, "only the first crash is taken over");
        assert_eq!(
            m.state_name(),
            StateName::Failed,
            "more than 5 crashes in 2 min: failed, as without a standby"
        );
        assert_eq!(m.standby(), None);
    }

    #[test]
    fn a_lost_standby_is_replaced_without_touching_the_serving_worker_three_times_at_most() {
        let (mut m, t0) = serving_known_good();
        let lost = |why: &str| Event::StandbyLost {
            release: "0-good".into(),
            why: why.into(),
        };
        for round in 1..=2 {
            let fx = m.step(lost("exited (signal: 9 (SIGKILL))"), t0 + round * S);
            assert_eq!(
                fx,
                vec![
                    Effect::Record {
                        kind: "standby_lost",
                        message: "the standby worker of release 0-good exited (signal: 9 (SIGKILL)); another is started".into()
                    },
                    spawns_standby("0-good"),
                ],
                "round {round}"
            );
            assert_eq!(m.state_name(), StateName::Healthy);
        }
        let fx = m.step(lost("failed its health gate at auth: refused"), t0 + 3 * S);
        assert_eq!(fx.len(), 1, "no fourth: {fx:?}");
        assert!(
            matches!(&fx[0], Effect::Record { kind: "standby_lost", message } if message.contains("goes on without one")),
            "{fx:?}"
        );
        assert_eq!(m.standby(), None);
        // A late report about a standby that is gone changes nothing.
        assert_eq!(m.step(standby_healthy("0-good"), t0 + 4 * S), vec![]);
        assert_eq!(m.step(lost("exited"), t0 + 4 * S), vec![]);
        // A crash without a standby backs off as ever; the next worker gets tries afresh.
        let fx = m.step(exited("0-good"), t0 + 5 * S);
        assert!(!fx.contains(&Effect::PromoteStandby {
            release: "0-good".into()
        }));
        m.step(Event::Timer, t0 + 6 * S);
        let fx = m.step(healthy("0-good"), t0 + 6 * S);
        assert_eq!(fx.last(), Some(&spawns_standby("0-good")));
    }

    #[test]
    fn the_standby_goes_first_whenever_the_serving_worker_is_replaced_or_stopped() {
        let desk = |r: &str| Event::Deploy {
            release: r.into(),
            origin: DeployOrigin::Desk,
        };
        let cases: Vec<(&str, Event)> = vec![
            ("shutdown", Event::Shutdown),
            ("restart", Event::Restart),
            (
                "rollback",
                Event::Rollback {
                    to: "0-good".into(),
                },
            ),
            ("deploy", desk("1-new")),
        ];
        for (name, event) in cases {
            let (mut m, t0) = serving_with_standby();
            let fx = m.step(event, t0 + S);
            assert_eq!(fx.first(), Some(&Effect::StopStandby), "{name}: {fx:?}");
            assert!(
                !fx.iter().any(|e| matches!(e, Effect::SpawnStandby { .. })),
                "{name}: {fx:?}"
            );
            assert_eq!(m.standby(), None, "{name}");
        }
        // The deployed release is a canary: no standby until it is trusted.
        let (mut m, t0) = serving_with_standby();
        m.step(desk("1-new"), t0);
        let fx = m.step(healthy("1-new"), t0 + S);
        assert!(!fx.iter().any(|e| matches!(e, Effect::SpawnStandby { .. })));
        let fx = m.step(Event::Timer, t0 + 61 * S);
        assert_eq!(fx.last(), Some(&spawns_standby("1-new")));
    }

    #[test]
    fn a_hung_or_unhealthy_worker_is_not_taken_over_while_it_is_still_being_killed() {
        let events = [
            Event::Hung {
                release: "0-good".into(),
            },
            Event::Unhealthy {
                release: "0-good".into(),
                step: "ping".into(),
                detail: "no pong".into(),
            },
        ];
        for event in events {
            let (mut m, t0) = serving_with_standby();
            let fx = m.step(event.clone(), t0 + S);
            assert_eq!(fx.first(), Some(&Effect::StopStandby), "{event:?}: {fx:?}");
            assert_eq!(m.state_name(), StateName::Restarting, "{event:?}");
        }
    }

    #[test]
    fn no_standby_is_started_when_the_settings_turn_it_off() {
        let policy = Policy {
            standby: false,
            ..Policy::default()
        };
        let (mut m, _) = Machine::start(policy, "0-good".into(), "0-good".into());
        let fx = m.step(healthy("0-good"), Instant::now());
        assert!(!fx.iter().any(|e| matches!(e, Effect::SpawnStandby { .. })));
        assert_eq!(m.standby(), None);
    }
}
