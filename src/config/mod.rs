//! The configuration file: parsed and validated once, at startup.
//!
//! One TOML file names the watchdog device, the LED, the directories, the reboot-loop
//! guard and the supervised components. Parsing is strict: unknown keys, wrong types,
//! out-of-range or contradictory values are errors that name the file, line and column and
//! say what is allowed. Everything downstream trusts a [`Config`]: it is only built here.
//!
//! Durations are whole seconds (`10`) or a number with a unit (`"500ms"`, `"10s"`, `"5m"`,
//! `"1h"`). Paths are absolute, at most [`MAX_PATH_LEN`] bytes, without control characters.
//!
//! Invariants:
//! - No input panics: every path from bytes to [`Config`] returns a [`ConfigError`], and every
//!   error about the content carries a line and column.
//! - The file is read without blocking (only a regular file, at most [`MAX_CONFIG_LEN`]
//!   bytes); the same limit holds for the text [`parse`] accepts, so the last good copy of an
//!   accepted config always fits its read-back.
//! - Values are read through one type, `Found`, so messages speak TOML (a list, a table, a string),
//!   never the parser's Rust types.
//! - Rules between paths and timings ("Rules `check` enforces" in the README) are checked on
//!   lexically normalised paths; what `check` prints (`Display`) parses back to the same config.

use core::fmt;
use core::time::Duration;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::os::led::LedSpec;
use nix::fcntl::OFlag;

use crate::core::name::check_name;
use crate::core::supervisor::{Policy, RepairPolicy};
use crate::limits::{
    HISTORY_LEN, MAX_COMPONENTS, MAX_CONFIG_LEN, MAX_DURATION_SECS, MAX_NAME_LEN, MAX_PATH_LEN,
    MAX_REPAIR_ARGS, MAX_REPAIR_ATTEMPTS,
};

