//! Tasks: the state a spawned fiber shares with its wakers and its [`JoinHandle`].
//!
//! One allocation per spawn, a [`Task`], holds both:
//!
//! * the [`Header`] every waker sees: the park state (IDLE / PARKED / NOTIFIED), the fiber's
//!   slab slot and generation on its worker, and the worker itself;
//! * the join cell: the result, once there is one, and the waker of whoever joins.
//!
//! The task counts its references itself, in its header (as `Arc` does, without the weak
//! count, which nothing here needs): a spawn makes the task with two, one for the
//! `JoinHandle` and one for whoever runs it, so neither costs an increment; the last
//! release frees it. Wakers hold one each; their vtable is the same for every task.
//!
//! # Waking without losing a wake
//!
//! A fiber that waits (`await_blocking`) polls its future, and on `Pending` *parks*: it
//! moves its state from IDLE to PARKED and switches to its resumer (the worker loop, or a
//! fiber that runs it directly from `join`). A wake swaps the state
//! to NOTIFIED; only the wake that found PARKED schedules the fiber, so a fiber is queued at
//! most once. A wake that comes while the fiber still runs (between `Pending` and the park)
//! leaves NOTIFIED behind, the park sees it and does not suspend, and the fiber polls again.
//! After every park the fiber resets the state to IDLE *before* polling, with a swap (an
//! acquire of the last waker's write, see `Current::park`): a wake after that reset
//! either is seen by the poll or leaves NOTIFIED for the next park.

