//! The configuration file: parsed and validated once, at startup.
//!
//! One TOML file names the watchdog device, the LED, the directories, the reboot-loop
//! guard and the supervised components. Parsing is strict: unknown keys, wrong types,
//! out-of-range or contradictory values are errors that name the file, line and column and
//! say what is allowed. Everything downstream trusts a [`Config`]: it is only built here.
//!
//! Durations are whole seconds (`10`) or a number with a unit (`"500ms"`, `"10s"`, `"5m"`,
//! `"1h"`). Paths are absolute, at most [`MAX_PATH_LEN`](crate::limits::MAX_PATH_LEN)
//! bytes, without control characters.
//!
//! This module holds the validated types and the way in ([`load`], [`read`],
//! [`parse_bytes`], [`parse`]); the rest is one job per file:
//! - `schema`: the sections and keys as the parser reads them, and the value types;
//! - `validate`: one validator per section, then the rules between sections;
//! - `defaults`: every default, written once;
//! - `salvage`: what still runs when the config does not load ([`salvage()`]);
//! - `effective`: the effective settings `check` prints (`Display` for [`Config`]).
//!
//! Invariants:
//! - No input panics: every path from bytes to [`Config`] returns a [`ConfigError`], and every
//!   error about the content carries a line and column.
//! - The file is read without blocking (only a regular file, at most [`MAX_CONFIG_LEN`]
//!   bytes); the same limit holds for the text [`parse`] accepts, so the last good copy of an
//!   accepted config always fits its read-back.
//! - What `check` prints parses back to the same config.

mod defaults;
mod effective;
mod salvage;
mod schema;
mod validate;

use core::fmt;
use core::time::Duration;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nix::fcntl::OFlag;

use crate::core::boot::BootPolicy;
use crate::core::name::Name;
use crate::core::supervisor::{Policy, RepairPolicy};
use crate::limits::MAX_CONFIG_LEN;
use crate::os::led::LedSpec;

pub use defaults::{PATH as DEFAULT_PATH, STATE_DIR as DEFAULT_STATE_DIR};
pub use salvage::{Salvage, salvage};
use schema::RawConfig;

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from, and its text (kept as the last good config).
    pub path: PathBuf,
    pub source: String,
    pub watchdog: WatchdogConfig,
    pub agent: AgentConfig,
    pub led: LedSpec,
    pub guard: GuardConfig,
    pub hearts: Option<HeartsConfig>,
    pub notify: NotifyConfig,
    /// `[boot]`: confirm trial boots of A/B updates when healthy.
    pub boot: Option<BootConfig>,
    /// `[export]`: the metrics file for node_exporter's textfile collector.
    pub export: Option<ExportConfig>,
    pub components: Vec<ComponentConfig>,
}

/// `[export]`: where the fleet's metrics are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// A `*.prom` file in a directory of node_exporter's `--collector.textfile.directory`.
    pub textfile: PathBuf,
}

/// `[boot]`: how a trial boot is recognised and confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootConfig {
    /// The confirm command: program (absolute path) and arguments, no shell.
    pub confirm: Vec<OsString>,
    pub policy: BootPolicy,
    /// Uptime by which the boot must have been healthy for `confirm_after`, if any.
    pub deadline: Option<Duration>,
    pub trial: TrialCheck,
}

/// How the agent tells a trial boot (one the bootloader counts) from any other.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrialCheck {
    /// Every boot is a trial (RAUC's boot counting counts every boot).
    Always,
    /// A command: with `value`, a trial when it exits 0 and prints `value`; without, a
    /// trial when it exits 0 and not one when it exits 1.
    Command {
        argv: Vec<OsString>,
        value: Option<String>,
    },
    /// A file: a trial when it holds `value` (surrounding whitespace aside), not one when
    /// it holds anything else or does not exist.
    File { path: PathBuf, value: String },
}

/// `[notify]`: where daemons that speak sd_notify send their messages. The socket exists
/// only while a component listens for them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyConfig {
    pub socket: PathBuf,
}

/// Where a component's signs of life come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Liveness {
    /// Its heartbeat file is touched.
    Heartbeat,
    /// Its main process sends sd_notify messages (`READY=1`, then `WATCHDOG=1`).
    Notify,
    /// Either: a touch of the file or a message is a beat; `READY=1` ends its startup.
    Both,
}

