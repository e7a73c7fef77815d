//! Authentication, malformed frames and rate limits, against a real worker process.
//! These paths never reach an agent, so the CLI is not needed except where noted.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

async fn worker(home: &Home) -> Worker {
    // The agent is irrelevant here; a missing one must not matter either.
    Worker::start_with(home, WorkerOpts::missing_cli()).await
}

#[tokio::test]
async fn wrong_token_gets_invalid_token_and_4001() {
    let home = Home::new();
    home.config("[worker]\nauth_backoff_base_ms = 10\n");
    let w = worker(&home).await;
    let mut c = w.connect().await;
    let answer = c.auth("wrong").await;
    assert_eq!(
        answer,
        json!({"type": "auth_fail", "reason": "invalid_token"})
    );
    assert_eq!(c.closed().await, Some(4001));
}

#[tokio::test]
async fn no_auth_within_the_deadline_gets_timeout_and_4001() {
    let home = Home::new();
    home.config("[worker]\nauth_timeout_ms = 300\n");
    let w = worker(&home).await;
    // Measured from before the connection exists: the server's deadline cannot have
    // started earlier, so this lower bound holds however slow the machine is.
    let started = Instant::now();
    let mut c = w.connect().await;
    assert_eq!(
        c.recv().await,
        json!({"type": "auth_fail", "reason": "timeout"})
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(c.closed().await, Some(4001));
}

#[tokio::test]
async fn a_message_before_auth_gets_not_authenticated_and_4001() {
    let home = Home::new();
    let w = worker(&home).await;
    let mut c = w.connect().await;
    c.send(json!({"type": "list_sessions"})).await;
    assert_eq!(
        c.recv().await,
        json!({"type": "auth_fail", "reason": "not_authenticated"})
    );
    assert_eq!(c.closed().await, Some(4001));
}

#[tokio::test]
async fn repeated_wrong_tokens_back_off_per_address_and_never_block_the_right_token() {
    let home = Home::new();
    let base = 60u64;
    home.config(&format!("[worker]\nauth_backoff_base_ms = {base}\n"));
    let w = worker(&home).await;
    let mut delays = Vec::new();
    for _ in 0..6 {
        let mut c = w.connect().await;
        let started = Instant::now();
        assert_eq!(c.auth("wrong").await["reason"], "invalid_token");
        delays.push(started.elapsed());
        assert_eq!(c.closed().await, Some(4001));
    }
    for (n, d) in delays.iter().enumerate() {
        let expected = Duration::from_millis(base << n);
        assert!(
            *d >= expected,
            "failure {n}: answered after {d:?}, expected at least {expected:?} ({delays:?})"
        );
    }
    // The owner, from the same address, gets in at once despite the backoff.
    let mut c = w.connect().await;
    let started = Instant::now();
    assert_eq!(c.auth(TOKEN).await["type"], "auth_ok");
    assert!(
        started.elapsed() < Duration::from_millis(base << 5),
        "the right token was slowed down"
    );

    // Through the supervisor's public port, another client's address is not slowed by
    // these failures: the supervisor vouches for it in a signed header.
    let voucher = chroxy::forwarded::Voucher::new(&chroxy::token::ApiToken::new(TOKEN));
    let signed = voucher.header_value("203.0.113.50".parse().unwrap());
    let mut other = connect_with(w.port, &[(chroxy::forwarded::CLIENT_HEADER, &signed)]).await;
    let started = Instant::now();
    assert_eq!(other.auth("wrong").await["reason"], "invalid_token");
    assert!(
        started.elapsed() < Duration::from_millis(base << 5),
        "another address inherited the backoff"
    );

    // A header any local process can set is not an address: rotating Cf-Connecting-Ip
    // (or forging the supervisor's header) keeps the backoff of the real peer, which
    // starts over from the owner's success above and doubles with each try.
    for (n, (name, value)) in [
        ("cf-connecting-ip", "198.51.100.1".to_owned()),
        ("cf-connecting-ip", "198.51.100.2".to_owned()),
        (
            chroxy::forwarded::CLIENT_HEADER,
            format!("198.51.100.3 {}", "ab".repeat(32)),
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let mut spoofed = connect_with(w.port, &[(name, &value)]).await;
        let started = Instant::now();
        assert_eq!(spoofed.auth("wrong").await["reason"], "invalid_token");
        let expected = Duration::from_millis(base << n);
        assert!(
            started.elapsed() >= expected,
            "{name}: {value} reset the backoff ({:?} < {expected:?})",
            started.elapsed()
        );
    }
}

/// A WebSocket to the worker's private port with extra request headers.
async fn connect_with(port: u16, headers: &[(&str, &str)]) -> Client {
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://127.0.0.1:{port}/ws"),
    )
    .map(|mut r| {
        for (name, value) in headers {
            r.headers_mut().insert(
                tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes())
                    .unwrap(),
                value.parse().unwrap(),
            );
        }
        r
    })
    .unwrap();
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    Client {
        ws,
        seen: vec![],
        sealed: None,
    }
}

