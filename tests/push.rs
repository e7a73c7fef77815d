//! "Tell me when Claude waits": Web Push end to end. A real supervisor and worker, the
//! phone speaking the protocol, and a push service on loopback that checks every push
//! as a real one would (VAPID JWT, `aes128gcm` for the browser's keys) and decrypts it
//! (`tests/common/push_service.rs`). The agent is `fake-claude`, which asks for a permission on
//! cue. Pushes are delivered one at a time, in order, so "nothing was pushed for X" is
//! shown by the next push being the one for Y.

mod common;
#[path = "common/push_service.rs"]
mod push_service;

use common::supervisor::{bad_releases, Sup, CRASH_FAST};
use common::*;
use push_service::{PushBrowser, PushService};
use serde_json::{json, Value};

/// A home whose prompts and turns are news at once (no grace, any turn is long).
fn home() -> Home {
    let home = Home::new();
    home.config("[push]\ngrace_secs = 0\nlong_turn_secs = 0\nloopback_push_service = true\n");
    home
}

/// The phone opts in; returns the `push_settings` it is answered with.
async fn subscribe(phone: &mut Client, browser: &PushBrowser, events: Option<Value>) -> Value {
    let mut msg = json!({"type": "push_subscribe", "subscription": browser.subscription()});
    if let Some(events) = events {
        msg["events"] = events;
    }
    phone.send(msg).await;
    phone.until_type("push_settings").await
}

/// Starts a `PERMISSION` turn; returns its prompt.
async fn ask(phone: &mut Client) -> Value {
    phone
        .send(json!({"type": "input", "data": "PERMISSION"}))
        .await;
    phone.until_type("permission_request").await
}

/// Answers the prompt `allow`; returns once the turn is over.
async fn answer(phone: &mut Client, asked: &Value) {
    phone
        .send(json!({"type": "permission_response", "requestId": asked["requestId"], "decision": "allow"}))
        .await;
    phone.until(|v| v["type"] == "agent_idle").await;
}

async fn hidden(phone: &mut Client, hidden: bool) {
    phone
        .send(json!({"type": "presence", "visible": !hidden}))
        .await;
    // Messages of one connection are handled in order: once this is answered, the
    // presence before it is applied.
    phone.send(json!({"type": "get_push_settings"})).await;
    phone.until_type("push_settings").await;
}

fn kinds(pushes: &[push_service::Push]) -> Vec<String> {
    pushes
        .iter()
        .map(|p| p.payload["kind"].as_str().unwrap_or("?").to_owned())
        .collect()
}

