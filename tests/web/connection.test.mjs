// The connection state machine without a browser: a fake WebSocket, a fake clock.
// Run with `node --test tests/web/` (scripts/test does).

import { test, mock } from "node:test";
import assert from "node:assert/strict";

class FakeSocket {
  static last = null;
  static OPEN = 1;
  constructor(url) {
    this.url = url;
    this.readyState = 0;
    this.sent = [];
    FakeSocket.last = this;
  }
  /// Text frames as the objects they carry; binary ones as bytes.
  send(data) {
    this.sent.push(typeof data === "string" ? JSON.parse(data) : new Uint8Array(data));
  }
  close(code) {
    this.readyState = 3;
    this.closedWith = code;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  /// A binary frame, as a socket whose binaryType is "arraybuffer" hands it over.
  receiveBinary(bytes) {
    assert.equal(this.binaryType, "arraybuffer");
    this.onmessage?.({ data: Uint8Array.from(bytes).buffer });
  }
  drop(code) {
    this.readyState = 3;
    this.onclose?.({ code });
  }
}

globalThis.WebSocket = FakeSocket;
// The page is the machine's own, so its supervisor's /health is asked first.
globalThis.location = { origin: "http://machine" };
// No supervisor answering /health: a plain network failure.
globalThis.fetch = async () => {
  throw new Error("offline");
};

const { Connection } = await import("../../web/phone/js/connection.js");

function connection() {
  const c = new Connection({ url: "ws://machine/ws", token: "t" }, { deviceName: "test" });
  const states = [];
  c.addEventListener("state", (e) => states.push(e.detail));
  return { c, states };
}

/// Lets the async retry (it asks /health first) run.
const settle = () => new Promise((r) => setImmediate(r));

async function loseConnection(c, states) {
  FakeSocket.last.drop();
  await settle();
  return states.at(-1);
}

test("the first retry goes at once, then backoff doubles from 0.5 s with jitter, capped at 30 s, and never gives up", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = connection();
  c.connect();
  const delays = [];
  for (let i = 0; i < 10; i++) {
    const s = await loseConnection(c, states);
    assert.equal(s.state, "reconnecting");
    delays.push(s.retryInMs);
    mock.timers.tick(s.retryInMs);
    assert.equal(c.state, "connecting", "it tried again when it said it would");
  }
  assert.ok(delays[0] <= 50, `the first retry at once: ${delays[0]} ms`);
  const bases = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000];
  delays.slice(1).forEach((d, i) => {
    assert.ok(d >= bases[i] * 0.8 && d <= Math.min(bases[i] * 1.2, 30000), `retry ${i + 1}: ${d} ms`);
  });
  c.close();
  mock.timers.reset();
});

test("a minute connected starts the backoff over", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = connection();
  c.connect();
  for (let i = 0; i < 5; i++) {
    const s = await loseConnection(c, states);
    mock.timers.tick(s.retryInMs);
  }
  FakeSocket.last.open();
  FakeSocket.last.receive({ type: "auth_ok" });
  assert.equal(c.state, "connected");
  // Keepalive pongs while the minute passes.
  for (let t = 0; t < 61; t += 15) {
    mock.timers.tick(15000);
    FakeSocket.last.receive({ type: "pong", serverTs: 0 });
  }
  const s = await loseConnection(c, states);
  assert.ok(s.retryInMs <= 600, `back to the floor, got ${s.retryInMs} ms`);
  c.close();
  mock.timers.reset();
});

test("a server that announces a restart is waited for, as long as it said", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = connection();
  c.connect();
  FakeSocket.last.open();
  FakeSocket.last.receive({ type: "auth_ok" });
  FakeSocket.last.receive({ type: "server_shutdown", reason: "restart", restartEtaMs: 2500 });
  assert.deepEqual(
    { state: states.at(-1).state, eta: states.at(-1).retryInMs },
    { state: "server_restarting", eta: 2500 },
  );
  mock.timers.tick(2499);
  assert.equal(c.state, "server_restarting");
  mock.timers.tick(1);
  assert.equal(c.state, "connecting");
  c.close();
  mock.timers.reset();
});

