//! The supervision core driven through simulated time: table-driven cases and randomized
//! properties over thousands of seeds. No sleeping, no files: stamps are made up.

use std::time::Duration;

use watchkeeper::core::pattern::Pattern;
use watchkeeper::core::supervisor::{
    Action, Cause, Counts, FALLBACK_TIMEOUTS, Look, Observation, Policy, Process,
    REPAIR_KILL_GRACE, RepairPolicy, Settings, Stamp, Supervisor, Withheld,
};
use watchkeeper::core::time::Instant;

const SEC: Duration = Duration::from_secs(1);

fn settings() -> Settings {
    Settings {
        feed_interval: 2 * SEC,
        check_interval: SEC,
        hardware_timeout: 10 * SEC,
    }
}

fn policy(timeout: u64, reset_after: u64) -> Policy {
    Policy {
        timeout: SEC * timeout as u32,
        grace: 5 * SEC,
        reset_after: SEC * reset_after as u32,
        critical: true,
        repair: None,
        awaits_ready: false,
    }
}

fn repair(max_attempts: u32) -> RepairPolicy {
    RepairPolicy {
        timeout: 10 * SEC,
        backoff_initial: 4 * SEC,
        backoff_max: 60 * SEC,
        max_attempts,
    }
}

/// Wall clock minus monotonic clock in the simulated world, in nanoseconds (a board
/// booted in November 2023).
const WALL0: i64 = 1_700_000_000 * 1_000_000_000;

/// A look at `now` by a shell whose wall clock never steps.
fn look(now: Instant) -> Look {
    Look {
        at: now,
        wall_offset: WALL0,
        steps: 0,
    }
}

/// The stamp after `beats` touches, the last at monotonic instant `at`.
fn stamp_at(beats: u64, at: Instant) -> Stamp {
    let wall = WALL0 + at.as_nanos() as i64;
    Stamp {
        mtime: (beats as i64, 0),
        ctime: (wall / 1_000_000_000, wall % 1_000_000_000),
        ..Stamp::default()
    }
}

/// The stamp after `beats` touches whose times say nothing (dated by the window alone).
fn stamp(beats: u64) -> Stamp {
    Stamp {
        mtime: (beats as i64, 0),
        ..Stamp::default()
    }
}

/// A simulated component: its heartbeat is touched at each instant in `beats`.
struct Sim {
    beats: Vec<Instant>,
    process: Process,
}

impl Sim {
    fn every(period: Duration, from: Instant, until: Instant) -> Sim {
        let mut beats = Vec::new();
        let mut t = from;
        while t <= until {
            beats.push(t);
            t = t.saturating_add(period);
        }
        Sim {
            beats,
            process: Process::Unknown,
        }
    }

    fn observe_at(&self, now: Instant) -> Observation {
        let count = self.beats.partition_point(|b| *b <= now);
        Observation {
            heartbeat: count
                .checked_sub(1)
                .map(|last| stamp_at(count as u64, self.beats[last])),
            process: self.process,
            poll_process: false,
        }
    }
}

/// Runs the loop the way the shell does: pass at each deadline, until `end`.
/// Returns every action with the instant it was decided.
fn run(sup: &mut Supervisor, sims: &[Sim], from: Instant, end: Instant) -> Vec<(Instant, Action)> {
    run_boot(sup, sims, from, end, |_| None)
}

/// Drives `sup` from `from` to `end`, each tick at its own next deadline; the actions, with
/// their instants. Simulated repairs exit at once without fixing anything; each confirm
/// attempt ends as `outcome(attempt)` says, at once: `Some(ok)`, or `None` for one that
/// hangs (until signalled: then it exits, failed).
fn run_boot(
    sup: &mut Supervisor,
    sims: &[Sim],
    from: Instant,
    end: Instant,
    outcome: impl Fn(u32) -> Option<bool>,
) -> Vec<(Instant, Action)> {
    let mut log = Vec::new();
    let mut now = from;
    while now <= end {
        for (i, sim) in sims.iter().enumerate() {
            if sup.look_due(i, now) {
                sup.observe(i, look(now), sim.observe_at(now));
            }
        }
        let (mut repaired, mut confirms) = (Vec::new(), Vec::new());
        sup.tick(now, |a| {
            match a {
                Action::StartRepair { component, .. } => repaired.push(component),
                Action::Boot(BootAction::StartConfirm { attempt }) => {
                    if let Some(ok) = outcome(attempt) {
                        confirms.push(ok);
                    }
                }
                Action::Boot(BootAction::SignalConfirm { kill: true }) => confirms.push(false),
                _ => {}
            }
            log.push((now, a));
        });
        for component in repaired {
            sup.repair_exited(component, now);
        }
        for ok in confirms {
            sup.confirm_exited(ok);
        }
        let next = sup.next_deadline();
        assert!(
            next > now || next == Instant::NEVER,
            "deadline must move forward"
        );
        if next == Instant::NEVER {
            break;
        }
        now = next;
    }
    log
}

fn feeds(log: &[(Instant, Action)]) -> Vec<Instant> {
    log.iter()
        .filter(|(_, a)| *a == Action::Feed)
        .map(|(t, _)| *t)
        .collect()
}

fn first(log: &[(Instant, Action)], pred: impl Fn(&Action) -> bool) -> Option<&(Instant, Action)> {
    log.iter().find(|(_, a)| pred(a))
}

fn secs(s: u64) -> Instant {
    Instant::from_millis(s * 1000)
}

#[test]
fn healthy_components_are_fed_every_feed_interval_for_hours() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 7);
    let end = secs(6 * 3600);
    let sims = [
        Sim::every(3 * SEC, secs(1), end),
        Sim::every(SEC, secs(2), end),
    ];
    sup.add(policy(5, 30), Instant::ZERO).unwrap();
    sup.add(policy(3, 30), Instant::ZERO).unwrap();
    let log = run(&mut sup, &sims, Instant::ZERO, end);
    assert!(log.iter().all(|(_, a)| matches!(
        a,
        Action::Feed
            | Action::Recovered {
                was_dead: false,
                ..
            }
    )));
    let feeds = feeds(&log);
    assert_eq!(feeds.len() as u64, 6 * 3600 / 2 + 1);
    for pair in feeds.windows(2) {
        assert_eq!(pair[1].since(pair[0]), 2 * SEC);
    }
    assert_eq!(sup.led_pattern(), Pattern::Healthy);
}

