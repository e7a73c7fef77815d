//! The window's commands, one line each over [`Desktop`] (the supervisor's actions) or a
//! plugin. The tray's items that do the same thing call these same functions.

use chroxy::devices::Decision;
use chroxy::launch::TunnelChoice;
use chroxy::supervisor::release::ReleaseId;
use chroxy::supervisor::status::Action;
use tauri::ipc::Invoke;
use tauri::{AppHandle, Manager, Runtime, State};
use tauri_plugin_clipboard_manager::ClipboardExt as _;
use tauri_plugin_opener::OpenerExt as _;

use crate::app::Desktop;
use crate::error::ShellError;
use crate::view::View;

/// Every command the window may call, by name.
pub fn handler<R: Runtime>() -> impl Fn(Invoke<R>) -> bool + Send + Sync + 'static {
    tauri::generate_handler![
        view,
        rollback,
        reconnect,
        restart,
        approve_deploy,
        refuse_deploy,
        set_tunnel,
        admin_token,
        copy_link,
        open_status_page,
        decide_device,
    ]
}

#[tauri::command]
fn view(desktop: State<'_, Desktop>) -> View {
    desktop.view()
}

#[tauri::command]
pub async fn rollback<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    app.state::<Desktop>()
        .act(Action::Rollback { to: None })
        .await
}

#[tauri::command]
pub async fn reconnect<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    app.state::<Desktop>().act(Action::Reconnect).await
}

#[tauri::command]
pub async fn restart<R: Runtime>(app: AppHandle<R>) -> Result<String, ShellError> {
    app.state::<Desktop>().act(Action::Restart).await
}

/// `release`: the pending deploy the window showed (so a newer one is not approved blind).
#[tauri::command]
pub async fn approve_deploy<R: Runtime>(
    app: AppHandle<R>,
    release: Option<ReleaseId>,
) -> Result<String, ShellError> {
    let action = Action::ApproveDeploy { release };
    app.state::<Desktop>().act(action).await
}

#[tauri::command]
pub async fn refuse_deploy<R: Runtime>(
    app: AppHandle<R>,
    release: Option<ReleaseId>,
) -> Result<String, ShellError> {
    let action = Action::RefuseDeploy { release };
    app.state::<Desktop>().act(action).await
}

#[tauri::command]
pub async fn set_tunnel<R: Runtime>(
    app: AppHandle<R>,
    choice: TunnelChoice,
) -> Result<String, ShellError> {
    let answer = app.state::<Desktop>().set_tunnel(choice).await;
    // The status may have changed before the choice was stored, and a clicked check item
    // has toggled itself: draw the tray again whatever happened.
    crate::tray::refresh(&app, &app.state::<Desktop>().view());
    answer
}

/// Approve, refuse or revoke a device (the window's device buttons). Off the main
/// thread: it reads and writes the registry file.
#[tauri::command(async)]
fn decide_device(
    desktop: State<'_, Desktop>,
    decision: Decision,
    id: String,
) -> Result<String, ShellError> {
    desktop.decide_device(decision, &id)
}

#[tauri::command]
fn admin_token(desktop: State<'_, Desktop>) -> Result<String, ShellError> {
    desktop.admin_token()
}

#[tauri::command]
fn copy_link<R: Runtime>(
    app: AppHandle<R>,
    desktop: State<'_, Desktop>,
) -> Result<String, ShellError> {
    let link = desktop.link()?;
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
