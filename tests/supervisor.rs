//! `chroxy start` end to end: a real supervisor process, real workers behind its public
//! port, and "bad releases" — the `bad-worker` test binary deployed like any other.

mod common;

use std::time::Duration;

use common::supervisor::{
    alive, bad_worker_bin, chroxy_bin, cli, cli_at_terminal, cpu_ticks, events,
    fake_cloudflared_bin, files_under, http, Sup, CRASH_FAST,
};
use common::{
    children_of, eventually, holds, streamed_text, Client, Home, Model, WorkerOpts, TOKEN,
};
use nix::sys::signal::Signal;
use serde_json::{json, Value};

fn messages(frames: &[Value]) -> Vec<String> {
    frames
        .iter()
        .filter(|v| v["type"] == "message")
        .filter_map(|v| v["content"].as_str().map(str::to_owned))
        .collect()
}

/// The conversation as a phone that connects now gets it replayed.
async fn replayed(sup: &Sup) -> Vec<String> {
    let c = sup.client().await;
    let start = c
        .seen
        .iter()
        .position(|v| v["type"] == "history_replay_start")
        .unwrap();
    messages(&c.seen[start..])
}

fn worker_pid(status: &Value) -> u64 {
    status["worker"]["pid"].as_u64().unwrap()
}

/// Deploys `bad-worker` through the CLI at a terminal; returns its release id.
async fn deploy_bad(home: &Home) -> String {
    let (ok, out, err) = cli_at_terminal(home, &["deploy", bad_worker_bin()]).await;
    assert!(ok.success(), "deploy failed: {out}{err}");
    out.split_whitespace()
        .nth(2)
        .expect("`added release <id>`")
        .to_owned()
}

#[tokio::test]
async fn worker_killed_20_times_during_turns_comes_back_on_the_same_port_with_the_whole_conversation(
) {
    let home = Home::new();
    // Backoff and crash budget are the state machine's to test; here every kill is
    // one crash among many and the policy must not give up.
    home.config("[supervisor]\nbackoff_cap_ms = 500\ncrash_budget = 100\n");
    let model = Model::start().await;
    let sup = Sup::start(&home, WorkerOpts::real_cli(&model)).await;
    let mut status = sup.healthy().await;
    let mut said = Vec::new();
    for round in 0..20 {
        let mut c = sup.client().await;
        // When the standby took over, it carries on with the killed turn's CLI: that
        // turn finishes first.
        until_idle(&mut c).await;
        let reply = format!("answer number {round}");
        let frames = c.turn(&format!("REPLY {reply}")).await;
        assert!(
            streamed_text(&frames).contains(&reply),
            "round {round}: {frames:?}"
        );
        said.push(format!("REPLY {reply}"));
        said.push(reply);
        // Kill during a running turn.
        c.send(json!({"type": "input", "data": "SLOW 200 this turn is cut short by a kill"}))
            .await;
        c.until(|v| v["type"] == "agent_busy").await;
        said.push("SLOW 200 this turn is cut short by a kill".into());
        let pid = worker_pid(&status);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        // The phone's socket ends with the worker (whatever the close code).
        c.closed().await;
        status = sup
            .wait_for("a new healthy worker", |s| {
                s["state"] == "healthy" && s["worker"]["pid"].as_u64() != Some(pid)
            })
            .await;
        let history = replayed(&sup).await;
        for line in &said {
            assert!(
                history.contains(line),
                "round {round}: `{line}` lost after the kill; history: {history:?}\nlog:\n{}",
                sup.log_text()
            );
        }
    }
    assert!(status["worker"]["restarts"].as_u64().unwrap() >= 20);
    let kinds = events(&status);
    assert!(
        kinds
            .iter()
            .any(|(k, m)| k == "worker_exited" && m.contains("signal 9")),
        "{kinds:?}"
    );
}

/// Waits until the turn the phone's welcome showed running, if any, has ended.
async fn until_idle(c: &mut Client) {
    let list = c.seen_or_until(|v| v["type"] == "session_list").await;
    let sessions = list["sessions"].as_array().unwrap();
    if sessions.iter().any(|s| s["isBusy"] == true) {
        c.until_type("agent_idle").await;
    }
}

async fn a_bad_release_is_never_promoted(mode: &str, step: &str) {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", mode)).await;
    let before = sup.healthy().await;
    let mut phone = sup.client().await;
    let id = deploy_bad(&home).await;
    let after = sup
        .wait_for("the candidate's gate to fail", |s| {
            events(s).iter().any(|(k, _)| k == "health_failed")
        })
        .await;
    let (_, message) = events(&after)
        .into_iter()
        .find(|(k, _)| k == "health_failed")
        .unwrap();
    assert!(message.contains(step) && message.contains(&id), "{message}");
    assert_eq!(after["state"], "healthy");
    assert_eq!(after["releases"]["current"], "0");
    assert_eq!(
        after["worker"]["pid"], before["worker"]["pid"],
        "the old worker keeps serving"
    );
    // The phone that was connected all along still works, and so does a new one.
    phone.send(json!({"type": "list_sessions"})).await;
    phone.until_type("session_list").await;
    sup.client().await;
    // The status page names the failing step in its HTML too (it renders the events).
    let (code, _) = http(sup.status, "GET", "/", &[], "").await;
    assert_eq!(code, 200);
}

#[tokio::test]
async fn a_release_whose_websocket_upgrade_fails_is_never_promoted() {
    a_bad_release_is_never_promoted("upgrade", "websocket_upgrade").await;
}

#[tokio::test]
async fn a_release_that_fails_auth_is_never_promoted() {
    a_bad_release_is_never_promoted("auth", "auth").await;
}

#[tokio::test]
async fn a_release_that_never_answers_ping_is_never_promoted() {
    a_bad_release_is_never_promoted("ping", "ping").await;
}

#[tokio::test]
async fn a_release_that_fails_valid_requests_is_rolled_back_within_its_canary_window() {
    let home = Home::new();
    home.config("[supervisor]\ncanary_window_ms = 60000\ncanary_error_limit = 10\n");
    let sup = Sup::start(
        &home,
        WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", "errors"),
    )
    .await;
    sup.healthy().await;
    let id = deploy_bad(&home).await;
    let serving = sup
        .wait_for("the bad release to serve", |s| {
            s["state"] == "healthy" && s["worker"]["release"] == id.as_str()
        })
        .await;
    assert_eq!(serving["releases"]["current"], id.as_str());
    assert_eq!(serving["releases"]["knownGood"], "0");
    // Every view can tell it is on trial, until when, and how it is doing.
    let canary = &serving["canary"];
    assert_eq!(canary["release"], id.as_str(), "{serving}");
    assert_eq!(canary["errorLimit"], 10);
    assert_eq!(canary["errors"], 0, "the health probes count no errors");
    assert!(
        canary["summary"].as_str().is_some_and(|s| s
            .starts_with(&format!("release {id} on trial: known-good in "))
            && s.ends_with("(0 of 10 errors)")),
        "one sentence for every view: {canary}"
    );
    let left = canary["endsAt"].as_u64().unwrap() as i64 - chroxy::protocol::now_ms() as i64;
    assert!(left > 0 && left <= 60_000, "ends in {left} ms");
    let (_, text, _) = cli(&home, &["status"]).await;
    assert!(
        text.lines()
            .any(|l| l.starts_with("canary:") && l.contains(&id) && l.contains("0 of 10 errors")),
        "{text}"
    );
    // A phone uses it; every valid request is answered with an error: a server fault,
    // counted as they come.
    let mut phone = Client::connect(sup.public).await;
    assert_eq!(phone.auth(TOKEN).await["type"], "auth_ok");
    let mut ask = async |i: usize| {
        phone
            .send(json!({"type": "input", "data": format!("hello {i}")}))
            .await;
        phone.until_type("error").await;
    };
    for i in 0..3 {
        ask(i).await;
    }
    let counted = sup
        .wait_for("three errors counted", |s| s["canary"]["errors"] == 3)
        .await;
    assert_eq!(
        counted["canary"]["endsAt"], canary["endsAt"],
        "the end of the window does not move"
    );
    for i in 3..12 {
        ask(i).await;
    }
    let back = sup
        .wait_for("the rollback to known-good", |s| {
            s["state"] == "healthy" && s["worker"]["release"] == "0"
        })
        .await;
    assert_eq!(back["releases"]["current"], "0");
    assert_eq!(
        back["releases"]["knownGood"], "0",
        "the bad one never became known-good"
    );
    assert!(back["canary"].is_null(), "no trial any more: {back}");
    let rollback = events(&back)
        .into_iter()
        .find(|(k, _)| k == "rollback")
        .expect("a rollback event");
    assert!(rollback.1.contains("server faults"), "{rollback:?}");
}

