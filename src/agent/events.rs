//! Claude Code's stdout (stream-json) → [`AgentEvent`]s.
//!
//! The parser is a pure, stateful fold over lines so it can be tested against the
//! recorded transcripts in `tests/fixtures/claude-cli/` without a process. It keeps just
//! enough state to tell text blocks from tool blocks across `stream_event` lines. Unknown
//! line types and fields are ignored: newer CLIs add them, and that must never break a
//! session.

use std::collections::{HashMap, HashSet};

use serde_json::Value;

/// Something the agent did that the session cares about.
#[derive(Debug, Clone, PartialEq)]
pub enum AgentEvent {
    /// `system`/`init`: the agent's own session id (needed for `--resume`).
    Init {
        /// The CLI's session id.
        session_id: String,
        /// The model the CLI is using.
        model: Option<String>,
    },
    /// A text block begins.
    TextStart {
        /// Unique per block, within this agent process.
        message_id: String,
    },
    /// More text for the open block.
    TextDelta {
        /// The text piece.
        text: String,
    },
    /// The open text block is complete.
    TextEnd,
    /// The model invoked a tool (complete input).
    ToolUse {
        /// The assistant message it belongs to.
        message_id: String,
        /// The tool use id.
        id: String,
        /// Tool name (`Bash`, `Write`, …).
        name: String,
        /// Its input.
        input: Value,
    },
    /// A tool finished (or was refused).
    ToolResult {
        /// The tool use it answers.
        tool_use_id: String,
        /// Its output as text.
        content: String,
        /// Whether it failed or was denied.
        is_error: bool,
    },
    /// The turn ended.
    TurnResult(TurnResult),
    /// The CLI asks the host something (`can_use_tool`, …) and waits for the answer.
    ControlRequest {
        /// Must be echoed in the answer.
        request_id: String,
        /// `can_use_tool`, …
        subtype: String,
        /// The whole `request` object.
        request: Value,
    },
    /// The CLI withdrew a pending request (the turn was aborted): send no answer for it.
    ControlCancel {
        /// The withdrawn request.
        request_id: String,
    },
    /// The CLI answered one of our control requests.
    ControlResponse {
        /// Our request's id.
        request_id: String,
        /// `Err` carries the CLI's error text.
        outcome: Result<Value, String>,
    },
}

/// The `result` line that ends a turn.
#[derive(Debug, Clone, PartialEq)]
pub struct TurnResult {
    /// `success`, `error_during_execution`, `error_max_turns`, …
    pub subtype: String,
    /// True for any failure, API errors included.
    pub is_error: bool,
    /// The final text, when the turn produced one.
    pub text: Option<String>,
    /// Error details (`errors` array, or the API error status).
    pub errors: Vec<String>,
    /// The agent's session id.
    pub session_id: String,
    /// Cost in USD.
    pub cost: Option<f64>,
    /// Wall time of the turn.
    pub duration_ms: Option<u64>,
    /// Token usage as the CLI reports it.
    pub usage: Value,
}

/// A stdout line that is not JSON. Logged and skipped by the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("agent printed a line that is not a JSON object ({len} bytes): {reason}")]
pub struct LineError {
    len: usize,
    reason: String,
}

/// What kind of content block an index of the current message holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    Other,
}

/// The fold state. One per agent process.
#[derive(Debug)]
pub struct StreamParser {
    /// Prefix making message ids unique across processes of one session.
    prefix: String,
    counter: u64,
    /// The `message_start` id of the message being streamed and our id for it.
    current: Option<(String, String)>,
    blocks: HashMap<u64, Block>,
    /// API message ids whose text was streamed: their `assistant` copy must not be
    /// shown twice. Cleared at every turn's end so it stays small.
    streamed: HashSet<String>,
    /// The open text block's id, if any.
    open_text: Option<String>,
}

