//! Protocol v2 against a real worker (docs/protocol.md "Version 2"): a phone paired by
//! a one-time code and its own key, every frame sealed; strangers, replays, altered
//! frames and an impostor's handshake refused; a revoked device cut off while another
//! keeps streaming; the token refused while `allow_token_auth` is off (the default).
//! The phone client in a browser, behind a recording man-in-the-middle, is in
//! `tests/phone.rs`.

mod common;

use chroxy::channel::KeyPair;
use common::supervisor::cli;
use common::*;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

/// A worker with the defaults a person gets: v2 only.
async fn worker(home: &Home) -> Worker {
    home.config("[security]\nallow_token_auth = false\n");
    Worker::start_with(home, WorkerOpts::fake_cli()).await
}

/// The desktop's key and a fresh one-time code, from the link `chroxy pair` prints.
async fn pairing(home: &Home) -> ([u8; 32], String) {
    let (ok, link, err) = cli(home, &["pair"]).await;
    assert!(ok.success(), "{err}");
    let payload = chroxy::pairing::decode_link(link.trim()).expect("a pairing link");
    assert_eq!(payload.v, 2);
    assert_eq!(payload.token, None, "no token in a v2-only link");
    let key = chroxy::channel::decode_key(&payload.key.expect("the desktop's key")).unwrap();
    (key, payload.code.expect("a one-time code"))
}

/// A v2 connection's `auth` answer, and the connection.
async fn knock(
    port: u16,
    device: &KeyPair,
    server: &[u8; 32],
    code: Option<&str>,
) -> (Value, Client) {
    let mut c = Client::connect(port).await;
    let answer = c.auth_v2(device, server, code).await;
    (answer, c)
}

