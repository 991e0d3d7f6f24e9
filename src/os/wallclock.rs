//! The wall clock as heartbeat files see it: the offset that translates a file's ctime to
//! the monotonic clock, and a count of the steps that make that translation wrong.
//!
//! A file's times are wall-clock times; the agent measures on `CLOCK_MONOTONIC`. NTP
//! slewing moves both clocks alike (their difference changes only when the wall clock is
//! set: `date -s`, an NTP step, a leap second, a resume from suspend), so one offset serves
//! a whole window between two steps. Steps are counted from a timerfd on `CLOCK_REALTIME`
//! armed with `TFD_TIMER_CANCEL_ON_SET`, which the kernel cancels whenever the wall clock
//! is set (timerfd_create(2)); where no such timer can be made (seccomp, a kernel before
//! 3.0), a change of the offset by more than [`FALLBACK_TOLERANCE_NS`] between two samples
//! counts as a step instead.
//!
//! Invariant: a step that happened before [`WallClock::steps`] returns is counted by it.

use std::os::fd::OwnedFd;

use rustix::io::Errno;
use rustix::time::{
    Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
    timerfd_settime,
};

/// Without a timer, an offset change above this is a step; smaller ones are within the
/// jitter of two clock readings and the coarse clock that dates files.
pub const FALLBACK_TOLERANCE_NS: i64 = 1_000_000;

/// Wall clock minus monotonic clock, in nanoseconds: the wall clock is read first, so a
/// delay between the readings makes the offset smaller, which dates beats later, never
/// earlier.
pub fn offset() -> i64 {
    let wall = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
    let monotonic = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    nanos(wall) - nanos(monotonic)
}

fn nanos(ts: Timespec) -> i64 {
    ts.tv_sec
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec)
}

/// Counts wall-clock steps.
pub struct WallClock {
    /// `None` where no cancel-on-set timer could be made: offsets are compared instead.
    timer: Option<OwnedFd>,
    steps: u64,
    last_offset: i64,
}

impl WallClock {
    /// Makes the step detector; says once, at startup, when it has to fall back.
    pub fn new() -> WallClock {
        let timer = match timerfd_create(
            TimerfdClockId::Realtime,
            TimerfdFlags::NONBLOCK | TimerfdFlags::CLOEXEC,
        )
        .and_then(|fd| arm(&fd).map(|()| fd))
        {
            Ok(fd) => Some(fd),
            Err(errno) => {
                log::warn!(
                    "no cancel-on-set timer ({errno}): wall-clock steps are told by the clock offset instead, to within {} ms",
                    FALLBACK_TOLERANCE_NS / 1_000_000
                );
                None
            }
        };
        WallClock {
            timer,
            steps: 0,
            last_offset: offset(),
        }
    }

    /// The steps of the wall clock since startup; call after the files are looked at.
    pub fn steps(&mut self) -> u64 {
        match &self.timer {
            Some(timer) => {
                let mut expirations = [0u8; 8];
                match rustix::io::read(timer, &mut expirations) {
                    // The clock was set: count it, and arm again for the next one.
                    Err(Errno::CANCELED) => {
                        self.steps += 1;
                        if let Err(errno) = arm(timer) {
                            log::error!(
                                "cannot re-arm the wall-clock step timer ({errno}): comparing clock offsets instead"
                            );
                            self.timer = None;
                        }
                    }
                    // Nothing happened (EAGAIN), or the timer expired: it is armed for
                    // the end of time, so that would be a step too.
                    Err(_) => {}
                    Ok(_) => self.steps += 1,
                }
            }
            None => {
                let now = offset();
                if (now - self.last_offset).abs() > FALLBACK_TOLERANCE_NS {
                    self.steps += 1;
                }
                self.last_offset = now;
            }
        }
        self.steps
    }
}

impl Default for WallClock {
    fn default() -> Self {
        WallClock::new()
    }
}

/// Arms `timer` for a wall-clock instant it never reaches, cancelled when the clock is set.
fn arm(timer: &OwnedFd) -> Result<(), Errno> {
    let never = Itimerspec {
        it_interval: Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        // Year 2106 and beyond fit a 64-bit time_t; 32-bit ARM has 64-bit time in the
        // kernel interface rustix uses.
        it_value: Timespec {
            tv_sec: i64::from(u32::MAX),
            tv_nsec: 0,
        },
    };
    timerfd_settime(
        timer,
        TimerfdTimerFlags::ABSTIME | TimerfdTimerFlags::CANCEL_ON_SET,
        &never,
    )
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_step_is_counted_while_the_clock_is_left_alone() {
        let mut clock = WallClock::new();
        assert!(
            clock.timer.is_some(),
            "this kernel has cancel-on-set timers"
        );
        assert_eq!(clock.steps(), 0);
        assert_eq!(clock.steps(), 0);
        let a = offset();
        let b = offset();
        assert!((a - b).abs() < 50_000_000, "offsets {a} and {b}");
    }
}
