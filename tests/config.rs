//! Config validation: every bad input names the file, line and column and says what is
//! allowed; good input yields the documented defaults.

use std::path::Path;
use std::time::Duration;

use watchkeeper::config::{self, LogTarget};
use watchkeeper::os::led::LedSpec;

fn parse(text: &str) -> Result<config::Config, String> {
    config::parse(Path::new("/etc/wk.toml"), text).map_err(|e| e.to_string())
}

const MINIMAL: &str = "[[component]]\nname = \"sensor\"\nheartbeat = \"/run/sensor.beat\"\n";

#[test]
fn minimal_config_gets_the_documented_defaults() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(
        c.watchdog.device.as_deref(),
        Some(Path::new("/dev/watchdog"))
    );
    assert_eq!(c.watchdog.timeout, Duration::from_secs(15));
    assert_eq!(c.watchdog.feed_interval, Duration::from_millis(3750));
    assert_eq!(c.watchdog.shutdown_timeout, Duration::from_secs(120));
    assert_eq!(c.agent.check_interval, Duration::from_secs(1));
    assert_eq!(c.agent.state_dir, Path::new("/var/lib/watchkeeper"));
    assert_eq!(c.agent.run_dir, Path::new("/run/watchkeeper"));
    assert_eq!(c.agent.log, LogTarget::Stderr);
    assert_eq!(c.agent.realtime_priority, Some(10));
    assert_eq!(c.led, LedSpec::None);
    assert_eq!(
        (c.guard.max_resets, c.guard.window),
        (3, Duration::from_secs(3600))
    );
    let p = c.components[0].policy;
    assert_eq!(p.timeout, Duration::from_secs(30));
    assert_eq!(p.grace, Duration::from_secs(60));
    assert_eq!(p.reset_after, Duration::from_secs(300));
    assert!(p.critical);
    assert!(p.repair.is_none());
}

#[test]
fn a_full_config_parses() {
    let text = r#"
[watchdog]
device = "/dev/watchdog0"
timeout = 10
feed_interval = "2s"
shutdown_timeout = "5m"

[agent]
check_interval = "250ms"
state_dir = "/data/wk"
run_dir = "/run/wk"
log = "kmsg"
realtime_priority = 0

[led]
kind = "gpio"
chip = "/dev/gpiochip0"
line = 4
active_low = true

[reboot_guard]
max_resets = 2
window = "30m"

[defaults]
timeout = "5s"
repair_backoff = "1s"

[hearts]
dir = "/run/wk/hearts"
critical = false

[[component]]
name = "sensor"
heartbeat = "/run/sensor.beat"
pidfile = "/run/sensor.pid"
repair = ["/etc/init.d/sensor", "restart"]
max_repairs = 3
reset_after = "2m"

[[component]]
name = "net-link_2"
heartbeat = "/run/net.beat"
timeout = "1h"
critical = false
"#;
    let c = parse(text).unwrap();
    assert_eq!(c.watchdog.feed_interval, Duration::from_secs(2));
    assert_eq!(c.watchdog.shutdown_timeout, Duration::from_secs(300));
    assert_eq!(c.agent.realtime_priority, None);
    assert_eq!(c.agent.log, LogTarget::Kmsg);
    assert_eq!(
        c.led,
        LedSpec::Gpio {
            chip: "/dev/gpiochip0".into(),
            line: 4,
            active_low: true
        }
    );
    let sensor = c.component("sensor").unwrap();
    assert_eq!(sensor.policy.timeout, Duration::from_secs(5));
    let repair = sensor.policy.repair.unwrap();
    assert_eq!(
        (repair.max_attempts, repair.backoff_initial),
        (3, Duration::from_secs(1))
    );
    assert_eq!(sensor.policy.reset_after, Duration::from_secs(120));
    let net = c.component("net-link_2").unwrap();
    assert_eq!(net.policy.timeout, Duration::from_secs(3600));
    assert_eq!(net.policy.grace, Duration::from_secs(3600));
    assert!(!net.policy.critical);
    assert!(!c.hearts.as_ref().unwrap().critical);
    // `check` prints the effective settings; they parse back to the same config.
    let printed = c.to_string();
    let reparsed = parse(&printed).unwrap();
    assert_eq!(
        reparsed.to_string().lines().skip(1).collect::<Vec<_>>(),
        printed.lines().skip(1).collect::<Vec<_>>()
    );
}

