//! The one clock `fake-claude` stamps `BENCH` deltas with and the bench reads them by:
//! shared, so the two processes can never read different clocks.

/// CLOCK_MONOTONIC in ns: one clock for every process on the machine, and one that
/// the wall clock's adjustments do not move.
pub fn monotonic_ns() -> u64 {
    let t = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .expect("CLOCK_MONOTONIC is always there on Linux");
    t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
}
