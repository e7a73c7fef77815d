//! Nobody takes the machine from its owner by flooding it: thousands of sockets that
//! never authenticate, authenticate slowly, with a wrong token, or never even send a
//! request, opened as fast as possible through the public port of a supervisor started
//! under `ulimit -n 1024` and held for a minute. Throughout, the supervisor stays
//! healthy with no restart, and the owner's phone authenticates within a second and
//! gets a turn done.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::flood::{addresses, open_all};
use common::supervisor::Sup;
use common::{Client, Home, WorkerOpts, TOKEN};
use serde_json::json;
use tokio::time::Instant;

/// Sockets the flood opens.
const FLOOD: usize = 3000;
/// How long it holds them.
const HOLD: Duration = Duration::from_secs(60);
/// The owner's phone must be in within this, every time.
const OWNER_AUTH: Duration = Duration::from_secs(1);

/// The owner's phone: connects through the public port and authenticates, trying again
/// at once if the connection is dropped; returns the client and how long it took.
async fn owner(public: u16) -> (Client, Duration) {
    let started = Instant::now();
    loop {
        let attempt = async {
            let mut c = Client::connect(public).await;
            let ok = c.auth(TOKEN).await;
            (ok["type"] == "auth_ok").then_some(c)
        };
        if let Ok(Some(c)) = tokio::time::timeout(OWNER_AUTH, attempt).await {
            return (c, started.elapsed());
        }
        assert!(
            started.elapsed() < OWNER_AUTH,
            "the owner could not authenticate within {OWNER_AUTH:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_through_the_public_port_never_takes_the_machine_from_its_owner() {
    let home = Home::new();
    // Frequent probes: a supervisor short of descriptors would fail one within a second.
    home.config("[supervisor]\nprobe_interval_ms = 500\n");
    let sup = Sup::start_limited(&home, WorkerOpts::fake_cli(), &[], Some(1024)).await;
    let before = sup.healthy().await;
    assert_eq!(before["worker"]["restarts"], 0);
    let limits = &before["connections"];
    assert!(
        limits["maxConnections"].as_u64().unwrap() <= (1024 - 128) / 2,
        "the bounds fit the descriptor limit: {limits}"
    );
    let public = SocketAddr::from(([127, 0, 0, 1], sup.public));

    // The flood: every socket as fast as the machine opens them, each kind in turn, from
    // 100 loopback addresses other than the owner's (so wrong tokens from many places
    // wait out their delays at once); kept open until the end.
    // On a runtime of its own: 3 000 connecting tasks must not starve the owner's client
    // in this process (the owner's phone is another device).
    let flood = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                let held = open_all(public, addresses(100), FLOOD).await;
                tokio::time::sleep(HOLD).await;
                held.len()
            })
    });

    let end = Instant::now() + HOLD;
    let mut next_turn = Instant::now();
    let mut turns = 0;
    let mut slowest = Duration::ZERO;
    while Instant::now() < end {
        let (mut phone, took) = owner(sup.public).await;
        slowest = slowest.max(took);
        // A turn at once, then every 20 s of the hold.
        if Instant::now() >= next_turn {
            phone.until_type("history_replay_end").await;
            phone.turn("hello during a flood").await;
            turns += 1;
            next_turn += Duration::from_secs(20);
        }
        let s = sup.status().await;
        assert_eq!(s["state"], "healthy", "the flood moved the state: {s:#}");
        assert_eq!(
            s["worker"]["restarts"], 0,
            "the flood caused a restart: {s:#}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let held = tokio::task::spawn_blocking(move || flood.join().unwrap())
        .await
        .unwrap();
    assert!(turns >= 3, "only {turns} turns completed");

    // The bounds were met, and the status page says so.
    let s = sup.status().await;
    let c = &s["connections"];
    assert!(
        c["evicted"].as_u64().unwrap() > 0 && c["lastLimitAt"].is_u64(),
        "a flood of {FLOOD} must have met the bounds: {c}"
    );
    assert_eq!(s["state"], "healthy");
    assert_eq!(s["worker"]["restarts"], 0);
    eprintln!(
        "flood: {held} of {FLOOD} sockets connected and held; owner's slowest auth {slowest:?}; {turns} turns; connections {c}"

    );
}

/// A phone that stops reading while its answers pile up (a history replay asked for
/// again and again) is closed and forgotten within the write deadline: its socket and
/// queue are freed, and the others are told it left.
#[tokio::test]
async fn a_phone_that_stops_reading_is_dropped_and_its_queue_freed() {
    let home = Home::new();
    home.config("[worker]\nclient_queue_bytes = 1048576\nwrite_timeout_ms = 500\n");
    let w = common::Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut reader = w.client().await;
    // A history worth replaying: ten inputs of 90 000 characters.
    let big = "x".repeat(90_000);
    for _ in 0..10 {
        reader.turn(&big).await;
    }
    let session = reader.active_session();

    let mut stalled = w.connect().await;
    assert_eq!(stalled.auth(TOKEN).await["type"], "auth_ok");
    let joined = reader.until_type("client_joined").await;
    let stalled_id = joined["client"]["clientId"].clone();
    // From here on it never reads; it only asks for the replay, again and again.
    let ask = json!({"type": "switch_session", "sessionId": session}).to_string();
    for _ in 0..20 {
        // Once it is dropped a send fails; that is the point.
        let _ = futures_util::SinkExt::send(
            &mut stalled.ws,
            tokio_tungstenite::tungstenite::Message::text(ask.clone()),
        )
        .await;
    }
    let left = reader
        .until(|v| v["type"] == "client_left" && v["clientId"] == stalled_id)
        .await;
    assert_eq!(left["clientId"], stalled_id);
}
