//! The supervisor's half of Web Push: a notice, encrypted for each subscribed device
//! that is still approved and wants it (RFC 8291, `aes128gcm`), signed with the home's
//! VAPID key (RFC 8292) and posted to that device's push service (RFC 8030). An
//! endpoint the service says is gone (404, 410) is forgotten; anything else that fails
//! is logged with the service's host (never the endpoint, a capability) and dropped —
//! a notification is a courtesy, never a reason to stall the supervisor.

use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use web_push_native::jwt_simple::algorithms::{
    ECDSAP256KeyPairLike, ECDSAP256PublicKeyLike, ES256KeyPair,
};
use web_push_native::jwt_simple::claims::Claims;
use web_push_native::WebPushBuilder;

use super::resolve::PublicOnly;
use super::store::{Entry, Reach, Subscriptions};
use super::Notice;
use crate::devices::{DeviceState, Devices};
use crate::protocol::now_ms;
use crate::store::Paths;

/// A push service that has not answered in this long is given up on.
const POST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a VAPID signature is valid (RFC 8292 allows at most 24 hours).
const SIGNATURE_LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);

/// Why pushes cannot be sent at all.
#[derive(Debug, thiserror::Error)]
pub enum DeliverError {
    /// The signing key kept is not a P-256 key.
    #[error("the push signing key kept in the keyring is damaged; remove the `push-key` entry (phones then turn notifications on again)")]
    DamagedKey,
}

/// What became of one notice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Accepted by a push service.
    pub sent: usize,
    /// Endpoints the service said are gone, now forgotten.
    pub gone: usize,
    /// Refused or unreachable.
    pub failed: usize,
}

type Https = hyper_rustls::HttpsConnector<HttpConnector<PublicOnly>>;

/// Sends the notices of one Chroxy home. Cheap to clone.
#[derive(Clone)]
pub struct Pusher {
    key: std::sync::Arc<ES256KeyPair>,
    public: String,
    contact: String,
    reach: Reach,
    subscriptions: Subscriptions,
    devices: Devices,
    client: Client<Https, Full<Bytes>>,
}

