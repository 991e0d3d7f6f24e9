//! Heartbeat files, pidfiles and the hearts directory: what a pass looks at.
//!
//! Only metadata is read for a beat: `fstatat` without following symlinks, so a link
//! planted in place of a heartbeat is refused, never followed. A missing file is silence,
//! not an error. Pidfiles and `/proc/PID/stat` are read into stack buffers; heart files
//! only when they are new or replaced, and never more than [`MAX_HEART_CONTENT`] bytes.
//! Nothing here allocates.

use core::fmt::{self, Write as _};
use core::time::Duration;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, fstatat};
use rustix::fs::RawDir;

use crate::core::name::{NameError, check_name};
use crate::core::supervisor::{Process, Stamp};
use crate::core::time::Instant;
use crate::limits::{
    MAX_COMPONENTS, MAX_DURATION_SECS, MAX_HEART_CONTENT, MAX_HEARTS_DIR_ENTRIES, MAX_NAME_LEN,
    MAX_REFUSALS_NAMED, REFUSAL_REPORT_INTERVAL_MS,
};
use crate::os::atomic::{self, libc_mode};

/// Why a heartbeat or heart file could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Symlink,
    NotRegular,
    BadName(NameError),
    Unreadable(Errno),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink => f.write_str("is a symbolic link (never followed)"),
            Refusal::NotRegular => f.write_str("is not a regular file"),
            Refusal::BadName(why) => why.fmt(f),
            Refusal::Unreadable(errno) => write!(f, "cannot be read: {}", errno.desc()),
        }
    }
}

// The stat field types differ between targets (32-bit on armv7 glibc).
#[allow(clippy::useless_conversion)]
fn stamp_of(st: &FileStat) -> Stamp {
    Stamp {
        mtime: (i64::from(st.st_mtime), i64::from(st.st_mtime_nsec)),
        ctime: (i64::from(st.st_ctime), i64::from(st.st_ctime_nsec)),
        size: i64::from(st.st_size),
        inode: u64::from(st.st_ino),
        device: u64::from(st.st_dev),
    }
}

fn classify(result: Result<FileStat, Errno>) -> Result<Option<Stamp>, Refusal> {
    match result {
        Ok(st) => match st.st_mode & libc_mode::S_IFMT {
            libc_mode::S_IFREG => Ok(Some(stamp_of(&st))),
            libc_mode::S_IFLNK => Err(Refusal::Symlink),
            _ => Err(Refusal::NotRegular),
        },
        Err(Errno::ENOENT) | Err(Errno::ENOTDIR) => Ok(None),
        Err(errno) => Err(Refusal::Unreadable(errno)),
    }
}

/// The heartbeat file's stamp; `Ok(None)` when it does not exist.
pub fn stamp(path: &Path) -> Result<Option<Stamp>, Refusal> {
    classify(fstatat(AT_FDCWD, path, AtFlags::AT_SYMLINK_NOFOLLOW))
}

/// The most a pidfile holds: a pid (at most 10 digits) with room for blanks around it; a
/// longer file is not a pidfile.
const PIDFILE_MAX: usize = 24;
/// Enough for `/proc/PID/stat` up to its start time (field 22) whatever the pid, with a
/// command name of up to the kernel's 16 bytes; a longer line is refused, never guessed.
const PROC_STAT_MAX: usize = 1024;
/// `/proc/<i32>/stat` or `/proc/self/fd/<i32>`, with room to spare.
const PROC_PATH_MAX: usize = 32;

/// What the pidfile says about the component's process.
pub fn process(pidfile: &Path) -> Process {
    let mut buf = [0u8; PIDFILE_MAX];
    let Ok(Some(len)) = atomic::read(AT_FDCWD, pidfile, &mut buf) else {
        return Process::Unknown;
    };
    let Some(pid) = core::str::from_utf8(&buf[..len])
        .ok()
        .and_then(|t| t.trim().parse::<i32>().ok())
    else {
        return Process::Unknown;
    };
    if pid <= 0 {
        return Process::Unknown;
    }
    match start_time(pid) {
        Some(start_time) => Process::Running { pid, start_time },
        None => Process::Gone { pid },
    }
}

