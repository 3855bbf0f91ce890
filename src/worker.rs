//! A worker: one OS thread, its fibers, its run queue and its reactor.
//!
//! ```text
//!   spawn in a fiber ──► own spawn queue (stealable) + a "start" mark in the local queue,
//!                        or, if a sibling's load is lower (or the task should run near
//!                        a CPU), that sibling's pinned queue + a Start message
//!   spawn from outside ──► some worker's spawn queue (round robin) + a Start message
//!   wake on this thread ──► local queue          wake from elsewhere ──► injector
//!                                                (+ Poller::notify if the worker sleeps)
//!   loop:
//!     1. turn the injector's messages into entries of the local queue
//!     2. pop the local queue (FIFO, so fibers take turns):
//!          a fiber id  -> resume it
//!          a "start"   -> create the fiber of the next task in its spawn queue, resume it
//!        every 64 resumes, poll the reactor without blocking so that I/O cannot starve
//!     3. nothing to run: steal a task that has not started from a sibling's spawn queue
//!        (if that sibling has two fibers more) or from either of its queues (if it has
//!        been stuck in one fiber for 1 ms); failing that, wait in the reactor for an
//!        event, a timer or a message, and while a sibling is awake, at most a few
//!        milliseconds: it may queue a task and get stuck before starting it
//! ```
//!
//! One shortcut: a fiber that joins a task which the loop would start next anyway (the
//! run queue holds only that task's start mark, no message waits) creates the task's
//! fiber and resumes it itself, nested: the task runs on its own stack as usual, and
//! control comes back to the joiner when it finishes, parks or yields, in the order the
//! loop would have produced, with two switches, two passes of the loop, a park and a
//! wake less (see `Worker::run_next_now`).
//!
//! Tasks wait to start in shared queues, not in the injector, so that a sibling can take
//! them even from a worker that is stuck and reads no messages. A runtime with one worker
//! has nobody to steal for: its own spawns go to a plain `VecDeque`.
//!
//! Only tasks that have not started move between workers. A started fiber stays on its
//! worker for good: its stack may hold addresses of the thread's thread-local variables
//! (LLVM caches them across calls), so resuming it on another thread would be undefined
//! behaviour.
//!
//! Fibers live in a slab; a queue entry is (slot, generation), so a wake for a finished
//! fiber whose slot was reused finds another generation and does nothing.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{RawWaker, Waker};
use std::time::{Duration, Instant};

use crossbeam_queue::SegQueue;
use slab::Slab;

use crate::context::stack;
use crate::executor::RuntimeShared;
use crate::fiber::{self, Fiber, ForbidSuspend, ForcedUnwind, Resume, Suspender};
use crate::reactor::{Reactor, lock};
use crate::task::waker::WAKER_VTABLE;
use crate::task::{CompleteOnDrop, Header, JoinError, NO_CPU, Schedule, State, Task, TaskRef};
// The wait lists of `green::sync` name these so far.
pub(crate) use crate::task::{BlockedFiber, PendingWake as Wakeup, Waiter as Wake};

/// Resumes between two non-blocking polls of the reactor while fibers keep the worker busy.
/// A poll that finds nothing costs one system call (see `Reactor::react_now`).
const REACT_EVERY: u32 = 64;

/// Pauses of an idle worker's spin between two looks at the clock and the reactor.
const SPIN_CHECK_EVERY: u32 = 16;

/// Resumes between two looks at which CPU the worker's thread runs on (each costs a few
/// nanoseconds).
const NOTE_CPU_EVERY: u32 = 16;

/// How long an idle worker looks for work before it sleeps, when it has sibling workers.
const SPIN: Duration = Duration::from_micros(10);

/// How many more fibers than a sibling a worker may have before a fiber it spawns goes
/// to that sibling (see `Worker::placement`).
const BALANCE_SLACK: usize = 1;

/// Local queue entry meaning "start the next task of the spawn queue".
const START: u64 = u64::MAX;

/// Local queue entry meaning "start the next task of the local spawn queue".
const START_LOCAL: u64 = u64::MAX - 1;

/// Local queue entry meaning "start the next task of the pinned spawn queue".
const START_PINNED: u64 = u64::MAX - 2;

/// How long a worker may run one fiber without a resume before idle siblings count it as
/// stuck and take the tasks waiting to start on it, pinned ones included.
const STUCK_AFTER: Duration = Duration::from_millis(1);

/// How long an idle worker sleeps, at most, while a sibling is awake and has no task
/// waiting to start: that sibling may queue one and get stuck before it starts it (see
/// `Worker::wait`).
const WATCH_EVERY: Duration = Duration::from_millis(4);

/// `WorkerShared::running` when no fiber runs.
const NOT_RUNNING: u64 = u64::MAX;

/// Panic payload that unwinds a fiber cancelled by `JoinHandle::abort`.
pub(crate) struct Cancelled;

/// Unwinds a fiber cancelled by `JoinHandle::abort`.
#[cold]
#[inline(never)]
fn unwind_cancelled() -> ! {
    panic::resume_unwind(Box::new(Cancelled))
}

/// Where a fiber spawned by a fiber goes; see `Worker::placement`.
pub(crate) enum Placement {
    /// On the spawner's worker, where an idle worker may steal it before it starts.
    Here,
    /// On the worker with this index, for good.
    Pinned(usize),
}

/// A spawned task waiting to start, with one reference to it; any worker may start it.
/// Cancelled if dropped unstarted (at shutdown).
pub(crate) struct Unstarted {
    /// The task's header; `None` once started or cancelled.
    task: Option<NonNull<Header>>,
    /// Creates the task's fiber on a worker; returns its id.
    start: unsafe fn(NonNull<Header>, &Worker) -> Option<u64>,
    /// Drops the closure and resolves the task as cancelled.
    cancel: unsafe fn(NonNull<Header>),
}

// SAFETY: the task behind the header is a `Task<T, F>` with T and F Send (`Unstarted::new`),
// which is Send and Sync.
unsafe impl Send for Unstarted {}

impl Unstarted {
    pub(crate) fn new<T, F>(task: TaskRef<T, F>) -> Unstarted
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        Unstarted {
            task: Some(task.into_header()),
            start: start_task::<T, F>,
            cancel: cancel_task::<T, F>,
        }
    }

    /// Whether this is the task at `task` (compared by address).
    fn is(&self, task: *const ()) -> bool {
        self.task
            .is_some_and(|header| ptr::eq(header.as_ptr().cast_const().cast::<()>(), task))
    }

    /// Starts the task on `worker`.
    fn start(mut self, worker: &Worker) -> Option<u64> {
        let task = self.task.take()?;
        // SAFETY: `start` is the function for this task's type, and the reference is ours.
        unsafe { (self.start)(task, worker) }
    }
}

impl Drop for Unstarted {
    /// Cancels the task. Its closure's destructor is user code, dropped here on whichever
    /// thread drops the task (a worker's loop at shutdown, a spawner that finds the runtime
    /// closed): a panic in it is caught and reported, and the task still resolves.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            let cancel = self.cancel;
            crate::sys::catch_and_report("the destructor of a task that never started", || {
                // SAFETY: `cancel` is the function for this task's type, and the reference
                // is ours.
                unsafe { cancel(task) }
            });
        }
    }
}

/// `Unstarted::start` for a `Task<T, F>`.
///
/// # Safety
///
/// `header` heads a `Task<T, F>`, and the caller hands over its reference, popped from a
/// queue by this worker (once).
unsafe fn start_task<T, F>(header: NonNull<Header>, worker: &Worker) -> Option<u64>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: as the caller guarantees.
    let task = unsafe { TaskRef::<T, F>::from_header(header) };
    // The closure stays in the task until the fiber first runs, and moves from there onto
    // the fiber's own stack: never through this stack, which may be a joining fiber's
    // (`Worker::run_next_now`), nor through the new fiber's header.
    let body = |task: &Task<T, F>| {
        // SAFETY: only the task's fiber takes the closure, once, on its first run; the
        // task is no longer queued, so `cancel_task` cannot take it too.
        let f = unsafe { task.take_closure() };
        f.expect("a task's closure is taken once, by its fiber")()
    };
    match worker.start_fiber(task, std::mem::size_of::<F>(), body) {
        Ok(id) => Some(id),
        Err((error, task)) => {
            if let Some(task) = task {
                crate::sys::catch_and_report(
                    "the destructor of a task that could not start",
                    || {
                        task.join
                            .complete_after(Err(JoinError::not_started(error)), || {
                                // SAFETY: no fiber was made, and the `Unstarted` is gone: ours
                                // alone.
                                unsafe { task.drop_closure() };
                            })
                    },
                );
            }
            None
        }
    }
}

