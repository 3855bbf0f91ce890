//! Scoped fibers: [`scope`], the twin of [`std::thread::scope`]. The fibers spawned in a
//! scope may borrow from the caller's stack, because `scope` does not return (nor unwind
//! past its own frame) until every one of them is gone.
//!
//! # How a borrow is kept safe
//!
//! A scoped fiber runs a closure whose lifetime is erased to `'static` (as std's scoped
//! threads do), so that it can go through the ordinary spawn path. What makes that sound
//! is one count, [`ScopeData::running`]: every closure spawned in the scope holds a
//! [`Running`] token, dropped last, after the user's closure, its value and its captures
//! are all gone, whether the fiber returned, panicked, was unwound by a cancellation, or
//! was dropped before it started. `scope` waits for the count to reach zero:
//!
//! ```text
//!   scope(f)
//!     1. run f(&scope), catching its panic       (f spawns: running += 1 per fiber)
//!     2. wait until running == 0                 (parks a fiber, blocks a thread;
//!                                                 if this wait unwinds, a guard waits
//!                                                 again before the unwinding goes on)
//!     3. f panicked        -> re-raise its panic
//!        else join the fibers whose handles were dropped unjoined (all have ended),
//!        one of them panicked -> re-raise the earliest spawned one's payload
//!        else              -> return f's value
//! ```
//!
//! The count, not the fibers' `JoinHandle`s, is what `scope` waits for: a fiber abandoned
//! at a `Runtime::shutdown_timeout` deadline has its handle resolved as cancelled while it
//! stays suspended with its frames forgotten. Its token is never dropped, so its scope
//! never returns: the frames it forgot may have been relying on the borrowed data staying
//! put (a `std::thread::scope` or another `green::scope` inside it, whose threads or
//! fibers still use it).
//!
//! # Panics
//!
//! A scoped fiber's value goes through a [`Packet`] to its handle; its panic goes, like
//! any fiber's, to its task's own `JoinHandle<()>`, where green's task layer tells a panic
//! from a cancellation. A [`ScopedJoinHandle`] dropped unjoined hands that `JoinHandle` to
//! the scope ([`ScopeData::detach`]), which notes the fiber's panic once it has ended,
//! sweeping ended ones out as it goes: a long-lived scope that spawns without joining
//! keeps the handles of the fibers still running, not one per fiber it ever ran.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use crate::sys::{drop_quietly, lock};
use crate::task::{JoinError, JoinHandle, Wait};

/// Below this many handles dropped unjoined, `ScopeData::detach` keeps them all; past it,
/// it sweeps out those whose fibers ended.
const SWEEP_MIN: usize = 64;

