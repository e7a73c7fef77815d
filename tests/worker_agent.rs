//! Sessions driven through the worker with the real Claude Code CLI and the scripted
//! model: streaming, tools, fan-out, replay, interrupt, settings, restarts.

mod common;

use common::*;
use serde_json::{json, Value};

fn of_type<'a>(frames: &'a [Value], ty: &str) -> Vec<&'a Value> {
    frames.iter().filter(|v| v["type"] == ty).collect()
}

#[tokio::test]
async fn a_turn_streams_to_every_client_and_replays_to_late_ones() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut a = w.client().await;
    let mut b = w.client().await;
    // A new session, watched by both phones.
    a.send(json!({"type": "create_session", "name": "fox"}))
        .await;
    let created = a
        .until(|v| v["type"] == "session_switched" && v["name"] == "fox")
        .await;
    let list = b
        .until(|v| v["type"] == "session_list" && v["sessions"].as_array().unwrap().len() == 2)
        .await;
    assert!(list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["sessionId"] == created["sessionId"]));
    b.send(json!({"type": "switch_session", "sessionId": created["sessionId"]}))
        .await;
    b.until(|v| v["type"] == "history_replay_end" && v["sessionId"] == created["sessionId"])
        .await;

    let said = "The quick brown fox jumps over the lazy dog";
    let frames = a.turn(&format!("REPLY {said}")).await;
    assert_eq!(streamed_text(&frames), said);
    let start = of_type(&frames, "stream_start");
    let end = of_type(&frames, "stream_end");
    assert_eq!((start.len(), end.len()), (1, 1), "{frames:#?}");
    assert_eq!(start[0]["messageId"], end[0]["messageId"]);
    let result = of_type(&frames, "result");
    assert_eq!(result.len(), 1);
    // Like every other frame's: Chroxy's session, not Claude Code's.
    assert_eq!(result[0]["sessionId"], start[0]["sessionId"], "{frames:#?}");

    // The other phone saw the same turn, including the input it did not type: live as
    // a `user_input` frame that names the sender, as Chroxy's clients expect it.
    b.until_type("agent_idle").await;
    assert_eq!(streamed_text(&b.seen), said);
    let input = b.seen.iter().find(|v| v["type"] == "user_input").unwrap();
    assert_eq!(input["text"], format!("REPLY {said}"));
    let auth_ok = a.seen.iter().find(|v| v["type"] == "auth_ok").unwrap();
    assert_eq!(input["clientId"], auth_ok["clientId"], "{input}");
    assert_eq!(input["sessionId"], start[0]["sessionId"]);
    assert!(
        !a.seen.iter().any(|v| v["type"] == "user_input"),
        "the sender already shows what it typed"
    );
    // The history replays it as a `message`, and the answer as a `response`.
    let mut c = w.client().await;
    c.send(json!({"type": "switch_session", "sessionId": created["sessionId"]}))
        .await;
    c.until(|v| v["type"] == "history_replay_end" && v["sessionId"] == created["sessionId"])
        .await;
    let replay = c
        .seen
        .iter()
        .rposition(|v| v["type"] == "history_replay_start")
        .unwrap();
    let replayed = |t: &str| {
        c.seen[replay..]
            .iter()
            .find(|v| v["type"] == "message" && v["messageType"] == t)
            .cloned()
    };
    assert_eq!(
        replayed("user_input").unwrap()["content"],
        format!("REPLY {said}")
    );
    assert_eq!(replayed("response").unwrap()["content"], said);
    assert_eq!(c.seen[replay]["fullHistory"], true, "{}", c.seen[replay]);

    // A tool call: Write needs approval; the phone denies it and the model is told.
    let start = a.seen.len();
    a.send(json!({"type": "input", "data": "PLEASE_WRITE made.txt"}))
        .await;
    let prompt = a.until_type("permission_request").await;
    assert_eq!(prompt["tool"], "Write");
    a.send(json!({"type": "permission_response", "requestId": prompt["requestId"], "decision": "deny"})).await;
    a.until_type("agent_idle").await;
    let frames = a.seen[start..].to_vec();
    let tool = of_type(&frames, "tool_start");
    assert_eq!(tool.len(), 1, "{frames:#?}");
    assert_eq!(tool[0]["tool"], "Write");
    assert!(tool[0]["input"]["file_path"]
        .as_str()
        .unwrap()
        .ends_with("made.txt"));
    let result = of_type(&frames, "tool_result");
    assert_eq!(result.len(), 1);
    assert_eq!(result[0]["toolUseId"], tool[0]["toolUseId"]);
    assert_eq!(result[0]["isError"], true);
    assert!(!home.project().join("made.txt").exists());
    // The model was told who denied it.
    let last = model.handle.requests().last().unwrap().body.to_string();
    assert!(
        last.contains("Denied from test"),
        "deny reason not sent to the model"
    );

    // A third client, connecting afterwards, gets the whole conversation replayed.
    let mut c = w.connect().await;
    c.auth(TOKEN).await;
    c.until_type("history_replay_start").await;
    let replay_end = c.until_type("history_replay_end").await;
    assert_eq!(replay_end["sessionId"], a.active_session());
    let replay: Vec<Value> = c
        .seen
        .iter()
        .skip_while(|v| v["type"] != "history_replay_start")
        .cloned()
        .collect();
    let texts: Vec<&str> = replay
        .iter()
        .filter(|v| v["type"] == "message")
        .map(|v| v["content"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&format!("REPLY {said}").as_str()),
        "{texts:?}"
    );
    assert!(
        texts.contains(&said),
        "assistant text missing from replay: {texts:?}"
    );
    assert_eq!(of_type(&replay, "tool_start").len(), 1);
    assert_eq!(of_type(&replay, "tool_result").len(), 1);
    assert_eq!(of_type(&replay, "result").len(), 2);
    assert!(!w.log_text().contains(TOKEN), "the token reached the log");
}

