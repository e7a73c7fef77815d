//! Who gets a place on the public port when too many knock at once.
//!
//! Each connection the public port holds costs the supervisor two file descriptors (the
//! client's socket and its splice to the worker). Without a bound, a few hundred
//! sockets that never authenticate exhaust them; the supervisor's own health probe then
//! fails and a healthy worker is blamed. So the table bounds both the connections it
//! holds and those not yet proven (no `auth_ok` seen). When either bound is reached, a
//! newcomer is still let in: the oldest unproven connection of the address holding the
//! most unproven ones makes room. An owner's phone (one connection, authenticating in
//! milliseconds) is thus never kept out by a flood from elsewhere, nor, when the flood
//! shares its address, for longer than the flood takes to send as many sockets as the
//! bound. Proven connections are never evicted; when every place is proven, newcomers
//! are refused.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio_util::sync::CancellationToken;

use super::super::status::ConnectionsStatus;

/// The bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections held at once, proven or not.
    pub max_connections: usize,
    /// Of those, connections not yet proven.
    pub max_unauthenticated: usize,
}

/// File descriptors kept for everything but the public port's connections: the
/// listeners, the status page and its clients, health probes, worker and tunnel pipes,
/// logs, the store.
const RESERVED_DESCRIPTORS: u64 = 128;

impl Limits {
    /// The configured bounds, lowered to what this process's file-descriptor limit
    /// allows (two per connection, [`RESERVED_DESCRIPTORS`] kept aside) after raising
    /// its soft limit toward what they need, as far as the hard limit lets it.
    pub fn fitting(max_connections: usize, max_unauthenticated: usize) -> Self {
        use nix::sys::resource::{getrlimit, setrlimit, Resource};
        // Only as far as the bounds need: every child (workers, Claude Code, its tools)
        // inherits the limit, and some programs walk every descriptor up to it.
        let needed = (max_connections as u64)
            .saturating_mul(2)
            .saturating_add(RESERVED_DESCRIPTORS);
        let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
            Ok((soft, hard)) if soft < needed => {
                let raised = needed.min(hard);
                match setrlimit(Resource::RLIMIT_NOFILE, raised, hard) {
                    Ok(()) => raised,
                    Err(err) => {
                        tracing::debug!(%err, "cannot raise the file-descriptor limit");
                        soft
                    }
                }
            }
            Ok((soft, _)) => soft,
            Err(err) => {
                tracing::warn!(%err, "cannot read the file-descriptor limit");
                return Self {
                    max_connections,
                    max_unauthenticated,
                };
            }
        };
        let room = soft.saturating_sub(RESERVED_DESCRIPTORS) / 2;
        let room = usize::try_from(room).unwrap_or(usize::MAX).max(1);
        if room < max_connections {
            tracing::warn!(
                descriptors = soft,
                configured = max_connections,
                allowed = room,
                "the file-descriptor limit lowers max_connections"
            );
        }
        let max_connections = max_connections.min(room).max(1);
        Self {
            max_connections,
            max_unauthenticated: max_unauthenticated.clamp(1, max_connections),
        }
    }
}

/// How far an unproven connection has come; the least advanced are evicted first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Progress {
    /// Connected; no request head yet (a half-open socket looks like this forever).
    Connected,
    /// Its request head was read, and nothing more arrived.
    Requested,
    /// It sent a whole first WebSocket frame after the upgrade: its `auth`, being
    /// checked. An owner's phone is here within a round trip of connecting.
    Authenticating,
}

#[derive(Debug)]
struct Conn {
    key: IpAddr,
    proven: bool,
    progress: Progress,
    /// When it last came further (the table's own clock: a count of admissions and
    /// steps), so a socket that stalls ages while a phone that advances stays young.
    moved_at: u64,
    evict: CancellationToken,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// Ticks at every admission and every step a connection takes.
    clock: u64,
    conns: HashMap<u64, Conn>,
    /// Unproven connections per address, oldest first.
    unproven: HashMap<IpAddr, VecDeque<u64>>,
    unproven_count: usize,
}

