//! Source builds in tests: git on a scratch repository, a crate that builds in seconds
//! into a release that really serves, and what cargo needs to run under a test's
//! temporary HOME.

use std::path::{Path, PathBuf};
use std::process::Command as StdCommand;

use super::WorkerOpts;

pub fn git(repo: &Path, args: &[&str]) -> String {
    let out = StdCommand::new("git")
        .arg("-C")
        .arg(repo)
        .args([
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "-c",
            "commit.gpgsign=false",
        ])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Commits everything in `repo`; the new commit's id.
pub fn commit_all(repo: &Path, message: &str) -> String {
    git(repo, &["add", "--all"]);
    git(repo, &["commit", "-q", "-m", message]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// What cargo needs to find its toolchain and the downloaded crates: the test's HOME is
/// a temporary one, so they are named (a user's supervisor finds them under ~).
pub fn toolchain_env(opts: WorkerOpts) -> WorkerOpts {
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let var = |name: &str, default: PathBuf| std::env::var_os(name).map_or(default, PathBuf::from);
    let mut opts = opts
        .env(
            "CARGO_HOME",
            var("CARGO_HOME", home.join(".cargo")).to_str().unwrap(),
        )
        .env(
            "RUSTUP_HOME",
            var("RUSTUP_HOME", home.join(".rustup")).to_str().unwrap(),
        );
    if let Ok(toolchain) = std::env::var("RUSTUP_TOOLCHAIN") {
        opts = opts.env("RUSTUP_TOOLCHAIN", &toolchain);
    }
    opts
}

/// A crate whose `chroxy` binary runs the `chroxy` under test: built by the pipeline in
/// seconds, and a release that really serves. `answer` is what its library's unit test
/// (the default check) wants from `fn answer`, which says 42.
pub fn wrapper_crate(repo: &Path, answer: u32) {
    let write = |file: &str, text: String| {
        let path = repo.join(file);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    };
    write(
        "Cargo.toml",
        "[package]\nname = \"chroxy\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[workspace]\n"
            .into(),
    );
    write(
        "Cargo.lock",
        "version = 4\n\n[[package]]\nname = \"chroxy\"\nversion = \"0.1.0\"\n".into(),
    );
    write(".gitignore", "/target\n".into());
    write(
        "src/main.rs",
        format!(
            "use std::os::unix::process::CommandExt;\n\
             const REAL: &str = {:?};\n\
             fn main() {{\n    \
                 let err = std::process::Command::new(REAL).args(std::env::args_os().skip(1)).exec();\n    \
                 eprintln!(\"cannot run {{REAL}}: {{err}}\");\n    \
                 std::process::exit(127);\n\
             }}\n",
            super::chroxy_bin()
        ),
    );
    write(
        "src/lib.rs",
        format!("pub fn answer() -> u32 {{ 42 }}\n#[test]\nfn answers() {{ assert_eq!(answer(), {answer}); }}\n"),
    );
}

/// `repo` made a git repository holding [`wrapper_crate`], committed.
pub fn wrapper_repo(repo: &Path) {
    git(repo, &["init", "-q"]);
    wrapper_crate(repo, 42);
    commit_all(repo, "a wrapper");
}
