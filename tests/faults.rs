//! What the real CLI cannot be made to do on cue — crash, hang, print garbage, flood —
//! driven through `fake-claude`, plus the session machinery at a scale the real CLI
//! (0.6 s and 300 MB per process) would make slow.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use chroxy::protocol::{ClientInfo, ClientMsg, CreateSession, DeviceInfo, Input, SessionRef};
use chroxy::session::{Hub, Outbound, SessionsConfig};
use common::*;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

fn fake_claude() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fake-claude"))
}

#[tokio::test]
async fn an_agent_that_ignores_interrupt_is_stopped_and_the_session_recovers() {
    let home = Home::new();
    home.config("[worker]\ninterrupt_grace_ms = 500\n");
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut c = w.client().await;
    c.send(json!({"type": "input", "data": "HANG"})).await;
    c.until_type("agent_busy").await;
    c.send(json!({"type": "interrupt"})).await;
    let err = c.until_type("session_error").await;
    assert!(
        err["message"].as_str().unwrap().contains("did not stop"),
        "{err}"
    );
    c.until_type("agent_idle").await;
    let frames = c.turn("hello again").await;
    assert_eq!(streamed_text(&frames), "hello again");
}

#[tokio::test]
async fn a_crashing_agent_is_reported_and_restarted_with_resume() {
    let home = Home::new();
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut c = w.client().await;
    c.turn("first").await;
    c.send(json!({"type": "input", "data": "CRASH"})).await;
    let err = c.until_type("session_error").await;
    assert!(
        err["message"].as_str().unwrap().contains("exit status 3"),
        "{err}"
    );
    c.until_type("agent_idle").await;
    let frames = c.turn("after the crash").await;
    assert_eq!(streamed_text(&frames), "after the crash");
    assert!(
        w.log_text().contains("resume=true"),
        "the new agent was not resumed"
    );
}

#[tokio::test]
async fn garbage_on_the_agents_stdout_is_skipped_and_never_reaches_phones() {
    let home = Home::new();
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut c = w.client().await;
    let frames = c.turn("GARBAGE").await;
    assert_eq!(streamed_text(&frames), "GARBAGE");
    let all = serde_json::to_string(&frames).unwrap();
    assert!(
        !all.contains("Segmentation fault") && !all.contains("not json"),
        "{all}"
    );
    assert!(!frames
        .iter()
        .any(|v| v["type"] == "session_error" || v["type"] == "error"));
    assert!(w.log_text().contains("ignoring agent output"));
}

#[tokio::test]
async fn a_slow_phone_is_closed_with_1013_and_the_others_get_everything() {
    let home = Home::new();
    // The queue absorbs a reading phone's stalls of ~0.25 s (a loaded CI machine),
    // never the ~16 MB a phone that does not read at all falls behind.
    home.config("[worker]\nclient_queue = 4096\ncoalesce_ms = 0\n");
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut fast = w.client().await;
    let mut slow = w.client().await; // authenticated, then never reads while the flood runs
                                     // ~16 MB of frames at a pace a reading phone keeps up with: far more than the kernel's
                                     // socket buffers and the 4096-frame queue hold for one that does not read.
    let n = 150_000;
    fast.send(json!({"type": "input", "data": format!("BENCH {n} 60")}))
        .await;
    fast.until_type("agent_idle").await;
    let deltas = fast
        .seen
        .iter()
        .filter(|v| v["type"] == "stream_delta")
        .count();
    assert_eq!(deltas, n, "the reading phone lost deltas");
    assert_eq!(slow.closed().await, Some(1013));
    // It comes back and resyncs from the replay, which holds the whole answer.
    let back = w.client().await;
    let replayed = back
        .seen
        .iter()
        .find(|v| v["type"] == "message" && v["messageType"] == "response")
        .unwrap();
    assert_eq!(
        replayed["content"].as_str().unwrap().matches(';').count(),
        n
    );
}

