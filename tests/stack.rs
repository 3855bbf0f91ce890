//! Behaviour of `Stack` and `StackPool`: guard pages, lazy commit, reuse and trimming.

use std::io;

use green::fiber::{Fiber, Resume};
use green::stack::{self, DEFAULT_STACK_SIZE, GUARD_SIZE, MIN_STACK_SIZE, Stack, StackPool};

/// QEMU 7.2's user mode ignores `madvise` and does not report residency like a kernel, so
/// memory figures are asserted on native runs only; counts are asserted everywhere.
const NATIVE: bool = cfg!(target_arch = "x86_64");

const PAGE: usize = 4096;

/// The `/proc/self/maps` line that contains `address`: its range and permissions.
fn mapping_at(address: usize) -> (std::ops::Range<usize>, String) {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    for line in maps.lines() {
        let (range, rest) = line.split_once(' ').unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        if (start..end).contains(&address) {
            return (start..end, rest[..4].to_owned());
        }
    }
    panic!("{address:#x} is not mapped");
}

/// The permissions column of the `/proc/self/maps` line that contains `address`.
fn permissions_at(address: usize) -> String {
    mapping_at(address).1
}

/// Writes to `bytes` bytes at the top of the stack, as a fiber using that much would.
fn touch(stack: &Stack, bytes: usize) {
    // SAFETY: `top - bytes .. top` lies in the usable region of a live stack that no fiber
    // runs on.
    unsafe { std::ptr::write_bytes(stack.top().sub(bytes), 0xA5, bytes) };
}

#[test]
fn the_guard_is_inaccessible_and_the_rest_is_read_write() {
    let stack = Stack::new(64 * 1024).unwrap();
    assert_eq!(stack.guard().end - stack.guard().start, GUARD_SIZE);
    assert_eq!(stack.guard().end, stack.bottom() as usize);
    assert_eq!(permissions_at(stack.guard().start), "---p");
    assert_eq!(permissions_at(stack.guard().end - 1), "---p");
    assert_eq!(permissions_at(stack.bottom() as usize), "rw-p");
    assert_eq!(permissions_at(stack.top() as usize - 1), "rw-p");
}

#[test]
fn the_guard_is_deeper_on_riscv64_which_has_no_stack_probes() {
    let expected = if cfg!(target_arch = "riscv64") {
        64 * 1024
    } else {
        PAGE
    };
    assert_eq!(GUARD_SIZE, expected);
}

#[test]
fn the_guard_is_not_usable_stack_and_adds_no_mapping() {
    let stack = Stack::new(64 * 1024).unwrap();
    assert_eq!(stack.size(), 64 * 1024);
    assert_eq!(stack.top() as usize - stack.bottom() as usize, 64 * 1024);
    // However deep, the guard is one mapping, and the usable part another, starting where
    // the guard ends: the two mappings per stack that green counts against
    // `vm.max_map_count`. (A neighbouring mapping with the same permissions may merge
    // with either, which only lowers the count.)
    let (guard, permissions) = mapping_at(stack.guard().start);
    assert_eq!(permissions, "---p");
    assert_eq!(
        guard.end,
        stack.guard().end,
        "the guard is split: {guard:x?}"
    );
    let (usable, permissions) = mapping_at(stack.bottom() as usize);
    assert_eq!(permissions, "rw-p");
    assert_eq!(usable.start, stack.bottom() as usize);
    assert!(usable.end >= stack.top() as usize, "{usable:x?}");
}

#[test]
fn a_new_stack_is_aligned_and_commits_no_memory_until_touched() {
    let stack = Stack::new(DEFAULT_STACK_SIZE).unwrap();
    assert_eq!(stack.top() as usize % 16, 0);
    assert_eq!(stack.size(), DEFAULT_STACK_SIZE);
    if NATIVE {
        assert_eq!(stack.resident_bytes().unwrap(), 0);
        touch(&stack, 3 * PAGE);
        assert_eq!(stack.resident_bytes().unwrap(), 3 * PAGE);
    }
}

#[test]
fn sizes_out_of_range_are_refused() {
    for size in [0, MIN_STACK_SIZE - 1, usize::MAX] {
        let error = Stack::new(size).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
        let error = StackPool::new(size).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput, "{error}");
    }
    assert_eq!(Stack::new(MIN_STACK_SIZE).unwrap().size(), MIN_STACK_SIZE);
}

#[test]
fn the_pool_reuses_the_most_recently_freed_stack() {
    let mut pool = StackPool::new(64 * 1024).unwrap();
    let first = pool.get().unwrap();
    let second = pool.get().unwrap();
    let second_top = second.top();
    pool.put(first);
    pool.put(second);
    assert_eq!(pool.warm(), 2);
    assert_eq!(pool.get().unwrap().top(), second_top);
}

#[test]
fn the_pool_drops_stacks_of_another_size() {
    let mut pool = StackPool::new(64 * 1024).unwrap();
    pool.put(Stack::new(128 * 1024).unwrap());
    assert_eq!(pool.warm() + pool.cold(), 0);
}

#[test]
fn idle_stacks_above_the_high_water_mark_give_their_pages_back() {
    let mut pool = StackPool::with_limits(64 * 1024, 2, 3).unwrap();
    let stacks: Vec<_> = (0..6).map(|_| pool.get().unwrap()).collect();
    for stack in &stacks {
        touch(stack, 16 * PAGE);
    }
    for stack in stacks {
        pool.put(stack);
    }
    // Two stay warm, three go cold, the sixth is unmapped.
    assert_eq!((pool.warm(), pool.cold()), (2, 3));
    if NATIVE {
        assert_eq!(pool.resident_bytes(), 2 * 16 * PAGE);
    }
    pool.trim();
    assert_eq!((pool.warm(), pool.cold()), (0, 3));
    if NATIVE {
        assert_eq!(pool.resident_bytes(), 0);
    }
}

#[test]
fn a_cold_stack_reads_as_zero_when_reused() {
    if !NATIVE {
        return; // QEMU 7.2 ignores madvise: the old bytes stay.
    }
    let mut pool = StackPool::with_limits(64 * 1024, 0, 4).unwrap();
    let stack = pool.get().unwrap();
    touch(&stack, PAGE);
    pool.put(stack);
    let stack = pool.get().unwrap();
    // SAFETY: reading a byte of the usable region of a live stack.
    let byte = unsafe { stack.top().sub(1).read() };
    assert_eq!(byte, 0);
}

#[test]
fn fibers_return_their_stacks_to_the_thread_pool() {
    let before = stack::thread_pool_stats(DEFAULT_STACK_SIZE);
    let mut fibers: Vec<_> = (0..20).map(|i| Fiber::new(move |_| i).unwrap()).collect();
    for fiber in &mut fibers {
        assert!(matches!(fiber.resume(), Resume::Finished(_)));
    }
    drop(fibers);
    let after = stack::thread_pool_stats(DEFAULT_STACK_SIZE);
    assert_eq!(after.warm, 16, "the default high-water mark");
    assert_eq!(after.cold, before.cold + 4);
    if NATIVE {
        // Warm stacks hold the pages the fibers touched; cold ones hold none.
        assert!(after.resident_bytes > 0);
        assert!(after.resident_bytes <= 16 * 4 * PAGE, "{after:?}");
    }
    stack::trim_thread_pools();
    let trimmed = stack::thread_pool_stats(DEFAULT_STACK_SIZE);
    assert_eq!((trimmed.warm, trimmed.cold), (0, 20));
    if NATIVE {
        assert_eq!(trimmed.resident_bytes, 0);
    }
}
