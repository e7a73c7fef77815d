//! (Its own module, not the shared harness's: the tray app's tests share that, without
//! axum.) A phone's push service on loopback, as RFC 8030 describes one, checking what a real
//! one checks: every push must carry a VAPID JWT (RFC 8292) signed by the key it names,
//! for this service's origin, not expiring beyond 24 hours, with a contact; its body
//! must be `aes128gcm` that decrypts (RFC 8291) with the keys of the browser it is
//! addressed to. It plays the browsers too: [`PushService::browser`] makes a
//! subscription as `pushManager.subscribe` would.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde_json::{json, Value};
use web_push_native as wpn;
use wpn::jwt_simple::prelude::{
    ECDSAP256PublicKeyLike, ES256PublicKey, NoCustomClaims, VerificationOptions,
};
use wpn::p256;

use crate::common::WAIT;

/// One push as the service took it.
#[derive(Debug, Clone)]
pub struct Push {
    /// The decrypted payload.
    pub payload: Value,
    /// The VAPID public key it was signed with (`k=`).
    pub vapid_key: String,
    /// Its `TTL` and `Urgency` headers.
    pub ttl: u64,
    pub urgency: String,
}

/// A browser's subscription and its private half.
pub struct PushBrowser {
    pub id: String,
    pub endpoint: String,
    secret: p256::SecretKey,
    auth: [u8; 16],
}

impl PushBrowser {
    /// `PushSubscription.toJSON()`.
    pub fn subscription(&self) -> Value {
        let public = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &self.secret.public_key(),
            false,
        );
        json!({
            "endpoint": self.endpoint,
            "expirationTime": null,
            "keys": {
                "p256dh": URL_SAFE_NO_PAD.encode(public.as_bytes()),
                "auth": URL_SAFE_NO_PAD.encode(self.auth),
            }
        })
    }
}

/// How the service answers a browser's pushes, other than taking them.
#[derive(Clone, Copy)]
enum Answer {
    /// 410: the subscription expired.
    Gone,
    /// This status, without looking at the push.
    Refuse(StatusCode),
    /// Never: the request is held until the sender gives up.
    Hang,
}

#[derive(Default)]
struct Inner {
    browsers: HashMap<String, (p256::SecretKey, [u8; 16])>,
    answers: HashMap<String, Answer>,
    /// Per browser, how many pushes were posted, taken or not.
    tried: HashMap<String, usize>,
    /// Per browser, what arrived: a push, or why it was refused.
    got: HashMap<String, Vec<Result<Push, String>>>,
}

#[derive(Clone)]
struct Shared {
    inner: Arc<Mutex<Inner>>,
    origin: String,
    arrived: Arc<tokio::sync::Notify>,
}

pub struct PushService {
    shared: Shared,
    next: std::sync::atomic::AtomicU32,
}

impl PushService {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let shared = Shared {
            inner: Default::default(),
            origin: format!("http://127.0.0.1:{port}"),
            arrived: Default::default(),
        };
        let app = axum::Router::new()
            .route("/push/{id}", post(take))
            .with_state(shared.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            shared,
            next: Default::default(),
        }
    }

    /// A new browser subscribed with this service.
    pub fn browser(&self) -> PushBrowser {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let id = format!("b{n}");
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let auth: [u8; 16] = rand_bytes();
        self.lock()
            .browsers
            .insert(id.clone(), (secret.clone(), auth));
        PushBrowser {
            endpoint: format!("{}/push/{id}", self.shared.origin),
            id,
            secret,
            auth,
        }
    }

    /// From now on the browser's subscription is expired: 410 Gone.
    pub fn expire(&self, browser: &PushBrowser) {
        self.answer(browser, Some(Answer::Gone));
    }

    /// From now on the browser's pushes are refused with `status`.
    pub fn refuse(&self, browser: &PushBrowser, status: u16) {
        let status = StatusCode::from_u16(status).unwrap();
        self.answer(browser, Some(Answer::Refuse(status)));
    }

    /// From now on the browser's pushes are never answered.
    pub fn hang(&self, browser: &PushBrowser) {
        self.answer(browser, Some(Answer::Hang));
    }

    /// From now on the browser's pushes are taken again.
    pub fn take_again(&self, browser: &PushBrowser) {
        self.answer(browser, None);
    }

    fn answer(&self, browser: &PushBrowser, answer: Option<Answer>) {
        let mut inner = self.lock();
        match answer {
            Some(answer) => inner.answers.insert(browser.id.clone(), answer),
            None => inner.answers.remove(&browser.id),
        };
    }

    /// Waits (under WAIT) until `n` pushes were posted for `browser`, taken or not.
    pub async fn until_tried(&self, browser: &PushBrowser, n: usize) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.shared.arrived.notified();
            let tried = self.lock().tried.get(&browser.id).copied().unwrap_or(0);
            if tried >= n {
                return;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{tried} pushes of {n} were posted");
            }
        }
    }

    /// Every push `browser` got so far (a refused one fails the test, saying why).
    pub fn got(&self, browser: &PushBrowser) -> Vec<Push> {
        self.lock()
            .got
            .get(&browser.id)
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|why| panic!("a push was not what RFC 8030/8291/8292 ask: {why}"))
            })
            .collect()
    }

    /// Waits (under WAIT) until `browser` has `n` pushes; returns them all.
    pub async fn until(&self, browser: &PushBrowser, n: usize) -> Vec<Push> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let arrived = self.shared.arrived.notified();
            let got = self.got(browser);
            if got.len() >= n {
                return got;
            }
            if tokio::time::timeout_at(deadline, arrived).await.is_err() {
                panic!("{} pushes of {n} arrived: {got:?}", got.len());
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap()
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).unwrap();
    out
}

