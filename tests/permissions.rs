//! Permission prompts and questions answered from phones (PROTOCOL.md "Permissions"),
//! with the real Claude Code CLI and the scripted model.

mod common;

use std::path::Path;

use common::*;
use serde_json::{json, Value};

/// Sends `input` and returns the first prompt of `ty` that arrives for it.
async fn ask(c: &mut Client, input: &str, ty: &str) -> Value {
    c.send(json!({"type": "input", "data": input})).await;
    c.until_type(ty).await
}

fn answer(request_id: &Value, decision: &str) -> Value {
    json!({"type": "permission_response", "requestId": request_id, "decision": decision})
}

/// Sends `input` and returns the permission prompt it raised, or `None` when the turn
/// ended without asking anyone (a rule allowed it).
async fn prompt_for(c: &mut Client, input: &str) -> Option<Value> {
    c.send(json!({"type": "input", "data": input})).await;
    let v = c
        .until(|v| v["type"] == "permission_request" || v["type"] == "agent_idle")
        .await;
    (v["type"] == "permission_request").then_some(v)
}

/// Denies `prompt` and waits for the end of its turn.
async fn deny(c: &mut Client, prompt: &Value) {
    c.send(answer(&prompt["requestId"], "deny")).await;
    c.until_type("agent_idle").await;
}

fn rules_file(home: &Home) -> std::path::PathBuf {
    home.chroxy().join("config/permission-rules.json")
}

#[tokio::test]
async fn allow_runs_the_tool_and_deny_tells_the_model_who_denied() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;

    let prompt = ask(
        &mut c,
        "PLEASE_BASH touch allowed.txt",
        "permission_request",
    )
    .await;
    assert_eq!(prompt["tool"], "Bash");
    assert_eq!(prompt["input"]["command"], "touch allowed.txt");
    let remaining = prompt["remainingMs"].as_u64().unwrap();
    assert!(
        remaining > 290_000 && remaining <= 300_000,
        "default timeout is 5 min: {remaining}"
    );
    c.send(answer(&prompt["requestId"], "allow")).await;
    let resolved = c.until_type("permission_resolved").await;
    assert_eq!(
        (resolved["requestId"].clone(), resolved["decision"].clone()),
        (prompt["requestId"].clone(), json!("allow"))
    );
    c.until_type("agent_idle").await;
    assert!(home.project().join("allowed.txt").exists());

    let prompt = ask(&mut c, "PLEASE_BASH touch denied.txt", "permission_request").await;
    c.send(json!({"type": "permission_response", "requestId": prompt["requestId"], "decision": "deny", "reason": "not now"}))
        .await;
    c.until_type("agent_idle").await;
    assert!(!home.project().join("denied.txt").exists());
    let last = model.handle.requests().last().unwrap().body.to_string();
    assert!(
        last.contains("Denied from test: not now"),
        "the model did not get the denial: {last}"
    );
}

