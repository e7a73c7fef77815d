//! The public port. Phones (and the tunnel) always connect here, so their address never
//! changes when the worker restarts or a new release takes over. Each connection is
//! spliced byte for byte to the worker routed at the moment it arrives; while none is,
//! the supervisor itself answers "restarting" with a `Retry-After`, so a phone knows to
//! wait rather than give up.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::status::StateName;

/// Where new connections go: the healthy worker's private port, or nobody.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// The routed worker's port on 127.0.0.1.
    pub port: Option<u16>,
    /// The supervisor's state, for the "restarting" answer.
    pub state: StateName,
    /// Seconds a client should wait before retrying while nobody is routed.
    pub retry_after_secs: u64,
}

/// A request head larger than this is not worth reading to say "restarting".
const MAX_HEAD: usize = 8 * 1024;
/// A client that sends no request head in this time is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Accepts on `listener` until `stop` is cancelled; spliced connections live on in
/// `tracker` (they end when their worker goes away).
pub async fn serve(
    listener: TcpListener,
    route: watch::Receiver<Route>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: don't spin.
                    tracing::warn!(%err, "public port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let route = *route.borrow();
        tracker.spawn(async move {
            if let Err(err) = handle(stream, route).await {
                tracing::debug!(%peer, %err, "public connection ended with an error");
            }
        });
    }
}

async fn handle(mut client: TcpStream, route: Route) -> std::io::Result<()> {
    if let Some(port) = route.port {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut worker) => {
                let _ = worker.set_nodelay(true);
                tokio::io::copy_bidirectional(&mut client, &mut worker).await?;
                return Ok(());
            }
            // Died between routing and now: the runner will notice; meanwhile say so.
            Err(err) => tracing::debug!(port, %err, "routed worker refused a connection"),
        }
    }
    answer_restarting(client, route).await
}

/// Reads the request head and answers 503 in the form the client expects.
async fn answer_restarting(mut client: TcpStream, route: Route) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = client.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    if tokio::time::timeout(HEAD_TIMEOUT, read_head).await.is_err() {
        return Ok(());
    }
    let response = restarting_response(&head, route);
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// The whole HTTP/1.1 response for a request head while no worker serves.
pub fn restarting_response(head: &[u8], route: Route) -> String {
    let text = String::from_utf8_lossy(head);
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .unwrap_or("/");
    let upgrade = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("upgrade:") && l.contains("websocket")
    });
    let state = serde_json::to_value(route.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default();
    let (content_type, body) = if path == "/health" || path.starts_with("/health?") {
        (
            "application/json",
            serde_json::json!({"status": "restarting", "state": state}).to_string(),
        )
    } else if upgrade {
        (
            "text/plain; charset=utf-8",
            format!(
                "Chroxy is restarting ({state}); retry in {} s\n",
                route.retry_after_secs
            ),
        )
    } else {
        (
            "text/html; charset=utf-8",
            format!(
                "<!doctype html><meta charset=utf-8><meta name=viewport content=\"width=device-width\">\
                 <meta http-equiv=refresh content=\"{}\"><title>Chroxy is restarting</title>\
                 <p>Chroxy is restarting ({state}). This page reloads by itself.</p>\n",
                route.retry_after_secs.max(1)
            ),
        )
    };
    format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Retry-After: {}\r\nCache-Control: no-store\r\nConnection: close\r\n\r\n{body}",
        body.len(),
        route.retry_after_secs.max(1)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route() -> Route {
        Route {
            port: None,
            state: StateName::Restarting,
            retry_after_secs: 2,
        }
    }

    #[test]
    fn health_gets_json_503() {
        let r = restarting_response(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", route());
        assert!(r.starts_with("HTTP/1.1 503 "), "{r}");
        assert!(r.contains("Retry-After: 2\r\n"));
        let body = r.split("\r\n\r\n").nth(1).unwrap();
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(v["status"], "restarting");
        assert_eq!(v["state"], "restarting");
    }

    #[test]
    fn websocket_upgrades_get_503_with_retry_after_and_pages_a_reloading_page() {
        let r = restarting_response(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: WebSocket\r\nConnection: Upgrade\r\n\r\n",
            route(),
        );
        assert!(r.starts_with("HTTP/1.1 503 ") && r.contains("Retry-After: 2\r\n"));
        assert!(r.contains("text/plain"));
        let r = restarting_response(b"GET / HTTP/1.1\r\n\r\n", route());
        assert!(r.contains("text/html") && r.contains("http-equiv=refresh"));
        let r = restarting_response(b"\xff\xfe garbage", route());
        assert!(
            r.starts_with("HTTP/1.1 503 "),
            "garbage still gets an answer"
        );
    }
}
