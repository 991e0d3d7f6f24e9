//! The persistent state directory: reset history, the counts of the boots it no longer
//! holds, and the last good config.
//!
//! `dropped` keeps those counts ([`Dropped`]). It is written, before the history, only
//! when a boot leaves the history's window (or the directory was recreated), so it costs
//! one write in sixteen boots. One that cannot be read is reported and counted from zero:
//! the counts are for the fleet's monitoring, never for a decision of the agent's.
//!
//! Lives on persistent storage (default `/var/lib/watchkeeper`). Every write goes through
//! [`atomic::replace`] with fsyncs, so a power cut at any instant leaves each file whole.
//! A history that cannot be used (garbage, too large, a directory, a symlink, a FIFO,
//! unreadable) is moved aside as `history.corrupt` (or removed when even that fails) and a
//! fresh history starts; the agent never refuses to run because of it.
//!
//! A directory that cannot be written (read-only, full, deleted, replaced) never stops the
//! agent: [`State::fault`] says so for the LED, each failed write is reported by its caller
//! with what could not be recorded, and [`State::check`] (every pass, allocation-free)
//! notices the directory replaced or deleted, recreates it and rewrites the history, and
//! retries a failed write now and then.

use core::fmt;
use core::time::Duration;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags};
use nix::sys::statvfs::FsFlags;
use nix::unistd::UnlinkatFlags;

use crate::core::history::{
    Boot, BootStart, Confirm, DROPPED_TEXT_MAX, Dropped, History, TEXT_MAX,
};
use crate::core::time::Instant;
use crate::limits::BOOT_ID_LEN;
use crate::os::atomic::{self, libc_mode};

const HISTORY: &str = "history";
const HISTORY_CORRUPT: &str = "history.corrupt";
const DROPPED: &str = "dropped";
const LAST_GOOD: &str = "last-good.toml";
const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";
/// How often a history write that failed (a full disk, say) is tried again.
const WRITE_RETRY: Duration = Duration::from_secs(30);

/// A boot id as the kernel gives it: a UUID, 36 characters.
pub(crate) type BootId = heapless::String<BOOT_ID_LEN>;

/// The kernel's random id of the running boot, if the kernel tells it. `status` compares it
/// with the records to find this boot.
pub(crate) fn current_boot_id() -> Option<BootId> {
    // The UUID and its newline, with room to spare; a longer file is not a boot id.
    let mut buf = [0u8; 2 * BOOT_ID_LEN];
    let len = atomic::read(AT_FDCWD, BOOT_ID, &mut buf).ok()??;
    let text = core::str::from_utf8(&buf[..len]).ok()?.trim();
    BootId::try_from(text).ok()
}

/// This boot's id as the history records it: "unknown" if the kernel does not say.
pub fn boot_id() -> String {
    current_boot_id().map_or_else(|| "unknown".to_owned(), |id| id.as_str().to_owned())
}

/// A state directory problem: which file, what was being done, and the OS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    pub path: PathBuf,
    pub doing: &'static str,
    pub errno: Errno,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let why = match self.errno {
            Errno::ELOOP => "it is a symbolic link, which is never followed",
            Errno::EEXIST | Errno::ENOTDIR => "it, or a directory above it, is not a directory",
            e => e.desc(),
        };
        write!(f, "{}: {}: {why}", self.path.display(), self.doing)
    }
}

impl std::error::Error for StateError {}

/// A history write that failed in the loop: borrowed, so reporting it allocates nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteError<'a> {
    dir: &'a Path,
    pub errno: Errno,
}

impl fmt::Display for WriteError<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{HISTORY}: writing the reset history: {}",
            self.dir.display(),
            self.errno.desc()
        )
    }
}

/// How this start of the agent relates to the history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    First,
    /// A new boot; the previous boot's record, as closed.
    After(Box<Boot>),
    Restarted,
}

