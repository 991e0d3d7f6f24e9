//! `watchkeeper status`: what a technician (or a fleet collector, with `--json`) needs.
//!
//! Reads, never writes: the agent's status snapshot ([`snapshot`]) and the problem files in
//! the run directory, and the reset history in the state directory. Works when the config
//! is broken (the directories are salvaged from it) and when the agent is not running.
//! Ages are computed on the monotonic clock the snapshot was written with.
//!
//! Nothing it reads is trusted: files are looked at without following symlinks and opened
//! non-blocking only once they are known to be regular files (opening a FIFO could hang, a
//! device could be armed or endless), every read is capped, and the pid in the snapshot
//! counts as the agent only if that process started when the snapshot says, in this boot,
//! and is a watchkeeper. Every byte that came from outside is escaped before it reaches a
//! terminal ([`Shown`]) or a JSON string.

use core::fmt::{self, Write as _};
use core::time::Duration;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt as _;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode};

use crate::core::history::{Boot, Confirm, End, History};
use crate::limits::{MAX_COMPONENTS, MAX_STATUS_LEN};
use crate::os::atomic::libc_mode;
use crate::os::heartbeat::{self, Refusal};
use crate::os::rundir::{FED, PROBLEMS, STATUS};
use crate::os::state::{BootId, State, StateError, current_boot_id};
use crate::snapshot::{self, Identity, ParseError, Snapshot};

/// The version of the `status --json` format, its first member `"schema"` (described by
/// `docs/status.schema.json`). Bump it when a field is removed or changes meaning, so that
/// a fleet collector can tell; adding a field does not bump it.
pub const JSON_SCHEMA_VERSION: u32 = 1;
/// Bytes of a problem file shown; the rest is marked as cut.
const PROBLEM_SHOWN: usize = 512;
/// Clock ticks (5 s at USER_HZ 100) by which the start time the agent recorded of itself may
/// differ from the one the kernel shows others: under qemu-user (how the ARM builds are
/// tested) the agent's own `/proc/self/stat` is the emulator's, which dates the start when
/// the emulator had loaded the program, later on a loaded host. A reused pid cannot start
/// that close to the agent it replaces: the kernel would have to go through its whole pid
/// space meanwhile, and the process must also be a watchkeeper to pass the next check.
const START_TIME_SLACK_TICKS: u64 = 500;

/// The running agent's identity, for its snapshot (read once, at startup).
pub(crate) fn agent_identity() -> Identity<BootId> {
    let pid = std::process::id();
    Identity {
        pid,
        start_time: i32::try_from(pid)
            .ok()
            .and_then(heartbeat::start_time)
            .unwrap_or(0),
        boot_id: current_boot_id().unwrap_or_default(),
    }
}

/// Bytes from outside, printable on a terminal: control characters (C0, DEL, C1), bidi
/// overrides, backslashes and bytes that are not UTF-8 are shown as escapes.
pub(crate) struct Shown<'a>(pub &'a [u8]);

impl fmt::Display for Shown<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                match c {
                    '\\' => f.write_str("\\\\")?,
                    '\t' => f.write_str("\\t")?,
                    '\n' => f.write_str("\\n")?,
                    '\r' => f.write_str("\\r")?,
                    c if (c as u32) < 0x80 && c.is_control() => write!(f, "\\x{:02x}", c as u32)?,
                    '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => {
                        write!(f, "\\u{{{:x}}}", c as u32)?
                    }
                    c if c.is_control() => write!(f, "\\u{{{:x}}}", c as u32)?,
                    c => f.write_char(c)?,
                }
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

fn shown(bytes: &[u8]) -> String {
    Shown(bytes).to_string()
}

fn shown_path(path: &Path) -> String {
    shown(path.as_os_str().as_bytes())
}

/// A file read with a cap.
struct Capped {
    bytes: Vec<u8>,
    /// The file holds more than the cap.
    more: bool,
    mtime: i64,
}

fn refusal(st: &FileStat) -> Option<Refusal> {
    match st.st_mode & libc_mode::S_IFMT {
        libc_mode::S_IFREG => None,
        libc_mode::S_IFLNK => Some(Refusal::Symlink),
        _ => Some(Refusal::NotRegular),
    }
}

