//! The status page on its own, in front of a scripted supervisor: what it serves, what
//! it refuses, and that each action reaches the supervisor exactly as asked (or not at
//! all). The real supervisor behind it is covered in `tests/supervisor.rs`.

mod common;

use chroxy::secrets::ApiToken;
use chroxy::status_page::{serve, StatusPage};
use chroxy::supervisor::handle::{ActionError, Handle, Request};
use chroxy::supervisor::status::{Action, StateName, Status};
use common::supervisor::http;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-for-tests";

/// A page on 127.0.0.1:0 whose supervisor records every action and answers with
/// `answer`.
struct Page {
    port: u16,
    status: watch::Sender<Status>,
    actions: mpsc::UnboundedReceiver<Action>,
    stop: CancellationToken,
}

impl Drop for Page {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn page(answer: Result<String, ActionError>) -> Page {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (status, status_rx) = watch::channel(Status::new(8765, port, false, "file"));
    let (tx, mut rx) = mpsc::channel::<Request>(8);
    let (seen_tx, actions) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Request { action, reply }) = rx.recv().await {
            seen_tx.send(action).unwrap();
            let _ = reply.send(answer.clone());
        }
    });
    let stop = CancellationToken::new();
    let page = StatusPage {
        handle: Handle::new(status_rx, tx),
        admin: ApiToken::new(ADMIN),
        port,
    };
    tokio::spawn(serve(listener, page, stop.clone()));
    Page {
        port,
        status,
        actions,
        stop,
    }
}

impl Page {
    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
        let (code, text) = http(self.port, "POST", path, headers, body).await;
        (
            code,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    /// Nothing reached the supervisor.
    fn no_action(&mut self) {
        assert_eq!(self.actions.try_recv().ok(), None);
    }
}

#[tokio::test]
async fn status_json_has_the_protocol_fields_and_follows_the_supervisor() {
    let p = page(Ok("ok".into())).await;
    let (code, body) = http(p.port, "GET", "/api/status", &[], "").await;
    assert_eq!(code, 200);
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["state"], "starting");
    for key in ["pid", "release", "port", "startedAt", "restarts"] {
        assert!(s["worker"].get(key).is_some(), "worker.{key} missing: {s}");
    }
    for key in ["current", "knownGood", "list"] {
        assert!(
            s["releases"].get(key).is_some(),
            "releases.{key} missing: {s}"
        );
    }
    for key in ["mode", "state", "url"] {
        assert!(s["tunnel"].get(key).is_some(), "tunnel.{key} missing: {s}");
    }
    assert_eq!(s["secretsBackend"], "file");
    assert!(s["clients"].is_number() && s["events"].is_array());

    p.status.send_modify(|s| {
        s.state = StateName::Failed;
        s.failed_reason = Some("known-good crashed".into());
        s.push_event("failed", "known-good crashed");
    });
    let (_, body) = http(p.port, "GET", "/api/status", &[], "").await;
    let s: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["state"], "failed");
    assert_eq!(s["failedReason"], "known-good crashed");
    assert_eq!(s["events"][0]["kind"], "failed");
}

#[tokio::test]
async fn actions_need_the_admin_token_and_a_local_origin() {
    let mut p = page(Ok("done".into())).await;
    let (code, answer) = p.post("/api/restart", &[], "").await;
    assert_eq!(code, 401);
    assert!(answer["error"]
        .as_str()
        .unwrap()
        .contains("chroxy token show --admin"));
    p.no_action();
    let (code, _) = p
        .post("/api/restart", &[("X-Chroxy-Admin", "not-it")], "")
        .await;
    assert_eq!(code, 401);
    p.no_action();
    let (code, _) = p
        .post(
            "/api/rollback",
            &[
                ("X-Chroxy-Admin", ADMIN),
                ("Origin", "https://evil.example"),
            ],
            "",
        )
        .await;
    assert_eq!(code, 403, "a foreign page cannot act even with the token");
    p.no_action();
    let own = format!("http://127.0.0.1:{}", p.port);
    let (code, answer) = p
        .post(
            "/api/restart",
            &[("X-Chroxy-Admin", ADMIN), ("Origin", own.as_str())],
            "",
        )
        .await;
    assert_eq!((code, answer["message"].as_str()), (200, Some("done")));
    assert_eq!(p.actions.recv().await, Some(Action::Restart));
}

