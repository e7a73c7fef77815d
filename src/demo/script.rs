//! Turns the last user message into a scripted model turn. Pure: the same request always
//! gets the same turn, so tests can predict every byte the CLI will see. The directive
//! language is documented in the module docs of [`crate::demo`].

use std::time::Duration;

use serde_json::{json, Value};

use super::request::{LastUser, MessagesRequest};

/// One scripted answer: either a message to stream, or an HTTP error.
#[derive(Debug, Clone, PartialEq)]
pub enum Turn {
    /// A successful assistant message.
    Message(ScriptedMessage),
    /// An HTTP error in the Messages API error shape.
    Error(ScriptedError),
}

/// An assistant message: its content blocks and how fast to stream them.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedMessage {
    /// In order; a message with a tool_use block ends with `stop_reason: tool_use`.
    pub blocks: Vec<ScriptedBlock>,
    /// Wait before each text delta; zero streams as fast as the client reads.
    pub pace: Duration,
}

/// A content block of a scripted message.
#[derive(Debug, Clone, PartialEq)]
pub enum ScriptedBlock {
    /// Assistant text, streamed word by word.
    Text(String),
    /// A tool call, streamed as several `input_json_delta` pieces.
    ToolUse {
        /// `toolu_...`; the CLI echoes it in the tool_result.
        id: String,
        /// `Write`, `Bash`, `AskUserQuestion`, ...
        name: String,
        /// The tool input object.
        input: Value,
    },
}

/// An HTTP error answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptedError {
    /// 4xx or 5xx.
    pub status: u16,
    /// The Anthropic error `type` for the status (`api_error`, `overloaded_error` ...).
    pub kind: &'static str,
    /// Human-readable `message`; the CLI shows it in its `result`.
    pub message: String,
    /// `false` sends `x-should-retry: false`, which makes the CLI give up at once
    /// instead of backing off for minutes (it still retries `overloaded_error`).
    pub retry: bool,
}

impl ScriptedMessage {
    /// `tool_use` when the message calls a tool, else `end_turn`.
    pub fn stop_reason(&self) -> &'static str {
        if self
            .blocks
            .iter()
            .any(|b| matches!(b, ScriptedBlock::ToolUse { .. }))
        {
            "tool_use"
        } else {
            "end_turn"
        }
    }

    fn text(text: impl Into<String>) -> Self {
        ScriptedMessage {
            blocks: vec![ScriptedBlock::Text(text.into())],
            pace: Duration::ZERO,
        }
    }

    fn tool(intro: String, id: &str, name: &str, input: Value) -> Self {
        ScriptedMessage {
            blocks: vec![
                ScriptedBlock::Text(intro),
                ScriptedBlock::ToolUse {
                    id: id.to_owned(),
                    name: name.to_owned(),
                    input,
                },
            ],
            pace: Duration::ZERO,
        }
    }
}

/// Pace for `SLOW` when no number is given.
const DEFAULT_SLOW_PACE: Duration = Duration::from_millis(200);
/// Upper bound for `SLOW <ms>`: a typo must not park a stream for hours.
const MAX_SLOW_PACE: Duration = Duration::from_secs(60);
/// Content written by `PLEASE_WRITE <file>` without content.
const DEFAULT_FILE_CONTENT: &str = "Hello from Chroxy's demo model!\n";
/// Command run by `PLEASE_BASH` without a command. It must change something: the CLI
/// runs read-only commands (`echo`, `ls`) without asking, and the demo is about asking.
const DEFAULT_COMMAND: &str = "touch chroxy-demo.txt";
/// The question asked by `PLEASE_ASK` (same as the recorded fixture).
pub const ASK_QUESTION: &str = "Which color should the button be?";
/// How much of an unknown prompt the default answer quotes back.
const ECHO_LIMIT: usize = 200;

