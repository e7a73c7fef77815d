//! Chroxy's tray app: Tauri wired to `chroxy::desktop`, the app itself (the supervisor
//! `chroxy start` runs, in-process; what the window and the tray show; what each of their
//! clicks asks). [`run_app`] builds what every Tauri runtime shares (the app as managed
//! state, the window and its commands, the events), so a test builds it on the mock
//! runtime; [`run`] adds the desktop session's plugins, the tray icon and the signals.

#![forbid(unsafe_code)]

mod commands;
mod tray;

use anyhow::Context;
use chroxy::desktop::{Args, Boot, Desktop};
use chroxy::store::Paths;
use clap::Parser;
use tauri::{App, AppHandle, Emitter, Manager, RunEvent, Runtime, WebviewWindowBuilder};

/// The window's label in `tauri.conf.json`, where its events go.
const MAIN: &str = "main";

/// The app as a user starts it: from the command line, on the desktop, until Quit.
pub fn run() -> anyhow::Result<()> {
    chroxy::process::keep_memory_private();
    let args = Args::parse();
    let paths = Paths::resolve(args.home.clone())?;
    let _log_guard = chroxy::desktop::init_logging(&paths);
    let boot = Boot::new(args, paths);
    let session = tauri::Builder::default()
        // First: a second launch hands over to this one and exits 0 before doing anything.
        .plugin(tauri_plugin_single_instance::init(|app, _args, _cwd| {
            tracing::info!("a second launch asked for the window");
            show_window(app, false);
        }))
        .plugin(tauri_plugin_autostart::init(
            tauri_plugin_autostart::MacosLauncher::LaunchAgent,
            Some(vec!["--minimized"]),
        ))
        .plugin(tauri_plugin_clipboard_manager::init())
        .plugin(tauri_plugin_opener::init());
    run_app(session, boot, |app| {
        tray::install(app)?;
        // What phones are told of that the desk should see too; a click opens the window.
        let clicked = app.clone();
        let shown = app.state::<Desktop>().desktop_notifications(move || {
            tracing::info!("a desktop notification was clicked: showing the window");
            show_window(&clicked, false);
        });
        if let Some(shown) = shown {
            tauri::async_runtime::spawn(shown);
        }
        // Listening before `run_app` shows the window: a SIGTERM from then on (a logout
        // while the app starts) is a Quit, never the default death that would leave the
        // supervisor's workers behind.
        tauri::async_runtime::block_on(app.state::<Desktop>().quit_on_signals());
        Ok(())
    })?
    .run(|app, event| {
        if let RunEvent::ExitRequested { api, code, .. } = event {
            // No code: the last window closed. The app lives on in the tray.
            if code.is_none() {
                api.prevent_exit();
            // Exit only once the supervisor has drained and stopped; it calls exit again then.
            } else if !app.state::<Desktop>().exit_requested() {
                api.prevent_exit();
            }
        }
    });
    Ok(())
}

/// Builds the app on `builder` (and its plugins). Its setup starts the supervisor (after the
/// plugins: a second launch has handed over), calls `ready`, then makes the window (its
/// commands' state is in place), then follows the app's changes.
pub fn run_app<R: Runtime>(
    builder: tauri::Builder<R>,
    boot: Boot,
    ready: impl FnOnce(&AppHandle<R>) -> tauri::Result<()> + Send + 'static,
) -> anyhow::Result<App<R>> {
    builder
        .invoke_handler(commands::handler)
        .setup(move |app| {
            let exit = app.handle().clone();
            let start = Desktop::start(boot.paths, boot.tunnel, boot.launch, move || exit.exit(0));
            let desktop = tauri::async_runtime::block_on(start);
            let changes = desktop.changes();
            app.manage(desktop);
            // The tray and the signals first: once the window shows, both are there.
            ready(app.handle())?;
            if !boot.minimized {
                open_window(app.handle(), false)?;
            }
            let app = app.handle().clone();
            // The view, whole, to the window (when there is one) and the tray at every change.
            tauri::async_runtime::spawn(changes.each(move || {
                let view = app.state::<Desktop>().view();
                tray::show(&app, &view, false);
                if app.get_webview_window(MAIN).is_some() {
                    if let Err(err) = app.emit_to(MAIN, "view", &view) {
                        tracing::warn!(%err, "cannot update the window");
                    }
                }
            }));
            Ok(())
        })
        // Closing the window destroys it, webview and all: WebKit's processes weigh
        // hundreds of megabytes, and the app spends its life in the tray. The supervisor
        // keeps serving the phones; Show window makes a new one (`run`'s loop keeps the
        // app alive with no window).
        .on_window_event(|window, event| {
            if let tauri::WindowEvent::Destroyed = event {
                tracing::info!(
                    label = window.label(),
                    "window closed: its webview is gone until shown again"
                );
            }
        })
        .build(tauri::generate_context!())
        .context("starting the window system (is there a display?)")
}

/// Makes the window from its declaration in tauri.conf.json and shows it; `qr`: its
/// page flashes the QR code once loaded.
fn open_window<R: Runtime>(app: &AppHandle<R>, qr: bool) -> tauri::Result<()> {
    let declared = app.config().app.windows.first().cloned();
    let Some(declared) = declared else {
        return Err(tauri::Error::WindowNotFound);
    };
    let mut window = WebviewWindowBuilder::from_config(app, &declared)?.visible(true);
    if qr {
        // Read by the page's script at its start, after which an event could be missed.
        window = window.initialization_script("window.chroxyShowQr = true;");
    }
    window.build()?;
    Ok(())
}

/// Brings the window up, in front (made anew if it was closed); `qr`: scrolled to the
/// QR code, which flashes.
fn show_window<R: Runtime>(app: &AppHandle<R>, qr: bool) {
    let Some(window) = app.get_webview_window(MAIN) else {
        if let Err(err) = open_window(app, qr) {
            tracing::error!(%err, "cannot open the window");
        }
        return;
    };
    let _ = window.show();
    let _ = window.unminimize();
    let _ = window.set_focus();
    if qr {
        let _ = app.emit_to(MAIN, "show-qr", ());
    }
}

#[cfg(test)]
mod tests {
    use chroxy::launch::{EnvironmentError, LaunchError};
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
        let missing = LaunchError::from(EnvironmentError::NoWorkerBinary {
            beside: "/opt/chroxy/chroxy".into(),
        });
        let why = missing.to_string();
        let boot = Boot {
            paths: Paths::under(home.path()),
            tunnel: TunnelChoice::None,
            launch: Err(missing),
            minimized: false,
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
        // The device registry answers even so, and a command's arguments are named.
        let device = json!({"decision": "approve", "id": "nobody"});
        let refused = invoke(&window, "decide_device", device).unwrap_err();
        assert!(
            refused.to_string().contains("no device `nobody`"),
            "{refused}"
        );
        let bad = invoke(&window, "set_tunnel", json!({})).unwrap_err();
        assert!(
            bad.to_string()
                .contains("`choice` for command `set_tunnel`"),
            "{bad}"
        );
        // A command the app does not have is refused as such: the ones above are there.
        // (A tray item, Quit, is no command of the window.)
        for cmd in ["deploy", "quit"] {
            let missing = invoke(&window, cmd, json!({})).unwrap_err();
            assert!(missing.to_string().contains("not found"), "{missing}");
        }
    }
}