#[tokio::test]
async fn two_phones_answering_at_once_exactly_one_decision_reaches_the_cli() {
    let home = Home::new();
    let model = Model::start().await;
    // 100 prompts in well under a minute: lift the per-connection rate limit.
    home.config("[worker]\nmessages_per_minute = 100000\nmessage_burst = 1000\n");
    let (w, log) = recording_worker(&home, &model).await;
    let mut a = w.client().await;
    let mut b = w.client().await;
    for n in 0..100u32 {
        let file = format!("race{n}.txt");
        let prompt = ask(
            &mut a,
            &format!("PLEASE_BASH touch {file}"),
            "permission_request",
        )
        .await;
        let id = prompt["requestId"].clone();
        b.until(|v| v["type"] == "permission_request" && v["requestId"] == id)
            .await;
        // Both answer "at once": one allows, one denies; who goes first varies.
        let a_first = n % 2 == 0;
        let (first, second) = if a_first {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        first.send(answer(&id, "allow")).await;
        for _ in 0..n % 4 {
            tokio::task::yield_now().await;
        }
        second.send(answer(&id, "deny")).await;

        let mut decisions = Vec::new();
        for c in [&mut a, &mut b] {
            let resolved = c
                .until(|v| v["type"] == "permission_resolved" && v["requestId"] == id)
                .await;
            decisions.push(resolved["decision"].as_str().unwrap().to_owned());
        }
        assert_eq!(
            decisions[0], decisions[1],
            "round {n}: both phones must see the same winner"
        );
        // The phone whose answer lost is told so; the winner is not.
        let allow_won = decisions[0] == "allow";
        let (winner, loser) = if allow_won == a_first {
            (&mut a, &mut b)
        } else {
            (&mut b, &mut a)
        };
        loser
            .seen_or_until(|v| v["type"] == "permission_expired" && v["requestId"] == id)
            .await;
        for c in [&mut *winner, &mut *loser] {
            c.until(|v| v["type"] == "agent_idle").await;
        }
        assert!(
            !winner
                .seen
                .iter()
                .any(|v| v["type"] == "permission_expired" && v["requestId"] == id),
            "round {n}: the winning answer was reported as expired"
        );
        let sent = answers_for(&log, id.as_str().unwrap());
        assert_eq!(
            sent.len(),
            1,
            "round {n}: {} answers reached the CLI: {sent:?}",
            sent.len()
        );
        assert_eq!(
            sent[0]["behavior"],
            if allow_won { "allow" } else { "deny" }
        );
        assert_eq!(home.project().join(&file).exists(), allow_won, "round {n}");
    }
}

#[tokio::test]
async fn an_unanswered_prompt_is_denied_after_the_timeout_and_the_turn_goes_on() {
    let home = Home::new();
    home.config("[worker]\npermission_timeout_ms = 1000\n");
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let mut watcher = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch late.txt", "permission_request").await;
    assert!(prompt["remainingMs"].as_u64().unwrap() <= 1000);
    for p in [&mut c, &mut watcher] {
        let expired = p
            .until(|v| v["type"] == "permission_expired" && v["requestId"] == prompt["requestId"])
            .await;
        assert!(
            expired["message"].as_str().unwrap().contains("No answer"),
            "{expired}"
        );
    }
    c.until_type("agent_idle").await;
    assert!(!home.project().join("late.txt").exists());
    let last = model.handle.requests().last().unwrap().body.to_string();
    assert!(
        last.contains("No answer within"),
        "the model was not told: {last}"
    );
    // Too late now.
    c.send(answer(&prompt["requestId"], "allow")).await;
    c.until(|v| {
        v["type"] == "permission_expired"
            && v["message"].as_str().unwrap().contains("already answered")
    })
    .await;
}

#[tokio::test]
async fn allow_always_is_remembered_across_sessions_and_restarts() {
    let home = Home::new();
    let model = Model::start().await;
    let (mut w, log) = recording_worker(&home, &model).await;
    let mut c = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch made.txt", "permission_request").await;
    c.send(answer(&prompt["requestId"], "allowAlways")).await;
    c.until_type("agent_idle").await;
    assert!(home.project().join("made.txt").exists());
    let rules: Value = serde_json::from_slice(
        &std::fs::read(home.chroxy().join("config/permission-rules.json")).unwrap(),
    )
    .unwrap();
    let project = home.project().display().to_string();
    assert_eq!(rules["projects"][&project][0]["tool"], "Bash");
    assert_eq!(rules["projects"][&project][0]["content"], "touch made.txt");
    // The prompt said exactly that, before anyone chose.
    assert_eq!(prompt["always"]["rule"], "Bash(touch made.txt)");
    assert_eq!(prompt["always"]["scope"], "project");
    assert_eq!(
        prompt["always"]["allows"],
        format!("exactly the command `touch made.txt`, in every session in {project}, until removed with `chroxy rules remove`")
    );
    // The CLI is told nothing it would apply with its own, different matching (nor
    // anything that would make it write the user's settings files): every later
    // request comes back to Chroxy's rules.
    let sent = answers_for(&log, prompt["requestId"].as_str().unwrap());
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["behavior"], "allow");
    assert!(sent[0].get("updatedPermissions").is_none(), "{}", sent[0]);

    // A new session in the same directory: nobody is asked, everybody is told.
    std::fs::remove_file(home.project().join("made.txt")).unwrap();
    let mut watcher = w.client().await;
    c.send(json!({"type": "create_session", "name": "again"}))
        .await;
    c.until(|v| v["type"] == "session_switched" && v["name"] == "again")
        .await;
    let frames = c.turn("PLEASE_BASH touch made.txt").await;
    assert!(home.project().join("made.txt").exists());
    assert!(frames.iter().any(|v| v["type"] == "message"
        && v["content"]
            .as_str()
            .unwrap()
            .contains("Allowed by your rule Bash(touch made.txt)")));
    assert!(!c
        .seen
        .iter()
        .chain(&watcher.seen)
        .any(|v| v["type"] == "permission_request"
            && v["input"]["command"] == "touch made.txt"
            && v["requestId"] != prompt["requestId"]));
    watcher.send(json!({"type": "ping"})).await;
    watcher.until_type("pong").await;
    assert!(!watcher
        .seen
        .iter()
        .any(|v| v["type"] == "permission_request"));

    // After a restart too.
    w.kill9().await;
    std::fs::remove_file(home.project().join("made.txt")).unwrap();
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let frames = c.turn("PLEASE_BASH touch made.txt").await;
    assert!(home.project().join("made.txt").exists(), "{frames:#?}");
    assert!(!frames.iter().any(|v| v["type"] == "permission_request"));

    // A different command still asks.
    let prompt = ask(&mut c, "PLEASE_BASH touch other.txt", "permission_request").await;
    c.send(answer(&prompt["requestId"], "deny")).await;
    c.until_type("agent_idle").await;

    // Chroxy wrote no Claude Code settings: not in HOME, not in the project.
    for settings in [".claude/settings.json", ".claude/settings.local.json"] {
        assert!(
            !home.user_home().join(settings).exists(),
            "{settings} written in HOME"
        );
        assert!(
            !home.project().join(settings).exists(),
            "{settings} written in the project"
        );
    }
}

