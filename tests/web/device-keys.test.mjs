// This phone's device keys: one per machine, made once, never readable. IndexedDB's part
// is an in-memory store here (the browser tests use the real one).
// Run with `node --test tests/web/` (scripts/test does).

import { test } from "node:test";
import assert from "node:assert/strict";

const { keyStore } = await import("../../web/phone/js/device-keys.js");
const { rawPublicKey } = await import("../../web/phone/js/noise.js");

/// IndexedDB's part, in memory, counting what is written.
function memoryStore() {
  const keys = new Map();
  const store = {
    added: 0,
    get: async (url) => keys.get(url),
    add: async (url, pair) => {
      if (keys.has(url)) return false;
      keys.set(url, pair);
      store.added++;
      return true;
    },
    delete: async (url) => void keys.delete(url),
  };
  return store;
}

const A = "wss://a.example/ws";
const B = "wss://b.example/ws";

test("one key pair per machine, made on first use and kept, its private key never readable", async () => {
  const store = memoryStore();
  const keys = keyStore(store);
  const a = await keys.deviceKey(A);
  assert.equal(a.privateKey.extractable, false);
  assert.equal(a.privateKey.algorithm.name, "X25519");
  await assert.rejects(crypto.subtle.exportKey("pkcs8", a.privateKey));
  assert.equal(await keys.deviceKey(A), a, "the same key again");
  const b = await keys.deviceKey(B);
  assert.notDeepEqual(await rawPublicKey(b), await rawPublicKey(a), "another machine, another key");
  assert.equal(store.added, 2);
});

test("keys asked for at once (two tabs, two connections) end up the same one", async () => {
  const store = memoryStore();
  const keys = keyStore(store);
  const [first, second] = await Promise.all([keys.deviceKey(A), keyStore(store).deviceKey(A)]);
  assert.equal(first, second);
  assert.equal(store.added, 1);
});

test("a forgotten machine's key is gone: pairing again makes a new one", async () => {
  const keys = keyStore(memoryStore());
  const before = await rawPublicKey(await keys.deviceKey(A));
  await keys.forget(A);
  assert.notDeepEqual(await rawPublicKey(await keys.deviceKey(A)), before);
});
