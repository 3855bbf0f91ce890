//! The reactor: one `polling::Poller` per worker, and one for waits made outside fibers,
//! with I/O sources and timers.
//!
//! * **Sources.** Any file descriptor registers with [`Reactor::insert_source`]. Each source
//!   has two [`Direction`]s (read, write), each with waiters. The descriptor is added once,
//!   for both directions, in edge-triggered mode and never re-armed: one `epoll_ctl` per
//!   descriptor instead of one per wait. Each direction counts its events in a `tick`.
//!   An edge that comes between a failed operation and the waiter's registration would be
//!   lost, so callers read the tick *before* trying the operation and pass it when they
//!   register: if it moved meanwhile, the registration reports ready at once. Waits with
//!   no preceding operation (`Async::readable`, `poll_readable`) pass no tick and check
//!   the descriptor's current readiness with a zero-timeout `poll(2)` instead
//!   ([`Source::ready_now`]). Adding a descriptor that is already ready queues an event,
//!   so readiness from before the registration is not lost either.
//! * **Timers.** A queue of deadlines added in order (one delay for all, as I/O timeouts
//!   are) and a heap for the others, over a slab of wakers; a removal is O(1) amortized
//!   (see `timers`). [`Reactor::react`] fires the due ones and waits no longer than the
//!   next, with `epoll_pwait2`'s nanosecond timeout (a timeout
//!   rounded up to the millisecond where the kernel lacks it).
//! * **Waiting.** `polling` makes the epoll descriptor and deletes descriptors from it;
//!   green adds them itself, asking also for `EPOLLRDHUP` (`sys::epoll::add_source`). The
//!   wait is one `epoll_pwait2` on the poller's epoll descriptor, interrupted by an
//!   edge-triggered eventfd of green's own (see `sys::epoll`: `polling`'s wait makes five
//!   system calls).
//! * **Drained reads.** A TCP read that fills less than its buffer emptied the receive
//!   queue: until the next read event, another read would fail with `WouldBlock`, so a
//!   fiber's next read waits for that event first and saves the system call
//!   (`Async::read_drained_with`, [`Source::quiet_since`]). A hang-up, an error or urgent
//!   data turns that off for the source for good: after them a short read proves nothing.
//! * **Waking.** Wakers are collected under the locks and called after they are released,
//!   each inside `catch_unwind` ([`wake_all`]): a user's waker that panics in `wake` is
//!   reported on stderr and the worker goes on, rather than unwinding out of its loop.
//!   No user code runs under the reactor's locks: a waker is cloned before a lock is
//!   taken, and one that is replaced or removed is dropped after it is released, so that
//!   a waker whose `clone` or `drop` registers a timer or polls the same source, blocks,
//!   or panics cannot deadlock the reactor nor leave a lock held.
//!
//! One thread waits on each poller; any thread may register sources and timers, and
//! [`Reactor::notify`] interrupts a wait.
//!
//! # Who drives a reactor
//!
//! ```text
//!   a wait made in a fiber       ─► the reactor of the fiber's worker, which polls it
//!                                   between fibers (every 64 resumes while busy) and
//!                                   sleeps in it when idle
//!   a wait made outside fibers   ─► the plain-thread reactor, driven by a thread of its
//!   (block_on on a plain thread,    own ("green-reactor", started on first use) that does
//!    another executor's poll)       nothing else: it runs no fibers and no tasks
//! ```
//!
//! A worker reaches its reactor only when its fiber yields, so a wait that no fiber makes
//! must not be registered there: while a fiber computes without yielding, a plain
//! thread's 20 ms timer on a worker's reactor took 1.44 s (issue 15). The plain-thread
//! reactor's thread calls the wakers of what became ready (a plain thread's unpark, a
//! fiber's wake, another executor's waker) and goes back to waiting; a waker that blocks
//! delays the other plain-thread waits, as in async-io, whose "async-io" thread this
//! follows. Each timer registered with it notifies the thread (`insert_timer` with
//! `remote`), whose wait then ends in time for the new deadline. The reactor lives as long as the process and is never
//! closed. Fibers never register with it, so their waits cost what they did; an `Async`
//! first waited on outside fibers stays registered with it, and a fiber that waits on it
//! later is woken from that thread, as from another worker's reactor.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll, Waker};
use std::thread;
use std::time::{Duration, Instant};

