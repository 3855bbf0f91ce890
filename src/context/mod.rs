//! The machine layer: stacks and the switch between them.
//!
//! Nothing in this module knows about scheduling. It offers three things:
//!
//! * [`Stack`](stack::Stack): an `mmap`'d region with a guard page at its low end, and a pool
//!   that reuses stacks ([`stack`]).
//! * [`init`], [`resume`] and [`suspend`]: lay out a fresh stack so that the first
//!   [`resume`] enters an entry function on it, then switch into and out of it. The
//!   register-level work is done per architecture ([`x86_64`](self), `riscv64`,
//!   `aarch64`), chosen by `cfg` below.
//! * [`overflow`]: the SIGSEGV/SIGBUS handler that turns a guard-page hit into a message.
//! * [`sanitizer`]: the calls that tell AddressSanitizer and ThreadSanitizer about each
//!   switch, in builds for them (`--cfg green_asan`, `--cfg green_tsan`); empty otherwise.
//!
//! # The header at the top of every stack
//!
//! ```text
//!   stack top (16-byte aligned, highest address)
//!   +--------------------------------+
//!   | parent link        (top -  8)  |  stack pointer of whoever resumed the fiber, written
//!   |                                |  on the fiber side of every resume; `suspend` and the
//!   |                                |  trampoline's unwind info read it
//!   | flags              (top - 16)  |  bit 0: the fiber shares the thread's floating-point
//!   |                                |  control state (x86_64 only; see `init`); written by
//!   |                                |  `init`, read by the switch on both sides
//!   | sanitizer state                |  only in builds for ASan or TSan, else no bytes at
//!   |                                |  all ([`sanitizer`])
//!   +--------------------------------+  top - HEADER_SIZE
//!   | the fiber's overflow `Guard`,  |  placed by `Fiber::with_stack`; the guard stays
//!   | then its closure               |  registered until the fiber drops, the closure is
//!   |                                |  read once at entry
//!   +--------------------------------+  frame top (16-byte aligned)
//!   | initial frame (per arch)       |  read by the trampoline that the first `resume`
//!   |                                |  calls
//!   +--------------------------------+
//!   |        ... grows down ...      |
//! ```
//!
//! # The switch
//!
//! A switch is a call and its matching return, split across two stacks, so that the CPU's
//! return-address prediction stays right:
//!
//! * [`resume`] saves what the compiler cannot (the registers LLVM reserves) and *calls*
//!   the address saved in the fiber's switch frame, at its saved stack pointer in the
//!   [`Context`]. That address is the continuation of the fiber's last [`suspend`], or the
//!   trampoline of a fresh fiber. It records the resumer's stack pointer in the parent
//!   link, keeps the resumer's floating-point control state where the ABI has one (x86_64)
//!   and the fiber keeps its own, and restores the fiber.
//! * [`suspend`] saves the same registers, the fiber's control state and its continuation
//!   address in a frame on the fiber's stack, moves to the parent link's stack, restores
//!   the resumer's control state and *returns* into the `resume` that called it, handing
//!   over its own stack pointer in a register for the [`Context`].
//!
//! Both are inline assembly that declares every other register clobbered, so the compiler
//! saves only the callee-saved registers it needs, in its own frame (the x86_64 file gives
//! the measurements that led here). [`suspend`] must be inlined into the fiber's code: a
//! `ret` to the resumer only matches its `call` if no `call` of our own came in between.

pub(crate) mod overflow;
pub(crate) mod sanitizer;
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
/// Offset below the stack top of the flags word.
const FLAGS: usize = 16;
/// Flag: the switch neither saves nor restores the floating-point control state of this
/// fiber, which runs with (and leaves behind) whatever its thread's is.
const FLAG_SHARED_FLOAT_CONTROL: usize = 1;
/// Bytes reserved at the top of each stack: the parent link, the flags word and the
/// sanitizer state (no bytes unless built for a sanitizer).
pub(crate) const HEADER_SIZE: usize = 16 + sanitizer::STATE_SIZE;
/// Bytes of the initial frame on this architecture.
pub(crate) const INITIAL_FRAME_SIZE: usize = arch::INITIAL_FRAME_SIZE;

