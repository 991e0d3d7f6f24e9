//! The processes `[boot]` runs: the trial check, started once at startup, and the confirm
//! command, started by the loop when the boot has been healthy long enough.
//!
//! The trial check ([`TrialRun`]) is spawned before the agent hardens itself (so it
//! inherits neither its OOM protection nor its real-time priority), with its stdout on a
//! non-blocking pipe that the loop polls: its end wakes the loop, and what it printed is
//! read into a fixed buffer of [`MAX_TRIAL_OUTPUT`] bytes. A trial file is read at once.
//!
//! The confirm command ([`Confirmer`]) runs like a repair: through a launcher prepared at
//! startup (`watchkeeper confirm-exec -- PROGRAM ARGS...`, which drops the agent's OOM
//! protection and real-time priority and execs the program with stdin from `/dev/null`),
//! so that starting it is one `posix_spawn(3)` that allocates nothing; it leads its own
//! process group, which SIGTERM and then SIGKILL reach on overrun; it is always reaped.
//!
//! Invariant: after startup nothing here allocates; a check or command that cannot be
//! started, fails or overruns is an answer ([`Trial::Unknown`], a failed attempt), never a
//! stop of the loop.

use core::fmt::{self, Write as _};
use std::ffi::{OsStr, OsString};
use std::io::Read as _;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::config::TrialCheck;
use crate::core::boot::Trial;
use crate::limits::{MAX_TRIAL_OUTPUT, MAX_TRIAL_READS};
use crate::os::spawn::{self, Arg, Exit, PrepareError, Prepared};

/// The hidden subcommand the confirm launcher runs as.
pub const LAUNCHER_COMMAND: &str = "confirm-exec";

/// Why the check said what it said, for the log and the history: at most a few dozen bytes
/// plus the output it quotes.
pub type Note = heapless::String<{ MAX_TRIAL_OUTPUT + 64 }>;

/// What the trial check found, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub trial: Trial,
    pub note: Note,
}