#[tokio::test]
async fn a_release_that_survives_its_canary_window_becomes_known_good_and_rollback_returns_to_it() {
    let home = Home::new();
    home.config("[supervisor]\ncanary_window_ms = 1500\n");
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let mut phone = sup.client().await;
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", chroxy_bin()]).await;
    assert!(ok.success(), "{out}{err}");
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    // The old worker drains: the connected phone is told to come back.
    let notice = phone.until_type("server_shutdown").await;
    assert_eq!(notice["reason"], "restart");
    let promoted = sup
        .wait_for("promotion to known-good", |s| {
            s["releases"]["knownGood"] == id.as_str()
        })
        .await;
    assert_eq!(promoted["worker"]["release"], id.as_str());
    assert!(events(&promoted).iter().any(|(k, _)| k == "promoted"));
    assert!(
        promoted["canary"].is_null(),
        "known-good is no canary: {promoted}"
    );
    sup.client().await;

    // `chroxy releases` lists both, marked.
    let (_, list, _) = cli(&home, &["releases"]).await;
    assert!(
        list.lines()
            .any(|l| l.starts_with(&id) && l.contains("current") && l.contains("known-good")),
        "{list}"
    );

    // Roll back by hand to release 0: a pointer switch and a restart.
    let (ok, out, err) = cli(&home, &["rollback", "--to", "0"]).await;
    assert!(ok.success(), "{out}{err}");
    let back = sup
        .wait_for("release 0 serving", |s| {
            s["state"] == "healthy" && s["worker"]["release"] == "0"
        })
        .await;
    assert_eq!(back["releases"]["current"], "0");
    // An unknown release is refused with a clear message, nothing stopped.
    let (ok, _, err) = cli(&home, &["rollback", "--to", "77-nothere"]).await;
    assert!(!ok.success());
    assert!(
        err.contains("77-nothere") && err.contains("chroxy releases"),
        "{err}"
    );
}

#[tokio::test]
async fn a_turn_that_ends_on_the_old_worker_during_a_deploy_is_in_the_new_workers_history() {
    let home = Home::new();
    let model = Model::start().await;
    let sup = Sup::start(&home, WorkerOpts::real_cli(&model)).await;
    sup.healthy().await;
    let mut phone = sup.client().await;
    // A turn that is still running when the new release starts, loads the sessions,
    // and takes over: the old worker's drain lets it finish and saves it.
    let slow = "SLOW 150 one two three four five six seven eight nine ten";
    phone.send(json!({"type": "input", "data": slow})).await;
    phone.until(|v| v["type"] == "agent_busy").await;
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", chroxy_bin()]).await;
    assert!(ok.success(), "{out}{err}");
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    phone.until_type("server_shutdown").await;
    sup.wait_for("the old worker gone, the new one serving", |s| {
        s["worker"]["release"] == id.as_str()
            && events(s)
                .iter()
                .any(|(k, m)| k == "worker_stopped" && m.contains("release 0"))
    })
    .await;
    let expected = "one two three four five six seven eight nine ten";
    let history = eventually("the turn finished on the old worker replayed", async || {
        let history = replayed(&sup).await;
        if history.iter().any(|m| m == expected) {
            Ok(history)
        } else {
            Err(format!("{history:?}\nlog:\n{}", sup.log_text()))
        }
    })
    .await;
    assert!(history.iter().any(|m| m == slow), "{history:?}");
    // And it stays: the next turn on the new worker saves on top of it.
    let mut phone = sup.client().await;
    phone.turn("REPLY after the deploy").await;
    let history = replayed(&sup).await;
    assert!(
        history.iter().any(|m| m == expected) && history.iter().any(|m| m == "after the deploy"),
        "{history:?}"
    );
}

/// The kinds of the status's events, oldest first.
fn kinds(status: &Value) -> Vec<String> {
    events(status).into_iter().map(|(k, _)| k).collect()
}

#[tokio::test]
async fn a_deploy_from_a_script_changes_nothing_until_a_person_approves_it_at_a_terminal() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let before = sup.healthy().await;
    let mut phone = sup.client().await;
    // Not at a terminal: a script, a pipe, a job.
    let (ok, out, err) = cli(&home, &["deploy", chroxy_bin()]).await;
    assert!(ok.success(), "{out}{err}");
    assert!(out.contains("awaits approval"), "{out}");
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    let held = sup
        .wait_for("the deploy to wait for approval", |s| {
            s["pendingDeploy"]["release"] == id.as_str()
        })
        .await;
    let pending = &held["pendingDeploy"];
    assert_eq!(pending["origin"], "remote");
    assert_eq!(pending["version"], env!("CARGO_PKG_VERSION"), "{pending}");
    let (asked, expires) = (
        pending["requestedAt"].as_u64().unwrap(),
        pending["expiresAt"].as_u64().unwrap(),
    );
    assert!(
        expires.abs_diff(asked + 600_000) <= 2,
        "ten minutes: {pending}"
    );
    // What serves is untouched, and so is the phone connected to it.
    assert_eq!(held["worker"]["pid"], before["worker"]["pid"]);
    assert_eq!(held["releases"]["current"], "0");
    assert!(held["canary"].is_null());
    phone.send(json!({"type": "list_sessions"})).await;
    phone.until_type("session_list").await;
    assert!(
        !phone.seen.iter().any(|v| v["type"] == "server_shutdown"),
        "the phone was told nothing"
    );
    // A second one while it waits is refused, and says which one waits.
    let (ok, out, err) = cli(&home, &["deploy", bad_worker_bin()]).await;
    assert!(!ok.success(), "{out}{err}");
    assert!(
        err.contains(&format!("release {id} already awaits approval")),
        "{err}"
    );
    // A script cannot answer it with the CLI either.
    let (ok, out, err) = cli(&home, &["deploy", "--approve"]).await;
    assert!(!ok.success(), "{out}{err}");
    assert!(err.contains("at a terminal"), "{err}");
    let still = sup.status().await;
    assert_eq!(still["pendingDeploy"]["release"], id.as_str());
    assert_eq!(still["worker"]["pid"], before["worker"]["pid"]);

    // A person at a terminal approves it: exactly the canary deploy of the desk.
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", "--approve"]).await;
    assert!(ok.success(), "{out}{err}");
    assert!(
        out.contains(&format!("release {id}")) && out.contains("approved"),
        "{out}"
    );
    let notice = phone.until_type("server_shutdown").await;
    assert_eq!(notice["reason"], "restart");
    let serving = sup
        .wait_for("the approved release to serve as a canary", |s| {
            s["canary"]["release"] == id.as_str()
        })
        .await;
    assert!(serving["pendingDeploy"].is_null(), "{serving}");
    assert_eq!(serving["releases"]["current"], id.as_str());
    assert_eq!(serving["releases"]["knownGood"], "0");
    let kinds = kinds(&serving);
    let at = |k: &str| {
        kinds
            .iter()
            .position(|x| x == k)
            .unwrap_or_else(|| panic!("no {k}: {kinds:?}"))
    };
    assert!(at("deploy_pending") < at("deploy_approved") && at("deploy_approved") < at("deployed"));
    assert!(
        kinds.iter().any(|k| k == "deploy_refused"),
        "the second one is shown too"
    );
}