/// `Unstarted`'s drop for a `Task<T, F>`.
///
/// # Safety
///
/// `header` heads a `Task<T, F>`, and the caller hands over its reference, held by an
/// unstarted task being dropped (by the one thread that held it).
unsafe fn cancel_task<T, F>(header: NonNull<Header>)
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: as the caller guarantees.
    let task = unsafe { TaskRef::<T, F>::from_header(header) };
    task.join.complete_after(Err(JoinError::cancelled()), || {
        // SAFETY: the unstarted task is being dropped by the one thread that held it.
        unsafe { task.drop_closure() };
    });
}

/// A message to a worker from another thread.
pub(crate) enum Message {
    /// Schedule the fiber with this (slot, generation) id.
    Wake(u64),
    /// A task was pushed on the worker's `spawns` queue from another thread: queue its
    /// start. The task itself waits in the shared queue, where a sibling can steal it
    /// even while this worker is stuck and does not read its messages.
    Start,
    /// The same for the worker's `pinned` queue.
    StartPinned,
}

/// The part of a worker other threads use.
pub(crate) struct WorkerShared {
    /// Index among the runtime's workers.
    pub(crate) index: usize,
    /// Wakes and spawns from other threads.
    injector: SegQueue<Message>,
    /// Tasks placed on this worker that have not started; other workers may steal them.
    pub(crate) spawns: SegQueue<Unstarted>,
    /// Tasks another worker chose this worker for (to balance loads, or near a CPU): they
    /// start here unless this worker is stuck in one fiber (see `STUCK_AFTER`).
    pinned: SegQueue<Unstarted>,
    /// True while the worker waits in the reactor; a producer that sees it calls `notify`.
    pub(crate) sleeping: AtomicBool,
    /// True while the worker waits in the reactor with no timeout (see `Worker::wait`).
    pub(crate) blind: AtomicBool,
    /// Set once the worker has stopped taking messages.
    closed: AtomicBool,
    /// The worker's reactor.
    pub(crate) reactor: Arc<Reactor>,
    /// Counts resumes, for the stall monitor.
    pub(crate) ticks: AtomicU64,
    /// Id of the fiber running now, `NOT_RUNNING` between fibers, for the stall monitor.
    pub(crate) running: AtomicU64,
    /// The worker's fibers plus the tasks queued to start on it, for placement. Written
    /// only by the worker's thread, so updates are a load and a store.
    pub(crate) load: AtomicUsize,
    /// The CPU the worker's thread ran on when it last looked (`NO_CPU` before), for
    /// placing connections near the CPU that receives their packets.
    cpu: AtomicUsize,
}

impl WorkerShared {
    pub(crate) fn new(index: usize) -> std::io::Result<WorkerShared> {
        Ok(WorkerShared {
            index,
            injector: SegQueue::new(),
            spawns: SegQueue::new(),
            pinned: SegQueue::new(),
            sleeping: AtomicBool::new(false),
            blind: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reactor: Arc::new(Reactor::new()?),
            ticks: AtomicU64::new(0),
            running: AtomicU64::new(NOT_RUNNING),
            load: AtomicUsize::new(0),
            cpu: AtomicUsize::new(NO_CPU),
        })
    }

    /// Sends a message from another thread and wakes the worker if it sleeps.
    ///
    /// Runs no user code: wakes of fibers blocked in `green::sync` come here while the
    /// notifier holds a channel's lock, which a user destructor might take again.
    fn send(&self, message: Message) {
        self.injector.push(message);
        self.notify_if_sleeping();
        // Messages that arrive after the worker closed are dropped (plain data).
        if self.closed.load(Ordering::SeqCst) {
            while self.injector.pop().is_some() {}
        }
    }

    /// Drops the tasks waiting to start once the worker has closed, so that their handles
    /// resolve (to cancelled) rather than wait forever. Drops user closures: never call
    /// it from `schedule`.
    fn cancel_tasks_if_closed(&self) {
        if self.closed.load(Ordering::SeqCst) {
            while self.spawns.pop().is_some() {}
            while self.pinned.pop().is_some() {}
        }
    }

    /// Queues a task to start on this worker, from another thread; any worker may steal
    /// it until it starts.
    pub(crate) fn send_spawn(&self, task: Unstarted) {
        self.spawns.push(task);
        self.send(Message::Start);
        self.cancel_tasks_if_closed();
    }

    /// Queues a task chosen to start on this worker, from another thread: it is stolen
    /// only if this worker gets stuck in one fiber.
    pub(crate) fn send_pinned(&self, task: Unstarted) {
        // Counted at once, so that the next spawns see it before this worker takes the
        // message and publishes its load.
        self.load.fetch_add(1, Ordering::Relaxed);
        self.pinned.push(task);
        self.send(Message::StartPinned);
        self.cancel_tasks_if_closed();
    }

    /// Interrupts the worker's wait in the reactor, if it waits.
    pub(crate) fn notify_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.reactor.notify();
        }
    }
}

impl Schedule for WorkerShared {
    /// Queues a fiber on the local queue if called on the worker's own thread.
    fn schedule_here(&self, id: u64) -> bool {
        let worker = WORKER.with(Cell::get);
        // SAFETY: a non-null WORKER points at the worker running on this thread (see
        // `with_worker`).
        match unsafe { worker.as_ref() } {
            Some(worker) if ptr::eq(&*worker.shared, self) => {
                worker.queue.borrow_mut().push_back(id);
                true
            }
            _ => false,
        }
    }

    /// Sends the wake through the injector, and wakes the worker if it sleeps.
    fn schedule_remote(&self, id: u64) {
        self.send(Message::Wake(id));
    }
}

/// The worker's own state, used only on its thread.
pub(crate) struct Worker {
    /// The runtime: the other workers, configuration.
    pub(crate) runtime: Arc<RuntimeShared>,
    /// What other threads see of this worker.
    pub(crate) shared: Arc<WorkerShared>,
    /// The fibers; a fiber is taken out of its entry while it runs.
    fibers: RefCell<Slab<Entry>>,
    /// Runnable fibers by (slot, generation) id, and `START` marks, in FIFO order.
    queue: RefCell<VecDeque<u64>>,
    /// Generation given to the next fiber.
    next_generation: Cell<u32>,
    /// Every spawn of a runtime with one worker: nobody can steal them, so a plain queue.
    local_spawns: RefCell<VecDeque<Unstarted>>,
    /// Per worker: the `ticks` last seen and since when, to tell a stuck sibling.
    seen: RefCell<Vec<(u64, Instant)>>,
    /// Per worker: whether it looked stuck at this worker's last look (`refresh_stuck`).
    stuck: Vec<Cell<bool>>,
    /// State of `next_random`; never zero.
    random: Cell<u32>,
    /// Start marks (`START`, `START_PINNED`, `START_LOCAL`) in `queue`: tasks placed here
    /// that have not started (or were stolen).
    starts: Cell<usize>,
    /// `ticks` at the last non-blocking poll of the reactor (see `REACT_EVERY`).
    polled_at: Cell<u64>,
}

/// A fiber in the slab.
struct Entry {
    /// The fiber; `None` while it runs.
    fiber: Option<Fiber<()>>,
    /// Its generation; queue entries with another generation are stale.
    generation: u32,
    /// Its task header, kept alive by the fiber's closure for as long as the fiber lives.
    header: *const Header,
    /// Resolves the task as cancelled without the fiber, for a fiber abandoned at a
    /// shutdown's deadline (see `Worker::abandon_fibers`).
    abandon: unsafe fn(*const Header),
}

/// `Entry::abandon` for a `Task<T, G>`: completes its join cell as cancelled.
///
/// # Safety
///
/// `header` heads a live `Task<T, G>` whose fiber will never run again.
unsafe fn abandon_task<T: Send + 'static, G: Send + 'static>(header: *const Header) {
    // SAFETY: as the caller guarantees; the abandoned fiber's closure keeps its reference
    // (leaked with it), so the task stays alive.
    let task = unsafe { &*header.cast::<Task<T, G>>() };
    crate::sys::catch_and_report("a JoinHandle's waker", || {
        task.join.complete(Err(JoinError::cancelled()))
    });
}

/// The fiber running on this thread, if any.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    /// Its task header.
    header: *const Header,
    /// Its stack top, to suspend it.
    stack_top: *mut u8,
}

thread_local! {
    /// The worker whose loop runs on this thread, null elsewhere.
    static WORKER: Cell<*const Worker> = const { Cell::new(ptr::null()) };
    /// The fiber running on this thread; a null header outside fibers.
    static CURRENT: Cell<Current> = const {
        Cell::new(Current { header: ptr::null(), stack_top: ptr::null_mut() })
    };
}

