//! Validation: from the schema's raw sections to a [`Config`], one validator per section,
//! then the rules between sections.
//!
//! [`RawConfig::validate`] runs the section validators in a fixed order (`[watchdog]`,
//! `[agent]`, `[led]`, `[reboot_guard]`, `[defaults]`, `[hearts]`, each `[[component]]`) and
//! then the cross-section rules, and stops at the first fault.
//!
//! Invariants:
//! - Every fault about a value carries that value's place in the file ([`Invalid`]).
//! - A key that is not set takes its value from `defaults`; no default is written here.
//! - The rules between paths ("Rules `check` enforces" in the README) compare lexically
//!   normalised paths; symlinks are not resolved.

use core::ops::{Range, RangeInclusive};
use core::time::Duration;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use toml::Spanned;

use super::schema::{
    AbsPath, Dur, Found, Int, RawAgent, RawBoot, RawConfig, RawEntry, RawExport, RawGuard, RawLed,
    RawNotify, RawWatchdog, Text, Words, check_path, toml_string,
};
use super::{
    AgentConfig, BootConfig, ComponentConfig, Config, ExportConfig, GuardConfig, HeartsConfig,
    Liveness, LogTarget, NotifyConfig, Repair, TrialCheck, WatchdogConfig, defaults,
};
use crate::core::boot::BootPolicy;
use crate::core::name::{Name, check_name};
use crate::core::supervisor::{Policy, RepairPolicy};
use crate::limits::{
    HISTORY_LEN, MAX_COMPONENTS, MAX_NAME_LEN, MAX_REPAIR_ARGS, MAX_REPAIR_ATTEMPTS,
    MAX_TRIAL_OUTPUT,
};
use crate::os::led::LedSpec;

/// A fault: its place in the file (`None`: the file as a whole) and what is wrong.
pub(super) type Invalid = (Option<Range<usize>>, String);

impl RawConfig {
    /// The config from its sections, or the first fault.
    pub(super) fn validate(self, path: &Path, source: &str) -> Result<Config, Invalid> {
        let watchdog = self.watchdog.validate()?;
        let (agent, agent_places) = self.agent.validate()?;
        let led = self.led.validate()?;
        let guard = self.reboot_guard.validate()?;
        defaults_section(&self.defaults)?;
        let hearts = self
            .hearts
            .map(|section| hearts_section(section, &self.defaults, &agent.run_dir))
            .transpose()?;
        let notify = self.notify.validate(&agent)?;
        let (components, file_places) = component_sections(self.components, &self.defaults)?;
        let (hearts, hearts_place) = hearts.unzip();
        let export = self.export.map(export_section).transpose()?;
        across_sections(
            &agent,
            &agent_places,
            hearts.as_ref().zip(hearts_place),
            export.as_ref(),
            &components,
            &file_places,
        )?;
        let export = export.map(|(textfile, _)| ExportConfig { textfile });
        let boot = self
            .boot
            .map(|section| boot_section(section, &components, hearts.as_ref()))
            .transpose()?;
        Ok(Config {
            path: path.to_owned(),
            source: source.to_owned(),
            watchdog,
            agent,
            led,
            guard,
            hearts,
            notify,
            boot,
            export,
            components,
        })
    }
}

/// `[export]`: the file's name is what the textfile collector reads (`*.prom`, and not
/// hidden: the agent's temporary file is `.NAME.tmp`), short enough for that temporary
/// name. Its place among the other paths is checked with them.
fn export_section(section: Spanned<RawExport>) -> Result<(PathBuf, Range<usize>), Invalid> {
    let span = section.span();
    let Some(textfile) = section.into_inner().textfile else {
        return Err((
            Some(span),
            "[export] needs textfile, the metrics file for node_exporter's textfile collector (e.g. \"/var/lib/prometheus/node-exporter/watchkeeper.prom\")".into(),
        ));
    };
    let path = &textfile.get_ref().0;
    match textfile_fault(path) {
        Some(message) => Err(at(&textfile, format!("export.textfile {message}"))),
        None => Ok((path.clone(), textfile.span())),
    }
}

