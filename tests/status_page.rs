//! The status page on its own, in front of a scripted supervisor: what it serves, what
//! it refuses, and that each action reaches the supervisor exactly as asked (or not at
//! all). The real supervisor behind it is covered in `tests/supervisor.rs`.
//!
//! Requests are written by hand over TCP so the test controls every header a browser
//! (or an attacker's page) would send: `Host`, `Origin`, `X-Chroxy-Admin`.

use std::time::Duration;

use chroxy::devices::{Admission, DeviceState, Devices, Knock};
use chroxy::status_page::{serve, StatusPage};
use chroxy::store::Paths;
use chroxy::supervisor::handle::{ActionError, Handle, Request};
use chroxy::supervisor::status::{Action, DeployOrigin, StateName, Status};
use chroxy::token::ApiToken;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const ADMIN: &str = "admin-token-for-tests";
const DEADLINE: Duration = Duration::from_secs(5);

/// A page on 127.0.0.1:0 whose supervisor records every action and answers each with
/// the same `answer`.
struct Page {
    port: u16,
    status: watch::Sender<Status>,
    actions: mpsc::UnboundedReceiver<Action>,
    stop: CancellationToken,
    served: Option<JoinHandle<std::io::Result<()>>>,
    /// The home of the device registry its buttons decide in.
    home: tempfile::TempDir,
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
            // Recorded before the answer, so once a response is in, so is its action.
            let _ = seen_tx.send(action);
            let _ = reply.send(answer.clone());
        }
    });
    let stop = CancellationToken::new();
    let home = tempfile::tempdir().unwrap();
    let page = StatusPage {
        handle: Handle::new(status_rx, tx),
        admin: ApiToken::new(ADMIN),
        port,
        devices: Devices::new(&Paths::under(home.path())),
    };
    let served = tokio::spawn(serve(listener, page, stop.clone()));
    Page {
        port,
        status,
        actions,
        stop,
        served: Some(served),
        home,
    }
}

/// One HTTP/1.1 exchange as written, with `Connection: close`.
struct Answer {
    code: u16,
    /// The header block, lower-cased.
    head: String,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.code, self.body))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (k, v) = line.split_once(':')?;
            (k.trim() == name).then(|| v.trim())
        })
    }
}

/// Sends `raw` (everything up to and including the blank line, then the body) as is.
async fn exchange(port: u16, raw: String) -> Answer {
    let talk = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        String::from_utf8(out).unwrap()
    };
    let text = tokio::time::timeout(DEADLINE, talk)
        .await
        .expect("no answer within the deadline");
    let (head, body) = text.split_once("\r\n\r\n").expect("no header block");
    let code = head.split(' ').nth(1).unwrap().parse().unwrap();
    let head = head.to_ascii_lowercase();
    let body = if head.contains("transfer-encoding: chunked") {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Answer { code, head, body }
}

fn dechunk(mut rest: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, after) = rest.split_once("\r\n").unwrap();
        let size = usize::from_str_radix(size.trim(), 16).unwrap();
        if size == 0 {
            return out;
        }
        out.push_str(&after[..size]);
        rest = &after[size + 2..];
    }
}

