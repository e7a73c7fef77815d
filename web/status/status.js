// The status page: reads /api/status every 2 s and renders it; the buttons POST the
// actions with the admin token the user typed (kept in sessionStorage: this tab only).
// Every server string goes through textContent: nothing from the API becomes markup.

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;
/** A supervisor that accepts the connection but never answers counts as not answering. */
const FETCH_TIMEOUT_MS = 5000;
const TOKEN_KEY = "chroxy-admin";
/** The release of the deploy awaiting approval as shown: an answer names it, so a
 * request that replaced it meanwhile is never the one approved. */
let pendingShown = null;

function text(id, value) {
  $(id).textContent = value === null || value === undefined || value === "" ? "–" : String(value);
}

/// The public port's bounds, and whether a flood has met them.
function connectionsText(c) {
  if (!c) return "";
  const now = `${c.open} open (${c.unauthenticated} not signed in) of at most ${c.maxConnections} (${c.maxUnauthenticated} not signed in)`;
  if (c.lastLimitAt === null || c.lastLimitAt === undefined) return now;
  return `${now}; limit last met ${when(c.lastLimitAt)}: ${c.evicted} unauthenticated closed to make room, ${c.refused} turned away`;
}

function duration(ms) {
  let rest = Math.floor(ms / 1000);
  const out = [];
  for (const [n, unit] of [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]]) {
    if (rest >= n || (unit === "s" && out.length === 0)) {
      out.push(Math.floor(rest / n) + unit);
      rest %= n;
    }
  }
  return out.slice(0, 2).join(" ");
}

function when(ms) {
  if (!ms) return "–";
  const d = new Date(ms);
  return d.toDateString() === new Date().toDateString() ? d.toLocaleTimeString() : d.toLocaleString();
}

function short(hex, n = 12) {
  return hex ? hex.slice(0, n) : "";
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c ?? "";
    tr.appendChild(td);
  }
  return tr;
}

function withTimeout() {
  return typeof AbortSignal.timeout === "function" ? AbortSignal.timeout(FETCH_TIMEOUT_MS) : undefined;
}

function render(s) {
  const name = s.state.replaceAll("_", " ");
  const state = $("state");
  state.textContent = name;
  state.className = "state " + s.state;
  document.title = `Chroxy — ${name}`;
  $("offline").hidden = true;
  $("main").classList.remove("stale");
  $("demo").hidden = !s.demo;
  // The reason is the headline while failed; otherwise it only says why the last
  // restart happened.
  const reason = $("reason");
  const failed = s.state === "failed";
  reason.hidden = !s.failedReason;
  reason.className = failed ? "alert" : "note";
  reason.textContent = s.failedReason ? (failed ? "Failed: " : "Last restart: ") + s.failedReason : "";

  text("uptime", duration(s.uptimeMs));
  const w = s.worker;
  text(
    "worker",
    w.pid
      ? `pid ${w.pid} on port ${w.port ?? "?"}, release ${w.release ?? "?"}, since ${when(w.startedAt)}`
      : `not running${w.release ? ` (last release ${w.release})` : ""}`,
  );
  text("restarts", w.restarts);
  const sb = s.standby;
  text(
    "standby",
    sb
      ? `${sb.ready ? "ready to take over" : "starting"} (pid ${sb.pid ?? "?"}${sb.rssBytes ? `, ${Math.round(sb.rssBytes / 1e6)} MB` : ""})`
      : "none",
  );
  text("current", s.releases.current);
  text("known-good", s.releases.knownGood);
  const c = s.canary;
  text("canary", c ? c.summary : "");
  text("build", (s.build?.summary ?? []).join("\n"));
  renderPending(s.pendingDeploy);
  renderTunnel(s.tunnel);
  text("clients", s.clients);
  text("connections", connectionsText(s.connections));
  text("sessions", s.sessions);
  text("public", `127.0.0.1:${s.publicPort}`);
  text("secrets", s.secretsBackend);

  $("releases").replaceChildren(
    ...s.releases.list.map((r) => {
      const marks = [];
      if (r.id === s.releases.current) marks.push("current");
      if (r.id === s.releases.knownGood) marks.push("known-good");
      if (r.damaged) marks.push(`damaged: ${r.damaged}`);
      return row([r.id, r.version, short(r.commit), when(r.builtAt), short(r.sha256), marks.join(", ")]);
    }),
  );
  $("events").replaceChildren(...[...s.events].reverse().map((e) => row([when(e.at), e.kind, e.message])));
  renderDevices(s.devices);
  $("fingerprint").textContent = s.identity?.fingerprint ?? "";
}

