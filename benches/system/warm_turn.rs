//! A warm turn and its floor: the same turn (`REPLY …`, answered by the scripted
//! model) through the whole system, input → `result` on the phone, and by the bare
//! CLI with nothing around it, its stdin line → its `result` line, turn about in the
//! same run. The difference of the medians is what Chroxy adds to a turn.

use std::path::Path;
use std::process::Stdio;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::time::Instant;

use crate::client::str_field;
use crate::report::{pct, secs, sorted, Figure, Row};
use crate::system::System;
use crate::Plan;

/// The text of every timed turn: a short answer, so the turn is the bridge's and the
/// CLI's, not the model's.
const TURN: &str = "REPLY the warm answer";

pub async fn run(
    sys: &System,
    plan: &Plan,
    agent: &'static str,
    claude: &Path,
    env: &[(String, String)],
) -> Figure {
    // Through Chroxy: a phone on a new session whose CLI already answered once. New, as
    // the bare CLI's conversation is: every turn sends the model the whole conversation,
    // so the older session the figures above used (some fifty turns) would time a longer
    // conversation, not Chroxy.
    let mut phone = sys.phone("warm-turn phone").await;
    let opened = phone.create_session("warm turns").await;
    phone
        .turn("REPLY warm up", Some(&str_field(&opened, "sessionId")))
        .await;

    // The bare CLI, started as Chroxy starts it, in a home and directory of its own.
    let dir = tempfile::tempdir().expect("a directory for the bare CLI");
    let mut cli = tokio::process::Command::new(claude)
        .args(chroxy::agent::STREAM_JSON_ARGS)
        .args(["--permission-mode", "default"])
        .current_dir(dir.path())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", dir.path())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the bare CLI");
    let mut stdin = cli.stdin.take().expect("its stdin");
    let mut lines = BufReader::new(cli.stdout.take().expect("its stdout")).lines();
    let mut bare_turn = async |text: &str| -> f64 {
        let line = json!({"type": "user", "message": {"role": "user", "content": [{"type": "text", "text": text}]}});
        let sent = Instant::now();
        stdin
            .write_all(format!("{line}\n").as_bytes())
            .await
            .expect("writing to the bare CLI");
        loop {
            let line = tokio::time::timeout(crate::client::STEP, lines.next_line())
                .await
                .expect("the bare CLI answered nothing in time")
                .expect("reading the bare CLI")
                .expect("the bare CLI exited");
            let v: Value = serde_json::from_str(&line).unwrap_or_default();
            if v["type"] == "result" {
                assert_eq!(v["is_error"], false, "the bare CLI's turn failed: {line}");
                return sent.elapsed().as_secs_f64();
            }
        }
    };
    bare_turn("REPLY warm up").await;

    // Turn about, so that whatever else the machine does falls on both alike.
    let (mut chroxy, mut bare) = (Vec::new(), Vec::new());
    for _ in 0..plan.warm_turns {
        let sent = Instant::now();
        phone.send(json!({"type": "input", "data": TURN})).await;
        phone.until_type("result", "the warm turn's result").await;
        chroxy.push(sent.elapsed().as_secs_f64());
        phone.until_type("agent_idle", "the warm turn's end").await;
        bare.push(bare_turn(TURN).await);
    }
    drop(stdin);
    let _ = cli.wait().await;

    let runs = format!("{} turns", plan.warm_turns);
    let median = |xs: &[f64]| pct(&sorted(xs), 50.0);
    let overhead = median(&chroxy) - median(&bare);
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        "warm turn through Chroxy: input → result on the phone",
        agent,
        runs.clone(),
        &chroxy,
        secs,
        None,
    ));
    figure.rows.push(Row::percentiles(
        "warm turn of the bare CLI, the floor: stdin line → result line",
        agent,
        runs.clone(),
        &bare,
        secs,
        None,
    ));
    figure.rows.push(Row {
        figure: "what Chroxy adds to a warm turn (difference of the medians)".into(),
        agent,
        runs,
        p50: signed(overhead),
        p95: "-".into(),
        p99: "-".into(),
        target: Some(("p50 < 2 ms".into(), overhead < 0.002)),
    });
    figure
}

/// A difference of durations, with its sign.
fn signed(s: f64) -> String {
    if s < 0.0 {
        format!("-{}", secs(-s))
    } else {
        format!("+{}", secs(s))
    }
}
