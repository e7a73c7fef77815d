//! The worker's end of the keeper channel: it tells the supervisor of every CLI it
//! starts (with the pipes), notes what a successor would need, lets go of the CLIs it
//! ends itself, and receives the CLIs a lost worker left to it.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use tokio::sync::{mpsc, oneshot};
use tokio_seqpacket::UnixSeqpacket;

use super::{kept, recv, send, AgentId, AgentNote, Kept, Msg, WireError};

/// The worker's handle on the keeper channel; cloned into every CLI it starts. Sending
/// never blocks or fails for the caller: a supervisor that is gone needs nothing.
#[derive(Debug, Clone)]
pub struct Link {
    out: mpsc::UnboundedSender<Outgoing>,
    /// This worker's mark, under which its CLIs are marked.
    worker: std::sync::Arc<str>,
}

/// A message on its way, and who wants to know once it is sent.
type Outgoing = (Msg, Vec<OwnedFd>, Option<oneshot::Sender<bool>>);

/// Why the link could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// No socket there, or it refused.
    #[error("cannot reach the supervisor's keeper at {path}: {source}")]
    Connect {
        /// Where.
        path: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Something else listens there: the CLIs' pipes are not handed to it.
    #[error("the keeper socket at {path} is not held by this worker's supervisor (pid {found:?}, expected {expected}); CLIs will not outlive this worker")]
    Impostor {
        /// Where.
        path: String,
        /// The listener's pid.
        found: Option<i32>,
        /// The parent's.
        expected: i32,
    },
}

impl Link {
    /// Connects to the supervisor's keeper at `path`, which must be held by this
    /// process's parent, for the worker it marked `worker`. Returns the link and where
    /// the CLIs handed to this worker arrive.
    pub async fn connect(
        path: &Path,
        worker: &str,
    ) -> Result<(Self, mpsc::Receiver<Kept>), LinkError> {
        let shown = path.display().to_string();
        let socket = UnixSeqpacket::connect(path)
            .await
            .map_err(|source| LinkError::Connect {
                path: shown.clone(),
                source,
            })?;
        let expected = nix::unistd::getppid().as_raw();
        let found = socket.peer_cred().ok().and_then(|c| c.pid());
        if found != Some(expected) {
            return Err(LinkError::Impostor {
                path: shown,
                found,
                expected,
            });
        }
        Ok(Self::over(socket, worker))
    }

    /// A link over a connected socket for the worker marked `worker` (the caller
    /// checked who is at the other end).
    pub fn over(socket: UnixSeqpacket, worker: &str) -> (Self, mpsc::Receiver<Kept>) {
        let (out, mut outgoing) = mpsc::unbounded_channel::<Outgoing>();
        let (adopted_tx, adopted) = mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    next = outgoing.recv() => {
                        let Some((msg, fds, sent)) = next else { return };
                        let result = send(&socket, &msg, &fds).await;
                        if let Err(err) = &result {
                            tracing::warn!(%err, "cannot tell the supervisor about a CLI");
                        }
                        if let Some(sent) = sent {
                            let _ = sent.send(result.is_ok());
                        }
                    }
                    incoming = recv(&socket) => match incoming {
                        Ok(Some((Msg::Adopt { agent, note }, fds))) => match kept(agent, note, fds) {
                            Ok(k) => {
                                if adopted_tx.send(k).await.is_err() {
                                    return;
                                }
                            }
                            Err(err) => tracing::warn!(%err, "ignoring a CLI handed over"),
                        },
                        Ok(Some((other, _))) => tracing::warn!(?other, "unexpected keeper message; ignored"),
                        Ok(None) => return,
                        Err(WireError::Io(err)) => {
                            tracing::warn!(%err, "keeper channel failed; CLIs will not outlive this worker");
                            return;
                        }
                        // One bad message; the channel itself is fine.
                        Err(err) => tracing::warn!(%err, "ignoring a keeper message"),
                    },
                }
            }
        });
        let worker = worker.into();
        (Self { out, worker }, adopted)
    }

    /// The mark of a CLI this worker starts: `<worker mark>.<session>.<generation>`.
    pub fn mark_for(&self, session: &str, generation: u64) -> String {
        format!("{}.{session}.{generation}", self.worker)
    }

    /// The supervisor holds the CLI's pipes from now on (duplicates are sent).
    pub fn keep(&self, agent: AgentId, pipes: [BorrowedFd<'_>; 3]) {
        let fds: std::io::Result<Vec<OwnedFd>> = pipes
            .iter()
            .map(|fd| fd.as_fd().try_clone_to_owned())
            .collect();
        match fds {
            Ok(fds) => {
                let _ = self.out.send((Msg::Keep { agent }, fds, None));
            }
            Err(err) => tracing::warn!(%err, "cannot hand a CLI's pipes to the supervisor"),
        }
    }

    /// What a successor would need to carry on with the CLI. The answer says, once the
    /// note is sent, whether the supervisor has it: from then on this worker's death
    /// does not lose it (the keeper reads a dead worker's last words).
    pub fn note(&self, mark: &str, note: AgentNote) -> oneshot::Receiver<bool> {
        let mark = mark.to_owned();
        let (sent, answer) = oneshot::channel();
        let _ = self
            .out
            .send((Msg::Note { mark, note }, Vec::new(), Some(sent)));
        answer
    }

    /// This worker ends the CLI itself: the supervisor lets go of its pipes.
    pub fn release(&self, mark: &str) {
        let mark = mark.to_owned();
        let _ = self.out.send((Msg::Release { mark }, Vec::new(), None));
    }
}
