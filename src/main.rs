//! The `watchkeeper` command line: argument parsing and dispatch, nothing else.
//!
//! Exit codes: 0 success, 1 the command failed (the message says why), 2 bad usage.

use std::ffi::OsString;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use watchkeeper::config::{self, DEFAULT_PATH};
use watchkeeper::{heartbeat, logging, repair, rundir, startup, status, version};
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

options:
  -c, --config FILE  config file (default /etc/watchkeeper.toml)
  -h, --help         this help
  -V, --version      version, git revision and target

logging: WATCHKEEPER_LOG=debug (or warn, error...; RUST_LOG syntax), default info";

enum Failure {
    Usage(String),
    Failed(String),
}

fn main() -> ExitCode {
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    // The repair launcher must stay minimal: no logger, no config.
    if args.first().is_some_and(|a| a == repair::LAUNCHER_COMMAND) {
        say(&repair::exec_repair(&args[1..]));
        return ExitCode::from(1);
    }
    logging::init();
    match dispatch(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(message)) => {
            say(&format!("watchkeeper: {message}\n\n{USAGE}"));
            ExitCode::from(2)
        }
        Err(Failure::Failed(message)) => {
            say(&format!("watchkeeper: {message}"));
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
            .ok_or_else(|| Failure::Usage(format!("argument {arg:?} is not valid UTF-8")))?;
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
                    .ok_or_else(|| Failure::Usage(format!("{text} needs a file")))?;
                config_path = PathBuf::from(value);
            }
            _ => words.push(text.to_owned()),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    match words.as_slice() {
        ["run"] => {
            let binary = std::env::current_exe()
                .map_err(|e| Failure::Failed(format!("cannot find the watchkeeper binary: {e}")))?;
            Err(Failure::Failed(startup::run(&config_path, &binary)))
        }
        ["check"] => {
            let config = config::load(&config_path).map_err(|e| Failure::Failed(e.to_string()))?;
            emit(&config.to_string())
        }
        ["status"] => emit(&status_of(&config_path, false)),
        ["status", "--json"] => emit(&status_of(&config_path, true)),
        ["beat", target] => beat(&config_path, target),
        ["clear-hold"] => {
            let config = config::load(&config_path).map_err(|e| Failure::Failed(e.to_string()))?;
            let path = rundir::request_clear_hold(&config.agent.run_dir)
                .map_err(|e| Failure::Failed(format!("cannot ask the agent: {}", e.desc())))?;
            emit(&format!(
                "asked the agent to clear the reboot-loop hold ({}); see `watchkeeper status`\n",
                path.display()
            ))
        }
        ["disarm"] => {
            let message = startup::disarm(&config_path).map_err(Failure::Failed)?;
            say(&message);
            Ok(())
        }
        [] => Err(Failure::Usage("no command given".to_owned())),
        other => Err(Failure::Usage(format!(
            "unknown command: {}",
            other.join(" ")
        ))),
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
        Err(e) => Err(Failure::Failed(format!("cannot write the output: {e}"))),
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
    let failed = |path: &Path, e: heartbeat::TouchError| {
        Failure::Failed(format!("cannot touch {}: {e}", path.display()))
    };
    if target.contains('/') {
        let path = Path::new(target);
        return heartbeat::touch(path, false).map_err(|e| failed(path, e));
    }
    let config = config::load(config_path).map_err(|e| Failure::Failed(e.to_string()))?;
    if let Some(component) = config.component(target) {
        return heartbeat::touch(&component.heartbeat, false)
            .map_err(|e| failed(&component.heartbeat, e));
    }
    match &config.hearts {
        Some(hearts) if config::check_name(target.as_bytes()).is_ok() => {
            // A heart's file holds its timeout: touch it, never create it empty.
            let path = hearts.dir.join(target);
            heartbeat::touch(&path, true).map_err(|e| failed(&path, e))
        }
        _ => Err(Failure::Failed(format!(
            "no component or heart named {target:?} in {}",
            config_path.display()
        ))),
    }
}
