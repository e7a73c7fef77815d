//! Chroxy's window: the QR code to scan, the status, one-click rollback and reconnect.
//! A process of its own (`chroxy-desktop-window`), which the tray app (`chroxy-desktop`:
//! `chroxy::desktop::run`, no toolkit) starts when the window is shown; closing the
//! window ends it, and WebKit's hundreds of megabytes with it. Everything the page asks
//! goes to the tray app over `chroxy::desktop::window`'s channel, and everything it is
//! told (the view at each change, a tray click's answer, Show) comes back that way.
//! [`build`] makes the app on any Tauri runtime, so a test builds it on the mock one.

#![forbid(unsafe_code)]

use anyhow::Context;
use chroxy::desktop::window::{Link, LinkFds, Told};
use chroxy::desktop::Ask;
use clap::Parser;
use tauri::ipc::{Invoke, InvokeBody, InvokeError};
use tauri::webview::PageLoadEvent;
use tauri::{App, AppHandle, Emitter, Manager, Runtime, WebviewWindowBuilder};

/// The window's label in `tauri.conf.json`, where its events go.
const MAIN: &str = "main";

/// The window's command line (the tray app gives it).
#[derive(Debug, clap::Parser)]
#[command(
    name = "chroxy-desktop-window",
    version,
    about = "Chroxy's window, started by the tray app (chroxy-desktop) when it is shown."
)]
struct Args {
    /// Scrolled to the QR code, which flashes (the tray's Show QR code).
    #[arg(long)]
    qr: bool,
}

/// The window as the tray app starts it, until it is closed or the tray app quits.
pub fn run() -> anyhow::Result<()> {
    // Before anything else: nothing this process starts may inherit the channel.
    let fds = Link::take_stdio()?;
    chroxy::process::keep_memory_private();
    let args = Args::parse();
    chroxy::desktop::init_stderr_logging();
    let data = web_data()?;
    // The last window closed: the app exits (the default), and the tray app sees it go.
    let app = build(tauri::Builder::default(), fds, args.qr, data.path().into())?;
    let code = app.run_return(|_, _| {});
    // Returned, not exited: WebKit's data goes with the window.
    drop(data);
    std::process::exit(code);
}

