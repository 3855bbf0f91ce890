//! Runtimes: their workers, spawning, and shutdown. The user-facing description (placement,
//! I/O across workers, shutdown) is on [`Runtime`].

use std::future::Future;
use std::io;
use std::panic;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::blocking::pool::Pool;
use crate::context::stack;
use crate::reactor::{self, Reactor};
use crate::sys::lock;
use crate::task::{JoinHandle, Task, TaskRef};
use crate::worker::{self, Placement, RuntimeShared, SpawnOptions, Unstarted};

mod builder;
mod dump;
mod frames;
mod signal;
mod stall;
pub(crate) mod task;

pub use builder::Builder;
use builder::StopSignal;
pub use dump::{Dump, FiberDump, FiberState, WorkerState};
pub use stall::StallReport;

/// A green runtime: `n` workers (one OS thread each), each with its own run queue and
/// reactor, that run fibers.
///
/// # Placement
///
/// ```text
///   spawn from a fiber       ─► the spawner's own worker: no cross-thread traffic, and
///                               the child runs within a few turns (its parent parks on
///                               join, or talks to it over a channel: the two then talk
///                               on one thread). Unless the spawner's worker is busy
///                               (fibers of its own wait to run) and a sibling has fewer
///                               fibers by more than one: then that sibling, for good;
///                               with more than three workers, the less loaded of two
///                               siblings picked at random is the one compared
///   ... right after accept   ─► the worker on the CPU that handled the connection's
///                               packets, if its load is at most one above the least
///                               loaded worker's (with pinned workers: a quarter more;
///                               see TcpListener::accept); else, as a long-lived fiber
///                               that talks to its socket, to a sibling with fewer
///                               fibers by more than one, busy or not
///   spawn from a plain thread ─► the workers in turn (round robin)
///   spawn_local (!Send)       ─► the spawner's worker, for good
///   an idle worker            ─► steals tasks that have not started from a worker whose
///                               spawn queue lags (it ran 16 fibers while they waited),
///                               or from any worker stuck in one fiber for a
///                               millisecond (placed tasks included), while that worker
///                               has more than one fiber more than the thief (after
///                               10 ms stuck, it may end lighter by 1, then 3, 7...
///                               each 10 ms more)
/// ```
///
/// A worker's load is its number of fibers, running, parked or waiting to start. A busy
/// worker never steals, so comparing loads at spawn time is what spreads long-lived
/// fibers (one per connection, say) that a single fiber spawns; stealing only what waits
/// too long keeps an idle moment from moving fibers that would have run soon where they
/// are, next to the fiber they talk to. With
/// [`Builder::pin_workers`] each worker is one CPU, and a connection's fiber runs where
/// its packets are handled.
///
/// A fiber that has started never changes worker: its stack may hold addresses of the
/// thread's thread-local variables (LLVM caches them across calls), so resuming it on
/// another thread would be undefined behaviour. Only tasks that have not started move.
///
/// # I/O across workers
///
/// A socket is registered with the reactor of the worker where it is first waited on, so a
/// connection accepted by one fiber and served by a fiber on another worker is watched by
/// the serving worker. Used afterwards from a fiber on yet another worker, it keeps
/// working: its reactor reports readiness to the waiting fiber's waker, and the waker routes
/// the wake to the fiber's own worker through that worker's injector. No re-registration is
/// needed. Once the runtime whose reactor holds a socket has shut down, waiting on the
/// socket fails with an error that says so (rather than hanging).
///
/// # Shutdown
///
/// Dropping a [`Runtime`], or [`Runtime::shutdown_timeout`]:
///
/// 1. refuses new spawns: their [`JoinHandle`]s resolve to a cancelled [`JoinError`](crate::JoinError);
/// 2. stops every worker at its next scheduling point (a fiber that never suspends delays
///    this: see [`Builder::stall_warning`]);
/// 3. on each worker's own thread, cancels every fiber: it unwinds from the point where it
///    is suspended, so that the destructors on its stack run, and the tasks that never
///    started are dropped;
/// 4. runs the workers on until those fibers have ended: a destructor may block as
///    usual (`green::sleep`, a `green::sync` lock or channel, [`JoinHandle::join`], I/O),
///    and is woken as usual; a fiber it spawns is cancelled before it starts;
/// 5. with `shutdown_timeout`, at its deadline, abandons the fibers still there (blocked
///    in a destructor, or having caught their cancellation and run on): each worker
///    reports how many on stderr, leaves them suspended with their stacks leaked, and
///    resolves their [`JoinHandle`]s to cancelled. Dropping waits for them instead. A
///    worker checks the deadline at its scheduling points, so one may run a fiber woken
///    in the moment between the deadline and its next check, after `shutdown_timeout`
///    has returned;
/// 6. joins the worker threads, then waits for the jobs of the runtime's blocking pool
///    ([`crate::unblock`]) to end, the queued ones included, up to the deadline for
///    `shutdown_timeout`. The pool's threads are not joined: each exits on its own once it
///    has no job left, so their thread-local destructors may run after the shutdown has
///    returned. A worker thread that abandoned fibers parks for good instead of exiting,
///    and is not joined: a frame of an abandoned fiber may lend out one of that thread's
///    thread-locals (from inside `LocalKey::with`, to a thread of `std::thread::scope` or
///    to a fiber of [`crate::scope`]), and the thread's exit would free it under the
///    borrower;
/// 7. every outstanding [`JoinHandle`] resolves to a cancelled [`JoinError`](crate::JoinError).
///
/// [`JoinHandle::abort`] cancels one fiber the same way, at its next suspension point.
///
/// A cancellation is never delivered into a fiber that is already unwinding from a
/// panic of its own (a destructor that blocks during a panic): it waits until the panic is
/// caught.
///
/// A destructor that *panics* while its fiber unwinds for a cancellation aborts the
/// process: a cancellation is an unwinding, and Rust lets no panic leave a destructor
/// during unwinding (std prints the panic, then aborts). green cannot catch it for the
/// destructor: no frame lies between the destructor and the unwinder to catch it in, and a
/// cancellation that did not unwind would leave the destructors on the stack unrun. A
/// destructor whose clean-up may fail catches the failure itself, or reports it without
/// panicking:
///
/// ```
/// struct Connection;
///
/// impl Connection {
///     fn flush(&mut self) { /* may panic */ }
/// }
///
/// impl Drop for Connection {
///     fn drop(&mut self) {
///         let flushed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.flush()));
///         if flushed.is_err() {
///             eprintln!("connection: flush failed while closing");
///         }
///     }
/// }
/// # green::run(|| {
/// #     let fiber = green::spawn(|| {
/// #         let _connection = Connection;
/// #         green::sleep(std::time::Duration::from_secs(3600));
/// #     });
/// #     green::yield_now();
/// #     fiber.abort();
/// #     assert!(fiber.join().unwrap_err().is_cancelled());
/// # });
/// ```
///
/// # Panics on a worker's own loop
///
/// Some user code runs on a worker's loop rather than in a fiber: wakers woken by the
/// reactor or by a task's completion, and the destructors of tasks that never started.
/// A panic there is caught, reported on stderr, and the worker goes on.
///
/// # Examples
///
/// ```
/// let runtime = green::Runtime::new().unwrap();
/// let handle = runtime.spawn(|| 2 + 2);
/// assert_eq!(handle.join().unwrap(), 4);
/// drop(runtime); // shuts down: see above
/// ```
pub struct Runtime {
    /// What the workers share.
    shared: Arc<RuntimeShared>,
    /// The worker threads, joined at shutdown (but those that abandoned fibers).
    threads: Vec<thread::JoinHandle<()>>,
    /// Each worker thread sends its id here as its worker ends, and whether it abandoned
    /// fibers (it then never exits).
    exited: Mutex<mpsc::Receiver<(thread::ThreadId, bool)>>,
    /// The stall monitor thread and its stop flag.
    monitor: Option<(thread::JoinHandle<()>, StopSignal)>,
    /// Set once shut down (`shutdown_timeout`), so that dropping does not do it again.
    shut_down: bool,
    /// The signal that prints a dump of this runtime, while it runs
    /// (`Builder::dump_on_signal`).
    dump_signal: Option<signal::SignalDumps>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("workers", &self.shared.workers.len())
            .finish()
    }
}

