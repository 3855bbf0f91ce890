//! The words a task's fiber and its wakers share, and every transition on them as a named
//! method, so that the protocol reads in one file (as tokio's `runtime/task/state.rs`).
//!
//! # Waking without losing a wake
//!
//! A fiber that waits (`await_blocking`, a channel, a join) checks its condition and, if
//! it must wait, *parks*: [`State::transition_to_parked`] moves the park word from IDLE to
//! PARKED, and the fiber switches to its resumer (the worker loop, or a fiber that runs it
//! directly from `join`). A wake, [`State::transition_to_notified`], swaps the word to
//! NOTIFIED; only the wake that found PARKED schedules the fiber, so a fiber is queued at
//! most once. A wake that comes while the fiber still runs (between its check and the park)
//! leaves NOTIFIED behind: the park sees it and does not suspend, and the fiber checks
//! again. After every park the fiber resets the word to IDLE *before* it checks again
//! ([`State::reset_after_park`]): a wake after that reset either is seen by the check or
//! leaves NOTIFIED for the next park.
//!
//! # Cancellation
//!
//! `NOT_CANCELLED` → `CANCEL_REQUESTED` (by `JoinHandle::abort`, or at shutdown) →
//! `CANCEL_DELIVERED` (by the fiber, as it starts to unwind). A request is made only from
//! `NOT_CANCELLED`, and the suspensions of the destructors that run while the fiber
//! unwinds are plain ones. A fiber whose code catches the unwinding and drops its payload
//! goes back to `CANCEL_REQUESTED` (`State::rearm_cancel`), and unwinds again at its next
//! suspension point, before it parks (`Current::check_cancel`): nothing wakes it for
//! that.

use crate::loom::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, Ordering};

use super::wait::Wait;

/// The fiber runs, or is queued to run, and nobody has woken it since it last checked.
const IDLE: u8 = 0;
/// The fiber is suspended until a wake.
const PARKED: u8 = 1;
/// A wake arrived; the fiber will check again.
const NOTIFIED: u8 = 2;

/// Nobody asked the fiber to stop.
const NOT_CANCELLED: u8 = 0;
/// The fiber is to unwind at its next suspension point.
const CANCEL_REQUESTED: u8 = 1;
/// The fiber has started to unwind for a cancellation.
const CANCEL_DELIVERED: u8 = 2;

/// A task's shared state words.
pub(crate) struct State {
    /// `IDLE`, `PARKED` or `NOTIFIED`: see the module docs.
    park: AtomicU8,
    /// `NOT_CANCELLED`, `CANCEL_REQUESTED` or `CANCEL_DELIVERED`: see the module docs.
    cancel: AtomicU8,
    /// How many times the fiber has parked. Written only by the fiber (a load and a
    /// store): `await_blocking` compares it around a poll to learn whether a blocking call
    /// inside the poll parked, and so may have consumed the poll's own wake.
    parks: AtomicU32,
    /// Whether the fiber was unwinding (a panic in flight on its stack) when it last
    /// suspended: its own panic state, which std keeps per thread only. Written only by
    /// the fiber; see `worker::panicking`.
    unwinding: AtomicBool,
    /// What the fiber parked on last (a [`Wait`] as a byte), for fiber dumps. Written by
    /// the fiber before each park, read by its worker between turns: one thread, so std's
    /// atomic, not loom's (the models need not explore it), with relaxed accesses.
    wait: std::sync::atomic::AtomicU8,
}

impl State {
    /// A task that has not run: idle, not cancelled, never parked.
    pub(crate) fn new() -> State {
        State {
            park: AtomicU8::new(IDLE),
            cancel: AtomicU8::new(NOT_CANCELLED),
            parks: AtomicU32::new(0),
            unwinding: AtomicBool::new(false),
            wait: std::sync::atomic::AtomicU8::new(Wait::Future as u8),
        }
    }

