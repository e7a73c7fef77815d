// End-to-end encryption with the machine (docs/protocol.md "Version 2"): the initiator's
// side of Noise_IK_25519_AESGCM_SHA256 (noiseprotocol.org, revision 34) and the framing
// of application messages over its transport. Built on WebCrypto alone (X25519,
// AES-GCM, HMAC-SHA-256, SHA-256): no primitive is made here, and no private key is
// ever extractable.
//
// The phone knows the machine's static key from its pairing link, so IK's first message
// already proves who the phone is, and the machine's answer proves it holds the key the
// link pinned: an answer that does not decrypt is another machine.
//
// WebCrypto is asynchronous, so every step is awaited in order; a transport keeps one
// promise chain per direction, so nonces are taken, and results delivered, in the order
// of the calls.
//
// `crypto.subtle` is looked up at each use: on a page that is not a secure context it is
// missing, and this module must still load there (pairing.js uses its key checks).

const PROTOCOL_NAME = "Noise_IK_25519_AESGCM_SHA256";
const PROLOGUE = "chroxy/2";
const DHLEN = 32;
const HASHLEN = 32;
const TAGLEN = 16;
/// Noise's largest message, and what of it a piece of an application message may fill:
/// 65 535 = 65 518 bytes of message + 1 prefix byte + the tag.
const MAX_MESSAGE = 65535;
const MAX_PIECE = MAX_MESSAGE - TAGLEN - 1;
const MORE = 0x01;
const LAST = 0x00;
/// Message 2 of the chroxy handshake: `e`, and the tag of its empty payload.
const MESSAGE2_LEN = DHLEN + TAGLEN;

const EMPTY = new Uint8Array(0);
const X25519 = { name: "X25519" };
const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

const subtle = () => globalThis.crypto.subtle;

/// Message 2 is not the machine's answer: the machine does not hold the pinned key.
export class HandshakeError extends Error {
  constructor(message) {
    super(message);
    this.name = "HandshakeError";
  }
}

/// A frame that must not be read: `reason` is `tag` (a piece does not decrypt: altered,
/// replayed, reordered, a frame dropped before it), `truncated` (no last piece),
/// `trailing` (bytes after the last piece), `prefix` (a piece's first byte is neither
/// 0x00 nor 0x01), `utf8` (the message is not UTF-8), `broken` (an earlier failure: the
/// channel is dead) or `crypto` (WebCrypto failed to seal).
export class TransportError extends Error {
  constructor(reason, message) {
    super(message);
    this.name = "TransportError";
    this.reason = reason;
  }
}

function concat(...parts) {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

async function sha256(data) {
  return new Uint8Array(await subtle().digest("SHA-256", data));
}

async function hmac(key, data) {
  const k = await subtle().importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle().sign("HMAC", k, data));
}

/// Noise's HKDF with two outputs (IK has no PSK, so a third is never asked for).
async function hkdf(chainingKey, inputKeyMaterial) {
  const temp = await hmac(chainingKey, inputKeyMaterial);
  const first = await hmac(temp, Uint8Array.of(1));
  const second = await hmac(temp, concat(first, Uint8Array.of(2)));
  return [first, second];
}

async function dh(privateKey, publicRaw) {
  const pub = await subtle().importKey("raw", publicRaw, X25519, true, []);
  return new Uint8Array(await subtle().deriveBits({ name: "X25519", public: pub }, privateKey, DHLEN * 8));
}

/// AESGCM's nonce: 32 zero bits, then the counter as a 64-bit big-endian integer.
function nonce(n) {
  const iv = new Uint8Array(12);
  new DataView(iv.buffer).setBigUint64(4, BigInt(n));
  return iv;
}

let support = null;

/// Why this browser cannot speak version 2 (a phrase to follow "this browser cannot do
/// end-to-end encryption: "), or null when it can. Asked once per page.
export function unsupportedReason() {
  support ??= probe();
  return support;
}

async function probe() {
  if (globalThis.isSecureContext === false) {
    return "this page was not opened over https:// (browsers offer their cryptography only to secure pages)";
  }
  if (!globalThis.crypto?.subtle) return "it has no WebCrypto";
  try {
    await generateDeviceKey();
    return null;
  } catch {
    return "its WebCrypto has no X25519 keys (a current browser has them)";
  }
}

/// A new X25519 key pair whose private key can be used but never read out.
export function generateDeviceKey() {
  return subtle().generateKey(X25519, false, ["deriveBits"]);
}

/// The 32 bytes of a public key (a CryptoKey, or a key pair's public half).
export async function rawPublicKey(key) {
  return new Uint8Array(await subtle().exportKey("raw", key.publicKey ?? key));
}

