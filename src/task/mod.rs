//! Tasks: the state a spawned fiber shares with its wakers and its [`JoinHandle`].
//!
//! One allocation per spawn, a [`Task`] (in a recycled block, `sys/blocks.rs`, unless it
//! is large), holds both:
//!
//! * the [`Header`] every waker sees: the state words ([`state`]), the fiber's slab slot
//!   and generation on its worker, and the scheduler it lives on (through the small
//!   [`Schedule`] trait: this layer does not know the worker);
//! * the join cell ([`join`]): the result, once there is one, and whoever waits for it.
//!
//! The task counts its references itself, in its header (as `Arc` does, without the weak
//! count, which nothing here needs): a spawn makes the task with two, one for the
//! `JoinHandle` and one for whoever runs it, so neither costs an increment; the last
//! release frees it. Wakers ([`waker`]) hold one each.
//!
//! ```text
//!   task/state.rs   the park and cancel words and every transition on them
//!   task/wait.rs    what a parked fiber waits for, as fiber dumps print it
//!   task/waker.rs   the one waker vtable
//!   task/waiter.rs  whom a wait list wakes: a Waker, or a fiber named without a count
//!   task/join.rs    the join cell and JoinHandle (its blocking join is in worker/join.rs)
//!   task/error.rs   JoinError
//! ```

use std::ops::Deref;
use std::ptr::NonNull;
use std::sync::Arc;

use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{self, AtomicU64, AtomicUsize, Ordering};
use crate::sys::blocks;

mod error;
pub(crate) mod join;
pub(crate) mod state;
pub(crate) mod wait;
pub(crate) mod waiter;
pub(crate) mod waker;

pub use error::{JoinError, is_cancellation};
pub use join::JoinHandle;
pub(crate) use join::{CompleteOnDrop, JoinCell};
pub(crate) use state::State;
pub(crate) use wait::Wait;
pub(crate) use waiter::{BlockedFiber, PendingWake, RemoteWake, Waiter};

/// What a task needs of the scheduler its fiber lives on: to be queued again when woken.
/// The worker implements it; a task holds it as `Arc<dyn Schedule>`, so this layer never
/// imports the worker.
pub(crate) trait Schedule: Send + Sync {
    /// Queues the fiber `id` on the run queue of this thread, if the scheduler's loop runs
    /// on this thread; returns whether it did.
    fn schedule_here(&self, id: u64) -> bool;

    /// Queues the fiber `id` from another thread: a message, and a notification if the
    /// scheduler sleeps. Runs no user code (it is called with locks held).
    fn schedule_remote(&self, id: u64);

    /// Queues the fiber `id`, here or from afar.
    fn schedule(&self, id: u64) {
        if !self.schedule_here(id) {
            self.schedule_remote(id);
        }
    }
}

/// The type-erased part of a task, at offset 0 of every `Task<T>`.
pub(crate) struct Header {
    /// The park and cancel words; see [`state`].
    pub(crate) state: State,
    /// The fiber's slab slot (low 32 bits) and generation (high 32 bits) on its worker,
    /// set by the worker when it creates the fiber, before the fiber can make a waker.
    pub(crate) id: AtomicU64,
    /// The scheduler the fiber lives on (a started fiber never leaves it), for wakes.
    pub(crate) scheduler: SchedulerCell,
    /// References to the task: `TaskRef`s, `JoinHandle`s, `Unstarted`s, wakers.
    refs: AtomicUsize,
    /// Drops and frees the `Task<T, F>` this header heads, once `refs` reaches zero.
    free: unsafe fn(NonNull<Header>),
}

/// A CPU hint (see `worker::placement`) when there is none.
pub(crate) const NO_CPU: usize = usize::MAX;

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
            // ThreadSanitizer does not model fences: built for it, an Acquire load of the
            // counter synchronises the same way, as `Arc::drop` does under it.
            if cfg!(green_tsan) {
                refs.load(Ordering::Acquire);
            } else {
                atomic::fence(Ordering::Acquire);
            }
            // SAFETY: that was the last reference; `free` is the task's own.
            unsafe { (header.as_ref().free)(header) };
        }
    }

    /// Wakes the fiber: schedules it if it is parked, else leaves a notification.
    pub(crate) fn wake(&self) {
        if self.state.transition_to_notified()
            && let Some(scheduler) = self.scheduler.get()
        {
            scheduler.schedule(self.id.load(Ordering::Relaxed));
        }
    }

    /// `wake`, with the part that may make a system call left to the caller: the state
    /// change, and the queueing of a fiber of this thread's worker, happen now; a wake for
    /// a worker on another thread comes back as a [`RemoteWake`] (holding that worker),
    /// to send once the caller has released its lock.
    pub(crate) fn wake_deferred(&self) -> Option<RemoteWake> {
        if !self.state.transition_to_notified() {
            return None;
        }
        let scheduler = self.scheduler.get()?;
        let id = self.id.load(Ordering::Relaxed);
        if scheduler.schedule_here(id) {
            return None;
        }
        Some(RemoteWake::new(scheduler.clone(), id))
    }
}

/// The scheduler a task's fiber lives on: set once, by the fiber itself before its first
/// park, so that a fiber that never parks costs no reference count of it.
pub(crate) struct SchedulerCell(UnsafeCell<Option<Arc<dyn Schedule>>>);

impl SchedulerCell {
    /// An empty cell.
    fn new() -> SchedulerCell {
        SchedulerCell(UnsafeCell::new(None))
    }

