//! Logging: the `log` crate's macros, written to stderr or to the kernel log, never
//! blocking the loop.
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
//! Never blocking: a log nobody drains (a wedged logger, a console held by XOFF, a full
//! pipe) must not stop the passes, or a dead component stays "alive" and the watchdog is
//! no longer fed. So every write is non-blocking, and a line that cannot be written whole
//! at once is dropped and counted; the first line written after that says how many were
//! dropped. How stderr is written is chosen once, at [`init`], from what fd 2 is:
//! - a pipe, FIFO, tty or other device: through a private open file description,
//!   `/proc/self/fd/2` opened `O_WRONLY|O_NONBLOCK|O_NOCTTY|O_CLOEXEC`. Setting
//!   O_NONBLOCK on fd 2 itself would change the description it shares with init's console
//!   and with the repairs, which would then see EAGAIN on their own writes.
//! - a socket (journald's stream), which cannot be reopened (ENXIO): send(2) on fd 2 with
//!   `MSG_DONTWAIT|MSG_NOSIGNAL`.
//! - a regular file: fd 2 itself. Such writes never wait for a reader, and a reopen would
//!   not share the offset of a `>` redirection.
//! - anything else (no /proc, a hung-up tty, a pipe without reader): fd 2 after
//!   `poll(POLLOUT, 0)` says it has room.
//!
//! A line fits in PIPE_BUF, so a pipe or FIFO takes it whole or not at all. A tty or a
//! socket may take only its head: that line is counted as dropped too, and a newline is
//! written before anything else, so the head stands alone and the next line starts clean
//! (what was lost is then said by the count). Losing a line's tail is the least bad
//! choice: waiting for room blocks, and a later write of the tail could land after other
//! writers' lines. EPIPE (the reader is gone) drops the line like any other failure:
//! SIGPIPE is ignored (see [`crate::os::signals`]).
//!
//! Invariants:
//! - Logging a record allocates nothing: lines longer than [`MAX_LOG_LINE`] are cut and end
//!   with "…".
//! - Switching targets checks that /dev/kmsg opens; records after the switch allocate
//!   nothing (the path is copied at the switch; opening it uses a stack buffer).
//! - A failed log write is counted, never reported elsewhere: there is nowhere else.

use core::fmt::{self, Write as _};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock, PoisonError};

use log::{Level, Log, Metadata, Record};
use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::stat::{Mode, SFlag, fstat};
use nix::unistd::write;

use crate::limits::MAX_LOG_LINE;

/// The environment variable holding the filter.
pub(crate) const FILTER_ENV: &str = "WATCHKEEPER_LOG";
const DEFAULT_FILTER: &str = "info";
const CUT_MARK: &str = "…";
const STDERR_PATH: &str = "/proc/self/fd/2";

// A line must go into a pipe whole or not at all (pipe(7): writes of at most PIPE_BUF
// bytes are atomic).
const _: () = assert!(MAX_LOG_LINE <= nix::libc::PIPE_BUF);

static LOGGER: OnceLock<Logger> = OnceLock::new();
static SINK: Mutex<Sink> = Mutex::new(Sink {
    kmsg: None,
    stderr: Stderr::Polled,
    dropped: 0,
    mid_line: false,
});

/// Where records go, and what was lost on the way.
struct Sink {
    /// The kernel log device while logging there; `None` means stderr.
    kmsg: Option<PathBuf>,
    stderr: Stderr,
    /// Lines dropped since the last line written.
    dropped: u64,
    /// The last write took only the head of a line: a newline comes first.
    mid_line: bool,
}

/// How stderr is written (see the module doc).
enum Stderr {
    Private(OwnedFd),
    Socket,
    RegularFile,
    Polled,
}

