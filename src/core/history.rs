//! The reset history and the reboot-loop guard: pure data and decisions, no I/O.
//!
//! One record per boot, newest last, at most [`HISTORY_LEN`]: when the boot started, how
//! it ended and why. Each boot the agent first records "running" for the new boot; a
//! forced reset overwrites that with the component and reason before feeding stops, and
//! `watchkeeper shutdown` overwrites it with "shutdown" when an operator takes the board
//! down. A record still "running" when the next boot starts ended in a reset nobody asked
//! for; a "shutdown" followed by a watchdog reset ended in a shutdown that hung. An agent
//! started again within a boot recorded as "shutdown" puts it back to "running": that
//! boot went on, so how it ends is still to be seen.
//!
//! The guard measures time across boots as the sum of the boots' uptimes (an unknown
//! uptime counts as zero, which errs towards holding). Wall-clock times are kept for
//! people only: on boards without an RTC they can be years off.
//!
//! With `[boot]`, each record also says how the boot's confirmation went (see
//! [`Confirm`]). A forced reset of a trial boot that was never confirmed does not count
//! towards the guard: the bootloader counts it, and falls back to the old slot by its own
//! rule, which a hold in the next boot must not undo.
//!
//! Boots that leave the window are not forgotten by the fleet's counters: how they ended is
//! added up in [`Dropped`], which `state` keeps in a file of its own (an older agent, after
//! an A/B fallback, still reads the history it knows), so that [`History::ends`] only ever
//! grows. `Dropped` says through which boot number it counts, so a crash between writing it
//! and writing the history never counts a boot twice, and a fresh history (the old one was
//! unusable) numbers on from it.
//!
//! The text formats are one tab-separated line per boot (or per count) under a versioned
//! header; each is written whole (see `state`) and parsed strictly, naming the line of any
//! defect. History format 2 added the three confirmation fields; format 1 is still read (as
//! "no `[boot]`").

use core::fmt::{self, Write as _};
use core::time::Duration;

use crate::limits::{BOOT_ID_LEN, HISTORY_LEN, MAX_NAME_LEN, MAX_REASON_LEN};

const HEADER: &str = "watchkeeper-history 2";
/// The format before the confirmation fields, still read.
const HEADER_1: &str = "watchkeeper-history 1";
/// Bytes of a confirmation's note (how its command ended).
pub const MAX_CONFIRM_NOTE: usize = 96;
/// Longest serialized record: fixed fields plus name, reason and note.
const LINE_MAX: usize = 200 + MAX_NAME_LEN + MAX_REASON_LEN + MAX_CONFIRM_NOTE;
/// Room for the whole serialized history.
pub(crate) const TEXT_MAX: usize = HEADER.len() + 1 + HISTORY_LEN * LINE_MAX;

/// How a boot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    /// The current boot, or one that ended without a word from the agent.
    Running,
    /// watchkeeper forced the reset.
    Forced,
    /// Reset that the agent did not ask for; `watchdog_fired` when the driver says the
    /// watchdog reset the board (the agent hung or was killed, or the kernel hung).
    Unrequested { watchdog_fired: bool },
    /// An operator shut the board down or rebooted it (`watchkeeper shutdown` ran);
    /// `watchdog_fired` when the shutdown hung and the watchdog ended it.
    Shutdown { watchdog_fired: bool },
}

impl End {
    /// The word for this end in the history file and in `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            End::Running => "running",
            End::Forced => "forced",
            End::Unrequested {
                watchdog_fired: true,
            } => "watchdog",
            End::Unrequested {
                watchdog_fired: false,
            } => "unrequested",
            End::Shutdown {
                watchdog_fired: false,
            } => "shutdown",
            End::Shutdown {
                watchdog_fired: true,
            } => "shutdown-hung",
        }
    }

    fn parse(word: &str) -> Option<End> {
        [
            End::Running,
            End::Forced,
            End::Unrequested {
                watchdog_fired: true,
            },
            End::Unrequested {
                watchdog_fired: false,
            },
            End::Shutdown {
                watchdog_fired: false,
            },
            End::Shutdown {
                watchdog_fired: true,
            },
        ]
        .into_iter()
        .find(|end| end.as_str() == word)
    }
}

