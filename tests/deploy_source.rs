//! `chroxy deploy --source` end to end: a scratch git repository holding this project's
//! sources is built (for real, by cargo), checked (the library's unit tests of one module) and
//! deployed by a running supervisor while a phone is in a conversation. A dirty tree,
//! a change that breaks compilation, one that fails the check and one that fails the
//! health gate each leave the serving release and the phone untouched, naming the step
//! that failed; a supervisor killed in the middle of a build leaves nothing behind once
//! it starts again. One test, in order: the first build compiles every dependency
//! (minutes), the later ones only this crate.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::deploy::{commit_all, git, toolchain_env, wrapper_crate, wrapper_repo};
use common::supervisor::{cli, cli_at_terminal, events, Sup};
use common::{eventually_within, holds, Home, WorkerOpts};
use serde_json::Value;

/// A build from scratch on a CI machine, with every dependency: generous.
const BUILD_WAIT: Duration = Duration::from_secs(25 * 60);

/// This project's sources as they are on disk (tracked, and new files git does not
/// ignore), committed into a new repository under `dir`.
fn scratch_repo(dir: &Path) -> PathBuf {
    let root = common::repo_root();
    let repo = dir.join("chroxy-src");
    let listed = git(
        &root,
        &[
            "ls-files",
            "-z",
            "--cached",
            "--others",
            "--exclude-standard",
        ],
    );
    for file in listed.split('\0').filter(|f| !f.is_empty()) {
        let from = root.join(file);
        if !from.is_file() {
            continue; // deleted in the working tree
        }
        let to = repo.join(file);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&from, &to).unwrap();
    }
    git(&repo, &["init", "-q"]);
    commit_all(&repo, "this project's sources");
    repo
}

fn edit(repo: &Path, file: &str, change: impl FnOnce(String) -> String) {
    let path = repo.join(file);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, change(text)).unwrap();
}

/// The build that started after `after` (ms since the epoch), once it has ended.
async fn build_ended(sup: &Sup, after: u64) -> Value {
    eventually_within("the build to end", BUILD_WAIT, async || {
        let status = sup.status().await;
        let build = &status["build"];
        let ours = build["startedAt"].as_u64().is_some_and(|t| t >= after);
        let ended = build["outcome"] != "running"
            && (build["outcome"] != "stored" || !build["deploy"].is_null());
        holds(ours && ended, format!("{build:#}")).map(|()| status)
    })
    .await
}

fn step<'a>(build: &'a Value, name: &str) -> &'a Value {
    build["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap()
}

fn worktrees(repo: &Path) -> usize {
    git(repo, &["worktree", "list", "--porcelain"])
        .lines()
        .filter(|l| l.starts_with("worktree "))
        .count()
}

/// Living processes whose environment carries a build's mark (`…-build`).
fn build_processes() -> Vec<u32> {
    let me = std::process::id();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| pid != me)
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|env| {
                env.split(|&b| b == 0)
                    .any(|var| var.starts_with(b"UNDER_CHROXY_WORKER=") && var.ends_with(b"-build"))
            })
        })
        .filter(|&pid| chroxy::process::stat_of(pid).is_some_and(|s| s.state != 'Z'))
        .collect()
}

fn now() -> u64 {
    chroxy::protocol::now_ms()
}

/// Neither the serving worker nor the phone noticed anything.
async fn untouched(sup: &Sup, phone: &mut common::Client, serving: &Value) -> Value {
    let status = sup.status().await;
    assert_eq!(
        status["worker"]["pid"], serving["worker"]["pid"],
        "{status:#}"
    );
    assert_eq!(
        status["releases"]["current"],
        serving["releases"]["current"]
    );
    assert_eq!(status["state"], "healthy");
    phone
        .send(serde_json::json!({"type": "list_sessions"}))
        .await;
    phone.until_type("session_list").await;
    assert!(
        !phone.seen.iter().any(|v| v["type"] == "server_shutdown"),
        "the phone was told of a restart"
    );
    status
}

