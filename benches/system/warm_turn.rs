//! A warm turn and its floor: the same turn (`REPLY …`, answered by the scripted
//! model) through the whole system, input → `result` on the phone, and by the bare
//! CLI with nothing around it, its stdin line → its `result` line, turn about in the
//! same run (which of the two goes first alternating), each after a short quiet. The
//! difference of the medians is what Chroxy adds to a turn.

use std::path::Path;
use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::bare::BareCli;
use crate::client::{now_ns, str_field, Client};
use crate::report::{secs, Figure, Row};
use crate::system::System;
use crate::Plan;

/// The text of every timed turn: a short answer, so the turn is the bridge's and the
/// CLI's, not the model's.
const TURN: &str = "REPLY the warm answer";

/// Quiet before each timed turn: what either CLI still does after its result line (its
/// transcript, its own bookkeeping) is over before the next turn is timed, so that it
/// falls on neither.
const SETTLE: Duration = Duration::from_millis(30);

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

    // The bare CLI, its conversation warmed up the same way.
    let mut cli = BareCli::start(claude, env);
    cli.initialize().await;
    cli.turn("REPLY warm up").await;

    // Turn about, so that whatever else the machine does falls on both alike, and
    // which goes first alternates, so that neither always follows the other.
    let (mut chroxy, mut bare) = (Vec::new(), Vec::new());
    for i in 0..plan.warm_turns {
        if i % 2 == 0 {
            chroxy.push(through_chroxy(&mut phone).await);
            bare.push(bare_turn(&mut cli).await);
        } else {
            bare.push(bare_turn(&mut cli).await);
            chroxy.push(through_chroxy(&mut phone).await);
        }
    }
    cli.stop().await;

    let runs = format!("{} turns", plan.warm_turns);
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
    figure.rows.push(Row::difference_of_medians(
        "what Chroxy adds to a warm turn (difference of the medians)",
        agent,
        runs,
        (&chroxy, &bare),
        Some((0.002, "2 ms")),
    ));
    figure
}

/// One timed turn through Chroxy: seconds from the input sent to its `result`; returns
/// once the session is idle again.
async fn through_chroxy(phone: &mut Client) -> f64 {
    tokio::time::sleep(SETTLE).await;
    let sent = Instant::now();
    phone.send(json!({"type": "input", "data": TURN})).await;
    phone.until_type("result", "the warm turn's result").await;
    let took = sent.elapsed().as_secs_f64();
    phone.until_type("agent_idle", "the warm turn's end").await;
    took
}

/// One timed turn of the bare CLI.
async fn bare_turn(cli: &mut BareCli) -> f64 {
    tokio::time::sleep(SETTLE).await;
    cli.turn(TURN).await
}

/// A stamped turn, answered 20 ms after it was read: the time a real turn's model takes
/// at least, for whatever Chroxy does beside a turn to be done as it would be.
const STAMP: &str = "STAMP 20";

/// What Chroxy holds a warm turn for, with no CLI time in it, on the default
/// configuration: `fake-claude`'s `STAMP` turn says when its stdin reader had the input
/// and when it wrote the result line, on the clock the phone reads. The way in is phone
/// send → CLI read, the way out result line → phone `result`.
pub async fn bridge(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let mut phone = sys.phone("stamped-turn phone").await;
    let opened = phone.create_session("stamped turns").await;
    let session = str_field(&opened, "sessionId");
    phone.turn("warm up", Some(&session)).await;
    let (mut way_in, mut way_out, mut both) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..plan.bridge_turns {
        let sent = now_ns();
        phone
            .send(json!({"type": "input", "data": STAMP, "sessionId": session}))
            .await;
        let deadline = Instant::now() + crate::client::STEP;
        let mut text = String::new();
        let (result, arrived) = loop {
            let (v, at) = phone.frame(deadline, "the stamped turn's result").await;
            match v["type"].as_str() {
                Some("stream_delta") => text.push_str(v["delta"].as_str().unwrap_or_default()),
                Some("result") => break (v, at),
                _ => {}
            }
        };
        let read: u64 = text
            .strip_prefix("read=")
            .and_then(|ns| ns.parse().ok())
            .unwrap_or_else(|| panic!("the stamped turn's text is {text:?}"));
        let written = result["usage"]["written_ns"]
            .as_u64()
            .unwrap_or_else(|| panic!("the stamped turn's result has no written_ns: {result}"));
        let (i, o) = (ns_secs(read - sent), ns_secs(arrived - written));
        way_in.push(i);
        way_out.push(o);
        both.push(i + o);
        phone
            .until_type("agent_idle", "the stamped turn's end")
            .await;
    }
    let runs = format!("{} turns", plan.bridge_turns);
    let mut figure = Figure::default();
    for (what, samples) in [
        (
            "a warm turn's way in: phone input → the CLI reads it",
            &way_in,
        ),
        (
            "a warm turn's way out: the CLI's result line → phone result",
            &way_out,
        ),
        ("what Chroxy holds a warm turn for: the two together", &both),
    ] {
        figure.rows.push(Row::percentiles(
            what,
            agent,
            runs.clone(),
            samples,
            secs,
            None,
        ));
    }
    figure
}

fn ns_secs(ns: u64) -> f64 {
    ns as f64 / 1e9
}
