//! Fiber stacks: `mmap`'d, guarded, committed only as touched, and pooled.
//!
//! # Layout
//!
//! ```text
//!   base                 base + guard                                 base + len = top
//!   +--------------------+--------------------------------------------+
//!   | guard (no access)  | usable: PROT_READ | PROT_WRITE, grows down |
//!   +--------------------+--------------------------------------------+
//! ```
//!
//! The guard is [`GUARD_SIZE`] bytes rounded up to whole pages: one page, except on
//! riscv64 (see [`GUARD_SIZE`] for why). It is part of the stack's mapping, made to fault
//! on access (see *Guards* below): it costs address space, never memory, and does not
//! count in [`Stack::size`].
//!
//! The mapping is `MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK`: no swap is
//! reserved and the kernel commits a page only when it is first touched, so a stack that
//! never grows past its first page costs one page of memory whatever its size.
//!
//! # Why the default is 256 KiB
//!
//! Fibers run ordinary synchronous code: formatting, std I/O, name resolution through the
//! C library, and panics that print backtraces (symbolizing one takes tens of KiB of
//! stack). 256 KiB runs all of those with room to spare, while one million parked fibers
//! still need only 256 GiB of *address space* (of the 128 TiB a process has) and, thanks to
//! lazy commit, a few KiB each of memory. Threads get 2 MiB from std; Go starts goroutines
//! at 8 KiB but can move and grow them, which a stack that native code points into cannot
//! do.
//!
//! # The pool
//!
//! Every fiber of every runtime (and every [`Fiber`](crate::fiber::Fiber) made without a
//! stack of its own) takes its stack from one process-wide pool per stack size, and gives
//! it back when it ends. The kernel charges for each step of a fresh stack (`mmap` and the
//! guard about 1.4 µs, the first touch of its top page a page fault, `munmap` about
//! 2.8 µs and a TLB shootdown once the process has several threads), so the pool is built
//! to pay each of them as seldom as possible, and never on a fiber's way out:
//!
//! * **Reserved in batches.** When the pool is empty, one `mmap` reserves
//!   [`BATCH_SIZE`] stacks (64; fewer near the mapping limit) of a *common* size (see
//!   below) and their guards are made in the same pass (see *Guards* below).
//! * **Cached per thread.** Each thread keeps up to 64 idle stacks of each common size at
//!   hand and trades 32 at a time with the shared part under one lock, so that spawning
//!   and ending fibers takes no lock most of the time, and a stack freed on one worker
//!   serves a fiber started on another. In front of the caches, one slot per thread holds
//!   the stack it gave back last: a fiber that ends hands it to the next one started, and
//!   a spawn's check that a stack can be had reads the slot's size, with no lookup of the
//!   cache.
//! * **Given back with no system call.** A finished fiber's stack goes back to the pool as
//!   it is, pages and all.
//! * **Trimmed off the hot path.** When a runtime's worker runs out of work (and when a
//!   runtime shuts down), it trims the pool if it holds more than the keep limits:
//!   [`KEEP_WARM`] idle stacks of each common size (256) keep their pages, for reuse
//!   without a page fault; up to [`KEEP_IDLE`] (4096) stay mapped with their pages
//!   released (`madvise(MADV_DONTNEED)`: reuse costs a page fault, not a system call); the
//!   rest are unmapped, and so is every idle stack of a size that is not common. The
//!   oldest idle stacks go first, and neighbours go together: one system call for each
//!   run of adjacent stacks, so that 30 000 fibers ending together cost some 500 `munmap`
//!   calls at the next idle moment, not 30 000 on their way out. A worker trims at most
//!   4096 stacks before it looks at its queues again. A process with no runtime worker to
//!   trim (fibers made by hand on plain threads) is trimmed inline once more than 65 536
//!   stacks of one size are idle; [`trim_pools`] and [`release_pools`] trim or empty the
//!   pool on demand.
//!
//! Stacks of a thread that exits go to the shared part, so that they serve the next
//! runtime: a runtime dropped and made again maps no new stacks.
//!
//! ## Common sizes
//!
//! A process may use any number of stack sizes (a task's size can be computed), and a
//! size that got a batch of 64, a cache of 64 on each thread and 4096 idle stacks past a
//! trim would keep thousands of stacks mapped for a fiber that ran once: a few hundred
//! such sizes would take every mapping the kernel allows. So a size earns the pool's
//! reserves by use. Its first batch is **one** stack, and each batch after maps twice as
//! many as the last: 1, 2, 4, ... 32, then 64. A size whose batches have reached 64 (after
//! six batches, 63 stacks, for fibers alive at once or in turn between trims) is *common*:
//! the batches, caches and keep limits above are for it. The default size
//! ([`DEFAULT_STACK_SIZE`]) and every runtime's stack size are common from the start, so
//! their path is the one described above. The stacks of a size that is not common skip
//! the threads' caches for the shared part (one lock, on a path such a size takes seldom),
//! where a trim unmaps every one of them that is idle, and so does a new batch of another
//! size that is not common (a runtime that never idles would not trim). So a size used
//! once by a spawn maps one stack (three, if its task started on another worker than its
//! spawner), idle from its fiber's end until the next trim or such batch, or until the
//! slot it lies in takes another stack; and a size used often but never by many fibers
//! at once pays at most six maps before it is common.
//!
//! # Guards
//!
//! Where the kernel has *guard regions* (Linux 6.13 and later), a batch's guards are
//! installed with `madvise(MADV_GUARD_INSTALL)`: a fault on access, like `PROT_NONE`, but
//! kept in the page tables, so a batch of 64 stacks is **one** memory mapping. Elsewhere
//! (older kernels, QEMU's user mode) each guard is `mprotect`ed, a mapping of its own.
//! [`guard_regions`] tells which applies; `GREEN_STACK_GUARD=mprotect` in the environment
//! forces the second. [`Stack::new`] always makes the second kind, a mapping of its own.
//!
//! # Address-space limits
//!
//! Linux caps a process at `vm.max_map_count` mappings (65530 by default). green counts
//! every stack alive (idle ones in the pool included) against it, leaving
//! [`RESERVED_MAPPINGS`] to the rest of the process: one mapping for a stack with a guard
//! region, two for one with a `PROT_NONE` guard. So about 61 000 fibers can be live at once
//! by default with guard regions, 30 000 without. Near the limit a batch shrinks to what
//! still fits, so no stack of capacity is lost to batching. When not one more stack fits,
//! green unmaps idle stacks of other sizes from the pool's shared part to make room, in
//! the order a trim gives them up (every idle stack of sizes that are not common, then
//! the cold stacks of common sizes, then their oldest warm ones), and tries once more.
//! Only the stacks in threads' slots and caches are out of its reach: one a thread, and
//! up to 64 a thread of each common size. Past that, stack creation returns an error that
//! names the limit and the sysctl that raises it.

