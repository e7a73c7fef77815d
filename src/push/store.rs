//! Each device's push subscription, in `<state>/push.json`: read-modify-written under
//! an advisory lock and replaced atomically ([`crate::store::modify_json`]), since the
//! worker (which stores what phones send) and the supervisor (which forgets endpoints
//! that are gone) share it. One subscription per device: a browser has one.
//!
//! An endpoint is a capability — whoever holds it can push to that phone — so it is
//! never logged and never shown in a view; only its host is. A file that does not parse
//! is an error naming it and is never overwritten.

use std::path::PathBuf;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use web_push_native::p256;

use crate::protocol::{PushEvents, PushSubscriptionJson};
use crate::store::{modify_json, read_json, Paths, StoreError};

/// Longest endpoint accepted, in bytes (real ones are 150–500).
const MAX_ENDPOINT_BYTES: usize = 2048;

/// Why a subscription was refused, or the file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SubscriptionError {
    /// Reading, writing or locking the file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file exists but is not a subscription list; it is left as it is.
    #[error("{path} is not a valid Chroxy push subscription list ({message}); fix it, or move it away (every phone then turns notifications on again)")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The endpoint is not one a push service would give.
    #[error("the push endpoint is refused: {0}")]
    Endpoint(&'static str),
    /// `keys.p256dh` is not an uncompressed P-256 public key in base64url.
    #[error(
        "the push subscription's `keys.p256dh` is not a P-256 public key (65 bytes, base64url)"
    )]
    PublicKey,
    /// `keys.auth` is not 16 bytes in base64url.
    #[error("the push subscription's `keys.auth` is not a 16-byte secret (base64url)")]
    Auth,
}

/// A browser's push subscription (`PushSubscription.toJSON()`), checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Where pushes are posted (a capability: never logged).
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// Its 16-byte authentication secret, base64url.
    pub auth: String,
}

impl Subscription {
    /// Checks what a phone sent. Endpoints are `https://` — or `http://` to this
    /// machine's loopback (a push service on the same computer, as the tests run one):
    /// plain HTTP elsewhere would hand the push service's address and the encrypted
    /// payload to anyone on the way.
    pub fn parse(sent: &PushSubscriptionJson) -> Result<Self, SubscriptionError> {
        let endpoint = sent.endpoint.trim();
        if endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(SubscriptionError::Endpoint("it is longer than 2048 bytes"));
        }
        let https = endpoint.starts_with("https://");
        if !https && !endpoint.starts_with("http://") {
            return Err(SubscriptionError::Endpoint("it is not an https URL"));
        }
        let uri: http::Uri = endpoint
            .parse()
            .map_err(|_| SubscriptionError::Endpoint("it is not a URL"))?;
        let authority = uri
            .authority()
            .filter(|a| !a.host().is_empty())
            .ok_or(SubscriptionError::Endpoint("it names no host"))?;
        if authority.as_str().contains('@') {
            return Err(SubscriptionError::Endpoint("it carries a user name"));
        }
        if !https && !is_loopback(authority.host()) {
            return Err(SubscriptionError::Endpoint(
                "plain http is accepted only to this machine's loopback",
            ));
        }
        let sub = Self {
            endpoint: endpoint.to_owned(),
            p256dh: sent.keys.p256dh.trim().to_owned(),
            auth: sent.keys.auth.trim().to_owned(),
        };
        sub.public_key()?;
        sub.auth_secret()?;
        Ok(sub)
    }

    /// The browser's public key.
    pub fn public_key(&self) -> Result<p256::PublicKey, SubscriptionError> {
        let bytes = decode(&self.p256dh).ok_or(SubscriptionError::PublicKey)?;
        if bytes.len() != 65 {
            return Err(SubscriptionError::PublicKey);
        }
        p256::PublicKey::from_sec1_bytes(&bytes).map_err(|_| SubscriptionError::PublicKey)
    }

    /// The browser's authentication secret.
    pub fn auth_secret(&self) -> Result<web_push_native::Auth, SubscriptionError> {
        let bytes = decode(&self.auth).ok_or(SubscriptionError::Auth)?;
        if bytes.len() != 16 {
            return Err(SubscriptionError::Auth);
        }
        Ok(web_push_native::Auth::clone_from_slice(&bytes))
    }

    /// The push service's host, the only part of the endpoint fit for a log.
    pub fn host(&self) -> String {
        self.endpoint
            .parse::<http::Uri>()
            .ok()
            .and_then(|u| u.host().map(str::to_owned))
            .unwrap_or_default()
    }
}

