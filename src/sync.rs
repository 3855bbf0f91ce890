//! Fiber-aware synchronisation: [`Mutex`], [`Condvar`], [`Barrier`], and multi-producer
//! multi-consumer channels ([`channel`], [`bounded`]).
//!
//! Their blocking operations park only the calling fiber (other fibers of its worker run
//! meanwhile) and block the thread when called outside fibers, so fibers and plain threads
//! can share them. Each also has an async twin (`lock_async`, `recv_async`, ...) for
//! futures code. Poisoning follows std: a `Mutex` whose guard was dropped during a panic
//! reports it to every later `lock`.
//!
//! ```
//! use std::sync::Arc;
//!
//! let counter = Arc::new(green::sync::Mutex::new(0));
//! let handles: Vec<_> = (0..10)
//!     .map(|_| {
//!         let counter = counter.clone();
//!         green::spawn(move || {
//!             for _ in 0..100 {
//!                 *counter.lock().unwrap() += 1;
//!                 green::yield_now(); // another fiber may take the lock meanwhile
//!             }
//!         })
//!     })
//!     .collect();
//! handles.into_iter().for_each(|h| h.join().unwrap());
//! assert_eq!(*counter.lock().unwrap(), 1000);
//! ```

use std::cell::UnsafeCell;
use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::ops::{Deref, DerefMut};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering, fence};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};
use std::task::{Poll, Waker};

use slab::Slab;

use crate::reactor::lock;

/// Waiters for an event, woken one or all at a time, kept under a lock of their user's
/// choosing: a [`WaitQueue`]'s own, or a channel's state lock.
///
/// A waiter that was notified but gives up (its future is dropped) passes the notification
/// on, so that dropping a future never loses a wake.
struct Waiters {
    /// Each waiter's waker, or `None` once notified.
    slots: Slab<Option<Waker>>,
    /// Keys of the waiters not yet notified, oldest first (may hold removed keys).
    order: VecDeque<usize>,
    /// How many slots hold a waker (waiters registered and not yet notified).
    waiting: usize,
}

impl Waiters {
    const fn new() -> Waiters {
        Waiters {
            slots: Slab::new(),
            order: VecDeque::new(),
            waiting: 0,
        }
    }

    /// Registers a waiter, or refreshes its waker. One that was notified is queued again
    /// (as a new arrival): its caller found its condition still false.
    fn register(&mut self, key: &mut Option<usize>, waker: &Waker) {
        if let Some(k) = *key {
            match self.slots.get_mut(k) {
                Some(Some(current)) => {
                    if !current.will_wake(waker) {
                        current.clone_from(waker);
                    }
                    return;
                }
                Some(slot @ None) => {
                    *slot = Some(waker.clone());
                    self.order.push_back(k);
                    self.waiting += 1;
                    return;
                }
                None => {}
            }
        }
        let k = self.slots.insert(Some(waker.clone()));
        self.order.push_back(k);
        self.waiting += 1;
        *key = Some(k);
    }

    /// Removes a waiter; returns whether it had been notified.
    fn remove(&mut self, key: &mut Option<usize>) -> bool {
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

    /// Marks the oldest waiter notified and returns its waker, to wake after unlocking.
    fn notify_one(&mut self) -> Option<Waker> {
        if self.waiting == 0 {
            return None;
        }
        while let Some(k) = self.order.pop_front() {
            if let Some(slot) = self.slots.get_mut(k)
                && let Some(waker) = slot.take()
            {
                self.waiting -= 1;
                if self.waiting == 0 {
                    // Only removed keys remain: drop them before they pile up.
                    self.order.clear();
                }
                return Some(waker);
            }
        }
        None
    }

    /// Marks every waiter notified and returns their wakers, to wake after unlocking.
    fn notify_all(&mut self) -> Vec<Waker> {
        if self.waiting == 0 {
            return Vec::new();
        }
        let Waiters { slots, order, .. } = self;
        let wakers: Vec<Waker> = order
            .drain(..)
            .filter_map(|k| slots.get_mut(k).and_then(Option::take))
            .collect();
        self.waiting = 0;
        wakers
    }
}

/// [`Waiters`] under a lock of their own, for [`Mutex`], [`Condvar`] and [`Barrier`].
///
/// `waiting` mirrors the count of waiters not yet notified, so that a notification with
/// nobody to wake costs one fence and one load instead of a lock. A waiter registers
/// before it re-checks its condition, and a notifier changes the condition before it reads
/// the count; a `SeqCst` fence on each side (Dekker's pattern) ensures that either the
/// waiter sees the change or the notifier sees the waiter.
struct WaitQueue {
    /// The waiters, in arrival order.
    inner: std::sync::Mutex<Waiters>,
    /// `inner.waiting`, readable without the lock; written only under it.
    waiting: AtomicUsize,
}

impl WaitQueue {
    const fn new() -> WaitQueue {
        WaitQueue {
            inner: std::sync::Mutex::new(Waiters::new()),
            waiting: AtomicUsize::new(0),
        }
    }

