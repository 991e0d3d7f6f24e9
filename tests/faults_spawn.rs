//! Repairs as the real agent starts them: an overrunning repair is killed together with
//! what it started, and a repair starts clean (stdin from /dev/null, no signal blocked or
//! ignored, its own process group) whatever the agent's own signal state.

mod support;
use support::*;

use std::fs;
use std::time::Duration;

/// The process's state letter from /proc/PID/stat, or None once it is gone.
fn state(pid: i32) -> Option<char> {
    proc_stat_fields(pid)?.first()?.chars().next()
}

fn gone(pid: i32) -> bool {
    matches!(state(pid), None | Some('Z') | Some('X'))
}

fn read_pid(sb: &Sandbox, name: &str) -> i32 {
    fs::read_to_string(sb.path(name))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn stuck_component(sb: &Sandbox, repair: &str, repair_timeout: &str) -> String {
    format!(
        "[[component]]\nname = \"stuck\"\nheartbeat = \"{d}/stuck.beat\"\ntimeout = \"1s\"\ngrace = \"1s\"\ncritical = false\nrepair = {repair}\nrepair_timeout = \"{repair_timeout}\"\nrepair_backoff = \"30s\"\n",
        d = sb.dir.display()
    )
}

#[test]
fn an_overrunning_repair_is_killed_with_what_it_started() {
    let sb = Sandbox::new("spawn-overrun");
    let script = sb.path("hang.sh");
    // A repair that hangs, with a job of its own in the background, both recorded.
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho $$ > {d}/repair.pid\nsleep 300 &\necho $! > {d}/job.pid\nsleep 300\n",
            d = sb.dir.display()
        ),
    )
    .unwrap();
    make_executable(&script);
    sb.config(&stuck_component(
        &sb,
        &format!("[\"{}\"]", script.display()),
        "1s",
    ));
    let mut agent = sb.start();
    sb.wait_for(
        "the repair to start its job",
        Duration::from_secs(15),
        || {
            sb.path("job.pid").exists()
                && fs::read_to_string(sb.path("job.pid")).is_ok_and(|p| p.ends_with('\n'))
        },
    );
    let repair = read_pid(&sb, "repair.pid");
    let job = read_pid(&sb, "job.pid");
    sb.wait_for("the overrun's SIGTERM", Duration::from_secs(15), || {
        sb.log()
            .contains("repair of stuck overran its timeout: sending SIGTERM")
    });
    sb.wait_for(
        "the repair and its job to end",
        Duration::from_secs(15),
        || gone(repair) && gone(job),
    );
    sb.wait_for("the repair to be reaped", Duration::from_secs(15), || {
        sb.log()
            .contains("repair of stuck exited (killed by SIGTERM)")
    });
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
}

#[test]
fn a_repair_starts_with_dev_null_clean_signals_and_its_own_group() {
    let sb = Sandbox::new("spawn-clean");
    // No shell in between (a shell would clear its signal mask): the repair is sleep itself.
    sb.config(&stuck_component(&sb, "[\"/bin/sleep\", \"30\"]", "60s"));
    let mut agent = sb.start();
    let mut pid = None;
    sb.wait_for("the repair to start", Duration::from_secs(15), || {
        let log = sb.log();
        pid = log
            .lines()
            .find_map(|l| l.split_once("repairing stuck: attempt 1 of 5, pid "))
            .and_then(|(_, p)| p.trim().parse::<i32>().ok());
        pid.is_some()
    });
    let pid = pid.unwrap();
    // The launcher execs the repair program right after it starts.
    sb.wait_for(
        "the launcher to exec sleep",
        Duration::from_secs(15),
        || fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c == "sleep\n"),
    );
    let status = fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert_eq!(proc_status_mask(pid, "SigBlk:"), 0, "{status}");
    // Signals 1 to 31: glibc's posix_spawn leaves its two internal ones (32, 33) ignored.
    assert_eq!(
        proc_status_mask(pid, "SigIgn:") & 0x7fff_ffff,
        0,
        "{status}"
    );
    let stdin = fs::read_link(format!("/proc/{pid}/fd/0")).unwrap();
    assert_eq!(stdin, std::path::Path::new("/dev/null"));
    let stat = proc_stat_fields(pid).unwrap();
    // Field 5 of proc(5): the process group.
    assert_eq!(stat.get(5 - 3), Some(&pid.to_string()), "{stat:?}");
    let environ = fs::read(format!("/proc/{pid}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.contains("WATCHKEEPER_COMPONENT=stuck\0"),
        "{environ}"
    );
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
    kill_pid(pid);
}
