//! Renders a scripted [`Turn`] into what the Messages API would send: the SSE event
//! sequence for `"stream": true`, or one JSON message otherwise. Pure, so the exact wire
//! sequence is unit-tested without a server.

use serde_json::{json, Value};

use super::script::{ScriptedBlock, ScriptedError, ScriptedMessage};

/// One server-sent event: `event: <name>` and `data: <json>`.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    /// Equal to `data.type`, as in the real API.
    pub name: &'static str,
    /// The event payload.
    pub data: Value,
}

impl SseEvent {
    fn new(name: &'static str, data: Value) -> Self {
        SseEvent { name, data }
    }

    /// The bytes on the wire, blank line included.
    pub fn to_frame(&self) -> String {
        format!("event: {}\ndata: {}\n\n", self.name, self.data)
    }

    /// True for the events a `SLOW` turn waits before.
    pub fn is_delta(&self) -> bool {
        self.name == "content_block_delta"
    }
}

/// Identity of one rendered message.
#[derive(Debug, Clone)]
pub struct MessageMeta {
    /// `msg_...`.
    pub id: String,
    /// Echo of the request's `model`.
    pub model: String,
    /// Reported in `usage.input_tokens`.
    pub input_tokens: u64,
}

/// How many `input_json_delta` pieces a tool input is cut into: the CLI must reassemble
/// them, which is the point of streaming it.
const JSON_PIECES: usize = 3;

/// The real event sequence: `message_start`, `ping`, per block `content_block_start` /
/// `content_block_delta`... / `content_block_stop`, `message_delta` (stop reason, usage),
/// `message_stop`.
pub fn render_events(msg: &ScriptedMessage, meta: &MessageMeta) -> Vec<SseEvent> {
    let mut events = vec![
        SseEvent::new(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": meta.id, "type": "message", "role": "assistant", "model": meta.model,
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": usage(meta.input_tokens, 1),
            }}),
        ),
        SseEvent::new("ping", json!({"type": "ping"})),
    ];
    for (index, block) in msg.blocks.iter().enumerate() {
        let (start, deltas) = match block {
            ScriptedBlock::Text(text) => (
                json!({"type": "text", "text": ""}),
                split_words(text)
                    .into_iter()
                    .map(|piece| json!({"type": "text_delta", "text": piece}))
                    .collect::<Vec<_>>(),
            ),
            ScriptedBlock::ToolUse { id, name, input } => (
                json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                split_even(&input.to_string(), JSON_PIECES)
                    .into_iter()
                    .map(|piece| json!({"type": "input_json_delta", "partial_json": piece}))
                    .collect(),
            ),
        };
        events.push(SseEvent::new(
            "content_block_start",
            json!({"type": "content_block_start", "index": index, "content_block": start}),
        ));
        for delta in deltas {
            events.push(SseEvent::new(
                "content_block_delta",
                json!({"type": "content_block_delta", "index": index, "delta": delta}),
            ));
        }
        events.push(SseEvent::new(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": index}),
        ));
    }
    events.push(SseEvent::new(
        "message_delta",
        json!({"type": "message_delta",
               "delta": {"stop_reason": msg.stop_reason(), "stop_sequence": null},
               "usage": {"output_tokens": output_tokens(msg)}}),
    ));
    events.push(SseEvent::new(
        "message_stop",
        json!({"type": "message_stop"}),
    ));
    events
}

/// The same message for `"stream": false`.
pub fn render_message(msg: &ScriptedMessage, meta: &MessageMeta) -> Value {
    let content: Vec<Value> = msg
        .blocks
        .iter()
        .map(|block| match block {
            ScriptedBlock::Text(text) => json!({"type": "text", "text": text}),
            ScriptedBlock::ToolUse { id, name, input } => {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }
        })
        .collect();
    json!({
        "id": meta.id, "type": "message", "role": "assistant", "model": meta.model,
        "content": content, "stop_reason": msg.stop_reason(), "stop_sequence": null,
        "usage": usage(meta.input_tokens, output_tokens(msg)),
    })
}

/// The Anthropic error body: `{"type":"error","error":{"type":..,"message":..}}`.
pub fn render_error(err: &ScriptedError, request_id: &str) -> Value {
    json!({
        "type": "error",
        "error": {"type": err.kind, "message": err.message},
        "request_id": request_id,
    })
}

fn usage(input_tokens: u64, output_tokens: u64) -> Value {
    json!({
        "input_tokens": input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
    })
}

/// Roughly one token a word, four bytes a token of tool JSON.
fn output_tokens(msg: &ScriptedMessage) -> u64 {
    let n: usize = msg
        .blocks
        .iter()
        .map(|block| match block {
            ScriptedBlock::Text(text) => split_words(text).len(),
            ScriptedBlock::ToolUse { input, .. } => input.to_string().len() / 4,
        })
        .sum();
    n.max(1) as u64
}

