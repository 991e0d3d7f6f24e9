//! The pure supervision core: observations and time in, decisions out.
//!
//! The shell wakes at [`Supervisor::next_deadline`] (or when a watched process exits,
//! [`Supervisor::process_exited`]), stats the heartbeat file and pidfile of each component
//! that [`Supervisor::look_due`] names, hands the results to [`Supervisor::observe`], then
//! calls [`Supervisor::tick`] with the current monotonic instant; the decisions come out as
//! [`Action`]s through a callback. There is no I/O, no clock and no allocation here, so
//! tests drive hours of simulated time in milliseconds.
//!
//! Invariants:
//! - A beat is dated from the heartbeat's ctime, translated to the monotonic clock through
//!   the wall-minus-monotonic offset of the look that saw it, and clamped into the window
//!   between the previous look and this one: never older than a look that saw the file
//!   unchanged, never in the future. A window that held a wall-clock step dates its beat at
//!   the look. So a step can make a death late by at most one window, never early.
//! - An alive component is looked at when its deadline is near, not at every pass; a death
//!   is declared at the deadline itself. Starting and dead components, and processes no
//!   descriptor reports the exit of, are looked at every `check_interval`.
//! - `Feed` is only emitted by `tick`, which the shell calls only after a complete pass, at
//!   most once per `feed_interval`, and never once a reset has been decided.
//! - A critical component dead for `reset_after` (or past its repair budget) forces a reset
//!   unless the reboot-loop guard holds; non-critical components never do.
//! - A trial boot (see [`crate::core::boot`]) that is not confirmed suspends the hold: its
//!   resets are the bootloader's to count. Its missed deadline is a reset like any other.
//! - Once a reset is decided nothing is fed again; after four hardware timeouts without a
//!   reset the fallback reboot is requested, once.

use core::fmt;
use core::time::Duration;

use crate::core::boot::{BootAction, BootView, Gate, Trial};
use crate::core::pattern::Pattern;
use crate::core::time::Instant;
use crate::limits::MAX_COMPONENTS;

/// Time given to a repair between SIGTERM and SIGKILL.
pub const REPAIR_KILL_GRACE: Duration = Duration::from_secs(2);
/// How many hardware timeouts to wait for the board to reset before calling `reboot(2)`.
pub const FALLBACK_TIMEOUTS: u32 = 4;

/// Identity of a heartbeat file's last change: any touch changes at least one field, and
/// sets `ctime` to the kernel's wall clock, which (unlike `mtime`) no one can set by hand.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Stamp {
    pub mtime: (i64, i64),
    pub ctime: (i64, i64),
    pub size: i64,
    pub inode: u64,
    pub device: u64,
}

/// What the component's pidfile says, checked against `/proc`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Process {
    /// No pidfile configured, or none written yet: no opinion.
    Unknown,
    /// The pid exists, with this start time (clock ticks after boot, from `/proc/PID/stat`).
    Running { pid: i32, start_time: u64 },
    /// The pidfile names a pid that does not exist.
    Gone { pid: i32 },
}

/// One pass's look at one component.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observation {
    /// `None` when the heartbeat file does not exist (silence, not an error).
    pub heartbeat: Option<Stamp>,
    pub process: Process,
    /// The process must be polled: a pidfile whose process no descriptor pins, so its
    /// exit is not reported by [`Supervisor::process_exited`].
    pub poll_process: bool,
}

/// When and against what wall clock a pass looked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Look {
    /// The pass's instant, taken before anything was looked at.
    pub at: Instant,
    /// Wall clock minus monotonic clock, in nanoseconds, sampled before the files were
    /// looked at (wall first, so a delay between the two readings only dates beats later).
    pub wall_offset: i64,
    /// Wall-clock steps seen since startup, counted after the files were looked at, so a
    /// step before or during the look is never missed.
    pub steps: u64,
}

/// Why a component is dead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// No beat within the startup grace period.
    NoFirstBeat,
    /// No beat within the heartbeat timeout.
    Silent,
    /// Its process is gone.
    ProcessGone { pid: i32 },
    /// Its pid now belongs to another process (start time changed).
    PidReused { pid: i32 },
    /// A notify component: no `READY=1` within the startup grace period.
    NotReady,
    /// A notify component declared itself failed (`WATCHDOG=trigger`).
    Triggered,
}

