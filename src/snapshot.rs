//! The status snapshot: the file the agent rewrites in its run directory on every state
//! change and `watchkeeper status` reads. Pure: its writer, its parser and its escaping,
//! no I/O.
//!
//! Format (version [`VERSION`]): a header line, one `agent` record, a `boot` record with
//! `[boot]`, one `component` record per supervised component, and an `end` record; fields
//! are separated by tabs (shown here as `|`):
//!
//! ```text
//! watchkeeper-status 6
//! agent|PID|START_TIME|BOOT_ID|WRITTEN_MS|LED|HOLD|RESETTING|CONFIG|TAKEOVER
//! boot|PHASE|ATTEMPT|UNKNOWN|HEALTHY_SINCE_MS|CONFIRM_AFTER_MS|DEADLINE_MS|RETRY_MS
//! component|NAME|POSITION|STATE|SINCE_MS|REPAIRS|REASON|MAIN_PID|MAIN_START|READY|TIMEOUT_US|STOPPING|DAEMON_STATUS
//! end|LISTED|OMITTED
//! ```
//!
//! The `boot` record is the confirmation of this boot (see `core::boot`): its phase's word
//! ([`crate::core::boot::Phase::word`]), the attempt running or last failed (0 before the
//! first), 1 when the trial check could not tell, since when every critical component has
//! been alive (empty unless they all are), `confirm_after`, the deadline (empty: none) and
//! the next attempt's start (empty unless retrying), on the clock of `WRITTEN_MS`.
//!
//! The last six fields describe the daemon of a component that listens for sd_notify
//! messages, and are all empty for one that does not. `MAIN_PID` and `MAIN_START` are its
//! main process (empty while no pidfile names one), `READY` is 1 once that process sent
//! `READY=1`, `TIMEOUT_US` is its timeout now (the config's, or its `WATCHDOG_USEC=`),
//! `STOPPING` is 1 once it sent `STOPPING=1`, `DAEMON_STATUS` is its last `STATUS=` text.
//! A restarted agent reads them back (see `agent::listening`): a daemon says `READY=1`
//! once, to the agent that ran then.
//!
//! Every text field is escaped ([`escape_bytes`]): a backslash, a tab, a newline, any
//! other ASCII control byte and any byte that is not UTF-8 are written as `\\`, `\t`, `\n`,
//! `\r` or `\xHH`, so the separators never occur inside a field whatever a path, a name or a
//! reason holds. An empty REASON means none. `START_TIME` (field 22 of `/proc/PID/stat`) and
//! `BOOT_ID` let a reader tell the agent from a process that got its pid later.
//!
//! Invariants: the writer allocates nothing (it fills the agent's `heapless::String`), and
//! it always ends with a complete `end` record: components that do not fit are counted, not
//! cut. The parser is strict (any defect is an error naming the line), bounded (at most
//! [`MAX_STATUS_LEN`] bytes and [`MAX_COMPONENTS`] components) and never panics.

use core::fmt::{self, Display, Write as _};

use crate::core::time::Instant;
use crate::limits::{MAX_COMPONENTS, MAX_STATUS_LEN};

/// First word of the header line.
pub(crate) const MAGIC: &str = "watchkeeper-status";
/// The format version this build writes and reads.
pub(crate) const VERSION: u32 = 6;
/// Room kept for the `end` record while components are written.
const END_RESERVE: usize = 64;

/// A time as the snapshot records it: milliseconds of the agent's monotonic clock.
pub(crate) fn millis(at: Instant) -> u64 {
    at.as_nanos() / 1_000_000
}

/// Who wrote a snapshot: enough to tell the agent from a later process with its pid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity<B> {
    pub pid: u32,
    /// Clock ticks after boot at which the process started (`/proc/PID/stat` field 22).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` of the boot the agent runs in.
    pub boot_id: B,
}

