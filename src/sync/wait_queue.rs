//! The wait queue under every type of this module: waiters in arrival order, woken one
//! or all at a time, with a notification passed on when a woken waiter gives up.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering, fence};
use std::task::{Poll, Waker};

use slab::Slab;

use crate::reactor::lock;
use crate::worker::{BlockedFiber, Wake, Wakeup};

/// Waiters for an event, woken one or all at a time, kept under a lock of their user's
/// choosing: a [`WaitQueue`]'s own, or a channel's state lock.
///
/// A waiter that was notified but gives up (its future is dropped) passes the notification
/// on, so that dropping a future never loses a wake.
///
/// Every method runs with that lock held (`&mut self`). Fibers registered with
/// [`register_fiber`](Waiters::register_fiber) are woken by `notify_one` and `notify_all`
/// themselves, under the lock; wakers are handed back, to wake after unlocking.
pub(super) struct Waiters {
    /// Each waiter's registration, or `None` once notified.
    pub(super) slots: Slab<Option<Wake>>,
    /// Keys of the waiters not yet notified, oldest first (may hold removed keys).
    pub(super) order: VecDeque<usize>,
    /// How many slots hold a registration (waiters registered and not yet notified).
    pub(super) waiting: usize,
}

impl Waiters {
    pub(super) const fn new() -> Waiters {
        Waiters {
            slots: Slab::new(),
            order: VecDeque::new(),
            waiting: 0,
        }
    }

    /// Registers a waiter, or refreshes its waker. One that was notified is queued again
    /// (as a new arrival): its caller found its condition still false.
    pub(super) fn register(&mut self, key: &mut Option<usize>, waker: &Waker) {
        if let Some(k) = *key
            && let Some(Some(Wake::Waker(current))) = self.slots.get_mut(k)
        {
            if !current.will_wake(waker) {
                current.clone_from(waker);
            }
            return;
        }
        self.put(key, || Wake::Waker(waker.clone()));
    }

    /// Registers a fiber that is about to park in a blocking call, without a waker.
    ///
    /// # Safety
    ///
    /// The caller is that blocking call, running on `fiber`, and it removes the
    /// registration ([`remove`](Waiters::remove), under the lock that guards these
    /// waiters) before it returns or unwinds, whatever happens: the notifier relies on it
    /// to know that the fiber is alive (see [`BlockedFiber`]).
    pub(super) unsafe fn register_fiber(&mut self, key: &mut Option<usize>, fiber: BlockedFiber) {
        if let Some(k) = *key
            && let Some(Some(Wake::Fiber(current))) = self.slots.get(k)
            && *current == fiber
        {
            return;
        }
        self.put(key, || Wake::Fiber(fiber));
    }

    /// Stores a registration under `key`: in place if the waiter is registered, queued as
    /// a new arrival if it was notified, under a new key if it has none.
    fn put(&mut self, key: &mut Option<usize>, wake: impl FnOnce() -> Wake) {
        if let Some(k) = *key {
            match self.slots.get_mut(k) {
                Some(Some(current)) => {
                    *current = wake();
                    return;
                }
                Some(slot @ None) => {
                    *slot = Some(wake());
                    self.order.push_back(k);
                    self.waiting += 1;
                    return;
                }
                None => {}
            }
        }
        let k = self.slots.insert(Some(wake()));
        self.order.push_back(k);
        self.waiting += 1;
        *key = Some(k);
    }

    /// Removes a waiter; returns whether it had been notified.
    pub(super) fn remove(&mut self, key: &mut Option<usize>) -> bool {
        let Some(k) = key.take() else { return false };
        match self.slots.try_remove(k) {
            Some(Some(_)) => {
                self.waiting -= 1;
                if self.waiting == 0 {
                    // Only removed keys remain: drop them before they pile up.
                    self.order.clear();
                }
                false
            }
            Some(None) => true,
            None => false,
        }
    }

    /// Marks the oldest waiter notified and returns its wake, to do after unlocking. A
    /// fiber's state changes here, under the lock (see `register_fiber`).
    pub(super) fn notify_one(&mut self) -> Option<Wakeup> {
        if self.waiting == 0 {
            return None;
        }
        while let Some(k) = self.order.pop_front() {
            if let Some(slot) = self.slots.get_mut(k)
                && let Some(wake) = slot.take()
            {
                self.waiting -= 1;
                if self.waiting == 0 {
                    // Only removed keys remain: drop them before they pile up.
                    self.order.clear();
                }
                return Self::wakeup(wake);
            }
        }
        None
    }

    /// Marks every waiter notified and returns their wakes, to do after unlocking.
    pub(super) fn notify_all(&mut self) -> Vec<Wakeup> {
        if self.waiting == 0 {
            return Vec::new();
        }
        let Waiters { slots, order, .. } = self;
        let wakeups: Vec<Wakeup> = order
            .drain(..)
            .filter_map(|k| slots.get_mut(k).and_then(Option::take))
            .filter_map(Self::wakeup)
            .collect();
        self.waiting = 0;
        wakeups
    }