impl Liveness {
    /// The source `liveness = "..."` names.
    fn from_name(name: &str) -> Option<Liveness> {
        match name {
            "heartbeat" => Some(Liveness::Heartbeat),
            "notify" => Some(Liveness::Notify),
            "both" => Some(Liveness::Both),
            _ => None,
        }
    }

    /// The name `liveness = "..."` gives it.
    pub fn name(self) -> &'static str {
        match self {
            Liveness::Heartbeat => "heartbeat",
            Liveness::Notify => "notify",
            Liveness::Both => "both",
        }
    }

    /// True when sd_notify messages count.
    pub fn listens(self) -> bool {
        self != Liveness::Heartbeat
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// `None` for `device = "none"`: decisions are logged, nothing is fed.
    pub device: Option<PathBuf>,
    pub timeout: Duration,
    pub feed_interval: Duration,
    /// The watchdog timeout `watchkeeper shutdown` leaves in force: the bound on a shutdown.
    pub shutdown_timeout: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Kmsg,
}

impl LogTarget {
    /// The target `log = "..."` names.
    fn from_name(name: &str) -> Option<LogTarget> {
        match name {
            "stderr" => Some(LogTarget::Stderr),
            "kmsg" => Some(LogTarget::Kmsg),
            _ => None,
        }
    }

    /// The name `log = "..."` gives it.
    fn name(self) -> &'static str {
        match self {
            LogTarget::Stderr => "stderr",
            LogTarget::Kmsg => "kmsg",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    pub check_interval: Duration,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    pub log: LogTarget,
    /// SCHED_FIFO priority; `None` leaves the scheduler alone.
    pub realtime_priority: Option<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuardConfig {
    /// This many forced resets within `window` put the board in hold.
    pub max_resets: u32,
    pub window: Duration,
}

/// Hearts directory: every regular file is a heart named by its file name, whose content is
/// its timeout in whole seconds. All hearts share this policy.
#[derive(Debug, Clone)]
pub struct HeartsConfig {
    pub dir: PathBuf,
    pub grace: Duration,
    pub reset_after: Duration,
    pub critical: bool,
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone)]
pub struct ComponentConfig {
    pub name: Name,
    /// `None` only for `liveness = "notify"`.
    pub heartbeat: Option<PathBuf>,
    pub liveness: Liveness,
    /// As configured; see [`Config::pidfile`] for the one the agent reads.
    pub pidfile: Option<PathBuf>,
    pub policy: Policy,
    /// The repair command: program (absolute path) and arguments, no shell.
    pub repair: Option<Repair>,
}

#[derive(Debug, Clone)]
pub struct Repair {
    pub argv: Vec<OsString>,
    pub policy: RepairPolicy,
}

/// A config error: where, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: PathBuf,
    /// 1-based line and column, when the error has a place in the file.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.at {
            Some((line, column)) => {
                write!(
                    f,
                    "{}:{line}:{column}: {}",
                    self.path.display(),
                    self.message
                )
            }
            None => write!(f, "{}: {}", self.path.display(), self.message),
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let bytes = read(path)?;
    parse_bytes(path, &bytes)
}

/// Reads the config file's bytes without ever blocking: anything but a regular file (a FIFO,
/// a directory, a device, a socket) is refused before it is read, and at most
/// [`MAX_CONFIG_LEN`] bytes are read. A symlink to a regular file is followed (configs in
/// /etc often are symlinks).
pub fn read(path: &Path) -> Result<Vec<u8>, ConfigError> {
    use std::io::Read as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let refuse = |message: String| ConfigError {
        path: path.to_owned(),
        at: None,
        message,
    };
    let cannot = |e: std::io::Error| refuse(format!("cannot read the config file: {e}"));
    // Stat before opening: opening a device node can act (opening a watchdog arms it).
    not_regular(&std::fs::metadata(path).map_err(cannot)?).map_or(Ok(()), |k| Err(refuse(k)))?;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
        .map_err(cannot)?;
    // The path may have been replaced between the stat and the open.
    not_regular(&file.metadata().map_err(cannot)?).map_or(Ok(()), |k| Err(refuse(k)))?;
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_LEN as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(cannot)?;
    Ok(bytes)
}