#[tokio::test]
async fn interrupt_ends_a_slow_turn_and_the_next_turn_works() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    c.send(json!({"type": "input", "data": "SLOW 300 one two three four five six seven eight nine ten eleven twelve"})).await;
    c.until_type("stream_delta").await;
    c.send(json!({"type": "interrupt"})).await;
    c.until_type("agent_idle").await;
    assert!(
        !streamed_text(&c.seen).contains("twelve"),
        "the turn ran to the end despite the interrupt"
    );
    assert!(c
        .seen
        .iter()
        .any(|v| v["type"] == "message" && v["content"] == "Interrupted."));
    let frames = c.turn("REPLY still here").await;
    assert_eq!(streamed_text(&frames), "still here");
}

#[tokio::test]
async fn model_and_permission_mode_reach_the_cli_and_bad_values_do_not() {
    let home = Home::new();
    let model = Model::start().await;
    let (w, log) = recording_worker(&home, &model).await;
    let mut c = w.client().await;
    let models = c
        .seen
        .iter()
        .find(|v| v["type"] == "available_models")
        .unwrap()
        .clone();
    assert!(models["models"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m["id"] == "opus"));

    c.turn("REPLY warm up").await; // the agent is running now; changes go over control requests
    c.send(json!({"type": "set_model", "model": "opus"})).await;
    assert_eq!(c.until_type("model_changed").await["model"], "opus");
    c.turn("REPLY after model").await;
    let req = model.handle.requests().last().unwrap().clone();
    assert!(
        req.model().unwrap().contains("opus"),
        "model sent to the API: {:?}",
        req.model()
    );

    c.send(json!({"type": "set_model", "model": "gpt-5"})).await;
    assert_eq!(c.until_type("error").await["code"], "INVALID_MODEL");

    c.send(json!({"type": "set_permission_mode", "mode": "yolo"}))
        .await;
    let err = c.until_type("error").await;
    assert_eq!(err["code"], "INVALID_MODE");
    c.send(json!({"type": "set_permission_mode", "mode": "auto"}))
        .await;
    let confirm = c.until_type("confirm_permission_mode").await;
    assert_eq!(confirm["mode"], "auto");

    // acceptEdits reaches the CLI: the Write it used to ask about now just happens.
    c.send(json!({"type": "set_permission_mode", "mode": "acceptEdits"}))
        .await;
    assert_eq!(
        c.until_type("permission_mode_changed").await["mode"],
        "acceptEdits"
    );
    let frames = c.turn("PLEASE_WRITE accepted.txt hello").await;
    assert!(home.project().join("accepted.txt").exists(), "{frames:#?}");
    assert!(!c
        .seen
        .iter()
        .any(|v| v["type"] == "permission_mode_changed" && v["mode"] != "acceptEdits"));
    let list = {
        c.send(json!({"type": "list_sessions"})).await;
        c.until_type("session_list").await
    };
    assert_eq!(list["sessions"][0]["permissionMode"], "acceptEdits");
    assert_eq!(list["sessions"][0]["model"], "opus");
    // What reached the CLI: the valid changes as control requests, the refused ones not at all.
    let controls: Vec<Value> = recorded_lines(&log)
        .into_iter()
        .filter(|v| v["type"] == "control_request")
        .map(|v| v["request"].clone())
        .collect();
    assert!(
        controls
            .iter()
            .any(|r| r["subtype"] == "set_model" && r["model"] == "opus"),
        "{controls:?}"
    );
    assert!(controls
        .iter()
        .any(|r| r["subtype"] == "set_permission_mode" && r["mode"] == "acceptEdits"));
    assert!(
        !controls.iter().any(|r| r["mode"] == "yolo"
            || r["mode"] == "bypassPermissions"
            || r["model"] == "gpt-5"),
        "a refused setting reached the CLI: {controls:?}"
    );
}

