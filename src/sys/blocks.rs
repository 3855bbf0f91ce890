//! Recycled memory for small tasks.
//!
//! Every spawn allocates its task (`crate::task::Task`), and a burst of spawns keeps
//! thousands alive at once (spawn them all, then join them). From the allocator, each
//! costs a trip through its slow path (no per-thread cache holds that many), and after a
//! runtime's worker threads exit, the next runtime's threads may be given each other's
//! memory arenas, so that a burst faults its pages in again. Small tasks therefore take
//! their memory from here: fixed-size blocks, of nine classes (120 to 248 bytes, aligned to
//! 16; a task aligned to more is boxed), kept for reuse as the stack pool keeps stacks, in
//! a cache per thread in front of a part shared by the process.
//!
//! * A thread's cache holds up to [`CACHE_MAX`] blocks of each class; a full one passes
//!   [`CACHE_MOVE`] of its oldest to the shared part, an empty one takes as many back (or
//!   asks the allocator for one block). A thread that exits passes all of its blocks on.
//! * The shared part keeps up to [`SHARED_BYTES`] (16 MiB) of blocks, all classes
//!   together (the allocator's chunks add 8 bytes to each; the shared lists are linked
//!   through the free blocks themselves, and take no memory of their own); blocks beyond
//!   go back to the allocator. That much memory stays with the process after a burst, as
//!   it would in the allocator's own bins; it is reused by the next burst, on any thread,
//!   without a page fault. `stack::release_pools` gives it back.
//!
//! Every block is one allocation of its class's layout, made by the global allocator: any
//! block may go back to it at any time. Builds for the sanitizers and the loom models
//! allocate each task on its own instead, so that a use after free stays visible; under
//! Valgrind, free blocks are marked as no-access (client requests, a few no-op
//! instructions outside it; on a shared list, all but the link word), so that Memcheck
//! reports a use after free of a task too.
//!
//! As with the stack pool, a child process forked while another thread held one of the
//! shared part's locks would deadlock at its first spawn; `fork` then `exec` (what
//! `std::process::Command` does) is unaffected.

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::sys::{lock, valgrind};

/// How many classes of blocks there are.
const CLASSES: usize = 9;

/// The size of each class's blocks, 16 bytes apart from 120 to 248: 8 bytes short of 128,
/// 144, ... 256, so that each block, with the allocator's 8-byte chunk header (glibc),
/// takes the chunk the task would take alone. (With blocks 32 bytes apart, a 128-byte
/// task took a 160-byte chunk instead of a 144-byte one, and the burst benchmark's
/// resident memory grew by 87 bytes per task, not 16: its 144-byte temporaries were no
/// longer reused for tasks.)
const CLASS_SIZES: [usize; CLASSES] = {
    let mut sizes = [0; CLASSES];
    let mut class = 0;
    while class < CLASSES {
        sizes[class] = 120 + 16 * class;
        class += 1;
    }
    sizes
};

/// The alignment of every block: enough for any task of this crate's targets' usual types.
const ALIGN: usize = 16;

/// Blocks of each class a thread keeps at hand.
const CACHE_MAX: usize = 64;

/// Blocks moved at once between a thread's cache and the shared part.
const CACHE_MOVE: usize = 32;

/// Bytes of blocks, all classes together, that the shared part keeps; more go back to the
/// allocator.
const SHARED_BYTES: usize = 16 << 20;

/// Bytes of blocks the shared part holds now, all classes together.
static SHARED_HELD: AtomicUsize = AtomicUsize::new(0);

/// Whether tasks of type `X` take a block, and of which class.
pub(crate) const fn class_of<X>() -> Option<usize> {
    let (size, align) = (size_of::<X>(), align_of::<X>());
    if cfg!(any(loom, green_asan, green_tsan)) || size == 0 || align > ALIGN {
        None
    } else if size <= CLASS_SIZES[0] {
        Some(0)
    } else if size <= CLASS_SIZES[CLASSES - 1] {
        Some((size - CLASS_SIZES[0]).div_ceil(16))
    } else {
        None
    }
}

