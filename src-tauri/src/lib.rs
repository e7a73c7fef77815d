//! Chroxy's tray app: a thin shell over the library. It runs the same supervisor as
//! `chroxy start`, in-process, and wires it to a window (QR code, status, releases,
//! buttons) and a tray icon with a menu. Window commands and tray items map one-to-one
//! onto supervisor actions; supervisor changes reach the window as events.
//!
//! [`run_app`] builds what is the same on every Tauri runtime (the supervisor as managed
//! state, the window's commands, the window, the events), so a test builds it on the mock
//! runtime; [`run`] adds what needs a desktop session: the single-instance, autostart,
//! clipboard and opener plugins, the tray icon and the signal handlers.

#![forbid(unsafe_code)]

mod app;
mod commands;
mod error;
mod logging;
mod settings;
mod tray;
mod view;
mod window;

use std::path::PathBuf;

use anyhow::Context;
use chroxy::launch::{Launch, StartArgs, TunnelChoice};
use chroxy::store::Paths;
use clap::Parser;
use tauri::{App, AppHandle, Manager, RunEvent, Runtime};

use app::{Changes, Desktop};
use settings::Settings;

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

/// What the app starts with.
pub struct Boot {
    /// The home's directories.
    pub paths: Paths,
    /// The tunnel it starts with (the Tunnel menu's choice).
    pub tunnel: TunnelChoice,
    /// What to start, or why there is nothing to start (no `chroxy` binary, no session
    /// directory): shown in the window like any other failure.
    pub launch: Result<Launch, String>,
    /// Whether the window starts hidden.
    pub minimized: bool,
}

/// The app as a user starts it: from the command line, on the desktop, until Quit.
pub fn run() -> anyhow::Result<()> {
    chroxy::process::keep_memory_private();
    let cli = Cli::parse();
    let paths = Paths::resolve(cli.home.clone())?;
    let _log_guard = logging::init(&paths);
    let tunnel = cli.start.tunnel.unwrap_or(Settings::load(&paths).tunnel);
    let launch = worker_binary().and_then(|installed| {
        cli.start
            .launch(cli.home, paths.clone(), tunnel, installed)
            .map_err(|err| err.to_string())
    });
    let boot = Boot {
        paths,
        tunnel,
        launch,
        minimized: cli.minimized,
    };
    let session = tauri::Builder::default()
        // First: a second launch hands over to this one and exits 0 before doing anything.
        .plugin(tauri_plugin_single_instance::init(second_launch))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimized"]),
        ))
        .plugin(tauri_plugin_clipboard_manager::init())
        .plugin(tauri_plugin_opener::init());
    run_app(session, boot, |app| {
        tray::install(app)?;
        quit_on_signals(app.clone());
        Ok(())
    })?
    .run(on_run_event);
    Ok(())
}

/// Builds the app on `builder` (and the plugins it carries). Its setup, once the event
/// loop runs, starts the supervisor (after the plugins, so a second launch has handed
/// over before anything starts), makes the window, calls `ready`, then follows the
/// supervisor's changes.
pub fn run_app<R: Runtime>(
    builder: tauri::Builder<R>,
    boot: Boot,
    ready: impl FnOnce(&AppHandle<R>) -> tauri::Result<()> + Send + 'static,
) -> anyhow::Result<App<R>> {
    let Boot {
        paths,
        tunnel,
        launch,
        minimized,
    } = boot;
    builder
        .invoke_handler(commands::handler())
        .setup(move |app| {
            let exit = app.handle().clone();
            let desktop =
                tauri::async_runtime::block_on(Desktop::start(paths, tunnel, launch, move || {
                    exit.exit(0)
                }));
            let changes = desktop.changes();
            app.manage(desktop);
            window::open(app.handle(), !minimized)?;
            ready(app.handle())?;
            // Changes since `changes()` was taken are not missed: they wake the loop.
            if let Some(changes) = changes {
                follow(app.handle().clone(), changes);
            }
            Ok(())
        })
        .on_window_event(window::hide_on_close)
        .build(tauri::generate_context!("../tauri.conf.json"))
        .context("starting the window system (is there a display?)")
}

