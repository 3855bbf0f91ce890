//! Pools of idle stacks: [`StackPool`], for callers that manage stacks themselves, and the
//! process-wide pool behind every fiber (see the [module docs](super#the-pool) for its
//! policy).

use std::cell::{Cell, RefCell};
use std::io;
use std::ops::Range;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use super::batch::{self, GuardKind};
use super::{DEFAULT_STACK_SIZE, Stack, checked_size};
use crate::sys::lock;

/// Idle stacks a `StackPool` keeps with their pages by default.
const DEFAULT_MAX_WARM: usize = 16;

/// Idle stacks a `StackPool` keeps mapped without their pages by default.
const DEFAULT_MAX_COLD: usize = 1024;

/// Stacks one `mmap` reserves for a common size when the process-wide pool has none idle
/// (fewer near the mapping limit). Another size's first batch is one stack, and each of its
/// batches doubles the last until it reaches this: see the [module docs](super#the-pool).
pub const BATCH_SIZE: usize = 64;

/// Idle stacks of each common size that the process-wide pool keeps with their pages when
/// it is trimmed: reused without a page fault. A trim keeps none of other sizes.
pub const KEEP_WARM: usize = 256;

/// Idle stacks of each common size that the process-wide pool keeps mapped when it is
/// trimmed (warm ones included); the rest are unmapped. A trim keeps none of other sizes.
pub const KEEP_IDLE: usize = 4096;

/// Idle stacks a thread keeps at hand, per common size, before it passes some to the
/// shared part.
const CACHE_MAX: usize = 64;

/// Stacks moved at once between a thread's cache and the shared part.
const CACHE_MOVE: usize = 32;

/// Idle stacks in the shared part past which giving one back trims at once, on the
/// giver's path: the bound for processes with no idle worker to trim.
const IDLE_CAP: usize = 1 << 16;

/// Most stacks one [`trim_step`] releases, so that an idle worker looks at its queues
/// again within a millisecond or so.
const TRIM_STEP: usize = 4096;

/// Idle stacks of one size, kept for reuse.
///
/// [`get`](StackPool::get) hands out the most recently freed stack whose pages are still
/// resident ("warm"), then one whose pages were returned to the OS ("cold"), and maps a new
/// one only when the pool is empty. [`put`](StackPool::put) keeps at most `max_warm` warm
/// stacks: beyond that high-water mark, a freed stack's pages are released with
/// `madvise(MADV_DONTNEED)`, and beyond `max_cold` cold stacks it is unmapped.
///
/// Fibers and runtimes do not use this type: they share the process-wide pool described
/// in the [module docs](super#the-pool). It is for callers that manage stacks themselves,
/// one [`Stack::new`] at a time.
///
/// # Examples
///
/// ```
/// use green::stack::StackPool;
///
/// let mut pool = StackPool::with_limits(64 * 1024, 1, 8).unwrap();
/// let a = pool.get().unwrap();
/// let b = pool.get().unwrap();
/// let top = a.top();
/// pool.put(a); // warm: keeps its pages
/// pool.put(b); // over the high-water mark: pages released
/// assert_eq!((pool.warm(), pool.cold()), (1, 1));
/// assert_eq!(pool.get().unwrap().top(), top); // the warm one is reused first
/// ```
#[derive(Debug)]
pub struct StackPool {
    /// Usable size of every stack in the pool, page rounded.
    stack_size: usize,
    /// Idle stacks whose pages may be resident; most recently freed last.
    warm: Vec<Stack>,
    /// Idle stacks whose pages were released; still mapped.
    cold: Vec<Stack>,
    /// High-water mark: most stacks kept in `warm`.
    max_warm: usize,
    /// Most stacks kept in `cold`; more are unmapped.
    max_cold: usize,
}

impl StackPool {
    /// A pool of stacks of `stack_size` usable bytes, with the default limits (16 warm,
    /// 1024 cold).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the size is out of range, as [`Stack::new`].
    pub fn new(stack_size: usize) -> io::Result<StackPool> {
        StackPool::with_limits(stack_size, DEFAULT_MAX_WARM, DEFAULT_MAX_COLD)
    }