/// The function a fresh stack enters on its first [`resume`].
///
/// It receives the first resume's `arg`, the stack top (for [`suspend`]) and the data
/// pointer given to [`init`]. It must never return: it ends by switching out for good.
pub(crate) type Entry = unsafe extern "C" fn(arg: usize, stack_top: *mut u8, data: *mut u8) -> !;

/// A fiber as its resumer sees it: where its stack is, and where it stopped.
///
/// A copy may switch in place of the original (see `fiber::Running`): [`resume`]'s
/// contract is about the fiber, whichever copy names it.
#[derive(Debug, Clone)]
pub(crate) struct Context {
    /// Top of the fiber's stack, 16-byte aligned; the parent link lies just below it.
    stack_top: *mut u8,
    /// The fiber's saved stack pointer: its switch frame, left there by [`init`] or by its
    /// last [`suspend`]. Meaningless once the fiber has finished.
    stack_pointer: *mut u8,
}

impl Context {
    /// Top of the fiber's stack.
    pub(crate) fn stack_top(&self) -> *mut u8 {
        self.stack_top
    }
}

/// Lays out the initial frame so that the first [`resume`] of the returned context calls
/// `entry(arg, stack_top, data)` on that stack. The entry must call [`entered`] first and
/// leave by [`exit`].
///
/// With `shared_float_control`, the switch leaves the floating-point control state alone
/// for this fiber: it is the thread's, as riscv64's `fcsr` always is. Otherwise each side
/// keeps its own across every switch, as the x86_64 ABI makes the MXCSR control bits and
/// the x87 control word callee-saved. Only x86_64 has such state in its call contract, so
/// elsewhere the flag changes nothing.
///
/// Call it before anything else is written to the stack: in builds for a sanitizer it
/// clears what an earlier fiber left in the sanitizer's view of the stack. Once the fiber
/// is gone, call [`release`].
///
/// # Safety
///
/// `stack_bottom..stack_top` must be a writable stack that nothing else uses, `stack_top`
/// 16-byte aligned; `frame_top` must be 16-byte aligned, at most `stack_top -
/// HEADER_SIZE`, with at least `INITIAL_FRAME_SIZE` writable bytes below it.
pub(crate) unsafe fn init(
    stack_bottom: *mut u8,
    stack_top: *mut u8,
    frame_top: *mut u8,
    entry: Entry,
    data: *mut u8,
    shared_float_control: bool,
) -> Context {
    debug_assert_eq!(stack_top as usize % 16, 0);
    debug_assert_eq!(frame_top as usize % 16, 0);
    // SAFETY: as the caller guarantees; the state goes in the header, below the flags.
    unsafe { sanitizer::prepare(stack_bottom, stack_top) };
    let flags = if shared_float_control {
        FLAG_SHARED_FLOAT_CONTROL
    } else {
        0
    };
    // SAFETY: the caller guarantees a writable stack below the 16-byte aligned
    // `stack_top`, whose header holds the flags word; nothing runs on the stack yet.
    unsafe { stack_top.sub(FLAGS).cast::<usize>().write(flags) };
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE writable bytes below `frame_top`.
    let stack_pointer = unsafe { arch::initial_frame(frame_top, entry, data) };
    Context {
        stack_top,
        stack_pointer,
    }
}

/// Switches from the current stack into the fiber of `context`, handing it `arg`; returns
/// the value the fiber passes to its next [`suspend`].
///
/// # Safety
///
/// `context` must come from [`init`], and the fiber must be suspended (or not yet
/// started, or never resumed since it finished): not running on this or any other thread.
#[inline(always)]
pub(crate) unsafe fn resume(context: &mut Context, arg: usize) -> usize {
    // SAFETY: the fiber is about to be resumed, and its stack was prepared by `init`.
    let resumer = unsafe { sanitizer::before_resume(context.stack_top) };
    // SAFETY: `stack_pointer` holds a frame saved by `init` or by `suspend`, and the fiber
    // is not running, as the caller guarantees.
    let (reply, stack_pointer) =
        unsafe { arch::resume(arg, context.stack_top, context.stack_pointer) };
    sanitizer::after_resume(resumer);
    context.stack_pointer = stack_pointer;
    reply
}

/// Tells the sanitizers, in builds for one, that the fiber of `context` is gone (see
/// [`sanitizer`]); does nothing otherwise.
///
/// # Safety
///
/// The fiber must not be running, and never be resumed again.
#[inline(always)]
pub(crate) unsafe fn release(context: &Context) {
    // SAFETY: as the caller guarantees; `init` prepared the stack.
    unsafe { sanitizer::release(context.stack_top) }
}

