//! [`unblock`]: run blocking code on a pool of OS threads ([`pool`]) while the fiber waits.
//!
//! A job's panic is caught and handed to the fiber that waits for it; when that fiber gave
//! up (cancelled), the result or the panic payload is dropped on the pool thread with its
//! destructor's panics caught.

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::thread;

use crate::sys::catch_and_report;
use crate::sys::lock;

pub(crate) mod pool;

/// Where a job's result goes, and who waits for it.
struct Slot<T> {
    /// The result, once the job ran (`Err` with the panic payload if it panicked).
    result: Option<thread::Result<T>>,
    /// The waiter's waker.
    waker: Option<Waker>,
}

/// Waits for the result of a job on the pool.
struct Pending<T>(Arc<Mutex<Slot<T>>>);

impl<T> Future for Pending<T> {
    type Output = thread::Result<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut slot = lock(&self.0);
        if let Some(result) = slot.result.take() {
            return Poll::Ready(result);
        }
        if slot.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            return Poll::Pending;
        }
        // A waker is cloned, and the one it replaces dropped, with no lock held.
        drop(slot);
        let waker = cx.waker().clone();
        let mut slot = lock(&self.0);
        if let Some(result) = slot.result.take() {
            return Poll::Ready(result);
        }
        let displaced = slot.waker.replace(waker);
        drop(slot);
        drop(displaced);
        Poll::Pending
    }
}

/// Runs the blocking function `f` on a pool of OS threads and parks the calling fiber until
/// it returns; other fibers run meanwhile. Use it for code that blocks the thread: file
/// I/O, name resolution, CPU-heavy work, C libraries.
///
/// Outside a fiber, `f` simply runs on the calling thread, which may block anyway.
///
/// `f` runs on a plain thread of the runtime's pool, not in a fiber: green's blocking
/// calls there block that thread, and [`spawn`](crate::spawn) starts its fiber on the
/// global runtime, as on any thread outside a runtime, not on the caller's runtime. To
/// start one on the caller's runtime, spawn it from the calling fiber, or move a
/// [`Handle`](crate::Handle) into `f`:
///
/// ```
/// let runtime = green::Runtime::new().unwrap();
/// let handle = runtime.handle();
/// let answer = runtime.run(move || {
///     let fiber = green::unblock(move || {
///         // `green::spawn` here would go to the global runtime.
///         handle.spawn(|| 6 * 7)
///     });
///     fiber.join().unwrap()
/// });
/// assert_eq!(answer, 42);
/// ```
///
/// # Panics
///
/// A panic in `f` is re-raised in the caller.
///
/// # Examples
///
/// ```
/// let length = green::run(|| green::unblock(|| std::fs::read_to_string("Cargo.toml").unwrap().len()));
/// assert!(length > 0);
/// ```
pub fn unblock<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let Some(pool) = crate::executor::current_pool() else {
        return f();
    };
    let slot = Arc::new(Mutex::new(Slot {
        result: None,
        waker: None,
    }));
    let job_slot = slot.clone();
    pool.submit(Box::new(move || {
        let result = panic::catch_unwind(AssertUnwindSafe(f));
        let waker = {
            let mut slot = lock(&job_slot);
            slot.result = Some(result);
            slot.waker.take()
        };
        if let Some(waker) = waker {
            waker.wake();
        }
        // If the waiter gave up (its fiber was cancelled), the slot is ours alone and the
        // result, or the panic payload, goes with it: its destructor may panic, and the
        // pool thread must go on.
        catch_and_report(
            "the destructor of an unblock job's unclaimed result",
            || drop(job_slot),
        );
    }));
    match crate::block_on::await_blocking_on(Pending(slot), crate::task::Wait::Blocking) {
        Ok(value) => value,
        Err(payload) => panic::resume_unwind(payload),
    }
}
