//! Secrets in a real Secret Service: gnome-keyring in a private D-Bus session with its
//! own data directory, so the user's keyring is never touched.

mod common;

use std::path::Path;

use chroxy::channel::KeyPair;
use common::keyring::SecretService;
use common::supervisor::{cli_env, events, Sup};
use common::{Client, Home, WorkerOpts};
use nix::sys::signal::Signal;
use serde_json::Value;

async fn authenticates(port: u16, token: &str) -> bool {
    let mut c = Client::connect(port).await;
    c.auth(token).await["type"] == "auth_ok"
}

/// The desktop's key and a fresh code, from the link `chroxy pair` prints.
async fn pairing(home: &Home, keyring: &SecretService) -> ([u8; 32], String) {
    let (ok, link, err) = cli_env(home, &["pair"], &keyring.env()).await;
    assert!(ok.success(), "{err}");
    let payload = chroxy::pairing::decode_link(link.trim()).unwrap();
    let key = chroxy::channel::decode_key(payload.key.as_deref().unwrap()).unwrap();
    (key, payload.code.unwrap())
}

/// A protocol v2 phone's `auth` answer.
async fn v2(port: u16, phone: &KeyPair, server: &[u8; 32], code: Option<&str>) -> Value {
    Client::connect(port)
        .await
        .auth_v2(phone, server, code)
        .await
}

fn no_secret_files(home: &Home) {
    for name in ["token", "admin-token", "tunnel-token", "identity-key"] {
        let path = home.chroxy().join("config").join(name);
        assert!(
            !Path::new(&path).exists(),
            "{} exists: secrets belong in the keyring",
            path.display()
        );
    }
}

