//! Starting a prepared program with `posix_spawn(3)`, without allocating, and reaping it
//! with `waitpid(2)`.
//!
//! Everything `posix_spawn` reads is built once, in [`Prepared::new`]: the argv and envp
//! pointer arrays and the strings behind them (the environment is the agent's at startup),
//! the file actions (stdin from `/dev/null`) and the attributes. One argv slot is a fixed
//! buffer of [`SLOT_LEN`] bytes, rewritten before each spawn; that is how one prepared
//! launcher serves every component, hearts found at run time included. At spawn time only
//! `posix_spawn` itself runs, and neither libc allocates in it: glibc clones with
//! `CLONE_VM | CLONE_VFORK` onto an `mmap(2)`ed stack and musl onto a stack buffer, and the
//! child only makes system calls before `execve(2)` (tests/no_alloc.rs counts libc's
//! allocator on glibc to prove it).
//!
//! The child starts clean whatever the agent blocks or ignores: an empty signal mask
//! (`POSIX_SPAWN_SETSIGMASK`) and every catchable signal at its default disposition
//! (`POSIX_SPAWN_SETSIGDEF`). It leads a new process group (`POSIX_SPAWN_SETPGROUP` with
//! group 0), so [`signal_group`] reaches whatever it started and did not detach.
//!
//! Invariants: the pointer arrays point into strings owned by the same [`Prepared`], which
//! never changes them after `new` (the slot excepted, between spawns); the file actions and
//! attributes are initialized in `new`, used only through shared references, destroyed in
//! `drop`, and boxed so that their address never changes.
#![allow(unsafe_code)]

use core::cell::Cell;
use core::ffi::{CStr, c_char};
use core::fmt;
use core::mem::MaybeUninit;
use core::ptr;
use std::ffi::{CString, OsStr};
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal, kill, killpg};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;

use crate::limits::MAX_NAME_LEN;

/// Bytes of the rewritable argv slot, its terminating NUL included.
pub(crate) const SLOT_LEN: usize = MAX_NAME_LEN + 1;

/// What can go wrong preparing a program (at startup).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PrepareError {
    /// An argument holds a NUL byte, which `execve(2)` cannot pass.
    Nul(String),
    /// `posix_spawn_file_actions_*` or `posix_spawnattr_*` failed (out of memory).
    Libc(&'static str, Errno),
}

impl fmt::Display for PrepareError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PrepareError::Nul(arg) => write!(f, "the argument {arg:?} contains a NUL byte"),
            PrepareError::Libc(call, errno) => write!(f, "{call} failed: {}", errno.desc()),
        }
    }
}

/// One argument of a program to prepare.
pub(crate) enum Arg<'a> {
    Fixed(&'a OsStr),
    /// The slot rewritten by each [`Prepared::spawn`] (at most one counts).
    Slot,
}

/// A program ready to be spawned many times without allocating.
pub(crate) struct Prepared {
    /// Owns what `argv` and `envp` point to; the program's path first.
    strings: Box<[CString]>,
    slot: Box<[Cell<u8>; SLOT_LEN]>,
    argv: Box<[*mut c_char]>,
    envp: Box<[*mut c_char]>,
    actions: Box<libc::posix_spawn_file_actions_t>,
    attr: Box<libc::posix_spawnattr_t>,
}

fn cstring(arg: &OsStr) -> Result<CString, PrepareError> {
    CString::new(arg.as_bytes()).map_err(|_| PrepareError::Nul(arg.to_string_lossy().into_owned()))
}

fn check(call: &'static str, rc: libc::c_int) -> Result<(), PrepareError> {
    match rc {
        0 => Ok(()),
        errno => Err(PrepareError::Libc(call, Errno::from_raw(errno))),
    }
}

/// Left out of a spawned program's environment (see `sd_notify(3)`, `sd_watchdog_enabled(3)`).
const SERVICE_MANAGER_VARIABLES: [&str; 3] = ["NOTIFY_SOCKET", "WATCHDOG_PID", "WATCHDOG_USEC"];

