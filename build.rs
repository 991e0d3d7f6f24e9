//! Bakes the git revision and the target triple into the binary, so that `--version` and
//! the startup log line say exactly what runs on a board.

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn main() {
    let revision =
        git(&["rev-parse", "--short=12", "HEAD"]).unwrap_or_else(|| "unknown".to_owned());
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    let suffix = if dirty { "-dirty" } else { "" };
    println!("cargo:rustc-env=WATCHKEEPER_GIT={revision}{suffix}");
    println!(
        "cargo:rustc-env=WATCHKEEPER_TARGET={}",
        std::env::var("TARGET").unwrap_or_default()
    );
    for path in [".git/HEAD", ".git/index", ".git/refs"] {
        println!("cargo:rerun-if-changed={path}");
    }
}