/// A Bash rule allows the words approved and nothing else: not a longer word, not a
/// second command chained, piped, substituted or put on another line, not a redirect.
/// The rule is written as an older build wrote it, so old files keep loading too.
#[tokio::test]
async fn a_bash_rule_never_allows_more_than_the_command_approved() {
    let home = Home::new();
    let model = Model::start().await;
    let project = home.project();
    std::fs::create_dir_all(rules_file(&home).parent().unwrap()).unwrap();
    let old = json!({"version": 1, "projects": {project.display().to_string(): [
        {"tool": "Bash", "content": "touch ok:*", "createdAt": 1}
    ]}});
    std::fs::write(rules_file(&home), old.to_string()).unwrap();
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;

    // What the rule does allow, without asking.
    assert_eq!(prompt_for(&mut c, "PLEASE_BASH touch ok more").await, None);
    assert!(project.join("ok").exists() && project.join("more").exists());

    // (A carriage return never gets this far: Claude Code refuses such a command itself,
    // "control characters that would be hidden"; the unit tests cover it.)
    for attack in [
        "touch okfoo",
        "touch ok; touch pwned1",
        "touch ok && touch pwned2",
        "touch ok || touch pwned3",
        "touch ok | touch pwned4",
        "touch ok & touch pwned5",
        "touch ok `touch pwned6`",
        "touch ok $(touch pwned7)",
        "touch ok <(touch pwned8)",
        "touch ok > pwned9",
        "touch ok\ntouch pwned10",
        "touch ok \\\ntouch pwned11",
        "touch ok \"$(touch pwned12)\"",
    ] {
        let Some(prompt) = prompt_for(&mut c, &format!("PLEASE_BASH {attack}")).await else {
            panic!("{attack:?} ran without asking");
        };
        assert_eq!(prompt["input"]["command"], attack);
        deny(&mut c, &prompt).await;
    }
    assert!(!project.join("okfoo").exists());
    let left: Vec<_> = std::fs::read_dir(&project)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with("pwned"))
        .collect();
    assert!(left.is_empty(), "ran: {left:?}");
}

