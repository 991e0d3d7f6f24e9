//! What this binary is: version, git revision and target, baked in by `build.rs`.

/// One line for `--version` and the startup log.
pub const LINE: &str = concat!(
    "watchkeeper ",
    env!("CARGO_PKG_VERSION"),
    " (git ",
    env!("WATCHKEEPER_GIT"),
    ", ",
    env!("WATCHKEEPER_TARGET"),
    ")"
);
