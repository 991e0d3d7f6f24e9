//! The hardware watchdog device (`/dev/watchdogN`), driven through the kernel's ioctl API
//! (`<linux/watchdog.h>`, Documentation/watchdog/watchdog-api.rst).
//!
//! Invariants:
//! - Opening the device arms it, and nothing here ever disarms it except [`disarm`]: the
//!   magic close character 'V' is written nowhere else, so when the agent dies (crash, kill,
//!   OOM) the file is closed without it and the board resets when the timeout runs out.
//! - [`Device::timeout`] is the timeout the driver reports, not the one asked for: drivers
//!   round to what the hardware can do, and the agent must feed against the real one.
//! - [`Watchdog::keepalive`] neither allocates nor blocks: it is one ioctl, or one write(2)
//!   for drivers without the keepalive ioctl.
//! - The raw ioctls in `sys` are the only `unsafe` code of this module.
//!
//! [`fallback_reboot`] lives here too: it is what stands in for the device when the board
//! does not reset.

use core::ffi::c_int;
use core::fmt;
use core::time::Duration;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use nix::errno::Errno;
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;
use nix::unistd::write;

/// The last reset was caused by a CPU overheat.
pub(crate) const WDIOF_OVERHEAT: u32 = 0x0001;
/// A fan monitored by the watchdog failed.
pub(crate) const WDIOF_FANFAULT: u32 = 0x0002;
/// External monitoring relay 1 triggered.
pub(crate) const WDIOF_EXTERN1: u32 = 0x0004;
/// External monitoring relay 2 triggered.
pub(crate) const WDIOF_EXTERN2: u32 = 0x0008;
/// Undervoltage: power bad or power fault.
pub(crate) const WDIOF_POWERUNDER: u32 = 0x0010;
/// The last reset was caused by this watchdog.
pub(crate) const WDIOF_CARDRESET: u32 = 0x0020;
/// Overvoltage.
pub(crate) const WDIOF_POWEROVER: u32 = 0x0040;
/// The driver can set the timeout.
pub(crate) const WDIOF_SETTIMEOUT: u32 = 0x0080;
/// The driver disarms only after the magic character 'V' is written before close.
pub(crate) const WDIOF_MAGICCLOSE: u32 = 0x0100;
/// The watchdog raises an alarm instead of resetting the board.
pub(crate) const WDIOF_ALARMONLY: u32 = 0x0400;

/// `WDIOC_SETOPTIONS` argument: start the watchdog timer.
const WDIOS_ENABLECARD: c_int = 0x0002;

/// The smallest timeout worth asking for when a reset is wanted now.
const SHORTEST_TIMEOUT_SECS: c_int = 1;

/// What the agent needs from a watchdog, real or simulated.
pub trait Watchdog {
    /// Restarts the watchdog's countdown. Never allocates.
    fn keepalive(&mut self) -> Result<(), WatchdogError>;
    /// Sets the shortest timeout the driver accepts, so that a reset the agent has decided on
    /// happens soon, and returns the timeout now in force. Never disarms.
    fn shorten_for_reset(&mut self) -> Duration;
    /// The timeout in force.
    fn timeout(&self) -> Duration;
    /// The device's path and its driver's identity, for the fleet's metrics; `None` when no
    /// device is open.
    fn device(&self) -> Option<(&Path, &str)> {
        None
    }
}

/// Why the watchdog device could not be used. Each names the device and what to do.
#[derive(Debug)]
pub enum WatchdogError {
    /// The device node does not exist.
    NotFound { path: Arc<Path> },
    /// Another process holds the device open (it admits one opener at a time); `holder`
    /// is the first found in `/proc`, when one is.
    Busy {
        path: Arc<Path>,
        holder: Option<Holder>,
    },
    /// Opening failed for another reason (permissions, not a device, ...).
    Open { path: Arc<Path>, errno: Errno },
    /// The driver rejected a standard ioctl while being set up.
    Ioctl {
        path: Arc<Path>,
        request: &'static str,
        errno: Errno,
    },
    /// A keepalive failed: the countdown keeps running.
    Keepalive { path: Arc<Path>, errno: Errno },
    /// Writing the magic close character failed: the watchdog stays armed.
    MagicClose { path: Arc<Path>, errno: Errno },
}

