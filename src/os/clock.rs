//! The system clocks and the wait for the next deadline or event, behind a trait so that
//! tests can drive the real loop in simulated time.
//!
//! Liveness is measured on `CLOCK_MONOTONIC`, which wall-clock steps (NTP, `date -s`) do
//! not move. Uptime for the reset history comes from `CLOCK_BOOTTIME`. The wall clock's
//! offset and steps ([`WallClock`]) translate file times. Waiting is `ppoll` on the
//! descriptors the loop watches, with the time left until the deadline: a wait cut short
//! by a signal or an event, or delayed by load, never shifts later deadlines, which are
//! absolute instants.

use core::time::Duration;

use nix::sys::time::TimeSpec;
use nix::time::{ClockId, clock_gettime};
use rustix::event::PollFd;

use crate::core::time::Instant;
use crate::os::wallclock::{self, WallClock};

pub trait Clock {
    /// Now, on the monotonic clock.
    fn now(&self) -> Instant;
    /// Time since boot, suspend included.
    fn uptime(&self) -> Duration;
    /// Wall-clock seconds since the epoch, for people only.
    fn wall(&self) -> i64;
    /// Wall clock minus monotonic clock, in nanoseconds ([`wallclock::offset`]).
    fn wall_offset(&self) -> i64;
    /// Steps of the wall clock since startup ([`WallClock::steps`]).
    fn wall_steps(&mut self) -> u64;
    /// Returns at `deadline` (at once if it has passed), or earlier when one of `fds` is
    /// ready; their `revents` say which.
    fn wait_until(&mut self, deadline: Instant, fds: &mut [PollFd<'_>]);
}

/// The kernel's clocks.
pub(crate) struct SystemClock {
    wall: WallClock,
}

impl SystemClock {
    pub(crate) fn new() -> SystemClock {
        SystemClock {
            wall: WallClock::new(),
        }
    }
}

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

/// Now, on the monotonic clock.
pub(crate) fn monotonic() -> Instant {
    Instant::from_nanos(nanos(read(ClockId::CLOCK_MONOTONIC)))
}

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        monotonic()
    }

    fn uptime(&self) -> Duration {
        Duration::from_nanos(nanos(read(ClockId::CLOCK_BOOTTIME)))
    }

    // time_t is 32 bits on armv7 glibc.
    #[allow(clippy::useless_conversion)]
    fn wall(&self) -> i64 {
        i64::from(read(ClockId::CLOCK_REALTIME).tv_sec())
    }

    fn wall_offset(&self) -> i64 {
        wallclock::offset()
    }

    fn wall_steps(&mut self) -> u64 {
        self.wall.steps()
    }

    fn wait_until(&mut self, deadline: Instant, fds: &mut [PollFd<'_>]) {
        let left = deadline.since(self.now()).min(Duration::from_secs(3600));
        let timeout = rustix::time::Timespec {
            tv_sec: left.as_secs() as _,
            tv_nsec: left.subsec_nanos() as _,
        };
        // EINTR: return early; the loop recomputes and waits again.
        let _ = rustix::event::poll(fds, Some(&timeout));
    }
}
