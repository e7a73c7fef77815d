//! Protocol v2's secure channel (docs/protocol.md "Version 2"): a Noise IK handshake
//! between a phone (initiator, holding its device key and the desktop's pinned public
//! key) and the worker (responder, holding the desktop's identity), then every frame
//! sealed with AES-256-GCM under that direction's counter.
//!
//! The handshake and the AEAD are `snow`'s (RustCrypto underneath); this module only
//! fixes the parameters and cuts messages into Noise-sized pieces. Each direction is a
//! separate [`Sealer`] / [`Opener`] with its own counter, so a connection's writer task
//! and reader task each own one and never share a lock. A replayed, reordered, dropped
//! or altered frame cannot decrypt under the counter the receiver expects next, so any
//! tampering ends the channel at the first frame it touches.

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use sha2::{Digest, Sha256};
use snow::{HandshakeState, StatelessTransportState};

/// The Noise protocol, as both ends name it.
pub const PATTERN: &str = "Noise_IK_25519_AESGCM_SHA256";
/// Binds the handshake to this protocol: a transcript of another use of the same keys
/// never verifies here.
pub const PROLOGUE: &[u8] = b"chroxy/2";
/// Close code for a channel that could not be set up or was tampered with.
pub const CLOSE_CODE: u16 = 4002;
/// A Noise message's limit, and its AEAD tag.
const NOISE_MAX: usize = 65_535;
const TAG: usize = 16;
/// Plaintext bytes per piece: one byte of the piece's flag, the rest the message.
pub const PIECE: usize = NOISE_MAX - TAG - 1;
const MORE: u8 = 0x01;
const LAST: u8 = 0x00;
/// Message 1 of IK with an empty payload: e (32), s sealed (32 + 16), payload tag (16).
pub const MESSAGE1_LEN: usize = 96;
/// Message 2: e (32), payload tag (16).
pub const MESSAGE2_LEN: usize = 48;

/// Why the channel could not be set up or went on no further. None carries key
/// material or plaintext.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChannelError {
    /// The responder could not read message 1: the client pinned another key, or
    /// sent something that is not a handshake.
    #[error("the handshake could not be read: the client was not paired with this machine's key")]
    Handshake,
    /// The initiator could not read message 2: the server does not hold the key it
    /// was paired with.
    #[error(
        "this is not the machine you paired with: it could not prove the key in the pairing link"
    )]
    NotThePairedMachine,
    /// A frame failed: what was wrong with it.
    #[error("the encrypted channel broke: {0}")]
    Broken(&'static str),
    /// A key given by a person or a file is not 32 bytes of base64url.
    #[error("`{0}` is not an X25519 key (43 characters of base64url)")]
    BadKey(&'static str),
    /// The OS random source failed.
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// An X25519 key pair: the desktop's identity, or a device's key (a test harness's
/// phone). `Debug` shows only the fingerprint.
#[derive(Clone)]
pub struct KeyPair {
    secret: [u8; 32],
    public: [u8; 32],
}

impl KeyPair {
    /// From the secret's 32 bytes, as base64url (how the keyring keeps it).
    pub fn from_secret(encoded: &str) -> Result<Self, ChannelError> {
        let secret = decode_key(encoded).ok_or(ChannelError::BadKey("the identity secret"))?;
        Ok(Self::from_bytes(secret))
    }

    /// A new random key pair.
    pub fn generate() -> Result<Self, ChannelError> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| ChannelError::Random(e.to_string()))?;
        Ok(Self::from_bytes(secret))
    }

    fn from_bytes(secret: [u8; 32]) -> Self {
        let public = x25519_dalek::PublicKey::from(&x25519_dalek::StaticSecret::from(secret));
        Self {
            secret,
            public: public.to_bytes(),
        }
    }

    /// The public key.
    pub fn public(&self) -> &[u8; 32] {
        &self.public
    }

    /// The public key as the pairing link carries it.
    pub fn public_base64(&self) -> String {
        encode_key(&self.public)
    }

    /// The secret as the keyring keeps it. Never log it.
    pub fn expose_secret(&self) -> String {
        encode_key(&self.secret)
    }

    /// See [`fingerprint`].
    pub fn fingerprint(&self) -> String {
        fingerprint(&self.public)
    }
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyPair({})", self.fingerprint())
    }
}

