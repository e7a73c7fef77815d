//! Slowing down wrong tokens per address (docs/protocol.md "Connecting" step 3).
//!
//! Each failure doubles the delay before its `auth_fail` (1 s, 2 s, 4 s … 60 s by
//! default) for that address only; more than 3 attempts waiting at once from one
//! address are refused outright. A correct token is checked first and never refused,
//! so an attacker hammering the public URL cannot lock the owner out.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// More attempts than this waiting at once from one address get `rate_limited`.
const MAX_IN_FLIGHT: u32 = 3;
/// Forget addresses idle this long, so the map stays small.
const FORGET_AFTER: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct Entry {
    failures: u32,
    in_flight: u32,
    last: Instant,
}

/// Per-address failure state; shared by all connections of a worker.
#[derive(Debug)]
pub struct AuthLimiter {
    entries: Mutex<HashMap<IpAddr, Entry>>,
    base: Duration,
    max: Duration,
}

/// What to do with a wrong token.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer `auth_fail invalid_token` after this delay.
    DelayThenFail(Duration),
    /// Answer `auth_fail rate_limited` now.
    RateLimited,
}

impl AuthLimiter {
    /// `base` is the first delay, doubling up to `max`.
    pub fn new(base: Duration, max: Duration) -> Arc<Self> {
        Arc::new(Self {
            entries: Mutex::new(HashMap::new()),
            base,
            max,
        })
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<IpAddr, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A correct token from `addr`: its failures are forgiven.
    pub fn succeeded(&self, addr: IpAddr) {
        if let Some(e) = self.lock().get_mut(&addr) {
            e.failures = 0;
        }
    }

    /// A wrong token from `addr`. When the verdict is a delay, the returned guard
    /// counts the attempt as in flight until it is dropped (after the delay).
    pub fn failed(self: &Arc<Self>, addr: IpAddr) -> (Verdict, Option<InFlight>) {
        let now = Instant::now();
        let mut entries = self.lock();
        if entries.len() > 1024 {
            entries.retain(|_, e| e.in_flight > 0 || now.duration_since(e.last) < FORGET_AFTER);
        }
        let e = entries.entry(addr).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            last: now,
        });
        e.last = now;
        if e.in_flight >= MAX_IN_FLIGHT {
            return (Verdict::RateLimited, None);
        }
        let delay = self
            .base
            .saturating_mul(1u32 << e.failures.min(20))
            .min(self.max);
        e.failures = e.failures.saturating_add(1);
        e.in_flight += 1;
        (
            Verdict::DelayThenFail(delay),
            Some(InFlight {
                limiter: self.clone(),
                addr,
            }),
        )
    }
}

/// An attempt waiting out its delay.
pub struct InFlight {
    limiter: Arc<AuthLimiter>,
    addr: IpAddr,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(e) = self.limiter.lock().get_mut(&self.addr) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(203, 0, 113, 7));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(198, 51, 100, 1));

    fn delay(v: (Verdict, Option<InFlight>)) -> Duration {
        match v.0 {
            Verdict::DelayThenFail(d) => d,
            other => panic!("expected a delay, got {other:?}"),
        }
    }

    #[test]
    fn delays_double_per_address_up_to_the_cap_and_reset_on_success() {
        let l = AuthLimiter::new(Duration::from_secs(1), Duration::from_secs(60));
        let got: Vec<u64> = (0..8).map(|_| delay(l.failed(A)).as_secs()).collect();
        assert_eq!(got, [1, 2, 4, 8, 16, 32, 60, 60]);
        assert_eq!(
            delay(l.failed(B)).as_secs(),
            1,
            "another address is not slowed"
        );
        l.succeeded(A);
        assert_eq!(delay(l.failed(A)).as_secs(), 1);
    }

    #[test]
    fn more_than_three_in_flight_is_rate_limited() {
        let l = AuthLimiter::new(Duration::from_secs(1), Duration::from_secs(60));
        let held: Vec<_> = (0..3).map(|_| l.failed(A)).collect();
        assert_eq!(l.failed(A).0, Verdict::RateLimited);
        assert!(matches!(l.failed(B).0, Verdict::DelayThenFail(_)));
        drop(held);
        assert!(matches!(l.failed(A).0, Verdict::DelayThenFail(_)));
    }
}
