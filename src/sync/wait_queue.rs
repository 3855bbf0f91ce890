//! The wait queue under every type of this module: waiters in arrival order, woken one
//! or all at a time, with a notification passed on when a woken waiter gives up.
//!
//! No user code runs under the queue's lock: a user's waker may block, re-enter the very
//! type that holds it, or panic in `clone`, `drop` or `wake`. So a waker is cloned before
//! the lock is taken ([`Registration::NeedsWaker`]), the ones displaced or removed are
//! handed back to drop after unlocking, and wakes are done after unlocking, every one of
//! them even when one panics ([`wake_all`]).

use std::collections::VecDeque;
use std::future::poll_fn;
use std::panic::{self, AssertUnwindSafe};
use std::task::{Poll, Waker};

use slab::Slab;

use crate::loom::sync::Mutex;
use crate::loom::sync::atomic::{AtomicUsize, Ordering, fence};
use crate::loom::{const_fn, lock};
use crate::sys::drop_quietly;
use crate::task::{BlockedFiber, PendingWake, Waiter};

/// Waiters for an event, woken one or all at a time, kept under a lock of their user's
/// choosing: a [`WaitQueue`]'s own, or a channel's state lock.
///
/// A waiter that was notified but gives up (its future is dropped) passes the notification
/// on, so that dropping a future never loses a wake.
///
/// Every method runs with that lock held (`&mut self`), and none runs user code. Fibers
/// registered with [`register_fiber`](Waiters::register_fiber) are woken by `notify_one`
/// and `notify_all` themselves, under the lock; wakers are handed back, to wake after
/// unlocking, and so are the registrations that `register` displaces and `remove` removes,
/// to drop after unlocking.
///
/// The first waiter of an idle queue takes an inline slot, [`FIRST`]: with one waiter at
/// a time (a channel between two fibers, a lock handed back and forth), registering and
/// removing touch neither the slab nor the deque. The slot's waiter, while waiting, is
/// always the oldest: it is taken only when nobody waits, and one that registers again
/// while others wait moves to the slab, behind them.
pub(super) struct Waiters {
    /// The inline slot: `None` if free; else its waiter's registration, or `None` once
    /// notified.
    first: Option<Option<Waiter>>,
    /// Each other waiter's registration, or `None` once notified.
    slots: Slab<Option<Waiter>>,
    /// Keys of the waiters in `slots` not yet notified, oldest first (may hold removed
    /// keys).
    order: VecDeque<usize>,
    /// How many waiters are registered and not yet notified, `first` included.
    pub(super) waiting: usize,
}

/// The key of [`Waiters`]' inline slot; the slab's keys are indices, never this large.
const FIRST: usize = usize::MAX;

/// What [`Waiters::register`] did.
#[must_use = "a displaced waker is dropped after unlocking; a missing one is cloned then"]
pub(super) enum Registration {
    /// The waiter is registered with the caller's waker. What it held before, if that
    /// was replaced, is the caller's to drop once the lock is released.
    Done(Option<Waiter>),
    /// The waiter needs a clone of the caller's waker, and a clone is user code, not to
    /// run under the lock: unlock, clone, lock again, and call again with the clone.
    NeedsWaker,
}

/// What [`Waiters::remove`] found.
#[must_use = "a removed waker is dropped after unlocking"]
pub(super) enum Removed {
    /// The waiter was not registered.
    Absent,
    /// The waiter had been notified, and now owns that notification: it consumes it or
    /// passes it on.
    Notified,
    /// The waiter was still waiting.
    Waiting {
        /// Its registration, held only to be dropped once the lock is released.
        _registration: Waiter,
    },
}

impl Removed {
    /// Whether the waiter had been notified.
    pub(super) fn was_notified(&self) -> bool {
        matches!(self, Removed::Notified)
    }
}