#[tokio::test]
async fn a_phone_not_looking_is_pushed_each_waiting_prompt_and_long_turn_and_one_on_screen_is_not()
{
    let service = PushService::start().await;
    let home = home();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let mut phone = sup.client().await;
    let offered = phone.seen_or_until(|v| v["type"] == "push_settings").await;
    assert_eq!(offered["available"], true, "{offered}");
    assert_eq!(offered["subscribed"], false);
    let key = offered["applicationServerKey"].as_str().unwrap().to_owned();

    let browser = service.browser();
    let settings = subscribe(&mut phone, &browser, None).await;
    assert_eq!(settings["subscribed"], true, "{settings}");
    assert_eq!(
        settings["events"],
        json!({"prompts": true, "turns": true, "supervisor": true})
    );

    // On screen: the phone sees the prompt and the end of the turn; nothing is pushed.
    let asked = ask(&mut phone).await;
    answer(&mut phone, &asked).await;

    // In the pocket: the prompt is pushed (and answered once it is seen), then the end
    // of the turn.
    hidden(&mut phone, true).await;
    let asked = ask(&mut phone).await;
    service.until(&browser, 1).await;
    answer(&mut phone, &asked).await;
    let pushes = service.until(&browser, 2).await;
    assert_eq!(kinds(&pushes), ["permission", "turn_done"], "{pushes:?}");
    let session = phone.active_session();
    let prompt = &pushes[0];
    assert_eq!(prompt.payload["sessionId"], session.as_str());
    assert_eq!(prompt.payload["promptId"], asked["requestId"]);
    assert_eq!(prompt.payload["tool"], "Bash");
    assert_eq!(prompt.urgency, "high");
    assert!(prompt.ttl <= 300, "a prompt is moot after its timeout");
    assert_eq!(
        prompt.vapid_key, key,
        "signed with the key phones subscribe with"
    );
    // What it asks stays on the computer: no command, no directory.
    let text = prompt.payload.to_string();
    let command = asked["input"]["command"].as_str().unwrap();
    assert!(!text.contains(command), "{text}");
    assert!(
        !text.contains(&home.project().display().to_string()),
        "{text}"
    );
    assert_eq!(pushes[1].payload["sessionId"], session.as_str());

    // The phone turns turn notices off: only the prompt of the next turn is pushed.
    phone
        .send(json!({"type": "push_events", "events": {"prompts": true, "turns": false, "supervisor": true}}))
        .await;
    let changed = phone.until_type("push_settings").await;
    assert_eq!(changed["events"]["turns"], false);
    let asked = ask(&mut phone).await;
    service.until(&browser, 3).await;
    answer(&mut phone, &asked).await;
    // The next push is the next prompt: the end of the turn in between pushed nothing.
    let asked = ask(&mut phone).await;
    let pushes = service.until(&browser, 4).await;
    answer(&mut phone, &asked).await;
    assert_eq!(
        kinds(&pushes),
        ["permission", "turn_done", "permission", "permission"],
        "{pushes:?}"
    );

    // The settings hold across a reconnect: they belong to the device.
    drop(phone);
    let mut phone = sup.client().await;
    let again = phone.seen_or_until(|v| v["type"] == "push_settings").await;
    assert_eq!(again["subscribed"], true);
    assert_eq!(again["events"]["turns"], false);

    // The push service says the subscription expired: it is forgotten.
    service.expire(&browser);
    hidden(&mut phone, true).await;
    let asked = ask(&mut phone).await;
    let subs = chroxy::push::Subscriptions::new(&chroxy::store::Paths::under(home.chroxy()));
    eventually("the expired subscription is forgotten", async || {
        holds(subs.all().unwrap().is_empty(), "still stored")
    })
    .await;
    answer(&mut phone, &asked).await;
    phone.send(json!({"type": "get_push_settings"})).await;
    assert_eq!(phone.until_type("push_settings").await["subscribed"], false);

    // Neither the endpoint (a capability) nor the signing key reaches the log.
    let log = sup.log_text();
    assert!(!log.contains(&browser.endpoint), "the endpoint was logged");
    let secret = std::fs::read_to_string(home.chroxy().join("config/push-key")).unwrap();
    assert!(!log.contains(secret.trim()), "the signing key was logged");
}

/// A push service that refuses this server (403) or never answers costs that one push:
/// the subscription is kept, the log says what to do about a 403, and the pushes
/// after a hung one still go (each post gives up after 10 s).
#[tokio::test]
async fn a_push_service_that_refuses_or_never_answers_costs_only_that_push() {
    let service = PushService::start().await;
    let home = home();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let mut phone = sup.client().await;
    let browser = service.browser();
    subscribe(&mut phone, &browser, Some(json!({"turns": false}))).await;
    hidden(&mut phone, true).await;

    service.refuse(&browser, 403);
    let asked = ask(&mut phone).await;
    service.until_tried(&browser, 1).await;
    answer(&mut phone, &asked).await;
    eventually("the refusal logged with what to do", async || {
        let log = sup.log_text();
        holds(
            log.contains("refused this server (403)") && log.contains("[push] contact"),
            "not yet",
        )
    })
    .await;

    service.hang(&browser);
    let asked = ask(&mut phone).await;
    service.until_tried(&browser, 2).await;
    answer(&mut phone, &asked).await;
    service.take_again(&browser);
    let asked = ask(&mut phone).await;
    // Delivered after the hung post gave up.
    let pushes = service.until(&browser, 1).await;
    assert_eq!(pushes[0].payload["promptId"], asked["requestId"]);
    answer(&mut phone, &asked).await;
    let subs = chroxy::push::Subscriptions::new(&chroxy::store::Paths::under(home.chroxy()));
    assert_eq!(subs.all().unwrap().len(), 1, "the subscription is kept");
}