#[test]
fn startup_baseline_is_not_a_beat_and_grace_expiry_is_detected_exactly() {
    // The file exists from before the agent started and is never touched again.
    let sims = [Sim {
        beats: vec![Instant::ZERO],
        process: Process::Unknown,
    }];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(policy(5, 30), Instant::ZERO).unwrap();
    let log = run(&mut sup, &sims, Instant::ZERO, secs(20));
    let (t, a) = first(&log, |a| matches!(a, Action::Died { .. })).unwrap();
    assert_eq!(*t, secs(5));
    assert_eq!(
        *a,
        Action::Died {
            component: 0,
            cause: Cause::NoFirstBeat,
            since: secs(5)
        }
    );
}

#[test]
fn detection_is_within_a_millisecond_of_the_deadline() {
    // Table: (beat period ms, timeout s, last beat ms).
    for (period_ms, timeout, stop_ms) in [
        (700u64, 3u32, 10_350u64),
        (1000, 5, 20_000),
        (250, 2, 7_777),
        (4000, 9, 60_001),
    ] {
        let period = Duration::from_millis(period_ms);
        let sims = [Sim::every(
            period,
            Instant::from_millis(100),
            Instant::from_millis(stop_ms),
        )];
        let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 3);
        sup.add(policy(timeout.into(), 1000), Instant::ZERO)
            .unwrap();
        let log = run(
            &mut sup,
            &sims,
            Instant::ZERO,
            Instant::from_millis(stop_ms).saturating_add(60 * SEC),
        );
        let last_beat = *sims[0].beats.last().unwrap();
        // The beat is dated from its file: the death is declared at its deadline exactly.
        let (t, a) = first(&log, |a| matches!(a, Action::Died { .. })).unwrap();
        let Action::Died { since, cause, .. } = *a else {
            unreachable!()
        };
        assert_eq!(cause, Cause::Silent);
        assert!(
            t.since(since) <= Duration::from_millis(1),
            "decided {t:?}, deadline {since:?}"
        );
        assert_eq!(
            since,
            last_beat.saturating_add(SEC * timeout),
            "case {period_ms}/{timeout}"
        );
    }
}

#[test]
fn a_dead_critical_component_forces_a_reset_after_reset_after_and_feeding_stops() {
    let sims = [Sim::every(SEC, secs(1), secs(30))];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    sup.add(policy(5, 60), Instant::ZERO).unwrap();
    let log = run(&mut sup, &sims, Instant::ZERO, secs(400));
    let (died_at, _) = *first(&log, |a| matches!(a, Action::Died { .. })).unwrap();
    let (reset_at, reset) = *first(&log, |a| matches!(a, Action::ForceReset { .. })).unwrap();
    assert_eq!(
        reset,
        Action::ForceReset {
            component: 0,
            cause: Cause::Silent
        }
    );
    assert_eq!(reset_at, died_at.saturating_add(60 * SEC));
    assert!(
        feeds(&log).iter().all(|t| *t < reset_at),
        "no feed after the reset decision"
    );
    assert_eq!(sup.led_pattern(), Pattern::ResetImminent);
    let (fallback_at, _) = *first(&log, |a| *a == Action::FallbackReboot).unwrap();
    assert_eq!(
        fallback_at,
        reset_at.saturating_add(10 * SEC * FALLBACK_TIMEOUTS)
    );
    assert_eq!(
        log.iter()
            .filter(|(_, a)| *a == Action::FallbackReboot)
            .count(),
        1
    );
}

#[test]
fn non_critical_components_never_reset_the_board() {
    let sims = [Sim {
        beats: vec![],
        process: Process::Unknown,
    }];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    sup.add(
        Policy {
            critical: false,
            awaits_ready: false,
            ..policy(5, 10)
        },
        Instant::ZERO,
    )
    .unwrap();
    let log = run(&mut sup, &sims, Instant::ZERO, secs(3600));
    assert!(first(&log, |a| matches!(a, Action::ForceReset { .. })).is_none());
    let withheld: Vec<_> = log
        .iter()
        .filter(|(_, a)| matches!(a, Action::EscalationWithheld { .. }))
        .collect();
    assert_eq!(withheld.len(), 1);
    assert_eq!(
        withheld[0].1,
        Action::EscalationWithheld {
            component: 0,
            why: Withheld::NotCritical
        }
    );
    assert_eq!(feeds(&log).len(), 1801);
    assert_eq!(sup.led_pattern(), Pattern::Component(1));
}

#[test]
fn hold_keeps_feeding_and_withholds_the_reset_until_it_ends() {
    let sims = [Sim {
        beats: vec![],
        process: Process::Unknown,
    }];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, Some(secs(3600)), 5);
    sup.add(policy(5, 10), Instant::ZERO).unwrap();
    assert_eq!(sup.led_pattern(), Pattern::Hold);
    let log = run(&mut sup, &sims, Instant::ZERO, secs(7200));
    let (held_at, held) = *first(&log, |a| matches!(a, Action::EscalationWithheld { .. })).unwrap();
    assert_eq!(
        held,
        Action::EscalationWithheld {
            component: 0,
            why: Withheld::Hold
        }
    );
    assert_eq!(held_at, secs(15));
    let (ended_at, _) = *first(&log, |a| *a == Action::HoldEnded).unwrap();
    assert_eq!(ended_at, secs(3600));
    let (reset_at, _) = *first(&log, |a| matches!(a, Action::ForceReset { .. })).unwrap();
    assert_eq!(reset_at, secs(3600));
    assert!(feeds(&log).windows(2).all(|w| w[1].since(w[0]) == 2 * SEC));
}