#[tokio::test]
async fn more_than_three_wrong_attempts_in_flight_are_rate_limited() {
    let home = Home::new();
    // Every wrong token waits at least 5 s for its answer, so six at once cannot all be
    // waiting: three are in flight, the other three are refused on the spot.
    home.config("[worker]\nauth_backoff_base_ms = 5000\n");
    let w = worker(&home).await;
    let mut attempts = Vec::new();
    for _ in 0..6 {
        let mut c = w.connect().await;
        c.send(json!({"type": "auth", "token": "wrong"})).await;
        attempts.push(tokio::spawn(async move {
            let first = tokio::time::timeout(Duration::from_secs(3), c.recv()).await;
            match first {
                Ok(answer) if answer["reason"] == "rate_limited" => Some(c.closed().await),
                Ok(other) => panic!("answered before its delay: {other}"),
                Err(_still_waiting) => None,
            }
        }));
    }
    let mut refused = Vec::new();
    for a in attempts {
        if let Some(code) = a.await.unwrap() {
            refused.push(code);
        }
    }
    assert_eq!(
        refused,
        vec![Some(4029); 3],
        "exactly three of six are refused at once, with 4029"
    );
}

#[tokio::test]
async fn malformed_frames_get_specific_errors_and_the_connection_keeps_working() {
    let home = Home::new();
    let model = Model::start().await;
    let w = Worker::start(&home, &model).await;
    let mut c = w.client().await;
    let cases: Vec<(Message, &str, &str)> = vec![
        (
            Message::text("{not json"),
            "INVALID_MESSAGE",
            "not valid JSON",
        ),
        (
            Message::text("[1,2,3]"),
            "INVALID_MESSAGE",
            "must be a JSON object",
        ),
        (
            Message::binary(vec![1u8, 2, 3]),
            "INVALID_MESSAGE",
            "binary",
        ),
        (
            Message::text(format!(
                "{{\"type\":\"input\",\"data\":\"{}\"}}",
                "x".repeat(3 << 19)
            )),
            "TOO_LARGE",
            "limit",
        ),
        (
            Message::text(r#"{"type":"teleport"}"#),
            "UNKNOWN_TYPE",
            "teleport",
        ),
        (
            Message::text(r#"{"type":"input"}"#),
            "INVALID_MESSAGE",
            "data",
        ),
        (
            Message::text(r#"{"type":"input","data":5}"#),
            "INVALID_MESSAGE",
            "data",
        ),
        (
            Message::text(r#"{"type":"rename_session","sessionId":"x","name":7}"#),
            "INVALID_MESSAGE",
            "name",
        ),
        (
            Message::text(format!(
                "{{\"type\":\"input\",\"data\":\"{}\"}}",
                "y".repeat(100_001)
            )),
            "TOO_LARGE",
            "data",
        ),
    ];
    for (frame, code, needle) in cases {
        c.send_raw(frame).await;
        let err = c.until_type("error").await;
        assert_eq!(err["code"], code, "{err}");
        let message = err["message"].as_str().unwrap();
        assert!(
            message.contains(needle),
            "{code}: {message:?} should mention {needle:?}"
        );
    }
    c.send(json!({"type": "ping"})).await;
    assert!(c.until_type("pong").await["serverTs"].as_u64().unwrap() > 0);
    c.send(json!({"type": "list_sessions"})).await;
    assert_eq!(
        c.until_type("session_list").await["sessions"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    // None of it reached the session: it still takes a turn.
    let frames = c.turn("REPLY still fine").await;
    assert_eq!(streamed_text(&frames), "still fine");
}

#[tokio::test]
async fn a_frame_past_twice_the_limit_is_not_buffered_and_ends_the_connection() {
    let home = Home::new();
    let w = worker(&home).await;
    // Before authenticating as after: the worker never holds more than 2 MiB of it.
    for authenticated in [false, true] {
        let mut c = if authenticated {
            w.client().await
        } else {
            w.connect().await
        };
        // The worker may close while the frame is still being written (a broken pipe
        // here), and its close frame may then be lost to the reset: either way the
        // connection ends at once, never with TOO_LARGE on a connection kept open.
        let big = Message::text("x".repeat((2 << 20) + 1));
        let _ = futures_util::SinkExt::send(&mut c.ws, big).await;
        let code = c.closed().await;
        assert!(
            matches!(code, Some(1009) | None),
            "authenticated: {authenticated}: closed with {code:?}"
        );
    }
}

#[tokio::test]
async fn five_bad_frames_in_a_minute_close_with_1008() {
    let home = Home::new();
    let w = worker(&home).await;
    let mut c = w.client().await;
    for _ in 0..5 {
        c.send_raw(Message::text("nope")).await;
    }
    assert_eq!(c.closed().await, Some(1008));
}

#[tokio::test]
async fn a_flood_is_rate_limited_and_other_clients_are_unaffected() {
    let home = Home::new();
    let w = worker(&home).await;
    let mut flooder = w.client().await;
    let mut other = w.client().await;
    for _ in 0..1000 {
        flooder.send(json!({"type": "list_sessions"})).await;
    }
    let limited = flooder.until_type("rate_limited").await;
    assert!(limited["retryAfterMs"].as_u64().unwrap() > 0, "{limited}");
    // The other phone is served at once, and the flooder can still ping (own budget).
    other.send(json!({"type": "ping"})).await;
    other.until_type("pong").await;
    other.send(json!({"type": "list_sessions"})).await;
    other.until_type("session_list").await;
    flooder.send(json!({"type": "ping"})).await;
    flooder.until_type("pong").await;
}

#[tokio::test]
async fn health_and_static_files() {
    let home = Home::new();
    let w = worker(&home).await;
    let health = |header: String| async move {
        let body = http_get_with(w.port, "/health", &header).await;
        serde_json::from_str::<serde_json::Value>(body.split("\r\n\r\n").nth(1).unwrap()).unwrap()
    };
    // The supervisor's probe (its proof header) is told the build.
    let voucher = chroxy::forwarded::Voucher::new(&chroxy::token::ApiToken::new(TOKEN));
    let v = health(format!(
        "{}: {}",
        chroxy::forwarded::PROBE_HEADER,
        voucher.probe_value()
    ))
    .await;
    assert_eq!(v["status"], "ok");
    assert!(v["uptimeMs"].is_u64() && v["version"].is_string() && v["commit"].is_string());
    // Anyone else — through the public port (the supervisor's header), with a forged
    // proof, or with no header at all — is told nothing about the build.
    for header in [
        format!(
            "{}: {}",
            chroxy::forwarded::CLIENT_HEADER,
            voucher.header_value("203.0.113.7".parse().unwrap())
        ),
        format!("{}: {}", chroxy::forwarded::PROBE_HEADER, "ab".repeat(32)),
        "X-Nothing: 1".to_owned(),
    ] {
        assert_eq!(
            health(header.clone()).await,
            json!({"status": "ok"}),
            "{header}"
        );
    }
    let page = http_get(w.port, "/").await;
    assert!(
        page.starts_with("HTTP/1.1 200") && page.contains("text/html") && page.contains("Chroxy")
    );
}

/// A minimal HTTP/1.1 GET (keeps the test free of an HTTP client dependency).
async fn http_get(port: u16, path: &str) -> String {
    http_get_with(port, path, "X-Nothing: 1").await
}

async fn http_get_with(port: u16, path: &str, header: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{header}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    out
}

#[tokio::test]
async fn a_health_probe_is_answered_but_no_phone_sees_or_counts_it() {
    let home = Home::new();
    let w = worker(&home).await;
    let mut phone = w.client().await;
    // The supervisor's probe, as the health gate connects (with its proof): it stays
    // connected.
    let voucher = chroxy::forwarded::Voucher::new(&chroxy::token::ApiToken::new(TOKEN));
    let proof = voucher.probe_value();
    let mut probe = connect_with(w.port, &[(chroxy::forwarded::PROBE_HEADER, &proof)]).await;
    probe
        .send(
            json!({"type": "auth", "token": TOKEN, "deviceKey": DEVICE_KEY, "deviceInfo": {
            "deviceName": "probe", "deviceType": chroxy::control::PROBE_DEVICE_TYPE}}),
        )
        .await;
    assert_eq!(probe.recv().await["type"], "auth_ok");
    probe.send(json!({"type": "list_sessions"})).await;
    probe.until_type("session_list").await;

    // A phone arriving while the probe is connected is told of one other phone.
    let second = w.client().await;
    let ok = second.seen.iter().find(|v| v["type"] == "auth_ok").unwrap();
    let names: Vec<&str> = ok["connectedClients"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["deviceName"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["test", "test"], "the probe is not listed: {ok}");
    // The first phone hears of the second, and of nothing before it.
    let joined = phone.until_type("client_joined").await;
    assert_eq!(joined["client"]["clientId"], ok["clientId"], "{joined}");

    // A token holder who claims to be the probe without its proof is a phone like any
    // other: listed, announced; through the public port as well.
    let mut claims = w.connect().await;
    claims
        .send(json!({"type": "auth", "token": TOKEN, "deviceKey": DEVICE_KEY, "deviceInfo": {
            "deviceName": "claims to be a probe", "deviceType": chroxy::control::PROBE_DEVICE_TYPE}}))
        .await;
    assert_eq!(claims.recv().await["type"], "auth_ok");
    let joined = phone.until_type("client_joined").await;
    assert_eq!(
        joined["client"]["deviceName"], "claims to be a probe",
        "{joined}"
    );
    let signed = voucher.header_value("203.0.113.66".parse().unwrap());
    let mut hidden = connect_with(w.port, &[(chroxy::forwarded::CLIENT_HEADER, &signed)]).await;
    hidden
        .send(
            json!({"type": "auth", "token": TOKEN, "deviceKey": DEVICE_KEY, "deviceInfo": {
            "deviceName": "not a probe", "deviceType": chroxy::control::PROBE_DEVICE_TYPE}}),
        )
        .await;
    assert_eq!(hidden.recv().await["type"], "auth_ok");
    let joined = phone.until_type("client_joined").await;
    assert_eq!(joined["client"]["deviceName"], "not a probe", "{joined}");
}