use polling::{Event, PollMode, Poller};
use slab::Slab;

use crate::sys::epoll::{self, Events, Notifier, Ready};
use crate::sys::{catch_and_report, lock};

mod timers;

pub(crate) use timers::TimerId;
use timers::Timers;

/// The key of the [`Notifier`] in the poller: no source's (sources are keyed by slab
/// index), nor `polling`'s own notifier's (`usize::MAX`).
const NOTIFY_KEY: usize = usize::MAX - 1;

/// Index of the read direction in [`Source::state`].
pub(crate) const READ: usize = 0;
/// Index of the write direction in [`Source::state`].
pub(crate) const WRITE: usize = 1;

/// A poller with its sources and timers.
pub(crate) struct Reactor {
    /// The OS poller (epoll on Linux): registrations go through it, waits are made on its
    /// descriptor directly (`sys::epoll::wait`).
    poller: Poller,
    /// Interrupts a wait; registered edge-triggered under [`NOTIFY_KEY`].
    notifier: Notifier,
    /// Registered sources, keyed by the poller key.
    sources: Mutex<Slab<Arc<Source>>>,
    /// Event buffer; only the thread that drives the reactor waits, so the lock is never
    /// contended.
    events: Mutex<Events>,
    /// Pending timers.
    timers: Mutex<Timers>,
    /// Set when the worker that drives this reactor has stopped for good; never for the
    /// plain-thread reactor.
    closed: AtomicBool,
}

impl std::fmt::Debug for Reactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reactor").finish_non_exhaustive()
    }
}

/// Wakes each of `wakers` with no lock held; a `wake` that panics (a user's waker) is
/// caught and reported on stderr ([`catch_and_report`]), and the others are still woken.
/// The reactor wakes on the worker loop, where a panic must not unwind: the worker goes
/// on.
pub(crate) fn wake_all(wakers: impl IntoIterator<Item = Waker>) {
    wakers.into_iter().for_each(wake);
}

/// Wakes `waker` as [`wake_all`] does: a panic in its `wake` is caught and reported.
pub(crate) fn wake(waker: Waker) {
    catch_and_report("a waker's wake()", || waker.wake());
}

impl Reactor {
    /// A reactor with a new poller.
    pub(crate) fn new() -> io::Result<Reactor> {
        let poller = Poller::new()?;
        let notifier = Notifier::new()?;
        // SAFETY: the notifier's descriptor lives as long as the poller: both are fields
        // of the reactor, and the poller (declared first) drops first.
        unsafe {
            poller.add_with_mode(
                notifier.as_raw_fd(),
                Event::readable(NOTIFY_KEY),
                PollMode::Edge,
            )?;
        }
        Ok(Reactor {
            poller,
            notifier,
            sources: Mutex::new(Slab::new()),
            events: Mutex::new(Events::new()),
            timers: Mutex::new(Timers::default()),
            closed: AtomicBool::new(false),
        })
    }