/// The layout of the blocks of `class`.
fn layout(class: usize) -> Layout {
    // A power of two no larger than the size: always valid.
    Layout::from_size_align(CLASS_SIZES[class], ALIGN).expect("a valid block layout")
}

/// A free block of memory, owned by whoever holds it.
struct Block(
    /// The block's start: an allocation of its class's layout by the global allocator,
    /// which holds nothing and which nothing else refers to.
    NonNull<u8>,
);

// SAFETY: a free block is plain memory that nobody else refers to; any thread may reuse it
// or give it back to the global allocator.
unsafe impl Send for Block {}

impl Block {
    /// Gives the block back to the global allocator.
    fn release(self, class: usize) {
        valgrind::mark_undefined(self.0.as_ptr(), CLASS_SIZES[class]);
        // SAFETY: every block was allocated by the global allocator with this class's
        // layout (`take`), and the caller owns it.
        unsafe { alloc::dealloc(self.0.as_ptr(), layout(class)) };
    }
}

/// The shared part: free blocks of each class, the process's parts sharing one bound.
static SHARED: [Shared; CLASSES] = [const { Shared::new(&SHARED_HELD, SHARED_BYTES) }; CLASSES];

/// The shared free blocks of one class.
struct Shared {
    /// The blocks.
    list: Mutex<List>,
    /// The list's length, read without the lock.
    count: AtomicUsize,
    /// Bytes of blocks held by this part and the parts it shares its bound with (the
    /// process's: [`SHARED_HELD`]); changed only under the lock of the part whose blocks
    /// come or go, so it never counts a block twice or goes below zero.
    held: &'static AtomicUsize,
    /// Most bytes `held` may count; racy across parts (each has its own lock), so passed
    /// at most by what a thread's cache passes on at once to each (64 blocks, about
    /// 124 KiB over the nine classes).
    max_bytes: usize,
}

/// Free blocks linked through their first word, most recently given back first: a list
/// that takes no memory of its own, however many blocks it holds.
struct List {
    /// The first block; its first word points at the next (null after the last).
    head: Option<Block>,
    /// How many blocks the list holds.
    len: usize,
}

impl List {
    /// Puts `block` first.
    fn push(&mut self, block: Block) {
        let next = self
            .head
            .take()
            .map_or(std::ptr::null_mut(), |b| b.0.as_ptr());
        let link = block.0.as_ptr().cast::<*mut u8>();
        // The block is marked no-access while free; its first word becomes the link.
        valgrind::mark_undefined(link.cast(), LINK);
        // SAFETY: the block is ours (free, nothing refers to it), at least 120 bytes long and
        // aligned to 16: room for an aligned pointer at its start.
        unsafe { link.write(next) };
        self.head = Some(block);
        self.len += 1;
    }

    /// Takes the first block.
    fn pop(&mut self) -> Option<Block> {
        let block = self.head.take()?;
        // SAFETY: the block is on the list, so `push` wrote its first word, and nothing else
        // touches a listed block.
        let next = unsafe { block.0.as_ptr().cast::<*mut u8>().read() };
        self.head = NonNull::new(next).map(Block);
        self.len -= 1;
        valgrind::mark_no_access(block.0.as_ptr(), LINK);
        Some(block)
    }
}

/// The bytes of a free block on a shared list that hold its link.
const LINK: usize = size_of::<*mut u8>();

impl Shared {
    /// An empty part, counting its blocks in `held` against `max_bytes`.
    const fn new(held: &'static AtomicUsize, max_bytes: usize) -> Shared {
        Shared {
            list: Mutex::new(List { head: None, len: 0 }),
            count: AtomicUsize::new(0),
            held,
            max_bytes,
        }
    }

