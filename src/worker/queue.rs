//! The run queue of a worker: what it runs next, in FIFO order, so that fibers take turns;
//! and the queues of tasks waiting to start, which sibling workers may steal from.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering, fence};

use super::Unstarted;
use crate::sys::lock;

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
///
/// Consecutive starts of one queue are kept as one entry with a count: a fiber that
/// spawns thousands of tasks in a loop adds one entry, not thousands (no buffer grown
/// and copied on the spawner's path), and the starts of tasks that siblings stole are
/// dropped together (see [`RunQueue::discard_starts`]).
#[derive(Debug, Default)]
pub(super) struct RunQueue {
    /// The entries, oldest first.
    entries: VecDeque<Entry>,
    /// How many starts the entries hold, counts included.
    starts: usize,
    /// How many entries are runs of starts (the others are fibers).
    runs: usize,
}

/// An entry of the run queue as stored: a fiber, or a run of starts of one queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    /// See [`Runnable::Fiber`].
    Fiber(u64),
    /// This many (one or more) [`Runnable::Start`]s of this queue in a row.
    Starts(StartQueue, usize),
}

impl RunQueue {
    /// Queues a fiber behind the others.
    #[inline]
    pub(super) fn push_fiber(&mut self, id: u64) {
        self.entries.push_back(Entry::Fiber(id));
    }

    /// Queues the start of the next task of `queue`.
    #[inline]
    pub(super) fn push_start(&mut self, queue: StartQueue) {
        match self.entries.back_mut() {
            Some(Entry::Starts(last, count)) if *last == queue => *count += 1,
            _ => {
                self.entries.push_back(Entry::Starts(queue, 1));
                self.runs += 1;
            }
        }
        self.starts += 1;
    }

    /// Takes the oldest entry.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<Runnable> {
        Some(match self.entries.pop_front()? {
            Entry::Fiber(id) => Runnable::Fiber(id),
            Entry::Starts(queue, count) => {
                if count > 1 {
                    self.entries.push_front(Entry::Starts(queue, count - 1));
                } else {
                    self.runs -= 1;
                }
                self.starts -= 1;
                Runnable::Start(queue)
            }
        })
    }

    /// Drops the run of starts of `queue` that comes next, after a start of it found that
    /// queue empty: siblings took their tasks. A start takes whichever task of its queue
    /// comes first, so with the queue empty every start of it left here would find
    /// nothing, and a task queued later brings a start of its own, queued behind. Returns
    /// how many it dropped.
    #[inline]
    pub(super) fn discard_starts(&mut self, queue: StartQueue) -> usize {
        match self.entries.front() {
            Some(&Entry::Starts(front, count)) if front == queue => {
                self.entries.pop_front();
                self.starts -= count;
                self.runs -= 1;
                count
            }
            _ => 0,
        }
    }

    /// The start entry that the queue holds alone, if so: the one task the loop would
    /// start next, with nothing queued behind it.
    #[inline]
    pub(super) fn only_start(&self) -> Option<StartQueue> {
        match (self.entries.len(), self.entries.front()) {
            (1, Some(&Entry::Starts(queue, 1))) => Some(queue),
            _ => None,
        }
    }

    /// Whether a fiber (not a start) waits in the queue: this worker has runnable work
    /// of its own besides the tasks it was given to start.
    #[inline]
    pub(super) fn has_fibers(&self) -> bool {
        self.entries.len() > self.runs
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
        self.runs = 0;
    }
}

/// A queue of tasks waiting to start on a worker, which its siblings may steal from: a
/// deque under a lock, its length mirrored in an atomic for the looks that must not take
/// the lock (an idle sibling's, the sleepers' protocol).
///
/// Not a lock-free segmented queue: that one allocates a block every few dozen tasks, and
/// whoever pops a block's last task frees it. A sibling that steals the tasks of a
/// spawning fiber then frees into the spawner's allocator arena while the spawner
/// allocates from it, and the two threads contend for the arena's lock: about 1,100
/// contended `futex` calls per 30,000 tasks spawned by one fiber, half of them stolen.
/// The deque keeps its buffer instead (see [`TaskQueue::trim`]).
///
/// Its own lock and atomics are std's even under loom, as the segmented queue's were: the
/// models do not explore it.
#[derive(Default)]
pub(crate) struct TaskQueue {
    /// The tasks, oldest first. Held only to move a task in or out: no user code (a
    /// task's drop) runs under it.
    tasks: Mutex<VecDeque<Unstarted>>,
    /// `tasks.len()`, stored under the lock.
    len: AtomicUsize,
}

