//! Joining: the join cell where a task's result goes, and [`JoinHandle`], the owned
//! permission to wait for it. The blocking `JoinHandle::join`, which needs the scheduler,
//! is in `worker::join`.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::sync::atomic::AtomicBool;
use std::task::{Context, Poll};

use super::waiter::Waiter;
use super::{Header, JoinError, TaskRef};
use crate::loom::cell::UnsafeCell;
use crate::loom::sync::atomic::{AtomicU8, Ordering};
use crate::loom::{hint, thread};

/// `JoinCell::state` bit: the result is stored; never unset.
pub(crate) const DONE: u8 = 1;
/// `JoinCell::state` bit: the `JoinHandle` stored its waker; while set, only the completer
/// reads the waker (by reference) and nobody writes it.
const JOIN_WAKER: u8 = 2;
/// `JoinCell::state` bit: the completer is done with the registration it found (it woke
/// the joiner); a joiner blocked in a fiber waits for it before it leaves `join`.
const WOKEN: u8 = 4;
/// `JoinCell::state` bit: the `JoinHandle` was dropped before the result came; the
/// completer drops the result at once instead of keeping it for nobody (a waker of the
/// task kept somewhere, a timer's or a channel's, would keep it as long as the task).
const DETACHED: u8 = 8;

/// Where a task's result goes, and who waits for it.
///
/// One atomic word (`DONE`, `JOIN_WAKER`, `WOKEN`) instead of a lock, as tokio's join
/// state: the `JoinHandle` owns the waker slot while `JOIN_WAKER` is clear and `DONE` is
/// not set; once it sets `JOIN_WAKER` (Release), the slot is frozen, and the completer,
/// having set `DONE` (AcqRel) and seen `JOIN_WAKER`, wakes it by reference, then sets
/// `WOKEN` (Release). The handle takes the slot back by clearing `JOIN_WAKER` with a
/// compare-exchange that fails once `DONE` is set.
///
/// `join` on a fiber registers the fiber itself ([`Waiter::Fiber`]), which holds no
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
    /// only in that case. Touched on that one thread only, so std's even under loom
    /// (`run_next_now` takes std's type).
    direct: AtomicBool,
    /// The result. Written once before `DONE` is set, read once by the `JoinHandle` after
    /// it saw `DONE`.
    result: UnsafeCell<Option<Result<T, JoinError>>>,
    /// Whom to wake when the result is stored: the waker of whoever polls the
    /// `JoinHandle`, or the fiber blocked in `join`; see the type docs for who may touch it
    /// when. Dropped with the task.
    waker: UnsafeCell<Option<Waiter>>,
}

impl<T> JoinCell<T> {
    /// An empty cell: no result, nobody waiting.
    pub(crate) fn new() -> JoinCell<T> {
        JoinCell {
            state: AtomicU8::new(0),
            direct: AtomicBool::new(false),
            result: UnsafeCell::new(None),
            waker: UnsafeCell::new(None),
        }
    }

