//! Pairing a phone (docs/protocol.md "Pairing link"): the link the QR code carries, and the
//! QR itself as SVG (the window) and as terminal text (`chroxy start`, `chroxy pair`).
//!
//! The link is `https://<host>/#pair=<base64url JSON {"v":2,"url":"wss://<host>/ws","key":…,"code":…}>`:
//! the desktop's public key, which the phone pins (protocol v2), and a one-time pairing
//! code ride in the fragment, which browsers never send to any server; the phone client
//! removes it from the address bar once stored. Every QR shown carries a fresh code
//! ([`crate::devices`]): the phone that scans it is paired at once, without waiting for
//! the owner's approval, since only someone at the computer could see it. The API token
//! is in the link only while `[security] allow_token_auth` lets v1 clients in. A link
//! holds a code (and maybe the token), so it is printed for the user and never logged.

use std::fmt;

use base64::Engine;
use qrcode::render::{svg, unicode};
use qrcode::QrCode;
use serde::{Deserialize, Serialize};

use crate::devices::{Devices, DevicesError, PairingCode};
use crate::token::ApiToken;

/// Said wherever a pairing names a plain `http://` address of the LAN while tokens are
/// refused: no phone could use it.
pub const UNENCRYPTABLE: &str = "Phones cannot connect at this address: a browser encrypts only on https:// or on this machine itself, and this machine accepts only encrypted phones. Start a tunnel (`chroxy start --tunnel quick`), or set `[security] allow_token_auth = true` to let phones in with the token, unencrypted.";

/// Why no link could be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PairingError {
    /// The public URL is not `http(s)://host[:port]`.
    #[error("`{0}` is not a public URL Chroxy can pair with; use the form https://host or http://host:port (set `[tunnel] public_url` in the config)")]
    BadUrl(String),
    /// The link does not fit in a QR code (cannot happen with real tokens and hosts).
    #[error("the pairing link is too long for a QR code")]
    TooLong,
    /// A `chroxy://` link was asked for, but the Chroxy app authenticates with the
    /// token (protocol v1), which this machine refuses.
    #[error("the Chroxy app's link carries the API token, which this machine does not accept from phones; set `[security] allow_token_auth = true` in the config to use that app (the tunnel then sees the token)")]
    TokenAuthOff,
}

/// What the fragment of a pairing link decodes to.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    /// Format version: 2 (1: the token, no key).
    pub v: u32,
    /// The WebSocket URL.
    pub url: String,
    /// The desktop's public key, base64url: what the phone pins (v2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// The API token, only while v1 clients are let in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The one-time pairing code, when the link was made to be shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("v", &self.v)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// How `chroxy pair --format` writes a pairing: `url` (the https link the QR encodes),
/// `chroxy` (for the Chroxy app), `svg` (the QR code as SVG), `terminal` (the QR code
/// as text).
// The values' own docs would be printed a second time in `chroxy pair --help`, after
// the option's text that already says what each is.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Url,
    Chroxy,
    Svg,
    Terminal,
}

/// A public URL plus the desktop's key (and, once shown, a pairing code): everything a
/// phone needs.
#[derive(Clone)]
pub struct Pairing {
    secure: bool,
    host: String,
    key: [u8; 32],
    token: ApiToken,
    /// The token goes in the link too (`[security] allow_token_auth`).
    with_token: bool,
    code: Option<PairingCode>,
}