impl fmt::Display for Cause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Cause::NoFirstBeat => f.write_str("no heartbeat within the startup grace period"),
            Cause::Silent => f.write_str("heartbeat not touched within its timeout"),
            Cause::ProcessGone { pid } => write!(f, "process {pid} from the pidfile is gone"),
            Cause::PidReused { pid } => {
                write!(
                    f,
                    "process {pid} from the pidfile died (pid reused by another process)"
                )
            }
            Cause::NotReady => f.write_str("no READY=1 within the startup grace period"),
            Cause::Triggered => f.write_str("it reported its own failure (WATCHDOG=trigger)"),
        }
    }
}

/// How a component is repaired.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RepairPolicy {
    /// A repair still running after this is sent SIGTERM, then SIGKILL.
    pub timeout: Duration,
    /// Wait after the first failed attempt; doubled per attempt, with jitter.
    pub backoff_initial: Duration,
    /// Cap on the wait between attempts.
    pub backoff_max: Duration,
    /// Attempts per death; when spent (and the last wait is over), escalate.
    pub max_attempts: u32,
}

/// How one component is judged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub timeout: Duration,
    pub grace: Duration,
    pub reset_after: Duration,
    pub critical: bool,
    pub repair: Option<RepairPolicy>,
    /// A notify component: only `READY=1` ends its startup, as for a systemd
    /// `Type=notify` service; its beats before that say it is starting, not alive.
    pub awaits_ready: bool,
}

/// Agent-wide timing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Minimum time between feeds of the hardware watchdog.
    pub feed_interval: Duration,
    /// The safety net: how often what no deadline or event covers is looked at (starting
    /// and dead components, polled processes).
    pub check_interval: Duration,
    /// The hardware watchdog's timeout, as the driver reported it.
    pub hardware_timeout: Duration,
}

/// Why an escalation was not carried out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Withheld {
    /// The reboot-loop guard holds resets back.
    Hold,
    /// The component is not critical: LED and log only.
    NotCritical,
}

/// A decision for the shell to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// The component is dead (since `since`): mark the problem, log it.
    Died {
        component: usize,
        cause: Cause,
        since: Instant,
    },
    /// The component beats (again): remove its problem file if any, log if it was dead.
    Recovered { component: usize, was_dead: bool },
    /// Start repair attempt `attempt` (1-based).
    StartRepair { component: usize, attempt: u32 },
    /// The repair outlived its timeout: SIGTERM, or SIGKILL when `kill`.
    SignalRepair { component: usize, kill: bool },
    /// The component is due for a reset that will not be forced; said once per death.
    EscalationWithheld { component: usize, why: Withheld },
    /// The reboot-loop guard's hold is over: resets are allowed again.
    HoldEnded,
    /// Reset the board because of this component. Nothing is fed after this.
    ForceReset { component: usize, cause: Cause },
    /// The hardware did not reset the board in time: call `reboot(2)`.
    FallbackReboot,
    /// A step of the boot's confirmation (never `DeadlineMissed`: that is `DeadlineReset`).
    Boot(BootAction),
    /// The boot was not healthy for `confirm_after` by its deadline: reset the board, so
    /// that the bootloader counts a failed boot. `culprit` is the critical component that
    /// was not alive then (or the last to come alive). Nothing is fed after this.
    DeadlineReset { culprit: Option<usize> },
    /// Feed the hardware watchdog.
    Feed,
}

/// What a component is doing, for status displays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Starting,
    Alive,
    Dead,
    Repairing,
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            State::Starting => "starting",
            State::Alive => "alive",
            State::Dead => "dead",
            State::Repairing => "repairing",
        })
    }
}

/// What befell a component since it was added (for a configured one: since the agent
/// started), for the fleet's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub deaths: u64,
    /// Repair attempts started.
    pub repairs: u64,
    /// Repair attempts after which the component was still dead when the attempt's
    /// backoff ran out (success is the heartbeat coming back, never an exit status).
    pub repair_failures: u64,
}

/// A component as the status command shows it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct View {
    pub state: State,
    /// When the component entered its current health (start of grace, last beat, death).
    pub since: Instant,
    pub cause: Option<Cause>,
    pub repair_attempts: u32,
    pub counts: Counts,
}

