//! A program that panics at once, for tests/panic_release.rs: it is built like the appliance
//! binary (the release profile: `panic = "abort"`, LTO; the same unwinder stand-ins,
//! `src/unwind.rs`; the same linker script from build.rs), so that its panic is the one the
//! agent would have, without a switch in the shipped binary that makes it panic.
//!
//! It is an example target (`cargo build --release --example panic-probe`), so `cargo build`
//! and `cargo install` never build it for a board.

#[path = "../../src/unwind.rs"]
mod unwind;

fn main() {
    let reason = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "no reason given".to_owned());
    panic!("panic-probe: deliberate panic ({reason})");
}
