//! The system clocks, behind a trait so that tests can drive the real loop in simulated
//! time.
//!
//! Liveness is measured on `CLOCK_MONOTONIC`, which wall-clock steps (NTP, `date -s`) do
//! not move. Uptime for the reset history comes from `CLOCK_BOOTTIME`. Sleeping is to an
//! absolute monotonic deadline, so a sleep interrupted by a signal or delayed by load
//! never shifts later deadlines.

use core::time::Duration;

use nix::sys::time::TimeSpec;
use nix::time::{ClockId, ClockNanosleepFlags, clock_gettime, clock_nanosleep};

use crate::core::time::Instant;

pub trait Clock {
    /// Now, on the monotonic clock.
    fn now(&self) -> Instant;
    /// Time since boot, suspend included.
    fn uptime(&self) -> Duration;
    /// Wall-clock seconds since the epoch, for people only.
    fn wall(&self) -> i64;
    /// Returns at `deadline` (or at once if it has passed).
    fn sleep_until(&mut self, deadline: Instant);
}

/// The kernel's clocks.
pub(crate) struct SystemClock;

fn read(clock: ClockId) -> TimeSpec {
    // These clocks exist on every kernel the agent supports; a failure would be a kernel
    // bug, and zero is a safe answer (it only makes deadlines come sooner).
    clock_gettime(clock).unwrap_or(TimeSpec::new(0, 0))
}

fn nanos(ts: TimeSpec) -> u64 {
    (ts.tv_sec() as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec() as u64)
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::from_nanos(nanos(read(ClockId::CLOCK_MONOTONIC)))
    }

    fn uptime(&self) -> Duration {
        Duration::from_nanos(nanos(read(ClockId::CLOCK_BOOTTIME)))
    }

    // time_t is 32 bits on armv7 glibc.
    #[allow(clippy::useless_conversion)]
    fn wall(&self) -> i64 {
        i64::from(read(ClockId::CLOCK_REALTIME).tv_sec())
    }

    fn sleep_until(&mut self, deadline: Instant) {
        let deadline = deadline.min(self.now().saturating_add(Duration::from_secs(3600)));
        let ns = deadline.as_nanos();
        let request = TimeSpec::new((ns / 1_000_000_000) as _, (ns % 1_000_000_000) as _);
        // EINTR: return early; the loop recomputes and sleeps again.
        let _ = clock_nanosleep(
            ClockId::CLOCK_MONOTONIC,
            ClockNanosleepFlags::TIMER_ABSTIME,
            &request,
        );
    }
}
