//! The byte splice between a client and the worker. It copies both ways untouched and
//! watches for two things only: the worker's `auth_ok` (the first frame after the
//! upgrade), which proves the connection so it keeps its place in the table; and, until
//! then, how much the client sends — an `auth` frame is a few hundred bytes, so
//! megabytes before authenticating are a flood, cut here before the worker buffers them.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::admission::{Progress, Ticket};

/// Once one direction has ended, the other gets this long to finish.
const LINGER: Duration = Duration::from_secs(10);
/// A write that takes longer is to a peer that stopped reading: the splice ends, and its
/// place and sockets are freed (the worker drops a phone that stops reading after its
/// own `write_timeout_ms`; the splice must not keep it either).
const WRITE_DEADLINE: Duration = Duration::from_secs(30);

async fn write_all(to: &mut tokio::net::tcp::OwnedWriteHalf, bytes: &[u8]) -> std::io::Result<()> {
    tokio::time::timeout(WRITE_DEADLINE, to.write_all(bytes))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "peer stopped reading"))?
}
/// The worker's answer is inspected this far at most.
const MAX_INSPECT: usize = 16 * 1024;

/// What the splice does besides copying.
#[derive(Debug, Clone, Copy)]
pub struct Watch {
    /// A WebSocket upgrade: look for `auth_ok`.
    pub upgrade: bool,
    /// Bytes a client may send after its request head before it is proven.
    pub preauth_bytes: usize,
}

enum Flow {
    Done,
    /// The client sent too much without authenticating.
    Cut,
}

/// Copies until both directions end (or one ends and the other lingers too long, or
/// the ticket is evicted, or the client sends too much unproven). `first` (the
/// forwarded head and what followed it) was sent to the worker already.
pub async fn run(
    client: TcpStream,
    worker: TcpStream,
    first: &[u8],
    ticket: &Ticket,
    watch: Watch,
    head_len: usize,
) -> std::io::Result<()> {
    let proven = AtomicBool::new(false);
    let (mut client_rx, mut client_tx) = client.into_split();
    let (mut worker_rx, mut worker_tx) = worker.into_split();

    let up = async {
        let mut sent = first.len().saturating_sub(head_len);
        if sent > watch.preauth_bytes {
            return Ok::<_, std::io::Error>(Flow::Cut);
        }
        // What the client sent after its upgrade request, until it is a whole frame
        // (bounded by the budget above): a phone's `auth` moves it up the table.
        let mut early = first.get(head_len..).unwrap_or_default().to_vec();
        let mut framed = !watch.upgrade;
        if !framed && first_frame_complete(&early) {
            ticket.progress(Progress::Authenticating);
            framed = true;
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = client_rx.read(&mut buf).await?;
            if n == 0 {
                worker_tx.shutdown().await?;
                return Ok(Flow::Done);
            }
            if !proven.load(Ordering::Relaxed) {
                sent += n;
                if sent > watch.preauth_bytes {
                    return Ok(Flow::Cut);
                }
            }
            if !framed {
                early.extend_from_slice(&buf[..n]);
                if first_frame_complete(&early) {
                    ticket.progress(Progress::Authenticating);
                    framed = true;
                    early = Vec::new();
                }
            }
            write_all(&mut worker_tx, &buf[..n]).await?;
        }
    };
    let down = async {
        let mut seen = Vec::new();
        let mut deciding = watch.upgrade;
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = worker_rx.read(&mut buf).await?;
            if n == 0 {
                client_tx.shutdown().await?;
                return Ok::<_, std::io::Error>(());
            }
            if deciding {
                seen.extend_from_slice(&buf[..n]);
                match authenticated(&seen) {
                    Some(true) => {
                        proven.store(true, Ordering::Relaxed);
                        ticket.prove();
                        deciding = false;
                    }
                    Some(false) => deciding = false,
                    None => deciding = seen.len() < MAX_INSPECT,
                }
                if !deciding {
                    seen = Vec::new();
                }
            }
            write_all(&mut client_tx, &buf[..n]).await?;
        }
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let linger = tokio::time::sleep(Duration::MAX);
    tokio::pin!(linger);
    let mut lingering = false;
    while !(up_done && down_done) {
        tokio::select! {
            _ = ticket.evicted.cancelled() => return Ok(()),
            flow = &mut up, if !up_done => match flow {
                Ok(Flow::Cut) => {
                    tracing::debug!("client sent too much before authenticating; cut");
                    return Ok(());
                }
                // The worker's side is gone or the client's ended: what the worker still
                // has to say (an auth_fail, a close code) gets the linger to arrive.
                Ok(Flow::Done) | Err(_) => up_done = true,
            },
            done = &mut down, if !down_done => {
                done?;
                down_done = true;
            }
            _ = &mut linger, if lingering => return Ok(()),
        }
        if !lingering && (up_done || down_done) {
            lingering = true;
            linger.as_mut().reset(tokio::time::Instant::now() + LINGER);
        }
    }
    Ok(())
}

