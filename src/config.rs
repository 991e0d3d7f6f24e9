//! The configuration file: parsed and validated once, at startup.
//!
//! One TOML file names the watchdog device, the LED, the directories, the reboot-loop
//! guard and the supervised components. Parsing is strict: unknown keys, wrong types,
//! out-of-range or contradictory values are errors that name the file, line and column and
//! say what is allowed. Everything downstream trusts a [`Config`]: it is only built here.
//!
//! Durations are whole seconds (`10`) or a number with a unit (`"500ms"`, `"10s"`, `"5m"`,
//! `"1h"`). Paths are absolute and at most [`MAX_PATH_LEN`] bytes.

use core::fmt;
use core::time::Duration;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use toml::Spanned;

use crate::led::LedSpec;
use crate::limits::{
    HISTORY_LEN, MAX_COMPONENTS, MAX_DURATION_SECS, MAX_NAME_LEN, MAX_PATH_LEN, MAX_REPAIR_ARGS,
    MAX_REPAIR_ATTEMPTS,
};
use crate::supervisor::{Policy, RepairPolicy};

/// Where the agent reads its config unless told otherwise.
pub const DEFAULT_PATH: &str = "/etc/watchkeeper.toml";
const DEFAULT_DEVICE: &str = "/dev/watchdog";
const DEFAULT_STATE_DIR: &str = "/var/lib/watchkeeper";
const DEFAULT_RUN_DIR: &str = "/run/watchkeeper";

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
    let source = std::fs::read_to_string(path).map_err(|e| ConfigError {
        path: path.to_owned(),
        at: None,
        message: format!("cannot read the config file: {e}"),
    })?;
    parse(path, &source)
}

/// Validates config text; `path` is only used in messages and kept in the result.
pub fn parse(path: &Path, source: &str) -> Result<Config, ConfigError> {
    let error = |span: Option<core::ops::Range<usize>>, message: String| ConfigError {
        path: path.to_owned(),
        at: span.map(|s| line_column(source, s.start)),
        message,
    };
    let raw: RawConfig =
        toml::from_str(source).map_err(|e| error(e.span(), e.message().trim().to_owned()))?;
    raw.validate(path, source)
        .map_err(|(span, message)| error(span, message))
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

/// Best effort: never fails, falls back to defaults section by section.
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
    #[derive(Deserialize)]
    struct Agent {
        agent: RawAgent,
    }
    let source = source.unwrap_or_default();
    let watchdog = toml::from_str::<Watchdog>(source)
        .ok()
        .and_then(|w| w.watchdog.validate().ok());
    let watchdog = watchdog.unwrap_or_else(|| {
        RawWatchdog::default()
            .validate()
            .expect("defaults are valid")
    });
    let led = toml::from_str::<Led>(source)
        .ok()
        .and_then(|l| l.led.validate().ok())
        .unwrap_or(LedSpec::None);
    let agent = toml::from_str::<Agent>(source)
        .map(|a| a.agent)
        .unwrap_or_default();
    let log = match agent.log.as_ref().map(|l| l.get_ref().as_str()) {
        Some("kmsg") => LogTarget::Kmsg,
        _ => LogTarget::Stderr,
    };
    Salvage {
        watchdog,
        log,
        led,
        state_dir: agent
            .state_dir
            .map_or_else(|| DEFAULT_STATE_DIR.into(), |p| p.into_inner().0),
        run_dir: agent
            .run_dir
            .map_or_else(|| DEFAULT_RUN_DIR.into(), |p| p.into_inner().0),
    }
}

