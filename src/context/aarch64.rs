//! Context switch for aarch64, AAPCS64.
//!
//! # What is saved, and why
//!
//! The Procedure Call Standard for the Arm 64-bit Architecture (§6.1.1, §6.1.2) makes
//! these callee-saved, so `resume` and `suspend`, which the compiler sees as inline
//! assembly in the middle of a function, must give them back unchanged:
//!
//! | state    | rule                                   | how we keep it                          |
//! |----------|----------------------------------------|-----------------------------------------|
//! | x19      | callee-saved                           | stored by hand: LLVM reserves it (base  |
//! |          |                                        | pointer), so no asm operand             |
//! | x20-x28  | callee-saved                           | declared clobbered: the compiler saves  |
//! |          |                                        | those it needs, in its frame            |
//! | x29 (fp) | frame pointer, callee-saved            | stored by hand: LLVM reserves it        |
//! | x30 (lr) | link register: where the caller goes on| the resumer's: set by its `blr`, stored |
//! |          |                                        | in its frame; the fiber's: its          |
//! |          |                                        | continuation address, stored by hand    |
//! | sp       | the stack pointer itself               | in the parent link, or handed back      |
//! | d8-d15   | low 64 bits of v8-v15 are callee-saved | `clobber_abi("C")` clobbers all of      |
//! |          |                                        | v8-v15 (the upper halves are caller-    |
//! |          |                                        | saved), so the compiler saves d8-d15    |
//! |          |                                        | where it needs them                     |
//!
//! Never touched: x18 (the platform register, which Linux leaves as a temporary). Not
//! saved: the caller-saved x0-x17, v0-v7 and v16-v31 (declared clobbered), and FPCR/FPSR
//! (thread state, not part of the call contract).
//!
//! # Why inline assembly, and not one naked `switch` function
//!
//! As on x86_64, whose module docs give the measurements (36 ns per round trip with one
//! naked `switch` called by both sides, 2.5-8 ns now, as corosensei's or twice it), a switch
//! is a call and its matching return split across two stacks, so that the return-address
//! stack predicts every switch: [`resume`] is a `blr` (a push on that stack) to the fiber's
//! continuation, and [`suspend`] is a `ret` (a pop) to the resumer's x30. Only x86_64 is
//! measured natively; under QEMU the timings mean nothing. The naked function that remains
//! is the entry [`trampoline`], which carries the unwind information.
//!
//! # The switch frames
//!
//! Both sides leave a 32-byte frame of the same shape on their stack, at the saved stack
//! pointer `S`:
//!
//! ```text
//!   S+32  <- the side's sp before its asm block (the resumer's: the unwinder's CFA)
//!   S+24  x29
//!   S+16  x19
//!   S+8   (unused; keeps sp 16-byte aligned)
//!   S+0   where to go on   <- saved sp
//!           resumer: its x30, the return point in `resume`, stored by the fiber side
//!           fiber:   the continuation label in `suspend`
//! ```
//!
//! `resume` stores x19 and x29 and `blr`s to the word at the fiber's S. The fiber side
//! (the continuation in `suspend`, or the trampoline the first time) is entered with:
//!
//! ```text
//!   sp = the resumer's S   x30 = its return point   x0 = arg   x1 = stack top
//!   x2 = the fiber's S
//! ```
//!
//! It stores x30 at the resumer's S, points the parent link at it and restores its own
//! frame. `suspend` stores its frame, loads the resumer's S from the parent link and its
//! x30 from there, and `ret`s with the message in x0 and its own S in x2.
//!
//! # The initial frame of a new fiber
//!
//! ```text
//!   frame top (16-aligned) = S+32   sp when `entry` starts
//!   S+24  0
//!   S+16  data pointer
//!   S+8   entry function
//!   S+0   trampoline                "where to go on"
//! ```
//!
//! The trampoline reads the entry function and the data pointer before it moves sp to the
//! frame top, never after: AAPCS64 has no red zone, so the kernel may build a signal frame
//! on any word below sp.
//!
//! # Unwinding through the trampoline
//!
//! The trampoline keeps the stack top in x20 and branches to `entry(x0, stack top, data)`
//! with x30 pointing back into itself (a `blr` would push a return-address-stack entry that
//! the fiber's first `suspend` could not match). Its CFI says its canonical frame address
//! is `*(x20 - 8) + 32`: `top - 8` is the parent link, which points at the resumer's switch
//! frame, where x30, x19 and x29 are read at the offsets above. An unwinder therefore steps
//! from the fiber into the function that resumed it. x20 is callee-saved, so every frame in
//! between has recorded where it kept it; the resumer's own x20-x28 and d8-d15 were saved
//! by its compiled prologue, as for any call.

