//! How long a phone is without its machine when things go wrong: a worker killed with
//! SIGKILL in the middle of a streamed turn, and a rollback to the known-good release.
//! Both clocks stop when the phone itself, reconnecting through the public port, is
//! authenticated again — what a user waits for, not what a log line claims.

use std::path::Path;
use std::time::Duration;

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
    let (mut samples, mut orphans, mut lingered) = (Vec::new(), 0usize, Vec::new());
    let mut answered = Vec::new();
    let mut taken_over = 0;
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
        // Every CLI of the worker about to die: they must not outlive it for long.
        let agents = children_of(worker);
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
        // What the person typed next is answered: the session's CLI is started again
        // (`--resume`) by the worker that took over.
        phone
            .turn(&format!("REPLY answered after kill {i}"), None)
            .await;
        answered.push(killed_at.elapsed().as_secs_f64());
        let now = sys.status().await;
        assert_ne!(
            now.worker.pid,
            Some(worker),
            "kill {i}: authenticated, but the status page still names the killed worker"
        );
        if now.worker.pid == status.standby.as_ref().and_then(|s| s.pid) {
            taken_over += 1;
        }
        // Not timed: the orphaned CLIs (their stdin is gone with the worker) exit by
        // themselves; the next kill must not pile on top of them.
        for pid in agents {
            let deadline = killed_at + Duration::from_secs(20);
            while alive(pid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            if alive(pid) {
                orphans += 1;
            } else {
                lingered.push(killed_at.elapsed().as_secs_f64());
            }
        }
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
        "worker kill -9 mid-turn → the phone's next input answered (agent_idle)",
        agent,
        format!("{} kills", plan.kills),
        &answered,
        secs,
        Some((Pct::P95, 0.4, "400 ms")),
    ));
    figure.details.push(format!(
        "kill: {taken_over} of {} kills were taken over by the standby worker (the rest, restarted after the backoff, mean the standby was not ready in time)",
        plan.kills
    ));
    let s = crate::report::sorted(&lingered);
    if let Some(worst) = s.last() {
        figure.details.push(format!(
            "kill: the killed worker's CLI processes ({} in all) ran on by themselves after the kill and exited a median {} (at most {}) after it; {orphans} still ran 20 s after it",
            lingered.len() + orphans,
            secs(crate::report::pct(&s, 50.0)),
            secs(*worst),
        ));
    }
    figure
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
