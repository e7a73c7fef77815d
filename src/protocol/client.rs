//! Client → server messages. Each message body is its own struct so the parser can
//! deserialize it directly and report the exact field at fault (serde loses the field
//! path when it goes through an internally tagged enum).

use serde::{Deserialize, Deserializer, Serialize};

use super::MAX_ATTACHMENT_BYTES;

/// A secret token as it travels in `auth`. Its `Debug` never shows the value, so a
/// `debug!(?msg)` of a parsed frame cannot leak it into a log.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Token(pub String);

impl std::fmt::Debug for Token {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Token(..)")
    }
}

/// What a device says about itself at `auth`; shown to the other devices.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Human name, e.g. "Ana's phone".
    #[serde(default)]
    pub device_name: Option<String>,
    /// `phone`, `tablet`, `desktop`, …
    #[serde(default)]
    pub device_type: Option<String>,
    /// OS or browser.
    #[serde(default)]
    pub platform: Option<String>,
}

/// `auth`: the first message of every connection.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Auth {
    /// The API token.
    pub token: Token,
    /// Optional description of the device.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub device_info: Option<DeviceInfo>,
    /// Protocol version the client speaks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u32>,
    /// The key this machine gave the device (at pairing, or when it first asked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_key: Option<Token>,
    /// The one-time code of the QR code the device was paired with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<Token>,
    /// Chroxy's own clients: an ephemeral X25519 public key (base64) asking for the
    /// `encrypted` envelope (src/envelope.rs). Only honoured with `eagerSalt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eager_public_key: Option<String>,
    /// The 32-byte salt (base64) that goes with `eagerPublicKey`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eager_salt: Option<String>,
}

/// Protocol v2's `auth`, the first message inside the encrypted channel: no token and
/// no device key, since the device is the key it proved in the handshake.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "auth", rename_all = "camelCase")]
pub struct SealedAuth {
    /// Optional description of the device.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "object_or_null"
    )]
    pub device_info: Option<DeviceInfo>,
    /// Protocol version the client speaks (2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol_version: Option<u32>,
    /// The one-time code of the QR code the device is being paired with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pairing_code: Option<Token>,
}

/// Reads an optional struct that must be written as a JSON object. serde also accepts a
/// struct written as an array, fields by position (`["Pixel","phone"]`); docs/protocol.md makes
/// that a wrongly typed field, and taking it would put values in whichever field comes
/// first. Going through the map access (not an intermediate `Value`) keeps the field
/// path of a nested error, e.g. `deviceInfo.deviceName`.
fn object_or_null<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    use serde::de::{value::MapAccessDeserializer, MapAccess, Visitor};
    use std::marker::PhantomData;

    struct ObjectOrNull<T>(PhantomData<T>);

    impl<'de, T: Deserialize<'de>> Visitor<'de> for ObjectOrNull<T> {
        type Value = Option<T>;

        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("an object")
        }

        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }

        fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
            T::deserialize(MapAccessDeserializer::new(map)).map(Some)
        }
    }

    deserializer.deserialize_any(ObjectOrNull(PhantomData))
}

/// `input`: a user turn.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Input {
    /// The text (≤ 100 000 characters).
    pub data: String,
    /// Target session; default the client's active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// The client's name for this input (≤ 64 characters), so it can send it again
    /// after a dropped connection without it running twice: answered by
    /// `input_accepted`, and the same id again is accepted without running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_message_id: Option<String>,
    /// Files sent with the text (≤ [`MAX_ATTACHMENTS`]): images go to Claude as image
    /// blocks, PDFs as document blocks, text files as text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<Attachment>,
}

/// One file of an `input`, in the shape Chroxy's clients send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    /// `image` or `document`.
    #[serde(rename = "type")]
    pub kind: AttachmentKind,
    /// One of [`IMAGE_TYPES`] for an image, [`DOCUMENT_TYPES`] for a document.
    pub media_type: String,
    /// The file's bytes, base64 on the wire (≤ [`MAX_ATTACHMENT_BYTES`] decoded).
    pub data: Base64Data,
    /// The file's name as the phone had it (≤ [`MAX_ATTACHMENT_NAME_CHARS`]); shown,
    /// never used as a path.
    pub name: String,
}

/// What an [`Attachment`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttachmentKind {
    /// A picture Claude looks at.
    Image,
    /// A PDF or a text file Claude reads.
    Document,
}

/// Image types Claude accepts. SVG is not one: it is a script container, and the phones
/// that replay it would be showing markup.
pub const IMAGE_TYPES: [&str; 4] = ["image/png", "image/jpeg", "image/gif", "image/webp"];
/// Document types: PDF, and text that is passed on as text.
pub const DOCUMENT_TYPES: [&str; 5] = [
    "application/pdf",
    "text/plain",
    "text/markdown",
    "text/csv",
    "application/json",
];

/// Whether a media type's bytes are passed to Claude as text.
pub fn is_text(media_type: &str) -> bool {
    media_type.starts_with("text/") || media_type == "application/json"
}

