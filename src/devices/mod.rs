//! Which devices may use this machine (README "Pairing and approving devices"). The API
//! token alone no longer lets a phone in: a device is either paired at the desk, with
//! a one-time code from a QR code the owner is looking at, or approved by the owner
//! with a click after it asked. A leaked token or pairing link then gets a stranger no
//! further than the owner's list of devices waiting for approval.
//!
//! The registry is one JSON file, `<state>/devices.json`, read-modify-written under an
//! advisory lock and replaced atomically, so the worker (which admits devices), the
//! supervisor (which shows them) and `chroxy devices` (which decides about them) share
//! it across processes. It holds a SHA-256 of each device key and of each open pairing
//! code, never a key or a code. A file that does not parse is an error naming it, and
//! is never overwritten: every device would otherwise be forgotten without a word.
//!
//! Every rule takes `now` (milliseconds since the epoch) from its caller, so tests
//! move the clock instead of waiting ten minutes. Entries carry what issue #15's
//! device key pairs will need too (name, platform, when paired, last seen, from where).
//!
//! `command.rs`: `chroxy devices …`; `secret.rs`: keys, codes, ids.

mod command;
mod secret;
#[cfg(test)]
mod tests;

pub use command::{run_command, DevicesCommand};
pub use secret::{DeviceKey, PairingCode};

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::store::{modify_json, read_json, Paths, StoreError};

/// A pairing code works for this long after it was minted (and once).
pub const CODE_LIFETIME_MS: u64 = 10 * 60 * 1000;
/// A device waiting for approval is forgotten after this long; asking again re-adds it.
pub const PENDING_LIFETIME_MS: u64 = 10 * 60 * 1000;
/// Devices waiting at once; a newcomer beyond it drops the one waiting longest, so
/// whoever holds the token can never grow the file (each ask is a write).
pub const MAX_PENDING: usize = 16;
/// Codes open at once (each QR shown mints one); beyond it the oldest stops working.
pub const MAX_OPEN_CODES: usize = 16;
/// `lastSeen` is written at most this often per device: an approved phone's every
/// reconnect must not cost a synced write.
const SEEN_EVERY_MS: u64 = 60 * 1000;
/// Longest name or platform kept (in characters).
const MAX_LABEL_CHARS: usize = 64;

/// Why the registry could not be read, changed or used. Each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum DevicesError {
    /// Reading, writing or locking the file failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The file exists but is not a device list; it is left as it is.
    #[error("{path} is not a valid Chroxy device list ({message}); fix it, or move it away to pair every device again")]
    Corrupt {
        /// The registry file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// No device has this id.
    #[error("there is no device `{0}`; `chroxy devices list` shows them (a device waiting for approval is forgotten after 10 minutes: have it connect again)")]
    Unknown(String),
    /// The device is not in a state the action applies to.
    #[error("device `{id}` is {state}: {hint}")]
    WrongState {
        /// The device.
        id: String,
        /// Its state.
        state: DeviceState,
        /// What to do instead.
        hint: &'static str,
    },
    /// A name that is empty once control characters are removed.
    #[error("a device name must have at least one visible character")]
    EmptyName,
    /// The OS random source failed.
    #[error("the system random generator failed: {0}")]
    Random(String),
}

/// Where a device stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceState {
    /// It may connect.
    Approved,
    /// It asked and waits for the owner.
    Pending,
    /// The owner said no (or revoked it): it stays out, whatever it retries.
    Refused,
}

impl std::fmt::Display for DeviceState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            DeviceState::Approved => "approved",
            DeviceState::Pending => "waiting for approval",
            DeviceState::Refused => "refused",
        })
    }
}

