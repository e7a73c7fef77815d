//! `chroxy devices …`: the owner's decisions from a terminal, worded for a person. The
//! shell parses the command line and prints what this returns.

use super::{Decision, Device, DeviceState, Devices, DevicesError};
use crate::store::Paths;

/// `chroxy devices <action>`.
#[derive(Debug, Clone, PartialEq, Eq, clap::Subcommand)]
pub enum DevicesCommand {
    /// Every device: approved, waiting for approval, refused.
    List,
    /// Let a device that waits for approval in.
    Approve {
        /// Its id (`list` shows it, and so does the phone).
        id: String,
    },
    /// Turn a device that waits for approval away, for good.
    Refuse {
        /// Its id.
        id: String,
    },
    /// Take an approved device's access away: its next connection is refused.
    Revoke {
        /// Its id.
        id: String,
    },
    /// Let an approved device deploy from the phone (a build of a session's
    /// directory) without your approval at the computer.
    AllowDeploy {
        /// Its id.
        id: String,
    },
    /// Make a device's deploys wait for your approval at the computer again.
    DenyDeploy {
        /// Its id.
        id: String,
    },
    /// Give a device a name you will recognise.
    Rename {
        /// Its id.
        id: String,
        /// The new name.
        name: String,
    },
}

/// Carries out `command` on this home's registry at `now`; the text to print.
pub fn run_command(
    paths: &Paths,
    command: DevicesCommand,
    now: u64,
) -> Result<String, DevicesError> {
    let devices = Devices::new(paths);
    Ok(match command {
        DevicesCommand::List => {
            let list = devices.list(now)?;
            if list.is_empty() {
                return Ok("no devices yet: pair a phone by scanning the QR code (`chroxy pair --format terminal`)".into());
            }
            list.iter()
                .map(|d| line(d, now))
                .collect::<Vec<_>>()
                .join("\n")
        }
        DevicesCommand::Approve { id } => format!(
            "{}: it gets in at its next try (within seconds)",
            devices.decide(Decision::Approve, &id, now)?
        ),
        DevicesCommand::Refuse { id } => format!(
            "{}: it stays out",
            devices.decide(Decision::Refuse, &id, now)?
        ),
        DevicesCommand::Revoke { id } => format!(
            "{}: its next connection is refused (one open now lasts until it reconnects; `chroxy token rotate` ends every connection)",
            devices.decide(Decision::Revoke, &id, now)?
        ),
        DevicesCommand::AllowDeploy { id } => {
            let d = devices.allow_deploy(&id, true, now)?;
            format!(
                "device {} may now deploy from the phone without approval here (`chroxy devices deny-deploy {}` takes it back)",
                d.id, d.id
            )
        }
        DevicesCommand::DenyDeploy { id } => {
            let d = devices.allow_deploy(&id, false, now)?;
            format!(
                "device {}'s deploys now wait for your approval at the computer",
                d.id
            )
        }
        DevicesCommand::Rename { id, name } => {
            let d = devices.rename(&id, &name, now)?;
            format!(
                "renamed device {} \"{}\"",
                d.id,
                d.name.as_deref().unwrap_or("unnamed")
            )
        }
    })
}

fn line(d: &Device, now: u64) -> String {
    let ago = |at: u64| {
        let secs = now.saturating_sub(at) / 1000;
        match secs {
            0..60 => format!("{secs} s ago"),
            60..3600 => format!("{} min ago", secs / 60),
            3600..86400 => format!("{} h ago", secs / 3600),
            _ => format!("{} days ago", secs / 86400),
        }
    };
    let state = match d.state {
        DeviceState::Approved => "approved",
        DeviceState::Pending => "PENDING",
        DeviceState::Refused => "refused",
    };
    let seen = match (d.last_seen, d.last_address) {
        (Some(at), Some(addr)) => format!("last seen {} from {addr}", ago(at)),
        (Some(at), None) => format!("last seen {}", ago(at)),
        _ => format!("asked {}", ago(d.added_at)),
    };
    let deploys = if d.may_deploy { "  may deploy" } else { "" };
    format!(
        "{:<8} {:<9} {:<24} {:<12} {seen}{deploys}",
        d.id,
        state,
        d.name.as_deref().unwrap_or("unnamed"),
        d.platform.as_deref().unwrap_or("-"),
    )
}