/// What a person compares between the window and the phone: the first 8 bytes of
/// SHA-256 of the public key, as `3f9a-07c1-d2e4-5b68`. Short on purpose; the phone
/// pins the whole key, this only lets a person see that they match.
pub fn fingerprint(public: &[u8; 32]) -> String {
    let digest = Sha256::digest(public);
    digest[..8]
        .chunks(2)
        .map(|pair| format!("{:02x}{:02x}", pair[0], pair[1]))
        .collect::<Vec<_>>()
        .join("-")
}

/// 32 bytes as base64url without padding.
pub fn encode_key(key: &[u8; 32]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(key)
}

/// 43 characters of base64url back to 32 bytes.
pub fn decode_key(encoded: &str) -> Option<[u8; 32]> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(encoded.trim())
        .ok()?;
    bytes.try_into().ok()
}

fn builder() -> snow::Builder<'static> {
    // The pattern is a constant this module names; it always parses.
    snow::Builder::new(PATTERN.parse().expect("a valid Noise pattern"))
}

/// The worker's side: message 1 read, message 2 to send, the channel ready.
pub struct Accepted {
    /// Message 2, for the client.
    pub reply: Vec<u8>,
    /// The device key the client proved.
    pub remote: [u8; 32],
    /// Server → client.
    pub sealer: Sealer,
    /// Client → server.
    pub opener: Opener,
}

/// Answers a client's message 1 as `identity`.
pub fn accept(identity: &KeyPair, message1: &[u8]) -> Result<Accepted, ChannelError> {
    if message1.len() != MESSAGE1_LEN {
        return Err(ChannelError::Handshake);
    }
    let mut state = builder()
        .local_private_key(&identity.secret)
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_responder())
        .map_err(|_| ChannelError::Handshake)?;
    let mut payload = [0u8; MESSAGE1_LEN];
    state
        .read_message(message1, &mut payload)
        .map_err(|_| ChannelError::Handshake)?;
    let remote: [u8; 32] = state
        .get_remote_static()
        .and_then(|k| k.try_into().ok())
        .ok_or(ChannelError::Handshake)?;
    let mut reply = vec![0u8; MESSAGE2_LEN];
    let n = state
        .write_message(&[], &mut reply)
        .map_err(|_| ChannelError::Handshake)?;
    reply.truncate(n);
    let (sealer, opener) = split(state).map_err(|_| ChannelError::Handshake)?;
    Ok(Accepted {
        reply,
        remote,
        sealer,
        opener,
    })
}

/// A client's side between message 1 and message 2.
pub struct Initiating {
    state: HandshakeState,
}

/// Starts a handshake as `device` with the server that must hold `server`'s key;
/// message 1 to send.
pub fn initiate(
    device: &KeyPair,
    server: &[u8; 32],
) -> Result<(Vec<u8>, Initiating), ChannelError> {
    let mut state = builder()
        .local_private_key(&device.secret)
        .and_then(|b| b.remote_public_key(server))
        .and_then(|b| b.prologue(PROLOGUE))
        .and_then(|b| b.build_initiator())
        .map_err(|_| ChannelError::BadKey("the server's key"))?;
    let mut message = vec![0u8; MESSAGE1_LEN];
    let n = state
        .write_message(&[], &mut message)
        .map_err(|_| ChannelError::BadKey("the server's key"))?;
    message.truncate(n);
    Ok((message, Initiating { state }))
}

impl Initiating {
    /// Reads message 2: the server proved the pinned key, or it is not that machine.
    pub fn finish(mut self, message2: &[u8]) -> Result<(Sealer, Opener), ChannelError> {
        let mut payload = [0u8; MESSAGE2_LEN];
        self.state
            .read_message(message2, &mut payload)
            .map_err(|_| ChannelError::NotThePairedMachine)?;
        split(self.state).map_err(|_| ChannelError::NotThePairedMachine)
    }
}

