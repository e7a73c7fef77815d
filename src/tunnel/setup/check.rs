//! The proof at the end of `chroxy tunnel setup`: that `https://<hostname>` reaches
//! this machine through the person's own tunnel. A dashboard set up wrong fails in ways
//! that look alike from a phone (a Cloudflare error page, someone else's site, nothing),
//! so each is told apart here, while the person is still at the desk.
//!
//! How: a one-shot responder on 127.0.0.1:<port> answers one random path with a random
//! nonce; cloudflared runs with the token exactly as `--tunnel named` runs it (the
//! [`Tunnel`] keeper, not a second command line); once it has registered, the path is
//! fetched through the hostname, and only the nonce counts as an answer from here.

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::TunnelConfig;
use crate::token::{ApiToken, NoRandomness};
use crate::tunnel::{Mode, Program, Tunnel, TunnelError, TunnelSpec, TunnelState};

/// Where the responder answers; the rest of the path is random.
pub const CHECK_PATH: &str = "/.chroxy-tunnel-check/";

/// One request that gets no answer in this long is tried again (within the window).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What the check needs.
#[derive(Debug, Clone)]
pub struct CheckSpec {
    /// The Public Hostname.
    pub hostname: String,
    /// The tunnel's token.
    pub token: ApiToken,
    /// The port the Public Hostname's service points at, on 127.0.0.1.
    pub port: u16,
    /// `CHROXY_CLOUDFLARED`; `None`: found on `PATH`.
    pub cloudflared: Option<PathBuf>,
    /// `[tunnel]`: its `start_timeout_ms` bounds both the registration and the wait for
    /// the hostname to answer.
    pub tunnel: TunnelConfig,
    /// Fetched instead of `https://<hostname>` (the tests point it at loopback).
    pub url: Option<String>,
    /// The public port of a Chroxy already running for this home, if one is.
    pub running_port: Option<u16>,
}

impl CheckSpec {
    /// The base URL fetched.
    pub fn base_url(&self) -> String {
        match &self.url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => format!("https://{}", self.hostname),
        }
    }
}

