//! Text frame → typed message, or the specific error docs/protocol.md names.

use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{
    is_text, Attachment, AttachmentKind, Chosen, ClientMsg, ErrorCode, DOCUMENT_TYPES, IMAGE_TYPES,
    MAX_ANSWERS, MAX_ATTACHMENTS, MAX_ATTACHMENT_BYTES, MAX_ATTACHMENT_NAME_CHARS,
    MAX_CLIENT_MESSAGE_ID_CHARS, MAX_DIRECTORY_CHARS, MAX_FRAME_BYTES, MAX_INPUT_CHARS, MAX_LABELS,
    MAX_LABEL_CHARS, MAX_NAME_CHARS,
};

/// Why a frame was refused. `message` names the field or limit and never echoes a
/// token (field values are not quoted back, only their names and sizes).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct FrameError {
    /// The protocol error code.
    pub code: ErrorCode,
    /// What exactly was wrong.
    pub message: String,
    /// The frame's `requestId`, when it had one, so the client can match the answer.
    pub request_id: Option<String>,
    /// Whether this error is one of the frame-level faults (not JSON, not an object,
    /// too large) that count towards closing the connection with 1008.
    pub counts_as_bad_frame: bool,
}

impl FrameError {
    fn frame(code: ErrorCode, message: String) -> Self {
        Self {
            code,
            message,
            request_id: None,
            counts_as_bad_frame: true,
        }
    }

    fn field(code: ErrorCode, message: String, request_id: Option<String>) -> Self {
        Self {
            code,
            message,
            request_id,
            counts_as_bad_frame: false,
        }
    }
}

/// Parses one text frame. Total: any input yields `Ok` or a specific `Err`.
pub fn parse_client_frame(text: &str) -> Result<ClientMsg, FrameError> {
    if text.len() > MAX_FRAME_BYTES {
        return Err(FrameError::frame(
            ErrorCode::TooLarge,
            format!(
                "frame is {} bytes; the limit is {MAX_FRAME_BYTES} bytes",
                text.len()
            ),
        ));
    }
    let value: Value = serde_json::from_str(text).map_err(|err| {
        FrameError::frame(
            ErrorCode::InvalidMessage,
            format!("frame is not valid JSON ({err})"),
        )
    })?;
    let Value::Object(obj) = value else {
        return Err(FrameError::frame(
            ErrorCode::InvalidMessage,
            format!("frame must be a JSON object, got {}", json_kind(&value)),
        ));
    };
    // An input is named by its `clientMessageId`: its refusal must say which, or the
    // phone keeps it to send again (docs/protocol.md, `input`).
    let request_id = obj
        .get("requestId")
        .or_else(|| obj.get("clientMessageId"))
        .and_then(Value::as_str)
        .filter(|id| id.chars().count() <= crate::protocol::MAX_CLIENT_MESSAGE_ID_CHARS)
        .map(str::to_owned);
    let ty = match obj.get("type") {
        Some(Value::String(ty)) => ty.clone(),
        Some(other) => {
            return Err(FrameError::field(
                ErrorCode::InvalidMessage,
                format!("field `type` must be a string, got {}", json_kind(other)),
                request_id,
            ))
        }
        None => {
            return Err(FrameError::field(
                ErrorCode::InvalidMessage,
                "missing field `type`".to_owned(),
                request_id,
            ))
        }
    };
    let msg = decode(&ty, &Value::Object(obj)).map_err(|mut e| {
        e.request_id = request_id.clone();
        e
    })?;
    check_limits(&msg).map_err(|(code, message)| FrameError::field(code, message, request_id))?;
    Ok(msg)
}

