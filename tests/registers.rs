//! Every callee-saved register survives a fiber switch, on both sides of it.
//!
//! # How
//!
//! [`call_with_pattern`] saves the caller's callee-saved registers by hand, loads a
//! pattern derived from a seed into every one of them, calls a function, stores what the
//! registers hold when it returns, and restores the caller's values. The function it calls
//! either resumes a fiber (on the resumer's side) or suspends one (on the fiber's side), so
//! while one side's pattern sits in the registers, the other side loads its own pattern and
//! switches back. Each side and each round uses a different seed, so a register that the
//! switch forgets, swaps or restores from the wrong frame comes back with the other side's
//! value and is reported by name.
//!
//! | target  | registers checked                                                      |
//! |---------|------------------------------------------------------------------------|
//! | x86_64  | rbx, rbp, r12-r15, MXCSR bits 6-15, x87 control word (masks, PC, RC)   |
//! | riscv64 | s0-s11, fs0-fs11 (gp and tp are never touched)                         |
//! | aarch64 | d8-d15, x19-x29 (x18 is never touched)                                 |
//!
//! The checker itself is checked: a callee that clobbers every callee-saved register, or
//! one of them, must be reported, so these tests cannot pass by checking nothing.
//!
//! A last test needs no assembly: values computed from `black_box` inputs stay live across
//! `suspend` and `resume`, where the compiler keeps some of them in callee-saved registers.
//!
//! # Unwinding
//!
//! The functions called through the pattern are `extern "C"`: a panic inside them aborts
//! instead of unwinding through the assembly. So no test drops a fiber that is suspended
//! inside [`suspend_with_pattern`] (its forced unwind would start there); mismatches are
//! collected and asserted only once every fiber has finished.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::hint::black_box;
use std::panic;
use std::ptr;

use green::fiber::{Builder, Fiber, FloatControl, Resume, Suspender};

/// Switch round trips per test: fewer under QEMU, where a switch is ~10x slower.
const ROUNDS: usize = if cfg!(target_arch = "x86_64") {
    5000
} else {
    500
};

/// A function called with every callee-saved register holding a pattern.
///
/// It receives the `ctx` pointer given to [`call_with_pattern`].
type Callee = unsafe extern "C" fn(ctx: *mut u8);

/// One value per register in [`arch::NAMES`], in that order.
type Registers = [u64; arch::COUNT];

#[cfg(target_arch = "x86_64")]
mod arch {
    //! x86_64 System V: rbx, rbp, r12-r15 and the floating-point control state.
    //!
    //! The patterns unmask floating-point exceptions at random. That is safe because no
    //! floating-point arithmetic runs while a pattern is loaded (only the switch and the
    //! fiber bookkeeping), and because the x87 status flags are cleared first: with no
    //! exception pending, `fldcw` cannot raise one.

    use super::{Callee, Registers, pattern_word};

    /// Registers checked.
    pub const COUNT: usize = 8;

    /// Mismatch bits of the registers that a fiber sharing its thread's floating-point
    /// control state shares with its resumer: MXCSR and the x87 control word.
    pub const SHARED_FLOAT_CONTROL: u64 = 0b1100_0000;

    /// Register names, by index in [`Registers`] and bit in a mismatch mask.
    pub const NAMES: [&str; COUNT] = ["rbx", "rbp", "r12", "r13", "r14", "r15", "mxcsr", "x87 cw"];

    /// Bits compared per register: MXCSR control bits 6-15 (its status flags 0-5 are
    /// caller-saved), and the x87 exception masks, precision and rounding control.
    pub const COMPARED_BITS: Registers = [!0, !0, !0, !0, !0, !0, 0xFFC0, 0x0F3F];

    /// The register [`clobber_one`] overwrites.
    pub const CLOBBERED_ONE: &str = "r13";

    /// The pattern for `seed`. The rounding mode of both units is `seed % 4`, so sides
    /// whose seeds differ in their low two bits always differ in rounding mode.
    pub fn pattern(seed: u64) -> Registers {
        let mut values: Registers = [0; COUNT];
        for (index, value) in values.iter_mut().enumerate().take(6) {
            *value = pattern_word(seed, index);
        }
        let random = pattern_word(seed, 6);
        let rounding = seed & 3;
        // MXCSR: DAZ, exception masks and FZ at random, rounding from the seed, no flags.
        values[6] = (random & 0x9FC0) | rounding << 13;
        // x87: masks at random, bit 6 (reads as 1), precision 00, 10 or 11 (01 is
        // reserved), rounding from the seed.
        let precision = [0b00, 0b10, 0b11][(random >> 16) as usize % 3];
        values[7] = (random >> 32 & 0x3F) | 0x40 | precision << 8 | rounding << 10;
        values
    }