use std::fmt;
use std::io;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicUsize, Ordering};

mod batch;
mod pool;

pub use pool::{
    BATCH_SIZE, KEEP_IDLE, KEEP_WARM, PoolStats, StackPool, guard_regions, pool_stats,
    release_pools, trim_pools,
};
pub(crate) use pool::{give_back, make_common, reserve, take, trim_step};

/// The stack size fibers get when none is given: 256 KiB (see the module docs for why).
pub const DEFAULT_STACK_SIZE: usize = 256 * 1024;

/// The smallest stack size accepted: 16 KiB.
///
/// Below this, a panic message or a `println!` alone could overflow the stack.
pub const MIN_STACK_SIZE: usize = 16 * 1024;

/// The largest stack size accepted: 16 GiB.
pub const MAX_STACK_SIZE: usize = 16 * 1024 * 1024 * 1024;

/// Bytes of the `PROT_NONE` guard below every stack's usable part, before rounding up to
/// whole pages: 4 KiB (one page) on x86_64 and aarch64, 64 KiB on riscv64.
///
/// A fiber that overflows its stack faults in the guard, and green's handler names the
/// fiber and aborts (see `overflow`). That works only if the first byte a new
/// frame touches below the stack lies in the guard. On x86_64 and aarch64 rustc emits stack
/// probes: a frame larger than a page touches each page as it grows down, so one page of
/// guard catches every frame. For `riscv64gc-unknown-linux-gnu` it emits none (the target
/// spec sets none), and a frame's first write may lie as far below the stack
/// pointer of its caller as the frame is large: over a one-page guard, into whatever is
/// mapped below, often another fiber's stack, corrupted without a fault. There the guard
/// is 64 KiB, so that frames of up to about 60 KiB (a 32 KiB local array with room to
/// spare) still fault in it; larger buffers belong on the heap (`Box`, `Vec`).
///
/// The deeper guard is part of the same mapping, made `PROT_NONE`: it takes address space
/// (64 KiB a stack, 64 GiB for a million fibers, of the 128 TiB a process has), no
/// memory, and no extra kernel mapping: a stack is still the two that
/// `vm.max_map_count` counts.
pub const GUARD_SIZE: usize = if cfg!(target_arch = "riscv64") {
    64 * 1024
} else {
    4 * 1024
};