impl fmt::Display for WatchdogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchdogError::NotFound { path } => write!(
                f,
                "{}: no such watchdog device: load the watchdog driver (e.g. `modprobe softdog`), \
                 or set device = \"none\" on a development host",
                path.display()
            ),
            WatchdogError::Busy {
                path,
                holder: Some(holder),
            } if holder.pid == 1 && holder.program == "systemd" => write!(
                f,
                "{}: held open by systemd (pid 1), its own watchdog: set RuntimeWatchdogSec=off \
                 (and RebootWatchdogSec=off, KExecWatchdogSec=off) in /etc/systemd/system.conf \
                 or a drop-in in /etc/systemd/system.conf.d/, and reboot; or point watchkeeper \
                 at another watchdog device",
                path.display()
            ),
            WatchdogError::Busy {
                path,
                holder: Some(holder),
            } => write!(
                f,
                "{}: held open by {} (pid {}): stop that one (and keep it from starting), or \
                 point watchkeeper at another watchdog device",
                path.display(),
                holder.program,
                holder.pid
            ),
            WatchdogError::Busy { path, holder: None } => write!(
                f,
                "{}: held open by another process, not found in /proc (systemd \
                 RuntimeWatchdogSec=, OpenWrt procd, another watchdog daemon or a running \
                 watchkeeper): disable that one, or point watchkeeper at another watchdog device",
                path.display()
            ),
            WatchdogError::Open { path, errno } => write!(
                f,
                "{}: cannot open the watchdog device: {errno}: check the path and that \
                 watchkeeper runs as root",
                path.display()
            ),
            WatchdogError::Ioctl {
                path,
                request,
                errno,
            } => write!(
                f,
                "{}: the driver rejected {request}: {errno}: check the driver (dmesg), or point \
                 watchkeeper at another watchdog device",
                path.display()
            ),
            WatchdogError::Keepalive { path, errno } => write!(
                f,
                "{}: keepalive failed: {errno}: the board resets when the timeout runs out \
                 unless a later keepalive succeeds",
                path.display()
            ),
            WatchdogError::MagicClose { path, errno } => write!(
                f,
                "{}: writing the magic close character failed: {errno}: the watchdog is still \
                 armed and will reset the board",
                path.display()
            ),
        }
    }
}

impl std::error::Error for WatchdogError {}

/// An open, armed watchdog device.
#[derive(Debug)]
pub struct Device {
    fd: OwnedFd,
    path: Arc<Path>,
    timeout: Duration,
    /// `None` when the driver does not answer WDIOC_GETSUPPORT.
    info: Option<sys::WatchdogInfo>,
    /// Set once the driver has refused the keepalive ioctl: a write pings it instead.
    ping_by_write: bool,
}

impl Device {
    /// Opens and arms the device, then asks for `timeout` (in whole seconds, rounded up) and
    /// adopts whatever the driver reports back.
    ///
    /// A file that does not speak the watchdog ioctls (ENOTTY: `/dev/null` in tests, very old
    /// drivers) is accepted with no info and the configured timeout, with a warning: it is
    /// still pinged by writes, which is all the simplest watchdog API promises.
    pub fn open(path: &Path, timeout: Duration) -> Result<Device, WatchdogError> {
        let path: Arc<Path> = Arc::from(path);
        let fd = open_device(&path)?;
        let ioctl_error = |request, errno| WatchdogError::Ioctl {
            path: path.clone(),
            request,
            errno,
        };

        let info = match sys::get_support(fd.as_fd()) {
            Ok(info) => Some(info),
            Err(Errno::ENOTTY) => None,
            Err(errno) => return Err(ioctl_error("WDIOC_GETSUPPORT", errno)),
        };
        // Opening already starts drivers built on the watchdog core; older ones need this.
        match sys::set_options(fd.as_fd(), WDIOS_ENABLECARD) {
            Ok(()) | Err(Errno::EINVAL | Errno::ENOTTY | Errno::EOPNOTSUPP) => {}
            Err(errno) => return Err(ioctl_error("WDIOC_SETOPTIONS", errno)),
        }

        let wanted = whole_secs(timeout);
        let configured = Duration::from_secs(u64::from(wanted.unsigned_abs()));
        let mut set_back = None;
        if can_set_timeout(info.as_ref()) {
            match sys::set_timeout(fd.as_fd(), wanted) {
                Ok(secs) => set_back = positive_secs(secs),
                // Out of the driver's range, or not settable: the current timeout stays.
                Err(Errno::EINVAL | Errno::ENOTTY | Errno::EOPNOTSUPP) => {}
                Err(errno) => return Err(ioctl_error("WDIOC_SETTIMEOUT", errno)),
            }
        }
        let reported = sys::get_timeout(fd.as_fd()).ok().and_then(positive_secs);
        let timeout = match reported.or(set_back) {
            Some(adopted) => {
                if adopted != configured {
                    log::warn!(
                        "{}: the driver uses a {} s timeout instead of the configured {wanted} s",
                        path.display(),
                        adopted.as_secs()
                    );
                }
                adopted
            }
            None => {
                log::warn!(
                    "{}: the driver does not report its timeout; assuming the configured {wanted} s",
                    path.display()
                );
                configured
            }
        };

        if info.is_some_and(|info| info.options & WDIOF_ALARMONLY != 0) {
            log::warn!(
                "{}: this watchdog raises an alarm instead of resetting the board",
                path.display()
            );
        }
        Ok(Device {
            fd,
            path,
            timeout,
            info,
            ping_by_write: false,
        })
    }

