//! Stacks reserved in batches: one `mmap` for many stacks, their guards made in the same
//! pass.
//!
//! ```text
//!   base                                                              base + count * span
//!   +-------+-----------+-------+-----------+-- ... --+-------+-----------+
//!   | guard | stack 0   | guard | stack 1   |         | guard | stack n-1 |
//!   +-------+-----------+-------+-----------+-- ... --+-------+-----------+
//!   <-------- span ----->
//! ```
//!
//! Each stack of a batch is a [`Stack`] of its own, owning `span` bytes (its guard and its
//! usable part): it can be unmapped alone (the kernel splits the mapping) or with its
//! neighbours in one call (see `pool`).
//!
//! # Guards
//!
//! Where the kernel has them (Linux 6.13 and later), a guard is a *guard region*:
//! `madvise(MADV_GUARD_INSTALL)` marks its pages in the page tables so that any access
//! faults, and the batch stays **one** memory mapping however many stacks it holds. Else
//! each guard is `mprotect`ed to `PROT_NONE` and becomes a mapping of its own: two
//! mappings a stack, as for [`Stack::new`]. Which one applies is probed once per process
//! (see [`guard_kind`]): the advice must be accepted *and* an access to the marked page
//! must fault, since an emulator (QEMU's user mode) may accept advice it does not apply.
//! `GREEN_STACK_GUARD=mprotect` in the environment forces the second kind.

use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU8, Ordering};

use super::{Charge, Stack, guard_len, map_error};

/// `MADV_GUARD_INSTALL` from Linux's `mman-common.h` (6.13); the `libc` crate may not
/// have it yet.
const MADV_GUARD_INSTALL: libc::c_int = 102;

/// How the guards of batch-made stacks are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GuardKind {
    /// A guard region (`MADV_GUARD_INSTALL`): a stack adds no mapping to its batch's one.
    Region,
    /// A `PROT_NONE` mapping (`mprotect`): each stack is two mappings.
    Protected,
}

impl GuardKind {
    /// Memory mappings a stack of this kind counts for against `vm.max_map_count`: an
    /// upper bound, since a batch whose stacks are unmapped one by one has at most one
    /// mapping per stack left (each remaining piece holds a stack).
    pub(crate) fn mappings_per_stack(self) -> usize {
        match self {
            GuardKind::Region => 1,
            GuardKind::Protected => 2,
        }
    }
}

/// The guard kind of this process, probed on first use.
pub(crate) fn guard_kind() -> GuardKind {
    /// 0: not probed yet; 1: `Region`; 2: `Protected`.
    static KIND: AtomicU8 = AtomicU8::new(0);
    match KIND.load(Ordering::Relaxed) {
        1 => GuardKind::Region,
        2 => GuardKind::Protected,
        _ => {
            let kind = probe();
            let code = if kind == GuardKind::Region { 1 } else { 2 };
            KIND.store(code, Ordering::Relaxed);
            kind
        }
    }
}

/// Whether guard regions work here: installed on a scratch page, a read of that page by
/// the kernel must fail with `EFAULT`.
fn probe() -> GuardKind {
    if std::env::var_os("GREEN_STACK_GUARD").is_some_and(|v| v == "mprotect") {
        return GuardKind::Protected;
    }
    let page = super::page_size();
    // SAFETY: a fresh anonymous private mapping at an address of the kernel's choosing.
    let scratch = unsafe {
        libc::mmap(
            ptr::null_mut(),
            page,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if scratch == libc::MAP_FAILED {
        return GuardKind::Protected;
    }
    // SAFETY: `scratch` is the page just mapped, which nothing else uses.
    let installed = unsafe { libc::madvise(scratch, page, MADV_GUARD_INSTALL) } == 0;
    let kind = if installed && faults(scratch.cast()) {
        GuardKind::Region
    } else {
        GuardKind::Protected
    };
    // SAFETY: unmaps the scratch page mapped above; nothing points into it.
    unsafe { libc::munmap(scratch, page) };
    kind
}

/// Whether reading the byte at `address` faults, asked of the kernel (a `write` from it to
/// a pipe fails with `EFAULT`) so that the process itself touches nothing. Used by the
/// probe and by tests of guards.
pub(crate) fn faults(address: *const u8) -> bool {
    let mut fds = [0; 2];
    // SAFETY: `fds` is room for the two descriptors `pipe2` writes.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return false;
    }
    // SAFETY: `write` only reads `address` through the kernel, which reports a fault as
    // EFAULT instead of raising a signal; the pipe is ours and empty, so one byte fits.
    let written = unsafe { libc::write(fds[1], address.cast(), 1) };
    let fault = written < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EFAULT);
    for fd in fds {
        // SAFETY: closes the two descriptors `pipe2` opened above.
        unsafe { libc::close(fd) };
    }
    fault
}

