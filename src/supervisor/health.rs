//! The health gate: what "healthy" means before a worker gets a single phone. HTTP
//! alone is not health — a worker whose WebSocket is broken, whose auth fails or whose
//! sessions hang answers `/health` just fine. So the gate walks the path a phone takes:
//! `GET /health` → WebSocket upgrade → auth with the real token → `ping`/`pong` →
//! `list_sessions` answered by `session_list`, all under one deadline, and a failure
//! names the step it happened in.
//!
//! The probe authenticates as [`PROBE_DEVICE_TYPE`] and proves it is the supervisor's
//! ([`crate::forwarded`]), so a worker keeps it out of phones' sight; it only ever talks
//! to 127.0.0.1: a worker's private port.

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use hyper::body::Bytes;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::control::PROBE_DEVICE_TYPE;
use crate::forwarded::{Voucher, PROBE_HEADER};
use crate::protocol::{
    Auth, ClientMsg, DeviceInfo, Empty as NoFields, ServerMsg, Token, PROTOCOL_VERSION,
};
use crate::token::ApiToken;

/// `/health` answers a few dozen bytes; anything far larger is not a healthy worker.
const MAX_HEALTH_BODY: usize = 64 * 1024;

/// The steps, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `GET /health` answers 200 with `"status":"ok"`.
    Http,
    /// `/ws` upgrades to a WebSocket.
    Upgrade,
    /// The token is accepted (`auth_ok`).
    Auth,
    /// `ping` is answered by `pong`.
    Ping,
    /// `list_sessions` is answered by `session_list`.
    RoundTrip,
}

impl Step {
    /// The name reports and the status page use.
    pub fn as_str(&self) -> &'static str {
        match self {
            Step::Http => "http_health",
            Step::Upgrade => "websocket_upgrade",
            Step::Auth => "auth",
            Step::Ping => "ping",
            Step::RoundTrip => "round_trip",
        }
    }
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not healthy, and where it showed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("health gate failed at {step}: {detail}")]
pub struct GateFailure {
    /// The failing step.
    pub step: Step,
    /// What happened there (never contains the token).
    pub detail: String,
    /// The supervisor's own I/O failed (out of file descriptors, ports or memory): the
    /// probe never reached the worker, so this says nothing about it and must never be
    /// counted against it.
    pub local: bool,
}

/// How long to wait before walking again after the supervisor's own I/O failed.
const LOCAL_RETRY: Duration = Duration::from_millis(200);

/// Runs the whole gate against 127.0.0.1:`port` within `deadline`: every step, and the
/// polite close after the last one, share that one deadline. When the supervisor's own
/// I/O fails, the walk starts again (the shortage may pass) until the deadline; the
/// failure is then marked [`GateFailure::local`].
///
/// `voucher` (the supervisor's key) proves the probe is the supervisor's, so the worker
/// keeps it out of phones' sight and tells it its version; without one the gate is the
/// same walk, as a phone would make it.
pub async fn gate(
    port: u16,
    token: &ApiToken,
    voucher: Option<&Voucher>,
    deadline: Duration,
) -> Result<(), GateFailure> {
    let proof = voucher.map(Voucher::probe_value);
    let proof = proof.as_deref();
    let until = Instant::now() + deadline;
    let mut at = Step::Http;
    let mut local: Option<GateFailure> = None;
    let walked = tokio::time::timeout_at(until, async {
        loop {
            match walk(port, token, proof, &mut at).await {
                Err(failure) if failure.local => {
                    local = Some(failure);
                    tokio::time::sleep(LOCAL_RETRY).await;
                }
                done => return done,
            }
        }
    })
    .await;
    let result = match walked {
        Ok(Ok(ws)) => {
            // Healthy already; a peer slow to acknowledge the close changes nothing.
            let _ = tokio::time::timeout_at(until, close(ws)).await;
            Ok(())
        }
        Ok(Err(failure)) => Err(failure),
        Err(_elapsed) => Err(local.unwrap_or_else(|| {
            fail(
                at,
                format!("no answer within the {} ms deadline", deadline.as_millis()),
            )
        })),
    };
    result.map_err(|failure| redact(failure, token))
}

fn fail(step: Step, detail: impl Into<String>) -> GateFailure {
    GateFailure {
        step,
        detail: detail.into(),
        local: false,
    }
}

/// Opens the probe's connection; a failure to even make a socket is the supervisor's.
async fn connect(port: u16, step: Step) -> Result<TcpStream, GateFailure> {
    TcpStream::connect(("127.0.0.1", port)).await.map_err(|e| {
        let mut failure = fail(step, format!("connecting: {e}"));
        failure.local = is_local(&e);
        failure
    })
}

