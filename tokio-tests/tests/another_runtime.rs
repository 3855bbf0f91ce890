//! A fiber that enters another tokio runtime than its worker's must leave it before it
//! blocks: green refuses the park with a panic of its own, in that fiber, before any other
//! fiber runs; the worker goes on in its own context. The ways that keep the rule work.
//! (A fiber that blocks there while it unwinds already: tests/unwinding_abort.rs.)

use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use tokio::runtime::{Handle, Id};

/// What green's refusal says.
const REFUSAL: &str =
    "green: a fiber parked or yielded inside the context of another tokio runtime";

/// A wait that is never over by its first poll, so the fiber parks: the refusal ends it.
/// (A 1 ms sleep was ready at its first poll on a loaded machine, the fiber never parked
/// and nothing was refused.) Finite, so that a missing refusal fails the test.
const LONG: Duration = Duration::from_secs(10);

/// Another tokio runtime, driven by a thread of its own.
fn other_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Runs `body` in a fiber of a one-worker runtime and expects it to panic with green's
/// refusal; then checks that the next fiber on that worker runs in the worker's context
/// and that tokio still works there.
fn refused(body: impl FnOnce() + Send + 'static) {
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let expected = runtime.run(|| Handle::current().id());
    let error = runtime.spawn(body).join().unwrap_err();
    let payload = error.into_panic();
    let message = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .unwrap_or("not a String");
    assert!(message.starts_with(REFUSAL), "{message}");
    assert!(
        message.contains(&format!("tokio runtime {expected})")),
        "{message}"
    );
    let after = runtime.run(|| {
        green::await_blocking(tokio::time::sleep(Duration::from_millis(1)));
        Handle::current().id()
    });
    assert_eq!(after, expected, "the worker is back in its own context");
}

#[test]
fn sleeping_inside_another_runtimes_context_panics_with_greens_message() {
    refused(|| {
        let other = other_runtime();
        let _guard = other.enter();
        green::sleep(LONG);
    });
}

#[test]
fn yielding_inside_another_runtimes_context_panics_with_greens_message() {
    refused(|| {
        let other = other_runtime();
        let _guard = other.enter();
        green::yield_now();
    });
}

#[test]
fn awaiting_a_pending_future_inside_another_runtimes_context_panics() {
    refused(|| {
        let other = other_runtime();
        let _guard = other.enter();
        green::await_blocking(tokio::time::sleep(LONG));
    });
}

#[test]
fn blocking_in_greens_way_inside_another_runtimes_block_on_panics() {
    refused(|| {
        let other = other_runtime();
        other.block_on(async { green::sleep(LONG) });
    });
}

#[test]
fn the_refusal_comes_before_any_other_fiber_runs() {
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let seen = runtime.run(|| {
        let other = green::spawn(|| Handle::current().id());
        let entering = green::spawn(|| {
            let other = other_runtime();
            let _guard = other.enter();
            green::yield_now(); // `other` would run now, in this context
        });
        assert!(entering.join().is_err());
        (Handle::current().id(), other.join().unwrap())
    });
    assert_eq!(seen.0, seen.1);
}

#[test]
fn a_guard_dropped_before_blocking_is_accepted() {
    let other = other_runtime();
    let handle = other.handle().clone();
    green::run(move || {
        let sleep = {
            let _guard = handle.enter();
            tokio::time::sleep(Duration::from_millis(1)) // on `other`'s timer
        };
        green::await_blocking(sleep);
    });
}

/// `fut`, polled inside `handle`'s context: the guard lives for one poll, never across a
/// park.
fn polled_in<F: Future>(handle: &Handle, fut: F) -> F::Output {
    let mut fut = pin!(fut);
    green::await_blocking(std::future::poll_fn(|cx| {
        let _guard = handle.enter();
        fut.as_mut().poll(cx)
    }))
}

#[test]
fn entering_another_runtime_around_each_poll_is_accepted() {
    let other = other_runtime();
    let handle = other.handle().clone();
    let (inside, outside) = green::run(move || {
        let inside = polled_in(&handle, async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tokio::time::sleep(Duration::from_millis(1)).await;
            Handle::current().id()
        });
        (inside, Handle::current().id())
    });
    assert_eq!(inside, other.handle().id());
    assert_ne!(outside, inside);
}

#[test]
fn spawning_onto_another_runtime_and_waiting_for_it_is_accepted() {
    let other = other_runtime();
    let handle = other.handle().clone();
    let ran_in: Id = green::run(move || {
        let task = handle.spawn(async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            Handle::current().id()
        });
        green::await_blocking(task).unwrap()
    });
    assert_eq!(ran_in, other.handle().id());
}
