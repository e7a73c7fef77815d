//! A phone's notification settings (docs/protocol.md "Notifications"): what it is told
//! after its welcome, and its `push_*` requests. Subscriptions belong to a paired
//! device, not to a connection, so a phone's choice holds across reconnects.

use super::{ClientId, Hub, Refusal};
use crate::protocol::{ClientMsg, ErrorCode, PushEvents, ServerMsg};
use crate::push::{Subscription, SubscriptionError};

/// Why a connection of no device cannot have notifications.
const NO_DEVICE: &str = "notifications belong to a paired device, and this connection has none (the computer does not check devices)";

impl Hub {
    /// `push_subscribe`, `push_unsubscribe`, `push_events`, `get_push_settings`: each
    /// answered with the device's `push_settings`.
    pub(super) async fn push_request(
        &self,
        client: &ClientId,
        msg: ClientMsg,
    ) -> Result<(), Refusal> {
        let push = &self.cfg.push;
        // Asking is always answered, with why notifications are off when they are.
        if let ClientMsg::GetPushSettings(_) = msg {
            let settings = self.push_settings(client).await;
            self.clients.send_msg(client, &settings);
            return Ok(());
        }
        let unavailable = |why: &str| Refusal::new(ErrorCode::PushUnavailable, why);
        if push.public_key.is_none() {
            return Err(unavailable(push.off_because));
        }
        let device = self
            .clients
            .device(client)
            .ok_or_else(|| unavailable(NO_DEVICE))?;
        let subs = push.subscriptions.clone();
        match msg {
            ClientMsg::PushSubscribe(m) => {
                let sub = Subscription::parse(&m.subscription, push.reach)
                    .map_err(|e| Refusal::new(ErrorCode::InvalidMessage, e.to_string()))?;
                let id = device.clone();
                blocking(move || subs.subscribe(&device, sub, m.events).map(|_| ())).await?;
                tracing::info!(device = %id, "a phone turned notifications on");
            }
            ClientMsg::PushUnsubscribe(_) => {
                blocking(move || subs.unsubscribe(&device).map(|_| ())).await?;
            }
            ClientMsg::PushEvents(m) => {
                let changed = blocking(move || subs.set_events(&device, m.events)).await?;
                if changed.is_none() {
                    return Err(Refusal::new(
                        ErrorCode::InvalidMessage,
                        "this device has no notification subscription; send push_subscribe first",
                    ));
                }
            }
            _ => {}
        }
        let settings = self.push_settings(client).await;
        self.clients.send_msg(client, &settings);
        Ok(())
    }

    /// This client's `push_settings`.
    pub(super) async fn push_settings(&self, client: &ClientId) -> ServerMsg {
        let push = &self.cfg.push;
        let off = |reason: &str| ServerMsg::PushSettings {
            available: false,
            application_server_key: None,
            subscribed: false,
            events: PushEvents::default(),
            reason: Some(reason.to_owned()),
        };
        let Some(key) = push.public_key.clone() else {
            return off(push.off_because);
        };
        let Some(device) = self.clients.device(client) else {
            return off(NO_DEVICE);
        };
        let subs = push.subscriptions.clone();
        match blocking(move || subs.of(&device)).await {
            Ok(entry) => ServerMsg::PushSettings {
                available: true,
                application_server_key: Some(key),
                subscribed: entry.is_some(),
                events: entry.map(|e| e.events).unwrap_or_default(),
                reason: None,
            },
            Err(refusal) => off(&refusal.message),
        }
    }
}

/// Runs a file operation off the runtime's threads; its error becomes a refusal that
/// names the file.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, SubscriptionError> + Send + 'static,
) -> Result<T, Refusal> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(err)) => Err(Refusal::new(ErrorCode::PushUnavailable, err.to_string())),
        Err(_) => Err(Refusal::new(
            ErrorCode::PushUnavailable,
            "the notification settings could not be read",
        )),
    }
}