impl Prepared {
    /// Prepares `program` (run as is: no `PATH` search), with `args` after it, and the
    /// agent's current environment, less the service manager's notify variables.
    pub fn new(program: &OsStr, args: &[Arg<'_>]) -> Result<Self, PrepareError> {
        let slot: Box<[Cell<u8>; SLOT_LEN]> = Box::new([const { Cell::new(0) }; SLOT_LEN]);
        let mut strings = vec![cstring(program)?];
        // A CString's bytes stay put when the CString itself moves.
        let mut argv = vec![strings[0].as_ptr().cast_mut()];
        for arg in args {
            argv.push(match arg {
                Arg::Fixed(arg) => {
                    let arg = cstring(arg)?;
                    let at = arg.as_ptr().cast_mut();
                    strings.push(arg);
                    at
                }
                Arg::Slot => slot.as_ptr().cast::<c_char>().cast_mut(),
            });
        }
        argv.push(ptr::null_mut());
        let mut envp = Vec::new();
        for (key, value) in std::env::vars_os() {
            // The service manager's notify variables are for the agent, its main process:
            // a repair that inherited them could speak for it.
            if SERVICE_MANAGER_VARIABLES.iter().any(|v| key == *v) {
                continue;
            }
            let mut pair = key;
            pair.push("=");
            pair.push(value);
            let pair = cstring(&pair)?;
            envp.push(pair.as_ptr().cast_mut());
            strings.push(pair);
        }
        envp.push(ptr::null_mut());

        let mut actions = Box::new(MaybeUninit::<libc::posix_spawn_file_actions_t>::uninit());
        // SAFETY: posix_spawn_file_actions_init(3p) initializes the object it is given;
        // `actions` is valid for writes and boxed, so it stays at this address.
        check("posix_spawn_file_actions_init", unsafe {
            libc::posix_spawn_file_actions_init(actions.as_mut_ptr())
        })?;
        // SAFETY: initialized just above (posix_spawn_file_actions_init(3p)).
        let mut actions: Box<libc::posix_spawn_file_actions_t> =
            unsafe { Box::from_raw(Box::into_raw(actions).cast()) };
        let mut attr = Box::new(MaybeUninit::<libc::posix_spawnattr_t>::uninit());
        // SAFETY: as for the file actions: posix_spawnattr_init(3p) initializes the object.
        let attr_rc = unsafe { libc::posix_spawnattr_init(attr.as_mut_ptr()) };
        if attr_rc != 0 {
            // SAFETY: initialized above, not used after (posix_spawn_file_actions_destroy(3p)).
            unsafe { libc::posix_spawn_file_actions_destroy(&mut *actions) };
            return Err(PrepareError::Libc(
                "posix_spawnattr_init",
                Errno::from_raw(attr_rc),
            ));
        }
        // SAFETY: initialized just above (posix_spawnattr_init(3p)).
        let attr: Box<libc::posix_spawnattr_t> =
            unsafe { Box::from_raw(Box::into_raw(attr).cast()) };
        // From here on, `Drop` destroys both objects, on the error paths too.
        let mut prepared = Prepared {
            strings: strings.into_boxed_slice(),
            slot,
            argv: argv.into_boxed_slice(),
            envp: envp.into_boxed_slice(),
            actions,
            attr,
        };
        prepared.configure()?;
        Ok(prepared)
    }

    fn configure(&mut self) -> Result<(), PrepareError> {
        let actions: *mut libc::posix_spawn_file_actions_t = &mut *self.actions;
        let attr: *mut libc::posix_spawnattr_t = &mut *self.attr;
        // The child's stdin; glibc and musl copy the path (posix_spawn_file_actions_addopen(3p)).
        let dev_null = c"/dev/null";
        // SAFETY: `actions` was initialized by posix_spawn_file_actions_init; the path is a
        // NUL-terminated string (posix_spawn_file_actions_addopen(3p)).
        check("posix_spawn_file_actions_addopen", unsafe {
            libc::posix_spawn_file_actions_addopen(
                actions,
                libc::STDIN_FILENO,
                dev_null.as_ptr(),
                libc::O_RDONLY,
                0,
            )
        })?;
        let mut catchable = SigSet::all();
        catchable.remove(Signal::SIGKILL);
        catchable.remove(Signal::SIGSTOP);
        let flags = libc::POSIX_SPAWN_SETSIGMASK
            | libc::POSIX_SPAWN_SETSIGDEF
            | libc::POSIX_SPAWN_SETPGROUP;
        // SAFETY: `attr` was initialized by posix_spawnattr_init; the sets are valid
        // sigset_t values the calls copy (posix_spawnattr_setsigmask(3p),
        // posix_spawnattr_setsigdefault(3p), posix_spawnattr_setpgroup(3p),
        // posix_spawnattr_setflags(3p): the flags fit a short).
        unsafe {
            check(
                "posix_spawnattr_setsigmask",
                libc::posix_spawnattr_setsigmask(attr, SigSet::empty().as_ref()),
            )?;
            check(
                "posix_spawnattr_setsigdefault",
                libc::posix_spawnattr_setsigdefault(attr, catchable.as_ref()),
            )?;
            check(
                "posix_spawnattr_setpgroup",
                libc::posix_spawnattr_setpgroup(attr, 0),
            )?;
            check(
                "posix_spawnattr_setflags",
                libc::posix_spawnattr_setflags(attr, flags as libc::c_short),
            )?;
        }
        Ok(())
    }

    /// Spawns the program with `slot` (at most [`SLOT_LEN`] - 1 bytes, no NUL; longer is
    /// cut) in the slot argument. Allocates nothing.
    pub fn spawn(&self, slot: &[u8]) -> Result<Pid, Errno> {
        let len = slot.len().min(SLOT_LEN - 1);
        let bytes = slot[..len].iter().take_while(|b| **b != 0);
        let mut end = 0;
        for (cell, byte) in self.slot.iter().zip(bytes) {
            cell.set(*byte);
            end += 1;
        }
        if let Some(cell) = self.slot.get(end) {
            cell.set(0);
        }
        let mut pid: libc::pid_t = 0;
        let path: &CStr = match self.strings.first() {
            Some(program) => program,
            None => return Err(Errno::ENOENT),
        };
        // SAFETY: posix_spawn(3p): `path`, every argv and envp entry are NUL-terminated
        // strings owned by `self` (the slot was NUL-terminated above) and both arrays end in
        // a null pointer; the file actions and attributes were initialized in `new`. The
        // child cannot write to our memory (glibc and musl run it on their own stack and it
        // only makes system calls before execve(2)), and posix_spawn returns after the exec,
        // so the slot may change again once it returns.
        let rc = unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &*self.actions,
                &*self.attr,
                self.argv.as_ptr(),
                self.envp.as_ptr(),
            )
        };
        match rc {
            0 => Ok(Pid::from_raw(pid)),
            errno => Err(Errno::from_raw(errno)),
        }
    }
}

