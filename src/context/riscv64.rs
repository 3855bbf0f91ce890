//! Context switch for riscv64, LP64D ABI.
//!
//! # What is saved, and why
//!
//! The RISC-V psABI ("Integer Register Convention", "Floating-point Register Convention")
//! makes these callee-saved, so `switch`, which the compiler sees as an ordinary call,
//! must preserve them:
//!
//! | state       | rule                                                                    |
//! |-------------|-------------------------------------------------------------------------|
//! | ra          | return address: the caller's resume point, pushed as the frame's RA     |
//! | sp          | the stack pointer itself: stored in the slot                            |
//! | s0 (fp)     | callee-saved; frame pointer when frame pointers are enabled             |
//! | s1-s11      | callee-saved                                                            |
//! | fs0-fs11    | callee-saved (the whole 64-bit register under LP64D)                    |
//!
//! Never saved: `gp` (the global pointer, one value for the whole program) and `tp` (the
//! thread pointer: a fiber runs on one OS thread, whose `tp` it must see), `fcsr` (rounding
//! mode and flags have thread storage duration in the psABI), and the caller-saved
//! a0-a7, t0-t6, ft0-ft11, fa0-fa7.
//!
//! # The switch frame
//!
//! `switch(arg: a0, save: a1, load: a2)` stores this 208-byte frame (a multiple of 16, as
//! the ABI wants of sp) on the current stack, writes sp to `*save`, loads sp from `*load`,
//! restores the frame found there and returns to its `ra` with `arg` still in a0:
//!
//! ```text
//!   S+208  <- CFA: the caller's sp
//!   S+200  (padding)
//!   S+192  ra
//!   S+96   s0, s1, s2 ... s11   (8 bytes each, s0 lowest)
//!   S+0    fs0, fs1 ... fs11    (8 bytes each, fs0 lowest)   <- saved sp, 16-aligned
//! ```
//!
//! # The initial frame of a new fiber
//!
//! ```text
//!   frame top (16-aligned) = S+208   sp when the trampoline starts
//!   S+192  ra = trampoline + 4       past its leading 4-byte `nop`
//!   S+112  s2 = stack top            kept by the trampoline for its unwind info
//!   S+120  s3 = data pointer
//!   S+104  s1 = entry function
//!   S+96   s0 = 0                    ends frame-pointer chains
//!   every other slot 0
//! ```
//!
//! # Unwinding through the trampoline
//!
//! The trampoline calls `entry(a0, s2, s3)`. Its CFI says its canonical frame address is
//! `*(s2 - 8) + 208`, the top of the parent's switch frame found through the parent link
//! at `stack top - 8`, and that ra, s0-s11 and fs0-fs11 of the frame above it are saved
//! in that frame. An unwinder therefore steps from the fiber into the function that
//! resumed it.
//!
//! # Assembler note
//!
//! The FP stores are wrapped in `.option arch, +d`: rustc's release builds assemble naked
//! functions without the `D` extension enabled (rust-lang/rust#80608).

use super::Entry;