    /// Saves the caller's callee-saved state, loads `pattern`, calls `f(ctx)`, stores the
    /// callee-saved state found after it in `observed`, and restores the caller's.
    ///
    /// # Safety
    ///
    /// `f(ctx)` must be sound to call. `f` may leave any callee-saved register or the
    /// floating-point control state changed: that is what this function detects.
    pub unsafe fn load_call_observe(
        pattern: &Registers,
        observed: &mut Registers,
        f: Callee,
        ctx: *mut u8,
    ) {
        // SAFETY: the block saves rbx, rbp, r12-r15, MXCSR and the x87 control word on the
        // stack and restores them before it ends, so the compiler's values survive; rbx and
        // rbp cannot be operands, hence the hand-written saves. The stack is 16-byte
        // aligned on entry (no `nostack`), and 6 pushes plus 16 bytes keep it so for the
        // call. `pattern` and `observed` are valid for COUNT words; the caller vouches
        // for `f(ctx)`; every other register `f` may change is clobbered by the C ABI.
        unsafe {
            core::arch::asm!(
                // 1. Save the caller's callee-saved state.
                "push rbp",
                "push rbx",
                "push r12",
                "push r13",
                "push r14",
                "push r15",
                "sub rsp, 16",
                "stmxcsr [rsp]",
                "fnstcw [rsp + 4]",
                // `observed`, for after the call, when rdx is gone.
                "mov [rsp + 8], rdx",
                // 2. Load the pattern. No pending x87 exception may meet its masks.
                "fnclex",
                "ldmxcsr [rax + 48]",
                "fldcw [rax + 56]",
                "mov rbx, [rax]",
                "mov rbp, [rax + 8]",
                "mov r12, [rax + 16]",
                "mov r13, [rax + 24]",
                "mov r14, [rax + 32]",
                "mov r15, [rax + 40]",
                // 3. Call `f(ctx)`: ctx is already in rdi.
                "call rsi",
                // 4. Record what came back.
                "mov rax, [rsp + 8]",
                "mov [rax], rbx",
                "mov [rax + 8], rbp",
                "mov [rax + 16], r12",
                "mov [rax + 24], r13",
                "mov [rax + 32], r14",
                "mov [rax + 40], r15",
                "stmxcsr [rax + 48]",
                "fnstcw [rax + 56]",
                // 5. Restore the caller's state.
                "ldmxcsr [rsp]",
                "fldcw [rsp + 4]",
                "add rsp, 16",
                "pop r15",
                "pop r14",
                "pop r13",
                "pop r12",
                "pop rbx",
                "pop rbp",
                in("rax") pattern.as_ptr(),
                in("rdx") observed.as_mut_ptr(),
                in("rsi") f,
                in("rdi") ctx,
                clobber_abi("C"),
            );
        }
    }

    /// Breaks the ABI on purpose: inverts every callee-saved register and flips the
    /// rounding mode and exception masks of both floating-point units.
    #[unsafe(naked)]
    pub unsafe extern "C" fn clobber_all(_ctx: *mut u8) {
        core::arch::naked_asm!(
            "not rbx",
            "not rbp",
            "not r12",
            "not r13",
            "not r14",
            "not r15",
            "sub rsp, 8",
            "stmxcsr [rsp]",
            "xor dword ptr [rsp], 0x7F80",
            "ldmxcsr [rsp]",
            "fnstcw [rsp + 4]",
            "xor word ptr [rsp + 4], 0x0C3F",
            "fldcw [rsp + 4]",
            "add rsp, 8",
            "ret",
        )
    }

    /// Breaks the ABI on purpose: inverts r13 alone.
    #[unsafe(naked)]
    pub unsafe extern "C" fn clobber_one(_ctx: *mut u8) {
        core::arch::naked_asm!("not r13", "ret")
    }
}

#[cfg(target_arch = "riscv64")]
mod arch {
    //! riscv64 LP64D: s0-s11 and fs0-fs11. gp and tp are never touched.
    //!
    //! The FP loads and stores sit inside `.option arch, +d`, which some builds need to
    //! assemble them (rust-lang/rust#80608). FP registers move as raw bits: `fld`, `fsd`
    //! and `fmv` never canonicalise NaNs.

    use super::{Callee, Registers, pattern_word};

    /// Registers checked.
    pub const COUNT: usize = 24;

    /// Mismatch bits of the registers a fiber sharing its thread's floating-point control
    /// state shares with its resumer: none (`fcsr` is not among the registers checked).
    pub const SHARED_FLOAT_CONTROL: u64 = 0;

    /// Register names, by index in [`Registers`] and bit in a mismatch mask.
    pub const NAMES: [&str; COUNT] = [
        "s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7", "s8", "s9", "s10", "s11", "fs0", "fs1",
        "fs2", "fs3", "fs4", "fs5", "fs6", "fs7", "fs8", "fs9", "fs10", "fs11",
    ];

    /// Bits compared per register: all 64 of each.
    pub const COMPARED_BITS: Registers = [!0; COUNT];

    /// The register [`clobber_one`] overwrites.
    pub const CLOBBERED_ONE: &str = "s7";

    /// The pattern for `seed`.
    pub fn pattern(seed: u64) -> Registers {
        std::array::from_fn(|index| pattern_word(seed, index))
    }

