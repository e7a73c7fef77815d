//! The window, a process of its own. The tray process (supervisor, icon, menu) maps no
//! GTK and no WebKit; the window (`chroxy-desktop-window`, Tauri) is started when it is
//! shown and ends when it is closed, and all it weighs goes with it. The two speak JSON
//! lines over the window process's stdin and stdout — a private channel nobody else
//! holds: the window process moves them off fds 0 and 1 before it starts anything, so
//! WebKit's processes never inherit them.
//!
//! - The window's page invokes a command: [`FromWindow::Invoke`], answered with
//!   [`ToWindow::Reply`] — the tray process holds the app, so the answer is the same as a
//!   tray click's.
//! - The tray process sends the page its events ([`ToWindow::Emit`]: the view at every
//!   change, a tray click's answer) and asks the window up ([`ToWindow::Show`], which the
//!   window confirms with [`FromWindow::Shown`]).
//!
//! [`Window`] is the tray process's side, [`Link`] the window process's.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::{SinkExt, StreamExt};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::unix::pipe;
use tokio::process::Command;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::codec::{FramedRead, FramedWrite, LinesCodec};
use tokio_util::sync::CancellationToken;

/// The window's program, installed beside the tray app's.
const WINDOW_PROGRAM: &str = "chroxy-desktop-window";

/// The longest line either side accepts: a whole view is a few kilobytes.
const MAX_LINE: usize = 4 << 20;

/// How long a running window has to confirm a [`ToWindow::Show`] before it is taken
/// for gone (closing, or hung) and a new one is started.
const SHOW_ACK: Duration = Duration::from_secs(10);

/// What the window process says to the tray process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum FromWindow {
    /// The page's `invoke(command, args)`; answered by a [`ToWindow::Reply`] with `id`.
    Invoke {
        /// Names the answer.
        id: u64,
        /// The command's name.
        command: String,
        /// Its arguments.
        args: Value,
    },
    /// A [`ToWindow::Show`] was carried out: the window is up, in front.
    Shown,
}

/// What the tray process says to the window process.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ToWindow {
    /// The answer to the [`FromWindow::Invoke`] with `id`: the command's result, or the
    /// sentence saying why not.
    Reply {
        /// The invoke's id.
        id: u64,
        /// What the page's `invoke` resolves to, or rejects with.
        answer: Result<Value, String>,
    },
    /// An event for the page.
    Emit {
        /// Its name ("view", "answer", "show-qr").
        event: String,
        /// Its payload.
        payload: Value,
    },
    /// Bring the window up, in front; `qr`: scrolled to the QR code, which flashes.
    Show {
        /// Point at the QR code.
        qr: bool,
    },
}

/// Why the window cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum WindowError {
    /// Its program is not where the tray app is.
    #[error("the window's program {} is missing: reinstall Chroxy (from source: `cargo build --release -p chroxy-desktop`)", program.display())]
    NoProgram {
        /// Where it should be.
        program: PathBuf,
    },
    /// The window's process was not started by the tray app (its stdin and stdout are
    /// not the tray app's pipes).
    #[error(
        "the window is started by Chroxy's tray app: run `chroxy-desktop` (it shows the window)"
    )]
    NotFromTheTray,
    /// The window's process cannot take its channel off stdin and stdout.
    #[error("cannot take the tray app's channel: {0}")]
    Channel(std::io::Error),
    /// It could not be started.
    #[error("cannot start the window ({program}): {source}")]
    Start {
        /// What was started.
        program: PathBuf,
        /// Why it failed.
        source: std::io::Error,
    },
}

/// A line of the window process's stderr into the tray app's log, so "Open logs" tells
/// why a window failed: its own log at its level; a line without one (GTK's, WebKit's,
/// a panic's) as a warning.
fn log_window_line(level: Option<tracing::Level>, line: &str) {
    use tracing::Level;
    match level {
        Some(Level::ERROR) => tracing::error!(target: "window", "{line}"),
        Some(Level::INFO) => tracing::info!(target: "window", "{line}"),
        Some(Level::DEBUG | Level::TRACE) => tracing::debug!(target: "window", "{line}"),
        Some(Level::WARN) | None => tracing::warn!(target: "window", "{line}"),
    }
}

/// Answers the page's commands: its name and arguments → what `invoke` resolves to.
pub type Answerer =
    Arc<dyn Fn(String, Value) -> BoxFuture<'static, Result<Value, String>> + Send + Sync>;

