//! Proof that the real agent loop allocates nothing after startup, in Rust or in libc.
//!
//! The counters are those of `support/alloc.rs`: every Rust allocation, and on the host
//! (dynamically linked glibc) every allocation libc makes, its internal ones included; on
//! the statically linked ARM test binaries only the Rust count is checked.
//!
//! The real `Agent` runs on real heartbeat files, a real hearts directory, real state and
//! run directories, a real metrics file (`[export]`) and real repair processes, with a fake watchdog and LED and a simulated
//! clock (`support/fakes.rs`), through the healthy, failing, repairing, held, escalating
//! and resetting states, hearts appearing, changing, dying, being repaired and going away,
//! for more than 10,000 loop iterations. After warm-up, not one allocation may happen
//! inside the loop.

#[path = "support/alloc.rs"]
mod alloc;
#[path = "support/fakes.rs"]
mod fakes;

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Duration;

use alloc::{Counts, NONE, counted};
use fakes::{FakePin, FakeWatchdog, sim_parts};
use watchkeeper::agent::{Agent, Parts};
use watchkeeper::config;
use watchkeeper::core::pattern::Pattern;
use watchkeeper::core::time::Instant;
use watchkeeper::os::led::FaultLed;
use watchkeeper::os::repair::{self, Repairs};
use watchkeeper::os::state::State;

fn touch(path: &Path) {
    watchkeeper::os::heartbeat::touch(path, false).unwrap();
}

