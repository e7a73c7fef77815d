// The connection to one machine, as a state machine driven by socket events, the
// server's `server_shutdown` notice and application ping/pong:
//
//   connecting → authenticating → connected
//        ↑              │              │ socket lost / 2 pongs missed
//        └── reconnecting (at once, then backoff 0.5 s doubling, jitter, cap 30 s) ←┘
//        └── server_restarting (the ETA the server announced)
//   token_rejected: every token the pairing holds was refused (rotated); waits for a
//   new pairing or a "Reconnect now".
//   device_pending: the token is right but the computer's owner has not approved this
//   device yet; the server closes, and the same auth (with the device key it handed
//   out) is tried again every few seconds until it is approved.
//   device_refused: the owner refused or revoked this device; the key is forgotten and
//   nothing is tried until the phone is paired again from a fresh QR code.
//
// The pairing's one-time `code` (from the QR) goes with the first auth; the
// `deviceKey` the machine hands back (at once when the code paired it, or when it
// starts waiting) goes with every later one. Both are kept by app.js on "device".
//
// A pairing holds its newest token and, until that one has worked once, the previous
// one: when the newest is refused the previous is tried at once, so a stale or wrong
// link never strands the phone (docs/protocol.md "Keepalive and reconnection").
//
// It keeps trying forever: a phone on a train must find its way back by itself.

const PING_EVERY_MS = 15000;
const MISSED_PONGS = 2;
const BACKOFF_FLOOR_MS = 500;
/// The first try after a loss goes at once, spread over this much so that every phone
/// of a restarted machine does not arrive in the same millisecond.
const FIRST_RETRY_JITTER_MS = 50;
/// After the page is shown again (a phone unlocked), how long a pong may take before
/// the connection is taken for dead.
const RESUME_PONG_MS = 3000;
const BACKOFF_CAP_MS = 30000;
const RESET_AFTER_MS = 60000;
const PENDING_RETRY_MS = 3000;

export class Connection extends EventTarget {
  constructor(pairing, device) {
    super();
    this.pairing = pairing;
    this.device = device;
    this.state = "idle";
    this.attempt = 0;
    this.ws = null;
    this.timer = null;
    this.pinger = null;
    this.missed = 0;
    this.checking = null; // the resume check's deadline
    this.connectedAt = 0;
    this.tokens = [pairing.token, pairing.previousToken].filter(Boolean);
    this.using = 0; // index in `tokens`; stays on the one that last worked
    this.refused = new Set(); // indices refused since the last success
  }

  /// The token this connection authenticates (or last authenticated) with.
  get token() {
    return this.tokens[this.using];
  }

  set(state, extra = {}) {
    this.state = state;
    this.dispatchEvent(new CustomEvent("state", { detail: { state, ...extra } }));
  }

  connect() {
    clearTimeout(this.timer);
    this.teardown();
    this.set("connecting");
    let ws;
    try {
      ws = new WebSocket(this.pairing.url);
    } catch {
      this.retry();
      return;
    }
    this.ws = ws;
    ws.onopen = () => {
      this.set("authenticating");
      const auth = { type: "auth", token: this.token, deviceInfo: this.device, protocolVersion: 1 };
      if (this.pairing.deviceKey) auth.deviceKey = this.pairing.deviceKey;
      if (this.pairing.code) auth.pairingCode = this.pairing.code;
      ws.send(JSON.stringify(auth));
    };
    ws.onmessage = (e) => {
      let msg;
      try {
        msg = JSON.parse(e.data);
      } catch {
        return;
      }
      this.onMessage(msg);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // replaced on purpose
      this.ws = null;
      this.stopPinging();
      if (["token_rejected", "server_restarting", "device_pending", "device_refused"].includes(this.state)) {
        return;
      }
      this.retry();
    };
    ws.onerror = () => {}; // onclose follows and decides
  }

  onMessage(msg) {
    switch (msg.type) {
      case "auth_ok":
        this.connectedAt = Date.now();
        this.refused.clear();
        this.remember(msg.deviceKey ?? this.pairing.deviceKey, msg.deviceId ?? this.pairing.deviceId);
        this.set("connected", { previousToken: this.using > 0 });
        this.startPinging();
        break;
      case "auth_fail":
        if (msg.reason === "invalid_token") {
          this.refused.add(this.using);
          const untried = this.tokens.findIndex((_, i) => !this.refused.has(i));
          if (untried < 0) {
            this.set("token_rejected");
          } else {
            this.using = untried;
            this.connect();
          }
        } else if (msg.reason === "device_pending") {
          this.remember(msg.deviceKey ?? this.pairing.deviceKey, msg.deviceId);
          this.set("device_pending", { deviceId: msg.deviceId, message: msg.message, retryInMs: PENDING_RETRY_MS });
          this.teardown();
          this.timer = setTimeout(() => this.connect(), PENDING_RETRY_MS);
        } else if (msg.reason === "device_refused") {
          this.remember(undefined, msg.deviceId);
          this.set("device_refused", { deviceId: msg.deviceId, message: msg.message });
          this.teardown();
        }
        break;
      case "pong":
        this.missed = 0;
        clearTimeout(this.checking);
        break;
      case "server_shutdown": {
        const eta = Math.max(500, Math.min(msg.restartEtaMs ?? 2000, BACKOFF_CAP_MS));
        this.set("server_restarting", { retryInMs: eta, reason: msg.reason });
        this.teardown();
        this.timer = setTimeout(() => this.connect(), eta);
        break;
      }
    }
    this.dispatchEvent(new CustomEvent("message", { detail: msg }));
  }

