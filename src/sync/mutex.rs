//! [`Mutex`]: a lock whose `lock` parks the fiber (or blocks the thread).

use std::cell::UnsafeCell;
use std::fmt;
use std::ops::{Deref, DerefMut};
use std::sync::{LockResult, PoisonError, TryLockError, TryLockResult};

use super::wait_queue::{WaitQueue, wait_until};
use crate::loom::const_fn;
use crate::loom::sync::atomic::{AtomicBool, Ordering};

/// A mutual-exclusion lock whose `lock` parks the fiber (or blocks the thread) while
/// another holds it.
///
/// Poisoned as std's: by a holder that unwinds with the guard, whether it panicked or was
/// cancelled ([`JoinHandle::abort`](crate::JoinHandle::abort), a runtime's shutdown) at
/// a suspension point inside its critical section, which may have left the data half
/// updated. (A `std::sync::Mutex` held by a cancelled fiber is poisoned too.)
pub struct Mutex<T: ?Sized> {
    /// Whether a guard exists.
    pub(super) locked: AtomicBool,
    /// Set when a guard was dropped during a panic.
    pub(super) poisoned: AtomicBool,
    /// Fibers and threads waiting for the lock.
    pub(super) waiters: WaitQueue,
    /// The data; accessed only through a guard.
    pub(super) data: UnsafeCell<T>,
}

// SAFETY: the lock gives one guard at a time exclusive access to `data`, as std's Mutex.
unsafe impl<T: ?Sized + Send> Send for Mutex<T> {}
// SAFETY: as above: sharing the Mutex shares T only through exclusive guards.
unsafe impl<T: ?Sized + Send> Sync for Mutex<T> {}

/// Exclusive access to a [`Mutex`]'s data; unlocks when dropped.
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    /// The locked mutex.
    pub(super) mutex: &'a Mutex<T>,
    /// Whether the fiber (or thread) was panicking when the guard was made (std's poison
    /// rule, with the panic state of the fiber: see `worker::panicking`).
    pub(super) panicking: bool,
}

// SAFETY: a guard gives `&T` to whoever shares it, as std's MutexGuard.
unsafe impl<T: ?Sized + Sync> Sync for MutexGuard<'_, T> {}

impl<T> Mutex<T> {
    const_fn! {
        /// A new, unlocked mutex.
        pub fn new(value: T) -> Mutex<T> {
            Mutex {
                locked: AtomicBool::new(false),
                poisoned: AtomicBool::new(false),
                waiters: WaitQueue::new(),
                data: UnsafeCell::new(value),
            }
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
    pub(super) fn try_acquire(&self) -> bool {
        self.locked
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
    }

    pub(super) fn guard(&self) -> LockResult<MutexGuard<'_, T>> {
        let guard = MutexGuard {
            mutex: self,
            panicking: crate::worker::panicking(),
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
    /// A [`PoisonError`] holding the guard if a holder panicked or was cancelled while it
    /// held the lock (see [`Mutex`]).
    pub fn lock(&self) -> LockResult<MutexGuard<'_, T>> {
        if self.try_acquire() {
            return self.guard();
        }
        crate::block_on::await_blocking_on(self.lock_async(), crate::task::Wait::Mutex)
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
    pub(super) fn unlock(&self) {
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
        if !self.panicking && crate::worker::panicking() {
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
