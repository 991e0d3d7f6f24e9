//! Monotonic instants for the pure core.
//!
//! The core never reads a clock: the shell passes in `Instant`s taken from
//! `CLOCK_MONOTONIC`, and tests pass in whatever they like. An `Instant` is a count of
//! nanoseconds since an arbitrary origin (boot, for the real clock). It never goes
//! backwards and is unaffected by wall-clock steps, which is the whole point: heartbeat
//! ages are measured on it, never as "wall-clock now minus mtime".

use core::time::Duration;

/// A point on the monotonic clock, in nanoseconds since an arbitrary origin.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    /// The origin of the clock.
    pub const ZERO: Instant = Instant(0);
    /// Later than any instant the agent will live to see; "no deadline".
    pub const NEVER: Instant = Instant(u64::MAX);

    pub const fn from_nanos(nanos: u64) -> Self {
        Instant(nanos)
    }

    pub const fn from_millis(millis: u64) -> Self {
        Instant(millis.saturating_mul(1_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating at `NEVER` so that "far future" arithmetic cannot wrap.
    pub fn saturating_add(self, d: Duration) -> Instant {
        Instant(self.0.saturating_add(duration_nanos(d)))
    }

    /// Time elapsed from `earlier` to `self`; zero if `earlier` is later.
    pub fn since(self, earlier: Instant) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }
}

/// A duration in nanoseconds, saturating instead of failing for absurd values.
pub(crate) fn duration_nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// Wait after failed attempt `attempt` (1-based): `initial` * 2^(attempt-1), capped at
/// `max`, then scaled into [50%, 100%] by `random`, so that boards retrying the same fault
/// spread out.
pub(crate) fn backoff(initial: Duration, max: Duration, attempt: u32, random: u64) -> Duration {
    let doublings = attempt.saturating_sub(1).min(30);
    let base = initial.saturating_mul(1 << doublings).min(max);
    let half = duration_nanos(base) / 2;
    let jitter = if half == 0 { 0 } else { random % (half + 1) };
    Duration::from_nanos(half + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(
            Instant::NEVER.saturating_add(Duration::from_secs(1)),
            Instant::NEVER
        );
        assert_eq!(Instant::ZERO.since(Instant::from_millis(5)), Duration::ZERO);
        assert_eq!(
            Instant::from_millis(1500).since(Instant::from_millis(500)),
            Duration::from_secs(1)
        );
    }
}