/// A cloneable reference to a [`Runtime`] that can spawn fibers onto it.
///
/// After the runtime shut down, fibers spawned through a handle are never started and
/// their [`JoinHandle`]s resolve to a cancelled [`JoinError`](crate::JoinError).
#[derive(Clone)]
pub struct Handle {
    /// The runtime.
    shared: Arc<RuntimeShared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("shut_down", &self.shared.shutdown.load(Ordering::Relaxed))
            .finish()
    }
}

impl Runtime {
    /// A runtime with the default configuration.
    ///
    /// # Errors
    ///
    /// As [`Builder::build`].
    pub fn new() -> io::Result<Runtime> {
        Builder::default().build()
    }

    /// A [`Builder`] to configure a runtime.
    pub fn builder() -> Builder {
        Builder::default()
    }

    /// A handle that spawns onto this runtime.
    pub fn handle(&self) -> Handle {
        Handle {
            shared: self.shared.clone(),
        }
    }

    /// What the workers share, for the crate's own tests (`test_support`).
    pub(crate) fn shared(&self) -> &Arc<RuntimeShared> {
        &self.shared
    }

    /// The number of workers.
    pub fn workers(&self) -> usize {
        self.shared.workers.len()
    }

    /// Spawns a fiber running `f` on this runtime.
    ///
    /// # Panics
    ///
    /// As [`Handle::spawn`].
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        // The task is made here, not in a callee: `f` goes into it at once, not through
        // every frame (which, in debug builds, copies it each time onto the stack).
        try_spawn_on(&self.shared, Task::spawned(Some(f)), None)
            .unwrap_or_else(|error| panic!("green::spawn: {error}"))
    }

    /// Runs `f` in a fiber of this runtime and returns its value, blocking the calling
    /// thread (or, inside a fiber, parking the calling fiber) until it is done.
    ///
    /// # Panics
    ///
    /// Re-raises the panic of `f`; panics if the runtime shuts down before `f` finishes.
    pub fn run<F, T>(&self, f: F) -> T
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.spawn(f).join() {
            Ok(value) => value,
            Err(error) if error.is_panic() => panic::resume_unwind(error.into_panic()),
            Err(error) => panic!("green::Runtime::run: {error}"),
        }
    }

    /// Runs `fut` to completion in a fiber of this runtime and returns its output.
    ///
    /// # Panics
    ///
    /// As [`Runtime::run`].
    pub fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.run(move || crate::await_blocking(fut))
    }

    /// Every fiber of the runtime, with its task's id and name, what it waits on and its
    /// backtrace: a fiber dump,
    /// as Go prints every goroutine's stack. See [`Dump`] for what it holds and prints,
    /// [`Builder::dump_on_signal`] to print one when the process receives a signal.
    ///
    /// Each worker captures its own fibers between two turns, each on the fiber's own
    /// stack, without waking it or letting it run; the caller, if it is a fiber of the
    /// runtime, captures itself. It waits (parking, if it is a fiber) up to a second for
    /// each worker to get to it: a worker running one fiber for longer without suspending
    /// is reported as busy in it ([`WorkerState::Busy`]). See
    /// [`dump_timeout`](Runtime::dump_timeout) for another wait.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use green::FiberState;
    ///
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let sleeper = runtime.spawn(|| green::sleep(Duration::from_millis(100)));
    /// // A task that has not started has no fiber yet; once started, it parks at once.
    /// let dump = loop {
    ///     let dump = runtime.dump();
    ///     if !dump.fibers().is_empty() {
    ///         break dump;
    ///     }
    /// };
    /// assert_eq!(dump.fibers()[0].state(), FiberState::Parked("sleep"));
    /// eprintln!("{dump}");
    /// sleeper.join().unwrap();
    /// ```
    pub fn dump(&self) -> Dump {
        dump::dump(&self.shared, dump::DEFAULT_TIMEOUT)
    }

    /// [`dump`](Runtime::dump), waiting at most `timeout` for each worker to get to it.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    /// use green::{FiberState, WorkerState};
    ///
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let (started, hogging) = std::sync::mpsc::channel();
    /// let (release, released) = std::sync::mpsc::channel::<()>();
    /// let hog = runtime.spawn(move || {
    ///     started.send(()).unwrap();
    ///     released.recv().unwrap(); // std's channel: blocks its worker's thread
    /// });
    /// hogging.recv().unwrap();
    /// let dump = runtime.dump_timeout(Duration::from_millis(50));
    /// assert!(matches!(dump.workers()[0], WorkerState::Busy { fiber: Some(_) }));
    /// assert_eq!(dump.fibers()[0].state(), FiberState::Running);
    /// release.send(()).unwrap();
    /// hog.join().unwrap();
    /// ```
    pub fn dump_timeout(&self, timeout: Duration) -> Dump {
        dump::dump(&self.shared, timeout)
    }

    /// Shuts the runtime down (see [Shutdown](Runtime#shutdown)), waiting at most `timeout`
    /// for the workers and the blocking pool's jobs; returns whether everything stopped in
    /// time (`false` if a fiber had to be abandoned).
    ///
    /// Nothing waits past `timeout`: fibers still unwinding then (blocked in a destructor)
    /// are abandoned, as the shutdown steps say, and threads still busy (a fiber that never
    /// suspends, a blocking job that never returns) are left to finish on their own.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let runtime = green::Runtime::new().unwrap();
    /// runtime.spawn(|| green::sleep(Duration::from_secs(3600))); // cancelled at once
    /// assert!(runtime.shutdown_timeout(Duration::from_secs(10)));
    /// ```
    pub fn shutdown_timeout(mut self, timeout: Duration) -> bool {
        self.shut_down(Instant::now().checked_add(timeout))
    }

    /// Stops the workers and the pool; waits, until `deadline` (`None`: for ever), for the
    /// workers' threads and the pool's jobs.
    fn shut_down(&mut self, deadline: Option<Instant>) -> bool {
        self.shut_down = true;
        self.dump_signal = None;
        self.shared.shut_down(deadline);
        if let Some((thread, stop)) = self.monitor.take() {
            *lock(&stop.0) = true;
            stop.1.notify_all();
            let _ = thread.join();
        }
        // Dropping a runtime from one of its own fibers cannot wait for that worker.
        let me = thread::current().id();
        let mut waiting: Vec<_> = std::mem::take(&mut self.threads)
            .into_iter()
            .filter(|t| t.thread().id() != me)
            .collect();
        let mut in_time = true;
        let exited_threads = lock(&self.exited);
        while !waiting.is_empty() {
            let exited = match deadline {
                None => exited_threads.recv().ok(),
                Some(deadline) => exited_threads
                    .recv_timeout(deadline.saturating_duration_since(Instant::now()))
                    .ok(),
            };
            let Some((exited, abandoned)) = exited else {
                in_time = false;
                break;
            };
            if let Some(index) = waiting.iter().position(|t| t.thread().id() == exited) {
                let thread = waiting.swap_remove(index);
                if !abandoned {
                    let _ = thread.join();
                } // else it parks for good, and its handle is dropped (detached)
            }
        }
        drop(exited_threads);
        // The workers' cached stacks went to the process-wide pool as their threads
        // exited; no idle worker of this runtime will trim it now.
        stack::trim_pools();
        let pool_in_time = self.shared.pool.shut_down(deadline);
        in_time && pool_in_time && self.shared.abandoned.load(Ordering::SeqCst) == 0
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if !self.shut_down {
            self.shut_down(None);
        }
    }
}

