//! A device the owner revokes or refuses loses its open connections within a second,
//! whoever decided: the window and the status page (in the supervisor's process) or
//! `chroxy devices revoke` (a process of its own). The registry is a file those write,
//! so the worker watches it: its modification time and size every [`EVERY`], read
//! again when they change. Every connection of a device no longer approved is told why
//! (`auth_fail` `device_refused`) and closed; the others never notice.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::devices::{DeviceState, Devices};

/// What a phone whose device was revoked is told before its connection closes.
pub(crate) const REVOKED: &str = "The owner of the computer revoked this device. To use it again, pair it by scanning a fresh QR code there.";

/// How often the registry file is looked at: well inside the second a revocation may
/// take, and cheap (one `stat`).
const EVERY: Duration = Duration::from_millis(250);

/// The approved devices, as one reading of the registry found them.
#[derive(Debug, Clone)]
pub(crate) struct Approved {
    /// When the reading began: a device let in after it may be missing from it.
    pub read_at: Instant,
    /// Their ids; `None` when the file could not be read (nobody is closed for that).
    pub ids: Option<Arc<BTreeSet<String>>>,
}

impl Approved {
    /// Whether this reading says that `device`, let in at `admitted_at`, must go.
    pub fn revokes(&self, device: &str, admitted_at: Instant) -> bool {
        self.read_at > admitted_at && self.ids.as_ref().is_some_and(|ids| !ids.contains(device))
    }
}

/// Starts watching `devices` until `stop`; connections subscribe to the receiver.
pub(crate) fn watch(devices: Devices, stop: CancellationToken) -> watch::Receiver<Approved> {
    let first = Approved {
        read_at: Instant::now(),
        ids: None,
    };
    let (tx, rx) = watch::channel(first);
    tokio::spawn(async move {
        let mut seen: Option<(SystemTime, u64)> = None;
        loop {
            let stamp = std::fs::metadata(devices.path())
                .ok()
                .and_then(|m| Some((m.modified().ok()?, m.len())));
            if stamp != seen {
                seen = stamp;
                let read_at = Instant::now();
                let read = devices.clone();
                let ids = tokio::task::spawn_blocking(move || approved_ids(&read))
                    .await
                    .ok()
                    .flatten();
                tx.send_replace(Approved { read_at, ids });
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(EVERY) => {}
            }
        }
    });
    rx
}

fn approved_ids(devices: &Devices) -> Option<Arc<BTreeSet<String>>> {
    match devices.list(crate::protocol::now_ms()) {
        Ok(list) => Some(Arc::new(
            list.into_iter()
                .filter(|d| d.state == DeviceState::Approved)
                .map(|d| d.id)
                .collect(),
        )),
        Err(err) => {
            // Admission refuses everyone meanwhile and says so; nobody connected is
            // closed for a file that cannot be read.
            tracing::warn!(%err, "cannot read the device list to check for revoked devices");
            None
        }
    }
}

/// Resolves once a reading of the registry made after `admitted_at` no longer lists
/// `device` as approved; never without a device (devices unchecked, or the probe).
pub(crate) async fn revoked(
    rx: &mut watch::Receiver<Approved>,
    device: Option<&str>,
    admitted_at: Instant,
) {
    let Some(device) = device else {
        return std::future::pending().await;
    };
    loop {
        if rx.borrow_and_update().revokes(device, admitted_at) {
            return;
        }
        if rx.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reading_after_the_admission_that_lacks_the_device_revokes_it() {
        let t0 = Instant::now();
        let ids = |list: &[&str]| Some(Arc::new(list.iter().map(|s| s.to_string()).collect()));
        let later = t0 + Duration::from_millis(10);
        let reading = |read_at, ids| Approved { read_at, ids };
        // Read before the device was let in: it may simply not be there yet.
        assert!(!reading(t0, ids(&[])).revokes("a", later));
        assert!(reading(later, ids(&["b"])).revokes("a", t0));
        assert!(!reading(later, ids(&["a", "b"])).revokes("a", t0));
        // An unreadable file closes nobody.
        assert!(!reading(later, None).revokes("a", t0));
    }
}
