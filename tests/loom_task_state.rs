//! Loom models of a task's state words (`src/task/state.rs`) and join cell
//! (`src/task/join.rs`): park against wake, cancellation, a join against the completion on
//! another thread, and the join shortcut, where the joiner runs the task nested.
//!
//! Fibers cannot run under loom, so each model plays the fiber's steps itself, in the order
//! `Current::park` and `JoinHandle::join` take them, calling the production methods through
//! `green::loom::model`. A suspended fiber gets control back when its id comes out of the
//! model's `Queue`, where `Header::wake` schedules it. Loom fails a model on a deadlock (a
//! lost wake), a failed assertion, or two threads touching a cell (the join cell's result
//! and waker slot, the scheduler cell) without a happens-before edge.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test
//! loom_task_state`.

#![cfg(loom)]

use std::sync::Arc;

use green::loom::model::{self, Fiber, Handle, Queue};
use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::Ordering::Relaxed;
use loom::thread;

/// The fiber `fiber` (id `id`) waits until `ready()`, as a blocking call does with
/// `Current::park`: check, park, suspend until resumed if the park says so, reset, check
/// again.
fn park_until(fiber: &Fiber, queue: &Queue, id: u64, ready: impl Fn() -> bool) {
    while !ready() {
        if fiber.park() {
            assert_eq!(queue.next(), id, "only the parked fiber is resumed");
        }
        fiber.reset_after_park();
    }
}

#[test]
fn a_wake_between_the_check_and_the_park_is_not_lost() {
    loom::model(|| {
        let queue = Queue::new();
        let (fiber, _handle) = model::task(1);
        fiber.lives_on(&queue);
        let fiber = Arc::new(fiber);
        // The condition is read Relaxed: only the state word's orderings may carry it.
        let ready = Arc::new(AtomicBool::new(false));
        let waker = thread::spawn({
            let (fiber, ready) = (fiber.clone(), ready.clone());
            move || {
                fiber.wake(); // an early wake, which leaves NOTIFIED behind
                ready.store(true, Relaxed);
                fiber.wake();
            }
        });
        park_until(&fiber, &queue, 1, || ready.load(Relaxed));
        waker.join().unwrap();
        assert_eq!(queue.try_next(), None, "queued at most once per park");
    });
}

#[test]
fn an_abort_wakes_a_parked_fiber_which_unwinds_once() {
    loom::model(|| {
        let queue = Queue::new();
        let (fiber, handle) = model::task(1);
        fiber.lives_on(&queue);
        let aborter = thread::spawn(move || {
            handle.abort();
            handle
        });
        // The fiber waits for a wake that only the abort sends, and looks for a
        // cancellation after each park (`Current::check_cancel`).
        loop {
            if fiber.park() {
                assert_eq!(queue.next(), 1);
            }
            fiber.reset_after_park();
            if fiber.cancel_pending() {
                fiber.cancel_delivered(); // it unwinds
                break;
            }
        }
        let handle = aborter.join().unwrap();
        handle.abort(); // a second request: not delivered again
        assert!(!fiber.cancel_pending());
        assert_eq!(queue.try_next(), None);
    });
}

#[test]
fn a_completion_on_another_thread_wakes_the_joining_fiber() {
    loom::model(|| {
        let queue = Queue::new();
        let (task, mut handle) = model::task(1);
        let (joiner, _joiner_handle) = model::task(2);
        joiner.lives_on(&queue);
        let completer = thread::spawn(move || task.complete(42));
        // `JoinHandle::join` in the fiber `joiner`: look, register, park until done, and
        // leave only once the completer has let go of the registration.
        let state = handle.join_state();
        if !Handle::done(state)
            && let Some(registration) = handle.register(state, &joiner)
        {
            park_until(&joiner, &queue, 2, || handle.is_done());
            drop(registration);
        }
        assert_eq!(handle.take(), Some(42));
        completer.join().unwrap();
        assert_eq!(queue.try_next(), None);
    });
}

#[test]
fn a_task_run_nested_by_its_joiner_wakes_it_after_parking() {
    loom::model(|| {
        // One worker thread runs the joiner (fiber 2) and the task (fiber 1); another thread
        // sends what the task waits for and wakes it.
        let queue = Queue::new();
        let (task, mut handle) = model::task(1);
        let (joiner, _joiner_handle) = model::task(2);
        task.lives_on(&queue);
        joiner.lives_on(&queue);
        let task = Arc::new(task);
        let ready = Arc::new(AtomicBool::new(false));
        let sender = thread::spawn({
            let (task, ready) = (task.clone(), ready.clone());
            move || {
                ready.store(true, Relaxed);
                task.wake();
            }
        });
        // The task's body: waits for `ready`, then returns 7. Returns whether it finished;
        // `false` when it suspended.
        let run_task = |resumed: bool| {
            if resumed {
                task.reset_after_park();
            }
            loop {
                if ready.load(Relaxed) {
                    task.complete(7);
                    return true;
                }
                if task.park() {
                    return false;
                }
                task.reset_after_park();
            }
        };
        // 1. `join`: the task is the worker's only entry, so the joiner runs it nested
        //    (`Worker::run_next_now`), flagged `direct` meanwhile.
        let state = handle.join_state();
        assert_eq!(state, 0);
        handle
            .direct()
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let mut finished = run_task(false);
        handle
            .direct()
            .store(false, std::sync::atomic::Ordering::Relaxed);
        // 2. The task parked: the joiner registers and parks, and the worker loop runs
        //    whichever fiber is woken until the joiner is.
        let state = handle.join_state();
        if !Handle::done(state)
            && let Some(registration) = handle.register(state, &joiner)
        {
            while !handle.is_done() {
                if joiner.park() {
                    loop {
                        match queue.next() {
                            1 => {
                                assert!(!finished, "a finished task is not resumed");
                                finished = run_task(true);
                            }
                            2 => break,
                            id => panic!("no fiber {id}"),
                        }
                    }
                }
                joiner.reset_after_park();
            }
            drop(registration);
        }
        assert!(finished);
        assert_eq!(handle.take(), Some(7));
        sender.join().unwrap();
        assert_eq!(queue.try_next(), None);
    });
}

#[test]
fn a_handle_dropped_while_its_task_completes_leaves_the_result_to_one_side() {
    // The completer drops the result itself if the handle was dropped first (`DETACHED`);
    // otherwise it stays for the task's last reference. Loom fails the model if the
    // completer's take and the free's drop of the result slot could race.
    loom::model(|| {
        let (task, handle) = model::task(1);
        let completer = thread::spawn(move || {
            task.complete(42);
            drop(task);
        });
        drop(handle);
        completer.join().unwrap();
    });
}
