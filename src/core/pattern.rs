//! Fault LED blink patterns: what the LED says, and when its level changes.
//!
//! Pure: a pattern and the time since it started give the LED level and the time of the
//! next edge, so the agent can sleep until exactly that edge. The patterns are one table
//! ([`TABLE`]), which the README carries as a table (a test renders it and keeps the two equal).
//!
//! Invariant: every pattern except "reset imminent" has an off phase, so a frozen LED (stuck
//! on or stuck off) always means the agent is gone.

use core::fmt;
use core::time::Duration;

/// What the LED shows, most urgent first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pattern {
    /// The board is about to be reset on purpose; the reason has been recorded.
    ResetImminent,
    /// Too many forced resets in the window: resets are held back.
    Hold,
    /// The component at this 1-based position is dead or being repaired.
    Component(u16),
    /// The configuration, a device, the run or the state directory cannot be used (see
    /// the log).
    Fault,
    /// Everything supervised is alive, and this trial boot awaits its confirmation.
    Unconfirmed,
    /// Everything supervised is alive.
    Healthy,
}

/// Timing of one pattern: `blinks` times (on, off), then a pause, repeated.
/// `on_ms == 0` with `pause_ms == 0` never happens; `solid` means always on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Timing {
    pub on_ms: u32,
    pub off_ms: u32,
    pub pause_ms: u32,
    pub solid: bool,
}

/// One row of the LED table, as a technician reads it.
pub(crate) struct Row {
    pub name: &'static str,
    // The two columns only the README shows; the README test renders them.
    #[cfg_attr(not(test), allow(dead_code))]
    pub looks_like: &'static str,
    #[cfg_attr(not(test), allow(dead_code))]
    pub meaning: &'static str,
    pub timing: Timing,
}

const fn timing(on_ms: u32, off_ms: u32, pause_ms: u32) -> Timing {
    Timing {
        on_ms,
        off_ms,
        pause_ms,
        solid: false,
    }
}

/// The LED table. Order is priority: the first row that applies is shown.
pub(crate) const TABLE: [Row; 6] = [
    Row {
        name: "reset imminent",
        looks_like: "solid on",
        meaning: "a component stayed dead, or a trial boot was not healthy by its confirm deadline; the reason is recorded and the board resets within the hardware timeout",
        timing: Timing {
            on_ms: 0,
            off_ms: 0,
            pause_ms: 0,
            solid: true,
        },
    },
    Row {
        name: "hold",
        looks_like: "slow even blink: 1 s on, 1 s off",
        meaning: "reboot-loop guard: too many forced resets in the window; resets are held back, repairs go on",
        timing: timing(1000, 0, 1000),
    },
    Row {
        name: "component k",
        looks_like: "k blinks (0.2 s on, 0.3 s off), then 1.5 s dark, repeated",
        meaning: "the k-th component (1-based, config order, then hearts) is dead or being repaired",
        timing: timing(200, 300, 1500),
    },
    Row {
        name: "fault",
        looks_like: "fast flicker: 50 ms on, 50 ms off",
        meaning: "config, device, run directory or state directory error, or a boot that could not be confirmed: see the log; supervision and feeding go on (with the last good config)",
        timing: timing(50, 0, 50),
    },
    Row {
        name: "unconfirmed",
        looks_like: "two 100 ms blips 0.2 s apart every 3.2 s",
        meaning: "all components alive; this trial boot of an update is not confirmed yet (see `[boot]`)",
        timing: timing(100, 200, 2600),
    },
    Row {
        name: "healthy",
        looks_like: "100 ms blip every 3 s",
        meaning: "all components alive; a dark or frozen LED means the agent itself is gone",
        timing: timing(100, 0, 2900),
    },
];