/// "Always" on one file edit allows that file, in that session (across a worker
/// restart), and nothing else: not another file, not a path out of the project, not
/// its `.git`, not another session.
#[tokio::test]
async fn always_on_a_file_edit_allows_that_file_in_that_session_only() {
    let home = Home::new();
    let model = Model::start().await;
    let project = home.project();
    let outside = home.user_home().join("outside.txt");
    std::os::unix::fs::symlink(home.user_home(), project.join("link")).unwrap();
    let mut w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let session = c.active_session();

    let prompt = prompt_for(&mut c, "PLEASE_WRITE notes.txt").await.unwrap();
    let file = project.join("notes.txt");
    assert_eq!(
        prompt["always"],
        json!({"rule": format!("Write({})", file.display()), "scope": "session",
               "allows": format!("Write on the file {}, in this session only", file.display())})
    );
    c.send(answer(&prompt["requestId"], "allowAlways")).await;
    c.until_type("agent_idle").await;
    assert!(file.exists());
    assert!(!rules_file(&home).exists(), "nothing was made project-wide");
    std::fs::remove_file(&file).unwrap();

    // The same file again: allowed by the session's rule.
    assert_eq!(prompt_for(&mut c, "PLEASE_WRITE notes.txt").await, None);
    assert!(file.exists());
    std::fs::remove_file(&file).unwrap();

    // Anything else asks; out of the project, "Always" is not even offered.
    for (other, offered) in [
        ("other.txt".to_owned(), true),
        ("notes.txt.bak".to_owned(), true),
        (".git/hooks/pre-commit".to_owned(), true),
        ("link/outside.txt".to_owned(), false),
        (outside.display().to_string(), false),
        (format!("{}/../user/outside.txt", project.display()), false),
    ] {
        let Some(prompt) = prompt_for(&mut c, &format!("PLEASE_WRITE {other} x")).await else {
            panic!("a write to {other} was allowed without asking");
        };
        assert_eq!(!prompt["always"].is_null(), offered, "{other}: {prompt}");
        deny(&mut c, &prompt).await;
    }
    assert!(!outside.exists());

    // The session's rule survives a worker restart, in that session.
    w.kill9().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    assert_eq!(c.active_session(), session);
    assert_eq!(prompt_for(&mut c, "PLEASE_WRITE notes.txt").await, None);
    assert!(file.exists());
    std::fs::remove_file(&file).unwrap();

    // Another session on the same directory is asked.
    c.send(json!({"type": "create_session", "name": "other"}))
        .await;
    c.until(|v| v["type"] == "session_switched" && v["name"] == "other")
        .await;
    let prompt = prompt_for(&mut c, "PLEASE_WRITE notes.txt").await;
    deny(&mut c, &prompt.expect("another session was not asked")).await;
    assert!(!file.exists());
}

/// A wider rule is only what the phone names explicitly, and only when it is valid: a
/// directory outside the project, reached through `..` or a symlink, or not holding
/// the file is refused with an error naming `directory`, nothing is stored, and the
/// prompt still waits for an answer.
#[tokio::test]
async fn a_directory_chosen_for_always_is_checked_then_kept_to_it() {
    let home = Home::new();
    let model = Model::start().await;
    let project = home.project();
    std::fs::create_dir_all(project.join("src")).unwrap();
    std::os::unix::fs::symlink(home.user_home(), project.join("link")).unwrap();
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let prompt = prompt_for(&mut c, "PLEASE_WRITE src/a.txt").await.unwrap();
    let id = prompt["requestId"].clone();

    for (directory, scope) in [
        (home.user_home().display().to_string(), "project"),
        (format!("{}/src/../..", project.display()), "project"),
        (project.join("link").display().to_string(), "session"),
        (project.join("docs").display().to_string(), "project"),
        ("src".to_owned(), "project"),
        ("/".to_owned(), "session"),
    ] {
        c.send(
            json!({"type": "permission_response", "requestId": id, "decision": "allowAlways",
                      "scope": scope, "directory": directory}),
        )
        .await;
        let refused = c
            .until(|v| v["type"] == "error" || v["type"] == "permission_resolved")
            .await;
        assert_eq!(refused["type"], "error", "{directory} taken: {refused}");
        assert_eq!(refused["code"], "INVALID_MESSAGE");
        assert_eq!(refused["requestId"], id);
        assert!(
            refused["message"]
                .as_str()
                .unwrap()
                .starts_with("`directory` "),
            "{refused}"
        );
    }
    assert!(!rules_file(&home).exists());
    assert!(!project.join("src/a.txt").exists());

    // Still waiting: a valid choice is taken, for the whole project as asked.
    c.send(
        json!({"type": "permission_response", "requestId": id, "decision": "allowAlways",
                  "scope": "project", "directory": project.join("src")}),
    )
    .await;
    c.until(|v| v["type"] == "permission_resolved" && v["requestId"] == id)
        .await;
    c.until_type("agent_idle").await;
    assert!(project.join("src/a.txt").exists());
    let rules: Value = serde_json::from_slice(&std::fs::read(rules_file(&home)).unwrap()).unwrap();
    assert_eq!(
        rules["projects"][project.display().to_string()][0]["content"],
        format!("{}/", project.join("src").display())
    );

    // Another session: files under src/ are allowed, others still ask.
    c.send(json!({"type": "create_session", "name": "again"}))
        .await;
    c.until(|v| v["type"] == "session_switched" && v["name"] == "again")
        .await;
    assert_eq!(
        prompt_for(&mut c, "PLEASE_WRITE src/deep/b.txt").await,
        None
    );
    assert!(project.join("src/deep/b.txt").exists());
    let prompt = prompt_for(&mut c, "PLEASE_WRITE c.txt").await;
    deny(&mut c, &prompt.expect("a file outside src/ was not asked")).await;
}