/// Runs `f` with a [`Scope`] in which to spawn fibers that may borrow from the caller,
/// and returns its value once every fiber spawned in the scope has ended.
///
/// The twin of [`std::thread::scope`]: a closure given to [`Scope::spawn`] may borrow
/// anything that outlives the call to `scope` (`'env`), because `scope` does not return,
/// nor unwind, while a fiber spawned in it may still run. Fibers not joined by hand are
/// joined before `scope` returns. Fibers are spawned as [`spawn`](crate::spawn) would
/// spawn them from where `Scope::spawn` is called: on the calling fiber's runtime, or,
/// from a plain thread, on the global runtime.
///
/// While it waits, `scope` parks the calling fiber (the other fibers of its worker run
/// meanwhile), or, on a plain thread, blocks the thread.
///
/// # Panics
///
/// If `f` panics, `scope` waits for every fiber spawned in the scope to end, then
/// re-raises that panic.
///
/// Otherwise, if a fiber whose [`ScopedJoinHandle`] was not joined panicked, `scope`
/// re-raises its panic once every fiber has ended: the payload of the earliest spawned of
/// them, as it was (so its message and type are kept; the other payloads are dropped).
/// std's `scope` panics with a message of its own, "a scoped thread panicked", instead. A
/// panic that was seen through [`ScopedJoinHandle::join`] is the joiner's to handle, and
/// is not re-raised.
///
/// # Shutdown
///
/// A scoped fiber cancelled because its runtime shuts down unwinds like any other fiber
/// (its destructors run and may block); its handle joins to a cancelled [`JoinError`],
/// which `scope` does not re-raise. The fiber that called `scope`, on the same runtime, is
/// cancelled too: it unwinds out of `scope` only after the scoped fibers have ended.
///
/// A scoped fiber abandoned at a [`Runtime::shutdown_timeout`](crate::Runtime::shutdown_timeout)
/// deadline (blocked for good in a destructor as it unwinds) is left suspended with its
/// stack leaked, and its closure is never dropped: its `scope` then never returns. That
/// is the sound choice, not a lapse: the abandoned fiber's frames are forgotten, and code
/// in them may rely on the borrowed data staying put (a `std::thread::scope` whose
/// threads still use it, say). In practice the caller is a fiber of the same runtime,
/// abandoned as well (it waits in `scope`), so the borrowed data, on its leaked stack,
/// owned by it, or a thread-local of its worker's thread (which then never exits), stays
/// valid for good; a plain thread's scope spawns on the global runtime, which never
/// shuts down. Dropping the runtime, which waits for every fiber, never abandons one.
///
/// [`JoinHandle::abort`](crate::JoinHandle::abort) of the fiber that called `scope`
/// cancels that fiber, not its scoped fibers: it unwinds out of `scope` only once they
/// have ended on their own, as `scope` always waits for them.
///
/// # Examples
///
/// Fibers that borrow parts of a local vector, mutably, and whose work is seen once
/// `scope` returns:
///
/// ```
/// let mut numbers = vec![1, 2, 3, 4, 5, 6];
/// let total = 21;
/// green::scope(|s| {
///     let (left, right) = numbers.split_at_mut(3);
///     s.spawn(|| left.iter_mut().for_each(|n| *n *= 10));
///     s.spawn(|| right.iter_mut().for_each(|n| *n *= 100));
///     // Shared borrows of the caller's data, and a value through a handle:
///     let sum = s.spawn(|| total * 2);
///     assert_eq!(sum.join().unwrap(), 42);
/// });
/// assert_eq!(numbers, [10, 20, 30, 400, 500, 600]);
/// ```
///
/// A fiber may not borrow what the scope's closure owns, since the fiber may outlive it
/// (it runs until `scope` returns):
///
/// ```compile_fail,E0373
/// green::scope(|s| {
///     let local = vec![1, 2, 3];
///     s.spawn(|| local.len()); // error[E0373]: closure may outlive `local`
/// });
/// ```
///
/// Moved into the fiber instead, it lives as long as the fiber:
///
/// ```
/// green::scope(|s| {
///     let local = vec![1, 2, 3];
///     s.spawn(move || local.len());
/// });
/// ```
///
/// Nor may a handle leave the scope, since the fiber must end within it:
///
/// ```compile_fail
/// let numbers = vec![1, 2, 3];
/// let handle = green::scope(|s| s.spawn(|| numbers.len())); // error: lifetime may not live long enough
/// handle.join().unwrap();
/// ```
///
/// And while a fiber borrows data mutably, the scope's closure may not touch it:
///
/// ```compile_fail,E0499
/// let mut numbers = vec![1, 2, 3];
/// green::scope(|s| {
///     s.spawn(|| numbers.push(4));
///     numbers.push(5); // error: cannot borrow `numbers` as mutable more than once
/// });
/// ```
pub fn scope<'env, F, T>(f: F) -> T
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> T,
{
    let scope = Scope {
        data: Arc::new(ScopeData::new()),
        scope: PhantomData,
        env: PhantomData,
    };
    // 1. Run the closure; its panic waits until the fibers it spawned have ended.
    let result = panic::catch_unwind(AssertUnwindSafe(|| f(&scope)));
    // 2. Wait for every scoped closure to be gone (this is what makes the borrows sound).
    scope.data.wait_for_fibers();
    // 3. The closure's panic first, then an unjoined fiber's.
    match result {
        Err(payload) => panic::resume_unwind(payload),
        Ok(value) => {
            if let Some(payload) = scope.data.unjoined_panic() {
                panic::resume_unwind(payload);
            }
            value
        }
    }
}

/// A scope in which to spawn fibers that borrow from the caller; see [`scope`].
///
/// `'scope` is the lifetime of the scope itself: fibers spawned in it run at most that
/// long. `'env` is the lifetime of what they borrow, which outlives the scope.
pub struct Scope<'scope, 'env: 'scope> {
    /// What the scope's fibers share with it; an `Arc`, so that a fiber's last use of it
    /// (its `Running` token's wake) may come after `scope` returned.
    data: Arc<ScopeData>,
    /// Invariance over `'scope`, as std's `Scope`.
    scope: PhantomData<&'scope mut &'scope ()>,
    /// Invariance over `'env`, as std's `Scope`.
    env: PhantomData<&'env mut &'env ()>,
}

