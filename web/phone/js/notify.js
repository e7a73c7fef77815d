// Notifications on this phone (docs/protocol.md "Notifications"): the service worker
// that shows the computer's pushes, and this browser's push subscription. Which events
// push, and whether the page is on screen, are told to the computer by app.js.

/// How long the browser's push service may take to give a subscription.
const SUBSCRIBE_WAIT_MS = 15000;

/// base64url (no padding) ↔ bytes.
const fromB64url = (s) => Uint8Array.from(atob(s.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));
const toB64url = (buffer) =>
  btoa(String.fromCharCode(...new Uint8Array(buffer))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");

/// Why this browser cannot be notified, in words; `null` when it can.
export function unsupported() {
  if (!window.isSecureContext) return "this page is not on a secure (https://) address";
  if (!("serviceWorker" in navigator)) return "this browser has no service workers";
  if (!("PushManager" in window)) {
    return "this browser cannot receive pushes (on an iPhone, add Chroxy to the home screen and open it from there)";
  }
  if (!("Notification" in window)) return "this browser cannot show notifications";
  return null;
}

/// The one script URL this page hands the browser (the page allows Trusted Types
/// policy `chroxy-sw` only, and this is it): the service worker, and nothing else.
const SCRIPT_URLS = window.trustedTypes?.createPolicy("chroxy-sw", {
  createScriptURL: (url) => {
    if (url !== "sw.js") throw new TypeError(`not the service worker: ${url}`);
    return url;
  },
});

/// Starts the service worker (it also keeps the app's files for opening offline).
export function registerWorker() {
  if (!("serviceWorker" in navigator) || !window.isSecureContext) return;
  navigator.serviceWorker.register(SCRIPT_URLS?.createScriptURL("sw.js") ?? "sw.js").catch(() => {
    // Without it the app still works online; notifications then say they cannot.
  });
}

/// Asks the person, then the browser's push service, for a subscription made with the
/// computer's `key`; its JSON for `push_subscribe`. Throws an Error worded for the page.
export async function subscribe(key) {
  const permission = await Notification.requestPermission();
  if (permission !== "granted") {
    throw new Error("notifications are blocked for this page: allow them in the browser's site settings");
  }
  const registration = await navigator.serviceWorker.ready;
  let subscription = await registration.pushManager.getSubscription();
  // One made with another key (another computer's, or one set up anew) cannot carry
  // this computer's pushes.
  const made = subscription?.options?.applicationServerKey;
  if (subscription && (!made || toB64url(made) !== key)) {
    await subscription.unsubscribe();
    subscription = null;
  }
  if (!subscription) subscription = await fresh(registration, key);
  return subscription.toJSON();
}

/// A new subscription from the browser's push service, which may never answer when it
/// cannot be reached.
async function fresh(registration, key) {
  const silent = new Error(`the browser's push service did not answer in ${SUBSCRIBE_WAIT_MS / 1000} s (is the phone online?)`);
  let late;
  const silence = new Promise((_, reject) => {
    late = setTimeout(() => reject(silent), SUBSCRIBE_WAIT_MS);
  });
  try {
    const asked = registration.pushManager.subscribe({ userVisibleOnly: true, applicationServerKey: fromB64url(key) });
    return await Promise.race([asked, silence]);
  } catch (err) {
    if (err === silent) throw err;
    throw new Error(`the browser's push service refused: ${err.message || err.name}`);
  } finally {
    clearTimeout(late);
  }
}

/// Drops this browser's subscription, if it has one.
export async function unsubscribe() {
  const registration = await navigator.serviceWorker?.getRegistration();
  const subscription = await registration?.pushManager.getSubscription();
  await subscription?.unsubscribe();
}

/// Closes this phone's notifications tagged `tag` (as the service worker tags them: a
/// prompt's id, or `turn_done:<sessionId>`): what they announced is over or seen.
export async function dismiss(tag) {
  const registration = await navigator.serviceWorker?.getRegistration().catch(() => null);
  const shown = (await registration?.getNotifications({ tag }).catch(() => null)) ?? [];
  for (const n of shown) n.close();
}

/// Calls `open({sessionId, promptId})` when a tapped notification asks this page to
/// show its prompt, and once now if the page was opened by such a tap (`?session=`).
export function onOpen(open) {
  navigator.serviceWorker?.addEventListener("message", (e) => {
    if (e.data?.type === "open") open({ sessionId: e.data.sessionId, promptId: e.data.promptId });
  });
  const params = new URLSearchParams(location.search);
  if (params.has("session") || params.has("prompt")) {
    open({ sessionId: params.get("session"), promptId: params.get("prompt") });
    // Not kept in the address bar: a reload is an ordinary opening.
    history.replaceState(null, "", location.pathname + location.hash);
  }
}