/// Switches from the running fiber back to whoever resumed it, handing it `arg`; returns the
/// value passed to the next [`resume`].
///
/// # Safety
///
/// Must be called on the fiber whose stack top is `stack_top`, while it runs;
/// `shared_float_control` must be the flag [`init`] was given for it (as
/// [`shares_float_control`] reads it back).
#[inline(always)]
pub(crate) unsafe fn suspend(arg: usize, stack_top: *mut u8, shared_float_control: bool) -> usize {
    #[cfg(debug_assertions)]
    {
        // SAFETY: as the caller guarantees, `stack_top` is the running fiber's.
        let in_header = unsafe { shares_float_control(stack_top) };
        debug_assert_eq!(in_header, shared_float_control);
    }
    // SAFETY: we run on that fiber, which was entered or resumed since it last left.
    unsafe { sanitizer::before_suspend(stack_top) };
    // SAFETY: as the caller guarantees.
    let message = unsafe { switch_out(arg, stack_top, shared_float_control) };
    // SAFETY: we run on that fiber again, right after the switch back into it.
    unsafe { sanitizer::after_suspend(stack_top) };
    message
}

/// Completes the first switch into a fiber, for the sanitizers in builds for one (see
/// [`sanitizer`]); does nothing otherwise. The fiber's entry calls it before anything else.
///
/// # Safety
///
/// Must be called on the fiber whose stack top is `stack_top`, at its entry.
#[inline(always)]
pub(crate) unsafe fn entered(stack_top: *mut u8) {
    // SAFETY: as the caller guarantees.
    unsafe { sanitizer::entered(stack_top) }
}

/// Switches from the running fiber back to whoever resumed it for the last time, handing
/// it `arg`: the fiber has finished and its stack holds nothing that will run again.
///
/// # Safety
///
/// As [`suspend`]; the fiber must never be resumed again (if it is, the process aborts).
#[inline(always)]
pub(crate) unsafe fn exit(arg: usize, stack_top: *mut u8, shared_float_control: bool) -> ! {
    // SAFETY: we run on that fiber, which was entered or resumed since it last left, and
    // it never runs again.
    unsafe { sanitizer::before_exit(stack_top) };
    // SAFETY: as the caller guarantees.
    unsafe { switch_out(arg, stack_top, shared_float_control) };
    eprintln!("green: a finished fiber was resumed, aborting");
    std::process::abort();
}

/// The switch of [`suspend`] and [`exit`], without the sanitizers' calls.
///
/// # Safety
///
/// As [`suspend`].
#[inline(always)]
unsafe fn switch_out(arg: usize, stack_top: *mut u8, shared_float_control: bool) -> usize {
    // SAFETY: we run on that fiber, so the parent link was written by the `resume` that
    // started this run of it and the resumer is blocked inside it; the flag is the fiber's,
    // so this side agrees with its continuation or trampoline on the control state.
    unsafe {
        if shared_float_control {
            arch::suspend_shared(arg, stack_top)
        } else {
            arch::suspend(arg, stack_top)
        }
    }
}

/// The stack pointer of the caller: where on which stack it runs.
#[inline(always)]
pub(crate) fn stack_pointer() -> usize {
    let sp: usize;
    // SAFETY: copies the stack pointer into a register; touches no memory, no flags.
    unsafe {
        #[cfg(target_arch = "x86_64")]
        core::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "aarch64")]
        core::arch::asm!("mov {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
        #[cfg(target_arch = "riscv64")]
        core::arch::asm!("mv {}, sp", out(reg) sp, options(nomem, nostack, preserves_flags));
    }
    sp
}

/// Whether the fiber whose stack top is `stack_top` shares its thread's floating-point
/// control state: the flag [`init`] wrote in its header.
///
/// # Safety
///
/// `stack_top` must be the top of a stack prepared by [`init`] that is still mapped.
pub(crate) unsafe fn shares_float_control(stack_top: *mut u8) -> bool {
    // SAFETY: as the caller guarantees, the header holds the flags word `init` wrote.
    let flags = unsafe { stack_top.sub(FLAGS).cast::<usize>().read() };
    flags & FLAG_SHARED_FLOAT_CONTROL != 0
}