#[test]
fn errors_name_file_line_column_and_what_is_allowed() {
    let cases: &[(&str, &str)] = &[
        (
            "[watchdog]\ntimeout = \"10x\"\n",
            "/etc/wk.toml:2:11: expected a duration",
        ),
        (
            "[watchdog]\ntimeout = 10\nfeed_interval = \"6s\"\n",
            "/etc/wk.toml:3:17: feed_interval must be at least 10ms and below half the watchdog timeout",
        ),
        (
            "[watchdog]\ntimeout = \"1500ms\"\n",
            "/etc/wk.toml:2:11: watchdog timeout must be whole seconds",
        ),
        (
            "[watchdog]\nshutdown_timeout = \"2h\"\n",
            "/etc/wk.toml:2:20: watchdog shutdown_timeout must be whole seconds from 1 to 3600",
        ),
        (
            "[watchdog]\ntimout = 10\n",
            "/etc/wk.toml:2:1: unknown key `timout`, expected one of `device`, `timeout`, `feed_interval`, `shutdown_timeout`",
        ),
        (
            "[agent]\nlog = \"syslog\"\n",
            "/etc/wk.toml:2:7: log must be \"stderr\" or \"kmsg\"",
        ),
        (
            "[agent]\nrealtime_priority = 120\n",
            "/etc/wk.toml:2:21: realtime_priority must be a whole number from 0 to 99, not 120",
        ),
        (
            "[agent]\nstate_dir = \"var/lib\"\n",
            "/etc/wk.toml:2:13: \"var/lib\" is not an absolute path",
        ),
        (
            "[led]\nkind = \"gpio\"\nline = 5000\n",
            "/etc/wk.toml:3:8: led.line must be a whole number from 0 to 1023, not 5000",
        ),
        (
            "[led]\nkind = \"blink\"\n",
            "/etc/wk.toml:2:8: led kind must be \"gpio\", \"sysfs\" or \"none\"",
        ),
        (
            "[led]\nkind = \"sysfs\"\nname = \"../x\"\n",
            "/etc/wk.toml:3:8: \"../x\" is not an LED name",
        ),
        (
            "[reboot_guard]\nmax_resets = 0\n",
            "/etc/wk.toml:2:14: reboot_guard.max_resets must be a whole number from 1 to 16, not 0",
        ),
        (
            "[[component]]\nname = \"a b\"\nheartbeat = \"/x\"\n",
            "/etc/wk.toml:2:8: component name \"a b\": a name may only contain",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\n[[component]]\nname = \"a\"\nheartbeat = \"/y\"\n",
            "/etc/wk.toml:5:8: duplicate component name \"a\"",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\n[[component]]\nname = \"b\"\nheartbeat = \"/x\"\n",
            "/etc/wk.toml:6:13: heartbeat \"/x\" of component \"b\" is also the heartbeat of component \"a\": each component needs its own heartbeat",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\nrepair = [\"sv\", \"restart\"]\n",
            "/etc/wk.toml:4:10: the repair program \"sv\" must be an absolute path",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\nrepair = []\n",
            "/etc/wk.toml:4:10: repair must be a list of 1 to 16 strings",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\ntimeout = \"50ms\"\n",
            "/etc/wk.toml:4:11: timeout must be at least 100ms",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\nmax_repairs = 0\n",
            "/etc/wk.toml:4:15: max_repairs must be a whole number from 1 to 100, not 0",
        ),
        (
            "[[component]]\nname = \"a\"\n",
            "/etc/wk.toml:1:1: this [[component]] has no heartbeat (it is required unless liveness = \"notify\")",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\ncritical = \"yes\"\n",
            "/etc/wk.toml:4:12: expected true or false (without quotes), not the string \"yes\"",
        ),
        ("[watchdog]\n", "/etc/wk.toml:2:1: nothing to supervise"),
        ("[watchdog\n", "/etc/wk.toml:1:10:"),
        (
            "[defaults]\nheartbeat = \"/x\"\n",
            "/etc/wk.toml:2:13: heartbeat is not allowed in [defaults]: it is set per [[component]]",
        ),
        (
            "[hearts]\ntimeout = 5\n",
            "/etc/wk.toml:2:11: timeout is not allowed in [hearts]: a heart is named by its file",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\ndir = \"/y\"\n",
            "/etc/wk.toml:4:7: dir is not allowed in [[component]]: it belongs in [hearts]",
        ),
        (
            "[[component]]\nname = \"a\"\nliveness = \"sd_notify\"\n",
            "/etc/wk.toml:3:12: liveness must be \"heartbeat\" (its file is touched), \"notify\" (it sends sd_notify messages) or \"both\", not \"sd_notify\"",
        ),
        (
            "[[component]]\nname = \"a\"\nliveness = \"notify\"\nheartbeat = \"/x\"\n",
            "/etc/wk.toml:4:13: a component with liveness = \"notify\" beats through its messages: remove heartbeat",
        ),
        (
            "[[component]]\nname = \"a\"\nliveness = \"both\"\n",
            "/etc/wk.toml:1:1: this [[component]] has no heartbeat: liveness = \"both\" needs one",
        ),
        (
            "[defaults]\nliveness = \"notify\"\n",
            "/etc/wk.toml:2:12: liveness is not allowed in [defaults]: it is set per [[component]]",
        ),
        (
            "[hearts]\nliveness = \"notify\"\n",
            "/etc/wk.toml:2:12: liveness is not allowed in [hearts]: a heart beats through its file",
        ),
        (
            "[notify]\nsocket = \"/run/watchkeeper/status\"\n[[component]]\nname = \"a\"\nliveness = \"notify\"\n",
            "/etc/wk.toml:2:10: notify.socket \"/run/watchkeeper/status\" is among the agent's own files: use \"/run/watchkeeper/notify\" or a path outside run_dir and state_dir",
        ),
        (
            "[notify]\nsockets = \"/x\"\n",
            "/etc/wk.toml:2:1: unknown key `sockets`, expected `socket`",
        ),
    ];
    for (text, expected) in cases {
        let error = parse(text).expect_err(text);
        assert!(
            error.starts_with(expected),
            "for {text:?}\n  got: {error}\n want: {expected}..."
        );
    }
}

#[test]
fn too_many_components_is_a_startup_error() {
    let mut text = String::new();
    for i in 0..=watchkeeper::limits::MAX_COMPONENTS {
        text.push_str(&format!(
            "[[component]]\nname = \"c{i}\"\nheartbeat = \"/run/c{i}\"\n"
        ));
    }
    let error = parse(&text).unwrap_err();
    assert!(
        error.contains("too many components: at most 1024"),
        "{error}"
    );
}

#[test]
fn salvage_keeps_what_validates_section_by_section() {
    let text = "[watchdog]\ndevice = \"/dev/watchdog1\"\ntimeout = 20\n[led]\nkind = \"gpio\"\nline = 3\n[agent]\nstate_dir = \"/data/wk\"\n[[component]]\nname = \"bad name\"\n";
    let s = config::salvage(Some(text));
    assert_eq!(
        s.watchdog.device.as_deref(),
        Some(Path::new("/dev/watchdog1"))
    );
    assert_eq!(s.watchdog.timeout, Duration::from_secs(20));
    assert_eq!(
        s.led,
        LedSpec::Gpio {
            chip: "/dev/gpiochip0".into(),
            line: 3,
            active_low: false
        }
    );
    assert_eq!(s.state_dir, Path::new("/data/wk"));
    let nothing = config::salvage(Some("not toml at all ["));
    assert_eq!(
        nothing.watchdog.device.as_deref(),
        Some(Path::new("/dev/watchdog"))
    );
    assert_eq!(nothing.led, LedSpec::None);
}

#[test]
fn every_board_profile_and_test_config_validates() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut dirs: Vec<_> = std::fs::read_dir(root.join("board"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    dirs.push(root.join("tests/system/configs"));
    let mut checked = Vec::new();
    for dir in dirs.iter().filter(|d| d.is_dir()) {
        for file in std::fs::read_dir(dir).unwrap() {
            let file = file.unwrap().path();
            if file.extension().is_some_and(|e| e == "toml") {
                config::load(&file).unwrap_or_else(|e| panic!("{e}"));
                checked.push(file);
            }
        }
    }
    // Both boards' profile and demo config at least.
    assert!(
        checked.len() >= 4,
        "expected the QEMU board configs, found {checked:?}"
    );
}

/// Words of the parser's internals that a config writer must never read.
const PARSER_WORDS: &[&str] = &[
    "i64",
    "i128",
    "u32",
    "u64",
    "usize",
    "invalid type",
    "sequence",
    "map",
    "struct",
    "Raw",
    "field",
];

/// Each case: the config text, and the exact start of the error (file:line:col: message).
fn assert_errors(cases: &[(&str, &str)]) {
    for (text, expected) in cases {
        let error = parse(text).expect_err(text);
        assert!(
            error.starts_with(expected),
            "for {text:?}\n  got: {error}\n want: {expected}..."
        );
        for word in PARSER_WORDS {
            assert!(
                !error.contains(word),
                "for {text:?}: the message names the parser's {word:?}: {error}"
            );
        }
    }
}

const C: &str = "[[component]]\nname = \"a\"\nheartbeat = \"/x\"\n";

#[test]
fn a_value_of_the_wrong_kind_is_refused_in_the_users_words_at_its_place() {
    let guard = |v: &str| format!("[reboot_guard]\nmax_resets = {v}\n");
    let ints = [
        ("1.5", "1.5 (a decimal number)"),
        ("1e3", "1e3 (a decimal number)"),
        ("1e999", "1e999 (a decimal number)"),
        ("99999999999999999999", "99999999999999999999 (too large)"),
        ("-99999999999999999999", "-99999999999999999999 (too large)"),
        ("\"3\"", "the string \"3\""),
        ("true", "true"),
        ("[1]", "a list"),
        ("{ a = 1 }", "a table"),
        ("1979-05-27", "a date or time"),
        ("07:32:00", "a date or time"),
    ];
    let mut cases: Vec<(String, String)> = ints
        .iter()
        .map(|(v, found)| {
            (
                guard(v),
                format!(
                    "/etc/wk.toml:2:14: reboot_guard.max_resets must be a whole number from 1 to 16, not {found}"
                ),
            )
        })
        .collect();
    let more: &[(String, &str)] = &[
        // counts elsewhere
        (
            format!("[agent]\nrealtime_priority = 2.5\n{C}"),
            "/etc/wk.toml:2:21: realtime_priority must be a whole number from 0 to 99, not 2.5",
        ),
        (
            format!("{C}max_repairs = 18446744073709551616\n"),
            "/etc/wk.toml:4:15: max_repairs must be a whole number from 1 to 100, not 18446744073709551616 (too large)",
        ),
        (
            "[led]\nkind = \"gpio\"\nline = \"4\"\n".into(),
            "/etc/wk.toml:3:8: led.line must be a whole number from 0 to 1023, not the string \"4\"",
        ),
        // strings and paths
        (
            format!("[agent]\nstate_dir = 5\n{C}"),
            "/etc/wk.toml:2:13: expected a string in quotes (\"...\"), not 5",
        ),
        (
            format!("[agent]\nrun_dir = [\"/a\"]\n{C}"),
            "/etc/wk.toml:2:11: expected a string in quotes (\"...\"), not a list",
        ),
        (
            format!("[agent]\nlog = {{ to = 1 }}\n{C}"),
            "/etc/wk.toml:2:7: expected a string in quotes (\"...\"), not a table",
        ),
        (
            format!("[watchdog]\ndevice = false\n{C}"),
            "/etc/wk.toml:2:10: expected a string in quotes (\"...\"), not false",
        ),
        (
            "[[component]]\nname = 7\nheartbeat = \"/x\"\n".into(),
            "/etc/wk.toml:2:8: expected a string in quotes (\"...\"), not 7",
        ),
        // durations
        (
            format!("[watchdog]\ntimeout = 1.5\n{C}"),
            "/etc/wk.toml:2:11: expected a duration: whole seconds (10) or a number with a unit (\"500ms\", \"10s\", \"5m\", \"1h\"), not 1.5 (a decimal number)",
        ),
        (
            format!("{C}grace = [1]\n"),
            "/etc/wk.toml:4:9: expected a duration",
        ),
        (
            format!("{C}timeout = \"99999999999999999999999h\"\n"),
            "/etc/wk.toml:4:11: a duration must be at most 30 days",
        ),
        (
            format!("{C}timeout = 99999999999999999999\n"),
            "/etc/wk.toml:4:11: a duration must be at most 30 days",
        ),
        // booleans
        (
            format!("{C}critical = 1\n"),
            "/etc/wk.toml:4:12: expected true or false (without quotes), not 1",
        ),
        (
            format!("[led]\nactive_low = \"no\"\n{C}"),
            "/etc/wk.toml:2:14: expected true or false (without quotes), not the string \"no\"",
        ),
        // lists
        (
            format!("{C}repair = \"/bin/x\"\n"),
            "/etc/wk.toml:4:10: expected a list of strings, [\"/abs/program\", \"argument\", ...], not the string \"/bin/x\"",
        ),
        (
            format!("{C}repair = [\"/bin/x\", 2]\n"),
            "/etc/wk.toml:4:21: each repair word must be a string in quotes (\"...\"), not 2",
        ),
        (
            format!("{C}repair = [[\"/bin/x\"]]\n"),
            "/etc/wk.toml:4:11: each repair word must be a string in quotes (\"...\"), not a list",
        ),
        // tables
        (
            format!("watchdog = 5\n{C}"),
            "/etc/wk.toml:1:12: expected a table ([section] or { key = value }), not 5",
        ),
        (
            format!("hearts = \"on\"\n{C}"),
            "/etc/wk.toml:1:10: expected a table ([section] or { key = value }), not the string \"on\"",
        ),
        // A list or a date is not a section, whatever it holds.
        (
            format!("watchdog = [\"/dev/watchdog\", 10, 5]\n{C}"),
            "/etc/wk.toml:1:12: expected a table ([section] or { key = value }), not a list",
        ),
        (
            format!("agent = 1979-05-27\n{C}"),
            "/etc/wk.toml:1:9: expected a table ([section] or { key = value }), not a date or time",
        ),
        (
            format!("reboot_guard = 1e3\n{C}"),
            "/etc/wk.toml:1:16: expected a table ([section] or { key = value }), not 1e3 (a decimal number)",
        ),
        (
            "component = 5\n".into(),
            "/etc/wk.toml:1:13: components are written [[component]] (two brackets), one table per component; found 5",
        ),
        (
            "[component]\nname = \"a\"\nheartbeat = \"/x\"\n".into(),
            "/etc/wk.toml:1:1: components are written [[component]] (two brackets)",
        ),
        (
            format!("{C}[component]\nname = \"b\"\n"),
            "/etc/wk.toml:4:2: [component] after [[component]]: write every component as [[component]] (two brackets)",
        ),
        (
            format!("[hearts]\n[hearts]\n{C}"),
            "/etc/wk.toml:2:2: the table [hearts] appears twice: write each table once",
        ),
        (
            format!("[watchdog]\ntimeout = 10\ntimeout = 11\n{C}"),
            "/etc/wk.toml:3:1: the key `timeout` is set twice in this table: set each key once",
        ),
        (
            format!("{C}name = \"b\"\n"),
            "/etc/wk.toml:4:1: the key `name` is set twice in this table",
        ),
        (
            format!("[agent]\nstate = \"/x\"\n{C}"),
            "/etc/wk.toml:2:1: unknown key `state`, expected one of",
        ),
        // bytes TOML does not allow
        (
            format!("{C}# a comment \0\n"),
            "/etc/wk.toml:4:13: a NUL byte is not allowed in the config",
        ),
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/x\0\"\n".into(),
            "/etc/wk.toml:3:16: a NUL byte is not allowed in the config",
        ),
        // LED keys that need another
        (
            "[led]\nkind = \"gpio\"\n".into(),
            "/etc/wk.toml:2:8: led kind \"gpio\" needs line = N (the line offset on the chip, 0 to 1023)",
        ),
        (
            "[led]\nkind = \"sysfs\"\n".into(),
            "/etc/wk.toml:2:8: led kind \"sysfs\" needs name = \"...\" (the LED under /sys/class/leds)",
        ),
        (
            "[led]\nkind = \"sysfs\"\nname = \"a\\tb\"\n".into(),
            "/etc/wk.toml:3:8: \"a\\tb\" is not an LED name under /sys/class/leds",
        ),
    ];
    cases.extend(more.iter().map(|(t, e)| (t.clone(), (*e).to_owned())));
    let cases: Vec<(&str, &str)> = cases
        .iter()
        .map(|(t, e)| (t.as_str(), e.as_str()))
        .collect();
    assert_errors(&cases);
}

#[test]
fn bytes_that_are_not_utf8_are_refused_at_the_first_bad_byte() {
    let cases: &[(&[u8], &str)] = &[
        (
            b"[watchdog]\n# caf\xe9\n",
            "/etc/wk.toml:2:6: the config is not UTF-8 text: byte 0xe9",
        ),
        (
            b"\xff",
            "/etc/wk.toml:1:1: the config is not UTF-8 text: byte 0xff",
        ),
        // column counts characters: two 2-byte characters before the bad byte
        (
            "[agent]\nx = \"\u{e9}\u{e9}".as_bytes(),
            "/etc/wk.toml:2:8: the config is not UTF-8 text",
        ),
    ];
    for (bytes, expected) in cases {
        let mut bytes = bytes.to_vec();
        if bytes.starts_with(b"[agent]") {
            bytes.push(0x80);
        }
        let error = config::parse_bytes(Path::new("/etc/wk.toml"), &bytes)
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(expected),
            "got: {error}\nwant: {expected}"
        );
    }
}