/// The process's start time from `/proc/PID/stat`, or `None` if it is gone or a zombie.
pub fn start_time(pid: i32) -> Option<u64> {
    let mut path: heapless::String<PROC_PATH_MAX> = heapless::String::new();
    write!(path, "/proc/{pid}/stat").ok()?;
    let mut buf = [0u8; PROC_STAT_MAX];
    let len = match atomic::read(AT_FDCWD, path.as_str(), &mut buf) {
        Ok(Some(len)) => len,
        // A stat line longer than the buffer still has its start time well inside it
        // only if the name is short; refuse to guess.
        _ => return None,
    };
    parse_start_time(&buf[..len])
}

/// Field 22 of `/proc/PID/stat`; the command name (field 2) may hold spaces and parens,
/// so fields are counted after its last ')'.
pub fn parse_start_time(stat: &[u8]) -> Option<u64> {
    let close = stat.iter().rposition(|b| *b == b')')?;
    let rest = core::str::from_utf8(&stat[close + 1..]).ok()?;
    let mut fields = rest.split_ascii_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.nth(18)?.parse().ok()
}

/// Why `watchkeeper beat` did not touch a file.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TouchError {
    /// The agent stats heartbeats without following links, so touching the link's target
    /// would not be a beat it sees.
    Symlink,
    /// A device, FIFO, socket or directory (named here); it was never opened.
    NotRegular(&'static str),
    Failed(Errno),
}

impl fmt::Display for TouchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TouchError::Symlink => f.write_str(
                "is a symbolic link: the agent never follows one, so touching what it points to would not be a beat; name the file itself",
            ),
            TouchError::NotRegular(kind) => write!(
                f,
                "is {kind}, not a regular file: a heartbeat must be a regular file (it was not opened)"
            ),
            TouchError::Failed(errno) => f.write_str(errno.desc()),
        }
    }
}

impl From<Errno> for TouchError {
    fn from(errno: Errno) -> Self {
        TouchError::Failed(errno)
    }
}

/// File-type bits of `st_mode` beyond those in [`libc_mode`], as the kernel defines them.
mod file_type {
    pub(crate) const S_IFDIR: u32 = 0o040000;
    pub(crate) const S_IFCHR: u32 = 0o020000;
    pub(crate) const S_IFBLK: u32 = 0o060000;
    pub(crate) const S_IFIFO: u32 = 0o010000;
    pub(crate) const S_IFSOCK: u32 = 0o140000;
}

/// What a file that is not regular is, in the user's words.
fn kind_of(mode: u32) -> &'static str {
    match mode & libc_mode::S_IFMT {
        file_type::S_IFDIR => "a directory",
        file_type::S_IFCHR => "a character device",
        file_type::S_IFBLK => "a block device",
        file_type::S_IFIFO => "a FIFO",
        file_type::S_IFSOCK => "a socket",
        _ => "not a regular file",
    }
}

/// Touches a heartbeat file for `watchkeeper beat`: created if missing (unless
/// `must_exist`), never through a symlink, and its times set to now.
///
/// Nothing but a regular file is ever opened: opening a watchdog device in any mode arms
/// it (Documentation/watchdog/watchdog-api.rst, "the watchdog activates as soon as
/// /dev/watchdog is opened"), and opening a FIFO blocks. So the path is first looked up
/// with `O_PATH`, which pins the inode without calling any driver's open, its type is
/// checked on that descriptor, and the times are set through `/proc/self/fd/N`, which
/// resolves to the very inode checked (no window for a swap). A missing file is created
/// with `O_CREAT|O_EXCL`, which never opens anything that appeared in the meantime.
pub fn touch(path: &Path, must_exist: bool) -> Result<(), TouchError> {
    // Two rounds: a file created by someone else between the lookup and O_EXCL is
    // looked up again, once.
    for _ in 0..2 {
        let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        match nix::fcntl::open(path, flags, Mode::empty()) {
            Ok(fd) => return touch_pinned(&fd),
            Err(Errno::ENOENT) if !must_exist => {}
            Err(errno) => return Err(TouchError::Failed(errno)),
        }
        let flags = OFlag::O_WRONLY
            | OFlag::O_CREAT
            | OFlag::O_EXCL
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        match nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o644)) {
            // A new file's times are already now.
            Ok(_) => return Ok(()),
            Err(Errno::EEXIST) => {}
            Err(errno) => return Err(TouchError::Failed(errno)),
        }
    }
    Err(TouchError::Failed(Errno::EEXIST))
}

