//! The status page on the second port (PROTOCOL.md "Status page"), served by the
//! supervisor itself so it tells the truth while no worker runs: the HTML page, the
//! JSON of [`Status`](crate::supervisor::status::Status), and the actions of the window
//! (rollback, restart, reconnect, deploy) for whoever holds the admin token.
//!
//! It listens on loopback only, and still trusts nothing about the browser that talks
//! to it: a page on another site could make the user's browser POST here, so actions
//! need the admin token in a header (which a cross-site form cannot set) and a foreign
//! `Origin` is refused; a `Host` that is not loopback is refused too, so a DNS name
//! rebound to 127.0.0.1 cannot read the status either.

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;
use tokio_util::sync::CancellationToken;

use crate::secrets::ApiToken;
use crate::supervisor::handle::{ActionError, Handle};
use crate::supervisor::status::Action;

/// The page's files, built into the binary.
#[derive(rust_embed::Embed)]
#[folder = "web/status/"]
struct StatusAssets;

/// The header actions must carry.
pub const ADMIN_HEADER: &str = "x-chroxy-admin";
/// Request bodies are tiny JSON objects.
const MAX_BODY: usize = 4 * 1024;

/// What the page serves.
#[derive(Debug, Clone)]
pub struct StatusPage {
    /// The supervisor.
    pub handle: Handle,
    /// The admin token actions need.
    pub admin: ApiToken,
    /// The port it is served on (to recognise its own origin).
    pub port: u16,
}

/// The routes.
pub fn router(page: StatusPage) -> Router {
    Router::new()
        .route("/api/status", get(status))
        .route("/api/rollback", post(rollback))
        .route("/api/restart", post(restart))
        .route("/api/reconnect", post(reconnect))
        .route("/api/deploy", post(deploy))
        .route("/api/reload-token", post(reload_token))
        .fallback(get(static_file))
        .layer(middleware::from_fn_with_state(page.clone(), guard))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(page)
}

/// Serves on `listener` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    page: StatusPage,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(page))
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

fn own_origins(port: u16) -> [String; 3] {
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

/// Host check for everything; Origin and admin token for every action.
async fn guard(
    State(page): State<StatusPage>,
    request: axum::extract::Request,
    next: Next,
) -> Response {
    let headers = request.headers();
    let hosts = own_origins(page.port);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    if !hosts.iter().any(|h| h == host) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            "the status page answers only on 127.0.0.1, localhost or [::1]",
        );
    }
    if request.method() == axum::http::Method::POST {
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or_default();
            let ours = hosts.iter().any(|h| origin == format!("http://{h}"));
            if !ours {
                return refuse(
                    StatusCode::FORBIDDEN,
                    "actions are refused from another site's page",
                );
            }
        }
        let token = headers
            .get(ADMIN_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if token.is_empty() || !page.admin.matches(token) {
            return refuse(
                StatusCode::UNAUTHORIZED,
                "this action needs the admin token in the X-Chroxy-Admin header; `chroxy token show --admin` prints it",
            );
        }
    }
    next.run(request).await
}

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeployBody {
    release: String,
}

/// An empty body or a JSON object; the error says what is wrong with it (for a 400).
fn body<T: for<'de> Deserialize<'de>>(bytes: &Bytes) -> Result<Option<T>, String> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    serde_json::from_slice(bytes)
        .map(Some)
        .map_err(|e| format!("unreadable request body: {e}"))
}

async fn rollback(State(page): State<StatusPage>, bytes: Bytes) -> Response {
    match body::<RollbackBody>(&bytes) {
        Ok(b) => {
            act(
                &page,
                Action::Rollback {
                    to: b.and_then(|b| b.to),
                },
            )
            .await
        }
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e),
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

async fn deploy(State(page): State<StatusPage>, bytes: Bytes) -> Response {
    match body::<DeployBody>(&bytes) {
        Ok(Some(b)) => act(&page, Action::Deploy { release: b.release }).await,
        Ok(None) => refuse(
            StatusCode::BAD_REQUEST,
            "deploy needs {\"release\": \"<id>\"}; `chroxy deploy <binary>` adds one",
        ),
        Err(e) => refuse(StatusCode::BAD_REQUEST, &e),
    }
}

async fn act(page: &StatusPage, action: Action) -> Response {
    match page.handle.act(action).await {
        Ok(message) => Json(json!({"ok": true, "message": message})).into_response(),
        Err(err) => {
            let code = match err {
                ActionError::UnknownRelease(_) => StatusCode::NOT_FOUND,
                ActionError::ChecksumMismatch(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ActionError::Stopping => StatusCode::SERVICE_UNAVAILABLE,
                ActionError::Refused(_) => StatusCode::CONFLICT,
            };
            refuse(code, &err.to_string())
        }
    }
}

async fn static_file(uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match StatusAssets::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_owned();
            let mut response = ([(header::CONTENT_TYPE, mime)], file.data).into_response();
            let h = response.headers_mut();
            h.insert(
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'"),
            );
            h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
