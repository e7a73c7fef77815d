//! What the demo server remembers (a bounded record of requests, open streams) and the
//! handle callers use to read it and wait on it without sleeping.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::http::{Method, Uri};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::request::RequestKind;
use super::DemoError;

/// How many requests (of every kind) the record keeps. Bodies carry the whole
/// conversation, so an unbounded record would grow without limit in `--demo` use.
pub const RECORD_LIMIT: usize = 32;

/// One request as the demo server received it.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// 1-based arrival order over all requests.
    pub seq: u64,
    /// For main turns, 1-based order among main turns (what [`DemoHandle::wait_for_request`] counts).
    pub turn: Option<u64>,
    /// What the call was for.
    pub kind: RequestKind,
    /// `POST`, `HEAD`, ...
    pub method: String,
    /// Path and query, e.g. `/v1/messages?beta=true`.
    pub path: String,
    /// The parsed JSON body; `Null` when there was none or it was not JSON.
    pub body: Value,
}

impl RecordedRequest {
    /// The `model` field of the body, if any.
    pub fn model(&self) -> Option<&str> {
        self.body.get("model").and_then(Value::as_str)
    }

    /// The `messages` array of the body (empty if absent).
    pub fn messages(&self) -> &[Value] {
        self.body
            .get("messages")
            .and_then(Value::as_array)
            .map_or(&[], Vec::as_slice)
    }
}

/// The bounded record, guarded by a std mutex that is never held across `.await`.
#[derive(Default)]
struct Record {
    kept: VecDeque<RecordedRequest>,
    seen: u64,
    turns_seen: u64,
}

/// State shared by the handlers and every [`DemoHandle`].
pub(super) struct Shared {
    record: Mutex<Record>,
    /// Number of main turns seen so far; waiters subscribe to it instead of polling.
    turns: watch::Sender<u64>,
    /// Number of SSE bodies currently being streamed.
    streams: watch::Sender<usize>,
    /// Numbers message and tool_use ids, so every id in a session is unique.
    next_id: AtomicU64,
    /// Ends slow streams on shutdown; graceful shutdown would otherwise wait for them.
    pub(super) stop: CancellationToken,
}

impl Shared {
    pub(super) fn new(stop: CancellationToken) -> Self {
        Shared {
            record: Mutex::new(Record::default()),
            turns: watch::Sender::new(0),
            streams: watch::Sender::new(0),
            next_id: AtomicU64::new(0),
            stop,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Record> {
        // A panic while holding this lock can only come from a bug in `record`; the data
        // is a plain log, still consistent, so keep serving rather than poison everything.
        self.record
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn record(&self, kind: RequestKind, method: &Method, uri: &Uri, body: Value) {
        let turns_seen = {
            let mut rec = self.lock();
            rec.seen += 1;
            let turn = (kind == RequestKind::MainTurn).then(|| {
                rec.turns_seen += 1;
                rec.turns_seen
            });
            let entry = RecordedRequest {
                seq: rec.seen,
                turn,
                kind,
                method: method.to_string(),
                path: uri.to_string(),
                body,
            };
            if rec.kept.len() == RECORD_LIMIT {
                rec.kept.pop_front();
            }
            rec.kept.push_back(entry);
            rec.turns_seen
        };
        self.turns.send_replace(turns_seen);
    }

    pub(super) fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// A cheap, cloneable view of a running demo server.
#[derive(Clone)]
pub struct DemoHandle {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DemoHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DemoHandle")
            .field("addr", &self.addr)
            .finish()
    }
}

impl DemoHandle {
    pub(super) fn new(addr: SocketAddr, shared: Arc<Shared>) -> Self {
        DemoHandle { addr, shared }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`: the CLI's `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The environment the Claude Code CLI needs to use this server and nothing else
    /// (see the module docs for why each variable is there). `HOME` is the caller's.
    pub fn cli_env(&self) -> Vec<(String, String)> {
        let mut env = vec![("ANTHROPIC_BASE_URL".to_owned(), self.base_url())];
        env.extend(
            super::CLI_ENV
                .iter()
                .map(|(name, value)| ((*name).to_owned(), (*value).to_owned())),
        );
        env
    }

    /// The main-turn requests still kept (the last [`RECORD_LIMIT`] requests of any kind),
    /// oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared
            .lock()
            .kept
            .iter()
            .filter(|r| r.turn.is_some())
            .cloned()
            .collect()
    }

    /// Every request still kept, main turns and side calls, oldest first.
    pub fn all_requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().kept.iter().cloned().collect()
    }

    /// How many main-turn requests have arrived so far.
    pub fn turns_seen(&self) -> u64 {
        *self.shared.turns.borrow()
    }

    /// Waits until the `n`-th (1-based) main-turn request has arrived, then returns it.
    pub async fn wait_for_request(
        &self,
        n: u64,
        within: Duration,
    ) -> Result<RecordedRequest, DemoError> {
        let mut turns = self.shared.turns.subscribe();
        let waited = tokio::select! {
            // Biased: a request that arrived before the stop is still returned.
            biased;
            waited = tokio::time::timeout(within, turns.wait_for(|&seen| seen >= n)) => waited,
            () = self.shared.stop.cancelled() => return Err(DemoError::Stopped),
        };
        match waited {
            Err(_elapsed) => {
                return Err(DemoError::Timeout {
                    wanted: n,
                    seen: self.turns_seen(),
                    within,
                })
            }
            // The sender lives in `Shared`, which this handle keeps alive.
            Ok(Err(_closed)) => return Err(DemoError::Stopped),
            Ok(Ok(_)) => {}
        }
        self.shared
            .lock()
            .kept
            .iter()
            .find(|r| r.turn == Some(n))
            .cloned()
            .ok_or(DemoError::Evicted {
                wanted: n,
                limit: RECORD_LIMIT,
            })
    }

    /// How many SSE responses are being streamed right now.
    pub fn open_streams(&self) -> usize {
        *self.shared.streams.borrow()
    }

    /// Waits until no SSE response is being streamed (e.g. after a client hung up).
    pub async fn wait_streams_closed(&self, within: Duration) -> Result<(), DemoError> {
        let mut streams = self.shared.streams.subscribe();
        let waited = tokio::time::timeout(within, streams.wait_for(|&open| open == 0)).await;
        match waited {
            Err(_elapsed) => Err(DemoError::StreamsStillOpen {
                open: self.open_streams(),
                within,
            }),
            Ok(Err(_closed)) => Err(DemoError::Stopped),
            Ok(Ok(_)) => Ok(()),
        }
    }
}

/// Counts an open SSE body; dropped when the body ends or the client hangs up.
pub(super) struct StreamGuard {
    shared: Arc<Shared>,
    finished: bool,
}

impl StreamGuard {
    pub(super) fn new(shared: Arc<Shared>) -> Self {
        shared.streams.send_modify(|open| *open += 1);
        StreamGuard {
            shared,
            finished: false,
        }
    }

    /// The last event went out: the drop that follows is not an early end.
    pub(super) fn finish(&mut self) {
        self.finished = true;
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if !self.finished {
            tracing::debug!("stream ended early (client went away or shutdown)");
        }
        self.shared.streams.send_modify(|open| *open -= 1);
    }
}
