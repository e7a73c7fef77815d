//! Deploy from a source tree, as every view sees it (docs/protocol.md "Deploy from the
//! phone", the status page's `build`): what is asked, the steps of a build and where
//! each is, and what became of the release. The build itself is the supervisor's
//! ([`crate::supervisor::build`]); these are the words the supervisor, the workers, the
//! phones and the views share.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How many of a step's last output lines its status keeps.
pub const TAIL_LINES: usize = 20;
/// How many of a failed step's last lines its summary shows.
const SUMMARY_TAIL: usize = 8;

/// What to build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildRequest {
    /// A directory inside the source tree.
    pub source: PathBuf,
    /// The revision to build; `None`: the tree as it is (`HEAD`, and with
    /// `allow_dirty` its uncommitted changes too).
    #[serde(default)]
    pub rev: Option<String>,
    /// Build a tree with uncommitted changes (recorded in the manifest).
    #[serde(default)]
    pub allow_dirty: bool,
}

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepName {
    /// Resolve the revision and check it out into a worktree of its own.
    Checkout,
    /// `cargo build` of the `chroxy` binary.
    Build,
    /// The check command.
    Check,
    /// Add the binary to the release store.
    Store,
}

impl std::fmt::Display for StepName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StepName::Checkout => "checkout",
            StepName::Build => "build",
            StepName::Check => "check",
            StepName::Store => "store",
        })
    }
}

/// Where a step is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not reached yet.
    Waiting,
    /// Running now.
    Running,
    /// Done, successfully.
    Passed,
    /// Failed: the build stops here.
    Failed,
    /// Not run: no check is configured.
    Skipped,
}

/// One step of a build, as the views show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Which step.
    pub name: StepName,
    /// Where it is.
    pub state: StepState,
    /// How long it ran (so far, while it runs), in milliseconds.
    pub duration_ms: u64,
    /// Its last output lines (at most [`TAIL_LINES`]), redacted.
    pub tail: Vec<String>,
}

/// How a build ended, or that it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A step runs.
    Running,
    /// A step failed; nothing was added to the store.
    Failed,
    /// The build was stopped (the supervisor stopped).
    Cancelled,
    /// The release was added to the store (what became of it is the deploy's story).
    Stored,
}

/// A build, from its request to its outcome: `build` in the status JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BuildStatus {
    /// The source directory asked for.
    pub source: PathBuf,
    /// The revision asked for (`HEAD` when none was).
    pub rev: String,
    /// The commit built, once resolved (for a dirty tree, the snapshot of its changes).
    pub commit: Option<String>,
    /// The tree's uncommitted changes are built (`--allow-dirty`).
    pub dirty: bool,
    /// Who asked: `terminal`, `window`, or a phone's device name.
    pub requested_by: String,
    /// When it started (milliseconds since the epoch).
    pub started_at: u64,
    /// The steps, every one from the start (waiting until reached).
    pub steps: Vec<StepStatus>,
    /// Where it is.
    pub outcome: Outcome,
    /// Why it failed, naming the step.
    pub error: Option<String>,
    /// The release it made (its id in the store).
    pub release: Option<String>,
    /// What became of the release: the supervisor's answer to its deploy.
    #[serde(default)]
    pub deploy: Option<DeployAnswer>,
    /// All of it as lines for a person ([`BuildStatus::describe`]): the status page,
    /// the window and `chroxy status` show these, so they never word it differently.
    #[serde(default)]
    pub summary: Vec<String>,
}

/// What became of a built release once the supervisor was asked to deploy it: its
/// answer, then each event of its deploy (gate passed, promoted, refused, rolled back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeployAnswer {
    /// Still on its way, or serving: not refused, failed or rolled back.
    pub ok: bool,
    /// What a person reads.
    pub message: String,
    /// The kind of the last supervisor event about it (`deployed`, `promoted`,
    /// `health_failed`, …); `None` until one comes.
    #[serde(default)]
    pub event: Option<String>,
}

/// Events of a deploy that say it went wrong.
const DEPLOY_FAILURES: [&str; 7] = [
    "health_failed",
    "config_invalid",
    "worker_exited",
    "rollback",
    "deploy_refused",
    "deploy_expired",
    "deploy_abandoned",
];
/// Events of a deploy that say how far it got.
const DEPLOY_PROGRESS: [&str; 5] = [
    "deploy_pending",
    "deploy_approved",
    "deployed",
    "worker_started",
    "promoted",
];
/// Events after which nothing more happens to a deploy until time or a person acts: it
/// serves (`worker_started` when it replaced a worker that was not serving), or it
/// waits for approval.
const DEPLOY_SETTLED: [&str; 4] = ["deployed", "worker_started", "promoted", "deploy_pending"];

