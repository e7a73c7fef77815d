//! The owner against a flood: thousands of hostile sockets (half-open, never
//! authenticating, authenticating slowly, with a wrong token) opened at once through
//! the public port and held, while the owner's phone connects again and again. The
//! figures: how long the owner waits for `auth_ok` meanwhile, and how many restarts the
//! flood caused (target 0).

use std::net::SocketAddr;
use std::time::Duration;

use tokio::time::Instant;

use crate::client::{Client, STEP};
use crate::common::flood::{addresses, open_all};
use crate::report::{secs, thousands, Figure, Pct, Row};
use crate::system::System;
use crate::Plan;

pub async fn run(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let before = sys.serving().await;
    let public = SocketAddr::from(([127, 0, 0, 1], sys.public));
    // From 100 loopback addresses other than the owner's, as a flood from elsewhere.
    let flood = tokio::spawn(open_all(public, addresses(100), plan.flood));
    let end = Instant::now() + plan.flood_hold;
    let mut waits = Vec::new();
    while Instant::now() < end {
        let asked = Instant::now();
        let (phone, at) = Client::reconnect(sys.public, "owner", asked + STEP).await;
        waits.push(at.duration_since(asked).as_secs_f64());
        drop(phone);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let held = flood.await.expect("the flood panicked");
    let after = sys.status().await;
    let restarts = u64::from(after.worker.restarts.saturating_sub(before.worker.restarts));
    let connections = &after.connections;

    let mut figure = Figure::default();
    let runs = format!(
        "{} connections, {} sockets",
        waits.len(),
        thousands(plan.flood as u64)
    );
    figure.rows.push(Row::percentiles(
        format!(
            "owner's auth_ok during a {}-socket flood",
            thousands(plan.flood as u64)
        ),
        agent,
        runs.clone(),
        &waits,
        secs,
        Some((Pct::P99, 1.0, "1 s")),
    ));
    figure.rows.push(Row::count(
        "restarts caused by the flood",
        agent,
        runs,
        restarts,
        Some(("0", restarts == 0 && after.state == before.state)),
    ));
    figure.details.push(format!(
        "Flood: {} of {} hostile sockets connected and held for {} s; the public port closed {} unauthenticated connections to make room and refused {} newcomers (bounds: {} connections, {} unauthenticated).",
        held.len(),
        plan.flood,
        plan.flood_hold.as_secs(),
        connections.evicted,
        connections.refused,
        connections.max_connections,
        connections.max_unauthenticated,
    ));
    figure
}
