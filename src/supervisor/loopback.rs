//! One HTTP/1.1 exchange with a server on 127.0.0.1 — the health gate's `GET /health`
//! and the CLI's calls to the status API. Loopback only, by construction: it connects
//! to a port, never resolves a name.

use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Bytes;
use hyper::{Method, Request};
use tokio::net::TcpStream;
use tokio_util::task::AbortOnDropHandle;

/// Sends one request on `stream` (a connection to 127.0.0.1:`port` the caller opened,
/// so it can tell its own errors from the server's) and reads the answer, at most
/// `max_body` bytes of it. The error is worded for a person (no secret: headers are not
/// in it).
pub async fn exchange(
    stream: TcpStream,
    port: u16,
    method: Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Bytes,
    max_body: usize,
) -> Result<(u16, Bytes), String> {
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    // Drives the connection; stopped on every way out of here, a caller's deadline too.
    let _conn = AbortOnDropHandle::new(tokio::spawn(conn));
    let mut request = Request::builder()
        .method(method)
        .uri(path)
        .header("host", format!("127.0.0.1:{port}"));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = request.body(Full::new(body)).map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let code = response.status().as_u16();
    let body = Limited::new(response.into_body(), max_body)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok((code, body))
}