    /// A pool with explicit limits: `max_warm` idle stacks keep their pages, `max_cold` more
    /// stay mapped without them.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the size is out of range, as [`Stack::new`].
    pub fn with_limits(stack_size: usize, max_warm: usize, max_cold: usize) -> io::Result<Self> {
        Ok(StackPool {
            stack_size: checked_size(stack_size)?,
            warm: Vec::new(),
            cold: Vec::new(),
            max_warm,
            max_cold,
        })
    }

    /// Usable size of the pool's stacks.
    pub fn stack_size(&self) -> usize {
        self.stack_size
    }

    /// A stack from the pool, or a new one.
    ///
    /// # Errors
    ///
    /// As [`Stack::new`], when the pool is empty and mapping a new stack fails.
    pub fn get(&mut self) -> io::Result<Stack> {
        match self.pop_idle() {
            Some(stack) => Ok(stack),
            None => Stack::new(self.stack_size),
        }
    }

    /// The most recently freed warm stack, else a cold one.
    fn pop_idle(&mut self) -> Option<Stack> {
        self.warm.pop().or_else(|| self.cold.pop())
    }

    /// Gives a stack back. A stack of another size is unmapped.
    pub fn put(&mut self, stack: Stack) {
        if stack.size() != self.stack_size {
            return;
        }
        if self.warm.len() < self.max_warm {
            self.warm.push(stack);
        } else if self.cold.len() < self.max_cold {
            stack.release_pages();
            self.cold.push(stack);
        }
    }

    /// Releases the pages of every idle stack, keeping them mapped (as far as `max_cold`
    /// allows; the rest are unmapped).
    pub fn trim(&mut self) {
        for stack in self.warm.drain(..) {
            if self.cold.len() < self.max_cold {
                stack.release_pages();
                self.cold.push(stack);
            }
        }
    }

    /// Idle stacks whose pages are kept.
    pub fn warm(&self) -> usize {
        self.warm.len()
    }

    /// Idle stacks whose pages were released.
    pub fn cold(&self) -> usize {
        self.cold.len()
    }

    /// Bytes of memory the idle stacks hold now (resident pages, by `mincore`).
    pub fn resident_bytes(&self) -> usize {
        let stacks = self.warm.iter().chain(&self.cold);
        stacks.map(|s| s.resident_bytes().unwrap_or(0)).sum()
    }
}

/// The shared part of the process-wide pool for one stack size.
#[derive(Debug)]
struct SharedPool {
    /// Usable size of the stacks, page rounded.
    size: usize,
    /// The idle stacks.
    idle: Mutex<Idle>,
    /// `idle.warm.len() + idle.cold.len()`, for readers that do not take the lock.
    count: AtomicUsize,
    /// Stacks the next batch of this size maps: 1 for a new size, doubled by each batch
    /// up to [`BATCH_SIZE`], which marks a common size (the default size and a runtime's
    /// start there). Never lowered.
    batch: AtomicUsize,
}

/// Idle stacks of the shared part.
#[derive(Debug, Default)]
struct Idle {
    /// Stacks that may hold pages; most recently given back last.
    warm: Vec<Stack>,
    /// Stacks whose pages were released; still mapped, guards in place.
    cold: Vec<Stack>,
}

/// The shared parts, one per stack size in use (usually one), never freed.
static SHARED_POOLS: Mutex<Vec<&'static SharedPool>> = Mutex::new(Vec::new());

/// Set when some shared part holds more idle stacks than the keep limits: the next idle
/// worker trims.
static TRIM_DUE: AtomicBool = AtomicBool::new(false);

