//! Stand-ins for the stack unwinder in the static appliance binaries, so that libunwind
//! (aarch64 musl) or libgcc_eh (armv7 static glibc), and with them std's backtrace
//! symbolizer (gimli, addr2line, miniz_oxide, rustc-demangle), are not linked.
//!
//! Why std needs them at all: the release profile has `panic = "abort"`, so a panic prints its
//! message and location from the panic hook and then aborts (SIGABRT) without unwinding. But
//! stable std is precompiled for `panic = "unwind"`: its code still holds landing pads that
//! call `_Unwind_Resume`, its personality routine (`rust_eh_personality`) reads the unwinder's
//! context, and its backtrace capture calls `_Unwind_Backtrace`. Those references alone pull
//! the whole unwinder in, and the backtrace path pulls the symbolizer.
//!
//! What stands in, and why each is sound (the only invariant: no unwinding ever starts in
//! this process):
//! - Nothing can raise an exception: Rust panics end in the `panic_abort` runtime, which
//!   aborts where `panic_unwind` would call `_Unwind_RaiseException` (rustc book, "Codegen
//!   options", `-C panic`: "abort: terminate the process upon panic"), and no code here
//!   raises C++ exceptions or cancels or exits threads (`pthread_cancel`, `pthread_exit`: the
//!   glibc paths that unwind with `_Unwind_ForcedUnwind`). So `_Unwind_Resume`, which only a
//!   landing pad calls, and only while an exception unwinds (Itanium C++ ABI, "Exception
//!   Handling", 1.3 "Throwing an Exception", `_Unwind_Resume`), is never reached: the
//!   stand-in aborts.
//! - Every other function but one takes an `_Unwind_Context`, which exists only inside the
//!   unwinder, handed to a personality routine or a trace callback (Itanium C++ ABI 1.5
//!   "Context Management", 1.6 "Personality Routine"; on ARM the virtual register set of
//!   "Exception Handling ABI for the Arm Architecture", which `_Unwind_VRS_Get`/`Set` read and
//!   write): with no unwinder there is none, so they are unreachable too, and abort if that
//!   ever proves wrong. On ARM,
//!   the EHABI personality routines `__aeabi_unwind_cpp_pr0`/`pr1` and `__gnu_unwind_frame`
//!   are called by the unwinder only, with the same reasoning.
//! - `_Unwind_Backtrace` is the one that is called: by the panic hook under `RUST_BACKTRACE`
//!   and by `std::backtrace`. The stand-in reports `_URC_END_OF_STACK` before calling the
//!   trace function for any frame, which is a valid answer (libgcc's unwind.h, LLVM
//!   libunwind's `_Unwind_Backtrace`: the walk stops with `_URC_END_OF_STACK` at the end
//!   of the stack): a backtrace is empty, and the message and `file:line:col` still print.
//!   Nothing walks the stack, so the unwind tables are not needed either: the release
//!   binary is linked without them (build.rs: `.eh_frame`, `.eh_frame_hdr` and
//!   `.gcc_except_table` on aarch64; `.ARM.exidx`, `.ARM.extab` and `.gcc_except_table` on
//!   armv7). A debugger loses their help too (a backtrace from a core dump may stop
//!   early): that is the price of the smaller binary.
//!
//! The signatures are those std declares (its `unwind` crate), pointer for pointer, so that
//! LTO, which sees both sides, finds one function type.
//!
//! Compiled only for static Linux ARM builds with `panic = "abort"` (the release binaries of
//! the appliance targets): test binaries unwind (the test harness needs `panic = "unwind"`),
//! and the host's dynamic build uses the shared libgcc_s that glibc also uses.
//!
//! On armv7, glibc's own C code (built with `-fexceptions`) names libgcc's C personality
//! routine `__gcc_personality_v0`, which is linked as it is: it too runs only when called by
//! an unwinder, and would find these stand-ins.
//!
//! If a future std needs one more unwinder function, the link fails loudly: the archive
//! member that defines it also defines some of these (every member of libunwind and
//! libgcc_eh that defines an `_Unwind_*` or EHABI function does, today), and the linker
//! stops at the duplicate symbol. build.rs's linker script also asserts that no libunwind or
//! libgcc_eh core was linked beside these stand-ins (the marker below says they are there).
//! tests/panic_release.rs checks the behaviour and, with `nm`, the symbols. LTO may drop a
//! stand-in that nothing calls any more (std's personality routine stops at the first one it
//! calls, which aborts): that is not a failure, the unwinder stays out all the same.
#![cfg(all(
    panic = "abort",
    target_os = "linux",
    target_feature = "crt-static",
    any(target_arch = "aarch64", target_arch = "arm")
))]
// `no_mangle` is an unsafe attribute: a symbol of this name defined twice is undefined
// behaviour. Each one below defines a symbol that only the unwinder would otherwise define,
// which is kept out of the link (a second definition stops the link, see above).
#![allow(unsafe_code)]

use core::ffi::{c_int, c_void};

