//! Where green enters a tokio runtime's context: worker threads, blocking pool threads,
//! `block_on` on plain threads; which runtime (the process-wide one, or the caller's).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::{Handle, Id};

/// The runtime id fibers see.
fn fibers_runtime(runtime: &green::Runtime) -> Id {
    runtime.run(|| Handle::current().id())
}

#[test]
fn tokio_sleep_in_a_fiber_no_longer_panics_for_want_of_a_reactor() {
    // Before the `tokio` feature: "there is no reactor running, must be called from the
    // context of a Tokio 1.x runtime".
    let start = Instant::now();
    green::run(|| green::await_blocking(tokio::time::sleep(Duration::from_millis(1))));
    assert!(start.elapsed() >= Duration::from_millis(1));
}

#[test]
fn every_worker_runs_its_fibers_inside_the_context() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    // Spawns from a plain thread go to the workers in turn.
    let fibers: Vec<_> = (0..8)
        .map(|_| {
            runtime.spawn(|| {
                let name = std::thread::current().name().unwrap().to_owned();
                (name, Handle::try_current().map(|handle| handle.id()).ok())
            })
        })
        .collect();
    let seen: Vec<_> = fibers.into_iter().map(|f| f.join().unwrap()).collect();
    let threads: HashSet<_> = seen.iter().map(|(name, _)| name.clone()).collect();
    assert_eq!(threads.len(), 2, "both workers ran fibers: {threads:?}");
    let expected = fibers_runtime(&runtime);
    assert!(seen.iter().all(|(_, id)| *id == Some(expected)), "{seen:?}");
}

#[test]
fn all_green_runtimes_share_one_tokio_runtime_by_default() {
    let first = green::Runtime::builder().workers(1).build().unwrap();
    let second = green::Runtime::new().unwrap();
    let id = fibers_runtime(&first);
    assert_eq!(fibers_runtime(&second), id);
    assert_eq!(green::run(|| Handle::current().id()), id);
    // It is green's, not the test thread's: that one has no context.
    assert!(Handle::try_current().is_err());
}

#[test]
fn the_shared_runtime_runs_tokio_spawned_tasks_on_a_thread_of_its_own() {
    let (worker, task) = green::run(|| {
        let task = tokio::spawn(async { std::thread::current().name().map(str::to_owned) });
        let worker = std::thread::current().name().map(str::to_owned);
        (worker, green::await_blocking(task).unwrap())
    });
    assert_eq!(task.as_deref(), Some("green-tokio"));
    assert_ne!(worker, task);
}

#[test]
fn tokio_handle_puts_the_fibers_in_the_callers_runtime() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("callers-tokio")
        .enable_all()
        .build()
        .unwrap();
    let runtime = green::Runtime::builder()
        .workers(2)
        .tokio_handle(tokio.handle().clone())
        .build()
        .unwrap();
    let (id, spawned_on) = runtime.run(|| {
        green::await_blocking(tokio::time::sleep(Duration::from_millis(1)));
        let task = tokio::spawn(async { std::thread::current().name().map(str::to_owned) });
        (Handle::current().id(), green::await_blocking(task).unwrap())
    });
    assert_eq!(id, tokio.handle().id());
    assert_eq!(spawned_on.as_deref(), Some("callers-tokio"));
    // The process-wide runtime is another.
    assert_ne!(green::run(|| Handle::current().id()), id);
}

#[test]
fn fibers_wait_on_tokio_futures_concurrently() {
    // 100 fibers on two workers meet at a tokio barrier, which opens only once all 100
    // wait at it: each is parked in a tokio future meanwhile, not blocking its worker.
    // Then each sleeps on tokio's timer, which fires while they are parked.
    const FIBERS: usize = 100;
    let barrier = Arc::new(tokio::sync::Barrier::new(FIBERS));
    let leaders = green::run(move || {
        let waiters: Vec<_> = (0..FIBERS)
            .map(|_| {
                let barrier = barrier.clone();
                green::spawn(move || {
                    let leader = green::await_blocking(barrier.wait()).is_leader();
                    green::await_blocking(tokio::time::sleep(Duration::from_millis(1)));
                    leader
                })
            })
            .collect();
        waiters
            .into_iter()
            .filter_map(|waiter| waiter.join().unwrap().then_some(()))
            .count()
    });
    assert_eq!(leaders, 1);
}

#[test]
fn block_on_on_a_plain_thread_enters_the_shared_runtime_for_the_call() {
    let shared = green::run(|| Handle::current().id());
    assert!(Handle::try_current().is_err());
    let id = green::block_on(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Handle::current().id()
    });
    assert_eq!(id, shared);
    assert!(Handle::try_current().is_err(), "left after the call");
    // await_blocking outside a fiber is block_on. The context is there during the call
    // only: tokio's objects are made inside the future.
    green::await_blocking(async { tokio::time::sleep(Duration::from_millis(1)).await });
}

#[test]
fn block_on_keeps_the_context_a_plain_thread_entered_itself() {
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let _guard = tokio.enter();
    let id = green::block_on(async {
        tokio::time::sleep(Duration::from_millis(1)).await;
        Handle::current().id()
    });
    assert_eq!(id, tokio.handle().id());
}

#[test]
fn unblock_jobs_run_inside_the_runtimes_context() {
    let (fiber, job) = green::run(|| {
        let job = green::unblock(|| {
            // tokio's way to wait on a blocking thread works there too.
            Handle::current().block_on(tokio::time::sleep(Duration::from_millis(1)));
            Handle::current().id()
        });
        (Handle::current().id(), job)
    });
    assert_eq!(job, fiber);
}

#[test]
fn a_tokio_future_made_in_one_fiber_completes_in_a_fiber_on_another_worker() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let sleep = runtime.run(|| Box::pin(tokio::time::sleep(Duration::from_millis(5))));
    // Spawned from this thread: on the other worker than the first run's fiber.
    let waited = runtime.spawn(move || green::await_blocking(sleep));
    waited.join().unwrap();
}

#[test]
fn a_tokio_future_made_in_one_block_on_call_completes_in_another() {
    // The context lasts for the call, but what was made in it belongs to the
    // process-wide runtime, which lives on.
    let (sleep, made_in) = green::block_on(async {
        let sleep = Box::pin(tokio::time::sleep(Duration::from_millis(1)));
        (sleep, Handle::current().id())
    });
    assert!(Handle::try_current().is_err());
    green::block_on(sleep);
    assert_eq!(made_in, green::run(|| Handle::current().id()));
}

#[test]
fn a_tokio_future_made_on_a_plain_thread_outside_any_context_panics_in_tokio() {
    // Its constructor looks for the context before `block_on` is called (as with
    // `tokio::runtime::Runtime::block_on`): make it inside the future instead, as above.
    let made_outside = std::panic::catch_unwind(|| {
        green::block_on(tokio::time::sleep(Duration::from_millis(1)));
    });
    assert!(made_outside.is_err());
    green::block_on(async { tokio::time::sleep(Duration::from_millis(1)).await });
}