/// The shared part for stacks of `size` (page rounded) bytes, made if missing.
fn shared_pool(size: usize) -> &'static SharedPool {
    let mut pools = lock(&SHARED_POOLS);
    if let Some(pool) = pools.iter().find(|p| p.size == size) {
        return pool;
    }
    let batch = if size == DEFAULT_STACK_SIZE {
        BATCH_SIZE
    } else {
        1
    };
    let pool = Box::leak(Box::new(SharedPool {
        size,
        idle: Mutex::new(Idle::default()),
        count: AtomicUsize::new(0),
        batch: AtomicUsize::new(batch),
    }));
    pools.push(pool);
    pool
}

/// Makes `size` a common size of the process-wide pool from now on, as if it had been
/// used enough: full batches, per-thread caches, and the trim's keep limits. For the
/// stack size of a runtime, its fibers' default.
///
/// # Errors
///
/// [`io::ErrorKind::InvalidInput`] if the size is out of range, as [`Stack::new`].
pub(crate) fn make_common(size: usize) -> io::Result<()> {
    let pool = shared_pool(checked_size(size)?);
    pool.batch.store(BATCH_SIZE, Ordering::Relaxed);
    Ok(())
}

impl SharedPool {
    /// Whether this is a common size: one whose batches have grown to [`BATCH_SIZE`].
    fn common(&self) -> bool {
        self.batch.load(Ordering::Relaxed) >= BATCH_SIZE
    }

    /// Idle stacks a trim keeps, warm and in all: the keep limits for a common size, none
    /// for another.
    fn keep(&self) -> (usize, usize) {
        if self.common() {
            (KEEP_WARM, KEEP_IDLE)
        } else {
            (0, 0)
        }
    }

    /// Maps a new batch of this size, and doubles the next one's count if it has not
    /// reached [`BATCH_SIZE`]. Before a batch of a size that is not common, unmaps the
    /// idle stacks of the other sizes that are not common, as a trim would: a runtime
    /// that never idles then keeps no stack idle for every size it used once.
    fn map_batch(&self) -> io::Result<Vec<Stack>> {
        let count = self.batch.load(Ordering::Relaxed);
        if count < BATCH_SIZE {
            let pools: Vec<&'static SharedPool> = lock(&SHARED_POOLS)
                .iter()
                .copied()
                .filter(|p| p.count.load(Ordering::Relaxed) > 0)
                .filter(|p| p.size != self.size && !p.common())
                .collect();
            for pool in pools {
                pool.unmap_idle(usize::MAX, true);
            }
        }
        let stacks = batch::map_batch(self.size, count, batch::guard_kind())?;
        // Only a whole batch counts: near the mapping limit batches shrink, and a size
        // used rarely must not turn common from the shrunk ones.
        if count < BATCH_SIZE && stacks.len() == count {
            let next = (count * 2).min(BATCH_SIZE);
            self.batch.fetch_max(next, Ordering::Relaxed);
        }
        Ok(stacks)
    }

    /// Moves up to `wanted` idle stacks into `into`, the most recently given back first.
    fn take_into(&self, into: &mut Vec<Stack>, wanted: usize) {
        if self.count.load(Ordering::Relaxed) == 0 {
            return;
        }
        let mut guard = lock(&self.idle);
        let idle = &mut *guard;
        // Cold ones first into `into`, so that the warm ones, pushed last, are taken first.
        let warm = wanted.min(idle.warm.len());
        let cold = (wanted - warm).min(idle.cold.len());
        into.extend(idle.cold.drain(idle.cold.len() - cold..));
        into.extend(idle.warm.drain(idle.warm.len() - warm..));
        let count = idle.warm.len() + idle.cold.len();
        self.count.store(count, Ordering::Relaxed);
    }

    /// Takes idle stacks back; no system call unless the pool is past [`IDLE_CAP`].
    fn put(&self, stacks: impl Iterator<Item = Stack>) {
        let count = {
            let mut idle = lock(&self.idle);
            idle.warm.extend(stacks);
            let count = idle.warm.len() + idle.cold.len();
            self.count.store(count, Ordering::Relaxed);
            let (keep_warm, keep_idle) = self.keep();
            if idle.warm.len() > keep_warm || count > keep_idle {
                TRIM_DUE.store(true, Ordering::Relaxed);
            }
            count
        };
        if count > IDLE_CAP {
            while self.trim_to_keep(TRIM_STEP) {}
        }
    }

