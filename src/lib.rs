//! watchkeeper: a minimal, crash-only watchdog agent for ARM Linux appliances.
//!
//! The crate is a pure supervision core ([`supervisor`], [`pattern`], [`history`]) wrapped
//! in a thin Linux shell with one module per OS resource. See the README for the design.
#![deny(unsafe_code)]

pub mod agent;
pub mod atomic;
pub mod clock;
pub mod config;
pub mod harden;
pub mod heartbeat;
pub mod history;
pub mod led;
pub mod limits;
pub mod logging;
pub mod pattern;
pub mod repair;
pub mod rundir;
pub mod signals;
pub mod snapshot;
pub mod spawn;
pub mod startup;
pub mod state;
pub mod status;
pub mod supervisor;
pub mod time;
pub mod version;
pub mod watchdog;