/// A queue's buffer is shrunk, when it is empty, once it holds room for more tasks than
/// this (see [`TaskQueue::trim`]).
const KEEP_ROOM: usize = 16 * 1024;

/// The most tasks one steal takes (see [`TaskQueue::steal_into`]).
pub(crate) const STEAL_BATCH: usize = 32;

impl TaskQueue {
    /// Queues a task behind the others.
    ///
    /// Ends with a SeqCst fence, after the length's store: a spawner's next step reads
    /// the count of blind sleepers (`RuntimeShared::alert_blind_sleepers`), and a sleeper
    /// counts itself there (a SeqCst read-modify-write) before it looks at the queues
    /// ([`TaskQueue::is_empty`], SeqCst): either the sleeper sees the task, or the
    /// spawner sees the sleeper.
    #[inline]
    pub(crate) fn push(&self, task: Unstarted) {
        let mut tasks = lock(&self.tasks);
        tasks.push_back(task);
        self.len.store(tasks.len(), Ordering::Relaxed);
        drop(tasks);
        fence(Ordering::SeqCst);
    }

    /// Takes the oldest task.
    #[inline]
    pub(crate) fn pop(&self) -> Option<Unstarted> {
        let mut tasks = lock(&self.tasks);
        let task = tasks.pop_front();
        self.len.store(tasks.len(), Ordering::Relaxed);
        task
    }

    /// Takes up to `max` of the oldest tasks (at most [`STEAL_BATCH`]): the first is
    /// returned, the others are queued on `dest` (the thief's own queue), in order;
    /// returns how many went there. One lock of each queue for the batch, not one of the
    /// victim's per task: the victim's spawner pushes to the same lock meanwhile.
    pub(crate) fn steal_into(&self, dest: &TaskQueue, max: usize) -> (Option<Unstarted>, usize) {
        let mut taken: [Option<Unstarted>; STEAL_BATCH] = std::array::from_fn(|_| None);
        let count = {
            let mut tasks = lock(&self.tasks);
            let count = max.min(STEAL_BATCH).min(tasks.len());
            for (slot, task) in taken.iter_mut().zip(tasks.drain(..count)) {
                *slot = Some(task);
            }
            self.len.store(tasks.len(), Ordering::Relaxed);
            count
        };
        let first = taken[0].take();
        if count > 1 {
            let mut tasks = lock(&dest.tasks);
            tasks.extend(taken[1..count].iter_mut().filter_map(Option::take));
            dest.len.store(tasks.len(), Ordering::Relaxed);
            drop(tasks);
            fence(Ordering::SeqCst);
        }
        (first, count.saturating_sub(1))
    }