/// A fresh directory for one test (tests run in parallel).
fn temp_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wk-noalloc-{}-{test}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn the_agent_loop_allocates_nothing_after_startup() {
    // black_box: an optimised build (the ARM suites' profile) elides a box nothing reads.
    let ((), caught) = counted(|| drop(std::hint::black_box(Box::new(7u64))));
    assert_eq!(
        caught,
        Counts { rust: 1, ..NONE },
        "the counting allocator must see an allocation, once"
    );

    watchkeeper::os::logging::init();
    let dir = temp_dir("loop");
    // The kernel log target opens its device for every line; a plain file stands in.
    std::fs::write(dir.join("kmsg"), b"").unwrap();
    watchkeeper::os::logging::use_kmsg(&dir.join("kmsg")).unwrap();
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
[export]
textfile = "{dir}/prom/watchkeeper.prom"
[hearts]
dir = "{dir}/hearts"
critical = false
repair = ["/bin/true"]
repair_backoff = "500ms"
repair_backoff_max = "1s"
max_repairs = 100
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
repair_timeout = "5s"
repair_backoff = "500ms"
repair_backoff_max = "1s"
max_repairs = 100
[[component]]
name = "pinned"
heartbeat = "{dir}/pinned.beat"
pidfile = "{dir}/pinned.pid"
timeout = "1s"
grace = "2s"
critical = false
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
        led: FaultLed::new(
            FakePin {
                level: level.clone(),
            },
            false,
        ),
        hold_until: Some(Instant::from_millis(60_000)),
        ..sim_parts(&config, state, &now, &feeds, 42)
    };
    let mut agent = Agent::new(&config, parts).unwrap();
    let heart = dir.join("hearts/backup");
    std::fs::write(&heart, "3\n").unwrap();

    let steady = dir.join("steady.beat");
    let flaky = dir.join("flaky.beat");
    // A real process behind a pidfile, so the loop pins it and sees it exit (a pidfd).
    let pinned = dir.join("pinned.beat");
    let spawn_pinned = || {
        let child = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        std::fs::write(dir.join("pinned.pid"), format!("{}\n", child.id())).unwrap();
        child
    };
    let mut pinned_child = spawn_pinned();
    let mut pinned_causes = std::collections::BTreeSet::new();
    let mut pinned_exited = 0;
    // To find an allocation: WK_ABORT_ON_ALLOC=1 gdb -ex run -ex bt <this test binary>.
    let abort_on_alloc = std::env::var_os("WK_ABORT_ON_ALLOC").is_some();
    let mut iterations = 0u64;
    let mut after_warmup = NONE;
    let mut seen = Vec::new();
    let mut states = std::collections::BTreeSet::new();
    let mut attempts = 0;
    let mut late_states = std::collections::BTreeSet::new();
    let mut late_attempts = 0;
    let mut transient_seen = false;
    let mut last_touch = 0;
    while now.get() < Instant::from_millis(100_000) || iterations < 10_000 {
        let ms = now.get().as_nanos() / 1_000_000;
        if ms / 200 != last_touch {
            // Beats every 200 ms of simulated time; "flaky" stops at 5 s.
            last_touch = ms / 200;
            touch(&steady);
            touch(&heart);
            touch(&pinned);
            // Killed at 30 s and started again at 32 s: an exit event, then a new pin.
            match ms {
                30_000..30_200 => {
                    pinned_exited = pinned_child.id();
                    let _ = pinned_child.kill();
                    let _ = pinned_child.wait();
                }
                32_000..32_200 => pinned_child = spawn_pinned(),
                _ => {}
            }
            if ms < 5_000 {
                touch(&flaky);
            }
            // After warm-up, hearts come, change, die (and are repaired) and go.
            let hearts = dir.join("hearts");
            match ms {
                10_000..12_000 => std::fs::write(hearts.join("late"), "2\n").unwrap(),
                12_000..20_000 => touch(&hearts.join("late")),
                _ => {}
            }
            match ms {
                13_000..13_200 => std::fs::write(hearts.join("transient"), "5\n").unwrap(),
                13_200..18_000 => touch(&hearts.join("transient")),
                18_000..18_200 => std::fs::remove_file(hearts.join("transient")).unwrap(),
                _ => {}
            }
            match ms {
                15_000..15_200 => std::fs::write(&heart, "10\n").unwrap(),
                25_000..25_200 => std::fs::write(hearts.join("junk"), "soon\n").unwrap(),
                _ => {}
            }
        }
        if ms > 8_000 && abort_on_alloc {
            alloc::abort_on_allocation();
        }
        let (wake, allocations) = counted(|| agent.step());
        // Warm-up: the first 8 s, with the first repair spawned.
        if ms > 8_000 {
            after_warmup += allocations;
            assert_eq!(
                allocations,
                NONE,
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
        // Hearts by order found: backup (3) at the first pass, late (4), transient (5).
        if let Some(view) = agent.supervisor().view(4) {
            late_states.insert(view.state.to_string());
            late_attempts = late_attempts.max(view.repair_attempts);
        }
        transient_seen |= ms > 16_000 && agent.supervisor().view(5).is_some();
        if let Some(cause) = agent.supervisor().view(2).and_then(|v| v.cause) {
            pinned_causes.insert(cause.to_string());
        }
        // Repairs are real processes: while one runs, each turn gives it real time to exit
        // (simulated time outruns it in an optimised build, under qemu-user too).
        let repairing = [1, 4].into_iter().any(|index| {
            agent
                .supervisor()
                .view(index)
                .is_some_and(|view| view.state == watchkeeper::core::supervisor::State::Repairing)
        });
        if repairing || iterations.is_multiple_of(500) {
            std::thread::sleep(Duration::from_millis(1));
        }
        let until = wake.min(now.get().saturating_add(Duration::from_millis(10)));
        let ((), allocations) = counted(|| agent.wait(until));
        if ms > 8_000 {
            assert_eq!(allocations, NONE, "allocation in the wait at {ms} ms");
        }
        iterations += 1;
    }
    assert_eq!(after_warmup, NONE);
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
    // The metrics file was rewritten through all of it, the reset (after warm-up) included.
    let metrics = std::fs::read_to_string(dir.join("prom/watchkeeper.prom")).unwrap();
    for sample in [
        "watchkeeper_reset_pending 1",
        "watchkeeper_boots_ended_total{end=\"forced\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l == sample),
            "no {sample:?} in\n{metrics}"
        );
    }
    let late_repairs: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("watchkeeper_component_repairs_total{component=\"late\"} "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(late_repairs >= u64::from(late_attempts), "{metrics}");
    assert!(
        metrics
            .contains("watchkeeper_last_reset_info{boot=\"1\",end=\"forced\",component=\"flaky\""),
        "{metrics}"
    );
    assert!(level.get(), "LED solid on while the reset is imminent");
    let kernel_log = std::fs::read_to_string(dir.join("kmsg")).unwrap();
    assert!(
        kernel_log.starts_with('<') && kernel_log.contains("watchkeeper["),
        "{kernel_log:?}"
    );
    // What the hearts did after warm-up: "late" found, dead and repaired by the run-time
    // heart's launcher, "transient" found and then removed, "backup" given a new timeout,
    // "junk" refused (no index of its own).
    assert_eq!(late_states, expected, "late: {late_states:?}");
    assert!(
        late_attempts >= 2,
        "late: only {late_attempts} repair attempts"
    );
    assert!(transient_seen, "transient never supervised");
    // The pinned process's exit was seen, from its pidfd, and its successor pinned.
    assert_eq!(
        pinned_causes,
        [format!(
            "process {} from the pidfile is gone",
            pinned_exited
        )]
        .into(),
    );
    let _ = pinned_child.kill();
    let _ = pinned_child.wait();
    assert!(
        agent.supervisor().view(5).is_none(),
        "transient or junk supervised at the end"
    );
    assert_eq!(
        agent.supervisor().policy(3).map(|p| p.timeout),
        Some(Duration::from_secs(10)),
        "backup's new timeout"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

/// The libc counter is live: it sees libc's malloc called directly and from inside libc.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]
#[test]
#[allow(unsafe_code)]
fn the_libc_counter_sees_libc_allocating() {
    // SAFETY: malloc(3) and free(3) of one block.
    let ((), direct) = counted(|| unsafe { libc::free(std::hint::black_box(libc::malloc(16))) });
    assert_eq!(direct, Counts { libc: 1, ..NONE });
    // strdup(3) mallocs inside libc: the interposition reaches libc's internal calls.
    // SAFETY: strdup of a NUL-terminated string, freed once.
    let ((), inside) = counted(|| unsafe { libc::free(libc::strdup(c"heart".as_ptr()).cast()) });
    assert_eq!(inside, Counts { libc: 1, ..NONE });
}

/// The evidence for the defect: std's `Command::spawn` with a piped stdin, as repairs were
/// started before, makes glibc realloc its file actions inside the spawn, which the Rust
/// allocator alone cannot see.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]
#[test]
fn the_old_spawn_path_is_seen_allocating_in_libc() {
    let mut command = std::process::Command::new("/bin/true");
    command.stdin(std::process::Stdio::piped());
    let (child, counts) = counted(|| command.spawn());
    child.unwrap().wait().unwrap();
    assert!(counts.libc_reallocs >= 1, "{counts:?}");
}

/// Many real repairs through the prepared launcher, started and reaped with both counters
/// on, for configured and run-time names alike.
#[test]
fn starting_and_reaping_repairs_allocates_nothing() {
    let dir = temp_dir("spawns");
    let launcher = repair::launcher(
        Path::new(env!("CARGO_BIN_EXE_watchkeeper")),
        &dir,
        &["/bin/true"],
    )
    .unwrap();
    let mut repairs = Repairs::default();
    let names = ["svc", "late-heart", "a", "x".repeat(32).leak()];
    let mut reaped = 0;
    let mut total = NONE;
    for round in 0..100 {
        let name = names[round % names.len()];
        // One component index each: the supervisor never starts a second repair of one.
        let (started, counts) = counted(|| repairs.start(round, name, &launcher));
        started.unwrap();
        total += counts;
        let ((), counts) = counted(|| {
            while let Some((_, exit)) = repairs.reap() {
                assert_eq!(exit, watchkeeper::os::spawn::Exit::Code(0));
                reaped += 1;
            }
        });
        total += counts;
    }
    for _ in 0..2000 {
        if reaped == 100 {
            break;
        }
        let (exit, counts) = counted(|| repairs.reap());
        total += counts;
        match exit {
            Some((_, exit)) => {
                assert_eq!(exit, watchkeeper::os::spawn::Exit::Code(0));
                reaped += 1;
            }
            None => std::thread::sleep(Duration::from_millis(10)),
        }
    }
    assert_eq!(reaped, 100, "the repairs did not all end within 20 s");
    assert_eq!(total, NONE);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn broken_and_recreated_directories_allocate_nothing() {
    watchkeeper::os::logging::init();
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
    let parts = sim_parts(&config, state, &now, &feeds, 7);
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
                NONE,
                "allocation at {ms} ms, after \"{}\"",
                faults[next.saturating_sub(1)].0
            );
        }
        let pattern = agent.supervisor().led_pattern();
        if patterns.last() != Some(&pattern) {
            patterns.push(pattern);
        }
        agent.wait(wake.min(now.get().saturating_add(Duration::from_millis(10))));
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

#[test]
fn telling_the_service_manager_ready_allocates_nothing() {
    watchkeeper::os::logging::init();
    let dir = temp_dir("notify");
    let socket = dir.join("notify.sock");
    let listener = std::os::unix::net::UnixDatagram::bind(&socket).unwrap();
    let mut notifier =
        watchkeeper::os::notify::Notifier::new(socket.as_os_str(), "guarding the board").unwrap();
    let ((), allocations) = counted(|| notifier.ready());
    assert_eq!(allocations, NONE);
    let mut buf = [0u8; 256];
    let n = listener.recv(&mut buf).unwrap();
    assert!(buf[..n].starts_with(b"READY=1\n"));
    // And with nobody listening any more: the failure is logged, still without allocating.
    drop(listener);
    let mut notifier =
        watchkeeper::os::notify::Notifier::new(socket.as_os_str(), "guarding the board").unwrap();
    let ((), allocations) = counted(|| notifier.ready());
    assert_eq!(allocations, NONE);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A daemon that speaks sd_notify (this test process, the component's main process by its
/// pidfile) and a stranger that floods the socket: every message kind, malformed values,
/// an oversized datagram, passed descriptors, the socket removed and bound again, a
/// trigger and its repair, all through the real loop without one allocation.
#[test]
fn sd_notify_messages_and_a_flood_of_strangers_allocate_nothing() {
    use std::os::unix::net::UnixDatagram;
    watchkeeper::os::logging::init();
    let dir = temp_dir("sdnotify");
    let socket = dir.join("notify.sock");
    std::fs::write(dir.join("daemon.pid"), format!("{}\n", std::process::id())).unwrap();
    let text = format!(
        "[watchdog]\ndevice = \"none\"\ntimeout = 4\n[agent]\ncheck_interval = \"10ms\"\n\
         state_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nrealtime_priority = 0\n\
         [notify]\nsocket = \"{s}\"\n\
         [[component]]\nname = \"daemon\"\nliveness = \"notify\"\npidfile = \"{d}/daemon.pid\"\n\
         timeout = \"1s\"\ngrace = \"2s\"\ncritical = false\nrepair = [\"/bin/true\"]\n\
         repair_backoff = \"500ms\"\nrepair_backoff_max = \"1s\"\nmax_repairs = 100\n",
        d = dir.display(),
        s = socket.display()
    );
    let config = config::parse(Path::new("no_alloc.toml"), &text).unwrap();
    let now = Rc::new(Cell::new(Instant::from_millis(1)));
    let feeds = Rc::new(Cell::new(0));
    let (mut state, _) = State::open(&config.agent.state_dir).unwrap();
    state.start_boot("no-alloc-boot", 0, false).1.unwrap();
    let parts = sim_parts(&config, state, &now, &feeds, 9);
    let mut agent = Agent::new(&config, parts).unwrap();
    let daemon = UnixDatagram::unbound().unwrap();
    daemon.set_nonblocking(true).unwrap();
    // The stranger: another process, sending as fast as the socket takes them.
    let flood = format!(
        "import socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         s.setblocking(False)\nn = 0\nend = time.time() + 60\n\
         while n < 100000 and time.time() < end:\n    \
             try:\n        s.sendto(b'WATCHDOG=1\\nSTATUS=forged', '{}'); n += 1\n    \
             except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):\n        time.sleep(0.0002)\n\
         print(n)\n",
        socket.display()
    );
    let mut stranger = None;
    let null = std::fs::File::open("/dev/null").unwrap();
    let send = |text: &[u8]| {
        let _ = daemon.send_to(text, &socket);
    };
    let mut states = std::collections::BTreeSet::new();
    let mut iterations = 0u64;
    let mut last_step = 0;
    let mut removed = false;
    // Simulated time runs far faster than the stranger can send: the loop goes on until it
    // has sent its 10^5 datagrams (or given up after a minute).
    let mut flooding = true;
    while now.get() < Instant::from_millis(20_000) || flooding {
        let ms = now.get().as_nanos() / 1_000_000;
        if ms / 100 != last_step {
            last_step = ms / 100;
            match ms {
                100..200 => send(b"EXTEND_TIMEOUT_USEC=1000000\nSTATUS=starting"),
                500..600 => send(b"READY=1\nSTATUS=serving\nWATCHDOG_USEC=2000000"),
                // A trigger at 8 s, then READY=1 at 9 s (a restart): back.
                8_000..8_100 => send(b"WATCHDOG=trigger"),
                9_000..9_100 => send(b"READY=1\nSTATUS=again"),
                // Silent from 13 s to 16 s: dead at its 2 s timeout, back with the pings.
                13_000..16_000 => {}
                _ => send(b"WATCHDOG=1\nREADY=maybe\nX_OTHER=1"),
            }
            match ms {
                1_000..1_100 => {
                    stranger = Some(
                        std::process::Command::new("python3")
                            .arg("-c")
                            .arg(&flood)
                            .stdout(std::process::Stdio::piped())
                            .stderr(null.try_clone().unwrap())
                            .spawn()
                            .unwrap(),
                    );
                }
                2_000..2_100 => send(&vec![b'x'; 5000]),
                3_000..3_100 => {
                    use std::os::fd::AsFd;
                    let fds = [null.as_fd()];
                    let mut space =
                        [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
                    let mut control = rustix::net::SendAncillaryBuffer::new(&mut space);
                    assert!(control.push(rustix::net::SendAncillaryMessage::ScmRights(&fds)));
                    let _ = rustix::net::sendmsg_addr(
                        &daemon,
                        &rustix::net::SocketAddrUnix::new(&socket).unwrap(),
                        &[std::io::IoSlice::new(b"WATCHDOG=1\nFDSTORE=1")],
                        &mut control,
                        rustix::net::SendFlags::DONTWAIT,
                    );
                }
                5_000..5_100 if !removed => {
                    removed = true;
                    std::fs::remove_file(&socket).unwrap();
                }
                _ => {}
            }
        }
        let (wake, allocations) = counted(|| agent.step());
        if ms > 50 {
            assert_eq!(allocations, NONE, "allocation at {ms} ms");
        }
        if let Some(view) = agent.supervisor().view(0) {
            states.insert(view.state.to_string());
        }
        iterations += 1;
        let ((), allocations) =
            counted(|| agent.wait(wake.min(now.get().saturating_add(Duration::from_millis(10)))));
        assert_eq!(allocations, NONE, "allocation in wait at {ms} ms");
        if ms > 1_100 {
            flooding = stranger
                .as_mut()
                .is_some_and(|child| child.try_wait().unwrap().is_none());
        }
    }
    let sent: u64 = match stranger {
        Some(child) => {
            let out = child.wait_with_output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        }
        None => 0,
    };
    assert_eq!(sent, 100_000, "the stranger gave up");
    assert!(iterations > 1_000, "{iterations} iterations");
    assert!(feeds.get() >= 15, "fed {} times in 20 s", feeds.get());
    // A dead component whose repair runs shows "repairing"; under qemu-user a repair can
    // outlast a death in simulated time.
    assert!(
        states.contains("starting")
            && states.contains("alive")
            && (states.contains("dead") || states.contains("repairing")),
        "{states:?}"
    );
    assert!(socket.exists(), "the removed socket was bound again");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The boot's confirmation (`[boot]`) through the real loop: the trial check's answer read
/// from its pipe, confirm attempts that fail and are retried, then one that succeeds, each
/// step recorded in the history; not one allocation after warm-up.
#[test]
fn confirming_a_boot_allocates_nothing() {
    watchkeeper::os::logging::init();
    let dir = temp_dir("boot");
    let text = format!(
        "[watchdog]\ndevice = \"none\"\ntimeout = 4\n[agent]\ncheck_interval = \"10ms\"\nstate_dir = \"{d}/state\"\nrun_dir = \"{d}/run\"\nrealtime_priority = 0\n\
         [[component]]\nname = \"app\"\nheartbeat = \"{d}/app.beat\"\ntimeout = \"1s\"\ngrace = \"2s\"\n\
         [boot]\nconfirm = [\"/bin/sh\", \"-c\", \"test -e {d}/ok\"]\nconfirm_after = \"1s\"\nconfirm_attempts = 100\n\
         trial = [\"/bin/sh\", \"-c\", \"sleep 2; echo 1\"]\ntrial_value = \"1\"\n",
        d = dir.display()
    );
    let config = config::parse(Path::new("no_alloc.toml"), &text).unwrap();
    let now = Rc::new(Cell::new(Instant::from_millis(1)));
    let (mut state, _) = State::open(&config.agent.state_dir).unwrap();
    state.start_boot("no-alloc-boot", 0, false).1.unwrap();
    let trial = watchkeeper::os::confirm::TrialRun::start(&config.boot.as_ref().unwrap().trial);
    let parts = Parts {
        trial: Some(trial),
        ..sim_parts(&config, state, &now, &Rc::new(Cell::new(0)), 11)
    };
    let mut agent = Agent::new(&config, parts).unwrap();
    let beat = dir.join("app.beat");
    let mut phases = Vec::new();
    let mut last_touch = u64::MAX;
    let mut total = NONE;
    let mut checked_at = None;
    let mut turns = 0u64;
    let real_start = std::time::Instant::now();
    loop {
        let ms = now.get().as_nanos() / 1_000_000;
        if ms / 200 != last_touch {
            last_touch = ms / 200;
            touch(&beat);
        }
        // Failing attempts for the first 20 simulated seconds, then the command succeeds.
        if ms > 20_000 && !dir.join("ok").exists() {
            std::fs::write(dir.join("ok"), b"").unwrap();
        }
        let (wake, allocations) = counted(|| agent.step());
        let ((), waited) =
            counted(|| agent.wait(wake.min(now.get().saturating_add(Duration::from_millis(10)))));
        // Warm-up: the first two turns (the first pass, snapshot and beat).
        if turns >= 2 {
            total += allocations;
            total += waited;
            assert_eq!(
                allocations, NONE,
                "allocation at {ms} ms, phases {phases:?}"
            );
            assert_eq!(waited, NONE, "allocation in the wait at {ms} ms");
        }
        let phase = agent.supervisor().boot_view().unwrap().phase.word();
        if phase != "checking" && checked_at.is_none() {
            checked_at = Some(turns);
        }
        turns += 1;
        if phases.last() != Some(&phase) {
            phases.push(phase);
        }
        if phase == "confirmed" {
            break;
        }
        assert!(
            real_start.elapsed() < Duration::from_secs(60),
            "not confirmed within 60 s (phases {phases:?})"
        );
        // Real processes need real time: about 1 ms of it per 10 simulated.
        std::thread::sleep(Duration::from_millis(1));
    }
    assert_eq!(total, NONE);
    assert_eq!(phases.first(), Some(&"checking"));
    // The check's answer came in the counted part (it takes 2 s of real time).
    assert!(
        checked_at.is_some_and(|turn| turn > 2),
        "answered at turn {checked_at:?}"
    );
    assert!(phases.contains(&"retrying"), "{phases:?}");
    assert_eq!(phases.last(), Some(&"confirmed"));
    let history = State::read_only(&config.agent.state_dir).unwrap().unwrap();
    let boot = history.current().unwrap();
    assert_eq!(boot.confirm, watchkeeper::core::history::Confirm::Confirmed);
    std::fs::remove_dir_all(dir).unwrap();
}
