//! The tray app under test: a virtual display (Xvfb), a private D-Bus session bus, and
//! the app either driven through tauri-driver + WebKitWebDriver (its window is a
//! WebDriver session) or run directly (to see its exit status and process tree).

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::Stdio;

use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use super::browser::Browser;
use super::supervisor::Sup;
use super::{eventually, log_file, package_bin, test_env, Home, WorkerOpts, WAIT};

/// The tray app's binary (built by `cargo test --workspace`).
pub fn desktop_bin() -> &'static str {
    package_bin(
        "chroxy-desktop",
        option_env!("CARGO_BIN_EXE_chroxy-desktop"),
    )
}

/// An X server of our own on a free display number.
pub struct Display {
    _xvfb: Child,
    pub name: String,
}

impl Display {
    pub async fn start() -> Self {
        let mut xvfb = Command::new("Xvfb")
            .args([
                "-displayfd",
                "1",
                "-screen",
                "0",
                "1280x1024x24",
                "-nolisten",
                "tcp",
                // An X server resets when its last client leaves, and refuses
                // connections meanwhile. A desktop never does (its window manager and
                // panel stay); here the tray app holds no connection, so a window
                // closed and shown again would meet the reset.
                "-noreset",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("Xvfb is missing: run ./scripts/test, which installs xvfb");
        let mut lines = BufReader::new(xvfb.stdout.take().unwrap()).lines();
        let number = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("Xvfb never said its display")
            .unwrap()
            .expect("Xvfb exited");
        Self {
            _xvfb: xvfb,
            name: format!(":{}", number.trim()),
        }
    }
}

/// A private session bus (the single-instance check and the tray menu live on it).
pub struct Bus {
    pid: i32,
    pub address: String,
}

impl Bus {
    /// The bus, and every service it starts on demand (GTK's accessibility bus, for
    /// one), in the test's `home` and `xdg` directories: none of them writes into the
    /// real home.
    pub async fn start(home: &Home, xdg: &std::path::Path) -> Self {
        let out = Command::new("dbus-daemon")
            .args(["--session", "--fork", "--print-address=1", "--print-pid=1"])
            .env("HOME", home.user_home())
            .env("XDG_CONFIG_HOME", xdg.join("config"))
            .env("XDG_DATA_HOME", xdg.join("data"))
            .env("XDG_CACHE_HOME", xdg.join("cache"))
            .env("XDG_RUNTIME_DIR", xdg.join("runtime"))
            .stderr(Stdio::null())
            .output()
            .await
            .expect("dbus-daemon is missing: run ./scripts/test");
        let text = String::from_utf8(out.stdout).unwrap();
        let mut lines = text.lines();
        let address = lines.next().expect("a bus address").to_owned();
        let pid = lines.next().expect("a bus pid").trim().parse().unwrap();
        Self { pid, address }
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid),
            nix::sys::signal::Signal::SIGTERM,
        );
    }
}

/// A panel's StatusNotifierWatcher and a notification server on `bus`
/// (`fake-tray-host`), as a desktop that shows tray icons has; gone with this value.
pub struct TrayHost {
    _child: tokio::process::Child,
    said: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl TrayHost {
    /// `click`: a person clicks each notification as it shows.
    async fn start(bus: &Bus, click: bool) -> Self {
        use tokio::io::AsyncBufReadExt;
        let mut child = Command::new(super::package_bin(
            "fake-tray-host",
            option_env!("CARGO_BIN_EXE_fake-tray-host"),
        ))
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env("FAKE_NOTIFICATIONS_CLICK", if click { "1" } else { "0" })
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("starting fake-tray-host");
        let mut said = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let ready = tokio::time::timeout(super::WAIT, said.next_line()).await;
        assert!(
            matches!(ready, Ok(Ok(Some(ref l))) if l == "ready"),
            "fake-tray-host did not take the watcher's name: {ready:?}"
        );
        Self {
            _child: child,
            said,
        }
    }

    /// The next notification the desktop showed (`{summary, body, actions}`), within
    /// WAIT.
    pub async fn notified(&mut self) -> Option<serde_json::Value> {
        let line = tokio::time::timeout(super::WAIT, self.said.next_line()).await;
        let line = line.ok()?.unwrap().expect("fake-tray-host is gone");
        Some(serde_json::from_str(&line).unwrap())
    }
}

/// Everything the app needs on this display and bus, with the test's home and agent.
pub struct Desk {
    /// `None`: a desktop that shows no tray icons (stock GNOME). First, so that it goes
    /// before its bus.
    pub tray_host: Option<TrayHost>,
    pub display: Display,
    pub bus: Bus,
    pub xdg: PathBuf,
    /// WebKit's compositing. The tests turn it off (`WEBKIT_DISABLE_COMPOSITING_MODE=1`,
    /// as they always have: a virtual display has no GPU); the bench leaves it on, as
    /// the app runs by default ([`Desk::as_shipped`]).
    pub compositing: bool,
}

impl Desk {
    /// A desktop whose panel shows tray icons.
    pub async fn start(home: &Home) -> Self {
        let mut desk = Self::without_tray(home).await;
        desk.tray_host = Some(TrayHost::start(&desk.bus, false).await);
        desk
    }

