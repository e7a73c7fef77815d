//! A real Secret Service for the tests: gnome-keyring in a private D-Bus session with
//! its own data directory, so the user's keyring is never touched.

use std::process::Stdio;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::{Home, WorkerOpts};

/// A D-Bus session with an unlocked gnome-keyring, alive as long as this value.
pub struct SecretService {
    _session: Child,
    sleeper: u32,
    bus: String,
}

impl Drop for SecretService {
    fn drop(&mut self) {
        // Ending the session's command ends the session (and its daemons) cleanly.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.sleeper as i32),
            Signal::SIGTERM,
        );
    }
}

impl SecretService {
    pub async fn start(home: &Home) -> Self {
        for tool in ["dbus-run-session", "gnome-keyring-daemon", "secret-tool"] {
            assert!(
                which::which(tool).is_ok(),
                "{tool} is missing: run ./scripts/test, which installs dbus-daemon, gnome-keyring and libsecret-tools"
            );
        }
        let data = home.dir.path().join("xdg-data");
        std::fs::create_dir_all(&data).unwrap();
        let script = r#"eval "$(printf pw | gnome-keyring-daemon --unlock --components=secrets)" >/dev/null
echo "$DBUS_SESSION_BUS_ADDRESS $$"
exec sleep 600"#;
        let mut session = Command::new("dbus-run-session")
            .args(["--", "sh", "-c", script])
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", home.user_home())
            .env("XDG_DATA_HOME", &data)
            .env("XDG_RUNTIME_DIR", home.dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(session.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(super::WAIT, lines.next_line())
            .await
            .expect("no D-Bus session")
            .unwrap()
            .expect("the session ended");
        let (bus, pid) = line.rsplit_once(' ').unwrap();
        Self {
            _session: session,
            sleeper: pid.parse().unwrap(),
            bus: bus.to_owned(),
        }
    }

    /// What `secret-tool` finds for one of Chroxy's entries of `home`.
    pub async fn lookup(&self, home: &Home, account: &str) -> String {
        let service = format!("chroxy:{}", home.chroxy().display());
        let out = Command::new("secret-tool")
            .args(["lookup", "service", &service, "username", account])
            .env("DBUS_SESSION_BUS_ADDRESS", &self.bus)
            .output()
            .await
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    pub fn env(&self) -> Vec<(&str, &str)> {
        // An empty CHROXY_TOKEN means "not given": the token comes from the keyring.
        vec![
            ("DBUS_SESSION_BUS_ADDRESS", self.bus.as_str()),
            ("CHROXY_TOKEN", ""),
        ]
    }

    pub fn opts(&self) -> WorkerOpts {
        let mut opts = WorkerOpts::fake_cli();
        for (k, v) in self.env() {
            opts = opts.env(k, v);
        }
        opts
    }
}
