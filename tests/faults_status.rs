//! Fault tests of `watchkeeper status` and `check`, on the real binary: a status snapshot
//! that is not a regular file, too large, garbage or forged; problem files that are
//! FIFOs, symlinks, huge or full of control bytes; a history whose newest record is not
//! this boot; a stdout that is closed, broken or full; odd characters in configured paths.
//! Nothing may hang (every command has a deadline), panic or reach the terminal raw.

mod support;
use support::*;

use std::fs;
use std::io::Read as _;
use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use watchkeeper::os::state::State;
use watchkeeper::snapshot::{AgentRecord, ComponentRecord, Identity, Writer};

const BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

fn this_boot() -> String {
    fs::read_to_string(BOOT_ID).unwrap().trim().to_owned()
}

/// Field 22 of `/proc/PID/stat`: when the process started.
fn start_time(pid: u32) -> u64 {
    let fields = proc_stat_fields(pid).unwrap_or_else(|| panic!("no /proc/{pid}/stat"));
    fields[22 - 3].parse().unwrap()
}

/// A snapshot as the agent would write it, naming `pid`.
fn forged(pid: u32, start_time: u64, boot_id: &str) -> String {
    let mut out: heapless::String<{ watchkeeper::limits::MAX_STATUS_LEN }> =
        heapless::String::new();
    let agent = AgentRecord {
        identity: Identity {
            pid,
            start_time,
            boot_id,
        },
        written_ms: 1,
        led: "healthy",
        hold: false,
        resetting: false,
        config: b"/etc/forged.toml",
        takeover: "stopped",
    };
    let mut writer = Writer::new(&mut out, &agent).unwrap();
    writer.component(&ComponentRecord {
        name: "forged",
        position: 1,
        state: "alive",
        since_ms: 0,
        repairs: 0,
        reason: None::<&str>,
        daemon: None,
    });
    writer.finish().unwrap();
    out.as_str().to_owned()
}

/// A sandbox with no component, its run directory created, no agent.
fn idle(tag: &str) -> Sandbox {
    let sb = Sandbox::new(tag);
    sb.config("");
    fs::create_dir_all(sb.path("run/problems")).unwrap();
    sb
}

fn no_panic(what: &str, stderr: &[u8]) {
    let stderr = String::from_utf8_lossy(stderr);
    assert!(
        !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
        "{what}: {stderr}"
    );
}

/// The command ended with `code`, without a panic.
fn ended_with(what: &str, code: i32, status: ExitStatus, stderr: &[u8]) {
    no_panic(what, stderr);
    assert_eq!(
        status.code(),
        Some(code),
        "{what}: {status}: {}",
        String::from_utf8_lossy(stderr)
    );
}