    /// [`Desk::start`], WebKit as the app runs by default: compositing on.
    pub async fn as_shipped(home: &Home) -> Self {
        let mut desk = Self::start(home).await;
        desk.compositing = true;
        desk
    }

    /// [`Desk::start`], with a person who clicks every notification at once.
    pub async fn clicking(home: &Home) -> Self {
        let mut desk = Self::without_tray(home).await;
        desk.tray_host = Some(TrayHost::start(&desk.bus, true).await);
        desk
    }

    /// A desktop with no tray host on its session bus.
    pub async fn without_tray(home: &Home) -> Self {
        let xdg = home.dir.path().join("xdg");
        for sub in ["config", "data", "cache", "runtime"] {
            std::fs::create_dir_all(xdg.join(sub)).unwrap();
        }
        std::fs::set_permissions(
            xdg.join("runtime"),
            std::os::unix::fs::PermissionsExt::from_mode(0o700),
        )
        .unwrap();
        Self {
            tray_host: None,
            display: Display::start().await,
            bus: Bus::start(home, &xdg).await,
            xdg,
            compositing: false,
        }
    }

    /// The app's environment: the test's (home, token, agent) plus this display and bus.
    pub fn env(&self, home: &Home, opts: &WorkerOpts) -> Vec<(String, OsString)> {
        let mut env = test_env(home, opts);
        env.extend([
            ("DISPLAY".into(), self.display.name.clone().into()),
            (
                "DBUS_SESSION_BUS_ADDRESS".into(),
                self.bus.address.clone().into(),
            ),
            ("XDG_CONFIG_HOME".into(), self.xdg.join("config").into()),
            ("XDG_DATA_HOME".into(), self.xdg.join("data").into()),
            ("XDG_CACHE_HOME".into(), self.xdg.join("cache").into()),
            ("XDG_RUNTIME_DIR".into(), self.xdg.join("runtime").into()),
            ("CHROXY_LOG".into(), "info,chroxy=debug".into()),
        ]);
        if !self.compositing {
            env.push(("WEBKIT_DISABLE_COMPOSITING_MODE".into(), "1".into()));
        }
        env
    }

    /// The app run directly, as a user starts it.
    pub fn command(&self, home: &Home, opts: &WorkerOpts, args: &[&str]) -> (Command, PathBuf) {
        let log = log_file(home, "desktop");
        let mut cmd = Command::new(desktop_bin());
        cmd.env_clear()
            .envs(self.env(home, opts))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true);
        (cmd, log)
    }

    /// The app as Start at login runs it (`--minimized`, no tunnel, on the test's
    /// project), started directly; with its supervisor, once that is up.
    pub async fn at_login(&self, home: &Home, opts: &WorkerOpts) -> (Child, Sup) {
        let project = home.project();
        let mut args = app_args("none", &project);
        args.push("--minimized");
        let (mut cmd, log) = self.command(home, opts, &args);
        let app = cmd.spawn().unwrap();
        (app, Sup::attach(home, log).await)
    }

    /// The app started by tauri-driver; its window is the returned session.
    pub async fn drive(
        &self,
        home: &Home,
        opts: &WorkerOpts,
        args: &[&str],
        shots: &str,
    ) -> Driven {
        self.drive_app(desktop_bin(), home, opts, args, shots).await
    }

