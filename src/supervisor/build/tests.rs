//! The pipeline on a toy crate whose binary is called `chroxy` and answers `--version`
//! as Chroxy does: real git, real cargo (a crate without dependencies builds in a
//! second, offline), a home of its own. The whole project is built by the end-to-end
//! test (`tests/deploy_source.rs`).

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use super::*;
use crate::protocol::deploy::StepStatus;

const MAIN: &str = r#"fn main() {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("chroxy {} (toy)", VERSION);
    }
}
const VERSION: &str = "1.0.0";
"#;
const LIB: &str =
    "pub fn answer() -> u32 { 42 }\n#[test]\nfn it_answers() { assert_eq!(answer(), 42); }\n";
const LOCK: &str = "version = 4\n\n[[package]]\nname = \"chroxy\"\nversion = \"0.1.0\"\n";

struct Toy {
    _dir: tempfile::TempDir,
    repo: PathBuf,
    paths: Paths,
}

fn git(repo: &Path, args: &[&str]) -> String {
    let out = StdCommand::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(repo: &Path, file: &str, text: &str) {
    let path = repo.join(file);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["add", "--all"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// A committed toy tree, and a home whose `target` is kept inside it.
fn toy() -> Toy {
    let dir = tempfile::tempdir().unwrap();
    let repo = dir.path().join("src-tree");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "-q"]);
    write(
        &repo,
        "Cargo.toml",
        "[package]\nname = \"chroxy\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n",
    );
    write(&repo, "Cargo.lock", LOCK);
    write(&repo, ".gitignore", "/target\n");
    write(&repo, "src/main.rs", MAIN);
    write(&repo, "src/lib.rs", LIB);
    commit_all(&repo, "toy");
    let paths = Paths::under(dir.path().join("home"));
    Toy {
        _dir: dir,
        repo,
        paths,
    }
}

fn config() -> DeployConfig {
    DeployConfig {
        profile: "dev".into(),
        ..DeployConfig::default()
    }
}

/// One build of `request`: its result and every status it reported.
async fn build_with(
    toy: &Toy,
    config: DeployConfig,
    request: BuildRequest,
) -> (Result<Manifest, BuildError>, Vec<BuildStatus>) {
    let secret = ApiToken::new("tok-abcdefghijklmnop");
    // Marks are one supervisor's own: tests running side by side must not share one.
    let mark = format!("toy-build-{}", toy.paths.builds_dir().display());
    let builder = Builder::new(toy.paths.clone(), config, mark, vec![secret]);
    let claim = builder.claim().unwrap();
    let mut seen = Vec::new();
    let mut report = |s: &BuildStatus| seen.push(s.clone());
    let result = builder
        .run(
            &claim,
            &request,
            "test",
            &mut report,
            &CancellationToken::new(),
        )
        .await;
    (result, seen)
}

fn request(toy: &Toy) -> BuildRequest {
    BuildRequest {
        source: toy.repo.join("src"),
        rev: None,
        allow_dirty: false,
    }
}

fn step(status: &BuildStatus, name: StepName) -> &StepStatus {
    status.steps.iter().find(|s| s.name == name).unwrap()
}

fn worktrees(repo: &Path) -> usize {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter(|l| l.starts_with("worktree "))
        .count()
}

#[tokio::test]
async fn a_clean_tree_is_built_checked_and_stored_and_the_persons_tree_is_left_as_it_was() {
    let toy = toy();
    let head = git(&toy.repo, &["rev-parse", "HEAD"]).trim().to_owned();
    let (result, seen) = build_with(&toy, config(), request(&toy)).await;
    let manifest = result.unwrap();

    let source = manifest.source.clone().unwrap();
    assert_eq!(
        (source.commit.as_str(), source.dirty),
        (head.as_str(), false)
    );
    assert_eq!(source.check, "passed");
    assert_eq!(source.dir, toy.repo.canonicalize().unwrap());
    assert_eq!(manifest.version, "1.0.0");
    // The store has it, with what it was built from.
    let listed = Releases::open(&toy.paths).get(&manifest.id).unwrap();
    assert_eq!(listed.source, Some(source));

    let last = seen.last().unwrap();
    assert_eq!(last.outcome, Outcome::Stored);
    assert_eq!(last.release.as_deref(), Some(manifest.id.as_str()));
    assert!(
        last.steps.iter().all(|s| s.state == StepState::Passed),
        "{last:#?}"
    );
    assert!(
        step(last, StepName::Check)
            .tail
            .iter()
            .any(|l| l.contains("it_answers")),
        "the check's output is shown: {:?}",
        step(last, StepName::Check).tail
    );
    // Every state a view saw came in order: no step passed before it ran.
    assert!(seen
        .iter()
        .any(|s| s.running_step() == Some(StepName::Build)));

    // The person's tree: same files, no worktree left, nothing staged.
    assert_eq!(git(&toy.repo, &["status", "--porcelain"]), "");
    assert_eq!(worktrees(&toy.repo), 1);
    assert!(!toy.paths.builds_dir().join(TREE).exists());
    assert!(!toy.paths.builds_dir().join(RECORD).exists());
}

#[tokio::test]
async fn a_dirty_tree_is_refused_unless_allowed_and_then_exactly_its_changes_are_built() {
    let toy = toy();
    let head = git(&toy.repo, &["rev-parse", "HEAD"]).trim().to_owned();
    write(
        &toy.repo,
        "src/main.rs",
        &MAIN.replace("1.0.0", "1.0.1-dirty"),
    );
    write(&toy.repo, "NOTES.txt", "untracked\n");
    let before = git(&toy.repo, &["status", "--porcelain"]);

    let (refused, seen) = build_with(&toy, config(), request(&toy)).await;
    let err = refused.unwrap_err();
    assert!(matches!(err, BuildError::Dirty { count: 2, .. }), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("src/main.rs") && text.contains("--allow-dirty"),
        "{text}"
    );
    let last = seen.last().unwrap();
    assert_eq!(last.outcome, Outcome::Failed);
    assert_eq!(step(last, StepName::Checkout).state, StepState::Failed);
    assert_eq!(step(last, StepName::Build).state, StepState::Waiting);
    assert!(Releases::open(&toy.paths).list().unwrap().is_empty());

    let allowed = BuildRequest {
        allow_dirty: true,
        ..request(&toy)
    };
    let (result, _) = build_with(&toy, config(), allowed).await;
    let manifest = result.unwrap();
    assert_eq!(
        manifest.version, "1.0.1-dirty",
        "the uncommitted change is in the build"
    );
    let source = manifest.source.unwrap();
    assert!(source.dirty);
    assert_eq!(source.base.as_deref(), Some(head.as_str()));
    assert_ne!(source.commit, head, "a snapshot commit, not HEAD");
    // The person's changes, index and branch are as they were.
    assert_eq!(git(&toy.repo, &["status", "--porcelain"]), before);
    assert_eq!(git(&toy.repo, &["diff", "--cached", "--name-only"]), "");
    assert_eq!(git(&toy.repo, &["rev-parse", "HEAD"]).trim(), head);
    assert_eq!(worktrees(&toy.repo), 1);
}

#[tokio::test]
async fn a_failing_check_or_a_broken_build_stores_nothing_and_names_its_step() {
    let toy = toy();
    write(&toy.repo, "src/lib.rs", &LIB.replace("42 }", "41 }"));
    commit_all(&toy.repo, "a failing unit test");
    let (result, seen) = build_with(&toy, config(), request(&toy)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::StepFailed {
                step: StepName::Check,
                ..
            }
        ),
        "{err:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(step(last, StepName::Build).state, StepState::Passed);
    assert_eq!(step(last, StepName::Check).state, StepState::Failed);
    assert_eq!(step(last, StepName::Store).state, StepState::Waiting);
    assert!(
        last.error.as_deref().unwrap().contains("check step failed"),
        "{last:?}"
    );
    assert!(step(last, StepName::Check)
        .tail
        .iter()
        .any(|l| l.contains("it_answers")));

    write(&toy.repo, "src/main.rs", "fn main() { this is not rust }\n");
    commit_all(&toy.repo, "does not compile");
    let (result, seen) = build_with(&toy, config(), request(&toy)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::StepFailed {
                step: StepName::Build,
                ..
            }
        ),
        "{err:?}"
    );
    let last = seen.last().unwrap();
    assert_eq!(step(last, StepName::Build).state, StepState::Failed);
    assert!(step(last, StepName::Build)
        .tail
        .iter()
        .any(|l| l.contains("error")));
    let log = std::fs::read_to_string(toy.paths.logs_dir().join("build.log")).unwrap();
    assert!(
        log.contains("src/main.rs"),
        "the whole output is in the log"
    );

    assert!(Releases::open(&toy.paths).list().unwrap().is_empty());
    assert_eq!(worktrees(&toy.repo), 1);
}