#[tokio::test]
async fn a_deploy_refused_on_the_status_page_is_never_promoted() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let before = sup.healthy().await;
    let mut phone = sup.client().await;
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    let m = releases.add(std::path::Path::new(chroxy_bin())).unwrap();
    // `curl` with the admin token: remote, whatever it is.
    let deploy = json!({ "release": m.id }).to_string();
    let (code, answer) = sup.post("deploy", None, &deploy).await;
    assert_eq!(code, 200, "{answer}");
    assert!(answer["message"]
        .as_str()
        .unwrap()
        .contains("awaits approval"));
    sup.wait_for("the deploy to wait", |s| {
        s["pendingDeploy"]["release"] == m.id.as_str()
    })
    .await;
    // An answer about another release than the one waiting is refused.
    let (code, answer) = sup
        .post(
            "deploy/refuse",
            None,
            &json!({"release": "9-other"}).to_string(),
        )
        .await;
    assert_eq!(code, 409, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains(m.id.as_str()),
        "{answer}"
    );
    // Without the admin token nothing is answered.
    let (code, _) = sup.post("deploy/approve", Some("not-the-token"), "").await;
    assert_eq!(code, 401);
    let (code, answer) = sup
        .post("deploy/refuse", None, &json!({"release": m.id}).to_string())
        .await;
    assert_eq!(code, 200, "{answer}");
    let after = sup
        .wait_for("the refusal", |s| s["pendingDeploy"].is_null())
        .await;
    assert!(
        kinds(&after).iter().any(|k| k == "deploy_refused"),
        "{after}"
    );
    assert_eq!(after["worker"]["pid"], before["worker"]["pid"]);
    assert_eq!(after["releases"]["current"], "0");
    assert_eq!(after["releases"]["knownGood"], "0");
    assert!(
        after["releases"]["list"]
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["id"] == m.id.as_str()),
        "it stays in the store"
    );
    // Nothing is left to approve, and the phone never noticed.
    let (code, answer) = sup.post("deploy/approve", None, "").await;
    assert_eq!(code, 409);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("no deploy awaits approval"));
    phone.send(json!({"type": "list_sessions"})).await;
    phone.until_type("session_list").await;
    assert!(!phone.seen.iter().any(|v| v["type"] == "server_shutdown"));
    assert_eq!(sup.status().await["worker"]["pid"], before["worker"]["pid"]);
}

#[tokio::test]
async fn a_tampered_release_is_refused() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    // Added while the supervisor runs: it is deployed (or held) at once, so add it "offline"
    // through the library, then damage it.
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    let m = releases.add(std::path::Path::new(chroxy_bin())).unwrap();
    let mut binary = std::fs::OpenOptions::new()
        .append(true)
        .open(&m.binary)
        .unwrap();
    std::io::Write::write_all(&mut binary, b"tampered").unwrap();
    drop(binary);
    let (code, answer) = sup
        .post("rollback", None, &json!({"to": m.id}).to_string())
        .await;
    assert_eq!(code, 422, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("checksum"),
        "{answer}"
    );
    let s = sup.status().await;
    assert_eq!(s["state"], "healthy");
    assert_eq!(s["releases"]["current"], "0");
}

#[tokio::test]
async fn a_crash_loop_rolls_back_then_fails_when_known_good_crashes_too_and_then_stays_idle() {
    let home = Home::new();
    home.config(CRASH_FAST);
    // Two bad releases added while nothing runs: one is made known-good (as if it had
    // once survived its window), the newer one is current.
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    releases
        .ensure_installed(std::path::Path::new(chroxy_bin()))
        .unwrap();
    let good = releases
        .add(std::path::Path::new(bad_worker_bin()))
        .unwrap();
    releases.set_known_good(&good.id).unwrap();
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", bad_worker_bin()]).await;
    assert!(
        ok.success() && out.contains("next `chroxy start`"),
        "{out}{err}"
    );
    let newest = releases.current().unwrap();
    assert_ne!(newest, good.id);

    let sup = Sup::start(
        &home,
        WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", "crash"),
    )
    .await;
    let failed = sup.wait_for("failed", |s| s["state"] == "failed").await;
    let kinds = events(&failed);
    let rollback = kinds
        .iter()
        .find(|(k, _)| k == "rollback")
        .expect("rolled back first");
    assert!(
        rollback.1.contains(newest.as_str()) && rollback.1.contains(good.id.as_str()),
        "{rollback:?}"
    );
    let reason = failed["failedReason"].as_str().unwrap();
    assert!(
        reason.contains(good.id.as_str()) && reason.contains("known-good"),
        "{reason}"
    );
    assert_eq!(failed["releases"]["current"], good.id.as_str());

    // The public port says so instead of hanging.
    let (code, body) = http(sup.public, "GET", "/health", &[], "").await;
    assert_eq!(code, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["status"],
        "restarting"
    );
    // `chroxy status` says so.
    let (_, out, _) = cli(&home, &["status"]).await;
    assert!(
        out.contains("failed") && out.contains("known-good"),
        "{out}"
    );

    // Idle: no worker is started again and the supervisor burns no CPU.
    let restarts = failed["worker"]["restarts"].clone();
    let before = cpu_ticks(sup.pid());
    let window = tokio::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(1)).await; // a measurement window, not a wait
    let used = cpu_ticks(sup.pid()) - before;
    let elapsed = window.elapsed();
    assert!(used <= 5, "{used} ticks of CPU in {elapsed:?} while failed");
    assert!(
        children_of(sup.pid()).is_empty(),
        "a worker was started while failed"
    );
    let still = sup.status().await;
    assert_eq!(still["state"], "failed");
    assert_eq!(still["worker"]["restarts"], restarts);
}

#[tokio::test]
async fn a_worker_that_stops_its_heartbeats_is_killed_and_its_release_rolled_back() {
    let home = Home::new();
    home.config("[worker]\nheartbeat_ms = 100\n[supervisor]\nheartbeat_misses = 3\n");
    let sup = Sup::start(
        &home,
        WorkerOpts::fake_cli()
            .env("CHROXY_BAD_MODE", "hang")
            .env("CHROXY_BAD_HEARTBEAT_MS", "100"),
    )
    .await;
    sup.healthy().await;
    let id = deploy_bad(&home).await;
    let back = sup
        .wait_for("the hung canary to be replaced by known-good", |s| {
            events(s).iter().any(|(k, _)| k == "rollback")
                && s["state"] == "healthy"
                && s["worker"]["release"] == "0"
        })
        .await;
    let kinds = events(&back);
    let hung = kinds
        .iter()
        .find(|(k, _)| k == "worker_hung")
        .expect("a worker_hung event");
    assert!(
        hung.1.contains(&id) && hung.1.contains("heartbeats"),
        "{hung:?}"
    );
    assert_eq!(back["releases"]["current"], "0");
}

