//! One WebSocket connection: auth (a token, or protocol v2's handshake and sealed
//! `auth`), then a read loop feeding the hub while a writer task drains the client's
//! bounded queue onto the socket, sealing each frame on a v2 connection (or in the
//! `encrypted` envelope of Chroxy's own clients).

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

use super::admit::{admit, Admitted, Presented, Refusal};
use super::auth::Verdict;
use super::revocation::{self, REVOKED};
use super::routes::{Client, Unauthenticated};
use super::{Shared, COMMIT, VERSION};
use crate::channel;
use crate::envelope;
use crate::protocol::{
    parse_client_frame, AuthFailReason, ClientInfo, ClientMsg, DeviceInfo, SealedAuth, ServerMsg,
    ShutdownReason, Token, PROTOCOL_V2, PROTOCOL_VERSION,
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
    let (sink, mut stream) = socket.split();
    let mut out = Out { sink, seal: None };
    let addr = client.addr;
    let Some(authed) = authenticate(&mut out, &mut stream, client, pending, &s).await else {
        return;
    };
    let client_id = new_id("c");
    let span = tracing::info_span!("client", client = %client_id, %addr);
    serve_client(out, stream, client_id, authed, client.direct, s)
        .instrument(span)
        .await;
}

/// How a connection's frames are sealed: by protocol v2's channel (binary frames), or
/// in the `encrypted` envelope of Chroxy's own clients (text frames).
enum Seal {
    Channel(channel::Sealer),
    Envelope(envelope::Sealer),
}

/// The reading half of [`Seal`].
enum Open {
    Channel(channel::Opener),
    Envelope(envelope::Opener),
}

/// Where a connection writes: plain text frames (v1), or sealed ones. Control frames
/// (ping, close) are never sealed: they carry nothing of the conversation.
struct Out {
    sink: Sink,
    seal: Option<Seal>,
}

impl Out {
    fn frame(&mut self, text: &str) -> Result<Message, WriteFailed> {
        Ok(match &mut self.seal {
            None => Message::Text(Utf8Bytes::from(text)),
            Some(Seal::Channel(sealer)) => {
                Message::Binary(sealer.seal(text).map_err(|_| WriteFailed)?.into())
            }
            Some(Seal::Envelope(sealer)) => {
                Message::Text(sealer.seal(text).map_err(|_| WriteFailed)?.into())
            }
        })
    }

    async fn send_text(&mut self, text: &str) -> Result<(), WriteFailed> {
        let frame = self.frame(text)?;
        send_frame(&mut self.sink, frame).await
    }

    async fn send_msg(&mut self, msg: &ServerMsg) -> Result<(), WriteFailed> {
        self.send_text(&msg.to_json()).await
    }

    async fn close(&mut self, code: u16, reason: &str) {
        let _ = self.sink.send(close_msg(code, reason)).await;
    }
}

/// A connection let in: who it is, and its reading half when it is sealed.
struct Authed {
    device: DeviceInfo,
    admitted: Admitted,
    opener: Option<Open>,
    /// A Chroxy client's envelope: `auth_ok` goes out in the clear with the worker's
    /// key, everything after it sealed.
    envelope: Option<(String, envelope::Sealer)>,
}

/// What arrived before authentication, once the deadline, the stop and control
/// frames are dealt with. `None`: the connection is over.
async fn next_frame(
    out: &mut Out,
    stream: &mut Stream,
    deadline: &mut std::pin::Pin<&mut tokio::time::Sleep>,
    s: &Shared,
) -> Option<Message> {
    loop {
        let msg = tokio::select! {
            _ = deadline.as_mut() => {
                refuse(out, AuthFailReason::Timeout, close::AUTH).await;
                return None;
            }
            _ = s.stop.cancelled() => return None,
            msg = stream.next() => msg,
        };
        match msg {
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(Message::Close(_))) | None => return None,
            Some(Err(err)) => {
                if too_big(err) {
                    out.close(close::MESSAGE_TOO_BIG, "frame too large").await;
                }
                return None;
            }
            Some(Ok(frame)) => return Some(frame),
        }
    }
}

