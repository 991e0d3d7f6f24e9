//! A panic in a release build prints its message and `file:line:col` and aborts (SIGABRT),
//! with the unwinder stand-ins of `src/unwind.rs` and without unwind tables; and the release
//! binaries of the appliance targets really are linked that way (`nm`).
//!
//! The binary that panics is `tests/panic_release/probe.rs`, an example target built here with
//! the release profile, the same stand-ins (the same file) and the same linker script as the
//! agent. Why not the agent itself: nothing in the shipped binary may make it panic on
//! request (no hidden switch, no test-only code path), and an example is never built by
//! `cargo build` nor installed.
//!
//! It runs in every suite of tests/run: on the host (x86_64 glibc, which keeps the real
//! unwinder: the panic behaviour only), and under qemu-user for the appliance targets, where
//! the stand-ins apply. The test builds into its own target directory, target/panic-release
//! (not to contend with the `cargo test` that runs it; tests/bench reads the same builds), a
//! full release build the first time for each target, incremental after.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const TARGET: &str = env!("WATCHKEEPER_TARGET");
const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");
const PROBE_SOURCE: &str = "tests/panic_release/probe.rs";

/// The appliance targets, where src/unwind.rs stands in for the unwinder, and the `nm` of
/// their binutils (installed by board/host-setup.sh with the cross compilers).
fn appliance_nm() -> Option<&'static str> {
    match TARGET {
        "aarch64-unknown-linux-musl" => Some("aarch64-linux-gnu-nm"),
        "armv7-unknown-linux-gnueabihf" => Some("arm-linux-gnueabihf-nm"),
        _ => None,
    }
}

/// Builds the agent and the probe with the release profile, unstripped so that `nm` can read
/// them (stripping is the last step of the link and changes nothing else), and returns the
/// release directory.
fn build_release() -> PathBuf {
    let target_dir = Path::new(MANIFEST_DIR).join("target/panic-release");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(MANIFEST_DIR)
        .args(["build", "--quiet", "--release", "--target", TARGET])
        .args(["--bin", "watchkeeper", "--example", "panic-probe"])
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("CARGO_PROFILE_RELEASE_STRIP", "false")
        .status()
        .expect("run cargo");
    assert!(status.success(), "cargo build --release failed: {status}");
    target_dir.join(TARGET).join("release")
}

/// Where the probe's `panic!` is, as the panic message prints it: `file:line:col`.
fn probe_panic_location() -> String {
    let source = std::fs::read_to_string(Path::new(MANIFEST_DIR).join(PROBE_SOURCE)).unwrap();
    let (index, line) = source
        .lines()
        .enumerate()
        .find(|(_, l)| l.trim_start().starts_with("panic!("))
        .expect("the probe has one panic!");
    let column = line.find("panic!(").unwrap() + 1;
    format!("{PROBE_SOURCE}:{}:{column}", index + 1)
}

fn run_probe(release: &Path, backtrace: bool) -> Output {
    let mut command = Command::new(release.join("examples/panic-probe"));
    command.arg("from the test");
    if backtrace {
        command.env("RUST_BACKTRACE", "1");
    } else {
        command.env_remove("RUST_BACKTRACE");
    }
    command.output().expect("run the probe")
}

fn assert_aborted_with_message(output: &Output, location: &str) {
    use std::os::unix::process::ExitStatusExt;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGABRT),
        "the probe did not die of SIGABRT: {}\n{stderr}",
        output.status
    );
    assert!(
        stderr.contains(&format!("panicked at {location}:\n")),
        "no `panicked at {location}` in:\n{stderr}"
    );
    assert!(
        stderr.contains("panic-probe: deliberate panic (from the test)\n"),
        "no panic message in:\n{stderr}"
    );
}

fn nm(tool: &str, binary: &Path) -> String {
    let output = Command::new(tool)
        .args(["--defined-only", "--demangle"])
        .arg(binary)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {tool} (board/host-setup.sh installs it): {e}"));
    assert!(output.status.success(), "{tool} {}", binary.display());
    String::from_utf8(output.stdout).unwrap()
}

/// Symbols that only the real unwinder (LLVM libunwind, libgcc_eh's ARM EHABI unwinder)
/// defines, and path prefixes of std's backtrace symbolizer.
const UNWINDER_ONLY: &[&str] = &[
    "__unw_init_local",
    "__unw_step",
    "_Unwind_RaiseException",
    "__gnu_unwind_execute",
    "__gnu_Unwind_RaiseException",
];
const SYMBOLIZER: &[&str] = &[
    "gimli::",
    "addr2line::",
    "miniz_oxide::",
    "rustc_demangle::",
];

#[test]
fn release_panic_prints_message_and_location_then_aborts() {
    let release = build_release();
    let location = probe_panic_location();
    assert_aborted_with_message(&run_probe(&release, false), &location);
    // Asked for a backtrace, std walks the stack; with the stand-ins the walk is empty at
    // once, and the panic still aborts with its message.
    let with_backtrace = run_probe(&release, true);
    assert_aborted_with_message(&with_backtrace, &location);
    assert!(String::from_utf8_lossy(&with_backtrace.stderr).contains("stack backtrace:"));

    let Some(tool) = appliance_nm() else {
        eprintln!("{TARGET}: the real unwinder is kept here; symbols not checked");
        return;
    };
    for binary in [
        release.join("watchkeeper"),
        release.join("examples/panic-probe"),
    ] {
        let symbols = nm(tool, &binary);
        let names: Vec<&str> = symbols
            .lines()
            .filter_map(|l| l.splitn(3, ' ').nth(2))
            .collect();
        let name = binary.display();
        assert!(
            names.contains(&"watchkeeper_unwind_stand_ins"),
            "{name}: src/unwind.rs's stand-ins are not linked (its cfg no longer matches?)"
        );
        for symbol in UNWINDER_ONLY {
            assert!(
                !names.contains(symbol),
                "{name}: the unwinder is linked ({symbol})"
            );
        }
        for prefix in SYMBOLIZER {
            let found = names.iter().find(|n| n.contains(prefix));
            assert!(
                found.is_none(),
                "{name}: std's symbolizer is linked: {found:?}"
            );
        }
    }
}