#[tokio::test]
async fn a_second_sigterm_stops_waiting_for_the_drain() {
    let home = Home::new();
    home.config("[supervisor]\ndrain_idle_ms = 600000\n");
    let model = Model::start().await;
    let mut sup = Sup::start(&home, WorkerOpts::real_cli(&model)).await;
    let status = sup.healthy().await;
    let worker = worker_pid(&status) as u32;
    let mut c = sup.client().await;
    // A turn that would take minutes, and a drain willing to wait ten: only the second
    // signal can make the supervisor exit within the harness's wait.
    c.send(json!({"type": "input", "data": "SLOW 60000 a very slow answer that nobody waits for"}))
        .await;
    c.until(|v| v["type"] == "agent_busy").await;
    sup.signal(Signal::SIGTERM);
    sup.wait_for("draining", |s| s["state"] == "draining").await;
    sup.signal(Signal::SIGTERM);
    sup.exited().await;
    assert!(!alive(worker));
}

#[tokio::test]
async fn sigterm_during_a_turn_tells_the_phone_saves_the_turn_and_exits_0_leaving_nothing_behind() {
    let home = Home::new();
    let model = Model::start().await;
    let mut sup = Sup::start(&home, WorkerOpts::real_cli(&model)).await;
    let status = sup.healthy().await;
    let worker = worker_pid(&status) as u32;
    let mut c = sup.client().await;
    c.turn("REPLY first turn").await;
    c.send(json!({"type": "input", "data": "SLOW 100 one two three four five six"}))
        .await;
    c.until(|v| v["type"] == "agent_busy").await;
    sup.signal(Signal::SIGTERM);
    let notice = c.until_type("server_shutdown").await;
    assert_eq!(notice["reason"], "shutdown");
    let exit = sup.exited().await;
    assert_eq!(exit.code(), Some(0), "log:\n{}", sup.log_text());
    assert!(!alive(worker), "the worker outlived its supervisor");
    let saved: String = files_under(&home.sessions_dir())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        saved.contains("SLOW 100 one two three"),
        "the running turn's input was not saved"
    );
    assert!(saved.contains("first turn"));
    let leftovers: Vec<_> = files_under(&home.chroxy())
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            name.starts_with(".tmp") || name == "supervisor.lock" || name == "supervisor.json"
        })
        .collect();
    assert!(leftovers.is_empty(), "left behind: {leftovers:?}");
}

#[tokio::test]
async fn when_the_supervisor_is_killed_its_worker_exits_by_itself_and_the_next_start_is_clean() {
    let home = Home::new();
    let mut sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let status = sup.healthy().await;
    let worker = worker_pid(&status) as u32;
    sup.signal(Signal::SIGKILL);
    sup.exited().await;
    eventually("the orphaned worker exits", async || {
        holds(!alive(worker), format!("worker {worker} still runs"))
    })
    .await;
    let next = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let s = next.healthy().await;
    assert_ne!(worker_pid(&s) as u32, worker);
    next.client().await;
}

#[tokio::test]
async fn one_supervisor_per_home_and_the_second_names_the_first() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let (ok, out, err) = cli(&home, &["start", "--port", "0", "--status-port", "0"]).await;
    assert!(!ok.success(), "{out}");
    assert!(
        err.contains("already running")
            && err.contains(&format!("pid {}", sup.pid()))
            && err.contains(&sup.public.to_string())
            && err.contains(&sup.status.to_string()),
        "{err}"
    );
}

#[tokio::test]
async fn status_json_follows_each_transition_and_actions_need_the_admin_token() {
    let home = Home::new();
    let sup = Sup::start_args(&home, WorkerOpts::fake_cli(), &["--demo"]).await;
    let first = sup.healthy().await;
    for key in [
        "state",
        "worker",
        "releases",
        "tunnel",
        "clients",
        "secretsBackend",
        "events",
    ] {
        assert!(first.get(key).is_some(), "status lacks {key}: {first:#}");
    }
    assert_eq!(first["demo"], true, "the demo marker");
    assert_eq!(first["releases"]["current"], "0");
    assert_eq!(first["releases"]["list"][0]["id"], "0");
    let pid = worker_pid(&first);

    // No token, a wrong token, a foreign origin: refused, nothing happens.
    let (code, _) = http(sup.status, "POST", "/api/restart", &[], "").await;
    assert_eq!(code, 401);
    let (code, _) = sup.post("restart", Some("wrong-token"), "").await;
    assert_eq!(code, 401);
    let admin = sup.admin();
    let (code, _) = http(
        sup.status,
        "POST",
        "/api/restart",
        &[
            ("X-Chroxy-Admin", admin.as_str()),
            ("Origin", "https://evil.example"),
        ],
        "",
    )
    .await;
    assert_eq!(code, 403);
    assert_eq!(worker_pid(&sup.status().await), pid);

    // Every phone is told it talks to the demo model.
    let mut phone = sup.client().await;
    let notice = phone
        .until(|v| v["type"] == "message" && v["messageType"] == "system")
        .await;
    assert!(
        notice["content"].as_str().unwrap().contains("DEMO"),
        "{notice}"
    );
    // The phone is counted on the status page.
    sup.wait_for("one client", |s| s["clients"] == 1).await;
    drop(phone);

    // Restart: restarting → healthy with a new worker.
    let (code, answer) = sup.post("restart", None, "").await;
    assert_eq!(code, 200, "{answer}");
    let s = sup
        .wait_for("a restarted worker", |s| {
            s["state"] == "healthy" && s["worker"]["pid"].as_u64() != Some(pid)
        })
        .await;
    assert!(events(&s).iter().any(|(k, _)| k == "restart_requested"));
    assert_eq!(s["worker"]["restarts"], 1);

    // Reconnect: phones are told to come back at once; the worker stays.
    let mut phone = sup.client().await;
    let (code, _) = sup.post("reconnect", None, "").await;
    assert_eq!(code, 200);
    let notice = phone.until_type("server_shutdown").await;
    assert_eq!(notice["reason"], "restart");
    sup.client_coming_back().await;

    // The status CLI agrees with the page.
    let (ok, out, _) = cli(&home, &["status", "--json"]).await;
    assert!(ok.success());
    let cli_status: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(cli_status["state"], "healthy");
    assert_eq!(cli_status["demo"], true);
    let (_, out, _) = cli(&home, &["status"]).await;
    assert!(out.contains("healthy") && out.contains("DEMO"), "{out}");
    assert!(!sup.log_text().contains(TOKEN), "the token reached the log");
    assert!(
        !sup.log_text().contains(&admin),
        "the admin token reached the log"
    );
}

#[tokio::test]
async fn status_of_a_home_where_nothing_runs_says_so() {
    let home = Home::new();
    let (ok, out, _) = cli(&home, &["status"]).await;
    assert_eq!(ok.code(), Some(3));
    assert!(out.contains("not running"), "{out}");
    let (_, out, _) = cli(&home, &["status", "--json"]).await;
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "stopped");
}

