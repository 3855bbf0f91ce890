//! The machine layer: stacks and the switch between them.
//!
//! Nothing in this module knows about scheduling. It offers three things:
//!
//! * [`Stack`](stack::Stack): an `mmap`'d region with a guard page at its low end, and a pool
//!   that reuses stacks ([`stack`]).
//! * [`init`], [`resume`] and [`suspend`]: lay out a fresh stack so that the first
//!   [`resume`] enters an entry function on it, then switch into and out of it. The
//!   register-level work is done by one naked function per architecture
//!   ([`x86_64`](self), `riscv64`, `aarch64`), chosen by `cfg` below.
//! * [`overflow`]: the SIGSEGV/SIGBUS handler that turns a guard-page hit into a message.
//!
//! # The two slots at the top of every stack
//!
//! ```text
//!   stack top (16-byte aligned, highest address)
//!   +--------------------------------+
//!   | parent link        (top -  8)  |  stack pointer of whoever resumed the fiber, written by
//!   |                                |  every `resume`; the trampoline's unwind info reads it
//!   | fiber stack pointer (top - 16) |  where the fiber's registers were saved at `suspend`
//!   +--------------------------------+
//!   | the fiber's closure, moved in  |
//!   | by `init` (read once at entry) |
//!   +--------------------------------+  frame top (16-byte aligned)
//!   | initial switch frame (per arch)|  popped by the first `resume`, which "returns" into
//!   |                                |  the trampoline
//!   +--------------------------------+
//!   |        ... grows down ...      |
//! ```
//!
//! Both switches go through one function, `switch(arg, save, load)`: push the callee-saved
//! registers, store the stack pointer in `*save`, load the stack pointer from `*load`, pop
//! the registers saved there and return `arg` on the other side. `resume` saves into the
//! parent link and loads the fiber slot; `suspend` does the opposite.

pub(crate) mod overflow;
pub mod stack;

#[cfg(target_arch = "x86_64")]
mod x86_64;
#[cfg(target_arch = "x86_64")]
use x86_64 as arch;

#[cfg(target_arch = "riscv64")]
mod riscv64;
#[cfg(target_arch = "riscv64")]
use riscv64 as arch;

#[cfg(target_arch = "aarch64")]
mod aarch64;
#[cfg(target_arch = "aarch64")]
use aarch64 as arch;

#[cfg(not(any(
    target_arch = "x86_64",
    target_arch = "riscv64",
    target_arch = "aarch64"
)))]
compile_error!("green supports x86_64, riscv64 and aarch64 only");

#[cfg(not(target_os = "linux"))]
compile_error!("green supports Linux only");

/// Offset below the stack top of the parent link slot.
const PARENT_LINK: usize = 8;
/// Offset below the stack top of the fiber's saved stack pointer.
const FIBER_SP: usize = 16;
/// Bytes reserved at the top of each stack for the two slots.
pub(crate) const HEADER_SIZE: usize = 16;
/// Bytes of the initial switch frame on this architecture.
pub(crate) const INITIAL_FRAME_SIZE: usize = arch::INITIAL_FRAME_SIZE;

/// The function a fresh stack enters on its first [`resume`].
///
/// It receives the first resume's `arg`, the stack top (for [`suspend`]) and the data
/// pointer given to [`init`]. It must never return: it ends by switching out for good.
pub(crate) type Entry = unsafe extern "C" fn(arg: usize, stack_top: *mut u8, data: *mut u8) -> !;

/// Lays out the initial switch frame so that the first [`resume`] on `stack_top` calls
/// `entry(arg, stack_top, data)` on that stack.
///
/// # Safety
///
/// `stack_top` must be the 16-byte aligned top of a writable stack; `frame_top` must be
/// 16-byte aligned, at most `stack_top - HEADER_SIZE`, with at least
/// `INITIAL_FRAME_SIZE` writable bytes below it.
pub(crate) unsafe fn init(stack_top: *mut u8, frame_top: *mut u8, entry: Entry, data: *mut u8) {
    debug_assert_eq!(stack_top as usize % 16, 0);
    debug_assert_eq!(frame_top as usize % 16, 0);
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE writable bytes below `frame_top`.
    let sp = unsafe { arch::initial_frame(frame_top, entry, stack_top, data) };
    // SAFETY: the header lies inside the stack, above `frame_top`.
    unsafe { stack_top.sub(FIBER_SP).cast::<*mut u8>().write(sp) };
}

/// Switches from the current stack into the fiber whose stack top is `stack_top`, handing it
/// `arg`; returns the value the fiber passes to its next [`suspend`].
///
/// # Safety
///
/// `stack_top` must have been prepared by [`init`], and the fiber must be suspended (or not
/// yet started): not running on this or any other thread.
#[inline(always)]
pub(crate) unsafe fn resume(arg: usize, stack_top: *mut u8) -> usize {
    // SAFETY: both slots lie in the header of a stack prepared by `init`; the fiber slot
    // holds a frame saved by `init` or by `suspend`, as the caller guarantees.
    unsafe {
        arch::switch(
            arg,
            stack_top.sub(PARENT_LINK).cast(),
            stack_top.sub(FIBER_SP).cast(),
        )
    }
}

/// Switches from the running fiber back to whoever resumed it, handing it `arg`; returns the
/// value passed to the next [`resume`].
///
/// # Safety
///
/// Must be called on the fiber whose stack top is `stack_top`, while it runs.
#[inline(always)]
pub(crate) unsafe fn suspend(arg: usize, stack_top: *mut u8) -> usize {
    // SAFETY: the parent link was written by the `resume` that started this run of the
    // fiber, and the parent is blocked inside that `resume`.
    unsafe {
        arch::switch(
            arg,
            stack_top.sub(FIBER_SP).cast(),
            stack_top.sub(PARENT_LINK).cast(),
        )
    }
}
