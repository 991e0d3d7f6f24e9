//! `watchkeeper exec NAME -- PROGRAM [ARGS...]`: starts a daemon that speaks sd_notify
//! under supervision, in place. One line in an init script
//! (`exec watchkeeper exec sensord -- /usr/sbin/sensord`) and the daemon, unchanged, is
//! supervised as under systemd's `Type=notify` with `WatchdogSec=`.
//!
//! It writes its own pid to the component's pidfile (the one the agent reads, see
//! [`Config::pidfile`](crate::config::Config::pidfile)), sets what `sd_notify(3)` and
//! `sd_watchdog_enabled(3)` read (`NOTIFY_SOCKET`, `WATCHDOG_USEC` from the component's
//! timeout, `WATCHDOG_PID`), and execs the program: the same process, so the pid the agent
//! read is the daemon's, and the agent sees its death at once (a pinned pidfile process).
//!
//! A daemon says `READY=1` once: sent before the agent listens (both started by init at
//! boot, or the daemon by an early init script), it would be lost and the daemon taken for
//! one that never got ready. So the program is executed once a datagram can reach the
//! socket, or after the component's `grace` if none can: then its messages count from the
//! moment the agent listens.
//!
//! Invariants: the program is always started. A config that does not load (the last good
//! one is used, as the agent does), a name that is no listening component, a pidfile that
//! cannot be written or an agent that does not listen is said on stderr, and the program
//! starts unsupervised, or with its messages not yet counted: a typo must not keep a
//! service from starting.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::cli::startup;
use crate::os::atomic;

/// How often an absent listener is looked for again.
const LISTENER_POLL: Duration = Duration::from_millis(50);

/// The program could not be executed.
pub struct ExecError {
    program: OsString,
    error: io::Error,
}

impl fmt::Display for ExecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot execute {:?}: {}", self.program, self.error)
    }
}

/// Prepares the supervision of component `name` and executes `program` with `args`;
/// returns only if the program cannot be executed.
pub fn exec(config_path: &Path, name: &str, program: &OsStr, args: &[OsString]) -> ExecError {
    let mut command = Command::new(program);
    command.args(args);
    let (config, errors) = startup::load_config(config_path);
    for error in &errors {
        eprintln!("watchkeeper exec: {error}");
    }
    match config.component(name).filter(|c| c.liveness.listens()) {
        None => eprintln!(
            "watchkeeper exec: {} has no component {name:?} with liveness = \"notify\" or \"both\": starting {} unsupervised",
            config_path.display(),
            Path::new(program).display()
        ),
        Some(component) => {
            let pid = std::process::id();
            if let Some(pidfile) = config.pidfile(component)
                && let Err(e) = write_pidfile(&pidfile, pid)
            {
                eprintln!(
                    "watchkeeper exec: cannot write {}: {e}; the agent will not count {name}'s messages until its pidfile names it",
                    pidfile.display()
                );
            }
            command
                .env("NOTIFY_SOCKET", &config.notify.socket)
                .env(
                    "WATCHDOG_USEC",
                    component.policy.timeout.as_micros().to_string(),
                )
                .env("WATCHDOG_PID", pid.to_string());
            await_listener(&config.notify.socket, component.policy.grace, program);
        }
    }
    ExecError {
        program: program.to_owned(),
        error: command.exec(),
    }
}

/// Waits until a datagram sent to `socket` would reach a listener, for at most `bound`.
fn await_listener(socket: &Path, bound: Duration, program: &OsStr) {
    let Ok(probe) = UnixDatagram::unbound() else {
        return;
    };
    let started = Instant::now();
    if probe.connect(socket).is_ok() {
        return;
    }
    eprintln!(
        "watchkeeper exec: no agent listens on {} yet: waiting for it, at most {bound:?} (the grace)",
        socket.display()
    );
    while started.elapsed() < bound {
        std::thread::sleep(LISTENER_POLL);
        if probe.connect(socket).is_ok() {
            return;
        }
    }
    eprintln!(
        "watchkeeper exec: still no agent on {}: starting {}; its messages count once the agent listens",
        socket.display(),
        Path::new(program).display()
    );
}

/// Replaces the pidfile atomically (a reader never sees it half written), creating its
/// directory if need be.
fn write_pidfile(path: &Path, pid: u32) -> Result<(), nix::errno::Errno> {
    use nix::errno::Errno;
    let (Some(dir), Some(file)) = (path.parent(), path.file_name().and_then(OsStr::to_str)) else {
        return Err(Errno::EINVAL);
    };
    atomic::make_dirs(dir)?;
    let dir = nix::fcntl::open(
        dir,
        nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    atomic::replace(&dir, file, format!("{pid}\n").as_bytes(), false)
}
