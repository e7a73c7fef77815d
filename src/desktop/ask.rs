//! What a person asks of the app — a window's command, by the name its page invokes, or
//! a tray item ([`super::tray::Item::ask`]) — and what the app answers ([`Desktop::answer`]).
//! The table lives here, so the window's buttons and the tray's items that mean the same
//! reach the same call, and it is tested without a display. What needs the desktop
//! itself (the clipboard, the opener, the window, the login items) comes back as a job in
//! the [`Reply`], for the shell to carry out.

use serde::Serialize;
use serde_json::Value;

use super::app::{Desktop, DesktopError};
use super::view::View;
use crate::devices::Decision;
use crate::supervisor::release::ReleaseId;
use crate::supervisor::status::Action;
use crate::tunnel::TunnelChoice;

/// One request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ask {
    /// `view`: the whole view.
    View,
    /// `rollback`: to the known-good release.
    Rollback,
    /// `reconnect`: restart the tunnel, tell every phone to reconnect.
    Reconnect,
    /// `restart`: restart the worker.
    Restart,
    /// `approve_deploy`: `release` is the pending deploy the window showed (so a newer
    /// one is not approved blind).
    ApproveDeploy {
        /// The release shown; `None`: whichever waits.
        release: Option<ReleaseId>,
    },
    /// `refuse_deploy`, as [`Ask::ApproveDeploy`].
    RefuseDeploy {
        /// The release shown; `None`: whichever waits.
        release: Option<ReleaseId>,
    },
    /// `set_tunnel`: switch the tunnel, and remember the choice.
    SetTunnel {
        /// What the person chose.
        choice: TunnelChoice,
    },
    /// `admin_token`: the status page's admin token, for the window's "show" toggle.
    AdminToken,
    /// `copy_link`: the pairing link the QR shows, to the clipboard.
    CopyLink,
    /// `open_status_page`: in the browser.
    OpenStatusPage,
    /// `decide_device`: the window's device buttons.
    DecideDevice {
        /// Approve, refuse or revoke.
        decision: Decision,
        /// The device's id.
        id: String,
    },
    /// `rename_device`: the window's device names.
    RenameDevice {
        /// The device's id.
        id: String,
        /// Its new name.
        name: String,
    },
    /// The tray's "Show window" (the window has no such command, nor the four below).
    ShowWindow,
    /// "Show QR code": the window, scrolled to the QR code.
    ShowQr,
    /// "Start at login", turned over.
    ToggleAutostart,
    /// "Open logs": the log directory.
    OpenLogs,
    /// "Quit Chroxy": in order ([`Desktop::quit`]).
    Quit,
}

impl Ask {
    /// The window's `invoke(name, args)`; `None` when the window has no command `name`.
    pub fn from_window(name: &str, args: &Value) -> Option<Result<Ask, DesktopError>> {
        let arg = |key: &'static str| Arg { name, key, args };
        let ask = || -> Result<Option<Ask>, DesktopError> {
            Ok(Some(match name {
                "view" => Ask::View,
                "rollback" => Ask::Rollback,
                "reconnect" => Ask::Reconnect,
                "restart" => Ask::Restart,
                "approve_deploy" => Ask::ApproveDeploy {
                    release: arg("release").read()?,
                },
                "refuse_deploy" => Ask::RefuseDeploy {
                    release: arg("release").read()?,
                },
                "set_tunnel" => Ask::SetTunnel {
                    choice: arg("choice").read()?,
                },
                "admin_token" => Ask::AdminToken,
                "copy_link" => Ask::CopyLink,
                "open_status_page" => Ask::OpenStatusPage,
                "decide_device" => Ask::DecideDevice {
                    decision: arg("decision").read()?,
                    id: arg("id").read()?,
                },
                "rename_device" => Ask::RenameDevice {
                    id: arg("id").read()?,
                    name: arg("name").read()?,
                },
                _ => return Ok(None),
            }))
        };
        ask().transpose()
    }

    /// Whether the tray is drawn again after this, whatever happened: its checks follow
    /// what the click changed (the tunnel choice is stored after the status changed, and
    /// Start at login is no part of the view).
    pub fn redraws_tray(&self) -> bool {
        matches!(self, Ask::SetTunnel { .. } | Ask::ToggleAutostart)
    }
}

/// One named argument of a window's command.
struct Arg<'a> {
    name: &'a str,
    key: &'static str,
    args: &'a Value,
}

impl Arg<'_> {
    /// The argument, as the command needs it (a missing one is `null`: fine if optional).
    fn read<T: serde::de::DeserializeOwned>(&self) -> Result<T, DesktopError> {
        let value = self.args.get(self.key).cloned().unwrap_or(Value::Null);
        serde_json::from_value(value).map_err(|err| DesktopError::BadArgs {
            command: self.name.to_owned(),
            key: self.key,
            why: err.to_string(),
        })
    }
}

