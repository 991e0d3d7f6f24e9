//! The metrics file (`[export] textfile`) written by the real binary, checked the way a fleet
//! reads it: `promtool check metrics` (Debian's `prometheus` package, installed by
//! `board/host-setup.sh`) on every version the tests look at, the values after a repair and
//! a forced reset, the counters rebuilt from a persisted history, a reader that polls
//! the file through a flood of rewrites, and the README's alerting rules under `promtool test
//! rules`.

use std::collections::BTreeSet;
use std::fs;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

mod support;

use support::*;

const PROMTOOL: &str = "/usr/bin/promtool";

/// `promtool check metrics` on `text`: its verdict, lint findings included, fails the test.
fn promtool_accepts(text: &str) {
    let mut child = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("{PROMTOOL} cannot run ({e}): board/host-setup.sh installs it (Debian's prometheus package)")
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics refused it ({}):\n{}{}\n--- the file ---\n{text}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (name and labels exactly as written), if present.
fn sample(text: &str, series: &str) -> Option<String> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map(str::to_owned)
}

fn metrics(sb: &Sandbox) -> String {
    fs::read_to_string(sb.path("prom/watchkeeper.prom")).unwrap_or_default()
}

fn export_section(sb: &Sandbox) -> String {
    format!(
        "[export]\ntextfile = \"{}\"\n",
        sb.path("prom/watchkeeper.prom").display()
    )
}

#[test]
fn a_repair_and_a_forced_reset_show_in_metrics_promtool_accepts() {
    let sb = Sandbox::new("export-repair");
    let script = component_script(&sb, "svc");
    let restart = sb.path("restart.sh");
    fs::write(
        &restart,
        format!(
            "#!/bin/sh\nsetsid {} </dev/null >/dev/null 2>&1 &\n",
            script.display()
        ),
    )
    .unwrap();
    make_executable(&restart);
    // `gone`'s reset_after: long while svc is repaired, short for the reset after it.
    let config = |gone_reset_after: &str| {
        sb.config(&format!(
            "{export}[[component]]\nname = \"svc\"\nheartbeat = \"{d}/svc.beat\"\npidfile = \"{d}/svc.pid\"\ntimeout = \"1s\"\nrepair = [\"{r}\"]\nrepair_backoff = \"1s\"\nreset_after = \"60s\"\n\
             [[component]]\nname = \"gone\"\nheartbeat = \"{d}/gone.beat\"\ntimeout = \"1s\"\ngrace = \"1s\"\nreset_after = \"{gone_reset_after}\"\n",
            export = export_section(&sb),
            d = sb.dir.display(),
            r = restart.display()
        ))
    };
    config("60s");
    let mut component = spawn_component(&script);
    let gone = sb.path("gone.beat");
    fs::write(&gone, b"").unwrap();
    let mut agent = sb.start();
    sb.wait_for("svc alive in the metrics", Duration::from_secs(10), || {
        sample(&metrics(&sb), "watchkeeper_component_up{component=\"svc\"}").as_deref() == Some("1")
    });
    let healthy = metrics(&sb);
    promtool_accepts(&healthy);
    assert_eq!(
        sample(&healthy, "watchkeeper_reset_pending").as_deref(),
        Some("0")
    );
    assert!(
        healthy.contains("watchkeeper_build_info{version=\"0.1.0\",revision=\""),
        "{healthy}"
    );
    kill9(&mut component);
    sb.wait_for(
        "svc repaired in the metrics",
        Duration::from_secs(15),
        || {
            let m = metrics(&sb);
            sample(&m, "watchkeeper_component_deaths_total{component=\"svc\"}").as_deref()
                == Some("1")
                && sample(&m, "watchkeeper_component_up{component=\"svc\"}").as_deref() == Some("1")
        },
    );
    let repaired = metrics(&sb);
    promtool_accepts(&repaired);
    assert_eq!(
        sample(
            &repaired,
            "watchkeeper_component_repairs_total{component=\"svc\"}"
        )
        .as_deref(),
        Some("1"),
        "{repaired}"
    );
    assert_eq!(
        sample(
            &repaired,
            "watchkeeper_component_repair_failures_total{component=\"svc\"}"
        )
        .as_deref(),
        Some("0"),
        "one attempt, and it brought svc back"
    );
    // The component's time in its state is its last beat, on the wall clock.
    let since: f64 = sample(
        &repaired,
        "watchkeeper_component_state_since_seconds{component=\"svc\"}",
    )
    .unwrap()
    .parse()
    .unwrap();
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(since <= wall && since > wall - 30.0, "{since} vs {wall}");
    // `gone` stops beating and is never repaired: a forced reset, named in the metrics.
    fs::remove_file(&gone).unwrap();
    config("1s");
    kill9(&mut agent);
    let mut agent = sb.start();
    sb.wait_for("the reset in the metrics", Duration::from_secs(15), || {
        sample(&metrics(&sb), "watchkeeper_reset_pending").as_deref() == Some("1")
    });
    let reset = metrics(&sb);
    promtool_accepts(&reset);
    assert_eq!(
        sample(&reset, "watchkeeper_boots_ended_total{end=\"forced\"}").as_deref(),
        Some("1"),
        "{reset}"
    );
    assert!(
        reset.contains("watchkeeper_last_reset_info{boot=\"1\",end=\"forced\",component=\"gone\",reason=\"no heartbeat at "),
        "{reset}"
    );
    assert_eq!(
        sample(
            &reset,
            "watchkeeper_component_state{component=\"gone\",state=\"dead\"}"
        )
        .as_deref(),
        Some("1")
    );
    kill9(&mut agent);
    if let Some(pid) = pid_of(&sb, "svc") {
        kill_pid(pid);
    }
}