impl DeployAnswer {
    /// Whether the deploy has come to where someone following it may stop: it failed,
    /// it serves, or it waits for a person. Before that its gate may still fail it.
    pub fn settled(&self) -> bool {
        !self.ok
            || self
                .event
                .as_deref()
                .is_some_and(|e| DEPLOY_SETTLED.contains(&e))
    }
}

impl BuildStatus {
    /// A build of `request` as it starts: every step waiting.
    pub fn new(request: &BuildRequest, requested_by: &str) -> Self {
        let step = |name| StepStatus {
            name,
            state: StepState::Waiting,
            duration_ms: 0,
            tail: Vec::new(),
        };
        Self {
            source: request.source.clone(),
            rev: request.rev.clone().unwrap_or_else(|| "HEAD".into()),
            commit: None,
            dirty: false,
            requested_by: requested_by.into(),
            started_at: crate::protocol::now_ms(),
            steps: [
                StepName::Checkout,
                StepName::Build,
                StepName::Check,
                StepName::Store,
            ]
            .map(step)
            .into(),
            outcome: Outcome::Running,
            error: None,
            release: None,
            deploy: None,
            summary: Vec::new(),
        }
    }

    /// Brings `summary` up to date.
    pub fn summarize(&mut self) {
        self.summary = self.describe();
    }

    /// The step running now, if one does.
    pub fn running_step(&self) -> Option<StepName> {
        self.steps
            .iter()
            .find(|s| s.state == StepState::Running)
            .map(|s| s.name)
    }

    /// The step `name` (every status has all four).
    pub fn step(&mut self, name: StepName) -> &mut StepStatus {
        let at = self.steps.iter().position(|s| s.name == name).unwrap_or(0);
        &mut self.steps[at]
    }

    /// Takes in a supervisor event that is about this build's release: the deploy's
    /// story goes on after the build ended (its gate, its canary window).
    /// Whether it changed anything.
    pub fn follow(&mut self, kind: &str, message: &str) -> bool {
        let (Some(release), Some(answer)) = (&self.release, &mut self.deploy) else {
            return false;
        };
        let failed = DEPLOY_FAILURES.contains(&kind);
        if !(failed || DEPLOY_PROGRESS.contains(&kind)) || !mentions(message, release.as_str()) {
            return false;
        }
        answer.ok = !failed;
        answer.message = message.to_owned();
        answer.event = Some(kind.to_owned());
        self.summarize();
        true
    }

    /// Lines for a person (`chroxy status`, `chroxy deploy --source` as it goes).
    pub fn describe(&self) -> Vec<String> {
        let commit = self
            .commit
            .as_deref()
            .map_or("…", |c| c.get(..12).unwrap_or(c));
        let mut lines = vec![format!(
            "build of {} at {} ({commit}{}) for {}: {}",
            self.source.display(),
            self.rev,
            if self.dirty {
                ", uncommitted changes"
            } else {
                ""
            },
            self.requested_by,
            match self.outcome {
                Outcome::Running => "running",
                Outcome::Failed => "failed",
                Outcome::Cancelled => "cancelled",
                Outcome::Stored => "built",
            }
        )];
        for step in &self.steps {
            let state = serde_json::to_value(step.state).unwrap_or_default();
            lines.push(format!(
                "  {:<9} {:<8} {:>5.1} s",
                step.name.to_string(),
                state.as_str().unwrap_or_default(),
                step.duration_ms as f64 / 1000.0
            ));
            // What it is doing now, or why it failed.
            let shown = match step.state {
                StepState::Running => 1,
                StepState::Failed => SUMMARY_TAIL,
                _ => 0,
            };
            let from = step.tail.len().saturating_sub(shown);
            lines.extend(step.tail[from..].iter().map(|l| format!("    | {l}")));
        }
        if let Some(error) = &self.error {
            lines.push(format!("  error: {error}"));
        }
        if let Some(deploy) = &self.deploy {
            lines.push(format!("  deploy: {}", deploy.message));
        }
        lines
    }
}

/// Whether `message` names release `id` as a word (release `1-ab` is not in `11-ab`).
fn mentions(message: &str, id: &str) -> bool {
    message
        .split(|c: char| c.is_whitespace() || matches!(c, ',' | ':' | ';' | '(' | ')'))
        .any(|word| word == id)
}
