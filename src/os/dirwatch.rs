//! A directory's entries watched with inotify: files created, removed, renamed in or out,
//! or written, raise an event, so membership changes are seen when they happen and the
//! directory is not listed on every pass.
//!
//! inotify only reports what this kernel did: on network, cluster and FUSE filesystems
//! (NFS, SMB/CIFS, 9p, Ceph, AFS, Coda, GFS2, OCFS2, vboxsf, FUSE) a change made by another
//! client or by the FUSE daemon raises no event, so such a directory is not trusted and is
//! listed at every safety-net look instead. A full event queue (`IN_Q_OVERFLOW`), a
//! directory deleted or moved, or more events than one drain reads, ask for a full listing.
//! A directory removed while the agent holds it open raises nothing until it is closed, and
//! a mount over it nothing at all: its identity is checked at every upkeep of the agent.
//! A heartbeat `touch` raises only `IN_ATTRIB`, which is not watched: beats are dated from
//! the files, not from events.
//!
//! Invariants: events are read into a buffer allocated at startup (rustix's reader; nix's
//! allocates per event); a drain makes a bounded number of reads.

use std::io::Write as _;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::inotify::{self, CreateFlags, ReadFlags, WatchFlags};
use rustix::io::Errno;

/// Bytes of events read per `read(2)`: room for 256 events with a short name each.
const EVENT_BUFFER: usize = 8192;
/// Reads per drain; a directory changing faster than this is listed instead.
const MAX_READS_PER_DRAIN: usize = 16;

/// `statfs(2)` magic numbers of filesystems whose changes inotify may not see
/// (include/uapi/linux/magic.h, fs/smb/client/cifsglob.h, fs/fuse/inode.c).
const UNTRUSTED_FILESYSTEMS: [(u32, &str); 13] = [
    (0x6969, "NFS"),
    (0x517B, "SMB"),
    (0xFF53_4D42, "CIFS"),
    (0xFE53_4D42, "SMB2"),
    (0x6573_5546, "FUSE"),
    (0x0102_1997, "9p"),
    (0x00C3_6400, "Ceph"),
    (0x5346_414F, "AFS"),
    (0x6B41_4653, "kAFS"),
    (0x7375_7245, "Coda"),
    (0x0116_1970, "GFS2"),
    (0x7461_636F, "OCFS2"),
    (0x786F_4256, "vboxsf"),
];

/// What a drain found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    Nothing,
    /// Entries were added, removed, renamed or written.
    Entries,
    /// Events may have been lost, or the directory itself went: list it, and check that
    /// the one held is still the one its path names.
    Everything,
}

/// The watch on one directory.
pub struct DirWatch {
    inotify: Option<OwnedFd>,
    watch: Option<i32>,
    buffer: Box<[MaybeUninit<u8>]>,
}

impl DirWatch {
    /// An inotify instance; without one (the limit of instances reached, a kernel without
    /// inotify) every look lists the directory, as [`DirWatch::trusted`] then says.
    pub fn new() -> DirWatch {
        let inotify = match inotify::init(CreateFlags::NONBLOCK | CreateFlags::CLOEXEC) {
            Ok(fd) => Some(fd),
            Err(errno) => {
                log::warn!(
                    "no inotify instance ({errno}): the hearts directory is listed at every safety-net look"
                );
                None
            }
        };
        DirWatch {
            inotify,
            watch: None,
            buffer: vec![MaybeUninit::uninit(); EVENT_BUFFER].into_boxed_slice(),
        }
    }

    /// Watches the directory open as `dir` instead of any before it. Returns `false`, with
    /// the reason logged, when its events cannot be trusted.
    pub fn watch(&mut self, dir: BorrowedFd<'_>, shown: &std::path::Path) -> bool {
        self.watch = None;
        let Some(inotify_fd) = &self.inotify else {
            return false;
        };
        if let Some(name) = untrusted_filesystem(dir) {
            log::warn!(
                "hearts directory {} is on {name}, where inotify misses changes made elsewhere: it is listed every check_interval",
                shown.display()
            );
            return false;
        }
        // The path of the very directory held, so that no rename in between can make the
        // watch land on another one.
        let mut path = [0u8; 32];
        let mut cursor = std::io::Cursor::new(&mut path[..]);
        if write!(cursor, "/proc/self/fd/{}", dir.as_raw_fd()).is_err() {
            return false;
        }
        let len = cursor.position() as usize;
        let mask = WatchFlags::CREATE
            | WatchFlags::DELETE
            | WatchFlags::MOVED_FROM
            | WatchFlags::MOVED_TO
            | WatchFlags::CLOSE_WRITE
            | WatchFlags::DELETE_SELF
            | WatchFlags::MOVE_SELF
            | WatchFlags::ONLYDIR;
        match inotify::add_watch(inotify_fd, &path[..len], mask) {
            Ok(wd) => {
                self.watch = Some(wd);
                true
            }
            Err(errno) => {
                log::warn!(
                    "hearts directory {}: cannot watch it with inotify ({errno}; see fs.inotify.max_user_watches): it is listed every check_interval",
                    shown.display()
                );
                false
            }
        }
    }

