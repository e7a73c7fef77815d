//! What the environment says (README "Environment"): `CHROXY_TOKEN`, `CHROXY_CLAUDE`,
//! `CHROXY_CLOUDFLARED`, and where the `chroxy` program workers run is. Read here, in
//! one place, by the shells' launchers (`chroxy start`, `chroxy worker`, `chroxy
//! doctor`, the tray app), so each variable means the same everywhere.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use super::LaunchError;
use crate::config::WorkerConfig;
use crate::token::ApiToken;

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

fn env_path(key: &str) -> Option<PathBuf> {
    std::env::var_os(key)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The `chroxy` program workers run (it has the `worker` command), for a shell that is
/// not it (the tray app): beside this program, as the release build and the packages
/// install it, else on `PATH`.
pub fn worker_binary() -> Result<PathBuf, LaunchError> {
    let this_program = std::env::current_exe().map_err(LaunchError::ThisProgram)?;
    worker_binary_for(&this_program, std::env::var_os("PATH"))
}

/// [`worker_binary`] for `this_program`, with `path` as `PATH`.
fn worker_binary_for(this_program: &Path, path: Option<OsString>) -> Result<PathBuf, LaunchError> {
    let beside = this_program.with_file_name("chroxy");
    if beside.is_file() {
        return Ok(beside);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    which::which_in("chroxy", path, cwd).map_err(|_| LaunchError::NoWorkerBinary { beside })
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

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
}
