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
//   not_paired (v2): the machine knows neither this phone's key nor its code (used or
//   expired); like device_refused, nothing is tried until a fresh QR code.
//   wrong_machine (v2): the answer to the handshake does not decrypt, so the machine
//   does not hold the key the pairing pinned; nothing was readable to it, and nothing
//   is tried until the person asks ("Reconnect now").
//   token_auth_disabled: the machine lets no token in (v1); only a fresh QR code (a v2
//   link) helps.
//   no_crypto: the pairing pins a key but this browser cannot encrypt, and the pairing
//   has no token to fall back on.
//
// Version 2 (the pairing pins the machine's key; docs/protocol.md "Version 2"): on open,
// the Noise handshake's message 1 as a binary frame; the machine's message 2; then the
// `auth` and every message both ways sealed by the transport, in binary frames only. A
// frame that does not open, or a text frame, breaks the channel: it is closed (4002)
// and reconnected as after any loss, with a new handshake and new keys (the history
// replay restores what was missed). Where this browser cannot encrypt (no X25519 in its
// WebCrypto, a page that is not a secure context, no storage for the device key), a
// pairing that also holds a token uses version 1, and says so once in.
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

import * as defaultNoise from "./noise.js";

const PING_EVERY_MS = 15000;
const MISSED_PONGS = 2;
const BACKOFF_FLOOR_MS = 500;
/// The first try after a loss goes at once, spread over this much so that every phone
/// of a restarted machine does not arrive in the same millisecond.
const FIRST_RETRY_JITTER_MS = 50;
/// After the page is shown again (a phone unlocked), how long a pong may take before
/// the connection is taken for dead.
const CHECK_PONG_MS = 3000;
const BACKOFF_CAP_MS = 30000;
const RESET_AFTER_MS = 60000;
const PENDING_RETRY_MS = 3000;
/// The close code of a broken encrypted channel (docs/protocol.md "Encrypted frames").
const CHANNEL_BROKEN = 4002;

/// States in which nothing is tried until the person acts (pairs again, "Reconnect now").
const WAITING_FOR_PERSON = new Set([
  "token_rejected", "device_refused", "not_paired", "wrong_machine", "token_auth_disabled", "no_crypto",
]);
/// States in which a closing socket is no loss to recover from.
const NOT_A_LOSS = new Set([...WAITING_FOR_PERSON, "server_restarting", "device_pending"]);