    /// [`drive`](Self::drive) with the app's binary at `app`.
    pub async fn drive_app(
        &self,
        app: &str,
        home: &Home,
        opts: &WorkerOpts,
        args: &[&str],
        shots: &str,
    ) -> Driven {
        let driver = std::env::var_os("CHROXY_TEST_TAURI_DRIVER")
            .map(PathBuf::from)
            .or_else(|| which::which("tauri-driver").ok())
            .expect("tauri-driver is missing: run ./scripts/test (it installs it into target/tools) or set CHROXY_TEST_TAURI_DRIVER");
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port()
        };
        let (port, native) = (free(), free());
        let log = log_file(home, "tauri-driver");
        let child = super::Group::spawn(
            Command::new(driver)
                .args([
                    "--port",
                    &port.to_string(),
                    "--native-port",
                    &native.to_string(),
                ])
                .env_clear()
                .envs(self.env(home, opts))
                .stdin(Stdio::null())
                .stdout(std::fs::File::create(&log).unwrap())
                .stderr(std::fs::File::create(log.with_extension("err")).unwrap()),
        );
        // tauri-driver listens at once, but forwards to the WebKitWebDriver it starts
        // beside it: a session asked for before that one listens is dropped unanswered
        // (seen on a loaded CI machine). Both ports, then.
        eventually("tauri-driver and WebKitWebDriver listen", async || {
            for (listener, what) in [(port, "tauri-driver"), (native, "WebKitWebDriver")] {
                if let Err(e) = tokio::net::TcpStream::connect(("127.0.0.1", listener)).await {
                    return Err(format!(
                        "{what} on port {listener}: {e}; its log: {}",
                        log.display()
                    ));
                }
            }
            Ok(())
        })
        .await;
        let mut caps = serde_json::Map::new();
        caps.insert(
            "tauri:options".into(),
            json!({"application": app, "args": args}),
        );
        // The session's creation is what launches the app.
        let launched = std::time::Instant::now();
        let window = Browser::connect(port, caps, shots, None).await;
        Driven {
            window,
            _driver: child,
            log,
            launched,
        }
    }
}

/// The app in a WebDriver session.
pub struct Driven {
    pub window: Browser,
    _driver: super::Group,
    pub log: PathBuf,
    /// When the app was launched.
    pub launched: std::time::Instant,
}

/// The tray icon's menu as a panel sees it: the app's StatusNotifierItem and its
/// `com.canonical.dbusmenu` object on the session bus, driven with `gdbus`.
pub struct TrayMenu {
    bus: String,
    dest: String,
}

/// Where a StatusNotifierItem served by `ksni` is, and its menu.
const ITEM: &str = "/StatusNotifierItem";
const MENU: &str = "/MenuBar";

/// One entry of the menu.
#[derive(Debug, Clone)]
pub struct MenuEntry {
    pub id: i32,
    pub label: String,
    /// 1 checked, 0 not; `None` for plain items.
    pub toggle: Option<i32>,
}

