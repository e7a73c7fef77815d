//! The CLI's way to a running supervisor: the status page's JSON API on loopback, the
//! same one the page's buttons use, so `chroxy status|rollback|deploy` and the page can
//! never disagree.

use std::time::Duration;

use hyper::body::Bytes;
use serde::de::DeserializeOwned;

use super::status::Status;
use crate::token::ApiToken;

/// A running supervisor could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    /// No answer on its status port.
    #[error("the supervisor's status page on 127.0.0.1:{port} does not answer ({detail}); is it still starting or stuck? `chroxy status` again in a moment")]
    Unreachable {
        /// The status port.
        port: u16,
        /// What failed.
        detail: String,
    },
    /// It answered with a refusal; the message is its own.
    #[error("{0}")]
    Refused(String),
}

/// The status JSON with its 50 events is a few KiB; more is not our supervisor.
const MAX_ANSWER: usize = 1024 * 1024;

/// How long the CLI waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// `GET /api/status`.
pub async fn status(port: u16) -> Result<Status, RemoteError> {
    let (code, body) = call(port, "GET", "/api/status", None, None).await?;
    if code != 200 {
        return Err(RemoteError::Refused(format!(
            "the status page answered HTTP {code}"
        )));
    }
    parse(port, &body)
}

/// `POST /api/<action>` with the admin token; returns the supervisor's message.
pub async fn act(
    port: u16,
    admin: &ApiToken,
    action: &str,
    body: Option<serde_json::Value>,
) -> Result<String, RemoteError> {
    let (code, text) = call(
        port,
        "POST",
        &format!("/api/{action}"),
        Some(admin),
        body.map(|b| b.to_string()),
    )
    .await?;
    let answer: serde_json::Value = parse(port, &text)?;
    let message = |key: &str| {
        answer
            .get(key)
            .and_then(|m| m.as_str())
            .unwrap_or_default()
            .to_owned()
    };
    if code == 200 {
        Ok(message("message"))
    } else {
        Err(RemoteError::Refused(message("error")))
    }
}

/// Approves (or refuses) the deploy awaiting approval, naming the release shown here so
/// that a request replaced meanwhile is not the one answered; returns what was waiting
/// and the supervisor's answer.
pub async fn answer_deploy(
    port: u16,
    admin: &ApiToken,
    approve: bool,
) -> Result<String, RemoteError> {
    let Some(waiting) = status(port).await?.pending_deploy else {
        return Err(RemoteError::Refused("no deploy awaits approval".into()));
    };
    let action = if approve {
        "deploy/approve"
    } else {
        "deploy/refuse"
    };
    let body = serde_json::json!({ "release": waiting.release });
    let answer = act(port, admin, action, Some(body)).await?;
    Ok(format!(
        "release {} (chroxy {}), sent from away from the desk: {answer}",
        waiting.release, waiting.version
    ))
}

fn parse<T: DeserializeOwned>(port: u16, body: &[u8]) -> Result<T, RemoteError> {
    serde_json::from_slice(body).map_err(|e| RemoteError::Unreachable {
        port,
        detail: format!("unreadable answer: {e}"),
    })
}

async fn call(
    port: u16,
    method: &str,
    path: &str,
    admin: Option<&ApiToken>,
    body: Option<String>,
) -> Result<(u16, Vec<u8>), RemoteError> {
    let unreachable = |detail: String| RemoteError::Unreachable { port, detail };
    let method =
        hyper::Method::from_bytes(method.as_bytes()).map_err(|e| unreachable(e.to_string()))?;
    let mut headers = vec![("content-type", "application/json")];
    if let Some(admin) = admin {
        headers.push(("x-chroxy-admin", admin.expose()));
    }
    let exchange = async {
        let stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| e.to_string())?;
        super::loopback::exchange(
            stream,
            port,
            method,
            path,
            &headers,
            Bytes::from(body.unwrap_or_default()),
            MAX_ANSWER,
        )
        .await
    };
    let (code, body) = tokio::time::timeout(TIMEOUT, exchange)
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", TIMEOUT.as_secs())))?
        .map_err(unreachable)?;
    Ok((code, body.to_vec()))
}
