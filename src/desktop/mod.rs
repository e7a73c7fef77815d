//! The tray app's side of the library: everything the app shows and does that is not
//! Tauri, so its shell (`src-tauri`) only wires a window and a tray icon to these calls.
//!
//! - [`Args`], [`Boot`]: the app's command line, and what it starts with (that, and what
//!   it remembers); [`init_logging`] (`logging.rs`): its log.
//! - [`Desktop`] (`app.rs`): the running app — the in-process supervisor and the window's
//!   and tray's actions on it.
//! - [`View`] (`view.rs`): what the window and the tray show; [`tray`]: the tray's menu
//!   and what it shows, as a pure plan; [`Settings`] (`settings.rs`): what the app
//!   remembers between runs.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use crate::launch::{Launch, StartArgs};
use crate::store::Paths;
use crate::tunnel::TunnelChoice;

mod app;
mod logging;
mod settings;
pub mod tray;
mod view;

pub use app::{Changes, Desktop, DesktopError};
pub use logging::init_logging;
pub use settings::Settings;
pub use view::{Look, PairingView, View};

/// The tray app's command line.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Keep every file (config, token, sessions, logs) under this directory.
    #[arg(long, env = "CHROXY_HOME")]
    pub home: Option<PathBuf>,
    /// `chroxy start`'s options.
    #[command(flatten)]
    pub start: StartArgs,
    /// Start with the window hidden: only the tray icon (how "Start at login" starts it).
    #[arg(long)]
    pub minimized: bool,
}

/// What the app starts with.
pub struct Boot {
    /// The home's directories.
    pub paths: Paths,
    /// The tunnel it starts with (the Tunnel menu's choice).
    pub tunnel: TunnelChoice,
    /// What to start, or why there is nothing to start (no `chroxy` binary, no session
    /// directory): shown in the window like any other failure.
    pub launch: Result<Launch, DesktopError>,
    /// Whether the window starts hidden.
    pub minimized: bool,
}

impl Boot {
    /// From the app's command line and its home's `paths`: `chroxy start`'s options,
    /// with the tunnel the Tunnel menu last chose when none is given, and the workers'
    /// `chroxy` (beside this program, else on `PATH`).
    pub fn new(args: Args, paths: Paths) -> Self {
        let Args {
            home,
            start,
            minimized,
        } = args;
        let tunnel = start.tunnel.unwrap_or(Settings::load(&paths).tunnel);
        let launch = std::env::current_exe()
            .map_err(DesktopError::ThisProgram)
            .and_then(|this| worker_binary(&this, std::env::var_os("PATH")))
            .and_then(|installed| Ok(start.launch(home, paths.clone(), tunnel, installed)?));
        Self {
            paths,
            tunnel,
            launch,
            minimized,
        }
    }
}

/// The `chroxy` binary workers run (it has the `worker` command): beside `this_program`,
/// as the release build and the packages install it, else on `path` (`PATH`).
fn worker_binary(this_program: &Path, path: Option<OsString>) -> Result<PathBuf, DesktopError> {
    let beside = this_program.with_file_name("chroxy");
    if beside.is_file() {
        return Ok(beside);
    }
    let cwd = std::env::current_dir().unwrap_or_default();
    which::which_in("chroxy", path, cwd).map_err(|_| DesktopError::NoWorkerBinary { beside })
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

        let err = worker_binary(&app, on_path()).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "the `chroxy` program (it runs the workers) is neither beside {} nor on PATH; build it with `cargo build --release -p chroxy`",
                app_dir.join("chroxy").display()
            )
        );
        executable(&bin_dir.join("chroxy"));
        assert_eq!(
            worker_binary(&app, on_path()).unwrap(),
            bin_dir.join("chroxy")
        );
        executable(&app_dir.join("chroxy"));
        assert_eq!(
            worker_binary(&app, on_path()).unwrap(),
            app_dir.join("chroxy")
        );
    }
}