/// Waits for `auth` within the deadline: a text `auth` with the token (v1) or a
/// binary Noise handshake (v2) then the sealed `auth`; then asks the device registry.
/// `None`: the connection was refused and closed.
/// `pending` is this connection's place among those still to authenticate: given back
/// as soon as the outcome is known, before a wrong token waits out its delay.
async fn authenticate(
    out: &mut Out,
    stream: &mut Stream,
    client: Client,
    pending: Unauthenticated,
    s: &Shared,
) -> Option<Authed> {
    let addr = client.addr;
    let deadline = tokio::time::sleep(s.cfg.auth_timeout());
    tokio::pin!(deadline);
    let frame = next_frame(out, stream, &mut deadline, s).await?;
    let text = match frame {
        Message::Text(t) => t,
        Message::Binary(hello) => {
            return handshake(out, stream, &hello, client, pending, &mut deadline, s).await;
        }
        _ => return None,
    };
    let auth = match parse_client_frame(text.as_str()) {
        Ok(ClientMsg::Auth(auth)) => auth,
        // Anything else first — even a malformed frame — is not authentication.
        Ok(_) | Err(_) => {
            refuse(out, AuthFailReason::NotAuthenticated, close::AUTH).await;
            return None;
        }
    };
    // The private port is the supervisor's probe's, which always speaks v1.
    if !client.direct && !s.allow_token_auth {
        drop(pending);
        let reason = AuthFailReason::TokenAuthDisabled;
        refuse_saying(out, reason, TOKEN_AUTH_DISABLED.into()).await;
        return None;
    }
    if !s.token.matches(&auth.token.0) {
        drop(pending);
        let limited = failed_attempt(s, addr, "wrong token").await;
        match limited {
            true => refuse(out, AuthFailReason::RateLimited, close::RATE_LIMITED).await,
            false => refuse(out, AuthFailReason::InvalidToken, close::AUTH).await,
        }
        return None;
    }
    // The supervisor's probe comes straight to this port from 127.0.0.1 every few
    // seconds: its success must not wipe the backoff of whoever else reaches the
    // public port from there.
    if !client.direct {
        s.auth.succeeded(addr);
    }
    let exchange = match (&auth.eager_public_key, &auth.eager_salt) {
        (Some(key), Some(salt)) => match envelope::accept(key, salt) {
            Ok(accepted) => Some(accepted),
            Err(err) => {
                drop(pending);
                refuse_saying(out, AuthFailReason::NotAuthenticated, err.to_string()).await;
                return None;
            }
        },
        // Only both together ask for the envelope (as the clients define it).
        _ => None,
    };
    let presented = Presented::token(&auth);
    let device = presented.device_info().clone();
    let admitted = admitted(out, admit(s, presented, client).await, pending, s, addr).await?;
    Some(match exchange {
        None => Authed {
            device,
            admitted,
            opener: None,
            envelope: None,
        },
        Some(accepted) => Authed {
            device,
            admitted,
            opener: Some(Open::Envelope(accepted.opener)),
            envelope: Some((accepted.server_public, accepted.sealer)),
        },
    })
}

/// Protocol v2: answers the handshake, then reads the sealed `auth` and asks the
/// registry. A handshake that does not verify is a failed attempt of the address, and
/// closes with 4002 without a word (there is no channel to say it in).
async fn handshake(
    out: &mut Out,
    stream: &mut Stream,
    hello: &[u8],
    client: Client,
    pending: Unauthenticated,
    deadline: &mut std::pin::Pin<&mut tokio::time::Sleep>,
    s: &Shared,
) -> Option<Authed> {
    let addr = client.addr;
    let accepted = match channel::accept(&s.identity, hello) {
        Ok(accepted) => accepted,
        Err(err) => {
            drop(pending);
            failed_attempt(s, addr, "handshake did not verify").await;
            tracing::debug!(%err, "refused handshake");
            out.close(channel::CLOSE_CODE, "handshake failed").await;
            return None;
        }
    };
    if send_frame(&mut out.sink, Message::Binary(accepted.reply.into()))
        .await
        .is_err()
    {
        return None;
    }
    out.seal = Some(Seal::Channel(accepted.sealer));
    let mut opener = accepted.opener;
    let sealed = match next_frame(out, stream, deadline, s).await? {
        Message::Binary(sealed) => opener.open(&sealed),
        _ => Err(channel::ChannelError::Broken(
            "a text frame inside the encrypted channel",
        )),
    };
    let auth = match sealed {
        Ok(text) => serde_json::from_str::<SealedAuth>(&text),
        Err(err) => {
            tracing::debug!(%err, "the sealed auth did not open");
            out.close(channel::CLOSE_CODE, "encrypted channel broken")
                .await;
            return None;
        }
    };
    let Ok(auth) = auth else {
        refuse(out, AuthFailReason::NotAuthenticated, close::AUTH).await;
        return None;
    };
    let presented = Presented::proven(&auth, &accepted.remote);
    let device = presented.device_info().clone();
    let admitted = admitted(out, admit(s, presented, client).await, pending, s, addr).await?;
    if !client.direct {
        s.auth.succeeded(addr);
    }
    Some(Authed {
        device,
        admitted,
        opener: Some(Open::Channel(opener)),
        envelope: None,
    })
}

