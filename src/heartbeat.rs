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
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::{FileStat, Mode, fstatat};
use rustix::fs::RawDir;

use crate::atomic::{self, libc_mode};
use crate::config::check_name;
use crate::limits::{MAX_DURATION_SECS, MAX_HEART_CONTENT};
use crate::supervisor::{Process, Stamp};

/// Why a heartbeat or heart file could not be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    Symlink,
    NotRegular,
    BadName(&'static str),
    Unreadable(Errno),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Symlink => f.write_str("is a symbolic link (never followed)"),
            Refusal::NotRegular => f.write_str("is not a regular file"),
            Refusal::BadName(why) => f.write_str(why),
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

/// What the pidfile says about the component's process.
pub fn process(pidfile: &Path) -> Process {
    let mut buf = [0u8; 24];
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
    let mut path: heapless::String<32> = heapless::String::new();
    write!(path, "/proc/{pid}/stat").ok()?;
    let mut buf = [0u8; 1024];
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

/// Touches a heartbeat file for `watchkeeper beat`: created if missing (unless
/// `must_exist`), never through a symlink, and its times set to now.
pub fn touch(path: &Path, must_exist: bool) -> Result<(), Errno> {
    let mut flags = OFlag::O_WRONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC;
    if !must_exist {
        flags |= OFlag::O_CREAT;
    }
    let fd = nix::fcntl::open(path, flags, Mode::from_bits_truncate(0o644))?;
    if nix::sys::stat::fstat(&fd)?.st_mode & libc_mode::S_IFMT != libc_mode::S_IFREG {
        return Err(Errno::EINVAL);
    }
    let now = nix::sys::time::TimeSpec::UTIME_NOW;
    nix::sys::stat::futimens(&fd, &now, &now)
}

/// One entry of the hearts directory, as a scan sees it.
pub enum Entry<'a> {
    Heart { name: &'a str, stamp: Stamp },
    Refused { name: &'a [u8], why: Refusal },
}

/// Bytes of directory entries read per `getdents64` call.
const DIRENT_BUFFER: usize = 8192;

/// The hearts directory, kept open from startup and rewound for each scan. Entries are
/// read with `getdents64` into a buffer allocated at startup (rustix's `RawDir`), because
/// `readdir` wrappers allocate a name per entry.
pub struct HeartsDir {
    path: PathBuf,
    fd: OwnedFd,
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
    /// Opens (creating it if needed) the hearts directory.
    pub fn open(path: &Path) -> Result<HeartsDir, Errno> {
        std::fs::create_dir_all(path)
            .map_err(|e| Errno::from_raw(e.raw_os_error().unwrap_or(0)))?;
        let flags = OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
        let fd = nix::fcntl::open(path, flags, Mode::empty())?;
        let buffer = vec![MaybeUninit::uninit(); DIRENT_BUFFER].into_boxed_slice();
        Ok(HeartsDir {
            path: path.to_owned(),
            fd,
            buffer,
            last_dir_stamp: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Visits every entry, with a [`Reader`] for heart contents.
    pub fn scan(&mut self, mut visit: impl FnMut(&Reader<'_>, Entry<'_>)) -> Result<(), Errno> {
        let dir_stamp = stamp_of(&nix::sys::stat::fstat(&self.fd)?);
        let reader = Reader {
            fd: &self.fd,
            path: &self.path,
            dir_changed: Some(dir_stamp) != self.last_dir_stamp,
        };
        self.last_dir_stamp = Some(dir_stamp);
        nix::unistd::lseek(&self.fd, 0, nix::unistd::Whence::SeekSet)?;
        let mut entries = RawDir::new(&self.fd, &mut self.buffer);
        while let Some(entry) = entries.next() {
            let entry = entry.map_err(|e| Errno::from_raw(e.raw_os_error()))?;
            let raw: &CStr = entry.file_name();
            let bytes = raw.to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            let name = match check_name(bytes) {
                Ok(()) => core::str::from_utf8(bytes).unwrap_or_default(),
                Err(why) => {
                    visit(
                        &reader,
                        Entry::Refused {
                            name: bytes,
                            why: Refusal::BadName(why),
                        },
                    );
                    continue;
                }
            };
            match classify(fstatat(reader.fd, raw, AtFlags::AT_SYMLINK_NOFOLLOW)) {
                Ok(Some(stamp)) => visit(&reader, Entry::Heart { name, stamp }),
                Ok(None) => {}
                Err(why) => visit(&reader, Entry::Refused { name: bytes, why }),
            }
        }
        Ok(())
    }

    /// Reads a heart's timeout (see [`Reader::timeout`]).
    pub fn timeout(&self, name: &str) -> Result<Duration, BadContent> {
        Reader {
            fd: &self.fd,
            path: &self.path,
            dir_changed: false,
        }
        .timeout(name)
    }
}

/// Reads heart contents during a scan.
pub struct Reader<'a> {
    fd: &'a OwnedFd,
    path: &'a Path,
    dir_changed: bool,
}

impl Reader<'_> {
    /// True when entries were added, removed or renamed since the previous scan, so that
    /// refusals are reported once, not on every pass.
    pub fn dir_changed(&self) -> bool {
        self.dir_changed
    }

    pub fn path(&self) -> &Path {
        self.path
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
        let text = core::str::from_utf8(&buf[..len])
            .map_err(|_| BadContent::NotSeconds)?
            .trim();
        let secs: u64 = text.parse().map_err(|_| BadContent::NotSeconds)?;
        if secs == 0 || secs > MAX_DURATION_SECS {
            return Err(BadContent::OutOfRange);
        }
        Ok(Duration::from_secs(secs))
    }
}

/// Bytes of a name that failed validation, printable in a log line.
pub struct Escaped<'a>(pub &'a [u8]);

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
        assert_eq!(touch(&dir.join("link"), true), Err(Errno::ELOOP));
        assert_eq!(stamp(&dir), Err(Refusal::NotRegular));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn hearts_directory_refuses_what_it_must_not_follow_or_read() {
        let path = std::env::temp_dir().join(format!("wk-hearts-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let mut hearts = HeartsDir::open(&path).unwrap();
        std::fs::write(path.join("good"), "30\n").unwrap();
        std::fs::write(path.join("words"), "thirty").unwrap();
        std::fs::write(path.join("huge"), vec![b'9'; 4096]).unwrap();
        std::fs::write(std::env::temp_dir().join("wk-secret"), "1").unwrap();
        std::os::unix::fs::symlink(std::env::temp_dir().join("wk-secret"), path.join("link"))
            .unwrap();
        nix::unistd::mkfifo(&path.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(path.join("bad name"), "5").unwrap();
        let mut hearts_seen = Vec::new();
        let mut refused = Vec::new();
        let mut changed = false;
        hearts
            .scan(|reader, e| {
                changed |= reader.dir_changed();
                match e {
                    Entry::Heart { name, .. } => hearts_seen.push(name.to_owned()),
                    Entry::Refused { name, why } => {
                        refused.push((String::from_utf8_lossy(name).into_owned(), why))
                    }
                }
            })
            .unwrap();
        assert!(changed);
        hearts_seen.sort();
        assert_eq!(hearts_seen, ["good", "huge", "words"]);
        refused.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(refused.len(), 3);
        assert_eq!(refused[1], ("fifo".to_owned(), Refusal::NotRegular));
        assert_eq!(refused[2], ("link".to_owned(), Refusal::Symlink));
        assert!(matches!(refused[0].1, Refusal::BadName(_)));
        assert_eq!(hearts.timeout("good"), Ok(Duration::from_secs(30)));
        assert_eq!(hearts.timeout("words"), Err(BadContent::NotSeconds));
        assert_eq!(hearts.timeout("huge"), Err(BadContent::TooLarge));
        assert!(hearts.timeout("link").is_err());
        // Rescanning an unchanged directory says so.
        hearts
            .scan(|reader, _| assert!(!reader.dir_changed()))
            .unwrap();
        std::fs::remove_dir_all(path).unwrap();
    }
}
