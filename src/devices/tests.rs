use std::net::IpAddr;

use super::*;

const T0: u64 = 1_764_600_000_000;
const MIN: u64 = 60 * 1000;

fn registry() -> (tempfile::TempDir, Devices) {
    let dir = tempfile::tempdir().unwrap();
    let devices = Devices::new(&Paths::under(dir.path()));
    (dir, devices)
}

fn phone() -> About<'static> {
    About {
        name: Some("Ana's phone"),
        platform: Some("iOS"),
        address: Some("203.0.113.9".parse().unwrap()),
    }
}

/// A knock with nothing but the token: a new pending device. Returns its id and key.
fn ask(devices: &Devices, now: u64) -> (String, DeviceKey) {
    let knock = Knock {
        about: phone(),
        ..Default::default()
    };
    match devices.admit(&knock, now).unwrap() {
        Admission::Pending {
            id,
            key,
            code_refused,
        } => {
            assert!(!code_refused);
            (id, key)
        }
        other => panic!("expected pending, got {other:?}"),
    }
}

fn with_key(devices: &Devices, key: &DeviceKey, now: u64) -> Admission {
    let knock = Knock {
        key: Some(key),
        about: phone(),
        ..Default::default()
    };
    devices.admit(&knock, now).unwrap()
}

fn with_code(devices: &Devices, code: &PairingCode, now: u64) -> Admission {
    let knock = Knock {
        code: Some(code),
        about: phone(),
        ..Default::default()
    };
    devices.admit(&knock, now).unwrap()
}

#[test]
fn a_token_alone_waits_and_the_same_key_gets_in_once_approved() {
    let (_dir, devices) = registry();
    let (id, key) = ask(&devices, T0);
    // Retrying with its key keeps the same place in the queue.
    assert_eq!(
        with_key(&devices, &key, T0 + 5_000),
        Admission::Pending {
            id: id.clone(),
            key: key.clone(),
            code_refused: false
        }
    );
    assert_eq!(devices.list(T0).unwrap().len(), 1, "no second entry");
    let approved = devices.approve(&id, T0 + 10_000).unwrap();
    assert_eq!(approved.state, DeviceState::Approved);
    assert_eq!(approved.paired_at, Some(T0 + 10_000));
    assert_eq!(
        with_key(&devices, &key, T0 + 20_000),
        Admission::Approved {
            id: id.clone(),
            new_key: None
        }
    );
    let listed = &devices.list(T0 + 20_000).unwrap()[0];
    assert_eq!(listed.last_seen, Some(T0 + 20_000));
    assert_eq!(listed.last_address, phone().address);
    assert_eq!(listed.name.as_deref(), Some("Ana's phone"));
    // Another key is not this device.
    let other = DeviceKey::new("not-the-key");
    assert!(matches!(
        with_key(&devices, &other, T0 + 30_000),
        Admission::Pending { .. }
    ));
}

#[test]
fn a_pairing_code_pairs_once_and_not_after_it_expires() {
    let (_dir, devices) = registry();
    let code = devices.mint_code(T0).unwrap();
    assert!(devices.is_code_open(&code, T0).unwrap());
    let Admission::Approved {
        id,
        new_key: Some(key),
    } = with_code(&devices, &code, T0 + MIN)
    else {
        panic!("the code did not pair");
    };
    assert!(!devices.is_code_open(&code, T0 + MIN).unwrap(), "used up");
    assert_eq!(
        with_key(&devices, &key, T0 + 2 * MIN),
        Admission::Approved { id, new_key: None }
    );
    // The same code again: no second device gets in; it waits like any other.
    assert!(matches!(
        with_code(&devices, &code, T0 + 2 * MIN),
        Admission::Pending {
            code_refused: true,
            ..
        }
    ));
    // A code used 10 minutes after it was minted is dead.
    let late = devices.mint_code(T0).unwrap();
    assert!(devices
        .is_code_open(&late, T0 + CODE_LIFETIME_MS - 1)
        .unwrap());
    assert!(!devices.is_code_open(&late, T0 + CODE_LIFETIME_MS).unwrap());
    assert!(matches!(
        with_code(&devices, &late, T0 + CODE_LIFETIME_MS),
        Admission::Pending {
            code_refused: true,
            ..
        }
    ));
    // A code nobody minted pairs nothing.
    assert!(matches!(
        with_code(&devices, &PairingCode::new("0".repeat(32)), T0),
        Admission::Pending { .. }
    ));
}

