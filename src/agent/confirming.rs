//! Health-gated boot confirmation (`[boot]`): the trial check's answer and the confirm
//! command's runs, carried between the supervisor's [`Gate`] and the OS, and each step
//! recorded in the reset history, so that the next boot (and `status`) knows how this
//! one's confirmation went.
//!
//! A restarted agent carries on from what the history recorded for this boot: a boot
//! confirmed is never confirmed again, one found to be no trial is not checked again, and
//! one still waiting keeps waiting (its confirm command runs again once it is healthy: an
//! attempt cut short by the restart proves nothing). The deadline counts from the kernel's
//! start, but leaves a restarted agent at least its critical components' grace and
//! `confirm_after` to see a healthy boot.
//!
//! Invariant: nothing here allocates after [`Confirming::new`].

use core::fmt::Write as _;
use core::time::Duration;
use std::os::fd::BorrowedFd;

use crate::config::Config;
use crate::core::boot::{BootAction, Gate, Phase, Trial};
use crate::core::history::{Confirm, MAX_CONFIRM_NOTE};
use crate::core::supervisor::Supervisor;
use crate::core::time::Instant;
use crate::os::confirm::{Confirmer, TrialRun};
use crate::os::spawn::{Exit, PrepareError};
use crate::os::state::State;

type Note = heapless::String<MAX_CONFIRM_NOTE>;

/// The first phase of the gate in this start of the agent, from what the history recorded
/// for this boot (`None`: nothing yet, the boot is to be checked).
pub fn resumed_phase(recorded: Option<Confirm>) -> Phase {
    match recorded {
        Some(Confirm::NotTrial) => Phase::NotTrial,
        Some(Confirm::Trial | Confirm::Confirming) => Phase::Waiting,
        Some(Confirm::Confirmed) => Phase::Confirmed,
        Some(Confirm::Failed) => Phase::Failed,
        Some(Confirm::Unconfigured) | None => Phase::Checking,
    }
}

pub(super) struct Confirming {
    /// The trial check, until it has answered.
    trial: Option<TrialRun>,
    /// When an unanswered trial check is killed (it then answers "unknown").
    trial_kill_at: Instant,
    confirmer: Confirmer,
    /// The confirm command as the log shows it.
    command: String,
    attempts: u32,
    last_exit: Option<Exit>,
}

impl Confirming {
    /// Gates the boot in `sup` (at startup). `trial` is the check started for a boot still
    /// to be checked; `phase` where the history left this boot; `uptime` and `now` the
    /// clocks at startup.
    pub(super) fn new(
        config: &Config,
        sup: &mut Supervisor,
        trial: Option<TrialRun>,
        phase: Phase,
        agent_binary: &std::path::Path,
        (now, uptime): (Instant, Duration),
    ) -> Result<Option<Confirming>, PrepareError> {
        let Some(boot) = &config.boot else {
            return Ok(None);
        };
        let confirmer = Confirmer::new(agent_binary, &boot.confirm)?;
        let graces = config
            .components
            .iter()
            .filter(|c| c.policy.critical)
            .map(|c| c.policy.grace)
            .chain(config.hearts.iter().filter(|h| h.critical).map(|h| h.grace));
        let least = graces.max().unwrap_or_default() + boot.policy.confirm_after;
        let deadline = boot.deadline.map(|d| {
            let left = d.saturating_sub(uptime).max(least);
            now.saturating_add(left)
        });
        sup.gate_boot(Gate::new(boot.policy, deadline, phase));
        let command = boot
            .confirm
            .iter()
            .map(|w| w.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        match phase {
            Phase::Checking => {}
            Phase::Waiting => log::warn!(
                "boot: a trial boot, not confirmed yet: it will be once every critical component has been alive for {:?}",
                boot.policy.confirm_after
            ),
            phase => log::info!(
                "boot: {} (recorded earlier in this boot)",
                phase_words(phase)
            ),
        }
        if let Some(deadline) = boot.deadline.filter(|_| phase == Phase::Waiting) {
            log::info!(
                "boot: the confirm deadline is {deadline:?} after the kernel's start ({:?} from now)",
                deadline.saturating_sub(uptime).max(least)
            );
        }
        Ok(Some(Confirming {
            trial: if phase == Phase::Checking {
                trial
            } else {
                None
            },
            trial_kill_at: now.saturating_add(boot.policy.timeout),
            confirmer,
            command,
            attempts: boot.policy.attempts,
            last_exit: None,
        }))
    }

    /// The trial check's stdout, while it runs: its end wakes the loop.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.trial.as_ref().and_then(TrialRun::fd)
    }