/// The agent record, as the agent writes it.
pub struct AgentRecord<'a, L: Display> {
    pub identity: Identity<&'a str>,
    /// Monotonic milliseconds when written (the clock of every `since_ms`).
    pub written_ms: u64,
    pub led: L,
    pub hold: bool,
    pub resetting: bool,
    /// The config path's bytes (a path need not be UTF-8).
    pub config: &'a [u8],
    /// Whether the watchdog was running when the agent took it over (a `Takeover` word).
    pub takeover: &'a str,
}

/// One component record, as the agent writes it.
pub struct ComponentRecord<'a, S: Display, R: Display> {
    pub name: &'a str,
    /// 1-based LED code.
    pub position: usize,
    pub state: S,
    pub since_ms: u64,
    pub repairs: u32,
    pub reason: Option<R>,
    /// For a component that listens for sd_notify messages: what its daemon said.
    pub daemon: Option<Daemon<&'a str>>,
}

/// What a listening component's daemon said, as the agent writes it (`T = &str`) and as
/// read (`T = Text`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Daemon<T> {
    /// Its main process (pid, start time), once a pidfile named one.
    pub main: Option<(i32, u64)>,
    /// That process sent `READY=1`.
    pub ready: bool,
    /// Its timeout now, in microseconds: the config's, or its `WATCHDOG_USEC=`.
    pub timeout_us: u64,
    /// It sent `STOPPING=1`.
    pub stopping: bool,
    /// Its last `STATUS=`.
    pub status: T,
}

/// The confirmation of this boot, as the agent writes it (`T = &str`) and as read
/// (`T = Text`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot<T> {
    pub phase: T,
    pub attempt: u32,
    pub unknown: bool,
    pub healthy_since_ms: Option<u64>,
    pub confirm_after_ms: u64,
    pub deadline_ms: Option<u64>,
    pub retry_ms: Option<u64>,
}

/// Writes a snapshot into a fixed buffer: [`Writer::new`], [`Writer::boot`] with `[boot]`,
/// [`Writer::component`] for each component, then [`Writer::finish`].
pub struct Writer<'o, const N: usize> {
    out: &'o mut heapless::String<N>,
    listed: usize,
    omitted: usize,
}

/// `fmt::Write` that escapes everything written through it (see [`escape_bytes`]).
struct Escaping<'w, W: fmt::Write>(&'w mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        escape_bytes(self.0, s.as_bytes())
    }
}

/// Writes `bytes` escaped so that the result holds no tab, newline, raw backslash, control
/// byte or invalid UTF-8; [`unescape`] gives the bytes back.
pub(crate) fn escape_bytes(out: &mut impl fmt::Write, bytes: &[u8]) -> fmt::Result {
    for chunk in bytes.utf8_chunks() {
        let valid = chunk.valid();
        let mut plain = 0;
        for (i, b) in valid.bytes().enumerate() {
            let escaped = match b {
                b'\\' => "\\\\",
                b'\t' => "\\t",
                b'\n' => "\\n",
                b'\r' => "\\r",
                0..0x20 | 0x7f => "",
                _ => continue,
            };
            out.write_str(&valid[plain..i])?;
            if escaped.is_empty() {
                write!(out, "\\x{b:02x}")?;
            } else {
                out.write_str(escaped)?;
            }
            plain = i + 1;
        }
        out.write_str(&valid[plain..])?;
        for b in chunk.invalid() {
            write!(out, "\\x{b:02x}")?;
        }
    }
    Ok(())
}

fn escaped<W: fmt::Write>(out: &mut W, value: impl Display) -> fmt::Result {
    write!(Escaping(out), "{value}")
}