#[tokio::test]
async fn an_input_its_cli_read_but_the_disk_never_saw_is_taken_once_by_the_successor() {
    // A worker killed between writing an input to its CLI's stdin and having it on disk
    // leaves a CLI running a turn that the saved record knows nothing of; the phone,
    // never told `input_accepted`, sends the input again. The supervisor's note (sent
    // before the stdin write) carries the input to the successor: the resend is taken,
    // not run a second time, and the turn the CLI runs finishes here.
    let HubScene {
        paths,
        project,
        hub,
        mut phone,
        _dir,
    } = HubScene::start().await;
    let attached = phone.until(|v| v["type"] == "session_switched").await;
    let session = attached["sessionId"].as_str().unwrap().to_owned();

    // The lost worker's CLI, the input already on its stdin.
    let mut cli = lost_cli(&project);
    let line = json!({"type": "user", "message": {"role": "user",
        "content": [{"type": "text", "text": "carried over"}]}});
    let stdin = cli.stdin.as_mut().unwrap();
    std::io::Write::write_all(stdin, format!("{line}\n").as_bytes()).unwrap();
    let input = chroxy::protocol::ServerMsg::Message {
        message_type: chroxy::protocol::MessageType::UserInput,
        content: "carried over".into(),
        timestamp: chroxy::protocol::now_ms(),
        session_id: session.clone(),
        client_message_id: Some("m1".into()),
        attachments: vec![],
    };
    let note = chroxy::keeper::AgentNote {
        busy: true,
        input: Some(std::sync::Arc::new(input)),
        ..Default::default()
    };
    hand_over(&hub, &session, &mut cli, note).await;

    let send = |data: &str, id: &str| {
        ClientMsg::Input(Input {
            data: data.into(),
            session_id: Some(session.clone()),
            client_message_id: Some(id.into()),
            attachments: vec![],
        })
    };
    hub.handle(&phone.id, send("carried over", "m1")).await;
    phone
        .until(|v| v["type"] == "input_accepted" && v["clientMessageId"] == "m1")
        .await;
    phone.until(|v| v["type"] == "result").await;
    // The next input is the next turn: had the resend been run again, the CLI would
    // answer it first.
    hub.handle(&phone.id, send("next", "m2")).await;
    phone.until(|v| v["type"] == "result").await;
    assert_eq!(streamed_text(&phone.frames), "carried overnext");
    hub.shutdown().await;
    let _ = cli.wait();
    // And the record on disk has each input once, in order.
    let file = paths.sessions_dir().join(format!("{session}.json"));
    let record: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let inputs: Vec<&str> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["messageType"] == "user_input")
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(inputs, ["carried over", "next"]);
}

