//! Chroxy's own clients' encryption (docs/protocol.md "The `encrypted` envelope"), for
//! the clients that cannot speak protocol v2: the client folds an ephemeral X25519 key
//! and a salt into its token `auth` (`eagerPublicKey`, `eagerSalt`), the worker answers
//! its own ephemeral key in `auth_ok` (`serverPublicKey`), and every frame after that
//! is a text frame `{"type":"encrypted","d":…,"n":…}` sealed with XSalsa20-Poly1305.
//!
//! It is weaker than v2 and only ever offered beside token auth (`allow_token_auth`):
//! the token itself crosses the tunnel in the clear, and nothing pins this machine's
//! key, so a tunnel that rewrites the handshake can read everything. What it does
//! stop is a tunnel that only records. The construction is the clients' (tweetnacl's
//! `box.before`, then SHA-512 of that key and the salt; nonces are a direction byte and
//! a little-endian counter), checked here against vectors tweetnacl computed. The
//! primitives are RustCrypto's; this module only arranges them.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use crypto_secretbox::aead::{Aead, KeyInit};
use crypto_secretbox::XSalsa20Poly1305;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512};

/// Nonce direction bytes: each side seals under its own, so no nonce is used twice.
const FROM_SERVER: u8 = 0x00;
const FROM_CLIENT: u8 = 0x01;
/// The clients refuse counters past this; a connection that long reconnects.
const MAX_COUNTER: u64 = 1 << 48;
const SALT_LEN: usize = 32;
/// The clients' schema allows at most this many characters per field.
const FIELD_MAX: usize = 512;

/// Why an envelope could not be set up or opened. None carries key material or
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    /// The client's half of the key exchange is not what the clients send.
    #[error("{0}")]
    BadExchange(&'static str),
    /// A frame failed: what was wrong with it.
    #[error("the encrypted envelope broke: {0}")]
    Broken(&'static str),
    /// The OS random source failed.
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// The worker's side of a connection's exchange: its public key for `auth_ok`, and a
/// sealer and an opener that the writer and reader tasks each own.
pub struct Accepted {
    /// Base64 (standard, padded), as `serverPublicKey`.
    pub server_public: String,
    /// Seals the worker's frames.
    pub sealer: Sealer,
    /// Opens the client's.
    pub opener: Opener,
}

/// Answers a client's `eagerPublicKey` and `eagerSalt` with a fresh key pair.
pub fn accept(client_public: &str, salt: &str) -> Result<Accepted, EnvelopeError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| EnvelopeError::Random(e.to_string()))?;
    accept_with(secret, client_public, salt)
}

fn accept_with(
    secret: [u8; 32],
    client_public: &str,
    salt: &str,
) -> Result<Accepted, EnvelopeError> {
    let client_public: [u8; 32] =
        decode(client_public, "eagerPublicKey is not 32 bytes of base64")?
            .try_into()
            .map_err(|_| EnvelopeError::BadExchange("eagerPublicKey is not 32 bytes of base64"))?;
    let salt: [u8; SALT_LEN] = decode(salt, "eagerSalt is not 32 bytes of base64")?
        .try_into()
        .map_err(|_| EnvelopeError::BadExchange("eagerSalt is not 32 bytes of base64"))?;
    let server_public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
    let key = derive(secret, client_public, &salt)?;
    Ok(Accepted {
        server_public: STANDARD.encode(server_public.as_bytes()),
        sealer: Sealer {
            key: key.clone(),
            next: 0,
        },
        opener: Opener { key, next: 0 },
    })
}