/// Decides the turn for a main-turn request. `tool_id` names the tool_use block, if the
/// turn has one (the server numbers them so every call in a session is unique).
pub fn script_turn(request: &MessagesRequest, tool_id: &str) -> Turn {
    match request.last_user() {
        LastUser::ToolResult { content, is_error } => {
            let label = if is_error {
                "Tool error"
            } else {
                "Tool result"
            };
            Turn::Message(ScriptedMessage::text(format!("{label}: {content}")))
        }
        LastUser::Prompt(prompt) if split_word(&prompt).0 == "ATTACHED" => {
            let files = request.last_user_files();
            let text = if files.is_empty() {
                "Nothing is attached.".to_owned()
            } else {
                format!("Attached: {}.", files.join("; "))
            };
            Turn::Message(ScriptedMessage::text(text))
        }
        LastUser::Prompt(prompt) => script_prompt(&prompt, request.working_dir(), tool_id),
        LastUser::Nothing => Turn::Message(ScriptedMessage::text(default_answer(""))),
    }
}

/// The answer to a side call (session title, summaries, quota probes): never scripted,
/// so a directive in the prompt runs exactly once, in the main turn.
pub fn side_turn(request: &MessagesRequest) -> Turn {
    let prompt = match request.last_user() {
        LastUser::Prompt(p) => p,
        _ => String::new(),
    };
    let text = match request.schema_properties() {
        // Structured output: an object with every property filled in, the title from
        // the first words of the conversation (the CLI wraps it in <session> tags).
        Some(props) => {
            let object: serde_json::Map<String, Value> = props
                .iter()
                .map(|(name, schema)| {
                    let value = match schema.get("type").and_then(Value::as_str) {
                        Some("string") if name == "title" => Value::from(title_for(&prompt)),
                        Some("string") => Value::from("Chroxy demo"),
                        Some("boolean") => Value::from(false),
                        Some("number") | Some("integer") => Value::from(0),
                        Some("array") => json!([]),
                        _ => json!({}),
                    };
                    (name.clone(), value)
                })
                .collect();
            Value::Object(object).to_string()
        }
        None => "Chroxy demo model.".to_owned(),
    };
    Turn::Message(ScriptedMessage::text(text))
}

/// "Demo: " and the first few words the user typed. The CLI wraps the conversation in
/// `<session>` tags and appends its instructions; only the part inside counts.
fn title_for(prompt: &str) -> String {
    let inside = prompt
        .split_once("<session>")
        .and_then(|(_, rest)| rest.split_once("</session>"))
        .map_or(prompt, |(inside, _)| inside);
    let words: Vec<&str> = inside.split_whitespace().take(5).collect();
    if words.is_empty() {
        "Chroxy demo session".to_owned()
    } else {
        format!("Demo: {}", words.join(" "))
    }
}

/// Applies the directive language to one prompt.
fn script_prompt(prompt: &str, cwd: Option<String>, tool_id: &str) -> Turn {
    let (word, rest) = split_word(prompt);
    let message = match word {
        "REPLY" if !rest.is_empty() => ScriptedMessage::text(rest),
        "PLEASE_WRITE" if !rest.is_empty() => {
            let (file, content) = split_word(rest);
            let content = if content.is_empty() {
                DEFAULT_FILE_CONTENT
            } else {
                content
            };
            let path = absolute(file, cwd.as_deref());
            ScriptedMessage::tool(
                format!("I'll write `{file}`."),
                tool_id,
                "Write",
                json!({"file_path": path, "content": content}),
            )
        }
        "PLEASE_BASH" => {
            let command = if rest.is_empty() {
                DEFAULT_COMMAND
            } else {
                rest
            };
            ScriptedMessage::tool(
                format!("I'll run `{command}`."),
                tool_id,
                "Bash",
                json!({"command": command, "description": describe(command)}),
            )
        }
        "PLEASE_ASK" => ScriptedMessage::tool(
            "I have a question before I go on.".to_owned(),
            tool_id,
            "AskUserQuestion",
            json!({"questions": [{
                "question": ASK_QUESTION,
                "header": "Color",
                "options": [
                    {"label": "Red", "description": "Warm"},
                    {"label": "Blue", "description": "Calm"}
                ],
                "multiSelect": false
            }]}),
        ),
        "SLOW" => {
            let (first, after) = split_word(rest);
            let (pace, text) = match first.parse::<u64>() {
                Ok(ms) => (Duration::from_millis(ms).min(MAX_SLOW_PACE), after),
                Err(_) => (DEFAULT_SLOW_PACE, rest),
            };
            let text = if text.is_empty() {
                counting(40)
            } else {
                text.to_owned()
            };
            ScriptedMessage {
                blocks: vec![ScriptedBlock::Text(text)],
                pace,
            }
        }
        "API_ERROR" => return Turn::Error(api_error(rest)),
        _ => ScriptedMessage::text(default_answer(prompt)),
    };
    Turn::Message(message)
}

