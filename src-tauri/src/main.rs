//! Chroxy's tray app: a thin shell over the library. It runs the same supervisor as
//! `chroxy start`, in-process, and wires it to a window (QR code, status, releases,
//! buttons) and a tray icon with a menu. Window commands and tray items map one-to-one
//! onto supervisor actions; supervisor changes reach the window as events.

#![forbid(unsafe_code)]

mod app;
mod settings;
mod tray;
mod view;

use std::path::PathBuf;

use anyhow::Context;
use chroxy::launch::{StartArgs, TunnelChoice};
use chroxy::store::Paths;
use chroxy::supervisor::status::Action;
use clap::Parser;
use tauri::{AppHandle, Emitter, Manager, RunEvent, State, WebviewWindowBuilder, WindowEvent};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_opener::OpenerExt as _;

use app::Desktop;
use settings::Settings;
use tray::{item, Tray};
use view::View;

/// Chroxy in the tray: scan the QR code with your phone, watch and steer Claude Code.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Keep every file (config, token, sessions, logs) under this directory.
    #[arg(long, env = "CHROXY_HOME")]
    home: Option<PathBuf>,
    #[command(flatten)]
    start: StartArgs,
    /// Start with the window hidden: only the tray icon (how "Start at login" starts it).
    #[arg(long)]
    minimized: bool,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let paths = Paths::resolve(cli.home.clone())?;
    let _log_guard = init_logging(&paths);
    let settings = Settings::load(&paths);
    let tunnel = cli.start.tunnel.unwrap_or(settings.tunnel);
    let launch = worker_binary().and_then(|installed| {
        cli.start
            .launch(cli.home, paths.clone(), tunnel, installed)
            .map_err(|err| err.to_string())
    });
    let minimized = cli.minimized;

    tauri::Builder::default()
        // First: a second launch hands over to this one and exits 0 before doing anything.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            tracing::info!("a second launch asked for the window");
            show_window(app);
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimized"]),
        ))
        .plugin(tauri_plugin_clipboard_manager::init())
        .plugin(tauri_plugin_opener::init())
        .invoke_handler(tauri::generate_handler![
            view,
            rollback,
            reconnect,
            restart,
            set_tunnel,
            admin_token,
            copy_link,
            open_status_page,
        ])
        .setup(move |app| {
            let handle = app.handle().clone();
            let exit = handle.clone();
            let desktop =
                tauri::async_runtime::block_on(Desktop::start(paths, tunnel, launch, move || {
                    exit.exit(0)
                }));
            let view = desktop.view();
            let changes = desktop.changes();
            app.manage(desktop);
            let autostart = app.autolaunch().is_enabled().unwrap_or(false);
            let tray = Tray::build(&handle, &view, autostart, on_menu, show_window)?;
            app.manage(tray);
            // The window exists once the state its commands read is in place.
            let config = app
                .config()
                .app
                .windows
                .first()
                .context("tauri.conf.json defines no window")?
                .clone();
            WebviewWindowBuilder::from_config(&handle, &config)?
                .visible(!minimized)
                .build()?;
            // SIGTERM / Ctrl-C (a logout, `kill`, a terminal): the same orderly stop as Quit.
            let signals = handle.clone();
            tauri::async_runtime::spawn(async move {
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
                    signals.state::<Desktop>().quit();
                }
            });
            if let Some(mut changes) = changes {
                tauri::async_runtime::spawn(async move {
                    while changes.next().await {
                        publish(&handle);
                    }
                });
            }
            Ok(())
        })
        .on_window_event(|window, event| {
            // Closing the window hides it: the supervisor keeps serving the phones.
            if let WindowEvent::CloseRequested { api, .. } = event {
                api.prevent_close();
                let _ = window.hide();
            }
        })
        .build(tauri::generate_context!("../tauri.conf.json"))
        .context("starting the window system (is there a display?)")?
        .run(|app, event| {
            if let RunEvent::ExitRequested { api, .. } = event {
                // Exit only once the supervisor has drained and stopped; it calls exit
                // again then.
                let desktop = app.state::<Desktop>();
                if !desktop.stopped() {
                    api.prevent_exit();
                    desktop.quit();
                }
            }
        });
    Ok(())
}

/// The `chroxy` binary workers run (it has the `worker` command): beside this one, as
/// the release build and the packages install it, else on `PATH`.
fn worker_binary() -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .map_err(|err| format!("cannot find this program: {err}"))?
        .with_file_name("chroxy");
    if beside.is_file() {
        return Ok(beside);
    }
    which::which("chroxy").map_err(|_| {
        format!(
            "the `chroxy` program (it runs the workers) is neither beside {} nor on PATH; build it with `cargo build --release -p chroxy`",
            beside.display()
        )
    })
}