#[test]
fn operator_clear_ends_the_hold() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, Some(secs(3600)), 5);
    assert!(sup.in_hold());
    sup.clear_hold();
    assert!(!sup.in_hold());
    assert_eq!(sup.led_pattern(), Pattern::Healthy);
}

#[test]
fn repairs_back_off_exponentially_with_jitter_and_are_bounded() {
    let sims = [Sim {
        beats: vec![],
        process: Process::Unknown,
    }];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 99);
    sup.add(
        Policy {
            repair: Some(repair(5)),
            ..policy(5, 100_000)
        },
        Instant::ZERO,
    )
    .unwrap();
    let log = run(&mut sup, &sims, Instant::ZERO, secs(10_000));
    let starts: Vec<_> = log
        .iter()
        .filter(|(_, a)| matches!(a, Action::StartRepair { .. }))
        .collect();
    assert_eq!(starts.len(), 5);
    for (n, pair) in starts.windows(2).enumerate() {
        let base = (4 * SEC * (1 << n)).min(60 * SEC);
        let gap = pair[1].0.since(pair[0].0);
        assert!(
            gap >= base / 2 && gap <= base,
            "gap {n}: {gap:?} vs base {base:?}"
        );
    }
    // Budget spent and the last wait over: the reset comes long before reset_after.
    let (reset_at, _) = *first(&log, |a| matches!(a, Action::ForceReset { .. })).unwrap();
    assert!(reset_at < secs(200));
    // Each attempt failed, the last one too once its wait ran out.
    assert_eq!(
        sup.view(0).unwrap().counts,
        Counts {
            deaths: 1,
            repairs: 5,
            repair_failures: 5
        }
    );
}

#[test]
fn a_repair_that_hangs_gets_term_then_kill() {
    let sims = [Sim {
        beats: vec![],
        process: Process::Unknown,
    }];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(
        Policy {
            repair: Some(repair(3)),
            ..policy(5, 1000)
        },
        Instant::ZERO,
    )
    .unwrap();
    let mut log = Vec::new();
    let mut now = Instant::ZERO;
    while now < secs(30) {
        sup.observe(0, look(now), sims[0].observe_at(now));
        sup.tick(now, |a| log.push((now, a)));
        now = sup.next_deadline();
    }
    let start = first(&log, |a| matches!(a, Action::StartRepair { .. }))
        .unwrap()
        .0;
    let term = first(&log, |a| {
        *a == Action::SignalRepair {
            component: 0,
            kill: false,
        }
    })
    .unwrap()
    .0;
    let kill = first(&log, |a| {
        *a == Action::SignalRepair {
            component: 0,
            kill: true,
        }
    })
    .unwrap()
    .0;
    assert_eq!(start, secs(5));
    assert_eq!(term, secs(15));
    assert_eq!(kill, secs(15).saturating_add(REPAIR_KILL_GRACE));
    assert_eq!(
        log.iter()
            .filter(|(_, a)| matches!(a, Action::SignalRepair { .. }))
            .count(),
        2
    );
}

#[test]
fn a_successful_repair_brings_the_component_back() {
    // Dies at 9 s; the second repair (at 11-13 s, after a jittered 2-4 s wait) "restarts"
    // it: beats resume at 14 s, before a third attempt could start (15 s at the earliest).
    let mut beats: Vec<Instant> = (1..=5).map(secs).collect();
    beats.extend((14..=100).map(secs));
    let sims = [Sim {
        beats,
        process: Process::Unknown,
    }];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(
        Policy {
            repair: Some(repair(3)),
            ..policy(4, 60)
        },
        Instant::ZERO,
    )
    .unwrap();
    let log = run(&mut sup, &sims, Instant::ZERO, secs(100));
    let kinds: Vec<_> = log
        .iter()
        .filter(|(_, a)| *a != Action::Feed)
        .map(|(_, a)| *a)
        .collect();
    assert_eq!(
        kinds,
        [
            Action::Recovered {
                component: 0,
                was_dead: false
            },
            Action::Died {
                component: 0,
                cause: Cause::Silent,
                since: secs(9)
            },
            Action::StartRepair {
                component: 0,
                attempt: 1
            },
            Action::StartRepair {
                component: 0,
                attempt: 2
            },
            Action::Recovered {
                component: 0,
                was_dead: true
            },
        ]
    );
    assert_eq!(sup.led_pattern(), Pattern::Healthy);
    // The first attempt's wait ran out with it dead; the second brought it back.
    assert_eq!(
        sup.view(0).unwrap().counts,
        Counts {
            deaths: 1,
            repairs: 2,
            repair_failures: 1
        }
    );
}

#[test]
fn the_latest_feed_is_measured_against_when_it_was_due() {
    let sims = [Sim::every(SEC, Instant::ZERO, secs(100))];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(policy(5, 60), Instant::ZERO).unwrap();
    run(&mut sup, &sims, Instant::ZERO, secs(30));
    assert_eq!(
        sup.feed_lateness_max(),
        Duration::ZERO,
        "ticked at each deadline"
    );
    // A stalled loop: the next tick comes at least 1.5 s after the next feed was due.
    let late = secs(30).saturating_add(settings().feed_interval + Duration::from_millis(1500));
    for (i, sim) in sims.iter().enumerate() {
        sup.observe(i, look(late), sim.observe_at(late));
    }
    let mut fed = false;
    sup.tick(late, |a| fed |= a == Action::Feed);
    assert!(fed);
    assert!(
        sup.feed_lateness_max() >= Duration::from_millis(1500),
        "{:?}",
        sup.feed_lateness_max()
    );
    let next = sup.next_deadline();
    run(&mut sup, &sims, next, secs(60));
    assert!(
        sup.feed_lateness_max() >= Duration::from_millis(1500),
        "a maximum stays"
    );
}