use std::any::Any;
use std::cell::UnsafeCell;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::ops::Deref;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::Arc;
use std::sync::atomic::{
    self, AtomicBool, AtomicPtr, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::task::{Context, Poll, RawWaker, RawWakerVTable};

use crate::worker;
use crate::worker::{Current, RemoteWake, Wake, WorkerShared};

/// The fiber runs, or is queued to run, and nobody has woken it since it last polled.
pub(crate) const IDLE: u8 = 0;
/// The fiber is suspended until a wake.
pub(crate) const PARKED: u8 = 1;
/// A wake arrived; the fiber will poll again.
pub(crate) const NOTIFIED: u8 = 2;

/// The type-erased part of a task, at offset 0 of every `Task<T>`.
pub(crate) struct Header {
    /// IDLE, PARKED or NOTIFIED; see the module docs.
    pub(crate) state: AtomicU8,
    /// The fiber's slab slot (low 32 bits) and generation (high 32 bits) on its worker,
    /// set by the worker when it creates the fiber, before the fiber can make a waker.
    pub(crate) id: AtomicU64,
    /// The worker the fiber lives on (a started fiber never leaves it), for wakes: set by
    /// the fiber before it first parks, so that a fiber that never parks costs no count
    /// of it. Wakes read it only after they found the fiber PARKED.
    pub(crate) worker: WorkerCell,
    /// `NOT_CANCELLED`, `CANCEL_REQUESTED` (by `JoinHandle::abort` or shutdown: the fiber
    /// unwinds at its next suspension point) or `CANCEL_DELIVERED` (it has started to
    /// unwind; its later suspensions, in destructors, are plain ones). Only the fiber moves
    /// it from requested to delivered; a request is made only from `NOT_CANCELLED`.
    cancel: AtomicU8,
    /// How many times the fiber has parked. Written only by the fiber (a load and a
    /// store): `await_blocking` compares it around a poll to learn whether a blocking call
    /// inside the poll parked, and so may have consumed the poll's own wake.
    parks: AtomicU32,
    /// Whether the fiber was unwinding (a panic in flight on its stack) when it last
    /// suspended: its own panic state, which std keeps per thread only. Written only by
    /// the fiber; see `worker::panicking`.
    pub(crate) unwinding: AtomicBool,
    /// References to the task: `TaskRef`s, `JoinHandle`s, `Unstarted`s, wakers.
    refs: AtomicUsize,
    /// Drops and frees the `Task<T, F>` this header heads, once `refs` reaches zero.
    free: unsafe fn(NonNull<Header>),
    /// A CPU the fiber's next spawn should run near (see `Worker::placement`), or
    /// `NO_CPU`. Set and taken by the fiber itself.
    pub(crate) near_cpu: AtomicUsize,
}

/// `Header::near_cpu` when there is no hint.
pub(crate) const NO_CPU: usize = usize::MAX;

/// `Header::cancel`: nobody asked the fiber to stop.
const NOT_CANCELLED: u8 = 0;
/// `Header::cancel`: the fiber is to unwind at its next suspension point.
const CANCEL_REQUESTED: u8 = 1;
/// `Header::cancel`: the fiber has started to unwind for a cancellation.
const CANCEL_DELIVERED: u8 = 2;

impl Header {
    /// Adds a reference to the task.
    #[inline]
    fn acquire(&self) {
        // Relaxed, as `Arc::clone`: the new reference is made from an existing one, which
        // keeps the task alive meanwhile.
        if self.refs.fetch_add(1, Ordering::Relaxed) > isize::MAX as usize {
            std::process::abort(); // as `Arc`: billions of leaked references
        }
    }

    /// Releases a reference to the task at `header`, freeing it if it was the last.
    ///
    /// # Safety
    ///
    /// The caller owns one reference, which this consumes.
    #[inline]
    pub(crate) unsafe fn release(header: NonNull<Header>) {
        // SAFETY: the caller's reference keeps the header alive until the decrement.
        let refs = unsafe { &header.as_ref().refs };
        // Release, then Acquire before freeing, as `Arc::drop`: every use of the task
        // through another reference happens before it is freed.
        if refs.fetch_sub(1, Ordering::Release) == 1 {
            atomic::fence(Ordering::Acquire);
            // SAFETY: that was the last reference; `free` is the task's own.
            unsafe { (header.as_ref().free)(header) };
        }
    }

    /// Asks the fiber to unwind at its next suspension point; `false` if it was asked
    /// before (the first request wins, and a delivered one is never made pending again).
    pub(crate) fn request_cancel(&self) -> bool {
        self.cancel
            .compare_exchange(
                NOT_CANCELLED,
                CANCEL_REQUESTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Whether a cancellation was requested and the fiber has not started to unwind for it.
    #[inline(always)]
    pub(crate) fn cancel_pending(&self) -> bool {
        self.cancel.load(Ordering::Acquire) == CANCEL_REQUESTED
    }

    /// Records that the fiber starts to unwind for its cancellation. Only the fiber calls
    /// this, after `cancel_pending`.
    pub(crate) fn cancel_delivered(&self) {
        self.cancel.store(CANCEL_DELIVERED, Ordering::Relaxed);
    }

    /// How many times the fiber has parked (see `Header::parks`).
    #[inline(always)]
    pub(crate) fn parks(&self) -> u32 {
        self.parks.load(Ordering::Relaxed)
    }

    /// Counts a park. Only the fiber calls this.
    #[inline(always)]
    pub(crate) fn count_park(&self) {
        let parks = self.parks.load(Ordering::Relaxed);
        self.parks.store(parks.wrapping_add(1), Ordering::Relaxed);
    }

    /// Wakes the fiber: schedules it if it is parked, else leaves a notification.
    pub(crate) fn wake(&self) {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) == PARKED
            && let Some(worker) = self.worker.get()
        {
            worker.schedule(self.id.load(Ordering::Relaxed));
        }
    }

    /// `wake`, with the part that may make a system call left to the caller: the state
    /// change, and the queueing of a fiber of this thread's worker, happen now; a wake for
    /// a worker on another thread comes back as a [`RemoteWake`] (holding that worker),
    /// to send once the caller has released its lock.
    pub(crate) fn wake_deferred(&self) -> Option<RemoteWake> {
        if self.state.swap(NOTIFIED, Ordering::AcqRel) != PARKED {
            return None;
        }
        let worker = self.worker.get()?;
        let id = self.id.load(Ordering::Relaxed);
        if worker.schedule_on_this_thread(id) {
            return None;
        }
        Some(RemoteWake::new(self.worker.get_arc()?, id))
    }
}

/// The worker a task's fiber lives on: set once, by the fiber itself before its first
/// park (a cheaper `OnceLock<Arc<WorkerShared>>`, which costs a `Once` call per set).
pub(crate) struct WorkerCell(AtomicPtr<WorkerShared>);

impl WorkerCell {
    /// The worker, once set.
    #[inline]
    pub(crate) fn get(&self) -> Option<&WorkerShared> {
        // SAFETY: a non-null pointer came from `Arc::into_raw` in `set_once` and the cell owns
        // that count until it drops.
        unsafe { self.0.load(Ordering::Acquire).as_ref() }
    }

    /// The worker, with a reference count of its own.
    fn get_arc(&self) -> Option<Arc<WorkerShared>> {
        let raw = self.0.load(Ordering::Acquire);
        if raw.is_null() {
            return None;
        }
        // SAFETY: a non-null pointer came from `Arc::into_raw` in `set_once`, and the cell's
        // count keeps it alive while we add ours.
        unsafe {
            Arc::increment_strong_count(raw);
            Some(Arc::from_raw(raw))
        }
    }

    /// Sets the worker to `worker()` if it is not set yet.
    ///
    /// Called only by the task's fiber, on its worker's thread, before it parks: a wake
    /// reads the cell once it has found the fiber PARKED, which this store precedes
    /// (Release, then the park's AcqRel compare-exchange). Other threads may read the cell
    /// meanwhile (`JoinHandle::abort`), hence the atomic.
    #[inline]
    pub(crate) fn set_once(&self, worker: impl FnOnce() -> Arc<WorkerShared>) {
        // A load and a store, not a compare-exchange: only the fiber writes the cell.
        if self.0.load(Ordering::Relaxed).is_null() {
            self.0
                .store(Arc::into_raw(worker()).cast_mut(), Ordering::Release);
        }
    }
}

impl Drop for WorkerCell {
    fn drop(&mut self) {
        let raw = *self.0.get_mut();
        if !raw.is_null() {
            // SAFETY: the pointer came from `Arc::into_raw` in `set_once`; this is its only owner.
            drop(unsafe { Arc::from_raw(raw) });
        }
    }
}

/// A task: the header, the join cell, and the closure until its fiber first runs.
#[repr(C)]
pub(crate) struct Task<T, F> {
    /// Must stay first: references point at it and `free` casts back to `Task<T, F>`.
    pub(crate) header: Header,
    /// The result and its waiter.
    pub(crate) join: JoinCell<T>,
    /// The closure of a task that waits to start; its fiber, when it first runs, moves it
    /// onto its own stack. `None` for tasks whose fiber was created at once.
    closure: UnsafeCell<Option<F>>,
}

/// `JoinCell::state` bit: the result is stored; never unset.
const DONE: u8 = 1;
/// `JoinCell::state` bit: the `JoinHandle` stored its waker; while set, only the completer
/// reads the waker (by reference) and nobody writes it.
const JOIN_WAKER: u8 = 2;
/// `JoinCell::state` bit: the completer is done with the registration it found (it woke
/// the joiner); a joiner blocked in a fiber waits for it before it leaves `join`.
const WOKEN: u8 = 4;

/// Where a task's result goes, and who waits for it.
///
/// One atomic word (`DONE`, `JOIN_WAKER`, `WOKEN`) instead of a lock, as tokio's join
/// state: the `JoinHandle` owns the waker slot while `JOIN_WAKER` is clear and `DONE` is
/// not set; once it sets `JOIN_WAKER` (Release), the slot is frozen, and the completer,
/// having set `DONE` (AcqRel) and seen `JOIN_WAKER`, wakes it by reference, then sets
/// `WOKEN` (Release). The handle takes the slot back by clearing `JOIN_WAKER` with a
/// compare-exchange that fails once `DONE` is set.
///
/// `join` on a fiber registers the fiber itself ([`Wake::Fiber`]), which holds no
/// reference count: it then does not leave `join` (returning or unwinding) until it took
/// the slot back or saw `WOKEN`, so the completer never wakes a fiber that is gone. Once
/// `DONE` is set only the completer writes the state word, so `WOKEN` is a plain store.
///
/// One exception to the `fetch_or`: while a joiner runs its task directly (`direct`), the
/// completer sets `DONE` with a plain store, as nothing else can write the word then.
pub(crate) struct JoinCell<T> {
    /// `DONE`, `JOIN_WAKER` and `WOKEN` bits.
    state: AtomicU8,
    /// Set by the joiner, on the task's worker, only while it runs the task nested in its
    /// own fiber (`Worker::run_next_now`) with no registration: the task then completes on
    /// that thread, with nobody else touching `state`. Read by every `complete`, and true
    /// only in that case.
    direct: AtomicBool,
    /// The result. Written once before `DONE` is set, read once by the `JoinHandle` after
    /// it saw `DONE`.
    result: UnsafeCell<Option<Result<T, JoinError>>>,
    /// Whom to wake when the result is stored: the waker of whoever polls the
    /// `JoinHandle`, or the fiber blocked in `join`; see the type docs for who may touch it
    /// when. Dropped with the task.
    waker: UnsafeCell<Option<Wake>>,
}

// SAFETY: `result` is written by one thread before `DONE` is set (Release) and read by the
// JoinHandle only after it saw `DONE` (Acquire); `waker` is written only by the JoinHandle
// while `JOIN_WAKER` is clear, and read by the completer only after it saw `JOIN_WAKER` set
// (see `JoinCell`); `closure` is taken on one thread at a time, by the task's fiber or by
// the code dropping its `Unstarted` (see `take_closure`), and the last reference's release
// (Release/Acquire) orders those before `free`; everything else is atomics. T and F cross
// threads (closure to the worker, result to the joiner), hence T: Send and F: Send.
unsafe impl<T: Send, F: Send> Sync for Task<T, F> {}
// SAFETY: as above.
unsafe impl<T: Send, F: Send> Send for Task<T, F> {}

impl<T: Send + 'static, F: Send + 'static> Task<T, F> {
    /// A new task, with the closure it will run if its fiber is created later, and its
    /// two first references: one for its `JoinHandle`, one for whoever runs it.
    pub(crate) fn spawned(closure: Option<F>) -> (JoinHandle<T>, TaskRef<T, F>) {
        // Written in place, field by field: `Box::new(Task { .. })` builds the task on the
        // stack first, and debug builds copy the closure several times more on the way.
        let mut task = Box::<Task<T, F>>::new_uninit();
        let place = task.as_mut_ptr();
        // SAFETY: `place` points at the box's memory, valid for writes and aligned for a
        // `Task`; each field is written once, through a raw pointer (no reference to the
        // uninitialised whole), and all three are written before `assume_init`.
        let task = unsafe {
            (&raw mut (*place).closure).write(UnsafeCell::new(closure));
            (&raw mut (*place).header).write(Header {
                state: AtomicU8::new(IDLE),
                id: AtomicU64::new(u64::MAX),
                worker: WorkerCell(AtomicPtr::new(std::ptr::null_mut())),
                cancel: AtomicU8::new(NOT_CANCELLED),
                parks: AtomicU32::new(0),
                unwinding: AtomicBool::new(false),
                refs: AtomicUsize::new(2),
                free: free::<T, F>,
                near_cpu: AtomicUsize::new(NO_CPU),
            });
            (&raw mut (*place).join).write(JoinCell {
                state: AtomicU8::new(0),
                direct: AtomicBool::new(false),
                result: UnsafeCell::new(None),
                waker: UnsafeCell::new(None),
            });
            task.assume_init()
        };
        let task = NonNull::from(Box::leak(task));
        let handle = JoinHandle {
            header: task.cast(),
            // SAFETY: `task` points at the task just leaked, valid until it is freed.
            join: unsafe { NonNull::from(&task.as_ref().join) },
            _result: PhantomData,
        };
        (handle, TaskRef(task))
    }

    /// Takes the closure out.
    ///
    /// # Safety
    ///
    /// Only the task's fiber (its body on the first run, then its guard) or, instead,
    /// whoever drops the task's `Unstarted` unstarted: one thread, never two at once.
    pub(crate) unsafe fn take_closure(&self) -> Option<F> {
        // SAFETY: as the caller guarantees, nobody else touches the closure.
        unsafe { (*self.closure.get()).take() }
    }

    /// Drops the closure, if it is still there (the task never ran it).
    ///
    /// Out of line: this may run on a joining fiber's stack (`Worker::run_next_now`), and a
    /// frame holding the closure, even on a path not taken, would take its size there.
    ///
    /// # Safety
    ///
    /// As [`Task::take_closure`].
    #[cold]
    #[inline(never)]
    pub(crate) unsafe fn drop_closure(&self) {
        // SAFETY: as the caller guarantees.
        drop(unsafe { self.take_closure() });
    }
}

/// Drops and frees a `Task<T, F>`: its header's `free`.
///
/// # Safety
///
/// `header` heads a `Task<T, F>` made by `Task::spawned` whose last reference was released.
unsafe fn free<T, F>(header: NonNull<Header>) {
    // SAFETY: the task came from `Box::leak` in `Task::spawned`, and nobody refers to it now.
    drop(unsafe { Box::from_raw(header.cast::<Task<T, F>>().as_ptr()) });
}

/// One counted reference to a `Task<T, F>` of known type, as an `Arc` would be.
pub(crate) struct TaskRef<T, F>(NonNull<Task<T, F>>);

// SAFETY: as for `Arc<Task<T, F>>`: a reference shares the task (Sync, below) and may release
// it, dropping T and F, on any thread.
unsafe impl<T: Send, F: Send> Send for TaskRef<T, F> {}
// SAFETY: as above.
unsafe impl<T: Send, F: Send> Sync for TaskRef<T, F> {}

impl<T, F> TaskRef<T, F> {
    /// The reference as a header pointer, which owns it from now on.
    pub(crate) fn into_header(self) -> NonNull<Header> {
        std::mem::ManuallyDrop::new(self).0.cast()
    }

    /// The task's header, with the provenance of the whole task (for wakers, whose last
    /// release frees the task through it). Borrowed: valid while a reference lives.
    pub(crate) fn header_ptr(&self) -> *const Header {
        self.0.as_ptr().cast_const().cast()
    }

    /// Takes back a reference given away by `into_header`.
    ///
    /// # Safety
    ///
    /// `header` came from `TaskRef::<T, F>::into_header`, and its reference is handed over.
    pub(crate) unsafe fn from_header(header: NonNull<Header>) -> TaskRef<T, F> {
        TaskRef(header.cast())
    }
}

impl<T, F> Deref for TaskRef<T, F> {
    type Target = Task<T, F>;

    fn deref(&self) -> &Task<T, F> {
        // SAFETY: our reference keeps the task alive.
        unsafe { self.0.as_ref() }
    }
}

impl<T, F> Drop for TaskRef<T, F> {
    fn drop(&mut self) {
        // SAFETY: we own one reference.
        unsafe { Header::release(self.0.cast()) };
    }
}

impl<T> JoinCell<T> {
    /// Stores the result and wakes the joiner. Only the first call has an effect.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        if self.is_done() {
            return;
        }
        // SAFETY: a task is completed on one thread only, by one of: its fiber, its worker
        // when the fiber could not start or was abandoned at a shutdown's deadline (it never
        // runs again), or the thread that drops it unstarted; the first time before `DONE`
        // is set. The JoinHandle reads only after `DONE`.
        unsafe { *self.result.get() = Some(result) };
        if self.direct.load(Ordering::Relaxed) {
            // Our joiner runs us nested, on this thread, and holds the JoinHandle without
            // a registration (it had none when it started us): nothing else writes the
            // state meanwhile, so a store does what `fetch_or` would, without the lock.
            self.state.store(DONE, Ordering::Release);
            return;
        }
        let state = self.state.fetch_or(DONE, Ordering::AcqRel);
        if state & JOIN_WAKER != 0 {
            // SAFETY: `JOIN_WAKER` was set (and its Release write of the waker seen), and
            // with `DONE` now set the JoinHandle never writes the slot again: only shared
            // reads of it remain.
            match unsafe { &*self.waker.get() } {
                // A user's waker, on the task's worker: a panic in it must not undo the
                // completion, nor unwind through the worker.
                Some(Wake::Waker(waker)) => {
                    crate::sys::catch_and_report("a JoinHandle's waker", || waker.wake_by_ref())
                }
                Some(Wake::Fiber(fiber)) => {
                    // SAFETY: the fiber registered and did not take the slot back (it
                    // cannot now: `DONE` is set), so it waits in `join` for `WOKEN`.
                    let remote = unsafe { fiber.wake() };
                    // Only this call writes the state once `DONE` is set (type docs).
                    self.state
                        .store(DONE | JOIN_WAKER | WOKEN, Ordering::Release);
                    // The joiner may be gone now; its worker is held by `remote`.
                    if let Some(remote) = remote {
                        remote.send();
                    }
                }
                None => {}
            }
        }
    }

    /// Runs `before` (which drops a closure, whose destructor may panic), then `complete`s
    /// with `result` even if `before` panicked: a joiner is never left waiting.
    pub(crate) fn complete_after(&self, result: Result<T, JoinError>, before: impl FnOnce()) {
        /// Completes the cell when dropped, on the way out or while unwinding.
        struct Complete<'a, T>(&'a JoinCell<T>, Option<Result<T, JoinError>>);
        impl<T> Drop for Complete<'_, T> {
            fn drop(&mut self) {
                if let Some(result) = self.1.take() {
                    self.0.complete(result);
                }
            }
        }
        let _complete = Complete(self, Some(result));
        before();
    }

    /// Stores whom to wake and publishes it (`JOIN_WAKER`), first taking the slot back if
    /// `state` (the caller's last look) shows a registration. Returns `false`, having
    /// published nothing, if the result came meanwhile.
    ///
    /// # Safety
    ///
    /// Only the cell's `JoinHandle` may call this: it is the only writer of the slot.
    unsafe fn register(&self, state: u8, wake: impl FnOnce() -> Wake) -> bool {
        if state & JOIN_WAKER != 0
            && self
                .state
                .compare_exchange(JOIN_WAKER, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        // SAFETY: `JOIN_WAKER` is clear and only the JoinHandle (our caller) sets it, so
        // the completer does not read the slot (it reads it only after seeing it set).
        unsafe { *self.waker.get() = Some(wake()) };
        // Fails only if the result came meanwhile.
        self.state
            .compare_exchange(0, JOIN_WAKER, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Whether the result is there.
    fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }
}

/// The waker vtable of every task: the data pointer is its header, which owns one reference.
pub(crate) static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake, wake_by_ref, drop_waker);