/// Adds `binary` to the store of `home` while nothing runs; returns its manifest.
fn add_release(home: &Home, binary: &str) -> chroxy::supervisor::release::Manifest {
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    releases
        .ensure_installed(std::path::Path::new(chroxy_bin()))
        .unwrap();
    releases.add(std::path::Path::new(binary)).unwrap()
}

/// Replaces a release's binary by a longer copy (a running one's file cannot be written
/// to): it no longer matches its manifest's checksum.
fn tamper(binary: &std::path::Path) {
    let mut bytes = std::fs::read(binary).unwrap();
    bytes.extend_from_slice(b"tampered");
    let copy = binary.with_extension("tampered");
    std::fs::write(&copy, bytes).unwrap();
    std::fs::rename(&copy, binary).unwrap();
}

fn damaged_of<'a>(status: &'a Value, id: &str) -> Option<&'a str> {
    status["releases"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id)
        .and_then(|r| r["damaged"].as_str())
}

#[tokio::test]
async fn damaged_old_releases_are_reported_and_never_stop_the_supervisor() {
    let home = Home::new();
    let garbled = add_release(&home, chroxy_bin());
    let stripped = add_release(&home, chroxy_bin());
    let manifest = garbled.binary.parent().unwrap().join("manifest.json");
    std::fs::write(&manifest, b"{\"id\": \"half a manif").unwrap();
    std::fs::remove_file(&stripped.binary).unwrap();

    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let s = sup.healthy().await;
    assert_eq!(s["worker"]["release"], "0");
    for (id, what) in [(&garbled.id, "manifest"), (&stripped.id, "binary")] {
        let why = damaged_of(&s, id).unwrap_or_else(|| panic!("{id} not marked damaged: {s:#}"));
        assert!(why.contains(what) && why.contains(id.as_str()), "{why}");
        assert!(
            events(&s)
                .iter()
                .any(|(k, m)| k == "release_damaged" && m.contains(id.as_str())),
            "{:?}",
            events(&s)
        );
    }
    assert!(damaged_of(&s, "0").is_none());
    let (ok, list, err) = cli(&home, &["releases"]).await;
    assert!(ok.success(), "{err}");
    for id in [&garbled.id, &stripped.id] {
        assert!(
            list.lines()
                .any(|l| l.starts_with(id.as_str()) && l.contains("DAMAGED")),
            "{list}"
        );
    }
    // A rollback to one is refused before anything stops.
    let (ok, _, err) = cli(&home, &["rollback", "--to", &garbled.id]).await;
    assert!(!ok.success());
    assert!(
        err.contains(garbled.id.as_str()) && err.contains("damaged"),
        "{err}"
    );
    assert_eq!(sup.status().await["worker"]["pid"], s["worker"]["pid"]);
}

#[tokio::test]
async fn a_damaged_current_release_falls_back_to_known_good_then_to_release_zero() {
    let home = Home::new();
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    let good = add_release(&home, chroxy_bin());
    let new = add_release(&home, chroxy_bin());
    releases.set_known_good(&good.id).unwrap();
    releases.set_current(&new.id).unwrap();
    tamper(&new.binary);

    let mut sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let s = sup.healthy().await;
    assert_eq!(s["worker"]["release"], good.id.as_str(), "{s:#}");
    assert_eq!(s["releases"]["current"], good.id.as_str());
    assert!(damaged_of(&s, &new.id).is_some(), "{s:#}");
    assert!(
        events(&s).iter().any(|(k, m)| k == "rollback"
            && m.contains(&format!("{} is damaged", new.id))
            && m.contains(good.id.as_str())),
        "{:?}",
        events(&s)
    );
    sup.signal(Signal::SIGTERM);
    sup.exited().await;

    // Known-good damaged as well (its manifest gone): release 0, both pointers there.
    std::fs::write(paths.releases_dir().join("current"), new.id.as_str()).unwrap();
    std::fs::remove_file(good.binary.parent().unwrap().join("manifest.json")).unwrap();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let s = sup.healthy().await;
    assert_eq!(s["worker"]["release"], "0", "{s:#}");
    assert_eq!(s["releases"]["current"], "0");
    assert_eq!(s["releases"]["knownGood"], "0");
    let why = damaged_of(&s, &good.id).expect("known-good marked damaged");
    assert!(why.contains("no manifest"), "{why}");
    assert!(
        events(&s)
            .iter()
            .any(|(k, m)| k == "rollback" && m.contains("starting release 0")),
        "{:?}",
        events(&s)
    );
}

#[tokio::test]
async fn in_failed_one_sigterm_stops_the_supervisor_at_once_and_in_order() {
    let home = Home::new();
    home.config(CRASH_FAST);
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    let good = add_release(&home, bad_worker_bin());
    let new = add_release(&home, bad_worker_bin());
    releases.set_known_good(&good.id).unwrap();
    releases.set_current(&new.id).unwrap();
    let mut sup = Sup::start(
        &home,
        WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", "errors"),
    )
    .await;
    let s = sup.healthy().await;
    // Both releases are damaged on disk while one serves; then its worker dies: every
    // start fails its checksum, the supervisor rolls back, then gives up.
    tamper(&new.binary);
    tamper(&good.binary);
    let pid = worker_pid(&s) as i32;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL).unwrap();
    let failed = sup.wait_for("failed", |s| s["state"] == "failed").await;
    assert!(
        failed["failedReason"]
            .as_str()
            .unwrap()
            .contains("checksum"),
        "{failed:#}"
    );

    let asked = std::time::Instant::now();
    sup.signal(Signal::SIGTERM);
    let exit = sup.exited().await;
    let took = asked.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "one SIGTERM took {took:?} to stop it"
    );
    assert_eq!(exit.code(), Some(0), "log:\n{}", sup.log_text());
    let log = sup.log_text();
    let (stopping, stopped) = (log.find("stopping:"), log.rfind("supervisor stopped"));
    assert!(
        stopping.is_some() && stopped > stopping,
        "an orderly stop, in order; log:\n{log}"
    );
    assert!(
        chroxy::supervisor::instance::running(&paths).is_none(),
        "the instance is released"
    );
}

#[tokio::test]
async fn a_client_sending_a_thousand_bad_frames_during_the_canary_window_vetoes_nothing() {
    let home = Home::new();
    home.config("[supervisor]\ncanary_window_ms = 8000\ncanary_error_limit = 10\n");
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", chroxy_bin()]).await;
    assert!(ok.success(), "{out}{err}");
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    sup.wait_for("the new release on trial", |s| {
        s["canary"]["release"] == id.as_str()
    })
    .await;
    // A newer client (types this release does not know) or a hostile one: its frames
    // are refused, one by one, and none of that is the release's fault.
    let mut phone = Client::connect(sup.public).await;
    assert_eq!(phone.auth(TOKEN).await["type"], "auth_ok");
    let frames: Vec<String> = (0..1000)
        .map(|i| match i % 10 {
            0 => json!({"type": "input"}).to_string(), // a missing field
            _ => json!({"type": format!("from_the_future_{i}")}).to_string(),
        })
        .collect();
    // In batches a phone's outbound queue holds.
    for batch in frames.chunks(100) {
        for frame in batch {
            phone
                .send_raw(tokio_tungstenite::tungstenite::Message::text(frame.clone()))
                .await;
        }
        let mut refused = 0;
        while refused < batch.len() {
            let v = phone.recv().await;
            if v["type"] == "error" {
                assert!(
                    v["code"] == "UNKNOWN_TYPE" || v["code"] == "INVALID_MESSAGE",
                    "{v}"
                );
                refused += 1;
            }
        }
    }
    let during = sup.status().await;
    assert_eq!(
        during["canary"]["release"],
        id.as_str(),
        "all refused within the window: {during:#}"
    );
    let promoted = sup
        .wait_for("promotion to known-good", |s| {
            s["releases"]["knownGood"] == id.as_str()
                || events(s).iter().any(|(k, _)| k == "rollback")
        })
        .await;
    assert_eq!(
        promoted["releases"]["knownGood"],
        id.as_str(),
        "{:?}",
        events(&promoted)
    );
    assert_eq!(promoted["worker"]["release"], id.as_str());
    assert!(events(&promoted).iter().any(|(k, _)| k == "promoted"));
}