    /// Publishes the count of waiting waiters; called with the lock held.
    fn publish(&self, waiters: &Waiters) {
        self.waiting.store(waiters.waiting, Ordering::Relaxed);
    }

    /// Whether a waiter may need a notification. Called after the notifier changed the
    /// condition that waiters check.
    fn has_waiters(&self) -> bool {
        // Pairs with the fence in `poll_notified` after registering.
        fence(Ordering::SeqCst);
        self.waiting.load(Ordering::Relaxed) != 0
    }

    /// Registers (or refreshes) a waiter. Returns `true` if it was notified since it
    /// registered, consuming the notification (and no longer registered).
    fn poll_notified(&self, key: &mut Option<usize>, waker: &Waker) -> bool {
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
    fn remove(&self, key: &mut Option<usize>, pass_on: bool) {
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
    fn notify_one(&self) {
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
    fn notify_all(&self) {
        if !self.has_waiters() {
            return;
        }
        let wakers = {
            let mut waiters = lock(&self.inner);
            let wakers = waiters.notify_all();
            self.publish(&waiters);
            wakers
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

/// A future that waits on a [`WaitQueue`] until `ready` says so, re-checking after each
/// notification and once right after registering (so a notification between the check
/// and the registration is not lost).
async fn wait_until<R>(queue: &WaitQueue, mut ready: impl FnMut() -> Option<R>) -> R {
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
struct RemoveOnDrop<'a> {
    queue: &'a WaitQueue,
    key: &'a mut Option<usize>,
}

impl Drop for RemoveOnDrop<'_> {
    fn drop(&mut self) {
        self.queue.remove(self.key, true);
    }
}

// ---------------------------------------------------------------------------------------
// Mutex

/// A mutual-exclusion lock whose `lock` parks the fiber (or blocks the thread) while
/// another holds it.
pub struct Mutex<T: ?Sized> {
    /// Whether a guard exists.
    locked: AtomicBool,
    /// Set when a guard was dropped during a panic.
    poisoned: AtomicBool,
    /// Fibers and threads waiting for the lock.
    waiters: WaitQueue,
    /// The data; accessed only through a guard.
    data: UnsafeCell<T>,
}

// SAFETY: the lock gives one guard at a time exclusive access to `data`, as std's Mutex.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above: sharing the Mutex shares T only through exclusive guards.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Exclusive access to a [`Mutex`]'s data; unlocks when dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    /// The locked mutex.
    mutex: &'a Mutex<T>,
    /// Whether the thread was panicking when the guard was made (std's poison rule).
    panicking: bool,
}

// SAFETY: a guard gives `&T` to whoever shares it, as std's MutexGuard.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    /// A new, unlocked mutex.
    pub const fn new(value: T) -> Mutex<T> {
        Mutex {
            locked: AtomicBool::new(false),
            poisoned: AtomicBool::new(false),
            waiters: WaitQueue::new(),
            data: UnsafeCell::new(value),
        }
    }

    /// The data, consuming the mutex.
    ///
    /// # Errors
    ///
    /// A [`PoisonError`] with the data if the mutex is poisoned.
    pub fn into_inner(self) -> LockResult<T> {
        let poisoned = self.poisoned.load(Ordering::Acquire);
        let data = self.data.into_inner();
        if poisoned {
            Err(PoisonError::new(data))
        } else {
            Ok(data)
        }
    }
}

impl<T: ?Sized> Mutex<T> {
    fn try_acquire(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    fn guard(&self) -> LockResult<MutexGuard<'_, T>> {
        let guard = MutexGuard {
            mutex: self,
            panicking: std::thread::panicking(),
        };
        if self.poisoned.load(Ordering::Acquire) {
            Err(PoisonError::new(guard))
        } else {
            Ok(guard)
        }
    }

    /// Locks the mutex, parking the fiber (or blocking the thread) until it is free.
    ///
    /// # Errors
    ///
    /// A [`PoisonError`] holding the guard if a holder panicked.
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        if self.try_acquire() {
            return self.guard();
        }
        crate::await_blocking(self.lock_async())
    }

    /// The async twin of [`lock`](Mutex::lock).
    ///
    /// # Errors
    ///
    /// As [`lock`](Mutex::lock).
    pub async fn lock_async(&self) -> LockResult<MutexGuard<'_, T>> {
        wait_until(&self.waiters, || self.try_acquire().then_some(())).await;
        self.guard()
    }

    /// Locks the mutex if it is free.
    ///
    /// # Errors
    ///
    /// [`TryLockError::WouldBlock`] if it is held; [`TryLockError::Poisoned`] if poisoned.
    pub fn try_lock(&self) -> TryLockResult<MutexGuard<'_, T>> {
        if !self.try_acquire() {
            return Err(TryLockError::WouldBlock);
        }
        Ok(self.guard()?)
    }