impl Pattern {
    fn row(self) -> &'static Row {
        match self {
            Pattern::ResetImminent => &TABLE[0],
            Pattern::Hold => &TABLE[1],
            Pattern::Component(_) => &TABLE[2],
            Pattern::Fault => &TABLE[3],
            Pattern::Unconfirmed => &TABLE[4],
            Pattern::Healthy => &TABLE[5],
        }
    }

    fn blinks(self) -> u64 {
        match self {
            Pattern::Component(k) => u64::from(k.max(1)),
            Pattern::Unconfirmed => 2,
            _ => 1,
        }
    }

    /// LED level `elapsed` after the pattern started, and how long that level lasts.
    /// `None` for the duration means the level never changes.
    pub(crate) fn level_at(self, elapsed: Duration) -> (bool, Option<Duration>) {
        let t = self.row().timing;
        if t.solid {
            return (true, None);
        }
        let (on, off, pause) = (
            u64::from(t.on_ms),
            u64::from(t.off_ms),
            u64::from(t.pause_ms),
        );
        let blinks = self.blinks();
        let cycle_ms = blinks * (on + off) + pause;
        let elapsed_ms = u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX);
        let in_cycle = elapsed_ms % cycle_ms;
        let sub_ms = u64::from(elapsed.subsec_nanos() % 1_000_000);
        let (level, edge_ms) = if in_cycle < blinks * (on + off) {
            let in_blink = in_cycle % (on + off);
            let blink_start = in_cycle - in_blink;
            if in_blink < on {
                (true, blink_start + on)
            } else {
                (false, blink_start + on + off)
            }
        } else {
            (false, cycle_ms)
        };
        let remaining = Duration::from_millis(edge_ms - in_cycle) - Duration::from_nanos(sub_ms);
        (level, Some(remaining))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Component(k) => write!(f, "component {k}"),
            other => f.write_str(other.row().name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::fmt::Write as _;

    /// The LED table as markdown, exactly as the README carries it.
    fn markdown_table() -> heapless::String<1024> {
        let mut out = heapless::String::new();
        let _ = writeln!(out, "| pattern | looks like | meaning |");
        let _ = writeln!(out, "|---|---|---|");
        for row in &TABLE {
            let _ = writeln!(
                out,
                "| {} | {} | {} |",
                row.name, row.looks_like, row.meaning
            );
        }
        out
    }

    fn ms(v: u64) -> Duration {
        Duration::from_millis(v)
    }

    #[test]
    fn healthy_is_a_short_blip_every_three_seconds() {
        assert_eq!(Pattern::Healthy.level_at(ms(0)), (true, Some(ms(100))));
        assert_eq!(Pattern::Healthy.level_at(ms(100)), (false, Some(ms(2900))));
        assert_eq!(Pattern::Healthy.level_at(ms(3050)), (true, Some(ms(50))));
    }

    #[test]
    fn component_code_blinks_k_times_then_pauses() {
        let p = Pattern::Component(3);
        let mut ons = 0;
        let mut t = ms(0);
        let mut last = false;
        // Walk one 3-blink cycle (3 * 500 + 1500 = 3000 ms) edge by edge.
        while t < ms(3000) {
            let (level, next) = p.level_at(t);
            if level && !last {
                ons += 1;
            }
            last = level;
            t += next.unwrap();
        }
        assert_eq!(ons, 3);
        assert_eq!(t, ms(3000));
        assert_eq!(p.level_at(ms(1600)), (false, Some(ms(1400))));
    }

    #[test]
    fn reset_imminent_is_solid_and_everything_else_goes_dark() {
        assert_eq!(Pattern::ResetImminent.level_at(ms(12345)), (true, None));
        for p in [
            Pattern::Hold,
            Pattern::Component(1),
            Pattern::Fault,
            Pattern::Unconfirmed,
            Pattern::Healthy,
        ] {
            let mut saw_off = false;
            let mut t = ms(0);
            for _ in 0..10 {
                let (level, next) = p.level_at(t);
                saw_off |= !level;
                t += next.unwrap();
            }
            assert!(saw_off, "{p} must have a dark phase");
        }
    }

    #[test]
    fn edges_are_exact_at_sub_millisecond_offsets() {
        let (level, next) = Pattern::Fault.level_at(Duration::from_micros(49_500));
        assert!(level);
        assert_eq!(next, Some(Duration::from_micros(500)));
    }

    #[test]
    fn readme_carries_the_same_table() {
        let readme = include_str!("../../README.md");
        assert!(
            readme.contains(markdown_table().as_str()),
            "README.md must contain the LED table exactly as pattern::markdown_table renders it:\n{}",
            markdown_table()
        );
    }
}
