//! `chroxy tunnel setup` as a person runs it: the token piped in, `fake-cloudflared`
//! playing the named tunnel, and the check's fetch pointed at loopback (`--check-url`,
//! hidden: the real one goes to `https://<hostname>`). Every run asserts that the
//! token reaches no output.

mod common;

use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};

use base64::Engine as _;
use common::Home;
use serde_json::Value;
use tokio::io::AsyncWriteExt;

/// A token of the dashboard's shape, its secret unique to this test file.
fn tunnel_token() -> String {
    base64::engine::general_purpose::STANDARD.encode(
        r#"{"a":"0123456789abcdef0123456789abcdef","t":"6ff42ae2-765d-4adf-8112-31c55c1551ef","s":"c2V0dXAtdGVzdC1zZWNyZXQtOTg3NjU0MzIx"}"#,
    )
}

/// What one run said.
struct Ran {
    status: ExitStatus,
    out: String,
    err: String,
}

impl Ran {
    fn all(&self) -> String {
        format!("{}\n{}", self.out, self.err)
    }
}

/// `chroxy tunnel setup <args>` on `home`, `stdin` piped in, with `fake-cloudflared`
/// (or `CHROXY_CLOUDFLARED` from `env`) and the fake's cues in `env`.
async fn setup(home: &Home, args: &[&str], stdin: &str, env: &[(&str, &str)]) -> Ran {
    let mut cmd = tokio::process::Command::new(common::chroxy_bin());
    cmd.args(["tunnel", "setup"])
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("CHROXY_HOME", home.chroxy())
        .env("HOME", home.user_home())
        .env("CHROXY_CLOUDFLARED", env!("CARGO_BIN_EXE_fake-cloudflared"))
        .env("FAKE_CF_LOG", cf_log(home))
        .env("FAKE_CF_STATE", home.dir.path().join("cloudflared.runs"))
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().unwrap();
    let mut input = child.stdin.take().unwrap();
    // A run that refuses its arguments exits before it reads the token: its closed
    // input is part of what is tested, not a failure of the test.
    match input.write_all(stdin.as_bytes()).await {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        written => written.unwrap(),
    }
    drop(input);
    let done = tokio::time::timeout(common::WAIT, child.wait_with_output())
        .await
        .expect("chroxy tunnel setup finished")
        .unwrap();
    let ran = Ran {
        status: done.status,
        out: String::from_utf8_lossy(&done.stdout).into_owned(),
        err: String::from_utf8_lossy(&done.stderr).into_owned(),
    };
    assert!(
        !ran.all().contains(&tunnel_token()) && !ran.all().contains("c2V0dXAtdGVzdC1zZWNyZXQt"),
        "the token reached the output:\n{}",
        ran.all()
    );
    ran
}

fn cf_log(home: &Home) -> PathBuf {
    home.dir.path().join("cloudflared.log")
}

fn config_file(home: &Home) -> PathBuf {
    home.chroxy().join("config/config.toml")
}

fn stored_token(home: &Home) -> Option<String> {
    let paths = chroxy::store::Paths::under(home.chroxy());
    chroxy::secrets::Secrets::files(&paths)
        .tunnel_token()
        .unwrap()
        .map(|t| t.expose().to_owned())
}

/// A port on 127.0.0.1 that was free a moment ago: the check must listen on the port
/// the Public Hostname points at, so it cannot be 0 (another test may take it in
/// between; the port range makes that unlikely).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

const CONFIG: &str = "# Chroxy settings, by hand\n[worker]\ncoalesce_ms = 20 # snappier\n\n[tunnel]\n# the start deadline I like\nstart_timeout_ms = 20000\n\n[security]\nallow_token_auth = true\n";