/// Maps up to `count` stacks of `usable` bytes (page rounded, checked by the caller) in one
/// `mmap`, guards made as `kind` says; returns at least one, or an error and nothing
/// mapped.
///
/// Near the mapping limit it makes fewer, as many as the limit allows; should the batch's
/// `mmap` fail for lack of memory, it tries a single stack before giving up, and should a
/// guard fail, it keeps the stacks already guarded: a failure never costs more capacity
/// than the stack that failed.
pub(crate) fn map_batch(usable: usize, count: usize, kind: GuardKind) -> io::Result<Vec<Stack>> {
    let per_stack = kind.mappings_per_stack();
    let mut charge = Charge::acquire_up_to(count.max(1), per_stack, usable)?;
    let span = usable + guard_len();
    let base = match map_region(charge.stacks() * span) {
        Ok(base) => base,
        Err(_) if charge.stacks() > 1 => {
            charge.shrink_to(1);
            map_region(span).map_err(|error| map_error("mmap", error, usable))?
        }
        Err(error) => return Err(map_error("mmap", error, usable)),
    };
    let mut stacks = Vec::with_capacity(charge.stacks());
    for index in 0..charge.stacks() {
        // SAFETY: `index * span` lies inside the region just mapped.
        let stack_base = unsafe { base.as_ptr().add(index * span) };
        if let Err(error) = install_guard(stack_base, kind) {
            // Keep the stacks made so far (each carries its charge), unmap the rest.
            let rest = (charge.stacks() - index) * span;
            // SAFETY: `stack_base..+rest` is the part of the region no `Stack` owns.
            unsafe { libc::munmap(stack_base.cast(), rest) };
            charge.shrink_to(index);
            if stacks.is_empty() {
                let call = match kind {
                    GuardKind::Region => "madvise(MADV_GUARD_INSTALL)",
                    GuardKind::Protected => "mprotect",
                };
                return Err(map_error(call, error, usable));
            }
            break;
        }
        // SAFETY: `stack_base` is not null (inside a successful mapping); the stack owns
        // `span` bytes of the region, guard made, and its charge is counted in `charge`.
        stacks.push(unsafe {
            Stack::from_parts(NonNull::new_unchecked(stack_base), span, per_stack)
        });
    }
    charge.hand_over();
    Ok(stacks)
}

/// An anonymous, private, unreserved region of `len` bytes.
fn map_region(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: a fresh anonymous private mapping at an address of the kernel's choosing
    // touches no existing memory.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: mmap succeeded, so `base` is not null.
    Ok(unsafe { NonNull::new_unchecked(base.cast()) })
}

/// Makes the guard at the low end of the stack whose mapping starts at `base`.
fn install_guard(base: *mut u8, kind: GuardKind) -> io::Result<()> {
    let guard = guard_len();
    // SAFETY: the guard's pages lie inside a region mapped by `map_batch` that no stack
    // uses yet.
    let rc = unsafe {
        match kind {
            GuardKind::Region => libc::madvise(base.cast(), guard, MADV_GUARD_INSTALL),
            GuardKind::Protected => libc::mprotect(base.cast(), guard, libc::PROT_NONE),
        }
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZE: usize = 64 * 1024;

    /// Every stack of a batch of `kind`: guard faults, usable part does not, neighbours
    /// follow each other.
    fn check_batch(kind: GuardKind) {
        let stacks = map_batch(SIZE, 8, kind).unwrap();
        assert_eq!(stacks.len(), 8);
        for pair in stacks.windows(2) {
            assert_eq!(pair[0].top() as usize, pair[1].guard().start);
        }
        for stack in &stacks {
            assert_eq!(stack.size(), SIZE);
            assert!(faults(stack.guard().start as *const u8));
            assert!(faults((stack.guard().end - 1) as *const u8));
            assert!(!faults(stack.bottom()));
            assert!(!faults(stack.top().wrapping_sub(1)));
        }
    }

    #[test]
    fn protected_guards_fault_in_every_stack_of_a_batch() {
        check_batch(GuardKind::Protected);
    }

    #[test]
    fn region_guards_fault_in_every_stack_of_a_batch_where_the_kernel_has_them() {
        if guard_kind() != GuardKind::Region {
            println!("(skipped: no guard regions here; Linux 6.13+ natively)");
            return;
        }
        check_batch(GuardKind::Region);
    }

    /// The number of `/proc/self/maps` lines that overlap `range`.
    fn mappings_over(range: std::ops::Range<usize>) -> usize {
        let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
        let overlaps = |line: &str| {
            let (start, end) = line.split_once(' ').unwrap().0.split_once('-').unwrap();
            let start = usize::from_str_radix(start, 16).unwrap();
            let end = usize::from_str_radix(end, 16).unwrap();
            start < range.end && range.start < end
        };
        maps.lines().filter(|line| overlaps(line)).count()
    }

    #[test]
    fn a_batch_is_one_mapping_with_guard_regions_and_two_a_stack_without() {
        let count = 16;
        for kind in [GuardKind::Region, GuardKind::Protected] {
            if kind == GuardKind::Region && guard_kind() != GuardKind::Region {
                continue;
            }
            let stacks = map_batch(SIZE, count, kind).unwrap();
            let whole = stacks[0].range().start..stacks[count - 1].range().end;
            let expected = match kind {
                GuardKind::Region => 1,
                GuardKind::Protected => 2 * count,
            };
            assert_eq!(mappings_over(whole), expected, "{kind:?}");
        }
    }

    #[test]
    fn a_stack_unmapped_from_the_middle_of_a_batch_leaves_its_neighbours_guarded() {
        let mut stacks = map_batch(SIZE, 3, guard_kind()).unwrap();
        let middle = stacks.remove(1);
        let hole = middle.guard().start;
        drop(middle);
        assert!(faults(hole as *const u8));
        for stack in &stacks {
            assert!(faults(stack.guard().start as *const u8));
            assert!(!faults(stack.bottom()));
        }
    }
}
