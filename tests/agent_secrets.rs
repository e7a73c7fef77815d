//! What a Claude Code agent that Chroxy runs can learn of Chroxy's tokens: nothing it
//! can read as the same user without going to the keyring itself (README "What an
//! attacker can do"). The real CLI against the scripted model; its own Bash tool runs a
//! probe that collects everything a process of the user can read — its environment,
//! every `/proc/*/environ` and `cmdline`, every file under the homes — and runs
//! Chroxy's own commands for the tokens. The tokens live in a private gnome-keyring,
//! as on a desktop.

mod common;

use std::path::Path;

use common::keyring::SecretService;
use common::supervisor::{chroxy_bin, cli_env, Sup};
use common::{Client, Home, Model, WorkerOpts};
use serde_json::json;

/// The commands an agent must be refused, as the probe runs them.
const REFUSED: &[&str] = &[
    "token show",
    "token show --admin",
    "pair",
    "pair --format chroxy",
    "deploy /bin/true",
    r#"rules remove "Bash(touch x)""#,
    "devices list",
    "devices approve abc234",
    // A process that would outlive the agent's session, with the machine's keys.
    "service install --no-start",
];

/// The probe script. `out` receives `env.txt` (its own environment), `proc.txt` (every
/// process's start environment and command line it can read), `files.txt` (every
/// file under `scanned`) and `commands.txt` (Chroxy's commands, the way an agent that
/// learned `CHROXY_HOME` from its worker's environment would run them).
fn probe(home: &Home, out: &Path, scanned: &[&Path]) -> String {
    let scanned: Vec<String> = scanned
        .iter()
        .map(|p| format!("'{}'", p.display()))
        .collect();
    let commands: String = REFUSED
        .iter()
        .map(|args| {
            format!(
                "echo '== {args}'; CHROXY_HOME='{home}' '{chroxy}' {args} 2>&1; echo \"exit $?\"\n",
                home = home.chroxy().display(),
                chroxy = chroxy_bin(),
            )
        })
        .collect();
    format!(
        r#"cd '{out}'
env > env.txt
for p in /proc/[0-9]*; do
  echo "== $p"
  tr '\0' '\n' < "$p/environ"
  tr '\0' ' ' < "$p/cmdline"
  echo
done > proc.txt 2>/dev/null
find {scanned} -type f -exec cat {{}} + > files.txt 2>/dev/null
{{
{commands}echo '== without the mark'
env -u {mark} CHROXY_HOME='{home}' '{chroxy}' token show 2>&1; echo "exit $?"
}} > commands.txt
"#,
        mark = chroxy::agent::MARK.0,
        out = out.display(),
        scanned = scanned.join(" "),
        home = home.chroxy().display(),
        chroxy = chroxy_bin(),
    )
}

/// `chroxy <args>` from the person's terminal (not an agent's): its output.
async fn show(home: &Home, keyring: &SecretService, args: &[&str]) -> String {
    let (ok, out, err) = cli_env(home, args, &keyring.env()).await;
    assert!(ok.success(), "{err}");
    out.trim().to_owned()
}

#[tokio::test]
async fn the_agents_own_bash_tool_finds_no_token_and_chroxy_refuses_it_the_token_commands() {
    let home = Home::new();
    let keyring = SecretService::start(&home).await;
    let model = Model::start().await;
    // From the person's own terminal the commands work (and make the tokens).
    let token = show(&home, &keyring, &["token", "show"]).await;
    let admin = show(&home, &keyring, &["token", "show", "--admin"]).await;
    assert_eq!((token.len(), admin.len()), (43, 43));

    let mut opts = WorkerOpts::real_cli(&model);
    for (k, v) in keyring.env() {
        opts = opts.env(k, v);
    }
    let sup = Sup::start(&home, opts).await;
    assert_eq!(sup.healthy().await["secretsBackend"], "keyring");
    let identity = keyring.lookup(&home, "identity-key").await;
    assert_eq!(
        identity.len(),
        43,
        "the desktop's key, made by the supervisor"
    );
    let mut phone = Client::connect(sup.public).await;
    assert_eq!(phone.auth(&token).await["type"], "auth_ok");
    phone.until_type("history_replay_end").await;

    let out = home.dir.path().join("probe");
    std::fs::create_dir(&out).unwrap();
    let logs = home.dir.path().join("logs");
    let script = home.dir.path().join("probe.sh");
    let scanned = [
        home.user_home(),
        home.chroxy(),
        home.project(),
        logs.clone(),
    ];
    let scanned: Vec<&Path> = scanned.iter().map(|p| p.as_path()).collect();
    std::fs::write(&script, probe(&home, &out, &scanned)).unwrap();
    phone
        .send(json!({"type": "input", "data": format!("PLEASE_BASH sh {}", script.display())}))
        .await;
    let prompt = phone.until_type("permission_request").await;
    phone
        .send(json!({"type": "permission_response", "requestId": prompt["requestId"], "decision": "allow"}))
        .await;
    phone.until_type("agent_idle").await;

    let ran = phone
        .seen
        .iter()
        .rev()
        .find(|v| v["type"] == "tool_result")
        .cloned();
    let read = |name: &str| {
        std::fs::read_to_string(out.join(name))
            .unwrap_or_else(|e| panic!("the probe wrote no {name} ({e}): {ran:#?}"))
    };
    let (env, procs, files, commands) = (
        read("env.txt"),
        read("proc.txt"),
        read("files.txt"),
        read("commands.txt"),
    );
    // The probe did read: other processes' start environments (the CLI's, which carries
    // the agent mark; Chroxy's own are unreadable to a process that is not root, as
    // they are non-dumpable), the homes' files (the session it runs in).
    assert!(
        procs.contains("UNDER_CHROXY=agent"),
        "no process environment read"
    );
    assert!(files.contains("PLEASE_BASH"), "no session file read");
    for (name, text) in [
        ("its environment", &env),
        ("/proc", &procs),
        ("the homes' files", &files),
        ("Chroxy's commands", &commands),
    ] {
        assert!(
            !text.contains(&token),
            "the agent found the API token in {name}"
        );
        assert!(
            !text.contains(&admin),
            "the agent found the admin token in {name}"
        );
        assert!(
            !text.contains(&identity),
            "the agent found the desktop's identity key in {name}"
        );
    }
    let private: Vec<&str> = env
        .lines()
        .filter(|l| l.starts_with("CHROXY_") || l.starts_with("TUNNEL_TOKEN="))
        .collect();
    assert!(private.is_empty(), "the agent inherited {private:?}");

    let sections: Vec<&str> = commands.split("== ").skip(1).collect();
    assert_eq!(sections.len(), REFUSED.len() + 1, "{commands}");
    for section in sections {
        assert!(
            section.contains("refused") && section.contains("Run it from your own terminal"),
            "not refused with the reason: {section}"
        );
        assert!(section.trim_end().ends_with("exit 1"), "{section}");
    }
    // Refused, not broken: the same commands still work from the person's terminal.
    assert_eq!(show(&home, &keyring, &["token", "show"]).await, token);
}
