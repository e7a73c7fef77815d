// The phone client's service worker: shows the computer's pushes (src/push), opens
// the prompt a tapped notification is about, and keeps the client's files so that the
// app opens without a network and says so (the page, not this, says it).
//
// A push carries only what docs/protocol.md "Notifications" lists — a kind, a session's
// id and name, a tool's name, a prompt's id — encrypted for this browser; every word
// shown is built here from those, never markup.

const SHELL = "chroxy-shell-v3";
const FILES = [
  "./",
  "app.css",
  "manifest.webmanifest",
  "icon.svg",
  "icon-192.png",
  "js/app.js",
  "js/attach.js",
  "js/change.js",
  "js/connection.js",
  "js/deploy.js",
  "js/device-keys.js",
  "js/markdown.js",
  "js/noise.js",
  "js/notify.js",
  "js/pair-prompt.js",
  "js/pairing.js",
];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((c) => c.addAll(FILES)).then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(
    caches
      .keys()
      .then((names) => Promise.all(names.filter((n) => n !== SHELL).map((n) => caches.delete(n))))
      .then(() => self.clients.claim()),
  );
});

// The network first, so a new release's files are used as soon as they are there; the
// kept copy when there is no network, or when the computer answers but cannot serve
// (a 5xx: the supervisor's "restarting" page while no worker is up), so the app opens,
// says what is wrong and keeps what is typed. Only the client's own files: the socket
// and anything else go by untouched.
self.addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  if (event.request.method !== "GET" || url.origin !== self.location.origin) return;
  const path = url.pathname.replace(/^\//, "") || "./";
  const shell = path === "./" || path === "index.html" || FILES.includes(path);
  if (!shell) return;
  const key = path === "index.html" ? "./" : path;
  event.respondWith(
    fetch(event.request)
      .then((response) => {
        if (response.ok) {
          const copy = response.clone();
          caches.open(SHELL).then((c) => c.put(key, copy));
        }
        if (response.status >= 500) return caches.match(key).then((kept) => kept ?? response);
        return response;
      })
      .catch(() => caches.match(key).then((kept) => kept ?? Response.error())),
  );
});

/// What a notice says, in words.
function wording(n) {
  const session = typeof n.session === "string" && n.session ? ` in “${n.session}”` : "";
  switch (n.kind) {
    case "permission":
      return [`Claude is waiting for your OK`, `${typeof n.tool === "string" ? n.tool : "A tool"}${session}: tap to see what it asks.`];
    case "question":
      return ["Claude has a question", `Waiting for your answer${session}.`];
    case "turn_done":
      return ["Claude is done", `The turn${session} has finished.`];
    case "failed":
      return ["Chroxy stopped serving", "The server keeps failing. Open Chroxy on the computer to restart or roll back."];
    case "rolled_back":
      return ["Chroxy rolled back", "A new release kept failing; the previous one serves again."];
    default:
      return ["Chroxy", "Something on the computer needs you."];
  }
}

/// Where a tap leads: the client, opened on the session and its prompt.
function target(n) {
  const url = new URL("./", self.location.href);
  if (typeof n.sessionId === "string") url.searchParams.set("session", n.sessionId);
  if (typeof n.promptId === "string") url.searchParams.set("prompt", n.promptId);
  return url.href;
}

self.addEventListener("push", (event) => {
  let notice = {};
  try {
    notice = event.data?.json() ?? {};
  } catch {
    // Not ours to read: still say something, as a push must be shown.
  }
  const [title, body] = wording(notice);
  event.waitUntil(
    self.registration.showNotification(title, {
      body,
      // One notification per prompt (or per session's turn), replaced, not stacked.
      tag: notice.promptId ?? `${notice.kind}:${notice.sessionId ?? ""}`,
      icon: "icon-192.png",
      data: { url: target(notice), sessionId: notice.sessionId, promptId: notice.promptId },
    }),
  );
});

self.addEventListener("notificationclick", (event) => {
  event.notification.close();
  const { url, sessionId, promptId } = event.notification.data ?? {};
  event.waitUntil(
    self.clients.matchAll({ type: "window", includeUncontrolled: true }).then((open) => {
      const page = open.find((c) => new URL(c.url).origin === self.location.origin);
      if (page) {
        page.postMessage({ type: "open", sessionId, promptId });
        return page.focus();
      }
      return self.clients.openWindow(url ?? "./");
    }),
  );
});