thread_local! {
    /// How many fibers of this thread are suspended in the middle of unwinding (their
    /// `Header::unwinding` set). std counts panics per thread, so while one is,
    /// `std::thread::panicking()` is true in every fiber of the thread.
    static SUSPENDED_UNWINDING: Cell<usize> = const { Cell::new(0) };
}

/// Records, as a fiber suspends with a panic in flight on its thread, whether it is its
/// own: the thread's count is then the fiber's alone if no other fiber of the thread is
/// suspended mid-unwind; else the fiber keeps what it knew of itself at its last
/// suspension.
#[cold]
#[inline(never)]
fn note_unwinding_at_suspend(header: &Header) {
    let known = header.state.unwinding();
    let unwinding = std::thread::panicking() && (SUSPENDED_UNWINDING.with(Cell::get) == 0 || known);
    header.state.set_unwinding(unwinding);
    if unwinding {
        SUSPENDED_UNWINDING.with(|count| count.set(count.get() + 1));
    }
}

/// Whether the calling fiber is unwinding (a panic in flight on its own stack), for the
/// decisions green makes on it (poisoning a `green::sync::Mutex`, delivering a
/// cancellation); outside fibers, `std::thread::panicking()`.
///
/// std counts panics per OS thread: while one fiber is suspended in the middle of
/// unwinding (a destructor that sleeps), `std::thread::panicking()` is true in every other
/// fiber of its worker. This tells them apart. It is exact unless a fiber starts to
/// unwind, or stops (catching its panic), while another fiber of its thread is suspended
/// mid-unwind; it then answers with what the fiber was at its last suspension.
pub(crate) fn panicking() -> bool {
    if !std::thread::panicking() {
        return false;
    }
    if SUSPENDED_UNWINDING.with(Cell::get) == 0 {
        return true;
    }
    current().is_some_and(|current| current.header().state.unwinding())
}

/// The fiber running on this thread, if any.
#[inline]
pub(crate) fn current() -> Option<Current> {
    let current = CURRENT.with(Cell::get);
    (!current.header.is_null()).then_some(current)
}

/// Calls `f` with the worker running on this thread, if any.
#[inline]
pub(crate) fn with_worker<R>(f: impl FnOnce(Option<&Worker>) -> R) -> R {
    let worker = WORKER.with(Cell::get);
    // SAFETY: a non-null WORKER points at the worker whose loop runs on this thread: it is
    // set and cleared by the loop's `OnThisThread` guard, which lives in `Worker::run`'s
    // frame, so the worker outlives every call made from the loop (fibers included:
    // shutdown ends them all, or abandons them unresumable, before `run` returns).
    f(unsafe { worker.as_ref() })
}

impl Current {
    /// The task header.
    fn header(&self) -> &Header {
        // SAFETY: a `Current` names the fiber that runs on this thread: `resume` sets
        // `CURRENT` for the fiber it resumes and restores its resumer's after, and a copy
        // kept across user code stays the running fiber's, because a fiber of the user's
        // cannot suspend under a blocking call of ours (`pin_running`) nor from another
        // stack (`Suspender::suspend`). The running fiber's closure owns a reference to
        // its task until the fiber ends, so the header is alive.
        unsafe { &*self.header }
    }

    /// Switches to the fiber's resumer (the worker loop, or a fiber that runs it directly
    /// from `join`); unwinds if the fiber is dropped or cancelled meanwhile.
    ///
    /// Keeps the fiber's own panic state across the switch (see [`panicking`]).
    #[inline(always)]
    fn suspend(&self) {
        let header = self.header();
        if std::thread::panicking() || header.state.unwinding() {
            note_unwinding_at_suspend(header);
        }
        // SAFETY: `stack_top` is the running fiber's: `CURRENT` is set by `resume` for the
        // fiber it resumes, and a blocking call that runs user code keeps it so
        // (`Current::pin_running`). We run on that stack, or on a stack of the user's that
        // this fiber resumed and that may not suspend meanwhile: either way the switch
        // frame lands on the stack we run on and the parent link is the fiber's.
        unsafe { Suspender::for_running(self.stack_top) }.switch_out();
        if header.state.unwinding() {
            SUSPENDED_UNWINDING.with(|count| count.set(count.get() - 1));
        }
        self.check_cancel();
    }

    /// Unwinds the fiber if a cancellation waits for it, unless it is unwinding already
    /// (a destructor that blocks, during a panic or a cancellation: its suspensions are
    /// plain ones, and the cancellation waits for the panic to be caught).
    #[inline(always)]
    fn check_cancel(&self) {
        if self.header().state.cancel_pending() {
            self.deliver_cancel();
        }
    }

    #[cold]
    #[inline(never)]
    fn deliver_cancel(&self) {
        if panicking() {
            return;
        }
        self.header().state.cancel_delivered();
        unwind_cancelled();
    }

    /// How many times the fiber has parked so far.
    #[inline(always)]
    pub(crate) fn parks(&self) -> u32 {
        self.header().state.parks()
    }

    /// For a blocking call that runs user code (a poll) between its parks: if the caller
    /// runs on another stack than the fiber's own (a [`Fiber`] of the user's, resumed by
    /// this fiber), forbids that stack's fiber to suspend while the guard lives (see
    /// `Suspender::suspend`), so that this fiber stays the running one, and its task
    /// alive, for as long as the call lasts.
    #[inline(always)]
    pub(crate) fn pin_running(&self) -> Option<ForbidSuspend> {
        let here = fiber::stack_address();
        // SAFETY: `stack_top` is the running fiber's (see `suspend`), which is alive.
        if unsafe { fiber::on_stack(self.stack_top, here) } {
            None
        } else {
            Some(fiber::forbid_suspend(here))
        }
    }

    /// Parks the fiber until its waker is woken (returns at once if it already was), then
    /// forgets the notification before the caller checks its condition again
    /// (`State::reset_after_park`), and unwinds if the fiber was cancelled.
    #[inline(always)]
    pub(crate) fn park(&self) {
        self.park_then_reset(State::reset_after_park);
    }

    /// `park`, for a caller that checks its condition again under a lock which its
    /// notifier holds while it wakes the fiber (`State::reset_after_park_locked`).
    #[inline(always)]
    pub(crate) fn park_locked(&self) {
        self.park_then_reset(State::reset_after_park_locked);
    }

    /// Parks unless notified, then resets with `reset`.
    #[inline(always)]
    fn park_then_reset(&self, reset: impl FnOnce(&State)) {
        let header = self.header();
        // The wake that finds us PARKED needs our scheduler.
        header.scheduler.set_once(|| {
            with_worker(|worker| {
                worker
                    .expect("a fiber runs on its worker's thread")
                    .shared
                    .clone()
            })
        });
        if header.state.transition_to_parked() {
            self.suspend();
        }
        reset(&header.state);
        self.check_cancel();
    }

    /// Queues the fiber behind the others and switches to its resumer.
    #[inline(always)]
    pub(crate) fn yield_now(&self) {
        let id = self.header().id.load(Ordering::Relaxed);
        with_worker(|worker| {
            worker
                .expect("a fiber runs on its worker's thread")
                .queue
                .borrow_mut()
                .push_back(id)
        });
        self.suspend();
    }

    /// The fiber as a [`BlockedFiber`], to register with a wait list before parking.
    pub(crate) fn blocked(&self) -> BlockedFiber {
        BlockedFiber::new(self.header)
    }

    /// A waker for the fiber that borrows the task's reference count: valid while the
    /// fiber has not ended, so it must not be dropped (it is `ManuallyDrop`) and must not
    /// outlive the blocking call that made it (`await_blocking`, whose poll cannot outlast
    /// the task: see `pin_running`); clones own a count.
    pub(crate) fn waker(&self) -> std::mem::ManuallyDrop<Waker> {
        let raw = RawWaker::new(self.header.cast(), &WAKER_VTABLE);
        // SAFETY: the header heads a live task (see `header`), and the vtable is the
        // tasks' waker vtable, whose data pointer is a header.
        std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
    }
}

/// Asks that the next fiber the calling fiber spawns run near `cpu` (see
/// `Worker::placement`). No effect outside fibers.
pub(crate) fn spawn_near_cpu(cpu: usize) {
    if let Some(current) = current() {
        current.header().near_cpu.store(cpu, Ordering::Relaxed);
    }
}

