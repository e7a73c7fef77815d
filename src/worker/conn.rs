//! One WebSocket connection: auth, then a read loop feeding the hub while a writer
//! task drains the client's bounded queue onto the socket.

use std::collections::VecDeque;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::admit::{admit, Admitted, Refusal};
use super::auth::Verdict;
use super::routes::{Client, Unauthenticated};
use super::{Shared, COMMIT, VERSION};
use crate::protocol::{
    parse_client_frame, AuthFailReason, ClientInfo, ClientMsg, DeviceInfo, ServerMsg,
    ShutdownReason, Token, PROTOCOL_VERSION,
};
use crate::session::{frame, new_id, queue, Audience, Outbound, QueueRx, QueueTx};

/// Close codes of docs/protocol.md.
mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const POLICY: u16 = 1008;
    pub const INTERNAL_ERROR: u16 = 1011;
    pub const MESSAGE_TOO_BIG: u16 = 1009;
    pub const SERVICE_RESTART: u16 = 1012;
    pub const TRY_AGAIN_LATER: u16 = 1013;
    pub const AUTH: u16 = 4001;
    pub const RATE_LIMITED: u16 = 4029;
}

/// Frame-level faults (binary, not JSON, too large) tolerated per minute.
const BAD_FRAMES_PER_MINUTE: usize = 5;

type Sink = SplitSink<WebSocket, Message>;
type Stream = SplitStream<WebSocket>;

fn text(msg: &ServerMsg) -> Message {
    Message::Text(Utf8Bytes::from(msg.to_json()))
}

fn close_msg(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code,
        reason: Utf8Bytes::from(reason.to_owned()),
    }))
}

pub(crate) async fn run(
    socket: WebSocket,
    client: Client,
    pending: Unauthenticated,
    s: Arc<Shared>,
) {
    let (mut sink, mut stream) = socket.split();
    let addr = client.addr;
    let device = authenticate(&mut sink, &mut stream, client, pending, &s).await;
    let Some((device, admitted)) = device else {
        return;
    };
    let client_id = new_id("c");
    let span = tracing::info_span!("client", client = %client_id, %addr);
    serve_client(sink, stream, client_id, device, admitted, client.direct, s)
        .instrument(span)
        .await;
}

/// Waits for `auth` within the deadline, then asks the device registry. `None`: the
/// connection was refused and closed.
/// `pending` is this connection's place among those still to authenticate: given back
/// as soon as the outcome is known, before a wrong token waits out its delay.
async fn authenticate(
    sink: &mut Sink,
    stream: &mut Stream,
    client: Client,
    pending: Unauthenticated,
    s: &Shared,
) -> Option<(DeviceInfo, Admitted)> {
    let addr = client.addr;
    let deadline = tokio::time::sleep(s.cfg.auth_timeout());
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            _ = &mut deadline => {
                refuse(sink, AuthFailReason::Timeout, close::AUTH).await;
                return None;
            }
            _ = s.stop.cancelled() => return None,
            msg = stream.next() => msg,
        };
        let frame = match msg {
            Some(Ok(Message::Text(t))) => t,
            Some(Ok(Message::Binary(_))) => {
                refuse(sink, AuthFailReason::NotAuthenticated, close::AUTH).await;
                return None;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Err(err)) => {
                if too_big(err) {
                    let _ = sink
                        .send(close_msg(close::MESSAGE_TOO_BIG, "frame too large"))
                        .await;
                }
                return None;
            }
            Some(Ok(Message::Close(_))) | None => return None,
        };
        match parse_client_frame(frame.as_str()) {
            Ok(ClientMsg::Auth(auth)) => {
                if s.token.matches(&auth.token.0) {
                    // The supervisor's probe comes straight to this port from
                    // 127.0.0.1 every few seconds: its success must not wipe the
                    // backoff of whoever else reaches the public port from there.
                    if !client.direct {
                        s.auth.succeeded(addr);
                    }
                    return match admit(s, &auth, client).await {
                        Ok(admitted) => Some((auth.device_info.unwrap_or_default(), admitted)),
                        Err(refusal) => {
                            drop(pending);
                            match refusal {
                                Refusal::Told(msg) => {
                                    let _ = sink.send(text(&msg)).await;
                                    let _ = sink
                                        .send(close_msg(close::AUTH, "device not approved"))
                                        .await;
                                }
                                Refusal::Unavailable => {
                                    let _ = sink
                                        .send(close_msg(
                                            close::INTERNAL_ERROR,
                                            "device list unreadable; retry later",
                                        ))
                                        .await;
                                }
                            }
                            None
                        }
                    };
                }
                drop(pending);
                match s.auth.failed(addr) {
                    (Verdict::RateLimited, _) => {
                        tracing::warn!(%addr, "too many authentication attempts in flight");
                        refuse(sink, AuthFailReason::RateLimited, close::RATE_LIMITED).await;
                    }
                    (Verdict::DelayThenFail(delay), in_flight) => {
                        tracing::warn!(%addr, delay_ms = delay.as_millis() as u64, "wrong token");
                        tokio::select! {
                            _ = tokio::time::sleep(delay) => {}
                            _ = s.stop.cancelled() => {}
                        }
                        drop(in_flight);
                        refuse(sink, AuthFailReason::InvalidToken, close::AUTH).await;
                    }
                }
                return None;
            }
            // Anything else first — even a malformed frame — is not authentication.
            Ok(_) | Err(_) => {
                refuse(sink, AuthFailReason::NotAuthenticated, close::AUTH).await;
                return None;
            }
        }
    }
}

