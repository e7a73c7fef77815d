// The window: renders the app's whole view on every `view` event (no polling), and
// turns buttons into the app's commands, which map one-to-one onto supervisor actions.
// Everything from the supervisor is set as text, except the QR code, an SVG the app
// drew itself, parsed as an SVG document (no HTML parsing of any string).

const { invoke } = window.__TAURI__.core;
const { listen } = window.__TAURI__.event;

const $ = (id) => document.getElementById(id);
const LOOK_WORDS = { healthy: 'healthy', restarting: 'restarting', 'tunnel-down': 'tunnel down', failed: 'failed' };
let current = null;
let shownLink = null;
/** The device being renamed and the name typed so far: kept across redraws. */
let renaming = null;

function text(id, value) {
  $(id).textContent = value ?? '';
}

function duration(ms) {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return `${s}s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m}m ${s % 60}s`;
  const h = Math.floor(m / 60);
  return `${h}h ${m % 60}m`;
}

function showQr(pairing) {
  const box = $('qr');
  if (!pairing) {
    shownLink = null;
    box.replaceChildren();
    box.classList.add('empty');
    return;
  }
  if (pairing.link === shownLink) return;
  const doc = new DOMParser().parseFromString(pairing.svg, 'image/svg+xml');
  const svg = doc.documentElement;
  if (svg.nodeName !== 'svg') return;
  box.replaceChildren(document.importNode(svg, true));
  box.classList.remove('empty');
  box.dataset.link = pairing.link;
  shownLink = pairing.link;
}

function tunnelWords(t) {
  if (t.mode === 'none') return 'none (this machine only)';
  const error = t.state !== 'up' && t.lastError ? ` — ${t.lastError}` : '';
  return `${t.mode}: ${t.state}${error}`;
}

function renderUptime() {
  const started = current?.status?.worker?.startedAt;
  const serving = current?.status?.state === 'healthy' && started;
  text('uptime', serving ? duration(Date.now() - started) : '—');
}

/**
 * Every second: the uptime; and while a release is on trial, the whole view again, since
 * the canary's sentence (the app's own words) tells its time left as of the view.
 */
async function tick() {
  if (current?.status?.canary) render(await invoke('view'));
  else renderUptime();
}

function renderPending(p) {
  $('pending').hidden = !p;
  if (!p) return;
  const minutes = Math.max(0, Math.ceil((p.expiresAt - Date.now()) / 60000));
  text('pending-text', `Release ${p.release}${p.version ? ` (chroxy ${p.version})` : ''} wants to replace what phones are served. Dropped in ${minutes} min unless answered.`);
}

function render(view) {
  current = view;
  const look = $('look');
  look.className = `look ${view.look}`;
  look.textContent = LOOK_WORDS[view.look] ?? view.look;
  // When failed, the alert below says it all; the summary would repeat it.
  text('summary', view.error || view.status?.state === 'failed' ? '' : view.summary);
  // Nothing to scan when Chroxy could not start.
  $('pair').hidden = !!view.error;
  $('error').hidden = !view.error;
  text('error', view.error ? `Chroxy could not start: ${view.error}` : '');

  const s = view.status;
  $('reason').hidden = !(s && s.state === 'failed');
  text('reason', `Failed: ${s?.failedReason ?? 'see the events below'}`);
  $('demo').hidden = !s?.demo;

  showQr(view.pairing);
  text('public-url', view.pairing?.publicUrl ?? '');
  $('address-note').hidden = !view.addressNote;
  text('address-note', view.addressNote ?? '');
  $('unusable').hidden = !view.pairing?.unusable;
  text('unusable', view.pairing?.unusable ?? '');
  $('copy').disabled = !view.pairing;
  const waiting = $('waiting');
  waiting.hidden = !!view.pairing || !s;
  if (s && !view.pairing) {
    text('waiting', s.tunnel.lastError
      ? `Waiting for the tunnel: ${s.tunnel.lastError}`
      : 'Waiting for the tunnel\u2019s address…');
  }

  for (const id of ['reconnect', 'rollback']) $(id).disabled = !s;
  renderPending(s?.pendingDeploy);
  if (!s) return;
  const w = s.worker;
  text('worker-state', `${s.state.replace('_', ' ')}${w.pid ? ` (pid ${w.pid}, release ${w.release})` : ''}${w.restarts ? `, ${w.restarts} restarts` : ''}`);
  $('worker-state').className = s.state === 'healthy' ? 'ok' : s.state === 'failed' ? 'bad' : 'warn';
  text('tunnel-state', tunnelWords(s.tunnel));
  text('phones', String(s.clients));
  text('sessions', String(s.sessions));
  text('secrets', s.secretsBackend === 'keyring' ? 'OS keyring' : `${s.secretsBackend} (no keyring found)`);
  text('current', s.releases.current ?? '—');
  text('known-good', s.releases.knownGood ?? '—');
  text('canary', s.canary?.summary ?? '—');
  $('build-row').hidden = !s.build;
  text('build', (s.build?.summary ?? []).join('\n'));
  $('release-list').replaceChildren(...s.releases.list.map((r) => {
    const li = document.createElement('li');
    const marks = [r.id === s.releases.current && 'current', r.id === s.releases.knownGood && 'known-good', r.damaged && `damaged: ${r.damaged}`].filter(Boolean);
    li.textContent = `${r.id} — ${r.version} (${r.commit})${marks.length ? ` · ${marks.join(', ')}` : ''}`;
    return li;
  }));
  renderDevices(s.devices);
  text('fingerprint', s.identity?.fingerprint ?? '');
  $('events').replaceChildren(...s.events.slice(-8).reverse().map((e) => {
    const li = document.createElement('li');
    const at = document.createElement('time');
    at.dateTime = new Date(e.at).toISOString();
    at.textContent = new Date(e.at).toLocaleTimeString();
    li.append(at, `${e.kind}: ${e.message}`);
    return li;
  }));
  renderUptime();
}

