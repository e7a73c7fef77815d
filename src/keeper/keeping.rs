//! The supervisor's end of the keeper channel, one per worker: it accepts that worker
//! alone, holds the pipes of the CLIs it runs (with their latest notes) until it lets
//! them go, and hands a lost worker's CLIs to its successor. What a lost worker leaves
//! waits in [`Orphans`] for the runner's verdict: adopted by the standby that takes
//! over, or killed before any other successor starts.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};
use tokio_util::sync::CancellationToken;

use super::{kept, recv, send, AgentId, AgentNote, Kept, Msg, WireError};

/// How long the processes of an abandoned CLI may take to die of SIGKILL.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long a lost worker's CLIs wait for a successor at most.
pub(crate) const ADOPTION_DEADLINE: Duration = Duration::from_secs(5);

enum Op {
    /// The worker's pid: only it may connect.
    Expect(u32),
    /// Hand these to the worker; what could not be handed comes back.
    Adopt(Vec<Kept>, oneshot::Sender<Vec<Kept>>),
}

/// One worker's keeper: a task that listens for the worker, then holds its CLIs.
#[derive(Debug)]
pub struct Keeping {
    handle: KeepingHandle,
    task: JoinHandle<Held>,
}

/// What the task watching the worker asks of its keeper.
#[derive(Debug, Clone)]
pub struct KeepingHandle {
    ops: mpsc::UnboundedSender<Op>,
}

impl std::fmt::Debug for Op {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Op::Expect(pid) => write!(f, "Expect({pid})"),
            Op::Adopt(kept, _) => write!(f, "Adopt({} CLIs)", kept.len()),
        }
    }
}

impl Keeping {
    /// Listens at `path` (a stale socket there is replaced) for the worker marked
    /// `mark` ([`crate::process::WORKER_MARK`]). The worker learns the path from
    /// [`super::KEEPER_VAR`].
    pub fn listen(path: PathBuf, mark: String) -> std::io::Result<Self> {
        // Longer paths do not fit a socket address; say so rather than bind elsewhere.
        if path.as_os_str().len() > 100 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is too long for a socket path", path.display()),
            ));
        }
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let listener = UnixSeqpacketListener::bind(&path)?;
        let (ops, rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(serve(listener, path, mark, rx));
        let handle = KeepingHandle { ops };
        Ok(Self { handle, task })
    }

    /// For the task that watches the worker.
    pub fn handle(&self) -> KeepingHandle {
        self.handle.clone()
    }

    /// Stops listening and returns the CLIs still held, and the marks of every CLI
    /// handed to this worker (their tools carry a lost worker's mark, not this one's).
    pub async fn finish(self) -> Held {
        drop(self.handle);
        self.task.await.unwrap_or_default()
    }
}

impl KeepingHandle {
    /// The worker's pid, once it runs: the one connection accepted must come from it.
    pub fn expect(&self, pid: u32) {
        let _ = self.ops.send(Op::Expect(pid));
    }

    /// Hands `kept` to the worker (it also stays held here). Returns how many went;
    /// those that could not go (no worker connected, a failed send) are killed.
    pub async fn adopt(&self, kept: Vec<Kept>) -> usize {
        let total = kept.len();
        let (tx, rx) = oneshot::channel();
        let refused = match self.ops.send(Op::Adopt(kept, tx)) {
            Ok(()) => rx.await.unwrap_or_default(),
            Err(mpsc::error::SendError(Op::Adopt(kept, _))) => kept,
            Err(_) => Vec::new(),
        };
        let handed = total - refused.len();
        if !refused.is_empty() {
            tracing::warn!(
                count = refused.len(),
                "the successor did not take the lost worker's CLIs; stopping them"
            );
            end(refused).await;
        }
        handed
    }
}

async fn serve(
    listener: UnixSeqpacketListener,
    path: PathBuf,
    mark: String,
    mut ops: mpsc::UnboundedReceiver<Op>,
) -> Held {
    let mut listener = Some(listener);
    let mut pid: Option<u32> = None;
    let mut link: Option<UnixSeqpacket> = None;
    let mut table: HashMap<String, Kept> = HashMap::new();
    let mut adopted: Vec<String> = Vec::new();
    loop {
        tokio::select! {
            biased;
            op = ops.recv() => match op {
                None => break,
                Some(Op::Expect(p)) => pid = Some(p),
                Some(Op::Adopt(list, reply)) => {
                    let mut refused = Vec::new();
                    for k in list {
                        match hand(link.as_ref(), &k).await {
                            Ok(()) => {
                                tracing::info!(session = %k.agent.session, pid = k.agent.pid, "CLI handed to the successor");
                                adopted.push(k.agent.mark.clone());
                                table.insert(k.agent.mark.clone(), k);
                            }
                            Err(err) => {
                                tracing::warn!(%err, "cannot hand a CLI to the successor");
                                refused.push(k);
                            }
                        }
                    }
                    let _ = reply.send(refused);
                }
            },
            conn = accept(listener.as_mut()), if listener.is_some() && pid.is_some() => {
                link = admit(conn, pid, &mut listener, &path);
            }
            incoming = recv_from(link.as_ref()), if link.is_some() => {
                if !apply(&mut table, &mark, pid.unwrap_or_default(), incoming) {
                    // The worker is gone; what it left stays held for the verdict.
                    link = None;
                }
            }
        }
    }
    // The worker has exited: what it sent before it died is still to be read (and a
    // connection it made just before, still to be accepted, if none was: once one is
    // admitted the listener is gone, and waiting for another cost every crash `LATE`).
    let last_words = async {
        if listener.is_some() && pid.is_some() {
            if let Ok(conn) = tokio::time::timeout(LATE, accept(listener.as_mut())).await {
                link = admit(conn, pid, &mut listener, &path);
            }
        }
        if let Some(socket) = &link {
            while apply(
                &mut table,
                &mark,
                pid.unwrap_or_default(),
                recv(socket).await,
            ) {}
        }
    };
    let _ = tokio::time::timeout(LAST_WORDS, last_words).await;
    if listener.is_some() {
        let _ = std::fs::remove_file(&path);
    }
    Held {
        kept: table.into_values().collect(),
        adopted,
    }
}