    /// The driver's identity string; empty when it gives no info.
    pub fn identity(&self) -> &str {
        self.info
            .as_ref()
            .map_or("", |info| c_string(&info.identity))
    }

    /// The driver's `WDIOF_*` capability bits; 0 when it gives no info.
    pub fn options(&self) -> u32 {
        self.info.map_or(0, |info| info.options)
    }

    /// The `WDIOF_*` status bits of the last reset (see [`BootStatus`]), if the driver tells.
    pub(crate) fn boot_status(&self) -> Option<u32> {
        sys::get_boot_status(self.fd.as_fd())
            .ok()
            .map(c_int::cast_unsigned)
    }

    /// Time until the watchdog resets the board, if the driver tells.
    pub(crate) fn time_left(&self) -> Option<Duration> {
        let secs = sys::get_time_left(self.fd.as_fd()).ok()?;
        u64::try_from(secs).ok().map(Duration::from_secs)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn keepalive_error(&self, errno: Errno) -> WatchdogError {
        WatchdogError::Keepalive {
            path: self.path.clone(),
            errno,
        }
    }
}

impl Watchdog for Device {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        if !self.ping_by_write {
            match sys::keepalive(self.fd.as_fd()) {
                Ok(()) => return Ok(()),
                // The watchdog core answers EOPNOTSUPP without WDIOF_KEEPALIVEPING; drivers
                // outside it answer ENOTTY or EINVAL. Every driver is pinged by a write.
                Err(Errno::ENOTTY | Errno::EINVAL | Errno::EOPNOTSUPP) => {
                    log::debug!(
                        "{}: no keepalive ioctl, pinging by write",
                        self.path.display()
                    );
                    self.ping_by_write = true;
                }
                Err(errno) => return Err(self.keepalive_error(errno)),
            }
        }
        // Any byte but 'V', which would arm the magic close.
        match write(&self.fd, b"\0") {
            Ok(_) => Ok(()),
            Err(errno) => Err(self.keepalive_error(errno)),
        }
    }

    fn shorten_for_reset(&mut self) -> Duration {
        if can_set_timeout(self.info.as_ref()) {
            // EINVAL means the driver's minimum is above 1 s: the current timeout stays.
            if let Err(errno) = sys::set_timeout(self.fd.as_fd(), SHORTEST_TIMEOUT_SECS) {
                log::debug!(
                    "{}: cannot shorten the timeout: {errno}",
                    self.path.display()
                );
            }
        }
        if let Some(now) = sys::get_timeout(self.fd.as_fd())
            .ok()
            .and_then(positive_secs)
        {
            self.timeout = now;
        }
        self.timeout
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }

    fn device(&self) -> Option<(&Path, &str)> {
        Some((&self.path, self.identity()))
    }
}

/// What [`disarm`] could tell about the driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Disarmed {
    /// The driver advertises `WDIOF_MAGICCLOSE`. Without it the write may not have disarmed
    /// the watchdog; with it, a driver in `nowayout` mode still never stops.
    pub magic_close: bool,
}

