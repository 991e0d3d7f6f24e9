//! The `watchkeeper` command line: argument parsing and dispatch, nothing else.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage.

use std::ffi::OsString;
use std::fmt;
use std::io::{self, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use nix::errno::Errno;
use watchkeeper::cli::exec::{self, ExecError};
use watchkeeper::cli::shutdown::{self, ShutdownError};
use watchkeeper::cli::startup::{DisarmError, RunError};
use watchkeeper::cli::{startup, status, version};
use watchkeeper::config::{self, ConfigError, DEFAULT_PATH};
use watchkeeper::core::name::check_name;
use watchkeeper::os::heartbeat::{self, TouchError};
use watchkeeper::os::{confirm, logging, repair, rundir};

mod unwind;

const USAGE: &str = "\
usage: watchkeeper [--config FILE] COMMAND

commands:
  run              supervise the components and feed the hardware watchdog (the agent)
  check            validate the config and print the effective settings
  status [--json]  components, open problems, hold state and reset history
  beat NAME|PATH   touch a heartbeat: a component's or heart's by NAME, or a file by PATH
  clear-hold       let a running agent force resets again after a reboot-loop hold
  disarm           write the magic 'V': the watchdog stops counting (maintenance only)
  shutdown         at a reboot or power-off: stop the agent, leave the watchdog counting
                   [watchdog] shutdown_timeout, record the shutdown
  exec NAME -- PROGRAM [ARGS...]
                   run PROGRAM in place as component NAME, a daemon that speaks
                   sd_notify: its pidfile, NOTIFY_SOCKET, WATCHDOG_USEC, WATCHDOG_PID

options:
  -c, --config FILE  config file (default /etc/watchkeeper.toml)
  -h, --help         this help
  -V, --version      version, git revision and target

logging: WATCHKEEPER_LOG=debug (or warn, error...; RUST_LOG syntax), default info";

/// Bad usage: said with the usage text, exit code 2.
enum Usage {
    NotUtf8(OsString),
    /// The option (`-c` or `--config`) given last, without its file.
    NeedsFile(String),
    NoCommand,
    UnknownCommand(String),
    /// `exec` without `NAME -- PROGRAM`.
    Exec,
}

impl fmt::Display for Usage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Usage::NotUtf8(arg) => write!(f, "argument {arg:?} is not valid UTF-8"),
            Usage::NeedsFile(option) => write!(f, "{option} needs a file"),
            Usage::NoCommand => f.write_str("no command given"),
            Usage::UnknownCommand(words) => write!(f, "unknown command: {words}"),
            Usage::Exec => f.write_str("exec needs a component name, then -- and the program"),
        }
    }
}

/// Why a command did not do its job: bad usage (exit code 2) or a failure (exit code 1).
enum Failure {
    Usage(Usage),
    Config(ConfigError),
    /// `run` could not find its own binary, which launches repairs.
    NoBinary(io::Error),
    Run(RunError),
    /// `clear-hold` could not leave its request in the run directory.
    ClearHold(Errno),
    Disarm(DisarmError),
    Shutdown(ShutdownError),
    Exec(ExecError),
    /// The command's output could not be written (other than to a reader gone away).
    Output(io::Error),
    /// `beat` could not touch this heartbeat.
    Touch(PathBuf, TouchError),
    /// `beat NAME` names neither a component nor a heart of this config.
    NoSuchName {
        name: String,
        config_path: PathBuf,
    },
    /// `beat NAME` names a component that beats through sd_notify messages only.
    NoHeartbeatFile(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Usage(usage) => usage.fmt(f),
            Failure::Config(e) => e.fmt(f),
            Failure::NoBinary(e) => write!(f, "cannot find the watchkeeper binary: {e}"),
            Failure::Run(e) => e.fmt(f),
            Failure::ClearHold(errno) => write!(f, "cannot ask the agent: {}", errno.desc()),
            Failure::Disarm(e) => e.fmt(f),
            Failure::Shutdown(e) => e.fmt(f),
            Failure::Exec(e) => e.fmt(f),
            Failure::Output(e) => write!(f, "cannot write the output: {e}"),
            Failure::Touch(path, e) => write!(f, "cannot touch {}: {e}", path.display()),
            Failure::NoSuchName { name, config_path } => write!(
                f,
                "no component or heart named {name:?} in {}",
                config_path.display()
            ),
            Failure::NoHeartbeatFile(name) => write!(
                f,
                "component {name:?} has no heartbeat file (liveness = \"notify\"): it beats with sd_notify messages"
            ),
        }
    }
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The repair launcher must stay minimal: no logger, no config.
    if args.first().is_some_and(|a| a == repair::LAUNCHER_COMMAND) {
        say(&repair::exec_repair(&args[1..]));
        return ExitCode::from(1);
    }
    if args.first().is_some_and(|a| a == confirm::LAUNCHER_COMMAND) {
        say(&confirm::exec_confirm(&args[1..]));
        return ExitCode::from(1);
    }
    logging::init();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(usage)) => {
            say(&format!("watchkeeper: {usage}\n\n{USAGE}"));
            ExitCode::from(2)
        }
        Err(failure) => {
            say(&format!("watchkeeper: {failure}"));
            ExitCode::from(1)
        }
    }
}

