//! `chroxy service`: the systemd user unit it writes, read by systemd's own verifier,
//! and its command lines run as systemd runs them (this machine has no user manager
//! to start it: the unit's environment only, `INVOCATION_ID` set, SIGTERM to stop).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use common::supervisor::{chroxy_bin, cli, Sup};
use common::{holds, Home, WorkerOpts};
use tokio::process::Command;

/// `chroxy service <args>` from a person's shell: their HOME and PATH, this home, the
/// fake CLI as their `claude`, and `config` as XDG_CONFIG_HOME.
async fn service(home: &Home, config: &Path, args: &[&str]) -> (bool, String, String) {
    let claude = WorkerOpts::fake_cli().claude.unwrap();
    let out = Command::new(chroxy_bin())
        .arg("service")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", home.user_home())
        .env("XDG_CONFIG_HOME", config)
        .env("CHROXY_HOME", home.chroxy())
        .env("CHROXY_CLAUDE", claude)
        .output()
        .await
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (out.status.success(), text(&out.stdout), text(&out.stderr))
}

/// The words of an `ExecStart=` line as systemd reads them: split at spaces outside
/// double quotes; inside, `\\` and `\"` are C escapes; `%%` and `$$` are `%` and `$`.
fn exec_words(line: &str) -> Vec<String> {
    let (mut words, mut word, mut quoted) = (Vec::new(), String::new(), false);
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' if quoted => word.extend(chars.next()),
            '%' | '$' if chars.peek() == Some(&c) => {
                chars.next();
                word.push(c);
            }
            ' ' if !quoted => words.push(std::mem::take(&mut word)),
            c => word.push(c),
        }
    }
    words.push(word);
    words.retain(|w| !w.is_empty());
    words
}

/// `Environment="KEY=value"` lines, read the same way (without `$$`: not special there).
fn environment(unit: &str) -> Vec<(String, String)> {
    unit.lines()
        .filter_map(|l| l.strip_prefix("Environment="))
        .map(|v| {
            let word = exec_words(&v.replace('$', "$$")).concat();
            let (key, value) = word.split_once('=').unwrap();
            (key.to_owned(), value.to_owned())
        })
        .collect()
}

/// `chroxy start` on this machine only, on ports of its own.
const LOCAL: [&str; 6] = ["--tunnel", "none", "--port", "0", "--status-port", "0"];