#[test]
fn counters_are_rebuilt_from_the_persisted_history_at_startup() {
    let sb = Sandbox::new("export-history");
    fs::create_dir_all(sb.path("state")).unwrap();
    // Ten boots left the window (4 forced, 3 by the watchdog); boot 11 was forced with a
    // reason that needs escaping, boot 12 was still running when this one began.
    fs::write(
        sb.path("state/dropped"),
        "watchkeeper-dropped 1\nthrough\t10\nforced\t4\nwatchdog\t3\nunrequested\t0\nshutdown\t2\nshutdown-hung\t0\n",
    )
    .unwrap();
    fs::write(
        sb.path("state/history"),
        "watchkeeper-history 2\n\
         11\t00000000-0000-0000-0000-000000000011\t1700000000\tforced\t90000\t0\tuplink\theartbeat \"/run/up\\link\" not touched\t-\t-\t\n\
         12\t00000000-0000-0000-0000-000000000012\t1700000100\trunning\t-\t0\t\t\t-\t-\t\n",
    )
    .unwrap();
    let (mut component, mut agent) =
        start_with_svc(&sb, &format!("timeout = \"2s\"\n{}", export_section(&sb)));
    sb.wait_for("the metrics file", Duration::from_secs(10), || {
        metrics(&sb).contains("watchkeeper_component_up")
    });
    let text = metrics(&sb);
    promtool_accepts(&text);
    for (series, value) in [
        ("watchkeeper_boot_number", "13"),
        ("watchkeeper_boots_ended_total{end=\"forced\"}", "5"),
        ("watchkeeper_boots_ended_total{end=\"watchdog\"}", "3"),
        ("watchkeeper_boots_ended_total{end=\"unrequested\"}", "1"),
        ("watchkeeper_boots_ended_total{end=\"shutdown\"}", "2"),
        ("watchkeeper_boots_ended_total{end=\"shutdown-hung\"}", "0"),
    ] {
        assert_eq!(
            sample(&text, series).as_deref(),
            Some(value),
            "{series} in\n{text}"
        );
    }
    // The newest boot that ended is 12 (closed as unrequested at this start).
    assert!(
        text.contains("watchkeeper_last_reset_info{boot=\"12\",end=\"unrequested\",component=\"\",reason=\"reset not requested"),
        "{text}"
    );
    kill9(&mut agent);
    kill9(&mut component);
}

#[test]
fn label_values_from_outside_are_escaped() {
    let sb = Sandbox::new("export-escape");
    fs::create_dir_all(sb.path("state")).unwrap();
    fs::write(
        sb.path("state/history"),
        "watchkeeper-history 2\n\
         1\t00000000-0000-0000-0000-000000000001\t1700000000\tforced\t90000\t0\tuplink\theartbeat \"/run/up\\link\" not touched\t-\t-\t\n",
    )
    .unwrap();
    let (mut component, mut agent) =
        start_with_svc(&sb, &format!("timeout = \"2s\"\n{}", export_section(&sb)));
    sb.wait_for("the metrics file", Duration::from_secs(10), || {
        metrics(&sb).contains("watchkeeper_last_reset_info")
    });
    let text = metrics(&sb);
    promtool_accepts(&text);
    assert!(
        text.contains(r#"reason="heartbeat \"/run/up\\link\" not touched"} 1"#),
        "{text}"
    );
    kill9(&mut agent);
    kill9(&mut component);
}

/// A reader polling the file while hearts come and go as fast as a script can make them
/// (each one a rewrite) only ever sees whole files: the rename is atomic.
#[test]
fn a_reader_never_sees_a_partial_file() {
    let sb = Sandbox::new("export-flood");
    let hearts = sb.path("hearts");
    fs::create_dir_all(&hearts).unwrap();
    sb.config(&format!(
        "{}[hearts]\ndir = \"{}\"\ncritical = false\n",
        export_section(&sb),
        hearts.display()
    ));
    let mut agent = sb.start();
    let path = sb.path("prom/watchkeeper.prom");
    sb.wait_for("the metrics file", Duration::from_secs(10), || {
        path.exists()
    });
    let stop = AtomicBool::new(false);
    let (versions, reads) = std::thread::scope(|s| {
        let churn = s.spawn(|| {
            let mut i = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let heart = hearts.join(format!("h{}", i % 8));
                if i % 16 < 8 {
                    fs::write(&heart, b"5\n").unwrap();
                } else {
                    let _ = fs::remove_file(&heart);
                }
                i += 1;
                std::thread::sleep(Duration::from_millis(2));
            }
        });
        let mut versions = BTreeSet::new();
        let mut reads = 0u32;
        let started = std::time::Instant::now();
        // Until enough rewrites were raced: a loaded host only takes longer.
        while versions.len() < 20 && started.elapsed() < Duration::from_secs(60) {
            let text = fs::read_to_string(&path).unwrap();
            reads += 1;
            assert!(
                text.starts_with("# HELP watchkeeper_build_info ") && text.ends_with('\n'),
                "a partial file:\n{text}"
            );
            let last = text.lines().last().unwrap();
            assert!(
                last.starts_with("watchkeeper_component_repair_failures_total")
                    || last.starts_with("# TYPE watchkeeper_component_repair_failures_total"),
                "a partial file (last line {last:?}):\n{text}"
            );
            versions.insert(text);
        }
        stop.store(true, Ordering::Relaxed);
        churn.join().unwrap();
        (versions, reads)
    });
    // Proof that the reader raced rewrites.
    assert!(
        versions.len() >= 20,
        "only {} versions seen in {reads} reads: the hearts did not make the file change",
        versions.len()
    );
    for text in versions.iter().take(20) {
        promtool_accepts(text);
    }
    kill9(&mut agent);
}

