//! The supervisor ↔ worker control channel: JSON lines on the worker's stdout (events)
//! and stdin (commands). The only type the two share besides the protocol. A closed
//! stdin means the supervisor is gone, and the worker stops by itself, so no orphan
//! ever holds a port. Before any command, stdin carries the API token and keys ([`token_line`]).

use serde::{Deserialize, Serialize};

use crate::channel::KeyPair;
use crate::forwarded::Voucher;
use crate::protocol::ShutdownReason;
use crate::token::ApiToken;

/// The `deviceType` the supervisor's health probes authenticate with. A worker keeps
/// such connections out of phones' sight: no `client_joined`/`client_left`, no history
/// replay, so probing every few seconds costs phones nothing.
pub const PROBE_DEVICE_TYPE: &str = "chroxy-health-check";

/// Worker → supervisor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WorkerEvent {
    /// Listening; phones can connect.
    Ready {
        /// The bound port on 127.0.0.1.
        port: u16,
        /// The worker's process id.
        pid: u32,
    },
    /// Liveness, every heartbeat interval, with counters for the canary watch.
    Heartbeat {
        /// Connected phones.
        clients: u32,
        /// Sessions.
        sessions: u32,
        /// Sessions with a turn running.
        busy: u32,
        /// The registry ids of the devices connected now (each once). Absent from
        /// workers older than the field: none shown as connected.
        #[serde(default)]
        devices: Vec<String>,
        /// Server faults since the previous heartbeat: what the worker itself got wrong
        /// (a panicked task, …), never what a client sent wrong — a newer client or a
        /// hostile one must not be able to veto a release. Absent from workers older
        /// than the field: none counted.
        #[serde(default)]
        server_faults: u64,
        /// The same count under the field's old name, which supervisors older than
        /// `server_faults` require (without it they take no heartbeat and kill the
        /// worker as hung). Newer supervisors ignore it: older workers counted refused
        /// client frames here.
        #[serde(default)]
        protocol_errors: u64,
    },
    /// Drained: sessions saved, phones told; the process exits next.
    DrainDone,
    /// Phones should be notified of this ([`crate::push`]): the supervisor, which
    /// holds the signing key, delivers it. Supervisors older than the event ignore it.
    Notify {
        /// What to tell them.
        notice: crate::push::Notice,
    },
    /// A phone asked to build and deploy a session's directory (`deploy_source`).
    /// Supervisors older than the event ignore it.
    Deploy {
        /// The directory.
        source: std::path::PathBuf,
        /// The device's name, for the views.
        requested_by: String,
        /// The person marked the device as allowed to deploy (`chroxy devices
        /// allow-deploy`): its release needs no approval at the desk.
        allowed: bool,
        /// Build the directory's uncommitted changes too.
        #[serde(default)]
        allow_dirty: bool,
    },
    /// Stopping on an error; the process exits next. Said so that the supervisor can
    /// tell a person why (and whose fault it is), not only an exit status.
    Fatal {
        /// What kind of error.
        cause: FatalCause,
        /// The error, worded for a person (what failed, where, what to do); secret-free.
        message: String,
    },
}

/// What a [`WorkerEvent::Fatal`] error was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FatalCause {
    /// The settings file is unreadable or invalid: a person must fix it, and no
    /// release would do better, so it is no reason to roll one back.
    Config,
    /// Anything else.
    Other,
}

/// Supervisor → worker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SupervisorCommand {
    /// Stop in order: refuse input, let prompt answers through, wait (bounded) for
    /// running turns, tell phones `server_shutdown`, save, exit.
    Drain {
        /// What phones are told.
        reason: ShutdownReason,
        /// When they should try again.
        restart_eta_ms: u64,
        /// How long running turns may take to finish.
        idle_wait_ms: u64,
    },
    /// Tell every phone to reconnect now (`server_shutdown` restart) and close them.
    Reconnect {
        /// The ETA phones are told.
        restart_eta_ms: u64,
    },
    /// The worker this one replaced has saved its last state and exited: re-read it.
    Resync {
        /// This worker was a standby that served nobody: sessions no longer saved were
        /// closed by the one it replaces. Absent (`false`) from older supervisors.
        #[serde(default)]
        closed_there: bool,
        /// How many CLIs of the lost worker the supervisor handed over on the keeper
        /// channel just before ([`crate::keeper`]): the sessions take them after the
        /// re-read. Absent (0) from older supervisors.
        #[serde(default, skip_serializing_if = "is_zero")]
        adopt: u32,
    },
    /// Tell every phone how a source build and its deploy go (`deploy_status`).
    DeployNews(DeployNews),
}

/// In a standby worker's environment (`1`): its sessions take no input until its
/// promotion's `resync`. (`CHROXY_*`: agents never inherit it.)
pub const STANDBY_VAR: &str = "CHROXY_STANDBY";

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// What phones hear of a source build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployNews {
    /// The build's status changed.
    Status(Box<crate::protocol::deploy::BuildStatus>),
    /// A phone's request was refused (a build already runs, the config is invalid…).
    Refused(String),
}

/// One JSON line (with the newline).
pub fn to_line<T: Serialize>(msg: &T) -> String {
    // Flat enums of strings and integers serialize infallibly.
    let mut line = serde_json::to_string(msg).unwrap_or_default();
    line.push('\n');
    line
}

impl WorkerEvent {
    /// One JSON line (with the newline).
    pub fn to_line(&self) -> String {
        to_line(self)
    }
}