/// The fingerprint a person compares with the Chroxy window: the first 8 bytes of
/// SHA-256 of the 32-byte public key, as `3f9a-07c1-d2e4-5b68`.
export async function fingerprint(raw) {
  const hex = [...(await sha256(raw)).subarray(0, 8)].map((b) => b.toString(16).padStart(2, "0")).join("");
  return hex.match(/.{4}/g).join("-");
}

function base64url(bytes) {
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

/// A machine's public key as a pairing link carries it (32 bytes as base64url without
/// padding: 43 characters), or null when `text` is anything else. Only the canonical
/// spelling passes (its last character's two spare bits zero), so one key has one text.
export function decodePublicKey(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9_-]{43}$/.test(text)) return null;
  const bin = atob(text.replace(/-/g, "+").replace(/_/g, "/") + "=");
  const bytes = Uint8Array.from(bin, (c) => c.charCodeAt(0));
  return base64url(bytes) === text ? bytes : null;
}

/// Noise's CipherState. One call at a time: a Transport orders them.
class CipherState {
  #key = null;
  #n = 0;

  async initializeKey(raw) {
    this.#key = await subtle().importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]);
    this.#n = 0;
  }

  async encryptWithAd(ad, plaintext) {
    if (!this.#key) return plaintext;
    const iv = nonce(this.#n++);
    return new Uint8Array(await subtle().encrypt({ name: "AES-GCM", iv, additionalData: ad }, this.#key, plaintext));
  }

  /// Throws when the tag does not match; the counter then stays where it was.
  async decryptWithAd(ad, ciphertext) {
    if (!this.#key) return ciphertext;
    const n = this.#n;
    const plaintext = await subtle().decrypt({ name: "AES-GCM", iv: nonce(n), additionalData: ad }, this.#key, ciphertext);
    this.#n = n + 1;
    return new Uint8Array(plaintext);
  }
}

/// Noise's SymmetricState, for this protocol's name.
class SymmetricState {
  constructor() {
    // The name is 28 bytes, not more than HASHLEN: padded with zeros, not hashed.
    this.h = new Uint8Array(HASHLEN);
    this.h.set(encoder.encode(PROTOCOL_NAME));
    this.ck = this.h;
    this.cipher = new CipherState();
  }

  async mixKey(inputKeyMaterial) {
    const [ck, key] = await hkdf(this.ck, inputKeyMaterial);
    this.ck = ck;
    await this.cipher.initializeKey(key); // HASHLEN is the key's 32 bytes: nothing to cut
  }

  async mixHash(data) {
    this.h = await sha256(concat(this.h, data));
  }

  async encryptAndHash(plaintext) {
    const ciphertext = await this.cipher.encryptWithAd(this.h, plaintext);
    await this.mixHash(ciphertext);
    return ciphertext;
  }

  async decryptAndHash(ciphertext) {
    const plaintext = await this.cipher.decryptWithAd(this.h, ciphertext);
    await this.mixHash(ciphertext);
    return plaintext;
  }

  /// The two transport CipherStates: initiator → responder first.
  async split() {
    const [first, second] = await hkdf(this.ck, EMPTY);
    const send = new CipherState();
    const receive = new CipherState();
    await send.initializeKey(first);
    await receive.initializeKey(second);
    return [send, receive];
  }
}

/// Noise's HandshakeState for IK in the initiator's role:
///   <- s
///   ...
///   -> e, es, s, ss
///   <- e, ee, se
/// Each message once, in that order. `prologue`, the payloads and (for test vectors
/// only) `ephemeral` are parameters; the phone uses `start` below.
export class Initiator {
  #symmetric = new SymmetricState();
  #s;
  #e;
  #rs;
  #step = 0;

  /// `s`: this side's static key pair; `rs`: the responder's static public key (32 bytes).
  static async create(s, rs, { prologue = encoder.encode(PROLOGUE), ephemeral } = {}) {
    const hs = new Initiator();
    hs.#s = s;
    hs.#rs = rs;
    hs.#e = ephemeral;
    await hs.#symmetric.mixHash(prologue);
    await hs.#symmetric.mixHash(rs); // the pre-message: the responder's static key
    return hs;
  }

  async writeMessage1(payload = EMPTY) {
    if (this.#step++ !== 0) throw new Error("message 1 is written once, first");
    const sym = this.#symmetric;
    this.#e ??= await subtle().generateKey(X25519, false, ["deriveBits"]);
    const e = await rawPublicKey(this.#e);
    await sym.mixHash(e);
    await sym.mixKey(await dh(this.#e.privateKey, this.#rs)); // es
    const s = await sym.encryptAndHash(await rawPublicKey(this.#s));
    await sym.mixKey(await dh(this.#s.privateKey, this.#rs)); // ss
    return concat(e, s, await sym.encryptAndHash(payload));
  }

  /// Message 2's payload, the handshake hash and the transport CipherStates; throws
  /// HandshakeError when the message was not made by the holder of `rs`'s private key.
  async readMessage2(message) {
    if (this.#step++ !== 1) throw new Error("message 2 is read once, after message 1");
    const sym = this.#symmetric;
    try {
      if (message.length < DHLEN + TAGLEN) throw new Error(`${message.length} bytes is too short`);
      const re = message.subarray(0, DHLEN);
      await sym.mixHash(re);
      await sym.mixKey(await dh(this.#e.privateKey, re)); // ee
      await sym.mixKey(await dh(this.#s.privateKey, re)); // se
      const payload = await sym.decryptAndHash(message.subarray(DHLEN));
      const [send, receive] = await sym.split();
      return { payload, handshakeHash: sym.h, send, receive };
    } catch (e) {
      throw new HandshakeError(`message 2 does not decrypt: ${e.message}`);
    }
  }
}

/// The chroxy handshake (prologue "chroxy/2", empty payloads) from this device's key pair
/// to the machine's pinned public key: `message1` to send, and `finish(message2)`, which
/// resolves to the Transport or throws HandshakeError.
export async function start(deviceKeyPair, serverStatic) {
  const initiator = await Initiator.create(deviceKeyPair, serverStatic);
  const message1 = await initiator.writeMessage1();
  return {
    message1,
    async finish(message2) {
      if (message2.length !== MESSAGE2_LEN) {
        throw new HandshakeError(`message 2 is ${message2.length} bytes, not ${MESSAGE2_LEN}`);
      }
      const { send, receive } = await initiator.readMessage2(message2);
      return new Transport(send, receive);
    },
  };
}

/// Application messages over the handshake's CipherStates: a message is cut into pieces
/// of at most MAX_PIECE bytes, each prefixed 0x01 (more follow) or 0x00 (the last) and
/// sealed as one Noise message; a frame is the pieces' ciphertexts end to end, each
/// exactly MAX_MESSAGE bytes but the last. The first failure, either way, breaks the
/// channel for good: nothing is sealed or opened after it.
export class Transport {
  #send;
  #receive;
  #sending = Promise.resolve();
  #receiving = Promise.resolve();
  #failure = null;

  constructor(send, receive) {
    this.#send = send;
    this.#receive = receive;
  }

  /// The frame carrying `text`. Frames resolve in the order of the calls.
  seal(text) {
    const sealed = this.#sending.then(() => this.#guard(() => this.#seal(text)));
    this.#sending = sealed.catch(() => {});
    return sealed;
  }

  /// The text `frame` carries (ArrayBuffer or Uint8Array), or a TransportError. Opened in
  /// the order of the calls, so frames are checked in the order they arrived.
  open(frame) {
    const opened = this.#receiving.then(() => this.#guard(() => this.#open(new Uint8Array(frame))));
    this.#receiving = opened.catch(() => {});
    return opened;
  }

  async #guard(run) {
    if (this.#failure) throw new TransportError("broken", `the channel is broken: ${this.#failure.message}`);
    try {
      return await run();
    } catch (e) {
      this.#failure = e instanceof TransportError ? e : new TransportError("crypto", e.message);
      throw this.#failure;
    }
  }

  async #seal(text) {
    const data = encoder.encode(text);
    const pieces = [];
    let at = 0;
    do {
      const chunk = data.subarray(at, at + MAX_PIECE);
      at += chunk.length;
      const plain = new Uint8Array(chunk.length + 1);
      plain[0] = at < data.length ? MORE : LAST;
      plain.set(chunk, 1);
      pieces.push(await this.#send.encryptWithAd(EMPTY, plain));
    } while (at < data.length);
    return concat(...pieces);
  }

  async #open(frame) {
    const parts = [];
    let at = 0;
    for (;;) {
      if (at === frame.length) {
        throw new TransportError("truncated", at === 0 ? "an empty frame" : "the frame ends without its last piece");
      }
      // Every piece but the last fills MAX_MESSAGE, so where one ends is known.
      const end = Math.min(at + MAX_MESSAGE, frame.length);
      let plain;
      try {
        plain = await this.#receive.decryptWithAd(EMPTY, frame.subarray(at, end));
      } catch {
        throw new TransportError("tag", "a piece does not decrypt (altered, replayed, reordered, or one was lost)");
      }
      at = end;
      if (plain.length === 0 || (plain[0] !== MORE && plain[0] !== LAST)) {
        throw new TransportError("prefix", "a piece has neither prefix 0x00 nor 0x01");
      }
      parts.push(plain.subarray(1));
      if (plain[0] === LAST) {
        if (at !== frame.length) throw new TransportError("trailing", "the frame goes on after its last piece");
        break;
      }
    }
    try {
      return decoder.decode(concat(...parts));
    } catch {
      throw new TransportError("utf8", "the message is not UTF-8");
    }
  }
}