#[test]
fn a_config_over_the_one_size_limit_is_refused_naming_the_limit() {
    let limit = watchkeeper::limits::MAX_CONFIG_LEN;
    let mut text = String::from(MINIMAL);
    let filler = "# padding padding padding padding padding padding padding padding\n";
    while text.len() <= limit {
        text.push_str(filler);
    }
    let Err(error) = parse(&text) else {
        panic!("a config of {} bytes was accepted", text.len());
    };
    assert!(error.contains(&format!("at most {limit} bytes")), "{error}");
    assert!(error.starts_with("/etc/wk.toml:"), "{error}");
    // Exactly at the limit is accepted: what is accepted always fits the last-good read-back.
    text.truncate(limit);
    let cut = text.rfind('\n').unwrap() + 1;
    text.truncate(cut);
    text.push_str(&"#".repeat(limit - cut - 1));
    text.push('\n');
    assert_eq!(text.len(), limit);
    parse(&text).unwrap();
}

#[test]
fn paths_with_control_characters_are_refused_at_their_place() {
    let controls = [
        "\\t", "\\n", "\\r", "\\u001B", "\\u0001", "\\u007F", "\\u0000",
    ];
    let mut cases = Vec::new();
    for c in controls {
        cases.push((
            format!("[[component]]\nname = \"a\"\nheartbeat = \"/run/a{c}b\"\n"),
            "/etc/wk.toml:3:13: \"/run/a".to_owned(),
        ));
        cases.push((
            format!("[agent]\nstate_dir = \"/data{c}\"\n{C}"),
            "/etc/wk.toml:2:13: \"/data".to_owned(),
        ));
        cases.push((
            format!("[watchdog]\ndevice = \"/dev/w{c}\"\n{C}"),
            "/etc/wk.toml:2:10: \"/dev/w".to_owned(),
        ));
        cases.push((
            format!("{C}pidfile = \"/p{c}\"\n"),
            "/etc/wk.toml:4:11: \"/p".to_owned(),
        ));
        cases.push((
            format!("[hearts]\ndir = \"/h{c}\"\n"),
            "/etc/wk.toml:2:7: \"/h".to_owned(),
        ));
    }
    for (text, expected) in &cases {
        let error = parse(text).expect_err(text);
        assert!(
            error.starts_with(expected.as_str()),
            "for {text:?}: {error}"
        );
        assert!(
            error.contains("contains the control character")
                && error.contains("below 0x20 or 0x7f"),
            "for {text:?}: {error}"
        );
    }
}