    /// Saves the caller's callee-saved registers, loads `pattern`, calls `f(ctx)`, stores
    /// the callee-saved registers found after it in `observed`, and restores the caller's.
    ///
    /// # Safety
    ///
    /// `f(ctx)` must be sound to call. `f` may leave any callee-saved register changed:
    /// that is what this function detects.
    pub unsafe fn load_call_observe(
        pattern: &Registers,
        observed: &mut Registers,
        f: Callee,
        ctx: *mut u8,
    ) {
        // SAFETY: the block saves s0-s11 and fs0-fs11 in a 208-byte frame (a multiple of
        // 16, so sp stays aligned for the call) and restores them before it ends; s0 and
        // s1 cannot be operands, hence the hand-written saves. `pattern` and `observed` are
        // valid for COUNT words; the caller vouches for `f(ctx)`; ra and every other
        // register `f` may change is clobbered by the C ABI.
        unsafe {
            core::arch::asm!(
                // 1. Save the caller's callee-saved registers, and `observed` for later.
                "addi sp, sp, -208",
                "sd s0, 0(sp)",
                "sd s1, 8(sp)",
                "sd s2, 16(sp)",
                "sd s3, 24(sp)",
                "sd s4, 32(sp)",
                "sd s5, 40(sp)",
                "sd s6, 48(sp)",
                "sd s7, 56(sp)",
                "sd s8, 64(sp)",
                "sd s9, 72(sp)",
                "sd s10, 80(sp)",
                "sd s11, 88(sp)",
                ".option push",
                ".option arch, +d",
                "fsd fs0, 96(sp)",
                "fsd fs1, 104(sp)",
                "fsd fs2, 112(sp)",
                "fsd fs3, 120(sp)",
                "fsd fs4, 128(sp)",
                "fsd fs5, 136(sp)",
                "fsd fs6, 144(sp)",
                "fsd fs7, 152(sp)",
                "fsd fs8, 160(sp)",
                "fsd fs9, 168(sp)",
                "fsd fs10, 176(sp)",
                "fsd fs11, 184(sp)",
                ".option pop",
                "sd a2, 192(sp)",
                // 2. Load the pattern.
                "ld s0, 0(a1)",
                "ld s1, 8(a1)",
                "ld s2, 16(a1)",
                "ld s3, 24(a1)",
                "ld s4, 32(a1)",
                "ld s5, 40(a1)",
                "ld s6, 48(a1)",
                "ld s7, 56(a1)",
                "ld s8, 64(a1)",
                "ld s9, 72(a1)",
                "ld s10, 80(a1)",
                "ld s11, 88(a1)",
                ".option push",
                ".option arch, +d",
                "fld fs0, 96(a1)",
                "fld fs1, 104(a1)",
                "fld fs2, 112(a1)",
                "fld fs3, 120(a1)",
                "fld fs4, 128(a1)",
                "fld fs5, 136(a1)",
                "fld fs6, 144(a1)",
                "fld fs7, 152(a1)",
                "fld fs8, 160(a1)",
                "fld fs9, 168(a1)",
                "fld fs10, 176(a1)",
                "fld fs11, 184(a1)",
                ".option pop",
                // 3. Call `f(ctx)`: ctx is already in a0.
                "jalr a3",
                // 4. Record what came back.
                "ld t0, 192(sp)",
                "sd s0, 0(t0)",
                "sd s1, 8(t0)",
                "sd s2, 16(t0)",
                "sd s3, 24(t0)",
                "sd s4, 32(t0)",
                "sd s5, 40(t0)",
                "sd s6, 48(t0)",
                "sd s7, 56(t0)",
                "sd s8, 64(t0)",
                "sd s9, 72(t0)",
                "sd s10, 80(t0)",
                "sd s11, 88(t0)",
                ".option push",
                ".option arch, +d",
                "fsd fs0, 96(t0)",
                "fsd fs1, 104(t0)",
                "fsd fs2, 112(t0)",
                "fsd fs3, 120(t0)",
                "fsd fs4, 128(t0)",
                "fsd fs5, 136(t0)",
                "fsd fs6, 144(t0)",
                "fsd fs7, 152(t0)",
                "fsd fs8, 160(t0)",
                "fsd fs9, 168(t0)",
                "fsd fs10, 176(t0)",
                "fsd fs11, 184(t0)",
                // 5. Restore the caller's registers.
                "fld fs0, 96(sp)",
                "fld fs1, 104(sp)",
                "fld fs2, 112(sp)",
                "fld fs3, 120(sp)",
                "fld fs4, 128(sp)",
                "fld fs5, 136(sp)",
                "fld fs6, 144(sp)",
                "fld fs7, 152(sp)",
                "fld fs8, 160(sp)",
                "fld fs9, 168(sp)",
                "fld fs10, 176(sp)",
                "fld fs11, 184(sp)",
                ".option pop",
                "ld s0, 0(sp)",
                "ld s1, 8(sp)",
                "ld s2, 16(sp)",
                "ld s3, 24(sp)",
                "ld s4, 32(sp)",
                "ld s5, 40(sp)",
                "ld s6, 48(sp)",
                "ld s7, 56(sp)",
                "ld s8, 64(sp)",
                "ld s9, 72(sp)",
                "ld s10, 80(sp)",
                "ld s11, 88(sp)",
                "addi sp, sp, 208",
                in("a0") ctx,
                in("a1") pattern.as_ptr(),
                in("a2") observed.as_mut_ptr(),
                in("a3") f,
                clobber_abi("C"),
            );
        }
    }

    /// Breaks the ABI on purpose: inverts every callee-saved register.
    #[unsafe(naked)]
    pub unsafe extern "C" fn clobber_all(_ctx: *mut u8) {
        core::arch::naked_asm!(
            "not s0, s0",
            "not s1, s1",
            "not s2, s2",
            "not s3, s3",
            "not s4, s4",
            "not s5, s5",
            "not s6, s6",
            "not s7, s7",
            "not s8, s8",
            "not s9, s9",
            "not s10, s10",
            "not s11, s11",
            ".option push",
            ".option arch, +d",
            "fmv.x.d t0, fs0",
            "not t0, t0",
            "fmv.d.x fs0, t0",
            "fmv.x.d t0, fs1",
            "not t0, t0",
            "fmv.d.x fs1, t0",
            "fmv.x.d t0, fs2",
            "not t0, t0",
            "fmv.d.x fs2, t0",
            "fmv.x.d t0, fs3",
            "not t0, t0",
            "fmv.d.x fs3, t0",
            "fmv.x.d t0, fs4",
            "not t0, t0",
            "fmv.d.x fs4, t0",
            "fmv.x.d t0, fs5",
            "not t0, t0",
            "fmv.d.x fs5, t0",
            "fmv.x.d t0, fs6",
            "not t0, t0",
            "fmv.d.x fs6, t0",
            "fmv.x.d t0, fs7",
            "not t0, t0",
            "fmv.d.x fs7, t0",
            "fmv.x.d t0, fs8",
            "not t0, t0",
            "fmv.d.x fs8, t0",
            "fmv.x.d t0, fs9",
            "not t0, t0",
            "fmv.d.x fs9, t0",
            "fmv.x.d t0, fs10",
            "not t0, t0",
            "fmv.d.x fs10, t0",
            "fmv.x.d t0, fs11",
            "not t0, t0",
            "fmv.d.x fs11, t0",
            ".option pop",
            "ret",
        )
    }