fn dispatch(args: &[OsString]) -> Result<(), Failure> {
    let mut config_path = PathBuf::from(DEFAULT_PATH);
    let mut words: Vec<String> = Vec::new();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let text = arg
            .to_str()
            .ok_or_else(|| Failure::Usage(Usage::NotUtf8(arg.clone())))?;
        match text {
            "-h" | "--help" => {
                return emit(&format!("{USAGE}\n"));
            }
            "-V" | "--version" => {
                return emit(&format!("{}\n", version::LINE));
            }
            "-c" | "--config" => {
                let value = iter
                    .next()
                    .ok_or_else(|| Failure::Usage(Usage::NeedsFile(text.to_owned())))?;
                config_path = PathBuf::from(value);
            }
            // The program's arguments are its own: taken as they are, options included.
            "exec" if words.is_empty() => {
                let (name, program, rest) = match iter.as_slice() {
                    [name, dashes, program, rest @ ..] if dashes == "--" => (name, program, rest),
                    _ => return Err(Failure::Usage(Usage::Exec)),
                };
                let name = name
                    .to_str()
                    .ok_or_else(|| Failure::Usage(Usage::NotUtf8(name.clone())))?;
                return Err(Failure::Exec(exec::exec(&config_path, name, program, rest)));
            }
            _ => words.push(text.to_owned()),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["run"] => {
            let binary = std::env::current_exe().map_err(Failure::NoBinary)?;
            Err(Failure::Run(startup::run(&config_path, &binary)))
        }
        ["check"] => {
            let config = config::load(&config_path).map_err(Failure::Config)?;
            emit(&config.to_string())
        }
        ["status"] => emit(&status_of(&config_path, false)),
        ["status", "--json"] => emit(&status_of(&config_path, true)),
        ["beat", target] => beat(&config_path, target),
        ["clear-hold"] => {
            let config = config::load(&config_path).map_err(Failure::Config)?;
            let path =
                rundir::request_clear_hold(&config.agent.run_dir).map_err(Failure::ClearHold)?;
            emit(&format!(
                "asked the agent to clear the reboot-loop hold ({}); see `watchkeeper status`\n",
                path.display()
            ))
        }
        ["disarm"] => {
            let message = startup::disarm(&config_path).map_err(Failure::Disarm)?;
            say(&message);
            Ok(())
        }
        ["shutdown"] => {
            let message = shutdown::shutdown(&config_path).map_err(Failure::Shutdown)?;
            say(&message);
            Ok(())
        }
        [] => Err(Failure::Usage(Usage::NoCommand)),
        other => Err(Failure::Usage(Usage::UnknownCommand(other.join(" ")))),
    }
}

/// Writes a command's output. A reader that went away (`| head -c1`) ends the command
/// quietly and successfully; any other failure to write is a failure, said on stderr,
/// never a panic.
fn emit(text: &str) -> Result<(), Failure> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(Failure::Output(e)),
    }
}

/// Writes a line to stderr; if even that fails there is no one left to tell.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

/// Status works even with a broken config: it shows the directories the agent uses then
/// (the last good config's, or those salvaged from the broken one).
fn status_of(config_path: &Path, json: bool) -> String {
    let (config, errors) = startup::load_config(config_path);
    for error in &errors {
        say(&format!("watchkeeper: {error}"));
    }
    if !errors.is_empty() {
        say(&format!(
            "watchkeeper: showing the status from {} and {}, the directories `run` uses with this config",
            config.agent.run_dir.display(),
            config.agent.state_dir.display()
        ));
    }
    status::render(&config.agent.run_dir, &config.agent.state_dir, json)
}

/// Touches a heartbeat; nothing but a regular file is ever opened (see
/// [`heartbeat::touch`]): `beat /dev/watchdog` must not arm a disarmed watchdog.
fn beat(config_path: &Path, target: &str) -> Result<(), Failure> {
    let failed = |path: &Path, e: TouchError| Failure::Touch(path.to_owned(), e);
    if target.contains('/') {
        let path = Path::new(target);
        return heartbeat::touch(path, false).map_err(|e| failed(path, e));
    }
    let config = config::load(config_path).map_err(Failure::Config)?;
    if let Some(component) = config.component(target) {
        let Some(path) = &component.heartbeat else {
            return Err(Failure::NoHeartbeatFile(target.to_owned()));
        };
        return heartbeat::touch(path, false).map_err(|e| failed(path, e));
    }
    match &config.hearts {
        Some(hearts) if check_name(target.as_bytes()).is_ok() => {
            // A heart's file holds its timeout: touch it, never create it empty.
            let path = hearts.dir.join(target);
            heartbeat::touch(&path, true).map_err(|e| failed(&path, e))
        }
        _ => Err(Failure::NoSuchName {
            name: target.to_owned(),
            config_path: config_path.to_owned(),
        }),
    }
}
