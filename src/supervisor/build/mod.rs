//! Source builds: `chroxy deploy --source DIR` (and the phone's Deploy) turn a git tree
//! into a release. The revision is checked out into a worktree under the home — the
//! person's own tree, index and branch are never touched — built with cargo, checked
//! by a command (by default the library's unit tests), and only then added to the
//! release store, its manifest saying what it was built from. The supervisor then
//! promotes it as a canary like any `chroxy deploy`.
//!
//! One build at a time per home (a lock held for the whole build); the worktree is
//! removed after success, failure and cancel, and what a build killed with its
//! supervisor left (worktree, compiler processes) is removed by the next start
//! ([`sweep`]). Each step's progress is a [`BuildStatus`] the status page, `chroxy
//! status`, the window and the phones show; no secret reaches it (the steps run
//! without Chroxy's variables, and their output is redacted).

mod git;
mod output;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio_util::sync::CancellationToken;

use super::release::{BuiltFrom, Manifest, ReleaseError, Releases};
use crate::config::DeployConfig;
pub use crate::protocol::deploy::{
    BuildRequest, BuildStatus, Outcome, StepName, StepState, TAIL_LINES,
};
use crate::store::{ensure_private_dir, Paths, StoreError};
use crate::token::ApiToken;
use git::Git;
use output::{Ended, Output};

/// The longest line a step's tail keeps, in bytes.
const MAX_TAIL_LINE: usize = 400;
/// Output lines are reported at most this often (the log file gets every one).
const REPORT_EVERY: Duration = Duration::from_millis(250);
/// How long processes a killed build left behind may take to die.
const LEFTOVER_PATIENCE: Duration = Duration::from_secs(5);
/// Names of what a build keeps under [`Paths::builds_dir`].
const RECORD: &str = "build.json";
const TREE: &str = "tree";
const INDEX: &str = "index";
const TARGET: &str = "target";