/// The capacity of [`MAX_COMPONENTS`] is used up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Full;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Health {
    Grace { until: Instant },
    Alive { last_beat: Instant },
    Dead { since: Instant, cause: Cause },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Repair {
    Idle,
    Running {
        started: Instant,
        term_sent: Option<Instant>,
        kill_sent: bool,
    },
    Backoff {
        until: Instant,
    },
}

#[derive(Clone, Copy, Debug)]
struct Component {
    policy: Policy,
    health: Health,
    /// When the component entered its current health (shown as "for" by `status`).
    entered: Instant,
    last_look: Option<Look>,
    last_stamp: Option<Stamp>,
    tracked_process: Option<(i32, u64)>,
    /// The latest beat seen since the last tick, dated.
    beat_seen: Option<Instant>,
    process_cause: Option<Cause>,
    poll_process: bool,
    /// A pinned process exited (pid, instant): a death that no later look can undo.
    exited: Option<(i32, Instant)>,
    /// The latest `READY=1` since the last tick.
    ready_seen: Option<Instant>,
    /// The earliest `WATCHDOG=trigger` since the last tick.
    triggered: Option<Instant>,
    repair: Repair,
    attempts: u32,
    escalation_reported: bool,
    counts: Counts,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Supervising,
    Resetting {
        since: Instant,
        fallback_requested: bool,
    },
}

/// The supervision core for all components.
pub struct Supervisor {
    slots: heapless::Vec<Option<Component>, MAX_COMPONENTS>,
    settings: Settings,
    mode: Mode,
    hold_until: Option<Instant>,
    /// The confirmation of this boot, when `[boot]` is configured.
    boot: Option<Gate>,
    next_feed: Instant,
    fault: bool,
    rng: u64,
    generation: u64,
    /// The latest a feed has come after it was due.
    feed_lateness_max: Duration,
}

impl Supervisor {
    /// A supervisor with no components. `hold_until` is the end of a reboot-loop hold
    /// decided at startup; `seed` drives the backoff jitter (any value but 0 works).
    pub fn new(settings: Settings, now: Instant, hold_until: Option<Instant>, seed: u64) -> Self {
        Supervisor {
            slots: heapless::Vec::new(),
            settings,
            mode: Mode::Supervising,
            hold_until: hold_until.filter(|until| *until > now),
            boot: None,
            next_feed: now,
            fault: false,
            rng: seed | 1,
            generation: 0,
            feed_lateness_max: Duration::ZERO,
        }
    }

    /// Supervise a new component from `now`, in its startup grace. Returns its index, which
    /// is also its LED position minus one; freed indices are reused.
    pub fn add(&mut self, policy: Policy, now: Instant) -> Result<usize, Full> {
        let component = Component {
            policy,
            health: Health::Grace {
                until: now.saturating_add(policy.grace),
            },
            entered: now,
            last_look: None,
            last_stamp: None,
            tracked_process: None,
            beat_seen: None,
            process_cause: None,
            poll_process: false,
            exited: None,
            ready_seen: None,
            triggered: None,
            repair: Repair::Idle,
            attempts: 0,
            escalation_reported: false,
            counts: Counts::default(),
        };
        self.generation += 1;
        if let Some(index) = self.slots.iter().position(Option::is_none) {
            self.slots[index] = Some(component);
            return Ok(index);
        }
        self.slots.push(Some(component)).map_err(|_| Full)?;
        Ok(self.slots.len() - 1)
    }

    /// Stop supervising a component (a heart whose file was removed).
    pub fn remove(&mut self, component: usize) {
        if let Some(slot) = self.slots.get_mut(component) {
            *slot = None;
            self.generation += 1;
        }
        while self.slots.last().is_some_and(Option::is_none) {
            self.slots.pop();
        }
    }

    /// Change a component's policy (a heart's timeout was rewritten) without resetting it.
    pub(crate) fn set_policy(&mut self, component: usize, policy: Policy) {
        if let Some(Some(c)) = self.slots.get_mut(component) {
            c.policy = policy;
        }
    }

    /// Whether the shell must look at a component in a pass at `now`: its deadline is
    /// near, or the safety net is due. Looking more often is harmless, never needed.
    pub fn look_due(&self, component: usize, now: Instant) -> bool {
        let Some(Some(c)) = self.slots.get(component) else {
            return false;
        };
        let look_ahead = self.settings.feed_interval.min(c.policy.timeout / 2);
        c.next_look(self.settings.check_interval, look_ahead) <= now
    }

