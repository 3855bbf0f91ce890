//! The executor: runtimes, their worker, its run queue, and spawning.
//!
//! A [`Runtime`] owns one worker: an OS thread running a scheduler loop over its fibers.
//!
//! ```text
//!   spawn (in a fiber) ──► slab + local run queue ◄── wakes on the worker thread
//!   spawn / wake (other threads) ──► injector (crossbeam SegQueue) ──┘  + Poller::notify
//!                                                                      if the worker sleeps
//!   scheduler loop:
//!     1. move the injector's messages into the local queue
//!     2. resume the fiber at the front of the queue (FIFO: fair round robin), and
//!        every 64 resumes poll the reactor without blocking, so I/O cannot starve
//!     3. with nothing to run, wait in the reactor until an event, a timer or a message
//! ```
//!
//! Fibers live in a slab; a queue entry is (slot, generation), so a wake for a finished
//! fiber whose slot was reused finds another generation and does nothing.
//!
//! # Shutdown
//!
//! Dropping a [`Runtime`] stops its worker at the next scheduling point. The worker then
//! refuses new spawns (their handles resolve to a cancelled [`JoinError`]), unwinds every
//! suspended fiber on its own thread so that the destructors on fiber stacks run, drops
//! fibers that never started, and exits; every outstanding [`JoinHandle`] resolves to a
//! cancelled `JoinError`. The drop waits for all of that.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread;

use crossbeam_queue::SegQueue;
use slab::Slab;

use crate::context::stack::{self, DEFAULT_STACK_SIZE};
use crate::fiber::{Fiber, ForcedUnwind, Resume, Suspender};
use crate::reactor::Reactor;
use crate::task::{CompleteOnDrop, Header, IDLE, JoinError, JoinHandle, PARKED, Task};

/// Resumes between two non-blocking polls of the reactor while fibers keep the worker busy.
const REACT_EVERY: u32 = 64;

/// Panic payload that unwinds a fiber cancelled by [`JoinHandle::abort`].
struct Cancelled;

/// A message to a worker from another thread.
enum Message {
    /// Schedule the fiber with this (slot, generation) id.
    Wake(u64),
    /// Start a fiber spawned from another thread.
    Spawn(Box<dyn FnOnce(&Worker) + Send>),
}

/// The part of a worker other threads use.
pub(crate) struct WorkerShared {
    /// Wakes and spawns from other threads.
    injector: SegQueue<Message>,
    /// True while the worker waits in the reactor; a producer that sees it calls `notify`.
    sleeping: AtomicBool,
    /// Set to ask the worker to stop.
    shutdown: AtomicBool,
    /// Set once the worker refuses messages: it has stopped or is stopping.
    closed: AtomicBool,
    /// The worker's reactor.
    pub(crate) reactor: Arc<Reactor>,
    /// Usable stack size of this runtime's fibers.
    stack_size: usize,
}

impl WorkerShared {
    /// Queues a fiber to run: directly on the local queue when called on the worker's
    /// own thread, else through the injector.
    pub(crate) fn schedule(&self, id: u64) {
        let worker = WORKER.with(Cell::get);
        // SAFETY: a non-null WORKER points at the worker running on this thread.
        if let Some(worker) = unsafe { worker.as_ref() }
            && ptr::eq(&*worker.shared, self)
        {
            worker.queue.borrow_mut().push_back(id);
            return;
        }
        self.send(Message::Wake(id));
    }

    /// Sends a message from another thread and wakes the worker if it sleeps.
    fn send(&self, message: Message) {
        self.injector.push(message);
        if self.sleeping.load(Ordering::SeqCst) {
            self.reactor.notify();
        }
        // A message that arrives after the worker closed is dropped here, so that spawned
        // fibers' handles resolve (to cancelled) rather than wait forever.
        if self.closed.load(Ordering::SeqCst) {
            while self.injector.pop().is_some() {}
        }
    }
}

/// The worker's own state, used only on its thread.
pub(crate) struct Worker {
    /// What other threads see.
    shared: Arc<WorkerShared>,
    /// The fibers; a fiber is taken out of its entry while it runs.
    fibers: RefCell<Slab<Entry>>,
    /// Runnable fibers by (slot, generation) id, in FIFO order.
    queue: RefCell<VecDeque<u64>>,
    /// Generation given to the next fiber.
    next_generation: Cell<u32>,
}

/// A fiber in the slab.
struct Entry {
    /// The fiber; `None` while it runs.
    fiber: Option<Fiber<()>>,
    /// Its generation; queue entries with another generation are stale.
    generation: u32,
    /// Its task header, kept alive by the fiber's closure for as long as the fiber lives.
    header: *const Header,
}

/// The fiber running on this thread, if any.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    /// Its task header.
    pub(crate) header: *const Header,
    /// Its stack top, to suspend it.
    pub(crate) stack_top: *mut u8,
}

