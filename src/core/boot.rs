//! Health-gated boot confirmation for A/B updates: pure decisions, no I/O.
//!
//! A bootloader that counts the boots of a new slot (U-Boot's `bootcount`, RAUC's
//! `BOOT_x_LEFT`, Mender's `upgrade_available`) falls back to the old slot unless userspace
//! confirms the new one. The [`Gate`] confirms a trial boot once every critical component
//! has been alive, without a break, for `confirm_after`: it asks the shell to run the
//! confirm command (retried, with backoff, up to its attempts), and when the boot has not
//! been healthy that long by the deadline it calls for a reset, which the bootloader counts
//! as a failed boot.
//!
//! Phases: `Checking` (the shell is finding out whether this is a trial boot), then
//! `NotTrial` (nothing to do), or `Waiting` for health, `Confirming` (the command runs),
//! `Retrying` (backoff after a failed attempt), and finally `Confirmed` or `Failed`.
//!
//! Invariants:
//! - The confirm command is started only after `confirm_after` of unbroken health, and once
//!   a boot is `Confirmed` nothing is ever started again.
//! - The deadline only applies while waiting for health: health reached is what the
//!   deadline asks for, so a confirm command that fails never resets a healthy board.
//! - A trial boot that is not confirmed suspends the reboot-loop guard's hold
//!   ([`Gate::suspends_hold`]): its resets are the bootloader's to count.

use core::time::Duration;

use crate::core::time::Instant;

/// Wait after the first failed confirm attempt; doubled per attempt up to
/// [`CONFIRM_BACKOFF_MAX`], with jitter.
pub const CONFIRM_BACKOFF: Duration = Duration::from_secs(5);
/// Cap on the wait between confirm attempts.
pub const CONFIRM_BACKOFF_MAX: Duration = Duration::from_secs(60);

/// How a boot is confirmed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootPolicy {
    /// Unbroken health needed before the confirm command runs.
    pub confirm_after: Duration,
    /// A confirm attempt still running after this is sent SIGTERM, then SIGKILL.
    pub timeout: Duration,
    /// Confirm attempts in all.
    pub attempts: u32,
}

/// Whether this boot needs confirming, as the trial check found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trial {
    /// The bootloader counts this boot: confirm it.
    Yes,
    /// Nothing counts it: nothing to confirm.
    No,
    /// The check could not tell; treated as a trial (see the README: a needless confirm is
    /// harmless, a missed one loses the update).
    Unknown,
}

/// Where the confirmation of this boot stands, for the shell and the status display.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Checking,
    NotTrial,
    Waiting,
    /// Attempt `attempt` (1-based) runs.
    Confirming {
        attempt: u32,
    },
    /// Attempt `attempt` failed; the next starts at `until`.
    Retrying {
        attempt: u32,
        until: Instant,
    },
    Confirmed,
    /// Every attempt failed.
    Failed,
}

impl Phase {
    /// The word for the phase in the status snapshot and in `status --json`.
    pub fn word(self) -> &'static str {
        match self {
            Phase::Checking => "checking",
            Phase::NotTrial => "not-trial",
            Phase::Waiting => "waiting",
            Phase::Confirming { .. } => "confirming",
            Phase::Retrying { .. } => "retrying",
            Phase::Confirmed => "confirmed",
            Phase::Failed => "failed",
        }
    }
}

/// A decision about the boot, for the shell to carry out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootAction {
    /// Start confirm attempt `attempt` (1-based).
    StartConfirm { attempt: u32 },
    /// The confirm command outlived its timeout: SIGTERM, or SIGKILL when `kill`.
    SignalConfirm { kill: bool },
    /// The confirm command succeeded: record it.
    Confirmed,
    /// The last attempt failed: record it, show the fault.
    ConfirmFailed,
    /// The deadline passed before health: force a reset.
    DeadlineMissed,
}

/// What the status display shows of the gate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootView {
    pub phase: Phase,
    /// The trial check could not tell (the boot is treated as a trial).
    pub unknown: bool,
    /// Since when every critical component has been alive, if they all are.
    pub healthy_since: Option<Instant>,
    pub confirm_after: Duration,
    pub deadline: Option<Instant>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Command {
    Idle,
    Running {
        started: Instant,
        term_sent: Option<Instant>,
        kill_sent: bool,
    },
}

/// The confirmation of one boot.
#[derive(Clone, Copy, Debug)]
pub struct Gate {
    policy: BootPolicy,
    deadline: Option<Instant>,
    phase: Phase,
    unknown: bool,
    command: Command,
    /// How the last attempt ended, since the last step (`true`: success).
    exited: Option<bool>,
    healthy_since: Option<Instant>,
}

/// Time given to a confirm command between SIGTERM and SIGKILL.
pub const CONFIRM_KILL_GRACE: Duration = Duration::from_secs(2);

impl Gate {
    /// A gate in `phase` (`Checking` for a boot not yet looked at; a restarted agent passes
    /// the phase its history recorded). `deadline` is the instant by which the boot must
    /// have been healthy for `confirm_after`.
    pub fn new(policy: BootPolicy, deadline: Option<Instant>, phase: Phase) -> Self {
        Gate {
            policy,
            deadline,
            phase,
            unknown: false,
            command: Command::Idle,
            exited: None,
            healthy_since: None,
        }
    }