/// `API_ERROR <status> [retry]`.
fn api_error(args: &str) -> ScriptedError {
    let (status, flag) = split_word(args);
    let status = status
        .parse::<u16>()
        .ok()
        .filter(|s| (400..=599).contains(s))
        .unwrap_or(500);
    ScriptedError {
        status,
        kind: error_type(status),
        message: format!("Scripted error from Chroxy's demo model (API_ERROR {status})"),
        retry: flag.eq_ignore_ascii_case("retry"),
    }
}

/// The Anthropic error type the real API uses for a status.
pub fn error_type(status: u16) -> &'static str {
    match status {
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        500..=599 => "api_error",
        _ => "invalid_request_error",
    }
}

/// The answer to anything that is not a directive: it must read well to someone trying
/// Chroxy without an Anthropic account, and teach them the directives.
pub fn default_answer(prompt: &str) -> String {
    let mut asked: String = prompt.chars().take(ECHO_LIMIT).collect();
    if asked.len() < prompt.len() {
        asked.push('…');
    }
    let opening = if asked.is_empty() {
        "Hi! I'm Chroxy's demo model.".to_owned()
    } else {
        format!("Hi! I'm Chroxy's demo model. You asked: \"{asked}\"")
    };
    format!(
        "{opening}\n\n\
         No real AI is connected to this session, so I follow a small script. \
         Try one of these to see how Chroxy works:\n\
         - `REPLY <text>`: I answer with exactly <text>\n\
         - `PLEASE_WRITE <file> [content]`: I ask to write a file, and you approve or deny it\n\
         - `PLEASE_BASH <command>`: I ask to run a shell command\n\
         - `PLEASE_ASK`: I ask you a multiple-choice question\n\
         - `SLOW <ms> <text>`: I type slowly, so you can try interrupting me\n\
         - `API_ERROR <status>`: I fail the way the real API does\n\
         - `ATTACHED`: I list the images and documents you sent with it\n\n\
         For real answers, start Chroxy without `--demo` where Claude Code is signed in."
    )
}

/// Splits off the first whitespace-delimited word; both parts are trimmed.
fn split_word(text: &str) -> (&str, &str) {
    let text = text.trim();
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], text[at..].trim()),
        None => (text, ""),
    }
}

/// Joins a relative path onto the CLI's working directory: the Write tool rejects
/// relative paths. Without a known directory the path is passed through unchanged.
fn absolute(file: &str, cwd: Option<&str>) -> String {
    match cwd {
        Some(dir) if !file.starts_with('/') => {
            std::path::Path::new(dir).join(file).display().to_string()
        }
        _ => file.to_owned(),
    }
}

/// A short description for the Bash tool, which the CLI shows in its permission prompt.
fn describe(command: &str) -> String {
    let short: String = command.chars().take(60).collect();
    if short.len() < command.len() {
        format!("Run {short}…")
    } else {
        format!("Run {short}")
    }
}

