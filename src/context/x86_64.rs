//! Context switch for x86_64, System V ABI.
//!
//! # What is saved, and why
//!
//! The System V AMD64 ABI (§3.2.1, "Registers") makes these callee-saved, so a function
//! call (which is what `switch` looks like to the compiler) must preserve them:
//!
//! | state            | rule                                                              |
//! |------------------|-------------------------------------------------------------------|
//! | rbx, r12-r15     | callee-saved general registers                                    |
//! | rbp              | callee-saved; frame pointer when frame pointers are enabled       |
//! | rsp              | the stack pointer itself: stored in the slot, not pushed          |
//! | MXCSR control    | bits 6-15 (DAZ, masks, rounding, FZ) are callee-saved             |
//! | x87 control word | callee-saved                                                      |
//!
//! Everything else is caller-saved (rax, rcx, rdx, rsi, rdi, r8-r11, all xmm/ymm/zmm
//! registers, the x87 register stack and status word, the MXCSR status flags): the
//! compiler assumes a call destroys them, so `switch` need not keep them. The direction
//! flag is clear on every call boundary and stays so.
//!
//! # The switch frame
//!
//! `switch(arg: rdi, save: rsi, load: rdx)` pushes the frame below on the current stack,
//! stores rsp in `*save`, loads rsp from `*load`, and pops the same frame from the other
//! stack, returning `arg` in rax. Offsets are from the saved stack pointer `S`:
//!
//! ```text
//!   S+64  <- CFA: the caller's rsp before its `call switch`
//!   S+56  return address (pushed by `call`)
//!   S+48  rbp
//!   S+40  rbx
//!   S+32  r12
//!   S+24  r13
//!   S+16  r14
//!   S+8   r15
//!   S+4   x87 control word (2 bytes, then 2 unused)
//!   S+0   MXCSR            (4 bytes)             <- saved rsp, 16-byte aligned
//! ```
//!
//! # The initial frame of a new fiber
//!
//! `initial_frame` writes the same frame at the frame top, so the first `switch` into it
//! pops it like any other:
//!
//! ```text
//!   frame top (16-aligned) = S+64   rsp after the final `ret`: 16-aligned at the
//!                                   trampoline's `call`, as the ABI requires
//!   S+56  trampoline + 1            "return address": the trampoline, past its `nop`
//!   S+48  rbp = 0                   ends frame-pointer chains
//!   S+40  rbx = entry function
//!   S+32  r12 = stack top           kept by the trampoline for its unwind info
//!   S+24  r13 = data pointer
//!   S+16  r14 = 0
//!   S+8   r15 = 0
//!   S+0   MXCSR / x87 control word of the thread that made the fiber (as threads inherit)
//! ```
//!
//! # Unwinding through the trampoline
//!
//! The trampoline calls `entry(rax, r12, r13)`. Its hand-written CFI defines its canonical
//! frame address as `*(r12 - 8) + 64`: r12 holds the stack top, `top - 8` is the parent
//! link that every resume writes, and the parent's switch frame lies there. The return
//! address and rbp, rbx, r12-r15 are then read from that frame at the offsets above, so an
//! unwinder (a `Backtrace`, gdb) walks from the fiber's frames into the frame that resumed
//! it. r12 is callee-saved, so every frame between the trampoline and the unwinder's start
//! has recorded where it kept it.

use super::Entry;

/// Bytes of the initial frame written by [`initial_frame`].
pub(super) const INITIAL_FRAME_SIZE: usize = 64;

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
        // Push the callee-saved registers; the CFI lets a debugger unwind from any point.
        "push rbp",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbp, 0",
        "push rbx",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset rbx, 0",
        "push r12",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r12, 0",
        "push r13",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r13, 0",
        "push r14",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r14, 0",
        "push r15",
        ".cfi_adjust_cfa_offset 8",
        ".cfi_rel_offset r15, 0",
        "sub rsp, 8",
        ".cfi_adjust_cfa_offset 8",
        // The floating-point control state: MXCSR and the x87 control word.
        "stmxcsr [rsp]",
        "fnstcw [rsp + 4]",
        // Swap stacks. The other stack holds a frame of the same shape, so the CFI above
        // stays true for it.
        "mov [rsi], rsp",
        "mov rsp, [rdx]",
        "ldmxcsr [rsp]",
        "fldcw [rsp + 4]",
        "add rsp, 8",
        ".cfi_adjust_cfa_offset -8",
        "pop r15",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore r15",
        "pop r14",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore r14",
        "pop r13",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore r13",
        "pop r12",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore r12",
        "pop rbx",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore rbx",
        "pop rbp",
        ".cfi_adjust_cfa_offset -8",
        ".cfi_restore rbp",
        // Hand `arg` to the other side as the return value of its `switch`.
        "mov rax, rdi",
        "ret",
        ".cfi_endproc",
    )
}

/// The first code a new fiber runs: calls `entry(arg, stack top, data)`, never returns.
///
/// Entered by `ret` from [`switch`] at its second byte, with rax = arg, rbx = entry,
/// r12 = stack top, r13 = data and rsp = the 16-aligned frame top.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    core::arch::naked_asm!(
        // Padding so that "return address - 1", where unwinders look up the frame of a
        // return address, still falls inside this function for the initial frame.
        "nop",
        ".cfi_startproc",
        // CFA = *(r12 - 8) + 64: DW_CFA_def_cfa_expression, 5 bytes of expression:
        // DW_OP_breg12 (0x7c) -8 (sleb 0x78), DW_OP_deref (0x06), DW_OP_plus_uconst (0x23) 64.
        ".cfi_escape 0x0f, 0x05, 0x7c, 0x78, 0x06, 0x23, 0x40",
        // The parent's return address and callee-saved registers, in its switch frame.
        ".cfi_offset rip, -8",
        ".cfi_offset rbp, -16",
        ".cfi_offset rbx, -24",
        ".cfi_offset r12, -32",
        ".cfi_offset r13, -40",
        ".cfi_offset r14, -48",
        ".cfi_offset r15, -56",
        "mov rdi, rax",
        "mov rsi, r12",
        "mov rdx, r13",
        "call rbx",
        // `entry` never returns.
        "ud2",
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
    let words: [usize; 8] = [
        float_control_word(),
        0,                                    // r15
        0,                                    // r14
        data as usize,                        // r13
        stack_top as usize,                   // r12
        entry as usize,                       // rbx
        0,                                    // rbp
        trampoline as *const () as usize + 1, // return address: past the trampoline's leading `nop`
    ];
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE (= 8 words) writable bytes below
    // `frame_top`, which is 16-byte and so word aligned.
    unsafe {
        let sp = frame_top.sub(INITIAL_FRAME_SIZE);
        sp.cast::<[usize; 8]>().write(words);
        sp
    }
}

/// The running thread's MXCSR in bits 0-31 and x87 control word in bits 32-47, as `switch`
/// stores them.
fn float_control_word() -> usize {
    let mut slot = [0u16; 4];
    // SAFETY: stmxcsr writes 4 bytes at slot[0..2] and fnstcw 2 bytes at slot[2]; both lie
    // inside `slot`, which is valid for writes and aligned for both stores.
    unsafe {
        core::arch::asm!(
            "stmxcsr [{p}]",
            "fnstcw [{p} + 4]",
            p = in(reg) slot.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
    let mxcsr = slot[0] as usize | (slot[1] as usize) << 16;
    mxcsr | (slot[2] as usize) << 32
}
