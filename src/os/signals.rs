//! Signals: which ones end the agent, which ones it holds and logs, and what its children
//! must get back.
//!
//! The agent is crash-only: it has no reload and no graceful shutdown, and a restart is the
//! reload (the watchdog stays armed across it, and a respawning init brings the agent back
//! well within the hardware timeout). So:
//! - [`ENDING`] (SIGTERM, SIGINT, SIGQUIT) keep their default action: the agent ends at once,
//!   the device is left armed without the magic 'V', and the board resets unless the agent
//!   is restarted. Their disposition is reset to SIG_DFL and they are unblocked at startup,
//!   so an inherited SIG_IGN or blocked mask (`nohup`, `trap "" INT`, a careless parent)
//!   cannot make `kill` or Ctrl-C stop working.
//! - [`HELD`] are the signals whose default action would end or stop the agent and that an
//!   operator (`kill -HUP` out of habit, Ctrl-Z), a stray process or the kernel (a resource
//!   limit) may send without meaning "reset the board". They are blocked and read from a
//!   non-blocking signalfd at every upkeep of the agent ([`consume`]): each is logged with its sender and
//!   what the agent does about it (nothing), at most once per [`LOG_EVERY`] per signal, with
//!   the count of the ones held in between, so a flood neither stops the loop (blocked
//!   signals do not even wake it) nor floods the log. If the signalfd cannot be made they
//!   are ignored instead, silently.
//! - SIGCHLD is reset to SIG_DFL: an inherited SIG_IGN makes the kernel reap repairs itself,
//!   and `waitpid` would then never see one end.
//! - [`IGNORED`] (SIGPIPE, as the Rust runtime sets it): a log reader that went away is an
//!   EPIPE from write(2), which [`crate::os::logging`] counts as dropped lines.
//! - Everything else keeps its default: the fault signals (SIGSEGV, SIGBUS, SIGILL, SIGFPE,
//!   SIGABRT, SIGTRAP, SIGSYS) mean the agent is broken, and a crash is what it should do;
//!   SIGKILL and SIGSTOP cannot be caught (SIGSTOP stops the feeds: the board resets).
//!
//! Children (repairs) must not inherit any of this: they start with an empty signal mask
//! and with every signal in [`IGNORED`] back to SIG_DFL (the agent sets no handler, so
//! exec resets nothing else). [`held_set`] is the mask to clear.
//!
//! Invariant: [`consume`] allocates nothing and makes a bounded number of syscalls.

use nix::errno::Errno;
use nix::sys::signal::{SigHandler, SigSet, Signal, signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use crate::core::time::Instant;

/// Blocked at startup, read and logged at every upkeep of the agent; never fatal.
pub const HELD: [Signal; 14] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
    Signal::SIGVTALRM,
    Signal::SIGPROF,
    Signal::SIGIO,
    Signal::SIGPWR,
    Signal::SIGSTKFLT,
    Signal::SIGXCPU,
    Signal::SIGXFSZ,
    Signal::SIGTSTP,
    Signal::SIGTTIN,
    Signal::SIGTTOU,
];

/// Default action restored at startup, whatever the agent inherited: they end it at once.
pub(crate) const ENDING: [Signal; 3] = [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT];

/// Ignored by the agent: a child must get SIG_DFL back for each.
pub(crate) const IGNORED: [Signal; 1] = [Signal::SIGPIPE];

/// Shortest time between two log lines about the same signal.
pub(crate) const LOG_EVERY: Duration = Duration::from_secs(60);

/// Reads per pass: more than every held signal pending at once (standard signals do not
/// queue), so a sender that keeps re-raising one cannot keep the loop reading.
const MAX_READS_PER_PASS: usize = 2 * HELD.len();

/// The signals in [`HELD`], as a mask.
pub(crate) fn held_set() -> SigSet {
    let mut set = SigSet::empty();
    for signal in HELD {
        set.add(signal);
    }
    set
}

#[derive(Clone, Copy)]
struct Seen {
    /// Received since the last line about this signal.
    count: u32,
    /// Sender of the latest one (0: the kernel).
    pid: u32,
    logged: Option<Instant>,
}

struct Held {
    fd: Option<SignalFd>,
    seen: [Seen; HELD.len()],
}

static HELD_STATE: Mutex<Held> = Mutex::new(Held {
    fd: None,
    seen: [Seen {
        count: 0,
        pid: 0,
        logged: None,
    }; HELD.len()],
});

/// Poisoning is ignored: the counters stay valid whatever panicked.
fn state() -> std::sync::MutexGuard<'static, Held> {
    HELD_STATE.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets up the agent's signals (see the module doc). Call first in `run`, before any other
/// thread or child exists. Failures are logged; none stops the agent.
pub(crate) fn install() {
    let held = held_set();
    // Blocked first: from here on a held signal waits for the signalfd instead of ending
    // the agent. SIG_SETMASK, not SIG_BLOCK: an inherited mask must not hold SIGTERM.
    if let Err(errno) = held.thread_set_mask() {
        log::error!("cannot block {}: {errno}: they end the agent", Names);
    }
    for sig in ENDING.into_iter().chain(HELD).chain([Signal::SIGCHLD]) {
        set_disposition(sig, SigHandler::SigDfl);
    }
    for sig in IGNORED {
        set_disposition(sig, SigHandler::SigIgn);
    }
    match SignalFd::with_flags(&held, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC) {
        Ok(fd) => state().fd = Some(fd),
        Err(errno) => {
            log::error!(
                "cannot make a signalfd: {errno}: {} are ignored without a log line",
                Names
            );
            for sig in HELD {
                set_disposition(sig, SigHandler::SigIgn);
            }
        }
    }
}

