//! `chroxy service`: Chroxy as a systemd user service, for a machine without a desktop
//! (or one where it should run without anyone logged in at the screen). The unit runs
//! `chroxy start` for one home and one directory. systemd starts services with a bare
//! environment, so every path Chroxy and Claude Code need is resolved now, by the
//! person's own shell, and written into the unit: the `chroxy` binary, `claude`,
//! `cloudflared`, the home, and the shell's PATH (Claude Code's tools run with it).
//! No token or credential is written: those stay in the keyring or the home.
//!
//! The unit is text built here ([`unit_text`]); `systemctl --user` is only asked to
//! load, start and stop it, and where there is no user manager the file is still
//! written and the person told how to start it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

/// The unit's name.
pub const UNIT: &str = "chroxy.service";

/// Set (to [`UNIT`]) in the service's environment: what runs the supervisor
/// ([`crate::supervisor::instance::RunsAs`]).
pub const SERVICE_VARIABLE: &str = "CHROXY_SERVICE";

/// Everything the unit says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnitSpec {
    /// The `chroxy` binary the service runs.
    pub chroxy: PathBuf,
    /// `CHROXY_HOME`, when one was given; otherwise the platform's usual directories,
    /// as for `chroxy start` in the person's shell.
    pub home: Option<PathBuf>,
    /// `chroxy start --cwd`: the directory Claude Code works in.
    pub cwd: PathBuf,
    /// `CHROXY_CLAUDE`, when `claude` was found.
    pub claude: Option<PathBuf>,
    /// `CHROXY_CLOUDFLARED`, when `cloudflared` was found.
    pub cloudflared: Option<PathBuf>,
    /// `CHROXY_TAILSCALE`, when `tailscale` was found.
    pub tailscale: Option<PathBuf>,
    /// PATH for Chroxy and Claude Code's tools.
    pub path: OsString,
    /// More `chroxy start` arguments (`--tunnel none`, `--port 9000`).
    pub start_args: Vec<String>,
    /// The tunnel those arguments choose (`chroxy start`'s default when none).
    pub tunnel: crate::tunnel::TunnelChoice,
    /// systemd's `TimeoutStopSec`: longer than a drain, so a stop never cuts a turn's
    /// save short.
    pub stop_timeout: Duration,
}