impl Table {
    fn forget_unproven(&mut self, id: u64, key: IpAddr) {
        if let Some(queue) = self.unproven.get_mut(&key) {
            if let Some(at) = queue.iter().position(|&x| x == id) {
                queue.remove(at);
                self.unproven_count -= 1;
            }
            if queue.is_empty() {
                self.unproven.remove(&key);
            }
        }
    }

    /// The unproven connection to close for a newcomer. Not one whose whole `auth`
    /// frame is being checked, while another will do; then one of the address with the
    /// most unproven connections; then the one that has stalled longest. So a socket
    /// that never sends a request, or never a whole `auth`, makes room before a phone
    /// that keeps advancing, and a flood of one connection per address loses its
    /// oldest before the newest.
    fn victim(&self) -> Option<u64> {
        self.conns
            .iter()
            .filter(|(_, c)| !c.proven)
            .min_by_key(|&(_, c)| {
                let held = self.unproven.get(&c.key).map_or(0, VecDeque::len);
                (
                    c.progress == Progress::Authenticating,
                    std::cmp::Reverse(held),
                    c.moved_at,
                )
            })
            .map(|(&id, _)| id)
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    fn remove(&mut self, id: u64) -> Option<Conn> {
        let conn = self.conns.remove(&id)?;
        if !conn.proven {
            self.forget_unproven(id, conn.key);
        }
        Some(conn)
    }
}

/// The public port's connection table; shared by its connection tasks.
#[derive(Debug)]
pub struct Admission {
    limits: Limits,
    table: Mutex<Table>,
    evicted: AtomicU64,
    refused: AtomicU64,
    last_hit_at: AtomicU64,
}

/// A place in the table; dropping it gives the place back.
#[derive(Debug)]
pub struct Ticket {
    id: u64,
    admission: Arc<Admission>,
    /// Cancelled when a newcomer needs the place: drop the sockets.
    pub evicted: CancellationToken,
}

impl Ticket {
    /// The connection came this far (never back).
    pub fn progress(&self, to: Progress) {
        let mut t = self.admission.lock();
        let now = t.tick();
        if let Some(conn) = t.conns.get_mut(&self.id) {
            if to > conn.progress {
                conn.progress = to;
                conn.moved_at = now;
            }
        }
    }

