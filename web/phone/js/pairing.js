// Pairings (machine URL, the machine's pinned public key and/or token) kept in
// localStorage: nothing secret to the phone is in them (its device keys live in
// IndexedDB, device-keys.js). A pairing is removed only by the user: a failed reconnect,
// a server that is down, even a rotated token never erase it.
//
// A `#pair=` link is untrusted input: anyone can send the owner one. It is checked
// against what Chroxy itself makes (docs/protocol.md "Pairing link", and "Pairing link,
// v2" for links with the machine's key) and, when it would add a machine or change a
// known one's key or token, applied only after the person agreed.

import { decodePublicKey, fingerprint } from "./noise.js";

const KEY = "chroxy.pairings";
const CURRENT = "chroxy.current";

// A real link is ~200 characters; these bounds leave room for the longest host name
// (253) and a hand-set CHROXY_TOKEN while refusing a payload meant to bloat storage or
// stall the page.
const MAX_LINK = 2048;
const MAX_TOKEN = 512;
// Visible ASCII: what a generated token (base64url) and any sane CHROXY_TOKEN are made
// of; a token with spaces, controls or other characters was not made by Chroxy.
const TOKEN_FORM = /^[\x21-\x7e]+$/;
const SOCKET_SCHEME = { "https:": "wss:", "http:": "ws:" };
// A one-time pairing code as Chroxy makes them: 128 bits as hex.
const CODE_FORM = /^[0-9a-f]{32}$/;