  /// What the machine said about this device: its key (undefined: forget it) and id.
  /// The pairing code has then been used or refused either way.
  remember(deviceKey, deviceId) {
    if (deviceKey) this.pairing.deviceKey = deviceKey;
    else delete this.pairing.deviceKey;
    if (deviceId) this.pairing.deviceId = deviceId;
    delete this.pairing.code;
    this.dispatchEvent(new CustomEvent("device", { detail: { url: this.pairing.url, deviceKey, deviceId } }));
  }

  async retry() {
    if (this.connectedAt && Date.now() - this.connectedAt >= RESET_AFTER_MS) this.attempt = 0;
    this.connectedAt = 0;
    clearTimeout(this.timer);
    // The machine's supervisor says whether the server is being restarted (and when to
    // come back); no answer at all means the way there is down.
    const restarting = await this.restartingFor();
    if (this.ws || this.state === "idle") return; // superseded meanwhile
    if (restarting !== null) {
      this.set("server_restarting", { retryInMs: restarting });
      this.timer = setTimeout(() => this.connect(), restarting);
      return;
    }
    // A crash the supervisor has already covered costs the phone a blink: the first try
    // goes at once; only the ones after it back off.
    const delay =
      this.attempt === 0
        ? Math.round(Math.random() * FIRST_RETRY_JITTER_MS)
        : Math.min(
            Math.round(Math.min(BACKOFF_FLOOR_MS * 2 ** (this.attempt - 1), BACKOFF_CAP_MS) * (0.8 + Math.random() * 0.4)),
            BACKOFF_CAP_MS,
          );
    this.attempt++;
    this.set("reconnecting", { retryInMs: delay });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /// Milliseconds until the restarting server expects us, or null.
  async restartingFor() {
    const health = this.pairing.url.replace(/^ws/, "http").replace(/\/ws$/, "/health");
    // Only the page's own machine can be asked: another's answer is unreadable (no CORS)
    // and outside the page's Content-Security-Policy.
    if (new URL(health).origin !== globalThis.location?.origin) return null;
    try {
      const response = await fetch(health, { cache: "no-store", signal: AbortSignal.timeout(2000) });
      if (response.status !== 503) return null;
      const body = await response.json();
      if (body.status !== "restarting") return null;
      const after = Number(response.headers.get("Retry-After") ?? "1");
      return Math.max(500, Math.min(after * 1000, BACKOFF_CAP_MS));
    } catch {
      return null;
    }
  }

  startPinging() {
    this.stopPinging();
    this.missed = 0;
    this.pinger = setInterval(() => {
      if (this.missed >= MISSED_PONGS) {
        // Dead without a close (a phone that slept, a NAT that forgot us).
        this.teardown();
        this.retry();
        return;
      }
      this.missed++;
      this.send({ type: "ping" });
    }, PING_EVERY_MS);
  }

  stopPinging() {
    clearInterval(this.pinger);
    this.pinger = null;
    clearTimeout(this.checking);
  }

  /// The page is shown again (a phone unlocked, a tab brought back): a connection that
  /// may have died while it slept is checked at once rather than at the next two missed
  /// pings, and a wait for the next try is cut short.
  resume() {
    if (this.state === "connected") {
      clearTimeout(this.checking);
      this.checking = setTimeout(() => {
        this.teardown();
        this.retry();
      }, RESUME_PONG_MS);
      this.send({ type: "ping" });
    } else if (this.state === "reconnecting") {
      this.connect();
    }
  }

  teardown() {
    this.stopPinging();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      try {
        ws.close();
      } catch {
        // already closed
      }
    }
  }

  /// Sends if connected; false otherwise (the caller queues).
  send(msg) {
    if (this.state !== "connected" || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    this.ws.send(JSON.stringify(msg));
    return true;
  }

  reconnectNow() {
    this.attempt = 0;
    this.refused.clear();
    this.connect();
  }

  close() {
    clearTimeout(this.timer);
    this.teardown();
    this.set("idle");
  }
}