/// Why a file of this type cannot be a config, or `None` for a regular file.
fn not_regular(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::FileTypeExt as _;
    let kind = meta.file_type();
    let what = if kind.is_file() {
        return None;
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_fifo() {
        "a FIFO (named pipe)"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file"
    };
    Some(format!(
        "the config must be a regular file (or a symlink to one); this is {what}"
    ))
}

/// Validates config bytes: UTF-8 text of at most [`MAX_CONFIG_LEN`] bytes, then [`parse`].
pub fn parse_bytes(path: &Path, bytes: &[u8]) -> Result<Config, ConfigError> {
    let place = |offset: usize, message: String| ConfigError {
        path: path.to_owned(),
        at: Some(line_column(bytes, offset)),
        message,
    };
    if bytes.len() > MAX_CONFIG_LEN {
        return Err(place(MAX_CONFIG_LEN, too_long(bytes.len())));
    }
    let source = core::str::from_utf8(bytes).map_err(|e| {
        place(
            e.valid_up_to(),
            format!(
                "the config is not UTF-8 text: byte {:#04x} here is not valid UTF-8 (save the file as UTF-8)",
                bytes.get(e.valid_up_to()).copied().unwrap_or(0)
            ),
        )
    })?;
    parse(path, source)
}

fn too_long(len: usize) -> String {
    let more = if len > MAX_CONFIG_LEN {
        "more than "
    } else {
        ""
    };
    format!(
        "the config is {more}{MAX_CONFIG_LEN} bytes long; at most {MAX_CONFIG_LEN} bytes ({} KiB) are allowed, so that the last good copy always fits",
        MAX_CONFIG_LEN / 1024
    )
}

/// Validates config text; `path` is only used in messages and kept in the result.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    let error = |span: Option<core::ops::Range<usize>>, message: String| ConfigError {
        path: path.to_owned(),
        at: Some(line_column(
            source.as_bytes(),
            span.map_or(source.len(), |s| s.start),
        )),
        message,
    };
    // The one size limit, enforced where a config is first accepted: a last good config
    // saved from it always fits the read-back.
    if source.len() > MAX_CONFIG_LEN {
        return Err(error(
            Some(MAX_CONFIG_LEN..MAX_CONFIG_LEN),
            too_long(source.len()),
        ));
    }
    if let Some(nul) = source.find('\0') {
        return Err(error(
            Some(nul..nul),
            "a NUL byte is not allowed in the config (it is text: remove the byte)".into(),
        ));
    }
    let raw = RawConfig::read(source).map_err(|e| error(e.span, e.message))?;
    raw.validate(path, source)
        .map_err(|(span, message)| error(span, message))
}

/// 1-based line and column (in characters) of byte `offset`.
fn line_column(source: &[u8], offset: usize) -> (usize, usize) {
    let before = source.get(..offset).unwrap_or(source);
    let line_start = before
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |nl| nl + 1);
    let line = before.iter().filter(|b| **b == b'\n').count() + 1;
    // Count characters, not bytes: UTF-8 continuation bytes are 0b10xxxxxx.
    let column = before
        .get(line_start..)
        .unwrap_or_default()
        .iter()
        .filter(|b| **b & 0xC0 != 0x80)
        .count()
        + 1;
    (line, column)
}

impl Config {
    /// Looks a component up by name.
    pub fn component(&self, name: &str) -> Option<&ComponentConfig> {
        self.components.iter().find(|c| c.name.as_str() == name)
    }

    /// The pidfile the agent reads for `component`: the configured one, else for a notify
    /// component the one `watchkeeper exec` writes in the run directory.
    pub fn pidfile(&self, component: &ComponentConfig) -> Option<PathBuf> {
        component.pidfile.clone().or_else(|| {
            component.liveness.listens().then(|| {
                self.agent
                    .run_dir
                    .join(defaults::EXEC_IN_RUN_DIR)
                    .join(format!("{}.pid", component.name.as_str()))
            })
        })
    }

    /// True when some component listens for sd_notify messages (the socket is needed).
    pub fn listens(&self) -> bool {
        self.components.iter().any(|c| c.liveness.listens())
    }
}