/// Where the agent reads its config unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/watchkeeper.toml";
const DEFAULT_DEVICE: &str = "/dev/watchdog";
/// Where the state directory is unless the config names one.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/watchkeeper";
const DEFAULT_RUN_DIR: &str = "/run/watchkeeper";
const DEFAULT_GPIO_CHIP: &str = "/dev/gpiochip0";
const DEFAULT_WATCHDOG_TIMEOUT: Duration = Duration::from_secs(15);
/// The hearts directory inside the run directory: the one place there the agent does not
/// write itself, so the one place there a configured path may point.
const HEARTS_IN_RUN_DIR: &str = "hearts";

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
    pub components: Vec<ComponentConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchdogConfig {
    /// `None` for `device = "none"`: decisions are logged, nothing is fed.
    pub device: Option<PathBuf>,
    pub timeout: Duration,
    pub feed_interval: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogTarget {
    Stderr,
    Kmsg,
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
    pub name: String,
    pub heartbeat: PathBuf,
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
    let raw: RawConfig = toml::from_str(source).map_err(|e| {
        let message = user_words(source, e.span(), e.message().trim());
        error(e.span(), message)
    })?;
    raw.validate(path, source)
        .map_err(|(span, message)| error(span, message))
}

/// The parser's own messages, in the config writer's words: what is allowed there, and no
/// Rust type names. Messages this does not know are already in TOML's terms.
fn user_words(source: &str, span: Option<core::ops::Range<usize>>, message: &str) -> String {
    if message.starts_with("duplicate key") {
        let key = span
            .as_ref()
            .and_then(|s| source.get(s.clone()))
            .unwrap_or("")
            .trim_matches(|c| c == '"' || c == '\'');
        let start = span.map_or(0, |s| s.start);
        let line_start = source
            .get(..start)
            .and_then(|b| b.rfind('\n'))
            .map_or(0, |nl| nl + 1);
        let line = source.get(line_start..).unwrap_or("").trim_start();
        return if line.starts_with("[[") {
            format!(
                "[[{key}]] after a [{key}] table: a table is written either once as [{key}] or every time as [[{key}]]"
            )
        } else if line.starts_with('[') && key == "component" {
            "[component] after [[component]]: write every component as [[component]] (two brackets)"
                .to_owned()
        } else if line.starts_with('[') {
            format!("the table [{key}] appears twice: write each table once")
        } else {
            format!("the key `{key}` is set twice in this table: set each key once")
        };
    }
    if let Some(rest) = message.strip_prefix("unknown field ") {
        return format!("unknown key {rest}");
    }
    let Some(rest) = message.strip_prefix("invalid type: ") else {
        return message.to_owned();
    };
    let (found, expected) = rest.split_once(", expected ").unwrap_or((rest, ""));
    let found = if found == "sequence" {
        "a list".to_owned()
    } else if found == "map" {
        "a table".to_owned()
    } else if let Some(text) = found.strip_prefix("string ") {
        format!("the string {text}")
    } else {
        // "integer `5`", "floating point `1.5`", "boolean `true`", "integer `N` as i128"
        found
            .split('`')
            .nth(1)
            .map_or_else(|| "a value of another kind".to_owned(), str::to_owned)
    };
    if expected == "a sequence" {
        format!(
            "components are written [[component]] (two brackets), one table per component; found {found}"
        )
    } else if expected.starts_with("struct ") {
        format!("expected a table ([section] or {{ key = value }}), not {found}")
    } else {
        format!("expected a value of another kind here, not {found}")
    }
}

/// What can still be used from a config that did not validate, so that the board is kept
/// up and the fault is shown: each section that validates on its own, defaults for others.
#[derive(Debug, Clone)]
pub struct Salvage {
    pub watchdog: WatchdogConfig,
    pub log: LogTarget,
    pub led: LedSpec,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
}

/// Best effort: never fails, falls back to defaults section by section. The directories,
/// the log target and the watchdog device are found even in text that is not TOML (line by
/// line), so that a syntax error anywhere does not lose the state directory and its last
/// good config, nor make the agent use a watchdog other than the configured one.
pub fn salvage(source: Option<&str>) -> Salvage {
    // Each section is read on its own, ignoring the rest of the file.
    #[derive(Deserialize)]
    struct Watchdog {
        watchdog: RawWatchdog,
    }
    #[derive(Deserialize)]
    struct Led {
        led: RawLed,
    }
    let source = source.unwrap_or_default();
    let table = toml::from_str::<toml::Table>(source).ok();
    let key = |name: &str| key_in(table.as_ref(), source, "agent", name);
    let watchdog = toml::from_str::<Watchdog>(source)
        .ok()
        .and_then(|w| w.watchdog.validate().ok())
        .unwrap_or_else(|| {
            // Keep at least the device: never feed (or arm) another one than configured.
            let mut watchdog = default_watchdog();
            match key_in(table.as_ref(), source, "watchdog", "device").as_deref() {
                Some("none") => watchdog.device = None,
                Some(path) if check_path(path).is_ok() => {
                    watchdog.device = Some(PathBuf::from(path));
                }
                _ => {}
            }
            watchdog
        });
    let led = toml::from_str::<Led>(source)
        .ok()
        .and_then(|l| l.led.validate().ok())
        .unwrap_or(LedSpec::None);
    let dir = |name: &str, default: &str| {
        key(name)
            .filter(|p| check_path(p).is_ok())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    Salvage {
        watchdog,
        log: match key("log").as_deref() {
            Some("kmsg") => LogTarget::Kmsg,
            _ => LogTarget::Stderr,
        },
        led,
        state_dir: dir("state_dir", DEFAULT_STATE_DIR),
        run_dir: dir("run_dir", DEFAULT_RUN_DIR),
    }
}

/// The default `[watchdog]` section, built without parsing.
fn default_watchdog() -> WatchdogConfig {
    WatchdogConfig {
        device: Some(PathBuf::from(DEFAULT_DEVICE)),
        timeout: DEFAULT_WATCHDOG_TIMEOUT,
        feed_interval: DEFAULT_WATCHDOG_TIMEOUT / 4,
    }
}

/// The string value of `[section] key`: from the parsed document when the file is TOML,
/// else line by line (`key = "..."` under `[section]`, or `section.key = "..."` before any
/// table), so that a syntax error elsewhere does not hide it. The first setting wins.
fn key_in(
    table: Option<&toml::Table>,
    source: &str,
    section_name: &str,
    key: &str,
) -> Option<String> {
    if let Some(table) = table {
        return table
            .get(section_name)?
            .as_table()?
            .get(key)?
            .as_str()
            .map(str::to_owned);
    }
    let dotted = format!("{section_name}.{key}");
    let mut section = String::new();
    for line in source.lines() {
        let line = line.trim();
        if let Some(header) = line.strip_prefix('[') {
            section = header
                .split(']')
                .next()
                .unwrap_or("")
                .trim_matches(|c: char| c == '[' || c.is_whitespace())
                .to_owned();
            continue;
        }
        let Some((name, value)) = line.split_once('=') else {
            continue;
        };
        let name = name.trim();
        let wanted =
            (section == section_name && name == key) || (section.is_empty() && name == dotted);
        if let Some(value) = wanted.then(|| quoted(value.trim())).flatten() {
            return Some(value.to_owned());
        }
    }
    None
}

/// The text of a one-line TOML string without escapes (`"..."` or `'...'`), followed by
/// nothing but an optional comment.
fn quoted(value: &str) -> Option<&str> {
    let quote = value.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let (text, after) = value.strip_prefix(quote)?.split_once(quote)?;
    let after = after.trim_start();
    let plain = !(quote == '"' && text.contains('\\'));
    (plain && (after.is_empty() || after.starts_with('#'))).then_some(text)
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

type Invalid = (Option<core::ops::Range<usize>>, String);

fn at<T>(value: &Spanned<T>, message: String) -> Invalid {
    (Some(value.span()), message)
}

fn span<T>(value: &Option<Spanned<T>>) -> Option<core::ops::Range<usize>> {
    value.as_ref().map(Spanned::span)
}

/// Any TOML value, as found. The typed values below are read through it, so that a value
/// of the wrong kind is refused in the config writer's words ("a list", "the string \"3\"")
/// and never in the parser's (Rust type names).
#[derive(Debug, Clone)]
enum Found {
    Int(i64),
    /// An integer beyond 64 bits, as written.
    Huge(String),
    Float(f64),
    Str(String),
    Bool(bool),
    List(Vec<Spanned<Found>>),
    Table,
    DateTime,
}

/// The one key of the table the TOML deserializer presents a date or time as.
const TOML_DATETIME_KEY: &str = "$__toml_private_datetime";

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Int(v) => write!(f, "{v}"),
            Found::Huge(v) => write!(f, "{v} (too large)"),
            Found::Float(v) => write!(f, "{v:?} (a decimal number)"),
            Found::Str(s) => write!(f, "the string {}", toml_string(s)),
            Found::Bool(b) => write!(f, "{b}"),
            Found::List(_) => f.write_str("a list"),
            Found::Table => f.write_str("a table"),
            Found::DateTime => f.write_str("a date or time"),
        }
    }
}

