// The phone client: pairing, the conversation of the active session, prompts from any
// session, and the bottom bar. Speaks PROTOCOL.md only; every server string reaches
// the page through textContent (markdown.js builds nodes the same way).

import * as pairings from "./pairing.js";
import * as pairPrompt from "./pair-prompt.js";
import { Connection } from "./connection.js";
import { keyStore } from "./device-keys.js";
import { decodePublicKey, fingerprint } from "./noise.js";
import { render as markdown, Streamed } from "./markdown.js";
import { cut, describeChange } from "./change.js";
import * as notify from "./notify.js";
import * as attach from "./attach.js";
import * as deploy from "./deploy.js";

const $ = (id) => document.getElementById(id);
const MAX_QUEUED = 10;
/// docs/protocol.md: an input's `data` (the computer refuses longer ones).
const MAX_INPUT_CHARS = 100000;
/// How long an input may go unconfirmed before the connection is checked.
const ACCEPT_WAIT_MS = 4000;
/// Lines of a change drawn at most (the rest is counted, never drawn: a huge Write must
/// not freeze the page), and from how many a change is folded until opened.
const CHANGE_LINES = 200;
const FOLD_FROM = 24;

const ui = {
  conn: null,
  sessions: [],
  active: null,
  streams: new Map(), // messageId → {el, text}
  tools: new Map(), // toolUseId → element
  prompts: new Map(), // requestId / toolUseId → {el, timer}
  // Inputs the computer has not confirmed ({id, data, sessionId, sent}): typed while
  // disconnected, or sent on a connection that may have dropped them. Each is sent again
  // on every reconnect under its id; the worker runs an id once (`input_accepted`).
  outbox: [],
  replayed: new Set(), // the clientMessageIds in the history being replayed
  commands: new Map(), // sessionId → the slash commands its CLI offers
  today: null, // what every session's turns cost today, in USD, as the computer counts
  todayShown: null, // the element showing it under the last turn that ended here
  replaying: false, // between history_replay_start and _end of the active session
  busy: new Set(), // sessions with a turn running
  banner: null,
  spent: 0, // the cost of the turns shown in the conversation, in USD
  fingerprint: null, // the current machine's pinned key's, as the Chroxy window shows it
  cannotEncrypt: null, // why this browser cannot encrypt, once a connection found out
  push: null, // this device's last `push_settings`
  opening: null, // {sessionId, promptId} a tapped notification asked to show
  picked: [], // files chosen for the next message: {attachment, bytes}
};

/// This phone's device keys, one per machine, in IndexedDB.
const keys = keyStore();

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function scrollDown() {
  const c = $("conversation");
  c.scrollTop = c.scrollHeight;
}

// ---- conversation --------------------------------------------------------------------

function addMessage(kind, content, extra = "") {
  const node = el("div", `msg ${kind} ${extra}`.trim());
  if (kind === "assistant") markdown(node, content);
  else node.textContent = content;
  $("conversation").append(node);
  scrollDown();
  return node;
}

/// A build's card in the conversation, drawn again at each status of the same build.
function showDeploy(build) {
  const key = deploy.buildKey(build);
  if (ui.deploy?.key !== key || !ui.deploy.card.isConnected) {
    ui.deploy = { key, card: el("div") };
    $("conversation").append(ui.deploy.card);
  }
  deploy.draw(ui.deploy.card, build);
  // Refused for uncommitted changes only: the phone that asked may send them as they are.
  if (ui.deployAsked && deploy.refusedAsDirty(build)) {
    const session = ui.deployAsked;
    const again = el("button", "", "Deploy them as they are");
    again.type = "button";
    again.addEventListener("click", () => askDeploy(session, true));
    ui.deploy.card.append(again);
  }
  scrollDown();
}

function askDeploy(sessionId, allowDirty) {
  ui.deployAsked = sessionId;
  send({ type: "deploy_source", sessionId, allowDirty });
}

function summarize(tool, input) {
  if (Array.isArray(input?.questions) && input.questions[0]?.question) {
    return input.questions[0].question;
  }
  if (input && typeof input === "object") {
    for (const key of ["command", "file_path", "path", "pattern", "url", "description"]) {
      if (typeof input[key] === "string") return input[key];
    }
  }
  const text = JSON.stringify(input ?? {});
  return text.length > 120 ? text.slice(0, 117) + "…" : text;
}

const plural = (n, what) => `${n} ${what}${n === 1 ? "" : "s"}`;

