//! `watchkeeper shutdown`: hands the board's last minutes from the agent to the watchdog,
//! when an operator reboots or powers off (systemd's `watchkeeper-shutdown.service`, the
//! `::shutdown:` line of a BusyBox inittab, a sysvinit stop at runlevel 0 or 6).
//!
//! The agent itself has no shutdown code (crash-only): this command kills it (SIGKILL, a
//! crash like any other), opens the watchdog it held, sets `shutdown_timeout` there,
//! feeds once and closes the device without the magic 'V'. From then on nothing feeds: a
//! shutdown that finishes reboots the board before the timeout, one that hangs is ended by
//! the watchdog at the timeout, and services stopping on the way are not taken for dead
//! components. The boot is recorded as "shutdown" after the device is set, so a next boot
//! that the watchdog started tells a hung shutdown from a clean one.
//!
//! Invariants: the command never disarms, and kills only a process that is watchkeeper and
//! holds the configured device; one that finds the boot already being reset by the agent
//! leaves it be.

use std::fmt;
use std::path::Path;
use std::thread::sleep;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::cli::startup;
use crate::core::history::End;
use crate::os::clock::{Clock, SystemClock};
use crate::os::state::{self, State, StateError};
use crate::os::watchdog::{Device, WDIOF_CARDRESET, Watchdog, WatchdogError};

/// How long a killed agent may take to let go of the device.
const RELEASE_WAIT: Duration = Duration::from_secs(5);
const RELEASE_POLL: Duration = Duration::from_millis(10);
/// The program name (`/proc/PID/comm`) of an agent that may be killed.
const AGENT_PROGRAM: &str = "watchkeeper";

/// Why `watchkeeper shutdown` could not hand the board over.
pub enum ShutdownError {
    /// The device is held by something that is not watchkeeper, or not released in time.
    Device(WatchdogError),
    /// The device is set; the shutdown could not be recorded.
    Record { bound: Duration, error: StateError },
}

impl fmt::Display for ShutdownError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShutdownError::Device(e) => write!(f, "{e}: the shutdown is not bounded"),
            ShutdownError::Record { bound, error } => write!(
                f,
                "the watchdog ends this boot within {} s, but the shutdown could not be recorded ({error}): the next boot will call it a reset nobody asked for",
                bound.as_secs()
            ),
        }
    }
}

/// Runs the command; returns what to tell the operator.
pub fn shutdown(config_path: &Path) -> Result<String, ShutdownError> {
    // A broken config must not stop a shutdown: the last good one says what the agent ran.
    let (config, errors) = startup::load_config(config_path);
    for e in &errors {
        log::warn!("{e}");
    }
    let this_boot = state::boot_id();
    let opened = State::open(&config.agent.state_dir);
    if let Ok((state, _)) = &opened
        && let Some(boot) = state.history().current()
        && boot.boot_id == this_boot.as_str()
        && boot.end == End::Forced
    {
        return Ok(format!(
            "watchkeeper is already resetting this board ({}: {}): left as it is",
            boot.component, boot.reason
        ));
    }
    let device = config.watchdog.device.as_deref();
    let (bound, fired) = hand_over(device, config.watchdog.shutdown_timeout)?;
    let clock = SystemClock::new();
    let recorded = opened.and_then(|(mut state, _)| {
        // The agent may never have run in this boot: its start is recorded first.
        let (_, started) = state.start_boot(&this_boot, clock.wall(), fired);
        started.and_then(|()| state.record_shutdown(clock.uptime(), bound))
    });
    recorded.map_err(|error| ShutdownError::Record { bound, error })?;
    Ok(match device {
        Some(path) => format!(
            "shutdown recorded: {} is left counting with a {} s timeout and nothing feeds it: the board resets if the shutdown is not over by then",
            path.display(),
            bound.as_secs()
        ),
        None => "shutdown recorded (device = \"none\": nothing bounds it)".to_owned(),
    })
}

/// Takes over the device, feeds it once and leaves it counting with `bound`. Returns the
/// timeout in force and whether the driver says it reset the board last time.
fn hand_over(path: Option<&Path>, bound: Duration) -> Result<(Duration, bool), ShutdownError> {
    let Some(path) = path else {
        return Ok((bound, false));
    };
    let mut device = open_taking_over(path, bound)?;
    device.keepalive().map_err(ShutdownError::Device)?;
    let fired = device
        .boot_status()
        .is_some_and(|bits| bits & WDIOF_CARDRESET != 0);
    Ok((device.timeout(), fired))
}

/// Opens the device, killing the watchkeeper that holds it and waiting for its release.
fn open_taking_over(path: &Path, timeout: Duration) -> Result<Device, ShutdownError> {
    let started = Instant::now();
    let mut killed = None;
    loop {
        let error = match Device::open(path, timeout) {
            Ok(device) => return Ok(device),
            Err(e) => e,
        };
        let waited_out = started.elapsed() >= RELEASE_WAIT;
        match &error {
            WatchdogError::Busy {
                holder: Some(holder),
                ..
            } if holder.program == AGENT_PROGRAM && !waited_out => {
                if killed != Some(holder.pid) {
                    log::info!("stopping the agent (pid {}) for the shutdown", holder.pid);
                    // ESRCH: it is gone already, and the next open tells.
                    let _ = kill(Pid::from_raw(holder.pid), Signal::SIGKILL);
                    killed = Some(holder.pid);
                }
            }
            // Released between the open and the look in /proc: try again.
            WatchdogError::Busy { holder: None, .. } if killed.is_some() && !waited_out => {}
            _ => return Err(ShutdownError::Device(error)),
        }
        sleep(RELEASE_POLL);
    }
}
