//! Daemons that speak sd_notify, supervised by the real `watchkeeper` binary on the host:
//! started with `watchkeeper exec`, their messages sent by the host's own `libsystemd`
//! (`sd_notify(3)`, `sd_watchdog_enabled(3)`, called from Python through ctypes), so the
//! client is one no one here wrote. The `none` device, real sockets, real credentials.

use std::fs;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod support;

use support::*;

/// The client: `libsystemd` through ctypes. Its argument is a script of steps, one per
/// word: `ready`, `status=TEXT`, `ping`, `trigger`, `stopping`, `usec=N`, `extend=N` (a
/// message each),
/// `sleep=SECONDS`, `pings=N` (N pings every quarter of the watchdog timeout),
/// `pings_until=PATH` (pings so until PATH exists: the test says when, however slow it is).
const CLIENT: &str = r#"
import ctypes, os, sys, time
lib = ctypes.CDLL("libsystemd.so.0")
usec = ctypes.c_uint64(0)
enabled = lib.sd_watchdog_enabled(0, ctypes.byref(usec))
with open(sys.argv[2], "w") as f:
    f.write("%d %d %d\n" % (enabled, usec.value, os.getpid()))
def notify(text):
    # As daemons do: a message that cannot be sent (no socket for a moment) is not fatal.
    if lib.sd_notify(0, text.encode()) <= 0:
        print("sd_notify(%r) did not send" % text, file=sys.stderr)
for step in sys.argv[1].split():
    word, _, value = step.partition("=")
    if word == "ready": notify("READY=1")
    elif word == "status": notify("STATUS=" + value)
    elif word == "ping": notify("WATCHDOG=1")
    elif word == "trigger": notify("WATCHDOG=trigger")
    elif word == "stopping": notify("STOPPING=1")
    elif word == "usec": notify("WATCHDOG_USEC=" + value)
    elif word == "extend": notify("EXTEND_TIMEOUT_USEC=" + value)
    elif word == "sleep": time.sleep(float(value))
    elif word == "pings":
        for _ in range(int(value)):
            notify("WATCHDOG=1")
            time.sleep(max(usec.value, 400000) / 4e6)
    elif word == "pings_until":
        while not os.path.exists(value):
            notify("WATCHDOG=1")
            time.sleep(max(usec.value, 400000) / 4e6)
time.sleep(60)
"#;

/// A config supervising `daemon` (liveness notify, this timeout and grace, not critical),
/// whose repair leaves `repaired` in the sandbox.
fn notify_config(sb: &Sandbox, timeout: &str, grace: &str, extra: &str) {
    sb.config(&format!(
        "[[component]]\nname = \"daemon\"\nliveness = \"notify\"\ntimeout = \"{timeout}\"\ngrace = \"{grace}\"\n\
         critical = false\nrepair = [\"/bin/sh\", \"-c\", \"touch {d}/repaired\"]\nrepair_backoff = \"30s\"\n{extra}",
        d = sb.dir.display()
    ));
}

/// The states the daemon goes through until `last`, each once in a row ("repairing" is
/// "dead": its repair runs).
fn states_until(sb: &Sandbox, last: &str) -> Vec<String> {
    let mut seen: Vec<String> = Vec::new();
    sb.wait_for(last, Duration::from_secs(30), || {
        let now = state(sb).replace("repairing", "dead");
        // No state at all: the agent has not written its first status snapshot yet.
        if seen.is_empty() && now.is_empty() {
            return false;
        }
        if seen.last() != Some(&now) {
            seen.push(now.clone());
        }
        now == last
    });
    seen
}

/// The agent, started, its notify socket bound. Nothing more is waited for: the daemon's
/// startup grace runs from the agent's start, and under qemu-user a `status` takes seconds.
fn start_agent(sb: &Sandbox) -> Child {
    let agent = sb.start();
    sb.wait_for("the notify socket", Duration::from_secs(20), || {
        sb.path("run/notify").exists()
    });
    agent
}

