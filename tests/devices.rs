//! "A new device needs a click in the window": the token alone no longer lets a device
//! in. Against a real worker (and, for the status JSON, a real supervisor), with the
//! owner's decisions made the way a person makes them (`chroxy devices …`, `chroxy pair`).
//! No agent is needed: nothing here reaches one.

mod common;

use common::supervisor::{cli, Sup};
use common::*;
use serde_json::{json, Value};

async fn worker(home: &Home) -> Worker {
    Worker::start_with(home, WorkerOpts::missing_cli()).await
}

/// An `auth` with the right token and whatever else `extra` adds.
async fn knock(port: u16, extra: Value) -> Client {
    let mut c = Client::connect(port).await;
    let mut auth = json!({"type": "auth", "token": TOKEN,
        "deviceInfo": {"deviceName": "stranger's phone", "deviceType": "phone", "platform": "Android"}});
    for (k, v) in extra.as_object().unwrap() {
        auth[k] = v.clone();
    }
    c.send(auth).await;
    c
}

/// Knocks and reads the answer; a refusal must be followed by the close, and nothing
/// else may have been said (no session, no history, no client list).
async fn answer(port: u16, extra: Value) -> (Value, Client) {
    let mut c = knock(port, extra).await;
    let first = c.recv().await;
    if first["type"] == "auth_fail" {
        assert_eq!(c.closed().await, Some(4001), "closed at once: {first}");
        assert_eq!(c.seen.len(), 1, "nothing but the refusal: {:?}", c.seen);
    }
    (first, c)
}

/// `chroxy devices <args>` from the owner's terminal; its stdout (it must succeed).
async fn devices(home: &Home, args: &[&str]) -> String {
    let mut all = vec!["devices"];
    all.extend_from_slice(args);
    let (ok, out, err) = cli(home, &all).await;
    assert!(ok.success(), "chroxy {all:?}: {err}");
    out
}

/// The one-time code of the QR `chroxy pair` shows (a fresh one each time).
async fn pairing_code(home: &Home) -> String {
    let (ok, link, err) = cli(home, &["pair"]).await;
    assert!(ok.success(), "{err}");
    chroxy::pairing::decode_link(link.trim())
        .and_then(|p| p.code)
        .expect("`chroxy pair` shows a code")
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or_else(|| panic!("no {key} in {v}"))
}

#[tokio::test]
async fn a_token_alone_waits_sees_nothing_and_gets_in_once_the_owner_approves() {
    let home = Home::new();
    let w = worker(&home).await;
    let mut owner = w.client().await;

    let (pending, _) = answer(w.port, json!({})).await;
    assert_eq!(pending["reason"], "device_pending", "{pending}");
    let id = str_of(&pending, "deviceId").to_owned();
    let key = str_of(&pending, "deviceKey").to_owned();
    let message = str_of(&pending, "message");
    assert!(
        message.contains("Chroxy window on your computer")
            && message.contains(&format!("chroxy devices approve {id}")),
        "{message}"
    );
    // Retrying with the key it was given: the same device, still waiting.
    let (again, _) = answer(w.port, json!({"deviceKey": key})).await;
    assert_eq!(
        (again["reason"].as_str(), again["deviceId"].as_str()),
        (Some("device_pending"), Some(id.as_str()))
    );
    let listed = devices(&home, &["list"]).await;
    assert!(
        listed.contains(&id) && listed.contains("PENDING"),
        "{listed}"
    );

    let approved = devices(&home, &["approve", &id]).await;
    assert!(approved.contains(&id), "{approved}");
    let (ok, mut phone) = answer(w.port, json!({"deviceKey": key})).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert_eq!(ok["deviceId"], id.as_str());
    assert!(
        ok.get("deviceKey").is_none(),
        "it keeps the key it has: {ok}"
    );
    phone.until_type("history_replay_end").await;

    // The owner's phone heard of the approved phone joining, and of no waiting one.
    let joined = owner.until_type("client_joined").await;
    assert_eq!(joined["client"]["deviceName"], "stranger's phone");
    let earlier: Vec<_> = owner.seen[..owner.seen.len() - 1]
        .iter()
        .filter(|v| v["type"] == "client_joined")
        .collect();
    assert!(
        earlier.is_empty(),
        "a waiting device was announced: {earlier:?}"
    );
    // Its last visit is recorded (the worker's own peer address: no supervisor here).
    let listed = devices(&home, &["list"]).await;
    assert!(
        listed.contains("approved") && listed.contains("127.0.0.1"),
        "{listed}"
    );
}