    /// Breaks the ABI on purpose: inverts s7 alone.
    #[unsafe(naked)]
    pub unsafe extern "C" fn clobber_one(_ctx: *mut u8) {
        core::arch::naked_asm!("not s7, s7", "ret")
    }
}

#[cfg(target_arch = "aarch64")]
mod arch {
    //! aarch64 AAPCS64: d8-d15 and x19-x29. x18 is never touched.
    //!
    //! Only the low 64 bits of v8-v15 are callee-saved, so only those are compared.

    use super::{Callee, Registers, pattern_word};

    /// Registers checked.
    pub const COUNT: usize = 19;

    /// Mismatch bits of the registers a fiber sharing its thread's floating-point control
    /// state shares with its resumer: none (FPCR is not among the registers checked).
    pub const SHARED_FLOAT_CONTROL: u64 = 0;

    /// Register names, by index in [`Registers`] and bit in a mismatch mask. The FP
    /// registers come first so that both groups pair up for `ldp`/`stp`.
    pub const NAMES: [&str; COUNT] = [
        "d8", "d9", "d10", "d11", "d12", "d13", "d14", "d15", "x19", "x20", "x21", "x22", "x23",
        "x24", "x25", "x26", "x27", "x28", "x29",
    ];

    /// Bits compared per register: all 64 of each.
    pub const COMPARED_BITS: Registers = [!0; COUNT];

    /// The register [`clobber_one`] overwrites.
    pub const CLOBBERED_ONE: &str = "x23";

    /// The pattern for `seed`.
    pub fn pattern(seed: u64) -> Registers {
        std::array::from_fn(|index| pattern_word(seed, index))
    }

    /// Saves the caller's callee-saved registers, loads `pattern`, calls `f(ctx)`, stores
    /// the callee-saved registers found after it in `observed`, and restores the caller's.
    ///
    /// # Safety
    ///
    /// `f(ctx)` must be sound to call. `f` may leave any callee-saved register changed:
    /// that is what this function detects.
    pub unsafe fn load_call_observe(
        pattern: &Registers,
        observed: &mut Registers,
        f: Callee,
        ctx: *mut u8,
    ) {
        // SAFETY: the block saves d8-d15 and x19-x29 in a 160-byte frame (a multiple of 16,
        // so sp stays aligned for the call) and restores them before it ends; x19 and x29
        // cannot be operands, hence the hand-written saves. `pattern` and `observed` are
        // valid for COUNT words; the caller vouches for `f(ctx)`; x30 and every other
        // register `f` may change is clobbered by the C ABI.
        unsafe {
            core::arch::asm!(
                // 1. Save the caller's callee-saved registers, and `observed` for later.
                "sub sp, sp, #160",
                "stp d8, d9, [sp, #0]",
                "stp d10, d11, [sp, #16]",
                "stp d12, d13, [sp, #32]",
                "stp d14, d15, [sp, #48]",
                "stp x19, x20, [sp, #64]",
                "stp x21, x22, [sp, #80]",
                "stp x23, x24, [sp, #96]",
                "stp x25, x26, [sp, #112]",
                "stp x27, x28, [sp, #128]",
                "stp x29, x2, [sp, #144]",
                // 2. Load the pattern.
                "ldp d8, d9, [x1, #0]",
                "ldp d10, d11, [x1, #16]",
                "ldp d12, d13, [x1, #32]",
                "ldp d14, d15, [x1, #48]",
                "ldp x19, x20, [x1, #64]",
                "ldp x21, x22, [x1, #80]",
                "ldp x23, x24, [x1, #96]",
                "ldp x25, x26, [x1, #112]",
                "ldp x27, x28, [x1, #128]",
                "ldr x29, [x1, #144]",
                // 3. Call `f(ctx)`: ctx is already in x0.
                "blr x3",
                // 4. Record what came back.
                "ldr x9, [sp, #152]",
                "stp d8, d9, [x9, #0]",
                "stp d10, d11, [x9, #16]",
                "stp d12, d13, [x9, #32]",
                "stp d14, d15, [x9, #48]",
                "stp x19, x20, [x9, #64]",
                "stp x21, x22, [x9, #80]",
                "stp x23, x24, [x9, #96]",
                "stp x25, x26, [x9, #112]",
                "stp x27, x28, [x9, #128]",
                "str x29, [x9, #144]",
                // 5. Restore the caller's registers.
                "ldp d8, d9, [sp, #0]",
                "ldp d10, d11, [sp, #16]",
                "ldp d12, d13, [sp, #32]",
                "ldp d14, d15, [sp, #48]",
                "ldp x19, x20, [sp, #64]",
                "ldp x21, x22, [sp, #80]",
                "ldp x23, x24, [sp, #96]",
                "ldp x25, x26, [sp, #112]",
                "ldp x27, x28, [sp, #128]",
                "ldr x29, [sp, #144]",
                "add sp, sp, #160",
                in("x0") ctx,
                in("x1") pattern.as_ptr(),
                in("x2") observed.as_mut_ptr(),
                in("x3") f,
                clobber_abi("C"),
            );
        }
    }