    /// Record what a look at a component saw. Call for every component [`Self::look_due`]
    /// names (others may be observed too), then `tick`.
    pub fn observe(&mut self, component: usize, look: Look, seen: Observation) {
        let Some(Some(c)) = self.slots.get_mut(component) else {
            return;
        };
        // The first look only sets the baseline: a file left from before the agent
        // started says nothing about whether its writer is alive now.
        if let (Some(previous), Some(stamp)) = (c.last_look, seen.heartbeat)
            && Some(stamp) != c.last_stamp
        {
            let beat = date_beat(stamp, previous, look);
            c.beat_seen = Some(c.beat_seen.map_or(beat, |b| b.max(beat)));
        }
        c.last_look = Some(look);
        c.poll_process = seen.poll_process;
        if seen.heartbeat.is_some() {
            c.last_stamp = seen.heartbeat;
        }
        c.process_cause = match seen.process {
            Process::Unknown => None,
            Process::Gone { pid } => Some(Cause::ProcessGone { pid }),
            Process::Running { pid, start_time } => match c.tracked_process {
                Some((tracked, started)) if tracked == pid && started != start_time => {
                    if c.beat_seen.is_some() {
                        c.tracked_process = Some((pid, start_time));
                        None
                    } else {
                        Some(Cause::PidReused { pid })
                    }
                }
                _ => {
                    c.tracked_process = Some((pid, start_time));
                    None
                }
            },
        };
    }

    /// The wall clock stepped while the pass at `at` looked (the step count is now
    /// `steps`): the beats that pass saw are dated at the pass, as a step in their window
    /// requires.
    pub fn wall_clock_stepped(&mut self, at: Instant, steps: u64) {
        for c in self.slots.iter_mut().flatten() {
            if let Some(look) = c.last_look.as_mut()
                && look.at == at
            {
                look.steps = steps;
                c.beat_seen = c.beat_seen.map(|_| at);
            }
        }
    }

    /// The component's process, pinned by a descriptor, exited at `at`: it is dead then,
    /// whatever its pidfile says afterwards.
    pub fn process_exited(&mut self, component: usize, pid: i32, at: Instant) {
        if let Some(Some(c)) = self.slots.get_mut(component) {
            c.exited = Some((pid, at));
        }
    }

    /// A notify component's `WATCHDOG=1` (or any message from it that is a sign of life),
    /// received at `at`.
    pub fn notify_beat(&mut self, component: usize, at: Instant) {
        if let Some(Some(c)) = self.slots.get_mut(component) {
            c.beat_seen = Some(c.beat_seen.map_or(at, |b| b.max(at)));
        }
    }

    /// A notify component's `READY=1`, received at `at`: its startup is over (and it is a
    /// beat).
    pub fn notify_ready(&mut self, component: usize, at: Instant) {
        self.notify_beat(component, at);
        if let Some(Some(c)) = self.slots.get_mut(component) {
            c.ready_seen = Some(c.ready_seen.map_or(at, |r| r.max(at)));
        }
    }

    /// A notify component's `WATCHDOG=trigger`, received at `at`: dead then.
    pub fn notify_trigger(&mut self, component: usize, at: Instant) {
        if let Some(Some(c)) = self.slots.get_mut(component) {
            c.triggered = Some(c.triggered.map_or(at, |t| t.min(at)));
        }
    }

    /// A notify component's `EXTEND_TIMEOUT_USEC=`, received at `now`: a startup still
    /// under way may last until `now + by` (never shortened). Ignored once it has started.
    pub fn extend_grace(&mut self, component: usize, now: Instant, by: Duration) {
        if let Some(Some(c)) = self.slots.get_mut(component)
            && let Health::Grace { until } = &mut c.health
        {
            *until = (*until).max(now.saturating_add(by));
        }
    }

    /// A repair process of this component exited (or was reaped after a kill).
    pub fn repair_exited(&mut self, component: usize, now: Instant) {
        let jitter = self.next_random();
        let Some(Some(c)) = self.slots.get_mut(component) else {
            return;
        };
        c.repair = match (c.health, c.policy.repair) {
            (Health::Dead { .. }, Some(policy)) => Repair::Backoff {
                until: now.saturating_add(backoff(policy, c.attempts, jitter)),
            },
            _ => Repair::Idle,
        };
        self.generation += 1;
    }

