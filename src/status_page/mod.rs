//! The status page on the second port (docs/protocol.md "Status page"), served by the
//! supervisor itself so it tells the truth while no worker runs: the HTML page, the
//! JSON of [`Status`](crate::supervisor::status::Status), and the actions of the window
//! (rollback, restart, reconnect, deploy, reload-token; approve, refuse or revoke a
//! device) for whoever holds the admin token. The supervisor's runner serves it; `chroxy status`/`deploy`/`token` call it.
//!
//! It listens on loopback only, and still trusts nothing about the browser that talks
//! to it: a page on another site could make the user's browser POST here, so actions
//! need the admin token in a header (which a cross-site form cannot set) and a foreign
//! `Origin` is refused; a `Host` that is not loopback is refused too, so a DNS name
//! rebound to 127.0.0.1 cannot read the status either. Those checks: `guard.rs`; the
//! page's files and the headers every answer carries: `assets.rs`.
//!
//! Every answer under `/api/` is JSON, errors included (`{"ok":false,"error":…}`), so
//! a CLI talking to an older or newer supervisor always gets a sentence to show.

mod assets;
mod guard;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::devices::{Decision, Devices, DevicesError};
use crate::supervisor::handle::{ActionError, Handle};
use crate::supervisor::release::ReleaseId;
use crate::supervisor::status::{Action, DeployOrigin};
use crate::token::ApiToken;

/// The header actions must carry, holding the admin token.
pub const ADMIN_HEADER: &str = "x-chroxy-admin";

/// Request bodies are tiny JSON objects; anything bigger is refused unread.
const MAX_BODY: usize = 4 * 1024;

/// How long a stop waits for requests in flight before it lets the page go anyway: a
/// stalled local client must not hold up the supervisor's shutdown.
const STOP_GRACE: Duration = Duration::from_secs(2);

/// What the page serves and whom it obeys.
#[derive(Debug, Clone)]
pub struct StatusPage {
    /// The supervisor.
    pub handle: Handle,
    /// The admin token actions need (`chroxy token show --admin` prints it).
    pub admin: ApiToken,
    /// The port it is served on: its own origin and `Host` are recognised by it.
    pub port: u16,
    /// The device registry its device buttons decide in.
    pub devices: Devices,
}

/// The routes, with the host/origin/token checks in front of every one of them.
pub fn router(page: StatusPage) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/rollback", post(rollback))
        .route("/api/restart", post(restart))
        .route("/api/reconnect", post(reconnect))
        .route("/api/deploy", post(deploy))
        .route("/api/deploy/source", post(deploy_source))
        .route("/api/deploy/approve", post(approve_deploy))
        .route("/api/deploy/refuse", post(refuse_deploy))
        .route("/api/reload-token", post(reload_token))
        .route("/api/devices/approve", post(approve_device))
        .route("/api/devices/refuse", post(refuse_device))
        .route("/api/devices/revoke", post(revoke_device))
        .route("/api/devices/rename", post(rename_device))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(assets::static_file)
        .layer(middleware::from_fn_with_state(page.clone(), guard::guard))
        .layer(middleware::from_fn(assets::common_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(page)
}

/// Binds nothing itself: serves on `listener` until `shutdown` is cancelled, then lets
/// requests in flight finish for a short grace.
pub async fn serve(
    listener: tokio::net::TcpListener,
    page: StatusPage,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let app = router(page).into_make_service_with_connect_info::<SocketAddr>();
    let serving = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.clone().cancelled_owned())
        .into_future();
    tokio::select! {
        done = serving => done,
        () = async {
            shutdown.cancelled().await;
            tokio::time::sleep(STOP_GRACE).await;
        } => {
            tracing::debug!("status page stopped with requests still open");
            Ok(())
        }
    }
}

/// The JSON error every refusal answers with.
fn refuse(code: StatusCode, error: &str) -> Response {
    (code, Json(json!({"ok": false, "error": error}))).into_response()
}