/// `_Unwind_Reason_Code::_URC_END_OF_STACK` (Itanium C++ ABI 1.2 "Data Structures"; the
/// same value in the ARM EHABI's `unwind.h`).
const URC_END_OF_STACK: c_int = 5;

/// `_Unwind_Word` and `_Unwind_Ptr` as std declares them.
type Word = *const u8;
/// The trace callback std passes (`_Unwind_Trace_Fn`).
type TraceFn = extern "C" fn(ctx: *mut c_void, arg: *mut c_void) -> c_int;

// SAFETY: a name of this crate's own, which no library defines. build.rs's linker script
// asserts, when it is defined, that no unwinder was linked beside the stand-ins.
#[unsafe(no_mangle)]
#[used]
static watchkeeper_unwind_stand_ins: u8 = 0;

/// An unwinder entry point was reached, which the invariant above rules out.
#[cold]
fn unreachable_unwinder() -> ! {
    std::process::abort()
}

// SAFETY: the only definition of `_Unwind_Backtrace` in the binary (the unwinder is not
// linked; a second one stops the link). Reporting the end of the stack at once is a complete
// walk of zero frames (libgcc's and LLVM libunwind's `_Unwind_Backtrace` end a walk with
// `_URC_END_OF_STACK`), and `trace` is never called.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_Backtrace(_trace: TraceFn, _arg: *mut c_void) -> c_int {
    URC_END_OF_STACK
}

// SAFETY: sole definition (as above). Only a landing pad calls it, and only during unwinding
// (Itanium C++ ABI 1.3), which never starts here (panic = "abort").
#[unsafe(no_mangle)]
extern "C-unwind" fn _Unwind_Resume(_exception: *mut c_void) -> ! {
    unreachable_unwinder()
}

// SAFETY (each of the four below): sole definition. Needs an `_Unwind_Context`, which only
// the unwinder creates (Itanium C++ ABI 1.5, 1.6); with none linked, never called.
#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetLanguageSpecificData(_ctx: *mut c_void) -> *mut c_void {
    unreachable_unwinder()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetRegionStart(_ctx: *mut c_void) -> Word {
    unreachable_unwinder()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetTextRelBase(_ctx: *mut c_void) -> Word {
    unreachable_unwinder()
}

#[unsafe(no_mangle)]
extern "C" fn _Unwind_GetDataRelBase(_ctx: *mut c_void) -> Word {
    unreachable_unwinder()
}

/// The Itanium-ABI context accessors (aarch64). On ARM they are inline functions over
/// `_Unwind_VRS_Get`/`_Unwind_VRS_Set` (the ARM EHABI), see `ehabi` below.
#[cfg(not(target_arch = "arm"))]
mod itanium {
    use core::ffi::{c_int, c_void};

    use super::{Word, unreachable_unwinder};

    // SAFETY (each of the four below): sole definition. Needs an `_Unwind_Context`, which
    // only the unwinder creates (Itanium C++ ABI 1.5, 1.6); with none linked, never called.
    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_GetIP(_ctx: *mut c_void) -> Word {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_GetIPInfo(_ctx: *mut c_void, _ip_before_insn: *mut c_int) -> Word {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_SetGR(_ctx: *mut c_void, _index: c_int, _value: Word) {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_SetIP(_ctx: *mut c_void, _value: Word) {
        unreachable_unwinder()
    }
}

/// The ARM EHABI entry points (armv7).
#[cfg(target_arch = "arm")]
mod ehabi {
    use core::ffi::{c_int, c_void};

    use super::{Word, unreachable_unwinder};

    // SAFETY (each of the five below): sole definition. The virtual register set and the
    // frame being unwound exist only inside the unwinder, which alone calls the personality
    // routines and `__gnu_unwind_frame` ("Exception Handling ABI for the Arm Architecture":
    // the unwinder calls the personality routine of each frame); with none linked, none is
    // ever called. (`__aeabi_unwind_cpp_pr0` is also named by every `.ARM.exidx` entry the
    // compilers emit, so it must exist for the link.)
    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_VRS_Get(
        _ctx: *mut c_void,
        _class: c_int,
        _regno: Word,
        _repr: c_int,
        _value: *mut c_void,
    ) -> c_int {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn _Unwind_VRS_Set(
        _ctx: *mut c_void,
        _class: c_int,
        _regno: Word,
        _repr: c_int,
        _value: *mut c_void,
    ) -> c_int {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn __gnu_unwind_frame(_exception: *mut c_void, _ctx: *mut c_void) -> c_int {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn __aeabi_unwind_cpp_pr0(
        _state: c_int,
        _exception: *mut c_void,
        _ctx: *mut c_void,
    ) -> c_int {
        unreachable_unwinder()
    }

    #[unsafe(no_mangle)]
    extern "C" fn __aeabi_unwind_cpp_pr1(
        _state: c_int,
        _exception: *mut c_void,
        _ctx: *mut c_void,
    ) -> c_int {
        unreachable_unwinder()
    }
}
