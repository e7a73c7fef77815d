//! The questions a session's agent is waiting on: permission prompts and
//! AskUserQuestion. Owned by the session task, so answers are applied one at a time in
//! arrival order; `take` removing the entry is what makes the first answer the only one.
//!
//! The hub keeps a [`PromptIndex`] (prompt id → session) to route answers, which carry
//! only the prompt's id. Every entry added here is removed from the index again when the
//! prompt is answered, expires, is withdrawn, or its session ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::Value;
use tokio::time::{Duration, Instant};

use crate::protocol::ServerMsg;
use crate::rules::Offer;

/// What the agent asked.
#[derive(Debug, Clone)]
pub(crate) enum Ask {
    /// `can_use_tool` for an ordinary tool.
    Permission {
        tool: String,
        description: String,
        input: Value,
        /// What "Always" remembers for it, as the phones were told.
        offer: Option<Offer>,
    },
    /// `can_use_tool` for AskUserQuestion.
    Question { input: Value },
}

/// One unanswered prompt.
#[derive(Debug, Clone)]
pub(crate) struct Prompt {
    /// The id phones answer with: the CLI's request id for permissions, the tool use id
    /// for questions (docs/protocol.md names them so).
    pub id: String,
    /// The CLI's control request id, which the answer must carry.
    pub cli_request: String,
    pub ask: Ask,
    pub deadline: Instant,
}

impl Prompt {
    /// The message phones get, with the time left at `now`.
    pub fn to_msg(&self, session_id: &str, now: Instant) -> ServerMsg {
        match &self.ask {
            Ask::Permission {
                tool,
                description,
                input,
                offer,
            } => ServerMsg::PermissionRequest {
                request_id: self.id.clone(),
                tool: tool.clone(),
                description: description.clone(),
                input: input.clone(),
                remaining_ms: self.deadline.saturating_duration_since(now).as_millis() as u64,
                session_id: session_id.to_owned(),
                always: offer.as_ref().map(Offer::to_wire),
            },
            Ask::Question { input } => ServerMsg::UserQuestion {
                tool_use_id: self.id.clone(),
                questions: input.get("questions").cloned().unwrap_or(Value::Null),
                session_id: session_id.to_owned(),
            },
        }
    }
}

/// Prompt id → session, for routing answers. Shared by the hub and every session.
#[derive(Debug, Clone, Default)]
pub struct PromptIndex(Arc<Mutex<HashMap<String, String>>>);

impl PromptIndex {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The session waiting for this prompt id.
    pub fn session_of(&self, prompt: &str) -> Option<String> {
        self.lock().get(prompt).cloned()
    }

    /// Number of prompts waiting across all sessions.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing is waiting anywhere.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A session's waiting prompts.
#[derive(Debug)]
pub(crate) struct Prompts {
    session: String,
    timeout: Duration,
    waiting: HashMap<String, Prompt>,
    index: PromptIndex,
}

impl Prompts {
    pub fn new(session: String, timeout: Duration, index: PromptIndex) -> Self {
        Self {
            session,
            timeout,
            waiting: HashMap::new(),
            index,
        }
    }

    /// The index every session shares: whether a prompt still waits, from anywhere.
    pub fn index(&self) -> PromptIndex {
        self.index.clone()
    }

    /// Registers a prompt; returns it with its deadline set. The id phones see is the
    /// agent's own unless another waiting prompt (of any session) already uses it: ids
    /// come from separate processes, and an answer must never reach the wrong one.
    pub fn add(&mut self, id: String, cli_request: String, ask: Ask, now: Instant) -> &Prompt {
        let id = {
            let mut index = self.index.lock();
            let id = if index.contains_key(&id) {
                let fresh = super::new_id("p");
                tracing::warn!(agent_id = %id, %fresh, "prompt id already in use; renamed for phones");
                fresh
            } else {
                id
            };
            index.insert(id.clone(), self.session.clone());
            id
        };
        let prompt = Prompt {
            id: id.clone(),
            cli_request,
            ask,
            deadline: now + self.timeout,
        };
        self.waiting.entry(id).or_insert(prompt)
    }

    /// The CLI request ids of the waiting prompts.
    pub fn cli_requests(&self) -> impl Iterator<Item = &str> {
        self.waiting.values().map(|p| p.cli_request.as_str())
    }

    /// The waiting prompt with this id, left in place.
    pub fn get(&self, id: &str) -> Option<&Prompt> {
        self.waiting.get(id)
    }

    /// Removes and returns the prompt: the first caller gets it, later ones `None`.
    pub fn take(&mut self, id: &str) -> Option<Prompt> {
        let p = self.waiting.remove(id)?;
        self.index.lock().remove(id);
        Some(p)
    }

