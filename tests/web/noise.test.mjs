// The phone's Noise IK initiator and message framing (docs/protocol.md "Version 2"):
// against the cacophony test vector for Noise_IK_25519_AESGCM_SHA256, and against a
// responder written separately for these tests (noise-responder.mjs).
// Run with `node --test tests/web/` (scripts/test does).

import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { createHash } from "node:crypto";
import { Responder, keyPairFromPrivate, publicBytes } from "./noise-responder.mjs";

const noise = await import("../../web/phone/js/noise.js");

const vector = JSON.parse(readFileSync(new URL("./fixtures/noise-ik-25519-aesgcm-sha256.json", import.meta.url)));
const bytes = (hex) => Uint8Array.from(Buffer.from(hex, "hex"));
const hex = (data) => Buffer.from(data).toString("hex");
const EMPTY = new Uint8Array(0);

test("the handshake and transport messages are the cacophony vector's, byte for byte", async () => {
  assert.equal(vector.protocol_name, "Noise_IK_25519_AESGCM_SHA256");
  const initStatic = await keyPairFromPrivate(bytes(vector.init_static));
  const initEphemeral = await keyPairFromPrivate(bytes(vector.init_ephemeral));
  const respStatic = await keyPairFromPrivate(bytes(vector.resp_static));
  const respEphemeral = await keyPairFromPrivate(bytes(vector.resp_ephemeral));
  const rs = await publicBytes(respStatic);
  assert.equal(hex(rs), vector.init_remote_static, "the vector's keys are read right");
  const m = vector.messages;

  const initiator = await noise.Initiator.create(initStatic, rs, {
    prologue: bytes(vector.init_prologue),
    ephemeral: initEphemeral,
  });
  const message1 = await initiator.writeMessage1(bytes(m[0].payload));
  assert.equal(hex(message1), m[0].ciphertext, "message 1");

  // The test responder reads the same vector, so the tests below can trust it.
  const responder = await Responder.create(respStatic, bytes(vector.resp_prologue));
  assert.equal(hex(await responder.readMessage1(message1)), hex(await publicBytes(initStatic)));
  assert.equal(hex(responder.payload), m[0].payload);
  assert.equal(hex(await responder.writeMessage2(bytes(m[1].payload), respEphemeral)), m[1].ciphertext);

  const { payload, handshakeHash, send, receive } = await initiator.readMessage2(bytes(m[1].ciphertext));
  assert.equal(hex(payload), m[1].payload, "message 2's payload");
  assert.equal(hex(handshakeHash), vector.handshake_hash, "the handshake hash");
  for (let i = 2; i < m.length; i++) {
    if (i % 2 === 0) {
      assert.equal(hex(await send.encryptWithAd(EMPTY, bytes(m[i].payload))), m[i].ciphertext, `message ${i + 1}`);
    } else {
      assert.equal(hex(await receive.decryptWithAd(EMPTY, bytes(m[i].ciphertext))), m[i].payload, `message ${i + 1}`);
      assert.equal(hex(await responder.toPhone.seal(EMPTY, bytes(m[i].payload))), m[i].ciphertext);
    }
  }
});

test("a device key's private half cannot be read out; its public half is 32 bytes", async () => {
  const key = await noise.generateDeviceKey();
  assert.equal(key.privateKey.extractable, false);
  await assert.rejects(crypto.subtle.exportKey("pkcs8", key.privateKey));
  await assert.rejects(crypto.subtle.exportKey("jwk", key.privateKey));
  assert.equal((await noise.rawPublicKey(key)).length, 32);
  assert.deepEqual(await noise.rawPublicKey(key.publicKey), await noise.rawPublicKey(key));
  assert.equal(await noise.unsupportedReason(), null, "node's WebCrypto has X25519");
});

