//! The blocking pool behind `green::unblock` shuts down whatever its jobs do: a job whose
//! result or panic payload panics when the pool drops it leaves the pool thread alive and
//! counted, and a runtime dropped from one of its own jobs does not wait for the thread
//! that drops it. Jobs submitted together all run at once, even when they land while an
//! idle pool thread is being woken. A job runs on a plain thread: `green::spawn` there
//! goes to the global runtime.

mod common;

use common::within;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Barrier};
use std::time::Duration;

/// Panics when dropped.
struct PanicOnDrop;

impl Drop for PanicOnDrop {
    fn drop(&mut self) {
        panic!("PanicOnDrop was dropped");
    }
}

/// A job that panics with a [`PanicOnDrop`] payload.
fn panic_with_a_payload_that_panics_when_dropped() {
    std::panic::panic_any(PanicOnDrop)
}

/// A one-worker runtime.
fn runtime() -> green::Runtime {
    green::Runtime::builder().workers(1).build().unwrap()
}

/// Starts `job` on `runtime`'s pool from a fiber, cancels that fiber while the job runs
/// (so the pool, not the fiber, drops what the job leaves), then lets the job finish.
fn abandon_job<T: Send + 'static>(
    runtime: &green::Runtime,
    job: impl FnOnce() -> T + Send + 'static,
) {
    let (started_tx, started_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let fiber = runtime.spawn(move || {
        green::unblock(move || {
            started_tx.send(()).unwrap();
            let _ = release_rx.recv();
            job()
        })
    });
    started_rx.recv().unwrap();
    fiber.abort();
    assert!(fiber.join().err().is_some_and(|e| e.is_cancelled()));
    release_tx.send(()).unwrap();
}

/// `abandon_job` on a runtime of its own, then drops the runtime.
fn abandon_job_then_drop_runtime<T: Send + 'static>(job: impl FnOnce() -> T + Send + 'static) {
    let runtime = runtime();
    abandon_job(&runtime, job);
    drop(runtime);
}

#[test]
fn a_job_result_that_panics_when_the_pool_drops_it_does_not_hang_the_runtime_drop() {
    within(10, "dropping the runtime", || {
        abandon_job_then_drop_runtime(|| PanicOnDrop);
    });
}

#[test]
fn a_job_panic_payload_that_panics_when_the_pool_drops_it_does_not_hang_the_runtime_drop() {
    within(10, "dropping the runtime", || {
        abandon_job_then_drop_runtime(panic_with_a_payload_that_panics_when_dropped);
    });
}

#[test]
fn the_pool_keeps_serving_jobs_after_one_left_a_value_that_panics_when_dropped() {
    within(10, "a job after the abandoned one", || {
        let runtime = runtime();
        abandon_job(&runtime, || PanicOnDrop);
        let answer = runtime.run(|| green::unblock(|| 6 * 7));
        assert_eq!(answer, 42);
    });
}

#[test]
fn a_runtime_dropped_inside_its_own_unblock_job_shuts_down() {
    within(10, "dropping the runtime from its own job", || {
        let runtime = runtime();
        let (runtime_tx, runtime_rx) = mpsc::channel::<green::Runtime>();
        let (dropped_tx, dropped_rx) = mpsc::channel();
        let fiber = runtime.spawn(move || {
            green::unblock(move || {
                drop(runtime_rx.recv().unwrap());
                dropped_tx.send(()).unwrap();
            })
        });
        runtime_tx.send(runtime).unwrap();
        dropped_rx.recv().unwrap();
        // The shutdown cancelled the fiber that waited for the job.
        assert!(fiber.join().err().is_some_and(|e| e.is_cancelled()));
    });
}