/// What a worker's keeper holds when the worker is gone.
#[derive(Debug, Default)]
pub struct Held {
    /// The CLIs it still held.
    pub kept: Vec<Kept>,
    /// The marks of the CLIs it was handed, held or not.
    pub adopted: Vec<String>,
}

/// The most CLIs one worker may have held: more than it runs (at most 5 sessions, a CLI
/// each, and a few on their way out), and a bound on the descriptors a bad release can
/// make the supervisor hold.
const MAX_KEPT: usize = 32;
/// How long handing one CLI to a successor may take: a standby that does not read its
/// keeper channel must not stall the task that watches it.
const HAND_TIMEOUT: Duration = Duration::from_secs(2);

/// Whether a CLI the worker marked `worker` (pid `parent`) sends is one of its own: its
/// mark is under the worker's (the supervisor kills by it, so a worker cannot name
/// another's), and the pid names, since the same start, a child of the worker (a
/// successor signals it).
fn genuine(
    agent: &AgentId,
    worker: &str,
    parent: u32,
    table: &HashMap<String, Kept>,
) -> Result<(), WireError> {
    if table.len() >= MAX_KEPT {
        return Err(WireError::Malformed("too many CLIs held for one worker"));
    }
    if table.values().any(|k| k.agent.pid == agent.pid) {
        return Err(WireError::Malformed("that process is held already"));
    }
    let under = agent
        .mark
        .strip_prefix(worker)
        .and_then(|rest| rest.strip_prefix('.'))
        .is_some_and(|rest| !rest.is_empty());
    if !under {
        return Err(WireError::Malformed("a mark that is not the worker's"));
    }
    let stat = crate::process::stat_of(agent.pid);
    if stat.is_none_or(|s| Some(s.start_ticks) != agent.start_ticks) {
        return Err(WireError::Malformed("no such process"));
    }
    if stat.is_none_or(|s| s.parent != parent) {
        return Err(WireError::Malformed("not a process the worker started"));
    }
    Ok(())
}

/// How long a connection the worker made just before it exited may take to show up.
const LATE: Duration = Duration::from_millis(50);
/// How long its last messages may take to be read once it has exited.
const LAST_WORDS: Duration = Duration::from_secs(1);

/// The connection, if it is the worker's; then nobody else is let in.
fn admit(
    conn: std::io::Result<UnixSeqpacket>,
    pid: Option<u32>,
    listener: &mut Option<UnixSeqpacketListener>,
    path: &std::path::Path,
) -> Option<UnixSeqpacket> {
    match conn {
        Ok(socket) => {
            let peer = socket.peer_cred().ok().and_then(|c| c.pid());
            if peer.is_some() && peer == pid.map(|p| p as i32) {
                *listener = None;
                let _ = std::fs::remove_file(path);
                Some(socket)
            } else {
                tracing::warn!(?peer, "refused a connection to the keeper: not the worker");
                None
            }
        }
        Err(err) => {
            tracing::warn!(%err, "the keeper stopped listening; CLIs will not outlive this worker");
            *listener = None;
            None
        }
    }
}

/// Applies one message of the worker marked `worker` (pid `parent`) to the CLIs held;
/// `false` once the link is done.
fn apply(
    table: &mut HashMap<String, Kept>,
    worker: &str,
    parent: u32,
    incoming: Result<Option<(Msg, Vec<std::os::fd::OwnedFd>)>, WireError>,
) -> bool {
    match incoming {
        Ok(Some((Msg::Keep { agent }, fds))) => {
            let checked = genuine(&agent, worker, parent, table)
                .and_then(|()| kept(agent, AgentNote::default(), fds));
            match checked {
                Ok(k) => {
                    table.insert(k.agent.mark.clone(), k);
                }
                Err(err) => tracing::warn!(%err, "not keeping a CLI the worker sent"),
            }
        }
        Ok(Some((Msg::Note { mark, note }, _))) => {
            if let Some(k) = table.get_mut(&mark) {
                k.note = note;
            }
        }
        Ok(Some((Msg::Release { mark }, _))) => {
            table.remove(&mark);
        }
        Ok(Some((Msg::Adopt { .. }, _))) => {
            tracing::warn!("a worker sent an adoption; ignored")
        }
        Ok(None) => return false,
        Err(WireError::Io(err)) => {
            tracing::warn!(%err, "keeper channel failed");
            return false;
        }
        Err(err) => tracing::warn!(%err, "ignoring a message from the worker"),
    }
    true
}