impl TrayMenu {
    async fn gdbus(bus: &str, args: &[&str]) -> Result<String, String> {
        let out = Command::new("gdbus")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", bus)
            .output()
            .await
            .expect("gdbus is missing: run ./scripts/test (libglib2.0-bin)");
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Waits until process `pid` has put its tray item on `bus`.
    pub async fn find(bus: &Bus, pid: u32) -> Self {
        eventually(&format!("process {pid} exports a tray item"), async || {
            Self::try_find(&bus.address, pid)
                .await
                .ok_or("none on the bus")
        })
        .await
    }

    /// The tray item of process `pid` on `bus`, if it has one now.
    pub async fn try_find_on(bus: &Bus, pid: u32) -> Option<Self> {
        Self::try_find(&bus.address, pid).await
    }

    async fn try_find(bus: &str, pid: u32) -> Option<Self> {
        let dbus = [
            "call",
            "--session",
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
        ];
        let names = Self::gdbus(
            bus,
            &[&dbus[..], &["org.freedesktop.DBus.ListNames"]].concat(),
        )
        .await
        .ok()?;
        for name in names.split('\'').filter(|n| n.starts_with(':')) {
            // Names come and go (each gdbus call is one): skip those gone.
            let Ok(owner) = Self::gdbus(
                bus,
                &[
                    &dbus[..],
                    &["org.freedesktop.DBus.GetConnectionUnixProcessID", name],
                ]
                .concat(),
            )
            .await
            else {
                continue;
            };
            if owner.trim() != format!("(uint32 {pid},)") {
                continue;
            }
            // The app has several connections (the tray's, the single-instance
            // check's, the keyring's): the tray item is on one of them.
            let Ok(tree) = Self::gdbus(
                bus,
                &[
                    "introspect",
                    "--session",
                    "--dest",
                    name,
                    "--object-path",
                    ITEM,
                ],
            )
            .await
            else {
                continue;
            };
            if !tree.contains("org.kde.StatusNotifierItem") {
                continue;
            }
            return Some(Self {
                bus: bus.to_owned(),
                dest: name.to_owned(),
            });
        }
        None
    }

    async fn call(&self, path: &str, method: &str, args: &[&str]) -> String {
        let mut all = vec![
            "call",
            "--session",
            "--dest",
            &self.dest,
            "--object-path",
            path,
            "--method",
            method,
            // Arguments like `-1` are not options.
            "--",
        ];
        all.extend_from_slice(args);
        Self::gdbus(&self.bus, &all)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// Every entry, submenus flattened (separators have no label and are left out).
    pub async fn entries(&self) -> Vec<MenuEntry> {
        let layout = self
            .call(MENU, "com.canonical.dbusmenu.GetLayout", &["0", "-1", "[]"])
            .await;
        // `<(7, {'label': <'Quit Chroxy'>, 'toggle-state': <1>, …}, @av [])>`
        let mut entries = Vec::new();
        for part in layout.split("<(").skip(1) {
            let Some((id, rest)) = part.split_once(", {") else {
                continue;
            };
            let Ok(id) = id.trim().parse() else { continue };
            let props = rest.split('}').next().unwrap_or_default();
            let Some(label) = props
                .split("'label': <'")
                .nth(1)
                .and_then(|l| l.split("'>").next())
            else {
                continue;
            };
            let toggle = props.split("'toggle-state': <").nth(1).and_then(|t| {
                t.trim_start_matches("int32 ")
                    .split('>')
                    .next()
                    .and_then(|n| n.trim().parse().ok())
            });
            entries.push(MenuEntry {
                id,
                label: label.replace('_', ""),
                toggle,
            });
        }
        entries
    }

    /// The entry labelled `label`.
    pub async fn entry(&self, label: &str) -> MenuEntry {
        let entries = self.entries().await;
        entries
            .iter()
            .find(|e| e.label == label)
            .cloned()
            .unwrap_or_else(|| panic!("no `{label}` in the tray menu: {entries:?}"))
    }

    /// Clicks the entry labelled `label`, as a panel does.
    pub async fn click(&self, label: &str) {
        let id = self.entry(label).await.id.to_string();
        self.call(
            MENU,
            "com.canonical.dbusmenu.Event",
            &[&id, "clicked", "<0>", "0"],
        )
        .await;
    }

    /// The colour of the icon the panel is told to show (a PNG file the app wrote),
    /// sampled inside its rounded square, left of the glyph.
    pub async fn icon_colour(&self) -> [u8; 3] {
        let reply = self
            .call(
                ITEM,
                "org.freedesktop.DBus.Properties.Get",
                &["org.kde.StatusNotifierItem", "IconName"],
            )
            .await;
        // `(<'/run/user/…/chroxy-tray-…/chroxy-healthy.png'>,)`
        let path = reply.split('\'').nth(1).expect("an icon file");
        let png = std::fs::read(path).unwrap();
        let mut reader = png::Decoder::new(std::io::Cursor::new(png))
            .read_info()
            .unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let frame = reader.next_frame(&mut buf).unwrap();
        let step = frame.color_type.samples();
        let (x, y) = (frame.width as usize * 8 / 100, frame.height as usize / 2);
        let px = &buf[(y * frame.width as usize + x) * step..];
        [px[0], px[1], px[2]]
    }
}

/// Whether a top-level window titled `title` is mapped on `display`.
pub async fn window_shown(display: &Display, title: &str) -> bool {
    let tree = Command::new("xwininfo")
        .args(["-root", "-tree"])
        .env("DISPLAY", &display.name)
        .output()
        .await
        .expect("xwininfo is missing: run ./scripts/test (x11-utils)");
    let tree = String::from_utf8_lossy(&tree.stdout).into_owned();
    for id in tree
        .lines()
        .filter(|l| l.contains(&format!("\"{title}\"")))
        .filter_map(|l| l.split_whitespace().next())
    {
        let info = Command::new("xwininfo")
            .args(["-id", id])
            .env("DISPLAY", &display.name)
            .output()
            .await
            .unwrap();
        if String::from_utf8_lossy(&info.stdout).contains("Map State: IsViewable") {
            return true;
        }
    }
    false
}

/// The app's options in a test: ports picked by the OS, `tunnel`, the project directory.
pub fn app_args<'a>(tunnel: &'a str, project: &'a std::path::Path) -> Vec<&'a str> {
    vec![
        "--port",
        "0",
        "--status-port",
        "0",
        "--tunnel",
        tunnel,
        "--cwd",
        project.to_str().unwrap(),
    ]
}

/// The text on `display`'s clipboard (empty when nothing is on it).
pub async fn clipboard(display: &Display) -> String {
    let out = Command::new("xclip")
        .args(["-selection", "clipboard", "-o"])
        .env("DISPLAY", &display.name)
        .output()
        .await
        .expect("xclip is missing: run ./scripts/test");
    String::from_utf8_lossy(&out.stdout).into_owned()
}