impl Waiters {
    /// No waiters.
    pub(super) const fn new() -> Waiters {
        Waiters {
            first: None,
            slots: Slab::new(),
            order: VecDeque::new(),
            waiting: 0,
        }
    }

    /// Registers a waiter, or refreshes its waker. One that was notified is queued again
    /// (as a new arrival): its caller found its condition still false.
    ///
    /// Needs no clone of `waker` if the registration holds one that wakes the same task;
    /// otherwise it takes `clone` (the caller's clone of `waker`, made with the lock
    /// released), or asks for one: [`Registration::NeedsWaker`].
    pub(super) fn register(
        &mut self,
        key: &mut Option<usize>,
        waker: &Waker,
        clone: &mut Option<Waker>,
    ) -> Registration {
        if let Some(k) = *key
            && let Some(Some(Waiter::Waker(current))) = self.slot(k)
            && current.will_wake(waker)
        {
            return Registration::Done(None);
        }
        match clone.take() {
            Some(clone) => Registration::Done(self.put(key, Waiter::Waker(clone))),
            None => Registration::NeedsWaker,
        }
    }

    /// Registers a fiber that is about to park in a blocking call, without a waker.
    ///
    /// # Safety
    ///
    /// The caller is that blocking call, running on `fiber`, and it removes the
    /// registration ([`remove`](Waiters::remove), under the lock that guards these
    /// waiters) before it returns or unwinds, whatever happens: the notifier relies on it
    /// to know that the fiber is alive (see [`BlockedFiber`]).
    ///
    /// Returns what the registration held before, if that was replaced, to drop after
    /// unlocking.
    #[must_use = "a displaced registration is dropped after unlocking"]
    pub(super) unsafe fn register_fiber(
        &mut self,
        key: &mut Option<usize>,
        fiber: BlockedFiber,
    ) -> Option<Waiter> {
        if let Some(k) = *key
            && let Some(Some(Waiter::Fiber(current))) = self.slot(k)
            && *current == fiber
        {
            return None;
        }
        self.put(key, Waiter::Fiber(fiber))
    }

    /// The slot under key `k`, if it is in use.
    fn slot(&self, k: usize) -> Option<&Option<Waiter>> {
        if k == FIRST {
            self.first.as_ref()
        } else {
            self.slots.get(k)
        }
    }

    /// Takes the slot under key `k` out of the queue (frees it), if it is in use.
    fn take_slot(&mut self, k: usize) -> Option<Option<Waiter>> {
        if k == FIRST {
            self.first.take()
        } else {
            self.slots.try_remove(k)
        }
    }

    /// Counts one waiter less as waiting (notified or removed).
    fn one_less_waiting(&mut self) {
        self.waiting -= 1;
        if self.waiting == 0 {
            // Only removed keys remain: drop them before they pile up.
            self.order.clear();
        }
    }

    /// Stores a registration under `key`: in place if the waiter is registered, queued as
    /// a new arrival if it was notified, under a new key if it has none. Returns the
    /// registration it replaced, to drop after unlocking.
    fn put(&mut self, key: &mut Option<usize>, wake: Waiter) -> Option<Waiter> {
        match *key {
            Some(FIRST) => match &mut self.first {
                Some(Some(current)) => return Some(std::mem::replace(current, wake)),
                Some(slot @ None) if self.waiting == 0 => {
                    *slot = Some(wake);
                    self.waiting += 1;
                    return None;
                }
                // Others wait: queue behind them, in the slab.
                Some(None) => self.first = None,
                None => {}
            },
            Some(k) => match self.slots.get_mut(k) {
                Some(Some(current)) => return Some(std::mem::replace(current, wake)),
                Some(slot @ None) => {
                    *slot = Some(wake);
                    self.order.push_back(k);
                    self.waiting += 1;
                    return None;
                }
                None => {}
            },
            None => {}
        }
        self.waiting += 1;
        if self.first.is_none() && self.waiting == 1 {
            self.first = Some(Some(wake));
            *key = Some(FIRST);
            return None;
        }
        let k = self.slots.insert(Some(wake));
        self.order.push_back(k);
        *key = Some(k);
        None
    }

