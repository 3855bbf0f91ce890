//! A worker's part of a fiber dump (`Runtime::dump`): it captures its own fibers, between
//! turns, when its dump order comes through the injector, and answers.
//!
//! ```text
//!   requester (any thread, or a fiber)            each worker, at its next pass of the loop
//!   request_dump: one Message::Dump per worker ─► drain_messages: answer_dump
//!   waits (parks, if a fiber) for the answers       for each fiber in the slab:
//!                                                     what it waits on (State, Wait)
//!                                                     its backtrace, captured on its own
//!                                                     stack (Fiber::capture_backtrace)
//!   woken by the last answer                   ◄─   answers: the reports, then a wake
//! ```
//!
//! A worker takes its messages only between two fibers' turns, so no fiber of its own runs
//! while it answers: every fiber is suspended in the slab, parked or runnable, and the
//! capture resumes it only into the capture (see `fiber::capture`). Its park word, its
//! place in the run queue and any wake in flight stay as they were: a wake that comes
//! meanwhile finds the fiber PARKED and queues it as usual, and the fiber runs when the
//! worker gets to it.
//!
//! A worker stuck in one fiber never takes its order: the requester gives up on it at its
//! deadline, unless it has begun to answer (captures are bounded work, and are waited
//! for). An order dropped unanswered (the worker closed) answers that the worker has shut
//! down, so that the requester never waits for it.

use std::backtrace::Backtrace;
use std::num::NonZeroU64;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};

use super::shared::Message;
use super::{RuntimeShared, Worker, current, in_fiber, with_worker};
use crate::fiber::NoBacktrace;
use crate::sys::lock;
use crate::task::Wait;

/// One fiber as its worker saw it.
#[derive(Debug)]
pub(crate) struct FiberReport {
    /// Its (slot, generation) id on its worker.
    pub(crate) id: u64,
    /// Its worker's index.
    pub(crate) worker: usize,
    /// Its task's id (`green::task::Id`); `None` only for a fiber seen from another thread
    /// that had not been given one.
    pub(crate) task: Option<NonZeroU64>,
    /// The name its task was spawned with, if any.
    pub(crate) name: Option<Arc<str>>,
    /// What it was parked on; `None` if it was runnable (or, for the requester, running).
    pub(crate) parked: Option<Wait>,
    /// Its backtrace, or why there is none.
    pub(crate) trace: Result<Backtrace, NoBacktrace>,
}

/// A worker's answer to a dump order.
#[derive(Debug)]
pub(crate) enum Answer {
    /// Its fibers (the requester's own left out), and how many tasks waited to start on
    /// it.
    Fibers {
        /// Its fibers, in slab order.
        fibers: Vec<FiberReport>,
        /// Tasks that waited to start on it (they have no fiber yet).
        unstarted: usize,
    },
    /// It had shut down.
    Closed,
}

/// A dump in progress: what the requester and the workers share.
#[derive(Debug)]
pub(crate) struct DumpRequest {
    /// The fiber that asked, as (worker index, id), if it is one of the runtime's: it
    /// captures itself, and its worker leaves it out.
    requester: Option<(usize, u64)>,
    /// The answers so far, and who waits for them.
    answers: Mutex<Answers>,
}

/// The answers of a [`DumpRequest`].
#[derive(Debug)]
struct Answers {
    /// Per worker, its answer once it has given it.
    answers: Vec<Option<Answer>>,
    /// Per worker, whether it has taken its order (and is capturing, or has answered).
    started: Vec<bool>,
    /// The requester's waker, woken by the answers.
    waker: Option<Waker>,
    /// Set once the requester has stopped waiting: a worker that takes its order later
    /// captures nothing.
    given_up: bool,
}

/// A worker's order to answer a dump; dropped unanswered, it answers `Closed`.
pub(crate) struct DumpOrder {
    /// The dump; `None` once answered.
    request: Option<Arc<DumpRequest>>,
    /// The worker it is for.
    worker: usize,
}

impl DumpOrder {
    /// Gives the worker's answer and wakes the requester if it was the last.
    fn answer(mut self, answer: Answer) {
        if let Some(request) = self.request.take() {
            request.answer(self.worker, answer);
        }
    }
}

impl Drop for DumpOrder {
    fn drop(&mut self) {
        if let Some(request) = self.request.take() {
            request.answer(self.worker, Answer::Closed);
        }
    }
}

