//! Connected clients and fan-out to them.
//!
//! Each client has a bounded outbound queue drained by its connection task. Publishing
//! never waits: a client whose queue is full is too slow, and is kicked (its connection
//! closes with 1013 and it resyncs from the history replay on reconnect) rather than
//! slowing every other phone or growing memory without bound.

use std::collections::HashMap;
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
    /// Active clients but one.
    ActiveExcept(&'a str, &'a str),
}

struct Slot {
    tx: mpsc::Sender<Outbound>,
    kick: CancellationToken,
    info: ClientInfo,
    active: Option<SessionId>,
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
    pub fn register(&self, info: ClientInfo, tx: mpsc::Sender<Outbound>, kick: CancellationToken) {
        self.insert(info, tx, kick, false);
    }

    /// Adds the supervisor's health probe: it gets the answers to its own requests,
    /// nothing published to everyone, and is neither counted nor listed.
    pub fn register_probe(
        &self,
        info: ClientInfo,
        tx: mpsc::Sender<Outbound>,
        kick: CancellationToken,
    ) {
        self.insert(info, tx, kick, true);
    }

    fn insert(
        &self,
        info: ClientInfo,
        tx: mpsc::Sender<Outbound>,
        kick: CancellationToken,
        probe: bool,
    ) {
        let id = info.client_id.clone();
        self.lock().insert(
            id,
            Slot {
                tx,
                kick,
                info,
                active: None,
                probe,
            },
        );
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
                Audience::ActiveExcept(s, x) => slot.active.as_deref() == Some(s) && id != x,
            };
            if wanted {
                push(slot, Outbound::Frame(frame.clone()));
            }
        }
    }
}

fn push(slot: &Slot, out: Outbound) {
    if let Err(mpsc::error::TrySendError::Full(_)) = slot.tx.try_send(out) {
        if !slot.kick.is_cancelled() {
            tracing::warn!(client = %slot.info.client_id, "client fell behind; closing it (1013)");
            slot.kick.cancel();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::DeviceInfo;

    fn join(clients: &Clients, id: &str, probe: bool) -> mpsc::Receiver<Outbound> {
        let (tx, rx) = mpsc::channel(8);
        let info = ClientInfo {
            client_id: id.into(),
            device: DeviceInfo::default(),
        };
        if probe {
            clients.register_probe(info, tx, CancellationToken::new());
        } else {
            clients.register(info, tx, CancellationToken::new());
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
        assert!(phone.try_recv().is_ok(), "the phone is told");
        assert!(probe.try_recv().is_err(), "the probe is not");

        clients.send_msg("c-probe", &ServerMsg::Pong { server_ts: 2 });
        assert!(probe.try_recv().is_ok(), "the probe gets its own answer");
        assert!(clients.unregister("c-probe"));
        assert_eq!(clients.len(), 1);
    }
}
