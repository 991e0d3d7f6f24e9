//! Config validation: every bad input names the file, line and column and says what is
//! allowed; good input yields the documented defaults.

use std::path::Path;
use std::time::Duration;

use watchkeeper::config::{self, LogTarget};
use watchkeeper::led::LedSpec;

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
            "[watchdog]\ntimout = 10\n",
            "/etc/wk.toml:2:1: unknown key `timout`, expected one of `device`, `timeout`, `feed_interval`",
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
            "/etc/wk.toml:1:1: this [[component]] has no heartbeat (it is required)",
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
