//! Deploy from the phone (docs/protocol.md "Deploy from the phone"): a paired device
//! asks the supervisor to build the session's directory and deploy it; every phone is
//! told how the build and its deploy go. The worker decides nothing: it names the
//! directory and the device, and says whether the person marked that device as allowed
//! to deploy — the supervisor makes a release from anyone else wait for approval at
//! the desk.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::{Audience, ClientId, Hub, Refusal};
use crate::control::DeployNews;
use crate::protocol::{ErrorCode, ServerMsg};

/// A phone's request, on its way to the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeployAsk {
    /// The session's directory.
    pub source: PathBuf,
    /// The device's name.
    pub requested_by: String,
    /// The device may deploy without approval.
    pub allowed: bool,
    /// Build the directory's uncommitted changes too.
    pub allow_dirty: bool,
}

/// A supervised worker's way to ask its supervisor for a deploy.
#[derive(Debug, Clone)]
pub struct DeployLink {
    /// To the control channel.
    pub asks: tokio::sync::mpsc::Sender<DeployAsk>,
    /// Who may deploy.
    pub devices: crate::devices::Devices,
    /// The last news and when it came: a phone that connects while a deploy goes on
    /// (the one that asked, coming back after the switch) is told where it is.
    pub last: Arc<Mutex<Option<(Instant, ServerMsg)>>>,
}

impl DeployLink {
    /// A link through `asks` for the devices of `devices`.
    pub fn new(
        asks: tokio::sync::mpsc::Sender<DeployAsk>,
        devices: crate::devices::Devices,
    ) -> Self {
        Self {
            asks,
            devices,
            last: Arc::default(),
        }
    }
}

/// News older than this is history: a phone connecting later is not shown it.
const NEWS_KEPT: Duration = Duration::from_secs(10 * 60);

const UNSUPERVISED: &str = "this Chroxy runs without a supervisor (`chroxy worker` by hand): nothing here can deploy; start it with `chroxy start` or the tray app";
const NO_DEVICE: &str = "deploying needs a paired device, and this connection has none";

impl Hub {
    /// `deploy_source`: hands the session's directory to the supervisor.
    pub(super) async fn deploy_request(
        &self,
        client: &ClientId,
        request: crate::protocol::DeploySource,
    ) -> Result<(), Refusal> {
        let session = request.session_id;
        let unavailable = |why: &str| Refusal::new(ErrorCode::DeployUnavailable, why);
        let link = self
            .cfg
            .deploy
            .clone()
            .ok_or_else(|| unavailable(UNSUPERVISED))?;
        let device = self
            .clients
            .device(client)
            .ok_or_else(|| unavailable(NO_DEVICE))?;
        let (session_id, _) = self.target(client, Some(session))?;
        let source = self
            .lock()
            .iter()
            .find(|e| e.id == session_id)
            .map(|e| PathBuf::from(&e.info.lock().unwrap_or_else(|p| p.into_inner()).cwd))
            .ok_or_else(|| super::not_found(&session_id))?;
        let devices = link.devices.clone();
        let now = crate::protocol::now_ms();
        let listed = tokio::task::spawn_blocking(move || devices.list(now))
            .await
            .ok()
            .and_then(Result::ok)
            .and_then(|list| list.into_iter().find(|d| d.id == device))
            .ok_or_else(|| unavailable("this device is not in the registry any more"))?;
        let ask = DeployAsk {
            source: source.clone(),
            requested_by: listed.name.clone().unwrap_or_else(|| listed.id.clone()),
            allowed: listed.may_deploy,
            allow_dirty: request.allow_dirty,
        };
        link.asks.try_send(ask).map_err(|_| {
            unavailable("a deploy request is already on its way; wait for its answer")
        })?;
        tracing::info!(device = %listed.id, allowed = listed.may_deploy, "a phone asked for a deploy");
        self.clients.send_msg(
            client,
            &ServerMsg::DeployRequested {
                session_id,
                source: source.display().to_string(),
                needs_approval: !listed.may_deploy,
            },
        );
        Ok(())
    }

    /// What the supervisor says of a build and its deploy, to every phone.
    pub fn deploy_news(&self, news: DeployNews) {
        let msg = match news {
            DeployNews::Status(build) => ServerMsg::DeployStatus {
                build: Some(build),
                refused: None,
            },
            DeployNews::Refused(why) => ServerMsg::DeployStatus {
                build: None,
                refused: Some(why),
            },
        };
        self.clients.publish(Audience::All, &msg);
        if let Some(link) = &self.cfg.deploy {
            *link.last.lock().unwrap_or_else(|p| p.into_inner()) = Some((Instant::now(), msg));
        }
    }

    /// The deploy news of the last minutes, for a phone that just connected.
    pub(super) fn recent_deploy_news(&self) -> Option<ServerMsg> {
        let link = self.cfg.deploy.as_ref()?;
        let last = link.last.lock().unwrap_or_else(|p| p.into_inner());
        last.as_ref()
            .filter(|(at, _)| at.elapsed() < NEWS_KEPT)
            .map(|(_, msg)| msg.clone())
    }
}
