//! The notify socket: where daemons that speak sd_notify send `READY=1`, `WATCHDOG=1` and
//! the rest (the receiver side; [`crate::os::notify`] is the agent's own sender).
//!
//! An AF_UNIX datagram socket bound at `[notify] socket`, with `SO_PASSCRED`, so that each
//! datagram comes with its sender's pid as the kernel saw it (`SCM_CREDENTIALS`,
//! unix(7)): who sent a message is never taken from the message.
//!
//! Invariants:
//! - Nothing allocates after [`NotifySocket::new`]: binding again reuses its path and
//!   buffer, and reads never block (`MSG_DONTWAIT`): one datagram into that buffer, its
//!   credentials into a control buffer on the stack.
//!   A datagram longer than the buffer is reported as truncated (`MSG_TRUNC`), not read
//!   in parts.
//! - File descriptors passed along with a datagram (`SCM_RIGHTS`) are closed at once.
//! - Only a socket is ever unlinked to bind: a stale one left by a previous agent (it
//!   crashed, or was killed), never a file of another kind.
//! - The socket file is writable by every user (as systemd's own notify socket is), so
//!   daemons that run unprivileged can report; a message counts only for the component
//!   whose main process sent it, which the caller checks against the credentials.

use core::fmt;
use core::mem::MaybeUninit;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use rustix::io::Errno;
use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags,
    SocketAddrUnix, SocketFlags, SocketType, bind, recvmsg, socket_with,
    sockopt::set_socket_passcred,
};

/// Longest datagram read, as systemd's own receiver takes (`NOTIFY_BUFFER_MAX`, the pipe
/// buffer of 4096 bytes): anything longer is refused whole.
pub const DATAGRAM_MAX: usize = 4096;
/// File descriptors a sender may pass along that are received (to be closed) rather than
/// left to the kernel to drop.
const FDS_DRAINED: usize = 8;

/// Why the socket cannot be bound (said after its path).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BindError {
    /// Something that is not a socket is where the socket goes: it is left alone.
    NotASocket,
    /// A system call refused.
    Failed { call: &'static str, errno: Errno },
}

impl fmt::Display for BindError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BindError::NotASocket => f.write_str(
                "something that is not a socket is there; move it away (it is never removed)",
            ),
            BindError::Failed { call, errno } => write!(f, "{call}: {errno}"),
        }
    }
}

/// One datagram as received: the sender the kernel vouches for, and what it sent.
#[derive(Debug)]
pub struct Datagram<'a> {
    /// The sender's pid, as the kernel saw it (`None`: no credentials came, which a socket
    /// with `SO_PASSCRED` never sees).
    pub pid: Option<i32>,
    /// The bytes; empty when `truncated`.
    pub bytes: &'a [u8],
    /// Longer than [`DATAGRAM_MAX`]: dropped whole.
    pub truncated: bool,
}

/// The socket, bound or not.
pub struct NotifySocket {
    /// `None` until bound.
    fd: Option<OwnedFd>,
    path: PathBuf,
    /// The socket file's device and inode, to tell whether the path still leads here.
    identity: (u64, u64),
    buffer: Box<[u8]>,
    /// Bytes of the last datagram received, still in `buffer`.
    last_len: usize,
}

impl NotifySocket {
    /// The socket for `path`, not bound yet (all its memory is taken here).
    pub fn new(path: &Path) -> NotifySocket {
        NotifySocket {
            fd: None,
            path: path.to_owned(),
            identity: (0, 0),
            buffer: vec![0u8; DATAGRAM_MAX].into_boxed_slice(),
            last_len: 0,
        }
    }

