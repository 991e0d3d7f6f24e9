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
//!
//! The directory never stops the agent: one that cannot be used (a symlink, which is never
//! followed; a file; read-only; a part of the wrong type) is reported, its writes fail
//! without touching anything, and every pass tries again. Every pass also checks that the
//! paths still name the held directory, `problems/` and `fed`, so one deleted or replaced
//! at run time is noticed and recreated. All of it is allocation-free.

use core::fmt::{self, Write as _};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AT_FDCWD, AtFlags, OFlag};
use nix::sys::stat::Mode;
use nix::sys::statvfs::FsFlags;
use nix::sys::time::TimeSpec;
use nix::unistd::UnlinkatFlags;

use crate::limits::MAX_REASON_LEN;
use crate::os::atomic::{self, libc_mode};

pub(crate) const PROBLEMS: &str = "problems";
pub(crate) const STATUS: &str = "status";
pub(crate) const CLEAR_HOLD: &str = "clear-hold";
pub(crate) const FED: &str = "fed";
/// Who writes the problem files, as their content says.
pub(crate) const DETECTOR: &str = "watchkeeper";

/// The part of the run directory that failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Dir,
    Problems,
    Fed,
}

/// Why the run directory cannot be used (the agent goes on without it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Broken {
    pub part: Part,
    pub errno: Errno,
    /// What is there instead, when the path exists but is of the wrong type.
    pub found: Option<&'static str>,
}

impl Broken {
    fn naming(self, found: Option<&'static str>) -> Broken {
        Broken { found, ..self }
    }
}

/// The type of what is at `dir/name` when it is neither missing nor of the `wanted` type.
/// A symlink is left to `ELOOP`'s own message (it is refused whatever it points to).
fn found_at(
    dir: impl std::os::fd::AsFd,
    name: &(impl nix::NixPath + ?Sized),
    wanted: u32,
) -> Option<&'static str> {
    let st = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW).ok()?;
    let kind = st.st_mode & libc_mode::S_IFMT;
    (kind != wanted && kind != libc_mode::S_IFLNK).then(|| atomic::kind(st.st_mode))
}

/// A [`Broken`] with the run directory's path, in the operator's words.
pub(crate) struct Described<'a> {
    path: &'a Path,
    broken: Broken,
}

impl fmt::Display for Described<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (suffix, what) = match self.broken.part {
            Part::Dir => ("", "the run directory"),
            Part::Problems => ("/problems", "its problems directory"),
            Part::Fed => ("/fed", "its fed file"),
        };
        write!(f, "{}{suffix}: ", self.path.display())?;
        if let Some(found) = self.broken.found {
            let wanted = match self.broken.part {
                Part::Fed => "a regular file",
                Part::Dir | Part::Problems => "a directory",
            };
            return write!(f, "{what} is {found}, not {wanted}");
        }
        match self.broken.errno {
            Errno::ELOOP => write!(f, "{what} is a symbolic link, which is never followed"),
            Errno::ENOTDIR => write!(f, "{what}, or a directory above it, is not a directory"),
            Errno::EISDIR => write!(f, "{what} is a directory, not a regular file"),
            Errno::ENXIO | Errno::EINVAL => write!(f, "{what} is not a regular file"),
            Errno::EROFS => write!(f, "{what} is on a read-only filesystem"),
            e => write!(f, "{what} cannot be used: {}", e.desc()),
        }
    }
}

/// The held descriptors, each with the (device, inode) it had when opened.
struct Held {
    fd: OwnedFd,
    id: (u64, u64),
}

impl Held {
    fn new(fd: OwnedFd) -> Result<Held, Errno> {
        let id = atomic::identity(&fd)?;
        Ok(Held { fd, id })
    }
}

/// The run directory, open or (after a fault) waiting to be usable again.
///
/// Invariant: `broken` is `None` exactly when all three parts are held; while it is `Some`
/// every pass tries to reopen, and writes return the error instead of touching anything.
pub struct RunDir {
    path: PathBuf,
    dir: Option<Held>,
    problems: Option<Held>,
    fed: Option<Held>,
    broken: Option<Broken>,
}