#[tokio::test]
async fn sessions_survive_a_worker_killed_mid_turn() {
    let home = Home::new();
    let model = Model::start().await;
    let mut w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let first = c.turn("REPLY remember the word pineapple").await;
    assert_eq!(streamed_text(&first), "remember the word pineapple");
    c.send(json!({"type": "create_session", "name": "second"}))
        .await;
    c.until(|v| v["type"] == "session_switched" && v["name"] == "second")
        .await;
    c.send(json!({"type": "input", "data": "SLOW 500 this turn will be cut"}))
        .await;
    c.until_type("stream_delta").await;
    w.kill9().await;

    let w2 = Worker::start(&home, &model).await;
    let mut c2 = w2.client().await;
    let list = c2
        .seen
        .iter()
        .find(|v| v["type"] == "session_list")
        .unwrap()
        .clone();
    let names: Vec<&str> = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.contains(&"second"));
    // Back to the first session: its history is replayed…
    let first_id = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] != "second")
        .unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    c2.send(json!({"type": "switch_session", "sessionId": first_id}))
        .await;
    c2.until(|v| v["type"] == "session_switched" && v["sessionId"] == first_id.as_str())
        .await;
    c2.until_type("history_replay_end").await;
    assert!(c2
        .seen
        .iter()
        .any(|v| v["type"] == "message" && v["content"] == "remember the word pineapple"));
    // …and the CLI resumed the conversation: the model sees the earlier turn.
    let before = model.handle.turns_seen();
    let frames = c2.turn("REPLY what was the word").await;
    assert_eq!(streamed_text(&frames), "what was the word");
    let conversation = model.conversation_after(before).await;
    assert!(
        conversation.contains("remember the word pineapple"),
        "not resumed: {conversation}"
    );
}

/// Waits until the CLI has written its transcript for `needle` (it writes them
/// asynchronously; a process killed before that loses the turn, which is the CLI's
/// durability and not what these tests are about).
async fn transcript_contains(home: &Home, needle: &str) {
    let projects = home.user_home().join(".claude/projects");
    eventually(
        &format!("the CLI writes a transcript containing {needle:?}"),
        async || {
            let files = walk(&projects);
            holds(
                files
                    .iter()
                    .any(|f| std::fs::read_to_string(f).is_ok_and(|t| t.contains(needle))),
                format!("transcripts {files:?}"),
            )
        },
    )
    .await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = entry.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

fn kill_agent(w: &Worker) {
    let agents = w.children();
    assert_eq!(agents.len(), 1, "one agent process expected: {agents:?}");
    // The agent runs arbitrary commands: it must not inherit the phone token.
    let environ = std::fs::read(format!("/proc/{}/environ", agents[0])).unwrap();
    assert!(
        !String::from_utf8_lossy(&environ).contains(TOKEN),
        "the agent inherited CHROXY_TOKEN"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(agents[0] as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
}

#[tokio::test]
async fn an_agent_that_dies_is_reported_and_resumed_on_the_next_input() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    c.turn("REPLY the code is 4711").await;
    transcript_contains(&home, "the code is 4711").await;
    kill_agent(&w);
    let err = c.until_type("session_error").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("stopped unexpectedly"),
        "{err}"
    );
    let before = model.handle.turns_seen();
    let frames = c.turn("REPLY and now").await;
    assert_eq!(streamed_text(&frames), "and now");
    let conversation = model.conversation_after(before).await;
    assert!(
        conversation.contains("the code is 4711"),
        "not resumed: {conversation}"
    );
}

#[tokio::test]
async fn a_lost_agent_conversation_starts_fresh_and_says_so() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    c.turn("REPLY first").await;
    kill_agent(&w);
    c.until_type("session_error").await;
    // The CLI's own record of the conversation is gone (e.g. ~/.claude was cleaned).
    std::fs::remove_dir_all(home.user_home().join(".claude/projects")).ok();
    let frames = c.turn("REPLY second").await;
    assert_eq!(streamed_text(&frames), "second", "{frames:#?}");
    assert!(frames.iter().any(|v| v["type"] == "message"
        && v["content"]
            .as_str()
            .unwrap()
            .contains("could not be resumed")));
    // Exactly one turn reached the model for this input: no resume loop.
    let after: Vec<_> = model
        .handle
        .requests()
        .into_iter()
        .filter(|r| r.body.to_string().contains("REPLY second"))
        .collect();
    assert_eq!(after.len(), 1);
}