/// A file tool's change: its path, then each hunk's lines marked -/+ (a new file's
/// contents folded), cut at CHANGE_LINES and folded from FOLD_FROM.
function changeView(change, open) {
  const box = el("div", "change");
  if (change.path) box.append(el("div", "path", change.path));
  const lines = (rows, summary, startOpen) => {
    const { shown, more } = cut(rows, CHANGE_LINES);
    const pre = el("pre", "diff");
    for (const { kind, text } of shown) {
      pre.append(el("span", { "-": "del", "+": "add" }[kind] ?? "ctx", `${kind} ${text}\n`));
    }
    if (more) pre.append(el("span", "more", `… and ${plural(more, "more line")}`));
    if (startOpen && rows.length < FOLD_FROM) return pre;
    const details = el("details");
    details.append(el("summary", "", summary), pre);
    return details;
  };
  if (change.created) {
    const rows = change.created.lines.map((text) => ({ kind: "+", text }));
    box.append(lines(rows, `new contents: ${plural(rows.length, "line")}`, false));
  }
  for (const hunk of change.hunks) {
    const count = (k) => hunk.filter((r) => r.kind === k).length;
    box.append(lines(hunk, `−${count("-")} +${count("+")} lines`, open));
  }
  if (change.replaceAll) box.append(el("div", "note", "in every place the old text appears"));
  return box;
}

function toolCard(msg) {
  const card = el("div", "tool");
  card.append(el("span", "name", msg.tool), " ", el("span", "input", summarize(msg.tool, msg.input)));
  const change = describeChange(msg.tool, msg.input);
  if (change) card.append(changeView(change, false));
  $("conversation").append(card);
  ui.tools.set(msg.toolUseId, card);
  scrollDown();
}

/// A finished turn's cost, time and tokens, with what the conversation has cost so far.
function turnCost(msg) {
  const parts = [];
  const cost = Number(msg.cost);
  if (Number.isFinite(cost)) {
    ui.spent += cost;
    parts.push(`$${cost.toFixed(4)}`);
  }
  if (Number.isFinite(msg.duration)) parts.push(`${(msg.duration / 1000).toFixed(1)} s`);
  const u = msg.usage ?? {};
  const tokens = (...keys) => keys.reduce((n, k) => n + (Number.isFinite(u[k]) ? u[k] : 0), 0);
  const input = tokens("input_tokens", "cache_read_input_tokens", "cache_creation_input_tokens");
  const output = tokens("output_tokens");
  if (input || output) parts.push(`${input.toLocaleString()} in / ${output.toLocaleString()} out tokens`);
  if (!parts.length) return;
  if (Number.isFinite(cost)) parts.push(`this conversation $${ui.spent.toFixed(4)}`);
  const line = el("div", "cost", parts.join(" · "));
  // Today's total belongs to a turn that just ended, not to one replayed from history.
  // The computer's count (`today_cost`) follows the result; until it comes, the turn's
  // cost is added to the total this phone had.
  if (ui.today !== null && !ui.replaying) {
    if (Number.isFinite(cost)) ui.today += cost;
    ui.todayShown = el("span", "", `today $${ui.today.toFixed(2)}`);
    line.append(" · ", ui.todayShown);
  }
  $("conversation").append(line);
  scrollDown();
}

function toolResult(msg) {
  const card = ui.tools.get(msg.toolUseId);
  if (!card) return;
  if (msg.isError) card.classList.add("error");
  const details = el("details");
  details.append(el("summary", "", msg.isError ? "error" : "result"));
  const text = typeof msg.result === "string" ? msg.result : JSON.stringify(msg.result, null, 2);
  details.append(el("pre", "", text + (msg.truncated ? "\n… (truncated)" : "")));
  card.append(details);
}

function clearConversation() {
  $("conversation").replaceChildren();
  ui.spent = 0;
  ui.streams.clear();
  ui.tools.clear();
  ui.replayed.clear();
  attach.clear();
  for (const e of ui.outbox) if (!e.sent && forActive(e)) showInput(e, "queued");
}

/// An input of this phone's, with the files it carries.
function showInput(entry, extra = "") {
  const node = addMessage("user_input", entry.data, extra);
  if (entry.files?.length) attach.show(node, entry.files, fetchAttachment);
  return node;
}

/// A `message` or `user_input` from the computer: its files are fetched by id.
function showSent(text, files) {
  const node = addMessage("user_input", text);
  if (files?.length) attach.show(node, files, fetchAttachment);
}

function fetchAttachment(id) {
  send({ type: "get_attachment", sessionId: ui.active, attachmentId: id });
}

function forActive(entry) {
  return !entry.sessionId || entry.sessionId === ui.active;
}

