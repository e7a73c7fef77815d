//! A scripted Anthropic Messages API: the model behind `chroxy start --demo` (someone
//! without an Anthropic account can try the product) and behind every test that drives
//! the real Claude Code CLI. The CLI runs unchanged with `ANTHROPIC_BASE_URL` pointing
//! here; only the model's answers are scripted.
//!
//! # Layout
//!
//! - `request.rs`: a forgiving typed view of a request; classifies calls, finds the last
//!   user message and the CLI's working directory.
//! - `script.rs`: the directive language below → a [`Turn`] (pure).
//! - `render.rs`: a [`Turn`] → SSE events or one JSON message (pure).
//! - `server.rs`: the axum app: routes, SSE streaming, errors.
//! - `handle.rs`: the bounded request record and [`DemoHandle`] to read and wait on it.
//!
//! # Directives
//!
//! The script reads the **last user message** of each main-turn request (the CLI resends
//! the whole conversation every time). Its last typed text block is the prompt; the
//! `<system-reminder>` blocks the CLI injects are skipped. Keywords are upper case and
//! must start the prompt.
//!
//! | prompt | the model answers |
//! |---|---|
//! | `REPLY <text>` | exactly `<text>` (trimmed), streamed word by word |
//! | `PLEASE_WRITE <file> [content]` | a short text, then a `Write` tool_use with `file_path` = the CLI's working directory joined with `<file>`, and `content` (default: a greeting line) |
//! | `PLEASE_BASH [command]` | a short text, then a `Bash` tool_use `{command, description}` (default `touch chroxy-demo.txt`: the CLI runs read-only commands such as `echo` without asking) |
//! | `PLEASE_ASK` | a short text, then an `AskUserQuestion` tool_use: "Which color should the button be?", options Red / Blue |
//! | `SLOW [ms] [text]` | `<text>` (default: counting to 40) word by word, waiting `ms` (default 200, at most 60000) before each delta; stops when the client hangs up |
//! | `API_ERROR [status] [retry]` | HTTP `status` (default 500) with the API's error JSON (`api_error`, `overloaded_error` for 529, ...). Without `retry` the response carries `x-should-retry: false` |
//! | `ATTACHED` | `Attached: image/png, 1234 bytes; …` for each image or document block of the message, or `Nothing is attached.` |
//! | a tool_result (the last user message carries one) | `Tool result: <content>`, or `Tool error: <content>` when `is_error` (a denial is one) |
//! | anything else | a friendly note that this is Chroxy's demo model, echoing the question and listing the directives |
//!
//! A tool_use turn ends with `stop_reason: tool_use`; the CLI then asks the host for
//! permission (`can_use_tool`), runs or denies the tool, and sends the result back, which
//! the script answers with the `Tool result` text and `end_turn`.
//!
//! # Which requests run the script
//!
//! Only calls that carry a non-empty `tools` list ([`RequestKind::MainTurn`]). Claude Code
//! 2.1.197 also makes, against `ANTHROPIC_BASE_URL`:
//! - `HEAD /` at start-up (a connection pre-warm): 200.
//! - `POST /v1/messages?beta=true` without tools, with an `output_config.format` JSON
//!   schema `{title}`, on the first prompt of a session (the session title; skipped with
//!   `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1`): answered `{"title":"Demo: ..."}`.
//! - `POST /v1/messages/count_tokens` and `GET /v1/models` are answered too, in case a
//!   version asks; any other path gets a 404 in the API's error shape.
//!
//! # Running the CLI against it
//!
//! [`DemoHandle::cli_env`] lists the environment: `ANTHROPIC_BASE_URL`, any
//! `ANTHROPIC_API_KEY`, and [`CLI_ENV`]. Of those,
//! `CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1` is the one that matters: without it the
//! CLI also connects to `api.anthropic.com` (telemetry, feature flags) whatever the base
//! URL says, and sends the title call above. Nothing has to be written into `HOME` first:
//! in `-p` mode there is no onboarding or trust dialog, and an empty temporary `HOME`
//! works. The CLI writes `$HOME/.claude.json` and `$HOME/.claude/` (session transcripts
//! that `--resume` reads), or both under `CLAUDE_CONFIG_DIR` when that is set, and
//! `$TMPDIR/claude-<uid>/` for tool output: tests point `HOME` and `TMPDIR` at temporary
//! directories.
//!
//! # Retries on API errors
//!
//! The CLI retries 408, 409, 429, 5xx and `overloaded_error` itself (the SDK's own retry
//! is off), printing a `system`/`api_retry` line per attempt, with a backoff of
//! `min(500 ms · 2^(n-1), 32 s)` plus up to 25 % jitter (or `retry-after` if longer), 10
//! retries by default (`CLAUDE_CODE_MAX_RETRIES`, clamped to 15): about 2.5 minutes for
//! a 500. It gives up at once when the response says `x-should-retry: false` (so
//! `API_ERROR <status>` answers in milliseconds), except for `overloaded_error`, which it
//! always retries: for Claude model names it stops after 3 in a row ("Repeated 529
//! Overloaded errors", about 2 s), for other names only after all retries. A test that
//! wants the back-off path uses `API_ERROR <status> retry` with `CLAUDE_CODE_MAX_RETRIES`
//! set low.

