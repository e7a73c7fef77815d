//! Writes a session's record to disk whenever it changes, newest value first, in
//! order, off the async threads.

use std::path::PathBuf;

use tokio::sync::watch;

use super::clients::{Audience, Clients};
use super::record::SessionRecord;
use crate::protocol::ServerMsg;

/// A record to write, numbered so the session can wait until a given one is on disk.
pub(crate) type Pending = Option<(u64, SessionRecord)>;

/// Writes the newest record whenever it changes, in order, off the async threads, and
/// reports the number of each record once it is on disk (or failed) in `written`.
/// A failed write (full disk) keeps the previous file intact and tells the phones.
pub(crate) async fn run_saver(
    mut rx: watch::Receiver<Pending>,
    written: watch::Sender<u64>,
    dir: PathBuf,
    clients: Clients,
) {
    while rx.changed().await.is_ok() {
        let Some((number, rec)) = rx.borrow_and_update().clone() else {
            continue;
        };
        let dir2 = dir.clone();
        let id = rec.session_id.clone();
        let result = tokio::task::spawn_blocking(move || rec.save(&dir2)).await;
        match result {
            Ok(Ok(())) => {}
            Ok(Err(err)) => {
                tracing::error!(%err, session = %id, "could not save session state");
                clients.publish(
                    Audience::All,
                    &ServerMsg::SessionError {
                        message: format!("Could not save this session's state ({err}); the last saved state is kept. Free some disk space."),
                        code: None,
                        session_id: Some(id),
                    },
                );
            }
            Err(join) => tracing::error!(%join, "session saver panicked"),
        }
        written.send_replace(number);
    }
}