impl Handle {
    /// Every fiber of the runtime, as [`Runtime::dump`].
    ///
    /// # Examples
    ///
    /// ```
    /// use green::FiberState;
    ///
    /// let runtime = green::Runtime::new().unwrap();
    /// let handle = runtime.handle();
    /// // From a fiber of the runtime: it comes first, running.
    /// let dump = runtime.run(move || handle.dump());
    /// assert_eq!(dump.fibers()[0].state(), FiberState::Running);
    /// ```
    pub fn dump(&self) -> Dump {
        dump::dump(&self.shared, dump::DEFAULT_TIMEOUT)
    }

    /// [`dump`](Handle::dump), waiting at most `timeout` for each worker to get to it, as
    /// [`Runtime::dump_timeout`].
    pub fn dump_timeout(&self, timeout: Duration) -> Dump {
        dump::dump(&self.shared, timeout)
    }

    /// Spawns a fiber running `f`.
    ///
    /// From one of the runtime's fibers, the fiber is placed on the same worker (an idle
    /// worker may steal it before it starts) unless another worker has fewer fibers; from
    /// another thread, on the workers in turn. See [Placement](Runtime#placement).
    ///
    /// # Panics
    ///
    /// Panics if no stack can be mapped for the fiber (see [`Handle::try_spawn`]).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        try_spawn_on(&self.shared, Task::spawned(Some(f)), None)
            .unwrap_or_else(|error| panic!("green::spawn: {error}"))
    }

    /// Spawns a fiber running `f`, or returns why no stack can be had for it.
    ///
    /// # Errors
    ///
    /// As [`Stack::new`](crate::stack::Stack::new): for example, past `vm.max_map_count`
    /// an error that names that limit and how to raise it. The stack is taken when the
    /// fiber starts, so `try_spawn` checks first that the spawning worker's pool has one or
    /// can map one; a failure at start resolves the handle to a `JoinError`.
    pub fn try_spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        try_spawn_on(&self.shared, Task::spawned(Some(f)), None)
    }
}

