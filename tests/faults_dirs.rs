//! Fault tests for the agent's own directories, on the real binary with the `none` device:
//! a run directory or state directory that is broken at startup (a symlink, a file, a path
//! through a file, a read-only or full filesystem, a part of it of the wrong type) or broken
//! while the agent runs (deleted, replaced by a symlink, remounted read-only), and a reset
//! history that cannot be used (a directory, a symlink, a FIFO, too large, garbage).
//!
//! Each case asserts that the agent keeps running and feeding, that a component death is
//! still detected, that `status` answers with JSON, and that the fault is reported: a log
//! line, the fault LED pattern, and the LED in `status` when a snapshot can be written.
//!
//! Read-only and full filesystems are real mounts (a read-only bind mount, a 64 KiB tmpfs):
//! these tests run as root, as the agent does on a board. Each mount is undone on drop.

mod support;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use support::*;

const FEED_LINE: &str = "keepalive (no watchdog device)";
const WAIT: Duration = Duration::from_secs(15);

/// The agent process, killed when the test ends (also when it fails).
struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A mount made by a test, lazily unmounted on drop so a failing test leaves none behind.
struct Mount(PathBuf);

impl Mount {
    fn run(args: &[&str]) {
        let out = Command::new("mount").args(args).output().unwrap();
        assert!(
            out.status.success(),
            "`mount {}` failed (these tests need root): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A tmpfs of `size` at `at`.
    fn tmpfs(at: &Path, size: &str) -> Mount {
        fs::create_dir_all(at).unwrap();
        Mount::run(&[
            "-t",
            "tmpfs",
            "-o",
            &format!("size={size}"),
            "tmpfs",
            at.to_str().unwrap(),
        ]);
        Mount(at.to_owned())
    }

    /// `at` made read-only by a read-only bind mount of itself.
    fn read_only(at: &Path) -> Mount {
        let path = at.to_str().unwrap();
        Mount::run(&["--bind", path, path]);
        let mount = Mount(at.to_owned());
        Mount::run(&["-o", "remount,ro,bind", path]);
        mount
    }

    fn remount_read_only(&self) {
        Mount::run(&["-o", "remount,ro", self.0.to_str().unwrap()]);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A config with these directories and one component, `svc`, that is not critical (its
/// death never resets the board), dies quickly for want of a first beat, and stays alive
/// for 30 s after one beat.
fn config(sb: &Sandbox, run_dir: &Path, state_dir: &Path) {
    sb.config_text(&format!(
        "[watchdog]\ndevice = \"none\"\ntimeout = 2\n[agent]\ncheck_interval = \"50ms\"\nstate_dir = \"{s}\"\nrun_dir = \"{r}\"\nrealtime_priority = 0\n\
         [[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\ntimeout = \"30s\"\ngrace = \"300ms\"\ncritical = false\n",
        s = state_dir.display(),
        r = run_dir.display(),
        d = sb.dir.display()
    ));
}

/// The default directories of [`config`]: `run` and `state` in the sandbox.
fn dirs(sb: &Sandbox) -> (PathBuf, PathBuf) {
    (sb.path("run"), sb.path("state"))
}

/// Starts the agent with trace logging, so each feed of the `none` device is a log line:
/// that shows feeding even when the run directory (and its `fed` file) is unusable.
fn start(sb: &Sandbox) -> Agent {
    Agent(spawn_logged(
        sb,
        sb.command(&["run"]).env("WATCHKEEPER_LOG", "trace"),
    ))
}

/// Writes [`config`] with these directories, starts the agent and waits for `first` in
/// its log.
fn start_and_see(sb: &Sandbox, run: &Path, state: &Path, first: &str) -> Agent {
    config(sb, run, state);
    let mut agent = start(sb);
    wait_log(sb, &mut agent, first);
    agent
}

fn assert_running(sb: &Sandbox, agent: &mut Agent) {
    if let Some(status) = agent.0.try_wait().unwrap() {
        panic!(
            "the agent exited ({status})\n--- agent log ---\n{}",
            sb.log()
        );
    }
}

/// Waits until `cond` holds, failing at once if the agent exits meanwhile.
fn wait_while_running(
    sb: &Sandbox,
    agent: &mut Agent,
    what: &str,
    timeout: Duration,
    mut cond: impl FnMut() -> bool,
) {
    sb.wait_for(what, timeout, || {
        assert_running(sb, agent);
        cond()
    });
}

fn wait_log(sb: &Sandbox, agent: &mut Agent, text: &str) {
    wait_while_running(sb, agent, &format!("\"{text}\" in the log"), WAIT, || {
        sb.log().contains(text)
    });
}

/// The agent fed once: the run directory and its `fed` file exist.
fn wait_first_feed(sb: &Sandbox, run: &Path) {
    sb.wait_for("a first feed", WAIT, || run.join("fed").exists());
}

/// The agent has written a status snapshot that `status` reads as running, without the
/// fault pattern: healthy, or blinking `svc`'s code once its 300 ms grace is over (a
/// `status` under qemu-user on a busy host can take longer than that grace).
fn wait_running(sb: &Sandbox, agent: &mut Agent) {
    wait_while_running(sb, agent, "status to see the agent running", WAIT, || {
        let status = sb.status_json();
        let led = &status["agent"]["led"];
        status["agent"]["running"] == true && (led == "healthy" || led == "component 1")
    });
}

/// Feeds go on: new "keepalive" lines appear (works without a usable run directory).
fn assert_feeding_by_log(sb: &Sandbox, agent: &mut Agent) {
    let before = sb.log().matches(FEED_LINE).count();
    wait_while_running(sb, agent, "two more feeds", WAIT, || {
        sb.log().matches(FEED_LINE).count() >= before + 2
    });
}

/// Supervision goes on: `svc` is found dead, then alive after one beat.
fn assert_supervising(sb: &Sandbox, agent: &mut Agent) {
    wait_log(sb, agent, "component svc is dead");
    fs::write(sb.path("svc.beat"), b"").unwrap();
    wait_log(sb, agent, "component svc is alive again");
}

/// The end of every case whose run directory stays unusable: alive, feeding (by log),
/// the fault on the LED, and `status` answering with JSON (which cannot claim a running
/// agent: there is no snapshot to read).
fn assert_degraded_without_run_dir(sb: &Sandbox, agent: &mut Agent) -> serde_json::Value {
    assert_supervising(sb, agent);
    assert_feeding_by_log(sb, agent);
    wait_log(sb, agent, "fault LED: fault");
    let log = sb.log();
    assert_eq!(
        log.matches("cannot be written until it is fixed; supervision and feeding go on")
            .count(),
        1,
        "the run directory fault is logged once, not per pass:\n{log}"
    );
    let status = sb.status_json();
    assert!(status["agent"].is_object(), "{status}");
    status
}

/// The end of every case with a usable run directory: alive and feeding (the `fed`
/// file), `status` says running, and its LED is `led` once `svc` is alive again.
fn assert_degraded_with_run_dir(sb: &Sandbox, agent: &mut Agent, run_dir: &Path, led: &str) {
    assert_supervising(sb, agent);
    let what = format!("status to show the LED {led}");
    wait_while_running(sb, agent, &what, WAIT, || {
        sb.status_json()["agent"]["led"] == led
    });
    let status = sb.assert_alive_and_feeding(&mut agent.0, run_dir);
    assert_eq!(status["agent"]["led"], led, "{status}");
}

/// `rm -rf` of a directory the agent may be writing into at that moment: retried, as
/// the agent's next file can land between the removal of the files and of the directory.
fn remove_tree(path: &Path) {
    for _ in 0..50 {
        if fs::remove_dir_all(path).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("cannot remove {}", path.display());
}

/// Puts what is at `with` in place of `path` in one atomic step (renameat2 with
/// RENAME_EXCHANGE), so the agent never sees `path` missing and recreates it in between.
/// The old directory ends up at `with`.
fn swap(path: &Path, with: &Path) {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        path,
        rustix::fs::CWD,
        with,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .unwrap();
}

/// The problem file of `svc` appears, whole (the death is logged just before it is written).
fn assert_problem_file(run_dir: &Path) {
    let problem = run_dir.join("problems/svc");
    let start = std::time::Instant::now();
    loop {
        let text = fs::read_to_string(&problem).unwrap_or_default();
        if text.starts_with("watchkeeper: ") {
            return;
        }
        assert!(start.elapsed() < WAIT, "{}: {text:?}", problem.display());
        std::thread::sleep(Duration::from_millis(20));
    }
}

// ---- the run directory, broken at startup ----

#[test]
fn run_dir_a_symlink_to_a_directory_is_refused_not_followed() {
    let sb = Sandbox::new("dirs-run-link");
    let (run, state) = dirs(&sb);
    fs::create_dir(sb.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(sb.path("elsewhere"), &run).unwrap();
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "is a symbolic link, which is never followed",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
    assert_eq!(
        fs::read_dir(sb.path("elsewhere")).unwrap().count(),
        0,
        "nothing is written through the link"
    );
}

#[test]
fn run_dir_a_symlink_to_dev_null_is_refused() {
    let sb = Sandbox::new("dirs-run-devnull");
    let (run, state) = dirs(&sb);
    std::os::unix::fs::symlink("/dev/null", &run).unwrap();
    let mut agent = start_and_see(&sb, &run, &state, "is a symbolic link");
    assert_degraded_without_run_dir(&sb, &mut agent);
}

#[test]
fn run_dir_a_regular_file() {
    let sb = Sandbox::new("dirs-run-file");
    let (run, state) = dirs(&sb);
    fs::write(&run, b"not a directory").unwrap();
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "run: the run directory is a regular file, not a directory",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
    assert_eq!(fs::read(&run).unwrap(), b"not a directory");
}

#[test]
fn run_dir_below_a_regular_file() {
    let sb = Sandbox::new("dirs-run-below-file");
    let (_, state) = dirs(&sb);
    fs::write(sb.path("blocker"), b"").unwrap();
    let run = sb.path("blocker/run");
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "or a directory above it, is not a directory",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
}

#[test]
fn run_dir_on_a_read_only_filesystem() {
    let sb = Sandbox::new("dirs-run-ro");
    let (run, state) = dirs(&sb);
    fs::create_dir_all(run.join("problems")).unwrap();
    fs::write(run.join("fed"), b"").unwrap();
    let _ro = Mount::read_only(&run);
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "the run directory is on a read-only filesystem",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
}

#[test]
fn run_dir_missing_below_a_read_only_filesystem() {
    let sb = Sandbox::new("dirs-run-ro-missing");
    let (_, state) = dirs(&sb);
    fs::create_dir(sb.path("ro")).unwrap();
    let _ro = Mount::read_only(&sb.path("ro"));
    let run = sb.path("ro/run");
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "the run directory is on a read-only filesystem",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
}

/// `problems` of the wrong type: the status snapshot is still written, with the fault.
fn problems_not_a_directory(tag: &str, make: impl FnOnce(&Path), found: &str) {
    let sb = Sandbox::new(tag);
    let (run, state) = dirs(&sb);
    fs::create_dir(&run).unwrap();
    make(&run.join("problems"));
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        &format!("/problems: its problems directory is {found}"),
    );
    wait_log(&sb, &mut agent, "component svc: cannot mark the problem");
    assert_degraded_with_run_dir(&sb, &mut agent, &run, "fault");
}

#[test]
fn problems_a_regular_file() {
    problems_not_a_directory(
        "dirs-problems-file",
        |p| fs::write(p, b"x").unwrap(),
        "a regular file, not a directory",
    );
}

#[test]
fn problems_a_fifo() {
    problems_not_a_directory("dirs-problems-fifo", mkfifo, "a FIFO, not a directory");
}

#[test]
fn problems_a_symlink_to_a_directory() {
    problems_not_a_directory(
        "dirs-problems-link",
        |p| {
            let target = p.with_file_name("elsewhere");
            fs::create_dir(&target).unwrap();
            std::os::unix::fs::symlink(&target, p).unwrap();
        },
        "a symbolic link, which is never followed",
    );
}

/// `fed` of the wrong type: problem files and the snapshot are still written.
fn fed_not_a_file(tag: &str, make: impl FnOnce(&Path), found: &str) {
    let sb = Sandbox::new(tag);
    let (run, state) = dirs(&sb);
    fs::create_dir(&run).unwrap();
    make(&run.join("fed"));
    let mut agent = start_and_see(&sb, &run, &state, &format!("/fed: its fed file {found}"));
    wait_log(&sb, &mut agent, "component svc is dead");
    assert_problem_file(&run);
    assert_supervising(&sb, &mut agent);
    assert_feeding_by_log(&sb, &mut agent);
    sb.wait_for("status to show the fault", WAIT, || {
        let status = sb.status_json();
        status["agent"]["running"] == true && status["agent"]["led"] == "fault"
    });
}

#[test]
fn fed_a_directory_still_feeds() {
    fed_not_a_file(
        "dirs-fed-dir",
        |p| fs::create_dir(p).unwrap(),
        "is a directory, not a regular file",
    );
}

#[test]
fn fed_a_fifo_does_not_block() {
    fed_not_a_file("dirs-fed-fifo", mkfifo, "is a FIFO, not a regular file");
}

#[test]
fn fed_a_symlink_is_refused() {
    fed_not_a_file(
        "dirs-fed-link",
        |p| std::os::unix::fs::symlink("/etc/hostname", p).unwrap(),
        "is a symbolic link, which is never followed",
    );
}

// ---- the run directory, broken while the agent runs ----

#[test]
fn run_dir_deleted_while_running_is_recreated_with_its_problem_files() {
    let sb = Sandbox::new("dirs-run-deleted");
    let (run, state) = dirs(&sb);
    let mut agent = start_and_see(&sb, &run, &state, "component svc is dead");
    assert_problem_file(&run);
    remove_tree(&run);
    wait_log(&sb, &mut agent, "was removed or replaced: recreating it");
    wait_log(&sb, &mut agent, "is usable again");
    sb.wait_for("the problem file to be rewritten", WAIT, || {
        run.join("problems/svc").exists()
    });
    assert_problem_file(&run);
    sb.wait_for("the status snapshot to be rewritten", WAIT, || {
        run.join("status").exists()
    });
    let status = sb.assert_alive_and_feeding(&mut agent.0, &run);
    assert_eq!(status["agent"]["led"], "component 1", "{status}");
    fs::write(sb.path("svc.beat"), b"").unwrap();
    wait_log(&sb, &mut agent, "component svc is alive again");
    sb.wait_for("the problem file to be removed", WAIT, || {
        !run.join("problems/svc").exists()
    });
}

#[test]
fn problems_deleted_while_running_is_recreated() {
    let sb = Sandbox::new("dirs-problems-deleted");
    let (run, state) = dirs(&sb);
    let mut agent = start_and_see(&sb, &run, &state, "component svc is dead");
    remove_tree(&run.join("problems"));
    wait_log(&sb, &mut agent, "is usable again");
    sb.wait_for("the problem file to be rewritten", WAIT, || {
        run.join("problems/svc").exists()
    });
    assert_problem_file(&run);
    sb.assert_alive_and_feeding(&mut agent.0, &run);
}

#[test]
fn fed_deleted_while_running_is_recreated() {
    let sb = Sandbox::new("dirs-fed-deleted");
    let (run, state) = dirs(&sb);
    config(&sb, &run, &state);
    let mut agent = start(&sb);
    wait_first_feed(&sb, &run);
    fs::remove_file(run.join("fed")).unwrap();
    wait_log(&sb, &mut agent, "is usable again");
    assert_supervising(&sb, &mut agent);
    sb.assert_alive_and_feeding(&mut agent.0, &run);
}

#[test]
fn run_dir_replaced_by_a_symlink_while_running_is_refused_then_recreated() {
    let sb = Sandbox::new("dirs-run-replaced");
    let (run, state) = dirs(&sb);
    config(&sb, &run, &state);
    let mut agent = start(&sb);
    wait_first_feed(&sb, &run);
    fs::create_dir(sb.path("decoy")).unwrap();
    std::os::unix::fs::symlink(sb.path("decoy"), sb.path("link")).unwrap();
    swap(&run, &sb.path("link"));
    wait_log(&sb, &mut agent, "was removed or replaced");
    wait_log(
        &sb,
        &mut agent,
        "is a symbolic link, which is never followed",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
    assert_eq!(
        fs::read_dir(sb.path("decoy")).unwrap().count(),
        0,
        "nothing is written through the link"
    );
    // Once the link is gone the agent makes a real directory there again.
    fs::remove_file(&run).unwrap();
    wait_log(&sb, &mut agent, "is usable again");
    sb.wait_for("status to show the LED healthy", WAIT, || {
        sb.status_json()["agent"]["led"] == "healthy"
    });
    sb.assert_alive_and_feeding(&mut agent.0, &run);
}

#[test]
fn run_dir_replaced_by_a_file_while_running() {
    let sb = Sandbox::new("dirs-run-replaced-file");
    let (run, state) = dirs(&sb);
    config(&sb, &run, &state);
    let mut agent = start(&sb);
    wait_first_feed(&sb, &run);
    fs::write(sb.path("in-the-way"), b"in the way").unwrap();
    swap(&run, &sb.path("in-the-way"));
    wait_log(
        &sb,
        &mut agent,
        "the run directory is a regular file, not a directory",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
}

// ---- the state directory ----

/// The end of every state-directory case: the run directory works, so the snapshot
/// shows the fault, and everything else goes on.
fn assert_state_fault(sb: &Sandbox, agent: &mut Agent) {
    let (run, _) = dirs(sb);
    assert_degraded_with_run_dir(sb, agent, &run, "fault");
    assert_problem_file_gone_after_beat(sb, &run);
    assert!(
        sb.log().contains("reset reasons cannot be recorded")
            || sb
                .log()
                .contains("reset reasons and the last good config cannot be kept"),
        "{}",
        sb.log()
    );
}

fn assert_problem_file_gone_after_beat(sb: &Sandbox, run: &Path) {
    sb.wait_for("the problem file to be removed", WAIT, || {
        !run.join("problems/svc").exists()
    });
}

#[test]
fn state_dir_a_regular_file() {
    let sb = Sandbox::new("dirs-state-file");
    let (run, state) = dirs(&sb);
    fs::write(&state, b"x").unwrap();
    let mut agent = start_and_see(&sb, &run, &state, "creating the state directory");
    wait_log(
        &sb,
        &mut agent,
        "previous boot: unknown: the previous boot left no record (the state directory cannot be read)",
    );
    assert_state_fault(&sb, &mut agent);
}

#[test]
fn state_dir_a_symlink() {
    let sb = Sandbox::new("dirs-state-link");
    let (run, state) = dirs(&sb);
    fs::create_dir(sb.path("elsewhere")).unwrap();
    std::os::unix::fs::symlink(sb.path("elsewhere"), &state).unwrap();
    let mut agent = start_and_see(&sb, &run, &state, "opening the state directory");
    assert_state_fault(&sb, &mut agent);
    assert_eq!(fs::read_dir(sb.path("elsewhere")).unwrap().count(), 0);
}

#[test]
fn state_dir_read_only_at_startup() {
    let sb = Sandbox::new("dirs-state-ro");
    let (run, state) = dirs(&sb);
    fs::create_dir(&state).unwrap();
    let _ro = Mount::read_only(&state);
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "could not record the start of this boot (boot id ",
    );
    assert_state_fault(&sb, &mut agent);
    let log = sb.log();
    assert_eq!(
        log.matches("cannot be written (").count(),
        1,
        "the state fault is logged once, not per pass:\n{log}"
    );
}

/// A history with one earlier boot (not this one) that was still running when it ended.
fn previous_boot(state: &Path) {
    fs::write(
        state.join("history"),
        "watchkeeper-history 1\n1\t00000000-0000-0000-0000-000000000001\t1700000000\trunning\t-\t0\t\t\n",
    )
    .unwrap();
}

/// Fills the filesystem of `dir`: what is there can be read, nothing new can be written.
fn fill(dir: &Path) {
    let mut filler = fs::File::create(dir.join("filler")).unwrap();
    while std::io::Write::write_all(&mut filler, &[0u8; 4096]).is_ok() {}
}

#[test]
fn state_disk_full_still_says_how_the_previous_boot_ended_and_shows_a_fault() {
    let sb = Sandbox::new("dirs-state-full");
    let (run, state) = dirs(&sb);
    let _tmpfs = Mount::tmpfs(&state, "64k");
    previous_boot(&state);
    fill(&state);
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "previous boot 1: reset not requested by watchkeeper",
    );
    wait_log(
        &sb,
        &mut agent,
        "could not record the start of this boot (boot id ",
    );
    assert!(sb.log().contains("No space left on device"), "{}", sb.log());
    assert_state_fault(&sb, &mut agent);
    // Space again: the next retry (every 30 s) writes the record, the fault goes away.
    // `svc` beats all along: its 30 s timeout would otherwise end about when the retry
    // comes, and its death would turn the LED from healthy before `status` saw it.
    fs::remove_file(state.join("filler")).unwrap();
    let beat = || fs::write(sb.path("svc.beat"), b"").unwrap();
    wait_while_running(
        &sb,
        &mut agent,
        "the history written again",
        Duration::from_secs(60),
        || {
            beat();
            sb.log()
                .contains("works again: the reset history is written")
        },
    );
    sb.wait_for(
        "status to show the LED healthy",
        Duration::from_secs(60),
        || {
            beat();
            sb.status_json()["agent"]["led"] == "healthy"
        },
    );
    let history = fs::read_to_string(state.join("history")).unwrap();
    assert_eq!(history.lines().count(), 3, "{history}");
    sb.assert_alive_and_feeding(&mut agent.0, &run);
}

#[test]
fn state_dir_remounted_read_only_while_running() {
    let sb = Sandbox::new("dirs-state-remount");
    let (run, state) = dirs(&sb);
    let tmpfs = Mount::tmpfs(&state, "1m");
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "previous boot: unknown: the previous boot left no record",
    );
    wait_running(&sb, &mut agent);
    tmpfs.remount_read_only();
    wait_log(&sb, &mut agent, "it is on a read-only filesystem");
    assert_state_fault(&sb, &mut agent);
}

#[test]
fn state_dir_deleted_while_running_is_recreated_with_the_history() {
    let sb = Sandbox::new("dirs-state-deleted");
    let (run, state) = dirs(&sb);
    fs::create_dir(&state).unwrap();
    previous_boot(&state);
    let mut agent = start_and_see(&sb, &run, &state, "previous boot 1: reset not requested");
    // Startup is over (nothing else writes there until a reset).
    wait_running(&sb, &mut agent);
    remove_tree(&state);
    wait_log(&sb, &mut agent, "was removed or replaced: recreating it");
    sb.wait_for("the history to be rewritten", WAIT, || {
        fs::read_to_string(state.join("history")).is_ok_and(|h| h.lines().count() == 3)
    });
    assert_supervising(&sb, &mut agent);
    let status = sb.assert_alive_and_feeding(&mut agent.0, &run);
    assert_eq!(status["agent"]["led"], "healthy", "{status}");
    assert_eq!(
        status["boots"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
}

#[test]
fn state_dir_replaced_by_a_file_while_running() {
    let sb = Sandbox::new("dirs-state-replaced");
    let (run, state) = dirs(&sb);
    config(&sb, &run, &state);
    let mut agent = start(&sb);
    wait_running(&sb, &mut agent);
    fs::write(sb.path("in-the-way"), b"in the way").unwrap();
    swap(&state, &sb.path("in-the-way"));
    wait_log(&sb, &mut agent, "was removed or replaced");
    wait_log(&sb, &mut agent, "cannot be written (");
    assert_state_fault(&sb, &mut agent);
}

// ---- the reset history ----

/// An unusable history: moved aside with a loud line, a fresh one written, no fault.
fn unusable_history(tag: &str, make: impl FnOnce(&Path), words: &str) {
    let sb = Sandbox::new(tag);
    let (run, state) = dirs(&sb);
    fs::create_dir(&state).unwrap();
    make(&state.join("history"));
    let mut agent = start_and_see(&sb, &run, &state, &format!("is unusable: {words}"));
    wait_log(&sb, &mut agent, "history.corrupt, starting a new one");
    wait_log(
        &sb,
        &mut agent,
        "previous boot: unknown: the previous boot left no record (its history was unusable)",
    );
    assert!(
        fs::symlink_metadata(state.join("history.corrupt")).is_ok(),
        "kept aside"
    );
    wait_new_history(&sb, &state);
    assert_degraded_with_run_dir(&sb, &mut agent, &run, "healthy");
    assert_eq!(
        sb.status_json()["boots"].as_array().map(Vec::len),
        Some(1),
        "the new history has this boot"
    );
}

#[test]
fn history_a_directory() {
    unusable_history(
        "dirs-history-dir",
        |p| fs::create_dir_all(p.join("inside")).unwrap(),
        "it is a directory",
    );
}

#[test]
fn history_a_symlink() {
    unusable_history(
        "dirs-history-link",
        |p| std::os::unix::fs::symlink("/dev/zero", p).unwrap(),
        "it is a symbolic link",
    );
}

#[test]
fn history_a_fifo_does_not_block() {
    unusable_history("dirs-history-fifo", mkfifo, "it is a FIFO");
}

#[test]
fn history_huge() {
    unusable_history(
        "dirs-history-huge",
        |p| fs::write(p, vec![b'x'; 4 * 1024 * 1024]).unwrap(),
        "it is larger than",
    );
}

#[test]
fn history_garbage() {
    unusable_history(
        "dirs-history-garbage",
        |p| fs::write(p, b"watchkeeper-history 1\nnot\ta\trecord\n").unwrap(),
        "it does not parse: line 2",
    );
}

#[test]
fn history_binary() {
    unusable_history(
        "dirs-history-binary",
        |p| fs::write(p, [0xffu8, 0xfe, 0x00, 0x01]).unwrap(),
        "it is not UTF-8 text",
    );
}

#[test]
fn history_empty() {
    unusable_history(
        "dirs-history-empty",
        |p| fs::write(p, b"").unwrap(),
        "it does not parse: line 1",
    );
}

#[test]
fn first_boot_says_there_is_no_record() {
    let sb = Sandbox::new("dirs-first-boot");
    let (run, state) = dirs(&sb);
    let mut agent = start_and_see(
        &sb,
        &run,
        &state,
        "previous boot: unknown: the previous boot left no record (first boot on record in",
    );
    assert_degraded_with_run_dir(&sb, &mut agent, &run, "healthy");
}

/// The reset path with a full state disk: the reset is still forced, and the log says
/// exactly what could not be recorded. (This case ends with feeding stopped on purpose:
/// that is how the reset happens.)
#[test]
fn forced_reset_with_a_full_state_disk_says_what_was_not_recorded() {
    let sb = Sandbox::new("dirs-reset-full");
    let (run, state) = dirs(&sb);
    let _tmpfs = Mount::tmpfs(&state, "64k");
    sb.config_text(&format!(
        "{}[[component]]\nname = \"gone\"\nheartbeat = \"{d}/gone.beat\"\ntimeout = \"500ms\"\ngrace = \"500ms\"\nreset_after = \"1s\"\n",
        sb.header(),
        d = sb.dir.display()
    ));
    fill(&state);
    let mut agent = start(&sb);
    wait_log(
        &sb,
        &mut agent,
        "could not record the reset reason (component gone: no heartbeat at",
    );
    wait_log(
        &sb,
        &mut agent,
        "the next boot will not know why it was reset",
    );
    wait_log(&sb, &mut agent, "forcing a board reset: component gone");
    wait_log(
        &sb,
        &mut agent,
        "no watchdog device: a real one would now be set",
    );
    assert!(sb.log().contains("No space left on device"), "{}", sb.log());
    wait_while_running(&sb, &mut agent, "status to show the reset", WAIT, || {
        let status = sb.status_json();
        status["agent"]["running"] == true && status["agent"]["led"] == "reset imminent"
    });
    assert!(run.join("problems/gone").is_file());
}

#[test]
fn run_dir_deleted_while_running_gets_the_problem_file_of_a_bad_heart_back() {
    let sb = Sandbox::new("dirs-run-deleted-hearts");
    let (run, _) = dirs(&sb);
    fs::create_dir(sb.path("hearts")).unwrap();
    fs::write(sb.path("hearts/backup"), b"not a timeout\n").unwrap();
    sb.config(&format!(
        "[hearts]\ndir = \"{}\"\ncritical = false\n",
        sb.path("hearts").display()
    ));
    let mut agent = start(&sb);
    wait_while_running(&sb, &mut agent, "the heart's problem file", WAIT, || {
        run.join("problems/backup").is_file()
    });
    remove_tree(&run);
    wait_log(&sb, &mut agent, "is usable again");
    wait_while_running(
        &sb,
        &mut agent,
        "the heart's problem file to be rewritten",
        WAIT,
        || run.join("problems/backup").is_file(),
    );
    let text = fs::read_to_string(run.join("problems/backup")).unwrap();
    assert!(text.starts_with("watchkeeper: "), "{text:?}");
    sb.assert_alive_and_feeding(&mut agent.0, &run);
}

/// Root may write anywhere: to meet "permission denied", the agent runs as `nobody`.
const NOBODY: u32 = 65534;

/// Starts the agent as `nobody` (see [`start`]).
fn start_as_nobody(sb: &Sandbox) -> Agent {
    use std::os::unix::process::CommandExt;
    Agent(spawn_logged(
        sb,
        sb.command(&["run"])
            .env("WATCHKEEPER_LOG", "trace")
            .uid(NOBODY)
            .gid(NOBODY),
    ))
}

/// Waits for the fresh history that records this boot as boot 1 (it is written just after
/// the log says the old one was moved aside).
fn wait_new_history(sb: &Sandbox, state: &Path) {
    sb.wait_for(
        "a new history recording boot 1",
        Duration::from_secs(10),
        || {
            fs::read_to_string(state.join("history"))
                .is_ok_and(|h| h.starts_with("watchkeeper-history 2\n1\t"))
        },
    );
}

fn owned_by_nobody(dir: &Path) {
    fs::create_dir(dir).unwrap();
    std::os::unix::fs::chown(dir, Some(NOBODY), Some(NOBODY)).unwrap();
}

#[test]
fn history_unreadable_eacces() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new("dirs-history-eacces");
    let (run, state) = dirs(&sb);
    owned_by_nobody(&run);
    owned_by_nobody(&state);
    fs::write(state.join("history"), b"watchkeeper-history 1\n").unwrap();
    fs::set_permissions(state.join("history"), fs::Permissions::from_mode(0o000)).unwrap();
    config(&sb, &run, &state);
    let mut agent = start_as_nobody(&sb);
    wait_log(
        &sb,
        &mut agent,
        "is unusable: it cannot be read: Permission denied",
    );
    wait_log(&sb, &mut agent, "history.corrupt, starting a new one");
    wait_new_history(&sb, &state);
    assert_degraded_with_run_dir(&sb, &mut agent, &run, "healthy");
}

#[test]
fn run_dir_permission_denied() {
    let sb = Sandbox::new("dirs-run-eacces");
    let (run, state) = dirs(&sb);
    fs::create_dir(&run).unwrap();
    owned_by_nobody(&state);
    config(&sb, &run, &state);
    let mut agent = start_as_nobody(&sb);
    wait_log(
        &sb,
        &mut agent,
        "/problems: its problems directory cannot be used: Permission denied",
    );
    assert_degraded_without_run_dir(&sb, &mut agent);
}

#[test]
fn state_dir_permission_denied() {
    let sb = Sandbox::new("dirs-state-eacces");
    let (run, state) = dirs(&sb);
    owned_by_nobody(&run);
    fs::create_dir(&state).unwrap();
    config(&sb, &run, &state);
    let mut agent = start_as_nobody(&sb);
    wait_log(
        &sb,
        &mut agent,
        "writing the reset history: Permission denied",
    );
    assert_state_fault(&sb, &mut agent);
}
