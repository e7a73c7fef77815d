//! A session as saved on disk: its settings, the agent's session id (for `--resume`)
//! and its history. Written atomically after every turn, so a worker killed at any
//! moment comes back with everything up to the last finished turn at least.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::protocol::{MessageType, PermissionMode, ServerMsg, HISTORY_LIMIT};
use crate::rules::Rule;
use crate::store::{atomic_write_with, StoreError};

/// File format version, to refuse (and keep aside) files from a future format.
const RECORD_VERSION: u32 = 1;

/// Everything needed to bring a session back.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// Format version.
    pub version: u32,
    /// Chroxy's session id.
    pub session_id: String,
    /// Display name.
    pub name: String,
    /// Working directory.
    pub cwd: PathBuf,
    /// Chosen model.
    pub model: Option<String>,
    /// Permission mode.
    pub permission_mode: PermissionMode,
    /// The CLI's session id, for `--resume`.
    pub agent_session_id: Option<String>,
    /// "Always" rules kept to this session (absent in files from before they existed).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<Rule>,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Milliseconds since the epoch.
    pub last_activity_at: u64,
    /// The replayable history, oldest first (≤ [`HISTORY_LIMIT`]). Shared, so that the
    /// copy handed to the saver after every turn costs pointers, not megabytes of text.
    pub history: VecDeque<Arc<ServerMsg>>,
}

/// Why a saved session could not be read.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// Unreadable.
    #[error("reading {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Not a session record.
    #[error("{path} is not a valid session file: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

impl SessionRecord {
    /// Its last turn began (the input is saved) and has no result saved: it is still
    /// running, or the worker or CLI running it died.
    pub fn cut_short(&self) -> bool {
        self.history
            .iter()
            .rev()
            .find_map(|m| match &**m {
                ServerMsg::Result { .. } => Some(false),
                ServerMsg::Message {
                    message_type: MessageType::UserInput,
                    ..
                } => Some(true),
                _ => None,
            })
            .unwrap_or(false)
    }

    /// The file a session lives in.
    pub fn path_in(dir: &Path, session_id: &str) -> PathBuf {
        dir.join(format!("{session_id}.json"))
    }

    /// Reads one record.
    pub fn load(path: &Path) -> Result<Self, RecordError> {
        let text = std::fs::read(path).map_err(|source| RecordError::Read {
            path: path.into(),
            source,
        })?;
        let mut rec: SessionRecord =
            serde_json::from_slice(&text).map_err(|e| RecordError::Invalid {
                path: path.into(),
                message: e.to_string(),
            })?;
        if rec.version != RECORD_VERSION {
            return Err(RecordError::Invalid {
                path: path.into(),
                message: format!(
                    "format version {} (this build reads {RECORD_VERSION})",
                    rec.version
                ),
            });
        }
        while rec.history.len() > HISTORY_LIMIT {
            rec.history.pop_front();
        }
        Ok(rec)
    }

    /// Writes it atomically.
    pub fn save(&self, dir: &Path) -> Result<(), StoreError> {
        // Streamed: a history near its byte budget is megabytes of text.
        atomic_write_with(&Self::path_in(dir, &self.session_id), |out| {
            serde_json::to_writer(out, self).map_err(std::io::Error::from)
        })
    }

    /// New record with the current format version.
    pub fn new(session_id: String, name: String, cwd: PathBuf, now: u64) -> Self {
        Self {
            version: RECORD_VERSION,
            session_id,
            name,
            cwd,
            model: None,
            permission_mode: PermissionMode::Approve,
            agent_session_id: None,
            rules: Vec::new(),
            created_at: now,
            last_activity_at: now,
            history: VecDeque::new(),
        }
    }
}

/// Reads every session file in `dir`, each with its path, changing nothing (for
/// `chroxy rules list`, which may run beside a worker).
pub fn read_all(dir: &Path) -> Vec<(PathBuf, Result<SessionRecord, RecordError>)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().and_then(|e| e.to_str()) == Some("json"))
        .map(|path| {
            let rec = SessionRecord::load(&path);
            (path, rec)
        })
        .collect()
}

/// Loads every session in `dir`, newest activity first. A file that cannot be read is
/// moved aside as `*.corrupt` (never deleted) and reported; the rest still load.
pub fn load_all(dir: &Path) -> Vec<SessionRecord> {
    let mut records = Vec::new();
    for (path, rec) in read_all(dir) {
        match rec {
            Ok(rec) => records.push(rec),
            Err(err) => {
                let aside =
                    path.with_extension(format!("json.corrupt-{}", crate::protocol::now_ms()));
                tracing::error!(%err, kept_as = %aside.display(), "a saved session could not be read; it was set aside");
                let _ = std::fs::rename(&path, &aside);
            }
        }
    }
    records.sort_by_key(|r| std::cmp::Reverse(r.last_activity_at));
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(kind: MessageType) -> Arc<ServerMsg> {
        Arc::new(ServerMsg::Message {
            message_type: kind,
            content: "x".into(),
            timestamp: 0,
            session_id: "s".into(),
            client_message_id: None,
            attachments: Vec::new(),
        })
    }

    fn result() -> Arc<ServerMsg> {
        Arc::new(ServerMsg::Result {
            cost: None,
            duration: None,
            usage: serde_json::Value::Null,
            session_id: "s".into(),
            queue_length: None,
        })
    }

    #[test]
    fn a_turn_is_cut_short_when_its_input_is_saved_and_no_result_follows() {
        let mut rec = SessionRecord::new("s".into(), "n".into(), "/".into(), 0);
        assert!(!rec.cut_short(), "nothing asked yet");
        rec.history.push_back(message(MessageType::UserInput));
        rec.history.push_back(message(MessageType::Assistant));
        assert!(rec.cut_short(), "asked, answered in part, never ended");
        rec.history.push_back(result());
        assert!(!rec.cut_short(), "ended");
        rec.history.push_back(message(MessageType::System));
        assert!(!rec.cut_short(), "a notice after the end is no turn");
    }
}