/// Cuts text into words, each carrying the whitespace before it (`"Hello"`, `" from"`),
/// the way the real API streams. Concatenating the pieces gives back `text` exactly.
pub fn split_words(text: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    let mut prev_is_space = true;
    for (at, c) in text.char_indices() {
        let is_space = c.is_whitespace();
        if is_space && !prev_is_space && at > start {
            pieces.push(&text[start..at]);
            start = at;
        }
        prev_is_space = is_space;
    }
    if start < text.len() {
        pieces.push(&text[start..]);
    }
    pieces
}

/// Cuts text into at most `n` non-empty pieces of similar length, on char boundaries.
pub fn split_even(text: &str, n: usize) -> Vec<&str> {
    let n = n.max(1);
    let target = text.len().div_ceil(n).max(1);
    let mut pieces = Vec::with_capacity(n);
    let mut rest = text;
    while !rest.is_empty() {
        let mut cut = target.min(rest.len());
        while !rest.is_char_boundary(cut) {
            cut += 1;
        }
        let (piece, tail) = rest.split_at(cut);
        pieces.push(piece);
        rest = tail;
    }
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::time::Duration;

    fn meta() -> MessageMeta {
        MessageMeta {
            id: "msg_demo_1".into(),
            model: "claude-sonnet-4-5".into(),
            input_tokens: 12,
        }
    }

    #[test]
    fn words_keep_their_leading_space() {
        assert_eq!(
            split_words("Hello from the  demo."),
            vec!["Hello", " from", " the", "  demo."]
        );
        assert_eq!(split_words("  lead"), vec!["  lead"]);
        assert!(split_words("").is_empty());
    }

    #[test]
    fn text_turn_has_the_real_event_order() {
        let msg = ScriptedMessage {
            blocks: vec![ScriptedBlock::Text("Hi there".into())],
            pace: Duration::ZERO,
        };
        let events = render_events(&msg, &meta());
        let names: Vec<&str> = events.iter().map(|e| e.name).collect();
        assert_eq!(
            names,
            [
                "message_start",
                "ping",
                "content_block_start",
                "content_block_delta",
                "content_block_delta",
                "content_block_stop",
                "message_delta",
                "message_stop"
            ]
        );
        for e in &events {
            assert_eq!(e.data["type"], e.name, "event name matches data.type");
        }
        assert_eq!(events[0].data["message"]["model"], "claude-sonnet-4-5");
        assert_eq!(events[4].data["delta"]["text"], " there");
        assert_eq!(events[6].data["delta"]["stop_reason"], "end_turn");
        assert_eq!(
            events[3].to_frame(),
            "event: content_block_delta\ndata: {\"delta\":{\"text\":\"Hi\",\"type\":\"text_delta\"},\"index\":0,\"type\":\"content_block_delta\"}\n\n"
        );
    }

    #[test]
    fn tool_use_streams_json_in_pieces_and_stops_for_the_tool() {
        let input = json!({"file_path": "/p/a.txt", "content": "héllo\n"});
        let msg = ScriptedMessage {
            blocks: vec![
                ScriptedBlock::Text("I'll write it.".into()),
                ScriptedBlock::ToolUse {
                    id: "toolu_1".into(),
                    name: "Write".into(),
                    input: input.clone(),
                },
            ],
            pace: Duration::ZERO,
        };
        let events = render_events(&msg, &meta());
        let json_pieces: Vec<&str> = events
            .iter()
            .filter(|e| e.data["index"] == 1 && e.is_delta())
            .map(|e| {
                e.data["delta"]["partial_json"]
                    .as_str()
                    .expect("string piece")
            })
            .collect();
        assert!(json_pieces.len() > 1, "{json_pieces:?}");
        let joined: Value =
            serde_json::from_str(&json_pieces.concat()).expect("pieces join to JSON");
        assert_eq!(joined, input);
        let delta = events
            .iter()
            .find(|e| e.name == "message_delta")
            .expect("message_delta");
        assert_eq!(delta.data["delta"]["stop_reason"], "tool_use");
        let whole = render_message(&msg, &meta());
        assert_eq!(whole["content"][1]["input"], input);
        assert_eq!(whole["stop_reason"], "tool_use");
    }

    proptest! {
        #[test]
        fn split_words_is_lossless(text in "\\PC{0,80}") {
            let pieces = split_words(&text);
            prop_assert_eq!(pieces.concat(), text.clone());
            prop_assert!(pieces.iter().all(|p| !p.is_empty()));
        }

        #[test]
        fn split_even_is_lossless_and_bounded(text in "\\PC{0,80}", n in 1usize..6) {
            let pieces = split_even(&text, n);
            prop_assert_eq!(pieces.concat(), text.clone());
            prop_assert!(pieces.iter().all(|p| !p.is_empty()));
            prop_assert!(pieces.len() <= n, "{} pieces for n={}", pieces.len(), n);
        }
    }
}