#[test]
fn directories_that_overlap_are_refused_whichever_way_they_are_written() {
    let agent = |state: &str, run: &str| {
        let mut t = String::from("[agent]\n");
        if !state.is_empty() {
            t.push_str(&format!("state_dir = \"{state}\"\n"));
        }
        if !run.is_empty() {
            t.push_str(&format!("run_dir = \"{run}\"\n"));
        }
        t.push_str(C);
        t
    };
    let rule = "must be separate directories, neither inside the other";
    let cases: &[(&str, &str, &str)] = &[
        // state_dir alone equal to the default run_dir: once a panic
        ("/run/watchkeeper", "", "/etc/wk.toml:2:13: state_dir: "),
        ("/run/watchkeeper/", "", "/etc/wk.toml:2:13: state_dir: "),
        ("/run//watchkeeper/.", "", "/etc/wk.toml:2:13: state_dir: "),
        (
            "/run/x/../watchkeeper",
            "",
            "/etc/wk.toml:2:13: state_dir: ",
        ),
        (
            "/run/watchkeeper/state",
            "",
            "/etc/wk.toml:2:13: state_dir: ",
        ),
        ("/run", "", "/etc/wk.toml:2:13: state_dir: "),
        ("", "/var/lib/watchkeeper", "/etc/wk.toml:2:11: run_dir: "),
        (
            "",
            "/var/lib/watchkeeper/run",
            "/etc/wk.toml:2:11: run_dir: ",
        ),
        ("", "/var/lib", "/etc/wk.toml:2:11: run_dir: "),
        ("/data/wk", "/data/wk", "/etc/wk.toml:3:11: run_dir: "),
        ("/data/wk", "/data/./wk/", "/etc/wk.toml:3:11: run_dir: "),
        ("/data/wk", "/data/wk/run", "/etc/wk.toml:3:11: run_dir: "),
        ("/data/wk/state", "/data/wk", "/etc/wk.toml:3:11: run_dir: "),
        ("/data/wk", "/data/x/../wk", "/etc/wk.toml:3:11: run_dir: "),
    ];
    for (state, run, expected) in cases {
        let text = agent(state, run);
        let error = parse(&text).expect_err(&text);
        assert!(
            error.starts_with(expected) && error.contains(rule),
            "for {text:?}\n got: {error}\nwant: {expected}...{rule}"
        );
    }
    // Siblings and prefixes that are not parents are fine.
    for (state, run) in [("/data/wk", "/data/wk2"), ("/run/wk-state", "/run/wk")] {
        parse(&agent(state, run)).unwrap();
    }
}

