//! Proof that the real agent loop allocates nothing after startup.
//!
//! A counting global allocator wraps the system one. The real `Agent` runs on real
//! heartbeat files, a real hearts directory, real state and run directories and real repair
//! processes, with a fake watchdog and LED and a simulated clock, through the healthy,
//! failing, repairing, held, escalating and resetting states for more than 10,000 loop
//! iterations. After warm-up, not one allocation may happen inside the loop.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use embedded_hal::digital::{ErrorType, OutputPin};
use watchkeeper::agent::{Agent, Parts};
use watchkeeper::clock::Clock;
use watchkeeper::config;
use watchkeeper::led::{FaultLed, PinError};
use watchkeeper::pattern::Pattern;
use watchkeeper::rundir::RunDir;
use watchkeeper::state::State;
use watchkeeper::time::Instant;
use watchkeeper::watchdog::{Watchdog, WatchdogError};

struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);
static ABORT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        if ABORT.load(Ordering::Relaxed) {
            std::process::abort();
        }
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only an atomic and a const-initialized thread-local, neither of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: same contract as ours.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Counts the allocations `f` makes on this thread.
fn counted<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    (out, ALLOCATIONS.load(Ordering::Relaxed) - before)
}

struct SimClock {
    now: Rc<Cell<Instant>>,
}

impl Clock for SimClock {
    fn now(&self) -> Instant {
        self.now.get()
    }
    fn uptime(&self) -> Duration {
        Duration::from_nanos(self.now.get().as_nanos())
    }
    fn wall(&self) -> i64 {
        1_700_000_000
    }
    fn sleep_until(&mut self, deadline: Instant) {
        self.now.set(deadline.max(self.now.get()));
    }
}

struct FakeWatchdog {
    feeds: Rc<Cell<u64>>,
    shortened: Rc<Cell<bool>>,
}

impl Watchdog for FakeWatchdog {
    fn keepalive(&mut self) -> Result<(), WatchdogError> {
        self.feeds.set(self.feeds.get() + 1);
        Ok(())
    }
    fn shorten_for_reset(&mut self) -> Duration {
        self.shortened.set(true);
        Duration::from_secs(1)
    }
    fn timeout(&self) -> Duration {
        Duration::from_secs(4)
    }
}

struct FakePin {
    level: Rc<Cell<bool>>,
}

impl ErrorType for FakePin {
    type Error = PinError;
}

impl OutputPin for FakePin {
    fn set_low(&mut self) -> Result<(), PinError> {
        self.level.set(false);
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), PinError> {
        self.level.set(true);
        Ok(())
    }
}

fn touch(path: &Path) {
    watchkeeper::heartbeat::touch(path, false).unwrap();
}

