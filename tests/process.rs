//! The real `watchkeeper` binary on the host: the `none` device, real heartbeat files, real
//! repair scripts, real signals. What a user does on a development machine.

use std::fs;
use std::io::Read;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;

use support::*;

#[test]
fn version_and_help() {
    let out = Command::new(BIN).arg("--version").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("watchkeeper 0.1.0 (git "), "{text}");
    assert!(
        text.contains("-linux-"),
        "the target triple is baked in: {text}"
    );
    let out = Command::new(BIN).arg("--help").output().unwrap();
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("status [--json]")
    );
    let out = Command::new(BIN).arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("unknown command: frobnicate")
    );
}

#[test]
fn check_reports_the_line_of_a_bad_value_and_exits_1() {
    let sb = Sandbox::new("check");
    sb.config("[[component]]\nname = \"a\"\nheartbeat = \"/run/a\"\ntimeout = \"soon\"\n");
    let out = sb.run(&["check"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("wk.toml:12:11: expected a duration"), "{err}");
    sb.config("[[component]]\nname = \"a\"\nheartbeat = \"/run/a\"\n");
    let out = sb.run(&["check"]);
    assert!(out.status.success());
    assert!(
        String::from_utf8(out.stdout)
            .unwrap()
            .contains("[[component]] # LED code 1")
    );
}

#[test]
fn a_killed_component_is_marked_repaired_and_cleared() {
    let sb = Sandbox::new("repair");
    let script = component_script(&sb, "svc");
    let restart = sb.path("restart.sh");
    // The repair restarts the component in the background, as an init script would, and
    // records what the agent put in its environment. It restarts it only once the test
    // has read the problem file (`go`, or 10 s): a quick repair clears it within a poll.
    fs::write(
        &restart,
        format!(
            "#!/bin/sh\necho \"$WATCHKEEPER_COMPONENT $WATCHKEEPER_PROBLEM $(cat /proc/self/oom_score_adj)\" >> {d}/repairs\ni=0\nwhile [ ! -e {d}/go ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i + 1)); done\nsetsid {s} </dev/null >/dev/null 2>&1 &\n",
            d = sb.dir.display(),
            s = script.display()
        ),
    )
    .unwrap();
    make_executable(&restart);
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\npidfile = \"{d}/svc.pid\"\ntimeout = \"1s\"\nrepair = [\"{r}\"]\nrepair_backoff = \"1s\"\nreset_after = \"60s\"\n",
        d = sb.dir.display(),
        r = restart.display()
    ));
    let mut component = spawn_component(&script);
    let mut agent = sb.start();
    sb.wait_for("the component to be alive", Duration::from_secs(10), || {
        sb.status().contains(" alive ")
    });
    let problem = sb.path("run/problems/svc");
    kill9(&mut component);
    let killed = Instant::now();
    sb.wait_for("the problem file", Duration::from_secs(5), || {
        problem.exists()
    });
    let detection = killed.elapsed();
    // The pidfile makes the death immediate: well under the 1 s heartbeat timeout.
    assert!(
        detection < Duration::from_millis(900),
        "detected after {detection:?}"
    );
    assert!(
        fs::read_to_string(&problem)
            .unwrap()
            .starts_with("watchkeeper: process ")
    );
    fs::write(sb.path("go"), b"").unwrap();
    sb.wait_for(
        "the repair to bring it back",
        Duration::from_secs(10),
        || !problem.exists(),
    );
    let repairs = fs::read_to_string(sb.path("repairs")).unwrap();
    // Name and problem file in the environment; not the agent's OOM protection.
    assert_eq!(
        repairs.lines().next().unwrap(),
        format!("svc {} 0", problem.display())
    );
    let log = sb.log();
    assert!(log.contains("component svc is dead: process"), "{log}");
    assert!(log.contains("repairing svc: attempt 1 of 5"), "{log}");
    assert!(log.contains("component svc is alive again"), "{log}");
    assert!(!log.contains("forcing a board reset"), "{log}");
    kill9(&mut agent);
    if let Some(pid) = pid_of(&sb, "svc") {
        kill_pid(pid);
    }
}