/// Opens the device, writes the magic close character and closes it: the only way the
/// agent ever stops a watchdog. The device must not be held open by anyone else.
pub fn disarm(path: &Path) -> Result<Disarmed, WatchdogError> {
    let path: Arc<Path> = Arc::from(path);
    let fd = open_device(&path)?;
    let magic_close =
        sys::get_support(fd.as_fd()).is_ok_and(|info| info.options & WDIOF_MAGICCLOSE != 0);
    write(&fd, b"V").map_err(|errno| WatchdogError::MagicClose {
        path: path.clone(),
        errno,
    })?;
    // The close right after the 'V' is what disarms.
    drop(fd);
    Ok(Disarmed { magic_close })
}

/// The last resort when the board did not reset although feeding stopped (a driver that
/// ignores its timeout, or no device open): flushes the file systems with `sync(2)` and
/// asks the kernel to restart with `reboot(2)` (`RB_AUTOBOOT`). Returns only if the kernel
/// refused (without `CAP_SYS_BOOT`).
pub(crate) fn fallback_reboot() {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
}

/// A stand-in for development hosts without a watchdog (`device = "none"`).
#[derive(Debug)]
pub struct NoDevice {
    timeout: Duration,
}

impl NoDevice {
    pub fn new(timeout: Duration) -> Self {
        NoDevice { timeout }
    }
}

impl Watchdog for NoDevice {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        log::trace!("keepalive (no watchdog device)");
        Ok(())
    }

    fn shorten_for_reset(&mut self) -> Duration {
        log::warn!(
            "no watchdog device: a real one would now be set to its shortest timeout and reset \
             the board"
        );
        self.timeout
    }

    fn timeout(&self) -> Duration {
        self.timeout
    }
}

/// Names the reset causes in a `WDIOF_*` boot status, e.g. "reset by this watchdog".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BootStatus(pub u32);

impl fmt::Display for BootStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const CAUSES: [(u32, &str); 7] = [
            (WDIOF_CARDRESET, "reset by this watchdog"),
            (WDIOF_OVERHEAT, "CPU overheat"),
            (WDIOF_FANFAULT, "fan failure"),
            (WDIOF_EXTERN1, "external relay 1"),
            (WDIOF_EXTERN2, "external relay 2"),
            (WDIOF_POWERUNDER, "undervoltage"),
            (WDIOF_POWEROVER, "overvoltage"),
        ];
        let mut sep = "";
        for (bit, name) in CAUSES {
            if self.0 & bit != 0 {
                write!(f, "{sep}{name}")?;
                sep = ", ";
            }
        }
        let other = CAUSES.iter().fold(self.0, |rest, (bit, _)| rest & !bit);
        if other != 0 {
            write!(f, "{sep}other status bits {other:#06x}")
        } else if sep.is_empty() {
            f.write_str("no reset cause reported")
        } else {
            Ok(())
        }
    }
}

/// Whether the watchdog was already counting when the agent took it over: left armed by an
/// agent before this one, or started by the bootloader or the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Takeover {
    Running,
    Stopped,
    /// The kernel does not tell (no `CONFIG_WATCHDOG_SYSFS`, a driver outside the core).
    Unknown,
    /// No device was opened.
    NoDevice,
}

impl Takeover {
    /// The word for it in the status snapshot and `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Takeover::Running => "running",
            Takeover::Stopped => "stopped",
            Takeover::Unknown => "unknown",
            Takeover::NoDevice => "none",
        }
    }

    /// What the kernel's sysfs `state` of the device at `path` says, read before the open
    /// that would start it. The legacy `/dev/watchdog` (misc 10:130) is `watchdog0`.
    pub fn before_open(path: &Path) -> Takeover {
        const LEGACY: (u64, u64) = (10, 130);
        let Ok(st) = nix::sys::stat::stat(path) else {
            return Takeover::Unknown;
        };
        let (major, minor) = (
            nix::sys::stat::major(st.st_rdev),
            nix::sys::stat::minor(st.st_rdev),
        );
        let state = if (major, minor) == LEGACY {
            String::from("/sys/class/watchdog/watchdog0/state")
        } else {
            format!("/sys/dev/char/{major}:{minor}/state")
        };
        match std::fs::read_to_string(state).as_deref().map(str::trim_end) {
            Ok("active") => Takeover::Running,
            Ok("inactive") => Takeover::Stopped,
            _ => Takeover::Unknown,
        }
    }
}