    /// `trim` to this size's keep limits (see `keep`).
    fn trim_to_keep(&self, budget: usize) -> bool {
        let (keep_warm, keep_idle) = self.keep();
        self.trim(budget, keep_warm, keep_idle)
    }

    /// Releases up to `budget` idle stacks beyond the limits: unmaps the coldest beyond
    /// `keep_idle`, then releases the pages of the oldest warm ones beyond `keep_warm`.
    /// Returns whether stacks beyond the limits remain. The system calls are made outside
    /// the lock, one per run of neighbouring stacks.
    fn trim(&self, budget: usize, keep_warm: usize, keep_idle: usize) -> bool {
        if self.count.load(Ordering::Relaxed) == 0 {
            return false; // Most sizes, once a process has used many.
        }
        // 1. Pick, under the lock, the stacks to unmap and those to make cold.
        let (unmap, mut cool) = {
            let mut idle = lock(&self.idle);
            let excess = (idle.warm.len() + idle.cold.len()).saturating_sub(keep_idle);
            let from_cold = excess.min(idle.cold.len()).min(budget);
            let mut unmap: Vec<Stack> = idle.cold.drain(..from_cold).collect();
            // Oldest warm stacks first: the front of the list.
            let from_warm = (excess - from_cold).min(budget - unmap.len());
            unmap.extend(idle.warm.drain(..from_warm));
            let cool_count = idle
                .warm
                .len()
                .saturating_sub(keep_warm)
                .min(budget - unmap.len());
            let cool: Vec<Stack> = idle.warm.drain(..cool_count).collect();
            self.count
                .store(idle.warm.len() + idle.cold.len(), Ordering::Relaxed);
            (unmap, cool)
        };
        // 2. Unmap, then release pages, a run of neighbours at a time.
        unmap_runs(unmap);
        cool.sort_unstable_by_key(|stack| stack.range().start);
        let mut ranges: Vec<Range<usize>> = cool.iter().map(Stack::range).collect();
        for run in runs(&mut ranges) {
            release_pages(run);
        }
        // 3. The cooled stacks are idle again.
        let mut idle = lock(&self.idle);
        idle.cold.extend(cool);
        let count = idle.warm.len() + idle.cold.len();
        self.count.store(count, Ordering::Relaxed);
        idle.warm.len() > keep_warm || count > keep_idle
    }

    /// Unmaps idle stacks whatever the keep limits, the cold ones first, then (if
    /// `warm_too`) the oldest warm ones, until they counted for `mappings` memory
    /// mappings (or none is left); returns how many stacks and mappings.
    fn unmap_idle(&self, mappings: usize, warm_too: bool) -> (usize, usize) {
        if mappings == 0 || self.count.load(Ordering::Relaxed) == 0 {
            return (0, 0);
        }
        let (unmap, freed) = {
            let mut idle = lock(&self.idle);
            let (from_cold, mut freed) = front_counting(&idle.cold, mappings);
            let mut unmap: Vec<Stack> = idle.cold.drain(..from_cold).collect();
            if warm_too {
                let (from_warm, more) = front_counting(&idle.warm, mappings - freed);
                unmap.extend(idle.warm.drain(..from_warm));
                freed += more;
            }
            self.count
                .store(idle.warm.len() + idle.cold.len(), Ordering::Relaxed);
            (unmap, freed)
        };
        let stacks = unmap.len();
        unmap_runs(unmap);
        (stacks, freed)
    }
}

/// How many stacks from the front of `stacks` count for `mappings` memory mappings (all of
/// them if they count for fewer), and the mappings they count for.
fn front_counting(stacks: &[Stack], mappings: usize) -> (usize, usize) {
    let (mut taken, mut counted) = (0, 0);
    for stack in stacks {
        if counted >= mappings {
            break;
        }
        taken += 1;
        counted += stack.mappings;
    }
    (taken, counted)
}