/// A device as views show it: no key, no code.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Device {
    /// Public short id, shown in views and typed into `chroxy devices`.
    pub id: String,
    /// What it called itself (`deviceInfo.deviceName`), or the owner's rename.
    pub name: Option<String>,
    /// `deviceInfo.platform`.
    pub platform: Option<String>,
    /// Where it stands.
    pub state: DeviceState,
    /// When it first asked or was paired (milliseconds since the epoch).
    pub added_at: u64,
    /// When it was approved or paired.
    pub paired_at: Option<u64>,
    /// Its last successful connection (updated at most once a minute).
    pub last_seen: Option<u64>,
    /// The address of that connection, as the public port vouched for it.
    pub last_address: Option<IpAddr>,
    /// The owner lets it deploy a source build without approval at the desk
    /// (`chroxy devices allow-deploy`).
    #[serde(default)]
    pub may_deploy: bool,
}

/// One device in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    #[serde(flatten)]
    device: Device,
    /// SHA-256 (hex) of its key.
    key_sha256: String,
}

/// One open pairing code in the file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OpenCode {
    /// SHA-256 (hex) of the code.
    sha256: String,
    expires_at: u64,
}

/// The file's shape.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegistryFile {
    version: u32,
    devices: Vec<Entry>,
    codes: Vec<OpenCode>,
}

/// No devices, in the format this version writes (so a first write needs no stamp).
impl Default for RegistryFile {
    fn default() -> Self {
        Self {
            version: 1,
            devices: Vec::new(),
            codes: Vec::new(),
        }
    }
}

impl RegistryFile {
    /// Drops expired codes and pending devices.
    fn sweep(&mut self, now: u64) {
        self.codes.retain(|c| c.expires_at > now);
        self.devices.retain(|e| {
            e.device.state != DeviceState::Pending
                || e.device.added_at.saturating_add(PENDING_LIFETIME_MS) > now
        });
    }

    fn by_key(&self, key: &DeviceKey) -> Option<usize> {
        let digest = key.digest();
        self.devices
            .iter()
            .position(|e| secret::same_digest(&e.key_sha256, &digest))
    }

    fn by_id(&mut self, id: &str) -> Result<&mut Device, DevicesError> {
        self.devices
            .iter_mut()
            .map(|e| &mut e.device)
            .find(|d| d.id == id)
            .ok_or_else(|| DevicesError::Unknown(id.to_owned()))
    }

    /// Consumes `code` if it is open; whether it was.
    fn take_code(&mut self, code: &PairingCode) -> bool {
        let digest = code.digest();
        let before = self.codes.len();
        self.codes
            .retain(|c| !secret::same_digest(&c.sha256, &digest));
        self.codes.len() != before
    }

    fn add(
        &mut self,
        key: &DeviceKey,
        about: About<'_>,
        state: DeviceState,
        now: u64,
    ) -> Result<Device, DevicesError> {
        let id = loop {
            let id = secret::new_id()?;
            if self.devices.iter().all(|e| e.device.id != id) {
                break id;
            }
        };
        let approved = state == DeviceState::Approved;
        let device = Device {
            id,
            name: about.name.and_then(label),
            platform: about.platform.and_then(label),
            state,
            added_at: now,
            paired_at: approved.then_some(now),
            last_seen: approved.then_some(now),
            last_address: about.address.filter(|_| approved),
            may_deploy: false,
        };
        self.devices.push(Entry {
            device: device.clone(),
            key_sha256: key.digest(),
        });
        if state == DeviceState::Pending {
            let pending = |f: &Self| {
                f.devices
                    .iter()
                    .filter(|e| e.device.state == DeviceState::Pending)
                    .count()
            };
            while pending(self) > MAX_PENDING {
                if let Some(oldest) = self
                    .devices
                    .iter()
                    .position(|e| e.device.state == DeviceState::Pending)
                {
                    self.devices.remove(oldest);
                }
            }
        }
        Ok(device)
    }
}

/// What a device says about itself, and where it connects from.
#[derive(Debug, Clone, Copy, Default)]
pub struct About<'a> {
    /// `deviceInfo.deviceName`.
    pub name: Option<&'a str>,
    /// `deviceInfo.platform`.
    pub platform: Option<&'a str>,
    /// The address the public port vouched for (`None`: not known).
    pub address: Option<IpAddr>,
}

