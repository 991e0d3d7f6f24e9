//! Benchmark (not a test): the cost of one check pass of the real agent loop with 1, 64
//! and 1024 components on real heartbeat files, with the allocations counted (Rust's and, on
//! the host, libc's: `tests/support/alloc.rs`); the cost of one rewrite of the metrics file
//! (`[export]`: rendering, then the atomic replace); then the real binary's time from exec
//! to the first feed and its resident memory.
//!
//! Run with `cargo bench --bench check_pass`, or `tests/bench`, which adds binary sizes.

#[path = "../support/alloc.rs"]
mod alloc;
#[path = "../support/fakes.rs"]
mod fakes;

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::rc::Rc;
use std::time::{Duration, Instant as WallInstant};

use alloc::counted;
use fakes::sim_parts;
use watchkeeper::agent::{Agent, Parts};
use watchkeeper::config;
use watchkeeper::core::time::Instant;
use watchkeeper::os::state::State;
use watchkeeper::os::watchdog::{NoDevice, Takeover};

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wk-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("beats")).unwrap();
    dir
}

fn config_text(dir: &Path, components: usize, extra: &str) -> String {
    let mut text = format!(
        "[watchdog]\ndevice = \"none\"\ntimeout = 10\n[agent]\ncheck_interval = \"100ms\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nrealtime_priority = 0\n{extra}",
        d = dir.display()
    );
    for i in 0..components {
        let beat = dir.join(format!("beats/c{i}"));
        std::fs::write(&beat, b"").unwrap();
        text.push_str(&format!(
            "[[component]]\nname = \"c{i}\"\nheartbeat = \"{}\"\ntimeout = \"1h\"\n",
            beat.display()
        ));
    }
    text
}

/// Mean and median wall time of one pass, and allocations (Rust's, and on the host libc's
/// own) during the measured passes.
fn measure_pass(components: usize) -> (Duration, Duration, usize) {
    let dir = scratch(&format!("pass{components}"));
    let config =
        config::parse(Path::new("bench.toml"), &config_text(&dir, components, "")).unwrap();
    let now = Rc::new(Cell::new(Instant::from_millis(1)));
    let (state, _) = State::open(&config.agent.state_dir).unwrap();
    let parts = Parts {
        watchdog: Some(Box::new(NoDevice::new(Duration::from_secs(10)))),
        takeover: Takeover::NoDevice,
        ..sim_parts(&config, state, &now, &Rc::new(Cell::new(0)), 1)
    };
    let mut agent = Agent::new(&config, parts).unwrap();
    let passes = (200_000 / components).clamp(200, 20_000);
    let mut times = Vec::with_capacity(passes);
    let mut allocations = 0;
    for round in 0..passes + 50 {
        // Every 100 ms of simulated time a pass is due: each step below is one full pass.
        now.set(now.get().saturating_add(Duration::from_millis(100)));
        let (took, counts) = counted(|| {
            let start = WallInstant::now();
            agent.step();
            start.elapsed()
        });
        if round >= 50 {
            allocations += counts.rust + counts.libc;
            times.push(took);
        }
    }
    let _ = std::fs::remove_dir_all(dir);
    times.sort();
    let mean = times.iter().sum::<Duration>() / times.len() as u32;
    (mean, times[times.len() / 2], allocations)
}