    /// At each pass, before the tick: the trial check's answer, the confirm command's end.
    pub(super) fn pass(
        &mut self,
        now: Instant,
        sup: &mut Supervisor,
        state: &mut State,
        uptime: Duration,
    ) {
        if let Some(run) = self.trial.as_mut() {
            if now >= self.trial_kill_at {
                run.kill();
                self.trial_kill_at = Instant::NEVER;
            }
            if let Some(checked) = run.poll() {
                let (confirm, words) = match checked.trial {
                    Trial::Yes => (Confirm::Trial, "a trial boot"),
                    Trial::Unknown => (
                        Confirm::Trial,
                        "cannot tell whether this is a trial boot, so it is treated as one",
                    ),
                    Trial::No => (Confirm::NotTrial, "not a trial boot: nothing to confirm"),
                };
                match checked.trial {
                    Trial::Unknown => log::error!("boot: {words} ({})", checked.note),
                    _ => log::info!("boot: {words} ({})", checked.note),
                }
                if let Err(e) = state.record_confirm(confirm, uptime, &checked.note) {
                    log::error!("boot: {words}, but not recorded: {e}");
                }
                sup.boot_checked(checked.trial);
                if let Some(view) = sup.boot_view().filter(|_| checked.trial != Trial::No) {
                    match view.deadline {
                        Some(deadline) => log::info!(
                            "boot: confirmed once every critical component has been alive for {:?}; if not by the deadline, {:?} from now, the board is reset",
                            view.confirm_after,
                            deadline.since(now)
                        ),
                        None => log::info!(
                            "boot: confirmed once every critical component has been alive for {:?} (no deadline)",
                            view.confirm_after
                        ),
                    }
                }
                self.trial = None;
            }
        }
        if let Some(exit) = self.confirmer.reap() {
            self.last_exit = Some(exit);
            let success = exit == Exit::Code(0);
            if !success {
                log::error!("boot: the confirm command {} failed: {exit}", self.command);
            }
            sup.confirm_exited(success);
        }
    }

    /// Carries out a step of the confirmation.
    pub(super) fn act(
        &mut self,
        step: BootAction,
        sup: &mut Supervisor,
        state: &mut State,
        uptime: Duration,
    ) {
        match step {
            BootAction::StartConfirm { attempt } => {
                if attempt == 1 {
                    let mut note = Note::new();
                    let _ = write!(note, "healthy at uptime {} s", uptime.as_secs());
                    if let Err(e) = state.record_confirm(Confirm::Confirming, uptime, &note) {
                        log::error!("boot: confirming, but not recorded: {e}");
                    }
                }
                match self.confirmer.start() {
                    Ok(pid) => log::warn!(
                        "boot: every critical component alive long enough: confirming with {} (attempt {attempt} of {}, pid {pid})",
                        self.command,
                        self.attempts
                    ),
                    Err(e) => {
                        log::error!(
                            "boot: cannot start the confirm command {}: {}",
                            self.command,
                            e.desc()
                        );
                        sup.confirm_exited(false);
                    }
                }
            }
            BootAction::SignalConfirm { kill } => {
                let signal = if kill { "SIGKILL" } else { "SIGTERM" };
                log::warn!("boot: the confirm command overran its timeout: sending {signal}");
                if let Err(e) = self.confirmer.signal(kill) {
                    log::error!("boot: cannot signal the confirm command: {}", e.desc());
                }
            }
            BootAction::Confirmed => {
                log::warn!("boot: confirmed ({} exited 0)", self.command);
                if let Err(e) = state.record_confirm(Confirm::Confirmed, uptime, "exit status 0") {
                    log::error!("boot: confirmed, but not recorded: {e}");
                }
            }
            BootAction::ConfirmFailed => {
                let mut note = Note::new();
                let _ = match self.last_exit {
                    Some(exit) => write!(note, "{} attempts, the last: {exit}", self.attempts),
                    None => write!(note, "{} attempts, none could start", self.attempts),
                };
                log::error!(
                    "boot: NOT confirmed: {} failed {note}; the board stays up, and the bootloader decides at the next boot",
                    self.command
                );
                if let Err(e) = state.record_confirm(Confirm::Failed, uptime, &note) {
                    log::error!("boot: the failed confirmation is not recorded: {e}");
                }
            }
            // The supervisor turns it into a deadline reset.
            BootAction::DeadlineMissed => {}
        }
    }
}

/// A phase in the log's words.
pub(crate) fn phase_words(phase: Phase) -> &'static str {
    match phase {
        Phase::Checking => "checking whether this is a trial boot",
        Phase::NotTrial => "not a trial boot: nothing to confirm",
        Phase::Waiting => "a trial boot, waiting for health",
        Phase::Confirming { .. } => "confirming",
        Phase::Retrying { .. } => "confirming (waiting to try again)",
        Phase::Confirmed => "confirmed",
        Phase::Failed => "NOT confirmed: every confirm attempt failed",
    }
}