/// A device asking to come in: its key and pairing code, when it has them.
#[derive(Debug, Clone, Copy, Default)]
pub struct Knock<'a> {
    /// `auth.deviceKey` (v1), or the public key the device proved in its handshake
    /// (v2, with `proven`).
    pub key: Option<&'a DeviceKey>,
    /// Protocol v2: `key` is the device's own public key, proven by the handshake. It
    /// is kept as the device's key when a code pairs it (none is minted), and with no
    /// token behind it, a key without a code never waits for approval.
    pub proven: bool,
    /// `auth.pairingCode`.
    pub code: Option<&'a PairingCode>,
    /// What it says about itself.
    pub about: About<'a>,
}

/// The registry's answer to a [`Knock`] (from a client that holds the right token).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// In. `new_key`: it was just paired with a code, and must keep this key.
    Approved {
        /// The device.
        id: String,
        /// The key minted for it now.
        new_key: Option<DeviceKey>,
    },
    /// Waits for the owner; connect again with `key`.
    Pending {
        /// The device.
        id: String,
        /// Its key (minted now, or the one it presented).
        key: DeviceKey,
        /// It sent a pairing code that was unknown, used or expired.
        code_refused: bool,
    },
    /// The owner refused or revoked it.
    Refused {
        /// The device.
        id: String,
    },
    /// A proven key (v2) that is not an approved device, without an open code.
    NotPaired {
        /// It sent a pairing code that was unknown, used or expired.
        code_refused: bool,
    },
}

/// An owner's decision about a device, as the window and the status page name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// [`Devices::approve`].
    Approve,
    /// [`Devices::refuse`].
    Refuse,
    /// [`Devices::revoke`].
    Revoke,
}

impl Decision {
    /// Past tense, for the answer a person reads.
    pub fn done(self) -> &'static str {
        match self {
            Decision::Approve => "approved",
            Decision::Refuse => "refused",
            Decision::Revoke => "revoked",
        }
    }
}

/// The registry of one Chroxy home; cheap to clone, holds no open files.
#[derive(Debug, Clone)]
pub struct Devices {
    file: PathBuf,
    lock: PathBuf,
}

impl Devices {
    /// The registry of this home.
    pub fn new(paths: &Paths) -> Self {
        Self {
            file: paths.state_dir().join("devices.json"),
            lock: paths.lock_file("devices"),
        }
    }

    /// The file's path, for messages.
    pub fn path(&self) -> &Path {
        &self.file
    }

    /// Every device, oldest first; pending ones only while they have not expired.
    pub fn list(&self, now: u64) -> Result<Vec<Device>, DevicesError> {
        let mut file = self.load()?;
        file.sweep(now);
        Ok(file.devices.into_iter().map(|e| e.device).collect())
    }

    /// A fresh one-time code for a QR code about to be shown; it works once, for
    /// [`CODE_LIFETIME_MS`].
    pub fn mint_code(&self, now: u64) -> Result<PairingCode, DevicesError> {
        let code = PairingCode::generate()?;
        self.modify(now, |file| {
            file.codes.push(OpenCode {
                sha256: code.digest(),
                expires_at: now.saturating_add(CODE_LIFETIME_MS),
            });
            let excess = file.codes.len().saturating_sub(MAX_OPEN_CODES);
            file.codes.drain(..excess);
            Ok(())
        })?;
        Ok(code)
    }

    /// Whether `code` would still pair a device (not used, not expired).
    pub fn is_code_open(&self, code: &PairingCode, now: u64) -> Result<bool, DevicesError> {
        let mut file = self.load()?;
        file.sweep(now);
        let digest = code.digest();
        Ok(file
            .codes
            .iter()
            .any(|c| secret::same_digest(&c.sha256, &digest)))
    }