    /// Takes the notification of a waiter that `key` names, if it was notified (the
    /// waiter then is no longer registered) or is unknown (removed by a `remove` of its
    /// own). Returns `false` if it still waits.
    pub(super) fn take_notification(&mut self, key: &mut Option<usize>) -> bool {
        let Some(k) = *key else {
            return false;
        };
        match self.slot(k) {
            Some(Some(_)) => false,
            Some(None) => {
                self.take_slot(k);
                *key = None;
                true
            }
            None => {
                *key = None;
                true
            }
        }
    }

    /// Removes a waiter: says whether it had been notified, and hands back a registration
    /// still in place, to drop after unlocking.
    pub(super) fn remove(&mut self, key: &mut Option<usize>) -> Removed {
        let Some(k) = key.take() else {
            return Removed::Absent;
        };
        match self.take_slot(k) {
            Some(Some(wake)) => {
                self.one_less_waiting();
                Removed::Waiting {
                    _registration: wake,
                }
            }
            Some(None) => Removed::Notified,
            None => Removed::Absent,
        }
    }

    /// Marks the oldest waiter notified and returns its wake, to do after unlocking. A
    /// fiber's state changes here, under the lock (see `register_fiber`).
    // The check inline (a channel's receive notifies its senders, usually nobody), the
    // rest out of line.
    #[inline]
    pub(super) fn notify_one(&mut self) -> Option<PendingWake> {
        if self.waiting == 0 {
            return None;
        }
        self.notify_oldest()
    }

    /// `notify_one` with somebody waiting.
    #[inline(never)]
    fn notify_oldest(&mut self) -> Option<PendingWake> {
        // A waiter in the inline slot is the oldest.
        if let Some(slot) = &mut self.first
            && let Some(wake) = slot.take()
        {
            self.one_less_waiting();
            return Self::wakeup(wake);
        }
        while let Some(k) = self.order.pop_front() {
            if let Some(slot) = self.slots.get_mut(k)
                && let Some(wake) = slot.take()
            {
                self.one_less_waiting();
                return Self::wakeup(wake);
            }
        }
        None
    }

    /// Marks every waiter notified and returns their wakes, to do after unlocking.
    pub(super) fn notify_all(&mut self) -> Vec<PendingWake> {
        if self.waiting == 0 {
            return Vec::new();
        }
        let Waiters {
            first,
            slots,
            order,
            ..
        } = self;
        let first = first.as_mut().and_then(Option::take);
        let wakeups: Vec<PendingWake> = first
            .into_iter()
            .chain(
                order
                    .drain(..)
                    .filter_map(|k| slots.get_mut(k).and_then(Option::take)),
            )
            .filter_map(Self::wakeup)
            .collect();
        self.waiting = 0;
        wakeups
    }

