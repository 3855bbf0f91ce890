//! Valgrind client requests: where the stacks are, so that Valgrind does not take a switch
//! for a wild stack-pointer move, and which recycled task blocks are free, so that
//! Memcheck reports an access to one as it would an access to freed memory. Outside
//! Valgrind each request is a few no-op instructions that return the default.

/// `VG_USERREQ__STACK_REGISTER` from valgrind.h.
const STACK_REGISTER: usize = 0x1501;
/// `VG_USERREQ__STACK_DEREGISTER` from valgrind.h.
const STACK_DEREGISTER: usize = 0x1502;

/// `VG_USERREQ__MAKE_MEM_NOACCESS` from memcheck.h (the tool's base, 'M' 'C', plus 0).
const MAKE_MEM_NOACCESS: usize = 0x4d43_0000;
/// `VG_USERREQ__MAKE_MEM_UNDEFINED` from memcheck.h (the tool's base plus 1).
const MAKE_MEM_UNDEFINED: usize = 0x4d43_0001;

/// `VG_USERREQ__GET_VBITS` from memcheck.h (the tool's base plus 8).
#[cfg(test)]
const GET_VBITS: usize = 0x4d43_0008;

/// Registers `[bottom, top)` as a stack; returns Valgrind's id for it (0 outside).
pub(crate) fn stack_register(bottom: *mut u8, top: *mut u8) -> usize {
    // Valgrind takes the highest addressable byte, not one past it.
    request(
        0,
        [STACK_REGISTER, bottom as usize, top as usize - 1, 0, 0, 0],
    )
}

/// Forgets a stack registered by [`stack_register`].
pub(crate) fn stack_deregister(id: usize) {
    if id != 0 {
        request(0, [STACK_DEREGISTER, id, 0, 0, 0, 0]);
    }
}

/// Tells Memcheck that nothing may touch the `len` bytes at `start` (a free block).
pub(crate) fn mark_no_access(start: *const u8, len: usize) {
    request(0, [MAKE_MEM_NOACCESS, start as usize, len, 0, 0, 0]);
}

/// Tells Memcheck that the `len` bytes at `start` may be written, and hold nothing
/// defined yet (a block handed out, or given back to the allocator).
pub(crate) fn mark_undefined(start: *const u8, len: usize) {
    request(0, [MAKE_MEM_UNDEFINED, start as usize, len, 0, 0, 0]);
}

/// Whether Memcheck lets the program touch the `len` bytes at `start`; `None` outside
/// Memcheck.
#[cfg(test)]
pub(crate) fn addressable(start: *const u8, len: usize) -> Option<bool> {
    let mut bits = vec![0u8; len];
    // 0: not under Valgrind; 1: copied; 3: some byte may not be touched.
    match request(
        0,
        [
            GET_VBITS,
            start as usize,
            bits.as_mut_ptr() as usize,
            len,
            0,
            0,
        ],
    ) {
        0 => None,
        result => Some(result == 1),
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