/// Why the service could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// A value systemd could not be given safely.
    #[error("{what} ({value:?}) contains a control character (a newline?), which a systemd unit cannot hold; use a path without one")]
    Unquotable {
        /// Which value.
        what: &'static str,
        /// The value as given.
        value: String,
    },
    /// A path that is not absolute, or not UTF-8.
    #[error("{what} must be an absolute UTF-8 path, got {value:?}")]
    NotAbsolute {
        /// Which value.
        what: &'static str,
        /// The value as given.
        value: PathBuf,
    },
    /// A unit of another home is installed: installing would take it over.
    #[error("{path} already runs Chroxy for another home ({other}); `chroxy service uninstall` with that home first, or keep that one")]
    OtherHome {
        /// The unit file.
        path: PathBuf,
        /// The home it runs.
        other: String,
    },
    /// The unit file could not be written.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// The unit file could not be removed, or its directory made.
    #[error("cannot {what} {path}: {source}; check that the directory is writable")]
    File {
        /// "write", "remove".
        what: &'static str,
        /// The unit file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Where systemd looks for the user's own units: `$XDG_CONFIG_HOME/systemd/user/`.
pub fn unit_path(config_home: &Path) -> PathBuf {
    config_home.join("systemd").join("user").join(UNIT)
}

/// The unit file for `spec`.
pub fn unit_text(spec: &UnitSpec) -> Result<String, ServiceError> {
    let chroxy = absolute("the chroxy binary", &spec.chroxy)?;
    let cwd = absolute("the working directory", &spec.cwd)?;
    let mut exec = vec![
        exec_word("the chroxy binary", chroxy)?,
        "start".to_owned(),
        "--cwd".to_owned(),
        exec_word("the working directory", cwd)?,
    ];
    for arg in &spec.start_args {
        exec.push(exec_word("a chroxy start argument", arg)?);
    }
    let path = spec
        .path
        .to_str()
        .ok_or_else(|| ServiceError::NotAbsolute {
            what: "PATH",
            value: PathBuf::from(&spec.path),
        })?;
    // What runs it, for messages that tell a person how to stop it.
    let mut env = vec![env_line("PATH", path)?, env_line(SERVICE_VARIABLE, UNIT)?];
    let paths = [
        ("CHROXY_HOME", &spec.home),
        ("CHROXY_CLAUDE", &spec.claude),
        ("CHROXY_CLOUDFLARED", &spec.cloudflared),
        ("CHROXY_TAILSCALE", &spec.tailscale),
    ];
    for (variable, found) in paths {
        if let Some(found) = found {
            env.push(env_line(variable, absolute(variable, found)?)?);
        }
    }
    Ok(format!(
        "# Written by `chroxy service install`; `chroxy service uninstall` removes it.\n\
         # Install again after moving chroxy, claude or cloudflared, or changing the drain.\n\
         [Unit]\n\
         Description=Chroxy: Claude Code on this machine, supervised from your phone\n\
         # Restarted after a failure, but not forever: five failed starts in five\n\
         # minutes (another Chroxy holds the home, a program was moved) leave it failed.\n\
         StartLimitIntervalSec=300\n\
         StartLimitBurst=5\n\
         \n\
         [Service]\n\
         Type=simple\n\
         ExecStart={exec}\n\
         {env}\
         Restart=on-failure\n\
         RestartSec=5\n\
         # SIGTERM to chroxy only: it drains its worker (running turns are saved, phones\n\
         # told) and stops its tunnel; whatever is left after the timeout gets SIGKILL.\n\
         KillMode=mixed\n\
         TimeoutStopSec={stop}\n\
         \n\
         [Install]\n\
         WantedBy=default.target\n",
        exec = exec.join(" "),
        env = env.concat(),
        stop = spec.stop_timeout.as_secs().max(1),
    ))
}

/// The home a unit file runs (its `CHROXY_HOME`; `None`: the usual directories), to
/// tell units of two homes apart.
pub fn home_of(unit: &str) -> Option<String> {
    unit.lines().find_map(|l| {
        let value = l
            .strip_prefix("Environment=\"CHROXY_HOME=")?
            .strip_suffix('"')?;
        Some(unquote(value))
    })
}

/// Refuses when the unit at `path` runs another home than `home` (as [`home_of`]
/// says it): installing would take it over, uninstalling would remove it.
fn refuse_other_home(path: &Path, home: Option<String>) -> Result<(), ServiceError> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(()); // no unit yet
    };
    let theirs = home_of(&text);
    if theirs == home {
        return Ok(());
    }
    Err(ServiceError::OtherHome {
        path: path.to_owned(),
        other: theirs.unwrap_or_else(|| "the usual directories".into()),
    })
}

/// Writes the unit (taking over only a unit of the same home).
pub fn write_unit(path: &Path, text: &str) -> Result<(), ServiceError> {
    refuse_other_home(path, home_of(text))?;
    let file = |what, source| ServiceError::File {
        what,
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| file("create the directory of", e))?;
    }
    // Not a secret (no token in it), but it says where everything is: the user's only.
    Ok(crate::store::atomic_write(path, text.as_bytes())?)
}

/// How to start the unit by hand, where `systemctl --user` could not.
const START_BY_HAND: &str = "in a login session run `systemctl --user daemon-reload && systemctl --user enable --now chroxy`; `loginctl enable-linger $USER` keeps it running while you are logged out";

