//! The HTTP side of the demo model: an axum app on a listener the caller bound, answering
//! `/v1/messages` from the script and everything else the CLI asks with something sensible.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::handle::{DemoHandle, Shared, StreamGuard};
use super::render::{render_error, render_events, render_message, MessageMeta};
use super::request::{MessagesRequest, RequestKind};
use super::script::{error_type, script_turn, side_turn, ScriptedError, ScriptedMessage, Turn};
use super::DemoError;

/// Claude Code's requests run to ~100 KB and grow with the conversation; axum's 2 MB
/// default would turn a long session into 413s. The real API accepts 32 MB.
const BODY_LIMIT: usize = 32 * 1024 * 1024;

/// Starts the demo model on `listener` (already bound: tests pass `127.0.0.1:0`) until
/// `stop` is cancelled; must be called inside a Tokio runtime. Cancelling `stop` also
/// ends open streams, so the returned task finishes promptly; its result says whether
/// the server stopped cleanly.
pub fn spawn(
    listener: TcpListener,
    stop: CancellationToken,
) -> Result<(DemoHandle, JoinHandle<Result<(), DemoError>>), DemoError> {
    let addr = listener.local_addr().map_err(DemoError::LocalAddr)?;
    let shared = Arc::new(Shared::new(stop.clone()));
    let app = Router::new()
        .route("/v1/messages", post(messages))
        .route("/v1/messages/count_tokens", post(count_tokens))
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .with_state(shared.clone());
    let task = tokio::spawn(async move {
        tracing::info!(%addr, "demo model listening");
        axum::serve(listener, app)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
            .map_err(DemoError::Serve)
    });
    Ok((DemoHandle::new(addr, shared), task))
}

/// `POST /v1/messages`: main turns run the script, side calls get fixed answers.
async fn messages(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let (raw, request) = match parse(&body) {
        Ok(parsed) => parsed,
        Err(err) => {
            shared.record(RequestKind::Other, &method, &uri, Value::Null);
            tracing::warn!(%err, "unparseable /v1/messages body");
            return error_response(&invalid_request(format!("invalid request body: {err}")), 0);
        }
    };
    let kind = request.kind();
    shared.record(kind, &method, &uri, raw);
    let id = shared.next_id();
    tracing::debug!(?kind, model = %request.model, stream = request.stream, "messages request");
    let turn = match kind {
        RequestKind::MainTurn => script_turn(&request, &format!("toolu_demo_{id:04}")),
        _ => side_turn(&request),
    };
    let meta = MessageMeta {
        id: format!("msg_demo_{id:04}"),
        model: request.model.clone(),
        input_tokens: request.approx_input_tokens(),
    };
    match turn {
        Turn::Error(err) => error_response(&err, id),
        Turn::Message(msg) if request.stream => stream_response(shared, &msg, &meta, id),
        Turn::Message(msg) => (
            [("request-id", request_id(id))],
            axum::Json(render_message(&msg, &meta)),
        )
            .into_response(),
    }
}

/// `POST /v1/messages/count_tokens`.
async fn count_tokens(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    match parse(&body) {
        Ok((raw, request)) => {
            shared.record(RequestKind::CountTokens, &method, &uri, raw);
            axum::Json(json!({"input_tokens": request.approx_input_tokens()})).into_response()
        }
        Err(err) => {
            shared.record(RequestKind::CountTokens, &method, &uri, Value::Null);
            error_response(&invalid_request(format!("invalid request body: {err}")), 0)
        }
    }
}

/// Everything else: the CLI's `HEAD /` reachability probe gets 200; unknown API paths get
/// the API's 404 shape, so a new CLI call fails visibly instead of hanging.
async fn fallback(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let parsed = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.record(RequestKind::Other, &method, &uri, parsed);
    match uri.path() {
        "/" => axum::Json(json!({"service": "chroxy-demo-model", "ok": true})).into_response(),
        "/v1/models" if method == Method::GET => axum::Json(json!({
            "data": [{"type": "model", "id": "chroxy-demo", "display_name": "Chroxy demo model",
                      "created_at": "2025-01-01T00:00:00Z"}],
            "has_more": false, "first_id": "chroxy-demo", "last_id": "chroxy-demo"
        }))
        .into_response(),
        path => {
            tracing::warn!(%method, path, "demo model got a request it does not know");
            error_response(
                &ScriptedError {
                    status: 404,
                    kind: error_type(404),
                    message: format!("Chroxy's demo model does not implement {method} {path}"),
                    retry: false,
                },
                0,
            )
        }
    }
}

fn parse(body: &[u8]) -> Result<(Value, MessagesRequest), serde_json::Error> {
    let raw: Value = serde_json::from_slice(body)?;
    let request = <MessagesRequest as serde::Deserialize>::deserialize(&raw)?;
    Ok((raw, request))
}

fn invalid_request(message: String) -> ScriptedError {
    ScriptedError {
        status: 400,
        kind: error_type(400),
        message,
        retry: false,
    }
}

fn request_id(id: u64) -> String {
    format!("req_demo_{id:04}")
}

fn error_response(err: &ScriptedError, id: u64) -> Response {
    let status = StatusCode::from_u16(err.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    // The CLI honours `x-should-retry: false` for every status except overloaded_error.
    let should_retry = if err.retry { "true" } else { "false" };
    (
        status,
        [
            ("request-id", request_id(id)),
            ("x-should-retry", should_retry.to_owned()),
        ],
        axum::Json(render_error(err, &request_id(id))),
    )
        .into_response()
}

fn stream_response(
    shared: Arc<Shared>,
    msg: &ScriptedMessage,
    meta: &MessageMeta,
    id: u64,
) -> Response {
    let events = render_events(msg, meta);
    let pace = msg.pace;
    let stop = shared.stop.clone();
    let guard = StreamGuard::new(shared);
    // The stream owns the guard and its timers: when hyper drops the body because the
    // client disconnected, the pending sleep and the guard go with it.
    let frames = futures_util::stream::unfold(
        (events.into_iter(), guard),
        move |(mut events, mut guard)| async move {
            let Some(event) = events.next() else {
                guard.finish();
                return None;
            };
            if event.is_delta() && !pace.is_zero() {
                tokio::time::sleep(pace).await;
            }
            let frame = Bytes::from(event.to_frame());
            Some((Ok::<_, Infallible>(frame), (events, guard)))
        },
    )
    .take_until(stop.cancelled_owned());
    (
        [
            (
                header::CONTENT_TYPE.as_str(),
                "text/event-stream".to_owned(),
            ),
            (header::CACHE_CONTROL.as_str(), "no-cache".to_owned()),
            ("request-id", request_id(id)),
        ],
        Body::from_stream(frames),
    )
        .into_response()
}
