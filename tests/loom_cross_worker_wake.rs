//! Loom model of a wake across threads: a fiber parked on a worker is woken from another
//! thread, `Header::wake` sends the wake through the worker's injector
//! (`WorkerShared::schedule_remote`), and the worker, going to sleep meanwhile, must not
//! sleep through it.
//!
//! The worker's side is the order `Worker::wait` keeps (`src/worker/idle.rs`): set
//! `sleeping` (SeqCst), look for messages, sleep until notified, clear `sleeping`. The
//! sender's side is `WorkerShared::send`: push, then notify if `sleeping` (SeqCst). Under
//! loom the worker sleeps on a `loom::sync::Notify` that `notify_if_sleeping` rings along
//! with the reactor.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test
//! loom_cross_worker_wake`.

#![cfg(loom)]

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;

use green::loom::model::{self, Worker};
use loom::sync::atomic::AtomicBool;
use loom::sync::atomic::Ordering::Relaxed;
use loom::thread;

/// The worker loop with nothing to run: the next wake sent to `worker`, sleeping as
/// `Worker::wait` does until one comes.
fn next_wake(worker: &Worker) -> u64 {
    loop {
        if let Some(id) = worker.take_wake() {
            return id;
        }
        worker.sleeping().store(true, SeqCst);
        if !worker.has_messages() {
            worker.sleep();
        }
        worker.sleeping().store(false, SeqCst);
    }
}

#[test]
fn a_wake_from_another_thread_reaches_a_worker_going_to_sleep() {
    loom::model(|| {
        let worker = Worker::new();
        let (fiber, _handle) = model::task(1);
        fiber.lives_on_worker(&worker);
        let fiber = Arc::new(fiber);
        let ready = Arc::new(AtomicBool::new(false));
        let waker = thread::spawn({
            let (fiber, ready) = (fiber.clone(), ready.clone());
            move || {
                ready.store(true, Relaxed);
                fiber.wake();
            }
        });
        // The fiber waits for `ready`, as `Current::park` does. Returns whether it finished;
        // `false` when it suspended.
        let run_fiber = |resumed: bool| {
            if resumed {
                fiber.reset_after_park();
            }
            loop {
                if ready.load(Relaxed) {
                    return true;
                }
                if fiber.park() {
                    return false;
                }
                fiber.reset_after_park();
            }
        };
        // The worker runs the fiber, then resumes it at each wake sent to it.
        let mut finished = run_fiber(false);
        while !finished {
            assert_eq!(next_wake(&worker), 1);
            finished = run_fiber(true);
        }
        waker.join().unwrap();
        assert_eq!(worker.take_wake(), None, "queued at most once per park");
    });
}

#[test]
fn wakes_from_two_threads_queue_the_fiber_once_per_park() {
    loom::model(|| {
        let worker = Worker::new();
        let (fiber, _handle) = model::task(1);
        fiber.lives_on_worker(&worker);
        let fiber = Arc::new(fiber);
        let ready = Arc::new(AtomicBool::new(false));
        let wakers: Vec<_> = (0..2)
            .map(|_| {
                let (fiber, ready) = (fiber.clone(), ready.clone());
                thread::spawn(move || {
                    ready.store(true, Relaxed);
                    fiber.wake();
                })
            })
            .collect();
        let mut resumes = 0;
        loop {
            if ready.load(Relaxed) {
                break;
            }
            if fiber.park() {
                assert_eq!(next_wake(&worker), 1);
                resumes += 1;
            }
            fiber.reset_after_park();
        }
        wakers.into_iter().for_each(|w| w.join().unwrap());
        assert!(resumes <= 1, "one park, one resume");
        assert_eq!(worker.take_wake(), None, "queued at most once per park");
    });
}
