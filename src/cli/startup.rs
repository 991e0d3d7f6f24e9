//! `watchkeeper run`: from exec to the agent loop, fast and without giving up.
//!
//! Order matters: the config (or the last good one, or a salvaged minimum), then the
//! watchdog device (the sooner it is open, the sooner the first feed), then the boot record
//! (before anything else can go wrong), then everything else. No failure after the config
//! stops the agent: a broken config, an unusable device or LED, a run or state directory
//! that cannot be used shows the fault pattern and the board is kept up, because an agent
//! that exits in a loop resets boards for typos. Every start logs how the previous boot
//! ended, or why that is unknown.

use std::fmt;
use std::path::{Path, PathBuf};

use crate::agent::{Agent, Parts, StartError, resumed_phase};
use crate::cli::version;
use crate::config::{self, Config, ConfigError};
use crate::core::boot::Phase;
use crate::core::history::End;
use crate::os::clock::{Clock, SystemClock};
use crate::os::confirm::TrialRun;
use crate::os::led::{self, LedSpec};
use crate::os::notify::{NOTIFY_SOCKET, Notifier};
use crate::os::rundir::RunDir;
use crate::os::state::{self, Aside, Finding, Started, State};
use crate::os::watchdog::{
    self, BootStatus, Device, NoDevice, Takeover, WDIOF_CARDRESET, Watchdog, WatchdogError,
};
use crate::os::{harden, logging};

const KMSG: &str = "/dev/kmsg";

/// Why `watchkeeper run` could not start the agent at all (nothing after the config stops
/// it, see the module doc).
pub enum RunError {
    /// The agent could not be built from the config; the agent's own error says why.
    Agent(StartError),
}

impl fmt::Display for RunError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RunError::Agent(why) => why.fmt(f),
        }
    }
}

/// Why `watchkeeper disarm` did not disarm.
pub enum DisarmError {
    Config(ConfigError),
    /// The config names no device (`device = "none"`).
    NoDevice,
    Device(WatchdogError),
}

impl fmt::Display for DisarmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DisarmError::Config(e) => e.fmt(f),
            DisarmError::NoDevice => f.write_str(
                "the config names no watchdog device (device = \"none\"): nothing to disarm",
            ),
            DisarmError::Device(e) => e.fmt(f),
        }
    }
}

/// Loads the config, falling back to the last good one, then to a salvaged minimum.
/// Returns the config and, for a fallback, the errors to log (a fault to show) once the
/// log target the config names is in place, so they reach the kernel log too. `status`
/// uses it too, to look where the agent looks.
///
/// The last good config is looked for where it can have been saved: the state directory
/// the broken config names (found line by line when the file is not even TOML), then the
/// default one (the broken config may name none, or one not used before).
pub fn load_config(path: &Path) -> (Config, Vec<String>) {
    let error = match config::load(path) {
        Ok(config) => return (config, Vec::new()),
        Err(e) => e,
    };
    let mut errors = vec![format!("config error: {error}")];
    let bytes = config::read(path).ok();
    let source = bytes.as_deref().map(String::from_utf8_lossy);
    let salvage = config::salvage(source.as_deref());
    let mut looked: Vec<PathBuf> = Vec::new();
    for dir in [
        salvage.state_dir.clone(),
        PathBuf::from(config::DEFAULT_STATE_DIR),
    ] {
        if looked.contains(&dir) {
            continue;
        }
        let kept = State::last_good_path(&dir);
        match State::load_last_good(&dir) {
            Ok(Some(text)) => match config::parse(&kept, &text) {
                Ok(config) => {
                    errors.push(format!(
                        "falling back to the last good config {}: fix {} and restart watchkeeper",
                        kept.display(),
                        path.display()
                    ));
                    return (config, errors);
                }
                Err(e) => errors.push(format!("the last good config does not load either: {e}")),
            },
            Ok(None) => {}
            Err(e) => errors.push(format!("cannot use the last good config: {e}")),
        }
        looked.push(dir);
    }
    let looked: Vec<String> = looked.iter().map(|d| d.display().to_string()).collect();
    errors.push(format!(
        "no usable last good config in {}: supervising nothing, feeding the watchdog",
        looked.join(" or ")
    ));
    (salvage.into_config(path), errors)
}

/// The watchdog as the agent found it.
struct Opened {
    /// `None` when the device could not be opened.
    watchdog: Option<Box<dyn Watchdog>>,
    boot_status: Option<u32>,
    takeover: Takeover,
}