/// A refusal is followed by the close, and nothing else was said.
async fn refused(mut c: Client, answer: &Value, reason: &str) -> String {
    assert_eq!(answer["reason"], reason, "{answer}");
    assert_eq!(c.closed().await, Some(4001), "{answer}");
    assert_eq!(c.seen.len(), 1, "nothing but the refusal: {:?}", c.seen);
    answer["message"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_code_pairs_a_device_key_once_and_the_key_alone_lets_it_back_in() {
    let home = Home::new();
    let w = worker(&home).await;
    let (server, code) = pairing(&home).await;
    let phone = KeyPair::generate().unwrap();

    let (ok, mut c) = knock(w.port, &phone, &server, Some(&code)).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(ok["encryption"], "noise");
    assert_eq!(ok["protocolVersion"], 2);
    assert!(
        ok.get("deviceKey").is_none(),
        "nothing minted: the device is its key"
    );
    let id = ok["deviceId"].as_str().unwrap().to_owned();
    // A whole turn, sealed both ways.
    c.until_type("history_replay_end").await;
    let frames = c.turn("sealed hello").await;
    assert_eq!(streamed_text(&frames), "sealed hello");

    // Back later with the key alone: the same device.
    let (back, _) = knock(w.port, &phone, &server, None).await;
    assert_eq!(back["type"], "auth_ok", "{back}");
    assert_eq!(back["deviceId"], id.as_str());
    let listed = home.devices().list(chroxy::protocol::now_ms()).unwrap();
    let device = listed.iter().find(|d| d.id == id).unwrap();
    assert_eq!(device.name.as_deref(), Some("v2 phone"));

    // The same code in another hand pairs nothing, and the stranger waits nowhere.
    let thief = KeyPair::generate().unwrap();
    let (answer, c) = knock(w.port, &thief, &server, Some(&code)).await;
    let message = refused(c, &answer, "not_paired").await;
    assert!(message.contains("already used or has expired"), "{message}");
    let (answer, c) = knock(w.port, &thief, &server, None).await;
    let message = refused(c, &answer, "not_paired").await;
    assert!(message.contains("not paired"), "{message}");
    let now = chroxy::protocol::now_ms();
    assert_eq!(
        home.devices().list(now).unwrap().len(),
        listed.len(),
        "no stranger in the list: {:?}",
        home.devices().list(now).unwrap()
    );
}

#[tokio::test]
async fn the_token_is_refused_unless_the_owner_allows_it() {
    let home = Home::new();
    let w = worker(&home).await;
    let mut c = w.connect().await;
    let answer = c.auth(TOKEN).await;
    let message = refused(c, &answer, "token_auth_disabled").await;
    assert!(message.contains("allow_token_auth"), "{message}");
}

#[tokio::test]
async fn a_server_without_the_pinned_key_is_found_out_and_a_bad_handshake_closes_4002() {
    let home = Home::new();
    let w = worker(&home).await;
    let (server, code) = pairing(&home).await;
    let phone = KeyPair::generate().unwrap();
    // A phone that pinned another machine's key: the worker cannot read its handshake.
    let other = KeyPair::generate().unwrap();
    let mut c = Client::connect(w.port).await;
    let failed = c.handshake(&phone, other.public()).await;
    assert!(
        matches!(failed, Err(HandshakeFailed::Closed(Some(4002)))),
        "{failed:?}"
    );
    // Garbage instead of a handshake: the same.
    let mut c = Client::connect(w.port).await;
    c.send_raw(Message::binary(vec![7u8; 96])).await;
    assert_eq!(c.closed().await, Some(4002));
    // And the right key still works (the code was not spent by the failures).
    let (ok, _) = knock(w.port, &phone, &server, Some(&code)).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
}

#[tokio::test]
async fn an_altered_replayed_or_text_frame_ends_the_channel_and_the_phone_comes_back() {
    let home = Home::new();
    let w = worker(&home).await;
    let (server, code) = pairing(&home).await;
    let phone = KeyPair::generate().unwrap();
    let (ok, mut c) = knock(w.port, &phone, &server, Some(&code)).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    c.until_type("history_replay_end").await;

    type Tamper = fn(Vec<u8>) -> Vec<Message>;
    let tampering: [(&str, Tamper); 4] = [
        ("a flipped bit", |mut f| {
            f[5] ^= 0x10;
            vec![Message::binary(f)]
        }),
        ("a replay", |f| {
            vec![Message::binary(f.clone()), Message::binary(f)]
        }),
        ("a truncation", |mut f| {
            f.pop();
            vec![Message::binary(f)]
        }),
        ("a text frame", |_| {
            vec![Message::text(json!({"type": "ping"}).to_string())]
        }),
    ];
    for (what, tamper) in tampering {
        let (sealer, _) = c.sealed.as_mut().unwrap();
        let ping = sealer.seal(&json!({"type": "ping"}).to_string()).unwrap();
        for frame in tamper(ping) {
            c.send_raw(frame).await;
        }
        // A replay passes once: its pong may come before the close.
        assert_eq!(c.closed().await, Some(4002), "{what}");
        // The phone reconnects with a new handshake, and is served as before.
        let (back, again) = knock(w.port, &phone, &server, None).await;
        assert_eq!(back["type"], "auth_ok", "{what}: {back}");
        c = again;
        c.until_type("history_replay_end").await;
    }
    let frames = c.turn("still here").await;
    assert_eq!(streamed_text(&frames), "still here");
}

#[tokio::test]
async fn revoking_a_device_closes_both_its_connections_while_another_keeps_streaming() {
    let home = Home::new();
    let w = worker(&home).await;
    let lost = KeyPair::generate().unwrap();
    let kept = KeyPair::generate().unwrap();
    let (server, code) = pairing(&home).await;
    let (ok, mut tab1) = knock(w.port, &lost, &server, Some(&code)).await;
    let id = ok["deviceId"].as_str().unwrap().to_owned();
    let (_, mut tab2) = knock(w.port, &lost, &server, None).await;
    let (_, code) = pairing(&home).await;
    let (ok, mut owner) = knock(w.port, &kept, &server, Some(&code)).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    for c in [&mut tab1, &mut tab2, &mut owner] {
        c.until_type("history_replay_end").await;
    }

    let (status, _, err) = cli(&home, &["devices", "revoke", &id]).await;
    assert!(status.success(), "{err}");
    for c in [&mut tab1, &mut tab2] {
        let told = c.until_type("auth_fail").await;
        assert_eq!(told["reason"], "device_refused", "{told}");
        assert_eq!(c.closed().await, Some(4001));
    }
    let frames = owner.turn("the owner's phone streams on").await;
    assert_eq!(streamed_text(&frames), "the owner's phone streams on");
    // The revoked key stays out, with its id.
    let (answer, c) = knock(w.port, &lost, &server, None).await;
    refused(c, &answer, "device_refused").await;
    assert_eq!(answer["deviceId"], id.as_str());
}

/// Chroxy's own clients' side of the `encrypted` envelope, computed by tweetnacl (the
/// library those clients use) in a Node process: tests/web/envelope-client.mjs.
struct Tweetnacl {
    _child: tokio::process::Child,
    stdin: tokio::process::ChildStdin,
    stdout: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Tweetnacl {
    fn start() -> Self {
        let package = std::env::var_os("CHROXY_TEST_TWEETNACL")
            .filter(|p| !p.is_empty())
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| repo_root().join("target/tools/tweetnacl/node_modules/tweetnacl"));
        assert!(
            package.exists(),
            "tweetnacl not found at {}; run ./scripts/test (it installs the pinned version) or set CHROXY_TEST_TWEETNACL",
            package.display()
        );
        let mut child = tokio::process::Command::new("node")
            .arg(repo_root().join("tests/web/envelope-client.mjs"))
            .env("CHROXY_TEST_TWEETNACL", package)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("node runs");
        let stdin = child.stdin.take().unwrap();
        let stdout = tokio::io::BufReader::new(child.stdout.take().unwrap());
        Self {
            _child: child,
            stdin,
            stdout: tokio::io::AsyncBufReadExt::lines(stdout),
        }
    }

    async fn ask(&mut self, request: Value) -> Value {
        use tokio::io::AsyncWriteExt;
        self.stdin
            .write_all(format!("{request}\n").as_bytes())
            .await
            .unwrap();
        let line = tokio::time::timeout(WAIT, self.stdout.next_line())
            .await
            .expect("tweetnacl answers")
            .unwrap()
            .expect("tweetnacl is running");
        serde_json::from_str(&line).unwrap()
    }

    async fn seal(&mut self, v: Value) -> Value {
        self.ask(json!({"op": "seal", "text": v.to_string()})).await
    }

    /// The next frame from the worker, which must be an envelope that opens.
    async fn open_next(&mut self, c: &mut Client, raw: &mut Vec<String>) -> Value {
        let frame = c.recv().await;
        raw.push(frame.to_string());
        let opened = self.ask(json!({"op": "open", "frame": frame})).await;
        let text = opened["text"]
            .as_str()
            .unwrap_or_else(|| panic!("{opened}"));
        serde_json::from_str(text).unwrap()
    }
}

/// A Chroxy client's `auth`: the token, with its half of the eager exchange.
fn eager_auth(hello: &Value) -> Value {
    json!({"type": "auth", "token": TOKEN, "deviceKey": DEVICE_KEY,
        "deviceInfo": {"deviceName": "Chroxy app", "deviceType": "phone", "platform": "ios"},
        "eagerPublicKey": hello["eagerPublicKey"], "eagerSalt": hello["eagerSalt"]})
}

#[tokio::test]
async fn a_chroxy_client_gets_its_encrypted_envelope_beside_token_auth_and_tampering_ends_it() {
    let home = Home::new(); // the harness allows token auth
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut nacl = Tweetnacl::start();
    let hello = nacl.ask(json!({"op": "hello"})).await;
    let mut c = w.connect().await;
    c.send(eager_auth(&hello)).await;
    let ok = c.recv().await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(ok["encryption"], "required", "{ok}");
    nacl.ask(json!({"op": "keyed", "serverPublicKey": ok["serverPublicKey"]}))
        .await;

    // Everything after auth_ok is an envelope that tweetnacl opens, in order.
    let mut raw = Vec::new();
    while nacl.open_next(&mut c, &mut raw).await["type"] != "history_replay_end" {}
    let secret = "a prompt only the phone and this machine may read";
    let input = nacl.seal(json!({"type": "input", "data": secret})).await;
    c.send(input.clone()).await;
    let mut streamed = String::new();
    loop {
        let frame = nacl.open_next(&mut c, &mut raw).await;
        if frame["type"] == "stream_delta" {
            streamed += frame["delta"].as_str().unwrap();
        }
        if frame["type"] == "agent_idle" {
            break;
        }
    }
    assert_eq!(streamed, secret, "the fake CLI echoes the prompt");
    for frame in &raw {
        let v: Value = serde_json::from_str(frame).unwrap();
        assert_eq!(v["type"], "encrypted", "{frame}");
        assert!(
            !frame.contains("prompt only"),
            "plaintext on the wire: {frame}"
        );
    }
    // The recorded input sent again: the counter says replay, and the worker closes.
    c.send(input).await;
    assert_eq!(c.closed().await, Some(4002));
}

#[tokio::test]
async fn a_bad_exchange_a_plain_frame_after_it_or_tokens_refused_keep_a_chroxy_client_out() {
    let home = Home::new();
    let w = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut nacl = Tweetnacl::start();
    let hello = nacl.ask(json!({"op": "hello"})).await;

    // A key that is not 32 bytes: refused, and the reason names the field.
    let mut bad = eager_auth(&hello);
    bad["eagerPublicKey"] = json!("c2hvcnQ=");
    let mut c = w.connect().await;
    c.send(bad).await;
    let answer = c.recv().await;
    let message = refused(c, &answer, "not_authenticated").await;
    assert!(message.contains("eagerPublicKey"), "{message}");

    // A plain frame once the envelope is agreed: the worker does not downgrade.
    let mut c = w.connect().await;
    c.send(eager_auth(&hello)).await;
    assert_eq!(c.recv().await["encryption"], "required");
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.closed().await, Some(4002));
    drop(w);

    // With tokens refused (the default), the envelope is no way around it.
    let home = Home::new();
    let w = worker(&home).await;
    let mut c = w.connect().await;
    c.send(eager_auth(&hello)).await;
    let answer = c.recv().await;
    refused(c, &answer, "token_auth_disabled").await;
}
