//! Repair processes: started without blocking the loop or allocating, killed when they
//! overstay, always reaped.
//!
//! Every repair runs through a launcher prepared at startup ([`crate::os::spawn`]): the agent's
//! own binary as `watchkeeper repair-exec RUN_DIR NAME -- PROGRAM ARGS...`, where NAME is
//! the prepared argv slot, rewritten with the component's name before each spawn. So one
//! launcher serves every component, hearts discovered at run time included, and starting
//! a repair is one `posix_spawn(3)` that allocates nothing, in Rust or in libc. The
//! launcher (a fresh process, free to allocate) puts `WATCHKEEPER_COMPONENT` and
//! `WATCHKEEPER_PROBLEM` in the environment and execs the repair program with stdin from
//! `/dev/null`, after dropping the agent's OOM protection and real-time priority, which the
//! repair and the services it restarts must not inherit.
//!
//! A repair leads its own process group: on overrun, SIGTERM and then SIGKILL go to the
//! group, so a hung command inside a repair script dies with the script instead of living
//! on, orphaned, beside the next attempt. A service the repair restarts should detach
//! (`setsid`, or an init system) as it would anyway; one left in the group is killed only
//! if the repair overruns. The group is signalled only while its leader is unreaped, so
//! its id cannot belong to anyone else.
//!
//! Success is judged by the heartbeat coming back, never by the exit status.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::core::name::check_name;
use crate::limits::MAX_COMPONENTS;
use crate::os::rundir::PROBLEMS;
use crate::os::spawn::{self, Arg, Exit, PrepareError, Prepared};

/// The hidden subcommand the launcher runs as.
pub const LAUNCHER_COMMAND: &str = "repair-exec";

/// A repair program, prepared to be launched for any component.
pub struct Launcher(Prepared);

/// Prepares the launcher for one repair program (at startup).
pub fn launcher(
    agent_binary: &Path,
    run_dir: &Path,
    argv: &[impl AsRef<OsStr>],
) -> Result<Launcher, PrepareError> {
    let mut args = vec![
        Arg::Fixed(OsStr::new(LAUNCHER_COMMAND)),
        Arg::Fixed(run_dir.as_os_str()),
        Arg::Slot,
        Arg::Fixed(OsStr::new("--")),
    ];
    args.extend(argv.iter().map(|a| Arg::Fixed(a.as_ref())));
    Prepared::new(agent_binary.as_os_str(), &args).map(Launcher)
}

/// The repairs in flight, by component index.
pub struct Repairs {
    running: Box<[Option<Pid>; MAX_COMPONENTS]>,
    count: usize,
}

impl Default for Repairs {
    fn default() -> Self {
        Repairs {
            running: Box::new([None; MAX_COMPONENTS]),
            count: 0,
        }
    }
}

impl Repairs {
    /// Starts a repair of component `index` (named `name`) through `launcher`.
    pub fn start(&mut self, index: usize, name: &str, launcher: &Launcher) -> Result<Pid, Errno> {
        let pid = launcher.0.spawn(name.as_bytes())?;
        if let Some(slot) = self.running.get_mut(index)
            && slot.replace(pid).is_none()
        {
            self.count += 1;
        }
        Ok(pid)
    }

    /// Sends SIGTERM, or SIGKILL when `hard`, to the repair of component `index` and what
    /// it started in its process group.
    pub fn signal(&self, index: usize, hard: bool) -> Result<(), Errno> {
        let Some(Some(pid)) = self.running.get(index) else {
            return Ok(());
        };
        let signal = if hard {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        spawn::signal_group(*pid, signal)
    }

    /// Reaps one finished repair, if any: its component index and how it ended.
    pub fn reap(&mut self) -> Option<(usize, Exit)> {
        if self.count == 0 {
            return None;
        }
        for (index, slot) in self.running.iter_mut().enumerate() {
            let Some(pid) = *slot else { continue };
            if let Some(exit) = spawn::reap(pid) {
                *slot = None;
                self.count -= 1;
                return Some((index, exit));
            }
        }
        None
    }
}

/// The launcher's side, given the arguments after `repair-exec`: check the component name,
/// set the environment and exec the repair program. Returns only on failure.
pub fn exec_repair(args: &[OsString]) -> String {
    let [run_dir, name, separator, program, args @ ..] = args else {
        return "repair-exec: usage: repair-exec RUN_DIR NAME -- PROGRAM [ARGS...]".to_owned();
    };
    if separator != "--" {
        return "repair-exec: usage: repair-exec RUN_DIR NAME -- PROGRAM [ARGS...]".to_owned();
    }
    if let Err(why) = check_name(name.as_bytes()) {
        return format!("repair-exec: bad component name {name:?}: {why}");
    }
    if let Err(errno) = crate::os::harden::undo_for_child() {
        eprintln!(
            "repair-exec: cannot drop the agent's OOM protection and real-time priority: {errno}"
        );
    }
    let problem: PathBuf = Path::new(run_dir).join(PROBLEMS).join(name);
    let error = Command::new(program)
        .args(args)
        .env("WATCHKEEPER_COMPONENT", name)
        .env("WATCHKEEPER_PROBLEM", problem)
        .stdin(Stdio::null())
        .exec();
    format!(
        "repair-exec: cannot run {}: {error}",
        Path::new(program).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    #[test]
    fn the_launcher_refuses_a_bad_name_or_usage() {
        let bad = exec_repair(&args(&["/run", "../x", "--", "/bin/true"]));
        assert!(bad.contains("bad component name"), "{bad}");
        let short = exec_repair(&args(&["/run", "svc", "--"]));
        assert!(short.contains("usage"), "{short}");
        let no_separator = exec_repair(&args(&["/run", "svc", "/bin/true", "x"]));
        assert!(no_separator.contains("usage"), "{no_separator}");
    }
}
