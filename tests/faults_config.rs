//! Fault tests of the config file, on the real binary: configs that are not regular files,
//! too large, broken in their syntax or breaking a rule of `check`. `check` and `status`
//! answer at once and say why; the agent never blocks on its config, finds the last good
//! config where it was saved, and keeps supervising and feeding.

mod support;
use support::*;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use watchkeeper::limits::MAX_CONFIG_LEN;

/// A process this test started, killed when the test ends, failing or not.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `check` refused (exit status 1) and its stderr says each of `words`; `what` tells
/// which case failed.
fn assert_check_refused(check: &std::process::Output, words: &[&str], what: &str) {
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert_eq!(check.status.code(), Some(1), "{what}: {stderr}");
    for word in words {
        assert!(stderr.contains(word), "{what}: must say {word:?}: {stderr}");
    }
}

/// Default directories this test made, removed when it ends, failing or not.
struct RemovedAtEnd(Vec<&'static Path>);

impl Drop for RemovedAtEnd {
    fn drop(&mut self) {
        for dir in &self.0 {
            let _ = fs::remove_dir_all(dir);
        }
    }
}

/// A good config supervising one beating component, `svc`, with the sandbox's own state
/// and run directories (not the defaults).
fn good_config(sb: &Sandbox) -> String {
    format!(
        "{}[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\ntimeout = \"1s\"\n",
        sb.header(),
        d = sb.dir.display()
    )
}

/// Runs the good config until `svc` is alive and the last good copy is kept; returns the
/// component (still beating) after killing that first agent.
fn after_a_good_run(sb: &Sandbox) -> Started {
    let script = component_script(sb, "svc");
    sb.config_text(&good_config(sb));
    let component = Started(spawn_component(&script));
    let mut agent = Started(sb.start());
    sb.wait_for(
        "svc alive under the good config",
        Duration::from_secs(15),
        || svc_state(sb).as_deref() == Some("alive"),
    );
    assert!(sb.path("state/last-good.toml").exists());
    kill9(&mut agent.0);
    let _ = fs::remove_file(sb.path("agent.log"));
    component
}

/// `svc`'s state as `status --json` reports it.
fn svc_state(sb: &Sandbox) -> Option<String> {
    let status = sb.status_json();
    status["components"]
        .as_array()?
        .iter()
        .find(|c| c["name"] == "svc")?["state"]
        .as_str()
        .map(str::to_owned)
}

/// Starts the agent on the config now on disk and checks the class every case here shares:
/// the refusal is logged with `expected` (where and why), the agent falls back to the last
/// good config in the sandbox's state directory, supervises `svc` with it and feeds.
fn assert_falls_back_and_feeds(sb: &Sandbox, expected: &[&str]) {
    let mut agent = Started(sb.start());
    let kept = format!(
        "falling back to the last good config {}",
        sb.path("state/last-good.toml").display()
    );
    sb.wait_for(
        "the fallback to the saved config",
        Duration::from_secs(15),
        || sb.log().contains(&kept),
    );
    let log = sb.log();
    for part in expected {
        assert!(log.contains(part), "the log must say {part:?}:\n{log}");
    }
    sb.wait_for("svc supervised again", Duration::from_secs(15), || {
        svc_state(sb).as_deref() == Some("alive")
    });
    let status = sb.assert_alive_and_feeding(&mut agent.0, &sb.path("run"));
    assert_eq!(status["agent"]["led"], "fault", "{status}");
    kill9(&mut agent.0);
    let _ = fs::remove_file(sb.path("agent.log"));
}

/// Paths that are not regular files, each with what the refusal calls it.
fn not_regular_files(sb: &Sandbox) -> Vec<(PathBuf, &'static str)> {
    let fifo = sb.path("fifo.toml");
    mkfifo(&fifo);
    let dir = sb.path("dir.toml");
    fs::create_dir(&dir).unwrap();
    let zero = sb.path("zero.toml");
    std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
    let to_fifo = sb.path("to-fifo.toml");
    std::os::unix::fs::symlink(&fifo, &to_fifo).unwrap();
    let socket = sb.path("socket.toml");
    // Bound and left open: the socket file stays while the test runs.
    std::mem::forget(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    vec![
        (fifo, "this is a FIFO (named pipe)"),
        (dir, "this is a directory"),
        (zero, "this is a character device"),
        (to_fifo, "this is a FIFO (named pipe)"),
        (socket, "this is a socket"),
    ]
}

fn run_on(config: &Path, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new(BIN);
    command
        .arg("--config")
        .arg(config)
        .args(args)
        .stdin(std::process::Stdio::null());
    run_with_deadline(&mut command, args)
}

#[test]
fn check_and_status_answer_at_once_on_a_config_that_is_not_a_regular_file() {
    let sb = Sandbox::new("cfg-not-regular");
    let mut cases = not_regular_files(&sb);
    let big = sb.path("big.toml");
    let mut text = good_config(&sb);
    while text.len() <= MAX_CONFIG_LEN {
        text.push_str("# padding padding padding padding padding padding padding padding\n");
    }
    fs::write(&big, &text).unwrap();
    cases.push((big, "at most 1048576 bytes"));
    for (config, why) in &cases {
        assert_check_refused(
            &run_on(config, &["check"]),
            &[&config.display().to_string(), why],
            &format!("check on {config:?} must name the file"),
        );
        let status = run_on(config, &["status"]);
        let stderr = String::from_utf8_lossy(&status.stderr);
        assert!(
            stderr.contains(why),
            "status on {config:?} must say {why:?}: {stderr}"
        );
        let json = run_on(config, &["status", "--json"]);
        let text = String::from_utf8(json.stdout).unwrap();
        let parsed: serde_json::Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("status --json on {config:?} ({e}): {text}"));
        check_status_schema(&parsed);
        assert!(parsed["agent"]["running"].is_boolean(), "{parsed}");
    }
    // A symlink to a regular file is a config like any other (/etc configs often are).
    let target = sb.config_text(&good_config(&sb));
    let link = sb.path("link.toml");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let check = run_on(&link, &["check"]);
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&check.stderr)
    );
    assert!(String::from_utf8_lossy(&check.stdout).contains("name = \"svc\""));
}

