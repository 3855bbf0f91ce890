//! Handles on green's concurrent state machines for the loom models in `tests/loom_*.rs`;
//! built only with `--cfg loom`, and usable only inside `loom::model`.
//!
//! Fibers cannot run under loom (their switch is assembly), so a model plays a fiber's
//! part itself, one step at a time: each method here is one call of the production code
//! (`State`'s transitions, `Header::wake`, `JoinCell`'s completion and registration,
//! `WorkerShared`'s send), named after it, with nothing of the protocol written again.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use crate::JoinHandle;
use crate::loom::lock;
use crate::loom::sync::atomic::Ordering;
use crate::loom::sync::{Mutex, Notify};
use crate::task::join::{DONE, Registered};
use crate::task::{BlockedFiber, Schedule, Task, TaskRef, Waiter};
use crate::worker::WorkerShared;

/// The closure type of a model's tasks, which never run one.
type Body = fn() -> u32;

/// A new task with fiber id `id`: the reference its fiber holds, and its `JoinHandle`.
pub fn task(id: u64) -> (Fiber, Handle) {
    let (handle, task) = Task::<u32, Body>::spawned(None);
    // As `Worker::start_fiber`, before the fiber can make a waker.
    task.header.id.store(id, Ordering::Relaxed);
    (Fiber(task), Handle(handle))
}

/// A task as its fiber and its wakers reach it: the header's state words and the join
/// cell's completion.
pub struct Fiber(TaskRef<u32, Body>);

impl std::fmt::Debug for Fiber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Fiber").finish_non_exhaustive()
    }
}

impl Fiber {
    /// `SchedulerCell::set_once`: the fiber, before its first park, names the model
    /// scheduler `queue` as its own.
    pub fn lives_on(&self, queue: &Arc<Queue>) {
        let queue = queue.clone();
        self.0.header.scheduler.set_once(|| queue);
    }

    /// `SchedulerCell::set_once` with a real worker's shared part as the scheduler.
    pub fn lives_on_worker(&self, worker: &Worker) {
        let shared = worker.0.clone();
        self.0.header.scheduler.set_once(|| shared);
    }

    /// `State::transition_to_parked`: whether the fiber must suspend.
    pub fn park(&self) -> bool {
        self.0.header.state.transition_to_parked()
    }

    /// `State::reset_after_park`.
    pub fn reset_after_park(&self) {
        self.0.header.state.reset_after_park();
    }

    /// `State::reset_after_park_locked`.
    pub fn reset_after_park_locked(&self) {
        self.0.header.state.reset_after_park_locked();
    }

    /// `Header::wake`, as the task's waker does it.
    pub fn wake(&self) {
        self.0.header.wake();
    }

    /// `State::cancel_pending`.
    pub fn cancel_pending(&self) -> bool {
        self.0.header.state.cancel_pending()
    }

    /// `State::cancel_delivered`.
    pub fn cancel_delivered(&self) {
        self.0.header.state.cancel_delivered();
    }

    /// `JoinCell::complete` with `value`, as the fiber's closure does when it returns.
    pub fn complete(&self, value: u32) {
        self.0.join.complete(Ok(value));
    }

    /// The fiber as a wait list names it (`Current::blocked`).
    fn blocked(&self) -> BlockedFiber {
        BlockedFiber::new(self.0.header_ptr())
    }
}

/// A task's `JoinHandle`, as a joiner uses it.
#[derive(Debug)]
pub struct Handle(JoinHandle<u32>);

impl Handle {
    /// `JoinCell::load_state`.
    pub fn join_state(&self) -> u8 {
        self.0.join_cell().load_state()
    }

    /// Whether `state` (from `join_state`) has the result.
    pub fn done(state: u8) -> bool {
        state & DONE != 0
    }

    /// `JoinCell::is_done`.
    pub fn is_done(&self) -> bool {
        self.0.join_cell().is_done()
    }

    /// `JoinCell::direct`: set while the joiner runs the task nested (`Worker::run_next_now`).
    pub fn direct(&self) -> &AtomicBool {
        self.0.join_cell().direct()
    }

