//! Slowing down wrong tokens per address (docs/protocol.md "Connecting" step 3).
//!
//! Each failure doubles the delay before its `auth_fail` (1 s, 2 s, 4 s … 60 s by
//! default) for that address only; more than 3 attempts waiting at once from one
//! address are refused outright. A correct token is checked first and never refused,
//! so an attacker hammering the public URL cannot lock the owner out.
//!
//! The address is the one the supervisor vouches for ([`crate::forwarded`]), never a
//! header the client chose. The table holds at most [`MAX_ADDRESSES`] addresses: once
//! full, failures from new addresses share one overflow entry (an attacker with many
//! addresses is slowed as one), and idle entries are swept at most once a minute, so
//! no failure costs more than a map lookup.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::backoff::Backoff;

/// More attempts than this waiting at once from one address get `rate_limited`.
const MAX_IN_FLIGHT: u32 = 3;
/// Forget addresses idle this long, so the map stays small.
const FORGET_AFTER: Duration = Duration::from_secs(600);
/// Addresses remembered at once; beyond, new ones share [`OVERFLOW`].
pub const MAX_ADDRESSES: usize = 4096;
/// The entry every address beyond [`MAX_ADDRESSES`] shares (an unspecified address no
/// client can have).
const OVERFLOW: IpAddr = IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED);
/// Idle entries are swept at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);
/// Wrong tokens waiting out their delay across all addresses; past it, more are refused
/// at once. Each holds a socket, and an attacker with many addresses (a v6 /48, the
/// exits of an anonymity network) must not hold the worker's sockets by the thousand.
pub const MAX_WAITING: u32 = 64;

#[derive(Debug)]
struct Entry {
    failures: u32,
    in_flight: u32,
    last: Instant,
}

#[derive(Debug)]
struct Table {
    entries: HashMap<IpAddr, Entry>,
    swept: Instant,
    /// Attempts in flight across all entries.
    waiting: u32,
}

/// Per-address failure state; shared by all connections of a worker.
#[derive(Debug)]
pub struct AuthLimiter {
    table: Mutex<Table>,
    backoff: Backoff,
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
    /// An address's first wrong token waits `backoff.floor`; each next one twice as long.
    pub fn new(backoff: Backoff) -> Arc<Self> {
        Arc::new(Self {
            table: Mutex::new(Table {
                entries: HashMap::new(),
                swept: Instant::now(),
                waiting: 0,
            }),
            backoff,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A correct token from `addr`: its failures are forgiven.
    pub fn succeeded(&self, addr: IpAddr) {
        let addr = crate::forwarded::bucket(addr);
        if let Some(e) = self.lock().entries.get_mut(&addr) {
            e.failures = 0;
        }
    }

    /// Addresses remembered now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Nothing remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A wrong token from `addr`. When the verdict is a delay, the returned guard
    /// counts the attempt as in flight until it is dropped (after the delay).
    pub fn failed(self: &Arc<Self>, addr: IpAddr) -> (Verdict, Option<InFlight>) {
        let now = Instant::now();
        let addr = crate::forwarded::bucket(addr);
        let mut table = self.lock();
        if table.waiting >= MAX_WAITING {
            return (Verdict::RateLimited, None);
        }
        if now.duration_since(table.swept) >= SWEEP_EVERY {
            table.swept = now;
            table
                .entries
                .retain(|_, e| e.in_flight > 0 || now.duration_since(e.last) < FORGET_AFTER);
        }
        let addr = if table.entries.len() >= MAX_ADDRESSES && !table.entries.contains_key(&addr) {
            OVERFLOW
        } else {
            addr
        };
        let e = table.entries.entry(addr).or_insert(Entry {
            failures: 0,
            in_flight: 0,
            last: now,
        });
        e.last = now;
        if e.in_flight >= MAX_IN_FLIGHT {
            return (Verdict::RateLimited, None);
        }
        let delay = self.backoff.delay(e.failures);
        e.failures = e.failures.saturating_add(1);
        e.in_flight += 1;
        table.waiting += 1;
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
        let mut table = self.limiter.lock();
        table.waiting = table.waiting.saturating_sub(1);
        if let Some(e) = table.entries.get_mut(&self.addr) {
            e.in_flight = e.in_flight.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND_TO_MINUTE: Backoff = Backoff {
        floor: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };
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
        let l = AuthLimiter::new(SECOND_TO_MINUTE);
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
        let l = AuthLimiter::new(SECOND_TO_MINUTE);
        let held: Vec<_> = (0..3).map(|_| l.failed(A)).collect();
        assert_eq!(l.failed(A).0, Verdict::RateLimited);
        assert!(matches!(l.failed(B).0, Verdict::DelayThenFail(_)));
        drop(held);
        assert!(matches!(l.failed(A).0, Verdict::DelayThenFail(_)));
    }

    #[test]
    fn failures_from_many_addresses_wait_in_bounded_numbers() {
        let l = AuthLimiter::new(SECOND_TO_MINUTE);
        let held: Vec<_> = (0..MAX_WAITING)
            .map(|i| {
                let v = l.failed(IpAddr::V4(std::net::Ipv4Addr::from(0x0c00_0000 + i)));
                assert!(matches!(v.0, Verdict::DelayThenFail(_)));
                v
            })
            .collect();
        assert_eq!(
            l.failed(B).0,
            Verdict::RateLimited,
            "past the bound: at once"
        );
        drop(held);
        assert!(matches!(l.failed(B).0, Verdict::DelayThenFail(_)));
    }

    #[test]
    fn an_ipv6_network_is_one_address() {
        let l = AuthLimiter::new(SECOND_TO_MINUTE);
        let a: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let b: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        assert_eq!(delay(l.failed(a)).as_secs(), 1);
        assert_eq!(delay(l.failed(b)).as_secs(), 2, "same /64: same backoff");
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(delay(l.failed(other)).as_secs(), 1);
    }

    #[test]
    fn the_table_stays_bounded_and_new_addresses_beyond_it_share_one_backoff() {
        let l = AuthLimiter::new(SECOND_TO_MINUTE);
        for i in 0..MAX_ADDRESSES as u32 {
            let addr = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i));
            drop(l.failed(addr));
        }
        assert_eq!(l.len(), MAX_ADDRESSES);
        // Rotating addresses no longer starts each one afresh.
        let fresh = |i: u32| IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000 + i));
        let got: Vec<u64> = (0..4)
            .map(|i| delay(l.failed(fresh(i))).as_secs())
            .collect();
        assert_eq!(got, [1, 2, 4, 8]);
        assert_eq!(l.len(), MAX_ADDRESSES + 1, "one overflow entry, no more");
        // A known address keeps its own entry.
        let known = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000));
        assert_eq!(delay(l.failed(known)).as_secs(), 2);
    }
}
