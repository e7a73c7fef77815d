//! How promptly text reaches phones: one phone, then 50 on the same session. The CLI
//! is `fake-claude`, which writes each delta's wall-clock time into its text just
//! before writing the line (`BENCH n interval_us`); a phone subtracts it from the time
//! the frame arrived. One machine, one clock.

use std::time::Duration;

use serde_json::json;
use tokio::time::Instant;

use crate::client::{Client, STEP};
use crate::report::{pct, secs, sorted, thousands, Figure, Pct, Row};
use crate::system::System;
use crate::Plan;

/// Phones on the session in the fan-out figure.
const FAN_OUT: usize = 50;
/// 500 deltas/s.
const FAN_OUT_INTERVAL_US: u64 = 2_000;

/// `encrypted`: the phone speaks protocol v2, so every frame is sealed by the worker
/// and opened by the phone before it counts as arrived.
pub async fn line_to_frame(
    sys: &System,
    plan: &Plan,
    agent: &'static str,
    encrypted: bool,
) -> Figure {
    let (n, us) = (plan.lines, plan.line_interval_us);
    let mut phone = match encrypted {
        false => sys.phone("latency phone").await,
        true => {
            let device = chroxy::channel::KeyPair::generate().expect("a device key");
            sys.phone_v2("encrypted latency phone", &device, true)
                .await
                .0
        }
    };
    // The first input starts the CLI; measure a warm one.
    phone.turn("warm up", None).await;
    phone
        .send(json!({"type": "input", "data": format!("BENCH {n} {us}")}))
        .await;
    let run = phone
        .read_bench(n, Instant::now() + stream_deadline(n, us))
        .await
        .unwrap_or_else(|d| panic!("the latency phone was dropped: {d:?}"));
    assert_eq!(run.frames, n, "coalescing is off: one frame per line");
    let lat: Vec<f64> = run.latencies_ns.iter().map(|&ns| ns as f64 / 1e9).collect();
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        format!(
            "CLI output line → phone frame, coalescing off, {} lines/s{}",
            1_000_000 / us.max(1),
            if encrypted {
                ", end-to-end encrypted (v2)"
            } else {
                ""
            }
        ),
        agent,
        format!("{} lines", thousands(n)),
        &lat,
        secs,
        Some((Pct::P99, 0.002, "2 ms")),
    ));
    figure.details.push(lateness("line → frame", &run.late_ns));
    figure
}

/// What the latencies cannot show: how far behind its schedule `fake-claude` wrote
/// (a worker that stops reading its pipe makes the CLI late, not the frames).
fn lateness(what: &str, late_ns: &[u64]) -> String {
    let s = sorted(
        &late_ns
            .iter()
            .map(|&ns| ns as f64 / 1e9)
            .collect::<Vec<_>>(),
    );
    format!(
        "{what}: fake-claude wrote its lines a median {}, p99 {}, at most {} after their scheduled time",
        secs(pct(&s, 50.0)),
        secs(pct(&s, 99.0)),
        secs(*s.last().expect("no deltas"))
    )
}

pub async fn fan_out(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let n = plan.fan_out_deltas;
    let mut phones = Vec::with_capacity(FAN_OUT);
    for i in 0..FAN_OUT {
        phones.push(Client::phone(sys.public, &format!("fan-out phone {i}")).await);
    }
    let session = phones[0].active_session();
    assert!(
        phones.iter().all(|p| p.active_session() == session),
        "the phones are not all on one session"
    );
    phones[0]
        .send(json!({"type": "input", "data": format!("BENCH {n} {FAN_OUT_INTERVAL_US}")}))
        .await;
    let deadline = Instant::now() + stream_deadline(n, FAN_OUT_INTERVAL_US);
    let readers: Vec<_> = phones
        .into_iter()
        .map(|mut p| tokio::spawn(async move { p.read_bench(n, deadline).await }))
        .collect();
    let (mut lat, mut late, mut missing, mut closed) = (Vec::new(), None, 0u64, Vec::new());
    for reader in readers {
        match reader.await.expect("a fan-out phone panicked") {
            Ok(run) => {
                lat.extend(run.latencies_ns.iter().map(|&ns| ns as f64 / 1e9));
                // One CLI wrote for all of them: any phone's copy says how late.
                late.get_or_insert(run.late_ns);
            }
            Err(dropped) => {
                missing += n - dropped.received;
                closed.push(dropped.close);
            }
        }
    }
    let mut figure = Figure::default();
    let rate = 1_000_000 / FAN_OUT_INTERVAL_US;
    let figure_name =
        format!("fan-out: {FAN_OUT} phones on one session, {rate} deltas/s, coalescing off");
    let runs = format!("{FAN_OUT} × {} deltas", thousands(n));
    figure.rows.push(if lat.is_empty() {
        // No phone got to the end: nothing to take percentiles of, and a missed target.
        Row {
            figure: figure_name,
            agent,
            runs: runs.clone(),
            p50: "-".into(),
            p95: "-".into(),
            p99: "-".into(),
            target: Some(("p99 < 10 ms".into(), false)),
        }
    } else {
        Row::percentiles(
            figure_name,
            agent,
            runs.clone(),
            &lat,
            secs,
            Some((Pct::P99, 0.010, "10 ms")),
        )
    });
    figure.rows.push(Row::count(
        "fan-out: deltas not delivered",
        agent,
        runs.clone(),
        missing,
        Some(("0", missing == 0)),
    ));
    figure.rows.push(Row::count(
        "fan-out: phones closed as too slow",
        agent,
        runs,
        closed.len() as u64,
        Some(("0", closed.is_empty())),
    ));
    if !closed.is_empty() {
        figure.details.push(format!(
            "fan-out: {} phones were closed before the end (close codes {closed:?}), missing {missing} deltas",
            closed.len()
        ));
    }
    if let Some(late) = late {
        figure.details.push(lateness("fan-out", &late));
    }
    figure
}