fn line_column(source: &str, offset: usize) -> (usize, usize) {
    let before = &source[..offset.min(source.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
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

/// A duration as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dur(Duration);

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurVisitor;
        const EXPECTED: &str = "a duration: whole seconds (10) or a number with a unit (\"500ms\", \"10s\", \"5m\", \"1h\")";
        impl Visitor<'_> for DurVisitor {
            type Value = Dur;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_i64<E: de::Error>(self, secs: i64) -> Result<Dur, E> {
                let secs =
                    u64::try_from(secs).map_err(|_| E::custom("a duration cannot be negative"))?;
                checked(Duration::from_secs(secs))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Dur, E> {
                let digits = text
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(text.len());
                let (number, unit) = text.split_at(digits);
                let number: u64 = number
                    .parse()
                    .map_err(|_| E::custom(format!("expected {EXPECTED}, got {text:?}")))?;
                let duration = match unit {
                    "ms" => Duration::from_millis(number),
                    "s" => Duration::from_secs(number),
                    "m" => Duration::from_secs(number.saturating_mul(60)),
                    "h" => Duration::from_secs(number.saturating_mul(3600)),
                    _ => return Err(E::custom(format!("expected {EXPECTED}, got {text:?}"))),
                };
                checked(duration)
            }
        }
        fn checked<E: de::Error>(d: Duration) -> Result<Dur, E> {
            if d > Duration::from_secs(MAX_DURATION_SECS) {
                return Err(E::custom(format!(
                    "a duration must be at most {} days",
                    MAX_DURATION_SECS / 86_400
                )));
            }
            Ok(Dur(d))
        }
        deserializer.deserialize_any(DurVisitor)
    }
}

/// An absolute path of bounded length, without NUL bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
struct AbsPath(PathBuf);

impl<'de> Deserialize<'de> for AbsPath {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        check_path(&text).map_err(de::Error::custom)?;
        Ok(AbsPath(PathBuf::from(text)))
    }
}

fn check_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{text:?} is not an absolute path (it must start with /)"
        ));
    }
    if text.len() > MAX_PATH_LEN {
        return Err(format!(
            "path is {} bytes long; at most {MAX_PATH_LEN} are allowed",
            text.len()
        ));
    }
    if text.contains('\0') {
        return Err("a path cannot contain a NUL byte".into());
    }
    Ok(())
}

