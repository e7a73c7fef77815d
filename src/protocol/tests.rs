//! The wire protocol as docs/protocol.md writes it, checked from the phone's side: every
//! message type both ways (`client`, `server`), every refusal with its code and wording
//! (`errors`), and properties over arbitrary and mangled frames (`props`).
//!
//! The frame tables live here because `props` mutates the same valid frames the
//! per-message tests check.

mod client;
mod errors;
mod props;
mod server;

use serde_json::{json, Value};

use super::*;

/// Every client `type` docs/protocol.md lists; `client_type` keeps it in step with `ClientMsg`.
const CLIENT_TYPES: [&str; 25] = [
    "auth",
    "ping",
    "input",
    "interrupt",
    "set_model",
    "set_permission_mode",
    "permission_response",
    "user_question_response",
    "list_sessions",
    "switch_session",
    "create_session",
    "destroy_session",
    "rename_session",
    "list_providers",
    "list_slash_commands",
    "list_agents",
    "list_conversations",
    "terminal_resize",
    "push_subscribe",
    "push_unsubscribe",
    "push_events",
    "get_push_settings",
    "presence",
    "deploy_source",
    "get_attachment",
];

/// The wire `type` of a client message. No wildcard arm: a new variant does not compile
/// until it is named here, and then `every_client_type_has_a_case` asks for its frame.
fn client_type(msg: &ClientMsg) -> &'static str {
    match msg {
        ClientMsg::Auth(_) => "auth",
        ClientMsg::Ping(_) => "ping",
        ClientMsg::Input(_) => "input",
        ClientMsg::Interrupt(_) => "interrupt",
        ClientMsg::SetModel(_) => "set_model",
        ClientMsg::SetPermissionMode(_) => "set_permission_mode",
        ClientMsg::PermissionResponse(_) => "permission_response",
        ClientMsg::UserQuestionResponse(_) => "user_question_response",
        ClientMsg::ListSessions(_) => "list_sessions",
        ClientMsg::SwitchSession(_) => "switch_session",
        ClientMsg::CreateSession(_) => "create_session",
        ClientMsg::DestroySession(_) => "destroy_session",
        ClientMsg::RenameSession(_) => "rename_session",
        ClientMsg::ListProviders(_) => "list_providers",
        ClientMsg::ListSlashCommands(_) => "list_slash_commands",
        ClientMsg::ListAgents(_) => "list_agents",
        ClientMsg::ListConversations(_) => "list_conversations",
        ClientMsg::TerminalResize(_) => "terminal_resize",
        ClientMsg::PushSubscribe(_) => "push_subscribe",
        ClientMsg::PushUnsubscribe(_) => "push_unsubscribe",
        ClientMsg::PushEvents(_) => "push_events",
        ClientMsg::GetPushSettings(_) => "get_push_settings",
        ClientMsg::GetAttachment(_) => "get_attachment",
        ClientMsg::Presence(_) => "presence",
        ClientMsg::DeploySource(_) => "deploy_source",
    }
}

fn s(text: &str) -> String {
    text.to_owned()
}

fn some(text: &str) -> Option<String> {
    Some(text.to_owned())
}