#[tokio::test]
async fn a_missing_claude_is_agent_unavailable_and_the_worker_stays_up() {
    let home = Home::new();
    let w = Worker::start_with(&home, WorkerOpts::missing_cli()).await;
    let mut c = w.connect().await;
    c.auth(TOKEN).await;
    // Right after the replay, before anyone types, the phone learns the agent is missing.
    c.until_type("history_replay_end").await;
    let err = c.until_type("session_error").await;
    assert_eq!(err["code"], "AGENT_UNAVAILABLE");
    c.send(json!({"type": "input", "data": "hello"})).await;
    let err = c.until_type("error").await;
    assert_eq!(err["code"], "AGENT_UNAVAILABLE");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("npm install") && message.contains("CHROXY_CLAUDE"),
        "{message}"
    );
    // Still serving.
    c.send(json!({"type": "ping"})).await;
    c.until_type("pong").await;
    let mut d = w.client().await;
    d.send(json!({"type": "list_sessions"})).await;
    d.until_type("session_list").await;
}

#[tokio::test]
async fn session_management_and_limits() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let mut watcher = w.client().await;
    let default_id = c.active_session();

    c.send(json!({"type": "create_session", "cwd": "/definitely/not/here"}))
        .await;
    assert_eq!(c.until_type("error").await["code"], "INVALID_CWD");
    for n in 2..=5 {
        c.send(json!({"type": "create_session", "name": format!("s{n}")}))
            .await;
        c.until(|v| v["type"] == "session_switched" && v["name"] == format!("s{n}").as_str())
            .await;
    }
    c.send(json!({"type": "create_session"})).await;
    assert_eq!(c.until_type("error").await["code"], "SESSION_LIMIT");
    let list = watcher
        .until(|v| v["type"] == "session_list" && v["sessions"].as_array().unwrap().len() == 5)
        .await;
    let s5 = list["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "s5")
        .unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();

    c.send(json!({"type": "rename_session", "sessionId": s5, "name": "renamed"}))
        .await;
    watcher
        .until(|v| {
            v["type"] == "session_list"
                && v["sessions"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|s| s["name"] == "renamed")
        })
        .await;
    let file = home.sessions_dir().join(format!("{s5}.json"));
    eventually("the renamed session is saved", async || {
        let saved = std::fs::read_to_string(&file).unwrap_or_default();
        holds(saved.contains("\"renamed\""), saved)
    })
    .await;

    // Destroying the session a client is on moves it to another one, and deletes the file.
    c.send(json!({"type": "destroy_session", "sessionId": s5}))
        .await;
    let switched = c.until(|v| v["type"] == "session_switched").await;
    assert_ne!(switched["sessionId"], s5.as_str());
    watcher
        .until(|v| v["type"] == "session_list" && v["sessions"].as_array().unwrap().len() == 4)
        .await;
    assert!(!file.exists(), "a destroyed session's file was left behind");

    c.send(json!({"type": "switch_session", "sessionId": "s-nope"}))
        .await;
    assert_eq!(c.until_type("error").await["code"], "SESSION_NOT_FOUND");
    c.send(json!({"type": "input", "data": "hi", "sessionId": "s-nope"}))
        .await;
    assert_eq!(c.until_type("error").await["code"], "SESSION_NOT_FOUND");
    c.send(json!({"type": "switch_session", "sessionId": default_id}))
        .await;
    c.until(|v| v["type"] == "session_switched" && v["sessionId"] == default_id.as_str())
        .await;
}

#[tokio::test]
async fn inputs_queue_behind_a_busy_agent_up_to_ten() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    c.send(json!({"type": "input", "data": "SLOW 400 a b c d e f g h"}))
        .await;
    c.until_type("stream_delta").await;
    for n in 0..10 {
        c.send(json!({"type": "input", "data": format!("REPLY queued {n}")}))
            .await;
    }
    c.send(json!({"type": "input", "data": "REPLY one too many"}))
        .await;
    assert_eq!(c.until_type("error").await["code"], "QUEUE_FULL");
    c.send(json!({"type": "interrupt"})).await;
    // Every queued input runs, in order.
    let mut got = Vec::new();
    while got.len() < 10 {
        c.until(|v| v["type"] == "stream_end").await;
        let text: String = {
            let start = c
                .seen
                .iter()
                .rposition(|v| v["type"] == "stream_start")
                .unwrap();
            streamed_text(&c.seen[start..])
        };
        if text.starts_with("queued") {
            got.push(text);
        }
    }
    let expected: Vec<String> = (0..10).map(|n| format!("queued {n}")).collect();
    assert_eq!(got, expected);
}