    /// The shell cannot use its config, a device, or its run or state directory: show the
    /// fault pattern.
    pub(crate) fn set_fault(&mut self, fault: bool) {
        if self.fault != fault {
            self.fault = fault;
            self.generation += 1;
        }
    }

    /// Confirm this boot through `gate` (see [`crate::core::boot`]).
    pub fn gate_boot(&mut self, gate: Gate) {
        self.boot = Some(gate);
        self.generation += 1;
    }

    /// The trial check's answer.
    pub fn boot_checked(&mut self, trial: Trial) {
        if let Some(gate) = self.boot.as_mut() {
            gate.checked(trial);
            self.generation += 1;
        }
    }

    /// The confirm command exited (`success`: exit status 0), or could not be started.
    pub fn confirm_exited(&mut self, success: bool) {
        if let Some(gate) = self.boot.as_mut() {
            gate.exited(success);
        }
    }

    /// The boot's confirmation, for display; `None` without `[boot]`.
    pub fn boot_view(&self) -> Option<BootView> {
        self.boot.as_ref().map(Gate::view)
    }

    /// Since when every critical component has been alive; `None` unless they all are and
    /// there is at least one (nothing else proves a boot healthy).
    fn healthy_since(&self) -> Option<Instant> {
        let mut since = None;
        for c in self.slots.iter().flatten().filter(|c| c.policy.critical) {
            let Health::Alive { .. } = c.health else {
                return None;
            };
            since = Some(since.map_or(c.entered, |s: Instant| s.max(c.entered)));
        }
        since
    }

    /// The critical component to blame for a missed deadline: the first that is not alive,
    /// else the last to come alive.
    fn culprit(&self) -> Option<usize> {
        let critical = || {
            self.slots
                .iter()
                .enumerate()
                .filter_map(|(i, c)| c.as_ref().filter(|c| c.policy.critical).map(|c| (i, c)))
        };
        critical()
            .find(|(_, c)| !matches!(c.health, Health::Alive { .. }))
            .or_else(|| critical().max_by_key(|(_, c)| c.entered))
            .map(|(i, _)| i)
    }

    /// True while the hold holds resets back: it is set, and no unconfirmed trial boot
    /// suspends it.
    fn holding(&self) -> bool {
        self.hold_until.is_some() && !self.boot.as_ref().is_some_and(Gate::suspends_hold)
    }

    /// An operator cleared the reboot-loop hold.
    pub fn clear_hold(&mut self) {
        if self.hold_until.take().is_some() {
            self.generation += 1;
        }
    }

    /// Decide, after a complete pass at `now`. Every decision goes to `act`, in order.
    pub fn tick(&mut self, now: Instant, mut act: impl FnMut(Action)) {
        if let Mode::Resetting {
            since,
            fallback_requested,
        } = &mut self.mode
        {
            let limit = self.settings.hardware_timeout * FALLBACK_TIMEOUTS;
            if !*fallback_requested && now >= since.saturating_add(limit) {
                *fallback_requested = true;
                act(Action::FallbackReboot);
            }
            return;
        }
        if self.hold_until.is_some_and(|until| now >= until) {
            self.hold_until = None;
            self.generation += 1;
            act(Action::HoldEnded);
        }
        let hold = self.holding();
        let mut reset = None;
        for index in 0..self.slots.len() {
            let Some(c) = self.slots[index].as_mut() else {
                continue;
            };
            // A beat moves `last_beat` on every pass; only what a display shows counts.
            let before = (c.shown(), c.counts);
            let due = c.step(index, now, hold, &mut act);
            if (c.shown(), c.counts) != before {
                self.generation += 1;
            }
            if let (None, Some(cause)) = (reset, due) {
                reset = Some((index, cause));
            }
        }
        if let Some((component, cause)) = reset {
            self.mode = Mode::Resetting {
                since: now,
                fallback_requested: false,
            };
            self.generation += 1;
            act(Action::ForceReset { component, cause });
            return;
        }
        if self.step_boot(now, &mut act) {
            return;
        }
        if now >= self.next_feed {
            self.feed_lateness_max = self.feed_lateness_max.max(now.since(self.next_feed));
            self.next_feed = now.saturating_add(self.settings.feed_interval);
            act(Action::Feed);
        }
    }