    /// The wake of a registration just taken. A fiber's state changes now, under the
    /// lock, and so does its queueing if it lives on this thread's worker: only a message
    /// to another thread is left for after unlocking.
    fn wakeup(wake: Wake) -> Option<Wakeup> {
        match wake {
            Wake::Waker(waker) => Some(Wakeup::Waker(waker)),
            // SAFETY: we hold the lock (`&mut self` in our callers) under which this
            // registration was found and taken, so the fiber, which removes its key under
            // this lock before leaving its call (`register_fiber`), has not left.
            Wake::Fiber(fiber) => unsafe { fiber.wake() }.map(Wakeup::Remote),
        }
    }
}

/// [`Waiters`] under a lock of their own, for [`Mutex`], [`Condvar`] and [`Barrier`].
///
/// `waiting` mirrors the count of waiters not yet notified, so that a notification with
/// nobody to wake costs one fence and one load instead of a lock. A waiter registers
/// before it re-checks its condition, and a notifier changes the condition before it reads
/// the count; a `SeqCst` fence on each side (Dekker's pattern) ensures that either the
/// waiter sees the change or the notifier sees the waiter.
pub(super) struct WaitQueue {
    /// The waiters, in arrival order.
    pub(super) inner: std::sync::Mutex<Waiters>,
    /// `inner.waiting`, readable without the lock; written only under it.
    pub(super) waiting: AtomicUsize,
}

impl WaitQueue {
    pub(super) const fn new() -> WaitQueue {
        WaitQueue {
            inner: std::sync::Mutex::new(Waiters::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Publishes the count of waiting waiters; called with the lock held.
    pub(super) fn publish(&self, waiters: &Waiters) {
        self.waiting.store(waiters.waiting, Ordering::Relaxed);
    }

    /// Whether a waiter may need a notification. Called after the notifier changed the
    /// condition that waiters check.
    pub(super) fn has_waiters(&self) -> bool {
        // Pairs with the fence in `poll_notified` after registering.
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed) != 0
    }

    /// Registers (or refreshes) a waiter. Returns `true` if it was notified since it
    /// registered, consuming the notification (and no longer registered).
    pub(super) fn poll_notified(&self, key: &mut Option<usize>, waker: &Waker) -> bool {
        let mut waiters = lock(&self.inner);
        if let Some(k) = *key {
            match waiters.slots.get(k) {
                Some(None) => {
                    waiters.slots.remove(k);
                    *key = None;
                    return true;
                }
                Some(Some(_)) => {
                    waiters.register(key, waker);
                    return false;
                }
                None => {
                    *key = None;
                    return true;
                }
            }
        }
        waiters.register(key, waker);
        self.publish(&waiters);
        drop(waiters);
        // Pairs with the fence in `has_waiters`: the caller's re-check of its condition
        // comes after this registration is visible.
        fence(Ordering::SeqCst);
        false
    }

    /// Removes a waiter. One that gives up (`pass_on`) passes on a notification it had
    /// not consumed; one whose condition held has consumed it.
    pub(super) fn remove(&self, key: &mut Option<usize>, pass_on: bool) {
        if key.is_none() {
            return;
        }
        let waker = {
            let mut waiters = lock(&self.inner);
            let notified = waiters.remove(key);
            let waker = if notified && pass_on {
                waiters.notify_one()
            } else {
                None
            };
            self.publish(&waiters);
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes the oldest waiter.
    pub(super) fn notify_one(&self) {
        if !self.has_waiters() {
            return;
        }
        let waker = {
            let mut waiters = lock(&self.inner);
            let waker = waiters.notify_one();
            self.publish(&waiters);
            waker
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Wakes every waiter.
    pub(super) fn notify_all(&self) {
        if !self.has_waiters() {
            return;
        }
        let wakers = {
            let mut waiters = lock(&self.inner);
            let wakers = waiters.notify_all();
            self.publish(&waiters);
            wakers
        };
        wakers.into_iter().for_each(Wakeup::wake);
    }
}

/// A future that waits on a [`WaitQueue`] until `ready` says so, re-checking after each
/// notification and once right after registering (so a notification between the check
/// and the registration is not lost).
pub(super) async fn wait_until<R>(queue: &WaitQueue, mut ready: impl FnMut() -> Option<R>) -> R {
    let mut key = None;
    let guard = RemoveOnDrop {
        queue,
        key: &mut key,
    };
    poll_fn(|cx| {
        if let Some(value) = ready() {
            // Done: a notification received meanwhile is consumed.
            guard.queue.remove(guard.key, false);
            return Poll::Ready(value);
        }
        loop {
            if !guard.queue.poll_notified(guard.key, cx.waker()) {
                // Registered: check once more before sleeping.
                if let Some(value) = ready() {
                    guard.queue.remove(guard.key, false);
                    return Poll::Ready(value);
                }
                return Poll::Pending;
            }
            // Notified: try again.
            if let Some(value) = ready() {
                return Poll::Ready(value);
            }
        }
    })
    .await
}

/// Removes a waiter when its future is dropped.
pub(super) struct RemoveOnDrop<'a> {
    pub(super) queue: &'a WaitQueue,
    pub(super) key: &'a mut Option<usize>,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        self.queue.remove(self.key, true);
    }
}