/// The header behind a waker's data pointer.
///
/// # Safety
///
/// `ptr` is the data pointer of a waker with [`WAKER_VTABLE`].
unsafe fn header_of(ptr: *const ()) -> NonNull<Header> {
    // SAFETY: such a waker's data pointer is a task header, never null.
    unsafe { NonNull::new_unchecked(ptr.cast_mut().cast()) }
}

/// # Safety
/// `ptr` is the data pointer of a live waker with [`WAKER_VTABLE`].
unsafe fn clone_waker(ptr: *const ()) -> RawWaker {
    // SAFETY: the waker being cloned holds a reference, so the header is alive.
    unsafe { header_of(ptr).as_ref() }.acquire();
    RawWaker::new(ptr, &WAKER_VTABLE)
}

/// # Safety
/// `ptr` is the data pointer of a waker with [`WAKER_VTABLE`]; its reference is consumed.
unsafe fn wake(ptr: *const ()) {
    // SAFETY: as the caller guarantees.
    unsafe {
        wake_by_ref(ptr);
        drop_waker(ptr);
    }
}

/// # Safety
/// `ptr` is the data pointer of a live waker with [`WAKER_VTABLE`].
unsafe fn wake_by_ref(ptr: *const ()) {
    // SAFETY: the waker holds a reference for the duration of the call.
    unsafe { header_of(ptr).as_ref() }.wake();
}