#[tokio::test]
async fn setup_writes_the_hostname_keeps_the_config_stores_the_token_and_proves_the_hostname_answers(
) {
    let home = Home::new();
    home.config(CONFIG);
    let port = free_port();
    let url = format!("http://127.0.0.1:{port}");
    let ran = setup(
        &home,
        &[
            "--hostname",
            "https://Chroxy.Example.com/",
            "--port",
            &port.to_string(),
            "--check-url",
            &url,
        ],
        &format!("{}\n", tunnel_token()),
        &[],
    )
    .await;
    assert!(ran.status.success(), "{}", ran.all());
    for said in [
        "Networks ▸ Tunnels",
        &format!("http://127.0.0.1:{port}"),
        "Took `https://` and the trailing `/` off",
        "Stored the tunnel token",
        "cloudflared connected the tunnel",
        &format!("Checked: {url} reaches this machine"),
        &format!("chroxy start --tunnel named --port {port}"),
    ] {
        assert!(ran.out.contains(said), "{said:?} not in:\n{}", ran.out);
    }
    let written = std::fs::read_to_string(config_file(&home)).unwrap();
    assert_eq!(
        written,
        CONFIG.replace(
            "start_timeout_ms = 20000\n",
            "start_timeout_ms = 20000\nhostname = \"chroxy.example.com\"\n"
        )
    );
    assert_eq!(stored_token(&home), Some(tunnel_token()));
    // cloudflared ran as `--tunnel named` runs it: the token in its environment only.
    let log = std::fs::read_to_string(cf_log(&home)).unwrap();
    let run: Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    assert_eq!(
        run["argv"],
        serde_json::json!(["tunnel", "--no-autoupdate", "run"])
    );
    assert_eq!(run["env"]["TUNNEL_TOKEN"], tunnel_token().as_str());
    // It was stopped with the check: nothing of it is left running.
    let pid = run["pid"].as_u64().unwrap() as i32;
    common::eventually("cloudflared gone", async || {
        common::holds(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err(),
            format!("pid {pid} still runs"),
        )
    })
    .await;

    // Run again with nothing piped in: the stored token is kept.
    let again = setup(
        &home,
        &["--hostname", "chroxy.example.com", "--no-check"],
        "",
        &[],
    )
    .await;
    assert!(again.status.success(), "{}", again.all());
    assert!(
        again.out.contains("Kept the tunnel token already stored"),
        "{}",
        again.out
    );
    assert_eq!(stored_token(&home), Some(tunnel_token()));
}

#[tokio::test]
async fn a_malformed_hostname_is_refused_by_what_is_wrong_and_nothing_is_written() {
    let home = Home::new();
    home.config(CONFIG);
    let before = std::fs::read(config_file(&home)).unwrap();
    for (hostname, says) in [
        ("https://chroxy.example.com/pair", "has a path"),
        ("chroxy example.com", "contains a space"),
        ("chroxy.example.com:8765", "has a port"),
        ("chroxy", "has no dot"),
    ] {
        let ran = setup(
            &home,
            &["--hostname", hostname, "--no-check"],
            &tunnel_token(),
            &[],
        )
        .await;
        assert!(!ran.status.success(), "{hostname}: {}", ran.all());
        assert!(ran.err.contains(says), "{hostname}: {}", ran.err);
        assert!(ran.err.contains(&format!("{hostname:?}")), "{}", ran.err);
        assert_eq!(std::fs::read(config_file(&home)).unwrap(), before);
        assert_eq!(stored_token(&home), None);
    }
}

#[tokio::test]
async fn a_token_of_the_wrong_shape_is_refused_without_being_echoed_and_nothing_is_stored() {
    let home = Home::new();
    let before = std::fs::read(config_file(&home)).unwrap();
    let not_json = base64::engine::general_purpose::STANDARD.encode("my-api-key-0123456789");
    for wrong in [
        "sk-not-a-tunnel-token-0123456789",
        not_json.as_str(),
        "https://one.dash.cloudflare.com/0123456789/networks/tunnels",
    ] {
        let ran = setup(
            &home,
            &["--hostname", "chroxy.example.com", "--no-check"],
            wrong,
            &[],
        )
        .await;
        assert!(!ran.status.success(), "{}", ran.all());
        assert!(
            ran.err.contains("not a Cloudflare tunnel token") && ran.err.contains("eyJ"),
            "{}",
            ran.err
        );
        assert!(
            !ran.all().contains(wrong),
            "the input was echoed: {}",
            ran.all()
        );
        assert!(!ran.all().contains("0123456789"), "{}", ran.all());
        assert_eq!(std::fs::read(config_file(&home)).unwrap(), before);
        assert_eq!(stored_token(&home), None);
    }
}