/// A random id for an input (crypto.randomUUID exists only on https or this machine).
function newId() {
  const bytes = crypto.getRandomValues(new Uint8Array(12));
  return "m-" + Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/// Sends an outbox entry; whether it went. Unconfirmed after a few seconds, the
/// connection is checked: a channel that lost it (a frame dropped on the way) is found
/// out now, and the entry goes again on the reconnect.
function deliver(entry) {
  const msg = { type: "input", data: entry.data, clientMessageId: entry.id };
  if (entry.sessionId) msg.sessionId = entry.sessionId;
  if (entry.files?.length) msg.attachments = entry.files.map((f) => f.attachment);
  entry.sent = send(msg);
  if (entry.sent) {
    setTimeout(() => ui.outbox.includes(entry) && ui.conn?.check(), ACCEPT_WAIT_MS);
  }
  return entry.sent;
}

function settled(id) {
  ui.outbox = ui.outbox.filter((e) => e.id !== id);
}

// ---- prompts ---------------------------------------------------------------------------

function sessionName(id) {
  return ui.sessions.find((s) => s.sessionId === id)?.name ?? "";
}

function addPrompt(id, build, remainingMs) {
  removePrompt(id);
  const card = el("div", "prompt");
  card.dataset.id = id;
  build(card);
  let timer = null;
  if (remainingMs) {
    const deadline = Date.now() + remainingMs;
    const countdown = el("div", "countdown");
    card.append(countdown);
    const tick = () => {
      const s = Math.max(0, Math.round((deadline - Date.now()) / 1000));
      countdown.textContent = `denied automatically in ${Math.floor(s / 60)}:${String(s % 60).padStart(2, "0")}`;
    };
    tick();
    timer = setInterval(tick, 1000);
  }
  $("prompts").append(card);
  ui.prompts.set(id, { el: card, timer });
}

function removePrompt(id) {
  const p = ui.prompts.get(id);
  if (!p) return;
  clearInterval(p.timer);
  p.el.remove();
  ui.prompts.delete(id);
}

function permissionPrompt(msg) {
  addPrompt(msg.requestId, (card) => {
    const where = sessionName(msg.sessionId);
    card.append(el("h2", "", `${msg.tool} wants to run${where ? " in " + where : ""}`));
    if (msg.description) card.append(el("div", "", msg.description));
    // What is approved, in full: a file tool's change, else the command or target.
    const change = describeChange(msg.tool, msg.input);
    card.append(change ? changeView(change, true) : el("div", "what", summarize(msg.tool, msg.input)));
    const answer = (label, decision, cls) => {
      const b = el("button", cls, label);
      b.type = "button";
      b.dataset.decision = decision;
      b.addEventListener("click", () => {
        send({ type: "permission_response", requestId: msg.requestId, decision });
        removePrompt(msg.requestId);
      });
      return b;
    };
    const actions = el("div", "actions");
    actions.append(answer("Allow once", "allow", "primary"), answer("Deny", "deny", ""));
    card.append(actions);
    // "Always" stands apart, with what it will allow from now on beside it. `always:
    // null`: the server could remember nothing exact, so there is no Always.
    if (msg.always !== null) {
      const forever = el("div", "forever");
      forever.append(answer("Always allow", "allowAlways", "always-button"));
      if (msg.always) forever.append(el("div", "always", `Always allows ${msg.always.allows}.`));
      card.append(forever);
    }
  }, msg.remainingMs);
}

function questionPrompt(msg) {
  const chosen = {};
  const questions = Array.isArray(msg.questions) ? msg.questions : [];
  addPrompt(msg.toolUseId, (card) => {
    for (const q of questions) {
      card.append(el("h2", "", q.question ?? ""));
      const actions = el("div", "actions");
      for (const option of q.options ?? []) {
        const b = el("button", "", option.label ?? String(option));
        b.type = "button";
        b.addEventListener("click", () => {
          chosen[q.question] = option.label;
          for (const sibling of actions.children) sibling.classList.remove("primary");
          b.classList.add("primary");
          if (Object.keys(chosen).length === questions.length) {
            const answer = Object.values(chosen).join(", ");
            send({ type: "user_question_response", toolUseId: msg.toolUseId, answer, answers: chosen });
            removePrompt(msg.toolUseId);
          }
        });
        actions.append(b);
      }
      card.append(actions);
    }
  });
}

function confirmPrompt(id, title, text, yes, onYes) {
  addPrompt(id, (card) => {
    card.append(el("h2", "", title), el("div", "", text));
    const actions = el("div", "actions");
    const ok = el("button", "primary", yes);
    ok.type = "button";
    ok.addEventListener("click", () => {
      removePrompt(id);
      onYes();
    });
    const cancel = el("button", "", "Cancel");
    cancel.type = "button";
    cancel.addEventListener("click", () => {
      removePrompt(id);
      refreshSettings();
    });
    actions.append(ok, cancel);
    card.append(actions);
  });
}

// ---- sessions and settings ---------------------------------------------------------------

function refreshSessions() {
  const select = $("session");
  select.replaceChildren(...ui.sessions.map((s) => {
    const o = el("option", "", s.name + (s.isBusy ? " •" : ""));
    o.value = s.sessionId;
    return o;
  }));
  if (ui.active) select.value = ui.active;
  refreshSettings();
}

function refreshSettings() {
  const s = ui.sessions.find((x) => x.sessionId === ui.active);
  if (!s) return;
  if (s.model && [...$("model").options].some((o) => o.value === s.model)) $("model").value = s.model;
  $("mode").value = s.permissionMode ?? "approve";
  const busy = ui.busy.has(ui.active);
  $("busy").hidden = !busy;
  $("interrupt").hidden = !busy;
}

function updateSession(id, change) {
  const s = ui.sessions.find((x) => x.sessionId === id);
  if (s) Object.assign(s, change);
  refreshSessions();
}

function refreshMachines() {
  const select = $("machine");
  const current = pairings.current();
  const options = pairings.all().map((p) => {
    const o = el("option", "", p.name);
    o.value = p.url;
    return o;
  });
  const add = el("option", "", "Pair another machine…");
  add.value = "__pair";
  options.push(add);
  if (current) {
    const forget = el("option", "", `Forget ${current.name}…`);
    forget.value = "__forget";
    options.push(forget);
  }
  select.replaceChildren(...options);
  if (current) select.value = current.url;
}

// ---- connection ----------------------------------------------------------------------------

function send(msg) {
  return ui.conn?.send(msg) ?? false;
}

function setBanner(text, bad = false) {
  const banner = $("banner");
  clearInterval(ui.banner);
  banner.hidden = !text;
  banner.classList.toggle("bad", bad);
  if (typeof text === "function") {
    const tick = () => ($("banner-text").textContent = text());
    tick();
    ui.banner = setInterval(tick, 500);
  } else {
    $("banner-text").textContent = text ?? "";
  }
}

/// The words after "this browser cannot do end-to-end encryption: ".
const cannotEncryptText = (reason) => `This browser cannot do end-to-end encryption: ${reason}.`;

/// The machine's key, in the session sheet: its fingerprint, for the person to compare
/// with the Chroxy window's, and whether this connection is encrypted to it.
function showMachineKey() {
  const line = $("machine-key");
  const pairing = ui.conn?.pairing;
  line.hidden = !pairing;
  if (!pairing) return;
  if (!pairing.key) {
    line.replaceChildren("Not end-to-end encrypted: this machine was paired from an older QR code. Scan a new one to encrypt.");
    return;
  }
  const code = el("code", "", ui.fingerprint ?? "not shown (this page was not opened over https://)");
  code.id = "machine-fingerprint";
  let how = "";
  if (ui.cannotEncrypt) how = ` — not end-to-end encrypted. ${cannotEncryptText(ui.cannotEncrypt)}`;
  else if (ui.conn.encrypted) how = " — end-to-end encrypted.";
  line.replaceChildren("Machine key ", code, how);
}

function onState({ state, retryInMs, previousToken, deviceId, fingerprint: pinned, cannotEncrypt, message, handshakeRefused, serverState }) {
  document.body.dataset.connection = state;
  const until = Date.now() + (retryInMs ?? 0);
  const left = () => Math.max(0, Math.ceil((until - Date.now()) / 1000));
  if (cannotEncrypt) ui.cannotEncrypt = cannotEncrypt;
  if (state === "connected") document.body.dataset.encrypted = String(ui.conn.encrypted);
  showMachineKey();
  const told = message ? ` (${message})` : "";
  // The service worker's copy opens the app with no network: say that is what this is.
  if (!navigator.onLine && state !== "connected") {
    setBanner("Offline: this is the copy of Chroxy kept on this phone. It connects by itself when the network is back.");
    return;
  }
  switch (state) {
    case "connected": {
      const notes = [];
      if (cannotEncrypt) notes.push(`Not end-to-end encrypted. ${cannotEncryptText(cannotEncrypt)}`);
      if (previousToken) notes.push("Connected with the previous token: this machine refused the newer one.");
      setBanner(notes.join(" ") || null);
      break;
    }
    case "connecting":
    case "authenticating":
      setBanner("Connecting…");
      break;
    case "reconnecting":
      if (handshakeRefused) {
        setBanner(() => `The machine did not accept the encrypted handshake — retrying in ${left()} s. ` +
          "If this goes on, it no longer has the key you paired with: scan its QR code again.");
      } else {
        setBanner(() => `Connection lost — reconnecting in ${left()} s`);
      }
      break;
    case "server_restarting":
      if (serverState === "failed") {
        setBanner(() => `Chroxy on the computer stopped serving: its releases keep failing. Restart or roll back there (tray menu or status page); trying again in ${left()} s.`);
      } else {
        setBanner(() => `Server restarting — back in about ${left()} s`);
      }
      break;
    case "token_rejected":
      setBanner("This machine's token was rotated: scan the new QR code to pair again.", true);
      break;
    case "device_pending":
      setBanner(`Waiting for approval on your computer — device ${deviceId ?? "?"}`);
      break;
    case "device_refused":
      setBanner("This computer refused this phone: pair again by scanning the QR code on the computer.", true);
      break;
    case "not_paired":
      setBanner(`This computer does not know this phone${told}: pair again by scanning the QR code on the computer.`, true);
      break;
    case "wrong_machine":
      setBanner(`This is not the machine you paired with: it does not hold the key ${pinned ?? "you paired with"}, so nothing was sent to it. ` +
        "If Chroxy was set up anew on your computer, scan the QR code it shows now.", true);
      break;
    case "token_auth_disabled":
      setBanner(cannotEncrypt
        ? `${cannotEncryptText(cannotEncrypt)} This computer accepts only encrypted connections, so this phone cannot connect from this browser.`
        : "This computer accepts only end-to-end encrypted connections now: scan its new QR code to pair again.", true);
      break;
    case "no_crypto":
      setBanner(`${cannotEncryptText(cannotEncrypt)} This computer can only be reached encrypted, so this phone cannot connect from this browser.`, true);
      break;
  }
}

function onMessage(msg) {
  const mine = !msg.sessionId || msg.sessionId === ui.active;
  switch (msg.type) {
    case "auth_ok": {
      // A token is confirmed only when it was what got this phone in (v1).
      if (!ui.conn.encrypted) pairings.confirmed(ui.conn.pairing.url, ui.conn.token);
      // Typed while away or unconfirmed: sent now, in order, under their ids (the
      // worker runs an id once). The replay that follows shows those that had arrived.
      for (const e of ui.outbox) deliver(e);
      sendPresence();
      break;
    }
    case "push_settings":
      ui.push = msg;
      refreshNotify();
      break;
    case "session_list":
      ui.sessions = msg.sessions ?? [];
      for (const s of ui.sessions) {
        if (s.isBusy) ui.busy.add(s.sessionId);
        else ui.busy.delete(s.sessionId);
      }
      refreshSessions();
      showOpening();
      break;
    case "session_switched":
      if (ui.active !== msg.sessionId) showSessionSheet(false);
      ui.active = msg.sessionId;
      refreshSessions();
      showOpening();
      seenTurns();
      break;
    case "history_replay_start":
      if (!mine) break;
      clearConversation();
      ui.replaying = true;
      break;
    case "history_replay_end":
      if (!mine) break;
      ui.replaying = false;
      for (const e of ui.outbox) {
        if (e.sent && forActive(e) && !ui.replayed.has(e.id)) showInput(e);
      }
      break;
    case "today_cost":
      if (Number.isFinite(msg.costUsd)) {
        ui.today = msg.costUsd;
        if (ui.todayShown) ui.todayShown.textContent = `today $${msg.costUsd.toFixed(2)}`;
      }
      break;
    case "claude_ready":
      if (msg.slashCommands?.length) ui.commands.set(msg.sessionId, msg.slashCommands);
      promptGone(msg.sessionId);
      break;
    case "input_accepted":
      settled(msg.clientMessageId);
      break;
    case "available_models":
      $("model").replaceChildren(...(msg.models ?? []).map((m) => {
        const o = el("option", "", m.label);
        o.value = m.id;
        return o;
      }));
      refreshSettings();
      break;
    case "message":
      if (!mine) break;
      if (msg.clientMessageId) ui.replayed.add(msg.clientMessageId);
      if (msg.messageType === "user_input") showSent(msg.content ?? "", msg.attachments);
      // The assistant's text is `response` on the wire (Chroxy's name for it).
      else addMessage(msg.messageType === "response" ? "assistant" : msg.messageType, msg.content ?? "");
      break;
    case "user_input":
      // Typed on another device, live; the history replays it as a `message`.
      if (mine) showSent(msg.text ?? "", msg.attachments);
      break;
    case "attachment":
      attach.arrived(msg);
      break;
    case "stream_start":
      if (mine) ui.streams.set(msg.messageId, { view: new Streamed(addMessage("assistant", "")), text: "" });
      break;
    case "stream_delta": {
      const s = ui.streams.get(msg.messageId);
      if (s) {
        s.text += msg.delta;
        s.view.update(s.text);
        scrollDown();
      }
      break;
    }
    case "stream_end": {
      const s = ui.streams.get(msg.messageId);
      s?.view.end(s.text);
      ui.streams.delete(msg.messageId);
      break;
    }
    case "tool_start":
      if (mine) toolCard(msg);
      break;
    case "tool_result":
      if (mine) toolResult(msg);
      break;
    case "result":
      // Sent (and replayed) only to the phones on its session: the turn's cost.
      turnCost(msg);
      break;
    case "agent_busy":
      ui.busy.add(msg.sessionId);
      refreshSettings();
      break;
    case "agent_idle":
      ui.busy.delete(msg.sessionId);
      refreshSettings();
      break;
    case "permission_request":
      permissionPrompt(msg);
      showOpening();
      break;
    case "user_question":
      questionPrompt(msg);
      showOpening();
      break;
    case "permission_resolved":
    case "permission_expired":
      removePrompt(msg.requestId);
      // Answered here or anywhere else: its notification would only mislead.
      notify.dismiss(msg.requestId);
      if (ui.opening?.promptId === msg.requestId) ui.opening = null;
      if (msg.type === "permission_expired" && mine && msg.message) addMessage("system", msg.message);
      break;
    case "model_changed":
      updateSession(msg.sessionId, { model: msg.model });
      break;
    case "permission_mode_changed":
      updateSession(msg.sessionId, { permissionMode: msg.mode });
      break;
    case "confirm_permission_mode":
      confirmPrompt("confirm-mode", "Turn on auto mode?", msg.warning ?? "", "Turn on", () =>
        send({ type: "set_permission_mode", mode: msg.mode, confirmed: true }));
      break;
    case "session_error":
      if (mine) addMessage("error", msg.message ?? "");
      promptGone(msg.sessionId);
      break;
    case "error": {
      if (msg.code === "ATTACHMENT_NOT_FOUND" && attach.gone(msg.requestId)) break;
      const entry = ui.outbox.find((e) => e.id === msg.requestId);
      if (entry && msg.code === "DRAINING") {
        // The computer is restarting: it goes again on the next connection.
        entry.sent = false;
        break;
      }
      // An input refused for good (QUEUE_FULL, a session gone) is not sent again.
      if (entry) settled(entry.id);
      addMessage("error", msg.message ?? msg.code ?? "error");
      break;
    }
    case "deploy_requested":
      addMessage("system", msg.needsApproval
        ? `Deploy of ${msg.source} requested. This phone may not deploy by itself: once built, the release waits for approval at the computer.`
        : `Deploy of ${msg.source} requested.`);
      break;
    case "deploy_status":
      if (msg.refused) addMessage("error", `Deploy refused: ${msg.refused}`);
      if (msg.build) showDeploy(msg.build);
      break;
    case "rate_limited": {
      const entry = ui.outbox.find((e) => e.id === msg.requestId);
      if (entry) {
        // Sent again once the budget allows; a reconnect meanwhile sends it too.
        entry.sent = false;
        setTimeout(() => ui.outbox.includes(entry) && !entry.sent && deliver(entry), msg.retryAfterMs ?? 1000);
      }
      addMessage("system", msg.message ?? "Slow down a little.");
      break;
    }
  }
}

/// The fingerprint of `pairing`'s pinned key, or null where this page cannot compute one.
async function pinnedFingerprint(pairing) {
  try {
    return await fingerprint(decodePublicKey(pairing.key));
  } catch {
    return null;
  }
}

function start() {
  ui.conn?.close();
  ui.conn = null;
  const pairing = pairings.current();
  refreshMachines();
  $("pair").hidden = !!pairing;
  ui.fingerprint = null;
  ui.cannotEncrypt = null;
  delete document.body.dataset.encrypted;
  if (!pairing) {
    setBanner(null);
    showMachineKey();
    return;
  }
  if (pairing.key) {
    pinnedFingerprint(pairing).then((fp) => {
      if (ui.conn?.pairing !== pairing) return; // another machine since
      ui.fingerprint = fp;
      showMachineKey();
    });
  }
  const device = { deviceName: "Phone", deviceType: "phone", platform: navigator.platform || "web" };
  ui.conn = new Connection(pairing, device, { keys });
  ui.conn.addEventListener("state", (e) => onState(e.detail));
  ui.conn.addEventListener("message", (e) => onMessage(e.detail));
  ui.conn.addEventListener("device", (e) => pairings.setDevice(e.detail.url, e.detail));
  ui.conn.connect();
}

// ---- the bottom bar and the header ------------------------------------------------------------

$("composer").addEventListener("submit", (e) => {
  e.preventDefault();
  const data = $("input").value.trim();
  if (!data && !ui.picked.length) return;
  if (data.length > MAX_INPUT_CHARS) {
    addMessage("error", `That message is ${data.length.toLocaleString()} characters; the limit is ${MAX_INPUT_CHARS.toLocaleString()}.`);
    return;
  }
  $("input").value = "";
  $("slash").hidden = true;
  const files = ui.picked.map(({ attachment, bytes }) => ({
    attachment, bytes, name: attachment.name, mediaType: attachment.mediaType,
  }));
  const entry = { id: newId(), data, sessionId: ui.active, files };
  setPicked([]);
  if (deliver(entry)) {
    ui.outbox.push(entry);
    showInput(entry);
  } else if (ui.outbox.length < MAX_QUEUED) {
    ui.outbox.push(entry);
    showInput(entry, "queued");
  } else {
    addMessage("error", `Not connected, and ${MAX_QUEUED} messages are already waiting.`);
  }
});
// ---- files -------------------------------------------------------------------------

$("files").accept = attach.ACCEPT;
$("attach").addEventListener("click", () => $("files").click());
$("files").addEventListener("change", async () => {
  const chosen = [...$("files").files];
  $("files").value = "";
  const picked = [...ui.picked];
  for (const file of chosen) {
    if (picked.length >= attach.MAX_FILES) {
      addMessage("error", `At most ${attach.MAX_FILES} files go with one message.`);
      break;
    }
    const ready = await attach.prepare(file);
    if (ready.error) addMessage("error", ready.error);
    else picked.push(ready);
  }
  setPicked(picked);
});

/// The files that go with the next message, shown above it; a tap on one takes it out.
function setPicked(picked) {
  ui.picked = picked;
  $("picked").hidden = picked.length === 0;
  $("picked").replaceChildren(...picked.map((p, i) => {
    const li = el("li");
    const b = el("button", "", `${p.attachment.name} ✕`);
    b.type = "button";
    b.setAttribute("aria-label", `Remove ${p.attachment.name}`);
    b.addEventListener("click", () => setPicked(ui.picked.filter((_, j) => j !== i)));
    li.append(b);
    return li;
  }));
}

/// While the message is `/` and the start of a name, the active session's slash commands
/// that start so; a tap puts one in the message.
function offerCommands() {
  const typed = $("input").value.match(/^\/([\w:.-]*)$/);
  const offered = typed ? (ui.commands.get(ui.active) ?? []).filter((c) => c.name.startsWith(typed[1])).slice(0, 8) : [];
  $("slash").hidden = offered.length === 0;
  $("slash").replaceChildren(...offered.map((c) => {
    const button = el("button", "", "");
    button.type = "button";
    button.dataset.command = c.name;
    button.append(el("strong", "", `/${c.name}`));
    if (c.argumentHint) button.append(" ", el("span", "hint", c.argumentHint));
    if (c.description) button.append(el("span", "what", c.description));
    button.addEventListener("click", () => {
      $("input").value = `/${c.name} `;
      $("slash").hidden = true;
      $("input").focus();
    });
    const item = el("li");
    item.append(button);
    return item;
  }));
}
$("input").addEventListener("input", offerCommands);
$("input").addEventListener("keydown", (e) => {
  if (e.key === "Enter" && !e.shiftKey) {
    e.preventDefault();
    $("composer").requestSubmit();
  }
});
$("interrupt").addEventListener("click", () => send({ type: "interrupt" }));
$("reconnect").addEventListener("click", () => ui.conn?.reconnectNow());
$("new-session").addEventListener("click", () => send({ type: "create_session" }));

// ---- the session sheet: rename or close the active session ------------------------------

function showSessionSheet(open) {
  const s = ui.sessions.find((x) => x.sessionId === ui.active);
  $("session-sheet").hidden = !(open && s);
  $("session-menu").setAttribute("aria-expanded", String(open && !!s));
  $("session-close-confirm").hidden = true;
  $("session-close").hidden = false;
  $("deploy-confirm").hidden = true;
  $("deploy").hidden = false;
  if (open && s) $("session-name").value = s.name ?? "";
}

$("session-menu").addEventListener("click", () => showSessionSheet($("session-sheet").hidden));
$("session-rename").addEventListener("submit", (e) => {
  e.preventDefault();
  const name = $("session-name").value.trim();
  if (!name || !ui.active) return;
  send({ type: "rename_session", sessionId: ui.active, name });
  showSessionSheet(false);
});
// Closing stops the session's agent and forgets its conversation: asked twice.
$("session-close").addEventListener("click", () => {
  $("session-close-text").textContent = `Close "${sessionName(ui.active)}"? Its agent stops and its conversation is gone.`;
  $("session-close").hidden = true;
  $("session-close-confirm").hidden = false;
});
$("session-close-no").addEventListener("click", () => showSessionSheet(false));
$("session-close-yes").addEventListener("click", () => {
  if (ui.active) send({ type: "destroy_session", sessionId: ui.active });
  showSessionSheet(false);
});
// Deploying replaces the server this phone talks to: asked twice, saying what is built.
$("deploy").addEventListener("click", () => {
  const s = ui.sessions.find((x) => x.sessionId === ui.active);
  $("deploy-text").textContent = `Build ${s?.cwd ?? "this session's directory"}, run its checks, and deploy it as this computer's Chroxy? The conversation is kept.`;
  $("deploy-dirty").checked = false;
  $("deploy").hidden = true;
  $("deploy-confirm").hidden = false;
});
$("deploy-no").addEventListener("click", () => showSessionSheet(false));
$("deploy-yes").addEventListener("click", () => {
  if (ui.active) askDeploy(ui.active, $("deploy-dirty").checked);
  showSessionSheet(false);
});
$("session").addEventListener("change", (e) => send({ type: "switch_session", sessionId: e.target.value }));
$("model").addEventListener("change", (e) => send({ type: "set_model", model: e.target.value }));
$("mode").addEventListener("change", (e) => {
  if (e.target.value === "auto") {
    // The server asks for confirmation first (confirm_permission_mode).
    send({ type: "set_permission_mode", mode: "auto" });
  } else {
    send({ type: "set_permission_mode", mode: e.target.value });
  }
});
$("machine").addEventListener("change", (e) => {
  const value = e.target.value;
  if (value === "__pair") {
    $("pair").hidden = false;
    refreshMachines();
  } else if (value === "__forget") {
    const current = pairings.current();
    refreshMachines();
    confirmPrompt("forget", `Forget ${current.name}?`, "You will need to scan its QR code again.", "Forget", () => {
      pairings.remove(current.url);
      // Its device key goes too: pairing again makes a new one.
      keys.forget(current.url).catch(() => {});
      start();
    });
  } else {
    pairings.select(value);
    start();
  }
});
$("pair-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const outcome = await takeLink($("pair-link").value);
  if (outcome === "added" || outcome === "known") $("pair-link").value = "";
});
// Back online, a connection that was waiting for the network tries now; one waiting for
// the person (a wrong machine, a refused phone) still waits.
window.addEventListener("online", () => {
  if (ui.conn && ui.conn.state !== "connected" && !ui.conn.waitingForPerson) ui.conn.reconnectNow();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    ui.conn?.check();
    seenTurns();
  }
  sendPresence();
});