impl fmt::Debug for Pairing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pairing")
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Pairing {
    /// From the public URL phones use (a tunnel's `https://…`, or `http://host:port`),
    /// the API token and the desktop's public key.
    pub fn new(public_url: &str, token: ApiToken, key: [u8; 32]) -> Result<Self, PairingError> {
        let (secure, host) = parse_url(public_url)?;
        Ok(Self {
            secure,
            host,
            key,
            token,
            with_token: false,
            code: None,
        })
    }

    /// Puts the token in the link too, for clients that speak only v1
    /// (`[security] allow_token_auth`).
    pub fn allowing_tokens(mut self, allow: bool) -> Self {
        self.with_token = allow;
        self
    }

    /// This pairing with a fresh one-time code in its link, for a QR about to be shown
    /// (each view that shows one mints its own, so each code is seen in one place).
    pub fn with_fresh_code(&self, devices: &Devices, now: u64) -> Result<Self, DevicesError> {
        Ok(self.clone().with_code(devices.mint_code(now)?))
    }

    /// This pairing with `code` in its link.
    pub fn with_code(mut self, code: PairingCode) -> Self {
        self.code = Some(code);
        self
    }

    /// Same machine, same key and token (whatever the code).
    fn is_same(&self, other: &Pairing) -> bool {
        self.secure == other.secure
            && self.host == other.host
            && self.key == other.key
            && self.token == other.token
            && self.with_token == other.with_token
    }

    /// Whether a phone's browser opening this page can speak protocol v2: browsers
    /// offer their cryptography only to secure pages, `https://` or this machine's own
    /// loopback address, never a plain `http://` LAN address.
    pub fn browsers_can_encrypt(&self) -> bool {
        encryptable(self.secure, &self.host)
    }

    /// Whether phones can use this pairing at all: encrypted, or with the token.
    pub fn usable_by_browsers(&self) -> bool {
        self.with_token || self.browsers_can_encrypt()
    }

    /// The pairing code in its link, if any.
    pub fn code(&self) -> Option<&PairingCode> {
        self.code.as_ref()
    }

    /// The public page, without any secret: what may be shown and logged.
    pub fn public_url(&self) -> String {
        format!(
            "{}://{}",
            if self.secure { "https" } else { "http" },
            self.host
        )
    }

    /// The WebSocket URL phones connect to.
    pub fn ws_url(&self) -> String {
        format!(
            "{}://{}/ws",
            if self.secure { "wss" } else { "ws" },
            self.host
        )
    }

    /// `https://host/#pair=…`: what the QR encodes.
    pub fn link(&self) -> String {
        let payload = Payload {
            v: 2,
            url: self.ws_url(),
            key: Some(crate::channel::encode_key(&self.key)),
            token: self.with_token.then(|| self.token.expose().to_owned()),
            code: self.code.as_ref().map(|c| c.expose().to_owned()),
        };
        // A struct of strings always serializes.
        let json = serde_json::to_vec(&payload).unwrap_or_default();
        let encoded = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        format!("{}/#pair={encoded}", self.public_url())
    }

    /// `chroxy://host?token=…`, for the Chroxy mobile app (protocol v1: only while
    /// tokens are accepted).
    pub fn chroxy_link(&self) -> Result<String, PairingError> {
        if !self.with_token {
            return Err(PairingError::TokenAuthOff);
        }
        // Tokens are base64url and codes hex: nothing in them needs escaping in a query.
        let code = self
            .code
            .as_ref()
            .map(|c| format!("&code={}", c.expose()))
            .unwrap_or_default();
        Ok(format!(
            "chroxy://{}?token={}{code}",
            self.host,
            self.token.expose()
        ))
    }

    fn qr(&self) -> Result<QrCode, PairingError> {
        QrCode::new(self.link().as_bytes()).map_err(|_| PairingError::TooLong)
    }

    /// The QR code of [`link`](Self::link) as an SVG document.
    pub fn svg(&self) -> Result<String, PairingError> {
        Ok(self
            .qr()?
            .render::<svg::Color<'_>>()
            .min_dimensions(256, 256)
            .quiet_zone(true)
            .build())
    }

    /// The QR code as text for a terminal (two modules per character; light on dark
    /// terminals is handled by printing dark modules as spaces).
    pub fn terminal(&self) -> Result<String, PairingError> {
        Ok(self
            .qr()?
            .render::<unicode::Dense1x2>()
            .dark_color(unicode::Dense1x2::Light)
            .light_color(unicode::Dense1x2::Dark)
            .quiet_zone(true)
            .build())
    }

    /// The pairing written as `format` asks.
    pub fn render(&self, format: Format) -> Result<String, PairingError> {
        match format {
            Format::Url => Ok(self.link()),
            Format::Chroxy => self.chroxy_link(),
            Format::Svg => self.svg(),
            Format::Terminal => self.terminal(),
        }
    }

    /// The QR's modules, row by row (true = dark), for decoders in tests.
    pub fn modules(&self) -> Result<(usize, Vec<bool>), PairingError> {
        let code = self.qr()?;
        let dark = code
            .to_colors()
            .into_iter()
            .map(|c| c == qrcode::Color::Dark)
            .collect();
        Ok((code.width(), dark))
    }
}

/// A shown code is replaced this long before it expires, so the QR on screen always has
/// time left for the phone that scans it.
const RENEW_BEFORE_EXPIRY_MS: u64 = 60 * 1000;