/// How many boots ended each way (a boot still running counts nowhere).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ends {
    pub forced: u64,
    pub watchdog: u64,
    pub unrequested: u64,
    pub shutdown: u64,
    pub shutdown_hung: u64,
}

impl Ends {
    fn add(&mut self, end: End) {
        let count = match end {
            End::Running => return,
            End::Forced => &mut self.forced,
            End::Unrequested {
                watchdog_fired: true,
            } => &mut self.watchdog,
            End::Unrequested {
                watchdog_fired: false,
            } => &mut self.unrequested,
            End::Shutdown {
                watchdog_fired: false,
            } => &mut self.shutdown,
            End::Shutdown {
                watchdog_fired: true,
            } => &mut self.shutdown_hung,
        };
        *count = count.saturating_add(1);
    }

    /// Each count with the word of its end ([`End::as_str`]).
    pub fn by_word(&self) -> [(&'static str, u64); 5] {
        [
            ("forced", self.forced),
            ("watchdog", self.watchdog),
            ("unrequested", self.unrequested),
            ("shutdown", self.shutdown),
            ("shutdown-hung", self.shutdown_hung),
        ]
    }
}

/// The boots that left the history's window: how they ended, up to and including boot
/// number `through` (0: none left it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Dropped {
    pub through: u64,
    pub ends: Ends,
}

const DROPPED_HEADER: &str = "watchkeeper-dropped 1";
/// Room for the serialized [`Dropped`].
pub(crate) const DROPPED_TEXT_MAX: usize = 256;

impl Dropped {
    /// Serializes the counts: a header, then `WORD<TAB>COUNT` lines, `through` first.
    pub fn write_text(&self, out: &mut heapless::String<DROPPED_TEXT_MAX>) -> fmt::Result {
        out.clear();
        writeln!(out, "{DROPPED_HEADER}\nthrough\t{}", self.through)?;
        for (word, count) in self.ends.by_word() {
            writeln!(out, "{word}\t{count}")?;
        }
        Ok(())
    }

    /// Parses what `write_text` wrote: every line, in its order.
    pub fn parse(text: &str) -> Result<Dropped, ParseError> {
        let mut lines = text.lines();
        if lines.next() != Some(DROPPED_HEADER) {
            return Err(ParseError {
                line: 1,
                message: "missing header \"watchkeeper-dropped 1\"",
            });
        }
        let mut dropped = Dropped::default();
        let words = [
            "through",
            "forced",
            "watchdog",
            "unrequested",
            "shutdown",
            "shutdown-hung",
        ];
        for (i, word) in words.into_iter().enumerate() {
            let line = i + 2;
            let err = |message| ParseError { line, message };
            let (found, count) = lines
                .next()
                .ok_or(err("missing count"))?
                .split_once('\t')
                .ok_or(err("missing tab"))?;
            if found != word {
                return Err(err("unexpected word"));
            }
            let count: u64 = count.parse().map_err(|_| err("bad count"))?;
            *match word {
                "through" => &mut dropped.through,
                "forced" => &mut dropped.ends.forced,
                "watchdog" => &mut dropped.ends.watchdog,
                "unrequested" => &mut dropped.ends.unrequested,
                "shutdown" => &mut dropped.ends.shutdown,
                _ => &mut dropped.ends.shutdown_hung,
            } = count;
        }
        if lines.next().is_some() {
            return Err(ParseError {
                line: words.len() + 2,
                message: "more lines than the counts",
            });
        }
        Ok(dropped)
    }
}

/// How a boot's confirmation went (`[boot]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Confirm {
    /// No `[boot]` section in this boot (or a record of format 1).
    Unconfigured,
    /// Not a trial boot: nothing to confirm.
    NotTrial,
    /// A trial boot, waiting for health.
    Trial,
    /// Its confirm command was started.
    Confirming,
    Confirmed,
    /// Every confirm attempt failed.
    Failed,
}