#[tokio::test]
async fn each_action_reaches_the_supervisor_as_asked() {
    let mut p = page(Ok("done".into())).await;
    let admin = [("X-Chroxy-Admin", ADMIN)];
    let cases = [
        ("/api/rollback", "", Action::Rollback { to: None }),
        (
            "/api/rollback",
            r#"{"to":"3-abcdef12"}"#,
            Action::Rollback {
                to: Some("3-abcdef12".into()),
            },
        ),
        ("/api/restart", "", Action::Restart),
        ("/api/reconnect", "", Action::Reconnect),
        (
            "/api/deploy",
            r#"{"release":"4-00ff00ff"}"#,
            Action::Deploy {
                release: "4-00ff00ff".into(),
            },
        ),
    ];
    for (path, body, expected) in cases {
        let (code, answer) = p.post(path, &admin, body).await;
        assert_eq!(code, 200, "{path}: {answer}");
        assert_eq!(p.actions.recv().await, Some(expected));
    }
    // Bodies that make no sense are refused before anything happens.
    for (path, body) in [
        ("/api/deploy", ""),
        ("/api/rollback", "{not json"),
        ("/api/rollback", r#"{"too":"x"}"#),
    ] {
        let (code, answer) = p.post(path, &admin, body).await;
        assert_eq!(code, 400, "{path} {body}: {answer}");
        p.no_action();
    }
}

#[tokio::test]
async fn refusals_of_the_supervisor_keep_their_meaning() {
    for (error, code) in [
        (ActionError::UnknownRelease("9-x".into()), 404),
        (ActionError::ChecksumMismatch("9-x".into()), 422),
        (ActionError::Stopping, 503),
        (
            ActionError::Refused("a deploy is already in progress".into()),
            409,
        ),
    ] {
        let message = error.to_string();
        let p = page(Err(error)).await;
        let (got, answer) = p
            .post("/api/rollback", &[("X-Chroxy-Admin", ADMIN)], "")
            .await;
        assert_eq!(got, code, "{answer}");
        assert_eq!(answer["ok"], false);
        assert_eq!(answer["error"], message.as_str());
    }
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy_and_only_to_local_hosts() {
    let p = page(Ok("ok".into())).await;
    let raw = |path: &str, host: &str| {
        let path = path.to_owned();
        let host = host.to_owned();
        let port = p.port;
        async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .unwrap();
            s.write_all(
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        }
    };
    let local = format!("127.0.0.1:{}", p.port);
    let html = raw("/", &local).await;
    assert!(html.starts_with("HTTP/1.1 200"), "{html}");
    let lower = html.to_ascii_lowercase();
    assert!(lower.contains("content-security-policy: default-src 'self'"));
    assert!(lower.contains("content-type: text/html"));
    assert!(html.contains("status.js") && html.contains("Recent events"));
    for asset in ["/status.js", "/status.css"] {
        let r = raw(asset, &format!("localhost:{}", p.port)).await;
        assert!(r.starts_with("HTTP/1.1 200"), "{asset}: {r}");
    }
    // The page renders server strings as text only.
    let js = raw("/status.js", &local).await;
    assert!(
        !js.contains("innerHTML"),
        "status.js must not build markup from data"
    );
    // A rebound DNS name pointing at loopback gets nothing.
    let r = raw("/api/status", &format!("evil.example:{}", p.port)).await;
    assert!(r.starts_with("HTTP/1.1 421"), "{r}");
}
