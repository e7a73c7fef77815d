//! Server → client: each message serializes to the JSON docs/protocol.md writes, and that JSON
//! deserializes back (what the phone client and the integration tests read).

use std::collections::BTreeSet;

use super::*;

const SERVER_TYPES: [&str; 44] = [
    "auth_ok",
    "auth_fail",
    "pong",
    "server_mode",
    "session_list",
    "session_switched",
    "session_error",
    "history_replay_start",
    "history_replay_end",
    "claude_ready",
    "agent_busy",
    "agent_idle",
    "stream_start",
    "stream_delta",
    "stream_end",
    "tool_start",
    "tool_result",
    "message",
    "input_accepted",
    "today_cost",
    "result",
    "permission_request",
    "permission_resolved",
    "permission_expired",
    "user_question",
    "model_changed",
    "available_models",
    "available_permission_modes",
    "provider_list",
    "slash_commands",
    "agent_list",
    "conversations_list",
    "user_input",
    "permission_mode_changed",
    "confirm_permission_mode",
    "client_joined",
    "client_left",
    "rate_limited",
    "server_shutdown",
    "push_settings",
    "deploy_requested",
    "deploy_status",
    "attachment",
    "error",
];

/// No wildcard arm: a new variant does not compile until named here.
fn server_type(msg: &ServerMsg) -> &'static str {
    match msg {
        ServerMsg::AuthOk { .. } => "auth_ok",
        ServerMsg::AuthFail { .. } => "auth_fail",
        ServerMsg::Pong { .. } => "pong",
        ServerMsg::ServerMode { .. } => "server_mode",
        ServerMsg::SessionList { .. } => "session_list",
        ServerMsg::SessionSwitched { .. } => "session_switched",
        ServerMsg::SessionError { .. } => "session_error",
        ServerMsg::HistoryReplayStart { .. } => "history_replay_start",
        ServerMsg::HistoryReplayEnd { .. } => "history_replay_end",
        ServerMsg::ClaudeReady { .. } => "claude_ready",
        ServerMsg::AgentBusy { .. } => "agent_busy",
        ServerMsg::AgentIdle { .. } => "agent_idle",
        ServerMsg::StreamStart { .. } => "stream_start",
        ServerMsg::StreamDelta { .. } => "stream_delta",
        ServerMsg::StreamEnd { .. } => "stream_end",
        ServerMsg::ToolStart { .. } => "tool_start",
        ServerMsg::ToolResult { .. } => "tool_result",
        ServerMsg::Message { .. } => "message",
        ServerMsg::InputAccepted { .. } => "input_accepted",
        ServerMsg::TodayCost { .. } => "today_cost",
        ServerMsg::Result { .. } => "result",
        ServerMsg::PermissionRequest { .. } => "permission_request",
        ServerMsg::PermissionResolved { .. } => "permission_resolved",
        ServerMsg::PermissionExpired { .. } => "permission_expired",
        ServerMsg::UserQuestion { .. } => "user_question",
        ServerMsg::ModelChanged { .. } => "model_changed",
        ServerMsg::AvailableModels { .. } => "available_models",
        ServerMsg::AvailablePermissionModes { .. } => "available_permission_modes",
        ServerMsg::ProviderList { .. } => "provider_list",
        ServerMsg::SlashCommands { .. } => "slash_commands",
        ServerMsg::AgentList { .. } => "agent_list",
        ServerMsg::ConversationsList { .. } => "conversations_list",
        ServerMsg::UserInput { .. } => "user_input",
        ServerMsg::PermissionModeChanged { .. } => "permission_mode_changed",
        ServerMsg::ConfirmPermissionMode { .. } => "confirm_permission_mode",
        ServerMsg::ClientJoined { .. } => "client_joined",
        ServerMsg::ClientLeft { .. } => "client_left",
        ServerMsg::RateLimited { .. } => "rate_limited",
        ServerMsg::ServerShutdown { .. } => "server_shutdown",
        ServerMsg::PushSettings { .. } => "push_settings",
        ServerMsg::Attachment { .. } => "attachment",
        ServerMsg::DeployRequested { .. } => "deploy_requested",
        ServerMsg::DeployStatus { .. } => "deploy_status",
        ServerMsg::Error { .. } => "error",
    }
}

