//! The server worker: the process phones talk to (through the supervisor's port).
//!
//! `serve` takes a bound listener, a [`Hub`] of sessions and a stop token; it serves
//! `GET /health`, `GET /ws` and the phone client's static files. [`launch`] (`launch.rs`)
//! assembles a whole worker around it as `chroxy worker` runs it: the token, the port,
//! the sessions, the control channel, the stop.

mod admit;
mod auth;
mod conn;
mod launch;
mod revocation;
mod routes;
mod supervised;

pub use auth::{AuthLimiter, Verdict};
pub use launch::{launch, Launch, LaunchError, WorkerArgs};
pub use supervised::{count_panics, follow_supervisor, say_fatal, Upward};

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::channel::KeyPair;
use crate::config::WorkerConfig;
use crate::devices::Devices;
use crate::forwarded::Voucher;
use crate::protocol::ShutdownReason;
use crate::session::Hub;
use crate::token::ApiToken;

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

/// Levers on a running worker, held by whoever started it (the control channel): what
/// phones are told when it stops, a "reconnect now" for every phone, and the count of
/// server faults the canary watch reads. A cheap clone.
#[derive(Clone)]
pub struct WorkerSignals {
    inner: Arc<SignalsInner>,
}

struct SignalsInner {
    server_faults: AtomicU64,
    notice: watch::Sender<(ShutdownReason, u64)>,
    reconnect: watch::Sender<u64>,
}

impl Default for WorkerSignals {
    fn default() -> Self {
        Self {
            inner: Arc::new(SignalsInner {
                server_faults: AtomicU64::new(0),
                notice: watch::Sender::new((ShutdownReason::Shutdown, 0)),
                reconnect: watch::Sender::new(0),
            }),
        }
    }
}

impl WorkerSignals {
    /// Server faults since the last call: what the worker itself got wrong. What a
    /// client got wrong (a refused frame, a wrong token, a rate limit) is no fault of a
    /// release and never counts, or any newer or hostile client could veto a deploy.
    pub fn take_server_faults(&self) -> u64 {
        self.inner.server_faults.swap(0, Ordering::Relaxed)
    }

    pub(crate) fn count_server_fault(&self) {
        self.inner.server_faults.fetch_add(1, Ordering::Relaxed);
    }

    /// What phones are told (`server_shutdown`) when the worker stops.
    pub fn set_shutdown_notice(&self, reason: ShutdownReason, restart_eta_ms: u64) {
        self.inner.notice.send_replace((reason, restart_eta_ms));
    }

    pub(crate) fn shutdown_notice(&self) -> (ShutdownReason, u64) {
        *self.inner.notice.borrow()
    }

    /// Tells every connected phone to reconnect now, with this ETA.
    pub fn reconnect_all(&self, restart_eta_ms: u64) {
        self.inner.reconnect.send_replace(restart_eta_ms);
    }

    pub(crate) fn reconnects(&self) -> watch::Receiver<u64> {
        self.inner.reconnect.subscribe()
    }
}

/// What clients are checked against: the API token, the key the supervisor signs its
/// word with ([`crate::forwarded`]), and the registry of approved devices.
pub struct Credentials {
    /// The API token.
    pub token: ApiToken,
    /// The supervisor's key (handed over with the token), or the token's own for a
    /// worker run by hand.
    pub voucher: Voucher,
    /// The key came from a supervisor, so a connection proven by it is the
    /// supervisor's own probe. With the token's own key any token holder could pass
    /// as the probe, so a worker run by hand lets no connection skip device approval.
    pub probe_is_supervisors: bool,
    /// The registry of devices: who is approved, paired by a code, revoked.
    pub devices: Devices,
    /// v1 devices must be approved (`[security] approve_new_devices`); `false`: the
    /// token alone lets a v1 device in. A v2 device is always one of the registry's.
    pub approve_new: bool,
    /// The desktop's identity: protocol v2 handshakes are answered with it.
    pub identity: KeyPair,
    /// `[security] allow_token_auth`: v1's token `auth` is accepted on the public port.
    /// The private port (the supervisor's probe) always accepts it.
    pub allow_token_auth: bool,
}

impl Credentials {
    /// `voucher`: the supervisor's key, `None` for a worker run by hand.
    pub fn new(
        token: ApiToken,
        voucher: Option<Voucher>,
        identity: KeyPair,
        devices: Devices,
    ) -> Self {
        let probe_is_supervisors = voucher.is_some();
        let voucher = voucher.unwrap_or_else(|| Voucher::new(&token));
        Self {
            token,
            voucher,
            probe_is_supervisors,
            devices,
            approve_new: true,
            identity,
            allow_token_auth: false,
        }
    }

    /// Whether v1's token `auth` is accepted on the public port.
    pub fn allowing_tokens(mut self, allow: bool) -> Self {
        self.allow_token_auth = allow;
        self
    }

    /// Whether v1 devices need approval (`false`: any token holder gets in).
    pub fn approving(mut self, approve_new: bool) -> Self {
        self.approve_new = approve_new;
        self
    }
}

/// Everything a connection needs; shared.
pub(crate) struct Shared {
    pub token: ApiToken,
    /// Checks the supervisor's word on who each client is.
    pub voucher: Voucher,
    /// See [`Credentials::probe_is_supervisors`].
    pub probe_is_supervisors: bool,
    /// See [`Credentials::devices`].
    pub devices: Devices,
    /// See [`Credentials::approve_new`].
    pub approve_new: bool,
    /// See [`Credentials::identity`].
    pub identity: KeyPair,
    /// See [`Credentials::allow_token_auth`].
    pub allow_token_auth: bool,
    /// The approved devices, read again whenever the registry changes: a connection
    /// of one no longer there is closed.
    pub approved: watch::Receiver<revocation::Approved>,
    /// WebSocket connections that have not authenticated yet.
    pub unauthenticated: AtomicUsize,
    pub cfg: WorkerConfig,
    pub hub: Hub,
    pub auth: Arc<AuthLimiter>,
    pub started: Instant,
    pub cwd: String,
    pub stop: CancellationToken,
    pub conns: TaskTracker,
    pub signals: WorkerSignals,
}

/// Serves until `stop` is cancelled, then closes every WebSocket (each client is told
/// `server_shutdown`) and returns once they are all gone. The caller then shuts the hub
/// down (agents stopped, sessions saved).
pub async fn serve(
    listener: TcpListener,
    hub: Hub,
    credentials: Credentials,
    cfg: WorkerConfig,
    cwd: String,
    signals: WorkerSignals,
    stop: CancellationToken,
) -> Result<(), WorkerError> {
    let auth = AuthLimiter::new(cfg.auth_backoff());
    let shared = Arc::new(Shared {
        voucher: credentials.voucher,
        probe_is_supervisors: credentials.probe_is_supervisors,
        approved: revocation::watch(credentials.devices.clone(), stop.clone()),
        devices: credentials.devices,
        approve_new: credentials.approve_new,
        identity: credentials.identity,
        allow_token_auth: credentials.allow_token_auth,
        unauthenticated: AtomicUsize::new(0),
        token: credentials.token,
        cfg,
        hub,
        auth,
        started: Instant::now(),
        cwd,
        stop: stop.clone(),
        conns: TaskTracker::new(),
        signals,
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
