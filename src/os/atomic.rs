//! Crash-safe file replacement: the one way the agent writes files it keeps.
//!
//! The new content goes to a temporary file beside the target, is fsynced, renamed over
//! the target (atomic), and the directory is fsynced so the rename itself survives a power
//! cut. A crash at any instant leaves either the old file or the new one, never a mix; at
//! worst a stray temporary file, which the next write removes: the temporary file is
//! always created anew, so nothing at its name (a FIFO included) can make a write wait,
//! which matters where others can write the directory (the metrics file's). Nothing
//! allocates: names are formatted into stack buffers and the directory is an fd opened at
//! startup.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use nix::NixPath;
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{fsync, write};

use crate::limits::MAX_NAME_LEN;

/// Replaces `dir/name` with `bytes`. `durable` also fsyncs file and directory (persistent
/// state); volatile files on tmpfs skip that cost.
pub fn replace(
    dir: impl AsFd + Copy,
    name: &str,
    bytes: &[u8],
    durable: bool,
) -> Result<(), Errno> {
    let mut temp: heapless::String<{ MAX_NAME_LEN + 32 }> = heapless::String::new();
    for part in [".", name, ".tmp"] {
        temp.push_str(part).map_err(|_| Errno::ENAMETOOLONG)?;
    }
    // Whatever holds the temporary name (a stray temporary file, or a FIFO someone who can
    // write the directory put there, which an open for writing would wait on forever) is
    // removed, and the file is created anew: O_EXCL opens only a new regular file.
    let _ = nix::unistd::unlinkat(dir, temp.as_str(), nix::unistd::UnlinkatFlags::NoRemoveDir);
    let fd = nix::fcntl::openat(
        dir,
        temp.as_str(),
        OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::from_bits_truncate(0o644),
    )?;
    let mut rest = bytes;
    while !rest.is_empty() {
        match write(&fd, rest) {
            Ok(0) => return Err(Errno::EIO),
            Ok(n) => rest = &rest[n..],
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
    if durable {
        fsync(&fd)?;
    }
    drop(fd);
    renameat(dir, temp.as_str(), dir, name)?;
    if durable {
        fsync(dir)?;
    }
    Ok(())
}

/// Reads `dir/name` (not following a symlink) into `buf`; returns the bytes read, or
/// `Ok(None)` if it does not exist. A file larger than `buf` is an error (`EFBIG`).
pub fn read<P: ?Sized + NixPath>(
    dir: impl AsFd,
    name: &P,
    buf: &mut [u8],
) -> Result<Option<usize>, Errno> {
    let fd = match nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK | OFlag::O_CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(e) => return Err(e),
    };
    let st = nix::sys::stat::fstat(&fd)?;
    if st.st_mode & libc_mode::S_IFMT != libc_mode::S_IFREG {
        return Err(Errno::EINVAL);
    }
    // Refuse an oversized file without reading it (kernel files report size 0).
    if usize::try_from(st.st_size).map_or(true, |size| size > buf.len()) {
        return Err(Errno::EFBIG);
    }
    let mut len = 0;
    loop {
        if len == buf.len() {
            let mut probe = [0u8; 1];
            return match nix::unistd::read(&fd, &mut probe) {
                Ok(0) => Ok(Some(len)),
                Ok(_) => Err(Errno::EFBIG),
                Err(e) => Err(e),
            };
        }
        match nix::unistd::read(&fd, &mut buf[len..]) {
            Ok(0) => return Ok(Some(len)),
            Ok(n) => len += n,
            Err(Errno::EINTR) => {}
            Err(e) => return Err(e),
        }
    }
}

/// File-type bits of `st_mode`, as the kernel defines them.
pub mod libc_mode {
    pub(crate) const S_IFMT: u32 = 0o170000;
    pub(crate) const S_IFREG: u32 = 0o100000;
    pub(crate) const S_IFLNK: u32 = 0o120000;
    pub(crate) const S_IFDIR: u32 = 0o040000;
    pub(crate) const S_IFIFO: u32 = 0o010000;
    pub(crate) const S_IFSOCK: u32 = 0o140000;
    pub(crate) const S_IFCHR: u32 = 0o020000;
    pub(crate) const S_IFBLK: u32 = 0o060000;
}

/// What kind of file `st_mode` describes, in words for a log line.
pub fn kind(st_mode: u32) -> &'static str {
    match st_mode & libc_mode::S_IFMT {
        libc_mode::S_IFREG => "a regular file",
        libc_mode::S_IFDIR => "a directory",
        libc_mode::S_IFLNK => "a symbolic link",
        libc_mode::S_IFIFO => "a FIFO",
        libc_mode::S_IFSOCK => "a socket",
        libc_mode::S_IFCHR => "a character device",
        libc_mode::S_IFBLK => "a block device",
        _ => "a file of unknown type",
    }
}

