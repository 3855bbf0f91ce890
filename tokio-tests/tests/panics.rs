//! Panics inside tokio-bound futures go where green's panics go (the fiber's `JoinHandle`,
//! `block_on`'s caller), and leave the tokio context as it was.

use std::panic::{self, AssertUnwindSafe};
use std::time::Duration;

use green::await_blocking;
use green_tokio_tests::panic_message;
use tokio::runtime::Handle;

#[test]
fn a_panic_inside_a_tokio_bound_future_reaches_the_fibers_join_handle() {
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let context = runtime.run(|| Handle::current().id());
    let panicked = runtime
        .spawn(|| {
            await_blocking(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                panic!("a tokio-bound future panics");
            })
        })
        .join()
        .unwrap_err();
    assert_eq!(
        panic_message(panicked.into_panic()),
        "a tokio-bound future panics"
    );
    // The worker goes on in the same context, and tokio's timers still fire for it.
    let after = runtime.run(|| {
        await_blocking(tokio::time::sleep(Duration::from_millis(1)));
        Handle::current().id()
    });
    assert_eq!(after, context);
}

#[test]
fn a_panicking_task_spawned_from_a_fiber_leaves_the_process_wide_runtime_running() {
    let (panicked, thread) = green::run(|| {
        let panicked = await_blocking(tokio::spawn(async {
            panic!("a task on the process-wide runtime panics");
        }))
        .unwrap_err();
        // tokio caught it on its thread, which runs the next task as before.
        let thread = await_blocking(tokio::spawn(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            std::thread::current().name().map(str::to_owned)
        }))
        .unwrap();
        (panicked, thread)
    });
    assert!(panicked.is_panic());
    assert_eq!(
        panic_message(panicked.into_panic()),
        "a task on the process-wide runtime panics"
    );
    assert_eq!(thread.as_deref(), Some("green-tokio"));
}

#[test]
fn a_panic_inside_block_on_on_a_plain_thread_leaves_the_thread_outside_any_context() {
    let result = panic::catch_unwind(|| {
        green::block_on(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            panic!("a future in block_on panics");
        })
    });
    assert_eq!(
        panic_message(result.unwrap_err()),
        "a future in block_on panics"
    );
    assert!(
        Handle::try_current().is_err(),
        "the call's context was left"
    );
    // The next call enters it again.
    green::block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
}

#[test]
fn a_panic_inside_a_fibers_own_tokio_runtime_block_on_is_caught_as_the_fibers() {
    // Entering another runtime with `block_on` inside a fiber, for a future that never
    // parks the fiber, is allowed; its panic unwinds out of tokio's block_on and leaves
    // the worker in its own context.
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let context = runtime.run(|| Handle::current().id());
    let panicked = runtime
        .spawn(|| {
            let other = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            other.block_on(AssertUnwindSafe(async {
                tokio::time::sleep(Duration::from_millis(1)).await;
                panic!("a future in another runtime's block_on panics");
            }))
        })
        .join()
        .unwrap_err();
    assert_eq!(
        panic_message(panicked.into_panic()),
        "a future in another runtime's block_on panics"
    );
    assert_eq!(runtime.run(|| Handle::current().id()), context);
}
