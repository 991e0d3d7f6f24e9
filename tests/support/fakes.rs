//! Stand-ins for the agent's hardware and time, for tests and benchmarks that run the real
//! `Agent`: a simulated clock, a fake watchdog and a fake LED pin. Each shares what it
//! records through an `Rc`, so the test reads it while the agent owns the fake. None of
//! them allocates, so they never show in an allocation count.
#![allow(dead_code)] // each binary uses its own part of this module

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use watchkeeper::core::time::Instant;
use watchkeeper::os::clock::Clock;
use watchkeeper::os::led::PinError;
use watchkeeper::os::watchdog::{Watchdog, WatchdogError};

/// A clock that moves only when the test sets `now` or the agent sleeps; sleeping jumps to
/// the deadline at once (never back in time).
pub struct SimClock {
    pub now: Rc<Cell<Instant>>,
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.now.get()
    }
    fn uptime(&self) -> Duration {
        Duration::from_nanos(self.now.get().as_nanos())
    }
    fn wall(&self) -> i64 {
        1_700_000_000
    }
    fn sleep_until(&mut self, deadline: Instant) {
        self.now.set(deadline.max(self.now.get()));
    }
}

/// A watchdog with a 4 s timeout that counts its feeds and records a shortening for a reset.
pub struct FakeWatchdog {
    pub feeds: Rc<Cell<u64>>,
    pub shortened: Rc<Cell<bool>>,
}

impl Watchdog for FakeWatchdog {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.feeds.set(self.feeds.get() + 1);
        Ok(())
    }
    fn shorten_for_reset(&mut self) -> Duration {
        self.shortened.set(true);
        Duration::from_secs(1)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(4)
    }
}

/// An LED pin that never fails and keeps its level (`true`: high).
#[derive(Default)]
pub struct FakePin {
    pub level: Rc<Cell<bool>>,
}

impl ErrorType for FakePin {
    type Error = PinError;
}

impl OutputPin for FakePin {
    fn set_low(&mut self) -> Result<(), PinError> {
        self.level.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), PinError> {
        self.level.set(true);
        Ok(())
    }
}