impl<'o, const N: usize> Writer<'o, N> {
    /// Clears `out` and writes the header and the agent record.
    pub fn new<L: Display>(
        out: &'o mut heapless::String<N>,
        agent: &AgentRecord<'_, L>,
    ) -> Result<Self, fmt::Error> {
        out.clear();
        writeln!(out, "{MAGIC} {VERSION}")?;
        let id = &agent.identity;
        write!(out, "agent\t{}\t{}\t", id.pid, id.start_time)?;
        escaped(out, id.boot_id)?;
        write!(out, "\t{}\t", agent.written_ms)?;
        escaped(out, &agent.led)?;
        write!(
            out,
            "\t{}\t{}\t",
            u8::from(agent.hold),
            u8::from(agent.resetting)
        )?;
        escape_bytes(out, agent.config)?;
        out.push('\t').map_err(|_| fmt::Error)?;
        escaped(out, agent.takeover)?;
        writeln!(out)?;
        if out.len() + END_RESERVE > N {
            return Err(fmt::Error);
        }
        Ok(Writer {
            out,
            listed: 0,
            omitted: 0,
        })
    }

    /// Adds the `boot` record (before any component).
    pub fn boot(&mut self, b: &Boot<&str>) -> fmt::Result {
        let out = &mut *self.out;
        out.push_str("boot\t").map_err(|_| fmt::Error)?;
        escaped(out, b.phase)?;
        write!(out, "\t{}\t{}\t", b.attempt, u8::from(b.unknown))?;
        for (i, value) in [
            b.healthy_since_ms,
            Some(b.confirm_after_ms),
            b.deadline_ms,
            b.retry_ms,
        ]
        .into_iter()
        .enumerate()
        {
            if i > 0 {
                out.push('\t').map_err(|_| fmt::Error)?;
            }
            if let Some(v) = value {
                write!(out, "{v}")?;
            }
        }
        writeln!(out)?;
        if out.len() + END_RESERVE > N {
            return Err(fmt::Error);
        }
        Ok(())
    }

    /// Adds a component record; one that does not fit is left out and counted.
    pub fn component<S: Display, R: Display>(&mut self, c: &ComponentRecord<'_, S, R>) {
        let start = self.out.len();
        if self.omitted == 0 && self.try_component(c).is_ok() && self.out.len() + END_RESERVE <= N {
            self.listed += 1;
        } else {
            self.out.truncate(start);
            self.omitted += 1;
        }
    }

    fn try_component<S: Display, R: Display>(
        &mut self,
        c: &ComponentRecord<'_, S, R>,
    ) -> fmt::Result {
        let out = &mut *self.out;
        out.push_str("component\t").map_err(|_| fmt::Error)?;
        escaped(out, c.name)?;
        write!(out, "\t{}\t", c.position)?;
        escaped(out, &c.state)?;
        write!(out, "\t{}\t{}\t", c.since_ms, c.repairs)?;
        if let Some(reason) = &c.reason {
            escaped(out, reason)?;
        }
        match &c.daemon {
            Some(d) => {
                match d.main {
                    Some((pid, start)) => write!(out, "\t{pid}\t{start}")?,
                    None => out.push_str("\t\t").map_err(|_| fmt::Error)?,
                }
                write!(
                    out,
                    "\t{}\t{}\t{}\t",
                    u8::from(d.ready),
                    d.timeout_us,
                    u8::from(d.stopping)
                )?;
                escaped(out, d.status)?;
            }
            None => out.push_str("\t\t\t\t\t\t").map_err(|_| fmt::Error)?,
        }
        writeln!(out)
    }

    /// Writes the `end` record (its room was kept free).
    pub fn finish(self) -> fmt::Result {
        writeln!(self.out, "end\t{}\t{}", self.listed, self.omitted)
    }
}

/// A decoded text field: the bytes the agent had (a path may not be UTF-8).
pub(crate) type Text = Vec<u8>;

/// The agent record, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Agent {
    pub identity: Identity<Text>,
    pub written_ms: u64,
    pub led: Text,
    pub hold: bool,
    pub resetting: bool,
    pub config: Text,
    pub takeover: Text,
}

/// A component record, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Component {
    pub name: Text,
    pub position: u32,
    pub state: Text,
    pub since_ms: u64,
    pub repairs: u32,
    pub reason: Option<Text>,
    pub daemon: Option<Daemon<Text>>,
}

