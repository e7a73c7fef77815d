//! A phone, as far as the bench needs one: a WebSocket client that authenticates, reads
//! frames under deadlines, reconnects through a restarting supervisor, and checks a
//! `BENCH` stream delta by delta. Every read has a deadline; anything unexpected panics
//! with the last frames seen, so a broken system never turns into a number.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use chroxy::channel::{KeyPair, Opener, Sealer};

/// The API token every bench system is started with.
pub const TOKEN: &str = "bench-token-0123456789abcdef0123456789abcdef";
/// The key of the phone every bench home has approved (new devices need approval).
pub const DEVICE_KEY: &str = "bench-device-key-0123456789abcdef0123456789";
/// Deadline of one step (a connect, an answer, a short turn).
pub const STEP: Duration = Duration::from_secs(60);
/// Pause between two attempts while the public port answers 503 (no worker serves).
/// It bounds the resolution of the recovery figures, not their value.
pub const RETRY: Duration = Duration::from_millis(5);

pub type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// When a frame arrived: the clock `fake-claude` stamps deltas with.
pub use crate::common::clock::monotonic_ns as now_ns;

/// What a read produced.
pub enum Incoming {
    /// A text frame (parsed) and when it arrived ([`now_ns`]).
    Frame(Value, u64),
    /// The connection ended: the close code, if the server sent one.
    Closed(Option<u16>),
}

/// Opens the WebSocket on `port`; `Err` carries why (e.g. `HTTP 503` while restarting).
pub async fn open(port: u16) -> Result<Ws, String> {
    let url = format!("ws://127.0.0.1:{port}/ws");
    match timeout_at(Instant::now() + STEP, tokio_tungstenite::connect_async(url)).await {
        Err(_) => Err(format!("no WebSocket upgrade within {STEP:?}")),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tungstenite::Error::Http(response))) => {
            Err(format!("HTTP {}", response.status().as_u16()))
        }
        Ok(Err(e)) => Err(e.to_string()),
    }
}

/// The `auth` message of a phone called `name`.
pub fn auth_msg(name: &str) -> Value {
    json!({"type": "auth", "token": TOKEN, "deviceKey": DEVICE_KEY, "protocolVersion": 1,
           "deviceInfo": {"deviceName": name, "deviceType": "phone", "platform": "bench"}})
}

pub struct Client {
    ws: Ws,
    pub name: String,
    /// The last frames other than deltas, for panic messages and `active_session`.
    seen: VecDeque<Value>,
    /// Protocol v2: both halves of the encrypted channel.
    sealed: Option<(Sealer, Opener)>,
    /// The session of the last `session_switched` (a long history replay pushes it out
    /// of `seen`).
    active: Option<String>,
}

impl Client {
    /// Connects and authenticates; returns after the welcome (`history_replay_end`).
    pub async fn phone(port: u16, name: &str) -> Self {
        let ws = open(port)
            .await
            .unwrap_or_else(|e| panic!("{name}: cannot connect to port {port}: {e}"));
        let mut c = Self::wrap(ws, name);
        c.send(auth_msg(name)).await;
        let ok = c.frame(Instant::now() + STEP, "auth_ok").await.0;
        assert_eq!(ok["type"], "auth_ok", "{name}: authentication failed: {ok}");
        c.until_type("history_replay_end", "the welcome").await;
        c
    }