/// What is wrong with the name of a metrics file, if anything (see [`export_section`]).
pub(super) fn textfile_fault(path: &Path) -> Option<String> {
    let name = path.file_name().map(|n| n.to_string_lossy());
    match name.as_deref() {
        None => Some("names no file".to_owned()),
        Some(n) if !n.ends_with(".prom") || n.len() == ".prom".len() => Some(format!(
            "must name a file ending in .prom: node_exporter's textfile collector reads only those, not {}",
            toml_string(n)
        )),
        Some(n) if n.starts_with('.') => {
            Some("must not name a hidden file (the agent's temporary file is hidden)".to_owned())
        }
        Some(n) if n.len() > MAX_NAME_LEN => Some(format!(
            "names a file of {} bytes; at most {MAX_NAME_LEN} are allowed",
            n.len()
        )),
        Some(n) if check_name(&n.as_bytes()[..n.len() - ".prom".len()]).is_err() => Some(format!(
            "names {}: a metrics file's name is letters, digits, '.', '_' and '-', ending in .prom",
            toml_string(n)
        )),
        Some(_) => None,
    }
}

impl RawNotify {
    /// `[notify]`: the socket is the agent's own file, so in the run directory it has the
    /// default name (the others there are the agent's too), and it is never in the state
    /// directory.
    fn validate(self, agent: &AgentConfig) -> Result<NotifyConfig, Invalid> {
        let default = agent.run_dir.join(defaults::NOTIFY_IN_RUN_DIR);
        let Some(socket) = self.socket else {
            return Ok(NotifyConfig { socket: default });
        };
        let path = &socket.get_ref().0;
        let inside = |dir: &Path| normalised(path).starts_with(normalised(dir));
        if inside(&agent.state_dir)
            || (inside(&agent.run_dir) && normalised(path) != normalised(&default))
        {
            return Err(at(
                &socket,
                format!(
                    "notify.socket {} is among the agent's own files: use {} or a path outside run_dir and state_dir",
                    toml_string(&path.to_string_lossy()),
                    toml_string(&default.to_string_lossy())
                ),
            ));
        }
        Ok(NotifyConfig {
            socket: socket.into_inner().0,
        })
    }
}

impl RawWatchdog {
    /// `[watchdog]`.
    pub(super) fn validate(self) -> Result<WatchdogConfig, Invalid> {
        let device = match &self.device {
            Some(d) if d.get_ref().0 == defaults::DEVICE_NONE => None,
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
            None => Some(PathBuf::from(defaults::DEVICE)),
        };
        let timeout = driver_seconds(&self.timeout, "timeout", defaults::WATCHDOG_TIMEOUT)?;
        let shutdown_timeout = driver_seconds(
            &self.shutdown_timeout,
            "shutdown_timeout",
            defaults::SHUTDOWN_TIMEOUT,
        )?;
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
            None => timeout / defaults::FEEDS_PER_TIMEOUT,
        };
        Ok(WatchdogConfig {
            device,
            timeout,
            feed_interval,
            shutdown_timeout,
        })
    }
}

/// A watchdog timeout: whole seconds from 1 to 3600, as the driver API counts them.
fn driver_seconds(
    value: &Option<Spanned<Dur>>,
    key: &str,
    default: Duration,
) -> Result<Duration, Invalid> {
    let Some(t) = value else {
        return Ok(default);
    };
    let d = t.get_ref().0;
    if d.subsec_nanos() != 0 || !(1..=3600).contains(&d.as_secs()) {
        return Err(at(
            t,
            format!(
                "watchdog {key} must be whole seconds from 1 to 3600 (the driver API counts seconds)"
            ),
        ));
    }
    Ok(d)
}

/// Where `[agent]` set its directories (`None`: the default).
struct AgentPlaces {
    state_dir: Option<Range<usize>>,
    run_dir: Option<Range<usize>>,
}

