//! Connected clients and fan-out to them.
//!
//! Each client has a bounded outbound queue drained by its connection task. Publishing
//! never waits: a client whose queue is full is too slow, and is kicked (its connection
//! closes with 1013 and it resyncs from the history replay on reconnect) rather than
//! slowing every other phone or growing memory without bound. The queue is bounded in
//! bytes as well as frames: frames range from a 40-byte delta to a whole history
//! replay, and a phone that stops reading must not pin more than its byte budget.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::protocol::{ClientInfo, ServerMsg};

/// Id of one connection (`c-…`).
pub type ClientId = String;
/// Id of one Chroxy session (`s-…`).
pub type SessionId = String;

/// A serialized frame, shared by every recipient.
pub type Frame = Arc<str>;

/// What a connection task is asked to send.
#[derive(Debug)]
pub enum Outbound {
    /// One frame.
    Frame(Frame),
    /// Several frames that must arrive together and in order (a history replay).
    Batch(Vec<Frame>),
}

impl Outbound {
    /// Bytes it will put on the wire (before framing).
    pub fn len(&self) -> usize {
        match self {
            Outbound::Frame(f) => f.len(),
            Outbound::Batch(frames) => frames.iter().map(|f| f.len()).sum(),
        }
    }

    /// An empty batch.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The sending half of one client's queue.
#[derive(Debug, Clone)]
pub struct QueueTx {
    tx: mpsc::Sender<Outbound>,
    bytes: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving half, drained by the client's connection task.
#[derive(Debug)]
pub struct QueueRx {
    rx: mpsc::Receiver<Outbound>,
    bytes: Arc<AtomicUsize>,
}

/// The client is too slow: its queue holds `max_frames` frames or `max_bytes` bytes.
#[derive(Debug, PartialEq, Eq)]
pub struct QueueFull;

/// A queue for one client: at most `max_frames` entries and, unless it is empty (a
/// history replay larger than the budget must still reach a phone that reads),
/// `max_bytes` bytes.
pub fn queue(max_frames: usize, max_bytes: usize) -> (QueueTx, QueueRx) {
    let (tx, rx) = mpsc::channel(max_frames.max(1));
    let bytes = Arc::new(AtomicUsize::new(0));
    (
        QueueTx {
            tx,
            bytes: bytes.clone(),
            max_bytes,
        },
        QueueRx { rx, bytes },
    )
}

impl QueueTx {
    /// Queues without waiting.
    pub fn try_send(&self, out: Outbound) -> Result<(), QueueFull> {
        let len = out.len();
        let held = self.bytes.fetch_add(len, Ordering::AcqRel);
        if held > 0 && held + len > self.max_bytes {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            return Err(QueueFull);
        }
        self.tx.try_send(out).map_err(|_| {
            self.bytes.fetch_sub(len, Ordering::AcqRel);
            QueueFull
        })
    }
}

impl QueueRx {
    /// The next entry; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outbound> {
        let out = self.rx.recv().await?;
        self.bytes.fetch_sub(out.len(), Ordering::AcqRel);
        Some(out)
    }

