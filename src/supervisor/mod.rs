//! Keeps exactly one healthy worker serving phones, across crashes, bad releases and
//! restarts (DESIGN.md "Supervisor"). Both shells — `chroxy start` and the tray app —
//! run this, so every user gets the same restart policy.

pub mod build;
pub mod child;
mod devices;
pub mod handle;
pub mod health;
pub mod instance;
mod loopback;
pub mod proxy;
pub mod release;
pub mod release_id;
pub mod remote;
mod runner;
pub mod state;
pub mod status;
pub mod switch;
pub mod terminal;

pub use runner::{Options, Supervisor, SupervisorError};

/// The state machine's rules, from the `[supervisor]` settings: made here, not in
/// `config` (a leaf that knows nothing above it) nor in `state` (rules that know no file).
impl From<&crate::config::SupervisorConfig> for state::Policy {
    fn from(config: &crate::config::SupervisorConfig) -> Self {
        let failed_retry = config.failed_retry();
        Self {
            backoff: config.backoff(),
            healthy_reset: config.healthy_reset(),
            crash_budget: config.crash_budget,
            crash_window: config.crash_window(),
            canary_window: config.canary_window(),
            canary_error_limit: config.canary_error_limit,
            failed_retry: crate::backoff::Backoff {
                floor: failed_retry,
                cap: state::FAILED_RETRY_CAP.max(failed_retry),
            },
            standby: config.standby,
        }
    }
}

/// The rules with the settings' defaults: one copy of the numbers, in `config`.
impl Default for state::Policy {
    fn default() -> Self {
        Self::from(&crate::config::SupervisorConfig::default())
    }
}