/// The tray process's side: the window process, started when the window is shown and
/// gone when it is closed.
pub struct Window {
    program: PathBuf,
    answer: Answerer,
    /// The running window, if any.
    open: Arc<Mutex<Option<Open>>>,
    /// One [`Window::show`] at a time: two clicks never start two windows.
    showing: tokio::sync::Mutex<()>,
    /// Numbers the window processes, so one that ends never clears its successor.
    started: AtomicU64,
}

/// A running window process.
struct Open {
    number: u64,
    to: mpsc::UnboundedSender<ToWindow>,
    /// How many [`FromWindow::Shown`] it has said.
    shown: watch::Receiver<u64>,
    /// Kills it (a window that no longer answers, replaced).
    kill: CancellationToken,
}

impl Window {
    /// The window whose program is `program`; `answer` answers its page's commands.
    pub fn new(program: PathBuf, answer: Answerer) -> Self {
        Self {
            program,
            answer,
            open: Arc::new(Mutex::new(None)),
            showing: tokio::sync::Mutex::new(()),
            started: AtomicU64::new(0),
        }
    }

    /// The window's program as installed: beside this one.
    pub fn installed_program() -> PathBuf {
        let me = std::env::current_exe().unwrap_or_default();
        me.with_file_name(WINDOW_PROGRAM)
    }

    /// Brings the window up, in front: the running one, or a new one; `qr`: scrolled to
    /// the QR code, which flashes.
    pub async fn show(&self, qr: bool) -> Result<(), WindowError> {
        let _one = self.showing.lock().await;
        let running = self
            .lock()
            .as_ref()
            .map(|o| (o.to.clone(), o.shown.clone()));
        if let Some((to, mut shown)) = running {
            shown.borrow_and_update();
            if to.send(ToWindow::Show { qr }).is_ok() {
                match tokio::time::timeout(SHOW_ACK, shown.changed()).await {
                    Ok(Ok(())) => return Ok(()),
                    // It ended: its window was being closed as the click came.
                    Ok(Err(_)) => {}
                    Err(_) => tracing::warn!("the window did not answer: starting a new one"),
                }
            }
            if let Some(stale) = self.lock().take() {
                stale.kill.cancel();
            }
        }
        self.start(qr)
    }

