//! Time: [`sleep`] and [`sleep_until`] for fibers, [`Timer`] for async code.
//!
//! # Precision
//!
//! A timer never fires early: it completes only once `Instant::now()` has reached its
//! deadline. How late it fires depends on the machine; the reactor waits with
//! sub-millisecond precision (`epoll_pwait2` or a timerfd), and the benchmarks report the
//! lateness measured here.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::reactor::{Reactor, TimerId};
use crate::task::Wait;
use crate::worker;

/// Puts the calling fiber to sleep for at least `duration`; other fibers run meanwhile.
/// Outside a fiber it sleeps the thread.
///
/// # Examples
///
/// ```
/// use std::time::{Duration, Instant};
///
/// let start = Instant::now();
/// green::run(|| green::sleep(Duration::from_millis(10)));
/// assert!(start.elapsed() >= Duration::from_millis(10));
/// ```
pub fn sleep(duration: Duration) {
    match Instant::now().checked_add(duration) {
        Some(deadline) => sleep_until(deadline),
        None => sleep_forever(),
    }
}

/// Puts the calling fiber to sleep until `deadline`; other fibers run meanwhile. Outside a
/// fiber it sleeps the thread.
pub fn sleep_until(deadline: Instant) {
    if worker::in_fiber() {
        crate::block_on::await_blocking_on(Timer::at(deadline), Wait::Sleep);
        return;
    }
    // `thread::sleep` may wake early on some systems: loop until the deadline has passed.
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep(deadline - now);
    }
}

/// Sleeps for a duration too long to represent as an `Instant`.
fn sleep_forever() {
    if worker::in_fiber() {
        crate::block_on::await_blocking_on(Timer::never(), Wait::Sleep);
        return;
    }
    loop {
        std::thread::park();
    }
}

/// A future that completes at a deadline, with the deadline as its output.
///
/// The async twin of [`sleep`]: it works in any executor. Polled in a fiber, it is driven
/// by the reactor of the fiber's worker; polled anywhere else (a plain thread's
/// [`block_on`](crate::block_on), another executor), by green's plain-thread reactor,
/// whose own thread runs no fibers, so it fires on time even while every worker computes.
///
/// # Examples
///
/// ```
/// use std::time::Duration;
/// use green::time::Timer;
///
/// let deadline = green::block_on(Timer::after(Duration::from_millis(5)));
/// assert!(std::time::Instant::now() >= deadline);
/// ```
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Timer {
    /// When it fires; `None` never.
    deadline: Option<Instant>,
    /// While registered: the reactor, the timer's id and the waker it holds.
    registration: Option<Registered>,
}

/// A [`Timer`]'s registration with a reactor.
struct Registered {
    /// The reactor that fires it.
    reactor: Arc<Reactor>,
    /// Its id there.
    id: TimerId,
    /// The waker it holds.
    waker: Waker,
    /// When the reactor fires it: the deadline it was registered for, which is the
    /// timer's, or earlier after [`Timer::extend`].
    armed: Instant,
}

impl Timer {
    /// A timer that fires after `duration` (never, if the deadline cannot be represented).
    pub fn after(duration: Duration) -> Timer {
        Timer {
            deadline: Instant::now().checked_add(duration),
            registration: None,
        }
    }

    /// A timer that fires at `deadline`.
    pub fn at(deadline: Instant) -> Timer {
        Timer {
            deadline: Some(deadline),
            registration: None,
        }
    }

    /// A timer that never fires.
    pub fn never() -> Timer {
        Timer {
            deadline: None,
            registration: None,
        }
    }

    /// The deadline, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline
    }

    /// Removes the registration, if any.
    fn deregister(&mut self) {
        if let Some(registered) = self.registration.take() {
            registered.reactor.remove_timer(registered.id);
        }
    }

    /// Moves the deadline to `deadline`. A registration made for an earlier deadline is
    /// kept: it fires early, and the poll that follows registers again for the new one
    /// (one early wake, instead of a registration per move). For an I/O timeout that
    /// starts afresh at each wait, a connection's timer is then registered about once
    /// per timeout, not once per wait. A later registration is removed.
    pub(crate) fn extend(&mut self, deadline: Instant) {
        if self
            .registration
            .as_ref()
            .is_some_and(|registered| registered.armed > deadline)
        {
            self.deregister();
        }
        self.deadline = Some(deadline);
    }
}

impl Future for Timer {
    type Output = Instant;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Instant> {
        let this = self.get_mut();
        let Some(deadline) = this.deadline else {
            return Poll::Pending;
        };
        let now = Instant::now();
        if now >= deadline {
            this.deregister();
            return Poll::Ready(deadline);
        }
        match &this.registration {
            // Registered with a reactor that is still driven, for this task, and not yet
            // fired (one armed early by `extend` fires before the deadline): nothing to do.
            Some(registered)
                if registered.waker.will_wake(cx.waker())
                    && !registered.reactor.is_closed()
                    && now < registered.armed => {}
            _ => {
                this.deregister();
                let (reactor, remote) = crate::executor::current_reactor();
                let id = reactor.insert_timer(deadline, cx.waker(), remote);
                this.registration = Some(Registered {
                    reactor,
                    id,
                    waker: cx.waker().clone(),
                    armed: deadline,
                });
            }
        }
        Poll::Pending
    }
}

impl Drop for Timer {
    fn drop(&mut self) {
        self.deregister();
    }
}

impl fmt::Debug for Timer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timer")
            .field("deadline", &self.deadline)
            .finish()
    }
}
