//! What a worker tells whoever started it, as JSON lines on its stdout. The supervisor
//! reads these; so do tests that start a worker on port 0 and need to learn the port.

use serde::{Deserialize, Serialize};

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Listening; phones can connect.
    Ready {
        /// The bound port on 127.0.0.1.
        port: u16,
        /// The worker's process id.
        pid: u32,
    },
}

impl WorkerEvent {
    /// One JSON line (with the newline).
    pub fn to_line(&self) -> String {
        // A flat enum of integers serializes infallibly.
        let mut line = serde_json::to_string(self).unwrap_or_default();
        line.push('\n');
        line
    }
}