#[test]
fn refused_stays_refused_and_revoked_is_refused() {
    let (_dir, devices) = registry();
    let (id, key) = ask(&devices, T0);
    devices.refuse(&id, T0 + 1).unwrap();
    for later in [T0 + 2, T0 + PENDING_LIFETIME_MS * 3] {
        assert_eq!(
            with_key(&devices, &key, later),
            Admission::Refused { id: id.clone() },
            "never pending again, never expired"
        );
    }
    let err = devices.approve(&id, T0 + 3).unwrap_err();
    assert!(err.to_string().contains("pair it again"), "{err}");

    let code = devices.mint_code(T0).unwrap();
    let Admission::Approved {
        id: phone_id,
        new_key: Some(phone_key),
    } = with_code(&devices, &code, T0)
    else {
        panic!("not paired");
    };
    assert!(
        devices.refuse(&phone_id, T0).is_err(),
        "refuse is for waiting devices"
    );
    devices.revoke(&phone_id, T0 + 4).unwrap();
    assert_eq!(
        with_key(&devices, &phone_key, T0 + 5),
        Admission::Refused { id: phone_id }
    );
    assert!(matches!(
        devices.approve("nosuch", T0),
        Err(DevicesError::Unknown(_))
    ));
}

#[test]
fn a_refused_device_pairs_again_only_with_a_fresh_code_from_the_desk() {
    let (_dir, devices) = registry();
    let (id, key) = ask(&devices, T0);
    devices.refuse(&id, T0).unwrap();
    let code = devices.mint_code(T0).unwrap();
    let knock = Knock {
        key: Some(&key),
        code: Some(&code),
        about: phone(),
        proven: false,
    };
    let Admission::Approved {
        new_key: Some(new_key),
        ..
    } = devices.admit(&knock, T0).unwrap()
    else {
        panic!("a code from the desk pairs it");
    };
    assert!(matches!(
        with_key(&devices, &new_key, T0),
        Admission::Approved { .. }
    ));
    assert_eq!(
        devices.list(T0).unwrap().len(),
        1,
        "the refused entry was replaced"
    );
}

#[test]
fn waiting_devices_are_bounded_and_expire() {
    let (_dir, devices) = registry();
    let (first, first_key) = ask(&devices, T0);
    for i in 0..MAX_PENDING as u64 {
        ask(&devices, T0 + 1 + i);
    }
    let list = devices.list(T0 + 100).unwrap();
    assert_eq!(list.len(), MAX_PENDING);
    assert!(list.iter().all(|d| d.id != first), "the oldest made room");
    assert!(matches!(
        devices.approve(&first, T0 + 100),
        Err(DevicesError::Unknown(_))
    ));
    // The dropped phone asks again and simply waits again, under a new id.
    assert!(matches!(
        with_key(&devices, &first_key, T0 + 200),
        Admission::Pending { id, .. } if id != first
    ));

    let (_dir, devices) = registry();
    let (id, key) = ask(&devices, T0);
    assert_eq!(devices.list(T0 + PENDING_LIFETIME_MS).unwrap().len(), 0);
    let err = devices.approve(&id, T0 + PENDING_LIFETIME_MS).unwrap_err();
    assert!(err.to_string().contains("10 minutes"), "{err}");
    assert!(matches!(
        with_key(&devices, &key, T0 + PENDING_LIFETIME_MS),
        Admission::Pending { id: again, .. } if again != id
    ));
    // Approved devices never expire.
    let code = devices.mint_code(T0).unwrap();
    with_code(&devices, &code, T0);
    assert_eq!(
        devices.list(T0 + 1000 * PENDING_LIFETIME_MS).unwrap().len(),
        1
    );
}

#[test]
fn open_codes_are_bounded() {
    let (_dir, devices) = registry();
    let first = devices.mint_code(T0).unwrap();
    for _ in 0..MAX_OPEN_CODES {
        devices.mint_code(T0).unwrap();
    }
    assert!(!devices.is_code_open(&first, T0).unwrap());
}

