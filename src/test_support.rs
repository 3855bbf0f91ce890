//! A window on the scheduler's state for green's own integration tests
//! (`tests/scheduler.rs`), which must put workers into given states (asleep, asleep with
//! no timeout) before they act. Not part of the API: hidden from the docs, and it may
//! change with any release.

use std::sync::atomic::Ordering;

use crate::Runtime;
use crate::task::NO_CPU;
use crate::worker::{self, Placement};

/// The index of the worker whose fiber calls this, if any.
pub fn worker_index() -> Option<usize> {
    worker::with_worker(|worker| worker.map(|worker| worker.shared.index))
}

/// Whether worker `index` of `runtime` waits in its reactor.
pub fn is_sleeping(runtime: &Runtime, index: usize) -> bool {
    runtime.shared().workers[index]
        .sleeping
        .load(Ordering::SeqCst)
}

/// Whether worker `index` of `runtime` waits in its reactor with no timeout.
pub fn is_blind(runtime: &Runtime, index: usize) -> bool {
    runtime.shared().workers[index].blind.load(Ordering::SeqCst)
}

/// How many workers of `runtime` wait in their reactor with no timeout.
pub fn blind_sleepers(runtime: &Runtime) -> usize {
    runtime.shared().blind_sleepers.load(Ordering::SeqCst)
}

/// The CPU worker `index` of `runtime` last ran on, once it has looked.
pub fn worker_cpu(runtime: &Runtime, index: usize) -> Option<usize> {
    let cpu = runtime.shared().workers[index].cpu.load(Ordering::SeqCst);
    (cpu != NO_CPU).then_some(cpu)
}

/// The CPU the calling fiber's worker last ran on.
pub fn current_worker_cpu() -> Option<usize> {
    worker::with_worker(|worker| {
        let cpu = worker?.shared.cpu.load(Ordering::SeqCst);
        (cpu != NO_CPU).then_some(cpu)
    })
}

/// Asks that the calling fiber's next spawn run near `cpu` (as `TcpListener::accept`
/// does for the connection's CPU).
pub fn spawn_near_cpu(cpu: usize) {
    worker::spawn_near_cpu(cpu);
}

/// Where the calling fiber's next spawn would go: `Some(index)` for a worker it would be
/// pinned to, `None` for its own worker's stealable queue. Takes the fiber's CPU hint.
pub fn next_placement() -> Option<usize> {
    worker::with_worker(|worker| match worker?.placement() {
        Placement::Here => None,
        Placement::Pinned(index) => Some(index),
    })
}

/// Bytes of the calling fiber's stack that are resident in memory now: the pages the
/// fiber has touched so far. `None` outside a runtime's fiber.
pub fn stack_resident_bytes() -> Option<usize> {
    let stack = worker::current_stack()?;
    crate::context::stack::resident_bytes_in(stack).ok()
}

/// The usable size of the calling fiber's stack. `None` outside a runtime's fiber.
pub fn stack_size() -> Option<usize> {
    worker::current_stack().map(|stack| stack.end - stack.start)
}

/// The number of workers of the runtime whose fiber calls this, if any.
pub fn worker_count() -> Option<usize> {
    worker::with_worker(|worker| worker.map(|worker| worker.runtime.workers.len()))
}

/// How many fibers the workers of `runtime` list with a name, an id or a stack size of
/// their own (see `worker::info`): none once those fibers have ended.
pub fn listed_fibers(runtime: &Runtime) -> usize {
    runtime
        .shared()
        .workers
        .iter()
        .map(|worker| worker.listed_count())
        .sum()
}

/// How many threads `runtime`'s blocking pool has, and how many of them wait for a job.
pub fn pool_threads(runtime: &Runtime) -> (usize, usize) {
    runtime.shared().pool.thread_counts()
}