/// `text` quoted, cut to fit; escapes keep it on one line and ASCII where it is not text.
fn quoted(out: &mut Note, text: &[u8]) {
    let _ = out.push('"');
    for chunk in text.utf8_chunks() {
        for c in chunk.valid().chars() {
            let _ = match c {
                '"' | '\\' => write!(out, "\\{c}"),
                c if c.is_control() => write!(out, "\\x{:02x}", u32::from(c) & 0xff),
                c => write!(out, "{c}"),
            };
        }
        for b in chunk.invalid() {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    let _ = out.push('"');
}

fn note(args: fmt::Arguments<'_>) -> Note {
    let mut out = Note::new();
    let _ = out.write_fmt(args);
    out
}

/// The check's output or file content, trimmed, judged against `value`.
fn judge(held: &[u8], value: &str, source: &str) -> Checked {
    let text = held.trim_ascii();
    let mut why = note(format_args!("{source} "));
    quoted(&mut why, text);
    let trial = if text == value.as_bytes() {
        Trial::Yes
    } else {
        Trial::No
    };
    Checked { trial, note: why }
}

/// A trial check under way (or already answered).
pub enum TrialRun {
    Done(Checked),
    Running {
        child: Child,
        stdout: ChildStdout,
        value: Option<String>,
        output: heapless::Vec<u8, { MAX_TRIAL_OUTPUT + 1 }>,
        /// Its stdout reached end of file (it exited, or closed it).
        closed: bool,
    },
}

impl TrialRun {
    /// Starts the check (at startup: this allocates).
    pub fn start(check: &TrialCheck) -> TrialRun {
        match check {
            TrialCheck::Always => TrialRun::Done(Checked {
                trial: Trial::Yes,
                note: note(format_args!("every boot is a trial (no trial check)")),
            }),
            TrialCheck::File { path, value } => TrialRun::Done(read_trial_file(path, value)),
            TrialCheck::Command { argv, value } => match spawn_check(argv) {
                Ok((child, stdout)) => TrialRun::Running {
                    child,
                    stdout,
                    value: value.clone(),
                    output: heapless::Vec::new(),
                    closed: false,
                },
                Err(e) => TrialRun::Done(Checked {
                    trial: Trial::Unknown,
                    note: note(format_args!("the trial check cannot start: {e}")),
                }),
            },
        }
    }

    /// The check's stdout, to wake the loop when it prints or ends.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            TrialRun::Running { stdout, closed, .. } if !closed => Some(stdout.as_fd()),
            _ => None,
        }
    }

    /// Reads what the check printed and reaps it; its answer once it has ended. Called every
    /// pass; allocation-free.
    pub fn poll(&mut self) -> Option<&Checked> {
        if let TrialRun::Running {
            child,
            stdout,
            value,
            output,
            closed,
        } = self
        {
            drain(stdout, output, closed);
            let exit = spawn::reap(Pid::from_raw(child.id() as i32))?;
            // What it wrote between the read above and its exit is in the pipe still.
            drain(stdout, output, closed);
            let checked = answer(exit, value.as_deref(), output);
            *self = TrialRun::Done(checked);
        }
        match self {
            TrialRun::Done(checked) => Some(checked),
            TrialRun::Running { .. } => None,
        }
    }

    /// The check overran: kill it (and its group); it is reaped by the next [`Self::poll`].
    pub fn kill(&self) {
        if let TrialRun::Running { child, .. } = self {
            let _ = spawn::signal_group(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
        }
    }
}

/// Reads the check's stdout (non-blocking) until it is empty or closed, or for at most
/// [`MAX_TRIAL_READS`] reads, keeping at most `output`'s capacity: a check that prints more
/// is not left blocked on a full pipe, nor can one that prints without end hold the loop.
fn drain<const N: usize>(
    stdout: &mut ChildStdout,
    output: &mut heapless::Vec<u8, N>,
    closed: &mut bool,
) {
    let mut buf = [0u8; 256];
    for _ in 0..MAX_TRIAL_READS {
        if *closed {
            return;
        }
        match stdout.read(&mut buf) {
            Ok(0) => *closed = true,
            Ok(n) => {
                let room = output.capacity() - output.len();
                let _ = output.extend_from_slice(&buf[..n.min(room)]);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => return,
        }
    }
}

/// The check's answer from how it ended and what it printed.
fn answer(exit: Exit, value: Option<&str>, output: &[u8]) -> Checked {
    let unknown = |why: fmt::Arguments<'_>| Checked {
        trial: Trial::Unknown,
        note: note(why),
    };
    if output.len() > MAX_TRIAL_OUTPUT {
        return unknown(format_args!(
            "the trial check printed more than {MAX_TRIAL_OUTPUT} bytes"
        ));
    }
    match (exit, value) {
        (Exit::Code(0), Some(value)) => judge(output, value, "the trial check printed"),
        (Exit::Code(0), None) => Checked {
            trial: Trial::Yes,
            note: note(format_args!("the trial check exited 0")),
        },
        (Exit::Code(1), None) => Checked {
            trial: Trial::No,
            note: note(format_args!("the trial check exited 1")),
        },
        (exit, _) => unknown(format_args!("the trial check ended with {exit}")),
    }
}

fn spawn_check(argv: &[OsString]) -> std::io::Result<(Child, ChildStdout)> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_PID")
        .env_remove("WATCHDOG_USEC")
        .process_group(0)
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
    fcntl(&stdout, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(std::io::Error::from)?;
    Ok((child, stdout))
}

/// A trial file: read without blocking (a FIFO is refused), at most
/// [`MAX_TRIAL_OUTPUT`] bytes; a missing file says "not a trial".
fn read_trial_file(path: &Path, value: &str) -> Checked {
    let unknown = |why: fmt::Arguments<'_>| Checked {
        trial: Trial::Unknown,
        note: note(why),
    };
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags((OFlag::O_NONBLOCK | OFlag::O_NOCTTY).bits())
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Checked {
                trial: Trial::No,
                note: note(format_args!("{} does not exist", path.display())),
            };
        }
        Err(e) => return unknown(format_args!("{} cannot be read: {e}", path.display())),
    };
    if !file.metadata().is_ok_and(|m| m.is_file()) {
        return unknown(format_args!("{} is not a regular file", path.display()));
    }
    let mut held = Vec::with_capacity(MAX_TRIAL_OUTPUT + 1);
    match file
        .take(MAX_TRIAL_OUTPUT as u64 + 1)
        .read_to_end(&mut held)
    {
        Ok(_) if held.len() > MAX_TRIAL_OUTPUT => unknown(format_args!(
            "{} holds more than {MAX_TRIAL_OUTPUT} bytes",
            path.display()
        )),
        Ok(_) => judge(&held, value, &format!("{} holds", path.display())),
        Err(e) => unknown(format_args!("{} cannot be read: {e}", path.display())),
    }
}