/// Bytes of the initial frame written by [`initial_frame`].
pub(super) const INITIAL_FRAME_SIZE: usize = 208;

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
        "addi sp, sp, -208",
        ".cfi_def_cfa_offset 208",
        "sd ra, 192(sp)",
        "sd s0, 96(sp)",
        "sd s1, 104(sp)",
        "sd s2, 112(sp)",
        "sd s3, 120(sp)",
        "sd s4, 128(sp)",
        "sd s5, 136(sp)",
        "sd s6, 144(sp)",
        "sd s7, 152(sp)",
        "sd s8, 160(sp)",
        "sd s9, 168(sp)",
        "sd s10, 176(sp)",
        "sd s11, 184(sp)",
        ".option push",
        ".option arch, +d",
        "fsd fs0, 0(sp)",
        "fsd fs1, 8(sp)",
        "fsd fs2, 16(sp)",
        "fsd fs3, 24(sp)",
        "fsd fs4, 32(sp)",
        "fsd fs5, 40(sp)",
        "fsd fs6, 48(sp)",
        "fsd fs7, 56(sp)",
        "fsd fs8, 64(sp)",
        "fsd fs9, 72(sp)",
        "fsd fs10, 80(sp)",
        "fsd fs11, 88(sp)",
        ".option pop",
        ".cfi_offset ra, -16",
        ".cfi_offset s0, -112",
        ".cfi_offset s1, -104",
        ".cfi_offset s2, -96",
        ".cfi_offset s3, -88",
        ".cfi_offset s4, -80",
        ".cfi_offset s5, -72",
        ".cfi_offset s6, -64",
        ".cfi_offset s7, -56",
        ".cfi_offset s8, -48",
        ".cfi_offset s9, -40",
        ".cfi_offset s10, -32",
        ".cfi_offset s11, -24",
        // Swap stacks. The other stack holds a frame of the same shape, so the CFI above
        // stays true for it.
        "sd sp, 0(a1)",
        "ld sp, 0(a2)",
        ".option push",
        ".option arch, +d",
        "fld fs0, 0(sp)",
        "fld fs1, 8(sp)",
        "fld fs2, 16(sp)",
        "fld fs3, 24(sp)",
        "fld fs4, 32(sp)",
        "fld fs5, 40(sp)",
        "fld fs6, 48(sp)",
        "fld fs7, 56(sp)",
        "fld fs8, 64(sp)",
        "fld fs9, 72(sp)",
        "fld fs10, 80(sp)",
        "fld fs11, 88(sp)",
        ".option pop",
        "ld s0, 96(sp)",
        "ld s1, 104(sp)",
        "ld s2, 112(sp)",
        "ld s3, 120(sp)",
        "ld s4, 128(sp)",
        "ld s5, 136(sp)",
        "ld s6, 144(sp)",
        "ld s7, 152(sp)",
        "ld s8, 160(sp)",
        "ld s9, 168(sp)",
        "ld s10, 176(sp)",
        "ld s11, 184(sp)",
        "ld ra, 192(sp)",
        "addi sp, sp, 208",
        ".cfi_def_cfa_offset 0",
        // `arg` is still in a0: it is the other side's return value.
        "ret",
        ".cfi_endproc",
    )
}

/// The first code a new fiber runs: calls `entry(arg, stack top, data)`, never returns.
///
/// Entered by `ret` from [`switch`] 4 bytes in, with a0 = arg, s1 = entry, s2 = stack top,
/// s3 = data and sp = the 16-aligned frame top.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    core::arch::naked_asm!(
        // A 4-byte `nop`, so that "return address - 1", where unwinders look up the frame of
        // a return address, falls inside this function for the initial frame.
        ".option push",
        ".option norvc",
        "nop",
        ".option pop",
        ".cfi_startproc",
        // CFA = *(s2 - 8) + 208: DW_CFA_def_cfa_expression, 6 bytes of expression:
        // DW_OP_breg18 (0x82) -8 (sleb 0x78), DW_OP_deref (0x06),
        // DW_OP_plus_uconst (0x23) 208 (uleb 0xd0 0x01).
        ".cfi_escape 0x0f, 0x06, 0x82, 0x78, 0x06, 0x23, 0xd0, 0x01",
        // The parent's return address and callee-saved registers, in its switch frame.
        ".cfi_offset ra, -16",
        ".cfi_offset s0, -112",
        ".cfi_offset s1, -104",
        ".cfi_offset s2, -96",
        ".cfi_offset s3, -88",
        ".cfi_offset s4, -80",
        ".cfi_offset s5, -72",
        ".cfi_offset s6, -64",
        ".cfi_offset s7, -56",
        ".cfi_offset s8, -48",
        ".cfi_offset s9, -40",
        ".cfi_offset s10, -32",
        ".cfi_offset s11, -24",
        ".cfi_offset fs0, -208",
        ".cfi_offset fs1, -200",
        ".cfi_offset fs2, -192",
        ".cfi_offset fs3, -184",
        ".cfi_offset fs4, -176",
        ".cfi_offset fs5, -168",
        ".cfi_offset fs6, -160",
        ".cfi_offset fs7, -152",
        ".cfi_offset fs8, -144",
        ".cfi_offset fs9, -136",
        ".cfi_offset fs10, -128",
        ".cfi_offset fs11, -120",
        "mv a1, s2",
        "mv a2, s3",
        "jalr s1",
        // `entry` never returns.
        "unimp",
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
    words[12] = 0; // s0
    words[13] = entry as usize; // s1
    words[14] = stack_top as usize; // s2
    words[15] = data as usize; // s3
    words[24] = trampoline as *const () as usize + 4; // ra
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE writable bytes below `frame_top`,
    // which is 16-byte and so word aligned.
    unsafe {
        let sp = frame_top.sub(INITIAL_FRAME_SIZE);
        sp.cast::<[usize; INITIAL_FRAME_SIZE / 8]>().write(words);
        sp
    }
}
