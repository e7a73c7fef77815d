//! The tray icon itself: a StatusNotifierItem and its menu (com.canonical.dbusmenu) on
//! the session bus, served by `ksni` — pure Rust over D-Bus, so the tray process maps
//! no GTK and no WebKit (tens of megabytes it would hold for its whole life in the
//! tray). It draws [`TrayPlan`]s and reports clicks as [`Item`]s; what a click asks is
//! carried out elsewhere.

use std::path::{Path, PathBuf};

use ksni::menu::{CheckmarkItem, MenuItem, StandardItem, SubMenu};
use ksni::TrayMethods as _;
use tokio::sync::mpsc;

use super::tray::{version_line, Entry, Item, TrayPlan, MENU, TUNNELS};
use super::view::Look;

/// Why there is no tray icon.
#[derive(Debug, thiserror::Error)]
pub enum TrayIconError {
    /// The icon's pictures could not be written where the panel reads them.
    #[error("cannot write the tray icon's pictures into {dir}: {source}")]
    Pictures {
        /// Where.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// No session bus, or it refused the item.
    #[error("cannot put the tray icon on the session bus: {0}")]
    Bus(#[from] ksni::Error),
}

/// The icon on the bus, following the plans it is given.
pub struct TrayIcon {
    handle: ksni::Handle<Served>,
    /// The pictures the panel reads, removed with the icon.
    _pictures: tempfile::TempDir,
}

/// What ksni serves: the plan drawn now, and where clicks go.
struct Served {
    plan: TrayPlan,
    pictures: PathBuf,
    clicks: mpsc::UnboundedSender<Item>,
}

impl TrayIcon {
    /// Puts the icon for `plan` on the session bus; every click on it is sent to
    /// `clicks` (a left click on the icon is [`Item::Show`]). Started before the panel
    /// (at login), it appears once the panel's watcher does.
    pub async fn spawn(
        plan: TrayPlan,
        clicks: mpsc::UnboundedSender<Item>,
    ) -> Result<Self, TrayIconError> {
        let pictures = write_pictures()?;
        let served = Served {
            plan,
            pictures: pictures.path().to_owned(),
            clicks,
        };
        let handle = served.assume_sni_available(true).spawn().await?;
        Ok(Self {
            handle,
            _pictures: pictures,
        })
    }

    /// Draws `plan`. (`ksni` sends the panel only what changed, and the panel shows
    /// the checks as the menu says: a click does not toggle one by itself.)
    pub async fn show(&self, plan: TrayPlan) {
        self.handle.update(|served| served.plan = plan).await;
    }
}

/// The four pictures, one file per look (a panel caches a picture by its name), in a
/// private directory of the session's runtime directory.
fn write_pictures() -> Result<tempfile::TempDir, TrayIconError> {
    let parent = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|dir| dir.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let failed = |source| TrayIconError::Pictures {
        dir: parent.clone(),
        source,
    };
    let dir = tempfile::Builder::new()
        .prefix("chroxy-tray-")
        .tempdir_in(&parent)
        .map_err(failed)?;
    for look in [
        Look::Healthy,
        Look::Restarting,
        Look::TunnelDown,
        Look::Failed,
    ] {
        let png = TrayPlan::icon_of(look);
        std::fs::write(picture(dir.path(), look), png).map_err(failed)?;
    }
    Ok(dir)
}

fn picture(dir: &Path, look: Look) -> PathBuf {
    dir.join(format!("chroxy-{look:?}.png").to_lowercase())
}

impl Served {
    fn item(&self, item: Item, label: &str) -> MenuItem<Self> {
        let click = move |served: &mut Served| {
            let _ = served.clicks.send(item);
        };
        match self.plan.check(item) {
            Some(checked) => CheckmarkItem {
                label: label.into(),
                checked,
                activate: Box::new(click),
                ..Default::default()
            }
            .into(),
            None => StandardItem {
                label: label.into(),
                activate: Box::new(click),
                ..Default::default()
            }
            .into(),
        }
    }
}

/// A line to read, not to click.
fn line(label: String) -> MenuItem<Served> {
    StandardItem {
        label,
        enabled: false,
        ..Default::default()
    }
    .into()
}

impl ksni::Tray for Served {
    fn id(&self) -> String {
        "chroxy".into()
    }

    fn title(&self) -> String {
        "Chroxy".into()
    }

    fn icon_name(&self) -> String {
        picture(&self.pictures, self.plan.look)
            .to_string_lossy()
            .into_owned()
    }

    fn tool_tip(&self) -> ksni::ToolTip {
        ksni::ToolTip {
            title: self.plan.tooltip.clone(),
            ..Default::default()
        }
    }

    fn activate(&mut self, _x: i32, _y: i32) {
        let _ = self.clicks.send(Item::Show);
    }

    fn menu(&self) -> Vec<MenuItem<Self>> {
        MENU.iter()
            .map(|entry| match *entry {
                Entry::Status => line(self.plan.status.clone()),
                Entry::Version => line(version_line()),
                Entry::One(item, label) => self.item(item, label),
                Entry::Separator => MenuItem::Separator,
                Entry::Tunnels => SubMenu {
                    label: "Tunnel".into(),
                    submenu: TUNNELS
                        .iter()
                        .map(|(choice, label)| self.item(Item::Tunnel(*choice), label))
                        .collect(),
                    ..Default::default()
                }
                .into(),
            })
            .collect()
    }
}
