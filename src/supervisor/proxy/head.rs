//! The one piece of a forwarded request the public port reads: its head. Reading it
//! lets the supervisor answer "restarting" in the form the client expects, drop a
//! client that never sends one, and say who the client is in a header the worker can
//! trust ([`crate::forwarded`]), with every copy the client forged removed. Everything
//! after the head is spliced untouched.

use std::time::Duration;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use crate::forwarded::CLIENT_HEADER;

/// A request head larger than this is not a phone's.
pub const MAX_HEAD: usize = 8 * 1024;

/// A request head, and whatever the client sent after it in the same reads.
#[derive(Debug)]
pub struct Head {
    /// The head, up to and including the blank line (or everything read, if cut short).
    pub head: Vec<u8>,
    /// Bytes that followed the head (a WebSocket frame sent eagerly, say).
    pub rest: Vec<u8>,
}

/// Reads a head within `timeout`. `None`: the client sent none in time (or closed, or
/// sent more than [`MAX_HEAD`] without finishing one).
pub async fn read(client: &mut TcpStream, timeout: Duration) -> Option<Head> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let reading = async {
        loop {
            if let Some(end) = find_end(&buf) {
                let rest = buf.split_off(end);
                return Some(Head { head: buf, rest });
            }
            if buf.len() >= MAX_HEAD {
                return None;
            }
            match client.read(&mut chunk).await {
                Ok(0) | Err(_) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(timeout, reading).await.ok().flatten()
}

fn find_end(buf: &[u8]) -> Option<usize> {
    buf.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|at| at + 4)
}

impl Head {
    fn text(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.head)
    }

    /// A head the worker's parser reads exactly as this module does: lines end in CRLF
    /// only, no NUL, no folded lines. A bare LF would let a client end the head early in
    /// the worker's eyes, before the supervisor's header, or slip a header in first.
    pub fn is_clean(&self) -> bool {
        let body = &self.head[..self.head.len().saturating_sub(4)];
        !body.contains(&0)
            && body
                .iter()
                .enumerate()
                .all(|(i, &b)| b != b'\n' || (i > 0 && body[i - 1] == b'\r'))
            && !body
                .windows(3)
                .any(|w| w[0] == b'\r' && w[1] == b'\n' && (w[2] == b' ' || w[2] == b'\t'))
    }

    /// The value of header `name` (the first one), trimmed.
    pub fn header(&self, name: &str) -> Option<String> {
        self.text().split("\r\n").skip(1).find_map(|l| {
            let (n, v) = l.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_owned())
        })
    }

    /// A WebSocket upgrade.
    pub fn is_upgrade(&self) -> bool {
        self.text().split("\r\n").skip(1).any(|l| {
            let l = l.to_ascii_lowercase();
            l.starts_with("upgrade:") && l.contains("websocket")
        })
    }

    /// A request the worker answers from its head alone, having done nothing before
    /// its answer starts: a GET or HEAD without a body (a WebSocket upgrade is a GET,
    /// and its frames only follow the `101`). One whose worker closed without answering
    /// may be sent to another.
    pub fn is_replayable(&self) -> bool {
        let method = self.text().split(' ').next().unwrap_or_default().to_owned();
        let bodiless = self.header("transfer-encoding").is_none()
            && self
                .header("content-length")
                .is_none_or(|n| n.parse() == Ok(0u64));
        matches!(method.as_str(), "GET" | "HEAD") && bodiless
    }

    /// The head as the worker gets it: the client's [`CLIENT_HEADER`] lines removed and
    /// `client_header` (the signed one) added. A plain request also gets
    /// `Connection: close`: every later request on the connection would reach the
    /// worker without the supervisor's word on who sent it.
    pub fn forwarded(&self, client_header: &str) -> Vec<u8> {
        let upgrade = self.is_upgrade();
        let text = self.text();
        let body = text.strip_suffix("\r\n\r\n").unwrap_or(&text);
        let mut lines = body.split("\r\n");
        let mut out = String::with_capacity(self.head.len() + 128);
        out.push_str(lines.next().unwrap_or_default());
        out.push_str("\r\n");
        for line in lines {
            let name = line.split(':').next().unwrap_or_default().trim();
            let dropped = name.eq_ignore_ascii_case(CLIENT_HEADER)
                || (!upgrade && name.eq_ignore_ascii_case("connection"));
            if !dropped {
                out.push_str(line);
                out.push_str("\r\n");
            }
        }
        if !upgrade {
            out.push_str("Connection: close\r\n");
        }
        out.push_str(CLIENT_HEADER);
        out.push_str(": ");
        out.push_str(client_header);
        out.push_str("\r\n\r\n");
        let mut bytes = out.into_bytes();
        bytes.extend_from_slice(&self.rest);
        bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Head {
        let end = find_end(raw.as_bytes()).unwrap();
        Head {
            head: raw.as_bytes()[..end].to_vec(),
            rest: raw.as_bytes()[end..].to_vec(),
        }
    }

    #[test]
    fn a_forged_client_header_never_reaches_the_worker() {
        let h = head(
            "GET /ws HTTP/1.1\r\nHost: x\r\nX-Chroxy-Client: 1.2.3.4 abcd\r\nUpgrade: websocket\r\n\
             Connection: Upgrade\r\nx-chroxy-client : 5.6.7.8 ef\r\n\r\nFRAME",
        );
        assert!(h.is_upgrade());
        assert_eq!(h.header("HOST").as_deref(), Some("x"));
        assert_eq!(h.header("x-chroxy-client").as_deref(), Some("1.2.3.4 abcd"));
        assert_eq!(h.header("cf-connecting-ip"), None);
        let out = String::from_utf8(h.forwarded("127.0.0.1 sig")).unwrap();
        assert_eq!(
            out,
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             x-chroxy-client: 127.0.0.1 sig\r\n\r\nFRAME"
        );
    }

    #[test]
    fn heads_the_worker_would_read_differently_are_not_clean() {
        assert!(head("GET / HTTP/1.1\r\nHost: x\r\n\r\n").is_clean());
        for raw in [
            "GET / HTTP/1.1\r\nHost: x\nX-Chroxy-Client: junk\r\n\r\n",
            "GET /health HTTP/1.1\r\nHost: x\n\r\nX: y\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\0y\r\n\r\n",
        ] {
            assert!(!head(raw).is_clean(), "{raw:?}");
        }
    }

    #[test]
    fn a_plain_request_is_the_only_one_on_its_connection() {
        let h =
            head("GET /app.js?v=1 HTTP/1.1\r\nConnection: keep-alive\r\n\r\nGET /ws HTTP/1.1\r\n");
        assert!(!h.is_upgrade());
        let out = String::from_utf8(h.forwarded("127.0.0.1 sig")).unwrap();
        assert!(out.starts_with(
            "GET /app.js?v=1 HTTP/1.1\r\nConnection: close\r\nx-chroxy-client: 127.0.0.1 sig\r\n\r\n"
        ), "{out}");
    }

    #[test]
    fn only_requests_answered_from_their_head_alone_may_be_sent_to_another_worker() {
        for raw in [
            "GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nFRAME",
            "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            "HEAD / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
        ] {
            assert!(head(raw).is_replayable(), "{raw:?}");
        }
        for raw in [
            "POST /api/deploy HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 12\r\n\r\n",
            "GET / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: twelve\r\n\r\n",
            "get / HTTP/1.1\r\n\r\n",
            "POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 5\r\n\r\n",
        ] {
            assert!(!head(raw).is_replayable(), "{raw:?}");
        }
    }
}