impl RawAgent {
    /// `[agent]`, and where it set its directories (for the rules between paths).
    fn validate(self) -> Result<(AgentConfig, AgentPlaces), Invalid> {
        let places = AgentPlaces {
            state_dir: span(&self.state_dir),
            run_dir: span(&self.run_dir),
        };
        min_duration(
            &self.check_interval,
            "check_interval",
            Duration::from_millis(10),
        )?;
        let check_interval = match &self.check_interval {
            Some(c) if c.get_ref().0 > Duration::from_secs(60) => {
                return Err(at(c, "check_interval must be at most 60s".into()));
            }
            Some(c) => c.get_ref().0,
            None => defaults::CHECK_INTERVAL,
        };
        let log = match &self.log {
            None => defaults::LOG,
            Some(l) => LogTarget::from_name(&l.get_ref().0).ok_or_else(|| {
                at(
                    l,
                    format!(
                        "log must be \"stderr\" or \"kmsg\", not {}",
                        toml_string(&l.get_ref().0)
                    ),
                )
            })?,
        };
        let realtime_priority = match &self.realtime_priority {
            Some(p) => int_in(p, "realtime_priority", 0..=99)? as u8,
            None => defaults::REALTIME_PRIORITY,
        };
        let agent = AgentConfig {
            check_interval,
            state_dir: self
                .state_dir
                .map_or_else(|| defaults::STATE_DIR.into(), |p| p.into_inner().0),
            run_dir: self
                .run_dir
                .map_or_else(|| defaults::RUN_DIR.into(), |p| p.into_inner().0),
            log,
            realtime_priority: (realtime_priority != defaults::REALTIME_OFF)
                .then_some(realtime_priority),
        };
        Ok((agent, places))
    }
}