#[test]
fn check_refuses_a_textfile_node_exporter_would_not_read() {
    let sb = Sandbox::new("export-check");
    for (textfile, expected) in [
        ("metrics.txt", "must name a file ending in .prom"),
        (".hidden.prom", "must not name a hidden file"),
        ("a b.prom", "a metrics file's name is letters, digits"),
    ] {
        sb.config(&format!(
            "[export]\ntextfile = \"{d}/prom/{textfile}\"\n[[component]]\nname = \"a\"\nheartbeat = \"{d}/a.beat\"\n",
            d = sb.dir.display()
        ));
        let out = sb.run(&["check"]);
        assert_eq!(out.status.code(), Some(1), "{textfile}");
        let err = String::from_utf8(out.stderr).unwrap();
        assert!(
            err.contains("wk.toml:10:") && err.contains(expected),
            "{textfile}: {err}"
        );
    }
    sb.config(&format!(
        "[export]\ntextfile = \"{d}/a.prom\"\n[[component]]\nname = \"a\"\nheartbeat = \"{d}/a.prom\"\n",
        d = sb.dir.display()
    ));
    let out = sb.run(&["check"]);
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.contains("is also the heartbeat of component \"a\""),
        "{err}"
    );
    sb.config("[export]\n[[component]]\nname = \"a\"\nheartbeat = \"/run/a\"\n");
    let err = String::from_utf8(sb.run(&["check"]).stderr).unwrap();
    assert!(err.contains("[export] needs textfile"), "{err}");
    sb.config(&format!(
        "{}[[component]]\nname = \"a\"\nheartbeat = \"/run/a\"\n",
        export_section(&sb)
    ));
    let out = sb.run(&["check"]);
    assert!(out.status.success());
    let effective = String::from_utf8(out.stdout).unwrap();
    assert!(effective.contains("[export]\ntextfile = \""), "{effective}");
    assert!(
        !Path::new(&sb.path("prom")).exists(),
        "check writes nothing"
    );
}

/// The README's alerting rules fire when they should: `promtool test rules` over made-up
/// series of two boards (one reset and one component down on board-7, board-8 healthy).
#[test]
fn the_example_alerting_rules_fire_on_a_reset_and_a_component_down() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/prometheus");
    let out = Command::new(PROMTOOL)
        .args(["test", "rules", "alerts-test.yml"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("{PROMTOOL} cannot run ({e}): board/host-setup.sh installs it"));
    assert!(
        out.status.success(),
        "promtool test rules:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A config that does not load (and no last good one) still gives the metrics file: the
/// fleet sees the board supervising nothing, with the fault, instead of losing it.
#[test]
fn a_broken_config_keeps_the_metrics_file() {
    let sb = Sandbox::new("export-broken");
    sb.config(&format!(
        "{}[[component]\nname = \"svc\"\n",
        export_section(&sb)
    ));
    let mut agent = sb.start();
    sb.wait_for("the metrics file", Duration::from_secs(10), || {
        metrics(&sb).contains("watchkeeper_reset_pending 0")
    });
    let text = metrics(&sb);
    promtool_accepts(&text);
    assert!(!text.contains("watchkeeper_component_up{"), "{text}");
    kill9(&mut agent);
}