#[tokio::test]
async fn refused_stays_refused_and_revoked_is_refused_at_the_next_connection() {
    let home = Home::new();
    let w = worker(&home).await;
    let (pending, _) = answer(w.port, json!({})).await;
    let (id, key) = (str_of(&pending, "deviceId"), str_of(&pending, "deviceKey"));
    devices(&home, &["refuse", id]).await;
    for _ in 0..2 {
        let (refused, _) = answer(w.port, json!({"deviceKey": key})).await;
        assert_eq!(refused["reason"], "device_refused", "{refused}");
        assert!(
            str_of(&refused, "message").contains("pair it again"),
            "{refused}"
        );
        assert!(refused.get("deviceKey").is_none());
    }
    let (status, _, err) = cli(&home, &["devices", "approve", id]).await;
    assert!(!status.success() && err.contains("stays refused"), "{err}");

    // The test home's own phone is approved; revoked, it is out at its next connection.
    let phone = w.client().await;
    let ok = phone.seen.iter().find(|v| v["type"] == "auth_ok").unwrap();
    let phone_id = str_of(ok, "deviceId").to_owned();
    devices(&home, &["revoke", &phone_id]).await;
    let mut c = w.connect().await;
    let refused = c.auth(TOKEN).await;
    assert_eq!(refused["reason"], "device_refused", "{refused}");
    drop(phone);
}

#[tokio::test]
async fn revoking_a_device_closes_its_open_connections_and_no_one_else_notices() {
    let home = Home::new();
    let w = worker(&home).await;
    let code = pairing_code(&home).await;
    // A lost phone, connected twice (two tabs), and the owner's own phone.
    let (paired, mut lost) = answer(w.port, json!({"pairingCode": code})).await;
    assert_eq!(paired["type"], "auth_ok", "{paired}");
    let (id, key) = (str_of(&paired, "deviceId"), str_of(&paired, "deviceKey"));
    let (again, mut tab) = answer(w.port, json!({"deviceKey": key})).await;
    assert_eq!(again["type"], "auth_ok", "{again}");
    let mut kept = w.client().await;
    for c in [&mut lost, &mut tab] {
        c.until_type("history_replay_end").await;
    }

    devices(&home, &["revoke", id]).await;
    for c in [&mut lost, &mut tab] {
        let told = c.until_type("auth_fail").await;
        assert_eq!(told["reason"], "device_refused", "{told}");
        assert!(
            str_of(&told, "message").contains("revoked this device"),
            "{told}"
        );
        assert_eq!(c.closed().await, Some(4001), "closed as an auth failure");
    }
    // The owner's phone sees both go and is still served.
    for _ in 0..2 {
        kept.until_type("client_left").await;
    }
    kept.send(json!({"type": "ping"})).await;
    kept.until_type("pong").await;
    // And the revoked key stays out.
    let (refused, _) = answer(w.port, json!({"deviceKey": key})).await;
    assert_eq!(refused["reason"], "device_refused", "{refused}");
}

#[tokio::test]
async fn a_pairing_code_pairs_one_device_once_and_only_while_it_is_fresh() {
    let home = Home::new();
    let w = worker(&home).await;
    let code = pairing_code(&home).await;
    assert_eq!(code.len(), 32);

    let (paired, mut phone) = answer(w.port, json!({"pairingCode": code})).await;
    assert_eq!(paired["type"], "auth_ok", "{paired}");
    let key = str_of(&paired, "deviceKey").to_owned();
    phone.until_type("history_replay_end").await;
    let (back, _) = answer(w.port, json!({"deviceKey": key})).await;
    assert_eq!(
        back["type"], "auth_ok",
        "the key it was given lets it back in"
    );

    // The same link in another hand: it waits like any token holder, and is told why.
    let (second, _) = answer(w.port, json!({"pairingCode": code})).await;
    assert_eq!(second["reason"], "device_pending", "{second}");
    assert!(str_of(&second, "message").contains("already used or has expired"));

    // A code shown more than 10 minutes ago (minted with the clock turned back).
    let old = chroxy::protocol::now_ms() - chroxy::devices::CODE_LIFETIME_MS - 1;
    let stale = home.devices().mint_code(old).unwrap();
    let (late, _) = answer(w.port, json!({"pairingCode": stale.expose()})).await;
    assert_eq!(late["reason"], "device_pending", "{late}");
    assert!(str_of(&late, "message").contains("already used or has expired"));

    let listed = devices(&home, &["list"]).await;
    assert_eq!(
        listed.matches("approved").count(),
        2,
        "the test phone and one paired: {listed}"
    );
}