/// Installs the logger, writing to stderr. Call once at startup; later calls do nothing.
pub fn init() {
    let logger = LOGGER.get_or_init(|| {
        sink().stderr = open_stderr();
        Logger {
            filter: env_logger::Builder::from_env(
                env_logger::Env::new().filter_or(FILTER_ENV, DEFAULT_FILTER),
            )
            .build(),
        }
    });
    if log::set_logger(logger).is_ok() {
        log::set_max_level(logger.filter.filter());
    }
}

fn open_stderr() -> Stderr {
    let kind = fstat(std::io::stderr()).map(|st| SFlag::from_bits_truncate(st.st_mode));
    match kind {
        Ok(kind) if kind & SFlag::S_IFMT == SFlag::S_IFSOCK => Stderr::Socket,
        Ok(kind) if kind & SFlag::S_IFMT == SFlag::S_IFREG => Stderr::RegularFile,
        _ => open(
            STDERR_PATH,
            OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_or(Stderr::Polled, Stderr::Private),
    }
}

/// Sends every later record to the kernel log through `path` (normally `/dev/kmsg`).
pub fn use_kmsg(path: &Path) -> Result<(), LogError> {
    open_kmsg(path).map_err(|errno| LogError::OpenKmsg {
        path: path.to_owned(),
        errno,
    })?;
    let mut sink = sink();
    sink.kmsg = Some(path.to_owned());
    // A line cut on stderr is not ended in the kernel log, where each write is a record.
    sink.mid_line = false;
    Ok(())
}

fn open_kmsg(path: &Path) -> Result<OwnedFd, Errno> {
    open(
        path,
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Sends every later record to stderr (tests switch back after using a kmsg stand-in).
#[cfg(test)]
fn use_stderr() {
    sink().kmsg = None;
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
        if self.filter.matches(record) {
            sink().emit(record.level(), *record.args());
        }
    }

    fn flush(&self) {}
}

/// The lock keeps a line from racing a target switch or another line. Poisoning is
/// ignored: the guarded state stays valid whatever panicked.
fn sink() -> std::sync::MutexGuard<'static, Sink> {
    SINK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What one non-blocking write took.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Written {
    All,
    Part,
    Nothing,
}

fn written(result: Result<usize, Errno>, len: usize) -> Written {
    match result {
        Ok(n) if n >= len => Written::All,
        Ok(0) | Err(_) => Written::Nothing,
        Ok(_) => Written::Part,
    }
}

impl Sink {
    fn emit(&mut self, level: Level, message: fmt::Arguments<'_>) {
        let target = match self.kmsg {
            Some(_) => Target::Kmsg {
                pid: std::process::id(),
            },
            None => Target::Stderr,
        };
        if self.mid_line {
            // One byte: taken whole or not at all.
            if self.put(b"\n") != Written::All {
                self.dropped += 1;
                return;
            }
            self.mid_line = false;
        }
        if self.dropped > 0 {
            let notice = format_line(
                target,
                Level::Warn,
                format_args!("{}", Dropped(self.dropped)),
            );
            if !self.put_line(notice.as_bytes()) {
                self.dropped += 1;
                return;
            }
            self.dropped = 0;
        }
        if !self.put_line(format_line(target, level, message).as_bytes()) {
            self.dropped += 1;
        }
    }

    /// Writes a whole line, or returns false; a line cut short is ended by the next write.
    fn put_line(&mut self, line: &[u8]) -> bool {
        match self.put(line) {
            Written::All => true,
            Written::Part => {
                self.mid_line = true;
                false
            }
            Written::Nothing => false,
        }
    }

    fn put(&self, bytes: &[u8]) -> Written {
        let result = match (&self.kmsg, &self.stderr) {
            (Some(path), _) => open_kmsg(path).and_then(|kmsg| write(&kmsg, bytes)),
            (None, Stderr::Private(fd)) => write(fd, bytes),
            (None, Stderr::Socket) => send_nonblocking(std::io::stderr().as_fd(), bytes),
            (None, Stderr::RegularFile) => write(std::io::stderr(), bytes),
            (None, Stderr::Polled) => {
                let stderr = std::io::stderr();
                if has_room(stderr.as_fd()) {
                    write(stderr, bytes)
                } else {
                    Err(Errno::EAGAIN)
                }
            }
        };
        written(result, bytes.len())
    }
}

/// send(2) that neither waits for room nor raises SIGPIPE.
fn send_nonblocking(fd: BorrowedFd<'_>, bytes: &[u8]) -> Result<usize, Errno> {
    use nix::sys::socket::{MsgFlags, send};
    send(
        fd.as_raw_fd(),
        bytes,
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
    )
}

/// Whether `fd` can take a write now (a zero-timeout poll).
fn has_room(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
    matches!(poll(&mut fds, PollTimeout::ZERO), Ok(1))
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLOUT) && !r.contains(PollFlags::POLLERR))
}

