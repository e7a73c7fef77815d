//! Why a window command or a tray item did nothing, worded for the person who clicked.
//! The window shows it as text: it serializes as its message.

/// A command's refusal.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The app refused (the supervisor is not running, refused the action, no link yet).
    #[error(transparent)]
    Desktop(#[from] chroxy::desktop::DesktopError),
    /// The desktop's clipboard refused the text.
    #[error("cannot copy to the clipboard: {0}")]
    Clipboard(#[from] tauri_plugin_clipboard_manager::Error),
    /// The desktop could not open a page or a folder.
    #[error("cannot open {what}: {source}")]
    Open {
        what: String,
        source: Box<tauri_plugin_opener::Error>,
    },
    /// The login items could not be changed.
    #[error("cannot change Start at login: {0}")]
    Autostart(#[from] tauri_plugin_autostart::Error),
}

impl serde::Serialize for ShellError {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}