    /// The client authenticated: it keeps its place.
    pub fn prove(&self) {
        let mut t = self.admission.lock();
        if let Some(conn) = t.conns.get_mut(&self.id) {
            if !conn.proven {
                conn.proven = true;
                let key = conn.key;
                t.forget_unproven(self.id, key);
            }
        }
    }
}

impl Ticket {
    /// The connection turned out to be from `key` (the phone behind our own tunnel),
    /// not from the address it was admitted under.
    pub fn rekey(&self, key: IpAddr) {
        let key = crate::forwarded::bucket(key);
        let mut t = self.admission.lock();
        let Some(conn) = t.conns.get_mut(&self.id) else {
            return;
        };
        let (old, proven) = (conn.key, conn.proven);
        conn.key = key;
        if !proven && old != key {
            t.forget_unproven(self.id, old);
            t.unproven.entry(key).or_default().push_back(self.id);
            t.unproven_count += 1;
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.admission.lock().remove(self.id);
    }
}

impl Admission {
    /// An empty table with these bounds (each at least 1).
    pub fn new(limits: Limits) -> Arc<Self> {
        let max_connections = limits.max_connections.max(1);
        Arc::new(Self {
            limits: Limits {
                max_connections,
                max_unauthenticated: limits.max_unauthenticated.clamp(1, max_connections),
            },
            table: Mutex::new(Table::default()),
            evicted: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            last_hit_at: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Table> {
        // Every update is a handful of map operations that cannot panic halfway.
        self.table.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a newcomer from `key`, making room if needed; `None` when every
    /// place is held by a proven connection.
    pub fn admit(self: &Arc<Self>, key: IpAddr) -> Option<Ticket> {
        let key = crate::forwarded::bucket(key);
        let mut t = self.lock();
        while t.conns.len() >= self.limits.max_connections
            || t.unproven_count >= self.limits.max_unauthenticated
        {
            self.hit();
            let Some(victim) = t.victim() else {
                self.refused.fetch_add(1, Ordering::Relaxed);
                return None;
            };
            if let Some(conn) = t.remove(victim) {
                conn.evict.cancel();
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        let id = t.next_id;
        t.next_id += 1;
        let moved_at = t.tick();
        let evicted = CancellationToken::new();
        t.conns.insert(
            id,
            Conn {
                key,
                proven: false,
                progress: Progress::Connected,
                moved_at,
                evict: evicted.clone(),
            },
        );
        t.unproven.entry(key).or_default().push_back(id);
        t.unproven_count += 1;
        Some(Ticket {
            id,
            admission: self.clone(),
            evicted,
        })
    }

    fn hit(&self) {
        self.last_hit_at
            .store(crate::protocol::now_ms(), Ordering::Relaxed);
    }

    /// What the status page shows.
    pub fn status(&self) -> ConnectionsStatus {
        let t = self.lock();
        let last_hit_at = self.last_hit_at.load(Ordering::Relaxed);
        ConnectionsStatus {
            open: t.conns.len(),
            unauthenticated: t.unproven_count,
            max_connections: self.limits.max_connections,
            max_unauthenticated: self.limits.max_unauthenticated,
            evicted: self.evicted.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            last_limit_at: (last_hit_at > 0).then_some(last_hit_at),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn table(max_connections: usize, max_unauthenticated: usize) -> Arc<Admission> {
        Admission::new(Limits {
            max_connections,
            max_unauthenticated,
        })
    }

    #[test]
    fn a_flood_from_one_address_never_keeps_a_newcomer_out_and_loses_its_oldest_first() {
        let a = table(100, 3);
        let flood: Vec<Ticket> = (0..3).map(|_| a.admit(ip("10.0.0.1")).unwrap()).collect();
        let owner = a.admit(ip("203.0.113.5")).expect("the owner gets in");
        assert!(
            flood[0].evicted.is_cancelled(),
            "the oldest flooder made room"
        );
        assert!(!flood[1].evicted.is_cancelled() && !flood[2].evicted.is_cancelled());
        // More flood: it evicts itself, never the owner's single connection.
        let more: Vec<Ticket> = (0..10).map(|_| a.admit(ip("10.0.0.1")).unwrap()).collect();
        assert!(!owner.evicted.is_cancelled());
        assert!(more[..8].iter().all(|t| t.evicted.is_cancelled()));
        let s = a.status();
        assert_eq!((s.open, s.unauthenticated), (3, 3));
        assert_eq!(s.evicted, 11);
        assert!(s.last_limit_at.is_some());
    }

    #[test]
    fn a_flood_of_one_connection_per_address_loses_its_oldest_never_the_newest() {
        let a = table(100, 4);
        let flood: Vec<Ticket> = (0..4)
            .map(|i| a.admit(ip(&format!("10.0.1.{i}"))).unwrap())
            .collect();
        let owner = a.admit(ip("203.0.113.5")).unwrap();
        assert!(flood[0].evicted.is_cancelled(), "the oldest made room");
        let more: Vec<Ticket> = (0..3)
            .map(|i| a.admit(ip(&format!("10.0.2.{i}"))).unwrap())
            .collect();
        assert!(
            !owner.evicted.is_cancelled(),
            "the owner is newer than three of them"
        );
        assert!(flood.iter().all(|t| t.evicted.is_cancelled()));
        drop(more);
        // Addresses of one IPv6 /64 are one address.
        let b = table(100, 2);
        let first = b.admit(ip("2001:db8::1")).unwrap();
        let _second = b.admit(ip("2001:db8::2")).unwrap();
        let _owner = b.admit(ip("2001:db8:0:1::1")).unwrap();
        assert!(first.evicted.is_cancelled(), "the /64 holding two paid");
    }

    #[test]
    fn sockets_that_stall_make_room_before_a_phone_that_advances() {
        let a = table(100, 3);
        let owner = a.admit(ip("127.0.0.1")).unwrap();
        let half_open = a.admit(ip("10.0.3.1")).unwrap();
        let silent = a.admit(ip("10.0.3.2")).unwrap();
        silent.progress(Progress::Requested);
        // The owner, connected first, sends its request and its whole auth.
        owner.progress(Progress::Requested);
        owner.progress(Progress::Authenticating);
        owner.progress(Progress::Requested); // never back
        let n1 = a.admit(ip("10.0.3.3")).unwrap();
        assert!(
            half_open.evicted.is_cancelled(),
            "stalled longest: the half-open one"
        );
        let n2 = a.admit(ip("10.0.3.4")).unwrap();
        assert!(
            silent.evicted.is_cancelled(),
            "then the one that sent only a head"
        );
        // A fresh arrival is young: the flood loses its own older sockets first.
        let n3 = a.admit(ip("10.0.3.5")).unwrap();
        assert!(n1.evicted.is_cancelled() && !n2.evicted.is_cancelled());
        let _n4 = a.admit(ip("10.0.3.6")).unwrap();
        assert!(n2.evicted.is_cancelled() && !n3.evicted.is_cancelled());
        assert!(
            !owner.evicted.is_cancelled(),
            "the authenticating owner stays"
        );
    }

    #[test]
    fn proven_connections_keep_their_place_and_when_all_are_proven_newcomers_are_refused() {
        let a = table(2, 2);
        let phone = a.admit(ip("127.0.0.1")).unwrap();
        phone.prove();
        let other = a.admit(ip("127.0.0.1")).unwrap();
        // Same address, full: the unproven one goes, the proven one stays.
        let newcomer = a.admit(ip("127.0.0.1")).unwrap();
        assert!(other.evicted.is_cancelled());
        assert!(!phone.evicted.is_cancelled());
        newcomer.prove();
        assert!(a.admit(ip("127.0.0.1")).is_none(), "every place is proven");
        assert_eq!(a.status().refused, 1);
        drop(newcomer);
        assert!(a.admit(ip("127.0.0.1")).is_some(), "a place came back");
    }

    #[test]
    fn a_phone_behind_the_tunnel_is_not_evicted_for_a_flood_through_the_tunnel() {
        let tunnel = ip("127.0.0.1");
        let a = table(100, 3);
        let owner = a.admit(tunnel).unwrap();
        owner.rekey(ip("203.0.113.5"));
        let flood: Vec<Ticket> = (0..10)
            .map(|_| {
                let t = a.admit(tunnel).unwrap();
                t.rekey(ip("198.51.100.9"));
                t
            })
            .collect();
        assert!(
            !owner.evicted.is_cancelled(),
            "the flood's own address paid"
        );
        assert_eq!(flood.iter().filter(|t| t.evicted.is_cancelled()).count(), 8);
        assert_eq!(a.status().unauthenticated, 3);
    }

    #[test]
    fn places_come_back_when_tickets_drop_and_counts_stay_true() {
        let a = table(10, 5);
        let tickets: Vec<Ticket> = (0..5).map(|_| a.admit(ip("10.0.0.2")).unwrap()).collect();
        tickets[0].prove();
        tickets[0].prove();
        assert_eq!(a.status().unauthenticated, 4);
        drop(tickets);
        let s = a.status();
        assert_eq!((s.open, s.unauthenticated, s.evicted), (0, 0, 0));
        assert_eq!(s.last_limit_at, None);
    }
}