/// Carries out the registry's answer: let in, or told why and closed.
async fn admitted(
    out: &mut Out,
    decided: Result<Admitted, Refusal>,
    pending: Unauthenticated,
    s: &Shared,
    addr: std::net::IpAddr,
) -> Option<Admitted> {
    let refusal = match decided {
        Ok(admitted) => return Some(admitted),
        Err(refusal) => refusal,
    };
    drop(pending);
    match refusal {
        Refusal::Told(msg) => {
            let _ = out.send_msg(&msg).await;
            out.close(close::AUTH, "device not approved").await;
        }
        Refusal::Stranger(msg) => {
            if failed_attempt(s, addr, "a key that is no device").await {
                refuse(out, AuthFailReason::RateLimited, close::RATE_LIMITED).await;
            } else {
                let _ = out.send_msg(&msg).await;
                out.close(close::AUTH, "device not paired").await;
            }
        }
        Refusal::Unavailable => {
            out.close(close::INTERNAL_ERROR, "device list unreadable; retry later")
                .await;
        }
    }
    None
}

/// What a v1 client hears while tokens are refused.
const TOKEN_AUTH_DISABLED: &str = "This computer accepts only paired phones that speak Chroxy's encrypted protocol (v2). Scan a fresh QR code on the computer with the phone's browser; for a client that cannot do v2, the owner can set `[security] allow_token_auth = true`.";

/// Counts a failed attempt of `addr` and waits out its backoff (docs/protocol.md
/// "Connecting" step 3); whether the address is over its limit instead.
async fn failed_attempt(s: &Shared, addr: std::net::IpAddr, what: &'static str) -> bool {
    match s.auth.failed(addr) {
        (Verdict::RateLimited, _) => {
            tracing::warn!(%addr, "too many authentication attempts in flight");
            true
        }
        (Verdict::DelayThenFail(delay), in_flight) => {
            tracing::warn!(%addr, delay_ms = delay.as_millis() as u64, "{what}");
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = s.stop.cancelled() => {}
            }
            drop(in_flight);
            false
        }
    }
}

/// Answers `auth_fail` and closes with `code`.
async fn refuse(out: &mut Out, reason: AuthFailReason, code: u16) {
    let _ = out.send_msg(&ServerMsg::auth_fail(reason)).await;
    out.close(code, "authentication failed").await;
}

/// Answers `auth_fail` with a message saying why and what to do, and closes with 4001.
async fn refuse_saying(out: &mut Out, reason: AuthFailReason, message: String) {
    let refused = ServerMsg::AuthFail {
        reason,
        message: Some(message),
        device_id: None,
        device_key: None,
    };
    let _ = out.send_msg(&refused).await;
    out.close(close::AUTH, "authentication failed").await;
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
    mut out: Out,
    mut stream: Stream,
    client_id: String,
    authed: Authed,
    direct: bool,
    s: Arc<Shared>,
) {
    let Authed {
        device,
        admitted,
        mut opener,
        envelope,
    } = authed;
    let (encryption, protocol_version) = match (&opener, &envelope) {
        (Some(Open::Channel(_)), _) => ("noise", PROTOCOL_V2),
        (_, Some(_)) => ("required", PROTOCOL_VERSION),
        _ => ("disabled", PROTOCOL_VERSION),
    };
    let (server_public_key, envelope) = envelope.unzip();
    // After the registry let it in (and wrote so): a later reading must list it.
    let admitted_at = tokio::time::Instant::now();
    let device_id = admitted.device_id.clone();
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
        encryption: encryption.into(),
        protocol_version,
        min_protocol_version: PROTOCOL_VERSION,
        max_protocol_version: PROTOCOL_V2,
        device_id: admitted.device_id,
        device_key: admitted.new_key.map(|k| Token(k.expose().to_owned())),
        server_public_key,
        available_permission_modes: crate::protocol::PermissionModeInfo::all(),
    };
    if out.send_msg(&ok).await.is_err() {
        return;
    }
    if let Some(sealer) = envelope {
        out.seal = Some(Seal::Envelope(sealer));
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
            .register(info.clone(), device_id.clone(), tx.clone(), kick.clone());
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
            out,
            rx,
            kick.clone(),
            end_rx,
            pong_seen.clone(),
            s.cfg.ws_ping(),
            s.cfg.write_timeout(),
        )
        .in_current_span(),
    );

    let mut approved = s.approved.clone();
    let revoked = revocation::revoked(&mut approved, device_id.as_deref(), admitted_at);
    let ending = read_loop(
        &mut stream,
        &mut opener,
        &client_id,
        &tx,
        &kick,
        &pong_seen,
        revoked,
        &s,
    )
    .await;
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