#[tokio::test]
async fn tokens_live_in_the_keyring_across_supervisor_runs_crashes_rollbacks_and_tunnel_failures() {
    let home = Home::new();
    home.config("[supervisor]\ncrash_budget = 2\nbackoff_cap_ms = 200\n[tunnel]\nbackoff_floor_ms = 10\nbackoff_cap_ms = 20\n");
    let keyring = SecretService::start(&home).await;
    let (ok, token, err) = cli_env(&home, &["token", "show"], &keyring.env()).await;
    assert!(ok.success(), "{err}");
    let token = token.trim().to_owned();
    assert_eq!(token.len(), 43);
    assert_eq!(keyring.lookup(&home, "token").await, token);
    no_secret_files(&home);

    // First run: the status says where secrets are; phones use the keyring's token.
    let mut sup = Sup::start(&home, keyring.opts()).await;
    let s = sup.healthy().await;
    assert_eq!(s["secretsBackend"], "keyring");
    assert!(authenticates(sup.public, &token).await);
    // The desktop's identity key is a secret like the tokens; a v2 phone pairs with it.
    let identity = keyring.lookup(&home, "identity-key").await;
    assert_eq!(identity.len(), 43);
    let (server, code) = pairing(&home, &keyring).await;
    let phone = KeyPair::generate().unwrap();
    let paired = v2(sup.public, &phone, &server, Some(&code)).await;
    assert_eq!(paired["type"], "auth_ok", "{paired}");
    assert_eq!(
        s["identity"]["fingerprint"],
        chroxy::channel::fingerprint(&server).as_str()
    );
    // The worker got the token on stdin: not on its command line (readable by every
    // process), not in its environment (readable by root here; by nobody else, as the
    // worker is non-dumpable).
    let pid = s["worker"]["pid"].as_u64().unwrap();
    for what in ["cmdline", "environ"] {
        let text = match std::fs::read(format!("/proc/{pid}/{what}")) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => continue,
            Err(e) => panic!("reading the worker's {what}: {e}"),
        };
        for secret in [&token, &identity] {
            assert!(
                !String::from_utf8_lossy(&text).contains(secret.as_str()),
                "a secret is in a worker's {what}"
            );
        }
    }
    let admin = keyring.lookup(&home, "admin-token").await;
    assert_eq!(admin.len(), 43);
    sup.signal(Signal::SIGTERM);
    sup.exited().await;

    // Second run, with everything that once lost secrets: crashes, a rollback, a tunnel
    // that dies ten times.
    let cf_state = home.dir.path().join("cf.runs");
    let cf_log = home.dir.path().join("cf.log");
    let opts = keyring
        .opts()
        .env("CHROXY_CLOUDFLARED", env!("CARGO_BIN_EXE_fake-cloudflared"))
        .env("FAKE_CF_STATE", cf_state.to_str().unwrap())
        .env("FAKE_CF_LOG", cf_log.to_str().unwrap())
        .env("FAKE_CF_DIE_RUNS", "10")
        .env("FAKE_CF_DIE_AFTER_MS", "20");
    let sup = Sup::start_args(&home, opts, &["--tunnel", "quick"]).await;
    let mut s = sup.healthy().await;
    // A crash loop: more crashes than the budget, of the known-good release, ends in
    // `failed`; then a rollback by hand.
    for round in 0..3 {
        let pid = s["worker"]["pid"].as_i64().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), Signal::SIGKILL).unwrap();
        s = if round < 2 {
            sup.wait_for("restarted", |s| {
                s["state"] == "healthy" && s["worker"]["pid"].as_i64() != Some(pid)
            })
            .await
        } else {
            sup.wait_for("failed", |s| s["state"] == "failed").await
        };
    }
    let (code, answer) = sup.post("rollback", Some(&admin), "").await;
    assert_eq!(code, 200, "{answer}");
    let s = sup
        .wait_for("the eleventh tunnel up and a worker serving", |s| {
            s["tunnel"]["state"] == "up" && s["state"] == "healthy"
        })
        .await;
    assert!(events(&s).iter().any(|(k, _)| k == "rollback"));
    assert_eq!(std::fs::read_to_string(&cf_state).unwrap().trim(), "11");
    assert_eq!(keyring.lookup(&home, "token").await, token);
    assert_eq!(keyring.lookup(&home, "admin-token").await, admin);
    assert_eq!(keyring.lookup(&home, "identity-key").await, identity);
    assert!(authenticates(sup.public, &token).await);
    let back = v2(sup.public, &phone, &server, None).await;
    assert_eq!(
        back["type"], "auth_ok",
        "the paired phone finds the same machine: {back}"
    );
    no_secret_files(&home);

    // Rotation is the one thing that replaces the token: phones must pair again.
    let (ok, out, err) = cli_env(&home, &["token", "rotate"], &keyring.env()).await;
    assert!(ok.success(), "{out}{err}");
    let rotated = keyring.lookup(&home, "token").await;
    assert_ne!(rotated, token);
    sup.wait_for("restarted with the new token", |s| {
        events(s).iter().any(|(k, _)| k == "token_rotated") && s["state"] == "healthy"
    })
    .await;
    let mut old = Client::connect(sup.public).await;
    let refused = old.auth(&token).await;
    assert_eq!(refused["type"], "auth_fail");
    assert_eq!(refused["reason"], "invalid_token");
    // Every device was revoked with it, whichever protocol it speaks; the desktop's key
    // stays, and a fresh QR pairs the phone again.
    let refused = Client::connect(sup.public).await.auth(&rotated).await;
    assert_eq!(refused["reason"], "device_refused", "{refused}");
    let refused = v2(sup.public, &phone, &server, None).await;
    assert_eq!(refused["reason"], "device_refused", "{refused}");
    assert_eq!(keyring.lookup(&home, "identity-key").await, identity);
    let (_, code) = pairing(&home, &keyring).await;
    let again = v2(sup.public, &phone, &server, Some(&code)).await;
    assert_eq!(again["type"], "auth_ok", "{again}");
    // No secret in any log line or any child's command line, old or new.
    let cf_argv = std::fs::read_to_string(&cf_log).unwrap();
    for secret in [&token, &rotated, &admin, &identity] {
        assert!(
            !sup.log_text().contains(secret.as_str()),
            "a token reached the log"
        );
        assert!(
            !cf_argv.contains(secret.as_str()),
            "a token reached cloudflared's argv"
        );
    }
}

#[tokio::test]
async fn without_a_secret_service_the_files_are_used_and_the_status_says_so() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli().env("CHROXY_TOKEN", "")).await;
    let s = sup.healthy().await;
    assert_eq!(s["secretsBackend"], "file");
    let token = std::fs::read_to_string(home.chroxy().join("config/token")).unwrap();
    assert!(authenticates(sup.public, token.trim()).await);
}