/// The pairing a window keeps on screen. A window redraws on every status change; each
/// redraw must not mint a code (the QR would flicker and the registry fill), so the
/// code is kept until it is used, is about to expire, or the pairing itself changes (a
/// new tunnel URL, a rotated token).
#[derive(Debug, Default)]
pub struct ShownPairing {
    /// The pairing without its code (to notice a change), the one shown, and when its
    /// code must be replaced.
    shown: Option<(Pairing, Pairing, u64)>,
}

impl ShownPairing {
    /// What to show for `base` at `now`: the pairing shown so far, or a fresh code.
    pub fn current(
        &mut self,
        base: &Pairing,
        devices: &Devices,
        now: u64,
    ) -> Result<Pairing, DevicesError> {
        if let Some((shown_for, shown, renew_at)) = &self.shown {
            let open = match shown.code() {
                Some(code) => devices.is_code_open(code, now)?,
                None => false,
            };
            if shown_for.is_same(base) && now < *renew_at && open {
                return Ok(shown.clone());
            }
        }
        let shown = base.with_fresh_code(devices, now)?;
        let renew_at = now + crate::devices::CODE_LIFETIME_MS - RENEW_BEFORE_EXPIRY_MS;
        self.shown = Some((base.clone(), shown.clone(), renew_at));
        Ok(shown)
    }

    /// When the code on screen must be replaced even if nothing else changes.
    pub fn renew_at(&self) -> Option<u64> {
        self.shown.as_ref().map(|(_, _, at)| *at)
    }
}

/// The URL phones should use: the tunnel's while it is up, else the configured one
/// (`[tunnel] public_url`, e.g. a LAN address), else the public port on this machine.
pub fn public_url(tunnel_url: Option<&str>, configured: Option<&str>, public_port: u16) -> String {
    tunnel_url
        .or(configured)
        .map(str::to_owned)
        .unwrap_or_else(|| format!("http://127.0.0.1:{public_port}"))
}

/// The payload in a pairing link's fragment.
pub fn decode_link(link: &str) -> Option<Payload> {
    let (_, fragment) = link.split_once("#pair=")?;
    let json = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(fragment)
        .ok()?;
    serde_json::from_slice(&json).ok()
}

/// Whether a phone's browser could speak protocol v2 with the page at `public_url`
/// (see [`Pairing::browsers_can_encrypt`]), for checks that have a URL and no pairing.
pub fn url_is_encryptable(public_url: &str) -> Result<bool, PairingError> {
    let (secure, host) = parse_url(public_url)?;
    Ok(encryptable(secure, &host))
}

/// `https://host[:port]` or `http://host[:port]`: whether it is https, and the host.
fn parse_url(public_url: &str) -> Result<(bool, String), PairingError> {
    let bad = || PairingError::BadUrl(public_url.chars().take(200).collect());
    let (secure, rest) = if let Some(rest) = public_url.strip_prefix("https://") {
        (true, rest)
    } else if let Some(rest) = public_url.strip_prefix("http://") {
        (false, rest)
    } else {
        return Err(bad());
    };
    let host = rest.trim_end_matches('/');
    let valid = !host.is_empty()
        && host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-.:[]".contains(c));
    if !valid {
        return Err(bad());
    }
    Ok((secure, host.to_owned()))
}