impl std::fmt::Debug for Pusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pusher")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl Pusher {
    /// A pusher signing with `secret` (32 bytes, base64url, from
    /// [`crate::secrets::Secrets::push_key`]) and naming `contact` (a `mailto:` or
    /// `https:` URL) to push services, as RFC 8292 asks.
    pub fn new(
        paths: &Paths,
        secret: &str,
        contact: &str,
        reach: Reach,
    ) -> Result<Self, DeliverError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(secret.trim())
            .map_err(|_| DeliverError::DamagedKey)?;
        let key = ES256KeyPair::from_bytes(&bytes).map_err(|_| DeliverError::DamagedKey)?;
        let public = URL_SAFE_NO_PAD.encode(key.public_key().public_key().to_bytes_uncompressed());
        let builder = match hyper_rustls::HttpsConnectorBuilder::new().with_native_roots() {
            Ok(builder) => builder,
            Err(err) => {
                // Pushes to https services then fail one by one, each saying so.
                tracing::warn!(%err, "no CA certificates found: pushes to phones' push services will fail");
                hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(
                    rustls::ClientConfig::builder()
                        .with_root_certificates(rustls::RootCertStore::empty())
                        .with_no_client_auth(),
                )
            }
        };
        // Names are resolved to allowed addresses only; plain http only where a
        // loopback push service is allowed at all.
        let mut http = HttpConnector::new_with_resolver(PublicOnly::new(reach));
        http.enforce_http(false);
        let connector = match reach {
            Reach::Public => builder.https_only().enable_http1().wrap_connector(http),
            Reach::AlsoLoopback => builder.https_or_http().enable_http1().wrap_connector(http),
        };
        Ok(Self {
            key: std::sync::Arc::new(key),
            public,
            contact: contact.to_owned(),
            reach,
            subscriptions: Subscriptions::new(paths),
            devices: Devices::new(paths),
            client: Client::builder(TokioExecutor::new()).build(connector),
        })
    }

    /// A queue that delivers each notice in turn, in a task of its own (which ends
    /// when the queue is dropped).
    pub fn outbox(self) -> Outbox {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Notice>(OUTBOX_CAPACITY);
        tokio::spawn(async move {
            while let Some(notice) = rx.recv().await {
                let done = self.deliver(&notice).await;
                tracing::debug!(kind = ?notice.kind, ?done, "notification pushed");
            }
        });
        Outbox(tx)
    }

    /// The VAPID public key (base64url): phones' `applicationServerKey`.
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// Pushes `notice` to every approved device that subscribed and wants it.
    pub async fn deliver(&self, notice: &Notice) -> Delivery {
        let mut done = Delivery::default();
        // Plain data always serializes; encrypted anew for each device.
        let payload = serde_json::to_vec(&notice.bounded()).unwrap_or_default();
        for entry in self.recipients(notice).await {
            match self.post(&entry, notice, &payload).await {
                Ok(()) => done.sent += 1,
                Err(Failure::Gone) => {
                    done.gone += 1;
                    tracing::info!(device = %entry.device, host = %entry.subscription.host(),
                        "the push service says this phone's subscription is gone; forgetting it");
                    let (subs, device, endpoint) = (
                        self.subscriptions.clone(),
                        entry.device.clone(),
                        entry.subscription.endpoint.clone(),
                    );
                    let forgot =
                        tokio::task::spawn_blocking(move || subs.forget(&device, &endpoint)).await;
                    if let Ok(Err(err)) = forgot {
                        tracing::warn!(%err, "cannot forget a gone push subscription");
                    }
                }
                Err(Failure::Other(why)) => {
                    done.failed += 1;
                    tracing::warn!(device = %entry.device, host = %entry.subscription.host(), %why,
                        "a notification could not be pushed");
                }
            }
        }
        done
    }

    async fn recipients(&self, notice: &Notice) -> Vec<Entry> {
        let (subs, devices) = (self.subscriptions.clone(), self.devices.clone());
        let read = tokio::task::spawn_blocking(move || {
            let approved: Vec<String> = devices
                .list(now_ms())
                .map_err(|e| e.to_string())?
                .into_iter()
                .filter(|d| d.state == DeviceState::Approved)
                .map(|d| d.id)
                .collect();
            // A device revoked (or forgotten) since it subscribed is never pushed to,
            // and its subscription goes.
            subs.keep_devices(&approved).map_err(|e| e.to_string())
        })
        .await;
        match read {
            Ok(Ok(entries)) => entries
                .into_iter()
                .filter(|e| notice.kind.wanted_by(&e.events))
                .collect(),
            Ok(Err(err)) => {
                tracing::warn!(%err, "cannot read who to notify");
                Vec::new()
            }
            Err(_) => Vec::new(),
        }
    }

    async fn post(&self, entry: &Entry, notice: &Notice, payload: &[u8]) -> Result<(), Failure> {
        let sub = &entry.subscription;
        let other = |why: String| Failure::Other(why);
        let endpoint = sub.uri(self.reach).map_err(|e| other(e.to_string()))?;
        let public = sub.public_key().map_err(|e| other(e.to_string()))?;
        let auth = sub.auth_secret().map_err(|e| other(e.to_string()))?;
        let ttl = Duration::from_secs(notice.kind.ttl_secs());
        let request = WebPushBuilder::new(endpoint.clone(), public, auth)
            .with_valid_duration(ttl)
            .build(payload)
            .map_err(|e| other(format!("cannot encrypt the notification: {e}")))?;
        let authorization = self.vapid(&endpoint).map_err(other)?;
        let (mut parts, body) = request.into_parts();
        parts.headers.insert(
            http::header::AUTHORIZATION,
            http::HeaderValue::try_from(authorization)
                .map_err(|_| other("the VAPID header is not a header".into()))?,
        );
        parts.headers.insert(
            "urgency",
            http::HeaderValue::from_static(notice.kind.urgency()),
        );
        let request = http::Request::from_parts(parts, Full::new(Bytes::from(body)));
        let response = tokio::time::timeout(POST_TIMEOUT, self.client.request(request))
            .await
            .map_err(|_| other(format!("no answer in {} s", POST_TIMEOUT.as_secs())))?
            .map_err(|e| other(format!("cannot reach the push service: {e}")))?;
        match response.status().as_u16() {
            200..=299 => Ok(()),
            404 | 410 => Err(Failure::Gone),
            // Apple's answer to a contact it does not take (RFC 8292's `sub`).
            403 => Err(other(format!(
                "the push service refused this server (403); if it is Apple's, set `[push] contact` to your own e-mail address (it has {:?})",
                self.contact
            ))),
            status => Err(other(format!("the push service answered {status}"))),
        }
    }

    /// `Authorization: vapid t=…, k=…` for `endpoint`'s origin. Signed here rather
    /// than by `web_push_native::vapid`, whose audience drops a non-default port.
    fn vapid(&self, endpoint: &http::Uri) -> Result<String, String> {
        let (scheme, authority) = endpoint
            .scheme_str()
            .zip(endpoint.authority())
            .ok_or("a stored endpoint has no origin")?;
        let claims = Claims::create(SIGNATURE_LIFETIME.into())
            .with_audience(format!("{scheme}://{authority}"))
            .with_subject(&self.contact);
        let token = self
            .key
            .sign(claims)
            .map_err(|e| format!("cannot sign the VAPID token: {e}"))?;
        Ok(format!("vapid t={token}, k={}", self.public))
    }
}

/// Notices waiting for delivery; beyond it they are dropped, saying so.
const OUTBOX_CAPACITY: usize = 64;

/// Where notices go to be delivered in order ([`Pusher::outbox`]).
#[derive(Debug, Clone)]
pub struct Outbox(tokio::sync::mpsc::Sender<Notice>);

impl Outbox {
    /// Queues `notice`, never waiting.
    pub fn send(&self, notice: Notice) {
        if self.0.try_send(notice).is_err() {
            tracing::warn!("a notification was dropped: too many are waiting for delivery");
        }
    }
}

enum Failure {
    /// 404 or 410: the subscription expired or was withdrawn.
    Gone,
    /// Anything else, worded for the log.
    Other(String),
}
