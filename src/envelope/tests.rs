use super::*;

/// Computed by tweetnacl 1.0.3, the library Chroxy's clients use: client secret
/// 01..20, server secret 40..5f, salt 80..9f (hex, counting up).
mod tweetnacl {
    pub const CLIENT_PUBLIC: &str = "B6N8vBQgk8i3VdwbEOhstCY3StFqqFPtC9/AsrhtHHw=";
    pub const SERVER_PUBLIC: &str = "eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRo=";
    pub const SALT: &str = "gIGCg4SFhoeIiYqLjI2Oj5CRkpOUlZaXmJmam5ydnp8=";
    pub const MESSAGE: &str = r#"{"type":"input","data":"héllo"}"#;
    /// `MESSAGE` sealed by the client, counter 0.
    pub const CLIENT_0: &str = "7QKMzMlUpJ8h/ETeiIl4WnNbAPJPZSJDLBL8Wh6oZrFbNe6VGRghVHmcu8fy1eCy";
    /// `MESSAGE` sealed by the server, counter 258 (two bytes of counter in the nonce).
    pub const SERVER_258: &str = "7zLRTTZNUvkDWyJYaTTBSeLYaEsYWOKJBiBqqHRpdrivl4vCa0mVTr3Lg53yyRym";
}

fn counting(from: u8) -> [u8; 32] {
    std::array::from_fn(|i| from + i as u8)
}

fn server() -> Accepted {
    accept_with(counting(0x40), tweetnacl::CLIENT_PUBLIC, tweetnacl::SALT).unwrap()
}

/// The client's side, as Chroxy's clients build it: same key, directions swapped.
fn client() -> (Sealer, Opener) {
    let server_public = STANDARD.decode(tweetnacl::SERVER_PUBLIC).unwrap();
    let salt = STANDARD.decode(tweetnacl::SALT).unwrap();
    let key = derive(
        counting(0x01),
        server_public.try_into().unwrap(),
        &salt.try_into().unwrap(),
    )
    .unwrap();
    (
        Sealer {
            key: key.clone(),
            next: 0,
        },
        Opener { key, next: 0 },
    )
}

fn envelope(d: &str, n: u64) -> String {
    format!(r#"{{"type":"encrypted","d":"{d}","n":{n}}}"#)
}

#[test]
fn matches_what_tweetnacl_computes_in_both_directions() {
    let mut server = server();
    assert_eq!(server.server_public, tweetnacl::SERVER_PUBLIC);
    assert_eq!(
        server
            .opener
            .open(&envelope(tweetnacl::CLIENT_0, 0))
            .unwrap(),
        tweetnacl::MESSAGE
    );
    server.sealer.next = 258;
    let sealed = server.sealer.seal(tweetnacl::MESSAGE).unwrap();
    assert_eq!(sealed, envelope(tweetnacl::SERVER_258, 258));
}

#[test]
fn a_conversation_round_trips_with_counters_moving_on() {
    let mut server = server();
    let (mut to_server, mut from_server) = client();
    for i in 0..3 {
        let asked = format!(r#"{{"type":"input","data":"{i}"}}"#);
        let sealed = to_server.seal_as(FROM_CLIENT, &asked).unwrap();
        assert!(!sealed.contains("input"), "the envelope hides the frame");
        assert_eq!(server.opener.open(&sealed).unwrap(), asked);
        let answer = server.sealer.seal("{\"type\":\"pong\"}").unwrap();
        assert_eq!(
            from_server.open_as(FROM_SERVER, &answer).unwrap(),
            "{\"type\":\"pong\"}"
        );
    }
}

#[test]
fn a_replayed_reordered_altered_or_plain_frame_breaks_it() {
    let (mut client, _) = client();
    let first = client.seal_as(FROM_CLIENT, "{\"type\":\"ping\"}").unwrap();
    let second = client.seal_as(FROM_CLIENT, "{\"type\":\"ping\"}").unwrap();

    let mut replayed = server().opener;
    replayed.open(&first).unwrap();
    assert!(replayed.open(&first).is_err(), "replay");

    assert!(server().opener.open(&second).is_err(), "one dropped before");

    let d = first.split('"').nth(7).unwrap().to_owned();
    let mut bytes = STANDARD.decode(&d).unwrap();
    bytes[20] ^= 1;
    let flipped = envelope(&STANDARD.encode(bytes), 0);
    assert!(server().opener.open(&flipped).is_err(), "one bit flipped");

    // The server's own frame sent back: the direction byte makes it fail.
    let mut s = server();
    let reflected = s.sealer.seal("{\"type\":\"ping\"}").unwrap();
    assert!(s.opener.open(&reflected).is_err(), "reflected");

    for plain in [
        "{\"type\":\"ping\"}",
        "{\"type\":\"encrypted\",\"d\":\"!!\",\"n\":0}",
        "{\"type\":\"encrypted\",\"d\":\"\",\"n\":0,\"extra\":1}",
        "not json",
    ] {
        let err = server().opener.open(plain).unwrap_err();
        assert!(matches!(err, EnvelopeError::Broken(_)), "{plain}: {err}");
    }
}

#[test]
fn a_bad_client_half_is_refused_with_the_field_named() {
    let zero = STANDARD.encode([0u8; 32]);
    for (key, salt, field) in [
        ("not base64!", tweetnacl::SALT, "eagerPublicKey"),
        (
            &*STANDARD.encode([7u8; 31]),
            tweetnacl::SALT,
            "eagerPublicKey",
        ),
        (&*zero, tweetnacl::SALT, "eagerPublicKey"),
        (tweetnacl::CLIENT_PUBLIC, "c2FsdA==", "eagerSalt"),
        (tweetnacl::CLIENT_PUBLIC, &*"A".repeat(600), "eagerSalt"),
    ] {
        let Err(err) = accept(key, salt) else {
            panic!("{key} / {salt} accepted");
        };
        assert!(err.to_string().starts_with(field), "{err}");
    }
}
