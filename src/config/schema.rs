//! The TOML schema: the sections and keys a config file may have, as the parser reads them,
//! before any rule is applied.
//!
//! Every key is optional here and keeps its place in the file ([`Spanned`]), so that
//! validation can fill in defaults and point at the value it refuses. Unknown keys are
//! refused ([`Section::KEYS`]).
//!
//! The parsed document is walked by hand (no serde): keys in the parser's table order, the
//! first refusal stops the walk, and each refusal points at the key or value it names, so
//! the first error of a file is the one the serde-derived reader this replaces reported.
//!
//! Invariants:
//! - Values are read through one type, [`Found`], so messages speak TOML (a list, a table,
//!   a string), never the parser's Rust types; [`user_words`] rewords the parser's own.
//! - A [`Dur`] is at most [`MAX_DURATION_SECS`]; an [`AbsPath`] passes [`check_path`].

use core::fmt;
use core::ops::Range;
use core::time::Duration;
use std::path::PathBuf;

use toml::Spanned;
use toml::de::{DeInteger, DeTable, DeValue};

use crate::limits::{MAX_DURATION_SECS, MAX_PATH_LEN};

/// A parsed value and its place in the file.
type Value<'i> = Spanned<DeValue<'i>>;

/// The first thing refused while reading a file: its place (`None`: the end of the file)
/// and the message.
pub(super) struct ReadError {
    pub(super) span: Option<Range<usize>>,
    pub(super) message: String,
}

/// A refusal of `value`, at its place.
fn refuse(value: &Value<'_>, message: String) -> ReadError {
    ReadError {
        span: Some(value.span()),
        message,
    }
}

/// The parser's own messages, in the config writer's words: a key or table defined twice
/// is said in terms of the table headers. Its other messages are already in TOML's terms.
fn user_words(source: &str, span: Option<Range<usize>>, message: &str) -> String {
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
    message.to_owned()
}

/// Any TOML value, as found. The typed values below are read through it, so that a value
/// of the wrong kind is refused in the config writer's words ("a list", "the string \"3\"")
/// and never in the parser's (Rust type names).
#[derive(Debug, Clone)]
pub(super) enum Found {
    Int(i64),
    /// An integer beyond 64 bits, as written.
    Huge(String),
    /// As written in the file.
    Float(String),
    Str(String),
    Bool(bool),
    List(Vec<Spanned<Found>>),
    Table,
    DateTime,
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Int(v) => write!(f, "{v}"),
            Found::Huge(v) => write!(f, "{v} (too large)"),
            Found::Float(text) => write!(f, "{text} (a decimal number)"),
            Found::Str(s) => write!(f, "the string {}", toml_string(s)),
            Found::Bool(b) => write!(f, "{b}"),
            Found::List(_) => f.write_str("a list"),
            Found::Table => f.write_str("a table"),
            Found::DateTime => f.write_str("a date or time"),
        }
    }
}

/// A TOML integer: `Ok` within 64 bits, else its decimal digits (within 128 bits; beyond
/// that it is refused).
fn integer(value: &Value<'_>, integer: &DeInteger<'_>) -> Result<Result<i64, String>, ReadError> {
    let (digits, radix) = (integer.as_str(), integer.radix());
    if let Ok(v) = i64::from_str_radix(digits, radix) {
        return Ok(Ok(v));
    }
    u64::from_str_radix(digits, radix)
        .map(|v| v.to_string())
        .or_else(|_| i128::from_str_radix(digits, radix).map(|v| v.to_string()))
        .or_else(|_| u128::from_str_radix(digits, radix).map(|v| v.to_string()))
        .map(Err)
        .map_err(|_| refuse(value, "integer number overflowed".into()))
}