/// `chroxy service install`: writes the unit, then (unless `start` is false) loads,
/// enables and starts it. What happened, line by line.
pub fn install(path: &Path, spec: &UnitSpec, start: bool) -> Result<Vec<String>, ServiceError> {
    write_unit(path, &unit_text(spec)?)?;
    let mut said = vec![format!("wrote {}", path.display())];
    if spec.claude.is_none() {
        said.push("claude was not found: install Claude Code (or set CHROXY_CLAUDE), then install the service again".into());
    }
    let build_output = ["target/release", "target/debug"]
        .iter()
        .any(|dir| spec.chroxy.parent().is_some_and(|p| p.ends_with(dir)));
    if build_output {
        said.push(format!("{} is a build output: a rebuild or `cargo clean` changes or removes it under the running service; install the package (or copy the binary somewhere stable) and install the service from there", spec.chroxy.display()));
    }
    // Whether the program the chosen tunnel needs was found.
    use crate::tunnel::TunnelChoice;
    let missing = match spec.tunnel {
        TunnelChoice::Quick | TunnelChoice::Named if spec.cloudflared.is_none() => {
            Some("cloudflared")
        }
        TunnelChoice::Tailscale if spec.tailscale.is_none() => Some("tailscale"),
        _ => None,
    };
    if let Some(program) = missing {
        said.push(format!("{program} was not found: no tunnel until it is installed (then install the service again), or pass `-- --tunnel none`"));
    }
    if !start {
        said.push(format!("not started (--no-start): {START_BY_HAND}"));
        return Ok(said);
    }
    // Restarted, not only started: a unit installed again (other arguments, a moved
    // binary) must run as now written, and `enable --now` leaves a running one be.
    let started = systemctl(&["daemon-reload"])
        .and_then(|_| systemctl(&["enable", UNIT]))
        .and_then(|_| systemctl(&["restart", UNIT]));
    said.push(match started {
        Ok(_) => "started and enabled at login: `chroxy status` shows it, `journalctl --user -u chroxy` its log".to_owned(),
        Err(why) => format!("systemd --user is not reachable here ({why}): {START_BY_HAND}"),
    });
    Ok(said)
}

/// `chroxy service uninstall`: stops and disables the unit of `home` (`None`: the
/// usual directories), then removes it; another home's unit is left alone.
pub fn uninstall(path: &Path, home: Option<&Path>) -> Result<Vec<String>, ServiceError> {
    refuse_other_home(path, home.map(|h| h.display().to_string()))?;
    // Stopped first: a unit removed while it runs keeps running, orphaned from its file.
    let stopped = systemctl(&["disable", "--now", UNIT]);
    let removed = remove_unit(path)?;
    let _ = systemctl(&["daemon-reload"]);
    let mut said = Vec::new();
    if let (Err(why), true) = (&stopped, removed) {
        said.push(format!("could not stop it through systemd ({why}); if it still runs: `systemctl --user stop chroxy`"));
    }
    said.push(match removed {
        true => format!("removed {}", path.display()),
        false => format!("no service installed ({} does not exist)", path.display()),
    });
    Ok(said)
}

/// `chroxy service status`: whether the unit is installed, what it runs, and whether
/// systemd says it is running.
pub fn status(path: &Path) -> Vec<String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return vec![format!(
            "not installed ({} does not exist): `chroxy service install`",
            path.display()
        )];
    };
    let mut said = vec![format!("installed: {}", path.display())];
    if let Some(exec) = text.lines().find_map(|l| l.strip_prefix("ExecStart=")) {
        said.push(format!("runs: {exec}"));
    }
    said.push(format!(
        "home: {}",
        home_of(&text).unwrap_or_else(|| "the usual directories".into())
    ));
    said.push(match systemctl(&["is-active", UNIT]) {
        Ok(state) => format!("systemd: {state}"),
        Err(why) => format!("systemd: {why}"),
    });
    said
}

/// Removes the unit; `false` when there was none.
pub fn remove_unit(path: &Path) -> Result<bool, ServiceError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(source) => Err(ServiceError::File {
            what: "remove",
            path: path.to_owned(),
            source,
        }),
    }
}

/// What `systemctl --user <args>` said: `Ok(stdout)`, or `Err` with why it failed.
pub fn systemctl(args: &[&str]) -> Result<String, String> {
    let out = Command::new("systemctl")
        .arg("--user")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run systemctl: {e}"))?;
    let said = |b: &[u8]| String::from_utf8_lossy(b).trim().to_owned();
    if out.status.success() {
        Ok(said(&out.stdout))
    } else {
        let err = said(&out.stderr);
        Err(if err.is_empty() {
            said(&out.stdout)
        } else {
            err
        })
    }
}

fn absolute<'a>(what: &'static str, path: &'a Path) -> Result<&'a str, ServiceError> {
    match path.to_str() {
        Some(s) if path.is_absolute() => Ok(s),
        _ => Err(ServiceError::NotAbsolute {
            what,
            value: path.to_owned(),
        }),
    }
}

/// One word of `ExecStart=`, in double quotes: systemd reads `\\` and `\"` as C escapes
/// inside them, `%%` as a literal `%` (specifiers) and `$$` as a literal `$` (variables).
fn exec_word(what: &'static str, word: &str) -> Result<String, ServiceError> {
    Ok(format!("\"{}\"", escape(what, word)?.replace('$', "$$")))
}