/// Bytes carried as base64 text. Decoding refuses oversized text before decoding it,
/// so a client cannot make the worker allocate more than the frame limit allows.
#[derive(Clone, PartialEq, Eq)]
pub struct Base64Data(pub Vec<u8>);

impl std::fmt::Debug for Base64Data {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{} bytes>", self.0.len())
    }
}

impl Serialize for Base64Data {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use base64::Engine;
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Data {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use base64::Engine;
        use serde::de::{Error, Unexpected};
        let text = std::borrow::Cow::<str>::deserialize(d)?;
        if text.len() > MAX_ATTACHMENT_BYTES.div_ceil(3) * 4 {
            let expected = format!("base64 of at most {MAX_ATTACHMENT_BYTES} bytes");
            return Err(D::Error::invalid_length(text.len(), &expected.as_str()));
        }
        base64::engine::general_purpose::STANDARD
            .decode(text.as_bytes())
            .map(Base64Data)
            .map_err(|_| D::Error::invalid_value(Unexpected::Other("text"), &"standard base64"))
    }
}

/// `get_attachment`: the bytes of a file sent earlier, for a phone replaying history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GetAttachment {
    /// Its session; default the client's active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// `attachments[].id` of the `message` that carried it.
    pub attachment_id: String,
}

/// A message whose only field is an optional target session (`interrupt`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionTarget {
    /// Target session; default the client's active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A message naming one session that must exist (`switch_session`, `destroy_session`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRef {
    /// The session.
    pub session_id: String,
}

/// A message with no fields (`ping`, `list_sessions`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Empty {}

/// `set_model`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetModel {
    /// One of the ids announced in `available_models`.
    pub model: String,
    /// Target session; default the client's active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// `set_permission_mode`. The mode stays a string here so that an unknown one is
/// answered `INVALID_MODE` (a refused setting), not `INVALID_MESSAGE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SetPermissionMode {
    /// `approve`, `acceptEdits`, `auto` or `plan`.
    pub mode: String,
    /// Must be true for `auto`.
    #[serde(default)]
    pub confirmed: bool,
    /// Target session; default the client's active one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
}

/// A phone's answer to a permission prompt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Decision {
    /// Allow this once.
    Allow,
    /// Allow and remember the rule the request's `always` offered.
    AllowAlways,
    /// Refuse.
    Deny,
}

/// How far a rule remembered with "Always" reaches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RuleScope {
    /// Only the session that asked (kept with it across worker restarts).
    Session,
    /// Every session in the same project directory, until removed.
    Project,
}

/// `permission_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PermissionResponse {
    /// The `requestId` of the `permission_request`.
    pub request_id: String,
    /// The answer.
    pub decision: Decision,
    /// Optional reason, passed to the agent on deny.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// With `allowAlways`: how far the rule reaches instead of the offer's own scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<RuleScope>,
    /// With `allowAlways` on a file edit: a directory inside the session's directory,
    /// containing the file, that the rule covers instead of the one file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub directory: Option<String>,
}

/// `user_question_response`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserQuestionResponse {
    /// The `toolUseId` of the `user_question`.
    pub tool_use_id: String,
    /// The chosen label (single question).
    pub answer: String,
    /// Question text → the chosen label, or the labels of a multi-select question.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answers: Option<std::collections::BTreeMap<String, Chosen>>,
    /// What the person typed under "Other" (`answer` then names that option): the
    /// agent receives the text, not the word "Other".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeform_text: Option<String>,
}

/// One question's answer in `answers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Chosen {
    /// A label.
    One(String),
    /// The labels of a multi-select question.
    Many(Vec<String>),
}

impl UserQuestionResponse {
    /// What Claude Code receives: question text → answer, the labels of a multi-select
    /// joined with `, ` (as Claude Code expects them), and the "Other" option's label
    /// replaced by what was typed under it. `None` when only `answer` was given.
    pub fn resolved(&self) -> (String, Option<std::collections::BTreeMap<String, String>>) {
        let typed = self
            .freeform_text
            .as_deref()
            .filter(|t| !t.trim().is_empty());
        let said = |label: &str| match typed {
            Some(text) if label == self.answer => text.to_owned(),
            _ => label.to_owned(),
        };
        let answers = self.answers.as_ref().map(|answers| {
            answers
                .iter()
                .map(|(question, chosen)| {
                    let text = match chosen {
                        Chosen::One(label) => said(label),
                        Chosen::Many(labels) => {
                            // An option is chosen once, however often it is named.
                            let mut chosen: Vec<&String> = Vec::new();
                            for label in labels {
                                if !chosen.contains(&label) {
                                    chosen.push(label);
                                }
                            }
                            chosen
                                .iter()
                                .map(|l| said(l))
                                .collect::<Vec<_>>()
                                .join(", ")
                        }
                    };
                    (question.clone(), text)
                })
                .collect()
        });
        (said(&self.answer), answers)
    }
}

/// `terminal_resize`: Chroxy's clients send it for a terminal view this server does
/// not have; taken and ignored, so that they see no error.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TerminalResize {
    /// The session whose terminal it would be.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<String>,
    /// Columns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cols: Option<u32>,
    /// Rows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rows: Option<u32>,
}

