//! HTTP routes: health, the WebSocket upgrade, and the phone client's files.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;

use super::{conn, Shared, COMMIT, VERSION};
use crate::protocol::MAX_FRAME_BYTES;

/// The phone client, built into the binary so every release carries its own.
#[derive(rust_embed::Embed)]
#[folder = "web/phone/"]
struct PhoneAssets;

pub(crate) fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ws", get(ws))
        .fallback(get(static_file))
        .with_state(shared)
}

async fn health(State(s): State<Arc<Shared>>) -> Json<serde_json::Value> {
    Json(json!({
        "status": "ok",
        "version": VERSION,
        "commit": COMMIT,
        "uptimeMs": s.started.elapsed().as_millis() as u64,
    }))
}

async fn ws(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    upgrade: WebSocketUpgrade,
) -> Response {
    let addr = client_addr(peer.ip(), &headers);
    // Frames above our 1 MiB limit must still be *read* so they can be answered with
    // TOO_LARGE; far larger ones are cut off by the WebSocket layer itself.
    upgrade
        .max_message_size(MAX_FRAME_BYTES * 8)
        .max_frame_size(MAX_FRAME_BYTES * 8)
        .on_upgrade(move |socket| {
            let tracker = s.conns.clone();
            tracker.track_future(conn::run(socket, addr, s))
        })
}

/// Behind the tunnel every peer is 127.0.0.1; the tunnel reports the real client in
/// `Cf-Connecting-Ip`. Only a loopback peer is trusted to say so.
fn client_addr(peer: IpAddr, headers: &HeaderMap) -> IpAddr {
    if peer.is_loopback() {
        if let Some(ip) = headers
            .get("cf-connecting-ip")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse().ok())
        {
            return ip;
        }
    }
    peer
}

/// What the phone client's page may run, load and connect to: only its own files, so
/// markup that ever slipped into the page (a model's answer, a crafted pairing link)
/// could not run script, and no other site can frame it to trick a tap. Sockets go to
/// this machine (`'self'`) and to the other machines the phone was paired with, whose
/// hosts only the phone knows, hence the bare `ws:`/`wss:` schemes.
const PHONE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self'; manifest-src 'self'; connect-src 'self' wss: ws:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
    trusted-types 'none'";

/// Sent with every file of the phone client, and with its 404: besides the policy,
/// no MIME sniffing (a file is only ever what its type says) and no `Referer` leaving
/// the page (its URL may have held a pairing link).
const PHONE_HEADERS: [(header::HeaderName, &str); 3] = [
    (header::CONTENT_SECURITY_POLICY, PHONE_CSP),
    (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
    (header::REFERRER_POLICY, "no-referrer"),
];

async fn static_file(uri: Uri) -> Response {
    phone_file(uri.path())
}

/// The phone client's file at `path` (`/` is its page), or its 404.
fn phone_file(path: &str) -> Response {
    let path = path.trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    match PhoneAssets::get(path) {
        Some(file) => {
            let mime = file.metadata.mimetype().to_owned();
            (PHONE_HEADERS, [(header::CONTENT_TYPE, mime)], file.data).into_response()
        }
        None => (StatusCode::NOT_FOUND, PHONE_HEADERS, "not found").into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_address_is_trusted_only_from_loopback() {
        let mut h = HeaderMap::new();
        h.insert("cf-connecting-ip", "203.0.113.9".parse().unwrap());
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let remote: IpAddr = "198.51.100.4".parse().unwrap();
        assert_eq!(
            client_addr(lo, &h),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        assert_eq!(client_addr(remote, &h), remote);
        assert_eq!(client_addr(lo, &HeaderMap::new()), lo);
    }

    #[test]
    fn every_phone_file_and_its_404_carry_the_security_headers() {
        for (path, status, mime) in [
            ("/", StatusCode::OK, "text/html"),
            ("/js/app.js", StatusCode::OK, "text/javascript"),
            ("/app.css", StatusCode::OK, "text/css"),
            ("/icon-192.png", StatusCode::OK, "image/png"),
            ("/manifest.webmanifest", StatusCode::OK, ""),
            ("/no-such-file.js", StatusCode::NOT_FOUND, ""),
        ] {
            let response = phone_file(path);
            assert_eq!(response.status(), status, "{path}");
            let h = response.headers();
            let get = |name: header::HeaderName| h.get(name).map(|v| v.to_str().unwrap());
            assert!(
                get(header::CONTENT_TYPE).unwrap_or("").starts_with(mime),
                "{path}"
            );
            assert_eq!(
                get(header::X_CONTENT_TYPE_OPTIONS),
                Some("nosniff"),
                "{path}"
            );
            assert_eq!(get(header::REFERRER_POLICY), Some("no-referrer"), "{path}");
            let csp = get(header::CONTENT_SECURITY_POLICY).unwrap_or("");
            for directive in [
                "default-src 'none'",
                "script-src 'self';",
                "frame-ancestors 'none'",
                "connect-src 'self' wss: ws:;",
                "base-uri 'none'",
            ] {
                assert!(csp.contains(directive), "{path}: {directive} not in {csp}");
            }
            assert!(!csp.contains("unsafe"), "{path}: {csp}");
        }
    }
}
