//! The window: made from `tauri.conf.json` once the state its commands read is in place,
//! hidden (not closed) by its close button, and sent the view and actions' answers as
//! events.

use anyhow::Context;
use tauri::{AppHandle, Emitter, Manager, Runtime, WebviewWindowBuilder, Window, WindowEvent};

use crate::error::ShellError;

/// The window's label in `tauri.conf.json`, where its events go.
const MAIN: &str = "main";

/// Makes the window, shown or (started minimized) not.
pub fn open<R: Runtime>(app: &AppHandle<R>, visible: bool) -> anyhow::Result<()> {
    let windows = &app.config().app.windows;
    let config = windows
        .first()
        .context("tauri.conf.json defines no window")?;
    let window = WebviewWindowBuilder::from_config(app, config)?;
    window.visible(visible).build()?;
    Ok(())
}

/// Brings the window up, in front.
pub fn show<R: Runtime>(app: &AppHandle<R>) {
    if let Some(window) = app.get_webview_window(MAIN) {
        let _ = window.show();
        let _ = window.unminimize();
        let _ = window.set_focus();
    }
}

/// Closing the window hides it: the supervisor keeps serving the phones.
pub fn hide_on_close<R: Runtime>(window: &Window<R>, event: &WindowEvent) {
    if let WindowEvent::CloseRequested { api, .. } = event {
        api.prevent_close();
        let _ = window.hide();
    }
}

/// Sends the whole view to the window and the tray.
pub fn publish<R: Runtime>(app: &AppHandle<R>) {
    let view = app.state::<chroxy::desktop::Desktop>().view();
    crate::tray::show(app, &view, false);
    if let Err(err) = app.emit_to(MAIN, "view", &view) {
        tracing::warn!(%err, "cannot update the window");
    }
}

/// Scrolls the window to the QR code and makes it flash.
pub fn point_at_qr<R: Runtime>(app: &AppHandle<R>) {
    show(app);
    let _ = app.emit_to(MAIN, "show-qr", ());
}

/// Shows an action's answer in the window (and the log).
pub fn tell<R: Runtime>(app: &AppHandle<R>, answer: Result<String, ShellError>) {
    match &answer {
        Ok(message) => tracing::info!(%message, "action done"),
        Err(message) => tracing::warn!(%message, "action refused"),
    }
    let _ = app.emit_to(MAIN, "answer", &answer);
}