/// Why the hostname was not shown to reach this machine. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// cloudflared is not where it was looked for (the message names where and
    /// `CHROXY_CLOUDFLARED`).
    #[error("{0}")]
    Cloudflared(TunnelError),
    /// A Chroxy of this home holds the port.
    #[error("Chroxy is running for this home on port {port}, which the check needs: stop it first (Quit in the tray menu, or Ctrl-C the `chroxy start`) and run `chroxy tunnel setup` again, or skip the check with `--no-check`")]
    ChroxyRunning {
        /// The port.
        port: u16,
    },
    /// Another program holds the port.
    #[error("port {port} on 127.0.0.1 is taken by another program; stop it, or give the port your Public Hostname's service points at with `--port`, or skip the check with `--no-check`")]
    PortBusy {
        /// The port.
        port: u16,
    },
    /// The port could not be listened on for another reason.
    #[error("cannot listen on 127.0.0.1:{port} for the check: {error}")]
    Listen {
        /// The port.
        port: u16,
        /// The OS error.
        error: std::io::Error,
    },
    /// No random path and nonce could be made.
    #[error(transparent)]
    Random(#[from] NoRandomness),
    /// cloudflared exited, or registered nothing within the start deadline (its last
    /// error line, which names no token).
    #[error("cloudflared did not connect the tunnel: {0}. Check that the token is this tunnel's (copy it again from the dashboard) and that this machine reaches Cloudflare on the internet")]
    Tunnel(String),
    /// The URL to fetch is not one.
    #[error("{0} is not a URL the check can fetch")]
    BadUrl(String),
    /// The hostname does not resolve.
    #[error("{host} does not resolve ({detail}): add it as a Public Hostname of the tunnel in the Cloudflare dashboard (that creates its DNS record; the domain must be on Cloudflare), check the spelling, and try again in a minute")]
    Dns {
        /// The host.
        host: String,
        /// The resolver's words.
        detail: String,
    },
    /// No HTTP answer at all.
    #[error("{url} did not answer ({detail}); check that the hostname is this tunnel's Public Hostname, and that this machine's network allows https")]
    Unreachable {
        /// The base URL.
        url: String,
        /// What failed.
        detail: String,
    },
    /// Cloudflare answered that it could not reach the service behind the tunnel.
    #[error("{url} answered {status} from Cloudflare: the tunnel is up but Cloudflare cannot reach this machine's port through it; set the Public Hostname's service to http://127.0.0.1:{port} (type HTTP)")]
    OriginUnreachable {
        /// The base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The port the service should name.
        port: u16,
    },
    /// Cloudflare answered that no running tunnel serves the hostname (error 1033).
    #[error("{url} answered 530 from Cloudflare: no running tunnel serves that hostname; it points at another tunnel (or an old one): in the dashboard, add it as a Public Hostname of the tunnel whose token you gave (and remove it from the other)")]
    NotThisTunnel {
        /// The base URL.
        url: String,
    },
    /// Something answered, but not this machine.
    #[error("{url} answered (HTTP {status}), but not with this machine's check: the hostname points somewhere else (another server or tunnel). In the dashboard, route it as a Public Hostname of this tunnel to http://127.0.0.1:{port}")]
    WrongAnswer {
        /// The base URL.
        url: String,
        /// The HTTP status.
        status: u16,
        /// The port the service should name.
        port: u16,
    },
    /// Writing progress failed.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

impl CheckError {
    /// A definite answer: waiting longer would not change it.
    fn is_final(&self) -> bool {
        matches!(self, CheckError::WrongAnswer { .. } | CheckError::BadUrl(_))
    }
}

/// The path the responder answers and what it answers with, both random so that no
/// cache and no other server can give the right answer.
#[derive(Clone)]
struct Probe {
    path: String,
    nonce: String,
}

impl Probe {
    fn new() -> Result<Self, NoRandomness> {
        Ok(Self {
            path: format!("{CHECK_PATH}{}", ApiToken::generate()?.expose()),
            nonce: ApiToken::generate()?.expose().to_owned(),
        })
    }
}

/// Runs the check: responder, cloudflared, fetch; everything it started is stopped
/// before it returns, however it ends. Progress goes to `out`.
pub async fn check(spec: &CheckSpec, out: &mut impl Write) -> Result<(), CheckError> {
    let binary = Program::Cloudflared
        .find(spec.cloudflared.as_deref())
        .map_err(CheckError::Cloudflared)?;
    if spec.running_port == Some(spec.port) {
        return Err(CheckError::ChroxyRunning { port: spec.port });
    }
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, spec.port))
        .await
        .map_err(|source| match source.kind() {
            std::io::ErrorKind::AddrInUse => CheckError::PortBusy { port: spec.port },
            _ => CheckError::Listen {
                port: spec.port,
                error: source,
            },
        })?;
    let probe = Probe::new()?;
    let stop = CancellationToken::new();
    let responder = tokio::spawn(respond(listener, probe.clone(), stop.child_token()));
    let mode = Mode::Named {
        hostname: spec.hostname.clone(),
        token: spec.token.clone(),
    };
    let tunnel_spec = TunnelSpec::new(mode, Some(binary), spec.port, &spec.tunnel);
    let (pid, _) = tokio::sync::watch::channel(None);
    let mut tunnel = Tunnel::start(tunnel_spec, stop.child_token(), pid);
    writeln!(
        out,
        "Starting cloudflared with the token (up to {} s to connect)…",
        spec.tunnel.start_timeout().as_secs()
    )?;
    let result = async {
        registered(&mut tunnel).await?;
        let base = spec.base_url();
        writeln!(
            out,
            "cloudflared connected the tunnel; asking {base}{CHECK_PATH}… for this machine's answer"
        )?;
        reach(&base, &probe, spec.port, spec.tunnel.start_timeout()).await
    }
    .await;
    stop.cancel();
    tunnel.stopped().await;
    // The responder ends with its last connection; cloudflared's is gone with it.
    let _ = tokio::time::timeout(Duration::from_secs(5), responder).await;
    result
}

/// Waits for the tunnel's first registration, or its first failure (the keeper would
/// retry; the person should hear why now).
async fn registered(tunnel: &mut Tunnel) -> Result<(), CheckError> {
    let Some(mut changes) = tunnel.take_changes() else {
        return Err(CheckError::Tunnel("its status was already taken".into()));
    };
    while let Some(status) = changes.recv().await {
        match status.state {
            TunnelState::Up => return Ok(()),
            TunnelState::Reconnecting | TunnelState::Down => {
                return Err(CheckError::Tunnel(
                    status.last_error.unwrap_or_else(|| "it stopped".into()),
                ))
            }
            TunnelState::Starting | TunnelState::Off => {}
        }
    }
    Err(CheckError::Tunnel("it stopped".into()))
}

