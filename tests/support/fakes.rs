//! Stand-ins for the agent's hardware and time, for tests and benchmarks that run the real
//! `Agent`: a simulated clock, a fake watchdog and a fake LED pin, and an agent's parts
//! made of them. Each shares what it records through an `Rc`, so the test reads it while
//! the agent owns the fake. None of them allocates, so they never show in an allocation
//! count.
#![allow(dead_code)] // each binary uses its own part of this module

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use watchkeeper::agent::Parts;
use watchkeeper::config::Config;
use watchkeeper::core::boot::Phase;
use watchkeeper::core::time::Instant;
use watchkeeper::os::clock::Clock;
use watchkeeper::os::led::{FaultLed, PinError};
use watchkeeper::os::rundir::RunDir;
use watchkeeper::os::state::State;
use watchkeeper::os::watchdog::{Takeover, Watchdog, WatchdogError};

/// A clock that moves only when the test sets `now` or the agent waits; waiting jumps to
/// the deadline at once (never back in time), unless a descriptor waited on is ready now.
/// Its wall clock is the real one, offset to the simulated monotonic clock, so that the
/// real files' times translate to simulated instants near the look that sees them.
pub struct SimClock {
    pub now: Rc<Cell<Instant>>,
}

/// The real wall clock, in nanoseconds since the epoch.
fn real_wall_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
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
    fn wall_offset(&self) -> i64 {
        real_wall_nanos() - self.now.get().as_nanos() as i64
    }
    fn wall_steps(&mut self) -> u64 {
        0
    }
    fn wait_until(&mut self, deadline: Instant, fds: &mut [rustix::event::PollFd<'_>]) {
        let zero = rustix::time::Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        if !fds.is_empty() && rustix::event::poll(fds, Some(&zero)).is_ok_and(|n| n > 0) {
            return;
        }
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

/// An agent's parts on these fakes, for `config` with its state in `state`: a fake
/// watchdog (whose feeds it counts in `feeds`), an LED pin no one reads, the clock `now`,
/// no hold, no service manager, and a boot still to be checked. A test sets what it needs
/// otherwise with struct update syntax.
pub fn sim_parts(
    config: &Config,
    state: State,
    now: &Rc<Cell<Instant>>,
    feeds: &Rc<Cell<u64>>,
    seed: u64,
) -> Parts<FakePin, SimClock> {
    Parts {
        watchdog: Some(Box::new(FakeWatchdog {
            feeds: feeds.clone(),
            shortened: Rc::new(Cell::new(false)),
        })),
        may_reboot: false,
        led: FaultLed::new(FakePin::default(), false),
        clock: SimClock { now: now.clone() },
        state,
        run: RunDir::open(&config.agent.run_dir),
        agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_watchkeeper")),
        fault: false,
        hold_until: None,
        seed,
        notifier: None,
        takeover: Takeover::Stopped,
        boot_phase: Phase::Checking,
        trial: None,
    }
}
