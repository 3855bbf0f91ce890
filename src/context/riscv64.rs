//! Context switch for riscv64, LP64D ABI.
//!
//! # What is saved, and why
//!
//! The RISC-V psABI ("Integer Register Convention", "Floating-point Register Convention")
//! makes these callee-saved, so `resume` and `suspend`, which the compiler sees as inline
//! assembly in the middle of a function, must give them back unchanged:
//!
//! | state    | rule                                   | how we keep it                          |
//! |----------|----------------------------------------|-----------------------------------------|
//! | ra       | return address                         | the resumer's: set by its `jalr`, stored|
//! |          |                                        | in its frame; the fiber's: its          |
//! |          |                                        | continuation address, stored by hand    |
//! | sp       | the stack pointer itself               | in the parent link, or handed back      |
//! | s0 (fp)  | callee-saved; frame pointer if any     | stored by hand: LLVM reserves it        |
//! | s1       | callee-saved                           | stored by hand: LLVM reserves it (base  |
//! |          |                                        | pointer), so no asm operand             |
//! | s2-s11   | callee-saved                           | declared clobbered: the compiler saves  |
//! |          |                                        | those it needs, in its frame            |
//! | fs0-fs11 | callee-saved (all 64 bits under LP64D) | declared clobbered, as s2-s11           |
//!
//! Never touched: `gp` (the global pointer, one value for the whole program) and `tp` (the
//! thread pointer: a fiber runs on one OS thread, whose `tp` it must see). Not saved:
//! `fcsr` (rounding mode and flags have thread storage duration in the psABI), and the
//! caller-saved a0-a7, t0-t6, ft0-ft11, fa0-fa7 and vector registers, which the asm
//! declares clobbered (`clobber_abi("C")`).
//!
//! # Why inline assembly, and not one naked `switch` function
//!
//! As on x86_64, whose module docs give the measurements (36 ns per round trip with one
//! naked `switch` called by both sides, 2.5-8 ns now, as corosensei's or twice it), a switch
//! is a call and its matching return split across two stacks, so that the return-address
//! stack predicts every switch: [`resume`] is a `jalr ra` (a push on that stack) to the
//! fiber's continuation, and [`suspend`] is a `ret` (a pop) to the resumer's `ra`. Jump
//! targets sit in t1, never in t0 or ra: the ISA reads `jalr` through those two as a
//! return-stack hint. Only x86_64 is measured natively; under QEMU the timings mean
//! nothing. The naked function that remains is the entry [`trampoline`], which carries
//! the unwind information.
//!
//! # The switch frames
//!
//! Both sides leave a 32-byte frame of the same shape on their stack, at the saved stack
//! pointer `S`:
//!
//! ```text
//!   S+32  <- the side's sp before its asm block (the resumer's: the unwinder's CFA)
//!   S+24  s0
//!   S+16  s1
//!   S+8   (unused; keeps sp 16-byte aligned)
//!   S+0   where to go on   <- saved sp
//!           resumer: its ra, the return point in `resume`, stored by the fiber side
//!           fiber:   the continuation label in `suspend`
//! ```
//!
//! `resume` stores s0 and s1 and jumps with `jalr` to the word at the fiber's S. The fiber
//! side (the continuation in `suspend`, or the trampoline the first time) is entered with:
//!
//! ```text
//!   sp = the resumer's S   ra = its return point   a0 = arg   a1 = stack top
//!   a2 = the fiber's S
//! ```
//!
//! It stores ra at the resumer's S, points the parent link at it and restores its own
//! frame. `suspend` stores its frame, loads the resumer's S from the parent link and its
//! ra from there, and `ret`s with the message in a0 and its own S in a2.
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
//! frame top, never after: the psABI has no red zone, so the kernel may build a signal frame
//! on any word below sp.
//!
//! # Unwinding through the trampoline
//!
//! The trampoline keeps the stack top in s2 and jumps to `entry(a0, stack top, data)` with
//! ra pointing back into itself (a `jalr ra` would push a return-address-stack entry that
//! the fiber's first `suspend` could not match). Its CFI says its canonical frame address
//! is `*(s2 - 8) + 32`: `top - 8` is the parent link, which points at the resumer's switch
//! frame, where ra, s1 and s0 are read at the offsets above. An unwinder therefore steps
//! from the fiber into the function that resumed it. s2 is callee-saved, so every frame in
//! between has recorded where it kept it; the resumer's own s2-s11 and fs0-fs11 were saved
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
    // contract in the module docs, as the caller guarantees: it stores ra in our frame,
    // saves the parent link, restores the fiber and comes back here only through
    // `suspend`, which restores sp and hands over its frame in a2; our loads restore s0
    // and s1. Every other register is declared clobbered. Our frame stays above sp while
    // the fiber runs, so nothing can overwrite it.
    // SAFETY: by the contract just stated, the asm touches no state it does not restore.
    unsafe {
        asm!(
            // 1. Save what no operand can express: s0 and s1.
            "addi sp, sp, -32",
            "sd s0, 24(sp)",
            "sd s1, 16(sp)",
            // 2. Call where the fiber goes on: the first word of its frame.
            "ld t1, 0(a2)",
            "jalr t1",
            // 3. Back from `suspend`, which restored sp.
            "ld s1, 16(sp)",
            "ld s0, 24(sp)",
            "addi sp, sp, 32",
            // The message, in both directions: the first argument register, so the
            // trampoline passes it to `entry` as is.
            inlateout("a0") arg => reply,
            // The stack top, for the fiber side to find the parent link.
            in("a1") stack_top,
            // The fiber's frame: its S on the way in, its new S on the way back.
            inlateout("a2") stack_pointer => saved,
            // s2-s11 and fs0-fs11 are callee-saved: let the compiler keep what it needs.
            lateout("s2") _,
            lateout("s3") _,
            lateout("s4") _,
            lateout("s5") _,
            lateout("s6") _,
            lateout("s7") _,
            lateout("s8") _,
            lateout("s9") _,
            lateout("s10") _,
            lateout("s11") _,
            lateout("fs0") _,
            lateout("fs1") _,
            lateout("fs2") _,
            lateout("fs3") _,
            lateout("fs4") _,
            lateout("fs5") _,
            lateout("fs6") _,
            lateout("fs7") _,
            lateout("fs8") _,
            lateout("fs9") _,
            lateout("fs10") _,
            lateout("fs11") _,
            // ra, t0-t6, a1 and a3-a7, the caller-saved FP and vector registers.
            clobber_abi("C"),
        );
    }
    (reply, saved)
}

