//! Server → client messages.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{DeviceInfo, PermissionMode, RuleScope, Token};

/// Error codes of docs/protocol.md "Errors".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// Not JSON, not an object, missing or wrongly typed field.
    InvalidMessage,
    /// `type` not in this protocol.
    UnknownType,
    /// Frame or field over its limit.
    TooLarge,
    /// `sessionId` unknown.
    SessionNotFound,
    /// Already at the session limit.
    SessionLimit,
    /// The input queue is full.
    QueueFull,
    /// Model not in `available_models`.
    InvalidModel,
    /// Permission mode not in the protocol.
    InvalidMode,
    /// `cwd` is not an existing directory.
    InvalidCwd,
    /// `claude` missing or not starting.
    AgentUnavailable,
    /// The worker is stopping.
    Draining,
    /// Notifications cannot be set up here (the message says why).
    PushUnavailable,
    /// `get_attachment` names a file this session no longer keeps (or never had).
    AttachmentNotFound,
    /// An input's files could not be stored (a full disk); the input was not taken.
    AttachmentNotStored,
    /// `deploy_source` cannot be done here (the message says why).
    DeployUnavailable,
}

/// Why `auth` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthFailReason {
    /// Wrong token.
    InvalidToken,
    /// No `auth` within the deadline.
    Timeout,
    /// Too many attempts from this address.
    RateLimited,
    /// Something other than `auth` came first.
    NotAuthenticated,
    /// The token is right but this device is not approved yet: the owner approves it
    /// on the computer (`deviceId` names it); the client retries with `deviceKey`.
    DevicePending,
    /// The owner refused or revoked this device; only pairing again from a fresh QR
    /// code lets it in.
    DeviceRefused,
    /// v2: the key is no device of this machine's and came without an open pairing
    /// code (`message` says whether the code was used or expired).
    NotPaired,
    /// A v1 token `auth` on the public port while `[security] allow_token_auth` is off.
    TokenAuthDisabled,
}

/// A connected device, as others see it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ClientInfo {
    /// Server-assigned id (`c-…`).
    pub client_id: String,
    /// What the device said about itself at `auth`, side by side with the id.
    #[serde(flatten)]
    pub device: DeviceInfo,
}

/// One entry of `session_list`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    /// Chroxy's session id.
    pub session_id: String,
    /// Display name.
    pub name: String,
    /// Working directory of the agent.
    pub cwd: String,
    /// Model id, when one was chosen.
    pub model: Option<String>,
    /// Current permission mode.
    pub permission_mode: PermissionMode,
    /// A turn is running.
    pub is_busy: bool,
    /// Milliseconds since the epoch.
    pub created_at: u64,
    /// Milliseconds since the epoch.
    pub last_activity_at: u64,
}

/// One of the CLI's slash commands, as `claude_ready` lists them for the phone to offer
/// when a person types `/`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SlashCommand {
    /// Without the slash: `compact`.
    pub name: String,
    /// What it does, in the CLI's words (shortened).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// What goes after it, e.g. `<file>`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub argument_hint: String,
}

/// One entry of `available_models` (and of `[worker] models` in config.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ModelEntry")]
pub struct ModelInfo {
    /// What `set_model` takes and the CLI's `--model` receives.
    pub id: String,
    /// Human label.
    pub label: String,
    /// The model's full name where the configuration gives one (`claude-sonnet-4-5`);
    /// otherwise `id` again, which the CLI resolves. Chroxy's clients show the model
    /// picker only for entries that have it.
    #[serde(rename = "fullId")]
    pub full_id: String,
}

/// A [`ModelInfo`] as written, where the full name may be left out.
#[derive(Deserialize)]
struct ModelEntry {
    id: String,
    label: String,
    #[serde(default, rename = "fullId", alias = "full_id")]
    full_id: Option<String>,
}

impl From<ModelEntry> for ModelInfo {
    fn from(e: ModelEntry) -> Self {
        let full_id = e.full_id.filter(|f| !f.is_empty()).unwrap_or(e.id.clone());
        Self {
            id: e.id,
            label: e.label,
            full_id,
        }
    }
}

impl ModelInfo {
    /// An entry whose full name is its id (an alias the CLI resolves).
    pub fn alias(id: &str, label: &str) -> Self {
        Self {
            id: id.into(),
            label: label.into(),
            full_id: id.into(),
        }
    }
}

/// One entry of `availablePermissionModes`: the mode, and how a picker names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PermissionModeInfo {
    /// The mode, as `set_permission_mode` takes it.
    pub id: PermissionMode,
    /// Its name in a picker.
    pub label: String,
    /// What it does, in a sentence.
    pub description: String,
}

impl PermissionModeInfo {
    /// Every mode, in the order phones list them.
    pub fn all() -> Vec<Self> {
        PermissionMode::ALL
            .into_iter()
            .map(|id| {
                let (label, description) = match id {
                    PermissionMode::Approve => ("Approve", "Ask before every tool use"),
                    PermissionMode::AcceptEdits => (
                        "Accept Edits",
                        "Edit files without asking; ask for the rest",
                    ),
                    PermissionMode::Auto => (
                        "Auto (skip all prompts)",
                        "Run every tool without asking; needs confirming",
                    ),
                    PermissionMode::Plan => ("Plan", "Plan only: no edits, no commands"),
                };
                Self {
                    id,
                    label: label.into(),
                    description: description.into(),
                }
            })
            .collect()
    }
}