thread_local! {
    /// The worker whose loop runs on this thread, null elsewhere.
    static WORKER: Cell<*const Worker> = const { Cell::new(ptr::null()) };
    /// The fiber running on this thread; a null header outside fibers.
    static CURRENT: Cell<Current> = const {
        Cell::new(Current { header: ptr::null(), stack_top: ptr::null_mut() })
    };
}

/// The fiber running on this thread, if any.
#[inline]
pub(crate) fn current() -> Option<Current> {
    let current = CURRENT.with(Cell::get);
    (!current.header.is_null()).then_some(current)
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
    current().is_some()
}

impl Current {
    /// The task header.
    fn header(&self) -> &Header {
        // SAFETY: the header is kept alive by the running fiber's closure.
        unsafe { &*self.header }
    }

    /// Switches to the scheduler; unwinds if the fiber is dropped or cancelled meanwhile.
    fn suspend(&self) {
        // SAFETY: `stack_top` is the running fiber's, and we run on it.
        unsafe { Suspender::for_running(self.stack_top) }.suspend();
        if self.header().cancelled.load(Ordering::Acquire) {
            panic::resume_unwind(Box::new(Cancelled));
        }
    }

    /// Parks the fiber until its waker is woken (returns at once if it already was).
    pub(crate) fn park(&self) {
        let header = self.header();
        if header
            .state
            .compare_exchange(IDLE, PARKED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.suspend();
        }
        // Woken (or notified before parking): forget the notification before polling again.
        header.state.store(IDLE, Ordering::Release);
        if header.cancelled.load(Ordering::Acquire) {
            panic::resume_unwind(Box::new(Cancelled));
        }
    }

    /// A waker for the fiber that borrows the task's reference count: valid while the
    /// fiber runs, so it must not be dropped (it is `ManuallyDrop`); clones own a count.
    pub(crate) fn waker(&self) -> std::mem::ManuallyDrop<std::task::Waker> {
        let header = self.header();
        let raw = std::task::RawWaker::new(self.header.cast(), header.vtable);
        // SAFETY: the header is the first field of an `Arc<Task<T>>` whose vtable this is.
        std::mem::ManuallyDrop::new(unsafe { std::task::Waker::from_raw(raw) })
    }
}

impl Worker {
    /// Runs the scheduler until shutdown, then unwinds every fiber.
    fn run(&self) {
        WORKER.with(|w| w.set(self));
        let mut resumes = 0u32;
        loop {
            self.take_messages();
            if self.shared.shutdown.load(Ordering::Acquire) {
                break;
            }
            let next = self.queue.borrow_mut().pop_front();
            if let Some(id) = next {
                self.resume(id);
                resumes = resumes.wrapping_add(1);
                if resumes.is_multiple_of(REACT_EVERY) {
                    let _ = self.shared.reactor.react(Some(std::time::Duration::ZERO));
                }
                continue;
            }
            self.wait();
        }
        self.shut_down();
        WORKER.with(|w| w.set(ptr::null()));
    }

    /// Moves wakes and spawns from other threads into the local queue.
    fn take_messages(&self) {
        while let Some(message) = self.shared.injector.pop() {
            match message {
                Message::Wake(id) => self.queue.borrow_mut().push_back(id),
                Message::Spawn(start) => start(self),
            }
        }
    }

    /// Waits in the reactor for I/O, a timer or a message.
    fn wait(&self) {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        // A message pushed before `sleeping` was set must not wait for the next event.
        let timeout =
            if self.shared.injector.is_empty() && !self.shared.shutdown.load(Ordering::SeqCst) {
                None
            } else {
                Some(std::time::Duration::ZERO)
            };
        let _ = self.shared.reactor.react(timeout);
        self.shared.sleeping.store(false, Ordering::SeqCst);
    }

    /// Resumes the fiber `id` if it still exists, and removes it if it finished.
    fn resume(&self, id: u64) {
        let (slot, generation) = ((id & 0xFFFF_FFFF) as usize, (id >> 32) as u32);
        let (mut fiber, header) = {
            let mut fibers = self.fibers.borrow_mut();
            match fibers.get_mut(slot) {
                Some(entry) if entry.generation == generation => match entry.fiber.take() {
                    Some(fiber) => (fiber, entry.header),
                    None => return,
                },
                _ => return, // a stale wake
            }
        };
        let current = Current {
            header,
            stack_top: fiber.stack_top(),
        };
        let previous = CURRENT.with(|c| c.replace(current));
        let outcome = fiber.resume();
        CURRENT.with(|c| c.set(previous));
        match outcome {
            Resume::Yielded => self.fibers.borrow_mut()[slot].fiber = Some(fiber),
            // The fiber's closure recorded its result in its task.
            Resume::Finished(()) | Resume::Panicked(_) => {
                self.fibers.borrow_mut().remove(slot);
                drop(fiber);
            }
        }
    }