    /// Breaks the ABI on purpose: inverts every callee-saved register.
    #[unsafe(naked)]
    pub unsafe extern "C" fn clobber_all(_ctx: *mut u8) {
        core::arch::naked_asm!(
            "fmov x9, d8",
            "mvn x9, x9",
            "fmov d8, x9",
            "fmov x9, d9",
            "mvn x9, x9",
            "fmov d9, x9",
            "fmov x9, d10",
            "mvn x9, x9",
            "fmov d10, x9",
            "fmov x9, d11",
            "mvn x9, x9",
            "fmov d11, x9",
            "fmov x9, d12",
            "mvn x9, x9",
            "fmov d12, x9",
            "fmov x9, d13",
            "mvn x9, x9",
            "fmov d13, x9",
            "fmov x9, d14",
            "mvn x9, x9",
            "fmov d14, x9",
            "fmov x9, d15",
            "mvn x9, x9",
            "fmov d15, x9",
            "mvn x19, x19",
            "mvn x20, x20",
            "mvn x21, x21",
            "mvn x22, x22",
            "mvn x23, x23",
            "mvn x24, x24",
            "mvn x25, x25",
            "mvn x26, x26",
            "mvn x27, x27",
            "mvn x28, x28",
            "mvn x29, x29",
            "ret",
        )
    }

    /// Breaks the ABI on purpose: inverts x23 alone.
    #[unsafe(naked)]
    pub unsafe extern "C" fn clobber_one(_ctx: *mut u8) {
        core::arch::naked_asm!("mvn x23, x23", "ret")
    }
}

/// Word `index` of the pattern for `seed`: splitmix64 of `seed * 64 + index`.
///
/// splitmix64 is a bijection, so for seeds below 2^58 no two (seed, register) pairs share
/// a word: a register restored from another side, another round or another register is
/// always caught.
fn pattern_word(seed: u64, index: usize) -> u64 {
    let mut z = seed
        .wrapping_mul(64)
        .wrapping_add(index as u64)
        .wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Bit `i` set where register `i` of `observed` differs from `expected` in a compared bit.
fn mismatches(expected: &Registers, observed: &Registers) -> u64 {
    (0..arch::COUNT)
        .filter(|&i| (expected[i] ^ observed[i]) & arch::COMPARED_BITS[i] != 0)
        .fold(0, |mask, i| mask | 1 << i)
}

/// The mask with every checked register set.
const ALL_REGISTERS: u64 = (1 << arch::COUNT) - 1;

/// The names of the registers set in `mask`.
fn names(mask: u64) -> Vec<&'static str> {
    (0..arch::COUNT)
        .filter(|&i| mask & 1 << i != 0)
        .map(|i| arch::NAMES[i])
        .collect()
}

/// Calls `f(ctx)` with every callee-saved register holding the pattern for `seed`, and
/// returns the mask of registers that did not hold it any more when `f` returned.
///
/// # Safety
///
/// `f(ctx)` must be sound to call.
unsafe fn call_with_pattern(seed: u64, f: Callee, ctx: *mut u8) -> u64 {
    let expected = arch::pattern(seed);
    let mut observed: Registers = [0; arch::COUNT];
    // SAFETY: the caller vouches for `f(ctx)`; both arrays outlive the call.
    unsafe { arch::load_call_observe(&expected, &mut observed, f, ctx) };
    mismatches(&expected, &observed)
}

/// Who makes a patterned call; part of the seed, so every side loads different values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    /// The thread's own stack, resuming a fiber.
    Resumer = 0,
    /// A fiber, suspending itself.
    Fiber = 1,
    /// A fiber resuming a fiber of its own.
    NestedResumer = 2,
    /// A fiber resumed by a fiber, suspending itself.
    NestedFiber = 3,
}

/// Every side, for checks over all of them.
const SIDES: [Side; 4] = [
    Side::Resumer,
    Side::Fiber,
    Side::NestedResumer,
    Side::NestedFiber,
];

/// The seed of `side` in `round`. Its low two bits are the side: on x86_64 they pick the
/// rounding mode, so every side runs under a rounding mode of its own.
fn seed(round: usize, side: Side) -> u64 {
    (round as u64) << 2 | side as u64
}

/// A patterned call that found registers changed.
#[derive(Debug)]
struct Mismatch {
    /// Who made the call.
    side: Side,
    /// The round it was made in.
    round: usize,
    /// Bit `i` set if register `i` came back changed.
    mask: u64,
}

/// Adds a [`Mismatch`] to `found` if `mask` is not empty.
fn record(found: &mut Vec<Mismatch>, side: Side, round: usize, mask: u64) {
    if mask != 0 {
        found.push(Mismatch { side, round, mask });
    }
}

/// Fails with the first mismatches, by register name, if there are any.
fn assert_no_mismatches(found: &[Mismatch]) {
    let first: Vec<String> = found
        .iter()
        .take(10)
        .map(|m| format!("round {} on {:?}: {:?}", m.round, m.side, names(m.mask)))
        .collect();
    assert!(
        found.is_empty(),
        "{} switches changed callee-saved registers; first:\n{}",
        found.len(),
        first.join("\n")
    );
}

/// What [`resume_fiber`] reads and writes through its `ctx`.
struct ResumeCall<'a, T> {
    /// The fiber to resume.
    fiber: &'a mut Fiber<T>,
    /// What `resume` returned.
    outcome: Option<Resume<T>>,
}

