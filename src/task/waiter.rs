//! Whom a wait list wakes: a future's [`Waker`], or a fiber blocked in one of green's own
//! calls, named without a reference count ([`BlockedFiber`]); and the wakes a notifier
//! does after releasing its lock ([`PendingWake`], [`RemoteWake`]).

use std::sync::Arc;
use std::task::Waker;

use super::{Header, Schedule};

/// A fiber blocked in one of this crate's own blocking calls, named without a reference
/// count: registering it with a wait list costs no atomic increment, and waking it no
/// decrement, where a cloned [`Waker`] costs one of each.
///
/// The handle is valid only while the fiber's registration lasts. The fiber's task lives
/// at least as long as any frame of the fiber (its closure owns the task), and the
/// blocking call does not return or unwind until whoever took its registration is done
/// with it:
///
/// * in a wait list of `green::sync`, the call removes its registration under the list's
///   lock, so a notifier that finds it there, holding the lock, wakes the fiber before
///   releasing the lock;
/// * in a task's join cell, the joiner takes its registration back, or, if the task
///   completed meanwhile, waits until the completer has woken it and said so
///   (`JoinCell::complete`).
///
/// (An `await_blocking` future cannot do this: safe code may forget a future that
/// registered, so its registration holds a `Waker`.)
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct BlockedFiber(*const Header);

impl BlockedFiber {
    /// The fiber whose task header is `header`, which must be running it (see
    /// `worker::Current::blocked`).
    pub(crate) fn new(header: *const Header) -> BlockedFiber {
        BlockedFiber(header)
    }
}

// SAFETY: the pointer is only dereferenced by `wake`, whose contract (the fiber's
// registration is still in place, under its lock) keeps the header alive on any thread;
// `Header::wake` itself is thread-safe.
unsafe impl Send for BlockedFiber {}

impl BlockedFiber {
    /// Wakes the fiber, as its waker would, except that a wake for a worker on another
    /// thread comes back as a [`RemoteWake`], to send after the caller has released its
    /// lock (the send may make a system call; see `Header::wake_deferred`).
    ///
    /// # Safety
    ///
    /// The caller took the fiber's registration and the fiber cannot have left its
    /// blocking call yet (see the type docs): for a wait list, the caller still holds the
    /// lock under which it found the registration.
    #[must_use = "a RemoteWake must be sent, or the fiber may never run"]
    pub(crate) unsafe fn wake(self) -> Option<RemoteWake> {
        // SAFETY: by the contract, the fiber is inside its blocking call, so its task,
        // and the header at the front of it, are alive.
        unsafe { &*self.0 }.wake_deferred()
    }
}

/// The rest of a fiber's wake: a message to its worker on another thread. It holds the
/// worker, not the fiber, so it may be sent after the fiber's notifier released the lock
/// that kept the fiber alive (a wake for a fiber that has gone meanwhile does nothing).
#[must_use = "a RemoteWake must be sent, or the fiber may never run"]
pub(crate) struct RemoteWake {
    /// The fiber's scheduler.
    scheduler: Arc<dyn Schedule>,
    /// The fiber's (slot, generation) id.
    id: u64,
}

impl RemoteWake {
    pub(crate) fn new(scheduler: Arc<dyn Schedule>, id: u64) -> RemoteWake {
        RemoteWake { scheduler, id }
    }

    /// Queues the fiber on its worker, and wakes the worker if it sleeps.
    pub(crate) fn send(self) {
        drop(self); // see `Drop`
    }
}

impl Drop for RemoteWake {
    /// Sends the wake: also when a `RemoteWake` is dropped unsent, as when a panicking
    /// waker unwinds through a list of wakes, since its fiber, already NOTIFIED, would
    /// otherwise never be scheduled.
    fn drop(&mut self) {
        self.scheduler.schedule_remote(self.id);
    }
}

/// A wake to do once the notifier has released its lock.
#[must_use = "a PendingWake must be woken, or its waiter may never run"]
pub(crate) enum PendingWake {
    /// A future's waker.
    Waker(Waker),
    /// A fiber of a worker on another thread.
    Remote(RemoteWake),
}

impl PendingWake {
    /// Does the wake.
    pub(crate) fn wake(self) {
        match self {
            PendingWake::Waker(waker) => waker.wake(),
            PendingWake::Remote(remote) => remote.send(),
        }
    }
}

/// Whom a registration with a wait list (or a join cell) wakes.
pub(crate) enum Waiter {
    /// A future's waker, owned by the registration: any executor, any thread.
    Waker(Waker),
    /// A fiber in one of this crate's blocking calls, which takes its registration back
    /// before it returns; woken before that, as [`BlockedFiber`] says.
    Fiber(BlockedFiber),
}