    /// Creates the fiber for a task on this worker and queues it.
    fn start<F, T>(&self, task: Arc<Task<T>>, f: F) -> io::Result<()>
    where
        F: FnOnce() -> T + 'static,
        T: Send + 'static,
    {
        // Take the stack first: if that fails, the caller reports why.
        let stack = stack::take(self.shared.stack_size)?;
        let guard = CompleteOnDrop(task.clone());
        let fiber = Fiber::with_stack(stack, move |_: &Suspender| {
            let guard = guard;
            if guard.0.header.cancelled.load(Ordering::Acquire) {
                return; // aborted before it started: the guard reports it cancelled
            }
            let result = match panic::catch_unwind(AssertUnwindSafe(f)) {
                Ok(value) => Ok(value),
                Err(payload) if payload.is::<ForcedUnwind>() || payload.is::<Cancelled>() => {
                    Err(JoinError::cancelled())
                }
                Err(payload) => Err(JoinError::panic(payload)),
            };
            guard.0.complete(result);
        })?;
        let generation = self.next_generation.get();
        self.next_generation.set(generation.wrapping_add(1));
        let mut fibers = self.fibers.borrow_mut();
        let entry = fibers.vacant_entry();
        let id = entry.key() as u64 | (generation as u64) << 32;
        task.header.id.store(id, Ordering::Relaxed);
        entry.insert(Entry {
            fiber: Some(fiber),
            generation,
            header: &task.header,
        });
        self.queue.borrow_mut().push_back(id);
        Ok(())
    }

    /// Stops: refuses messages, unwinds the fibers, drops the queued spawns.
    fn shut_down(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        loop {
            // Spawns still queued are dropped: their handles resolve to cancelled.
            while let Some(message) = self.shared.injector.pop() {
                drop(message);
            }
            let entries: Vec<Entry> = self.fibers.borrow_mut().drain().collect();
            if entries.is_empty() {
                break;
            }
            for entry in entries {
                let Some(fiber) = entry.fiber else { continue };
                let current = Current {
                    header: entry.header,
                    stack_top: fiber.stack_top(),
                };
                let previous = CURRENT.with(|c| c.replace(current));
                // Dropping a suspended fiber unwinds its stack (see `Fiber`).
                drop(fiber);
                CURRENT.with(|c| c.set(previous));
            }
        }
        self.queue.borrow_mut().clear();
    }
}

/// Configures a [`Runtime`].
///
/// # Examples
///
/// ```
/// let runtime = green::Runtime::builder().stack_size(64 * 1024).build().unwrap();
/// assert_eq!(runtime.run(|| 1 + 1), 2);
/// ```
#[derive(Debug, Clone)]
pub struct Builder {
    /// Stack size of every fiber.
    stack_size: usize,
    /// Name of the worker thread.
    name: String,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            stack_size: DEFAULT_STACK_SIZE,
            name: "green-worker".into(),
        }
    }
}

impl Builder {
    /// The usable stack size of every fiber, in bytes (rounded up to pages). The default
    /// is [`DEFAULT_STACK_SIZE`](crate::stack::DEFAULT_STACK_SIZE), 256 KiB.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// The name of the worker thread.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = name.into();
        self
    }

    /// Starts the runtime.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a stack size out of range (below 16 KiB or above
    /// 16 GiB); otherwise what creating the poller or the worker thread returns.
    pub fn build(self) -> io::Result<Runtime> {
        // Check the size now rather than at the first spawn.
        stack::StackPool::new(self.stack_size)?;
        let shared = Arc::new(WorkerShared {
            injector: SegQueue::new(),
            sleeping: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reactor: Arc::new(Reactor::new()?),
            stack_size: self.stack_size,
        });
        let worker_shared = shared.clone();
        let thread = thread::Builder::new().name(self.name).spawn(move || {
            let worker = Worker {
                shared: worker_shared,
                fibers: RefCell::new(Slab::new()),
                queue: RefCell::new(VecDeque::new()),
                next_generation: Cell::new(0),
            };
            worker.run();
        })?;
        Ok(Runtime {
            handle: Handle { shared },
            thread: Some(thread),
        })
    }
}

/// A green runtime: a worker thread that runs fibers, with its reactor.
///
/// See the [module docs](self) for how it works and how it shuts down.
#[derive(Debug)]
pub struct Runtime {
    /// Spawns onto the runtime.
    handle: Handle,
    /// The worker thread, joined on drop.
    thread: Option<thread::JoinHandle<()>>,
}