/// Errors that mean this process, not the peer, is short of something.
pub fn is_local(err: &std::io::Error) -> bool {
    use nix::errno::Errno;
    err.raw_os_error().is_some_and(|code| {
        [
            Errno::EMFILE,
            Errno::ENFILE,
            Errno::ENOBUFS,
            Errno::ENOMEM,
            Errno::EADDRNOTAVAIL,
        ]
        .contains(&Errno::from_raw(code))
    })
}

/// Whatever a broken worker echoes back, the token never reaches a report.
fn redact(mut failure: GateFailure, token: &ApiToken) -> GateFailure {
    failure.detail = token.redact(failure.detail, "<token>");
    failure
}

type Ws = WebSocketStream<TcpStream>;

/// The steps; `at` always names the one in progress, for the deadline's report.
/// Returns the open socket so the caller can close it within what is left of the deadline.
async fn walk(
    port: u16,
    token: &ApiToken,
    proof: Option<&str>,
    at: &mut Step,
) -> Result<Ws, GateFailure> {
    *at = Step::Http;
    http_health(port, proof).await?;

    *at = Step::Upgrade;
    let mut ws = upgrade(port, proof).await?;

    *at = Step::Auth;
    let auth = ClientMsg::Auth(Auth {
        token: Token(token.expose().to_owned()),
        device_info: Some(DeviceInfo {
            device_name: Some("Chroxy supervisor health check".into()),
            device_type: Some(PROBE_DEVICE_TYPE.into()),
            platform: None,
        }),
        protocol_version: Some(PROTOCOL_VERSION),
        device_key: None,
        pairing_code: None,
        eager_public_key: None,
        eager_salt: None,
    });
    send(&mut ws, &auth, Step::Auth).await?;
    match expect(&mut ws, Step::Auth, |m| {
        matches!(m, ServerMsg::AuthOk { .. } | ServerMsg::AuthFail { .. })
    })
    .await?
    {
        ServerMsg::AuthOk { .. } => {}
        other => return Err(fail(Step::Auth, format!("answered {}", kind(&other)))),
    }

    *at = Step::Ping;
    send(&mut ws, &ClientMsg::Ping(NoFields {}), Step::Ping).await?;
    expect(&mut ws, Step::Ping, |m| matches!(m, ServerMsg::Pong { .. })).await?;

    *at = Step::RoundTrip;
    send(
        &mut ws,
        &ClientMsg::ListSessions(NoFields {}),
        Step::RoundTrip,
    )
    .await?;
    expect(&mut ws, Step::RoundTrip, |m| {
        matches!(m, ServerMsg::SessionList { .. })
    })
    .await?;
    Ok(ws)
}

async fn http_health(port: u16, proof: Option<&str>) -> Result<(), GateFailure> {
    let stream = connect(port, Step::Http).await?;
    let headers: Vec<(&str, &str)> = proof.map(|p| (PROBE_HEADER, p)).into_iter().collect();
    let (code, body) = super::loopback::exchange(
        stream,
        port,
        hyper::Method::GET,
        "/health",
        &headers,
        Bytes::new(),
        MAX_HEALTH_BODY,
    )
    .await
    .map_err(|e| fail(Step::Http, format!("GET /health: {e}")))?;
    if !(200..300).contains(&code) {
        return Err(fail(
            Step::Http,
            format!("GET /health answered HTTP {code}"),
        ));
    }
    let ok = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .is_some_and(|v| v["status"] == "ok");
    if !ok {
        return Err(fail(
            Step::Http,
            "GET /health did not say {\"status\":\"ok\"}",
        ));
    }
    Ok(())
}

/// Our own loopback connection, then the upgrade on it: the gate never resolves a name.
async fn upgrade(port: u16, proof: Option<&str>) -> Result<Ws, GateFailure> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let stream = connect(port, Step::Upgrade).await?;
    let mut request = format!("ws://127.0.0.1:{port}/ws")
        .into_client_request()
        .map_err(|e| fail(Step::Upgrade, e.to_string()))?;
    if let Some(proof) = proof.and_then(|p| p.parse().ok()) {
        request.headers_mut().insert(PROBE_HEADER, proof);
    }
    let (ws, _response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| fail(Step::Upgrade, e.to_string()))?;
    Ok(ws)
}