/// Reads at most `cap` bytes of `dir/name` if it is a regular file: looked at first without
/// following a symlink, so that a FIFO or a device is never opened. `Ok(None)`: missing.
fn read_capped<P: ?Sized + nix::NixPath>(
    dir: impl AsFd + Copy,
    name: &P,
    cap: usize,
) -> Result<Option<Capped>, Refusal> {
    match nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Ok(st) => refusal(&st).map_or(Ok(()), Err)?,
        Err(Errno::ENOENT) => return Ok(None),
        Err(errno) => return Err(Refusal::Unreadable(errno)),
    }
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    let fd = match nix::fcntl::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::ELOOP) => return Err(Refusal::Symlink),
        Err(errno) => return Err(Refusal::Unreadable(errno)),
    };
    // It may have been replaced between the look and the open.
    let st = nix::sys::stat::fstat(&fd).map_err(Refusal::Unreadable)?;
    refusal(&st).map_or(Ok(()), Err)?;
    let mut bytes = vec![0u8; cap];
    let mut len = 0;
    while len < cap {
        match nix::unistd::read(&fd, &mut bytes[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(errno) => return Err(Refusal::Unreadable(errno)),
        }
    }
    bytes.truncate(len);
    let more = len == cap && nix::unistd::read(&fd, &mut [0u8; 1]).is_ok_and(|n| n > 0);
    #[allow(clippy::useless_conversion)] // i32 on armv7
    let mtime = i64::from(st.st_mtime);
    Ok(Some(Capped { bytes, more, mtime }))
}

fn open_dir(dir: impl AsFd, name: &Path) -> Result<OwnedFd, Refusal> {
    let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    nix::fcntl::openat(dir, name, flags, Mode::empty()).map_err(|errno| match errno {
        Errno::ELOOP => Refusal::Symlink,
        Errno::ENOTDIR => Refusal::NotRegular,
        errno => Refusal::Unreadable(errno),
    })
}

/// Says why a directory could not be opened (a non-directory is refused as one).
fn dir_refusal(why: Refusal) -> String {
    match why {
        Refusal::NotRegular => "is not a directory".to_owned(),
        why => why.to_string(),
    }
}

/// What the snapshot file gave.
enum Read {
    Missing,
    Refused(String),
    Bad(ParseError),
    Parsed(Box<Snapshot>),
}

fn read_snapshot(run: &Result<OwnedFd, Refusal>) -> Read {
    let dir = match run {
        Ok(dir) => dir,
        Err(why) => {
            return Read::Refused(format!(
                "cannot be read: its directory {}",
                dir_refusal(*why)
            ));
        }
    };
    match read_capped(dir, STATUS, MAX_STATUS_LEN) {
        Ok(None) => Read::Missing,
        Ok(Some(file)) if file.more => {
            Read::Refused(format!("is larger than {MAX_STATUS_LEN} bytes; not read"))
        }
        Ok(Some(file)) => match snapshot::parse(&file.bytes) {
            Ok(s) => Read::Parsed(Box::new(s)),
            Err(e) => Read::Bad(e),
        },
        Err(why) => Read::Refused(format!("{why}; not read")),
    }
}

/// Whether the process named by a snapshot is the agent that wrote it.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Liveness {
    Running,
    /// No such process (or a zombie).
    Gone,
    /// The pid belongs to a process started at another time.
    Reused,
    /// The snapshot was written in another boot.
    OtherBoot,
    /// The process started then, but it is not a watchkeeper (its command name).
    NotWatchkeeper(Vec<u8>),
}

fn comm(pid: &str) -> Option<Vec<u8>> {
    // The kernel's TASK_COMM_LEN is 16; anything longer is not a command name.
    let mut buf = [0u8; 64];
    let len = crate::os::atomic::read(AT_FDCWD, format!("/proc/{pid}/comm").as_str(), &mut buf)
        .ok()??;
    Some(
        buf[..len]
            .strip_suffix(b"\n")
            .unwrap_or(&buf[..len])
            .to_vec(),
    )
}

fn same_file(a: &str, b: &str) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
        _ => false,
    }
}

fn liveness(id: &Identity<snapshot::Text>, this_boot: Option<&BootId>) -> Liveness {
    if this_boot.is_some_and(|boot| boot.as_bytes() != id.boot_id) {
        return Liveness::OtherBoot;
    }
    let Some(pid) = i32::try_from(id.pid).ok().filter(|pid| *pid > 0) else {
        return Liveness::Gone;
    };
    match heartbeat::start_time(pid) {
        None => return Liveness::Gone,
        Some(started) if started.abs_diff(id.start_time) > START_TIME_SLACK_TICKS => {
            return Liveness::Reused;
        }
        Some(_) => {}
    }
    // The same program as this one (by file, or by name when the agent's binary has
    // been replaced since it started).
    let pid = pid.to_string();
    if same_file(&format!("/proc/{pid}/exe"), "/proc/self/exe") {
        return Liveness::Running;
    }
    match comm(&pid) {
        Some(name) if Some(&name) == comm("self").as_ref() => Liveness::Running,
        Some(name) => Liveness::NotWatchkeeper(name),
        None => Liveness::Gone,
    }
}