#[test]
fn a_component_that_stays_dead_forces_a_recorded_reset() {
    let sb = Sandbox::new("reset");
    sb.config(&format!(
        "[[component]]\nname = \"gone\"\nheartbeat = \"{d}/gone.beat\"\ntimeout = \"500ms\"\ngrace = \"500ms\"\nreset_after = \"1s\"\n",
        d = sb.dir.display()
    ));
    let mut agent = sb.start();
    sb.wait_for("the reset decision", Duration::from_secs(10), || {
        sb.log().contains("forcing a board reset")
    });
    let status = sb.status();
    assert!(status.contains("RESETTING"), "{status}");
    assert!(status.contains("fault LED: reset imminent"), "{status}");
    // The device is "none": the agent must log, never reboot this host.
    sb.wait_for("the fallback decision", Duration::from_secs(15), || {
        sb.log().contains("not rebooting this host")
    });
    kill9(&mut agent);
    let json = sb.status_json();
    let boot = &json["boots"][0];
    assert_eq!(boot["end"], "forced", "{json}");
    assert_eq!(boot["component"], "gone", "{json}");
    assert!(
        boot["reason"].as_str().unwrap().contains("no heartbeat at"),
        "{json}"
    );
    assert_eq!(json["agent"]["running"], false, "{json}");
}