fn setting<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_unit_verifies_runs_as_systemd_runs_it_refuses_a_second_chroxy_and_stops_on_sigterm() {
    let home = Home::new();
    let config = home.dir.path().join("xdg-config");
    // A directory whose name needs every kind of quoting a unit has.
    let project = home.dir.path().join(r#"my "100%" $project \ dir"#);
    std::fs::create_dir_all(&project).unwrap();
    let install = [
        "install",
        "--no-start",
        "--cwd",
        project.to_str().unwrap(),
        "--",
    ];
    let (ok, out, err) = service(&home, &config, &[&install[..], &LOCAL].concat()).await;
    assert!(ok, "{out}{err}");
    let unit_file = config.join("systemd/user/chroxy.service");
    assert!(
        out.contains(&format!("wrote {}", unit_file.display())),
        "{out}"
    );
    assert!(out.contains("not started (--no-start)"), "{out}");
    // Run from target/: told that a rebuild would change it under the service.
    assert!(out.contains("is a build output"), "{out}");
    assert!(!out.contains("cloudflared"), "no tunnel asked for: {out}");
    let unit = std::fs::read_to_string(&unit_file).unwrap();
    assert!(!unit.contains(common::TOKEN), "no secret in the unit");

    // systemd's own verifier takes it without a word about it.
    let verify = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&unit_file)
        .output()
        .await
        .expect("systemd-analyze is missing: run ./scripts/test (systemd)");
    let said = String::from_utf8_lossy(&verify.stderr).into_owned();
    assert!(verify.status.success(), "{said}");
    assert!(!said.contains("chroxy.service"), "{said}\n{unit}");

    // Its command line, with its environment only, as systemd would run it.
    let exec = exec_words(setting(&unit, "ExecStart"));
    assert_eq!(exec[0], chroxy_bin());
    let cwd_at = exec.iter().position(|w| w == "--cwd").unwrap();
    assert_eq!(
        PathBuf::from(&exec[cwd_at + 1]),
        project.canonicalize().unwrap()
    );
    let env = environment(&unit);
    let var = |k: &str| env.iter().find(|(key, _)| key == k).map(|(_, v)| v.clone());
    assert_eq!(
        var("CHROXY_HOME"),
        Some(home.chroxy().display().to_string())
    );
    assert_eq!(
        var("CHROXY_CLAUDE").map(PathBuf::from),
        WorkerOpts::fake_cli().claude
    );
    let log = home.dir.path().join("service.log");
    let mut run = Command::new(&exec[0]);
    run.args(&exec[1..])
        .env_clear()
        .env("HOME", home.user_home())
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true);
    let mut running = run.spawn().unwrap();
    let sup = Sup::attach(&home, log.clone()).await;
    assert_eq!(sup.pid(), running.id().unwrap());
    sup.healthy().await;
    // The worker works in that directory.
    let paths = chroxy::store::Paths::under(home.chroxy());
    let worker = chroxy::supervisor::instance::running(&paths)
        .unwrap()
        .workers[0];
    let cmdline = std::fs::read(format!("/proc/{worker}/cmdline")).unwrap();
    let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
    assert!(args.contains(&project.canonicalize().unwrap().to_str().unwrap().as_bytes()));

    // A second Chroxy for the same home (the tray app, a `chroxy start`) is refused and
    // told that the service holds it, and how to stop that.
    let (second, _, err) = cli(&home, &[&["start"][..], &LOCAL].concat()).await;
    assert!(!second.success());
    assert!(err.contains("systemctl --user stop chroxy"), "{err}");

    // `systemctl stop`: SIGTERM to chroxy (KillMode=mixed), which drains and exits 0
    // within TimeoutStopSec, leaving nothing behind.
    let tree = common::descendants_of(sup.pid());
    assert!(!tree.is_empty(), "a worker and its CLI");
    let stop_timeout: u64 = setting(&unit, "TimeoutStopSec").parse().unwrap();
    assert!(
        stop_timeout > 35,
        "longer than the default drain: {stop_timeout}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sup.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let exit = tokio::time::timeout(Duration::from_secs(stop_timeout), running.wait())
        .await
        .expect("still running at TimeoutStopSec")
        .unwrap();
    assert_eq!(exit.code(), Some(0), "{}", sup.log_text());
    common::eventually_within(
        "nothing left running",
        Duration::from_secs(10),
        async || {
            let left: Vec<&u32> = tree
                .iter()
                .filter(|p| common::supervisor::alive(**p))
                .collect();
            holds(left.is_empty(), format!("{left:?}"))
        },
    )
    .await;

    // Status, then uninstall (there is no user manager here: the file goes anyway).
    let (ok, out, _) = service(&home, &config, &["status"]).await;
    assert!(
        ok && out.contains("installed:") && out.contains("runs:"),
        "{out}"
    );
    let (ok, out, err) = service(&home, &config, &["uninstall"]).await;
    assert!(ok, "{err}");
    assert!(out.contains("removed"), "{out}");
    assert!(!unit_file.exists());
    let (ok, out, _) = service(&home, &config, &["status"]).await;
    assert!(ok && out.contains("not installed"), "{out}");
}

#[tokio::test]
async fn a_bad_directory_is_refused_and_another_homes_unit_is_not_taken_over() {
    let home = Home::new();
    let config = home.dir.path().join("xdg-config");
    let missing = home.dir.path().join("no-such-dir");
    let (ok, _, err) = service(
        &home,
        &config,
        &["install", "--no-start", "--cwd", missing.to_str().unwrap()],
    )
    .await;
    assert!(!ok);
    assert!(err.contains("no-such-dir"), "{err}");
    assert!(!config.join("systemd/user/chroxy.service").exists());
    // Arguments `chroxy start` would refuse, or that the unit sets itself: refused now
    // rather than failing in a loop where nobody looks.
    let project = home.project();
    for (wrong, said) in [
        (&["--tunnel", "bogus"][..], "not `chroxy start`'s"),
        (&["--port", "many"][..], "not `chroxy start`'s"),
        (&["--cwd", "/tmp"][..], "cannot follow `--`"),
        (&["--home=/srv/x"][..], "cannot follow `--`"),
    ] {
        let args = [
            &[
                "install",
                "--no-start",
                "--cwd",
                project.to_str().unwrap(),
                "--",
            ][..],
            wrong,
        ]
        .concat();
        let (ok, _, err) = service(&home, &config, &args).await;
        assert!(!ok && err.contains(said), "{wrong:?}: {err}");
        assert!(!config.join("systemd/user/chroxy.service").exists());
    }

    let args = ["install", "--no-start", "--cwd", project.to_str().unwrap()];
    let (ok, _, err) = service(&home, &config, &args).await;
    assert!(ok, "{err}");
    let before = std::fs::read_to_string(config.join("systemd/user/chroxy.service")).unwrap();
    let other = Home::new();
    let (ok, _, err) = service(&other, &config, &args).await;
    assert!(!ok);
    assert!(err.contains("another home"), "{err}");
    let after = std::fs::read_to_string(config.join("systemd/user/chroxy.service")).unwrap();
    assert_eq!(before, after, "the first home's unit is untouched");
    // Nor removed by that other home's `uninstall`.
    let (ok, _, err) = service(&other, &config, &["uninstall"]).await;
    assert!(!ok && err.contains("another home"), "{err}");
    assert!(config.join("systemd/user/chroxy.service").exists());
}
