//! How views (status page, CLI, tray window) talk to a running supervisor: they watch
//! its [`Status`] and send it [`Action`]s, each answered once. A view holds no state of
//! its own, so every view shows the same truth.

use std::sync::Arc;

use tokio::sync::{broadcast, mpsc, oneshot, watch};

use super::status::{Action, Status};

/// Why an action was not carried out. The message says what to do instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ActionError {
    /// No release with that id in the store.
    #[error("there is no release `{0}`; `chroxy releases` lists them")]
    UnknownRelease(String),
    /// The release's binary no longer matches its manifest.
    #[error("release `{0}` was refused: its binary does not match the checksum in its manifest (it was changed or damaged after it was added); deploy it again")]
    ChecksumMismatch(String),
    /// The supervisor is shutting down and takes no more actions.
    #[error("the supervisor is shutting down")]
    Stopping,
    /// Anything else, already worded for a person.
    #[error("{0}")]
    Refused(String),
}

/// One action and where its answer goes.
#[derive(Debug)]
pub struct Request {
    /// What to do.
    pub action: Action,
    /// A short human-readable confirmation, or why not.
    pub reply: oneshot::Sender<Result<String, ActionError>>,
}

/// A view's connection to the supervisor. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Handle {
    status: watch::Receiver<Status>,
    actions: mpsc::Sender<Request>,
    /// How many token reloads the supervisor has accepted: whoever shows the pairing
    /// link reads the token again on each, so that no dead link is shown after a
    /// rotation. A count, not the token: the status views must never hold the secret.
    token_reloads: Arc<watch::Sender<u64>>,
    /// What phones are notified of ([`crate::push`]), for views that notify too (the
    /// tray app's desktop notifications).
    notices: broadcast::Sender<crate::push::Notice>,
    /// The receiver made with the channel, which has every notice since the start: the
    /// first view to ask gets it (the tray app, which asks once its window is up, would
    /// otherwise miss a rollback made while it started).
    first_notices: Arc<std::sync::Mutex<Option<broadcast::Receiver<crate::push::Notice>>>>,
    started: std::time::Instant,
}

/// Notices a slow view may fall behind by before it misses the oldest.
const NOTICES_KEPT: usize = 16;

impl Handle {
    /// Wraps the two channels (the supervisor makes these; tests make their own).
    pub fn new(status: watch::Receiver<Status>, actions: mpsc::Sender<Request>) -> Self {
        let (notices, first) = broadcast::channel(NOTICES_KEPT);
        Self {
            status,
            actions,
            token_reloads: Arc::new(watch::Sender::new(0)),
            notices,
            first_notices: Arc::new(std::sync::Mutex::new(Some(first))),
            started: std::time::Instant::now(),
        }
    }

    /// The notices phones are notified of: the first caller gets every one since the
    /// supervisor started (up to [`NOTICES_KEPT`] it has not read), later ones those
    /// from now on.
    pub fn notices(&self) -> broadcast::Receiver<crate::push::Notice> {
        let first = self
            .first_notices
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        first.unwrap_or_else(|| self.notices.subscribe())
    }

    /// Where the supervisor tells its views of a notice.
    pub(crate) fn notice_sender(&self) -> broadcast::Sender<crate::push::Notice> {
        self.notices.clone()
    }

    /// The status now, with the uptime and the canary's sentence as of this call.
    pub fn status(&self) -> Status {
        let mut status = self.status.borrow().clone();
        status.uptime_ms = self.started.elapsed().as_millis() as u64;
        if let Some(canary) = &mut status.canary {
            canary.summary = Some(canary.describe(crate::protocol::now_ms()));
        }
        status
    }

    /// A receiver that wakes on every change.
    pub fn watch(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// A receiver that wakes each time the supervisor has taken a rotated API token
    /// ([`Action::ReloadToken`] answered `Ok`): from then on its workers accept only
    /// the token now in the store.
    pub fn token_reloads(&self) -> watch::Receiver<u64> {
        self.token_reloads.subscribe()
    }

    /// Asks for `action` and waits for the supervisor's answer (it answers once the
    /// action is under way, not when a restart has finished: watch the status for that).
    pub async fn act(&self, action: Action) -> Result<String, ActionError> {
        let reloads_token = matches!(action, Action::ReloadToken);
        let (reply, answer) = oneshot::channel();
        self.actions
            .send(Request { action, reply })
            .await
            .map_err(|_| ActionError::Stopping)?;
        let answer = answer.await.unwrap_or(Err(ActionError::Stopping));
        if reloads_token && answer.is_ok() {
            self.token_reloads.send_modify(|n| *n += 1);
        }
        answer
    }
}
