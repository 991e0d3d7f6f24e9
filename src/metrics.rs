//! The fleet's metrics: the text that node_exporter's textfile collector serves, in the
//! Prometheus text exposition format (version 0.0.4). Pure: the writer and its escaping,
//! no I/O, no clock.
//!
//! Every family has its `# HELP` and `# TYPE` lines and its samples together, in a fixed
//! order; no sample carries a timestamp (the collector refuses them). Label values are
//! escaped as the format requires ([`LabelValue`]): reasons, paths and driver identities
//! come from outside and may hold anything.
//!
//! Times are Unix seconds, so a reader computes ages against its own clock (`time() - x`)
//! and the file only changes when something in it does: a seconds-in-state gauge would
//! have to be rewritten every second, on flash, for nothing.
//!
//! Invariants: the writer allocates nothing; the text it writes for `n` components is at
//! most [`capacity`]`(n)` bytes, so a buffer of that size never cuts it.

use core::fmt;
use core::time::Duration;

use crate::core::history::Ends;
use crate::core::supervisor::{Counts, State};
use crate::limits::{MAX_NAME_LEN, MAX_PATH_LEN, MAX_REASON_LEN};

/// The component states, as the state set `watchkeeper_component_state` lists them.
const STATES: [State; 4] = [State::Starting, State::Alive, State::Dead, State::Repairing];
/// The boot confirmation's phases ([`crate::core::boot::Phase::word`]).
const PHASES: [&str; 7] = [
    "checking",
    "not-trial",
    "waiting",
    "confirming",
    "retrying",
    "confirmed",
    "failed",
];
/// Most bytes one component adds: its line in each family, with a name of
/// [`MAX_NAME_LEN`] bytes and the longest numbers.
const PER_COMPONENT: usize = 1400;
/// Most bytes of everything but the components: the HELP and TYPE lines, the board's
/// samples, and the labels from outside at their longest, every byte escaped.
const FIXED: usize = 8 * 1024 + 2 * (MAX_REASON_LEN + MAX_PATH_LEN + 2 * MAX_NAME_LEN);

/// Bytes the text for `components` components can take.
pub const fn capacity(components: usize) -> usize {
    FIXED + components * PER_COMPONENT
}

/// One component, as the metrics show it.
#[derive(Clone, Copy, Debug)]
pub struct Component<'a> {
    pub name: &'a str,
    pub state: State,
    /// Unix seconds (with milliseconds) when it entered its state.
    pub since: Seconds,
    pub counts: Counts,
}

/// How the newest boot that ended, ended.
#[derive(Clone, Copy, Debug)]
pub struct LastReset<'a> {
    pub boot: u64,
    pub end: &'a str,
    pub component: &'a str,
    pub reason: &'a str,
}

/// The watchdog device in use.
#[derive(Clone, Copy, Debug)]
pub struct Device<'a> {
    pub path: &'a str,
    pub identity: &'a str,
}

/// Everything but the components.
#[derive(Clone, Copy, Debug)]
pub struct Board<'a> {
    pub version: &'a str,
    pub revision: &'a str,
    /// Unix seconds when this agent started.
    pub started: i64,
    /// This boot's number in the reset history, if it is recorded.
    pub boot: Option<u64>,
    /// How every boot on record ended (see [`crate::core::history::History::ends`]).
    pub ends: Ends,
    pub last_reset: Option<LastReset<'a>>,
    pub hold: bool,
    pub resetting: bool,
    /// `None` when no device is open.
    pub watchdog: Option<Device<'a>>,
    pub watchdog_timeout: Duration,
    pub feed_lateness_max: Duration,
    /// The boot confirmation's phase word, with `[boot]`.
    pub boot_phase: Option<&'a str>,
}

/// Seconds with millisecond precision (held as milliseconds), written as a decimal
/// (`12.345`, `-0.500`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Seconds(pub i128);

impl Seconds {
    /// From nanoseconds.
    pub fn from_nanos(nanos: i128) -> Seconds {
        Seconds(nanos.div_euclid(1_000_000))
    }

