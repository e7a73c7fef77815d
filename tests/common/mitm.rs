//! A man-in-the-middle where the tunnel stands: between the phone and the public port.
//! It passes everything on and records it (every request line and header, every
//! response body, every WebSocket frame both ways), and on cue alters, replays or
//! drops one frame of the encrypted channel, or plays a server that does not hold the
//! desktop's key. What a tunnel operator could see and do, on loopback.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::ws::{self, WebSocket, WebSocketUpgrade};
use axum::extract::{Request, State};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use tokio_tungstenite::tungstenite::{self, protocol::frame::coding::CloseCode};

/// Which way a frame goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dir {
    ToPhone,
    ToServer,
}

/// What is done to the next frame of the encrypted channel going one way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// One bit flipped.
    Flip,
    /// Passed on, then sent again.
    Replay,
    /// Never passed on.
    Drop,
}

struct Shared {
    upstream: u16,
    capture: Mutex<Vec<u8>>,
    fault: Mutex<Option<(Dir, Fault)>>,
    impostor: AtomicBool,
    websockets: AtomicUsize,
}

pub struct Mitm {
    pub port: u16,
    shared: Arc<Shared>,
}

impl Mitm {
    /// Listens on 127.0.0.1 and passes everything on to `upstream` (the public port).
    pub async fn start(upstream: u16) -> Self {
        let shared = Arc::new(Shared {
            upstream,
            capture: Mutex::new(Vec::new()),
            fault: Mutex::new(None),
            impostor: AtomicBool::new(false),
            websockets: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .route("/ws", axum::routing::get(upgrade))
            .fallback(pass)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
        Self { port, shared }
    }

    /// Everything seen so far, in one buffer to search.
    pub fn capture(&self) -> Vec<u8> {
        self.shared.capture.lock().unwrap().clone()
    }

    /// Applies `fault` to the next frame of the encrypted channel going `dir`.
    pub fn arm(&self, dir: Dir, fault: Fault) {
        *self.shared.fault.lock().unwrap() = Some((dir, fault));
    }

    /// Whether the armed fault still waits for its frame.
    pub fn armed(&self) -> bool {
        self.shared.fault.lock().unwrap().is_some()
    }

    /// From now on, WebSockets are answered by a server without the desktop's key.
    pub fn impostor(&self, on: bool) {
        self.shared.impostor.store(on, Ordering::SeqCst);
    }

    /// WebSockets opened through it so far.
    pub fn websockets(&self) -> usize {
        self.shared.websockets.load(Ordering::SeqCst)
    }
}

impl Shared {
    fn record(&self, bytes: &[u8]) {
        let mut capture = self.capture.lock().unwrap();
        capture.extend_from_slice(bytes);
        capture.push(b'\n');
    }

    fn record_head(&self, req: &Request) {
        let mut head = format!("{} {}\n", req.method(), req.uri());
        for (name, value) in req.headers() {
            head.push_str(&format!(
                "{name}: {}\n",
                String::from_utf8_lossy(value.as_bytes())
            ));
        }
        self.record(head.as_bytes());
    }

    /// The fault armed for `dir`, taken.
    fn take_fault(&self, dir: Dir) -> Option<Fault> {
        let mut armed = self.fault.lock().unwrap();
        match *armed {
            Some((d, fault)) if d == dir => {
                *armed = None;
                Some(fault)
            }
            _ => None,
        }
    }
}

/// Any plain request: passed on, both ways recorded.
async fn pass(State(s): State<Arc<Shared>>, req: Request) -> Response {
    s.record_head(&req);
    let (parts, body) = req.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    s.record(&body);
    let uri = format!(
        "http://127.0.0.1:{}{}",
        s.upstream,
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
    );
    let mut up = hyper::Request::builder().method(parts.method).uri(uri);
    for (name, value) in &parts.headers {
        if name != "host" {
            up = up.header(name, value);
        }
    }
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Full<axum::body::Bytes>>();
    let answer = client
        .request(up.body(http_body_util::Full::new(body)).unwrap())
        .await
        .unwrap();
    let (parts, body) = answer.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    s.record(&body);
    Response::from_parts(parts, Body::from(body))
}

async fn upgrade(State(s): State<Arc<Shared>>, req: Request) -> Response {
    s.record_head(&req);
    let (mut parts, _) = req.into_parts();
    let upgrade = <WebSocketUpgrade as axum::extract::FromRequestParts<_>>::from_request_parts(
        &mut parts, &s,
    )
    .await
    .unwrap();
    upgrade
        .max_message_size(4 << 20)
        .on_upgrade(move |phone| async move {
            s.websockets.fetch_add(1, Ordering::SeqCst);
            if s.impostor.load(Ordering::SeqCst) {
                impostor(phone, &s).await;
            } else {
                relay(phone, &s).await;
            }
        })
}

/// A server without the desktop's key: all it can answer the handshake with is an
/// ephemeral key of its own and bytes that cannot verify.
async fn impostor(mut phone: WebSocket, s: &Shared) {
    while let Some(Ok(msg)) = phone.next().await {
        if let ws::Message::Binary(hello) = msg {
            s.record(&hello);
            let mut reply = chroxy::channel::KeyPair::generate()
                .unwrap()
                .public()
                .to_vec();
            reply.extend_from_slice(&[0x5a; 16]);
            let _ = phone.send(ws::Message::Binary(reply.into())).await;
        }
    }
}

async fn relay(phone: WebSocket, s: &Shared) {
    let url = format!("ws://127.0.0.1:{}/ws", s.upstream);
    let Ok((server, _)) = tokio_tungstenite::connect_async(url).await else {
        return;
    };
    let (mut phone_tx, mut phone_rx) = phone.split();
    let (mut server_tx, mut server_rx) = server.split();
    // The first binary frame each way is the handshake; faults go to the channel's frames.
    let (mut to_server, mut to_phone) = (0usize, 0usize);
    loop {
        tokio::select! {
            msg = phone_rx.next() => {
                let Some(Ok(msg)) = msg else { break };
                let frames = match msg {
                    ws::Message::Binary(b) => {
                        to_server += 1;
                        s.record(&b);
                        faulted(b.to_vec(), (to_server > 1).then(|| s.take_fault(Dir::ToServer)).flatten())
                            .into_iter()
                            .map(tungstenite::Message::binary)
                            .collect()
                    }
                    ws::Message::Text(t) => {
                        s.record(t.as_bytes());
                        vec![tungstenite::Message::text(t.as_str())]
                    }
                    ws::Message::Close(frame) => vec![tungstenite::Message::Close(frame.map(|f| {
                        tungstenite::protocol::CloseFrame { code: CloseCode::from(f.code), reason: f.reason.as_str().into() }
                    }))],
                    ws::Message::Ping(_) | ws::Message::Pong(_) => vec![],
                };
                for frame in frames {
                    if server_tx.send(frame).await.is_err() {
                        return;
                    }
                }
            }
            msg = server_rx.next() => {
                let Some(Ok(msg)) = msg else { break };
                let frames = match msg {
                    tungstenite::Message::Binary(b) => {
                        to_phone += 1;
                        s.record(&b);
                        faulted(b.to_vec(), (to_phone > 1).then(|| s.take_fault(Dir::ToPhone)).flatten())
                            .into_iter()
                            .map(|b| ws::Message::Binary(b.into()))
                            .collect()
                    }
                    tungstenite::Message::Text(t) => {
                        s.record(t.as_bytes());
                        vec![ws::Message::Text(t.as_str().into())]
                    }
                    tungstenite::Message::Close(frame) => vec![ws::Message::Close(frame.map(|f| {
                        ws::CloseFrame { code: f.code.into(), reason: f.reason.as_str().into() }
                    }))],
                    _ => vec![],
                };
                for frame in frames {
                    if phone_tx.send(frame).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
    let _ = phone_tx.close().await;
    let _ = server_tx.close().await;
}

/// The frames to pass on instead of `frame`.
fn faulted(mut frame: Vec<u8>, fault: Option<Fault>) -> Vec<Vec<u8>> {
    match fault {
        None => vec![frame],
        Some(Fault::Flip) => {
            let middle = frame.len() / 2;
            frame[middle] ^= 0x04;
            vec![frame]
        }
        Some(Fault::Replay) => vec![frame.clone(), frame],
        Some(Fault::Drop) => vec![],
    }
}
