//! Valgrind client requests that tell Valgrind where the stacks are, so it does not take a
//! switch for a wild stack-pointer move. Outside Valgrind each request is a few no-op
//! instructions that return the default.

/// `VG_USERREQ__STACK_REGISTER` from valgrind.h.
const STACK_REGISTER: usize = 0x1501;
/// `VG_USERREQ__STACK_DEREGISTER` from valgrind.h.
const STACK_DEREGISTER: usize = 0x1502;

/// Registers `[bottom, top)` as a stack; returns Valgrind's id for it (0 outside).
pub(super) fn stack_register(bottom: *mut u8, top: *mut u8) -> usize {
    // Valgrind takes the highest addressable byte, not one past it.
    request(
        0,
        [STACK_REGISTER, bottom as usize, top as usize - 1, 0, 0, 0],
    )
}

/// Forgets a stack registered by [`stack_register`].
pub(super) fn stack_deregister(id: usize) {
    if id != 0 {
        request(0, [STACK_DEREGISTER, id, 0, 0, 0, 0]);
    }
}

/// Issues a client request: the magic preamble (rotations that add up to no change),
/// then the marker instruction. Valgrind's JIT recognises the sequence and answers in
/// the result register; on a real CPU the sequence does nothing and `default` comes back.
#[cfg(target_arch = "x86_64")]
fn request(default: usize, args: [usize; 6]) -> usize {
    let result;
    // SAFETY: rdi is rotated by 3+13+61+51 = 128 bits, back to its value; `xchg rbx, rbx`
    // changes nothing. Under Valgrind, rax points at `args`, which lives across the asm.
    unsafe {
        core::arch::asm!(
            "rol rdi, 3", "rol rdi, 13", "rol rdi, 61", "rol rdi, 51",
            "xchg rbx, rbx",
            inout("rdx") default => result,
            in("rax") args.as_ptr(),
            inout("rdi") 0usize => _,
            options(nostack),
        );
    }
    result
}

/// As the x86_64 version, with the AArch64 preamble (x12 rotated by 128 bits) and marker.
#[cfg(target_arch = "aarch64")]
fn request(default: usize, args: [usize; 6]) -> usize {
    let result;
    // SAFETY: x12 is rotated by 3+13+51+61 = 128 bits, back to its value;
    // `orr x10, x10, x10` changes nothing. Under Valgrind, x4 points at `args`.
    unsafe {
        core::arch::asm!(
            "ror x12, x12, #3", "ror x12, x12, #13", "ror x12, x12, #51", "ror x12, x12, #61",
            "orr x10, x10, x10",
            inout("x3") default => result,
            in("x4") args.as_ptr(),
            inout("x12") 0usize => _,
            options(nostack),
        );
    }
    result
}

/// The Valgrind release on this project's Debian has no riscv64 port; nothing to tell.
#[cfg(target_arch = "riscv64")]
fn request(default: usize, _args: [usize; 6]) -> usize {
    default
}