/// What the app answers: for the window (serialized as the command's result), or a job
/// for the shell, which then answers [`Reply::Said`] or [`Reply::Done`] itself.
#[derive(Serialize)]
#[serde(untagged)]
pub enum Reply {
    /// A sentence for the person ("tunnel switched to quick"), or the text asked for.
    Said(String),
    /// The whole view.
    View(Box<View>),
    /// Done; nothing to say (`null` to the window, nothing on the tray).
    Done,
    /// Job: copy the pairing link (it holds the token) to the clipboard.
    #[serde(skip)]
    Copy(String),
    /// Job: open `target`, a page or a folder, with the desktop's opener.
    #[serde(skip)]
    Open {
        /// What it is, for a refusal ("cannot open the status page").
        what: String,
        /// Its URL or path.
        target: String,
    },
    /// Job: bring the window up, in front; `qr`: scrolled to the QR code, which flashes.
    #[serde(skip)]
    Show {
        /// Point at the QR code.
        qr: bool,
    },
    /// Job: turn Start at login over.
    #[serde(skip)]
    ToggleAutostart,
}

/// Names the variant only: a reply may hold the pairing link or the admin token.
impl std::fmt::Debug for Reply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self {
            Reply::Said(_) => "Said",
            Reply::View(_) => "View",
            Reply::Done => "Done",
            Reply::Copy(_) => "Copy",
            Reply::Open { .. } => "Open",
            Reply::Show { .. } => "Show",
            Reply::ToggleAutostart => "ToggleAutostart",
        };
        write!(f, "Reply::{name}(..)")
    }
}