fn open_device(path: &Arc<Path>) -> Result<OwnedFd, WatchdogError> {
    open(&**path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|errno| {
        let path = path.clone();
        match errno {
            Errno::ENOENT => WatchdogError::NotFound { path },
            Errno::EBUSY => WatchdogError::Busy {
                holder: holder_of(&path),
                path,
            },
            errno => WatchdogError::Open { path, errno },
        }
    })
}

/// A process that holds a file open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    /// Its `/proc/PID/comm`.
    pub program: String,
}

/// The first process found with `path` open (`/proc/PID/fd/*`, compared by device and
/// inode). The legacy `/dev/watchdog` and `/dev/watchdog0` are one watchdog under two
/// nodes: a holder of either is the holder of both. Only on the error path: it allocates.
fn holder_of(path: &Path) -> Option<Holder> {
    let id = |st: &nix::sys::stat::FileStat| (st.st_dev, st.st_ino);
    let mut wanted = vec![id(&nix::sys::stat::stat(path).ok()?)];
    for (a, b) in [
        ("/dev/watchdog", "/dev/watchdog0"),
        ("/dev/watchdog0", "/dev/watchdog"),
    ] {
        if path == Path::new(a)
            && let Ok(st) = nix::sys::stat::stat(b)
        {
            wanted.push(id(&st));
        }
    }
    let me = std::process::id().to_string();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let pid = entry.file_name();
        let Some(pid_number) = pid.to_str().and_then(|p| p.parse::<i32>().ok()) else {
            continue;
        };
        if pid.to_str() == Some(me.as_str()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        let holds = fds
            .flatten()
            .any(|fd| nix::sys::stat::stat(&fd.path()).is_ok_and(|st| wanted.contains(&id(&st))));
        if holds {
            let program = std::fs::read_to_string(entry.path().join("comm"))
                .map_or_else(|_| "?".to_owned(), |c| c.trim_end().to_owned());
            return Some(Holder {
                pid: pid_number,
                program,
            });
        }
    }
    None
}

/// Without info the driver may still take WDIOC_SETTIMEOUT; its refusal is harmless.
fn can_set_timeout(info: Option<&sys::WatchdogInfo>) -> bool {
    info.is_none_or(|info| info.options & WDIOF_SETTIMEOUT != 0)
}

/// The valid UTF-8 up to the first NUL of a fixed-size C string.
fn c_string(bytes: &[u8]) -> &str {
    let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
    match core::str::from_utf8(&bytes[..end]) {
        Ok(s) => s,
        Err(e) => core::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

/// Whole seconds for the driver, rounded up so the hardware never gets less than asked for.
fn whole_secs(d: Duration) -> c_int {
    let secs = d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0));
    c_int::try_from(secs.max(1)).unwrap_or(c_int::MAX)
}

fn positive_secs(secs: c_int) -> Option<Duration> {
    u64::try_from(secs)
        .ok()
        .filter(|&s| s > 0)
        .map(Duration::from_secs)
}

/// The raw ioctls. Request codes come from nix's `_IOR`/`_IOWR` equivalents; a test pins
/// them to the kernel's numbers, which are the same on arm, arm64 and x86_64.
mod sys {
    #![allow(unsafe_code)]

    use core::ffi::c_int;
    use std::os::fd::{AsRawFd, BorrowedFd};

    use nix::sys::ioctl::ioctl_num_type;

    /// `struct watchdog_info` from `<linux/watchdog.h>`.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default)]
    pub(crate) struct WatchdogInfo {
        pub options: u32,
        pub firmware_version: u32,
        pub identity: [u8; 32],
    }

