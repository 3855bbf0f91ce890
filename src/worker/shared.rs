//! What other threads touch of a worker ([`WorkerShared`]) and of its runtime
//! ([`RuntimeShared`]): the injector for wakes and start messages, the queues of tasks
//! waiting to start, the sleep flags, and the alerts that wake a sleeper for new work.

use std::cell::Cell;
use std::ptr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Instant;

use crossbeam_queue::SegQueue;

use super::dump::DumpOrder;
use super::info::Listed;
use super::queue::{StartQueue, TaskQueue};
use super::{NOT_RUNNING, Unstarted, WORKER};
use crate::blocking::pool::Pool;
use crate::loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use crate::reactor::Reactor;
use crate::sys::lock;
use crate::task::{NO_CPU, Schedule};

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
    /// Answer a fiber dump (see `worker::dump`).
    Dump(DumpOrder),
}

/// The part of a worker other threads use.
pub(crate) struct WorkerShared {
    /// Index among the runtime's workers.
    pub(crate) index: usize,
    /// Wakes and spawns from other threads.
    pub(crate) injector: SegQueue<Message>,
    /// Tasks placed on this worker that have not started; other workers may steal them.
    pub(crate) spawns: TaskQueue,
    /// Tasks another worker chose this worker for (to balance loads, or near a CPU): they
    /// start here unless this worker is stuck in one fiber (see `STUCK_AFTER`).
    pub(super) pinned: TaskQueue,
    /// True while the worker waits in the reactor; a producer that sees it calls `notify`.
    pub(crate) sleeping: AtomicBool,
    /// True while the worker waits in the reactor with no timeout (see `Worker::wait`).
    pub(crate) blind: AtomicBool,
    /// Set once the worker has stopped taking messages.
    pub(super) closed: AtomicBool,
    /// The worker's reactor.
    pub(crate) reactor: Arc<Reactor>,
    /// Under loom, what the models' worker sleeps on instead of the reactor: a notification
    /// from `notify_if_sleeping`, kept until taken, as the reactor's is.
    #[cfg(loom)]
    pub(crate) bell: crate::loom::sync::Notify,
    /// Counts resumes, for the stall monitor.
    pub(crate) ticks: AtomicU64,
    /// Id of the fiber running now, `NOT_RUNNING` between fibers, for the stall monitor.
    pub(crate) running: AtomicU64,
    /// The worker's fibers plus the tasks queued to start on it, for placement. The
    /// worker's thread publishes it with a store (`Worker::publish_load`); a sibling that
    /// pins a task here adds one at once (`send_pinned`), so that the next spawns see it
    /// before the next store corrects the count.
    pub(crate) load: AtomicUsize,
    /// The CPU the worker's thread ran on when it last looked (`NO_CPU` before), for
    /// placing connections near the CPU that receives their packets.
    pub(crate) cpu: AtomicUsize,
    /// The worker's fibers that have a name, an id or a stack size of their own (see
    /// `worker::info`), for the worker, its fibers and the stall monitor.
    pub(super) listed: Listed,
}

impl WorkerShared {
    pub(crate) fn new(index: usize) -> std::io::Result<WorkerShared> {
        Ok(WorkerShared {
            index,
            injector: SegQueue::new(),
            spawns: TaskQueue::default(),
            pinned: TaskQueue::default(),
            sleeping: AtomicBool::new(false),
            blind: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            reactor: Arc::new(Reactor::new()?),
            #[cfg(loom)]
            bell: crate::loom::sync::Notify::new(),
            ticks: AtomicU64::new(0),
            running: AtomicU64::new(NOT_RUNNING),
            load: AtomicUsize::new(0),
            cpu: AtomicUsize::new(NO_CPU),
            listed: Listed::default(),
        })
    }

    /// Sends a message from another thread and wakes the worker if it sleeps.
    ///
    /// Runs no user code: wakes of fibers blocked in `green::sync` come here while the
    /// notifier holds a channel's lock, which a user destructor might take again.
    pub(super) fn send(&self, message: Message) {
        self.injector.push(message);
        self.notify_if_sleeping();
        // Messages that arrive after the worker closed are dropped: plain data, but for a
        // dump order, whose drop answers that the worker has shut down (a lock held
        // briefly, then the dump's requester woken, after it).
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

    /// Queues a task to start on this worker, on its stealable `spawns` or its `pinned`
    /// queue, then alerts a blind sleeper of `runtime`. Every queueing of a task goes
    /// through here: this worker may get stuck in a fiber before it starts the task, and
    /// only a sibling that looks again can then take it (see `Worker::wait`).
    pub(super) fn push_task(&self, runtime: &RuntimeShared, queue: StartQueue, task: Unstarted) {
        match queue {
            StartQueue::Pinned => self.pinned.push(task),
            StartQueue::Spawns | StartQueue::Local => self.spawns.push(task),
        }
        runtime.alert_blind_sleepers(self.index);
    }

    /// Queues a task to start on this worker, from another thread; any worker may steal
    /// it until it starts.
    fn send_spawn(&self, runtime: &RuntimeShared, task: Unstarted) {
        self.push_task(runtime, StartQueue::Spawns, task);
        self.send(Message::Start);
        self.cancel_tasks_if_closed();
    }

    /// Queues a task chosen to start on this worker, from another thread: it is stolen
    /// only if this worker gets stuck in one fiber.
    pub(crate) fn send_pinned(&self, runtime: &RuntimeShared, task: Unstarted) {
        // Counted at once, so that the next spawns see it before this worker takes the
        // message and publishes its load.
        self.load.fetch_add(1, Ordering::Relaxed);
        self.push_task(runtime, StartQueue::Pinned, task);
        self.send(Message::StartPinned);
        self.cancel_tasks_if_closed();
    }

    /// Interrupts the worker's wait in the reactor, if it waits.
    pub(crate) fn notify_if_sleeping(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.reactor.notify();
            #[cfg(loom)]
            self.bell.notify();
        }
    }
}