    fn of(d: Duration) -> Seconds {
        Seconds(i128::try_from(d.as_millis()).unwrap_or(i128::MAX))
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let ms = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:03}", ms / 1000, ms % 1000)
    }
}

/// A label value, escaped as the exposition format says: backslash, double quote and line
/// feed, each behind a backslash.
pub struct LabelValue<'a>(pub &'a str);

impl fmt::Display for LabelValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut plain = 0;
        for (i, c) in self.0.char_indices() {
            let escaped = match c {
                '\\' => "\\\\",
                '"' => "\\\"",
                '\n' => "\\n",
                _ => continue,
            };
            f.write_str(&self.0[plain..i])?;
            f.write_str(escaped)?;
            plain = i + 1;
        }
        f.write_str(&self.0[plain..])
    }
}

fn family(out: &mut impl fmt::Write, name: &str, kind: &str, help: &str) -> fmt::Result {
    writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}")
}

fn gauge(
    out: &mut impl fmt::Write,
    name: &str,
    help: &str,
    value: impl fmt::Display,
) -> fmt::Result {
    family(out, name, "gauge", help)?;
    writeln!(out, "{name} {value}")
}

/// Writes the metrics: the board's, then each family over `components` (cloned once per
/// family, so it should be cheap to walk).
pub fn write<'c, I>(out: &mut impl fmt::Write, board: &Board<'_>, components: I) -> fmt::Result
where
    I: Iterator<Item = Component<'c>> + Clone,
{
    family(
        out,
        "watchkeeper_build_info",
        "gauge",
        "The agent's version and git revision, as labels; always 1.",
    )?;
    writeln!(
        out,
        "watchkeeper_build_info{{version=\"{}\",revision=\"{}\"}} 1",
        LabelValue(board.version),
        LabelValue(board.revision)
    )?;
    gauge(
        out,
        "watchkeeper_start_time_seconds",
        "Unix time when this agent started.",
        board.started,
    )?;
    if let Some(boot) = board.boot {
        gauge(
            out,
            "watchkeeper_boot_number",
            "This boot's number in the reset history (counts the board's boots from 1).",
            boot,
        )?;
    }
    family(
        out,
        "watchkeeper_boots_ended_total",
        "counter",
        "Boots of this board that ended, by how: forced (watchkeeper reset the board), watchdog (a hardware watchdog reset watchkeeper did not ask for), unrequested (power loss, reboot command, crash), shutdown (by an operator), shutdown-hung (the watchdog ended a shutdown). Kept across boots.",
    )?;
    for (end, count) in board.ends.by_word() {
        writeln!(
            out,
            "watchkeeper_boots_ended_total{{end=\"{end}\"}} {count}"
        )?;
    }
    if let Some(last) = &board.last_reset {
        family(
            out,
            "watchkeeper_last_reset_info",
            "gauge",
            "How the newest boot that ended, ended: its number, end, the component blamed and the reason; always 1.",
        )?;
        writeln!(
            out,
            "watchkeeper_last_reset_info{{boot=\"{}\",end=\"{}\",component=\"{}\",reason=\"{}\"}} 1",
            last.boot,
            LabelValue(last.end),
            LabelValue(last.component),
            LabelValue(last.reason)
        )?;
    }
    gauge(
        out,
        "watchkeeper_hold_active",
        "1 while the reboot-loop guard holds forced resets back.",
        u8::from(board.hold),
    )?;
    gauge(
        out,
        "watchkeeper_reset_pending",
        "1 once watchkeeper has decided to reset the board and stopped feeding.",
        u8::from(board.resetting),
    )?;
    if let Some(device) = &board.watchdog {
        family(
            out,
            "watchkeeper_watchdog_info",
            "gauge",
            "The watchdog device fed and its driver's identity; absent when none is open; always 1.",
        )?;
        writeln!(
            out,
            "watchkeeper_watchdog_info{{device=\"{}\",identity=\"{}\"}} 1",
            LabelValue(device.path),
            LabelValue(device.identity)
        )?;
    }
    gauge(
        out,
        "watchkeeper_watchdog_timeout_seconds",
        "The hardware watchdog's timeout: the board resets this long after the last feed.",
        board.watchdog_timeout.as_secs(),
    )?;
    gauge(
        out,
        "watchkeeper_feed_lateness_max_seconds",
        "The latest any feed came after it was due, since this agent started.",
        Seconds::of(board.feed_lateness_max),
    )?;
    if let Some(phase) = board.boot_phase {
        family(
            out,
            "watchkeeper_boot_confirmation",
            "gauge",
            "Where this boot's confirmation ([boot]) stands: 1 for the current phase, 0 for the others.",
        )?;
        for p in PHASES {
            writeln!(
                out,
                "watchkeeper_boot_confirmation{{phase=\"{p}\"}} {}",
                u8::from(p == phase)
            )?;
        }
    }
    write_components(out, components)
}