/// Sets the times of the regular file that `fd` (an `O_PATH` descriptor) pins.
fn touch_pinned(fd: &OwnedFd) -> Result<(), TouchError> {
    let mode = nix::sys::stat::fstat(fd)?.st_mode;
    match mode & libc_mode::S_IFMT {
        libc_mode::S_IFREG => {}
        libc_mode::S_IFLNK => return Err(TouchError::Symlink),
        _ => return Err(TouchError::NotRegular(kind_of(mode))),
    }
    // futimens refuses O_PATH descriptors (EBADF); the /proc link reaches the same inode.
    let mut proc_path: heapless::String<PROC_PATH_MAX> = heapless::String::new();
    write!(proc_path, "/proc/self/fd/{}", fd.as_raw_fd()).map_err(|_| Errno::ENAMETOOLONG)?;
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    nix::sys::stat::utimensat(
        AT_FDCWD,
        proc_path.as_str(),
        &now,
        &now,
        nix::sys::stat::UtimensatFlags::FollowSymlink,
    )?;
    Ok(())
}

/// One entry of the hearts directory, as a scan sees it.
pub enum Entry<'a> {
    /// A valid heart name; [`Reader::stamp`] says whether it is a heart file. Looking is
    /// left to the caller so that entries beyond capacity cost no system call.
    Named(&'a str),
    Refused {
        name: &'a [u8],
        why: Refusal,
    },
}

/// Bytes of directory entries read per `getdents64` call.
const DIRENT_BUFFER: usize = 8192;

/// Why the hearts directory cannot be scanned now; retried every pass.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirTrouble {
    /// It is gone and could not be created again.
    Missing(Errno),
    Symlink,
    NotDirectory,
    Unreadable(Errno),
}

impl fmt::Display for DirTrouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DirTrouble::Missing(errno) => {
                write!(f, "is missing and cannot be created: {}", errno.desc())
            }
            DirTrouble::Symlink => f.write_str("is a symbolic link (never followed)"),
            DirTrouble::NotDirectory => f.write_str("is not a directory"),
            DirTrouble::Unreadable(errno) => write!(f, "cannot be read: {}", errno.desc()),
        }
    }
}

/// What a [`HeartsDir::check`] found at the directory's path.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirState {
    /// The directory held since the previous check.
    Same,
    /// Another directory than the one held (renamed over, deleted and recreated, or
    /// usable again after trouble): that one is scanned from now on.
    Replaced,
    /// It was gone, and the agent created it again.
    Recreated,
}

/// The result of a successful [`HeartsDir::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checked {
    pub state: DirState,
    /// Entries were added, removed or renamed since the previous check, so that refusals
    /// are reported once, not on every pass.
    pub changed: bool,
}

/// The hearts directory, kept open and rewound for each scan. Entries are read with
/// `getdents64` into a buffer allocated at startup (rustix's `RawDir`), because `readdir`
/// wrappers allocate a name per entry.
///
/// Invariant: `fd`, when held, is the directory that the path names now, checked at every
/// pass by (device, inode) and link count, so a directory deleted, renamed or replaced by
/// a symlink is never scanned through a stale descriptor.
pub struct HeartsDir {
    path: PathBuf,
    fd: Option<OwnedFd>,
    buffer: Box<[MaybeUninit<u8>]>,
    last_dir_stamp: Option<Stamp>,
}