/// The phone sends an input again when it cannot know that it arrived (its connection
/// dropped first): by its `clientMessageId` the worker takes it once, and says so each
/// time, even from a new worker after a crash.
#[tokio::test]
async fn an_input_sent_again_by_its_id_runs_once_even_after_a_crash() {
    let home = Home::new();
    let model = Model::start().await;
    let mut w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let accepted = |id: &'static str| {
        move |v: &Value| v["type"] == "input_accepted" && v["clientMessageId"] == id
    };
    let input =
        |data: &str, id: &str| json!({"type": "input", "data": data, "clientMessageId": id});

    c.send(input("REPLY only once", "m-1")).await;
    c.until(accepted("m-1")).await;
    c.until_type("agent_idle").await;
    // While busy, a queued input and its copy.
    c.send(input("SLOW 300 a b c", "m-2")).await;
    c.until_type("stream_delta").await;
    c.send(input("REPLY queued once", "m-3")).await;
    c.until(accepted("m-3")).await;
    c.send(input("REPLY queued once", "m-3")).await;
    c.until(accepted("m-3")).await;
    c.send(input("REPLY only once", "m-1")).await;
    c.until(accepted("m-1")).await;
    while !streamed_text(&c.seen).contains("queued once") {
        c.recv().await;
    }
    c.until_type("agent_idle").await;

    // The worker dies; its successor remembers what it took.
    w.kill9().await;
    let w2 = Worker::start(&home, &model).await;
    let mut c2 = w2.client().await;
    let turns = model.handle.turns_seen();
    c2.send(input("REPLY queued once", "m-3")).await;
    c2.until(accepted("m-3")).await;
    // A new input runs; the copies never did.
    c2.send(input("REPLY new", "m-4")).await;
    let new: Vec<Value> = {
        c2.until(accepted("m-4")).await;
        c2.until_type("agent_idle").await;
        c2.seen.clone()
    };
    assert!(streamed_text(&new).ends_with("new"), "{new:?}");
    assert_eq!(
        model.handle.turns_seen(),
        turns + 1,
        "only m-4 reached the model"
    );
    let all = [c.seen.as_slice(), c2.seen.as_slice()].concat();
    assert_eq!(streamed_text(&all).matches("only once").count(), 1);
    assert_eq!(streamed_text(&all).matches("queued once").count(), 1);

    // Refused with an id: the error names it, so the phone stops sending it.
    c2.send(json!({"type": "input", "data": "x", "sessionId": "s-nope", "clientMessageId": "m-5"}))
        .await;
    let err = c2.until_type("error").await;
    assert_eq!(err["code"], "SESSION_NOT_FOUND", "{err}");
    assert_eq!(err["requestId"], "m-5", "{err}");
    c2.send(input("x", &"m".repeat(65))).await;
    let err = c2.until_type("error").await;
    assert!(
        err["message"].as_str().unwrap().contains("clientMessageId"),
        "{err}"
    );
}

/// The CLI of a session a phone opens is started before any input, so the first turn
/// does not wait for it; only the sessions opened last keep theirs (`warm_clis`), and
/// one idle for `cli_idle_secs` is stopped, its conversation resumed on the next input.
#[tokio::test]
async fn the_cli_of_an_opened_session_starts_before_input_and_only_the_last_two_stay_warm() {
    let home = Home::new();
    home.config("[worker]\ncli_idle_secs = 3\n");
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let one = |what: &str| {
        let agents = w.children();
        holds(agents.len() == 1, format!("{what}: {agents:?}"))?;
        Ok::<u32, String>(agents[0])
    };
    let warmed = eventually("a CLI for the opened session", async || one("warm")).await;
    let frames = c.turn("REPLY remember the word papaya").await;
    assert_eq!(streamed_text(&frames), "remember the word papaya");
    assert_eq!(
        w.children(),
        vec![warmed],
        "the first turn ran on the warm CLI"
    );

    // Idle past cli_idle_secs: stopped.
    eventually("the idle CLI stopped", async || {
        holds(w.children().is_empty(), format!("{:?}", w.children()))
    })
    .await;
    // The next input starts one again, on the same conversation.
    let before = model.handle.turns_seen();
    let frames = c.turn("REPLY what was the word").await;
    assert_eq!(streamed_text(&frames), "what was the word");
    let conversation = model.conversation_after(before).await;
    assert!(
        conversation.contains("remember the word papaya"),
        "not resumed: {conversation}"
    );

    // Three sessions opened in turn: the two opened last keep a CLI, no more.
    for name in ["second", "third"] {
        c.send(json!({"type": "create_session", "name": name}))
            .await;
        c.until(|v| v["type"] == "session_switched" && v["name"] == name)
            .await;
    }
    eventually("two warm CLIs", async || {
        let agents = w.children();
        holds(agents.len() == 2, format!("{agents:?}"))
    })
    .await;
}