/// The JSON lines of a fixture's log (`FAKE_CLAUDE_LOG`, `FAKE_CF_LOG`).
fn log_lines(log: &std::path::Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

#[tokio::test]
async fn a_killed_workers_agents_and_their_children_are_gone_before_a_new_cli_resumes_the_session()
{
    let home = Home::new();
    // Without a standby nobody adopts the CLI (see `..._finishes_that_turn_...`): it
    // goes with its worker.
    home.config("[supervisor]\nstandby = false\n");
    let log = home.dir.path().join("claude.jsonl");
    let opts = WorkerOpts::fake_cli().env("FAKE_CLAUDE_LOG", log.to_str().unwrap());
    let sup = Sup::start(&home, opts).await;
    let s = sup.healthy().await;
    let mut phone = sup.client().await;
    // The agent starts children in its group, in a group and in a session of their
    // own, and stays busy: it would run on after its worker, stdin closed or not.
    phone
        .send(json!({"type": "input", "data": "ORPHANS"}))
        .await;
    phone.until(|v| v["type"] == "agent_busy").await;
    eventually("the agent's children started", async || {
        let lines = log_lines(&log);
        holds(
            lines.iter().any(|l| l["children"].is_array()),
            format!("{lines:?}"),
        )
    })
    .await;
    // Its Claude Code session is on disk, for the next worker to resume.
    let session = log_lines(&log)
        .iter()
        .find_map(|l| l["session"].as_str().map(str::to_owned))
        .unwrap();
    eventually("the agent's session saved", async || {
        let files = files_under(&home.sessions_dir());
        holds(
            files
                .iter()
                .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(&session))),
            format!("session files {files:?}"),
        )
    })
    .await;
    let old: Vec<u32> = log_lines(&log)
        .iter()
        .flat_map(|l| {
            let children = l["children"].as_array().cloned().unwrap_or_default();
            children.into_iter().chain([l["pid"].clone()])
        })
        .filter_map(|p| p.as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(old.len(), 5, "{old:?}"); // the CLI's two lines, three children
    let pid = worker_pid(&s);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    phone.closed().await;
    sup.wait_for("a new healthy worker", |s| {
        s["state"] == "healthy" && s["worker"]["pid"].as_u64() != Some(pid)
    })
    .await;
    let mut phone = sup.client().await;
    let frames = phone.turn("after the kill").await;
    assert_eq!(common::streamed_text(&frames), "after the kill");
    let starts: Vec<Value> = log_lines(&log)
        .into_iter()
        .filter(|l| l["args"].is_array())
        .collect();
    assert_eq!(starts.len(), 2, "{starts:?}");
    let resumed = &starts[1];
    let args = resumed["args"].as_array().unwrap();
    assert!(
        args.windows(2)
            .any(|w| w[0] == "--resume" && w[1] == session.as_str()),
        "the new CLI resumes the session: {resumed}"
    );
    assert_eq!(
        resumed["alive"],
        json!([]),
        "a new CLI resumed the session while the old one or its children still ran\nlog:\n{}",
        sup.log_text()
    );
    for pid in old {
        assert!(!alive(pid), "{pid} outlived its worker");
    }
}

#[tokio::test]
async fn after_the_supervisor_is_killed_the_next_start_leaves_exactly_one_cloudflared() {
    let home = Home::new();
    let log = home.dir.path().join("cloudflared.jsonl");
    let opts = || {
        WorkerOpts::fake_cli()
            .env("CHROXY_CLOUDFLARED", fake_cloudflared_bin())
            .env("FAKE_CF_LOG", log.to_str().unwrap())
    };
    let tunnel_up = |s: &Value| s["tunnel"]["state"] == "up";
    let mut sup = Sup::start_args(&home, opts(), &["--tunnel", "quick"]).await;
    sup.wait_for("the tunnel up", tunnel_up).await;
    let first = log_lines(&log)[0]["pid"].as_u64().unwrap() as u32;
    sup.signal(Signal::SIGKILL);
    sup.exited().await;
    assert!(
        alive(first),
        "cloudflared is its own process group: it runs on"
    );

    let sup = Sup::start_args(&home, opts(), &["--tunnel", "quick"]).await;
    sup.wait_for("the tunnel up again", tunnel_up).await;
    let runs: Vec<u32> = log_lines(&log)
        .iter()
        .filter_map(|l| l["pid"].as_u64().map(|p| p as u32))
        .collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    assert!(
        !alive(first),
        "the old tunnel still runs beside the new one"
    );
    assert!(alive(runs[1]));
}

#[tokio::test]
async fn a_config_made_invalid_while_running_is_named_waited_out_and_picked_up_once_fixed() {
    let home = Home::new();
    let good = "[supervisor]\nbackoff_floor_ms = 50\nbackoff_cap_ms = 300\ncrash_budget = 1\ncanary_window_ms = 600000\n";
    home.config(good);
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    // A release on trial, which crashes would roll back.
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", chroxy_bin()]).await;
    assert!(ok.success(), "{out}{err}");
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    sup.wait_for("the new release serving", |s| {
        s["state"] == "healthy" && s["worker"]["release"] == id.as_str()
    })
    .await;
    // A typo made while it runs, and a restart.
    home.config(&format!("{good}bakcoff_floor_ms = 50\n"));
    let (code, answer) = sup.post("restart", None, "").await;
    assert_eq!(code, 200, "{answer}");
    let failed = sup
        .wait_for("failed, with the reason", |s| s["state"] == "failed")
        .await;
    let reason = failed["failedReason"].as_str().unwrap();
    let file = home.chroxy().join("config/config.toml");
    for part in [
        file.to_str().unwrap(),
        "line 6",
        "bakcoff_floor_ms",
        "fix the file",
    ] {
        assert!(reason.contains(part), "{part:?} missing from: {reason}");
    }
    assert!(!reason.contains("exit status 1"), "{reason}");
    // Not the release's fault: nothing is counted against it, nothing rolled back.
    assert_eq!(failed["releases"]["current"], id.as_str());
    let kinds = events(&failed);
    assert!(!kinds.iter().any(|(k, _)| k == "rollback"), "{kinds:?}");
    assert_eq!(
        kinds.iter().filter(|(k, _)| k == "config_invalid").count(),
        1,
        "{kinds:?}"
    );
    // Fixed: picked up by itself.
    home.config(good);
    let back = sup
        .wait_for("healthy again", |s| s["state"] == "healthy")
        .await;
    assert_eq!(back["worker"]["release"], id.as_str());
    assert_eq!(back["releases"]["current"], id.as_str());
}