/// The held signals' names, for messages.
struct Names;

impl core::fmt::Display for Names {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        for (i, sig) in HELD.iter().enumerate() {
            let sep = if i == 0 { "" } else { ", " };
            write!(f, "{sep}{}", sig.as_str())?;
        }
        Ok(())
    }
}

#[allow(unsafe_code)]
fn set_disposition(sig: Signal, handler: SigHandler) {
    // SAFETY: SIG_DFL and SIG_IGN run no code in the process, so none of the async-signal
    // safety rules of signal(2) and signal-safety(7) for handlers apply.
    if let Err(errno) = unsafe { signal(sig, handler) } {
        log::error!("cannot set the action of {}: {errno}", sig.as_str());
    }
}

/// Reads the held signals pending and logs them (rate-limited). Called at every upkeep of the agent.
pub(crate) fn consume(now: Instant) {
    let mut state = state();
    let Held { fd, seen } = &mut *state;
    let Some(fd) = fd else { return };
    for _ in 0..MAX_READS_PER_PASS {
        match fd.read_signal() {
            Ok(Some(info)) => {
                let index = HELD.iter().position(|s| *s as u32 == info.ssi_signo);
                if let Some(entry) = index.and_then(|i| seen.get_mut(i)) {
                    entry.count = entry.count.saturating_add(1);
                    entry.pid = info.ssi_pid;
                }
            }
            Ok(None) => break,
            Err(Errno::EINTR) => {}
            Err(errno) => {
                log::error!("reading the signalfd failed: {errno}");
                break;
            }
        }
    }
    for (sig, entry) in HELD.iter().zip(seen.iter_mut()) {
        let due = entry
            .logged
            .is_none_or(|logged| now.since(logged) >= LOG_EVERY);
        if entry.count > 0 && due {
            log_held(*sig, entry, now);
        }
    }
}

fn log_held(sig: Signal, entry: &mut Seen, now: Instant) {
    let times = Times(entry.count, entry.logged.is_some());
    let sender = Sender(entry.pid, entry.count > 1);
    log::warn!("{}{times} {sender}: {}", sig.as_str(), meaning(sig));
    entry.count = 0;
    entry.logged = Some(now);
}

/// " received", or how many arrived since the last line.
struct Times(u32, bool);

impl core::fmt::Display for Times {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match *self {
            Times(1, false) => f.write_str(" received"),
            Times(n, false) => write!(f, " received {n} times"),
            Times(n, true) => write!(
                f,
                " received {n} more time{} since the last line about it",
                if n == 1 { "" } else { "s" }
            ),
        }
    }
}

/// Who sent it (pid 0: the kernel), and whether that was the last of several.
struct Sender(u32, bool);

impl core::fmt::Display for Sender {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let last = if self.1 { "the last " } else { "" };
        match self.0 {
            0 => write!(f, "({last}from the kernel)"),
            pid => write!(f, "({last}from pid {pid})"),
        }
    }
}

/// What the agent does about a held signal, in an operator's words.
fn meaning(sig: Signal) -> &'static str {
    match sig {
        Signal::SIGHUP => {
            "ignored: watchkeeper has no reload; restart it to load a new config (the watchdog \
             stays armed across a restart)"
        }
        Signal::SIGTSTP | Signal::SIGTTIN | Signal::SIGTTOU => {
            "ignored: a stopped agent stops feeding the watchdog and the board resets (SIGSTOP \
             cannot be ignored: do not send it)"
        }
        Signal::SIGXCPU => {
            "ignored: a CPU time limit (RLIMIT_CPU or RLIMIT_RTTIME) was reached; at its hard \
             limit the kernel kills watchkeeper: remove the limit"
        }
        Signal::SIGXFSZ => {
            "ignored: a write went past the file size limit (RLIMIT_FSIZE) and failed: remove \
             the limit"
        }
        Signal::SIGPWR => "ignored: power events are for init; watchkeeper keeps feeding",
        _ => "ignored: it means nothing to watchkeeper (`watchkeeper status` shows its state)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_and_ending_are_disjoint_and_fatal_by_default() {
        let held = held_set();
        for sig in ENDING.iter().chain(&IGNORED) {
            assert!(!held.contains(*sig), "{sig} must not be held");
        }
        assert!(held.contains(Signal::SIGHUP) && held.contains(Signal::SIGUSR1));
        assert!(!held.contains(Signal::SIGCHLD) && !held.contains(Signal::SIGKILL));
    }

    #[test]
    fn counts_and_senders_read_well() {
        assert_eq!(Times(1, false).to_string(), " received");
        assert_eq!(Times(3, false).to_string(), " received 3 times");
        assert_eq!(
            Times(1, true).to_string(),
            " received 1 more time since the last line about it"
        );
        assert_eq!(Sender(0, false).to_string(), "(from the kernel)");
        assert_eq!(Sender(42, true).to_string(), "(the last from pid 42)");
        assert!(meaning(Signal::SIGHUP).contains("restart it to load a new config"));
        assert!(Names.to_string().starts_with("SIGHUP, SIGUSR1, "));
    }
}
