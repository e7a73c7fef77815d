//! Properties: no text makes the parser panic or answer with anything but a protocol
//! error, and every valid message survives serialize → parse unchanged.

use proptest::prelude::*;
use proptest::sample::select;

use super::*;

/// Field names the protocol uses, so generated objects often hit a real field.
const FIELDS: [&str; 22] = [
    "type",
    "token",
    "deviceInfo",
    "deviceName",
    "deviceType",
    "platform",
    "protocolVersion",
    "data",
    "sessionId",
    "model",
    "mode",
    "confirmed",
    "requestId",
    "decision",
    "reason",
    "toolUseId",
    "answer",
    "answers",
    "name",
    "cwd",
    "permissionMode",
    "extra",
];

/// What any frame must come out as: a message, or one of the parser's codes with a
/// message saying something. A panic fails the property by itself.
fn check_total(text: &str) -> Result<(), TestCaseError> {
    match parse_client_frame(text) {
        Ok(msg) => {
            // Whatever was accepted is a message the server can also write back.
            let again = serde_json::to_string(&msg).expect("accepted messages serialize");
            prop_assert_eq!(parse_client_frame(&again), Ok(msg));
        }
        Err(err) => {
            prop_assert!(
                matches!(
                    err.code,
                    ErrorCode::InvalidMessage | ErrorCode::UnknownType | ErrorCode::TooLarge
                ),
                "code {:?} for {:?}",
                err.code,
                text
            );
            prop_assert!(
                !err.message.trim().is_empty(),
                "empty message for {:?}",
                text
            );
            // A string `requestId` in an object frame always comes back.
            if let Ok(Value::Object(obj)) = serde_json::from_str::<Value>(text) {
                if let Some(Value::String(id)) = obj.get("requestId") {
                    prop_assert_eq!(err.request_id.as_deref(), Some(id.as_str()));
                }
            }
        }
    }
    Ok(())
}

fn short_string() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter)
}

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        short_string().prop_map(Value::from),
        select(CLIENT_TYPES.to_vec()).prop_map(Value::from),
        select(["allow", "allowAlways", "deny", "auto", "plan"].to_vec()).prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec((field_name(), inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(FIELDS.to_vec()).prop_map(str::to_owned),
        1 => short_string(),
    ]
}

/// A structural change to a valid frame.
#[derive(Debug, Clone)]
enum Edit {
    /// Drop the n-th field (modulo the field count).
    Remove(usize),
    /// Give the n-th field a value of any type.
    Replace(usize, Value),
    /// Add or overwrite a field.
    Set(String, Value),
    /// Turn the frame into another known type, keeping its fields.
    Retype(&'static str),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        any::<usize>().prop_map(Edit::Remove),
        (any::<usize>(), arb_json()).prop_map(|(i, v)| Edit::Replace(i, v)),
        (field_name(), arb_json()).prop_map(|(k, v)| Edit::Set(k, v)),
        select(CLIENT_TYPES.to_vec()).prop_map(Edit::Retype),
    ]
}

fn apply(frame: &mut serde_json::Map<String, Value>, edit: Edit) {
    let nth_key = |frame: &serde_json::Map<String, Value>, i: usize| {
        (!frame.is_empty()).then(|| frame.keys().nth(i % frame.len()).cloned())?
    };
    match edit {
        Edit::Remove(i) => {
            if let Some(key) = nth_key(frame, i) {
                frame.remove(&key);
            }
        }
        Edit::Replace(i, value) => {
            if let Some(key) = nth_key(frame, i) {
                frame.insert(key, value);
            }
        }
        Edit::Set(key, value) => {
            frame.insert(key, value);
        }
        Edit::Retype(ty) => {
            frame.insert(s("type"), Value::from(ty));
        }
    }
}

/// A change to the frame's text, as a flaky or hostile client might make.
#[derive(Debug, Clone)]
enum Typo {
    Delete(usize),
    Replace(usize, char),
    Insert(usize, char),
}

fn typo() -> impl Strategy<Value = Typo> {
    let ch = prop_oneof![
        select(&['"', '{', '}', '[', ']', ':', ',', '\\', ' ', '0', 'n', 'é']),
        any::<char>(),
    ];
    prop_oneof![
        any::<usize>().prop_map(Typo::Delete),
        (any::<usize>(), ch.clone()).prop_map(|(i, c)| Typo::Replace(i, c)),
        (any::<usize>(), ch).prop_map(|(i, c)| Typo::Insert(i, c)),
    ]
}

fn apply_typo(text: &str, typo: &Typo) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    let at = |i: usize, len: usize| if len == 0 { 0 } else { i % len };
    match *typo {
        Typo::Delete(i) if !chars.is_empty() => {
            chars.remove(at(i, chars.len()));
        }
        Typo::Replace(i, c) if !chars.is_empty() => {
            let i = at(i, chars.len());
            chars[i] = c;
        }
        Typo::Insert(i, c) => chars.insert(at(i, chars.len() + 1), c),
        _ => {}
    }
    chars.into_iter().collect()
}

fn valid_frame() -> impl Strategy<Value = serde_json::Map<String, Value>> {
    let frames: Vec<_> = client_cases()
        .into_iter()
        .filter_map(|(frame, _)| frame.as_object().cloned())
        .collect();
    select(frames)
}