#[tokio::test]
async fn a_promotion_prunes_all_but_the_newest_releases_current_known_good_and_zero() {
    let home = Home::new();
    home.config("[supervisor]\ncanary_window_ms = 300\nkeep_releases = 2\n");
    // History: four older releases (never run here).
    let old: Vec<String> = (0..4)
        .map(|_| add_release(&home, bad_worker_bin()).id.to_string())
        .collect();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", chroxy_bin()]).await;
    assert!(ok.success(), "{out}{err}");
    let id = out.split_whitespace().nth(2).unwrap().to_owned();
    let promoted = sup
        .wait_for("promotion, then the prune", |s| {
            s["releases"]["knownGood"] == id.as_str()
                && events(s).iter().any(|(k, _)| k == "releases_pruned")
        })
        .await;
    let listed: Vec<&str> = promoted["releases"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["0", old[3].as_str(), id.as_str()], "{promoted:#}");
    let releases_dir = chroxy::store::Paths::under(home.chroxy()).releases_dir();
    for gone in &old[..3] {
        assert!(!releases_dir.join(gone).exists(), "{gone} is still on disk");
    }
    let (_, list, _) = cli(&home, &["releases"]).await;
    assert_eq!(list.lines().count(), 3, "{list}");
    // The serving release is untouched: a phone still gets through.
    sup.client().await;
}

/// Living processes running exactly `args` whose environment holds `HOME=home`.
fn processes_running(args: &[&str], home: &std::path::Path) -> Vec<u32> {
    let home_var = format!("HOME={}", home.display()).into_bytes();
    let wanted: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let argv: Vec<&[u8]> = cmdline
                .split(|&b| b == 0)
                .filter(|a| !a.is_empty())
                .collect();
            let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap_or_default();
            argv == wanted && env.split(|&b| b == 0).any(|v| v == home_var)
        })
        .filter(|&pid| alive(pid))
        .collect()
}

#[tokio::test]
async fn the_real_clis_bash_commands_die_with_their_killed_worker() {
    let home = Home::new();
    // Nobody to adopt the CLI: it and its commands go with the worker.
    home.config("[supervisor]\nstandby = false\n");
    let model = Model::start().await;
    let sup = Sup::start(&home, WorkerOpts::real_cli(&model)).await;
    let s = sup.healthy().await;
    let mut phone = sup.client().await;
    // Claude Code runs each Bash command in a session of its own (detached); `sleep`
    // is one it runs without asking.
    phone
        .send(json!({"type": "input", "data": "PLEASE_BASH sleep 987"}))
        .await;
    phone.until(|v| v["type"] == "tool_start").await;
    let tool = eventually("the Bash command running", async || {
        let tool = processes_running(&["sleep", "987"], &home.user_home());
        if tool.is_empty() {
            Err("no `sleep 987` process")
        } else {
            Ok(tool)
        }
    })
    .await;
    let pid = worker_pid(&s);
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
    sup.wait_for("a new healthy worker", |s| {
        s["state"] == "healthy" && s["worker"]["pid"].as_u64() != Some(pid)
    })
    .await;
    for pid in tool {
        assert!(!alive(pid), "the Bash command {pid} outlived its worker");
    }
}

/// How one attempt of a phone coming back ended.
enum Attempt {
    /// Authenticated.
    In,
    /// The connection ended with no answer at all: the one attempt the worker was
    /// answering when it was killed. A phone tries again at once: only a reconnect.
    Cut(String),
    /// Any answer but `auth_ok` ("restarting", an error, a refusal): what a phone shows.
    Refused(String),
}

/// One attempt of a phone coming back: connect through the public port and
/// authenticate.
async fn one_reconnect(port: u16) -> Attempt {
    use tokio_tungstenite::tungstenite::Error;
    let attempt = async {
        let mut c = match Client::try_connect(port).await {
            Ok(c) => c,
            Err(Error::Http(answer)) => return Attempt::Refused(format!("{}", answer.status())),
            Err(cut) => return Attempt::Cut(format!("connect: {cut}")),
        };
        c.send(
            json!({"type": "auth", "token": TOKEN, "deviceKey": common::DEVICE_KEY,
            "deviceInfo": {"deviceName": "test", "deviceType": "phone", "platform": "test"}}),
        )
        .await;
        match c.next().await {
            common::Next::Msg(answer) if answer["type"] == "auth_ok" => Attempt::In,
            common::Next::Msg(answer) => Attempt::Refused(format!("auth: {answer}")),
            common::Next::Closed(None) => Attempt::Cut("closed before any answer to auth".into()),
            common::Next::Closed(code) => Attempt::Refused(format!("closed with {code:?}")),
        }
    };
    tokio::time::timeout(Duration::from_secs(5), attempt)
        .await
        .unwrap_or_else(|_| Attempt::Refused("no answer within 5 s".into()))
}

fn session_names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_serving_worker_is_taken_over_by_its_standby_and_a_phone_retrying_every_10_ms_only_reconnects(
) {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let ready = sup
        .wait_for("the standby to be ready", |s| s["standby"]["ready"] == true)
        .await;
    let serving = worker_pid(&ready);
    assert_ne!(Some(serving), ready["standby"]["pid"].as_u64());
    assert!(
        ready["standby"]["rssBytes"].as_u64().unwrap() > 0,
        "its cost is shown: {ready:#}"
    );

    // A conversation, sessions the standby read when it started, one of them closed
    // since, and one made since: it must take over all of it as the lost worker left it.
    let mut phone = sup.client().await;
    phone.turn("said before the kill").await;
    let first = phone.active_session();
    let mut create = async |name: &str| {
        phone
            .send(json!({"type": "create_session", "name": name}))
            .await;
        let made = phone.until_type("session_switched").await;
        made["sessionId"].as_str().unwrap().to_owned()
    };
    create("made earlier").await;
    let closed = create("closed later").await;
    let sessions = home.sessions_dir();
    let saved = async |n: usize| {
        eventually("the sessions to be saved", async || {
            let files = std::fs::read_dir(&sessions).map(|d| d.count()).unwrap_or(0);
            holds(files == n, format!("{files} session files"))
        })
        .await
    };
    saved(3).await;
    // A new standby reads them.
    let standby = ready["standby"]["pid"].as_u64().unwrap();
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(standby as i32), Signal::SIGKILL).unwrap();
    let ready = sup
        .wait_for("a standby that read the sessions", |s| {
            s["standby"]["ready"] == true && s["standby"]["pid"] != standby
        })
        .await;
    let standby = ready["standby"]["pid"].as_u64().unwrap();
    phone
        .send(json!({"type": "destroy_session", "sessionId": closed}))
        .await;
    phone
        .until(|v| v["type"] == "session_list" && v["sessions"].as_array().unwrap().len() == 2)
        .await;
    phone
        .send(json!({"type": "create_session", "name": "made later"}))
        .await;
    phone.until_type("session_switched").await;
    phone
        .send(json!({"type": "switch_session", "sessionId": first}))
        .await;
    phone.until_type("history_replay_end").await;
    saved(3).await;

    // A phone that retries every 10 ms, from before the kill until well after it.
    let port = sup.public;
    let stop = tokio_util::sync::CancellationToken::new();
    let retrying = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut outcomes = Vec::new();
            while !stop.is_cancelled() {
                outcomes.push(one_reconnect(port).await);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            outcomes
        }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serving as i32), Signal::SIGKILL).unwrap();
    phone.closed().await;
    let after = sup
        .wait_for("the standby to serve and a new one to be ready", |s| {
            s["worker"]["pid"] == standby
                && s["standby"]["ready"] == true
                && s["standby"]["pid"] != standby
        })
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.cancel();
    let outcomes = retrying.await.unwrap();
    let (mut refused, mut cut) = (Vec::new(), Vec::new());
    for outcome in &outcomes {
        match outcome {
            Attempt::In => {}
            Attempt::Cut(why) => cut.push(why),
            Attempt::Refused(why) => refused.push(why),
        }
    }
    assert!(
        outcomes.len() >= 20 && refused.is_empty() && cut.len() <= 1,
        "{} attempts, cut: {cut:?}, refused: {refused:?}\nlog:\n{}",
        outcomes.len(),
        sup.log_text()
    );
    assert_eq!(after["state"], "healthy");
    assert_eq!(after["worker"]["restarts"], 1);
    assert!(
        events(&after)
            .iter()
            .any(|(k, m)| k == "worker_exited" && m.contains("its standby took over")),
        "{after:#}"
    );

    let mut back = sup.client().await;
    let from = back.seen.len();
    back.send(json!({"type": "switch_session", "sessionId": first}))
        .await;
    back.until_type("history_replay_end").await;
    let replay = messages(&back.seen[from..]);
    assert!(
        replay.contains(&"said before the kill".to_owned()),
        "{replay:?}"
    );
    back.send(json!({"type": "list_sessions"})).await;
    let list = back.until_type("session_list").await;
    let default = home
        .project()
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let mut expected = [default, "made earlier".to_owned(), "made later".to_owned()];
    expected.sort();
    assert_eq!(session_names(&list), expected);
}

