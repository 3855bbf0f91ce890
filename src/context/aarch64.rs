//! Context switch for aarch64, AAPCS64.
//!
//! # What is saved, and why
//!
//! The Procedure Call Standard for the Arm 64-bit Architecture (§6.1.1, §6.1.2) makes
//! these callee-saved, so `switch`, which the compiler sees as an ordinary call, must
//! preserve them:
//!
//! | state     | rule                                                                      |
//! |-----------|---------------------------------------------------------------------------|
//! | x19-x28   | callee-saved                                                              |
//! | x29 (fp)  | frame pointer, callee-saved                                               |
//! | x30 (lr)  | link register: the caller's resume point, saved as the frame's return     |
//! | sp        | the stack pointer itself: stored in the slot                              |
//! | d8-d15    | the low 64 bits of v8-v15 are callee-saved (the upper halves are not)     |
//!
//! Never saved: x18 (the platform register, which Linux leaves as a temporary), the
//! caller-saved x0-x17, v0-v7 and v16-v31, and FPCR/FPSR (thread state, not part of the
//! call contract).
//!
//! # The switch frame
//!
//! `switch(arg: x0, save: x1, load: x2)` stores this 160-byte frame on the current stack,
//! writes sp to `*save`, loads sp from `*load`, restores the frame found there and returns
//! to its x30 with `arg` still in x0:
//!
//! ```text
//!   S+160  <- CFA: the caller's sp
//!   S+144  x29, x30
//!   S+64   x19, x20 ... x28      (8 bytes each, x19 lowest)
//!   S+0    d8, d9 ... d15        (8 bytes each, d8 lowest)   <- saved sp, 16-aligned
//! ```
//!
//! # The initial frame of a new fiber
//!
//! ```text
//!   frame top (16-aligned) = S+160   sp when the trampoline starts
//!   S+152  x30 = trampoline + 4      past its leading `nop`
//!   S+144  x29 = 0                   ends frame-pointer chains
//!   S+80   x21 = data pointer
//!   S+72   x20 = stack top           kept by the trampoline for its unwind info
//!   S+64   x19 = entry function
//!   every other slot 0
//! ```
//!
//! # Unwinding through the trampoline
//!
//! The trampoline calls `entry(x0, x20, x21)`. Its CFI says its canonical frame address is
//! `*(x20 - 8) + 160`, the top of the parent's switch frame found through the parent link
//! at `stack top - 8`, and that x19-x30 and d8-d15 of the frame above it are saved in that
//! frame. An unwinder therefore steps from the fiber into the function that resumed it.

use super::Entry;

/// Bytes of the initial frame written by [`initial_frame`].
pub(super) const INITIAL_FRAME_SIZE: usize = 160;

/// Saves the callee-saved state of the running context into a frame on its stack, stores its
/// stack pointer in `*save`, then restores the context whose stack pointer is in `*load`
/// and returns `arg` to it.
///
/// # Safety
///
/// `*load` must hold a stack pointer saved by `switch` or written by [`initial_frame`],
/// whose stack is not in use, and `save` must be valid for a pointer-sized write.
#[unsafe(naked)]
pub(super) unsafe extern "C" fn switch(
    arg: usize,
    save: *mut *mut u8,
    load: *const *mut u8,
) -> usize {
    core::arch::naked_asm!(
        ".cfi_startproc",
        "sub sp, sp, #160",
        ".cfi_def_cfa_offset 160",
        "stp d8, d9, [sp, #0]",
        "stp d10, d11, [sp, #16]",
        "stp d12, d13, [sp, #32]",
        "stp d14, d15, [sp, #48]",
        "stp x19, x20, [sp, #64]",
        "stp x21, x22, [sp, #80]",
        "stp x23, x24, [sp, #96]",
        "stp x25, x26, [sp, #112]",
        "stp x27, x28, [sp, #128]",
        "stp x29, x30, [sp, #144]",
        ".cfi_offset x19, -96",
        ".cfi_offset x20, -88",
        ".cfi_offset x21, -80",
        ".cfi_offset x22, -72",
        ".cfi_offset x23, -64",
        ".cfi_offset x24, -56",
        ".cfi_offset x25, -48",
        ".cfi_offset x26, -40",
        ".cfi_offset x27, -32",
        ".cfi_offset x28, -24",
        ".cfi_offset x29, -16",
        ".cfi_offset x30, -8",
        // Swap stacks. The other stack holds a frame of the same shape, so the CFI above
        // stays true for it.
        "mov x9, sp",
        "str x9, [x1]",
        "ldr x9, [x2]",
        "mov sp, x9",
        "ldp d8, d9, [sp, #0]",
        "ldp d10, d11, [sp, #16]",
        "ldp d12, d13, [sp, #32]",
        "ldp d14, d15, [sp, #48]",
        "ldp x19, x20, [sp, #64]",
        "ldp x21, x22, [sp, #80]",
        "ldp x23, x24, [sp, #96]",
        "ldp x25, x26, [sp, #112]",
        "ldp x27, x28, [sp, #128]",
        "ldp x29, x30, [sp, #144]",
        "add sp, sp, #160",
        ".cfi_def_cfa_offset 0",
        // `arg` is still in x0: it is the other side's return value.
        "ret",
        ".cfi_endproc",
    )
}