#[allow(clippy::too_many_arguments)]
async fn read_loop(
    stream: &mut Stream,
    opener: &mut Option<Open>,
    client_id: &String,
    tx: &QueueTx,
    kick: &CancellationToken,
    pong_seen: &AtomicBool,
    revoked: impl std::future::Future<Output = ()>,
    s: &Shared,
) -> Ending {
    let mut revoked = std::pin::pin!(revoked);
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
            () = &mut revoked => {
                tracing::info!("the device was revoked: closing its connection");
                reply(&ServerMsg::AuthFail {
                    reason: AuthFailReason::DeviceRefused,
                    message: Some(REVOKED.into()),
                    device_id: None,
                    device_key: None,
                });
                return Ending::Close(close::AUTH, "device revoked");
            }
            msg = stream.next() => msg,
        };
        let msg = match unseal(opener, msg) {
            Ok(msg) => msg,
            Err(err) => {
                tracing::info!(%err, "closing the connection ({})", channel::CLOSE_CODE);
                return Ending::Close(channel::CLOSE_CODE, "encrypted channel broken");
            }
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
                            // An input's id: the phone sends it again after the wait.
                            request_id: match &msg {
                                ClientMsg::Input(input) => input.client_message_id.clone(),
                                _ => None,
                            },
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

/// A frame as v1 reads it: a sealed frame opened to its text. A frame of the wrong
/// kind (text in v2's channel, binary in an envelope connection), or one that does not
/// open, breaks the connection: what broke, for the log.
fn unseal(
    opener: &mut Option<Open>,
    msg: Option<Result<Message, axum::Error>>,
) -> Result<Option<Result<Message, axum::Error>>, String> {
    let text = match (opener, msg) {
        (None, msg) => return Ok(msg),
        (Some(Open::Channel(opener)), Some(Ok(Message::Binary(sealed)))) => {
            opener.open(&sealed).map_err(|e| e.to_string())?
        }
        (Some(Open::Envelope(opener)), Some(Ok(Message::Text(sealed)))) => {
            opener.open(sealed.as_str()).map_err(|e| e.to_string())?
        }
        (Some(_), Some(Ok(Message::Text(_) | Message::Binary(_)))) => {
            return Err("a frame of the wrong kind inside the encrypted connection".into());
        }
        (Some(_), other) => return Ok(other),
    };
    Ok(Some(Ok(Message::Text(Utf8Bytes::from(text)))))
}

/// Every write has a deadline: a peer that stops reading fills its socket buffer, and a
/// write to it would wait forever, holding the socket and the queue behind it. Past
/// `write_timeout` the connection is simply dropped.
async fn write_loop(
    mut out: Out,
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
            out_msg = rx.recv() => {
                let Some(queued) = out_msg else { break };
                if timed(t, send_out(&mut out, queued)).await.is_err() {
                    return;
                }
            }
            _ = ping.tick() => {
                // docs/protocol.md "Keepalive": a peer that did not answer the last ping is gone.
                if !pong_seen.swap(false, Ordering::Relaxed) {
                    tracing::info!("no pong since the last ping; dropping the client");
                    let _ = timed(t, send_frame(&mut out.sink, close_msg(close::GOING_AWAY, "keepalive timeout"))).await;
                    return;
                }
                if timed(t, send_frame(&mut out.sink, Message::Ping(Default::default()))).await.is_err() {
                    return;
                }
            }
            _ = kick.cancelled() => {
                let _ = timed(t, send_frame(&mut out.sink, close_msg(close::TRY_AGAIN_LATER, "client too slow"))).await;
                return;
            }
            changed = end.changed() => {
                let ending = if changed.is_ok() { end.borrow().clone() } else { Some(Ending::Gone) };
                if let Some(Ending::Close(code, reason)) = ending {
                    // Whatever was queued before the decision (e.g. the error that caused
                    // it) goes out first.
                    while let Some(queued) = rx.try_recv() {
                        if timed(t, send_out(&mut out, queued)).await.is_err() {
                            return;
                        }
                    }
                    let _ = timed(t, send_frame(&mut out.sink, close_msg(code, reason))).await;
                }
                break;
            }
        }
    }
    let _ = timed(t, async { out.sink.close().await.map_err(|_| WriteFailed) }).await;
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

async fn send_frame(sink: &mut Sink, msg: Message) -> Result<(), WriteFailed> {
    sink.send(msg).await.map_err(|_| WriteFailed)
}

async fn send_out(out: &mut Out, queued: Outbound) -> Result<(), WriteFailed> {
    match queued {
        Outbound::Frame(f) => out.send_text(&f).await,
        Outbound::Batch(frames) => {
            for f in frames {
                let frame = out.frame(&f)?;
                out.sink.feed(frame).await.map_err(|_| WriteFailed)?;
            }
            out.sink.flush().await.map_err(|_| WriteFailed)
        }
    }
}
