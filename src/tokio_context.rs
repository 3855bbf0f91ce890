//! The tokio runtime context that green's threads run in, behind the `tokio` feature.
//!
//! Tokio's timers and sockets, and the crates built on them (hyper, reqwest, tonic),
//! find their runtime in a thread-local that `tokio::runtime::Handle::enter` sets; made
//! without one, they panic ("there is no reactor running"). With the feature on, green
//! enters a tokio runtime's handle with that same call, on every thread where user code
//! runs:
//!
//! ```text
//!   worker thread     for the thread's whole life, around the worker's loop: every fiber
//!                     on it, and the wakers and destructors the loop runs, see the handle
//!   blocking pool     for each pool thread's whole life: `unblock` jobs see it
//!   block_on          on a plain thread that has no tokio context of its own, for the
//!                     length of the call
//! ```
//!
//! The handle is the one given to `Builder::tokio_handle`, else one tokio runtime that
//! green starts for the whole process on first use: a current-thread runtime on a thread
//! of its own ("green-tokio") that blocks on it for ever, so that its I/O driver and timer
//! run while fibers wait. The futures themselves are polled by green, in the fibers that
//! wait for them; only tasks spawned with `tokio::spawn` run on that thread.
//!
//! # Parking inside another runtime's context
//!
//! A fiber may enter another runtime itself (`other.enter()`, or `Runtime::block_on`
//! around a poll), but it must leave it before it parks or yields: every fiber of the
//! worker runs on the same thread meanwhile, and would run inside that context; and tokio
//! requires the guards of one thread to be dropped in the reverse order of entering, which
//! two fibers that interleave break. So the switch out of a fiber checks that the
//! thread's current runtime is still the worker's ([`check_before_park`]) and panics in
//! the parking fiber with a message that says so, before any other fiber runs. The panic
//! unwinds that fiber's stack, dropping its guard, and the worker goes on in the right
//! context. A fiber that unwinds already (a destructor that blocks during a panic)
//! cannot take a second panic: the process aborts, with the same message first.
//!
//! The check compares runtime ids, so it cannot see a fiber that enters the worker's own
//! runtime a second time: that context is the right one for every fiber, and only two
//! such guards held across parks and dropped out of order would upset tokio (with tokio's
//! own panic, "`EnterGuard` values dropped out of order").

#[cfg(feature = "tokio")]
use std::cell::Cell;
#[cfg(feature = "tokio")]
use std::future::Future;
#[cfg(feature = "tokio")]
use std::io;
#[cfg(feature = "tokio")]
use std::pin::Pin;
#[cfg(feature = "tokio")]
use std::sync::{Mutex, OnceLock};
#[cfg(feature = "tokio")]
use std::task::{Context, Poll, Waker};
#[cfg(feature = "tokio")]
use std::thread::{self, ThreadId};

#[cfg(feature = "tokio")]
use tokio::runtime::{Handle, Id};

/// The tokio runtime a green runtime's threads enter; enters nothing without the `tokio`
/// feature, or when made with `default` (the crate's own tests).
#[derive(Clone, Debug, Default)]
pub(crate) struct TokioContext {
    /// The runtime's handle; `None`: enter nothing.
    #[cfg(feature = "tokio")]
    handle: Option<Handle>,
}

/// The thread that drives the process-wide runtime and runs the tasks spawned on it
/// (see `shared_runtime`), once started.
#[cfg(feature = "tokio")]
static SHARED_THREAD: OnceLock<ThreadId> = OnceLock::new();

#[cfg(feature = "tokio")]
thread_local! {
    /// The runtime this thread entered for good (see `TokioContext::enter_for`), which
    /// the thread's context must be again whenever a fiber switches out.
    static ENTERED: Cell<Option<Id>> = const { Cell::new(None) };
}

impl TokioContext {
    /// The context of a new green runtime: `given` (`Builder::tokio_handle`), or else the
    /// process-wide runtime, started now if this is its first use.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if `given` belongs to a runtime that has shut
    /// down; else what starting the process-wide runtime or its thread returns.
    #[cfg(feature = "tokio")]
    pub(crate) fn for_runtime(given: Option<Handle>) -> io::Result<TokioContext> {
        let handle = match given {
            Some(handle) if has_shut_down(&handle) => return Err(shut_down_error(&handle)),
            Some(handle) => handle,
            None => shared_runtime()?.clone(),
        };
        Ok(TokioContext {
            handle: Some(handle),
        })
    }

    /// Runs `f`, the whole life of a worker or pool thread, inside the runtime's context.
    pub(crate) fn enter_for<R>(&self, f: impl FnOnce() -> R) -> R {
        #[cfg(feature = "tokio")]
        if let Some(handle) = &self.handle {
            let _guard = handle.enter();
            let outer = ENTERED.with(|entered| entered.replace(Some(handle.id())));
            let result = f();
            ENTERED.with(|entered| entered.set(outer));
            return result;
        }
        f()
    }
}

/// Runs `f`, a `block_on` on a plain thread, inside a tokio runtime's context: the
/// thread's own if it has one (a thread of the user's that entered a runtime, a closure
/// of `spawn_blocking`), else the process-wide runtime's. (`f` blocks the thread: on a
/// thread that runs tokio tasks it blocks them all; [`check_may_block`] refuses it on the
/// process-wide runtime's thread.)
///
/// # Panics
///
/// If the process-wide runtime is needed and cannot be started.
#[inline]
pub(crate) fn on_plain_thread<R>(f: impl FnOnce() -> R) -> R {
    #[cfg(feature = "tokio")]
    if Handle::try_current().is_err() {
        let handle = shared_runtime().unwrap_or_else(|error| {
            panic!("green::block_on: cannot start the process-wide tokio runtime: {error}")
        });
        let _guard = handle.enter();
        return f();
    }
    f()
}

