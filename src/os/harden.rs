//! Startup hardening: keep the agent in memory, out of the OOM killer's reach, and ahead of
//! busy processes, so that it is still there to feed the watchdog when the system is not well.
//!
//! Invariant: nothing here is fatal. Each step that fails becomes a [`Warning`] the agent
//! logs: a weaker agent that feeds the watchdog beats no agent. It runs once the agent is
//! built, so that locking the pages mapped then covers every buffer; future pages are
//! locked too only where no memory-lock limit applies, since one reached would fail the
//! stack's growth (a crash) rather than a call.
//!
//! Processes the agent starts inherit oom_score_adj and SCHED_FIFO across fork and exec
//! (memory locks they do not): the repair launcher calls [`undo_for_child`] before it
//! execs a repair program, so that restarted services run like any other.
//!
//! The scheduler is set with `pthread_setschedparam(3)` on the calling thread (the agent is
//! single-threaded): musl's `sched_setscheduler` always fails with ENOSYS. That one libc call
//! is this module's only `unsafe` code.
#![allow(unsafe_code)]

use core::fmt;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::mman::{MlockAllFlags, mlockall};
use nix::sys::stat::Mode;
use nix::unistd::write;

const OOM_SCORE_ADJ: &str = "/proc/self/oom_score_adj";
/// The OOM killer never picks a process with this score adjustment.
const OOM_NEVER: &[u8] = b"-1000";
/// The default score adjustment.
const OOM_DEFAULT: &[u8] = b"0";
/// SCHED_FIFO's priorities on Linux (sched(7): "a static priority in the range 1 (low) to
/// 99 (high)").
const FIFO_PRIORITIES: core::ops::RangeInclusive<u8> = 1..=99;

/// A hardening step that failed, and what that costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Warning {
    Mlock(Errno),
    /// RLIMIT_MEMLOCK binds (this many bytes, no CAP_IPC_LOCK): only the pages mapped now
    /// were locked.
    MlockCurrentOnly(u64),
    OomScoreAdj(Errno),
    /// SCHED_FIFO at this priority was refused.
    RtPriority {
        priority: u8,
        cause: RtError,
    },
}

/// Why the real-time priority was not set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum RtError {
    /// Outside SCHED_FIFO's range, 1 to 99 on Linux.
    OutOfRange,
    Os(Errno),
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::Mlock(errno) => write!(
                f,
                "mlockall(MCL_CURRENT | MCL_FUTURE) failed: {errno}: the agent's pages can be \
                 evicted, so a keepalive may stall under memory pressure (run as root or raise \
                 RLIMIT_MEMLOCK)"
            ),
            Warning::MlockCurrentOnly(limit) => write!(
                f,
                "RLIMIT_MEMLOCK is {limit} bytes and the agent lacks CAP_IPC_LOCK: only the pages \
                 mapped at startup are locked (locking later ones too could make the stack's \
                 growth fail at the limit); run as root or set LimitMEMLOCK=infinity"
            ),
            Warning::OomScoreAdj(errno) => write!(
                f,
                "cannot write -1000 to {OOM_SCORE_ADJ}: {errno}: the OOM killer may kill the \
                 agent, and the watchdog will then reset the board (needs root with \
                 CAP_SYS_RESOURCE; a container may deny it)"
            ),
            Warning::RtPriority {
                priority,
                cause: RtError::OutOfRange,
            } => write!(
                f,
                "real-time priority {priority} is outside SCHED_FIFO's 1 to 99: the agent runs \
                 at normal priority, so busy processes can delay keepalives"
            ),
            Warning::RtPriority {
                priority,
                cause: RtError::Os(errno),
            } => write!(
                f,
                "cannot set SCHED_FIFO priority {priority}: {errno}: the agent runs at normal \
                 priority, so busy processes can delay keepalives (run as root, or check \
                 RLIMIT_RTPRIO and the cgroup's RT budget)"
            ),
        }
    }
}

