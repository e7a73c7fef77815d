//! Client → server: each frame docs/protocol.md writes parses to the expected value, and the
//! value serializes back to the same JSON.

use std::collections::BTreeSet;

use super::*;

#[test]
fn every_client_type_has_a_case() {
    let covered: BTreeSet<&str> = client_cases()
        .iter()
        .map(|(_, msg)| client_type(msg))
        .collect();
    let all: BTreeSet<&str> = CLIENT_TYPES.into_iter().collect();
    assert_eq!(covered, all, "client types without a literal frame below");
}

#[test]
fn protocol_frames_parse_to_the_expected_message() {
    for (frame, expected) in client_cases() {
        let text = frame.to_string();
        assert_eq!(parse_client_frame(&text), Ok(expected), "frame {text}");
    }
}

#[test]
fn messages_serialize_to_the_protocol_frame() {
    for (frame, msg) in client_cases() {
        let got = serde_json::to_value(&msg).expect("client messages serialize");
        assert_eq!(got, frame, "{msg:?}");
        assert_eq!(got["type"], client_type(&msg), "{msg:?}");
    }
}

#[test]
fn optional_fields_left_out_are_omitted_not_null() {
    let cases = [
        (
            ClientMsg::Input(Input {
                data: s("hi"),
                session_id: None,
                client_message_id: None,
                attachments: vec![],
            }),
            "sessionId",
        ),
        (
            ClientMsg::Auth(Auth {
                token: Token(s("t")),
                device_info: None,
                protocol_version: None,
                device_key: None,
                pairing_code: None,
                eager_public_key: None,
                eager_salt: None,
            }),
            "deviceInfo",
        ),
        (
            ClientMsg::Auth(Auth {
                token: Token(s("t")),
                device_info: None,
                protocol_version: None,
                device_key: None,
                pairing_code: None,
                eager_public_key: None,
                eager_salt: None,
            }),
            "protocolVersion",
        ),
        (
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p"),
                decision: Decision::Deny,
                reason: None,
                scope: None,
                directory: None,
            }),
            "reason",
        ),
        (
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p"),
                decision: Decision::AllowAlways,
                reason: None,
                scope: None,
                directory: None,
            }),
            "scope",
        ),
        (
            ClientMsg::PermissionResponse(PermissionResponse {
                request_id: s("p"),
                decision: Decision::AllowAlways,
                reason: None,
                scope: None,
                directory: None,
            }),
            "directory",
        ),
        (
            ClientMsg::UserQuestionResponse(UserQuestionResponse {
                tool_use_id: s("t"),
                answer: s("a"),
                answers: None,
                freeform_text: None,
            }),
            "answers",
        ),
        (
            ClientMsg::UserQuestionResponse(UserQuestionResponse {
                tool_use_id: s("t"),
                answer: s("a"),
                answers: None,
                freeform_text: None,
            }),
            "freeformText",
        ),
        (ClientMsg::CreateSession(CreateSession::default()), "name"),
        (ClientMsg::CreateSession(CreateSession::default()), "cwd"),
        (ClientMsg::CreateSession(CreateSession::default()), "model"),
        (
            ClientMsg::CreateSession(CreateSession::default()),
            "permissionMode",
        ),
    ];
    for (msg, field) in cases {
        let json = serde_json::to_value(&msg).expect("client messages serialize");
        assert!(json.get(field).is_none(), "`{field}` present in {json}");
    }
}

#[test]
fn unknown_fields_are_ignored_in_every_message() {
    for (frame, expected) in client_cases() {
        let mut frame = frame;
        let obj = frame.as_object_mut().expect("cases are objects");
        obj.insert(s("clientTime"), json!(1_700_000_000_000u64));
        // A `requestId` is allowed on any message (the error echoes it); keep a real one.
        obj.entry("requestId").or_insert(json!("r-1"));
        obj.insert(s("futureFeature"), json!({"nested": [1, null, "x"]}));
        let text = frame.to_string();
        assert_eq!(parse_client_frame(&text), Ok(expected), "frame {text}");
    }
}