/// Why a build stopped; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// Another build holds this home's build lock.
    #[error("another build runs for this home ({0}); wait for it to finish")]
    Busy(String),
    /// The directory is not in a git working tree.
    #[error("{dir} is not a git working tree ({detail}); give the directory of Chroxy's source checkout")]
    NotARepository {
        /// The directory given.
        dir: PathBuf,
        /// What git said.
        detail: String,
    },
    /// The revision names no commit.
    #[error("`{rev}` names no commit in this repository; give a commit, tag or branch (`git log` lists them)")]
    UnknownRevision {
        /// What was asked for.
        rev: String,
    },
    /// The tree has uncommitted changes and `--allow-dirty` was not given.
    #[error("{dir} has uncommitted changes ({}{}): commit them, or deploy them as they are with --allow-dirty (the release then says so)", files.join(", "), if *count > files.len() { format!(" and {} more", count - files.len()) } else { String::new() })]
    Dirty {
        /// The tree's top.
        dir: PathBuf,
        /// The first few changed paths.
        files: Vec<String>,
        /// How many there are.
        count: usize,
    },
    /// A program the build needs is missing.
    #[error("{tool} is not installed or not on PATH: {hint}")]
    ToolMissing {
        /// `git` or `cargo`.
        tool: &'static str,
        /// How to get it.
        hint: &'static str,
    },
    /// A git command failed.
    #[error("{what} failed in {dir}: {detail}")]
    Git {
        /// Which command.
        what: &'static str,
        /// The tree.
        dir: PathBuf,
        /// What it said.
        detail: String,
    },
    /// The builds directory could not be prepared.
    #[error(transparent)]
    Workspace(#[from] StoreError),
    /// A step's command failed.
    #[error("the {step} step failed ({how}); its last lines are in the status, all of it in {}", log.display())]
    StepFailed {
        /// Which step.
        step: StepName,
        /// How it ended.
        how: String,
        /// The build's log file.
        log: PathBuf,
    },
    /// A step ran past its time limit.
    #[error("the {step} step took longer than {} s and was stopped; raise [deploy] {step}_timeout_secs if it needs longer", limit.as_secs())]
    TimedOut {
        /// Which step.
        step: StepName,
        /// Its limit.
        limit: Duration,
    },
    /// The build was stopped.
    #[error("the build was stopped (Chroxy is stopping)")]
    Cancelled,
    /// The build succeeded but made no `chroxy` binary where cargo puts it.
    #[error("the build made no chroxy binary at {0}; is this Chroxy's source tree?")]
    NoBinary(PathBuf),
    /// The release store refused the binary.
    #[error(transparent)]
    Store(#[from] ReleaseError),
}

/// The one build of a home that may run: holds the lock until dropped.
#[derive(Debug)]
pub struct Claim {
    _lock: nix::fcntl::Flock<std::fs::File>,
}

/// What a build left on disk, for whoever cleans it up.
#[derive(Debug, Serialize, Deserialize)]
struct Record {
    /// The tree's top (whose git knows the worktree).
    source: PathBuf,
    /// The processes' mark ([`crate::process::WORKER_MARK`]).
    mark: String,
    /// Who built.
    pid: u32,
}

/// Builds source trees for one home.
#[derive(Debug, Clone)]
pub struct Builder {
    paths: Paths,
    config: DeployConfig,
    mark: String,
    secrets: Vec<ApiToken>,
}

impl Builder {
    /// A builder with `[deploy]` settings whose processes carry `mark` and whose
    /// output never shows `secrets`.
    pub fn new(paths: Paths, config: DeployConfig, mark: String, secrets: Vec<ApiToken>) -> Self {
        Self {
            paths,
            config,
            mark,
            secrets,
        }
    }

    /// Takes this home's build lock, or says who holds it.
    pub fn claim(&self) -> Result<Claim, BuildError> {
        claim(&self.paths)?.ok_or_else(|| {
            let record = read_record(&self.paths);
            BuildError::Busy(record.map_or_else(
                || "another process".into(),
                |r| format!("of {}, by pid {}", r.source.display(), r.pid),
            ))
        })
    }

    /// The whole build under `claim`: checkout, build, check, store; `report` is
    /// called with the status each time it changes (and once at the end, whatever
    /// the outcome). The worktree is gone when this returns.
    pub async fn run(
        &self,
        _claim: &Claim,
        request: &BuildRequest,
        requested_by: &str,
        report: &mut (dyn FnMut(&BuildStatus) + Send),
        cancel: &CancellationToken,
    ) -> Result<Manifest, BuildError> {
        clean_up(&self.paths).await;
        let mut status = BuildStatus::new(request, requested_by);
        status.summarize();
        report(&status);
        let mut build = Build {
            builder: self,
            status: &mut status,
            report,
            cancel,
            git: None,
            output: Output::new(&self.log_file(), self.secrets.clone()),
            step_started: Instant::now(),
        };
        let result = build.steps(request).await;
        let failed_step = build.status.running_step();
        if let Some(step) = failed_step {
            let took = build.step_started.elapsed().as_millis() as u64;
            let s = build.status.step(step);
            s.state = StepState::Failed;
            s.duration_ms = took;
        }
        build.status.outcome = match &result {
            Ok(_) => Outcome::Stored,
            Err(BuildError::Cancelled) => Outcome::Cancelled,
            Err(_) => Outcome::Failed,
        };
        match &result {
            Ok(manifest) => build.status.release = Some(manifest.id.to_string()),
            Err(err) => build.status.error = Some(err.to_string()),
        }
        if let Some(git) = build.git.take() {
            git.remove_worktree(&self.paths.builds_dir().join(TREE))
                .await;
        }
        let _ = std::fs::remove_file(self.paths.builds_dir().join(RECORD));
        build.tell();
        result
    }

    /// Where the last build's whole output is.
    pub fn log_file(&self) -> PathBuf {
        self.paths.logs_dir().join("build.log")
    }

    fn target_dir(&self) -> PathBuf {
        self.config
            .target_dir
            .clone()
            .unwrap_or_else(|| self.paths.builds_dir().join(TARGET))
    }

    fn cargo(&self) -> Result<PathBuf, BuildError> {
        let missing = BuildError::ToolMissing {
            tool: "cargo",
            hint: "install Rust (https://rustup.rs), or set [deploy] cargo in the config",
        };
        if let Some(cargo) = &self.config.cargo {
            return cargo.is_file().then(|| cargo.clone()).ok_or(missing);
        }
        which::which("cargo")
            .ok()
            .or_else(|| {
                // A service or a desktop session often starts without ~/.cargo/bin on PATH.
                let home = std::env::var_os("CARGO_HOME")
                    .map(PathBuf::from)
                    .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")))?;
                Some(home.join("bin/cargo")).filter(|c| c.is_file())
            })
            .ok_or(missing)
    }

    /// A step's command: in `tree`, without Chroxy's variables or secrets, marked.
    fn command(&self, program: &Path, args: &[String], tree: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.args(args).current_dir(tree);
        for (name, _) in std::env::vars_os() {
            if crate::agent::is_private(&name) {
                cmd.env_remove(name);
            }
        }
        cmd.env("CARGO_TARGET_DIR", self.target_dir())
            .env("CARGO_TERM_COLOR", "never")
            .env(crate::process::WORKER_MARK, &self.mark);
        cmd
    }
}

/// One build in progress.
struct Build<'a> {
    builder: &'a Builder,
    status: &'a mut BuildStatus,
    report: &'a mut (dyn FnMut(&BuildStatus) + Send),
    cancel: &'a CancellationToken,
    /// Set once a worktree may exist (so it is removed whatever happens next).
    git: Option<Git>,
    output: Output,
    /// When the running step started.
    step_started: Instant,
}