impl RawLed {
    /// `[led]`.
    pub(super) fn validate(self) -> Result<LedSpec, Invalid> {
        let active_low = self.active_low.map_or(defaults::ACTIVE_LOW, |f| f.0);
        let unexpected = |key: &str, for_kind: &str| {
            format!("led.{key} is only used with kind = \"{for_kind}\"")
        };
        let Some(kind) = &self.kind else {
            return Ok(defaults::LED);
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
                    None => PathBuf::from(defaults::GPIO_CHIP),
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

impl RawGuard {
    /// `[reboot_guard]`.
    fn validate(self) -> Result<GuardConfig, Invalid> {
        let max_resets = match &self.max_resets {
            Some(m) => int_in(m, "reboot_guard.max_resets", 1..=HISTORY_LEN as i64)? as u32,
            None => defaults::GUARD.max_resets,
        };
        min_duration(&self.window, "reboot_guard.window", Duration::from_secs(1))?;
        Ok(GuardConfig {
            max_resets,
            window: self
                .window
                .map_or(defaults::GUARD.window, |w| w.get_ref().0),
        })
    }
}

/// `[boot]`, and its timing rules against the critical components (see the README, "A/B
/// updates"): `confirm_after` covers every critical heartbeat timeout, so that a
/// component that beat once and died cannot count as alive through it; the deadline leaves
/// room for every critical component's startup grace and then `confirm_after`.
fn boot_section(
    section: Spanned<RawBoot>,
    components: &[ComponentConfig],
    hearts: Option<&HeartsConfig>,
) -> Result<BootConfig, Invalid> {
    let place = section.span();
    let b = section.into_inner();
    let confirm = b.confirm.as_ref().ok_or_else(|| {
        (
            Some(place.clone()),
            "[boot] has no confirm (it is required): the command that confirms a healthy boot, e.g. [\"/usr/bin/rauc\", \"status\", \"mark-good\"]".to_owned(),
        )
    })?;
    let confirm_words = command_words(confirm, "confirm")?;
    min_duration(&b.confirm_after, "confirm_after", Duration::from_secs(1))?;
    min_duration(
        &b.confirm_timeout,
        "confirm_timeout",
        Duration::from_millis(100),
    )?;
    let get = |v: &Option<Spanned<Dur>>| v.as_ref().map(|v| v.get_ref().0);
    let policy = BootPolicy {
        confirm_after: get(&b.confirm_after).unwrap_or(defaults::CONFIRM_AFTER),
        timeout: get(&b.confirm_timeout).unwrap_or(defaults::CONFIRM_TIMEOUT),
        attempts: match &b.confirm_attempts {
            Some(n) => int_in(n, "confirm_attempts", 1..=i64::from(MAX_REPAIR_ATTEMPTS))? as u32,
            None => defaults::CONFIRM_ATTEMPTS,
        },
    };
    let value = b.trial_value.as_ref().map(trial_value).transpose()?;
    let trial = match (&b.trial, &b.trial_file) {
        (Some(_), Some(file)) => {
            return Err(at(
                file,
                "set either trial (a command) or trial_file, not both".to_owned(),
            ));
        }
        (Some(argv), None) => TrialCheck::Command {
            argv: command_words(argv, "trial")?,
            value,
        },
        (None, Some(file)) => TrialCheck::File {
            path: file.get_ref().0.clone(),
            value: value.ok_or_else(|| {
                at(
                    file,
                    "trial_file needs trial_value = \"...\": what the file holds in a trial boot"
                        .to_owned(),
                )
            })?,
        },
        (None, None) => {
            if let Some(v) = &b.trial_value {
                return Err(at(
                    v,
                    "trial_value is compared with the output of trial or the content of trial_file: set one of them".to_owned(),
                ));
            }
            TrialCheck::Always
        }
    };
    // The critical components' (name, timeout, grace); hearts have no timeout until run time.
    let mut critical: Vec<(String, Option<Duration>, Duration)> = components
        .iter()
        .filter(|c| c.policy.critical)
        .map(|c| {
            (
                format!("component {}", toml_string(c.name.as_str())),
                Some(c.policy.timeout),
                c.policy.grace,
            )
        })
        .collect();
    if let Some(h) = hearts.filter(|h| h.critical) {
        critical.push(("[hearts]".to_owned(), None, h.grace));
    }
    if critical.is_empty() {
        return Err((
            Some(place),
            "[boot] confirms a boot when every critical component is alive, and no component is critical: set critical = true on the ones a healthy boot needs".to_owned(),
        ));
    }
    let after_place = span(&b.confirm_after).unwrap_or_else(|| place.clone());
    for (who, timeout, _) in &critical {
        if let Some(timeout) = timeout
            && policy.confirm_after < *timeout
        {
            return Err((
                Some(after_place),
                format!(
                    "confirm_after ({:?}) must be at least the timeout of {who} ({timeout:?}): a component that beat once and then died would still count as alive",
                    policy.confirm_after
                ),
            ));
        }
    }
    let deadline = get(&b.confirm_deadline);
    if let (Some(deadline), Some(deadline_key)) = (deadline, &b.confirm_deadline) {
        for (who, _, grace) in &critical {
            let needed = grace.saturating_add(policy.confirm_after);
            if deadline < needed {
                return Err(at(
                    deadline_key,
                    format!(
                        "confirm_deadline ({deadline:?}) must be at least the grace of {who} + confirm_after ({grace:?} + {:?} = {needed:?}): a healthy boot must be able to start and then stay healthy before it",
                        policy.confirm_after
                    ),
                ));
            }
        }
    }
    Ok(BootConfig {
        confirm: confirm_words,
        policy,
        deadline,
        trial,
    })
}

/// `trial_value`: what a trial boot's check prints (or its file holds), compared after
/// trimming surrounding whitespace; so it is not empty, has none itself and fits the bytes
/// read of the output.
fn trial_value(value: &Spanned<Text>) -> Result<String, Invalid> {
    let text = &value.get_ref().0;
    if text.is_empty() || text.trim() != text || text.len() > MAX_TRIAL_OUTPUT {
        return Err(at(
            value,
            format!(
                "trial_value {} must be 1 to {MAX_TRIAL_OUTPUT} bytes without surrounding whitespace (the output is compared trimmed)",
                toml_string(text)
            ),
        ));
    }
    Ok(text.clone())
}

/// `[defaults]`: only policy keys, which [`RawEntry::or`] gives to `[hearts]` and to each
/// `[[component]]`, where they are checked with the rest of the policy.
fn defaults_section(section: &RawEntry) -> Result<(), Invalid> {
    let per_component = "it is set per [[component]]";
    section.refuse(
        "[defaults]",
        &[
            ("name", span(&section.name), per_component),
            ("heartbeat", span(&section.heartbeat), per_component),
            ("liveness", span(&section.liveness), per_component),
            ("pidfile", span(&section.pidfile), per_component),
            ("dir", span(&section.dir), "it belongs in [hearts]"),
        ],
    )?;
    min_duration(&section.timeout, "timeout", Duration::from_millis(100))
}

/// `[hearts]` over `shared` (the `[defaults]` section), and the place the rules between
/// paths point at for its directory.
fn hearts_section(
    section: Spanned<RawEntry>,
    shared: &RawEntry,
    run_dir: &Path,
) -> Result<(HeartsConfig, Range<usize>), Invalid> {
    let section_span = section.span();
    let h = section.into_inner();
    let own = "a heart is named by its file, and its timeout is the file's content";
    h.refuse(
        "[hearts]",
        &[
            ("name", span(&h.name), own),
            ("heartbeat", span(&h.heartbeat), own),
            (
                "liveness",
                span(&h.liveness),
                "a heart beats through its file",
            ),
            ("pidfile", span(&h.pidfile), "hearts have no pidfile"),
            ("timeout", span(&h.timeout), own),
        ],
    )?;
    let place = span(&h.dir).unwrap_or(section_span);
    let dir = h.dir.clone().map_or_else(
        || run_dir.join(defaults::HEARTS_IN_RUN_DIR),
        |d| d.into_inner().0,
    );
    // A heart's timeout comes from its file: grace defaults to its least.
    let (p, repair) = h
        .or(shared)
        .policy(defaults::GRACE_AT_LEAST, Duration::ZERO)?;
    let hearts = HeartsConfig {
        dir,
        grace: p.grace,
        reset_after: p.reset_after,
        critical: p.critical,
        repair,
    };
    Ok((hearts, place))
}

/// Where a component named its files (for the rules between paths).
struct FilePlaces {
    heartbeat: Option<Range<usize>>,
    pidfile: Option<Range<usize>>,
}

/// The `[[component]]` tables over `shared` (the `[defaults]` section), in order, each with
/// where it named its files.
fn component_sections(
    entries: Vec<Spanned<RawEntry>>,
    shared: &RawEntry,
) -> Result<(Vec<ComponentConfig>, Vec<FilePlaces>), Invalid> {
    if let Some(extra) = entries.get(MAX_COMPONENTS) {
        return Err(at(
            extra,
            format!("too many components: at most {MAX_COMPONENTS} are supported"),
        ));
    }
    let mut components = Vec::with_capacity(entries.len());
    let mut places = Vec::with_capacity(entries.len());
    for entry in entries {
        let (component, place) = component_section(entry, shared, &components)?;
        components.push(component);
        places.push(place);
    }
    Ok((components, places))
}

/// One `[[component]]` over `shared`; `earlier` are the ones before it, whose names it must
/// not repeat.
fn component_section(
    entry: Spanned<RawEntry>,
    shared: &RawEntry,
    earlier: &[ComponentConfig],
) -> Result<(ComponentConfig, FilePlaces), Invalid> {
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
    let liveness = match &raw.liveness {
        None => defaults::LIVENESS,
        Some(l) => Liveness::from_name(&l.get_ref().0).ok_or_else(|| {
            at(
                l,
                format!(
                    "liveness must be \"heartbeat\" (its file is touched), \"notify\" (it sends sd_notify messages) or \"both\", not {}",
                    toml_string(&l.get_ref().0)
                ),
            )
        })?,
    };
    match (&raw.heartbeat, liveness) {
        (None, Liveness::Heartbeat) => {
            return Err(at(
                &entry,
                "this [[component]] has no heartbeat (it is required unless liveness = \"notify\")"
                    .to_owned(),
            ));
        }
        (None, Liveness::Both) => {
            return Err(at(
                &entry,
                "this [[component]] has no heartbeat: liveness = \"both\" needs one".to_owned(),
            ));
        }
        (Some(h), Liveness::Notify) => {
            return Err(at(
                h,
                "a component with liveness = \"notify\" beats through its messages: remove heartbeat, or set liveness = \"both\" to count its touches too".to_owned(),
            ));
        }
        _ => {}
    }
    let text = &name_key.get_ref().0;
    let name = Name::new(text.as_bytes()).map_err(|m| {
        at(
            name_key,
            format!("component name {}: {m}", toml_string(text)),
        )
    })?;
    if earlier.iter().any(|c| c.name == name) {
        return Err(at(
            name_key,
            format!("duplicate component name {}", toml_string(text)),
        ));
    }
    min_duration(&raw.timeout, "timeout", Duration::from_millis(100))?;
    let heartbeat = raw.heartbeat.as_ref().map(|h| h.get_ref().0.clone());
    let places = FilePlaces {
        heartbeat: span(&raw.heartbeat),
        pidfile: span(&raw.pidfile),
    };
    let pidfile = raw.pidfile.clone().map(|p| p.into_inner().0);
    let policy = entry.into_inner().or(shared);
    let timeout = policy
        .timeout
        .as_ref()
        .map_or(defaults::TIMEOUT, |t| t.get_ref().0);
    let (mut policy, repair) = policy.policy(timeout, timeout)?;
    policy.awaits_ready = liveness.listens();
    let component = ComponentConfig {
        name,
        heartbeat,
        liveness,
        pidfile,
        policy,
        repair,
    };
    Ok((component, places))
}

impl RawEntry {
    /// Refuses the keys that `section` does not take.
    fn refuse(
        &self,
        section: &str,
        keys: &[(&str, Option<Range<usize>>, &str)],
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
            liveness: self.liveness,
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
    fn policy(
        &self,
        timeout: Duration,
        judged: Duration,
    ) -> Result<(Policy, Option<Repair>), Invalid> {
        let millis = Duration::from_millis(100);
        min_duration(&self.grace, "grace", Duration::ZERO)?;
        min_duration(&self.repair_timeout, "repair_timeout", millis)?;
        min_duration(&self.repair_backoff, "repair_backoff", millis)?;
        let get = |v: &Option<Spanned<Dur>>| v.as_ref().map(|v| v.get_ref().0);
        let grace = get(&self.grace).unwrap_or_else(|| timeout.max(defaults::GRACE_AT_LEAST));
        let reset_after = get(&self.reset_after).unwrap_or(defaults::RESET_AFTER);
        let backoff_initial = get(&self.repair_backoff).unwrap_or(defaults::REPAIR_BACKOFF);
        let backoff_max = get(&self.repair_backoff_max).unwrap_or(defaults::REPAIR_BACKOFF_MAX);
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
            None => defaults::MAX_REPAIRS,
        };
        let repair = match &self.repair {
            Some(argv) => {
                let words = command_words(argv, "repair")?;
                let policy = RepairPolicy {
                    timeout: get(&self.repair_timeout).unwrap_or(defaults::REPAIR_TIMEOUT),
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
            critical: self.critical.map_or(defaults::CRITICAL, |f| f.0),
            repair: repair.as_ref().map(|r| r.policy),
            awaits_ready: false,
        };
        Ok((policy, repair))
    }
}

/// A command (`key` is `repair`, `confirm` or `trial`): 1 to [`MAX_REPAIR_ARGS`] strings
/// without NUL, the first an absolute path (it is executed directly, with no shell).
fn command_words(argv: &Spanned<Words>, key: &str) -> Result<Vec<OsString>, Invalid> {
    let Words(items) = argv.get_ref();
    if items.is_empty() || items.len() > MAX_REPAIR_ARGS {
        return Err(at(
            argv,
            format!(
                "{key} must be a list of 1 to {MAX_REPAIR_ARGS} strings: the program and its arguments"
            ),
        ));
    }
    let mut words = Vec::with_capacity(items.len());
    for item in items {
        match item.get_ref() {
            Found::Str(word) if word.contains('\0') => {
                return Err(at(
                    item,
                    format!("a {key} argument cannot contain a NUL byte"),
                ));
            }
            Found::Str(word) => words.push(word.as_str()),
            other => {
                return Err(at(
                    item,
                    format!("each {key} word must be a string in quotes (\"...\"), not {other}"),
                ));
            }
        }
    }
    if !words.first().is_some_and(|w| w.starts_with('/')) {
        return Err(at(
            argv,
            format!(
                "the {key} program {} must be an absolute path (no PATH search, no shell; write [\"/bin/sh\", \"-c\", \"...\"] for one)",
                toml_string(words.first().copied().unwrap_or_default())
            ),
        ));
    }
    Ok(words.iter().map(OsString::from).collect())
}

/// The rules between sections: the paths (see [`check_paths`]), and something to supervise.
fn across_sections(
    agent: &AgentConfig,
    agent_places: &AgentPlaces,
    hearts: Option<(&HeartsConfig, Range<usize>)>,
    export: Option<&(PathBuf, Range<usize>)>,
    components: &[ComponentConfig],
    file_places: &[FilePlaces],
) -> Result<(), Invalid> {
    let mut files = Vec::with_capacity(components.len() * 2 + 1);
    if let Some((textfile, span)) = export {
        files.push(Placed {
            path: textfile,
            span: span.clone(),
            key: "export.textfile",
            owner: None,
        });
    }
    for (c, places) in components.iter().zip(file_places) {
        if let (Some(heartbeat), Some(span)) = (&c.heartbeat, &places.heartbeat) {
            files.push(Placed {
                path: heartbeat,
                span: span.clone(),
                key: "heartbeat",
                owner: Some(c.name.as_str()),
            });
        }
        if let (Some(pidfile), Some(span)) = (&c.pidfile, &places.pidfile) {
            files.push(Placed {
                path: pidfile,
                span: span.clone(),
                key: "pidfile",
                owner: Some(c.name.as_str()),
            });
        }
    }
    let hearts_place = hearts.as_ref().map(|(h, span)| Placed {
        path: &h.dir,
        span: span.clone(),
        key: "the hearts dir",
        owner: None,
    });
    check_paths(agent, agent_places, hearts_place.as_ref(), &files)?;
    if components.is_empty() && hearts.is_none() {
        return Err((
            None,
            "nothing to supervise: add a [[component]] or a [hearts] section".into(),
        ));
    }
    Ok(())
}

/// A configured path with its place, for the rules between paths.
struct Placed<'a> {
    path: &'a Path,
    span: Range<usize>,
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
        let in_run = within(h.path, run)
            && normalised(h.path) != normalised(&run.join(defaults::HEARTS_IN_RUN_DIR));
        if in_run {
            return Err(h.refuse(format!(
                "is inside run_dir {} (only {}/{} is allowed there): {own}",
                toml_string(&run.to_string_lossy()),
                run.display(),
                defaults::HEARTS_IN_RUN_DIR
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
        if f.key == "export.textfile"
            && let Some(other) = files
                .iter()
                .find(|o| o.key != f.key && normalised(o.path) == normalised(f.path))
        {
            return Err(f.refuse(format!(
                "is also the {}{}: the metrics file is rewritten on every change, which would count as beats",
                other.key,
                whose(other)
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

fn min_duration(value: &Option<Spanned<Dur>>, key: &str, min: Duration) -> Result<(), Invalid> {
    match value {
        Some(v) if v.get_ref().0 < min => Err(at(v, format!("{key} must be at least {min:?}"))),
        _ => Ok(()),
    }
}

fn int_in(value: &Spanned<Int>, key: &str, range: RangeInclusive<i64>) -> Result<i64, Invalid> {
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

fn at<T>(value: &Spanned<T>, message: String) -> Invalid {
    (Some(value.span()), message)
}

fn span<T>(value: &Option<Spanned<T>>) -> Option<Range<usize>> {
    value.as_ref().map(Spanned::span)
}
