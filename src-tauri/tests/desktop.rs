//! The tray app end to end, as a user meets it: the real app on a virtual display with
//! its own D-Bus session, driven through tauri-driver + WebKitWebDriver; the real
//! supervisor and worker inside it, the real Claude Code CLI answering from the
//! scripted model, `fake-cloudflared` for the tunnel. Screenshots of every state go to
//! `target/test-output/desktop*/`.

#[path = "../../tests/common/mod.rs"]
mod common;

use common::desktop::{app_args, clipboard, window_shown, Desk, TrayMenu};
use common::package;
use common::supervisor::{
    bad_releases, bad_worker_bin, chroxy_bin, cli, cli_at_terminal, events, fake_cloudflared_bin,
    Sup, CRASH_FAST,
};
use common::x11::{self, Picture};
use common::{eventually, holds, Home, Model, WorkerOpts};
use serde_json::Value;

/// The window's QR (or copied link) and `chroxy pair` name the same machine and token,
/// each with a one-time code of its own.
fn same_pairing(shown: &str, printed: &str) {
    let (a, b) = (
        chroxy::pairing::decode_link(shown).expect("the window's QR is a pairing link"),
        chroxy::pairing::decode_link(printed).unwrap(),
    );
    assert_eq!((&a.url, &a.token), (&b.url, &b.token), "the same pairing");
    assert!(
        a.code.is_some() && b.code.is_some() && a.code != b.code,
        "a code each"
    );
}

/// The link in a screenshot's QR code.
fn qr_in(png: &[u8]) -> String {
    let decoder = png::Decoder::new(std::io::Cursor::new(png));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let frame = reader.next_frame(&mut buf).unwrap();
    let step = frame.color_type.samples();
    let grey = buf[..frame.buffer_size()]
        .chunks_exact(step)
        .map(|px| {
            let px = &px[..3.min(step)];
            (px.iter().map(|&c| c as u32).sum::<u32>() / px.len() as u32) as u8
        })
        .collect();
    let picture = Picture {
        width: frame.width as usize,
        height: frame.height as usize,
        grey,
    };
    picture.qr().expect("one QR code in the window")
}

/// The tray icon's colours (icons/src/glyph.svg.in, scripts/icons).
const GREEN: [u8; 3] = [0x16, 0xa3, 0x4a];
const RED: [u8; 3] = [0xdc, 0x26, 0x26];

/// `document.getElementById(id).<prop>` as JSON.
fn js_of(id: &str, prop: &str) -> String {
    format!("return document.getElementById('{id}').{prop}")
}