/// What [`RunDir::check`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checked {
    /// Nothing changed.
    Same,
    /// The directory is usable again (recreated or repaired): rewrite what it should hold.
    Restored,
    /// It became unusable.
    Broke,
}

fn open_dir(path: &Path) -> Result<OwnedFd, Errno> {
    atomic::make_dirs(path)?;
    atomic::open_dir_at(AT_FDCWD, path)
}

impl RunDir {
    /// Opens (creating them if needed) the run directory, its `problems/` and `fed`. Never
    /// fails: a directory that cannot be used is reported by [`RunDir::broken`], and each
    /// [`RunDir::check`] tries again.
    pub fn open(path: &Path) -> RunDir {
        let mut run = RunDir {
            path: path.to_owned(),
            dir: None,
            problems: None,
            fed: None,
            broken: None,
        };
        run.broken = run.reopen().err();
        run
    }

    /// Opens every part anew, allocation-free (it runs in the loop).
    fn reopen(&mut self) -> Result<(), Broken> {
        self.dir = None;
        self.problems = None;
        self.fed = None;
        let at = |part| {
            move |errno| Broken {
                part,
                errno,
                found: None,
            }
        };
        let dir = open_dir(&self.path)
            .and_then(Held::new)
            .map_err(at(Part::Dir))
            .map_err(|b| b.naming(found_at(AT_FDCWD, self.path.as_path(), libc_mode::S_IFDIR)))?;
        // Open succeeds on a read-only filesystem; only writing would tell, much later.
        let flags = nix::sys::statvfs::fstatvfs(&dir.fd).map_err(at(Part::Dir))?;
        if flags.flags().contains(FsFlags::ST_RDONLY) {
            return Err(at(Part::Dir)(Errno::EROFS));
        }
        let problems =
            match nix::sys::stat::mkdirat(&dir.fd, PROBLEMS, Mode::from_bits_truncate(0o755)) {
                Ok(()) | Err(Errno::EEXIST) => {
                    atomic::open_dir_at(&dir.fd, PROBLEMS).and_then(Held::new)
                }
                Err(e) => Err(e),
            };
        let problems = problems
            .map_err(at(Part::Problems))
            .map_err(|b| b.naming(found_at(&dir.fd, PROBLEMS, libc_mode::S_IFDIR)));
        let fed = nix::fcntl::openat(
            &dir.fd,
            FED,
            OFlag::O_WRONLY
                | OFlag::O_CREAT
                | OFlag::O_NOFOLLOW
                | OFlag::O_NONBLOCK
                | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(0o644),
        )
        .and_then(
            |fd| match nix::sys::stat::fstat(&fd)?.st_mode & libc_mode::S_IFMT {
                libc_mode::S_IFREG => Held::new(fd),
                _ => Err(Errno::EINVAL),
            },
        )
        .map_err(at(Part::Fed))
        .map_err(|b| b.naming(found_at(&dir.fd, FED, libc_mode::S_IFREG)));
        self.dir = Some(dir);
        // Each part that opened is used even if another did not: problem files are worth
        // writing with a broken `fed`, the status snapshot with a broken `problems/`.
        let first_error = problems.as_ref().err().or(fed.as_ref().err()).copied();
        self.problems = problems.ok();
        self.fed = fed.ok();
        first_error.map_or(Ok(()), Err)
    }

    /// Why the run directory cannot be used, if it cannot.
    pub fn broken(&self) -> Option<Broken> {
        self.broken
    }