/// The active session is on screen: a notification that its turn finished is read.
function seenTurns() {
  if (ui.active && document.visibilityState === "visible") notify.dismiss(`turn_done:${ui.active}`);
}

// ---- notifications ---------------------------------------------------------------------

/// Whether this page is on screen: a phone in a pocket is the one to notify.
function sendPresence() {
  send({ type: "presence", visible: document.visibilityState === "visible" });
}

/// Why this page cannot turn notifications on for the machine it is connected to.
function notifyBlocked() {
  if (!ui.push?.available) return `Off: ${ui.push?.reason ?? "this computer cannot notify"}.`;
  const why = notify.unsupported();
  if (why) return `Not available here: ${why}.`;
  // A browser's subscription belongs to the address the page came from (the pairing's
  // is its socket's: ws(s)://host/ws).
  if (ui.conn && new URL(ui.conn.pairing.url).host !== location.host) {
    return "Notifications come only from the computer this page was opened from: open this machine's own link to get them.";
  }
  return null;
}

function refreshNotify() {
  const box = $("notify");
  box.hidden = !ui.push;
  if (!ui.push) return;
  const blocked = notifyBlocked();
  const on = ui.push.subscribed && !blocked;
  $("notify-state").textContent = blocked ?? (on ? "On for this phone." : "Off for this phone.");
  $("notify-toggle").hidden = !!blocked;
  $("notify-toggle").textContent = on ? "Turn off" : "Turn on";
  for (const what of ["prompts", "turns", "supervisor"]) {
    const box = $(`notify-${what}`);
    box.checked = ui.push.events?.[what] !== false;
    box.disabled = !on;
  }
}

