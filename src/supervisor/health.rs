//! The health gate: what "healthy" means before a worker gets a single phone. HTTP
//! alone is not health — a worker whose WebSocket is broken, whose auth fails or whose
//! sessions hang answers `/health` just fine. So the gate walks the path a phone takes:
//! `GET /health` → WebSocket upgrade → auth with the real token → `ping`/`pong` →
//! `list_sessions` answered by `session_list`, all under one deadline, and a failure
//! names the step it happened in.

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;

use crate::control::PROBE_DEVICE_TYPE;
use crate::protocol::{Auth, ClientMsg, DeviceInfo, Empty as NoFields, ServerMsg, Token};
use crate::secrets::ApiToken;

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
}

/// Runs the whole gate against 127.0.0.1:`port` within `deadline`.
pub async fn gate(port: u16, token: &ApiToken, deadline: Duration) -> Result<(), GateFailure> {
    let mut at = Step::Http;
    match tokio::time::timeout(deadline, walk(port, token, &mut at)).await {
        Ok(result) => result,
        Err(_) => Err(GateFailure {
            step: at,
            detail: format!("no answer within the {} ms deadline", deadline.as_millis()),
        }),
    }
}

fn fail(step: Step, detail: impl Into<String>) -> GateFailure {
    GateFailure {
        step,
        detail: detail.into(),
    }
}

/// The steps; `at` always names the one in progress, for the deadline's report.
async fn walk(port: u16, token: &ApiToken, at: &mut Step) -> Result<(), GateFailure> {
    *at = Step::Http;
    http_health(port).await?;

    *at = Step::Upgrade;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://127.0.0.1:{port}/ws"))
        .await
        .map_err(|e| fail(Step::Upgrade, e.to_string()))?;

    *at = Step::Auth;
    let auth = ClientMsg::Auth(Auth {
        token: Token(token.expose().to_owned()),
        device_info: Some(DeviceInfo {
            device_name: Some("Chroxy supervisor health check".into()),
            device_type: Some(PROBE_DEVICE_TYPE.into()),
            platform: None,
        }),
        protocol_version: None,
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
    let _ = ws.close(None).await;
    Ok(())
}

async fn http_health(port: u16) -> Result<(), GateFailure> {
    let f = |e: &dyn fmt::Display| fail(Step::Http, e.to_string());
    let stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .map_err(|e| f(&e))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| f(&e))?;
    let conn = tokio::spawn(conn);
    let request = hyper::Request::get("/health")
        .header("host", format!("127.0.0.1:{port}"))
        .body(Empty::<Bytes>::new())
        .map_err(|e| f(&e))?;
    let response = sender.send_request(request).await.map_err(|e| f(&e))?;
    let code = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| f(&e))?
        .to_bytes();
    conn.abort();
    if !code.is_success() {
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

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<TcpStream>>;

async fn send(ws: &mut Ws, msg: &ClientMsg, step: Step) -> Result<(), GateFailure> {
    // Client messages are plain data; serializing them cannot fail.
    let text = serde_json::to_string(msg).unwrap_or_default();
    ws.send(Message::text(text))
        .await
        .map_err(|e| fail(step, format!("sending failed: {e}")))
}

/// Reads until a frame `wanted` accepts; unrelated frames (history, notices) are
/// skipped, an `error` frame or a close fails the step.
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
        if let ServerMsg::Error { .. } = msg {
            return Err(fail(step, format!("answered {}", kind(&msg))));
        }
    }
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
