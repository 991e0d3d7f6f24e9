//! Repair processes: started without blocking the loop, killed when they overstay,
//! always reaped.
//!
//! Every repair runs through a launcher built at startup: the agent's own binary as
//! `watchkeeper repair-exec RUN_DIR -- PROGRAM ARGS...`, with the component's name written
//! to its stdin. The launcher (a fresh process, free to allocate) puts
//! `WATCHKEEPER_COMPONENT` and `WATCHKEEPER_PROBLEM` in the environment and execs the
//! repair program, after dropping the agent's OOM protection and real-time priority, which
//! the repair and the services it restarts must not inherit. So one prebuilt `Command`
//! serves every component, hearts discovered at run time included, and spawning allocates
//! nothing in the agent.
//! Success is judged by the heartbeat coming back, never by the exit status.

use std::ffi::{OsStr, OsString};
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};

use nix::errno::Errno;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::config::check_name;
use crate::limits::{MAX_COMPONENTS, MAX_NAME_LEN};
use crate::rundir::PROBLEMS;

/// The hidden subcommand the launcher runs as.
pub const LAUNCHER_COMMAND: &str = "repair-exec";

/// Builds the launcher for one repair program (at startup).
pub fn launcher(agent_binary: &Path, run_dir: &Path, argv: &[impl AsRef<OsStr>]) -> Command {
    let mut command = Command::new(agent_binary);
    command
        .arg(LAUNCHER_COMMAND)
        .arg(run_dir)
        .arg("--")
        .args(argv);
    command.stdin(Stdio::piped());
    command
}

/// The repairs in flight, by component index.
pub struct Repairs {
    running: Box<[Option<Child>]>,
    count: usize,
}

impl Default for Repairs {
    fn default() -> Self {
        Repairs {
            running: (0..MAX_COMPONENTS).map(|_| None).collect(),
            count: 0,
        }
    }
}

impl Repairs {
    /// Starts a repair of component `index` (named `name`) through `launcher`.
    pub fn start(
        &mut self,
        index: usize,
        name: &str,
        launcher: &mut Command,
    ) -> std::io::Result<u32> {
        let mut child = launcher.spawn()?;
        if let Some(mut stdin) = child.stdin.take() {
            // Fits the pipe buffer many times over, so it never blocks; if the launcher
            // died already, the reap below reports it.
            let _ = stdin
                .write_all(name.as_bytes())
                .and_then(|()| stdin.write_all(b"\n"));
        }
        let pid = child.id();
        if let Some(slot) = self.running.get_mut(index)
            && slot.replace(child).is_none()
        {
            self.count += 1;
        }
        Ok(pid)
    }

    /// Sends SIGTERM, or SIGKILL when `hard`, to the repair of component `index`.
    pub fn signal(&self, index: usize, hard: bool) -> Result<(), Errno> {
        let Some(Some(child)) = self.running.get(index) else {
            return Ok(());
        };
        let signal = if hard {
            Signal::SIGKILL
        } else {
            Signal::SIGTERM
        };
        kill(Pid::from_raw(child.id() as i32), signal)
    }

    /// Reaps one finished repair, if any: its component index and exit status.
    pub fn reap(&mut self) -> Option<(usize, ExitStatus)> {
        if self.count == 0 {
            return None;
        }
        for (index, slot) in self.running.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Ok(Some(status)) = child.try_wait() {
                *slot = None;
                self.count -= 1;
                return Some((index, status));
            }
        }
        None
    }
}

/// The launcher's side: read the component name from stdin, set the environment and exec
/// the repair program. Returns only on failure.
pub fn exec_repair(run_dir: &Path, argv: &[OsString]) -> String {
    let Some((program, args)) = argv.split_first() else {
        return "repair-exec: no repair program given".to_owned();
    };
    let mut name = [0u8; MAX_NAME_LEN + 1];
    let mut len = 0;
    let mut stdin = std::io::stdin().lock();
    while len < name.len() {
        match stdin.read(&mut name[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return format!("repair-exec: reading the component name: {e}"),
        }
        if name[..len].contains(&b'\n') {
            break;
        }
    }
    let line = name[..len]
        .split(|b| *b == b'\n')
        .next()
        .unwrap_or_default();
    if let Err(why) = check_name(line) {
        return format!("repair-exec: bad component name on stdin: {why}");
    }
    if let Err(errno) = crate::harden::undo_for_child() {
        eprintln!(
            "repair-exec: cannot drop the agent's OOM protection and real-time priority: {errno}"
        );
    }
    let component = OsStr::from_bytes(line);
    let problem: PathBuf = run_dir.join(PROBLEMS).join(component);
    let error = Command::new(program)
        .args(args)
        .env("WATCHKEEPER_COMPONENT", component)
        .env("WATCHKEEPER_PROBLEM", problem)
        .stdin(Stdio::null())
        .exec();
    format!(
        "repair-exec: cannot run {}: {error}",
        Path::new(program).display()
    )
}