/// Takes the calling fiber's CPU hint for its next spawn (`NO_CPU` if none).
fn take_near_cpu() -> usize {
    let Some(current) = current() else {
        return NO_CPU;
    };
    // Only the fiber itself writes its hint: a load, and a store only when one was set
    // (a swap would cost a lock-prefixed instruction on every spawn).
    let near_cpu = &current.header().near_cpu;
    let cpu = near_cpu.load(Ordering::Relaxed);
    if cpu != NO_CPU {
        near_cpu.store(NO_CPU, Ordering::Relaxed);
    }
    cpu
}

impl Worker {
    pub(crate) fn new(runtime: Arc<RuntimeShared>, shared: Arc<WorkerShared>) -> Worker {
        // Any odd seed will do; the index makes the workers' sequences differ.
        let seed = 0x9E37_79B9 ^ (shared.index as u32).wrapping_mul(0x85EB_CA6B) | 1;
        let n = runtime.workers.len();
        Worker {
            runtime,
            shared,
            fibers: RefCell::new(Slab::new()),
            queue: RefCell::new(VecDeque::new()),
            next_generation: Cell::new(0),
            local_spawns: RefCell::new(VecDeque::new()),
            seen: RefCell::new(vec![(u64::MAX, Instant::now()); n]),
            stuck: (0..n).map(|_| Cell::new(false)).collect(),
            starts: Cell::new(0),
            polled_at: Cell::new(0),
            random: Cell::new(seed),
        }
    }

    /// Publishes this worker's load (fibers + tasks waiting to start) for placement.
    #[inline]
    fn publish_load(&self) {
        let load = self.fibers.borrow().len() + self.starts.get();
        self.shared.load.store(load, Ordering::Relaxed);
    }

    /// Records which CPU this worker's thread runs on (a read of the thread's `rseq`
    /// area in glibc, no system call).
    fn note_cpu(&self) {
        // SAFETY: `sched_getcpu` has no preconditions.
        let cpu = unsafe { libc::sched_getcpu() };
        let cpu = usize::try_from(cpu).unwrap_or(NO_CPU);
        self.shared.cpu.store(cpu, Ordering::Relaxed);
    }

    /// Where a task spawned by a fiber of this worker should go, given the spawning
    /// fiber's CPU hint (taken from the running fiber, if it left one).
    ///
    /// 1. With a hint (the fiber just accepted a connection, whose packets the kernel
    ///    handled on that CPU), the one worker last seen on that CPU, unless its load is
    ///    more than a quarter (plus [`BALANCE_SLACK`]) above the lowest load seen (this
    ///    worker's and the candidate sibling's): the connection's fiber then runs where
    ///    its socket buffers are in cache.
    /// 2. Else this worker, unless the candidate sibling's load is lower by more than
    ///    [`BALANCE_SLACK`]. The candidate is the less loaded of two siblings picked at
    ///    random, or of all siblings with three workers or fewer, so that a spawn costs
    ///    the same however many workers there are. Spawning here is cheapest (no
    ///    cross-thread traffic, and the child often runs right after its parent parks on
    ///    `join`), and idle workers steal what has not started. But a busy worker never
    ///    steals, so long-lived fibers spawned by one fiber would otherwise all stay with
    ///    it.
    #[inline]
    pub(crate) fn placement(&self) -> Placement {
        let workers = &self.runtime.workers;
        let n = workers.len();
        if n < 2 {
            return Placement::Here;
        }
        let near_cpu = take_near_cpu();
        let load = |w: &WorkerShared| w.load.load(Ordering::Relaxed);
        // The least loaded of two siblings picked at random (all of them when there are
        // two or three workers): a spawn reads a few cache lines, not one per worker,
        // and the choice of two keeps the loads close ("power of two choices").
        let candidate = if n <= 3 {
            workers
                .iter()
                .filter(|w| w.index != self.shared.index)
                .min_by_key(|w| load(w))
        } else {
            let offset = |r: u32| 1 + r as usize % (n - 1);
            let r = self.next_random();
            let a = &workers[(self.shared.index + offset(r)) % n];
            let b = &workers[(self.shared.index + offset(r >> 16)) % n];
            Some(if load(b) < load(a) { b } else { a })
        };
        let Some(candidate) = candidate else {
            return Placement::Here;
        };
        let own = load(&self.shared);
        let least = own.min(load(candidate));
        if near_cpu != NO_CPU
            && let Some(near) = self.worker_on_cpu(near_cpu)
            && load(near) <= least + least / 4 + BALANCE_SLACK
        {
            return Placement::Pinned(near.index);
        }
        if own > load(candidate) + BALANCE_SLACK {
            Placement::Pinned(candidate.index)
        } else {
            Placement::Here
        }
    }

    /// The one worker last seen on `cpu`, if exactly one was (unpinned workers may both
    /// have run there lately: no answer then).
    fn worker_on_cpu(&self, cpu: usize) -> Option<&WorkerShared> {
        let mut on_cpu = self
            .runtime
            .workers
            .iter()
            .filter(|w| w.cpu.load(Ordering::Relaxed) == cpu);
        match (on_cpu.next(), on_cpu.next()) {
            (Some(worker), None) => Some(worker),
            _ => None,
        }
    }