async fn accept(listener: Option<&mut UnixSeqpacketListener>) -> std::io::Result<UnixSeqpacket> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn recv_from(
    link: Option<&UnixSeqpacket>,
) -> Result<Option<(Msg, Vec<std::os::fd::OwnedFd>)>, WireError> {
    match link {
        Some(socket) => recv(socket).await,
        None => std::future::pending().await,
    }
}

async fn hand(link: Option<&UnixSeqpacket>, k: &Kept) -> Result<(), WireError> {
    let socket = link.ok_or(WireError::Malformed("the worker has not connected"))?;
    let fds = k.pipes.to_vec()?;
    let msg = Msg::Adopt {
        agent: k.agent.clone(),
        note: k.note.clone(),
    };
    match tokio::time::timeout(HAND_TIMEOUT, send(socket, &msg, &fds)).await {
        Ok(sent) => sent,
        Err(_) => Err(WireError::Malformed(
            "the successor did not take it in time",
        )),
    }
}

/// Lets go of the CLIs' pipes and kills their process trees (by their marks).
pub async fn end(kept: Vec<Kept>) {
    for k in kept {
        drop(k.pipes);
        let left = crate::process::kill_marked(&k.agent.mark, PATIENCE).await;
        if !left.is_empty() {
            tracing::error!(?left, session = %k.agent.session, "processes of an abandoned CLI would not die");
        }
    }
}

/// The CLIs of lost workers, each set waiting for the runner's verdict.
#[derive(Debug, Default)]
pub struct Orphans {
    waiting: Mutex<HashMap<u64, Left>>,
}

#[derive(Debug)]
struct Left {
    /// `None` once taken or being killed.
    kept: Option<Vec<Kept>>,
    /// Cancelled once they are adopted or dead.
    gone: CancellationToken,
}

impl Orphans {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Left>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What worker `worker` left running when it died. The runner's verdict comes
    /// with its exit report; should it never come (the standby meant to take them died
    /// in the same moment), they are killed after [`ADOPTION_DEADLINE`] all the same.
    pub fn leave(self: &Arc<Self>, worker: u64, kept: Vec<Kept>) {
        if kept.is_empty() {
            return;
        }
        let gone = CancellationToken::new();
        let kept = Some(kept);
        self.lock().insert(
            worker,
            Left {
                kept,
                gone: gone.clone(),
            },
        );
        let orphans = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::select! {
                _ = gone.cancelled() => {}
                _ = tokio::time::sleep(ADOPTION_DEADLINE) => {
                    if let Some(orphans) = orphans.upgrade() {
                        tracing::warn!(worker, "nobody took the lost worker's CLIs in time");
                        orphans.abandon(worker);
                    }
                }
            }
        });
    }

    /// For the standby that takes over from `worker`.
    pub fn take(&self, worker: u64) -> Vec<Kept> {
        let mut waiting = self.lock();
        // Already being killed (the deadline passed): its token says when they are gone.
        if waiting.get(&worker).is_none_or(|left| left.kept.is_none()) {
            return Vec::new();
        }
        let Some(left) = waiting.remove(&worker) else {
            return Vec::new();
        };
        left.gone.cancel();
        left.kept.unwrap_or_default()
    }

    /// Nobody takes over from `worker`: its CLIs are killed.
    pub fn abandon(&self, worker: u64) {
        let (kept, gone) = {
            let mut waiting = self.lock();
            let Some(left) = waiting.get_mut(&worker) else {
                return;
            };
            (left.kept.take(), left.gone.clone())
        };
        let Some(kept) = kept else { return };
        tracing::info!(
            count = kept.len(),
            "no successor takes the lost worker's CLIs; stopping them"
        );
        tokio::spawn(async move {
            end(kept).await;
            gone.cancel();
        });
    }

    /// One token per set not yet adopted or dead: a successor starts after them.
    pub fn pending(&self) -> Vec<CancellationToken> {
        let mut waiting = self.lock();
        waiting.retain(|_, left| !left.gone.is_cancelled());
        waiting.values().map(|left| left.gone.clone()).collect()
    }

    /// Kills every set still waiting and returns once all are gone (the supervisor is
    /// stopping: nothing it started may outlive it).
    pub async fn end_all(&self) {
        let ids: Vec<u64> = self.lock().keys().copied().collect();
        for id in ids {
            self.abandon(id);
        }
        for gone in self.pending() {
            gone.cancelled().await;
        }
    }
}