    /// Puts back a prompt taken by mistake (an answer of the wrong kind), deadline kept.
    pub fn put_back(&mut self, prompt: Prompt) {
        self.index
            .lock()
            .insert(prompt.id.clone(), self.session.clone());
        self.waiting.insert(prompt.id.clone(), prompt);
    }

    /// The prompt with this CLI request id (for `control_cancel_request`).
    pub fn take_by_cli_request(&mut self, cli_request: &str) -> Option<Prompt> {
        let id = self
            .waiting
            .values()
            .find(|p| p.cli_request == cli_request)?
            .id
            .clone();
        self.take(&id)
    }

    /// When the next prompt times out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.waiting.values().map(|p| p.deadline).min()
    }

    /// Removes and returns every prompt whose deadline has passed.
    pub fn take_expired(&mut self, now: Instant) -> Vec<Prompt> {
        let ids: Vec<String> = self
            .waiting
            .values()
            .filter(|p| p.deadline <= now)
            .map(|p| p.id.clone())
            .collect();
        ids.iter().filter_map(|id| self.take(id)).collect()
    }

    /// Removes and returns everything (session ending, agent gone).
    pub fn take_all(&mut self) -> Vec<Prompt> {
        let ids: Vec<String> = self.waiting.keys().cloned().collect();
        ids.iter().filter_map(|id| self.take(id)).collect()
    }

    /// The messages a newly attached phone needs, oldest first.
    pub fn messages(&self, now: Instant) -> Vec<ServerMsg> {
        let mut waiting: Vec<&Prompt> = self.waiting.values().collect();
        waiting.sort_by_key(|p| p.deadline);
        waiting
            .into_iter()
            .map(|p| p.to_msg(&self.session, now))
            .collect()
    }
}

impl Drop for Prompts {
    fn drop(&mut self) {
        // Belt and braces: a session task that ends for any reason leaves no route behind.
        let mut index = self.index.lock();
        for id in self.waiting.keys() {
            index.remove(id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ask() -> Ask {
        Ask::Permission {
            tool: "Bash".into(),
            description: "d".into(),
            input: json!({}),
            offer: None,
        }
    }

    #[test]
    fn first_answer_wins_and_the_index_follows() {
        let index = PromptIndex::default();
        let mut p = Prompts::new("s".into(), Duration::from_secs(300), index.clone());
        let now = Instant::now();
        p.add("r1".into(), "r1".into(), ask(), now);
        assert_eq!(index.session_of("r1").as_deref(), Some("s"));
        assert!(p.take("r1").is_some());
        assert!(p.take("r1").is_none(), "a second answer must find nothing");
        assert!(index.is_empty());
    }

    #[test]
    fn ids_clashing_across_sessions_are_kept_apart() {
        let index = PromptIndex::default();
        let mut one = Prompts::new("s1".into(), Duration::from_secs(300), index.clone());
        let mut two = Prompts::new("s2".into(), Duration::from_secs(300), index.clone());
        let now = Instant::now();
        let a = one.add("same".into(), "same".into(), ask(), now).id.clone();
        let b = two.add("same".into(), "same".into(), ask(), now).id.clone();
        assert_ne!(a, b);
        assert_eq!(index.session_of(&a).as_deref(), Some("s1"));
        assert_eq!(index.session_of(&b).as_deref(), Some("s2"));
        assert_eq!(
            two.take(&b).unwrap().cli_request,
            "same",
            "the agent still gets its own id"
        );
    }

    #[test]
    fn expiry_and_remaining_time() {
        let index = PromptIndex::default();
        let mut p = Prompts::new("s".into(), Duration::from_secs(10), index.clone());
        let t0 = Instant::now();
        p.add("a".into(), "a".into(), ask(), t0);
        p.add("b".into(), "b".into(), ask(), t0 + Duration::from_secs(5));
        assert_eq!(p.next_deadline(), Some(t0 + Duration::from_secs(10)));
        match &p.messages(t0 + Duration::from_secs(4))[0] {
            ServerMsg::PermissionRequest {
                remaining_ms,
                request_id,
                ..
            } => {
                assert_eq!((request_id.as_str(), *remaining_ms), ("a", 6000));
            }
            other => panic!("{other:?}"),
        }
        let expired = p.take_expired(t0 + Duration::from_secs(11));
        assert_eq!(
            expired.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        assert_eq!(index.len(), 1);
        drop(p);
        assert!(index.is_empty(), "a dropped session leaves no routes");
    }
}
