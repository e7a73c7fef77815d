//! How long a phone is without its machine when things go wrong: a worker killed with
//! SIGKILL in the middle of a streamed turn (and between two), and a rollback to the
//! known-good release.
//! Both clocks stop when the phone itself, reconnecting through the public port, is
//! authenticated again — what a user waits for, not what a log line claims.

use std::path::Path;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use tokio::time::Instant;

use crate::client::{Client, STEP};
use crate::common::children_of;
use crate::common::supervisor::alive;
use crate::report::{secs, Figure, Pct, Row};
use crate::system::System;
use crate::Plan;

/// A turn that streams for seconds (the scripted model's `SLOW`): still running when
/// the worker dies.
const SLOW_TURN: &str = "SLOW 100 the worker is killed while this answer streams word by word, so the phone loses it mid sentence and has to find its way back to a new worker behind the same public port";

pub async fn kills(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let mut phone = sys.phone("kill phone").await;
    let (mut samples, mut answered) = (Vec::new(), Vec::new());
    let (mut taken_over, mut finished_by_same_cli, mut killed_clis) = (0, 0, 0);
    // CLIs a standby took over: the worker that adopted them is not their parent.
    let mut carried: Vec<u32> = Vec::new();
    for i in 0..plan.kills {
        // As a crash finds it, at the defaults: its standby started and gated.
        let status = sys.standby_ready().await;
        let worker = status.worker.pid.expect("a serving worker has a pid");
        phone
            .send(json!({"type": "input", "data": SLOW_TURN}))
            .await;
        let first = phone
            .until_type(
                "stream_delta",
                &format!("kill {i}: the slow turn's first text"),
            )
            .await;
        // The scripted model's words, not an error the CLI printed as text.
        let text = first["delta"].as_str().unwrap_or_default().trim();
        assert!(
            !text.is_empty() && SLOW_TURN["SLOW 100 ".len()..].starts_with(text),
            "kill {i}: the turn is not the slow answer: {first}"
        );
        // The CLI streaming it: a child of the worker about to die, or one it adopted.
        carried.retain(|&pid| alive(pid));
        let agents: Vec<u32> = children_of(worker)
            .into_iter()
            .chain(carried.clone())
            .collect();
        assert!(
            !agents.is_empty(),
            "kill {i}: the streaming turn has no CLI process"
        );
        let killed_at = Instant::now();
        kill(Pid::from_raw(worker as i32), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("kill {i}: SIGKILL {worker}: {e}"));
        phone.closed(killed_at + STEP).await;
        let (again, authenticated_at) =
            Client::reconnect(sys.public, "kill phone", killed_at + STEP).await;
        samples.push((authenticated_at - killed_at).as_secs_f64());
        phone = again;
        let now = sys.status().await;
        assert_ne!(
            now.worker.pid,
            Some(worker),
            "kill {i}: authenticated, but the status page still names the killed worker"
        );
        if now.worker.pid == status.standby.as_ref().and_then(|s| s.pid) {
            taken_over += 1;
            // The standby carries on with the killed worker's CLI: the turn ends on
            // the phone with its answer and its result.
            let answer = rest_of_turn(&mut phone, i).await;
            assert!(
                SLOW_TURN.ends_with(answer.trim()) && !answer.trim().is_empty(),
                "kill {i}: the turn ended without the rest of its answer: {answer:?}"
            );
            if agents.iter().all(|&pid| alive(pid)) {
                finished_by_same_cli += 1;
            }
            carried = agents;
        } else {
            // Restarted after the backoff: the CLIs were killed before it started.
            killed_clis += agents.iter().filter(|&&pid| !alive(pid)).count();
        }

        // Killed between turns: what the person typed next is answered, by the CLI
        // the standby took over (or, restarted, by a new one that resumes).
        let status = sys.standby_ready().await;
        let worker = status.worker.pid.expect("a serving worker has a pid");
        let killed_at = Instant::now();
        kill(Pid::from_raw(worker as i32), Signal::SIGKILL)
            .unwrap_or_else(|e| panic!("kill {i}: SIGKILL {worker}: {e}"));
        phone.closed(killed_at + STEP).await;
        let (again, _) = Client::reconnect(sys.public, "kill phone", killed_at + STEP).await;
        phone = again;
        phone
            .turn(&format!("REPLY answered after kill {i}"), None)
            .await;
        answered.push(killed_at.elapsed().as_secs_f64());
    }
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        "worker kill -9 mid-turn → public port healthy + phone re-authenticated",
        agent,
        format!("{} kills", plan.kills),
        &samples,
        secs,
        Some((Pct::P95, 0.1, "100 ms")),
    ));
    figure.rows.push(Row::percentiles(
        "worker kill -9 between turns → the phone's next input answered (agent_idle)",
        agent,
        format!("{} kills", plan.kills),
        &answered,
        secs,
        Some((Pct::P95, 0.4, "400 ms")),
    ));
    figure.details.push(format!(
        "kill: {taken_over} of {} mid-turn kills were taken over by the standby worker (the rest, restarted after the backoff, mean the standby was not ready in time); in {finished_by_same_cli} the CLI that was streaming lived on, adopted by the standby, and the turn's answer and result reached the phone (the answer's text block whole, once complete: the new worker joins the stream in the middle of it); {killed_clis} CLI processes of workers nobody took over were killed with them",
        plan.kills
    ));
    figure
}