/// The confirm command, prepared, and its run in flight.
pub struct Confirmer {
    launcher: Prepared,
    running: Option<Pid>,
}

impl Confirmer {
    /// Prepares the launcher for `argv` (at startup).
    pub fn new(agent_binary: &Path, argv: &[OsString]) -> Result<Confirmer, PrepareError> {
        let mut args = vec![
            Arg::Fixed(OsStr::new(LAUNCHER_COMMAND)),
            Arg::Fixed(OsStr::new("--")),
        ];
        args.extend(argv.iter().map(|a| Arg::Fixed(a.as_os_str())));
        Ok(Confirmer {
            launcher: Prepared::new(agent_binary.as_os_str(), &args)?,
            running: None,
        })
    }

    /// Starts an attempt. Allocates nothing.
    pub fn start(&mut self) -> Result<Pid, Errno> {
        let pid = self.launcher.spawn(b"")?;
        self.running = Some(pid);
        Ok(pid)
    }

    /// SIGTERM, or SIGKILL when `hard`, to the attempt and its process group.
    pub fn signal(&self, hard: bool) -> Result<(), Errno> {
        let Some(pid) = self.running else {
            return Ok(());
        };
        spawn::signal_group(
            pid,
            if hard {
                Signal::SIGKILL
            } else {
                Signal::SIGTERM
            },
        )
    }

    /// How the attempt ended, once it has; reaped.
    pub fn reap(&mut self) -> Option<Exit> {
        let exit = spawn::reap(self.running?)?;
        self.running = None;
        Some(exit)
    }
}