#[test]
fn run_never_blocks_on_a_config_that_is_not_a_regular_file() {
    let sb = Sandbox::new("cfg-run-not-regular");
    // Unreadable, the config names no directories and no device: the agent falls back to
    // the defaults, which this test may only use where they are scratch space. As root on
    // a host with a watchdog it would arm the host's watchdog.
    let host_watchdog = ["/dev/watchdog", "/dev/watchdog0"]
        .iter()
        .any(|d| Path::new(d).exists());
    assert!(
        !host_watchdog,
        "this host has a watchdog device: the agent would arm it; run these tests in a container"
    );
    let defaults = [
        Path::new("/run/watchkeeper"),
        Path::new("/var/lib/watchkeeper"),
    ];
    let _cleanup = RemovedAtEnd(defaults.into_iter().filter(|d| !d.exists()).collect());
    for (config, why) in not_regular_files(&sb) {
        let _ = fs::remove_file(sb.path("agent.log"));
        let mut agent = Started(spawn_logged(
            &sb,
            std::process::Command::new(BIN)
                .arg("--config")
                .arg(&config)
                .arg("run")
                .env("WATCHKEEPER_LOG", "info"),
        ));
        sb.wait_for("the refusal of the config", Duration::from_secs(10), || {
            sb.log().contains(why)
        });
        sb.wait_for("the salvaged start", Duration::from_secs(10), || {
            sb.log().contains("no usable last good config")
        });
        let log = sb.log();
        assert!(
            log.contains(&config.display().to_string()) && log.contains("config error:"),
            "{log}"
        );
        // Past the config: the agent went on and is still there.
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            agent.0.try_wait().unwrap().is_none(),
            "the agent exited:\n{log}"
        );
        kill9(&mut agent.0);
    }
}