/// A CLI as a lost worker left it: `fake-claude` in `project`, its pipes still to hand over.
fn lost_cli(project: &std::path::Path) -> std::process::Child {
    std::process::Command::new(fake_claude())
        .current_dir(project)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Hands `cli` to `hub` for `session` with what its lost worker noted, as the
/// supervisor's keeper does.
async fn hand_over(
    hub: &Hub,
    session: &str,
    cli: &mut std::process::Child,
    note: chroxy::keeper::AgentNote,
) {
    let pid = cli.id();
    hub.adopt(chroxy::keeper::Kept {
        agent: chroxy::keeper::AgentId {
            mark: format!("lost.{session}.1"),
            session: session.to_owned(),
            pid,
            start_ticks: chroxy::process::stat_of(pid).map(|s| s.start_ticks),
        },
        pipes: chroxy::keeper::Pipes {
            stdin: cli.stdin.take().unwrap().into(),
            stdout: cli.stdout.take().unwrap().into(),
            stderr: cli.stderr.take().unwrap().into(),
        },
        note,
    })
    .await;
}

#[tokio::test]
async fn a_turn_whose_end_the_phones_saw_but_the_disk_never_did_is_whole_on_the_successor() {
    // A worker killed after telling its phones a turn was over and before its disk had
    // it leaves an idle CLI and a saved record whose last input has no answer. The
    // supervisor's note carries the turn's end: the successor is idle (not waiting for
    // a result the CLI already gave), replays the turn once, and the CLI takes the next
    // input.
    let HubScene {
        paths,
        project,
        hub,
        mut phone,
        _dir,
    } = HubScene::start().await;
    let attached = phone.until(|v| v["type"] == "session_switched").await;
    let session = attached["sessionId"].as_str().unwrap().to_owned();
    let mut cli = lost_cli(&project);
    let entry = |v: Value| -> std::sync::Arc<chroxy::protocol::ServerMsg> {
        std::sync::Arc::new(serde_json::from_value(v).unwrap())
    };
    let now = chroxy::protocol::now_ms();
    let ended = vec![
        entry(
            json!({"type": "message", "messageType": "user_input", "content": "the lost turn",
            "timestamp": now, "sessionId": session, "clientMessageId": "m1"}),
        ),
        entry(
            json!({"type": "message", "messageType": "response", "content": "its answer",
            "timestamp": now, "sessionId": session}),
        ),
        entry(
            json!({"type": "result", "cost": 0.01, "duration": 5, "usage": {},
            "sessionId": session}),
        ),
    ];
    let note = chroxy::keeper::AgentNote {
        busy: false,
        ended,
        ..Default::default()
    };
    hand_over(&hub, &session, &mut cli, note).await;

    // A phone that comes now is shown the turn once, and an idle session.
    let mut back = Phone::join(&hub);
    hub.welcome(&back.id).await;
    back.until(|v| v["type"] == "history_replay_end").await;
    let count = |frames: &[Value], what: &str| {
        frames
            .iter()
            .filter(|v| v["type"] == "message" && v["content"] == what)
            .count()
    };
    assert_eq!(count(&back.frames, "the lost turn"), 1, "{:?}", back.frames);
    assert_eq!(count(&back.frames, "its answer"), 1, "{:?}", back.frames);
    let list = back
        .frames
        .iter()
        .find(|v| v["type"] == "session_list")
        .unwrap();
    assert_eq!(list["sessions"][0]["isBusy"], false, "{list}");

    // The same CLI takes the next input.
    let next = ClientMsg::Input(Input {
        data: "next".into(),
        session_id: Some(session.clone()),
        client_message_id: Some("m2".into()),
        attachments: vec![],
    });
    hub.handle(&back.id, next).await;
    back.until(|v| v["type"] == "result").await;
    assert_eq!(streamed_text(&back.frames), "next");
    hub.shutdown().await;
    let _ = cli.wait();
    let file = paths.sessions_dir().join(format!("{session}.json"));
    let record: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    let kinds: Vec<String> = record["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["type"].as_str().unwrap(),
                m["content"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "message the lost turn",
            "message its answer",
            "result ",
            "message next",
            "message next",
            "result "
        ],
        "{kinds:?}"
    );
}

/// The supervisor's end of a keeper channel, read without waiting: what the worker had
/// sent it by the moment of the read.
struct SupervisorEnd {
    socket: std::os::unix::net::UnixDatagram,
    last: Option<chroxy::keeper::AgentNote>,
}

impl SupervisorEnd {
    fn of(socket: &tokio_seqpacket::UnixSeqpacket) -> Self {
        let own = std::os::fd::AsFd::as_fd(socket)
            .try_clone_to_owned()
            .unwrap();
        let socket = std::os::unix::net::UnixDatagram::from(own);
        socket.set_nonblocking(true).unwrap();
        Self { socket, last: None }
    }

    /// The last note the worker sent so far.
    fn note(&mut self) -> &chroxy::keeper::AgentNote {
        let mut packet = vec![0u8; 256 * 1024];
        loop {
            match self.socket.recv(&mut packet) {
                Ok(n) => {
                    let msg: chroxy::keeper::Msg = serde_json::from_slice(&packet[..n]).unwrap();
                    if let chroxy::keeper::Msg::Note { note, .. } = msg {
                        self.last = Some(note);
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => panic!("reading the supervisor's end: {e}"),
            }
        }
        self.last
            .as_ref()
            .expect("the supervisor was told of the CLI")
    }
}

fn content(msg: &chroxy::protocol::ServerMsg) -> Value {
    serde_json::to_value(msg).unwrap()
}

#[tokio::test]
async fn what_a_phone_is_shown_of_a_turn_is_in_the_supervisors_note_first() {
    // Were the worker killed right after a phone was shown that a turn runs, that the
    // CLI asks something, or that the turn is over, its successor, taking the CLI over
    // with the supervisor's note and the disk, must know it too: a turn it knew nothing
    // of would run twice, a prompt would never be asked again (the CLI asks once), and a
    // successor that believed the CLI busy would wait for a result the CLI already gave
    // and replay the conversation without it. So at each of these moments the
    // supervisor's end of the keeper channel already holds it, read there and then.
    let (worker_end, supervisor_end) = tokio_seqpacket::UnixSeqpacket::pair().unwrap();
    let (link, _adopted) = chroxy::keeper::Link::over(worker_end, "w1");
    let mut supervisor = SupervisorEnd::of(&supervisor_end);
    let HubScene {
        hub,
        mut phone,
        _dir,
        ..
    } = HubScene::start_with(Some(link)).await;
    let attached = phone.until(|v| v["type"] == "session_switched").await;
    let input = ClientMsg::Input(Input {
        data: "PERMISSION".into(),
        session_id: attached["sessionId"].as_str().map(str::to_owned),
        client_message_id: Some("m1".into()),
        attachments: vec![],
    });
    let (phone_id, answers) = (phone.id.clone(), hub.clone());
    // The phone is a task of its own: on this single-threaded runtime tasks run in the
    // order they were woken, so it runs before any task the session wakes after telling
    // it (the link's, sending a note), and nothing runs between its frame and its read.
    let phone = tokio::spawn(async move {
        phone.until(|v| v["type"] == "agent_busy").await;
        let note = supervisor.note();
        assert!(note.busy, "{note:?}");
        let input = note.input.as_deref().map(content);
        assert_eq!(input.unwrap()["content"], "PERMISSION", "{note:?}");

        let asked = phone.until(|v| v["type"] == "permission_request").await;
        let note = supervisor.note();
        let asks: Vec<&str> = note.asks.iter().map(|a| a.request_id.as_str()).collect();
        assert_eq!(asks, [asked["requestId"].as_str().unwrap()], "{note:?}");
        assert_eq!(note.asks[0].request["tool_name"], "Bash");

        let allow = json!({"type": "permission_response", "requestId": asked["requestId"], "decision": "allow"});
        answers
            .handle(&phone.id, serde_json::from_value(allow).unwrap())
            .await;
        phone.until(|v| v["type"] == "result").await;
        let note = supervisor.note();
        assert!(!note.busy, "{note:?}");
        let ended: Vec<Value> = note.ended.iter().map(|m| content(m)).collect();
        assert_eq!(ended.first().unwrap()["content"], "PERMISSION", "{ended:?}");
        assert!(
            ended
                .iter()
                .any(|m| m["messageType"] == "response" && m["content"] == "permission allow"),
            "{ended:?}"
        );
        assert_eq!(ended.last().unwrap()["type"], "result", "{ended:?}");
    });
    hub.handle(&phone_id, input).await;
    phone.await.unwrap();
    hub.shutdown().await;
}

/// A hub of sessions run by `fake-claude` in a home of its own, with no supervisor, and
/// a phone it has welcomed.
struct HubScene {
    paths: chroxy::store::Paths,
    /// The sessions' default directory.
    project: PathBuf,
    hub: Hub,
    phone: Phone,
    _dir: tempfile::TempDir,
}

impl HubScene {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    /// With the CLIs' pipes and notes going to `keeper`, as under a supervisor.
    async fn start_with(keeper: Option<chroxy::keeper::Link>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let paths = chroxy::store::Paths::under(dir.path().join("home"));
        let project = dir.path().canonicalize().unwrap();
        let hub = Hub::start(SessionsConfig {
            default_cwd: project.clone(),
            sessions_dir: paths.sessions_dir(),
            claude: Some(fake_claude()),
            coalesce: Duration::from_millis(50),
            models: vec![],
            agent_env: Default::default(),
            permission_timeout: Duration::from_secs(300),
            interrupt_grace: Duration::from_secs(10),
            warm_clis: 2,
            cli_idle: Some(Duration::from_secs(600)),
            rules: chroxy::rules::RuleStore::new(&paths),
            spend: chroxy::session::spend::Spend::new(&paths),
            allow_bypass: false,
            claude_config_dir: None,
            welcome_notice: None,
            push: chroxy::push::WorkerPush::new(&paths, &Default::default(), false, None).0,
            deploy: None,
            keeper,
            standby: false,
        })
        .await;
        let phone = Phone::join(&hub);
        hub.welcome(&phone.id).await;
        Self {
            paths,
            project,
            hub,
            phone,
            _dir: dir,
        }
    }
}

/// A phone registered directly with the hub; collects what the hub sends it.
struct Phone {
    id: String,
    rx: chroxy::session::QueueRx,
    frames: Vec<Value>,
}

impl Phone {
    fn join(hub: &Hub) -> Self {
        let id = chroxy::session::new_id("c");
        let (tx, rx) = chroxy::session::queue(100_000, usize::MAX);
        let device = DeviceInfo {
            device_name: Some("hub-test".into()),
            ..Default::default()
        };
        let info = ClientInfo {
            client_id: id.clone(),
            device,
        };
        hub.clients()
            .register(info, None, tx, CancellationToken::new());
        Self {
            id,
            rx,
            frames: Vec::new(),
        }
    }

    async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let out = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .expect("no frame in time")
                .expect("hub gone");
            let frames = match out {
                Outbound::Frame(f) => vec![f],
                Outbound::Batch(fs) => fs,
            };
            for f in frames {
                let v: Value = serde_json::from_str(&f).unwrap();
                self.frames.push(v.clone());
                if pred(&v) {
                    return v;
                }
            }
        }
    }
}

#[tokio::test]
async fn two_hundred_sessions_with_pending_prompts_leave_nothing_behind() {
    let HubScene {
        paths,
        hub,
        mut phone,
        _dir,
        ..
    } = HubScene::start().await;
    let me = std::process::id();
    for round in 0..50 {
        // Four sessions at a time beside the default one, each with a prompt waiting.
        let mut ids = Vec::new();
        for k in 0..4 {
            let name = format!("r{round}-{k}");
            hub.handle(
                &phone.id,
                ClientMsg::CreateSession(CreateSession {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
            )
            .await;
            let switched = phone
                .until(|v| v["type"] == "session_switched" && v["name"] == name.as_str())
                .await;
            let id = switched["sessionId"].as_str().unwrap().to_owned();
            hub.handle(
                &phone.id,
                ClientMsg::Input(Input {
                    data: "PERMISSION".into(),
                    session_id: Some(id.clone()),
                    client_message_id: None,
                    attachments: vec![],
                }),
            )
            .await;
            phone
                .until(|v| v["type"] == "permission_request" && v["sessionId"] == id.as_str())
                .await;
            ids.push(id);
        }
        assert_eq!(hub.pending_prompts(), 4);
        for id in ids {
            hub.handle(
                &phone.id,
                ClientMsg::DestroySession(SessionRef {
                    session_id: id.clone(),
                }),
            )
            .await;
            phone
                .until(|v| v["type"] == "permission_expired" && v["sessionId"] == id.as_str())
                .await;
        }
        assert_eq!(
            hub.pending_prompts(),
            0,
            "round {round}: prompts outlived their sessions"
        );
        assert_eq!(hub.session_count(), 1);
        // (Other tests here run workers as children of this process too: count agents only.)
        let agents: Vec<u32> = children_of(me)
            .into_iter()
            .filter(|pid| {
                std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|exe| exe == fake_claude())
            })
            .collect();
        assert!(
            agents.is_empty(),
            "round {round}: agent processes outlived their sessions: {agents:?}"
        );
    }
    let errors: Vec<&Value> = phone
        .frames
        .iter()
        .filter(|v| v["type"] == "error")
        .collect();
    assert!(errors.is_empty(), "{errors:?}");
    hub.shutdown().await;
    // Only the default session's file is left.
    assert_eq!(std::fs::read_dir(paths.sessions_dir()).unwrap().count(), 1);
}
