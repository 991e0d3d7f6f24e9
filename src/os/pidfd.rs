//! Processes named by pidfiles, pinned by a pidfd (`pidfd_open(2)`, Linux 5.3): the
//! descriptor refers to one process, not to a pid that may be reused, and becomes readable
//! when that process exits, so its death is seen at that instant.
//!
//! Invariants: a pin is kept only for the process the pidfile named when it was read:
//! after the descriptor is opened, the start time in `/proc/PID/stat` is read again and
//! must be the one read before (a pid reused in between is seen as the named process gone).
//! The table is sized at startup and nothing here allocates afterwards. Where `pidfd_open`
//! is refused (ENOSYS on an old kernel, EPERM under seccomp) the agent says so once and
//! the supervisor polls pidfiles every `check_interval`, as before pidfds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, pidfd_open};

use crate::core::supervisor::Process;
use crate::os::heartbeat::start_time;

struct Pin {
    fd: OwnedFd,
    pid: i32,
    start_time: u64,
}

/// One pin per component index.
pub struct Pins {
    table: Box<[Option<Pin>]>,
    unsupported: bool,
}

impl Pins {
    /// A table for `capacity` components.
    pub fn new(capacity: usize) -> Pins {
        Pins {
            table: (0..capacity).map(|_| None).collect(),
            unsupported: false,
        }
    }

    /// Keeps the pin of component `index` on the process `process` describes (as its
    /// pidfile was just read). Returns what to tell the supervisor of the process, and
    /// whether it must poll it (no pin holds it).
    pub fn follow(&mut self, index: usize, process: Process) -> (Process, bool) {
        let Some(slot) = self.table.get_mut(index) else {
            return (process, true);
        };
        let Process::Running { pid, start_time } = process else {
            *slot = None;
            // No pidfile (yet): read it again at every safety-net look until a process
            // is there to pin. A gone process is a death, looked at anyway.
            return (process, process == Process::Unknown);
        };
        if slot
            .as_ref()
            .is_some_and(|p| p.pid == pid && p.start_time == start_time)
        {
            return (process, false);
        }
        *slot = None;
        if self.unsupported {
            return (process, true);
        }
        match pin(pid, start_time) {
            Pinned::Fd(fd) => {
                *slot = Some(Pin {
                    fd,
                    pid,
                    start_time,
                });
                (process, false)
            }
            Pinned::Gone => (Process::Gone { pid }, false),
            Pinned::NotALeader => (process, true),
            Pinned::Unsupported(errno) => {
                self.unsupported = true;
                log::warn!(
                    "pidfd_open is not available ({errno}; Linux 5.3 or later, and no seccomp filter refusing it, are needed): processes named by pidfiles are looked at every check_interval instead of being seen to exit"
                );
                (process, true)
            }
        }
    }

    /// Stops watching component `index` (removed, or its exit reported).
    pub fn forget(&mut self, index: usize) -> Option<i32> {
        self.table
            .get_mut(index)
            .and_then(Option::take)
            .map(|p| p.pid)
    }

    /// Every pinned process, with its component index, for the loop to wait on.
    pub fn pinned(&self) -> impl Iterator<Item = (usize, BorrowedFd<'_>)> {
        self.table
            .iter()
            .enumerate()
            .filter_map(|(index, pin)| pin.as_ref().map(|p| (index, p.fd.as_fd())))
    }
}

enum Pinned {
    Fd(OwnedFd),
    /// Gone, or its pid taken by another process, since the pidfile was read.
    Gone,
    /// The pid is a thread, not a process (EINVAL): polled like before pidfds.
    NotALeader,
    /// This system refuses pidfds.
    Unsupported(Errno),
}

/// A pidfd on `pid` if it is still the process that started at `started`.
fn pin(pid: i32, started: u64) -> Pinned {
    let Some(pid_value) = Pid::from_raw(pid) else {
        return Pinned::Gone;
    };
    let fd = match pidfd_open(pid_value, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(Errno::SRCH) => return Pinned::Gone,
        Err(Errno::INVAL) => return Pinned::NotALeader,
        Err(errno) => return Pinned::Unsupported(errno),
    };
    // The descriptor pins whatever process has the pid now: make sure it is the one read.
    if start_time(pid) == Some(started) {
        Pinned::Fd(fd)
    } else {
        Pinned::Gone
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_child_is_pinned_and_its_exit_makes_the_pin_readable() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        let started = start_time(pid).unwrap();
        let mut pins = Pins::new(4);
        let running = Process::Running {
            pid,
            start_time: started,
        };
        assert_eq!(pins.follow(2, running), (running, false));
        let readable = |pins: &Pins| {
            let (_, fd) = pins.pinned().next().unwrap();
            let mut fds = [rustix::event::PollFd::new(
                &fd,
                rustix::event::PollFlags::IN,
            )];
            let zero = rustix::time::Timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            rustix::event::poll(&mut fds, Some(&zero)).unwrap() == 1
        };
        assert!(!readable(&pins));
        child.kill().unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !readable(&pins) {
            assert!(std::time::Instant::now() < deadline, "exit never seen");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert_eq!(pins.pinned().next().unwrap().0, 2);
        assert_eq!(pins.forget(2), Some(pid));
        assert!(pins.pinned().next().is_none());
        child.wait().unwrap();
        // Reaped: the pid no longer names the process that was read.
        assert_eq!(pins.follow(2, running), (Process::Gone { pid }, false));
    }

    #[test]
    fn a_start_time_that_does_not_match_is_the_named_process_gone() {
        let pid = std::process::id() as i32;
        let mut pins = Pins::new(1);
        let other = Process::Running {
            pid,
            start_time: start_time(pid).unwrap() + 1,
        };
        assert_eq!(pins.follow(0, other), (Process::Gone { pid }, false));
        // No pidfile yet: polled until one names a process.
        assert_eq!(pins.follow(0, Process::Unknown), (Process::Unknown, true));
    }
}
