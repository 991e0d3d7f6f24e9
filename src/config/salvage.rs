//! The salvage path: what can still be used from a config that does not load, so that the
//! agent keeps the board up and shows the fault instead of stopping.
//!
//! Invariants:
//! - [`salvage`] never fails: each section is taken only if it validates on its own, by the
//!   same validators as a full config; anything else is the default (see `defaults`).
//! - The watchdog device, the directories, the log target and the metrics file are found
//!   even in text that is not TOML, so a syntax error never makes the agent feed (or arm) a
//!   watchdog other than the configured one, nor lose the state directory and its last good
//!   config, nor the fleet its view of the board.

use std::path::{Path, PathBuf};

use toml::de::{DeTable, DeValue};

use super::schema::{RawLed, RawWatchdog, check_path, read_section};
use super::validate::textfile_fault;
use super::{AgentConfig, Config, ExportConfig, LogTarget, NotifyConfig, WatchdogConfig, defaults};
use crate::os::led::LedSpec;

/// What can still be used from a config that did not validate, so that the board is kept
/// up and the fault is shown: each section that validates on its own, defaults for others.
#[derive(Debug, Clone)]
pub struct Salvage {
    pub watchdog: WatchdogConfig,
    pub log: LogTarget,
    pub led: LedSpec,
    pub state_dir: PathBuf,
    pub run_dir: PathBuf,
    /// `[export] textfile`, when it is a valid one: the fleet keeps its view of a board
    /// whose config broke.
    pub export: Option<ExportConfig>,
}

/// What `source` (`None`: the file could not be read) still gives, section by section;
/// never fails. The directories, the log target and the watchdog device are read line by
/// line when the text is not TOML.
pub fn salvage(source: Option<&str>) -> Salvage {
    let source = source.unwrap_or_default();
    let document = DeTable::parse(source).ok().map(|d| d.into_inner());
    let table = document.as_ref();
    // Each section is read on its own, ignoring the rest of the file.
    let section = |name: &str| table?.get(name);
    let key = |name: &str| key_in(table, source, "agent", name);
    let watchdog = section("watchdog")
        .and_then(|w| read_section::<RawWatchdog>(w).ok())
        .and_then(|w| w.validate().ok())
        .unwrap_or_else(|| {
            // Keep at least the device: never feed (or arm) another one than configured.
            let mut watchdog = defaults::watchdog();
            match key_in(table, source, "watchdog", "device").as_deref() {
                Some(defaults::DEVICE_NONE) => watchdog.device = None,
                Some(path) if check_path(path).is_ok() => {
                    watchdog.device = Some(PathBuf::from(path));
                }
                _ => {}
            }
            watchdog
        });
    let led = section("led")
        .and_then(|l| read_section::<RawLed>(l).ok())
        .and_then(|l| l.validate().ok())
        .unwrap_or(defaults::LED);
    let dir = |name: &str, default: &str| {
        key(name)
            .filter(|p| check_path(p).is_ok())
            .map_or_else(|| PathBuf::from(default), PathBuf::from)
    };
    let state_dir = dir("state_dir", defaults::STATE_DIR);
    let run_dir = dir("run_dir", defaults::RUN_DIR);
    let export = key_in(table, source, "export", "textfile")
        .map(PathBuf::from)
        .filter(|p| {
            check_path(&p.to_string_lossy()).is_ok()
                && textfile_fault(p).is_none()
                && !p.starts_with(&state_dir)
                && !p.starts_with(&run_dir)
        })
        .map(|textfile| ExportConfig { textfile });
    Salvage {
        watchdog,
        log: key("log")
            .as_deref()
            .and_then(LogTarget::from_name)
            .unwrap_or(defaults::LOG),
        led,
        state_dir,
        run_dir,
        export,
    }
}

/// The string value of `[section] key`: from the parsed document when the file is TOML,
/// else line by line (`key = "..."` under `[section]`, or `section.key = "..."` before any
/// table), so that a syntax error elsewhere does not hide it. The first setting wins.
fn key_in(
    table: Option<&DeTable<'_>>,
    source: &str,
    section_name: &str,
    key: &str,
) -> Option<String> {
    if let Some(table) = table {
        let section = table.get(section_name)?.get_ref();
        return match section.as_table()?.get(key)?.get_ref() {
            DeValue::String(text) => Some(text.to_string()),
            _ => None,
        };
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

impl Salvage {
    /// A config that supervises nothing but keeps the watchdog fed: what runs when no
    /// config loads and no last good one exists.
    pub(crate) fn into_config(self, path: &Path) -> Config {
        let notify = NotifyConfig {
            socket: self.run_dir.join(defaults::NOTIFY_IN_RUN_DIR),
        };
        Config {
            path: path.to_owned(),
            source: String::new(),
            watchdog: self.watchdog,
            agent: AgentConfig {
                check_interval: defaults::CHECK_INTERVAL,
                state_dir: self.state_dir,
                run_dir: self.run_dir,
                log: self.log,
                realtime_priority: None,
            },
            led: self.led,
            guard: defaults::GUARD,
            hearts: None,
            notify,
            boot: None,
            export: self.export,
            components: Vec::new(),
        }
    }
}