/// Resumes the fiber of the [`ResumeCall`] at `ctx` and stores the outcome there.
///
/// # Safety
///
/// `ctx` must point at a live `ResumeCall<T>` whose fiber has not finished.
unsafe extern "C" fn resume_fiber<T>(ctx: *mut u8) {
    // SAFETY: as the caller guarantees; nothing else uses the `ResumeCall` meanwhile.
    let call = unsafe { &mut *ctx.cast::<ResumeCall<'_, T>>() };
    call.outcome = Some(call.fiber.resume());
}

/// Suspends the fiber whose [`Suspender`] is at `ctx`.
///
/// # Safety
///
/// `ctx` must point at the `Suspender` of the fiber running this, and the fiber must not
/// be dropped while suspended here: its forced unwind would panic in an `extern "C"`
/// function and abort.
unsafe extern "C" fn suspend_fiber(ctx: *mut u8) {
    // SAFETY: as the caller guarantees.
    let suspender = unsafe { &*ctx.cast::<Suspender>() };
    suspender.suspend();
}

/// Resumes `fiber` with the pattern for `seed` in every callee-saved register; returns
/// the mismatch mask and what `resume` returned.
///
/// # Panics
///
/// Panics if the fiber has finished (checked before the switch).
fn resume_with_pattern<T>(fiber: &mut Fiber<T>, seed: u64) -> (u64, Resume<T>) {
    assert!(!fiber.is_finished(), "resumed a finished fiber");
    let mut call = ResumeCall {
        fiber,
        outcome: None,
    };
    // SAFETY: `call` is a live `ResumeCall<T>` with an unfinished fiber, borrowed by
    // nothing else until the call returns.
    let mask = unsafe { call_with_pattern(seed, resume_fiber::<T>, (&raw mut call).cast()) };
    (mask, call.outcome.expect("resume_fiber stores an outcome"))
}

/// Suspends the running fiber with the pattern for `seed` in every callee-saved register;
/// returns the mismatch mask. The fiber must not be dropped while suspended here.
fn suspend_with_pattern(suspender: &Suspender, seed: u64) -> u64 {
    // SAFETY: `suspender` is the running fiber's own (it is only lent to its closure);
    // every test runs its fibers to completion.
    unsafe {
        call_with_pattern(
            seed,
            suspend_fiber,
            ptr::from_ref(suspender).cast_mut().cast(),
        )
    }
}

/// A fiber that suspends [`ROUNDS`] times with the patterns of `side`, then returns what
/// it found.
fn patterned_fiber(side: Side) -> Fiber<Vec<Mismatch>> {
    patterned_fiber_with(side, FloatControl::Saved)
}

/// [`patterned_fiber`] with the given treatment of its floating-point control state.
fn patterned_fiber_with(side: Side, float_control: FloatControl) -> Fiber<Vec<Mismatch>> {
    let builder = Builder::new().float_control(float_control);
    // SAFETY: the tests do not leak their fibers while started.
    unsafe {
        builder.build(move |suspender: &Suspender| {
            let mut found = Vec::new();
            for round in 0..ROUNDS {
                let mask = suspend_with_pattern(suspender, seed(round, side));
                record(&mut found, side, round, mask);
            }
            found
        })
    }
    .unwrap()
}

/// Resumes `fiber` with the patterns of `side` until it finishes, expecting [`ROUNDS`]
/// suspensions; returns the mismatches of both sides.
fn run_patterned(fiber: &mut Fiber<Vec<Mismatch>>, side: Side) -> Vec<Mismatch> {
    let mut found = Vec::new();
    let mut round = 0;
    let from_fiber = loop {
        let (mask, outcome) = resume_with_pattern(fiber, seed(round, side));
        record(&mut found, side, round, mask);
        match outcome {
            Resume::Yielded => round += 1,
            Resume::Finished(from_fiber) => break from_fiber,
            Resume::Panicked(payload) => panic::resume_unwind(payload),
        }
    };
    assert_eq!(
        round, ROUNDS,
        "the fiber suspended a different number of times"
    );
    found.extend(from_fiber);
    found
}

#[test]
fn checker_finds_no_mismatch_across_a_call_that_keeps_the_abi() {
    extern "C" fn keeps_abi(_ctx: *mut u8) {
        black_box(());
    }
    for round in 0..100 {
        for side in SIDES {
            // SAFETY: `keeps_abi` ignores its argument.
            let mask = unsafe { call_with_pattern(seed(round, side), keeps_abi, ptr::null_mut()) };
            assert_eq!(names(mask), Vec::<&str>::new(), "round {round}, {side:?}");
        }
    }
}

#[test]
fn checker_reports_every_register_a_callee_clobbers() {
    // SAFETY: `clobber_all` ignores its argument and only changes registers, which the
    // checker restores.
    let mask =
        unsafe { call_with_pattern(seed(7, Side::Fiber), arch::clobber_all, ptr::null_mut()) };
    assert_eq!(names(mask), arch::NAMES.to_vec());
    assert_eq!(mask, ALL_REGISTERS);
}

#[test]
fn checker_names_the_one_register_a_callee_clobbers() {
    // SAFETY: `clobber_one` ignores its argument and only changes one register, which the
    // checker restores.
    let mask =
        unsafe { call_with_pattern(seed(7, Side::Fiber), arch::clobber_one, ptr::null_mut()) };
    assert_eq!(names(mask), vec![arch::CLOBBERED_ONE]);
}

#[test]
fn every_side_loads_a_different_value_into_every_register() {
    for round in 0..ROUNDS {
        for (i, &a) in SIDES.iter().enumerate() {
            for &b in &SIDES[i + 1..] {
                let mask = mismatches(
                    &arch::pattern(seed(round, a)),
                    &arch::pattern(seed(round, b)),
                );
                assert_eq!(
                    mask, ALL_REGISTERS,
                    "round {round}: {a:?} and {b:?} share registers"
                );
            }
        }
    }
}

#[test]
fn callee_saved_registers_survive_every_switch_on_both_sides() {
    let mut fiber = patterned_fiber(Side::Fiber);
    let found = run_patterned(&mut fiber, Side::Resumer);
    assert_no_mismatches(&found);
}

#[test]
fn a_fiber_that_shares_float_control_keeps_every_other_callee_saved_register() {
    let mut fiber = patterned_fiber_with(Side::Fiber, FloatControl::Shared);
    let mut found = run_patterned(&mut fiber, Side::Resumer);
    // On x86_64 the two sides share MXCSR and the x87 control word, so each side finds
    // the other's there; every other register must still come back.
    for mismatch in &mut found {
        mismatch.mask &= !arch::SHARED_FLOAT_CONTROL;
    }
    found.retain(|mismatch| mismatch.mask != 0);
    assert_no_mismatches(&found);
}

#[test]
fn callee_saved_registers_survive_switches_between_nested_fibers() {
    // Each round: thread -> outer -> inner -> outer -> thread, every hop patterned.
    // SAFETY: the fiber is not leaked while started.
    let mut outer = unsafe {
        Fiber::new(|suspender: &Suspender| {
            let mut inner = patterned_fiber(Side::NestedFiber);
            let mut found = Vec::new();
            for round in 0..ROUNDS {
                let (mask, outcome) =
                    resume_with_pattern(&mut inner, seed(round, Side::NestedResumer));
                record(&mut found, Side::NestedResumer, round, mask);
                assert!(
                    matches!(outcome, Resume::Yielded),
                    "round {round}: {outcome:?}"
                );
                let mask = suspend_with_pattern(suspender, seed(round, Side::Fiber));
                record(&mut found, Side::Fiber, round, mask);
            }
            let (mask, outcome) =
                resume_with_pattern(&mut inner, seed(ROUNDS, Side::NestedResumer));
            record(&mut found, Side::NestedResumer, ROUNDS, mask);
            match outcome {
                Resume::Finished(from_inner) => found.extend(from_inner),
                Resume::Panicked(payload) => panic::resume_unwind(payload),
                Resume::Yielded => {
                    // Dropping it would unwind it from inside `suspend_fiber`, and abort.
                    // Leaked while started: its frames lend out none of the thread's
                    // thread-locals, and the test fails here anyway.
                    std::mem::forget(inner);
                    panic!("the inner fiber suspended more than {ROUNDS} times");
                }
            }
            found
        })
    }
    .unwrap();
    let found = run_patterned(&mut outer, Side::Resumer);
    assert_no_mismatches(&found);
}

/// Computes 14 integers and 14 floats from opaque copies of `seed`, runs `switch` while
/// they are live, and returns the names of those that changed. More values than any
/// target has callee-saved registers, so the compiler keeps some in those registers and
/// spills the rest to the stack.
#[inline(never)]
fn changed_across(seed: u64, switch: impl FnOnce()) -> Vec<&'static str> {
    macro_rules! live_across {
        (ints: $($int:ident = $k:literal),*; floats: $($float:ident = $m:literal),*;) => {{
            $(let $int = black_box(seed).wrapping_mul($k).rotate_left($k as u32);)*
            $(let $float = black_box(seed) as f64 * $m + $m;)*
            switch();
            let mut changed = Vec::new();
            $(
                if $int != black_box(seed).wrapping_mul($k).rotate_left($k as u32) {
                    changed.push(stringify!($int));
                }
            )*
            $(
                if $float.to_bits() != (black_box(seed) as f64 * $m + $m).to_bits() {
                    changed.push(stringify!($float));
                }
            )*
            changed
        }};
    }
    live_across! {
        ints: i0 = 3, i1 = 5, i2 = 7, i3 = 11, i4 = 13, i5 = 17, i6 = 19,
              i7 = 23, i8 = 29, i9 = 31, i10 = 37, i11 = 41, i12 = 43, i13 = 47;
        floats: f0 = 1.5, f1 = 2.25, f2 = 3.125, f3 = -4.5, f4 = 5.75, f5 = 6.0625,
                f6 = -7.25, f7 = 8.5, f8 = 9.375, f9 = -10.125, f10 = 11.5, f11 = 12.25,
                f12 = 13.0625, f13 = -14.75;
    }
}