/// Each device, with the decisions that apply to it: approve or refuse one that waits,
/// revoke an approved one, rename any; "connected now" while it has a connection.
function renderDevices(d) {
  if (!d) return;
  $("devices-open").hidden = d.approveNew !== false;
  $("token-auth").hidden = d.allowTokenAuth !== true;
  $("devices-error").hidden = !d.error;
  $("devices-error").textContent = d.error ?? "";
  const decisions = { pending: ["approve", "refuse"], approved: ["revoke"], refused: [] };
  $("devices").replaceChildren(
    ...d.list.map((device) => {
      const state = device.state === "pending" ? "waiting for approval" : device.state;
      const from = device.lastAddress ? ` from ${device.lastAddress}` : "";
      const connected = (d.connected ?? []).includes(device.id);
      const seen = connected ? `connected now${from}` : device.lastSeen ? `${when(device.lastSeen)}${from}` : "";
      const tr = row([device.id, device.name, device.platform, state, seen, ""]);
      tr.dataset.device = device.id;
      for (const decision of decisions[device.state] ?? []) {
        const button = document.createElement("button");
        button.type = "button";
        button.dataset.decision = decision;
        button.textContent = decision[0].toUpperCase() + decision.slice(1);
        button.addEventListener("click", () => act(`devices/${decision}`, button, { id: device.id }));
        tr.lastChild.append(button);
      }
      const rename = document.createElement("button");
      rename.type = "button";
      rename.dataset.decision = "rename";
      rename.textContent = "Rename";
      rename.addEventListener("click", () => {
        const name = prompt(`A name for device ${device.id}`, device.name ?? "");
        if (name !== null) act("devices/rename", rename, { id: device.id, name });
      });
      tr.lastChild.append(rename);
      return tr;
    }),
  );
}

function renderPending(p) {
  $("pending").hidden = !p;
  pendingShown = p ? p.release : null;
  if (!p) return;
  text(
    "pending-text",
    `Release ${p.release}${p.version ? ` (chroxy ${p.version})` : ""}, asked for at ${when(p.requestedAt)}; dropped at ${when(p.expiresAt)} unless answered.`,
  );
}

function renderTunnel(t) {
  const cell = $("tunnel");
  cell.replaceChildren(`${t.mode}: ${t.state}`);
  if (t.url) {
    cell.append(" — ");
    if (/^https:\/\//.test(t.url)) {
      const a = document.createElement("a");
      a.href = t.url;
      a.rel = "noreferrer noopener";
      a.target = "_blank";
      a.textContent = t.url;
      cell.append(a);
    } else {
      cell.append(t.url);
    }
  }
  if (t.lastError) cell.append(` (${t.lastError})`);
}

function offline() {
  const state = $("state");
  state.textContent = "supervisor not answering";
  state.className = "state offline";
  document.title = "Chroxy — not answering";
  $("offline").hidden = false;
  $("main").classList.add("stale");
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { cache: "no-store", signal: withTimeout() });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch {
    offline();
  }
}

async function loop() {
  await refresh();
  setTimeout(loop, REFRESH_MS);
}

async function act(action, button, body) {
  const token = $("admin").value.trim();
  const answer = $("answer");
  if (!token) {
    answer.className = "error";
    answer.textContent = "Paste the admin token first: `chroxy token show --admin` prints it.";
    $("admin").focus();
    return;
  }
  const buttons = document.querySelectorAll("[data-action]");
  for (const b of buttons) b.disabled = true;
  answer.className = "";
  answer.textContent = `${button.textContent}…`;
  try {
    const answersDeploy = action.startsWith("deploy/");
    const response = await fetch("/api/" + action, {
      method: "POST",
      headers: { "X-Chroxy-Admin": token, "Content-Type": "application/json" },
      body: answersDeploy ? JSON.stringify({ release: pendingShown }) : body ? JSON.stringify(body) : undefined,
      signal: withTimeout(),
    });
    let body = null;
    try {
      body = await response.json();
    } catch {
      // Not JSON: say what HTTP said.
    }
    if (response.ok && body?.ok) {
      answer.className = "ok";
      answer.textContent = body.message || "Done.";
    } else {
      answer.className = "error";
      answer.textContent = `Refused: ${body?.error ?? "HTTP " + response.status}`;
    }
  } catch (err) {
    answer.className = "error";
    answer.textContent = `The supervisor did not answer (${err.message}).`;
  } finally {
    for (const b of buttons) b.disabled = false;
  }
  refresh();
}

const admin = $("admin");
admin.value = sessionStorage.getItem(TOKEN_KEY) ?? "";
admin.addEventListener("input", () => sessionStorage.setItem(TOKEN_KEY, admin.value.trim()));
$("actions").addEventListener("submit", (e) => e.preventDefault());
for (const button of document.querySelectorAll("[data-action]")) {
  button.addEventListener("click", () => act(button.dataset.action, button));
}
loop();