    /// Sends the page the event `event`, if a window is open (a closed one reads the
    /// whole view when it opens).
    pub fn emit(&self, event: &str, payload: impl Serialize) {
        let Some(to) = self.lock().as_ref().map(|o| o.to.clone()) else {
            return;
        };
        match serde_json::to_value(payload) {
            Ok(payload) => {
                let event = event.to_owned();
                let _ = to.send(ToWindow::Emit { event, payload });
            }
            Err(err) => tracing::warn!(%err, event, "cannot send the window an event"),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Open>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a window process and the tasks that speak with it.
    fn start(&self, qr: bool) -> Result<(), WindowError> {
        let mut cmd = Command::new(&self.program);
        // The window and WebKit need none of Chroxy's settings or secrets (a token in
        // CHROXY_TOKEN, a tunnel's): only the log filter.
        crate::agent::env::withhold_private(&mut cmd, &[crate::environment::LOG_FILTER]);
        cmd.args(qr.then_some("--qr"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let failed = |source: std::io::Error| match source.kind() {
            std::io::ErrorKind::NotFound => WindowError::NoProgram {
                program: self.program.clone(),
            },
            _ => WindowError::Start {
                program: self.program.clone(),
                source,
            },
        };
        let mut child = cmd.spawn().map_err(failed)?;
        let (Some(stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            unreachable!("all three piped above");
        };
        let number = self.started.fetch_add(1, Ordering::SeqCst);
        let (to, outgoing) = mpsc::unbounded_channel();
        let (said_shown, shown) = watch::channel(0);
        let kill = CancellationToken::new();
        tracing::info!(pid = child.id(), "window opened");
        tokio::spawn(write_lines(FramedWrite::new(stdin, codec()), outgoing));
        tokio::spawn(crate::process::log_lines(stderr, log_window_line));
        tokio::spawn(answer_window(
            stdout,
            to.clone(),
            said_shown,
            self.answer.clone(),
        ));
        let (open, killing) = (self.open.clone(), kill.clone());
        tokio::spawn(async move {
            let ended = tokio::select! {
                ended = child.wait() => ended,
                () = killing.cancelled() => {
                    let _ = child.start_kill();
                    child.wait().await
                }
            };
            {
                let mut open = open.lock().unwrap_or_else(|e| e.into_inner());
                if open.as_ref().is_some_and(|o| o.number == number) {
                    *open = None;
                }
            }
            match ended {
                Ok(status) if status.success() => {
                    tracing::info!("window closed: its process is gone until shown again")
                }
                Ok(status) => {
                    let how = crate::process::describe(&status);
                    tracing::warn!(
                        how,
                        "the window's process ended badly (its lines above say why)"
                    )
                }
                Err(err) => tracing::warn!(%err, "the window's process could not be waited for"),
            }
        });
        *self.lock() = Some(Open {
            number,
            to,
            shown,
            kill,
        });
        Ok(())
    }
}

fn codec() -> LinesCodec {
    LinesCodec::new_with_max_length(MAX_LINE)
}

/// Writes every message of `outgoing`, one JSON line each, until either side is gone.
async fn write_lines<W: AsyncWrite + Unpin, M: Serialize>(
    mut lines: FramedWrite<W, LinesCodec>,
    mut outgoing: mpsc::UnboundedReceiver<M>,
) {
    while let Some(message) = outgoing.recv().await {
        let line = serde_json::to_string(&message).expect("messages serialize");
        if lines.send(line).await.is_err() {
            return;
        }
    }
}

/// The tray process reads its window: each invoke answered in a task of its own (a
/// slow action does not hold the view back), each confirmed show counted.
async fn answer_window(
    stdout: impl AsyncRead + Unpin,
    to: mpsc::UnboundedSender<ToWindow>,
    shown: watch::Sender<u64>,
    answer: Answerer,
) {
    let mut lines = FramedRead::new(stdout, codec());
    while let Some(line) = lines.next().await {
        let line = match line {
            Ok(line) => line,
            Err(err) => {
                tracing::warn!(%err, "the window's channel broke");
                return;
            }
        };
        match serde_json::from_str(&line) {
            Ok(FromWindow::Invoke { id, command, args }) => {
                let (to, answer) = (to.clone(), answer.clone());
                tokio::spawn(async move {
                    let answer = answer(command, args).await;
                    let _ = to.send(ToWindow::Reply { id, answer });
                });
            }
            Ok(FromWindow::Shown) => shown.send_modify(|n| *n += 1),
            // Not a message: something in the window process wrote to its stdout.
            Err(err) => tracing::warn!(%err, "a line from the window that is no message"),
        }
    }
}

/// What the window process is told, besides the answers to its invokes.
#[derive(Debug)]
pub enum Told {
    /// An event for the page.
    Emit {
        /// Its name.
        event: String,
        /// Its payload.
        payload: Value,
    },
    /// Bring the window up, then say so ([`Link::shown`]); with no window to bring up
    /// (it is closing), end instead: the tray app then starts a new one.
    Show {
        /// Scrolled to the QR code.
        qr: bool,
    },
    /// The tray process is gone (it quit): the window goes too.
    Gone,
}

/// The page's invokes waiting for the tray app's answer, by id.
type Waiting = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, String>>>>>;

/// The window process's side.
pub struct Link {
    to: mpsc::UnboundedSender<FromWindow>,
    waiting: Waiting,
    next: AtomicU64,
}

/// The channel's two ends, taken off stdin and stdout ([`Link::take_stdio`]).
pub struct LinkFds {
    from_tray: OwnedFd,
    to_tray: OwnedFd,
}

impl LinkFds {
    /// Two ends of pipes (a test's own).
    pub fn new(from_tray: OwnedFd, to_tray: OwnedFd) -> Self {
        Self { from_tray, to_tray }
    }
}

impl Link {
    /// Takes the channel off stdin and stdout, and points them elsewhere (stdin at
    /// /dev/null, stdout at stderr) so nothing this process starts — WebKit's
    /// processes — inherits it. First thing in `main`: before any thread or child.
    pub fn take_stdio() -> Result<LinkFds, WindowError> {
        use std::os::unix::fs::FileTypeExt;
        let pipe = |fd: std::os::fd::BorrowedFd<'_>| -> std::io::Result<Option<OwnedFd>> {
            let fd = fd.try_clone_to_owned()?;
            let kind = std::fs::File::from(fd.try_clone()?).metadata()?.file_type();
            Ok(kind.is_fifo().then_some(fd))
        };
        let (Some(from_tray), Some(to_tray)) = (
            pipe(std::io::stdin().as_fd()).map_err(WindowError::Channel)?,
            pipe(std::io::stdout().as_fd()).map_err(WindowError::Channel)?,
        ) else {
            return Err(WindowError::NotFromTheTray);
        };
        let moved = || -> std::io::Result<()> {
            let null = std::fs::File::open("/dev/null")?;
            nix::unistd::dup2_stdin(&null)?;
            nix::unistd::dup2_stdout(std::io::stderr())?;
            Ok(())
        };
        moved().map_err(WindowError::Channel)?;
        Ok(LinkFds { from_tray, to_tray })
    }

    /// Speaks with the tray process over `stdio`; everything it tells goes to `told`,
    /// [`Told::Gone`] last. Inside the async runtime.
    pub fn start(stdio: LinkFds, told: impl Fn(Told) + Send + 'static) -> std::io::Result<Self> {
        let from_tray = pipe::Receiver::from_owned_fd(stdio.from_tray)?;
        let to_tray = pipe::Sender::from_owned_fd(stdio.to_tray)?;
        let (to, outgoing) = mpsc::unbounded_channel();
        tokio::spawn(write_lines(FramedWrite::new(to_tray, codec()), outgoing));
        let waiting = Arc::new(Mutex::new(HashMap::new()));
        tokio::spawn(read_tray(from_tray, waiting.clone(), told));
        Ok(Self {
            to,
            waiting,
            next: AtomicU64::new(0),
        })
    }

    /// The page's `invoke(command, args)`, answered by the tray process.
    pub async fn invoke(&self, command: &str, args: Value) -> Result<Value, String> {
        let id = self.next.fetch_add(1, Ordering::SeqCst);
        let (answered, answer) = oneshot::channel();
        let waiting = || self.waiting.lock().unwrap_or_else(|e| e.into_inner());
        waiting().insert(id, answered);
        let command = command.to_owned();
        if self
            .to
            .send(FromWindow::Invoke { id, command, args })
            .is_err()
        {
            waiting().remove(&id);
        }
        answer
            .await
            .unwrap_or_else(|_| Err("Chroxy's tray app is gone".into()))
    }

    /// A [`Told::Show`] was carried out: the window is up, in front.
    pub fn shown(&self) {
        let _ = self.to.send(FromWindow::Shown);
    }
}

/// The window process reads the tray process: answers to their invokes, the rest told.
async fn read_tray(from_tray: pipe::Receiver, waiting: Waiting, told: impl Fn(Told)) {
    let mut lines = FramedRead::new(from_tray, codec());
    while let Some(Ok(line)) = lines.next().await {
        match serde_json::from_str(&line) {
            Ok(ToWindow::Reply { id, answer }) => {
                let answered = waiting
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&id);
                if let Some(answered) = answered {
                    let _ = answered.send(answer);
                }
            }
            Ok(ToWindow::Emit { event, payload }) => told(Told::Emit { event, payload }),
            Ok(ToWindow::Show { qr }) => told(Told::Show { qr }),
            Err(err) => tracing::warn!(%err, "a line from the tray process that is no message"),
        }
    }
    // Every invoke still waiting is answered by its sender being dropped.
    waiting.lock().unwrap_or_else(|e| e.into_inner()).clear();
    told(Told::Gone);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_window_program_is_named_with_what_to_do() {
        let answer: Answerer = Arc::new(|_, _| Box::pin(async { Ok(Value::Null) }));
        let window = Window::new("/nowhere/chroxy-desktop-window".into(), answer);
        let err = window.show(false).await.unwrap_err();
        assert!(matches!(err, WindowError::NoProgram { .. }), "{err:?}");
        assert_eq!(
            err.to_string(),
            "the window's program /nowhere/chroxy-desktop-window is missing: reinstall Chroxy (from source: `cargo build --release -p chroxy-desktop`)"
        );
    }

    #[tokio::test]
    async fn what_a_window_says_on_stderr_is_in_the_tray_apps_log_at_its_level() {
        use tracing_subscriber::fmt::MakeWriter;
        /// The tray app's log, kept for the test to read.
        #[derive(Clone, Default)]
        struct Log(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Log {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        impl<'a> MakeWriter<'a> for Log {
            type Writer = Log;
            fn make_writer(&'a self) -> Log {
                self.clone()
            }
        }
        let log = Log::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        // This test's runtime has one thread: the tasks reading the window run on it.
        let _logging = tracing::subscriber::set_default(subscriber);

        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("window");
        // A window that cannot start: its own log line, GTK's complaint, then gone.
        let script = "#!/bin/sh\n\
            echo '2026-12-04T23:40:00.000000Z ERROR chroxy_desktop: starting the window system (is there a display?)' >&2\n\
            echo '(chroxy-desktop-window:42): Gtk-WARNING **: cannot open display: :9' >&2\n\
            exit 1\n";
        std::fs::write(&program, script).unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let answer: Answerer = Arc::new(|_, _| Box::pin(async { Ok(Value::Null) }));
        let window = Window::new(program, answer);
        window.show(false).await.unwrap();
        let logged = || String::from_utf8_lossy(&log.0.lock().unwrap()).into_owned();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while !logged().contains("cannot open display") {
            assert!(
                tokio::time::Instant::now() < deadline,
                "not logged: {}",
                logged()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let logged = logged();
        let line = |needle: &str| {
            logged
                .lines()
                .find(|l| l.contains(needle))
                .unwrap()
                .to_owned()
        };
        let own = line("is there a display?");
        assert!(own.contains(" ERROR window: "), "at its level: {own}");
        let gtk = line("cannot open display");
        assert!(
            gtk.contains(" WARN window: "),
            "without one, a warning: {gtk}"
        );
    }

    /// A window's process, played by a shell script: it notes its arguments and every
    /// line it is told, asks the tray app one command, confirms every Show, and ends
    /// (as a closed window does) when told the event "closed".
    const WINDOW: &str = r#"#!/bin/sh
dir="$(dirname "$0")"
echo "started $*" >> "$dir/args"
echo '{"op":"invoke","id":7,"command":"view","args":{"a":1}}'
while read -r line; do
  echo "$line" >> "$dir/told"
  case "$line" in
    *'"op":"show"'*) echo '{"op":"shown"}' ;;
    *'"event":"closed"'*) exit 0 ;;
  esac
done
"#;

    #[tokio::test]
    async fn a_window_is_started_answered_shown_again_and_told_the_view() {
        let dir = tempfile::tempdir().unwrap();
        let program = dir.path().join("window");
        std::fs::write(&program, WINDOW).unwrap();
        std::fs::set_permissions(
            &program,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        let answer: Answerer = Arc::new(|command, args| {
            Box::pin(async move { Ok(serde_json::json!({"asked": command, "with": args})) })
        });
        let window = Window::new(program, answer);
        let told = || std::fs::read_to_string(dir.path().join("told")).unwrap_or_default();
        let until = async |what: &str, done: &dyn Fn() -> bool| {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while !done() {
                assert!(tokio::time::Instant::now() < deadline, "never: {what}");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };

        // Started, at the QR code, by the first of two clicks at once: the second
        // brings up the same window. The page's command is answered by the tray app.
        let (first, second) = tokio::join!(window.show(true), window.show(false));
        first.unwrap();
        second.unwrap();
        until("the command answered", &|| told().contains(r#""id":7"#)).await;
        let told_first = told();
        let reply = told_first
            .lines()
            .find(|l| l.contains(r#""id":7"#))
            .unwrap();
        let reply: ToWindow = serde_json::from_str(reply).unwrap();
        let ToWindow::Reply {
            id: 7,
            answer: Ok(value),
        } = reply
        else {
            panic!("{reply:?}");
        };
        assert_eq!(
            value,
            serde_json::json!({"asked": "view", "with": {"a": 1}})
        );
        let started = || std::fs::read_to_string(dir.path().join("args")).unwrap();
        assert_eq!(started(), "started --qr\n");

        // Shown again: the same process is asked, and says it did; events reach it.
        window.show(false).await.unwrap();
        let shows = told().matches(r#"{"op":"show","qr":false}"#).count();
        assert_eq!(shows, 2, "{}", told());
        window.emit("view", serde_json::json!({"look": "healthy"}));
        until("the view told", &|| told().contains("healthy")).await;
        assert_eq!(started(), "started --qr\n", "the same process");

        // Closed: Show starts a new one.
        window.emit("closed", ());
        until("the window gone", &|| window.lock().is_none()).await;
        window.show(false).await.unwrap();
        until("a new window", &|| started().lines().count() == 2).await;
        assert_eq!(started(), "started --qr\nstarted \n");
    }
}