export class Connection extends EventTarget {
  /// `keys`: the device-key store (device-keys.js), used when the pairing pins a key;
  /// `noise`: noise.js (a stand-in in tests).
  constructor(pairing, device, { keys, noise = defaultNoise } = {}) {
    super();
    this.pairing = pairing;
    this.device = device;
    this.keys = keys;
    this.noise = noise;
    this.channel = null; // the socket's: {encrypted, handshake, transport, inbox, cannotEncrypt}
    this.fingerprint = null; // the pinned key's, once computed
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

  /// Whether this connection's messages are end-to-end encrypted (v2).
  get encrypted() {
    return !!this.channel?.transport;
  }

  /// Whether nothing is tried until the person acts.
  get waitingForPerson() {
    return WAITING_FOR_PERSON.has(this.state);
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
    ws.binaryType = "arraybuffer";
    // What this socket speaks: v1's text, or (the pairing pins the machine's key) the
    // handshake, then frames only its transport opens. Encrypted, every event waits in
    // `inbox` for the ones before it: WebCrypto answers later, and a close must not
    // overtake the `auth_fail` or `server_shutdown` that came before it.
    const channel = { encrypted: !!this.pairing.key, handshake: null, transport: null, inbox: Promise.resolve() };
    this.channel = channel;
    const inOrder = (run) => (channel.inbox = channel.inbox.then(run));
    ws.onopen = () => {
      this.set("authenticating");
      if (channel.encrypted) inOrder(() => this.handshake(ws, channel));
      else this.sendPlainAuth(ws);
    };
    ws.onmessage = (e) => {
      if (channel.encrypted) inOrder(() => this.receiveSealed(ws, channel, e.data));
      else this.receive(e.data);
    };
    ws.onclose = (e) => {
      const lost = () => {
        if (this.ws !== ws) return; // replaced on purpose
        this.ws = null;
        this.stopPinging();
        if (NOT_A_LOSS.has(this.state)) return;
        // Closed before answering the handshake: the machine could not read message 1,
        // which is what a machine with another key than the pinned one does.
        const refused = channel.encrypted && !channel.transport && e?.code === CHANNEL_BROKEN;
        this.retry(refused ? { handshakeRefused: true } : {});
      };
      if (channel.encrypted) inOrder(lost);
      else lost();
    };
    ws.onerror = () => {}; // onclose follows and decides
  }

  sendPlainAuth(ws) {
    const auth = { type: "auth", token: this.token, deviceInfo: this.device, protocolVersion: 1 };
    if (this.pairing.deviceKey) auth.deviceKey = this.pairing.deviceKey;
    if (this.pairing.code) auth.pairingCode = this.pairing.code;
    ws.send(JSON.stringify(auth));
  }

  /// A message's text, as the machine sent it.
  receive(text) {
    let msg;
    try {
      msg = JSON.parse(text);
    } catch {
      return;
    }
    this.onMessage(msg);
  }

  /// Version 2's first step: message 1, from this phone's key for the machine to the key
  /// the pairing pinned. Where this browser cannot encrypt, `unencrypted` decides.
  async handshake(ws, channel) {
    const pinned = this.noise.decodePublicKey(this.pairing.key);
    let cannot = await this.noise.unsupportedReason();
    let device;
    if (!cannot) {
      try {
        device = await this.keys.deviceKey(this.pairing.url);
      } catch (e) {
        cannot = `it could not keep this phone's key (${e.message})`;
      }
    }
    if (this.ws !== ws) return;
    if (cannot) {
      this.unencrypted(ws, channel, cannot);
      return;
    }
    try {
      this.fingerprint = await this.noise.fingerprint(pinned);
      channel.handshake = await this.noise.start(device, pinned);
    } catch {
      // The pinned key is none a machine can hold (a link made to break this phone).
      if (this.ws === ws) this.wrongMachine();
      return;
    }
    if (this.ws !== ws) return;
    ws.send(channel.handshake.message1);
  }

  /// This browser cannot speak version 2 (`reason`, to follow "this browser cannot do
  /// end-to-end encryption: "): a pairing that holds a token authenticates with it over
  /// version 1, and says so; one without has no way in.
  unencrypted(ws, channel, reason) {
    channel.cannotEncrypt = reason;
    if (!this.token) {
      this.set("no_crypto", { cannotEncrypt: reason });
      this.teardown();
      return;
    }
    channel.encrypted = false;
    this.sendPlainAuth(ws);
  }

  /// A frame of the encrypted channel: message 2 (then the sealed `auth` goes out), or a
  /// sealed message. Anything else breaks the channel.
  async receiveSealed(ws, channel, data) {
    if (this.ws !== ws) return;
    if (!channel.encrypted) {
      this.receive(data); // v1 after all (this browser cannot encrypt)
      return;
    }
    if (typeof data === "string") {
      this.broken();
      return;
    }
    if (!channel.transport) {
      try {
        channel.transport = await channel.handshake.finish(new Uint8Array(data));
      } catch {
        if (this.ws === ws) this.wrongMachine();
        return;
      }
      if (this.ws !== ws) return;
      // No token, no device key: the device is the key the handshake proved.
      const auth = { type: "auth", protocolVersion: 2, deviceInfo: this.device };
      if (this.pairing.code) auth.pairingCode = this.pairing.code;
      this.seal(ws, channel, auth);
      return;
    }
    let text;
    try {
      text = await channel.transport.open(data);
    } catch {
      if (this.ws === ws) this.broken();
      return;
    }
    if (this.ws === ws) this.receive(text);
  }

  /// Sends `msg` through the encrypted channel. Frames leave in the order of the calls:
  /// the transport resolves them in that order, however long each takes to seal.
  seal(ws, channel, msg) {
    channel.transport.seal(JSON.stringify(msg)).then(
      (frame) => this.ws === ws && ws.send(frame),
      () => this.ws === ws && this.broken(),
    );
  }

  /// The encrypted channel broke: closed at once, and reconnected as after any loss.
  broken() {
    this.teardown(CHANNEL_BROKEN);
    this.retry();
  }

  /// The machine's answer to the handshake did not decrypt: it is not the machine the
  /// phone paired with. Closed, and not tried again until the person asks.
  wrongMachine() {
    this.set("wrong_machine", { fingerprint: this.fingerprint });
    this.teardown(CHANNEL_BROKEN);
  }

  onMessage(msg) {
    switch (msg.type) {
      case "auth_ok":
        this.connectedAt = Date.now();
        this.refused.clear();
        this.remember(msg.deviceKey ?? this.pairing.deviceKey, msg.deviceId ?? this.pairing.deviceId);
        this.set("connected", this.connectedDetail());
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
        } else if (msg.reason === "not_paired") {
          // Its code, if it had one, is used or expired: spent.
          this.remember(this.pairing.deviceKey, msg.deviceId);
          this.set("not_paired", { message: msg.message });
          this.teardown();
        } else if (msg.reason === "token_auth_disabled") {
          this.set("token_auth_disabled", { message: msg.message, cannotEncrypt: this.channel.cannotEncrypt });
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

  /// How the connection got in: with the previous token (v1), end-to-end encrypted to
  /// the pinned key (its fingerprint), or over v1 because this browser cannot encrypt.
  connectedDetail() {
    const detail = { previousToken: this.using > 0 };
    if (this.encrypted) detail.fingerprint = this.fingerprint;
    if (this.channel.cannotEncrypt) detail.cannotEncrypt = this.channel.cannotEncrypt;
    return detail;
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

  /// `extra`: what the `reconnecting` state tells besides the wait.
  async retry(extra = {}) {
    if (this.connectedAt && Date.now() - this.connectedAt >= RESET_AFTER_MS) this.attempt = 0;
    this.connectedAt = 0;
    clearTimeout(this.timer);
    // The machine's supervisor says whether the server is being restarted (and when to
    // come back); no answer at all means the way there is down.
    const restarting = await this.restartingFor();
    if (this.ws || this.state === "idle") return; // superseded meanwhile
    if (restarting !== null) {
      this.set("server_restarting", { retryInMs: restarting.ms, serverState: restarting.state });
      this.timer = setTimeout(() => this.connect(), restarting.ms);
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
    this.set("reconnecting", { retryInMs: delay, ...extra });
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /// When the restarting server expects us (`ms`) and the supervisor's state (`failed`
  /// means no release serves until a person acts), or null.
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
      const state = typeof body.state === "string" ? body.state : null;
      return { ms: Math.max(500, Math.min(after * 1000, BACKOFF_CAP_MS)), state };
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

  /// Something says the connection may be dead (the page is shown again after the phone
  /// slept, or an input went unanswered): it is checked at once rather than at the next
  /// two missed pings, and a wait for the next try is cut short.
  check() {
    if (this.state === "connected") {
      clearTimeout(this.checking);
      this.checking = setTimeout(() => {
        this.teardown();
        this.retry();
      }, CHECK_PONG_MS);
      this.send({ type: "ping" });
    } else if (this.state === "reconnecting") {
      this.connect();
    }
  }

  /// Closes the socket, with `code` when one is due (the encrypted channel broke).
  teardown(code) {
    this.stopPinging();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      ws.onclose = null;
      try {
        ws.close(code);
      } catch {
        // already closed
      }
    }
  }

  /// Sends if connected; false otherwise (the caller queues).
  send(msg) {
    if (this.state !== "connected" || !this.ws || this.ws.readyState !== WebSocket.OPEN) return false;
    if (this.channel.transport) this.seal(this.ws, this.channel, msg);
    else this.ws.send(JSON.stringify(msg));
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
