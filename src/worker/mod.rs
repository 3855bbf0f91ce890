//! A worker: one OS thread, its fibers, its run queue and its reactor.
//!
//! ```text
//!   spawn in a fiber ──► own spawn queue (stealable) + a Start entry in the run queue,
//!                        or, if a sibling's load is lower (or the task should run near
//!                        a CPU), that sibling's pinned queue + a StartPinned message
//!   spawn from outside ──► some worker's spawn queue (round robin) + a Start message
//!   wake on this thread ──► local queue          wake from elsewhere ──► injector
//!                                                (+ Poller::notify if the worker sleeps)
//!   loop:
//!     1. turn the injector's messages into entries of the run queue
//!     2. pop the run queue (FIFO, so fibers take turns):
//!          Fiber(id)   -> resume it
//!          Start(q)    -> create the fiber of the next task in queue q, resume it
//!        every 64 resumes, poll the reactor without blocking so that I/O cannot starve
//!     3. nothing to run: steal tasks that have not started from a sibling's spawn queue
//!        (if that queue lags: the sibling ran 16 fibers while tasks waited there) or from
//!        either of its queues (if it has been stuck in one fiber for 1 ms), while the
//!        sibling has more than one fiber more than this worker (stuck 10 ms, it may be
//!        left lighter by 1; 20 ms, by 3; 30 ms, by 7; 0.1 s, by 1,023):
//!        from the spawn queue, half the difference of the loads (at most 32) at once,
//!        the first started now, the others queued here, still stealable; failing that,
//!        spin up to 10 µs if that pays (a sibling is awake, fewer than half
//!        the workers spin, the OS has not preempted this thread lately), then wait in
//!        the reactor for an event, a timer or a message, and while a sibling is awake,
//!        at most a few milliseconds: it may queue a task and get stuck before starting it
//! ```
//!
//! # Fairness
//!
//! The run queue is FIFO: a fiber made runnable (woken, or yielding) runs after one turn
//! of each fiber queued before it. While fibers keep the worker busy, the reactor is
//! polled without blocking every `REACT_EVERY` (64) resumes, so a fiber whose socket or
//! timer became ready is queued within 64 resumes, then waits its turn: at most 64
//! resumes plus one turn of each runnable fiber. A turn ends when the fiber suspends, or
//! before its 129th I/O operation of the turn (`IO_BUDGET`, see `spend_io_budget`): a
//! fiber whose sockets are always ready yields then. A poll in `await_blocking` after
//! which the future had woken itself counts as one: a future that keeps waking itself
//! (an async `yield_now` in a loop) yields too. A fiber that computes without
//! suspending holds its worker for as long as it runs (see `Builder::stall_warning`).
//!
//! One shortcut: a fiber that joins a task which the loop would start next anyway (the
//! run queue holds only that task's Start entry, no message waits) creates the task's
//! fiber and resumes it itself, nested: the task runs on its own stack as usual, and
//! control comes back to the joiner when it finishes, parks or yields, in the order the
//! loop would have produced, with two switches, two passes of the loop, a park and a
//! wake less (see `Worker::run_next_now`).
//!
//! Tasks wait to start in shared queues, not in the injector, so that a sibling can take
//! them even from a worker that is stuck and reads no messages. Each is a deque under a
//! lock (`queue::TaskQueue`), which keeps its buffer: no allocation per task, and none
//! freed by a thief into the spawner's allocator arena. A runtime with one worker
//! has nobody to steal for: its own spawns go to a plain `VecDeque`. In the run queue,
//! consecutive starts of one queue share an entry with a count: a fiber that spawns in
//! a loop grows no buffer there, and once a start finds its queue empty (siblings took
//! the tasks), the rest of its run is dropped at once.
//!
//! Only tasks that have not started move between workers. A started fiber stays on its
//! worker for good: its stack may hold addresses of the thread's thread-local variables
//! (LLVM caches them across calls), so resuming it on another thread would be undefined
//! behaviour.
//!
//! Fibers live in a slab; a queue entry is (slot, generation), so a wake for a finished
//! fiber whose slot was reused finds another generation and does nothing.
//!
//! ```text
//!   worker/mod.rs        the loop, resume, the join shortcut, starting fibers
//!   worker/current.rs    the fiber running on this thread: park, yield, panic state
//!   worker/info.rs       names, ids and stack sizes of the fibers that have them
//!   worker/queue.rs      the run queue and its typed entries; the task queues
//!   worker/shared.rs     what other threads touch: injector, task queues, alerts
//!   worker/unstarted.rs  tasks waiting to start, and how they start or are cancelled
//!   worker/placement.rs  where a new task goes
//!   worker/idle.rs       stealing, stuck siblings, spinning and sleeping
//!   worker/shutdown.rs   cancelling every fiber and draining them
//!   worker/dump.rs       a fiber dump: capturing this worker's fibers between turns
//! ```

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::panic::{self, AssertUnwindSafe};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use slab::Slab;