/// A heart file's content is not a timeout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BadContent {
    TooLarge,
    NotSeconds,
    OutOfRange,
    Unreadable(Errno),
}

impl fmt::Display for BadContent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BadContent::TooLarge => write!(
                f,
                "heart file is larger than {MAX_HEART_CONTENT} bytes; its content must be a timeout in whole seconds"
            ),
            BadContent::NotSeconds => {
                f.write_str("heart file content is not a timeout in whole seconds")
            }
            BadContent::OutOfRange => write!(
                f,
                "heart timeout must be from 1 to {MAX_DURATION_SECS} seconds"
            ),
            BadContent::Unreadable(errno) => {
                write!(f, "heart file cannot be read: {}", errno.desc())
            }
        }
    }
}

impl HeartsDir {
    /// The hearts directory at `path`, created (with its parents) if missing. A directory
    /// that cannot be opened is not an error here: [`HeartsDir::check`] reports it and
    /// tries again at every pass.
    pub fn open(path: &Path) -> HeartsDir {
        // Failures surface at the first check, which names them.
        let _ = std::fs::create_dir_all(path);
        let mut dir = HeartsDir {
            path: path.to_owned(),
            fd: None,
            buffer: vec![MaybeUninit::uninit(); DIRENT_BUFFER].into_boxed_slice(),
            last_dir_stamp: None,
        };
        if let Ok((fd, _)) = dir.reopen() {
            dir.fd = Some(fd);
        }
        dir
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory held, to watch it.
    pub fn fd(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        self.fd.as_ref().map(std::os::fd::AsFd::as_fd)
    }

    /// A heart file's stamp, looked up in the directory held; `Ok(None)` when it is gone
    /// (or no directory is held).
    pub fn stamp(&self, name: &str) -> Result<Option<Stamp>, Refusal> {
        match &self.fd {
            Some(fd) => Reader { fd }.stamp(name),
            None => Ok(None),
        }
    }

    /// Makes sure the directory held is the one the path names (reopening or recreating
    /// it when not), and says whether its entries changed. Two or three system calls
    /// when nothing happened.
    pub fn check(&mut self) -> Result<Checked, DirTrouble> {
        if let Some(fd) = &self.fd {
            match nix::sys::stat::fstat(fd) {
                Ok(held) if held.st_nlink > 0 && self.still_named(&held) => {
                    let stamp = stamp_of(&held);
                    let changed = Some(stamp) != self.last_dir_stamp;
                    self.last_dir_stamp = Some(stamp);
                    return Ok(Checked {
                        state: DirState::Same,
                        changed,
                    });
                }
                _ => self.fd = None,
            }
        }
        let (fd, created) = self.reopen()?;
        // A directory not held before this check is listed whole, like any other: even
        // the first one opened after trouble at startup.
        let state = if created {
            DirState::Recreated
        } else {
            DirState::Replaced
        };
        self.last_dir_stamp = nix::sys::stat::fstat(&fd).ok().map(|st| stamp_of(&st));
        self.fd = Some(fd);
        Ok(Checked {
            state,
            changed: true,
        })
    }

    /// The path still names the directory `held` describes.
    fn still_named(&self, held: &FileStat) -> bool {
        fstatat(AT_FDCWD, &self.path, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|now| now.st_dev == held.st_dev && now.st_ino == held.st_ino)
    }

    /// Opens the directory at the path, creating it if it is missing (but never through
    /// a symlink, and never opening anything else: a FIFO there would block an open).
    /// Returns whether it was created.
    fn reopen(&self) -> Result<(OwnedFd, bool), DirTrouble> {
        let mut created = false;
        match fstatat(AT_FDCWD, &self.path, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(st) => match st.st_mode & libc_mode::S_IFMT {
                file_type::S_IFDIR => {}
                libc_mode::S_IFLNK => return Err(DirTrouble::Symlink),
                _ => return Err(DirTrouble::NotDirectory),
            },
            Err(Errno::ENOENT) => {
                match nix::unistd::mkdir(&self.path, Mode::from_bits_truncate(0o777)) {
                    Ok(()) => created = true,
                    // Someone else made it meanwhile: the open below checks what it is.
                    Err(Errno::EEXIST) => {}
                    Err(errno) => return Err(DirTrouble::Missing(errno)),
                }
            }
            Err(errno) => return Err(DirTrouble::Unreadable(errno)),
        }
        let flags = OFlag::O_RDONLY
            | OFlag::O_DIRECTORY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC;
        match nix::fcntl::open(&self.path, flags, Mode::empty()) {
            Ok(fd) => Ok((fd, created)),
            Err(Errno::ELOOP) => Err(DirTrouble::Symlink),
            Err(Errno::ENOTDIR) => Err(DirTrouble::NotDirectory),
            Err(errno) => Err(DirTrouble::Unreadable(errno)),
        }
    }

    /// Visits the entries of the directory held (see [`HeartsDir::check`]), at most
    /// [`MAX_HEARTS_DIR_ENTRIES`] of them, with a [`Reader`] to look at hearts. Returns
    /// whether every entry was visited. Entries created or removed meanwhile may or may
    /// not be visited; each visited one is looked at by name, never trusted from the listing.
    pub fn scan(&mut self, mut visit: impl FnMut(&Reader<'_>, Entry<'_>)) -> Result<bool, Errno> {
        let Some(fd) = &self.fd else {
            return Err(Errno::EBADF);
        };
        let reader = Reader { fd };
        nix::unistd::lseek(fd, 0, nix::unistd::Whence::SeekSet)?;
        let mut entries = RawDir::new(fd, &mut self.buffer);
        let mut listed = 0usize;
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(|e| Errno::from_raw(e.raw_os_error()))?;
            let raw: &CStr = entry.file_name();
            let bytes = raw.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            if listed == MAX_HEARTS_DIR_ENTRIES {
                return Ok(false);
            }
            listed += 1;
            match check_name(bytes) {
                Ok(()) => visit(
                    &reader,
                    Entry::Named(core::str::from_utf8(bytes).unwrap_or_default()),
                ),
                Err(why) => visit(
                    &reader,
                    Entry::Refused {
                        name: bytes,
                        why: Refusal::BadName(why),
                    },
                ),
            }
        }
        Ok(true)
    }
}

