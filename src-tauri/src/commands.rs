//! The window's commands, one line each over [`Desktop`] (the supervisor's actions) or a
//! plugin. The tray's items that do the same thing call these same functions.

use chroxy::desktop::{Desktop, View};
use chroxy::supervisor::status::Action;
use chroxy::tunnel::TunnelChoice;
use tauri::ipc::Invoke;
use tauri::{AppHandle, Manager, Runtime, State};
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_opener::OpenerExt as _;

use crate::error::ShellError;

/// Every command the window may call, by name.
pub fn handler<R: Runtime>() -> impl Fn(Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        view,
        rollback,
        reconnect,
        restart,
        set_tunnel,
        admin_token,
        copy_link,
        open_status_page,
    ]
}

#[tauri::command]
fn view(desktop: State<'_, Desktop>) -> View {
    desktop.view()
}

#[tauri::command]
pub async fn rollback<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    let to_known_good = Action::Rollback { to: None };
    Ok(app.state::<Desktop>().act(to_known_good).await?)
}

#[tauri::command]
pub async fn reconnect<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    Ok(app.state::<Desktop>().act(Action::Reconnect).await?)
}

#[tauri::command]
pub async fn restart<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    Ok(app.state::<Desktop>().act(Action::Restart).await?)
}

#[tauri::command]
pub async fn set_tunnel<R: Runtime>(
    app: AppHandle<R>,
    choice: TunnelChoice,
) -> Result<String, ShellError> {
    let answer = app.state::<Desktop>().set_tunnel(choice).await;
    // The status may have changed before the choice was stored, and a clicked check item
    // has toggled itself: draw the tray again whatever happened.
    crate::tray::refresh(&app);
    Ok(answer?)
}

#[tauri::command]
fn admin_token(desktop: State<'_, Desktop>) -> Result<String, ShellError> {
    Ok(desktop.admin_token()?)
}

#[tauri::command]
fn copy_link<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    let link = app.state::<Desktop>().link()?;
    app.clipboard().write_text(link)?;
    Ok("pairing link copied".into())
}

#[tauri::command]
pub fn open_status_page<R: Runtime>(app: AppHandle<R>) -> Result<(), ShellError> {
    let url = app.state::<Desktop>().status_page()?;
    app.opener()
        .open_url(url, None::<&str>)
        .map_err(|source| ShellError::Open {
            what: "the status page".into(),
            source: Box::new(source),
        })
}