/// `create_session`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateSession {
    /// Display name (≤ 200 characters); default the directory's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Working directory; must exist. Default the worker's directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Model id from `available_models`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Wire permission mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub permission_mode: Option<String>,
}

/// `rename_session`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RenameSession {
    /// The session.
    pub session_id: String,
    /// New name (≤ 200 characters).
    pub name: String,
}

/// `deploy_source`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeploySource {
    /// The session whose directory is built.
    pub session_id: String,
    /// Build its uncommitted changes too (refused without: the release says so).
    #[serde(default)]
    pub allow_dirty: bool,
}

/// Which events a device is pushed about (all by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PushEvents {
    /// A permission prompt or a question waits, and no phone is looking.
    pub prompts: bool,
    /// A long turn is done, and no phone is on its session.
    pub turns: bool,
    /// The supervisor gave up (`failed`) or rolled a release back.
    pub supervisor: bool,
}

impl Default for PushEvents {
    fn default() -> Self {
        Self {
            prompts: true,
            turns: true,
            supervisor: true,
        }
    }
}

/// A browser's `PushSubscription.keys`.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushKeys {
    /// The browser's P-256 public key (base64url).
    pub p256dh: String,
    /// Its authentication secret (base64url).
    pub auth: String,
}

/// A browser's `PushSubscription.toJSON()` (its `expirationTime` is not used).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PushSubscriptionJson {
    /// Where pushes are posted.
    pub endpoint: String,
    /// The keys a push is encrypted for.
    pub keys: PushKeys,
}

// An endpoint is a capability (whoever holds it can push to the phone) and `auth` a
// secret: a `debug!(?msg)` of a frame shows neither.
impl std::fmt::Debug for PushKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushKeys(..)")
    }
}

impl std::fmt::Debug for PushSubscriptionJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PushSubscriptionJson(..)")
    }
}

/// `push_subscribe`: push to this device (replacing its previous subscription).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PushSubscribe {
    /// What `pushManager.subscribe` gave.
    pub subscription: PushSubscriptionJson,
    /// What to push about; default what the device chose before, else everything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<PushEvents>,
}

/// `push_events`: change what this device is pushed about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetPushEvents {
    /// The new choice.
    pub events: PushEvents,
}

/// `presence`: whether the page is on screen. A phone that is connected but hidden
/// (locked, in a pocket) is not looking, and is pushed to; a client that never says
/// counts as looking while it is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Presence {
    /// `document.visibilityState === "visible"`.
    pub visible: bool,
}

/// Every message a client may send.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMsg {
    /// See [`Auth`].
    Auth(Auth),
    /// Application-level keepalive; answered by `pong`.
    Ping(Empty),
    /// See [`Input`].
    Input(Input),
    /// Stop the current turn.
    Interrupt(SessionTarget),
    /// See [`SetModel`].
    SetModel(SetModel),
    /// See [`SetPermissionMode`].
    SetPermissionMode(SetPermissionMode),
    /// See [`PermissionResponse`].
    PermissionResponse(PermissionResponse),
    /// See [`UserQuestionResponse`].
    UserQuestionResponse(UserQuestionResponse),
    /// Answered by `session_list`.
    ListSessions(Empty),
    /// Make a session the client's active one.
    SwitchSession(SessionRef),
    /// See [`CreateSession`].
    CreateSession(CreateSession),
    /// Stop a session's agent and forget it.
    DestroySession(SessionRef),
    /// See [`RenameSession`].
    RenameSession(RenameSession),
    /// Answered by `provider_list`.
    ListProviders(Empty),
    /// Answered by `slash_commands`.
    ListSlashCommands(SessionTarget),
    /// Answered by `agent_list`.
    ListAgents(SessionTarget),
    /// Answered by `conversations_list`.
    ListConversations(Empty),
    /// See [`TerminalResize`].
    TerminalResize(TerminalResize),
    /// See [`PushSubscribe`].
    PushSubscribe(PushSubscribe),
    /// Stop pushing to this device.
    PushUnsubscribe(Empty),
    /// See [`GetAttachment`].
    GetAttachment(GetAttachment),
    /// See [`SetPushEvents`].
    PushEvents(SetPushEvents),
    /// Answered by `push_settings`.
    GetPushSettings(Empty),
    /// Build the session's directory (a checkout of Chroxy) and deploy it: answered by
    /// `deploy_requested`, then `deploy_status` as the build goes.
    DeploySource(DeploySource),
    /// See [`Presence`].
    Presence(Presence),
}

impl ClientMsg {
    /// Answers to prompts and keepalives ride a budget of their own, so that a client
    /// that floods input can still answer a permission prompt or stop a turn.
    pub fn is_priority(&self) -> bool {
        matches!(
            self,
            ClientMsg::Ping(_)
                | ClientMsg::Interrupt(_)
                | ClientMsg::PermissionResponse(_)
                | ClientMsg::UserQuestionResponse(_)
        )
    }
}
