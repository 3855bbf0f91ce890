//! The run queue of a worker: what it runs next, in FIFO order, so that fibers take turns.

use std::collections::VecDeque;

/// Which queue of waiting tasks a start entry takes its task from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum StartQueue {
    /// The worker's shared spawn queue, which idle siblings may steal from.
    Spawns,
    /// The worker's shared queue of tasks placed on it, stolen only if it gets stuck.
    Pinned,
    /// The plain queue of a runtime with one worker, which nobody else reaches.
    Local,
}

/// An entry of the run queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Runnable {
    /// Resume the fiber with this (slot, generation) id (a stale one does nothing).
    Fiber(u64),
    /// Create the fiber of the next task waiting in this queue, and resume it. The task
    /// itself waits in its queue, where a sibling may take it meanwhile.
    Start(StartQueue),
}

/// The run queue, with a count of its start entries: tasks placed here that have not
/// started (or were stolen since), which count in the worker's load.
#[derive(Debug, Default)]
pub(super) struct RunQueue {
    /// The entries, oldest first.
    entries: VecDeque<Runnable>,
    /// How many entries are `Start`s.
    starts: usize,
}

impl RunQueue {
    /// Queues a fiber behind the others.
    #[inline]
    pub(super) fn push_fiber(&mut self, id: u64) {
        self.entries.push_back(Runnable::Fiber(id));
    }

    /// Queues the start of the next task of `queue`.
    #[inline]
    pub(super) fn push_start(&mut self, queue: StartQueue) {
        self.entries.push_back(Runnable::Start(queue));
        self.starts += 1;
    }

    /// Takes the oldest entry.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<Runnable> {
        let next = self.entries.pop_front();
        if let Some(Runnable::Start(_)) = next {
            self.starts -= 1;
        }
        next
    }

    /// The start entry that the queue holds alone, if so: the one task the loop would
    /// start next, with nothing queued behind it.
    #[inline]
    pub(super) fn only_start(&self) -> Option<StartQueue> {
        match (self.entries.len(), self.entries.front()) {
            (1, Some(&Runnable::Start(queue))) => Some(queue),
            _ => None,
        }
    }

    /// Whether a fiber (not a start) waits in the queue: this worker has runnable work
    /// of its own besides the tasks it was given to start.
    #[inline]
    pub(super) fn has_fibers(&self) -> bool {
        self.entries.len() > self.starts
    }

    /// How many start entries are queued.
    #[inline]
    pub(super) fn starts(&self) -> usize {
        self.starts
    }

    /// Whether nothing is queued.
    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry.
    pub(super) fn clear(&mut self) {
        self.entries.clear();
        self.starts = 0;
    }
}
