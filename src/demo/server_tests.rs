//! The demo server over real HTTP, without the CLI: response shapes, the request record,
//! waiting, and streams ending when the client hangs up or the server stops.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use super::*;

const WAIT: Duration = Duration::from_secs(10);

async fn start() -> (
    DemoHandle,
    CancellationToken,
    tokio::task::JoinHandle<Result<(), DemoError>>,
) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let stop = CancellationToken::new();
    let (demo, task) = spawn(listener, stop.clone()).expect("demo server starts");
    (demo, stop, task)
}

fn main_turn(prompt: &str, stream: bool) -> Value {
    json!({
        "model": "claude-test", "stream": stream, "max_tokens": 100,
        "tools": [{"name": "Write"}],
        "system": [{"type": "text", "text": " - Primary working directory: /w\n"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
    })
}

/// Sends one HTTP/1.1 request on a new connection and returns the open socket.
async fn send(demo: &DemoHandle, method: &str, path: &str, body: Option<&Value>) -> TcpStream {
    let mut sock = TcpStream::connect(demo.addr())
        .await
        .expect("connect to demo");
    let body = body.map(Value::to_string).unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    sock.write_all(head.as_bytes()).await.expect("write head");
    sock.write_all(body.as_bytes()).await.expect("write body");
    sock
}

/// Status line, headers (lower-cased) and the body, de-chunked.
async fn roundtrip(
    demo: &DemoHandle,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> (u16, String, String) {
    let mut sock = send(demo, method, path, body).await;
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, sock.read_to_end(&mut raw))
        .await
        .expect("response within the deadline")
        .expect("read response");
    let raw = String::from_utf8(raw).expect("utf-8 response");
    let (head, body) = raw.split_once("\r\n\r\n").expect("header/body split");
    let status: u16 = head[9..12].parse().expect("status code");
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    (status, head, body)
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = body.split_once("\r\n").expect("chunk size line");
        let size = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if size == 0 {
            return out;
        }
        out.push_str(&rest[..size]);
        body = &rest[size + 2..];
    }
}

#[tokio::test]
async fn streams_the_scripted_events_and_records_the_turn() {
    let (demo, stop, _task) = start().await;
    let (status, head, body) = roundtrip(
        &demo,
        "POST",
        "/v1/messages?beta=true",
        Some(&main_turn("REPLY Hi there", true)),
    )
    .await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/event-stream"), "{head}");
    let names: Vec<&str> = body
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(
        names,
        [
            "message_start",
            "ping",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    assert!(body.contains(r#""text":" there""#), "{body}");

    let first = demo
        .wait_for_request(1, WAIT)
        .await
        .expect("first turn recorded");
    assert_eq!(first.kind, RequestKind::MainTurn);
    assert_eq!(first.path, "/v1/messages?beta=true");
    assert_eq!(first.model(), Some("claude-test"));
    assert_eq!(demo.requests().len(), 1);
    stop.cancel();
}

#[tokio::test]
async fn answers_non_streaming_calls_with_one_message() {
    let (demo, stop, _task) = start().await;
    let (status, _, body) = roundtrip(
        &demo,
        "POST",
        "/v1/messages",
        Some(&main_turn("PLEASE_WRITE a.txt hi", false)),
    )
    .await;
    assert_eq!(status, 200);
    let msg: Value = serde_json::from_str(&body).expect("JSON message");
    assert_eq!(msg["stop_reason"], "tool_use");
    assert_eq!(
        msg["content"][1]["input"],
        json!({"file_path": "/w/a.txt", "content": "hi"})
    );
    stop.cancel();
}

#[tokio::test]
async fn api_error_uses_the_error_shape_and_forbids_retries() {
    let (demo, stop, _task) = start().await;
    let (status, head, body) = roundtrip(
        &demo,
        "POST",
        "/v1/messages",
        Some(&main_turn("API_ERROR 529", true)),
    )
    .await;
    assert_eq!(status, 529);
    assert!(head.contains("x-should-retry: false"), "{head}");
    let err: Value = serde_json::from_str(&body).expect("JSON error");
    assert_eq!(err["type"], "error");
    assert_eq!(err["error"]["type"], "overloaded_error");
    stop.cancel();
}

#[tokio::test]
async fn side_calls_and_probes_do_not_count_as_turns() {
    let (demo, stop, _task) = start().await;
    let (status, _, _) = roundtrip(&demo, "HEAD", "/", None).await;
    assert_eq!(status, 200);
    let title = json!({
        "model": "m", "stream": false,
        "messages": [{"role": "user", "content": "<session>\nREPLY x\n</session>"}],
        "output_config": {"format": {"type": "json_schema",
            "schema": {"type": "object", "properties": {"title": {"type": "string"}}}}}
    });
    let (_, _, body) = roundtrip(&demo, "POST", "/v1/messages", Some(&title)).await;
    let msg: Value = serde_json::from_str(&body).expect("JSON message");
    let text = msg["content"][0]["text"].as_str().expect("text block");
    assert_eq!(
        serde_json::from_str::<Value>(text).expect("title JSON")["title"],
        "Demo: REPLY x"
    );
    let (status, _, body) =
        roundtrip(&demo, "POST", "/v1/messages/count_tokens", Some(&title)).await;
    assert_eq!(status, 200);
    assert!(body.contains("input_tokens"), "{body}");
    let (status, _, _) = roundtrip(&demo, "GET", "/v1/nope", None).await;
    assert_eq!(status, 404);

    assert_eq!(demo.turns_seen(), 0);
    assert!(demo.requests().is_empty());
    let kinds: Vec<RequestKind> = demo.all_requests().iter().map(|r| r.kind).collect();
    assert_eq!(
        kinds,
        [
            RequestKind::Other,
            RequestKind::Title,
            RequestKind::CountTokens,
            RequestKind::Other
        ]
    );
    let err = demo
        .wait_for_request(1, Duration::from_millis(50))
        .await
        .expect_err("no main turn was sent");
    assert!(
        matches!(
            err,
            DemoError::Timeout {
                wanted: 1,
                seen: 0,
                ..
            }
        ),
        "{err}"
    );
    stop.cancel();
}

/// Reads from `sock` until `needle` has been seen.
async fn read_until(sock: &mut TcpStream, needle: &str) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(WAIT, async {
        while !String::from_utf8_lossy(&seen).contains(needle) {
            let n = sock.read(&mut buf).await.expect("read stream");
            assert!(n > 0, "stream ended before {needle:?}");
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("needle within the deadline");
}

#[tokio::test]
async fn a_slow_stream_stops_when_the_client_hangs_up() {
    let (demo, stop, _task) = start().await;
    let mut sock = send(
        &demo,
        "POST",
        "/v1/messages",
        Some(&main_turn("SLOW 100 a b c d e f g h i j k l m n o p", true)),
    )
    .await;
    read_until(&mut sock, r#""text":" b""#).await;
    assert_eq!(demo.open_streams(), 1);
    drop(sock);
    demo.wait_streams_closed(WAIT)
        .await
        .expect("server noticed the hang-up");
    stop.cancel();
}

#[tokio::test]
async fn stop_ends_open_streams_and_the_server() {
    let (demo, stop, task) = start().await;
    let mut sock = send(
        &demo,
        "POST",
        "/v1/messages",
        Some(&main_turn("SLOW 60000 never finishes", true)),
    )
    .await;
    read_until(&mut sock, "content_block_start").await;
    stop.cancel();
    let stopped = tokio::time::timeout(WAIT, task)
        .await
        .expect("server stops within the deadline");
    stopped
        .expect("server task did not panic")
        .expect("server stopped cleanly");
    assert_eq!(demo.open_streams(), 0);
}

#[tokio::test]
async fn waiting_after_stop_says_the_server_stopped() {
    let (demo, stop, task) = start().await;
    roundtrip(
        &demo,
        "POST",
        "/v1/messages",
        Some(&main_turn("REPLY x", false)),
    )
    .await;
    stop.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("server stops within the deadline")
        .expect("server task did not panic")
        .expect("server stopped cleanly");
    let first = demo
        .wait_for_request(1, WAIT)
        .await
        .expect("recorded before the stop");
    assert_eq!(first.turn, Some(1));
    let err = demo
        .wait_for_request(2, WAIT)
        .await
        .expect_err("no second request");
    assert!(matches!(err, DemoError::Stopped), "{err}");
}