/// Looks at hearts during a scan.
pub struct Reader<'a> {
    fd: &'a OwnedFd,
}

impl Reader<'_> {
    /// The heart file's stamp; `Ok(None)` when it is gone.
    pub fn stamp(&self, name: &str) -> Result<Option<Stamp>, Refusal> {
        classify(fstatat(self.fd, name, AtFlags::AT_SYMLINK_NOFOLLOW))
    }

    /// Reads a heart's timeout from its file, without following a symlink and without
    /// reading more than [`MAX_HEART_CONTENT`] bytes.
    pub fn timeout(&self, name: &str) -> Result<Duration, BadContent> {
        let mut buf = [0u8; MAX_HEART_CONTENT];
        let len = match atomic::read(self.fd, name, &mut buf) {
            Ok(Some(len)) => len,
            Ok(None) => return Err(BadContent::Unreadable(Errno::ENOENT)),
            Err(Errno::EFBIG) => return Err(BadContent::TooLarge),
            Err(errno) => return Err(BadContent::Unreadable(errno)),
        };
        parse_timeout(&buf[..len])
    }
}

/// A heart file's content: its timeout in whole seconds, blanks around it allowed.
pub fn parse_timeout(content: &[u8]) -> Result<Duration, BadContent> {
    if content.len() > MAX_HEART_CONTENT {
        return Err(BadContent::TooLarge);
    }
    let text = core::str::from_utf8(content)
        .map_err(|_| BadContent::NotSeconds)?
        .trim();
    let secs: u64 = text.parse().map_err(|_| BadContent::NotSeconds)?;
    if secs == 0 || secs > MAX_DURATION_SECS {
        return Err(BadContent::OutOfRange);
    }
    Ok(Duration::from_secs(secs))
}

/// Names of hearts shown in a capacity report.
const OVER_EXAMPLES: usize = 4;