/// `Environment="KEY=value"`, escaped as `ExecStart=` is except for `$`, which systemd
/// does not expand there.
fn env_line(key: &str, value: &str) -> Result<String, ServiceError> {
    Ok(format!(
        "Environment=\"{key}={}\"\n",
        escape("an environment value", value)?
    ))
}

fn escape(what: &'static str, value: &str) -> Result<String, ServiceError> {
    if value.chars().any(char::is_control) {
        return Err(ServiceError::Unquotable {
            what,
            value: value.to_owned(),
        });
    }
    Ok(value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('%', "%%"))
}

/// The inverse of [`escape`] (without `$$`): reads a quoted `Environment=` value back.
fn unquote(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        match (c, chars.clone().next()) {
            ('\\', Some(next @ ('\\' | '"'))) | ('%', Some(next @ '%')) => {
                out.push(next);
                chars.next();
            }
            _ => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(cwd: &str) -> UnitSpec {
        UnitSpec {
            chroxy: "/opt/chroxy/bin/chroxy".into(),
            home: Some("/home/ana/.local/share/chroxy".into()),
            cwd: cwd.into(),
            claude: Some("/home/ana/.local/bin/claude".into()),
            cloudflared: None,
            tailscale: Some("/usr/bin/tailscale".into()),
            path: "/home/ana/.local/bin:/usr/bin:/bin".into(),
            start_args: vec!["--tunnel".into(), "none".into()],
            tunnel: crate::tunnel::TunnelChoice::None,
            stop_timeout: Duration::from_secs(50),
        }
    }

    #[test]
    fn the_unit_runs_chroxy_start_with_every_path_resolved_and_no_secret() {
        let text = unit_text(&spec("/home/ana/src/api")).unwrap();
        assert!(
            text.contains("ExecStart=\"/opt/chroxy/bin/chroxy\" start --cwd \"/home/ana/src/api\" \"--tunnel\" \"none\"\n"),
            "{text}"
        );
        for line in [
            "Environment=\"CHROXY_HOME=/home/ana/.local/share/chroxy\"",
            "Environment=\"CHROXY_CLAUDE=/home/ana/.local/bin/claude\"",
            "Environment=\"CHROXY_TAILSCALE=/usr/bin/tailscale\"",
            "Environment=\"PATH=/home/ana/.local/bin:/usr/bin:/bin\"",
            "Restart=on-failure",
            "KillMode=mixed",
            "TimeoutStopSec=50",
            "WantedBy=default.target",
        ] {
            assert!(text.lines().any(|l| l == line), "no {line} in\n{text}");
        }
        assert!(!text.contains("CHROXY_CLOUDFLARED"), "none was found");
        assert!(!text.contains("TOKEN"), "{text}");
        assert_eq!(
            home_of(&text).as_deref(),
            Some("/home/ana/.local/share/chroxy")
        );
    }

    #[test]
    fn awkward_characters_are_quoted_and_control_characters_refused() {
        let odd = r#"/home/ana/my "100%" $HOME\dir"#;
        let mut s = spec(odd);
        s.home = Some(PathBuf::from(odd));
        let text = unit_text(&s).unwrap();
        assert!(
            text.contains(r#"--cwd "/home/ana/my \"100%%\" $$HOME\\dir""#),
            "{text}"
        );
        assert_eq!(home_of(&text).as_deref(), Some(odd));
        let err = unit_text(&spec("/home/ana/new\nline")).unwrap_err();
        assert!(err.to_string().contains("control character"), "{err}");
        let err = unit_text(&spec("relative/dir")).unwrap_err();
        assert!(err.to_string().contains("absolute"), "{err}");
    }

    #[test]
    fn a_unit_of_another_home_is_not_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = unit_path(dir.path());
        let ours = unit_text(&spec("/p")).unwrap();
        write_unit(&path, &ours).unwrap();
        // The same home again: rewritten.
        write_unit(&path, &ours).unwrap();
        let mut other = spec("/p");
        other.home = Some("/srv/other-chroxy".into());
        let err = write_unit(&path, &unit_text(&other).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("/home/ana/.local/share/chroxy"),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), ours, "untouched");
        other.home = None;
        assert!(
            write_unit(&path, &unit_text(&other).unwrap()).is_err(),
            "nor by the default home"
        );
        assert!(remove_unit(&path).unwrap());
        assert!(!remove_unit(&path).unwrap(), "already gone");
    }
}
