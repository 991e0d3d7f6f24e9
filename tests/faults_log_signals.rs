//! Fault tests, real binary: a log that cannot be written (a full pipe or socket nobody
//! drains, a reader gone) and signals (each one an operator or a stray process may send,
//! a flood of them, inherited ignored dispositions and blocked masks). Every test that
//! keeps the agent ends with `assert_alive_and_feeding`.

mod support;
use support::*;

use std::fs::File;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::signal::{SigHandler, SigSet, Signal, kill, signal};
use nix::unistd::{Pid, pipe2};
use watchkeeper::os::signals::HELD;

const FILLER: &[u8] = b"filler\n";
const DROPPED: &str = "dropped: the log was not writable without waiting";

/// Kills its process when the test ends, passed or failed, so that no agent or component
/// outlives a failure (holding the test's pipes, or beating for nobody).
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reaped {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reaped {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// A component `svc` with a pidfile (its death is seen at once) and a short timeout.
fn config_with_component(sb: &Sandbox) {
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\npidfile = \"{d}/svc.pid\"\ntimeout = \"1s\"\n",
        d = sb.dir.display()
    ));
}

fn start_component(sb: &Sandbox) -> Reaped {
    let _ = std::fs::remove_file(sb.path("svc.pid"));
    let component = Reaped(spawn_component(&component_script(sb, "svc")));
    sb.wait_for("the component's pidfile", Duration::from_secs(10), || {
        pid_of(sb, "svc").is_some() && sb.path("svc.beat").exists()
    });
    component
}

/// A death counts once the component was seen alive (before that, its grace runs).
fn wait_alive(sb: &Sandbox) {
    sb.wait_for("the component to be alive", Duration::from_secs(20), || {
        sb.status().contains(" alive ")
    });
}

/// Supervision goes on: `component`, once seen alive, is killed, its death gets its
/// problem file, and the agent still runs and feeds.
fn assert_death_seen(sb: &Sandbox, component: &mut Child, agent: &mut Child) {
    wait_alive(sb);
    kill9(component);
    sb.wait_for("the death's problem file", Duration::from_secs(20), || {
        sb.path("run/problems/svc").exists()
    });
    sb.assert_alive_and_feeding(agent, &sb.path("run"));
}

fn start_agent(sb: &Sandbox, stderr: Stdio) -> Reaped {
    Reaped(
        sb.command(&["run"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap(),
    )
}

/// Starts the agent with its log in `agent.log`, after `prepare` ran in the child just
/// before exec (to give it an inheritance a careless parent could give).
#[allow(unsafe_code)]
fn start_prepared(sb: &Sandbox, prepare: fn() -> nix::Result<()>) -> Reaped {
    let mut command = sb.command(&["run"]);
    // SAFETY: `prepare` only calls sigaction or pthread_sigmask, both async-signal-safe
    // (signal-safety(7)), as a pre_exec closure must be.
    unsafe {
        command.pre_exec(move || prepare().map_err(std::io::Error::from));
    }
    Reaped(spawn_logged(sb, &mut command))
}

fn set_nonblocking(fd: &impl std::os::fd::AsFd, on: bool) {
    let flags = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    let flags = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    fcntl(fd, FcntlArg::F_SETFL(flags)).unwrap();
}

/// Fills a pipe or socket until it takes no more, then makes it blocking again: the agent
/// inherits the same open file description, so it must see a blocking, full stderr.
fn fill(fd: OwnedFd) -> OwnedFd {
    set_nonblocking(&fd, true);
    let mut file = File::from(fd);
    let mut filled = 0;
    loop {
        match file.write(FILLER) {
            Ok(n) => filled += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("filling the log: {e}"),
        }
    }
    assert!(filled > 0);
    let fd = OwnedFd::from(file);
    set_nonblocking(&fd, false);
    fd
}

/// Everything `reader` (non-blocking) holds now.
fn drain(reader: &mut File) -> String {
    let mut text = Vec::new();
    match reader.read_to_end(&mut text) {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        other => panic!("draining the agent's stderr: {other:?}"),
    }
    String::from_utf8(text).unwrap()
}

/// Reads `reader` (non-blocking) until `done` holds for what was read, or fails with what
/// was read and the agent's status.
fn read_until(sb: &Sandbox, reader: &mut File, what: &str, done: impl Fn(&str) -> bool) -> String {
    let mut text = Vec::new();
    let mut buf = [0u8; 65536];
    let start = Instant::now();
    loop {
        match reader.read(&mut buf) {
            Ok(0) => panic!("the agent's stderr was closed\n{}", sb.status()),
            Ok(n) => text.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("reading the agent's stderr: {e}"),
        }
        let so_far = String::from_utf8_lossy(&text).into_owned();
        if done(&so_far) {
            return so_far;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}; the agent wrote:\n{}\n--- status ---\n{}",
            so_far.replace("filler\n", ""),
            sb.status()
        );
    }
}

/// The whole scenario on a stderr that is full before the agent starts: a death is still
/// seen, the agent feeds, and once the log is drained its first line counts the drops.
fn full_log_scenario(tag: &str, write_end: OwnedFd, read_end: OwnedFd) {
    let sb = Sandbox::new(tag);
    config_with_component(&sb);
    let mut component = start_component(&sb);
    let mut agent = start_agent(&sb, Stdio::from(fill(write_end)));
    sb.wait_for("a first feed", Duration::from_secs(20), || {
        sb.last_feed().is_some()
    });
    assert_death_seen(&sb, &mut component, &mut agent);

    let mut reader = File::from(read_end);
    set_nonblocking(&reader, true);
    // Drained before the component comes back, or its line could be dropped too.
    let filled = drain(&mut reader);
    let mut component = start_component(&sb);
    let text = filled
        + &read_until(&sb, &mut reader, "the component back in the log", |t| {
            t.contains("component svc is alive again")
        });
    let mut lines = text.lines().filter(|l| *l != "filler");
    let first = lines.next().unwrap_or_default();
    let count: u64 = first
        .strip_prefix("watchkeeper: WARN ")
        .and_then(|rest| rest.strip_suffix(&format!(" log lines {DROPPED}")))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("the first line after the drain must count the drops:\n{text}"));
    // At least the startup lines and the death were dropped.
    assert!(count >= 3, "{text}");
    assert!(
        !text.contains("watchkeeper: ERROR component svc is dead"),
        "a line was written while the log was full:\n{text}"
    );
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn a_full_stderr_pipe_stops_neither_supervision_nor_the_count() {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).unwrap();
    full_log_scenario("fullpipe", write_end, read_end);
}