#[test]
fn a_vanished_process_is_dead_at_once_and_pid_reuse_is_caught() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(policy(30, 600), Instant::ZERO).unwrap();
    sup.add(policy(30, 600), Instant::ZERO).unwrap();
    let running = |pid, start_time| Process::Running { pid, start_time };
    let obs = |beats, process| Observation {
        heartbeat: Some(stamp(beats)),
        process,
        poll_process: true,
    };
    let mut actions = Vec::new();
    // Baseline, then one beat each: both alive.
    for (t, b) in [(0, 1), (1, 2)] {
        sup.observe(0, look(secs(t)), obs(b, running(100, 5000)));
        sup.observe(1, look(secs(t)), obs(b, running(200, 6000)));
        sup.tick(secs(t), |a| actions.push(a));
    }
    // Component 0's process is gone; component 1's pid now belongs to another process.
    sup.observe(0, look(secs(2)), obs(2, Process::Gone { pid: 100 }));
    sup.observe(1, look(secs(2)), obs(2, running(200, 9999)));
    sup.tick(secs(2), |a| actions.push(a));
    assert!(actions.contains(&Action::Died {
        component: 0,
        cause: Cause::ProcessGone { pid: 100 },
        since: secs(2)
    }));
    assert!(actions.contains(&Action::Died {
        component: 1,
        cause: Cause::PidReused { pid: 200 },
        since: secs(2)
    }));
    // A restarted component: new pid and a fresh beat bring it back.
    actions.clear();
    sup.observe(0, look(secs(3)), obs(3, running(101, 7000)));
    sup.observe(1, look(secs(3)), obs(3, running(200, 9999)));
    sup.tick(secs(3), |a| actions.push(a));
    assert!(actions.contains(&Action::Recovered {
        component: 0,
        was_dead: true
    }));
    assert!(actions.contains(&Action::Recovered {
        component: 1,
        was_dead: true
    }));
}

#[test]
fn a_beat_from_before_a_pinned_process_exited_is_not_a_return() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(policy(30, 600), Instant::ZERO).unwrap();
    let running = Process::Running {
        pid: 100,
        start_time: 5000,
    };
    let obs = |beats, at, process| Observation {
        heartbeat: Some(stamp_at(beats, at)),
        process,
        poll_process: false,
    };
    let mut actions = Vec::new();
    sup.observe(0, look(secs(0)), obs(1, secs(0), running));
    sup.observe(0, look(secs(1)), obs(2, secs(1), running));
    sup.tick(secs(1), |a| actions.push(a));
    // It beats at 5 s (no look: it is alive, its deadline is far) and is killed at 6 s.
    sup.process_exited(0, 100, secs(6));
    sup.tick(secs(6), |a| actions.push(a));
    assert!(actions.contains(&Action::Died {
        component: 0,
        cause: Cause::ProcessGone { pid: 100 },
        since: secs(6)
    }));
    // The safety net's next look: the pidfile is gone (its restart is under way) and the
    // file has changed since the last look, but at 5 s, before the death.
    actions.clear();
    sup.observe(0, look(secs(7)), obs(3, secs(5), Process::Unknown));
    sup.tick(secs(7), |a| actions.push(a));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Recovered { .. })),
        "{actions:?}"
    );
    // The restarted process's first beat brings it back.
    sup.observe(
        0,
        look(secs(8)),
        obs(4, secs(7).saturating_add(SEC / 2), Process::Unknown),
    );
    sup.tick(secs(8), |a| actions.push(a));
    assert!(actions.contains(&Action::Recovered {
        component: 0,
        was_dead: true
    }));
}