#[tokio::test]
async fn with_warm_clis_0_a_cli_starts_only_for_input() {
    let home = Home::new();
    home.config("[worker]\nwarm_clis = 0\n");
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    // A command the session itself answers, so it comes after the session's part of
    // the welcome (where the CLI would have been started): nothing was.
    c.send(json!({"type": "set_model", "model": "haiku"})).await;
    c.until_type("model_changed").await;
    assert_eq!(w.children(), Vec::<u32>::new());
    c.turn("REPLY now").await;
    assert_eq!(w.children().len(), 1);
}

/// The CLI's `total_cost_usd` counts from the start of its process; a phone is told
/// what each turn cost, also after the CLI was replaced (a resumed CLI counts from 0).
#[tokio::test]
async fn each_result_carries_what_its_own_turn_cost() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let cost = async |c: &mut Client, text: &str| {
        let frames = c.turn(text).await;
        let result = frames.iter().find(|v| v["type"] == "result").unwrap();
        result["cost"].as_f64().unwrap()
    };
    let first = cost(&mut c, "REPLY one").await;
    assert!(first > 0.0);
    // Turns of the same size cost about the same; running totals would grow 2×, 3×.
    for text in ["REPLY two", "REPLY six"] {
        let turn = cost(&mut c, text).await;
        assert!(turn > 0.0 && turn < first * 1.5, "{turn} after {first}");
    }
    kill_agent(&w);
    c.until_type("session_error").await;
    let resumed = cost(&mut c, "REPLY four").await;
    assert!(
        resumed > 0.0 && resumed < first * 1.5,
        "{resumed} after {first}"
    );
}

/// The day's total over every session reaches every phone after each turn and with
/// the welcome, and a new worker (after a crash) goes on from it.
#[tokio::test]
async fn todays_total_adds_up_every_sessions_turns_and_survives_the_worker() {
    let home = Home::new();
    let model = Model::start().await;
    let mut w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let welcome = c.seen_or_until(|v| v["type"] == "today_cost").await;
    assert_eq!(welcome["costUsd"], 0.0, "{welcome}");
    let mut spent = 0.0;
    for session in ["first", "second"] {
        if session == "second" {
            c.send(json!({"type": "create_session", "name": session}))
                .await;
            c.until(|v| v["type"] == "session_switched" && v["name"] == session)
                .await;
        }
        let frames = c.turn("REPLY a turn that costs").await;
        let at = |ty: &str| frames.iter().position(|v| v["type"] == ty).unwrap();
        spent += frames[at("result")]["cost"].as_f64().unwrap();
        // The result does not wait for the spend file's lock: the total follows it.
        assert!(at("result") < at("today_cost"), "the result comes first");
        let today = frames[at("today_cost")]["costUsd"].as_f64().unwrap();
        assert!((today - spent).abs() < 1e-9, "{today} vs {spent}");
    }
    w.kill9().await;
    let w2 = Worker::start(&home, &model).await;
    let mut c2 = w2.client().await;
    let welcome = c2.seen_or_until(|v| v["type"] == "today_cost").await;
    let today = welcome["costUsd"].as_f64().unwrap();
    assert!((today - spent).abs() < 1e-9, "{today} vs {spent}");
    assert_eq!(welcome["day"], chroxy::session::spend::local_day());
}

/// An input dropped by the message budget, or refused before it is read, is named by its
/// `clientMessageId`, so the phone knows to send it again (or not at all).
#[tokio::test]
async fn an_input_refused_at_the_door_is_named_by_its_id() {
    let home = Home::new();
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut c = w.client().await;
    for n in 0..30 {
        c.send(json!({"type": "input", "data": "SLOW 50 x", "clientMessageId": format!("m-{n}")}))
            .await;
    }
    let limited = c.until_type("rate_limited").await;
    let id = limited["requestId"].as_str().unwrap_or_default();
    assert!(
        id.starts_with("m-2"),
        "the burst is 20, so an input past it: {limited}"
    );
    let too_long = "x".repeat(100_001);
    c.send(json!({"type": "input", "data": too_long, "clientMessageId": "m-long"}))
        .await;
    let refused = c
        .until(|v| v["type"] == "error" && v["code"] == "TOO_LARGE")
        .await;
    assert_eq!(refused["requestId"], "m-long", "{refused}");
}