/// Unmaps idle stacks taken out of a pool, one system call for each run of neighbours.
fn unmap_runs(stacks: Vec<Stack>) {
    let mut ranges: Vec<Range<usize>> = stacks.into_iter().map(Stack::into_range).collect();
    for run in runs(&mut ranges) {
        // SAFETY: every range of the run was owned by a stack given up by `into_range`
        // above: idle, in no pool, and nothing points into it.
        unsafe { libc::munmap(run.start as *mut libc::c_void, run.end - run.start) };
    }
}

/// Unmaps idle stacks of the shared parts of sizes other than `size` until they counted
/// for `mappings` memory mappings, to make room under the mapping limit for stacks of
/// `size`; returns how many stacks it unmapped. They go in the order a trim gives them
/// up: first every idle stack of the sizes that are not common (a trim keeps none of
/// them), then the cold stacks of common sizes, then their oldest warm ones. Stacks in
/// threads' slots and caches are not seen.
pub(super) fn reclaim(size: usize, mappings: usize) -> usize {
    let pools: Vec<&'static SharedPool> = lock(&SHARED_POOLS).clone();
    let (mut stacks, mut freed) = (0, 0);
    // (common sizes?, warm stacks too?) for each pass.
    for (common, warm_too) in [(false, true), (true, false), (true, true)] {
        for pool in pools
            .iter()
            .filter(|p| p.size != size && p.common() == common)
        {
            let (more_stacks, more_mappings) = pool.unmap_idle(mappings - freed, warm_too);
            stacks += more_stacks;
            freed += more_mappings;
            if freed >= mappings {
                return stacks;
            }
        }
    }
    stacks
}

/// Sorts `ranges` and merges neighbours: the runs that one system call each covers.
fn runs(ranges: &mut [Range<usize>]) -> Vec<Range<usize>> {
    ranges.sort_unstable_by_key(|range| range.start);
    let mut runs: Vec<Range<usize>> = Vec::new();
    for range in ranges.iter() {
        match runs.last_mut() {
            Some(last) if last.end == range.start => last.end = range.end,
            _ => runs.push(range.clone()),
        }
    }
    runs
}

/// Returns the pages of `run`, neighbouring idle stacks (guards included, which hold
/// none and keep their marks), to the OS.
fn release_pages(run: Range<usize>) {
    // SAFETY: the run is the mappings of idle stacks that the caller owns and no fiber
    // runs on; MADV_DONTNEED keeps them mapped and their guards in place.
    let rc = unsafe {
        libc::madvise(
            run.start as *mut libc::c_void,
            run.end - run.start,
            libc::MADV_DONTNEED,
        )
    };
    debug_assert_eq!(rc, 0, "madvise failed: {}", io::Error::last_os_error());
}

/// A thread's cache of idle stacks of one size, in front of the shared part.
#[derive(Debug)]
struct Cache {
    /// The shared part for the same size.
    shared: &'static SharedPool,
    /// Idle stacks, most recently given back last; at most `max`.
    stacks: Vec<Stack>,
    /// Most stacks kept: [`CACHE_MAX`] for a common size; 0 for another, whose stacks go
    /// to the shared part, where trims see them (raised when the size becomes common).
    max: usize,
}

impl Cache {
    /// An empty cache in front of `shared`.
    fn new(shared: &'static SharedPool) -> Cache {
        Cache {
            shared,
            stacks: Vec::new(),
            max: if shared.common() { CACHE_MAX } else { 0 },
        }
    }

    /// Raises `max` if the size has become common since; returns whether it is common.
    fn common(&mut self) -> bool {
        if self.max == 0 && self.shared.common() {
            self.max = CACHE_MAX;
        }
        self.max > 0
    }

    /// Makes sure the cache holds a stack: from the shared part, else a new batch.
    #[inline]
    fn refill(&mut self) -> io::Result<()> {
        if !self.stacks.is_empty() {
            return Ok(());
        }
        self.refill_empty()
    }