    /// Whether the worker driving this reactor has stopped: nothing will wake its waiters.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Marks the reactor as no longer driven and wakes every waiter, so that each sees the
    /// closure instead of waiting for ever: I/O waits fail, timers move to another reactor.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        let mut wakers: Vec<Waker> = lock(&self.timers).take_all();
        for (_, source) in lock(&self.sources).iter() {
            let mut state = lock(&source.state);
            state[READ].fire(&mut wakers);
            state[WRITE].fire(&mut wakers);
        }
        wake_all(wakers);
    }

    /// Interrupts a `react` waiting in another thread.
    pub(crate) fn notify(&self) {
        self.notifier.notify();
    }

    /// Registers a file descriptor, edge-triggered for both directions.
    ///
    /// # Errors
    ///
    /// What `epoll_ctl(ADD)` returns, e.g. `EBADF` for a closed descriptor or `EPERM` for a
    /// regular file.
    pub(crate) fn insert_source(self: &Arc<Self>, fd: BorrowedFd<'_>) -> io::Result<Arc<Source>> {
        let mut sources = lock(&self.sources);
        let entry = sources.vacant_entry();
        let key = entry.key();
        // The source is deleted from the poller (`remove_source`) before the descriptor is
        // closed: `Async` removes it in its destructor before dropping the I/O. Added by
        // hand, not with `polling` (which deletes it): `polling` asks for no `EPOLLRDHUP`,
        // and `Source::quiet_since` needs to learn of a half-close.
        epoll::add_source(self.poller.as_raw_fd(), fd.as_raw_fd(), key)?;
        let source = Arc::new(Source {
            reactor: self.clone(),
            fd: fd.as_raw_fd(),
            key,
            state: Mutex::new([Direction::default(), Direction::default()]),
        });
        entry.insert(source.clone());
        Ok(source)
    }

    /// Deregisters a source; must happen before its descriptor closes.
    pub(crate) fn remove_source(&self, source: &Source) -> io::Result<()> {
        let mut sources = lock(&self.sources);
        let removed = sources.try_remove(source.key);
        // SAFETY: the descriptor is still open: the caller closes it only after this.
        let fd = unsafe { BorrowedFd::borrow_raw(source.fd) };
        let deleted = self.poller.delete(fd);
        drop(sources);
        // The source's wakers, if this was the last reference, drop with no lock held.
        drop(removed);
        deleted
    }

    /// Registers a timer; returns its id. `remote` says the caller is not the reactor's
    /// worker thread, which may then be waiting with a later timeout and is notified.
    pub(crate) fn insert_timer(&self, deadline: Instant, waker: &Waker, remote: bool) -> TimerId {
        // Cloned before locking: a clone is user code.
        let waker = waker.clone();
        let id = lock(&self.timers).insert(deadline, waker);
        if remote {
            self.notify();
        }
        id
    }

    /// How many timers were ever registered here.
    #[cfg(test)]
    pub(crate) fn timers_registered(&self) -> u64 {
        lock(&self.timers).registered()
    }

    /// Removes a timer (no effect if it has fired).
    pub(crate) fn remove_timer(&self, id: TimerId) {
        let removed = lock(&self.timers).remove(id);
        // Dropped after unlocking (the guard above is gone): a drop is user code.
        drop(removed);
    }

    /// Fires due timers into `wakers`; returns the time until the next one.
    fn fire_timers(&self, wakers: &mut Vec<Waker>) -> Option<Duration> {
        lock(&self.timers).fire(Instant::now(), wakers)
    }

    /// Whether the poller holds events that a wait would return now, without taking them:
    /// a zero-timeout `poll(2)` on the epoll descriptor (for a spinning worker, which
    /// then waits to take them).
    pub(crate) fn has_events(&self) -> bool {
        if self.is_empty() {
            return false;
        }
        let mut pollfd = libc::pollfd {
            fd: self.poller.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the poller's descriptor is open while `self` lives.
        unsafe { libc::poll(&mut pollfd, 1, 0) > 0 }
    }

    /// Whether no source and no timer is registered: only a notification could be
    /// pending, and notifications come with injector messages, which the worker checks
    /// anyway.
    fn is_empty(&self) -> bool {
        // One lock at a time: the first guard drops before the second lock.
        let no_sources = lock(&self.sources).is_empty();
        no_sources && lock(&self.timers).is_empty()
    }

    /// Wakes what is ready now, without waiting: one zero-timeout wait, which fires the
    /// due timers and dispatches the I/O events there are; nothing if nothing is
    /// registered.
    pub(crate) fn react_now(&self) {
        if !self.is_empty() {
            let _ = self.react(Some(Duration::ZERO));
        }
    }

    /// Waits for I/O events or the next timer, at most `timeout` (`None`: no limit), and
    /// wakes what became ready.
    ///
    /// # Errors
    ///
    /// What the poller's wait returns (other than `EINTR`, which it retries).
    pub(crate) fn react(&self, timeout: Option<Duration>) -> io::Result<()> {
        let mut wakers = Vec::new();

        // 1. Fire due timers; do not sleep past the next one, nor at all if one fired.
        let next_timer = self.fire_timers(&mut wakers);
        let timeout = match (timeout, next_timer) {
            _ if !wakers.is_empty() => Some(Duration::ZERO),
            (Some(t), Some(n)) => Some(t.min(n)),
            (t, n) => t.or(n),
        };

        // 2. Wait for I/O and dispatch each event to its source.
        let mut events = lock(&self.events);
        let result = epoll::wait(self.poller.as_raw_fd(), &mut events, timeout);
        // Awake: notifications from here on write again (those before it are seen by
        // the caller, which looks at its queues after this).
        self.notifier.clear();
        {
            let sources = lock(&self.sources);
            for ready in events.iter().filter(|ready| ready.key != NOTIFY_KEY) {
                if let Some(source) = sources.get(ready.key) {
                    source.dispatch(ready, &mut wakers);
                }
            }
        }
        drop(events);

        // 3. Timers that came due while we waited.
        self.fire_timers(&mut wakers);

        // 4. Wake, with no lock held, a panicking waker caught.
        wake_all(wakers);
        result.map(drop)
    }
}