    /// The next entry if one is queued.
    pub fn try_recv(&mut self) -> Option<Outbound> {
        let out = self.rx.try_recv().ok()?;
        self.bytes.fetch_sub(out.len(), Ordering::AcqRel);
        Some(out)
    }
}

/// Serializes once for all recipients.
pub fn frame(msg: &ServerMsg) -> Frame {
    Arc::from(msg.to_json())
}

/// Who receives a published message.
#[derive(Debug, Clone, Copy)]
pub enum Audience<'a> {
    /// Every authenticated client.
    All,
    /// Everyone but one (e.g. the sender of an input, who already shows it).
    AllExcept(&'a str),
    /// Clients whose active session is this one.
    Active(&'a str),
}

struct Slot {
    tx: QueueTx,
    kick: CancellationToken,
    info: ClientInfo,
    /// Its device in the registry (`None` when devices are not checked).
    device: Option<String>,
    active: Option<SessionId>,
    /// Its page is on screen (`presence`); a client that never says is.
    visible: bool,
    /// The supervisor's health probe: answered, but no phone. Counting or listing it
    /// would show a phantom phone every probe interval.
    probe: bool,
}

/// The registry; a cheap clone.
#[derive(Clone, Default)]
pub struct Clients {
    inner: Arc<Mutex<HashMap<ClientId, Slot>>>,
}

impl Clients {
    fn lock(&self) -> MutexGuard<'_, HashMap<ClientId, Slot>> {
        // A panic while holding this lock would be a bug elsewhere; the map itself is
        // still consistent (every update is a single insert/remove/assign).
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a client. `kick` is cancelled if it falls behind.
    /// Adds a phone, of `device` in the registry (`None` when devices are not checked).
    pub fn register(
        &self,
        info: ClientInfo,
        device: Option<String>,
        tx: QueueTx,
        kick: CancellationToken,
    ) {
        self.insert(info, device, tx, kick, false);
    }

    /// Adds the supervisor's health probe: it gets the answers to its own requests,
    /// nothing published to everyone, and is neither counted nor listed.
    pub fn register_probe(&self, info: ClientInfo, tx: QueueTx, kick: CancellationToken) {
        self.insert(info, None, tx, kick, true);
    }

    fn insert(
        &self,
        info: ClientInfo,
        device: Option<String>,
        tx: QueueTx,
        kick: CancellationToken,
        probe: bool,
    ) {
        let id = info.client_id.clone();
        let slot = Slot {
            tx,
            kick,
            info,
            device,
            active: None,
            visible: true,
            probe,
        };
        self.lock().insert(id, slot);
    }

    /// Removes a client; false if it was not there.
    pub fn unregister(&self, id: &str) -> bool {
        self.lock().remove(id).is_some()
    }

    /// Makes `session` the client's active one.
    pub fn set_active(&self, id: &str, session: &str) {
        if let Some(slot) = self.lock().get_mut(id) {
            slot.active = Some(session.to_owned());
        }
    }

    /// Whether the client's page is on screen (`presence`).
    pub fn set_visible(&self, id: &str, visible: bool) {
        if let Some(slot) = self.lock().get_mut(id) {
            slot.visible = visible;
        }
    }

    /// Whether a phone is on screen: it shows every session's prompts, so nobody need
    /// be woken for one.
    pub fn anyone_looking(&self) -> bool {
        self.lock().values().any(|s| !s.probe && s.visible)
    }

    /// Whether a phone on screen has `session` open.
    pub fn looking_at(&self, session: &str) -> bool {
        self.lock()
            .values()
            .any(|s| !s.probe && s.visible && s.active.as_deref() == Some(session))
    }

    /// The client's device in the registry.
    pub fn device(&self, id: &str) -> Option<String> {
        self.lock().get(id).and_then(|s| s.device.clone())
    }

    /// The client's active session.
    pub fn active(&self, id: &str) -> Option<SessionId> {
        self.lock().get(id).and_then(|s| s.active.clone())
    }

    /// Clients whose active session is `session`.
    pub fn on_session(&self, session: &str) -> Vec<ClientId> {
        self.lock()
            .iter()
            .filter(|(_, s)| s.active.as_deref() == Some(session))
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How a client is named in messages to others ("Denied from Ana's phone").
    pub fn device_name(&self, id: &str) -> String {
        self.lock()
            .get(id)
            .and_then(|s| s.info.device.device_name.clone())
            .filter(|n| !n.trim().is_empty())
            .unwrap_or_else(|| id.to_owned())
    }

    /// Every phone connected, as others see them.
    pub fn infos(&self) -> Vec<ClientInfo> {
        self.lock()
            .values()
            .filter(|s| !s.probe)
            .map(|s| s.info.clone())
            .collect()
    }

    /// How many phones are connected.
    pub fn len(&self) -> usize {
        self.lock().values().filter(|s| !s.probe).count()
    }

    /// The registry ids of the devices connected now, each once however many
    /// connections it has, sorted.
    pub fn devices(&self) -> Vec<String> {
        let mut ids: Vec<String> = self
            .lock()
            .values()
            .filter_map(|s| s.device.clone())
            .collect();
        ids.sort();
        ids.dedup();
        ids
    }

    /// True when nobody is connected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `out` for one client.
    pub fn send_to(&self, id: &str, out: Outbound) {
        if let Some(slot) = self.lock().get(id) {
            push(slot, out);
        }
    }

    /// Queues a message for one client.
    pub fn send_msg(&self, id: &str, msg: &ServerMsg) {
        self.send_to(id, Outbound::Frame(frame(msg)));
    }

    /// Queues a message for an audience.
    pub fn publish(&self, audience: Audience<'_>, msg: &ServerMsg) {
        let frame = frame(msg);
        for (id, slot) in self.lock().iter().filter(|(_, s)| !s.probe) {
            let wanted = match audience {
                Audience::All => true,
                Audience::AllExcept(x) => id != x,
                Audience::Active(s) => slot.active.as_deref() == Some(s),
            };
            if wanted {
                push(slot, Outbound::Frame(frame.clone()));
            }
        }
    }
}

fn push(slot: &Slot, out: Outbound) {
    if slot.tx.try_send(out).is_err() && !slot.kick.is_cancelled() {
        tracing::warn!(client = %slot.info.client_id, "client fell behind; closing it (1013)");
        slot.kick.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DeviceInfo;

    fn join(clients: &Clients, id: &str, probe: bool) -> QueueRx {
        let (tx, rx) = queue(8, 1 << 20);
        let info = ClientInfo {
            client_id: id.into(),
            device: DeviceInfo::default(),
        };
        if probe {
            clients.register_probe(info, tx, CancellationToken::new());
        } else {
            clients.register(info, None, tx, CancellationToken::new());
        }
        rx
    }

    #[test]
    fn a_probe_gets_its_answers_but_is_neither_counted_listed_nor_told_the_news() {
        let clients = Clients::default();
        let mut phone = join(&clients, "c-phone", false);
        let mut probe = join(&clients, "c-probe", true);
        assert_eq!(clients.len(), 1, "one phone");
        let ids: Vec<String> = clients.infos().into_iter().map(|i| i.client_id).collect();
        assert_eq!(ids, ["c-phone"]);

        clients.publish(Audience::All, &ServerMsg::Pong { server_ts: 1 });
        assert!(phone.try_recv().is_some(), "the phone is told");
        assert!(probe.try_recv().is_none(), "the probe is not");

        clients.send_msg("c-probe", &ServerMsg::Pong { server_ts: 2 });
        assert!(probe.try_recv().is_some(), "the probe gets its own answer");
        assert!(clients.unregister("c-probe"));
        assert_eq!(clients.len(), 1);
    }

    #[test]
    fn a_phone_that_stops_reading_pins_no_more_than_its_byte_budget() {
        let (tx, mut rx) = queue(1024, 1000);
        let big = || Outbound::Frame(Arc::from("x".repeat(600)));
        // An empty queue takes a frame of any size: a replay must reach a reading phone.
        assert_eq!(
            tx.try_send(Outbound::Batch(vec![Arc::from("y".repeat(5000))])),
            Ok(())
        );
        assert_eq!(tx.try_send(big()), Err(QueueFull), "over the budget");
        assert_eq!(rx.try_recv().map(|o| o.len()), Some(5000));
        assert_eq!(tx.try_send(big()), Ok(()));
        assert_eq!(tx.try_send(big()), Err(QueueFull), "600 + 600 > 1000");
        assert_eq!(
            tx.try_send(Outbound::Frame(Arc::from("z".repeat(400)))),
            Ok(())
        );
        assert!(rx.try_recv().is_some() && rx.try_recv().is_some());
        assert!(rx.try_recv().is_none());
        assert_eq!(tx.try_send(big()), Ok(()), "drained: room again");

        let clients = Clients::default();
        let (tx, _rx) = queue(1024, 1000);
        let kick = CancellationToken::new();
        let info = ClientInfo {
            client_id: "c-slow".into(),
            device: DeviceInfo::default(),
        };
        clients.register(info, None, tx, kick.clone());
        for _ in 0..2 {
            clients.send_to("c-slow", big());
        }
        assert!(
            kick.is_cancelled(),
            "a phone past its budget is closed (1013)"
        );
    }
}
