//! HTTP routes: health, the WebSocket upgrade, and the phone client's files.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::Ordering;
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

/// Version, commit and uptime only for the supervisor's own probe: to anyone else (the
/// internet, through the public port) they would tell which build to attack.
async fn health(
    State(s): State<Arc<Shared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Json<serde_json::Value> {
    if !Client::of(peer.ip(), &headers, &s.voucher).direct {
        return Json(json!({ "status": "ok" }));
    }
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
    let client = Client::of(peer.ip(), &headers, &s.voucher);
    // The supervisor's own probe is never turned away for others' sake.
    let Some(pending) = Unauthenticated::take(&s, client.direct) else {
        tracing::warn!(addr = %client.addr, "too many unauthenticated connections; refusing an upgrade");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            "too many connections waiting to authenticate; retry later",
        )
            .into_response();
    };
    // Frames above our 1 MiB limit must still be *read* so they can be answered with
    // TOO_LARGE; beyond twice that the WebSocket layer closes the connection (1009)
    // rather than buffer it.
    upgrade
        .max_message_size(MAX_FRAME_BYTES * 2)
        .max_frame_size(MAX_FRAME_BYTES * 2)
        .on_upgrade(move |socket| {
            let tracker = s.conns.clone();
            tracker.track_future(conn::run(socket, client, pending, s))
        })
}

/// Who a connection is, as far as the worker can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Client {
    /// The address failures are counted against.
    pub addr: IpAddr,
    /// The supervisor's own health probe, proven by its signed header: never a phone.
    pub direct: bool,
}

impl Client {
    /// Every connection through the public port carries the supervisor's signed word on
    /// who the client is ([`crate::forwarded`]); only that is believed. Any other
    /// header, `Cf-Connecting-Ip` included, is the client's own claim. The probe proves
    /// itself with a header of its own: a connection without one is never taken for it.
    fn of(peer: IpAddr, headers: &HeaderMap, voucher: &crate::forwarded::Voucher) -> Self {
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let vouched = header(crate::forwarded::CLIENT_HEADER).and_then(|v| voucher.verify(v));
        let direct = vouched.is_none()
            && header(crate::forwarded::PROBE_HEADER).is_some_and(|v| voucher.is_probe(v));
        Self {
            addr: vouched.unwrap_or(peer),
            direct,
        }
    }
}

/// A place among the connections still to authenticate, given back on drop.
pub(crate) struct Unauthenticated {
    shared: Arc<Shared>,
}

impl Unauthenticated {
    fn take(shared: &Arc<Shared>, exempt: bool) -> Option<Self> {
        let max = if exempt {
            usize::MAX
        } else {
            shared.cfg.max_unauthenticated.max(1)
        };
        shared
            .unauthenticated
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self {
                shared: shared.clone(),
            })
    }
}

impl Drop for Unauthenticated {
    fn drop(&mut self) {
        self.shared.unauthenticated.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What the phone client's page may run, load and connect to: only its own files, so
/// markup that ever slipped into the page (a model's answer, a crafted pairing link)
/// could not run script, and no other site can frame it to trick a tap. Sockets go to
/// this machine (`'self'`) and to the other machines the phone was paired with, whose
/// hosts only the phone knows, hence the bare `ws:`/`wss:` schemes. One Trusted Types
/// policy exists, `chroxy-sw`, and it passes exactly one script URL: the service
/// worker's (`js/notify.js`).
const PHONE_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    img-src 'self' blob:; manifest-src 'self'; connect-src 'self' wss: ws:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'; require-trusted-types-for 'script'; \
    trusted-types chroxy-sw";

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
    fn only_the_public_ports_signed_word_names_a_client() {
        let voucher = crate::forwarded::Voucher::new(&crate::token::ApiToken::new("t"));
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        let phone: IpAddr = "203.0.113.9".parse().unwrap();
        let mut signed = HeaderMap::new();
        signed.insert(
            crate::forwarded::CLIENT_HEADER,
            voucher.header_value(phone).parse().unwrap(),
        );
        assert_eq!(
            Client::of(lo, &signed, &voucher),
            Client {
                addr: phone,
                direct: false
            }
        );
        // The tunnel's header is a claim anyone on loopback can make: ignored. And no
        // header at all is no proof of being the probe.
        let mut claimed = HeaderMap::new();
        claimed.insert("cf-connecting-ip", "198.51.100.4".parse().unwrap());
        assert_eq!(
            Client::of(lo, &claimed, &voucher),
            Client {
                addr: lo,
                direct: false
            }
        );
        assert_eq!(
            Client::of(lo, &HeaderMap::new(), &voucher),
            Client {
                addr: lo,
                direct: false
            }
        );
        let mut probe = HeaderMap::new();
        probe.insert(
            crate::forwarded::PROBE_HEADER,
            voucher.probe_value().parse().unwrap(),
        );
        assert_eq!(
            Client::of(lo, &probe, &voucher),
            Client {
                addr: lo,
                direct: true
            }
        );
        let other = crate::forwarded::Voucher::new(&crate::token::ApiToken::new("u"));
        let mut forged_probe = HeaderMap::new();
        forged_probe.insert(
            crate::forwarded::PROBE_HEADER,
            other.probe_value().parse().unwrap(),
        );
        assert!(!Client::of(lo, &forged_probe, &voucher).direct);
        // A forged signature is neither believed nor taken for the supervisor's probe.
        let mut forged = HeaderMap::new();
        forged.insert(
            crate::forwarded::CLIENT_HEADER,
            format!("198.51.100.4 {}", "ab".repeat(32)).parse().unwrap(),
        );
        assert_eq!(
            Client::of(lo, &forged, &voucher),
            Client {
                addr: lo,
                direct: false
            }
        );
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
