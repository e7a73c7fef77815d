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

test("backoff doubles from 0.5 s with jitter, capped at 30 s, and never gives up", async () => {
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
  const bases = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000];
  delays.forEach((d, i) => {
    assert.ok(d >= bases[i] * 0.8 && d <= Math.min(bases[i] * 1.2, 30000), `retry ${i}: ${d} ms`);
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