/// The open state directory and the history as last written.
pub struct State {
    path: PathBuf,
    /// The directory, or why it cannot be used (then the history lives in memory only,
    /// and every write reports that error).
    dir: Result<OwnedFd, Errno>,
    /// (device, inode) of `dir` when opened, to notice the path replaced or deleted.
    dir_id: (u64, u64),
    /// The history was read from this directory, so rewriting it there loses nothing; a
    /// directory that could not be read at startup is never written over.
    owned: bool,
    read_only: bool,
    /// Why the last history write failed: the file on disk is behind the one in memory.
    unwritten: Option<Errno>,
    retry_at: Instant,
    history: History,
    scratch: Box<heapless::String<TEXT_MAX>>,
    /// The counts of dropped boots differ from those on disk: written with the next
    /// history.
    dropped_unwritten: bool,
}

/// Where an unusable history went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Aside {
    /// Renamed to this path: nothing is lost.
    Kept(PathBuf),
    /// Renaming failed, so it was removed.
    Removed,
    /// Neither worked: it is still in the way, and writing the history will fail.
    Stuck(Errno),
}

/// What opening the state directory found that the operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The history could not be used (`defect` says why): moved aside, a fresh one starts.
    UnreadableHistory { defect: String, aside: Aside },
}

fn open_dir(path: &Path) -> Result<OwnedFd, StateError> {
    atomic::open_dir_at(AT_FDCWD, path).map_err(|errno| StateError {
        path: path.to_owned(),
        doing: "opening the state directory",
        errno,
    })
}

/// The history in `dir`, or what is wrong with it in the operator's words.
fn read_history(dir: &OwnedFd) -> Result<History, String> {
    match nix::sys::stat::fstatat(dir, HISTORY, AtFlags::AT_SYMLINK_NOFOLLOW) {
        Err(Errno::ENOENT) => return Ok(History::default()),
        Ok(st) if st.st_mode & libc_mode::S_IFMT != libc_mode::S_IFREG => {
            return Err(format!(
                "it is {}, not a regular file",
                atomic::kind(st.st_mode)
            ));
        }
        _ => {}
    }
    let mut buf = vec![0u8; TEXT_MAX];
    let len = match atomic::read(dir, HISTORY, &mut buf) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(History::default()),
        Err(Errno::EFBIG) => {
            return Err(format!(
                "it is larger than the {TEXT_MAX} bytes a history can take"
            ));
        }
        Err(Errno::ELOOP | Errno::EINVAL) => {
            return Err("it is not a regular file".to_owned());
        }
        Err(e) => return Err(format!("it cannot be read: {}", e.desc())),
    };
    match core::str::from_utf8(&buf[..len]) {
        Ok(text) => History::parse(text).map_err(|e| format!("it does not parse: {e}")),
        Err(_) => Err("it is not UTF-8 text".to_owned()),
    }
}

/// The counts of the boots that left the history, or what is wrong with their file.
fn read_dropped(dir: &OwnedFd) -> Result<Dropped, String> {
    let mut buf = [0u8; DROPPED_TEXT_MAX];
    let len = match atomic::read(dir, DROPPED, &mut buf) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(Dropped::default()),
        Err(Errno::EFBIG) => return Err("it is larger than its counts can be".to_owned()),
        Err(Errno::ELOOP | Errno::EINVAL) => return Err("it is not a regular file".to_owned()),
        Err(e) => return Err(format!("it cannot be read: {}", e.desc())),
    };
    let text = core::str::from_utf8(&buf[..len]).map_err(|_| "it is not UTF-8 text".to_owned())?;
    Dropped::parse(text).map_err(|e| format!("it does not parse: {e}"))
}

/// Gets an unusable history out of the way: renamed aside, else removed.
fn put_aside(dir: &OwnedFd, path: &Path) -> Aside {
    if nix::fcntl::renameat(dir, HISTORY, dir, HISTORY_CORRUPT).is_ok() {
        return Aside::Kept(path.join(HISTORY_CORRUPT));
    }
    let removed = nix::unistd::unlinkat(dir, HISTORY, UnlinkatFlags::NoRemoveDir)
        .or_else(|_| nix::unistd::unlinkat(dir, HISTORY, UnlinkatFlags::RemoveDir));
    match removed {
        Ok(()) => Aside::Removed,
        Err(e) => Aside::Stuck(e),
    }
}