test("a rotated token stops the retries until the user acts, and the auth is sent first", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c } = connection();
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  assert.equal(socket.sent[0].type, "auth");
  assert.equal(socket.sent[0].token, "t");
  socket.receive({ type: "auth_fail", reason: "invalid_token" });
  socket.drop();
  await settle();
  assert.equal(c.state, "token_rejected");
  mock.timers.tick(120000);
  assert.equal(FakeSocket.last, socket, "no retry with a refused token");
  c.reconnectNow();
  assert.notEqual(FakeSocket.last, socket);
  c.close();
  mock.timers.reset();
});

function pairedWith(tokens) {
  const c = new Connection({ url: "ws://machine/ws", ...tokens }, { deviceName: "test" });
  const states = [];
  c.addEventListener("state", (e) => states.push(e.detail));
  return { c, states };
}

/// The token the newest socket authenticated with.
function authenticate(reply) {
  const socket = FakeSocket.last;
  socket.open();
  const { token } = socket.sent[0];
  socket.receive(reply);
  return token;
}

const REFUSED = { type: "auth_fail", reason: "invalid_token" };

test("a refused new token falls back at once to the previous one, and stays on it", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = pairedWith({ token: "new", previousToken: "old" });
  c.connect();
  const first = FakeSocket.last;
  assert.equal(authenticate(REFUSED), "new");
  assert.notEqual(FakeSocket.last, first, "a second socket, without waiting for a backoff");
  assert.equal(authenticate({ type: "auth_ok" }), "old");
  assert.deepEqual(states.at(-1), { state: "connected", previousToken: true });
  assert.equal(c.token, "old", "what the page tells the store worked");
  // Reconnects keep the token that works instead of failing the new one each time.
  const s = await loseConnection(c, states);
  mock.timers.tick(s.retryInMs);
  assert.equal(authenticate({ type: "auth_ok" }), "old");
  c.close();
  mock.timers.reset();
});

test("when the previous token is refused later (the rotation done), the new one is tried", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = pairedWith({ token: "new", previousToken: "old" });
  c.connect();
  authenticate(REFUSED);
  authenticate({ type: "auth_ok" });
  const s = await loseConnection(c, states);
  mock.timers.tick(s.retryInMs);
  assert.equal(authenticate(REFUSED), "old");
  assert.equal(authenticate({ type: "auth_ok" }), "new");
  assert.deepEqual(states.at(-1), { state: "connected", previousToken: false });
  assert.equal(c.token, "new");
  c.close();
  mock.timers.reset();
});

test("only when the previous token is refused too is the person asked to pair again", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c } = pairedWith({ token: "new", previousToken: "old" });
  c.connect();
  assert.equal(authenticate(REFUSED), "new");
  assert.equal(c.state, "connecting", "not yet: the previous token is being tried");
  const second = FakeSocket.last;
  assert.equal(authenticate(REFUSED), "old");
  second.drop();
  await settle();
  assert.equal(c.state, "token_rejected");
  mock.timers.tick(120000);
  assert.equal(FakeSocket.last, second, "no retry with refused tokens");
  // "Reconnect now" tries both again.
  c.reconnectNow();
  assert.equal(authenticate(REFUSED), "old");
  assert.equal(authenticate({ type: "auth_ok" }), "new");
  c.close();
  mock.timers.reset();
});

const CODE = "0123456789abcdef0123456789abcdef";

test("the QR's code goes with the first auth, and the key handed back with every later one", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = pairedWith({ token: "t", code: CODE });
  const told = [];
  c.addEventListener("device", (e) => told.push(e.detail));
  c.connect();
  let socket = FakeSocket.last;
  socket.open();
  assert.equal(socket.sent[0].pairingCode, CODE);
  assert.equal(socket.sent[0].deviceKey, undefined);
  socket.receive({ type: "auth_ok", deviceId: "k7m2qp", deviceKey: "minted" });
  assert.deepEqual(told.at(-1), { url: "ws://machine/ws", deviceKey: "minted", deviceId: "k7m2qp" });
  const s = await loseConnection(c, states);
  mock.timers.tick(s.retryInMs);
  socket = FakeSocket.last;
  socket.open();
  assert.equal(socket.sent[0].deviceKey, "minted");
  assert.equal(socket.sent[0].pairingCode, undefined, "a code is used once");
  c.close();
  mock.timers.reset();
});