fn open_watchdog(config: &Config) -> Opened {
    let Some(path) = &config.watchdog.device else {
        log::warn!("watchdog device \"none\": nothing is fed, every decision is only logged");
        return Opened {
            watchdog: Some(Box::new(NoDevice::new(config.watchdog.timeout))),
            boot_status: None,
            takeover: Takeover::NoDevice,
        };
    };
    let takeover = Takeover::before_open(path);
    match Device::open(path, config.watchdog.timeout) {
        Ok(device) => {
            let was = match takeover {
                Takeover::Running => "already running",
                Takeover::Stopped => "started now",
                Takeover::Unknown | Takeover::NoDevice => "running before unknown",
            };
            // After a restart, the time left says how close the board came to a reset.
            match device.time_left() {
                Some(left) => log::info!(
                    "watchdog {} ({}, {was}): timeout {:?}, {left:?} left before this start's first feed",
                    path.display(),
                    device.identity(),
                    device.timeout()
                ),
                None => log::info!(
                    "watchdog {} ({}, {was}): timeout {:?}",
                    path.display(),
                    device.identity(),
                    device.timeout()
                ),
            }
            Opened {
                boot_status: device.boot_status(),
                watchdog: Some(Box::new(device)),
                takeover,
            }
        }
        Err(e) => {
            log::error!("{e}");
            Opened {
                watchdog: None,
                boot_status: None,
                takeover: Takeover::NoDevice,
            }
        }
    }
}