function chosenEvents() {
  return {
    prompts: $("notify-prompts").checked,
    turns: $("notify-turns").checked,
    supervisor: $("notify-supervisor").checked,
  };
}

$("notify-toggle").addEventListener("click", async () => {
  const button = $("notify-toggle");
  button.disabled = true;
  try {
    if (ui.push?.subscribed) {
      await notify.unsubscribe();
      send({ type: "push_unsubscribe" });
    } else {
      const subscription = await notify.subscribe(ui.push.applicationServerKey);
      send({ type: "push_subscribe", subscription, events: chosenEvents() });
    }
  } catch (err) {
    $("notify-state").textContent = `Not turned on: ${err.message}.`;
  } finally {
    button.disabled = false;
  }
});
for (const what of ["prompts", "turns", "supervisor"]) {
  $(`notify-${what}`).addEventListener("change", () => send({ type: "push_events", events: chosenEvents() }));
}

/// A tapped notification: its session, then its prompt, once they are here.
notify.onOpen((opening) => {
  ui.opening = opening;
  showOpening();
});

/// A session's attach ends with its waiting prompts, then `claude_ready`: a tapped
/// notification's prompt not among them is over (answered elsewhere, timed out).
function promptGone(sessionId) {
  const o = ui.opening;
  const its = !o?.sessionId || o.sessionId === sessionId;
  if (o?.promptId && its && sessionId === ui.active && !ui.prompts.has(o.promptId)) {
    ui.opening = null;
  }
}