/// Exit only once the supervisor has drained and stopped; it calls exit again then.
fn on_run_event<R: Runtime>(app: &AppHandle<R>, event: RunEvent) {
    if let RunEvent::ExitRequested { api, .. } = event {
        let desktop = app.state::<Desktop>();
        if !desktop.stopped() {
            api.prevent_exit();
            desktop.quit();
        }
    }
}

/// The supervisor's changes become window events and tray updates.
fn follow<R: Runtime>(app: AppHandle<R>, mut changes: Changes) {
    tauri::async_runtime::spawn(async move {
        while changes.next().await {
            window::publish(&app);
        }
    });
}

fn second_launch<R: Runtime>(app: &AppHandle<R>, _args: Vec<String>, _cwd: String) {
    tracing::info!("a second launch asked for the window");
    window::show(app);
}

/// SIGTERM / Ctrl-C (a logout, `kill`, a terminal): the same orderly stop as Quit.
fn quit_on_signals<R: Runtime>(app: AppHandle<R>) {
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
            app.state::<Desktop>().quit();
        }
    });
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

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};
    use tauri::ipc::{CallbackFn, InvokeBody};
    use tauri::test::{get_ipc_response, mock_builder, MockRuntime, INVOKE_KEY};
    use tauri::webview::InvokeRequest;
    use tauri::WebviewWindow;

    use super::*;

    /// What the window's `invoke(cmd, args)` gets back.
    fn invoke(window: &WebviewWindow<MockRuntime>, cmd: &str, args: Value) -> Result<Value, Value> {
        let request = InvokeRequest {
            cmd: cmd.into(),
            callback: CallbackFn(0),
            error: CallbackFn(1),
            url: "tauri://localhost".parse().unwrap(),
            body: InvokeBody::Json(args),
            headers: Default::default(),
            invoke_key: INVOKE_KEY.into(),
        };
        get_ipc_response(window, request).map(|body| body.deserialize().unwrap())
    }

    #[test]
    fn on_the_mock_runtime_the_window_gets_its_view_and_every_command_says_why_not() {
        let home = tempfile::tempdir().unwrap();
        // Tauri makes the webview's data directory in $XDG_DATA_HOME: the test's, not the
        // real home's. (No other test here reads the environment.)
        std::env::set_var("XDG_DATA_HOME", home.path().join("data"));
        let boot = Boot {
            paths: Paths::under(home.path()),
            tunnel: TunnelChoice::None,
            launch: Err("port 8765 is in use".into()),
            minimized: true,
        };
        let mut app = run_app(mock_builder(), boot, |_| Ok(())).unwrap();
        // Runs setup (and one turn of the mock's event loop, which does nothing): the
        // deprecation warns against calling it in a loop.
        #[allow(deprecated)]
        app.run_iteration(|_, _| {});
        let window = app
            .get_webview_window("main")
            .expect("setup makes the window");

        let view = invoke(&window, "view", json!({})).unwrap();
        assert_eq!(view["look"], "failed", "{view}");
        assert_eq!(view["error"], "port 8765 is in use", "{view}");
        assert_eq!(
            view["summary"],
            "Chroxy could not start: port 8765 is in use"
        );
        assert_eq!(view["tunnelChoice"], "none", "{view}");
        assert_eq!(view["status"], Value::Null, "{view}");

        let not_running = || Err(json!("Chroxy is not running: port 8765 is in use"));
        for cmd in [
            "rollback",
            "reconnect",
            "restart",
            "approve_deploy",
            "refuse_deploy",
            "admin_token",
            "copy_link",
        ] {
            assert_eq!(invoke(&window, cmd, json!({})), not_running(), "{cmd}");
        }
        assert_eq!(
            invoke(&window, "set_tunnel", json!({"choice": "quick"})),
            not_running()
        );
        assert_eq!(
            invoke(&window, "open_status_page", json!({})),
            Err(json!("the status page is not running"))
        );
        // A command the app does not have is refused as such: the ones above are there.
        let missing = invoke(&window, "deploy", json!({})).unwrap_err();
        assert!(missing.to_string().contains("not found"), "{missing}");
    }
}
