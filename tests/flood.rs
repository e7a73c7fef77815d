//! Nobody takes the machine from its owner by flooding it: thousands of sockets that
//! never authenticate, authenticate slowly, with a wrong token, or never even send a
//! request, opened as fast as possible through the public port of a supervisor started
//! under `ulimit -n 1024` and held for a minute. Throughout, the supervisor stays
//! healthy with no restart, and the owner's phone authenticates within a second and
//! gets a turn done.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::supervisor::Sup;
use common::{Client, Home, WorkerOpts, TOKEN};
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::Instant;

/// Sockets the flood opens.
const FLOOD: usize = 3000;
/// How long it holds them.
const HOLD: Duration = Duration::from_secs(60);
/// The owner's phone must be in within this, every time.
const OWNER_AUTH: Duration = Duration::from_secs(1);

/// The four kinds of hostile socket, in turn.
#[derive(Debug, Clone, Copy)]
enum Kind {
    /// TCP connected, nothing sent.
    HalfOpen,
    /// Upgraded to a WebSocket, never authenticates.
    NoAuth,
    /// Upgraded, then an `auth` frame's first bytes and nothing more.
    SlowAuth,
    /// Upgraded, authenticates with a wrong token.
    WrongToken,
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A client's (masked, as RFC 6455 requires) text frame.
fn masked_text(payload: &str) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// One hostile socket from `from` (another loopback address than the owner's, as a
/// flood from elsewhere arrives); `None` when the supervisor turned it away.
async fn hostile(public: SocketAddr, from: std::net::IpAddr, kind: Kind) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let mut s = tokio::time::timeout(Duration::from_secs(5), socket.connect(public))
        .await
        .ok()?
        .ok()?;
    let wrong = masked_text(&json!({"type": "auth", "token": "wrong"}).to_string());
    let sent = match kind {
        Kind::HalfOpen => Ok(()),
        Kind::NoAuth => s.write_all(UPGRADE.as_bytes()).await,
        Kind::SlowAuth => {
            let mut bytes = UPGRADE.as_bytes().to_vec();
            bytes.extend_from_slice(&wrong[..4]);
            s.write_all(&bytes).await
        }
        Kind::WrongToken => {
            let mut bytes = UPGRADE.as_bytes().to_vec();
            bytes.extend_from_slice(&wrong);
            s.write_all(&bytes).await
        }
    };
    sent.ok().map(|()| s)
}

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

    // The flood: every socket as fast as the machine opens them, each kind in turn,
    // from another loopback address; kept open until the end.
    let flood = tokio::spawn(async move {
        let from: std::net::IpAddr = "127.0.0.2".parse().unwrap();
        let kinds = [
            Kind::HalfOpen,
            Kind::NoAuth,
            Kind::SlowAuth,
            Kind::WrongToken,
        ];
        let mut held = Vec::with_capacity(FLOOD);
        let mut opening = tokio::task::JoinSet::new();
        for i in 0..FLOOD {
            opening.spawn(hostile(public, from, kinds[i % kinds.len()]));
        }
        while let Some(socket) = opening.join_next().await {
            held.extend(socket.ok().flatten());
        }
        held
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
    let held = flood.await.unwrap();
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
        "flood: {} of {FLOOD} sockets connected and held; owner's slowest auth {slowest:?}; {turns} turns; connections {c}",
        held.len()
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