/// The dating of beats, over random beat and wall-clock step sequences, looked at from
/// random instants: a death is never declared early (beyond the filesystem's timestamp
/// granularity); it is late by at most the look window that saw the last beat when that
/// window held a step, and exact to the granularity otherwise. It is declared at the
/// deadline, never before the component's last beat plus its timeout.
#[test]
fn wall_clock_steps_never_make_a_death_early_and_at_most_one_window_late() {
    // A 250 Hz kernel's coarse clock, which dates files up to one tick early.
    const GRANULARITY_NS: i64 = 4_000_000;
    const DAY_NS: i64 = 86_400 * 1_000_000_000;
    let mut rng = 0x2545_F491_4F6C_DD1Du64;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound.max(1)
    };
    let mut stepped_windows = 0;
    for seed in 0..3000 {
        let timeout_ms = 1000 + next(19_000);
        let timeout = Duration::from_millis(timeout_ms);
        let stop = Instant::from_millis(10_000 + next(100_000));
        let mut beats = vec![Instant::from_millis(next(900))];
        while *beats.last().unwrap() < stop {
            let gap = 50 + next(timeout_ms - 60);
            beats.push(
                beats
                    .last()
                    .unwrap()
                    .saturating_add(Duration::from_millis(gap)),
            );
        }
        let last_beat = *beats.last().unwrap();
        // Room for a death one whole window late.
        let end = last_beat.saturating_add(2 * timeout + 5 * SEC);
        // Steps of +-1 day, +-2 days, or a few milliseconds, anywhere, some right at a
        // beat or its deadline.
        let mut steps: Vec<(Instant, i64)> = (0..next(8))
            .map(|_| {
                let at = match next(4) {
                    0 => beats[next(beats.len() as u64) as usize],
                    1 => last_beat.saturating_add(timeout),
                    _ => Instant::from_millis(next(end.as_nanos() / 1_000_000)),
                };
                let amount = match next(3) {
                    0 => DAY_NS,
                    1 => -2 * DAY_NS,
                    _ => next(10_000_000) as i64 - 5_000_000,
                };
                (at, amount)
            })
            .collect();
        steps.sort();
        let offset_at = |t: Instant| {
            WALL0
                + steps
                    .iter()
                    .filter(|(at, _)| *at <= t)
                    .map(|(_, d)| d)
                    .sum::<i64>()
        };
        let steps_at = |t: Instant| steps.iter().filter(|(at, _)| *at <= t).count() as u64;
        let stamp_now = |now: Instant| {
            let count = beats.partition_point(|b| *b <= now);
            count.checked_sub(1).map(|last| {
                let beat = beats[last];
                let wall = beat.as_nanos() as i64 + offset_at(beat);
                let coarse = wall - wall.rem_euclid(GRANULARITY_NS);
                Stamp {
                    mtime: (count as i64, 0),
                    ctime: (
                        coarse.div_euclid(1_000_000_000),
                        coarse.rem_euclid(1_000_000_000),
                    ),
                    ..Stamp::default()
                }
            })
        };
        let mut sup = Supervisor::new(settings(), Instant::ZERO, None, seed);
        sup.add(
            Policy {
                timeout,
                grace: timeout + SEC,
                ..policy(1, 100_000)
            },
            Instant::ZERO,
        )
        .unwrap();
        let mut looks = Vec::new();
        let mut died = Vec::new();
        let mut now = Instant::ZERO;
        while now <= end {
            if sup.look_due(0, now) {
                let seen = Look {
                    at: now,
                    wall_offset: offset_at(now),
                    steps: steps_at(now),
                };
                let observation = Observation {
                    heartbeat: stamp_now(now),
                    process: Process::Unknown,
                    poll_process: false,
                };
                sup.observe(0, seen, observation);
                looks.push(now);
            }
            sup.tick(now, |a| {
                if let Action::Died { since, cause, .. } = a {
                    died.push((now, since, cause));
                }
            });
            // Other wake-ups (LED edges, events) come at random instants.
            let other = now.saturating_add(Duration::from_millis(1 + next(1500)));
            now = sup.next_deadline().min(other);
        }
        assert_eq!(died.len(), 1, "seed {seed}: deaths {died:?}");
        let (decided, since, cause) = died[0];
        assert_eq!(cause, Cause::Silent, "seed {seed}");
        assert_eq!(decided, since, "seed {seed}: declared after its deadline");
        let deadline = last_beat.saturating_add(timeout);
        let granularity = Duration::from_nanos(GRANULARITY_NS as u64);
        assert!(
            since.saturating_add(granularity) >= deadline,
            "seed {seed}: death at {since:?}, early for the deadline {deadline:?}"
        );
        // The window that saw the last beat: from the look before it to the first after.
        let seen_at = looks.iter().position(|t| *t >= last_beat).unwrap();
        let window = (looks[seen_at - 1], looks[seen_at]);
        let stepped = steps
            .iter()
            .any(|(at, _)| *at > window.0 && *at <= window.1);
        let latest = if stepped {
            stepped_windows += 1;
            window.1.saturating_add(timeout)
        } else {
            deadline
        };
        assert!(
            since <= latest,
            "seed {seed}: death at {since:?}, later than {latest:?} (window {window:?}, stepped {stepped})"
        );
    }
    // The sequences did exercise steps inside the deciding window.
    assert!(
        stepped_windows > 100,
        "only {stepped_windows} stepped windows"
    );
}

/// Randomized properties over many seeds: components with random periods and timeouts,
/// some of which stop beating at a random instant.
#[test]
fn properties_hold_for_random_fleets() {
    let mut rng = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move |bound: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % bound
    };
    for seed in 0..400 {
        let count = 1 + next(6) as usize;
        let end = secs(2000);
        let mut sims = Vec::new();
        let mut policies = Vec::new();
        let mut stops = Vec::new();
        for _ in 0..count {
            let timeout = 2 + next(20);
            let period_ms = 200 + next((timeout - 1) * 1000 - 200); // period + check interval <= timeout
            let stop = if next(3) == 0 {
                Some(secs(10 + next(1500)))
            } else {
                None
            };
            let critical = next(4) != 0;
            let reset_after = 5 + next(300);
            sims.push(Sim::every(
                Duration::from_millis(period_ms),
                Instant::from_millis(next(4000)),
                stop.unwrap_or(end),
            ));
            // Grace covers the first beat: start offset (< 4 s) plus one period.
            let grace = SEC * (timeout as u32 + 5);
            policies.push(Policy {
                critical,
                grace,
                ..policy(timeout, reset_after)
            });
            stops.push(stop);
        }
        let mut sup = Supervisor::new(settings(), Instant::ZERO, None, seed);
        for p in &policies {
            sup.add(*p, Instant::ZERO).unwrap();
        }
        let log = run(&mut sup, &sims, Instant::ZERO, end);
        let reset = first(&log, |a| matches!(a, Action::ForceReset { .. })).map(|(t, _)| *t);

        // 1. Nobody who keeps beating is ever declared dead after its first beat.
        for (i, stop) in stops.iter().enumerate() {
            let died = log
                .iter()
                .find(|(_, a)| matches!(a, Action::Died { component, .. } if *component == i));
            if let Some((t, _)) = died {
                let last_beat = *sims[i].beats.last().unwrap();
                assert!(
                    stop.is_some(),
                    "seed {seed}: component {i} beating fine was declared dead at {t:?}"
                );
                assert!(
                    t.since(last_beat) >= policies[i].timeout,
                    "seed {seed}: early death of {i}"
                );
            }
        }
        // 2. While no reset is decided, feeds never lapse longer than the feed interval.
        let fed = feeds(&log);
        let mut prev = Instant::ZERO;
        for t in fed.iter().copied() {
            assert!(t.since(prev) <= 2 * SEC, "seed {seed}: feed gap at {t:?}");
            prev = t;
        }
        let stop_feeding = reset.unwrap_or(end);
        assert!(
            stop_feeding.since(prev) <= 2 * SEC,
            "seed {seed}: feeding stopped early"
        );
        // 3. A critical component that stopped forces a reset within its limit.
        let due = stops
            .iter()
            .zip(&policies)
            .zip(&sims)
            .filter(|((stop, p), _)| stop.is_some() && p.critical)
            .map(|((_, p), sim)| {
                sim.beats
                    .last()
                    .unwrap()
                    .saturating_add(p.timeout + SEC + p.reset_after)
            })
            .min();
        match (due, reset) {
            (Some(due), Some(reset)) => assert!(
                reset <= due,
                "seed {seed}: reset {reset:?} after limit {due:?}"
            ),
            (Some(due), None) => assert!(due > end, "seed {seed}: no reset though due at {due:?}"),
            (None, Some(reset)) => {
                panic!("seed {seed}: reset at {reset:?} with every critical component alive")
            }
            (None, None) => {}
        }
    }
}