    /// Stores the result and wakes the joiner. Only the first call has an effect.
    pub(crate) fn complete(&self, result: Result<T, JoinError>) {
        if self.is_done() {
            return;
        }
        // A task is completed on one thread only, by one of: its fiber, its worker when the
        // fiber could not start or was abandoned at a shutdown's deadline (it never runs
        // again), or the thread that drops it unstarted.
        // SAFETY: so this write, the first before `DONE` is set, races with nothing; the
        // JoinHandle reads only after `DONE`.
        self.result.with_mut(|slot| unsafe { *slot = Some(result) });
        if self.direct.load(Ordering::Relaxed) {
            // Our joiner runs us nested, on this thread, and holds the JoinHandle without
            // a registration (it had none when it started us): nothing else writes the
            // state meanwhile, so a store does what `fetch_or` would, without the lock.
            self.state.store(DONE, Ordering::Release);
            return;
        }
        let state = self.state.fetch_or(DONE, Ordering::AcqRel);
        if state & DETACHED != 0 {
            // SAFETY: the JoinHandle is gone (it set `DETACHED` as it dropped, before
            // `DONE`), and only it reads the result: the slot is ours.
            let result = self.result.with_mut(|slot| unsafe { (*slot).take() });
            crate::sys::catch_and_report("the destructor of a detached fiber's result", || {
                drop(result)
            });
            return;
        }
        if state & JOIN_WAKER != 0 {
            // A user's waker is woken in the slot; a fiber is copied out of it, as it may
            // leave `join`, and free the slot, once `WOKEN` is set.
            // SAFETY: `JOIN_WAKER` was set (and its Release write of the waker seen), and
            // with `DONE` now set the JoinHandle never writes the slot again: only shared
            // reads of it remain.
            let fiber = self.waker.with(|slot| match unsafe { &*slot } {
                // A user's waker, on the task's worker: a panic in it must not undo the
                // completion, nor unwind through the worker.
                Some(Waiter::Waker(waker)) => {
                    crate::sys::catch_and_report("a JoinHandle's waker", || waker.wake_by_ref());
                    None
                }
                Some(Waiter::Fiber(fiber)) => Some(*fiber),
                None => None,
            });
            if let Some(fiber) = fiber {
                // SAFETY: the fiber registered and did not take the slot back (it cannot
                // now: `DONE` is set), so it waits in `join` for `WOKEN`.
                let remote = unsafe { fiber.wake() };
                // Only this call writes the state once `DONE` is set (type docs).
                self.state
                    .store(DONE | JOIN_WAKER | WOKEN, Ordering::Release);
                // The joiner may be gone now; its worker is held by `remote`.
                if let Some(remote) = remote {
                    remote.send();
                }
            }
        }
    }