#[tokio::test]
async fn subscriptions_that_are_not_a_browsers_are_refused_with_the_reason_and_nothing_is_stored() {
    let home = home();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    let mut phone = sup.client().await;
    let browser = PushService::start().await.browser();
    let sup = &sup;
    let refused = |sub: Value| async move {
        let mut phone = sup.client().await;
        phone
            .send(json!({"type": "push_subscribe", "subscription": sub}))
            .await;
        phone.until_type("error").await
    };
    let mut plain = browser.subscription();
    plain["endpoint"] = json!("http://push.example.com/x");
    let err = refused(plain).await;
    assert_eq!(err["code"], "INVALID_MESSAGE");
    assert!(
        err["message"].as_str().unwrap().contains("plain http"),
        "{err}"
    );
    // A paired device cannot make the supervisor post into the owner's network.
    let mut inside = browser.subscription();
    inside["endpoint"] = json!("https://169.254.169.254/latest/meta-data");
    let err = refused(inside).await;
    assert!(
        err["message"].as_str().unwrap().contains("private address"),
        "{err}"
    );
    let mut file = browser.subscription();
    file["endpoint"] = json!("file:///etc/passwd");
    assert_eq!(refused(file).await["code"], "INVALID_MESSAGE");
    let mut bad_key = browser.subscription();
    bad_key["keys"]["p256dh"] = json!("AAAA");
    assert!(refused(bad_key).await["message"]
        .as_str()
        .unwrap()
        .contains("p256dh"));
    let err = refused(json!({"endpoint": browser.endpoint})).await;
    assert!(
        err["message"].as_str().unwrap().contains("subscription"),
        "{err}"
    );
    // Settings for a device that never subscribed.
    phone
        .send(json!({"type": "push_events", "events": {"turns": false}}))
        .await;
    let err = phone.until_type("error").await;
    assert!(
        err["message"].as_str().unwrap().contains("push_subscribe"),
        "{err}"
    );
    let subs = chroxy::push::Subscriptions::new(&chroxy::store::Paths::under(home.chroxy()));
    assert!(subs.all().unwrap().is_empty());
    // The connection is still good.
    phone.send(json!({"type": "get_push_settings"})).await;
    assert_eq!(phone.until_type("push_settings").await["subscribed"], false);
}

#[tokio::test]
async fn a_worker_run_by_hand_says_notifications_need_a_supervisor() {
    let home = home();
    let worker = Worker::start_with(&home, WorkerOpts::fake_cli()).await;
    let mut phone = worker.client().await;
    let settings = phone.seen_or_until(|v| v["type"] == "push_settings").await;
    assert_eq!(settings["available"], false);
    assert!(settings.get("applicationServerKey").is_none());
    assert!(
        settings["reason"]
            .as_str()
            .unwrap()
            .contains("chroxy start"),
        "{settings}"
    );
    phone
        .send(json!({"type": "push_subscribe", "subscription": PushService::start().await.browser().subscription()}))
        .await;
    let err = phone.until_type("error").await;
    assert_eq!(err["code"], "PUSH_UNAVAILABLE");
}

#[tokio::test]
async fn a_rollback_and_then_failed_are_pushed_to_a_revoked_device_never() {
    let service = PushService::start().await;
    let home = Home::new();
    home.config(&format!(
        "{CRASH_FAST}[push]\nloopback_push_service = true\n"
    ));
    // Two crashing releases: a known-good one and a newer current one.
    bad_releases(&home);
    let paths = chroxy::store::Paths::under(home.chroxy());
    // The test phone subscribed earlier, from a worker that once served; a second
    // device subscribed too, then was revoked.
    let now = chroxy::protocol::now_ms();
    let phone = home.devices().list(now).unwrap()[0].id.clone();
    let other = home
        .devices()
        .add_approved(
            &chroxy::devices::DeviceKey::new("another-device-key-0123456789abcdef"),
            chroxy::devices::About::default(),
            now,
        )
        .unwrap();
    home.devices().revoke(&other.id, now).unwrap();
    let subs = chroxy::push::Subscriptions::new(&paths);
    let (mine, theirs) = (service.browser(), service.browser());
    for (device, browser) in [(&phone, &mine), (&other.id, &theirs)] {
        let sent: chroxy::protocol::PushSubscriptionJson =
            serde_json::from_value(browser.subscription()).unwrap();
        let sub =
            chroxy::push::Subscription::parse(&sent, chroxy::push::Reach::AlsoLoopback).unwrap();
        subs.subscribe(device, sub, None).unwrap();
    }

    let sup = Sup::start(
        &home,
        WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", "crash"),
    )
    .await;
    sup.wait_for("failed", |s| s["state"] == "failed").await;
    let pushes = service.until(&mine, 2).await;
    assert_eq!(kinds(&pushes), ["rolled_back", "failed"], "{pushes:?}");
    assert!(pushes.iter().all(|p| p.payload.get("sessionId").is_none()));
    assert_eq!(pushes[1].urgency, "high");
    assert!(
        service.got(&theirs).is_empty(),
        "a revoked device was pushed to"
    );
}