/// `status` (text) and `status --json` (parsed); both must succeed without a panic and
/// without a raw control byte in the text.
fn both(sb: &Sandbox) -> (String, Value) {
    let out = sb.run(&["status"]);
    no_panic("status", &out.stderr);
    assert!(out.status.success(), "status: {out:?}");
    assert!(
        !out.stdout
            .iter()
            .any(|b| (*b < 0x20 && *b != b'\n') || *b == 0x7f),
        "raw control bytes reach the terminal: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    let text = String::from_utf8(out.stdout).expect("status output is UTF-8");
    (text, sb.status_json())
}

/// Puts a hostile file in place of the snapshot.
type Maker<'a> = Box<dyn Fn() + 'a>;

#[test]
fn a_snapshot_that_is_not_a_regular_file_is_refused_at_once() {
    let sb = idle("snap-kinds");
    let status = sb.path("run/status");
    let cases: Vec<(&str, Maker, &str)> = vec![
        ("a FIFO", Box::new(|| mkfifo(&status)), "not a regular file"),
        (
            "a symlink to /dev/zero",
            Box::new(|| symlink("/dev/zero", &status).unwrap()),
            "symbolic link",
        ),
        (
            "a symlink to a good snapshot",
            Box::new(|| {
                let me = std::process::id();
                fs::write(sb.path("real"), forged(me, start_time(me), &this_boot())).unwrap();
                symlink(sb.path("real"), &status).unwrap()
            }),
            "symbolic link",
        ),
        (
            "a directory",
            Box::new(|| fs::create_dir(&status).unwrap()),
            "not a regular file",
        ),
        (
            "a huge file",
            Box::new(|| fs::write(&status, vec![b'a'; 64 << 20]).unwrap()),
            "larger than",
        ),
    ];
    for (what, make, says) in cases {
        make();
        let start = Instant::now();
        let (text, json) = both(&sb);
        assert!(start.elapsed() < Duration::from_secs(8), "{what}: too slow");
        assert!(text.contains("watchkeeper: UNKNOWN"), "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
        assert_eq!(json["agent"]["running"], false, "{what}: {json}");
        assert_eq!(
            json["agent"]["state"], "unreadable_snapshot",
            "{what}: {json}"
        );
        let _ = fs::remove_file(&status).or_else(|_| fs::remove_dir(&status));
    }
}

#[test]
fn a_garbage_or_foreign_snapshot_is_said_to_be_one() {
    let sb = idle("snap-garbage");
    let status = sb.path("run/status");
    let me = std::process::id();
    let good = forged(me, start_time(me), &this_boot());
    let cut = good.len() - 5;
    let cases: Vec<(&str, Vec<u8>, &str, &str)> = vec![
        ("empty", Vec::new(), "bad_snapshot", "empty"),
        ("NUL bytes", vec![0; 4096], "bad_snapshot", "does not start"),
        (
            "invalid UTF-8",
            good.replace("/etc/forged.toml", "/etc/\u{1}")
                .as_bytes()
                .iter()
                .map(|b| if *b == 1 { 0xff } else { *b })
                .collect(),
            "bad_snapshot",
            "not UTF-8",
        ),
        (
            "a NUL in a field",
            good.replacen("forged", "for\0ged", 1).into_bytes(),
            "bad_snapshot",
            "control byte",
        ),
        (
            "cut short",
            good.as_bytes()[..cut].to_vec(),
            "bad_snapshot",
            "cut short",
        ),
        (
            "the old format",
            format!("watchkeeper-status 1\nagent\t{me}\t1\thealthy\t0\t0\t/etc/wk.toml\n")
                .into_bytes(),
            "other_version",
            "format version 1",
        ),
        (
            "a newer format",
            b"watchkeeper-status 7\nwhatever\n".to_vec(),
            "other_version",
            "format version 7",
        ),
        (
            "terminal escapes",
            b"\x1b]0;owned\x07\x1b[2J".to_vec(),
            "bad_snapshot",
            "does not start",
        ),
    ];
    for (what, bytes, state, says) in cases {
        fs::write(&status, &bytes).unwrap();
        let (text, json) = both(&sb);
        assert!(text.contains("watchkeeper: UNKNOWN"), "{what}: {text}");
        assert!(text.contains(says), "{what}: {text}");
        assert_eq!(json["agent"]["running"], false, "{what}: {json}");
        assert_eq!(json["agent"]["state"], state, "{what}: {json}");
    }
}

#[test]
fn a_snapshot_naming_another_process_is_not_a_running_agent() {
    let sb = idle("snap-forged");
    let status = sb.path("run/status");
    let mut sleep = Command::new("sleep").arg("60").spawn().unwrap();
    let me = std::process::id();
    let mut dead = Command::new("true").spawn().unwrap();
    let dead_pid = dead.id();
    dead.wait().unwrap();
    let boot = this_boot();
    let cases = [
        // The right start time: only the check of what the process is can tell.
        (
            "a live sleep",
            forged(sleep.id(), start_time(sleep.id()), &boot),
            "not_watchkeeper",
        ),
        // A reused pid: the process started at another time.
        (
            "a reused pid",
            forged(me, start_time(me) + 1000, &boot),
            "pid_reused",
        ),
        (
            "pid 1, started later",
            forged(1, start_time(1) + 1000, &boot),
            "pid_reused",
        ),
        ("a dead pid", forged(dead_pid, 5, &boot), "gone"),
        (
            "another boot",
            forged(me, start_time(me), "another-boot-id"),
            "other_boot",
        ),
    ];
    // This test's own process, with its right start time. Under qemu-user (the ARM runs)
    // the kernel sees this process and `status` as the same program, the emulator, so only
    // a native run can tell them apart by program; the live `sleep` above covers the check
    // there.
    let host_exe = Command::new("readlink")
        .arg(format!("/proc/{me}/exe"))
        .output()
        .unwrap();
    let native = String::from_utf8_lossy(&host_exe.stdout).trim()
        == std::env::current_exe().unwrap().to_string_lossy();
    let this_test = (
        "this test",
        forged(me, start_time(me), &boot),
        "not_watchkeeper",
    );
    if !native {
        println!("qemu-user: the case \"this test\" cannot be told by program; not run");
    }
    let cases = cases.into_iter().chain(native.then_some(this_test));
    for (what, text, state) in cases {
        fs::write(&status, text).unwrap();
        let (text, json) = both(&sb);
        assert!(
            text.starts_with("watchkeeper: NOT RUNNING"),
            "{what}: {text}"
        );
        assert!(!text.contains("forged.toml"), "{what}: {text}");
        if state == "pid_reused" || state == "not_watchkeeper" {
            assert!(
                text.contains(" in the snapshot is now another process"),
                "{what}: {text}"
            );
        }
        assert_eq!(json["agent"]["running"], false, "{what}: {json}");
        assert_eq!(json["agent"]["state"], state, "{what}: {json}");
    }
    sleep.kill().unwrap();
    sleep.wait().unwrap();
}

#[test]
fn an_agent_that_died_is_not_running_and_a_new_one_is() {
    let sb = Sandbox::new("snap-died");
    let (mut component, mut agent) = start_with_svc(&sb, "timeout = \"2s\"\n");
    sb.wait_for("the agent's snapshot", Duration::from_secs(10), || {
        sb.status_json()["agent"]["running"] == true
    });
    let json = sb.status_json();
    assert_eq!(json["agent"]["state"], "running", "{json}");
    assert_eq!(json["agent"]["pid"], agent.id(), "{json}");
    kill9(&mut agent);
    let (text, json) = both(&sb);
    assert!(text.starts_with("watchkeeper: NOT RUNNING"), "{text}");
    assert_eq!(json["agent"]["state"], "gone", "{json}");
    let mut agent = sb.start();
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn hostile_problem_files_are_shown_escaped_and_never_followed() {
    let sb = Sandbox::new("problems");
    let (mut component, mut agent) = start_with_svc(&sb, "timeout = \"2s\"\n");
    let problems = sb.path("run/problems");
    sb.wait_for("the problems directory", Duration::from_secs(10), || {
        problems.is_dir()
    });
    mkfifo(&problems.join("fifo"));
    symlink("/dev/zero", problems.join("zero")).unwrap();
    symlink("/etc/hostname", problems.join("hostname")).unwrap();
    fs::create_dir(problems.join("subdir")).unwrap();
    fs::write(problems.join("huge"), vec![b'x'; 8 << 20]).unwrap();
    let evil_name = std::ffi::OsStr::from_bytes(b"evil\x1b[31m\x07\tname\xff");
    fs::write(
        problems.join(evil_name),
        b"tool: \x1b]0;owned\x07\x1b[2J\r\nsecond line\tand\0nul \xfe\n",
    )
    .unwrap();
    fs::write(problems.join("plain"), b"monitor: disk almost full\n").unwrap();
    let (text, json) = both(&sb);
    assert!(
        text.contains("  evil\\x1b[31m\\x07\\tname\\xff: tool: \\x1b]0;owned\\x07\\x1b[2J\\r\\nsecond line\\tand\\x00nul \\xfe (noticed "),
        "{text}"
    );
    assert!(
        text.contains("  fifo: is not a regular file; not read"),
        "{text}"
    );
    assert!(text.contains("  zero: is a symbolic link"), "{text}");
    assert!(text.contains("  hostname: is a symbolic link"), "{text}");
    assert!(text.contains("  subdir: is not a regular file"), "{text}");
    assert!(
        text.contains("  plain: monitor: disk almost full (noticed"),
        "{text}"
    );
    assert!(text.contains(" [cut] (noticed"), "{text}");
    let list = json["problems"].as_array().unwrap();
    let find = |name: &str| {
        list.iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("no problem {name}: {json}"))
    };
    assert_eq!(find("huge")["cut"], true);
    assert_eq!(find("huge")["content"].as_str().unwrap().len(), 512);
    assert!(
        find("fifo")["error"]
            .as_str()
            .unwrap()
            .contains("not a regular file")
    );
    assert!(
        find("zero")["error"]
            .as_str()
            .unwrap()
            .contains("symbolic link")
    );
    assert!(find("plain")["content"] == "monitor: disk almost full");
    let evil = find("evil\u{1b}[31m\u{7}\tname\u{fffd}");
    assert!(
        evil["content"].as_str().unwrap().contains("\u{1b}]0;owned"),
        "{json}"
    );
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn the_current_boot_is_told_by_its_boot_id() {
    let sb = idle("boots");
    let state_dir = sb.path("state");
    // A boot that was reset while its state disk was full: nothing recorded since.
    let (mut state, _) = State::open(&state_dir).unwrap();
    state
        .start_boot("00000000-0000-0000-0000-000000000001", 1_700_000_000, false)
        .1
        .unwrap();
    drop(state);
    let (text, json) = both(&sb);
    assert!(!text.contains("current boot"), "{text}");
    assert!(text.contains("ended without a record"), "{text}");
    assert!(text.contains("this boot (id "), "{text}");
    assert_eq!(json["boots"][0]["end"], "unrecorded", "{json}");
    assert_eq!(json["boots"][0]["current"], false, "{json}");
    assert_eq!(json["this_boot"]["boot_id"], this_boot(), "{json}");
    assert_eq!(json["this_boot"]["recorded"], false, "{json}");
    // This boot recorded: the older record is closed and this one is current.
    let (mut state, _) = State::open(&state_dir).unwrap();
    state
        .start_boot(&this_boot(), 1_700_000_100, false)
        .1
        .unwrap();
    drop(state);
    let (text, json) = both(&sb);
    assert!(text.contains(": current boot"), "{text}");
    assert!(!text.contains("this boot (id "), "{text}");
    assert_eq!(json["boots"][0]["current"], true, "{json}");
    assert_eq!(json["boots"][0]["end"], "running", "{json}");
    assert_eq!(json["boots"][1]["current"], false, "{json}");
    assert_ne!(json["boots"][1]["end"], "running", "{json}");
    assert_eq!(json["this_boot"]["recorded"], true, "{json}");
}

/// Runs `command` with its stdout set by the caller and stderr captured, under the
/// deadline; returns how it ended and its stderr.
fn run_to_end(command: &mut Command, what: &str) -> (ExitStatus, Vec<u8>) {
    let mut child = command
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        stderr.read_to_end(&mut buf).unwrap();
        buf
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > COMMAND_DEADLINE {
            let _ = child.kill();
            panic!("{what} hung");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    (status, err.join().unwrap())
}

/// Many problem files: an output larger than a pipe's buffer.
fn crowded(tag: &str) -> Sandbox {
    let sb = idle(tag);
    sb.config(&format!(
        "[[component]]\nname = \"svc\"\nheartbeat = \"{}/svc.beat\"\n",
        sb.dir.display()
    ));
    for i in 0..600 {
        fs::write(sb.path(&format!("run/problems/p{i:04}")), "x".repeat(300)).unwrap();
    }
    sb
}

#[test]
fn a_reader_that_goes_away_ends_status_and_check_quietly() {
    let sb = crowded("pipe");
    for args in [&["status"][..], &["status", "--json"], &["check"]] {
        let what = args.join(" ");
        // The reader is gone before anything is written.
        let (read, write) = nix::unistd::pipe().unwrap();
        drop(read);
        let (status, stderr) = run_to_end(sb.command(args).stdout(Stdio::from(write)), &what);
        ended_with(&what, 0, status, &stderr);
        // `| head -c1`: the reader takes one byte and leaves.
        let mut child = sb
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut byte = [0u8; 1];
        child.stdout.take().unwrap().read_exact(&mut byte).unwrap();
        let mut stderr = Vec::new();
        child
            .stderr
            .take()
            .unwrap()
            .read_to_end(&mut stderr)
            .unwrap();
        let status = child.wait().unwrap();
        ended_with(&what, 0, status, &stderr);
    }
    let json = sb.status_json();
    assert_eq!(json["problems"].as_array().unwrap().len(), 600);
}

#[test]
fn a_closed_or_full_stdout_ends_status_and_check_without_a_panic() {
    let sb = crowded("closed");
    for args in ["status", "status --json", "check"] {
        let line = format!(
            "exec '{}' --config '{}' {args} >&-",
            BIN,
            sb.path("wk.toml").display()
        );
        let (status, stderr) = run_to_end(Command::new("sh").arg("-c").arg(&line), &line);
        // The runtime gives a closed stdout /dev/null: nothing to report, success.
        ended_with(args, 0, status, &stderr);
        let full = fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .unwrap();
        let (status, stderr) = run_to_end(
            sb.command(&args.split(' ').collect::<Vec<_>>())
                .stdout(full),
            args,
        );
        ended_with(args, 1, status, &stderr);
        assert!(
            String::from_utf8_lossy(&stderr).contains("watchkeeper: cannot write the output"),
            "{args}: {}",
            String::from_utf8_lossy(&stderr)
        );
    }
    sb.status_json();
}

fn odd_dir(sb: &Sandbox) -> PathBuf {
    // Allowed in a path, and each one a trap for a careless format: spaces, quotes, a
    // backslash (the snapshot's escape character), `\t` spelled out, non-ASCII, a `|`.
    let dir = sb.path("we ird 'q' \"dq\" back\\slash \\t é |pipe");
    fs::create_dir_all(&dir).unwrap();
    dir
}

fn toml_string(path: &Path) -> String {
    path.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
}

#[test]
fn odd_characters_in_paths_keep_every_component_in_status() {
    let sb = Sandbox::new("odd-paths");
    let dir = odd_dir(&sb);
    let beat = dir.join("odd.beat");
    let config_text = format!(
        "{}[[component]]\nname = \"odd\"\nheartbeat = \"{}\"\ntimeout = \"1s\"\ngrace = \"1s\"\ncritical = false\n[[component]]\nname = \"after\"\nheartbeat = \"{}\"\ntimeout = \"30s\"\ncritical = false\n",
        sb.header(),
        toml_string(&beat),
        toml_string(&sb.path("after.beat"))
    );
    sb.config_text(&config_text);
    // The agent runs with its config at a path with a tab and a newline in it (any
    // file name can hold them); `status` reads the same directories through wk.toml.
    let tabbed = sb.path("conf\tig\nd");
    fs::create_dir_all(&tabbed).unwrap();
    let config_path = tabbed.join("wk.toml");
    fs::write(&config_path, &config_text).unwrap();
    let mut agent = spawn_logged(
        &sb,
        Command::new(BIN)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env("WATCHKEEPER_LOG", "info"),
    );
    fs::write(&beat, b"").unwrap();
    fs::write(sb.path("after.beat"), b"").unwrap();
    // "odd" stops beating: its reason names its heartbeat's path.
    sb.wait_for("odd to die", Duration::from_secs(15), || {
        let json = sb.status_json();
        json["components"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["name"] == "odd" && c["state"] == "dead"))
    });
    let (text, json) = both(&sb);
    assert_eq!(json["agent"]["running"], true, "{json}");
    assert_eq!(
        json["agent"]["config"],
        config_path.to_str().unwrap(),
        "{json}"
    );
    let names: Vec<&str> = json["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["odd", "after"], "{json}");
    let odd = &json["components"][0];
    assert!(
        odd["reason"]
            .as_str()
            .is_some_and(|r| r.contains(beat.to_str().unwrap())),
        "{json}"
    );
    assert!(text.contains("conf\\tig\\nd/wk.toml"), "{text}");
    assert!(
        text.contains("back\\\\slash \\\\t é |pipe/odd.beat"),
        "{text}"
    );
    sb.assert_alive_and_feeding(&mut agent, &sb.path("run"));
    kill9(&mut agent);
}
