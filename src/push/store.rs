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

/// A browser's push subscription (`PushSubscription.toJSON()`), checked, its keys
/// in canonical base64url (whatever padding or spacing the phone sent).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    /// Where pushes are posted (a capability: never logged).
    pub endpoint: String,
    /// The browser's P-256 public key, base64url.
    pub p256dh: String,
    /// Its 16-byte authentication secret, base64url.
    pub auth: String,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("host", &self.host())
            .finish_non_exhaustive()
    }
}

/// Which push services are reachable: a phone's own (`https://` to a public address),
/// and — only where `[push] loopback_push_service` says so, as the tests do — one on
/// this machine's loopback over plain `http://`. A paired device choosing its endpoint
/// must not make the supervisor post to the owner's private network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// Public push services only.
    Public,
    /// Those, and `http://` to loopback.
    AlsoLoopback,
}

impl Subscription {
    /// Checks what a phone sent.
    pub fn parse(sent: &PushSubscriptionJson, reach: Reach) -> Result<Self, SubscriptionError> {
        let endpoint = sent.endpoint.trim();
        check_endpoint(endpoint, reach)?;
        let p256dh = canonical(&sent.keys.p256dh, 65).ok_or(SubscriptionError::PublicKey)?;
        p256::PublicKey::from_sec1_bytes(&p256dh).map_err(|_| SubscriptionError::PublicKey)?;
        let auth = canonical(&sent.keys.auth, 16).ok_or(SubscriptionError::Auth)?;
        Ok(Self {
            endpoint: endpoint.to_owned(),
            p256dh: URL_SAFE_NO_PAD.encode(p256dh),
            auth: URL_SAFE_NO_PAD.encode(auth),
        })
    }

    /// The endpoint, checked again at delivery: the file may have been written by
    /// another release, or by hand.
    pub fn uri(&self, reach: Reach) -> Result<http::Uri, SubscriptionError> {
        check_endpoint(&self.endpoint, reach)
    }

    /// The browser's public key.
    pub fn public_key(&self) -> Result<p256::PublicKey, SubscriptionError> {
        let bytes = canonical(&self.p256dh, 65).ok_or(SubscriptionError::PublicKey)?;
        p256::PublicKey::from_sec1_bytes(&bytes).map_err(|_| SubscriptionError::PublicKey)
    }