/// Whether `bytes` (what a client sent after its upgrade request) hold a whole first
/// WebSocket frame: its header, mask key and every byte of payload the header announces.
fn first_frame_complete(bytes: &[u8]) -> bool {
    let Some(&b1) = bytes.get(1) else {
        return false;
    };
    let (len, at) = match b1 & 0x7f {
        126 => match bytes.get(2..4) {
            Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 4),
            None => return false,
        },
        127 => match bytes.get(2..10).and_then(|b| <[u8; 8]>::try_from(b).ok()) {
            Some(b) => (u64::from_be_bytes(b), 10),
            None => return false,
        },
        n => (u64::from(n), 2),
    };
    let mask = if b1 & 0x80 != 0 { 4 } else { 0 };
    (bytes.len() as u64).saturating_sub(at + mask) >= len
}

/// From the start of the worker's answer to an upgrade: `Some(true)` once its first
/// frame is `auth_ok`, `Some(false)` once it is anything else (or the upgrade was
/// refused), `None` while more bytes are needed.
fn authenticated(seen: &[u8]) -> Option<bool> {
    let end = seen.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    if !seen.starts_with(b"HTTP/1.1 101") {
        return Some(false);
    }
    let frame = &seen[end..];
    let (&b0, &b1) = (frame.first()?, frame.get(1)?);
    // A text frame from the server: never masked (RFC 6455 5.1).
    if b0 & 0x0f != 0x1 || b1 & 0x80 != 0 {
        return Some(false);
    }
    let payload_at = match b1 & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    const AUTH_OK: &[u8] = br#"{"type":"auth_ok""#;
    let payload = frame.get(payload_at..)?;
    if payload.len() < AUTH_OK.len() {
        return if AUTH_OK.starts_with(payload) {
            None
        } else {
            Some(false)
        };
    }
    Some(payload.starts_with(AUTH_OK))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(frame: &[u8]) -> Vec<u8> {
        let mut v = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".to_vec();
        v.extend_from_slice(frame);
        v
    }

    fn text_frame(payload: &str) -> Vec<u8> {
        let mut v = vec![0x81];
        if payload.len() < 126 {
            v.push(payload.len() as u8);
        } else {
            v.push(126);
            v.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        v.extend_from_slice(payload.as_bytes());
        v
    }

    #[test]
    fn a_first_frame_is_whole_only_with_every_byte_its_header_announces() {
        // A client's frame: masked, 5 bytes of payload.
        let frame = [0x81, 0x85, 1, 2, 3, 4, b'h', b'e', b'l', b'l', b'o'];
        for cut in 0..frame.len() {
            assert!(!first_frame_complete(&frame[..cut]), "at {cut}");
        }
        assert!(first_frame_complete(&frame));
        // 16-bit and 64-bit lengths.
        let mut long = vec![0x81, 0x80 | 126, 0x01, 0x00, 0, 0, 0, 0];
        long.extend(std::iter::repeat_n(b'x', 255));
        assert!(!first_frame_complete(&long));
        long.push(b'x');
        assert!(first_frame_complete(&long));
        let huge = [
            0x81,
            0x80 | 127,
            0,
            0,
            0,
            0,
            0xff,
            0xff,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ];
        assert!(!first_frame_complete(&huge));
    }

    #[test]
    fn only_the_workers_auth_ok_proves_a_connection() {
        let ok = format!(
            r#"{{"type":"auth_ok","clientId":"c-1","cwd":"{}"}}"#,
            "x".repeat(200)
        );
        let full = answer(&text_frame(&ok));
        assert_eq!(authenticated(&full), Some(true));
        // Byte by byte it waits, then decides the same.
        for cut in 0..full.len() - 1 {
            let got = authenticated(&full[..cut]);
            assert!(got.is_none() || got == Some(true), "at {cut}: {got:?}");
        }
        assert_eq!(
            authenticated(&answer(&text_frame(
                r#"{"type":"auth_fail","reason":"invalid_token"}"#
            ))),
            Some(false)
        );
        assert_eq!(
            authenticated(b"HTTP/1.1 503 Service Unavailable\r\n\r\n"),
            Some(false)
        );
        // A masked or binary frame is not the worker's auth_ok.
        let mut masked = text_frame(r#"{"type":"auth_ok"}"#);
        masked[1] |= 0x80;
        assert_eq!(authenticated(&answer(&masked)), Some(false));
        let mut binary = text_frame(r#"{"type":"auth_ok"}"#);
        binary[0] = 0x82;
        assert_eq!(authenticated(&answer(&binary)), Some(false));
    }
}
