//! Fiber stacks: `mmap`'d, guarded, committed only as touched, and pooled.
//!
//! # Layout
//!
//! ```text
//!   base                 base + guard                                 base + len = top
//!   +--------------------+--------------------------------------------+
//!   | guard (PROT_NONE)  | usable: PROT_READ | PROT_WRITE, grows down |
//!   +--------------------+--------------------------------------------+
//! ```
//!
//! The guard is [`GUARD_SIZE`] bytes rounded up to whole pages: one page, except on
//! riscv64 (see [`GUARD_SIZE`] for why). It is part of the stack's one mapping, made
//! `PROT_NONE` with `mprotect`: it costs address space, never memory, and does not count
//! in [`Stack::size`].
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
//! # Costs that shape the pool
//!
//! Making a stack (mmap, mprotect, first touch) and unmapping it costs 10-14 µs, so freed
//! stacks go to a per-thread [`StackPool`]. Up to `max_warm` idle stacks keep their pages
//! for instant reuse; idle stacks beyond that high-water mark hand their pages back to the
//! OS with `madvise(MADV_DONTNEED)` and stay mapped (reuse then costs page faults, not
//! syscalls), and past `max_cold` of those a freed stack is unmapped.
//!
//! # Address-space limits
//!
//! Each guarded stack is two kernel memory mappings (the guard and the usable part, however
//! deep the guard), and
//! Linux caps a process at `vm.max_map_count` mappings (65530 by default), so about 30 000
//! stacks can be live at once by default. Past that, [`Stack::new`] returns an error that
//! names the limit and the sysctl that raises it.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicUsize, Ordering};

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

/// Idle stacks a thread's pool keeps with their pages by default.
const DEFAULT_MAX_WARM: usize = 16;

/// Idle stacks a thread's pool keeps mapped without their pages by default.
const DEFAULT_MAX_COLD: usize = 1024;

/// An `mmap`'d fiber stack with a `PROT_NONE` guard ([`GUARD_SIZE`]) at its low end.
///
/// Dropping it unmaps it. Fibers take their stacks from the calling thread's pool, so most
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
        let guard = guard_len();
        let len = usable + guard;
        let _count = StackCount::acquire(usable)?;
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
            return Err(map_error("mmap", io::Error::last_os_error(), usable));
        }
        // From here the stack's own `Drop` gives the count back.
        std::mem::forget(_count);
        let stack = Stack {
            // SAFETY: mmap succeeded, so `base` is not null.
            base: unsafe { NonNull::new_unchecked(base.cast()) },
            len,
            valgrind_id: 0,
        };
        // One mprotect for the whole guard, however deep: the mapping splits in two, the
        // two that `StackCount` counts.
        // SAFETY: the guard's pages lie inside the mapping just made. On failure `stack` is
        // dropped, which unmaps the whole region: no half-made stack stays behind.
        if unsafe { libc::mprotect(base, guard, libc::PROT_NONE) } != 0 {
            return Err(map_error("mprotect", io::Error::last_os_error(), usable));
        }
        let mut stack = stack;
        stack.valgrind_id = valgrind::stack_register(stack.bottom(), stack.top());
        Ok(stack)
    }

    /// Usable bytes, guard excluded.
    pub fn size(&self) -> usize {
        self.len - guard_len()
    }

    /// The highest address of the stack (exclusive); 16-byte aligned. Stacks grow down
    /// from here.
    pub fn top(&self) -> *mut u8 {
        // SAFETY: `base + len` is one past the end of the mapping.
        unsafe { self.base.as_ptr().add(self.len) }
    }

    /// The lowest usable address, just above the guard.
    pub fn bottom(&self) -> *mut u8 {
        // SAFETY: the guard is the first `guard_len()` bytes of the mapping.
        unsafe { self.base.as_ptr().add(guard_len()) }
    }

    /// The guard's address range: [`GUARD_SIZE`] bytes rounded up to whole pages, just
    /// below [`bottom`](Stack::bottom).
    pub fn guard(&self) -> std::ops::Range<usize> {
        self.base.as_ptr() as usize..self.bottom() as usize
    }

    /// Bytes of the usable region that are resident in memory now, as `mincore` reports.
    ///
    /// # Errors
    ///
    /// Whatever `mincore` returns; it does not fail on a live stack.
    pub fn resident_bytes(&self) -> io::Result<usize> {
        let page = page_size();
        let pages = self.size() / page;
        let mut vec = vec![0u8; pages];
        // SAFETY: the usable region is mapped and page aligned; `vec` has one byte per page.
        let rc = unsafe { libc::mincore(self.bottom().cast(), self.size(), vec.as_mut_ptr()) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(vec.iter().filter(|&&b| b & 1 != 0).count() * page)
    }

    /// Returns the pages of the usable region to the OS; they read as zero when touched
    /// again.
    fn release_pages(&self) {
        // SAFETY: the usable region is a private anonymous mapping owned by `self`, and no
        // fiber runs on a stack that is being released (it is idle in a pool).
        let rc = unsafe { libc::madvise(self.bottom().cast(), self.size(), libc::MADV_DONTNEED) };
        debug_assert_eq!(rc, 0, "madvise failed: {}", io::Error::last_os_error());
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        LIVE_STACKS.fetch_sub(1, Ordering::Relaxed);
        valgrind::stack_deregister(self.valgrind_id);
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

/// Checks a requested stack size and rounds it up to whole pages.
fn checked_size(size: usize) -> io::Result<usize> {
    if size < MIN_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fiber stack size of {size} bytes is too small: the minimum is \
                 {MIN_STACK_SIZE} bytes (16 KiB), the default {DEFAULT_STACK_SIZE} bytes"
            ),
        ));
    }
    if size > MAX_STACK_SIZE {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "fiber stack size of {size} bytes is too large: the maximum is \
                 {MAX_STACK_SIZE} bytes (16 GiB)"
            ),
        ));
    }
    // A mask, not a division: the page size is a power of two, and this runs on every
    // spawn.
    let page = page_size();
    Ok((size + page - 1) & !(page - 1))
}

