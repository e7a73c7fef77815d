//! The wire protocol between phones and the worker (docs/protocol.md, version 1).
//!
//! Everything that crosses the WebSocket is typed here, so the worker, the supervisor's
//! health gate, the tests and the benches agree on one definition. Parsing never panics
//! and never lets a malformed frame reach a session: [`parse_client_frame`] turns any text
//! into either a typed [`ClientMsg`] or a [`FrameError`] carrying the specific error code
//! and a message that names the field or limit at fault.

mod client;
pub mod deploy;
mod parse;
mod server;
#[cfg(test)]
mod tests;

pub use client::*;
pub use parse::{parse_client_frame, FrameError};
pub use server::*;

/// Protocol version of the token `auth` (and of the supervisor's probe).
pub const PROTOCOL_VERSION: u32 = 1;
/// Protocol version of the encrypted channel ([`crate::channel`]); the newest spoken.
pub const PROTOCOL_V2: u32 = 2;
/// Largest text frame accepted, in bytes; larger frames get `TOO_LARGE`.
pub const MAX_FRAME_BYTES: usize = 1024 * 1024;
/// Longest `input.data`, in characters.
pub const MAX_INPUT_CHARS: usize = 100_000;
/// Most files one `input` carries.
pub const MAX_ATTACHMENTS: usize = 4;
/// Largest file an `input` carries, decoded: its base64 and the rest of the frame fit
/// in [`MAX_FRAME_BYTES`], which also bounds the sum of several. The phone shrinks
/// photos to well under it.
pub const MAX_ATTACHMENT_BYTES: usize = 720 * 1024;
/// Longest attachment name, in characters.
pub const MAX_ATTACHMENT_NAME_CHARS: usize = 200;
/// Longest session name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// `user_question_response.answers`: questions answered at once, labels chosen for
/// one, and a label's length (Claude Code asks at most 4 questions of at most 4
/// options; the bounds keep what the answer becomes small whatever a client sends).
pub const MAX_ANSWERS: usize = 16;
/// See [`MAX_ANSWERS`].
pub const MAX_LABELS: usize = 32;
/// See [`MAX_ANSWERS`].
pub const MAX_LABEL_CHARS: usize = 1_000;
/// An input's `clientMessageId`.
pub const MAX_CLIENT_MESSAGE_ID_CHARS: usize = 64;
/// Longest `permission_response.directory`, in characters (PATH_MAX on Linux).
pub const MAX_DIRECTORY_CHARS: usize = 4096;
/// Most sessions a worker keeps at once.
pub const MAX_SESSIONS: usize = 5;
/// Most inputs waiting behind a busy agent, per session.
pub const MAX_QUEUED_INPUTS: usize = 10;
/// Messages kept per session for replay.
pub const HISTORY_LIMIT: usize = 500;
/// Tool results longer than this are cut, and marked `truncated`.
pub const MAX_TOOL_RESULT_CHARS: usize = 10_000;

/// Permission modes as phones name them. The agent has its own names for them
/// (see `agent`); keeping the two apart means a phone can never send the CLI a mode the
/// CLI would silently accept and misapply (it accepts unknown modes without complaint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum PermissionMode {
    /// Ask before every tool use (the CLI's `default`).
    #[serde(rename = "approve")]
    Approve,
    /// Edits allowed without asking.
    #[serde(rename = "acceptEdits")]
    AcceptEdits,
    /// Skip all prompts (the CLI's `bypassPermissions`); needs explicit confirmation.
    #[serde(rename = "auto")]
    Auto,
    /// Plan only, no changes.
    #[serde(rename = "plan")]
    Plan,
}

impl PermissionMode {
    /// Every mode, in the order phones list them.
    pub const ALL: [PermissionMode; 4] = [Self::Approve, Self::AcceptEdits, Self::Auto, Self::Plan];

    /// The wire name (`approve`, `acceptEdits`, `auto`, `plan`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::AcceptEdits => "acceptEdits",
            Self::Auto => "auto",
            Self::Plan => "plan",
        }
    }

    /// Parses a wire name; `None` for anything else, so callers answer `INVALID_MODE`.
    pub fn from_wire(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.as_str() == s)
    }
}

/// Milliseconds since the Unix epoch, the protocol's timestamp unit.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