impl Found {
    /// `value` as found. The values of a table are not kept, but a number in it that does
    /// not fit is refused all the same, at its own place.
    fn read(value: &Value<'_>) -> Result<Found, ReadError> {
        Ok(match value.get_ref() {
            DeValue::String(s) => Found::Str(s.to_string()),
            DeValue::Integer(i) => integer(value, i)?.map_or_else(Found::Huge, Found::Int),
            // As written: no key takes a float, so it is only ever shown in a refusal.
            DeValue::Float(v) => Found::Float(v.as_str().to_owned()),
            DeValue::Boolean(b) => Found::Bool(*b),
            DeValue::Datetime(_) => Found::DateTime,
            DeValue::Array(items) => Found::List(
                items
                    .iter()
                    .map(|item| Ok(Spanned::new(item.span(), Found::read(item)?)))
                    .collect::<Result<_, ReadError>>()?,
            ),
            DeValue::Table(table) => {
                for item in table.values() {
                    Found::read(item)?;
                }
                Found::Table
            }
        })
    }
}

/// What was found where a table (or the list of components) was expected, in the words of
/// the other refusals ([`Found`]'s).
fn not_a_table(value: &Value<'_>) -> Result<String, ReadError> {
    Ok(Found::read(value)?.to_string())
}

/// A value read from its TOML form; a refusal names what was expected.
trait Read: Sized {
    fn read(value: &Value<'_>) -> Result<Self, ReadError>;
}

/// `value` read as `T`, with its place.
fn spanned<T: Read>(value: &Value<'_>) -> Result<Option<Spanned<T>>, ReadError> {
    Ok(Some(Spanned::new(value.span(), T::read(value)?)))
}

/// A whole number as written, or what was found instead: refused with the key's range by
/// `int_in` (in validation), where the key and range are known.
#[derive(Debug, Clone)]
pub(super) struct Int(pub(super) Result<i64, String>);

impl Read for Int {
    fn read(value: &Value<'_>) -> Result<Self, ReadError> {
        Ok(Int(match Found::read(value)? {
            Found::Int(v) => Ok(v),
            other => Err(other.to_string()),
        }))
    }
}

/// `true` or `false`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Flag(pub(super) bool);

impl Read for Flag {
    fn read(value: &Value<'_>) -> Result<Self, ReadError> {
        match Found::read(value)? {
            Found::Bool(b) => Ok(Flag(b)),
            other => Err(refuse(
                value,
                format!("expected true or false (without quotes), not {other}"),
            )),
        }
    }
}

/// A string in quotes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Text(pub(super) String);

impl Read for Text {
    fn read(value: &Value<'_>) -> Result<Self, ReadError> {
        match Found::read(value)? {
            Found::Str(s) => Ok(Text(s)),
            other => Err(refuse(
                value,
                format!("expected a string in quotes (\"...\"), not {other}"),
            )),
        }
    }
}

/// A list, each element with its place (checked where its meaning is known).
#[derive(Debug, Clone)]
pub(super) struct Words(pub(super) Vec<Spanned<Found>>);

impl Read for Words {
    fn read(value: &Value<'_>) -> Result<Self, ReadError> {
        match Found::read(value)? {
            Found::List(items) => Ok(Words(items)),
            other => Err(refuse(
                value,
                format!(
                    "expected a list of strings, [\"/abs/program\", \"argument\", ...], not {other}"
                ),
            )),
        }
    }
}

/// A duration as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Dur(pub(super) Duration);

const DURATION_FORM: &str =
    "a duration: whole seconds (10) or a number with a unit (\"500ms\", \"10s\", \"5m\", \"1h\")";

impl Read for Dur {
    fn read(value: &Value<'_>) -> Result<Self, ReadError> {
        let too_long = || {
            refuse(
                value,
                format!(
                    "a duration must be at most {} days",
                    MAX_DURATION_SECS / 86_400
                ),
            )
        };
        let duration = match Found::read(value)? {
            Found::Int(secs) => Duration::from_secs(
                u64::try_from(secs)
                    .map_err(|_| refuse(value, "a duration cannot be negative".into()))?,
            ),
            Found::Huge(_) => return Err(too_long()),
            Found::Str(text) => parse_duration(&text)
                .ok_or_else(|| refuse(value, format!("expected {DURATION_FORM}, not {text:?}")))?,
            other => {
                return Err(refuse(
                    value,
                    format!("expected {DURATION_FORM}, not {other}"),
                ));
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
pub(super) struct AbsPath(pub(super) PathBuf);

impl Read for AbsPath {
    fn read(value: &Value<'_>) -> Result<Self, ReadError> {
        let Text(text) = Text::read(value)?;
        check_path(&text).map_err(|message| refuse(value, message))?;
        Ok(AbsPath(PathBuf::from(text)))
    }
}

/// The rule for every configured path: absolute, at most [`MAX_PATH_LEN`] bytes, without
/// control characters.
pub(super) fn check_path(text: &str) -> Result<(), String> {
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
pub(super) fn toml_string(text: &str) -> String {
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

/// The whole file: each section defaults to empty when absent.
#[derive(Default)]
pub(super) struct RawConfig {
    pub(super) watchdog: RawWatchdog,
    pub(super) agent: RawAgent,
    pub(super) led: RawLed,
    pub(super) reboot_guard: RawGuard,
    pub(super) defaults: RawEntry,
    pub(super) hearts: Option<Spanned<RawEntry>>,
    pub(super) notify: RawNotify,
    pub(super) boot: Option<Spanned<RawBoot>>,
    pub(super) export: Option<Spanned<RawExport>>,
    /// `[[component]]`
    pub(super) components: Vec<Spanned<RawEntry>>,
}

#[derive(Default)]
pub(super) struct RawWatchdog {
    pub(super) device: Option<Spanned<Text>>,
    pub(super) timeout: Option<Spanned<Dur>>,
    pub(super) feed_interval: Option<Spanned<Dur>>,
    pub(super) shutdown_timeout: Option<Spanned<Dur>>,
}

#[derive(Default)]
pub(super) struct RawAgent {
    pub(super) check_interval: Option<Spanned<Dur>>,
    pub(super) state_dir: Option<Spanned<AbsPath>>,
    pub(super) run_dir: Option<Spanned<AbsPath>>,
    pub(super) log: Option<Spanned<Text>>,
    pub(super) realtime_priority: Option<Spanned<Int>>,
}

#[derive(Default)]
pub(super) struct RawLed {
    pub(super) kind: Option<Spanned<Text>>,
    pub(super) chip: Option<Spanned<AbsPath>>,
    pub(super) line: Option<Spanned<Int>>,
    pub(super) name: Option<Spanned<Text>>,
    pub(super) active_low: Option<Flag>,
}

#[derive(Default)]
pub(super) struct RawNotify {
    pub(super) socket: Option<Spanned<AbsPath>>,
}

/// `[boot]`: health-gated confirmation of trial boots (A/B updates).
#[derive(Default)]
pub(super) struct RawBoot {
    pub(super) confirm: Option<Spanned<Words>>,
    pub(super) confirm_after: Option<Spanned<Dur>>,
    pub(super) confirm_deadline: Option<Spanned<Dur>>,
    pub(super) confirm_timeout: Option<Spanned<Dur>>,
    pub(super) confirm_attempts: Option<Spanned<Int>>,
    pub(super) trial: Option<Spanned<Words>>,
    pub(super) trial_file: Option<Spanned<AbsPath>>,
    pub(super) trial_value: Option<Spanned<Text>>,
}

/// `[export]`: the metrics file for node_exporter's textfile collector.
#[derive(Default)]
pub(super) struct RawExport {
    pub(super) textfile: Option<Spanned<AbsPath>>,
}

#[derive(Default)]
pub(super) struct RawGuard {
    pub(super) max_resets: Option<Spanned<Int>>,
    pub(super) window: Option<Spanned<Dur>>,
}

/// The keys of `[defaults]`, `[hearts]` and `[[component]]`: one schema for the three,
/// and each section refuses, with its place in the file, the keys that are not its own
/// (see [`RawEntry::refuse`]). The policy keys (`timeout` to `max_repairs`) are shared.
#[derive(Default, Clone)]
pub(super) struct RawEntry {
    pub(super) name: Option<Spanned<Text>>,
    pub(super) heartbeat: Option<Spanned<AbsPath>>,
    pub(super) liveness: Option<Spanned<Text>>,
    pub(super) pidfile: Option<Spanned<AbsPath>>,
    pub(super) dir: Option<Spanned<AbsPath>>,
    pub(super) timeout: Option<Spanned<Dur>>,
    pub(super) grace: Option<Spanned<Dur>>,
    pub(super) reset_after: Option<Spanned<Dur>>,
    pub(super) critical: Option<Flag>,
    pub(super) repair: Option<Spanned<Words>>,
    pub(super) repair_timeout: Option<Spanned<Dur>>,
    pub(super) repair_backoff: Option<Spanned<Dur>>,
    pub(super) repair_backoff_max: Option<Spanned<Dur>>,
    pub(super) max_repairs: Option<Spanned<Int>>,
}

/// A table of the schema: its keys, and how each is read.
pub(super) trait Section: Default {
    /// Every key it knows (named in the refusal of an unknown one).
    const KEYS: &'static [&'static str];
    /// Reads `value` as `key`; `false` when `key` is not one of [`Self::KEYS`].
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError>;
}

/// `value` read as the table `S`, key by key in the parser's order; the first refusal is
/// kept.
pub(super) fn read_section<S: Section>(value: &Value<'_>) -> Result<S, ReadError> {
    let mut section = S::default();
    match value.get_ref() {
        DeValue::Table(table) => {
            for (key, item) in table.iter() {
                if !section.set(key.get_ref(), item)? {
                    return Err(ReadError {
                        span: Some(key.span()),
                        message: unknown_key(key.get_ref(), S::KEYS),
                    });
                }
            }
        }
        _ => {
            return Err(refuse(
                value,
                format!(
                    "expected a table ([section] or {{ key = value }}), not {}",
                    not_a_table(value)?
                ),
            ));
        }
    }
    Ok(section)
}

/// "unknown key `k`, expected one of `a`, `b`, `c`" (`a` alone, or `a` or `b`).
fn unknown_key(key: &str, keys: &[&str]) -> String {
    let quoted: Vec<String> = keys.iter().map(|k| format!("`{k}`")).collect();
    let expected = match quoted.as_slice() {
        [one] => one.clone(),
        [first, second] => format!("{first} or {second}"),
        all => format!("one of {}", all.join(", ")),
    };
    format!("unknown key `{key}`, expected {expected}")
}

/// The `[[component]]` tables, each with its place.
fn components(value: &Value<'_>) -> Result<Vec<Spanned<RawEntry>>, ReadError> {
    let DeValue::Array(items) = value.get_ref() else {
        return Err(refuse(
            value,
            format!(
                "components are written [[component]] (two brackets), one table per component; found {}",
                not_a_table(value)?
            ),
        ));
    };
    items
        .iter()
        .map(|item| Ok(Spanned::new(item.span(), read_section(item)?)))
        .collect()
}

impl RawConfig {
    /// Parses `source` and reads it; the first refusal, the parser's included.
    pub(super) fn read(source: &str) -> Result<RawConfig, ReadError> {
        let document = DeTable::parse(source).map_err(|e| ReadError {
            message: user_words(source, e.span(), e.message().trim()),
            span: e.span(),
        })?;
        let span = document.span();
        read_section(&Spanned::new(span, DeValue::Table(document.into_inner())))
    }
}

impl Section for RawConfig {
    const KEYS: &'static [&'static str] = &[
        "watchdog",
        "agent",
        "led",
        "reboot_guard",
        "defaults",
        "hearts",
        "notify",
        "boot",
        "export",
        "component",
    ];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "watchdog" => self.watchdog = read_section(value)?,
            "agent" => self.agent = read_section(value)?,
            "led" => self.led = read_section(value)?,
            "reboot_guard" => self.reboot_guard = read_section(value)?,
            "defaults" => self.defaults = read_section(value)?,
            "hearts" => self.hearts = Some(Spanned::new(value.span(), read_section(value)?)),
            "notify" => self.notify = read_section(value)?,
            "boot" => self.boot = Some(Spanned::new(value.span(), read_section(value)?)),
            "export" => self.export = Some(Spanned::new(value.span(), read_section(value)?)),
            "component" => self.components = components(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawWatchdog {
    const KEYS: &'static [&'static str] =
        &["device", "timeout", "feed_interval", "shutdown_timeout"];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "device" => self.device = spanned(value)?,
            "timeout" => self.timeout = spanned(value)?,
            "feed_interval" => self.feed_interval = spanned(value)?,
            "shutdown_timeout" => self.shutdown_timeout = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawAgent {
    const KEYS: &'static [&'static str] = &[
        "check_interval",
        "state_dir",
        "run_dir",
        "log",
        "realtime_priority",
    ];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "check_interval" => self.check_interval = spanned(value)?,
            "state_dir" => self.state_dir = spanned(value)?,
            "run_dir" => self.run_dir = spanned(value)?,
            "log" => self.log = spanned(value)?,
            "realtime_priority" => self.realtime_priority = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawLed {
    const KEYS: &'static [&'static str] = &["kind", "chip", "line", "name", "active_low"];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "kind" => self.kind = spanned(value)?,
            "chip" => self.chip = spanned(value)?,
            "line" => self.line = spanned(value)?,
            "name" => self.name = spanned(value)?,
            "active_low" => self.active_low = Some(Flag::read(value)?),
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawNotify {
    const KEYS: &'static [&'static str] = &["socket"];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "socket" => self.socket = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawBoot {
    const KEYS: &'static [&'static str] = &[
        "confirm",
        "confirm_after",
        "confirm_deadline",
        "confirm_timeout",
        "confirm_attempts",
        "trial",
        "trial_file",
        "trial_value",
    ];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "confirm" => self.confirm = spanned(value)?,
            "confirm_after" => self.confirm_after = spanned(value)?,
            "confirm_deadline" => self.confirm_deadline = spanned(value)?,
            "confirm_timeout" => self.confirm_timeout = spanned(value)?,
            "confirm_attempts" => self.confirm_attempts = spanned(value)?,
            "trial" => self.trial = spanned(value)?,
            "trial_file" => self.trial_file = spanned(value)?,
            "trial_value" => self.trial_value = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawExport {
    const KEYS: &'static [&'static str] = &["textfile"];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "textfile" => self.textfile = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawGuard {
    const KEYS: &'static [&'static str] = &["max_resets", "window"];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "max_resets" => self.max_resets = spanned(value)?,
            "window" => self.window = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

impl Section for RawEntry {
    const KEYS: &'static [&'static str] = &[
        "name",
        "heartbeat",
        "liveness",
        "pidfile",
        "dir",
        "timeout",
        "grace",
        "reset_after",
        "critical",
        "repair",
        "repair_timeout",
        "repair_backoff",
        "repair_backoff_max",
        "max_repairs",
    ];
    fn set(&mut self, key: &str, value: &Value<'_>) -> Result<bool, ReadError> {
        match key {
            "name" => self.name = spanned(value)?,
            "heartbeat" => self.heartbeat = spanned(value)?,
            "liveness" => self.liveness = spanned(value)?,
            "pidfile" => self.pidfile = spanned(value)?,
            "dir" => self.dir = spanned(value)?,
            "timeout" => self.timeout = spanned(value)?,
            "grace" => self.grace = spanned(value)?,
            "reset_after" => self.reset_after = spanned(value)?,
            "critical" => self.critical = Some(Flag::read(value)?),
            "repair" => self.repair = spanned(value)?,
            "repair_timeout" => self.repair_timeout = spanned(value)?,
            "repair_backoff" => self.repair_backoff = spanned(value)?,
            "repair_backoff_max" => self.repair_backoff_max = spanned(value)?,
            "max_repairs" => self.max_repairs = spanned(value)?,
            _ => return Ok(false),
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every key a section lists is one its `set` reads (refusing the value is reading it).
    fn knows_its_keys<S: Section>() {
        let value = Spanned::new(0..4, DeValue::Boolean(true));
        for key in S::KEYS {
            let known = S::default().set(key, &value).unwrap_or(true);
            assert!(
                known,
                "{}: `{key}` is listed but not read",
                std::any::type_name::<S>()
            );
        }
        assert!(!S::default().set("unlisted", &value).unwrap_or(true));
    }

    #[test]
    fn each_section_reads_every_key_it_lists() {
        knows_its_keys::<RawConfig>();
        knows_its_keys::<RawWatchdog>();
        knows_its_keys::<RawAgent>();
        knows_its_keys::<RawLed>();
        knows_its_keys::<RawGuard>();
        knows_its_keys::<RawNotify>();
        knows_its_keys::<RawBoot>();
        knows_its_keys::<RawExport>();
        knows_its_keys::<RawEntry>();
    }
}
