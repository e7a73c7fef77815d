//! The window's commands and the tray's items, carried out: `chroxy::desktop` answers what
//! each asks ([`Ask`]); here only what needs the desktop (clipboard, opener, window, login).

use anyhow::anyhow;
use chroxy::desktop::{Ask, Desktop, Reply};
use tauri::ipc::{Invoke, InvokeBody, InvokeError};
use tauri::{AppHandle, Manager, Runtime};
use tauri_plugin_autostart::ManagerExt as _;
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_opener::OpenerExt as _;

/// The window's `invoke(name, args)`, answered off the main thread (a refusal as its
/// sentence); `false` (Tauri's "not found") for a name that is no command of the window.
pub fn handler<R: Runtime>(invoke: Invoke<R>) -> bool {
    let (message, resolver) = (invoke.message, invoke.resolver);
    let InvokeBody::Json(args) = message.payload() else {
        return false; // the window sends its arguments as JSON, always
    };
    let Some(ask) = Ask::from_window(message.command(), args) else {
        return false;
    };
    let app = message.webview().app_handle().clone();
    resolver.respond_async(async move {
        let answer = async { perform(&app, ask?).await }.await;
        answer.map_err(|err| InvokeError::from(err.to_string()))
    });
    true
}

/// Carries out `ask`: the app's answer, with what only the desktop can do for it done.
pub async fn perform<R: Runtime>(app: &AppHandle<R>, ask: Ask) -> anyhow::Result<Reply> {
    let redraw = ask.redraws_tray();
    let done = async {
        match app.state::<Desktop>().answer(ask).await? {
            Reply::Copy(link) => {
                let copied = app.clipboard().write_text(link);
                copied.map_err(|err| anyhow!("cannot copy to the clipboard: {err}"))?;
                return Ok(Reply::Said("pairing link copied".into()));
            }
            Reply::Open { what, target } => {
                let opened = app.opener().open_url(target, None::<&str>);
                opened.map_err(|err| anyhow!("cannot open {what}: {err}"))?;
            }
            Reply::Show { qr } => crate::show_window(app, qr),
            Reply::ToggleAutostart => {
                let login = app.autolaunch();
                let on = login.is_enabled().unwrap_or(false);
                let done = if on { login.disable() } else { login.enable() };
                done.map_err(|err| anyhow!("cannot change Start at login: {err}"))?;
            }
            said => return Ok(said),
        }
        Ok(Reply::Done)
    };
    let done = done.await;
    if redraw {
        crate::tray::show(app, &app.state::<Desktop>().view(), true);
    }
    done
}