    /// A phone reconnecting through the supervisor's public port, as the phone client
    /// does after losing its socket, but without its back-off: tries every [`RETRY`]
    /// until a worker authenticates it. Returns the client (welcome read) and the
    /// instant `auth_ok` arrived.
    pub async fn reconnect(port: u16, name: &str, deadline: Instant) -> (Self, Instant) {
        let mut last = String::new();
        loop {
            assert!(
                Instant::now() < deadline,
                "{name}: not re-authenticated before the deadline; last attempt: {last}"
            );
            match open(port).await {
                Ok(ws) => {
                    let mut c = Self::wrap(ws, name);
                    c.send(auth_msg(name)).await;
                    match c.next(deadline, "auth_ok").await {
                        Incoming::Frame(v, _) if v["type"] == "auth_ok" => {
                            let at = Instant::now();
                            c.until_type("history_replay_end", "the welcome").await;
                            return (c, at);
                        }
                        Incoming::Frame(v, _) => panic!("{name}: refused on reconnect: {v}"),
                        // The worker went away between the upgrade and the answer.
                        Incoming::Closed(code) => {
                            last = format!("closed ({code:?}) before auth_ok")
                        }
                    }
                }
                Err(e) => last = e,
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Connects and authenticates with protocol v2 as `device` (with `code` while
    /// pairing), the machine holding `server`'s key; returns after the welcome, with the
    /// time from opening the socket to `auth_ok`.
    pub async fn phone_v2(
        port: u16,
        name: &str,
        server: &[u8; 32],
        device: &KeyPair,
        code: Option<&str>,
    ) -> (Self, Duration) {
        let started = Instant::now();
        let ws = open(port)
            .await
            .unwrap_or_else(|e| panic!("{name}: cannot connect to port {port}: {e}"));
        let mut c = Self::wrap(ws, name);
        let sealed = crate::common::handshake_on(&mut c.ws, device, server, STEP).await;
        c.sealed = Some(sealed.unwrap_or_else(|e| panic!("{name}: handshake failed: {e:?}")));
        let mut auth = json!({"type": "auth", "protocolVersion": 2,
            "deviceInfo": {"deviceName": name, "deviceType": "phone", "platform": "bench"}});
        if let Some(code) = code {
            auth["pairingCode"] = json!(code);
        }
        c.send(auth).await;
        let ok = c.frame(Instant::now() + STEP, "auth_ok").await.0;
        let took = started.elapsed();
        assert_eq!(ok["type"], "auth_ok", "{name}: authentication failed: {ok}");
        assert_eq!(ok["encryption"], "noise", "{name}: {ok}");
        c.until_type("history_replay_end", "the welcome").await;
        (c, took)
    }

    /// A client on an open socket, not authenticated yet.
    pub fn wrap(ws: Ws, name: &str) -> Self {
        Self {
            ws,
            name: name.to_owned(),
            seen: VecDeque::new(),
            sealed: None,
            active: None,
        }
    }

    pub async fn send(&mut self, v: Value) {
        let frame = match &mut self.sealed {
            Some((sealer, _)) => Message::binary(
                sealer
                    .seal(&v.to_string())
                    .unwrap_or_else(|e| panic!("{}: {e}", self.name)),
            ),
            None => Message::text(v.to_string()),
        };
        timeout_at(Instant::now() + STEP, self.ws.send(frame))
            .await
            .unwrap_or_else(|_| panic!("{}: send blocked for {STEP:?}", self.name))
            .unwrap_or_else(|e| panic!("{}: send failed: {e}", self.name));
    }

    /// The next text frame, or the end of the connection.
    pub async fn next(&mut self, deadline: Instant, waiting_for: &str) -> Incoming {
        loop {
            let msg = timeout_at(deadline, self.ws.next())
                .await
                .unwrap_or_else(|_| {
                    panic!(
                        "{}: no {waiting_for} before the deadline; last frames: {:#?}",
                        self.name, self.seen
                    )
                });
            let msg = crate::common::unsealed(msg, &mut self.sealed)
                .unwrap_or_else(|e| panic!("{}: {e}", self.name));
            // Opening is part of what a phone pays before it can show the frame.
            let at = now_ns();
            match msg {
                Some(Ok(Message::Text(t))) => {
                    let v: Value = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("{}: frame is not JSON ({e}): {t}", self.name));
                    if v["type"] == "session_switched" {
                        self.active = v["sessionId"].as_str().map(str::to_owned);
                    }
                    if v["type"] != "stream_delta" {
                        self.seen.push_back(v.clone());
                        if self.seen.len() > 16 {
                            self.seen.pop_front();
                        }
                    }
                    return Incoming::Frame(v, at);
                }
                Some(Ok(Message::Close(frame))) => {
                    return Incoming::Closed(frame.map(|f| u16::from(f.code)))
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Incoming::Closed(None),
            }
        }
    }

    /// The next text frame; panics on a close or on a refusal (`error`, `session_error`,
    /// `rate_limited`): the figures that use it must not be served by errors.
    pub async fn frame(&mut self, deadline: Instant, waiting_for: &str) -> (Value, u64) {
        match self.next(deadline, waiting_for).await {
            Incoming::Frame(v, at) => {
                if matches!(
                    v["type"].as_str(),
                    Some("error" | "session_error" | "rate_limited")
                ) {
                    panic!("{}: the system refused something: {v}", self.name);
                }
                (v, at)
            }
            Incoming::Closed(code) => panic!(
                "{}: connection closed ({code:?}) while waiting for {waiting_for}; last frames: {:#?}",
                self.name, self.seen
            ),
        }
    }

    pub async fn until(&mut self, mut pred: impl FnMut(&Value) -> bool, what: &str) -> Value {
        let deadline = Instant::now() + STEP;
        loop {
            let (v, _) = self.frame(deadline, what).await;
            if pred(&v) {
                return v;
            }
        }
    }

    pub async fn until_type(&mut self, ty: &str, context: &str) -> Value {
        self.until(|v| v["type"] == ty, &format!("{ty} ({context})"))
            .await
    }

    /// Opens a session named `name` (this phone switches to it); returns its
    /// `session_switched`.
    pub async fn create_session(&mut self, name: &str) -> Value {
        self.send(json!({"type": "create_session", "name": name}))
            .await;
        self.until(
            |v| v["type"] == "session_switched" && v["name"] == name,
            &format!("the new session {name}"),
        )
        .await
    }

    /// Reads (and drops) frames until the connection ends; returns the close code.
    pub async fn closed(&mut self, deadline: Instant) -> Option<u16> {
        loop {
            if let Incoming::Closed(code) = self.next(deadline, "the connection to end").await {
                return code;
            }
        }
    }

    /// Sends a user turn to a session (default: the active one) and waits for its end,
    /// allowing every permission prompt on the way; returns how many there were. A
    /// `REPLY <text>` turn must be answered with exactly that text: an answer from
    /// anything but the scripted model (a CLI that cannot reach it answers too) fails.
    pub async fn turn(&mut self, text: &str, session: Option<&str>) -> usize {
        let mut msg = json!({"type": "input", "data": text});
        if let Some(id) = session {
            msg["sessionId"] = json!(id);
        }
        self.send(msg).await;
        let want = session.map(str::to_owned);
        let ours = |v: &Value| want.as_deref().is_none_or(|id| v["sessionId"] == id);
        let what = format!(
            "the end of the turn {:?}",
            text.chars().take(40).collect::<String>()
        );
        let deadline = Instant::now() + STEP;
        let (mut prompts, mut answer) = (0, String::new());
        loop {
            let (v, _) = self.frame(deadline, &what).await;
            match v["type"].as_str() {
                Some("permission_request") => {
                    prompts += 1;
                    let id = v["requestId"].clone();
                    self.send(json!({"type": "permission_response", "requestId": id, "decision": "allow"}))
                        .await;
                }
                Some("stream_delta") if ours(&v) => {
                    answer.push_str(v["delta"].as_str().unwrap_or_default());
                }
                Some("agent_idle") if ours(&v) => break,
                _ => {}
            }
        }
        if let Some(reply) = text.strip_prefix("REPLY ") {
            assert_eq!(
                answer.trim(),
                reply.trim(),
                "{}: the turn {what:?} was not answered by the scripted model",
                self.name
            );
        }
        prompts
    }

    /// The active session, from the last `session_switched`.
    pub fn active_session(&self) -> String {
        self.active
            .clone()
            .unwrap_or_else(|| panic!("{}: no session_switched seen", self.name))
    }

    /// Reads one `BENCH n` turn through `agent_idle`, checking that every delta arrives
    /// exactly once and in order (by its number). `Err` if the connection was closed
    /// first (a client kicked as too slow: a drop).
    pub async fn read_bench(&mut self, n: u64, deadline: Instant) -> Result<BenchRun, Dropped> {
        let mut run = BenchRun {
            latencies_ns: Vec::with_capacity(n as usize),
            late_ns: Vec::with_capacity(n as usize),
            frames: 0,
            first_ts: 0,
            last_at: 0,
        };
        loop {
            let (v, at) = match self.next(deadline, "the BENCH stream").await {
                Incoming::Frame(v, at) => (v, at),
                Incoming::Closed(code) => {
                    return Err(Dropped {
                        received: run.latencies_ns.len() as u64,
                        close: code,
                    })
                }
            };
            match v["type"].as_str() {
                Some("stream_delta") => {
                    run.frames += 1;
                    let delta = v["delta"]
                        .as_str()
                        .unwrap_or_else(|| panic!("{}: stream_delta without text: {v}", self.name));
                    assert!(
                        delta.ends_with(';'),
                        "{}: a delta split a timestamp: {delta:?}",
                        self.name
                    );
                    for piece in delta.split_terminator(';') {
                        let (seq, ts, late) = bench_piece(piece).unwrap_or_else(|| {
                            panic!(
                                "{}: delta piece {piece:?} is not seq:written:late",
                                self.name
                            )
                        });
                        let want = run.latencies_ns.len() as u64;
                        assert_eq!(
                            seq, want,
                            "{}: delta {seq} arrived where delta {want} was due (lost, repeated or reordered)",
                            self.name
                        );
                        assert!(
                            ts <= at,
                            "{}: delta {seq} arrived {} ns before it was written: not one clock",
                            self.name,
                            ts - at
                        );
                        if seq == 0 {
                            run.first_ts = ts;
                        }
                        run.latencies_ns.push(at - ts);
                        run.late_ns.push(late);
                    }
                    run.last_at = at;
                }
                Some("agent_idle") => {
                    assert_eq!(
                        run.latencies_ns.len() as u64,
                        n,
                        "{}: the turn ended after {} of {n} deltas",
                        self.name,
                        run.latencies_ns.len()
                    );
                    return Ok(run);
                }
                Some("error" | "session_error" | "rate_limited") => {
                    panic!("{}: the system refused something: {v}", self.name)
                }
                _ => {}
            }
        }
    }
}

/// `<seq>:<written>:<late>` of a `BENCH` delta (see `fake_claude.rs`).
fn bench_piece(piece: &str) -> Option<(u64, u64, u64)> {
    let mut fields = piece.split(':').map(str::parse::<u64>);
    match (fields.next(), fields.next(), fields.next(), fields.next()) {
        (Some(Ok(seq)), Some(Ok(ts)), Some(Ok(late)), None) => Some((seq, ts, late)),
        _ => None,
    }
}

/// What one client saw of a `BENCH` turn.
pub struct BenchRun {
    /// Receive time − write time of every delta, in order.
    pub latencies_ns: Vec<u64>,
    /// How late `fake-claude` wrote each delta against its schedule: large values mean
    /// the worker stopped reading its pipe, time the latencies do not show.
    pub late_ns: Vec<u64>,
    /// `stream_delta` frames that carried them.
    pub frames: u64,
    /// When the CLI wrote the first delta, and when the last frame arrived ([`now_ns`]).
    pub first_ts: u64,
    pub last_at: u64,
}

/// A client closed by the server before the end of a `BENCH` turn.
#[derive(Debug)]
pub struct Dropped {
    /// Deltas it had until then.
    pub received: u64,
    /// The close code (1013: too slow).
    pub close: Option<u16>,
}

pub fn str_field(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("no string `{key}` in {v}"))
        .to_owned()
}
