//! The worker's half of Web Push: whether a phone should be woken. A prompt is news
//! only if it is still unanswered after a grace period and no phone is looking (a
//! phone on screen shows every session's prompts); a finished turn only if it ran long
//! and no phone is on its session. What passes goes to the supervisor, which delivers
//! it ([`super::Pusher`]).

use std::time::Duration;

use tokio::sync::mpsc;

use super::Notice;

/// Notices waiting for the control channel; beyond it they are dropped (a supervisor
/// that stopped reading has bigger problems than a late notification).
const SINK_CAPACITY: usize = 64;

/// `[push]` as the worker applies it.
#[derive(Debug, Clone, Copy)]
pub struct AlertsConfig {
    /// A prompt unanswered this long, with no phone looking, is pushed.
    pub grace: Duration,
    /// A turn that took at least this long is pushed when it is done.
    pub long_turn: Duration,
}

/// Hands notices to the supervisor; cheap to clone. Without a supervisor (a worker
/// run by hand) nothing is pushed.
#[derive(Debug, Clone)]
pub struct Alerts {
    cfg: AlertsConfig,
    sink: Option<mpsc::Sender<Notice>>,
}

impl Alerts {
    /// Alerts that reach the returned receiver (the control channel's writer).
    pub fn new(cfg: AlertsConfig) -> (Self, mpsc::Receiver<Notice>) {
        let (tx, rx) = mpsc::channel(SINK_CAPACITY);
        (
            Self {
                cfg,
                sink: Some(tx),
            },
            rx,
        )
    }

    /// Alerts that go nowhere.
    pub fn off() -> Self {
        Self {
            cfg: AlertsConfig {
                grace: Duration::MAX,
                long_turn: Duration::MAX,
            },
            sink: None,
        }
    }

    /// A prompt started waiting: after the grace period, if `still_waiting` and no
    /// phone `looking`, `notice` is pushed. Both are asked then, not now.
    pub fn prompt_waiting(
        &self,
        notice: Notice,
        still_waiting: impl Fn() -> bool + Send + 'static,
        looking: impl Fn() -> bool + Send + 'static,
    ) {
        let Some(sink) = self.sink.clone() else {
            return;
        };
        let grace = self.cfg.grace;
        tokio::spawn(async move {
            // The grace period is the point: a phone on screen answers within it.
            tokio::time::sleep(grace).await;
            if still_waiting() && !looking() {
                send(&sink, notice);
            }
        });
    }

    /// A turn of `took` is done: pushed if it ran long and nobody is `looking`.
    pub fn turn_done(&self, notice: Notice, took: Duration, looking: bool) {
        if let Some(sink) = &self.sink {
            if took >= self.cfg.long_turn && !looking {
                send(sink, notice);
            }
        }
    }
}

fn send(sink: &mpsc::Sender<Notice>, notice: Notice) {
    if sink.try_send(notice).is_err() {
        tracing::warn!("a notification was dropped: the supervisor is not reading");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::NoticeKind;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    fn alerts(grace_ms: u64, long_turn_ms: u64) -> (Alerts, mpsc::Receiver<Notice>) {
        Alerts::new(AlertsConfig {
            grace: Duration::from_millis(grace_ms),
            long_turn: Duration::from_millis(long_turn_ms),
        })
    }

    fn notice() -> Notice {
        Notice::about(NoticeKind::Permission, "s-1", "backend")
    }

    #[tokio::test(start_paused = true)]
    async fn a_prompt_is_pushed_after_the_grace_only_if_unanswered_and_unseen() {
        let (alerts, mut rx) = alerts(10_000, 0);
        let waiting = Arc::new(AtomicBool::new(true));
        let looking = Arc::new(AtomicBool::new(false));
        let (w, l) = (waiting.clone(), looking.clone());
        alerts.prompt_waiting(
            notice(),
            move || w.load(Ordering::SeqCst),
            move || l.load(Ordering::SeqCst),
        );
        tokio::time::sleep(Duration::from_millis(9_999)).await;
        assert!(rx.try_recv().is_err(), "pushed before the grace was over");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(rx.recv().await.unwrap(), notice());

        // Answered within the grace: nothing.
        let w = waiting.clone();
        alerts.prompt_waiting(notice(), move || w.load(Ordering::SeqCst), || false);
        waiting.store(false, Ordering::SeqCst);
        // A phone looking when the grace ends: nothing either.
        looking.store(true, Ordering::SeqCst);
        let l = looking.clone();
        alerts.prompt_waiting(notice(), || true, move || l.load(Ordering::SeqCst));
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(rx.try_recv().is_err());
    }

    #[tokio::test]
    async fn only_a_long_turn_nobody_watches_is_pushed() {
        let (alerts, mut rx) = alerts(0, 60_000);
        alerts.turn_done(notice(), Duration::from_secs(59), false);
        alerts.turn_done(notice(), Duration::from_secs(61), true);
        assert!(rx.try_recv().is_err());
        alerts.turn_done(notice(), Duration::from_secs(61), false);
        assert_eq!(rx.try_recv().unwrap(), notice());
    }

    #[tokio::test]
    async fn without_a_supervisor_nothing_is_pushed_or_spawned() {
        let off = Alerts::off();
        let tasks = || {
            tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks()
        };
        let before = tasks();
        off.turn_done(notice(), Duration::MAX, false);
        off.prompt_waiting(notice(), || true, || false);
        assert_eq!(
            tasks(),
            before,
            "a task was spawned for alerts that go nowhere"
        );
        // The same prompt with a supervisor does spawn one: the count would see it.
        let (on, _rx) = alerts(10_000, 0);
        on.prompt_waiting(notice(), || true, || false);
        assert_eq!(tasks(), before + 1);
    }
}