/// # Safety
/// `ptr` is the data pointer of a waker with [`WAKER_VTABLE`]; its reference is released.
unsafe fn drop_waker(ptr: *const ()) {
    // SAFETY: the waker owns one reference.
    unsafe { Header::release(header_of(ptr)) };
}

/// The task reference of its fiber's closure. When the closure is dropped (the fiber
/// returned, was unwound at shutdown, or could not be made), drops the user's closure if
/// it never ran (the task was aborted first), then resolves the task as cancelled if it
/// has no result yet.
pub(crate) struct CompleteOnDrop<T: Send + 'static, F: Send + 'static>(pub(crate) TaskRef<T, F>);

impl<T: Send + 'static, F: Send + 'static> Drop for CompleteOnDrop<T, F> {
    fn drop(&mut self) {
        let task = &self.0;
        // The closure goes now, on the worker, before a joiner can see the cancellation:
        // not with the task's last reference, which may be a `JoinHandle` kept for long.
        task.join.complete_after(Err(JoinError::cancelled()), || {
            // Inline, not `drop_closure`: this runs at every task's end, on the task's own
            // stack, and the closure is nearly always gone (taken by the body).
            // SAFETY: the fiber's own guard, dropped on its worker after its body ran (and
            // took the closure) or instead of it; the task's `Unstarted` is gone.
            drop(unsafe { task.take_closure() });
        });
    }
}

