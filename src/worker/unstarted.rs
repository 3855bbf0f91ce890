//! Tasks that wait to start: any worker may start one (then its fiber stays there), and
//! one dropped unstarted is cancelled.

use std::mem::ManuallyDrop;
use std::ptr::{self, NonNull};

use super::{SpawnOptions, Worker, check_closure_fits};
use crate::task::{CompleteOnDrop, Header, JoinError, Task, TaskRef};

/// A spawned task waiting to start, with one reference to it; any worker may start it.
/// Cancelled if dropped unstarted (at shutdown).
///
/// Three words: the spawn queues' blocks of them then stay small enough for the
/// allocator's per-thread cache (glibc's tcache takes up to 1032 bytes).
pub(crate) struct Unstarted {
    /// The task's header; `None` once started or cancelled.
    task: Option<NonNull<Header>>,
    /// What the task was spawned with beyond its closure (`green::task::Builder`), if
    /// anything.
    options: Option<Box<SpawnOptions>>,
    /// The functions for the task's type.
    vtable: &'static Vtable,
}

const _: () = assert!(std::mem::size_of::<Unstarted>() == 3 * std::mem::size_of::<usize>());

/// What an [`Unstarted`] does with its task, whose type only these functions know.
struct Vtable {
    /// Creates the task's fiber on a worker, with its options; returns its id.
    #[allow(clippy::type_complexity)]
    start: unsafe fn(NonNull<Header>, Option<Box<SpawnOptions>>, &Worker) -> Option<u64>,
    /// Drops the closure and resolves the task as cancelled.
    cancel: unsafe fn(NonNull<Header>),
}

// SAFETY: the task behind the header is a `Task<T, F>` with T and F Send (`Unstarted::new`),
// which is Send and Sync.
unsafe impl Send for Unstarted {}

impl Unstarted {
    /// A task waiting to start, with `options` if it was spawned with any.
    pub(crate) fn new<T, F>(task: TaskRef<T, F>, options: Option<Box<SpawnOptions>>) -> Unstarted
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Unstarted {
            task: Some(task.into_header()),
            options,
            vtable: &const {
                Vtable {
                    start: start_task::<T, F>,
                    cancel: cancel_task::<T, F>,
                }
            },
        }
    }

    /// Whether this is the task at `task` (compared by address).
    pub(super) fn is(&self, task: *const ()) -> bool {
        self.task
            .is_some_and(|header| ptr::eq(header.as_ptr().cast_const().cast::<()>(), task))
    }

    /// The address of the task's header, for tests.
    #[cfg(test)]
    pub(super) fn address(&self) -> *const () {
        self.task
            .map_or(ptr::null(), |header| header.as_ptr().cast_const().cast())
    }

    /// Starts the task on `worker`.
    pub(super) fn start(self, worker: &Worker) -> Option<u64> {
        // Taken apart, not dropped: nothing is left to drop once the task and its options
        // are handed over.
        let mut this = ManuallyDrop::new(self);
        let (task, options) = (this.task.take(), this.options.take());
        // SAFETY: `start` is the function for this task's type, and the reference is ours.
        task.and_then(|task| unsafe { (this.vtable.start)(task, options, worker) })
    }
}

impl Drop for Unstarted {
    /// Cancels the task. Its closure's destructor is user code, dropped here on whichever
    /// thread drops the task (a worker's loop at shutdown, a spawner that finds the runtime
    /// closed): a panic in it is caught and reported, and the task still resolves.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let cancel = self.vtable.cancel;
            crate::sys::catch_and_report("the destructor of a task that never started", || {
                // SAFETY: `cancel` is the function for this task's type, and the reference
                // is ours.
                unsafe { cancel(task) }
            });
        }
    }
}

/// `Unstarted::start` for a `Task<T, F>`.
///
/// # Safety
///
/// `header` heads a `Task<T, F>`, and the caller hands over its reference, popped from a
/// queue by this worker (once).
unsafe fn start_task<T, F>(
    header: NonNull<Header>,
    options: Option<Box<SpawnOptions>>,
    worker: &Worker,
) -> Option<u64>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: as the caller guarantees.
    let task = unsafe { TaskRef::<T, F>::from_header(header) };
    // The closure stays in the task until the fiber first runs, and moves from there onto
    // the fiber's own stack: never through this stack, which may be a joining fiber's
    // (`Worker::run_next_now`), nor through the new fiber's header.
    let body = |task: &Task<T, F>| {
        // SAFETY: only the task's fiber takes the closure, once, on its first run; the
        // task is no longer queued, so `cancel_task` cannot take it too.
        let f = unsafe { task.take_closure() };
        f.expect("a task's closure is taken once, by its fiber")()
    };
    match worker.start_fiber(task, std::mem::size_of::<F>(), body, options) {
        Ok(id) => Some(id),
        Err((error, task)) => {
            if let Some(task) = task {
                crate::sys::catch_and_report(
                    "the destructor of a task that could not start",
                    || {
                        task.join.complete_after(
                            || Err(JoinError::not_started(error)),
                            || {
                                // SAFETY: no fiber was made, and the `Unstarted` is gone: ours
                                // alone.
                                unsafe { task.drop_closure() };
                            },
                        )
                    },
                );
            }
            None
        }
    }
}

/// Checks at spawn what `start_task` checks when the task starts (see
/// `Worker::start_fiber`): that a task's closure, `F`, fits a stack of `stack_size` bytes
/// (with the task's reference beside it; its body captures nothing).
pub(crate) fn check_task_fits<T, F>(stack_size: usize) -> std::io::Result<()>
where
    F: Send + 'static,
    T: Send + 'static,
{
    let size = std::mem::size_of::<CompleteOnDrop<T, F>>().max(std::mem::size_of::<F>());
    check_closure_fits(
        size,
        std::mem::align_of::<CompleteOnDrop<T, F>>(),
        stack_size,
    )
}

/// `Unstarted`'s drop for a `Task<T, F>`.
///
/// # Safety
///
/// `header` heads a `Task<T, F>`, and the caller hands over its reference, held by an
/// unstarted task being dropped (by the one thread that held it).
unsafe fn cancel_task<T, F>(header: NonNull<Header>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: as the caller guarantees.
    let task = unsafe { TaskRef::<T, F>::from_header(header) };
    task.join.complete_after(
        || Err(JoinError::cancelled()),
        || {
            // SAFETY: the unstarted task is being dropped by the one thread that held it.
            unsafe { task.drop_closure() };
        },
    );
}
