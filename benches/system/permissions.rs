//! The permission round trip as the CLI lives it: from writing `can_use_tool` to reading
//! the answer, through the worker, the supervisor's public port and a phone that
//! answers at once. `fake-claude`'s `PERMISSIONS n` asks n times in one turn and times
//! each on its side; the phone only answers and collects the report.

use serde_json::json;
use tokio::time::Instant;

use crate::client::STEP;
use crate::report::{secs, thousands, Figure, Pct, Row};
use crate::system::System;
use crate::Plan;

pub async fn round_trip(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let n = plan.prompts;
    let mut phone = sys.phone("permission phone").await;
    phone.turn("warm up", None).await;
    phone
        .send(json!({"type": "input", "data": format!("PERMISSIONS {n}")}))
        .await;
    let deadline = Instant::now() + STEP * 2;
    let (mut asked, mut resolved, mut text) = (0usize, 0usize, String::new());
    loop {
        let (v, _) = phone.frame(deadline, "the permission prompts").await;
        match v["type"].as_str() {
            Some("permission_request") => {
                asked += 1;
                let id = v["requestId"].clone();
                phone
                    .send(json!({"type": "permission_response", "requestId": id, "decision": "allow"}))
                    .await;
            }
            Some("permission_resolved") => resolved += 1,
            Some("permission_expired") => panic!("a prompt expired: {v}"),
            Some("stream_delta") => text.push_str(v["delta"].as_str().unwrap_or_default()),
            Some("agent_idle") => break,
            _ => {}
        }
    }
    assert_eq!((asked, resolved), (n, n), "prompts asked / resolved");
    let report = text
        .strip_prefix(&format!("permissions allow={n} rtt_ns="))
        .unwrap_or_else(|| panic!("fake-claude's report is not {n} allows: {text:.200}"));
    let rtts: Vec<f64> = report
        .split(',')
        .map(|t| {
            t.parse::<f64>()
                .unwrap_or_else(|_| panic!("bad round trip {t:?}"))
                / 1e9
        })
        .collect();
    assert_eq!(rtts.len(), n, "round trips reported");
    let mut figure = Figure::default();
    figure.rows.push(Row::percentiles(
        "permission round trip: CLI request → phone → answer → CLI",
        agent,
        format!("{} prompts", thousands(n as u64)),
        &rtts,
        secs,
        Some((Pct::P99, 0.005, "5 ms")),
    ));
    figure
}
