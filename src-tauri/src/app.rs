//! The running app: the in-process supervisor (the same one `chroxy start` runs, started
//! through `chroxy::launch`), and the one-to-one mapping of the window's buttons and the
//! tray's items onto its actions. Nothing here decides anything the supervisor decides.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use chroxy::devices::{Decision, Devices};
use chroxy::launch::{Launch, Started, TunnelChoice};
use chroxy::pairing::{Pairing, ShownPairing};
use chroxy::secrets::Secrets;
use chroxy::store::Paths;
use chroxy::supervisor::handle::Handle;
use chroxy::supervisor::status::Action;
use chroxy::token::ApiToken;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::error::ShellError;
use crate::settings::Settings;
use crate::view::View;

/// The supervisor as the app holds it, or why it could not start.
enum Core {
    Running(Box<Running>),
    Failed(String),
}

struct Running {
    handle: Handle,
    pairing: watch::Receiver<Option<Pairing>>,
    admin: ApiToken,
    secrets: Secrets,
    tunnel_config: chroxy::config::TunnelConfig,
}

/// Shared by the window's commands, the tray and the run loop (Tauri-managed state).
pub struct Desktop {
    core: Core,
    paths: Paths,
    tunnel: Mutex<TunnelChoice>,
    shutdown: CancellationToken,
    force: CancellationToken,
    /// Set once the supervisor has stopped (or never started): the app may exit.
    stopped: Arc<AtomicBool>,
    /// The device registry the window's buttons decide in.
    devices: Devices,
    /// The QR on screen and its one-time code, kept across redraws.
    shown: Mutex<ShownPairing>,
}

impl Desktop {
    /// Starts the supervisor; a failure is kept and shown, not fatal (the window says
    /// what is wrong and how to fix it). `on_stopped` runs once it has stopped for good.
    /// `launch` is what to start, or why there is nothing to start (no `chroxy`
    /// binary, no session directory): shown in the window like any other failure.
    pub async fn start(
        paths: Paths,
        tunnel: TunnelChoice,
        launch: Result<Launch, String>,
        on_stopped: impl FnOnce() + Send + 'static,
    ) -> Self {
        let shutdown = CancellationToken::new();
        let force = CancellationToken::new();
        let stopped = Arc::new(AtomicBool::new(false));
        let tunnel = Mutex::new(tunnel);
        let started = match launch {
            Ok(launch) => chroxy::launch::start(launch, shutdown.clone(), force.clone())
                .await
                .map_err(|err| err.to_string()),
            Err(err) => Err(err),
        };
        let core = match started {
            Ok(Started {
                supervisor,
                pairing,
                admin,
                secrets,
                config,
            }) => {
                let running = Running {
                    handle: supervisor.handle(),
                    pairing,
                    admin,
                    secrets,
                    tunnel_config: config.tunnel,
                };
                let flag = stopped.clone();
                tokio::spawn(async move {
                    supervisor.wait().await;
                    flag.store(true, Ordering::SeqCst);
                    on_stopped();
                });
                Core::Running(Box::new(running))
            }
            Err(err) => {
                tracing::error!(%err, "the supervisor could not start");
                stopped.store(true, Ordering::SeqCst);
                Core::Failed(err.to_string())
            }
        };
        Self {
            core,
            devices: Devices::new(&paths),
            shown: Mutex::new(ShownPairing::default()),
            paths,
            tunnel,
            shutdown,
            force,
            stopped,
        }
    }

    /// The directories of this home.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Whether the app may exit now (the supervisor has stopped, or never ran).
    pub fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// Quit: drain the worker, stop the tunnel, save state — the app exits when the
    /// supervisor has stopped. Asked again while draining, it stops waiting for drains.
    pub fn quit(&self) {
        if self.shutdown.is_cancelled() {
            tracing::warn!("quit again: not waiting for the drain");
            self.force.cancel();
        } else {
            tracing::info!("quitting: draining the worker, then the tunnel");
            self.shutdown.cancel();
        }
    }