/// The reactor for waits made outside fibers, whose own thread drives it; both are made on
/// first use (see [Who drives a reactor](self#who-drives-a-reactor)).
///
/// # Panics
///
/// Panics if the poller or the thread cannot be created (out of descriptors or threads).
pub(crate) fn plain_thread_reactor() -> &'static Arc<Reactor> {
    static PLAIN: OnceLock<Arc<Reactor>> = OnceLock::new();
    PLAIN.get_or_init(|| {
        let reactor = Reactor::new().map(Arc::new).unwrap_or_else(|error| {
            panic!("green: cannot create the plain-thread reactor: {error}")
        });
        let driven = reactor.clone();
        thread::Builder::new()
            .name("green-reactor".into())
            .spawn(move || drive(&driven))
            .unwrap_or_else(|error| panic!("green: cannot start the reactor thread: {error}"));
        reactor
    })
}

/// The plain-thread reactor's thread: waits for I/O, the next timer or a notification,
/// wakes what became ready, and waits again, for as long as the process lives.
fn drive(reactor: &Reactor) -> ! {
    loop {
        // The poller's wait fails only for a bad descriptor or buffer, which it is not
        // given, and retries `EINTR` itself: nothing to handle.
        let _ = reactor.react(None);
    }
}

/// A registered file descriptor.
pub(crate) struct Source {
    /// The reactor it is registered with.
    pub(crate) reactor: Arc<Reactor>,
    /// The descriptor; open for as long as the source is registered.
    pub(crate) fd: RawFd,
    /// The poller key: its index in the reactor's slab.
    key: usize,
    /// Waiters for reading (index [`READ`]) and writing ([`WRITE`]).
    state: Mutex<[Direction; 2]>,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("fd", &self.fd)
            .field("key", &self.key)
            .finish()
    }
}

/// Waiters for one direction of a source.
#[derive(Default)]
struct Direction {
    /// Counts the events seen for this direction.
    tick: u64,
    /// The waker of the `poll_ready` caller (AsyncRead/AsyncWrite style); taken when fired.
    poll_waker: Option<Waker>,
    /// The tick at which the `poll_ready` caller registered; kept when fired, so that its
    /// next call sees the event even if it comes after the wake.
    poll_tick: Option<u64>,
    /// Future-style waiters; a slot set to `None` has fired.
    waiters: Slab<Option<Waker>>,
    /// For reading: an event said the peer closed its side, an error is pending, or
    /// urgent data came. Never cleared: see [`Source::quiet_since`].
    hung_up: bool,
}

impl Direction {
    /// Marks an event: takes every waker into `wakers`.
    fn fire(&mut self, wakers: &mut Vec<Waker>) {
        self.tick = self.tick.wrapping_add(1);
        wakers.extend(self.poll_waker.take());
        for (_, waiter) in self.waiters.iter_mut() {
            wakers.extend(waiter.take());
        }
    }
}

impl Source {
    /// Handles an event: fires the ready directions. The descriptor is edge-triggered and
    /// stays armed: nothing to re-arm.
    fn dispatch(&self, ready: Ready, wakers: &mut Vec<Waker>) {
        let mut state = lock(&self.state);
        if ready.hung_up {
            state[READ].hung_up = true;
        }
        if ready.readable {
            state[READ].fire(wakers);
        }
        if ready.writable {
            state[WRITE].fire(wakers);
        }
    }