    /// The trial check's answer (ignored unless the gate is checking).
    pub fn checked(&mut self, trial: Trial) {
        if self.phase != Phase::Checking {
            return;
        }
        self.unknown = trial == Trial::Unknown;
        self.phase = match trial {
            Trial::No => Phase::NotTrial,
            Trial::Yes | Trial::Unknown => Phase::Waiting,
        };
    }

    /// The confirm command exited (`success`: exit status 0), or could not be started.
    pub fn exited(&mut self, success: bool) {
        if let Command::Running { .. } = self.command {
            self.command = Command::Idle;
            self.exited = Some(success);
        }
    }

    /// Advance to `now`, health being `healthy_since` (since when every critical component
    /// has been alive, `None` unless they all are); `jitter` is a random number for the
    /// backoff.
    pub fn step(
        &mut self,
        now: Instant,
        healthy_since: Option<Instant>,
        jitter: u64,
        act: &mut impl FnMut(BootAction),
    ) {
        self.healthy_since = healthy_since;
        if let Some(success) = self.exited.take()
            && let Phase::Confirming { attempt } = self.phase
        {
            if success {
                self.phase = Phase::Confirmed;
                act(BootAction::Confirmed);
            } else if attempt >= self.policy.attempts {
                self.phase = Phase::Failed;
                act(BootAction::ConfirmFailed);
            } else {
                self.phase = Phase::Retrying {
                    attempt,
                    until: now.saturating_add(backoff(attempt, jitter)),
                };
            }
        }
        match self.phase {
            Phase::Waiting => {
                if healthy_since.is_some_and(|s| now >= s.saturating_add(self.policy.confirm_after))
                {
                    self.start(now, 1, act);
                } else if self.deadline.is_some_and(|d| now >= d) {
                    act(BootAction::DeadlineMissed);
                }
            }
            Phase::Retrying { attempt, until } if now >= until => {
                self.start(now, attempt + 1, act);
            }
            Phase::Confirming { .. } => self.watch_command(now, act),
            _ => {}
        }
    }

    fn start(&mut self, now: Instant, attempt: u32, act: &mut impl FnMut(BootAction)) {
        self.phase = Phase::Confirming { attempt };
        self.command = Command::Running {
            started: now,
            term_sent: None,
            kill_sent: false,
        };
        act(BootAction::StartConfirm { attempt });
    }

    fn watch_command(&mut self, now: Instant, act: &mut impl FnMut(BootAction)) {
        let Command::Running {
            started,
            term_sent,
            kill_sent,
        } = &mut self.command
        else {
            return;
        };
        match *term_sent {
            None if now >= started.saturating_add(self.policy.timeout) => {
                *term_sent = Some(now);
                act(BootAction::SignalConfirm { kill: false });
            }
            Some(sent) if !*kill_sent && now >= sent.saturating_add(CONFIRM_KILL_GRACE) => {
                *kill_sent = true;
                act(BootAction::SignalConfirm { kill: true });
            }
            _ => {}
        }
    }

    /// When the gate next needs a step.
    pub fn next_deadline(&self) -> Instant {
        match (self.phase, self.command) {
            (Phase::Waiting, _) => {
                let healthy = self.healthy_since.map_or(Instant::NEVER, |s| {
                    s.saturating_add(self.policy.confirm_after)
                });
                healthy.min(self.deadline.unwrap_or(Instant::NEVER))
            }
            (Phase::Retrying { until, .. }, _) => until,
            (
                Phase::Confirming { .. },
                Command::Running {
                    started,
                    term_sent: None,
                    ..
                },
            ) => started.saturating_add(self.policy.timeout),
            (
                Phase::Confirming { .. },
                Command::Running {
                    term_sent: Some(sent),
                    kill_sent: false,
                    ..
                },
            ) => sent.saturating_add(CONFIRM_KILL_GRACE),
            _ => Instant::NEVER,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// True while the boot is a trial that is not confirmed: the reboot-loop guard does not
    /// hold resets back, since the bootloader counts them and must be free to fall back.
    pub fn suspends_hold(&self) -> bool {
        !matches!(
            self.phase,
            Phase::Checking | Phase::NotTrial | Phase::Confirmed
        )
    }

    /// True while a trial boot waits for its confirmation (the LED says so).
    pub fn awaits_confirmation(&self) -> bool {
        matches!(
            self.phase,
            Phase::Waiting | Phase::Confirming { .. } | Phase::Retrying { .. }
        )
    }

    pub fn view(&self) -> BootView {
        BootView {
            phase: self.phase,
            unknown: self.unknown,
            healthy_since: self.healthy_since,
            confirm_after: self.policy.confirm_after,
            deadline: self.deadline,
        }
    }
}

fn backoff(attempt: u32, random: u64) -> Duration {
    crate::core::time::backoff(CONFIRM_BACKOFF, CONFIRM_BACKOFF_MAX, attempt, random)
}
