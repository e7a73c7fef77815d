//! Chroxy's window, started by the tray app; see the `chroxy_desktop` library.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    chroxy_desktop::run()
}