async fn status(State(page): State<StatusPage>) -> Response {
    (
        [(header::CACHE_CONTROL, "no-store")],
        Json(page.handle.status()),
    )
        .into_response()
}

async fn method_not_allowed() -> Response {
    refuse(
        StatusCode::METHOD_NOT_ALLOWED,
        "wrong method: /api/status is read with GET, every action is a POST",
    )
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// A release id; absent or null means known-good.
    to: Option<ReleaseId>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    release: ReleaseId,
    /// Absent means `remote`: only a caller that says it is at the desk skips approval.
    #[serde(default)]
    origin: DeployOrigin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct SourceBody {
    /// The source tree (absolute: the supervisor's working directory is not the caller's).
    source: std::path::PathBuf,
    #[serde(default)]
    rev: Option<String>,
    #[serde(default)]
    allow_dirty: bool,
    /// As for [`DeployBody`].
    #[serde(default)]
    origin: DeployOrigin,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AnswerBody {
    /// The pending release the person saw; absent or null means whichever waits.
    release: Option<ReleaseId>,
}

/// An empty body, or a JSON object of type `T`; the error is what the 4xx says.
fn body<T: for<'de> Deserialize<'de>>(
    bytes: Result<Bytes, BytesRejection>,
) -> Result<Option<T>, (StatusCode, String)> {
    let bytes = bytes.map_err(|e| (e.status(), e.body_text()))?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(&bytes).map(Some).map_err(|e| {
        (
            StatusCode::BAD_REQUEST,
            format!("unreadable request body: {e}"),
        )
    })
}

async fn rollback(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    match body::<RollbackBody>(bytes) {
        Ok(b) => {
            let to = b.and_then(|b| b.to);
            act(&page, Action::Rollback { to }).await
        }
        Err((code, why)) => refuse(code, &why),
    }
}

async fn restart(State(page): State<StatusPage>) -> Response {
    act(&page, Action::Restart).await
}

async fn reconnect(State(page): State<StatusPage>) -> Response {
    act(&page, Action::Reconnect).await
}

async fn reload_token(State(page): State<StatusPage>) -> Response {
    act(&page, Action::ReloadToken).await
}

async fn deploy(State(page): State<StatusPage>, bytes: Result<Bytes, BytesRejection>) -> Response {
    match body::<DeployBody>(bytes) {
        Ok(Some(b)) => {
            let action = Action::Deploy {
                release: b.release,
                origin: b.origin,
            };
            act(&page, action).await
        }
        Ok(None) => refuse(
            StatusCode::BAD_REQUEST,
            "deploy needs {\"release\": \"<id>\"}; `chroxy deploy <binary>` adds the release and sends it",
        ),
        Err((code, why)) => refuse(code, &why),
    }
}

async fn deploy_source(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    match body::<SourceBody>(bytes) {
        Ok(Some(b)) if b.source.is_absolute() => {
            let requested_by = match b.origin {
                DeployOrigin::Desk => "terminal",
                DeployOrigin::Remote => "a script",
            };
            let action = Action::DeploySource {
                request: crate::protocol::deploy::BuildRequest {
                    source: b.source,
                    rev: b.rev,
                    allow_dirty: b.allow_dirty,
                },
                origin: b.origin,
                requested_by: requested_by.into(),
            };
            act(&page, action).await
        }
        Ok(Some(_)) => refuse(
            StatusCode::BAD_REQUEST,
            "source must be an absolute path (the supervisor does not run in your directory)",
        ),
        Ok(None) => refuse(
            StatusCode::BAD_REQUEST,
            "deploy/source needs {\"source\": \"/path/to/chroxy\"}; `chroxy deploy --source DIR` sends it",
        ),
        Err((code, why)) => refuse(code, &why),
    }
}

async fn approve_deploy(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    answer_deploy(&page, bytes, |release| Action::ApproveDeploy { release }).await
}

async fn refuse_deploy(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    answer_deploy(&page, bytes, |release| Action::RefuseDeploy { release }).await
}

/// Approve or refuse: the same body, naming the pending release the person saw.
async fn answer_deploy(
    page: &StatusPage,
    bytes: Result<Bytes, BytesRejection>,
    action: fn(Option<ReleaseId>) -> Action,
) -> Response {
    match body::<AnswerBody>(bytes) {
        Ok(b) => act(page, action(b.and_then(|b| b.release))).await,
        Err((code, why)) => refuse(code, &why),
    }
}

/// Hands `action` to the supervisor and turns its answer into HTTP.
async fn act(page: &StatusPage, action: Action) -> Response {
    tracing::info!(?action, "status page: action requested");
    match page.handle.act(action).await {
        Ok(message) => Json(json!({"ok": true, "message": message})).into_response(),
        Err(err) => refuse(error_status(&err), &err.to_string()),
    }
}

/// Callers (the page, `chroxy deploy`) tell "no such release" from "not now" by it.
fn error_status(err: &ActionError) -> StatusCode {
    match err {
        ActionError::UnknownRelease(_) => StatusCode::NOT_FOUND,
        ActionError::ChecksumMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
        ActionError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
        ActionError::Refused(_) => StatusCode::CONFLICT,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeviceBody {
    id: String,
}

async fn approve_device(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    decide_device(page, bytes, Decision::Approve).await
}

async fn refuse_device(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    decide_device(page, bytes, Decision::Refuse).await
}

async fn revoke_device(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    decide_device(page, bytes, Decision::Revoke).await
}

/// One of the owner's decisions about a device, in the registry itself (the
/// supervisor's status shows it within a second).
async fn decide_device(
    page: StatusPage,
    bytes: Result<Bytes, BytesRejection>,
    decision: Decision,
) -> Response {
    let id = match body::<DeviceBody>(bytes) {
        Ok(Some(b)) => b.id,
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "this action needs {\"id\": \"<device id>\"}; the status shows the ids",
            )
        }
        Err((code, why)) => return refuse(code, &why),
    };
    tracing::info!(device = %id, ?decision, "status page: device decision");
    in_registry(page, move |devices, now| devices.decide(decision, &id, now)).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenameBody {
    id: String,
    name: String,
}

/// The owner names a device as they know it ("Anna's phone").
async fn rename_device(
    State(page): State<StatusPage>,
    bytes: Result<Bytes, BytesRejection>,
) -> Response {
    let RenameBody { id, name } = match body::<RenameBody>(bytes) {
        Ok(Some(b)) => b,
        Ok(None) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "this action needs {\"id\": \"<device id>\", \"name\": \"<new name>\"}",
            )
        }
        Err((code, why)) => return refuse(code, &why),
    };
    tracing::info!(device = %id, "status page: device renamed");
    in_registry(page, move |devices, now| {
        let d = devices.rename(&id, &name, now)?;
        Ok(format!("renamed device {}", d.id))
    })
    .await
}

/// Runs `change` on the device registry (off the async threads) and answers with its
/// message, or with its error and the status code that fits it.
async fn in_registry(
    page: StatusPage,
    change: impl FnOnce(&Devices, u64) -> Result<String, DevicesError> + Send + 'static,
) -> Response {
    let changed =
        tokio::task::spawn_blocking(move || change(&page.devices, crate::protocol::now_ms())).await;
    match changed {
        Ok(Ok(message)) => Json(json!({"ok": true, "message": message})).into_response(),
        Ok(Err(err)) => {
            let code = match err {
                DevicesError::Unknown(_) => StatusCode::NOT_FOUND,
                DevicesError::WrongState { .. } => StatusCode::CONFLICT,
                DevicesError::EmptyName => StatusCode::BAD_REQUEST,
                _ => StatusCode::INTERNAL_SERVER_ERROR,
            };
            refuse(code, &err.to_string())
        }
        Err(err) => refuse(StatusCode::INTERNAL_SERVER_ERROR, &err.to_string()),
    }
}
