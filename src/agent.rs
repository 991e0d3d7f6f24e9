//! The agent loop: the thin shell that carries the core's decisions out.
//!
//! Each pass reaps finished repairs, stats every heartbeat (and pidfile, and the hearts
//! directory), hands the observations to the [`Supervisor`], and carries out its actions:
//! problem files, repairs, logging, feeding, the reset path. Between passes the loop sleeps
//! until the core's next deadline or the LED's next edge, whichever comes first.
//!
//! Invariants: nothing here allocates after [`Agent::new`] returns (every buffer and table
//! is sized at startup); the watchdog is fed only through the core's `Feed`, which follows a
//! complete pass; on the reset path the reason is persisted before feeding stops, and the
//! device is kept open without the magic 'V'.

use core::fmt::Write as _;
use core::time::Duration;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use embedded_hal::digital::OutputPin;
use heapless::index_map::FnvIndexMap;

use crate::cli::status;
use crate::config::{Config, HeartsConfig};
use crate::core::pattern::Pattern;
use crate::core::supervisor::{
    Action, Cause, FALLBACK_TIMEOUTS, Observation, Policy, Process, Settings, Supervisor, Withheld,
};
use crate::core::time::Instant;
use crate::limits::{MAX_COMPONENTS, MAX_NAME_LEN, MAX_REASON_LEN, MAX_STATUS_LEN};
use crate::os::clock::Clock;
use crate::os::heartbeat::{self, DirState, DirTrouble, Entry, HeartsDir, Refusals};
use crate::os::led::{FaultLed, PinError};
use crate::os::repair::{self, Repairs};
use crate::os::rundir::{Checked, RunDir};
use crate::os::state::State;
use crate::os::watchdog::Watchdog;
use crate::snapshot;

/// Most actions one tick can produce: a few per component plus the global ones.
const MAX_ACTIONS: usize = 3 * MAX_COMPONENTS + 4;
type Name = heapless::String<MAX_NAME_LEN>;
type Reason = heapless::String<MAX_REASON_LEN>;

/// Everything the agent is built from: the OS resources, or fakes in tests.
pub struct Parts<P: OutputPin, C: Clock> {
    /// `None` when the device could not be opened (the fault is shown).
    pub watchdog: Option<Box<dyn Watchdog>>,
    /// Only a real device may lead to `reboot(2)`; never a development host.
    pub may_reboot: bool,
    pub led: FaultLed<P>,
    pub clock: C,
    pub state: State,
    pub run: RunDir,
    /// The agent's own binary, which launches repairs (see [`repair`]).
    pub agent_binary: PathBuf,
    /// Show the fault pattern from the start (config fallback or device error).
    pub fault: bool,
    /// End of a reboot-loop hold decided at startup.
    pub hold_until: Option<Instant>,
    /// Seed for the backoff jitter.
    pub seed: u64,
}

/// A configured component: where to look.
struct Watched {
    heartbeat: PathBuf,
    pidfile: Option<PathBuf>,
    launcher: Option<repair::Launcher>,
    refused: bool,
}

/// A file in the hearts directory.
#[derive(Clone, Copy)]
enum Heart {
    Supervised {
        index: u16,
        size: i64,
        inode: u64,
        seen: bool,
        /// Not seen since its directory was lost or replaced: kept, and silent, until its
        /// file is back (a removed directory is an accident; a removed file is a choice).
        orphan: bool,
    },
    /// Its content is not a timeout; re-read when the file is replaced.
    Bad { size: i64, inode: u64, seen: bool },
}

struct Hearts {
    dir: HeartsDir,
    config: HeartsConfig,
    launcher: Option<repair::Launcher>,
    by_name: Box<FnvIndexMap<Name, Heart, MAX_COMPONENTS>>,
    /// Heart name of each supervisor index (empty for configured components).
    names: Box<heapless::Vec<Name, MAX_COMPONENTS>>,
    /// What is wrong with the directory, as last logged (logged once, not per pass).
    trouble: Option<DirTrouble>,
    refusals: Refusals,
}

