//! The tray app's package, with Debian's own tools: built by `scripts/package` from the
//! binaries under test, read with dpkg-deb, installed and removed by dpkg in a root of
//! the caller's own (nothing outside it changes, and any user may).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The profile this test or bench was built in (`debug` by `cargo test`, `release` by
/// `cargo bench`), whose binaries it packages.
pub fn profile() -> String {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap();
    dir.file_name().unwrap().to_string_lossy().into_owned()
}

/// `scripts/package --prebuilt <profile>`: the .deb and .rpm of the binaries built in
/// `profile` (`debug` by `cargo test`, `release` by `cargo bench`).
pub async fn build(profile: &str) -> Vec<PathBuf> {
    let script = super::repo_root().join("scripts/package");
    let out = tokio::process::Command::new(script)
        .args(["--prebuilt", profile])
        .output()
        .await
        .expect("running scripts/package");
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "scripts/package failed:\n{said}");
    let built: Vec<PathBuf> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(PathBuf::from)
        .collect();
    assert!(
        built
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "deb")),
        "scripts/package printed no .deb:\n{said}"
    );
    built
}

/// The .deb among `built`.
pub fn deb(built: &[PathBuf]) -> &Path {
    built
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .unwrap()
}

fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A control field of the package.
pub fn field(deb: &Path, name: &str) -> String {
    run(Command::new("dpkg-deb")
        .args(["--field"])
        .arg(deb)
        .arg(name))
    .trim()
    .to_owned()
}

/// The paths the package installs.
pub fn contents(deb: &Path) -> Vec<String> {
    run(Command::new("dpkg-deb").arg("--contents").arg(deb))
        .lines()
        .filter_map(|l| l.split_whitespace().nth(5).map(str::to_owned))
        .collect()
}

/// Each package of a `Depends` field (its first alternative) is installed here.
pub fn depends_installed(depends: &str) {
    for dep in depends.split(',') {
        let package = dep
            .split('|')
            .next()
            .unwrap()
            .split('(')
            .next()
            .unwrap()
            .trim();
        let status = run(Command::new("dpkg-query").args(["-W", "-f=${Status}", package]));
        assert_eq!(status, "install ok installed", "{package} is not installed");
    }
}

/// dpkg acting on a root of its own (any user may: nothing outside `root` changes).
pub fn dpkg(root: &Path, args: &[&str]) {
    let admin = root.join("var/lib/dpkg");
    for dir in ["info", "updates"] {
        std::fs::create_dir_all(admin.join(dir)).unwrap();
    }
    std::fs::create_dir_all(root.join("var/log")).unwrap();
    for file in ["status", "available"] {
        if !admin.join(file).exists() {
            std::fs::write(admin.join(file), "").unwrap();
        }
    }
    run(Command::new("dpkg")
        .arg(format!("--root={}", root.display()))
        .arg(format!("--log={}", root.join("var/log/dpkg.log").display()))
        // Its dependencies are the machine's, checked above; not this root's.
        .args([
            "--force-not-root",
            "--force-depends",
            "--force-script-chrootless",
        ])
        .args(args)
        // dpkg looks for ldconfig and friends on PATH.
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        ));
}

/// Every file under `root` but dpkg's own records and log.
pub fn files_outside_dpkg(root: &Path) -> Vec<PathBuf> {
    fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                walk(&path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut found = Vec::new();
    walk(root, &mut found);
    found.retain(|p| {
        !p.starts_with(root.join("var/lib/dpkg")) && !p.starts_with(root.join("var/log"))
    });
    found
}
