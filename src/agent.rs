//! The agent loop: the thin shell that carries the core's decisions out.
//!
//! The loop waits ([`Agent::wait`]) until the earliest of the core's next deadline, the
//! LED's next edge, the hearts directory's next listing and the agent's next upkeep, or
//! until a pinned process exits ([`Pins`]) or the hearts directory's entries change
//! ([`hearts`]). Each pass then reaps finished repairs, reports exits, looks at the
//! heartbeats (and pidfiles) the core says are due, brings the hearts directory in step,
//! lets the [`Supervisor`] decide, and carries out its actions: problem files, repairs,
//! logging, feeding, the reset path. Every [`UPKEEP_EVERY`] `check_interval`s the next
//! pass (a feed, most often, so that the upkeep costs no wake-up of its own) is also the
//! agent's upkeep: held signals are read, the run, state and hearts directories checked,
//! an operator's clear-hold request taken.
//!
//! Invariants: nothing here allocates after [`Agent::new`] returns (every buffer and table
//! is sized at startup); the watchdog is fed only through the core's `Feed`, which follows a
//! pass that looked at everything due; on the reset path the reason is persisted before
//! feeding stops, and the device is kept open without the magic 'V'. The status snapshot
//! and the metrics file (`[export]`) are rewritten after a turn that changed what they show.

mod confirming;
mod hearts;
mod listening;

use core::fmt::{self, Write as _};
use core::time::Duration;
use std::os::unix::ffi::OsStrExt as _;
use std::path::PathBuf;

use embedded_hal::digital::OutputPin;
use rustix::event::{PollFd, PollFlags};

use crate::cli::status;
use crate::config::Config;
use crate::core::boot::Phase;
use crate::core::history::End;
use crate::core::pattern::Pattern;
use crate::core::supervisor::{
    Action, Cause, FALLBACK_TIMEOUTS, Look, Observation, Process, Settings, Supervisor, Withheld,
};
use crate::core::time::Instant;
use crate::limits::{MAX_COMPONENTS, MAX_NAME_LEN, MAX_REASON_LEN, MAX_STATUS_LEN};
use crate::metrics;
use crate::os::clock::Clock;
use crate::os::confirm::TrialRun;
use crate::os::heartbeat;
use crate::os::led::{FaultLed, PinError};
use crate::os::notify::{FEED_FAILED_STATUS, Notifier};
use crate::os::pidfd::Pins;
use crate::os::repair::{self, Repairs};
use crate::os::rundir::{Checked, RunDir};
use crate::os::spawn::PrepareError;
use crate::os::state::State;
use crate::os::textfile::Textfile;
use crate::os::watchdog::{self, Takeover, Watchdog};
use crate::snapshot;
use confirming::Confirming;
pub use confirming::resumed_phase;
use hearts::Hearts;
use listening::{Listening, Read};

/// Most actions one tick can produce: per component at most three (a change of health, a
/// repair step, a withheld escalation), plus the global ones (a hold ended, then a reset or
/// a feed; the fallback reboot comes alone), with room to spare.
const MAX_ACTIONS: usize = 3 * MAX_COMPONENTS + 4;
/// The agent's upkeep (its own directories, clear-hold requests, held signals) comes once
/// in this many `check_interval`s: none of it is a component's life, all of it is for
/// people, who do not tell one second from five; each costs a handful of syscalls that
/// would otherwise be most of a healthy agent's CPU.
pub const UPKEEP_EVERY: u32 = 5;
/// A component's name, held without allocating (validated where it came in).
type NameBuf = heapless::String<MAX_NAME_LEN>;
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
    /// The service manager to tell that the board is guarded, after the first feed.
    pub notifier: Option<Notifier>,
    /// Whether the watchdog was already running when the agent opened it.
    pub takeover: Takeover,
    /// With `[boot]`: where this boot's confirmation stands, and the trial check started
    /// for a boot still to be checked.
    pub boot_phase: Phase,
    pub trial: Option<TrialRun>,
}