/// One entry of `agent_list`: a Claude Code subagent defined in a Markdown file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentInfo {
    /// Its `name:`.
    pub name: String,
    /// Its `description:` (shortened).
    pub description: String,
    /// `project` (the session's `.claude/agents/`) or `user` (`~/.claude/agents/`).
    pub source: String,
}

/// One entry of `conversations_list`: a Claude Code conversation one of this
/// machine's sessions holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConversationInfo {
    /// Claude Code's session id (what `--resume` takes).
    pub conversation_id: String,
    /// The Chroxy session that holds it.
    pub session_id: String,
    /// The last part of `cwd`.
    pub project_name: String,
    /// The session's working directory.
    pub cwd: String,
    /// Milliseconds since the epoch.
    pub modified_at_ms: u64,
    /// The first words of its first input.
    pub preview: Option<String>,
}

/// A file sent with an input, as the conversation lists it (the bytes come with
/// `get_attachment`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AttachmentInfo {
    /// The worker's name for it (`a-` and 32 hex digits).
    pub id: String,
    /// The name the phone gave it.
    pub name: String,
    /// Its media type.
    pub media_type: String,
    /// Bytes.
    pub size: u64,
}

/// `message.messageType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MessageType {
    /// Something a user typed (on any device).
    UserInput,
    /// A complete assistant text: `response` on the wire, as Chroxy sends it;
    /// `assistant` (this protocol's first name for it) is still read from saved history.
    #[serde(rename = "response", alias = "assistant")]
    Assistant,
    /// A notice from Chroxy.
    System,
    /// A failure shown in the conversation.
    Error,
}

/// What "Always" on a `permission_request` would remember: shown on the phone next to
/// its Always button, so that nobody approves more than they read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AlwaysOffer {
    /// The rule as `chroxy rules list` shows it, e.g. `Bash(npm run test:*)`.
    pub rule: String,
    /// How far it reaches unless the answer names another `scope`.
    pub scope: RuleScope,
    /// Exactly what it will allow, in words (scope included).
    pub allows: String,
}

/// Why the server is going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ShutdownReason {
    /// Planned restart; back after the ETA.
    Restart,
    /// Stopping for good.
    Shutdown,
    /// Unplanned.
    Crash,
}