/// `watchkeeper exec daemon -- python3 CLIENT STEPS`, its environment report in `env`.
fn exec_client(sb: &Sandbox, steps: &str) -> Child {
    let client = sb.path("client.py");
    fs::write(&client, CLIENT).unwrap();
    let mut command = sb.command(&["exec", "daemon", "--", "python3"]);
    command
        .arg(&client)
        .arg(steps)
        .arg(sb.path("env"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(agent_log(sb));
    command.spawn().unwrap()
}

fn daemon(sb: &Sandbox) -> serde_json::Value {
    sb.status_json()["components"][0].clone()
}

fn state(sb: &Sandbox) -> String {
    daemon(sb)["state"].as_str().unwrap_or("").to_owned()
}

#[test]
fn a_daemon_started_by_exec_is_alive_by_its_pings_and_dead_when_they_stop() {
    let sb = Sandbox::new("notify-pings");
    notify_config(&sb, "1s", "4s", "");
    let mut agent = start_agent(&sb);
    let enough = sb.path("enough");
    let mut client = exec_client(
        &sb,
        &format!(
            "status=serving ready pings_until={} stopping",
            enough.display()
        ),
    );
    sb.wait_for("the daemon ready", Duration::from_secs(20), || {
        state(&sb) == "alive"
    });
    assert_eq!(
        daemon(&sb)["daemon"],
        serde_json::json!({"pid": client.id(), "ready": true, "timeout_ms": 1000,
                           "stopping": false, "status": "serving"})
    );
    let text = sb.status();
    assert!(
        text.contains(&format!(
            "daemons (sd_notify):\n  daemon: pid {}, ready, timeout 1s: serving\n",
            client.id()
        )),
        "{text}"
    );
    // What libsystemd made of the environment exec set: enabled, 1 s, its own pid.
    let env = fs::read_to_string(sb.path("env")).unwrap();
    assert_eq!(env, format!("1 1000000 {}\n", client.id()), "{env}");
    let pidfile = fs::read_to_string(sb.path("run/exec/daemon.pid")).unwrap();
    assert_eq!(pidfile.trim(), client.id().to_string());
    assert!(
        sb.log().contains("component daemon: ready (READY=1)"),
        "{}",
        sb.log()
    );
    // The pings stop (the process lives on): dead at the timeout.
    fs::write(&enough, "").unwrap();
    sb.wait_for("the daemon dead", Duration::from_secs(30), || {
        state(&sb) == "dead"
    });
    let reason = daemon(&sb)["reason"].as_str().unwrap_or("").to_owned();
    assert_eq!(reason, "no WATCHDOG=1 for 1s (its timeout)");
    assert_eq!(
        daemon(&sb)["daemon"]["stopping"],
        true,
        "STOPPING=1 is shown"
    );
    assert!(client.try_wait().unwrap().is_none(), "the client lives on");
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut client);
    kill9(&mut agent);
}

#[test]
fn without_ready_a_pinging_daemon_is_starting_then_dead_at_the_grace_end() {
    let sb = Sandbox::new("notify-noready");
    notify_config(&sb, "1s", "4s", "");
    let mut agent = start_agent(&sb);
    let mut client = exec_client(&sb, "pings=1000");
    let seen = states_until(&sb, "dead");
    assert_eq!(
        seen,
        ["starting", "dead"],
        "pings before READY=1 are not life"
    );
    assert_eq!(
        daemon(&sb)["reason"].as_str(),
        Some("no READY=1 within the startup grace period")
    );
    kill9(&mut client);
    kill9(&mut agent);
}

#[test]
fn a_trigger_is_a_death_and_its_repair_starts_at_once() {
    let sb = Sandbox::new("notify-trigger");
    notify_config(&sb, "1s", "4s", "");
    let mut agent = start_agent(&sb);
    let mut client = exec_client(&sb, "ready ping sleep=0.5 trigger pings=1000");
    sb.wait_for("the repair", Duration::from_secs(20), || {
        sb.path("repaired").exists()
    });
    let log = sb.log();
    assert!(
        log.contains("component daemon is dead: it reported its own failure (WATCHDOG=trigger)"),
        "{log}"
    );
    // The failed daemon's own pings do not bring it back.
    std::thread::sleep(Duration::from_secs(2));
    assert_ne!(state(&sb), "alive", "{}", sb.log());
    kill9(&mut client);
    kill9(&mut agent);
}

#[test]
fn watchdog_usec_changes_the_timeout_and_extend_timeout_lengthens_the_startup() {
    let sb = Sandbox::new("notify-usec");
    notify_config(&sb, "1s", "3s", "");
    let mut agent = start_agent(&sb);
    // READY=1 comes 5 s after the client starts, after the 3 s grace: only the 8 s
    // extension keeps the daemon from dying first (it has 3 s to start and send it, for a
    // loaded host under qemu-user). Then pings 3 s apart, which a 1 s timeout would not
    // survive, under its own 5 s.
    let mut client = exec_client(
        &sb,
        "extend=8000000 sleep=5 ready usec=5000000 ping sleep=3 ping sleep=3 ping",
    );
    let seen = states_until(&sb, "dead");
    assert_eq!(seen, ["starting", "alive", "dead"], "{}", sb.log());
    let log = sb.log();
    assert!(
        log.contains("component daemon: its timeout is now 5s (WATCHDOG_USEC)"),
        "{log}"
    );
    assert_eq!(log.matches(" is dead").count(), 1, "{log}");
    assert_eq!(
        daemon(&sb)["reason"].as_str(),
        Some("no WATCHDOG=1 for 5s (its timeout)")
    );
    kill9(&mut client);
    kill9(&mut agent);
}

/// A stranger's pings (not the component's main process) count for nothing, and a flood of
/// them neither stops the agent feeding nor hides the daemon's own messages.
#[test]
fn a_strangers_datagrams_are_ignored_and_a_flood_of_them_changes_nothing() {
    let sb = Sandbox::new("notify-stranger");
    notify_config(&sb, "1s", "4s", "");
    let mut agent = start_agent(&sb);
    let mut client = exec_client(&sb, "ready pings=16");
    sb.wait_for("the daemon ready", Duration::from_secs(20), || {
        state(&sb) == "alive"
    });
    let flood = format!(
        "import socket, time\ns = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
         end = time.time() + 8\nn = 0\n\
         while time.time() < end:\n    \
             try:\n        s.sendto(b'WATCHDOG=1', '{}'); n += 1\n    \
             except BlockingIOError:\n        time.sleep(0.001)\n",
        sb.path("run/notify").display()
    );
    let mut stranger = Command::new("python3")
        .arg("-c")
        .arg(&flood)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    // The daemon's 16 pings end; the stranger's go on: dead all the same.
    sb.wait_for("the daemon dead", Duration::from_secs(30), || {
        state(&sb) == "dead"
    });
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    assert!(stranger.wait().unwrap().success());
    let log = sb.log();
    assert!(
        log.contains("datagram(s), the last from pid")
            && log.contains("(not the main process of a component that listens)"),
        "{log}"
    );
    kill9(&mut client);
    kill9(&mut agent);
}

#[test]
fn a_removed_socket_is_bound_again_and_without_one_the_process_alone_is_judged() {
    let sb = Sandbox::new("notify-socket");
    // The socket's place is taken by a regular file: it cannot be bound.
    let socket = sb.path("notify.sock");
    fs::write(&socket, "in the way").unwrap();
    // A 3 s timeout: pings lost between the removal and the next upkeep must not count.
    notify_config(
        &sb,
        "3s",
        "4s",
        &format!("[notify]\nsocket = \"{}\"\n", socket.display()),
    );
    let mut agent = sb.start();
    let mut client = exec_client(&sb, "");
    sb.wait_for(
        "the daemon alive by its process",
        Duration::from_secs(20),
        || state(&sb) == "alive",
    );
    let log = sb.log();
    assert!(
        log.contains("something that is not a socket is there")
            && log.contains("judged by their process alone"),
        "{log}"
    );
    assert_eq!(sb.status_json()["agent"]["led"], "fault");
    assert_eq!(fs::read_to_string(&socket).unwrap(), "in the way");
    kill9(&mut client);
    sb.wait_for(
        "the daemon dead with its process",
        Duration::from_secs(20),
        || state(&sb) == "dead",
    );
    // The file goes: the next upkeep binds the socket, and messages count again.
    fs::remove_file(&socket).unwrap();
    sb.wait_for("the socket bound", Duration::from_secs(20), || {
        sb.log().contains("listening for sd_notify messages on")
    });
    let mut client = exec_client(&sb, "ready pings=1000");
    sb.wait_for(
        "the daemon alive by its messages",
        Duration::from_secs(20),
        || state(&sb) == "alive",
    );
    // Removed under the agent's feet: bound again.
    fs::remove_file(&socket).unwrap();
    sb.wait_for("the socket bound again", Duration::from_secs(20), || {
        sb.log()
            .contains("removed or replaced by something else; binding it again")
            && socket.exists()
    });
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(state(&sb), "alive", "{}", sb.log());
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut client);
    kill9(&mut agent);
}