#[test]
fn a_full_stderr_socket_stops_neither_supervision_nor_the_count() {
    // journald's stream socket, wedged.
    let (agent_end, reader_end) = UnixStream::pair().unwrap();
    full_log_scenario("fullsock", agent_end.into(), reader_end.into());
}

/// Bit `signal` of a `Sig...` mask line in /proc/PID/status.
fn in_mask(pid: u32, field: &str, signal: Signal) -> bool {
    proc_status_mask(pid, field) & (1 << (signal as u32 - 1)) != 0
}

#[test]
fn a_stderr_whose_reader_is_gone_is_not_fatal() {
    let (read_end, write_end) = pipe2(OFlag::O_CLOEXEC).unwrap();
    drop(read_end);
    let (agent_end, peer) = UnixStream::pair().unwrap();
    drop(peer);
    for (tag, stderr) in [("epipe", write_end), ("epipe-sock", agent_end.into())] {
        let sb = Sandbox::new(tag);
        config_with_component(&sb);
        let mut component = start_component(&sb);
        let mut agent = start_agent(&sb, Stdio::from(stderr));
        sb.wait_for("a first feed", Duration::from_secs(20), || {
            sb.last_feed().is_some()
        });
        assert!(
            in_mask(agent.id(), "SigIgn:", Signal::SIGPIPE),
            "SIGPIPE must be ignored, or the first log line kills the agent"
        );
        assert_death_seen(&sb, &mut component, &mut agent);
        kill9(&mut agent);
    }
}

fn wait_started(sb: &Sandbox) {
    sb.wait_for("startup", Duration::from_secs(20), || {
        sb.path("run/status").exists() && sb.last_feed().is_some()
    });
}

/// `svc` and the agent supervising it, past startup: (component, agent).
fn start_supervising(sb: &Sandbox) -> (Reaped, Reaped) {
    config_with_component(sb);
    let component = start_component(sb);
    let agent = Reaped(sb.start());
    wait_started(sb);
    (component, agent)
}

/// The signals an operator or a stray process sends most (a reload habit, a user signal,
/// an alarm): the agent's own list must hold at least these, whatever else it holds.
const MUST_HOLD: [Signal; 4] = [
    Signal::SIGHUP,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGALRM,
];

#[test]
fn the_held_list_has_the_common_stray_signals() {
    for signal in MUST_HOLD {
        assert!(HELD.contains(&signal), "{signal} must be held: {HELD:?}");
    }
}

#[test]
fn each_held_signal_is_logged_and_survived() {
    let sb = Sandbox::new("held");
    let (mut component, mut agent) = start_supervising(&sb);
    let pid = Pid::from_raw(agent.id() as i32);
    for signal in HELD {
        assert!(
            in_mask(agent.id(), "SigBlk:", signal),
            "{signal} must be blocked"
        );
        kill(pid, signal).unwrap();
        let line = format!("WARN {signal} received (from pid {})", std::process::id());
        sb.wait_for(
            &format!("the {signal} line"),
            Duration::from_secs(10),
            || sb.log().contains(&line),
        );
        sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    }
    let log = sb.log();
    assert!(log.contains("restart it to load a new config"), "{log}");
    assert_death_seen(&sb, &mut component, &mut agent);
    kill9(&mut agent);
}

