//! A typed, forgiving view of a Messages API request body, and the three facts the demo
//! model needs from it: what kind of call it is, what the user last said, and which
//! directory the CLI runs in. Everything unknown is ignored, because every CLI release
//! adds fields and the demo must keep answering.

use serde::Deserialize;
use serde_json::Value;

/// The part of `POST /v1/messages` the script looks at.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct MessagesRequest {
    /// Echoed back in `message_start`, so a test sees which model the CLI asked for.
    #[serde(default)]
    pub model: String,
    /// `true` asks for SSE; absent or `false` asks for one JSON message.
    #[serde(default)]
    pub stream: bool,
    /// The whole conversation; the CLI resends it on every call.
    #[serde(default)]
    pub messages: Vec<Message>,
    /// A string or a list of text blocks; holds the working directory line.
    #[serde(default)]
    pub system: Option<System>,
    /// Present and non-empty only on calls that run the agent loop.
    #[serde(default)]
    pub tools: Vec<Value>,
    /// Carries `format.schema` on structured-output side calls (the session title).
    #[serde(default)]
    pub output_config: Option<Value>,
}

/// One conversation entry. The CLI also sends `role: "system"` entries mid-conversation,
/// which is why "the last user message" is searched for rather than taken from the end.
#[derive(Debug, Clone, Deserialize)]
pub struct Message {
    /// `user`, `assistant`, or `system`.
    pub role: String,
    /// Plain text or a list of blocks.
    pub content: Content,
}

/// Message content: the API accepts a bare string as shorthand for one text block.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Shorthand for a single text block.
    Text(String),
    /// Blocks in order.
    Blocks(Vec<Block>),
}

/// The content blocks the script distinguishes; every other type is `Other`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Block {
    /// Text typed by the user, or injected by the CLI (`<system-reminder>` ...).
    Text {
        /// The text itself.
        text: String,
    },
    /// The outcome of a tool the model asked for, including a user's denial.
    ToolResult {
        /// A string or a list of blocks; absent for tools that print nothing.
        #[serde(default)]
        content: Option<ToolResultContent>,
        /// `true` when the tool failed or was denied.
        #[serde(default)]
        is_error: bool,
    },
    /// A picture the user sent.
    Image {
        /// Where its bytes are.
        source: Source,
    },
    /// A PDF (or other document) the user sent.
    Document {
        /// Where its bytes are.
        source: Source,
    },
    /// tool_use, thinking ...
    #[serde(other)]
    Other,
}

/// An image's or document's bytes, as the API takes them inline.
#[derive(Debug, Clone, Deserialize)]
pub struct Source {
    /// `image/png`, `application/pdf` ...
    #[serde(default)]
    pub media_type: String,
    /// base64.
    #[serde(default)]
    pub data: String,
}

/// A tool result's content: the CLI sends a string for most tools.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ToolResultContent {
    /// The common case.
    Text(String),
    /// Text (and image) blocks.
    Blocks(Vec<Value>),
}

/// The `system` field: a string or a list of text blocks.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum System {
    /// Whole prompt as one string.
    Text(String),
    /// Prompt split into blocks (what Claude Code sends).
    Blocks(Vec<Value>),
}

/// Why the CLI made a `/v1/messages` call. Only [`RequestKind::MainTurn`] runs a script;
/// side calls get a short fixed answer so they never consume a test's directive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RequestKind {
    /// The agent loop: carries the conversation and the tool list.
    MainTurn,
    /// The session-title side call: no tools, a JSON schema with a `title` property.
    Title,
    /// Any other `/v1/messages` call without tools (summaries, quota probes ...).
    SideCall,
    /// `/v1/messages/count_tokens`.
    CountTokens,
    /// Anything else: the CLI's `HEAD /` connectivity probe, unknown endpoints.
    Other,
}

/// What the user said last, as the script sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LastUser {
    /// The prompt text, with the CLI's injected `<system-reminder>` blocks removed.
    Prompt(String),
    /// The last user message carries tool results (a tool ran, or was denied).
    ToolResult {
        /// The results' text, joined by newlines.
        content: String,
        /// `true` if any result is an error (a denial is one).
        is_error: bool,
    },
    /// There is no user message at all.
    Nothing,
}

/// Marks the text blocks the CLI injects into user messages; they are context, not input.
const REMINDER_PREFIX: &str = "<system-reminder>";

/// The lines of Claude Code's system prompt that state the working directory, newest
/// wording first.
const CWD_MARKERS: [&str; 2] = ["Primary working directory: ", "Working directory: "];

impl MessagesRequest {
    /// Classifies a `/v1/messages` call (see [`RequestKind`]).
    pub fn kind(&self) -> RequestKind {
        if !self.tools.is_empty() {
            return RequestKind::MainTurn;
        }
        if self
            .schema_properties()
            .is_some_and(|p| p.contains_key("title"))
        {
            return RequestKind::Title;
        }
        RequestKind::SideCall
    }

    /// The properties of a requested JSON output schema, if the call asks for one.
    pub fn schema_properties(&self) -> Option<&serde_json::Map<String, Value>> {
        self.output_config
            .as_ref()?
            .pointer("/format/schema/properties")?
            .as_object()
    }