    /// A pseudo-random number (xorshift), for placement.
    fn next_random(&self) -> u32 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random.set(x);
        x
    }

    /// Runs the scheduler until shutdown, then unwinds every fiber.
    ///
    /// User code that runs on the loop itself, outside fibers (wakers the reactor wakes,
    /// destructors of tasks that never started), has its panics caught and reported, and
    /// the loop goes on. A panic that escapes the loop anyway is a bug of green's: the
    /// worker's fibers can then never be unwound, so it aborts the process with a
    /// message, as std does for a panic during a panic.
    pub(crate) fn run(&self) {
        let mut on_this_thread = OnThisThread::enter(self);
        self.note_cpu();
        loop {
            // 1. Messages from other threads.
            self.take_messages();
            if self.runtime.shutdown.load(Ordering::Acquire) {
                break;
            }
            // 2. The next fiber, in FIFO order.
            let next = self.queue.borrow_mut().pop_front();
            let id = match next {
                Some(mark @ (START | START_LOCAL | START_PINNED)) => {
                    self.start_marked(self.take_marked(mark))
                }
                Some(id) => Some(id),
                // 3. Nothing here: take work from another worker, or wait for some.
                None => match self.steal() {
                    Some(task) => task.start(self),
                    None => {
                        self.wait();
                        continue;
                    }
                },
            };
            if let Some(id) = id {
                self.resume(id);
                // Here, not in `resume`: the poll runs wakers, user code, which must not
                // run on a fiber's stack in its name (`run_next_now` resumes nested).
                if self.poll_due() {
                    self.polled_at
                        .set(self.shared.ticks.load(Ordering::Relaxed));
                    self.shared.reactor.react_now();
                }
            }
        }
        self.shut_down();
        on_this_thread.finished = true;
    }

    /// Moves wakes into the local queue and spawns into the spawn queue.
    fn take_messages(&self) {
        // `pop` on an empty queue runs a SeqCst fence; `is_empty` is two loads. A message
        // that arrives just after this check is taken on the next pass, and `wait` checks
        // `has_work` again before sleeping.
        if self.shared.injector.is_empty() {
            return;
        }
        while let Some(message) = self.shared.injector.pop() {
            match message {
                Message::Wake(id) => self.queue.borrow_mut().push_back(id),
                Message::Start => self.mark_start(START),
                Message::StartPinned => self.mark_start(START_PINNED),
            }
        }
    }

    /// Puts a task on this worker's spawn queue, with its mark in the local queue. Wakes
    /// a sleeping worker to steal it when this worker already has a backlog.
    pub(crate) fn place(&self, task: Unstarted) {
        if self.runtime.workers.len() == 1 {
            return self.place_local(task); // nobody to steal it
        }
        self.shared.spawns.push(task);
        self.mark_start(START);
        if self.shared.spawns.len() > 1 && self.runtime.sleepers.load(Ordering::SeqCst) > 0 {
            self.runtime.wake_a_sleeper(self.shared.index);
        }
        self.runtime.alert_blind_sleepers(self.shared.index);
    }

    /// Puts a task that was chosen to start on this worker on its pinned queue (stolen
    /// only if this worker gets stuck), with its mark in the local queue.
    pub(crate) fn place_pinned(&self, task: Unstarted) {
        if self.runtime.workers.len() == 1 {
            return self.place_local(task);
        }
        self.shared.pinned.push(task);
        self.mark_start(START_PINNED);
        self.runtime.alert_blind_sleepers(self.shared.index);
    }

    /// Queues the start of the next task of the queue that `mark` names.
    fn mark_start(&self, mark: u64) {
        self.queue.borrow_mut().push_back(mark);
        self.starts.set(self.starts.get() + 1);
        self.publish_load();
    }

    /// Puts a task on this worker's own spawn queue, which no other worker can reach,
    /// with its mark in the local queue. Only for a runtime with one worker.
    fn place_local(&self, task: Unstarted) {
        self.local_spawns.borrow_mut().push_back(task);
        self.mark_start(START_LOCAL);
    }

    /// Takes an unstarted task from another worker: from its stealable queue if that
    /// makes the two workers' loads closer (the task's fiber will live here for good, so
    /// an idle moment must not pull long-lived fibers onto a worker that already has more
    /// of them), or from either queue if that worker is stuck in one fiber.
    fn steal(&self) -> Option<Unstarted> {
        let workers = &self.runtime.workers;
        let n = workers.len();
        (1..n)
            .map(|offset| &workers[(self.shared.index + offset) % n])
            .find_map(|victim| {
                let stuck = self.stuck[victim.index].get();
                let task = if stuck || self.balances_with(victim) {
                    victim.spawns.pop()
                } else {
                    None
                };
                task.or_else(|| stuck.then(|| victim.pinned.pop()).flatten())
            })
    }

    /// Whether taking a task from `victim` would bring the two loads closer.
    #[inline]
    fn balances_with(&self, victim: &WorkerShared) -> bool {
        victim.load.load(Ordering::Relaxed) >= self.shared.load.load(Ordering::Relaxed) + 2
    }

    /// Whether `steal` would find something in `victim`'s queues; if not `balance`, only
    /// what it would take because `victim` is stuck.
    #[inline]
    fn may_steal_from(&self, victim: &WorkerShared, balance: bool) -> bool {
        let stuck = self.stuck[victim.index].get();
        (!victim.spawns.is_empty() && (stuck || (balance && self.balances_with(victim))))
            || (stuck && !victim.pinned.is_empty())
    }

    /// Whether anything waits for this worker: a message, shutdown, or a task to steal
    /// (if not `balance`, only from a stuck sibling).
    fn has_work(&self, balance: bool) -> bool {
        !self.shared.injector.is_empty()
            || self.runtime.shutdown.load(Ordering::SeqCst)
            || self
                .runtime
                .workers
                .iter()
                .any(|w| w.index != self.shared.index && self.may_steal_from(w, balance))
    }

    /// Whether a sibling has tasks waiting to start that `steal` leaves alone for now:
    /// this worker then sleeps no longer than `STUCK_AFTER`, to look again.
    fn work_left_elsewhere(&self) -> bool {
        self.runtime
            .workers
            .iter()
            .any(|w| w.index != self.shared.index && !(w.spawns.is_empty() && w.pinned.is_empty()))
    }

    /// Looks at the siblings' resume counters: one that has run the same fiber, without
    /// a resume, for `STUCK_AFTER` is stuck (a fiber computing or blocking its thread),
    /// and the tasks waiting to start on it may be stolen.
    fn refresh_stuck(&self) {
        let now = Instant::now();
        let mut seen = self.seen.borrow_mut();
        for worker in self.runtime.workers.iter() {
            if worker.index == self.shared.index {
                continue;
            }
            let ticks = worker.ticks.load(Ordering::Relaxed);
            let (last, since) = &mut seen[worker.index];
            if ticks != *last {
                (*last, *since) = (ticks, now);
                self.stuck[worker.index].set(false);
            } else {
                let running = worker.running.load(Ordering::Relaxed) != NOT_RUNNING;
                self.stuck[worker.index].set(running && now - *since >= STUCK_AFTER);
            }
        }
    }

    /// Waits in the reactor for I/O, a timer or a message.
    fn wait(&self) {
        // 1. With other workers, look for work for a few microseconds before sleeping: a
        //    wake or a spawn from another worker often comes within that time (the other
        //    side of a conversation answers), and sleeping in the reactor then being
        //    notified costs several system calls on each side. I/O events that come
        //    meanwhile end the spin: the reactor below returns them at once.
        //    The cheap checks run every pause (about 60 ns); the clock and the reactor
        //    (a system call) every `SPIN_CHECK_EVERY` pauses.
        if self.runtime.workers.len() > 1 {
            self.refresh_stuck();
            let start = Instant::now();
            for round in 1u32.. {
                if self.has_work(true) {
                    return;
                }
                if round.is_multiple_of(SPIN_CHECK_EVERY)
                    && (start.elapsed() >= SPIN || self.shared.reactor.has_events())
                {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        // 2. Sleep in the reactor until an event, a timer or a notification.
        self.runtime.sleepers.fetch_add(1, Ordering::SeqCst);
        self.shared.sleeping.store(true, Ordering::SeqCst);
        let mut balance = true;
        let was_blind = loop {
            let timeout = self.sleep_timeout(balance);
            let slept_at = Instant::now();
            let _ = self.shared.reactor.react(timeout);
            let blind = timeout.is_none() && self.runtime.workers.len() > 1;
            if blind {
                self.set_blind(false);
            }
            // 3. A bounded sleep that ran out with nothing for this worker is a look at
            //    the siblings, not a wake: back to the loop only if one is stuck with
            //    tasks waiting to start. Tasks a sibling will start soon are not worth
            //    waking for, as `place` decides too (the spawner often starts one
            //    directly from `join`, and stealing it would make that join wait).
            let ran_out = timeout.is_some_and(|t| !t.is_zero() && slept_at.elapsed() >= t);
            if !ran_out || !self.queue.borrow().is_empty() {
                break blind;
            }
            self.refresh_stuck();
            if self.has_work(false) {
                break blind;
            }
            balance = false;
        };
        // Woken from a blind sleep (perhaps by an alert meant to make some worker look at
        // a task that may never start where it is), this worker goes back to running
        // fibers and may get stuck in one too: pass the alert on while tasks wait.
        if was_blind && self.work_left_elsewhere() {
            self.runtime.alert_blind_sleepers(self.shared.index);
        }
        self.note_cpu();
        if self.runtime.workers.len() > 1 {
            self.refresh_stuck();
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        self.runtime.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// How long `wait` sleeps, once `sleeping` is set:
    ///
    /// 1. not at all if work came meanwhile (it must not wait for the next event; if
    ///    not `balance`, tasks that only a balancing steal would take do not count);
    /// 2. `STUCK_AFTER` if a sibling has tasks waiting to start, to look again once it
    ///    may have got stuck;
    /// 3. `WATCH_EVERY` if a sibling is awake: it may queue a task and get stuck in a
    ///    fiber before starting it, and nothing would tell this worker;
    /// 4. with no timeout otherwise, as a "blind" sleeper: counted first, then the above
    ///    are checked once more, so that a task queued meanwhile is either seen here or
    ///    sees the count and wakes this worker (`RuntimeShared::alert_blind_sleepers`).
    ///    A sibling that wakes later and queues a task before it gets stuck wakes it
    ///    the same way.
    fn sleep_timeout(&self, balance: bool) -> Option<Duration> {
        if self.runtime.workers.len() == 1 {
            return self.has_work(balance).then_some(Duration::ZERO);
        }
        let bounded = || {
            if self.has_work(balance) {
                Some(Duration::ZERO)
            } else if self.work_left_elsewhere() {
                Some(STUCK_AFTER)
            } else if self.a_sibling_is_awake() {
                Some(WATCH_EVERY)
            } else {
                None
            }
        };
        if let Some(timeout) = bounded() {
            return Some(timeout);
        }
        self.set_blind(true);
        let timeout = bounded();
        if timeout.is_some() {
            self.set_blind(false);
        }
        timeout
    }

    /// Counts this worker in or out of the blind sleepers (flag first in, last out, so
    /// that an alert that sees the count finds the flag).
    fn set_blind(&self, blind: bool) {
        if blind {
            self.shared.blind.store(true, Ordering::SeqCst);
            self.runtime.blind_sleepers.fetch_add(1, Ordering::SeqCst);
        } else {
            self.runtime.blind_sleepers.fetch_sub(1, Ordering::SeqCst);
            self.shared.blind.store(false, Ordering::SeqCst);
        }
    }

    /// Whether a sibling is out of its reactor: running fibers, or about to.
    fn a_sibling_is_awake(&self) -> bool {
        self.runtime
            .workers
            .iter()
            .any(|w| w.index != self.shared.index && !w.sleeping.load(Ordering::SeqCst))
    }

    /// Resumes the fiber `id` if it still exists, and removes it if it finished. Called by
    /// the loop, or nested by a fiber (`run_next_now`): runs no user code but the fiber.
    // Inlined into the loop, as it was before `run_next_now` also called it: out of line,
    // its call and the saving of the registers its switch clobbers cost ping-pong about 9%.
    #[inline(always)]
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
        // Only this thread writes `ticks` and `running`: loads and stores, no atomic
        // read-modify-write. `running` goes back to the resumer's id (`NOT_RUNNING`, or the
        // fiber that runs this one nested, see `run_next_now`).
        let ticks = self.shared.ticks.load(Ordering::Relaxed).wrapping_add(1);
        self.shared.ticks.store(ticks, Ordering::Relaxed);
        let resumer = self.shared.running.load(Ordering::Relaxed);
        self.shared.running.store(id, Ordering::Relaxed);
        let current = Current {
            header,
            stack_top: fiber.stack_top(),
        };
        let previous = CURRENT.with(|c| c.replace(current));
        let outcome = fiber.resume();
        CURRENT.with(|c| c.set(previous));
        self.shared.running.store(resumer, Ordering::Relaxed);
        match outcome {
            Resume::Yielded => self.fibers.borrow_mut()[slot].fiber = Some(fiber),
            // The fiber's closure recorded its result in its task.
            Resume::Finished(()) => self.remove_fiber(slot, fiber),
            // Only a destructor that panicked after the task completed (its closure's, or a
            // joiner's waker's) gets here: user code, whose payload is user code too.
            Resume::Panicked(payload) => {
                self.remove_fiber(slot, fiber);
                crate::sys::drop_quietly(payload);
            }
        }
        if ticks.is_multiple_of(NOTE_CPU_EVERY.into()) {
            self.note_cpu();
        }
    }

    /// Removes a finished fiber, whose stack goes back to the pool.
    #[inline(always)]
    fn remove_fiber(&self, slot: usize, fiber: Fiber<()>) {
        self.fibers.borrow_mut().remove(slot);
        self.publish_load();
        drop(fiber);
    }

    /// Whether `REACT_EVERY` resumes (nested ones included) have passed since the last
    /// non-blocking poll of the reactor.
    fn poll_due(&self) -> bool {
        let ticks = self.shared.ticks.load(Ordering::Relaxed);
        ticks.wrapping_sub(self.polled_at.get()) >= REACT_EVERY.into()
    }

    /// Takes the task that a start mark, just taken from the run queue, stands for:
    /// the next of the queue it names (`None` if a sibling stole it).
    fn take_marked(&self, mark: u64) -> Option<Unstarted> {
        self.starts.set(self.starts.get() - 1);
        match mark {
            START => self.shared.spawns.pop(),
            START_PINNED => self.shared.pinned.pop(),
            _ => self.local_spawns.borrow_mut().pop_front(),
        }
    }

    /// Creates the fiber of a task taken for a start mark; returns its id.
    fn start_marked(&self, task: Option<Unstarted>) -> Option<u64> {
        let id = task.and_then(|task| task.start(self));
        if id.is_none() {
            self.publish_load(); // stolen, or failed to start: one less waits here
        }
        id
    }

    /// Runs the next entry of the run queue now, nested in the calling fiber (its resumer
    /// is that fiber, not the worker loop), if it is the start of a task and the only
    /// entry, and no message, shutdown or periodic reactor poll waits: the loop would
    /// start that task next anyway, in the same order. The calling fiber gets back control
    /// when the new one finishes, parks or yields, as the loop would have.
    ///
    /// For `JoinHandle::join` of `task`, which would otherwise park its fiber, switch to
    /// the loop, start the task there, and be woken and switched back to: two switches and
    /// two passes of the loop less, and no park and wake. Returns whether the task it ran
    /// was `task` (a sibling may have stolen `task`, and the next task of the spawn queue
    /// is then another).
    ///
    /// While it runs `task` itself, `direct` is set (see `JoinCell::complete`).
    pub(crate) fn run_next_now(&self, task: *const (), direct: &AtomicBool) -> bool {
        let mark = {
            let mut queue = self.queue.borrow_mut();
            match queue.front() {
                Some(&mark @ (START | START_LOCAL | START_PINNED))
                    if queue.len() == 1
                        && self.shared.injector.is_empty()
                        && !self.poll_due()
                        && !self.runtime.shutdown.load(Ordering::Acquire) =>
                {
                    queue.clear();
                    mark
                }
                _ => return false,
            }
        };
        let next = self.take_marked(mark);
        let ours = next.as_ref().is_some_and(|next| next.is(task));
        if let Some(id) = self.start_marked(next) {
            if ours {
                // Set while `task` runs nested in us, on this thread (see `JoinCell`).
                direct.store(true, Ordering::Relaxed);
                self.resume(id);
                direct.store(false, Ordering::Relaxed);
            } else {
                self.resume(id);
            }
        }
        ours
    }

    /// Creates the fiber for a task on this worker; returns its id. The fiber runs `f`
    /// and stores its result, a panic or a cancellation in the task, whose reference it
    /// takes over (no count changes hands). On failure the task comes back with the
    /// error, for the caller to report; `None` if it was already resolved (cancelled).
    #[allow(clippy::type_complexity)]
    pub(crate) fn start_fiber<T, B, G>(
        &self,
        task: TaskRef<T, G>,
        closure_size: usize,
        body: B,
    ) -> Result<u64, (std::io::Error, Option<TaskRef<T, G>>)>
    where
        B: FnOnce(&Task<T, G>) -> T + 'static,
        T: Send + 'static,
        G: Send + 'static,
    {
        // The fiber's closure holds the task and `body`, and the user's closure (in `body`,
        // or in the task, of `closure_size` bytes) must fit the stack too: check before the
        // task moves into it (with room for the closure's padding).
        let (size, align) = (
            std::mem::size_of::<(CompleteOnDrop<T, G>, B)>().max(closure_size),
            std::mem::align_of::<(CompleteOnDrop<T, G>, B)>(),
        );
        if !crate::fiber::closure_fits(size + align, align, self.runtime.stack_size) {
            let error = std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "a fiber closure of {size} bytes does not fit a stack of {} bytes",
                    self.runtime.stack_size
                ),
            );
            return Err((error, Some(task)));
        }
        let stack = match stack::take(self.runtime.stack_size) {
            Ok(stack) => stack,
            Err(error) => return Err((error, Some(task))),
        };
        // What needs the task before the fiber's closure owns it.
        let generation = self.next_generation.get();
        self.next_generation.set(generation.wrapping_add(1));
        let slot = self.fibers.borrow().vacant_key();
        let id = slot as u64 | (generation as u64) << 32;
        task.header.id.store(id, Ordering::Relaxed);
        // Valid while the fiber lives: its closure keeps the task alive.
        let header = task.header_ptr();
        if self.runtime.shutdown.load(Ordering::Acquire) {
            // Made while the worker shuts down (`spawn_local` in a destructor): cancelled
            // before it starts, as every other fiber is.
            task.header.state.request_cancel();
        }
        let guard = CompleteOnDrop(task);
        let fiber = Fiber::with_stack(stack, move |_: &Suspender| {
            let guard = guard;
            if guard.0.header.state.cancel_pending() {
                // Aborted (or shut down) first: the guard drops the closure and reports
                // the task cancelled.
                guard.0.header.state.cancel_delivered();
                return;
            }
            let result = match panic::catch_unwind(AssertUnwindSafe(|| body(&guard.0))) {
                Ok(value) => Ok(value),
                Err(payload) if payload.is::<ForcedUnwind>() || payload.is::<Cancelled>() => {
                    Err(JoinError::cancelled())
                }
                Err(payload) => Err(JoinError::panic(payload)),
            };
            guard.0.join.complete(result);
        })
        // Checked above; should it fail anyway, the dropped closure cancelled the task.
        .map_err(|error| (error, None))?;
        let mut fibers = self.fibers.borrow_mut();
        let key = fibers.insert(Entry {
            fiber: Some(fiber),
            generation,
            header,
            abandon: abandon_task::<T, G>,
        });
        debug_assert_eq!(key, slot);
        drop(fibers);
        self.publish_load();
        Ok(id)
    }

    /// Creates a fiber for a task and queues it behind the runnable ones.
    pub(crate) fn start_queued<T, F, G>(&self, task: TaskRef<T, G>, f: F) -> std::io::Result<()>
    where
        F: FnOnce() -> T + 'static,
        T: Send + 'static,
        G: Send + 'static,
    {
        let size = std::mem::size_of::<F>();
        let id = self
            .start_fiber(task, size, move |_| f())
            .map_err(|(error, _)| error)?;
        self.queue.borrow_mut().push_back(id);
        Ok(())
    }

    /// Stops (see `Runtime`'s `# Shutdown`):
    ///
    /// 1. cancels every fiber: each unwinds from its suspension point, on this thread, when
    ///    it next runs (at once, if it is parked); tasks that never started are dropped;
    /// 2. runs the loop on, without new tasks, until every fiber has ended: the
    ///    destructors that run as the fibers unwind may block (sleep, lock, join, wait for
    ///    I/O), and are woken as usual;
    /// 3. at the shutdown's deadline, if any, abandons the fibers still there: reported on
    ///    stderr, left suspended with their stacks leaked, their tasks resolved as
    ///    cancelled;
    /// 4. refuses messages and closes the reactor.
    fn shut_down(&self) {
        let deadline = self.runtime.deadline();
        for entry in self.fibers.borrow().iter().map(|(_, entry)| entry) {
            // SAFETY: a fiber in the slab keeps its task alive.
            let header = unsafe { &*entry.header };
            if header.state.request_cancel() {
                header.wake(); // queues it here if it is parked
            }
        }
        loop {
            self.drop_unstarted();
            self.take_messages();
            let next = self.queue.borrow_mut().pop_front();
            match next {
                // The task was dropped unstarted (cancelled) above, or stolen.
                Some(mark @ (START | START_LOCAL | START_PINNED)) => {
                    drop(self.take_marked(mark));
                }
                Some(id) => {
                    self.resume(id);
                    if self.poll_due() {
                        self.polled_at
                            .set(self.shared.ticks.load(Ordering::Relaxed));
                        self.shared.reactor.react_now();
                    }
                }
                None if self.fibers.borrow().is_empty() => break,
                None if deadline.is_some_and(|deadline| Instant::now() >= deadline) => {
                    self.abandon_fibers();
                    break;
                }
                None => self.wait_until(deadline),
            }
        }
        self.shared.closed.store(true, Ordering::SeqCst);
        // Nothing will poll this reactor again: waits on its sources fail from now on and
        // its timers move to whichever reactor polls them next.
        self.shared.reactor.close();
        while self.shared.injector.pop().is_some() {}
        self.drop_unstarted();
        self.queue.borrow_mut().clear();
    }

    /// Drops the tasks waiting to start here: their handles resolve to cancelled.
    fn drop_unstarted(&self) {
        while let Some(task) = self.shared.spawns.pop() {
            drop(task);
        }
        while let Some(task) = self.shared.pinned.pop() {
            drop(task);
        }
        let local: Vec<Unstarted> = self.local_spawns.borrow_mut().drain(..).collect();
        drop(local);
    }

    /// Sleeps in the reactor until an event, a timer, a message or `deadline`.
    fn wait_until(&self, deadline: Option<Instant>) {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        if self.shared.injector.is_empty() {
            let timeout =
                deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
            let _ = self.shared.reactor.react(timeout);
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
    }

    /// Gives up on the fibers left at a shutdown's deadline (blocked in destructors as
    /// they unwind, or ignoring their cancellation): they stay suspended for good, their
    /// stacks and tasks leaked, and their tasks resolve as cancelled.
    ///
    /// Leaked, not freed: such a fiber may still be registered somewhere without a
    /// reference count (a wait list of `green::sync`, a join cell; see [`BlockedFiber`]),
    /// and a later notifier must find its task header alive. Its wake then goes to this
    /// closed worker and is dropped.
    fn abandon_fibers(&self) {
        let left: Vec<Entry> = self.fibers.borrow_mut().drain().collect();
        eprintln!(
            "green: worker {}: the shutdown deadline passed with {} fiber(s) still running \
             (blocked in destructors as they unwind, or ignoring their cancellation); they are \
             left suspended, their stacks leaked, and their JoinHandles resolve as cancelled",
            self.shared.index,
            left.len()
        );
        for entry in left {
            std::mem::forget(entry.fiber);
            // SAFETY: the fiber is never resumed again, and its closure's reference, leaked
            // with it, keeps the task alive.
            unsafe { (entry.abandon)(entry.header) };
        }
        self.publish_load();
    }
}

/// The worker's loop on its thread: `WORKER` points at the worker exactly while it lives.
struct OnThisThread<'a> {
    /// The worker.
    worker: &'a Worker,
    /// Set when the loop returns; clear if it unwinds.
    finished: bool,
}

impl<'a> OnThisThread<'a> {
    fn enter(worker: &'a Worker) -> OnThisThread<'a> {
        WORKER.with(|w| w.set(worker));
        OnThisThread {
            worker,
            finished: false,
        }
    }
}

impl Drop for OnThisThread<'_> {
    fn drop(&mut self) {
        WORKER.with(|w| w.set(ptr::null()));
        // Not `thread::panicking()`: a fiber abandoned mid-unwind at a shutdown's deadline
        // leaves that set on this thread for good.
        if !self.finished {
            self.worker.shared.closed.store(true, Ordering::SeqCst);
            eprintln!(
                "green: worker {} panicked outside its fibers; its fibers cannot be unwound, \
                 aborting",
                self.worker.shared.index
            );
            std::process::abort();
        }
    }
}

/// What the stall monitor reports: a fiber that ran too long without suspending.
#[derive(Debug, Clone)]
pub struct StallReport {
    /// The fiber's id on its worker (slot and generation).
    pub fiber: u64,
    /// The worker's index in its runtime.
    pub worker: usize,
    /// How long the fiber has run so far without suspending (at least).
    pub running_for: Duration,
}

impl std::fmt::Display for StallReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "green: fiber {}:{} has run on worker {} for {:?} without suspending; it blocks \
             every other fiber of that worker (move blocking work into green::unblock)",
            self.fiber & 0xFFFF_FFFF,
            self.fiber >> 32,
            self.worker,
            self.running_for,
        )
    }
}