    /// The browser's authentication secret.
    pub fn auth_secret(&self) -> Result<web_push_native::Auth, SubscriptionError> {
        let bytes = canonical(&self.auth, 16).ok_or(SubscriptionError::Auth)?;
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

/// `text` as exactly `len` bytes of base64url (padding tolerated, as some libraries
/// add it); a longer text is refused before it is decoded.
fn canonical(text: &str, len: usize) -> Option<Vec<u8>> {
    let text = text.trim();
    if text.len() > len.div_ceil(3) * 4 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()?;
    (bytes.len() == len).then_some(bytes)
}

fn check_endpoint(endpoint: &str, reach: Reach) -> Result<http::Uri, SubscriptionError> {
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
    let host = authority.host();
    let loopback = is_loopback(host);
    if loopback && reach == Reach::AlsoLoopback {
        return Ok(uri);
    }
    if !https {
        return Err(SubscriptionError::Endpoint(
            "plain http is not accepted (only https, to a public push service)",
        ));
    }
    if loopback || is_private(host) {
        return Err(SubscriptionError::Endpoint(
            "it names this machine or a private address, not a push service",
        ));
    }
    Ok(uri)
}

fn ip(host: &str) -> Option<std::net::IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.to_ascii_lowercase().ends_with(".localhost")
        || ip(host).is_some_and(|ip| ip.is_loopback())
}

/// An address literal no public push service has. Names are checked when they are
/// resolved, at delivery ([`reachable`]).
fn is_private(host: &str) -> bool {
    ip(host).is_some_and(private_ip)
}

fn private_ip(ip: std::net::IpAddr) -> bool {
    match ip {
        std::net::IpAddr::V4(v4) => {
            v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.octets()[0] == 100 && (v4.octets()[1] & 0xc0) == 64 // CGNAT, Tailscale
        }
        std::net::IpAddr::V6(v6) => {
            v6.is_unspecified()
                || (v6.segments()[0] & 0xfe00) == 0xfc00 // unique local
                || (v6.segments()[0] & 0xffc0) == 0xfe80 // link-local
                || v6.to_ipv4_mapped().is_some()
        }
    }
}

/// Whether a push may be posted to `ip`, an address a push service's name resolved
/// to: a public one, or loopback where `reach` allows it.
pub(super) fn reachable(ip: std::net::IpAddr, reach: Reach) -> bool {
    if ip.is_loopback() {
        return reach == Reach::AlsoLoopback;
    }
    !private_ip(ip)
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

    /// Keeps only the subscriptions of `devices` (the approved ones), in one write;
    /// returns them.
    pub fn keep_devices(&self, devices: &[String]) -> Result<Vec<Entry>, SubscriptionError> {
        self.modify(|file| {
            file.devices.retain(|e| devices.contains(&e.device));
            Ok(file.devices.clone())
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
    fn push_services_are_accepted_and_loopback_only_where_allowed() {
        for endpoint in [
            "https://fcm.googleapis.com/fcm/send/abc:def",
            "https://updates.push.services.mozilla.com/wpush/v2/gAAA",
            "https://web.push.apple.com/QGm9",
        ] {
            let sub = Subscription::parse(&sent(endpoint), Reach::Public)
                .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
            assert_eq!(sub.endpoint, endpoint);
        }
        for endpoint in [
            "http://127.0.0.1:8123/push/1",
            "http://[::1]:8123/push/1",
            "http://localhost/push",
        ] {
            assert!(Subscription::parse(&sent(endpoint), Reach::AlsoLoopback).is_ok());
            assert!(matches!(
                Subscription::parse(&sent(endpoint), Reach::Public),
                Err(SubscriptionError::Endpoint(_))
            ));
        }
    }

    #[test]
    fn endpoints_that_would_leak_or_reach_elsewhere_are_refused_with_the_reason() {
        let refused =
            |endpoint: &str| match Subscription::parse(&sent(endpoint), Reach::AlsoLoopback) {
                Err(SubscriptionError::Endpoint(why)) => why,
                other => panic!("{endpoint}: {other:?}"),
            };
        assert!(refused("http://push.example.com/x").contains("plain http"));
        assert!(refused("http://192.168.1.2/x").contains("plain http"));
        for private in [
            "https://192.168.1.2/x",
            "https://10.0.0.1/x",
            "https://169.254.169.254/latest/meta-data",
            "https://100.101.102.103/x",
            "https://[fd00::1]/x",
            "https://[fe80::1]/x",
            "https://[::ffff:10.0.0.1]/x",
            "https://0.0.0.0/x",
        ] {
            assert!(refused(private).contains("private"), "{private}");
        }
        assert!(refused("file:///etc/passwd").contains("https"));
        assert!(refused("javascript:alert(1)").contains("https"));
        refused("https:///nohost");
        assert!(refused("https://user:pw@push.example.com/x").contains("user"));
        assert!(refused("https://push example.com/x").contains("URL"));
        assert!(
            refused(&format!("https://push.example.com/{}", "a".repeat(3000))).contains("2048")
        );
    }

    #[test]
    fn keys_that_are_not_a_browsers_are_refused_and_good_ones_kept_canonical() {
        let parse = |s: &PushSubscriptionJson| Subscription::parse(s, Reach::Public);
        let mut s = sent("https://push.example.com/x");
        s.keys.p256dh = URL_SAFE_NO_PAD.encode([4u8; 65]); // not on the curve
        assert!(matches!(parse(&s), Err(SubscriptionError::PublicKey)));
        s.keys.p256dh = "not base64!".into();
        assert!(matches!(parse(&s), Err(SubscriptionError::PublicKey)));
        let mut s = sent("https://push.example.com/x");
        s.keys.auth = URL_SAFE_NO_PAD.encode([1u8; 15]);
        assert!(matches!(parse(&s), Err(SubscriptionError::Auth)));
        // A megabyte of padding behind a good key is refused, not stored.
        let mut s = sent("https://push.example.com/x");
        s.keys.auth = format!(
            "{}{}",
            URL_SAFE_NO_PAD.encode([1u8; 16]),
            "=".repeat(1 << 20)
        );
        assert!(matches!(parse(&s), Err(SubscriptionError::Auth)));
        // Padding within reason is taken, and stored without it.
        let mut s = sent("https://push.example.com/x");
        let good = s.keys.auth.clone();
        s.keys.auth = format!("{good}==");
        assert_eq!(parse(&s).unwrap().auth, good);
    }

    #[test]
    fn neither_the_endpoint_nor_the_keys_are_in_a_debug_print() {
        let s = sent("https://push.example.com/secret-capability");
        let sub = Subscription::parse(&s, Reach::Public).unwrap();
        for shown in [
            format!("{s:?}"),
            format!("{sub:?}"),
            format!("{:?}", s.keys),
        ] {
            assert!(!shown.contains("secret-capability"), "{shown}");
            assert!(!shown.contains(&s.keys.auth), "{shown}");
        }
        assert!(format!("{sub:?}").contains("push.example.com"));
    }

    #[test]
    fn one_subscription_per_device_its_events_kept_and_a_gone_endpoint_forgotten_only_if_unchanged()
    {
        let dir = tempfile::tempdir().unwrap();
        let store = Subscriptions::new(&Paths::under(dir.path()));
        let first =
            Subscription::parse(&sent("https://push.example.com/1"), Reach::Public).unwrap();
        let events = PushEvents {
            prompts: true,
            turns: false,
            supervisor: true,
        };
        store.subscribe("d1", first.clone(), Some(events)).unwrap();
        // The browser renewed its subscription: the new one replaces it, same events.
        let second =
            Subscription::parse(&sent("https://push.example.com/2"), Reach::Public).unwrap();
        let entry = store.subscribe("d1", second.clone(), None).unwrap();
        assert_eq!(entry.events, events);
        assert_eq!(store.all().unwrap().len(), 1);
        // The push service said the old one is gone: the new one stays.
        assert!(!store.forget("d1", &first.endpoint).unwrap());
        assert!(store.of("d1").unwrap().is_some());
        assert!(store.forget("d1", &second.endpoint).unwrap());
        assert!(store.of("d1").unwrap().is_none());
        assert!(store.set_events("d1", events).unwrap().is_none());
        // Only the approved devices' subscriptions stay.
        store.subscribe("d1", first.clone(), None).unwrap();
        store.subscribe("d2", second, None).unwrap();
        let kept = store.keep_devices(&["d2".to_owned()]).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].device, "d2");
        assert_eq!(store.all().unwrap(), kept);
    }

    #[test]
    fn a_damaged_file_is_named_and_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let store = Subscriptions::new(&paths);
        std::fs::create_dir_all(paths.state_dir()).unwrap();
        let file = paths.state_dir().join("push.json");
        std::fs::write(&file, "{ not json").unwrap();
        let sub = Subscription::parse(&sent("https://push.example.com/1"), Reach::Public).unwrap();
        let err = store.subscribe("d1", sub, None).unwrap_err();
        assert!(err.to_string().contains("push.json"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "{ not json");
    }
}