mod handle;
mod render;
mod request;
mod script;
mod server;
#[cfg(test)]
mod server_tests;

pub use handle::{DemoHandle, RecordedRequest, RECORD_LIMIT};
pub use render::{render_error, render_events, render_message, split_words, MessageMeta, SseEvent};
pub use request::{LastUser, MessagesRequest, RequestKind};
pub use script::{
    default_answer, script_turn, side_turn, ScriptedBlock, ScriptedError, ScriptedMessage, Turn,
    ASK_QUESTION,
};
pub use server::spawn;

use std::time::Duration;

/// Environment for the Claude Code CLI besides `ANTHROPIC_BASE_URL` (see the module docs).
pub const CLI_ENV: &[(&str, &str)] = &[
    // Any non-empty key: the demo server never checks it.
    ("ANTHROPIC_API_KEY", "chroxy-demo"),
    // No telemetry, feature-flag or title calls to api.anthropic.com or to us.
    ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1"),
    ("DISABLE_AUTOUPDATER", "1"),
    ("DISABLE_TELEMETRY", "1"),
    ("DISABLE_ERROR_REPORTING", "1"),
];

/// What phones and the terminal are told in demo mode.
pub const NOTICE: &str = "DEMO mode: answers come from Chroxy's built-in scripted model, not Claude. Start Chroxy without --demo (after `claude` is installed and logged in) for the real thing.";

/// What can go wrong running or querying the demo model.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The listener has no local address (it was not bound).
    #[error("could not read the demo model's listening address; pass a bound listener")]
    LocalAddr(#[source] std::io::Error),
    /// The server stopped with an I/O error.
    #[error("the demo model server failed")]
    Serve(#[source] std::io::Error),
    /// Fewer main-turn requests arrived than expected.
    #[error(
        "waited {within:?} for main-turn request #{wanted} but {seen} arrived; \
         does the CLI's ANTHROPIC_BASE_URL point at the demo server?"
    )]
    Timeout {
        /// The 1-based main-turn number waited for.
        wanted: u64,
        /// Main turns seen when the wait gave up.
        seen: u64,
        /// How long the wait lasted.
        within: Duration,
    },
    /// The request arrived but has already been dropped from the bounded record.
    #[error("main-turn request #{wanted} is no longer kept: only the last {limit} requests are")]
    Evicted {
        /// The 1-based main-turn number asked for.
        wanted: u64,
        /// [`RECORD_LIMIT`].
        limit: usize,
    },
    /// SSE responses were still streaming when the wait gave up.
    #[error("{open} demo stream(s) still open after {within:?}; did the client hang up?")]
    StreamsStillOpen {
        /// Streams open when the wait gave up.
        open: usize,
        /// How long the wait lasted.
        within: Duration,
    },
    /// The server was stopped (its `stop` token cancelled) while a caller waited on it.
    #[error("the demo model server was stopped")]
    Stopped,
}
