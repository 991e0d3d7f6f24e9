//! The TOML schema: the sections and keys a config file may have, as the parser reads them,
//! before any rule is applied.
//!
//! Every key is optional here and keeps its place in the file ([`Spanned`]), so that
//! validation can fill in defaults and point at the value it refuses. Unknown keys are
//! refused by the parser (`deny_unknown_fields`).
//!
//! Invariants:
//! - Values are read through one type, [`Found`], so messages speak TOML (a list, a table,
//!   a string), never the parser's Rust types; [`user_words`] rewords the parser's own.
//! - A [`Dur`] is at most [`MAX_DURATION_SECS`]; an [`AbsPath`] passes [`check_path`].

use core::fmt;
use core::time::Duration;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::limits::{MAX_DURATION_SECS, MAX_PATH_LEN};

/// The parser's own messages, in the config writer's words: what is allowed there, and no
/// Rust type names. Messages this does not know are already in TOML's terms.
pub(super) fn user_words(
    source: &str,
    span: Option<core::ops::Range<usize>>,
    message: &str,
) -> String {
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

/// Any TOML value, as found. The typed values below are read through it, so that a value
/// of the wrong kind is refused in the config writer's words ("a list", "the string \"3\"")
/// and never in the parser's (Rust type names).
#[derive(Debug, Clone)]
pub(super) enum Found {
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
/// `int_in` (in validation), where the key and range are known.
#[derive(Debug, Clone)]
pub(super) struct Int(pub(super) Result<i64, String>);

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
pub(super) struct Flag(pub(super) bool);

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
pub(super) struct Text(pub(super) String);

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
pub(super) struct Words(pub(super) Vec<Spanned<Found>>);

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
pub(super) struct Dur(pub(super) Duration);

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
pub(super) struct AbsPath(pub(super) PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(deserializer)?;
        check_path(&text).map_err(de::Error::custom)?;
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
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) watchdog: RawWatchdog,
    #[serde(default)]
    pub(super) agent: RawAgent,
    #[serde(default)]
    pub(super) led: RawLed,
    #[serde(default)]
    pub(super) reboot_guard: RawGuard,
    #[serde(default)]
    pub(super) defaults: RawEntry,
    pub(super) hearts: Option<Spanned<RawEntry>>,
    #[serde(default, rename = "component")]
    pub(super) components: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWatchdog {
    pub(super) device: Option<Spanned<Text>>,
    pub(super) timeout: Option<Spanned<Dur>>,
    pub(super) feed_interval: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAgent {
    pub(super) check_interval: Option<Spanned<Dur>>,
    pub(super) state_dir: Option<Spanned<AbsPath>>,
    pub(super) run_dir: Option<Spanned<AbsPath>>,
    pub(super) log: Option<Spanned<Text>>,
    pub(super) realtime_priority: Option<Spanned<Int>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLed {
    pub(super) kind: Option<Spanned<Text>>,
    pub(super) chip: Option<Spanned<AbsPath>>,
    pub(super) line: Option<Spanned<Int>>,
    pub(super) name: Option<Spanned<Text>>,
    pub(super) active_low: Option<Flag>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawGuard {
    pub(super) max_resets: Option<Spanned<Int>>,
    pub(super) window: Option<Spanned<Dur>>,
}

/// The keys of `[defaults]`, `[hearts]` and `[[component]]`: one schema for the three,
/// and each section refuses, with its place in the file, the keys that are not its own
/// (see [`RawEntry::refuse`]). The policy keys (`timeout` to `max_repairs`) are shared.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEntry {
    pub(super) name: Option<Spanned<Text>>,
    pub(super) heartbeat: Option<Spanned<AbsPath>>,
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