    /// Decides about a client that presented the right API token. In order: an
    /// approved key is in; an open pairing code pairs a new device (consumed, a new
    /// key minted); a refused key stays out; a pending key keeps waiting; anything
    /// else starts waiting as a new device.
    pub fn admit(&self, knock: &Knock<'_>, now: u64) -> Result<Admission, DevicesError> {
        self.modify(now, |file| {
            let known = knock.key.and_then(|k| file.by_key(k));
            if let Some(i) = known {
                let device = &mut file.devices[i].device;
                if device.state == DeviceState::Approved {
                    let stale = device
                        .last_seen
                        .is_none_or(|at| now.saturating_sub(at) >= SEEN_EVERY_MS);
                    let moved =
                        knock.about.address.is_some() && device.last_address != knock.about.address;
                    if stale || moved {
                        device.last_seen = Some(now);
                        device.last_address = knock.about.address.or(device.last_address);
                    }
                    return Ok(Admission::Approved {
                        id: device.id.clone(),
                        new_key: None,
                    });
                }
            }
            if knock.code.is_some_and(|c| file.take_code(c)) {
                // Paired at the desk: whatever this key stood for before is replaced.
                if let Some(i) = known {
                    file.devices.remove(i);
                }
                if let (true, Some(key)) = (knock.proven, knock.key) {
                    let device = file.add(key, knock.about, DeviceState::Approved, now)?;
                    return Ok(Admission::Approved {
                        id: device.id,
                        new_key: None,
                    });
                }
                let key = DeviceKey::generate()?;
                let device = file.add(&key, knock.about, DeviceState::Approved, now)?;
                return Ok(Admission::Approved {
                    id: device.id,
                    new_key: Some(key),
                });
            }
            let code_refused = knock.code.is_some();
            if knock.proven {
                return Ok(match known.map(|i| &file.devices[i].device) {
                    Some(device) if device.state == DeviceState::Refused => Admission::Refused {
                        id: device.id.clone(),
                    },
                    _ => Admission::NotPaired { code_refused },
                });
            }
            match (known, knock.key) {
                (Some(i), Some(key)) => {
                    let device = &file.devices[i].device;
                    Ok(match device.state {
                        DeviceState::Refused => Admission::Refused {
                            id: device.id.clone(),
                        },
                        _ => Admission::Pending {
                            id: device.id.clone(),
                            key: key.clone(),
                            code_refused,
                        },
                    })
                }
                _ => {
                    let key = DeviceKey::generate()?;
                    let device = file.add(&key, knock.about, DeviceState::Pending, now)?;
                    Ok(Admission::Pending {
                        id: device.id,
                        key,
                        code_refused,
                    })
                }
            }
        })
    }

    /// Adds an approved device that already holds `key` (a test harness's phone;
    /// issue #15's device keys).
    pub fn add_approved(
        &self,
        key: &DeviceKey,
        about: About<'_>,
        now: u64,
    ) -> Result<Device, DevicesError> {
        self.modify(now, |file| match file.by_key(key) {
            Some(i) => {
                let device = &mut file.devices[i].device;
                device.state = DeviceState::Approved;
                device.paired_at = Some(now);
                Ok(device.clone())
            }
            None => file.add(key, about, DeviceState::Approved, now),
        })
    }

    /// The owner lets a waiting device in.
    pub fn approve(&self, id: &str, now: u64) -> Result<Device, DevicesError> {
        self.transition(id, now, DeviceState::Pending, DeviceState::Approved,
            "only a device waiting for approval can be approved; a refused device stays refused, so pair it again from the QR code")
    }

    /// The owner turns a waiting device away; it stays out, whatever it retries.
    pub fn refuse(&self, id: &str, now: u64) -> Result<Device, DevicesError> {
        self.transition(id, now, DeviceState::Pending, DeviceState::Refused,
            "only a device waiting for approval can be refused; use `chroxy devices revoke` for an approved one")
    }