/// Every message the server sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    rename_all_fields = "camelCase"
)]
#[allow(missing_docs)] // field meanings are in docs/protocol.md's table, one line each
pub enum ServerMsg {
    AuthOk {
        client_id: String,
        server_mode: String,
        server_version: String,
        latest_version: Option<String>,
        server_commit: String,
        cwd: String,
        connected_clients: Vec<ClientInfo>,
        encryption: String,
        protocol_version: u32,
        min_protocol_version: u32,
        max_protocol_version: u32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_key: Option<Token>,
        /// The worker's half of a Chroxy client's eager exchange (`encryption`
        /// "required"): every frame after this one is an `encrypted` envelope.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        server_public_key: Option<String>,
        #[serde(default)]
        available_permission_modes: Vec<PermissionModeInfo>,
    },
    AuthFail {
        reason: AuthFailReason,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        device_key: Option<Token>,
    },
    Pong {
        server_ts: u64,
    },
    /// Always `cli` (Claude Code's CLI drives every session); Chroxy's clients show
    /// their model and mode bar only once told so.
    ServerMode {
        mode: String,
    },
    SessionList {
        sessions: Vec<SessionInfo>,
    },
    SessionSwitched {
        session_id: String,
        name: String,
        cwd: String,
    },
    SessionError {
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        code: Option<ErrorCode>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session_id: Option<String>,
    },
    HistoryReplayStart {
        session_id: String,
        /// Always true: the whole history follows, so a client replaces what it shows
        /// for the session instead of appending (no replay from a cursor).
        full_history: bool,
    },
    HistoryReplayEnd {
        session_id: String,
    },
    ClaudeReady {
        session_id: String,
        /// The CLI's slash commands, once a CLI of the session has said them.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        slash_commands: Vec<SlashCommand>,
    },
    AgentBusy {
        session_id: String,
    },
    AgentIdle {
        session_id: String,
    },
    StreamStart {
        message_id: String,
        session_id: String,
    },
    StreamDelta {
        message_id: String,
        delta: String,
        session_id: String,
    },
    StreamEnd {
        message_id: String,
        session_id: String,
    },
    ToolStart {
        message_id: String,
        tool_use_id: String,
        tool: String,
        input: Value,
        session_id: String,
    },
    ToolResult {
        tool_use_id: String,
        result: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        is_error: Option<bool>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        truncated: Option<bool>,
        session_id: String,
    },
    Message {
        message_type: MessageType,
        content: String,
        timestamp: u64,
        session_id: String,
        /// A `user_input`'s id from its sender (`input.clientMessageId`), if it gave one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        client_message_id: Option<String>,
        /// The files a `user_input` carried; `get_attachment` fetches one.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentInfo>,
    },
    /// Another device's input, live, to every other phone (whichever session it looks
    /// at); history replays it as a `message` of type `user_input`.
    UserInput {
        session_id: String,
        client_id: String,
        text: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
        timestamp: u64,
        /// Its files, as in `message`.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        attachments: Vec<AttachmentInfo>,
    },
    /// The answer to `get_attachment`: one file sent earlier, whole.
    Attachment {
        session_id: String,
        attachment_id: String,
        name: String,
        media_type: String,
        /// base64.
        data: super::Base64Data,
    },
    /// What the turns of every session have cost today (the machine's local day).
    TodayCost {
        day: String,
        cost_usd: f64,
    },
    /// The sender's input with this id was taken (run, queued, or already taken
    /// before): it need not be sent again.
    InputAccepted {
        client_message_id: String,
        session_id: String,
    },
    /// `sessionId` is Chroxy's session, like every other message's.
    Result {
        cost: Option<f64>,
        duration: Option<u64>,
        usage: Value,
        session_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        queue_length: Option<usize>,
    },
    PermissionRequest {
        request_id: String,
        tool: String,
        description: String,
        input: Value,
        remaining_ms: u64,
        session_id: String,
        /// `null` when "Always" has nothing it could remember exactly (it allows once).
        #[serde(default)]
        always: Option<AlwaysOffer>,
    },
    PermissionResolved {
        request_id: String,
        decision: String,
        session_id: String,
    },
    PermissionExpired {
        request_id: String,
        message: String,
        session_id: String,
    },
    UserQuestion {
        tool_use_id: String,
        questions: Value,
        session_id: String,
    },
    ModelChanged {
        model: String,
        session_id: String,
    },
    AvailableModels {
        models: Vec<ModelInfo>,
    },
    AvailablePermissionModes {
        modes: Vec<PermissionModeInfo>,
    },
    /// The answer to `list_providers`: one provider, Claude Code's CLI, and what it can do.
    ProviderList {
        providers: Value,
    },
    /// The answer to `list_slash_commands`: the session's CLI's commands.
    SlashCommands {
        commands: Vec<SlashCommand>,
        session_id: String,
    },
    /// The answer to `list_agents`.
    AgentList {
        agents: Vec<AgentInfo>,
        session_id: String,
    },
    /// The answer to `list_conversations`, newest first.
    ConversationsList {
        conversations: Vec<ConversationInfo>,
    },
    PermissionModeChanged {
        mode: PermissionMode,
        session_id: String,
    },
    ConfirmPermissionMode {
        mode: PermissionMode,
        warning: String,
    },
    ClientJoined {
        client: ClientInfo,
    },
    ClientLeft {
        client_id: String,
    },
    RateLimited {
        retry_after_ms: u64,
        message: String,
        /// The refused frame's `requestId` (an input's `clientMessageId`), if it had one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
    ServerShutdown {
        reason: ShutdownReason,
        restart_eta_ms: u64,
    },
    /// This device's notification settings: sent after `auth_ok` and as the answer to
    /// every `push_*` request.
    PushSettings {
        /// Whether this server can push at all (a supervisor handed it a VAPID key and
        /// the connection belongs to a paired device).
        available: bool,
        /// The VAPID public key to subscribe with (base64url), when available.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        application_server_key: Option<String>,
        /// Whether this device has a subscription stored.
        subscribed: bool,
        /// What it is pushed about.
        events: super::PushEvents,
        /// Why pushes are not available, for a person.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
    /// `deploy_source` was handed to the supervisor: the build of `source` starts (or
    /// is refused, in a `deploy_status`). `needsApproval`: this device may not deploy by
    /// itself, so the built release waits for a person at the computer.
    DeployRequested {
        session_id: String,
        source: String,
        needs_approval: bool,
    },
    /// A source build and its deploy, as it goes (to every phone): the build's status
    /// (docs/protocol.md "Deploy from the phone"), or why a request was refused.
    DeployStatus {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        build: Option<Box<super::deploy::BuildStatus>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        refused: Option<String>,
    },
    Error {
        code: ErrorCode,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        request_id: Option<String>,
    },
}

impl ServerMsg {
    /// An `auth_fail` that says no more than its reason.
    pub fn auth_fail(reason: AuthFailReason) -> Self {
        ServerMsg::AuthFail {
            reason,
            message: None,
            device_id: None,
            device_key: None,
        }
    }

    /// An `error` without a request id.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        ServerMsg::Error {
            code,
            message: message.into(),
            request_id: None,
        }
    }

    /// The JSON text of this message. Serializing these types cannot fail (all keys are
    /// strings, no maps with non-string keys), so a failure would be a bug worth a log.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|err| {
            tracing::error!(%err, "serializing a server message failed");
            r#"{"type":"error","code":"INVALID_MESSAGE","message":"internal serialization error"}"#
                .to_owned()
        })
    }
}