impl DumpRequest {
    /// Records worker `index`'s answer, then wakes the requester (after the lock) if no
    /// answer is missing now.
    fn answer(&self, index: usize, answer: Answer) {
        let waker = {
            let mut answers = lock(&self.answers);
            if answers.given_up {
                return; // too late: the answers were taken
            }
            answers.started[index] = true;
            answers.answers[index] = Some(answer);
            if answers.answers.iter().all(Option::is_some) {
                answers.waker.take()
            } else {
                None
            }
        };
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Marks worker `index` as capturing; `false` if the requester gave up already.
    fn start(&self, index: usize) -> bool {
        let mut answers = lock(&self.answers);
        answers.started[index] = !answers.given_up;
        answers.started[index]
    }

    /// Ready once every worker has answered, or, with `patient` false, once every worker
    /// that has not has yet to take its order (the requester's deadline has passed: those
    /// are stuck, and from now on a worker that takes its order captures nothing; the
    /// others are capturing, which ends).
    pub(crate) fn poll_answers(&self, cx: &mut Context<'_>, patient: bool) -> Poll<()> {
        let mut answers = lock(&self.answers);
        let waiting = answers
            .answers
            .iter()
            .zip(&answers.started)
            .any(|(answer, &started)| answer.is_none() && (patient || started));
        if !waiting {
            answers.given_up = true;
            return Poll::Ready(());
        }
        if !answers
            .waker
            .as_ref()
            .is_some_and(|waker| waker.will_wake(cx.waker()))
        {
            answers.waker = Some(cx.waker().clone());
        }
        Poll::Pending
    }

    /// Stops waiting: takes the answers given so far, per worker.
    pub(crate) fn take_answers(&self) -> Vec<Option<Answer>> {
        let mut answers = lock(&self.answers);
        answers.given_up = true;
        answers.waker = None;
        std::mem::take(&mut answers.answers)
    }
}

impl RuntimeShared {
    /// Orders every worker to answer a dump, and returns it; `requester` is the calling
    /// fiber's (worker, id) if it is one of this runtime's. Called on a worker's own loop
    /// (a waker, a destructor), the worker answers at once: it would otherwise never get
    /// to its order while the caller waits.
    pub(crate) fn request_dump(&self, requester: Option<(usize, u64)>) -> Arc<DumpRequest> {
        let n = self.workers.len();
        let request = Arc::new(DumpRequest {
            requester,
            answers: Mutex::new(Answers {
                answers: (0..n).map(|_| None).collect(),
                started: vec![false; n],
                waker: None,
                given_up: false,
            }),
        });
        for worker in &self.workers {
            let order = DumpOrder {
                request: Some(request.clone()),
                worker: worker.index,
            };
            let order = with_worker(|here| match here {
                Some(here) if std::ptr::eq(&*here.shared, &**worker) && !in_fiber() => {
                    here.answer_dump(order);
                    None
                }
                _ => Some(order),
            });
            if let Some(order) = order {
                worker.send(Message::Dump(order));
            }
        }
        request
    }
}

/// The calling fiber as (worker index, id), if it is a fiber of `runtime`.
pub(crate) fn requester_in(runtime: &RuntimeShared) -> Option<(usize, u64)> {
    let fiber = current()?;
    with_worker(|worker| {
        let worker = worker.filter(|w| std::ptr::eq(&*w.runtime, runtime))?;
        Some((worker.shared.index, fiber.id()))
    })
}

impl Worker {
    /// Answers a dump order: reports and captures every fiber (but the requester), from
    /// the loop, between turns (see the module docs).
    pub(super) fn answer_dump(&self, order: DumpOrder) {
        let index = self.shared.index;
        let Some(request) = order.request.as_ref() else {
            return;
        };
        if !request.start(index) {
            return; // nobody waits any more; dropping the order answers
        }
        let skip = request
            .requester
            .filter(|&(worker, _)| worker == index)
            .map(|(_, id)| id);
        // The slab stays borrowed while each fiber is resumed into its capture: the
        // capture runs no code of the worker's nor of the user's, so nothing borrows it
        // meanwhile.
        let mut slab = self.fibers.borrow_mut();
        let mut fibers = Vec::with_capacity(slab.len());
        for (slot, entry) in slab.iter_mut() {
            let id = slot as u64 | u64::from(entry.generation) << 32;
            // No fiber of this worker runs between turns.
            let fiber = &mut entry.fiber;
            if fiber.is_running() {
                debug_assert!(false, "fiber {id} runs while its worker answers a dump");
                continue;
            }
            if skip == Some(id) {
                continue;
            }
            // SAFETY: a fiber in the slab keeps its task alive.
            let state = &unsafe { &*entry.header }.state;
            let parked = state.is_parked().then(|| state.wait());
            let trace = fiber.capture_backtrace();
            // Gives the task its id if it never asked for one, as `task::current` would:
            // the fiber is listed from now on, and keeps the id.
            let (task, name) = self.task_of(entry, id);
            fibers.push(FiberReport {
                id,
                worker: index,
                task: Some(task),
                name,
                parked,
                trace,
            });
        }
        drop(slab);
        let unstarted = self.queue.borrow().starts() + self.local_spawns.borrow().len();
        order.answer(Answer::Fibers { fibers, unstarted });
    }
}