/// The notice that replaces the lines lost.
struct Dropped(u64);

impl fmt::Display for Dropped {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines = if self.0 == 1 { "line" } else { "lines" };
        write!(
            f,
            "{} log {lines} dropped: the log was not writable without waiting",
            self.0
        )
    }
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

    /// The tests that switch the target or count drops share the one sink.
    static SERIAL: Mutex<()> = Mutex::new(());

    #[test]
    fn records_go_to_the_chosen_target() {
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
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

    /// Reads what is in the FIFO now, without waiting.
    fn drain(reader: &std::fs::File) -> String {
        let mut text = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match nix::unistd::read(reader, &mut buf) {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(n) => text.extend_from_slice(&buf[..n]),
                Err(e) => panic!("reading the FIFO: {e}"),
            }
        }
        String::from_utf8(text).unwrap()
    }

    #[test]
    fn a_kmsg_nobody_drains_drops_and_counts_lines() {
        use std::os::unix::fs::OpenOptionsExt;
        let _serial = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
        let logger = Logger {
            filter: env_logger::Builder::new().parse_filters("info").build(),
        };
        let fifo = std::env::temp_dir().join(format!("watchkeeper-fifo-{}", std::process::id()));
        let _ = std::fs::remove_file(&fifo);
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let open_reader = || {
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NONBLOCK)
                .open(&fifo)
                .unwrap()
        };
        let reader = open_reader();
        use_kmsg(&fifo).unwrap();
        // Far more than a pipe holds; on a blocking write this thread would hang.
        const LINES: usize = 2000;
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..LINES {
                    logger.log(
                        &Record::builder()
                            .level(Level::Info)
                            .args(format_args!("record {i:04} {}", "x".repeat(80)))
                            .build(),
                    );
                }
                done.send(()).unwrap();
            });
            let waited = finished.recv_timeout(std::time::Duration::from_secs(30));
            if waited.is_err() {
                // Unblock the writer so the scope can end and the failure be reported.
                while finished.try_recv().is_err() {
                    let _ = drain(&reader);
                }
                panic!("logging blocked on a kernel log nobody drains");
            }
        });
        let taken = drain(&reader).lines().count();
        assert!(taken > 0 && taken < LINES, "{taken} lines went through");
        let info = |text: &str| {
            logger.log(
                &Record::builder()
                    .level(Level::Info)
                    .args(format_args!("{text}"))
                    .build(),
            )
        };
        info("after the drain");
        let pid = std::process::id();
        assert_eq!(
            drain(&reader),
            format!(
                "<4>watchkeeper[{pid}]: {} log lines dropped: the log was not writable without waiting\n\
                 <5>watchkeeper[{pid}]: after the drain\n",
                LINES - taken
            )
        );
        // No reader at all: a blocking open would wait for one forever.
        drop(reader);
        info("nobody reads this");
        let reader = open_reader();
        info("read again");
        assert_eq!(
            drain(&reader),
            format!(
                "<4>watchkeeper[{pid}]: 1 log line dropped: the log was not writable without waiting\n\
                 <5>watchkeeper[{pid}]: read again\n"
            )
        );
        use_stderr();
        std::fs::remove_file(&fifo).unwrap();
    }
}