#[test]
fn configured_files_inside_the_agents_own_directories_are_refused() {
    let dirs = "[agent]\nstate_dir = \"/data/wk\"\nrun_dir = \"/run/wk\"\n";
    let comp = |beat: &str, pid: &str| {
        let mut t = format!("{dirs}[[component]]\nname = \"a\"\nheartbeat = \"{beat}\"\n");
        if !pid.is_empty() {
            t.push_str(&format!("pidfile = \"{pid}\"\n"));
        }
        t
    };
    let own = "the agent writes its own files there";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            comp("/run/wk/problems/a", ""),
            "/etc/wk.toml:6:13: heartbeat \"/run/wk/problems/a\" of component \"a\" is inside run_dir \"/run/wk\"",
            own,
        ),
        (
            comp("/run/wk/status", ""),
            "/etc/wk.toml:6:13: heartbeat \"/run/wk/status\" of component \"a\" is inside run_dir",
            own,
        ),
        (
            comp("/run/wk", ""),
            "/etc/wk.toml:6:13: heartbeat \"/run/wk\" of component \"a\" is inside run_dir",
            own,
        ),
        (
            comp("/run/x/../wk/problems/a", ""),
            "/etc/wk.toml:6:13: heartbeat \"/run/x/../wk/problems/a\" of component \"a\" is inside run_dir",
            own,
        ),
        (
            comp("/run//wk/./fed", ""),
            "/etc/wk.toml:6:13: heartbeat \"/run//wk/./fed\" of component \"a\" is inside run_dir",
            own,
        ),
        (
            comp("/data/wk/history", ""),
            "/etc/wk.toml:6:13: heartbeat \"/data/wk/history\" of component \"a\" is inside state_dir \"/data/wk\"",
            own,
        ),
        (
            comp("/run/a.beat", "/run/wk/a.pid"),
            "/etc/wk.toml:7:11: pidfile \"/run/wk/a.pid\" of component \"a\" is inside run_dir",
            own,
        ),
        (
            comp("/run/a.beat", "/data/wk/last-good.toml"),
            "/etc/wk.toml:7:11: pidfile \"/data/wk/last-good.toml\" of component \"a\" is inside state_dir",
            own,
        ),
        // the hearts directory: only run_dir/hearts may be inside run_dir
        (
            format!("{dirs}[hearts]\ndir = \"/run/wk/problems\"\n"),
            "/etc/wk.toml:5:7: the hearts dir \"/run/wk/problems\" is inside run_dir \"/run/wk\" (only /run/wk/hearts is allowed there)",
            own,
        ),
        (
            format!("{dirs}[hearts]\ndir = \"/run/wk\"\n"),
            "/etc/wk.toml:5:7: the hearts dir \"/run/wk\" is inside run_dir",
            own,
        ),
        (
            format!("{dirs}[hearts]\ndir = \"/data/wk/hearts\"\n"),
            "/etc/wk.toml:5:7: the hearts dir \"/data/wk/hearts\" is inside state_dir",
            own,
        ),
        // heartbeats and pidfiles inside the hearts directory would be read as hearts
        (
            format!(
                "{dirs}[hearts]\n[[component]]\nname = \"a\"\nheartbeat = \"/run/wk/hearts/a\"\n"
            ),
            "/etc/wk.toml:7:13: heartbeat \"/run/wk/hearts/a\" of component \"a\" is inside run_dir",
            own,
        ),
        (
            format!(
                "{dirs}[hearts]\ndir = \"/run/h\"\n[[component]]\nname = \"a\"\nheartbeat = \"/run/h/a\"\n"
            ),
            "/etc/wk.toml:8:13: heartbeat \"/run/h/a\" of component \"a\" is inside the hearts directory \"/run/h\"",
            "every file there is read as a heart",
        ),
        (
            format!(
                "{dirs}[hearts]\ndir = \"/run/h/\"\n[[component]]\nname = \"a\"\nheartbeat = \"/run/a\"\npidfile = \"/run/h/a.pid\"\n"
            ),
            "/etc/wk.toml:9:11: pidfile \"/run/h/a.pid\" of component \"a\" is inside the hearts directory",
            "read as a heart",
        ),
    ];
    for (text, expected, why) in &cases {
        let error = parse(text).expect_err(text);
        assert!(
            error.starts_with(expected) && error.contains(why),
            "for {text:?}\n got: {error}\nwant: {expected}...{why}"
        );
    }
    // The default hearts directory, and run_dir/hearts written out, are allowed.
    parse(&format!("{dirs}[hearts]\n")).unwrap();
    parse(&format!("{dirs}[hearts]\ndir = \"/run/wk/./hearts/\"\n")).unwrap();
}

