// Pairing links as an attacker would send them, and what the phone keeps, without a
// browser: localStorage, the address bar and the person's answer are fakes.
// Run with `node --test tests/web/` (scripts/test does).

import { test, beforeEach } from "node:test";
import assert from "node:assert/strict";

class FakeStorage {
  constructor() {
    this.items = new Map();
  }
  getItem(key) {
    return this.items.has(key) ? this.items.get(key) : null;
  }
  setItem(key, value) {
    this.items.set(key, String(value));
  }
  snapshot() {
    return JSON.stringify([...this.items]);
  }
}

const pairings = await import("../../web/phone/js/pairing.js");

const TOKEN = "Xq3v9Vd0k5tT1mZ8yB2cH7nL4pR6sW0eA1uG3jK5oQ8"; // as generated: 43 base64url
const OWNER = "https://owner.example";

const b64url = (text) => Buffer.from(text, "utf8").toString("base64url");
/// What `chroxy pair` prints, with any payload (an object is JSON-encoded).
const link = (page, payload) =>
  `${page}/#pair=${b64url(typeof payload === "string" ? payload : JSON.stringify(payload))}`;
const ownLink = (token = TOKEN) => link(OWNER, { v: 1, url: "wss://owner.example/ws", token });

/// The person: answers `yes`, and remembers what was asked.
function person(yes) {
  const asked = [];
  const confirm = async (change) => {
    asked.push(change);
    return yes;
  };
  return { asked, confirm };
}

beforeEach(() => {
  globalThis.localStorage = new FakeStorage();
});

test("a link as chroxy pair makes it adds its machine only once the person has agreed", async () => {
  const no = person(false);
  assert.deepEqual(await pairings.offer(ownLink(), no.confirm), { outcome: "declined" });
  assert.deepEqual(no.asked, [{ kind: "new", host: "owner.example", url: "wss://owner.example/ws" }]);
  assert.deepEqual(pairings.all(), [], "declining stores nothing");
  assert.equal(pairings.current(), null);

  const yes = person(true);
  const result = await pairings.offer(ownLink(), yes.confirm);
  assert.deepEqual(result, { outcome: "added", url: "wss://owner.example/ws" });
  assert.equal(yes.asked[0].host, "owner.example");
  assert.deepEqual(
    { url: pairings.current().url, token: pairings.current().token, name: pairings.current().name },
    { url: "wss://owner.example/ws", token: TOKEN, name: "owner.example" },
  );

  // The same link again (the QR scanned twice): nothing to ask, nothing changes.
  const again = person(true);
  assert.equal((await pairings.offer(ownLink(), again.confirm)).outcome, "known");
  assert.deepEqual(again.asked, []);
  assert.equal(pairings.all().length, 1);
});

test("a local machine's link (http page, ws socket, a port) pairs too", async () => {
  const local = link("http://127.0.0.1:8765", { v: 1, url: "ws://127.0.0.1:8765/ws", token: "t" });
  const yes = person(true);
  assert.equal((await pairings.offer(local, yes.confirm)).outcome, "added");
  assert.equal(yes.asked[0].host, "127.0.0.1:8765");
  const v6 = link("http://[::1]:8765", { v: 1, url: "ws://[::1]:8765/ws", token: "t" });
  assert.equal((await pairings.offer(v6, yes.confirm)).outcome, "added");
  assert.equal(yes.asked[1].host, "[::1]:8765");
});

test("a new token for a known machine is asked about; declining keeps the old one", async () => {
  await pairings.offer(ownLink("old-token-0123456789"), person(true).confirm);
  const before = localStorage.snapshot();
  const no = person(false);
  assert.equal((await pairings.offer(ownLink("new-token-0123456789"), no.confirm)).outcome, "declined");
  assert.deepEqual(no.asked, [{ kind: "token", host: "owner.example", url: "wss://owner.example/ws" }]);
  assert.equal(localStorage.snapshot(), before, "every stored pairing untouched");

  assert.equal((await pairings.offer(ownLink("new-token-0123456789"), person(true).confirm)).outcome, "added");
  const p = pairings.current();
  assert.deepEqual([p.token, p.previousToken], ["new-token-0123456789", "old-token-0123456789"]);
});

