//! A blocking call of green's made inside the poll of a future that `await_blocking`
//! waits for parks the same fiber: it must not consume the outer future's wake.

mod common;

use std::time::Duration;

use common::{one_worker, within};
use futures::channel::oneshot;

/// `await_blocking` of a `join!` of a oneshot (completed by another fiber while the
/// poll is blocked inside) and an async block that blocks in `inner`, which `then` (run
/// in a fiber after the oneshot's sender) lets go on.
fn outer_wake_survives(
    inner: impl FnOnce() + Send + 'static,
    then: impl FnOnce() + Send + 'static,
) {
    within(30, "await_blocking whose poll blocks in green", move || {
        one_worker().run(move || {
            let (tx, rx) = oneshot::channel::<u32>();
            // Runs while the poll below is blocked in `inner` (one worker: in spawn
            // order): the oneshot's wake comes then, and `inner`'s park sees it.
            let sender = green::spawn(move || tx.send(7).unwrap());
            let releaser = green::spawn(then);
            let (value, ()) = green::await_blocking(async move {
                futures::join!(async { rx.await.unwrap() }, async move { inner() })
            });
            sender.join().unwrap();
            releaser.join().unwrap();
            assert_eq!(value, 7);
        })
    });
}

#[test]
fn a_channel_receive_inside_a_poll_keeps_the_outer_wake() {
    let (tx, rx) = green::sync::channel::<()>();
    outer_wake_survives(move || rx.recv().unwrap(), move || tx.send(()).unwrap());
}

#[test]
fn a_sleep_inside_a_poll_keeps_the_outer_wake() {
    outer_wake_survives(|| green::sleep(Duration::from_millis(2)), || ());
}

#[test]
fn a_join_inside_a_poll_keeps_the_outer_wake() {
    outer_wake_survives(
        || {
            let handle = green::spawn(|| green::sleep(Duration::from_millis(2)));
            handle.join().unwrap();
        },
        || (),
    );
}

#[test]
fn a_contended_lock_inside_a_poll_keeps_the_outer_wake() {
    use std::sync::Arc;
    let lock = Arc::new(green::sync::Mutex::new(()));
    let holder_lock = lock.clone();
    within(30, "a lock inside a poll", move || {
        one_worker().run(move || {
            let (tx, rx) = oneshot::channel::<u32>();
            let guard_taken = green::sync::channel::<()>();
            let (taken_tx, taken_rx) = guard_taken;
            // Holds the lock across a yield, then completes the oneshot and lets go.
            let holder = green::spawn(move || {
                let guard = holder_lock.lock().unwrap();
                taken_tx.send(()).unwrap();
                green::yield_now();
                tx.send(7).unwrap();
                drop(guard);
            });
            taken_rx.recv().unwrap();
            let (value, ()) = green::await_blocking(async {
                futures::join!(async { rx.await.unwrap() }, async {
                    drop(lock.lock().unwrap());
                })
            });
            holder.join().unwrap();
            assert_eq!(value, 7);
        })
    });
}

#[test]
fn a_nested_block_on_inside_a_poll_keeps_the_outer_wake() {
    outer_wake_survives(
        || {
            green::block_on(green::time::Timer::after(Duration::from_millis(2)));
        },
        || (),
    );
}