#[test]
fn the_file_holds_no_key_and_no_code() {
    let (_dir, devices) = registry();
    let code = devices.mint_code(T0).unwrap();
    let (_, pending_key) = ask(&devices, T0);
    let unused = devices.mint_code(T0).unwrap();
    let Admission::Approved {
        new_key: Some(key), ..
    } = with_code(&devices, &code, T0)
    else {
        panic!()
    };
    let text = std::fs::read_to_string(devices.path()).unwrap();
    for secret in [
        key.expose(),
        pending_key.expose(),
        code.expose(),
        unused.expose(),
    ] {
        assert!(!text.contains(secret), "a secret on disk: {text}");
    }
    assert!(!format!("{key:?}{code:?}").contains(key.expose()));
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(devices.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}

#[test]
fn a_corrupt_file_is_named_and_left_alone() {
    let (_dir, devices) = registry();
    std::fs::create_dir_all(devices.path().parent().unwrap()).unwrap();
    std::fs::write(devices.path(), b"{\"devices\": [oops").unwrap();
    let errors = [
        devices.list(T0).unwrap_err(),
        devices.mint_code(T0).unwrap_err(),
        devices.admit(&Knock::default(), T0).unwrap_err(),
        devices.approve("abc", T0).unwrap_err(),
    ];
    for err in errors {
        assert!(matches!(err, DevicesError::Corrupt { .. }), "{err}");
        assert!(err.to_string().contains("devices.json"), "{err}");
    }
    assert_eq!(
        std::fs::read(devices.path()).unwrap(),
        b"{\"devices\": [oops",
        "nothing lost"
    );
}

#[test]
fn names_are_cleaned_and_renames_kept() {
    let (_dir, devices) = registry();
    let long = "x".repeat(500);
    let knock = Knock {
        about: About {
            name: Some("evil\u{1b}[31m\nname"),
            platform: Some(&long),
            address: None,
        },
        ..Default::default()
    };
    let Admission::Pending { id, .. } = devices.admit(&knock, T0).unwrap() else {
        panic!()
    };
    let d = &devices.list(T0).unwrap()[0];
    assert_eq!(d.name.as_deref(), Some("evil[31mname"));
    assert_eq!(d.platform.as_ref().map(|p| p.len()), Some(MAX_LABEL_CHARS));
    assert_eq!(
        devices
            .rename(&id, "  Kitchen iPad ", T0)
            .unwrap()
            .name
            .as_deref(),
        Some("Kitchen iPad")
    );
    assert!(matches!(
        devices.rename(&id, "\n\t", T0),
        Err(DevicesError::EmptyName)
    ));
}

#[test]
fn last_seen_is_written_at_most_once_a_minute_unless_the_address_moves() {
    let (_dir, devices) = registry();
    let key = DeviceKey::new("harness-key");
    devices.add_approved(&key, phone(), T0).unwrap();
    let seen = |now| {
        with_key(&devices, &key, now);
        devices.list(now).unwrap()[0].last_seen
    };
    assert_eq!(seen(T0 + 10_000), Some(T0));
    assert_eq!(seen(T0 + MIN), Some(T0 + MIN));
    let elsewhere: IpAddr = "198.51.100.7".parse().unwrap();
    let knock = Knock {
        key: Some(&key),
        about: About {
            address: Some(elsewhere),
            ..phone()
        },
        ..Default::default()
    };
    devices.admit(&knock, T0 + MIN + 1).unwrap();
    assert_eq!(devices.list(T0).unwrap()[0].last_address, Some(elsewhere));
}

#[test]
fn the_cli_lists_and_decides_in_words() {
    let dir = tempfile::tempdir().unwrap();
    let paths = Paths::under(dir.path());
    let empty = run_command(&paths, DevicesCommand::List, T0).unwrap();
    assert!(empty.contains("no devices"), "{empty}");
    let (id, _) = ask(&Devices::new(&paths), T0);
    let listed = run_command(&paths, DevicesCommand::List, T0 + 2 * MIN).unwrap();
    assert!(
        listed.contains(&id) && listed.contains("PENDING") && listed.contains("2 min ago"),
        "{listed}"
    );
    let approved = run_command(&paths, DevicesCommand::Approve { id: id.clone() }, T0).unwrap();
    assert!(approved.contains("approved"), "{approved}");
    let err = run_command(&paths, DevicesCommand::Refuse { id }, T0).unwrap_err();
    assert!(err.to_string().contains("revoke"), "{err}");
}

/// A v2 knock: the device's own public key, proven in the handshake, maybe a code.
fn proven(devices: &Devices, key: &DeviceKey, code: Option<&PairingCode>, now: u64) -> Admission {
    let knock = Knock {
        key: Some(key),
        proven: true,
        code,
        about: phone(),
    };
    devices.admit(&knock, now).unwrap()
}

#[test]
fn a_proven_key_pairs_with_a_code_once_and_is_kept_not_minted() {
    let (_dir, devices) = registry();
    let key = DeviceKey::new(crate::channel::encode_key(&[9; 32]));
    let code = devices.mint_code(T0).unwrap();
    let Admission::Approved { id, new_key: None } = proven(&devices, &key, Some(&code), T0 + MIN)
    else {
        panic!("the code did not pair the key");
    };
    // From now on the key alone is the device.
    assert_eq!(
        proven(&devices, &key, None, T0 + 2 * MIN),
        Admission::Approved {
            id: id.clone(),
            new_key: None
        }
    );
    // The same code again, from another device: not paired, and nobody waits.
    let thief = DeviceKey::new(crate::channel::encode_key(&[10; 32]));
    assert_eq!(
        proven(&devices, &thief, Some(&code), T0 + 2 * MIN),
        Admission::NotPaired { code_refused: true }
    );
    // A code 10 minutes old is dead.
    let late = devices.mint_code(T0).unwrap();
    assert_eq!(
        proven(&devices, &thief, Some(&late), T0 + CODE_LIFETIME_MS),
        Admission::NotPaired { code_refused: true }
    );
    // A stranger without a code never joins the list of devices waiting.
    assert_eq!(
        proven(&devices, &thief, None, T0 + 3 * MIN),
        Admission::NotPaired {
            code_refused: false
        }
    );
    assert_eq!(devices.list(T0 + 3 * MIN).unwrap().len(), 1);
    // Revoked: refused with its id, until a fresh code pairs it again.
    devices.revoke(&id, T0 + 4 * MIN).unwrap();
    assert_eq!(
        proven(&devices, &key, None, T0 + 5 * MIN),
        Admission::Refused { id: id.clone() }
    );
    let fresh = devices.mint_code(T0 + 6 * MIN).unwrap();
    assert!(matches!(
        proven(&devices, &key, Some(&fresh), T0 + 6 * MIN),
        Admission::Approved { new_key: None, .. }
    ));
}

#[test]
fn revoking_all_refuses_every_approved_device() {
    let (_dir, devices) = registry();
    let (pending, _) = ask(&devices, T0);
    for n in [1u8, 2] {
        let code = devices.mint_code(T0).unwrap();
        let key = DeviceKey::new(crate::channel::encode_key(&[n; 32]));
        proven(&devices, &key, Some(&code), T0);
    }
    assert_eq!(devices.revoke_all(T0 + MIN).unwrap(), 2);
    let states: Vec<_> = devices
        .list(T0 + MIN)
        .unwrap()
        .into_iter()
        .map(|d| (d.id == pending, d.state))
        .collect();
    assert_eq!(
        states,
        [
            (true, DeviceState::Pending),
            (false, DeviceState::Refused),
            (false, DeviceState::Refused)
        ]
    );
}

#[test]
fn only_an_approved_device_may_be_let_deploy_and_the_list_says_which_may() {
    let (dir, devices) = registry();
    let (id, _) = ask(&devices, T0);
    let err = devices.allow_deploy(&id, true, T0).unwrap_err();
    assert!(err.to_string().contains("approve it first"), "{err}");
    assert!(!devices.list(T0).unwrap()[0].may_deploy);

    devices.approve(&id, T0).unwrap();
    assert!(
        devices
            .allow_deploy(&id, true, T0 + MIN)
            .unwrap()
            .may_deploy
    );
    let paths = Paths::under(dir.path());
    let listed = command::run_command(&paths, command::DevicesCommand::List, T0 + MIN).unwrap();
    assert!(listed.ends_with("may deploy"), "{listed}");

    let said = command::run_command(
        &paths,
        command::DevicesCommand::DenyDeploy { id: id.clone() },
        T0 + 2 * MIN,
    )
    .unwrap();
    assert!(said.contains("wait for your approval"), "{said}");
    assert!(!devices.list(T0).unwrap()[0].may_deploy);
    let unknown = devices.allow_deploy("nope", true, T0).unwrap_err();
    assert!(unknown.to_string().contains("nope"), "{unknown}");
}
