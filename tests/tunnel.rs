//! The tunnel and pairing end to end: `chroxy start --tunnel quick|named` with
//! `fake-cloudflared` (prints what the real one prints; told by env how to misbehave).

mod common;

use std::path::PathBuf;

use common::supervisor::{cli, events, Sup};
use common::{Home, WorkerOpts, TOKEN};
use serde_json::Value;

fn fake_cloudflared(home: &Home) -> (WorkerOpts, PathBuf) {
    let log = home.dir.path().join("cloudflared.log");
    let opts = WorkerOpts::fake_cli()
        .env("CHROXY_CLOUDFLARED", env!("CARGO_BIN_EXE_fake-cloudflared"))
        .env(
            "FAKE_CF_STATE",
            home.dir.path().join("cloudflared.runs").to_str().unwrap(),
        )
        .env("FAKE_CF_LOG", log.to_str().unwrap());
    (opts, log)
}

/// Every cloudflared run: its argv and whether it got TUNNEL_TOKEN.
fn runs(log: &PathBuf) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn quick_url(run: u64) -> String {
    format!("https://tender-quiet-words-{run}.trycloudflare.com")
}

/// Lines of `out` up to and including the first that starts with `prefix`.
async fn lines_until(
    out: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    prefix: &str,
) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(common::WAIT, out.recv())
            .await
            .unwrap_or_else(|_| panic!("no line starting {prefix:?} in {seen:#?}"))
            .expect("stdout ended");
        let done = line.starts_with(prefix);
        seen.push(line);
        if done {
            return seen;
        }
    }
}

/// Starts `cmd` with its stdout on a terminal (a pseudo-terminal of this test's), as
/// when a person runs it; returns the child and the lines it prints there.
fn spawn_on_terminal(
    mut cmd: tokio::process::Command,
) -> (
    tokio::process::Child,
    tokio::sync::mpsc::UnboundedReceiver<String>,
) {
    use std::io::BufRead;
    let pty = nix::pty::openpty(None, None).unwrap();
    cmd.stdout(std::process::Stdio::from(pty.slave));
    let child = cmd.spawn().unwrap();
    // Our copy of the terminal's other end goes with `cmd`, so reading ends with the child.
    drop(cmd);
    let (tx, lines) = tokio::sync::mpsc::unbounded_channel();
    let master = std::io::BufReader::new(std::fs::File::from(pty.master));
    std::thread::spawn(move || {
        for line in master.lines() {
            let Ok(line) = line else { return };
            if tx.send(line.trim_end_matches('\r').to_owned()).is_err() {
                return;
            }
        }
    });
    (child, lines)
}

/// A supervisor with `--tunnel <mode>`, once its tunnel is up; and that status.
async fn tunnel_up(home: &Home, opts: WorkerOpts, mode: &str) -> (Sup, Value) {
    let sup = Sup::start_args(home, opts, &["--tunnel", mode]).await;
    let s = sup
        .wait_for("tunnel up", |s| s["tunnel"]["state"] == "up")
        .await;
    (sup, s)
}

/// `chroxy pair` through the CLI, as the user runs it.
async fn pair(home: &Home, format: &str) -> String {
    let (ok, out, err) = cli(home, &["pair", "--format", format]).await;
    assert!(ok.success(), "{err}");
    out.trim().to_owned()
}