/// What a scope shares with its fibers and their handles.
struct ScopeData {
    /// Scoped closures not dropped yet: each holds one `Running` token. `scope` returns
    /// only once this is zero. Increased by the spawner before the spawn, so it cannot
    /// reach zero while a fiber that may still spawn runs (a spawner is itself counted,
    /// or is the scope's closure, which has returned before anyone waits).
    running: AtomicUsize,
    /// The waker of `scope`'s caller while it waits for `running` to reach zero; woken
    /// by the token that brings it there, after the lock is dropped.
    waiter: Mutex<Option<Waker>>,
    /// The sequence number of the next fiber spawned in the scope, which orders their
    /// panics.
    spawned: AtomicU64,
    /// The handles of fibers not joined by hand, and the panic found among them.
    unjoined: Mutex<Unjoined>,
}

/// The fibers of a scope whose handles were dropped before they ended.
struct Unjoined {
    /// Their sequence numbers and handles, joined by `scope` at its end; finished ones are
    /// swept out from time to time, so that a long-lived scope that spawns without
    /// joining does not keep one handle per fiber it ever ran.
    handles: Vec<(u64, JoinHandle<()>)>,
    /// Sweep once `handles` grows to this.
    sweep_at: usize,
    /// The panic of the earliest spawned unjoined fiber that panicked, among those seen so
    /// far.
    panic: Option<(u64, Box<dyn Any + Send + 'static>)>,
}

impl ScopeData {
    /// A scope with no fibers.
    fn new() -> ScopeData {
        ScopeData {
            running: AtomicUsize::new(0),
            waiter: Mutex::new(None),
            spawned: AtomicU64::new(0),
            unjoined: Mutex::new(Unjoined {
                handles: Vec::new(),
                sweep_at: SWEEP_MIN,
                panic: None,
            }),
        }
    }

    /// Waits (parks a fiber, blocks a thread) until every scoped closure is gone.
    ///
    /// The wait may unwind: the calling fiber cancelled by `abort` or its runtime's
    /// shutdown. The fibers may still use the borrowed data then, so a guard waits again
    /// before the unwinding goes on. That second wait does not unwind: a cancellation is
    /// never delivered into a fiber that unwinds. (A cancellation that unwound the closure
    /// does not come again here: `scope` holds its payload and goes on with it.)
    fn wait_for_fibers(&self) {
        /// Waits again if the first wait unwinds.
        struct WaitAgain<'a>(&'a ScopeData);
        impl Drop for WaitAgain<'_> {
            fn drop(&mut self) {
                crate::block_on::await_blocking_on(AllEnded(self.0), Wait::Scope);
            }
        }
        let again = WaitAgain(self);
        crate::block_on::await_blocking_on(AllEnded(self), Wait::Scope);
        std::mem::forget(again);
    }

    /// Takes a handle dropped unjoined: notes its fiber's panic now if it has ended, else
    /// keeps it for `scope` to join at its end.
    fn detach(&self, sequence: u64, mut handle: JoinHandle<()>) {
        if handle.is_finished() {
            self.note(sequence, handle.take());
            return;
        }
        let swept = {
            let mut unjoined = lock(&self.unjoined);
            unjoined.handles.push((sequence, handle));
            if unjoined.handles.len() < unjoined.sweep_at {
                return;
            }
            std::mem::take(&mut unjoined.handles)
        };
        // Outside the lock: a finished task may be freed here, and a payload dropped.
        let mut left = Vec::new();
        for (sequence, mut handle) in swept {
            if handle.is_finished() {
                self.note(sequence, handle.take());
            } else {
                left.push((sequence, handle));
            }
        }
        let mut unjoined = lock(&self.unjoined);
        unjoined.handles.append(&mut left);
        unjoined.sweep_at = (2 * unjoined.handles.len()).max(SWEEP_MIN);
    }

    /// Records the result of an unjoined fiber: a panic is kept if it is the earliest
    /// spawned seen so far; other results are dropped.
    fn note(&self, sequence: u64, result: Result<(), JoinError>) {
        let payload = match result {
            Err(error) if error.is_panic() => error.into_panic(),
            _ => return, // returned, or cancelled: nothing to re-raise
        };
        let dropped = {
            let mut unjoined = lock(&self.unjoined);
            match &unjoined.panic {
                Some((first, _)) if *first < sequence => Some(payload),
                _ => unjoined
                    .panic
                    .replace((sequence, payload))
                    .map(|(_, payload)| payload),
            }
        };
        if let Some(payload) = dropped {
            drop_quietly(payload);
        }
    }

    /// Once every scoped closure is gone: joins the fibers whose handles were dropped
    /// unjoined (each has ended, or is about to: its task completes right after its
    /// closure is dropped) and returns the panic to re-raise, if any.
    fn unjoined_panic(&self) -> Option<Box<dyn Any + Send + 'static>> {
        let handles = std::mem::take(&mut lock(&self.unjoined).handles);
        for (sequence, handle) in handles {
            self.note(sequence, handle.join());
        }
        let panic = lock(&self.unjoined).panic.take();
        panic.map(|(_, payload)| payload)
    }
}