/// The first code a new fiber runs: calls `entry(arg, stack top, data)`, never returns.
///
/// Entered by `ret` from [`switch`] 4 bytes in, with x0 = arg, x19 = entry,
/// x20 = stack top, x21 = data and sp = the 16-aligned frame top.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    core::arch::naked_asm!(
        // Padding so that "return address - 1", where unwinders look up the frame of a
        // return address, still falls inside this function for the initial frame.
        "nop",
        ".cfi_startproc",
        // CFA = *(x20 - 8) + 160: DW_CFA_def_cfa_expression, 6 bytes of expression:
        // DW_OP_breg20 (0x84) -8 (sleb 0x78), DW_OP_deref (0x06),
        // DW_OP_plus_uconst (0x23) 160 (uleb 0xa0 0x01).
        ".cfi_escape 0x0f, 0x06, 0x84, 0x78, 0x06, 0x23, 0xa0, 0x01",
        // The parent's return address and callee-saved registers, in its switch frame.
        ".cfi_offset x19, -96",
        ".cfi_offset x20, -88",
        ".cfi_offset x21, -80",
        ".cfi_offset x22, -72",
        ".cfi_offset x23, -64",
        ".cfi_offset x24, -56",
        ".cfi_offset x25, -48",
        ".cfi_offset x26, -40",
        ".cfi_offset x27, -32",
        ".cfi_offset x28, -24",
        ".cfi_offset x29, -16",
        ".cfi_offset x30, -8",
        ".cfi_offset d8, -160",
        ".cfi_offset d9, -152",
        ".cfi_offset d10, -144",
        ".cfi_offset d11, -136",
        ".cfi_offset d12, -128",
        ".cfi_offset d13, -120",
        ".cfi_offset d14, -112",
        ".cfi_offset d15, -104",
        "mov x1, x20",
        "mov x2, x21",
        "blr x19",
        // `entry` never returns.
        "brk #1",
        ".cfi_endproc",
    )
}

/// Writes the initial frame described in the module docs below `frame_top` and returns the
/// stack pointer to store in the fiber slot.
///
/// # Safety
///
/// `frame_top` must be 16-byte aligned with [`INITIAL_FRAME_SIZE`] writable bytes below it.
pub(super) unsafe fn initial_frame(
    frame_top: *mut u8,
    entry: Entry,
    stack_top: *mut u8,
    data: *mut u8,
) -> *mut u8 {
    let mut words = [0usize; INITIAL_FRAME_SIZE / 8];
    words[8] = entry as usize; // x19
    words[9] = stack_top as usize; // x20
    words[10] = data as usize; // x21
    words[18] = 0; // x29
    words[19] = trampoline as *const () as usize + 4; // x30
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE writable bytes below `frame_top`,
    // which is 16-byte and so word aligned.
    unsafe {
        let sp = frame_top.sub(INITIAL_FRAME_SIZE);
        sp.cast::<[usize; INITIAL_FRAME_SIZE / 8]>().write(words);
        sp
    }
}