impl<'de> Deserialize<'de> for Found {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FoundVisitor;
        impl<'de> Visitor<'de> for FoundVisitor {
            type Value = Found;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a value")
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Found, E> {
                Ok(Found::Bool(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Found, E> {
                Ok(Found::Int(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Found, E> {
                Ok(i64::try_from(v).map_or_else(|_| Found::Huge(v.to_string()), Found::Int))
            }
            fn visit_i128<E: de::Error>(self, v: i128) -> Result<Found, E> {
                Ok(i64::try_from(v).map_or_else(|_| Found::Huge(v.to_string()), Found::Int))
            }
            fn visit_u128<E: de::Error>(self, v: u128) -> Result<Found, E> {
                Ok(i64::try_from(v).map_or_else(|_| Found::Huge(v.to_string()), Found::Int))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Found, E> {
                Ok(Found::Float(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Found, E> {
                Ok(Found::Str(v.to_owned()))
            }
            fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Found, A::Error> {
                let mut items = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<Found>>()? {
                    items.push(item);
                }
                Ok(Found::List(items))
            }
            fn visit_map<A: de::MapAccess<'de>>(self, mut map: A) -> Result<Found, A::Error> {
                let mut found = Found::Table;
                while let Some(key) = map.next_key::<String>()? {
                    // How the TOML deserializer hands over a date or time.
                    if key == TOML_DATETIME_KEY {
                        found = Found::DateTime;
                    }
                    map.next_value::<de::IgnoredAny>()?;
                }
                Ok(found)
            }
        }
        deserializer.deserialize_any(FoundVisitor)
    }
}

/// A whole number as written, or what was found instead: refused with the key's range by
/// [`int_in`], where the key and range are known.
#[derive(Debug, Clone)]
struct Int(Result<i64, String>);

impl<'de> Deserialize<'de> for Int {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Ok(Int(match Found::deserialize(deserializer)? {
            Found::Int(v) => Ok(v),
            other => Err(other.to_string()),
        }))
    }
}

/// `true` or `false`.
#[derive(Debug, Clone, Copy)]
struct Flag(bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Found::deserialize(deserializer)? {
            Found::Bool(b) => Ok(Flag(b)),
            other => Err(de::Error::custom(format!(
                "expected true or false (without quotes), not {other}"
            ))),
        }
    }
}

/// A string in quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Text(String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Found::deserialize(deserializer)? {
            Found::Str(s) => Ok(Text(s)),
            other => Err(de::Error::custom(format!(
                "expected a string in quotes (\"...\"), not {other}"
            ))),
        }
    }
}

/// A list, each element with its place (checked where its meaning is known).
#[derive(Debug, Clone)]
struct Words(Vec<Spanned<Found>>);

impl<'de> Deserialize<'de> for Words {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Found::deserialize(deserializer)? {
            Found::List(items) => Ok(Words(items)),
            other => Err(de::Error::custom(format!(
                "expected a list of strings, [\"/abs/program\", \"argument\", ...], not {other}"
            ))),
        }
    }
}

/// A duration as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Duration);

const DURATION_FORM: &str =
    "a duration: whole seconds (10) or a number with a unit (\"500ms\", \"10s\", \"5m\", \"1h\")";

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let too_long = || {
            de::Error::custom(format!(
                "a duration must be at most {} days",
                MAX_DURATION_SECS / 86_400
            ))
        };
        let duration = match Found::deserialize(deserializer)? {
            Found::Int(secs) => Duration::from_secs(
                u64::try_from(secs)
                    .map_err(|_| de::Error::custom("a duration cannot be negative"))?,
            ),
            Found::Huge(_) => return Err(too_long()),
            Found::Str(text) => parse_duration(&text).ok_or_else(|| {
                de::Error::custom(format!("expected {DURATION_FORM}, not {text:?}"))
            })?,
            other => {
                return Err(de::Error::custom(format!(
                    "expected {DURATION_FORM}, not {other}"
                )));
            }
        };
        if duration > Duration::from_secs(MAX_DURATION_SECS) {
            return Err(too_long());
        }
        Ok(Dur(duration))
    }
}

/// `"500ms"`, `"10s"`, `"5m"`, `"1h"`; saturating (the caller caps the result).
fn parse_duration(text: &str) -> Option<Duration> {
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits);
    let number: u64 = match number.parse() {
        Ok(n) => n,
        // All digits but too many: a duration far beyond any limit.
        Err(_) if !number.is_empty() => u64::MAX,
        Err(_) => return None,
    };
    match unit {
        "ms" => Some(Duration::from_millis(number)),
        "s" => Some(Duration::from_secs(number)),
        "m" => Some(Duration::from_secs(number.saturating_mul(60))),
        "h" => Some(Duration::from_secs(number.saturating_mul(3600))),
        _ => None,
    }
}

/// An absolute path of bounded length, without control characters.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AbsPath(PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(deserializer)?;
        check_path(&text).map_err(de::Error::custom)?;
        Ok(AbsPath(PathBuf::from(text)))
    }
}

fn check_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{} is not an absolute path (it must start with /)",
            toml_string(text)
        ));
    }
    if text.len() > MAX_PATH_LEN {
        return Err(format!(
            "path is {} bytes long; at most {MAX_PATH_LEN} are allowed",
            text.len()
        ));
    }
    if let Some(c) = text.chars().find(|c| c.is_ascii_control()) {
        return Err(format!(
            "{} contains the control character {:#04x}: a path may not contain tabs, newlines, escapes or other bytes below 0x20 or 0x7f",
            toml_string(text),
            u32::from(c)
        ));
    }
    Ok(())
}

/// `text` as a TOML basic string, escaped so that it parses back to the same text.
fn toml_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Lexically normalised: `.`, empty components and trailing slashes dropped, `..` applied
/// (never above `/`). Symlinks are not resolved: rules compare paths as written.
fn normalised(path: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for part in path.to_string_lossy().split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            part => out.push(part),
        }
    }
    out
}