    /// `JoinCell::register` of the fiber `joiner`, as `JoinHandle::join` does in a fiber:
    /// `None` if the result came meanwhile. The joiner must keep the registration until
    /// it leaves `join` (its drop is `Registered::drop`).
    pub fn register<'a>(&'a self, state: u8, joiner: &Fiber) -> Option<Registration<'a>> {
        let cell = self.0.join_cell();
        let fiber = joiner.blocked();
        // SAFETY: this is the cell's JoinHandle; the fiber's registration lives in the
        // returned guard, which waits for the completer as `join` does.
        unsafe { cell.register(state, || Waiter::Fiber(fiber)) }.then(|| Registration {
            _registered: Registered(cell),
        })
    }

    /// `JoinHandle::abort`.
    pub fn abort(&self) {
        self.0.abort();
    }

    /// The result (`JoinHandle::take`), once `is_done`.
    pub fn take(&mut self) -> Option<u32> {
        self.0.take().ok()
    }
}

/// A joiner's registration in a join cell; dropping it is `Registered::drop`.
#[allow(missing_debug_implementations)]
pub struct Registration<'a> {
    /// Held for its drop.
    _registered: Registered<'a, u32>,
}

/// A stand-in for the worker of the model's fibers, for the models of the state word: a
/// wake from any thread (`Schedule::schedule_remote`) lands in a queue and rings a bell.
#[derive(Debug)]
pub struct Queue {
    /// Fiber ids scheduled and not taken yet.
    ids: Mutex<VecDeque<u64>>,
    /// Rung at each wake.
    bell: Notify,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Arc<Queue> {
        Arc::new(Queue {
            ids: Mutex::new(VecDeque::new()),
            bell: Notify::new(),
        })
    }

    /// The next fiber scheduled, waiting for one if need be: where a suspended fiber
    /// gets control back.
    pub fn next(&self) -> u64 {
        loop {
            if let Some(id) = lock(&self.ids).pop_front() {
                return id;
            }
            self.bell.wait();
        }
    }

    /// The next fiber scheduled, if any.
    pub fn try_next(&self) -> Option<u64> {
        lock(&self.ids).pop_front()
    }
}

impl Schedule for Queue {
    fn schedule_here(&self, _id: u64) -> bool {
        false
    }

    fn schedule_remote(&self, id: u64) {
        lock(&self.ids).push_back(id);
        self.bell.notify();
    }
}

/// A real worker's shared part (`WorkerShared`: its injector and sleep flag), for the
/// model of wakes across threads.
pub struct Worker(Arc<WorkerShared>);

impl Default for Worker {
    fn default() -> Worker {
        Worker::new()
    }
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker").finish_non_exhaustive()
    }
}

impl Worker {
    /// A worker's shared part, as `Runtime::new` makes it.
    pub fn new() -> Worker {
        let shared = WorkerShared::new(0).expect("a reactor");
        // loom lets a SeqCst load read any store that no newer SeqCst store follows, and
        // an atomic's initial value counts as no SeqCst store: write it once more, so that
        // the sleep flag's SeqCst loads and stores form one order, as they do in the
        // memory model (see loom's README, "SeqCst accesses").
        shared.sleeping.store(false, Ordering::SeqCst);
        Worker(Arc::new(shared))
    }

    /// The next wake in the injector (the worker loop's `drain_messages`).
    pub fn take_wake(&self) -> Option<u64> {
        self.0.take_wake()
    }

    /// Whether a message waits (the injector's part of `Worker::has_work`).
    pub fn has_messages(&self) -> bool {
        !self.0.injector.is_empty()
    }

    /// `WorkerShared::sleeping`, which `Worker::wait` sets before its last look for work
    /// and clears when it wakes.
    pub fn sleeping(&self) -> &crate::loom::sync::atomic::AtomicBool {
        &self.0.sleeping
    }

    /// Sleeps until notified (`notify_if_sleeping`), as `Worker::wait` does in the reactor.
    pub fn sleep(&self) {
        self.0.bell.wait();
    }
}
