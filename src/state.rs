//! The persistent state directory: reset history and the last good config.
//!
//! Lives on persistent storage (default `/var/lib/watchkeeper`). Every write goes through
//! [`atomic::replace`] with fsyncs, so a power cut at any instant leaves each file whole.
//! A history file that does not parse is kept aside as `history.corrupt` (nothing is
//! lost) and a fresh history starts; the agent never refuses to run because of it.

use core::fmt;
use core::time::Duration;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::atomic;
use crate::history::{Boot, BootStart, History, TEXT_MAX};

const HISTORY: &str = "history";
const HISTORY_CORRUPT: &str = "history.corrupt";
const LAST_GOOD: &str = "last-good.toml";

/// A state directory problem: which file, what was being done, and the OS error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateError {
    pub path: PathBuf,
    pub doing: &'static str,
    pub errno: Errno,
}

impl fmt::Display for StateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}: {}",
            self.path.display(),
            self.doing,
            self.errno.desc()
        )
    }
}

impl std::error::Error for StateError {}

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
    history: History,
    scratch: Box<heapless::String<TEXT_MAX>>,
}

/// What opening the state directory found that the operator should hear about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding {
    /// The history did not parse; it was kept aside under this path.
    CorruptHistoryKept { path: PathBuf, defect: String },
}

fn open_dir(path: &Path) -> Result<OwnedFd, StateError> {
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|errno| StateError {
        path: path.to_owned(),
        doing: "opening the state directory",
        errno,
    })
}

fn read_history(dir: &OwnedFd, path: &Path) -> Result<Result<History, String>, StateError> {
    let mut buf = vec![0u8; TEXT_MAX];
    let len = atomic::read(dir, HISTORY, &mut buf).map_err(|errno| StateError {
        path: path.join(HISTORY),
        doing: "reading the reset history",
        errno,
    })?;
    let Some(len) = len else {
        return Ok(Ok(History::default()));
    };
    Ok(match core::str::from_utf8(&buf[..len]) {
        Ok(text) => History::parse(text).map_err(|e| e.to_string()),
        Err(_) => Err("not UTF-8 text".to_owned()),
    })
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
        let (history, finding) = match read_history(&dir, path)? {
            Ok(history) => (history, None),
            Err(defect) => {
                nix::fcntl::renameat(&dir, HISTORY, &dir, HISTORY_CORRUPT).map_err(|errno| {
                    StateError {
                        path: path.join(HISTORY),
                        doing: "keeping the unreadable history aside",
                        errno,
                    }
                })?;
                let kept = path.join(HISTORY_CORRUPT);
                (
                    History::default(),
                    Some(Finding::CorruptHistoryKept { path: kept, defect }),
                )
            }
        };
        let state = State {
            path: path.to_owned(),
            dir: Ok(dir),
            history,
            scratch: Box::default(),
        };
        Ok((state, finding))
    }

    /// A state that cannot be written (the directory failed with `errno`): the agent still
    /// runs, keeps the history in memory, and logs each failed write.
    pub fn unavailable(path: &Path, errno: Errno) -> State {
        State {
            path: path.to_owned(),
            dir: Err(errno),
            history: History::default(),
            scratch: Box::default(),
        }
    }

    /// Reads the history without creating or changing anything (for `status`).
    pub fn read_only(path: &Path) -> Result<Result<History, String>, StateError> {
        read_history(&open_dir(path)?, path)
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Records the start of this boot (see [`History::start_boot`]) and persists it.
    pub fn start_boot(
        &mut self,
        boot_id: &str,
        wall: i64,
        watchdog_fired: bool,
    ) -> Result<Started, StateError> {
        let started = match self.history.start_boot(boot_id, wall, watchdog_fired) {
            BootStart::First => Started::First,
            BootStart::After(previous) => Started::After(Box::new(previous.clone())),
            BootStart::Restarted => Started::Restarted,
        };
        self.persist()?;
        Ok(started)
    }

    /// Records the reason for the reset about to be forced, durably. Allocation-free.
    pub fn record_forced_reset(
        &mut self,
        component: &str,
        reason: &str,
        uptime: Duration,
    ) -> Result<(), StateError> {
        self.history.record_forced_reset(component, reason, uptime);
        self.persist()
    }

    /// Records that an operator cleared the hold in this boot, durably. Allocation-free.
    pub fn record_hold_cleared(&mut self) -> Result<(), StateError> {
        self.history.record_hold_cleared();
        self.persist()
    }

    fn persist(&mut self) -> Result<(), StateError> {
        let error = |errno| StateError {
            path: self.path.join(HISTORY),
            doing: "writing the reset history",
            errno,
        };
        self.history
            .write_text(&mut self.scratch)
            .map_err(|_| error(Errno::EOVERFLOW))?;
        let dir = self.dir.as_ref().map_err(|e| error(*e))?;
        atomic::replace(dir, HISTORY, self.scratch.as_bytes(), true).map_err(error)
    }

    /// Keeps `source` as the last config that loaded, unless it already is. `source` was
    /// accepted by the config parser, so it is within the read-back limit.
    pub fn save_last_good(&self, source: &str) -> Result<(), StateError> {
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
    pub fn load_last_good(path: &Path) -> Result<Option<String>, StateError> {
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
    pub fn last_good_path(path: &Path) -> PathBuf {
        path.join(LAST_GOOD)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        state.start_boot("boot-a", 1, false).unwrap();
        state
            .record_forced_reset("sensor", "heartbeat silent", Duration::from_secs(5))
            .unwrap();
        let (mut state, _) = State::open(&path).unwrap();
        let Started::After(previous) = state.start_boot("boot-b", 2, false).unwrap() else {
            panic!()
        };
        assert_eq!(previous.component, "sensor");
        assert_eq!(State::read_only(&path).unwrap().unwrap().boots().len(), 2);
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn a_corrupt_history_is_kept_aside_not_lost() {
        let path = dir("corrupt");
        std::fs::create_dir_all(&path).unwrap();
        std::fs::write(path.join(HISTORY), b"garbage\n").unwrap();
        let (state, finding) = State::open(&path).unwrap();
        assert!(matches!(finding, Some(Finding::CorruptHistoryKept { .. })));
        assert_eq!(
            std::fs::read(path.join(HISTORY_CORRUPT)).unwrap(),
            b"garbage\n"
        );
        assert_eq!(state.history().boots().len(), 0);
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