/// Resolves once every scoped closure of a scope is gone (`running` is zero).
struct AllEnded<'a>(&'a ScopeData);

impl Future for AllEnded<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let data = self.0;
        // Acquire: every scoped fiber's writes (to the borrowed data) happen before its
        // token's decrement, and so before the caller goes on.
        if data.running.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        let waker = cx.waker().clone();
        let previous = lock(&data.waiter).replace(waker);
        drop(previous);
        // Again, after registering: the token that brought the count to zero took the
        // waker under the lock, so either it found ours, or its decrement is seen here.
        if data.running.load(Ordering::Acquire) == 0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

/// One scoped closure, counted in its scope's `running` until this is dropped.
struct Running(Arc<ScopeData>);

impl Running {
    /// Counts one more closure in `data`'s scope.
    fn new(data: &Arc<ScopeData>) -> Running {
        // Relaxed: the count only has to be above zero until the decrement that matches,
        // which comes later on this thread or on the fiber this token goes to.
        data.running.fetch_add(1, Ordering::Relaxed);
        Running(data.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Release: what the fiber did (with the borrowed data) is seen by the caller that
        // sees the count at zero.
        if self.0.running.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waker = lock(&self.0.waiter).take();
            if let Some(waker) = waker {
                waker.wake(); // after the lock is dropped
            }
        }
    }
}

/// Where a scoped fiber's value goes, for its handle.
struct Packet<T> {
    /// The value, once the fiber returned; taken by `ScopedJoinHandle::join`.
    result: Mutex<Option<T>>,
}

/// What a scoped fiber runs: the user's closure, where its value goes, and its token.
///
/// The fields drop in this order (a struct's fields drop in declaration order), so a
/// closure dropped before it started lets go of its captures, then the packet, and only
/// then its token; `run` keeps the same order.
struct ScopedMain<F, T> {
    /// The user's closure.
    f: F,
    /// Where its value goes.
    packet: Arc<Packet<T>>,
    /// Counts this closure in its scope until everything above is gone.
    running: Running,
}

impl<F: FnOnce() -> T, T> ScopedMain<F, T> {
    /// Runs the closure and stores its value; drops the token last, on every way out.
    fn run(self) {
        let ScopedMain { f, packet, running } = self;
        {
            let packet = packet;
            let value = f();
            *lock(&packet.result) = Some(value);
            // The packet goes here, or as this block unwinds: with the last reference
            // (the handle was dropped), the value and its destructor go with it.
        }
        drop(running);
    }
}

impl<'scope, 'env> Scope<'scope, 'env> {
    /// Spawns a fiber in the scope, running `f`, which may borrow anything that outlives
    /// the scope.
    ///
    /// The fiber is joined before [`scope`] returns, if it is not joined before through
    /// its [`ScopedJoinHandle`]. It may itself spawn fibers into the same scope.
    ///
    /// # Panics
    ///
    /// Panics if no stack can be mapped for the fiber, as [`spawn`](crate::spawn).
    ///
    /// # Examples
    ///
    /// ```
    /// let words = ["fiber", "scope", "stack"];
    /// let mut lengths = Vec::new();
    /// green::scope(|s| {
    ///     let handles: Vec<_> = words.iter().map(|w| s.spawn(move || w.len())).collect();
    ///     lengths = handles.into_iter().map(|h| h.join().unwrap()).collect();
    /// });
    /// assert_eq!(lengths, [5, 5, 5]);
    /// ```
    pub fn spawn<F, T>(&'scope self, f: F) -> ScopedJoinHandle<'scope, T>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let sequence = self.data.spawned.fetch_add(1, Ordering::Relaxed);
        let packet = Arc::new(Packet {
            result: Mutex::new(None),
        });
        let main = ScopedMain {
            f,
            packet: packet.clone(),
            running: Running::new(&self.data),
        };
        let handle = self
            .start(main)
            .unwrap_or_else(|error| panic!("green::Scope::spawn: {error}"));
        ScopedJoinHandle {
            handle: Some(handle),
            sequence,
            packet,
            scope: &self.data,
        }
    }