#[test]
fn a_shutdown_is_recorded_and_an_agent_started_again_in_the_boot_takes_it_back() {
    let sb = Sandbox::new("shutdown");
    sb.config(&format!(
        "[hearts]\ndir = \"{d}/hearts\"\ncritical = false\n",
        d = sb.dir.display()
    ));
    // No agent has run in this boot: the command records the boot's start too.
    let out = sb.run(&["shutdown"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    assert!(said.contains("shutdown recorded"), "{said}");
    let json = sb.status_json();
    let boot = &json["boots"][0];
    assert_eq!(boot["end"], "shutdown", "{json}");
    assert!(
        boot["reason"].as_str().unwrap().contains("after 120 s"),
        "the default bound: {json}"
    );
    assert!(sb.status().contains("shutdown by an operator"));
    // The boot went on after all: its end is open again.
    let mut agent = sb.start();
    sb.wait_for(
        "the agent's restart in the boot",
        Duration::from_secs(10),
        || sb.log().contains("restarted within the same boot"),
    );
    sb.wait_for(
        "the record back to running",
        Duration::from_secs(10),
        || sb.status_json()["boots"][0]["end"] == "running",
    );
    kill9(&mut agent);
}

#[test]
fn a_healthy_agent_feeds_and_status_says_when() {
    let sb = Sandbox::new("feeds");
    let (mut component, mut agent) = start_with_svc(&sb, "");
    let json = sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    let age = json["agent"]["fed_age_ms"].as_u64().unwrap();
    assert!(age < 10_000, "{json}");
    // device = "none": there was nothing to take over (the QEMU scenarios see the others).
    assert_eq!(json["agent"]["watchdog_at_takeover"], "none", "{json}");
    assert!(sb.status().contains("watchdog: last fed "));
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn sigterm_ends_the_agent_at_once() {
    let sb = Sandbox::new("term");
    sb.config(&format!(
        "[[component]]\nname = \"a\"\nheartbeat = \"{}/a.beat\"\n",
        sb.dir.display()
    ));
    let mut agent = sb.start();
    sb.wait_for("startup", Duration::from_secs(5), || {
        sb.path("run/status").exists()
    });
    let sent = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(agent.id().to_string())
        .status()
        .unwrap();
    let status = agent.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(
        status.signal(),
        Some(15),
        "killed by SIGTERM, no handler, no shutdown path"
    );
    assert!(sent.elapsed() < Duration::from_secs(1));
}

#[test]
fn a_broken_config_falls_back_to_the_last_good_one() {
    let sb = Sandbox::new("fallback");
    let (mut component, mut agent) = start_with_svc(&sb, "timeout = \"1s\"\n");
    let good = sb.path("wk.toml");
    sb.wait_for("the component to be alive", Duration::from_secs(10), || {
        sb.status().contains(" alive ")
    });
    kill9(&mut agent);
    // An update leaves a typo on disk: the restarted agent keeps supervising with the
    // last good config and shows the fault.
    let text = fs::read_to_string(&good)
        .unwrap()
        .replace("timeout = \"1s\"", "timeout = \"1 s\"");
    fs::write(&good, text).unwrap();
    let mut agent = sb.start();
    sb.wait_for("the fallback", Duration::from_secs(10), || {
        sb.log().contains("falling back to the last good config")
    });
    sb.wait_for(
        "the component alive under the old config",
        Duration::from_secs(10),
        || sb.status().contains(" alive "),
    );
    let status = String::from_utf8(sb.run(&["status"]).stdout).unwrap();
    assert!(status.contains("fault LED: fault"), "{status}");
    let log = sb.log();
    assert!(
        log.contains("config error:") && log.contains("wk.toml:12:11"),
        "{log}"
    );
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn beat_touches_by_name_and_refuses_unknown_names() {
    let sb = Sandbox::new("beat");
    sb.config(&format!(
        "[hearts]\ndir = \"{d}/hearts\"\n[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\n",
        d = sb.dir.display()
    ));
    assert!(sb.run(&["beat", "svc"]).status.success());
    assert!(sb.path("svc.beat").exists());
    fs::create_dir_all(sb.path("hearts")).unwrap();
    fs::write(sb.path("hearts/job"), "30\n").unwrap();
    assert!(sb.run(&["beat", "job"]).status.success());
    assert_eq!(fs::read_to_string(sb.path("hearts/job")).unwrap(), "30\n");
    let out = sb.run(&["beat", "nobody"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("cannot touch")
    );
    let out = sb.run(&["disarm"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8(out.stderr)
            .unwrap()
            .contains("nothing to disarm")
    );
}

#[test]
fn hearts_are_supervised_and_hostile_entries_refused() {
    let sb = Sandbox::new("hearts");
    sb.config(&format!(
        "[hearts]\ndir = \"{d}/hearts\"\ngrace = \"5s\"\ncritical = false\n",
        d = sb.dir.display()
    ));
    let hearts = sb.path("hearts");
    fs::create_dir_all(&hearts).unwrap();
    fs::write(sb.path("secret"), "do not read").unwrap();
    std::os::unix::fs::symlink(sb.path("secret"), hearts.join("link")).unwrap();
    mkfifo(&hearts.join("fifo"));
    fs::write(hearts.join("huge"), vec![b'1'; 1 << 20]).unwrap();
    fs::write(hearts.join("ok"), "1\n").unwrap();
    let mut agent = sb.start();
    sb.wait_for("the heart", Duration::from_secs(5), || {
        sb.log().contains("heart ok found (timeout 1s")
    });
    // The beat comes after the baseline look; then silence kills it.
    sb.run(&["beat", "ok"]);
    sb.wait_for("the heart to die", Duration::from_secs(10), || {
        sb.path("run/problems/ok").exists()
    });
    let log = sb.log();
    assert!(
        log.contains("refused \"link\": is a symbolic link"),
        "{log}"
    );
    assert!(
        log.contains("refused \"fifo\": is not a regular file"),
        "{log}"
    );
    assert!(
        log.contains("heart huge: heart file is larger than 32 bytes"),
        "{log}"
    );
    assert!(sb.path("run/problems/huge").exists());
    assert!(!log.contains("do not read"));
    fs::remove_file(hearts.join("ok")).unwrap();
    sb.wait_for("the heart's removal", Duration::from_secs(5), || {
        !sb.path("run/problems/ok").exists()
    });
    kill9(&mut agent);
}

/// The crash-only litmus test: kill -9 the agent at random instants while it writes its
/// state; every file it keeps must stay readable and whole.
#[test]
fn kill_9_mid_write_leaves_every_state_file_readable() {
    let sb = Sandbox::new("kill9");
    let script = component_script(&sb, "flappy");
    // A component that dies every 300 ms: problem files, the status snapshot and the
    // history are rewritten all the time.
    fs::write(
        &script,
        format!("#!/bin/sh\nwhile true; do touch {d}/flappy.beat; sleep 0.05; touch {d}/flappy.beat; sleep 0.4; done\n", d = sb.dir.display()),
    )
    .unwrap();
    sb.config(&format!(
        "[[component]]\nname = \"flappy\"\nheartbeat = \"{d}/flappy.beat\"\ntimeout = \"300ms\"\ngrace = \"1s\"\nreset_after = \"1h\"\n",
        d = sb.dir.display()
    ));
    let mut component = spawn_component(&script);
    let mut seed = 0x2545_F491_4F6C_DD1Du64;
    for round in 0..20 {
        let mut agent = sb.start();
        if round == 0 {
            // Every later kill may land mid-write; this one must not land before the first
            // writes (under qemu-user on a busy host, startup alone can outlast the sleep).
            sb.wait_for(
                "the first history and status",
                Duration::from_secs(30),
                || sb.path("state/history").exists() && sb.path("run/status").exists(),
            );
        }
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        std::thread::sleep(Duration::from_millis(150 + seed % 1200));
        kill9(&mut agent);
        let history = fs::read_to_string(sb.path("state/history")).unwrap();
        assert!(
            history.starts_with("watchkeeper-history 2\n"),
            "round {round}: {history:?}"
        );
        assert!(
            history.ends_with('\n'),
            "round {round}: torn history {history:?}"
        );
        let mut status = String::new();
        fs::File::open(sb.path("run/status"))
            .unwrap()
            .read_to_string(&mut status)
            .unwrap();
        assert!(
            status.starts_with("watchkeeper-status 6\n") && status.ends_with('\n'),
            "round {round}: {status:?}"
        );
        if let Ok(problem) = fs::read_to_string(sb.path("run/problems/flappy")) {
            assert!(
                problem.starts_with("watchkeeper: ") && problem.ends_with('\n'),
                "round {round}: {problem:?}"
            );
        }
        let json = sb.status_json();
        assert_eq!(json["boots"][0]["number"], 1, "round {round}: {json}");
    }
    let log = sb.log();
    assert!(
        log.contains("component flappy is dead"),
        "the component must have flapped: {log}"
    );
    kill9(&mut component);
}

/// `/dev/full` stands for a watchdog that opens but cannot be fed: no watchdog ioctl (ENOTTY),
/// so the agent pings by write(2), which fails with ENOSPC.
#[test]
fn a_first_feed_that_fails_still_ends_the_start_job_and_says_the_board_is_not_guarded() {
    use std::os::unix::net::UnixDatagram;
    let sb = Sandbox::new("notify-unfed");
    let socket = sb.path("notify.sock");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    sb.config_text(&sb.header().replace("\"none\"", "\"/dev/full\""));
    let mut command = sb.command(&["run"]);
    command.env("NOTIFY_SOCKET", &socket);
    let mut agent = spawn_logged(&sb, &mut command);
    let mut buf = [0u8; 512];
    let n = listener
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no readiness ({e})\n{}", sb.log()));
    let message = std::str::from_utf8(&buf[..n]).unwrap();
    assert_eq!(
        message,
        format!(
            "READY=1\nMAINPID={}\nSTATUS={}",
            agent.id(),
            "NOT GUARDED: the watchdog device is open but the first feed failed (see the log); it resets the board if it still counts"
        )
    );
    // The fed file's time is its creation until a feed succeeds: it must not move.
    let created = sb.last_feed();
    sb.wait_for("the feed error in the log", Duration::from_secs(20), || {
        sb.log().contains("/dev/full: keepalive failed")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(sb.last_feed(), created, "a failed feed is not a feed");
    assert!(agent.try_wait().unwrap().is_none(), "the agent must go on");
    kill9(&mut agent);
}

#[test]
fn a_service_manager_hears_ready_after_the_first_feed_and_repairs_do_not_inherit_its_socket() {
    use std::os::unix::net::UnixDatagram;
    let sb = Sandbox::new("notify");
    let socket = sb.path("notify.sock");
    let listener = UnixDatagram::bind(&socket).unwrap();
    listener
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // A component that never beats: its repair records the environment it was given.
    let env_file = sb.path("repair.env");
    sb.config(&format!(
        "[[component]]\nname = \"mute\"\nheartbeat = \"{d}/mute.beat\"\ntimeout = \"1s\"\ngrace = \"100ms\"\ncritical = false\nrepair = [\"/bin/sh\", \"-c\", \"env > {e}\"]\n",
        d = sb.dir.display(),
        e = env_file.display()
    ));
    let mut command = sb.command(&["run"]);
    command.env("NOTIFY_SOCKET", &socket);
    let mut agent = spawn_logged(&sb, &mut command);
    let mut buf = [0u8; 512];
    let n = listener
        .recv(&mut buf)
        .unwrap_or_else(|e| panic!("no readiness ({e})\n{}", sb.log()));
    let message = std::str::from_utf8(&buf[..n]).unwrap();
    assert!(
        sb.last_feed().is_some(),
        "READY=1 before the first feed: {message}"
    );
    assert_eq!(
        message,
        format!(
            "READY=1\nMAINPID={}\nSTATUS=no watchdog device (device = \"none\"): decisions are only logged",
            agent.id()
        )
    );
    sb.wait_for("the repair's environment", Duration::from_secs(20), || {
        fs::read_to_string(&env_file).is_ok_and(|e| e.contains("WATCHKEEPER_COMPONENT=mute"))
    });
    let env = fs::read_to_string(&env_file).unwrap();
    assert!(!env.contains("NOTIFY_SOCKET"), "{env}");
    listener
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    assert!(listener.recv(&mut buf).is_err(), "readiness sent twice");
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
}