#[test]
fn values_live_across_suspend_and_resume_keep_their_values() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(|suspender: &Suspender| {
            for round in 0..ROUNDS {
                let changed = changed_across(seed(round, Side::Fiber), || suspender.suspend());
                assert!(
                    changed.is_empty(),
                    "round {round}, in the fiber: {changed:?}"
                );
            }
        })
    }
    .unwrap();
    for round in 0..=ROUNDS {
        let mut outcome = None;
        let changed = changed_across(seed(round, Side::Resumer), || {
            outcome = Some(fiber.resume())
        });
        assert!(
            changed.is_empty(),
            "round {round}, in the resumer: {changed:?}"
        );
        match outcome.expect("the switch ran") {
            Resume::Yielded => assert!(round < ROUNDS, "the fiber suspended too often"),
            Resume::Finished(()) => assert_eq!(round, ROUNDS, "the fiber finished early"),
            Resume::Panicked(payload) => panic::resume_unwind(payload),
        }
    }
}

/// The thread's MXCSR and x87 control word.
#[cfg(target_arch = "x86_64")]
fn float_control() -> (u32, u16) {
    let mut mxcsr = 0u32;
    let mut control_word = 0u16;
    // SAFETY: each instruction stores into its own local, which is valid and aligned.
    unsafe {
        core::arch::asm!(
            "stmxcsr [{mxcsr}]",
            "fnstcw [{control_word}]",
            mxcsr = in(reg) &mut mxcsr,
            control_word = in(reg) &mut control_word,
            options(nostack, preserves_flags),
        );
    }
    (mxcsr, control_word)
}

