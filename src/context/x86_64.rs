//! Context switch for x86_64, System V ABI.
//!
//! # What is saved, and why
//!
//! The System V AMD64 ABI (§3.2.1, "Registers") makes these callee-saved, so `resume` and
//! `suspend`, which the compiler sees as inline assembly in the middle of a function,
//! must give them back unchanged:
//!
//! | state            | rule                                 | how we keep it                    |
//! |------------------|--------------------------------------|-----------------------------------|
//! | rbx              | callee-saved                         | pushed by hand: LLVM reserves it  |
//! |                  |                                      | (base pointer): no asm operand    |
//! | rbp              | callee-saved; frame pointer if any   | pushed by hand: reserved as well  |
//! | r12-r15          | callee-saved                         | declared clobbered: the compiler  |
//! |                  |                                      | saves those it needs, in its frame|
//! | rsp              | the stack pointer itself             | in the parent link, or handed back|
//! | rip              | where the side goes on               | pushed by `call` (the resumer) or |
//! |                  |                                      | by hand (the fiber)               |
//! | MXCSR control    | bits 6-15 (DAZ, masks, rounding, FZ) | stored by each side; reloaded only|
//! |                  | are callee-saved                     | when they differ from the other's |
//! | x87 control word | callee-saved                         | as MXCSR                          |
//!
//! Everything else is caller-saved (rax, rcx, rdx, rsi, rdi, r8-r11, all xmm/ymm/zmm
//! registers, the x87 register stack and status word, the MXCSR status flags): the asm
//! declares them clobbered (`clobber_abi("C")`). The direction flag is clear at every asm
//! boundary and stays so.
//!
//! # Why inline assembly, and not one naked `switch` function
//!
//! Until this design both directions called one out-of-line naked `switch`, which ended in a
//! `ret` onto the *other* stack. The CPU predicts a `ret` from its return stack buffer,
//! which holds the return address of the `call` just made on *this* side, so every switch
//! mispredicted: two mispredictions per round trip.
//!
//! Now each switch is a pair of matching instructions, as corosensei does it:
//!
//! * [`resume`] is inline asm in the resumer that `call`s the fiber's saved continuation
//!   address: the `call` pushes the resumer's return address, on its stack and in the
//!   return stack buffer.
//! * [`suspend`] is inline asm in the fiber that pushes the address of its own
//!   continuation label, switches to the resumer's stack and `ret`s: the `ret` consumes
//!   exactly the prediction the `call` pushed.
//!
//! The switch must be inline for this: a `call` to an out-of-line function on the fiber
//! side would push a return address that the `ret` to the resumer cannot match. Inline
//! asm also lets the compiler save only the registers that are live (r12-r15 are declared
//! clobbered), and none at all in a loop that saves them once. The naked function that
//! remains is the entry [`trampoline`], which carries the unwind information.
//!
//! `ldmxcsr` and `fldcw` cost about 10 ns each on the machine below, so the control state
//! is reloaded only when the two sides' differ, which keeps it exact. Reading it cannot be
//! skipped: either side may have changed its own since the last switch, and `stmxcsr` and
//! `fnstcw` are the only ways to read it. Those reads are what is left: with them a round
//! trip takes twice corosensei's, which saves no control state; without them, as equal.
//! Inside the switch the two `stmxcsr` of a round trip cost about 2.7 ns and the two
//! `fnstcw` about 0.8 ns, more than in a loop of their own (0.6 ns each), as they wait for
//! the work in flight around them.
//!
//! A fiber built with [`FloatControl::Shared`](crate::fiber::FloatControl) skips them: it
//! runs with its thread's control state, which is what Rust code assumes anyway (the
//! standard library documents any change to it as undefined behaviour while Rust code
//! runs). Its header flag (`FLAGS` in the context module) selects [`suspend_shared`],
//! known at compile time in the fiber's code; the resumer's side is the same for both.
//!
//! Measured on a 2-vCPU Xeon (Sapphire Rapids) VM against corosensei 0.3 in the same
//! runs, ratio per run, then the median over runs (2026-11-26, 18:52 UTC):
//!
//! | switch                                                       | round trip | ÷ corosensei |
//! |--------------------------------------------------------------|-----------:|-------------:|
//! | one naked `switch`, called by both sides; `ldmxcsr`/`fldcw`  |    36.3 ns | 13x          |
//! | call/ret pairs, 32-byte frames holding the control state     | 6.9-7.0 ns | 1.89x        |
//! | this design, `FloatControl::Saved` (the default)             | 6.0-7.6 ns | 2.47x        |
//! | this design, `FloatControl::Shared`                          | 2.4-4.1 ns | 1.00x        |
//!
//! The last two rows are medians over 7 runs of `cargo bench -p green-benches --bench
//! round_trip_interleaved`, which alternates the three loops in short slices (ranges
//! 2.03x-2.49x and 1.00x-1.07x; corosensei took 2.4-3.9 ns). Six criterion runs of
//! `--bench fiber -- round_trip` right after gave 1.92x and 0.85x (ranges 1.48x-2.19x and
//! 0.77x-1.13x): the machine changes speed every few seconds, and criterion times each
//! loop seconds apart. The second row is from criterion runs of an earlier day.
//!
//! # The switch frames
//!
//! Both sides leave a 24-byte frame of the same shape on their stack, at the saved stack
//! pointer `S` (the parent link points at the resumer's; the fiber's goes back to `resume`
//! in rdx and waits in the `Context`), and keep their control state in the 8 bytes below
//! it:
//!
//! ```text
//!   S+24  <- the side's rsp before its asm block (the resumer's: the unwinder's CFA)
//!   S+16  rbp
//!   S+8   rbx
//!   S+0   where to go on   <- saved rsp
//!           resumer: return address into `resume`, pushed by its `call`
//!           fiber:   the continuation label in `suspend`, pushed by hand
//!   S-4   x87 control word (2 bytes, then 2 unused)
//!   S-8   MXCSR            (4 bytes)
//! ```
//!
//! The control state lies below the saved rsp, in the 128-byte red zone that the ABI
//! keeps from signal handlers, so it needs no room in the frame: an inline asm block
//! without `nostack` may write there, and nothing runs on a side's stack while it is
//! switched out. The frame was 32 bytes, with the control state inside it; the `sub` and
//! `add` of rsp that needed made the round trip about 10% slower.
//!
//! The red zone does not outlive a call (the ABI keeps it only for "temporary data that is
//! not needed across function calls", and Valgrind marks it undefined at every `call` and
//! `ret`), so both slots are written by the fiber side, between the resumer's `call` and
//! the `ret` back to it: the resumer's by the continuation (or the trampoline) as soon as
//! it is entered, while the resumer's state is still in force; the fiber's by `suspend`,
//! which then moves off the fiber's stack without a call. A fiber that shares its thread's
//! control state ([`FloatControl::Shared`](crate::fiber::FloatControl)) writes and reads
//! neither. The resumer's side is the same for both kinds of fiber.
//!
//! `resume` pushes rbp and rbx, then `call [fiber S]`. The fiber side (the continuation in
//! `suspend`, or the trampoline the first time) is entered with:
//!
//! ```text
//!   rsp = the resumer's S    rdi = arg    rsi = stack top    rdx = the fiber's S
//! ```
//!
//! It writes rsp to the parent link, stores the resumer's control state and reloads its
//! own if the two differ, and pops its frame. `suspend` pushes its frame and stores its
//! control state, loads the resumer's S from the parent link, reloads the resumer's
//! control state if it differs and `ret`s with the message in rdi and its own S in rdx;
//! `resume` pops the rest of its frame.
//!
//! # The initial frame of a new fiber
//!
//! `initial_frame` writes this at the frame top; the first `resume` calls its first word:
//!
//! ```text
//!   frame top (16-aligned) = S+32   rsp when `entry` is entered (after the fake return
//!                                   address below), as if called
//!   S+24  data pointer
//!   S+16  entry function
//!   S+8   MXCSR / x87 control word of the thread that made the fiber (as threads inherit)
//!   S+0   trampoline                "where to go on"
//! ```
//!
//! # Unwinding through the trampoline
//!
//! The trampoline keeps the stack top in r12 and jumps to `entry(rdi, stack top, data)`
//! after pushing a return address into itself (a `call` would push a return-stack-buffer
//! entry that the fiber's first `suspend` could not match). Its hand-written CFI defines
//! its canonical frame address as `*(r12 - 8) + 24`: `top - 8` is the parent link, which
//! points at the resumer's switch frame, and the return address, rbx and rbp are read from
//! that frame at the offsets above. An unwinder (a `Backtrace`, gdb) therefore walks from
//! the fiber's frames into the function that resumed it. r12 is callee-saved, so every
//! frame between the trampoline and the unwinder's start has recorded where it kept it;
//! the resumer's own r12-r15 were saved by its compiled prologue, as for any call.