    /// The last user message, reduced to what the script needs.
    pub fn last_user(&self) -> LastUser {
        let Some(msg) = self.messages.iter().rev().find(|m| m.role == "user") else {
            return LastUser::Nothing;
        };
        let blocks = match &msg.content {
            Content::Text(text) => return LastUser::Prompt(text.trim().to_owned()),
            Content::Blocks(blocks) => blocks,
        };
        let mut results = Vec::new();
        let mut any_error = false;
        for block in blocks {
            if let Block::ToolResult { content, is_error } = block {
                any_error |= *is_error;
                results.push(
                    content
                        .as_ref()
                        .map(ToolResultContent::text)
                        .unwrap_or_default(),
                );
            }
        }
        if !results.is_empty() {
            return LastUser::ToolResult {
                content: results.join("\n"),
                is_error: any_error,
            };
        }
        // The last typed text wins: after an interrupt the CLI puts
        // "[Request interrupted by user]" and the next prompt in one message.
        let prompt = blocks.iter().rev().find_map(|b| match b {
            Block::Text { text } if !text.trim_start().starts_with(REMINDER_PREFIX) => {
                Some(text.trim().to_owned())
            }
            _ => None,
        });
        prompt.map_or(LastUser::Nothing, LastUser::Prompt)
    }

    /// The images and documents of the last user message, each as "image/png, 1234
    /// bytes" (what `ATTACHED` answers), in order.
    pub fn last_user_files(&self) -> Vec<String> {
        let Some(Message {
            content: Content::Blocks(blocks),
            ..
        }) = self.messages.iter().rev().find(|m| m.role == "user")
        else {
            return Vec::new();
        };
        blocks
            .iter()
            .filter_map(|b| match b {
                Block::Image { source } | Block::Document { source } => Some(source),
                _ => None,
            })
            .map(|source| {
                use base64::Engine;
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(&source.data)
                    .map_or(0, |b| b.len());
                format!("{}, {bytes} bytes", source.media_type)
            })
            .collect()
    }

    /// The directory the CLI runs in, as its system prompt states it.
    pub fn working_dir(&self) -> Option<String> {
        let texts: Vec<&str> = match self.system.as_ref()? {
            System::Text(text) => vec![text.as_str()],
            System::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect(),
        };
        CWD_MARKERS.iter().find_map(|marker| {
            texts.iter().find_map(|text| {
                let start = text.find(marker)? + marker.len();
                let line = text[start..].lines().next()?.trim();
                (!line.is_empty()).then(|| line.to_owned())
            })
        })
    }

    /// A rough token count of the conversation (4 bytes a token, system prompt and tools
    /// left out), so usage grows with the session like the real one while the cost the
    /// CLI computes from it stays near zero.
    pub fn approx_input_tokens(&self) -> u64 {
        let bytes: usize = self
            .messages
            .iter()
            .map(|m| match &m.content {
                Content::Text(text) => text.len(),
                Content::Blocks(blocks) => blocks.iter().map(Block::approx_len).sum(),
            })
            .sum();
        (bytes / 4).max(1) as u64
    }
}

impl Block {
    /// Bytes of text in the block; a flat guess for images and the like.
    fn approx_len(&self) -> usize {
        match self {
            Block::Text { text } => text.len(),
            Block::ToolResult { content, .. } => content.as_ref().map_or(0, |c| c.text().len()),
            // The API counts an image by its pixels; a flat guess serves the demo.
            Block::Image { .. } | Block::Document { .. } | Block::Other => 64,
        }
    }
}

impl ToolResultContent {
    /// The text of the result; images and other blocks are left out.
    pub fn text(&self) -> String {
        match self {
            ToolResultContent::Text(text) => text.clone(),
            ToolResultContent::Blocks(blocks) => blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> MessagesRequest {
        serde_json::from_value(v).expect("test request parses")
    }

    #[test]
    fn prompt_skips_reminders_and_trailing_system_messages() {
        let req = parse(json!({
            "model": "m", "tools": [{"name": "Write"}],
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "<system-reminder>\ncontext\n</system-reminder>\n"},
                    {"type": "text", "text": "REPLY hi", "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "system", "content": "Available agent types ..."}
            ]
        }));
        assert_eq!(req.kind(), RequestKind::MainTurn);
        assert_eq!(req.last_user(), LastUser::Prompt("REPLY hi".into()));
    }

    #[test]
    fn tool_results_are_reported_with_their_error_flag() {
        let req = parse(json!({
            "messages": [
                {"role": "user", "content": "PLEASE_WRITE a"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "t", "name": "Write", "input": {}}]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "t", "content": "User denied", "is_error": true}
                ]}
            ]
        }));
        assert_eq!(
            req.last_user(),
            LastUser::ToolResult {
                content: "User denied".into(),
                is_error: true
            }
        );
    }

    #[test]
    fn title_calls_are_told_apart_from_side_calls() {
        let title = parse(json!({
            "messages": [{"role": "user", "content": "x"}],
            "output_config": {"format": {"type": "json_schema", "schema": {
                "type": "object", "properties": {"title": {"type": "string"}}}}}
        }));
        assert_eq!(title.kind(), RequestKind::Title);
        let side = parse(json!({"messages": [{"role": "user", "content": "quota"}]}));
        assert_eq!(side.kind(), RequestKind::SideCall);
    }

    #[test]
    fn working_dir_comes_from_the_environment_section() {
        let req = parse(json!({
            "system": [
                {"type": "text", "text": "You are a Claude agent."},
                {"type": "text", "text": "# Environment\n - Primary working directory: /tmp/p q\n - Is a git repository: false"}
            ]
        }));
        assert_eq!(req.working_dir().as_deref(), Some("/tmp/p q"));
        assert_eq!(parse(json!({"system": "nothing here"})).working_dir(), None);
    }
}
