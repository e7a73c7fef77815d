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
  send(text) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  receive(msg) {
    this.onmessage?.({ data: JSON.stringify(msg) });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.();
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
  c.resume();
  assert.equal(socket.sent.at(-1).type, "ping", "checked at once");
  socket.receive({ type: "pong", serverTs: 0 });
  mock.timers.tick(5000);
  assert.equal(c.state, "connected");
  // It died while the phone slept: no pong within 3 s, and it is replaced.
  c.resume();
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
  c.resume();
  assert.notEqual(FakeSocket.last, socket, "tried at once");
  assert.equal(c.state, "connecting");
  c.close();
  mock.timers.reset();
});
