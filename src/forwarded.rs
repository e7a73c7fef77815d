//! Who a phone is, as the supervisor's public port vouches for it.
//!
//! A worker only ever sees the supervisor as its TCP peer (127.0.0.1), so it cannot
//! tell one phone from another by address, and any header a client sends — a
//! `Cf-Connecting-Ip` included — can be set by anyone who reaches the public port, the
//! agent's own Bash tool among them. So the supervisor, which sees the real peer, says
//! who the client is in one header it signs ([`CLIENT_HEADER`]: the address and an
//! HMAC over it keyed from the API token), after removing any copy the client sent.
//! The worker believes an address only with a valid signature; without one, a
//! connection is known by its own peer address. The supervisor's health probe, which
//! goes straight to the private port, proves itself the same way ([`PROBE_HEADER`]):
//! a missing header never makes a connection "the supervisor's".
//!
//! The key is the supervisor's own (random at each start, handed to each worker with
//! its token on stdin), so not even a token holder can sign: a stolen token cannot be
//! used to hide as the probe. A worker run by hand, with no supervisor, keys it from
//! the token instead.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::token::ApiToken;

/// The header the public port adds to every request it forwards.
pub const CLIENT_HEADER: &str = "x-chroxy-client";
/// The header the supervisor's health probe proves itself with.
pub const PROBE_HEADER: &str = "x-chroxy-probe";

type HmacSha256 = Hmac<Sha256>;

/// The address limits are counted against: an IPv4 address as it is, an IPv6 one as its
/// /64 (one customer's network: anyone with one has 2^64 addresses to rotate through).
pub fn bucket(addr: IpAddr) -> IpAddr {
    match addr {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::V6(octets.into())
            }
        },
        v4 => v4,
    }
}

/// Signs and checks [`CLIENT_HEADER`] and [`PROBE_HEADER`].
#[derive(Clone, PartialEq, Eq)]
pub struct Voucher {
    key: [u8; 32],
}

/// No randomness to make a key from.
#[derive(Debug, thiserror::Error)]
#[error("the OS gave no random bytes for the supervisor's signing key: {0}")]
pub struct NoRandomness(String);

impl std::fmt::Debug for Voucher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Voucher(..)")
    }
}

impl Voucher {
    /// A fresh random key: the supervisor's, for its workers.
    pub fn generate() -> Result<Self, NoRandomness> {
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| NoRandomness(e.to_string()))?;
        Ok(Self { key })
    }

    /// The key as it travels to a worker (64 hex digits). A secret: never log it.
    pub fn expose_hex(&self) -> String {
        hex(&self.key)
    }

    /// A key received as [`Voucher::expose_hex`] wrote it.
    pub fn from_hex(text: &str) -> Option<Self> {
        let text = text.trim();
        if text.len() != 64 || !text.is_ascii() {
            return None;
        }
        let mut key = [0u8; 32];
        for (i, byte) in key.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(Self { key })
    }

    /// The voucher of a worker run by hand, which has no supervisor to share a key with.
    pub fn new(token: &ApiToken) -> Self {
        let mut mac = hmac_for(token.expose().as_bytes());
        mac.update(b"chroxy forwarded-client v1");
        Self {
            key: mac.finalize().into_bytes().into(),
        }
    }

    /// The header value for a client at `addr`: `<addr> <hex signature>`.
    pub fn header_value(&self, addr: IpAddr) -> String {
        let addr = addr.to_string();
        format!("{addr} {}", hex(&self.sign(&addr)))
    }

    /// The address a header value vouches for, if its signature is ours.
    pub fn verify(&self, value: &str) -> Option<IpAddr> {
        let (addr, signature) = value.trim().split_once(' ')?;
        let expected = hex(&self.sign(addr));
        if !bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes())) {
            return None;
        }
        addr.parse().ok()
    }

    /// The value of [`PROBE_HEADER`].
    pub fn probe_value(&self) -> String {
        hex(&self.sign("probe"))
    }

    /// Whether a [`PROBE_HEADER`] value is ours.
    pub fn is_probe(&self, value: &str) -> bool {
        bool::from(self.probe_value().as_bytes().ct_eq(value.trim().as_bytes()))
    }

    fn sign(&self, addr: &str) -> [u8; 32] {
        let mut mac = hmac_for(&self.key);
        mac.update(addr.as_bytes());
        mac.finalize().into_bytes().into()
    }
}

fn hmac_for(key: &[u8]) -> HmacSha256 {
    // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
    <HmacSha256 as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_supervisors_key_travels_and_only_it_signs_the_probe() {
        let key = Voucher::generate().unwrap();
        let received = Voucher::from_hex(&key.expose_hex()).unwrap();
        assert!(received == key);
        assert!(received.is_probe(&key.probe_value()));
        // A token holder can make the hand-run key, never the supervisor's.
        let from_token = Voucher::new(&ApiToken::new("t"));
        assert!(!received.is_probe(&from_token.probe_value()));
        assert!(!received.is_probe(""));
        for bad in ["", "zz", &"g".repeat(64), &"a".repeat(63), &"é".repeat(32)] {
            assert!(Voucher::from_hex(bad).is_none(), "{bad:?}");
        }
        assert!(!format!("{key:?}").contains(&key.expose_hex()));
    }

    #[test]
    fn only_a_signature_made_with_the_same_token_is_believed() {
        let ours = Voucher::new(&ApiToken::new("token-a"));
        let addr: IpAddr = "203.0.113.9".parse().unwrap();
        let value = ours.header_value(addr);
        assert_eq!(ours.verify(&value), Some(addr));
        assert!(!value.contains("token-a"));

        let rotated = Voucher::new(&ApiToken::new("token-b"));
        assert_eq!(rotated.verify(&value), None, "a rotated token voids it");
        // Anyone on loopback can send the header; without the key they cannot sign it.
        let other: IpAddr = "198.51.100.1".parse().unwrap();
        let (_, sig) = value.split_once(' ').unwrap();
        for forged in [
            format!("{other} {sig}"),
            other.to_string(),
            format!("{other} "),
            format!("{other} {}", "0".repeat(64)),
            String::new(),
            "garbage".into(),
        ] {
            assert_eq!(ours.verify(&forged), None, "{forged:?}");
        }
    }
}
