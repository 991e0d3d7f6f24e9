//! The Linux shell: one module per OS resource, each holding its file descriptors and
//! turning system-call failures into small error enums. The only `unsafe` of the crate
//! lives here, in modules that wrap a system call or ioctl (nix lacks some, and ioctls are unsafe by nature) (each block with a
//! `// SAFETY:` note citing the kernel or libc document it relies on).

pub(crate) mod atomic;
pub mod clock;
pub mod confirm;
pub mod dirwatch;
pub(crate) mod harden;
pub mod heartbeat;
pub mod led;
pub mod logging;
pub mod notify;
pub mod notify_socket;
pub mod pidfd;
pub mod repair;
pub mod rundir;
pub mod signals;
pub mod spawn;
pub mod state;
pub mod textfile;
pub mod wallclock;
pub mod watchdog;