    /// Whether a holder panicked.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.load(Ordering::Acquire)
    }

    /// Clears the poison flag.
    pub fn clear_poison(&self) {
        self.poisoned.store(false, Ordering::Release);
    }

    /// The data, through a unique borrow (no locking needed).
    ///
    /// # Errors
    ///
    /// A [`PoisonError`] with the reference if poisoned.
    pub fn get_mut(&mut self) -> LockResult<&mut T> {
        let poisoned = self.is_poisoned();
        let data = self.data.get_mut();
        if poisoned {
            Err(PoisonError::new(data))
        } else {
            Ok(data)
        }
    }

    /// Unlocks: the guard is gone. Wakes one waiter.
    fn unlock(&self) {
        self.locked.store(false, Ordering::Release);
        self.waiters.notify_one();
    }
}

impl<T: Default> Default for Mutex<T> {
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Mutex");
        match self.try_lock() {
            Ok(guard) => d.field("data", &&*guard),
            Err(TryLockError::Poisoned(guard)) => d.field("data", &&*guard.into_inner()),
            Err(TryLockError::WouldBlock) => d.field("data", &format_args!("<locked>")),
        };
        d.field("poisoned", &self.is_poisoned())
            .finish_non_exhaustive()
    }
}

impl<T: ?Sized> Deref for MutexGuard<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        // SAFETY: the guard holds the lock: no other access to the data exists.
        unsafe { &*self.mutex.data.get() }
    }
}

impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        // SAFETY: the guard holds the lock: no other access to the data exists.
        unsafe { &mut *self.mutex.data.get() }
    }
}

impl<T: ?Sized> Drop for MutexGuard<'_, T> {
    fn drop(&mut self) {
        if !self.panicking && std::thread::panicking() {
            self.mutex.poisoned.store(true, Ordering::Release);
        }
        self.mutex.unlock();
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for MutexGuard<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&**self, f)
    }
}

// ---------------------------------------------------------------------------------------
// Condvar

/// A condition variable for [`Mutex`]: `wait` parks the fiber (or blocks the thread) until
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
    waiters: WaitQueue,
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
    /// A [`PoisonError`] with the guard if the mutex is poisoned on relocking.
    pub fn wait<'a, T: ?Sized>(&self, guard: MutexGuard<'a, T>) -> LockResult<MutexGuard<'a, T>> {
        crate::await_blocking(self.wait_async(guard))
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

// ---------------------------------------------------------------------------------------
// Barrier

/// Makes a number of fibers or threads wait until all of them have arrived.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// let barrier = Arc::new(green::sync::Barrier::new(3));
/// let handles: Vec<_> = (0..3)
///     .map(|_| {
///         let barrier = barrier.clone();
///         green::spawn(move || barrier.wait().is_leader())
///     })
///     .collect();
/// let leaders = handles.into_iter().map(|h| h.join().unwrap()).filter(|&leader| leader).count();
/// assert_eq!(leaders, 1);
/// ```
pub struct Barrier {
    /// Arrivals in the current round, and the round number.
    state: std::sync::Mutex<(usize, u64)>,
    /// Parties per round.
    parties: usize,
    /// Waiters of the current round.
    waiters: WaitQueue,
}

