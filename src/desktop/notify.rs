//! Desktop notifications of the tray app: what the supervisor notifies phones of that a
//! person at the computer should see too — the server gave up (`failed`), a release was
//! rolled back by itself, and a prompt waiting while no phone is connected at all —
//! shown through the desktop's notification server (freedesktop Desktop Notifications
//! on the session bus, which every Linux desktop runs). A click opens the window.
//!
//! The D-Bus protocol is spoken directly (through the zbus the keyring already brings)
//! rather than through Tauri's notification plugin, whose desktop side cannot report a
//! click. Other systems get no desktop notifications yet (the log says so once).

use crate::push::{Notice, NoticeKind};

/// What the desktop shows for `notice`, when `phones` are connected: `(summary, body)`,
/// or `None` when it is not for the desk (a prompt a connected phone will be told of,
/// the end of a turn).
pub fn words(notice: &Notice, phones: u32) -> Option<(String, String)> {
    let session = notice
        .session
        .as_deref()
        .map(|s| format!(" in “{s}”"))
        .unwrap_or_default();
    match notice.kind {
        NoticeKind::Failed => Some((
            "Chroxy stopped serving".into(),
            "The server keeps failing. Open Chroxy to restart it or roll back.".into(),
        )),
        NoticeKind::RolledBack => Some((
            "Chroxy rolled back a release".into(),
            "The new release kept failing; the previous one serves again.".into(),
        )),
        NoticeKind::Permission if phones == 0 => Some((
            "Claude is waiting for your OK".into(),
            format!(
                "{}{session}, and no phone is connected. Open Chroxy and pair a phone to answer.",
                notice.tool.as_deref().unwrap_or("A tool")
            ),
        )),
        NoticeKind::Question if phones == 0 => Some((
            "Claude has a question".into(),
            format!("Waiting for an answer{session}, and no phone is connected."),
        )),
        NoticeKind::Permission | NoticeKind::Question | NoticeKind::TurnDone => None,
    }
}

/// Shows desktop notifications and reports their clicks.
#[cfg(target_os = "linux")]
pub struct Notifier {
    proxy: NotificationsProxy<'static>,
    shown: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<u32>>>,
    /// Listens for clicks; stopped with the notifier.
    clicks: tokio::task::JoinHandle<()>,
}

#[cfg(target_os = "linux")]
impl Drop for Notifier {
    fn drop(&mut self) {
        self.clicks.abort();
    }
}

#[cfg_attr(not(target_os = "linux"), allow(dead_code))]
/// `text` as plain text in a notification body, which servers may read as markup
/// (`<b>`, `<a href>`, `<img>`): a session's name or a tool's is somebody else's words.
fn plain(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The server's interface, as far as the app uses it.
#[cfg(target_os = "linux")]
mod bus {
    #![allow(missing_docs)] // what the macro generates

    #[zbus::proxy(
        interface = "org.freedesktop.Notifications",
        default_service = "org.freedesktop.Notifications",
        default_path = "/org/freedesktop/Notifications"
    )]
    pub trait Notifications {
        #[allow(clippy::too_many_arguments)]
        fn notify(
            &self,
            app_name: &str,
            replaces_id: u32,
            app_icon: &str,
            summary: &str,
            body: &str,
            actions: &[&str],
            hints: std::collections::HashMap<&str, zbus::zvariant::Value<'_>>,
            expire_timeout: i32,
        ) -> zbus::Result<u32>;

        #[zbus(signal)]
        fn action_invoked(&self, id: u32, action_key: String) -> zbus::Result<()>;
    }
}

#[cfg(target_os = "linux")]
use bus::NotificationsProxy;

#[cfg(target_os = "linux")]
impl Notifier {
    /// Connects to the session bus's notification server; `on_click` runs when one of
    /// this notifier's notifications is clicked. `None` (logged) when there is none.
    pub async fn connect(on_click: impl Fn() + Send + 'static) -> Option<Self> {
        use futures_util::StreamExt;
        let made = async {
            let bus = zbus::Connection::session().await?;
            let proxy = NotificationsProxy::new(&bus).await?;
            let clicks = proxy.receive_action_invoked().await?;
            Ok::<_, zbus::Error>((proxy, clicks))
        };
        let (proxy, mut clicks) = match made.await {
            Ok(made) => made,
            Err(err) => {
                tracing::info!(%err, "no desktop notification server: nothing is shown on the desktop");
                return None;
            }
        };
        tracing::info!("desktop notifications go to the session's notification server");
        let shown = std::sync::Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
        let ours = shown.clone();
        let clicks = tokio::spawn(async move {
            while let Some(click) = clicks.next().await {
                let Ok(args) = click.args() else { continue };
                let mine = ours
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains(&args.id);
                if mine {
                    on_click();
                }
            }
        });
        Some(Self {
            proxy,
            shown,
            clicks,
        })
    }

    /// Shows one notification (its "default" action is a click on it).
    pub async fn show(&self, summary: &str, body: &str) {
        let shown = self
            .proxy
            .notify(
                "Chroxy",
                0,
                "",
                summary,
                &plain(body),
                &["default", "Open Chroxy"],
                std::collections::HashMap::new(),
                -1,
            )
            .await;
        match shown {
            Ok(id) => {
                self.shown
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(id);
            }
            Err(err) => tracing::warn!(%err, "the desktop did not show a notification"),
        }
    }
}

/// Shows desktop notifications (none on this system yet).
#[cfg(not(target_os = "linux"))]
pub struct Notifier;

#[cfg(not(target_os = "linux"))]
impl Notifier {
    /// There is no notification server to connect to here.
    pub async fn connect(_on_click: impl Fn() + Send + 'static) -> Option<Self> {
        tracing::info!("desktop notifications are shown on Linux only for now");
        None
    }

    /// Never called: `connect` gives none.
    pub async fn show(&self, _summary: &str, _body: &str) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_desk_hears_of_trouble_always_and_of_prompts_only_with_no_phone_to_tell() {
        let failed = Notice::supervisor(NoticeKind::Failed);
        assert!(words(&failed, 2).unwrap().0.contains("stopped"));
        assert!(words(&Notice::supervisor(NoticeKind::RolledBack), 1).is_some());
        let mut asked = Notice::about(NoticeKind::Permission, "s-1", "backend");
        asked.tool = Some("Bash".into());
        assert_eq!(words(&asked, 1), None, "the phone is told");
        let (summary, body) = words(&asked, 0).unwrap();
        assert_eq!(summary, "Claude is waiting for your OK");
        assert!(body.starts_with("Bash in “backend”"), "{body}");
        let question = Notice::about(NoticeKind::Question, "s-1", "backend");
        assert!(words(&question, 0).is_some());
        assert_eq!(words(&question, 3), None);
        let done = Notice::about(NoticeKind::TurnDone, "s-1", "backend");
        assert_eq!(words(&done, 0), None);
    }

    #[test]
    fn a_name_is_never_markup_in_a_notification_body() {
        let mut asked = Notice::about(NoticeKind::Permission, "s-1", "<a href=\"x\">pay</a> & co");
        asked.tool = Some("<img src=x>".into());
        let (_, body) = words(&asked, 0).unwrap();
        let shown = plain(&body);
        assert!(!shown.contains('<') && !shown.contains('>'), "{shown}");
        assert!(
            shown.contains("&lt;a href=\"x\"&gt;pay&lt;/a&gt; &amp; co"),
            "{shown}"
        );
    }
}