/// An `mmap`'d fiber stack with a `PROT_NONE` guard ([`GUARD_SIZE`]) at its low end.
///
/// Dropping it unmaps it. Fibers take their stacks from the process-wide pool, so most
/// code never creates a `Stack` directly.
///
/// # Examples
///
/// ```
/// let stack = green::stack::Stack::new(64 * 1024).unwrap();
/// assert_eq!(stack.size(), 64 * 1024);
/// assert_eq!(stack.top() as usize % 16, 0);
/// ```
pub struct Stack {
    /// Lowest address of the mapping, where the guard starts. Page aligned.
    base: NonNull<u8>,
    /// Length of the whole mapping in bytes, guard included; a multiple of the page.
    len: usize,
    /// The id Valgrind gave this stack when it was registered, 0 outside Valgrind.
    valgrind_id: usize,
    /// Memory mappings this stack counts for in [`LIVE_MAPPINGS`] (see `Charge`).
    mappings: usize,
}

// SAFETY: a `Stack` owns its mapping exclusively, like a `Vec<u8>` owns its buffer; no
// thread-local state is attached to it.
unsafe impl Send for Stack {}

impl Stack {
    /// Maps a new stack with `size` usable bytes (rounded up to whole pages) above a guard
    /// of [`GUARD_SIZE`] bytes.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::InvalidInput`] if `size` is below [`MIN_STACK_SIZE`] or above
    ///   [`MAX_STACK_SIZE`].
    /// * [`io::ErrorKind::OutOfMemory`] if `mmap` or `mprotect` fails for lack of memory or
    ///   of mappings; the message names `vm.max_map_count` and how to raise it. Nothing
    ///   stays mapped in that case.
    pub fn new(size: usize) -> io::Result<Stack> {
        let usable = checked_size(size)?;
        // A batch of one, its guard `mprotect`ed: the mapping splits in two, the two that
        // its charge counts, whatever guard kind batches use here.
        let mut stacks = batch::map_batch(usable, 1, batch::GuardKind::Protected)?;
        Ok(stacks.remove(0))
    }