    /// The whole view, now.
    pub fn view(&self) -> View {
        let tunnel_choice = *self.tunnel.lock().unwrap_or_else(|e| e.into_inner());
        match &self.core {
            Core::Running(r) => View::running(
                r.handle.status(),
                self.shown_pairing(r).as_ref(),
                tunnel_choice,
            ),
            Core::Failed(err) => View::failed(err, tunnel_choice),
        }
    }

    /// The pairing with the one-time code the QR shows (without one if the registry
    /// cannot be written: such a phone then waits for approval).
    fn shown_pairing(&self, r: &Running) -> Option<Pairing> {
        let base = r.pairing.borrow().clone()?;
        let mut shown = self.shown.lock().unwrap_or_else(|e| e.into_inner());
        match shown.current(&base, &self.devices, chroxy::protocol::now_ms()) {
            Ok(pairing) => Some(pairing),
            Err(err) => {
                tracing::warn!(%err, "cannot mint a pairing code");
                Some(base)
            }
        }
    }

    /// The owner's decision about a device, worded for a person.
    pub fn decide_device(&self, decision: Decision, id: &str) -> Result<String, ShellError> {
        Ok(self
            .devices
            .decide(decision, id, chroxy::protocol::now_ms())?)
    }

    /// A receiver that wakes on every change of the status or the pairing.
    pub fn changes(&self) -> Option<Changes> {
        match &self.core {
            Core::Running(r) => Some(Changes {
                status: r.handle.watch(),
                pairing: r.pairing.clone(),
            }),
            Core::Failed(_) => None,
        }
    }

    fn running(&self) -> Result<&Running, ShellError> {
        match &self.core {
            Core::Running(r) => Ok(r),
            Core::Failed(err) => Err(ShellError::NotRunning(err.clone())),
        }
    }

    /// One supervisor action; the answer is worded for a person.
    pub async fn act(&self, action: Action) -> Result<String, ShellError> {
        let handle = self.running()?.handle.clone();
        Ok(handle.act(action).await?)
    }

    /// Switches the tunnel (and remembers the choice for the next start).
    pub async fn set_tunnel(&self, choice: TunnelChoice) -> Result<String, ShellError> {
        let r = self.running()?;
        let spec = chroxy::launch::tunnel_spec(&self.paths, &r.secrets, &r.tunnel_config, choice)?;
        let answer = self.act(Action::Tunnel { spec }).await?;
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = choice;
        if let Err(err) = (Settings { tunnel: choice }).save(&self.paths) {
            tracing::warn!(%err, "cannot remember the tunnel choice");
        }
        Ok(answer)
    }

    /// The status page's admin token, for the window's "show" toggle.
    pub fn admin_token(&self) -> Result<String, ShellError> {
        Ok(self.running()?.admin.expose().to_owned())
    }

    /// The pairing link, for the copy button.
    pub fn link(&self) -> Result<String, ShellError> {
        self.shown_pairing(self.running()?)
            .as_ref()
            .map(Pairing::link)
            .ok_or(ShellError::NoLink)
    }

    /// The status page's address, for "Open status page".
    pub fn status_page(&self) -> Result<String, ShellError> {
        let r = self.running().map_err(|_| ShellError::NoStatusPage)?;
        Ok(format!(
            "http://127.0.0.1:{}/",
            r.handle.status().status_port
        ))
    }
}

/// How often the view is drawn again without a change, so a pairing code about to
/// expire is replaced on screen (a used one is noticed at the device list's change).
const REDRAW_EVERY: std::time::Duration = std::time::Duration::from_secs(30);

/// Wakes on any change a view shows.
pub struct Changes {
    status: watch::Receiver<chroxy::supervisor::status::Status>,
    pairing: watch::Receiver<Option<Pairing>>,
}

impl Changes {
    /// Waits for the next change; `false` once the supervisor is gone.
    pub async fn next(&mut self) -> bool {
        tokio::select! {
            r = self.status.changed() => r.is_ok(),
            r = self.pairing.changed() => r.is_ok(),
            () = tokio::time::sleep(REDRAW_EVERY) => true,
        }
    }
}
