//! Who a phone is, as the supervisor's public port vouches for it.
//!
//! A worker only ever sees the supervisor as its TCP peer (127.0.0.1), so it cannot
//! tell one phone from another by address, and any header a client sends — a
//! `Cf-Connecting-Ip` included — can be set by anyone who reaches the public port, the
//! agent's own Bash tool among them. So the supervisor, which sees the real peer, says
//! who the client is in one header it signs ([`CLIENT_HEADER`]: the address and an
//! HMAC over it keyed from the API token), after removing any copy the client sent.
//! The worker believes an address only with a valid signature; a connection that
//! carries none came straight to its private port (the supervisor's health probe, a
//! local tool) and is known by its own peer address.

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::secrets::ApiToken;

/// The header the public port adds to every request it forwards.
pub const CLIENT_HEADER: &str = "x-chroxy-client";

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks [`CLIENT_HEADER`]. Keyed from the API token (both sides have it)
/// through its own context string, so a signature reveals nothing about the token and
/// a rotated token invalidates every old signature.
#[derive(Clone)]
pub struct Voucher {
    key: [u8; 32],
}

impl std::fmt::Debug for Voucher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Voucher(..)")
    }
}

impl Voucher {
    /// The voucher for workers that accept `token`.
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
