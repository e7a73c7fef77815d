//! Keeps the status's `devices` in step with the registry, which other processes change:
//! the worker adds a device that asks, `chroxy devices` approves one. Re-read every
//! second (a small file), so a phone waiting for approval shows up in the window at once.

use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::status::{DevicesStatus, Status};
use crate::devices::Devices;

/// How often the registry is read again.
const EVERY: Duration = Duration::from_secs(1);

/// Publishes the registry into `status` until `stop`. `approve_new` and
/// `allow_token_auth`: the workers' `[security]` settings.
pub(crate) async fn follow(
    devices: Devices,
    approve_new: bool,
    allow_token_auth: bool,
    status: watch::Sender<Status>,
    stop: CancellationToken,
) {
    loop {
        let read = devices.clone();
        let now = tokio::task::spawn_blocking(move || read.list(crate::protocol::now_ms())).await;
        let (list, error) = match now {
            Ok(Ok(list)) => (list, None),
            Ok(Err(err)) => (Vec::new(), Some(err.to_string())),
            Err(err) => (
                Vec::new(),
                Some(format!("reading the device list failed: {err}")),
            ),
        };
        status.send_if_modified(|s| {
            // Who is connected is the runner's to say, from the worker's heartbeat.
            let connected = s.devices.connected.clone();
            let shown = DevicesStatus {
                approve_new,
                allow_token_auth,
                list,
                error,
                connected,
            };
            let changed = s.devices != shown;
            if changed {
                s.devices = shown;
            }
            changed
        });
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(EVERY) => {}
        }
    }
}
