use super::*;

fn pair() -> (KeyPair, KeyPair) {
    (KeyPair::generate().unwrap(), KeyPair::generate().unwrap())
}

/// A finished handshake: (client sealer, client opener, server side).
fn connected(device: &KeyPair, server: &KeyPair) -> (Sealer, Opener, Accepted) {
    let (m1, initiating) = initiate(device, server.public()).unwrap();
    assert_eq!(m1.len(), MESSAGE1_LEN);
    let accepted = accept(server, &m1).unwrap();
    assert_eq!(accepted.reply.len(), MESSAGE2_LEN);
    let (sealer, opener) = initiating.finish(&accepted.reply).unwrap();
    (sealer, opener, accepted)
}

#[test]
fn both_ends_agree_and_the_server_learns_the_device_key() {
    let (device, server) = pair();
    let (mut c_seal, mut c_open, mut s) = connected(&device, &server);
    assert_eq!(&s.remote, device.public());
    for text in ["{\"type\":\"auth\"}", "", "ünïcode ✓"] {
        let frame = c_seal.seal(text).unwrap();
        assert!(!frame
            .windows(4)
            .any(|w| text.len() >= 4 && w == &text.as_bytes()[..4]));
        assert_eq!(s.opener.open(&frame).unwrap(), text);
        let back = s.sealer.seal(text).unwrap();
        assert_eq!(c_open.open(&back).unwrap(), text);
    }
}

#[test]
fn large_messages_are_cut_into_noise_sized_pieces() {
    let (device, server) = pair();
    let (mut c_seal, _, mut s) = connected(&device, &server);
    for len in [PIECE - 1, PIECE, PIECE + 1, 3 * PIECE, 1 << 20] {
        let text = "x".repeat(len);
        let frame = c_seal.seal(&text).unwrap();
        let pieces = len.div_ceil(PIECE).max(1);
        assert_eq!(frame.len(), len + pieces * (TAG + 1), "{len} bytes");
        assert!(frame
            .chunks(NOISE_MAX)
            .take(pieces - 1)
            .all(|p| p.len() == NOISE_MAX));
        assert_eq!(s.opener.open(&frame).unwrap(), text);
    }
}

#[test]
fn a_flipped_bit_a_replay_a_drop_a_truncation_or_extra_bytes_break_the_channel() {
    let (device, server) = pair();
    type Tamper = fn(Vec<Vec<u8>>) -> Vec<Vec<u8>>;
    let tamper: [(&str, Tamper); 6] = [
        ("flipped bit", |mut f| {
            f[1][2] ^= 0x01;
            f
        }),
        ("replay", |f| vec![f[0].clone(), f[0].clone()]),
        ("drop", |f| vec![f[0].clone(), f[2].clone()]),
        ("reorder", |f| vec![f[1].clone(), f[0].clone()]),
        ("truncation inside a piece", |mut f| {
            let n = f[1].len();
            f[1].truncate(n - 1);
            f
        }),
        ("bytes after the last piece", |mut f| {
            f[1].extend_from_slice(&[0u8; 40]);
            f
        }),
    ];
    for (what, change) in tamper {
        let (mut c_seal, _, mut s) = connected(&device, &server);
        let frames: Vec<Vec<u8>> = ["one", "two", "three"]
            .iter()
            .map(|t| c_seal.seal(t).unwrap())
            .collect();
        let changed = change(frames);
        let results: Vec<_> = changed.iter().map(|f| s.opener.open(f)).collect();
        assert!(
            results
                .iter()
                .any(|r| matches!(r, Err(ChannelError::Broken(_)))),
            "{what}: {results:?}"
        );
        // Once broken, an honest frame does not mend it.
        let honest = c_seal.seal("four").unwrap();
        assert!(s.opener.open(&honest).is_err(), "{what}");
    }
}

#[test]
fn a_frame_cut_at_a_piece_boundary_is_refused() {
    let (device, server) = pair();
    let (mut c_seal, _, mut s) = connected(&device, &server);
    let frame = c_seal.seal(&"y".repeat(PIECE * 2)).unwrap();
    assert_eq!(
        s.opener.open(&frame[..NOISE_MAX]),
        Err(ChannelError::Broken(
            "the frame ended before its last piece"
        ))
    );
}

#[test]
fn a_server_without_the_pinned_key_is_not_the_paired_machine() {
    let (device, server) = pair();
    let impostor = KeyPair::generate().unwrap();
    let (m1, initiating) = initiate(&device, server.public()).unwrap();
    // The impostor cannot even read message 1 …
    assert!(matches!(
        accept(&impostor, &m1),
        Err(ChannelError::Handshake)
    ));
    // … and whatever it answers, made with its own key, is refused by the phone.
    let (m1_for_impostor, _) = initiate(&device, impostor.public()).unwrap();
    let forged = accept(&impostor, &m1_for_impostor).unwrap().reply;
    assert_eq!(
        initiating.finish(&forged).err(),
        Some(ChannelError::NotThePairedMachine)
    );
}

#[test]
fn garbage_and_replayed_handshakes_give_nothing_away() {
    let (device, server) = pair();
    assert_eq!(
        accept(&server, b"hello").err(),
        Some(ChannelError::Handshake)
    );
    assert_eq!(
        accept(&server, &[0u8; MESSAGE1_LEN]).err(),
        Some(ChannelError::Handshake)
    );
    // A recorded message 1 replayed gets a fresh message 2, but the recorder cannot
    // read what follows: the keys depend on the server's new ephemeral key.
    let (m1, initiating) = initiate(&device, server.public()).unwrap();
    let first = accept(&server, &m1).unwrap();
    let mut replayed = accept(&server, &m1).unwrap();
    assert_ne!(first.reply, replayed.reply);
    let (mut c_seal, _) = initiating.finish(&first.reply).unwrap();
    assert!(replayed
        .opener
        .open(&c_seal.seal("secret").unwrap())
        .is_err());
}

#[test]
fn keys_round_trip_and_fingerprints_are_short_and_stable() {
    let key = KeyPair::generate().unwrap();
    let again = KeyPair::from_secret(&key.expose_secret()).unwrap();
    assert_eq!(again.public(), key.public());
    assert_eq!(decode_key(&key.public_base64()), Some(*key.public()));
    let fp = key.fingerprint();
    assert_eq!(fp.len(), 19);
    assert!(fp
        .split('-')
        .all(|g| g.len() == 4 && g.chars().all(|c| c.is_ascii_hexdigit())));
    assert_eq!(format!("{key:?}"), format!("KeyPair({fp})"));
    assert!(KeyPair::from_secret("short").is_err());
    assert!(decode_key(&"A".repeat(44)).is_none());
}
