//! Refused frames: each gets the specific code docs/protocol.md "Errors" names, a message that
//! says which field or limit, the frame's `requestId` back, and never a secret.

use super::*;

fn refused(text: &str) -> FrameError {
    match parse_client_frame(text) {
        Ok(msg) => panic!("accepted {text:.200}: {msg:?}"),
        Err(err) => err,
    }
}

fn assert_refused(text: &str, code: ErrorCode, mentions: &[&str]) -> FrameError {
    let err = refused(text);
    assert_eq!(err.code, code, "frame {text:.200}: {}", err.message);
    for needle in mentions {
        assert!(
            err.message.contains(needle),
            "frame {text:.200}: message {:?} does not mention {needle}",
            err.message
        );
    }
    err
}

/// A valid frame of `ty` from the shared table, with every optional field set.
fn full_frame(ty: &str) -> serde_json::Map<String, Value> {
    client_cases()
        .into_iter()
        .map(|(frame, _)| frame)
        .filter(|frame| frame["type"] == ty)
        .max_by_key(|frame| frame.as_object().map_or(0, |o| o.len()))
        .and_then(|frame| frame.as_object().cloned())
        .unwrap_or_else(|| panic!("no case for {ty}"))
}

#[test]
fn a_missing_required_field_is_named() {
    let required = [
        ("auth", "token"),
        ("input", "data"),
        ("set_model", "model"),
        ("set_permission_mode", "mode"),
        ("permission_response", "requestId"),
        ("permission_response", "decision"),
        ("user_question_response", "toolUseId"),
        ("user_question_response", "answer"),
        ("switch_session", "sessionId"),
        ("destroy_session", "sessionId"),
        ("rename_session", "sessionId"),
        ("rename_session", "name"),
    ];
    for (ty, field) in required {
        let mut frame = full_frame(ty);
        assert!(frame.remove(field).is_some(), "{ty} case lacks {field}");
        let err = assert_refused(
            &Value::Object(frame).to_string(),
            ErrorCode::InvalidMessage,
            &[&format!("`{field}`"), ty],
        );
        assert!(
            !err.counts_as_bad_frame,
            "{ty}.{field}: a field error is not a bad frame"
        );
    }
}

#[test]
fn optional_fields_may_be_missing() {
    for (ty, optional) in [
        ("auth", ["deviceInfo", "protocolVersion"].as_slice()),
        ("input", &["sessionId"]),
        ("interrupt", &["sessionId"]),
        ("set_model", &["sessionId"]),
        ("set_permission_mode", &["confirmed", "sessionId"]),
        ("permission_response", &["reason", "scope", "directory"]),
        ("user_question_response", &["answers"]),
        (
            "create_session",
            &["name", "cwd", "model", "permissionMode"],
        ),
    ] {
        let mut frame = full_frame(ty);
        for field in optional {
            frame.remove(*field);
        }
        let text = Value::Object(frame).to_string();
        assert!(parse_client_frame(&text).is_ok(), "{text} refused");
    }
}

