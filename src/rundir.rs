//! The run directory (volatile, e.g. `/run/watchkeeper`): problem files, the status
//! snapshot and operator requests.
//!
//! `problems/<name>` marks a dead component, as in the talk: its mtime is when the problem
//! was first noticed (an existing file is never rewritten), its content names the detector
//! and the reason. Other tools may read and act on these files; the agent removes its own
//! when the component beats again. `status` is rewritten whole on every state change.
//! `clear-hold` is created by `watchkeeper clear-hold` and consumed by the agent.
//! `fed` is touched after every successful feed: its mtime tells `status` (and any outside
//! observer) when the watchdog was last fed. It is held open, so touching it is one
//! futimens(2) that allocates nothing.

use core::fmt::Write as _;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use crate::atomic;
use crate::limits::MAX_REASON_LEN;

pub const PROBLEMS: &str = "problems";
pub const STATUS: &str = "status";
pub const CLEAR_HOLD: &str = "clear-hold";
pub const FED: &str = "fed";
/// Who writes the problem files, as their content says.
pub const DETECTOR: &str = "watchkeeper";

/// The open run directory.
pub struct RunDir {
    path: PathBuf,
    dir: OwnedFd,
    problems: OwnedFd,
    fed: OwnedFd,
}

fn errno_of(e: std::io::Error) -> Errno {
    Errno::from_raw(e.raw_os_error().unwrap_or(0))
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    std::fs::create_dir_all(path).map_err(errno_of)?;
    nix::fcntl::open(
        path,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

impl RunDir {
    /// Opens (creating them if needed) the run directory and its `problems/`.
    pub fn open(path: &Path) -> Result<RunDir, (PathBuf, Errno)> {
        let dir = open_dir(path).map_err(|e| (path.to_owned(), e))?;
        let problems_path = path.join(PROBLEMS);
        let problems = open_dir(&problems_path).map_err(|e| (problems_path, e))?;
        let fed = nix::fcntl::openat(
            &dir,
            FED,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .map_err(|e| (path.join(FED), e))?;
        Ok(RunDir {
            path: path.to_owned(),
            dir,
            problems,
            fed,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where the problem file of `name` is (for repair commands and people).
    pub fn problem_path(&self, name: &str) -> PathBuf {
        self.path.join(PROBLEMS).join(name)
    }

    /// Marks `name` as a problem unless it already is (the first notice's time is kept).
    pub fn mark_problem(&self, name: &str, reason: &str) -> Result<(), Errno> {
        match nix::sys::stat::fstatat(&self.problems, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut content: heapless::String<{ MAX_REASON_LEN + 32 }> = heapless::String::new();
        // A reason that does not fit is cut: the problem must be marked regardless.
        let _ = writeln!(content, "{DETECTOR}: {reason}");
        atomic::replace(&self.problems, name, content.as_bytes(), false)
    }

    /// Removes the problem file of `name`, if any.
    pub fn clear_problem(&self, name: &str) -> Result<(), Errno> {
        match nix::unistd::unlinkat(&self.problems, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the status snapshot.
    pub fn write_status(&self, text: &str) -> Result<(), Errno> {
        atomic::replace(&self.dir, STATUS, text.as_bytes(), false)
    }

    /// Records that the watchdog was fed just now (the `fed` file's mtime).
    pub fn mark_fed(&self) -> Result<(), Errno> {
        nix::sys::stat::futimens(&self.fed, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)
    }

    /// True (once) if an operator asked to clear the reboot-loop hold.
    pub fn take_clear_hold_request(&self) -> bool {
        nix::unistd::unlinkat(&self.dir, CLEAR_HOLD, UnlinkatFlags::NoRemoveDir).is_ok()
    }
}

/// Asks a running agent to clear the hold (for `watchkeeper clear-hold`).
pub fn request_clear_hold(run_dir: &Path) -> Result<PathBuf, Errno> {
    let dir = open_dir(run_dir)?;
    atomic::replace(&dir, CLEAR_HOLD, b"requested\n", false)?;
    Ok(run_dir.join(CLEAR_HOLD))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problem_files_keep_their_first_notice() {
        let path = std::env::temp_dir().join(format!("wk-run-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        let run = RunDir::open(&path).unwrap();
        run.mark_problem("sensor", "heartbeat not touched").unwrap();
        let file = run.problem_path("sensor");
        let first = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        run.mark_problem("sensor", "a later reason").unwrap();
        assert_eq!(std::fs::metadata(&file).unwrap().modified().unwrap(), first);
        assert_eq!(
            std::fs::read_to_string(&file).unwrap(),
            "watchkeeper: heartbeat not touched\n"
        );
        run.clear_problem("sensor").unwrap();
        run.clear_problem("sensor").unwrap();
        assert!(!file.exists());
        let fed = path.join(FED);
        let before = std::fs::metadata(&fed).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        run.mark_fed().unwrap();
        assert!(std::fs::metadata(&fed).unwrap().modified().unwrap() > before);
        assert!(!run.take_clear_hold_request());
        request_clear_hold(&path).unwrap();
        assert!(run.take_clear_hold_request());
        let fed = path.join(FED);
        let before = std::fs::metadata(&fed).unwrap().modified().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        run.mark_fed().unwrap();
        assert!(std::fs::metadata(&fed).unwrap().modified().unwrap() > before);
        assert!(!run.take_clear_hold_request());
        std::fs::remove_dir_all(path).unwrap();
    }
}