/// Applies every hardening step and returns the ones that failed. `rt_priority` asks for
/// SCHED_FIFO at that priority; `None` keeps the normal scheduler.
pub(crate) fn harden(rt_priority: Option<u8>) -> heapless::Vec<Warning, 3> {
    let mut warnings = heapless::Vec::new();
    let mut warn = |w| {
        // Capacity is the number of steps: one warning each at most.
        let _ = warnings.push(w);
    };
    let limit = binding_lock_limit();
    let flags = match limit {
        Some(_) => MlockAllFlags::MCL_CURRENT,
        None => MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE,
    };
    match (mlockall(flags), limit) {
        (Err(errno), _) => warn(Warning::Mlock(errno)),
        (Ok(()), Some(limit)) => warn(Warning::MlockCurrentOnly(limit)),
        (Ok(()), None) => {}
    }
    if let Err(errno) = protect_from_oom_killer() {
        warn(Warning::OomScoreAdj(errno));
    }
    if let Some(priority) = rt_priority
        && let Err(cause) = set_fifo_priority(priority)
    {
        warn(Warning::RtPriority { priority, cause });
    }
    warnings
}

/// Gives a child process (a repair program about to be exec'd) the default OOM score
/// adjustment and the normal scheduler at nice 0. Errors are returned for the caller to
/// print; the repair runs regardless.
pub(crate) fn undo_for_child() -> Result<(), Errno> {
    write_oom_score_adj(OOM_DEFAULT)?;
    // SCHED_OTHER takes static priority 0 (sched(7)); its nice value is set apart.
    set_scheduler(libc::SCHED_OTHER, 0)?;
    rustix::process::setpriority_process(None, 0).map_err(|e| Errno::from_raw(e.raw_os_error()))
}

/// The memory-lock limit, when it applies to this process: finite, and the process lacks
/// CAP_IPC_LOCK (bit 14 of `CapEff` in `/proc/self/status`, capabilities(7)), which lifts it.
fn binding_lock_limit() -> Option<u64> {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Memlock).current?;
    const CAP_IPC_LOCK: u32 = 14;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())?;
    (effective & (1 << CAP_IPC_LOCK) == 0).then_some(limit)
}

fn protect_from_oom_killer() -> Result<(), Errno> {
    write_oom_score_adj(OOM_NEVER)
}

fn write_oom_score_adj(value: &[u8]) -> Result<(), Errno> {
    let fd = open(
        OOM_SCORE_ADJ,
        OFlag::O_WRONLY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    write(&fd, value)?;
    Ok(())
}

fn set_fifo_priority(priority: u8) -> Result<(), RtError> {
    if !FIFO_PRIORITIES.contains(&priority) {
        return Err(RtError::OutOfRange);
    }
    set_scheduler(libc::SCHED_FIFO, priority.into()).map_err(RtError::Os)
}

/// Sets the calling thread's scheduling policy and static priority, through
/// `pthread_setschedparam(3)`: musl's `sched_setscheduler` always fails with ENOSYS.
fn set_scheduler(policy: libc::c_int, priority: libc::c_int) -> Result<(), Errno> {
    // SAFETY: `sched_param` is a C struct of integers (`sched_priority` and, on musl, reserved
    // fields that the libc crate keeps private), for which all zeroes is a valid value.
    let mut param: libc::sched_param = unsafe { core::mem::zeroed() };
    param.sched_priority = priority;
    // SAFETY: pthread_setschedparam(3p) reads the `sched_param` it is given, which lives
    // across the call, and `pthread_self` is always a valid thread of this process.
    match unsafe { libc::pthread_setschedparam(libc::pthread_self(), policy, &param) } {
        0 => Ok(()),
        errno => Err(Errno::from_raw(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_range_priority_is_a_warning() {
        for priority in [0, 100, 255] {
            assert_eq!(set_fifo_priority(priority), Err(RtError::OutOfRange));
        }
        let text = Warning::RtPriority {
            priority: 0,
            cause: RtError::OutOfRange,
        }
        .to_string();
        assert!(text.contains("outside SCHED_FIFO's 1 to 99"), "{text}");
    }

    #[test]
    fn warnings_name_the_errno_and_the_consequence() {
        let text = Warning::OomScoreAdj(Errno::EACCES).to_string();
        assert!(text.contains("/proc/self/oom_score_adj: EACCES"), "{text}");
        assert!(text.contains("OOM killer may kill the agent"), "{text}");
        let text = Warning::Mlock(Errno::ENOMEM).to_string();
        assert!(
            text.starts_with("mlockall(MCL_CURRENT | MCL_FUTURE) failed: ENOMEM"),
            "{text}"
        );
        let text = Warning::MlockCurrentOnly(8 << 20).to_string();
        assert!(
            text.starts_with("RLIMIT_MEMLOCK is 8388608 bytes")
                && text.contains("only the pages mapped at startup are locked")
                && text.ends_with("LimitMEMLOCK=infinity"),
            "{text}"
        );
    }
}