/// Why the agent could not be built from its config (a startup error).
#[derive(Debug)]
pub enum StartError {
    /// More components than the supervisor holds.
    TooManyComponents,
    /// A component name longer than the agent keeps.
    /// A component's repair command cannot be prepared for launching.
    ComponentRepair {
        component: String,
        error: PrepareError,
    },
    /// The `[hearts]` repair command cannot be prepared for launching.
    HeartsRepair(PrepareError),
    /// The `[boot]` confirm command cannot be prepared for launching.
    Confirm(PrepareError),
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StartError::TooManyComponents => f.write_str("too many components"),
            StartError::ComponentRepair { component, error } => {
                write!(
                    f,
                    "component {component}: cannot prepare its repair: {error}"
                )
            }
            StartError::HeartsRepair(error) => {
                write!(f, "[hearts]: cannot prepare the repair: {error}")
            }
            StartError::Confirm(error) => {
                write!(f, "[boot]: cannot prepare the confirm command: {error}")
            }
        }
    }
}

/// A configured component: where to look.
struct Watched {
    /// `None` for a component that beats only through sd_notify messages.
    heartbeat: Option<PathBuf>,
    pidfile: Option<PathBuf>,
    launcher: Option<repair::Launcher>,
    refused: bool,
}

pub struct Agent<P: OutputPin, C: Clock> {
    sup: Box<Supervisor>,
    watched: Vec<Watched>,
    pins: Pins,
    /// Components whose pinned process was seen to exit at the last wake-up.
    exited: Box<heapless::Vec<usize, MAX_COMPONENTS>>,
    /// Something became ready at the last wake-up: pass now, whatever the deadline.
    woken: bool,
    /// The upkeep is due from this instant, and taken by the first pass after it.
    next_upkeep: Instant,
    upkeep_interval: Duration,
    /// How long after it is due the upkeep waits for a pass to ride on (a feed comes within
    /// a `feed_interval`) before it wakes the loop itself: at most one upkeep interval.
    upkeep_wait: Duration,
    names: Vec<NameBuf>,
    hearts: Option<Hearts>,
    /// The notify socket and its daemons, when a component listens.
    listening: Option<Listening>,
    /// The boot's confirmation, with `[boot]`.
    confirming: Option<Confirming>,
    repairs: Repairs,
    parts: Parts<P, C>,
    actions: Box<heapless::Vec<Action, MAX_ACTIONS>>,
    /// The snapshot's buffer; `None` only while [`Agent::write_status`] fills it (taking
    /// the box out moves a pointer: a 128 KiB value on the stack would touch as many
    /// pages of it).
    status: Option<Box<heapless::String<MAX_STATUS_LEN>>>,
    shown: (Pattern, Instant),
    next_pass: Instant,
    written_generation: Option<u64>,
    feed_failing: bool,
    led_failing: bool,
    config_path: PathBuf,
    hardware_timeout: Duration,
    /// Written into the snapshot so that `status` can tell this process from a later one.
    identity: snapshot::Identity<crate::os::state::BootId>,
    /// The fleet's metrics file, with `[export]`.
    textfile: Option<Textfile>,
    /// What the metrics file was last written from: the supervisor's generation, the
    /// latest feed's lateness in [`LATENESS_STEP_MS`] steps, and the wall clock's steps
    /// (its times are Unix times).
    exported: Option<(u64, u64, u64)>,
    /// The wall clock's steps as last looked at.
    wall_steps: u64,
    /// Unix seconds when the agent started.
    started_wall: i64,
}

/// The feed lateness the metrics file shows is rewritten when it grows by this much: a
/// maximum grows in small steps at first, and a few milliseconds say nothing to a fleet.
const LATENESS_STEP_MS: u128 = 10;

