//! The concurrency primitives under green's state machines: std's, or loom's when the crate
//! is built with `--cfg loom`, as tokio's `loom` module does.
//!
//! The state machines that other threads drive take their atomics, locks and cells from
//! here: a task's park and cancel words and its join cell (`task/`), the wait queue behind
//! `green::sync` (`sync/wait_queue.rs`, `sync/mutex.rs`), and what other threads touch of a
//! worker (`worker/shared.rs`). The loom models in `tests/loom_*.rs` then run those types'
//! own methods, through `loom::model`, under every interleaving and every reordering of the
//! memory model that loom explores; nothing of the protocol is copied for them.
//!
//! ```text
//!   sync::atomic   std::sync::atomic, or loom's atomics (same methods, same Ordering)
//!   sync::Mutex    std's, or loom's; lock() ignores poison, as crate::sys::lock does
//!   cell           UnsafeCell with loom's access methods (with, with_mut): loom checks
//!                  that no two threads touch it at once without a happens-before edge
//!   hint, thread   spin_loop and yield_now, which a loom model must see in a spin
//!   const_fn!      a const fn, except under loom, whose types have no const constructors
//! ```
//!
//! Under `cfg(loom)` these types work only inside `loom::model`: a build with that cfg is
//! for the models, never for use.

#[cfg(loom)]
pub mod model;

/// Atomics and locks.
pub(crate) mod sync {
    #[cfg(loom)]
    pub(crate) use ::loom::sync::{Mutex, MutexGuard, Notify};
    #[cfg(not(loom))]
    pub(crate) use std::sync::Mutex;

    /// Atomic integers, `fence` and `Ordering`.
    pub(crate) mod atomic {
        #[cfg(loom)]
        pub(crate) use ::loom::sync::atomic::*;
        #[cfg(not(loom))]
        pub(crate) use std::sync::atomic::*;
    }
}

/// Locks `mutex`, ignoring poison (see `crate::sys::lock`).
#[cfg(not(loom))]
pub(crate) use crate::sys::lock;

/// Locks `mutex`, ignoring poison (see `crate::sys::lock`).
#[cfg(loom)]
pub(crate) fn lock<T>(mutex: &sync::Mutex<T>) -> sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// `UnsafeCell`, reached through closures that loom can watch.
pub(crate) mod cell {
    #[cfg(loom)]
    pub(crate) use ::loom::cell::UnsafeCell;

    /// std's `UnsafeCell` with loom's way in: `with` for a shared access, `with_mut` for an
    /// exclusive one. Both compile to the plain pointer.
    #[cfg(not(loom))]
    #[derive(Debug)]
    pub(crate) struct UnsafeCell<T>(std::cell::UnsafeCell<T>);

    #[cfg(not(loom))]
    impl<T> UnsafeCell<T> {
        /// A cell holding `value`.
        pub(crate) const fn new(value: T) -> UnsafeCell<T> {
            UnsafeCell(std::cell::UnsafeCell::new(value))
        }

        /// Calls `f` with a pointer for reading; the caller vouches that nobody writes meanwhile.
        #[inline(always)]
        pub(crate) fn with<R>(&self, f: impl FnOnce(*const T) -> R) -> R {
            f(self.0.get())
        }

        /// Calls `f` with a pointer for writing; the caller vouches that nobody else touches
        /// the value meanwhile.
        #[inline(always)]
        pub(crate) fn with_mut<R>(&self, f: impl FnOnce(*mut T) -> R) -> R {
            f(self.0.get())
        }
    }
}

/// `spin_loop`: under loom, a spin gives the other model threads their turn.
pub(crate) mod hint {
    #[cfg(loom)]
    pub(crate) use ::loom::hint::spin_loop;
    #[cfg(not(loom))]
    pub(crate) use std::hint::spin_loop;
}

/// `yield_now`: under loom, a switch to another model thread.
pub(crate) mod thread {
    #[cfg(loom)]
    pub(crate) use ::loom::thread::yield_now;
    #[cfg(not(loom))]
    pub(crate) use std::thread::yield_now;
}

/// Declares a `const fn`, or a plain `fn` under loom, whose atomics and locks have no
/// `const` constructors (loom registers each with the running model).
macro_rules! const_fn {
    ($(#[$attr:meta])* $vis:vis fn $($rest:tt)*) => {
        #[cfg(not(loom))]
        $(#[$attr])*
        $vis const fn $($rest)*

        #[cfg(loom)]
        $(#[$attr])*
        $vis fn $($rest)*
    };
}
pub(crate) use const_fn;