#[test]
fn an_oversized_config_falls_back_to_the_last_good_one() {
    let sb = Sandbox::new("cfg-oversized");
    let mut component = after_a_good_run(&sb);
    let mut text = good_config(&sb);
    while text.len() <= MAX_CONFIG_LEN {
        text.push_str("# a generated comment that makes this config larger than allowed\n");
    }
    sb.config_text(&text);
    assert_falls_back_and_feeds(&sb, &["at most 1048576 bytes"]);
    kill9(&mut component.0);
}

#[test]
fn a_syntax_error_with_its_own_state_dir_finds_the_saved_last_good_config() {
    let sb = Sandbox::new("cfg-syntax");
    let mut component = after_a_good_run(&sb);
    let good = good_config(&sb);
    let config = sb.path("wk.toml").display().to_string();
    // The header (with [agent] state_dir) comes first and is whole; each break is later.
    let header_lines = sb.header().lines().count();
    let broken: Vec<(Vec<u8>, String)> = vec![
        (
            format!("{good}[[component]\nname = \"x\"\n").into_bytes(),
            format!("{config}:{}:", header_lines + 5),
        ),
        (
            format!("{good}[component]\nname = \"x\"\n").into_bytes(),
            "[component] after [[component]]".to_owned(),
        ),
        (
            format!("{good}timeout = = 3\n").into_bytes(),
            format!("{config}:{}:", header_lines + 5),
        ),
        (
            [good.as_bytes(), b"# caf\xe9\n"].concat(),
            "not UTF-8 text".to_owned(),
        ),
        (
            [good.as_bytes(), b"# \0\n"].concat(),
            "a NUL byte is not allowed".to_owned(),
        ),
        (
            good.replace("timeout = \"1s\"", "timeout = \"1s")
                .into_bytes(),
            format!("{config}:{}:", header_lines + 4),
        ),
    ];
    for (bytes, expected) in &broken {
        fs::write(sb.path("wk.toml"), bytes).unwrap();
        assert_falls_back_and_feeds(&sb, &["config error:", expected]);
    }
    kill9(&mut component.0);
}

#[test]
fn a_config_that_breaks_a_rule_of_check_is_refused_and_the_last_good_one_runs() {
    let sb = Sandbox::new("cfg-rules");
    let mut component = after_a_good_run(&sb);
    let d = sb.dir.display().to_string();
    let good = good_config(&sb);
    let regular = sb.path("not-a-device");
    fs::write(&regular, b"").unwrap();
    let cases: Vec<(String, &str)> = vec![
        (
            good.replace("svc.beat", "run/problems/svc"),
            "is inside run_dir",
        ),
        (
            good.replace("svc.beat", "state/svc.beat"),
            "is inside state_dir",
        ),
        (
            format!("{good}pidfile = \"{d}/run/../svc.beat\"\n"),
            "is also the heartbeat of component \"svc\"",
        ),
        (
            format!("{good}[[component]]\nname = \"two\"\nheartbeat = \"{d}//svc.beat\"\n"),
            "each component needs its own heartbeat",
        ),
        (
            format!("{good}repair = [\"/bin/true\"]\nreset_after = \"5s\"\n"),
            "reset_after (5s) must be at least repair_timeout (30s) + timeout (1s) = 31s",
        ),
        (
            good.replace(
                "run_dir = \"",
                &format!("run_dir = \"{d}/state/run\"\n# was \""),
            ),
            "must be separate directories",
        ),
        (
            format!("{good}[hearts]\ndir = \"{d}/run/problems\"\n"),
            "the hearts dir",
        ),
        (
            good.replace(
                "device = \"none\"",
                &format!("device = \"{}\"", regular.display()),
            ),
            "is a regular file, not a watchdog device",
        ),
        (
            format!("{good}[hearts]\ndir = \"{d}/h\\tx\"\n"),
            "contains the control character 0x09",
        ),
    ];
    for (text, rule) in &cases {
        let config = sb.config_text(text);
        assert_check_refused(
            &sb.run(&["check"]),
            &[rule, &format!("{}:", config.display())],
            &format!("check must refuse at a place:\n{text}\n"),
        );
        assert_falls_back_and_feeds(&sb, &[rule]);
    }
    kill9(&mut component.0);
}
