//! How a person or the system asks a Chroxy process to stop: SIGTERM (a logout, `kill`,
//! a service manager) and SIGINT (Ctrl-C). The supervisor's shells and the worker listen
//! the same way; what a stop means is the listener's own (a worker drains its phones; a
//! supervisor drains its worker and, asked again, stops waiting: [`StopSwitch`]).

use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio_util::sync::CancellationToken;

/// SIGTERM and SIGINT, ours for as long as this lives: one that arrives between two
/// [`next`](Self::next) calls is kept, not lost, and never kills the process.
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Starts listening (fails only if the runtime cannot install the handlers).
    pub fn listen() -> std::io::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    /// The next SIGTERM or SIGINT.
    pub async fn next(&mut self) {
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
    }
}

/// The two-step stop of a started supervisor ([`super::start`]'s `shutdown` and
/// `force`): the first press asks for an orderly stop (drain the worker, stop the
/// tunnel, save state); a press while that runs stops waiting for drains. A signal and
/// the tray's Quit press the same switch, so both stop the same way. A cheap clone.
#[derive(Debug, Clone, Default)]
pub struct StopSwitch {
    shutdown: CancellationToken,
    force: CancellationToken,
}

impl StopSwitch {
    /// A switch not pressed yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Cancelled at the first press: [`super::start`]'s `shutdown`.
    pub fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Cancelled at the second press: [`super::start`]'s `force`.
    pub fn force(&self) -> CancellationToken {
        self.force.clone()
    }

    /// Asks for the next step of the stop.
    pub fn press(&self) {
        if self.shutdown.is_cancelled() {
            tracing::warn!("stopping again: not waiting for the drain");
            self.force.cancel();
        } else {
            tracing::info!("stopping: draining the worker, then the tunnel (asked again, Chroxy stops without waiting)");
            self.shutdown.cancel();
        }
    }

    /// Presses the switch at every SIGTERM and SIGINT, from now on (a task of the
    /// current runtime). Without the handlers, says so and leaves the default action.
    pub fn press_on_signals(&self) {
        let switch = self.clone();
        let mut signals = match StopSignals::listen() {
            Ok(signals) => signals,
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM and SIGINT");
                return;
            }
        };
        // Ends after the second press: there is nothing more to ask for.
        tokio::spawn(async move {
            while !switch.force.is_cancelled() {
                signals.next().await;
                switch.press();
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_press_asks_for_an_orderly_stop_and_the_second_stops_waiting() {
        let switch = StopSwitch::new();
        let (shutdown, force) = (switch.shutdown(), switch.force());
        assert!(!shutdown.is_cancelled() && !force.is_cancelled());
        switch.clone().press();
        assert!(shutdown.is_cancelled(), "a clone presses the same switch");
        assert!(!force.is_cancelled(), "one press still waits for the drain");
        switch.press();
        assert!(force.is_cancelled());
    }
}