/// Logs to stderr and to a daily file in the log directory ("Open logs").
fn init_logging(paths: &Paths) -> Option<tracing_appender::non_blocking::WorkerGuard> {
    use tracing_subscriber::prelude::*;
    let filter = || {
        tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let stderr = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter());
    let dir = paths.logs_dir();
    let file = chroxy::store::ensure_private_dir(&dir)
        .map_err(|err| eprintln!("cannot create the log directory: {err}"))
        .ok()
        .and_then(|()| {
            tracing_appender::rolling::Builder::new()
                .rotation(tracing_appender::rolling::Rotation::DAILY)
                .filename_prefix("desktop")
                .filename_suffix("log")
                .max_log_files(7)
                .build(&dir)
                .map_err(|err| eprintln!("cannot open a log file in {}: {err}", dir.display()))
                .ok()
        })
        .map(tracing_appender::non_blocking);
    let (file_layer, guard) = match file {
        Some((writer, guard)) => (
            Some(
                tracing_subscriber::fmt::layer()
                    .with_ansi(false)
                    .with_writer(writer)
                    .with_filter(filter()),
            ),
            Some(guard),
        ),
        None => (None, None),
    };
    tracing_subscriber::registry()
        .with(stderr)
        .with(file_layer)
        .init();
    guard
}

/// Sends the whole view to the window and the tray.
fn publish(app: &AppHandle) {
    let view = app.state::<Desktop>().view();
    app.state::<Tray>().show(&view);
    if let Err(err) = app.emit_to("main", "view", &view) {
        tracing::warn!(%err, "cannot update the window");
    }
}

fn show_window(app: &AppHandle) {
    if let Some(window) = app.get_webview_window("main") {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

/// What each tray item does.
fn on_menu(app: &AppHandle, id: &str) {
    let desktop = app.state::<Desktop>();
    let act = |action: Action| {
        let app = app.clone();
        tauri::async_runtime::spawn(async move {
            let answer = app.state::<Desktop>().act(action).await;
            tell(&app, answer);
        });
    };
    match id {
        item::SHOW => show_window(app),
        item::SHOW_QR => {
            show_window(app);
            let _ = app.emit_to("main", "show-qr", ());
        }
        item::RECONNECT => act(Action::Reconnect),
        item::ROLLBACK => act(Action::Rollback { to: None }),
        item::RESTART => act(Action::Restart),
        item::AUTOSTART => {
            let launcher = app.autolaunch();
            let wanted = !launcher.is_enabled().unwrap_or(false);
            let done = if wanted {
                launcher.enable()
            } else {
                launcher.disable()
            };
            if let Err(err) = done {
                tell(
                    &app.clone(),
                    Err(format!("cannot change Start at login: {err}")),
                );
            }
            app.state::<Tray>()
                .set_autostart(launcher.is_enabled().unwrap_or(false));
        }
        item::STATUS_PAGE => {
            if let Err(err) = open_status_page(app.clone(), app.state()) {
                tell(app, Err(err));
            }
        }
        item::LOGS => {
            let dir = desktop.paths().logs_dir();
            if let Err(err) = app.opener().open_path(dir.to_string_lossy(), None::<&str>) {
                tell(app, Err(format!("cannot open {}: {err}", dir.display())));
            }
        }
        item::QUIT => desktop.quit(),
        other => {
            if let Some(choice) = tray::tunnel_of(other) {
                let app = app.clone();
                tauri::async_runtime::spawn(async move {
                    let answer = app.state::<Desktop>().set_tunnel(choice).await;
                    // A check item toggles itself when clicked: put all three right.
                    app.state::<Tray>().refresh(&app.state::<Desktop>().view());
                    tell(&app, answer);
                });
            }
        }
    }
}

/// Shows an action's answer in the window (and the log).
fn tell(app: &AppHandle, answer: Result<String, String>) {
    match &answer {
        Ok(message) => tracing::info!(%message, "action done"),
        Err(message) => tracing::warn!(%message, "action refused"),
    }
    let _ = app.emit_to("main", "answer", answer);
}

#[tauri::command]
fn view(desktop: State<'_, Desktop>) -> View {
    desktop.view()
}

#[tauri::command]
async fn rollback(desktop: State<'_, Desktop>) -> Result<String, String> {
    desktop.act(Action::Rollback { to: None }).await
}

#[tauri::command]
async fn reconnect(desktop: State<'_, Desktop>) -> Result<String, String> {
    desktop.act(Action::Reconnect).await
}

#[tauri::command]
async fn restart(desktop: State<'_, Desktop>) -> Result<String, String> {
    desktop.act(Action::Restart).await
}

#[tauri::command]
async fn set_tunnel(
    app: AppHandle,
    desktop: State<'_, Desktop>,
    choice: TunnelChoice,
) -> Result<String, String> {
    let answer = desktop.set_tunnel(choice).await;
    app.state::<Tray>().refresh(&desktop.view());
    answer
}

#[tauri::command]
fn admin_token(desktop: State<'_, Desktop>) -> Result<String, String> {
    desktop.admin_token()
}

#[tauri::command]
fn copy_link(app: AppHandle, desktop: State<'_, Desktop>) -> Result<String, String> {
    let link = desktop.link()?;
    app.clipboard()
        .write_text(link)
        .map_err(|err| format!("cannot copy to the clipboard: {err}"))?;
    Ok("pairing link copied".into())
}

#[tauri::command]
fn open_status_page(app: AppHandle, desktop: State<'_, Desktop>) -> Result<(), String> {
    let port = desktop
        .view()
        .status
        .map(|s| s.status_port)
        .ok_or("the status page is not running")?;
    app.opener()
        .open_url(format!("http://127.0.0.1:{port}/"), None::<&str>)
        .map_err(|err| format!("cannot open the status page: {err}"))
}