/// `Handle::try_spawn` on the runtime `shared`, without a `Handle` (and its `Arc` count),
/// of a task just made by `Task::spawned`, with the `options` of a `task::Builder`.
fn try_spawn_on<F, T>(
    shared: &Arc<RuntimeShared>,
    (handle, task): (JoinHandle<T>, TaskRef<T, F>),
    options: Option<Box<SpawnOptions>>,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    if shared.shutdown.load(Ordering::SeqCst) {
        drop(Unstarted::new(task, options)); // cancels it
        return Ok(handle);
    }
    worker::with_worker(|worker| match worker {
        Some(worker) if Arc::ptr_eq(&worker.runtime, shared) => {
            let stack_size = options.as_ref().and_then(|options| options.stack_size);
            stack::reserve(stack_size.unwrap_or(shared.stack_size))?;
            let task = Unstarted::new(task, options);
            match worker.placement() {
                Placement::Here => worker.place(task),
                Placement::Pinned(index) if index == worker.shared.index => {
                    worker.place_pinned(task)
                }
                Placement::Pinned(index) => shared.workers[index].send_pinned(shared, task),
            }
            Ok::<(), io::Error>(())
        }
        _ => {
            shared.place_remote(Unstarted::new(task, options));
            Ok(())
        }
    })?;
    Ok(handle)
}