/// A daemon says READY=1 once. Started before the agent, `exec` holds it back until the
/// socket listens, so that message is not lost; and a restarted agent carries on from the
/// snapshot its predecessor left: the same process stays ready, with its own timeout and
/// status, where waiting for a second READY=1 would kill it at the grace end.
#[test]
fn exec_waits_for_the_agent_and_a_restarted_agent_keeps_a_ready_daemon_ready() {
    let sb = Sandbox::new("notify-restart");
    notify_config(&sb, "1s", "3s", "");
    let mut client = exec_client(&sb, "status=serving ready usec=2000000 pings=100000");
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !sb.path("env").exists(),
        "the client ran before the agent listened\n{}",
        sb.log()
    );
    let mut agent = sb.start();
    sb.wait_for("the daemon ready", Duration::from_secs(20), || {
        state(&sb) == "alive"
    });
    assert!(
        sb.log().contains("watchkeeper exec: no agent listens on"),
        "{}",
        sb.log()
    );
    let before = daemon(&sb)["daemon"].clone();
    assert_eq!(
        before,
        serde_json::json!({"pid": client.id(), "ready": true, "timeout_ms": 2000,
                           "stopping": false, "status": "serving"})
    );
    kill9(&mut agent);
    let mut agent = sb.start();
    sb.wait_for("the new agent's look", Duration::from_secs(20), || {
        sb.log()
            .contains("is the one the previous agent knew: ready (its READY=1 went to that agent)")
    });
    // The old agent's snapshot stays until the new one writes its own.
    sb.wait_for("the new agent's snapshot", Duration::from_secs(20), || {
        sb.status_json()["agent"]["pid"] == agent.id()
    });
    // Past the 3 s grace, with pings every 0.25 s: alive all along, never starting.
    let since = std::time::Instant::now();
    let mut seen = Vec::new();
    while since.elapsed() < Duration::from_secs(5) {
        let now = state(&sb);
        if seen.last() != Some(&now) {
            seen.push(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(seen, ["alive"], "{}", sb.log());
    assert_eq!(daemon(&sb)["daemon"], before, "carried over whole");
    assert!(!sb.log().contains(" is dead"), "{}", sb.log());
    kill9(&mut client);
    kill9(&mut agent);
}

#[test]
fn exec_starts_the_program_even_when_the_name_is_wrong() {
    let sb = Sandbox::new("notify-typo");
    notify_config(&sb, "1s", "4s", "");
    let out = sb
        .command(&[
            "exec",
            "deamon",
            "--",
            "/bin/sh",
            "-c",
            "echo started; echo $NOTIFY_SOCKET",
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "started\n\n");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has no component \"deamon\""),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = sb.command(&["exec", "daemon"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
}