/// WebCrypto's X25519 exists only in a secure context: https, or this machine.
fn encryptable(secure: bool, host: &str) -> bool {
    let name = host
        .rsplit_once(':')
        .filter(|(_, port)| port.chars().all(|c| c.is_ascii_digit()))
        .map_or(host, |(name, _)| name);
    secure || ["127.0.0.1", "localhost", "[::1]"].contains(&name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];

    fn pairing(url: &str, token: &str) -> Pairing {
        Pairing::new(url, ApiToken::new(token), KEY).unwrap()
    }

    #[test]
    fn links_carry_the_websocket_url_and_the_key_and_the_token_only_when_allowed() {
        let v2 = pairing(
            "https://tender-quiet-words-1.trycloudflare.com/",
            "tok_en-1",
        );
        let payload = decode_link(&v2.link()).unwrap();
        assert_eq!(payload.v, 2);
        assert_eq!(
            payload.key.as_deref(),
            Some(crate::channel::encode_key(&KEY).as_str())
        );
        assert_eq!(payload.token, None, "no token unless v1 clients are let in");
        assert!(!v2.link().contains("tok_en"));
        assert_eq!(v2.chroxy_link(), Err(PairingError::TokenAuthOff));

        let p = v2.allowing_tokens(true);
        let link = p.link();
        assert!(link.starts_with("https://tender-quiet-words-1.trycloudflare.com/#pair="));
        let payload = decode_link(&link).unwrap();
        assert_eq!(
            payload.url,
            "wss://tender-quiet-words-1.trycloudflare.com/ws"
        );
        assert_eq!(payload.token.as_deref(), Some("tok_en-1"));
        assert_eq!(
            p.chroxy_link().unwrap(),
            "chroxy://tender-quiet-words-1.trycloudflare.com?token=tok_en-1"
        );
        assert!(!format!("{p:?} {payload:?}").contains("tok_en"));
        assert_eq!(payload.code, None);

        let code = PairingCode::new("0123456789abcdef0123456789abcdef");
        let shown = p.clone().with_code(code.clone());
        let payload = decode_link(&shown.link()).unwrap();
        assert_eq!(payload.code.as_deref(), Some(code.expose()));
        assert!(shown
            .chroxy_link()
            .unwrap()
            .ends_with(&format!("&code={}", code.expose())));
        assert!(!format!("{shown:?} {payload:?}").contains(code.expose()));

        let local = pairing("http://127.0.0.1:8765", "t");
        assert_eq!(local.ws_url(), "ws://127.0.0.1:8765/ws");
    }

    #[test]
    fn a_shown_code_stays_until_it_is_used_or_about_to_expire() {
        let dir = tempfile::tempdir().unwrap();
        let devices = Devices::new(&crate::store::Paths::under(dir.path()));
        let base = pairing("http://127.0.0.1:8765", "t");
        let mut shown = ShownPairing::default();
        let t0 = 1_764_600_000_000;
        let code = |p: &Pairing| p.code().unwrap().expose().to_owned();
        let first = code(&shown.current(&base, &devices, t0).unwrap());
        assert_eq!(
            code(&shown.current(&base, &devices, t0 + 1000).unwrap()),
            first,
            "redraws keep it"
        );
        // Used by a phone: the next redraw shows a fresh one.
        let used = crate::devices::PairingCode::new(first.clone());
        let knock = crate::devices::Knock {
            code: Some(&used),
            ..Default::default()
        };
        devices.admit(&knock, t0 + 2000).unwrap();
        let second = code(&shown.current(&base, &devices, t0 + 3000).unwrap());
        assert_ne!(second, first);
        // A minute before it expires, it is replaced.
        let renew = shown.renew_at().unwrap();
        assert_eq!(
            code(&shown.current(&base, &devices, renew - 1).unwrap()),
            second
        );
        let third = code(&shown.current(&base, &devices, renew).unwrap());
        assert_ne!(third, second);
        // A rotated token is a new pairing: a new code with it.
        let rotated = pairing("http://127.0.0.1:8765", "u");
        let fourth = shown.current(&rotated, &devices, renew + 1).unwrap();
        assert_ne!(code(&fourth), third);
    }

    #[test]
    fn what_is_not_a_public_url_is_refused_by_name() {
        for bad in [
            "ftp://x",
            "x.example",
            "https://",
            "https://a b",
            "https://x/#y",
        ] {
            let err = Pairing::new(bad, ApiToken::new("t"), KEY).unwrap_err();
            assert!(err.to_string().contains("public_url"), "{bad}: {err}");
        }
    }

    #[test]
    fn browsers_encrypt_on_https_and_loopback_only() {
        for (url, can) in [
            ("https://a.trycloudflare.com", true),
            ("http://127.0.0.1:8765", true),
            ("http://localhost:8765", true),
            ("http://[::1]:8765", true),
            ("http://192.168.1.20:8765", false),
            ("http://desk.lan", false),
        ] {
            let p = pairing(url, "t");
            assert_eq!(p.browsers_can_encrypt(), can, "{url}");
            assert_eq!(url_is_encryptable(url), Ok(can), "{url}");
            assert_eq!(p.usable_by_browsers(), can, "{url}");
            assert!(p.allowing_tokens(true).usable_by_browsers(), "{url}");
        }
    }

    #[test]
    fn the_qr_renders_as_svg_and_text() {
        let p = pairing("http://127.0.0.1:8765", "t");
        let svg = p.svg().unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
        let text = p.terminal().unwrap();
        assert!(text.lines().count() > 10);
    }
}