/// `path` is `dir` or below it, after normalising both.
fn within(path: &Path, dir: &Path) -> bool {
    normalised(path).starts_with(normalised(dir))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    watchdog: RawWatchdog,
    #[serde(default)]
    agent: RawAgent,
    #[serde(default)]
    led: RawLed,
    #[serde(default)]
    reboot_guard: RawGuard,
    #[serde(default)]
    defaults: RawEntry,
    hearts: Option<Spanned<RawEntry>>,
    #[serde(default, rename = "component")]
    components: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    device: Option<Spanned<Text>>,
    timeout: Option<Spanned<Dur>>,
    feed_interval: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    check_interval: Option<Spanned<Dur>>,
    state_dir: Option<Spanned<AbsPath>>,
    run_dir: Option<Spanned<AbsPath>>,
    log: Option<Spanned<Text>>,
    realtime_priority: Option<Spanned<Int>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLed {
    kind: Option<Spanned<Text>>,
    chip: Option<Spanned<AbsPath>>,
    line: Option<Spanned<Int>>,
    name: Option<Spanned<Text>>,
    active_low: Option<Flag>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    max_resets: Option<Spanned<Int>>,
    window: Option<Spanned<Dur>>,
}

/// The keys of `[defaults]`, `[hearts]` and `[[component]]`: one schema for the three,
/// and each section refuses, with its place in the file, the keys that are not its own
/// (see [`RawEntry::refuse`]). The policy keys (`timeout` to `max_repairs`) are shared.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<Spanned<Text>>,
    heartbeat: Option<Spanned<AbsPath>>,
    pidfile: Option<Spanned<AbsPath>>,
    dir: Option<Spanned<AbsPath>>,
    timeout: Option<Spanned<Dur>>,
    grace: Option<Spanned<Dur>>,
    reset_after: Option<Spanned<Dur>>,
    critical: Option<Flag>,
    repair: Option<Spanned<Words>>,
    repair_timeout: Option<Spanned<Dur>>,
    repair_backoff: Option<Spanned<Dur>>,
    repair_backoff_max: Option<Spanned<Dur>>,
    max_repairs: Option<Spanned<Int>>,
}

fn min_duration(value: &Option<Spanned<Dur>>, key: &str, min: Duration) -> Result<(), Invalid> {
    match value {
        Some(v) if v.get_ref().0 < min => Err(at(v, format!("{key} must be at least {min:?}"))),
        _ => Ok(()),
    }
}

fn int_in(
    value: &Spanned<Int>,
    key: &str,
    range: core::ops::RangeInclusive<i64>,
) -> Result<i64, Invalid> {
    let found = match &value.get_ref().0 {
        Ok(v) if range.contains(v) => return Ok(*v),
        Ok(v) => v.to_string(),
        Err(found) => found.clone(),
    };
    Err(at(
        value,
        format!(
            "{key} must be a whole number from {} to {}, not {found}",
            range.start(),
            range.end()
        ),
    ))
}

/// A device node the agent will open must not be an existing regular file (a typo, or a
/// file left where the device should be). A missing one is a run-time fault, not a config
/// error: the device may appear later (a module loaded after the agent starts).
fn not_a_file(value: &Spanned<AbsPath>, key: &str, what: &str) -> Result<(), Invalid> {
    let path = &value.get_ref().0;
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Err(at(
            value,
            format!(
                "{key} {} is a regular file, not {what}",
                toml_string(&path.to_string_lossy())
            ),
        )),
        _ => Ok(()),
    }
}

impl RawWatchdog {
    fn validate(self) -> Result<WatchdogConfig, Invalid> {
        let device = match &self.device {
            Some(d) if d.get_ref().0 == "none" => None,
            Some(d) => {
                check_path(&d.get_ref().0).map_err(|m| at(d, m))?;
                let path = Spanned::new(d.span(), AbsPath(PathBuf::from(&d.get_ref().0)));
                not_a_file(
                    &path,
                    "device",
                    "a watchdog device (a character device such as /dev/watchdog0)",
                )?;
                Some(path.into_inner().0)
            }
            None => Some(PathBuf::from(DEFAULT_DEVICE)),
        };
        let timeout = match &self.timeout {
            Some(t) => {
                let d = t.get_ref().0;
                if d.subsec_nanos() != 0 || !(1..=3600).contains(&d.as_secs()) {
                    return Err(at(t, "watchdog timeout must be whole seconds from 1 to 3600 (the driver API counts seconds)".into()));
                }
                d
            }
            None => DEFAULT_WATCHDOG_TIMEOUT,
        };
        let feed_interval = match &self.feed_interval {
            Some(f) => {
                let d = f.get_ref().0;
                if d < Duration::from_millis(10) || d >= timeout / 2 {
                    return Err(at(
                        f,
                        format!(
                            "feed_interval must be at least 10ms and below half the watchdog timeout ({:?}), so that one late feed cannot reset the board",
                            timeout / 2
                        ),
                    ));
                }
                d
            }
            None => timeout / 4,
        };
        Ok(WatchdogConfig {
            device,
            timeout,
            feed_interval,
        })
    }
}

impl RawLed {
    fn validate(self) -> Result<LedSpec, Invalid> {
        let active_low = self.active_low.is_some_and(|f| f.0);
        let unexpected = |key: &str, for_kind: &str| {
            format!("led.{key} is only used with kind = \"{for_kind}\"")
        };
        let Some(kind) = &self.kind else {
            return Ok(LedSpec::None);
        };
        match kind.get_ref().0.as_str() {
            "none" => Ok(LedSpec::None),
            "gpio" => {
                if let Some(name) = &self.name {
                    return Err(at(name, unexpected("name", "sysfs")));
                }
                let line = self.line.as_ref().ok_or_else(|| {
                    at(
                        kind,
                        "led kind \"gpio\" needs line = N (the line offset on the chip, 0 to 1023)"
                            .to_owned(),
                    )
                })?;
                let line = int_in(line, "led.line", 0..=1023)?;
                let chip = match self.chip {
                    Some(chip) => {
                        not_a_file(
                            &chip,
                            "led.chip",
                            "a gpio chip (a character device such as /dev/gpiochip0)",
                        )?;
                        chip.into_inner().0
                    }
                    None => PathBuf::from(DEFAULT_GPIO_CHIP),
                };
                Ok(LedSpec::Gpio {
                    chip,
                    line: line as u32,
                    active_low,
                })
            }
            "sysfs" => {
                if let Some(line) = &self.line {
                    return Err(at(line, unexpected("line", "gpio")));
                }
                if let Some(chip) = &self.chip {
                    return Err(at(chip, unexpected("chip", "gpio")));
                }
                let name = self.name.as_ref().ok_or_else(|| {
                    at(
                        kind,
                        "led kind \"sysfs\" needs name = \"...\" (the LED under /sys/class/leds)"
                            .to_owned(),
                    )
                })?;
                let text = &name.get_ref().0;
                if text.is_empty()
                    || text.contains('/')
                    || text.chars().any(|c| c.is_control())
                    || text == "."
                    || text == ".."
                    || text.len() > MAX_NAME_LEN * 2
                {
                    return Err(at(
                        name,
                        format!(
                            "{} is not an LED name under /sys/class/leds (1 to {} bytes, no / and no control characters)",
                            toml_string(text),
                            MAX_NAME_LEN * 2
                        ),
                    ));
                }
                Ok(LedSpec::Sysfs {
                    name: text.clone(),
                    active_low,
                })
            }
            other => Err(at(
                kind,
                format!(
                    "led kind must be \"gpio\", \"sysfs\" or \"none\", not {}",
                    toml_string(other)
                ),
            )),
        }
    }
}