impl Confirm {
    /// The word for it in the history file and in `status --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Confirm::Unconfigured => "-",
            Confirm::NotTrial => "not-trial",
            Confirm::Trial => "trial",
            Confirm::Confirming => "confirming",
            Confirm::Confirmed => "confirmed",
            Confirm::Failed => "failed",
        }
    }

    fn parse(word: &str) -> Option<Confirm> {
        [
            Confirm::Unconfigured,
            Confirm::NotTrial,
            Confirm::Trial,
            Confirm::Confirming,
            Confirm::Confirmed,
            Confirm::Failed,
        ]
        .into_iter()
        .find(|c| c.as_str() == word)
    }

    /// A trial boot that was not confirmed: the bootloader counts how it ended.
    pub fn unconfirmed_trial(self) -> bool {
        matches!(self, Confirm::Trial | Confirm::Confirming | Confirm::Failed)
    }
}

/// One boot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Boot {
    /// Counts boots on this board, from 1.
    pub number: u64,
    /// The kernel's random boot id (`/proc/sys/kernel/random/boot_id`).
    pub boot_id: heapless::String<BOOT_ID_LEN>,
    /// Wall-clock seconds when the agent first started in this boot (for people only).
    pub started_wall: i64,
    pub end: End,
    /// Uptime when the boot ended, when known.
    pub uptime_ms: Option<u64>,
    /// An operator cleared the reboot-loop hold during this boot.
    pub hold_cleared: bool,
    /// The component that forced the reset, if any.
    pub component: heapless::String<MAX_NAME_LEN>,
    pub reason: heapless::String<MAX_REASON_LEN>,
    pub confirm: Confirm,
    /// Uptime when `confirm` was last set, when known.
    pub confirm_uptime_ms: Option<u64>,
    /// How the confirm command ended (its last attempt), or why the boot is a trial.
    pub confirm_note: heapless::String<MAX_CONFIRM_NOTE>,
}

/// What [`History::start_boot`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootStart<'a> {
    /// The first boot on record.
    First,
    /// A new boot; this is how the previous one ended.
    After(&'a Boot),
    /// The agent restarted within the boot that has the latest record.
    Restarted,
}

/// The last [`HISTORY_LEN`] boots, oldest first, and the counts of those before them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct History {
    boots: heapless::Deque<Boot, HISTORY_LEN>,
    dropped: Dropped,
}

/// A defect in the history text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    pub line: usize,
    pub message: &'static str,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// Copies `text` into a bounded string, cutting at a char boundary and replacing the
/// characters the line format reserves.
pub(crate) fn bounded<const N: usize>(text: &str) -> heapless::String<N> {
    let mut out = heapless::String::new();
    for c in text.chars() {
        let c = if c == '\t' || c == '\n' || c == '\r' {
            ' '
        } else {
            c
        };
        if out.push(c).is_err() {
            break;
        }
    }
    out
}

impl History {
    pub fn boots(&self) -> impl DoubleEndedIterator<Item = &Boot> + ExactSizeIterator {
        self.boots.iter()
    }

    pub fn current(&self) -> Option<&Boot> {
        self.boots.back()
    }

    /// The counts of the boots that left the window.
    pub fn dropped(&self) -> Dropped {
        self.dropped
    }

    /// Takes the counts kept beside the history text (read separately, see the module doc).
    pub fn set_dropped(&mut self, dropped: Dropped) {
        self.dropped = dropped;
    }

    /// How every boot on this board ended: those that left the window and those in it that
    /// [`Dropped`] does not count yet. Never decreases as boots come and go.
    pub fn ends(&self) -> Ends {
        let mut ends = self.dropped.ends;
        for boot in self
            .boots
            .iter()
            .filter(|b| b.number > self.dropped.through)
        {
            ends.add(boot.end);
        }
        ends
    }