    /// `refill` of an empty cache, out of line: the common case holds a stack.
    #[cold]
    #[inline(never)]
    fn refill_empty(&mut self) -> io::Result<()> {
        // The stack wanted, and as many more as the cache keeps.
        let keep = if self.common() { CACHE_MAX } else { 1 };
        self.shared
            .take_into(&mut self.stacks, keep.min(CACHE_MOVE));
        if self.stacks.is_empty() {
            let mut batch = self.shared.map_batch()?;
            let spare = batch.len().saturating_sub(keep);
            if spare > 0 {
                self.shared.put(batch.drain(..spare));
            }
            // Highest address last, taken first: the order a fresh mapping is used in.
            self.stacks.extend(batch);
        }
        Ok(())
    }

    /// Keeps `stack`, passing [`CACHE_MOVE`] of the oldest to the shared part when full.
    fn put(&mut self, stack: Stack) {
        if self.stacks.len() >= self.max {
            return self.spill(stack);
        }
        self.stacks.push(stack);
    }

    /// `put` to a full cache, out of line: the common case has room.
    #[cold]
    #[inline(never)]
    fn spill(&mut self, stack: Stack) {
        if !self.common() {
            // Not a common size: to the shared part, where a trim sees it.
            return self.shared.put(std::iter::once(stack));
        }
        if self.stacks.len() >= self.max {
            self.shared.put(self.stacks.drain(..CACHE_MOVE));
        }
        self.stacks.push(stack);
    }
}

impl Drop for Cache {
    fn drop(&mut self) {
        // The thread exits: its idle stacks stay in the process for other threads.
        self.shared.put(self.stacks.drain(..));
    }
}

thread_local! {
    /// This thread's caches, one per stack size in use (usually one).
    static CACHES: RefCell<Vec<Cache>> = const { RefCell::new(Vec::new()) };
}

/// The stack this thread gave back last, in front of its caches: a fiber that ends and
/// the next one to start (a loop that spawns and joins, a join that runs the task it
/// waits for) trade it with no lookup by size and no borrow of the caches.
struct Slot {
    /// The size of the stack in the slot; 0 if it is empty.
    size: Cell<usize>,
    /// The stack.
    stack: Cell<Option<Stack>>,
}

impl Slot {
    /// Takes the stack if it has `size` (page-rounded) bytes.
    #[inline]
    fn take(&self, size: usize) -> Option<Stack> {
        if self.size.get() != size {
            return None;
        }
        self.size.set(0);
        self.stack.take()
    }

    /// Puts `stack` in the slot; returns the one it held.
    #[inline]
    fn replace(&self, stack: Stack) -> Option<Stack> {
        self.size.set(stack.size());
        self.stack.replace(Some(stack))
    }

    /// Empties the slot.
    fn clear(&self) -> Option<Stack> {
        self.size.set(0);
        self.stack.take()
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        // The thread exits: its stack stays in the process for other threads.
        if let Some(stack) = self.clear() {
            shared_pool(stack.size()).put(std::iter::once(stack));
        }
    }
}

thread_local! {
    /// This thread's slot (see `Slot`).
    static SLOT: Slot = const {
        Slot {
            size: Cell::new(0),
            stack: Cell::new(None),
        }
    };
}

/// Runs `f` on this thread's cache for stacks of `size` (page-rounded) bytes, made if
/// missing; `None` while the thread exits and its caches are gone.
fn with_cache<R>(size: usize, f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.borrow_mut();
            let index = match caches.iter().position(|c| c.shared.size == size) {
                Some(index) => index,
                None => {
                    caches.push(Cache::new(shared_pool(size)));
                    caches.len() - 1
                }
            };
            f(&mut caches[index])
        })
        .ok()
}

/// Takes a stack of `size` bytes from the process-wide pool (this thread's slot and cache
/// first), reserving a new batch if it is empty.
#[inline]
pub(crate) fn take(size: usize) -> io::Result<Stack> {
    let size = checked_size(size)?;
    match SLOT.try_with(|slot| slot.take(size)) {
        Ok(Some(stack)) => Ok(stack),
        _ => take_cached(size),
    }
}