#[test]
fn unknown_fields_inside_device_info_are_ignored() {
    let text = r#"{"type":"auth","token":"t","deviceInfo":{"deviceName":"Pixel","appVersion":"2.1","screen":{"w":1080}}}"#;
    let Ok(ClientMsg::Auth(auth)) = parse_client_frame(text) else {
        panic!("auth refused: {:?}", parse_client_frame(text));
    };
    assert_eq!(
        auth.device_info,
        Some(DeviceInfo {
            device_name: some("Pixel"),
            device_type: None,
            platform: None,
        })
    );
}

#[test]
fn set_permission_mode_without_confirmed_means_not_confirmed() {
    // docs/protocol.md: `auto` needs `confirmed: true`; an absent flag must not count as one.
    let parsed = parse_client_frame(r#"{"type":"set_permission_mode","mode":"auto"}"#);
    assert_eq!(
        parsed,
        Ok(ClientMsg::SetPermissionMode(SetPermissionMode {
            mode: s("auto"),
            confirmed: false,
            session_id: None,
        }))
    );
}

#[test]
fn unknown_permission_mode_is_left_for_the_server_to_refuse() {
    // A mode outside the protocol is a refused setting (`INVALID_MODE`, decided by the
    // session), not a malformed frame, so the parser hands it through as written.
    let parsed = parse_client_frame(r#"{"type":"set_permission_mode","mode":"yolo"}"#);
    let Ok(ClientMsg::SetPermissionMode(m)) = parsed else {
        panic!("refused: {parsed:?}");
    };
    assert_eq!(m.mode, "yolo");
    assert_eq!(PermissionMode::from_wire(&m.mode), None);
}

#[test]
fn permission_modes_use_their_wire_names() {
    for mode in PermissionMode::ALL {
        let json = serde_json::to_value(mode).expect("modes serialize");
        assert_eq!(json, mode.as_str());
        assert_eq!(PermissionMode::from_wire(mode.as_str()), Some(mode));
        assert_eq!(
            serde_json::from_value::<PermissionMode>(json).ok(),
            Some(mode)
        );
    }
    let names: Vec<&str> = PermissionMode::ALL.iter().map(|m| m.as_str()).collect();
    assert_eq!(names, ["approve", "acceptEdits", "auto", "plan"]);
}

#[test]
fn only_answers_and_keepalives_ride_the_priority_budget() {
    // docs/protocol.md "Limits": these four have their own budget so a flood cannot block them.
    let priority: BTreeSet<&str> = client_cases()
        .iter()
        .filter(|(_, msg)| msg.is_priority())
        .map(|(_, msg)| client_type(msg))
        .collect();
    let want: BTreeSet<&str> = [
        "permission_response",
        "user_question_response",
        "ping",
        "interrupt",
    ]
    .into_iter()
    .collect();
    assert_eq!(priority, want);
}

#[test]
fn question_answers_reach_the_agent_as_text_with_other_and_multi_select_resolved() {
    let answer = |v: Value| match parse_client_frame(&v.to_string()).unwrap() {
        ClientMsg::UserQuestionResponse(m) => m.resolved(),
        other => panic!("{other:?}"),
    };
    let map = |pairs: &[(&str, &str)]| {
        Some(
            pairs
                .iter()
                .map(|(q, a)| (s(q), s(a)))
                .collect::<std::collections::BTreeMap<_, _>>(),
        )
    };
    // A label, as chosen.
    assert_eq!(
        answer(json!({"type": "user_question_response", "toolUseId": "t", "answer": "Blue"})),
        (s("Blue"), None)
    );
    // "Other" with text typed under it: the text, not the word.
    assert_eq!(
        answer(
            json!({"type": "user_question_response", "toolUseId": "t", "answer": "Other",
                      "freeformText": "teal, like the sea"})
        ),
        (s("teal, like the sea"), None)
    );
    // A blank text under "Other" leaves the label.
    assert_eq!(
        answer(
            json!({"type": "user_question_response", "toolUseId": "t", "answer": "Other",
                      "freeformText": "  "})
        ),
        (s("Other"), None)
    );
    // Multi-select as an array, joined as Claude Code reads it; "Other" inside it too.
    assert_eq!(
        answer(
            json!({"type": "user_question_response", "toolUseId": "t", "answer": "Other",
                      "answers": {"Which checks?": ["Lint", "Other"], "Which editor?": "Helix"},
                      "freeformText": "fuzzing"})
        ),
        (
            s("fuzzing"),
            map(&[
                ("Which checks?", "Lint, fuzzing"),
                ("Which editor?", "Helix")
            ])
        )
    );
}

#[test]
fn a_question_answer_of_the_wrong_shape_is_refused_with_its_field() {
    for (frame, field) in [
        (
            json!({"type": "user_question_response", "toolUseId": "t", "answer": "a", "answers": {"q": 3}}),
            "answers.q",
        ),
        (
            json!({"type": "user_question_response", "toolUseId": "t", "answer": "a", "answers": {"q": [1]}}),
            "answers.q",
        ),
        (
            json!({"type": "user_question_response", "toolUseId": "t", "answer": "a", "freeformText": 7}),
            "freeformText",
        ),
    ] {
        let err = parse_client_frame(&frame.to_string()).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidMessage, "{frame}");
        assert!(err.message.contains(field), "{frame}: {}", err.message);
    }
    // An answer that would grow without bound once the typed text stands in for each
    // label: refused before anything is built.
    let many = vec![""; MAX_LABELS + 1];
    let err = parse_client_frame(
        &json!({"type": "user_question_response", "toolUseId": "t", "answer": "", "answers": {"q": many}})
            .to_string(),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{}", err.message);
    let questions: serde_json::Map<String, Value> = (0..=MAX_ANSWERS)
        .map(|i| (format!("q{i}"), json!("a")))
        .collect();
    let err = parse_client_frame(
        &json!({"type": "user_question_response", "toolUseId": "t", "answer": "a", "answers": questions})
            .to_string(),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge, "{}", err.message);
    // The same option named twice is chosen once.
    let twice = match parse_client_frame(
        &json!({"type": "user_question_response", "toolUseId": "t", "answer": "Other",
                "answers": {"q": ["Other", "Other", "Lint"]}, "freeformText": "fuzz"})
        .to_string(),
    )
    .unwrap()
    {
        ClientMsg::UserQuestionResponse(m) => m.resolved().1.unwrap(),
        other => panic!("{other:?}"),
    };
    assert_eq!(twice["q"], "fuzz, Lint");
    let long = "x".repeat(MAX_INPUT_CHARS + 1);
    let err = parse_client_frame(
        &json!({"type": "user_question_response", "toolUseId": "t", "answer": "Other", "freeformText": long})
            .to_string(),
    )
    .unwrap_err();
    assert_eq!(err.code, ErrorCode::TooLarge);
}

#[test]
fn a_browsers_subscription_parses_as_it_gives_it_and_events_left_out_stay_on() {
    let frame = json!({"type": "push_subscribe", "subscription": {
        "endpoint": "https://push.example.com/x", "expirationTime": null,
        "keys": {"p256dh": "BNc", "auth": "tBH"}}});
    let Ok(ClientMsg::PushSubscribe(m)) = parse_client_frame(&frame.to_string()) else {
        panic!("not a push_subscribe");
    };
    assert_eq!(m.subscription.endpoint, "https://push.example.com/x");
    assert_eq!(m.events, None, "the device's earlier choice is kept");
    let frame = json!({"type": "push_events", "events": {"turns": false}});
    let Ok(ClientMsg::PushEvents(m)) = parse_client_frame(&frame.to_string()) else {
        panic!("not a push_events");
    };
    assert_eq!(
        m.events,
        PushEvents {
            prompts: true,
            turns: false,
            supervisor: true
        }
    );
}