/// Time from exec to the first feed (the `none` device logs each feed at trace level),
/// median of `runs`.
fn exec_to_first_feed(runs: usize) -> Duration {
    let dir = scratch("startup");
    std::fs::write(dir.join("wk.toml"), config_text(&dir, 1, "")).unwrap();
    let mut times = Vec::new();
    for _ in 0..runs {
        let start = WallInstant::now();
        let mut child = Command::new(env!("CARGO_BIN_EXE_watchkeeper"))
            .args(["--config"])
            .arg(dir.join("wk.toml"))
            .arg("run")
            .env("WATCHKEEPER_LOG", "trace")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        for line in stderr.lines() {
            if line.unwrap().contains("keepalive") {
                times.push(start.elapsed());
                break;
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }
    let _ = std::fs::remove_dir_all(dir);
    times.sort();
    times[times.len() / 2]
}

/// VmRSS and VmHWM (peak) in KiB of the real agent supervising `components` for a while.
fn resident_memory(components: usize) -> (u64, u64) {
    let dir = scratch(&format!("rss{components}"));
    std::fs::write(dir.join("wk.toml"), config_text(&dir, components, "")).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_watchkeeper"))
        .arg("--config")
        .arg(dir.join("wk.toml"))
        .arg("run")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(3));
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let _ = std::fs::remove_dir_all(dir);
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Median wall time of one metrics rewrite for `components` components (all dead, with
/// counts: the longest lines), the file's size, and the allocations during the rewrites.
fn measure_rewrite(components: usize) -> (Duration, usize, usize) {
    use watchkeeper::core::history::Ends;
    use watchkeeper::core::supervisor::{Counts, State as Health};
    use watchkeeper::metrics::{self, Board, Component, Seconds};
    use watchkeeper::os::textfile::Textfile;
    let dir = scratch(&format!("rewrite{components}"));
    let path = dir.join("prom/watchkeeper.prom");
    let mut textfile = Textfile::new(&path, metrics::capacity(components));
    let names: Vec<String> = (0..components).map(|i| format!("component-{i}")).collect();
    let board = Board {
        version: "0.1.0",
        revision: "bench",
        started: 1_700_000_000,
        boot: Some(12),
        ends: Ends::default(),
        last_reset: None,
        hold: false,
        resetting: false,
        watchdog: None,
        watchdog_timeout: Duration::from_secs(10),
        feed_lateness_max: Duration::from_millis(3),
        boot_phase: None,
    };
    let mut times = Vec::new();
    let mut allocations = 0;
    for round in 0..250 {
        let (took, counts) = counted(|| {
            let start = WallInstant::now();
            let list = names.iter().map(|name| Component {
                name,
                state: Health::Dead,
                since: Seconds(1_700_000_000_000 + round),
                counts: Counts {
                    deaths: 3,
                    repairs: 5,
                    repair_failures: 4,
                },
            });
            metrics::write(textfile.buffer(), &board, list).unwrap();
            textfile.write();
            start.elapsed()
        });
        if round >= 50 {
            allocations += counts.rust + counts.libc;
            times.push(took);
        }
    }
    let bytes = std::fs::metadata(&path).unwrap().len() as usize;
    let _ = std::fs::remove_dir_all(dir);
    times.sort();
    (times[times.len() / 2], bytes, allocations)
}

/// Supervision sizes measured: one component, a typical appliance's, and the capacity.
const COMPONENT_COUNTS: [usize; 3] = [1, 64, watchkeeper::limits::MAX_COMPONENTS];

fn main() {
    // `cargo test` also runs bench targets with --bench absent; do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    println!("| components | one check pass (mean) | (median) | per component | allocations |");
    println!("|---:|---:|---:|---:|---:|");
    for components in COMPONENT_COUNTS {
        let (mean, median, allocations) = measure_pass(components);
        println!(
            "| {components} | {:.1} µs | {:.1} µs | {:.2} µs | {allocations} |",
            mean.as_secs_f64() * 1e6,
            median.as_secs_f64() * 1e6,
            mean.as_secs_f64() * 1e6 / components as f64
        );
    }
    println!();
    println!(
        "| components | metrics rewrite, render + atomic replace (median) | file size | allocations |"
    );
    println!("|---:|---:|---:|---:|");
    for components in COMPONENT_COUNTS {
        let (median, bytes, allocations) = measure_rewrite(components);
        println!(
            "| {components} | {:.1} µs | {bytes} bytes | {allocations} |",
            median.as_secs_f64() * 1e6
        );
    }
    println!();
    let startup = exec_to_first_feed(15);
    println!(
        "exec to first feed (1 component, device none, median of 15): {:.1} ms",
        startup.as_secs_f64() * 1e3
    );
    for components in COMPONENT_COUNTS {
        let (rss, hwm) = resident_memory(components);
        println!(
            "resident memory, {components} component(s): VmRSS {rss} KiB, VmHWM (peak) {hwm} KiB"
        );
    }
}