/// The launcher's side, given the arguments after `confirm-exec`: drop the agent's
/// protections and exec the confirm program. Returns only on failure.
pub fn exec_confirm(args: &[OsString]) -> String {
    let [separator, program, args @ ..] = args else {
        return "confirm-exec: usage: confirm-exec -- PROGRAM [ARGS...]".to_owned();
    };
    if separator != "--" {
        return "confirm-exec: usage: confirm-exec -- PROGRAM [ARGS...]".to_owned();
    }
    if let Err(errno) = crate::os::harden::undo_for_child() {
        eprintln!(
            "confirm-exec: cannot drop the agent's OOM protection and real-time priority: {errno}"
        );
    }
    let error = Command::new(program).args(args).stdin(Stdio::null()).exec();
    format!(
        "confirm-exec: cannot run {}: {error}",
        Path::new(program).display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<OsString> {
        list.iter().map(OsString::from).collect()
    }

    fn wait(run: &mut TrialRun) -> Checked {
        for _ in 0..2000 {
            if let Some(checked) = run.poll() {
                return checked.clone();
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("the trial check did not end within 20 s");
    }

    #[test]
    fn a_check_is_judged_by_its_output_or_its_exit_status() {
        let cases: &[(&[&str], Option<&str>, Trial)] = &[
            (&["/bin/sh", "-c", "echo 1"], Some("1"), Trial::Yes),
            (
                &["/bin/sh", "-c", "printf '  1\\n\\n'"],
                Some("1"),
                Trial::Yes,
            ),
            (&["/bin/sh", "-c", "echo 0"], Some("1"), Trial::No),
            (
                &["/bin/sh", "-c", "echo 1; exit 2"],
                Some("1"),
                Trial::Unknown,
            ),
            (&["/bin/true"], None, Trial::Yes),
            (&["/bin/false"], None, Trial::No),
            (&["/bin/sh", "-c", "exit 3"], None, Trial::Unknown),
            (&["/bin/sh", "-c", "kill -9 $$"], None, Trial::Unknown),
            (&["/nonexistent/check"], None, Trial::Unknown),
            (
                &["/bin/sh", "-c", "head -c 300 /dev/zero | tr '\\0' 1"],
                Some("1"),
                Trial::Unknown,
            ),
        ];
        for (argv, value, expected) in cases {
            let check = TrialCheck::Command {
                argv: args(argv),
                value: value.map(str::to_owned),
            };
            let checked = wait(&mut TrialRun::start(&check));
            assert_eq!(checked.trial, *expected, "{argv:?}: {}", checked.note);
        }
    }

    /// Its output is read after its exit too: a check that prints and exits between one
    /// read and the reap is judged by what it printed (a race, so run many times).
    #[test]
    fn output_printed_just_before_the_exit_is_kept() {
        let check = TrialCheck::Command {
            argv: args(&["/bin/sh", "-c", "echo 1"]),
            value: Some("1".to_owned()),
        };
        for attempt in 0..50 {
            // Polled without a pause, so that some exit falls between a read and the reap
            // (the first, under qemu-user, all but always: its code not yet translated).
            let mut run = TrialRun::start(&check);
            let checked = loop {
                if let Some(checked) = run.poll() {
                    break checked.clone();
                }
            };
            assert_eq!(
                checked.trial,
                Trial::Yes,
                "attempt {attempt}: {}",
                checked.note
            );
        }
    }

    /// A check that prints without end (here `yes`) is read a bounded amount per poll: the
    /// agent's loop goes on, and the check is killed at its timeout.
    #[test]
    fn a_check_that_prints_without_end_does_not_hold_a_poll() {
        let check = TrialCheck::Command {
            argv: args(&["/bin/sh", "-c", "yes 1"]),
            value: Some("1".to_owned()),
        };
        let mut run = TrialRun::start(&check);
        std::thread::sleep(std::time::Duration::from_millis(100));
        for _ in 0..20 {
            assert!(run.poll().is_none());
        }
        run.kill();
        let checked = wait(&mut run);
        assert_eq!(checked.trial, Trial::Unknown, "{}", checked.note);
    }

    #[test]
    fn a_hung_check_is_killed_and_unknown() {
        let check = TrialCheck::Command {
            argv: args(&["/bin/sh", "-c", "sleep 30 & sleep 30"]),
            value: None,
        };
        let mut run = TrialRun::start(&check);
        assert!(run.poll().is_none());
        run.kill();
        let checked = wait(&mut run);
        assert_eq!(checked.trial, Trial::Unknown);
        assert!(checked.note.contains("SIGKILL"), "{}", checked.note);
    }

    #[test]
    fn a_trial_file_is_read_without_blocking() {
        let dir = std::env::temp_dir().join(format!("wk-trial-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("upgrade_available");
        let check = |value: &str| {
            let check = TrialCheck::File {
                path: file.clone(),
                value: value.to_owned(),
            };
            wait(&mut TrialRun::start(&check))
        };
        assert_eq!(check("1").trial, Trial::No, "missing");
        std::fs::write(&file, "1\n").unwrap();
        assert_eq!(check("1").trial, Trial::Yes);
        assert_eq!(check("yes").trial, Trial::No);
        std::fs::remove_file(&file).unwrap();
        nix::unistd::mkfifo(&file, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let fifo = check("1");
        assert_eq!(fifo.trial, Trial::Unknown, "{}", fifo.note);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_launcher_refuses_bad_usage() {
        assert!(exec_confirm(&args(&["/bin/true"])).contains("usage"));
        assert!(exec_confirm(&args(&["x", "/bin/true"])).contains("usage"));
    }
}