/// Builds the variant for a known `type` from the whole object.
fn decode(ty: &str, v: &Value) -> Result<ClientMsg, FrameError> {
    Ok(match ty {
        "auth" => ClientMsg::Auth(body(v, ty)?),
        "ping" => ClientMsg::Ping(body(v, ty)?),
        "input" => ClientMsg::Input(body(v, ty)?),
        "interrupt" => ClientMsg::Interrupt(body(v, ty)?),
        "set_model" => ClientMsg::SetModel(body(v, ty)?),
        "set_permission_mode" => ClientMsg::SetPermissionMode(body(v, ty)?),
        "permission_response" => ClientMsg::PermissionResponse(body(v, ty)?),
        "user_question_response" => ClientMsg::UserQuestionResponse(body(v, ty)?),
        "list_sessions" => ClientMsg::ListSessions(body(v, ty)?),
        "switch_session" => ClientMsg::SwitchSession(body(v, ty)?),
        "create_session" => ClientMsg::CreateSession(body(v, ty)?),
        "destroy_session" => ClientMsg::DestroySession(body(v, ty)?),
        "rename_session" => ClientMsg::RenameSession(body(v, ty)?),
        "list_providers" => ClientMsg::ListProviders(body(v, ty)?),
        "list_slash_commands" => ClientMsg::ListSlashCommands(body(v, ty)?),
        "list_agents" => ClientMsg::ListAgents(body(v, ty)?),
        "list_conversations" => ClientMsg::ListConversations(body(v, ty)?),
        "terminal_resize" => ClientMsg::TerminalResize(body(v, ty)?),
        "push_subscribe" => ClientMsg::PushSubscribe(body(v, ty)?),
        "push_unsubscribe" => ClientMsg::PushUnsubscribe(body(v, ty)?),
        "get_attachment" => ClientMsg::GetAttachment(body(v, ty)?),
        "push_events" => ClientMsg::PushEvents(body(v, ty)?),
        "get_push_settings" => ClientMsg::GetPushSettings(body(v, ty)?),
        "presence" => ClientMsg::Presence(body(v, ty)?),
        "deploy_source" => ClientMsg::DeploySource(body(v, ty)?),
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(FrameError::field(
                ErrorCode::UnknownType,
                format!("unknown message type `{shown}`"),
                None,
            ));
        }
    })
}

/// Deserializes one message body, naming the offending field on failure.
fn body<T: DeserializeOwned>(value: &Value, ty: &str) -> Result<T, FrameError> {
    serde_path_to_error::deserialize(value).map_err(|err| {
        let got = value_at(value, err.path()).map(json_kind);
        let path: String = err
            .path()
            .to_string()
            .chars()
            .take(MAX_PATH_CHARS)
            .collect();
        let inner = err.into_inner().to_string();
        FrameError::field(
            ErrorCode::InvalidMessage,
            describe(ty, &path, &inner, got),
            None,
        )
    })
}

/// Longest field path shown in an error; map keys (`answers`) come from the client.
const MAX_PATH_CHARS: usize = 100;

/// Words serde's error for the client. serde quotes the value it refused
/// (`invalid type: string "…", expected u32`), and that value may be a token in the
/// wrong place or half a megabyte long; so only serde's expectation is kept, and the
/// value is described by its JSON kind.
fn describe(ty: &str, path: &str, inner: &str, got: Option<&str>) -> String {
    const EXPECTED: &str = ", expected ";
    // The expectation comes last and never contains the separator; the quoted value
    // before it might, hence `rfind`.
    let Some(at) = inner.rfind(EXPECTED) else {
        // serde's own text for a missing field already names it ("missing field `data`").
        return if path == "." {
            format!("`{ty}`: {inner}")
        } else {
            format!("`{ty}`: field `{path}`: {inner}")
        };
    };
    let expected = &inner[at + EXPECTED.len()..];
    let field = if path == "." {
        String::new()
    } else {
        format!(" field `{path}`:")
    };
    match got {
        Some(kind) if inner.starts_with("invalid type") => {
            format!("`{ty}`:{field} expected {expected}, got {kind}")
        }
        _ => format!("`{ty}`:{field} value not accepted, expected {expected}"),
    }
}

/// The value a deserialization error points at, to say what kind it was.
fn value_at<'v>(root: &'v Value, path: &serde_path_to_error::Path) -> Option<&'v Value> {
    use serde_path_to_error::Segment;
    path.iter().try_fold(root, |v, segment| match segment {
        Segment::Map { key } => v.get(key.as_str()),
        Segment::Seq { index } => v.get(*index),
        Segment::Enum { .. } | Segment::Unknown => Some(v),
    })
}

/// What is over a limit (`TOO_LARGE`) or not accepted (`INVALID_MESSAGE`), in words.
type Refused = (ErrorCode, String);