    /// The current tick of `direction`: read it before trying an operation, and pass it
    /// to [`add_waiter`](Source::add_waiter) or [`poll_ready`](Source::poll_ready) if the
    /// operation would block.
    pub(crate) fn tick(&self, direction: usize) -> u64 {
        lock(&self.state)[direction].tick
    }

    /// Whether a read may be skipped: no read event came since `tick`, and none ever said
    /// the peer closed, an error is pending, or urgent data came.
    ///
    /// For a TCP socket read by [`Async::read_drained_with`](crate::io::Async), which
    /// passes the tick it read before a read that filled less than its buffer: that read
    /// emptied the receive queue, and any data that came after it raises an edge, so the
    /// next read would fail with `WouldBlock` unless the tick moved. Not after a hang-up:
    /// data and the peer's FIN that come together raise one edge, the short read takes the
    /// data, and no edge announces the end of file that the next read returns; nor after
    /// urgent data, at whose mark a read stops with data left.
    pub(crate) fn quiet_since(&self, tick: u64) -> bool {
        let state = lock(&self.state);
        state[READ].tick == tick && !state[READ].hung_up
    }

    /// Whether the descriptor is ready for `direction` right now, by a zero-timeout
    /// `poll(2)`: for waits that follow no operation, whose readiness edge may have come
    /// (and gone unobserved) before they registered. Errors and hang-ups count as ready.
    pub(crate) fn ready_now(&self, direction: usize) -> bool {
        let mut pollfd = libc::pollfd {
            fd: self.fd,
            events: if direction == READ {
                libc::POLLIN
            } else {
                libc::POLLOUT
            },
            revents: 0,
        };
        // SAFETY: one valid pollfd; the descriptor is open while the source is registered.
        unsafe { libc::poll(&mut pollfd, 1, 0) > 0 }
    }

    /// `AsyncRead`/`AsyncWrite` style readiness. With `tick` (read before an operation
    /// that would block), `Ready` at once if an event came since. Without, `Ready` if the
    /// descriptor is ready now ([`ready_now`](Source::ready_now)). Otherwise `Pending`,
    /// and `Ready` once an event came for `direction` after the previous `Pending`.
    pub(crate) fn poll_ready(
        &self,
        direction: usize,
        tick: Option<u64>,
        cx: &mut Context<'_>,
    ) -> Poll<io::Result<()>> {
        let tick = match tick {
            Some(tick) => tick,
            None => {
                let mut state = lock(&self.state);
                let dir = &mut state[direction];
                // An event since our previous `Pending`.
                if dir.poll_tick.is_some_and(|t| t != dir.tick) {
                    dir.poll_tick = None;
                    let stale = dir.poll_waker.take();
                    drop(state);
                    drop(stale);
                    return Poll::Ready(Ok(()));
                }
                let tick = dir.tick;
                drop(state);
                if self.ready_now(direction) {
                    return Poll::Ready(Ok(()));
                }
                tick
            }
        };
        // Our clone of the waker, made with the lock released when the slot needs one.
        let mut clone = None;
        loop {
            let mut state = lock(&self.state);
            // Under the lock: `Reactor::close` sets the flag, then fires every source
            // under its lock, so either it fires our waker or we see the flag.
            if self.reactor.is_closed() {
                return Poll::Ready(Err(closed_error()));
            }
            let dir = &mut state[direction];
            if dir.tick != tick {
                dir.poll_tick = None;
                let stale = dir.poll_waker.take();
                drop(state);
                drop(stale);
                return Poll::Ready(Ok(()));
            }
            // A second task polling the same direction takes the slot over; the first is
            // woken to poll again, so they take turns instead of one waiting for ever.
            let displaced = if dir
                .poll_waker
                .as_ref()
                .is_some_and(|w| w.will_wake(cx.waker()))
            {
                None
            } else {
                let Some(fresh) = clone.take() else {
                    drop(state);
                    clone = Some(cx.waker().clone());
                    continue;
                };
                dir.poll_waker.replace(fresh)
            };
            dir.poll_tick = Some(tick);
            drop(state);
            if let Some(waker) = displaced {
                wake(waker);
            }
            return Poll::Pending;
        }
    }