/// Memory mappings left to the rest of the process (malloc's large blocks, thread stacks,
/// libraries) when green counts its stacks against `vm.max_map_count`: without this
/// margin, the last stacks would take the mappings `malloc` needs, and the process would
/// abort on an allocation failure instead of getting a clear error.
pub const RESERVED_MAPPINGS: usize = 4096;

/// Stacks alive in the process.
static LIVE_STACKS: AtomicUsize = AtomicUsize::new(0);

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

/// One stack counted against the mapping limit; uncounted on drop unless forgotten (then
/// the stack's own `Drop` uncounts it).
struct StackCount;

impl StackCount {
    /// Counts one more stack, or refuses if it would eat into the reserved mappings.
    fn acquire(size: usize) -> io::Result<StackCount> {
        let live = LIVE_STACKS.fetch_add(1, Ordering::Relaxed) + 1;
        let count = StackCount;
        let needed = 2 * live + RESERVED_MAPPINGS;
        let limit = match MAP_LIMIT.load(Ordering::Relaxed) {
            0 => read_map_limit(),
            limit => limit,
        };
        // Read again before refusing: the limit may have been raised since.
        if needed > limit && needed > read_map_limit() {
            return Err(limit_error(size, "green's count of live stacks reached it"));
        }
        Ok(count)
    }
}

