//! Behaviour of `Stack` and `StackPool`: guard pages, lazy commit, reuse and trimming.

use std::io;
use std::sync::{Mutex, MutexGuard};

use green::fiber::{Fiber, Resume};
use green::stack::{
    self, BATCH_SIZE, DEFAULT_STACK_SIZE, GUARD_SIZE, KEEP_IDLE, KEEP_WARM, MIN_STACK_SIZE, Stack,
    StackPool,
};

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
    // Not while the pool tests map and unmap stacks: QEMU's user mode once read
    // `/proc/self/maps` without this stack's mapping meanwhile.
    let _pool = pool_lock();
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
    // Not while the pool tests map and unmap stacks: QEMU's user mode once read
    // `/proc/self/maps` without this stack's mapping meanwhile.
    let _pool = pool_lock();
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

// The tests below use the process-wide pool, which tests running in parallel share: each
// uses a stack size of its own, since the pool keeps stacks of each size apart, and holds
// `pool_lock`, since a trim unmaps every idle stack of a size that is not common,
// whichever test's it is.

/// Held by each test of the process-wide pool.
fn pool_lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Runs `count` fibers of `size` bytes at once, each touching a little of its stack,
/// then drops them all: their stacks go back to the pool.
fn run_fibers_at_once(count: usize, size: usize) {
    let mut fibers: Vec<_> = (0..count)
        // SAFETY: the fiber is not leaked while started.
        .map(|i| {
            unsafe { Fiber::with_stack_size(size, move |_| std::hint::black_box([i; 64])[3]) }
                .unwrap()
        })
        .collect();
    for fiber in &mut fibers {
        assert!(matches!(fiber.resume(), Resume::Finished(_)));
    }
}

/// Stacks the pool maps for `count` fibers of a size new to it, alive at once on one
/// thread: batches of 1, 2, 4 and so on up to `BATCH_SIZE`, until they add up to `count`.
fn mapped_for(count: usize) -> usize {
    let (mut mapped, mut batch) = (0, 1);
    while mapped < count {
        mapped += batch;
        batch = (batch * 2).min(BATCH_SIZE);
    }
    mapped
}

#[test]
fn fibers_return_their_stacks_to_the_process_wide_pool() {
    let _pool = pool_lock();
    const SIZE: usize = 80 * 1024;
    assert_eq!(stack::pool_stats(SIZE).idle(), 0);
    run_fibers_at_once(20, SIZE);
    // Batches of 1 to 16 stacks served them; the 20 used and the 11 not yet used are idle.
    let stats = stack::pool_stats(SIZE);
    assert_eq!((stats.warm, stats.cold), (mapped_for(20), 0));
    assert_eq!(mapped_for(20), 31);
    if NATIVE {
        // The fibers touched their top pages; the unused stacks hold none.
        assert!(stats.resident_bytes >= 20 * PAGE, "{stats:?}");
        assert!(stats.resident_bytes <= 20 * 4 * PAGE, "{stats:?}");
    }
    // Taken again, from the pool: no new batch.
    run_fibers_at_once(31, SIZE);
    assert_eq!(stack::pool_stats(SIZE).idle(), 31);
}

#[test]
fn a_stack_size_used_once_maps_one_stack() {
    let _pool = pool_lock();
    const SIZE: usize = 84 * 1024;
    run_fibers_at_once(1, SIZE);
    // Regression: every new size reserved a batch of 64, kept for ever.
    assert_eq!(stack::pool_stats(SIZE).idle(), 1);
}

#[test]
fn batches_of_a_size_double_until_it_is_common_and_the_default_size_starts_there() {
    let _pool = pool_lock();
    const SIZE: usize = 88 * 1024;
    // Each burst needs one batch more than the stacks idle: 1, 2, 4, ... 64, 64.
    for count in [1, 3, 7, 15, 31, 63, 127, 191] {
        run_fibers_at_once(count, SIZE);
        assert_eq!(
            stack::pool_stats(SIZE).idle(),
            count,
            "{count} fibers at once"
        );
    }
    // Common now: a trim keeps its stacks, up to the keep limits.
    stack::trim_pools();
    assert_eq!(stack::pool_stats(SIZE).idle(), 191);
    // The default size reserves whole batches from its first fiber (other tests' fibers
    // may have mapped some already).
    let before = stack::pool_stats(DEFAULT_STACK_SIZE).idle();
    run_fibers_at_once(before + 1, DEFAULT_STACK_SIZE);
    assert_eq!(
        stack::pool_stats(DEFAULT_STACK_SIZE).idle(),
        before + BATCH_SIZE
    );
}

#[test]
fn a_trim_unmaps_every_idle_stack_of_a_size_that_is_not_common() {
    let _pool = pool_lock();
    const SIZE: usize = 92 * 1024;
    run_fibers_at_once(20, SIZE);
    assert_eq!(stack::pool_stats(SIZE).idle(), mapped_for(20));
    stack::trim_pools();
    // Regression: a trim kept up to `KEEP_IDLE` of every size, so each size used once
    // kept its whole batch.
    assert_eq!(stack::pool_stats(SIZE), stack::PoolStats::default());
}