    /// Steps the boot's confirmation; true when its deadline forced a reset.
    fn step_boot(&mut self, now: Instant, act: &mut impl FnMut(Action)) -> bool {
        // Without `[boot]` a tick costs nothing more (no walk, no draw from the jitter).
        if self.boot.is_none() {
            return false;
        }
        let healthy_since = self.healthy_since();
        let jitter = self.next_random();
        let Some(gate) = self.boot.as_mut() else {
            return false;
        };
        let before = gate.view();
        let mut missed = false;
        gate.step(now, healthy_since, jitter, &mut |step| match step {
            BootAction::DeadlineMissed => missed = true,
            step => act(Action::Boot(step)),
        });
        if gate.view().phase != before.phase || healthy_since != before.healthy_since {
            self.generation += 1;
        }
        if missed {
            self.mode = Mode::Resetting {
                since: now,
                fallback_requested: false,
            };
            self.generation += 1;
            act(Action::DeadlineReset {
                culprit: self.culprit(),
            });
        }
        missed
    }

    /// When the next pass is needed: the earliest heartbeat deadline, grace end, repair
    /// timeout, backoff end, escalation, hold end, feed, or safety-net look.
    pub fn next_deadline(&self) -> Instant {
        if let Mode::Resetting {
            since,
            fallback_requested,
        } = self.mode
        {
            return if fallback_requested {
                Instant::NEVER
            } else {
                since.saturating_add(self.settings.hardware_timeout * FALLBACK_TIMEOUTS)
            };
        }
        let mut next = self.next_feed;
        if let Some(until) = self.hold_until {
            next = next.min(until);
        }
        if let Some(gate) = &self.boot {
            next = next.min(gate.next_deadline());
        }
        for c in self.slots.iter().flatten() {
            next = next
                .min(c.next_deadline())
                .min(c.next_look(self.settings.check_interval, Duration::ZERO));
        }
        next
    }

    /// What the fault LED should show now.
    pub fn led_pattern(&self) -> Pattern {
        if matches!(self.mode, Mode::Resetting { .. }) {
            return Pattern::ResetImminent;
        }
        if self.holding() {
            return Pattern::Hold;
        }
        let dead = self.slots.iter().position(|c| {
            c.as_ref()
                .is_some_and(|c| matches!(c.health, Health::Dead { .. }))
        });
        match dead {
            Some(index) => Pattern::Component(u16::try_from(index + 1).unwrap_or(u16::MAX)),
            None if self.fault || self.boot_failed() => Pattern::Fault,
            None if self.boot.as_ref().is_some_and(Gate::awaits_confirmation) => {
                Pattern::Unconfirmed
            }
            None => Pattern::Healthy,
        }
    }

    /// A component's state for display, `None` for a free index.
    pub fn view(&self, component: usize) -> Option<View> {
        let c = self.slots.get(component)?.as_ref()?;
        let (state, repair_attempts) = c.shown();
        let cause = match c.health {
            Health::Dead { cause, .. } => Some(cause),
            _ => None,
        };
        Some(View {
            state,
            since: c.entered,
            cause,
            repair_attempts,
            counts: c.counts,
        })
    }

    /// A component's policy, `None` for a free index.
    pub fn policy(&self, component: usize) -> Option<&Policy> {
        self.slots.get(component)?.as_ref().map(|c| &c.policy)
    }

    /// Every index that is or was in use: free ones below the highest are included.
    pub(crate) fn indices(&self) -> core::ops::Range<usize> {
        0..self.slots.len()
    }

    /// True while the reboot-loop guard's hold is set (it may be suspended: see
    /// [`Self::hold_suspended`]).
    pub fn in_hold(&self) -> bool {
        self.hold_until.is_some()
    }

    /// True while a hold is set but an unconfirmed trial boot suspends it.
    pub fn hold_suspended(&self) -> bool {
        self.hold_until.is_some() && !self.holding()
    }

    fn boot_failed(&self) -> bool {
        self.boot
            .as_ref()
            .is_some_and(|g| g.phase() == crate::core::boot::Phase::Failed)
    }

    /// True once a reset has been decided.
    pub fn resetting(&self) -> bool {
        matches!(self.mode, Mode::Resetting { .. })
    }