/// An entry of the problems directory.
struct Problem {
    name: Vec<u8>,
    noticed_wall: i64,
    content: Result<(Vec<u8>, bool), Refusal>,
}

/// The problems directory: its entries (sorted, at most [`MAX_COMPONENTS`]) and how many
/// more there are, or why it cannot be read.
fn problems(run: &Result<OwnedFd, Refusal>) -> Result<(Vec<Problem>, usize), String> {
    let run = run
        .as_ref()
        .map_err(|why| format!("its run directory {}", dir_refusal(*why)))?;
    let dir = match open_dir(run, Path::new(PROBLEMS)) {
        Ok(dir) => dir,
        Err(Refusal::Unreadable(Errno::ENOENT)) => return Ok((Vec::new(), 0)),
        Err(why) => return Err(dir_refusal(why)),
    };
    // rustix's getdents64 rather than libc's readdir: on 32-bit glibc that is the non-LFS
    // one, which fails with EOVERFLOW where a filesystem's directory offsets are 64-bit.
    let listing = rustix::fs::Dir::read_from(&dir).map_err(|e| listing_failed(e.raw_os_error()))?;
    let mut names = Vec::new();
    for entry in listing {
        let name = entry
            .map_err(|e| listing_failed(e.raw_os_error()))?
            .file_name()
            .to_owned();
        if !name.to_bytes().starts_with(b".") {
            names.push(name);
        }
    }
    names.sort();
    let more = names.len().saturating_sub(MAX_COMPONENTS);
    names.truncate(MAX_COMPONENTS);
    let list = names
        .iter()
        .map(|name| {
            let read = read_capped(&dir, name.as_c_str(), PROBLEM_SHOWN);
            let (noticed_wall, content) = match read {
                Ok(Some(file)) => (file.mtime, Ok((trim(&file.bytes).to_vec(), file.more))),
                Ok(None) => (0, Err(Refusal::Unreadable(Errno::ENOENT))),
                Err(why) => (0, Err(why)),
            };
            Problem {
                name: name.to_bytes().to_vec(),
                noticed_wall,
                content,
            }
        })
        .collect();
    Ok((list, more))
}

fn listing_failed(raw_errno: i32) -> String {
    format!("could not be listed: {}", Errno::from_raw(raw_errno).desc())
}

fn trim(bytes: &[u8]) -> &[u8] {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace())
        .unwrap_or(bytes.len());
    let end = bytes
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .map_or(start, |i| i + 1);
    &bytes[start..end]
}

