//! Allocation counting for the no-allocation proof and the check-pass benchmark: every
//! allocation a piece of code makes on this thread, in Rust or in libc.
//!
//! Including this module (by `#[path]`, never from `support/mod.rs`) installs its global
//! allocator and, on the host, replaces libc's `malloc` family in the whole binary: only the
//! binaries that count allocations include it.
//!
//! Two counters, both per thread and on only inside [`counted`]:
//! - a counting global allocator wraps the system one: every Rust allocation;
//! - on a dynamically linked glibc binary (the host), the binary itself defines `malloc`,
//!   `calloc`, `realloc`, `free`, `memalign`, `posix_memalign`, `aligned_alloc`, `valloc`
//!   and `pvalloc`, forwarding to glibc's exported `__libc_*` entry points. The glibc manual
//!   ("Replacing malloc") documents that the main program's definitions interpose libc's own
//!   internal calls too, so this counts what libc allocates behind our back (glibc's
//!   `posix_spawn_file_actions_adddup2` reallocs inside std's `Command::spawn`, for one:
//!   `the_old_spawn_path_is_seen_allocating_in_libc` in tests/no_alloc.rs). Calls the Rust allocator makes
//!   are not counted twice.
//!
//! The ARM test binaries are statically linked (aarch64 musl, armv7 static glibc): defining
//! `malloc` there clashes with libc's own at link time, so there the libc counter is not
//! built and only the Rust count is kept; the host run is the libc proof.

#![allow(unsafe_code)]
#![allow(dead_code)] // each binary uses its own part of this module

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::ops::AddAssign;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by [`abort_on_allocation`]: a counted allocation aborts, for a debugger's backtrace.
static ABORT: AtomicBool = AtomicBool::new(false);

// Const-initialized and without Drop: reading them never allocates, even inside malloc.
thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Set while the Rust allocator forwards to libc, whose malloc then is not libc's own.
    static IN_RUST: Cell<bool> = const { Cell::new(false) };
    static RUST: Cell<usize> = const { Cell::new(0) };
    static LIBC: Cell<usize> = const { Cell::new(0) };
    static LIBC_REALLOC: Cell<usize> = const { Cell::new(0) };
}

fn bump(counter: &'static std::thread::LocalKey<Cell<usize>>) {
    // `try_with`: the allocator may run while thread-locals are being torn down.
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        let _ = counter.try_with(|c| c.set(c.get() + 1));
        if ABORT.load(Ordering::Relaxed) {
            std::process::abort();
        }
    }
}

struct Counting;

impl Counting {
    fn forward<T>(f: impl FnOnce() -> T) -> T {
        bump(&RUST);
        let _ = IN_RUST.try_with(|c| c.set(true));
        let out = f();
        let _ = IN_RUST.try_with(|c| c.set(false));
        out
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches
// only const-initialized thread-locals and an atomic, none of which allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        Counting::forward(|| unsafe { System.alloc(layout) })
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as ours.
        Counting::forward(|| unsafe { System.alloc_zeroed(layout) })
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as ours.
        Counting::forward(|| unsafe { System.realloc(ptr, layout, new_size) })
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// libc's allocator, interposed (see the module doc). Each entry point counts when the
/// call is libc's own and forwards to glibc's implementation, so every pointer still comes
/// from, and goes back to, glibc's one heap.
#[cfg(all(
    target_os = "linux",
    target_env = "gnu",
    not(target_feature = "crt-static")
))]
mod libc_allocator {
    use core::ffi::{c_int, c_void};

    use super::{IN_RUST, LIBC, LIBC_REALLOC, bump};

    unsafe extern "C" {
        fn __libc_malloc(size: usize) -> *mut c_void;
        fn __libc_calloc(count: usize, size: usize) -> *mut c_void;
        fn __libc_realloc(ptr: *mut c_void, size: usize) -> *mut c_void;
        fn __libc_free(ptr: *mut c_void);
        fn __libc_memalign(alignment: usize, size: usize) -> *mut c_void;
        fn __libc_valloc(size: usize) -> *mut c_void;
        fn __libc_pvalloc(size: usize) -> *mut c_void;
    }

    fn note() {
        if !IN_RUST.try_with(|c| c.get()).unwrap_or(false) {
            bump(&LIBC);
        }
    }

    #[unsafe(no_mangle)]
    extern "C" fn malloc(size: usize) -> *mut c_void {
        note();
        // SAFETY: glibc's malloc(3) under its exported name; any size is valid.
        unsafe { __libc_malloc(size) }
    }