/// `take` past the slot: from this thread's cache, or the shared part.
fn take_cached(size: usize) -> io::Result<Stack> {
    let taken = with_cache(size, |cache| {
        cache.refill()?;
        Ok(cache.stacks.pop().expect("refilled"))
    });
    match taken {
        Some(result) => result,
        // The thread exits: straight from the shared part, or one new stack.
        None => {
            let mut one = Vec::new();
            shared_pool(size).take_into(&mut one, 1);
            match one.pop() {
                Some(stack) => Ok(stack),
                None => Ok(batch::map_batch(size, 1, batch::guard_kind())?.remove(0)),
            }
        }
    }
}

/// Checks that a stack of `size` bytes can be had on this thread: one is in the slot, or
/// one is taken from the cache (or a new batch) and put there. A burst of spawns then
/// finds it there each time but the first.
#[inline]
pub(crate) fn reserve(size: usize) -> io::Result<()> {
    let size = checked_size(size)?;
    if SLOT.try_with(|slot| slot.size.get() == size) == Ok(true) {
        return Ok(());
    }
    fill_slot(size)
}

/// `reserve` with the slot empty or holding another size.
#[inline(never)]
fn fill_slot(size: usize) -> io::Result<()> {
    give_back(take_cached(size)?);
    Ok(())
}

/// Gives a stack back to the pool: no system call on this path (but past [`IDLE_CAP`]).
///
/// A call, with `give_back_cached` out of it: the slot's path then compiles to the same
/// short function whatever the slower paths hold, rather than as the compiler's inlining
/// heuristics decide at each caller (inlined into `Fiber`'s drop, it measured a few
/// percent slower on a loop that spawns and joins).
#[inline(never)]
pub(crate) fn give_back(stack: Stack) {
    // Into the slot; the stack it held, if any, goes on to the cache.
    let mut stack = Some(stack);
    let _ = SLOT.try_with(|slot| stack = slot.replace(stack.take().expect("once")));
    if let Some(stack) = stack {
        give_back_cached(stack);
    }
}

/// `give_back` past the slot: to this thread's cache, or the shared part.
#[inline(never)]
fn give_back_cached(stack: Stack) {
    let size = stack.size();
    let mut stack = Some(stack);
    with_cache(size, |cache| cache.put(stack.take().expect("once")));
    if let Some(stack) = stack {
        // The thread exits: to the shared part.
        shared_pool(size).put(std::iter::once(stack));
    }
}

/// Trims the pool a step if it holds more than the keep limits; returns whether it did
/// any work (the caller, an idle worker, then looks at its queues before trimming more).
pub(crate) fn trim_step() -> bool {
    if !TRIM_DUE.load(Ordering::Relaxed) {
        return false;
    }
    TRIM_DUE.store(false, Ordering::Relaxed);
    let pools: Vec<&'static SharedPool> = lock(&SHARED_POOLS).clone();
    let mut more = false;
    for pool in pools {
        more |= pool.trim_to_keep(TRIM_STEP);
    }
    if more {
        TRIM_DUE.store(true, Ordering::Relaxed);
    }
    true
}

/// Moves the calling thread's cached stacks (its slot's too) to the shared parts, so
/// that a trim sees them.
fn flush_cache() {
    if let Ok(Some(stack)) = SLOT.try_with(Slot::clear) {
        shared_pool(stack.size()).put(std::iter::once(stack));
    }
    let _ = CACHES.try_with(|caches| {
        for cache in caches.borrow_mut().iter_mut() {
            cache.shared.put(cache.stacks.drain(..));
        }
    });
}