/// The pids of the CLIs started so far, from `FAKE_CLAUDE_LOG`.
fn cli_starts(log: &std::path::Path) -> Vec<u64> {
    log_lines(log)
        .iter()
        .filter(|l| l["args"].is_array())
        .filter_map(|l| l["pid"].as_u64())
        .collect()
}

/// A home, and where `fake-claude` logs every start in it.
fn fake_cli_home() -> (Home, std::path::PathBuf) {
    let home = Home::new();
    let log = home.dir.path().join("claude.jsonl");
    (home, log)
}

/// `fake-claude`, logging to `log`.
fn logged_fake_cli(log: &std::path::Path) -> WorkerOpts {
    WorkerOpts::fake_cli().env("FAKE_CLAUDE_LOG", log.to_str().unwrap())
}

/// Once the standby is ready: the serving worker's pid, and a phone.
async fn serving_beside_a_ready_standby(sup: &Sup) -> (u64, Client) {
    let ready = sup
        .wait_for("the standby to be ready", |s| s["standby"]["ready"] == true)
        .await;
    (worker_pid(&ready), sup.client().await)
}

/// Kills the serving worker once its standby is ready, and waits until the standby
/// serves; returns the phone, come back.
async fn kill_the_serving_worker(
    sup: &Sup,
    phone: &mut common::Client,
    serving: u64,
) -> common::Client {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(serving as i32), Signal::SIGKILL).unwrap();
    phone.closed().await;
    let after = sup
        .wait_for("the standby to serve", |s| {
            s["state"] == "healthy" && s["worker"]["pid"].as_u64().is_some_and(|p| p != serving)
        })
        .await;
    assert!(
        events(&after)
            .iter()
            .any(|(k, m)| k == "worker_exited" && m.contains("its standby took over")),
        "{after:#}"
    );
    sup.client_coming_back().await
}

#[tokio::test(flavor = "multi_thread")]
async fn a_worker_killed_in_the_middle_of_a_streamed_turn_leaves_its_cli_to_the_standby_which_finishes_that_turn(
) {
    let (home, log) = fake_cli_home();
    let sup = Sup::start(&home, logged_fake_cli(&log)).await;
    let (serving, mut phone) = serving_beside_a_ready_standby(&sup).await;
    // 300 deltas 20 ms apart: six seconds of streaming, killed after the first.
    phone
        .send(json!({"type": "input", "data": "BENCH 300 20000"}))
        .await;
    phone.until(|v| v["type"] == "stream_delta").await;
    let cli = cli_starts(&log);
    assert_eq!(cli.len(), 1, "{cli:?}");
    let mut back = kill_the_serving_worker(&sup, &mut phone, serving).await;
    let from = back.seen.len();
    // The turn goes on: its answer reaches the phone that came back, then its result.
    let result = back.seen_or_until(|v| v["type"] == "result").await;
    assert_eq!(result["sessionId"], back.active_session().as_str());
    let answer = streamed_text(&back.seen[from..]);
    // All of it, the part streamed before the kill too: `<n>:<time>:<lateness>;` × 300.
    assert!(
        answer.starts_with("0:") && answer.contains(";299:"),
        "the whole answer reaches the phone: {answer:?}"
    );
    back.seen_or_until(|v| v["type"] == "agent_idle").await;
    // By the very process that began it, which serves the next turn too.
    assert_eq!(cli_starts(&log), cli, "no other CLI was started");
    assert!(alive(cli[0] as u32));
    let frames = back.turn("after the kill").await;
    assert_eq!(common::streamed_text(&frames), "after the kill");
    assert_eq!(cli_starts(&log), cli, "no other CLI was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permission_prompt_waiting_when_its_worker_is_killed_is_asked_again_and_the_same_cli_gets_the_answer(
) {
    let (home, log) = fake_cli_home();
    let sup = Sup::start(&home, logged_fake_cli(&log)).await;
    let (serving, mut phone) = serving_beside_a_ready_standby(&sup).await;
    phone
        .send(json!({"type": "input", "data": "PERMISSION"}))
        .await;
    let asked = phone.until_type("permission_request").await;
    let cli = cli_starts(&log);
    let mut back = kill_the_serving_worker(&sup, &mut phone, serving).await;
    // The phone that comes back is shown the same prompt, still waiting, and busy.
    let again = back
        .seen_or_until(|v| v["type"] == "permission_request")
        .await;
    assert_eq!(again["requestId"], asked["requestId"]);
    assert_eq!(again["tool"], "Bash");
    assert!(again["remainingMs"].as_u64().unwrap() > 0);
    back.send(json!({"type": "permission_response", "requestId": again["requestId"], "decision": "allow"}))
        .await;
    let start = back.seen.len();
    back.until(|v| v["type"] == "agent_idle").await;
    assert_eq!(
        common::streamed_text(&back.seen[start..]),
        "permission allow",
        "the answer reached the CLI that asked"
    );
    assert_eq!(cli_starts(&log), cli, "no other CLI was started");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_standby_that_dies_is_replaced_and_the_serving_worker_and_its_phones_never_notice() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let ready = sup
        .wait_for("the standby to be ready", |s| s["standby"]["ready"] == true)
        .await;
    let standby = ready["standby"]["pid"].as_u64().unwrap();
    let mut phone = sup.client().await;
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(standby as i32), Signal::SIGKILL).unwrap();
    let after = sup
        .wait_for("a new standby to be ready", |s| {
            s["standby"]["ready"] == true && s["standby"]["pid"] != standby
        })
        .await;
    assert_eq!(after["worker"]["pid"], ready["worker"]["pid"]);
    assert_eq!(after["worker"]["restarts"], 0);
    assert!(
        events(&after)
            .iter()
            .any(|(k, m)| k == "standby_lost" && m.contains("another is started")),
        "{after:#}"
    );
    phone.turn("still here").await;
    assert!(
        !phone.seen.iter().any(|v| v["type"] == "server_shutdown"),
        "{:?}",
        phone.seen
    );
}