#[test]
fn beats_alone_do_not_change_what_a_display_shows() {
    let sims = [Sim::every(SEC / 2, secs(1), secs(100))];
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 1);
    sup.add(policy(5, 30), Instant::ZERO).unwrap();
    run(&mut sup, &sims, Instant::ZERO, secs(3));
    let alive = sup.generation();
    let view = sup.view(0).unwrap();
    run(&mut sup, &sims, secs(3), secs(90));
    // Dozens of beats later: same generation, so the status file is not rewritten, and
    // the component has been alive since its first beat.
    assert_eq!(sup.generation(), alive);
    assert_eq!(sup.view(0).unwrap(), view);
    assert_eq!(view.since, secs(1));
}

// ---------------------------------------------------------------------------------------
// Notify components (sd_notify): beats, readiness and triggers come as events.

/// A notify component as the shell drives it: its pidfile looked at on every pass (its
/// process running), its messages handed over as they arrive.
struct NotifySim {
    /// Boxed: a supervisor has room for every component, too much for a test's stack twice.
    sup: Box<Supervisor>,
    log: Vec<(Instant, Action)>,
}

impl NotifySim {
    fn new(policy: Policy) -> NotifySim {
        let mut sup = Box::new(Supervisor::new(settings(), Instant::ZERO, None, 3));
        sup.add(policy, Instant::ZERO).unwrap();
        NotifySim {
            sup,
            log: Vec::new(),
        }
    }

    /// Passes at every deadline up to `until` (repairs exit at once, fixing nothing).
    fn run_until(&mut self, until: Instant) {
        loop {
            let now = self.sup.next_deadline();
            if now > until {
                break;
            }
            self.pass(now);
        }
    }

    fn pass(&mut self, now: Instant) {
        let seen = Observation {
            heartbeat: None,
            process: Process::Running {
                pid: 100,
                start_time: 1,
            },
            poll_process: false,
        };
        self.sup.observe(0, look(now), seen);
        let mut repairs = 0;
        let log = &mut self.log;
        self.sup.tick(now, |a| {
            if matches!(a, Action::StartRepair { .. }) {
                repairs += 1;
            }
            log.push((now, a));
        });
        for _ in 0..repairs {
            self.sup.repair_exited(0, now);
        }
    }

    /// The decisions but feeds, in order.
    fn decisions(&self) -> Vec<(Instant, Action)> {
        self.log
            .iter()
            .filter(|(_, a)| *a != Action::Feed)
            .copied()
            .collect()
    }
}

fn notify_policy() -> Policy {
    Policy {
        awaits_ready: true,
        ..policy(2, 60)
    }
}

#[test]
fn only_ready_ends_a_notify_startup_and_pings_before_it_are_not_life() {
    let mut sim = NotifySim::new(notify_policy());
    for t in [1, 2, 3] {
        sim.sup.notify_beat(0, secs(t));
        sim.pass(secs(t));
    }
    assert_eq!(sim.decisions(), []);
    assert_eq!(
        sim.sup.view(0).unwrap().state,
        watchkeeper::core::supervisor::State::Starting
    );
    sim.sup.notify_ready(0, secs(4));
    sim.pass(secs(4));
    sim.run_until(secs(10));
    assert_eq!(
        sim.decisions(),
        [
            (
                secs(4),
                Action::Recovered {
                    component: 0,
                    was_dead: false
                }
            ),
            // No ping after READY=1: dead at READY + the 2 s timeout, exactly.
            (
                secs(6),
                Action::Died {
                    component: 0,
                    cause: Cause::Silent,
                    since: secs(6)
                }
            ),
        ]
    );
}

#[test]
fn no_ready_within_the_grace_is_a_death_that_pings_do_not_undo() {
    let mut sim = NotifySim::new(notify_policy());
    for t in 1..=9 {
        sim.sup.notify_beat(0, secs(t));
        sim.pass(secs(t));
    }
    assert_eq!(
        sim.decisions(),
        [(
            secs(5),
            Action::Died {
                component: 0,
                cause: Cause::NotReady,
                since: secs(5)
            }
        )]
    );
    sim.sup.notify_ready(0, secs(10));
    sim.pass(secs(10));
    assert_eq!(
        sim.decisions().last(),
        Some(&(
            secs(10),
            Action::Recovered {
                component: 0,
                was_dead: true
            }
        ))
    );
}

#[test]
fn extend_timeout_lengthens_the_startup_only_while_it_lasts() {
    let mut sim = NotifySim::new(notify_policy());
    sim.sup.extend_grace(0, secs(4), 10 * SEC);
    // A shorter extension later never shortens it.
    sim.sup.extend_grace(0, secs(5), SEC);
    sim.run_until(secs(20));
    assert_eq!(
        sim.decisions(),
        [(
            secs(14),
            Action::Died {
                component: 0,
                cause: Cause::NotReady,
                since: secs(14)
            }
        )]
    );

    let mut sim = NotifySim::new(notify_policy());
    sim.sup.notify_ready(0, secs(1));
    sim.pass(secs(1));
    sim.sup.extend_grace(0, secs(2), 100 * SEC);
    sim.run_until(secs(10));
    assert_eq!(
        first(&sim.log, |a| matches!(a, Action::Died { .. })),
        Some(&(
            secs(3),
            Action::Died {
                component: 0,
                cause: Cause::Silent,
                since: secs(3)
            }
        ))
    );
}

