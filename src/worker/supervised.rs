//! The worker's end of the control channel (`chroxy worker --supervised`): heartbeats
//! with counters on stdout, commands on stdin. When stdin closes the supervisor is
//! gone, and the worker stops by itself so that no orphan keeps a port or an agent.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio_util::codec::{FramedRead, LinesCodec};
use tokio_util::sync::CancellationToken;

use super::WorkerSignals;
use crate::control::{to_line, FatalCause, SupervisorCommand, WorkerEvent};
use crate::protocol::ShutdownReason;
use crate::session::Hub;

/// The longest command line taken: a build's status, with every step's last lines
/// (each escaped in JSON), is the largest, at under 100 KiB.
const MAX_COMMAND: usize = 256 * 1024;

/// How long running turns may finish when the supervisor itself has vanished.
const ORPHAN_IDLE_WAIT: Duration = Duration::from_secs(5);

/// Counts every panic of this process as a server fault (then reports it as before):
/// a panicked connection or session task is the worker's own fault, whatever a client
/// sent. Process-wide, so a supervised worker calls it once, before it serves.
pub fn count_panics(signals: &WorkerSignals) {
    let signals = signals.clone();
    let report = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        signals.count_server_fault();
        report(info);
    }));
}

/// Tells the supervisor, on stdout, the error this worker stops on (its last words),
/// before it exits: otherwise all it learns is an exit status.
pub fn say_fatal(cause: FatalCause, message: String) {
    use std::io::Write;
    let line = WorkerEvent::Fatal { cause, message }.to_line();
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(line.as_bytes()).and_then(|()| out.flush());
}

/// What the worker's sessions send up the control channel.
pub struct Upward {
    /// Notifications for phones that are not looking.
    pub notices: tokio::sync::mpsc::Receiver<crate::push::Notice>,
    /// Phones' deploy requests.
    pub deploys: tokio::sync::mpsc::Receiver<crate::session::DeployAsk>,
    /// The CLIs a lost worker left, handed over by the supervisor's keeper.
    pub adopted: Option<tokio::sync::mpsc::Receiver<crate::keeper::Kept>>,
}

/// How long a resync waits for the CLIs it was told are coming on the keeper channel
/// (sent before the resync line; this only covers a slow socket).
const ADOPTION_WAIT: Duration = Duration::from_secs(1);

