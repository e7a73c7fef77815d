//! The server worker: the process phones talk to (through the supervisor's port).
//!
//! `serve` takes a bound listener, a [`Hub`] of sessions and a stop token; it serves
//! `GET /health`, `GET /ws` and the phone client's static files. The shells decide the
//! port, the token and when to stop.

mod auth;
mod conn;
mod routes;

pub use auth::{AuthLimiter, Verdict};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::WorkerConfig;
use crate::secrets::ApiToken;
use crate::session::Hub;

/// Version reported in `auth_ok` and `/health`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
/// Commit this binary was built from (`unknown` outside a git checkout).
pub const COMMIT: &str = env!("CHROXY_COMMIT");

/// Why the worker stopped serving.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The HTTP server failed.
    #[error("the worker's HTTP server failed: {0}")]
    Serve(#[source] std::io::Error),
}

/// Everything a connection needs; shared.
pub(crate) struct Shared {
    pub token: ApiToken,
    pub cfg: WorkerConfig,
    pub hub: Hub,
    pub auth: Arc<AuthLimiter>,
    pub started: Instant,
    pub cwd: String,
    pub stop: CancellationToken,
    pub conns: TaskTracker,
}

/// Serves until `stop` is cancelled, then closes every WebSocket (each client is told
/// `server_shutdown`) and returns once they are all gone. The caller then shuts the hub
/// down (agents stopped, sessions saved).
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    token: ApiToken,
    cfg: WorkerConfig,
    cwd: String,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let auth = AuthLimiter::new(
        Duration::from_millis(cfg.auth_backoff_base_ms),
        Duration::from_millis(cfg.auth_backoff_max_ms),
    );
    let shared = Arc::new(Shared {
        token,
        cfg,
        hub,
        auth,
        started: Instant::now(),
        cwd,
        stop: stop.clone(),
        conns: TaskTracker::new(),
    });
    let app = routes::router(shared.clone());
    // Small frames (one text delta) must leave at once; Nagle's algorithm would hold
    // them for the peer's delayed ACK, ~40 ms on the first text of every reply.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "could not set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(stop.cancelled_owned())
    .await
    .map_err(WorkerError::Serve)?;
    shared.conns.close();
    shared.conns.wait().await;
    Ok(())
}