test("a fingerprint is the first 8 bytes of SHA-256 of the key, as four groups of hex", async () => {
  const key = bytes(vector.init_remote_static);
  const digest = createHash("sha256").update(key).digest("hex");
  const fp = await noise.fingerprint(key);
  assert.match(fp, /^[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}$/);
  assert.equal(fp.replace(/-/g, ""), digest.slice(0, 16));
});

test("a link's key is taken only as 43 characters of canonical base64url for 32 bytes", () => {
  const key = bytes(vector.init_remote_static);
  const text = Buffer.from(key).toString("base64url");
  assert.equal(text.length, 43);
  assert.deepEqual(noise.decodePublicKey(text), key);
  const last = text.at(-1);
  // The same bits with a spare bit set: atob would take it, a strict reader does not.
  const sloppy = text.slice(0, -1) + String.fromCharCode(last.charCodeAt(0) + 1);
  for (const bad of [`${text}=`, text.slice(1), `${text}A`, text.replace(/[-_]/, "+"), sloppy, "", 32, null, undefined,
    Buffer.from(new Uint8Array(31)).toString("base64url"), Buffer.from(new Uint8Array(33)).toString("base64url"), ` ${text.slice(1)}`]) {
    assert.equal(noise.decodePublicKey(bad), null, JSON.stringify(bad));
  }
});

/// The phone and a machine after the chroxy handshake.
async function pair() {
  const device = await noise.generateDeviceKey();
  const machine = await Responder.create();
  const { message1, finish } = await noise.start(device, machine.publicKey);
  assert.equal(message1.length, 96);
  assert.deepEqual(await machine.readMessage1(message1), await noise.rawPublicKey(device), "the device is its key");
  assert.equal(machine.payload.length, 0, "an empty payload");
  const message2 = await machine.writeMessage2();
  assert.equal(message2.length, 48);
  return { phone: await finish(message2), machine, device };
}

test("messages go both ways: small, exactly one piece, and in several pieces", async () => {
  const { phone, machine } = await pair();
  const texts = [
    '{"type":"ping"}',
    "",
    "x".repeat(65518),
    "y".repeat(65519),
    "z".repeat(200000),
    // A two-byte character cut between pieces comes back whole.
    "a" + "é".repeat(100000),
  ];
  for (const text of texts) {
    const frame = await phone.seal(text);
    const size = new TextEncoder().encode(text).length;
    const pieces = Math.max(1, Math.ceil(size / 65518));
    assert.equal(frame.length, size + pieces * 17, `${size} bytes: one prefix and one tag a piece`);
    assert.equal(await machine.open(frame), text);
    assert.equal(await phone.open(await machine.seal(text)), text);
  }
  assert.equal((await phone.seal("x".repeat(65518))).length, 65535, "65 518 bytes fill one piece exactly");
  assert.equal((await phone.seal("z".repeat(200000))).length, 3 * 65535 + (200000 - 3 * 65518) + 17);
});

test("message 2 that is not the machine's answer fails the handshake", async () => {
  const device = await noise.generateDeviceKey();
  const machine = await Responder.create();
  for (const message2 of [crypto.getRandomValues(new Uint8Array(48)), new Uint8Array(47), new Uint8Array(49), EMPTY]) {
    const { finish } = await noise.start(device, machine.publicKey);
    await assert.rejects(finish(message2), { name: "HandshakeError" });
  }
  // A machine with another key cannot even read message 1 (it closes with 4002).
  const { message1 } = await noise.start(device, machine.publicKey);
  const other = await Responder.create();
  await assert.rejects(other.readMessage1(message1));
  // The right answer with another prologue (another protocol) fails too.
  const elsewhere = await Responder.create(machine.s, "chroxy/3");
  const { message1: m1, finish } = await noise.start(device, machine.publicKey);
  await assert.rejects(elsewhere.readMessage1(m1));
  const right = await Responder.create(machine.s);
  await right.readMessage1(m1);
  await finish(await right.writeMessage2());
});