    /// A stack owning `base..base + len`, guard made, already counted for `mappings`
    /// mappings; registered with Valgrind here.
    ///
    /// # Safety
    ///
    /// `base..base + len` is mapped read-write above a guard of `guard_len()` bytes, owned
    /// by no other `Stack`, and `len` is a whole number of pages above the guard.
    pub(crate) unsafe fn from_parts(base: NonNull<u8>, len: usize, mappings: usize) -> Stack {
        let mut stack = Stack {
            base,
            len,
            valgrind_id: 0,
            mappings,
        };
        stack.valgrind_id = crate::sys::valgrind::stack_register(stack.bottom(), stack.top());
        stack
    }

    /// Gives up the stack without unmapping it: uncounts it and returns its range, which
    /// the caller unmaps (with its neighbours, in one call).
    pub(crate) fn into_range(self) -> std::ops::Range<usize> {
        let stack = std::mem::ManuallyDrop::new(self);
        LIVE_MAPPINGS.fetch_sub(stack.mappings, Ordering::Relaxed);
        crate::sys::valgrind::stack_deregister(stack.valgrind_id);
        stack.range()
    }

    /// The whole mapping the stack owns, guard included.
    pub(crate) fn range(&self) -> std::ops::Range<usize> {
        let base = self.base.as_ptr() as usize;
        base..base + self.len
    }

    /// Usable bytes, guard excluded.
    #[inline]
    pub fn size(&self) -> usize {
        self.len - guard_len()
    }

    /// The highest address of the stack (exclusive); 16-byte aligned. Stacks grow down
    /// from here.
    #[inline]
    pub fn top(&self) -> *mut u8 {
        // SAFETY: `base + len` is one past the end of the mapping.
        unsafe { self.base.as_ptr().add(self.len) }
    }

    /// The lowest usable address, just above the guard.
    #[inline]
    pub fn bottom(&self) -> *mut u8 {
        // SAFETY: the guard is the first `guard_len()` bytes of the mapping.
        unsafe { self.base.as_ptr().add(guard_len()) }
    }

    /// The guard's address range: [`GUARD_SIZE`] bytes rounded up to whole pages, just
    /// below [`bottom`](Stack::bottom).
    #[inline]
    pub fn guard(&self) -> std::ops::Range<usize> {
        self.base.as_ptr() as usize..self.bottom() as usize
    }

    /// Bytes of the usable region that are resident in memory now, as `mincore` reports.
    ///
    /// # Errors
    ///
    /// Whatever `mincore` returns; it does not fail on a live stack.
    pub fn resident_bytes(&self) -> io::Result<usize> {
        resident_bytes_in(self.bottom() as usize..self.top() as usize)
    }

    /// Returns the pages of the usable region to the OS; they read as zero when touched
    /// again.
    pub(super) fn release_pages(&self) {
        // SAFETY: the usable region is a private anonymous mapping owned by `self`, and no
        // fiber runs on a stack that is being released (it is idle in a pool).
        let rc = unsafe { libc::madvise(self.bottom().cast(), self.size(), libc::MADV_DONTNEED) };
        debug_assert_eq!(rc, 0, "madvise failed: {}", io::Error::last_os_error());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        LIVE_MAPPINGS.fetch_sub(self.mappings, Ordering::Relaxed);
        crate::sys::valgrind::stack_deregister(self.valgrind_id);
        // SAFETY: `base..base + len` is the mapping this stack owns; nothing runs on it any
        // more (a fiber gives its stack back only once it has ended).
        unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) };
    }
}

impl fmt::Debug for Stack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stack")
            .field("bottom", &self.bottom())
            .field("top", &self.top())
            .field("size", &self.size())
            .finish()
    }
}

/// Bytes of the pages of `range` (page aligned) that are resident in memory now, as
/// `mincore` reports; an error if part of it is not mapped.
pub(crate) fn resident_bytes_in(range: std::ops::Range<usize>) -> io::Result<usize> {
    let page = page_size();
    let len = range.end.saturating_sub(range.start);
    let mut vec = vec![0u8; len.div_ceil(page)];
    // SAFETY: mincore only writes `vec`, one byte per page of the range; the kernel checks
    // the range itself (ENOMEM if unmapped, EINVAL if unaligned).
    let rc = unsafe { libc::mincore(range.start as *mut libc::c_void, len, vec.as_mut_ptr()) };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(vec.iter().filter(|&&b| b & 1 != 0).count() * page)
}