/// Answers the probe's path with its nonce, and everything else with 404, until `stop`.
async fn respond(listener: tokio::net::TcpListener, probe: Probe, stop: CancellationToken) {
    let app = axum::Router::new().fallback(move |uri: axum::http::Uri| {
        let probe = probe.clone();
        async move {
            if uri.path() == probe.path {
                (axum::http::StatusCode::OK, probe.nonce)
            } else {
                (axum::http::StatusCode::NOT_FOUND, String::new())
            }
        }
    });
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(err) = served {
        tracing::warn!(%err, "the tunnel check's responder failed");
    }
}

type Https = hyper_rustls::HttpsConnector<HttpConnector>;

/// Fetches the probe through `base` until the nonce comes back, a definite wrong
/// answer does, or `window` is over (then the last failure is the answer): a hostname
/// just added may take a few seconds to resolve and route.
async fn reach(base: &str, probe: &Probe, port: u16, window: Duration) -> Result<(), CheckError> {
    let url = format!("{base}{}", probe.path);
    let uri: http::Uri = url
        .parse()
        .map_err(|_| CheckError::BadUrl(base.to_owned()))?;
    let (Some(host), Some(scheme)) = (uri.host(), uri.scheme_str()) else {
        return Err(CheckError::BadUrl(base.to_owned()));
    };
    let host_port = uri
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let client = client();
    let deadline = Instant::now() + window;
    let mut delay = Duration::from_millis(250);
    loop {
        let failure = match tokio::net::lookup_host((host, host_port)).await {
            Err(e) => CheckError::Dns {
                host: host.to_owned(),
                detail: e.to_string(),
            },
            Ok(_) => match fetch_once(&client, &uri, probe, base, port).await {
                Ok(()) => return Ok(()),
                Err(failure) => failure,
            },
        };
        if failure.is_final() || Instant::now() + delay >= deadline {
            return Err(failure);
        }
        tracing::debug!(error = %failure, "the hostname does not answer yet; trying again");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

async fn fetch_once(
    client: &Client<Https, Empty<Bytes>>,
    uri: &http::Uri,
    probe: &Probe,
    base: &str,
    port: u16,
) -> Result<(), CheckError> {
    let unreachable = |detail: String| CheckError::Unreachable {
        url: base.to_owned(),
        detail,
    };
    let request = http::Request::get(uri.clone())
        .header(http::header::CACHE_CONTROL, "no-store")
        .body(Empty::new())
        .map_err(|_| CheckError::BadUrl(base.to_owned()))?;
    let answer = tokio::time::timeout(REQUEST_TIMEOUT, client.request(request))
        .await
        .map_err(|_| unreachable(format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())))?
        .map_err(|e| unreachable(chain(&e)))?;
    let status = answer.status().as_u16();
    match status {
        200 => {}
        530 => {
            return Err(CheckError::NotThisTunnel {
                url: base.to_owned(),
            })
        }
        502..=504 => {
            return Err(CheckError::OriginUnreachable {
                url: base.to_owned(),
                status,
                port,
            })
        }
        _ => {
            return Err(CheckError::WrongAnswer {
                url: base.to_owned(),
                status,
                port,
            })
        }
    }
    // The nonce is 43 bytes; a page of someone else's site need not be read whole.
    let body = Limited::new(answer.into_body(), 4096)
        .collect()
        .await
        .map(|b| b.to_bytes());
    match body {
        Ok(body) if body.trim_ascii() == probe.nonce.as_bytes() => Ok(()),
        _ => Err(CheckError::WrongAnswer {
            url: base.to_owned(),
            status,
            port,
        }),
    }
}

/// An HTTP(S) client: the system's CA certificates, http/1.
fn client() -> Client<Https, Empty<Bytes>> {
    let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
        Ok(builder) => builder,
        Err(err) => {
            // Then every https fetch fails, saying the certificate is unknown.
            tracing::warn!(%err, "no CA certificates found: the tunnel check cannot verify https");
            hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            )
        }
    };
    let connector = builder.https_or_http().enable_http1().build();
    Client::builder(TokioExecutor::new()).build(connector)
}

/// An error and its causes, as one line (hyper's own says only "client error (Connect)").
fn chain(err: &dyn std::error::Error) -> String {
    let mut words = err.to_string();
    let mut cause = err.source();
    while let Some(e) = cause {
        words.push_str(": ");
        words.push_str(&e.to_string());
        cause = e.source();
    }
    words
}