/// The stall monitor's view of one worker: the resume count and running fiber last
/// seen, when they were first seen, and whether that stall was reported.
#[derive(Debug, Clone, Copy)]
struct Watched {
    ticks: u64,
    running: u64,
    since: Instant,
    reported: bool,
}

impl Watched {
    fn new(now: Instant) -> Watched {
        Watched {
            ticks: u64::MAX,
            running: NOT_RUNNING,
            since: now,
            reported: false,
        }
    }

    /// Takes a look at a worker that has made `ticks` resumes and runs `running` at
    /// `now`: how long that fiber has run without suspending, if that is `threshold` or
    /// more and was not reported yet. A resume (or a change of fiber) starts the clock
    /// again; a worker between fibers is never reported.
    fn look(
        &mut self,
        ticks: u64,
        running: u64,
        now: Instant,
        threshold: Duration,
    ) -> Option<Duration> {
        if (ticks, running) != (self.ticks, self.running) {
            *self = Watched {
                ticks,
                running,
                since: now,
                reported: false,
            };
            return None;
        }
        let running_for = now - self.since;
        if running == NOT_RUNNING || self.reported || running_for < threshold {
            return None;
        }
        self.reported = true;
        Some(running_for)
    }
}

/// Watches the workers of a runtime and reports fibers that hog one (see
/// `Builder::stall_warning`).
pub(crate) fn monitor_stalls(
    runtime: Arc<RuntimeShared>,
    threshold: Duration,
    report: Arc<dyn Fn(&StallReport) + Send + Sync>,
    stop: &Mutex<bool>,
    wakeup: &std::sync::Condvar,
) {
    let period = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
    let mut seen = vec![Watched::new(Instant::now()); runtime.workers.len()];
    let mut stopped = lock(stop);
    while !*stopped {
        stopped = wakeup
            .wait_timeout(stopped, period)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        let now = Instant::now();
        for (worker, watched) in runtime.workers.iter().zip(&mut seen) {
            let ticks = worker.ticks.load(Ordering::Relaxed);
            let running = worker.running.load(Ordering::Relaxed);
            if let Some(running_for) = watched.look(ticks, running, now, threshold) {
                report(&StallReport {
                    fiber: running,
                    worker: worker.index,
                    running_for,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::RemoteWake;

    #[test]
    fn the_stall_monitor_reports_a_fiber_once_per_stall() {
        let (threshold, start) = (Duration::from_millis(20), Instant::now());
        let at = |ms| start + Duration::from_millis(ms);
        let mut watched = Watched::new(start);
        assert_eq!(watched.look(5, 7, at(0), threshold), None); // first seen
        assert_eq!(watched.look(5, 7, at(19), threshold), None);
        assert_eq!(
            watched.look(5, 7, at(25), threshold),
            Some(Duration::from_millis(25))
        );
        assert_eq!(watched.look(5, 7, at(500), threshold), None); // once
        // Suspended and resumed: a new stall, reported again.
        assert_eq!(watched.look(6, 7, at(501), threshold), None);
        assert_eq!(
            watched.look(6, 7, at(530), threshold),
            Some(Duration::from_millis(29))
        );
    }

    #[test]
    fn the_stall_monitor_spares_fibers_that_suspend_and_idle_workers() {
        let (threshold, start) = (Duration::from_millis(20), Instant::now());
        let mut watched = Watched::new(start);
        // One fiber resumed every 15 ms for a second: never 20 ms without a resume.
        for (i, ms) in (0..1000).step_by(15).enumerate() {
            let now = start + Duration::from_millis(ms);
            assert_eq!(
                watched.look(i as u64, 7, now, threshold),
                None,
                "at {ms} ms"
            );
        }
        // A worker between fibers for a second.
        let mut idle = Watched::new(start);
        for ms in (0..1000).step_by(15) {
            let now = start + Duration::from_millis(ms);
            assert_eq!(
                idle.look(3, NOT_RUNNING, now, threshold),
                None,
                "at {ms} ms"
            );
        }
    }

    #[test]
    fn a_worker_watching_an_awake_sibling_takes_the_task_it_queued_before_getting_stuck() {
        let runtime = crate::Runtime::builder().workers(2).build().unwrap();
        let go = Arc::new(AtomicBool::new(false));
        let (index_tx, index_rx) = std::sync::mpsc::channel();
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let go_hog = go.clone();
        let hog = runtime.spawn(move || {
            index_tx
                .send(with_worker(|w| w.unwrap().shared.index))
                .unwrap();
            // Awake, so that the sibling sleeps with a timeout rather than blind.
            while !go_hog.load(Ordering::SeqCst) {
                crate::yield_now();
            }
            drop(crate::spawn(move || {
                let _ = ran_tx.send(std::thread::current().id());
            }));
            let ran_on = ran_rx.recv_timeout(Duration::from_secs(10));
            (std::thread::current().id(), ran_on)
        });
        let sibling = &runtime.shared().workers[1 - index_rx.recv().unwrap()];
        // Asleep, and not blind: on a timeout.
        while !sibling.sleeping.load(Ordering::SeqCst) || sibling.blind.load(Ordering::SeqCst) {
            std::thread::yield_now();
        }
        go.store(true, Ordering::SeqCst);
        let (hog_thread, ran_on) = hog.join().unwrap();
        let ran_on = ran_on.expect("the task waited for the stuck worker");
        assert_ne!(ran_on, hog_thread);
    }

    /// Spawns a fiber that parks in a read until every worker of `runtime` sleeps blind,
    /// is then woken by its own reactor (no sibling is told), and runs `then`.
    fn when_every_worker_sleeps_blind<T: Send + 'static>(
        runtime: &crate::Runtime,
        then: impl FnOnce() -> T + Send + 'static,
    ) -> crate::JoinHandle<T> {
        use std::io::{Read, Write};
        let (mut poke, hog_side) = std::os::unix::net::UnixStream::pair().unwrap();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let hog = runtime.spawn(move || {
            let mut hog_side = crate::io::Async::new(hog_side).unwrap();
            parked_tx.send(()).unwrap();
            hog_side.read_exact(&mut [0]).unwrap();
            then()
        });
        // Counted once the hog has started (it then parks in its read): not a count from
        // before the spawn woke a worker.
        parked_rx.recv().unwrap();
        let blind = &runtime.shared().blind_sleepers;
        while blind.load(Ordering::SeqCst) < runtime.workers() {
            std::thread::yield_now();
        }
        poke.write_all(&[1]).unwrap();
        hog
    }

    /// From a fiber: spawns a task that sends the id of its thread to `also` (if given)
    /// and back, then blocks this worker's thread until it did (10 s at most). Returns
    /// this thread's id and the task's.
    fn spawn_then_get_stuck(
        also: Option<std::sync::mpsc::Sender<std::thread::ThreadId>>,
    ) -> (
        std::thread::ThreadId,
        Result<std::thread::ThreadId, std::sync::mpsc::RecvTimeoutError>,
    ) {
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        drop(crate::spawn(move || {
            let me = std::thread::current().id();
            let _ = ran_tx.send(me);
            if let Some(also) = also {
                let _ = also.send(me);
            }
        }));
        let ran_on = ran_rx.recv_timeout(Duration::from_secs(10));
        (std::thread::current().id(), ran_on)
    }

    #[test]
    fn a_task_queued_just_before_its_worker_gets_stuck_is_taken_by_a_blind_sleeper() {
        let runtime = crate::Runtime::builder().workers(2).build().unwrap();
        // Only the hog's spawn can tell the other worker to look again.
        let hog = when_every_worker_sleeps_blind(&runtime, || spawn_then_get_stuck(None));
        let (hog_thread, ran_on) = hog.join().unwrap();
        let ran_on = ran_on.expect("the task waited for the stuck worker");
        assert_ne!(ran_on, hog_thread);
    }

    #[test]
    fn a_task_pinned_to_its_spawner_just_before_it_gets_stuck_is_taken_by_a_blind_sleeper() {
        let runtime = crate::Runtime::builder()
            .workers(2)
            .pin_workers(true)
            .build()
            .unwrap();
        let workers = &runtime.shared().workers;
        while workers
            .iter()
            .any(|w| w.cpu.load(Ordering::SeqCst) == NO_CPU)
        {
            std::thread::yield_now();
        }
        if workers[0].cpu.load(Ordering::SeqCst) == workers[1].cpu.load(Ordering::SeqCst) {
            eprintln!("skipped: the workers could not be pinned to two CPUs");
            return;
        }
        let hog = when_every_worker_sleeps_blind(&runtime, || {
            // As after `accept` on this worker's CPU: the task is pinned here.
            let (cpu, here) = with_worker(|w| {
                let shared = &w.unwrap().shared;
                (shared.cpu.load(Ordering::SeqCst), shared.index)
            });
            spawn_near_cpu(cpu);
            let placement = with_worker(|w| w.unwrap().placement());
            spawn_near_cpu(cpu);
            (spawn_then_get_stuck(None), placement, here)
        });
        let ((hog_thread, ran_on), placement, here) = hog.join().unwrap();
        assert!(matches!(placement, Placement::Pinned(i) if i == here));
        let ran_on = ran_on.expect("the task waited for the stuck worker");
        assert_ne!(ran_on, hog_thread);
    }

    #[test]
    fn a_blind_sleeper_woken_for_a_task_passes_the_alert_on_if_it_leaves_for_its_own_work() {
        // Spawns from a plain thread go round robin: `waiter` to worker 0, the hog to 1;
        // worker 2 stays idle. The hog's alert goes to the first blind worker: 0.
        let runtime = crate::Runtime::builder().workers(3).build().unwrap();
        let (wake_waiter, waiter_rx) = crate::sync::channel::<()>();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let (ran_tx, ran_rx) = std::sync::mpsc::channel();
        let waiter = runtime.spawn(move || {
            parked_tx.send(()).unwrap();
            waiter_rx.recv().unwrap();
            // Woken by a message: blocks its thread until the task ran.
            let ran_on = ran_rx.recv_timeout(Duration::from_secs(10));
            (std::thread::current().id(), ran_on)
        });
        parked_rx.recv().unwrap();
        let hog = when_every_worker_sleeps_blind(&runtime, move || {
            // Wakes the waiter's worker with work of its own, then queues a task here:
            // its alert most likely finds that worker still counted blind.
            wake_waiter.send(()).unwrap();
            spawn_then_get_stuck(Some(ran_tx))
        });
        let (hog_thread, ran_on) = hog.join().unwrap();
        let (waiter_thread, waiter_saw) = waiter.join().unwrap();
        let ran_on = ran_on.expect("the task waited for the stuck workers");
        assert_eq!(waiter_saw, Ok(ran_on));
        assert_ne!(ran_on, hog_thread);
        assert_ne!(ran_on, waiter_thread);
    }

    #[test]
    fn a_remote_wake_dropped_unsent_still_queues_its_fiber() {
        let worker = Arc::new(WorkerShared::new(0).unwrap());
        let wakes = vec![
            RemoteWake::new(worker.clone(), 7),
            RemoteWake::new(worker.clone(), 9),
        ];
        // As when a panicking waker unwinds through a list of wakes.
        drop(wakes);
        let queued: Vec<u64> = std::iter::from_fn(|| worker.injector.pop())
            .map(|message| match message {
                Message::Wake(id) => id,
                _ => panic!("not a wake"),
            })
            .collect();
        assert_eq!(queued, [7, 9]);
    }
}
