//! Logging: the `log` crate's macros, written to stderr or to the kernel log.
//!
//! env_logger only parses the filter (`WATCHKEEPER_LOG`, RUST_LOG syntax, default "info");
//! its writer is not used because it grows a heap buffer. Ours formats each record into a
//! stack buffer and writes it with one write(2), so a line is never split or interleaved.
//!
//! Targets:
//! - stderr: `watchkeeper: LEVEL message`. No timestamp: init systems add their own.
//! - `/dev/kmsg`: `<PRI>watchkeeper[PID]: message`, so messages land in the kernel log and,
//!   through a pstore console, survive the reset the agent may cause. Error is 3 (err), warn
//!   4 (warning), debug and trace 7 (debug). Info is 5 (notice), not 6: the agent's info
//!   messages are the rare, significant ones a technician needs after a reset (startup,
//!   deaths, repairs), and notice still reaches consoles set to `loglevel=6`.
//!   /dev/kmsg is opened for each line: the kernel rate-limits each open file to 10 lines
//!   per 5 s (`printk_devkmsg=ratelimit`, the default) and silently drops the rest, while a
//!   fresh open starts a fresh limit. The agent logs state changes only, so the extra
//!   open(2) per line costs nothing that matters.
//!
//! Invariants:
//! - Logging a record allocates nothing: lines longer than [`MAX_LOG_LINE`] are cut and end
//!   with "…".
//! - Switching targets checks that /dev/kmsg opens; records after the switch allocate
//!   nothing (the path is copied at the switch; opening it uses a stack buffer).
//! - A failed log write is dropped: there is nowhere left to report it.

use core::fmt::{self, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use log::{Level, Log, Metadata, Record};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::write;

use crate::limits::MAX_LOG_LINE;

/// The environment variable holding the filter.
pub const FILTER_ENV: &str = "WATCHKEEPER_LOG";
const DEFAULT_FILTER: &str = "info";
const CUT_MARK: &str = "…";

static LOGGER: OnceLock<Logger> = OnceLock::new();
/// The kernel log device while logging there; `None` means stderr.
static KMSG: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Installs the logger, writing to stderr. Call once at startup; later calls do nothing.
pub fn init() {
    let logger = LOGGER.get_or_init(|| Logger {
        filter: env_logger::Builder::from_env(
            env_logger::Env::new().filter_or(FILTER_ENV, DEFAULT_FILTER),
        )
        .build(),
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.filter());
    }
}

/// Sends every later record to the kernel log through `path` (normally `/dev/kmsg`).
pub fn use_kmsg(path: &Path) -> Result<(), LogError> {
    open_kmsg(path).map_err(|errno| LogError::OpenKmsg {
        path: path.to_owned(),
        errno,
    })?;
    *sink() = Some(path.to_owned());
    Ok(())
}

fn open_kmsg(path: &Path) -> Result<OwnedFd, Errno> {
    open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())
}

/// Sends every later record to stderr (tests switch back after using a kmsg stand-in).
#[cfg(test)]
fn use_stderr() {
    *sink() = None;
}

/// Why the kernel log cannot be used.
#[derive(Debug)]
pub enum LogError {
    OpenKmsg { path: PathBuf, errno: Errno },
}

impl fmt::Display for LogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LogError::OpenKmsg { path, errno } => write!(
                f,
                "{}: cannot open the kernel log for writing: {errno}: logging stays on stderr \
                 (is /dev mounted, and does watchkeeper run as root?)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for LogError {}

struct Logger {
    filter: env_logger::Logger,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.filter.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.filter.matches(record) {
            return;
        }
        let sink = sink();
        // Nowhere to report a failed log write: it is dropped.
        let _ = match &*sink {
            Some(path) => open_kmsg(path).and_then(|kmsg| {
                let target = Target::Kmsg {
                    pid: std::process::id(),
                };
                write(
                    &kmsg,
                    format_line(target, record.level(), *record.args()).as_bytes(),
                )
            }),
            None => write(
                std::io::stderr(),
                format_line(Target::Stderr, record.level(), *record.args()).as_bytes(),
            ),
        };
    }

    fn flush(&self) {}
}

/// The lock keeps a line from racing a target switch. Poisoning is ignored: the guarded
/// path stays valid whatever panicked.
fn sink() -> std::sync::MutexGuard<'static, Option<PathBuf>> {
    KMSG.lock().unwrap_or_else(PoisonError::into_inner)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Stderr,
    Kmsg { pid: u32 },
}

type Line = heapless::String<MAX_LOG_LINE>;

