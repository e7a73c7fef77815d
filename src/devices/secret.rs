//! The two secrets of device pairing, and what is kept of them on disk (a SHA-256,
//! never the secret: a copied `devices.json` lets nobody in).
//!
//! A device key is 32 random bytes (base64url), minted by the worker and kept by the
//! phone. A pairing code is 128 random bits as 32 hex digits: it rides in the QR link
//! and is never typed, so its length costs nothing, and at 128 bits not even an
//! attacker who holds the API token and tries codes without limit finds one in its ten
//! minutes; no rate limit on codes is needed for that.

use std::fmt;

use base64::Engine;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::DevicesError;

/// A device's secret, as the phone presents it in `auth`. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct DeviceKey(String);

impl DeviceKey {
    /// Wraps a key received from a phone (or held by a test harness).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// 32 random bytes, base64url without padding.
    pub fn generate() -> Result<Self, DevicesError> {
        let bytes: [u8; 32] = random()?;
        Ok(Self(
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes),
        ))
    }

    /// The key itself, for the one frame that hands it to its phone. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(super) fn digest(&self) -> String {
        sha256_hex(&self.0)
    }
}

impl fmt::Debug for DeviceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DeviceKey(..)")
    }
}

/// A one-time pairing code, as a QR link carries it. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PairingCode(String);

impl PairingCode {
    /// Wraps a code received from a phone.
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub(super) fn generate() -> Result<Self, DevicesError> {
        let bytes: [u8; 16] = random()?;
        Ok(Self(hex(&bytes)))
    }

    /// The code itself, for the pairing link. Never log it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub(super) fn digest(&self) -> String {
        sha256_hex(&self.0)
    }
}

impl fmt::Debug for PairingCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PairingCode(..)")
    }
}

/// Whether two digests are equal, in constant time.
pub(super) fn same_digest(a: &str, b: &str) -> bool {
    a.as_bytes().ct_eq(b.as_bytes()).into()
}

/// Letters of public device ids: no 0/o, 1/l/i, so an id read off a screen and typed
/// into `chroxy devices approve` is the right one.
const ID_ALPHABET: &[u8] = b"23456789abcdefghjkmnpqrstuvwxyz";
/// Six of them: ~30 bits, unique among a handful of devices (checked), short to type.
const ID_LEN: usize = 6;

/// A fresh public id. Not a secret: it only names a device in views and commands.
pub(super) fn new_id() -> Result<String, DevicesError> {
    let bytes: [u8; ID_LEN] = random()?;
    Ok(bytes
        .iter()
        .map(|b| ID_ALPHABET[*b as usize % ID_ALPHABET.len()] as char)
        .collect())
}

fn random<const N: usize>() -> Result<[u8; N], DevicesError> {
    let mut bytes = [0u8; N];
    getrandom::fill(&mut bytes).map_err(|e| DevicesError::Random(e.to_string()))?;
    Ok(bytes)
}

fn sha256_hex(text: &str) -> String {
    hex(&Sha256::digest(text.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