    /// The wake of a registration just taken. A fiber's state changes now, under the
    /// lock, and so does its queueing if it lives on this thread's worker: only a message
    /// to another thread is left for after unlocking.
    fn wakeup(wake: Waiter) -> Option<PendingWake> {
        match wake {
            Waiter::Waker(waker) => Some(PendingWake::Waker(waker)),
            // SAFETY: we hold the lock (`&mut self` in our callers) under which this
            // registration was found and taken, so the fiber, which removes its key under
            // this lock before leaving its call (`register_fiber`), has not left.
            Waiter::Fiber(fiber) => unsafe { fiber.wake() }.map(PendingWake::Remote),
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
    pub(super) inner: Mutex<Waiters>,
    /// `inner.waiting`, readable without the lock; written only under it.
    pub(super) waiting: AtomicUsize,
}

impl WaitQueue {
    const_fn! {
        pub(super) fn new() -> WaitQueue {
            WaitQueue {
                inner: Mutex::new(Waiters::new()),
                waiting: AtomicUsize::new(0),
            }
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
        // Our clone of `waker`, made with the lock released when the registration needs one.
        let mut clone = None;
        loop {
            let mut waiters = lock(&self.inner);
            if waiters.take_notification(key) {
                return true;
            }
            let new = key.is_none();
            match waiters.register(key, waker, &mut clone) {
                Registration::NeedsWaker => {
                    drop(waiters);
                    clone = Some(waker.clone());
                }
                Registration::Done(displaced) => {
                    if new {
                        self.publish(&waiters);
                    }
                    drop(waiters);
                    if new {
                        // Pairs with the fence in `has_waiters`: the caller's re-check of
                        // its condition comes after this registration is visible.
                        fence(Ordering::SeqCst);
                    }
                    drop(displaced);
                    return false;
                }
            }
        }
    }

    /// Removes a waiter. One that gives up (`pass_on`) passes on a notification it had
    /// not consumed; one whose condition held has consumed it.
    pub(super) fn remove(&self, key: &mut Option<usize>, pass_on: bool) {
        if key.is_none() {
            return;
        }
        let (removed, wakeup) = {
            let mut waiters = lock(&self.inner);
            let removed = waiters.remove(key);
            let wakeup = if pass_on && removed.was_notified() {
                waiters.notify_one()
            } else {
                None
            };
            self.publish(&waiters);
            (removed, wakeup)
        };
        if let Some(wakeup) = wakeup {
            wakeup.wake();
        }
        drop(removed);
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
        wake_all(wakers);
    }
}

/// Does every wake of `wakeups`, with no lock held, even when a user waker's `wake`
/// panics: the others still get theirs. Then re-raises the first panic for the notifier
/// to see, unless the thread is unwinding already (a notifier's destructor run by a
/// panic), where a second panic would abort the process: then the panic hook's report of
/// it is all that remains.
pub(super) fn wake_all(wakeups: Vec<PendingWake>) {
    let mut first_panic = None;
    for wakeup in wakeups {
        if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| wakeup.wake())) {
            match first_panic {
                None => first_panic = Some(payload),
                Some(_) => drop_quietly(payload),
            }
        }
    }
    if let Some(payload) = first_panic {
        if std::thread::panicking() {
            drop_quietly(payload);
        } else {
            panic::resume_unwind(payload);
        }
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Registration, Waiters};
    use crate::task::PendingWake;
    use std::sync::Arc;
    use std::task::{Wake, Waker};

    /// A waker that does nothing; each allocation is told apart by `will_wake`.
    struct Distinct;

    impl Wake for Distinct {
        fn wake(self: Arc<Self>) {}
    }

    /// Registers a waiter under `key`, with a waker of its own (told apart by its index
    /// in `registered_wakers`).
    fn register(waiters: &mut Waiters, key: &mut Option<usize>) {
        let waker = Waker::from(Arc::new(Distinct));
        let mut clone = Some(waker.clone());
        match waiters.register(key, &waker, &mut clone) {
            Registration::Done(displaced) => drop(displaced),
            Registration::NeedsWaker => panic!("a clone was given"),
        }
    }

    /// Which of `wakers` a wake is for.
    fn index_of(wake: PendingWake, wakers: &[Waker]) -> usize {
        match wake {
            PendingWake::Waker(woken) => wakers.iter().position(|w| w.will_wake(&woken)),
            PendingWake::Remote(_) => panic!("no fiber registered"),
        }
        .expect("a registered waker")
    }

    /// Which waiter `notify_one` wakes, by number.
    fn notified(waiters: &mut Waiters, wakers: &[Waker]) -> Option<usize> {
        Some(index_of(waiters.notify_one()?, wakers))
    }

    /// Wakers that will_wake the registered ones: the registration keeps the clone, so
    /// compare by what `register` stored.
    fn registered_wakers(waiters: &Waiters, keys: &[Option<usize>]) -> Vec<Waker> {
        keys.iter()
            .map(|key| match waiters.slot(key.expect("registered")) {
                Some(Some(crate::task::Waiter::Waker(w))) => w.clone(),
                _ => panic!("not waiting"),
            })
            .collect()
    }

    #[test]
    fn the_inline_waiter_is_woken_first_and_requeues_behind_later_ones() {
        let mut waiters = Waiters::new();
        let mut keys = [None, None, None];
        for key in &mut keys {
            register(&mut waiters, key);
        }
        let wakers = registered_wakers(&waiters, &keys);
        // Waiter 0 took the inline slot and is the oldest.
        assert_eq!(notified(&mut waiters, &wakers), Some(0));
        // It found its condition false and registers again, as a channel's waiter does
        // (under the lock it notified in): behind 1 and 2.
        register(&mut waiters, &mut keys[0]);
        let wakers = registered_wakers(&waiters, &keys);
        assert_eq!(notified(&mut waiters, &wakers), Some(1));
        assert_eq!(notified(&mut waiters, &wakers), Some(2));
        assert_eq!(notified(&mut waiters, &wakers), Some(0));
        assert_eq!(notified(&mut waiters, &wakers), None);
        assert_eq!(waiters.waiting, 0);
        // As a `WaitQueue`'s waiter does: consumes the notification, then registers anew.
        let mut key = keys[1];
        assert!(waiters.take_notification(&mut key));
        assert_eq!(key, None);
    }

    #[test]
    fn a_lone_waiter_notified_and_registering_again_keeps_the_inline_slot() {
        let mut waiters = Waiters::new();
        let mut key = None;
        register(&mut waiters, &mut key);
        assert_eq!(key, Some(super::FIRST));
        let wakers = registered_wakers(&waiters, &[key]);
        assert_eq!(notified(&mut waiters, &wakers), Some(0));
        register(&mut waiters, &mut key);
        assert_eq!(key, Some(super::FIRST));
        assert_eq!(waiters.waiting, 1);
        assert!(!waiters.take_notification(&mut key));
    }

    #[test]
    fn a_notified_waiter_that_gives_up_reports_it_and_frees_the_slot() {
        let mut waiters = Waiters::new();
        let (mut a, mut b) = (None, None);
        register(&mut waiters, &mut a);
        register(&mut waiters, &mut b);
        let wakers = registered_wakers(&waiters, &[a, b]);
        assert_eq!(notified(&mut waiters, &wakers), Some(0));
        assert!(waiters.remove(&mut a).was_notified());
        assert_eq!(a, None);
        // The slot is free but 1 still waits: a newcomer queues behind it.
        let mut c = None;
        register(&mut waiters, &mut c);
        let wakers = registered_wakers(&waiters, &[b, c]);
        assert_eq!(notified(&mut waiters, &wakers), Some(0)); // b
        assert_eq!(notified(&mut waiters, &wakers), Some(1)); // c
        // Nobody waits: the next one takes the inline slot again.
        let mut d = None;
        register(&mut waiters, &mut d);
        assert_eq!(d, Some(super::FIRST));
        assert!(matches!(
            waiters.remove(&mut d),
            super::Removed::Waiting { .. }
        ));
        assert_eq!(waiters.waiting, 0);
    }

    #[test]
    fn notify_all_wakes_the_inline_waiter_and_the_others_in_order() {
        let mut waiters = Waiters::new();
        let mut keys = [None, None, None];
        for key in &mut keys {
            register(&mut waiters, key);
        }
        let wakers = registered_wakers(&waiters, &keys);
        let order: Vec<usize> = waiters
            .notify_all()
            .into_iter()
            .map(|wake| index_of(wake, &wakers))
            .collect();
        assert_eq!(order, [0, 1, 2]);
        assert_eq!(waiters.waiting, 0);
        for key in &mut keys {
            assert!(waiters.take_notification(key));
        }
    }
}