/// Opens the directory at `path` (creating it and its parents), allocation-free.
fn reopen(path: &Path) -> Result<(OwnedFd, (u64, u64)), Errno> {
    atomic::make_dirs(path)?;
    let fd = atomic::open_dir_at(AT_FDCWD, path)?;
    let id = atomic::identity(&fd)?;
    Ok((fd, id))
}

fn on_read_only_fs(dir: &OwnedFd) -> bool {
    nix::sys::statvfs::fstatvfs(dir).is_ok_and(|v| v.flags().contains(FsFlags::ST_RDONLY))
}

impl State {
    /// Opens (creating it if needed) the state directory and reads the history.
    pub fn open(path: &Path) -> Result<(State, Option<Finding>), StateError> {
        std::fs::create_dir_all(path).map_err(|e| StateError {
            path: path.to_owned(),
            doing: "creating the state directory",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
        let dir = open_dir(path)?;
        let dir_id = atomic::identity(&dir).map_err(|errno| StateError {
            path: path.to_owned(),
            doing: "opening the state directory",
            errno,
        })?;
        let (mut history, finding) = match read_history(&dir) {
            Ok(history) => (history, None),
            Err(defect) => {
                let aside = put_aside(&dir, path);
                (
                    History::default(),
                    Some(Finding::UnreadableHistory { defect, aside }),
                )
            }
        };
        match read_dropped(&dir) {
            Ok(dropped) => history.set_dropped(dropped),
            Err(defect) => log::warn!(
                "{}: the counts of the boots the history no longer holds cannot be used ({defect}): they count from zero again",
                path.join(DROPPED).display()
            ),
        }
        let state = State {
            read_only: on_read_only_fs(&dir),
            unwritten: None,
            path: path.to_owned(),
            dir: Ok(dir),
            dir_id,
            owned: true,
            retry_at: Instant::ZERO,
            history,
            scratch: Box::default(),
            dropped_unwritten: false,
        };
        Ok((state, finding))
    }

    /// A state that cannot be written (the directory failed with `errno`): the agent still
    /// runs, keeps the history in memory, and logs each failed write.
    pub(crate) fn unavailable(path: &Path, errno: Errno) -> State {
        State {
            path: path.to_owned(),
            dir: Err(errno),
            dir_id: (0, 0),
            owned: false,
            read_only: false,
            unwritten: None,
            retry_at: Instant::NEVER,
            history: History::default(),
            scratch: Box::default(),
            dropped_unwritten: false,
        }
    }

    /// Reads the history, with the counts of dropped boots when they can be read, without
    /// creating or changing anything (for `status`).
    pub fn read_only(path: &Path) -> Result<Result<History, String>, StateError> {
        let dir = open_dir(path)?;
        Ok(read_history(&dir).map(|mut history| {
            if let Ok(dropped) = read_dropped(&dir) {
                history.set_dropped(dropped);
            }
            history
        }))
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// True while reset reasons cannot be recorded (show the fault pattern).
    pub fn fault(&self) -> bool {
        self.dir.is_err() || self.read_only || self.unwritten.is_some()
    }

    /// Records the start of this boot (see [`History::start_boot`]) and persists it. The
    /// previous boot's end is returned even when the write fails: it is logged either way.
    pub fn start_boot(
        &mut self,
        boot_id: &str,
        wall: i64,
        watchdog_fired: bool,
    ) -> (Started, Result<(), StateError>) {
        let dropped = self.history.dropped();
        let started = match self.history.start_boot(boot_id, wall, watchdog_fired) {
            BootStart::First => Started::First,
            BootStart::After(previous) => Started::After(Box::new(previous.clone())),
            BootStart::Restarted => Started::Restarted,
        };
        self.dropped_unwritten |= self.history.dropped() != dropped;
        (started, self.persist())
    }

    /// Records the reason for the reset about to be forced, durably. Allocation-free,
    /// also when it fails.
    pub fn record_forced_reset(
        &mut self,
        component: &str,
        reason: &str,
        uptime: Duration,
    ) -> Result<(), WriteError<'_>> {
        self.history.record_forced_reset(component, reason, uptime);
        self.write_in_loop()
    }

    /// Records that an operator is taking the board down, bounded by `bound`, durably.
    pub fn record_shutdown(&mut self, uptime: Duration, bound: Duration) -> Result<(), StateError> {
        self.history.record_shutdown(uptime, bound);
        self.persist()
    }

    /// Records where this boot's confirmation stands, durably. Allocation-free, also when it
    /// fails.
    pub fn record_confirm(
        &mut self,
        confirm: Confirm,
        uptime: Duration,
        note: &str,
    ) -> Result<(), WriteError<'_>> {
        self.history.record_confirm(confirm, uptime, note);
        self.write_in_loop()
    }

    /// Records that an operator cleared the hold in this boot, durably. Allocation-free,
    /// also when it fails.
    pub fn record_hold_cleared(&mut self) -> Result<(), WriteError<'_>> {
        self.history.record_hold_cleared();
        self.write_in_loop()
    }