/// Creates `path` and any missing parents, like `mkdir -p`, without allocating (so the
/// agent can recreate a deleted directory at run time). An existing entry of any type is
/// left alone: opening it tells what it is.
pub(crate) fn make_dirs(path: &Path) -> Result<(), Errno> {
    let mode = Mode::from_bits_truncate(0o755);
    match nix::unistd::mkdir(path, mode) {
        Ok(()) | Err(Errno::EEXIST) => Ok(()),
        Err(Errno::ENOENT) => {
            match path.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => make_dirs(parent)?,
                _ => return Err(Errno::ENOENT),
            }
            match nix::unistd::mkdir(path, mode) {
                Ok(()) | Err(Errno::EEXIST) => Ok(()),
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    }
}

/// Opens the directory `dir/name` without following a symlink (refused with `ELOOP`, which
/// Linux reports as `ENOTDIR` under `O_DIRECTORY`). Non-blocking, so a FIFO in its place
/// cannot stall the caller.
pub(crate) fn open_dir_at(
    dir: impl AsFd + Copy,
    name: &(impl NixPath + ?Sized),
) -> Result<OwnedFd, Errno> {
    nix::fcntl::openat(
        dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_DIRECTORY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| {
        let link = nix::sys::stat::fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| st.st_mode & libc_mode::S_IFMT == libc_mode::S_IFLNK);
        if link { Errno::ELOOP } else { e }
    })
}

/// The (device, inode) identity of a stat result.
// The stat field types differ between targets (32-bit on armv7 glibc).
#[allow(clippy::useless_conversion)]
fn identity_of(st: &nix::sys::stat::FileStat) -> (u64, u64) {
    (u64::from(st.st_dev), u64::from(st.st_ino))
}

/// The (device, inode) identity of an open file, to tell whether a path still names it.
pub fn identity(fd: impl AsFd) -> Result<(u64, u64), Errno> {
    nix::sys::stat::fstat(fd).map(|st| identity_of(&st))
}

/// True if `path` (not followed if a symlink) still names the file whose identity is
/// `id`. One fstatat(2), no allocation: the agent asks this on every pass.
pub(crate) fn still_at(dir: impl AsFd, path: &(impl NixPath + ?Sized), id: (u64, u64)) -> bool {
    nix::sys::stat::fstatat(dir, path, AtFlags::AT_SYMLINK_NOFOLLOW)
        .is_ok_and(|st| identity_of(&st) == id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::OwnedFd;

    fn temp_dir(tag: &str) -> (std::path::PathBuf, OwnedFd) {
        let path = std::env::temp_dir().join(format!("wk-atomic-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        let fd =
            nix::fcntl::open(&path, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
        (path, fd)
    }

    #[test]
    fn replace_then_read() {
        let (path, dir) = temp_dir("rw");
        replace(&dir, "state", b"one", true).unwrap();
        replace(&dir, "state", b"two!", false).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(read(&dir, "state", &mut buf), Ok(Some(4)));
        assert_eq!(&buf[..4], b"two!");
        assert_eq!(read(&dir, "missing", &mut buf), Ok(None));
        let mut small = [0u8; 3];
        assert_eq!(read(&dir, "state", &mut small), Err(Errno::EFBIG));
        assert!(!path.join(".state.tmp").exists());
        std::fs::remove_dir_all(path).unwrap();
    }

    #[test]
    fn symlinks_and_fifos_are_refused() {
        let (path, dir) = temp_dir("links");
        std::fs::write(path.join("secret"), b"x").unwrap();
        std::os::unix::fs::symlink(path.join("secret"), path.join("link")).unwrap();
        nix::unistd::mkfifo(&path.join("fifo"), Mode::from_bits_truncate(0o600)).unwrap();
        let mut buf = [0u8; 16];
        assert_eq!(read(&dir, "link", &mut buf), Err(Errno::ELOOP));
        assert_eq!(read(&dir, "fifo", &mut buf), Err(Errno::EINVAL));
        std::fs::remove_dir_all(path).unwrap();
    }

    /// A FIFO or a symlink at the temporary name would make an open for writing wait for a
    /// reader, or write elsewhere: it is replaced, and the write goes through.
    #[test]
    fn nothing_at_the_temporary_name_holds_a_write_up() {
        let (path, dir) = temp_dir("temp");
        nix::unistd::mkfifo(&path.join(".a.tmp"), Mode::from_bits_truncate(0o600)).unwrap();
        std::fs::write(path.join("elsewhere"), b"keep").unwrap();
        std::os::unix::fs::symlink(path.join("elsewhere"), path.join(".b.tmp")).unwrap();
        replace(&dir, "a", b"one", false).unwrap();
        replace(&dir, "b", b"two", true).unwrap();
        assert_eq!(std::fs::read(path.join("a")).unwrap(), b"one");
        assert_eq!(std::fs::read(path.join("b")).unwrap(), b"two");
        assert_eq!(std::fs::read(path.join("elsewhere")).unwrap(), b"keep");
        std::fs::remove_dir_all(path).unwrap();
    }
}