/// Refuses to block the thread that drives the process-wide tokio runtime (a `block_on`
/// or `JoinHandle::join` on a plain thread, called from a task spawned there with
/// `tokio::spawn`): its timers and sockets, and every other task spawned from a fiber,
/// would stop for the whole process until the call returned, which may be never. Tokio's
/// own `block_on` refuses the same call ("Cannot start a runtime from within a runtime").
/// Does nothing without the `tokio` feature, or on any other thread.
///
/// A task of a runtime of the user's is not refused: tokio's public API cannot tell one
/// from a closure of `spawn_blocking`, where blocking is what the closure is for.
///
/// # Panics
///
/// On the process-wide runtime's thread.
#[inline]
pub(crate) fn check_may_block() {
    #[cfg(feature = "tokio")]
    if let Some(&shared) = SHARED_THREAD.get()
        && thread::current().id() == shared
    {
        refuse_block();
    }
}

/// The panic of [`check_may_block`].
#[cfg(feature = "tokio")]
#[cold]
#[inline(never)]
fn refuse_block() -> ! {
    panic!(
        "green: cannot block the thread of green's process-wide tokio runtime \
         (\"green-tokio\"): `green::block_on`, `await_blocking` or `JoinHandle::join` was \
         called in a task spawned with `tokio::spawn`, and blocking that thread would stop \
         tokio's timers, sockets and other tasks in the whole process. `.await` the future \
         (or the green `JoinHandle`, which is a future) instead, or make the blocking call \
         in `tokio::task::spawn_blocking` or in a fiber. (Tokio's own `block_on` refuses \
         this too: \"Cannot start a runtime from within a runtime\".)"
    )
}

/// Refuses to let the running fiber switch out while the thread's tokio context is not
/// the one its worker entered (see [Parking inside another runtime's
/// context](self#parking-inside-another-runtimes-context)). Does nothing without the
/// `tokio` feature, or on a thread that entered no runtime for good.
///
/// # Panics
///
/// When the fiber entered another runtime and has not left it.
#[inline(always)]
pub(crate) fn check_before_park() {
    #[cfg(feature = "tokio")]
    if let Some(entered) = ENTERED.with(Cell::get) {
        let current = Handle::try_current().map(|handle| handle.id()).ok();
        if current != Some(entered) {
            refuse_park(entered, current);
        }
    }
}

#[cfg(feature = "tokio")]
#[cold]
#[inline(never)]
fn refuse_park(entered: Id, current: Option<Id>) -> ! {
    let current = match current {
        Some(id) => format!("tokio runtime {id}"),
        None => "no tokio runtime".to_owned(),
    };
    panic!(
        "green: a fiber parked or yielded inside the context of another tokio runtime \
         ({current}) than the one its worker entered (tokio runtime {entered}). Leave that \
         runtime before blocking: drop the guard of `Handle::enter` first, or enter it only \
         around the poll of the future that needs it. While the fiber waits, the other \
         fibers of its thread would run in that context, and tokio requires the guards of \
         one thread to be dropped in the reverse order of entering."
    )
}

/// Whether `handle`'s runtime has shut down. Tokio has no query for it, but a runtime
/// that has shut down cancels a task spawned on it before `spawn` returns, while a
/// running one queues it or runs it to completion: an empty task spawned here tells them
/// apart, and costs a running runtime one poll of it.
#[cfg(feature = "tokio")]
fn has_shut_down(handle: &Handle) -> bool {
    let mut probe = handle.spawn(async {});
    if !probe.is_finished() {
        return false; // queued, or running: the runtime runs
    }
    let mut cx = Context::from_waker(Waker::noop());
    match Pin::new(&mut probe).poll(&mut cx) {
        Poll::Ready(Err(error)) => error.is_cancelled(),
        Poll::Ready(Ok(())) | Poll::Pending => false,
    }
}

/// What `Builder::build` returns for a `tokio_handle` whose runtime has shut down.
#[cfg(feature = "tokio")]
#[cold]
fn shut_down_error(handle: &Handle) -> io::Error {
    let message = format!(
        "green::Builder::tokio_handle: tokio runtime {} has shut down (its `Runtime` was \
         dropped or shut down), so its timers, sockets and `spawn` would fail in every \
         fiber; give the handle of a runtime that outlives the green runtime",
        handle.id()
    );
    io::Error::new(io::ErrorKind::InvalidInput, message)
}

/// The process-wide tokio runtime's handle, started on first use: a current-thread
/// runtime with its I/O driver and timer, driven by a thread of its own that blocks on it
/// for ever.
///
/// # Errors
///
/// What building the runtime or starting its thread returns; the next call tries again.
#[cfg(feature = "tokio")]
fn shared_runtime() -> io::Result<&'static Handle> {
    static HANDLE: OnceLock<Handle> = OnceLock::new();
    /// Held while the runtime starts, so that it starts once.
    static STARTING: Mutex<()> = Mutex::new(());
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let _starting = crate::sys::lock(&STARTING);
    if let Some(handle) = HANDLE.get() {
        return Ok(handle);
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .thread_name("green-tokio-blocking")
        .build()?;
    let handle = runtime.handle().clone();
    let thread = thread::Builder::new()
        .name("green-tokio".into())
        .spawn(move || runtime.block_on(std::future::pending::<()>()))?;
    // Before the handle is out: no task can run there before the thread is known.
    let _ = SHARED_THREAD.set(thread.thread().id());
    Ok(HANDLE.get_or_init(|| handle))
}