impl Drop for Prepared {
    fn drop(&mut self) {
        // SAFETY: both were initialized in `new` and are not used after this
        // (posix_spawn_file_actions_destroy(3p), posix_spawnattr_destroy(3p)).
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut *self.actions);
            libc::posix_spawnattr_destroy(&mut *self.attr);
        }
    }
}

/// How a spawned process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Code(i32),
    Signal(Signal),
    /// Reaped by someone else (`ECHILD`): nothing is known.
    Unknown,
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(code) => write!(f, "exit status {code}"),
            Exit::Signal(signal) => write!(f, "killed by {}", signal.as_str()),
            Exit::Unknown => f.write_str("exit status unknown"),
        }
    }
}

/// Reaps `pid` if it has ended, without waiting.
pub fn reap(pid: Pid) -> Option<Exit> {
    match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => Some(Exit::Code(code)),
        Ok(WaitStatus::Signaled(_, signal, _)) => Some(Exit::Signal(signal)),
        Err(Errno::ECHILD) => Some(Exit::Unknown),
        // Still running (or EINTR): the next pass looks again.
        Ok(_) | Err(_) => None,
    }
}

/// Sends `signal` to the process group `pid` leads; to `pid` alone if the group is gone
/// (the process moved itself to another group).
pub(crate) fn signal_group(pid: Pid, signal: Signal) -> Result<(), Errno> {
    match killpg(pid, signal) {
        Err(Errno::ESRCH) => kill(pid, signal),
        done => done,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use nix::sys::signal::{SigHandler, SigmaskHow, pthread_sigmask, signal};

    use super::*;

    fn prepared(args: &[&str]) -> Prepared {
        let (program, args) = args.split_first().unwrap();
        let args: Vec<Arg<'_>> = args
            .iter()
            .map(|a| match *a {
                "SLOT" => Arg::Slot,
                a => Arg::Fixed(OsStr::new(a)),
            })
            .collect();
        Prepared::new(OsStr::new(program), &args).unwrap()
    }

    fn wait(pid: Pid) -> Exit {
        for _ in 0..2000 {
            if let Some(exit) = reap(pid) {
                return exit;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{pid} did not end within 20 s");
    }

    fn wait_for_file(path: &Path) {
        for _ in 0..2000 {
            if path.exists() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("{} did not appear within 20 s", path.display());
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("wk-spawn-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_slot_is_rewritten_for_each_spawn() {
        let program = prepared(&["/bin/sh", "-c", "test \"$1\" = abc", "sh", "SLOT"]);
        assert_eq!(wait(program.spawn(b"abc").unwrap()), Exit::Code(0));
        assert_eq!(wait(program.spawn(b"abcd").unwrap()), Exit::Code(1));
        assert_eq!(wait(program.spawn(b"ab").unwrap()), Exit::Code(1));
        assert_eq!(wait(program.spawn(b"abc").unwrap()), Exit::Code(0));
    }

    #[test]
    fn a_long_slot_value_is_cut() {
        let long = [b'x'; SLOT_LEN + 10];
        let script = format!("test \"$1\" = {}", "x".repeat(SLOT_LEN - 1));
        let program = prepared(&["/bin/sh", "-c", &script, "sh", "SLOT"]);
        assert_eq!(wait(program.spawn(&long).unwrap()), Exit::Code(0));
    }

    #[test]
    fn the_child_reads_dev_null_and_leads_its_own_group() {
        let program = prepared(&[
            "/bin/sh",
            "-c",
            "test \"$(readlink /proc/self/fd/0)\" = /dev/null || exit 1; test \"$(cut -d' ' -f5 /proc/$$/stat)\" = $$ || exit 2",
        ]);
        assert_eq!(wait(program.spawn(b"").unwrap()), Exit::Code(0));
    }

    #[test]
    fn the_child_starts_with_no_signal_blocked_or_ignored() {
        // This test thread blocks SIGUSR1 and the process ignores SIGHUP, as the agent may.
        let mut usr1 = SigSet::empty();
        usr1.add(Signal::SIGUSR1);
        pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&usr1), None).unwrap();
        // SAFETY: installs SIG_IGN, no handler code runs (signal(2)).
        unsafe { signal(Signal::SIGHUP, SigHandler::SigIgn) }.unwrap();
        // grep reads its own status: a shell would clear its mask before running anything.
        let blocked = prepared(&[
            "/bin/grep",
            "-Eq",
            "^SigBlk:[[:space:]]+0+$",
            "/proc/self/status",
        ]);
        // Signals 1 to 31: glibc's posix_spawn leaves its two internal ones (32 and 33)
        // ignored in every child it starts.
        let ignored = prepared(&[
            "/bin/sh",
            "-c",
            "ign=$(sed -n 's/^SigIgn:\t//p' /proc/self/status); test $(( 0x$ign & 0x7fffffff )) = 0",
        ]);
        let exits = [
            wait(blocked.spawn(b"").unwrap()),
            wait(ignored.spawn(b"").unwrap()),
        ];
        pthread_sigmask(SigmaskHow::SIG_UNBLOCK, Some(&usr1), None).unwrap();
        assert_eq!(exits, [Exit::Code(0); 2], "[blocked, ignored]");
    }

    #[test]
    // glibc reports the exec error through the memory a CLONE_VM|CLONE_VFORK child shares;
    // qemu-user (how the armv7 build is tested) runs that child as a fork, so the error
    // never comes back there. On a real armv7 board it does.
    #[cfg_attr(
        all(target_arch = "arm", target_env = "gnu"),
        ignore = "qemu-user does not share memory with a vfork child"
    )]
    fn a_missing_program_is_an_error_not_a_child() {
        let program = prepared(&["/nonexistent/program"]);
        assert_eq!(program.spawn(b""), Err(Errno::ENOENT));
    }

    #[test]
    fn a_nul_in_an_argument_is_refused() {
        let args = [Arg::Fixed(OsStr::new("a\0b"))];
        let refused = Prepared::new(OsStr::new("/bin/true"), &args);
        assert!(matches!(refused, Err(PrepareError::Nul(_))));
    }

    #[test]
    fn the_group_signal_reaches_what_the_child_started() {
        let dir = temp("group");
        let script = format!(
            "(touch {d}/started; sleep 2; touch {d}/survived) & sleep 30",
            d = dir.display()
        );
        let program = prepared(&["/bin/sh", "-c", &script]);
        let pid = program.spawn(b"").unwrap();
        wait_for_file(&dir.join("started"));
        signal_group(pid, Signal::SIGKILL).unwrap();
        assert_eq!(wait(pid), Exit::Signal(Signal::SIGKILL));
        std::thread::sleep(Duration::from_secs(4));
        assert!(
            !dir.join("survived").exists(),
            "the background job outlived its group's SIGKILL"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }
}