/// Returned by [`Barrier::wait`]: one waiter per round is the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// Whether this waiter was the last to arrive (exactly one per round is).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// A barrier for `parties` waiters per round (0 behaves like 1: nobody waits).
    pub fn new(parties: usize) -> Barrier {
        Barrier {
            state: std::sync::Mutex::new((0, 0)),
            parties,
            waiters: WaitQueue::new(),
        }
    }

    /// Waits until `parties` waiters have called `wait` in this round.
    pub fn wait(&self) -> BarrierWaitResult {
        crate::await_blocking(self.wait_async())
    }

    /// The async twin of [`wait`](Barrier::wait).
    pub async fn wait_async(&self) -> BarrierWaitResult {
        let round = {
            let mut state = lock(&self.state);
            state.0 += 1;
            if state.0 >= self.parties {
                *state = (0, state.1.wrapping_add(1));
                drop(state);
                self.waiters.notify_all();
                return BarrierWaitResult(true);
            }
            state.1
        };
        wait_until(&self.waiters, || {
            (lock(&self.state).1 != round).then_some(())
        })
        .await;
        BarrierWaitResult(false)
    }
}

// ---------------------------------------------------------------------------------------
// Channels

/// A channel's shared state.
///
/// One lock guards the values and both sides' waiters, so that an operation checks the
/// queue, registers or wakes a waiter, in one critical section: no notification can fall
/// between a check and a registration, and one with nobody waiting costs nothing.
struct Channel<T> {
    /// Values, waiters, and who is still connected.
    state: std::sync::Mutex<ChannelState<T>>,
    /// Most values queued; `usize::MAX` for unbounded.
    capacity: usize,
}

/// What a channel's lock guards.
struct ChannelState<T> {
    /// Queued values.
    queue: VecDeque<T>,
    /// Live `Sender`s.
    sender_count: usize,
    /// Live `Receiver`s.
    receiver_count: usize,
    /// Receivers waiting for a value.
    receivers: Waiters,
    /// Senders waiting for room.
    senders: Waiters,
}

/// Which side of a channel a waiter waits on.
#[derive(Clone, Copy)]
enum Side {
    /// A receiver, waiting for a value.
    Receiver,
    /// A sender, waiting for room.
    Sender,
}

impl<T> ChannelState<T> {
    fn waiters(&mut self, side: Side) -> &mut Waiters {
        match side {
            Side::Receiver => &mut self.receivers,
            Side::Sender => &mut self.senders,
        }
    }
}

impl<T> Channel<T> {
    /// Waits on `side` until `attempt` (run under the channel's lock) gives a result and,
    /// maybe, a waker to wake once the lock is released.
    async fn wait<R>(
        &self,
        side: Side,
        mut attempt: impl FnMut(&mut ChannelState<T>) -> Option<(R, Option<Waker>)>,
    ) -> R {
        let mut waiter = ChannelWaiter {
            channel: self,
            side,
            key: None,
        };
        poll_fn(|cx| {
            let mut state = lock(&self.state);
            if let Some((value, waker)) = attempt(&mut state) {
                // Done: a notification received meanwhile is consumed.
                state.waiters(side).remove(&mut waiter.key);
                drop(state);
                if let Some(waker) = waker {
                    waker.wake();
                }
                return Poll::Ready(value);
            }
            state.waiters(side).register(&mut waiter.key, cx.waker());
            Poll::Pending
        })
        .await
    }
}

/// A channel waiter's registration, removed when its future completes or is dropped.
struct ChannelWaiter<'a, T> {
    /// The channel.
    channel: &'a Channel<T>,
    /// The side it waits on.
    side: Side,
    /// Its key among that side's waiters, while registered.
    key: Option<usize>,
}

impl<T> Drop for ChannelWaiter<'_, T> {
    fn drop(&mut self) {
        if self.key.is_none() {
            return;
        }
        let waker = {
            let mut state = lock(&self.channel.state);
            let waiters = state.waiters(self.side);
            if waiters.remove(&mut self.key) {
                // Notified but giving up: pass the notification on.
                waiters.notify_one()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }
}

/// The sending side of a channel; clone it for more producers.
pub struct Sender<T> {
    /// The channel.
    channel: std::sync::Arc<Channel<T>>,
}

/// The receiving side of a channel; clone it for more consumers (each value goes to one).
pub struct Receiver<T> {
    /// The channel.
    channel: std::sync::Arc<Channel<T>>,
}

/// An unbounded multi-producer multi-consumer channel.
///
/// # Examples
///
/// ```
/// let (sender, receiver) = green::sync::channel();
/// let producer = green::spawn(move || (0..5).for_each(|i| sender.send(i).unwrap()));
/// let received: Vec<i32> = receiver.iter().collect(); // ends when every sender is dropped
/// producer.join().unwrap();
/// assert_eq!(received, [0, 1, 2, 3, 4]);
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    make_channel(usize::MAX)
}

