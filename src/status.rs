//! `watchkeeper status`: what a technician (or a fleet collector, with `--json`) needs.
//!
//! Reads, never writes: the agent's status snapshot and the problem files in the run
//! directory, and the reset history in the state directory. Works when the config is
//! broken (the directories are salvaged from it) and when the agent is not running.
//! Ages are computed on the monotonic clock the snapshot was written with.

use core::fmt::Write as _;
use std::path::Path;

use crate::clock::{Clock, SystemClock};
use crate::history::{Boot, End};
use crate::rundir::{FED, PROBLEMS, STATUS};
use crate::state::State;

/// One component line of the snapshot.
struct ComponentLine<'a> {
    name: &'a str,
    position: &'a str,
    state: &'a str,
    since_ms: u64,
    repairs: &'a str,
    reason: &'a str,
}

struct Snapshot<'a> {
    pid: u32,
    led: &'a str,
    hold: bool,
    resetting: bool,
    config: &'a str,
    components: Vec<ComponentLine<'a>>,
}

fn parse_snapshot(text: &str) -> Option<Snapshot<'_>> {
    let mut lines = text.lines();
    if lines.next()? != "watchkeeper-status 1" {
        return None;
    }
    let agent: Vec<&str> = lines.next()?.split('\t').collect();
    let [_, pid, _, led, hold, resetting, config] = agent[..] else {
        return None;
    };
    let components = lines
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            let [_, name, position, state, since, repairs, reason] = f[..] else {
                return None;
            };
            Some(ComponentLine {
                name,
                position,
                state,
                since_ms: since.parse().ok()?,
                repairs,
                reason,
            })
        })
        .collect();
    Some(Snapshot {
        pid: pid.parse().ok()?,
        led,
        hold: hold == "1",
        resetting: resetting == "1",
        config,
        components,
    })
}

struct Problem {
    name: String,
    noticed_wall: i64,
    content: String,
}

fn problems(run_dir: &Path) -> Vec<Problem> {
    let Ok(entries) = std::fs::read_dir(run_dir.join(PROBLEMS)) else {
        return Vec::new();
    };
    let mut out: Vec<Problem> = entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_type().is_ok_and(|t| t.is_file())
                && !e.file_name().to_string_lossy().starts_with('.')
        })
        .map(|e| {
            let noticed_wall = e
                .metadata()
                .ok()
                .and_then(|m| m.modified().ok())
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |d| d.as_secs() as i64);
            let content = std::fs::read(e.path())
                .map(|bytes| {
                    String::from_utf8_lossy(&bytes[..bytes.len().min(512)])
                        .trim()
                        .to_owned()
                })
                .unwrap_or_default();
            Problem {
                name: e.file_name().to_string_lossy().into_owned(),
                noticed_wall,
                content,
            }
        })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