use crate::context::stack;
use crate::fiber::{Fiber, ForcedUnwind, Resume, Suspender};
use crate::task::{CompleteOnDrop, Header, JoinError, NO_CPU, Task, TaskRef};

mod current;
mod dump;
mod idle;
mod info;
mod placement;
mod queue;
mod shared;
mod shutdown;
mod unstarted;

use idle::SiblingView;
use queue::{RunQueue, Runnable, StartQueue};

use current::CURRENT;
pub(crate) use current::{
    Cancelled, Current, current, in_fiber, panicking, spawn_near_cpu, spend_io_budget,
};
pub(crate) use dump::{Answer, DumpRequest, FiberReport, requester_in};
pub(crate) use info::{SpawnOptions, current_stack, current_task};
pub(crate) use placement::Placement;
use shared::Message;
pub(crate) use shared::{RuntimeShared, WorkerShared};
use shutdown::abandon_task;
pub(crate) use unstarted::{Unstarted, check_task_fits};

/// Resumes between two non-blocking polls of the reactor while fibers keep the worker busy.
/// A poll that finds nothing costs one system call (see `Reactor::react_now`).
const REACT_EVERY: u32 = 64;

/// Resumes between two looks at which CPU the worker's thread runs on (each costs a few
/// nanoseconds).
const NOTE_CPU_EVERY: u32 = 16;

/// `WorkerShared::running` when no fiber runs.
pub(crate) const NOT_RUNNING: u64 = u64::MAX;

/// The worker's own state, used only on its thread.
pub(crate) struct Worker {
    /// The runtime: the other workers, configuration.
    pub(crate) runtime: Arc<RuntimeShared>,
    /// What other threads see of this worker.
    pub(crate) shared: Arc<WorkerShared>,
    /// The fibers; one that runs stays in its entry, marked running, and the slab is not
    /// borrowed meanwhile (see `Worker::resume`).
    fibers: RefCell<Slab<Entry>>,
    /// What runs next: fibers by (slot, generation) id, and starts of waiting tasks.
    queue: RefCell<RunQueue>,
    /// Generation given to the next fiber.
    next_generation: Cell<u32>,
    /// Every spawn of a runtime with one worker: nobody can steal them, so a plain queue.
    local_spawns: RefCell<VecDeque<Unstarted>>,
    /// Per worker: what this worker saw of it at its last look (`refresh_siblings`).
    siblings: RefCell<Vec<SiblingView>>,
    /// State of `next_random`; never zero.
    random: Cell<u32>,
    /// `ticks` at the last non-blocking poll of the reactor (see `REACT_EVERY`).
    polled_at: Cell<u64>,
    /// When this worker last looked at its thread's involuntary switches, their count
    /// then, and whether it had grown since the look before (see `Worker::may_spin`).
    contention: Cell<(Instant, libc::c_long, bool)>,
}

/// A fiber in the slab.
struct Entry {
    /// The fiber; marked running while it runs (see `Fiber::begin_resume`).
    fiber: Fiber<()>,
    /// Its generation; queue entries with another generation are stale.
    generation: u32,
    /// Its task header, kept alive by the fiber's closure for as long as the fiber lives.
    header: *const Header,
    /// Resolves the task as cancelled without the fiber, for a fiber abandoned at a
    /// shutdown's deadline (see `Worker::abandon_fibers`).
    abandon: unsafe fn(*const Header),
    /// Whether the fiber is listed with a name, an id or a stack size of its own (see
    /// `info`), to be unlisted when it ends.
    listed: bool,
}