/// `try_spawn_on` the calling fiber's runtime, or the global one.
fn try_spawn_current<F, T>(
    task: (JoinHandle<T>, TaskRef<T, F>),
    options: Option<Box<SpawnOptions>>,
) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    worker::with_worker(|worker| match worker {
        Some(worker) => try_spawn_on(&worker.runtime, task, options),
        None => try_spawn_on(&global().shared, task, options),
    })
}

/// The reactor of the calling fiber's worker, or outside fibers the plain-thread reactor,
/// which no worker drives (see `reactor`); and whether the caller is on another thread
/// than the one that waits on that reactor (always, outside fibers).
pub(crate) fn current_reactor() -> (Arc<Reactor>, bool) {
    worker::with_worker(|worker| match worker {
        Some(worker) => (worker.shared.reactor.clone(), false),
        None => (reactor::plain_thread_reactor().clone(), true),
    })
}

/// The blocking pool of the calling fiber's runtime; `None` outside fibers.
pub(crate) fn current_pool() -> Option<Arc<Pool>> {
    if !worker::in_fiber() {
        return None;
    }
    worker::with_worker(|worker| worker.map(|w| w.runtime.pool.clone()))
}

/// The runtime behind `green::spawn` outside any runtime, started on first use.
fn global() -> &'static Runtime {
    static GLOBAL: OnceLock<Runtime> = OnceLock::new();
    GLOBAL.get_or_init(|| {
        Builder::default()
            .name("green-global")
            .build()
            .expect("green: cannot start the global runtime")
    })
}