/// Milliseconds since the agent last fed the watchdog (the `fed` file's mtime, wall clock).
fn fed_age_ms(run: &Result<OwnedFd, Refusal>) -> Option<u64> {
    let st = nix::sys::stat::fstatat(run.as_ref().ok()?, FED, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    if refusal(&st).is_some() {
        return None;
    }
    #[allow(clippy::useless_conversion)] // i32 on armv7
    let fed_ms = i64::from(st.st_mtime) * 1000 + i64::from(st.st_mtime_nsec) / 1_000_000;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    Some(now_ms.saturating_sub(fed_ms).max(0) as u64)
}

type HistoryRead = Result<Result<History, String>, StateError>;

/// Everything `status` looked at.
struct Seen {
    now_ms: u64,
    run_dir: String,
    status_path: String,
    problems_path: String,
    state_dir: String,
    read: Read,
    live: Option<Liveness>,
    fed_age: Option<u64>,
    problems: Result<(Vec<Problem>, usize), String>,
    history: HistoryRead,
    this_boot: Option<BootId>,
}

impl Seen {
    fn running(&self) -> bool {
        self.live == Some(Liveness::Running)
    }

    /// A word for machines and a sentence for people: what became of the agent.
    fn verdict(&self) -> (&'static str, String) {
        let path = &self.status_path;
        match (&self.read, &self.live) {
            (Read::Parsed(s), Some(live)) => {
                let pid = s.agent.identity.pid;
                match live {
                    Liveness::Running => ("running", format!("running (pid {pid})")),
                    Liveness::Gone => (
                        "gone",
                        format!(
                            "NOT RUNNING (no process has the pid {pid} of the snapshot {path}: the agent is gone)"
                        ),
                    ),
                    Liveness::Reused => (
                        "pid_reused",
                        format!(
                            "NOT RUNNING (the pid {pid} in the snapshot is now another process)"
                        ),
                    ),
                    Liveness::NotWatchkeeper(name) => (
                        "not_watchkeeper",
                        format!(
                            "NOT RUNNING (the pid {pid} in the snapshot is now another process: \"{}\", not a watchkeeper)",
                            Shown(name)
                        ),
                    ),
                    Liveness::OtherBoot => (
                        "other_boot",
                        format!("NOT RUNNING (the snapshot {path} was written in another boot)"),
                    ),
                }
            }
            (Read::Parsed(_), None) | (Read::Missing, _) => (
                "no_snapshot",
                format!("NOT RUNNING (no status snapshot at {path})"),
            ),
            (Read::Refused(why), _) => (
                "unreadable_snapshot",
                format!("UNKNOWN (the status snapshot {path} {why})"),
            ),
            (Read::Bad(e), _) => match e.defect {
                snapshot::Defect::OtherVersion(_) => (
                    "other_version",
                    format!("UNKNOWN (the status snapshot {path}: {})", e.defect),
                ),
                _ => (
                    "bad_snapshot",
                    format!("UNKNOWN (the status snapshot {path} is not one: {e})"),
                ),
            },
        }
    }

    /// Index in the history of this boot's record: found by its boot id, or (when the
    /// kernel does not tell the id) the newest record if it is still running.
    fn current_index(&self, history: &History) -> Option<usize> {
        let boots: Vec<&Boot> = history.boots().collect();
        match &self.this_boot {
            Some(id) => boots.iter().rposition(|b| b.boot_id == *id),
            None => boots
                .len()
                .checked_sub(1)
                .filter(|i| boots[*i].end == End::Running),
        }
    }
}

/// Reads everything `status` shows; never fails, what cannot be read is said.
fn look(run_dir: &Path, state_dir: &Path) -> Seen {
    let this_boot = current_boot_id();
    let run = open_dir(AT_FDCWD, run_dir);
    let read = read_snapshot(&run);
    let live = match &read {
        Read::Parsed(s) => Some(liveness(&s.agent.identity, this_boot.as_ref())),
        _ => None,
    };
    Seen {
        now_ms: crate::os::clock::monotonic().as_nanos() / 1_000_000,
        run_dir: shown_path(run_dir),
        status_path: shown_path(&run_dir.join(STATUS)),
        problems_path: shown_path(&run_dir.join(PROBLEMS)),
        state_dir: shown_path(state_dir),
        read,
        live,
        fed_age: fed_age_ms(&run),
        problems: problems(&run),
        history: State::read_only(state_dir),
        this_boot,
    }
}

/// `YYYY-MM-DD HH:MM:SS UTC` from epoch seconds (civil-from-days, proleptic Gregorian).
pub(crate) fn utc(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, ms % 1000 / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// What became of a boot, for people; `current` when it is this boot.
fn end_text(boot: &Boot, current: bool) -> String {
    let uptime = boot
        .uptime_ms
        .map(|ms| format!(" after {} up", human(ms)))
        .unwrap_or_default();
    let (component, reason) = (
        Shown(boot.component.as_bytes()),
        Shown(boot.reason.as_bytes()),
    );
    match boot.end {
        End::Running if current => "current boot".to_owned(),
        End::Running => "ended without a record: how it ended is unknown (a reset whose reason could not be saved, as when the state directory is full or read-only, or a reset before the next boot could record it)".to_owned(),
        End::Forced => format!("reset by watchkeeper{uptime}: {component}: {reason}"),
        End::Unrequested { .. } => reason.to_string(),
        End::Shutdown { .. } => match boot.uptime_ms {
            Some(ms) => format!("{reason}, {} up", human(ms)),
            None => reason.to_string(),
        },
    }
}

/// How a boot's confirmation went, for people (`None` without `[boot]`).
fn confirm_text(boot: &Boot) -> Option<String> {
    let at = boot
        .confirm_uptime_ms
        .map(|ms| format!(" at {} up", human(ms)))
        .unwrap_or_default();
    let note = Shown(boot.confirm_note.as_bytes());
    let words = match boot.confirm {
        Confirm::Unconfigured => return None,
        Confirm::NotTrial => format!("not a trial boot ({note})"),
        Confirm::Trial => format!("trial boot, never confirmed ({note})"),
        Confirm::Confirming => format!("trial boot, confirming since{at}, no outcome recorded"),
        Confirm::Confirmed => format!("trial boot, confirmed{at}"),
        Confirm::Failed => {
            format!("trial boot, NOT confirmed: the confirm command failed{at} ({note})")
        }
    };
    Some(words)
}

/// The boot record of the snapshot, for people: where this boot's confirmation stands.
fn boot_line(b: &snapshot::Boot<snapshot::Text>, now_ms: u64, hold: bool) -> String {
    let mut line = match b.phase.as_slice() {
        b"checking" => "checking whether this is a trial boot".to_owned(),
        b"not-trial" => "not a trial boot: nothing to confirm".to_owned(),
        b"waiting" => {
            let healthy = match b.healthy_since_ms {
                Some(since) => format!(
                    "every critical component alive for {} of the {} needed",
                    human(now_ms.saturating_sub(since)),
                    human(b.confirm_after_ms)
                ),
                None => format!(
                    "not every critical component is alive ({} of health needed)",
                    human(b.confirm_after_ms)
                ),
            };
            format!("trial boot, not confirmed yet: {healthy}")
        }
        b"confirming" => format!("trial boot: confirming (attempt {})", b.attempt),
        b"retrying" => format!(
            "trial boot: confirm attempt {} failed, the next in {}",
            b.attempt,
            human(b.retry_ms.unwrap_or(now_ms).saturating_sub(now_ms))
        ),
        b"confirmed" => "trial boot, confirmed".to_owned(),
        b"failed" => "trial boot, NOT confirmed: every confirm attempt failed (see the log); the board stays up".to_owned(),
        other => format!("{}", Shown(other)),
    };
    if b.unknown {
        line.push_str(" [the trial check could not tell: treated as a trial]");
    }
    if let Some(deadline) = b.deadline_ms.filter(|_| b.phase == b"waiting") {
        let _ = write!(
            line,
            "; deadline in {}",
            human(deadline.saturating_sub(now_ms))
        );
    }
    if hold && unconfirmed_trial(&b.phase) {
        line.push_str("; the reboot-loop hold is suspended until it is confirmed");
    }
    line
}

/// A phase of an unconfirmed trial boot: the hold does not apply.
fn unconfirmed_trial(phase: &[u8]) -> bool {
    matches!(phase, b"waiting" | b"confirming" | b"retrying" | b"failed")
}

/// The word for a boot's end in `status --json`: a record still "running" that is not
/// this boot ended unrecorded.
fn end_word(boot: &Boot, current: bool) -> &'static str {
    match boot.end {
        End::Running if !current => "unrecorded",
        end => end.as_str(),
    }
}

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Renders the status; `json` for machines. Never fails: what cannot be read is said.
pub fn render(run_dir: &Path, state_dir: &Path, json: bool) -> String {
    let seen = look(run_dir, state_dir);
    if json {
        render_json(&seen)
    } else {
        render_text(&seen)
    }
}

fn render_text(seen: &Seen) -> String {
    let mut out = String::new();
    let (_, verdict) = seen.verdict();
    match &seen.read {
        Read::Parsed(s) if seen.running() => {
            let a = &s.agent;
            let _ = writeln!(out, "watchkeeper: {verdict}, config {}", Shown(&a.config));
            let _ = writeln!(out, "fault LED: {}", Shown(&a.led));
            let _ = match seen.fed_age {
                Some(ms) => writeln!(out, "watchdog: last fed {} ago", human(ms)),
                None => writeln!(out, "watchdog: no feed recorded in {}", seen.run_dir),
            };
            let took_over = match a.takeover.as_slice() {
                b"running" => Some(
                    "already running (left armed by an agent before, or started by the bootloader or kernel)",
                ),
                b"stopped" => Some("not running: the agent started it"),
                b"unknown" => Some("unknown whether it was running (the kernel does not tell)"),
                _ => None,
            };
            if let Some(took_over) = took_over {
                let _ = writeln!(out, "watchdog when the agent took it over: {took_over}");
            }
            let _ = writeln!(
                out,
                "reboot-loop hold: {}",
                if a.hold {
                    "YES: forced resets are held back (clear with `watchkeeper clear-hold`)"
                } else {
                    "no"
                }
            );
            if let Some(b) = &s.boot {
                let _ = writeln!(out, "boot: {}", boot_line(b, seen.now_ms, a.hold));
            }
            if a.resetting {
                let _ = writeln!(
                    out,
                    "RESETTING: the board is about to be reset (see the history below)"
                );
            }
            let _ = writeln!(
                out,
                "\n{:<20} {:>4}  {:<10} {:>8}  {:>7}  REASON",
                "COMPONENT", "LED", "STATE", "FOR", "REPAIRS"
            );
            for c in &s.components {
                let age = human(seen.now_ms.saturating_sub(c.since_ms));
                let reason = c.reason.as_deref().map_or("-".to_owned(), shown);
                let _ = writeln!(
                    out,
                    "{:<20} {:>4}  {:<10} {:>8}  {:>7}  {reason}",
                    shown(&c.name),
                    c.position,
                    shown(&c.state),
                    age,
                    c.repairs
                );
            }
            if s.omitted > 0 {
                let _ = writeln!(
                    out,
                    "... and {} more components the snapshot had no room for",
                    s.omitted
                );
            }
            let daemons: Vec<_> = s
                .components
                .iter()
                .filter_map(|c| c.daemon.as_ref().map(|d| (c, d)))
                .collect();
            if !daemons.is_empty() {
                let _ = writeln!(out, "\ndaemons (sd_notify):");
                for (c, d) in daemons {
                    let _ = write!(out, "  {}: ", shown(&c.name));
                    match d.main {
                        Some((pid, _)) => {
                            let _ = write!(
                                out,
                                "pid {pid}, {}, timeout {:?}",
                                if d.ready { "ready" } else { "no READY=1 yet" },
                                Duration::from_micros(d.timeout_us)
                            );
                        }
                        None => out.push_str("no process yet"),
                    }
                    if d.stopping {
                        out.push_str(", stopping");
                    }
                    if !d.status.is_empty() {
                        let _ = write!(out, ": {}", shown(&d.status));
                    }
                    out.push('\n');
                }
            }
        }
        _ => {
            let _ = writeln!(out, "watchkeeper: {verdict}");
        }
    }
    let _ = writeln!(out, "\nproblems in {}:", seen.problems_path);
    match &seen.problems {
        Ok((list, more)) => {
            if list.is_empty() {
                let _ = writeln!(out, "  none");
            }
            for p in list {
                let _ = match &p.content {
                    Ok((content, cut)) => writeln!(
                        out,
                        "  {}: {}{} (noticed {})",
                        Shown(&p.name),
                        Shown(content),
                        if *cut { " [cut]" } else { "" },
                        utc(p.noticed_wall)
                    ),
                    Err(why) => writeln!(out, "  {}: {why}; not read", Shown(&p.name)),
                };
            }
            if *more > 0 {
                let _ = writeln!(out, "  ... and {more} more entries");
            }
        }
        Err(why) => {
            let _ = writeln!(out, "  unreadable: {why}");
        }
    }
    let _ = writeln!(out, "\nreset history in {} (newest first):", seen.state_dir);
    match &seen.history {
        Ok(Ok(h)) => {
            let current = seen.current_index(h);
            let count = h.boots().len();
            for (i, b) in h.boots().enumerate().rev() {
                let cleared = if b.hold_cleared {
                    " [hold cleared by an operator]"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  boot {:<5} started {}: {}{cleared}",
                    b.number,
                    utc(b.started_wall),
                    end_text(b, current == Some(i))
                );
                if let Some(confirm) = confirm_text(b) {
                    let _ = writeln!(out, "             {confirm}");
                }
            }
            if count == 0 {
                let _ = writeln!(out, "  empty");
            }
            if let (None, Some(id)) = (current, &seen.this_boot) {
                let _ = writeln!(
                    out,
                    "  this boot (id {}) is not on record: its start could not be written (see the agent's log)",
                    Shown(id.as_bytes())
                );
            }
        }
        Ok(Err(defect)) => {
            let _ = writeln!(out, "  unreadable: {}", Shown(defect.as_bytes()));
        }
        Err(e) => {
            let _ = writeln!(out, "  unreadable: {}", Shown(e.to_string().as_bytes()));
        }
    }
    out
}

fn json_bytes(out: &mut String, bytes: &[u8]) {
    json_string(out, &String::from_utf8_lossy(bytes));
}

fn json_opt_u64(out: &mut String, value: Option<u64>) {
    match value {
        Some(v) => {
            let _ = write!(out, "{v}");
        }
        None => out.push_str("null"),
    }
}

fn render_json(seen: &Seen) -> String {
    let (state, detail) = seen.verdict();
    let mut out = String::new();
    let _ = write!(
        out,
        "{{\"schema\":{JSON_SCHEMA_VERSION},\"agent\":{{\"running\":{},\"state\":\"{state}\",\"detail\":",
        seen.running()
    );
    json_string(&mut out, &detail);
    let snapshot = match &seen.read {
        Read::Parsed(s) => Some(s),
        _ => None,
    };
    if let Some(s) = snapshot {
        let a = &s.agent;
        let _ = write!(
            out,
            ",\"pid\":{},\"start_time\":{},\"boot_id\":",
            a.identity.pid, a.identity.start_time
        );
        json_bytes(&mut out, &a.identity.boot_id);
        out.push_str(",\"config\":");
        json_bytes(&mut out, &a.config);
        out.push_str(",\"led\":");
        json_bytes(&mut out, &a.led);
        out.push_str(",\"watchdog_at_takeover\":");
        json_bytes(&mut out, &a.takeover);
        let _ = write!(
            out,
            ",\"hold\":{},\"resetting\":{},\"omitted_components\":{},\"fed_age_ms\":",
            a.hold, a.resetting, s.omitted
        );
        json_opt_u64(&mut out, seen.fed_age);
        out.push_str(",\"boot\":");
        match &s.boot {
            Some(b) => {
                out.push_str("{\"phase\":");
                json_bytes(&mut out, &b.phase);
                let _ = write!(
                    out,
                    ",\"attempt\":{},\"trial_unknown\":{},\"healthy_for_ms\":",
                    b.attempt, b.unknown
                );
                json_opt_u64(
                    &mut out,
                    b.healthy_since_ms.map(|s| seen.now_ms.saturating_sub(s)),
                );
                let _ = write!(
                    out,
                    ",\"confirm_after_ms\":{},\"deadline_in_ms\":",
                    b.confirm_after_ms
                );
                json_opt_u64(
                    &mut out,
                    b.deadline_ms.map(|d| d.saturating_sub(seen.now_ms)),
                );
                out.push_str(",\"retry_in_ms\":");
                json_opt_u64(&mut out, b.retry_ms.map(|r| r.saturating_sub(seen.now_ms)));
                let _ = write!(
                    out,
                    ",\"hold_suspended\":{}}}",
                    a.hold && unconfirmed_trial(&b.phase)
                );
            }
            None => out.push_str("null"),
        }
    }
    out.push_str("},\"components\":[");
    for (i, c) in snapshot
        .map(|s| s.components.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_bytes(&mut out, &c.name);
        let _ = write!(out, ",\"position\":{},\"state\":", c.position);
        json_bytes(&mut out, &c.state);
        let _ = write!(
            out,
            ",\"for_ms\":{},\"repair_attempts\":{},\"reason\":",
            seen.now_ms.saturating_sub(c.since_ms),
            c.repairs
        );
        match &c.reason {
            Some(reason) => json_bytes(&mut out, reason),
            None => out.push_str("null"),
        }
        out.push_str(",\"daemon\":");
        match &c.daemon {
            Some(d) => {
                out.push_str("{\"pid\":");
                match d.main {
                    Some((pid, _)) => {
                        let _ = write!(out, "{pid}");
                    }
                    None => out.push_str("null"),
                }
                let _ = write!(
                    out,
                    ",\"ready\":{},\"timeout_ms\":{},\"stopping\":{},\"status\":",
                    d.ready,
                    d.timeout_us / 1000,
                    d.stopping
                );
                json_bytes(&mut out, &d.status);
                out.push('}');
            }
            None => out.push_str("null"),
        }
        out.push('}');
    }
    out.push_str("],\"problems\":");
    match &seen.problems {
        Ok((list, more)) => {
            out.push('[');
            for (i, p) in list.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str("{\"name\":");
                json_bytes(&mut out, &p.name);
                match &p.content {
                    Ok((content, cut)) => {
                        let _ = write!(out, ",\"noticed_wall\":{},\"content\":", p.noticed_wall);
                        json_bytes(&mut out, content);
                        let _ = write!(out, ",\"cut\":{cut}");
                    }
                    Err(why) => {
                        out.push_str(",\"error\":");
                        json_string(&mut out, &why.to_string());
                    }
                }
                out.push('}');
            }
            let _ = write!(out, "],\"more_problems\":{more}");
        }
        Err(why) => {
            out.push_str("{\"error\":");
            json_string(&mut out, why);
            out.push('}');
        }
    }
    out.push_str(",\"this_boot\":{\"boot_id\":");
    match &seen.this_boot {
        Some(id) => json_string(&mut out, id),
        None => out.push_str("null"),
    }
    out.push_str(",\"recorded\":");
    match &seen.history {
        Ok(Ok(h)) => {
            let current = seen.current_index(h);
            let _ = write!(out, "{}}},\"boots\":[", current.is_some());
            for (n, (i, b)) in h.boots().enumerate().rev().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                let is_current = current == Some(i);
                let _ = write!(out, "{{\"number\":{},\"boot_id\":", b.number);
                json_string(&mut out, &b.boot_id);
                let _ = write!(
                    out,
                    ",\"current\":{is_current},\"started_wall\":{},\"end\":\"{}\",\"uptime_ms\":",
                    b.started_wall,
                    end_word(b, is_current)
                );
                json_opt_u64(&mut out, b.uptime_ms);
                let _ = write!(out, ",\"hold_cleared\":{},\"component\":", b.hold_cleared);
                json_string(&mut out, &b.component);
                out.push_str(",\"reason\":");
                json_string(&mut out, &b.reason);
                out.push_str(",\"confirm\":");
                match b.confirm {
                    Confirm::Unconfigured => out.push_str("null"),
                    c => {
                        let _ = write!(out, "\"{}\"", c.as_str());
                    }
                }
                out.push_str(",\"confirm_uptime_ms\":");
                json_opt_u64(&mut out, b.confirm_uptime_ms);
                out.push_str(",\"confirm_note\":");
                json_string(&mut out, &b.confirm_note);
                out.push('}');
            }
            out.push(']');
        }
        Ok(Err(defect)) => {
            out.push_str("null},\"boots\":{\"error\":");
            json_string(&mut out, defect);
            out.push('}');
        }
        Err(e) => {
            out.push_str("null},\"boots\":{\"error\":");
            json_string(&mut out, &e.to_string());
            out.push('}');
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd");
        assert_eq!(out, r#""a\"b\\c\u000ad""#);
    }

    #[test]
    fn outside_bytes_are_escaped_for_the_terminal() {
        let cases: &[(&[u8], &str)] = &[
            (b"plain name", "plain name"),
            (b"\x1b[2J\x07", "\\x1b[2J\\x07"),
            (b"tab\tnl\ncr\r", "tab\\tnl\\ncr\\r"),
            (b"back\\slash", "back\\\\slash"),
            (b"nul\0del\x7f", "nul\\x00del\\x7f"),
            (b"\xff\xc3(", "\\xff\\xc3("),
            ("csi\u{9b}31m".as_bytes(), "csi\\u{9b}31m"),
            ("rtl\u{202e}txt".as_bytes(), "rtl\\u{202e}txt"),
            ("caf\u{e9}".as_bytes(), "caf\u{e9}"),
        ];
        for (bytes, want) in cases {
            assert_eq!(Shown(bytes).to_string(), *want);
        }
    }

    #[test]
    fn only_the_process_that_wrote_the_snapshot_is_the_agent() {
        let me = agent_identity();
        let boot = current_boot_id();
        let id = |pid, start_time, boot_id: &[u8]| Identity {
            pid,
            start_time,
            boot_id: boot_id.to_vec(),
        };
        assert_eq!(
            liveness(
                &id(me.pid, me.start_time, me.boot_id.as_bytes()),
                boot.as_ref()
            ),
            Liveness::Running
        );
        assert_eq!(
            liveness(
                &id(
                    me.pid,
                    me.start_time + START_TIME_SLACK_TICKS + 1,
                    me.boot_id.as_bytes()
                ),
                boot.as_ref()
            ),
            Liveness::Reused
        );
        if boot.is_some() {
            assert_eq!(
                liveness(&id(me.pid, me.start_time, b"another-boot"), boot.as_ref()),
                Liveness::OtherBoot
            );
        }
        let mut sleep = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        // Until it has exec'd, the child is still this program (under qemu-user, whose
        // vfork does not wait for the exec, that can be seen).
        let comm = format!("/proc/{}/comm", sleep.id());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while std::fs::read_to_string(&comm).map_or(true, |c| c.trim() != "sleep")
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        let started = heartbeat::start_time(sleep.id() as i32).unwrap();
        assert_eq!(
            liveness(
                &id(sleep.id(), started, me.boot_id.as_bytes()),
                boot.as_ref()
            ),
            Liveness::NotWatchkeeper(b"sleep".to_vec())
        );
        sleep.kill().unwrap();
        sleep.wait().unwrap();
        assert_eq!(
            liveness(
                &id(sleep.id(), started, me.boot_id.as_bytes()),
                boot.as_ref()
            ),
            Liveness::Gone
        );
        assert_eq!(
            liveness(&id(0, 0, me.boot_id.as_bytes()), boot.as_ref()),
            Liveness::Gone
        );
    }
}