/// An owned permission to join a fiber: wait for it and take its result.
///
/// Dropping the handle detaches the fiber: it runs on, and its result is dropped.
///
/// `JoinHandle` is also a [`Future`], for async code.
///
/// # Examples
///
/// ```
/// let handle = green::spawn(|| 6 * 7);
/// assert_eq!(handle.join().unwrap(), 42);
/// ```
pub struct JoinHandle<T> {
    /// The task, of which the handle owns one reference.
    header: NonNull<Header>,
    /// Its join cell, in the same allocation.
    join: NonNull<JoinCell<T>>,
    /// The handle takes the result out.
    _result: PhantomData<T>,
}

// SAFETY: the handle shares the task's header and join cell (Sync: atomics, and a result
// read only through `&mut self`) and may release the task on any thread, which then drops
// the result (T: Send) and any closure left (Send, as every constructor requires).
unsafe impl<T: Send> Send for JoinHandle<T> {}
// SAFETY: through `&self` the handle reads only atomics (`is_finished`, `abort`).
unsafe impl<T: Send> Sync for JoinHandle<T> {}

// The handle points at its task and never moves anything pinned: it is `Unpin` whatever
// T is, as a handle holding an `Arc` would be.
impl<T> Unpin for JoinHandle<T> {}

impl<T> Drop for JoinHandle<T> {
    fn drop(&mut self) {
        // SAFETY: the handle owns one reference.
        unsafe { Header::release(self.header) };
    }
}