#[tokio::test]
async fn a_session_saved_in_auto_comes_back_asking_after_a_restart() {
    let home = Home::new();
    let model = Model::start().await;
    // Claude Code skips permissions for root only inside a declared sandbox; CI runs as root.
    let opts = || WorkerOpts::real_cli(&model).env("IS_SANDBOX", "1");
    let mut w = Worker::start_with(&home, opts()).await;
    let mut c = w.client().await;
    let session = c.active_session();
    c.send(json!({"type": "set_permission_mode", "mode": "auto", "confirmed": true}))
        .await;
    assert_eq!(
        c.until_type("permission_mode_changed").await["mode"],
        "auto"
    );
    // In auto, nobody is asked (the mode is saved with the turn).
    assert_eq!(
        prompt_for(&mut c, "PLEASE_BASH touch before.txt").await,
        None
    );
    assert!(home.project().join("before.txt").exists());

    w.kill9().await;
    let w = Worker::start_with(&home, opts()).await;
    let mut c = w.connect().await;
    c.auth(TOKEN).await;
    let list = c.until_type("session_list").await;
    assert_eq!(list["sessions"][0]["sessionId"], session.as_str());
    assert_eq!(list["sessions"][0]["permissionMode"], "approve", "{list}");
    let notice = c
        .until(|v| v["type"] == "message" && v["content"].as_str().unwrap().contains("auto mode"))
        .await;
    assert_eq!(notice["messageType"], "system");
    c.until_type("history_replay_end").await;
    let prompt = prompt_for(&mut c, "PLEASE_BASH touch after.txt").await;
    deny(&mut c, &prompt.expect("auto survived the restart")).await;
    assert!(!home.project().join("after.txt").exists());
}