impl Page {
    fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// A request with the given `Host` and extra headers.
    async fn send(
        &self,
        method: &str,
        path: &str,
        host: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Answer {
        let mut raw = format!(
            "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
            body.len()
        );
        for (k, v) in headers {
            raw.push_str(&format!("{k}: {v}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(body);
        exchange(self.port, raw).await
    }

    async fn get(&self, path: &str) -> Answer {
        self.send("GET", path, &self.host(), &[], "").await
    }

    async fn post(&self, path: &str, headers: &[(&str, &str)], body: &str) -> Answer {
        self.send("POST", path, &self.host(), headers, body).await
    }

    async fn status_json(&self) -> Value {
        let a = self.get("/api/status").await;
        assert_eq!(a.code, 200, "{}", a.body);
        a.json()
    }

    /// The next action the supervisor received.
    async fn next_action(&mut self) -> Action {
        tokio::time::timeout(DEADLINE, self.actions.recv())
            .await
            .expect("no action reached the supervisor")
            .expect("recorder gone")
    }

    /// Nothing reached the supervisor (actions are recorded before they are answered).
    fn no_action(&mut self) {
        assert_eq!(self.actions.try_recv().ok(), None);
    }
}

#[tokio::test]
async fn status_json_has_the_protocol_fields_and_follows_the_supervisor() {
    let p = page(Ok("ok".into())).await;
    let a = p.get("/api/status").await;
    assert_eq!(a.code, 200);
    assert_eq!(a.header("cache-control"), Some("no-store"));
    assert!(a
        .header("content-type")
        .unwrap()
        .starts_with("application/json"));
    let s = a.json();
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
    assert_eq!(s["demo"], false);
    assert!(s["clients"].is_number() && s["sessions"].is_number());
    assert!(s["uptimeMs"].is_number() && s["events"].is_array());

    p.status.send_modify(|s| {
        s.state = StateName::Failed;
        s.failed_reason = Some("known-good crashed".into());
        s.worker.restarts = 4;
        s.releases.current = Some("2-cafebabe".into());
        s.tunnel.url = Some("https://a-b-c.trycloudflare.com".into());
        s.clients = 2;
        s.push_event("failed", "known-good crashed");
    });
    let s = p.status_json().await;
    assert_eq!(s["state"], "failed");
    assert_eq!(s["failedReason"], "known-good crashed");
    assert_eq!(s["worker"]["restarts"], 4);
    assert_eq!(s["releases"]["current"], "2-cafebabe");
    assert_eq!(s["tunnel"]["url"], "https://a-b-c.trycloudflare.com");
    assert_eq!(s["clients"], 2);
    assert_eq!(s["events"][0]["kind"], "failed");
    assert_eq!(s["events"][0]["message"], "known-good crashed");
}

#[tokio::test]
async fn actions_need_the_admin_token() {
    let mut p = page(Ok("done".into())).await;
    let a = p.post("/api/restart", &[], "").await;
    assert_eq!(a.code, 401);
    assert_eq!(a.json()["ok"], false);
    assert!(a.json()["error"]
        .as_str()
        .unwrap()
        .contains("chroxy token show --admin"));
    p.no_action();
    // Approving a deploy that waits for a person is an action like any other.
    for path in ["/api/deploy/approve", "/api/deploy/refuse"] {
        let a = p.post(path, &[], "").await;
        assert_eq!(a.code, 401, "{path}");
        p.no_action();
    }

    for wrong in ["not-it", "admin-token-for-test", "admin-token-for-tests2"] {
        let a = p
            .post("/api/rollback", &[("X-Chroxy-Admin", wrong)], "")
            .await;
        assert_eq!(a.code, 401, "{wrong}");
        assert!(!a.body.contains(wrong), "the token was echoed: {}", a.body);
        p.no_action();
    }

    let a = p
        .post("/api/restart", &[("X-Chroxy-Admin", ADMIN)], "")
        .await;
    assert_eq!((a.code, a.json()["ok"].as_bool()), (200, Some(true)));
    assert_eq!(a.json()["message"], "done");
    assert!(!a.body.contains(ADMIN));
    assert_eq!(p.next_action().await, Action::Restart);
}

#[tokio::test]
async fn a_foreign_origin_is_refused_before_the_token_is_looked_at() {
    let mut p = page(Ok("done".into())).await;
    for origin in [
        "https://evil.example",
        "null",
        &format!("http://evil.example:{}", p.port),
        &format!("https://127.0.0.1:{}", p.port),
        "http://127.0.0.1:1",
    ] {
        for headers in [
            vec![("X-Chroxy-Admin", ADMIN), ("Origin", origin)],
            vec![("Origin", origin)],
        ] {
            let a = p.post("/api/restart", &headers, "").await;
            assert_eq!(a.code, 403, "{origin}: {}", a.body);
            assert_eq!(a.json()["ok"], false);
            p.no_action();
        }
    }
    // The page's own origin, under each name it answers to.
    for name in ["127.0.0.1", "localhost", "[::1]"] {
        let own = format!("http://{name}:{}", p.port);
        let a = p
            .send(
                "POST",
                "/api/reconnect",
                &format!("{name}:{}", p.port),
                &[("X-Chroxy-Admin", ADMIN), ("Origin", &own)],
                "",
            )
            .await;
        assert_eq!(a.code, 200, "{own}: {}", a.body);
        assert_eq!(p.next_action().await, Action::Reconnect);
    }
}

#[tokio::test]
async fn each_action_reaches_the_supervisor_as_asked() {
    let mut p = page(Ok("under way".into())).await;
    let admin = [("X-Chroxy-Admin", ADMIN)];
    let cases = [
        ("/api/rollback", "", Action::Rollback { to: None }),
        ("/api/rollback", "{}", Action::Rollback { to: None }),
        (
            "/api/rollback",
            r#"{"to":"3-abcdef12"}"#,
            Action::Rollback {
                to: Some("3-abcdef12".into()),
            },
        ),
        ("/api/restart", "", Action::Restart),
        ("/api/reconnect", "", Action::Reconnect),
        // A deploy that does not say where it comes from is remote: it waits for a person.
        (
            "/api/deploy",
            r#"{"release":"4-00ff00ff"}"#,
            Action::Deploy {
                release: "4-00ff00ff".into(),
                origin: DeployOrigin::Remote,
            },
        ),
        (
            "/api/deploy",
            r#"{"release":"4-00ff00ff","origin":"desk"}"#,
            Action::Deploy {
                release: "4-00ff00ff".into(),
                origin: DeployOrigin::Desk,
            },
        ),
        (
            "/api/deploy/approve",
            "",
            Action::ApproveDeploy { release: None },
        ),
        (
            "/api/deploy/approve",
            r#"{"release":"4-00ff00ff"}"#,
            Action::ApproveDeploy {
                release: Some("4-00ff00ff".into()),
            },
        ),
        (
            "/api/deploy/refuse",
            "{}",
            Action::RefuseDeploy { release: None },
        ),
        (
            "/api/deploy/refuse",
            r#"{"release":"4-00ff00ff"}"#,
            Action::RefuseDeploy {
                release: Some("4-00ff00ff".into()),
            },
        ),
        ("/api/reload-token", "", Action::ReloadToken),
    ];
    for (path, body, expected) in cases {
        let a = p.post(path, &admin, body).await;
        assert_eq!(a.code, 200, "{path}: {}", a.body);
        assert_eq!(
            a.json(),
            serde_json::json!({"ok": true, "message": "under way"})
        );
        assert_eq!(p.next_action().await, expected, "{path} {body}");
    }
    // Bodies that make no sense are refused before anything happens, in JSON.
    for (path, body) in [
        ("/api/deploy", ""),
        ("/api/deploy", "{}"),
        (
            "/api/deploy",
            r#"{"release":"4-00ff00ff","origin":"nearby"}"#,
        ),
        ("/api/deploy/approve", r#"{"release":4}"#),
        ("/api/deploy/refuse", r#"{"id":"4-00ff00ff"}"#),
        ("/api/rollback", "{not json"),
        ("/api/rollback", r#"{"too":"x"}"#),
        ("/api/rollback", r#"{"to":3}"#),
    ] {
        let a = p.post(path, &admin, body).await;
        assert_eq!(a.code, 400, "{path} {body}: {}", a.body);
        assert_eq!(a.json()["ok"], false);
        p.no_action();
    }
    // So are big ones.
    let big = format!(r#"{{"to":"{}"}}"#, "x".repeat(8 * 1024));
    let a = p.post("/api/rollback", &admin, &big).await;
    assert_eq!(a.code, 413, "{}", a.body);
    assert_eq!(a.json()["ok"], false);
    p.no_action();
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
        let mut p = page(Err(error)).await;
        let a = p
            .post(
                "/api/deploy",
                &[("X-Chroxy-Admin", ADMIN)],
                r#"{"release":"9-x"}"#,
            )
            .await;
        assert_eq!(a.code, code, "{}", a.body);
        assert_eq!(
            a.json(),
            serde_json::json!({"ok": false, "error": message.as_str()})
        );
        assert_eq!(
            p.next_action().await,
            Action::Deploy {
                release: "9-x".into(),
                origin: DeployOrigin::Remote,
            }
        );
    }
}

#[tokio::test]
async fn a_supervisor_that_is_gone_answers_503() {
    // No one receives the actions: the handle says the supervisor is stopping.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_status, status_rx) = watch::channel(Status::new(8765, port, true, "keyring"));
    let (tx, rx) = mpsc::channel::<Request>(1);
    drop(rx);
    let stop = CancellationToken::new();
    let home = tempfile::tempdir().unwrap();
    let page = StatusPage {
        handle: Handle::new(status_rx, tx),
        admin: ApiToken::new(ADMIN),
        port,
        devices: Devices::new(&Paths::under(home.path())),
    };
    tokio::spawn(serve(listener, page, stop.clone()));
    let raw = format!(
        "POST /api/restart HTTP/1.1\r\nHost: localhost:{port}\r\nX-Chroxy-Admin: {ADMIN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    let a = exchange(port, raw).await;
    assert_eq!(a.code, 503, "{}", a.body);
    assert_eq!(a.json()["error"], "the supervisor is shutting down");
    stop.cancel();
}

#[tokio::test]
async fn the_page_is_served_with_a_strict_policy() {
    let p = page(Ok("ok".into())).await;
    let html = p.get("/").await;
    assert_eq!(html.code, 200, "{}", html.body);
    let csp = html.header("content-security-policy").unwrap();
    assert!(csp.starts_with("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(html
        .header("content-type")
        .unwrap()
        .starts_with("text/html"));
    assert_eq!(html.header("x-content-type-options"), Some("nosniff"));
    for needle in [
        "status.js",
        "status.css",
        "Recent events",
        "chroxy token show --admin",
        "DEMO",
        r#"data-action="rollback""#,
        r#"data-action="restart""#,
        r#"data-action="reconnect""#,
    ] {
        assert!(html.body.contains(needle), "the page lacks {needle}");
    }
    // No inline script: every <script> has a src (the CSP would block it anyway).
    for script in html.body.split("<script").skip(1) {
        let tag = script.split('>').next().unwrap();
        assert!(tag.contains("src="), "inline script: <script{tag}>");
    }
    let handler = html.body.split_whitespace().find(|word| {
        word.split_once('=').is_some_and(|(name, _)| {
            name.len() > 2 && name.starts_with("on") && name.chars().all(|c| c.is_ascii_lowercase())
        })
    });
    assert_eq!(handler, None, "inline event handler in the page");

    for (asset, mime) in [("/status.js", "javascript"), ("/status.css", "text/css")] {
        let a = p.get(asset).await;
        assert_eq!(a.code, 200, "{asset}: {}", a.body);
        assert!(a.header("content-type").unwrap().contains(mime), "{asset}");
    }
    // The page renders server strings as text only.
    let js = p.get("/status.js").await.body;
    for markup in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
    ] {
        assert!(
            !js.contains(markup),
            "status.js must not build markup ({markup})"
        );
    }
    assert!(js.contains("/api/status") && js.contains("X-Chroxy-Admin"));
    assert!(js.contains("sessionStorage"));

    // Unknown paths and wrong methods still answer in JSON.
    let a = p.get("/nope").await;
    assert_eq!((a.code, a.json()["ok"].as_bool()), (404, Some(false)));
    let a = p.get("/api/restart").await;
    assert_eq!((a.code, a.json()["ok"].as_bool()), (405, Some(false)));
}

#[tokio::test]
async fn only_loopback_host_names_are_answered() {
    let mut p = page(Ok("ok".into())).await;
    // A DNS name rebound to 127.0.0.1 gets nothing, not even the status.
    for host in [
        format!("evil.example:{}", p.port),
        format!("localhost.evil.example:{}", p.port),
        "127.0.0.1".to_owned(),
        format!("127.0.0.1:{}", p.port.wrapping_add(1)),
    ] {
        for path in ["/", "/api/status", "/status.js"] {
            let a = p.send("GET", path, &host, &[], "").await;
            assert_eq!(a.code, 421, "{host}{path}: {}", a.body);
            assert!(!a.body.contains("secretsBackend"));
        }
        let a = p
            .send(
                "POST",
                "/api/restart",
                &host,
                &[("X-Chroxy-Admin", ADMIN)],
                "",
            )
            .await;
        assert_eq!(a.code, 421, "{host}");
        p.no_action();
    }
    // No Host at all (HTTP/1.0) is refused too.
    let a = exchange(
        p.port,
        "GET /api/status HTTP/1.0\r\nConnection: close\r\n\r\n".to_owned(),
    )
    .await;
    assert_eq!(a.code, 421, "{}", a.body);
    // Every loopback name this page has is fine.
    for name in ["127.0.0.1", "localhost", "[::1]"] {
        let a = p
            .send("GET", "/api/status", &format!("{name}:{}", p.port), &[], "")
            .await;
        assert_eq!(a.code, 200, "{name}");
    }
}

#[tokio::test]
async fn serve_returns_once_stopped() {
    let mut p = page(Ok("ok".into())).await;
    assert_eq!(p.get("/api/status").await.code, 200);
    p.stop.cancel();
    let served = p.served.take().unwrap();
    tokio::time::timeout(DEADLINE, served)
        .await
        .expect("serve did not return after the stop")
        .unwrap()
        .unwrap();
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", p.port))
        .await
        .is_err());
}

/// The device buttons decide in the registry itself, only with the admin token, and
/// say by their code why a decision could not be made.
#[tokio::test]
async fn device_buttons_need_the_admin_token_and_decide_in_the_registry() {
    let p = page(Ok("done".into())).await;
    let devices = Devices::new(&Paths::under(p.home.path()));
    let now = chroxy::protocol::now_ms();
    let Admission::Pending { id, .. } = devices.admit(&Knock::default(), now).unwrap() else {
        panic!("a device without key waits");
    };
    let body = serde_json::json!({ "id": id }).to_string();
    let state = || devices.list(chroxy::protocol::now_ms()).unwrap()[0].state;

    let a = p.post("/api/devices/approve", &[], &body).await;
    assert_eq!(a.code, 401, "{}", a.body);
    let a = p
        .post(
            "/api/devices/approve",
            &[("X-Chroxy-Admin", "wrong")],
            &body,
        )
        .await;
    assert_eq!(a.code, 401, "{}", a.body);
    assert_eq!(
        state(),
        DeviceState::Pending,
        "nothing decided without the token"
    );

    let admin = [("X-Chroxy-Admin", ADMIN)];
    let a = p.post("/api/devices/approve", &admin, &body).await;
    assert_eq!(
        (a.code, a.json()["ok"].as_bool()),
        (200, Some(true)),
        "{}",
        a.body
    );
    assert!(a.json()["message"].as_str().unwrap().contains(&id));
    assert_eq!(state(), DeviceState::Approved);

    let a = p.post("/api/devices/refuse", &admin, &body).await;
    assert_eq!(
        a.code, 409,
        "an approved device is revoked, not refused: {}",
        a.body
    );
    let a = p.post("/api/devices/revoke", &admin, &body).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(state(), DeviceState::Refused);

    let a = p
        .post("/api/devices/approve", &admin, r#"{"id":"nosuch"}"#)
        .await;
    assert_eq!(a.code, 404, "{}", a.body);
    for bad in ["", r#"{"id":5}"#, r#"{"id":"x","extra":1}"#] {
        let a = p.post("/api/devices/approve", &admin, bad).await;
        assert_eq!(a.code, 400, "{bad}: {}", a.body);
    }
}
