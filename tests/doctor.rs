//! `chroxy doctor` as a user meets it.

mod common;

use common::supervisor::{cli_env, Sup};
use common::{claude_bin, Home, WorkerOpts};

#[tokio::test]
async fn without_claude_and_cloudflared_doctor_names_both_with_how_to_install_them_and_fails() {
    let home = Home::new();
    let (ok, out, err) = cli_env(
        &home,
        &["doctor", "--port", "0", "--status-port", "0"],
        &[
            ("CHROXY_CLAUDE", "/nonexistent/claude"),
            ("CHROXY_CLOUDFLARED", "/nonexistent/cloudflared"),
        ],
    )
    .await;
    assert!(!ok.success(), "{out}");
    let line = |name: &str| {
        out.lines()
            .find(|l| l.split_whitespace().nth(1) == Some(name))
            .unwrap_or_else(|| panic!("no `{name}` line in:\n{out}"))
            .to_owned()
    };
    let claude = line("claude");
    assert!(
        claude.starts_with("FAIL") && claude.contains("npm install -g @anthropic-ai/claude-code"),
        "{claude}"
    );
    let cloudflared = line("cloudflared");
    assert!(
        cloudflared.starts_with("FAIL") && cloudflared.contains("install cloudflared"),
        "{cloudflared}"
    );
    assert!(
        line("secrets").starts_with("warn"),
        "no session bus: file fallback is a warning"
    );
    assert!(line("files").starts_with("ok"));
    assert!(err.contains("2 check(s) failed"), "{err}");
}

#[tokio::test]
async fn with_everything_in_place_doctor_passes_and_sees_the_running_supervisor() {
    let home = Home::new();
    let sup = Sup::start(&home, WorkerOpts::fake_cli()).await;
    let fingerprint = sup.healthy().await["identity"]["fingerprint"].clone();
    let claude = claude_bin();
    let (ok, out, err) = cli_env(
        &home,
        &["doctor"],
        &[
            ("CHROXY_CLAUDE", claude.to_str().unwrap()),
            ("CHROXY_CLOUDFLARED", env!("CARGO_BIN_EXE_fake-cloudflared")),
        ],
    )
    .await;
    assert!(ok.success(), "{out}{err}");
    assert!(
        out.contains("Claude Code") || out.contains("claude"),
        "{out}"
    );
    assert!(out.contains(&format!("pid {}", sup.pid())), "{out}");
    // The key a person compares with the phone's: the one the supervisor serves.
    let fingerprint = fingerprint.as_str().unwrap();
    assert_eq!(fingerprint.len(), 19, "{fingerprint}");
    assert!(
        out.contains(&format!("this machine's key is {fingerprint}")),
        "{out}"
    );
    assert!(
        out.contains(&format!("{} and {}", sup.public, sup.status)),
        "{out}"
    );
}

#[tokio::test]
async fn a_named_tunnel_hostname_without_its_token_is_pointed_at_tunnel_setup() {
    let home = Home::new();
    home.config("[tunnel]\nhostname = \"chroxy.example.com\"\n");
    let (_, out, _) = cli_env(
        &home,
        &["doctor", "--port", "0", "--status-port", "0"],
        &[("CHROXY_CLOUDFLARED", env!("CARGO_BIN_EXE_fake-cloudflared"))],
    )
    .await;
    let line = out
        .lines()
        .find(|l| l.contains("named tunnel"))
        .unwrap_or_else(|| panic!("no named tunnel line in:\n{out}"));
    assert!(
        line.starts_with("warn")
            && line.contains("no tunnel token is stored")
            && line.contains("chroxy tunnel setup"),
        "{line}"
    );
}
