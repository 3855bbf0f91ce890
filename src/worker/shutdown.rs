//! A worker's shutdown: every fiber cancelled, then drained (their destructors may
//! block), up to the shutdown's deadline.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::queue::Runnable;
use super::{Entry, Unstarted, Worker};
use crate::task::{Header, JoinError, Task};

impl Worker {
    /// Stops (see `Runtime`'s `# Shutdown`):
    ///
    /// 1. cancels every fiber: each unwinds from its suspension point, on this thread, when
    ///    it next runs (at once, if it is parked); tasks that never started are dropped;
    /// 2. runs the loop on, without new tasks, until every fiber has ended: the
    ///    destructors that run as the fibers unwind may block (sleep, lock, join, wait for
    ///    I/O), and are woken as usual;
    /// 3. at the shutdown's deadline, if any, abandons the fibers still there: reported on
    ///    stderr, left suspended with their stacks leaked, their tasks resolved as
    ///    cancelled;
    /// 4. refuses messages and closes the reactor.
    ///
    /// Returns whether it abandoned fibers.
    pub(super) fn shut_down(&self) -> bool {
        let deadline = self.runtime.deadline();
        let mut abandoned = false;
        for entry in self.fibers.borrow().iter().map(|(_, entry)| entry) {
            // SAFETY: a fiber in the slab keeps its task alive.
            let header = unsafe { &*entry.header };
            if header.state.request_cancel() {
                header.wake(); // queues it here if it is parked
            }
        }
        loop {
            self.drop_unstarted();
            self.take_messages();
            let next = self.queue.borrow_mut().pop();
            match next {
                // The task was dropped unstarted (cancelled) above, or stolen.
                Some(Runnable::Start(queue)) => drop(self.take_marked(queue)),
                Some(Runnable::Fiber(id)) => {
                    self.resume(id);
                    if self.poll_due() {
                        self.polled_at
                            .set(self.shared.ticks.load(Ordering::Relaxed));
                        self.shared.reactor.react_now();
                    }
                }
                None if self.fibers.borrow().is_empty() => break,
                None if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                    self.abandon_fibers();
                    abandoned = true;
                    break;
                }
                None => self.wait_until(deadline),
            }
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        // Nothing will poll this reactor again: waits on its sources fail from now on and
        // its timers move to whichever reactor polls them next.
        self.shared.reactor.close();
        while self.shared.injector.pop().is_some() {}
        self.drop_unstarted();
        self.queue.borrow_mut().clear();
        abandoned
    }

    /// Drops the tasks waiting to start here: their handles resolve to cancelled.
    pub(super) fn drop_unstarted(&self) {
        while let Some(task) = self.shared.spawns.pop() {
            drop(task);
        }
        while let Some(task) = self.shared.pinned.pop() {
            drop(task);
        }
        let local: Vec<Unstarted> = self.local_spawns.borrow_mut().drain(..).collect();
        drop(local);
    }

    /// Sleeps in the reactor until an event, a timer, a message or `deadline`.
    pub(super) fn wait_until(&self, deadline: Option<Instant>) {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        if self.shared.injector.is_empty() {
            let timeout =
                deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let _ = self.shared.reactor.react(timeout);
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
    }

    /// Gives up on the fibers left at a shutdown's deadline (blocked in destructors as
    /// they unwind, or ignoring their cancellation): they stay suspended for good, their
    /// stacks and tasks leaked, and their tasks resolve as cancelled.
    ///
    /// Leaked, not freed: such a fiber may still be registered somewhere without a
    /// reference count (a wait list of `green::sync`, a join cell; see [`BlockedFiber`]),
    /// and a later notifier must find its task header alive. Its wake then goes to this
    /// closed worker and is dropped.
    ///
    /// The worker's thread then never exits (it parks for good once the runtime is told):
    /// a frame on an abandoned fiber's stack may lend out one of the thread's
    /// thread-locals (inside `LocalKey::with`, to a thread of `std::thread::scope` or a
    /// fiber of `green::scope`), which the thread's exit would free under the borrower.
    pub(super) fn abandon_fibers(&self) {
        let left: Vec<Entry> = self.fibers.borrow_mut().drain().collect();
        eprintln!(
            "green: worker {}: the shutdown deadline passed with {} fiber(s) still running \
             (blocked in destructors as they unwind, or ignoring their cancellation); they are \
             left suspended, their stacks leaked, and their JoinHandles resolve as cancelled",
            self.shared.index,
            left.len()
        );
        self.runtime
            .abandoned
            .fetch_add(left.len(), Ordering::SeqCst);
        self.unlist_all();
        for entry in left {
            std::mem::forget(entry.fiber);
            // SAFETY: the fiber is never resumed again, and its closure's reference, leaked
            // with it, keeps the task alive.
            unsafe { (entry.abandon)(entry.header) };
        }
        self.publish_load();
    }
}

/// `Entry::abandon` for a `Task<T, G>`: completes its join cell as cancelled.
///
/// # Safety
///
/// `header` heads a live `Task<T, G>` whose fiber will never run again.
pub(super) unsafe fn abandon_task<T: Send + 'static, G: Send + 'static>(header: *const Header) {
    // SAFETY: as the caller guarantees; the abandoned fiber's closure keeps its reference
    // (leaked with it), so the task stays alive.
    let task = unsafe { &*header.cast::<Task<T, G>>() };
    crate::sys::catch_and_report("a JoinHandle's waker", || {
        task.join.complete(Err(JoinError::cancelled()))
    });
}