#[test]
fn shared_heartbeats_and_pidfiles_that_are_heartbeats_are_refused() {
    let two = |a: &str, b: &str| {
        format!("[[component]]\nname = \"a\"\n{a}\n[[component]]\nname = \"b\"\n{b}\n")
    };
    let cases: Vec<(String, &str)> = vec![
        (
            two("heartbeat = \"/run/x\"", "heartbeat = \"/run/./x\""),
            "/etc/wk.toml:6:13: heartbeat \"/run/./x\" of component \"b\" is also the heartbeat of component \"a\": each component needs its own heartbeat",
        ),
        (
            two("heartbeat = \"/run/x\"", "heartbeat = \"//run/y/../x/\""),
            "/etc/wk.toml:6:13: heartbeat \"//run/y/../x/\" of component \"b\" is also the heartbeat of component \"a\"",
        ),
        // a pidfile equal to its own heartbeat
        (
            "[[component]]\nname = \"a\"\nheartbeat = \"/run/a\"\npidfile = \"/run/a\"\n".into(),
            "/etc/wk.toml:4:11: pidfile \"/run/a\" of component \"a\" is also the heartbeat of component \"a\": a pidfile must be its own file",
        ),
        // a pidfile equal to another component's heartbeat, before or after it
        (
            two(
                "heartbeat = \"/run/a\"",
                "heartbeat = \"/run/b\"\npidfile = \"/run/./a\"",
            ),
            "/etc/wk.toml:7:11: pidfile \"/run/./a\" of component \"b\" is also the heartbeat of component \"a\": a pidfile must be its own file",
        ),
        (
            two(
                "heartbeat = \"/run/a\"\npidfile = \"/run/b\"",
                "heartbeat = \"/run/b\"",
            ),
            "/etc/wk.toml:4:11: pidfile \"/run/b\" of component \"a\" is also the heartbeat of component \"b\": a pidfile must be its own file",
        ),
    ];
    for (text, expected) in &cases {
        let error = parse(text).expect_err(text);
        assert!(
            error.starts_with(expected),
            "for {text:?}\n got: {error}\nwant: {expected}..."
        );
    }
}

#[test]
fn reset_after_must_leave_a_repair_time_to_run_and_be_judged() {
    let rule = "a repair must be able to run to its timeout and the component to beat again before a reset is forced";
    let r = "repair = [\"/bin/true\"]";
    let cases: Vec<(String, &str)> = vec![
        (
            format!("{C}{r}\nrepair_timeout = \"30s\"\nreset_after = \"59s\"\n"),
            "/etc/wk.toml:6:15: reset_after (59s) must be at least repair_timeout (30s) + timeout (30s) = 60s",
        ),
        (
            format!("{C}{r}\ntimeout = \"10s\"\nreset_after = \"20s\"\n"),
            "/etc/wk.toml:6:15: reset_after (20s) must be at least repair_timeout (30s) + timeout (10s) = 40s",
        ),
        // only repair_timeout set: the error is there
        (
            format!("{C}{r}\nrepair_timeout = \"5m\"\n"),
            "/etc/wk.toml:5:18: reset_after (300s) must be at least repair_timeout (300s) + timeout (30s) = 330s",
        ),
        // set in [defaults]: the error points there
        (
            format!("[defaults]\nreset_after = \"10s\"\n{C}{r}\n"),
            "/etc/wk.toml:2:15: reset_after (10s) must be at least repair_timeout (30s) + timeout (30s) = 60s",
        ),
        // hearts: their timeouts are only known at run time; the repair must fit
        (
            "[hearts]\nrepair = [\"/bin/true\"]\nreset_after = \"10s\"\n".into(),
            "/etc/wk.toml:3:15: reset_after (10s) must be at least repair_timeout (30s):",
        ),
    ];
    for (text, expected) in &cases {
        let error = parse(text).expect_err(text);
        assert!(
            error.starts_with(expected) && error.contains(rule),
            "for {text:?}\n got: {error}\nwant: {expected}...{rule}"
        );
    }
    // Exactly enough is accepted; without a repair there is nothing to wait for.
    parse(&format!(
        "{C}{r}\nrepair_timeout = \"30s\"\nreset_after = \"60s\"\n"
    ))
    .unwrap();
    parse(&format!("{C}reset_after = \"1s\"\n")).unwrap();
}