fn ana() -> ClientInfo {
    ClientInfo {
        client_id: s("c-9z"),
        device: DeviceInfo {
            device_name: some("Ana's phone"),
            device_type: some("phone"),
            platform: some("iOS 18"),
        },
    }
}

/// Server messages as docs/protocol.md writes them. Cases without an optional field prove it
/// is omitted when `None` (the serialized JSON must equal the literal exactly).
fn server_cases() -> Vec<(Value, ServerMsg)> {
    let mut cases = vec![
        (
            json!({"type": "auth_ok", "clientId": "c-1a2b", "serverMode": "cli",
                   "serverVersion": "0.3.1", "latestVersion": null, "serverCommit": "abc1234",
                   "cwd": "/home/dev/project",
                   "connectedClients": [{"clientId": "c-9z", "deviceName": "Ana's phone",
                                         "deviceType": "phone", "platform": "iOS 18"}],
                   "encryption": "disabled", "protocolVersion": 1,
                   "minProtocolVersion": 1, "maxProtocolVersion": 1,
                   "availablePermissionModes": [
                       {"id": "approve", "label": "Approve", "description": "Ask before every tool use"},
                       {"id": "acceptEdits", "label": "Accept Edits", "description": "Edit files without asking; ask for the rest"},
                       {"id": "auto", "label": "Auto (skip all prompts)", "description": "Run every tool without asking; needs confirming"},
                       {"id": "plan", "label": "Plan", "description": "Plan only: no edits, no commands"}]}),
            ServerMsg::AuthOk {
                client_id: s("c-1a2b"),
                server_mode: s("cli"),
                server_version: s("0.3.1"),
                latest_version: None,
                server_commit: s("abc1234"),
                cwd: s("/home/dev/project"),
                connected_clients: vec![ana()],
                encryption: s("disabled"),
                protocol_version: 1,
                min_protocol_version: 1,
                max_protocol_version: 1,
                device_id: None,
                device_key: None,
                server_public_key: None,
                available_permission_modes: PermissionModeInfo::all(),
            },
        ),
        (
            json!({"type": "auth_ok", "clientId": "c-1", "serverMode": "cli",
                   "serverVersion": "0.3.1", "latestVersion": null, "serverCommit": "abc1234",
                   "cwd": "/p", "connectedClients": [], "encryption": "required",
                   "protocolVersion": 1, "minProtocolVersion": 1, "maxProtocolVersion": 1,
                   "deviceId": "k7m2qp", "deviceKey": "key-for-the-phone",
                   "serverPublicKey": "eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRo=",
                   "availablePermissionModes": []}),
            ServerMsg::AuthOk {
                client_id: s("c-1"),
                server_mode: s("cli"),
                server_version: s("0.3.1"),
                latest_version: None,
                server_commit: s("abc1234"),
                cwd: s("/p"),
                connected_clients: vec![],
                encryption: s("required"),
                protocol_version: 1,
                min_protocol_version: 1,
                max_protocol_version: 1,
                device_id: Some(s("k7m2qp")),
                device_key: Some(Token(s("key-for-the-phone"))),
                server_public_key: Some(s("eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRo=")),
                available_permission_modes: vec![],
            },
        ),
        (
            json!({"type": "auth_fail", "reason": "device_pending", "message": "approve it",
                   "deviceId": "k7m2qp", "deviceKey": "key-for-the-phone"}),
            ServerMsg::AuthFail {
                reason: AuthFailReason::DevicePending,
                message: Some(s("approve it")),
                device_id: Some(s("k7m2qp")),
                device_key: Some(Token(s("key-for-the-phone"))),
            },
        ),
        (
            json!({"type": "pong", "serverTs": 1_700_000_000_000u64}),
            ServerMsg::Pong {
                server_ts: 1_700_000_000_000,
            },
        ),
        (
            json!({"type": "session_list", "sessions": [
                {"sessionId": "s-1", "name": "project", "cwd": "/home/dev/project",
                 "model": "sonnet", "permissionMode": "acceptEdits", "isBusy": true,
                 "createdAt": 1_700_000_000_000u64, "lastActivityAt": 1_700_000_005_000u64},
                {"sessionId": "s-2", "name": "api", "cwd": "/home/dev/api",
                 "model": null, "permissionMode": "approve", "isBusy": false,
                 "createdAt": 1u64, "lastActivityAt": 2u64}]}),
            ServerMsg::SessionList {
                sessions: vec![
                    SessionInfo {
                        session_id: s("s-1"),
                        name: s("project"),
                        cwd: s("/home/dev/project"),
                        model: some("sonnet"),
                        permission_mode: PermissionMode::AcceptEdits,
                        is_busy: true,
                        created_at: 1_700_000_000_000,
                        last_activity_at: 1_700_000_005_000,
                    },
                    SessionInfo {
                        session_id: s("s-2"),
                        name: s("api"),
                        cwd: s("/home/dev/api"),
                        model: None,
                        permission_mode: PermissionMode::Approve,
                        is_busy: false,
                        created_at: 1,
                        last_activity_at: 2,
                    },
                ],
            },
        ),
        (
            json!({"type": "session_list", "sessions": []}),
            ServerMsg::SessionList { sessions: vec![] },
        ),
        (
            json!({"type": "session_switched", "sessionId": "s-1", "name": "project", "cwd": "/home/dev/project"}),
            ServerMsg::SessionSwitched {
                session_id: s("s-1"),
                name: s("project"),
                cwd: s("/home/dev/project"),
            },
        ),
        (
            json!({"type": "session_error", "message": "claude exited with status 1",
                   "code": "AGENT_UNAVAILABLE", "sessionId": "s-1"}),
            ServerMsg::SessionError {
                message: s("claude exited with status 1"),
                code: Some(ErrorCode::AgentUnavailable),
                session_id: some("s-1"),
            },
        ),
        (
            json!({"type": "session_error", "message": "no agent"}),
            ServerMsg::SessionError {
                message: s("no agent"),
                code: None,
                session_id: None,
            },
        ),
        (
            json!({"type": "stream_start", "messageId": "m-1", "sessionId": "s-1"}),
            ServerMsg::StreamStart {
                message_id: s("m-1"),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "stream_delta", "messageId": "m-1", "delta": "Hello, ", "sessionId": "s-1"}),
            ServerMsg::StreamDelta {
                message_id: s("m-1"),
                delta: s("Hello, "),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "stream_end", "messageId": "m-1", "sessionId": "s-1"}),
            ServerMsg::StreamEnd {
                message_id: s("m-1"),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "tool_start", "messageId": "m-2", "toolUseId": "tu-1", "tool": "Bash",
                   "input": {"command": "ls -la", "timeout": 5000}, "sessionId": "s-1"}),
            ServerMsg::ToolStart {
                message_id: s("m-2"),
                tool_use_id: s("tu-1"),
                tool: s("Bash"),
                input: json!({"command": "ls -la", "timeout": 5000}),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "tool_result", "toolUseId": "tu-1", "result": "total 0",
                   "isError": true, "truncated": false, "sessionId": "s-1"}),
            ServerMsg::ToolResult {
                tool_use_id: s("tu-1"),
                result: s("total 0"),
                is_error: Some(true),
                truncated: Some(false),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "tool_result", "toolUseId": "tu-1", "result": "ok", "sessionId": "s-1"}),
            ServerMsg::ToolResult {
                tool_use_id: s("tu-1"),
                result: s("ok"),
                is_error: None,
                truncated: None,
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "result", "cost": 0.0123, "duration": 4200,
                   "usage": {"input_tokens": 10, "output_tokens": 20},
                   "sessionId": "s-1", "queueLength": 2}),
            ServerMsg::Result {
                cost: Some(0.0123),
                duration: Some(4200),
                usage: json!({"input_tokens": 10, "output_tokens": 20}),
                session_id: s("s-1"),
                queue_length: Some(2),
            },
        ),
        (
            json!({"type": "result", "cost": null, "duration": null, "usage": {}, "sessionId": "s-1"}),
            ServerMsg::Result {
                cost: None,
                duration: None,
                usage: json!({}),
                session_id: s("s-1"),
                queue_length: None,
            },
        ),
        (
            json!({"type": "permission_request", "requestId": "p-1", "tool": "Bash",
                   "description": "Run `rm -rf build`", "input": {"command": "rm -rf build"},
                   "remainingMs": 300_000, "sessionId": "s-1",
                   "always": {"rule": "Bash(rm -rf build)", "scope": "project",
                              "allows": "exactly the command `rm -rf build`, in every session in /p"}}),
            ServerMsg::PermissionRequest {
                request_id: s("p-1"),
                tool: s("Bash"),
                description: s("Run `rm -rf build`"),
                input: json!({"command": "rm -rf build"}),
                remaining_ms: 300_000,
                session_id: s("s-1"),
                always: Some(AlwaysOffer {
                    rule: s("Bash(rm -rf build)"),
                    scope: RuleScope::Project,
                    allows: s("exactly the command `rm -rf build`, in every session in /p"),
                }),
            },
        ),
        (
            // Nothing "Always" could remember exactly: said with an explicit null.
            json!({"type": "permission_request", "requestId": "p-2", "tool": "WebFetch",
                   "description": "Fetch", "input": {"url": "https://example.com"},
                   "remainingMs": 1000, "sessionId": "s-1", "always": null}),
            ServerMsg::PermissionRequest {
                request_id: s("p-2"),
                tool: s("WebFetch"),
                description: s("Fetch"),
                input: json!({"url": "https://example.com"}),
                remaining_ms: 1000,
                session_id: s("s-1"),
                always: None,
            },
        ),
        (
            json!({"type": "permission_resolved", "requestId": "p-1", "decision": "allowAlways", "sessionId": "s-1"}),
            ServerMsg::PermissionResolved {
                request_id: s("p-1"),
                decision: s("allowAlways"),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "permission_expired", "requestId": "p-1",
                   "message": "already answered on another device", "sessionId": "s-1"}),
            ServerMsg::PermissionExpired {
                request_id: s("p-1"),
                message: s("already answered on another device"),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "user_question", "toolUseId": "tu-3",
                   "questions": [{"question": "Which language?", "options": [{"label": "Rust"}, {"label": "Go"}]}],
                   "sessionId": "s-1"}),
            ServerMsg::UserQuestion {
                tool_use_id: s("tu-3"),
                questions: json!([{"question": "Which language?", "options": [{"label": "Rust"}, {"label": "Go"}]}]),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "model_changed", "model": "opus", "sessionId": "s-1"}),
            ServerMsg::ModelChanged {
                model: s("opus"),
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "available_models", "models": [
                {"id": "sonnet", "label": "Sonnet", "fullId": "sonnet"},
                {"id": "opus", "label": "Opus", "fullId": "claude-opus-4-8"}]}),
            ServerMsg::AvailableModels {
                models: vec![
                    ModelInfo::alias("sonnet", "Sonnet"),
                    ModelInfo {
                        id: s("opus"),
                        label: s("Opus"),
                        full_id: s("claude-opus-4-8"),
                    },
                ],
            },
        ),
        (
            json!({"type": "available_permission_modes", "modes": [
                {"id": "plan", "label": "Plan", "description": "Plan only"}]}),
            ServerMsg::AvailablePermissionModes {
                modes: vec![PermissionModeInfo {
                    id: PermissionMode::Plan,
                    label: s("Plan"),
                    description: s("Plan only"),
                }],
            },
        ),
        (
            json!({"type": "provider_list", "providers": [{"name": "claude-cli", "capabilities": {"resume": true}}]}),
            ServerMsg::ProviderList {
                providers: json!([{"name": "claude-cli", "capabilities": {"resume": true}}]),
            },
        ),
        (
            json!({"type": "slash_commands", "commands": [{"name": "compact"}], "sessionId": "s-1"}),
            ServerMsg::SlashCommands {
                commands: vec![SlashCommand {
                    name: s("compact"),
                    description: String::new(),
                    argument_hint: String::new(),
                }],
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "agent_list", "agents": [
                {"name": "reviewer", "description": "Reviews diffs", "source": "project"}], "sessionId": "s-1"}),
            ServerMsg::AgentList {
                agents: vec![AgentInfo {
                    name: s("reviewer"),
                    description: s("Reviews diffs"),
                    source: s("project"),
                }],
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "conversations_list", "conversations": [
                {"conversationId": "0b6f-agent", "sessionId": "s-1", "projectName": "api",
                 "cwd": "/home/dev/api", "modifiedAtMs": 1_700_000_000_000u64, "preview": "fix the build"}]}),
            ServerMsg::ConversationsList {
                conversations: vec![ConversationInfo {
                    conversation_id: s("0b6f-agent"),
                    session_id: s("s-1"),
                    project_name: s("api"),
                    cwd: s("/home/dev/api"),
                    modified_at_ms: 1_700_000_000_000,
                    preview: some("fix the build"),
                }],
            },
        ),
        (
            json!({"type": "server_mode", "mode": "cli"}),
            ServerMsg::ServerMode { mode: s("cli") },
        ),
        (
            json!({"type": "user_input", "sessionId": "s-1", "clientId": "c-2", "text": "run the tests",
                   "messageId": "m-9", "timestamp": 1_700_000_000_000u64}),
            ServerMsg::UserInput {
                session_id: s("s-1"),
                client_id: s("c-2"),
                text: s("run the tests"),
                message_id: some("m-9"),
                timestamp: 1_700_000_000_000,
                attachments: vec![],
            },
        ),
        (
            json!({"type": "attachment", "sessionId": "s-1", "attachmentId": "a-1", "name": "shot.png",
                   "mediaType": "image/png", "data": "iVBORw=="}),
            ServerMsg::Attachment {
                session_id: s("s-1"),
                attachment_id: s("a-1"),
                name: s("shot.png"),
                media_type: s("image/png"),
                data: Base64Data(vec![0x89, b'P', b'N', b'G']),
            },
        ),
        (
            json!({"type": "permission_mode_changed", "mode": "plan", "sessionId": "s-1"}),
            ServerMsg::PermissionModeChanged {
                mode: PermissionMode::Plan,
                session_id: s("s-1"),
            },
        ),
        (
            json!({"type": "confirm_permission_mode", "mode": "auto",
                   "warning": "auto skips every permission prompt"}),
            ServerMsg::ConfirmPermissionMode {
                mode: PermissionMode::Auto,
                warning: s("auto skips every permission prompt"),
            },
        ),
        (
            json!({"type": "client_joined", "client": {"clientId": "c-9z", "deviceName": "Ana's phone",
                                                       "deviceType": "phone", "platform": "iOS 18"}}),
            ServerMsg::ClientJoined { client: ana() },
        ),
        (
            json!({"type": "client_left", "clientId": "c-9z"}),
            ServerMsg::ClientLeft {
                client_id: s("c-9z"),
            },
        ),
        (
            json!({"type": "rate_limited", "retryAfterMs": 1500, "message": "slow down", "requestId": "m-7"}),
            ServerMsg::RateLimited {
                retry_after_ms: 1500,
                message: s("slow down"),
                request_id: some("m-7"),
            },
        ),
        (
            json!({"type": "error", "code": "SESSION_NOT_FOUND", "message": "no session `s-9`", "requestId": "r-7"}),
            ServerMsg::Error {
                code: ErrorCode::SessionNotFound,
                message: s("no session `s-9`"),
                request_id: some("r-7"),
            },
        ),
        (
            json!({"type": "error", "code": "QUEUE_FULL", "message": "10 inputs already waiting"}),
            ServerMsg::error(ErrorCode::QueueFull, "10 inputs already waiting"),
        ),
    ];
    for (ty, reason) in [
        ("invalid_token", AuthFailReason::InvalidToken),
        ("timeout", AuthFailReason::Timeout),
        ("rate_limited", AuthFailReason::RateLimited),
        ("not_authenticated", AuthFailReason::NotAuthenticated),
        ("device_pending", AuthFailReason::DevicePending),
        ("device_refused", AuthFailReason::DeviceRefused),
        ("not_paired", AuthFailReason::NotPaired),
        ("token_auth_disabled", AuthFailReason::TokenAuthDisabled),
    ] {
        cases.push((
            json!({"type": "auth_fail", "reason": ty}),
            ServerMsg::auth_fail(reason),
        ));
    }
    type SessionOnly = fn(String) -> ServerMsg;
    let session_only: [(&str, SessionOnly); 4] = [
        ("history_replay_end", |session_id| {
            ServerMsg::HistoryReplayEnd { session_id }
        }),
        ("claude_ready", |session_id| ServerMsg::ClaudeReady {
            session_id,
            slash_commands: vec![],
        }),
        ("agent_busy", |session_id| ServerMsg::AgentBusy {
            session_id,
        }),
        ("agent_idle", |session_id| ServerMsg::AgentIdle {
            session_id,
        }),
    ];
    for (ty, make) in session_only {
        cases.push((json!({"type": ty, "sessionId": "s-1"}), make(s("s-1"))));
    }
    cases.push((
        json!({"type": "history_replay_start", "sessionId": "s-1", "fullHistory": true}),
        ServerMsg::HistoryReplayStart {
            session_id: s("s-1"),
            full_history: true,
        },
    ));
    cases.push((
        json!({"type": "claude_ready", "sessionId": "s-1", "slashCommands": [
            {"name": "compact", "description": "Clear the history, keep a summary"},
            {"name": "review", "argumentHint": "<pr>"}]}),
        ServerMsg::ClaudeReady {
            session_id: s("s-1"),
            slash_commands: vec![
                SlashCommand {
                    name: s("compact"),
                    description: s("Clear the history, keep a summary"),
                    argument_hint: String::new(),
                },
                SlashCommand {
                    name: s("review"),
                    description: String::new(),
                    argument_hint: s("<pr>"),
                },
            ],
        },
    ));
    for (ty, message_type) in [
        ("user_input", MessageType::UserInput),
        ("response", MessageType::Assistant),
        ("system", MessageType::System),
        ("error", MessageType::Error),
    ] {
        cases.push((
            json!({"type": "message", "messageType": ty, "content": "text",
                   "timestamp": 1_700_000_000_000u64, "sessionId": "s-1"}),
            ServerMsg::Message {
                message_type,
                content: s("text"),
                timestamp: 1_700_000_000_000,
                session_id: s("s-1"),
                client_message_id: None,
                attachments: vec![],
            },
        ));
    }
    cases.push((
        json!({"type": "message", "messageType": "user_input", "content": "fix it",
               "timestamp": 1_700_000_000_000u64, "sessionId": "s-1", "clientMessageId": "m-7",
               "attachments": [{"id": "a-1", "name": "shot.png", "mediaType": "image/png", "size": 4}]}),
        ServerMsg::Message {
            message_type: MessageType::UserInput,
            content: s("fix it"),
            timestamp: 1_700_000_000_000,
            session_id: s("s-1"),
            client_message_id: some("m-7"),
            attachments: vec![AttachmentInfo {
                id: s("a-1"),
                name: s("shot.png"),
                media_type: s("image/png"),
                size: 4,
            }],
        },
    ));
    cases.push((
        json!({"type": "today_cost", "day": "2026-12-02", "costUsd": 1.25}),
        ServerMsg::TodayCost {
            day: s("2026-12-02"),
            cost_usd: 1.25,
        },
    ));
    cases.push((
        json!({"type": "input_accepted", "clientMessageId": "m-7", "sessionId": "s-1"}),
        ServerMsg::InputAccepted {
            client_message_id: s("m-7"),
            session_id: s("s-1"),
        },
    ));
    for (ty, reason) in [
        ("restart", ShutdownReason::Restart),
        ("shutdown", ShutdownReason::Shutdown),
        ("crash", ShutdownReason::Crash),
    ] {
        cases.push((
            json!({"type": "server_shutdown", "reason": ty, "restartEtaMs": 3000}),
            ServerMsg::ServerShutdown {
                reason,
                restart_eta_ms: 3000,
            },
        ));
    }
    cases.push((
        json!({"type": "push_settings", "available": true, "applicationServerKey": "BAec9",
               "subscribed": true, "events": {"prompts": true, "turns": false, "supervisor": true}}),
        ServerMsg::PushSettings {
            available: true,
            application_server_key: some("BAec9"),
            subscribed: true,
            events: PushEvents {
                prompts: true,
                turns: false,
                supervisor: true,
            },
            reason: None,
        },
    ));
    cases.push((
        json!({"type": "push_settings", "available": false, "subscribed": false,
               "events": {"prompts": true, "turns": true, "supervisor": true},
               "reason": "notifications need Chroxy started with `chroxy start` or the tray app"}),
        ServerMsg::PushSettings {
            available: false,
            application_server_key: None,
            subscribed: false,
            events: PushEvents::default(),
            reason: some("notifications need Chroxy started with `chroxy start` or the tray app"),
        },
    ));
    cases.push((
        json!({"type": "deploy_requested", "sessionId": "s1", "source": "/src/chroxy",
               "needsApproval": true}),
        ServerMsg::DeployRequested {
            session_id: "s1".into(),
            source: "/src/chroxy".into(),
            needs_approval: true,
        },
    ));
    cases.push((
        json!({"type": "deploy_status", "refused": "a build is already running"}),
        ServerMsg::DeployStatus {
            build: None,
            refused: some("a build is already running"),
        },
    ));
    let build = json!({
        "source": "/src/chroxy", "rev": "HEAD", "commit": "abc", "dirty": false,
        "requestedBy": "pixel", "startedAt": 1,
        "steps": [{"name": "build", "state": "running", "durationMs": 5, "tail": ["Compiling chroxy"]}],
        "outcome": "stored", "error": null, "release": "3-abcdef12",
        "deploy": {"ok": true, "message": "deploying release 3-abcdef12 as a canary", "event": null},
        "summary": ["build of /src/chroxy at HEAD (abc) for pixel: built"]
    });
    cases.push((
        json!({"type": "deploy_status", "build": build}),
        ServerMsg::DeployStatus {
            build: Some(Box::new(serde_json::from_value(build).unwrap())),
            refused: None,
        },
    ));
    cases
}

