//! The defaults: what each setting is when the config file does not set it, written once
//! and read by validation, by the salvage path and by `check`'s effective settings.
//!
//! Invariant: every default here passes the rule its key is validated with (a default
//! path is absolute, the default feed interval is below half the default timeout), so a
//! config built from defaults is as valid as one written out in full.

use core::time::Duration;
use std::path::PathBuf;

use super::{GuardConfig, LogTarget, WatchdogConfig};
use crate::os::led::LedSpec;

/// Where the agent reads its config unless told otherwise.
pub const PATH: &str = "/etc/watchkeeper.toml";

/// `[watchdog] device`.
pub(crate) const DEVICE: &str = "/dev/watchdog";
/// The `device` that turns the hardware watchdog off: decisions are logged, nothing is fed.
pub(crate) const DEVICE_NONE: &str = "none";
/// `[watchdog] timeout`.
pub(crate) const WATCHDOG_TIMEOUT: Duration = Duration::from_secs(15);
/// `[watchdog] feed_interval` is the timeout divided by this.
pub(crate) const FEEDS_PER_TIMEOUT: u32 = 4;
/// `[watchdog] shutdown_timeout`: longer than systemd's default stop timeout of one unit
/// (90 s), so that one slow unit does not end a clean shutdown in a hardware reset.
pub(crate) const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(120);

/// `[agent] check_interval`.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_secs(1);
/// `[agent] state_dir`.
pub const STATE_DIR: &str = "/var/lib/watchkeeper";
/// `[agent] run_dir`.
pub(crate) const RUN_DIR: &str = "/run/watchkeeper";
/// `[agent] log`.
pub(crate) const LOG: LogTarget = LogTarget::Stderr;
/// `[agent] realtime_priority`.
pub(crate) const REALTIME_PRIORITY: u8 = 10;
/// The `realtime_priority` that leaves the scheduler alone.
pub(crate) const REALTIME_OFF: u8 = 0;

/// `[led]`: no LED.
pub const LED: LedSpec = LedSpec::None;
/// `[led] chip`, for `kind = "gpio"`.
pub(crate) const GPIO_CHIP: &str = "/dev/gpiochip0";
/// `[led] active_low`.
pub(crate) const ACTIVE_LOW: bool = false;

/// `[reboot_guard]`.
pub(crate) const GUARD: GuardConfig = GuardConfig {
    max_resets: 3,
    window: Duration::from_secs(3600),
};

/// `[hearts] dir` is this directory inside the run directory: the one place there the
/// agent does not write itself, so the one place there a configured path may point.
pub(crate) const HEARTS_IN_RUN_DIR: &str = "hearts";

/// `[notify] socket` is this name inside the run directory.
pub(crate) const NOTIFY_IN_RUN_DIR: &str = "notify";
/// `watchkeeper exec` writes a notify component's pidfile (`NAME.pid`) in this directory
/// inside the run directory, unless the component names its own `pidfile`.
pub(crate) const EXEC_IN_RUN_DIR: &str = "exec";

/// A component's `liveness`.
pub(crate) const LIVENESS: super::Liveness = super::Liveness::Heartbeat;
/// A component's `timeout`.
pub(crate) const TIMEOUT: Duration = Duration::from_secs(30);
/// `grace` is the heartbeat timeout, but at least this (hearts, whose timeouts are only
/// known at run time, get this).
pub(crate) const GRACE_AT_LEAST: Duration = Duration::from_secs(60);
/// `reset_after`.
pub(crate) const RESET_AFTER: Duration = Duration::from_secs(300);
/// `critical`.
pub(crate) const CRITICAL: bool = true;
/// `repair_timeout`.
pub(crate) const REPAIR_TIMEOUT: Duration = Duration::from_secs(30);
/// `repair_backoff`.
pub(crate) const REPAIR_BACKOFF: Duration = Duration::from_secs(5);
/// `repair_backoff_max`.
pub(crate) const REPAIR_BACKOFF_MAX: Duration = Duration::from_secs(300);
/// `max_repairs`.
pub(crate) const MAX_REPAIRS: u32 = 5;

/// `[boot] confirm_after`.
pub(crate) const CONFIRM_AFTER: Duration = Duration::from_secs(60);
/// `[boot] confirm_timeout`, which also bounds the trial check.
pub(crate) const CONFIRM_TIMEOUT: Duration = Duration::from_secs(30);
/// `[boot] confirm_attempts`.
pub(crate) const CONFIRM_ATTEMPTS: u32 = 3;

/// The default `[watchdog]` section, built without parsing.
pub fn watchdog() -> WatchdogConfig {
    WatchdogConfig {
        device: Some(PathBuf::from(DEVICE)),
        timeout: WATCHDOG_TIMEOUT,
        feed_interval: WATCHDOG_TIMEOUT / FEEDS_PER_TIMEOUT,
        shutdown_timeout: SHUTDOWN_TIMEOUT,
    }
}