/// A whole snapshot, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    pub agent: Agent,
    /// With `[boot]`: the confirmation of this boot.
    pub boot: Option<Boot<Text>>,
    pub components: Vec<Component>,
    /// Components the agent could not fit in the snapshot.
    pub omitted: usize,
}

/// What is wrong with a snapshot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Defect {
    Empty,
    TooLarge,
    NotSnapshot,
    /// Another format version (`None`: not a number).
    OtherVersion(Option<u32>),
    NotUtf8,
    ControlByte,
    BadEscape,
    Fields {
        record: &'static str,
        expected: usize,
    },
    BadNumber(&'static str),
    BadFlag(&'static str),
    NoAgent,
    UnknownRecord,
    TooManyComponents,
    WrongCount,
    NoEnd,
    AfterEnd,
    /// Daemon fields for a component that does not listen, or only some of them.
    PartialDaemon,
}

/// A defect and the line (1-based) where it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub defect: Defect,
}

impl Display for Defect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Defect::Empty => f.write_str("it is empty"),
            Defect::TooLarge => write!(f, "it is larger than {MAX_STATUS_LEN} bytes"),
            Defect::NotSnapshot => write!(f, "it does not start with \"{MAGIC} {VERSION}\""),
            Defect::OtherVersion(Some(v)) => write!(
                f,
                "it is format version {v}, this watchkeeper reads version {VERSION} (an agent of another version wrote it)"
            ),
            Defect::OtherVersion(None) => {
                write!(f, "its format version is not a number (expected {VERSION})")
            }
            Defect::NotUtf8 => f.write_str("it is not UTF-8 text"),
            Defect::ControlByte => f.write_str("a field holds a raw control byte"),
            Defect::BadEscape => f.write_str("a field holds a malformed \\ escape"),
            Defect::Fields { record, expected } => {
                write!(f, "the {record} record must have {expected} fields")
            }
            Defect::BadNumber(what) => write!(f, "{what} is not a number"),
            Defect::BadFlag(what) => write!(f, "{what} must be 0 or 1"),
            Defect::NoAgent => f.write_str("the agent record must come right after the header"),
            Defect::UnknownRecord => f.write_str("unknown record"),
            Defect::TooManyComponents => write!(f, "more than {MAX_COMPONENTS} components"),
            Defect::WrongCount => {
                f.write_str("the end record's count differs from the component records")
            }
            Defect::NoEnd => f.write_str("it stops before the end record (cut short)"),
            Defect::AfterEnd => f.write_str("text after the end record"),
            Defect::PartialDaemon => f.write_str(
                "the daemon fields must be all empty (a component that does not listen) or all set but the main process",
            ),
        }
    }
}

impl Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.defect)
    }
}

/// Reverses [`escape_bytes`] for one field.
pub(crate) fn unescape(field: &str) -> Result<Text, Defect> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.bytes();
    while let Some(b) = bytes.next() {
        if b < 0x20 || b == 0x7f {
            return Err(Defect::ControlByte);
        }
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next().ok_or(Defect::BadEscape)? {
            b'\\' => b'\\',
            b't' => b'\t',
            b'n' => b'\n',
            b'r' => b'\r',
            b'x' => {
                let hi = bytes.next().ok_or(Defect::BadEscape)?;
                let lo = bytes.next().ok_or(Defect::BadEscape)?;
                let hex = |d: u8| char::from(d).to_digit(16).ok_or(Defect::BadEscape);
                (hex(hi)? * 16 + hex(lo)?) as u8
            }
            _ => return Err(Defect::BadEscape),
        });
    }
    Ok(out)
}

fn number<T: core::str::FromStr>(field: &str, what: &'static str) -> Result<T, Defect> {
    // `FromStr` accepts a leading '+'; the writer never writes one.
    if field.starts_with('+') {
        return Err(Defect::BadNumber(what));
    }
    field.parse().map_err(|_| Defect::BadNumber(what))
}

