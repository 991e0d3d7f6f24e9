//! The command line's work behind `src/main.rs`: starting the agent (`run`), reading
//! what a running or dead agent left (`status`), and the build's version.

pub mod shutdown;
pub mod startup;
pub mod status;
pub mod version;
