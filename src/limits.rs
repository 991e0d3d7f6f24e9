//! Every fixed capacity of the agent, in one place.
//!
//! The agent allocates nothing after startup, so each runtime table has a capacity fixed
//! at compile time. Exceeding one in the config is a startup error that names the limit;
//! at run time (hearts directory) an entry over capacity is refused with a warning. None is
//! ever a panic.

/// Supervised components: `[[component]]` entries plus hearts-directory files.
pub const MAX_COMPONENTS: usize = 1024;
/// Bytes in a component or heart name (`[A-Za-z0-9._-]`).
pub const MAX_NAME_LEN: usize = 32;
/// Length of a boot id: the kernel's random UUID (`/proc/sys/kernel/random/boot_id`).
pub const BOOT_ID_LEN: usize = 36;
/// Bytes in any path the agent is configured with (heartbeat, pidfile, device, dirs).
pub const MAX_PATH_LEN: usize = 256;
/// Arguments in one repair command, program included.
pub const MAX_REPAIR_ARGS: usize = 16;
/// Repair attempts allowed per death of a component.
pub const MAX_REPAIR_ATTEMPTS: u32 = 100;
/// Boots remembered in the persistent reset history.
pub const HISTORY_LEN: usize = 16;
/// Bytes in a recorded reset reason.
pub const MAX_REASON_LEN: usize = 160;
/// Bytes of one log line; longer messages are cut, never allocated for.
pub const MAX_LOG_LINE: usize = 512;
/// Bytes read from a hearts-directory file (its timeout in whole seconds).
pub const MAX_HEART_CONTENT: usize = 32;
/// Largest heartbeat timeout, grace, reset delay or window: 30 days.
pub const MAX_DURATION_SECS: u64 = 30 * 24 * 3600;
/// Bytes of the status snapshot the agent keeps in the run directory.
pub const MAX_STATUS_LEN: usize = 128 * 1024;
/// Bytes in a config file, and so in the last good copy kept of one: one limit, enforced
/// when a config is first accepted, so that a saved copy always fits the read-back.
pub const MAX_CONFIG_LEN: usize = 1024 * 1024;
/// sd_notify datagrams read per wake-up of the agent: a flood is read this far, then the
/// loop passes, feeds and comes back, so it never delays a feed.
pub const MAX_NOTIFY_READS: usize = 64;
/// Bytes of a daemon's `STATUS=` text (sd_notify) kept for `status`; longer text is cut.
pub const MAX_NOTIFY_STATUS_LEN: usize = 128;
/// Hearts-directory refusals named one by one in a report; the rest are counted.
pub const MAX_REFUSALS_NAMED: usize = 8;
/// Least time between two reports of hearts-directory refusals, so that a directory that
/// changes all the time (or holds 100,000 entries) cannot flood the log.
pub const REFUSAL_REPORT_INTERVAL_MS: u64 = 2000;
/// Hearts-directory entries listed per pass: a directory holding more (a flood, a
/// runaway writer) is looked at only this far, so that a pass stays short however large it
/// grows. Sixteen times the components that fit leaves room for plenty of junk.
pub const MAX_HEARTS_DIR_ENTRIES: usize = 16 * MAX_COMPONENTS;
/// Bytes of a trial check's output (or trial file) compared with `trial_value`; a longer
/// one cannot be told, so the boot is treated as a trial.
pub const MAX_TRIAL_OUTPUT: usize = 256;
/// Reads of a running trial check's output per look (256 bytes each): a check that prints
/// without end is read this far, then the loop goes on, and its timeout kills it.
pub const MAX_TRIAL_READS: usize = 16;