fn split(state: HandshakeState) -> Result<(Sealer, Opener), snow::Error> {
    let transport = Arc::new(state.into_stateless_transport_mode()?);
    Ok((
        Sealer {
            transport: transport.clone(),
            next: 0,
        },
        Opener {
            transport,
            next: 0,
            broken: false,
        },
    ))
}

/// Seals this end's outgoing messages, in order.
pub struct Sealer {
    transport: Arc<StatelessTransportState>,
    next: u64,
}

impl Sealer {
    /// One message as one binary frame: its pieces sealed under the next counters,
    /// each written straight into the frame (no buffer of Noise's maximum per frame:
    /// this runs for every message the worker sends).
    pub fn seal(&mut self, text: &str) -> Result<Vec<u8>, ChannelError> {
        let bytes = text.as_bytes();
        let pieces = bytes.len().div_ceil(PIECE).max(1);
        let mut frame = Vec::with_capacity(bytes.len() + pieces * (TAG + 1));
        let mut plain = Vec::with_capacity(bytes.len().min(PIECE) + 1);
        for (i, chunk) in bytes
            .chunks(PIECE)
            .chain(bytes.is_empty().then_some(&[][..]))
            .enumerate()
        {
            plain.clear();
            plain.push(if i + 1 < pieces { MORE } else { LAST });
            plain.extend_from_slice(chunk);
            let start = frame.len();
            frame.resize(start + plain.len() + TAG, 0);
            let n = self
                .transport
                .write_message(self.next, &plain, &mut frame[start..])
                .map_err(|_| ChannelError::Broken("this end ran out of nonces"))?;
            self.next += 1;
            frame.truncate(start + n);
        }
        Ok(frame)
    }
}

/// Opens the other end's messages, in order; after one failure, nothing more.
pub struct Opener {
    transport: Arc<StatelessTransportState>,
    next: u64,
    broken: bool,
}

impl Opener {
    /// One binary frame back to its message.
    pub fn open(&mut self, frame: &[u8]) -> Result<String, ChannelError> {
        if self.broken {
            return Err(ChannelError::Broken("it already failed"));
        }
        let opened = self.open_pieces(frame);
        self.broken = opened.is_err();
        opened
    }

    fn open_pieces(&mut self, frame: &[u8]) -> Result<String, ChannelError> {
        // Each piece opens straight into the message; its flag byte is then moved out.
        let mut text = Vec::with_capacity(frame.len());
        let mut pieces = frame.chunks(NOISE_MAX).peekable();
        if pieces.peek().is_none() {
            return Err(ChannelError::Broken("an empty frame"));
        }
        while let Some(piece) = pieces.next() {
            let start = text.len();
            text.resize(start + piece.len(), 0);
            let n = self
                .transport
                .read_message(self.next, piece, &mut text[start..])
                .map_err(|_| {
                    ChannelError::Broken(
                        "a frame did not decrypt (altered, replayed, reordered, or one before it was dropped)",
                    )
                })?;
            self.next += 1;
            if n == 0 {
                return Err(ChannelError::Broken("a piece without its flag"));
            }
            let flag = text[start];
            text.copy_within(start + 1..start + n, start);
            text.truncate(start + n - 1);
            match (flag, pieces.peek().is_some()) {
                (LAST, false) | (MORE, true) => {}
                (LAST, true) => {
                    return Err(ChannelError::Broken(
                        "the frame goes on after its last piece",
                    ))
                }
                (MORE, false) => {
                    return Err(ChannelError::Broken(
                        "the frame ended before its last piece",
                    ))
                }
                _ => return Err(ChannelError::Broken("a piece with an unknown flag")),
            }
        }
        String::from_utf8(text).map_err(|_| ChannelError::Broken("a message that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests;