    const BASE: u8 = b'W';
    pub(crate) const GETSUPPORT: ioctl_num_type =
        nix::request_code_read!(BASE, 0, size_of::<WatchdogInfo>());
    pub(crate) const GETBOOTSTATUS: ioctl_num_type =
        nix::request_code_read!(BASE, 2, size_of::<c_int>());
    pub(crate) const SETOPTIONS: ioctl_num_type =
        nix::request_code_read!(BASE, 4, size_of::<c_int>());
    pub(crate) const KEEPALIVE: ioctl_num_type =
        nix::request_code_read!(BASE, 5, size_of::<c_int>());
    pub(crate) const SETTIMEOUT: ioctl_num_type =
        nix::request_code_readwrite!(BASE, 6, size_of::<c_int>());
    pub(crate) const GETTIMEOUT: ioctl_num_type =
        nix::request_code_read!(BASE, 7, size_of::<c_int>());
    pub(crate) const GETTIMELEFT: ioctl_num_type =
        nix::request_code_read!(BASE, 10, size_of::<c_int>());

    nix::ioctl_read_bad!(wdioc_getsupport, GETSUPPORT, WatchdogInfo);
    nix::ioctl_read_bad!(wdioc_getbootstatus, GETBOOTSTATUS, c_int);
    // Declared _IOR in the header, but the kernel reads the int: the direction bits of the
    // old watchdog ioctls are historical.
    nix::ioctl_write_ptr_bad!(wdioc_setoptions, SETOPTIONS, c_int);
    nix::ioctl_read_bad!(wdioc_keepalive, KEEPALIVE, c_int);
    nix::ioctl_readwrite_bad!(wdioc_settimeout, SETTIMEOUT, c_int);
    nix::ioctl_read_bad!(wdioc_gettimeout, GETTIMEOUT, c_int);
    nix::ioctl_read_bad!(wdioc_gettimeleft, GETTIMELEFT, c_int);

    pub(crate) fn get_support(fd: BorrowedFd<'_>) -> nix::Result<WatchdogInfo> {
        let mut info = WatchdogInfo::default();
        // SAFETY: `fd` is open for the call's duration and `info` is a writable
        // `struct watchdog_info`, which is exactly what WDIOC_GETSUPPORT fills in
        // (Documentation/watchdog/watchdog-api.rst, "Environmental monitoring").
        unsafe { wdioc_getsupport(fd.as_raw_fd(), &mut info) }?;
        Ok(info)
    }

    pub(crate) fn get_boot_status(fd: BorrowedFd<'_>) -> nix::Result<c_int> {
        let mut flags: c_int = 0;
        // SAFETY: `fd` is open and `flags` is a writable int, the one WDIOC_GETBOOTSTATUS
        // stores the status into (Documentation/watchdog/watchdog-api.rst, "Environmental
        // monitoring").
        unsafe { wdioc_getbootstatus(fd.as_raw_fd(), &mut flags) }?;
        Ok(flags)
    }

    pub(crate) fn set_options(fd: BorrowedFd<'_>, options: c_int) -> nix::Result<()> {
        // SAFETY: `fd` is open and `options` is a readable int, the one WDIOC_SETOPTIONS reads
        // (Documentation/watchdog/watchdog-api.rst, "Environmental monitoring").
        unsafe { wdioc_setoptions(fd.as_raw_fd(), &options) }?;
        Ok(())
    }

    pub fn keepalive(fd: BorrowedFd<'_>) -> nix::Result<()> {
        let mut ignored: c_int = 0;
        // SAFETY: `fd` is open; WDIOC_KEEPALIVE ignores its argument, and a valid int pointer
        // is passed anyway (Documentation/watchdog/watchdog-api.rst, "The ioctl API").
        unsafe { wdioc_keepalive(fd.as_raw_fd(), &mut ignored) }?;
        Ok(())
    }

    /// Returns the timeout the driver actually set.
    pub(crate) fn set_timeout(fd: BorrowedFd<'_>, secs: c_int) -> nix::Result<c_int> {
        let mut timeout = secs;
        // SAFETY: `fd` is open and `timeout` is a readable and writable int: WDIOC_SETTIMEOUT
        // reads the request from it and writes the real timeout back
        // (Documentation/watchdog/watchdog-api.rst, "Setting and getting the timeout").
        unsafe { wdioc_settimeout(fd.as_raw_fd(), &mut timeout) }?;
        Ok(timeout)
    }