/// "Counting slowly: 1 2 3 ..." for `SLOW` without text.
fn counting(to: u32) -> String {
    let numbers: Vec<String> = (1..=to).map(|n| n.to_string()).collect();
    format!("Counting slowly: {}.", numbers.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn turn_for(prompt: &str) -> Turn {
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "m",
            "tools": [{"name": "Write"}],
            "system": [{"type": "text", "text": " - Primary working directory: /work/p\n"}],
            "messages": [{"role": "user", "content": [{"type": "text", "text": prompt}]}]
        }))
        .expect("test request parses");
        script_turn(&req, "toolu_demo_1")
    }

    #[test]
    fn attached_lists_the_images_and_documents_sent_before_the_prompt() {
        let req: MessagesRequest = serde_json::from_value(json!({
            "model": "m",
            "tools": [{"name": "Write"}],
            "messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw=="}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERg=="}},
                {"type": "text", "text": "ATTACHED"}
            ]}]
        }))
        .unwrap();
        assert_eq!(
            only_text(script_turn(&req, "t")),
            "Attached: image/png, 4 bytes; application/pdf, 4 bytes."
        );
        assert_eq!(only_text(turn_for("ATTACHED")), "Nothing is attached.");
    }

    fn only_text(turn: Turn) -> String {
        match turn {
            Turn::Message(ScriptedMessage { blocks, .. }) => match blocks.as_slice() {
                [ScriptedBlock::Text(t)] => t.clone(),
                other => panic!("expected one text block, got {other:?}"),
            },
            Turn::Error(e) => panic!("expected a message, got {e:?}"),
        }
    }

    #[test]
    fn reply_is_verbatim_after_the_keyword() {
        assert_eq!(
            only_text(turn_for("REPLY  Hello,  world!\nBye")),
            "Hello,  world!\nBye"
        );
    }

    #[test]
    fn please_write_joins_the_working_directory() {
        let Turn::Message(msg) = turn_for("PLEASE_WRITE notes/a.txt two words") else {
            panic!("expected a message");
        };
        assert_eq!(msg.stop_reason(), "tool_use");
        assert_eq!(
            msg.blocks[1],
            ScriptedBlock::ToolUse {
                id: "toolu_demo_1".into(),
                name: "Write".into(),
                input: json!({"file_path": "/work/p/notes/a.txt", "content": "two words"}),
            }
        );
    }

    #[test]
    fn please_bash_and_ask_name_their_tools() {
        for (prompt, tool) in [
            ("PLEASE_BASH ls -la", "Bash"),
            ("PLEASE_ASK", "AskUserQuestion"),
        ] {
            let Turn::Message(msg) = turn_for(prompt) else {
                panic!("expected a message")
            };
            assert!(
                matches!(&msg.blocks[1], ScriptedBlock::ToolUse { name, .. } if name == tool),
                "{prompt}: {msg:?}"
            );
        }
    }

    #[test]
    fn slow_takes_a_pace_and_caps_it() {
        let Turn::Message(msg) = turn_for("SLOW 50 a b c") else {
            panic!()
        };
        assert_eq!(msg.pace, Duration::from_millis(50));
        assert_eq!(msg.blocks, vec![ScriptedBlock::Text("a b c".into())]);
        let Turn::Message(msg) = turn_for("SLOW 99999999 x") else {
            panic!()
        };
        assert_eq!(msg.pace, MAX_SLOW_PACE);
        let Turn::Message(msg) = turn_for("SLOW count") else {
            panic!()
        };
        assert_eq!(msg.pace, DEFAULT_SLOW_PACE);
    }

    #[test]
    fn api_error_maps_status_to_type() {
        assert_eq!(
            turn_for("API_ERROR 529"),
            Turn::Error(ScriptedError {
                status: 529,
                kind: "overloaded_error",
                message: "Scripted error from Chroxy's demo model (API_ERROR 529)".into(),
                retry: false,
            })
        );
        let Turn::Error(e) = turn_for("API_ERROR nonsense") else {
            panic!()
        };
        assert_eq!((e.status, e.kind), (500, "api_error"));
        let Turn::Error(e) = turn_for("API_ERROR 503 retry") else {
            panic!()
        };
        assert!(e.retry);
    }

    #[test]
    fn title_calls_get_json_with_a_title() {
        let req: MessagesRequest = serde_json::from_value(json!({
            "messages": [{"role": "user", "content": [{"type": "text",
                "text": "<session>\nPLEASE_WRITE a.txt\n</session>\n\nWrite the title"}]}],
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object",
                "properties": {"title": {"type": "string"}}, "required": ["title"]}}}
        }))
        .expect("test request parses");
        let text = only_text(side_turn(&req));
        let v: Value = serde_json::from_str(&text).expect("title answer is JSON");
        assert_eq!(v["title"], "Demo: PLEASE_WRITE a.txt");
    }

    #[test]
    fn anything_else_gets_the_friendly_answer() {
        let text = only_text(turn_for("what can you do?"));
        assert!(text.contains("Chroxy's demo model"), "{text}");
        assert!(text.contains("\"what can you do?\""), "{text}");
        assert!(text.contains("PLEASE_WRITE"), "{text}");
        // Lower case is not a directive.
        assert!(only_text(turn_for("reply x")).contains("demo model"));
    }
}