/// Component and heart names: `[A-Za-z0-9._-]`, 1 to MAX_NAME_LEN bytes, not `.` or `..`.
pub fn check_name(name: &[u8]) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err("a name must be 1 to 32 bytes long");
    }
    if name == b"." || name == b".." {
        return Err("a name cannot be . or ..");
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(b))
    {
        return Err("a name may only contain letters, digits, '.', '_' and '-'");
    }
    Ok(())
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
    hearts: Option<RawEntry>,
    #[serde(default, rename = "component")]
    components: Vec<Spanned<RawEntry>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawWatchdog {
    device: Option<Spanned<String>>,
    timeout: Option<Spanned<Dur>>,
    feed_interval: Option<Spanned<Dur>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAgent {
    check_interval: Option<Spanned<Dur>>,
    state_dir: Option<Spanned<AbsPath>>,
    run_dir: Option<Spanned<AbsPath>>,
    log: Option<Spanned<String>>,
    realtime_priority: Option<Spanned<i64>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawLed {
    kind: Option<Spanned<String>>,
    chip: Option<AbsPath>,
    line: Option<Spanned<i64>>,
    name: Option<Spanned<String>>,
    active_low: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawGuard {
    max_resets: Option<Spanned<i64>>,
    window: Option<Spanned<Dur>>,
}

/// The keys of `[defaults]`, `[hearts]` and `[[component]]`: one schema for the three,
/// and each section refuses, with its place in the file, the keys that are not its own
/// (see [`RawEntry::refuse`]). The policy keys (`timeout` to `max_repairs`) are shared.
#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    name: Option<Spanned<String>>,
    heartbeat: Option<Spanned<AbsPath>>,
    pidfile: Option<Spanned<AbsPath>>,
    dir: Option<Spanned<AbsPath>>,
    timeout: Option<Spanned<Dur>>,
    grace: Option<Spanned<Dur>>,
    reset_after: Option<Spanned<Dur>>,
    critical: Option<bool>,
    repair: Option<Spanned<Vec<String>>>,
    repair_timeout: Option<Spanned<Dur>>,
    repair_backoff: Option<Spanned<Dur>>,
    repair_backoff_max: Option<Spanned<Dur>>,
    max_repairs: Option<Spanned<i64>>,
}

fn min_duration(value: &Option<Spanned<Dur>>, key: &str, min: Duration) -> Result<(), Invalid> {
    match value {
        Some(v) if v.get_ref().0 < min => Err(at(v, format!("{key} must be at least {min:?}"))),
        _ => Ok(()),
    }
}

fn int_in(
    value: &Spanned<i64>,
    key: &str,
    range: core::ops::RangeInclusive<i64>,
) -> Result<i64, Invalid> {
    let v = *value.get_ref();
    if range.contains(&v) {
        Ok(v)
    } else {
        Err(at(
            value,
            format!(
                "{key} must be from {} to {}, not {v}",
                range.start(),
                range.end()
            ),
        ))
    }
}

impl RawWatchdog {
    fn validate(self) -> Result<WatchdogConfig, Invalid> {
        let device = match &self.device {
            Some(d) if d.get_ref() == "none" => None,
            Some(d) => {
                check_path(d.get_ref()).map_err(|m| at(d, m))?;
                Some(PathBuf::from(d.get_ref()))
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
            None => Duration::from_secs(15),
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
        let kind = self.kind.as_ref().map_or("none", |k| k.get_ref().as_str());
        let active_low = self.active_low.unwrap_or(false);
        let unexpected = |key: &str, for_kind: &str| {
            format!("led.{key} is only used with kind = \"{for_kind}\"")
        };
        match kind {
            "none" => Ok(LedSpec::None),
            "gpio" => {
                if let Some(name) = &self.name {
                    return Err(at(name, unexpected("name", "sysfs")));
                }
                let line = self.line.as_ref().ok_or((
                    None,
                    "led kind \"gpio\" needs line (the line offset on the chip)".to_owned(),
                ))?;
                let line = int_in(line, "led.line", 0..=1023)?;
                let chip = self
                    .chip
                    .map_or_else(|| PathBuf::from("/dev/gpiochip0"), |c| c.0);
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
                let name = self.name.as_ref().ok_or((
                    None,
                    "led kind \"sysfs\" needs name (the LED under /sys/class/leds)".to_owned(),
                ))?;
                let text = name.get_ref();
                if text.is_empty()
                    || text.contains('/')
                    || text == "."
                    || text == ".."
                    || text.len() > MAX_NAME_LEN * 2
                {
                    return Err(at(
                        name,
                        format!("{text:?} is not an LED name under /sys/class/leds"),
                    ));
                }
                Ok(LedSpec::Sysfs {
                    name: text.clone(),
                    active_low,
                })
            }
            other => Err(at(
                self.kind.as_ref().expect("kind was given"),
                format!("led kind must be \"gpio\", \"sysfs\" or \"none\", not {other:?}"),
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
    /// `timeout` is the heartbeat timeout (a heart's comes from its file).
    fn validate(&self, timeout: Duration) -> Result<(Policy, Option<Repair>), Invalid> {
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
                let words = argv.get_ref();
                if words.is_empty() || words.len() > MAX_REPAIR_ARGS {
                    return Err(at(
                        argv,
                        format!(
                            "repair must be a list of 1 to {MAX_REPAIR_ARGS} strings: the program and its arguments"
                        ),
                    ));
                }
                if !words[0].starts_with('/') {
                    return Err(at(
                        argv,
                        format!(
                            "the repair program {:?} must be an absolute path (no PATH search, no shell; write [\"/bin/sh\", \"-c\", \"...\"] for one)",
                            words[0]
                        ),
                    ));
                }
                if words.iter().any(|w| w.contains('\0')) {
                    return Err(at(
                        argv,
                        "a repair argument cannot contain a NUL byte".into(),
                    ));
                }
                let argv = words.iter().map(OsString::from).collect();
                let policy = RepairPolicy {
                    timeout: get(&self.repair_timeout).unwrap_or(Duration::from_secs(30)),
                    backoff_initial,
                    backoff_max,
                    max_attempts,
                };
                Some(Repair { argv, policy })
            }
            None => None,
        };
        let policy = Policy {
            timeout,
            grace,
            reset_after,
            critical: self.critical.unwrap_or(true),
            repair: repair.as_ref().map(|r| r.policy),
        };
        Ok((policy, repair))
    }
}

impl RawConfig {
    fn validate(self, path: &Path, source: &str) -> Result<Config, Invalid> {
        let watchdog = self.watchdog.validate()?;
        let agent = {
            let a = self.agent;
            min_duration(
                &a.check_interval,
                "check_interval",
                Duration::from_millis(10),
            )?;
            let check_interval = a
                .check_interval
                .as_ref()
                .map_or(Duration::from_secs(1), |c| c.get_ref().0);
            if check_interval > Duration::from_secs(60) {
                return Err(at(
                    a.check_interval.as_ref().expect("set"),
                    "check_interval must be at most 60s".into(),
                ));
            }
            let log = match &a.log {
                None => LogTarget::Stderr,
                Some(l) if l.get_ref() == "stderr" => LogTarget::Stderr,
                Some(l) if l.get_ref() == "kmsg" => LogTarget::Kmsg,
                Some(l) => {
                    return Err(at(
                        l,
                        format!("log must be \"stderr\" or \"kmsg\", not {:?}", l.get_ref()),
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
            let state_dir = a
                .state_dir
                .map_or_else(|| DEFAULT_STATE_DIR.into(), |p| p.into_inner().0);
            let run_dir = a
                .run_dir
                .as_ref()
                .map_or_else(|| DEFAULT_RUN_DIR.into(), |p| p.get_ref().0.clone());
            if state_dir == run_dir {
                return Err(at(a.run_dir.as_ref().expect("equal only if set"), "run_dir must differ from state_dir: the run directory is volatile, the state directory persistent".into()));
            }
            AgentConfig {
                check_interval,
                state_dir,
                run_dir,
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
        let hearts = match self.hearts {
            Some(h) => {
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
                let dir = h
                    .dir
                    .clone()
                    .map_or_else(|| agent.run_dir.join("hearts"), |d| d.into_inner().0);
                // A heart's timeout comes from its file; grace defaults as for a 60 s one.
                let (p, repair) = h.or(&defaults).validate(Duration::from_secs(60))?;
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
        if self.components.len() > MAX_COMPONENTS {
            let extra = &self.components[MAX_COMPONENTS];
            return Err(at(
                extra,
                format!("too many components: at most {MAX_COMPONENTS} are supported"),
            ));
        }
        let mut components: Vec<ComponentConfig> = Vec::with_capacity(self.components.len());
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
            let name = name_key.get_ref();
            check_name(name.as_bytes())
                .map_err(|m| at(name_key, format!("component name {name:?}: {m}")))?;
            if components.iter().any(|c| &c.name == name) {
                return Err(at(name_key, format!("duplicate component name {name:?}")));
            }
            let heartbeat = heartbeat_key.get_ref().0.clone();
            if let Some(other) = components.iter().find(|c| c.heartbeat == heartbeat) {
                return Err(at(
                    heartbeat_key,
                    format!(
                        "heartbeat {} is already the heartbeat of component {:?}",
                        heartbeat.display(),
                        other.name
                    ),
                ));
            }
            min_duration(&raw.timeout, "timeout", Duration::from_millis(100))?;
            let name = name.clone();
            let pidfile = raw.pidfile.clone().map(|p| p.into_inner().0);
            let policy = entry.into_inner().or(&defaults);
            let timeout = policy
                .timeout
                .as_ref()
                .map_or(Duration::from_secs(30), |t| t.get_ref().0);
            let (policy, repair) = policy.validate(timeout)?;
            components.push(ComponentConfig {
                name,
                heartbeat,
                pidfile,
                policy,
                repair,
            });
        }
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
        .map(|a| format!("{:?}", a.to_string_lossy()))
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
            Some(d) => writeln!(f, "device = {:?}", d.display().to_string())?,
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
            "state_dir = {:?}\nrun_dir = {:?}",
            a.state_dir.display().to_string(),
            a.run_dir.display().to_string()
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
                "kind = \"gpio\"\nchip = {:?}\nline = {line}\nactive_low = {active_low}",
                chip.display().to_string()
            )?,
            LedSpec::Sysfs { name, active_low } => writeln!(
                f,
                "kind = \"sysfs\"\nname = {name:?}\nactive_low = {active_low}"
            )?,
        }
        writeln!(
            f,
            "\n[reboot_guard]\nmax_resets = {}\nwindow = {}",
            self.guard.max_resets,
            secs(self.guard.window)
        )?;
        if let Some(h) = &self.hearts {
            writeln!(f, "\n[hearts]\ndir = {:?}", h.dir.display().to_string())?;
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
                "name = {:?}\nheartbeat = {:?}",
                c.name,
                c.heartbeat.display().to_string()
            )?;
            if let Some(p) = &c.pidfile {
                writeln!(f, "pidfile = {:?}", p.display().to_string())?;
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