/// `YYYY-MM-DD HH:MM:SS UTC` from epoch seconds (civil-from-days, proleptic Gregorian).
pub fn utc(epoch: i64) -> String {
    let days = epoch.div_euclid(86_400);
    let secs = epoch.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn human(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{}.{}s", s, ms % 1000 / 100),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

fn end_text(boot: &Boot, current: bool) -> String {
    let uptime = boot
        .uptime_ms
        .map(|ms| format!(" after {} up", human(ms)))
        .unwrap_or_default();
    match boot.end {
        End::Running if current => "current boot".to_owned(),
        End::Running => "ended without a record".to_owned(),
        End::Forced => format!(
            "reset by watchkeeper{uptime}: {}: {}",
            boot.component, boot.reason
        ),
        End::Unrequested { .. } => boot.reason.to_string(),
    }
}

fn json_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Milliseconds since the agent last fed the watchdog (the `fed` file's mtime, wall clock).
fn fed_age_ms(run_dir: &Path) -> Option<u64> {
    let modified = std::fs::symlink_metadata(run_dir.join(FED))
        .ok()
        .filter(std::fs::Metadata::is_file)?
        .modified()
        .ok()?;
    let age = std::time::SystemTime::now()
        .duration_since(modified)
        .unwrap_or_default();
    Some(age.as_millis() as u64)
}

fn agent_running(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

/// Renders the status; `json` for machines. Never fails: what cannot be read is said.
pub fn render(run_dir: &Path, state_dir: &Path, json: bool) -> String {
    let now_ms = SystemClock.now().as_nanos() / 1_000_000;
    let snapshot_text = std::fs::read_to_string(run_dir.join(STATUS)).unwrap_or_default();
    let snapshot = parse_snapshot(&snapshot_text);
    let running = snapshot.as_ref().is_some_and(|s| agent_running(s.pid));
    let problems = problems(run_dir);
    let history = State::read_only(state_dir);
    let fed_age = fed_age_ms(run_dir);
    if json {
        return render_json(
            snapshot.as_ref(),
            running,
            fed_age,
            &problems,
            &history,
            now_ms,
        );
    }
    let mut out = String::new();
    match &snapshot {
        Some(s) if running => {
            let _ = writeln!(
                out,
                "watchkeeper: running (pid {}), config {}",
                s.pid, s.config
            );
            let _ = writeln!(out, "fault LED: {}", s.led);
            let _ = match fed_age {
                Some(ms) => writeln!(out, "watchdog: last fed {} ago", human(ms)),
                None => writeln!(out, "watchdog: no feed recorded in {}", run_dir.display()),
            };
            let _ = writeln!(
                out,
                "reboot-loop hold: {}",
                if s.hold {
                    "YES: forced resets are held back (clear with `watchkeeper clear-hold`)"
                } else {
                    "no"
                }
            );
            if s.resetting {
                let _ = writeln!(
                    out,
                    "RESETTING: the board is about to be reset (see the history below)"
                );
            }
            let _ = writeln!(
                out,
                "\n{:<20} {:>4}  {:<10} {:>8}  {:>7}  REASON",
                "COMPONENT", "LED", "STATE", "FOR", "REPAIRS"
            );
            for c in &s.components {
                let age = human(now_ms.saturating_sub(c.since_ms));
                let _ = writeln!(
                    out,
                    "{:<20} {:>4}  {:<10} {:>8}  {:>7}  {}",
                    c.name, c.position, c.state, age, c.repairs, c.reason
                );
            }
        }
        _ => {
            let _ = writeln!(
                out,
                "watchkeeper: NOT RUNNING (no live agent behind {})",
                run_dir.join(STATUS).display()
            );
        }
    }
    let _ = writeln!(out, "\nproblems in {}:", run_dir.join(PROBLEMS).display());
    if problems.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for p in &problems {
        let _ = writeln!(
            out,
            "  {}: {} (noticed {})",
            p.name,
            p.content,
            utc(p.noticed_wall)
        );
    }
    let _ = writeln!(
        out,
        "\nreset history in {} (newest first):",
        state_dir.display()
    );
    match &history {
        Ok(Ok(h)) => {
            let count = h.boots().len();
            for (i, b) in h.boots().rev().enumerate() {
                let cleared = if b.hold_cleared {
                    " [hold cleared by an operator]"
                } else {
                    ""
                };
                let _ = writeln!(
                    out,
                    "  boot {:<5} started {}: {}{cleared}",
                    b.number,
                    utc(b.started_wall),
                    end_text(b, i == 0)
                );
            }
            if count == 0 {
                let _ = writeln!(out, "  empty");
            }
        }
        Ok(Err(defect)) => {
            let _ = writeln!(out, "  unreadable: {defect}");
        }
        Err(e) => {
            let _ = writeln!(out, "  unreadable: {e}");
        }
    }
    out
}

fn render_json(
    snapshot: Option<&Snapshot<'_>>,
    running: bool,
    fed_age: Option<u64>,
    problems: &[Problem],
    history: &Result<Result<crate::history::History, String>, crate::state::StateError>,
    now_ms: u64,
) -> String {
    let mut out = String::from("{\"agent\":");
    match snapshot {
        Some(s) => {
            let _ = write!(out, "{{\"running\":{running},\"pid\":{},\"config\":", s.pid);
            json_string(&mut out, s.config);
            out.push_str(",\"led\":");
            json_string(&mut out, s.led);
            let _ = write!(out, ",\"hold\":{},\"resetting\":{}", s.hold, s.resetting);
            match fed_age {
                Some(ms) => {
                    let _ = write!(out, ",\"fed_age_ms\":{ms}}}");
                }
                None => out.push_str(",\"fed_age_ms\":null}"),
            }
        }
        None => out.push_str("{\"running\":false}"),
    }
    out.push_str(",\"components\":[");
    for (i, c) in snapshot
        .map(|s| s.components.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_string(&mut out, c.name);
        let _ = write!(out, ",\"position\":{},\"state\":", c.position);
        json_string(&mut out, c.state);
        let _ = write!(
            out,
            ",\"for_ms\":{},\"repair_attempts\":{},\"reason\":",
            now_ms.saturating_sub(c.since_ms),
            c.repairs
        );
        if c.reason == "-" {
            out.push_str("null")
        } else {
            json_string(&mut out, c.reason)
        }
        out.push('}');
    }
    out.push_str("],\"problems\":[");
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"name\":");
        json_string(&mut out, &p.name);
        let _ = write!(out, ",\"noticed_wall\":{},\"content\":", p.noticed_wall);
        json_string(&mut out, &p.content);
        out.push('}');
    }
    out.push_str("],\"boots\":");
    match history {
        Ok(Ok(h)) => {
            out.push('[');
            for (i, b) in h.boots().rev().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                let end = b.end.as_str();
                let _ = write!(out, "{{\"number\":{},\"boot_id\":", b.number);
                json_string(&mut out, &b.boot_id);
                let _ = write!(
                    out,
                    ",\"started_wall\":{},\"end\":\"{end}\",\"uptime_ms\":",
                    b.started_wall
                );
                match b.uptime_ms {
                    Some(ms) => {
                        let _ = write!(out, "{ms}");
                    }
                    None => out.push_str("null"),
                }
                let _ = write!(out, ",\"hold_cleared\":{},\"component\":", b.hold_cleared);
                json_string(&mut out, &b.component);
                out.push_str(",\"reason\":");
                json_string(&mut out, &b.reason);
                out.push('}');
            }
            out.push(']');
        }
        Ok(Err(defect)) => {
            out.push_str("{\"error\":");
            json_string(&mut out, defect);
            out.push('}');
        }
        Err(e) => {
            out.push_str("{\"error\":");
            json_string(&mut out, &e.to_string());
            out.push('}');
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }

    #[test]
    fn json_strings_are_escaped() {
        let mut out = String::new();
        json_string(&mut out, "a\"b\\c\nd");
        assert_eq!(out, r#""a\"b\\c\u000ad""#);
    }

    #[test]
    fn snapshot_lines_parse() {
        let text = "watchkeeper-status 1\nagent\t42\t1000\tcomponent 2\t0\t0\t/etc/wk.toml\ncomponent\tnet\t2\tdead\t500\t1\theartbeat silent\n";
        let s = parse_snapshot(text).unwrap();
        assert_eq!(s.pid, 42);
        assert_eq!(s.led, "component 2");
        assert_eq!(s.components.len(), 1);
        assert_eq!(s.components[0].reason, "heartbeat silent");
    }
}