#[cfg(loom)]
impl WorkerShared {
    /// The next message if it is a wake, for the loom models (`crate::loom::model`), which
    /// send nothing else.
    pub(crate) fn take_wake(&self) -> Option<u64> {
        match self.injector.pop()? {
            Message::Wake(id) => Some(id),
            Message::Start | Message::StartPinned | Message::Dump(_) => None,
        }
    }
}

impl Schedule for WorkerShared {
    /// Queues a fiber on the local queue if called on the worker's own thread.
    #[inline]
    fn schedule_here(&self, id: u64) -> bool {
        let worker = WORKER.with(Cell::get);
        // SAFETY: a non-null WORKER points at the worker running on this thread (see
        // `with_worker`).
        match unsafe { worker.as_ref() } {
            Some(worker) if ptr::eq(&*worker.shared, self) => {
                worker.queue.borrow_mut().push_fiber(id);
                true
            }
            _ => false,
        }
    }

    /// Sends the wake through the injector, and wakes the worker if it sleeps.
    fn schedule_remote(&self, id: u64) {
        self.send(Message::Wake(id));
    }

    /// Both in one call: a wake reaches this through the task's `dyn Schedule`, and the
    /// local case then costs no second call.
    #[inline]
    fn schedule(&self, id: u64) {
        if !self.schedule_here(id) {
            self.schedule_remote(id);
        }
    }
}

/// What every worker of a runtime shares.
pub(crate) struct RuntimeShared {
    /// The workers.
    pub(crate) workers: Vec<Arc<WorkerShared>>,
    /// Round-robin cursor for spawns from outside the runtime.
    next_worker: AtomicUsize,
    /// Workers waiting in their reactor.
    pub(crate) sleepers: AtomicUsize,
    /// Workers waiting in their reactor with no timeout (see `Worker::wait`).
    pub(crate) blind_sleepers: AtomicUsize,
    /// Idle workers spinning before they sleep (see `Worker::may_spin`).
    pub(crate) spinners: AtomicUsize,
    /// Set to stop the workers.
    pub(crate) shutdown: AtomicBool,
    /// When the workers give up on fibers that are still unwinding at shutdown (`None`:
    /// never); written before `shutdown` is set.
    deadline: Mutex<Option<Instant>>,
    /// Fibers the workers abandoned at the shutdown's deadline.
    pub(crate) abandoned: AtomicUsize,
    /// Usable stack size of the runtime's fibers.
    pub(crate) stack_size: usize,
    /// The pool behind `unblock`.
    pub(crate) pool: Arc<Pool>,
    /// Whether each worker was pinned to one CPU (`Builder::pin_workers`): a worker's last
    /// CPU then tells where it runs next, and placement near a CPU can trust it.
    pub(crate) pinned: bool,
}

impl RuntimeShared {
    /// What the workers of a new runtime share: `workers`, whose loops are not started
    /// yet, fibers of `stack_size` bytes, `pool` for `unblock`, and whether the workers
    /// are `pinned` to a CPU each.
    pub(crate) fn new(
        workers: Vec<Arc<WorkerShared>>,
        stack_size: usize,
        pool: Arc<Pool>,
        pinned: bool,
    ) -> RuntimeShared {
        RuntimeShared {
            workers,
            next_worker: AtomicUsize::new(0),
            sleepers: AtomicUsize::new(0),
            blind_sleepers: AtomicUsize::new(0),
            spinners: AtomicUsize::new(0),
            shutdown: AtomicBool::new(false),
            deadline: Mutex::new(None),
            abandoned: AtomicUsize::new(0),
            stack_size,
            pool,
            pinned,
        }
    }

    /// Tells the workers to shut down, giving up on fibers still unwinding at `deadline`.
    pub(crate) fn shut_down(&self, deadline: Option<Instant>) {
        *lock(&self.deadline) = deadline;
        self.shutdown.store(true, Ordering::SeqCst);
        for worker in &self.workers {
            worker.reactor.notify();
        }
    }

    /// The shutdown's deadline (see `RuntimeShared::deadline`), once `shutdown` is set.
    pub(crate) fn deadline(&self) -> Option<Instant> {
        *lock(&self.deadline)
    }

    /// Wakes a worker that sleeps with no timeout, if any, once a task has been queued to
    /// start on worker `placed`: that worker may get stuck in one fiber before it starts
    /// the task, and only a sibling that looks again can then take it (see `Worker::wait`).
    #[inline]
    pub(crate) fn alert_blind_sleepers(&self, placed: usize) {
        // The queue's push ended with a SeqCst fence (`TaskQueue::push`), and a sleeper
        // counts itself here before it reads the queues with SeqCst loads: either it sees
        // the task, or this load sees it.
        if self.blind_sleepers.load(Ordering::SeqCst) > 0 {
            self.wake_a_blind_sleeper(placed);
        }
    }

    #[cold]
    fn wake_a_blind_sleeper(&self, placed: usize) {
        if let Some(worker) = self
            .workers
            .iter()
            .find(|w| w.index != placed && w.blind.load(Ordering::SeqCst))
        {
            worker.notify_if_sleeping();
        }
    }

    /// Queues a task from outside the runtime on the next worker in turn.
    pub(crate) fn place_remote(&self, task: Unstarted) {
        let index = self.next_worker.fetch_add(1, Ordering::Relaxed) % self.workers.len();
        self.workers[index].send_spawn(self, task);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::RemoteWake;

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
