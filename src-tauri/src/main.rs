//! Chroxy's tray app: the supervisor, the tray icon and its menu, with no toolkit
//! (`chroxy::desktop::run`); it starts the window (`chroxy-desktop-window`, this
//! package's library) as a process of its own while the window is shown.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    chroxy::desktop::run()
}