/// Answers `auth_fail` and closes with `code`.
async fn refuse(sink: &mut Sink, reason: AuthFailReason, code: u16) {
    let _ = sink.send(text(&ServerMsg::auth_fail(reason))).await;
    let _ = sink.send(close_msg(code, "authentication failed")).await;
}

/// Why the connection ends, decided by the reader and carried out by the writer.
#[derive(Debug, Clone)]
enum Ending {
    /// The peer went away; nothing to send.
    Gone,
    /// Send these frames (already queued ones first), then close with the code.
    Close(u16, &'static str),
}

async fn serve_client(
    mut sink: Sink,
    mut stream: Stream,
    client_id: String,
    device: DeviceInfo,
    admitted: Admitted,
    direct: bool,
    s: Arc<Shared>,
) {
    let info = ClientInfo {
        client_id: client_id.clone(),
        device,
    };
    let hub = &s.hub;
    let mut others = hub.clients().infos();
    others.push(info.clone());
    let ok = ServerMsg::AuthOk {
        client_id: client_id.clone(),
        server_mode: "cli".into(),
        server_version: VERSION.into(),
        latest_version: None,
        server_commit: COMMIT.into(),
        cwd: s.cwd.clone(),
        connected_clients: others,
        encryption: "disabled".into(),
        protocol_version: PROTOCOL_VERSION,
        min_protocol_version: PROTOCOL_VERSION,
        max_protocol_version: PROTOCOL_VERSION,
        device_id: admitted.device_id,
        device_key: admitted.new_key.map(|k| Token(k.expose().to_owned())),
    };
    if sink.send(text(&ok)).await.is_err() {
        return;
    }
    // Only a connection straight to the private port may be the supervisor's probe: a
    // token holder through the public port who says so is still listed to every phone.
    let probe =
        direct && info.device.device_type.as_deref() == Some(crate::control::PROBE_DEVICE_TYPE);
    if probe {
        tracing::debug!("health probe connected");
    } else {
        tracing::info!(device = ?info.device.device_name, "client connected");
    }

    let (tx, rx) = queue(s.cfg.client_queue.max(16), s.cfg.client_queue_bytes);
    let kick = CancellationToken::new();
    if probe {
        hub.clients().register_probe(info, tx.clone(), kick.clone());
    } else {
        hub.clients()
            .register(info.clone(), tx.clone(), kick.clone());
        hub.clients().publish(
            Audience::AllExcept(&client_id),
            &ServerMsg::ClientJoined { client: info },
        );
        hub.welcome(&client_id).await;
    }

    let pong_seen = Arc::new(AtomicBool::new(true));
    let (end_tx, end_rx) = tokio::sync::watch::channel(None::<Ending>);
    let writer = tokio::spawn(
        write_loop(
            sink,
            rx,
            kick.clone(),
            end_rx,
            pong_seen.clone(),
            s.cfg.ws_ping(),
            s.cfg.write_timeout(),
        )
        .in_current_span(),
    );

    let ending = read_loop(&mut stream, &client_id, &tx, &kick, &pong_seen, &s).await;
    let _ = end_tx.send(Some(ending));
    let _ = writer.await;

    hub.clients().unregister(&client_id);
    if !probe {
        hub.clients().publish(
            Audience::All,
            &ServerMsg::ClientLeft {
                client_id: client_id.clone(),
            },
        );
        tracing::info!("client disconnected");
    }
}

async fn read_loop(
    stream: &mut Stream,
    client_id: &String,
    tx: &QueueTx,
    kick: &CancellationToken,
    pong_seen: &AtomicBool,
    s: &Shared,
) -> Ending {
    let quota = |per_minute: u32, burst: u32| {
        let per_minute = NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(burst.max(1)).unwrap_or(NonZeroU32::MIN);
        Quota::per_minute(per_minute).allow_burst(burst)
    };
    let normal: DefaultDirectRateLimiter =
        RateLimiter::direct(quota(s.cfg.messages_per_minute, s.cfg.message_burst));
    // Answers, interrupts and pings have a budget of their own (docs/protocol.md "Limits").
    let priority: DefaultDirectRateLimiter =
        RateLimiter::direct(quota(s.cfg.messages_per_minute, s.cfg.message_burst));
    let mut bad_frames: VecDeque<Instant> = VecDeque::new();
    let mut reconnects = s.signals.reconnects();
    reconnects.mark_unchanged();
    let reply = |msg: &ServerMsg| {
        if tx.try_send(Outbound::Frame(frame(msg))).is_err() {
            kick.cancel();
        }
    };
    loop {
        let msg = tokio::select! {
            _ = s.stop.cancelled() => {
                let (reason, restart_eta_ms) = s.signals.shutdown_notice();
                reply(&ServerMsg::ServerShutdown { reason, restart_eta_ms });
                return Ending::Close(close::GOING_AWAY, "server shutting down");
            }
            // The signals outlive every connection, so this never reports closed.
            Ok(()) = reconnects.changed() => {
                let restart_eta_ms = *reconnects.borrow_and_update();
                reply(&ServerMsg::ServerShutdown { reason: ShutdownReason::Restart, restart_eta_ms });
                return Ending::Close(close::SERVICE_RESTART, "reconnect now");
            }
            _ = kick.cancelled() => return Ending::Close(close::TRY_AGAIN_LATER, "client too slow"),
            msg = stream.next() => msg,
        };
        let frame_error = match msg {
            Some(Ok(Message::Text(t))) => match parse_client_frame(t.as_str()) {
                Ok(msg) => {
                    let limiter = if msg.is_priority() {
                        &priority
                    } else {
                        &normal
                    };
                    if let Err(not_until) = limiter.check() {
                        let wait = not_until.wait_time_from(governor::clock::Clock::now(
                            &governor::clock::DefaultClock::default(),
                        ));
                        reply(&ServerMsg::RateLimited {
                            retry_after_ms: wait.as_millis().max(1) as u64,
                            message: format!(
                                "more than {} messages per minute; this message was dropped",
                                s.cfg.messages_per_minute
                            ),
                        });
                        continue;
                    }
                    tracing::debug!(?msg, "request");
                    s.hub.handle(client_id, msg).await;
                    continue;
                }
                Err(err) => err,
            },
            Some(Ok(Message::Binary(_))) => crate::protocol::FrameError {
                code: crate::protocol::ErrorCode::InvalidMessage,
                message: "binary frames are not supported; send JSON text frames".into(),
                request_id: None,
                counts_as_bad_frame: true,
            },
            Some(Ok(Message::Pong(_))) => {
                pong_seen.store(true, Ordering::Relaxed);
                continue;
            }
            Some(Ok(Message::Ping(_))) => continue, // the WebSocket layer answers it
            Some(Ok(Message::Close(_))) | None => return Ending::Gone,
            Some(Err(err)) => {
                tracing::debug!(%err, "websocket read failed");
                return if too_big(err) {
                    Ending::Close(close::MESSAGE_TOO_BIG, "frame too large")
                } else {
                    Ending::Gone
                };
            }
        };
        // The client's mistake, not the release's: it never counts toward the canary.
        tracing::debug!(code = ?frame_error.code, message = %frame_error.message, "refused frame");
        reply(&ServerMsg::Error {
            code: frame_error.code,
            message: frame_error.message,
            request_id: frame_error.request_id,
        });
        if frame_error.counts_as_bad_frame {
            let now = Instant::now();
            bad_frames.push_back(now);
            while bad_frames
                .front()
                .is_some_and(|t| now.duration_since(*t) > Duration::from_secs(60))
            {
                bad_frames.pop_front();
            }
            if bad_frames.len() >= BAD_FRAMES_PER_MINUTE {
                tracing::warn!("too many invalid frames; closing (1008)");
                return Ending::Close(close::POLICY, "too many invalid frames");
            }
        }
    }
}

/// Every write has a deadline: a peer that stops reading fills its socket buffer, and a
/// write to it would wait forever, holding the socket and the queue behind it. Past
/// `write_timeout` the connection is simply dropped.
async fn write_loop(
    mut sink: Sink,
    mut rx: QueueRx,
    kick: CancellationToken,
    mut end: tokio::sync::watch::Receiver<Option<Ending>>,
    pong_seen: Arc<AtomicBool>,
    ping_every: Duration,
    write_timeout: Duration,
) {
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    let t = write_timeout;
    loop {
        tokio::select! {
            out = rx.recv() => {
                let Some(out) = out else { break };
                if timed(t, send_out(&mut sink, out)).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                // docs/protocol.md "Keepalive": a peer that did not answer the last ping is gone.
                if !pong_seen.swap(false, Ordering::Relaxed) {
                    tracing::info!("no pong since the last ping; dropping the client");
                    let _ = timed(t, send_msg(&mut sink, close_msg(close::GOING_AWAY, "keepalive timeout"))).await;
                    return;
                }
                if timed(t, send_msg(&mut sink, Message::Ping(Default::default()))).await.is_err() {
                    return;
                }
            }
            _ = kick.cancelled() => {
                let _ = timed(t, send_msg(&mut sink, close_msg(close::TRY_AGAIN_LATER, "client too slow"))).await;
                return;
            }
            changed = end.changed() => {
                let ending = if changed.is_ok() { end.borrow().clone() } else { Some(Ending::Gone) };
                if let Some(Ending::Close(code, reason)) = ending {
                    // Whatever was queued before the decision (e.g. the error that caused
                    // it) goes out first.
                    while let Some(out) = rx.try_recv() {
                        if timed(t, send_out(&mut sink, out)).await.is_err() {
                            return;
                        }
                    }
                    let _ = timed(t, send_msg(&mut sink, close_msg(code, reason))).await;
                }
                break;
            }
        }
    }
    let _ = timed(t, async { sink.close().await.map_err(|_| WriteFailed) }).await;
}

/// The WebSocket layer refused a frame past its limit (twice the protocol's): the peer
/// is told why (1009) rather than just cut off.
fn too_big(err: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    err.into_inner()
        .downcast::<Error>()
        .is_ok_and(|e| matches!(*e, Error::Capacity(_)))
}

/// A write failed or timed out; the connection is done.
struct WriteFailed;

async fn timed(
    deadline: Duration,
    write: impl std::future::Future<Output = Result<(), WriteFailed>>,
) -> Result<(), WriteFailed> {
    match tokio::time::timeout(deadline, write).await {
        Ok(result) => result,
        Err(_) => {
            tracing::info!("the client stopped reading; dropping it");
            Err(WriteFailed)
        }
    }
}

async fn send_msg(sink: &mut Sink, msg: Message) -> Result<(), WriteFailed> {
    sink.send(msg).await.map_err(|_| WriteFailed)
}

async fn send_out(sink: &mut Sink, out: Outbound) -> Result<(), WriteFailed> {
    let sent = match out {
        Outbound::Frame(f) => sink.send(Message::Text(Utf8Bytes::from(&*f))).await,
        Outbound::Batch(frames) => {
            let mut fed = Ok(());
            for f in frames {
                fed = sink.feed(Message::Text(Utf8Bytes::from(&*f))).await;
                if fed.is_err() {
                    break;
                }
            }
            match fed {
                Ok(()) => sink.flush().await,
                err => err,
            }
        }
    };
    sent.map_err(|_| WriteFailed)
}