    fn write_in_loop(&mut self) -> Result<(), WriteError<'_>> {
        self.write_history().map_err(|errno| WriteError {
            dir: &self.path,
            errno,
        })
    }

    /// Notices the state directory deleted, replaced or remounted read-only, recreates it
    /// and rewrites the history, and retries a failed write every [`WRITE_RETRY`]. Logs
    /// each change once. Called every pass: when all is well, one fstatat(2) and one
    /// fstatvfs(2), no allocation.
    pub fn check(&mut self, now: Instant) {
        let before = (
            self.dir.as_ref().err().copied(),
            self.read_only,
            self.unwritten,
        );
        if let Ok(dir) = &self.dir {
            if atomic::still_at(AT_FDCWD, self.path.as_path(), self.dir_id) {
                self.read_only = on_read_only_fs(dir);
            } else {
                log::warn!(
                    "the state directory {} was removed or replaced: recreating it and rewriting the reset history",
                    self.path.display()
                );
                self.dir = Err(Errno::ENOENT);
                self.retry_at = now;
            }
        }
        if self.owned && self.dir.is_err() {
            match reopen(&self.path) {
                Ok((fd, id)) => {
                    self.read_only = on_read_only_fs(&fd);
                    self.dir = Ok(fd);
                    self.dir_id = id;
                    self.unwritten = Some(Errno::ENOENT);
                    self.dropped_unwritten = self.history.dropped() != Dropped::default();
                }
                Err(e) => self.dir = Err(e),
            }
        }
        if self.dir.is_ok() && !self.read_only && self.unwritten.is_some() && now >= self.retry_at {
            self.retry_at = now.saturating_add(WRITE_RETRY);
            let _ = self.write_history();
        }
        if (
            self.dir.as_ref().err().copied(),
            self.read_only,
            self.unwritten,
        ) != before
        {
            self.log_health();
        }
    }

    /// Logs why reset reasons cannot be recorded now, or that they can again.
    pub(crate) fn log_health(&self) {
        let path = self.path.display();
        let why = match (&self.dir, self.read_only, self.unwritten) {
            (Err(e), _, _) => e.desc(),
            (Ok(_), true, _) => "it is on a read-only filesystem",
            (Ok(_), false, Some(e)) => e.desc(),
            (Ok(_), false, None) => {
                log::warn!(
                    "the state directory {path} works again: the reset history is written, reset reasons are recorded"
                );
                return;
            }
        };
        log::error!(
            "the state directory {path} cannot be written ({why}): reset reasons cannot be recorded until it can; supervision and feeding go on"
        );
    }

    fn persist(&mut self) -> Result<(), StateError> {
        self.write_history().map_err(|errno| StateError {
            path: self.path.join(HISTORY),
            doing: "writing the reset history",
            errno,
        })
    }

    /// Writes the whole history, allocation-free, after the counts of dropped boots if they
    /// changed (so that a crash between the two counts no boot twice: see [`Dropped`]);
    /// remembers a failure for [`State::fault`].
    fn write_history(&mut self) -> Result<(), Errno> {
        let written = self.write_dropped().and_then(|()| {
            self.history
                .write_text(&mut self.scratch)
                .map_err(|_| Errno::EOVERFLOW)?;
            match &self.dir {
                Ok(dir) => atomic::replace(dir, HISTORY, self.scratch.as_bytes(), true),
                Err(e) => Err(*e),
            }
        });
        self.unwritten = written.err();
        written
    }

    fn write_dropped(&mut self) -> Result<(), Errno> {
        if !self.dropped_unwritten {
            return Ok(());
        }
        let mut text = heapless::String::<DROPPED_TEXT_MAX>::new();
        self.history
            .dropped()
            .write_text(&mut text)
            .map_err(|_| Errno::EOVERFLOW)?;
        let dir = self.dir.as_ref().map_err(|e| *e)?;
        atomic::replace(dir, DROPPED, text.as_bytes(), true)?;
        self.dropped_unwritten = false;
        Ok(())
    }

    /// Keeps `source` as the last config that loaded, unless it already is. `source` was
    /// accepted by the config parser, so it is within the read-back limit.
    pub(crate) fn save_last_good(&self, source: &str) -> Result<(), StateError> {
        if Self::load_last_good(&self.path).is_ok_and(|kept| kept.as_deref() == Some(source)) {
            return Ok(());
        }
        let error = |errno| StateError {
            path: self.path.join(LAST_GOOD),
            doing: "keeping the last good config",
            errno,
        };
        let dir = self.dir.as_ref().map_err(|e| error(*e))?;
        atomic::replace(dir, LAST_GOOD, source.as_bytes(), true).map_err(error)
    }

    /// The last config that loaded, if one was kept in the state directory at `path`
    /// (`Ok(None)`: none was). One that cannot be read is an error, never silently absent:
    /// a directory, FIFO or symlink in its place, a file over
    /// [`crate::limits::MAX_CONFIG_LEN`] (`EFBIG`), or bytes that are not UTF-8 (`EILSEQ`).
    pub(crate) fn load_last_good(path: &Path) -> Result<Option<String>, StateError> {
        let error = |errno| StateError {
            path: path.join(LAST_GOOD),
            doing: "reading the last good config",
            errno,
        };
        let dir = match open_dir(path) {
            Ok(dir) => dir,
            Err(e) if e.errno == Errno::ENOENT => return Ok(None),
            Err(e) => return Err(error(e.errno)),
        };
        let mut buf = vec![0u8; crate::limits::MAX_CONFIG_LEN];
        let Some(len) = atomic::read(&dir, LAST_GOOD, &mut buf).map_err(error)? else {
            return Ok(None);
        };
        buf.truncate(len);
        String::from_utf8(buf)
            .map(Some)
            .map_err(|_| error(Errno::EILSEQ))
    }

    /// Where the last good config is kept.
    pub(crate) fn last_good_path(path: &Path) -> PathBuf {
        path.join(LAST_GOOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::stat::Mode;

    fn dir(tag: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("wk-state-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn history_survives_reopening() {
        let path = dir("reopen");
        let (mut state, finding) = State::open(&path).unwrap();
        assert!(finding.is_none());
        state.start_boot("boot-a", 1, false).1.unwrap();
        state
            .record_forced_reset("sensor", "heartbeat silent", Duration::from_secs(5))
            .unwrap();
        let (mut state, _) = State::open(&path).unwrap();
        let (Started::After(previous), Ok(())) = state.start_boot("boot-b", 2, false) else {
            panic!()
        };
        assert_eq!(previous.component, "sensor");
        assert_eq!(State::read_only(&path).unwrap().unwrap().boots().len(), 2);
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn the_counts_of_ends_survive_boots_leaving_the_window_and_a_lost_history() {
        let path = dir("dropped");
        let boots = crate::limits::HISTORY_LEN as u64 + 4;
        for n in 1..=boots {
            let (mut state, _) = State::open(&path).unwrap();
            state.start_boot(&format!("boot-{n}"), 0, false).1.unwrap();
            state
                .record_forced_reset("sensor", "dead", Duration::from_secs(5))
                .unwrap();
        }
        let read = State::read_only(&path).unwrap().unwrap();
        assert_eq!(read.dropped().through, 4);
        assert_eq!(read.ends().forced, boots);
        // A history lost (unparsable) counts on from what left it, and numbers on.
        std::fs::write(path.join(HISTORY), b"garbage").unwrap();
        let (mut state, finding) = State::open(&path).unwrap();
        assert!(finding.is_some());
        state.start_boot("after-the-loss", 0, false).1.unwrap();
        assert_eq!(state.history().current().unwrap().number, 5);
        assert_eq!(state.history().ends().forced, 4);
        // Counts that cannot be read are counted from zero, and the agent goes on.
        std::fs::write(path.join(DROPPED), b"watchkeeper-dropped 1\nthrough\tx\n").unwrap();
        let (state, _) = State::open(&path).unwrap();
        assert_eq!(state.history().dropped(), Dropped::default());
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_corrupt_history_is_kept_aside_not_lost() {
        let path = dir("corrupt");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(HISTORY), b"garbage\n").unwrap();
        let (state, finding) = State::open(&path).unwrap();
        let Some(Finding::UnreadableHistory { defect, aside }) = finding else {
            panic!("{finding:?}")
        };
        assert!(defect.contains("does not parse"), "{defect}");
        assert_eq!(aside, Aside::Kept(path.join(HISTORY_CORRUPT)));
        assert_eq!(
            std::fs::read(path.join(HISTORY_CORRUPT)).unwrap(),
            b"garbage\n"
        );
        assert_eq!(state.history().boots().len(), 0);
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn any_unusable_history_is_moved_aside_and_a_new_one_written() {
        type Make = fn(&Path);
        let cases: [(&str, Make, &str); 5] = [
            ("dir", |p| std::fs::create_dir(p).unwrap(), "a directory"),
            (
                "link",
                |p| std::os::unix::fs::symlink("/etc/hostname", p).unwrap(),
                "a symbolic link",
            ),
            (
                "fifo",
                |p| nix::unistd::mkfifo(p, Mode::from_bits_truncate(0o600)).unwrap(),
                "a FIFO",
            ),
            (
                "huge",
                |p| std::fs::write(p, vec![b'x'; TEXT_MAX + 1]).unwrap(),
                "larger than",
            ),
            (
                "binary",
                |p| std::fs::write(p, [0xff, 0xfe, 0]).unwrap(),
                "UTF-8",
            ),
        ];
        for (tag, make, words) in cases {
            let path = dir(tag);
            std::fs::create_dir_all(&path).unwrap();
            make(&path.join(HISTORY));
            let (mut state, finding) = State::open(&path).unwrap();
            let Some(Finding::UnreadableHistory { defect, aside }) = finding else {
                panic!("{tag}: {finding:?}")
            };
            assert!(defect.contains(words), "{tag}: {defect}");
            assert_eq!(aside, Aside::Kept(path.join(HISTORY_CORRUPT)), "{tag}");
            assert_eq!(state.start_boot("boot-a", 1, false).1, Ok(()), "{tag}");
            assert!(!state.fault(), "{tag}");
            assert_eq!(State::read_only(&path).unwrap().unwrap().boots().len(), 1);
            std::fs::remove_dir_all(path).unwrap();
        }
    }

    #[test]
    fn a_history_that_cannot_be_kept_aside_is_removed() {
        let path = dir("inway");
        std::fs::create_dir_all(path.join(HISTORY_CORRUPT).join("full")).unwrap();
        std::fs::write(path.join(HISTORY), b"garbage\n").unwrap();
        let (mut state, finding) = State::open(&path).unwrap();
        assert!(
            matches!(
                finding,
                Some(Finding::UnreadableHistory {
                    aside: Aside::Removed,
                    ..
                })
            ),
            "{finding:?}"
        );
        assert_eq!(state.start_boot("boot-a", 1, false).1, Ok(()));
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_history_stuck_in_the_way_is_a_fault_not_a_stop() {
        let path = dir("stuck");
        std::fs::create_dir_all(path.join(HISTORY).join("inside")).unwrap();
        std::fs::create_dir_all(path.join(HISTORY_CORRUPT).join("inside")).unwrap();
        let (mut state, finding) = State::open(&path).unwrap();
        assert!(
            matches!(
                finding,
                Some(Finding::UnreadableHistory {
                    aside: Aside::Stuck(_),
                    ..
                })
            ),
            "{finding:?}"
        );
        assert!(state.start_boot("boot-a", 1, false).1.is_err());
        assert!(state.fault());
        let e = state.record_hold_cleared().unwrap_err();
        assert!(
            e.to_string()
                .ends_with("/history: writing the reset history: Is a directory"),
            "{e}"
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_deleted_state_directory_is_recreated_with_the_history() {
        let path = dir("deleted");
        let (mut state, _) = State::open(&path).unwrap();
        state.start_boot("boot-a", 1, false).1.unwrap();
        std::fs::remove_dir_all(&path).unwrap();
        state.check(Instant::from_millis(1));
        assert!(!state.fault());
        assert_eq!(State::read_only(&path).unwrap().unwrap().boots().len(), 1);
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_failed_write_is_a_fault_until_a_retry_succeeds() {
        let path = dir("retry");
        let (mut state, _) = State::open(&path).unwrap();
        // A directory where the history goes makes every write fail.
        std::fs::create_dir_all(path.join(HISTORY).join("x")).unwrap();
        assert!(state.start_boot("boot-a", 1, false).1.is_err());
        assert!(state.fault());
        state.check(Instant::from_millis(1));
        assert!(state.fault());
        std::fs::remove_dir_all(path.join(HISTORY)).unwrap();
        state.check(Instant::from_millis(2));
        assert!(state.fault(), "retried only every WRITE_RETRY");
        state.check(Instant::from_millis(2).saturating_add(WRITE_RETRY));
        assert!(!state.fault());
        assert_eq!(State::read_only(&path).unwrap().unwrap().boots().len(), 1);
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn last_good_config_round_trips() {
        let path = dir("lastgood");
        let (state, _) = State::open(&path).unwrap();
        assert_eq!(State::load_last_good(&path), Ok(None));
        state.save_last_good("[watchdog]\n").unwrap();
        assert_eq!(
            State::load_last_good(&path).unwrap().as_deref(),
            Some("[watchdog]\n")
        );
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_last_good_config_that_cannot_be_read_is_an_error_not_absent() {
        let path = dir("lastgood-bad");
        let (state, _) = State::open(&path).unwrap();
        let kept = path.join(LAST_GOOD);
        std::fs::write(&kept, vec![b'#'; crate::limits::MAX_CONFIG_LEN + 1]).unwrap();
        assert_eq!(
            State::load_last_good(&path).map_err(|e| e.errno),
            Err(Errno::EFBIG)
        );
        std::fs::write(&kept, b"# caf\xe9\n").unwrap();
        assert_eq!(
            State::load_last_good(&path).map_err(|e| e.errno),
            Err(Errno::EILSEQ)
        );
        std::fs::remove_file(&kept).unwrap();
        std::fs::create_dir(&kept).unwrap();
        assert!(State::load_last_good(&path).is_err());
        // A good config replaces what cannot be read.
        std::fs::remove_dir(&kept).unwrap();
        state.save_last_good("[watchdog]\n").unwrap();
        assert_eq!(
            State::load_last_good(&path).unwrap().as_deref(),
            Some("[watchdog]\n")
        );
        assert_eq!(State::load_last_good(&path.join("missing")), Ok(None));
        std::fs::remove_dir_all(path).unwrap();
    }
}
