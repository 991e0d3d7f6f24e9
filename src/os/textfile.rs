//! The metrics file that node_exporter's textfile collector reads (`[export] textfile`).
//!
//! The text is built in a buffer allocated once, at startup, to the size the metrics can
//! take ([`crate::metrics::capacity`]), and written with [`atomic::replace`]: a temporary
//! `.NAME.tmp` beside it (the collector reads only `*.prom`), then a rename, so a scrape
//! sees the old file or the new one, never a part. Not fsynced: the file is rebuilt at
//! every start, and a rewrite on every state change should not cost the flash a sync.
//!
//! The directory never stops the agent: one that is missing is created, one that cannot
//! be used is reported once, and every upkeep tries again; a directory replaced or removed
//! at run time is noticed and the file written into the new one. Allocation-free after
//! [`Textfile::new`].

use core::fmt;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;

use crate::limits::MAX_NAME_LEN;
use crate::os::atomic;

/// The metrics file: its directory (held open while usable), its name, its buffer.
pub struct Textfile {
    path: PathBuf,
    dir_path: PathBuf,
    name: heapless::String<MAX_NAME_LEN>,
    /// The directory and its (device, inode) when opened.
    dir: Option<(OwnedFd, (u64, u64))>,
    /// Why the last write failed, reported once until one works again.
    failing: Option<Errno>,
    text: Text,
}

/// A buffer that never grows: writing past its capacity fails (`fmt::Error`) instead.
pub struct Text(Vec<u8>);

impl fmt::Write for Text {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        if self.0.capacity() - self.0.len() < s.len() {
            return Err(fmt::Error);
        }
        self.0.extend_from_slice(s.as_bytes());
        Ok(())
    }
}

impl Textfile {
    /// For the file at `path` (validated by the config: absolute, a `*.prom` name that fits
    /// [`MAX_NAME_LEN`]), with room for `capacity` bytes of metrics.
    pub fn new(path: &Path, capacity: usize) -> Textfile {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| heapless::String::try_from(n).ok())
            .unwrap_or_default();
        let mut textfile = Textfile {
            path: path.to_owned(),
            dir_path: path.parent().unwrap_or(Path::new("/")).to_owned(),
            name,
            dir: None,
            failing: None,
            text: Text(Vec::with_capacity(capacity)),
        };
        if let Err(e) = textfile.open() {
            textfile.report(e);
        }
        textfile
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The buffer, emptied, to render the metrics into.
    pub fn buffer(&mut self) -> &mut Text {
        self.text.0.clear();
        &mut self.text
    }

    /// Replaces the file with what the buffer holds. A failure is logged once (and again
    /// after a success); the next upkeep reopens the directory.
    pub fn write(&mut self) {
        let written = match &self.dir {
            Some((dir, _)) => atomic::replace(dir, &self.name, &self.text.0, false),
            None => Err(self.failing.unwrap_or(Errno::ENOENT)),
        };
        match written {
            Ok(()) => {
                if self.failing.take().is_some() {
                    log::warn!("{}: the metrics are written again", self.path.display());
                }
            }
            Err(e) => {
                self.dir = None;
                self.report(e);
            }
        }
    }

    /// At an upkeep: true when the directory was (re)opened, so the file is due again.
    /// When all is well, one fstatat(2).
    pub fn check(&mut self) -> bool {
        if let Some((_, id)) = &self.dir
            && atomic::still_at(AT_FDCWD, self.dir_path.as_path(), *id)
        {
            return false;
        }
        match self.open() {
            Ok(()) => true,
            Err(e) => {
                self.report(e);
                false
            }
        }
    }

    fn open(&mut self) -> Result<(), Errno> {
        self.dir = None;
        atomic::make_dirs(&self.dir_path)?;
        let fd = atomic::open_dir_at(AT_FDCWD, self.dir_path.as_path())?;
        let id = atomic::identity(&fd)?;
        self.dir = Some((fd, id));
        Ok(())
    }

    fn report(&mut self, e: Errno) {
        if self.failing.replace(e) != Some(e) {
            let why = match e {
                Errno::ELOOP => "its directory is a symbolic link, which is never followed",
                Errno::ENOTDIR => "its directory, or one above it, is not a directory",
                e => e.desc(),
            };
            log::error!(
                "{}: the metrics cannot be written ({why}); tried again every upkeep; supervision and feeding go on",
                self.path.display()
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;

    fn dir(tag: &str) -> PathBuf {
        let path = std::env::temp_dir().join(format!("wk-textfile-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        path
    }

    #[test]
    fn the_buffer_refuses_to_grow() {
        let base = dir("grow");
        let mut t = Textfile::new(&base.join("m.prom"), 8);
        assert!(t.buffer().write_str("12345678").is_ok());
        assert!(t.buffer().write_str("123456789").is_err());
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_missing_directory_is_created_and_a_replaced_one_followed() {
        let base = dir("replaced");
        let path = base.join("node-exporter").join("watchkeeper.prom");
        let mut t = Textfile::new(&path, 64);
        let _ = t.buffer().write_str("a 1\n");
        t.write();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 1\n");
        std::fs::remove_dir_all(base.join("node-exporter")).unwrap();
        std::fs::create_dir(base.join("node-exporter")).unwrap();
        assert!(t.check(), "the new directory is opened");
        assert!(!t.check());
        let _ = t.buffer().write_str("a 2\n");
        t.write();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "a 2\n");
        std::fs::remove_dir_all(base).unwrap();
    }

    #[test]
    fn a_directory_that_cannot_be_used_is_no_stop() {
        let base = dir("blocked");
        std::fs::create_dir_all(&base).unwrap();
        std::fs::write(base.join("file"), b"").unwrap();
        let mut t = Textfile::new(&base.join("file").join("m.prom"), 64);
        let _ = t.buffer().write_str("a 1\n");
        t.write();
        assert!(!t.check());
        std::fs::remove_file(base.join("file")).unwrap();
        assert!(t.check(), "usable again");
        t.write();
        assert!(base.join("file/m.prom").is_file());
        std::fs::remove_dir_all(base).unwrap();
    }
}