#[test]
fn a_wrongly_typed_field_is_named() {
    let cases = [
        (r#"{"type":"input","data":5}"#, "`data`"),
        (
            r#"{"type":"input","data":"x","sessionId":7}"#,
            "`sessionId`",
        ),
        (
            r#"{"type":"auth","token":"t","protocolVersion":"one"}"#,
            "`protocolVersion`",
        ),
        (
            r#"{"type":"auth","token":"t","protocolVersion":-1}"#,
            "`protocolVersion`",
        ),
        (
            r#"{"type":"auth","token":"t","deviceInfo":"phone"}"#,
            "`deviceInfo`",
        ),
        (
            r#"{"type":"auth","token":"t","deviceKey":42}"#,
            "`deviceKey`",
        ),
        (
            r#"{"type":"auth","token":"t","pairingCode":{"code":"c"}}"#,
            "`pairingCode`",
        ),
        (
            r#"{"type":"set_permission_mode","mode":"auto","confirmed":"yes"}"#,
            "`confirmed`",
        ),
        (
            r#"{"type":"rename_session","sessionId":"s","name":["a"]}"#,
            "`name`",
        ),
        (r#"{"type":"create_session","cwd":{}}"#, "`cwd`"),
        (
            r#"{"type":"permission_response","requestId":null,"decision":"allow"}"#,
            "`requestId`",
        ),
        (
            r#"{"type":"permission_response","requestId":"p","decision":"allowAlways","directory":["/p"]}"#,
            "`directory`",
        ),
        (
            r#"{"type":"permission_response","requestId":"p","decision":"allowAlways","scope":true}"#,
            "`scope`",
        ),
    ];
    for (text, field) in cases {
        assert_refused(text, ErrorCode::InvalidMessage, &[field]);
    }
}

#[test]
fn a_wrongly_typed_nested_field_is_named_by_its_path() {
    assert_refused(
        r#"{"type":"auth","token":"t","deviceInfo":{"deviceName":42,"deviceType":"phone"}}"#,
        ErrorCode::InvalidMessage,
        &["deviceInfo.deviceName"],
    );
    assert_refused(
        r#"{"type":"user_question_response","toolUseId":"tu","answer":"a","answers":{"Which?":1}}"#,
        ErrorCode::InvalidMessage,
        &["answers.Which?"],
    );
}

#[test]
fn a_decision_outside_the_protocol_is_refused_and_the_choices_listed() {
    let frame = |decision: &str| {
        format!(r#"{{"type":"permission_response","requestId":"p","decision":{decision}}}"#)
    };
    for decision in [r#""maybe""#, r#""Allow""#, r#""""#, r#""deny ""#] {
        assert_refused(
            &frame(decision),
            ErrorCode::InvalidMessage,
            &["`decision`", "`allow`", "`allowAlways`", "`deny`"],
        );
    }
    for decision in ["true", "1", "null", "[]", "{}"] {
        assert_refused(&frame(decision), ErrorCode::InvalidMessage, &["`decision`"]);
    }
}

#[test]
fn type_must_be_present_and_a_string() {
    assert_refused(r#"{"data":"hi"}"#, ErrorCode::InvalidMessage, &["`type`"]);
    for ty in ["5", "null", "true", r#"["ping"]"#, r#"{"name":"ping"}"#] {
        let err = assert_refused(
            &format!(r#"{{"type":{ty}}}"#),
            ErrorCode::InvalidMessage,
            &["`type`", "string"],
        );
        assert!(!err.counts_as_bad_frame, "type {ty}");
    }
}

#[test]
fn an_unknown_type_is_answered_unknown_type_and_named() {
    // Server-only types and near-misses are as unknown as nonsense: none reaches a session.
    for ty in ["teleport", "auth_ok", "Ping", "ping ", "", "list-sessions"] {
        let text = json!({"type": ty, "data": "x"}).to_string();
        let err = assert_refused(&text, ErrorCode::UnknownType, &[&format!("`{ty}`")]);
        assert!(!err.counts_as_bad_frame, "type {ty:?}");
    }
}

#[test]
fn an_unknown_type_is_shown_only_in_part() {
    let ty = "z".repeat(10_000);
    let err = assert_refused(
        &json!({"type": ty}).to_string(),
        ErrorCode::UnknownType,
        &["zzzz"],
    );
    assert!(err.message.len() < 200, "{} bytes", err.message.len());
}

#[test]
fn json_that_is_not_an_object_is_a_bad_frame() {
    for (text, kind) in [
        ("[1,2,3]", "an array"),
        (r#"[{"type":"ping"}]"#, "an array"),
        (r#""ping""#, "a string"),
        ("42", "a number"),
        ("-0.5e3", "a number"),
        ("null", "null"),
        ("true", "a boolean"),
    ] {
        let err = assert_refused(text, ErrorCode::InvalidMessage, &["JSON object", kind]);
        assert!(err.counts_as_bad_frame, "{text}");
        assert_eq!(err.request_id, None);
    }
}

#[test]
fn text_that_is_not_json_is_a_bad_frame() {
    for text in [
        "",
        "   ",
        "{not json",
        r#"{"type":"ping""#,
        r#"{"type":"ping"} trailing"#,
        r#"{"type":"ping",}"#,
        "{'type':'ping'}",
        r#"{"type":"input","data":"\ud800"}"#,
        "\u{feff}{\"type\":\"ping\"}",
    ] {
        let err = assert_refused(text, ErrorCode::InvalidMessage, &["not valid JSON"]);
        assert!(err.counts_as_bad_frame, "{text:?}");
    }
}

#[test]
fn deeply_nested_json_is_refused_without_overflowing_the_stack() {
    let text = format!(
        r#"{{"type":"ping","x":{}{}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert_refused(&text, ErrorCode::InvalidMessage, &["JSON"]);
}

#[test]
fn a_frame_over_one_mebibyte_is_too_large() {
    let at_limit = format!(r#"{{"type":"ping"}}{}"#, " ".repeat(MAX_FRAME_BYTES - 15));
    assert_eq!(at_limit.len(), MAX_FRAME_BYTES);
    assert_eq!(parse_client_frame(&at_limit), Ok(ClientMsg::Ping(Empty {})));

    let over = format!("{at_limit} ");
    let err = assert_refused(&over, ErrorCode::TooLarge, &["1048576"]);
    assert!(err.counts_as_bad_frame);

    // Refused before parsing: a huge frame gets TOO_LARGE even when it is not JSON.
    let garbage = "x".repeat(MAX_FRAME_BYTES + 1);
    let err = assert_refused(&garbage, ErrorCode::TooLarge, &["limit"]);
    assert!(err.counts_as_bad_frame);
}

fn input(data: &str) -> String {
    json!({"type": "input", "data": data, "requestId": "r-in"}).to_string()
}

#[test]
fn input_data_is_limited_to_100_000_characters_not_bytes() {
    // Multi-byte text (accents, CJK, emoji) is allowed up to the same character count.
    for unit in ["x", "é", "漢", "🦀"] {
        let ok = unit.repeat(MAX_INPUT_CHARS);
        assert!(
            parse_client_frame(&input(&ok)).is_ok(),
            "{unit} × 100 000 refused"
        );

        let over = unit.repeat(MAX_INPUT_CHARS + 1);
        let err = assert_refused(&input(&over), ErrorCode::TooLarge, &["`data`", "100000"]);
        assert!(!err.counts_as_bad_frame, "a long field is not a bad frame");
        assert_eq!(err.request_id.as_deref(), Some("r-in"));
    }
}

#[test]
fn an_always_directory_is_limited_to_4096_characters_and_its_scope_to_the_protocol() {
    let frame = |directory: &str| {
        json!({"type": "permission_response", "requestId": "p", "decision": "allowAlways",
               "directory": directory})
        .to_string()
    };
    let ok = format!("/{}", "d".repeat(MAX_DIRECTORY_CHARS - 1));
    assert!(
        parse_client_frame(&frame(&ok)).is_ok(),
        "4096 chars refused"
    );
    assert_refused(
        &frame(&format!("{ok}d")),
        ErrorCode::TooLarge,
        &["`directory`", "4096"],
    );
    for scope in [r#""forever""#, r#""Project""#, r#""global""#, "1", "null"] {
        let text = format!(
            r#"{{"type":"permission_response","requestId":"p","decision":"allowAlways","scope":{scope}}}"#
        );
        if scope == "null" {
            // An explicit null is the same as leaving it out.
            assert!(parse_client_frame(&text).is_ok(), "{text}");
            continue;
        }
        assert_refused(&text, ErrorCode::InvalidMessage, &["`scope`"]);
    }
}

#[test]
fn session_names_are_limited_to_200_characters() {
    let rename = |name: &str| {
        json!({"type": "rename_session", "sessionId": "s-1", "name": name}).to_string()
    };
    let create = |name: &str| json!({"type": "create_session", "name": name}).to_string();
    for frame in [rename, create] {
        let ok = "ñ".repeat(MAX_NAME_CHARS);
        assert!(parse_client_frame(&frame(&ok)).is_ok(), "200 chars refused");
        let err = assert_refused(
            &frame(&"ñ".repeat(MAX_NAME_CHARS + 1)),
            ErrorCode::TooLarge,
            &["`name`", "200"],
        );
        assert!(!err.counts_as_bad_frame);
    }
}

#[test]
fn the_request_id_comes_back_with_the_error() {
    let cases = [
        r#"{"type":"input","requestId":"r-42"}"#,
        r#"{"type":"teleport","requestId":"r-42"}"#,
        r#"{"type":7,"requestId":"r-42"}"#,
        r#"{"requestId":"r-42"}"#,
        r#"{"type":"permission_response","requestId":"r-42","decision":"maybe"}"#,
        r#"{"type":"auth","requestId":"r-42","token":"t","deviceInfo":{"platform":1}}"#,
    ];
    for text in cases {
        assert_eq!(refused(text).request_id.as_deref(), Some("r-42"), "{text}");
    }
    let long = format!(
        r#"{{"type":"rename_session","requestId":"r-42","sessionId":"s","name":"{}"}}"#,
        "n".repeat(201)
    );
    assert_eq!(refused(&long).request_id.as_deref(), Some("r-42"));
}

#[test]
fn a_request_id_that_is_not_a_string_is_not_echoed() {
    for text in [
        r#"{"type":"input","requestId":42}"#,
        r#"{"type":"input","requestId":{"id":"r"}}"#,
        r#"{"type":"input"}"#,
    ] {
        assert_eq!(refused(text).request_id, None, "{text}");
    }
}

const SECRET: &str = "sk-chroxy-7f3a9c1e5b";
const SECRET_DIGITS: &str = "73914628550317";

#[test]
fn a_parsed_auth_does_not_show_its_token_when_debug_printed() {
    let text = json!({"type": "auth", "token": SECRET, "deviceInfo": {"deviceName": "Pixel"},
        "deviceKey": SECRET_DIGITS, "pairingCode": "c0de-7f3a9c1e5b"})
    .to_string();
    let msg = parse_client_frame(&text).expect("valid auth");
    let shown = format!("{msg:?} {msg:#?}");
    for secret in [SECRET, SECRET_DIGITS, "c0de-7f3a9c1e5b"] {
        assert!(!shown.contains(secret), "{secret} in {shown}");
    }
    assert!(
        shown.contains("Pixel"),
        "the rest stays visible for logs: {shown}"
    );
    let ClientMsg::Auth(auth) = msg else {
        panic!("not auth")
    };
    assert_eq!(
        auth.token.0, SECRET,
        "the worker still gets the token itself"
    );
}

#[test]
fn no_error_quotes_the_token_back() {
    // The worker logs every refusal and sends it to the client: a token in a malformed
    // `auth` (or in a field where it does not belong) must not reach either.
    let frames = [
        json!({"type": "auth", "token": SECRET, "protocolVersion": "1"}).to_string(),
        json!({"type": "auth", "token": SECRET, "deviceInfo": {"deviceName": 5}}).to_string(),
        json!({"type": "auth", "token": SECRET, "deviceInfo": [SECRET]}).to_string(),
        json!({"type": "auth", "token": [SECRET]}).to_string(),
        json!({"type": "auth", "token": {"value": SECRET}}).to_string(),
        json!({"type": "auth", "apiToken": SECRET}).to_string(),
        json!({"type": "auth", "token": SECRET, "protocolVersion": SECRET}).to_string(),
        json!({"type": "auth", "token": true, "protocolVersion": SECRET}).to_string(),
        // The device key and the pairing code are secrets too.
        json!({"type": "auth", "token": "t", "deviceKey": [SECRET]}).to_string(),
        json!({"type": "auth", "token": "t", "pairingCode": {"c": SECRET}}).to_string(),
        json!({"type": "auth", "token": "t", "deviceKey": SECRET, "protocolVersion": "1"})
            .to_string(),
        format!(r#"{{"type":"auth","token":"t","deviceKey":{SECRET_DIGITS}}}"#),
        format!(r#"{{"type":"auth","token":"t","pairingCode":{SECRET_DIGITS}}}"#),
        json!({"type": "login", "token": SECRET}).to_string(),
        json!({"token": SECRET}).to_string(),
        json!({"type": {"token": SECRET}}).to_string(),
        json!([{"type": "auth", "token": SECRET}]).to_string(),
        format!(r#"{{"type":"auth","token":"{SECRET}""#),
        format!(r#"{{"type":"auth","token":{SECRET}}}"#),
        // A client that lost the quotes around an all-digit token.
        format!(r#"{{"type":"auth","token":{SECRET_DIGITS}}}"#),
        format!(r#"{{"type":"auth","token":"t","protocolVersion":{SECRET_DIGITS}}}"#),
    ];
    for text in &frames {
        let err = refused(text);
        let shown = format!("{err} {err:?}");
        assert!(
            !shown.contains(SECRET) && !shown.contains(SECRET_DIGITS),
            "{text}: {shown}"
        );
    }
}

#[test]
fn error_messages_stay_short_even_when_the_bad_value_is_huge() {
    // Refusals are sent back and logged; quoting a half-megabyte value would do both.
    let big = "v".repeat(500_000);
    let frames = [
        json!({"type": "auth", "token": "t", "protocolVersion": big}).to_string(),
        json!({"type": "permission_response", "requestId": "p", "decision": big}).to_string(),
        json!({"type": "set_permission_mode", "mode": "auto", "confirmed": big}).to_string(),
        json!({"type": "user_question_response", "toolUseId": "t", "answer": "a",
               "answers": {big.clone(): 1}})
        .to_string(),
    ];
    for text in &frames {
        let err = refused(text);
        assert_eq!(err.code, ErrorCode::InvalidMessage);
        assert!(
            err.message.len() < 500,
            "{} bytes: {:.300}",
            err.message.len(),
            err.message
        );
    }
}

#[test]
fn push_frames_of_the_wrong_shape_name_their_field() {
    assert_refused(
        r#"{"type":"push_subscribe","subscription":{"endpoint":"https://p.example/x"}}"#,
        ErrorCode::InvalidMessage,
        &["subscription"],
    );
    assert_refused(
        r#"{"type":"push_subscribe","subscription":{"endpoint":7,"keys":{"p256dh":"a","auth":"b"}}}"#,
        ErrorCode::InvalidMessage,
        &["subscription.endpoint"],
    );
    assert_refused(
        r#"{"type":"push_events","events":{"prompts":"yes"}}"#,
        ErrorCode::InvalidMessage,
        &["events.prompts"],
    );
    assert_refused(
        r#"{"type":"presence","visible":"hidden"}"#,
        ErrorCode::InvalidMessage,
        &["visible"],
    );
    assert_refused(
        r#"{"type":"presence"}"#,
        ErrorCode::InvalidMessage,
        &["visible"],
    );
}

fn with_files(files: Value) -> String {
    json!({"type": "input", "data": "look", "requestId": "r-f", "attachments": files}).to_string()
}

fn png(name: &str, data: &str) -> Value {
    json!({"type": "image", "mediaType": "image/png", "data": data, "name": name})
}

#[test]
fn attachments_are_refused_for_what_is_wrong_with_them_and_never_quoted_back() {
    let b64 = |bytes: &[u8]| {
        use base64::Engine;
        base64::engine::general_purpose::STANDARD.encode(bytes)
    };
    // Not base64: the text is not echoed (it could be anything the phone held).
    let err = assert_refused(
        &with_files(json!([png("a.png", "not base64! secret-ish")])),
        ErrorCode::InvalidMessage,
        &["attachments[0].data", "base64"],
    );
    assert!(!err.message.contains("secret-ish"), "{}", err.message);
    assert_eq!(err.request_id.as_deref(), Some("r-f"));
    // SVG is markup, not a picture Claude takes; neither is an image called a document.
    let svg = json!([{"type": "image", "mediaType": "image/svg+xml", "data": b64(b"<svg/>"), "name": "x.svg"}]);
    assert_refused(
        &with_files(svg),
        ErrorCode::InvalidMessage,
        &["attachments[0].mediaType", "image/png"],
    );
    let as_doc =
        json!([{"type": "document", "mediaType": "image/png", "data": b64(b"x"), "name": "x"}]);
    assert_refused(
        &with_files(as_doc),
        ErrorCode::InvalidMessage,
        &["application/pdf"],
    );
    // Chroxy's `file_ref` (a path on this machine, read by the server) is not taken.
    let file_ref = json!([{"type": "file_ref", "path": "../../.ssh/id_ed25519"}]);
    assert_refused(
        &with_files(file_ref),
        ErrorCode::InvalidMessage,
        &["`image`"],
    );
    // Text that is not text.
    let latin1 = json!([{"type": "document", "mediaType": "text/plain", "data": b64(b"caf\xe9"), "name": "t.txt"}]);
    assert_refused(&with_files(latin1), ErrorCode::InvalidMessage, &["UTF-8"]);
    // Too many, too large, a name too long.
    let five: Vec<Value> = (0..5)
        .map(|i| png(&format!("{i}.png"), &b64(b"x")))
        .collect();
    assert_refused(
        &with_files(json!(five)),
        ErrorCode::TooLarge,
        &["5 files", "4"],
    );
    let big = b64(&vec![0u8; MAX_ATTACHMENT_BYTES + 1]);
    assert!(
        big.len() < MAX_FRAME_BYTES,
        "the size check, not the frame's"
    );
    assert_refused(
        &with_files(json!([png("big.png", &big)])),
        ErrorCode::InvalidMessage,
        &["attachments[0].data", "737280"],
    );
    let long = "n".repeat(MAX_ATTACHMENT_NAME_CHARS + 1);
    assert_refused(
        &with_files(json!([png(&long, &b64(b"x"))])),
        ErrorCode::TooLarge,
        &["attachments[0].name", "200"],
    );
    // At the limits, taken.
    let four: Vec<Value> = (0..4)
        .map(|i| png(&format!("{i}.png"), &b64(b"x")))
        .collect();
    assert!(parse_client_frame(&with_files(json!(four))).is_ok());
    let exact = b64(&vec![0u8; MAX_ATTACHMENT_BYTES]);
    assert!(parse_client_frame(&with_files(json!([png("ok.png", &exact)]))).is_ok());
}