impl RawEntry {
    /// Refuses the keys that `section` does not take.
    fn refuse(
        &self,
        section: &str,
        keys: &[(&str, Option<core::ops::Range<usize>>, &str)],
    ) -> Result<(), Invalid> {
        match keys.iter().find(|(_, span, _)| span.is_some()) {
            Some((key, span, why)) => Err((
                span.clone(),
                format!("{key} is not allowed in {section}: {why}"),
            )),
            None => Ok(()),
        }
    }

    /// `self`'s policy keys over `defaults`', key by key.
    fn or(self, defaults: &RawEntry) -> RawEntry {
        RawEntry {
            name: self.name,
            heartbeat: self.heartbeat,
            pidfile: self.pidfile,
            dir: self.dir,
            timeout: self.timeout.or_else(|| defaults.timeout.clone()),
            grace: self.grace.or_else(|| defaults.grace.clone()),
            reset_after: self.reset_after.or_else(|| defaults.reset_after.clone()),
            critical: self.critical.or(defaults.critical),
            repair: self.repair.or_else(|| defaults.repair.clone()),
            repair_timeout: self
                .repair_timeout
                .or_else(|| defaults.repair_timeout.clone()),
            repair_backoff: self
                .repair_backoff
                .or_else(|| defaults.repair_backoff.clone()),
            repair_backoff_max: self
                .repair_backoff_max
                .or_else(|| defaults.repair_backoff_max.clone()),
            max_repairs: self.max_repairs.or_else(|| defaults.max_repairs.clone()),
        }
    }

    /// The policy, with built-in defaults for what neither the entry nor `[defaults]` set.
    /// `timeout` is the heartbeat timeout (a heart's comes from its file); `judged` is the
    /// time a repaired component has to beat again, which `reset_after` must leave after
    /// `repair_timeout` (zero for hearts: their timeouts are only known at run time).
    fn validate(
        &self,
        timeout: Duration,
        judged: Duration,
    ) -> Result<(Policy, Option<Repair>), Invalid> {
        let millis = Duration::from_millis(100);
        min_duration(&self.grace, "grace", Duration::ZERO)?;
        min_duration(&self.repair_timeout, "repair_timeout", millis)?;
        min_duration(&self.repair_backoff, "repair_backoff", millis)?;
        let get = |v: &Option<Spanned<Dur>>| v.as_ref().map(|v| v.get_ref().0);
        let grace = get(&self.grace).unwrap_or_else(|| timeout.max(Duration::from_secs(60)));
        let reset_after = get(&self.reset_after).unwrap_or(Duration::from_secs(300));
        let backoff_initial = get(&self.repair_backoff).unwrap_or(Duration::from_secs(5));
        let backoff_max = get(&self.repair_backoff_max).unwrap_or(Duration::from_secs(300));
        if let Some(max) = &self.repair_backoff_max
            && max.get_ref().0 < backoff_initial
        {
            return Err(at(
                max,
                format!(
                    "repair_backoff_max must not be below repair_backoff ({backoff_initial:?})"
                ),
            ));
        }
        let max_attempts = match &self.max_repairs {
            Some(m) => int_in(m, "max_repairs", 1..=i64::from(MAX_REPAIR_ATTEMPTS))? as u32,
            None => 5,
        };
        let repair = match &self.repair {
            Some(argv) => {
                let Words(items) = argv.get_ref();
                if items.is_empty() || items.len() > MAX_REPAIR_ARGS {
                    return Err(at(
                        argv,
                        format!(
                            "repair must be a list of 1 to {MAX_REPAIR_ARGS} strings: the program and its arguments"
                        ),
                    ));
                }
                let mut words = Vec::with_capacity(items.len());
                for item in items {
                    match item.get_ref() {
                        Found::Str(word) if word.contains('\0') => {
                            return Err(at(
                                item,
                                "a repair argument cannot contain a NUL byte".into(),
                            ));
                        }
                        Found::Str(word) => words.push(word.as_str()),
                        other => {
                            return Err(at(
                                item,
                                format!(
                                    "each repair word must be a string in quotes (\"...\"), not {other}"
                                ),
                            ));
                        }
                    }
                }
                if !words.first().is_some_and(|w| w.starts_with('/')) {
                    return Err(at(
                        argv,
                        format!(
                            "the repair program {} must be an absolute path (no PATH search, no shell; write [\"/bin/sh\", \"-c\", \"...\"] for one)",
                            toml_string(words.first().copied().unwrap_or_default())
                        ),
                    ));
                }
                let words: Vec<OsString> = words.iter().map(OsString::from).collect();
                let policy = RepairPolicy {
                    timeout: get(&self.repair_timeout).unwrap_or(Duration::from_secs(30)),
                    backoff_initial,
                    backoff_max,
                    max_attempts,
                };
                let needed = policy.timeout.saturating_add(judged);
                if reset_after < needed {
                    let place = self
                        .reset_after
                        .as_ref()
                        .or(self.repair_timeout.as_ref())
                        .map_or_else(|| argv.span(), Spanned::span);
                    let parts = if judged.is_zero() {
                        format!("repair_timeout ({:?})", policy.timeout)
                    } else {
                        format!(
                            "repair_timeout ({:?}) + timeout ({judged:?}) = {needed:?}",
                            policy.timeout
                        )
                    };
                    return Err((
                        Some(place),
                        format!(
                            "reset_after ({reset_after:?}) must be at least {parts}: a repair must be able to run to its timeout and the component to beat again before a reset is forced"
                        ),
                    ));
                }
                Some(Repair {
                    argv: words,
                    policy,
                })
            }
            None => None,
        };
        let policy = Policy {
            timeout,
            grace,
            reset_after,
            critical: self.critical.is_none_or(|f| f.0),
            repair: repair.as_ref().map(|r| r.policy),
        };
        Ok((policy, repair))
    }
}

