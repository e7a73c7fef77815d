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

/// Asks whether to apply `change` (`{kind: "new" | "token", host, url}`, as
/// pairing.offer describes it); resolves to the answer. A newer question (another link
/// opened meanwhile) declines this one.
export function ask({ kind, host, url }) {
  answer(false);
  if (kind === "new") {
    show("new", `Pair with ${host}?`,
      `This phone will connect to ${url} and send it what you type and approve. ` +
      "Only pair if this link is the QR code your own machine shows (the Chroxy window or chroxy start).");
  } else {
    show("token", `New token for ${host}?`,
      "This link replaces the token this phone uses for that machine. The current one is kept " +
      "until the new one has worked. Only accept if your machine shows this QR code now.");
  }
  $("pair-offer-yes").hidden = false;
  $("pair-offer-yes").textContent = kind === "new" ? "Pair" : "Use the new token";
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