fn opt(strategy: impl Strategy<Value = String>) -> impl Strategy<Value = Option<String>> {
    prop::option::of(strategy)
}

/// A name within the 200-character limit, up to the limit itself.
fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..=MAX_NAME_CHARS).prop_map(String::from_iter)
}

fn decision() -> impl Strategy<Value = Decision> {
    select(vec![Decision::Allow, Decision::AllowAlways, Decision::Deny])
}

fn client_msg() -> impl Strategy<Value = ClientMsg> {
    let text = short_string;
    prop_oneof![
        (
            text(),
            opt(text()),
            opt(text()),
            opt(text()),
            any::<Option<u32>>(),
            any::<bool>()
        )
            .prop_map(
                |(token, name, kind, platform, protocol_version, has_info)| {
                    ClientMsg::Auth(Auth {
                        token: Token(token),
                        device_info: has_info.then_some(DeviceInfo {
                            device_name: name,
                            device_type: kind,
                            platform,
                        }),
                        protocol_version,
                        device_key: None,
                        pairing_code: None,
                        eager_public_key: None,
                        eager_salt: None,
                    })
                }
            ),
        (
            prop::collection::vec(any::<char>(), 0..300).prop_map(String::from_iter),
            opt(text()),
            opt(text())
        )
            .prop_map(
                |(data, session_id, client_message_id)| ClientMsg::Input(Input {
                    data,
                    session_id,
                    client_message_id,
                    attachments: vec![],
                })
            ),
        opt(text()).prop_map(|session_id| ClientMsg::Interrupt(SessionTarget { session_id })),
        (text(), opt(text()))
            .prop_map(|(model, session_id)| ClientMsg::SetModel(SetModel { model, session_id })),
        (text(), any::<bool>(), opt(text())).prop_map(|(mode, confirmed, session_id)| {
            ClientMsg::SetPermissionMode(SetPermissionMode {
                mode,
                confirmed,
                session_id,
            })
        }),
        (
            text(),
            decision(),
            opt(text()),
            prop::option::of(select(vec![RuleScope::Session, RuleScope::Project])),
            opt(text()),
        )
            .prop_map(|(request_id, decision, reason, scope, directory)| {
                ClientMsg::PermissionResponse(PermissionResponse {
                    request_id,
                    decision,
                    reason,
                    scope,
                    directory,
                })
            }),
        (
            text(),
            text(),
            prop::option::of(prop::collection::btree_map(
                text(),
                prop_oneof![
                    text().prop_map(Chosen::One),
                    prop::collection::vec(text(), 0..4).prop_map(Chosen::Many),
                ],
                0..4
            )),
            opt(text()),
        )
            .prop_map(|(tool_use_id, answer, answers, freeform_text)| {
                ClientMsg::UserQuestionResponse(UserQuestionResponse {
                    tool_use_id,
                    answer,
                    answers,
                    freeform_text,
                })
            }),
        (opt(name()), opt(text()), opt(text()), opt(text())).prop_map(
            |(name, cwd, model, permission_mode)| {
                ClientMsg::CreateSession(CreateSession {
                    name,
                    cwd,
                    model,
                    permission_mode,
                })
            }
        ),
        (text(), name()).prop_map(|(session_id, name)| {
            ClientMsg::RenameSession(RenameSession { session_id, name })
        }),
        text().prop_map(|session_id| ClientMsg::SwitchSession(SessionRef { session_id })),
        text().prop_map(|session_id| ClientMsg::DestroySession(SessionRef { session_id })),
        Just(ClientMsg::Ping(Empty {})),
        Just(ClientMsg::ListSessions(Empty {})),
    ]
}

proptest! {
    #[test]
    fn any_string_is_a_message_or_a_protocol_error(text in any::<String>()) {
        check_total(&text)?;
    }

    #[test]
    fn json_like_text_is_a_message_or_a_protocol_error(
        text in r#"[{}\[\]":,. a-zA-Z0-9_\\-]{0,64}"#,
    ) {
        check_total(&text)?;
    }

    #[test]
    fn any_json_object_is_a_message_or_a_protocol_error(
        ty in prop::option::of(select(CLIENT_TYPES.to_vec())),
        fields in prop::collection::vec((field_name(), arb_json()), 0..6),
    ) {
        let mut frame: serde_json::Map<String, Value> = fields.into_iter().collect();
        if let Some(ty) = ty {
            frame.insert(s("type"), Value::from(ty));
        }
        check_total(&Value::Object(frame).to_string())?;
    }

    #[test]
    fn mangled_valid_frames_are_a_message_or_a_protocol_error(
        mut frame in valid_frame(),
        edits in prop::collection::vec(edit(), 0..4),
        typos in prop::collection::vec(typo(), 0..3),
    ) {
        for e in edits {
            apply(&mut frame, e);
        }
        let mut text = Value::Object(frame).to_string();
        for t in &typos {
            text = apply_typo(&text, t);
        }
        check_total(&text)?;
    }

    #[test]
    fn valid_messages_survive_serialize_then_parse(msg in client_msg()) {
        let text = serde_json::to_string(&msg).expect("client messages serialize");
        prop_assert_eq!(parse_client_frame(&text), Ok(msg));
    }
}