/** Waiting devices first, each with its buttons: Approve/Refuse, or Revoke when approved,
 * and Rename; "connected now" while it has a connection. */
function renderDevices(d) {
  if (!d) return;
  $('devices-open').hidden = d.approveNew !== false;
  $('token-auth').hidden = d.allowTokenAuth !== true;
  $('devices-error').hidden = !d.error;
  text('devices-error', d.error ?? '');
  const order = { pending: 0, approved: 1, refused: 2 };
  const decisions = { pending: ['approve', 'refuse'], approved: ['revoke'], refused: [] };
  const list = [...d.list].sort((a, b) => order[a.state] - order[b.state]);
  $('device-list').replaceChildren(...list.map((device) => {
    const li = document.createElement('li');
    li.dataset.device = device.id;
    li.className = device.state;
    const state = device.state === 'pending' ? 'waiting for approval' : device.state;
    const connected = (d.connected ?? []).includes(device.id);
    const seen = connected ? ', connected now' : device.lastSeen ? `, last seen ${new Date(device.lastSeen).toLocaleString()}` : '';
    if (renaming?.id === device.id) {
      li.append(renameForm(device));
      return li;
    }
    const label = document.createElement('span');
    label.textContent = `${device.name ?? 'unnamed'} (${device.platform ?? '?'}) — device ${device.id}: ${state}${seen}`;
    li.append(label);
    for (const decision of decisions[device.state] ?? []) {
      const button = document.createElement('button');
      button.type = 'button';
      button.dataset.decision = decision;
      button.textContent = decision[0].toUpperCase() + decision.slice(1);
      button.addEventListener('click', (e) => command(e.currentTarget, 'decide_device', { decision, id: device.id }));
      li.append(' ', button);
    }
    const rename = document.createElement('button');
    rename.type = 'button';
    rename.dataset.decision = 'rename';
    rename.textContent = 'Rename';
    rename.addEventListener('click', () => {
      renaming = { id: device.id, draft: device.name ?? '' };
      renderDevices(current?.status?.devices);
      document.querySelector(`#device-list li[data-device='${device.id}'] input`)?.focus();
    });
    li.append(' ', rename);
    return li;
  }));
}

/** The name field of the device being renamed, with Save and Cancel. */
function renameForm(device) {
  const form = document.createElement('form');
  form.className = 'rename';
  const input = document.createElement('input');
  input.value = renaming.draft;
  input.maxLength = 64;
  input.setAttribute('aria-label', `A name for device ${device.id}`);
  input.addEventListener('input', () => { renaming.draft = input.value; });
  const save = document.createElement('button');
  save.type = 'submit';
  save.textContent = 'Save';
  const cancel = document.createElement('button');
  cancel.type = 'button';
  cancel.textContent = 'Cancel';
  const done = () => {
    renaming = null;
    renderDevices(current?.status?.devices);
  };
  cancel.addEventListener('click', done);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    await command(save, 'rename_device', { id: device.id, name: input.value });
    if ($('answer').className === 'ok') done();
  });
  form.append(input, ' ', save, ' ', cancel);
  return form;
}

function answer(result) {
  const el = $('answer');
  if ('Ok' in result) {
    el.className = 'ok';
    el.textContent = result.Ok;
  } else {
    el.className = 'bad';
    el.textContent = result.Err;
  }
}

async function command(button, name, args) {
  button.disabled = true;
  try {
    answer({ Ok: await invoke(name, args) });
  } catch (err) {
    answer({ Err: String(err) });
  } finally {
    button.disabled = !current?.status;
  }
}

$('reconnect').addEventListener('click', (e) => command(e.currentTarget, 'reconnect'));
$('rollback').addEventListener('click', (e) => command(e.currentTarget, 'rollback'));
/** Answers the deploy shown, naming it: one that replaced it meanwhile is not answered. */
for (const [id, name] of [['approve-deploy', 'approve_deploy'], ['refuse-deploy', 'refuse_deploy']]) {
  $(id).addEventListener('click', (e) => command(e.currentTarget, name, { release: current?.status?.pendingDeploy?.release ?? null }));
}
$('copy').addEventListener('click', (e) => command(e.currentTarget, 'copy_link'));
$('admin-toggle').addEventListener('click', async (e) => {
  const button = e.currentTarget;
  const showing = button.getAttribute('aria-pressed') === 'true';
  if (showing) {
    text('admin-token', '••••••••');
  } else {
    try {
      text('admin-token', await invoke('admin_token'));
    } catch (err) {
      answer({ Err: String(err) });
      return;
    }
  }
  button.setAttribute('aria-pressed', String(!showing));
  button.textContent = showing ? 'Show' : 'Hide';
});

await listen('view', (e) => render(e.payload));
await listen('answer', (e) => answer(e.payload));
/// Show QR code (the tray's item): the QR code scrolled into view, flashing once.
function flashQr() {
  const box = $('qr');
  box.scrollIntoView({ block: 'center' });
  box.classList.add('flash');
  setTimeout(() => box.classList.remove('flash'), 1500);
}

await listen('show-qr', flashQr);
render(await invoke('view'));
// A window made for Show QR code is told so before its page runs (open_window).
if (window.chroxyShowQr) flashQr();
// Only the uptime's text moves with the clock (and a canary's, see `tick`); the data
// arrives as events.
setInterval(tick, 1000);
