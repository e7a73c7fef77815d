//! What an agent's process tree inherits from Chroxy, and how Chroxy's own commands tell
//! that they run inside one. An agent runs whatever commands the model asks for, as the
//! same user: it must start without Chroxy's settings or secrets (`CHROXY_*`,
//! `TUNNEL_TOKEN`), and `chroxy token show`, `pair`, `deploy`… run by its tools must be
//! refused rather than hand it the tokens.
//!
//! The mark is a variable in the agent's start environment. A tool can unset it for
//! itself, but not in its ancestors' `/proc/<pid>/environ`, which is what is checked.
//! A process that escapes the tree (a double fork re-parents it to init) escapes the
//! check too: this is a seat belt, not a wall (README "What an attacker can do").

use std::ffi::OsStr;

use tokio::process::Command;

use super::AgentEnv;

/// Set in every agent's start environment. Not `CHROXY_*`: an agent sees none of those.
pub const MARK: (&str, &str) = ("UNDER_CHROXY", "agent");

/// How far up the process tree to look: far more than any shell nesting, and a bound
/// against a cycle in a racing `/proc`.
const MAX_DEPTH: usize = 64;

/// Whether the variable `name` is Chroxy's own, or a secret Chroxy hands on, which an
/// agent must not inherit.
pub(crate) fn is_private(name: &OsStr) -> bool {
    // Upper-cased: on Windows `chroxy_token` is the same variable.
    let name = name.to_string_lossy().to_ascii_uppercase();
    name.starts_with("CHROXY_") || name == "TUNNEL_TOKEN"
}

/// `cmd` without the private variables this process has, except those named in `keep`:
/// for a program that is not an agent but needs none of Chroxy's secrets either (the
/// tray app's window, the desktop's opener and the browser it starts).
pub(crate) fn withhold_private(cmd: &mut tokio::process::Command, keep: &[&str]) {
    withhold(cmd, std::env::vars_os().map(|(name, _)| name), keep);
}

fn withhold(
    cmd: &mut tokio::process::Command,
    inherited: impl Iterator<Item = std::ffi::OsString>,
    keep: &[&str],
) {
    for name in inherited.filter(|n| is_private(n) && !keep.iter().any(|k| n == k)) {
        cmd.env_remove(name);
    }
}

/// The agent's environment: this process's without the private variables, plus `env`'s
/// additions, plus the mark.
pub(super) fn confine(cmd: &mut Command, env: &AgentEnv) {
    cmd.envs(env.set.iter().map(|(k, v)| (k, v)));
    let inherited = std::env::vars_os().map(|(name, _)| name);
    let added = env.set.iter().map(|(name, _)| name.into());
    for name in inherited.chain(added).filter(|n| is_private(n)) {
        cmd.env_remove(name);
    }
    cmd.env(MARK.0, MARK.1);
}

/// The pid of the nearest process, this one or an ancestor, that an agent started
/// with the mark: `Some` means "a command of an agent is running me".
pub fn agent_ancestor() -> Option<u32> {
    let mut pid = std::process::id();
    for _ in 0..MAX_DEPTH {
        if is_marked(pid) {
            return Some(pid);
        }
        pid = crate::process::stat_of(pid)
            .map(|s| s.parent)
            .filter(|&p| p > 1)?;
    }
    None
}

#[cfg(target_os = "linux")]
fn is_marked(pid: u32) -> bool {
    let mark = format!("{}={}", MARK.0, MARK.1);
    // Unreadable (another user's process, or gone): not ours to judge.
    std::fs::read(format!("/proc/{pid}/environ"))
        .is_ok_and(|env| env.split(|&b| b == 0).any(|var| var == mark.as_bytes()))
}

// Without /proc only this process's own environment can be read: an agent's tool that
// unsets the mark is not recognised there (README "What an attacker can do").
#[cfg(not(target_os = "linux"))]
fn is_marked(pid: u32) -> bool {
    pid == std::process::id() && std::env::var_os(MARK.0).is_some_and(|v| v == MARK.1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_that_is_no_agent_is_given_what_it_keeps_and_no_other_private_variable() {
        let mut cmd = tokio::process::Command::new("window");
        let inherited = [
            "CHROXY_TOKEN",
            "TUNNEL_TOKEN",
            "CHROXY_LOG",
            "PATH",
            "DISPLAY",
        ];
        withhold(&mut cmd, inherited.iter().map(Into::into), &["CHROXY_LOG"]);
        let removed: Vec<&OsStr> = cmd
            .as_std()
            .get_envs()
            .filter(|(_, value)| value.is_none())
            .map(|(name, _)| name)
            .collect();
        assert_eq!(removed, ["CHROXY_TOKEN", "TUNNEL_TOKEN"]);
    }

    #[test]
    fn chroxy_settings_and_tunnel_secrets_are_private_nothing_else() {
        for name in [
            "CHROXY_TOKEN",
            "CHROXY_HOME",
            "CHROXY_CLAUDE",
            "CHROXY_LOG",
            "TUNNEL_TOKEN",
            "chroxy_token",
        ] {
            assert!(is_private(OsStr::new(name)), "{name}");
        }
        for name in [
            "PATH",
            "HOME",
            "ANTHROPIC_API_KEY",
            "IS_SANDBOX",
            "UNDER_CHROXY",
            "CHROXY",
        ] {
            assert!(!is_private(OsStr::new(name)), "{name}");
        }
    }
}