impl StreamParser {
    /// `prefix` distinguishes this process's message ids from an earlier one's.
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
            counter: 0,
            current: None,
            blocks: HashMap::new(),
            streamed: HashSet::new(),
            open_text: None,
        }
    }

    fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("{}-{}", self.prefix, self.counter)
    }

    /// Folds one stdout line into zero or more events.
    pub fn feed(&mut self, line: &str) -> Result<Vec<AgentEvent>, LineError> {
        let line = line.trim();
        if line.is_empty() {
            return Ok(Vec::new());
        }
        let value: Value = serde_json::from_str(line).map_err(|e| LineError {
            len: line.len(),
            reason: e.to_string(),
        })?;
        let Value::Object(_) = value else {
            return Err(LineError {
                len: line.len(),
                reason: "not an object".into(),
            });
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        let mut out = Vec::new();
        match value.get("type").and_then(Value::as_str).unwrap_or("") {
            "system" if s(&value, "subtype").as_deref() == Some("init") => {
                if let Some(session_id) = s(&value, "session_id") {
                    out.push(AgentEvent::Init {
                        session_id,
                        model: s(&value, "model"),
                    });
                }
            }
            "stream_event" => {
                if let Some(event) = value.get("event") {
                    self.stream_event(event, &mut out);
                }
            }
            "assistant" => self.assistant(&value, &mut out),
            "user" => user_tool_results(&value, &mut out),
            "result" => {
                self.close_text(&mut out);
                self.streamed.clear();
                out.push(AgentEvent::TurnResult(turn_result(&value)));
            }
            "control_request" => {
                let request = value.get("request").cloned().unwrap_or(Value::Null);
                if let Some(request_id) = s(&value, "request_id") {
                    let subtype = s(&request, "subtype").unwrap_or_default();
                    out.push(AgentEvent::ControlRequest {
                        request_id,
                        subtype,
                        request,
                    });
                }
            }
            "control_cancel_request" => {
                if let Some(request_id) = s(&value, "request_id") {
                    out.push(AgentEvent::ControlCancel { request_id });
                }
            }
            "control_response" => {
                if let Some(resp) = value.get("response") {
                    if let Some(request_id) = s(resp, "request_id") {
                        let outcome = if s(resp, "subtype").as_deref() == Some("error") {
                            Err(s(resp, "error").unwrap_or_else(|| "unknown error".into()))
                        } else {
                            Ok(resp.get("response").cloned().unwrap_or(Value::Null))
                        };
                        out.push(AgentEvent::ControlResponse {
                            request_id,
                            outcome,
                        });
                    }
                }
            }
            // system/status, rate_limit_event, and whatever newer CLIs add.
            _ => {}
        }
        Ok(out)
    }

    fn stream_event(&mut self, event: &Value, out: &mut Vec<AgentEvent>) {
        let index = event.get("index").and_then(Value::as_u64).unwrap_or(0);
        match event.get("type").and_then(Value::as_str).unwrap_or("") {
            "message_start" => {
                let api_id = event
                    .pointer("/message/id")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned();
                let ours = self.next_id();
                self.current = Some((api_id, ours));
                self.blocks.clear();
            }
            "content_block_start" => {
                let kind = event.pointer("/content_block/type").and_then(Value::as_str);
                if kind == Some("text") {
                    self.blocks.insert(index, Block::Text);
                    self.close_text(out);
                    let id = self.next_id();
                    self.open_text = Some(id.clone());
                    if let Some((api_id, _)) = &self.current {
                        self.streamed.insert(api_id.clone());
                    }
                    out.push(AgentEvent::TextStart { message_id: id });
                    if let Some(text) = event.pointer("/content_block/text").and_then(Value::as_str)
                    {
                        if !text.is_empty() {
                            out.push(AgentEvent::TextDelta {
                                text: text.to_owned(),
                            });
                        }
                    }
                } else {
                    self.blocks.insert(index, Block::Other);
                }
            }
            "content_block_delta"
                if self.blocks.get(&index) == Some(&Block::Text) && self.open_text.is_some() =>
            {
                if let Some(text) = event.pointer("/delta/text").and_then(Value::as_str) {
                    out.push(AgentEvent::TextDelta {
                        text: text.to_owned(),
                    });
                }
            }
            "content_block_stop" if self.blocks.get(&index) == Some(&Block::Text) => {
                self.close_text(out);
            }
            _ => {}
        }
    }

    fn close_text(&mut self, out: &mut Vec<AgentEvent>) {
        if self.open_text.take().is_some() {
            out.push(AgentEvent::TextEnd);
        }
    }

    /// `assistant` lines repeat each completed block. Tool uses are taken from here (the
    /// input is complete); text only when it was not streamed (a CLI run without
    /// partial messages, or a block the stream did not show).
    fn assistant(&mut self, value: &Value, out: &mut Vec<AgentEvent>) {
        let api_id = value
            .pointer("/message/id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let message_id = match &self.current {
            Some((current_api, ours)) if *current_api == api_id => ours.clone(),
            _ => self.next_id(),
        };
        let Some(content) = value.pointer("/message/content").and_then(Value::as_array) else {
            return;
        };
        for block in content {
            match block.get("type").and_then(Value::as_str) {
                Some("tool_use") => out.push(AgentEvent::ToolUse {
                    message_id: message_id.clone(),
                    id: block
                        .get("id")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    name: block
                        .get("name")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    input: block.get("input").cloned().unwrap_or(Value::Null),
                }),
                Some("text") => {
                    let text = block.get("text").and_then(Value::as_str).unwrap_or("");
                    // The CLI sends one `assistant` line per block, so block positions
                    // do not line up with stream indexes; a streamed message is enough.
                    if !self.streamed.contains(&api_id) && !text.is_empty() {
                        self.close_text(out);
                        out.push(AgentEvent::TextStart {
                            message_id: self.next_id(),
                        });
                        out.push(AgentEvent::TextDelta {
                            text: text.to_owned(),
                        });
                        out.push(AgentEvent::TextEnd);
                    }
                }
                _ => {}
            }
        }
    }
}