/// Trims the process-wide pool now, as an idle worker of a runtime does: of each common
/// stack size (see the [module docs](super#the-pool)), [`KEEP_WARM`] idle stacks keep
/// their pages, [`KEEP_IDLE`] stay mapped, the rest are unmapped; of other sizes, every
/// idle stack is unmapped. Stacks cached by other threads (at most 64 of each common size
/// a thread, and the one in its slot) are not touched.
///
/// # Examples
///
/// ```
/// use green::stack::{self, KEEP_IDLE};
///
/// green::run(|| {
///     let fibers: Vec<_> = (0..100).map(|i| green::spawn(move || i)).collect();
///     fibers.into_iter().for_each(|f| drop(f.join()));
/// });
/// stack::trim_pools();
/// assert!(stack::pool_stats(stack::DEFAULT_STACK_SIZE).idle() <= KEEP_IDLE);
/// ```
pub fn trim_pools() {
    flush_cache();
    let pools: Vec<&'static SharedPool> = lock(&SHARED_POOLS).clone();
    for pool in pools {
        while pool.trim_to_keep(usize::MAX) {}
    }
}

/// Unmaps every idle stack of the process-wide pool (and of the calling thread's slot and
/// cache), and gives the recycled memory of finished tasks (see the README's "Task
/// memory") back to the allocator: for a process that is done with fibers for a long
/// while. Other threads' slots and caches are not touched.
pub fn release_pools() {
    crate::sys::blocks::release();
    flush_cache();
    let pools: Vec<&'static SharedPool> = lock(&SHARED_POOLS).clone();
    for pool in pools {
        while pool.trim(usize::MAX, 0, 0) {}
    }
}

/// Figures about the idle stacks of one size in the process-wide pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Idle stacks that may hold pages: the shared part's warm ones and the calling
    /// thread's slot and cache.
    pub warm: usize,
    /// Idle stacks whose pages were released.
    pub cold: usize,
    /// Bytes of memory the idle stacks counted hold (resident pages, by `mincore`).
    pub resident_bytes: usize,
}

impl PoolStats {
    /// Idle stacks counted, warm and cold.
    pub fn idle(&self) -> usize {
        self.warm + self.cold
    }
}

/// Figures about the process-wide pool's idle stacks of `stack_size` bytes (rounded to
/// pages as [`Stack::new`] does): its shared part and the calling thread's slot and
/// cache; other threads' (one stack in a slot, and up to 64 in a cache of a common size)
/// are not counted.
///
/// # Examples
///
/// ```
/// use green::fiber::Fiber;
/// use green::stack::pool_stats;
///
/// // A size of its own: the pool is the process's, shared with other code.
/// const SIZE: usize = 72 * 1024;
/// // SAFETY: the fiber is not leaked while started.
/// let mut fiber = unsafe { Fiber::with_stack_size(SIZE, |_| 1) }.unwrap();
/// fiber.resume();
/// let before = pool_stats(SIZE).idle();
/// drop(fiber); // its stack goes back to the pool
/// assert_eq!(pool_stats(SIZE).idle(), before + 1);
/// ```
pub fn pool_stats(stack_size: usize) -> PoolStats {
    let Ok(size) = checked_size(stack_size) else {
        return PoolStats::default();
    };
    let resident = |stacks: &[Stack]| -> usize {
        stacks.iter().map(|s| s.resident_bytes().unwrap_or(0)).sum()
    };
    let mut stats = with_cache(size, |cache| PoolStats {
        warm: cache.stacks.len(),
        cold: 0,
        resident_bytes: resident(&cache.stacks),
    })
    .unwrap_or_default();
    let _ = SLOT.try_with(|slot| {
        if let Some(stack) = slot.take(size) {
            stats.warm += 1;
            stats.resident_bytes += stack.resident_bytes().unwrap_or(0);
            slot.replace(stack);
        }
    });
    let idle = lock(&shared_pool(size).idle);
    stats.warm += idle.warm.len();
    stats.cold += idle.cold.len();
    stats.resident_bytes += resident(&idle.warm) + resident(&idle.cold);
    stats
}

/// Whether stacks of this process get guard regions (one mapping per batch) rather than
/// `PROT_NONE` mappings: for tests and benchmarks to report.
pub fn guard_regions() -> bool {
    batch::guard_kind() == GuardKind::Region
}
