//! Blocking inside a task of green's process-wide tokio runtime: `green::block_on` (or
//! `JoinHandle::join`) in a task spawned with `tokio::spawn` panics rather than block the
//! runtime's one thread, which would stop tokio's timers, sockets and tasks for the whole
//! process; in `spawn_blocking` it blocks as usual. A test binary of its own: were the
//! thread blocked, every other tokio test in the binary would hang with it.

use std::time::Duration;

use green::await_blocking;
use green_tokio_tests::{panic_message, within};

// Once hung: the task parked the process-wide runtime's one thread, whose timer would
// have ended the sleep, so the sleep never ended and neither did any other tokio timer,
// socket or task of the process.
#[test]
fn block_on_in_a_task_on_the_process_wide_runtime_panics_instead_of_freezing_it() {
    let (refused, joined, slept_after) = within(20, "block_on in a tokio task", || {
        green::run(|| {
            let refused = await_blocking(tokio::spawn(async {
                green::block_on(tokio::time::sleep(Duration::from_millis(1)));
            }))
            .unwrap_err();
            let (release, released) = green::sync::channel::<()>();
            let fiber = green::spawn(move || {
                let _ = released.recv();
                42
            });
            let joined = await_blocking(tokio::spawn(async move { fiber.join() })).unwrap_err();
            release.send(()).unwrap();
            // The thread was not blocked: tokio's timers fire and tasks run on it.
            let slept_after = await_blocking(tokio::spawn(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                std::thread::current().name().map(str::to_owned)
            }))
            .unwrap();
            (refused, joined, slept_after)
        })
    });
    for refused in [refused, joined] {
        let message = panic_message(refused.into_panic());
        assert!(
            message.contains("green-tokio") && message.contains("`.await` the future"),
            "{message}"
        );
    }
    assert_eq!(slept_after.as_deref(), Some("green-tokio"));
}

#[test]
fn calls_that_would_not_block_return_in_a_task_on_the_process_wide_runtime() {
    let (ready, joined, received) = within(20, "ready calls in a tokio task", || {
        green::run(|| {
            let done = green::spawn(|| 9);
            while !done.is_finished() {
                green::yield_now();
            }
            let (sender, receiver) = green::sync::channel();
            sender.send(11).unwrap();
            await_blocking(tokio::spawn(async move {
                (
                    green::block_on(async { 5 }),
                    done.join().unwrap(),
                    receiver.recv().unwrap(),
                )
            }))
            .unwrap()
        })
    });
    assert_eq!((ready, joined, received), (5, 9, 11));
}

#[test]
fn block_on_in_spawn_blocking_on_the_process_wide_runtime_still_blocks() {
    let (value, thread) = within(20, "block_on in spawn_blocking", || {
        green::run(|| {
            await_blocking(tokio::task::spawn_blocking(|| {
                let value = green::block_on(async {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    7
                });
                (value, std::thread::current().name().map(str::to_owned))
            }))
            .unwrap()
        })
    });
    assert_eq!(value, 7);
    assert_eq!(thread.as_deref(), Some("green-tokio-blocking"));
}