#[tokio::test]
async fn a_wrong_token_with_a_valid_pairing_code_fails_as_before_and_spends_nothing() {
    let home = Home::new();
    home.config("[worker]\nauth_backoff_base_ms = 10\n");
    let w = worker(&home).await;
    let code = home
        .devices()
        .mint_code(chroxy::protocol::now_ms())
        .unwrap();
    let mut c = w.connect().await;
    c.send(json!({"type": "auth", "token": "wrong", "pairingCode": code.expose(), "deviceKey": DEVICE_KEY}))
        .await;
    assert_eq!(
        c.recv().await,
        json!({"type": "auth_fail", "reason": "invalid_token"})
    );
    assert_eq!(c.closed().await, Some(4001));
    assert!(home
        .devices()
        .is_code_open(&code, chroxy::protocol::now_ms())
        .unwrap());
}

#[tokio::test]
async fn a_worker_run_by_hand_lets_no_one_pass_as_the_probe_to_skip_approval() {
    let home = Home::new();
    let w = worker(&home).await;
    // A hand-run worker keys the probe's proof from the token: any token holder can
    // make it, so it is no reason to skip the device check.
    let voucher = chroxy::forwarded::Voucher::new(&chroxy::token::ApiToken::new(TOKEN));
    let req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://127.0.0.1:{}/ws", w.port),
    )
    .map(|mut r| {
        r.headers_mut().insert(
            chroxy::forwarded::PROBE_HEADER,
            voucher.probe_value().parse().unwrap(),
        );
        r
    })
    .unwrap();
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut probe = Client {
        ws,
        seen: Vec::new(),
        sealed: None,
    };
    probe
        .send(json!({"type": "auth", "token": TOKEN, "deviceInfo": {
            "deviceName": "probe", "deviceType": chroxy::control::PROBE_DEVICE_TYPE}}))
        .await;
    assert_eq!(probe.recv().await["reason"], "device_pending");
}

#[tokio::test]
async fn with_approval_off_the_token_alone_is_enough_as_before() {
    let home = Home::new();
    home.config("[security]\napprove_new_devices = false\n");
    let w = worker(&home).await;
    let (ok, _) = answer(w.port, json!({})).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    assert!(ok.get("deviceId").is_none(), "{ok}");
    assert_eq!(
        home.devices()
            .list(chroxy::protocol::now_ms())
            .unwrap()
            .len(),
        1,
        "nobody was added"
    );
}

#[tokio::test]
async fn a_corrupt_device_list_lets_no_one_in_and_is_left_for_the_owner() {
    let home = Home::new();
    let w = worker(&home).await;
    let path = home.devices().path().to_owned();
    std::fs::write(&path, b"{ not json").unwrap();
    let mut c = knock(w.port, json!({"deviceKey": DEVICE_KEY})).await;
    match c.next().await {
        Next::Closed(code) => assert_eq!(code, Some(1011), "closed as a fault: retry later"),
        Next::Msg(m) => panic!("answered though the list is unreadable: {m}"),
    }
    assert_eq!(
        std::fs::read(&path).unwrap(),
        b"{ not json",
        "nothing overwritten"
    );
    assert!(
        w.log_text().contains("devices.json"),
        "the log names the file"
    );
    let (ok, _, err) = cli(&home, &["devices", "list"]).await;
    assert!(!ok.success() && err.contains("devices.json"), "{err}");
}

#[tokio::test]
async fn the_status_lists_devices_without_keys_or_codes_and_its_buttons_decide() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::missing_cli()).await;
    sup.healthy().await;
    let code = pairing_code(&home).await;
    let (pending, _) = answer(sup.public, json!({})).await;
    let (id, key) = (str_of(&pending, "deviceId"), str_of(&pending, "deviceKey"));

    let status = sup
        .wait_for("the waiting device listed", |s| {
            s["devices"]["list"]
                .as_array()
                .is_some_and(|l| l.iter().any(|d| d["id"] == id && d["state"] == "pending"))
        })
        .await;
    assert_eq!(status["devices"]["approveNew"], true);
    let text = status.to_string();
    for secret in [key, code.as_str(), DEVICE_KEY, TOKEN] {
        assert!(!text.contains(secret), "a secret in the status: {text}");
    }

    let (code_status, body) = sup
        .post("devices/approve", None, &json!({"id": id}).to_string())
        .await;
    assert_eq!(code_status, 200, "{body}");
    let (ok, phone) = answer(sup.public, json!({"deviceKey": key})).await;
    assert_eq!(ok["type"], "auth_ok", "{ok}");
    sup.wait_for(
        "the device listed as approved, with where it was seen",
        |s| {
            s["devices"]["list"].as_array().is_some_and(|l| {
                l.iter()
                    .any(|d| d["id"] == id && d["state"] == "approved" && d["lastSeen"].is_u64())
            })
        },
    )
    .await;
    let connected = |s: &Value| {
        s["devices"]["connected"]
            .as_array()
            .is_some_and(|c| c.iter().any(|d| d == id))
    };
    sup.wait_for("the device shown as connected now", connected)
        .await;
    drop(phone);
    sup.wait_for("the device no longer connected", |s| !connected(s))
        .await;
}