    /// Starts the record of a new boot, unless the agent merely restarted within the boot
    /// that has the latest record (which then is "running" again, even after a shutdown
    /// was recorded). Closes a previous record left "running" as unrequested, and one left
    /// "shutdown" as a shutdown that hung when the watchdog fired.
    pub fn start_boot(&mut self, boot_id: &str, wall: i64, watchdog_fired: bool) -> BootStart<'_> {
        if let Some(current) = self.boots.back_mut()
            && current.boot_id == boot_id
        {
            if matches!(current.end, End::Shutdown { .. }) {
                current.end = End::Running;
                current.uptime_ms = None;
                current.reason.clear();
            }
            return BootStart::Restarted;
        }
        let number = self
            .boots
            .back()
            .map_or(self.dropped.through + 1, |b| b.number + 1);
        if let Some(previous) = self.boots.back_mut() {
            match previous.end {
                End::Running => {
                    previous.end = End::Unrequested { watchdog_fired };
                    previous.reason = bounded(if watchdog_fired {
                        "hardware watchdog reset not requested by watchkeeper (agent hung or killed, or kernel hang)"
                    } else {
                        "reset not requested by watchkeeper (power loss, reboot command, or a crash the watchdog driver did not flag)"
                    });
                }
                End::Shutdown { .. } if watchdog_fired => {
                    previous.end = End::Shutdown {
                        watchdog_fired: true,
                    };
                    previous.reason = bounded(
                        "shutdown by an operator, hung: the hardware watchdog reset the board before it finished",
                    );
                }
                _ => {}
            }
        }
        if self.boots.is_full()
            && let Some(oldest) = self.boots.pop_front()
            && oldest.number > self.dropped.through
        {
            self.dropped.through = oldest.number;
            self.dropped.ends.add(oldest.end);
        }
        let boot = Boot {
            number,
            boot_id: bounded(boot_id),
            started_wall: wall,
            end: End::Running,
            uptime_ms: None,
            hold_cleared: false,
            component: heapless::String::new(),
            reason: heapless::String::new(),
            confirm: Confirm::Unconfigured,
            confirm_uptime_ms: None,
            confirm_note: heapless::String::new(),
        };
        // Cannot fail: a slot was freed above.
        let _ = self.boots.push_back(boot);
        let len = self.boots.len();
        match self.boots.iter().nth(len.wrapping_sub(2)) {
            Some(previous) => BootStart::After(previous),
            None => BootStart::First,
        }
    }

    /// Records that the agent is forcing a reset of the current boot.
    pub fn record_forced_reset(&mut self, component: &str, reason: &str, uptime: Duration) {
        if let Some(boot) = self.boots.back_mut() {
            boot.end = End::Forced;
            boot.uptime_ms = Some(u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX));
            boot.component = bounded(component);
            boot.reason = bounded(reason);
        }
    }

    /// Records that an operator is taking the board down (a reboot or a power-off), with
    /// the watchdog timeout left to bound it.
    pub fn record_shutdown(&mut self, uptime: Duration, bound: Duration) {
        if let Some(boot) = self.boots.back_mut() {
            boot.end = End::Shutdown {
                watchdog_fired: false,
            };
            boot.uptime_ms = Some(u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX));
            boot.component.clear();
            let mut reason = heapless::String::<MAX_REASON_LEN>::new();
            // Cannot overflow: the text is far shorter than a reason.
            let _ = write!(
                reason,
                "shutdown by an operator (the watchdog would end it after {} s)",
                bound.as_secs()
            );
            boot.reason = reason;
        }
    }

    /// Records where the current boot's confirmation stands, at `uptime`, with a note.
    pub fn record_confirm(&mut self, confirm: Confirm, uptime: Duration, note: &str) {
        if let Some(boot) = self.boots.back_mut() {
            boot.confirm = confirm;
            boot.confirm_uptime_ms = Some(u64::try_from(uptime.as_millis()).unwrap_or(u64::MAX));
            boot.confirm_note = bounded(note);
        }
    }

    /// Records that an operator cleared the hold during the current boot.
    pub fn record_hold_cleared(&mut self) {
        if let Some(boot) = self.boots.back_mut() {
            boot.hold_cleared = true;
        }
    }

    /// True when `max_resets` forced resets happened within `window` before the current
    /// boot and no operator has cleared the hold since.
    pub(crate) fn hold_needed(&self, max_resets: u32, window: Duration) -> bool {
        let mut boots = self.boots.iter().rev();
        let Some(current) = boots.next() else {
            return false;
        };
        if current.hold_cleared {
            return false;
        }
        let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
        let mut span_ms = 0u64;
        let mut forced = 0;
        for boot in boots {
            if boot.end == End::Forced && !boot.confirm.unconfirmed_trial() {
                forced += 1;
                if forced >= max_resets {
                    return true;
                }
            }
            span_ms = span_ms.saturating_add(boot.uptime_ms.unwrap_or(0));
            if span_ms >= window_ms || boot.hold_cleared {
                break;
            }
        }
        false
    }

    /// Serializes the whole history.
    pub fn write_text(&self, out: &mut heapless::String<TEXT_MAX>) -> fmt::Result {
        out.clear();
        writeln!(out, "{HEADER}")?;
        for b in &self.boots {
            let end = b.end.as_str();
            write!(
                out,
                "{}\t{}\t{}\t{}\t",
                b.number, b.boot_id, b.started_wall, end
            )?;
            match b.uptime_ms {
                Some(ms) => write!(out, "{ms}")?,
                None => out.push('-').map_err(|_| fmt::Error)?,
            }
            write!(
                out,
                "\t{}\t{}\t{}\t{}\t",
                u8::from(b.hold_cleared),
                b.component,
                b.reason,
                b.confirm.as_str()
            )?;
            match b.confirm_uptime_ms {
                Some(ms) => write!(out, "{ms}")?,
                None => out.push('-').map_err(|_| fmt::Error)?,
            }
            writeln!(out, "\t{}", b.confirm_note)?;
        }
        Ok(())
    }

    /// Parses what `write_text` wrote.
    pub fn parse(text: &str) -> Result<History, ParseError> {
        let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l));
        let with_confirm = match lines.next() {
            Some((_, HEADER)) => true,
            Some((_, HEADER_1)) => false,
            _ => {
                return Err(ParseError {
                    line: 1,
                    message: "missing header \"watchkeeper-history 2\"",
                });
            }
        };
        let mut history = History::default();
        for (line, text) in lines {
            let err = |message| ParseError { line, message };
            let mut fields = text.split('\t');
            let mut next = |what| fields.next().ok_or(err(what));
            let number = next("missing boot number")?
                .parse()
                .map_err(|_| err("bad boot number"))?;
            let boot_id = next("missing boot id")?;
            let started_wall = next("missing start time")?
                .parse()
                .map_err(|_| err("bad start time"))?;
            let end = End::parse(next("missing end")?).ok_or(err("unknown end"))?;
            let uptime_ms = match next("missing uptime")? {
                "-" => None,
                ms => Some(ms.parse().map_err(|_| err("bad uptime"))?),
            };
            let hold_cleared = match next("missing hold flag")? {
                "0" => false,
                "1" => true,
                _ => return Err(err("bad hold flag")),
            };
            let component = next("missing component")?;
            let reason = next("missing reason")?;
            let (confirm, confirm_uptime_ms, note) = if with_confirm {
                let confirm = Confirm::parse(next("missing confirmation")?)
                    .ok_or(err("unknown confirmation"))?;
                let at = match next("missing confirmation uptime")? {
                    "-" => None,
                    ms => Some(ms.parse().map_err(|_| err("bad confirmation uptime"))?),
                };
                (confirm, at, next("missing confirmation note")?)
            } else {
                (Confirm::Unconfigured, None, "")
            };
            if fields.next().is_some() {
                return Err(err("too many fields"));
            }
            if boot_id.len() > 36
                || component.len() > MAX_NAME_LEN
                || reason.len() > MAX_REASON_LEN
                || note.len() > MAX_CONFIRM_NOTE
            {
                return Err(err("field too long"));
            }
            if history.boots.is_full() {
                return Err(err("more records than the history holds"));
            }
            let _ = history.boots.push_back(Boot {
                number,
                boot_id: bounded(boot_id),
                started_wall,
                end,
                uptime_ms,
                hold_cleared,
                component: bounded(component),
                reason: bounded(reason),
                confirm,
                confirm_uptime_ms,
                confirm_note: bounded(note),
            });
        }
        Ok(history)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    fn forced_boots(uptimes_s: &[u64]) -> History {
        let mut h = History::default();
        for (i, up) in uptimes_s.iter().enumerate() {
            h.start_boot(&format!("boot-{i}"), 0, false);
            h.record_forced_reset("sensor", "dead", Duration::from_secs(*up));
        }
        h.start_boot("current", 0, false);
        h
    }

    #[test]
    fn a_restart_within_the_same_boot_keeps_the_record() {
        let mut h = History::default();
        assert_eq!(h.start_boot("a", 100, false), BootStart::First);
        assert_eq!(h.start_boot("a", 200, false), BootStart::Restarted);
        assert_eq!(h.boots().len(), 1);
        assert_eq!(h.current().unwrap().started_wall, 100);
    }

    #[test]
    fn an_unfinished_boot_is_attributed_as_unrequested() {
        let mut h = History::default();
        h.start_boot("a", 0, false);
        let BootStart::After(previous) = h.start_boot("b", 0, true) else {
            panic!("a new boot")
        };
        assert_eq!(
            previous.end,
            End::Unrequested {
                watchdog_fired: true
            }
        );
        assert!(previous.reason.contains("not requested"));
        h.record_forced_reset("net", "heartbeat silent", Duration::from_secs(90));
        let BootStart::After(previous) = h.start_boot("c", 0, false) else {
            panic!()
        };
        let previous = previous.clone();
        assert_eq!(previous.end, End::Forced);
        assert_eq!(previous.component, "net");
        assert_eq!(previous.uptime_ms, Some(90_000));
        assert_eq!(h.current().unwrap().number, 3);
    }

    #[test]
    fn a_shutdown_is_clean_unless_the_watchdog_ended_it() {
        let mut h = History::default();
        h.start_boot("a", 0, false);
        h.record_shutdown(Duration::from_secs(50), Duration::from_secs(120));
        let BootStart::After(previous) = h.start_boot("b", 0, false) else {
            panic!("a new boot")
        };
        assert_eq!(
            previous.end,
            End::Shutdown {
                watchdog_fired: false
            }
        );
        assert!(
            previous.reason.contains("after 120 s"),
            "{}",
            previous.reason
        );
        assert_eq!(previous.uptime_ms, Some(50_000));
        h.record_shutdown(Duration::from_secs(9), Duration::from_secs(30));
        let BootStart::After(previous) = h.start_boot("c", 0, true) else {
            panic!("a new boot")
        };
        assert_eq!(previous.end.as_str(), "shutdown-hung");
        assert!(previous.reason.contains("hung"), "{}", previous.reason);
        assert!(!h.hold_needed(1, HOUR), "a shutdown is no forced reset");
    }

    #[test]
    fn an_agent_started_again_after_a_shutdown_record_takes_it_back() {
        let mut h = History::default();
        h.start_boot("a", 0, false);
        h.record_shutdown(Duration::from_secs(5), Duration::from_secs(120));
        assert_eq!(h.start_boot("a", 0, false), BootStart::Restarted);
        let current = h.current().unwrap();
        assert_eq!((current.end, current.uptime_ms), (End::Running, None));
        assert!(current.reason.is_empty());
        let BootStart::After(previous) = h.start_boot("b", 0, true) else {
            panic!("a new boot")
        };
        assert_eq!(previous.end.as_str(), "watchdog");
    }

    #[test]
    fn guard_table() {
        // (uptimes of previous forced boots, max_resets, window, hold expected)
        let cases: &[(&[u64], u32, Duration, bool)] = &[
            (&[60, 60, 60], 3, HOUR, true),
            (&[60, 60], 3, HOUR, false),
            (&[4000, 60, 60], 3, HOUR, true), // the oldest counts: span before it is 120 s
            (&[60, 4000, 60], 3, HOUR, false),
            (&[60, 60, 60], 1, HOUR, true),
            (&[10, 10, 10, 10], 4, Duration::from_secs(25), false),
        ];
        for (uptimes, max, window, expected) in cases {
            let h = forced_boots(uptimes);
            assert_eq!(
                h.hold_needed(*max, *window),
                *expected,
                "{uptimes:?} max {max} window {window:?}"
            );
        }
    }

    #[test]
    fn unrequested_boots_in_between_count_as_zero_time() {
        let mut h = forced_boots(&[60, 60]);
        h.start_boot("crash", 0, true); // ended without a record
        assert!(h.hold_needed(2, HOUR));
    }

    #[test]
    fn an_operator_clear_stops_the_count() {
        let mut h = forced_boots(&[60, 60, 60]);
        h.record_hold_cleared();
        assert!(!h.hold_needed(3, HOUR));
        h.record_forced_reset("sensor", "dead", Duration::from_secs(60));
        h.start_boot("next", 0, false);
        // The cleared boot's own reset counts, those before the clear do not.
        assert!(!h.hold_needed(2, HOUR));
        assert!(h.hold_needed(1, HOUR));
    }

    #[test]
    fn text_round_trips_and_the_ring_keeps_the_newest() {
        let mut h = History::default();
        for i in 0..(HISTORY_LEN + 5) {
            h.start_boot(&format!("{i:036}"), 1_700_000_000 + i as i64, i % 2 == 0);
            if i % 3 == 0 {
                h.record_shutdown(Duration::from_secs(60), Duration::from_secs(120));
            }
        }
        h.record_forced_reset(
            "sensor-1",
            "heartbeat\tnot touched\nfor 10 s",
            Duration::from_millis(12_345),
        );
        let mut text = heapless::String::new();
        h.write_text(&mut text).unwrap();
        let mut parsed = History::parse(&text).unwrap();
        assert_eq!(
            parsed.dropped(),
            Dropped::default(),
            "kept in a file of its own"
        );
        parsed.set_dropped(h.dropped());
        assert_eq!(parsed, h);
        assert_eq!(parsed.boots().len(), HISTORY_LEN);
        assert_eq!(parsed.boots().next().unwrap().number, 6);
        assert_eq!(
            parsed.current().unwrap().reason,
            "heartbeat not touched for 10 s"
        );
    }

    #[test]
    fn defects_are_named_by_line() {
        let bad = "watchkeeper-history 2\n1\tid\t0\trunning\t-\t0\t\t\t-\t-\t\n2\tid\t0\texploded\t-\t0\t\t\t-\t-\t\n";
        assert_eq!(
            History::parse(bad),
            Err(ParseError {
                line: 3,
                message: "unknown end"
            })
        );
        assert_eq!(History::parse("").unwrap_err().line, 1);
        let truncated = "watchkeeper-history 2\n1\tid\t0\trun";
        assert_eq!(History::parse(truncated).unwrap_err().line, 2);
        let old_format = "watchkeeper-history 2\n1\tid\t0\trunning\t-\t0\t\t\n";
        assert_eq!(
            History::parse(old_format),
            Err(ParseError {
                line: 2,
                message: "missing confirmation"
            })
        );
    }

    #[test]
    fn format_1_is_read_as_unconfigured() {
        let v1 = "watchkeeper-history 1\n1\tid-a\t5\tforced\t9000\t0\tsensor\tdead\n";
        let h = History::parse(v1).unwrap();
        let boot = h.current().unwrap();
        assert_eq!(
            (boot.end, boot.confirm),
            (End::Forced, Confirm::Unconfigured)
        );
        let mut text = heapless::String::new();
        h.write_text(&mut text).unwrap();
        assert!(text.starts_with("watchkeeper-history 2\n"), "{text}");
        assert_eq!(History::parse(&text).unwrap(), h);
    }

    #[test]
    fn resets_of_unconfirmed_trial_boots_are_the_bootloaders_to_count() {
        let mut h = History::default();
        for i in 0..3 {
            h.start_boot(&format!("trial-{i}"), 0, false);
            h.record_confirm(Confirm::Trial, Duration::from_secs(1), "");
            h.record_forced_reset(
                "boot",
                "not confirmed by the deadline",
                Duration::from_secs(60),
            );
        }
        // The bootloader fell back to the old slot, which is no trial.
        h.start_boot("fallback", 0, false);
        assert!(
            !h.hold_needed(3, HOUR),
            "three failed trials are no reboot loop"
        );
        h.record_confirm(Confirm::NotTrial, Duration::from_secs(1), "");
        for i in 0..3 {
            h.record_forced_reset("sensor", "dead", Duration::from_secs(60));
            h.start_boot(&format!("loop-{i}"), 0, false);
            h.record_confirm(Confirm::Confirmed, Duration::from_secs(70), "exit status 0");
        }
        assert!(
            h.hold_needed(3, HOUR),
            "confirmed boots that reset are a loop"
        );
    }

    /// `boots` more boots, each ending by its number in turn: forced, unrequested, watchdog,
    /// shutdown (the last one still running).
    fn ending_in_turn(h: &mut History, boots: usize) {
        for _ in 0..boots {
            let n = h.current().map_or(1, |b| b.number + 1);
            h.start_boot(&format!("boot-{n}"), 0, n % 4 == 3);
            match n % 4 {
                1 => h.record_forced_reset("sensor", "dead", Duration::from_secs(60)),
                0 => h.record_shutdown(Duration::from_secs(60), Duration::from_secs(30)),
                _ => {}
            }
        }
    }

    #[test]
    fn the_counts_of_ends_only_grow_as_boots_leave_the_window() {
        let mut h = History::default();
        let mut last = Ends::default();
        for boot in 1..=(3 * HISTORY_LEN) {
            ending_in_turn(&mut h, 1);
            let ends = h.ends();
            let total: u64 = ends.by_word().iter().map(|(_, n)| n).sum();
            // Every boot but the one running has ended once.
            let running = u64::from(h.current().unwrap().end == End::Running);
            assert_eq!(total + running, boot as u64, "boot {boot}: {ends:?}");
            for ((word, now), (_, before)) in ends.by_word().iter().zip(last.by_word()) {
                assert!(
                    *now >= before,
                    "boot {boot}: {word} went from {before} to {now}"
                );
            }
            last = ends;
        }
        assert_eq!(h.dropped().through, (2 * HISTORY_LEN) as u64);
        // 48 boots: the 48th is recorded as shut down, so every one has ended.
        assert_eq!(
            (last.forced, last.unrequested, last.watchdog, last.shutdown),
            (12, 12, 12, 12)
        );
    }

    #[test]
    fn a_crash_between_the_two_files_counts_no_boot_twice() {
        let mut h = History::default();
        ending_in_turn(&mut h, HISTORY_LEN + 3);
        let ends = h.ends();
        // The counts were written, the history was not: the boots they count are still in
        // the window the history file holds.
        let mut stale = History::default();
        ending_in_turn(&mut stale, HISTORY_LEN);
        stale.set_dropped(h.dropped());
        let counted: u64 = stale.ends().by_word().iter().map(|(_, n)| n).sum();
        let dropped: u64 = h.dropped().ends.by_word().iter().map(|(_, n)| n).sum();
        let newer = stale
            .boots()
            .filter(|b| b.number > h.dropped().through && b.end != End::Running)
            .count();
        assert_eq!(counted, dropped + newer as u64);
        assert!(ends.forced >= stale.ends().forced);
    }

    #[test]
    fn a_fresh_history_numbers_on_from_the_dropped_boots() {
        let mut h = History::default();
        h.set_dropped(Dropped {
            through: 40,
            ends: Ends {
                forced: 3,
                ..Ends::default()
            },
        });
        h.start_boot("a", 0, false);
        assert_eq!(h.current().unwrap().number, 41);
        h.record_forced_reset("sensor", "dead", Duration::from_secs(5));
        assert_eq!(h.ends().forced, 4);
    }

    #[test]
    fn dropped_counts_round_trip_and_defects_name_their_line() {
        let dropped = Dropped {
            through: 17,
            ends: Ends {
                forced: 1,
                watchdog: 2,
                unrequested: 3,
                shutdown: 4,
                shutdown_hung: u64::MAX,
            },
        };
        let mut text = heapless::String::new();
        dropped.write_text(&mut text).unwrap();
        assert_eq!(Dropped::parse(&text), Ok(dropped));
        let line = |text: &str| Dropped::parse(text).unwrap_err().line;
        assert_eq!(line(""), 1);
        assert_eq!(line(&text.replace("watchdog\t2", "watchdog\tx")), 4);
        assert_eq!(line(&text.replace("forced", "forsed")), 3);
        assert_eq!(line(&text[..text.rfind("shutdown-hung").unwrap()]), 7);
        assert_eq!(line(&format!("{text}extra\t1\n")), 8);
    }
}