impl Build<'_> {
    async fn steps(&mut self, request: &BuildRequest) -> Result<Manifest, BuildError> {
        let b = self.builder;
        let dir = b.paths.builds_dir();
        ensure_private_dir(&dir)?;
        let tree = dir.join(TREE);

        self.start(StepName::Checkout);
        let git = Git::open(&request.source).await?;
        let (commit, base) = self.revision(&git, request, &dir).await?;
        self.status.commit = Some(commit.clone());
        let record = Record {
            source: git.top().to_path_buf(),
            mark: b.mark.clone(),
            pid: std::process::id(),
        };
        let json = serde_json::to_vec(&record).unwrap_or_default();
        crate::store::atomic_write(&dir.join(RECORD), &json)?;
        self.git = Some(git.clone());
        git.add_worktree(&tree, &commit).await?;
        self.say(
            StepName::Checkout,
            format!("checked out {commit} into {}", tree.display()),
        );
        self.pass(StepName::Checkout);

        let cargo = b.cargo()?;
        let profile = b.config.profile.clone();
        let args: Vec<String> = [
            "build",
            "--locked",
            "--profile",
            &profile,
            "--bin",
            "chroxy",
        ]
        .map(String::from)
        .into();
        let started = Instant::now();
        self.step_command(
            StepName::Build,
            &cargo,
            &args,
            &tree,
            b.config.build_timeout(),
        )
        .await?;
        let build_ms = started.elapsed().as_millis() as u64;
        let binary = b.target_dir().join(profile_dir(&profile)).join("chroxy");
        if !binary.is_file() {
            return Err(BuildError::NoBinary(binary));
        }

        let check = b.config.check_command();
        let started = Instant::now();
        let check_result = match check.split_first() {
            None => {
                self.status.step(StepName::Check).state = StepState::Skipped;
                "skipped".to_owned()
            }
            Some((program, args)) => {
                let program = match program.as_str() {
                    "cargo" => cargo.clone(),
                    other => PathBuf::from(other),
                };
                self.step_command(
                    StepName::Check,
                    &program,
                    args,
                    &tree,
                    b.config.check_timeout(),
                )
                .await?;
                "passed".to_owned()
            }
        };
        let check_ms = started.elapsed().as_millis() as u64;

        self.start(StepName::Store);
        let built = BuiltFrom {
            dir: git.top().to_path_buf(),
            commit,
            dirty: base.is_some(),
            base,
            check: check_result,
            build_ms,
            check_ms,
        };
        let releases = Releases::open(&b.paths);
        let manifest =
            tokio::task::spawn_blocking(move || releases.add_built(&binary, Some(built)))
                .await
                .map_err(|_| BuildError::Cancelled)??;
        self.say(StepName::Store, format!("added release {}", manifest.id));
        self.pass(StepName::Store);
        Ok(manifest)
    }

    /// The commit to build and, for a dirty tree's snapshot, the commit it is on.
    async fn revision(
        &mut self,
        git: &Git,
        request: &BuildRequest,
        dir: &Path,
    ) -> Result<(String, Option<String>), BuildError> {
        if let Some(rev) = &request.rev {
            // A named revision is built from git's objects: the tree's state is not in it.
            return Ok((git.resolve(rev).await?, None));
        }
        let head = git.resolve("HEAD").await?;
        let changes = git.changes().await?;
        if changes.is_empty() {
            return Ok((head, None));
        }
        if !request.allow_dirty {
            return Err(BuildError::Dirty {
                dir: git.top().to_path_buf(),
                count: changes.len(),
                files: changes.into_iter().take(5).collect(),
            });
        }
        self.status.dirty = true;
        self.say(
            StepName::Checkout,
            format!(
                "{} uncommitted changes, built as they are (--allow-dirty)",
                changes.len()
            ),
        );
        let snapshot = git.snapshot(&dir.join(INDEX), &head).await?;
        Ok((snapshot, Some(head)))
    }

    async fn step_command(
        &mut self,
        step: StepName,
        program: &Path,
        args: &[String],
        tree: &Path,
        limit: Duration,
    ) -> Result<(), BuildError> {
        self.start(step);
        let cmd = self.builder.command(program, args, tree);
        let shown = std::iter::once(program.display().to_string())
            .chain(args.iter().cloned())
            .collect::<Vec<_>>()
            .join(" ");
        self.say(step, format!("$ {shown}"));
        let started = self.step_started;
        let mut last_report = Instant::now();
        let (status, report) = (&mut *self.status, &mut *self.report);
        let ended = output::run(cmd, limit, self.cancel, &mut self.output, |line| {
            let s = status.step(step);
            push_tail(&mut s.tail, line);
            if last_report.elapsed() >= REPORT_EVERY {
                s.duration_ms = started.elapsed().as_millis() as u64;
                last_report = Instant::now();
                status.summarize();
                report(status);
            }
        })
        .await;
        // Whatever it left running (a build script's daemon) goes with it.
        crate::process::kill_marked(&self.builder.mark, LEFTOVER_PATIENCE).await;
        match ended {
            Ok(()) => {
                self.pass(step);
                Ok(())
            }
            Err(Ended::Cancelled) => Err(BuildError::Cancelled),
            Err(Ended::TimedOut) => Err(BuildError::TimedOut { step, limit }),
            Err(Ended::Failed(how)) => Err(BuildError::StepFailed {
                step,
                how,
                log: self.builder.log_file(),
            }),
            Err(Ended::NotStarted(why)) => Err(BuildError::StepFailed {
                step,
                how: format!("{} could not be started: {why}", program.display()),
                log: self.builder.log_file(),
            }),
        }
    }

    fn start(&mut self, step: StepName) {
        self.step_started = Instant::now();
        let s = self.status.step(step);
        s.state = StepState::Running;
        s.duration_ms = 0;
        self.tell();
    }

    fn pass(&mut self, step: StepName) {
        let took = self.step_started.elapsed().as_millis() as u64;
        let s = self.status.step(step);
        s.state = StepState::Passed;
        s.duration_ms = took;
        self.tell();
    }

    /// Reports the status as it is now.
    fn tell(&mut self) {
        self.status.summarize();
        (self.report)(self.status);
    }

    fn say(&mut self, step: StepName, line: String) {
        let line = self.output.line(line);
        push_tail(&mut self.status.step(step).tail, line);
        self.tell();
    }
}