/// Client frames exactly as docs/protocol.md writes them, with the value each must parse to.
/// Each also serializes back to the same JSON, so optional fields appear here only when
/// set: a case without `sessionId` proves a `None` is omitted, not sent as `null`.
fn client_cases() -> Vec<(Value, ClientMsg)> {
    vec![
        (
            json!({"type": "auth", "token": "tok-123",
                   "deviceInfo": {"deviceName": "Ana's phone", "deviceType": "phone", "platform": "iOS 18"},
                   "protocolVersion": 1}),
            ClientMsg::Auth(Auth {
                token: Token(s("tok-123")),
                device_info: Some(DeviceInfo {
                    device_name: some("Ana's phone"),
                    device_type: some("phone"),
                    platform: some("iOS 18"),
                }),
                protocol_version: Some(1),
                device_key: None,
                pairing_code: None,
                eager_public_key: None,
                eager_salt: None,
            }),
        ),
        (
            json!({"type": "auth", "token": "tok-123", "deviceKey": "dk-1", "pairingCode": "c0de",
                   "eagerPublicKey": "B6N8vBQg=", "eagerSalt": "gIGC"}),
            ClientMsg::Auth(Auth {
                token: Token(s("tok-123")),
                device_info: None,
                protocol_version: None,
                device_key: Some(Token(s("dk-1"))),
                pairing_code: Some(Token(s("c0de"))),
                eager_public_key: Some(s("B6N8vBQg=")),
                eager_salt: Some(s("gIGC")),
            }),
        ),
        (
            json!({"type": "auth", "token": "tok-123"}),
            ClientMsg::Auth(Auth {
                token: Token(s("tok-123")),
                device_info: None,
                protocol_version: None,
                device_key: None,
                pairing_code: None,
                eager_public_key: None,
                eager_salt: None,
            }),
        ),
        (json!({"type": "ping"}), ClientMsg::Ping(Empty {})),
        (
            json!({"type": "input", "data": "fix the tests", "sessionId": "s-1", "clientMessageId": "m-7"}),
            ClientMsg::Input(Input {
                data: s("fix the tests"),
                session_id: some("s-1"),
                client_message_id: some("m-7"),
                attachments: vec![],
            }),
        ),
        (
            json!({"type": "input", "data": "what is this?", "attachments": [
                {"type": "image", "mediaType": "image/png", "data": "iVBORw==", "name": "shot.png"},
                {"type": "document", "mediaType": "text/csv", "data": "eCx5Cg==", "name": "a.csv"}]}),
            ClientMsg::Input(Input {
                data: s("what is this?"),
                session_id: None,
                client_message_id: None,
                attachments: vec![
                    Attachment {
                        kind: AttachmentKind::Image,
                        media_type: s("image/png"),
                        data: Base64Data(vec![0x89, b'P', b'N', b'G']),
                        name: s("shot.png"),
                    },
                    Attachment {
                        kind: AttachmentKind::Document,
                        media_type: s("text/csv"),
                        data: Base64Data(b"x,y\n".to_vec()),
                        name: s("a.csv"),
                    },
                ],
            }),
        ),
        (
            json!({"type": "get_attachment", "sessionId": "s-1", "attachmentId": "a-0123"}),
            ClientMsg::GetAttachment(GetAttachment {
                session_id: some("s-1"),
                attachment_id: s("a-0123"),
            }),
        ),
        (
            json!({"type": "input", "data": "héllo\n\"quoted\" ✓"}),
            ClientMsg::Input(Input {
                data: s("héllo\n\"quoted\" ✓"),
                session_id: None,
                client_message_id: None,
                attachments: vec![],
            }),
        ),
        (
            json!({"type": "interrupt", "sessionId": "s-1"}),
            ClientMsg::Interrupt(SessionTarget {
                session_id: some("s-1"),
            }),
        ),
        (
            json!({"type": "interrupt"}),
            ClientMsg::Interrupt(SessionTarget { session_id: None }),
        ),
        (
            json!({"type": "set_model", "model": "opus", "sessionId": "s-1"}),
            ClientMsg::SetModel(SetModel {
                model: s("opus"),
                session_id: some("s-1"),
            }),
        ),
        (
            json!({"type": "set_model", "model": "sonnet"}),
            ClientMsg::SetModel(SetModel {
                model: s("sonnet"),
                session_id: None,
            }),
        ),
        (
            json!({"type": "set_permission_mode", "mode": "auto", "confirmed": true, "sessionId": "s-1"}),
            ClientMsg::SetPermissionMode(SetPermissionMode {
                mode: s("auto"),
                confirmed: true,
                session_id: some("s-1"),
            }),
        ),
        (
            json!({"type": "set_permission_mode", "mode": "acceptEdits", "confirmed": false}),
            ClientMsg::SetPermissionMode(SetPermissionMode {
                mode: s("acceptEdits"),
                confirmed: false,
                session_id: None,
            }),
        ),
        (
            json!({"type": "permission_response", "requestId": "p-1", "decision": "allow"}),
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p-1"),
                decision: Decision::Allow,
                reason: None,
                scope: None,
                directory: None,
            }),
        ),
        (
            json!({"type": "permission_response", "requestId": "p-2", "decision": "allowAlways"}),
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p-2"),
                decision: Decision::AllowAlways,
                reason: None,
                scope: None,
                directory: None,
            }),
        ),
        (
            json!({"type": "permission_response", "requestId": "p-3", "decision": "deny", "reason": "not in prod"}),
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p-3"),
                decision: Decision::Deny,
                reason: some("not in prod"),
                scope: None,
                directory: None,
            }),
        ),
        (
            json!({"type": "permission_response", "requestId": "p-4", "decision": "allowAlways",
                   "reason": "tests", "scope": "project", "directory": "/home/dev/project/src"}),
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p-4"),
                decision: Decision::AllowAlways,
                reason: some("tests"),
                scope: Some(RuleScope::Project),
                directory: some("/home/dev/project/src"),
            }),
        ),
        (
            json!({"type": "permission_response", "requestId": "p-5", "decision": "allowAlways", "scope": "session"}),
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p-5"),
                decision: Decision::AllowAlways,
                reason: None,
                scope: Some(RuleScope::Session),
                directory: None,
            }),
        ),
        (
            json!({"type": "user_question_response", "toolUseId": "tu-1", "answer": "Rust",
                   "answers": {"Which language?": "Rust", "Which editor?": "Helix"}}),
            ClientMsg::UserQuestionResponse(UserQuestionResponse {
                tool_use_id: s("tu-1"),
                answer: s("Rust"),
                answers: Some(
                    [("Which language?", "Rust"), ("Which editor?", "Helix")]
                        .into_iter()
                        .map(|(q, a)| (s(q), Chosen::One(s(a))))
                        .collect(),
                ),
                freeform_text: None,
            }),
        ),
        (
            json!({"type": "user_question_response", "toolUseId": "tu-3", "answer": "Other",
                   "answers": {"Which checks?": ["Lint", "Other"]}, "freeformText": "fuzzing"}),
            ClientMsg::UserQuestionResponse(UserQuestionResponse {
                tool_use_id: s("tu-3"),
                answer: s("Other"),
                answers: Some(
                    [(
                        s("Which checks?"),
                        Chosen::Many(vec![s("Lint"), s("Other")]),
                    )]
                    .into_iter()
                    .collect(),
                ),
                freeform_text: some("fuzzing"),
            }),
        ),
        (
            json!({"type": "user_question_response", "toolUseId": "tu-2", "answer": "yes"}),
            ClientMsg::UserQuestionResponse(UserQuestionResponse {
                tool_use_id: s("tu-2"),
                answer: s("yes"),
                answers: None,
                freeform_text: None,
            }),
        ),
        (
            json!({"type": "list_sessions"}),
            ClientMsg::ListSessions(Empty {}),
        ),
        (
            json!({"type": "switch_session", "sessionId": "s-2"}),
            ClientMsg::SwitchSession(SessionRef {
                session_id: s("s-2"),
            }),
        ),
        (
            json!({"type": "create_session", "name": "api", "cwd": "/home/dev/api",
                   "model": "opus", "permissionMode": "plan"}),
            ClientMsg::CreateSession(CreateSession {
                name: some("api"),
                cwd: some("/home/dev/api"),
                model: some("opus"),
                permission_mode: some("plan"),
            }),
        ),
        (
            json!({"type": "create_session"}),
            ClientMsg::CreateSession(CreateSession::default()),
        ),
        (
            json!({"type": "destroy_session", "sessionId": "s-2"}),
            ClientMsg::DestroySession(SessionRef {
                session_id: s("s-2"),
            }),
        ),
        (
            json!({"type": "rename_session", "sessionId": "s-1", "name": "backend"}),
            ClientMsg::RenameSession(RenameSession {
                session_id: s("s-1"),
                name: s("backend"),
            }),
        ),
        (
            json!({"type": "list_providers"}),
            ClientMsg::ListProviders(Empty {}),
        ),
        (
            json!({"type": "list_slash_commands", "sessionId": "s-1"}),
            ClientMsg::ListSlashCommands(SessionTarget {
                session_id: some("s-1"),
            }),
        ),
        (
            json!({"type": "list_agents"}),
            ClientMsg::ListAgents(SessionTarget::default()),
        ),
        (
            json!({"type": "list_conversations"}),
            ClientMsg::ListConversations(Empty {}),
        ),
        (
            json!({"type": "terminal_resize", "sessionId": "s-1", "cols": 80, "rows": 24}),
            ClientMsg::TerminalResize(TerminalResize {
                session_id: some("s-1"),
                cols: Some(80),
                rows: Some(24),
            }),
        ),
        (
            json!({"type": "push_subscribe", "subscription": {
                "endpoint": "https://push.example.com/x",
                "keys": {"p256dh": "BNc", "auth": "tBH"}},
                "events": {"prompts": true, "turns": false, "supervisor": true}}),
            ClientMsg::PushSubscribe(PushSubscribe {
                subscription: PushSubscriptionJson {
                    endpoint: s("https://push.example.com/x"),
                    keys: PushKeys {
                        p256dh: s("BNc"),
                        auth: s("tBH"),
                    },
                },
                events: Some(PushEvents {
                    prompts: true,
                    turns: false,
                    supervisor: true,
                }),
            }),
        ),
        (
            json!({"type": "push_unsubscribe"}),
            ClientMsg::PushUnsubscribe(Empty {}),
        ),
        (
            json!({"type": "push_events", "events": {"prompts": true, "turns": true, "supervisor": false}}),
            ClientMsg::PushEvents(SetPushEvents {
                events: PushEvents {
                    prompts: true,
                    turns: true,
                    supervisor: false,
                },
            }),
        ),
        (
            json!({"type": "get_push_settings"}),
            ClientMsg::GetPushSettings(Empty {}),
        ),
        (
            json!({"type": "presence", "visible": false}),
            ClientMsg::Presence(Presence { visible: false }),
        ),
        (
            json!({"type": "deploy_source", "sessionId": "s1", "allowDirty": true}),
            ClientMsg::DeploySource(DeploySource {
                session_id: "s1".into(),
                allow_dirty: true,
            }),
        ),
    ]
}
