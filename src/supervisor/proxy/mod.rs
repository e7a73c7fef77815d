//! The public port. Phones (and the tunnel) always connect here, so their address never
//! changes when the worker restarts or a new release takes over. Each connection's
//! request head is read ([`head`]), signed with who the client is, and everything is
//! then spliced byte for byte to the worker routed at that moment ([`splice`]); while
//! none is, the supervisor itself answers "restarting" with a `Retry-After`, so a phone
//! knows to wait rather than give up. How many connections it holds, and how many of
//! them unauthenticated, is bounded ([`admission`]), so no flood can take the
//! supervisor's file descriptors, and with them its own health probes, from it.

mod admission;
mod head;
mod splice;
mod tunnel_peer;

pub use admission::Limits;

use admission::Progress;

use admission::Admission;

use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::status::{StateName, Status};
use crate::forwarded::Voucher;
use head::Head;

/// Where new connections go: the healthy worker's private port, or nobody.
#[derive(Debug, Clone)]
pub struct Route {
    /// The routed worker's port on 127.0.0.1.
    pub port: Option<u16>,
    /// Signs who each client is for the routed worker (keyed from its token).
    pub voucher: Option<Voucher>,
    /// The supervisor's state, for the "restarting" answer.
    pub state: StateName,
    /// Seconds a client should wait before retrying while nobody is routed.
    pub retry_after_secs: u64,
}

/// A client that sends no request head in this time is dropped.
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes a client may send after its request head before it has authenticated: an
/// `auth` frame is well under 1 KiB.
pub const PREAUTH_BYTES: usize = 64 * 1024;

/// Lookups of who holds a loopback socket at once: each reads the kernel's socket table,
/// and only connections that claim to come through the tunnel pay for one.
const TUNNEL_CHECKS: usize = 2;
/// A connection that cannot have its tunnel claim checked in this time is taken for
/// what its TCP peer says.
const TUNNEL_CHECK_WAIT: Duration = Duration::from_secs(1);

