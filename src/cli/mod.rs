//! The command line's work behind `src/main.rs`: starting the agent (`run`), reading
//! what a running or dead agent left (`status`), handing a reboot over (`shutdown`),
//! starting a daemon under supervision (`exec`), and the build's version.

pub mod exec;
pub mod shutdown;
pub mod startup;
pub mod status;
pub mod version;