test("a device waiting for approval retries every few seconds with its key, and gets in once approved", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = pairedWith({ token: "t" });
  c.connect();
  let socket = FakeSocket.last;
  socket.open();
  assert.equal(socket.sent[0].deviceKey, undefined, "a tokens-only phone has no key yet");
  socket.receive({ type: "auth_fail", reason: "device_pending", deviceId: "k7m2qp", deviceKey: "waiting" });
  socket.drop();
  await settle();
  assert.equal(c.state, "device_pending");
  assert.equal(states.at(-1).deviceId, "k7m2qp", "the id the window shows, for the person to match");
  for (let i = 0; i < 3; i++) {
    mock.timers.tick(2999);
    assert.equal(FakeSocket.last, socket, "not before its time");
    mock.timers.tick(1);
    assert.notEqual(FakeSocket.last, socket, "tried again");
    socket = FakeSocket.last;
    socket.open();
    assert.equal(socket.sent[0].deviceKey, "waiting");
    if (i < 2) {
      socket.receive({ type: "auth_fail", reason: "device_pending", deviceId: "k7m2qp", deviceKey: "waiting" });
      socket.drop();
      await settle();
    }
  }
  socket.receive({ type: "auth_ok", deviceId: "k7m2qp" });
  assert.equal(c.state, "connected");
  assert.equal(c.pairing.deviceKey, "waiting", "the approved key is kept");
  c.close();
  mock.timers.reset();
});

test("a refused device forgets its key and stops until it is paired again", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c } = pairedWith({ token: "t", deviceKey: "old", code: CODE });
  const told = [];
  c.addEventListener("device", (e) => told.push(e.detail));
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  socket.receive({ type: "auth_fail", reason: "device_refused", deviceId: "k7m2qp" });
  socket.drop();
  await settle();
  assert.equal(c.state, "device_refused");
  assert.equal(told.at(-1).deviceKey, undefined, "the store is told to forget the key");
  assert.equal(c.pairing.deviceKey, undefined);
  assert.equal(c.pairing.code, undefined);
  mock.timers.tick(600000);
  assert.equal(FakeSocket.last, socket, "no retry");
  c.close();
  mock.timers.reset();
});

test("a device revoked while connected is told so, forgets its key and does not reconnect", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c } = pairedWith({ token: "t", deviceKey: "mine" });
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  socket.receive({ type: "auth_ok", deviceId: "k7m2qp" });
  assert.equal(c.state, "connected");
  // What the worker sends before closing a revoked device's connection (no deviceId).
  socket.receive({ type: "auth_fail", reason: "device_refused", message: "The owner of the computer revoked this device." });
  socket.drop();
  await settle();
  assert.equal(c.state, "device_refused");
  assert.equal(c.pairing.deviceKey, undefined, "the revoked key is forgotten");
  assert.equal(c.pairing.deviceId, "k7m2qp", "the id the owner saw stays shown");
  mock.timers.tick(600000);
  assert.equal(FakeSocket.last, socket, "no retry");
  c.close();
  mock.timers.reset();
});

test("shown again, a connection is checked at once and a dead one replaced", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c } = connection();
  c.connect();
  let socket = FakeSocket.last;
  socket.open();
  socket.receive({ type: "auth_ok" });
  // It answers: nothing changes.
  c.check();
  assert.equal(socket.sent.at(-1).type, "ping", "checked at once");
  socket.receive({ type: "pong", serverTs: 0 });
  mock.timers.tick(5000);
  assert.equal(c.state, "connected");
  // It died while the phone slept: no pong within 3 s, and it is replaced.
  c.check();
  mock.timers.tick(2999);
  assert.equal(c.state, "connected", "given its time");
  mock.timers.tick(1);
  await settle();
  assert.equal(c.state, "reconnecting");
  mock.timers.tick(50);
  assert.notEqual(FakeSocket.last, socket, "a new socket at once");
  // Waiting for a later try: shown again, it tries now.
  socket = FakeSocket.last;
  socket.drop();
  await settle();
  assert.equal(c.state, "reconnecting");
  c.check();
  assert.notEqual(FakeSocket.last, socket, "tried at once");
  assert.equal(c.state, "connecting");
  c.close();
  mock.timers.reset();
});