#[test]
fn a_device_or_gpio_chip_that_is_a_regular_file_is_refused_a_missing_one_is_not() {
    let dir = std::env::temp_dir().join(format!("wk-config-devfile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("watchdog");
    std::fs::write(&file, b"").unwrap();
    let link = dir.join("link");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&file, &link).unwrap();
    for path in [&file, &link] {
        let p = path.display();
        let device = parse(&format!("[watchdog]\ndevice = \"{p}\"\n{C}")).unwrap_err();
        assert!(
            device.starts_with(&format!(
                "/etc/wk.toml:2:10: device \"{p}\" is a regular file, not a watchdog device"
            )),
            "{device}"
        );
        let chip = parse(&format!(
            "[led]\nkind = \"gpio\"\nchip = \"{p}\"\nline = 1\n{C}"
        ))
        .unwrap_err();
        assert!(
            chip.starts_with(&format!(
                "/etc/wk.toml:3:8: led.chip \"{p}\" is a regular file, not a gpio chip"
            )),
            "{chip}"
        );
    }
    let missing = dir.join("missing");
    let m = missing.display();
    parse(&format!("[watchdog]\ndevice = \"{m}\"\n{C}")).unwrap();
    parse(&format!(
        "[led]\nkind = \"gpio\"\nchip = \"{m}\"\nline = 1\n{C}"
    ))
    .unwrap();
    parse(&format!("[watchdog]\ndevice = \"/dev/null\"\n{C}")).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn what_check_prints_reparses_even_with_escapes() {
    let text = "[[component]]\nname = \"a\"\nheartbeat = \"/run/caf\u{e9} \\\"q\\\" \\\\\"\nrepair = [\"/bin/sh\", \"-c\", \"echo\\t\\\"x\\\"\\n\\u001b\"]\n";
    let c = parse(text).unwrap();
    let printed = c.to_string();
    let reparsed = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
    assert_eq!(reparsed.components[0].heartbeat, c.components[0].heartbeat);
    assert_eq!(
        reparsed.components[0].repair.as_ref().unwrap().argv,
        c.components[0].repair.as_ref().unwrap().argv
    );
    assert_eq!(reparsed.to_string(), printed);
}

#[test]
fn salvage_finds_the_directories_in_text_that_is_not_toml() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[agent]\nstate_dir = \"/data/wk\"\nrun_dir = '/run/wk' # tmpfs\n[watchdog\n",
            "/data/wk",
            "/run/wk",
        ),
        (
            "[watchdog]\ntimeout = = 3\n[ agent ]\n  state_dir=\"/data/wk\"\n",
            "/data/wk",
            "/run/watchkeeper",
        ),
        (
            "agent.state_dir = \"/data/wk\"\n[[component]\n",
            "/data/wk",
            "/run/watchkeeper",
        ),
        // only under [agent]; a relative or control-character path is not used
        (
            "[other]\nstate_dir = \"/data/no\"\n[agent\n",
            "/var/lib/watchkeeper",
            "/run/watchkeeper",
        ),
        (
            "[agent]\nstate_dir = \"data\"\nrun_dir = \"/run/a\\tb\"\n[x\n",
            "/var/lib/watchkeeper",
            "/run/watchkeeper",
        ),
        // TOML that parses but does not validate: read as TOML
        (
            "[agent]\nstate_dir = \"/data/wk\"\nlog = 5\n",
            "/data/wk",
            "/run/watchkeeper",
        ),
    ];
    for (text, state, run) in cases {
        let s = config::salvage(Some(text));
        assert_eq!(
            (s.state_dir.as_path(), s.run_dir.as_path()),
            (Path::new(state), Path::new(run)),
            "for {text:?}"
        );
    }
    // The watchdog device too: never another one than configured.
    let devices: &[(&str, Option<&str>)] = &[
        ("[watchdog]\ndevice = \"none\"\n[agent\n", None),
        (
            "[watchdog]\ndevice = \"/dev/watchdog1\"\ntimeout = 99999\n",
            Some("/dev/watchdog1"),
        ),
        (
            "[watchdog]\ndevice = \"/dev/watchdog1\"\n[[x\n",
            Some("/dev/watchdog1"),
        ),
        // a header missing its bracket still names its table
        ("[watchdog\ndevice = \"none\"\n", None),
        ("[led]\ndevice = \"none\"\n[x\n", Some("/dev/watchdog")),
    ];
    for (text, device) in devices {
        let s = config::salvage(Some(text));
        assert_eq!(
            s.watchdog.device.as_deref(),
            device.map(Path::new),
            "for {text:?}"
        );
    }
}

#[test]
fn no_input_panics_and_every_parse_error_has_a_place() {
    // Cuts and byte flips of a full config: never a panic, always file:line:col.
    let base = format!(
        "[watchdog]\ndevice = \"none\"\ntimeout = 10\n[agent]\nstate_dir = \"/data/wk\"\nrun_dir = \"/run/wk\"\n[led]\nkind = \"gpio\"\nline = 4\n[hearts]\n{C}pidfile = \"/run/a.pid\"\nrepair = [\"/bin/true\"]\n"
    );
    let bytes = base.as_bytes();
    let mut tried = 0;
    for cut in 0..=bytes.len() {
        for flip in [b'\0', b'\xff', b'"', b'[', b'=', b'\n', b'.', b'1', b'/'] {
            let mut input = bytes[..cut].to_vec();
            input.push(flip);
            input.extend_from_slice(&bytes[cut..]);
            if let Err(e) = config::parse_bytes(Path::new("/etc/wk.toml"), &input) {
                assert!(e.at.is_some(), "no place for {input:?}: {e}");
                let text = e.to_string();
                for word in PARSER_WORDS {
                    assert!(!text.contains(word), "{word:?} in {text}");
                }
            }
            tried += 1;
        }
    }
    assert!(tried > 1000);
}

#[test]
fn liveness_chooses_the_signs_of_life_and_a_notify_component_gets_its_exec_pidfile() {
    let c = parse(MINIMAL).unwrap();
    assert_eq!(c.components[0].liveness, config::Liveness::Heartbeat);
    assert!(!c.components[0].policy.awaits_ready);
    assert!(!c.listens());
    assert_eq!(c.pidfile(&c.components[0]), None);

    let text = "[[component]]\nname = \"sensord\"\nliveness = \"notify\"\ntimeout = \"5s\"\n\
                [[component]]\nname = \"both\"\nliveness = \"both\"\nheartbeat = \"/run/b.beat\"\npidfile = \"/run/b.pid\"\n";
    let c = parse(text).unwrap();
    let (notify, both) = (&c.components[0], &c.components[1]);
    assert_eq!(notify.liveness, config::Liveness::Notify);
    assert_eq!(notify.heartbeat, None);
    assert!(notify.policy.awaits_ready && both.policy.awaits_ready);
    assert!(c.listens());
    assert_eq!(c.notify.socket, Path::new("/run/watchkeeper/notify"));
    assert_eq!(
        c.pidfile(notify).as_deref(),
        Some(Path::new("/run/watchkeeper/exec/sensord.pid"))
    );
    assert_eq!(c.pidfile(both).as_deref(), Some(Path::new("/run/b.pid")));

    // What `check` prints parses back to the same settings.
    let printed = c.to_string();
    assert!(
        printed.contains("[notify]\nsocket = \"/run/watchkeeper/notify\""),
        "{printed}"
    );
    let again = parse(&printed).unwrap();
    assert_eq!(again.to_string(), printed);

    let c = parse(&format!(
        "[agent]\nrun_dir = \"/run/wk\"\n[notify]\nsocket = \"/run/daemons.sock\"\n{text}"
    ))
    .unwrap();
    assert_eq!(c.notify.socket, Path::new("/run/daemons.sock"));
    assert_eq!(
        c.pidfile(&c.components[0]).as_deref(),
        Some(Path::new("/run/wk/exec/sensord.pid"))
    );
}