    /// Spawns a fiber that runs `main`, whose borrows live for `'scope`, as a `'static`
    /// task: the one place where the scope's lifetime is erased.
    fn start<F, T>(&'scope self, main: ScopedMain<F, T>) -> std::io::Result<JoinHandle<()>>
    where
        F: FnOnce() -> T + Send + 'scope,
        T: Send + 'scope,
    {
        let main: Box<dyn FnOnce() + Send + 'scope> = Box::new(move || main.run());
        // `main` holds a `Running` token of this scope, which it drops only after
        // everything else it holds (`ScopedMain`), on every way out: run, unwound,
        // dropped unstarted. `scope` neither returns nor unwinds past its frame until
        // every token is dropped (`wait_for_fibers`, with its guard), and an abandoned
        // fiber never drops its token. So nothing `main` borrows for `'scope` is used
        // after `'scope` ends, though the task holding it is `'static`.
        // SAFETY: as above; the two box types differ only in the lifetime bound, with the
        // same layout (a data pointer and a vtable), as std's scoped threads rely on.
        let main: Box<dyn FnOnce() + Send + 'static> = unsafe {
            std::mem::transmute::<Box<dyn FnOnce() + Send + 'scope>, Box<dyn FnOnce() + Send>>(main)
        };
        crate::try_spawn(main)
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scope")
            .field("running", &self.data.running.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

/// An owned permission to join a fiber spawned in a [`scope`]; the scoped twin of
/// [`JoinHandle`].
///
/// Dropping the handle leaves the fiber to be joined by `scope` at its end, which then
/// re-raises the fiber's panic, if it panicked (see [`scope`]'s `# Panics`).
///
/// # Examples
///
/// ```
/// let text = String::from("borrowed");
/// green::scope(|s| {
///     let handle = s.spawn(|| text.len());
///     assert_eq!(handle.join().unwrap(), 8);
/// });
/// ```
pub struct ScopedJoinHandle<'scope, T> {
    /// The fiber's task, whose result is `()`: its value goes through `packet`. `None`
    /// only once `join` took it.
    handle: Option<JoinHandle<()>>,
    /// The fiber's place in the order of the scope's spawns.
    sequence: u64,
    /// Where the fiber's value goes.
    packet: Arc<Packet<T>>,
    /// The scope, which joins the fiber if the handle is dropped unjoined.
    scope: &'scope ScopeData,
}

impl<T> ScopedJoinHandle<'_, T> {
    /// Waits for the fiber to finish and returns its value, as [`JoinHandle::join`]: inside
    /// a fiber this parks the calling fiber; on a plain thread it blocks the thread.
    ///
    /// # Errors
    ///
    /// As [`JoinHandle::join`]: a [`JoinError`] if the fiber panicked (its payload, from
    /// [`JoinError::into_panic`]; `scope` does not re-raise a panic seen here) or was
    /// cancelled (its runtime shut down before it finished).
    pub fn join(mut self) -> Result<T, JoinError> {
        let handle = self.handle.take().expect("a handle is joined once");
        handle.join()?;
        // The fiber stored its value before its task completed (`ScopedMain::run`).
        let value = lock(&self.packet.result).take();
        Ok(value.expect("a scoped fiber that returned stored its value"))
    }

    /// Whether the fiber has finished (returned, panicked or been cancelled).
    pub fn is_finished(&self) -> bool {
        self.handle.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

impl<T> Drop for ScopedJoinHandle<'_, T> {
    fn drop(&mut self) {
        if let Some(handle) = self.handle.take() {
            self.scope.detach(self.sequence, handle);
        }
    }
}

impl<T> fmt::Debug for ScopedJoinHandle<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ScopedJoinHandle")
            .field("finished", &self.is_finished())
            .finish_non_exhaustive()
    }
}