    #[unsafe(no_mangle)]
    extern "C" fn calloc(count: usize, size: usize) -> *mut c_void {
        note();
        // SAFETY: glibc's calloc(3), which checks the multiplication itself.
        unsafe { __libc_calloc(count, size) }
    }

    /// # Safety
    /// realloc(3)'s: `ptr` is null or from this allocator and not freed.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn realloc(ptr: *mut c_void, size: usize) -> *mut c_void {
        note();
        if !IN_RUST.try_with(|c| c.get()).unwrap_or(false) {
            bump(&LIBC_REALLOC);
        }
        // SAFETY: glibc's realloc(3); the caller keeps realloc's contract.
        unsafe { __libc_realloc(ptr, size) }
    }

    /// # Safety
    /// free(3)'s: `ptr` is null or from this allocator and not freed.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn free(ptr: *mut c_void) {
        // SAFETY: glibc's free(3); the caller keeps free's contract.
        unsafe { __libc_free(ptr) }
    }

    #[unsafe(no_mangle)]
    extern "C" fn memalign(alignment: usize, size: usize) -> *mut c_void {
        note();
        // SAFETY: glibc's memalign(3), which rejects a bad alignment itself.
        unsafe { __libc_memalign(alignment, size) }
    }

    #[unsafe(no_mangle)]
    extern "C" fn aligned_alloc(alignment: usize, size: usize) -> *mut c_void {
        note();
        // SAFETY: glibc implements aligned_alloc(3) as memalign (the manual, "Aligned
        // Memory Blocks").
        unsafe { __libc_memalign(alignment, size) }
    }

    /// # Safety
    /// posix_memalign(3)'s: `out` is valid for one pointer write.
    #[unsafe(no_mangle)]
    unsafe extern "C" fn posix_memalign(
        out: *mut *mut c_void,
        alignment: usize,
        size: usize,
    ) -> c_int {
        note();
        // posix_memalign(3): a power of two and a multiple of sizeof(void *), else EINVAL.
        if !alignment.is_power_of_two() || !alignment.is_multiple_of(size_of::<*mut c_void>()) {
            return libc::EINVAL;
        }
        // SAFETY: glibc's memalign(3) with an alignment checked above.
        let block = unsafe { __libc_memalign(alignment, size) };
        if block.is_null() && size != 0 {
            return libc::ENOMEM;
        }
        // SAFETY: the caller gives a valid `out` (posix_memalign(3)).
        unsafe { out.write(block) };
        0
    }

    #[unsafe(no_mangle)]
    extern "C" fn valloc(size: usize) -> *mut c_void {
        note();
        // SAFETY: glibc's valloc(3); any size is valid.
        unsafe { __libc_valloc(size) }
    }

    #[unsafe(no_mangle)]
    extern "C" fn pvalloc(size: usize) -> *mut c_void {
        note();
        // SAFETY: glibc's pvalloc(3); any size is valid.
        unsafe { __libc_pvalloc(size) }
    }
}

/// From now on, a counted allocation aborts the process, so that a debugger shows where it
/// happened.
pub fn abort_on_allocation() {
    ABORT.store(true, Ordering::Relaxed);
}

/// Allocations counted on one thread.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub rust: usize,
    /// libc's own, any entry point (always 0 where libc is not interposed).
    pub libc: usize,
    pub libc_reallocs: usize,
}

impl AddAssign for Counts {
    fn add_assign(&mut self, other: Counts) {
        self.rust += other.rust;
        self.libc += other.libc;
        self.libc_reallocs += other.libc_reallocs;
    }
}

/// Counts the allocations `f` makes on this thread (and in a child sharing its memory).
pub fn counted<T>(f: impl FnOnce() -> T) -> (T, Counts) {
    let read = || Counts {
        rust: RUST.with(Cell::get),
        libc: LIBC.with(Cell::get),
        libc_reallocs: LIBC_REALLOC.with(Cell::get),
    };
    let before = read();
    COUNTING.with(|c| c.set(true));
    let out = f();
    COUNTING.with(|c| c.set(false));
    let after = read();
    let counts = Counts {
        rust: after.rust - before.rust,
        libc: after.libc - before.libc,
        libc_reallocs: after.libc_reallocs - before.libc_reallocs,
    };
    (out, counts)
}

/// No allocation at all.
pub const NONE: Counts = Counts {
    rust: 0,
    libc: 0,
    libc_reallocs: 0,
};