    /// Moves up to `wanted` blocks into `into`.
    fn take_into(&self, class: usize, into: &mut Vec<Block>, wanted: usize) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut list = lock(&self.list);
        let before = list.len;
        for _ in 0..wanted {
            match list.pop() {
                Some(block) => into.push(block),
                None => break,
            }
        }
        self.held
            .fetch_sub((before - list.len) * CLASS_SIZES[class], Ordering::Relaxed);
        self.count.store(list.len, Ordering::Relaxed);
    }

    /// Keeps `given` blocks of `class`, as far as [`SHARED_BYTES`] allows, and gives the rest
    /// back to the allocator (outside the lock).
    fn put(&self, class: usize, mut given: impl Iterator<Item = Block>) {
        {
            let mut list = lock(&self.list);
            let size = CLASS_SIZES[class];
            let held = self.held.load(Ordering::Relaxed);
            let room = self.max_bytes.saturating_sub(held) / size;
            let before = list.len;
            for block in given.by_ref().take(room) {
                list.push(block);
            }
            self.held
                .fetch_add((list.len - before) * size, Ordering::Relaxed);
            self.count.store(list.len, Ordering::Relaxed);
        }
        for block in given {
            block.release(class);
        }
    }

    /// Gives every block of the part (of `class`) back to the allocator; returns how many.
    fn release_all(&self, class: usize) -> usize {
        let mut taken = Vec::new();
        self.take_into(class, &mut taken, usize::MAX);
        let released = taken.len();
        for block in taken {
            block.release(class);
        }
        released
    }
}

/// Gives every free block of the shared part and of the calling thread's cache back to the
/// allocator (other threads' caches are not touched): `stack::release_pools`, for a
/// process done with fibers for a long while.
pub(crate) fn release() {
    let _ = CACHE.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            for (class, blocks) in cache.0.iter_mut().enumerate() {
                for block in blocks.drain(..) {
                    block.release(class);
                }
            }
        }
    });
    for (class, shared) in SHARED.iter().enumerate() {
        shared.release_all(class);
    }
}

/// A thread's free blocks, per class; passed to the shared part when the thread exits.
struct Cache(
    /// The free blocks of each class, at most [`CACHE_MAX`], most recently given back last.
    [Vec<Block>; CLASSES],
);

impl Drop for Cache {
    fn drop(&mut self) {
        for (class, blocks) in self.0.iter_mut().enumerate() {
            SHARED[class].put(class, blocks.drain(..));
        }
    }
}

thread_local! {
    /// This thread's free blocks.
    static CACHE: RefCell<Cache> = const { RefCell::new(Cache([const { Vec::new() }; CLASSES])) };
}

/// A block of `class`: uninitialised memory of the class's size, aligned to 16 bytes.
/// Aborts, as `Box::new` does, if the allocator has no memory.
#[inline]
pub(crate) fn take(class: usize) -> NonNull<u8> {
    let cached = CACHE.try_with(|cache| {
        let mut cache = cache.try_borrow_mut().ok()?;
        let blocks = &mut cache.0[class];
        if blocks.is_empty() {
            SHARED[class].take_into(class, blocks, CACHE_MOVE);
        }
        blocks.pop()
    });
    match cached {
        Ok(Some(block)) => {
            valgrind::mark_undefined(block.0.as_ptr(), CLASS_SIZES[class]);
            block.0
        }
        // An empty pool, or a thread whose cache is gone (it exits) or in use (the
        // allocator called back into a spawn): a new block.
        _ => {
            let layout = layout(class);
            // SAFETY: the layout's size is not zero.
            let memory = unsafe { alloc::alloc(layout) };
            NonNull::new(memory).unwrap_or_else(|| alloc::handle_alloc_error(layout))
        }
    }
}

/// Gives back a block of `class`, for reuse.
///
/// # Safety
///
/// `block` came from [`take`] with the same class, and nothing refers to its memory any
/// more (what it held was dropped).
#[inline]
pub(crate) unsafe fn give_back(class: usize, block: NonNull<u8>) {
    valgrind::mark_no_access(block.as_ptr(), CLASS_SIZES[class]);
    let mut block = Some(Block(block));
    let _ = CACHE.try_with(|cache| {
        if let Ok(mut cache) = cache.try_borrow_mut() {
            let blocks = &mut cache.0[class];
            if blocks.len() >= CACHE_MAX {
                SHARED[class].put(class, blocks.drain(..CACHE_MOVE));
            }
            blocks.extend(block.take());
        }
    });
    if let Some(block) = block {
        // The thread exits (its cache is gone), or its cache is in use (the allocator
        // called back into a spawn): straight to the shared part.
        SHARED[class].put(class, std::iter::once(block));
    }
}