fn look_is(look: &str) -> String {
    format!("return document.getElementById('look').classList.contains('{look}')")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_window_pairs_rolls_back_reconnects_and_follows_the_worker() {
    let home = Home::new();
    // A long canary window keeps a deploy un-promoted (so there is something to roll
    // back from); slow backoffs make the in-between states last long enough to see.
    home.config(
        "[supervisor]\ncanary_window_ms = 600000\nbackoff_floor_ms = 2500\n\
         [tunnel]\nbackoff_floor_ms = 5000\n[deploy]\nprofile = \"dev\"\n",
    );
    let model = Model::start().await;
    let desk = Desk::start(&home).await;
    // What the script deploys: a source tree, built by the app's supervisor.
    let source = home.dir.path().join("source");
    std::fs::create_dir_all(&source).unwrap();
    common::deploy::wrapper_repo(&source);
    let opts = common::deploy::toolchain_env(WorkerOpts::real_cli(&model))
        .env("CHROXY_CLOUDFLARED", fake_cloudflared_bin())
        .env(
            "FAKE_CF_STATE",
            home.dir.path().join("cf-runs").to_str().unwrap(),
        )
        // The first tunnel dies at once: the window starts on "tunnel down".
        .env("FAKE_CF_DIE_RUNS", "1");
    let project = home.project();
    let app = desk
        .drive(&home, &opts, &app_args("quick", &project), "desktop")
        .await;
    let w = &app.window;
    let sup = Sup::attach(&home, app.log.clone()).await;

    // Worker healthy, tunnel not up: the tunnel-down look, and no QR to scan yet.
    w.until("the tunnel-down look", &look_is("tunnel-down"))
        .await;
    w.until(
        "no QR while the tunnel has no URL",
        "return !document.querySelector('#qr svg') && !document.getElementById('waiting').hidden",
    )
    .await;
    w.shot("1-tunnel-down").await;

    // The tunnel comes up: healthy, with the QR of `chroxy pair`'s link.
    w.until(
        "healthy with a QR code",
        &format!(
            "{} && !!document.querySelector('#qr svg')",
            look_is("healthy")
        ),
    )
    .await;
    let png = w.shot("2-healthy").await;
    let (ok, pair, err) = cli(&home, &["pair"]).await;
    assert!(ok.success(), "{err}");
    let link = pair.trim();
    assert!(link.contains(".trycloudflare.com/#pair="), "{link}");
    same_pairing(&qr_in(&png), link);
    assert_eq!(
        w.js(&js_of("public-url", "textContent")).await,
        Value::String(link.split("/#").next().unwrap().to_owned()),
        "the public URL, without the token"
    );
    // A quick tunnel's address: the window says it will not survive a restart.
    let note = w
        .js("const n = document.getElementById('address-note'); return n.hidden ? '' : n.textContent")
        .await;
    assert!(
        note.as_str()
            .is_some_and(|n| n.contains("changes each time Chroxy starts")),
        "{note}"
    );
    assert_eq!(w.js(&js_of("phones", "textContent")).await, "0");
    assert_eq!(
        w.js(&js_of("secrets", "textContent"))
            .await
            .as_str()
            .map(|s| s.contains("file") || s.contains("keyring")),
        Some(true)
    );

    // The machine's key, as phones pin it and show it; tokens are refused by default,
    // but this home lets the test's v1 phone in, and the window says so.
    let status = sup.healthy().await;
    let fingerprint = status["identity"]["fingerprint"].as_str().unwrap();
    w.until(
        "the key's fingerprint, and the warning that tokens are let in",
        &format!(
            "return document.getElementById('fingerprint').textContent === {} && !document.getElementById('token-auth').hidden",
            Value::String(fingerprint.into())
        ),
    )
    .await;

    // A phone with only the token waits; one click in the window lets it in, and the
    // window's own code (scanned by another phone) pairs at once and is replaced.
    let mut stranger = common::Client::connect(sup.public).await;
    stranger
        .send(serde_json::json!({"type": "auth", "token": common::TOKEN,
            "deviceInfo": {"deviceName": "stranger's phone"}}))
        .await;
    let pending = stranger.recv().await;
    assert_eq!(pending["reason"], "device_pending", "{pending}");
    let (id, key) = (
        pending["deviceId"].as_str().unwrap(),
        pending["deviceKey"].as_str().unwrap(),
    );
    let approve = format!("#device-list li[data-device='{id}'] button[data-decision=approve]");
    w.until(
        "the waiting device in the window",
        &format!(
            "return !!document.querySelector({})",
            Value::String(approve.clone())
        ),
    )
    .await;
    w.js(&format!(
        "document.querySelector({}).scrollIntoView({{block: 'center'}}); return true",
        Value::String(approve.clone())
    ))
    .await;
    w.shot("2b-device-waiting").await;
    w.click(&approve).await;
    // The click is a command on its way to the supervisor: the phone comes back once the
    // window shows the device approved (it offers Revoke then), as its owner would see.
    w.until(
        "the device shown approved",
        &format!(
            "return !!document.querySelector({})",
            Value::String(format!(
                "#device-list li[data-device='{id}'] button[data-decision=revoke]"
            ))
        ),
    )
    .await;
    let mut back = common::Client::connect(sup.public).await;
    back.send(serde_json::json!({"type": "auth", "token": common::TOKEN, "deviceKey": key}))
        .await;
    assert_eq!(
        back.recv().await["type"],
        "auth_ok",
        "approved with a click"
    );
    // The owner names it in the window; it shows as connected while it is.
    let item = Value::String(format!("#device-list li[data-device='{id}']"));
    w.click(&format!(
        "{} button[data-decision=rename]",
        item.as_str().unwrap()
    ))
    .await;
    w.js(&format!(
        "const i = document.querySelector({item} + ' input'); i.value = \"Anna's phone\"; \
         i.dispatchEvent(new Event('input')); i.form.requestSubmit(); return true"
    ))
    .await;
    w.until(
        "the new name, and connected now",
        &format!(
            "const t = document.querySelector({item})?.textContent ?? ''; \
             return t.startsWith(\"Anna's phone (\") && t.includes('connected now')"
        ),
    )
    .await;
    let (_, listed, _) = cli(&home, &["devices", "list"]).await;
    assert!(listed.contains("Anna's phone"), "{listed}");
    w.js("window.scrollTo(0, 0); return true").await;
    let shown = w.js(&js_of("qr", "dataset.link")).await;
    let code = chroxy::pairing::decode_link(shown.as_str().unwrap())
        .unwrap()
        .code
        .unwrap();
    let mut scanned = common::Client::connect(sup.public).await;
    scanned
        .send(serde_json::json!({"type": "auth", "token": common::TOKEN, "pairingCode": code}))
        .await;
    assert_eq!(
        scanned.recv().await["type"],
        "auth_ok",
        "the window's code pairs"
    );
    w.until(
        "a fresh code on screen once that one is used",
        &format!(
            "return document.getElementById('qr').dataset.link !== {}",
            shown
        ),
    )
    .await;

    // Deploy a source tree from a script (no terminal): the window shows its build, then
    // it waits for a click in the window, and nothing changes until then.
    let before = sup.healthy().await;
    let known_good = before["releases"]["knownGood"].as_str().unwrap().to_owned();
    let (ok, out, err) = cli(&home, &["deploy", "--source", source.to_str().unwrap()]).await;
    assert!(
        ok.success() && out.contains("awaits approval"),
        "{out}{err}"
    );
    let waiting = out
        .lines()
        .find(|l| l.contains("awaits approval"))
        .and_then(|l| l.split_once("release "))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap()
        .to_owned();
    w.until(
        "the window shows the build and its steps",
        &format!(
            "const t = document.getElementById('build').textContent; return !document.getElementById('build-row').hidden && t.includes('for a script: built') && /store +passed/.test(t) && t.includes('release {waiting} awaits approval')"
        ),
    )
    .await;
    w.until(
        "the window asks for approval of the deploy",
        &format!(
            "return !document.getElementById('pending').hidden && document.getElementById('pending-text').textContent.includes('Release {waiting}')"
        ),
    )
    .await;
    w.shot("2b-deploy-awaits-approval").await;
    let held = sup.status().await;
    assert_eq!(held["worker"]["pid"], before["worker"]["pid"]);
    assert_eq!(held["releases"]["current"], known_good.as_str());
    // Approved in the window: it serves as a canary; "Roll back" brings back known-good.
    w.click("#approve-deploy").await;
    w.until(
        "the request is answered",
        "return document.getElementById('pending').hidden",
    )
    .await;
    let deployed = sup
        .wait_for("the canary serving", |s| {
            s["state"] == "healthy"
                && s["releases"]["current"] != known_good.as_str()
                && s["worker"]["release"] == s["releases"]["current"]
        })
        .await;
    let canary = deployed["releases"]["current"].as_str().unwrap().to_owned();
    w.until(
        "the window lists the canary as current",
        &format!("return document.getElementById('current').textContent === '{canary}'"),
    )
    .await;
    w.until(
        "the window says the canary is on trial",
        &format!(
            "const t = document.getElementById('canary').textContent; return t.includes('release {canary} on trial') && t.includes('0 of 10 errors')"
        ),
    )
    .await;
    // The releases are below the fold of the small window: the shot shows them.
    w.js("document.getElementById('canary').scrollIntoView({block: 'center'}); return true")
        .await;
    w.shot("3-canary").await;
    w.click("#rollback").await;
    let rolled = sup
        .wait_for("known-good serving again", |s| {
            s["state"] == "healthy"
                && s["releases"]["current"] == known_good.as_str()
                && s["worker"]["release"] == known_good.as_str()
        })
        .await;
    assert!(
        events(&rolled)
            .iter()
            .any(|(k, m)| k == "rollback" && m.contains(&canary)),
        "{rolled}"
    );
    w.until(
        "the window shows known-good as current",
        &format!("return document.getElementById('current').textContent === '{known_good}'"),
    )
    .await;
    w.until(
        "the answer of the rollback",
        "return document.getElementById('answer').className === 'ok'",
    )
    .await;
    w.until(
        "no canary after the rollback",
        "return document.getElementById('canary').textContent === '—'",
    )
    .await;
    w.js("document.getElementById('canary').scrollIntoView({block: 'center'}); return true")
        .await;
    w.shot("4-rolled-back").await;
    // Back to the top: the next shots read the QR code.
    w.js("window.scrollTo(0, 0); return true").await;

    // Force reconnect: a connected phone is told to reconnect, the tunnel restarts
    // (a quick tunnel has a new URL then: the QR follows), the phone gets back in.
    let mut phone = sup.client().await;
    let first_page = link.split('#').next().unwrap().to_owned();
    w.click("#reconnect").await;
    let bye = phone.until_type("server_shutdown").await;
    assert_eq!(bye["reason"], "restart", "{bye}");
    assert!(phone.closed().await.is_some(), "the socket is closed");
    let mut again = sup.client_coming_back().await;
    again.send(serde_json::json!({"type": "ping"})).await;
    again.until_type("pong").await;
    w.until(
        "a new QR for the new tunnel URL",
        &format!(
            "const q = document.getElementById('qr'); return !!q.querySelector('svg') && q.dataset.link.split('#')[0] !== {}",
            Value::String(first_page.clone())
        ),
    )
    .await;
    // The clicks above scrolled the window down to the devices; the QR is at the top.
    w.js("window.scrollTo(0, 0); return true").await;
    let png = w.shot("5-reconnected").await;
    let (_, pair, _) = cli(&home, &["pair"]).await;
    assert!(!pair.trim().starts_with(&first_page));
    same_pairing(&qr_in(&png), pair.trim());
    drop(again);

    // The worker is killed: its standby takes over at once, and the strip shows it
    // serving, never "restarting".
    let serving = sup
        .wait_for("the standby to be ready", |s| s["standby"]["ready"] == true)
        .await;
    let pid = serving["worker"]["pid"].as_u64().unwrap() as i32;
    let standby = serving["standby"]["pid"].as_u64().unwrap() as i32;
    let restarts = serving["worker"]["restarts"].as_u64().unwrap() + 1;
    let kill = |pid: i32| {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap()
    };
    kill(pid);
    w.until(
        "the strip shows the standby serving",
        &format!(
            "{} && document.getElementById('worker-state').textContent.includes('pid {standby},') && document.getElementById('worker-state').textContent.includes('{restarts} restarts')",
            look_is("healthy")
        ),
    )
    .await;
    w.shot("6-taken-over").await;
    // Killed again before it is steady: restarted after the backoff, as ever.
    kill(standby);
    w.until(
        "the strip says restarting",
        &format!(
            "{} && document.getElementById('worker-state').textContent.startsWith('restarting')",
            look_is("restarting")
        ),
    )
    .await;
    w.shot("7-restarting").await;
    let restarts = restarts + 1;
    w.until(
        "the strip shows the new worker",
        &format!(
            "{} && !document.getElementById('worker-state').textContent.includes('pid {standby},') && document.getElementById('worker-state').textContent.includes('{restarts} restarts')",
            look_is("healthy")
        ),
    )
    .await;
    w.shot("8-back").await;

    // The admin token stays hidden until asked for.
    let admin = sup.admin();
    assert_ne!(
        w.js(&js_of("admin-token", "textContent")).await,
        admin.as_str()
    );
    w.click("#admin-toggle").await;
    w.until(
        "the admin token shown",
        &format!("return document.getElementById('admin-token').textContent === '{admin}'"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_is_red_and_both_buttons_still_act() {
    let home = Home::new();
    home.config(CRASH_FAST);
    // Known-good and current are both releases that crash at once.
    let paths = chroxy::store::Paths::under(home.chroxy());
    let releases = chroxy::supervisor::release::Releases::open(&paths);
    releases
        .ensure_installed(std::path::Path::new(chroxy_bin()))
        .unwrap();
    let good = releases
        .add(std::path::Path::new(bad_worker_bin()))
        .unwrap();
    releases.set_known_good(&good.id).unwrap();
    let (ok, out, err) = cli_at_terminal(&home, &["deploy", bad_worker_bin()]).await;
    assert!(ok.success(), "{out}{err}");

    let desk = Desk::start(&home).await;
    let opts = WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", "crash");
    let project = home.project();
    let app = desk
        .drive(&home, &opts, &app_args("none", &project), "desktop-failed")
        .await;
    let w = &app.window;
    let sup = Sup::attach(&home, app.log.clone()).await;
    let failed = sup.wait_for("failed", |s| s["state"] == "failed").await;
    assert!(
        events(&failed).iter().any(|(k, _)| k == "rollback"),
        "{failed}"
    );
    w.until(
        "the failed look with the reason",
        &format!(
            "{} && !document.getElementById('reason').hidden && document.getElementById('reason').textContent.includes('known-good')",
            look_is("failed")
        ),
    )
    .await;
    w.shot("1-failed").await;
    let menu = TrayMenu::find(&desk.bus, sup.pid()).await;
    assert_eq!(menu.icon_colour().await, RED, "failed: the red icon");
    // What happened since `t`: the events are a bounded list, so go by their time.
    let since = |s: &Value, t: u64| -> Vec<String> {
        s["events"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["at"].as_u64().unwrap() >= t)
            .map(|e| e["kind"].as_str().unwrap().to_owned())
            .collect()
    };
    let acted_then_tried = |s: &Value, t: u64, kind: &str| {
        let after = since(s, t);
        let acted = after.iter().position(|k| k == kind);
        acted.is_some_and(|i| after[i..].iter().any(|k| k == "worker_exited"))
    };
    let last_at = |s: &Value| {
        s["events"].as_array().unwrap().last().unwrap()["at"]
            .as_u64()
            .unwrap()
            + 1
    };

    // Force reconnect with no worker: it starts one (which crashes again here).
    let t = last_at(&failed);
    w.click("#reconnect").await;
    w.until(
        "the answer says a worker is starting",
        "return document.getElementById('answer').textContent.includes('starting one now')",
    )
    .await;
    sup.wait_for("a worker started after the reconnect", |s| {
        acted_then_tried(s, t, "reconnect")
    })
    .await;
    // Roll back: answered, and acted on (the known-good release is started again).
    let t = last_at(
        &sup.wait_for("failed again", |s| s["state"] == "failed")
            .await,
    );
    w.until(
        "the rollback button can be pressed",
        "return !document.getElementById('rollback').disabled",
    )
    .await;
    // The reconnect's answer is still shown: clear it, so the rollback's is the one read.
    w.js("const a = document.getElementById('answer'); a.textContent = ''; a.className = ''; return true")
        .await;
    w.click("#rollback").await;
    w.until(
        "the rollback answered",
        "return document.getElementById('answer').textContent !== ''",
    )
    .await;
    let answer = w.js("const a = document.getElementById('answer'); return a.className + ': ' + a.textContent").await;
    assert!(
        answer
            .as_str()
            .is_some_and(|a| a.starts_with("ok: rolling back to release")),
        "{answer}"
    );
    sup.wait_for("a worker started after the rollback", |s| {
        acted_then_tried(s, t, "rollback")
    })
    .await;
    w.shot("2-failed-after-buttons").await;
}

/// A fake `xdg-open` first on PATH: records what the app asks the desktop to open
/// (a browser or file manager has no place in a test).
fn recording_opener(home: &Home) -> (String, std::path::PathBuf) {
    let bin = home.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = home.dir.path().join("opened.txt");
    let script = bin.join("xdg-open");
    std::fs::write(
        &script,
        format!("#!/bin/sh\necho \"$@\" >> '{}'\n", log.display()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (path, log)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tray_menu_acts_a_second_launch_focuses_the_first_and_quit_drains_a_running_turn() {
    let home = Home::new();
    home.config("[tunnel]\nbackoff_floor_ms = 100\n");
    let model = Model::start().await;
    let desk = Desk::start(&home).await;
    let (path, opened) = recording_opener(&home);
    let opts = WorkerOpts::real_cli(&model)
        .env("PATH", &path)
        .env("CHROXY_CLOUDFLARED", fake_cloudflared_bin())
        .env(
            "FAKE_CF_STATE",
            home.dir.path().join("cf-runs").to_str().unwrap(),
        );
    let project = home.project();
    let mut args = app_args("quick", &project);
    args.push("--minimized");
    let (mut cmd, log) = desk.command(&home, &opts, &args);
    let mut app = cmd.spawn().unwrap();
    let app_pid = app.id().unwrap();
    let sup = Sup::attach(&home, log.clone()).await;
    assert_eq!(sup.pid(), app_pid, "the supervisor runs inside the app");
    sup.wait_for("healthy with the tunnel up", |s| {
        s["state"] == "healthy" && s["tunnel"]["state"] == "up"
    })
    .await;
    let menu = TrayMenu::find(&desk.bus, app_pid).await;

    // Every item is there.
    let labels: Vec<String> = menu.entries().await.into_iter().map(|e| e.label).collect();
    for want in [
        "Show window",
        "Show QR code",
        "Copy pairing link",
        "Force reconnect",
        "Roll back to known-good",
        "Restart worker",
        "Tunnel",
        "Quick (trycloudflare.com)",
        "Named (your hostname)",
        "None (this machine only)",
        "Start at login",
        "Open status page",
        "Open logs",
        "Quit Chroxy",
    ] {
        assert!(
            labels.iter().any(|l| l == want),
            "no `{want}` in {labels:?}"
        );
    }
    assert_eq!(
        menu.entry("Quick (trycloudflare.com)").await.toggle,
        Some(1)
    );
    assert_eq!(menu.icon_colour().await, GREEN, "healthy: the green icon");
    // The panel shows no tooltip: the menu's first line says the state, and a line
    // before Quit the version, as `chroxy --version` does.
    assert_eq!(labels[0], "Healthy · 0 phones · tunnel up", "{labels:?}");
    let version = format!("Chroxy {} (", env!("CARGO_PKG_VERSION"));
    assert!(labels.iter().any(|l| l.starts_with(&version)), "{labels:?}");

    // Started minimized: no window until asked for.
    assert!(!window_shown(&desk.display, "Chroxy").await);
    menu.click("Show window").await;
    eventually("the window shows", async || {
        holds(window_shown(&desk.display, "Chroxy").await, "hidden")
    })
    .await;

    // Restart worker: a new worker process.
    let before = sup.healthy().await;
    let old_pid = before["worker"]["pid"].as_u64().unwrap();
    menu.click("Restart worker").await;
    sup.wait_for("a new healthy worker", |s| {
        s["state"] == "healthy" && s["worker"]["pid"].as_u64().is_some_and(|p| p != old_pid)
    })
    .await;

    // Force reconnect: the phone is told to reconnect.
    let mut phone = sup.client().await;
    eventually("the status line counts the phone", async || {
        let first = menu.entries().await.into_iter().next().map(|e| e.label);
        holds(
            first.as_deref() == Some("Healthy · 1 phone · tunnel up"),
            format!("{first:?}"),
        )
    })
    .await;
    menu.click("Force reconnect").await;
    let bye = phone.until_type("server_shutdown").await;
    assert_eq!(bye["reason"], "restart", "{bye}");

    // Roll back to known-good: the supervisor rolls back (here onto the same release).
    menu.click("Roll back to known-good").await;
    sup.wait_for("a requested rollback", |s| {
        events(s)
            .iter()
            .any(|(k, m)| k == "rollback" && m.contains("requested"))
    })
    .await;
    sup.healthy().await;

    // Tunnel ▸ None: local only, remembered for the next start; then back to quick.
    menu.click("None (this machine only)").await;
    sup.wait_for("no tunnel", |s| s["tunnel"]["mode"] == "none")
        .await;
    eventually("the None item checked", async || {
        let entries = menu.entries().await;
        let toggle = |label| entries.iter().find(|e| e.label == label)?.toggle;
        holds(
            toggle("None (this machine only)") == Some(1)
                && toggle("Quick (trycloudflare.com)") == Some(0),
            format!("{entries:?}"),
        )
    })
    .await;
    let saved = home.chroxy().join("state/desktop.json");
    assert!(
        std::fs::read_to_string(&saved)
            .unwrap()
            .contains("\"none\""),
        "the choice is remembered"
    );
    menu.click("Quick (trycloudflare.com)").await;
    sup.wait_for("the quick tunnel up again", |s| {
        s["tunnel"]["mode"] == "quick" && s["tunnel"]["state"] == "up"
    })
    .await;
    // Tunnel ▸ Named, with no hostname configured: the supervisor refuses it and says
    // what to add; the quick tunnel keeps serving, Quick stays checked and remembered.
    menu.click("Named (your hostname)").await;
    eventually("the refusal, said", async || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        holds(
            text.contains("a named tunnel needs its hostname"),
            "no refusal in the log",
        )
    })
    .await;
    eventually("Quick still checked", async || {
        let entries = menu.entries().await;
        let toggle = |label| entries.iter().find(|e| e.label == label)?.toggle;
        holds(
            toggle("Named (your hostname)") == Some(0)
                && toggle("Quick (trycloudflare.com)") == Some(1),
            format!("{entries:?}"),
        )
    })
    .await;
    assert!(std::fs::read_to_string(&saved)
        .unwrap()
        .contains("\"quick\""));
    let s = sup.status().await;
    assert_eq!(s["tunnel"]["mode"], "quick", "{s}");

    // Start at login: an autostart entry that starts the app minimized, and back off.
    // (auto-launch writes under $HOME/.config, whatever XDG_CONFIG_HOME says.) Its name
    // is the one earlier versions wrote: an entry a person turned on stays theirs.
    let autostart = home.user_home().join(".config/autostart");
    menu.click("Start at login").await;
    eventually("an autostart entry", async || {
        let entry = std::fs::read_to_string(autostart.join("Chroxy.desktop"));
        holds(
            entry.is_ok_and(|t| t.contains("--minimized")),
            format!(
                "no Chroxy.desktop starting --minimized in {}",
                autostart.display()
            ),
        )
    })
    .await;
    eventually("Start at login checked", async || {
        let toggle = menu.entry("Start at login").await.toggle;
        holds(toggle == Some(1), format!("{toggle:?}"))
    })
    .await;
    menu.click("Start at login").await;
    eventually("the autostart entry gone", async || {
        let left: Vec<_> = std::fs::read_dir(&autostart)
            .map(|d| d.flatten().map(|f| f.path()).collect())
            .unwrap_or_default();
        holds(left.is_empty(), format!("{left:?}"))
    })
    .await;

    // Open status page / Open logs: handed to the desktop's opener.
    menu.click("Open status page").await;
    menu.click("Open logs").await;
    let status_url = format!("http://127.0.0.1:{}/", sup.status);
    let logs = home.chroxy().join("logs");
    eventually("both opened", async || {
        let text = std::fs::read_to_string(&opened).unwrap_or_default();
        holds(
            text.contains(&status_url) && text.contains(logs.to_str().unwrap()),
            format!("opened: {text:?}"),
        )
    })
    .await;
    // What that folder holds tells the worker's side too, not only the supervisor's.
    eventually("the worker's own lines in the tray's log", async || {
        let text: String = std::fs::read_dir(&logs)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|f| std::fs::read_to_string(f.path()).ok())
            .collect();
        let forwarded = text
            .lines()
            .any(|l| l.contains(" worker: ") && l.contains("worker ready"));
        holds(forwarded, format!("{} bytes of log", text.len()))
    })
    .await;

    // Copy pairing link: on the clipboard, the link `chroxy pair` prints (for a phone
    // that cannot scan: paste it into a message to yourself).
    menu.click("Copy pairing link").await;
    let (ok, pair, err) = cli(&home, &["pair"]).await;
    assert!(ok.success(), "{err}");
    eventually("a pairing link on the clipboard", async || {
        let copied = clipboard(&desk.display).await;
        let link = chroxy::pairing::decode_link(copied.trim());
        holds(
            link.is_some(),
            format!("{} bytes on the clipboard", copied.len()),
        )
    })
    .await;
    same_pairing(clipboard(&desk.display).await.trim(), pair.trim());

    // Show QR code: the window (still) shows.
    menu.click("Show QR code").await;
    eventually("the window shows", async || {
        holds(window_shown(&desk.display, "Chroxy").await, "hidden")
    })
    .await;

    // Quit with a turn running: the phone is told, the turn is saved, exit 0, and no
    // process of the app's is left.
    let mut phone = sup.client().await;
    phone
        .send(serde_json::json!({"type": "input", "data": "SLOW 100 one two three four five six"}))
        .await;
    phone.until(|v| v["type"] == "agent_busy").await;
    let tree = common::descendants_of(app_pid);
    assert!(tree.len() >= 3, "worker, claude, cloudflared: {tree:?}");
    menu.click("Quit Chroxy").await;
    let notice = phone.until_type("server_shutdown").await;
    assert_eq!(notice["reason"], "shutdown", "{notice}");
    let exit = tokio::time::timeout(common::WAIT, app.wait())
        .await
        .expect("the app did not exit after Quit")
        .unwrap();
    assert_eq!(
        exit.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Processes reparented at the app's exit may need a moment to see it and go.
    let left = || -> Vec<String> {
        tree.iter()
            .filter(|p| common::supervisor::alive(**p))
            .map(|p| {
                let cmd = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
                format!("{p} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
            })
            .collect()
    };
    common::eventually_within(
        "nothing left running after Quit",
        std::time::Duration::from_secs(10),
        async || {
            let left = left();
            holds(left.is_empty(), format!("{left:?}"))
        },
    )
    .await;
    let saved: String = common::supervisor::files_under(&home.sessions_dir())
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        saved.contains("SLOW 100 one two three"),
        "the running turn was not saved"
    );

    // Started again (minimized), it comes up clean; a second launch hands over to it
    // and exits 0, and the first shows its window.
    let (mut cmd, log) = desk.command(&home, &opts, &args);
    let mut app = cmd.spawn().unwrap();
    let app_pid = app.id().unwrap();
    let sup = Sup::attach(&home, log.clone()).await;
    sup.healthy().await;
    // Its tray item is up (and must go with it).
    TrayMenu::find(&desk.bus, app_pid).await;
    assert!(!window_shown(&desk.display, "Chroxy").await);
    let (mut second, second_log) = desk.command(&home, &opts, &args);
    let exit = tokio::time::timeout(common::WAIT, second.status())
        .await
        .expect("the second launch did not exit")
        .unwrap();
    assert_eq!(
        exit.code(),
        Some(0),
        "{}",
        std::fs::read_to_string(&second_log).unwrap_or_default()
    );
    eventually("the first window shows", async || {
        holds(window_shown(&desk.display, "Chroxy").await, "hidden")
    })
    .await;
    assert!(
        std::fs::read_to_string(&log)
            .unwrap()
            .contains("a second launch asked for the window"),
        "the first instance heard the second"
    );
    assert_eq!(
        sup.status().await["state"],
        "healthy",
        "one supervisor, undisturbed"
    );
    // SIGTERM (a logout, `kill`) stops it as Quit does.
    sup.signal(nix::sys::signal::Signal::SIGTERM);
    let exit = tokio::time::timeout(common::WAIT, app.wait())
        .await
        .expect("the app did not exit after SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0));
    eventually("its tray item gone with it", async || {
        holds(
            TrayMenu::try_find_on(&desk.bus, app_pid).await.is_none(),
            "still on the bus",
        )
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_chroxy_already_running_the_window_says_so_instead_of_a_second_supervisor() {
    let home = Home::new();
    let cli_sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    cli_sup.healthy().await;
    let desk = Desk::start(&home).await;
    let project = home.project();
    let app = desk
        .drive(
            &home,
            &WorkerOpts::fake_cli(),
            &app_args("none", &project),
            "desktop-conflict",
        )
        .await;
    let w = &app.window;
    w.until(
        "the error naming the running supervisor",
        &format!(
            "{} && !document.getElementById('error').hidden && document.getElementById('error').textContent.includes('{}')",
            look_is("failed"),
            cli_sup.pid()
        ),
    )
    .await;
    assert_eq!(w.js(&js_of("rollback", "disabled")).await, true);
    assert_eq!(w.js(&js_of("reconnect", "disabled")).await, true);
    w.shot("1-already-running").await;
    // The running one is untouched.
    assert_eq!(cli_sup.status().await["state"], "healthy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_chroxy_binary_the_window_says_what_to_build() {
    let home = Home::new();
    // The app (and its window) alone in a directory, and no `chroxy` on PATH.
    let alone = home.dir.path().join("alone");
    std::fs::create_dir_all(&alone).unwrap();
    let app_bin = alone.join("chroxy-desktop");
    let installed = std::path::Path::new(common::desktop::desktop_bin());
    std::fs::copy(installed, &app_bin).unwrap();
    let window = installed.with_file_name("chroxy-desktop-window");
    std::fs::copy(window, alone.join("chroxy-desktop-window")).unwrap();
    assert!(
        which::which("chroxy").is_err(),
        "a chroxy on the test's PATH"
    );
    let desk = Desk::start(&home).await;
    let app = desk
        .drive_app(
            app_bin.to_str().unwrap(),
            &home,
            &WorkerOpts::fake_cli(),
            &["--port", "0", "--status-port", "0", "--tunnel", "none"],
            "desktop-no-chroxy",
        )
        .await;
    app.window
        .until(
            "the error saying what is missing and how to get it",
            &format!(
                "{} && document.getElementById('error').textContent.includes('neither beside') && document.getElementById('error').textContent.includes('cargo build --release -p chroxy')",
                look_is("failed")
            ),
        )
        .await;
    app.window.shot("1-no-chroxy").await;
}

/// A desktop that shows no tray icons (no StatusNotifierWatcher: stock GNOME): an app
/// started `--minimized` (at login) would be invisible with no way to open it, so it
/// shows its window, and says why in its log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_tray_on_the_desktop_minimized_still_shows_the_window() {
    let home = Home::new();
    let desk = Desk::without_tray(&home).await;
    let (mut app, sup) = desk.at_login(&home, &WorkerOpts::fake_cli()).await;
    sup.healthy().await;
    eventually("the window shows", async || {
        holds(window_shown(&desk.display, "Chroxy").await, "hidden")
    })
    .await;
    let said = sup.log_text();
    assert!(said.contains("shows no tray icons"), "{said}");
    stops_on_sigterm(&mut app, &said).await;
}

/// SIGTERM (a logout) stops the app in order: exit status 0.
async fn stops_on_sigterm(app: &mut tokio::process::Child, said: &str) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(app.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = tokio::time::timeout(common::WAIT, app.wait())
        .await
        .expect("the app did not stop on SIGTERM")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{said}");
}

/// The desk hears of what the phones hear of that needs a person there: a rollback the
/// supervisor made by itself, and `failed`. A click on the notification opens the
/// window of an app that sat in the tray.
#[tokio::test]
async fn a_rollback_and_failed_show_on_the_desktop_and_a_click_opens_the_window() {
    let home = Home::new();
    home.config(CRASH_FAST);
    // Known-good and current are both releases that crash at once.
    bad_releases(&home);

    let mut desk = Desk::clicking(&home).await;
    let opts = WorkerOpts::fake_cli().env("CHROXY_BAD_MODE", "crash");
    let (mut app, sup) = desk.at_login(&home, &opts).await;
    let host = desk.tray_host.as_mut().unwrap();
    let said = || sup.log_text();
    let first = host
        .notified()
        .await
        .unwrap_or_else(|| panic!("no desktop notification; the app said:\n{}", said()));
    assert_eq!(first["summary"], "Chroxy rolled back a release", "{first}");
    assert!(
        first["actions"]
            .as_array()
            .unwrap()
            .contains(&Value::from("default")),
        "a notification one can click: {first}"
    );
    let second = host
        .notified()
        .await
        .unwrap_or_else(|| panic!("no second notification; the app said:\n{}", said()));
    assert_eq!(second["summary"], "Chroxy stopped serving", "{second}");
    sup.wait_for("failed", |s| s["state"] == "failed").await;
    // The app started in the tray; the click brought its window up.
    eventually("the window shows", async || {
        holds(window_shown(&desk.display, "Chroxy").await, "hidden")
    })
    .await;
    let said = said();
    assert!(
        said.contains("a desktop notification was clicked"),
        "{said}"
    );
    stops_on_sigterm(&mut app, &said).await;
}

/// The app spends its life in the tray, so it holds no webview there: started
/// minimized it has no window and no WebKit process; Show window makes one that shows
/// the QR code; its close button ends the window's process and every WebKit process
/// with it while the supervisor serves on; Show QR code makes it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_closed_window_leaves_no_webkit_behind_and_comes_back_with_its_qr() {
    let home = Home::new();
    let desk = Desk::start(&home).await;
    let (mut app, sup) = desk.at_login(&home, &WorkerOpts::fake_cli()).await;
    let worker = sup.healthy().await["worker"]["pid"].clone();
    let menu = TrayMenu::find(&desk.bus, sup.pid()).await;
    assert_eq!(
        common::window_of(sup.pid()),
        Vec::<u32>::new(),
        "a window's process or WebKit running with no window"
    );
    // The window's process and everything it started (WebKit's page and network
    // processes): none of it may stay behind a closed window.
    let webkit = || common::window_of(sup.pid());
    let (ok, pair, err) = cli(&home, &["pair"]).await;
    assert!(ok.success(), "{err}");
    let display = &desk.display.name;

    for item in ["Show window", "Show QR code"] {
        menu.click(item).await;
        let shown = eventually("the window shows a QR code", async || {
            let said = || format!("the app said:\n{}", sup.log_text());
            let picture = x11::picture(display, "Chroxy")
                .ok_or_else(|| format!("no window shown; {}", said()))?;
            picture
                .qr()
                .ok_or_else(|| format!("no QR code in it; {}", said()))
        })
        .await;
        same_pairing(&shown, pair.trim());
        assert!(!webkit().is_empty(), "a window with no WebKit?");

        // A close button clicked in the window's first instants can go unheard (tao
        // wires up a window's events just after showing it): a person clicks again,
        // and so does this, until no window is left to close.
        eventually("the window, its process and WebKit's gone", async || {
            let shown = x11::close(display, "Chroxy");
            let left = webkit();
            holds(
                left.is_empty() && shown == 0,
                format!(
                    "after {item}: windows still shown: {shown}, the window's processes: {left:?}; the app said:\n{}",
                    sup.log_text()
                ),
            )
        })
        .await;
        // The app and its worker carry on.
        assert!(app.try_wait().unwrap().is_none(), "the app exited");
        assert_eq!(sup.healthy().await["worker"]["pid"], worker);
    }
    let said = sup.log_text();
    stops_on_sigterm(&mut app, &said).await;
}

/// The package as a person installs it: `scripts/package` bundles this build's binaries
/// into a .deb; dpkg installs it (into a root of the test's own: a test never installs
/// into the machine's `/usr`) and the installed app, started from there, runs workers
/// with the `chroxy` installed beside it, shows a QR code that pairs and a healthy
/// status page, records its installed path for Start at login, and stops on SIGTERM;
/// `dpkg -r` then leaves no file behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_deb_installs_pairs_and_removes_without_a_trace() {
    let home = Home::new();
    let built = package::build(&package::profile()).await;
    let deb = package::deb(&built);
    let name = package::field(deb, "Package");
    let files = package::contents(deb);
    for wanted in [
        "usr/bin/chroxy-desktop",
        "usr/bin/chroxy-desktop-window",
        "usr/bin/chroxy",
        "usr/share/applications/Chroxy.desktop",
    ] {
        assert!(files.iter().any(|f| f == wanted), "{wanted} in {files:?}");
    }
    for size in [
        "16x16", "24x24", "32x32", "48x48", "64x64", "128x128", "256x256", "512x512",
    ] {
        let icon = format!("usr/share/icons/hicolor/{size}/apps/chroxy-desktop.png");
        assert!(files.contains(&icon), "{icon} in {files:?}");
    }
    // Everything it depends on is a package this machine has (the app ran here).
    package::depends_installed(&package::field(deb, "Depends"));

    let root = home.dir.path().join("root");
    package::dpkg(&root, &["--install", deb.to_str().unwrap()]);
    let installed = root.join("usr/bin/chroxy-desktop");
    let beside = root.join("usr/bin/chroxy");
    assert!(installed.is_file() && beside.is_file());
    let entry =
        std::fs::read_to_string(root.join("usr/share/applications/Chroxy.desktop")).unwrap();
    assert!(entry.contains("Exec=chroxy-desktop"), "{entry}");

    let desk = Desk::start(&home).await;
    let project = home.project();
    let app = desk
        .drive_app(
            installed.to_str().unwrap(),
            &home,
            &WorkerOpts::fake_cli(),
            &app_args("none", &project),
            "desktop-installed",
        )
        .await;
    let w = &app.window;
    w.until("a QR code", "return !!document.querySelector('#qr svg')")
        .await;
    let png = w.shot("1-installed").await;
    let (ok, pair, err) = cli(&home, &["pair"]).await;
    assert!(ok.success(), "{err}");
    same_pairing(&qr_in(&png), pair.trim());
    let sup = Sup::attach(&home, app.log.clone()).await;
    let status = sup.healthy().await;
    // The worker is the installed `chroxy`: run from there, or from the release store
    // it was copied into (not one found elsewhere, such as a build tree's).
    let worker = status["worker"]["pid"].as_u64().expect("a worker pid") as u32;
    let running = std::fs::read_link(format!("/proc/{worker}/exe")).unwrap();
    assert!(
        running == beside
            || (running.starts_with(home.chroxy())
                && std::fs::read(&running).unwrap() == std::fs::read(&beside).unwrap()),
        "the worker runs {}, not the chroxy installed beside the app",
        running.display()
    );

    // Start at login starts the installed app, not a build tree's.
    let menu = TrayMenu::find(&desk.bus, sup.pid()).await;
    menu.click("Start at login").await;
    let autostart = home.user_home().join(".config/autostart");
    let exec = eventually("an autostart entry", async || {
        let found = std::fs::read_dir(&autostart)
            .ok()
            .and_then(|d| d.flatten().next())
            .and_then(|f| std::fs::read_to_string(f.path()).ok());
        found.ok_or(format!("nothing in {}", autostart.display()))
    })
    .await;
    assert!(
        exec.lines()
            .any(|l| l.starts_with("Exec=") && l.contains(installed.to_str().unwrap())),
        "{exec}"
    );

    // SIGTERM (a logout): the app and everything it started are gone.
    let pid = nix::unistd::Pid::from_raw(sup.pid() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    eventually("the app and its worker stop", async || {
        let left: Vec<u32> = [sup.pid(), worker]
            .into_iter()
            .filter(|p| std::path::Path::new(&format!("/proc/{p}")).exists())
            .collect();
        holds(left.is_empty(), format!("still running: {left:?}"))
    })
    .await;
    drop(app);

    package::dpkg(&root, &["--remove", &name]);
    let left = package::files_outside_dpkg(&root);
    assert!(left.is_empty(), "left behind by dpkg -r: {left:?}");
}
