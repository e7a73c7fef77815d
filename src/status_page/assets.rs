//! The page's own files (`web/status/`), built into the binary so the supervisor serves
//! the page that matches its JSON, and the headers every answer carries: a strict
//! Content-Security-Policy (the page has no inline script and loads nothing from
//! elsewhere, so injected markup could not run), no framing (the buttons act with the
//! token the user typed; a framing page must not be able to trick clicks onto them),
//! and no caching (every answer is about now).

use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::refuse;

/// The page's files.
#[derive(rust_embed::Embed)]
#[folder = "web/status/"]
struct StatusAssets;

/// Scripts, styles and fetches from this origin only; never framed, no `<base>`, no
/// form submissions (the page's buttons use `fetch`).
const CSP: &str = "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/// Adds the security headers to every answer, refusals included.
pub(super) async fn common_headers(request: Request, next: Next) -> Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /` is `index.html`; any other path is a file of the page, or a JSON 404.
pub(super) async fn static_file(method: Method, uri: Uri) -> Response {
    let path = uri.path().trim_start_matches('/');
    let path = if path.is_empty() { "index.html" } else { path };
    let file = if method == Method::GET || method == Method::HEAD {
        StatusAssets::get(path)
    } else {
        None
    };
    match file {
        Some(file) => {
            let mime = file.metadata.mimetype().to_owned();
            ([(header::CONTENT_TYPE, mime)], file.data).into_response()
        }
        None => refuse(
            StatusCode::NOT_FOUND,
            "the status page has nothing here; its API is GET /api/status and POST /api/{rollback,restart,reconnect,deploy,reload-token}",
        ),
    }
}