/// Reports of hearts-directory refusals, bounded however hostile the directory is: a
/// report is made when the directory changed (or the count of entries over capacity did),
/// at most once per [`REFUSAL_REPORT_INTERVAL_MS`]; it names at most [`MAX_REFUSALS_NAMED`]
/// refused entries and counts the rest, and entries over capacity make one line with a
/// count and a few names. A change seen too soon after a report is reported later.
pub(crate) struct Refusals {
    next_report: Instant,
    pending: bool,
    over_reported: usize,
    truncated_reported: bool,
    reporting: bool,
    named: usize,
    unnamed: usize,
    over: usize,
    examples: heapless::Vec<heapless::String<MAX_NAME_LEN>, OVER_EXAMPLES>,
}

impl Refusals {
    pub fn new(now: Instant) -> Refusals {
        Refusals {
            next_report: now,
            pending: false,
            over_reported: 0,
            truncated_reported: false,
            reporting: false,
            named: 0,
            unnamed: 0,
            over: 0,
            examples: heapless::Vec::new(),
        }
    }

    /// Starts a pass over the directory; `changed` says its entries changed.
    /// A report is owed: the next listing should come soon, even with nothing changed.
    pub(crate) fn owed(&self) -> bool {
        self.pending
    }

    pub(crate) fn begin(&mut self, now: Instant, changed: bool) {
        let due = now >= self.next_report;
        self.reporting = due && (changed || self.pending);
        self.pending |= changed && !due;
        self.named = 0;
        self.unnamed = 0;
        self.over = 0;
        self.examples.clear();
    }

    /// An entry that is not a heart, for `why`.
    pub fn refused(&mut self, dir: &Path, name: &[u8], why: impl fmt::Display) {
        if !self.reporting {
            return;
        }
        if self.named < MAX_REFUSALS_NAMED {
            self.named += 1;
            log::warn!(
                "hearts directory {}: refused \"{}\": {why}",
                dir.display(),
                Escaped(name)
            );
        } else {
            self.unnamed += 1;
        }
    }

    /// A heart left unsupervised (not even looked at): no room for another component.
    pub(crate) fn over_capacity(&mut self, name: &str) {
        self.over += 1;
        if let Ok(name) = heapless::String::try_from(name) {
            let _ = self.examples.push(name);
        }
    }

    /// Ends the pass: the counts of what was not named, and capacity. `truncated`: the
    /// listing stopped at [`MAX_HEARTS_DIR_ENTRIES`] (said once, and when it ends).
    pub fn end(&mut self, now: Instant, dir: &Path, configured: usize, truncated: bool) {
        if truncated != self.truncated_reported {
            self.truncated_reported = truncated;
            if truncated {
                log::error!(
                    "hearts directory {}: more than {MAX_HEARTS_DIR_ENTRIES} entries; only that many are looked at each pass, and hearts beyond them count as silent",
                    dir.display()
                );
            } else {
                log::warn!(
                    "hearts directory {}: back under {MAX_HEARTS_DIR_ENTRIES} entries; all are looked at again",
                    dir.display()
                );
            }
        }
        if self.unnamed > 0 {
            log::warn!(
                "hearts directory {}: {} more entries refused (not named one by one, to keep the log short)",
                dir.display(),
                self.unnamed
            );
        }
        let due = now >= self.next_report;
        let over_changed = self.over != self.over_reported;
        let summary = due && (self.reporting || over_changed);
        if summary {
            if self.over > 0 {
                log::error!(
                    "hearts directory {}: {} entries not supervised: at most {MAX_COMPONENTS} components and hearts in all ({configured} configured); for example {}",
                    dir.display(),
                    self.over,
                    Examples(&self.examples)
                );
            } else if self.over_reported > 0 {
                log::warn!(
                    "hearts directory {}: every heart is supervised again",
                    dir.display()
                );
            }
            self.over_reported = self.over;
        }
        self.pending |= over_changed && !due;
        if self.reporting || summary {
            self.pending = false;
            self.next_report =
                now.saturating_add(Duration::from_millis(REFUSAL_REPORT_INTERVAL_MS));
        }
    }
}