use core::arch::{asm, naked_asm};

use super::{Entry, FLAG_SHARED_FLOAT_CONTROL, FLAGS, PARENT_LINK};

/// Bytes of the initial frame written by [`initial_frame`].
pub(super) const INITIAL_FRAME_SIZE: usize = 32;

/// Switches into the fiber whose stack top is `stack_top` and whose switch frame is at
/// `stack_pointer`, handing it `arg`. Returns the message of its next [`suspend`] and the
/// stack pointer it saved there.
///
/// The resumer's side is the same whether the fiber keeps its own control state or not:
/// the fiber side, which knows, stores the resumer's state if it needs it.
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
    // The frame at `stack_pointer` starts with a continuation that keeps the contract in
    // the module docs, as the caller guarantees: it saves the parent link, restores the
    // fiber and comes back here only through `suspend`, which restores rsp and the control
    // state and hands over its frame in rdx; our pops restore rbx and rbp. Every other
    // register is declared clobbered. The pushes stay above rsp while the fiber runs, so
    // nothing can overwrite them.
    // SAFETY: by the contract just stated, the asm touches no state it does not restore.
    unsafe {
        asm!(
            // 1. Save what no operand can express: rbp and rbx.
            "push rbp",
            "push rbx",
            // 2. Call where the fiber goes on: the first word of its frame.
            "call [rdx]",
            // 3. Back from `suspend`, which restored rsp and our control state.
            "pop rbx",
            "pop rbp",
            // The message, in both directions: the first argument register, so the
            // trampoline passes it to `entry` as is.
            inlateout("rdi") arg => reply,
            // The stack top, for the fiber side to find the parent link.
            in("rsi") stack_top,
            // The fiber's frame: its S on the way in, its new S on the way back.
            inlateout("rdx") stack_pointer => saved,
            // r12-r15 are callee-saved: let the compiler keep what it needs in them.
            lateout("r12") _,
            lateout("r13") _,
            lateout("r14") _,
            lateout("r15") _,
            // rax, rcx, rsi, r8-r11, the vector and x87 registers.
            clobber_abi("C"),
        );
    }
    (reply, saved)
}

