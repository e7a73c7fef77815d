//! What a hostile or broken client gets out of the public port: 10 000 frames that are
//! malformed, oversized, of unknown types, sent before `auth`, or floods of valid
//! requests, from 4 concurrent attackers while a bystander phone stays connected. The
//! figure that must hold is "no crash"; the rest says how each frame was answered and
//! how fast.

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::Message;

use crate::client::{auth_msg, now_ns, open, Incoming, Ws, STEP};
use crate::common::supervisor::alive;
use crate::report::{secs, thousands, Figure, Row};
use crate::system::{status_bytes, System};
use crate::Plan;

/// Concurrent attackers.
const ATTACKERS: usize = 4;
/// The protocol's frame limit.
const MIB: usize = 1024 * 1024;

/// One connection's worth of attack.
#[derive(Clone)]
enum Script {
    /// A junk first frame instead of `auth`.
    PreAuth(&'static str, Message),
    /// Authenticated, then frames one at a time, each waiting for its answer; whether
    /// the server must close the connection after the last one.
    Lockstep(&'static str, Vec<Message>, bool),
    /// Authenticated, then a burst of valid requests without waiting, then the answers.
    Flood(Vec<Message>),
}

impl Script {
    fn frames(&self) -> usize {
        match self {
            Script::PreAuth(..) => 1,
            Script::Lockstep(_, f, _) | Script::Flood(f) => f.len(),
        }
    }
}

fn text(s: impl Into<String>) -> Message {
    Message::text(s.into())
}

fn obj(v: Value) -> Message {
    text(v.to_string())
}

/// The attack, for `total` frames (a multiple of 1000): per 1000, 50 junk first
/// frames, 200 frame-level faults (5 per connection: the 5th closes it), 1 frame over
/// 8 MiB, 450 field-level faults (50 per connection), and 299 flood frames.
fn scripts(total: usize) -> Vec<Script> {
    assert!(
        total >= 1000 && total.is_multiple_of(1000),
        "hostile frames come in thousands"
    );
    let units = total / 1000;
    let over_limit = || {
        // Valid JSON, one byte over the limit.
        let pad = MIB + 1 - r#"{"type":"input","data":""}"#.len();
        text(format!(
            r#"{{"type":"input","data":"{}"}}"#,
            "a".repeat(pad)
        ))
    };
    let deep = || {
        text(format!(
            r#"{{"type":"ping","x":{}{}}}"#,
            "[".repeat(100_000),
            "]".repeat(100_000)
        ))
    };
    let pre_auth = |i: usize| -> Script {
        match i % 6 {
            0 => Script::PreAuth("before auth: not JSON", text("hello?")),
            1 => Script::PreAuth(
                "before auth: input",
                obj(json!({"type": "input", "data": "rm -rf /"})),
            ),
            2 => Script::PreAuth(
                "before auth: binary",
                Message::binary(vec![0u8, 159, 146, 150]),
            ),
            3 => Script::PreAuth(
                "before auth: auth without token",
                obj(json!({"type": "auth"})),
            ),
            4 => Script::PreAuth(
                "before auth: token not a string",
                obj(json!({"type": "auth", "token": 12345})),
            ),
            _ => Script::PreAuth("before auth: over 1 MiB", over_limit()),
        }
    };
    let bad = |i: usize| -> Script {
        let frames = (0..5)
            .map(|k| match (i + k) % 8 {
                0 => text("{\"type\":\"input\",\"data\":"),
                1 => text("[1,2,3]"),
                2 => text("\"just a string\""),
                3 => text("null"),
                4 => Message::binary(vec![0xffu8; 64]),
                5 => deep(),
                6 => over_limit(),
                _ => text("\u{feff}{\"type\":\"ping\"}"),
            })
            .collect();
        Script::Lockstep(
            "frame-level faults (not JSON / object, binary, over 1 MiB, nested 100 000 deep)",
            frames,
            true,
        )
    };
    let huge = || Script::Lockstep("over 8 MiB", vec![text("x".repeat(9 * MIB))], true);
    let field = |i: usize| -> Script {
        let frames = (0..50)
            .map(|k| match (i * 50 + k) % 16 {
                0 => obj(json!({"type": "hack_the_planet"})),
                1 => obj(json!({"type": "__proto__", "constructor": {"prototype": {}}})),
                2 => obj(json!({"type": "x".repeat(10_000)})),
                3 => obj(json!({"type": ""})),
                4 => obj(json!({"no_type": true})),
                5 => obj(json!({"type": 42})),
                6 => obj(json!({"type": "input"})),
                7 => obj(json!({"type": "input", "data": 5})),
                8 => obj(json!({"type": "input", "data": "a".repeat(100_001)})),
                9 => obj(
                    json!({"type": "rename_session", "sessionId": "s-1", "name": "n".repeat(201)}),
                ),
                10 => obj(
                    json!({"type": "permission_response", "requestId": "r", "decision": "maybe"}),
                ),
                11 => obj(json!({"type": "switch_session"})),
                12 => obj(json!({"type": "set_permission_mode", "mode": ["auto"]})),
                13 => {
                    obj(json!({"type": "user_question_response", "toolUseId": 7, "answer": null}))
                }
                14 => obj(json!({"type": "create_session", "name": {"$gt": ""}})),
                _ => obj(json!({"type": "auth", "token": "again"})),
            })
            .collect();
        Script::Lockstep(
            "field-level faults (unknown type, missing / wrong / too long fields)",
            frames,
            false,
        )
    };
    let flood = |len: usize| -> Script {
        let frames = (0..len)
            .map(|k| match k % 6 {
                0 => obj(json!({"type": "ping"})),
                1 => obj(json!({"type": "list_sessions"})),
                2 => obj(json!({"type": "permission_response", "requestId": format!("p-{k}"), "decision": "allow"})),
                3 => obj(json!({"type": "switch_session", "sessionId": "s-nonexistent"})),
                4 => obj(json!({"type": "set_model", "model": "gpt-∞"})),
                _ => obj(json!({"type": "create_session", "cwd": "/nonexistent/dir"})),
            })
            .collect();
        Script::Flood(frames)
    };
    let mut out = Vec::new();
    for u in 0..units {
        let mut unit = Vec::new();
        unit.extend((0..50).map(|i| pre_auth(u * 50 + i)));
        unit.extend((0..40).map(|i| bad(u * 40 + i)));
        unit.push(huge());
        unit.extend((0..9).map(|i| field(u * 9 + i)));
        unit.extend([100, 100, 99].map(flood));
        // Interleave the kinds, so each attacker sends a mix.
        let mut mixed: Vec<Script> = Vec::with_capacity(unit.len());
        let mut i = 0;
        while !unit.is_empty() {
            i = (i + 37) % unit.len();
            mixed.push(unit.swap_remove(i));
        }
        out.extend(mixed);
    }
    assert_eq!(out.iter().map(Script::frames).sum::<usize>(), total);
    out
}

/// What came back for one frame.
struct Answer {
    kind: &'static str,
    label: String,
    latency: f64,
}

/// What one attacker saw.
#[derive(Default)]
struct Tally {
    answers: Vec<Answer>,
    /// Close codes of connections the server ended, by code ("dropped": no close frame).
    closes: BTreeMap<String, usize>,
}

pub async fn storm(sys: &System, plan: &Plan, agent: &'static str) -> (Figure, u64) {
    let supervisor = sys.supervisor_pid();
    let before = sys.serving().await;
    let worker = before.worker.pid.expect("a serving worker");
    let rss_before = status_bytes(worker, "VmRSS");
    // A phone that only watches: it must be served all along and answered after.
    let mut bystander = sys.phone("bystander").await;
    let (stop_tx, mut stop_rx) = tokio::sync::oneshot::channel::<()>();
    let watcher = tokio::spawn(async move {
        let mut seen = 0u64;
        loop {
            tokio::select! {
                _ = &mut stop_rx => return (bystander, seen, None),
                got = bystander.next(Instant::now() + STEP * 10, "anything during the storm") => match got {
                    Incoming::Frame(..) => seen += 1,
                    Incoming::Closed(code) => return (bystander, seen, Some(code)),
                },
            }
        }
    });

    let all = scripts(plan.hostile);
    let started = Instant::now();
    let mut attackers = Vec::new();
    for a in 0..ATTACKERS {
        let mine: Vec<Script> = all.iter().skip(a).step_by(ATTACKERS).cloned().collect();
        let port = sys.public;
        attackers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            for script in mine {
                attack(port, script, &mut tally).await;
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for a in attackers {
        let t = a.await.expect("an attacker panicked");
        tally.answers.extend(t.answers);
        for (code, n) in t.closes {
            *tally.closes.entry(code).or_default() += n;
        }
    }
    let took = started.elapsed();
    let _ = stop_tx.send(());
    let (mut bystander, bystander_frames, bystander_closed) =
        watcher.await.expect("the bystander panicked");

    // Crashes: the processes and the status page's restart count, before and after.
    let after = sys.status().await;
    let mut crashes = 0u64;
    if !alive(supervisor) {
        crashes += 1;
    }
    if after.worker.pid != Some(worker) || !alive(worker) {
        crashes += 1;
    }
    crashes += u64::from(after.worker.restarts.saturating_sub(before.worker.restarts));
    let rss_after = if alive(worker) {
        status_bytes(worker, "VmRSS")
    } else {
        0
    };
    assert!(
        bystander_closed.is_none(),
        "the bystander phone was disconnected during the storm ({bystander_closed:?})"
    );
    bystander.send(json!({"type": "ping"})).await;
    bystander
        .until_type("pong", "the bystander's ping after the storm")
        .await;

    let sent = tally.answers.len();
    assert_eq!(
        sent, plan.hostile,
        "every frame has an answer (or the close that ended its connection)"
    );
    let latencies: Vec<f64> = tally.answers.iter().map(|a| a.latency).collect();
    let mut figure = Figure::default();
    figure.rows.push(Row::count(
        "hostile frames → worker or supervisor crashes / restarts",
        agent,
        format!("{} frames", thousands(sent as u64)),
        crashes,
        Some(("0", crashes == 0)),
    ));
    figure.rows.push(Row::percentiles(
        "hostile frame → its answer (error, rate_limited, close …)",
        agent,
        format!("{} frames", thousands(sent as u64)),
        &latencies,
        secs,
        None,
    ));
    let mut by_kind: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for a in &tally.answers {
        *by_kind
            .entry(a.kind)
            .or_default()
            .entry(a.label.as_str())
            .or_default() += 1;
    }
    let mut lines = vec![
        format!(
            "hostile: {} frames in {} over {} connections; the bystander phone got {bystander_frames} frames meanwhile, stayed connected and was answered after; worker RSS {} before, {} after",
            thousands(sent as u64),
            secs(took.as_secs_f64()),
            thousands(all.len() as u64),
            crate::report::mb(rss_before as f64),
            crate::report::mb(rss_after as f64),
        ),
        String::new(),
        "| hostile frames sent | frames | answers |".into(),
        "|---|---:|---|".into(),
    ];
    for (kind, answers) in &by_kind {
        let n: usize = answers.values().sum();
        let list: Vec<String> = answers.iter().map(|(l, c)| format!("{l} ×{c}")).collect();
        lines.push(format!(
            "| {kind} | {} | {} |",
            thousands(n as u64),
            list.join(", ")
        ));
    }
    let closes: Vec<String> = tally
        .closes
        .iter()
        .map(|(c, n)| format!("{c} ×{n}"))
        .collect();
    lines.push(format!(
        "| connections ended by the server | {} | {} |",
        tally.closes.values().sum::<usize>(),
        closes.join(", ")
    ));
    figure.details.push(lines.join("\n"));
    (figure, crashes)
}

/// Runs one script on a fresh connection.
async fn attack(port: u16, script: Script, tally: &mut Tally) {
    let deadline = Instant::now() + STEP;
    let mut ws = open(port)
        .await
        .unwrap_or_else(|e| panic!("an attacker cannot connect through the public port ({e}): a crashed worker makes it answer 503"));
    match script {
        Script::PreAuth(kind, frame) => {
            let sent = Instant::now();
            let label = match send(&mut ws, frame, deadline).await {
                Err(e) => e,
                Ok(()) => answer(&mut ws, deadline).await,
            };
            tally.answers.push(Answer {
                kind,
                label: label.clone(),
                latency: sent.elapsed().as_secs_f64(),
            });
            // `auth_fail` must be followed by the close (4001).
            let close = if label.starts_with("close") || label == "dropped" {
                Some(label)
            } else {
                closing(&mut ws, Duration::from_secs(5)).await
            };
            *tally
                .closes
                .entry(close.unwrap_or_else(|| "kept open after auth_fail".into()))
                .or_default() += 1;
        }
        Script::Lockstep(kind, frames, must_close) => {
            authenticate(&mut ws, deadline).await;
            let count = frames.len();
            for (i, frame) in frames.into_iter().enumerate() {
                let sent = Instant::now();
                let label = match send(&mut ws, frame, deadline).await {
                    Err(e) => e,
                    Ok(()) => answer(&mut ws, deadline).await,
                };
                let closed = label.starts_with("close") || label == "dropped";
                tally.answers.push(Answer {
                    kind,
                    label: label.clone(),
                    latency: sent.elapsed().as_secs_f64(),
                });
                if closed {
                    assert_eq!(i + 1, count, "the server ended a `{kind}` connection after {} of {count} frames ({label})", i + 1);
                    *tally.closes.entry(label).or_default() += 1;
                    return;
                }
            }
            if must_close {
                // The last fault's answer is followed by the close (PROTOCOL.md: 5 in a minute).
                let label = closing(&mut ws, Duration::from_secs(5)).await;
                *tally
                    .closes
                    .entry(label.unwrap_or_else(|| "kept open after the faults".into()))
                    .or_default() += 1;
            } else {
                close(&mut ws, deadline).await;
            }
        }
        Script::Flood(frames) => {
            authenticate(&mut ws, deadline).await;
            let mut sent = Vec::with_capacity(frames.len());
            for frame in frames {
                sent.push(Instant::now());
                if let Err(e) = send(&mut ws, frame, deadline).await {
                    panic!("flood send failed: {e}");
                }
            }
            for at in sent {
                let label = answer(&mut ws, deadline).await;
                assert!(
                    !label.starts_with("close") && label != "dropped",
                    "a flood connection was closed: {label}"
                );
                tally.answers.push(Answer {
                    kind: "floods of valid requests (100 per connection)",
                    label,
                    latency: at.elapsed().as_secs_f64(),
                });
            }
            close(&mut ws, deadline).await;
        }
    }
}

/// Sends one frame; `Err("dropped")` if the server has gone. A server that stops
/// reading (and never closes) fails the bench at `deadline` instead of hanging it.
async fn send(ws: &mut Ws, frame: Message, deadline: Instant) -> Result<(), String> {
    timeout_at(deadline, ws.send(frame))
        .await
        .unwrap_or_else(|_| panic!("an attacker's frame was not taken within {STEP:?}"))
        .map_err(|_| "dropped".to_owned())
}

/// Closes our side, bounded: the server may already be gone.
async fn close(ws: &mut Ws, deadline: Instant) {
    let _ = timeout_at(deadline, ws.close(None)).await;
}

/// Authenticates and reads the welcome through its last frames.
async fn authenticate(ws: &mut Ws, deadline: Instant) {
    send(
        ws,
        Message::text(auth_msg("attacker").to_string()),
        deadline,
    )
    .await
    .expect("sending auth");
    // The hub's part of the welcome ends with the notification settings; the
    // session's with `claude_ready`.
    let (mut settled, mut ready) = (false, false);
    while !(settled && ready) {
        match read(ws, deadline).await {
            Incoming::Frame(v, _) => match v["type"].as_str() {
                Some("auth_fail") => panic!("an attacker's auth was refused: {v}"),
                Some("push_settings") => settled = true,
                Some("claude_ready" | "session_error") => ready = true,
                _ => {}
            },
            Incoming::Closed(code) => {
                panic!("an attacker was closed during the welcome ({code:?})")
            }
        }
    }
}

/// The answer to the frame just sent: the next frame that is not someone else's news.
async fn answer(ws: &mut Ws, deadline: Instant) -> String {
    loop {
        match read(ws, deadline).await {
            Incoming::Frame(v, _) => {
                let ty = v["type"].as_str().unwrap_or("?").to_owned();
                match ty.as_str() {
                    "client_joined"
                    | "client_left"
                    | "claude_ready"
                    | "available_models"
                    | "available_permission_modes"
                    | "push_settings" => continue,
                    "error" => return format!("error {}", v["code"].as_str().unwrap_or("?")),
                    "auth_fail" => {
                        return format!("auth_fail {}", v["reason"].as_str().unwrap_or("?"))
                    }
                    _ => return ty,
                }
            }
            Incoming::Closed(Some(code)) => return format!("close {code}"),
            Incoming::Closed(None) => return "dropped".into(),
        }
    }
}

/// Waits up to `wait` for the server to close the connection; `None`: it kept it open
/// (then we close it).
async fn closing(ws: &mut Ws, wait: Duration) -> Option<String> {
    let soon = Instant::now() + wait;
    loop {
        match timeout_at(soon, ws.next()).await {
            Err(_) => {
                close(ws, soon + STEP).await;
                return None;
            }
            Ok(Some(Ok(Message::Close(frame)))) => {
                return Some(frame.map_or("close (no code)".into(), |f| {
                    format!("close {}", u16::from(f.code))
                }))
            }
            Ok(Some(Ok(Message::Text(t)))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or_default();
                if !matches!(v["type"].as_str(), Some("client_joined" | "client_left")) {
                    panic!("an unexpected frame after the answer: {v}");
                }
            }
            Ok(Some(Ok(_))) => {}
            Ok(Some(Err(_)) | None) => return Some("dropped".into()),
        }
    }
}

async fn read(ws: &mut Ws, deadline: Instant) -> Incoming {
    loop {
        let msg = timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("an attacker got no answer within {STEP:?}"));
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str())
                    .unwrap_or_else(|e| panic!("the server sent a frame that is not JSON ({e})"));
                return Incoming::Frame(v, now_ns());
            }
            Some(Ok(Message::Close(frame))) => {
                return Incoming::Closed(frame.map(|f| u16::from(f.code)))
            }
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Incoming::Closed(None),
        }
    }
}