impl<P: OutputPin<Error = PinError>, C: Clock> Agent<P, C> {
    /// Builds the agent for `config` (all allocation happens here).
    pub fn new(config: &Config, mut parts: Parts<P, C>) -> Result<Self, StartError> {
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
        let launcher = |argv: &[std::ffi::OsString]| {
            repair::launcher(&parts.agent_binary, parts.run.path(), argv)
        };
        let mut watched = Vec::with_capacity(config.components.len());
        let mut names = Vec::with_capacity(config.components.len());
        for c in &config.components {
            sup.add(c.policy, now)
                .map_err(|_| StartError::TooManyComponents)?;
            if let Some(heartbeat) = &c.heartbeat
                && heartbeat.parent().is_some_and(|p| !p.is_dir())
            {
                log::warn!(
                    "component {}: the directory of its heartbeat {} does not exist (yet); until it does the component counts as silent",
                    c.name,
                    heartbeat.display()
                );
            }
            watched.push(Watched {
                heartbeat: c.heartbeat.clone(),
                pidfile: config.pidfile(c),
                launcher: c
                    .repair
                    .as_ref()
                    .map(|r| launcher(&r.argv))
                    .transpose()
                    .map_err(|error| StartError::ComponentRepair {
                        component: c.name.as_str().to_owned(),
                        error,
                    })?,
                refused: false,
            });
            names.push(c.name.text().clone());
        }
        let hearts = match &config.hearts {
            Some(h) => {
                let repair = h
                    .repair
                    .as_ref()
                    .map(|r| launcher(&r.argv))
                    .transpose()
                    .map_err(StartError::HeartsRepair)?;
                Some(Hearts::new(h, repair, now, config.agent.check_interval))
            }
            None => None,
        };
        let identity = status::agent_identity();
        let listening = Listening::new(config, &mut sup, &parts.run, &identity.boot_id);
        if listening.as_ref().is_some_and(Listening::broken) {
            sup.set_fault(true);
        }
        let confirming = Confirming::new(
            config,
            &mut sup,
            parts.trial.take(),
            parts.boot_phase,
            &parts.agent_binary,
            (now, parts.clock.uptime()),
        )
        .map_err(StartError::Confirm)?;
        let most_components = if config.hearts.is_some() {
            MAX_COMPONENTS
        } else {
            config.components.len()
        };
        let textfile = config
            .export
            .as_ref()
            .map(|e| Textfile::new(&e.textfile, metrics::capacity(most_components)));
        let started_wall = parts.clock.wall();
        Ok(Agent {
            sup,
            watched,
            pins: Pins::new(config.components.len()),
            exited: Box::default(),
            woken: false,
            next_upkeep: now,
            upkeep_interval: config.agent.check_interval * UPKEEP_EVERY,
            upkeep_wait: feed_interval.min(config.agent.check_interval * UPKEEP_EVERY),
            names,
            hearts,
            listening,
            confirming,
            repairs: Repairs::default(),
            actions: Box::default(),
            status: Some(Box::default()),
            shown: (Pattern::Healthy, now),
            next_pass: now,
            written_generation: None,
            feed_failing: false,
            led_failing: false,
            config_path: config.path.clone(),
            hardware_timeout,
            identity,
            textfile,
            exported: None,
            wall_steps: 0,
            started_wall,
            parts,
        })
    }

    /// Runs forever. There is no way out but a crash, by design.
    pub fn run(mut self) -> ! {
        loop {
            let wake = self.step();
            self.wait(wake);
        }
    }

    /// One turn of the loop: a pass if one is due (or something woke the loop), the LED,
    /// the status snapshot, the metrics file. Returns when the loop should wake next.
    pub fn step(&mut self) -> Instant {
        let now = self.parts.clock.now();
        let woken = core::mem::take(&mut self.woken);
        if woken || now >= self.next_pass {
            self.pass(now);
            let listing = self
                .hearts
                .as_ref()
                .map_or(Instant::NEVER, |h| h.next_deadline());
            let upkeep = self.next_upkeep.saturating_add(self.upkeep_wait);
            self.next_pass = self.sup.next_deadline().min(upkeep).min(listing);
        }
        let led_edge = self.update_led(now);
        if self.listening.as_mut().is_some_and(Listening::take_changed) {
            self.written_generation = None;
        }
        if self.written_generation != Some(self.sup.generation()) {
            self.write_status(now);
        }
        self.export_metrics();
        self.next_pass.min(led_edge)
    }