    pub(crate) fn get_timeout(fd: BorrowedFd<'_>) -> nix::Result<c_int> {
        let mut timeout: c_int = 0;
        // SAFETY: `fd` is open and `timeout` is a writable int, the one WDIOC_GETTIMEOUT
        // stores into (Documentation/watchdog/watchdog-api.rst, "Setting and getting the
        // timeout").
        unsafe { wdioc_gettimeout(fd.as_raw_fd(), &mut timeout) }?;
        Ok(timeout)
    }

    pub(crate) fn get_time_left(fd: BorrowedFd<'_>) -> nix::Result<c_int> {
        let mut left: c_int = 0;
        // SAFETY: `fd` is open and `left` is a writable int, the one WDIOC_GETTIMELEFT stores
        // into (Documentation/watchdog/watchdog-api.rst, "Get the number of seconds before
        // reboot").
        unsafe { wdioc_gettimeleft(fd.as_raw_fd(), &mut left) }?;
        Ok(left)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// ioctl_num_type is c_ulong on glibc (64 or 32 bits) and c_int on musl: the cast
    /// truncates, does nothing, or reinterprets the sign, depending on the target.
    #[allow(clippy::unnecessary_cast)]
    fn low_32_bits(code: nix::sys::ioctl::ioctl_num_type) -> u32 {
        code as u32
    }

    #[test]
    fn request_codes_match_the_kernel() {
        // From <linux/watchdog.h>: _IOR/_IOWR('W', nr, type), identical on arm, arm64, x86_64.
        let codes = [
            (sys::GETSUPPORT, 0x8028_5700_u32),
            (sys::GETBOOTSTATUS, 0x8004_5702),
            (sys::SETOPTIONS, 0x8004_5704),
            (sys::KEEPALIVE, 0x8004_5705),
            (sys::SETTIMEOUT, 0xC004_5706),
            (sys::GETTIMEOUT, 0x8004_5707),
            (sys::GETTIMELEFT, 0x8004_570A),
        ];
        for (code, kernel) in codes {
            assert_eq!(low_32_bits(code), kernel, "{kernel:#x}");
        }
        assert_eq!(size_of::<sys::WatchdogInfo>(), 40);
    }

    #[test]
    fn missing_device_is_not_found() {
        let err = Device::open(
            Path::new("/dev/watchkeeper-no-such"),
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert!(matches!(err, WatchdogError::NotFound { .. }), "{err:?}");
        let text = err.to_string();
        assert!(text.starts_with("/dev/watchkeeper-no-such: "), "{text}");
        assert!(
            text.contains("softdog") && text.contains("device = \"none\""),
            "{text}"
        );
        assert!(matches!(
            disarm(Path::new("/dev/watchkeeper-no-such")),
            Err(WatchdogError::NotFound { .. })
        ));
    }

    #[test]
    fn busy_names_the_holder_and_what_to_change() {
        let busy = |holder| {
            WatchdogError::Busy {
                path: Arc::from(Path::new("/dev/watchdog0")),
                holder,
            }
            .to_string()
        };
        let text = busy(None);
        assert!(text.starts_with("/dev/watchdog0: "), "{text}");
        assert!(
            text.contains("RuntimeWatchdogSec") && text.contains("procd"),
            "{text}"
        );
        let text = busy(Some(Holder {
            pid: 1,
            program: "systemd".into(),
        }));
        assert!(
            text.contains("held open by systemd (pid 1)")
                && text.contains("RuntimeWatchdogSec=off")
                && text.contains("system.conf.d"),
            "{text}"
        );
        let text = busy(Some(Holder {
            pid: 812,
            program: "watchdog".into(),
        }));
        assert!(text.contains("held open by watchdog (pid 812)"), "{text}");
    }

    #[test]
    fn the_holder_of_a_file_is_found_in_proc() {
        let path = std::env::temp_dir().join(format!("wk-holder-{}", std::process::id()));
        std::fs::write(&path, b"").unwrap();
        // A child holds it open on its stdin; the agent's own descriptors never count.
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .stdin(std::fs::File::open(&path).unwrap())
            .spawn()
            .unwrap();
        // Under qemu-user, spawn can return before the child has exec'd, while its comm is
        // still the test thread's name; wait for the exec, with a margin for a loaded host.
        let started = std::time::Instant::now();
        let mut holder = holder_of(&path);
        while holder.as_ref().is_some_and(|h| h.program != "sleep")
            && started.elapsed() < Duration::from_secs(20)
        {
            std::thread::sleep(Duration::from_millis(10));
            holder = holder_of(&path);
        }
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            holder,
            Some(Holder {
                pid: child.id() as i32,
                program: "sleep".into()
            })
        );
        let _held_by_me = std::fs::File::open(&path).unwrap();
        assert_eq!(holder_of(&path), None);
        std::fs::remove_file(&path).unwrap();
    }

    /// /dev/null answers every ioctl with ENOTTY and accepts writes: a driver that speaks only
    /// the simplest watchdog API.
    #[test]
    fn device_without_ioctls_is_fed_by_write() {
        let mut dev = Device::open(Path::new("/dev/null"), Duration::from_millis(7500)).unwrap();
        assert_eq!(dev.identity(), "");
        assert_eq!(dev.options(), 0);
        assert_eq!(dev.timeout(), Duration::from_secs(8));
        assert_eq!(dev.boot_status(), None);
        assert_eq!(dev.time_left(), None);
        assert_eq!(dev.path(), Path::new("/dev/null"));

        dev.keepalive().unwrap();
        assert!(dev.ping_by_write);
        dev.keepalive().unwrap();
        assert_eq!(dev.shorten_for_reset(), Duration::from_secs(8));

        let disarmed = disarm(Path::new("/dev/null")).unwrap();
        assert!(!disarmed.magic_close);
    }

    /// /dev/full takes no ioctls and fails every write with ENOSPC.
    #[test]
    fn failed_keepalive_names_the_device() {
        let mut dev = Device::open(Path::new("/dev/full"), Duration::from_secs(5)).unwrap();
        let err = dev.keepalive().unwrap_err();
        assert!(
            matches!(
                err,
                WatchdogError::Keepalive {
                    errno: Errno::ENOSPC,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(
            err.to_string()
                .starts_with("/dev/full: keepalive failed: ENOSPC"),
            "{err}"
        );
        assert!(matches!(
            disarm(Path::new("/dev/full")),
            Err(WatchdogError::MagicClose {
                errno: Errno::ENOSPC,
                ..
            })
        ));
    }

    #[test]
    fn identity_stops_at_nul_and_invalid_utf8() {
        assert_eq!(c_string(b"softdog\0x"), "softdog");
        assert_eq!(c_string(b"iTCO\xffwdt"), "iTCO");
        assert_eq!(c_string(&[b'a'; 32]).len(), 32);
        assert_eq!(c_string(&[0; 32]), "");
    }

    #[test]
    fn timeouts_round_up_to_whole_seconds() {
        assert_eq!(whole_secs(Duration::ZERO), 1);
        assert_eq!(whole_secs(Duration::from_millis(1)), 1);
        assert_eq!(whole_secs(Duration::from_secs(30)), 30);
        assert_eq!(whole_secs(Duration::from_millis(30_001)), 31);
        assert_eq!(whole_secs(Duration::MAX), c_int::MAX);
        assert_eq!(positive_secs(0), None);
        assert_eq!(positive_secs(-1), None);
        assert_eq!(positive_secs(60), Some(Duration::from_secs(60)));
    }

    #[test]
    fn boot_status_names_the_causes() {
        assert_eq!(BootStatus(0).to_string(), "no reset cause reported");
        assert_eq!(
            BootStatus(WDIOF_CARDRESET).to_string(),
            "reset by this watchdog"
        );
        assert_eq!(
            BootStatus(WDIOF_CARDRESET | WDIOF_POWERUNDER).to_string(),
            "reset by this watchdog, undervoltage"
        );
        assert_eq!(
            BootStatus(WDIOF_OVERHEAT | 0x8000).to_string(),
            "CPU overheat, other status bits 0x8000"
        );
        assert_eq!(BootStatus(0x8000).to_string(), "other status bits 0x8000");
    }

    #[test]
    fn no_device_keeps_its_timeout() {
        let mut dev = NoDevice::new(Duration::from_secs(15));
        dev.keepalive().unwrap();
        assert_eq!(dev.shorten_for_reset(), Duration::from_secs(15));
        assert_eq!(dev.timeout(), Duration::from_secs(15));
    }
}