#[tokio::test]
async fn a_quick_tunnel_comes_up_and_the_pairing_link_and_qr_point_at_it() {
    let home = Home::new();
    let (opts, log) = fake_cloudflared(&home);
    let (sup, s) = tunnel_up(&home, opts, "quick").await;
    assert_eq!(s["tunnel"]["mode"], "quick");
    assert_eq!(s["tunnel"]["url"], quick_url(1).as_str());
    assert!(events(&s)
        .iter()
        .any(|(k, m)| k == "tunnel" && m.contains(&quick_url(1))));

    // cloudflared points at the public port, and no secret is on its command line.
    let run = &runs(&log)[0];
    let argv: Vec<&str> = run["argv"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    let origin = format!("http://127.0.0.1:{}", sup.public);
    assert_eq!(
        argv,
        ["tunnel", "--no-autoupdate", "--url", origin.as_str()]
    );

    // The link a phone scans: the tunnel's host, the WebSocket URL and the token inside.
    let link = pair(&home, "url").await;
    assert!(
        link.starts_with(&format!("{}/#pair=", quick_url(1))),
        "{link}"
    );
    let payload = chroxy::pairing::decode_link(&link).unwrap();
    assert_eq!(
        payload.url,
        "wss://tender-quiet-words-1.trycloudflare.com/ws"
    );
    assert_eq!(
        payload.token.as_deref(),
        Some(TOKEN),
        "tokens are allowed here"
    );
    assert!(
        payload.code.is_some(),
        "a one-time pairing code rides along"
    );
    // The Chroxy app's link: the same host and token, and a one-time code of its own.
    let chroxy = pair(&home, "chroxy").await;
    let code = chroxy
        .strip_prefix(&format!(
            "chroxy://tender-quiet-words-1.trycloudflare.com?token={TOKEN}&code="
        ))
        .unwrap_or_else(|| panic!("{chroxy}"));
    assert!(
        code.len() == 32 && code.bytes().all(|b| b.is_ascii_hexdigit()),
        "{chroxy}"
    );
    assert_ne!(
        Some(code),
        payload.code.as_deref(),
        "each link has its own code"
    );
    assert!(pair(&home, "svg").await.contains("<svg"));

    // The QR decodes to exactly that link.
    let key = chroxy::channel::decode_key(payload.key.as_deref().unwrap()).unwrap();
    let pairing =
        chroxy::pairing::Pairing::new(&quick_url(1), chroxy::token::ApiToken::new(TOKEN), key)
            .unwrap()
            .allowing_tokens(true)
            .with_code(chroxy::devices::PairingCode::new(
                payload.code.clone().unwrap(),
            ));
    assert_eq!(decode_qr(&pairing), link);
    // The status page shows the URL, never the token.
    let (_, page) = common::supervisor::http(sup.status, "GET", "/api/status", &[], "").await;
    assert!(!page.contains(TOKEN));
    assert!(!sup.log_text().contains(TOKEN), "the token reached the log");
}

/// Reads a QR code the way a phone camera would: from pixels.
fn decode_qr(pairing: &chroxy::pairing::Pairing) -> String {
    let (width, dark) = pairing.modules().unwrap();
    let (scale, quiet) = (4, 4);
    let size = (width + 2 * quiet) * scale;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(size, size, |x, y| {
        let (mx, my) = (x / scale, y / scale);
        let inside = mx >= quiet && my >= quiet && mx < quiet + width && my < quiet + width;
        if inside && dark[(my - quiet) * width + (mx - quiet)] {
            0
        } else {
            255
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

#[tokio::test]
async fn a_tunnel_that_keeps_dying_comes_back_every_time_with_a_new_link_and_secrets_intact() {
    let home = Home::new();
    home.config("[tunnel]\nbackoff_floor_ms = 10\nbackoff_cap_ms = 40\n");
    let (opts, log) = fake_cloudflared(&home);
    let opts = opts
        .env("FAKE_CF_DIE_RUNS", "10")
        .env("FAKE_CF_DIE_AFTER_MS", "50");
    let sup = Sup::start_args(&home, opts, &["--tunnel", "quick"]).await;
    let token_before = std::fs::read(home.chroxy().join("config/admin-token")).unwrap();
    // Ten deaths (the fifth and the tenth among them), then the eleventh run stays up.
    let s = sup
        .wait_for("the eleventh tunnel up", |s| {
            s["tunnel"]["state"] == "up" && s["tunnel"]["url"] == quick_url(11).as_str()
        })
        .await;
    assert_eq!(runs(&log).len(), 11);
    let downs = events(&s)
        .into_iter()
        .filter(|(k, m)| k == "tunnel" && m.contains("reconnecting") && m.contains("exited"))
        .count();
    assert!(downs >= 10, "every death is an event: {:?}", events(&s));
    // A new URL is a new pairing link.
    let link = pair(&home, "url").await;
    assert!(link.starts_with(&quick_url(11)), "{link}");
    // Ten failed restarts touched no secret.
    assert_eq!(
        std::fs::read(home.chroxy().join("config/admin-token")).unwrap(),
        token_before
    );
    // The worker never noticed: same worker, no restart.
    assert_eq!(s["worker"]["restarts"], 0);
}

#[tokio::test]
async fn a_tunnel_that_shows_no_url_in_time_is_retried() {
    let home = Home::new();
    home.config("[tunnel]\nstart_timeout_ms = 300\nbackoff_floor_ms = 10\n");
    let (opts, log) = fake_cloudflared(&home);
    let sup = Sup::start_args(
        &home,
        opts.env("FAKE_CF_SILENT_RUNS", "2"),
        &["--tunnel", "quick"],
    )
    .await;
    let s = sup
        .wait_for("up on the third try", |s| s["tunnel"]["state"] == "up")
        .await;
    assert_eq!(s["tunnel"]["url"], quick_url(3).as_str());
    assert_eq!(runs(&log).len(), 3);
    assert!(
        events(&s)
            .iter()
            .any(|(k, m)| k == "tunnel" && m.contains("no tunnel within")),
        "{:?}",
        events(&s)
    );
}

#[tokio::test]
async fn without_cloudflared_the_status_says_how_to_install_it_and_the_machine_still_serves() {
    let home = Home::new();
    let opts = WorkerOpts::fake_cli().env("CHROXY_CLOUDFLARED", "/nonexistent/cloudflared");
    let sup = Sup::start_args(&home, opts, &["--tunnel", "quick"]).await;
    let s = sup
        .wait_for("tunnel down", |s| s["tunnel"]["state"] == "down")
        .await;
    let error = s["tunnel"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("cloudflared not found") && error.contains("install"),
        "{error}"
    );
    sup.healthy().await;
    sup.client().await;
}

#[tokio::test]
async fn a_named_tunnel_gets_its_token_and_no_other_secret_and_uses_the_configured_host() {
    let home = Home::new();
    home.config("[tunnel]\nhostname = \"chroxy.example.com\"\n");
    let secret = "named-tunnel-secret-0123456789";
    let mut set = tokio::process::Command::new(env!("CARGO_BIN_EXE_chroxy"))
        .args(["token", "set-tunnel"])
        .env_clear()
        .env("CHROXY_HOME", home.chroxy())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    tokio::io::AsyncWriteExt::write_all(set.stdin.as_mut().unwrap(), secret.as_bytes())
        .await
        .unwrap();
    drop(set.stdin.take());
    assert!(set.wait().await.unwrap().success());

    let (opts, log) = fake_cloudflared(&home);
    // What else the person's shell may hold: cloudflared needs the proxy, not the key.
    let opts = opts
        .env("ANTHROPIC_API_KEY", "sk-ant-not-for-cloudflared")
        .env("HTTPS_PROXY", "http://127.0.0.1:9");
    let (sup, s) = tunnel_up(&home, opts, "named").await;
    assert_eq!(s["tunnel"]["url"], "https://chroxy.example.com");
    let run = &runs(&log)[0];
    assert_eq!(run["tunnelToken"], true, "TUNNEL_TOKEN reached cloudflared");
    assert!(
        !run["argv"].to_string().contains(secret),
        "the token is on argv"
    );
    // Its environment: what it needs, and none of Chroxy's or the person's secrets.
    let env = run["env"].as_object().unwrap();
    assert_eq!(env["TUNNEL_TOKEN"], secret);
    assert_eq!(env["HTTPS_PROXY"], "http://127.0.0.1:9");
    assert_eq!(env["HOME"], home.user_home().to_str().unwrap());
    assert!(env.contains_key("PATH"));
    let leaked: Vec<&String> = env
        .keys()
        .filter(|k| {
            k.starts_with("CHROXY_") || k.starts_with("FAKE_CF_") || *k == "ANTHROPIC_API_KEY"
        })
        .collect();
    assert!(leaked.is_empty(), "cloudflared inherited {leaked:?}");
    assert!(
        !run["env"].to_string().contains(TOKEN),
        "the API token reached cloudflared"
    );
    assert!(!sup.log_text().contains(secret));
    let link = pair(&home, "url").await;
    assert!(
        link.starts_with("https://chroxy.example.com/#pair="),
        "{link}"
    );
}

#[tokio::test]
async fn force_reconnect_restarts_the_tunnel() {
    let home = Home::new();
    let (opts, log) = fake_cloudflared(&home);
    let sup = Sup::start_args(&home, opts, &["--tunnel", "quick"]).await;
    sup.wait_for("up", |s| s["tunnel"]["url"] == quick_url(1).as_str())
        .await;
    sup.healthy().await;
    let (code, _) = sup.post("reconnect", None, "").await;
    assert_eq!(code, 200);
    sup.wait_for("a new tunnel", |s| {
        s["tunnel"]["state"] == "up" && s["tunnel"]["url"] == quick_url(2).as_str()
    })
    .await;
    assert_eq!(runs(&log).len(), 2);
}

#[tokio::test]
async fn chroxy_start_prints_the_link_and_qr_when_the_tunnel_is_up_and_again_for_a_new_url() {
    let home = Home::new();
    let (opts, _log) = fake_cloudflared(&home);
    // The token from the store (not pinned by CHROXY_TOKEN), so that it can be rotated.
    let opts = opts.env("CHROXY_TOKEN", "");
    let (cmd, _stderr) = start_quick(&home, &opts);
    let (mut child, mut out) = spawn_on_terminal(cmd);
    let link_line = |run: u64| {
        format!(
            "Scan the code with your phone, or open {}/#pair=",
            quick_url(run)
        )
    };
    let seen = lines_until(&mut out, &link_line(1)).await;
    // The QR came before the link: rows of block characters.
    let qr_rows = seen
        .iter()
        .filter(|l| l.contains(['\u{2588}', '\u{2580}', '\u{2584}']))
        .count();
    assert!(qr_rows > 10, "no QR printed: {seen:?}");
    let admin = std::fs::read_to_string(home.chroxy().join("config/admin-token")).unwrap();
    // The link was printed, so the ports are bound and published.
    let paths = chroxy::store::Paths::under(home.chroxy());
    let (_, port) = common::supervisor::ports_of(&paths, child.id().unwrap()).unwrap();
    let (code, _) = common::supervisor::http(
        port,
        "POST",
        "/api/reconnect",
        &[("X-Chroxy-Admin", admin.trim())],
        "",
    )
    .await;
    assert_eq!(code, 200);
    let before = lines_until(&mut out, &link_line(2)).await;
    let token_in = |line: &str| {
        let link = line.rsplit(' ').next().unwrap();
        chroxy::pairing::decode_link(link).unwrap().token
    };
    let old_token = token_in(before.last().unwrap());
    // After a rotation the printed link carries the new token.
    let env = [("CHROXY_TOKEN", "")];
    let (ok, out_text, err) = common::supervisor::cli_env(&home, &["token", "rotate"], &env).await;
    assert!(ok.success(), "{out_text}{err}");
    let after = lines_until(&mut out, "Scan the code with your phone").await;
    let new_token = token_in(after.last().unwrap());
    assert_ne!(new_token, old_token);
    let (_, stored, _) = common::supervisor::cli_env(&home, &["token", "show"], &env).await;
    assert_eq!(new_token.as_deref(), Some(stored.trim()));
    stop_in_order(&mut child).await;
}

/// A WebSocket through `port` with extra request headers; answers the `auth` with
/// `token` and returns how long the answer took.
async fn timed_auth(
    port: u16,
    headers: &[(&str, &str)],
    token: &str,
) -> (Value, std::time::Duration) {
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        format!("ws://127.0.0.1:{port}/ws"),
    )
    .unwrap();
    for (name, value) in headers {
        req.headers_mut().insert(
            tokio_tungstenite::tungstenite::http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let (ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let mut c = common::Client {
        ws,
        seen: vec![],
        sealed: None,
    };
    let started = std::time::Instant::now();
    let answer = c.auth(token).await;
    (answer, started.elapsed())
}

#[tokio::test]
async fn only_our_own_cloudflared_is_believed_about_which_phone_it_carries() {
    let home = Home::new();
    // Wrong tokens wait 2 s, then 4 s … per address.
    home.config("[worker]\nauth_backoff_base_ms = 2000\n");
    let port_file = home.dir.path().join("edge.port");
    let (opts, _) = fake_cloudflared(&home);
    let opts = opts.env("FAKE_CF_EDGE_PORT_FILE", port_file.to_str().unwrap());
    let (sup, _) = tunnel_up(&home, opts, "quick").await;
    sup.healthy().await;
    common::eventually("the fake edge listens", async || {
        common::holds(port_file.exists(), "no port file yet")
    })
    .await;
    let edge: u16 = std::fs::read_to_string(&port_file)
        .unwrap()
        .parse()
        .unwrap();
    let base = std::time::Duration::from_millis(2000);

    // Through the tunnel, each phone has its own backoff: A's two failures do not slow B.
    let phone = |ip: &'static str| [("x-fake-client-ip", ip)];
    let (a1, _) = timed_auth(edge, &phone("203.0.113.1"), "wrong").await;
    assert_eq!(a1["reason"], "invalid_token");
    let (_, a2) = timed_auth(edge, &phone("203.0.113.1"), "wrong").await;
    assert!(a2 >= base * 2, "A's second failure waits 4 s ({a2:?})");
    let (_, b1) = timed_auth(edge, &phone("203.0.113.2"), "wrong").await;
    assert!(b1 < base * 2, "B was slowed by A's failures ({b1:?})");
    // And the right token through the tunnel is never slowed.
    let (ok, took) = timed_auth(edge, &phone("203.0.113.1"), TOKEN).await;
    assert_eq!(ok["type"], "auth_ok");
    assert!(took < base, "{took:?}");

    // Straight to the public port, the same header is anyone's claim: a new address
    // each time still pays the backoff of the real peer (127.0.0.1).
    let (_, c1) = timed_auth(sup.public, &[("cf-connecting-ip", "198.51.100.1")], "wrong").await;
    assert!(c1 >= base);
    let (_, c2) = timed_auth(sup.public, &[("cf-connecting-ip", "198.51.100.2")], "wrong").await;
    assert!(
        c2 >= base * 2,
        "rotating Cf-Connecting-Ip reset the backoff ({c2:?})"
    );
}

/// `chroxy start --tunnel quick` on OS-picked ports, as the tests of its output run it.
fn start_quick(home: &Home, opts: &WorkerOpts) -> (tokio::process::Command, PathBuf) {
    let (mut cmd, stderr) = common::chroxy_command(home, opts, "supervisor");
    cmd.args([
        "start",
        "--port",
        "0",
        "--status-port",
        "0",
        "--tunnel",
        "quick",
        "--cwd",
    ])
    .arg(home.project());
    (cmd, stderr)
}

#[tokio::test]
async fn chroxy_start_into_a_file_or_pipe_prints_no_token_and_says_how_to_pair() {
    let home = Home::new();
    let (opts, _log) = fake_cloudflared(&home);
    let opts = opts.env("CHROXY_TOKEN", "");
    let (mut cmd, stderr) = start_quick(&home, &opts);
    let stdout = home.dir.path().join("start.out");
    cmd.stdout(std::fs::File::create(&stdout).unwrap());
    let mut child = cmd.spawn().unwrap();
    let sup = Sup::attach(&home, stderr).await;
    sup.wait_for("tunnel up", |s| s["tunnel"]["url"] == quick_url(1).as_str())
        .await;
    // Up, and a pairing exists: it is either printed now (before the fix) or explained.
    let printed = || std::fs::read_to_string(&stdout).unwrap_or_default();
    common::eventually("the pairing printed or explained", async || {
        let out = printed();
        common::holds(
            out.contains("Scan the code") || out.contains("chroxy pair"),
            format!("stdout: {out:?}"),
        )
    })
    .await;
    let (ok, token, err) =
        common::supervisor::cli_env(&home, &["token", "show"], &[("CHROXY_TOKEN", "")]).await;
    assert!(ok.success(), "{err}");
    let (out, log) = (printed(), sup.log_text());
    for (name, text) in [("stdout", &out), ("stderr", &log)] {
        assert!(
            !text.contains(token.trim()),
            "the token reached {name}:\n{text}"
        );
        assert!(
            !text.contains("#pair="),
            "a pairing link reached {name}:\n{text}"
        );
    }
    assert!(
        out.contains("only to a terminal") && out.contains("chroxy pair --format terminal"),
        "{out}"
    );
    stop_in_order(&mut child).await;
}

/// SIGTERM, then the exit: a `chroxy start` stopped in order takes its cloudflared with
/// it (after a kill -9 it would be left for the next start to stop).
async fn stop_in_order(child: &mut tokio::process::Child) {
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    tokio::time::timeout(common::WAIT, child.wait())
        .await
        .expect("chroxy start stops on SIGTERM")
        .unwrap();
}

fn fake_tailscale(home: &Home) -> (WorkerOpts, PathBuf) {
    let log = home.dir.path().join("tailscale.log");
    let opts = WorkerOpts::fake_cli()
        .env("CHROXY_TAILSCALE", env!("CARGO_BIN_EXE_fake-tailscale"))
        .env(
            "FAKE_TS_STATE",
            home.dir.path().join("tailscale.runs").to_str().unwrap(),
        )
        .env("FAKE_TS_LOG", log.to_str().unwrap());
    (opts, log)
}

const TAILNET_URL: &str = "https://box.tail2527fa.ts.net";

/// `--tunnel tailscale`: Tailscale Serve in the foreground in front of the public port,
/// its fixed address in the status and the pairing link; a tailnet where Serve is not
/// enabled says so (with the link), and it comes up once it is.
#[tokio::test]
async fn tailscale_serves_the_public_port_at_its_fixed_address_and_says_what_stands_in_its_way() {
    let home = Home::new();
    home.config("[tunnel]\nbackoff_floor_ms = 10\nbackoff_cap_ms = 40\n");
    let (opts, log) = fake_tailscale(&home);
    let sup = Sup::start_args(
        &home,
        opts.env("FAKE_TS_NOT_ENABLED_RUNS", "2"),
        &["--tunnel", "tailscale"],
    )
    .await;
    let s = sup
        .wait_for("tailscale up", |s| s["tunnel"]["state"] == "up")
        .await;
    assert_eq!(s["tunnel"]["mode"], "tailscale");
    assert_eq!(s["tunnel"]["url"], TAILNET_URL);
    // The two refusals before: the reason, with the link a person follows to fix it.
    let said: Vec<String> = events(&s)
        .into_iter()
        .filter(|(k, m)| k == "tunnel" && m.contains("tailscale exited"))
        .map(|(_, m)| m)
        .collect();
    assert!(
        said.first()
            .is_some_and(|m| m.contains("Serve is not enabled on your tailnet")
                && m.contains("https://login.tailscale.com/f/serve?node=nFAKE1CNTRL")),
        "{:?}",
        events(&s)
    );
    // Serve (tailnet only), in front of the public port, nothing secret in argv.
    let runs = runs(&log);
    assert_eq!(runs.len(), 3);
    let origin = format!("http://127.0.0.1:{}", sup.public);
    assert_eq!(
        runs[2]["argv"],
        serde_json::json!(["serve", "--https=443", origin])
    );
    // The pairing link points at the tailnet address, over wss.
    let link = pair(&home, "url").await;
    assert!(link.starts_with(&format!("{TAILNET_URL}/#pair=")), "{link}");
    let payload = chroxy::pairing::decode_link(&link).unwrap();
    assert_eq!(payload.url, "wss://box.tail2527fa.ts.net/ws");
}

#[tokio::test]
async fn a_tailscale_serve_that_dies_is_started_again_at_the_same_address() {
    let home = Home::new();
    home.config("[tunnel]\nbackoff_floor_ms = 10\nbackoff_cap_ms = 40\n");
    let (opts, log) = fake_tailscale(&home);
    let opts = opts
        .env("FAKE_TS_DIE_RUNS", "3")
        .env("FAKE_TS_DIE_AFTER_MS", "50");
    let sup = Sup::start_args(&home, opts, &["--tunnel", "tailscale"]).await;
    let s = sup
        .wait_for("the fourth run up and staying", |s| {
            s["tunnel"]["state"] == "up" && runs(&log).len() == 4
        })
        .await;
    assert_eq!(s["tunnel"]["url"], TAILNET_URL);
    let died = events(&s)
        .into_iter()
        .filter(|(k, m)| k == "tunnel" && m.contains("lost connection to tailscaled"))
        .count();
    // Each death is in the events once the tunnel was seen up before it; a run that
    // dies before that (a loaded machine) leaves the state "reconnecting", said once.
    // The four runs are what proves three deaths.
    assert!(died >= 1, "{:?}", events(&s));
    assert_eq!(s["worker"]["restarts"], 0, "the worker never noticed");
}

#[tokio::test]
async fn without_tailscale_the_status_says_how_to_set_it_up() {
    let home = Home::new();
    let opts = WorkerOpts::fake_cli().env("CHROXY_TAILSCALE", "/nonexistent/tailscale");
    let sup = Sup::start_args(&home, opts, &["--tunnel", "tailscale"]).await;
    let s = sup
        .wait_for("tunnel down", |s| s["tunnel"]["state"] == "down")
        .await;
    let error = s["tunnel"]["lastError"].as_str().unwrap();
    assert!(
        error.contains("tailscale not found at /nonexistent/tailscale")
            && error.contains("tailscale up"),
        "{error}"
    );
    sup.healthy().await;
}
