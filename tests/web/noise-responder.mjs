// The machine's half of the chroxy handshake and framing (docs/protocol.md "Version 2"),
// for tests only: a Noise IK responder written apart from web/phone/js/noise.js (its own
// HKDF, CipherState and framing, on WebCrypto), so the phone's code is checked against a
// second reading of the spec rather than against itself. Calls are awaited one at a time.

const subtle = globalThis.crypto.subtle;
const X25519 = { name: "X25519" };
const PIECE = 65518;
const encoder = new TextEncoder();

const cat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  parts.reduce((at, p) => (out.set(p, at), at + p.length), 0);
  return out;
};
const sha256 = async (data) => new Uint8Array(await subtle.digest("SHA-256", data));
async function hmac(key, data) {
  const k = await subtle.importKey("raw", key, { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  return new Uint8Array(await subtle.sign("HMAC", k, data));
}
async function hkdf2(ck, ikm) {
  const t = await hmac(ck, ikm);
  const a = await hmac(t, new Uint8Array([1]));
  return [a, await hmac(t, cat(a, new Uint8Array([2])))];
}
async function dh(privateKey, raw) {
  const pub = await subtle.importKey("raw", raw, X25519, true, []);
  return new Uint8Array(await subtle.deriveBits({ name: "X25519", public: pub }, privateKey, 256));
}
export const publicBytes = async (pair) => new Uint8Array(await subtle.exportKey("raw", pair.publicKey));

/// A key pair from a raw 32-byte X25519 private key (as test vectors give them).
export async function keyPairFromPrivate(raw) {
  const pkcs8 = cat(Uint8Array.from(Buffer.from("302e020100300506032b656e04220420", "hex")), raw);
  const privateKey = await subtle.importKey("pkcs8", pkcs8, X25519, true, ["deriveBits"]);
  const { x } = await subtle.exportKey("jwk", privateKey);
  const publicKey = await subtle.importKey("raw", Buffer.from(x, "base64url"), X25519, true, []);
  return { privateKey, publicKey };
}

/// One direction's AES-256-GCM key and counter.
class Cipher {
  constructor(key) {
    this.key = key;
    this.n = 0n;
  }
  static async of(raw) {
    return new Cipher(await subtle.importKey("raw", raw, "AES-GCM", false, ["encrypt", "decrypt"]));
  }
  iv() {
    const iv = new Uint8Array(12);
    new DataView(iv.buffer).setBigUint64(4, this.n++);
    return iv;
  }
  async seal(ad, data) {
    return new Uint8Array(await subtle.encrypt({ name: "AES-GCM", iv: this.iv(), additionalData: ad }, this.key, data));
  }
  async open(ad, data) {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: this.iv(), additionalData: ad }, this.key, data));
  }
}

export class Responder {
  static async create(staticPair, prologue = "chroxy/2") {
    const r = new Responder();
    r.s = staticPair ?? (await subtle.generateKey(X25519, true, ["deriveBits"]));
    r.publicKey = await publicBytes(r.s);
    const name = new Uint8Array(32);
    name.set(encoder.encode("Noise_IK_25519_AESGCM_SHA256"));
    r.ck = name;
    r.h = await sha256(cat(name, typeof prologue === "string" ? encoder.encode(prologue) : prologue));
    r.h = await sha256(cat(r.h, r.publicKey));
    r.k = null;
    return r;
  }

  async mixHash(data) {
    this.h = await sha256(cat(this.h, data));
  }
  async mixKey(ikm) {
    const [ck, k] = await hkdf2(this.ck, ikm);
    this.ck = ck;
    this.k = await Cipher.of(k);
  }
  async encryptAndHash(data) {
    const c = await this.k.seal(this.h, data);
    await this.mixHash(c);
    return c;
  }
  async decryptAndHash(data) {
    const p = await this.k.open(this.h, data);
    await this.mixHash(data);
    return p;
  }

  /// Reads `e, es, s, ss` and the payload; resolves to the initiator's static key.
  async readMessage1(message) {
    this.re = message.slice(0, 32);
    await this.mixHash(this.re);
    await this.mixKey(await dh(this.s.privateKey, this.re));
    this.rs = await this.decryptAndHash(message.slice(32, 80));
    await this.mixKey(await dh(this.s.privateKey, this.rs));
    this.payload = await this.decryptAndHash(message.slice(80));
    return this.rs;
  }

  /// Writes `e, ee, se` and `payload`, then splits: c1 reads the phone, c2 writes to it.
  /// `ephemeral` only for test vectors.
  async writeMessage2(payload = new Uint8Array(0), ephemeral = undefined) {
    const e = ephemeral ?? (await subtle.generateKey(X25519, true, ["deriveBits"]));
    const pub = await publicBytes(e);
    await this.mixHash(pub);
    await this.mixKey(await dh(e.privateKey, this.re));
    await this.mixKey(await dh(e.privateKey, this.rs));
    const body = await this.encryptAndHash(payload);
    const [k1, k2] = await hkdf2(this.ck, new Uint8Array(0));
    this.fromPhone = await Cipher.of(k1);
    this.toPhone = await Cipher.of(k2);
    return cat(pub, body);
  }

  /// One sealed piece: `prefix` then `bytes` (a test builds broken frames from these).
  piece(prefix, bytes) {
    return this.toPhone.seal(new Uint8Array(0), cat(new Uint8Array([prefix]), bytes));
  }

  async seal(text) {
    const data = encoder.encode(text);
    const pieces = [];
    for (let at = 0; at === 0 || at < data.length; at += PIECE) {
      const last = at + PIECE >= data.length;
      pieces.push(await this.piece(last ? 0 : 1, data.subarray(at, at + PIECE)));
    }
    return cat(...pieces);
  }

  async open(frame) {
    const bytes = new Uint8Array(frame);
    let text = new Uint8Array(0);
    for (let at = 0; ; at += 65535) {
      if (at >= bytes.length) throw new Error("no last piece");
      const plain = await this.fromPhone.open(new Uint8Array(0), bytes.subarray(at, at + 65535));
      text = cat(text, plain.subarray(1));
      if (plain[0] === 0) {
        if (at + 65535 < bytes.length) throw new Error("bytes after the last piece");
        return new TextDecoder("utf-8", { fatal: true }).decode(text);
      }
    }
  }
}