/// One complete line, newline included, cut to fit [`MAX_LOG_LINE`].
fn format_line(target: Target, level: Level, message: fmt::Arguments<'_>) -> Line {
    let mut line = Line::new();
    let mut out = Cut {
        line: &mut line,
        room: MAX_LOG_LINE - CUT_MARK.len() - 1,
        cut: false,
    };
    // Cut never fails: it drops what does not fit.
    let _ = match target {
        Target::Stderr => write!(out, "watchkeeper: {level} {message}"),
        Target::Kmsg { pid } => {
            write!(
                out,
                "<{}>watchkeeper[{pid}]: {message}",
                kmsg_priority(level)
            )
        }
    };
    let cut = out.cut;
    // Both fit: `room` kept space for them.
    if cut {
        let _ = line.push_str(CUT_MARK);
    }
    let _ = line.push('\n');
    line
}

fn kmsg_priority(level: Level) -> u8 {
    match level {
        Level::Error => 3,
        Level::Warn => 4,
        Level::Info => 5,
        Level::Debug | Level::Trace => 7,
    }
}

/// Appends up to `room` bytes, cutting at a character boundary, and remembers if it cut.
struct Cut<'a> {
    line: &'a mut Line,
    room: usize,
    cut: bool,
}

impl fmt::Write for Cut<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.cut {
            return Ok(());
        }
        let left = self.room - self.line.len();
        let mut end = s.len().min(left);
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        self.cut = end < s.len();
        self.line.push_str(&s[..end]).map_err(|_| fmt::Error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KMSG: Target = Target::Kmsg { pid: 42 };

    fn line(target: Target, level: Level, message: &str) -> String {
        format_line(target, level, format_args!("{message}"))
            .as_str()
            .to_owned()
    }

    #[test]
    fn stderr_format() {
        assert_eq!(
            line(Target::Stderr, Level::Warn, "component db is dead"),
            "watchkeeper: WARN component db is dead\n"
        );
    }

    #[test]
    fn kmsg_priorities() {
        assert_eq!(line(KMSG, Level::Error, "e"), "<3>watchkeeper[42]: e\n");
        assert_eq!(line(KMSG, Level::Warn, "w"), "<4>watchkeeper[42]: w\n");
        assert_eq!(line(KMSG, Level::Info, "i"), "<5>watchkeeper[42]: i\n");
        assert_eq!(line(KMSG, Level::Debug, "d"), "<7>watchkeeper[42]: d\n");
        assert_eq!(line(KMSG, Level::Trace, "t"), "<7>watchkeeper[42]: t\n");
    }

    #[test]
    fn long_lines_are_cut_and_marked() {
        let room = MAX_LOG_LINE - CUT_MARK.len() - 1;
        let exact = "x".repeat(room - "watchkeeper: INFO ".len());
        let fits = line(Target::Stderr, Level::Info, &exact);
        assert_eq!(fits.len(), room + 1);
        assert!(fits.ends_with("x\n"));

        let long = line(Target::Stderr, Level::Info, &format!("{exact}y"));
        assert_eq!(long.len(), MAX_LOG_LINE);
        assert!(long.ends_with("x…\n"), "{long}");

        // Two-byte characters: the cut must not split one.
        let wide = line(KMSG, Level::Info, &"é".repeat(MAX_LOG_LINE));
        assert!(
            wide.len() <= MAX_LOG_LINE && wide.ends_with("é…\n"),
            "{wide}"
        );
    }

    #[test]
    fn kmsg_open_failure_names_the_path() {
        let err = use_kmsg(Path::new("/nonexistent/kmsg")).unwrap_err();
        assert!(err.to_string().starts_with("/nonexistent/kmsg: "), "{err}");
    }

    #[test]
    fn records_go_to_the_chosen_target() {
        let logger = Logger {
            filter: env_logger::Builder::new().parse_filters("warn").build(),
        };
        let record = |level| {
            logger.log(
                &Record::builder()
                    .level(level)
                    .args(format_args!("test record"))
                    .build(),
            )
        };
        let kmsg = std::env::temp_dir().join(format!("watchkeeper-kmsg-{}", std::process::id()));
        std::fs::write(&kmsg, "").unwrap();
        use_kmsg(&kmsg).unwrap();
        record(Level::Warn);
        record(Level::Info);
        use_stderr();
        record(Level::Info);
        let written = std::fs::read_to_string(&kmsg).unwrap();
        std::fs::remove_file(&kmsg).unwrap();
        let expected = format!("<4>watchkeeper[{}]: test record\n", std::process::id());
        assert_eq!(written, expected);
        assert!(logger.enabled(&Metadata::builder().level(Level::Error).build()));
        assert!(!logger.enabled(&Metadata::builder().level(Level::Info).build()));
    }
}
