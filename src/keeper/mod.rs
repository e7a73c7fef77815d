//! The agent keeper: the pipes of every Claude Code CLI a supervised worker runs are
//! also held by its supervisor, so that the worker's death (a crash, `kill -9`) does
//! not cost the CLIs. A CLI whose stdin and stdout stay open elsewhere sees no EOF and
//! no broken pipe: it carries on, its output waiting in the pipe. When a standby takes
//! over, the supervisor hands the pipes to it and the same process finishes its turn
//! there (docs/architecture.md, `keeper/`). Nobody adopts them otherwise: the supervisor
//! kills them before any successor starts, so two CLIs never run one conversation.
//!
//! The channel is a Unix seqpacket socket (one message, with its file descriptors, per
//! packet) that the supervisor listens on for one worker, in its private state
//! directory, and that each end checks by the peer's pid: only the worker it started may
//! connect, and a worker hands pipes only to its parent. An agent's tool (same user)
//! that binds or connects there gets nothing.
//!
//! - [`link`]: the worker's end; [`keeping`]: the supervisor's, with the [`Orphans`]
//!   of a lost worker waiting for a verdict.

pub mod keeping;
pub mod link;

pub use keeping::{Keeping, Orphans};
pub use link::Link;

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::OwnedFd;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_seqpacket::ancillary::{AncillaryMessageWriter, OwnedAncillaryMessage};
use tokio_seqpacket::UnixSeqpacket;

use crate::protocol::{ServerMsg, SlashCommand};

/// The environment variable that tells a supervised worker where its keeper listens.
/// (`CHROXY_*`: agents never inherit it.)
pub const KEEPER_VAR: &str = "CHROXY_KEEPER";

/// The largest message: a note with every slash command (≤ 200, each cut to a few
/// hundred bytes) and a waiting permission request or two. A longer one is refused.
const MAX_MESSAGE: usize = 192 * 1024;

/// Which CLI: its mark (unique per supervisor: `<worker mark>.<session>.<generation>`,
/// also in its process tree's environment, [`crate::process::WORKER_MARK`]), its
/// session, and its process (pid and start time, which with the pid names one process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentId {
    /// `<worker mark>.<session>.<generation>`.
    pub mark: String,
    /// Chroxy's session id.
    pub session: String,
    /// The CLI's pid.
    pub pid: u32,
    /// Its start time in clock ticks since boot (`/proc/<pid>/stat`), if known.
    pub start_ticks: Option<u64>,
}

/// A control request of the CLI that a phone has not answered yet.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ask {
    /// The CLI's request id, which the answer carries.
    pub request_id: String,
    /// The `can_use_tool` request as the CLI sent it.
    pub request: Value,
}

/// What a worker that takes a CLI over must know that is not on disk: whether a turn is
/// running and the input it answers, what it waits on, the CLI's slash commands, and its
/// cost so far (the CLI counts from its start; a turn's cost is the difference).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentNote {
    /// A turn is running.
    pub busy: bool,
    /// The user's input the running turn answers, as the session's history keeps it.
    /// The worker notes it before the CLI reads it and has it on disk only a moment
    /// after: a successor whose saved record lacks it adds it, so that the phone, which
    /// sends it again, is told it is taken rather than given the turn twice.
    #[serde(default)]
    pub input: Option<Arc<ServerMsg>>,
    /// Unanswered permission requests and questions.
    #[serde(default)]
    pub asks: Vec<Ask>,
    /// The slash commands the CLI listed.
    #[serde(default)]
    pub commands: Vec<SlashCommand>,
    /// `total_cost_usd` of its last result.
    #[serde(default)]
    pub cost: Option<f64>,
    /// The turn that ended last (not busy), its input through its `result`, as the
    /// session's history keeps them. The worker notes it before any phone hears the
    /// turn is over and has it on disk only a moment after: a successor whose saved
    /// record lacks the result adds them. Empty when the turn was too long to note (it
    /// was on disk first then).
    #[serde(default)]
    pub ended: Vec<Arc<ServerMsg>>,
}

/// The messages of the keeper channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Msg {
    /// Worker → supervisor, with the CLI's stdin, stdout and stderr: hold them.
    Keep {
        /// The CLI.
        agent: AgentId,
    },
    /// Worker → supervisor: what a successor must know of the CLI now.
    Note {
        /// Its mark.
        mark: String,
        /// The note.
        note: AgentNote,
    },
    /// Worker → supervisor: the worker ends this CLI itself; let go of its pipes (else
    /// the CLI would never see its stdin close).
    Release {
        /// Its mark.
        mark: String,
    },
    /// Supervisor → worker, with the three pipes: carry on with this CLI.
    Adopt {
        /// The CLI.
        agent: AgentId,
        /// What its last worker noted.
        note: AgentNote,
    },
}