use core::arch::{asm, naked_asm};

use super::{Entry, PARENT_LINK};

// The switch keeps no floating-point control state on this architecture (module docs),
// so a fiber that shares the thread's switches the same way.
pub(super) use self::suspend as suspend_shared;

/// Bytes of the initial frame written by [`initial_frame`].
pub(super) const INITIAL_FRAME_SIZE: usize = 32;

/// Switches into the fiber whose stack top is `stack_top` and whose switch frame is at
/// `stack_pointer`, handing it `arg`. Returns the message of its next [`suspend`] and the
/// stack pointer it saved there.
///
/// # Safety
///
/// `stack_pointer` must point at a frame written by [`initial_frame`] or [`suspend`] on
/// the stack below `stack_top`, of a fiber that is not running.
#[inline(always)]
pub(super) unsafe fn resume(
    arg: usize,
    stack_top: *mut u8,
    stack_pointer: *mut u8,
) -> (usize, *mut u8) {
    let (reply, saved);
    // The frame at `stack_pointer` starts with a continuation that keeps the
    // contract in the module docs, as the caller guarantees: it stores x30 in our frame,
    // saves the parent link, restores the fiber and comes back here only through
    // `suspend`, which restores sp and hands over its frame in x2; our loads restore x19
    // and x29. Every other register is declared clobbered. Our frame stays above sp while
    // the fiber runs, so nothing can overwrite it.
    // SAFETY: by the contract just stated, the asm touches no state it does not restore.
    unsafe {
        asm!(
            // 1. Save what no operand can express: x19 and x29.
            "sub sp, sp, #32",
            "stp x19, x29, [sp, #16]",
            // 2. Call where the fiber goes on: the first word of its frame.
            "ldr x9, [x2]",
            "blr x9",
            // 3. Back from `suspend`, which restored sp.
            "ldp x19, x29, [sp, #16]",
            "add sp, sp, #32",
            // The message, in both directions: the first argument register, so the
            // trampoline passes it to `entry` as is.
            inlateout("x0") arg => reply,
            // The stack top, for the fiber side to find the parent link.
            in("x1") stack_top,
            // The fiber's frame: its S on the way in, its new S on the way back.
            inlateout("x2") stack_pointer => saved,
            // x20-x28 are callee-saved: let the compiler keep what it needs in them.
            lateout("x20") _,
            lateout("x21") _,
            lateout("x22") _,
            lateout("x23") _,
            lateout("x24") _,
            lateout("x25") _,
            lateout("x26") _,
            lateout("x27") _,
            lateout("x28") _,
            // x1 and x3-x17, x30, and v0-v31 (so d8-d15 too).
            clobber_abi("C"),
        );
    }
    (reply, saved)
}

