//! Blocking calls: [`await_blocking`] inside a fiber, [`block_on`] on a plain thread, and
//! [`JoinHandle::join`].
//!
//! Inside a fiber, `await_blocking(fut)`:
//!
//! 1. polls `fut` on the fiber's own stack with a waker that names the fiber;
//! 2. on `Ready(v)` returns `v`: no switch, no allocation;
//! 3. on `Pending` parks the fiber (IDLE → PARKED) and switches to its resumer (the worker
//!    loop, or a fiber that runs it directly from `join`);
//! 4. a wake from any thread makes it runnable again (see [`crate::task`]), and the worker
//!    resumes it: back to 1, since wakes may be spurious.
//!
//! The poll is user code, and may itself block in green (a channel's `recv` inside an
//! `async` block): that parks the same fiber on the same state word, and its park may
//! consume the outer future's wake. So a poll during which the fiber parked is followed
//! by another poll, not by a park.
//!
//! A fiber of the user's ([`crate::fiber::Fiber`]) resumed by a task may call
//! `await_blocking` on its own stack; it may not suspend itself from the poll (its
//! `Suspender::suspend` panics then), since the task it runs in must stay the one that
//! parks and is woken until the call returns.
//!
//! On a plain thread both functions poll the future with a waker that unparks the thread.
//! The thread only parks: what wakes it never depends on a fiber. Green's timers and
//! sockets polled outside fibers register with the plain-thread reactor, which a thread of
//! green's own drives and on which no fiber runs (see `reactor`), so a plain thread's wait
//! completes on time while every worker computes. Waiting in the reactor from the
//! blocked thread itself, as async-io's `block_on` does when no thread polls, would save
//! one thread wake per wait, but would need a second way to drive the reactor (for
//! futures that other executors poll) and a hand-over between the two; one thread that
//! always drives it is the simpler of the two sound designs.

use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::thread::{self, Thread};

use crate::task::join::{DONE, Registered};
use crate::task::{JoinError, JoinHandle, Wait, Waiter};
use crate::tokio_context;
use crate::worker::{self, Current};

/// Waits for `fut` and returns its output.
///
/// Inside a fiber this parks only the calling fiber, and the other fibers of its worker
/// run meanwhile; anywhere else it blocks the thread, as [`block_on`].
///
/// Any future works: one from this crate, a `futures` channel completed by another
/// thread, a tokio `JoinHandle` of a runtime on another thread, and so on.
///
/// # Panics
///
/// Outside a fiber, where [`block_on`] panics.
///
/// # Examples
///
/// ```
/// let (sender, receiver) = futures::channel::oneshot::channel();
/// std::thread::spawn(move || sender.send("hello from a thread").unwrap());
/// let message = green::run(move || green::await_blocking(receiver).unwrap());
/// assert_eq!(message, "hello from a thread");
/// ```
pub fn await_blocking<F: Future>(fut: F) -> F::Output {
    await_blocking_on(fut, Wait::Future)
}

/// [`await_blocking`] for a blocking call of green's own, which says what it waits for
/// (`wait`, which a fiber dump shows for the parked fiber).
#[inline]
pub(crate) fn await_blocking_on<F: Future>(fut: F, wait: Wait) -> F::Output {
    let Some(current) = worker::current() else {
        return tokio_context::on_plain_thread(|| block_on_thread(fut));
    };
    // On a stack of the user's (a `Fiber` this fiber resumed), that fiber may not suspend
    // until we return: the task must stay the running one, since its waker serves every
    // poll and its state every park.
    let _pinned = current.pin_running();
    let mut fut = pin!(fut);
    let waker = current.waker();
    let mut cx = Context::from_waker(&waker);
    loop {
        let parks = current.parks();
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            return output;
        }
        // A blocking call of green's inside the poll (a channel, a lock, a sleep, a
        // join) parks this same fiber, and its park may have consumed the wake meant for
        // `fut`: poll again rather than wait for a wake that came already.
        //
        // A future that woke itself during its poll (an async `yield_now`, a budget that
        // ran out) is polled again at once, as one step of the fiber's turn: like an I/O
        // operation, it spends the turn's budget, so that a future that keeps waking
        // itself gives way to the other fibers and the reactor every `IO_BUDGET` polls.
        if current.parks() == parks && !current.park(wait) {
            current.spend_io_budget();
        }
    }
}

