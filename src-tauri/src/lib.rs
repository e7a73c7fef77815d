//! Chroxy's tray app: a thin shell over the library (`chroxy::desktop` is the app, its
//! view and its menu's plan; this crate only wires them to Tauri). It runs the same supervisor as
//! `chroxy start`, in-process, and wires it to a window (QR code, status, releases,
//! buttons) and a tray icon with a menu. Window commands and tray items map one-to-one
//! onto supervisor actions; supervisor changes reach the window as events.
//!
//! [`run_app`] builds what is the same on every Tauri runtime (the supervisor as managed
//! state, the window's commands, the window, the events), so a test builds it on the mock
//! runtime; [`run`] adds what needs a desktop session: the single-instance, autostart,
//! clipboard and opener plugins, the tray icon and the signal handlers.

#![forbid(unsafe_code)]

mod commands;
mod error;
mod tray;
mod window;

use anyhow::Context;
use chroxy::desktop::{Args, Boot, Desktop};
use chroxy::store::Paths;
use clap::Parser;
use tauri::{App, AppHandle, Manager, RunEvent, Runtime};

/// Chroxy in the tray: scan the QR code with your phone, watch and steer Claude Code.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(flatten)]
    args: Args,
}

/// The app as a user starts it: from the command line, on the desktop, until Quit.
pub fn run() -> anyhow::Result<()> {
    chroxy::process::keep_memory_private();
    let args = Cli::parse().args;
    let paths = Paths::resolve(args.home.clone())?;
    let _log_guard = chroxy::desktop::init_logging(&paths);
    let boot = Boot::new(args, paths);
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
        tauri::async_runtime::spawn(app.state::<Desktop>().quit_on_signals());
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
    builder
        .invoke_handler(commands::handler())
        .setup(move |app| {
            let exit = app.handle().clone();
            let start = Desktop::start(boot.paths, boot.tunnel, boot.launch, move || exit.exit(0));
            let desktop = tauri::async_runtime::block_on(start);
            let mut changes = desktop.changes();
            app.manage(desktop);
            window::open(app.handle(), !boot.minimized)?;
            ready(app.handle())?;
            // The supervisor's changes become window events and tray updates; those
            // since `changes()` was taken are not missed: they wake the loop.
            let app = app.handle().clone();
            tauri::async_runtime::spawn(async move {
                while changes.next().await {
                    window::publish(&app);
                }
            });
            Ok(())
        })
        .on_window_event(window::hide_on_close)
        .build(tauri::generate_context!("../tauri.conf.json"))
        .context("starting the window system (is there a display?)")
}

/// Exit only once the supervisor has drained and stopped; it calls exit again then.
fn on_run_event<R: Runtime>(app: &AppHandle<R>, event: RunEvent) {
    if let RunEvent::ExitRequested { api, .. } = event {
        if !app.state::<Desktop>().exit_requested() {
            api.prevent_exit();
        }
    }
}

fn second_launch<R: Runtime>(app: &AppHandle<R>, _args: Vec<String>, _cwd: String) {
    tracing::info!("a second launch asked for the window");
    window::show(app);
}

#[cfg(test)]
mod tests {
    use chroxy::desktop::DesktopError;
    use chroxy::tunnel::TunnelChoice;
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
        let missing = DesktopError::NoWorkerBinary {
            beside: "/opt/chroxy/chroxy".into(),
        };
        let why = missing.to_string();
        let boot = Boot {
            paths: Paths::under(home.path()),
            tunnel: TunnelChoice::None,
            launch: Err(missing),
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
        assert!(why.contains("cargo build --release -p chroxy"), "{why}");
        assert_eq!(view["error"], why.as_str(), "{view}");
        assert_eq!(view["summary"], format!("Chroxy could not start: {why}"));
        assert_eq!(view["tunnelChoice"], "none", "{view}");
        assert_eq!(view["status"], Value::Null, "{view}");

        let not_running = || Err(json!(format!("Chroxy is not running: {why}")));
        for cmd in [
            "rollback",
            "reconnect",
            "restart",
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
