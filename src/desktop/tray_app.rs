//! The tray app's process, what `chroxy-desktop` runs until Quit: the supervisor
//! ([`Desktop`]), the icon and its menu ([`TrayIcon`]), desktop notifications, and the
//! window as a process of its own ([`Window`]) while it is shown. No toolkit: all of it
//! speaks D-Bus or X11 directly, so in the tray the app weighs what its supervisor
//! does, not what a browser engine does.

use std::sync::Arc;

use anyhow::Context as _;
use clap::Parser as _;
use serde_json::Value;
use tokio::sync::{mpsc, Notify};

use super::ask::{Ask, Reply};
use super::desk::{Clipboard, Instance, LoginItem};
use super::tray::{plan, Item};
use super::tray_icon::TrayIcon;
use super::window::{Answerer, Window};
use super::{Args, Boot, Desktop};
use crate::store::Paths;

/// The app as a person starts it: from the command line, on the desktop, at login.
pub fn run() -> anyhow::Result<()> {
    crate::process::keep_memory_private();
    let args = Args::parse();
    let paths = Paths::resolve(args.home.clone())?;
    let _log_guard = super::init_logging(&paths);
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(serve(args, paths))
}

/// The running app, shared by the menu's clicks, the window's commands and the
/// notifications.
struct App {
    desktop: Desktop,
    window: Window,
    icon: Option<TrayIcon>,
    login: Option<LoginItem>,
    clipboard: Clipboard,
}

async fn serve(args: Args, paths: Paths) -> anyhow::Result<()> {
    // First: a second launch hands over to this one and exits 0 before doing anything.
    let asked = Arc::new(Notify::new());
    let later = asked.clone();
    let instance = Instance::claim(move || {
        tracing::info!("a second launch asked for the window");
        later.notify_one();
    })
    .await;
    if let Instance::Second = instance {
        return Ok(());
    }
    let boot = tokio::task::spawn_blocking(move || Boot::new(args, paths))
        .await
        .context("reading the app's settings")?;
    let minimized = boot.minimized;
    let stopped = Arc::new(Notify::new());
    let on_stopped = stopped.clone();
    let desktop = Desktop::start(boot.paths, boot.tunnel, boot.launch, move || {
        on_stopped.notify_one()
    })
    .await;
    // Listening before the window shows: a SIGTERM from then on (a logout while the
    // app starts) is a Quit, never the default death that would leave workers behind.
    desktop.quit_on_signals().await;
    let me = std::env::current_exe().context("finding the tray app's own path")?;
    let login = LoginItem::new(&me)
        .inspect_err(|err| tracing::warn!(%err, "Start at login is not available"))
        .ok();
    let (clicks, mut clicked) = mpsc::unbounded_channel();
    let autostart = login.as_ref().is_some_and(LoginItem::is_on);
    let icon = TrayIcon::spawn(plan(&desktop.view(), autostart), clicks)
        .await
        .inspect_err(|err| tracing::warn!(%err, "no tray icon"))
        .ok();
    let app = Arc::new_cyclic(|app: &std::sync::Weak<App>| {
        let app = app.clone();
        let answer: Answerer = Arc::new(move |command: String, args: Value| {
            let app = app.clone();
            Box::pin(async move {
                let app = app.upgrade().ok_or("Chroxy is quitting")?;
                app.invoke(&command, &args).await
            })
        });
        App {
            window: Window::new(Window::installed_program(), answer),
            desktop,
            icon,
            login,
            clipboard: Clipboard::default(),
        }
    });
    if !minimized {
        app.show(false).await;
    }
    // What phones are told of that the desk should see too; a click opens the window.
    let shown = app.clone();
    let notified = app.desktop.desktop_notifications(move || {
        tracing::info!("a desktop notification was clicked: showing the window");
        let app = shown.clone();
        tokio::spawn(async move { app.show(false).await });
    });
    if let Some(notified) = notified {
        tokio::spawn(notified);
    }
    // The view, whole, to the window (when there is one) and the tray at every change:
    // one redraw at a time, each of the view as it is then (changes that come while one
    // is drawn make one more), so an older view never lands last.
    let changed = Arc::new(Notify::new());
    let change = changed.clone();
    tokio::spawn(app.desktop.changes().each(move || change.notify_one()));
    let following = app.clone();
    tokio::spawn(async move {
        loop {
            changed.notified().await;
            following.redraw().await;
        }
    });
    loop {
        tokio::select! {
            Some(item) = clicked.recv() => {
                let app = app.clone();
                tokio::spawn(async move { app.clicked(item).await });
            }
            () = asked.notified() => {
                let app = app.clone();
                tokio::spawn(async move { app.show(false).await });
            }
            // Quit, a signal, or a supervisor that never started and an exit asked.
            () = stopped.notified() => break,
        }
    }
    drop(instance);
    Ok(())
}

impl App {
    /// The window's command `command`, as its page's `invoke` resolves (or rejects).
    async fn invoke(&self, command: &str, args: &Value) -> Result<Value, String> {
        let ask = match Ask::from_window(command, args) {
            Some(Ok(ask)) => ask,
            Some(Err(err)) => return Err(err.to_string()),
            None => return Err(format!("command {command} not found")),
        };
        let reply = self.perform(ask).await.map_err(|err| err.to_string())?;
        serde_json::to_value(reply).map_err(|err| err.to_string())
    }

    /// A click on the menu: carried out, its sentence or refusal to the window (and
    /// the log), as a button's.
    async fn clicked(&self, item: Item) {
        let answer = match self.perform(item.ask()).await {
            Ok(Reply::Said(sentence)) => Ok(sentence),
            Ok(_) => return,
            Err(err) => Err(err.to_string()),
        };
        match &answer {
            Ok(message) => tracing::info!(%message, "action done"),
            Err(message) => tracing::warn!(%message, "action refused"),
        }
        self.window.emit("answer", &answer);
    }

    /// Carries out `ask`: the app's answer, with what only the desktop can do for it done.
    async fn perform(&self, ask: Ask) -> anyhow::Result<Reply> {
        let redraw = ask.redraws_tray();
        let done = async {
            match self.desktop.answer(ask).await? {
                Reply::Copy(link) => {
                    let copied = self.clipboard.copy(link);
                    copied.map_err(|err| anyhow::anyhow!("cannot copy to the clipboard: {err}"))?;
                    return Ok(Reply::Said("pairing link copied".into()));
                }
                Reply::Open { what, target } => {
                    let opened = super::desk::open(&target);
                    opened.map_err(|err| anyhow::anyhow!("cannot open {what}: {err}"))?;
                }
                Reply::Show { qr } => self.window.show(qr).await?,
                Reply::ToggleAutostart => {
                    let login = self
                        .login
                        .as_ref()
                        .context("Start at login is not available here")?;
                    let done = login.toggle();
                    done.map_err(|err| anyhow::anyhow!("cannot change Start at login: {err}"))?;
                }
                said => return Ok(said),
            }
            Ok(Reply::Done)
        };
        let done = done.await;
        if redraw {
            self.redraw().await;
        }
        done
    }

    /// Brings the window up; a failure is logged (nobody clicked: a launch, a
    /// notification).
    async fn show(&self, qr: bool) {
        if let Err(err) = self.window.show(qr).await {
            tracing::error!(%err, "cannot show the window");
        }
    }

    /// The view to the tray and the window.
    async fn redraw(&self) {
        let view = self.desktop.view();
        if let Some(icon) = &self.icon {
            let autostart = self.login.as_ref().is_some_and(LoginItem::is_on);
            icon.show(plan(&view, autostart)).await;
        }
        self.window.emit("view", &view);
    }
}