/// Whether the caller runs inside a fiber of a green runtime.
///
/// # Examples
///
/// ```
/// assert!(!green::in_fiber());
/// assert!(green::run(green::in_fiber));
/// ```
pub fn in_fiber() -> bool {
    worker::in_fiber()
}

/// Spawns a fiber running `f`: on the calling fiber's runtime, or, outside any runtime, on
/// a global runtime started on first use. Like `std::thread::spawn`, for fibers.
///
/// `f` must be `Send`: a fiber that has not started may be moved to another worker. For
/// a closure that is not, use [`spawn_local`]:
///
/// ```compile_fail
/// let shared = std::rc::Rc::new(5);
/// green::spawn(move || *shared); // error: `Rc<i32>` cannot be sent between threads
/// ```
///
/// # Examples
///
/// ```
/// let handles: Vec<_> = (0..10).map(|i| green::spawn(move || i * i)).collect();
/// let squares: Vec<i32> = handles.into_iter().map(|h| h.join().unwrap()).collect();
/// assert_eq!(squares[9], 81);
/// ```
///
/// # Panics
///
/// Panics if no stack can be mapped for the fiber; see [`try_spawn`].
pub fn spawn<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    try_spawn_current(Task::spawned(Some(f)), None)
        .unwrap_or_else(|error| panic!("green::spawn: {error}"))
}

/// Spawns a fiber like [`spawn`], or returns why no stack can be had for it.
///
/// # Errors
///
/// As [`Handle::try_spawn`].
pub fn try_spawn<F, T>(f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    try_spawn_current(Task::spawned(Some(f)), None)
}

/// Spawns a fiber running `f`, which need not be `Send`, on the calling fiber's worker,
/// where it stays.
///
/// # Examples
///
/// ```
/// use std::rc::Rc;
///
/// let value = green::run(|| {
///     let shared = Rc::new(20);
///     let local = shared.clone();
///     green::spawn_local(move || *local + 1).join().unwrap() + *shared
/// });
/// assert_eq!(value, 41);
/// ```
///
/// # Panics
///
/// Panics when called outside a fiber, or if no stack can be mapped for the fiber.
pub fn spawn_local<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + 'static,
    T: Send + 'static,
{
    worker::with_worker(|worker| {
        let Some(worker) = worker else {
            panic!("green::spawn_local must be called from a fiber of a green runtime");
        };
        let (handle, task) = Task::<T, ()>::spawned(None);
        if let Err(error) = worker.start_queued(task, f, None) {
            panic!("green::spawn_local: {error}");
        }
        handle
    })
}

/// Lets the other runnable fibers of this worker run, then returns. Outside a fiber it
/// yields the thread.
///
/// # Examples
///
/// ```
/// let runtime = green::Runtime::builder().workers(1).build().unwrap();
/// runtime.run(|| {
///     let other = green::spawn(|| "other ran");
///     green::yield_now(); // the spawned fiber runs before we continue
///     assert!(other.is_finished());
/// });
/// ```
// Always inlined: the switch inside must be part of the caller's code, so that the CPU
// predicts its return (see `context`).
#[inline(always)]
pub fn yield_now() {
    match worker::current() {
        Some(current) => current.yield_now(),
        None => thread::yield_now(),
    }
}

/// Runs `f` as the main fiber of a new runtime and returns its value; the runtime shuts
/// down when `f` returns (unwinding the fibers still running).
///
/// # Examples
///
/// ```
/// let sum = green::run(|| {
///     let a = green::spawn(|| 1);
///     let b = green::spawn(|| 2);
///     a.join().unwrap() + b.join().unwrap()
/// });
/// assert_eq!(sum, 3);
/// ```
///
/// # Panics
///
/// Re-raises a panic of `f`; panics if the runtime cannot be started.
pub fn run<F, T>(f: F) -> T
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Runtime::new()
        .expect("green::run: cannot start a runtime")
        .run(f)
}