#[test]
fn a_trigger_is_a_death_at_once_with_a_repair_and_only_a_restart_undoes_it() {
    let mut sim = NotifySim::new(Policy {
        repair: Some(repair(5)),
        ..notify_policy()
    });
    sim.sup.notify_ready(0, secs(1));
    sim.pass(secs(1));
    let at = Instant::from_millis(2_500);
    sim.sup.notify_trigger(0, at);
    sim.sup.notify_beat(0, at);
    sim.pass(at);
    assert_eq!(
        sim.decisions()[1..],
        [
            (
                at,
                Action::Died {
                    component: 0,
                    cause: Cause::Triggered,
                    since: at
                }
            ),
            (
                at,
                Action::StartRepair {
                    component: 0,
                    attempt: 1
                }
            ),
        ]
    );
    // The failed daemon's own pings are no return ...
    for t in [3, 4, 5] {
        sim.sup.notify_beat(0, secs(t));
        sim.pass(secs(t));
    }
    assert!(
        !sim.decisions()
            .iter()
            .any(|(_, a)| matches!(a, Action::Recovered { was_dead: true, .. }))
    );
    // ... its restart, with READY=1, is.
    sim.sup.notify_ready(0, secs(6));
    sim.pass(secs(6));
    assert_eq!(
        sim.decisions().last(),
        Some(&(
            secs(6),
            Action::Recovered {
                component: 0,
                was_dead: true
            }
        ))
    );
    // A trigger during the startup is a death too.
    let mut sim = NotifySim::new(notify_policy());
    sim.sup.notify_trigger(0, secs(1));
    sim.pass(secs(1));
    assert_eq!(
        sim.decisions(),
        [(
            secs(1),
            Action::Died {
                component: 0,
                cause: Cause::Triggered,
                since: secs(1)
            }
        )]
    );
}

// ---------------------------------------------------------------------------------------
// Boot confirmation (`[boot]`, core::boot)

use watchkeeper::core::boot::{BootAction, BootPolicy, CONFIRM_KILL_GRACE, Gate, Phase, Trial};

fn boot_policy(confirm_after: u64, attempts: u32) -> BootPolicy {
    BootPolicy {
        confirm_after: SEC * confirm_after as u32,
        timeout: 10 * SEC,
        attempts,
    }
}

fn starts(log: &[(Instant, Action)]) -> Vec<(Instant, u32)> {
    log.iter()
        .filter_map(|(t, a)| match a {
            Action::Boot(BootAction::StartConfirm { attempt }) => Some((*t, *attempt)),
            _ => None,
        })
        .collect()
}

/// A supervisor with one critical component, gated for a trial boot.
fn trial_boot(after: u64, attempts: u32, deadline: Option<u64>) -> Supervisor {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    sup.add(policy(5, 60), Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(
        boot_policy(after, attempts),
        deadline.map(secs),
        Phase::Checking,
    ));
    sup.boot_checked(Trial::Yes);
    sup
}

#[test]
fn a_healthy_trial_boot_is_confirmed_once_after_unbroken_health() {
    let mut sup = trial_boot(30, 3, Some(300));
    assert_eq!(sup.led_pattern(), Pattern::Unconfirmed);
    // Beats from 1 s, every second: alive at the first beat seen after the baseline.
    let sims = [Sim::every(SEC, secs(1), secs(3600))];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(3600), |_| Some(true));
    let alive = first(&log, |a| matches!(a, Action::Recovered { .. }))
        .unwrap()
        .0;
    assert_eq!(starts(&log), vec![(alive.saturating_add(30 * SEC), 1)]);
    // The command's exit is taken by the next pass.
    let confirmed = first(&log, |a| *a == Action::Boot(BootAction::Confirmed))
        .unwrap()
        .0;
    assert!(confirmed.since(alive.saturating_add(30 * SEC)) <= settings().feed_interval);
    assert_eq!(sup.boot_view().unwrap().phase, Phase::Confirmed);
    assert_eq!(sup.led_pattern(), Pattern::Healthy);
    assert!(first(&log, |a| matches!(a, Action::DeadlineReset { .. })).is_none());
    assert!(feeds(&log).len() > 1700, "fed all along");
}

#[test]
fn a_death_restarts_the_count_towards_confirmation() {
    let mut sup = trial_boot(30, 3, None);
    // Beats from 1 s to 20 s, a silence (dead at 25 s), beats again from 40 s.
    let mut sim = Sim::every(SEC, secs(1), secs(20));
    sim.beats
        .extend(Sim::every(SEC, secs(40), secs(3600)).beats);
    let log = run_boot(&mut sup, &[sim], Instant::ZERO, secs(3600), |_| Some(true));
    let back = log
        .iter()
        .find(|(_, a)| {
            *a == Action::Recovered {
                component: 0,
                was_dead: true,
            }
        })
        .unwrap()
        .0;
    assert_eq!(starts(&log), vec![(back.saturating_add(30 * SEC), 1)]);
}

#[test]
fn a_failing_confirm_is_retried_with_backoff_then_shows_the_fault_and_never_resets() {
    let mut sup = trial_boot(10, 3, Some(120));
    let sims = [Sim::every(SEC, secs(1), secs(3600))];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(3600), |_| Some(false));
    let tries = starts(&log);
    assert_eq!(tries.iter().map(|t| t.1).collect::<Vec<_>>(), vec![1, 2, 3]);
    // 5 s then 10 s, each scaled into [50%, 100%].
    let waits: Vec<Duration> = tries.windows(2).map(|w| w[1].0.since(w[0].0)).collect();
    assert!(
        (2500..=5000).contains(&(waits[0].as_millis() as u64)),
        "{waits:?}"
    );
    assert!(
        (5000..=10_000).contains(&(waits[1].as_millis() as u64)),
        "{waits:?}"
    );
    assert_eq!(
        log.iter()
            .filter(|(_, a)| *a == Action::Boot(BootAction::ConfirmFailed))
            .count(),
        1
    );
    assert_eq!(sup.boot_view().unwrap().phase, Phase::Failed);
    assert_eq!(sup.led_pattern(), Pattern::Fault);
    // Healthy in time: the deadline (120 s) does not apply to a command that fails.
    assert!(!sup.resetting());
    assert!(feeds(&log).last().unwrap() > &secs(3500));
}