impl<T> JoinHandle<T> {
    /// The task's header.
    fn header(&self) -> &Header {
        // SAFETY: the handle's reference keeps the task alive.
        unsafe { self.header.as_ref() }
    }

    /// The task's join cell.
    fn join_cell(&self) -> &JoinCell<T> {
        // SAFETY: as for the header, in the same allocation.
        unsafe { self.join.as_ref() }
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Waits for the fiber to finish and returns its value.
    ///
    /// Inside a fiber this parks only the calling fiber; on a plain thread it blocks the
    /// thread. A fiber that joins while the task waiting to start is the only work queued
    /// on its worker (as right after `spawn`) switches into it directly, as the worker
    /// would have next: the task still runs on its own stack, and the joiner gets control
    /// back when it ends or blocks.
    ///
    /// # Errors
    ///
    /// A [`JoinError`] if the fiber panicked or was cancelled (aborted, or its runtime shut
    /// down before it finished).
    pub fn join(mut self) -> Result<T, JoinError> {
        match worker::current() {
            Some(fiber) => self.join_in_fiber(fiber),
            None => crate::await_blocking(self),
        }
    }

    /// `join` on a fiber: registers the fiber itself, which costs no reference count (see
    /// [`JoinCell`]), and parks it until the result is there.
    fn join_in_fiber(&mut self, fiber: Current) -> Result<T, JoinError> {
        let cell = self.join_cell();
        let mut state = cell.state.load(Ordering::Acquire);
        if state & DONE != 0 {
            return self.take();
        }
        // A task that the worker would run next anyway runs now, nested in this fiber: if
        // it finishes without blocking, there is nothing to wait for. (Not if an earlier
        // poll left a waker in the cell, which the task's completion would wake.)
        let task = self.header.as_ptr().cast_const().cast::<()>();
        if state == 0
            && worker::with_worker(|worker| {
                worker.is_some_and(|worker| worker.run_next_now(task, &cell.direct))
            })
        {
            state = cell.state.load(Ordering::Acquire);
            if state & DONE != 0 {
                return self.take();
            }
        }
        // SAFETY: we are the cell's JoinHandle.
        if !unsafe { cell.register(state, || Wake::Fiber(fiber.blocked())) } {
            return self.take(); // the result came meanwhile
        }
        // From here on we must not leave before taking the registration back or seeing
        // `WOKEN`: `Registered::drop` waits for that, on every way out.
        let registered = Registered(cell);
        while !cell.is_done() {
            fiber.park(); // may unwind (cancelled, or the fiber dropped)
        }
        drop(registered);
        self.take()
    }

    /// Whether the fiber has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.join_cell().is_done()
    }