fn flag(field: &str, what: &'static str) -> Result<bool, Defect> {
    match field {
        "0" => Ok(false),
        "1" => Ok(true),
        _ => Err(Defect::BadFlag(what)),
    }
}

fn fields<'t, const K: usize>(line: &'t str, record: &'static str) -> Result<[&'t str; K], Defect> {
    let mut out = [""; K];
    let mut parts = line.split('\t');
    for slot in &mut out {
        *slot = parts.next().ok_or(Defect::Fields {
            record,
            expected: K,
        })?;
    }
    if parts.next().is_some() {
        return Err(Defect::Fields {
            record,
            expected: K,
        });
    }
    Ok(out)
}

fn parse_agent(line: &str) -> Result<Agent, Defect> {
    let [
        kind,
        pid,
        start,
        boot,
        written,
        led,
        hold,
        resetting,
        config,
        takeover,
    ] = fields::<10>(line, "agent")?;
    if kind != "agent" {
        return Err(Defect::NoAgent);
    }
    Ok(Agent {
        identity: Identity {
            pid: number(pid, "the pid")?,
            start_time: number(start, "the start time")?,
            boot_id: unescape(boot)?,
        },
        written_ms: number(written, "the time written")?,
        led: unescape(led)?,
        hold: flag(hold, "the hold flag")?,
        resetting: flag(resetting, "the resetting flag")?,
        config: unescape(config)?,
        takeover: unescape(takeover)?,
    })
}

fn parse_boot(line: &str) -> Result<Boot<Text>, Defect> {
    let [_, phase, attempt, unknown, healthy, after, deadline, retry] = fields::<8>(line, "boot")?;
    let optional = |field: &str, what| {
        if field.is_empty() {
            Ok(None)
        } else {
            number(field, what).map(Some)
        }
    };
    Ok(Boot {
        phase: unescape(phase)?,
        attempt: number(attempt, "the confirm attempt")?,
        unknown: flag(unknown, "the unknown-trial flag")?,
        healthy_since_ms: optional(healthy, "the start of health")?,
        confirm_after_ms: number(after, "confirm_after")?,
        deadline_ms: optional(deadline, "the confirm deadline")?,
        retry_ms: optional(retry, "the next confirm attempt")?,
    })
}

fn parse_component(line: &str) -> Result<Component, Defect> {
    let [
        _,
        name,
        position,
        state,
        since,
        repairs,
        reason,
        main_pid,
        main_start,
        ready,
        timeout,
        stopping,
        status,
    ] = fields::<13>(line, "component")?;
    let daemon = if [main_pid, main_start, ready, timeout, stopping, status]
        .iter()
        .all(|f| f.is_empty())
    {
        None
    } else {
        if ready.is_empty()
            || timeout.is_empty()
            || stopping.is_empty()
            || main_pid.is_empty() != main_start.is_empty()
        {
            return Err(Defect::PartialDaemon);
        }
        let main = if main_pid.is_empty() {
            None
        } else {
            Some((
                number(main_pid, "the main pid")?,
                number(main_start, "the main process's start time")?,
            ))
        };
        Some(Daemon {
            main,
            ready: flag(ready, "the ready flag")?,
            timeout_us: number(timeout, "the daemon's timeout")?,
            stopping: flag(stopping, "the stopping flag")?,
            status: unescape(status)?,
        })
    };
    Ok(Component {
        name: unescape(name)?,
        position: number(position, "the LED position")?,
        state: unescape(state)?,
        since_ms: number(since, "the state's start")?,
        repairs: number(repairs, "the repair count")?,
        reason: if reason.is_empty() {
            None
        } else {
            Some(unescape(reason)?)
        },
        daemon,
    })
}