    /// Runs `before` (which drops a closure, whose destructor may panic), then, unless the
    /// cell is done already, `complete`s it with `result()`, even if `before` panicked: a
    /// joiner is never left waiting. The result is made only if it is used (a
    /// `JoinError` is an allocation, and this runs at the end of every task).
    pub(crate) fn complete_after(
        &self,
        result: impl FnOnce() -> Result<T, JoinError>,
        before: impl FnOnce(),
    ) {
        /// Completes the cell when dropped, on the way out or while unwinding.
        struct Complete<'a, T, R: FnOnce() -> Result<T, JoinError>>(&'a JoinCell<T>, Option<R>);
        impl<T, R: FnOnce() -> Result<T, JoinError>> Drop for Complete<'_, T, R> {
            fn drop(&mut self) {
                if let Some(result) = self.1.take()
                    && !self.0.is_done()
                {
                    self.0.complete(result());
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
    pub(crate) unsafe fn register(&self, state: u8, wake: impl FnOnce() -> Waiter) -> bool {
        if state & JOIN_WAKER != 0
            && self
                .state
                .compare_exchange(JOIN_WAKER, 0, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
        {
            return false;
        }
        let wake = wake();
        // SAFETY: `JOIN_WAKER` is clear and only the JoinHandle (our caller) sets it, so
        // the completer does not read the slot (it reads it only after seeing it set).
        self.waker.with_mut(|slot| unsafe { *slot = Some(wake) });
        // Fails only if the result came meanwhile.
        self.state
            .compare_exchange(0, JOIN_WAKER, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The `JoinHandle` is dropped: if the result has not come, its completer drops it
    /// (`DETACHED`). Called by the handle only, which no joiner uses then: no registration
    /// of a fiber is pending, so the completer's plain stores of the word (`direct`,
    /// `WOKEN`) do not happen with this `fetch_or`.
    pub(crate) fn detach(&self) {
        if self.state.load(Ordering::Acquire) & DONE == 0 {
            self.state.fetch_or(DETACHED, Ordering::AcqRel);
        }
    }

    /// The state word (`DONE`, `JOIN_WAKER`, `WOKEN`), for a joiner's first look.
    pub(crate) fn load_state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    /// Set while the joiner runs the task nested in its own fiber (see `direct`).
    pub(crate) fn direct(&self) -> &AtomicBool {
        &self.direct
    }

    /// Whether the result is there.
    pub(crate) fn is_done(&self) -> bool {
        self.state.load(Ordering::Acquire) & DONE != 0
    }
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
        task.join.complete_after(
            || Err(JoinError::cancelled()),
            || {
                // Inline, not `drop_closure`: this runs at every task's end, on the task's own
                // stack, and the closure is nearly always gone (taken by the body).
                // SAFETY: the fiber's own guard, dropped on its worker after its body ran (and
                // took the closure) or instead of it; the task's `Unstarted` is gone.
                drop(unsafe { task.take_closure() });
            },
        );
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
        self.join_cell().detach();
        // SAFETY: the handle owns one reference.
        unsafe { Header::release(self.header) };
    }
}

impl<T> JoinHandle<T> {
    /// The handle of the task at `header`, whose join cell is `join`.
    ///
    /// # Safety
    ///
    /// `header` heads a task whose join cell is `join` and holds a `T`; the caller hands
    /// over one reference to it.
    pub(crate) unsafe fn new(header: NonNull<Header>, join: NonNull<JoinCell<T>>) -> JoinHandle<T> {
        JoinHandle {
            header,
            join,
            _result: PhantomData,
        }
    }

    /// The task's header.
    pub(crate) fn header(&self) -> &Header {
        // SAFETY: the handle's reference keeps the task alive.
        unsafe { self.header.as_ref() }
    }

    /// The task's join cell.
    pub(crate) fn join_cell(&self) -> &JoinCell<T> {
        // SAFETY: as for the header, in the same allocation.
        unsafe { self.join.as_ref() }
    }
}

impl<T: Send + 'static> JoinHandle<T> {
    /// Whether the fiber has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.join_cell().is_done()
    }

    /// Cancels the fiber: if it has not finished, it is unwound at its next suspension point
    /// (or never started), and joining it gives a cancelled [`JoinError`].
    ///
    /// The destructors that run while the fiber unwinds may block (sleep, lock, join)
    /// like any code: their suspensions do not raise the cancellation again. A fiber that
    /// catches the unwinding (`catch_unwind`, or a [`Fiber`](crate::fiber::Fiber) of its
    /// own in which it was suspended) and runs on unwinds again at its next suspension
    /// point, before it parks; one that returns without suspending again keeps its
    /// result (code that catches panics in a loop tells a cancellation apart with
    /// [`is_cancellation`](crate::is_cancellation), and re-raises it). A fiber already
    /// unwinding from a panic of its own is cancelled only if it catches that panic and
    /// suspends again. A destructor that panics during the cancellation
    /// aborts the process, as any panic out of a destructor during unwinding does: see
    /// [Shutdown](crate::Runtime#shutdown) for why, and what to write instead.
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
        if self.header().state.request_cancel() {
            self.header().wake();
        }
    }

    /// Takes the result, which must be there.
    pub(crate) fn take(&mut self) -> Result<T, JoinError> {
        let result = self.join_cell().result.with_mut(|slot| {
            // SAFETY: `done` was seen (Acquire), so the result is written and the writer is
            // done with it; only this handle reads it, through `&mut self`.
            unsafe { (*slot).take() }
        });
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
            let same = cell.waker.with(|slot| {
                // SAFETY: while `JOIN_WAKER` is set nobody writes the slot (see `JoinCell`).
                let stored = unsafe { &*slot };
                matches!(stored, Some(Waiter::Waker(waker)) if waker.will_wake(cx.waker()))
            });
            if same {
                return Poll::Pending;
            }
        }
        // SAFETY: we are the cell's JoinHandle.
        if !unsafe { cell.register(state, || Waiter::Waker(cx.waker().clone())) } {
            return Poll::Ready(this.take());
        }
        Poll::Pending
    }
}

/// A fiber's registration in a join cell (`JoinHandle::join_in_fiber`); dropping it
/// takes the registration back or, if the task completed, waits until the completer has
/// woken the fiber, so that the completer never touches a fiber that has left `join`.
pub(crate) struct Registered<'a, T>(pub(crate) &'a JoinCell<T>);

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
                hint::spin_loop();
            } else {
                thread::yield_now(); // the completer's thread may be preempted
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