#[test]
fn every_server_type_has_a_case() {
    let covered: BTreeSet<&str> = server_cases()
        .iter()
        .map(|(_, msg)| server_type(msg))
        .collect();
    let all: BTreeSet<&str> = SERVER_TYPES.into_iter().collect();
    assert_eq!(covered, all, "server types without a literal frame");
}

#[test]
fn messages_serialize_to_the_protocol_frame() {
    for (frame, msg) in server_cases() {
        let text = msg.to_json();
        let got: Value = serde_json::from_str(&text).expect("to_json gives JSON");
        assert_eq!(got, frame, "{msg:?}");
        assert_eq!(got["type"], server_type(&msg), "{msg:?}");
    }
}

#[test]
fn protocol_frames_deserialize_to_the_expected_message() {
    for (frame, expected) in server_cases() {
        let text = frame.to_string();
        let got = serde_json::from_value::<ServerMsg>(frame);
        assert_eq!(got.ok(), Some(expected), "frame {text}");
    }
}

#[test]
fn optional_fields_left_out_are_omitted_not_null() {
    let cases = [
        (
            ServerMsg::SessionError {
                message: s("m"),
                code: None,
                session_id: None,
            },
            ["code", "sessionId"].as_slice(),
        ),
        (
            ServerMsg::ToolResult {
                tool_use_id: s("t"),
                result: s("r"),
                is_error: None,
                truncated: None,
                session_id: s("s"),
            },
            ["isError", "truncated"].as_slice(),
        ),
        (
            ServerMsg::Result {
                cost: None,
                duration: None,
                usage: Value::Null,
                session_id: s("s"),
                queue_length: None,
            },
            ["queueLength"].as_slice(),
        ),
        (
            ServerMsg::error(ErrorCode::Draining, "stopping"),
            ["requestId"].as_slice(),
        ),
    ];
    for (msg, absent) in cases {
        let json: Value = serde_json::from_str(&msg.to_json()).expect("to_json gives JSON");
        for field in absent {
            assert!(json.get(field).is_none(), "`{field}` present in {json}");
        }
    }
}

