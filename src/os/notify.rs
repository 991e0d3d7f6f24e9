//! Readiness for a service manager (systemd's `sd_notify` protocol, sender side): when
//! `NOTIFY_SOCKET` names a socket, the agent sends `READY=1` there once, after its first
//! feed, so that units ordered after it start on a watched board. Its `STATUS=` says whether
//! they do: a device that cannot be opened, or a first feed that failed, ends the start job
//! too (the boot goes on), with a status that says the board is not guarded.
//!
//! Invariants: the address is read and the socket made at startup; the message is sent
//! once, without blocking (`MSG_DONTWAIT`) and from a buffer on the stack, so a service
//! manager that is gone, slow or absent never delays a feed. A failure is logged once and
//! changes nothing else: readiness is for the service manager, not for the board.

use core::fmt::Write as _;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;

use nix::errno::Errno;
use nix::sys::socket::{MsgFlags, SockFlag, SockType, UnixAddr, sendto, socket};

/// The environment variable systemd sets for a `Type=notify` service.
pub const NOTIFY_SOCKET: &str = "NOTIFY_SOCKET";

/// The status sent with the readiness when the first feed failed.
pub const FEED_FAILED_STATUS: &str = "NOT GUARDED: the watchdog device is open but the first feed failed (see the log); it resets the board if it still counts";

/// Longest message sent: `READY=1`, `MAINPID=` and a `STATUS=` line.
const MESSAGE_LEN: usize = 256;

/// Why `NOTIFY_SOCKET` cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotifyError {
    /// Neither an absolute path nor `@` and an abstract name (systemd's two forms for
    /// AF_UNIX; its `vsock:` form is for virtual machines' managers, not an appliance's).
    Unsupported,
    /// Longer than a `sockaddr_un` holds.
    TooLong,
    Socket(Errno),
}

impl core::fmt::Display for NotifyError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            NotifyError::Unsupported => f.write_str(
                "is neither an absolute path nor '@' and an abstract socket name; readiness is not sent",
            ),
            NotifyError::TooLong => f.write_str("is longer than a unix socket address holds"),
            NotifyError::Socket(e) => write!(f, "no socket to send on: {}", e.desc()),
        }
    }
}

/// The service manager's notify socket, while readiness is still to be sent.
pub struct Notifier {
    socket: OwnedFd,
    address: UnixAddr,
    /// The unit's status line sent with the readiness: whether the board is guarded.
    status: &'static str,
    sent: bool,
}

impl Notifier {
    /// The notifier for `NOTIFY_SOCKET`'s value: `None` when it is unset (no service
    /// manager listens), an error when it cannot be used.
    pub fn from_env(status: &'static str) -> Option<Result<Notifier, NotifyError>> {
        let value = std::env::var_os(NOTIFY_SOCKET)?;
        Some(Notifier::new(&value, status))
    }

    /// The notifier for a `NOTIFY_SOCKET` value, to send `status` with the readiness.
    pub fn new(value: &OsStr, status: &'static str) -> Result<Notifier, NotifyError> {
        let bytes = value.as_bytes();
        let address = match bytes.first() {
            Some(b'/') => UnixAddr::new(bytes),
            Some(b'@') => UnixAddr::new_abstract(&bytes[1..]),
            _ => return Err(NotifyError::Unsupported),
        }
        .map_err(|_| NotifyError::TooLong)?;
        let socket = socket(
            nix::sys::socket::AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )
        .map_err(NotifyError::Socket)?;
        Ok(Notifier {
            socket,
            address,
            status,
            sent: false,
        })
    }

    /// Sends `READY=1` with the status line decided at startup, the first time only.
    pub fn ready(&mut self) {
        self.ready_with(self.status);
    }

    /// Sends `READY=1` with `status` instead, the first time only: for a first feed that
    /// failed, which must end the start job too (the boot would otherwise wait for a board
    /// that the hardware resets anyway) but must not say the board is guarded.
    pub fn ready_with(&mut self, status: &str) {
        if core::mem::replace(&mut self.sent, true) {
            return;
        }
        let mut message = heapless::String::<MESSAGE_LEN>::new();
        // Cut, not refused, when the status is long: readiness matters, its words less.
        let _ = write!(message, "READY=1\nMAINPID={}\nSTATUS=", std::process::id());
        for c in status.chars() {
            if message.push(c).is_err() {
                break;
            }
        }
        let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
        match sendto(
            std::os::fd::AsRawFd::as_raw_fd(&self.socket),
            message.as_bytes(),
            &self.address,
            flags,
        ) {
            Ok(_) => log::info!("readiness sent to the service manager ({NOTIFY_SOCKET})"),
            Err(e) => log::warn!(
                "cannot send readiness to the service manager ({NOTIFY_SOCKET}): {}; units ordered after watchkeeper may wait for it",
                e.desc()
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::net::UnixDatagram;

    use super::*;

    #[test]
    fn readiness_is_sent_once_with_the_status_to_a_path_and_to_an_abstract_name() {
        let path = std::env::temp_dir().join(format!("wk-notify-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let mut notifier = Notifier::new(path.as_os_str(), "guarding").unwrap();
        notifier.ready();
        notifier.ready();
        let mut buf = [0u8; 512];
        let n = listener.recv(&mut buf).unwrap();
        let text = core::str::from_utf8(&buf[..n]).unwrap();
        assert_eq!(
            text,
            format!("READY=1\nMAINPID={}\nSTATUS=guarding", std::process::id())
        );
        assert!(listener.recv(&mut buf).is_err(), "sent twice");
        std::fs::remove_file(&path).unwrap();

        let name = format!("wk-notify-abstract-{}", std::process::id());
        let abstract_listener = {
            use std::os::linux::net::SocketAddrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
            UnixDatagram::bind_addr(&addr).unwrap()
        };
        let mut notifier = Notifier::new(OsStr::new(&format!("@{name}")), "").unwrap();
        notifier.ready();
        let n = abstract_listener.recv(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"READY=1\n"));
    }

    #[test]
    fn unusable_addresses_are_refused_and_a_missing_listener_costs_nothing() {
        assert_eq!(
            Notifier::new(OsStr::new("vsock:2:1234"), "").err(),
            Some(NotifyError::Unsupported)
        );
        assert_eq!(
            Notifier::new(OsStr::new(""), "").err(),
            Some(NotifyError::Unsupported)
        );
        let long = format!("/{}", "x".repeat(200));
        assert_eq!(
            Notifier::new(OsStr::new(&long), "").err(),
            Some(NotifyError::TooLong)
        );
        // Nobody bound there: the send fails (logged), without blocking or panicking.
        let mut notifier = Notifier::new(OsStr::new("/nonexistent/notify"), "x").unwrap();
        notifier.ready();
        assert!(notifier.sent);
    }
}
