//! The pure supervision core: no I/O, no clock, no allocation. Time comes in as
//! [`time::Instant`] values, decisions come out, so tests drive it without sleeping.
//! Nothing here imports from the rest of the crate but `crate::limits`.

pub mod boot;
pub mod history;
pub mod name;
pub mod notify;
pub mod pattern;
pub mod supervisor;
pub mod time;