/// A cloneable reference to a [`Runtime`] that can spawn fibers onto it.
///
/// After the runtime shut down, fibers spawned through a handle are never started and
/// their [`JoinHandle`]s resolve to a cancelled [`JoinError`].
#[derive(Clone)]
pub struct Handle {
    /// The worker.
    shared: Arc<WorkerShared>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("closed", &self.shared.closed.load(Ordering::Relaxed))
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
    pub fn handle(&self) -> &Handle {
        &self.handle
    }

    /// Spawns a fiber running `f` on this runtime.
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        self.handle.spawn(f)
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
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.handle.shared.shutdown.store(true, Ordering::SeqCst);
        self.handle.shared.reactor.notify();
        if let Some(thread) = self.thread.take() {
            // Dropping a runtime from one of its own fibers cannot wait for that fiber.
            if thread.thread().id() != thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Handle {
    /// Spawns a fiber running `f`.
    ///
    /// On the runtime's own worker thread (inside one of its fibers) the fiber is created
    /// at once; from another thread it is created by the worker.
    ///
    /// # Panics
    ///
    /// Panics if no stack can be mapped for the fiber (see [`Handle::try_spawn`]).
    pub fn spawn<F, T>(&self, f: F) -> JoinHandle<T>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        match self.try_spawn(f) {
            Ok(handle) => handle,
            Err(error) => panic!("green::spawn: {error}"),
        }
    }

    /// Spawns a fiber running `f`, or returns why no stack could be had for it.
    ///
    /// # Errors
    ///
    /// As [`Stack::new`](crate::stack::Stack::new): for example, past `vm.max_map_count`
    /// an error that names that limit and how to raise it. Only spawns from the runtime's
    /// own fibers can report it; from other threads the fiber is created later, and a
    /// failure then resolves its handle to a `JoinError`.
    pub fn try_spawn<F, T>(&self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let task = Task::<T>::new(self.shared.clone());
        let handle = JoinHandle::new(task.clone());
        if self.shared.closed.load(Ordering::SeqCst) {
            task.complete(Err(JoinError::cancelled()));
            return Ok(handle);
        }
        let worker = WORKER.with(Cell::get);
        // SAFETY: a non-null WORKER points at the worker running on this thread.
        match unsafe { worker.as_ref() } {
            Some(worker) if Arc::ptr_eq(&worker.shared, &self.shared) => {
                worker.start(task, f)?;
            }
            _ => {
                let start = move |worker: &Worker| {
                    let failed = task.clone();
                    if let Err(error) = worker.start(task, f) {
                        let message = format!("green: could not start the fiber: {error}");
                        failed.complete(Err(JoinError::panic(Box::new(message))));
                    }
                };
                self.shared.send(Message::Spawn(Box::new(start)));
            }
        }
        Ok(handle)
    }
}

/// The runtime of the calling fiber, or the global one.
fn current_shared() -> Arc<WorkerShared> {
    let worker = WORKER.with(Cell::get);
    // SAFETY: a non-null WORKER points at the worker running on this thread.
    match unsafe { worker.as_ref() } {
        Some(worker) => worker.shared.clone(),
        None => global().handle.shared.clone(),
    }
}

/// The reactor of the calling fiber's runtime, or the global runtime's; and whether the
/// caller is on another thread than that reactor's worker.
pub(crate) fn current_reactor() -> (Arc<Reactor>, bool) {
    let worker = WORKER.with(Cell::get);
    // SAFETY: a non-null WORKER points at the worker running on this thread.
    match unsafe { worker.as_ref() } {
        Some(worker) => (worker.shared.reactor.clone(), false),
        None => (global().handle.shared.reactor.clone(), true),
    }
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

/// Spawns a fiber running `f`: on the calling fiber's runtime, or, outside any runtime, on
/// a global runtime started on first use. Like `std::thread::spawn`, for fibers.
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
    Handle {
        shared: current_shared(),
    }
    .spawn(f)
}

/// Spawns a fiber like [`spawn`], or returns why no stack could be had for it.
///
/// # Errors
///
/// As [`Handle::try_spawn`].
pub fn try_spawn<F, T>(f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    Handle {
        shared: current_shared(),
    }
    .try_spawn(f)
}

/// Lets the other runnable fibers of this worker run, then returns. Outside a fiber it
/// yields the thread.
///
/// # Examples
///
/// ```
/// green::run(|| {
///     let other = green::spawn(|| "other ran");
///     green::yield_now(); // the spawned fiber runs before we continue
///     assert!(other.is_finished());
/// });
/// ```
pub fn yield_now() {
    let Some(current) = current() else {
        thread::yield_now();
        return;
    };
    let id = current.header().id.load(Ordering::Relaxed);
    let worker = WORKER.with(Cell::get);
    // SAFETY: a fiber runs on its worker's thread, where WORKER is set.
    unsafe { &*worker }.queue.borrow_mut().push_back(id);
    current.suspend();
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