/// The inline assembly of [`suspend`] and [`suspend_shared`]: `$line` are the instructions,
/// which may name the parent link's offset as `{parent_link}`.
macro_rules! suspend_asm {
    ($arg:expr, $stack_top:expr, [$($line:literal),* $(,)?]) => {{
        let message;
        // SAFETY: the caller keeps the contract of `suspend`, under which the asm touches
        // no state it does not restore (see there).
        unsafe {
            asm!(
                $($line,)*
                parent_link = const PARENT_LINK,
                // The message, in both directions (see `resume`).
                inlateout("rdi") $arg => message,
                // The stack top; `resume` passes it again, so it still holds after the
                // continuation label.
                in("rsi") $stack_top,
                lateout("r12") _,
                lateout("r13") _,
                lateout("r14") _,
                lateout("r15") _,
                clobber_abi("C"),
            );
        }
        message
    }};
}

/// Switches from the running fiber back to its resumer, handing it `arg`; returns the
/// message of the next [`resume`].
///
/// Inlined into the fiber's code, so that the `ret` to the resumer matches the `call` of
/// its `resume`, and the continuation runs on into the fiber's code without a `ret`.
///
/// # Safety
///
/// Must run on the fiber whose stack top is `stack_top`, whose parent link holds the
/// frame of the `resume` that runs it, and which keeps its own control state (no
/// shared-control flag in its header).
#[inline(always)]
pub(super) unsafe fn suspend(arg: usize, stack_top: *mut u8) -> usize {
    // We run on the fiber of `stack_top`, so its header is ours and the parent
    // link points at the frame of the `resume` that is waiting for us (module docs). We
    // leave a frame of the same shape on our stack and hand it to `resume` in rdx; the
    // next `resume` calls into it at label 2 with the contract in the module docs. rbx,
    // rbp, rsp and the control state come back from our frame; every other register is
    // declared clobbered.
    suspend_asm!(
        arg,
        stack_top,
        [
            // 1. Push our frame: rbp, rbx and where to go on; our control state below it.
            "push rbp",
            "push rbx",
            "stmxcsr [rsp - 16]",
            "fnstcw [rsp - 12]",
            "lea rax, [rip + 2f]",
            "push rax",
            // 2. Keep our S in rdx for `resume`, and take the resumer's from the parent link.
            "mov rdx, rsp",
            "mov rsp, [rsi - {parent_link}]",
            // 3. Reload the resumer's control state if it differs from ours in a
            //    callee-saved bit: MXCSR bits 6-15 (0-5 are status flags), or the x87
            //    control word. Two macro-fused branches, both not taken when the sides
            //    agree, as they nearly always do.
            "mov eax, [rdx - 8]",
            "xor eax, [rsp - 8]",
            "test eax, 0xFFC0",
            "jnz 4f",
            "movzx eax, word ptr [rdx - 4]",
            "cmp ax, [rsp - 4]",
            "jne 4f",
            // 4. Return into `resume`: the return address its `call` pushed.
            "ret",
            "4:",
            "ldmxcsr [rsp - 8]",
            "fldcw [rsp - 4]",
            "ret",
            // Reloads our control state, out of the straight path of label 2; back to 3.
            "5:",
            "ldmxcsr [rdx - 8]",
            "fldcw [rdx - 4]",
            "jmp 3f",
            // The continuation, called by the next `resume` (contract in the module docs).
            // 5. Point the parent link at the resumer's frame.
            "2:",
            "mov [rsi - {parent_link}], rsp",
            // 6. Store the resumer's control state, still in force, below its frame (after
            //    its `call`: module docs), and load ours if it differs.
            "stmxcsr [rsp - 8]",
            "fnstcw [rsp - 4]",
            "mov eax, [rsp - 8]",
            "xor eax, [rdx - 8]",
            "test eax, 0xFFC0",
            "jnz 5b",
            "movzx eax, word ptr [rsp - 4]",
            "cmp ax, [rdx - 4]",
            "jne 5b",
            // 7. Back on our stack: pop the rest of our frame.
            "3:",
            "lea rsp, [rdx + 8]",
            "pop rbx",
            "pop rbp",
        ]
    )
}