#[tokio::test]
async fn a_named_revision_is_built_from_history_and_a_bad_one_is_refused() {
    let toy = toy();
    git(&toy.repo, &["tag", "v1"]);
    write(&toy.repo, "src/main.rs", &MAIN.replace("1.0.0", "2.0.0"));
    commit_all(&toy.repo, "two");
    // Uncommitted changes do not matter to a named revision.
    write(&toy.repo, "src/lib.rs", "garbage");
    let tagged = BuildRequest {
        rev: Some("v1".into()),
        ..request(&toy)
    };
    let (result, _) = build_with(&toy, config(), tagged).await;
    assert_eq!(result.unwrap().version, "1.0.0");

    for rev in ["no-such-branch", "--output=/tmp/owned", "", "HEAD\nv1"] {
        let bad = BuildRequest {
            rev: Some(rev.into()),
            ..request(&toy)
        };
        let (result, _) = build_with(&toy, config(), bad).await;
        let err = result.unwrap_err();
        assert!(
            matches!(err, BuildError::UnknownRevision { .. }),
            "{rev:?}: {err:?}"
        );
    }
    assert!(!Path::new("/tmp/owned").exists());
}

#[tokio::test]
async fn a_step_past_its_time_limit_is_stopped_and_says_which_setting_to_raise() {
    let toy = toy();
    let slow = DeployConfig {
        check: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo waiting; sleep 300".into(),
        ]),
        check_timeout_secs: 1,
        ..config()
    };
    let (result, _) = build_with(&toy, slow, request(&toy)).await;
    let err = result.unwrap_err();
    assert!(
        matches!(
            err,
            BuildError::TimedOut {
                step: StepName::Check,
                ..
            }
        ),
        "{err:?}"
    );
    assert!(err.to_string().contains("check_timeout_secs"), "{err}");
    assert_eq!(worktrees(&toy.repo), 1);
}

