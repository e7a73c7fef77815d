//! The running app: the in-process supervisor (the same one `chroxy start` runs, started
//! through [`crate::launch`]), and the one-to-one mapping of the window's buttons and the
//! tray's items onto its actions. Nothing here decides anything the supervisor decides.

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::settings::Settings;
use super::view::View;
use crate::launch::{Launch, LaunchError, Started};
use crate::pairing::Pairing;
use crate::secrets::ApiToken;
use crate::store::Paths;
use crate::supervisor::handle::{ActionError, Handle};
use crate::supervisor::status::{Action, Status};
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
    /// The app cannot find its own program (to find `chroxy` beside it).
    #[error("cannot find this program: {0}")]
    ThisProgram(#[source] std::io::Error),
    /// The `chroxy` binary the workers run is missing.
    #[error("the `chroxy` program (it runs the workers) is neither beside {} nor on PATH; build it with `cargo build --release -p chroxy`", beside.display())]
    NoWorkerBinary {
        /// Where it was looked for first.
        beside: PathBuf,
    },
    /// What was chosen cannot start (no session directory, a named tunnel without its
    /// token, the port taken, …).
    #[error(transparent)]
    Launch(#[from] LaunchError),
}

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

/// How the app stops: in order, then (asked again) without waiting for drains.
#[derive(Clone)]
struct Quit {
    shutdown: CancellationToken,
    force: CancellationToken,
}

impl Quit {
    fn quit(&self) {
        if self.shutdown.is_cancelled() {
            tracing::warn!("quit again: not waiting for the drain");
            self.force.cancel();
        } else {
            tracing::info!("quitting: draining the worker, then the tunnel");
            self.shutdown.cancel();
        }
    }
}

/// Shared by the window's commands, the tray and the run loop (the shell keeps it as
/// its managed state).
pub struct Desktop {
    core: Core,
    paths: Paths,
    tunnel: Mutex<TunnelChoice>,
    quit: Quit,
    /// Set once the supervisor has stopped (or never started): the app may exit.
    stopped: Arc<AtomicBool>,
}

impl Desktop {
    /// Starts the supervisor; a failure is kept and shown, not fatal (the window says
    /// what is wrong and how to fix it). `on_stopped` runs once it has stopped for good.
    /// `launch` is what to start, or why there is nothing to start (no `chroxy`
    /// binary, no session directory): shown in the window like any other failure.
    pub async fn start(
        paths: Paths,
        tunnel: TunnelChoice,
        launch: Result<Launch, DesktopError>,
        on_stopped: impl FnOnce() + Send + 'static,
    ) -> Self {
        let quit = Quit {
            shutdown: CancellationToken::new(),
            force: CancellationToken::new(),
        };
        let stopped = Arc::new(AtomicBool::new(false));
        let started = match launch {
            Ok(launch) => crate::launch::start(launch, quit.shutdown.clone(), quit.force.clone())
                .await
                .map_err(DesktopError::from),
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
            paths,
            tunnel: Mutex::new(tunnel),
            quit,
            stopped,
        }
    }

    /// The directories of this home.
    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// Whether the app may exit now (the supervisor has stopped, or never ran).
    fn stopped(&self) -> bool {
        self.stopped.load(Ordering::SeqCst)
    }

    /// An exit was asked for (the last window closed, the event loop's `exit`): whether
    /// it may go ahead now. If not, this quits, and `on_stopped` exits once the
    /// supervisor has drained and stopped.
    pub fn exit_requested(&self) -> bool {
        let stopped = self.stopped();
        if !stopped {
            self.quit();
        }
        stopped
    }

    /// Quit: drain the worker, stop the tunnel, save state — the app exits when the
    /// supervisor has stopped. Asked again while draining, it stops waiting for drains.
    pub fn quit(&self) {
        self.quit.quit();
    }

    /// Quits as [`Desktop::quit`] on every SIGTERM and SIGINT (a logout, `kill`, a
    /// terminal), for as long as the future is polled.
    pub fn quit_on_signals(&self) -> impl Future<Output = ()> + Send + 'static {
        let quit = self.quit.clone();
        async move {
            use tokio::signal::unix::{signal, SignalKind};
            let (Ok(mut term), Ok(mut int)) = (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) else {
                tracing::error!("cannot listen for SIGTERM and SIGINT");
                return;
            };
            loop {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
                quit.quit();
            }
        }
    }

    /// The whole view, now.
    pub fn view(&self) -> View {
        let tunnel_choice = *self.tunnel.lock().unwrap_or_else(|e| e.into_inner());
        match &self.core {
            Core::Running(r) => View::running(
                r.handle.status(),
                r.pairing.borrow().as_ref(),
                tunnel_choice,
            ),
            Core::Failed(err) => View::failed(err, tunnel_choice),
        }
    }

    /// A receiver that wakes on every change of the status or the pairing (never, when
    /// the supervisor could not start).
    pub fn changes(&self) -> Changes {
        Changes(match &self.core {
            Core::Running(r) => Some((r.handle.watch(), r.pairing.clone())),
            Core::Failed(_) => None,
        })
    }

    fn running(&self) -> Result<&Running, DesktopError> {
        match &self.core {
            Core::Running(r) => Ok(r),
            Core::Failed(err) => Err(DesktopError::NotRunning(err.clone())),
        }
    }

    /// One supervisor action; the answer is worded for a person.
    pub async fn act(&self, action: Action) -> Result<String, DesktopError> {
        let handle = self.running()?.handle.clone();
        Ok(handle.act(action).await?)
    }

    /// Switches the tunnel (the supervisor resolves the choice, or says why it cannot
    /// run) and remembers the choice for the next start.
    pub async fn set_tunnel(&self, choice: TunnelChoice) -> Result<String, DesktopError> {
        let answer = self.act(Action::Tunnel { choice }).await?;
        *self.tunnel.lock().unwrap_or_else(|e| e.into_inner()) = choice;
        if let Err(err) = (Settings { tunnel: choice }).save(&self.paths) {
            tracing::warn!(%err, "cannot remember the tunnel choice");
        }
        Ok(answer)
    }

    /// The status page's admin token, for the window's "show" toggle.
    pub fn admin_token(&self) -> Result<String, DesktopError> {
        Ok(self.running()?.admin.expose().to_owned())
    }

    /// The pairing link, for the copy button.
    pub fn link(&self) -> Result<String, DesktopError> {
        self.running()?
            .pairing
            .borrow()
            .as_ref()
            .map(Pairing::link)
            .ok_or(DesktopError::NoLink)
    }

    /// The status page's address, for "Open status page".
    pub fn status_page(&self) -> Result<String, DesktopError> {
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
    /// Waits for the next change; `false` once the supervisor is gone (or never ran).
    pub async fn next(&mut self) -> bool {
        let Some((status, pairing)) = &mut self.0 else {
            return false;
        };
        tokio::select! {
            r = status.changed() => r.is_ok(),
            r = pairing.changed() => r.is_ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use tokio::sync::mpsc;

    use super::*;
    use crate::supervisor::handle::Request;

    /// A running app whose supervisor refuses a named tunnel (as one without its
    /// hostname is refused) and accepts any other action.
    fn running(paths: Paths) -> Desktop {
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
                pairing: watch::channel(None).1,
                admin: ApiToken::new("admin-token"),
            })),
            paths,
            tunnel: Mutex::new(TunnelChoice::Quick),
            quit: Quit {
                shutdown: CancellationToken::new(),
                force: CancellationToken::new(),
            },
            stopped: Arc::new(AtomicBool::new(false)),
        }
    }

    #[tokio::test]
    async fn a_tunnel_choice_is_shown_and_remembered_only_once_the_supervisor_took_it() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let desktop = running(paths.clone());

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
    async fn when_it_could_not_start_every_command_says_why_and_the_app_may_exit() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let why = DesktopError::NoWorkerBinary {
            beside: "/opt/chroxy/chroxy".into(),
        };
        let desktop = Desktop::start(paths.clone(), TunnelChoice::Named, Err(why), || {}).await;
        assert!(
            desktop.exit_requested(),
            "nothing runs: the app may exit at once"
        );
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
    }
}
