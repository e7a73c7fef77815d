//! Hostile sockets for the flood test and the system bench's flood row: what a flood of
//! the public port is made of.

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

/// The four kinds of hostile socket.
#[derive(Debug, Clone, Copy)]
pub enum Kind {
    /// TCP connected, nothing sent.
    HalfOpen,
    /// Upgraded to a WebSocket, never authenticates.
    NoAuth,
    /// Upgraded, then an `auth` frame's first bytes and nothing more.
    SlowAuth,
    /// Upgraded, authenticates with a wrong token.
    WrongToken,
}

impl Kind {
    /// Every kind, for taking them in turn.
    pub const ALL: [Kind; 4] = [
        Kind::HalfOpen,
        Kind::NoAuth,
        Kind::SlowAuth,
        Kind::WrongToken,
    ];
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\n\r\n";

/// A client's (masked, as RFC 6455 requires) text frame.
fn masked_text(payload: &str) -> Vec<u8> {
    let mask = [0x11u8, 0x22, 0x33, 0x44];
    let mut frame = vec![0x81];
    let len = payload.len();
    if len < 126 {
        frame.push(0x80 | len as u8);
    } else {
        frame.push(0x80 | 126);
        frame.extend_from_slice(&(len as u16).to_be_bytes());
    }
    frame.extend_from_slice(&mask);
    frame.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

/// One hostile socket from `from` (another loopback address than the owner's, as a
/// flood from elsewhere arrives); `None` when the supervisor turned it away.
pub async fn hostile(public: SocketAddr, from: std::net::IpAddr, kind: Kind) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::new(from, 0)).ok()?;
    let mut s = tokio::time::timeout(Duration::from_secs(5), socket.connect(public))
        .await
        .ok()?
        .ok()?;
    let wrong = masked_text(&json!({"type": "auth", "token": "wrong"}).to_string());
    let sent = match kind {
        Kind::HalfOpen => Ok(()),
        Kind::NoAuth => s.write_all(UPGRADE.as_bytes()).await,
        Kind::SlowAuth => {
            let mut bytes = UPGRADE.as_bytes().to_vec();
            bytes.extend_from_slice(&wrong[..4]);
            s.write_all(&bytes).await
        }
        Kind::WrongToken => {
            let mut bytes = UPGRADE.as_bytes().to_vec();
            bytes.extend_from_slice(&wrong);
            s.write_all(&bytes).await
        }
    };
    sent.ok().map(|()| s)
}

/// `n` loopback addresses other than the owner's 127.0.0.1 (127.0.1.1, 127.0.1.2, …):
/// a flood from many places, as one from elsewhere arrives.
pub fn addresses(n: u8) -> Vec<std::net::IpAddr> {
    (1..=n)
        .map(|i| std::net::IpAddr::from([127, 0, 1, i]))
        .collect()
}

/// Opens `n` hostile sockets, every kind in turn and spread over `from`, all at once;
/// returns those the public port let in (to hold them open).
pub async fn open_all(public: SocketAddr, from: Vec<std::net::IpAddr>, n: usize) -> Vec<TcpStream> {
    let mut opening = tokio::task::JoinSet::new();
    for i in 0..n {
        let kind = Kind::ALL[i % Kind::ALL.len()];
        opening.spawn(hostile(public, from[i % from.len()], kind));
    }
    let mut held = Vec::with_capacity(n);
    while let Some(socket) = opening.join_next().await {
        held.extend(socket.ok().flatten());
    }
    held
}
