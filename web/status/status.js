// The status page: reads /api/status every 2 s and renders it; buttons POST the
// actions with the admin token typed by the user (kept for this tab only).
// Every server string goes through textContent: nothing from the API becomes markup.

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;

function text(id, value) {
  $(id).textContent = value ?? "–";
}

function duration(ms) {
  const s = Math.floor(ms / 1000);
  const parts = [[86400, "d"], [3600, "h"], [60, "m"], [1, "s"]];
  const out = [];
  let rest = s;
  for (const [n, unit] of parts) {
    if (rest >= n || (unit === "s" && out.length === 0)) {
      out.push(Math.floor(rest / n) + unit);
      rest %= n;
    }
  }
  return out.slice(0, 2).join(" ");
}

function when(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
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

function render(s) {
  const state = $("state");
  state.textContent = s.state.replace("_", " ");
  state.className = "state " + s.state;
  $("offline").hidden = true;
  $("demo").hidden = !s.demo;
  $("reason").hidden = !s.failedReason;
  text("reason", s.failedReason);
  text("uptime", duration(s.uptimeMs));
  const w = s.worker;
  text("worker", w.pid ? `release ${w.release}, pid ${w.pid}, port ${w.port}, since ${when(w.startedAt)}` : "not running");
  text("restarts", String(w.restarts));
  text("clients", String(s.clients));
  text("sessions", String(s.sessions));
  const t = s.tunnel;
  text("tunnel", `${t.mode}: ${t.state}${t.url ? " — " + t.url : ""}${t.lastError ? " (" + t.lastError + ")" : ""}`);
  text("public", `127.0.0.1:${s.publicPort}`);
  text("secrets", s.secretsBackend);

  const releases = $("releases");
  releases.replaceChildren(...s.releases.list.map((r) => {
    const marks = [];
    if (r.id === s.releases.current) marks.push("current");
    if (r.id === s.releases.knownGood) marks.push("known-good");
    return row([r.id, r.version, r.commit, when(r.builtAt), r.sha256.slice(0, 12), marks.join(", ")]);
  }));
  const events = $("events");
  events.replaceChildren(...[...s.events].reverse().map((e) => row([when(e.at), e.kind, e.message])));
}

async function refresh() {
  try {
    const response = await fetch("/api/status", { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch {
    const state = $("state");
    state.textContent = "not answering";
    state.className = "state offline";
    $("offline").hidden = false;
  }
}

async function act(action) {
  const token = $("admin").value.trim();
  sessionStorage.setItem("chroxy-admin", token);
  text("answer", "…");
  try {
    const response = await fetch("/api/" + action, {
      method: "POST",
      headers: { "X-Chroxy-Admin": token },
    });
    const answer = await response.json();
    text("answer", answer.ok ? answer.message : "Refused: " + answer.error);
  } catch (err) {
    text("answer", "The supervisor did not answer: " + err.message);
  }
  refresh();
}

$("admin").value = sessionStorage.getItem("chroxy-admin") ?? "";
for (const button of document.querySelectorAll("[data-action]")) {
  button.addEventListener("click", () => act(button.dataset.action));
}
refresh();
setInterval(refresh, REFRESH_MS);
