// The panel that stands between a `#pair=` link and this phone's pairings: it names the
// host a link would connect to and waits for the person's answer, or says why a link
// was not used. Anyone can send the owner a link; only the owner decides what it does.

const $ = (id) => document.getElementById(id);

let pending = null; // resolves the question on screen

function show(kind, title, note) {
  const panel = $("pair-offer");
  panel.dataset.kind = kind;
  $("pair-offer-title").textContent = title;
  $("pair-offer-note").textContent = note;
  panel.hidden = false;
}

function answer(yes) {
  $("pair-offer").hidden = true;
  const resolve = pending;
  pending = null;
  resolve?.(yes);
}

$("pair-offer-yes").addEventListener("click", () => answer(true));
$("pair-offer-no").addEventListener("click", () => answer(false));

/// The words for a key's fingerprint, which the person compares with the Chroxy window.
const fingerprintNote = (fingerprint) =>
  fingerprint
    ? `Its key's fingerprint is ${fingerprint}: check that the Chroxy window on your computer shows the same.`
    : "This page cannot show the key's fingerprint (it was not opened over https://).";

/// Asks whether to apply `change` (`{kind: "new" | "key" | "token", host, url,
/// fingerprint?, previous?}`, as pairing.offer describes it); resolves to the answer. A
/// newer question (another link opened meanwhile) declines this one.
export function ask({ kind, host, url, fingerprint, previous }) {
  answer(false);
  let yes;
  if (kind === "new") {
    const key = fingerprint === undefined ? "" : ` ${fingerprintNote(fingerprint)}`;
    show("new", `Pair with ${host}?`,
      `This phone will connect to ${url} and send it what you type and approve. ` +
      `Only pair if this link is the QR code your own machine shows (the Chroxy window or chroxy start).${key}`);
    yes = "Pair";
  } else if (kind === "key" && previous !== undefined) {
    const was = previous ? `; the one this phone pinned is ${previous}` : "";
    show("key-changed", `The key of ${host} changed`,
      `This link gives that machine a new key${fingerprint ? `, fingerprint ${fingerprint}` : ""}${was}. ` +
      (fingerprint
        ? "Accept only if the Chroxy window on your computer shows this new fingerprint (Chroxy was set up anew there); "
        : "Accept only if you know Chroxy was set up anew on your computer; ") +
      "otherwise someone may be posing as your machine: cancel.");
    yes = "Trust the new key";
  } else if (kind === "key") {
    show("key", `Encrypt the connection to ${host}?`,
      "This link gives that machine's key: from now on this phone talks to it end-to-end encrypted, " +
      `and only if it holds this key. ${fingerprintNote(fingerprint)}`);
    yes = "Use the key";
  } else {
    show("token", `New token for ${host}?`,
      "This link replaces the token this phone uses for that machine. The current one is kept " +
      "until the new one has worked. Only accept if your machine shows this QR code now.");
    yes = "Use the new token";
  }
  $("pair-offer-yes").hidden = false;
  $("pair-offer-yes").textContent = yes;
  $("pair-offer-no").textContent = "Cancel";
  return new Promise((resolve) => {
    pending = resolve;
  });
}

/// Says why a link was not used (`error` from pairing.offer).
export function tell(error) {
  answer(false);
  show("refused", "Nothing was changed", error);
  $("pair-offer-yes").hidden = true;
  $("pair-offer-no").textContent = "OK";
}
