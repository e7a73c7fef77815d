//! What the environment says (README "Environment"): `CHROXY_TOKEN`, `CHROXY_CLAUDE`,
//! `CHROXY_CLOUDFLARED`, and where the `chroxy` program workers run is. Read here, in
//! one place, by the shells' launchers (`chroxy start`, `chroxy worker`, `chroxy
//! doctor`, the tray app), so each variable means the same everywhere.

use std::path::PathBuf;

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
    let beside = std::env::current_exe()
        .map_err(LaunchError::ThisProgram)?
        .with_file_name("chroxy");
    if beside.is_file() {
        return Ok(beside);
    }
    which::which("chroxy").map_err(|_| LaunchError::NoWorkerBinary { beside })
}