fn user_tool_results(value: &Value, out: &mut Vec<AgentEvent>) {
    let Some(content) = value.pointer("/message/content").and_then(Value::as_array) else {
        return; // plain string content: a replayed local command, nothing to show
    };
    for block in content {
        if block.get("type").and_then(Value::as_str) != Some("tool_result") {
            continue;
        }
        out.push(AgentEvent::ToolResult {
            tool_use_id: block
                .get("tool_use_id")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned(),
            content: tool_result_text(block.get("content")),
            is_error: block
                .get("is_error")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        });
    }
}

/// Tool result content is a string or a list of blocks; text blocks are joined, others
/// (images) are named.
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .map(|b| match b.get("type").and_then(Value::as_str) {
                Some("text") => b
                    .get("text")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
                Some(other) => format!("[{other}]"),
                None => String::new(),
            })
            .collect::<Vec<_>>()
            .join("\n"),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

fn turn_result(v: &Value) -> TurnResult {
    let mut errors: Vec<String> = v
        .get("errors")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .map(|e| {
                    e.as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| e.to_string())
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(status) = v.get("api_error_status").filter(|s| !s.is_null()) {
        errors.push(format!("API error status {status}"));
    }
    TurnResult {
        subtype: v
            .get("subtype")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        is_error: v.get("is_error").and_then(Value::as_bool).unwrap_or(false),
        text: v.get("result").and_then(Value::as_str).map(str::to_owned),
        errors,
        session_id: v
            .get("session_id")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned(),
        cost: v.get("total_cost_usd").and_then(Value::as_f64),
        duration_ms: v.get("duration_ms").and_then(Value::as_u64),
        usage: v.get("usage").cloned().unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fixtures_dir() -> std::path::PathBuf {
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/claude-cli")
    }

    /// Every stdout line of every recorded transcript, through one parser per file.
    fn parse_fixture(name: &str) -> Vec<AgentEvent> {
        let text = std::fs::read_to_string(fixtures_dir().join(name))
            .unwrap_or_else(|e| panic!("reading fixture {name}: {e}"));
        let mut parser = StreamParser::new("t");
        let mut events = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let rec: Value = serde_json::from_str(line).unwrap();
            if rec["dir"] != "stdout" {
                continue;
            }
            let msg = serde_json::to_string(&rec["msg"]).unwrap();
            let evs = parser
                .feed(&msg)
                .unwrap_or_else(|e| panic!("{name}:{}: {e}", n + 1));
            events.extend(evs);
        }
        events
    }

    #[test]
    fn every_fixture_parses_without_error() {
        let mut count = 0;
        for entry in std::fs::read_dir(fixtures_dir()).expect("tests/fixtures/claude-cli") {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".jsonl") {
                let events = parse_fixture(&name);
                assert!(
                    events
                        .iter()
                        .any(|e| matches!(e, AgentEvent::TurnResult(_))),
                    "{name}: no turn result"
                );
                count += 1;
            }
        }
        assert!(count >= 9, "only {count} fixtures found");
    }

    fn text_of(events: &[AgentEvent]) -> String {
        events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::TextDelta { text } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn text_turn_streams_each_block_once() {
        let events = parse_fixture("text-turn.jsonl");
        assert!(
            matches!(&events[0], AgentEvent::Init { session_id, .. } if session_id.starts_with("b89febef"))
        );
        assert_eq!(text_of(&events), "Hello from the fake model.");
        let starts = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::TextStart { .. }))
            .count();
        let ends = events
            .iter()
            .filter(|e| matches!(e, AgentEvent::TextEnd))
            .count();
        assert_eq!((starts, ends), (1, 1));
        let AgentEvent::TurnResult(r) = events.last().unwrap() else {
            panic!("last is not the result")
        };
        assert_eq!(r.text.as_deref(), Some("Hello from the fake model."));
        assert!(!r.is_error);
    }

    #[test]
    fn permission_fixture_yields_tool_use_request_and_result() {
        let events = parse_fixture("permission-deny.jsonl");
        let tool = events.iter().find_map(|e| match e {
            AgentEvent::ToolUse { name, input, .. } => Some((name.clone(), input.clone())),
            _ => None,
        });
        let (name, input) = tool.expect("tool use");
        assert_eq!(name, "Write");
        assert_eq!(input["file_path"], "/home/dev/project/hello.txt");
        assert!(events.iter().any(
            |e| matches!(e, AgentEvent::ControlRequest { subtype, .. } if subtype == "can_use_tool")
        ));
        assert!(events.iter().any(|e| matches!(e,
            AgentEvent::ToolResult { content, is_error: true, .. } if content == "User denied from phone")));
    }

    #[test]
    fn interrupt_fixture_ends_with_error_result_then_works() {
        let events = parse_fixture("interrupt.jsonl");
        let results: Vec<_> = events
            .iter()
            .filter_map(|e| match e {
                AgentEvent::TurnResult(r) => Some(r),
                _ => None,
            })
            .collect();
        assert!(results
            .iter()
            .any(|r| r.subtype == "error_during_execution"));
        assert!(events
            .iter()
            .any(|e| matches!(e, AgentEvent::ControlResponse { outcome: Ok(_), .. })));
    }

    #[test]
    fn the_slash_commands_come_from_the_answer_to_initialize() {
        let initialized = parse_fixture("control-modes.jsonl")
            .into_iter()
            .find_map(|e| match e {
                AgentEvent::ControlResponse {
                    request_id,
                    outcome: Ok(v),
                } if request_id == "req_init" => Some(v),
                _ => None,
            })
            .expect("the answer to initialize");
        let commands = crate::agent::slash_commands(&initialized);
        let compact = commands.iter().find(|c| c.name == "compact").unwrap();
        assert!(!compact.description.is_empty());
        assert!(commands.len() > 10, "{commands:?}");

        // What a CLI (or a plugin's command) could put there is cut to size or left out.
        let mut many: Vec<Value> = (0..300)
            .map(|i| json!({"name": format!("c{i}"), "description": "d".repeat(1000)}))
            .collect();
        many.insert(0, json!({"name": "<b>x</b>"}));
        many.insert(0, json!({"name": ""}));
        many.insert(0, json!({"name": 7}));
        let cut = crate::agent::slash_commands(&json!({ "commands": many }));
        assert_eq!(cut.len(), 200);
        assert_eq!(cut[0].name, "c0");
        assert_eq!(
            cut[0].description.chars().count(),
            201,
            "200 and an ellipsis"
        );
        assert!(crate::agent::slash_commands(&json!({"commands": "nope"})).is_empty());
    }

    #[test]
    fn unknown_lines_and_garbage() {
        let mut p = StreamParser::new("t");
        assert_eq!(
            p.feed(r#"{"type":"brand_new_thing","x":1}"#).unwrap(),
            vec![]
        );
        assert_eq!(p.feed("").unwrap(), vec![]);
        assert!(p.feed("Segmentation fault").is_err());
        assert!(p.feed("[1,2]").is_err());
    }

    #[test]
    fn unstreamed_assistant_text_is_shown_whole() {
        let mut p = StreamParser::new("t");
        let line = r#"{"type":"assistant","message":{"id":"m9","content":[{"type":"text","text":"whole"}]}}"#;
        let evs = p.feed(line).unwrap();
        assert_eq!(text_of(&evs), "whole");
    }

    #[test]
    fn control_error_response_and_cancel() {
        let mut p = StreamParser::new("t");
        let evs = p
            .feed(r#"{"type":"control_response","response":{"subtype":"error","request_id":"r1","error":"nope"}}"#)
            .unwrap();
        assert_eq!(
            evs,
            vec![AgentEvent::ControlResponse {
                request_id: "r1".into(),
                outcome: Err("nope".into())
            }]
        );
        let evs = p
            .feed(r#"{"type":"control_cancel_request","request_id":"r2"}"#)
            .unwrap();
        assert_eq!(
            evs,
            vec![AgentEvent::ControlCancel {
                request_id: "r2".into()
            }]
        );
    }
}
