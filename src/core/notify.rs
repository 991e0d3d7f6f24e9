//! The sd_notify protocol, receiver side: one datagram's bytes in, what it says out.
//!
//! A datagram is newline-separated `NAME=VALUE` assignments, as systemd documents them for
//! services (`sd_notify(3)`). [`parse`] reads the ones that matter for supervision and
//! ignores the rest, as systemd does: unknown names, lines without `=`, empty lines. So is
//! `MAINPID=`: a component's main process is the one `watchkeeper exec` started or its
//! pidfile names, never one a message claims.
//!
//! Invariants: parsing never allocates and never fails as a whole; a malformed value of a
//! known name (`WATCHDOG_USEC=abc`, `READY=2`) is counted in [`Message::malformed`] and
//! otherwise ignored, so one bad line never hides a good one. The `STATUS=` value is
//! borrowed from the datagram; it is kept only when its first [`MAX_NOTIFY_STATUS_LEN`] bytes
//! are UTF-8, and cut there (before a character the cut would split). Within one datagram the last assignment of a
//! name wins, as in systemd.

use core::time::Duration;

use crate::limits::{MAX_DURATION_SECS, MAX_NOTIFY_STATUS_LEN};

/// What `WATCHDOG=` asks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Watchdog {
    /// `WATCHDOG=1`: the keep-alive ping, a beat.
    Ping,
    /// `WATCHDOG=trigger`: the daemon declares itself failed, now.
    Trigger,
}

/// What one datagram says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Message<'a> {
    /// `READY=1`: the startup is over.
    pub ready: bool,
    pub watchdog: Option<Watchdog>,
    /// `WATCHDOG_USEC=`: the new heartbeat timeout (0 and values past
    /// [`MAX_DURATION_SECS`] are malformed: a daemon cannot switch its supervision off).
    pub watchdog_timeout: Option<Duration>,
    /// `EXTEND_TIMEOUT_USEC=`: the startup may take this much longer, from now.
    pub extend_startup: Option<Duration>,
    /// `STOPPING=1`: the daemon is shutting down.
    pub stopping: bool,
    /// `STATUS=`: free text for `status`, cut to [`MAX_NOTIFY_STATUS_LEN`] bytes.
    pub status: Option<&'a str>,
    /// Known names with a value that means nothing (`READY=0` is not malformed: systemd
    /// ignores it too).
    pub malformed: u16,
}

impl Message<'_> {
    /// True when nothing in the datagram concerns supervision.
    pub fn is_empty(&self) -> bool {
        !self.ready
            && self.watchdog.is_none()
            && self.watchdog_timeout.is_none()
            && self.extend_startup.is_none()
            && !self.stopping
            && self.status.is_none()
    }
}

/// Reads a datagram.
pub fn parse(datagram: &[u8]) -> Message<'_> {
    let mut message = Message::default();
    for line in datagram.split(|b| *b == b'\n') {
        let Some(eq) = line.iter().position(|b| *b == b'=') else {
            continue;
        };
        let (name, value) = (&line[..eq], &line[eq + 1..]);
        let well_formed = match name {
            b"READY" => raise(&mut message.ready, value),
            b"STOPPING" => raise(&mut message.stopping, value),
            b"WATCHDOG" => store(&mut message.watchdog, watchdog(value)),
            b"WATCHDOG_USEC" => store(&mut message.watchdog_timeout, timeout(value)),
            b"EXTEND_TIMEOUT_USEC" => store(&mut message.extend_startup, microseconds(value)),
            b"STATUS" => store(&mut message.status, status(value)),
            _ => true,
        };
        if !well_formed {
            message.malformed = message.malformed.saturating_add(1);
        }
    }
    message
}

/// `1` raises a flag, `0` leaves it: anything else is malformed.
fn raise(flag: &mut bool, value: &[u8]) -> bool {
    match value {
        b"1" => *flag = true,
        b"0" => {}
        _ => return false,
    }
    true
}

/// Keeps a well-formed value (the last one wins); says whether it was.
fn store<T>(slot: &mut Option<T>, value: Option<T>) -> bool {
    let well_formed = value.is_some();
    if well_formed {
        *slot = value;
    }
    well_formed
}

fn watchdog(value: &[u8]) -> Option<Watchdog> {
    match value {
        b"1" => Some(Watchdog::Ping),
        b"trigger" => Some(Watchdog::Trigger),
        _ => None,
    }
}

