//! The second half of authentication (docs/protocol.md "Connecting" step 4, "Version 2
//! … Authentication"): the token was right (v1) or the handshake proved a key (v2), now
//! the device. The registry ([`crate::devices`]) decides; this turns its answer into
//! what the client is told. A v1 device not approved yet is told its id and key and
//! closed at once: it retries with the key, so no socket waits on a person.

use super::routes::Client;
use super::Shared;
use crate::devices::{About, Admission, DeviceKey, Knock, PairingCode};
use crate::protocol::{Auth, AuthFailReason, DeviceInfo, SealedAuth, ServerMsg, Token};

/// What a client presents to the registry, from either protocol.
pub(crate) struct Presented {
    device_info: DeviceInfo,
    key: Option<DeviceKey>,
    code: Option<PairingCode>,
    /// v2: `key` is the public key the handshake proved.
    proven: bool,
}

impl Presented {
    /// A v1 `auth` whose token was right.
    pub fn token(auth: &Auth) -> Self {
        Self {
            device_info: auth.device_info.clone().unwrap_or_default(),
            key: auth
                .device_key
                .as_ref()
                .map(|k| DeviceKey::new(k.0.clone())),
            code: auth
                .pairing_code
                .as_ref()
                .map(|c| PairingCode::new(c.0.clone())),
            proven: false,
        }
    }

    /// A v2 `auth` from the device whose key the handshake proved.
    pub fn proven(auth: &SealedAuth, key: &[u8; 32]) -> Self {
        Self {
            device_info: auth.device_info.clone().unwrap_or_default(),
            key: Some(DeviceKey::new(crate::channel::encode_key(key))),
            code: auth
                .pairing_code
                .as_ref()
                .map(|c| PairingCode::new(c.0.clone())),
            proven: true,
        }
    }

    /// What the device said about itself.
    pub fn device_info(&self) -> &DeviceInfo {
        &self.device_info
    }
}

/// Let in, as this device.
#[derive(Debug, Default)]
pub(crate) struct Admitted {
    /// Its id in the registry; `None` when devices are not checked (or for the probe).
    pub device_id: Option<String>,
    /// Minted now (it paired with a code): `auth_ok` hands it over.
    pub new_key: Option<DeviceKey>,
}

/// Kept out.
pub(crate) enum Refusal {
    /// Say this (`auth_fail`) and close.
    Told(Box<ServerMsg>),
    /// A stranger (v2: a key that is no device of ours): say this and close, after the
    /// address's backoff like a wrong token.
    Stranger(Box<ServerMsg>),
    /// The registry could not be read: close as a server fault, the client retries.
    Unavailable,
}

/// Decides about a client that presented the right token, or proved a key.
pub(crate) async fn admit(
    s: &Shared,
    presented: Presented,
    client: Client,
) -> Result<Admitted, Refusal> {
    // The supervisor's probe proves itself with the supervisor's key, not a device; a
    // v1 token alone is enough when the owner said so. A v2 key always needs the registry.
    let probe = client.direct && s.probe_is_supervisors;
    if !presented.proven && (probe || !s.approve_new) {
        return Ok(Admitted::default());
    }
    let devices = s.devices.clone();
    let Presented {
        device_info: info,
        key,
        code,
        proven,
    } = presented;
    let address = client.addr;
    let decided = tokio::task::spawn_blocking(move || {
        let knock = Knock {
            key: key.as_ref(),
            code: code.as_ref(),
            proven,
            about: About {
                name: info.device_name.as_deref(),
                platform: info.platform.as_deref(),
                address: Some(address),
            },
        };
        devices
            .admit(&knock, crate::protocol::now_ms())
            .map_err(|err| (err, devices.path().to_owned()))
    })
    .await;
    let admission = match decided {
        Ok(Ok(admission)) => admission,
        Ok(Err((err, path))) => {
            tracing::error!(%err, file = %path.display(), "cannot check the device list; no device gets in until it is fixed");
            return Err(Refusal::Unavailable);
        }
        Err(err) => {
            tracing::error!(%err, "checking the device list failed");
            return Err(Refusal::Unavailable);
        }
    };
    match admission {
        Admission::Approved { id, new_key } => {
            if new_key.is_some() {
                tracing::info!(device = %id, %address, "device paired with a pairing code");
            }
            Ok(Admitted {
                device_id: Some(id),
                new_key,
            })
        }
        Admission::Pending {
            id,
            key,
            code_refused,
        } => {
            tracing::info!(device = %id, %address, "device waits for approval");
            let used = if code_refused {
                "The pairing code of this link was already used or has expired. "
            } else {
                ""
            };
            Err(Refusal::Told(Box::new(ServerMsg::AuthFail {
                reason: AuthFailReason::DevicePending,
                message: Some(format!(
                    "{used}Approve this device in the Chroxy window on your computer (or `chroxy devices approve {id}`); it connects by itself once approved. Or pair it at the computer by scanning a fresh QR code."
                )),
                device_id: Some(id),
                device_key: Some(Token(key.expose().to_owned())),
            })))
        }
        Admission::NotPaired { code_refused } => {
            tracing::info!(%address, code_refused, "a key that is no device of this machine's tried to connect");
            let message = if code_refused {
                "The pairing code of this link was already used or has expired. Scan a fresh QR code on the computer to pair this phone."
            } else {
                "This phone is not paired with this computer. Scan the QR code shown there to pair it."
            };
            Err(Refusal::Stranger(Box::new(ServerMsg::AuthFail {
                reason: AuthFailReason::NotPaired,
                message: Some(message.into()),
                device_id: None,
                device_key: None,
            })))
        }
        Admission::Refused { id } => {
            tracing::info!(device = %id, %address, "refused device tried to connect");
            Err(Refusal::Told(Box::new(ServerMsg::AuthFail {
                reason: AuthFailReason::DeviceRefused,
                message: Some(
                    "This device was refused on the computer it connects to. To use it, pair it again by scanning a fresh QR code there.".into(),
                ),
                device_id: Some(id),
                device_key: None,
            })))
        }
    }
}