#[tokio::test]
async fn no_check_is_run_when_none_is_set_and_the_release_says_so() {
    let toy = toy();
    let unchecked = DeployConfig {
        check: Some(Vec::new()),
        ..config()
    };
    let (result, seen) = build_with(&toy, unchecked, request(&toy)).await;
    assert_eq!(result.unwrap().source.unwrap().check, "skipped");
    assert_eq!(
        step(seen.last().unwrap(), StepName::Check).state,
        StepState::Skipped
    );
}

#[tokio::test]
async fn what_a_step_prints_never_shows_a_secret() {
    let toy = toy();
    let leaky = DeployConfig {
        check: Some(vec![
            "sh".into(),
            "-c".into(),
            "echo token=tok-abcdefghijklmnop".into(),
        ]),
        ..config()
    };
    let (result, seen) = build_with(&toy, leaky, request(&toy)).await;
    result.unwrap();
    let tail = &step(seen.last().unwrap(), StepName::Check).tail;
    assert!(tail.iter().any(|l| l == "token=[secret]"), "{tail:?}");
    let log = std::fs::read_to_string(toy.paths.logs_dir().join("build.log")).unwrap();
    assert!(!log.contains("tok-abcdefghijklmnop"));
}

#[tokio::test]
async fn one_build_at_a_time_and_what_a_killed_build_left_is_swept() {
    let toy = toy();
    let builder = Builder::new(toy.paths.clone(), config(), "mark-x".into(), Vec::new());
    let claim = builder.claim().unwrap();
    let busy = builder.claim().unwrap_err();
    assert!(matches!(busy, BuildError::Busy(_)), "{busy:?}");
    // While a build holds the lock, a sweep leaves it alone.
    let dir = toy.paths.builds_dir();
    let tree = dir.join(TREE);
    let git_ = Git::open(&toy.repo).await.unwrap();
    let head = git_.resolve("HEAD").await.unwrap();
    git_.add_worktree(&tree, &head).await.unwrap();
    let record = Record {
        source: toy.repo.clone(),
        mark: "left-behind-build".into(),
        pid: 1,
    };
    std::fs::write(dir.join(RECORD), serde_json::to_vec(&record).unwrap()).unwrap();
    let mut compiler = StdCommand::new("sleep")
        .arg("300")
        .env(crate::process::WORKER_MARK, "left-behind-build")
        .spawn()
        .unwrap();
    sweep(&toy.paths).await;
    assert!(tree.exists(), "swept while a build held the lock");
    drop(claim);

    // As the next start does, once the killed build's lock is gone.
    sweep(&toy.paths).await;
    assert!(!tree.exists());
    assert!(!dir.join(RECORD).exists());
    assert_eq!(worktrees(&toy.repo), 1, "git forgot the worktree too");
    let status = compiler.wait().unwrap();
    assert!(!status.success(), "the left-behind process was killed");
    assert!(builder.claim().is_ok());
}