    /// Registers a future-style waiter; returns its slot, or `None` if `direction` is
    /// ready already. With `tick` (read before an operation that would block), ready
    /// means an event came since; without, that the descriptor is ready now
    /// ([`ready_now`](Source::ready_now)).
    pub(crate) fn add_waiter(
        &self,
        direction: usize,
        tick: Option<u64>,
        waker: &Waker,
    ) -> io::Result<Option<usize>> {
        let tick = match tick {
            Some(tick) => tick,
            None => {
                let tick = self.tick(direction);
                if self.ready_now(direction) {
                    return Ok(None);
                }
                tick
            }
        };
        // Cloned before locking (a clone is user code); unused, it drops after unlocking.
        let waker = waker.clone();
        let mut state = lock(&self.state);
        // Under the lock, as in `poll_ready`.
        if self.reactor.is_closed() {
            return Err(closed_error());
        }
        if state[direction].tick != tick {
            return Ok(None);
        }
        Ok(Some(state[direction].waiters.insert(Some(waker))))
    }

    /// Checks a waiter: `true` (and the slot is freed) if it fired, else its waker is
    /// refreshed.
    pub(crate) fn check_waiter(&self, direction: usize, slot: usize, waker: &Waker) -> bool {
        // Our clone of the waker, made with the lock released when the slot needs one.
        let mut clone = None;
        loop {
            let mut state = lock(&self.state);
            let waiters = &mut state[direction].waiters;
            let Some(Some(current)) = waiters.get_mut(slot) else {
                waiters.try_remove(slot);
                return true;
            };
            if current.will_wake(waker) {
                return false;
            }
            let Some(fresh) = clone.take() else {
                drop(state);
                clone = Some(waker.clone());
                continue;
            };
            let displaced = std::mem::replace(current, fresh);
            drop(state);
            drop(displaced);
            return false;
        }
    }

    /// Removes a waiter that gives up waiting.
    pub(crate) fn remove_waiter(&self, direction: usize, slot: usize) {
        let removed = lock(&self.state)[direction].waiters.try_remove(slot);
        // Dropped after unlocking (the guard above is gone): a drop is user code.
        drop(removed);
    }
}

/// The error of waiting on a source whose runtime has shut down.
fn closed_error() -> io::Error {
    io::Error::other(
        "the green runtime this I/O object was registered with has shut down; \
         create the object again in a running runtime",
    )
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::{Reactor, lock};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    /// Counts its wakes.
    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn due_timers_fire_oldest_first_and_the_rest_wait() {
        let reactor = Reactor::new().unwrap();
        let counts: Vec<Arc<Count>> = (0..4)
            .map(|_| Arc::new(Count(AtomicUsize::new(0))))
            .collect();
        let now = Instant::now();
        let later = now + Duration::from_secs(3600);
        // Two due (inserted newest first), two pending.
        reactor.insert_timer(
            now - Duration::from_millis(1),
            &Waker::from(counts[1].clone()),
            false,
        );
        reactor.insert_timer(
            now - Duration::from_millis(2),
            &Waker::from(counts[0].clone()),
            false,
        );
        reactor.insert_timer(later, &Waker::from(counts[2].clone()), false);
        reactor.insert_timer(
            later + Duration::from_secs(1),
            &Waker::from(counts[3].clone()),
            false,
        );
        let mut wakers = Vec::new();
        let next = reactor.fire_timers(&mut wakers).expect("two still pending");
        assert!(next > Duration::from_secs(3500) && next <= Duration::from_secs(3600));
        assert_eq!(wakers.len(), 2);
        // Oldest first: the first waker out is the earlier deadline's.
        let mut wakers = wakers.into_iter();
        wakers.next().unwrap().wake();
        let woken = |counts: &[Arc<Count>]| -> Vec<usize> {
            counts.iter().map(|c| c.0.load(Ordering::SeqCst)).collect()
        };
        assert_eq!(woken(&counts), [1, 0, 0, 0]);
        wakers.for_each(Waker::wake);
        assert_eq!(woken(&counts), [1, 1, 0, 0]);
        let mut wakers = Vec::new();
        // Nothing due now: a second look fires none and keeps both.
        assert!(reactor.fire_timers(&mut wakers).is_some());
        assert!(wakers.is_empty());
        assert_eq!(lock(&reactor.timers).len(), 2);
    }
}