/// A configured path with its place, for the rules between paths.
struct Placed<'a> {
    path: &'a Path,
    span: core::ops::Range<usize>,
    key: &'static str,
    /// The component it belongs to, if any.
    owner: Option<&'a str>,
}

/// " of component NAME", or nothing for a path no component owns.
fn whose(place: &Placed<'_>) -> String {
    place.owner.map_or_else(String::new, |name| {
        format!(" of component {}", toml_string(name))
    })
}

impl Placed<'_> {
    fn refuse(&self, message: String) -> Invalid {
        let whose = whose(self);
        (
            Some(self.span.clone()),
            format!(
                "{} {}{whose} {message}",
                self.key,
                toml_string(&self.path.to_string_lossy())
            ),
        )
    }
}

/// The rules between configured paths (all compared lexically normalised): see the README,
/// "Rules `check` enforces".
fn check_paths(
    agent: &AgentConfig,
    agent_places: &AgentPlaces,
    hearts: Option<&Placed<'_>>,
    files: &[Placed<'_>],
) -> Result<(), Invalid> {
    let run = &agent.run_dir;
    let state = &agent.state_dir;
    if within(run, state) || within(state, run) {
        let (span, which) = match (&agent_places.run_dir, &agent_places.state_dir) {
            (Some(span), _) => (span.clone(), "run_dir"),
            (None, Some(span)) => (span.clone(), "state_dir"),
            (None, None) => (0..0, "run_dir"),
        };
        return Err((
            Some(span),
            format!(
                "{which}: run_dir {} and state_dir {} must be separate directories, neither inside the other: the run directory is volatile and rewritten by the agent, the state directory persistent",
                toml_string(&run.to_string_lossy()),
                toml_string(&state.to_string_lossy())
            ),
        ));
    }
    let own = "the agent writes its own files there (problem files, status), which would count as beats or be overwritten; keep heartbeats, pidfiles and the hearts directory outside run_dir and state_dir";
    if let Some(h) = hearts {
        let in_run =
            within(h.path, run) && normalised(h.path) != normalised(&run.join(HEARTS_IN_RUN_DIR));
        if in_run {
            return Err(h.refuse(format!(
                "is inside run_dir {} (only {}/{HEARTS_IN_RUN_DIR} is allowed there): {own}",
                toml_string(&run.to_string_lossy()),
                run.display()
            )));
        }
        if within(h.path, state) {
            return Err(h.refuse(format!(
                "is inside state_dir {}: {own}",
                toml_string(&state.to_string_lossy())
            )));
        }
    }
    for (i, f) in files.iter().enumerate() {
        for (dir, key) in [(run, "run_dir"), (state, "state_dir")] {
            if within(f.path, dir) {
                return Err(f.refuse(format!(
                    "is inside {key} {}: {own}",
                    toml_string(&dir.to_string_lossy())
                )));
            }
        }
        if let Some(h) = hearts
            && within(f.path, h.path)
        {
            return Err(f.refuse(format!(
                "is inside the hearts directory {}: every file there is read as a heart (its content a timeout)",
                toml_string(&h.path.to_string_lossy())
            )));
        }
        if f.key == "heartbeat"
            && let Some(other) = files
                .iter()
                .take(i)
                .find(|o| o.key == "heartbeat" && normalised(o.path) == normalised(f.path))
        {
            return Err(f.refuse(format!(
                "is also the heartbeat{}: each component needs its own heartbeat, or one could keep the other alive",
                whose(other)
            )));
        }
    }
    // Reported at the pidfile, whichever comes first in the file.
    for f in files.iter().filter(|f| f.key == "pidfile") {
        if let Some(beat) = files
            .iter()
            .find(|b| b.key == "heartbeat" && normalised(b.path) == normalised(f.path))
        {
            return Err(f.refuse(format!(
                "is also the heartbeat{}: a pidfile must be its own file (writing a pid would count as a beat)",
                whose(beat)
            )));
        }
    }
    Ok(())
}

/// Where `[agent]` set its directories (`None`: the default).
struct AgentPlaces {
    state_dir: Option<core::ops::Range<usize>>,
    run_dir: Option<core::ops::Range<usize>>,
}

impl RawConfig {
    fn validate(self, path: &Path, source: &str) -> Result<Config, Invalid> {
        let watchdog = self.watchdog.validate()?;
        let a = self.agent;
        let agent_places = AgentPlaces {
            state_dir: span(&a.state_dir),
            run_dir: span(&a.run_dir),
        };
        let agent = {
            min_duration(
                &a.check_interval,
                "check_interval",
                Duration::from_millis(10),
            )?;
            let check_interval = match &a.check_interval {
                Some(c) if c.get_ref().0 > Duration::from_secs(60) => {
                    return Err(at(c, "check_interval must be at most 60s".into()));
                }
                Some(c) => c.get_ref().0,
                None => Duration::from_secs(1),
            };
            let log = match &a.log {
                None => LogTarget::Stderr,
                Some(l) if l.get_ref().0 == "stderr" => LogTarget::Stderr,
                Some(l) if l.get_ref().0 == "kmsg" => LogTarget::Kmsg,
                Some(l) => {
                    return Err(at(
                        l,
                        format!(
                            "log must be \"stderr\" or \"kmsg\", not {}",
                            toml_string(&l.get_ref().0)
                        ),
                    ));
                }
            };
            let realtime_priority = match &a.realtime_priority {
                Some(p) => match int_in(p, "realtime_priority", 0..=99)? {
                    0 => None,
                    p => Some(p as u8),
                },
                None => Some(10),
            };
            AgentConfig {
                check_interval,
                state_dir: a
                    .state_dir
                    .map_or_else(|| DEFAULT_STATE_DIR.into(), |p| p.into_inner().0),
                run_dir: a
                    .run_dir
                    .map_or_else(|| DEFAULT_RUN_DIR.into(), |p| p.into_inner().0),
                log,
                realtime_priority,
            }
        };
        let led = self.led.validate()?;
        let guard = {
            let g = self.reboot_guard;
            let max_resets = match &g.max_resets {
                Some(m) => int_in(m, "reboot_guard.max_resets", 1..=HISTORY_LEN as i64)? as u32,
                None => 3,
            };
            min_duration(&g.window, "reboot_guard.window", Duration::from_secs(1))?;
            GuardConfig {
                max_resets,
                window: g
                    .window
                    .map_or(Duration::from_secs(3600), |w| w.get_ref().0),
            }
        };
        let defaults = self.defaults;
        let per_component = "it is set per [[component]]";
        defaults.refuse(
            "[defaults]",
            &[
                ("name", span(&defaults.name), per_component),
                ("heartbeat", span(&defaults.heartbeat), per_component),
                ("pidfile", span(&defaults.pidfile), per_component),
                ("dir", span(&defaults.dir), "it belongs in [hearts]"),
            ],
        )?;
        min_duration(&defaults.timeout, "timeout", Duration::from_millis(100))?;
        let mut hearts_span = None;
        let hearts = match self.hearts {
            Some(section) => {
                let section_span = section.span();
                let h = section.into_inner();
                let own = "a heart is named by its file, and its timeout is the file's content";
                h.refuse(
                    "[hearts]",
                    &[
                        ("name", span(&h.name), own),
                        ("heartbeat", span(&h.heartbeat), own),
                        ("pidfile", span(&h.pidfile), "hearts have no pidfile"),
                        ("timeout", span(&h.timeout), own),
                    ],
                )?;
                hearts_span = Some(span(&h.dir).unwrap_or(section_span));
                let dir = h.dir.clone().map_or_else(
                    || agent.run_dir.join(HEARTS_IN_RUN_DIR),
                    |d| d.into_inner().0,
                );
                // A heart's timeout comes from its file; grace defaults as for a 60 s one.
                let (p, repair) = h
                    .or(&defaults)
                    .validate(Duration::from_secs(60), Duration::ZERO)?;
                Some(HeartsConfig {
                    dir,
                    grace: p.grace,
                    reset_after: p.reset_after,
                    critical: p.critical,
                    repair,
                })
            }
            None => None,
        };
        if let Some(extra) = self.components.get(MAX_COMPONENTS) {
            return Err(at(
                extra,
                format!("too many components: at most {MAX_COMPONENTS} are supported"),
            ));
        }
        let mut components: Vec<ComponentConfig> = Vec::with_capacity(self.components.len());
        let mut file_spans = Vec::with_capacity(self.components.len());
        for entry in self.components {
            let missing = |key: &str| {
                at(
                    &entry,
                    format!("this [[component]] has no {key} (it is required)"),
                )
            };
            let raw = entry.get_ref();
            raw.refuse(
                "[[component]]",
                &[("dir", span(&raw.dir), "it belongs in [hearts]")],
            )?;
            let name_key = raw.name.as_ref().ok_or_else(|| missing("name"))?;
            let heartbeat_key = raw.heartbeat.as_ref().ok_or_else(|| missing("heartbeat"))?;
            let name = &name_key.get_ref().0;
            check_name(name.as_bytes()).map_err(|m| {
                at(
                    name_key,
                    format!("component name {}: {m}", toml_string(name)),
                )
            })?;
            if components.iter().any(|c| &c.name == name) {
                return Err(at(
                    name_key,
                    format!("duplicate component name {}", toml_string(name)),
                ));
            }
            min_duration(&raw.timeout, "timeout", Duration::from_millis(100))?;
            let name = name.clone();
            let heartbeat = heartbeat_key.get_ref().0.clone();
            file_spans.push((heartbeat_key.span(), span(&raw.pidfile)));
            let pidfile = raw.pidfile.clone().map(|p| p.into_inner().0);
            let policy = entry.into_inner().or(&defaults);
            let timeout = policy
                .timeout
                .as_ref()
                .map_or(Duration::from_secs(30), |t| t.get_ref().0);
            let (policy, repair) = policy.validate(timeout, timeout)?;
            components.push(ComponentConfig {
                name,
                heartbeat,
                pidfile,
                policy,
                repair,
            });
        }
        let mut files = Vec::with_capacity(components.len() * 2);
        for (c, (beat_span, pid_span)) in components.iter().zip(&file_spans) {
            files.push(Placed {
                path: &c.heartbeat,
                span: beat_span.clone(),
                key: "heartbeat",
                owner: Some(&c.name),
            });
            if let (Some(pidfile), Some(span)) = (&c.pidfile, pid_span) {
                files.push(Placed {
                    path: pidfile,
                    span: span.clone(),
                    key: "pidfile",
                    owner: Some(&c.name),
                });
            }
        }
        let hearts_place = hearts.as_ref().zip(hearts_span).map(|(h, span)| Placed {
            path: &h.dir,
            span,
            key: "the hearts dir",
            owner: None,
        });
        check_paths(&agent, &agent_places, hearts_place.as_ref(), &files)?;
        if components.is_empty() && hearts.is_none() {
            return Err((
                None,
                "nothing to supervise: add a [[component]] or a [hearts] section".into(),
            ));
        }
        Ok(Config {
            path: path.to_owned(),
            source: source.to_owned(),
            watchdog,
            agent,
            led,
            guard,
            hearts,
            components,
        })
    }
}

impl Config {
    /// Looks a component up by name.
    pub fn component(&self, name: &str) -> Option<&ComponentConfig> {
        self.components.iter().find(|c| c.name == name)
    }
}

fn secs(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("\"{}s\"", d.as_secs())
    } else {
        format!("\"{}ms\"", d.as_millis())
    }
}

