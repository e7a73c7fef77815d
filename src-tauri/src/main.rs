//! Chroxy's tray app; see the `chroxy_desktop` library for what it is made of.

#![forbid(unsafe_code)]

fn main() -> anyhow::Result<()> {
    chroxy_desktop::run()
}