/// Switches from the running fiber back to its resumer, handing it `arg`; returns the
/// message of the next [`resume`].
///
/// Inlined into the fiber's code, so that the `ret` to the resumer matches the `jalr` of
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
    // leave a frame of the same shape on our stack and hand it to `resume` in a2; the
    // next `resume` jumps into it at label 2 with the contract in the module docs. s0, s1
    // and sp come back from our frame; every other register is declared clobbered.
    // SAFETY: by the contract just stated, the asm touches no state it does not restore.
    unsafe {
        asm!(
            // 1. Store our frame: s0, s1 and where to go on.
            "addi sp, sp, -32",
            "sd s0, 24(sp)",
            "sd s1, 16(sp)",
            "lla t0, 2f",
            "sd t0, 0(sp)",
            // 2. Keep our S in a2 for `resume`; take the resumer's from the parent link.
            "mv a2, sp",
            "ld sp, -{parent_link}(a1)",
            // 3. Return into `resume`: its ra, which its `jalr` set.
            "ld ra, 0(sp)",
            "ret",
            // The continuation, entered from the next `resume` (contract in the module
            // docs).
            // 4. Store the resumer's ra in its frame and point the parent link there.
            "2:",
            "sd ra, 0(sp)",
            "sd sp, -{parent_link}(a1)",
            // 5. Back on our stack: restore the rest of our frame.
            "ld s1, 16(a2)",
            "ld s0, 24(a2)",
            "addi sp, a2, 32",
            parent_link = const PARENT_LINK,
            // The message, in both directions (see `resume`).
            inlateout("a0") arg => message,
            // The stack top; `resume` passes it again, so it still holds after label 2.
            in("a1") stack_top,
            lateout("s2") _,
            lateout("s3") _,
            lateout("s4") _,
            lateout("s5") _,
            lateout("s6") _,
            lateout("s7") _,
            lateout("s8") _,
            lateout("s9") _,
            lateout("s10") _,
            lateout("s11") _,
            lateout("fs0") _,
            lateout("fs1") _,
            lateout("fs2") _,
            lateout("fs3") _,
            lateout("fs4") _,
            lateout("fs5") _,
            lateout("fs6") _,
            lateout("fs7") _,
            lateout("fs8") _,
            lateout("fs9") _,
            lateout("fs10") _,
            lateout("fs11") _,
            clobber_abi("C"),
        );
    }
    message
}

/// The first code a new fiber runs: jumps to `entry(arg, stack top, data)`, never returns.
///
/// Entered by [`resume`]'s `jalr` through the initial frame, with the contract in the
/// module docs.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        // On entry the frame is that of any called function: the CFA is sp and the return
        // address into `resume` is in ra, as the default CFI rule says.
        ".cfi_startproc",
        // 1. Store ra in the resumer's frame, point the parent link at that frame, and
        //    keep the stack top in s2.
        "sd ra, 0(sp)",
        "sd sp, -{parent_link}(a1)",
        "mv s2, a1",
        // From here the CFA is *(s2 - 8) + 32: DW_CFA_def_cfa_expression, 5 bytes of
        // expression: DW_OP_breg18 (0x82) -8 (sleb 0x78), DW_OP_deref (0x06),
        // DW_OP_plus_uconst (0x23) 32 (0x20).
        ".cfi_escape 0x0f, 0x05, 0x82, 0x78, 0x06, 0x23, 0x20",
        // The resumer's return address, s1 and s0, in its switch frame.
        ".cfi_offset ra, -32",
        ".cfi_offset s1, -16",
        ".cfi_offset s0, -8",
        // 2. Load the entry function and the data pointer from the initial frame while sp
        //    is still on the resumer's stack, and only then move sp to the frame top: once
        //    sp is there, both words lie below it, and the psABI has no red zone, so a signal
        //    delivered in between would build its frame over them. (QEMU user mode
        //    delivers signals only between translated blocks, so tests under it cannot
        //    catch the wrong order: keep this one.)
        "ld t1, 8(a2)",
        "ld t2, 16(a2)",
        "addi sp, a2, 32",
        // 3. Jump to `entry(a0, a1, data)` with ra pointing back here for the unwinder.
        //    s0 = 0 ends frame-pointer chains.
        "mv a2, t2",
        "li s0, 0",
        "lla ra, 2f",
        "jr t1",
        // `entry` never returns; "return address - 1", where unwinders look up this
        // frame, is the last byte of the `jr`, inside this function.
        "2:",
        "unimp",
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