function b64urlDecode(text) {
  if (!/^[A-Za-z0-9_-]*$/.test(text)) throw new Error("not base64url");
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
  return new TextDecoder("utf-8", { fatal: true }).decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

function parseUrl(text) {
  try {
    return new URL(text);
  } catch {
    return null;
  }
}

/// The JSON object a fragment encodes, or null.
function decodePayload(fragment) {
  try {
    const p = JSON.parse(b64urlDecode(fragment));
    return p !== null && typeof p === "object" && !Array.isArray(p) ? p : null;
  } catch {
    return null;
  }
}

const refused = (error) => ({ error: `This pairing link was not used: ${error}` });

/// The pairing a link carries, as `{pairing: {url, key?, token?, code?}}` (v1: a token;
/// v2: the machine's key, and a token only while the machine still lets v1 in), or
/// `{error}` saying why it cannot be used. Only what `chroxy pair` makes passes:
/// `<page>/#pair=<payload>` whose payload's `url` is the WebSocket of that same page's
/// host (`https` ↔ `wss`), so a link can never send this page's owner to another machine
/// than the one it opens.
function parseLink(link) {
  const at = link.indexOf("#pair=");
  if (at < 0) return { error: "That is not a Chroxy pairing link (it has no #pair= part)." };
  if (link.length > MAX_LINK) {
    return refused(`it is ${link.length} characters long, far more than a real one.`);
  }
  const fragment = link.slice(at + 6);
  const page = parseUrl(link.slice(0, at));
  if (!page || !SOCKET_SCHEME[page.protocol]) {
    return refused("it does not start with the https:// (or http://) address of a machine.");
  }
  const p = decodePayload(fragment);
  if (!p) return refused("it is damaged (its #pair= part does not decode). Scan the QR code again.");
  if (p.v !== 1 && p.v !== 2) {
    return refused("it is in a format this page does not know (version 1 or 2 expected). Update Chroxy and scan its QR code again.");
  }
  if (typeof p.url !== "string") return refused("it names no machine to connect to.");
  const url = parseUrl(p.url);
  if (!url) return refused("the machine's address in it is not a URL.");
  if (url.protocol !== "ws:" && url.protocol !== "wss:") {
    return refused("the machine's address in it is not a ws:// or wss:// WebSocket address.");
  }
  if (!url.host || url.username || url.password || url.pathname !== "/ws" || url.search || url.hash) {
    return refused("the machine's address in it is not of the form wss://host/ws.");
  }
  if (url.host !== page.host) {
    return refused(`it opens ${page.host} but would connect this phone to ${url.host}. Links made by Chroxy never do that.`);
  }
  if (SOCKET_SCHEME[page.protocol] !== url.protocol) {
    return refused(`it opens ${page.protocol}// but would connect with ${url.protocol}//. Links made by Chroxy never do that.`);
  }
  const pairing = { url: url.href };
  if (p.v === 2) {
    if (!decodePublicKey(p.key)) return refused("the machine's key in it is missing or malformed.");
    pairing.key = p.key;
  }
  if (p.v === 1 || p.token !== undefined) {
    if (typeof p.token !== "string" || p.token.length > MAX_TOKEN || !TOKEN_FORM.test(p.token)) {
      return refused("its token is missing or malformed.");
    }
    pairing.token = p.token;
  }
  if (p.code !== undefined && (typeof p.code !== "string" || !CODE_FORM.test(p.code))) {
    return refused("its pairing code is malformed.");
  }
  if (p.code !== undefined) pairing.code = p.code;
  return { pairing };
}

/// The host:port a pairing connects to: what the person is asked to trust.
function hostOf(url) {
  return new URL(url).host;
}

export function all() {
  try {
    const list = JSON.parse(localStorage.getItem(KEY) ?? "[]");
    return Array.isArray(list) ? list : [];
  } catch {
    return [];
  }
}

function save(list) {
  localStorage.setItem(KEY, JSON.stringify(list));
}

export function current() {
  const list = all();
  return list.find((p) => p.url === localStorage.getItem(CURRENT)) ?? list[0] ?? null;
}

export function select(url) {
  localStorage.setItem(CURRENT, url);
}

/// Adds (or updates the key or token of) the machine at `url`, and makes it current. The
/// token that last worked is kept aside as `previousToken` until the new one has
/// authenticated once, so a wrong or premature link never strands the phone. A key is
/// only ever replaced by another (the person confirmed it): a link without one (v1)
/// never unpins it, so nobody can talk the phone out of encryption.
export function add({ url, key, token, code }) {
  const list = all();
  const existing = list.find((p) => p.url === url);
  if (existing) {
    // A fresh QR's one-time code: the machine pairs this phone with it (again).
    if (code) existing.code = code;
    if (key) existing.key = key;
    if (token !== undefined && existing.token !== token) {
      // An unconfirmed token is replaced; the one that worked stays aside.
      if (!existing.previousToken && existing.token) existing.previousToken = existing.token;
      existing.token = token;
      if (existing.previousToken === token) delete existing.previousToken;
    }
  } else {
    const added = { url, name: hostOf(url), addedAt: Date.now() };
    if (key) added.key = key;
    if (token) added.token = token;
    if (code) added.code = code;
    list.push(added);
  }
  save(list);
  select(url);
}

/// `token` authenticated at `url`: when it is the machine's newest, forget the older one.
export function confirmed(url, token) {
  const list = all();
  const p = list.find((x) => x.url === url);
  if (p && p.previousToken && p.token === token) {
    delete p.previousToken;
    save(list);
  }
}

/// What `url`'s machine said about this device (`deviceKey` undefined: forget it); the
/// pairing code is spent either way.
export function setDevice(url, { deviceKey, deviceId }) {
  const list = all();
  const p = list.find((x) => x.url === url);
  if (!p) return;
  if (deviceKey) p.deviceKey = deviceKey;
  else delete p.deviceKey;
  if (deviceId) p.deviceId = deviceId;
  delete p.code;
  save(list);
}

export function remove(url) {
  save(all().filter((p) => p.url !== url));
}

/// What applying `pairing` would change about `known` (its stored pairing, if any):
/// `new`, `key` (another key than the pinned one, or a first one), `token`, or null.
function changeOf(known, pairing) {
  if (!known) return "new";
  if (pairing.key && pairing.key !== known.key) return "key";
  if (pairing.token && pairing.token !== known.token) return "token";
  return null;
}

/// The fingerprint of a key as links carry it, or null where this page cannot compute
/// one (no WebCrypto on a page that is not a secure context).
async function fingerprintOf(key) {
  try {
    return await fingerprint(decodePublicKey(key));
  } catch {
    return null;
  }
}

/// Applies the pairing `link` carries, asking `confirm({kind, host, url, fingerprint?,
/// previous?})` (resolving to true or false) first whenever it would add a machine
/// (`kind: "new"`), pin a key for a known one other than the one pinned (`kind: "key"`;
/// `previous` is the pinned key's fingerprint, absent when none was pinned) or change a
/// known one's token (`kind: "token"`). `fingerprint` is the link's key's, when it has
/// one (null when this page cannot compute it). Resolves to `{outcome, url?, error?}`:
/// `refused` (with the reason; nothing changed), `declined` (nothing changed), `known`
/// (the same pairing was already stored; made current) or `added`.
export async function offer(link, confirm) {
  const { pairing, error } = parseLink(link);
  if (error) return { outcome: "refused", error };
  const known = all().find((p) => p.url === pairing.url);
  const kind = changeOf(known, pairing);
  if (!kind) {
    // The same machine, key and token: a fresh code needs no question (it only ever
    // pairs this phone with the machine it already trusts).
    if (pairing.code) add(pairing);
    select(pairing.url);
    return { outcome: "known", url: pairing.url };
  }
  const change = { kind, host: hostOf(pairing.url), url: pairing.url };
  if (pairing.key) change.fingerprint = await fingerprintOf(pairing.key);
  if (kind === "key" && known.key) change.previous = await fingerprintOf(known.key);
  if (!(await confirm(change))) return { outcome: "declined" };
  add(pairing);
  return { outcome: "added", url: pairing.url };
}

/// The pairing link in the address bar (the QR's), if any; removed from there at once so
/// the token does not linger in the address bar or the history, whatever becomes of it.
export function takeFromLocation() {
  if (!location.hash.startsWith("#pair=")) return null;
  const link = location.href;
  history.replaceState(null, "", location.pathname + location.search);
  return link;
}