    /// The owner takes an approved device's access away; its next connection is refused.
    pub fn revoke(&self, id: &str, now: u64) -> Result<Device, DevicesError> {
        self.transition(
            id,
            now,
            DeviceState::Approved,
            DeviceState::Refused,
            "only an approved device can be revoked; use `chroxy devices refuse` for a waiting one",
        )
    }

    /// Carries out `decision` about device `id`; a sentence for the person who made it.
    pub fn decide(&self, decision: Decision, id: &str, now: u64) -> Result<String, DevicesError> {
        let device = match decision {
            Decision::Approve => self.approve(id, now)?,
            Decision::Refuse => self.refuse(id, now)?,
            Decision::Revoke => self.revoke(id, now)?,
        };
        let name = device.name.as_deref().unwrap_or("unnamed");
        Ok(format!(
            "{} device {} \"{name}\"",
            decision.done(),
            device.id
        ))
    }

    /// Takes every approved device's access away (`chroxy token rotate`: every phone
    /// pairs again); how many were.
    pub fn revoke_all(&self, now: u64) -> Result<usize, DevicesError> {
        self.modify(now, |file| {
            let mut revoked = 0;
            for entry in &mut file.devices {
                if entry.device.state == DeviceState::Approved {
                    entry.device.state = DeviceState::Refused;
                    revoked += 1;
                }
            }
            Ok(revoked)
        })
    }

    /// Lets an approved device deploy from the phone without approval at the desk, or
    /// takes that away.
    pub fn allow_deploy(&self, id: &str, allow: bool, now: u64) -> Result<Device, DevicesError> {
        self.modify(now, |file| {
            let device = file.by_id(id)?;
            if allow && device.state != DeviceState::Approved {
                return Err(DevicesError::WrongState {
                    id: id.to_owned(),
                    state: device.state,
                    hint: "only an approved device may deploy; approve it first",
                });
            }
            device.may_deploy = allow;
            Ok(device.clone())
        })
    }

    /// Names a device (as the owner knows it).
    pub fn rename(&self, id: &str, name: &str, now: u64) -> Result<Device, DevicesError> {
        let name = label(name).ok_or(DevicesError::EmptyName)?;
        self.modify(now, |file| {
            let device = file.by_id(id)?;
            device.name = Some(name);
            Ok(device.clone())
        })
    }

    fn transition(
        &self,
        id: &str,
        now: u64,
        from: DeviceState,
        to: DeviceState,
        hint: &'static str,
    ) -> Result<Device, DevicesError> {
        self.modify(now, |file| {
            let device = file.by_id(id)?;
            if device.state != from {
                return Err(DevicesError::WrongState {
                    id: id.to_owned(),
                    state: device.state,
                    hint,
                });
            }
            device.state = to;
            if to == DeviceState::Approved {
                device.paired_at = Some(now);
            }
            Ok(device.clone())
        })
    }

    /// The file as it is; a missing file is no devices.
    fn load(&self) -> Result<RegistryFile, DevicesError> {
        read_json(&self.file)?.map_err(|e| DevicesError::Corrupt {
            path: self.file.clone(),
            message: e.to_string(),
        })
    }

    /// Read-sweep-modify-write under the inter-process lock; written only if anything
    /// changed, and never when `f` fails (nothing half-decided reaches the disk).
    fn modify<T>(
        &self,
        now: u64,
        f: impl FnOnce(&mut RegistryFile) -> Result<T, DevicesError>,
    ) -> Result<T, DevicesError> {
        modify_json(
            &self.file,
            &self.lock,
            || self.load(),
            |file| {
                file.sweep(now);
                f(file)
            },
        )
    }
}

/// A name or platform as it is kept: control characters removed, at most
/// [`MAX_LABEL_CHARS`]; `None` when nothing visible is left.
fn label(text: &str) -> Option<String> {
    let kept: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_LABEL_CHARS)
        .collect();
    let kept = kept.trim();
    (!kept.is_empty()).then(|| kept.to_owned())
}