/// A component with a 30 s timeout and grace 60 s (the defaults), then `[boot]` lines.
fn boot(lines: &str) -> String {
    format!("[[component]]\nname = \"app\"\nheartbeat = \"/run/app.beat\"\n[boot]\n{lines}")
}

#[test]
fn boot_confirmation_gets_its_defaults_and_check_prints_it_back() {
    use watchkeeper::config::TrialCheck;
    let c = parse(&boot(
        "confirm = [\"/usr/bin/rauc\", \"status\", \"mark-good\"]\n",
    ))
    .unwrap();
    let b = c.boot.as_ref().unwrap();
    assert_eq!(b.policy.confirm_after, Duration::from_secs(60));
    assert_eq!(b.policy.timeout, Duration::from_secs(30));
    assert_eq!(b.policy.attempts, 3);
    assert_eq!((b.deadline, &b.trial), (None, &TrialCheck::Always));
    for lines in [
        "confirm = [\"/usr/bin/fw_setenv\", \"upgrade_available\", \"0\"]\nconfirm_after = \"2m\"\nconfirm_deadline = \"10m\"\nconfirm_timeout = \"5s\"\nconfirm_attempts = 5\ntrial = [\"/usr/bin/fw_printenv\", \"-n\", \"upgrade_available\"]\ntrial_value = \"1\"\n",
        "confirm = [\"/usr/bin/mender\", \"commit\"]\ntrial = [\"/usr/local/bin/is-trial\"]\n",
        "confirm = [\"/bin/true\"]\ntrial_file = \"/run/trial \\\"boot\\\"\"\ntrial_value = \"yes\"\n",
    ] {
        let c = parse(&boot(lines)).unwrap_or_else(|e| panic!("{e}\n{lines}"));
        let printed = c.to_string();
        let reparsed = parse(&printed).unwrap_or_else(|e| panic!("{e}\n{printed}"));
        assert_eq!(reparsed.boot, c.boot, "{printed}");
        assert_eq!(reparsed.to_string(), printed);
    }
}

#[test]
fn boot_confirmation_refuses_what_could_not_work_at_its_place() {
    let confirm = "confirm = [\"/bin/true\"]\n";
    let cases: Vec<(String, &str)> = vec![
        (
            boot(""),
            "/etc/wk.toml:4:1: [boot] has no confirm (it is required)",
        ),
        (
            boot("confirm = [\"rauc\", \"status\", \"mark-good\"]\n"),
            "/etc/wk.toml:5:11: the confirm program \"rauc\" must be an absolute path",
        ),
        (
            boot(&format!("{confirm}confirm_after = \"20s\"\n")),
            "/etc/wk.toml:6:17: confirm_after (20s) must be at least the timeout of component \"app\" (30s): a component that beat once and then died would still count as alive",
        ),
        (
            boot(&format!("{confirm}confirm_deadline = \"100s\"\n")),
            "/etc/wk.toml:6:20: confirm_deadline (100s) must be at least the grace of component \"app\" + confirm_after (60s + 60s = 120s)",
        ),
        (
            boot(&format!("{confirm}confirm_attempts = 0\n")),
            "/etc/wk.toml:6:20: confirm_attempts must be a whole number from 1 to 100, not 0",
        ),
        (
            boot(&format!(
                "{confirm}trial = [\"/bin/true\"]\ntrial_file = \"/run/t\"\ntrial_value = \"1\"\n"
            )),
            "/etc/wk.toml:7:14: set either trial (a command) or trial_file, not both",
        ),
        (
            boot(&format!("{confirm}trial_file = \"/run/t\"\n")),
            "/etc/wk.toml:6:14: trial_file needs trial_value",
        ),
        (
            boot(&format!("{confirm}trial_value = \"1\"\n")),
            "/etc/wk.toml:6:15: trial_value is compared with the output of trial or the content of trial_file",
        ),
        (
            boot(&format!(
                "{confirm}trial = [\"/bin/true\"]\ntrial_value = \" 1\"\n"
            )),
            "/etc/wk.toml:7:15: trial_value \" 1\" must be 1 to 256 bytes without surrounding whitespace",
        ),
        (
            boot(&format!("{confirm}confirm_after = 5\n")),
            "/etc/wk.toml:6:17: confirm_after (5s) must be at least the timeout",
        ),
        (
            boot(&format!("{confirm}confirm_after = \"500ms\"\n")),
            "/etc/wk.toml:6:17: confirm_after must be at least 1s",
        ),
        (
            boot(&format!("{confirm}unknown = 1\n")),
            "/etc/wk.toml:6:1: unknown key `unknown`, expected one of `confirm`",
        ),
        (
            format!(
                "[[component]]\nname = \"app\"\nheartbeat = \"/run/app.beat\"\ncritical = false\n[boot]\n{confirm}"
            ),
            "/etc/wk.toml:5:1: [boot] confirms a boot when every critical component is alive, and no component is critical",
        ),
    ];
    let cases: Vec<(&str, &str)> = cases.iter().map(|(t, e)| (t.as_str(), *e)).collect();
    assert_errors(&cases);
    // Critical hearts are enough, and their grace counts for the deadline.
    let hearts = "[hearts]\ncritical = true\ngrace = \"90s\"\n[boot]\nconfirm = [\"/bin/true\"]\nconfirm_deadline = \"2m\"\n";
    assert_errors(&[(
        hearts,
        "/etc/wk.toml:6:20: confirm_deadline (120s) must be at least the grace of [hearts] + confirm_after (90s + 60s = 150s)",
    )]);
    assert!(parse(&hearts.replace("\"2m\"", "\"150s\"")).is_ok());
}
