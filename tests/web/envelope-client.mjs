// The `encrypted` envelope as Chroxy's own clients build it, with tweetnacl (the
// library they use), for tests/encryption.rs: one JSON request per stdin line, one
// JSON answer per stdout line. The test owns the WebSocket; this process owns the keys.
//
//   {"op":"hello"}                      → {"eagerPublicKey","eagerSalt"} for `auth`
//   {"op":"keyed","serverPublicKey":…}  → {} once the connection key is derived
//   {"op":"seal","text":…}              → the envelope to send
//   {"op":"open","frame":…}             → {"text"} or {"error"}
import { createRequire } from 'node:module'
import readline from 'node:readline'

const nacl = createRequire(import.meta.url)(process.env.CHROXY_TEST_TWEETNACL)
const b64 = (bytes) => Buffer.from(bytes).toString('base64')
const unb64 = (text) => new Uint8Array(Buffer.from(text, 'base64'))
const FROM_SERVER = 0x00
const FROM_CLIENT = 0x01

function nonce(counter, direction) {
  const n = new Uint8Array(24)
  n[0] = direction
  for (let i = 1, v = counter; i <= 8; i++, v = Math.floor(v / 256)) n[i] = v & 0xff
  return n
}

const mine = nacl.box.keyPair()
const salt = nacl.randomBytes(32)
let key = null
let sent = 0
let received = 0

const ops = {
  hello: () => ({ eagerPublicKey: b64(mine.publicKey), eagerSalt: b64(salt) }),
  keyed: ({ serverPublicKey }) => {
    const shared = nacl.box.before(unb64(serverPublicKey), mine.secretKey)
    const input = new Uint8Array(64)
    input.set(shared, 0)
    input.set(salt, 32)
    key = nacl.hash(input).slice(0, 32)
    return {}
  },
  seal: ({ text }) => {
    const d = nacl.secretbox(new TextEncoder().encode(text), nonce(sent, FROM_CLIENT), key)
    return { type: 'encrypted', d: b64(d), n: sent++ }
  },
  open: ({ frame }) => {
    if (frame.type !== 'encrypted' || frame.n !== received) return { error: `unexpected frame ${JSON.stringify(frame)}` }
    const plain = nacl.secretbox.open(unb64(frame.d), nonce(frame.n, FROM_SERVER), key)
    if (!plain) return { error: 'does not open' }
    received++
    return { text: new TextDecoder().decode(plain) }
  },
}

for await (const line of readline.createInterface({ input: process.stdin })) {
  const request = JSON.parse(line)
  process.stdout.write(JSON.stringify(ops[request.op](request)) + '\n')
}
