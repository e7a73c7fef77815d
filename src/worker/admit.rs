//! The second half of authentication (docs/protocol.md "Connecting" step 5): the token
//! was right, now the device. The registry ([`crate::devices`]) decides; this turns its
//! answer into what the client is told. A device not approved yet is told its id and
//! key and closed at once: it retries with the key, so no socket waits on a person.

use super::routes::Client;
use super::Shared;
use crate::devices::{About, Admission, DeviceKey, Knock, PairingCode};
use crate::protocol::{Auth, AuthFailReason, ServerMsg, Token};

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
    /// The registry could not be read: close as a server fault, the client retries.
    Unavailable,
}

/// Decides about a client that presented the right token.
pub(crate) async fn admit(s: &Shared, auth: &Auth, client: Client) -> Result<Admitted, Refusal> {
    // The supervisor's probe proves itself with the supervisor's key, not a device.
    let probe = client.direct && s.probe_is_supervisors;
    let Some(devices) = s.devices.clone().filter(|_| !probe) else {
        return Ok(Admitted::default());
    };
    let key = auth
        .device_key
        .as_ref()
        .map(|k| DeviceKey::new(k.0.clone()));
    let code = auth
        .pairing_code
        .as_ref()
        .map(|c| PairingCode::new(c.0.clone()));
    let info = auth.device_info.clone().unwrap_or_default();
    let address = client.addr;
    let decided = tokio::task::spawn_blocking(move || {
        let knock = Knock {
            key: key.as_ref(),
            code: code.as_ref(),
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