    /// Changes whenever anything a status display shows changes.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The latest any feed came after it was due, since the supervisor started: how close
    /// a starved or stalled agent brought the board to a reset it did not decide on.
    pub fn feed_lateness_max(&self) -> Duration {
        self.feed_lateness_max
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: plenty for jitter, and deterministic under a test's seed.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The instant of the beat that `stamp` records, seen by `look` but not by `previous`:
/// its ctime on the monotonic clock, clamped into the window between the two looks; the
/// end of the window when a wall-clock step makes the translation meaningless.
fn date_beat(stamp: Stamp, previous: Look, look: Look) -> Instant {
    if look.steps != previous.steps {
        return look.at;
    }
    let (secs, nanos) = stamp.ctime;
    let wall = i128::from(secs) * 1_000_000_000 + i128::from(nanos);
    let monotonic = wall - i128::from(look.wall_offset);
    let earliest = i128::from(previous.at.as_nanos());
    let latest = i128::from(look.at.as_nanos());
    let dated = monotonic.clamp(earliest.min(latest), latest);
    // Within [0, u64::MAX] by the clamp.
    Instant::from_nanos(u64::try_from(dated).unwrap_or(look.at.as_nanos()))
}

/// Wait after failed repair attempt `attempt` (1-based), with jitter from `random`.
fn backoff(policy: RepairPolicy, attempt: u32, random: u64) -> Duration {
    crate::core::time::backoff(policy.backoff_initial, policy.backoff_max, attempt, random)
}

impl Component {
    /// What a status display shows of this component.
    fn shown(&self) -> (State, u32) {
        let state = match self.health {
            Health::Grace { .. } => State::Starting,
            Health::Alive { .. } => State::Alive,
            Health::Dead { .. } if matches!(self.repair, Repair::Running { .. }) => {
                State::Repairing
            }
            Health::Dead { .. } => State::Dead,
        };
        (state, self.attempts)
    }

    /// Advance this component to `now`; returns the cause when a reset is due.
    fn step(
        &mut self,
        index: usize,
        now: Instant,
        hold: bool,
        act: &mut impl FnMut(Action),
    ) -> Option<Cause> {
        let beat = self.beat_seen.take();
        let exited = self.exited.take();
        let ready = self.ready_seen.take();
        let triggered = self.triggered.take();
        // What ends the startup: the first beat, or for a notify component its READY=1.
        let started = if self.policy.awaits_ready {
            ready
        } else {
            beat
        };
        match self.health {
            Health::Grace { until } => {
                if let Some(at) = triggered {
                    self.die(index, at.min(now), Cause::Triggered, act);
                } else if let Some(beat) = started {
                    self.health = Health::Alive { last_beat: beat };
                    self.entered = beat;
                    act(Action::Recovered {
                        component: index,
                        was_dead: false,
                    });
                } else if now >= until {
                    let cause = if self.policy.awaits_ready {
                        Cause::NotReady
                    } else {
                        Cause::NoFirstBeat
                    };
                    self.die(index, until, cause, act);
                }
            }
            Health::Alive { last_beat } => {
                let last_beat = beat.map_or(last_beat, |beat| beat.max(last_beat));
                self.health = Health::Alive { last_beat };
                if let Some(at) = triggered {
                    self.die(index, at.min(now), Cause::Triggered, act);
                } else if let Some((pid, at)) = exited {
                    self.die(index, at.min(now), Cause::ProcessGone { pid }, act);
                } else if let Some(cause) = self.process_cause {
                    self.die(index, now, cause, act);
                } else if now >= last_beat.saturating_add(self.policy.timeout) {
                    self.die(
                        index,
                        last_beat.saturating_add(self.policy.timeout),
                        Cause::Silent,
                        act,
                    );
                }
            }
            Health::Dead { since, cause } => {
                // A daemon that never got ready, or said it failed, is back only when it
                // starts again (READY=1): its pings in between say nothing.
                let back = match cause {
                    Cause::NotReady | Cause::Triggered => ready,
                    _ => beat,
                };
                // A beat from before the death (a pinned process that touched its file
                // and was then killed, seen at the next look) is not a return.
                if let (Some(beat), None, None, None) =
                    (back, self.process_cause, exited, triggered)
                    && beat >= since
                {
                    self.health = Health::Alive { last_beat: beat };
                    self.entered = beat;
                    self.attempts = 0;
                    self.escalation_reported = false;
                    if let Repair::Backoff { .. } = self.repair {
                        self.repair = Repair::Idle;
                    }
                    act(Action::Recovered {
                        component: index,
                        was_dead: true,
                    });
                }
            }
        }
        self.step_repair(index, now, act);
        let Health::Dead { since, cause } = self.health else {
            return None;
        };
        let exhausted = self
            .policy
            .repair
            .is_some_and(|p| self.attempts >= p.max_attempts)
            && self.repair == Repair::Idle;
        if now < since.saturating_add(self.policy.reset_after) && !exhausted {
            return None;
        }
        let withheld = if !self.policy.critical {
            Withheld::NotCritical
        } else if hold {
            Withheld::Hold
        } else {
            return Some(cause);
        };
        if !self.escalation_reported {
            self.escalation_reported = true;
            act(Action::EscalationWithheld {
                component: index,
                why: withheld,
            });
        }
        None
    }

    fn die(&mut self, index: usize, since: Instant, cause: Cause, act: &mut impl FnMut(Action)) {
        self.health = Health::Dead { since, cause };
        self.entered = since;
        self.counts.deaths += 1;
        act(Action::Died {
            component: index,
            cause,
            since,
        });
    }

    fn step_repair(&mut self, index: usize, now: Instant, act: &mut impl FnMut(Action)) {
        let Some(policy) = self.policy.repair else {
            return;
        };
        if let Repair::Backoff { until } = self.repair {
            if now < until {
                return;
            }
            // A recovery ends the backoff early (to Idle): running out, it is still dead.
            self.repair = Repair::Idle;
            self.counts.repair_failures += 1;
        }
        match &mut self.repair {
            Repair::Running {
                started,
                term_sent,
                kill_sent,
            } => match *term_sent {
                None if now >= started.saturating_add(policy.timeout) => {
                    *term_sent = Some(now);
                    act(Action::SignalRepair {
                        component: index,
                        kill: false,
                    });
                }
                Some(sent) if !*kill_sent && now >= sent.saturating_add(REPAIR_KILL_GRACE) => {
                    *kill_sent = true;
                    act(Action::SignalRepair {
                        component: index,
                        kill: true,
                    });
                }
                _ => {}
            },
            Repair::Idle => {
                if matches!(self.health, Health::Dead { .. }) && self.attempts < policy.max_attempts
                {
                    self.attempts += 1;
                    self.counts.repairs += 1;
                    self.repair = Repair::Running {
                        started: now,
                        term_sent: None,
                        kill_sent: false,
                    };
                    act(Action::StartRepair {
                        component: index,
                        attempt: self.attempts,
                    });
                }
            }
            Repair::Backoff { .. } => {}
        }
    }

    /// When this component must next be looked at: `look_ahead` before its heartbeat
    /// deadline, so that looks gather at wake-ups that happen anyway, or when the safety
    /// net is due.
    fn next_look(&self, check_interval: Duration, look_ahead: Duration) -> Instant {
        let Some(last) = self.last_look else {
            return Instant::ZERO;
        };
        let net = last.at.saturating_add(check_interval);
        match self.health {
            Health::Grace { until } => net.min(until),
            Health::Alive { last_beat } => {
                let due = Instant::from_nanos(
                    last_beat
                        .saturating_add(self.policy.timeout)
                        .as_nanos()
                        .saturating_sub(crate::core::time::duration_nanos(look_ahead)),
                );
                if self.poll_process { due.min(net) } else { due }
            }
            Health::Dead { .. } => net,
        }
    }

    fn next_deadline(&self) -> Instant {
        let health = match self.health {
            Health::Grace { until } => until,
            Health::Alive { last_beat } => last_beat.saturating_add(self.policy.timeout),
            Health::Dead { since, .. } if !self.escalation_reported => {
                since.saturating_add(self.policy.reset_after)
            }
            Health::Dead { .. } => Instant::NEVER,
        };
        let repair = match (self.repair, self.policy.repair) {
            (
                Repair::Running {
                    started,
                    term_sent: None,
                    ..
                },
                Some(p),
            ) => started.saturating_add(p.timeout),
            (
                Repair::Running {
                    term_sent: Some(sent),
                    kill_sent: false,
                    ..
                },
                _,
            ) => sent.saturating_add(REPAIR_KILL_GRACE),
            (Repair::Backoff { until }, _) => until,
            _ => Instant::NEVER,
        };
        health.min(repair)
    }
}
