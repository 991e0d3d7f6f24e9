//! watchkeeper: a minimal, crash-only watchdog agent for ARM Linux appliances.
//!
//! The folders are the architecture:
//! - [`core`]: the pure supervision core (deadlines, blink patterns, the reset history,
//!   the component-name rule).
//!   Time is passed in and decisions come out; no I/O, no clock, no allocation, and no
//!   import from anywhere else in the crate but [`limits`] (`tests/layout.rs` checks it).
//! - [`os`]: the thin Linux shell, one module per OS resource.
//! - [`config`]: the configuration: read once at startup, validated at the boundary.
//! - [`agent`]: the loop that joins them: observe, tick the core, act.
//! - [`cli`]: the command line's work (startup, `status`, the build's version).
//! - [`limits`] (every capacity), [`snapshot`] (the status file's format) and [`metrics`]
//!   (the fleet's textfile) are the contracts the others share.
//!
//! See the README for the design.

pub mod agent;
pub mod cli;
pub mod config;
pub mod core;
pub mod limits;
pub mod metrics;
pub mod os;
pub mod snapshot;
