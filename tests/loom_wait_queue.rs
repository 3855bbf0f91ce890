//! Loom models of the wait queue behind `green::sync` (`src/sync/wait_queue.rs`), driven
//! through `green::sync::Mutex`, whose `lock_async` waits on it (`wait_until`) and whose
//! unlock notifies it (`notify_one`): a waiter registering while the holder unlocks (the
//! fences of `has_waiters` and `poll_notified`), and a waiter that gives up (its future
//! dropped, `RemoveOnDrop`) while a notification is on its way to it.
//!
//! Under loom the queue's lock, its `waiting` count and the mutex's flag are loom's, and
//! each thread polls its future with `loom::future::block_on`. Loom fails a model on a
//! deadlock: a notification lost, or given to a waiter that had left.
//!
//! Run with `RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 cargo test --release --test
//! loom_wait_queue`.

#![cfg(loom)]

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use green::sync::Mutex;
use loom::future::block_on;
use loom::sync::Arc;
use loom::thread;

#[test]
fn an_unlock_racing_a_registration_wakes_the_waiter() {
    loom::model(|| {
        let mutex = Arc::new(Mutex::new(0));
        let guard = mutex.try_lock().unwrap();
        let waiter = thread::spawn({
            let mutex = mutex.clone();
            move || *block_on(mutex.lock_async()).unwrap() += 1
        });
        drop(guard);
        waiter.join().unwrap();
        assert_eq!(*mutex.try_lock().unwrap(), 1);
    });
}

#[test]
fn a_waiter_that_gives_up_passes_its_notification_on() {
    loom::model(|| {
        let mutex = Arc::new(Mutex::new(0));
        let guard = mutex.try_lock().unwrap();
        // Registers with one poll, then gives up: its future is dropped, notified or not.
        let quitter = thread::spawn({
            let mutex = mutex.clone();
            move || {
                let mut lock = pin!(mutex.lock_async());
                let mut cx = Context::from_waker(Waker::noop());
                if let Poll::Ready(guard) = lock.as_mut().poll(&mut cx) {
                    *guard.unwrap() += 10;
                }
            }
        });
        let waiter = thread::spawn({
            let mutex = mutex.clone();
            move || *block_on(mutex.lock_async()).unwrap() += 1
        });
        drop(guard);
        quitter.join().unwrap();
        waiter.join().unwrap();
        let value = *mutex.try_lock().unwrap();
        assert!(
            value == 1 || value == 11,
            "the waiter got the lock: {value}"
        );
    });
}