#[tokio::test]
async fn a_build_stopped_in_the_middle_kills_its_step_and_removes_its_tree() {
    let toy = toy();
    let slow = DeployConfig {
        check: Some(vec!["sh".into(), "-c".into(), "sleep 300".into()]),
        ..config()
    };
    let mark = format!("toy-build-{}", toy.paths.builds_dir().display());
    let builder = Builder::new(toy.paths.clone(), slow, mark, Vec::new());
    let claim = builder.claim().unwrap();
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    let mut tree_seen = false;
    let tree = toy.paths.builds_dir().join(TREE);
    // As a supervisor told to stop does, once the check runs.
    let mut report = |s: &BuildStatus| {
        if s.running_step() == Some(StepName::Check) {
            tree_seen |= tree.exists();
            stop.cancel();
        }
    };
    let result = builder
        .run(&claim, &request(&toy), "test", &mut report, &cancel)
        .await;
    assert!(matches!(result, Err(BuildError::Cancelled)), "{result:?}");
    assert!(tree_seen, "the tree existed while the check ran");
    assert!(!tree.exists());
    assert_eq!(worktrees(&toy.repo), 1);
    assert!(Releases::open(&toy.paths).list().unwrap().is_empty());
}

#[test]
fn a_deploys_story_follows_only_events_about_its_own_release() {
    let mut status = BuildStatus::new(&request(&toy()), "test");
    status.release = Some("1-ab".into());
    assert!(
        !status.follow("deployed", "release 1-ab passed its health gate"),
        "no deploy asked yet"
    );
    status.deploy = Some(crate::protocol::deploy::DeployAnswer {
        ok: true,
        message: "deploying release 1-ab as a canary".into(),
        event: None,
    });
    assert!(!status.follow(
        "deployed",
        "release 11-ab passed its health gate and now serves"
    ));
    assert!(
        !status.follow("restart_requested", "restart of release 1-ab requested"),
        "not a deploy's event"
    );
    assert!(
        !status.deploy.as_ref().unwrap().settled(),
        "its gate has not spoken yet"
    );
    assert!(status.follow(
        "deployed",
        "release 1-ab passed its health gate and now serves"
    ));
    let answer = status.deploy.as_ref().unwrap();
    assert!(answer.ok && answer.settled());
    assert!(status.follow(
        "rollback",
        "release 1-ab failed its canary (3 errors); rolling back to 0"
    ));
    let answer = status.deploy.as_ref().unwrap();
    assert!(!answer.ok && answer.event.as_deref() == Some("rollback"));
    assert!(answer.settled(), "a failure is where a follower stops");
    assert!(
        status.summary.iter().any(|l| l.contains("rolling back")),
        "{:?}",
        status.summary
    );
}

#[test]
fn a_deploy_that_replaced_a_stopped_worker_or_waits_for_a_person_is_settled() {
    let mut status = BuildStatus::new(&request(&toy()), "test");
    status.release = Some("1-ab".into());
    status.deploy = Some(crate::protocol::deploy::DeployAnswer {
        ok: true,
        message: "deploying release 1-ab as a canary".into(),
        event: None,
    });
    assert!(status.follow(
        "worker_exited",
        "release 1-ab exited while starting (exit status: 7)"
    ));
    assert!(status.deploy.as_ref().unwrap().settled());
    // Restarted within its bounds, it serves after all.
    assert!(status.follow("worker_started", "release 1-ab is serving"));
    let answer = status.deploy.as_ref().unwrap();
    assert!(answer.ok && answer.settled());
    let waiting = crate::protocol::deploy::DeployAnswer {
        ok: true,
        message: "release 1-ab awaits approval at the desk".into(),
        event: Some("deploy_pending".into()),
    };
    assert!(waiting.settled());
    assert!(status.follow(
        "deploy_abandoned",
        "deploy of release 1-ab abandoned on request"
    ));
    assert!(!status.deploy.as_ref().unwrap().ok);
}