impl Desktop {
    /// Answers `ask`: the supervisor's actions, the device registry, the view; a job
    /// for what only the shell can do.
    pub async fn answer(&self, ask: Ask) -> Result<Reply, DesktopError> {
        let act = |action| self.act(action);
        Ok(match ask {
            Ask::View => Reply::View(Box::new(self.view())),
            Ask::Rollback => Reply::Said(act(Action::Rollback { to: None }).await?),
            Ask::Reconnect => Reply::Said(act(Action::Reconnect).await?),
            Ask::Restart => Reply::Said(act(Action::Restart).await?),
            Ask::ApproveDeploy { release } => {
                Reply::Said(act(Action::ApproveDeploy { release }).await?)
            }
            Ask::RefuseDeploy { release } => {
                Reply::Said(act(Action::RefuseDeploy { release }).await?)
            }
            Ask::SetTunnel { choice } => Reply::Said(self.set_tunnel(choice).await?),
            Ask::AdminToken => Reply::Said(self.admin_token()?),
            Ask::CopyLink => Reply::Copy(self.link()?),
            Ask::OpenStatusPage => Reply::Open {
                what: "the status page".into(),
                target: self.status_page()?,
            },
            Ask::DecideDevice { decision, id } => Reply::Said(self.decide_device(decision, &id)?),
            Ask::RenameDevice { id, name } => Reply::Said(self.rename_device(&id, &name)?),
            Ask::ShowWindow => Reply::Show { qr: false },
            Ask::ShowQr => Reply::Show { qr: true },
            Ask::ToggleAutostart => Reply::ToggleAutostart,
            Ask::OpenLogs => {
                let dir = self.paths().logs_dir();
                Reply::Open {
                    what: dir.display().to_string(),
                    target: dir.to_string_lossy().into_owned(),
                }
            }
            Ask::Quit => {
                self.quit();
                Reply::Done
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::desktop::app::tests::running;
    use crate::pairing::Pairing;
    use crate::store::Paths;
    use crate::token::ApiToken;

    #[test]
    fn a_window_command_is_read_by_name_with_its_arguments() {
        let read = |name: &str, args: Value| Ask::from_window(name, &args);
        let cases = [
            ("view", json!({}), Ask::View),
            ("rollback", json!({}), Ask::Rollback),
            ("reconnect", json!(null), Ask::Reconnect),
            ("restart", json!({}), Ask::Restart),
            (
                "approve_deploy",
                json!({"release": "r-7"}),
                Ask::ApproveDeploy {
                    release: Some("r-7".into()),
                },
            ),
            (
                "refuse_deploy",
                json!({"release": null}),
                Ask::RefuseDeploy { release: None },
            ),
            (
                "set_tunnel",
                json!({"choice": "named"}),
                Ask::SetTunnel {
                    choice: TunnelChoice::Named,
                },
            ),
            ("admin_token", json!({}), Ask::AdminToken),
            ("copy_link", json!({}), Ask::CopyLink),
            ("open_status_page", json!({}), Ask::OpenStatusPage),
            (
                "decide_device",
                json!({"decision": "revoke", "id": "d-1"}),
                Ask::DecideDevice {
                    decision: Decision::Revoke,
                    id: "d-1".into(),
                },
            ),
            (
                "rename_device",
                json!({"id": "d-1", "name": "Anna's phone"}),
                Ask::RenameDevice {
                    id: "d-1".into(),
                    name: "Anna's phone".into(),
                },
            ),
        ];
        for (name, args, ask) in cases {
            assert_eq!(read(name, args).unwrap().unwrap(), ask, "{name}");
        }
        // The tray's own items, and anything else, are no command of the window.
        for name in ["deploy", "quit", "show_window", "open_logs", "View", ""] {
            assert!(read(name, json!({})).is_none(), "{name}");
        }
        let err = read("set_tunnel", json!({})).unwrap().unwrap_err();
        assert!(
            err.to_string()
                .starts_with("invalid args `choice` for command `set_tunnel`: "),
            "{err}"
        );
        let err = read("decide_device", json!({"decision": "maybe", "id": "d-1"}));
        let err = err.unwrap().unwrap_err().to_string();
        assert!(
            err.contains("`decision` for command `decide_device`"),
            "{err}"
        );
    }

    #[test]
    fn only_a_check_item_draws_the_tray_again() {
        let quick = TunnelChoice::Quick;
        assert!(Ask::SetTunnel { choice: quick }.redraws_tray());
        assert!(Ask::ToggleAutostart.redraws_tray());
        for ask in [Ask::View, Ask::Restart, Ask::OpenLogs, Ask::Quit] {
            assert!(!ask.redraws_tray(), "{ask:?}");
        }
    }

    #[tokio::test]
    async fn each_ask_is_answered_by_the_app_or_comes_back_as_a_job_for_the_shell() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::under(dir.path());
        let token = ApiToken::new("secret-api-token");
        let pairing = Pairing::new("https://a.trycloudflare.com", token, [3; 32]).unwrap();
        let desktop = running(paths.clone(), Some(pairing));
        let answer = |ask| desktop.answer(ask);

        let Reply::Said(said) = answer(Ask::Restart).await.unwrap() else {
            panic!("a sentence")
        };
        assert_eq!(said, "done: Restart");
        let release = Some("r-7".into());
        let Reply::Said(said) = answer(Ask::ApproveDeploy { release }).await.unwrap() else {
            panic!("a sentence")
        };
        assert!(
            said.contains("ApproveDeploy") && said.contains("r-7"),
            "{said}"
        );
        let Reply::Said(token) = answer(Ask::AdminToken).await.unwrap() else {
            panic!("the token")
        };
        assert_eq!(token, "admin-token");
        let Reply::View(view) = answer(Ask::View).await.unwrap() else {
            panic!("the view")
        };
        assert_eq!(view.tunnel_choice, TunnelChoice::Quick);

        // The link copied is the one the QR shows, one-time code and all.
        let Reply::Copy(link) = answer(Ask::CopyLink).await.unwrap() else {
            panic!("a job")
        };
        assert_eq!(link, view.pairing.unwrap().link);
        let Reply::Open { what, target } = answer(Ask::OpenStatusPage).await.unwrap() else {
            panic!("a job")
        };
        assert_eq!(
            (what.as_str(), target.as_str()),
            ("the status page", "http://127.0.0.1:8766/")
        );
        let Reply::Open { target, .. } = answer(Ask::OpenLogs).await.unwrap() else {
            panic!("a job")
        };
        assert_eq!(target, paths.logs_dir().to_string_lossy());
        let shown = [Ask::ShowWindow, Ask::ShowQr].map(|ask| async {
            match answer(ask).await.unwrap() {
                Reply::Show { qr } => qr,
                other => panic!("{other:?}"),
            }
        });
        let [window, qr] = shown;
        assert_eq!((window.await, qr.await), (false, true));
        assert!(matches!(
            answer(Ask::ToggleAutostart).await.unwrap(),
            Reply::ToggleAutostart
        ));
        assert!(matches!(answer(Ask::Quit).await.unwrap(), Reply::Done));

        // Refusals are the app's, worded for the person.
        let err = answer(Ask::SetTunnel {
            choice: TunnelChoice::Named,
        });
        assert_eq!(
            err.await.unwrap_err().to_string(),
            "a named tunnel needs its hostname"
        );
        let decide = Ask::DecideDevice {
            decision: Decision::Approve,
            id: "nobody".into(),
        };
        let err = answer(decide).await.unwrap_err();
        assert!(matches!(err, DesktopError::Devices(_)), "{err}");
    }

    #[test]
    fn a_reply_shows_the_window_its_value_and_never_a_secret_in_debug() {
        let json = |reply: &Reply| serde_json::to_value(reply).unwrap();
        assert_eq!(json(&Reply::Said("restarting".into())), json!("restarting"));
        assert_eq!(json(&Reply::Done), json!(null));
        let link = "https://a.trycloudflare.com/#pair=secret-api-token";
        assert_eq!(format!("{:?}", Reply::Copy(link.into())), "Reply::Copy(..)");
        assert_eq!(
            format!("{:?}", Reply::Said("admin-token".into())),
            "Reply::Said(..)"
        );
    }
}
