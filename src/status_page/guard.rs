//! Who may talk to the status page. Being bound to loopback is not enough: any web page
//! the user opens can make their browser send requests to 127.0.0.1, and a DNS name can
//! be rebound to 127.0.0.1 so that such a page even counts as same-origin. So, in order:
//!
//! 1. the peer must be on this machine (in case the listener was bound wider);
//! 2. `Host` must name loopback and this port, which a rebound name never does;
//! 3. anything but a read: an `Origin`, when sent, must be this page's own;
//! 4. anything but a read: `X-Chroxy-Admin` must hold the admin token, which a
//!    cross-site form cannot set and a cross-site `fetch` cannot send without a CORS
//!    preflight we never grant.
//!
//! The token is compared in constant time and never logged or echoed.

use std::net::{IpAddr, SocketAddr};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{refuse, StatusPage, ADMIN_HEADER};

/// The checks above, in front of every route.
pub(super) async fn guard(
    State(page): State<StatusPage>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        if !is_local_peer(peer.ip()) {
            tracing::warn!(peer = %peer.ip(), "status page: refused a peer from another machine");
            return refuse(
                StatusCode::FORBIDDEN,
                "the status page answers only on this machine",
            );
        }
    }
    let host = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    if !host.is_some_and(|h| is_own_host(h, page.port)) {
        tracing::warn!(
            ?host,
            "status page: refused a request for another host name"
        );
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "the status page answers only as http://127.0.0.1:{0}, http://localhost:{0} or http://[::1]:{0}",
                page.port
            ),
        );
    }
    if !is_read(request.method()) {
        if let Err((code, why)) = may_act(request.headers(), &page) {
            return refuse(code, why);
        }
    }
    next.run(request).await
}

fn is_read(method: &Method) -> bool {
    method == Method::GET || method == Method::HEAD
}

/// Origin first, so a foreign page learns nothing about the token from the answer.
fn may_act(headers: &HeaderMap, page: &StatusPage) -> Result<(), (StatusCode, &'static str)> {
    if let Some(origin) = headers.get(header::ORIGIN) {
        if !origin.to_str().is_ok_and(|o| is_own_origin(o, page.port)) {
            tracing::warn!(?origin, "status page: refused an action from another site");
            return Err((
                StatusCode::FORBIDDEN,
                "actions are refused from another site's page; open the status page itself",
            ));
        }
    }
    let token = headers
        .get(ADMIN_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if token.is_empty() {
        tracing::info!("status page: refused an action without the admin token");
        return Err((
            StatusCode::UNAUTHORIZED,
            "this action needs the admin token in the X-Chroxy-Admin header; `chroxy token show --admin` prints it",
        ));
    }
    if !page.admin.matches(token) {
        tracing::info!("status page: refused an action with a wrong admin token");
        return Err((
            StatusCode::UNAUTHORIZED,
            "that is not this supervisor's admin token (X-Chroxy-Admin); `chroxy token show --admin` prints it",
        ));
    }
    Ok(())
}

/// The names this page answers to: loopback, with its port.
fn own_hosts(port: u16) -> [String; 3] {
    [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
    ]
}

fn is_own_host(host: &str, port: u16) -> bool {
    own_hosts(port).iter().any(|h| h.eq_ignore_ascii_case(host))
}

fn is_own_origin(origin: &str, port: u16) -> bool {
    origin
        .get(..7)
        .is_some_and(|scheme| scheme.eq_ignore_ascii_case("http://"))
        && is_own_host(&origin[7..], port)
}

/// Loopback, also as an IPv4-mapped address on a dual-stack socket.
fn is_local_peer(ip: IpAddr) -> bool {
    ip.to_canonical().is_loopback()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_names_with_this_port_are_ours() {
        for host in [
            "127.0.0.1:8766",
            "localhost:8766",
            "LocalHost:8766",
            "[::1]:8766",
        ] {
            assert!(is_own_host(host, 8766), "{host}");
        }
        for host in [
            "127.0.0.1:8765",
            "127.0.0.1",
            "localhost",
            "evil.example:8766",
            "localhost.evil.example:8766",
            "127.0.0.1:8766.evil.example",
            "0.0.0.0:8766",
            "",
        ] {
            assert!(!is_own_host(host, 8766), "{host}");
        }
    }

    #[test]
    fn only_this_pages_origin_may_act() {
        for origin in [
            "http://127.0.0.1:8766",
            "http://localhost:8766",
            "http://[::1]:8766",
        ] {
            assert!(is_own_origin(origin, 8766), "{origin}");
        }
        for origin in [
            "null",
            "https://127.0.0.1:8766",
            "http://127.0.0.1:8765",
            "http://evil.example",
            "http://127.0.0.1:8766/",
            "http://",
            "",
        ] {
            assert!(!is_own_origin(origin, 8766), "{origin}");
        }
    }

    #[test]
    fn peers_must_be_on_this_machine() {
        for ip in ["127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"] {
            assert!(is_local_peer(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["192.168.1.20", "::ffff:10.0.0.1", "2001:db8::1", "0.0.0.0"] {
            assert!(!is_local_peer(ip.parse().unwrap()), "{ip}");
        }
    }
}