/// [`suspend`] for a fiber that shares the thread's control state: the same frame, with
/// its control slot unwritten, and no control state read or loaded on either side.
///
/// # Safety
///
/// As [`suspend`], on a fiber made with the shared-control flag in its header.
#[inline(always)]
pub(super) unsafe fn suspend_shared(arg: usize, stack_top: *mut u8) -> usize {
    // As in `suspend`, minus the control state, which neither side keeps.
    suspend_asm!(
        arg,
        stack_top,
        [
            // 1. Push our frame: rbp, rbx and where to go on.
            "push rbp",
            "push rbx",
            "lea rax, [rip + 2f]",
            "push rax",
            // 2. Hand our S over in rdx, move to the resumer's and return into `resume`.
            "mov rdx, rsp",
            "mov rsp, [rsi - {parent_link}]",
            "ret",
            // The continuation: point the parent link at the resumer's frame, pop ours.
            "2:",
            "mov [rsi - {parent_link}], rsp",
            "lea rsp, [rdx + 8]",
            "pop rbx",
            "pop rbp",
        ]
    )
}

/// The first code a new fiber runs: jumps to `entry(arg, stack top, data)`, never returns.
///
/// Called by [`resume`] through the initial frame, with the contract in the module docs.
#[unsafe(naked)]
unsafe extern "C" fn trampoline() -> ! {
    naked_asm!(
        // On entry the frame is that of any called function: the CFA is rsp + 8 and the
        // return address into `resume` sits at rsp, as the default CFI rule says.
        ".cfi_startproc",
        // 1. Point the parent link at the resumer's frame; keep the stack top in r12.
        "mov [rsi - {parent_link}], rsp",
        "mov r12, rsi",
        // From here the CFA is *(r12 - 8) + 24: DW_CFA_def_cfa_expression, 5 bytes of
        // expression: DW_OP_breg12 (0x7c) -8 (sleb 0x78), DW_OP_deref (0x06),
        // DW_OP_plus_uconst (0x23) 24 (0x18).
        ".cfi_escape 0x0f, 0x05, 0x7c, 0x78, 0x06, 0x23, 0x18",
        // The resumer's return address, rbx and rbp, in its switch frame.
        ".cfi_offset rip, -24",
        ".cfi_offset rbx, -16",
        ".cfi_offset rbp, -8",
        // 2. Unless the header says the fiber shares the thread's control state: store
        //    the resumer's below its frame, as `suspend` does, and load the initial
        //    state if it differs.
        "test byte ptr [rsi - {flags}], {shared}",
        "jnz 2f",
        "stmxcsr [rsp - 8]",
        "fnstcw [rsp - 4]",
        "mov eax, [rsp - 8]",
        "xor eax, [rdx + 8]",
        "test eax, 0xFFC0",
        "jnz 4f",
        "movzx eax, word ptr [rsp - 4]",
        "cmp ax, [rdx + 12]",
        "jne 4f",
        // 3. Load the entry function and the data pointer, then move to the frame top.
        //    Loading after the move would read 8 and 16 bytes below rsp, which the red
        //    zone keeps from signal frames here but not on riscv64 or aarch64; this order,
        //    the same on all three, leans on no red zone.
        "2:",
        "mov rax, [rdx + 16]",
        "mov rcx, [rdx + 24]",
        "lea rsp, [rdx + 32]",
        // 4. Push a return address into this function for the unwinder and jump to
        //    `entry(rdi, rsi, data)`. rbp = 0 ends frame-pointer chains.
        "mov rdx, rcx",
        "xor ebp, ebp",
        "lea rcx, [rip + 3f]",
        "push rcx",
        "jmp rax",
        // `entry` never returns; "return address - 1", where unwinders look up this
        // frame, is the last byte of the `jmp`, inside this function.
        "3:",
        "ud2",
        "4:",
        "ldmxcsr [rdx + 8]",
        "fldcw [rdx + 12]",
        "jmp 2b",
        ".cfi_endproc",
        parent_link = const PARENT_LINK,
        flags = const FLAGS,
        shared = const FLAG_SHARED_FLOAT_CONTROL,
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
        float_control_word(),
        entry as usize,
        data as usize,
    ];
    // SAFETY: the caller guarantees INITIAL_FRAME_SIZE writable bytes below `frame_top`,
    // which is 16-byte and so word aligned.
    unsafe {
        let sp = frame_top.sub(INITIAL_FRAME_SIZE);
        sp.cast::<[usize; INITIAL_FRAME_SIZE / 8]>().write(words);
        sp
    }
}

/// The running thread's MXCSR in bits 0-31 and x87 control word in bits 32-47, as the
/// switch frames store them.
fn float_control_word() -> usize {
    let mut slot = [0u16; 4];
    // SAFETY: stmxcsr writes 4 bytes at slot[0..2] and fnstcw 2 bytes at slot[2]; both lie
    // inside `slot`, which is valid for writes and aligned for both stores.
    unsafe {
        asm!(
            "stmxcsr [{p}]",
            "fnstcw [{p} + 4]",
            p = in(reg) slot.as_mut_ptr(),
            options(nostack, preserves_flags),
        );
    }
    let mxcsr = slot[0] as usize | (slot[1] as usize) << 16;
    mxcsr | (slot[2] as usize) << 32
}