#[test]
fn fields_the_protocol_shows_as_null_are_sent_as_null() {
    // `latestVersion: null` (auth_ok) and `cost`/`duration` of an agent that reported none
    // are part of the shape phones read; dropping them would break `"key" in msg` checks.
    let (frame, _) = server_cases()
        .into_iter()
        .find(|(_, m)| matches!(m, ServerMsg::AuthOk { .. }))
        .expect("auth_ok case");
    let json: Value = serde_json::from_str(
        &serde_json::from_value::<ServerMsg>(frame)
            .expect("auth_ok deserializes")
            .to_json(),
    )
    .expect("to_json gives JSON");
    assert_eq!(json.get("latestVersion"), Some(&Value::Null));
}

#[test]
fn error_codes_use_the_protocol_names() {
    let codes = [
        (ErrorCode::InvalidMessage, "INVALID_MESSAGE"),
        (ErrorCode::UnknownType, "UNKNOWN_TYPE"),
        (ErrorCode::TooLarge, "TOO_LARGE"),
        (ErrorCode::SessionNotFound, "SESSION_NOT_FOUND"),
        (ErrorCode::SessionLimit, "SESSION_LIMIT"),
        (ErrorCode::QueueFull, "QUEUE_FULL"),
        (ErrorCode::InvalidModel, "INVALID_MODEL"),
        (ErrorCode::InvalidMode, "INVALID_MODE"),
        (ErrorCode::InvalidCwd, "INVALID_CWD"),
        (ErrorCode::AgentUnavailable, "AGENT_UNAVAILABLE"),
        (ErrorCode::Draining, "DRAINING"),
        (ErrorCode::PushUnavailable, "PUSH_UNAVAILABLE"),
        (ErrorCode::AttachmentNotFound, "ATTACHMENT_NOT_FOUND"),
        (ErrorCode::AttachmentNotStored, "ATTACHMENT_NOT_STORED"),
    ];
    for (code, name) in codes {
        let json: Value =
            serde_json::from_str(&ServerMsg::error(code, "x").to_json()).expect("JSON");
        assert_eq!(json["code"], name);
        assert_eq!(
            serde_json::from_value::<ErrorCode>(json!(name)).ok(),
            Some(code)
        );
    }
}

#[test]
fn text_with_quotes_and_control_characters_survives_to_json() {
    let delta = "line 1\n\t\"quoted\" \\ \u{0} ✓ 🦀";
    let msg = ServerMsg::StreamDelta {
        message_id: s("m"),
        delta: s(delta),
        session_id: s("s"),
    };
    let back: ServerMsg = serde_json::from_str(&msg.to_json()).expect("to_json gives JSON");
    assert_eq!(back, msg);
}

#[test]
fn assistant_text_saved_under_its_old_name_still_reads_and_goes_out_as_response() {
    let saved = json!({"type": "message", "messageType": "assistant", "content": "hi",
                       "timestamp": 1_700_000_000_000u64, "sessionId": "s-1"});
    let msg: ServerMsg = serde_json::from_value(saved).unwrap();
    assert!(matches!(
        msg,
        ServerMsg::Message {
            message_type: MessageType::Assistant,
            ..
        }
    ));
    assert_eq!(
        serde_json::to_value(&msg).unwrap()["messageType"],
        "response"
    );
}