    /// The fiber, about to suspend until a wake: IDLE → PARKED. Returns whether it must
    /// suspend; `false` if a wake came since its last reset (NOTIFIED), and it checks its
    /// condition again instead. Counts the park either way.
    ///
    /// AcqRel: the fiber's writes before the park (its registration, its scheduler) are
    /// seen by the wake that finds PARKED.
    #[inline(always)]
    pub(crate) fn transition_to_parked(&self) -> bool {
        let parks = self.parks.load(Ordering::Relaxed);
        self.parks.store(parks.wrapping_add(1), Ordering::Relaxed);
        self.park
            .compare_exchange(IDLE, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// The fiber, back from a park: forgets the notification before it checks again.
    ///
    /// A swap, not a store: the caller then checks its condition with a plain load (a
    /// join cell, a future's flag), and a store followed by a load of another location may
    /// be reordered (on x86 too: the store waits in the store buffer). The load could then
    /// miss a completion whose wake found the old NOTIFIED, and the next park would sleep
    /// for ever. The swap reads the waker's NOTIFIED (Acquire), so the completion is seen,
    /// or comes before the waker's swap, which then finds IDLE or PARKED.
    #[inline(always)]
    pub(crate) fn reset_after_park(&self) {
        self.park.swap(IDLE, Ordering::AcqRel);
    }

    /// `reset_after_park`, for a caller that checks its condition again under a lock which
    /// its notifier holds while it wakes the fiber (the channels of `green::sync`). The lock
    /// orders the reset before the notifier's swap, so the reset can be a plain store (a
    /// swap costs a lock-prefixed instruction): a notifier that takes the lock after the
    /// caller sees this store before its swap; one that held it before made its change
    /// visible to the check under the lock.
    #[inline(always)]
    pub(crate) fn reset_after_park_locked(&self) {
        self.park.store(IDLE, Ordering::Release);
    }

    /// Whether the fiber is parked: suspended until a wake, none having come since. For
    /// fiber dumps, read by the fiber's worker between turns; it orders nothing.
    pub(crate) fn is_parked(&self) -> bool {
        self.park.load(Ordering::Relaxed) == PARKED
    }

    /// A wake: leaves NOTIFIED. Returns whether the fiber was PARKED, in which case the
    /// caller, and only it, must queue the fiber to run.
    #[inline(always)]
    pub(crate) fn transition_to_notified(&self) -> bool {
        self.park.swap(NOTIFIED, Ordering::AcqRel) == PARKED
    }

    /// Asks the fiber to unwind at its next suspension point; `false` if it was asked
    /// before (the first request wins, and a delivered one is never made pending again).
    pub(crate) fn request_cancel(&self) -> bool {
        self.cancel
            .compare_exchange(
                NOT_CANCELLED,
                CANCEL_REQUESTED,
                Ordering::AcqRel,
                Ordering::Acquire,
            )
            .is_ok()
    }

    /// Whether a cancellation was requested and the fiber has not started to unwind for it.
    #[inline(always)]
    pub(crate) fn cancel_pending(&self) -> bool {
        self.cancel.load(Ordering::Acquire) == CANCEL_REQUESTED
    }

    /// A delivered cancellation is requested again: the fiber caught its unwinding and
    /// dropped the payload (see `worker::Cancelled`). Only the fiber calls this.
    pub(crate) fn rearm_cancel(&self) {
        let _ = self.cancel.compare_exchange(
            CANCEL_DELIVERED,
            CANCEL_REQUESTED,
            Ordering::Relaxed,
            Ordering::Relaxed,
        );
    }

    /// The fiber starts to unwind for its cancellation. Only the fiber calls this, after
    /// `cancel_pending`.
    pub(crate) fn cancel_delivered(&self) {
        self.cancel.store(CANCEL_DELIVERED, Ordering::Relaxed);
    }

    /// How many times the fiber has parked (see `State::parks`).
    #[inline(always)]
    pub(crate) fn parks(&self) -> u32 {
        self.parks.load(Ordering::Relaxed)
    }

    /// Whether the fiber was unwinding when it last suspended (see `State::unwinding`).
    #[inline(always)]
    pub(crate) fn unwinding(&self) -> bool {
        self.unwinding.load(Ordering::Relaxed)
    }

    /// Records whether the fiber is unwinding as it suspends. Only the fiber calls this.
    pub(crate) fn set_unwinding(&self, unwinding: bool) {
        self.unwinding.store(unwinding, Ordering::Relaxed);
    }

    /// Records what the fiber is about to park on. Only the fiber calls this: one store of
    /// a byte, usually a constant.
    #[inline(always)]
    pub(crate) fn set_wait(&self, wait: Wait) {
        self.wait
            .store(wait as u8, std::sync::atomic::Ordering::Relaxed);
    }

    /// What the fiber parked on last (see `State::wait`).
    pub(crate) fn wait(&self) -> Wait {
        Wait::from_byte(self.wait.load(std::sync::atomic::Ordering::Relaxed))
    }
}