test("crafted links are refused, each with its reason, without asking or storing anything", async () => {
  const huge = "A".repeat(1 << 20);
  const cases = [
    ["no pairing at all", `${OWNER}/#session=1`, /not a Chroxy pairing link/],
    ["another host than the page it opens", link(OWNER, { v: 1, url: "wss://evil.example/ws", token: TOKEN }),
      /opens owner\.example but would connect this phone to evil\.example/],
    ["a look-alike host (Cyrillic о)", link(OWNER, { v: 1, url: "wss://оwner.example/ws", token: TOKEN }),
      /opens owner\.example but would connect this phone to xn--wner-/],
    ["the page's host on another port", link(OWNER, { v: 1, url: "wss://owner.example:8443/ws", token: TOKEN }),
      /would connect this phone to owner\.example:8443/],
    ["an unencrypted socket from an https page", link(OWNER, { v: 1, url: "ws://owner.example/ws", token: TOKEN }),
      /opens https:\/\/ but would connect with ws:\/\//],
    ["a javascript: address", link(OWNER, { v: 1, url: "javascript:alert(document.cookie)", token: TOKEN }),
      /not a ws:\/\/ or wss:\/\/ WebSocket address/],
    ["a script's address", link(OWNER, { v: 1, url: "https://owner.example/evil.js", token: TOKEN }),
      /not a ws:\/\/ or wss:\/\/ WebSocket address/],
    ["a data: script", link(OWNER, { v: 1, url: "data:text/javascript,alert(1)", token: TOKEN }),
      /not a ws:\/\/ or wss:\/\/ WebSocket address/],
    ["a javascript: page", `javascript:alert(1)//#pair=${b64url(JSON.stringify({ v: 1, url: "wss://owner.example/ws", token: TOKEN }))}`,
      /does not start with the https:\/\//],
    ["credentials in the address", link(OWNER, { v: 1, url: "wss://me:pw@owner.example/ws", token: TOKEN }),
      /not of the form wss:\/\/host\/ws/],
    ["another path", link(OWNER, { v: 1, url: "wss://owner.example/ws/../admin?x=1", token: TOKEN }),
      /not of the form wss:\/\/host\/ws/],
    ["markup as the address", link(OWNER, { v: 1, url: "wss://<img src=x onerror=alert(1)>/ws", token: TOKEN }),
      /address in it is not a URL/],
    ["no address", link(OWNER, { v: 1, token: TOKEN }), /names no machine/],
    ["a huge payload", link(OWNER, { v: 1, url: "wss://owner.example/ws", token: huge }), /characters long, far more than a real one/],
    ["a huge link with a tiny payload", `${OWNER}/${huge}#pair=e30`, /characters long/],
    ["a newer format", link(OWNER, { v: 3, url: "wss://owner.example/ws", token: TOKEN }), /format this page does not know/],
    ["version 2 without the machine's key", link(OWNER, { v: 2, url: "wss://owner.example/ws", token: TOKEN }),
      /machine's key in it is missing or malformed/],
    ["no format", link(OWNER, { url: "wss://owner.example/ws", token: TOKEN }), /format this page does not know/],
    ["not base64url", `${OWNER}/#pair=<script>alert(1)</script>`, /damaged/],
    ["not JSON", link(OWNER, "alert(1)"), /damaged/],
    ["not an object", link(OWNER, "[1,\"wss://owner.example/ws\",\"t\"]"), /damaged/],
    ["null", link(OWNER, "null"), /damaged/],
    ["not UTF-8", `${OWNER}/#pair=${Buffer.from([0x7b, 0xff, 0xfe, 0x7d]).toString("base64url")}`, /damaged/],
    ["no token", link(OWNER, { v: 1, url: "wss://owner.example/ws" }), /token is missing or malformed/],
    ["an empty token", link(OWNER, { v: 1, url: "wss://owner.example/ws", token: "" }), /token is missing or malformed/],
    ["a token that is not a string", link(OWNER, { v: 1, url: "wss://owner.example/ws", token: { toString: 1 } }),
      /token is missing or malformed/],
    ["a token with a line break", link(OWNER, { v: 1, url: "wss://owner.example/ws", token: "a\nb" }),
      /token is missing or malformed/],
    ["a token with spaces", link(OWNER, { v: 1, url: "wss://owner.example/ws", token: "a b" }),
      /token is missing or malformed/],
    ["a token past 512 characters", link(OWNER, { v: 1, url: "wss://owner.example/ws", token: "a".repeat(513) }),
      /token is missing or malformed/],
  ];
  // The owner's machine is already paired: none of these may touch it.
  await pairings.offer(ownLink(), person(true).confirm);
  const before = localStorage.snapshot();
  for (const [what, crafted, reason] of cases) {
    const p = person(true); // even a person who would say yes to anything is not asked
    const result = await pairings.offer(crafted, p.confirm);
    assert.equal(result.outcome, "refused", what);
    assert.match(result.error, reason, what);
    assert.ok(!result.error.includes(TOKEN), `${what}: the message shows no token`);
    assert.ok(result.error.length < 300, `${what}: the message is short`);
    assert.deepEqual(p.asked, [], `${what}: nobody was asked`);
    assert.equal(localStorage.snapshot(), before, `${what}: nothing stored changed`);
  }
});

test("a token that never worked is replaced, but the one that worked stays aside", async () => {
  const yes = person(true).confirm;
  await pairings.offer(ownLink("worked-0123456789"), yes);
  await pairings.offer(ownLink("bogus-0123456789"), yes);
  await pairings.offer(ownLink("newer-0123456789"), yes);
  let p = pairings.current();
  assert.deepEqual([p.token, p.previousToken], ["newer-0123456789", "worked-0123456789"]);

  // Authenticating with the older token forgets nothing; with the newest, the older one.
  pairings.confirmed(p.url, "worked-0123456789");
  p = pairings.current();
  assert.equal(p.previousToken, "worked-0123456789");
  pairings.confirmed(p.url, "newer-0123456789");
  p = pairings.current();
  assert.deepEqual([p.token, p.previousToken], ["newer-0123456789", undefined]);

  // Going back to the old QR is a change like any other, and leaves no duplicate aside.
  await pairings.offer(ownLink("worked-0123456789"), yes);
  await pairings.offer(ownLink("newer-0123456789"), yes);
  p = pairings.current();
  assert.deepEqual([p.token, p.previousToken], ["newer-0123456789", undefined]);
});

test("the link leaves the address bar at once, whatever becomes of it", () => {
  const crafted = link(OWNER, { v: 1, url: "wss://evil.example/ws", token: TOKEN });
  const replaced = [];
  const hash = crafted.slice(crafted.indexOf("#"));
  globalThis.location = { href: crafted, hash, pathname: "/", search: "" };
  globalThis.history = { replaceState: (_state, _title, url) => replaced.push(url) };
  assert.equal(pairings.takeFromLocation(), crafted);
  assert.deepEqual(replaced, ["/"]);

  globalThis.location = { href: `${OWNER}/#x`, hash: "#x", pathname: "/", search: "" };
  assert.equal(pairings.takeFromLocation(), null);
  assert.deepEqual(replaced, ["/"], "any other fragment is left alone");
});

const CODE = "0123456789abcdef0123456789abcdef";
const codeLink = (code, token = TOKEN) => link(OWNER, { v: 1, url: "wss://owner.example/ws", token, code });

test("a QR's one-time code is kept until the machine has answered, and a fresh one needs no question", async () => {
  assert.equal((await pairings.offer(codeLink(CODE), person(true).confirm)).outcome, "added");
  assert.equal(pairings.current().code, CODE);
  pairings.setDevice(pairings.current().url, { deviceKey: "minted", deviceId: "k7m2qp" });
  let p = pairings.current();
  assert.deepEqual([p.deviceKey, p.deviceId, p.code], ["minted", "k7m2qp", undefined]);

  // Refused later: the key is forgotten; a fresh QR of the same machine pairs again
  // without asking (same machine, same token).
  pairings.setDevice(p.url, { deviceKey: undefined, deviceId: "k7m2qp" });
  assert.equal(pairings.current().deviceKey, undefined);
  const fresh = "fedcba9876543210fedcba9876543210";
  const quiet = person(true);
  assert.equal((await pairings.offer(codeLink(fresh), quiet.confirm)).outcome, "known");
  assert.deepEqual(quiet.asked, []);
  p = pairings.current();
  assert.equal(p.code, fresh);
  assert.equal(pairings.all().length, 1);
});

test("a malformed pairing code refuses the link", async () => {
  for (const code of [5, "", "XYZ", "0".repeat(31), "0".repeat(33), `${"0".repeat(31)}\n`, CODE.toUpperCase()]) {
    const result = await pairings.offer(codeLink(code), person(true).confirm);
    assert.equal(result.outcome, "refused", JSON.stringify(code));
    assert.match(result.error, /pairing code/);
  }
  assert.deepEqual(pairings.all(), []);
});

// ---- version 2: the machine's key ------------------------------------------------------

/// A machine's public key as a v2 link carries it, and its fingerprint.
const KEY = Buffer.alloc(32, 7).toString("base64url");
const OTHER_KEY = Buffer.alloc(32, 9).toString("base64url");
const { createHash } = await import("node:crypto");
const fingerprintOf = (key) =>
  createHash("sha256").update(Buffer.from(key, "base64url")).digest("hex").slice(0, 16).match(/.{4}/g).join("-");
const v2Link = (fields = {}) => link(OWNER, { v: 2, url: "wss://owner.example/ws", key: KEY, code: CODE, ...fields });

test("a version 2 link pins the machine's key; its fingerprint is shown before anything is stored", async () => {
  const no = person(false);
  assert.equal((await pairings.offer(v2Link(), no.confirm)).outcome, "declined");
  assert.deepEqual(no.asked, [
    { kind: "new", host: "owner.example", url: "wss://owner.example/ws", fingerprint: fingerprintOf(KEY) },
  ]);
  assert.deepEqual(pairings.all(), []);

  assert.equal((await pairings.offer(v2Link(), person(true).confirm)).outcome, "added");
  const p = pairings.current();
  assert.deepEqual([p.url, p.key, p.code, p.token], ["wss://owner.example/ws", KEY, CODE, undefined]);

  // The same machine and key again, with a fresh code: no question.
  const fresh = "fedcba9876543210fedcba9876543210";
  const quiet = person(true);
  assert.equal((await pairings.offer(v2Link({ code: fresh }), quiet.confirm)).outcome, "known");
  assert.deepEqual(quiet.asked, []);
  assert.equal(pairings.current().code, fresh);
});

test("a version 2 link may carry the token too (a machine still letting v1 in), or no code", async () => {
  assert.equal((await pairings.offer(v2Link({ token: TOKEN }), person(true).confirm)).outcome, "added");
  assert.deepEqual([pairings.current().key, pairings.current().token], [KEY, TOKEN]);
  const again = person(true);
  assert.equal((await pairings.offer(v2Link({ code: undefined }), again.confirm)).outcome, "known");
  assert.deepEqual(again.asked, [], "the same key: nothing to ask, the token kept");
  assert.equal(pairings.current().token, TOKEN);
});

test("another key for a known machine is asked about, with both fingerprints; declining changes nothing", async () => {
  await pairings.offer(v2Link(), person(true).confirm);
  const before = localStorage.snapshot();
  const no = person(false);
  assert.equal((await pairings.offer(v2Link({ key: OTHER_KEY }), no.confirm)).outcome, "declined");
  assert.deepEqual(no.asked, [{
    kind: "key", host: "owner.example", url: "wss://owner.example/ws",
    fingerprint: fingerprintOf(OTHER_KEY), previous: fingerprintOf(KEY),
  }]);
  assert.equal(localStorage.snapshot(), before);

  assert.equal((await pairings.offer(v2Link({ key: OTHER_KEY }), person(true).confirm)).outcome, "added");
  assert.equal(pairings.current().key, OTHER_KEY);
  assert.equal(pairings.all().length, 1);
});

test("a machine paired with a token gets its first key only once the person agrees", async () => {
  await pairings.offer(ownLink(), person(true).confirm);
  const asked = person(true);
  assert.equal((await pairings.offer(v2Link(), asked.confirm)).outcome, "added");
  assert.deepEqual(asked.asked, [
    { kind: "key", host: "owner.example", url: "wss://owner.example/ws", fingerprint: fingerprintOf(KEY) },
  ]);
  assert.deepEqual([pairings.current().key, pairings.current().token], [KEY, TOKEN], "the token is kept");
});

test("a version 1 link never unpins a machine's key", async () => {
  await pairings.offer(v2Link({ token: TOKEN }), person(true).confirm);
  const quiet = person(true);
  assert.equal((await pairings.offer(ownLink(), quiet.confirm)).outcome, "known");
  assert.deepEqual(quiet.asked, []);
  assert.equal(pairings.current().key, KEY);
  const asked = person(true);
  assert.equal((await pairings.offer(ownLink("new-token-0123456789"), asked.confirm)).outcome, "added");
  assert.equal(asked.asked[0].kind, "token");
  assert.deepEqual([pairings.current().key, pairings.current().token], [KEY, "new-token-0123456789"]);
});

test("a version 2 link's key must be exactly 32 bytes of canonical base64url", async () => {
  const bytes = Buffer.alloc(32, 7);
  const cases = [
    ["no key", undefined],
    ["a number", 5],
    ["padded", `${KEY}=`],
    ["a + of standard base64", bytes.toString("base64").replace(/=+$/, "").replace(/.$/, "+")],
    ["31 bytes", Buffer.alloc(31, 7).toString("base64url")],
    ["33 bytes", Buffer.alloc(33, 7).toString("base64url")],
    ["a spare bit set", KEY.slice(0, -1) + String.fromCharCode(KEY.charCodeAt(42) + 1)],
    ["spaces", ` ${KEY.slice(1)}`],
  ];
  for (const [what, key] of cases) {
    const p = person(true);
    const result = await pairings.offer(v2Link({ key }), p.confirm);
    assert.equal(result.outcome, "refused", what);
    assert.match(result.error, /machine's key in it is missing or malformed/, what);
    assert.deepEqual(p.asked, [], what);
  }
  const badToken = await pairings.offer(v2Link({ token: "a b" }), person(true).confirm);
  assert.match(badToken.error, /token is missing or malformed/);
  assert.deepEqual(pairings.all(), []);
});

test("where this page has no WebCrypto (not a secure context), a key is still pinned, without a fingerprint", async () => {
  const real = Object.getOwnPropertyDescriptor(globalThis, "crypto");
  Object.defineProperty(globalThis, "crypto", { value: {}, configurable: true });
  try {
    const asked = person(true);
    assert.equal((await pairings.offer(v2Link(), asked.confirm)).outcome, "added");
    assert.equal(asked.asked[0].fingerprint, null);
    assert.equal(pairings.current().key, KEY);
  } finally {
    Object.defineProperty(globalThis, "crypto", real);
  }
});