/// What Chroxy's own clients ask beyond the main loop, answered as Chroxy answers it
/// (docs/protocol.md "Lists Chroxy's clients ask for"), with the real CLI.
#[tokio::test]
async fn chroxy_clients_lists_are_answered_and_a_terminal_resize_is_taken_quietly() {
    let home = Home::new();
    let write = |dir: std::path::PathBuf, file: &str, text: &str| {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    };
    write(
        home.project().join(".claude/agents"),
        "reviewer.md",
        "---\nname: reviewer\ndescription: Reviews diffs\n---\nYou review diffs.\n",
    );
    write(
        home.user_home().join(".claude/agents"),
        "writer.md",
        "---\nname: writer\ndescription: Writes docs\n---\nYou write docs.\n",
    );
    home.config(
        "[worker]\nmodels = [{ id = \"sonnet\", label = \"Sonnet\", fullId = \"claude-sonnet-4-5\" }, { id = \"haiku\", label = \"Haiku\" }]\n",
    );
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut a = w.client().await;

    // Right after auth: the permission modes as a picker needs them, on auth_ok and in
    // their own message, and every model with a full id.
    let ok = a
        .seen
        .iter()
        .find(|v| v["type"] == "auth_ok")
        .unwrap()
        .clone();
    let ids = |modes: &Value| -> Vec<String> {
        let modes = modes.as_array().unwrap();
        assert!(modes
            .iter()
            .all(|m| m["label"].as_str().is_some_and(|l| !l.is_empty())));
        modes
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let all = ["approve", "acceptEdits", "auto", "plan"];
    assert_eq!(ids(&ok["availablePermissionModes"]), all, "{ok}");
    // (The welcome sends them before the session's replay ends: already here.)
    let welcome = |ty: &str| a.seen.iter().find(|v| v["type"] == ty).cloned().unwrap();
    let modes = welcome("available_permission_modes");
    assert_eq!(ids(&modes["modes"]), all);
    let models = welcome("available_models");
    let models = models["models"].as_array().unwrap();
    assert!(!models.is_empty());
    assert_eq!(models[0]["fullId"], "claude-sonnet-4-5", "as configured");
    assert_eq!(models[1]["fullId"], "haiku", "none configured: the alias");
    // A client may pick a model by its full name.
    a.send(json!({"type": "set_model", "model": "claude-sonnet-4-5"}))
        .await;
    let changed = a.until_type("model_changed").await;
    assert_eq!(changed["model"], "sonnet", "{changed}");

    // A turn, so the session has its CLI and a conversation.
    let session = a.active_session();
    a.turn("REPLY hello there").await;

    let start = a.seen.len();
    a.send(json!({"type": "list_providers"})).await;
    let providers = a.until_type("provider_list").await;
    assert_eq!(
        providers["providers"][0]["name"], "claude-cli",
        "{providers}"
    );
    assert_eq!(providers["providers"][0]["capabilities"]["terminal"], false);

    a.send(json!({"type": "list_slash_commands"})).await;
    let commands = a.until_type("slash_commands").await;
    assert_eq!(commands["sessionId"], session.as_str());
    assert!(
        commands["commands"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "compact"),
        "{commands}"
    );

    a.send(json!({"type": "list_agents"})).await;
    let agents = a.until_type("agent_list").await;
    let agents: Vec<(String, String)> = agents["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            (
                a["name"].as_str().unwrap().into(),
                a["source"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        agents,
        [
            ("reviewer".into(), "project".into()),
            ("writer".into(), "user".into())
        ]
    );

    a.send(json!({"type": "list_conversations"})).await;
    let listed = a.until_type("conversations_list").await;
    let conversations = listed["conversations"].as_array().unwrap();
    assert_eq!(
        conversations.len(),
        1,
        "only the session that talked: {listed}"
    );
    assert_eq!(conversations[0]["sessionId"], session.as_str());
    assert_eq!(conversations[0]["preview"], "REPLY hello there");
    assert!(conversations[0]["conversationId"]
        .as_str()
        .is_some_and(|c| !c.is_empty() && c != session));

    // No terminal here: the resize is taken without an answer, and the connection goes on.
    a.send(json!({"type": "terminal_resize", "sessionId": session, "cols": 80, "rows": 24}))
        .await;
    a.send(json!({"type": "ping"})).await;
    a.until_type("pong").await;
    let refused: Vec<&Value> = a.seen[start..]
        .iter()
        .filter(|v| v["type"] == "error")
        .collect();
    assert!(refused.is_empty(), "{refused:?}");

    // A list for a session that does not exist is refused by its id.
    a.send(json!({"type": "list_agents", "sessionId": "s-nope"}))
        .await;
    let err = a.until_type("error").await;
    assert_eq!(err["code"], "SESSION_NOT_FOUND", "{err}");
}

/// A picture and a text file sent with an input reach Claude Code (the picture as an
/// image block the model sees), stay in the session's history for a phone that comes
/// back, are fetched again whole, and go with the session when it is closed.
#[tokio::test]
async fn attachments_reach_claude_replay_to_a_phone_that_comes_back_and_go_with_the_session() {
    use base64::Engine;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut a = w.client().await;
    a.send(json!({"type": "create_session", "name": "pictures"}))
        .await;
    a.until(|v| v["type"] == "session_switched" && v["name"] == "pictures")
        .await;
    let session = a.active_session();
    let picture = gradient_png(32, 24);
    a.send(json!({"type": "input", "data": "ATTACHED", "clientMessageId": "m-pic", "attachments": [
        {"type": "image", "mediaType": "image/png", "data": b64(&picture), "name": "IMG_0001.png"},
        {"type": "document", "mediaType": "text/markdown", "data": b64(b"# notes\n"), "name": "../notes.md"}
    ]}))
    .await;
    a.until(|v| v["type"] == "input_accepted" && v["clientMessageId"] == "m-pic")
        .await;
    a.until_type("agent_idle").await;
    let answer = streamed_text(&a.seen);
    assert!(
        answer.starts_with("Attached: image/png, "),
        "the model was sent the picture: {answer}"
    );
    // What Claude Code kept of the text file: its words, under its name.
    transcript_contains(&home, "The attached file `notes.md`").await;

    // A phone that comes back sees the input with its files listed, and fetches one.
    let mut b = w.client().await;
    b.send(json!({"type": "switch_session", "sessionId": session}))
        .await;
    let replayed = b
        .until(|v| v["type"] == "message" && v["clientMessageId"] == "m-pic")
        .await;
    let files = replayed["attachments"].as_array().unwrap();
    assert_eq!(files.len(), 2, "{replayed}");
    assert_eq!(files[0]["name"], "IMG_0001.png");
    assert_eq!(files[0]["mediaType"], "image/png");
    assert_eq!(files[0]["size"], picture.len());
    assert_eq!(
        files[1]["name"], "notes.md",
        "no path from the phone is kept"
    );
    let id = files[0]["id"].as_str().unwrap();
    b.send(json!({"type": "get_attachment", "attachmentId": id}))
        .await;
    let got = b.until_type("attachment").await;
    assert_eq!(got["data"], b64(&picture), "the same bytes");
    assert_eq!(got["sessionId"], session.as_str());

    // Only ids this session's history lists are read: not another file of the folder,
    // not a path.
    let folder = home.sessions_dir().join(format!("{session}.files"));
    assert!(folder.join(id).is_file());
    for bad in ["../../config.toml", "a-000000000000000000000000000000000"] {
        b.send(json!({"type": "get_attachment", "attachmentId": bad}))
            .await;
        let refused = b
            .until(|v| v["type"] == "error" && v["requestId"] == bad)
            .await;
        assert_eq!(refused["code"], "ATTACHMENT_NOT_FOUND", "{refused}");
    }

    // Closed: the files go too.
    a.send(json!({"type": "destroy_session", "sessionId": session}))
        .await;
    eventually("the closed session's files deleted", async || {
        holds(!folder.exists(), folder.display())
    })
    .await;
}

/// Files that cannot be stored (here the session's folder cannot be made, as on a full
/// disk) refuse the input whole, by its id, with the reason; nothing of it runs or
/// enters the history, and the session takes the next input.
#[tokio::test]
async fn an_input_whose_files_cannot_be_stored_is_refused_whole_and_says_why() {
    use base64::Engine;
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut a = w.client().await;
    let session = a.active_session();
    std::fs::write(
        home.sessions_dir().join(format!("{session}.files")),
        b"in the way",
    )
    .unwrap();
    let data = base64::engine::general_purpose::STANDARD.encode(gradient_png(4, 4));
    a.send(
        json!({"type": "input", "data": "REPLY never", "clientMessageId": "m-x", "attachments": [
        {"type": "image", "mediaType": "image/png", "data": data, "name": "x.png"}]}),
    )
    .await;
    let refused = a
        .until(|v| v["type"] == "error" && v["requestId"] == "m-x")
        .await;
    assert_eq!(refused["code"], "ATTACHMENT_NOT_STORED", "{refused}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("the message was not sent"),
        "{refused}"
    );
    let frames = a.turn("REPLY still here").await;
    assert_eq!(streamed_text(&frames), "still here");
    assert!(
        !a.seen
            .iter()
            .any(|v| v["type"] == "input_accepted" && v["clientMessageId"] == "m-x"),
        "the refused input was never taken"
    );
    let b = w.client().await;
    assert!(
        b.seen.iter().any(|v| v["content"] == "REPLY still here"),
        "the history replayed: {:?}",
        b.seen
    );
    assert!(
        !b.seen.iter().any(|v| v["content"] == "REPLY never"),
        "not in the history"
    );
}