#[test]
fn spawning_once_each_of_many_stack_sizes_keeps_few_stacks_of_each_and_none_after_a_trim() {
    // Regression: each size kept a batch of 64 stacks (128 if its task started on
    // another worker than its spawner) for ever, and some 960 sizes took every mapping
    // `vm.max_map_count` allows, so spawning failed with two fibers alive.
    let _pool = pool_lock();
    const SIZES: usize = 300;
    let size = |i: usize| 2 * 1024 * 1024 + i * PAGE;
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let (most_idle, all_idle) = runtime.run(move || {
        let most_idle = (0..SIZES)
            .map(|i| {
                let task = green::task::Builder::new().stack_size(size(i));
                assert_eq!(task.spawn(move || i).unwrap().join().unwrap(), i);
                // The batch of 1 its spawner reserved, and one of 2 if its task started
                // on the other worker, as seen from this worker (and the shared part).
                stack::pool_stats(size(i)).idle()
            })
            .max()
            .unwrap();
        // Each new size's batch unmapped the idle stacks of those before: a few remain,
        // of the last sizes, in the workers' slots and the shared part.
        let all_idle: usize = (0..SIZES).map(|i| stack::pool_stats(size(i)).idle()).sum();
        (most_idle, all_idle)
    });
    assert!(
        most_idle <= 3,
        "a size used once has {most_idle} idle stacks"
    );
    assert!(
        all_idle < 10,
        "{all_idle} idle stacks of {SIZES} sizes used once"
    );
    drop(runtime);
    // The workers' slots and caches went to the shared part as their threads exited,
    // and the shutdown's trim unmapped them.
    let idle: usize = (0..SIZES).map(|i| stack::pool_stats(size(i)).idle()).sum();
    assert_eq!(idle, 0);
}

#[test]
fn trimming_keeps_keep_warm_stacks_with_pages_and_keep_idle_mapped() {
    let _pool = pool_lock();
    const SIZE: usize = 96 * 1024;
    let count = KEEP_IDLE + 2 * BATCH_SIZE;
    run_fibers_at_once(count, SIZE);
    assert_eq!(stack::pool_stats(SIZE).idle(), mapped_for(count));
    stack::trim_pools();
    let trimmed = stack::pool_stats(SIZE);
    assert_eq!(
        (trimmed.warm, trimmed.cold),
        (KEEP_WARM, KEEP_IDLE - KEEP_WARM)
    );
    if NATIVE {
        assert!(trimmed.resident_bytes > 0, "{trimmed:?}");
        assert!(
            trimmed.resident_bytes <= KEEP_WARM * 4 * PAGE,
            "{trimmed:?}"
        );
    }
    // Trimmed stacks still work, cold ones read as zero (natively) and their guards hold.
    run_fibers_at_once(KEEP_IDLE, SIZE);
    assert_eq!(stack::pool_stats(SIZE).idle(), KEEP_IDLE);
}

#[test]
// Under ASan a local whose address is taken lives on the fiber's fake stack, which is
// freed with the fiber: the addresses say nothing about the stacks.
#[cfg_attr(
    green_asan,
    ignore = "ASan puts the local on each fiber's own fake stack, not on its stack"
)]
fn a_fiber_s_stack_serves_the_next_fiber_of_its_size_on_the_thread() {
    let _pool = pool_lock();
    const SIZE: usize = 120 * 1024;
    const OTHER: usize = 128 * 1024;
    // Where on its stack a fiber of `size` runs.
    let frame = |size| {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe {
            Fiber::with_stack_size(size, |_| {
                let local = 0u8;
                std::hint::black_box(&local) as *const u8 as usize
            })
        }
        .unwrap();
        match fiber.resume() {
            Resume::Finished(address) => address / PAGE,
            _ => unreachable!(),
        }
    };
    let first = frame(SIZE);
    assert_eq!(frame(SIZE), first);
    // A fiber of another size between them takes another stack, and the first comes back.
    assert_ne!(frame(OTHER), first);
    assert_eq!(frame(SIZE), first);
}

#[test]
fn the_stacks_of_a_thread_that_exits_stay_in_the_pool() {
    let _pool = pool_lock();
    const SIZE: usize = 136 * 1024;
    std::thread::spawn(|| run_fibers_at_once(3, SIZE))
        .join()
        .unwrap();
    // The batches the thread reserved, every stack of them (the last given back too), are
    // idle in the shared part; none was unmapped.
    assert_eq!(stack::pool_stats(SIZE).idle(), mapped_for(3));
}

#[test]
fn releasing_the_pools_unmaps_every_idle_stack() {
    let _pool = pool_lock();
    const SIZE: usize = 104 * 1024;
    run_fibers_at_once(10, SIZE);
    assert_eq!(stack::pool_stats(SIZE).idle(), mapped_for(10));
    stack::release_pools();
    assert_eq!(stack::pool_stats(SIZE), stack::PoolStats::default());
}