/// Checks a requested stack size and rounds it up to whole pages.
///
/// Inlined, with the errors out of line: this runs twice on every spawn.
#[inline]
pub(crate) fn checked_size(size: usize) -> io::Result<usize> {
    if !(MIN_STACK_SIZE..=MAX_STACK_SIZE).contains(&size) {
        return Err(size_error(size));
    }
    // A mask, not a division: the page size is a power of two.
    let page = page_size();
    Ok((size + page - 1) & !(page - 1))
}

/// Why `size` is no stack size: below [`MIN_STACK_SIZE`] or above [`MAX_STACK_SIZE`].
#[cold]
#[inline(never)]
fn size_error(size: usize) -> io::Error {
    let message = if size < MIN_STACK_SIZE {
        format!(
            "fiber stack size of {size} bytes is too small: the minimum is \
             {MIN_STACK_SIZE} bytes (16 KiB), the default {DEFAULT_STACK_SIZE} bytes"
        )
    } else {
        format!(
            "fiber stack size of {size} bytes is too large: the maximum is \
             {MAX_STACK_SIZE} bytes (16 GiB)"
        )
    };
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// Memory mappings left to the rest of the process (malloc's large blocks, thread stacks,
/// libraries) when green counts its stacks against `vm.max_map_count`: without this
/// margin, the last stacks would take the mappings `malloc` needs, and the process would
/// abort on an allocation failure instead of getting a clear error.
pub const RESERVED_MAPPINGS: usize = 4096;

/// Memory mappings counted for the stacks alive in the process (idle ones in pools
/// included): an upper bound on the mappings they take.
static LIVE_MAPPINGS: AtomicUsize = AtomicUsize::new(0);

/// The last value read of `vm.max_map_count`; 0 before the first read.
static MAP_LIMIT: AtomicUsize = AtomicUsize::new(0);

/// Reads `vm.max_map_count` (65530, the kernel's default, if it cannot be read).
fn read_map_limit() -> usize {
    let limit = std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530);
    MAP_LIMIT.store(limit, Ordering::Relaxed);
    limit
}

/// Stacks counted against the mapping limit, `per_stack` mappings each, before they are
/// made; uncounted on drop, unless handed over to the stacks made (whose own `Drop`
/// uncounts them).
pub(crate) struct Charge {
    /// Stacks counted.
    stacks: usize,
    /// Mappings each stack counts for.
    per_stack: usize,
}

impl Charge {
    /// Counts as many stacks of `size` bytes as fit below the limit, up to `wanted` (at
    /// least 1). If not one fits without eating into the reserved mappings, unmaps idle
    /// stacks of other sizes from the pool to make room for `wanted` and tries once more
    /// before it refuses.
    pub(crate) fn acquire_up_to(
        wanted: usize,
        per_stack: usize,
        size: usize,
    ) -> io::Result<Charge> {
        let wanted = wanted.max(1);
        if let Some(charge) = Charge::try_acquire(wanted, per_stack) {
            return Ok(charge);
        }
        let unmapped = pool::reclaim(size, wanted * per_stack);
        Charge::try_acquire(wanted, per_stack).ok_or_else(|| {
            let counted = "green's count of stacks, live or idle in its pool, reached it";
            let cause = match unmapped {
                0 => format!("{counted}, with no idle stack of another size free to unmap"),
                1 => format!("{counted}, even after unmapping an idle stack of another size"),
                n => format!("{counted}, even after unmapping {n} idle stacks of other sizes"),
            };
            limit_error(size, &cause)
        })
    }