/// Drops the value at `value`, which sits in a block of `class`, and gives the block back,
/// even if the value's destructor panics (as a box is freed then).
///
/// # Safety
///
/// `value` points at the start of a block that came from [`take`] with this class, holding
/// an initialised `X` that nothing else refers to or drops.
pub(crate) unsafe fn drop_in_block<X>(class: usize, value: NonNull<X>) {
    /// Gives the block back when dropped: after the value, or while its panic unwinds.
    struct GiveBack(
        /// The block's class.
        usize,
        /// The block, which holds the value until it is dropped.
        NonNull<u8>,
    );
    impl Drop for GiveBack {
        fn drop(&mut self) {
            // SAFETY: the block came from `take` with this class (the caller's promise),
            // and the value in it was dropped (this runs after `drop_in_place`).
            unsafe { give_back(self.0, self.1) };
        }
    }
    let _give_back = GiveBack(class, value.cast());
    // SAFETY: as the caller guarantees: initialised, dropped once, here.
    unsafe { value.drop_in_place() };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_types_take_a_block_of_the_smallest_class_that_holds_them() {
        if cfg!(any(loom, green_asan, green_tsan)) {
            return;
        }
        assert_eq!(class_of::<[u8; 1]>(), Some(0));
        assert_eq!(class_of::<[u64; 15]>(), Some(0));
        assert_eq!(class_of::<[u64; 16]>(), Some(1));
        assert_eq!(class_of::<[u64; 17]>(), Some(1));
        assert_eq!(class_of::<[u64; 18]>(), Some(2));
        assert_eq!(class_of::<[u64; 31]>(), Some(8));
        assert_eq!(class_of::<[u64; 32]>(), None);
        // Each class's edges.
        assert_eq!(class_of::<[u8; 120]>(), Some(0));
        assert_eq!(class_of::<[u8; 121]>(), Some(1));
        assert_eq!(class_of::<[u8; 136]>(), Some(1));
        assert_eq!(class_of::<[u8; 137]>(), Some(2));
        assert_eq!(class_of::<[u8; 232]>(), Some(7));
        assert_eq!(class_of::<[u8; 233]>(), Some(8));
        assert_eq!(class_of::<[u8; 248]>(), Some(8));
        assert_eq!(class_of::<[u8; 249]>(), None);
        assert_eq!(CLASS_SIZES[CLASSES - 1], 248);
        assert_eq!(class_of::<()>(), None);
        #[repr(align(16))]
        struct Aligned {
            _bytes: [u8; 128],
        }
        assert_eq!(class_of::<Aligned>(), Some(1));
        #[repr(align(32))]
        struct Wide {
            _byte: u8,
        }
        assert_eq!(class_of::<Wide>(), None);
    }

    #[test]
    fn a_block_given_back_is_taken_again_by_the_same_thread() {
        std::thread::spawn(|| {
            let a = take(0);
            // SAFETY: `a` came from `take(0)` and holds nothing.
            unsafe { give_back(0, a) };
            let b = take(0);
            assert_eq!(a, b);
            // SAFETY: as above.
            unsafe { give_back(0, b) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_block_goes_back_even_when_its_value_s_destructor_panics() {
        struct Bomb(#[allow(dead_code)] u64);
        impl Drop for Bomb {
            fn drop(&mut self) {
                panic!("a destructor that panics");
            }
        }
        std::thread::spawn(|| {
            let block = take(0);
            let value = block.cast::<Bomb>();
            // SAFETY: a block is aligned to 16 and holds 120 bytes: room for a `Bomb`.
            unsafe { value.write(Bomb(7)) };
            let dropped = std::panic::catch_unwind(|| {
                // SAFETY: the block came from `take(0)` and holds a `Bomb`, dropped here.
                unsafe { drop_in_block(0, value) }
            });
            assert!(dropped.is_err());
            assert_eq!(take(0), block, "the block was given back");
            // SAFETY: the block came from `take(0)` and holds nothing.
            unsafe { give_back(0, block) };
        })
        .join()
        .unwrap();
    }

    /// A part of its own, with a bound of `max_blocks` blocks of `class` and a counter of
    /// its own: the process's parts are shared with the other tests.
    fn own_part(class: usize, max_blocks: usize) -> Shared {
        let held = Box::leak(Box::new(AtomicUsize::new(0)));
        Shared::new(held, max_blocks * CLASS_SIZES[class])
    }

    #[test]
    fn a_shared_part_keeps_blocks_up_to_its_bound_and_counts_them() {
        let class = 2;
        let size = CLASS_SIZES[class];
        let part = own_part(class, 10);
        part.put(class, (0..15).map(|_| Block(take(class))));
        assert_eq!(
            part.count.load(Ordering::Relaxed),
            10,
            "5 went to the allocator"
        );
        assert_eq!(part.held.load(Ordering::Relaxed), 10 * size);
        let mut taken = Vec::new();
        part.take_into(class, &mut taken, 4);
        assert_eq!(taken.len(), 4);
        assert_eq!(part.held.load(Ordering::Relaxed), 6 * size);
        part.put(class, taken.into_iter());
        assert_eq!(part.held.load(Ordering::Relaxed), 10 * size);
        assert_eq!(part.release_all(class), 10);
        assert_eq!(part.count.load(Ordering::Relaxed), 0);
        assert_eq!(part.held.load(Ordering::Relaxed), 0);
        assert_eq!(part.release_all(class), 0);
    }

    #[test]
    fn a_shared_list_hands_blocks_back_most_recent_first() {
        let class = 3;
        let part = own_part(class, 10_000);
        let blocks: Vec<usize> = (0..5_000).map(|_| take(class).as_ptr() as usize).collect();
        let block = |address: usize| Block(NonNull::new(address as *mut u8).unwrap());
        part.put(class, blocks.iter().map(|&a| block(a)));
        let mut taken = Vec::new();
        part.take_into(class, &mut taken, 3);
        let taken_addresses: Vec<usize> = taken.iter().map(|b| b.0.as_ptr() as usize).collect();
        assert_eq!(
            taken_addresses,
            [blocks[4_999], blocks[4_998], blocks[4_997]]
        );
        part.put(class, taken.into_iter());
        assert_eq!(part.release_all(class), 5_000);
    }

    #[test]
    fn memcheck_takes_a_free_block_for_freed_memory() {
        std::thread::spawn(|| {
            let block = take(1);
            let size = CLASS_SIZES[1];
            assert_ne!(valgrind::addressable(block.as_ptr(), size), Some(false));
            // SAFETY: the block came from `take(1)` and holds nothing.
            unsafe { give_back(1, block) };
            // Outside Valgrind (`None`), nothing to check.
            assert_ne!(valgrind::addressable(block.as_ptr(), size), Some(true));
            assert_eq!(take(1), block);
            assert_ne!(valgrind::addressable(block.as_ptr(), size), Some(false));
            // SAFETY: as above.
            unsafe { give_back(1, block) };
        })
        .join()
        .unwrap();
    }

    #[test]
    fn blocks_are_aligned_and_usable_across_threads() {
        let blocks: Vec<usize> = (0..(CACHE_MAX * 3))
            .map(|i| {
                let class = i % CLASSES;
                let block = take(class);
                assert_eq!(block.as_ptr() as usize % ALIGN, 0);
                // SAFETY: the block is ours and its class's size long (under Valgrind, a
                // shorter allocation would be reported).
                unsafe { block.as_ptr().write_bytes(i as u8, CLASS_SIZES[class]) };
                block.as_ptr() as usize
            })
            .collect();
        // Given back on another thread, whose cache passes them on when it exits.
        std::thread::spawn(move || {
            for (i, address) in blocks.into_iter().enumerate() {
                let block = NonNull::new(address as *mut u8).unwrap();
                // SAFETY: each block came from `take` with this class and holds nothing.
                unsafe { give_back(i % CLASSES, block) };
            }
        })
        .join()
        .unwrap();
    }
}