/// Phones in the throughput figure.
const THROUGHPUT_PHONES: usize = 10;

/// As fast as the CLI can write, at the default coalescing: from the first delta's
/// timestamp to the moment the last of 10 phones has every delta (each checked: every
/// timestamp once, in order).
pub async fn throughput(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let n = plan.throughput_deltas;
    let mut phones = Vec::with_capacity(THROUGHPUT_PHONES);
    for i in 0..THROUGHPUT_PHONES {
        phones.push(Client::phone(sys.public, &format!("throughput phone {i}")).await);
    }
    phones[0].turn("warm up", None).await;
    for p in &mut phones[1..] {
        p.until_type("agent_idle", "the warm-up turn").await;
    }
    let (mut took, mut rates) = (Vec::new(), Vec::new());
    for _ in 0..plan.throughput_runs {
        phones[0]
            .send(json!({"type": "input", "data": format!("BENCH {n} 0")}))
            .await;
        let deadline = Instant::now() + stream_deadline(n, 10);
        let readers: Vec<_> = phones
            .into_iter()
            .map(|mut p| {
                tokio::spawn(async move {
                    let run = p.read_bench(n, deadline).await;
                    (p, run)
                })
            })
            .collect();
        phones = Vec::with_capacity(THROUGHPUT_PHONES);
        let (mut first, mut done) = (u64::MAX, 0);
        for reader in readers {
            let (p, run) = reader.await.expect("a throughput phone panicked");
            let run = run.unwrap_or_else(|d| panic!("{}: dropped: {d:?}", p.name));
            first = first.min(run.first_ts);
            done = done.max(run.last_at);
            phones.push(p);
        }
        let elapsed = done.saturating_sub(first) as f64 / 1e9;
        took.push(elapsed);
        rates.push(n as f64 / elapsed);
    }
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        format!("{} deltas as fast as the CLI writes → all of {THROUGHPUT_PHONES} phones have them, coalescing 50 ms", thousands(n)),
        agent,
        format!("{} runs", plan.throughput_runs),
        &took,
        secs,
        None,
    ));
    let median = pct(&sorted(&rates), 50.0);
    figure.details.push(format!(
        "throughput: median {:.0} deltas/s from one CLI to each of {THROUGHPUT_PHONES} phones",
        median
    ));
    // What that leaves behind: the session's history is at its byte budget by now.
    let worker = sys.worker_pid().await;
    let after = crate::memory::sample(sys.supervisor_pid(), worker, plan.rss_samples).await;
    let sums: Vec<f64> = after.iter().map(|(s, w)| (s + w) as f64).collect();
    figure.rows.push(Row::percentiles(
        format!(
            "RSS supervisor + worker after those runs, {THROUGHPUT_PHONES} phones still connected"
        ),
        agent,
        format!("{} samples", plan.rss_samples),
        &sums,
        crate::report::mb,
        None,
    ));
    figure
}

/// A stream of `n` lines `us` apart, with room for a slow machine.
fn stream_deadline(n: u64, us: u64) -> Duration {
    STEP + Duration::from_micros(n * us) * 3
}