async fn take(
    State(shared): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    let (keys, answer) = {
        let mut inner = shared.inner.lock().unwrap();
        *inner.tried.entry(id.clone()).or_default() += 1;
        (
            inner.browsers.get(&id).cloned(),
            inner.answers.get(&id).copied(),
        )
    };
    shared.arrived.notify_waiters();
    let Some((secret, auth)) = keys else {
        return StatusCode::NOT_FOUND;
    };
    match answer {
        Some(Answer::Gone) => return StatusCode::GONE,
        Some(Answer::Refuse(status)) => return status,
        Some(Answer::Hang) => std::future::pending::<()>().await,
        None => {}
    }
    let checked = check(&shared.origin, &headers, body.to_vec(), &secret, &auth);
    let status = if checked.is_ok() {
        StatusCode::CREATED
    } else {
        StatusCode::BAD_REQUEST
    };
    shared
        .inner
        .lock()
        .unwrap()
        .got
        .entry(id)
        .or_default()
        .push(checked);
    shared.arrived.notify_waiters();
    status
}

fn check(
    origin: &str,
    headers: &HeaderMap,
    body: Vec<u8>,
    secret: &p256::SecretKey,
    auth: &[u8; 16],
) -> Result<Push, String> {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
            .ok_or(format!("no {name} header"))
    };
    if header("content-encoding")? != "aes128gcm" {
        return Err("Content-Encoding is not aes128gcm".into());
    }
    let ttl: u64 = header("ttl")?.parse().map_err(|_| "TTL is not a number")?;
    let urgency = header("urgency")?;
    if !["very-low", "low", "normal", "high"].contains(&urgency.as_str()) {
        return Err(format!("Urgency {urgency} is not RFC 8030's"));
    }
    // `vapid t=<jwt>, k=<key>`
    let vapid = header("authorization")?;
    let rest = vapid
        .strip_prefix("vapid ")
        .ok_or("not a vapid Authorization")?;
    let mut token = None;
    let mut key = None;
    for part in rest.split(',') {
        match part.trim().split_once('=') {
            Some(("t", v)) => token = Some(v.to_owned()),
            Some(("k", v)) => key = Some(v.to_owned()),
            _ => return Err(format!("a stray part in the vapid header: {part}")),
        }
    }
    let (token, key) = token.zip(key).ok_or("t= or k= missing")?;
    let raw = URL_SAFE_NO_PAD
        .decode(&key)
        .map_err(|_| "k is not base64url")?;
    let public =
        ES256PublicKey::from_bytes(&raw).map_err(|e| format!("k is not a P-256 key: {e}"))?;
    let options = VerificationOptions {
        allowed_audiences: Some(HashSet::from([origin.to_owned()])),
        ..Default::default()
    };
    let claims = public
        .verify_token::<NoCustomClaims>(&token, Some(options))
        .map_err(|e| format!("the VAPID JWT does not verify for {origin}: {e}"))?;
    let expires = claims.expires_at.ok_or("the JWT has no exp")?.as_secs();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    if expires > now + 24 * 3600 {
        return Err("the JWT expires more than 24 hours from now".into());
    }
    let subject = claims.subject.ok_or("the JWT has no sub")?;
    if !(subject.starts_with("mailto:") || subject.starts_with("https:")) {
        return Err(format!("sub {subject} is neither mailto: nor https:"));
    }
    let plain = wpn::decrypt(body, secret, &wpn::Auth::clone_from_slice(auth))
        .map_err(|e| format!("the body does not decrypt with the browser's keys: {e}"))?;
    let payload =
        serde_json::from_slice(&plain).map_err(|e| format!("the payload is not JSON: {e}"))?;
    Ok(Push {
        payload,
        vapid_key: key,
        ttl,
        urgency,
    })
}