/// A per-component counter family: its name, its help, and which count it shows.
type Counter = (&'static str, &'static str, fn(&Counts) -> u64);

/// Component names are written as they are: `[A-Za-z0-9._-]` ([`crate::core::name`]) is
/// safe in a label value.
fn write_components<'c, I>(out: &mut impl fmt::Write, components: I) -> fmt::Result
where
    I: Iterator<Item = Component<'c>> + Clone,
{
    family(
        out,
        "watchkeeper_component_up",
        "gauge",
        "1 while the component is alive, 0 while it starts, is dead or is being repaired.",
    )?;
    for c in components.clone() {
        writeln!(
            out,
            "watchkeeper_component_up{{component=\"{}\"}} {}",
            c.name,
            u8::from(c.state == State::Alive)
        )?;
    }
    family(
        out,
        "watchkeeper_component_state",
        "gauge",
        "The component's state: 1 for the current one, 0 for the others.",
    )?;
    for c in components.clone() {
        for state in STATES {
            writeln!(
                out,
                "watchkeeper_component_state{{component=\"{}\",state=\"{state}\"}} {}",
                c.name,
                u8::from(c.state == state)
            )?;
        }
    }
    family(
        out,
        "watchkeeper_component_state_since_seconds",
        "gauge",
        "Unix time when the component entered its state (its last beat while alive).",
    )?;
    for c in components.clone() {
        writeln!(
            out,
            "watchkeeper_component_state_since_seconds{{component=\"{}\"}} {}",
            c.name, c.since
        )?;
    }
    let counters: [Counter; 3] = [
        (
            "watchkeeper_component_deaths_total",
            "Deaths of the component since this agent started.",
            |c| c.deaths,
        ),
        (
            "watchkeeper_component_repairs_total",
            "Repair attempts started for the component since this agent started.",
            |c| c.repairs,
        ),
        (
            "watchkeeper_component_repair_failures_total",
            "Repair attempts after which the component was still dead when the next could start, since this agent started.",
            |c| c.repair_failures,
        ),
    ];
    for (name, help, count) in counters {
        family(out, name, "counter", help)?;
        for c in components.clone() {
            writeln!(
                out,
                "{name}{{component=\"{}\"}} {}",
                c.name,
                count(&c.counts)
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn board<'a>() -> Board<'a> {
        Board {
            version: "0.1.0",
            revision: "abc123",
            started: 1_700_000_000,
            boot: Some(7),
            ends: Ends {
                forced: 2,
                watchdog: 1,
                ..Ends::default()
            },
            last_reset: Some(LastReset {
                boot: 6,
                end: "forced",
                component: "uplink",
                reason: "heartbeat /run/up\"link\\x\nnot touched",
            }),
            hold: false,
            resetting: false,
            watchdog: Some(Device {
                path: "/dev/watchdog",
                identity: "i6300ESB timer",
            }),
            watchdog_timeout: Duration::from_secs(8),
            feed_lateness_max: Duration::from_millis(1234),
            boot_phase: Some("confirmed"),
        }
    }

    fn text(board: &Board<'_>, components: &[Component<'_>]) -> String {
        let mut out = String::new();
        write(&mut out, board, components.iter().copied()).unwrap();
        out
    }

    #[test]
    fn label_values_are_escaped_and_seconds_keep_their_milliseconds() {
        let out = text(&board(), &[]);
        assert!(
            out.contains(r#"reason="heartbeat /run/up\"link\\x\nnot touched"} 1"#),
            "{out}"
        );
        assert!(
            out.contains("watchkeeper_feed_lateness_max_seconds 1.234\n"),
            "{out}"
        );
        assert_eq!(Seconds(-1500).to_string(), "-1.500");
        assert_eq!(Seconds::from_nanos(-1).to_string(), "-0.001");
        assert_eq!(Seconds::from_nanos(2_000_999_999).to_string(), "2.000");
    }

    #[test]
    fn every_family_has_help_and_type_before_its_samples() {
        let c = Component {
            name: "uplink",
            state: State::Dead,
            since: Seconds(1_700_000_100_500),
            counts: Counts {
                deaths: 3,
                repairs: 4,
                repair_failures: 2,
            },
        };
        let out = text(&board(), &[c]);
        let mut typed: Vec<&str> = Vec::new();
        for line in out.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(!typed.contains(&name), "{name} typed twice");
                typed.push(name);
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(typed.last(), Some(&name), "{line}: outside its family");
            }
        }
        for sample in [
            "watchkeeper_component_up{component=\"uplink\"} 0",
            "watchkeeper_component_state{component=\"uplink\",state=\"dead\"} 1",
            "watchkeeper_component_state{component=\"uplink\",state=\"alive\"} 0",
            "watchkeeper_component_state_since_seconds{component=\"uplink\"} 1700000100.500",
            "watchkeeper_component_deaths_total{component=\"uplink\"} 3",
            "watchkeeper_component_repairs_total{component=\"uplink\"} 4",
            "watchkeeper_component_repair_failures_total{component=\"uplink\"} 2",
            "watchkeeper_boots_ended_total{end=\"forced\"} 2",
            "watchkeeper_boots_ended_total{end=\"shutdown-hung\"} 0",
            "watchkeeper_boot_confirmation{phase=\"confirmed\"} 1",
            "watchkeeper_boot_number 7",
        ] {
            assert!(out.lines().any(|l| l == sample), "no {sample:?} in\n{out}");
        }
    }

    #[test]
    fn the_longest_text_fits_its_capacity() {
        let name = "n".repeat(MAX_NAME_LEN);
        let reason = "\"".repeat(MAX_REASON_LEN);
        let path = "\\".repeat(MAX_PATH_LEN);
        let identity = "\n".repeat(MAX_NAME_LEN);
        let mut b = board();
        b.last_reset = Some(LastReset {
            boot: u64::MAX,
            end: "shutdown-hung",
            component: &name,
            reason: &reason,
        });
        b.watchdog = Some(Device {
            path: &path,
            identity: &identity,
        });
        b.started = i64::MIN;
        b.boot = Some(u64::MAX);
        b.feed_lateness_max = Duration::MAX;
        b.watchdog_timeout = Duration::MAX;
        b.ends = Ends {
            forced: u64::MAX,
            watchdog: u64::MAX,
            unrequested: u64::MAX,
            shutdown: u64::MAX,
            shutdown_hung: u64::MAX,
        };
        let worst = Component {
            name: &name,
            state: State::Repairing,
            since: Seconds(-(i64::MAX as i128) * 1000),
            counts: Counts {
                deaths: u64::MAX,
                repairs: u64::MAX,
                repair_failures: u64::MAX,
            },
        };
        let out = text(&b, &[worst; 3]);
        assert!(out.len() <= capacity(3), "{} > {}", out.len(), capacity(3));
        let one = text(&b, &[worst]).len() - text(&b, &[]).len();
        assert!(one <= PER_COMPONENT, "{one} bytes per component");
        assert!(text(&b, &[]).len() <= FIXED);
    }
}