    /// Whether the directory is watched: its events can stand in for listing it.
    pub fn trusted(&self) -> bool {
        self.watch.is_some()
    }

    /// The descriptor to wait on, while a directory is watched.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.watch.and(self.inotify.as_ref()).map(|fd| fd.as_fd())
    }

    /// Reads the events waiting, without blocking.
    pub fn drain(&mut self) -> Seen {
        let Some(inotify_fd) = &self.inotify else {
            return Seen::Everything;
        };
        let mut seen = Seen::Nothing;
        let mut reader = inotify::Reader::new(inotify_fd, &mut self.buffer);
        let mut reads = 0;
        loop {
            if reader.is_buffer_empty() {
                if reads == MAX_READS_PER_DRAIN {
                    return Seen::Everything;
                }
                reads += 1;
            }
            let event = match reader.next() {
                Ok(event) => event,
                Err(Errno::AGAIN) | Err(Errno::INTR) => return seen,
                Err(_) => return Seen::Everything,
            };
            let flags = event.events();
            if flags.intersects(
                ReadFlags::QUEUE_OVERFLOW
                    | ReadFlags::IGNORED
                    | ReadFlags::DELETE_SELF
                    | ReadFlags::MOVE_SELF
                    | ReadFlags::UNMOUNT,
            ) {
                if flags.intersects(ReadFlags::IGNORED | ReadFlags::UNMOUNT) {
                    self.watch = None;
                }
                seen = Seen::Everything;
            } else if seen == Seen::Nothing {
                seen = Seen::Entries;
            }
        }
    }
}

impl Default for DirWatch {
    fn default() -> Self {
        DirWatch::new()
    }
}

/// The name of the filesystem holding `dir`, if inotify cannot be trusted on it.
// The type of `f_type` differs between targets (signed 32 bits on armv7).
#[allow(clippy::unnecessary_cast)]
fn untrusted_filesystem(dir: BorrowedFd<'_>) -> Option<&'static str> {
    let magic = rustix::fs::fstatfs(dir).ok()?.f_type as u32;
    UNTRUSTED_FILESYSTEMS
        .iter()
        .find(|(m, _)| *m == magic)
        .map(|(_, name)| *name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_raise_events_and_touches_do_not() {
        let dir = std::env::temp_dir().join(format!("wk-dirwatch-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let held = std::fs::File::open(&dir).unwrap();
        let mut watch = DirWatch::new();
        if !watch.watch(held.as_fd(), &dir) {
            // A temporary directory on a network filesystem: nothing to test here.
            assert!(untrusted_filesystem(held.as_fd()).is_some());
            return;
        }
        assert_eq!(watch.drain(), Seen::Nothing);
        std::fs::write(dir.join("a"), "5\n").unwrap();
        assert_eq!(watch.drain(), Seen::Entries);
        assert_eq!(watch.drain(), Seen::Nothing);
        let now = std::time::SystemTime::now();
        std::fs::File::options()
            .write(true)
            .open(dir.join("a"))
            .map(drop)
            .unwrap();
        assert_eq!(watch.drain(), Seen::Entries, "a write (close) is an event");
        let times = std::fs::FileTimes::new().set_modified(now);
        std::fs::File::options()
            .read(true)
            .open(dir.join("a"))
            .unwrap()
            .set_times(times)
            .unwrap();
        assert_eq!(watch.drain(), Seen::Nothing, "a touch is not");
        std::fs::rename(dir.join("a"), dir.join("b")).unwrap();
        assert_eq!(watch.drain(), Seen::Entries);
        std::fs::remove_file(dir.join("b")).unwrap();
        assert_eq!(watch.drain(), Seen::Entries);
        // The kernel reports the directory's own removal once its last reference goes
        // (the agent holds one: HeartsDir::check sees the link count drop instead).
        std::fs::remove_dir(&dir).unwrap();
        drop(held);
        assert_eq!(watch.drain(), Seen::Everything);
        assert!(!watch.trusted(), "the watch went with the directory");
    }
}