async fn send(ws: &mut Ws, msg: &ClientMsg, step: Step) -> Result<(), GateFailure> {
    // Client messages are plain data; serializing them cannot fail.
    let text = serde_json::to_string(msg).unwrap_or_default();
    ws.send(Message::text(text))
        .await
        .map_err(|e| fail(step, format!("sending failed: {e}")))
}

/// Reads until a frame `wanted` accepts; unrelated frames (history, notices) are
/// skipped. An `error` or `rate_limited` frame (the request was refused, so its answer
/// will never come) or a close fails the step.
async fn expect(
    ws: &mut Ws,
    step: Step,
    wanted: impl Fn(&ServerMsg) -> bool,
) -> Result<ServerMsg, GateFailure> {
    loop {
        let frame = ws
            .next()
            .await
            .ok_or_else(|| fail(step, "the connection closed"))?
            .map_err(|e| fail(step, e.to_string()))?;
        let text = match frame {
            Message::Text(t) => t,
            Message::Close(c) => {
                let why = c
                    .map(|c| format!("closed with {} {}", u16::from(c.code), c.reason))
                    .unwrap_or_else(|| "closed".into());
                return Err(fail(step, why));
            }
            _ => continue,
        };
        let Ok(msg) = serde_json::from_str::<ServerMsg>(&text) else {
            continue; // a frame this build does not know is not a failure
        };
        if wanted(&msg) {
            return Ok(msg);
        }
        if matches!(msg, ServerMsg::Error { .. } | ServerMsg::RateLimited { .. }) {
            return Err(fail(step, format!("answered {}", kind(&msg))));
        }
    }
}

/// Close with 1000 and wait for the worker's side of the handshake (or the end of the
/// stream), so neither side logs a reset.
async fn close(mut ws: Ws) {
    let done = CloseFrame {
        code: CloseCode::Normal,
        reason: "health check done".into(),
    };
    if ws.close(Some(done)).await.is_err() {
        return;
    }
    while let Some(Ok(_)) = ws.next().await {}
}

/// `error (BAD_FRAME: …)`, `auth_fail (invalid_token)`: what a frame was, for reports.
fn kind(msg: &ServerMsg) -> String {
    let v = serde_json::to_value(msg).unwrap_or_default();
    let ty = v["type"].as_str().unwrap_or("?").to_owned();
    let detail = [&v["code"], &v["reason"], &v["message"]]
        .into_iter()
        .filter_map(|x| x.as_str())
        .collect::<Vec<_>>()
        .join(": ");
    if detail.is_empty() {
        ty
    } else {
        format!("{ty} ({})", detail.chars().take(200).collect::<String>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{AuthFailReason, ErrorCode};

    #[test]
    fn steps_have_stable_names() {
        let names: Vec<String> = [
            Step::Http,
            Step::Upgrade,
            Step::Auth,
            Step::Ping,
            Step::RoundTrip,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        assert_eq!(
            names,
            [
                "http_health",
                "websocket_upgrade",
                "auth",
                "ping",
                "round_trip"
            ]
        );
        let failure = fail(Step::Ping, "no answer");
        assert_eq!(failure.to_string(), "health gate failed at ping: no answer");
    }

    #[test]
    fn reports_name_what_a_frame_was() {
        let refused = ServerMsg::auth_fail(AuthFailReason::InvalidToken);
        assert_eq!(kind(&refused), "auth_fail (invalid_token)");
        let error = ServerMsg::Error {
            code: ErrorCode::UnknownType,
            message: "x".repeat(500),
            request_id: None,
        };
        let text = kind(&error);
        assert!(text.starts_with("error (UNKNOWN_TYPE: xxx"), "{text}");
        assert!(text.len() < 230, "cut to a readable length: {text}");
    }

    #[test]
    fn only_the_supervisors_own_shortages_are_local() {
        use nix::errno::Errno;
        let os = |e: Errno| std::io::Error::from_raw_os_error(e as i32);
        assert!(is_local(&os(Errno::EMFILE)) && is_local(&os(Errno::ENFILE)));
        assert!(is_local(&os(Errno::EADDRNOTAVAIL)));
        assert!(
            !is_local(&os(Errno::ECONNREFUSED)),
            "a worker that is not listening"
        );
        assert!(!is_local(&os(Errno::ECONNRESET)));
        assert!(!is_local(&std::io::Error::other("no code")));
    }

    #[test]
    fn an_echoed_token_never_reaches_a_report() {
        let token = ApiToken::new("s3cret-token");
        let echoed = fail(Step::Auth, "answered error (bad token s3cret-token)");
        assert_eq!(
            redact(echoed, &token).detail,
            "answered error (bad token <token>)"
        );
    }
}