pub struct Agent<P: OutputPin, C: Clock> {
    sup: Box<Supervisor>,
    watched: Vec<Watched>,
    names: Vec<Name>,
    hearts: Option<Hearts>,
    repairs: Repairs,
    parts: Parts<P, C>,
    actions: Box<heapless::Vec<Action, MAX_ACTIONS>>,
    status: Box<heapless::String<MAX_STATUS_LEN>>,
    shown: (Pattern, Instant),
    next_pass: Instant,
    written_generation: Option<u64>,
    feed_failing: bool,
    led_failing: bool,
    config_path: PathBuf,
    hardware_timeout: Duration,
    /// Written into the snapshot so that `status` can tell this process from a later one.
    identity: snapshot::Identity<crate::os::state::BootId>,
}

fn hearts_policy(config: &HeartsConfig, timeout: Duration) -> Policy {
    Policy {
        timeout,
        grace: config.grace.max(timeout),
        reset_after: config.reset_after,
        critical: config.critical,
        repair: config.repair.as_ref().map(|r| r.policy),
    }
}

impl<P: OutputPin<Error = PinError>, C: Clock> Agent<P, C> {
    /// Builds the agent for `config` (all allocation happens here).
    pub fn new(config: &Config, parts: Parts<P, C>) -> Result<Self, String> {
        let now = parts.clock.now();
        let hardware_timeout = parts
            .watchdog
            .as_ref()
            .map_or(config.watchdog.timeout, |w| w.timeout());
        let mut feed_interval = config.watchdog.feed_interval;
        if feed_interval >= hardware_timeout / 2 {
            feed_interval = hardware_timeout / 4;
            log::warn!(
                "the driver adopted a {hardware_timeout:?} timeout; feeding every {feed_interval:?} instead of the configured {:?}",
                config.watchdog.feed_interval
            );
        }
        let settings = Settings {
            feed_interval,
            check_interval: config.agent.check_interval,
            hardware_timeout,
        };
        let mut sup = Box::new(Supervisor::new(settings, now, parts.hold_until, parts.seed));
        sup.set_fault(parts.fault || parts.run.broken().is_some() || parts.state.fault());
        let mut watched = Vec::with_capacity(config.components.len());
        let mut names = Vec::with_capacity(config.components.len());
        for c in &config.components {
            sup.add(c.policy, now)
                .map_err(|_| "too many components".to_owned())?;
            if c.heartbeat.parent().is_some_and(|p| !p.is_dir()) {
                log::warn!(
                    "component {}: the directory of its heartbeat {} does not exist (yet); until it does the component counts as silent",
                    c.name,
                    c.heartbeat.display()
                );
            }
            watched.push(Watched {
                heartbeat: c.heartbeat.clone(),
                pidfile: c.pidfile.clone(),
                launcher: c
                    .repair
                    .as_ref()
                    .map(|r| repair::launcher(&parts.agent_binary, parts.run.path(), &r.argv))
                    .transpose()
                    .map_err(|e| format!("component {}: cannot prepare its repair: {e}", c.name))?,
                refused: false,
            });
            names.push(
                heapless::String::try_from(c.name.as_str())
                    .map_err(|_| "name too long".to_owned())?,
            );
        }
        let hearts = match &config.hearts {
            Some(h) => {
                let mut heart_names = Box::new(heapless::Vec::new());
                heart_names
                    .resize(MAX_COMPONENTS, Name::new())
                    .map_err(|_| "capacity".to_owned())?;
                Some(Hearts {
                    // Trouble with the directory is reported by the first pass, and
                    // retried at every pass: it never stops the agent.
                    dir: HeartsDir::open(&h.dir),
                    config: h.clone(),
                    launcher: h
                        .repair
                        .as_ref()
                        .map(|r| repair::launcher(&parts.agent_binary, parts.run.path(), &r.argv))
                        .transpose()
                        .map_err(|e| format!("[hearts]: cannot prepare the repair: {e}"))?,
                    by_name: Box::default(),
                    names: heart_names,
                    trouble: None,
                    refusals: Refusals::new(now),
                })
            }
            None => None,
        };
        Ok(Agent {
            sup,
            watched,
            names,
            hearts,
            repairs: Repairs::default(),
            actions: Box::default(),
            status: Box::default(),
            shown: (Pattern::Healthy, now),
            next_pass: now,
            written_generation: None,
            feed_failing: false,
            led_failing: false,
            config_path: config.path.clone(),
            hardware_timeout,
            identity: status::agent_identity(),
            parts,
        })
    }

