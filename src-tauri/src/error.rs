//! Why a window command or a tray item did nothing, worded for the person who clicked.
//! The window shows it as text: it serializes as its message.

use chroxy::launch::LaunchError;
use chroxy::supervisor::handle::ActionError;

/// A command's refusal.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The supervisor could not start (the window says why).
    #[error("Chroxy is not running: {0}")]
    NotRunning(String),
    /// The supervisor refused the action or could not carry it out.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The tunnel chosen cannot run (a named tunnel without its hostname or token).
    #[error(transparent)]
    Tunnel(#[from] LaunchError),
    /// The tunnel has no URL yet, so there is no link to copy.
    #[error("no link yet: the tunnel has no URL")]
    NoLink,
    /// The supervisor, and so its status page, is not running.
    #[error("the status page is not running")]
    NoStatusPage,
    /// The desktop's clipboard refused the text.
    #[error("cannot copy to the clipboard: {0}")]
    Clipboard(#[from] tauri_plugin_clipboard_manager::Error),
    /// The desktop could not open a page or a folder.
    #[error("cannot open {what}: {source}")]
    Open {
        what: String,
        source: Box<tauri_plugin_opener::Error>,
    },
    /// The device registry refused or failed a decision.
    #[error(transparent)]
    Devices(#[from] chroxy::devices::DevicesError),
    /// The login items could not be changed.
    #[error("cannot change Start at login: {0}")]
    Autostart(#[from] tauri_plugin_autostart::Error),
}

impl serde::Serialize for ShellError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}
