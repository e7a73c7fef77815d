//! What the environment says (README "Environment"): `CHROXY_TOKEN`, `CHROXY_CLAUDE`,
//! `CHROXY_CLOUDFLARED`, the session directory, and where the `chroxy` program workers
//! run is. Read here, in one place, by everything that starts something (`chroxy start`,
//! `chroxy worker`, `chroxy doctor`, `chroxy pair`, the tray app), so each variable means
//! the same everywhere. A leaf: it knows the settings, the token and the secrets, and
//! nothing that runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::config::WorkerConfig;
use crate::secrets::{Secrets, SecretsError};
use crate::token::ApiToken;

/// What the environment names is not there.
#[derive(Debug, thiserror::Error)]
pub enum EnvironmentError {
    /// The session directory does not exist.
    #[error("the session directory {0} does not exist")]
    NoSessionDir(PathBuf),
    /// This program's own path is unknown, so the `chroxy` beside it cannot be found.
    #[error("cannot find this program: {0}")]
    ThisProgram(#[source] std::io::Error),
    /// No `chroxy` program to run workers with.
    #[error("the `chroxy` program (it runs the workers) is neither beside {} nor on PATH; build it with `cargo build --release -p chroxy`", beside.display())]
    NoWorkerBinary {
        /// Where it was looked for first.
        beside: PathBuf,
    },
}

/// The variable both programs (`chroxy` and the tray app) take their log filter from:
/// `CHROXY_LOG=debug`, or per module, `CHROXY_LOG=info,chroxy::supervisor=debug`.
pub const LOG_FILTER: &str = "CHROXY_LOG";

/// Whether log lines on stderr are coloured: only on a terminal, and never while
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
pub fn log_colour(stderr_is_terminal: bool) -> bool {
    colour(stderr_is_terminal, std::env::var_os("NO_COLOR"))
}

fn colour(terminal: bool, no_color: Option<OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// `CHROXY_TOKEN`, when set and not blank: a person's choice (then visible to the whole
/// process tree, README "Environment"), pinned for this run (rotation cannot apply).
pub fn env_token() -> Option<ApiToken> {
    std::env::var("CHROXY_TOKEN")
        .ok()
        .filter(|t| !t.trim().is_empty())
        .map(|t| ApiToken::new(t.trim()))
}

/// The Claude Code CLI to run: `CHROXY_CLAUDE`, else the config's `claude` (else, later,
/// `PATH`).
pub fn claude_binary(config: &WorkerConfig) -> Option<PathBuf> {
    env_path("CHROXY_CLAUDE").or_else(|| config.claude.clone())
}

/// The `cloudflared` to run: `CHROXY_CLOUDFLARED` (else, at each start, `PATH`).
pub fn cloudflared_binary() -> Option<PathBuf> {
    env_path("CHROXY_CLOUDFLARED")
}

/// The `tailscale` to run: `CHROXY_TAILSCALE` (else, at each start, `PATH`).
pub fn tailscale_binary() -> Option<PathBuf> {
    env_path("CHROXY_TAILSCALE")
}

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The `chroxy` program workers run (it has the `worker` command), for a shell that is
/// not it (the tray app): beside this program, as the release build and the packages
/// install it, else on `PATH`.
pub fn worker_binary() -> Result<PathBuf, EnvironmentError> {
    let this_program = std::env::current_exe().map_err(EnvironmentError::ThisProgram)?;
    worker_binary_for(&this_program, std::env::var_os("PATH"))
}

/// [`worker_binary`] for `this_program`, with `path` as `PATH`.
fn worker_binary_for(
    this_program: &Path,
    path: Option<OsString>,
) -> Result<PathBuf, EnvironmentError> {
    let beside = this_program.with_file_name("chroxy");
    if beside.is_file() {
        return Ok(beside);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    which::which_in("chroxy", path, cwd).map_err(|_| EnvironmentError::NoWorkerBinary { beside })
}

/// `--cwd`, or the current directory, as an absolute path that exists.
pub fn session_dir(cwd: Option<PathBuf>) -> Result<PathBuf, EnvironmentError> {
    let cwd = match cwd {
        Some(dir) => dir,
        None => std::env::current_dir().map_err(|_| EnvironmentError::NoSessionDir(".".into()))?,
    };
    cwd.canonicalize()
        .map_err(|_| EnvironmentError::NoSessionDir(cwd))
}

/// `CHROXY_TOKEN` (how the supervisor hands it to a worker: in the environment, never on
/// a command line, where every user of the machine could read it), else the stored one.
pub fn api_token(secrets: &Secrets) -> Result<ApiToken, SecretsError> {
    match env_token() {
        Some(token) => Ok(token),
        None => secrets.api_token(),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn logs_are_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(
            colour(true, Some(OsString::new())),
            "NO_COLOR= (empty) is unset"
        );
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None), "a pipe or a file");
    }

    fn executable(path: &Path) {
        std::fs::write(path, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    #[test]
    fn the_workers_chroxy_is_the_one_beside_the_app_else_the_one_on_path() {
        let dir = tempfile::tempdir().unwrap();
        let (app_dir, bin_dir) = (dir.path().join("app"), dir.path().join("bin"));
        std::fs::create_dir_all(&app_dir).unwrap();
        std::fs::create_dir_all(&bin_dir).unwrap();
        let app = app_dir.join("chroxy-desktop");
        let on_path = || Some(OsString::from(&bin_dir));

        let err = worker_binary_for(&app, on_path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the `chroxy` program (it runs the workers) is neither beside {} nor on PATH; build it with `cargo build --release -p chroxy`",
                app_dir.join("chroxy").display()
            )
        );
        executable(&bin_dir.join("chroxy"));
        assert_eq!(
            worker_binary_for(&app, on_path()).unwrap(),
            bin_dir.join("chroxy")
        );
        executable(&app_dir.join("chroxy"));
        assert_eq!(
            worker_binary_for(&app, on_path()).unwrap(),
            app_dir.join("chroxy")
        );
    }

    #[test]
    fn a_session_directory_that_does_not_exist_is_named() {
        let err = session_dir(Some("/nonexistent/project".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the session directory /nonexistent/project does not exist"
        );
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(
            session_dir(Some(dir.path().into())).unwrap(),
            dir.path().canonicalize().unwrap()
        );
    }
}