/// The first line a supervisor writes on a worker's stdin, before any command: the API
/// token, the supervisor's signing key and the desktop's identity key. Not an
/// environment variable: a start environment stays readable in `/proc/<pid>/environ`
/// for the process's whole life, by every process of the same user — the worker's
/// agents and their tools included.
pub fn token_line(token: &ApiToken, voucher: &Voucher, identity: &KeyPair) -> String {
    format!(
        "{} {} {}\n",
        token.expose(),
        voucher.expose_hex(),
        identity.expose_secret()
    )
}

/// What the first line of a supervised worker's stdin hands it.
#[derive(Debug, Clone)]
pub struct Handed {
    /// The API token.
    pub token: ApiToken,
    /// The supervisor's signing key ([`crate::forwarded`]), if it came.
    pub voucher: Option<Voucher>,
    /// The desktop's identity key, if it came (a supervisor from before protocol v2
    /// hands none: the worker then reads it from the keyring).
    pub identity: Option<KeyPair>,
}

/// The first line of a worker's stdin, if it holds a token. Read from the right: a
/// token given in `CHROXY_TOKEN` may hold spaces, the keys never do.
pub fn token_from_line(line: &str) -> Option<Handed> {
    let mut rest = line.trim();
    let mut identity = None;
    if let Some((head, last)) = rest.rsplit_once(' ') {
        let voucher_before = head
            .rsplit_once(' ')
            .is_some_and(|(_, v)| Voucher::from_hex(v).is_some());
        if let (true, Ok(key)) = (voucher_before, KeyPair::from_secret(last)) {
            identity = Some(key);
            rest = head;
        }
    }
    let (token, voucher) = match rest.rsplit_once(' ') {
        Some((token, key)) => match Voucher::from_hex(key) {
            Some(voucher) => (token.trim(), Some(voucher)),
            None => (rest, None),
        },
        None => (rest, None),
    };
    (!token.is_empty()).then(|| Handed {
        token: ApiToken::new(token),
        voucher,
        identity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_resync_is_understood_by_workers_and_supervisors_of_either_age() {
        // A release from before standbys knew `resync` without a field.
        #[derive(Debug, Deserialize, PartialEq)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Before {
            Resync,
        }
        let now = to_line(&SupervisorCommand::Resync {
            closed_there: true,
            adopt: 2,
        });
        assert_eq!(
            serde_json::from_str::<Before>(&now).unwrap(),
            Before::Resync
        );
        assert_eq!(
            serde_json::from_str::<SupervisorCommand>(r#"{"type":"resync"}"#).unwrap(),
            SupervisorCommand::Resync {
                closed_there: false,
                adopt: 0
            }
        );
    }

    #[test]
    fn lines_round_trip() {
        let cmd = SupervisorCommand::Drain {
            reason: ShutdownReason::Restart,
            restart_eta_ms: 1500,
            idle_wait_ms: 30_000,
        };
        let line = to_line(&cmd);
        assert!(line.ends_with('\n'));
        assert_eq!(
            serde_json::from_str::<SupervisorCommand>(&line).unwrap(),
            cmd
        );
        let beat = WorkerEvent::Heartbeat {
            clients: 2,
            sessions: 1,
            busy: 0,
            devices: vec!["k7m2qp".into()],
            server_faults: 3,
            protocol_errors: 3,
        };
        assert_eq!(
            serde_json::from_str::<WorkerEvent>(&beat.to_line()).unwrap(),
            beat
        );
        let fatal = WorkerEvent::Fatal {
            cause: FatalCause::Config,
            message: "config.toml line 2: unknown field".into(),
        };
        assert_eq!(
            serde_json::from_str::<WorkerEvent>(&fatal.to_line()).unwrap(),
            fatal
        );
        // A worker of an older release: its refused client frames are no faults.
        let old = r#"{"type":"heartbeat","clients":1,"sessions":1,"busy":0,"protocol_errors":7}"#;
        assert!(matches!(
            serde_json::from_str::<WorkerEvent>(old).unwrap(),
            WorkerEvent::Heartbeat {
                server_faults: 0,
                ..
            }
        ));
        assert_eq!(
            serde_json::from_str::<SupervisorCommand>(r#"{"type":"reconnect","restartEtaMs":5}"#)
                .ok(),
            None,
            "fields are snake_case on this channel"
        );
    }

    #[test]
    fn the_token_line_round_trips_and_an_empty_one_is_none() {
        let token = ApiToken::new("s3 cret");
        let voucher = Voucher::generate().unwrap();
        let identity = KeyPair::generate().unwrap();
        let line = token_line(&token, &voucher, &identity);
        assert_eq!(
            line,
            format!(
                "s3 cret {} {}\n",
                voucher.expose_hex(),
                identity.expose_secret()
            )
        );
        let handed = token_from_line(&line).unwrap();
        assert_eq!(handed.token, token);
        assert_eq!(handed.voucher, Some(voucher.clone()));
        assert_eq!(handed.identity.unwrap().public(), identity.public());
        // A supervisor from before protocol v2: token and voucher.
        let old = token_from_line(&format!("s3 cret {}\n", voucher.expose_hex())).unwrap();
        assert_eq!((old.token, old.voucher), (token.clone(), Some(voucher)));
        assert!(old.identity.is_none());
        let alone = token_from_line("s3cret\n").unwrap();
        assert_eq!(
            (alone.token, alone.voucher),
            (ApiToken::new("s3cret"), None)
        );
        assert!(token_from_line(" \n").is_none());
    }
}
