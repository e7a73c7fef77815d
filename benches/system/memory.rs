//! What Chroxy itself costs in memory, next to CLIs of ~300 MB each: the supervisor and
//! the worker, idle, with 5 sessions, and with 50 phones. The CLI processes are
//! separate processes, so reading the two pids' own VmRSS excludes them.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::client::{str_field, Client};
use crate::common::children_of;
use crate::report::{mb, Figure, Pct, Row};
use crate::system::{status_bytes, System};
use crate::Plan;

/// The protocol's session limit.
pub const SESSIONS: usize = 5;
/// Phones in the last state.
const PHONES: usize = 50;
/// `[worker] warm_clis` at its default.
const WARM_CLIS: usize = 2;
/// Between two samples.
const EVERY: Duration = Duration::from_millis(50);

pub async fn run(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let supervisor = sys.supervisor_pid();
    let worker = sys.worker_pid().await;
    let mut phone = sys.phone("memory phone").await;
    let idle = sample(supervisor, worker, plan.rss_samples).await;
    // What the standby worker costs: the same binary, gated, serving nobody.
    let standby = sys.standby_ready().await.standby.and_then(|s| s.pid);
    let standby = standby.expect("a ready standby has a pid");
    let parts = [supervisor, worker, standby].map(rss_parts);
    let spare: Vec<f64> = sample(supervisor, standby, plan.rss_samples)
        .await
        .iter()
        .map(|(_, rss)| *rss as f64)
        .collect();

    let mut sessions = vec![phone.active_session()];
    for i in 1..SESSIONS {
        let switched = phone.create_session(&format!("bench {i}")).await;
        sessions.push(str_field(&switched, "sessionId"));
    }
    // A little real work in each: a text turn, a Bash tool use whose permission prompt the
    // phone allows, and a longer answer (history, prompts and replay all exercised).
    let long = format!(
        "REPLY {}",
        "a longer answer, streamed word by word; ".repeat(50)
    );
    for (i, id) in sessions.iter().enumerate() {
        // Looking at it, as a phone does while it talks to a session.
        phone
            .send(json!({"type": "switch_session", "sessionId": id}))
            .await;
        phone
            .until_type("history_replay_end", "switch_session")
            .await;
        phone.turn("REPLY hello", Some(id)).await;
        let prompts = phone
            .turn(&format!("PLEASE_BASH touch made-{i}.txt"), Some(id))
            .await;
        assert_eq!(prompts, 1, "the Bash tool asks once");
        phone.turn(&long, Some(id)).await;
    }
    // The two sessions opened last keep their CLI (`[worker] warm_clis`, default 2);
    // the others were stopped as the phone moved on (their history stays).
    let deadline = Instant::now() + crate::client::STEP;
    while children_of(worker).len() != WARM_CLIS && Instant::now() < deadline {
        tokio::time::sleep(EVERY).await;
    }
    let agents = children_of(worker).len();
    assert_eq!(
        agents, WARM_CLIS,
        "expected the last {WARM_CLIS} sessions' CLIs"
    );
    let five = sample(supervisor, worker, plan.rss_samples).await;

    let mut phones = Vec::new();
    for i in 0..PHONES {
        phones.push(Client::phone(sys.public, &format!("memory phone {i}")).await);
    }
    let crowd = sample(supervisor, worker, plan.rss_samples).await;
    assert_eq!(
        sys.worker_pid().await,
        worker,
        "the worker changed while measuring it"
    );
    drop(phones);

    let n = format!("{} samples", plan.rss_samples);
    let sum = |s: &[(u64, u64)]| s.iter().map(|(a, b)| (a + b) as f64).collect::<Vec<_>>();
    let split = |s: &[(u64, u64)]| {
        let last = s.last().copied().unwrap_or_default();
        format!(
            "supervisor {} + worker {}",
            mb(last.0 as f64),
            mb(last.1 as f64)
        )
    };
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        "RSS supervisor + worker, idle (1 phone)",
        agent,
        n.clone(),
        &sum(&idle),
        mb,
        Some((Pct::P99, 25e6, "25 MB")),
    ));
    figure.rows.push(Row::percentiles(
        "RSS of the standby worker beside it (idle, gated)",
        agent,
        n.clone(),
        &spare,
        mb,
        None,
    ));
    figure.rows.push(Row::percentiles(
        format!("RSS supervisor + worker, {SESSIONS} sessions × 3 turns, {WARM_CLIS} CLIs warm (excluded)"),
        agent,
        n.clone(),
        &sum(&five),
        mb,
        Some((Pct::P99, 40e6, "40 MB")),
    ));
    figure.rows.push(Row::percentiles(
        format!("RSS supervisor + worker, {SESSIONS} sessions + {PHONES} phones"),
        agent,
        n,
        &sum(&crowd),
        mb,
        None,
    ));
    figure.details.push(format!(
        "RSS, last sample of each state: idle {}; {SESSIONS} sessions {}; +{PHONES} phones {}",
        split(&idle),
        split(&five),
        split(&crowd)
    ));
    figure.details.push(format!(
        "RSS idle, file-backed + anonymous: supervisor {}, worker {}, standby {}. The file-backed part is almost all the `chroxy` binary's code: the same pages of the page cache in all three processes, counted again in each one's RSS",
        parts[0], parts[1], parts[2],
    ));
    figure
}

/// A process's RSS as "file-backed + anonymous".
fn rss_parts(pid: u32) -> String {
    format!(
        "{} + {}",
        mb(status_bytes(pid, "RssFile") as f64),
        mb(status_bytes(pid, "RssAnon") as f64)
    )
}

/// `n` samples of (supervisor, worker) VmRSS, [`EVERY`] apart.
pub async fn sample(supervisor: u32, worker: u32, n: usize) -> Vec<(u64, u64)> {
    let mut out = Vec::with_capacity(n);
    let mut next = Instant::now();
    for _ in 0..n {
        tokio::time::sleep_until(next).await;
        out.push((
            status_bytes(supervisor, "VmRSS"),
            status_bytes(worker, "VmRSS"),
        ));
        next += EVERY;
    }
    out
}