    /// Waits until `until`, or until a pinned process exits, the hearts directory's
    /// entries change or a datagram comes to the notify socket; what became ready is
    /// handled by the next [`Agent::step`].
    pub fn wait(&mut self, until: Instant) {
        const MAX_WAITED: usize = MAX_COMPONENTS + 3;
        let Agent {
            pins,
            hearts,
            listening,
            confirming,
            exited,
            woken,
            parts,
            ..
        } = self;
        let (watch_ready, datagram) = {
            let mut fds: heapless::Vec<PollFd<'_>, MAX_WAITED> = heapless::Vec::new();
            let watch = hearts.as_ref().and_then(|h| h.watch_fd());
            let watching = watch.is_some();
            let socket = listening.as_ref().and_then(|l| l.socket().fd());
            let listens = socket.is_some();
            // Cannot overflow: one watch, one socket, one trial check and at most one pin
            // per component. The trial check comes last: it only wakes the loop.
            if let Some(fd) = watch {
                let _ = fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
            if let Some(fd) = socket {
                let _ = fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
            for (_, fd) in pins.pinned() {
                let _ = fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
            let trial = confirming.as_ref().and_then(Confirming::fd);
            let checking = trial.is_some();
            if let Some(fd) = trial {
                let _ = fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
            }
            parts.clock.wait_until(until, &mut fds);
            let mut ready = fds.iter().map(|fd| !fd.revents().is_empty());
            let watch_ready = watching && ready.next() == Some(true);
            let datagram = listens && ready.next() == Some(true);
            for ((index, _), is_ready) in pins.pinned().zip(ready.by_ref()) {
                if is_ready {
                    let _ = exited.push(index);
                }
            }
            let checked = checking && ready.next() == Some(true);
            (watch_ready, datagram || checked)
        };
        if watch_ready && let Some(h) = hearts.as_mut() {
            h.woken();
        }
        *woken |= watch_ready || datagram || !exited.is_empty();
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
                .and_then(|h| h.name(index))
                .unwrap_or("?"),
        }
    }

    /// One pass: at an upkeep the signals, directories and requests; then reap, exits,
    /// the looks that are due, tick, act.
    fn pass(&mut self, now: Instant) {
        let upkeep = now >= self.next_upkeep;
        if upkeep {
            self.next_upkeep = now.saturating_add(self.upkeep_interval);
            crate::os::signals::consume(now);
            if let Some(listening) = self.listening.as_mut() {
                listening.upkeep(&mut self.sup);
            }
            self.check_dirs(now);
            self.clear_hold_if_requested();
            if self.textfile.as_mut().is_some_and(Textfile::check) {
                self.exported = None;
            }
        }
        self.reap(now);
        self.report_exits(now);
        self.read_notify(now);
        let hearts_due = match self.hearts.as_mut() {
            Some(hearts) => hearts.due(now, upkeep, &self.sup),
            None => false,
        };
        if hearts_due || (0..self.watched.len()).any(|index| self.sup.look_due(index, now)) {
            let steps = self.parts.clock.wall_steps();
            let look = Look {
                at: now,
                wall_offset: self.parts.clock.wall_offset(),
                steps,
            };
            self.observe(look);
            if let Some(hearts) = self.hearts.as_mut() {
                hearts.scan(look, &mut self.sup, &self.parts.run, &self.names);
            }
            let after = self.parts.clock.wall_steps();
            if after != steps {
                self.sup.wall_clock_stepped(now, after);
            }
            self.wall_steps = after;
        }
        if let Some(confirming) = self.confirming.as_mut() {
            let uptime = self.parts.clock.uptime();
            confirming.pass(now, &mut self.sup, &mut self.parts.state, uptime);
        }
        self.tick(now);
        self.act_all(now);
    }

    /// Tells the supervisor of the pinned processes seen to exit.
    fn report_exits(&mut self, now: Instant) {
        while let Some(index) = self.exited.pop() {
            if let Some(pid) = self.pins.forget(index) {
                self.sup.process_exited(index, pid, now);
            }
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
            if let Some(hearts) = self.hearts.as_mut() {
                hearts.reread_refused();
            }
            self.written_generation = None;
        }
        self.parts.state.check(now);
        self.sup.set_fault(
            self.parts.fault
                || self.parts.run.broken().is_some()
                || self.parts.state.fault()
                || self.listening.as_ref().is_some_and(Listening::broken),
        );
    }

    /// Carries out an operator's `clear-hold` request, if one is waiting.
    fn clear_hold_if_requested(&mut self) {
        if !self.parts.run.take_clear_hold_request() {
            return;
        }
        if self.sup.in_hold() {
            self.sup.clear_hold();
            if let Err(e) = self.parts.state.record_hold_cleared() {
                log::error!("hold cleared, but not recorded: {e}");
            }
            log::warn!("reboot-loop hold cleared by an operator: forced resets are allowed again");
        } else {
            log::info!("clear-hold requested, but there is no hold");
        }
    }

    /// Tells the supervisor of the repairs that exited.
    fn reap(&mut self, now: Instant) {
        while let Some((index, exit)) = self.repairs.reap() {
            self.sup.repair_exited(index, now);
            log::info!("repair of {} exited ({exit})", self.name(index));
        }
    }

    /// Stats the heartbeat (and reads the pidfile) of every configured component that is
    /// due for a look.
    fn observe(&mut self, look: Look) {
        for index in 0..self.watched.len() {
            if self.sup.look_due(index, look.at) {
                self.observe_one(index, look);
            }
        }
    }

    fn observe_one(&mut self, index: usize, look: Look) {
        let w = &mut self.watched[index];
        let heartbeat = match &w.heartbeat {
            None => None,
            Some(path) => match heartbeat::stamp(path) {
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
                            path.display()
                        );
                    }
                    None
                }
            },
        };
        let (process, poll_process) = match w.pidfile.as_deref() {
            Some(pidfile) => self.pins.follow(index, heartbeat::process(pidfile)),
            None => (Process::Unknown, false),
        };
        if let Some(listening) = self.listening.as_mut() {
            let name = self.names.get(index).map_or("?", |n| n.as_str());
            listening.process_seen(index, process, look.at, &mut self.sup, name);
        }
        self.sup.observe(
            index,
            look,
            Observation {
                heartbeat,
                process,
                poll_process,
            },
        );
    }

    /// Reads the notify socket, within this wake-up's budget. A datagram from a process
    /// that no last look knew as a listening component's is held while their pidfiles are
    /// read again (a daemon that just started sends before the next look), once per
    /// wake-up, so that a flood from strangers costs one round of looks.
    fn read_notify(&mut self, now: Instant) {
        let Some(listening) = self.listening.as_mut() else {
            return;
        };
        listening.woken();
        let mut looked_again = false;
        loop {
            let Some(listening) = self.listening.as_mut() else {
                return;
            };
            match listening.read(now, &mut self.sup, &self.names) {
                Read::Done => return,
                Read::Unknown => {
                    if !looked_again {
                        looked_again = true;
                        let look = Look {
                            at: now,
                            wall_offset: self.parts.clock.wall_offset(),
                            steps: self.parts.clock.wall_steps(),
                        };
                        for index in 0..self.watched.len() {
                            if self.listening.as_ref().is_some_and(|l| l.listens(index)) {
                                self.observe_one(index, look);
                            }
                        }
                    }
                    if let Some(listening) = self.listening.as_mut() {
                        listening.settle(now, &mut self.sup, &self.names);
                    }
                }
            }
        }
    }

    /// Lets the supervisor decide, into `actions`.
    fn tick(&mut self, now: Instant) {
        let actions = &mut self.actions;
        actions.clear();
        self.sup.tick(now, |action| {
            // Cannot overflow: MAX_ACTIONS covers the most one tick can decide.
            let _ = actions.push(action);
        });
    }

    fn act_all(&mut self, now: Instant) {
        for i in 0..self.actions.len() {
            let action = self.actions[i];
            self.act(now, action);
        }
    }

    fn reason(&self, index: usize, cause: Cause) -> Reason {
        let mut reason = Reason::new();
        let heartbeat = self.watched.get(index).and_then(|w| w.heartbeat.as_ref());
        let listens = self.sup.policy(index).is_some_and(|p| p.awaits_ready);
        let timeout = self.sup.policy(index).map_or(Duration::ZERO, |p| p.timeout);
        let _ = match (cause, heartbeat) {
            (Cause::Silent, Some(h)) if listens => write!(
                reason,
                "no WATCHDOG=1 and heartbeat {} not touched for {timeout:?} (its timeout)",
                h.display()
            ),
            (Cause::Silent, Some(h)) => write!(
                reason,
                "heartbeat {} not touched for {timeout:?} (its timeout)",
                h.display()
            ),
            (Cause::Silent, None) => write!(reason, "no WATCHDOG=1 for {timeout:?} (its timeout)"),
            (Cause::NoFirstBeat, Some(h)) => write!(
                reason,
                "no heartbeat at {} within the startup grace period",
                h.display()
            ),
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
                } else if self.sup.policy(component).is_some_and(|p| p.awaits_ready) {
                    log::info!("component {name}: ready (READY=1)");
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
            Action::Boot(step) => {
                if let Some(confirming) = self.confirming.as_mut() {
                    let uptime = self.parts.clock.uptime();
                    confirming.act(step, &mut self.sup, &mut self.parts.state, uptime);
                }
            }
            Action::DeadlineReset { culprit } => self.deadline_reset(culprit),
            Action::FallbackReboot => {
                log::error!(
                    "the board did not reset within {FALLBACK_TIMEOUTS} hardware timeouts: calling reboot(2)"
                );
                if self.parts.may_reboot {
                    watchdog::fallback_reboot();
                } else {
                    log::warn!("watchdog device \"none\": not rebooting this host");
                }
            }
            Action::Feed => {
                let Some(watchdog) = self.parts.watchdog.as_mut() else {
                    // Unguarded, and its status says so: a boot that waited for it forever
                    // would be worse.
                    if let Some(notifier) = self.parts.notifier.as_mut() {
                        notifier.ready();
                    }
                    return;
                };
                let fed = watchdog.keepalive();
                if fed.is_ok() {
                    // Only for observers: a failure here changes nothing for the board.
                    let _ = self.parts.run.mark_fed();
                }
                if let Some(notifier) = self.parts.notifier.as_mut() {
                    match fed {
                        Ok(()) => notifier.ready(),
                        Err(_) => notifier.ready_with(FEED_FAILED_STATUS),
                    }
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
        let mut name = NameBuf::new();
        let _ = name.push_str(self.name(component));
        let launcher = match self.watched.get(component) {
            Some(w) => w.launcher.as_ref(),
            None => self.hearts.as_ref().and_then(|h| h.launcher()),
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
        let mut name = NameBuf::new();
        let _ = name.push_str(self.name(component));
        self.reset_board(&name, &reason);
    }

    /// The boot was not healthy for `confirm_after` by its deadline: a reset the bootloader
    /// counts as a failed boot, blamed on `culprit`.
    fn deadline_reset(&mut self, culprit: Option<usize>) {
        let mut name = NameBuf::new();
        let mut reason = Reason::new();
        let after = self
            .sup
            .boot_view()
            .map_or(Duration::ZERO, |b| b.confirm_after);
        let _ = write!(
            reason,
            "boot not confirmed: critical components not all alive for {after:?} by the confirm deadline"
        );
        if let Some(index) = culprit {
            let _ = name.push_str(self.name(index));
            if let Some(view) = self.sup.view(index) {
                let _ = write!(reason, "; {name} {}", view.state);
                if let Some(cause) = view.cause {
                    let _ = write!(reason, ": {}", self.reason(index, cause));
                }
            }
        }
        self.reset_board(&name, &reason);
    }

    /// Records why, then stops feeding: the board resets within the hardware timeout.
    fn reset_board(&mut self, name: &str, reason: &str) {
        let uptime = self.parts.clock.uptime();
        if let Err(e) = self.parts.state.record_forced_reset(name, reason, uptime) {
            log::error!(
                "could not record the reset reason (component {name}: {reason}) in the reset history: {e}; the next boot will not know why it was reset"
            );
        }
        self.led_set(true);
        if name.is_empty() {
            log::error!("forcing a board reset: {reason}");
        } else {
            log::error!("forcing a board reset: component {name}: {reason}");
        }
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
        if !self.parts.led.visible() {
            return Instant::NEVER;
        }
        let (on, lasts) = pattern.level_at(now.since(self.shown.1));
        self.led_set(on);
        lasts.map_or(Instant::NEVER, |d| now.saturating_add(d))
    }

    /// Rewrites the status snapshot that `watchkeeper status` reads.
    fn write_status(&mut self, now: Instant) {
        let Some(mut out) = self.status.take() else {
            return;
        };
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
        self.status = Some(out);
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
            written_ms: snapshot::millis(now),
            led: self.sup.led_pattern(),
            hold: self.sup.in_hold(),
            resetting: self.sup.resetting(),
            config: self.config_path.as_os_str().as_bytes(),
            takeover: self.parts.takeover.as_str(),
        };
        let mut writer = snapshot::Writer::new(out, &agent)?;
        if let Some(b) = self.sup.boot_view() {
            let (attempt, retry_ms) = match b.phase {
                Phase::Confirming { attempt } => (attempt, None),
                Phase::Retrying { attempt, until } => (attempt, Some(snapshot::millis(until))),
                _ => (0, None),
            };
            writer.boot(&snapshot::Boot {
                phase: b.phase.word(),
                attempt,
                unknown: b.unknown,
                healthy_since_ms: b.healthy_since.map(snapshot::millis),
                confirm_after_ms: u64::try_from(b.confirm_after.as_millis()).unwrap_or(u64::MAX),
                deadline_ms: b.deadline.map(snapshot::millis),
                retry_ms,
            })?;
        }
        for index in self.sup.indices() {
            let Some(view) = self.sup.view(index) else {
                continue;
            };
            writer.component(&snapshot::ComponentRecord {
                name: self.name(index),
                position: index + 1,
                state: view.state,
                since_ms: snapshot::millis(view.since),
                repairs: view.repair_attempts,
                reason: view.cause.map(|cause| self.reason(index, cause)),
                daemon: self
                    .listening
                    .as_ref()
                    .and_then(|l| l.record(index, &self.sup)),
            });
        }
        writer.finish()
    }

    /// Rewrites the metrics file when anything it shows has changed (see [`Self::exported`]).
    fn export_metrics(&mut self) {
        let lateness = self.sup.feed_lateness_max().as_millis() / LATENESS_STEP_MS;
        let key = (
            self.sup.generation(),
            u64::try_from(lateness).unwrap_or(u64::MAX),
            self.wall_steps,
        );
        if self.exported == Some(key) {
            return;
        }
        let Some(mut textfile) = self.textfile.take() else {
            return;
        };
        self.exported = Some(key);
        if self.render_metrics(textfile.buffer()).is_ok() {
            textfile.write();
        } else {
            log::error!(
                "{}: the metrics do not fit their buffer; the file is left as it was",
                textfile.path().display()
            );
        }
        self.textfile = Some(textfile);
    }

    fn render_metrics(&self, out: &mut impl fmt::Write) -> fmt::Result {
        let history = self.parts.state.history();
        let last_reset = history
            .boots()
            .rev()
            .find(|b| b.end != End::Running)
            .map(|b| metrics::LastReset {
                boot: b.number,
                end: b.end.as_str(),
                component: &b.component,
                reason: &b.reason,
            });
        let watchdog = self.parts.watchdog.as_ref().and_then(|w| w.device());
        let board = metrics::Board {
            version: env!("CARGO_PKG_VERSION"),
            revision: env!("WATCHKEEPER_GIT"),
            started: self.started_wall,
            boot: history.current().map(|b| b.number),
            ends: history.ends(),
            last_reset,
            hold: self.sup.in_hold(),
            resetting: self.sup.resetting(),
            watchdog: watchdog.map(|(path, identity)| metrics::Device {
                path: path.to_str().unwrap_or_default(),
                identity,
            }),
            watchdog_timeout: self.hardware_timeout,
            feed_lateness_max: self.sup.feed_lateness_max(),
            boot_phase: self.sup.boot_view().map(|b| b.phase.word()),
        };
        let wall_offset = i128::from(self.parts.clock.wall_offset());
        let components = self.sup.indices().filter_map(|index| {
            let view = self.sup.view(index)?;
            Some(metrics::Component {
                name: self.name(index),
                state: view.state,
                since: metrics::Seconds::from_nanos(
                    i128::from(view.since.as_nanos()) + wall_offset,
                ),
                counts: view.counts,
            })
        });
        metrics::write(out, &board, components)
    }
}
