// Pairings (machine URL + token) kept in localStorage. A pairing is removed only by the
// user: a failed reconnect, a server that is down, even a rotated token never erase it.

const KEY = "chroxy.pairings";
const CURRENT = "chroxy.current";

function b64urlDecode(text) {
  const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
  return new TextDecoder().decode(Uint8Array.from(bin, (c) => c.charCodeAt(0)));
}

/// The payload of a `#pair=` fragment, or null.
export function parseLink(link) {
  const at = link.indexOf("#pair=");
  if (at < 0) return null;
  try {
    const p = JSON.parse(b64urlDecode(link.slice(at + 6)));
    if (p.v !== 1 || typeof p.url !== "string" || typeof p.token !== "string") return null;
    if (!/^wss?:\/\//.test(p.url)) return null;
    return { url: p.url, token: p.token };
  } catch {
    return null;
  }
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

/// Adds (or updates the token of) the machine at `url`, and makes it current. The old
/// token is kept aside until the new one has authenticated once.
export function add({ url, token }) {
  const list = all();
  const existing = list.find((p) => p.url === url);
  if (existing) {
    if (existing.token !== token) {
      existing.previousToken = existing.token;
      existing.token = token;
    }
  } else {
    list.push({ url, token, name: new URL(url.replace(/^ws/, "http")).host, addedAt: Date.now() });
  }
  save(list);
  select(url);
}

/// A token authenticated: forget any older one.
export function confirmed(url) {
  const list = all();
  const p = list.find((x) => x.url === url);
  if (p && p.previousToken) {
    delete p.previousToken;
    save(list);
  }
}

export function remove(url) {
  save(all().filter((p) => p.url !== url));
}

/// Takes a pairing from the address bar (the QR's link), then removes it from there.
export function fromLocation() {
  const p = parseLink(location.href);
  if (location.hash.startsWith("#pair=")) {
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (p) add(p);
  return p;
}