    /// Counts as many stacks as fit below the limit, up to `wanted` (at least 1); `None`
    /// if not one fits.
    fn try_acquire(wanted: usize, per_stack: usize) -> Option<Charge> {
        let live = LIVE_MAPPINGS.fetch_add(wanted * per_stack, Ordering::Relaxed);
        let mut charge = Charge {
            stacks: wanted,
            per_stack,
        };
        let limit = match MAP_LIMIT.load(Ordering::Relaxed) {
            0 => read_map_limit(),
            limit => limit,
        };
        let room = |limit: usize| limit.saturating_sub(RESERVED_MAPPINGS + live) / per_stack;
        if room(limit) >= wanted {
            return Some(charge);
        }
        // Read again before refusing: the limit may have been raised since.
        let fit = room(read_map_limit()).min(wanted);
        charge.shrink_to(fit);
        (fit > 0).then_some(charge)
    }

    /// Stacks counted.
    pub(crate) fn stacks(&self) -> usize {
        self.stacks
    }

    /// Uncounts all stacks but `stacks`.
    pub(crate) fn shrink_to(&mut self, stacks: usize) {
        let excess = self.stacks.saturating_sub(stacks);
        LIVE_MAPPINGS.fetch_sub(excess * self.per_stack, Ordering::Relaxed);
        self.stacks -= excess;
    }

    /// The stacks were made: from now on each one's `Drop` uncounts it.
    pub(crate) fn hand_over(self) {
        std::mem::forget(self);
    }
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.shrink_to(0);
    }
}

/// Turns a failed `mmap`/`mprotect` into an error that says what to do about it.
pub(crate) fn map_error(call: &str, err: io::Error, size: usize) -> io::Error {
    if err.raw_os_error() != Some(libc::ENOMEM) {
        return io::Error::new(
            err.kind(),
            format!("cannot map a fiber stack of {size} bytes: {call} failed: {err}"),
        );
    }
    limit_error(
        size,
        &format!("{call} failed: {err}; the process is out of address space or of memory mappings"),
    )
}

/// The error for a stack refused at the mapping limit.
fn limit_error(size: usize, cause: &str) -> io::Error {
    let limit = MAP_LIMIT.load(Ordering::Relaxed);
    let per_stack = batch::guard_kind().mappings_per_stack();
    let (takes, raise) = match per_stack {
        1 => ("1 (its guard is a guard region)", 1_100_000),
        _ => ("up to 2 (its guard is a mapping of its own)", 2_200_000),
    };
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "cannot map a fiber stack of {size} bytes: {cause}. Linux allows a process \
             vm.max_map_count memory mappings (now {limit}); every guarded fiber stack takes \
             {takes} and green leaves {RESERVED_MAPPINGS} to the rest of the process, so \
             about {} fibers can be live at once. Raise the limit with \
             `sysctl -w vm.max_map_count={raise}` (as root; about a million fibers), or keep \
             fewer fibers alive",
            limit.saturating_sub(RESERVED_MAPPINGS) / per_stack,
        ),
    )
}

/// Bytes of the guard below each stack: [`GUARD_SIZE`] rounded up to whole pages.
#[inline]
pub(crate) fn guard_len() -> usize {
    let page = page_size();
    // A mask, as in `checked_size`: the page size is a power of two.
    (GUARD_SIZE + page - 1) & !(page - 1)
}

/// The system page size, read once.
#[inline]
pub(crate) fn page_size() -> usize {
    match PAGE.load(Ordering::Relaxed) {
        0 => read_page_size(),
        page => page,
    }
}

/// The page size once read; 0 before.
static PAGE: AtomicUsize = AtomicUsize::new(0);

/// Reads the page size from the system and keeps it in [`PAGE`].
#[cold]
#[inline(never)]
fn read_page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    let page = usize::try_from(page)
        .ok()
        .filter(|p| p.is_power_of_two())
        .unwrap_or(4096);
    PAGE.store(page, Ordering::Relaxed);
    page
}