function showOpening() {
  const o = ui.opening;
  if (!o || !ui.conn) return;
  if (!o.switched && o.sessionId && o.sessionId !== ui.active && ui.sessions.some((s) => s.sessionId === o.sessionId)) {
    // Once: the person may go to another session before answering.
    o.switched = true;
    send({ type: "switch_session", sessionId: o.sessionId });
    return;
  }
  // Kept until the prompt is answered: a replay draws its card anew.
  const prompt = o.promptId && ui.prompts.get(o.promptId);
  if (prompt) {
    prompt.el.scrollIntoView({ block: "center" });
    prompt.el.classList.add("opened");
    // The card, not a button: a stray Enter must not answer it.
    prompt.el.tabIndex = -1;
    prompt.el.focus();
  }
  if (!o.promptId) ui.opening = null;
}

notify.registerWorker();

/// A pairing link (the address bar's or a pasted one), applied only as pairing.offer
/// allows: checked, and confirmed by the person when it changes anything.
async function takeLink(link) {
  const { outcome, url, error } = await pairings.offer(link, pairPrompt.ask);
  if (outcome === "refused") pairPrompt.tell(error);
  // A known machine's fresh QR re-pairs a phone that is not in (refused, waiting).
  const again = outcome === "known" && (url !== ui.conn?.pairing.url || ui.conn?.state !== "connected");
  if (outcome === "added" || again) start();
  return outcome;
}

// A new link opened in this tab (a new QR scanned) changes only the fragment.
window.addEventListener("hashchange", () => {
  const link = pairings.takeFromLocation();
  if (link) takeLink(link);
});

const link = pairings.takeFromLocation();
start();
if (link) takeLink(link);