/// Serves the control channel until the worker stops (`stop` cancelled) — by a `drain`
/// command, by the supervisor's pipe closing, or by anything else that cancels `stop`.
pub async fn follow_supervisor(
    input: impl AsyncRead + Unpin,
    mut output: impl AsyncWrite + Unpin,
    hub: Hub,
    signals: WorkerSignals,
    heartbeat: Duration,
    upward: Upward,
    stop: CancellationToken,
) {
    let Upward {
        mut notices,
        mut deploys,
        mut adopted,
    } = upward;
    let mut commands = FramedRead::new(input, LinesCodec::new_with_max_length(MAX_COMMAND));
    let mut beat = tokio::time::interval(heartbeat);
    // CLIs the last resync was told of that had not arrived yet.
    let mut missing = 0u32;
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            Some(kept) = late_cli(adopted.as_mut(), missing) => {
                missing -= 1;
                hub.adopt(kept).await;
            }
            Some(notice) = notices.recv() => {
                let line = to_line(&WorkerEvent::Notify { notice });
                // A supervisor that stopped reading is noticed at the next heartbeat.
                let _ = output.write_all(line.as_bytes()).await;
                let _ = output.flush().await;
            }
            Some(ask) = deploys.recv() => {
                let line = to_line(&WorkerEvent::Deploy {
                    source: ask.source,
                    requested_by: ask.requested_by,
                    allowed: ask.allowed,
                    allow_dirty: ask.allow_dirty,
                });
                let _ = output.write_all(line.as_bytes()).await;
                let _ = output.flush().await;
            }
            _ = beat.tick() => {
                let infos = hub.session_infos();
                let server_faults = signals.take_server_faults();
                let event = WorkerEvent::Heartbeat {
                    clients: hub.clients().len() as u32,
                    sessions: infos.len() as u32,
                    busy: infos.iter().filter(|i| i.is_busy).count() as u32,
                    devices: hub.clients().devices(),
                    server_faults,
                    protocol_errors: server_faults,
                };
                if output.write_all(to_line(&event).as_bytes()).await.is_err() || output.flush().await.is_err() {
                    tracing::warn!("the supervisor stopped reading; stopping");
                    drain(&hub, &signals, ShutdownReason::Restart, 2_000, ORPHAN_IDLE_WAIT, &stop).await;
                    return;
                }
            }
            line = commands.next() => match line {
                Some(Ok(line)) => match serde_json::from_str::<SupervisorCommand>(&line) {
                    Ok(SupervisorCommand::Drain { reason, restart_eta_ms, idle_wait_ms }) => {
                        tracing::info!(?reason, "draining on the supervisor's request");
                        drain(&hub, &signals, reason, restart_eta_ms, Duration::from_millis(idle_wait_ms), &stop).await;
                        return;
                    }
                    Ok(SupervisorCommand::Reconnect { restart_eta_ms }) => {
                        tracing::info!("telling every phone to reconnect");
                        signals.reconnect_all(restart_eta_ms);
                    }
                    Ok(SupervisorCommand::Resync { closed_there, adopt }) => {
                        hub.resync(closed_there).await;
                        // After the re-read: the sessions the lost worker created meanwhile
                        // are here now, and each takes its CLI over the state it saved.
                        missing = take_over_clis(&hub, adopted.as_mut(), adopt).await;
                        hub.promoted();
                    }
                    Ok(SupervisorCommand::DeployNews(news)) => hub.deploy_news(news),
                    Err(err) => tracing::warn!(%err, "ignoring an unreadable control command"),
                },
                Some(Err(err)) => tracing::warn!(%err, "ignoring an unreadable control command"),
                None => {
                    tracing::warn!("the supervisor is gone (control channel closed); stopping");
                    drain(&hub, &signals, ShutdownReason::Restart, 2_000, ORPHAN_IDLE_WAIT, &stop).await;
                    return;
                }
            }
        }
    }
}

/// Gives each of the `count` CLIs handed over to its session; returns how many had
/// not arrived in time (they are given as they come).
async fn take_over_clis(
    hub: &Hub,
    adopted: Option<&mut tokio::sync::mpsc::Receiver<crate::keeper::Kept>>,
    count: u32,
) -> u32 {
    let Some(adopted) = adopted else {
        return 0;
    };
    let deadline = tokio::time::Instant::now() + ADOPTION_WAIT;
    for taken in 0..count {
        match tokio::time::timeout_at(deadline, adopted.recv()).await {
            Ok(Some(kept)) => hub.adopt(kept).await,
            Ok(None) => return 0,
            Err(_) => {
                tracing::warn!(
                    taken,
                    count,
                    "fewer CLIs arrived than the supervisor handed over"
                );
                return count - taken;
            }
        }
    }
    0
}

/// The next CLI handed over, while some are `missing`; never otherwise (one that comes
/// before its resync waits for it).
async fn late_cli(
    adopted: Option<&mut tokio::sync::mpsc::Receiver<crate::keeper::Kept>>,
    missing: u32,
) -> Option<crate::keeper::Kept> {
    match adopted {
        Some(adopted) if missing > 0 => adopted.recv().await,
        _ => std::future::pending().await,
    }
}

/// Refuse input, answer waiting prompts, let running turns finish (bounded), then stop
/// serving with this notice. Saving happens when the caller shuts the hub down.
async fn drain(
    hub: &Hub,
    signals: &WorkerSignals,
    reason: ShutdownReason,
    restart_eta_ms: u64,
    idle_wait: Duration,
    stop: &CancellationToken,
) {
    signals.set_shutdown_notice(reason, restart_eta_ms);
    hub.drain().await;
    if !hub.wait_idle(idle_wait).await {
        tracing::warn!(
            wait_ms = idle_wait.as_millis() as u64,
            "turns still running at the drain deadline; stopping anyway"
        );
    }
    stop.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicked_task_is_a_server_fault() {
        let signals = WorkerSignals::default();
        count_panics(&signals);
        let crashed = tokio::spawn(async { panic!("a connection task fails") }).await;
        assert!(crashed.is_err());
        assert!(signals.take_server_faults() >= 1);
    }
}