/// A multi-producer multi-consumer channel holding at most `capacity` values: `send` waits
/// while it is full.
///
/// # Panics
///
/// Panics if `capacity` is 0 (rendezvous channels are not supported).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        capacity > 0,
        "green::sync::bounded: the capacity must be at least 1"
    );
    make_channel(capacity)
}

fn make_channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let channel = std::sync::Arc::new(Channel {
        state: std::sync::Mutex::new(ChannelState {
            queue: VecDeque::new(),
            sender_count: 1,
            receiver_count: 1,
            receivers: Waiters::new(),
            senders: Waiters::new(),
        }),
        capacity,
    });
    (
        Sender {
            channel: channel.clone(),
        },
        Receiver { channel },
    )
}

/// The value could not be sent: every receiver is gone.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

/// Nothing can be received: the channel is empty and every sender is gone.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct RecvError;

/// Why `try_recv` gave nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryRecvError {
    /// The channel is empty.
    Empty,
    /// The channel is empty and every sender is gone.
    Disconnected,
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receivers are all gone")
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty channel whose senders are all gone")
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("the channel is empty"),
            TryRecvError::Disconnected => RecvError.fmt(f),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}
impl std::error::Error for RecvError {}
impl std::error::Error for TryRecvError {}

impl<T> Sender<T> {
    /// Sends a value, waiting (parking the fiber or blocking the thread) while a bounded
    /// channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if every receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        crate::await_blocking(self.send_async(value))
    }

    /// The async twin of [`send`](Sender::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Sender::send).
    pub async fn send_async(&self, value: T) -> Result<(), SendError<T>> {
        let channel = &*self.channel;
        let mut value = Some(value);
        let sent = channel
            .wait(Side::Sender, |state| {
                if state.receiver_count == 0 {
                    return Some((false, None));
                }
                if state.queue.len() < channel.capacity {
                    state.queue.push_back(value.take().expect("sent once"));
                    return Some((true, state.receivers.notify_one()));
                }
                None
            })
            .await;
        if sent {
            Ok(())
        } else {
            Err(SendError(value.take().expect("not sent")))
        }
    }
}

impl<T> Receiver<T> {
    /// Receives a value, waiting (parking the fiber or blocking the thread) while the
    /// channel is empty.
    ///
    /// # Errors
    ///
    /// [`RecvError`] once the channel is empty and every sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        crate::await_blocking(self.recv_async())
    }

    /// The async twin of [`recv`](Receiver::recv).
    ///
    /// # Errors
    ///
    /// As [`recv`](Receiver::recv).
    pub async fn recv_async(&self) -> Result<T, RecvError> {
        self.channel
            .wait(Side::Receiver, |state| match Self::take(state) {
                Ok((value, waker)) => Some((Ok(value), waker)),
                Err(TryRecvError::Disconnected) => Some((Err(RecvError), None)),
                Err(TryRecvError::Empty) => None,
            })
            .await
    }

    /// Takes a value under the channel's lock, with the waker of a sender to wake for the
    /// room it made.
    fn take(state: &mut ChannelState<T>) -> Result<(T, Option<Waker>), TryRecvError> {
        match state.queue.pop_front() {
            Some(value) => Ok((value, state.senders.notify_one())),
            None if state.sender_count == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Receives a value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] or, with every sender gone, [`TryRecvError::Disconnected`].
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let taken = Self::take(&mut lock(&self.channel.state));
        let (value, waker) = taken?;
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(value)
    }

    /// An iterator that receives until the channel is empty and every sender is gone.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        lock(&self.channel.state).sender_count += 1;
        Sender {
            channel: self.channel.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        lock(&self.channel.state).receiver_count += 1;
        Receiver {
            channel: self.channel.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let wakers = {
            let mut state = lock(&self.channel.state);
            state.sender_count -= 1;
            if state.sender_count == 0 {
                state.receivers.notify_all()
            } else {
                Vec::new()
            }
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let wakers = {
            let mut state = lock(&self.channel.state);
            state.receiver_count -= 1;
            if state.receiver_count == 0 {
                state.senders.notify_all()
            } else {
                Vec::new()
            }
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