/// A frame `phone` must refuse with `reason`, after which it refuses everything.
async function refuses(phone, frame, reason, what) {
  await assert.rejects(phone.open(frame), (e) => e.name === "TransportError" && e.reason === reason, what);
  await assert.rejects(phone.open(frame), { name: "TransportError", reason: "broken" }, `${what}: then nothing more`);
  await assert.rejects(phone.seal("{}"), { name: "TransportError", reason: "broken" }, `${what}: nor sends`);
}

test("an altered, replayed, lost, truncated or extended frame breaks the channel", async () => {
  {
    const { phone, machine } = await pair();
    const frame = await machine.seal('{"type":"pong"}');
    frame[5] ^= 0x10;
    await refuses(phone, frame, "tag", "a flipped bit");
  }
  {
    const { phone, machine } = await pair();
    const frame = await machine.seal('{"type":"pong"}');
    assert.equal(await phone.open(frame), '{"type":"pong"}');
    await refuses(phone, frame, "tag", "a replayed frame");
  }
  {
    const { phone, machine } = await pair();
    await machine.seal("lost on the way");
    await refuses(phone, await machine.seal("the next one"), "tag", "a frame after a dropped one");
  }
  {
    const { phone, machine } = await pair();
    const frame = await machine.seal("z".repeat(200000));
    await refuses(phone, frame.slice(0, 2 * 65535), "truncated", "a frame cut after a whole piece");
  }
  {
    const { phone, machine } = await pair();
    const frame = await machine.seal("z".repeat(200000));
    await refuses(phone, frame.slice(0, -1), "tag", "a frame cut inside its last piece");
  }
  {
    const { phone, machine } = await pair();
    await refuses(phone, await machine.piece(0x01, new TextEncoder().encode("{")), "truncated", "a lone first piece");
  }
  {
    const { phone, machine } = await pair();
    const frame = await machine.seal("x".repeat(65518));
    await refuses(phone, Buffer.concat([frame, Buffer.from("more")]), "trailing", "bytes after the last piece");
  }
  {
    const { phone, machine } = await pair();
    const frame = await machine.seal("{}");
    await refuses(phone, Buffer.concat([frame, Buffer.from("!")]), "tag", "a byte after a short frame");
  }
  {
    const { phone, machine } = await pair();
    await refuses(phone, await machine.piece(0x02, new TextEncoder().encode("{}")), "prefix", "an unknown prefix");
  }
  {
    const { phone, machine } = await pair();
    await refuses(phone, await machine.piece(0x00, Uint8Array.of(0xff, 0xfe)), "utf8", "not UTF-8");
  }
  {
    const { phone } = await pair();
    await refuses(phone, EMPTY, "truncated", "an empty frame");
  }
  {
    // A text frame's bytes are no frame either.
    const { phone } = await pair();
    await refuses(phone, new TextEncoder().encode('{"type":"auth_ok"}'), "tag", "plain JSON");
  }
});

test("concurrent seals and opens keep the order of the calls", async () => {
  const { phone, machine } = await pair();
  // Big and small mixed: were each sealed on its own, the small ones would finish first.
  const texts = Array.from({ length: 24 }, (_, i) => `${i}:` + "x".repeat(i % 3 === 0 ? 150000 : i));
  const done = [];
  const frames = await Promise.all(texts.map((t, i) => phone.seal(t).then((f) => (done.push(i), f))));
  assert.deepEqual(done, texts.map((_, i) => i), "resolved in call order");
  for (const [i, frame] of frames.entries()) assert.equal(await machine.open(frame), texts[i]);

  const back = [];
  for (const t of texts) back.push(await machine.seal(t));
  const opened = [];
  const results = await Promise.all(back.map((f, i) => phone.open(f).then((t) => (opened.push(i), t))));
  assert.deepEqual(results, texts);
  assert.deepEqual(opened, texts.map((_, i) => i));
});