#[tokio::test(flavor = "multi_thread")]
async fn a_source_tree_is_built_checked_and_deployed_and_a_bad_one_never_touches_the_phone() {
    let home = Home::new();
    // The test phone reads only when a step waits on it, so it answers no ping
    // during a build: pings far apart keep it connected, as a real phone stays.
    // The check is the library's unit tests named `deploy_check`, the module the steps
    // below add: the whole suite would run this project's tests a second time (ten
    // minutes on CI, beside the other tests of this file), and some of them watch every
    // process of the machine. The default check's command is the same but for the
    // filter, and the deploy tests of the wrapper crate run it unchanged.
    let mut config = String::from(
        "[deploy]\nprofile = \"dev\"\ncheck = [\"cargo\", \"test\", \"--locked\", \"--lib\", \"--profile\", \"dev\", \"deploy_check\"]\n",
    );
    // A developer running this again may keep the compiled dependencies.
    if let Some(dir) = std::env::var_os("CHROXY_TEST_DEPLOY_TARGET") {
        config += &format!("target_dir = {:?}\n", PathBuf::from(dir));
    }
    config += "\n[supervisor]\ncanary_window_ms = 1000\n\n[worker]\nws_ping_secs = 3600\n";
    home.config(&config);
    let repo = scratch_repo(home.dir.path());
    let source = repo.to_str().unwrap();
    let sup = Sup::start(&home, toolchain_env(WorkerOpts::fake_cli())).await;
    let serving = sup.healthy().await;
    let mut phone = sup.client().await;
    phone.turn("said before the deploys").await;

    // A dirty tree: refused before anything is built, naming the file.
    std::fs::write(repo.join("NOTES.md"), "not committed\n").unwrap();
    let asked = now();
    let (ok, out, err) = cli(&home, &["deploy", "--source", source]).await;
    assert!(!ok.success(), "{out}{err}");
    assert!(
        err.contains("uncommitted changes")
            && err.contains("NOTES.md")
            && err.contains("--allow-dirty"),
        "{err}"
    );
    let build = &build_ended(&sup, asked).await["build"];
    assert_eq!(step(build, "checkout")["state"], "failed", "{build:#}");
    assert_eq!(step(build, "build")["state"], "waiting");
    std::fs::remove_file(repo.join("NOTES.md")).unwrap();
    untouched(&sup, &mut phone, &serving).await;

    // A change that does not compile: the build step fails, with the compiler's words.
    edit(&repo, "src/lib.rs", |t| {
        t + "\npub fn broken() -> u32 {\n    \"not a number\"\n}\n"
    });
    commit_all(&repo, "does not compile");
    let asked = now();
    let (ok, out, err) = cli(&home, &["deploy", "--source", source]).await;
    assert!(!ok.success(), "{out}{err}");
    assert!(err.contains("the build step failed"), "{err}");
    assert!(
        out.contains("mismatched types"),
        "the compiler's error is shown: {out}"
    );
    let status = build_ended(&sup, asked).await;
    assert_eq!(step(&status["build"], "build")["state"], "failed");
    assert!(events(&status)
        .iter()
        .any(|(k, m)| k == "build_failed" && m.contains("build step")));
    untouched(&sup, &mut phone, &serving).await;

    // A change that compiles but fails its check (the library's unit tests).
    edit(&repo, "src/lib.rs", |t| {
        t.replace(
            "pub fn broken() -> u32 {\n    \"not a number\"\n}",
            "#[cfg(test)]\nmod deploy_check {\n    #[test]\n    fn fails_on_purpose() {\n        panic!(\"this check fails on purpose\");\n    }\n}",
        )
    });
    commit_all(&repo, "fails its check");
    let asked = now();
    let (ok, out, err) = cli(&home, &["deploy", "--source", source]).await;
    assert!(!ok.success(), "{out}{err}");
    assert!(err.contains("the check step failed"), "{err}");
    let status = build_ended(&sup, asked).await;
    let build = &status["build"];
    assert_eq!(step(build, "build")["state"], "passed");
    assert_eq!(step(build, "check")["state"], "failed");
    assert!(
        step(build, "check")["tail"]
            .to_string()
            .contains("fails_on_purpose"),
        "{build:#}"
    );
    let listed: Vec<_> = status["releases"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].clone())
        .collect();
    assert_eq!(listed, ["0"], "nothing failed entered the store");
    untouched(&sup, &mut phone, &serving).await;

    // A good change, from a person at the desk: built, checked, deployed as the canary;
    // the phone is asked to come back and finds its conversation.
    edit(&repo, "src/lib.rs", |t| {
        t.replace("panic!(\"this check fails on purpose\");", "")
    });
    let good = commit_all(&repo, "passes");
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", "--source", source]).await;
    assert!(ok.success(), "{out}{err}");
    assert!(out.contains("check: passed"), "{out}");
    let notice = phone.until_type("server_shutdown").await;
    assert_eq!(notice["reason"], "restart");
    let deployed = sup
        .wait_for("the built release to be promoted", |s| {
            let id = &s["build"]["release"];
            !id.is_null() && s["releases"]["knownGood"] == *id && s["worker"]["release"] == *id
        })
        .await;
    let id = deployed["build"]["release"].as_str().unwrap().to_owned();
    let release = deployed["releases"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap();
    assert_eq!(release["source"]["commit"], good.as_str(), "{release:#}");
    assert_eq!(release["source"]["dirty"], false);
    assert_eq!(release["source"]["check"], "passed");
    assert!(release["source"]["buildMs"].as_u64().unwrap() > 0);
    assert_eq!(
        deployed["build"]["deploy"]["event"], "promoted",
        "{deployed:#}"
    );
    // The command returned once the release served, saying so.
    assert!(
        out.contains(&format!(
            "release {id} passed its health gate and now serves"
        )) || out.contains(&format!("release {id} survived its canary window")),
        "{out}"
    );
    let mut phone = sup.client_coming_back().await;
    let said: Vec<_> = phone
        .seen
        .iter()
        .filter_map(|v| v["content"].as_str())
        .collect();
    assert!(said.contains(&"said before the deploys"), "{said:?}");
    let (ok, out, _) = cli(&home, &["releases"]).await;
    assert!(
        ok.success() && out.contains(&format!("from {}", repo.canonicalize().unwrap().display())),
        "{out}"
    );

    // A change that builds and passes its check but cannot pass the health gate: the
    // release that serves keeps serving, and the phone hears nothing.
    edit(&repo, "src/main.rs", |t| {
        t.replacen(
            "Command::Worker(args) => {",
            "Command::Worker(args) => {\n            if std::process::id() > 0 {\n                std::process::exit(7);\n            }",
            1,
        )
    });
    commit_all(&repo, "a worker that dies at once");
    let serving = sup.status().await;
    let asked = now();
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", "--source", source]).await;
    // The build succeeds; the command waits for the gate and says the deploy failed.
    assert!(!ok.success(), "{out}{err}");
    assert!(out.contains("store: passed"), "{out}");
    assert!(
        err.contains("exited before its health gate passed") && err.contains("keeps serving"),
        "{err}"
    );
    let failed = sup
        .wait_for("the canary to fail its gate", |s| {
            s["build"]["startedAt"].as_u64().is_some_and(|t| t >= asked)
                && s["build"]["deploy"]["ok"] == false
        })
        .await;
    let answer = &failed["build"]["deploy"];
    assert_eq!(answer["event"], "worker_exited", "{answer:#}");
    assert!(
        answer["message"]
            .as_str()
            .unwrap()
            .contains("keeps serving"),
        "{answer:#}"
    );
    untouched(&sup, &mut phone, &serving).await;
    assert!(!home.chroxy().join("state/builds/tree").exists());
    assert_eq!(worktrees(&repo), 1, "every build's worktree is gone");

    // A supervisor killed in the middle of a build: its next start removes the
    // worktree and the compiler processes the build left running.
    edit(&repo, "src/main.rs", |t| {
        t.replacen(
            "if std::process::id() > 0 {\n                std::process::exit(7);\n            }",
            "",
            1,
        )
    });
    edit(&repo, "src/lib.rs", |t| {
        t + "\n// one more change, to compile again\n"
    });
    commit_all(&repo, "good again");
    let asked = now();
    let (code, answer) = sup
        .post(
            "deploy/source",
            None,
            &serde_json::json!({"source": source, "origin": "desk"}).to_string(),
        )
        .await;
    assert_eq!(code, 200, "{answer}");
    sup.wait_for("the build step to compile", |s| {
        s["build"]["startedAt"].as_u64().is_some_and(|t| t >= asked)
            && step(&s["build"], "build")["state"] == "running"
            && step(&s["build"], "build")["tail"]
                .to_string()
                .contains("Compiling chroxy")
    })
    .await;
    let second = sup
        .post(
            "deploy/source",
            None,
            &serde_json::json!({"source": source}).to_string(),
        )
        .await;
    assert_eq!(second.0, 409, "one build at a time: {second:?}");
    assert!(
        second.1["error"]
            .as_str()
            .unwrap()
            .contains("already running"),
        "{second:?}"
    );
    assert!(home.chroxy().join("state/builds/tree").exists());
    sup.signal(nix::sys::signal::Signal::SIGKILL);
    drop(sup);
    let sup = Sup::start(&home, toolchain_env(WorkerOpts::fake_cli())).await;
    sup.healthy().await;
    assert!(!home.chroxy().join("state/builds/tree").exists());
    assert!(!home.chroxy().join("state/builds/build.json").exists());
    assert_eq!(worktrees(&repo), 1);
    assert_eq!(
        build_processes(),
        Vec::<u32>::new(),
        "a build's processes outlived it"
    );
}