/// Switches from the running fiber back to its resumer, handing it `arg`; returns the
/// message of the next [`resume`].
///
/// Inlined into the fiber's code, so that the `ret` to the resumer matches the `blr` of
/// its `resume`, and the continuation runs on into the fiber's code without a `ret`.
///
/// # Safety
///
/// Must run on the fiber whose stack top is `stack_top`, whose parent link holds the
/// frame of the `resume` that runs it.
#[inline(always)]
pub(super) unsafe fn suspend(arg: usize, stack_top: *mut u8) -> usize {
    let message;
    // We run on the fiber of `stack_top`, so its header is ours and the parent
    // link points at the frame of the `resume` that is waiting for us (module docs). We
    // leave a frame of the same shape on our stack and hand it to `resume` in x2; the
    // next `resume` branches into it at label 2 with the contract in the module docs. x19,
    // x29 and sp come back from our frame; every other register is declared clobbered.
    // SAFETY: by the contract just stated, the asm touches no state it does not restore.
    unsafe {
        asm!(
            // 1. Store our frame: x19, x29 and where to go on.
            "sub sp, sp, #32",
            "stp x19, x29, [sp, #16]",
            "adr x9, 2f",
            "str x9, [sp]",
            // 2. Keep our S in x2 for `resume`; take the resumer's from the parent link.
            "mov x2, sp",
            "ldur x9, [x1, #-{parent_link}]",
            "mov sp, x9",
            // 3. Return into `resume`: its x30, which its `blr` set.
            "ldr x30, [sp]",
            "ret",
            // The continuation, entered from the next `resume` (contract in the module
            // docs).
            // 4. Store the resumer's x30 in its frame and point the parent link there.
            "2:",
            "str x30, [sp]",
            "mov x9, sp",
            "stur x9, [x1, #-{parent_link}]",
            // 5. Back on our stack: restore the rest of our frame.
            "ldp x19, x29, [x2, #16]",
            "add sp, x2, #32",
            parent_link = const PARENT_LINK,
            // The message, in both directions (see `resume`).
            inlateout("x0") arg => message,
            // The stack top; `resume` passes it again, so it still holds after label 2.
            in("x1") stack_top,
            lateout("x20") _,
            lateout("x21") _,
            lateout("x22") _,
            lateout("x23") _,
            lateout("x24") _,
            lateout("x25") _,
            lateout("x26") _,
            lateout("x27") _,
            lateout("x28") _,
            clobber_abi("C"),
        );
    }
    message
}

/// The first code a new fiber runs: branches to `entry(arg, stack top, data)`, never
/// returns.
///
/// Entered by [`resume`]'s `blr` through the initial frame, with the contract in the
/// module docs.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        // On entry the frame is that of any called function: the CFA is sp and the return
        // address into `resume` is in x30, as the default CFI rule says.
        ".cfi_startproc",
        // 1. Store x30 in the resumer's frame, point the parent link at that frame, and
        //    keep the stack top in x20.
        "str x30, [sp]",
        "mov x9, sp",
        "stur x9, [x1, #-{parent_link}]",
        "mov x20, x1",
        // From here the CFA is *(x20 - 8) + 32: DW_CFA_def_cfa_expression, 5 bytes of
        // expression: DW_OP_breg20 (0x84) -8 (sleb 0x78), DW_OP_deref (0x06),
        // DW_OP_plus_uconst (0x23) 32 (0x20).
        ".cfi_escape 0x0f, 0x05, 0x84, 0x78, 0x06, 0x23, 0x20",
        // The resumer's return address, x19 and x29, in its switch frame.
        ".cfi_offset x30, -32",
        ".cfi_offset x19, -16",
        ".cfi_offset x29, -8",
        // 2. Load the entry function and the data pointer from the initial frame while sp
        //    is still on the resumer's stack, and only then move sp to the frame top: once
        //    sp is there, both words lie below it, and AAPCS64 has no red zone, so a signal
        //    delivered in between would build its frame over them. (QEMU user mode
        //    delivers signals only between translated blocks, so tests under it cannot
        //    catch the wrong order: keep this one.)
        "ldp x9, x10, [x2, #8]",
        "add sp, x2, #32",
        // 3. Branch to `entry(x0, x1, data)` with x30 pointing back here for the unwinder.
        //    x29 = 0 ends frame-pointer chains.
        "mov x2, x10",
        "mov x29, xzr",
        "adr x30, 2f",
        "br x9",
        // `entry` never returns; "return address - 1", where unwinders look up this
        // frame, is inside the `br`, inside this function.
        "2:",
        "brk #1",
        ".cfi_endproc",
        parent_link = const PARENT_LINK,
    )
}

/// Writes the initial frame described in the module docs below `frame_top` and returns the
/// fiber's first saved stack pointer.
///
/// # Safety
///
/// `frame_top` must be 16-byte aligned with [`INITIAL_FRAME_SIZE`] writable bytes below it.
pub(super) unsafe fn initial_frame(frame_top: *mut u8, entry: Entry, data: *mut u8) -> *mut u8 {
    let words: [usize; INITIAL_FRAME_SIZE / 8] = [
        trampoline as *const () as usize,
        entry as usize,
        data as usize,
        0,
    ];
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE writable bytes below `frame_top`,
    // which is 16-byte and so word aligned.
    unsafe {
        let sp = frame_top.sub(INITIAL_FRAME_SIZE);
        sp.cast::<[usize; INITIAL_FRAME_SIZE / 8]>().write(words);
        sp
    }
}