fn check_limits(msg: &ClientMsg) -> Result<(), Refused> {
    let over = |field: &str, s: &str, limit: usize| {
        let n = s.chars().count();
        if n > limit {
            Err((
                ErrorCode::TooLarge,
                format!("field `{field}` is {n} characters; the limit is {limit}"),
            ))
        } else {
            Ok(())
        }
    };
    match msg {
        ClientMsg::Input(m) => {
            over("data", &m.data, MAX_INPUT_CHARS)?;
            if let Some(id) = &m.client_message_id {
                over("clientMessageId", id, MAX_CLIENT_MESSAGE_ID_CHARS)?;
            }
            check_attachments(&m.attachments)
        }
        ClientMsg::GetAttachment(m) => over("attachmentId", &m.attachment_id, 64),
        ClientMsg::RenameSession(m) => over("name", &m.name, MAX_NAME_CHARS),
        ClientMsg::CreateSession(m) => match &m.name {
            Some(name) => over("name", name, MAX_NAME_CHARS),
            None => Ok(()),
        },
        ClientMsg::PermissionResponse(m) => match &m.directory {
            Some(dir) => over("directory", dir, MAX_DIRECTORY_CHARS),
            None => Ok(()),
        },
        ClientMsg::UserQuestionResponse(m) => {
            if let Some(text) = &m.freeform_text {
                over("freeformText", text, MAX_INPUT_CHARS)?;
            }
            over("answer", &m.answer, MAX_LABEL_CHARS)?;
            let answers = m.answers.iter().flatten();
            if answers.clone().count() > MAX_ANSWERS {
                return Err((
                    ErrorCode::TooLarge,
                    format!("field `answers` answers more than {MAX_ANSWERS} questions"),
                ));
            }
            for (question, chosen) in answers {
                over("answers", question, MAX_INPUT_CHARS)?;
                let labels = match chosen {
                    Chosen::One(label) => std::slice::from_ref(label),
                    Chosen::Many(labels) if labels.len() > MAX_LABELS => {
                        return Err((
                            ErrorCode::TooLarge,
                            format!("field `answers` chooses more than {MAX_LABELS} options for one question"),
                        ))
                    }
                    Chosen::Many(labels) => labels.as_slice(),
                };
                for label in labels {
                    over("answers", label, MAX_LABEL_CHARS)?;
                }
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// An input's files: how many, how large, of which types. The type a phone names is
/// all the worker goes by (the bytes are passed on, never opened here), so it must be
/// one Claude accepts for that kind.
fn check_attachments(attachments: &[Attachment]) -> Result<(), Refused> {
    let large = |message| Err((ErrorCode::TooLarge, message));
    let invalid = |message| Err((ErrorCode::InvalidMessage, message));
    if attachments.len() > MAX_ATTACHMENTS {
        return large(format!(
            "field `attachments` has {} files; the limit is {MAX_ATTACHMENTS}",
            attachments.len()
        ));
    }
    for (i, a) in attachments.iter().enumerate() {
        let n = a.name.chars().count();
        if n > MAX_ATTACHMENT_NAME_CHARS {
            return large(format!(
                "field `attachments[{i}].name` is {n} characters; the limit is {MAX_ATTACHMENT_NAME_CHARS}"
            ));
        }
        if a.data.0.len() > MAX_ATTACHMENT_BYTES {
            return large(format!(
                "attachment {i} is {} bytes; the limit is {MAX_ATTACHMENT_BYTES} bytes",
                a.data.0.len()
            ));
        }
        let allowed: &[&str] = match a.kind {
            AttachmentKind::Image => &IMAGE_TYPES,
            AttachmentKind::Document => &DOCUMENT_TYPES,
        };
        if !allowed.contains(&a.media_type.as_str()) {
            let shown: String = a.media_type.chars().take(64).collect();
            return invalid(format!(
                "field `attachments[{i}].mediaType`: `{shown}` is not accepted; use one of {}",
                allowed.join(", ")
            ));
        }
        if is_text(&a.media_type) && std::str::from_utf8(&a.data.0).is_err() {
            return invalid(format!(
                "attachment {i} says it is {} but is not UTF-8 text",
                a.media_type
            ));
        }
    }
    Ok(())
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}
