//! watchkeeper: a minimal, crash-only watchdog agent for ARM Linux appliances.
//!
//! The crate is a pure supervision core ([`supervisor`], [`pattern`], [`history`]) wrapped
//! in a thin Linux shell with one module per OS resource. See the README for the design.
#![deny(unsafe_code)]

pub mod limits;
pub mod pattern;
pub mod supervisor;
pub mod time;