/// Reads the rest of a turn a kill interrupted, now that the phone is back (it streams
/// for seconds more, so it cannot have ended meanwhile); returns the text it got.
async fn rest_of_turn(phone: &mut Client, i: usize) -> String {
    let deadline = Instant::now() + STEP;
    let mut answer = String::new();
    loop {
        let (v, _) = phone
            .frame(deadline, &format!("kill {i}: the rest of the slow turn"))
            .await;
        match v["type"].as_str() {
            Some("stream_delta") => answer.push_str(v["delta"].as_str().unwrap_or_default()),
            Some("agent_idle") => return answer,
            _ => {}
        }
    }
}

pub async fn rollbacks(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    // A second release to roll back from: the same binary, added to the store.
    let releases = chroxy::supervisor::release::Releases::open(&sys.paths());
    let newer = releases
        .add(Path::new(env!("CARGO_BIN_EXE_chroxy")))
        .expect("adding a second release")
        .id;
    let known_good = sys
        .status()
        .await
        .releases
        .known_good
        .expect("a known-good release");
    assert_ne!(newer, known_good);
    let mut phone = sys.phone("rollback phone").await;
    let mut samples = Vec::new();
    for i in 0..plan.rollbacks {
        // Not timed: get the newer release serving, with a CLI running in its session.
        run(sys, &["rollback", "--to", &newer]).await;
        phone.closed(Instant::now() + STEP).await;
        phone = Client::reconnect(sys.public, "rollback phone", Instant::now() + STEP)
            .await
            .0;
        let before = sys.serving().await;
        assert_eq!(
            before.worker.release.as_deref(),
            Some(newer.as_str()),
            "rollback {i}: not on the newer release"
        );
        phone.turn("REPLY ready", None).await;
        let worker = before.worker.pid.expect("a serving worker has a pid");
        assert!(
            !children_of(worker).is_empty(),
            "rollback {i}: no CLI running"
        );

        let started = Instant::now();
        run(sys, &["rollback"]).await;
        phone.closed(started + STEP).await;
        let (again, authenticated_at) =
            Client::reconnect(sys.public, "rollback phone", started + STEP).await;
        samples.push((authenticated_at - started).as_secs_f64());
        phone = again;
        let after = sys.status().await;
        assert_eq!(
            after.worker.release.as_deref(),
            Some(known_good.as_str()),
            "rollback {i}: authenticated, but not by the known-good release"
        );
        assert_ne!(
            after.worker.pid,
            Some(worker),
            "rollback {i}: the old worker still serves"
        );
    }
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        "`chroxy rollback` → known-good release serving, phone re-authenticated",
        agent,
        format!("{} rollbacks", plan.rollbacks),
        &samples,
        secs,
        Some((Pct::P95, 2.0, "2 s")),
    ));
    figure
}

/// Runs `chroxy <args>` against `sys`; it must succeed.
async fn run(sys: &System, args: &[&str]) {
    let out = tokio::time::timeout(STEP, sys.command(args).output())
        .await
        .unwrap_or_else(|_| panic!("`chroxy {}` took over {STEP:?}", args.join(" ")))
        .unwrap_or_else(|e| panic!("`chroxy {}`: {e}", args.join(" ")));
    assert!(
        out.status.success(),
        "`chroxy {}` failed ({}): {}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