/// The status a phone was last told of the build that started after `after`, once
/// `done` holds for it.
async fn told(phone: &mut common::Client, done: impl Fn(&Value) -> bool) -> Value {
    let wait = async {
        phone
            .until(|v| v["type"] == "deploy_status" && !v["build"].is_null() && done(&v["build"]))
            .await
    };
    tokio::time::timeout(Duration::from_secs(300), wait)
        .await
        .expect("the phone was told how the deploy went")["build"]
        .clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_phone_deploys_its_sessions_directory_with_approval_unless_the_person_allowed_it() {
    let home = Home::new();
    home.config("[deploy]\nprofile = \"dev\"\n\n[supervisor]\ncanary_window_ms = 1000\n");
    let repo = home.project();
    wrapper_repo(&repo);
    let sup = Sup::start(&home, toolchain_env(WorkerOpts::fake_cli())).await;
    let before = sup.healthy().await;
    let mut phone = sup.client().await;
    let session = phone.active_session();

    // A dirty directory is refused, and the phone is told why, with the way out.
    std::fs::write(repo.join("TODO"), "uncommitted\n").unwrap();
    phone
        .send(serde_json::json!({"type": "deploy_source", "sessionId": session}))
        .await;
    let asked = phone.until_type("deploy_requested").await;
    assert_eq!(
        asked["needsApproval"], true,
        "the test phone may not deploy by itself"
    );
    assert_eq!(asked["source"], repo.to_str().unwrap());
    let refused = told(&mut phone, |b| b["outcome"] == "failed").await;
    assert!(
        refused["error"]
            .as_str()
            .unwrap()
            .contains("uncommitted changes"),
        "{refused:#}"
    );

    // With its uncommitted changes: built, checked, stored, then it waits for a person
    // at the computer; the phone sees each step and what it waits for.
    phone
        .send(
            serde_json::json!({"type": "deploy_source", "sessionId": session, "allowDirty": true}),
        )
        .await;
    let built = told(&mut phone, |b| !b["deploy"].is_null()).await;
    assert_eq!(built["dirty"], true);
    assert_eq!(built["requestedBy"], "test");
    assert!(
        built["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["state"] == "passed"),
        "{built:#}"
    );
    assert!(
        built["deploy"]["message"]
            .as_str()
            .unwrap()
            .contains("awaits approval"),
        "{built:#}"
    );
    let waiting = sup
        .wait_for("the phone's release to wait for approval", |s| {
            !s["pendingDeploy"].is_null()
        })
        .await;
    assert_eq!(waiting["pendingDeploy"]["release"], built["release"]);
    assert_eq!(waiting["worker"]["pid"], before["worker"]["pid"]);
    assert!(!phone.seen.iter().any(|v| v["type"] == "server_shutdown"));
    let (code, _) = sup.post("deploy/refuse", None, "{}").await;
    assert_eq!(code, 200);

    // The person lets this phone deploy: its next deploy needs nobody, and the phone
    // follows it through the switch to the new release.
    std::fs::remove_file(repo.join("TODO")).unwrap();
    let device = home.devices().list(chroxy::protocol::now_ms()).unwrap()[0]
        .id
        .clone();
    let (ok, out, err) = cli(&home, &["devices", "allow-deploy", &device]).await;
    assert!(ok.success(), "{out}{err}");
    phone
        .send(serde_json::json!({"type": "deploy_source", "sessionId": session}))
        .await;
    let asked = phone.until_type("deploy_requested").await;
    assert_eq!(asked["needsApproval"], false);
    let deploying = told(&mut phone, |b| !b["deploy"].is_null()).await;
    assert!(
        deploying["deploy"]["message"]
            .as_str()
            .unwrap()
            .contains("as a canary"),
        "{deploying:#}"
    );
    phone.until_type("server_shutdown").await;
    let mut phone = sup.client_coming_back().await;
    let promoted = told(&mut phone, |b| b["deploy"]["event"] == "promoted").await;
    assert_eq!(promoted["release"], deploying["release"]);
    let serving = sup.status().await;
    assert_eq!(serving["worker"]["release"], deploying["release"]);

    // A change that fails its check: the phone sees the failed step and its lines.
    wrapper_crate(&repo, 41);
    commit_all(&repo, "a failing check");
    phone
        .send(serde_json::json!({"type": "deploy_source", "sessionId": session}))
        .await;
    let failed = told(&mut phone, |b| b["outcome"] == "failed").await;
    let check = step(&failed, "check");
    assert_eq!(check["state"], "failed", "{failed:#}");
    assert!(check["tail"].to_string().contains("answers"), "{check:#}");
    assert_eq!(
        sup.status().await["worker"]["pid"],
        serving["worker"]["pid"]
    );
}

#[tokio::test]
async fn a_worker_without_a_supervisor_says_nothing_here_can_deploy() {
    let home = Home::new();
    let worker = common::Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut phone = worker.client().await;
    let session = phone.active_session();
    phone
        .send(serde_json::json!({"type": "deploy_source", "sessionId": session}))
        .await;
    let error = phone.until_type("error").await;
    assert_eq!(error["code"], "DEPLOY_UNAVAILABLE");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("without a supervisor"),
        "{error}"
    );
}