    /// Runs forever. There is no way out but a crash, by design.
    pub fn run(mut self) -> ! {
        loop {
            let wake = self.step();
            self.parts.clock.sleep_until(wake);
        }
    }

    /// One turn of the loop: a pass if one is due, the LED, the status snapshot. Returns
    /// when the loop should wake next.
    pub fn step(&mut self) -> Instant {
        let now = self.parts.clock.now();
        if now >= self.next_pass {
            self.pass(now);
            self.next_pass = self.sup.next_deadline();
        }
        let led_edge = self.update_led(now);
        if self.written_generation != Some(self.sup.generation()) {
            self.write_status(now);
        }
        self.next_pass.min(led_edge)
    }

    /// The supervisor, for tests and the status snapshot.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    fn name(&self, index: usize) -> &str {
        match self.names.get(index) {
            Some(name) => name,
            None => self
                .hearts
                .as_ref()
                .and_then(|h| h.names.get(index))
                .map_or("?", |n| n.as_str()),
        }
    }

    fn pass(&mut self, now: Instant) {
        crate::os::signals::consume(now);
        self.check_dirs(now);
        if self.parts.run.take_clear_hold_request() {
            if self.sup.in_hold() {
                self.sup.clear_hold();
                if let Err(e) = self.parts.state.record_hold_cleared() {
                    log::error!("hold cleared, but not recorded: {e}");
                }
                log::warn!(
                    "reboot-loop hold cleared by an operator: forced resets are allowed again"
                );
            } else {
                log::info!("clear-hold requested, but there is no hold");
            }
        }
        while let Some((index, exit)) = self.repairs.reap() {
            self.sup.repair_exited(index, now);
            log::info!("repair of {} exited ({exit})", self.name(index));
        }
        for (index, w) in self.watched.iter_mut().enumerate() {
            let heartbeat = match heartbeat::stamp(&w.heartbeat) {
                Ok(stamp) => {
                    w.refused = false;
                    stamp
                }
                Err(why) => {
                    if !w.refused {
                        w.refused = true;
                        log::warn!(
                            "component {}: heartbeat {} {why}; counted as silent",
                            self.names[index],
                            w.heartbeat.display()
                        );
                    }
                    None
                }
            };
            let process = w
                .pidfile
                .as_deref()
                .map_or(Process::Unknown, heartbeat::process);
            self.sup.observe(index, Observation { heartbeat, process });
        }
        if self.hearts.is_some() {
            self.scan_hearts(now);
        }
        let actions = &mut self.actions;
        actions.clear();
        self.sup.tick(now, |action| {
            // Cannot overflow: MAX_ACTIONS covers the most one tick can decide.
            let _ = actions.push(action);
        });
        for i in 0..self.actions.len() {
            let action = self.actions[i];
            self.act(now, action);
        }
    }

    /// Notices the run or state directory broken, replaced or repaired; shows the fault
    /// pattern while either is unusable. After the run directory comes back, its problem
    /// files and status snapshot are written again.
    fn check_dirs(&mut self, now: Instant) {
        if self.parts.run.check() == Checked::Restored {
            for index in self.sup.indices() {
                let Some(cause) = self.sup.view(index).and_then(|v| v.cause) else {
                    continue;
                };
                let reason = self.reason(index, cause);
                let name = self.name(index);
                if let Err(e) = self.parts.run.mark_problem(name, &reason) {
                    log::error!("component {name}: cannot mark the problem: {}", e.desc());
                }
            }
            // A heart whose content is not a timeout has a problem file too: re-reading it
            // on the next scan writes that file again.
            if let Some(hearts) = self.hearts.as_mut() {
                for heart in hearts.by_name.values_mut() {
                    if let Heart::Bad { size, .. } = heart {
                        *size = -1;
                    }
                }
            }
            self.written_generation = None;
        }
        self.parts.state.check(now);
        self.sup.set_fault(
            self.parts.fault || self.parts.run.broken().is_some() || self.parts.state.fault(),
        );
    }

    fn scan_hearts(&mut self, now: Instant) {
        let Some(hearts) = self.hearts.as_mut() else {
            return;
        };
        let Hearts {
            dir,
            config,
            by_name,
            names,
            trouble,
            refusals,
            ..
        } = hearts;
        let sup = &mut self.sup;
        let run = &self.parts.run;
        let configured = &self.names;
        let path = config.dir.as_path();
        let checked = dir.check();
        refusals.begin(now, checked.is_ok_and(|c| c.changed));
        // Components a new heart may still take: supervisor slots not used.
        let mut room = MAX_COMPONENTS
            .saturating_sub(configured.len())
            .saturating_sub(
                by_name
                    .values()
                    .filter(|h| matches!(h, Heart::Supervised { .. }))
                    .count(),
            );
        let scanned = checked.and_then(|c| {
            dir.scan(|reader, entry| {
                let name = match entry {
                    Entry::Named(name) => name,
                    Entry::Refused { name, why } => return refusals.refused(path, name, why),
                };
                let known = by_name.get(name).copied();
                if known.is_none() {
                    // Over capacity: not even looked at, so that 100,000 entries cost
                    // no more than listing them.
                    if room == 0 || by_name.len() == by_name.capacity() {
                        return refusals.over_capacity(name);
                    }
                    if configured.iter().any(|n| n == name) {
                        return refusals.refused(
                            path,
                            name.as_bytes(),
                            "a configured component has that name",
                        );
                    }
                }
                let stamp = match reader.stamp(name) {
                    Ok(Some(stamp)) => stamp,
                    // Removed since it was listed.
                    Ok(None) => return,
                    Err(why) => return refusals.refused(path, name.as_bytes(), why),
                };
                let replaced = match known {
                    Some(Heart::Supervised { size, inode, .. })
                    | Some(Heart::Bad { size, inode, .. }) => {
                        size != stamp.size || inode != stamp.inode
                    }
                    None => true,
                };
                let mut heart = known;
                if replaced {
                    heart = match (reader.timeout(name), known) {
                        (Ok(timeout), Some(Heart::Supervised { index, .. })) => {
                            sup.set_policy(usize::from(index), hearts_policy(config, timeout));
                            log::info!("heart {name}: timeout now {timeout:?}");
                            Some(Heart::Supervised {
                                index,
                                size: stamp.size,
                                inode: stamp.inode,
                                seen: true,
                                orphan: false,
                            })
                        }
                        (Ok(timeout), _) => match sup.add(hearts_policy(config, timeout), now) {
                            Ok(index) => {
                                room = room.saturating_sub(1);
                                names[index].clear();
                                let _ = names[index].push_str(name);
                                let _ = run.clear_problem(name);
                                log::info!(
                                    "heart {name} found (timeout {timeout:?}, LED code {})",
                                    index + 1
                                );
                                Some(Heart::Supervised {
                                    index: index as u16,
                                    size: stamp.size,
                                    inode: stamp.inode,
                                    seen: true,
                                    orphan: false,
                                })
                            }
                            Err(_) => return refusals.over_capacity(name),
                        },
                        (Err(bad), previous) => {
                            if let Some(Heart::Supervised { index, .. }) = previous {
                                sup.remove(usize::from(index));
                                names[usize::from(index)].clear();
                                room += 1;
                            }
                            log::error!("heart {name}: {bad}");
                            let mut reason = Reason::new();
                            let _ = write!(reason, "{bad}");
                            if let Err(e) = run.mark_problem(name, &reason) {
                                log::error!("heart {name}: cannot mark the problem: {}", e.desc());
                            }
                            Some(Heart::Bad {
                                size: stamp.size,
                                inode: stamp.inode,
                                seen: true,
                            })
                        }
                    };
                }
                // Cannot fail: the scan checked the name's length.
                let Ok(key) = Name::try_from(name) else {
                    return;
                };
                let heart = match heart {
                    Some(Heart::Supervised {
                        index, size, inode, ..
                    }) => {
                        sup.observe(
                            usize::from(index),
                            Observation {
                                heartbeat: Some(stamp),
                                process: Process::Unknown,
                            },
                        );
                        Heart::Supervised {
                            index,
                            size,
                            inode,
                            seen: true,
                            orphan: false,
                        }
                    }
                    Some(Heart::Bad { size, inode, .. }) => Heart::Bad {
                        size,
                        inode,
                        seen: true,
                    },
                    None => return,
                };
                // Cannot fail: a new key was admitted only with room in the table.
                let _ = by_name.insert(key, heart);
            })
            .map_err(DirTrouble::Unreadable)
            .map(|whole| (c.state, whole))
        });
        // Lost or replaced: hearts not (yet) in the directory scanned are kept, silent.
        let lost = !matches!(scanned, Ok((DirState::Same, _)));
        // Listed only in part: a heart not seen may still be there; keep it (silent).
        let truncated = matches!(scanned, Ok((_, false)));
        let scanned = scanned.map(|(state, _)| state);
        let mut orphans = 0usize;
        by_name.retain(|name, heart| match heart {
            Heart::Supervised { seen, .. } | Heart::Bad { seen, .. } if *seen => {
                *seen = false;
                true
            }
            Heart::Supervised { .. } | Heart::Bad { .. } if truncated => true,
            Heart::Supervised { orphan, index, .. } => {
                if lost || *orphan {
                    *orphan = true;
                    orphans += 1;
                    return true;
                }
                sup.remove(usize::from(*index));
                names[usize::from(*index)].clear();
                let _ = run.clear_problem(name);
                log::info!("heart {name} removed: no longer supervised");
                false
            }
            Heart::Bad { .. } => {
                // Its file is gone with the directory: so is its problem.
                let _ = run.clear_problem(name);
                if !lost {
                    log::info!("heart {name} removed: no longer supervised");
                }
                false
            }
        });
        match scanned {
            Err(t) if *trouble != Some(t) => {
                *trouble = Some(t);
                log::error!(
                    "hearts directory {}: {t}; looked at again every pass, its {orphans} hearts count as silent meanwhile",
                    path.display()
                );
            }
            Err(_) => {}
            Ok(state) => {
                let how = match (trouble.take(), state) {
                    (Some(_), _) => "is usable again",
                    (None, DirState::Replaced) => "was replaced by another directory",
                    (None, DirState::Recreated) => "was removed and has been created again",
                    (None, DirState::Same) => "",
                };
                if !how.is_empty() {
                    log::warn!(
                        "hearts directory {} {how}: supervising the hearts it holds now; {orphans} hearts not back in it count as silent until their files are",
                        path.display()
                    );
                }
            }
        }
        refusals.end(now, path, configured.len(), truncated);
    }

    fn reason(&self, index: usize, cause: Cause) -> Reason {
        let mut reason = Reason::new();
        let _ = match (cause, self.watched.get(index)) {
            (Cause::Silent, Some(w)) => {
                let timeout = self.sup.policy(index).map_or(Duration::ZERO, |p| p.timeout);
                write!(
                    reason,
                    "heartbeat {} not touched for {timeout:?} (its timeout)",
                    w.heartbeat.display()
                )
            }
            (Cause::NoFirstBeat, Some(w)) => {
                write!(
                    reason,
                    "no heartbeat at {} within the startup grace period",
                    w.heartbeat.display()
                )
            }
            _ => write!(reason, "{cause}"),
        };
        reason
    }

    fn act(&mut self, now: Instant, action: Action) {
        match action {
            Action::Died {
                component, cause, ..
            } => {
                let reason = self.reason(component, cause);
                let name = self.name(component);
                log::error!("component {name} is dead: {reason}");
                if let Err(e) = self.parts.run.mark_problem(name, &reason) {
                    log::error!("component {name}: cannot mark the problem: {}", e.desc());
                }
            }
            Action::Recovered {
                component,
                was_dead,
            } => {
                let name = self.name(component);
                if was_dead {
                    log::warn!("component {name} is alive again");
                } else {
                    log::info!("component {name}: first heartbeat seen");
                }
                if let Err(e) = self.parts.run.clear_problem(name) {
                    log::error!(
                        "component {name}: cannot remove its problem file: {}",
                        e.desc()
                    );
                }
            }
            Action::StartRepair { component, attempt } => {
                self.start_repair(now, component, attempt)
            }
            Action::SignalRepair { component, kill } => {
                let signal = if kill { "SIGKILL" } else { "SIGTERM" };
                log::warn!(
                    "repair of {} overran its timeout: sending {signal}",
                    self.name(component)
                );
                if let Err(e) = self.repairs.signal(component, kill) {
                    log::error!(
                        "cannot signal the repair of {}: {}",
                        self.name(component),
                        e.desc()
                    );
                }
            }
            Action::EscalationWithheld { component, why } => match why {
                Withheld::Hold => log::error!(
                    "component {} is due for a board reset, withheld: reboot-loop hold (see `watchkeeper status`)",
                    self.name(component)
                ),
                Withheld::NotCritical => log::error!(
                    "component {} stays dead; it is not critical, so the board is not reset",
                    self.name(component)
                ),
            },
            Action::HoldEnded => log::warn!(
                "reboot-loop hold over: the board stayed up long enough; forced resets are allowed again"
            ),
            Action::ForceReset { component, cause } => self.force_reset(component, cause),
            Action::FallbackReboot => {
                log::error!(
                    "the board did not reset within {FALLBACK_TIMEOUTS} hardware timeouts: calling reboot(2)"
                );
                if self.parts.may_reboot {
                    nix::unistd::sync();
                    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
                } else {
                    log::warn!("watchdog device \"none\": not rebooting this host");
                }
            }
            Action::Feed => {
                let Some(watchdog) = self.parts.watchdog.as_mut() else {
                    return;
                };
                let fed = watchdog.keepalive();
                if fed.is_ok() {
                    // Only for observers: a failure here changes nothing for the board.
                    let _ = self.parts.run.mark_fed();
                }
                match fed {
                    Ok(()) if self.feed_failing => {
                        self.feed_failing = false;
                        log::warn!("feeding the watchdog works again");
                    }
                    Ok(()) => {}
                    Err(e) if !self.feed_failing => {
                        self.feed_failing = true;
                        log::error!("cannot feed the watchdog: {e}");
                    }
                    Err(_) => {}
                }
            }
        }
    }

    fn start_repair(&mut self, now: Instant, component: usize, attempt: u32) {
        let max = self
            .sup
            .policy(component)
            .and_then(|p| p.repair)
            .map_or(0, |r| r.max_attempts);
        let mut name = Name::new();
        let _ = name.push_str(self.name(component));
        let launcher = match self.watched.get(component) {
            Some(w) => w.launcher.as_ref(),
            None => self.hearts.as_ref().and_then(|h| h.launcher.as_ref()),
        };
        let Some(launcher) = launcher else { return };
        match self.repairs.start(component, &name, launcher) {
            Ok(pid) => log::warn!("repairing {name}: attempt {attempt} of {max}, pid {pid}"),
            Err(e) => {
                log::error!("cannot start the repair of {name}: {e}");
                self.sup.repair_exited(component, now);
            }
        }
    }

    fn force_reset(&mut self, component: usize, cause: Cause) {
        let reason = self.reason(component, cause);
        let mut name = Name::new();
        let _ = name.push_str(self.name(component));
        let uptime = self.parts.clock.uptime();
        if let Err(e) = self.parts.state.record_forced_reset(&name, &reason, uptime) {
            log::error!(
                "could not record the reset reason (component {name}: {reason}) in the reset history: {e}; the next boot will not know why it was reset"
            );
        }
        self.led_set(true);
        log::error!("forcing a board reset: component {name}: {reason}");
        match self.parts.watchdog.as_mut() {
            Some(watchdog) => {
                let timeout = watchdog.shorten_for_reset();
                log::error!("stopped feeding the watchdog: the board resets within {timeout:?}");
            }
            None => log::error!(
                "no watchdog device is open: waiting {:?} for the fallback reboot",
                self.hardware_timeout * FALLBACK_TIMEOUTS
            ),
        }
    }

    fn led_set(&mut self, on: bool) {
        match self.parts.led.set(on) {
            Ok(()) => self.led_failing = false,
            Err(e) if !self.led_failing => {
                self.led_failing = true;
                log::error!("cannot drive the fault LED: {e}");
            }
            Err(_) => {}
        }
    }

    fn update_led(&mut self, now: Instant) -> Instant {
        let pattern = self.sup.led_pattern();
        if pattern != self.shown.0 {
            self.shown = (pattern, now);
            log::info!("fault LED: {pattern}");
        }
        let (on, lasts) = pattern.level_at(now.since(self.shown.1));
        self.led_set(on);
        lasts.map_or(Instant::NEVER, |d| now.saturating_add(d))
    }

    /// Rewrites the status snapshot that `watchkeeper status` reads.
    fn write_status(&mut self, now: Instant) {
        let mut out = core::mem::take(&mut *self.status);
        if self.render_status(now, &mut out).is_err() {
            log::error!("the status snapshot does not fit in {MAX_STATUS_LEN} bytes");
        }
        if let Err(e) = self.parts.run.write_status(&out) {
            log::error!(
                "cannot write the status file in {}: {}",
                self.parts.run.path().display(),
                e.desc()
            );
        }
        *self.status = out;
        self.written_generation = Some(self.sup.generation());
    }

    fn render_status(
        &self,
        now: Instant,
        out: &mut heapless::String<MAX_STATUS_LEN>,
    ) -> core::fmt::Result {
        let agent = snapshot::AgentRecord {
            identity: snapshot::Identity {
                pid: self.identity.pid,
                start_time: self.identity.start_time,
                boot_id: &self.identity.boot_id,
            },
            written_ms: now.as_nanos() / 1_000_000,
            led: self.sup.led_pattern(),
            hold: self.sup.in_hold(),
            resetting: self.sup.resetting(),
            config: self.config_path.as_os_str().as_bytes(),
        };
        let mut writer = snapshot::Writer::new(out, &agent)?;
        for index in self.sup.indices() {
            let Some(view) = self.sup.view(index) else {
                continue;
            };
            writer.component(&snapshot::ComponentRecord {
                name: self.name(index),
                position: index + 1,
                state: view.state,
                since_ms: view.since.as_nanos() / 1_000_000,
                repairs: view.repair_attempts,
                reason: view.cause.map(|cause| self.reason(index, cause)),
            });
        }
        writer.finish()
    }
}