#[test]
fn a_hung_confirm_gets_term_then_kill_and_counts_as_failed() {
    let mut sup = trial_boot(10, 1, None);
    let sims = [Sim::every(SEC, secs(1), secs(600))];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(600), |_| None);
    let (started, _) = starts(&log)[0];
    let term = first(&log, |a| {
        *a == Action::Boot(BootAction::SignalConfirm { kill: false })
    })
    .unwrap()
    .0;
    let kill = first(&log, |a| {
        *a == Action::Boot(BootAction::SignalConfirm { kill: true })
    })
    .unwrap()
    .0;
    assert_eq!(term, started.saturating_add(10 * SEC));
    assert_eq!(kill, term.saturating_add(CONFIRM_KILL_GRACE));
    assert_eq!(sup.boot_view().unwrap().phase, Phase::Failed);
}

#[test]
fn a_trial_boot_that_is_never_healthy_is_reset_at_its_deadline() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    sup.add(policy(5, 3600), Instant::ZERO).unwrap();
    let mut noncritical = policy(5, 3600);
    noncritical.critical = false;
    sup.add(noncritical, Instant::ZERO).unwrap();
    sup.add(policy(5, 3600), Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(
        boot_policy(30, 3),
        Some(secs(120)),
        Phase::Checking,
    ));
    sup.boot_checked(Trial::Unknown);
    assert!(sup.boot_view().unwrap().unknown);
    // The first beats; the third never starts.
    let sims = [
        Sim::every(SEC, secs(1), secs(3600)),
        Sim::every(SEC, secs(1), secs(3600)),
        Sim {
            beats: vec![],
            process: Process::Unknown,
        },
    ];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(3600), |_| Some(true));
    assert!(starts(&log).is_empty());
    let (at, reset) = *first(&log, |a| matches!(a, Action::DeadlineReset { .. })).unwrap();
    assert_eq!(
        (at, reset),
        (secs(120), Action::DeadlineReset { culprit: Some(2) })
    );
    assert!(sup.resetting());
    assert_eq!(sup.led_pattern(), Pattern::ResetImminent);
    assert!(
        feeds(&log).iter().all(|t| *t < secs(120)),
        "nothing fed after the reset"
    );
}

#[test]
fn a_boot_that_is_no_trial_is_never_confirmed_nor_reset_by_a_deadline() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    sup.add(policy(5, 3600), Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(
        boot_policy(30, 3),
        Some(secs(60)),
        Phase::Checking,
    ));
    sup.boot_checked(Trial::No);
    let sims = [Sim {
        beats: vec![],
        process: Process::Unknown,
    }];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(600), |_| Some(true));
    assert!(starts(&log).is_empty());
    assert!(first(&log, |a| matches!(a, Action::DeadlineReset { .. })).is_none());
    assert_eq!(sup.boot_view().unwrap().phase, Phase::NotTrial);
}

#[test]
fn an_unconfirmed_trial_boot_suspends_the_hold_and_a_confirmed_one_restores_it() {
    // A hold decided at startup; the component is dead from the start.
    let mut sup = Supervisor::new(settings(), Instant::ZERO, Some(secs(3600)), 5);
    sup.add(policy(5, 10), Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(boot_policy(30, 3), None, Phase::Checking));
    // While checking, the hold holds.
    assert_eq!(sup.led_pattern(), Pattern::Hold);
    sup.boot_checked(Trial::Yes);
    assert!(sup.hold_suspended());
    let sims = [Sim {
        beats: vec![],
        process: Process::Unknown,
    }];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(600), |_| Some(true));
    let (at, _) = *first(&log, |a| matches!(a, Action::ForceReset { .. })).unwrap();
    assert_eq!(
        at,
        secs(15),
        "grace 5 s + reset_after 10 s, the hold suspended"
    );

    // Confirmed: the same death is held, as without [boot].
    let mut sup = Supervisor::new(settings(), Instant::ZERO, Some(secs(3600)), 5);
    sup.add(policy(5, 10), Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(boot_policy(30, 3), None, Phase::Confirmed));
    assert!(!sup.hold_suspended());
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(600), |_| Some(true));
    assert!(first(&log, |a| matches!(a, Action::ForceReset { .. })).is_none());
    assert!(
        first(&log, |a| *a
            == Action::EscalationWithheld {
                component: 0,
                why: Withheld::Hold
            })
        .is_some()
    );
}

#[test]
fn a_restarted_agent_never_confirms_a_confirmed_boot_again() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    sup.add(policy(5, 60), Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(
        boot_policy(10, 3),
        Some(secs(60)),
        Phase::Confirmed,
    ));
    // A late check's answer cannot reopen it either.
    sup.boot_checked(Trial::Yes);
    let sims = [Sim::every(SEC, secs(1), secs(600))];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(600), |_| Some(true));
    assert!(starts(&log).is_empty());
    assert_eq!(sup.led_pattern(), Pattern::Healthy);
}

#[test]
fn nothing_critical_alive_is_never_healthy() {
    let mut sup = Supervisor::new(settings(), Instant::ZERO, None, 5);
    let mut noncritical = policy(5, 60);
    noncritical.critical = false;
    sup.add(noncritical, Instant::ZERO).unwrap();
    sup.gate_boot(Gate::new(
        boot_policy(10, 3),
        Some(secs(100)),
        Phase::Checking,
    ));
    sup.boot_checked(Trial::Yes);
    let sims = [Sim::every(SEC, secs(1), secs(600))];
    let log = run_boot(&mut sup, &sims, Instant::ZERO, secs(600), |_| Some(true));
    assert!(starts(&log).is_empty());
    let (at, reset) = *first(&log, |a| matches!(a, Action::DeadlineReset { .. })).unwrap();
    assert_eq!(
        (at, reset),
        (secs(100), Action::DeadlineReset { culprit: None })
    );
}