/// Runs the agent; returns only when the agent cannot start at all, saying why.
pub fn run(config_path: &Path, agent_binary: &Path) -> RunError {
    crate::os::signals::install();
    let clock = SystemClock::new();
    let (config, config_errors) = load_config(config_path);
    if config.agent.log == config::LogTarget::Kmsg
        && let Err(e) = logging::use_kmsg(Path::new(KMSG))
    {
        log::error!("cannot log to {KMSG}: {e}; logging to stderr");
    }
    for error in &config_errors {
        log::error!("{error}");
    }
    let mut fault = !config_errors.is_empty();
    log::info!(
        "{} starting, config {}",
        version::LINE,
        config.path.display()
    );
    let Opened {
        watchdog,
        boot_status,
        takeover,
    } = open_watchdog(&config);
    fault |= watchdog.is_none();

    // Why the previous boot's record is missing, when it cannot simply be the first boot.
    let mut no_record = None;
    let mut state = match State::open(&config.agent.state_dir) {
        Ok((state, finding)) => {
            if let Some(Finding::UnreadableHistory { defect, aside }) = finding {
                let history = config.agent.state_dir.join("history");
                match aside {
                    Aside::Kept(kept) => log::error!(
                        "the reset history {} is unusable: {defect}; kept as {}, starting a new one",
                        history.display(),
                        kept.display()
                    ),
                    Aside::Removed => log::error!(
                        "the reset history {} is unusable: {defect}; it could not be kept aside, so it was removed; starting a new one",
                        history.display()
                    ),
                    Aside::Stuck(e) => log::error!(
                        "the reset history {} is unusable: {defect}; it can be neither kept aside nor removed ({}), so a new one cannot be written",
                        history.display(),
                        e.desc()
                    ),
                }
                no_record = Some("its history was unusable");
            }
            state
        }
        Err(e) => {
            // A read-only or broken disk must not become a reset loop: run on without it.
            log::error!(
                "{e}: reset reasons and the last good config cannot be kept; supervision and feeding go on"
            );
            no_record = Some("the state directory cannot be read");
            State::unavailable(&config.agent.state_dir, e.errno)
        }
    };
    let fired = boot_status.is_some_and(|bits| bits & WDIOF_CARDRESET != 0);
    let this_boot = state::boot_id();
    let (started, recorded) = state.start_boot(&this_boot, clock.wall(), fired);
    // Before the agent hardens itself: the check must inherit neither its OOM protection
    // nor its real-time priority.
    let boot_phase = match started {
        Started::Restarted => resumed_phase(state.history().current().map(|b| b.confirm)),
        _ => Phase::Checking,
    };
    let trial = config
        .boot
        .as_ref()
        .filter(|_| boot_phase == Phase::Checking)
        .map(|b| TrialRun::start(&b.trial));
    // Always one line on how the previous boot ended: after a reset it is the first thing
    // a technician looks for.
    match started {
        Started::After(previous) => match previous.end {
            End::Forced => log::warn!(
                "previous boot {} was reset by watchkeeper: component {}: {}",
                previous.number,
                previous.component,
                previous.reason
            ),
            End::Shutdown {
                watchdog_fired: false,
            } => log::info!("previous boot {}: {}", previous.number, previous.reason),
            _ => log::warn!("previous boot {}: {}", previous.number, previous.reason),
        },
        Started::First => match no_record {
            Some(why) => {
                log::error!("previous boot: unknown: the previous boot left no record ({why})")
            }
            None => log::info!(
                "previous boot: unknown: the previous boot left no record (first boot on record in {})",
                config.agent.state_dir.display()
            ),
        },
        Started::Restarted => log::warn!("watchkeeper restarted within the same boot"),
    }
    if let Err(e) = recorded {
        log::error!(
            "could not record the start of this boot (boot id {this_boot}) in the reset history: {e}; if this boot ends in a reset, the next one will not know how it ended"
        );
    }
    if state.fault() {
        state.log_health();
    }
    if let Some(bits) = boot_status.filter(|bits| *bits != 0) {
        log::warn!("watchdog boot status: {}", BootStatus(bits));
    }
    if !fault
        && !state.fault()
        && let Err(e) = state.save_last_good(&config.source)
    {
        log::error!("{e}");
    }
    let guard = config.guard;
    let hold_until = state.history().hold_needed(guard.max_resets, guard.window).then(|| {
        let left = guard.window.saturating_sub(clock.uptime());
        log::error!(
            "reboot-loop guard: {} forced resets within {:?}: holding resets for {left:?} (clear with `watchkeeper clear-hold`)",
            guard.max_resets,
            guard.window
        );
        clock.now().saturating_add(left)
    });

    // The device is open: exiting now would be a reset loop under a respawning init.
    let run = RunDir::open(&config.agent.run_dir);
    if let Some(broken) = run.broken() {
        log::error!(
            "{}: problem files, the status snapshot and the fed file cannot be written until it is fixed; supervision and feeding go on",
            run.describe(broken)
        );
    }
    let led = match led::open(&config.led) {
        Ok(led) => led,
        Err(e) => {
            log::error!("{e}");
            fault = true;
            led::open(&LedSpec::None).expect("the none LED always opens")
        }
    };
    let may_reboot = config.watchdog.device.is_some();
    let readiness = match (watchdog.is_some(), may_reboot) {
        (true, true) => "guarding the board: the watchdog is fed after each healthy check",
        (true, false) => "no watchdog device (device = \"none\"): decisions are only logged",
        (false, _) => "NOT GUARDED: the watchdog device cannot be used (see the log)",
    };
    let seed = this_boot
        .bytes()
        .fold(u64::from(std::process::id()), |h, b| {
            h.rotate_left(5) ^ u64::from(b)
        })
        ^ clock.now().as_nanos();
    let parts = Parts {
        watchdog,
        may_reboot,
        led,
        clock,
        state,
        run,
        agent_binary: agent_binary.to_owned(),
        fault,
        hold_until,
        seed,
        notifier: match Notifier::from_env(readiness) {
            None => None,
            Some(Ok(notifier)) => Some(notifier),
            Some(Err(e)) => {
                log::warn!("{NOTIFY_SOCKET} {e}");
                None
            }
        },
        takeover,
        boot_phase,
        trial,
    };
    let agent = match Agent::new(&config, parts) {
        Ok(agent) => agent,
        Err(e) => return RunError::Agent(e),
    };
    for warning in harden::harden(config.agent.realtime_priority) {
        log::warn!("{warning}");
    }
    log::info!(
        "supervising {} components{}; safety-net look every {:?}, upkeep every {:?}",
        config.components.len(),
        if config.hearts.is_some() {
            " and the hearts directory"
        } else {
            ""
        },
        config.agent.check_interval,
        config.agent.check_interval * crate::agent::UPKEEP_EVERY
    );
    agent.run()
}

/// `watchkeeper disarm`: writes the magic 'V' so the device stops counting.
/// Returns what to tell the operator.
pub fn disarm(config_path: &Path) -> Result<String, DisarmError> {
    let config = config::load(config_path).map_err(DisarmError::Config)?;
    let Some(path) = config.watchdog.device else {
        return Err(DisarmError::NoDevice);
    };
    let disarmed = watchdog::disarm(&path).map_err(DisarmError::Device)?;
    let mut message = format!(
        "DISARMED {}: the watchdog no longer resets this board if it hangs.\n\
         Restart watchkeeper to re-arm it.",
        path.display()
    );
    if !disarmed.magic_close {
        message.push_str(
            "\nWARNING: the driver does not advertise magic close: it may still be counting.",
        );
    }
    Ok(message)
}