#[test]
fn a_runtime_dropped_inside_its_own_unblock_job_still_waits_for_its_other_jobs() {
    within(10, "dropping the runtime from its own job", || {
        let runtime = runtime();
        let other_done = Arc::new(AtomicBool::new(false));
        let (runtime_tx, runtime_rx) = mpsc::channel::<green::Runtime>();
        let (other_started_tx, other_started_rx) = mpsc::channel();
        let (release_tx, release_rx) = mpsc::channel::<()>();
        let (dropped_tx, dropped_rx) = mpsc::channel();
        // Another job, on another pool thread, that ends only once released.
        let done = other_done.clone();
        let other = runtime.spawn(move || {
            green::unblock(move || {
                other_started_tx.send(()).unwrap();
                let _ = release_rx.recv();
                done.store(true, Ordering::SeqCst);
            })
        });
        other_started_rx.recv().unwrap();
        let dropper = runtime.spawn(move || {
            green::unblock(move || {
                drop(runtime_rx.recv().unwrap());
                // Whether the other job had finished when the drop returned.
                dropped_tx.send(other_done.load(Ordering::SeqCst)).unwrap();
            })
        });
        runtime_tx.send(runtime).unwrap();
        // The shutdown is under way once it has cancelled both waiting fibers.
        assert!(other.join().unwrap_err().is_cancelled());
        assert!(dropper.join().unwrap_err().is_cancelled());
        assert_eq!(
            dropped_rx.recv_timeout(Duration::from_millis(50)),
            Err(RecvTimeoutError::Timeout),
            "the drop returned while another pool thread was still busy"
        );
        release_tx.send(()).unwrap();
        assert!(
            dropped_rx.recv().unwrap(),
            "the drop returned before the other job had finished"
        );
    });
}

/// Waits until every thread of `runtime`'s blocking pool waits for a job (or none is left).
fn wait_until_the_pool_is_idle(runtime: &green::Runtime) {
    loop {
        let (threads, idle) = green::test_support::pool_threads(runtime);
        if idle == threads {
            return;
        }
        std::thread::yield_now();
    }
}

/// On a one-worker runtime whose one pool thread has gone idle, ten fibers each wait for
/// an `unblock` job, and the jobs wait for each other; returns how many jobs led.
fn ten_jobs_that_wait_for_each_other() -> usize {
    let runtime = runtime();
    runtime.run(|| green::unblock(|| ()));
    wait_until_the_pool_is_idle(&runtime);
    runtime.run(|| {
        let barrier = Arc::new(Barrier::new(10));
        let fibers: Vec<_> = (0..10)
            .map(|_| {
                let barrier = barrier.clone();
                green::spawn(move || green::unblock(move || barrier.wait().is_leader()))
            })
            .collect();
        fibers
            .into_iter()
            .map(|fiber| fiber.join().unwrap())
            .filter(|&leader| leader)
            .count()
    })
}

// Once hung: `submit` woke the idle thread for every job it queued while that thread had
// not yet taken the first, so the jobs queued behind one thread and the barrier never
// filled. Whether the jobs land before the woken thread takes the first is up to the OS,
// so ten runtimes try.
#[test]
fn jobs_submitted_while_an_idle_pool_thread_wakes_each_get_a_thread() {
    within(20, "ten unblock jobs that wait for each other", || {
        for _ in 0..10 {
            assert_eq!(ten_jobs_that_wait_for_each_other(), 1);
        }
    });
}

#[test]
fn a_spawn_inside_a_job_goes_to_the_global_runtime_and_a_handle_spawn_to_its_own() {
    let runtime = green::Runtime::builder()
        .workers(1)
        .name("pool-owner")
        .build()
        .unwrap();
    let handle = runtime.handle();
    let (global, own) = runtime.run(move || {
        green::unblock(move || {
            let name = || std::thread::current().name().unwrap().to_owned();
            let global = green::spawn(name).join().unwrap();
            let own = handle.spawn(name).join().unwrap();
            (global, own)
        })
    });
    assert!(global.starts_with("green-global"), "{global}");
    assert!(own.starts_with("pool-owner"), "{own}");
}
