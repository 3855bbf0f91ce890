//! Where a task spawned by a fiber goes: the spawner's worker, a less loaded sibling, or
//! the worker on the CPU that handles a new connection's packets.

use std::sync::atomic::Ordering;

use super::current::take_near_cpu;
use super::queue::StartQueue;
use super::{Unstarted, Worker, WorkerShared};
use crate::task::NO_CPU;

/// How many more fibers than a sibling a worker may have before a fiber it spawns goes
/// to that sibling (see `Worker::placement`), or before an idle sibling takes the tasks
/// waiting on it (see `Worker::steal`).
pub(super) const BALANCE_SLACK: usize = 1;

/// Where a fiber spawned by a fiber goes; see `Worker::placement`.
pub(crate) enum Placement {
    /// On the spawner's worker, where an idle worker may steal it before it starts.
    Here,
    /// On the worker with this index, for good.
    Pinned(usize),
}

impl Worker {
    /// Where a task spawned by a fiber of this worker should go, given the spawning
    /// fiber's CPU hint (taken from the running fiber, if it left one).
    ///
    /// 1. With a hint (the fiber just accepted a connection, whose packets the kernel
    ///    handled on that CPU), the one worker last seen on that CPU, unless its load is
    ///    above the lowest load seen (this worker's and the candidate sibling's) by more
    ///    than [`BALANCE_SLACK`], or, with pinned workers, by more than a quarter plus
    ///    that: the connection's fiber then runs where its socket buffers are in cache.
    ///    An unpinned worker's CPU is only a guess of where it runs next, and a
    ///    connection's fiber never moves: it is not worth an imbalance there.
    /// 2. Else this worker, unless the candidate sibling's load is lower by more than
    ///    [`BALANCE_SLACK`] and either this worker is busy (fibers of its own wait in its
    ///    run queue, not only tasks to start) or the task serves a connection just
    ///    accepted (the fiber left a CPU hint: long-lived, it talks to its socket, not to
    ///    its spawner). The candidate is the less loaded of two siblings picked at
    ///    random, or of all siblings with three workers or fewer, so that a spawn costs
    ///    the same however many workers there are. Spawning here is cheapest (no
    ///    cross-thread traffic), and on a worker that is not busy the child runs within a
    ///    few turns: its parent parks on `join`, or talks to it over a channel, and the
    ///    two then talk on one thread. An idle sibling takes the tasks that wait here too
    ///    long (see `Worker::steal`). But a busy worker never steals, so long-lived
    ///    fibers spawned by one fiber while the workers are busy spread only by this
    ///    choice.
    #[inline]
    pub(crate) fn placement(&self) -> Placement {
        let workers = &self.runtime.workers;
        let n = workers.len();
        if n < 2 {
            return Placement::Here;
        }
        let near_cpu = take_near_cpu();
        // A fiber spawned right after `accept` serves a connection: long-lived, and talks
        // to its socket, not to its spawner. Others often talk to their spawner first.
        let connection = near_cpu != NO_CPU;
        // Neither a connection nor a busy worker: here, whatever the loads. Decided
        // before reading a sibling's load, whose cache line that sibling writes at each
        // of its fibers' starts and ends: a burst of spawns would fetch it every time.
        if !connection && !self.queue.borrow().has_fibers() {
            return Placement::Here;
        }
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
        // Pinned workers stay on their CPU: a connection is worth some imbalance to run
        // where its packets are. Unpinned ones move, and a connection stays on the
        // worker it starts on for good: balance comes first.
        let near_slack = if self.runtime.pinned { least / 4 } else { 0 };
        if connection
            && let Some(near) = self.worker_on_cpu(near_cpu)
            && load(near) <= least + near_slack + BALANCE_SLACK
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
    pub(super) fn worker_on_cpu(&self, cpu: usize) -> Option<&WorkerShared> {
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
    pub(super) fn next_random(&self) -> u32 {
        let mut x = self.random.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.random.set(x);
        x
    }

    /// Puts a task on this worker's spawn queue, with its Start entry in the run queue. Wakes
    /// a sleeping worker to steal it when this worker already has a backlog.
    #[inline]
    pub(crate) fn place(&self, task: Unstarted) {
        if self.runtime.workers.len() == 1 {
            return self.place_local(task); // nobody to steal it
        }
        self.shared
            .push_task(&self.runtime, StartQueue::Spawns, task);
        self.mark_start(StartQueue::Spawns);
    }

    /// Puts a task that was chosen to start on this worker on its pinned queue (stolen
    /// only if this worker gets stuck), with its Start entry in the run queue.
    pub(crate) fn place_pinned(&self, task: Unstarted) {
        if self.runtime.workers.len() == 1 {
            return self.place_local(task);
        }
        self.shared
            .push_task(&self.runtime, StartQueue::Pinned, task);
        self.mark_start(StartQueue::Pinned);
    }

    /// Queues the start of the next task of `queue`.
    #[inline(always)]
    pub(super) fn mark_start(&self, queue: StartQueue) {
        self.queue.borrow_mut().push_start(queue);
        self.publish_load();
    }

    /// Puts a task on this worker's own spawn queue, which no other worker can reach,
    /// with its Start entry in the run queue. Only for a runtime with one worker.
    #[inline]
    pub(super) fn place_local(&self, task: Unstarted) {
        self.local_spawns.borrow_mut().push_back(task);
        self.mark_start(StartQueue::Local);
    }
}