fn argv(repair: &Repair) -> String {
    let words: Vec<String> = repair
        .argv
        .iter()
        .map(|a| toml_string(&a.to_string_lossy()))
        .collect();
    format!("[{}]", words.join(", "))
}

/// The effective settings, defaults filled in, as TOML (what `watchkeeper check` prints).
impl fmt::Display for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = &self.watchdog;
        writeln!(f, "# effective settings of {}", self.path.display())?;
        writeln!(f, "[watchdog]")?;
        match &w.device {
            Some(d) => writeln!(f, "device = {}", toml_string(&d.to_string_lossy()))?,
            None => writeln!(f, "device = \"none\"")?,
        }
        writeln!(
            f,
            "timeout = {}\nfeed_interval = {}\n",
            secs(w.timeout),
            secs(w.feed_interval)
        )?;
        let a = &self.agent;
        writeln!(f, "[agent]\ncheck_interval = {}", secs(a.check_interval))?;
        writeln!(
            f,
            "state_dir = {}\nrun_dir = {}",
            toml_string(&a.state_dir.to_string_lossy()),
            toml_string(&a.run_dir.to_string_lossy())
        )?;
        writeln!(
            f,
            "log = \"{}\"",
            if a.log == LogTarget::Kmsg {
                "kmsg"
            } else {
                "stderr"
            }
        )?;
        writeln!(
            f,
            "realtime_priority = {}\n",
            a.realtime_priority.unwrap_or(0)
        )?;
        writeln!(f, "[led]")?;
        match &self.led {
            LedSpec::None => writeln!(f, "kind = \"none\"")?,
            LedSpec::Gpio {
                chip,
                line,
                active_low,
            } => writeln!(
                f,
                "kind = \"gpio\"\nchip = {}\nline = {line}\nactive_low = {active_low}",
                toml_string(&chip.to_string_lossy())
            )?,
            LedSpec::Sysfs { name, active_low } => writeln!(
                f,
                "kind = \"sysfs\"\nname = {}\nactive_low = {active_low}",
                toml_string(name)
            )?,
        }
        writeln!(
            f,
            "\n[reboot_guard]\nmax_resets = {}\nwindow = {}",
            self.guard.max_resets,
            secs(self.guard.window)
        )?;
        if let Some(h) = &self.hearts {
            writeln!(
                f,
                "\n[hearts]\ndir = {}",
                toml_string(&h.dir.to_string_lossy())
            )?;
            writeln!(
                f,
                "grace = {}\nreset_after = {}\ncritical = {}",
                secs(h.grace),
                secs(h.reset_after),
                h.critical
            )?;
            write_repair(f, h.repair.as_ref())?;
        }
        for c in &self.components {
            writeln!(
                f,
                "\n[[component]] # LED code {}",
                self.components
                    .iter()
                    .position(|x| x.name == c.name)
                    .unwrap_or(0)
                    + 1
            )?;
            writeln!(
                f,
                "name = {}\nheartbeat = {}",
                toml_string(&c.name),
                toml_string(&c.heartbeat.to_string_lossy())
            )?;
            if let Some(p) = &c.pidfile {
                writeln!(f, "pidfile = {}", toml_string(&p.to_string_lossy()))?;
            }
            let p = &c.policy;
            writeln!(
                f,
                "timeout = {}\ngrace = {}\nreset_after = {}\ncritical = {}",
                secs(p.timeout),
                secs(p.grace),
                secs(p.reset_after),
                p.critical
            )?;
            write_repair(f, c.repair.as_ref())?;
        }
        Ok(())
    }
}

fn write_repair(f: &mut fmt::Formatter<'_>, repair: Option<&Repair>) -> fmt::Result {
    if let Some(r) = repair {
        writeln!(f, "repair = {}", argv(r))?;
        writeln!(
            f,
            "repair_timeout = {}\nrepair_backoff = {}\nrepair_backoff_max = {}\nmax_repairs = {}",
            secs(r.policy.timeout),
            secs(r.policy.backoff_initial),
            secs(r.policy.backoff_max),
            r.policy.max_attempts
        )?;
    }
    Ok(())
}

impl Salvage {
    /// A config that supervises nothing but keeps the watchdog fed: what runs when no
    /// config loads and no last good one exists.
    pub fn into_config(self, path: &Path) -> Config {
        Config {
            path: path.to_owned(),
            source: String::new(),
            watchdog: self.watchdog,
            agent: AgentConfig {
                check_interval: Duration::from_secs(1),
                state_dir: self.state_dir,
                run_dir: self.run_dir,
                log: self.log,
                realtime_priority: None,
            },
            led: self.led,
            guard: GuardConfig {
                max_resets: 3,
                window: Duration::from_secs(3600),
            },
            hearts: None,
            components: Vec::new(),
        }
    }
}