#[tokio::test]
async fn a_config_that_does_not_parse_is_named_and_left_byte_for_byte() {
    let home = Home::new();
    let corrupt = b"[tunnel]\nhostname = \"half\nstart_timeout_ms = 1\n[worker\n";
    std::fs::write(config_file(&home), corrupt).unwrap();
    let ran = setup(
        &home,
        &["--hostname", "chroxy.example.com", "--no-check"],
        &tunnel_token(),
        &[],
    )
    .await;
    assert!(!ran.status.success(), "{}", ran.all());
    assert!(
        ran.err.contains("is not a valid Chroxy config")
            && ran.err.contains("TOML parse error")
            && ran.err.matches("TOML parse error").count() == 1,
        "{}",
        ran.err
    );
    assert!(ran.err.contains("untouched"), "{}", ran.err);
    assert_eq!(std::fs::read(config_file(&home)).unwrap(), corrupt);
    assert_eq!(stored_token(&home), None);
}

#[tokio::test]
async fn without_cloudflared_the_check_says_where_it_looked_and_how_to_install_it() {
    let home = Home::new();
    let ran = setup(
        &home,
        &[
            "--hostname",
            "chroxy.example.com",
            "--port",
            &free_port().to_string(),
        ],
        &tunnel_token(),
        &[("CHROXY_CLOUDFLARED", "/nonexistent/cloudflared")],
    )
    .await;
    assert!(!ran.status.success(), "{}", ran.all());
    assert!(
        ran.err.contains("/nonexistent/cloudflared")
            && ran.err.contains("CHROXY_CLOUDFLARED")
            && ran.err.contains("install cloudflared"),
        "{}",
        ran.err
    );
    assert!(!ran.out.contains("Checked:"), "{}", ran.out);
    // What was entered is kept: the next run needs only Enter.
    assert_eq!(stored_token(&home), Some(tunnel_token()));
}

#[tokio::test]
async fn a_cloudflared_that_refuses_the_token_is_reported_with_its_words_and_never_the_token() {
    let home = Home::new();
    let port = free_port();
    let ran = setup(
        &home,
        &[
            "--hostname",
            "chroxy.example.com",
            "--port",
            &port.to_string(),
            "--check-url",
            &format!("http://127.0.0.1:{port}"),
        ],
        &tunnel_token(),
        &[("FAKE_CF_REFUSE_RUNS", "1")],
    )
    .await;
    assert!(!ran.status.success(), "{}", ran.all());
    assert!(
        ran.err.contains("cloudflared exited")
            && ran.err.contains("Provided Tunnel token is not valid")
            && ran.err.contains("token=[tunnel token]"),
        "{}",
        ran.err
    );
    assert!(!ran.out.contains("Checked:"), "{}", ran.out);
}

#[tokio::test]
async fn a_hostname_answered_by_another_server_fails_the_check_by_name() {
    let home = Home::new();
    // Someone else's site: it answers every path, and never with our nonce.
    let other = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let other_url = format!("http://127.0.0.1:{}", other.local_addr().unwrap().port());
    let elsewhere = axum::Router::new().fallback(|| async { "hello from another server" });
    let server = tokio::spawn(async move { axum::serve(other, elsewhere).await });
    let port = free_port();
    let ran = setup(
        &home,
        &[
            "--hostname",
            "chroxy.example.com",
            "--port",
            &port.to_string(),
            "--check-url",
            &other_url,
        ],
        &tunnel_token(),
        &[],
    )
    .await;
    server.abort();
    assert!(!ran.status.success(), "{}", ran.all());
    assert!(
        ran.err.contains("points somewhere else")
            && ran.err.contains(&other_url)
            && ran.err.contains("was not shown to reach this machine"),
        "{}",
        ran.err
    );
    assert!(!ran.out.contains("Checked:"), "{}", ran.out);
}

#[tokio::test]
async fn a_port_held_by_another_program_is_named_with_the_way_around_it() {
    let home = Home::new();
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = held.local_addr().unwrap().port().to_string();
    let ran = setup(
        &home,
        &["--hostname", "chroxy.example.com", "--port", &port],
        &tunnel_token(),
        &[],
    )
    .await;
    assert!(!ran.status.success(), "{}", ran.all());
    assert!(
        ran.err
            .contains(&format!("port {port} on 127.0.0.1 is taken"))
            && ran.err.contains("--no-check"),
        "{}",
        ran.err
    );
    // cloudflared was never started.
    assert!(!cf_log(&home).exists());
}
