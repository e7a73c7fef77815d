//! What protocol v2's encryption costs (docs/protocol.md "Version 2"): the handshake a
//! phone pays at each connection, beside v1's token `auth` on the same system, and the
//! sealing and opening of one frame. The line → frame latency of an encrypted phone is
//! in `stream.rs`, beside the plain one.

use chroxy::channel::KeyPair;
use serde_json::json;
use tokio::time::Instant;

use crate::client::{auth_msg, open, Client, STEP};
use crate::report::{secs, thousands, Figure, Row};
use crate::system::System;
use crate::Plan;

/// Socket open → `auth_ok`, v1 then v2, `plan.handshakes` times each; then seal + open.
pub async fn handshake(sys: &System, plan: &Plan, agent: &'static str) -> Figure {
    let n = plan.handshakes;
    let device = KeyPair::generate().expect("a device key");
    sys.phone_v2("paired phone", &device, true).await;
    let mut v1 = Vec::with_capacity(n);
    let mut v2 = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        let ws = open(sys.public).await.expect("opening a socket");
        let mut c = Client::wrap(ws, "v1 phone");
        c.send(auth_msg("v1 phone")).await;
        let ok = c.frame(Instant::now() + STEP, "auth_ok").await.0;
        assert_eq!(ok["type"], "auth_ok", "{ok}");
        v1.push(started.elapsed().as_secs_f64());
        let (_, took) = sys.phone_v2("v2 phone", &device, false).await;
        v2.push(took.as_secs_f64());
    }
    let mut figure = Figure::default();
    let runs = format!("{} connections", thousands(n as u64));
    figure.rows.push(Row::percentiles(
        "socket open → auth_ok, token (v1)",
        agent,
        runs.clone(),
        &v1,
        secs,
        None,
    ));
    figure.rows.push(Row::percentiles(
        "socket open → auth_ok, Noise IK handshake (v2)",
        agent,
        runs,
        &v2,
        secs,
        None,
    ));
    figure.rows.push(seal_and_open(plan.sealed_frames));
    figure
}

/// One typical `stream_delta` frame sealed by one end and opened by the other, in
/// process: the encryption's own cost per frame, without sockets.
fn seal_and_open(frames: usize) -> Row {
    let (phone, desktop) = (KeyPair::generate(), KeyPair::generate());
    let (phone, desktop) = (phone.expect("a key"), desktop.expect("a key"));
    let (hello, initiating) = chroxy::channel::initiate(&phone, desktop.public()).expect("hello");
    let mut accepted = chroxy::channel::accept(&desktop, &hello).expect("accepted");
    let (_, mut opener) = initiating.finish(&accepted.reply).expect("finished");
    let frame =
        json!({"type": "stream_delta", "messageId": "m-0123456789", "sessionId": "s-0123456789",
        "delta": "a line of text as Claude streams it, about this long. "})
        .to_string();
    let mut took = Vec::with_capacity(frames);
    for _ in 0..frames {
        let started = std::time::Instant::now();
        let sealed = accepted.sealer.seal(&frame).expect("sealed");
        let opened = opener.open(&sealed).expect("opened");
        took.push(started.elapsed().as_secs_f64());
        assert_eq!(opened.len(), frame.len());
    }
    Row::percentiles(
        format!(
            "seal + open of one {}-byte frame (AES-256-GCM)",
            frame.len()
        ),
        "in process",
        format!("{} frames", thousands(frames as u64)),
        &took,
        secs,
        None,
    )
}