struct Examples<'a>(&'a [heapless::String<MAX_NAME_LEN>]);

impl fmt::Display for Examples<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            write!(f, "\"{name}\"")?;
        }
        Ok(())
    }
}

/// Bytes of a name that failed validation, printable in a log line.
pub(crate) struct Escaped<'a>(pub &'a [u8]);

impl fmt::Display for Escaped<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                write!(f, "{}", c.escape_debug())?;
            }
            for b in chunk.invalid() {
                write!(f, "\\x{b:02x}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let line =
            b"1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(line), Some(987654));
        let zombie =
            b"1234 (x) Z 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(zombie), None);
        assert_eq!(parse_start_time(b"garbage"), None);
    }

    #[test]
    fn this_process_is_running_and_a_dead_pid_is_gone() {
        let dir = std::env::temp_dir().join(format!("wk-pid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let pidfile = dir.join("pid");
        std::fs::write(&pidfile, format!("{}\n", std::process::id())).unwrap();
        assert!(matches!(process(&pidfile), Process::Running { .. }));
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let dead = child.id();
        child.wait().unwrap();
        std::fs::write(&pidfile, format!("{dead}")).unwrap();
        assert_eq!(process(&pidfile), Process::Gone { pid: dead as i32 });
        std::fs::write(&pidfile, "not a pid").unwrap();
        assert_eq!(process(&pidfile), Process::Unknown);
        assert_eq!(process(&dir.join("missing")), Process::Unknown);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn touch_changes_the_stamp_and_symlinks_are_refused() {
        let dir = std::env::temp_dir().join(format!("wk-touch-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let beat = dir.join("beat");
        assert_eq!(stamp(&beat), Ok(None));
        touch(&beat, false).unwrap();
        let first = stamp(&beat).unwrap().unwrap();
        std::thread::sleep(Duration::from_millis(20));
        touch(&beat, true).unwrap();
        assert_ne!(stamp(&beat).unwrap().unwrap(), first);
        std::os::unix::fs::symlink(&beat, dir.join("link")).unwrap();
        assert_eq!(stamp(&dir.join("link")), Err(Refusal::Symlink));
        assert_eq!(touch(&dir.join("link"), true), Err(TouchError::Symlink));
        assert_eq!(touch(&dir.join("link"), false), Err(TouchError::Symlink));
        assert_eq!(
            touch(&dir, false),
            Err(TouchError::NotRegular("a directory"))
        );
        assert_eq!(
            touch(Path::new("/dev/null"), false),
            Err(TouchError::NotRegular("a character device"))
        );
        assert_eq!(
            touch(&dir.join("missing"), true),
            Err(TouchError::Failed(Errno::ENOENT))
        );
        assert_eq!(stamp(&dir), Err(Refusal::NotRegular));
        std::fs::remove_dir_all(dir).unwrap();
    }

    fn scan_all(hearts: &mut HeartsDir) -> (Vec<String>, Vec<(String, Refusal)>) {
        let mut seen = Vec::new();
        let mut refused = Vec::new();
        hearts
            .scan(|reader, e| match e {
                Entry::Named(name) => match reader.stamp(name) {
                    Ok(Some(_)) => seen.push(name.to_owned()),
                    Ok(None) => {}
                    Err(why) => refused.push((name.to_owned(), why)),
                },
                Entry::Refused { name, why } => {
                    refused.push((String::from_utf8_lossy(name).into_owned(), why))
                }
            })
            .unwrap();
        seen.sort();
        refused.sort_by(|a, b| a.0.cmp(&b.0));
        (seen, refused)
    }

    #[test]
    fn hearts_directory_refuses_what_it_must_not_follow_or_read() {
        let path = std::env::temp_dir().join(format!("wk-hearts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let mut hearts = HeartsDir::open(&path);
        std::fs::write(path.join("good"), "30\n").unwrap();
        std::fs::write(path.join("words"), "thirty").unwrap();
        std::fs::write(path.join("huge"), vec![b'9'; 4096]).unwrap();
        std::fs::write(std::env::temp_dir().join("wk-secret"), "1").unwrap();
        std::os::unix::fs::symlink(std::env::temp_dir().join("wk-secret"), path.join("link"))
            .unwrap();
        nix::unistd::mkfifo(&path.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(path.join("bad name"), "5").unwrap();
        let checked = hearts.check().unwrap();
        assert_eq!(checked.state, DirState::Same);
        assert!(checked.changed);
        let (seen, refused) = scan_all(&mut hearts);
        assert_eq!(seen, ["good", "huge", "words"]);
        assert_eq!(refused.len(), 3);
        assert_eq!(refused[1], ("fifo".to_owned(), Refusal::NotRegular));
        assert_eq!(refused[2], ("link".to_owned(), Refusal::Symlink));
        assert!(matches!(refused[0].1, Refusal::BadName(_)));
        let fd = hearts.fd.as_ref().unwrap();
        let reader = Reader { fd };
        assert_eq!(reader.timeout("good"), Ok(Duration::from_secs(30)));
        assert_eq!(reader.timeout("words"), Err(BadContent::NotSeconds));
        assert_eq!(reader.timeout("huge"), Err(BadContent::TooLarge));
        assert!(reader.timeout("link").is_err());
        // Checking an unchanged directory again says so.
        assert_eq!(
            hearts.check(),
            Ok(Checked {
                state: DirState::Same,
                changed: false
            })
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_directory_usable_only_after_startup_is_listed_whole() {
        let base = std::env::temp_dir().join(format!("wk-hearts-late-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("hearts");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        let mut hearts = HeartsDir::open(&path);
        assert_eq!(hearts.check(), Err(DirTrouble::NotDirectory));
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("late"), "30").unwrap();
        // Not `Same`: the caller lists a directory it never held.
        assert_eq!(hearts.check().unwrap().state, DirState::Replaced);
        assert_eq!(scan_all(&mut hearts).0, ["late"]);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn a_hearts_directory_replaced_or_lost_is_noticed_and_never_followed() {
        let base = std::env::temp_dir().join(format!("wk-hearts-swap-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(&base).unwrap();
        let path = base.join("hearts");
        let mut hearts = HeartsDir::open(&path);
        std::fs::write(path.join("old"), "30").unwrap();
        assert_eq!(hearts.check().unwrap().state, DirState::Same);
        // Renamed away and another directory put in its place.
        std::fs::rename(&path, base.join("aside")).unwrap();
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("new"), "30").unwrap();
        assert_eq!(hearts.check().unwrap().state, DirState::Replaced);
        assert_eq!(scan_all(&mut hearts).0, ["new"]);
        // Deleted: created again.
        std::fs::remove_dir_all(&path).unwrap();
        assert_eq!(hearts.check().unwrap().state, DirState::Recreated);
        assert!(path.is_dir());
        assert!(scan_all(&mut hearts).0.is_empty());
        // A symlink to a directory full of hearts: refused, and nothing scanned.
        std::fs::remove_dir_all(&path).unwrap();
        std::os::unix::fs::symlink(base.join("aside"), &path).unwrap();
        assert_eq!(hearts.check(), Err(DirTrouble::Symlink));
        assert_eq!(
            hearts.scan(|_, _| panic!("scanned through a symlink")),
            Err(Errno::EBADF)
        );
        // A FIFO: refused without blocking on an open.
        std::fs::remove_file(&path).unwrap();
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        assert_eq!(hearts.check(), Err(DirTrouble::NotDirectory));
        std::fs::remove_file(&path).unwrap();
        std::fs::create_dir(&path).unwrap();
        assert_eq!(hearts.check().unwrap().state, DirState::Replaced);
        // Its parent gone: it cannot be created, and says why.
        std::fs::remove_dir_all(&base).unwrap();
        assert_eq!(hearts.check(), Err(DirTrouble::Missing(Errno::ENOENT)));
    }
}
