//! Retry delays that double from a floor up to a cap. The supervisor restarting a
//! crashed worker, the tunnel reconnecting and the worker slowing down wrong tokens all
//! wait this way; one formula, so a cap means the same everywhere.

use std::time::Duration;

/// Doubling delays: `floor`, 2 × `floor`, 4 × `floor` … never more than `cap`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first delay.
    pub floor: Duration,
    /// The longest delay.
    pub cap: Duration,
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based). Saturating: any count of
    /// attempts gives at most `cap`, never an overflow.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.floor
            .saturating_mul(1u32 << attempt.min(31))
            .min(self.cap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_from_the_floor_and_stop_at_the_cap() {
        let b = Backoff {
            floor: Duration::from_secs(1),
            cap: Duration::from_secs(60),
        };
        let got: Vec<u64> = (0..8).map(|a| b.delay(a).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            b.delay(u32::MAX),
            b.cap,
            "no overflow however many attempts"
        );
    }

    #[test]
    fn a_small_floor_still_reaches_a_large_cap() {
        let b = Backoff {
            floor: Duration::from_millis(1),
            cap: Duration::from_secs(3600),
        };
        assert_eq!(b.delay(40), b.cap);
    }
}