impl Msg {
    /// How many descriptors travel with it.
    fn fds(&self) -> usize {
        match self {
            Msg::Keep { .. } | Msg::Adopt { .. } => 3,
            Msg::Note { .. } | Msg::Release { .. } => 0,
        }
    }
}

/// A CLI's three pipes, as the worker that ran it holds them.
#[derive(Debug)]
pub struct Pipes {
    /// Its stdin (write end).
    pub stdin: OwnedFd,
    /// Its stdout (read end).
    pub stdout: OwnedFd,
    /// Its stderr (read end).
    pub stderr: OwnedFd,
}

impl Pipes {
    /// Three pipes, or nothing: a worker must not make its supervisor hold (or hand a
    /// successor) a socket, a file or its own control channel in their place.
    fn from_vec(fds: Vec<OwnedFd>) -> Option<Self> {
        use std::os::unix::fs::FileTypeExt;
        let [stdin, stdout, stderr]: [OwnedFd; 3] = fds.try_into().ok()?;
        let pipe = |fd: OwnedFd| {
            let file = std::fs::File::from(fd);
            let fifo = file.metadata().is_ok_and(|m| m.file_type().is_fifo());
            fifo.then(|| OwnedFd::from(file))
        };
        Some(Self {
            stdin: pipe(stdin)?,
            stdout: pipe(stdout)?,
            stderr: pipe(stderr)?,
        })
    }

    fn to_vec(&self) -> std::io::Result<Vec<OwnedFd>> {
        [&self.stdin, &self.stdout, &self.stderr]
            .into_iter()
            .map(OwnedFd::try_clone)
            .collect()
    }
}

/// A CLI held by the supervisor: who it is, its pipes, and its last note.
#[derive(Debug)]
pub struct Kept {
    /// The CLI.
    pub agent: AgentId,
    /// Its pipes.
    pub pipes: Pipes,
    /// What its worker last noted.
    pub note: AgentNote,
}

/// Why a keeper message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    /// The socket failed.
    #[error("keeper channel: {0}")]
    Io(#[from] std::io::Error),
    /// Not one of ours.
    #[error("keeper channel: unreadable message: {0}")]
    Invalid(#[from] serde_json::Error),
    /// Too long, descriptors cut off, or the wrong number of them.
    #[error("keeper channel: {0}")]
    Malformed(&'static str),
}

/// Sends one message with its descriptors (the kernel duplicates them for the peer).
pub(crate) async fn send(
    socket: &UnixSeqpacket,
    msg: &Msg,
    fds: &[OwnedFd],
) -> Result<(), WireError> {
    if fds.len() != msg.fds() {
        return Err(WireError::Malformed("wrong number of descriptors"));
    }
    let body = serde_json::to_vec(msg)?;
    if body.len() > MAX_MESSAGE {
        return Err(WireError::Malformed("message too long"));
    }
    let mut space = [0u8; 128];
    let mut ancillary = AncillaryMessageWriter::new(&mut space);
    if !fds.is_empty() {
        let borrowed: Vec<&OwnedFd> = fds.iter().collect();
        ancillary
            .add_fds(&borrowed)
            .map_err(|_| WireError::Malformed("no room for the descriptors"))?;
    }
    socket
        .send_vectored_with_ancillary(&[IoSlice::new(&body)], &mut ancillary)
        .await?;
    Ok(())
}

/// Receives one message; `None` once the peer has closed. A message with the wrong
/// number of descriptors is refused, and the descriptors are closed.
pub(crate) async fn recv(socket: &UnixSeqpacket) -> Result<Option<(Msg, Vec<OwnedFd>)>, WireError> {
    let mut body = vec![0u8; MAX_MESSAGE + 1];
    let mut space = [0u8; 128];
    let (read, ancillary) = socket
        .recv_vectored_with_ancillary(&mut [IoSliceMut::new(&mut body)], &mut space)
        .await?;
    let truncated = ancillary.is_truncated();
    let mut fds = Vec::new();
    for message in ancillary.into_messages() {
        if let OwnedAncillaryMessage::FileDescriptors(received) = message {
            fds.extend(received);
        }
    }
    if read == 0 && fds.is_empty() {
        return Ok(None);
    }
    if truncated {
        return Err(WireError::Malformed("descriptors cut off"));
    }
    if read > MAX_MESSAGE {
        return Err(WireError::Malformed("message too long"));
    }
    let msg: Msg = serde_json::from_slice(&body[..read])?;
    if fds.len() != msg.fds() {
        return Err(WireError::Malformed("wrong number of descriptors"));
    }
    Ok(Some((msg, fds)))
}

/// A kept CLI from a message and its descriptors.
fn kept(agent: AgentId, note: AgentNote, fds: Vec<OwnedFd>) -> Result<Kept, WireError> {
    let pipes = Pipes::from_vec(fds).ok_or(WireError::Malformed("wrong number of descriptors"))?;
    Ok(Kept { agent, pipes, note })
}

#[cfg(test)]
mod tests;