/// WebKit's data for this window alone (its caches, its network process's databases),
/// in the session's runtime directory and removed when the window ends: a window shown
/// again loads nothing of the last one's, and nothing of it stays on disk.
fn web_data() -> anyhow::Result<tempfile::TempDir> {
    let parent = std::env::var_os("XDG_RUNTIME_DIR")
        .map(std::path::PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    tempfile::Builder::new()
        .prefix("chroxy-window-")
        .tempdir_in(&parent)
        .with_context(|| {
            format!(
                "making the window's web data directory in {}",
                parent.display()
            )
        })
}

/// Builds the window's app on `builder`: its setup speaks with the tray app over `fds`,
/// then makes the window (`qr`: flashing the QR code), WebKit's data in `data`.
pub fn build<R: Runtime>(
    builder: tauri::Builder<R>,
    fds: LinkFds,
    qr: bool,
    data: std::path::PathBuf,
) -> anyhow::Result<App<R>> {
    builder
        .invoke_handler(handler)
        .setup(move |app| {
            let handle = app.handle().clone();
            let link = tauri::async_runtime::block_on(async move {
                Link::start(fds, move |told| follow(&handle, told))
            })?;
            app.manage(link);
            open_window(app.handle(), qr, data)?;
            Ok(())
        })
        .build(tauri::generate_context!())
        .context("starting the window system (is there a display?)")
}

/// What the tray app tells the window.
fn follow<R: Runtime>(app: &AppHandle<R>, told: Told) {
    match told {
        Told::Emit { event, payload } => {
            if let Err(err) = app.emit_to(MAIN, &event, payload) {
                tracing::warn!(%err, event, "cannot update the window");
            }
        }
        // On the main thread: said to be shown once it is (a hung window says nothing,
        // and the tray app starts a new one).
        Told::Show { qr } => {
            let on_main = app.clone();
            let shown = app.run_on_main_thread(move || {
                if show_window(&on_main, qr) {
                    on_main.state::<Link>().shown();
                } else {
                    // Closing as the tray app asked: it sees this process end and
                    // starts a new window.
                    on_main.exit(0);
                }
            });
            if let Err(err) = shown {
                tracing::warn!(%err, "cannot show the window");
            }
        }
        Told::Gone => {
            tracing::info!("the tray app is gone: closing the window");
            app.exit(0);
        }
    }
}

/// The page's `invoke(name, args)`, answered by the tray app; `false` (Tauri's "not
/// found") for a name that is no command of the window.
fn handler<R: Runtime>(invoke: Invoke<R>) -> bool {
    let (message, resolver) = (invoke.message, invoke.resolver);
    let InvokeBody::Json(args) = message.payload() else {
        return false; // the window sends its arguments as JSON, always
    };
    let command = message.command().to_owned();
    if Ask::from_window(&command, args).is_none() {
        return false;
    }
    let (app, args) = (message.webview().app_handle().clone(), args.clone());
    resolver.respond_async(async move {
        let answer = app.state::<Link>().invoke(&command, args).await;
        answer.map_err(InvokeError::from)
    });
    true
}

/// Makes the window from its declaration in tauri.conf.json and shows it once its page
/// has loaded; `qr`: its page flashes the QR code once loaded.
fn open_window<R: Runtime>(
    app: &AppHandle<R>,
    qr: bool,
    data: std::path::PathBuf,
) -> tauri::Result<()> {
    let declared = app.config().app.windows.first().cloned();
    let Some(declared) = declared else {
        return Err(tauri::Error::WindowNotFound);
    };
    let mut window = WebviewWindowBuilder::from_config(app, &declared)?
        .data_directory(data)
        // Shown once its page has loaded, not before: a window drawn while WebKit's web
        // process is still starting makes WebKit wait up to 500 ms for a frame that
        // process cannot send yet (it is itself waiting on this process's answer), and
        // a blank window would be all there is to see meanwhile. Measured with
        // compositing off: reopen → QR p95 1044 → 581 ms.
        .visible(false)
        .on_page_load(|window, load| {
            if load.event() == PageLoadEvent::Finished {
                let _ = window.show();
            }
        });
    if qr {
        // Read by the page's script at its start, after which an event could be missed.
        window = window.initialization_script("window.chroxyShowQr = true;");
    }
    window.build()?;
    Ok(())
}

/// Brings the window up, in front; `qr`: scrolled to the QR code, which flashes.
/// `false`: there is no window (it was closed).
fn show_window<R: Runtime>(app: &AppHandle<R>, qr: bool) -> bool {
    let Some(window) = app.get_webview_window(MAIN) else {
        return false;
    };
    let _ = window.show();
    let _ = window.unminimize();
    let _ = window.set_focus();
    if qr {
        let _ = app.emit_to(MAIN, "show-qr", ());
    }
    true
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, Write};

    use chroxy::desktop::window::{FromWindow, ToWindow};
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
    fn on_the_mock_runtime_the_window_asks_the_tray_app_and_gives_its_answer_back() {
        let home = tempfile::tempdir().unwrap();
        let (from_tray, tray_says) = std::io::pipe().unwrap();
        let (window_says, to_tray) = std::io::pipe().unwrap();
        // The tray app, played here: every command it is asked is logged, and answered
        // with its name and arguments, except `rollback`, refused.
        let (asked, asks) = std::sync::mpsc::channel();
        let (confirmed, confirmations) = std::sync::mpsc::channel();
        let said_to_window = std::sync::Arc::new(std::sync::Mutex::new(tray_says));
        let tray_says = said_to_window.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(window_says).lines() {
                let message = serde_json::from_str(&line.unwrap());
                let Ok(FromWindow::Invoke { id, command, args }) = message else {
                    if let Ok(FromWindow::Shown) = message {
                        confirmed.send(()).unwrap();
                    }
                    continue;
                };
                let answer = match command.as_str() {
                    "rollback" => Err("Chroxy is not running: no `chroxy`".to_owned()),
                    _ => Ok(json!({"command": command, "args": args})),
                };
                asked.send(command).unwrap();
                let reply = serde_json::to_string(&ToWindow::Reply { id, answer }).unwrap();
                writeln!(tray_says.lock().unwrap(), "{reply}").unwrap();
            }
        });
        let fds = LinkFds::new(from_tray.into(), to_tray.into());
        let mut app = build(mock_builder(), fds, false, home.path().join("web")).unwrap();
        // Runs setup (and one turn of the mock's event loop, which does nothing): the
        // deprecation warns against calling it in a loop.
        #[allow(deprecated)]
        app.run_iteration(|_, _| {});
        let window = app
            .get_webview_window(MAIN)
            .expect("setup makes the window");

        let args = json!({"choice": "quick"});
        assert_eq!(
            invoke(&window, "set_tunnel", args.clone()),
            Ok(json!({"command": "set_tunnel", "args": args}))
        );
        assert_eq!(
            invoke(&window, "rollback", json!({})),
            Err(json!("Chroxy is not running: no `chroxy`"))
        );
        // A command the window does not have is refused as such, and never reaches
        // the tray app (a tray item, Quit, is no command of the window).
        for cmd in ["deploy", "quit"] {
            let missing = invoke(&window, cmd, json!({})).unwrap_err();
            assert!(missing.to_string().contains("not found"), "{missing}");
        }
        let asked: Vec<String> = asks.try_iter().collect();
        assert_eq!(asked, ["set_tunnel", "rollback"]);

        // Show: brought up, and said so (the tray app's side reads it).
        let mut tray_says = said_to_window.lock().unwrap();
        writeln!(tray_says, r#"{{"op":"show","qr":true}}"#).unwrap();
        drop(tray_says);
        let shown = confirmations.recv_timeout(std::time::Duration::from_secs(20));
        assert_eq!(shown.map(|_| ()), Ok(()), "the show was confirmed");
    }
}