    /// Cancels the fiber: if it has not finished, it is unwound at its next suspension point
    /// (or never started), and joining it gives a cancelled [`JoinError`].
    ///
    /// The fiber unwinds once: the destructors that run meanwhile may block (sleep, lock,
    /// join) like any code, and their suspensions do not raise the cancellation again. A
    /// fiber already unwinding from a panic of its own is cancelled only if it catches
    /// that panic and suspends again.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// green::run(|| {
    ///     struct Cleanup;
    ///     impl Drop for Cleanup {
    ///         fn drop(&mut self) {
    ///             green::sleep(Duration::from_millis(1)); // blocking in cleanup is fine
    ///         }
    ///     }
    ///     let sleeper = green::spawn(|| {
    ///         let _cleanup = Cleanup;
    ///         green::sleep(Duration::from_secs(3600));
    ///     });
    ///     green::yield_now();
    ///     sleeper.abort();
    ///     assert!(sleeper.join().unwrap_err().is_cancelled());
    /// });
    /// ```
    pub fn abort(&self) {
        if self.is_finished() {
            return;
        }
        if self.header().request_cancel() {
            self.header().wake();
        }
    }

    /// Takes the result, which must be there.
    fn take(&mut self) -> Result<T, JoinError> {
        // SAFETY: `done` was seen (Acquire), so the result is written and the writer is done
        // with it; only this handle reads it, through `&mut self`.
        let result = unsafe { (*self.join_cell().result.get()).take() };
        result.unwrap_or_else(|| Err(JoinError::taken()))
    }
}