fn temp_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wk-noalloc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_agent_loop_allocates_nothing_after_startup() {
    let ((), caught) = counted(|| drop(Box::new(7u64)));
    assert_eq!(caught, 1, "the counting allocator must see an allocation");

    watchkeeper::logging::init();
    let dir = temp_dir();
    // The kernel log target opens its device for every line; a plain file stands in.
    std::fs::write(dir.join("kmsg"), b"").unwrap();
    watchkeeper::logging::use_kmsg(&dir.join("kmsg")).unwrap();
    let text = format!(
        r#"
[watchdog]
device = "none"
timeout = 4
[agent]
check_interval = "10ms"
state_dir = "{dir}/state"
run_dir = "{dir}/run"
realtime_priority = 0
[hearts]
dir = "{dir}/hearts"
critical = false
[[component]]
name = "steady"
heartbeat = "{dir}/steady.beat"
timeout = "1s"
grace = "2s"
[[component]]
name = "flaky"
heartbeat = "{dir}/flaky.beat"
timeout = "1s"
grace = "2s"
reset_after = "30s"
repair = ["/bin/true"]
repair_backoff = "500ms"
repair_backoff_max = "1s"
max_repairs = 100
"#,
        dir = dir.display()
    );
    let config = config::parse(Path::new("no_alloc.toml"), &text).unwrap();
    let now = Rc::new(Cell::new(Instant::from_millis(1)));
    let feeds = Rc::new(Cell::new(0));
    let shortened = Rc::new(Cell::new(false));
    let level = Rc::new(Cell::new(false));
    let (mut state, _) = State::open(&config.agent.state_dir).unwrap();
    state.start_boot("no-alloc-boot", 0, false).1.unwrap();
    let parts = Parts {
        watchdog: Some(Box::new(FakeWatchdog {
            feeds: feeds.clone(),
            shortened: shortened.clone(),
        })),
        may_reboot: false,
        led: FaultLed::new(
            FakePin {
                level: level.clone(),
            },
            false,
        ),
        clock: SimClock { now: now.clone() },
        state,
        run: RunDir::open(&config.agent.run_dir),
        agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_watchkeeper")),
        fault: false,
        hold_until: Some(Instant::from_millis(60_000)),
        seed: 42,
    };
    let mut agent = Agent::new(&config, parts).unwrap();
    let heart = dir.join("hearts/backup");
    std::fs::write(&heart, "3\n").unwrap();

    let steady = dir.join("steady.beat");
    let flaky = dir.join("flaky.beat");
    // To find an allocation: WK_ABORT_ON_ALLOC=1 gdb -ex run -ex bt <this test binary>.
    let abort_on_alloc = std::env::var_os("WK_ABORT_ON_ALLOC").is_some();
    let mut clock = SimClock { now: now.clone() };
    let mut iterations = 0u64;
    let mut after_warmup = 0usize;
    let mut seen = Vec::new();
    let mut states = std::collections::BTreeSet::new();
    let mut attempts = 0;
    let mut last_touch = 0;
    while now.get() < Instant::from_millis(100_000) || iterations < 10_000 {
        let ms = now.get().as_nanos() / 1_000_000;
        if ms / 200 != last_touch {
            // Beats every 200 ms of simulated time; "flaky" stops at 5 s.
            last_touch = ms / 200;
            touch(&steady);
            touch(&heart);
            if ms < 5_000 {
                touch(&flaky);
            }
        }
        if ms > 8_000 && abort_on_alloc {
            ABORT.store(true, Ordering::Relaxed);
        }
        let (wake, allocations) = counted(|| agent.step());
        // Warm-up: the first second, and the first repair spawned.
        if ms > 8_000 {
            after_warmup += allocations;
            assert_eq!(
                allocations,
                0,
                "allocation in the loop at {ms} ms (iteration {iterations}), LED {:?}",
                agent.supervisor().led_pattern()
            );
        }
        let pattern = agent.supervisor().led_pattern();
        if seen.last() != Some(&pattern) {
            seen.push(pattern);
        }
        if let Some(view) = agent.supervisor().view(1) {
            states.insert(view.state.to_string());
            attempts = attempts.max(view.repair_attempts);
        }
        // Repairs are real processes: give them real time to exit now and then.
        if iterations.is_multiple_of(500) {
            std::thread::sleep(Duration::from_millis(5));
        }
        clock.sleep_until(wake.min(now.get().saturating_add(Duration::from_millis(10))));
        iterations += 1;
    }
    assert_eq!(after_warmup, 0);
    assert!(iterations >= 10_000, "only {iterations} iterations");
    // The states this run went through: hold at first (healthy components), then the flaky
    // component dead and repaired under hold, then the hold over and the reset forced.
    assert_eq!(
        seen,
        [Pattern::Hold, Pattern::ResetImminent],
        "patterns seen: {seen:?}"
    );
    assert!(shortened.get(), "the reset path must have run");
    let expected: std::collections::BTreeSet<String> = ["starting", "alive", "dead", "repairing"]
        .map(String::from)
        .into();
    assert_eq!(states, expected);
    assert!(attempts >= 20, "only {attempts} repair attempts");
    assert!(feeds.get() > 50, "fed {} times", feeds.get());
    let history = State::read_only(&config.agent.state_dir).unwrap().unwrap();
    assert_eq!(history.current().unwrap().component, "flaky");
    assert!(level.get(), "LED solid on while the reset is imminent");
    let kernel_log = std::fs::read_to_string(dir.join("kmsg")).unwrap();
    assert!(
        kernel_log.starts_with('<') && kernel_log.contains("watchkeeper["),
        "{kernel_log:?}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_and_recreated_directories_allocate_nothing() {
    watchkeeper::logging::init();
    let dir = std::env::temp_dir().join(format!("wk-noalloc-dirs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = format!(
        "[watchdog]\ndevice = \"none\"\ntimeout = 4\n[agent]\ncheck_interval = \"10ms\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nrealtime_priority = 0\n\
         [[component]]\nname = \"gone\"\nheartbeat = \"{d}/gone.beat\"\ntimeout = \"1s\"\ngrace = \"100ms\"\ncritical = false\n",
        d = dir.display()
    );
    let config = config::parse(Path::new("no_alloc.toml"), &text).unwrap();
    let now = Rc::new(Cell::new(Instant::from_millis(1)));
    let feeds = Rc::new(Cell::new(0));
    let (mut state, _) = State::open(&config.agent.state_dir).unwrap();
    state.start_boot("no-alloc-boot", 0, false).1.unwrap();
    let parts = Parts {
        watchdog: Some(Box::new(FakeWatchdog {
            feeds: feeds.clone(),
            shortened: Rc::new(Cell::new(false)),
        })),
        may_reboot: false,
        led: FaultLed::new(
            FakePin {
                level: Rc::new(Cell::new(false)),
            },
            false,
        ),
        clock: SimClock { now: now.clone() },
        state,
        run: RunDir::open(&config.agent.run_dir),
        agent_binary: PathBuf::from(env!("CARGO_BIN_EXE_watchkeeper")),
        fault: false,
        hold_until: None,
        seed: 7,
    };
    let mut agent = Agent::new(&config, parts).unwrap();
    let (run, state) = (dir.join("run"), dir.join("state"));
    // Each fault at its own simulated second, undone at the next; "gone" is dead by then,
    // so a recreated run directory gets its problem file back.
    type Fault = fn(&Path, &Path);
    let faults: [(&str, Fault); 8] = [
        ("run dir deleted", |run, _| {
            std::fs::remove_dir_all(run).unwrap()
        }),
        ("run dir replaced by a symlink", |run, _| {
            std::fs::remove_dir_all(run).unwrap();
            std::os::unix::fs::symlink("/tmp", run).unwrap();
        }),
        ("symlink removed", |run, _| {
            std::fs::remove_file(run).unwrap()
        }),
        ("problems replaced by a file", |run, _| {
            std::fs::remove_dir_all(run.join("problems")).unwrap();
            std::fs::write(run.join("problems"), b"").unwrap();
        }),
        ("file removed", |run, _| {
            std::fs::remove_file(run.join("problems")).unwrap()
        }),
        ("state dir deleted", |_, state| {
            std::fs::remove_dir_all(state).unwrap()
        }),
        ("state dir replaced by a file", |_, state| {
            std::fs::remove_dir_all(state).unwrap();
            std::fs::write(state, b"").unwrap();
        }),
        ("file removed", |_, state| {
            std::fs::remove_file(state).unwrap()
        }),
    ];
    let mut clock = SimClock { now: now.clone() };
    let mut next = 0;
    let mut patterns = Vec::new();
    while now.get() < Instant::from_millis(12_000) {
        let ms = now.get().as_nanos() / 1_000_000;
        if ms >= 2_000 + 1_000 * next as u64 && next < faults.len() {
            faults[next].1(&run, &state);
            next += 1;
        }
        let (wake, allocations) = counted(|| agent.step());
        if ms > 1_000 {
            assert_eq!(
                allocations,
                0,
                "allocation at {ms} ms, after \"{}\"",
                faults[next.saturating_sub(1)].0
            );
        }
        let pattern = agent.supervisor().led_pattern();
        if patterns.last() != Some(&pattern) {
            patterns.push(pattern);
        }
        clock.sleep_until(wake.min(now.get().saturating_add(Duration::from_millis(10))));
    }
    assert_eq!(next, faults.len());
    assert!(
        run.join("problems/gone").is_file(),
        "problem file rewritten"
    );
    assert_eq!(
        State::read_only(&state).unwrap().unwrap().boots().len(),
        1,
        "history rewritten"
    );
    assert!(feeds.get() >= 8, "fed {} times in 12 s", feeds.get());
    assert_eq!(patterns, [Pattern::Healthy, Pattern::Component(1)]);
    std::fs::remove_dir_all(dir).unwrap();
}