/// Decimal digits only, as systemd's `safe_atou64` takes them (no sign, no spaces).
fn number(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 20 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn microseconds(value: &[u8]) -> Option<Duration> {
    let usec = number(value)?;
    (usec <= MAX_DURATION_SECS * 1_000_000).then(|| Duration::from_micros(usec))
}

fn timeout(value: &[u8]) -> Option<Duration> {
    microseconds(value).filter(|t| !t.is_zero())
}

/// A `STATUS=` value as kept: `None` unless its first [`MAX_NOTIFY_STATUS_LEN`] bytes are
/// UTF-8, cut there before a character the cut would split.
pub fn status(value: &[u8]) -> Option<&str> {
    let valid = match core::str::from_utf8(value) {
        Ok(text) => text,
        Err(e) => core::str::from_utf8(&value[..e.valid_up_to()]).ok()?,
    };
    let kept = value.len().min(MAX_NOTIFY_STATUS_LEN);
    if valid.len() < kept {
        return None;
    }
    let mut end = kept;
    while !valid.is_char_boundary(end) {
        end -= 1;
    }
    Some(&valid[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_messages_a_daemon_sends_are_read() {
        let m = parse(b"READY=1\nSTATUS=Processing requests...\nMAINPID=4711");
        assert!(m.ready);
        assert_eq!(m.status, Some("Processing requests..."));
        assert_eq!(m.watchdog, None);
        assert_eq!(m.malformed, 0);

        assert_eq!(parse(b"WATCHDOG=1").watchdog, Some(Watchdog::Ping));
        assert_eq!(parse(b"WATCHDOG=1\n").watchdog, Some(Watchdog::Ping));
        assert_eq!(parse(b"WATCHDOG=trigger").watchdog, Some(Watchdog::Trigger));
        assert_eq!(
            parse(b"WATCHDOG_USEC=20000000").watchdog_timeout,
            Some(Duration::from_secs(20))
        );
        assert_eq!(
            parse(b"EXTEND_TIMEOUT_USEC=5000000").extend_startup,
            Some(Duration::from_secs(5))
        );
        assert!(parse(b"STOPPING=1").stopping);
        assert_eq!(parse(b"STATUS=").status, Some(""));
    }

    #[test]
    fn what_systemd_ignores_is_ignored_and_bad_values_are_counted() {
        let m = parse(b"X_CUSTOM=1\nFDSTORE=1\nERRNO=2\nnoequals\n\n=\nRELOADING=1");
        assert!(m.is_empty());
        assert_eq!(m.malformed, 0);
        let m = parse(b"READY=0\nSTOPPING=0");
        assert!(m.is_empty());
        assert_eq!(m.malformed, 0);

        for bad in [
            &b"READY=yes"[..],
            b"READY=1 ",
            b"WATCHDOG=2",
            b"WATCHDOG=",
            b"WATCHDOG_USEC=0",
            b"WATCHDOG_USEC=-5",
            b"WATCHDOG_USEC=+5",
            b"WATCHDOG_USEC= 5",
            b"WATCHDOG_USEC=99999999999999999999",
            b"WATCHDOG_USEC=999999999999999999999",
            b"EXTEND_TIMEOUT_USEC=1e6",
            b"STATUS=\xff\xfe",
        ] {
            let m = parse(bad);
            assert!(m.is_empty(), "{bad:?}: {m:?}");
            assert_eq!(m.malformed, 1, "{bad:?}");
        }
    }

    #[test]
    fn a_bad_line_does_not_hide_a_good_one_and_the_last_assignment_wins() {
        let m = parse(b"WATCHDOG_USEC=bad\nWATCHDOG=1\nREADY=maybe\nREADY=1");
        assert_eq!(m.watchdog, Some(Watchdog::Ping));
        assert!(m.ready);
        assert_eq!(m.malformed, 2);
        let m = parse(b"STATUS=one\nSTATUS=two\nWATCHDOG=1\nWATCHDOG=trigger");
        assert_eq!(m.status, Some("two"));
        assert_eq!(m.watchdog, Some(Watchdog::Trigger));
    }

    #[test]
    fn the_longest_timeout_is_the_config_limit() {
        use core::fmt::Write as _;
        let max = MAX_DURATION_SECS * 1_000_000;
        let mut line = heapless::String::<48>::new();
        write!(line, "WATCHDOG_USEC={max}").unwrap();
        assert_eq!(
            parse(line.as_bytes()).watchdog_timeout,
            Some(Duration::from_secs(MAX_DURATION_SECS))
        );
        line.clear();
        write!(line, "WATCHDOG_USEC={}", max + 1).unwrap();
        assert_eq!(parse(line.as_bytes()).watchdog_timeout, None);
    }

    #[test]
    fn a_long_status_is_cut_on_a_character_boundary() {
        let mut datagram = heapless::Vec::<u8, 1024>::new();
        datagram.extend_from_slice(b"STATUS=").unwrap();
        while datagram.len() < 7 + MAX_NOTIFY_STATUS_LEN - 1 {
            datagram.push(b'a').unwrap();
        }
        datagram.extend_from_slice("€uro".as_bytes()).unwrap();
        let status = parse(&datagram).status.unwrap();
        assert_eq!(status.len(), MAX_NOTIFY_STATUS_LEN - 1);
        assert!(status.bytes().all(|b| b == b'a'));
    }
}