    /// `broken` with this directory's path, for a log line.
    pub(crate) fn describe(&self, broken: Broken) -> Described<'_> {
        Described {
            path: &self.path,
            broken,
        }
    }

    /// Notices the run directory (or a part) deleted, replaced (by a symlink, say) or
    /// repaired, and reopens it; logs each change once. Called at the start of every pass:
    /// when all is well it costs three fstatat(2) calls and allocates nothing.
    pub fn check(&mut self) -> Checked {
        if self.broken.is_none() && self.intact() {
            return Checked::Same;
        }
        let was = self.broken;
        if was.is_none() {
            log::warn!(
                "the run directory {} (or its problems/ or fed) was removed or replaced: recreating it",
                self.path.display()
            );
        }
        self.broken = self.reopen().err();
        match (was, self.broken) {
            (_, None) => {
                log::warn!(
                    "the run directory {} is usable again: problem files and the status snapshot are rewritten",
                    self.path.display()
                );
                Checked::Restored
            }
            (Some(before), Some(now)) if before == now => Checked::Same,
            (_, Some(now)) => {
                log::error!(
                    "{}: problem files, the status snapshot and the fed file cannot be written until it is fixed; supervision and feeding go on",
                    self.describe(now)
                );
                Checked::Broke
            }
        }
    }

    fn intact(&self) -> bool {
        let (Some(dir), Some(problems), Some(fed)) = (&self.dir, &self.problems, &self.fed) else {
            return false;
        };
        atomic::still_at(AT_FDCWD, self.path.as_path(), dir.id)
            && atomic::still_at(&dir.fd, PROBLEMS, problems.id)
            && atomic::still_at(&dir.fd, FED, fed.id)
    }

    fn unusable(&self) -> Errno {
        self.broken.map_or(Errno::EBADF, |b| b.errno)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Marks `name` as a problem unless it already is (the first notice's time is kept).
    pub(crate) fn mark_problem(&self, name: &str, reason: &str) -> Result<(), Errno> {
        let problems = &self.problems.as_ref().ok_or_else(|| self.unusable())?.fd;
        match nix::sys::stat::fstatat(problems, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(e),
        }
        let mut content: heapless::String<{ MAX_REASON_LEN + 32 }> = heapless::String::new();
        // A reason that does not fit is cut: the problem must be marked regardless.
        let _ = writeln!(content, "{DETECTOR}: {reason}");
        atomic::replace(problems, name, content.as_bytes(), false)
    }

    /// Removes the problem file of `name`, if any.
    pub(crate) fn clear_problem(&self, name: &str) -> Result<(), Errno> {
        let Some(problems) = &self.problems else {
            return Err(self.unusable());
        };
        match nix::unistd::unlinkat(&problems.fd, name, UnlinkatFlags::NoRemoveDir) {
            Ok(()) | Err(Errno::ENOENT) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Replaces the status snapshot.
    pub(crate) fn write_status(&self, text: &str) -> Result<(), Errno> {
        let dir = &self.dir.as_ref().ok_or_else(|| self.unusable())?.fd;
        atomic::replace(dir, STATUS, text.as_bytes(), false)
    }

    /// Reads the status snapshot a previous agent left into `buf`; its length, `Ok(None)`
    /// if there is none.
    pub(crate) fn read_status(&self, buf: &mut [u8]) -> Result<Option<usize>, Errno> {
        let dir = &self.dir.as_ref().ok_or_else(|| self.unusable())?.fd;
        atomic::read(dir, STATUS, buf)
    }

    /// Records that the watchdog was fed just now (the `fed` file's mtime).
    pub(crate) fn mark_fed(&self) -> Result<(), Errno> {
        let fed = &self.fed.as_ref().ok_or_else(|| self.unusable())?.fd;
        nix::sys::stat::futimens(fed, &TimeSpec::UTIME_NOW, &TimeSpec::UTIME_NOW)
    }

    /// True (once) if an operator asked to clear the reboot-loop hold.
    pub(crate) fn take_clear_hold_request(&self) -> bool {
        self.dir.as_ref().is_some_and(|dir| {
            nix::unistd::unlinkat(&dir.fd, CLEAR_HOLD, UnlinkatFlags::NoRemoveDir).is_ok()
        })
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
        let run = RunDir::open(&path);
        assert_eq!(run.broken(), None);
        run.mark_problem("sensor", "heartbeat not touched").unwrap();
        let file = path.join(PROBLEMS).join("sensor");
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
        // Taken once: the request is gone.
        assert!(!run.take_clear_hold_request());
        std::fs::remove_dir_all(path).unwrap();
    }
}