/// Runs `fut` to completion on the calling thread, blocking it until the output is ready.
///
/// Green's timers and I/O that `fut` waits on are driven by a thread of green's that runs
/// no fibers (started on first use), so `block_on` works for green's own futures as well as
/// for any other, and its wait never depends on a fiber yielding: it completes while every
/// worker of every runtime is busy.
///
/// Inside a fiber, `block_on` does not block the worker thread (that would stall every
/// other fiber of the worker, and deadlock if `fut` waits for one of them): it parks only
/// the calling fiber, exactly as [`await_blocking`].
///
/// With the `tokio` feature, a plain thread that has no tokio context of its own runs the
/// call inside the context of the tokio runtime green starts for the process (see
/// [Tokio](crate#tokio)): tokio's timers and sockets made inside `fut` work. The context
/// lasts for the call only, so a tokio future made before it, outside a fiber, still
/// finds none.
///
/// Async code `.await`s instead: `block_on` in a task spawned with `tokio::spawn` blocks
/// the thread that runs the task, and the other tasks of that thread with it (with a
/// current-thread tokio runtime, all of its tasks, its timers and its sockets, so that a
/// future waiting on them never completes). Green refuses it where it would freeze
/// green's own tokio runtime, below; in `tokio::task::spawn_blocking` it is fine.
///
/// # Panics
///
/// With the `tokio` feature, in a task spawned with `tokio::spawn` on the process-wide
/// tokio runtime that green starts ([Tokio](crate#tokio)), if the future is pending (a
/// ready one returns as usual): blocking that runtime's one thread would stop tokio's
/// timers and sockets in the whole process. As tokio's own `block_on`, which
/// refuses to run inside a runtime, it panics with a message that says to `.await` the
/// future instead.
///
/// # Examples
///
/// ```
/// let value = green::block_on(async { 40 + 2 });
/// assert_eq!(value, 42);
/// ```
pub fn block_on<F: Future>(fut: F) -> F::Output {
    await_blocking(fut)
}

/// Unparks a thread when woken.
struct ThreadWaker {
    /// The thread to unpark.
    thread: Thread,
    /// Set by a wake, cleared by the thread when it sees it.
    notified: AtomicBool,
}

impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.notified.swap(true, Ordering::AcqRel) {
            self.thread.unpark();
        }
    }
}

/// `block_on` for a thread that is not running a fiber.
///
/// # Panics
///
/// On the thread of green's process-wide tokio runtime (the `tokio` feature; see
/// `tokio_context::check_may_block`), if it would block: the future is pending and has not
/// woken itself.
fn block_on_thread<F: Future>(fut: F) -> F::Output {
    thread_local! {
        /// This thread's waker, reused by every `block_on` on it that is not nested.
        static CACHED: RefCell<Option<(Arc<ThreadWaker>, Waker)>> = const { RefCell::new(None) };
    }
    // A nested `block_on` (called from inside a poll) gets a waker of its own, so the two
    // never consume each other's wakes.
    let (parker, waker) = CACHED
        .with(|cached| cached.borrow_mut().take())
        .unwrap_or_else(|| {
            let parker = Arc::new(ThreadWaker {
                thread: thread::current(),
                notified: AtomicBool::new(false),
            });
            let waker = Waker::from(parker.clone());
            (parker, waker)
        });
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(&waker);
    let output = loop {
        if let Poll::Ready(output) = fut.as_mut().poll(&mut cx) {
            break output;
        }
        // `park` may return spuriously; wait for the flag.
        while !parker.notified.swap(false, Ordering::AcqRel) {
            // Only a call that would block is refused: one whose future is ready (a
            // message queued, a finished task) returns as usual.
            tokio_context::check_may_block();
            thread::park();
        }
    };
    parker.notified.store(false, Ordering::Release);
    CACHED.with(|cached| *cached.borrow_mut() = Some((parker, waker)));
    output
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
    ///
    /// # Panics
    ///
    /// If the calling fiber joins itself (its own handle, passed to it): it would wait for
    /// ever, as `std::thread::JoinHandle::join` would, which panics too. Outside a fiber,
    /// where [`block_on`] panics (a `JoinHandle` is a future: `.await` it in async code).
    pub fn join(mut self) -> Result<T, JoinError> {
        match worker::current() {
            Some(fiber) => join_in_fiber(&mut self, fiber),
            None => block_on_thread(self),
        }
    }
}

/// `JoinHandle::join` on a fiber: registers the fiber itself, which costs no reference
/// count (see `JoinCell`), and parks it until the result is there.
fn join_in_fiber<T: Send + 'static>(
    handle: &mut JoinHandle<T>,
    fiber: Current,
) -> Result<T, JoinError> {
    let cell = handle.join_cell();
    let mut state = cell.load_state();
    if state & DONE != 0 {
        return handle.take();
    }
    assert!(
        !fiber.is_task(handle.header()),
        "green: a fiber cannot join itself: it would wait for ever"
    );
    // A task that the worker would run next anyway runs now, nested in this fiber: if
    // it finishes without blocking, there is nothing to wait for. (Not if an earlier
    // poll left a waker in the cell, which the task's completion would wake.)
    let task = std::ptr::from_ref(handle.header()).cast::<()>();
    if state == 0
        && worker::with_worker(|worker| {
            worker.is_some_and(|worker| worker.run_next_now(task, cell.direct()))
        })
    {
        state = cell.load_state();
        if state & DONE != 0 {
            return handle.take();
        }
    }
    // SAFETY: we are the cell's JoinHandle.
    if !unsafe { cell.register(state, || Waiter::Fiber(fiber.blocked())) } {
        return handle.take(); // the result came meanwhile
    }
    // From here on we must not leave before taking the registration back or seeing
    // `WOKEN`: `Registered::drop` waits for that, on every way out.
    let registered = Registered(cell);
    while !cell.is_done() {
        fiber.park(Wait::Join); // may unwind (cancelled, or the fiber dropped)
    }
    drop(registered);
    handle.take()
}