/// Parses a snapshot; any defect is an error naming its line.
pub fn parse(bytes: &[u8]) -> Result<Snapshot, ParseError> {
    let at = |line: usize| move |defect: Defect| ParseError { line, defect };
    if bytes.is_empty() {
        return Err(at(1)(Defect::Empty));
    }
    if bytes.len() > MAX_STATUS_LEN {
        return Err(at(1)(Defect::TooLarge));
    }
    let header = bytes.split(|b| *b == b'\n').next().unwrap_or_default();
    let version = header
        .strip_prefix(MAGIC.as_bytes())
        .and_then(|rest| rest.strip_prefix(b" "))
        .ok_or(at(1)(Defect::NotSnapshot))?;
    let version = core::str::from_utf8(version)
        .ok()
        .and_then(|v| number::<u32>(v, "").ok());
    if version != Some(VERSION) {
        return Err(at(1)(Defect::OtherVersion(version)));
    }
    let text = core::str::from_utf8(bytes).map_err(|e| {
        let line = 1 + bytes[..e.valid_up_to()]
            .iter()
            .filter(|b| **b == b'\n')
            .count();
        at(line)(Defect::NotUtf8)
    })?;
    // Every record ends with a newline: a text without a final one was cut short.
    let Some(body) = text.strip_suffix('\n') else {
        return Err(at(text.lines().count())(Defect::NoEnd));
    };
    let mut lines = body.split('\n').enumerate().skip(1);
    let (n, agent_line) = lines.next().ok_or(at(2)(Defect::NoAgent))?;
    let agent = parse_agent(agent_line).map_err(at(n + 1))?;
    let mut boot = None;
    let mut components = Vec::new();
    for (n, line) in lines {
        let line_no = n + 1;
        match line.split('\t').next().unwrap_or_default() {
            "boot" if boot.is_none() && components.is_empty() => {
                boot = Some(parse_boot(line).map_err(at(line_no))?);
            }
            "component" => {
                if components.len() == MAX_COMPONENTS {
                    return Err(at(line_no)(Defect::TooManyComponents));
                }
                components.push(parse_component(line).map_err(at(line_no))?);
            }
            "end" => {
                let [_, listed, omitted] = fields::<3>(line, "end").map_err(at(line_no))?;
                let listed: usize = number(listed, "the listed count").map_err(at(line_no))?;
                let omitted = number(omitted, "the omitted count").map_err(at(line_no))?;
                if listed != components.len() {
                    return Err(at(line_no)(Defect::WrongCount));
                }
                if line_no != body.split('\n').count() {
                    return Err(at(line_no + 1)(Defect::AfterEnd));
                }
                return Ok(Snapshot {
                    agent,
                    boot,
                    components,
                    omitted,
                });
            }
            _ => return Err(at(line_no)(Defect::UnknownRecord)),
        }
    }
    Err(at(body.split('\n').count() + 1)(Defect::NoEnd))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOSTILE: &[&[u8]] = &[
        b"",
        b"plain",
        b"tab\there",
        b"new\nline",
        b"\\",
        b"\\t not a tab",
        b"back\\slash\\",
        b"\x1b[31mred\x1b[0m",
        b"nul\0byte",
        b"\r\x7f\x01",
        b"\xff\xfe invalid utf-8 \xc3",
        "caf\u{e9} \u{202e}".as_bytes(),
        b"\\x4",
    ];

    fn write(
        id: Identity<&str>,
        config: &[u8],
        components: &[(String, Option<String>)],
    ) -> heapless::String<MAX_STATUS_LEN> {
        let mut out = heapless::String::new();
        let agent = AgentRecord {
            identity: id,
            written_ms: 123,
            led: "component 2",
            hold: true,
            resetting: false,
            config,
            takeover: "running",
        };
        let mut writer = Writer::new(&mut out, &agent).unwrap();
        for (i, (name, reason)) in components.iter().enumerate() {
            writer.component(&ComponentRecord {
                name,
                position: i + 1,
                state: "dead",
                since_ms: 7,
                repairs: 3,
                reason: reason.as_deref(),
                daemon: sample_daemon(i),
            });
        }
        writer.finish().unwrap();
        out
    }

    /// Component `i`'s daemon in [`write`]: every other one listens, with every field set
    /// in turn.
    fn sample_daemon(i: usize) -> Option<Daemon<&'static str>> {
        (i % 2 == 1).then_some(Daemon {
            main: (i % 4 == 1).then_some((i32::MAX, u64::MAX)),
            ready: i == 1,
            timeout_us: u64::MAX,
            stopping: i == 3,
            status: "serving \t\\ requests",
        })
    }

    #[test]
    fn hostile_fields_round_trip() {
        for value in HOSTILE {
            let mut text = String::new();
            escape_bytes(&mut text, value).unwrap();
            assert!(
                !text.bytes().any(|b| b < 0x20 || b == 0x7f),
                "{value:?} -> {text:?}"
            );
            assert_eq!(unescape(&text).as_deref(), Ok(*value), "{text:?}");
        }
        let lossy: Vec<String> = HOSTILE
            .iter()
            .map(|v| String::from_utf8_lossy(v).into_owned())
            .collect();
        let components: Vec<(String, Option<String>)> = lossy
            .iter()
            .map(|v| (v.clone(), Some(v.clone()).filter(|r| !r.is_empty())))
            .chain([("long".repeat(1000), Some("r".repeat(5000)))])
            .collect();
        for config in HOSTILE {
            let id = Identity {
                pid: 42,
                start_time: u64::MAX,
                boot_id: "b\toot\n",
            };
            let out = write(id, config, &components);
            let s = parse(out.as_bytes()).unwrap();
            assert_eq!(s.agent.config, *config);
            assert_eq!(s.agent.identity.boot_id, b"b\toot\n");
            assert_eq!(s.agent.identity.start_time, u64::MAX);
            assert!(s.agent.hold && !s.agent.resetting);
            assert_eq!(s.agent.takeover, b"running");
            assert_eq!(s.omitted, 0);
            assert_eq!(s.components.len(), components.len());
            for (i, (got, (name, reason))) in s.components.iter().zip(&components).enumerate() {
                assert_eq!(got.name, name.as_bytes());
                assert_eq!(got.reason.as_deref(), reason.as_deref().map(str::as_bytes));
                assert_eq!((got.since_ms, got.repairs), (7, 3));
                let daemon = got.daemon.as_ref().map(|d| Daemon {
                    main: d.main,
                    ready: d.ready,
                    timeout_us: d.timeout_us,
                    stopping: d.stopping,
                    status: core::str::from_utf8(&d.status).unwrap(),
                });
                assert_eq!(daemon, sample_daemon(i));
            }
        }
    }

    #[test]
    fn components_that_do_not_fit_are_counted_and_the_end_is_kept() {
        let id = Identity {
            pid: 1,
            start_time: 2,
            boot_id: "x",
        };
        let many: Vec<(String, Option<String>)> = (0..MAX_COMPONENTS)
            .map(|i| (format!("c{i}"), Some("\t".repeat(200))))
            .collect();
        let out = write(id, b"/etc/wk.toml", &many);
        let s = parse(out.as_bytes()).unwrap();
        assert!(s.omitted > 0);
        assert_eq!(s.components.len() + s.omitted, MAX_COMPONENTS);
    }

    #[test]
    fn defects_name_their_line() {
        let good = "watchkeeper-status 6\nagent\t1\t2\tb\t3\thealthy\t0\t0\t/c\trunning\ncomponent\tn\t1\talive\t0\t0\t\t\t\t\t\t\t\nend\t1\t0\n";
        assert!(parse(good.as_bytes()).is_ok());
        let with_boot = "watchkeeper-status 6\nagent\t1\t2\tb\t3\thealthy\t0\t0\t/c\trunning\nboot\twaiting\t0\t1\t\t60000\t600000\t\nend\t0\t0\n";
        let boot = parse(with_boot.as_bytes()).unwrap().boot.unwrap();
        assert_eq!(
            (
                boot.phase.as_slice(),
                boot.unknown,
                boot.healthy_since_ms,
                boot.deadline_ms
            ),
            (&b"waiting"[..], true, None, Some(600_000))
        );
        let cases: &[(&[u8], usize, Defect)] = &[
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\nboot\twaiting\t0\t2\t\t1\t\t\nend\t0\t0\n",
                3,
                Defect::BadFlag("the unknown-trial flag"),
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\nboot\tw\t0\t0\t\t1\t\t\nboot\tw\t0\t0\t\t1\t\t\nend\t0\t0\n",
                4,
                Defect::UnknownRecord,
            ),
            (b"", 1, Defect::Empty),
            (b"garbage", 1, Defect::NotSnapshot),
            (
                b"watchkeeper-status 1\nagent\t1\n",
                1,
                Defect::OtherVersion(Some(1)),
            ),
            (b"watchkeeper-status x\n", 1, Defect::OtherVersion(None)),
            (b"watchkeeper-status 6\n", 2, Defect::NoAgent),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\xff\trunning\nend\t0\t0\n",
                2,
                Defect::NotUtf8,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/\0c\trunning\nend\t0\t0\n",
                2,
                Defect::ControlByte,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t\\q\trunning\nend\t0\t0\n",
                2,
                Defect::BadEscape,
            ),
            (
                b"watchkeeper-status 6\nagent\t+1\t2\tb\t3\th\t0\t0\t/c\trunning\nend\t0\t0\n",
                2,
                Defect::BadNumber("the pid"),
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\nend\t0\t0",
                3,
                Defect::NoEnd,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\n",
                3,
                Defect::NoEnd,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\nend\t1\t0\n",
                3,
                Defect::WrongCount,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\nend\t0\t0\nx\n",
                4,
                Defect::AfterEnd,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\nbogus\nend\t0\t0\n",
                3,
                Defect::UnknownRecord,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t2\t0\t/c\trunning\nend\t0\t0\n",
                2,
                Defect::BadFlag("the hold flag"),
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\ncomponent\tn\t1\talive\t0\t0\t\t\t\t\t\t\tup\nend\t1\t0\n",
                3,
                Defect::PartialDaemon,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\ncomponent\tn\t1\talive\t0\t0\t\t7\t\t1\t2\t0\t\nend\t1\t0\n",
                3,
                Defect::PartialDaemon,
            ),
            (
                b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\ncomponent\tn\t1\talive\t0\t0\t\t\t\t2\t1\t0\t\nend\t1\t0\n",
                3,
                Defect::BadFlag("the ready flag"),
            ),
        ];
        for (bytes, line, defect) in cases {
            assert_eq!(
                parse(bytes),
                Err(ParseError {
                    line: *line,
                    defect: *defect
                }),
                "{:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert_eq!(
            parse(&vec![b'a'; MAX_STATUS_LEN + 1]).map_err(|e| e.defect),
            Err(Defect::TooLarge)
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        let good = b"watchkeeper-status 6\nagent\t1\t2\tb\t3\th\t0\t0\t/c\trunning\ncomponent\tn\t1\talive\t0\t0\tr\\x41\t7\t8\t1\t2000000\t1\tup\nend\t1\t0\n";
        for _ in 0..20_000 {
            let mut bytes = good.to_vec();
            for _ in 0..(seed % 4 + 1) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed >> 8) as usize % bytes.len();
                match seed % 3 {
                    0 => bytes[i] = (seed >> 32) as u8,
                    1 => bytes.truncate(i),
                    _ => bytes.insert(i, b"\t\n\\x\0\xff"[(seed >> 40) as usize % 6]),
                }
                if bytes.is_empty() {
                    break;
                }
            }
            let _ = parse(&bytes);
        }
    }
}