thread_local! {
    /// The worker whose loop runs on this thread, null elsewhere.
    static WORKER: Cell<*const Worker> = const { Cell::new(ptr::null()) };
}

/// Calls `f` with the worker running on this thread, if any.
#[inline]
pub(crate) fn with_worker<R>(f: impl FnOnce(Option<&Worker>) -> R) -> R {
    let worker = WORKER.with(Cell::get);
    // A non-null WORKER is set and cleared by the loop's `OnThisThread` guard, which lives
    // in `Worker::run`'s frame; shutdown ends every fiber, or abandons it unresumable,
    // before `run` returns.
    // SAFETY: so it points at the worker of this thread, alive for every call made from
    // its loop, fibers included.
    f(unsafe { worker.as_ref() })
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
            queue: RefCell::new(RunQueue::default()),
            next_generation: Cell::new(0),
            local_spawns: RefCell::new(VecDeque::new()),
            siblings: RefCell::new(vec![SiblingView::new(Instant::now()); n]),
            polled_at: Cell::new(0),
            contention: Cell::new((Instant::now(), 0, false)),
            random: Cell::new(seed),
        }
    }

    /// Publishes this worker's load (fibers + tasks waiting to start) for placement.
    #[inline(always)]
    fn publish_load(&self) {
        let load = self.fibers.borrow().len() + self.queue.borrow().starts();
        self.shared.load.store(load, Ordering::Relaxed);
    }

    /// Records which CPU this worker's thread runs on (a read of the thread's `rseq`
    /// area in glibc, no system call).
    fn note_cpu(&self) {
        let cpu = crate::sys::current_cpu().unwrap_or(NO_CPU);
        self.shared.cpu.store(cpu, Ordering::Relaxed);
    }

    /// Runs the scheduler until shutdown, then unwinds every fiber.
    ///
    /// User code that runs on the loop itself, outside fibers (wakers the reactor wakes,
    /// destructors of tasks that never started), has its panics caught and reported, and
    /// the loop goes on. A panic that escapes the loop anyway is a bug of green's: the
    /// worker's fibers can then never be unwound, so it aborts the process with a
    /// message, as std does for a panic during a panic.
    ///
    /// Returns whether fibers were abandoned at a shutdown's deadline: the thread must
    /// then never exit (see `Worker::abandon_fibers`).
    #[must_use = "a thread whose worker abandoned fibers must never exit"]
    pub(crate) fn run(&self) -> bool {
        let mut on_this_thread = OnThisThread::enter(self);
        self.note_cpu();
        let switches = crate::sys::involuntary_switches().unwrap_or(0);
        self.contention.set((Instant::now(), switches, false));
        loop {
            // 1. Messages from other threads.
            self.take_messages();
            if self.runtime.shutdown.load(Ordering::Acquire) {
                break;
            }
            // 2. The next fiber, in FIFO order.
            let next = self.queue.borrow_mut().pop();
            let id = match next {
                Some(Runnable::Start(queue)) => self.start_marked(self.take_marked(queue)),
                Some(Runnable::Fiber(id)) => Some(id),
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
        let abandoned = self.shut_down();
        on_this_thread.finished = true;
        abandoned
    }

    /// Moves wakes and start messages from the injector into the run queue.
    // The check inlined into the loop, the rest out of line: most passes find nothing.
    #[inline(always)]
    fn take_messages(&self) {
        // `pop` on an empty queue runs a SeqCst fence; `is_empty` is two loads. A message
        // that arrives just after this check is taken on the next pass, and `wait` checks
        // `has_work` again before sleeping.
        if !self.shared.injector.is_empty() {
            self.drain_messages();
        }
    }

    #[inline(never)]
    fn drain_messages(&self) {
        while let Some(message) = self.shared.injector.pop() {
            match message {
                Message::Wake(id) => self.queue.borrow_mut().push_fiber(id),
                Message::Start => self.mark_start(StartQueue::Spawns),
                Message::StartPinned => self.mark_start(StartQueue::Pinned),
                Message::Dump(order) => self.answer_dump(order),
            }
        }
    }

    /// Resumes the fiber `id` if it still exists, and removes it if it finished. Called by
    /// the loop, or nested by a fiber (`run_next_now`): runs no user code but the fiber.
    // Inlined: out of line, its call and the saving of the registers its switch clobbers
    // cost ping-pong about 9%.
    #[inline(always)]
    fn resume(&self, id: u64) {
        let (slot, generation) = ((id & 0xFFFF_FFFF) as usize, (id >> 32) as u32);
        // The fiber stays in its entry, marked running; the slab is not borrowed while it
        // runs (a nested start may grow it).
        let (running, header) = {
            let mut fibers = self.fibers.borrow_mut();
            match fibers.get_mut(slot) {
                Some(entry) if entry.generation == generation => match entry.fiber.begin_resume() {
                    Some(running) => (running, entry.header),
                    None => return, // running: nothing to resume
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
            stack_top: running.stack_top(),
        };
        let previous = CURRENT.with(|c| c.replace(current));
        current::new_turn();
        let switched = running.switch();
        CURRENT.with(|c| c.set(previous));
        self.shared.running.store(resumer, Ordering::Relaxed);
        let outcome = self.fibers.borrow_mut()[slot].fiber.end_resume(switched);
        match outcome {
            Resume::Yielded => {}
            // The fiber's closure recorded its result in its task.
            Resume::Finished(()) => self.remove_fiber(id),
            // Only a destructor that panicked after the task completed (its closure's, or a
            // joiner's waker's) gets here: user code, whose payload is user code too.
            Resume::Panicked(payload) => {
                self.remove_fiber(id);
                crate::sys::drop_quietly(payload);
            }
        }
        if ticks.is_multiple_of(NOTE_CPU_EVERY.into()) {
            self.note_cpu();
        }
    }

    /// Removes the finished fiber `id`, whose stack goes back to the pool.
    #[inline(always)]
    fn remove_fiber(&self, id: u64) {
        let entry = self.fibers.borrow_mut().remove((id & 0xFFFF_FFFF) as usize);
        if entry.listed {
            self.unlist(id);
        }
        self.publish_load();
        drop(entry);
    }

    /// Whether `REACT_EVERY` resumes (nested ones included) have passed since the last
    /// non-blocking poll of the reactor.
    fn poll_due(&self) -> bool {
        let ticks = self.shared.ticks.load(Ordering::Relaxed);
        ticks.wrapping_sub(self.polled_at.get()) >= REACT_EVERY.into()
    }

    /// Takes the task that a start entry, just taken from the run queue, stands for: the
    /// next of the queue it names (`None` if a sibling stole it). Finding that queue
    /// empty, drops the starts of it that come next in the run queue: stolen too (see
    /// `RunQueue::discard_starts`), and the loop need not take them one by one.
    fn take_marked(&self, queue: StartQueue) -> Option<Unstarted> {
        let task = match queue {
            StartQueue::Spawns => self.shared.spawns.pop(),
            StartQueue::Pinned => self.shared.pinned.pop(),
            StartQueue::Local => self.local_spawns.borrow_mut().pop_front(),
        };
        if task.is_none() {
            self.queue.borrow_mut().discard_starts(queue);
        }
        task
    }

    /// Creates the fiber of a task taken for a Start entry; returns its id.
    // Inlined: LLVM left it out of line once the fiber dump's code grew the worker, and a
    // spawn and join on one worker then cost 7 more instructions (callgrind).
    #[inline]
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
        let queue = {
            let mut run_queue = self.queue.borrow_mut();
            match run_queue.only_start() {
                Some(queue)
                    if self.shared.injector.is_empty()
                        && !self.poll_due()
                        && !self.runtime.shutdown.load(Ordering::Acquire) =>
                {
                    run_queue.clear();
                    queue
                }
                _ => return false,
            }
        };
        let next = self.take_marked(queue);
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

    /// Creates the fiber for a task on this worker, with the task's `options` if it has
    /// any (its name, its stack size); returns its id. The fiber runs `f` and stores its
    /// result, a panic or a cancellation in the task, whose reference it takes over (no
    /// count changes hands). On failure the task comes back with the error, for the caller
    /// to report; `None` if it was already resolved (cancelled).
    #[allow(clippy::type_complexity)]
    #[inline]
    pub(crate) fn start_fiber<T, B, G>(
        &self,
        task: TaskRef<T, G>,
        closure_size: usize,
        body: B,
        options: Option<Box<SpawnOptions>>,
    ) -> Result<u64, (std::io::Error, Option<TaskRef<T, G>>)>
    where
        B: FnOnce(&Task<T, G>) -> T + 'static,
        T: Send + 'static,
        G: Send + 'static,
    {
        let stack_size = match &options {
            Some(options) => options.stack_size.unwrap_or(self.runtime.stack_size),
            None => self.runtime.stack_size,
        };
        // The fiber's closure holds the task and `body`, and the user's closure (in `body`,
        // or in the task, of `closure_size` bytes) must fit the stack too: check before the
        // task moves into it.
        let size = std::mem::size_of::<(CompleteOnDrop<T, G>, B)>().max(closure_size);
        let align = std::mem::align_of::<(CompleteOnDrop<T, G>, B)>();
        if let Err(error) = check_closure_fits(size, align, stack_size) {
            return Err((error, Some(task)));
        }
        let stack = match stack::take(stack_size) {
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
        let mut fiber = Fiber::for_task(stack, move |_: &Suspender| {
            let guard = guard;
            if guard.0.header.state.cancel_pending() {
                // Aborted (or shut down) first: the guard drops the closure and reports
                // the task cancelled.
                guard.0.header.state.cancel_delivered();
                return;
            }
            let result = match panic::catch_unwind(AssertUnwindSafe(|| body(&guard.0))) {
                Ok(value) => Ok(value),
                Err(mut payload) if payload.is::<ForcedUnwind>() || payload.is::<Cancelled>() => {
                    if let Some(cancelled) = payload.downcast_mut::<Cancelled>() {
                        cancelled.disarmed = true; // the task ends cancelled, as it should
                    }
                    Err(JoinError::cancelled())
                }
                Err(payload) => Err(JoinError::panic(payload)),
            };
            guard.0.join.complete(result);
        })
        // Checked above; should it fail anyway, the dropped closure cancelled the task.
        .map_err(|error| (error, None))?;
        let listed = match options {
            Some(options) => {
                self.list(id, *options, &mut fiber);
                true
            }
            None => false,
        };
        let mut fibers = self.fibers.borrow_mut();
        let key = fibers.insert(Entry {
            fiber,
            generation,
            header,
            abandon: abandon_task::<T, G>,
            listed,
        });
        debug_assert_eq!(key, slot);
        drop(fibers);
        self.publish_load();
        Ok(id)
    }

    /// Creates a fiber for a task, with `options` if it has any, and queues it behind the
    /// runnable ones.
    pub(crate) fn start_queued<T, F, G>(
        &self,
        task: TaskRef<T, G>,
        f: F,
        options: Option<Box<SpawnOptions>>,
    ) -> std::io::Result<()>
    where
        F: FnOnce() -> T + 'static,
        T: Send + 'static,
        G: Send + 'static,
    {
        let size = std::mem::size_of::<F>();
        let id = self
            .start_fiber(task, size, move |_| f(), options)
            .map_err(|(error, _)| error)?;
        self.queue.borrow_mut().push_fiber(id);
        Ok(())
    }
}

/// Checks that a fiber closure of `size` bytes aligned to `align` (with room for its
/// padding) fits a stack of `stack_size` bytes; `InvalidInput` if not.
#[inline(always)]
pub(crate) fn check_closure_fits(
    size: usize,
    align: usize,
    stack_size: usize,
) -> std::io::Result<()> {
    if crate::fiber::closure_fits(size + align, align, stack_size) {
        Ok(())
    } else {
        Err(closure_too_large(size, stack_size))
    }
}

/// The error of `check_closure_fits`.
#[cold]
#[inline(never)]
fn closure_too_large(size: usize, stack_size: usize) -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::InvalidInput,
        format!("a fiber closure of {size} bytes does not fit a stack of {stack_size} bytes"),
    )
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