#[test]
fn a_signal_flood_neither_stops_the_loop_nor_floods_the_log() {
    let sb = Sandbox::new("flood");
    let (mut component, mut agent) = start_supervising(&sb);
    let pid = Pid::from_raw(agent.id() as i32);
    let stop = Arc::new(AtomicBool::new(false));
    let flooding = Arc::clone(&stop);
    // Signals without pause until the checks below are done, at least 20,000 of them.
    let flood = std::thread::spawn(move || {
        let mut sent = 0usize;
        while sent < 20_000 || !flooding.load(Ordering::Relaxed) {
            let signal = [Signal::SIGHUP, Signal::SIGUSR1, Signal::SIGALRM][sent % 3];
            if kill(pid, signal).is_err() {
                break;
            }
            sent += 1;
        }
        sent
    });
    assert_death_seen(&sb, &mut component, &mut agent);
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent >= 20_000, "the agent went away after {sent} signals");
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    sb.wait_for("the SIGALRM line", Duration::from_secs(10), || {
        sb.log().contains("SIGALRM received")
    });
    let log = sb.log();
    for name in ["SIGHUP", "SIGUSR1", "SIGALRM"] {
        let lines = log.lines().filter(|l| l.contains(name)).count();
        // One line a minute: two if this host was slow enough to take over a minute.
        assert!(
            (1..=2).contains(&lines),
            "{lines} lines about {name}, one a minute at most:\n{log}"
        );
    }
    assert!(log.contains("component svc is dead"), "{log}");
    kill9(&mut agent);
}

/// Starts the agent through `sh` with `prelude` run first (a `trap` the agent inherits).
fn start_through_sh(sb: &Sandbox, prelude: &str) -> Reaped {
    let script = format!("{prelude}; exec \"$0\" --config \"$1\" run");
    Reaped(spawn_logged(
        sb,
        sh_command(sb, &script).env("WATCHKEEPER_LOG", "info"),
    ))
}

/// Sends `signal` and expects the agent to end of it, without delay worth a reset.
fn assert_ends_of(sb: &Sandbox, agent: &mut Child, signal: Signal) {
    kill(Pid::from_raw(agent.id() as i32), signal).unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = agent.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(10) {
            kill9(agent);
            panic!("{signal} did not end the agent\n{}", sb.log());
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(
        status.signal(),
        Some(signal as i32),
        "ended by {signal}, no handler: {status}"
    );
}

#[test]
fn term_int_and_quit_end_the_agent_even_when_the_parent_ignored_them() {
    for signal in [Signal::SIGTERM, Signal::SIGINT, Signal::SIGQUIT] {
        let sb = Sandbox::new(&format!("ign-{}", signal.as_str()));
        config_with_component(&sb);
        let name = &signal.as_str()[3..];
        let mut agent = start_through_sh(&sb, &format!("trap '' {name}"));
        wait_started(&sb);
        assert!(!in_mask(agent.id(), "SigIgn:", signal), "{signal} ignored");
        assert_ends_of(&sb, &mut agent, signal);
    }
}

#[test]
fn an_inherited_signal_mask_does_not_keep_sigterm_out() {
    let sb = Sandbox::new("mask");
    config_with_component(&sb);
    let mut agent = start_prepared(&sb, || {
        let mut set = SigSet::empty();
        set.add(Signal::SIGTERM);
        set.add(Signal::SIGINT);
        set.thread_block()
    });
    wait_started(&sb);
    assert!(!in_mask(agent.id(), "SigBlk:", Signal::SIGTERM));
    assert_ends_of(&sb, &mut agent, Signal::SIGTERM);
}

#[test]
#[allow(unsafe_code)]
fn repairs_are_reaped_when_the_parent_ignored_sigchld() {
    let sb = Sandbox::new("chld");
    let repair = sb.path("repair.sh");
    std::fs::write(&repair, "#!/bin/sh\nexit 0\n").unwrap();
    make_executable(&repair);
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\npidfile = \"{d}/svc.pid\"\ntimeout = \"1s\"\nrepair = [\"{r}\"]\nrepair_backoff = \"100ms\"\ncritical = false\n",
        d = sb.dir.display(),
        r = repair.display()
    ));
    let mut component = start_component(&sb);
    let mut agent = start_prepared(&sb, || {
        // SAFETY: SIG_IGN runs no code in the process (signal(2)).
        unsafe { signal(Signal::SIGCHLD, SigHandler::SigIgn) }.map(drop)
    });
    wait_started(&sb);
    assert!(!in_mask(agent.id(), "SigIgn:", Signal::SIGCHLD));
    wait_alive(&sb);
    kill9(&mut component);
    sb.wait_for("a repair reaped", Duration::from_secs(20), || {
        sb.log().contains("repair of svc exited (exit status 0)")
    });
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
}

#[test]
fn the_agent_runs_with_its_standard_streams_closed() {
    // Nothing to write to at all: the log must not end up in a file the agent opens later.
    let sb = Sandbox::new("closed");
    config_with_component(&sb);
    let mut agent = Reaped(
        sh_command(&sb, "exec \"$0\" --config \"$1\" run <&- >&- 2>&-")
            .spawn()
            .unwrap(),
    );
    wait_started(&sb);
    let stderr = std::fs::read_link(format!("/proc/{}/fd/2", agent.id())).unwrap();
    assert_eq!(stderr, Path::new("/dev/null"));
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
}
