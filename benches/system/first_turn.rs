//! The first turn of a session as a person meets it: they open a new session on the
//! phone and type. Timed from the input to its `result`, two ways: typed once the phone
//! has heard that the session's CLI is up (it is started as the session opens,
//! `[worker] warm_clis`), and sent the instant the session opens, while the CLI is
//! still starting (what every first turn cost before CLIs were started ahead). Turn
//! about with the first, the bare CLI's own first turn once it is up: the floor.

use std::path::Path;

use serde_json::{json, Value};
use tokio::time::Instant;

use crate::bare::BareCli;
use crate::report::{secs, Figure, Pct, Row};
use crate::system::System;
use crate::Plan;

pub async fn run(
    sys: &System,
    plan: &Plan,
    agent: &'static str,
    claude: &Path,
    env: &[(String, String)],
) -> Figure {
    let mut phone = sys.phone("first-turn phone").await;
    // Room for a new session: the figures before this one left the limit's worth.
    phone.send(json!({"type": "list_sessions"})).await;
    let list = phone.until_type("session_list", "list_sessions").await;
    let sessions = list["sessions"].as_array().cloned().unwrap_or_default();
    for old in sessions.iter().skip(1) {
        phone
            .send(json!({"type": "destroy_session", "sessionId": old["sessionId"]}))
            .await;
        phone
            .until(
                |v| {
                    v["type"] == "session_list"
                        && v["sessions"]
                            .as_array()
                            .is_some_and(|s| !s.iter().any(|s| s["sessionId"] == old["sessionId"]))
                },
                "an old session closed",
            )
            .await;
    }
    let (mut warm, mut at_once, mut bare) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..plan.first_turns {
        let mut cli = BareCli::start(claude, env);
        cli.initialize().await;
        bare.push(cli.turn("REPLY the first answer").await);
        cli.stop().await;
        // A phone per run, as a person opens sessions minutes apart: one connection
        // opening 40 in a row would meet its message budget (100 a minute).
        phone = sys.phone("first-turn phone").await;
        for wait_until_up in [true, false] {
            let name = format!("first turn {i} {wait_until_up}");
            let opened = phone.create_session(&name).await;
            let id = opened["sessionId"].clone();
            let ready = |v: &Value| v["type"] == "claude_ready" && v["sessionId"] == id;
            // The session's replay ends with a `claude_ready` saying a CLI can be run; the
            // next one says the CLI started for it answered its initialization.
            phone.until(ready, "the session's replay").await;
            if wait_until_up {
                phone.until(ready, "the CLI up").await;
            }
            let sent = Instant::now();
            phone
                .send(json!({"type": "input", "data": "REPLY the first answer"}))
                .await;
            phone.until_type("result", "the first turn's result").await;
            let took = sent.elapsed().as_secs_f64();
            phone.until_type("agent_idle", "the first turn's end").await;
            if wait_until_up {
                &mut warm
            } else {
                &mut at_once
            }
            .push(took);
            phone
                .send(json!({"type": "destroy_session", "sessionId": id}))
                .await;
            phone
                .until(
                    |v| v["type"] == "session_switched" && v["sessionId"] != id,
                    "the session closed",
                )
                .await;
        }
    }
    let mut figure = Figure::default();
    let runs = format!("{} new sessions", plan.first_turns);
    figure.rows.push(Row::percentiles(
        "first turn of a new session, typed once its CLI is up: input → result",
        agent,
        runs.clone(),
        &warm,
        secs,
        Some((Pct::P95, 0.150, "150 ms")),
    ));
    figure.rows.push(Row::percentiles(
        "first turn of a new session, sent the instant it opens: input → result",
        agent,
        runs.clone(),
        &at_once,
        secs,
        None,
    ));
    figure.rows.push(Row::percentiles(
        "first turn of the bare CLI once up, the floor: stdin line → result line",
        agent,
        runs.clone(),
        &bare,
        secs,
        None,
    ));
    figure.rows.push(Row::difference_of_medians(
        "what Chroxy adds to a first turn once its CLI is up (difference of the medians)",
        agent,
        runs,
        (&warm, &bare),
        None,
    ));
    figure
}