impl<T: Send + 'static> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let cell = this.join_cell();
        let state = cell.state.load(Ordering::Acquire);
        if state & DONE != 0 {
            return Poll::Ready(this.take());
        }
        if state & JOIN_WAKER != 0 {
            // SAFETY: while `JOIN_WAKER` is set nobody writes the slot (see `JoinCell`).
            let stored = unsafe { &*cell.waker.get() };
            if let Some(Wake::Waker(waker)) = stored
                && waker.will_wake(cx.waker())
            {
                return Poll::Pending;
            }
        }
        // SAFETY: we are the cell's JoinHandle.
        if !unsafe { cell.register(state, || Wake::Waker(cx.waker().clone())) } {
            return Poll::Ready(this.take());
        }
        Poll::Pending
    }
}

/// A fiber's registration in a join cell (`JoinHandle::join_in_fiber`); dropping it
/// takes the registration back or, if the task completed, waits until the completer has
/// woken the fiber, so that the completer never touches a fiber that has left `join`.
struct Registered<'a, T>(&'a JoinCell<T>);

impl<T> Drop for Registered<'_, T> {
    fn drop(&mut self) {
        let state = &self.0.state;
        if state.load(Ordering::Acquire) & WOKEN != 0 {
            return; // the usual way: woken, and the completer is done
        }
        if state
            .compare_exchange(JOIN_WAKER, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            return; // not completed: the registration is ours again
        }
        // Completed, and the completer is between waking us and saying so (we were
        // resumed by another wake, or we unwind): a few instructions on its side.
        let mut spins = 0u32;
        while state.load(Ordering::Acquire) & WOKEN == 0 {
            if spins < 64 {
                spins += 1;
                std::hint::spin_loop();
            } else {
                std::thread::yield_now(); // the completer's thread may be preempted
            }
        }
    }
}

impl<T> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("finished", &self.join_cell().is_done())
            .finish()
    }
}

/// Why joining a fiber gave no value.
pub struct JoinError {
    /// What happened.
    kind: JoinErrorKind,
}

/// What happened to a fiber that gave no value.
enum JoinErrorKind {
    /// It panicked with this payload.
    Panic(Box<dyn Any + Send + 'static>),
    /// It was aborted, or its runtime shut down first.
    Cancelled,
    /// The result was already taken (a `JoinHandle` polled after it completed).
    Taken,
    /// The fiber could not be started: no stack could be mapped for it.
    NotStarted(std::io::Error),
}

impl JoinError {
    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            kind: JoinErrorKind::Panic(payload),
        }
    }

    pub(crate) fn cancelled() -> JoinError {
        JoinError {
            kind: JoinErrorKind::Cancelled,
        }
    }

    pub(crate) fn not_started(error: std::io::Error) -> JoinError {
        JoinError {
            kind: JoinErrorKind::NotStarted(error),
        }
    }

    /// Why the fiber could not be started, if it could not: the error of mapping its stack
    /// (for example past `vm.max_map_count`).
    pub fn start_error(&self) -> Option<&std::io::Error> {
        match &self.kind {
            JoinErrorKind::NotStarted(error) => Some(error),
            _ => None,
        }
    }

    fn taken() -> JoinError {
        JoinError {
            kind: JoinErrorKind::Taken,
        }
    }

    /// Whether the fiber panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, JoinErrorKind::Panic(_))
    }

    /// Whether the fiber was cancelled: aborted, or its runtime shut down before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, JoinErrorKind::Cancelled)
    }

    /// The panic payload, to re-raise with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// Panics if the error is not a panic; check with [`is_panic`](JoinError::is_panic).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.kind {
            JoinErrorKind::Panic(payload) => payload,
            _ => panic!("JoinError::into_panic on an error that is not a panic: {self}"),
        }
    }

    /// The panic message, when the payload is a string.
    fn message(&self) -> Option<&str> {
        match &self.kind {
            JoinErrorKind::Panic(payload) => crate::sys::message_of(&**payload),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, self.message()) {
            (JoinErrorKind::Panic(_), Some(message)) => write!(f, "the fiber panicked: {message}"),
            (JoinErrorKind::Panic(_), None) => f.write_str("the fiber panicked"),
            (JoinErrorKind::Cancelled, _) => {
                f.write_str("the fiber was cancelled (aborted, or its runtime shut down)")
            }
            (JoinErrorKind::Taken, _) => f.write_str("the fiber's result was already taken"),
            (JoinErrorKind::NotStarted(error), _) => {
                write!(f, "the fiber could not start: {error}")
            }
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {}