/// Loads an MXCSR and an x87 control word, after clearing pending x87 exceptions so that
/// no unmasked one can fire.
///
/// # Safety
///
/// Both values must be valid (no reserved MXCSR bit set), and the caller must put the
/// previous state back before code that expects the default state does arithmetic.
#[cfg(target_arch = "x86_64")]
unsafe fn set_float_control(mxcsr: u32, control_word: u16) {
    // SAFETY: the caller vouches for the values and for restoring them.
    unsafe {
        core::arch::asm!(
            "fnclex",
            "ldmxcsr [{mxcsr}]",
            "fldcw [{control_word}]",
            mxcsr = in(reg) &mxcsr,
            control_word = in(reg) &control_word,
            options(nostack, preserves_flags),
        );
    }
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_new_fiber_starts_with_the_float_control_state_of_the_thread_that_made_it() {
    let original = float_control();
    // Rounding control 0b11 (toward zero) in both units while the fiber is made.
    let made_with = (original.0 | 0x6000, original.1 | 0x0C00);
    // SAFETY: only the rounding mode changes, and it is put back before any arithmetic.
    unsafe { set_float_control(made_with.0, made_with.1) };
    // SAFETY: the fiber is not leaked while started.
    let fiber = unsafe { Fiber::new(|_| float_control()) };
    // SAFETY: the state read above, unchanged.
    unsafe { set_float_control(original.0, original.1) };
    // The first resume runs the fiber under the maker's state, the last switch back
    // restores the resumer's.
    let inside = match fiber.unwrap().resume() {
        Resume::Finished(state) => state,
        Resume::Yielded => panic!("the fiber returns at once"),
        Resume::Panicked(payload) => panic::resume_unwind(payload),
    };
    let after = float_control();
    assert_eq!(
        inside.0 & 0xFFC0,
        made_with.0 & 0xFFC0,
        "MXCSR in the fiber"
    );
    assert_eq!(inside.1, made_with.1, "x87 control word in the fiber");
    assert_eq!(
        after.0 & 0xFFC0,
        original.0 & 0xFFC0,
        "MXCSR after the fiber"
    );
    assert_eq!(after.1, original.1, "x87 control word after the fiber");
}

/// A fiber flips `mxcsr_bits` of MXCSR and `control_word_bits` of the x87 control word
/// and suspends; checks that its resumer sees its own state meanwhile and the fiber its
/// own after the next resume.
#[cfg(target_arch = "x86_64")]
fn each_side_keeps_its_float_control_when_the_fiber_flips(mxcsr_bits: u32, control_word_bits: u16) {
    let original = float_control();
    let own = (original.0 ^ mxcsr_bits, original.1 ^ control_word_bits);
    let body = move |suspender: &Suspender| {
        // SAFETY: only rounding bits flip; the fiber puts the original back before it
        // returns, and does no arithmetic meanwhile.
        unsafe { set_float_control(own.0, own.1) };
        suspender.suspend();
        let after_suspend = float_control();
        // SAFETY: the state read before the fiber was made.
        unsafe { set_float_control(original.0, original.1) };
        after_suspend
    };
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe { Fiber::new(body) }.unwrap();
    assert!(matches!(fiber.resume(), Resume::Yielded));
    let resumer = float_control();
    let fiber_after = match fiber.resume() {
        Resume::Finished(state) => state,
        Resume::Yielded => panic!("the fiber suspends once"),
        Resume::Panicked(payload) => panic::resume_unwind(payload),
    };
    assert_eq!(
        resumer.0 & 0xFFC0,
        original.0 & 0xFFC0,
        "the resumer's MXCSR"
    );
    assert_eq!(resumer.1, original.1, "the resumer's x87 control word");
    assert_eq!(fiber_after.0 & 0xFFC0, own.0 & 0xFFC0, "the fiber's MXCSR");
    assert_eq!(fiber_after.1, own.1, "the fiber's x87 control word");
}

#[cfg(target_arch = "x86_64")]
#[test]
fn each_side_keeps_its_mxcsr_when_only_the_mxcsr_differs() {
    // Rounding control, bits 13-14.
    each_side_keeps_its_float_control_when_the_fiber_flips(0x6000, 0);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn each_side_keeps_its_x87_control_word_when_only_that_differs() {
    // Rounding control, bits 10-11.
    each_side_keeps_its_float_control_when_the_fiber_flips(0, 0x0C00);
}

#[cfg(target_arch = "x86_64")]
#[test]
fn a_fiber_that_shares_float_control_runs_with_the_threads_and_leaves_its_own() {
    let original = float_control();
    // Rounding toward zero (0b11) set by the resumer, down (0b01) by the fiber.
    let resumers = (original.0 | 0x6000, original.1 | 0x0C00);
    let fibers = (original.0 & !0x6000 | 0x2000, original.1 & !0x0C00 | 0x0400);
    let body = move |suspender: &Suspender| {
        let at_start = float_control();
        // SAFETY: only rounding bits change, and the resumer puts the original back
        // before any arithmetic; the fiber does none meanwhile.
        unsafe { set_float_control(fibers.0, fibers.1) };
        suspender.suspend();
        (at_start, float_control())
    };
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Builder::new()
            .float_control(FloatControl::Shared)
            .build(body)
    }
    .unwrap();
    // The state is set after the fiber was made: a shared fiber takes the thread's at
    // each resume, not its maker's.
    // SAFETY: as above.
    unsafe { set_float_control(resumers.0, resumers.1) };
    let first = fiber.resume();
    let left_by_fiber = float_control();
    // SAFETY: as above.
    unsafe { set_float_control(resumers.0, resumers.1) };
    let second = fiber.resume();
    // SAFETY: the state read at the start of the test.
    unsafe { set_float_control(original.0, original.1) };
    assert!(matches!(first, Resume::Yielded));
    let (at_start, after_suspend) = match second {
        Resume::Finished(states) => states,
        Resume::Yielded => panic!("the fiber suspends once"),
        Resume::Panicked(payload) => panic::resume_unwind(payload),
    };
    let control = |state: (u32, u16)| (state.0 & 0xFFC0, state.1);
    assert_eq!(
        control(at_start),
        control(resumers),
        "the fiber starts with the thread's"
    );
    assert_eq!(
        control(left_by_fiber),
        control(fibers),
        "the fiber's change stays"
    );
    assert_eq!(
        control(after_suspend),
        control(resumers),
        "the resumer's change reaches it"
    );
}
