//! The running app: the in-process supervisor (the same one `chroxy start` runs, started
//! through [`crate::launch`]), and the one-to-one mapping of the window's buttons and the
//! tray's items onto its actions. Nothing here decides anything the supervisor decides.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::settings::Settings;
use super::view::View;
use crate::devices::{Decision, Devices, DevicesError};
use crate::launch::{Launch, LaunchError, Started, StopSwitch};
use crate::pairing::{Pairing, ShownPairing};
use crate::store::Paths;
use crate::supervisor::handle::{ActionError, Handle};
use crate::supervisor::status::{Action, Status};
use crate::token::ApiToken;
use crate::tunnel::TunnelChoice;

/// Why the app cannot do what was asked (or could not start), worded for the person who
/// clicked: the window shows it as text.
#[derive(Debug, thiserror::Error)]
pub enum DesktopError {
    /// The supervisor could not start (the window says why).
    #[error("Chroxy is not running: {0}")]
    NotRunning(String),
    /// The supervisor refused the action or could not carry it out.
    #[error(transparent)]
    Action(#[from] ActionError),
    /// The tunnel has no URL yet, so there is no link to copy.
    #[error("no link yet: the tunnel has no URL")]
    NoLink,
    /// The supervisor, and so its status page, is not running.
    #[error("the status page is not running")]
    NoStatusPage,
    /// The device registry refused or failed a decision.
    #[error(transparent)]
    Devices(#[from] DevicesError),
    /// The window sent a command an argument it cannot read (the page and the app
    /// disagree: a bug, not a person's mistake).
    #[error("invalid args `{key}` for command `{command}`: {why}")]
    BadArgs {
        /// The command.
        command: String,
        /// The argument.
        key: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

/// How often the view is drawn again without a change, so a pairing code about to
/// expire is replaced on screen (a used one is noticed at the device list's change).
const REDRAW_EVERY: Duration = Duration::from_secs(30);

/// The supervisor as the app holds it, or why it could not start.
enum Core {
    Running(Box<Running>),
    Failed(String),
}

struct Running {
    handle: Handle,
    pairing: watch::Receiver<Option<Pairing>>,
    admin: ApiToken,
}

/// Shared by the window's commands, the tray and the run loop (the shell keeps it as
/// its managed state).
pub struct Desktop {
    core: Core,
    paths: Paths,
    tunnel: Mutex<TunnelChoice>,
    /// Quit, a signal and the exit request all press it: one way to stop.
    stop: StopSwitch,
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
        launch: Result<Launch, LaunchError>,
        on_stopped: impl FnOnce() + Send + 'static,
    ) -> Self {
        let stop = StopSwitch::new();
        let started = match launch {
            Ok(launch) => crate::launch::start(launch, stop.shutdown(), stop.force()).await,
            Err(err) => Err(err),
        };
        let core = match started {
            Ok(Started {
                supervisor,
                pairing,
                admin,
            }) => {
                let running = Running {
                    handle: supervisor.handle(),
                    pairing,
                    admin,
                };
                tokio::spawn(async move {
                    supervisor.wait().await;
                    on_stopped();
                });
                Core::Running(Box::new(running))
            }
            Err(err) => {
                tracing::error!(%err, "the supervisor could not start");
                // Nothing to drain: Quit (or a signal) ends the app at once.
                let quit = stop.shutdown();
                tokio::spawn(async move {
                    quit.cancelled().await;
                    on_stopped();
                });
                Core::Failed(err.to_string())
            }
        };
        Self {
            core,
            devices: Devices::new(&paths),
            shown: Mutex::new(ShownPairing::default()),
            paths,
            tunnel: Mutex::new(tunnel),
            stop,
        }
    }

    /// The directories of this home.
    pub(super) fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Quit: drain the worker, stop the tunnel, save state — the app exits when the
    /// supervisor has stopped. Asked again while draining, it stops waiting for drains.
    pub fn quit(&self) {
        self.stop.press();
    }

    /// Quits as [`Desktop::quit`] on every SIGTERM and SIGINT (a logout, `kill`, a
    /// terminal), from when the future runs on the async runtime.
    pub fn quit_on_signals(&self) -> impl Future<Output = ()> + Send + 'static {
        let stop = self.stop.clone();
        async move { stop.press_on_signals() }
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
        match shown.current(&base, &self.devices, crate::protocol::now_ms()) {
            Ok(pairing) => Some(pairing),
            Err(err) => {
                tracing::warn!(%err, "cannot mint a pairing code");
                Some(base)
            }
        }
    }

    /// The owner's decision about a device, worded for a person. It reads and writes
    /// the registry file: call it off the main thread.
    pub(super) fn decide_device(
        &self,
        decision: Decision,
        id: &str,
    ) -> Result<String, DesktopError> {
        let now = crate::protocol::now_ms();
        Ok(self.devices.decide(decision, id, now)?)
    }

    /// The owner names a device as they know it, worded for a person. Off the main
    /// thread, as [`Desktop::decide_device`].
    pub(super) fn rename_device(&self, id: &str, name: &str) -> Result<String, DesktopError> {
        let now = crate::protocol::now_ms();
        let device = self.devices.rename(id, name, now)?;
        let name = device.name.unwrap_or_default();
        Ok(format!("device {} is now called \"{name}\"", device.id))
    }

    /// A receiver that wakes on every change of the status or the pairing, and every
    /// [`REDRAW_EVERY`] (never, when the supervisor could not start).
    pub fn changes(&self) -> Changes {
        Changes(match &self.core {
            Core::Running(r) => Some((r.handle.watch(), r.pairing.clone())),
            Core::Failed(_) => None,
        })
    }

    /// What shows the supervisor's notices on the desktop ([`super::notify`]) for as
    /// long as it runs: to be spawned by the shell, which opens the window on a click.
    /// `None` when the supervisor could not start.
    pub fn desktop_notifications(
        &self,
        on_click: impl Fn() + Send + 'static,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let handle = self.running().ok()?.handle.clone();
        let mut notices = handle.notices();
        let stopping = self.stop.shutdown();
        Some(async move {
            let Some(notifier) = super::notify::Notifier::connect(on_click).await else {
                return;
            };
            loop {
                let next = tokio::select! {
                    // The app stops: so do its notifications (the notifier's click
                    // listener with it).
                    _ = stopping.cancelled() => return,
                    next = notices.recv() => next,
                };
                let notice = match next {
                    Ok(notice) => notice,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "desktop notifications fell behind");
                        continue;
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                let phones = handle.status().clients;
                if let Some((summary, body)) = super::notify::words(&notice, phones) {
                    notifier.show(&summary, &body).await;
                }
            }
        })
    }

    fn running(&self) -> Result<&Running, DesktopError> {
        match &self.core {
            Core::Running(r) => Ok(r),
            Core::Failed(err) => Err(DesktopError::NotRunning(err.clone())),
        }
    }

    /// One supervisor action; the answer is worded for a person.
    pub(super) async fn act(&self, action: Action) -> Result<String, DesktopError> {
        let handle = self.running()?.handle.clone();
        Ok(handle.act(action).await?)
    }

    /// Switches the tunnel (the supervisor resolves the choice, or says why it cannot
    /// run) and remembers the choice for the next start.
    pub(super) async fn set_tunnel(&self, choice: TunnelChoice) -> Result<String, DesktopError> {
        let answer = self.act(Action::Tunnel { choice }).await?;
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = choice;
        if let Err(err) = (Settings { tunnel: choice }).save(&self.paths) {
            tracing::warn!(%err, "cannot remember the tunnel choice");
        }
        Ok(answer)
    }

    /// The status page's admin token, for the window's "show" toggle.
    pub(super) fn admin_token(&self) -> Result<String, DesktopError> {
        Ok(self.running()?.admin.expose().to_owned())
    }

    /// The pairing link the QR shows, for the copy button.
    pub(super) fn link(&self) -> Result<String, DesktopError> {
        self.shown_pairing(self.running()?)
            .as_ref()
            .map(Pairing::link)
            .ok_or(DesktopError::NoLink)
    }

    /// The status page's address, for "Open status page".
    pub(super) fn status_page(&self) -> Result<String, DesktopError> {
        let r = self.running().map_err(|_| DesktopError::NoStatusPage)?;
        Ok(format!(
            "http://127.0.0.1:{}/",
            r.handle.status().status_port
        ))
    }
}

/// Wakes on any change a view shows: of the status, or of the pairing.
pub struct Changes(Option<(watch::Receiver<Status>, watch::Receiver<Option<Pairing>>)>);

impl Changes {
    /// Calls `redraw` at every change until the supervisor is gone (never, if it never
    /// ran): how the shell's window and tray follow the app. The changes since
    /// [`Desktop::changes`] was called are not missed.
    pub async fn each(mut self, mut redraw: impl FnMut()) {
        while self.next().await {
            redraw();
        }
    }

    /// Waits for the next change (or [`REDRAW_EVERY`]); `false` once the supervisor is
    /// gone (or never ran).
    async fn next(&mut self) -> bool {
        let Some((status, pairing)) = &mut self.0 else {
            return false;
        };
        tokio::select! {
            r = status.changed() => r.is_ok(),
            r = pairing.changed() => r.is_ok(),
            () = tokio::time::sleep(REDRAW_EVERY) => true,
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::environment::EnvironmentError;
    use crate::supervisor::handle::Request;

    /// A running app whose supervisor refuses a named tunnel (as one without its
    /// hostname is refused) and accepts any other action; its phones pair with `pairing`.
    pub(in crate::desktop) fn running(paths: Paths, pairing: Option<Pairing>) -> Desktop {
        let (status, watched) = watch::channel(Status::new(8765, 8766, false, "file"));
        let (actions, mut requests) = mpsc::channel::<Request>(1);
        tokio::spawn(async move {
            let _status = status;
            while let Some(Request { action, reply }) = requests.recv().await {
                let _ = reply.send(match action {
                    Action::Tunnel {
                        choice: TunnelChoice::Named,
                    } => Err(ActionError::Refused(
                        "a named tunnel needs its hostname".into(),
                    )),
                    other => Ok(format!("done: {other:?}")),
                });
            }
        });
        Desktop {
            core: Core::Running(Box::new(Running {
                handle: Handle::new(watched, actions),
                pairing: watch::channel(pairing).1,
                admin: ApiToken::new("admin-token"),
            })),
            devices: Devices::new(&paths),
            shown: Mutex::new(ShownPairing::default()),
            paths,
            tunnel: Mutex::new(TunnelChoice::Quick),
            stop: StopSwitch::new(),
        }
    }

    #[tokio::test]
    async fn a_tunnel_choice_is_shown_and_remembered_only_once_the_supervisor_took_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let desktop = running(paths.clone(), None);

        let err = desktop.set_tunnel(TunnelChoice::Named).await.unwrap_err();
        assert_eq!(err.to_string(), "a named tunnel needs its hostname");
        assert_eq!(desktop.view().tunnel_choice, TunnelChoice::Quick);
        assert_eq!(Settings::load(&paths).tunnel, TunnelChoice::Quick);
        assert!(!paths.state_dir().join("desktop.json").exists());

        desktop.set_tunnel(TunnelChoice::None).await.unwrap();
        assert_eq!(desktop.view().tunnel_choice, TunnelChoice::None);
        assert_eq!(Settings::load(&paths).tunnel, TunnelChoice::None);
        // No tunnel URL yet: no link to copy, and the answer says so.
        assert_eq!(
            desktop.link().unwrap_err().to_string(),
            "no link yet: the tunnel has no URL"
        );
        assert_eq!(desktop.status_page().unwrap(), "http://127.0.0.1:8766/");
    }

    #[tokio::test]
    async fn the_qr_and_the_copied_link_carry_one_code_kept_across_redraws() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let base = Pairing::new(
            "https://a.trycloudflare.com",
            ApiToken::new("api-token"),
            [3; 32],
        );
        let desktop = running(paths.clone(), Some(base.unwrap()));

        let shown = desktop
            .view()
            .pairing
            .expect("a QR once the tunnel has a URL");
        let payload = crate::pairing::decode_link(&shown.link).unwrap();
        assert!(payload.code.is_some(), "a one-time code: {shown:?}");
        assert_eq!(desktop.view().pairing.unwrap().link, shown.link, "redrawn");
        assert_eq!(desktop.link().unwrap(), shown.link, "copied");
        // The window's device buttons decide in this home's registry, and say why not.
        let err = desktop
            .decide_device(Decision::Approve, "nobody")
            .unwrap_err();
        assert!(matches!(err, DesktopError::Devices(_)), "{err}");
        assert!(
            err.to_string().contains("there is no device `nobody`"),
            "{err}"
        );
        // And its names: a device is renamed, an empty name is refused by name.
        let registry = Devices::new(&paths);
        let id = match registry
            .admit(&crate::devices::Knock::default(), crate::protocol::now_ms())
            .unwrap()
        {
            crate::devices::Admission::Pending { id, .. } => id,
            other => panic!("a device without key waits: {other:?}"),
        };
        let said = desktop.rename_device(&id, "Anna's phone").unwrap();
        assert_eq!(said, format!("device {id} is now called \"Anna's phone\""));
        let err = desktop.rename_device(&id, " \n ").unwrap_err();
        assert!(err.to_string().contains("visible character"), "{err}");
        let listed = registry.list(crate::protocol::now_ms()).unwrap();
        assert_eq!(listed[0].name.as_deref(), Some("Anna's phone"));
    }

    #[tokio::test]
    async fn when_it_could_not_start_every_command_says_why_and_the_app_may_exit() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let why = LaunchError::from(EnvironmentError::NoWorkerBinary {
            beside: "/opt/chroxy/chroxy".into(),
        });
        let (exit, exited) = tokio::sync::oneshot::channel();
        let desktop = Desktop::start(paths.clone(), TunnelChoice::Named, Err(why), move || {
            let _ = exit.send(());
        })
        .await;
        assert!(!desktop.changes().next().await, "nothing will change");
        let view = desktop.view();
        assert_eq!(view.status, None);
        assert!(
            view.summary.starts_with(
                "Chroxy could not start: the `chroxy` program (it runs the workers) is neither beside /opt/chroxy/chroxy nor on PATH"
            ),
            "{}",
            view.summary
        );
        let not_running = format!("Chroxy is not running: {}", view.error.unwrap());
        assert_eq!(
            desktop.act(Action::Restart).await.unwrap_err().to_string(),
            not_running
        );
        assert_eq!(
            desktop
                .set_tunnel(TunnelChoice::None)
                .await
                .unwrap_err()
                .to_string(),
            not_running
        );
        assert_eq!(desktop.admin_token().unwrap_err().to_string(), not_running);
        assert_eq!(desktop.link().unwrap_err().to_string(), not_running);
        assert!(matches!(
            desktop.status_page(),
            Err(DesktopError::NoStatusPage)
        ));
        assert_eq!(desktop.view().tunnel_choice, TunnelChoice::Named);
        // Nothing runs, nothing to drain: Quit ends the app at once.
        desktop.quit();
        exited.await.expect("told the app to exit");
    }
}