/// Accepts on `listener` until `stop` is cancelled; spliced connections live on in
/// `tracker` (they end when their worker goes away). The table's figures reach
/// `status` (its `connections`) whenever they change, checked every second.
/// `tunnel` is the pid of the cloudflared the supervisor runs, whose connections'
/// `Cf-Connecting-Ip` is believed ([`tunnel_peer`]).
pub async fn serve(
    listener: TcpListener,
    route: watch::Receiver<Route>,
    tunnel: watch::Receiver<Option<u32>>,
    limits: Limits,
    status: watch::Sender<Status>,
    stop: CancellationToken,
    tracker: TaskTracker,
) {
    let admission = Admission::new(limits);
    let checks = std::sync::Arc::new(Semaphore::new(TUNNEL_CHECKS));
    let mut report = tokio::time::interval(Duration::from_secs(1));
    report.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => return,
            _ = report.tick() => {
                let now = admission.status();
                status.send_if_modified(|s| std::mem::replace(&mut s.connections, now.clone()) != now);
                continue;
            }
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(err) => {
                    // Out of file descriptors and the like: don't spin. The bounds keep
                    // this from happening unless something else holds the descriptors.
                    tracing::warn!(%err, "public port: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let Some(ticket) = admission.admit(peer.ip()) else {
            tracing::debug!(%peer, "public port full of authenticated phones; refused");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let route = route.clone();
        let tunnel = *tunnel.borrow();
        let checks = checks.clone();
        tracker.spawn(async move {
            let evicted = ticket.evicted.clone();
            tokio::select! {
                _ = evicted.cancelled() => tracing::debug!(%peer, "evicted to make room"),
                result = handle(stream, peer, route, &ticket, tunnel, &checks) => if let Err(err) = result {
                    tracing::debug!(%peer, %err, "public connection ended with an error");
                },
            }
        });
    }
}

async fn handle(
    mut client: TcpStream,
    peer: std::net::SocketAddr,
    route: watch::Receiver<Route>,
    ticket: &admission::Ticket,
    tunnel: Option<u32>,
    checks: &Semaphore,
) -> std::io::Result<()> {
    let Some(head) = head::read(&mut client, HEAD_TIMEOUT).await else {
        return Ok(());
    };
    ticket.progress(Progress::Requested);
    if !head.is_clean() {
        client
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await?;
        return client.shutdown().await;
    }
    let client_ip = match tunnel_client(&client, peer, &head, tunnel, checks).await {
        Some(behind) => {
            ticket.rekey(behind);
            behind
        }
        None => peer.ip(),
    };
    // Routed as of the moment the request arrived, not the moment the socket did.
    let mut routes = route;
    let mut route = routes.borrow_and_update().clone();
    let mut reroute_by = tokio::time::Instant::now() + REROUTE_WAIT;
    while let (Some(port), Some(voucher)) = (route.port, route.voucher.as_ref()) {
        match TcpStream::connect(("127.0.0.1", port)).await {
            Ok(mut worker) => {
                let _ = worker.set_nodelay(true);
                let first = head.forwarded(&voucher.header_value(client_ip));
                if answers(&mut worker, &first, head.is_replayable()).await? {
                    let head_len = first.len() - head.rest.len();
                    let watch = splice::Watch {
                        upgrade: head.is_upgrade(),
                        preauth_bytes: PREAUTH_BYTES,
                    };
                    return splice::run(client, worker, &first, ticket, watch, head_len).await;
                }
                tracing::debug!(port, "routed worker closed without answering");
                // It may have taken its time to die: the wait for its successor
                // starts now.
                reroute_by = tokio::time::Instant::now() + REROUTE_WAIT;
            }
            Err(err) => tracing::debug!(port, %err, "routed worker refused a connection"),
        }
        // It died between routing and now, and the runner is about to say what
        // replaces it: its standby (a phone reconnecting at once gets in at once), or
        // "restarting" with how long to wait. That word is worth a moment's wait.
        let rerouted = routes.wait_for(|r| r.port != Some(port));
        match tokio::time::timeout_at(reroute_by, rerouted).await {
            Ok(Ok(now)) => route = now.clone(),
            _ => break,
        }
    }
    answer_restarting(client, &head, &route).await
}

/// How long a request that found its worker gone waits for the route to change.
const REROUTE_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// How long a request that may be sent again waits for its worker's first byte before
/// it is spliced as it is (a worker that slow is alive, and answers in the splice).
const FIRST_BYTE_WAIT: Duration = Duration::from_secs(10);

/// Sends `first` (the forwarded head and what followed it) to `worker`: `Ok(true)` to
/// splice the rest. A request that may be sent again ([`Head::is_replayable`]) is held
/// until the worker starts its answer, and is `Ok(false)` when it closed the connection
/// without a byte instead: a worker killed after the kernel accepted the connection for
/// it, in the moment before the runner routes its standby. Nothing reached anyone, so
/// the request goes to the successor and the phone sees no failure. Any other request
/// whose head could not be sent whole ends here: what the client sends next must never
/// reach a worker after half a head.
async fn answers(worker: &mut TcpStream, first: &[u8], replayable: bool) -> std::io::Result<bool> {
    let sent = match tokio::time::timeout(HEAD_TIMEOUT, worker.write_all(first)).await {
        Ok(sent) => sent,
        Err(_) => Err(std::io::ErrorKind::TimedOut.into()),
    };
    if !replayable {
        return sent.map(|()| true);
    }
    if sent.is_err() {
        return Ok(false);
    }
    let mut byte = [0u8; 1];
    let answer = tokio::time::timeout(FIRST_BYTE_WAIT, worker.peek(&mut byte)).await;
    Ok(!matches!(answer, Ok(Ok(0) | Err(_))))
}

/// The phone behind our own tunnel, when this connection is cloudflared's and says
/// which phone it carries.
async fn tunnel_client(
    client: &TcpStream,
    peer: std::net::SocketAddr,
    head: &Head,
    tunnel: Option<u32>,
    checks: &Semaphore,
) -> Option<std::net::IpAddr> {
    let pid = tunnel?;
    if !peer.ip().is_loopback() {
        return None;
    }
    let claimed: std::net::IpAddr = head.header("cf-connecting-ip")?.parse().ok()?;
    let local = client.local_addr().ok()?;
    let _turn = tokio::time::timeout(TUNNEL_CHECK_WAIT, checks.acquire())
        .await
        .ok()?
        .ok()?;
    let ours = tokio::task::spawn_blocking(move || tunnel_peer::owned_by(pid, peer, local))
        .await
        .unwrap_or(false);
    ours.then_some(claimed)
}

/// Answers 503 in the form the client expects.
async fn answer_restarting(
    mut client: TcpStream,
    head: &Head,
    route: &Route,
) -> std::io::Result<()> {
    let response = restarting_response(&head.head, route);
    client.write_all(response.as_bytes()).await?;
    client.shutdown().await
}

/// The whole HTTP/1.1 response for a request head while no worker serves.
pub fn restarting_response(head: &[u8], route: &Route) -> String {
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
    use crate::forwarded::Voucher;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use tokio::sync::oneshot;

    fn route() -> Route {
        Route {
            port: None,
            voucher: None,
            state: StateName::Restarting,
            retry_after_secs: 2,
        }
    }

    #[test]
    fn health_gets_json_503() {
        let r = restarting_response(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n", &route());
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
            &route(),
        );
        assert!(r.starts_with("HTTP/1.1 503 ") && r.contains("Retry-After: 2\r\n"));
        assert!(r.contains("text/plain"));
        let r = restarting_response(b"GET / HTTP/1.1\r\n\r\n", &route());
        assert!(r.contains("text/html") && r.contains("http-equiv=refresh"));
        let r = restarting_response(b"\xff\xfe garbage", &route());
        assert!(
            r.starts_with("HTTP/1.1 503 "),
            "garbage still gets an answer"
        );
    }

    /// The public port routed to `port`, and the sender that routes it elsewhere.
    async fn public_port(port: u16) -> (u16, watch::Sender<Route>, CancellationToken) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let public = listener.local_addr().unwrap().port();
        let (routes, route) = watch::channel(Route {
            port: Some(port),
            voucher: Some(Voucher::generate().unwrap()),
            state: StateName::Healthy,
            retry_after_secs: 1,
        });
        let (_tunnel, tunnel) = watch::channel(None);
        let (status, _) = watch::channel(Status::new(public, 0, false, "file"));
        let limits = Limits {
            max_connections: 16,
            max_unauthenticated: 16,
        };
        let stop = CancellationToken::new();
        let tracker = TaskTracker::new();
        tokio::spawn(serve(
            listener,
            route,
            tunnel,
            limits,
            status,
            stop.clone(),
            tracker,
        ));
        (public, routes, stop)
    }

    /// A worker killed as it was handed a connection: it takes it, reads the request
    /// and says so (`took`); then, once `die` says so (the test has routed its
    /// successor, as the runner does when it sees a worker die), it closes the
    /// connection without a word.
    async fn dying_worker() -> (u16, oneshot::Receiver<()>, oneshot::Sender<()>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tell, took) = oneshot::channel();
        let (die, dying) = oneshot::channel();
        tokio::spawn(async move {
            let (mut conn, _) = listener.accept().await.unwrap();
            head::read(&mut conn, Duration::from_secs(10))
                .await
                .unwrap();
            let _ = tell.send(());
            let _ = dying.await;
            drop(conn);
        });
        (port, took, die)
    }

    /// Its successor, which answers every request "ok", and counts them.
    async fn answering_worker() -> (u16, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let asked = Arc::new(AtomicUsize::new(0));
        let count = asked.clone();
        tokio::spawn(async move {
            loop {
                let (mut conn, _) = listener.accept().await.unwrap();
                count.fetch_add(1, Ordering::SeqCst);
                head::read(&mut conn, Duration::from_secs(10))
                    .await
                    .unwrap();
                conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                )
                .await
                .unwrap();
            }
        });
        (port, asked)
    }

    /// Sends `request` to the public port; everything it gets back.
    async fn ask(public: u16, request: &str) -> String {
        use tokio::io::AsyncReadExt;
        let mut conn = TcpStream::connect(("127.0.0.1", public)).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        let _ = conn.read_to_end(&mut answer).await;
        String::from_utf8_lossy(&answer).into_owned()
    }

    /// `request` through a public port routed to a worker that dies with it unanswered,
    /// then to that worker's successor: what the client got, and how many requests the
    /// successor had.
    async fn through_a_dying_worker(request: &'static str) -> (String, usize) {
        let (dying, took, die) = dying_worker().await;
        let (successor, asked) = answering_worker().await;
        let (public, routes, stop) = public_port(dying).await;
        let answer = tokio::spawn(ask(public, request));
        took.await.unwrap();
        routes.send_modify(|r| r.port = Some(successor));
        die.send(()).unwrap();
        let answer = answer.await.unwrap();
        stop.cancel();
        (answer, asked.load(Ordering::SeqCst))
    }

    #[tokio::test]
    async fn a_request_its_worker_closed_unanswered_is_answered_by_the_successor() {
        for request in [
            "GET /health HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        ] {
            let (answer, asked) = through_a_dying_worker(request).await;
            assert!(
                answer.starts_with("HTTP/1.1 200 OK") && answer.ends_with("ok"),
                "{answer:?}"
            );
            assert_eq!(asked, 1);
        }
    }

    #[tokio::test]
    async fn a_request_that_may_have_done_something_is_never_sent_twice() {
        for request in [
            "POST /api/restart HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n",
            "POST /ws HTTP/1.1\r\nUpgrade: websocket\r\nContent-Length: 0\r\n\r\n",
        ] {
            // The worker may have done something before it died: the client hears its
            // connection end, and asks again if it wants to.
            let (answer, asked) = through_a_dying_worker(request).await;
            assert_eq!(answer, "", "{request:?}");
            assert_eq!(asked, 0, "{request:?}");
        }
    }
}