fn decode(text: &str) -> Option<Vec<u8>> {
    // Browsers give base64url without padding; some libraries pad it.
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// One device's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// The device (`devices.json` id).
    pub device: String,
    /// Its subscription.
    #[serde(flatten)]
    pub subscription: Subscription,
    /// What it wants to hear about.
    pub events: PushEvents,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushFile {
    version: u32,
    devices: Vec<Entry>,
}

impl Default for PushFile {
    fn default() -> Self {
        Self {
            version: 1,
            devices: Vec::new(),
        }
    }
}

/// The subscriptions of one Chroxy home; cheap to clone, holds no open files.
#[derive(Debug, Clone)]
pub struct Subscriptions {
    file: PathBuf,
    lock: PathBuf,
}

impl Subscriptions {
    /// The subscriptions of this home.
    pub fn new(paths: &Paths) -> Self {
        Self {
            file: paths.state_dir().join("push.json"),
            lock: paths.lock_file("push"),
        }
    }

    /// Every entry.
    pub fn all(&self) -> Result<Vec<Entry>, SubscriptionError> {
        Ok(self.load()?.devices)
    }

    /// This device's entry.
    pub fn of(&self, device: &str) -> Result<Option<Entry>, SubscriptionError> {
        Ok(self.all()?.into_iter().find(|e| e.device == device))
    }

    /// Stores `device`'s subscription (replacing its previous one) with `events`, or
    /// the events it had.
    pub fn subscribe(
        &self,
        device: &str,
        subscription: Subscription,
        events: Option<PushEvents>,
    ) -> Result<Entry, SubscriptionError> {
        self.modify(|file| {
            let kept = file
                .devices
                .iter()
                .position(|e| e.device == device)
                .map(|i| file.devices.remove(i).events);
            let entry = Entry {
                device: device.to_owned(),
                subscription,
                events: events.or(kept).unwrap_or_default(),
            };
            file.devices.push(entry.clone());
            Ok(entry)
        })
    }

    /// Changes which events `device` hears about; `None` when it has no subscription.
    pub fn set_events(
        &self,
        device: &str,
        events: PushEvents,
    ) -> Result<Option<Entry>, SubscriptionError> {
        self.modify(|file| {
            Ok(file
                .devices
                .iter_mut()
                .find(|e| e.device == device)
                .map(|e| {
                    e.events = events;
                    e.clone()
                }))
        })
    }

    /// Forgets `device`'s subscription; whether it had one.
    pub fn unsubscribe(&self, device: &str) -> Result<bool, SubscriptionError> {
        self.modify(|file| {
            let before = file.devices.len();
            file.devices.retain(|e| e.device != device);
            Ok(file.devices.len() != before)
        })
    }

    /// Forgets `device`'s subscription if it is still `endpoint` (the push service
    /// said it is gone; a phone that subscribed again meanwhile keeps its new one).
    pub fn forget(&self, device: &str, endpoint: &str) -> Result<bool, SubscriptionError> {
        self.modify(|file| {
            let before = file.devices.len();
            file.devices
                .retain(|e| !(e.device == device && e.subscription.endpoint == endpoint));
            Ok(file.devices.len() != before)
        })
    }

    fn load(&self) -> Result<PushFile, SubscriptionError> {
        read_json(&self.file)?.map_err(|e| SubscriptionError::Corrupt {
            path: self.file.clone(),
            message: e.to_string(),
        })
    }

    fn modify<T>(
        &self,
        f: impl FnOnce(&mut PushFile) -> Result<T, SubscriptionError>,
    ) -> Result<T, SubscriptionError> {
        modify_json(&self.file, &self.lock, || self.load(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::PushKeys;

    /// A browser's keys, as a phone would send them.
    pub(crate) fn browser_keys() -> PushKeys {
        let secret = p256::SecretKey::random(&mut p256::elliptic_curve::rand_core::OsRng);
        let public = p256::elliptic_curve::sec1::ToEncodedPoint::to_encoded_point(
            &secret.public_key(),
            false,
        );
        PushKeys {
            p256dh: URL_SAFE_NO_PAD.encode(public.as_bytes()),
            auth: URL_SAFE_NO_PAD.encode([7u8; 16]),
        }
    }

    fn sent(endpoint: &str) -> PushSubscriptionJson {
        PushSubscriptionJson {
            endpoint: endpoint.to_owned(),
            keys: browser_keys(),
        }
    }

    #[test]
    fn push_services_and_loopback_are_accepted() {
        for endpoint in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
            "https://web.push.apple.com/QGm9",
            "http://127.0.0.1:8123/push/1",
            "http://[::1]:8123/push/1",
            "http://localhost/push",
        ] {
            let sub =
                Subscription::parse(&sent(endpoint)).unwrap_or_else(|e| panic!("{endpoint}: {e}"));
            assert_eq!(sub.endpoint, endpoint);
        }
    }

    #[test]
    fn endpoints_that_would_leak_or_reach_elsewhere_are_refused_with_the_reason() {
        let refused = |endpoint: &str| match Subscription::parse(&sent(endpoint)) {
            Err(SubscriptionError::Endpoint(why)) => why,
            other => panic!("{endpoint}: {other:?}"),
        };
        assert!(refused("http://push.example.com/x").contains("loopback"));
        assert!(refused("http://192.168.1.2/x").contains("loopback"));
        assert!(refused("file:///etc/passwd").contains("https"));
        assert!(refused("javascript:alert(1)").contains("https"));
        refused("https:///nohost");
        assert!(refused("https://user:pw@push.example.com/x").contains("user"));
        assert!(refused("not a url").contains("URL"));
        assert!(
            refused(&format!("https://push.example.com/{}", "a".repeat(3000))).contains("2048")
        );
    }

    #[test]
    fn keys_that_are_not_a_browsers_are_refused() {
        let mut s = sent("https://push.example.com/x");
        s.keys.p256dh = URL_SAFE_NO_PAD.encode([4u8; 65]); // not on the curve
        assert!(matches!(
            Subscription::parse(&s),
            Err(SubscriptionError::PublicKey)
        ));
        s.keys.p256dh = "not base64!".into();
        assert!(matches!(
            Subscription::parse(&s),
            Err(SubscriptionError::PublicKey)
        ));
        let mut s = sent("https://push.example.com/x");
        s.keys.auth = URL_SAFE_NO_PAD.encode([1u8; 15]);
        assert!(matches!(
            Subscription::parse(&s),
            Err(SubscriptionError::Auth)
        ));
    }

    #[test]
    fn one_subscription_per_device_its_events_kept_and_a_gone_endpoint_forgotten_only_if_unchanged()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Subscriptions::new(&Paths::under(dir.path()));
        let first = Subscription::parse(&sent("https://push.example.com/1")).unwrap();
        let events = PushEvents {
            prompts: true,
            turns: false,
            supervisor: true,
        };
        store.subscribe("d1", first.clone(), Some(events)).unwrap();
        // The browser renewed its subscription: the new one replaces it, same events.
        let second = Subscription::parse(&sent("https://push.example.com/2")).unwrap();
        let entry = store.subscribe("d1", second.clone(), None).unwrap();
        assert_eq!(entry.events, events);
        assert_eq!(store.all().unwrap().len(), 1);
        // The push service said the old one is gone: the new one stays.
        assert!(!store.forget("d1", &first.endpoint).unwrap());
        assert!(store.of("d1").unwrap().is_some());
        assert!(store.forget("d1", &second.endpoint).unwrap());
        assert!(store.of("d1").unwrap().is_none());
        assert!(store.set_events("d1", events).unwrap().is_none());
    }

    #[test]
    fn a_damaged_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = Subscriptions::new(&paths);
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        let file = paths.state_dir().join("push.json");
        std::fs::write(&file, "{ not json").unwrap();
        let sub = Subscription::parse(&sent("https://push.example.com/1")).unwrap();
        let err = store.subscribe("d1", sub, None).unwrap_err();
        assert!(err.to_string().contains("push.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ not json");
    }
}