/// The connection's key, the same on both sides: SHA-512 of tweetnacl's `box.before`
/// (HSalsa20 of the X25519 output under a zero input) and the salt, first half.
fn derive(
    secret: [u8; 32],
    peer_public: [u8; 32],
    salt: &[u8; SALT_LEN],
) -> Result<XSalsa20Poly1305, EnvelopeError> {
    let shared = x25519_dalek::StaticSecret::from(secret)
        .diffie_hellman(&x25519_dalek::PublicKey::from(peer_public));
    // A low-order point gives every attacker the same "shared" key.
    if !shared.was_contributory() {
        return Err(EnvelopeError::BadExchange(
            "eagerPublicKey is not a usable X25519 key",
        ));
    }
    let before = salsa20::hsalsa::<salsa20::cipher::consts::U10>(
        shared.as_bytes().into(),
        &Default::default(),
    );
    let mut hash = Sha512::new();
    hash.update(before);
    hash.update(salt);
    XSalsa20Poly1305::new_from_slice(&hash.finalize()[..32])
        .map_err(|_| EnvelopeError::BadExchange("key derivation failed"))
}

fn decode(field: &str, wrong: &'static str) -> Result<Vec<u8>, EnvelopeError> {
    if field.len() > FIELD_MAX {
        return Err(EnvelopeError::BadExchange(wrong));
    }
    STANDARD
        .decode(field)
        .map_err(|_| EnvelopeError::BadExchange(wrong))
}

fn nonce(direction: u8, counter: u64) -> crypto_secretbox::Nonce {
    let mut nonce = crypto_secretbox::Nonce::default();
    nonce[0] = direction;
    nonce[1..9].copy_from_slice(&counter.to_le_bytes());
    nonce
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    d: std::borrow::Cow<'a, str>,
    n: u64,
}

/// Seals the worker's frames, counting from 0.
pub struct Sealer {
    key: XSalsa20Poly1305,
    next: u64,
}

impl Sealer {
    /// The envelope's JSON text for one frame.
    pub fn seal(&mut self, text: &str) -> Result<String, EnvelopeError> {
        self.seal_as(FROM_SERVER, text)
    }

    fn seal_as(&mut self, direction: u8, text: &str) -> Result<String, EnvelopeError> {
        if self.next > MAX_COUNTER {
            return Err(EnvelopeError::Broken("the counter ran out; reconnect"));
        }
        let sealed = self
            .key
            .encrypt(&nonce(direction, self.next), text.as_bytes())
            .map_err(|_| EnvelopeError::Broken("sealing failed"))?;
        let envelope = Envelope {
            kind: "encrypted",
            d: STANDARD.encode(sealed).into(),
            n: self.next,
        };
        self.next += 1;
        serde_json::to_string(&envelope).map_err(|_| EnvelopeError::Broken("sealing failed"))
    }
}

/// Opens the client's frames, which must come in order from 0.
pub struct Opener {
    key: XSalsa20Poly1305,
    next: u64,
}

impl Opener {
    /// The frame inside one envelope. Anything but the next envelope, intact, breaks
    /// the connection: a replayed or reordered one has the wrong `n`, an altered one
    /// fails its tag, and a plain frame is refused outright.
    pub fn open(&mut self, text: &str) -> Result<String, EnvelopeError> {
        self.open_as(FROM_CLIENT, text)
    }

    fn open_as(&mut self, direction: u8, text: &str) -> Result<String, EnvelopeError> {
        let envelope: Envelope<'_> = serde_json::from_str(text)
            .map_err(|_| EnvelopeError::Broken("a frame that is not an `encrypted` envelope"))?;
        if envelope.kind != "encrypted" {
            return Err(EnvelopeError::Broken(
                "a frame that is not an `encrypted` envelope",
            ));
        }
        if envelope.n != self.next {
            return Err(EnvelopeError::Broken(
                "an envelope out of order (replayed, reordered or one missing)",
            ));
        }
        let sealed = STANDARD
            .decode(envelope.d.as_bytes())
            .map_err(|_| EnvelopeError::Broken("an envelope whose `d` is not base64"))?;
        let plain = self
            .key
            .decrypt(&nonce(direction, envelope.n), sealed.as_slice())
            .map_err(|_| EnvelopeError::Broken("an envelope that does not open (altered)"))?;
        self.next += 1;
        String::from_utf8(plain).map_err(|_| EnvelopeError::Broken("an envelope that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