impl Drop for StackCount {
    fn drop(&mut self) {
        LIVE_STACKS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Turns a failed `mmap`/`mprotect` into an error that says what to do about it.
fn map_error(call: &str, err: io::Error, size: usize) -> io::Error {
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
    io::Error::new(
        io::ErrorKind::OutOfMemory,
        format!(
            "cannot map a fiber stack of {size} bytes: {cause}. Linux allows a process \
             vm.max_map_count memory mappings (now {limit}); every guarded fiber stack takes \
             2 and green leaves {RESERVED_MAPPINGS} to the rest of the process, so about {} \
             fibers can be live at once. Raise the limit with \
             `sysctl -w vm.max_map_count=2200000` (as root; about a million fibers), or keep \
             fewer fibers alive",
            limit.saturating_sub(RESERVED_MAPPINGS) / 2,
        ),
    )
}

/// Bytes of the guard below each stack: [`GUARD_SIZE`] rounded up to whole pages.
fn guard_len() -> usize {
    let page = page_size();
    // A mask, as in `checked_size`: the page size is a power of two.
    (GUARD_SIZE + page - 1) & !(page - 1)
}

/// The system page size, read once.
pub(crate) fn page_size() -> usize {
    static PAGE: AtomicUsize = AtomicUsize::new(0);
    match PAGE.load(Ordering::Relaxed) {
        0 => {
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
            let page = usize::try_from(page)
                .ok()
                .filter(|p| p.is_power_of_two())
                .unwrap_or(4096);
            PAGE.store(page, Ordering::Relaxed);
            page
        }
        page => page,
    }
}

/// Idle stacks of one size, kept for reuse.
///
/// [`get`](StackPool::get) hands out the most recently freed stack whose pages are still
/// resident ("warm"), then one whose pages were returned to the OS ("cold"), and maps a new
/// one only when the pool is empty. [`put`](StackPool::put) keeps at most `max_warm` warm
/// stacks: beyond that high-water mark, a freed stack's pages are released with
/// `madvise(MADV_DONTNEED)`, and beyond `max_cold` cold stacks it is unmapped.
///
/// Every thread that runs fibers has pools of its own; this type is public for callers
/// that manage stacks themselves and for inspecting the behaviour.
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

thread_local! {
    /// This thread's pools, one per stack size in use (usually one).
    static POOLS: RefCell<Vec<StackPool>> = const { RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's pool for stacks of `size` (page-rounded) bytes, made if
/// missing; `None` while the thread exits and its pools are gone.
fn with_pool<R>(size: usize, f: impl FnOnce(&mut StackPool) -> R) -> Option<R> {
    POOLS
        .try_with(|pools| {
            let mut pools = pools.borrow_mut();
            let index = match pools.iter().position(|p| p.stack_size == size) {
                Some(index) => index,
                None => {
                    pools.push(StackPool::new(size).ok()?);
                    pools.len() - 1
                }
            };
            Some(f(&mut pools[index]))
        })
        .ok()
        .flatten()
}

/// Takes a stack of `size` bytes from this thread's pool, or maps a new one.
pub(crate) fn take(size: usize) -> io::Result<Stack> {
    let size = checked_size(size)?;
    match with_pool(size, StackPool::pop_idle).flatten() {
        Some(stack) => Ok(stack),
        None => Stack::new(size),
    }
}

/// Checks that a stack of `size` bytes can be had on this thread: one is pooled, or a new
/// one can be mapped (and is then pooled).
pub(crate) fn reserve(size: usize) -> io::Result<()> {
    let size = checked_size(size)?;
    // The common case: an idle stack is pooled, and nothing needs to move.
    if with_pool(size, |pool| pool.warm() + pool.cold() > 0) == Some(true) {
        return Ok(());
    }
    give_back(Stack::new(size)?);
    Ok(())
}

/// Gives a stack back to this thread's pool (or unmaps it while the thread exits).
pub(crate) fn give_back(stack: Stack) {
    // If the pool is gone, the closure, and with it the stack, is dropped: unmapped.
    with_pool(stack.size(), move |pool| pool.put(stack));
}

/// Figures about the calling thread's pool for one stack size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PoolStats {
    /// Idle stacks that keep their pages.
    pub warm: usize,
    /// Idle stacks whose pages were released.
    pub cold: usize,
    /// Bytes of memory the idle stacks hold (resident pages).
    pub resident_bytes: usize,
}

/// Figures about the calling thread's pool of stacks of `stack_size` bytes (rounded to
/// pages as [`Stack::new`] does).
///
/// # Examples
///
/// ```
/// use green::fiber::Fiber;
/// use green::stack::{thread_pool_stats, DEFAULT_STACK_SIZE};
///
/// let mut fiber = Fiber::new(|_| 1).unwrap();
/// fiber.resume();
/// drop(fiber); // its stack goes back to this thread's pool
/// assert!(thread_pool_stats(DEFAULT_STACK_SIZE).warm >= 1);
/// ```
pub fn thread_pool_stats(stack_size: usize) -> PoolStats {
    let Ok(size) = checked_size(stack_size) else {
        return PoolStats::default();
    };
    with_pool(size, |pool| PoolStats {
        warm: pool.warm(),
        cold: pool.cold(),
        resident_bytes: pool.resident_bytes(),
    })
    .unwrap_or_default()
}

/// Releases the pages of every idle stack in the calling thread's pools (see
/// [`StackPool::trim`]).
pub fn trim_thread_pools() {
    let _ = POOLS.try_with(|pools| pools.borrow_mut().iter_mut().for_each(StackPool::trim));
}

/// Valgrind client requests that tell Valgrind where the stacks are, so it does not take a
/// switch for a wild stack-pointer move. Outside Valgrind each request is a few no-op
/// instructions that return the default.
mod valgrind {
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
}