    /// Binds a new socket at the path, replacing a stale socket there; on failure the
    /// socket is left unbound.
    pub fn bind(&mut self) -> Result<(), BindError> {
        self.fd = None;
        let failed = |call, errno| BindError::Failed { call, errno };
        let path = self.path.as_path();
        match std::fs::symlink_metadata(path) {
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|e| failed("unlink", io_errno(&e)))?;
            }
            Ok(_) => return Err(BindError::NotASocket),
            Err(_) => {}
        }
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::DGRAM,
            SocketFlags::CLOEXEC | SocketFlags::NONBLOCK,
            None,
        )
        .map_err(|e| failed("socket", e))?;
        set_socket_passcred(&fd, true).map_err(|e| failed("setsockopt SO_PASSCRED", e))?;
        let address = SocketAddrUnix::new(path).map_err(|e| failed("the address", e))?;
        bind(&fd, &address).map_err(|e| failed("bind", e))?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| failed("chmod", io_errno(&e)))?;
        let meta = std::fs::symlink_metadata(path).map_err(|e| failed("stat", io_errno(&e)))?;
        self.identity = (meta.dev(), meta.ino());
        self.fd = Some(fd);
        Ok(())
    }

    /// True once bound.
    pub fn bound(&self) -> bool {
        self.fd.is_some()
    }

    /// The descriptor to poll, once bound.
    pub fn fd(&self) -> Option<BorrowedFd<'_>> {
        self.fd.as_ref().map(|fd| fd.as_fd())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True while bound and the path still names this socket (not removed, not replaced):
    /// daemons send to the path, so a socket no path leads to hears nothing.
    pub fn reachable(&self) -> bool {
        self.fd.is_some()
            && std::fs::symlink_metadata(&self.path)
                .is_ok_and(|meta| (meta.dev(), meta.ino()) == self.identity)
    }

    /// The bytes of the last datagram [`NotifySocket::receive`] gave (empty if it was
    /// truncated), until the next receive.
    pub fn last(&self) -> &[u8] {
        &self.buffer[..self.last_len]
    }

    /// The next datagram, `None` when none is waiting (or the socket is not bound).
    pub fn receive(&mut self) -> Result<Option<Datagram<'_>>, Errno> {
        let Some(fd) = &self.fd else {
            return Ok(None);
        };
        let mut space =
            [MaybeUninit::uninit(); rustix::cmsg_space!(ScmCredentials(1), ScmRights(FDS_DRAINED))];
        let mut control = RecvAncillaryBuffer::new(&mut space);
        let mut iov = [IoSliceMut::new(&mut self.buffer)];
        let received = loop {
            match recvmsg(
                fd,
                &mut iov,
                &mut control,
                RecvFlags::DONTWAIT | RecvFlags::TRUNC | RecvFlags::CMSG_CLOEXEC,
            ) {
                Ok(received) => break received,
                Err(Errno::INTR) => {}
                Err(Errno::AGAIN) => return Ok(None),
                Err(errno) => return Err(errno),
            }
        };
        let mut pid = None;
        for message in control.drain() {
            match message {
                RecvAncillaryMessage::ScmCredentials(credentials) => {
                    pid = Some(credentials.pid.as_raw_nonzero().get());
                }
                // Dropping each descriptor closes it.
                RecvAncillaryMessage::ScmRights(fds) => fds.for_each(drop),
                _ => {}
            }
        }
        let truncated =
            received.bytes > self.buffer.len() || received.flags.contains(ReturnFlags::TRUNC);
        let length = if truncated { 0 } else { received.bytes };
        self.last_len = length;
        Ok(Some(Datagram {
            pid,
            bytes: &self.buffer[..length],
            truncated,
        }))
    }
}

fn io_errno(e: &std::io::Error) -> Errno {
    Errno::from_io_error(e).unwrap_or(Errno::IO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixDatagram;

    fn socket_path(tag: &str) -> PathBuf {
        std::env::temp_dir().join(format!("wk-notify-socket-{tag}-{}", std::process::id()))
    }

    #[test]
    fn datagrams_come_with_the_senders_credentials_and_oversized_ones_are_dropped_whole() {
        let path = socket_path("creds");
        let mut socket = NotifySocket::new(&path);
        socket.bind().unwrap();
        assert!(socket.receive().unwrap().is_none(), "nothing sent yet");
        let client = UnixDatagram::unbound().unwrap();
        client.send_to(b"READY=1\nWATCHDOG=1", &path).unwrap();
        let got = socket.receive().unwrap().unwrap();
        assert_eq!(got.pid, Some(std::process::id() as i32));
        assert_eq!(got.bytes, b"READY=1\nWATCHDOG=1");
        assert!(!got.truncated);

        client
            .send_to(&vec![b'x'; DATAGRAM_MAX + 1], &path)
            .unwrap();
        let got = socket.receive().unwrap().unwrap();
        assert!(got.truncated && got.bytes.is_empty());
        client.send_to(&vec![b'y'; DATAGRAM_MAX], &path).unwrap();
        let got = socket.receive().unwrap().unwrap();
        assert!(!got.truncated && got.bytes.len() == DATAGRAM_MAX);
        assert!(socket.receive().unwrap().is_none());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_stale_socket_is_replaced_a_file_is_not_and_a_removed_path_is_noticed() {
        let path = socket_path("stale");
        let _ = std::fs::remove_file(&path);
        let mut first = NotifySocket::new(&path);
        assert!(!first.reachable(), "not bound yet");
        first.bind().unwrap();
        // A crashed agent leaves its socket: the next one binds all the same.
        let mut second = NotifySocket::new(&path);
        second.bind().unwrap();
        assert!(second.reachable());
        assert!(
            !first.reachable(),
            "the path now leads to the second socket"
        );
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o666);
        std::fs::remove_file(&path).unwrap();
        assert!(!second.reachable());

        std::fs::write(&path, "not a socket").unwrap();
        assert_eq!(second.bind(), Err(BindError::NotASocket));
        assert!(!second.bound());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a socket");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn descriptors_passed_along_are_closed() {
        use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags, sendmsg_addr};
        let path = socket_path("fds");
        let mut socket = NotifySocket::new(&path);
        socket.bind().unwrap();
        let client = UnixDatagram::unbound().unwrap();
        // The write end of a pipe goes along: once every copy of it is closed, the read end
        // says end-of-file; a copy left open in the receiver would make it say "again".
        let (read_end, write_end) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC)
                .unwrap();
        let fds = [write_end.as_fd()];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        assert!(control.push(SendAncillaryMessage::ScmRights(&fds)));
        let address = SocketAddrUnix::new(&path).unwrap();
        sendmsg_addr(
            &client,
            &address,
            &[std::io::IoSlice::new(b"FDSTORE=1")],
            &mut control,
            SendFlags::empty(),
        )
        .unwrap();
        drop(write_end);
        let got = socket.receive().unwrap().unwrap();
        assert_eq!(got.bytes, b"FDSTORE=1");
        let mut byte = [0u8; 1];
        assert_eq!(
            nix::unistd::read(&read_end, &mut byte),
            Ok(0),
            "a passed descriptor stayed open"
        );
        std::fs::remove_file(&path).unwrap();
    }
}
