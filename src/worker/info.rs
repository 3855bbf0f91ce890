//! What a worker knows of some of its fibers beyond their slot: the name and stack size a
//! task was spawned with (`green::task::Builder`), and the id `green::task::current` gave
//! it. Only the fibers that have one of these are listed, so a plain spawn costs nothing
//! here: no allocation, no lock, and a flag in its slab entry that stays clear.
//!
//! The list is shared, behind a lock: the stall monitor reads the name of a fiber that
//! hogs its worker from its own thread, while the worker is stuck in that fiber.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::{Entry, Worker, WorkerShared, current};
use crate::fiber::Fiber;
use crate::sys::lock;

/// What a task was spawned with beyond its closure, until its fiber starts: from
/// `green::task::Builder`, boxed so that a plain spawn carries one null pointer.
#[derive(Debug, Default)]
pub(crate) struct SpawnOptions {
    /// The task's name.
    pub(crate) name: Option<Arc<str>>,
    /// The usable size of the task's stack (checked, page-rounded); `None` for the
    /// runtime's.
    pub(crate) stack_size: Option<usize>,
}

/// What is listed of a fiber.
#[derive(Debug, Default)]
struct FiberInfo {
    /// The name its task was spawned with.
    name: Option<Arc<str>>,
    /// Its stack size, where its task asked for one.
    stack_size: Option<usize>,
    /// Its id, once `green::task::current` was asked for it.
    id: Option<NonZeroU64>,
}

/// The listed fibers of a worker, by their (slot, generation) id: a field of
/// [`WorkerShared`].
#[derive(Debug, Default)]
pub(crate) struct Listed(Mutex<HashMap<u64, FiberInfo>>);

/// The next task id to give out; ids are never reused.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl WorkerShared {
    /// The name of the fiber `fiber` ((slot, generation) id), if it is listed with one.
    pub(crate) fn name_of(&self, fiber: u64) -> Option<Arc<str>> {
        lock(&self.listed.0).get(&fiber)?.name.clone()
    }

    /// The task id and name of the fiber `fiber` ((slot, generation) id), as far as they
    /// are listed: from another thread, which cannot list a fiber nor give it an id.
    pub(crate) fn listed_task_of(&self, fiber: u64) -> (Option<NonZeroU64>, Option<Arc<str>>) {
        match lock(&self.listed.0).get(&fiber) {
            Some(info) => (info.id, info.name.clone()),
            None => (None, None),
        }
    }

    /// How many fibers are listed (for `test_support`).
    pub(crate) fn listed_count(&self) -> usize {
        lock(&self.listed.0).len()
    }
}

impl Worker {
    /// Lists the fiber just created with `options` under `id`, and names it (for the stack
    /// overflow message).
    #[cold]
    #[inline(never)]
    pub(super) fn list(&self, id: u64, options: SpawnOptions, fiber: &mut Fiber<()>) {
        if let Some(name) = &options.name {
            fiber.set_name(&**name);
        }
        let info = FiberInfo {
            name: options.name,
            stack_size: options.stack_size,
            id: None,
        };
        lock(&self.shared.listed.0).insert(id, info);
    }

    /// Forgets the listed fiber `id`, which has ended.
    #[cold]
    #[inline(never)]
    pub(super) fn unlist(&self, id: u64) {
        lock(&self.shared.listed.0).remove(&id);
    }

    /// Forgets every listed fiber: they were abandoned at a shutdown's deadline.
    pub(super) fn unlist_all(&self) {
        lock(&self.shared.listed.0).clear();
    }

    /// The task id and name of the fiber `fiber` ((slot, generation) id) of this worker,
    /// whose slab entry is `entry`: lists it if it is not (it then has no name, and the
    /// runtime's stack size), and gives it an id on the first call, which it keeps.
    pub(super) fn task_of(&self, entry: &mut Entry, fiber: u64) -> (NonZeroU64, Option<Arc<str>>) {
        let mut listed = lock(&self.shared.listed.0);
        entry.listed = true;
        let info = listed.entry(fiber).or_default();
        let id = *info.id.get_or_insert_with(|| {
            // Relaxed: only uniqueness matters, which the read-modify-write gives.
            let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            NonZeroU64::new(id).expect("2^64 task ids are never given out")
        });
        (id, info.name.clone())
    }

    /// The stack size of the fiber `fiber` ((slot, generation) id) of this worker.
    fn stack_size_of(&self, fiber: u64) -> usize {
        let slot = (fiber & 0xFFFF_FFFF) as usize;
        let listed = self.fibers.borrow().get(slot).is_some_and(|e| e.listed);
        let own = listed
            .then(|| lock(&self.shared.listed.0).get(&fiber)?.stack_size)
            .flatten();
        own.unwrap_or(self.runtime.stack_size)
    }
}

/// The id and name of the task whose fiber runs on this thread; `None` outside fibers. The
/// id is given out on the first call, and kept.
pub(crate) fn current_task() -> Option<(NonZeroU64, Option<Arc<str>>)> {
    let current = current()?;
    let fiber = current.header().id.load(Ordering::Relaxed);
    let task = super::with_worker(|worker| {
        let worker = worker.expect("a fiber runs on its worker's thread");
        let (slot, generation) = ((fiber & 0xFFFF_FFFF) as usize, (fiber >> 32) as u32);
        let mut fibers = worker.fibers.borrow_mut();
        let entry = fibers
            .get_mut(slot)
            .filter(|entry| entry.generation == generation)
            .expect("the running fiber is in its worker's slab");
        worker.task_of(entry, fiber)
    });
    Some(task)
}

/// The usable part of the running fiber's stack (for `test_support`), if a fiber runs.
pub(crate) fn current_stack() -> Option<std::ops::Range<usize>> {
    let current = current()?;
    let fiber = current.header().id.load(Ordering::Relaxed);
    let size = super::with_worker(|worker| worker.map(|w| w.stack_size_of(fiber)))?;
    let top = current.stack_top as usize;
    Some(top - size..top)
}
