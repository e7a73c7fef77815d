//! What a person at a terminal asks of this home's supervisor — `chroxy status`,
//! `deploy`, `rollback`, `token rotate`, `pair` — through the running supervisor's
//! status page (the same API as the page's buttons, [`super::remote`]) when one runs,
//! else directly on the store, by the same rules ([`super::switch`]). Each writes
//! what it has to say to `out` as it goes, so what was done before a failure is said.

use std::io::Write;
use std::path::Path;

use super::instance::{self, InstanceInfo};
use super::release::{short_sha, ReleaseError, ReleaseId, Releases};
use super::remote::{self, RemoteError};
use super::status::DeployOrigin;
use super::switch::{self, Switch};
use crate::config::{Config, ConfigError};
use crate::devices::{Devices, DevicesError};
use crate::pairing::{Format, Pairing, PairingError};
use crate::secrets::{Secrets, SecretsError};
use crate::store::Paths;

/// Why a command on the supervisor failed; each says what to do.
#[derive(Debug, thiserror::Error)]
pub enum TerminalError {
    /// The release store refused.
    #[error(transparent)]
    Release(#[from] ReleaseError),
    /// The running supervisor could not be asked, or refused.
    #[error(transparent)]
    Remote(#[from] RemoteError),
    /// The keyring (or its fallback files) failed.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// No pairing link could be made.
    #[error(transparent)]
    Pairing(#[from] PairingError),
    /// The device registry could not be read or written (for a pairing code).
    #[error(transparent)]
    Devices(#[from] DevicesError),
    /// `deploy --approve|--refuse` away from an interactive terminal.
    #[error("a deploy is approved or refused by a person: run this at a terminal, or click in the Chroxy window or on the status page")]
    NotAtTerminal,
    /// `deploy --approve|--refuse` with no supervisor running.
    #[error("Chroxy is not running: no deploy awaits approval")]
    NoPendingDeploy,
    /// `token set-tunnel` with nothing on standard input.
    #[error("no token on standard input; use `chroxy token set-tunnel < token.txt`")]
    NoTunnelToken,
    /// A source build could not start, or failed.
    #[error(transparent)]
    Build(#[from] super::build::BuildError),
    /// The running supervisor's build failed (its words).
    #[error("{0}")]
    BuildFailed(String),
    /// The output could not be written.
    #[error(transparent)]
    Output(#[from] std::io::Error),
}

/// Whether a supervisor runs for the home (`chroxy status` exits 3 when none does).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    /// One runs.
    Running,
    /// None runs.
    Stopped,
}

/// `chroxy status [--json]`: the running supervisor's status, or that none runs (then,
/// in JSON, the store's releases).
pub async fn status(
    paths: &Paths,
    json: bool,
    out: &mut impl Write,
) -> Result<Presence, TerminalError> {
    let Some(info) = instance::running(paths) else {
        if json {
            let releases = Releases::open(paths).status().ok();
            let stopped = serde_json::json!({"state": "stopped", "releases": releases});
            writeln!(out, "{stopped}")?;
        } else {
            writeln!(out, "Chroxy is not running (start it with `chroxy start`)")?;
        }
        return Ok(Presence::Stopped);
    };
    let status = remote::status(info.status_port).await?;
    if json {
        // A struct of strings, numbers and lists always serializes.
        let text = serde_json::to_string_pretty(&status).unwrap_or_default();
        writeln!(out, "{text}")?;
    } else {
        let now = crate::protocol::now_ms();
        write!(out, "{}", status.to_text(&instance::describe(&info), now))?;
    }
    Ok(Presence::Running)
}

/// `chroxy deploy <binary>`: adds it to the store, then has the running supervisor try
/// it as a canary, or, with none running, makes it the release the next start tries.
pub async fn deploy(
    paths: &Paths,
    secrets: &Secrets,
    binary: &Path,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    let releases = Releases::open(paths);
    let manifest = releases.add(binary)?;
    writeln!(
        out,
        "added release {} (chroxy {} {}, sha256 {})",
        manifest.id,
        manifest.version,
        manifest.commit,
        short_sha(&manifest.sha256)
    )?;
    let origin = DeployOrigin::of_this_terminal();
    match instance::running(paths) {
        Some(info) => {
            let body = serde_json::json!({ "release": manifest.id, "origin": origin });
            act(&info, secrets, "deploy", Some(body), out).await
        }
        None if origin == DeployOrigin::Desk => {
            let id = switch::switch_stopped(&releases, &Switch::Deploy(manifest.id))?;
            writeln!(out, "Chroxy is not running: release {id} will start as a canary at the next `chroxy start`")?;
            Ok(())
        }
        // Made current now, it would start at the next `chroxy start` without anyone's
        // approval: the very thing a remote deploy must wait for.
        None => {
            writeln!(out, "Chroxy is not running, and this was not run at a terminal: release {} was added but not made current; run `chroxy deploy` at a terminal to deploy it", manifest.id)?;
            Ok(())
        }
    }
}

/// How often `chroxy deploy --source` looks at the running supervisor's build.
const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// `chroxy deploy --source DIR`: the running supervisor builds, checks and deploys the
/// tree, and this follows it until its release serves, failed, or awaits approval; with none running, the build runs here and
/// its release is made the one the next start tries, as `chroxy deploy` does.
pub async fn deploy_source(
    paths: &Paths,
    secrets: &Secrets,
    request: crate::protocol::deploy::BuildRequest,
    out: &mut (impl Write + Send),
) -> Result<(), TerminalError> {
    let origin = DeployOrigin::of_this_terminal();
    let Some(info) = instance::running(paths) else {
        return build_here(paths, request, origin, out).await;
    };
    let asked_at = crate::protocol::now_ms();
    let body = serde_json::json!({
        "source": request.source,
        "rev": request.rev,
        "allowDirty": request.allow_dirty,
        "origin": origin,
    });
    act(&info, secrets, "deploy/source", Some(body), out).await?;
    let mut shown = Vec::new();
    let mut told = String::new();
    loop {
        tokio::time::sleep(FOLLOW_EVERY).await;
        let status = remote::status(info.status_port).await?;
        let Some(build) = status.build.filter(|b| b.started_at >= asked_at) else {
            continue;
        };
        show_new(&build, &mut shown, out)?;
        match build.outcome {
            crate::protocol::deploy::Outcome::Running => {}
            // Followed until its gate has spoken: a release that dies at once must not
            // be reported as deployed because this looked before it died.
            crate::protocol::deploy::Outcome::Stored => match build.deploy {
                Some(answer) if !answer.ok => {
                    return Err(TerminalError::BuildFailed(answer.message))
                }
                Some(answer) => {
                    if answer.message != told {
                        writeln!(out, "{}", answer.message)?;
                        told = answer.message.clone();
                    }
                    if answer.settled() {
                        return Ok(());
                    }
                }
                None => {}
            },
            _ => {
                show_failure(&build, out)?;
                return Err(TerminalError::BuildFailed(build.error.unwrap_or_default()));
            }
        }
    }
}

/// The build without a supervisor: in this process, stopped by Ctrl-C.
async fn build_here(
    paths: &Paths,
    request: crate::protocol::deploy::BuildRequest,
    origin: DeployOrigin,
    out: &mut (impl Write + Send),
) -> Result<(), TerminalError> {
    let config = Config::load(&paths.config_file())?;
    let mark = format!(
        "cli-{}-{}-build",
        std::process::id(),
        crate::protocol::now_ms()
    );
    let builder = super::build::Builder::new(paths.clone(), config.deploy, mark, Vec::new());
    let claim = builder.claim()?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            stop.cancel();
        }
    });
    let requested_by = match origin {
        DeployOrigin::Desk => "terminal",
        DeployOrigin::Remote => "a script",
    };
    let mut shown = Vec::new();
    let mut last = None;
    let mut report = |status: &crate::protocol::deploy::BuildStatus| {
        // The status is shown as it changes; a broken pipe only loses the display.
        let _ = show_new(status, &mut shown, out);
        last = Some(status.clone());
    };
    let built = builder
        .run(&claim, &request, requested_by, &mut report, &cancel)
        .await;
    let manifest = match built {
        Ok(manifest) => manifest,
        Err(err) => {
            if let Some(last) = &last {
                show_failure(last, out)?;
            }
            return Err(err.into());
        }
    };
    writeln!(
        out,
        "added release {} ({})",
        manifest.id,
        manifest
            .source
            .as_ref()
            .map(|s| s.describe())
            .unwrap_or_default()
    )?;
    let releases = Releases::open(paths);
    if origin == DeployOrigin::Desk {
        let id = switch::switch_stopped(&releases, &Switch::Deploy(manifest.id))?;
        writeln!(
            out,
            "Chroxy is not running: release {id} will start as a canary at the next `chroxy start`"
        )?;
    } else {
        writeln!(out, "Chroxy is not running, and this was not run at a terminal: release {} was added but not made current; run `chroxy deploy` at a terminal to deploy it", manifest.id)?;
    }
    Ok(())
}

/// Prints each step's state once it changes: `build: running`, `build: passed (83.0 s)`.
fn show_new(
    build: &crate::protocol::deploy::BuildStatus,
    shown: &mut Vec<(
        crate::protocol::deploy::StepName,
        crate::protocol::deploy::StepState,
    )>,
    out: &mut impl Write,
) -> std::io::Result<()> {
    use crate::protocol::deploy::StepState;
    for step in &build.steps {
        let now = (step.name, step.state);
        if step.state == StepState::Waiting || shown.contains(&now) {
            continue;
        }
        shown.push(now);
        let state = serde_json::to_value(step.state).unwrap_or_default();
        let state = state.as_str().unwrap_or_default();
        match step.state {
            StepState::Running => writeln!(out, "{}: {state}…", step.name)?,
            _ => writeln!(
                out,
                "{}: {state} ({:.1} s)",
                step.name,
                step.duration_ms as f64 / 1000.0
            )?,
        }
    }
    Ok(())
}

/// The failed step's last lines, for the person to see why.
fn show_failure(
    build: &crate::protocol::deploy::BuildStatus,
    out: &mut impl Write,
) -> std::io::Result<()> {
    let failed = build
        .steps
        .iter()
        .find(|s| s.state == crate::protocol::deploy::StepState::Failed);
    if let Some(step) = failed {
        writeln!(out, "last lines of the {} step:", step.name)?;
        for line in &step.tail {
            writeln!(out, "  {line}")?;
        }
    }
    Ok(())
}

/// `chroxy deploy --approve|--refuse`: a person at the desk answers a remote deploy.
pub async fn answer_deploy(
    paths: &Paths,
    secrets: &Secrets,
    approve: bool,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    if DeployOrigin::of_this_terminal() != DeployOrigin::Desk {
        return Err(TerminalError::NotAtTerminal);
    }
    let info = instance::running(paths).ok_or(TerminalError::NoPendingDeploy)?;
    let admin = secrets.admin_token()?;
    let answer = remote::answer_deploy(info.status_port, &admin, approve).await?;
    writeln!(out, "{answer}")?;
    Ok(())
}

/// `chroxy rollback [--to <id>]`: back to known-good (or `to`), by the running
/// supervisor, or, with none running, as the release the next start runs.
pub async fn rollback(
    paths: &Paths,
    secrets: &Secrets,
    to: Option<ReleaseId>,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    match instance::running(paths) {
        Some(info) => {
            let body = to.map(|id| serde_json::json!({ "to": id }));
            act(&info, secrets, "rollback", body, out).await
        }
        None => {
            let id = switch::switch_stopped(&Releases::open(paths), &Switch::Rollback(to))?;
            writeln!(out, "Chroxy is not running: release {id} is now current and starts at the next `chroxy start`")?;
            Ok(())
        }
    }
}

/// `chroxy token rotate`: a new API token in the store, which a running supervisor's
/// workers are restarted with, and every device revoked: every paired phone must pair
/// again, whichever protocol it speaks (a v2 phone holds no token to replace).
pub async fn rotate_token(
    paths: &Paths,
    secrets: &Secrets,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    secrets.rotate_api_token()?;
    let revoked = Devices::new(paths).revoke_all(crate::protocol::now_ms())?;
    writeln!(out, "the API token was replaced and {revoked} paired device(s) revoked; phones must scan the new QR code (`chroxy pair --format terminal`)")?;
    match instance::running(paths) {
        Some(info) => act(&info, secrets, "reload-token", None, out).await,
        None => Ok(()),
    }
}

/// `chroxy token set-tunnel`: stores the named tunnel's token, read from `input` (a file
/// or a pipe: never a command-line argument, which every user of the machine can read).
pub fn set_tunnel_token(
    secrets: &Secrets,
    mut input: impl std::io::Read,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    let mut token = String::new();
    input.read_to_string(&mut token)?;
    if token.trim().is_empty() {
        return Err(TerminalError::NoTunnelToken);
    }
    secrets.set_tunnel_token(&token)?;
    writeln!(
        out,
        "stored the named tunnel's token; start with `chroxy start --tunnel named`"
    )?;
    Ok(())
}

/// `chroxy token show [--admin]`: the API token (or the status page's admin token).
pub fn show_token(
    secrets: &Secrets,
    admin: bool,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    let token = if admin {
        secrets.admin_token()?
    } else {
        secrets.api_token()?
    };
    writeln!(out, "{}", token.expose())?;
    Ok(())
}

/// `chroxy pair --format <format>`: the pairing for this home, written as asked. Its
/// URL is the running supervisor's tunnel's if it has one, else the configured public
/// URL, else its public port (or the default one).
pub async fn pair(
    paths: &Paths,
    secrets: &Secrets,
    format: Format,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    let config = Config::load(&paths.config_file())?;
    let (tunnel_url, port) = match instance::running(paths) {
        Some(info) => {
            let status = remote::status(info.status_port).await?;
            (status.tunnel.url, info.public_port)
        }
        None => (None, 8765),
    };
    let url = crate::pairing::public_url(
        tunnel_url.as_deref(),
        config.tunnel.public_url.as_deref(),
        port,
    );
    let key = *secrets.identity()?.public();
    let pairing = Pairing::new(&url, crate::environment::api_token(secrets)?, key)?
        .allowing_tokens(config.security.allow_token_auth)
        .with_fresh_code(&Devices::new(paths), crate::protocol::now_ms())?;
    writeln!(out, "{}", pairing.render(format)?)?;
    Ok(())
}

/// One action on the running supervisor, with the admin token; writes its answer.
async fn act(
    info: &InstanceInfo,
    secrets: &Secrets,
    action: &str,
    body: Option<serde_json::Value>,
    out: &mut impl Write,
) -> Result<(), TerminalError> {
    let admin = secrets.admin_token()?;
    let answer = remote::act(info.status_port, &admin, action, body).await?;
    writeln!(out, "{answer}")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tunnel_token_is_stored_from_input_and_an_empty_one_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let secrets = Secrets::files(&Paths::under(dir.path()));
        let mut out = Vec::new();
        let empty = set_tunnel_token(&secrets, &b"  \n"[..], &mut out).unwrap_err();
        assert!(matches!(empty, TerminalError::NoTunnelToken), "{empty}");
        assert!(
            empty.to_string().contains("set-tunnel < token.txt"),
            "{empty}"
        );
        assert!(secrets.tunnel_token().unwrap().is_none(), "nothing stored");

        set_tunnel_token(&secrets, &b"cf-token\n"[..], &mut out).unwrap();
        let stored = secrets.tunnel_token().unwrap().expect("stored");
        assert_eq!(stored.expose(), "cf-token");
        let said = String::from_utf8(out).unwrap();
        assert!(
            !said.contains("cf-token"),
            "the token is never echoed: {said}"
        );

        let mut out = Vec::new();
        show_token(&secrets, false, &mut out).unwrap();
        let shown = String::from_utf8(out).unwrap();
        assert_eq!(shown.trim(), secrets.api_token().unwrap().expose());
    }

    #[tokio::test]
    async fn with_no_supervisor_status_says_so_and_json_lists_the_releases() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let mut out = Vec::new();
        assert_eq!(
            status(&paths, false, &mut out).await.unwrap(),
            Presence::Stopped
        );
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "Chroxy is not running (start it with `chroxy start`)\n"
        );
        let mut out = Vec::new();
        assert_eq!(
            status(&paths, true, &mut out).await.unwrap(),
            Presence::Stopped
        );
        let json: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(json["state"], "stopped");
        assert_eq!(json["releases"]["current"], "0", "{json}");
    }

    #[tokio::test]
    async fn a_rollback_with_no_supervisor_to_a_release_that_is_not_there_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let secrets = Secrets::files(&paths);
        let mut out = Vec::new();
        let err = rollback(&paths, &secrets, Some("7-gone".into()), &mut out)
            .await
            .unwrap_err();
        assert!(
            matches!(&err, TerminalError::Release(ReleaseError::Unknown(id)) if id == "7-gone"),
            "{err}"
        );
        assert!(out.is_empty(), "nothing said done");
        assert_eq!(Releases::open(&paths).current().unwrap(), "0");
    }
}