#[test]
fn rules_can_be_listed_and_removed_from_the_command_line() {
    let home = tempfile::tempdir().unwrap();
    let store = chroxy::rules::RuleStore::new(&chroxy::store::Paths::under(home.path()));
    let rule = chroxy::rules::Rule {
        tool: "Bash".into(),
        content: Some("touch made.txt".into()),
        created_at: 0,
    };
    store.add(Path::new("/work/project"), rule).unwrap();
    let chroxy = |args: &[&str]| {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_chroxy"))
            .args(args)
            .env("CHROXY_HOME", home.path())
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = chroxy(&["rules", "list"]);
    assert!(
        ok && out.contains("/work/project (every session in it)\n  Bash(touch made.txt)\n"),
        "{out}"
    );
    let (ok, out) = chroxy(&["rules", "remove", "Bash(touch made.txt)"]);
    assert!(ok && out.contains("removed 1"), "{out}");
    let (ok, out) = chroxy(&["rules", "list"]);
    assert!(ok && out.contains("no rules"), "{out}");

    // A session's own rules are listed with it; a blanket edit rule an older version
    // saved is marked as allowing nothing.
    let paths = chroxy::store::Paths::under(home.path());
    let mut rec = chroxy::session::SessionRecord::new(
        "s-rules".into(),
        "notes".into(),
        "/work/project".into(),
        0,
    );
    rec.rules.push(chroxy::rules::Rule {
        tool: "Write".into(),
        content: Some("/work/project/notes.txt".into()),
        created_at: 0,
    });
    rec.save(&paths.sessions_dir()).unwrap();
    let blanket = chroxy::rules::Rule {
        tool: "Write".into(),
        content: None,
        created_at: 0,
    };
    store.add(Path::new("/work/project"), blanket).unwrap();
    let (ok, out) = chroxy(&["rules", "list"]);
    assert!(ok, "{out}");
    assert!(
        out.contains("/work/project (every session in it)\n  Write    [allows nothing: it would allow every file; remove it]\n"),
        "{out}"
    );
    assert!(
        out.contains("/work/project (session s-rules \"notes\" only; gone when it is closed)\n  Write(/work/project/notes.txt)\n"),
        "{out}"
    );
    let (ok, out) = chroxy(&["rules", "remove", "Write"]);
    assert!(ok && out.contains("removed 1"), "{out}");
    let (ok, out) = chroxy(&["rules", "remove", "Bash(touch made.txt)"]);
    assert!(
        !ok && out.contains("no rule `Bash(touch made.txt)` found"),
        "{out}"
    );
}

/// Child mode of the concurrency test below: 10 threads adding rules at once.
fn write_rules_as_child(home: &Path, who: &str) {
    let store = chroxy::rules::RuleStore::new(&chroxy::store::Paths::under(home));
    std::thread::scope(|s| {
        for t in 0..10 {
            let store = store.clone();
            s.spawn(move || {
                let rule = chroxy::rules::Rule {
                    tool: "Bash".into(),
                    content: Some(format!("echo {who}-{t}")),
                    created_at: 0,
                };
                store.add(Path::new("/project"), rule).unwrap();
            });
        }
    });
}

#[test]
fn twenty_concurrent_rule_writers_in_two_processes_lose_nothing() {
    if let (Ok(home), Ok(who)) = (
        std::env::var("CHROXY_RULES_CHILD_HOME"),
        std::env::var("CHROXY_RULES_CHILD"),
    ) {
        write_rules_as_child(Path::new(&home), &who);
        return;
    }
    let home = tempfile::tempdir().unwrap();
    let me = std::env::current_exe().unwrap();
    let children: Vec<_> = ["a", "b"]
        .iter()
        .map(|who| {
            std::process::Command::new(&me)
                .args([
                    "--exact",
                    "twenty_concurrent_rule_writers_in_two_processes_lose_nothing",
                    "--test-threads=1",
                ])
                .env("CHROXY_RULES_CHILD_HOME", home.path())
                .env("CHROXY_RULES_CHILD", who)
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "writer process failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(home.path().join("config/permission-rules.json")).unwrap();
    let file: Value = serde_json::from_str(&text).expect("rules file is valid JSON");
    let mut rules: Vec<String> = file["projects"]["/project"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["content"].as_str().unwrap().to_owned())
        .collect();
    rules.sort();
    let mut expected: Vec<String> = ["a", "b"]
        .iter()
        .flat_map(|w| (0..10).map(move |t| format!("echo {w}-{t}")))
        .collect();
    expected.sort();
    assert_eq!(rules, expected);
}

#[tokio::test]
async fn a_question_answered_from_the_phone_reaches_the_model() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let q = ask(&mut c, "PLEASE_ASK", "user_question").await;
    assert_eq!(
        q["questions"][0]["question"],
        "Which color should the button be?"
    );
    let labels: Vec<&str> = q["questions"][0]["options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["label"].as_str().unwrap())
        .collect();
    assert_eq!(labels, ["Red", "Blue"]);
    c.send(
        json!({"type": "user_question_response", "toolUseId": q["toolUseId"], "answer": "Blue"}),
    )
    .await;
    c.until_type("agent_idle").await;
    let last = model.handle.requests().last().unwrap().body.to_string();
    assert!(
        last.contains(r#"\"Which color should the button be?\"=\"Blue\""#),
        "answer not received: {last}"
    );
    // A second answer is too late.
    c.send(json!({"type": "user_question_response", "toolUseId": q["toolUseId"], "answer": "Red"}))
        .await;
    c.until_type("permission_expired").await;
}

/// Chroxy's clients answer "Other" with the option's label and what was typed under it
/// (`freeformText`): Claude is told the text, not the word "Other".
#[tokio::test]
async fn text_typed_under_other_reaches_the_model_instead_of_the_label() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let q = ask(&mut c, "PLEASE_ASK", "user_question").await;
    c.send(
        json!({"type": "user_question_response", "toolUseId": q["toolUseId"],
                  "answer": "Other", "freeformText": "Teal, like the sea"}),
    )
    .await;
    c.until_type("agent_idle").await;
    let last = model.handle.requests().last().unwrap().body.to_string();
    assert!(
        last.contains(r#"\"Which color should the button be?\"=\"Teal, like the sea\""#),
        "typed answer not received: {last}"
    );
}

#[tokio::test]
async fn a_phone_arriving_while_a_prompt_waits_gets_it_after_the_replay() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch later.txt", "permission_request").await;
    let mut late = w.connect().await;
    late.auth(TOKEN).await;
    late.until_type("history_replay_end").await;
    let again = late.until_type("permission_request").await;
    assert_eq!(again["requestId"], prompt["requestId"]);
    assert!(again["remainingMs"].as_u64().unwrap() <= prompt["remainingMs"].as_u64().unwrap());
    late.send(answer(&again["requestId"], "allow")).await;
    c.until(|v| v["type"] == "permission_resolved").await;
    c.until_type("agent_idle").await;
    assert!(home.project().join("later.txt").exists());
}

#[tokio::test]
async fn destroying_a_session_denies_its_prompt_and_forgets_it() {
    let home = Home::new();
    let model = Model::start().await;
    let (w, log) = recording_worker(&home, &model).await;
    let mut c = w.client().await;
    let mut watcher = w.client().await;
    let session = c.active_session();
    c.send(json!({"type": "create_session", "name": "spare"}))
        .await; // so the default is not recreated
    c.until(|v| v["type"] == "session_switched" && v["name"] == "spare")
        .await;
    c.send(json!({"type": "switch_session", "sessionId": session}))
        .await;
    c.until(|v| v["type"] == "session_switched" && v["sessionId"] == session.as_str())
        .await;
    let prompt = ask(&mut c, "PLEASE_BASH touch never.txt", "permission_request").await;
    let id = prompt["requestId"].as_str().unwrap().to_owned();
    c.send(json!({"type": "destroy_session", "sessionId": session}))
        .await;
    for p in [&mut c, &mut watcher] {
        let expired = p
            .until(|v| v["type"] == "permission_expired" && v["requestId"] == id.as_str())
            .await;
        assert!(
            expired["message"].as_str().unwrap().contains("closed"),
            "{expired}"
        );
    }
    // Once the session is gone from the list its agent has exited, so the recording of
    // its stdin is complete.
    watcher
        .until(|v| v["type"] == "session_list" && v["sessions"].as_array().unwrap().len() == 1)
        .await;
    let sent = answers_for(&log, &id);
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["behavior"], "deny");
    // The prompt is gone from the worker: a late answer finds nothing.
    c.send(answer(&json!(id), "allow")).await;
    c.until(|v| {
        v["type"] == "permission_expired"
            && v["message"].as_str().unwrap().contains("already answered")
    })
    .await;
    assert!(!home.project().join("never.txt").exists());
}

#[tokio::test]
async fn answers_have_their_own_budget_under_a_flood() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch flood.txt", "permission_request").await;
    for _ in 0..200 {
        c.send(json!({"type": "list_sessions"})).await;
    }
    c.until_type("rate_limited").await;
    c.send(answer(&prompt["requestId"], "allow")).await;
    c.until(|v| v["type"] == "permission_resolved").await;
    c.until_type("agent_idle").await;
    assert!(home.project().join("flood.txt").exists());
}

#[tokio::test]
async fn auto_needs_confirmation_and_then_the_cli_stops_asking() {
    let home = Home::new();
    let model = Model::start().await;
    // Claude Code skips permissions for root only inside a declared sandbox; CI runs as root.
    let w = Worker::start_with(&home, WorkerOpts::real_cli(&model).env("IS_SANDBOX", "1")).await;
    let mut c = w.client().await;
    c.turn("REPLY warm up").await;
    c.send(json!({"type": "set_permission_mode", "mode": "auto"}))
        .await;
    let confirm = c.until_type("confirm_permission_mode").await;
    assert!(confirm["warning"]
        .as_str()
        .unwrap()
        .contains("without asking"));
    // Unconfirmed: nothing changed, the CLI still asks.
    let prompt = ask(&mut c, "PLEASE_BASH touch asked.txt", "permission_request").await;
    assert!(!c
        .seen
        .iter()
        .any(|v| v["type"] == "permission_mode_changed"));
    c.send(answer(&prompt["requestId"], "deny")).await;
    c.until_type("agent_idle").await;

    c.send(json!({"type": "set_permission_mode", "mode": "auto", "confirmed": true}))
        .await;
    assert_eq!(
        c.until_type("permission_mode_changed").await["mode"],
        "auto"
    );
    let frames = c.turn("PLEASE_BASH touch unasked.txt").await;
    assert!(home.project().join("unasked.txt").exists(), "{frames:#?}");
    assert!(!frames.iter().any(|v| v["type"] == "permission_request"));
}

#[tokio::test]
async fn is_sandbox_set_to_anything_but_1_is_no_sandbox_turns_still_work() {
    let home = Home::new();
    let model = Model::start().await;
    // Claude Code declares a sandbox by IS_SANDBOX=1 only. As root, launched to allow
    // `auto` on any other value, it refuses to start, and no turn could run.
    let w = Worker::start_with(&home, WorkerOpts::real_cli(&model).env("IS_SANDBOX", "yes")).await;
    let mut c = w.client().await;
    let frames = c.turn("REPLY still answering").await;
    assert_eq!(streamed_text(&frames), "still answering", "{frames:#?}");
    c.send(json!({"type": "set_permission_mode", "mode": "auto", "confirmed": true}))
        .await;
    if nix::unistd::geteuid().is_root() {
        let refused = c.until_type("error").await;
        assert_eq!(refused["code"], "INVALID_MODE");
        let why = refused["message"].as_str().unwrap();
        assert!(
            why.contains("root") && why.contains("IS_SANDBOX=1"),
            "{why}"
        );
    } else {
        assert_eq!(
            c.until_type("permission_mode_changed").await["mode"],
            "auto"
        );
    }
    let frames = c.turn("REPLY and after").await;
    assert_eq!(streamed_text(&frames), "and after");
}

#[tokio::test]
async fn an_interrupt_withdraws_the_prompt_and_no_answer_is_sent() {
    let home = Home::new();
    let model = Model::start().await;
    let (w, log) = recording_worker(&home, &model).await;
    let mut c = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch x.txt", "permission_request").await;
    c.send(json!({"type": "interrupt"})).await;
    let expired = c
        .until(|v| v["type"] == "permission_expired" && v["requestId"] == prompt["requestId"])
        .await;
    assert!(
        expired["message"].as_str().unwrap().contains("withdrew"),
        "{expired}"
    );
    c.until_type("agent_idle").await;
    c.send(answer(&prompt["requestId"], "allow")).await;
    c.until(|v| {
        v["type"] == "permission_expired"
            && v["message"].as_str().unwrap().contains("already answered")
    })
    .await;
    assert!(answers_for(&log, prompt["requestId"].as_str().unwrap()).is_empty());
    assert!(!home.project().join("x.txt").exists());
}

#[tokio::test]
async fn an_agent_crash_takes_its_prompts_with_it() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch crash.txt", "permission_request").await;
    let agents = w.children();
    assert_eq!(agents.len(), 1);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agents[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let expired = c
        .until(|v| v["type"] == "permission_expired" && v["requestId"] == prompt["requestId"])
        .await;
    assert!(
        expired["message"].as_str().unwrap().contains("stopped"),
        "{expired}"
    );
    c.until_type("agent_idle").await;
    // The session works again (and asks again).
    let again = ask(&mut c, "PLEASE_BASH touch crash.txt", "permission_request").await;
    assert_ne!(again["requestId"], prompt["requestId"]);
}

#[tokio::test]
async fn a_stopping_worker_denies_waiting_prompts_and_tells_the_phones_first() {
    let home = Home::new();
    let model = Model::start().await;
    let (mut w, log) = recording_worker(&home, &model).await;
    let mut c = w.client().await;
    let prompt = ask(&mut c, "PLEASE_BASH touch stop.txt", "permission_request").await;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let expired = c
        .until(|v| v["type"] == "permission_expired" && v["requestId"] == prompt["requestId"])
        .await;
    assert!(
        expired["message"].as_str().unwrap().contains("stopping"),
        "{expired}"
    );
    c.until_type("server_shutdown").await;
    let status = tokio::time::timeout(WAIT, w.child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "worker exit: {status:?}");
    let sent = answers_for(&log, prompt["requestId"].as_str().unwrap());
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0]["behavior"], "deny");
}