    /// The scheduler, once set. Only the fiber itself, or a waker that found it PARKED
    /// (whose swap acquired the park that followed `set_once`), may call this.
    #[inline]
    pub(crate) fn get(&self) -> Option<&Arc<dyn Schedule>> {
        // SAFETY: the cell is written once, by the fiber, before its first park
        // (`set_once`); every other reader found the fiber PARKED (the wakes of `Header`),
        // which that write happens before. Reads only after that: no write is concurrent.
        self.0.with(|cell| unsafe { (*cell).as_ref() })
    }

    /// Sets the scheduler to `scheduler()` if it is not set yet. Called only by the task's
    /// fiber, on its worker's thread, before it parks.
    #[inline]
    pub(crate) fn set_once(&self, scheduler: impl FnOnce() -> Arc<dyn Schedule>) {
        // SAFETY: only the fiber writes the cell, and a waker reads it only once it has
        // found the fiber PARKED, which this (first) write precedes: no read or write is
        // concurrent with it.
        if self.0.with(|cell| unsafe { (*cell).is_none() }) {
            let scheduler = scheduler();
            // SAFETY: as above; and `scheduler()` cannot have set the cell meanwhile (it
            // makes an `Arc`, and only this fiber calls `set_once`).
            self.0.with_mut(|cell| unsafe { *cell = Some(scheduler) });
        }
    }
}

/// A task: the header, the join cell, and the closure until its fiber first runs.
///
/// Kept small: with a closure and a result of 8 bytes each, a task takes 112 bytes, and
/// takes its memory from the smallest class of recycled blocks ([`blocks`]: 120 bytes); a
/// closure of 16 bytes (24 if it has a niche, as one holding a `String` does) still fits
/// it. Tasks of up to 248 bytes take a block of a larger class; larger or over-aligned
/// ones, a box.
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
        let place: *mut Task<T, F> = match const { blocks::class_of::<Task<T, F>>() } {
            Some(class) => blocks::take(class).as_ptr().cast(),
            None => Box::into_raw(Box::<Task<T, F>>::new_uninit()).cast(),
        };
        // SAFETY: `place` points at memory of the task's size and alignment (a block of
        // its class, or a box), valid for writes; each field is written once, through a
        // raw pointer (no reference to the uninitialised whole).
        unsafe {
            (&raw mut (*place).closure).write(UnsafeCell::new(closure));
            (&raw mut (*place).header).write(Header {
                state: State::new(),
                id: AtomicU64::new(u64::MAX),
                scheduler: SchedulerCell::new(),
                refs: AtomicUsize::new(2),
                free: free::<T, F>,
            });
            (&raw mut (*place).join).write(JoinCell::new());
        }
        // SAFETY: not null (a block, or a box's pointer), and initialised above.
        let task = unsafe { NonNull::new_unchecked(place) };
        // SAFETY: `task` points at the task just made, with one reference for the handle.
        let handle = unsafe { JoinHandle::new(task.cast(), NonNull::from(&task.as_ref().join)) };
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
        self.closure
            .with_mut(|closure| unsafe { (*closure).take() })
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
    let task = header.cast::<Task<T, F>>();
    match const { blocks::class_of::<Task<T, F>>() } {
        // SAFETY: the task was written into a block of this class by `Task::spawned`, and
        // nobody refers to it now.
        Some(class) => unsafe { blocks::drop_in_block(class, task) },
        // SAFETY: the task was boxed by `Task::spawned`, and nobody refers to it now.
        None => drop(unsafe { Box::from_raw(task.as_ptr()) }),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The block class of the task of `_closure`, returning `T`, and its size.
    fn task_class<T, F: FnOnce() -> T>(_closure: &F) -> (Option<usize>, usize) {
        (blocks::class_of::<Task<T, F>>(), size_of::<Task<T, F>>())
    }

    #[test]
    fn a_task_of_a_small_closure_takes_a_block_of_the_smallest_class() {
        if cfg!(any(loom, green_asan, green_tsan)) {
            return; // every task is boxed
        }
        let i = 7u64;
        assert_eq!(task_class::<u64, _>(&move || i * 2).0, Some(0));
        let shared = std::sync::Arc::new(i);
        assert_eq!(task_class::<usize, _>(&move || *shared as usize).0, Some(0));
        let (a, b) = (1u64, 2u64);
        assert_eq!(task_class::<u64, _>(&move || a + b).0, Some(0));
        let line = String::from("GET /");
        assert_eq!(task_class::<usize, _>(&move || line.len()).0, Some(0));
        let big = [0u8; 100];
        assert!(task_class::<u8, _>(&move || big[0]).0 > Some(0));
        let huge = [0u8; 1000];
        assert_eq!(task_class::<u8, _>(&move || huge[0]).0, None);
        // The closures of tests/runtime.rs's `tasks_of_every_size_...`: bytes and a counter
        // (an `Arc`), each size in the class that test says it covers.
        let counter = std::sync::Arc::new(0u8);
        let sized = |n: usize| {
            let (c, b1, b60, b100, b400) =
                (counter.clone(), [0u8; 1], [0u8; 60], [0u8; 100], [0u8; 400]);
            match n {
                1 => task_class::<u64, _>(&move || u64::from(*c + b1[0])),
                60 => task_class::<u64, _>(&move || u64::from(*c + b60[0])),
                100 => task_class::<u64, _>(&move || u64::from(*c + b100[0])),
                _ => task_class::<u64, _>(&move || u64::from(*c + b400[0])),
            }
        };
        assert_eq!(sized(1).0, Some(0));
        assert!(sized(60).0 > Some(0) && sized(100).0 > sized(60).0);
        assert_eq!(sized(400).0, None);
        let (c, b) = (counter.clone(), 0u8);
        let wide = task_class::<u128, _>(&move || u128::from(*c + b));
        assert!(
            wide.0 > Some(0),
            "a 16-byte-aligned task still takes a block"
        );
    }
}