    /// Whether no task waits, as of the last push or pop (SeqCst: see `push`).
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.len.load(Ordering::SeqCst) == 0
    }

    /// Gives back the buffer of an empty queue that grew beyond `KEEP_ROOM` tasks (a
    /// burst of spawns), keeping room for `KEEP_ROOM`: for a worker about to sleep.
    /// Smaller buffers stay, so that a steady stream of spawns never regrows one.
    pub(crate) fn trim(&self) {
        let mut tasks = lock(&self.tasks);
        if tasks.is_empty() && tasks.capacity() > KEEP_ROOM {
            tasks.shrink_to(KEEP_ROOM);
        }
    }

    /// How many tasks the buffer has room for, for tests.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        lock(&self.tasks).capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::task::Task;

    /// A task that nobody joins, returning `n`.
    fn task(n: usize) -> (crate::JoinHandle<usize>, Unstarted) {
        let (handle, task) = Task::spawned(Some(move || n));
        (handle, Unstarted::new(task, None))
    }

    #[test]
    fn a_run_queue_keeps_fifo_order_with_starts_in_runs() {
        let mut queue = RunQueue::default();
        queue.push_start(StartQueue::Spawns);
        queue.push_start(StartQueue::Spawns);
        queue.push_fiber(7);
        queue.push_start(StartQueue::Spawns);
        queue.push_start(StartQueue::Pinned);
        queue.push_start(StartQueue::Pinned);
        assert_eq!(queue.entries.len(), 4, "runs of one queue share an entry");
        assert_eq!((queue.starts(), queue.has_fibers()), (5, true));
        let order: Vec<_> = std::iter::from_fn(|| queue.pop()).collect();
        use {Runnable::*, StartQueue::*};
        let expected = [
            Start(Spawns),
            Start(Spawns),
            Fiber(7),
            Start(Spawns),
            Start(Pinned),
            Start(Pinned),
        ];
        assert_eq!(order, expected);
        assert_eq!((queue.starts(), queue.has_fibers()), (0, false));
        assert!(queue.is_empty());
    }

    #[test]
    fn only_a_single_start_alone_is_the_only_start() {
        let mut queue = RunQueue::default();
        assert_eq!(queue.only_start(), None);
        queue.push_start(StartQueue::Spawns);
        assert_eq!(queue.only_start(), Some(StartQueue::Spawns));
        queue.push_start(StartQueue::Spawns);
        assert_eq!(queue.only_start(), None, "two starts in one entry");
        queue.pop();
        assert_eq!(queue.only_start(), Some(StartQueue::Spawns));
        queue.push_fiber(1);
        assert_eq!(queue.only_start(), None);
    }

    #[test]
    fn discarding_starts_drops_the_run_at_the_front_only_if_it_is_of_that_queue() {
        let mut queue = RunQueue::default();
        for _ in 0..1000 {
            queue.push_start(StartQueue::Spawns);
        }
        queue.push_fiber(3);
        queue.push_start(StartQueue::Spawns);
        assert_eq!(queue.pop(), Some(Runnable::Start(StartQueue::Spawns)));
        assert_eq!(queue.discard_starts(StartQueue::Pinned), 0);
        assert_eq!(queue.discard_starts(StartQueue::Spawns), 999);
        assert_eq!(queue.starts(), 1);
        assert_eq!(queue.discard_starts(StartQueue::Spawns), 0, "a fiber first");
        assert_eq!(queue.pop(), Some(Runnable::Fiber(3)));
        assert_eq!(queue.pop(), Some(Runnable::Start(StartQueue::Spawns)));
        assert_eq!(queue.pop(), None);
    }

    #[test]
    fn a_task_queue_is_fifo_and_mirrors_its_length() {
        let queue = TaskQueue::default();
        assert!(queue.is_empty());
        let (_a, first) = task(1);
        let (_b, second) = task(2);
        let first_address = first.address();
        queue.push(first);
        queue.push(second);
        assert!(!queue.is_empty());
        assert_eq!(queue.pop().map(|t| t.address()), Some(first_address));
        assert!(!queue.is_empty());
        assert!(queue.pop().is_some());
        assert!(queue.is_empty());
        assert!(queue.pop().is_none());
    }

    #[test]
    fn a_steal_takes_the_oldest_tasks_returns_the_first_and_queues_the_rest_in_order() {
        let (victim, thief) = (TaskQueue::default(), TaskQueue::default());
        let mut handles = Vec::new();
        let mut addresses = Vec::new();
        for n in 0..STEAL_BATCH + 8 {
            let (handle, task) = task(n);
            handles.push(handle);
            addresses.push(task.address());
            victim.push(task);
        }
        let (first, queued) = victim.steal_into(&thief, 3);
        assert_eq!(first.map(|t| t.address()), Some(addresses[0]));
        assert_eq!(queued, 2);
        assert_eq!(thief.pop().map(|t| t.address()), Some(addresses[1]));
        assert_eq!(thief.pop().map(|t| t.address()), Some(addresses[2]));
        assert!(thief.is_empty());
        // At most STEAL_BATCH, whatever is asked.
        let (first, queued) = victim.steal_into(&thief, usize::MAX);
        assert_eq!(first.map(|t| t.address()), Some(addresses[3]));
        assert_eq!(queued, STEAL_BATCH - 1);
        // Then what is left, however little.
        let (first, queued) = victim.steal_into(&thief, usize::MAX);
        assert_eq!(first.map(|t| t.address()), Some(addresses[3 + STEAL_BATCH]));
        assert_eq!(queued, 4);
        assert!(victim.is_empty());
        assert_eq!(victim.steal_into(&thief, 5).1, 0);
    }

    #[test]
    fn trim_gives_back_a_burst_s_buffer_only_once_the_queue_is_empty() {
        let queue = TaskQueue::default();
        let mut handles = Vec::new();
        for n in 0..KEEP_ROOM * 2 {
            let (handle, task) = task(n);
            handles.push(handle);
            queue.push(task);
        }
        let grown = queue.capacity();
        assert!(grown >= KEEP_ROOM * 2);
        queue.trim();
        assert_eq!(queue.capacity(), grown, "not empty: kept");
        while queue.pop().is_some() {}
        queue.trim();
        assert!(queue.capacity() < grown && queue.capacity() >= KEEP_ROOM);
        // The tasks, dropped unstarted, resolved (to cancelled).
        assert!(handles.iter().all(|handle| handle.is_finished()));
    }
}
