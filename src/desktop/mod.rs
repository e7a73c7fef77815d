//! The tray app's side of the library: everything the app shows and does, so its shell
//! (`src-tauri`) is two `main`s: the tray app ([`run`]) and its window's process.
//!
//! - [`run`] (`tray_app.rs`): the tray app's process — the supervisor, the tray icon
//!   (`tray_icon.rs`, StatusNotifierItem over D-Bus), the desktop's services (`desk.rs`:
//!   clipboard, opener, Start at login, one app per user), no toolkit; the window is a
//!   process of its own while it is shown ([`window`]: both ends of their channel).
//! - [`Args`], [`Boot`]: the app's command line, and what it starts with (that, and what
//!   it remembers); [`init_logging`] (`logging.rs`): its log.
//! - [`Desktop`] (`app.rs`): the running app — the in-process supervisor and its
//!   actions; [`Ask`] (`ask.rs`): what the window's commands and the tray's items ask of
//!   it, and its [`Reply`] (with the jobs only the desktop can do); [`notify`]: what it
//!   shows as desktop notifications.
//! - [`View`] (`view.rs`): what the window and the tray show; [`tray`]: the tray's menu
//!   and what it shows, as a pure plan; [`Settings`] (`settings.rs`): what the app
//!   remembers between runs.

use std::path::PathBuf;

use crate::launch::{Launch, LaunchError, StartArgs};
use crate::store::Paths;
use crate::tunnel::TunnelChoice;

mod app;
mod ask;
mod desk;
mod logging;
pub mod notify;
mod settings;
pub mod tray;
mod tray_app;
pub mod tray_host;
mod tray_icon;
mod view;
pub mod window;

pub use app::{Changes, Desktop, DesktopError};
pub use ask::{Ask, Reply};
pub use logging::{init_logging, init_stderr_logging};
pub use settings::Settings;
pub use tray_app::run;
pub use view::{Look, PairingView, View};

/// The tray app's command line (`chroxy-desktop --help`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "chroxy-desktop",
    version,
    about = "Chroxy in the tray: scan the QR code with your phone, watch and steer Claude Code.",
    long_about = None
)]
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
    pub launch: Result<Launch, LaunchError>,
    /// Whether the window starts hidden.
    pub minimized: bool,
}

impl Boot {
    /// From the app's command line and its home's `paths`: `chroxy start`'s options,
    /// with the tunnel the Tunnel menu last chose when none is given, and the workers'
    /// `chroxy` ([`crate::launch::worker_binary`]).
    pub fn new(args: Args, paths: Paths) -> Self {
        let Args {
            home,
            start,
            minimized,
        } = args;
        let tunnel = start.tunnel.unwrap_or(Settings::load(&paths).tunnel);
        // Hidden with no tray to show the icon in, the app could not be found at all.
        let minimized = minimized
            && {
                let host = tray_host::probe();
                if host == tray_host::TrayHost::Absent {
                    tracing::warn!("--minimized, but this desktop shows no tray icons (no StatusNotifierWatcher on the session bus): showing the window; `chroxy doctor` says how to get tray icons");
                }
                host != tray_host::TrayHost::Absent
            };
        let launch = crate::launch::worker_binary()
            .map_err(LaunchError::from)
            .and_then(|installed| start.launch(home, paths.clone(), tunnel, installed));
        Self {
            paths,
            tunnel,
            launch,
            minimized,
        }
    }
}