// ---- version 2: the encrypted channel ----------------------------------------------------

const { Responder } = await import("./noise-responder.mjs");
const noise = await import("../../web/phone/js/noise.js");
const { keyStore } = await import("../../web/phone/js/device-keys.js");

/// IndexedDB's part, in memory.
function memoryStore() {
  const keys = new Map();
  return {
    get: async (url) => keys.get(url),
    add: async (url, pair) => !keys.has(url) && !!keys.set(url, pair),
    delete: async (url) => void keys.delete(url),
  };
}

/// Waits until `ready()`: WebCrypto answers in its own time, not the fake clock's.
async function until(ready, what) {
  const deadline = performance.now() + 5000;
  while (!ready()) {
    if (performance.now() > deadline) assert.fail(`still waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
  }
}

/// A machine with its own key, and a connection whose pairing pins it.
async function pinned(pairing = {}, options = {}) {
  const machineKey = await crypto.subtle.generateKey({ name: "X25519" }, true, ["deriveBits"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", machineKey.publicKey));
  const keys = keyStore(memoryStore());
  const c = new Connection(
    { url: "ws://machine/ws", key: Buffer.from(raw).toString("base64url"), ...pairing },
    { deviceName: "test" },
    { keys, ...options },
  );
  const states = [];
  c.addEventListener("state", (e) => states.push(e.detail));
  const messages = [];
  c.addEventListener("message", (e) => messages.push(e.detail));
  return { c, states, messages, machineKey, keys, fingerprint: await noise.fingerprint(raw) };
}

/// The next frame the phone sent on `socket`.
async function nextFrame(socket) {
  socket.read ??= 0;
  await until(() => socket.sent.length > socket.read, "a frame from the phone");
  return socket.sent[socket.read++];
}

/// Opens the newest socket and plays the machine's side of the handshake: resolves to
/// the machine's end of the channel, the sealed auth it read and the device key it saw.
async function handshake(machineKey) {
  const socket = FakeSocket.last;
  socket.open();
  const machine = await Responder.create(machineKey);
  const message1 = await nextFrame(socket);
  assert.ok(message1 instanceof Uint8Array && message1.length === 96, "message 1 is one binary frame of 96 bytes");
  const device = await machine.readMessage1(message1);
  socket.receiveBinary(await machine.writeMessage2());
  const auth = JSON.parse(await machine.open(await nextFrame(socket)));
  return { socket, machine, auth, device };
}

/// The machine sends `msg`, sealed.
async function tell(socket, machine, msg) {
  socket.receiveBinary(await machine.seal(JSON.stringify(msg)));
}

const AUTH_OK = { type: "auth_ok", deviceId: "k7m2qp", encryption: "noise", protocolVersion: 2 };

test("version 2: a handshake, a sealed auth with no token, sealed messages both ways, the same device key each time", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states, messages, machineKey, keys, fingerprint } = await pinned({ token: "t", code: CODE });
  c.connect();
  let { socket, machine, auth, device } = await handshake(machineKey);
  assert.equal(c.state, "authenticating");
  assert.deepEqual(auth, { type: "auth", protocolVersion: 2, deviceInfo: { deviceName: "test" }, pairingCode: CODE });
  const stored = await keys.deviceKey("ws://machine/ws");
  assert.deepEqual(device, await noise.rawPublicKey(stored), "the device is the key kept for this machine");
  assert.equal(stored.privateKey.extractable, false);

  await tell(socket, machine, AUTH_OK);
  await until(() => c.state === "connected", "auth_ok");
  assert.deepEqual(states.at(-1), { state: "connected", previousToken: false, fingerprint });
  assert.equal(c.encrypted, true);
  await tell(socket, machine, { type: "message", messageType: "assistant", content: "hello" });
  await until(() => messages.at(-1).type === "message", "a sealed message");
  assert.equal(messages.at(-1).content, "hello");

  // Sends stay in order, a big one ahead of small ones included, and all are sealed.
  const sent = [{ type: "input", data: "x".repeat(200000) }, ...Array.from({ length: 8 }, (_, i) => ({ type: "input", data: `${i}` }))];
  for (const msg of sent) assert.equal(c.send(msg), true);
  for (const msg of sent) assert.deepEqual(JSON.parse(await machine.open(await nextFrame(socket))), msg);
  // Keepalive pings are sealed too.
  mock.timers.tick(15000);
  assert.deepEqual(JSON.parse(await machine.open(await nextFrame(socket))), { type: "ping" });
  assert.ok(socket.sent.every((frame) => frame instanceof Uint8Array), "no text frame ever");

  // Lost: a new handshake with the same device key, and the code is not sent again.
  socket.drop(1006);
  await until(() => c.state === "reconnecting", "the loss");
  mock.timers.tick(states.at(-1).retryInMs);
  ({ socket, machine, auth, device } = await handshake(machineKey));
  assert.equal(auth.pairingCode, undefined, "a code is used once");
  assert.deepEqual(device, await noise.rawPublicKey(stored));
  await tell(socket, machine, AUTH_OK);
  await until(() => c.state === "connected", "auth_ok again");
  c.close();
  mock.timers.reset();
});

test("a frame that does not open, or a text frame, breaks the channel: closed with 4002, then a new handshake", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states, machineKey } = await pinned();
  c.connect();
  let { socket, machine } = await handshake(machineKey);
  await tell(socket, machine, AUTH_OK);
  await until(() => c.state === "connected", "auth_ok");
  const altered = await machine.seal('{"type":"pong","serverTs":0}');
  altered[20] ^= 0x01;
  socket.receiveBinary(altered);
  await until(() => c.state === "reconnecting", "the broken frame");
  assert.equal(socket.closedWith, 4002);
  assert.equal(states.at(-1).handshakeRefused, undefined, "an ordinary loss");

  mock.timers.tick(states.at(-1).retryInMs);
  assert.notEqual(FakeSocket.last, socket, "a new socket");
  ({ socket, machine } = await handshake(machineKey));
  await tell(socket, machine, AUTH_OK);
  await until(() => c.state === "connected", "in again, with new keys");
  socket.receive({ type: "pong", serverTs: 0 }); // text
  await until(() => c.state === "reconnecting", "the text frame");
  assert.equal(socket.closedWith, 4002);
  c.close();
  mock.timers.reset();
});

test("what the machine says before it closes is read before the close is", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states, machineKey } = await pinned();
  c.connect();
  let { socket, machine } = await handshake(machineKey);
  await tell(socket, machine, AUTH_OK);
  await until(() => c.state === "connected", "auth_ok");
  // The close arrives while the notice is still being opened.
  await tell(socket, machine, { type: "server_shutdown", reason: "restart", restartEtaMs: 2500 });
  socket.drop(1001);
  await until(() => c.state !== "connected", "the notice");
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(states.at(-1), { state: "server_restarting", retryInMs: 2500, reason: "restart" });
  c.close();
  mock.timers.reset();
});

test("not_paired stops like a refused device: the code is spent, the machine's words shown, nothing retried", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states, machineKey } = await pinned({ code: CODE });
  const told = [];
  c.addEventListener("device", (e) => told.push(e.detail));
  c.connect();
  const { socket, machine } = await handshake(machineKey);
  const message = "This pairing code was already used. Scan a fresh QR code.";
  await tell(socket, machine, { type: "auth_fail", reason: "not_paired", message });
  socket.drop(4001);
  await until(() => c.state === "not_paired", "not_paired");
  assert.deepEqual(states.at(-1), { state: "not_paired", message });
  assert.equal(c.pairing.code, undefined);
  assert.equal(told.length, 1, "the store is told the code is spent");
  assert.equal(c.waitingForPerson, true);
  mock.timers.tick(600000);
  await new Promise((r) => setImmediate(r));
  assert.equal(FakeSocket.last, socket, "no retry");
  c.close();
  mock.timers.reset();
});

test("a message 2 that does not decrypt is the wrong machine: said with the pinned fingerprint, not retried until asked", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states, machineKey, fingerprint } = await pinned({ token: "t" });
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  await nextFrame(socket);
  socket.receiveBinary(crypto.getRandomValues(new Uint8Array(48)));
  await until(() => c.state === "wrong_machine", "wrong_machine");
  assert.deepEqual(states.at(-1), { state: "wrong_machine", fingerprint });
  assert.equal(socket.closedWith, 4002);
  assert.equal(socket.sent.length, 1, "nothing but message 1, and no token");
  assert.equal(c.waitingForPerson, true);
  mock.timers.tick(600000);
  c.check();
  await new Promise((r) => setImmediate(r));
  assert.equal(FakeSocket.last, socket, "no retry, not even when the page is shown again");

  c.reconnectNow();
  assert.notEqual(FakeSocket.last, socket);
  const next = await handshake(machineKey);
  await tell(next.socket, next.machine, AUTH_OK);
  await until(() => c.state === "connected", "the right machine again");
  c.close();
  mock.timers.reset();
});

test("a machine that cannot read message 1 (closes with 4002) is retried as after any loss, saying so", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = await pinned();
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  await nextFrame(socket);
  socket.drop(4002);
  await until(() => c.state === "reconnecting", "the retry");
  assert.equal(states.at(-1).handshakeRefused, true);
  mock.timers.tick(states.at(-1).retryInMs);
  assert.notEqual(FakeSocket.last, socket, "tried again");
  c.close();
  mock.timers.reset();
});

test("token_auth_disabled stops a token-only pairing and waits for a fresh QR code", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = pairedWith({ token: "t" });
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  const message = "This computer accepts only paired phones that speak Chroxy's encrypted protocol (v2).";
  socket.receive({ type: "auth_fail", reason: "token_auth_disabled", message });
  socket.drop(4001);
  await settle();
  assert.deepEqual(states.at(-1), { state: "token_auth_disabled", message, cannotEncrypt: undefined });
  mock.timers.tick(600000);
  assert.equal(FakeSocket.last, socket, "no retry");
  c.close();
  mock.timers.reset();
});

const NO_X25519 = "its WebCrypto has no X25519 keys (a current browser has them)";
const withoutX25519 = { noise: { ...noise, unsupportedReason: async () => NO_X25519 } };

test("a browser that cannot encrypt uses the pairing's token over v1 and says so at every step", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = await pinned({ token: "t" }, withoutX25519);
  c.connect();
  let socket = FakeSocket.last;
  socket.open();
  const auth = await nextFrame(socket);
  assert.deepEqual([auth.type, auth.token, auth.protocolVersion], ["auth", "t", 1]);
  socket.receive({ type: "auth_ok" });
  assert.deepEqual(states.at(-1), { state: "connected", previousToken: false, cannotEncrypt: NO_X25519 });
  assert.equal(c.encrypted, false);
  assert.equal(c.send({ type: "ping" }), true);
  assert.deepEqual(socket.sent.at(-1), { type: "ping" }, "in the clear: a text frame");

  // A machine that lets no token in: stopped, and the reason is both.
  socket.drop();
  await settle();
  mock.timers.tick(states.at(-1).retryInMs);
  socket = FakeSocket.last;
  socket.open();
  await nextFrame(socket);
  socket.receive({ type: "auth_fail", reason: "token_auth_disabled", message: "v2 only" });
  assert.deepEqual(states.at(-1), { state: "token_auth_disabled", message: "v2 only", cannotEncrypt: NO_X25519 });
  c.close();
  mock.timers.reset();
});

test("a browser that cannot encrypt, with no token to fall back on, stops and says why", async () => {
  mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"] });
  const { c, states } = await pinned({}, withoutX25519);
  c.connect();
  const socket = FakeSocket.last;
  socket.open();
  await until(() => c.state === "no_crypto", "no_crypto");
  assert.deepEqual(states.at(-1), { state: "no_crypto", cannotEncrypt: NO_X25519 });
  assert.deepEqual(socket.sent, [], "nothing sent");
  mock.timers.tick(600000);
  assert.equal(FakeSocket.last, socket, "no retry");

  // A device key that cannot be kept (no IndexedDB) is the same dead end.
  const broken = { get: async () => Promise.reject(new Error("IndexedDB is off")) };
  const { c: d, states: dStates } = await pinned({}, { keys: keyStore(broken) });
  d.connect();
  FakeSocket.last.open();
  await until(() => d.state === "no_crypto", "no_crypto");
  assert.match(dStates.at(-1).cannotEncrypt, /could not keep this phone's key \(IndexedDB is off\)/);
  c.close();
  d.close();
  mock.timers.reset();
});
