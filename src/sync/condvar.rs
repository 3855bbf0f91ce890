//! [`Condvar`]: a condition variable for [`Mutex`](super::Mutex).

use std::fmt;
use std::future::poll_fn;
use std::sync::LockResult;
use std::task::Poll;

use super::MutexGuard;
use super::wait_queue::{RemoveOnDrop, WaitQueue};

/// A condition variable for [`Mutex`](super::Mutex): `wait` parks the fiber (or blocks the thread) until
/// notified.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
/// use green::sync::{Condvar, Mutex};
///
/// let pair = Arc::new((Mutex::new(false), Condvar::new()));
/// let signaller = pair.clone();
/// green::run(move || {
///     green::spawn(move || {
///         *signaller.0.lock().unwrap() = true;
///         signaller.1.notify_one();
///     });
///     let mut ready = pair.0.lock().unwrap();
///     while !*ready {
///         ready = pair.1.wait(ready).unwrap();
///     }
/// });
/// ```
pub struct Condvar {
    /// The waiters.
    pub(super) waiters: WaitQueue,
}

impl Default for Condvar {
    fn default() -> Self {
        Condvar::new()
    }
}

impl fmt::Debug for Condvar {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Condvar").finish_non_exhaustive()
    }
}

impl Condvar {
    /// A new condition variable.
    pub fn new() -> Condvar {
        Condvar {
            waiters: WaitQueue::new(),
        }
    }

    /// Unlocks `guard`'s mutex, waits for a notification, and locks it again. Spurious
    /// wake-ups may happen, as with std's `Condvar`: check the condition in a loop.
    ///
    /// # Errors
    ///
    /// A [`PoisonError`](std::sync::PoisonError) with the guard if the mutex is poisoned on relocking.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        crate::block_on::await_blocking_on(self.wait_async(guard), crate::task::Wait::Condvar)
    }

    /// The async twin of [`wait`](Condvar::wait).
    ///
    /// # Errors
    ///
    /// As [`wait`](Condvar::wait).
    pub async fn wait_async<'a, T: ?Sized>(
        &self,
        guard: MutexGuard<'a, T>,
    ) -> LockResult<MutexGuard<'a, T>> {
        let mutex = guard.mutex;
        // Register before unlocking, so that a notify right after the unlock reaches us.
        let mut key = None;
        let mut registered = false;
        let mut guard = Some(guard);
        let remover = RemoveOnDrop {
            queue: &self.waiters,
            key: &mut key,
        };
        poll_fn(|cx| {
            if !registered {
                registered = true;
                remover.queue.poll_notified(remover.key, cx.waker());
                drop(guard.take());
                return Poll::Pending;
            }
            if remover.queue.poll_notified(remover.key, cx.waker()) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
        drop(remover);
        mutex.lock_async().await
    }

    /// Wakes one waiter.
    pub fn notify_one(&self) {
        self.waiters.notify_one();
    }

    /// Wakes every waiter.
    pub fn notify_all(&self) {
        self.waiters.notify_all();
    }
}