fn push_tail(tail: &mut Vec<String>, mut line: String) {
    // The status travels to workers in one control line with every step's tail, and
    // to phones at each change: a long line is cut here (the log keeps it whole).
    if line.len() > MAX_TAIL_LINE {
        let cut = (0..=MAX_TAIL_LINE)
            .rev()
            .find(|&i| line.is_char_boundary(i))
            .unwrap_or(0);
        line.truncate(cut);
        line.push('…');
    }
    if tail.len() >= TAIL_LINES {
        tail.remove(0);
    }
    tail.push(line);
}

/// The directory of `target/` cargo puts a profile's binaries in.
fn profile_dir(profile: &str) -> &str {
    match profile {
        "dev" | "test" => "debug",
        "bench" => "release",
        other => other,
    }
}

/// The home's build lock if nobody holds it.
fn claim(paths: &Paths) -> Result<Option<Claim>, BuildError> {
    use nix::fcntl::{Flock, FlockArg};
    let path = paths.lock_file("build");
    if let Some(dir) = path.parent() {
        ensure_private_dir(dir)?;
    }
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::io("opening lock file", &path, e))?;
    match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(Some(Claim { _lock: lock })),
        Err((_, nix::errno::Errno::EWOULDBLOCK)) => Ok(None),
        Err((_, errno)) => Err(StoreError::io("locking", &path, errno.into()).into()),
    }
}

fn read_record(paths: &Paths) -> Option<Record> {
    let bytes = std::fs::read(paths.builds_dir().join(RECORD)).ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes what a build that did not finish left (a supervisor killed mid-build): its
/// processes, its worktree and git's record of it. Does nothing while a build runs.
pub async fn sweep(paths: &Paths) {
    match claim(paths) {
        Ok(Some(_claim)) => clean_up(paths).await,
        Ok(None) => {}
        Err(err) => tracing::warn!(%err, "cannot check for a build left behind"),
    }
}

/// [`sweep`]'s work, under the lock.
async fn clean_up(paths: &Paths) {
    let dir = paths.builds_dir();
    let tree = dir.join(TREE);
    let record = read_record(paths);
    if record.is_none() && !tree.exists() {
        return;
    }
    tracing::info!("removing what an unfinished build left");
    if let Some(record) = &record {
        crate::process::kill_marked(&record.mark, LEFTOVER_PATIENCE).await;
        match Git::open(&record.source).await {
            Ok(git) => git.remove_worktree(&tree).await,
            Err(err) => tracing::warn!(%err, "the source tree of the unfinished build"),
        }
    }
    let _ = std::fs::remove_dir_all(&tree);
    let _ = std::fs::remove_file(dir.join(INDEX));
    let _ = std::fs::remove_file(dir.join(RECORD));
}

#[cfg(test)]
mod tests;
