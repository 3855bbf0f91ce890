//! Cancellation and shutdown: destructors that block while their fiber unwinds, the
//! shutdown's deadline, and what is left after it.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::Duration;

use common::{one_worker, within};

/// Blocks in its destructor on a `green::sync` channel until told to go on, saying first
/// that it got there.
struct BlocksWhenDropped {
    entered: green::sync::Sender<()>,
    proceed: green::sync::Receiver<()>,
    done: Arc<AtomicUsize>,
}

impl Drop for BlocksWhenDropped {
    fn drop(&mut self) {
        let _ = self.entered.send(());
        let _ = self.proceed.recv();
        green::sleep(Duration::from_millis(1)); // and a timer, for good measure
        self.done.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_destructor_of_an_aborted_fiber_can_sleep_lock_and_join() {
    let finished = within(60, "an aborted fiber's blocking destructor", || {
        one_worker().run(|| {
            struct Cleanup(Arc<green::sync::Mutex<u32>>, Arc<AtomicUsize>);
            impl Drop for Cleanup {
                fn drop(&mut self) {
                    green::sleep(Duration::from_millis(2));
                    *self.0.lock().unwrap() += 1; // contended: the main fiber holds it
                    let helper = green::spawn(|| 7);
                    assert_eq!(helper.join().unwrap(), 7);
                    self.1.fetch_add(1, Ordering::SeqCst);
                }
            }
            let lock = Arc::new(green::sync::Mutex::new(0));
            let done = Arc::new(AtomicUsize::new(0));
            let (parked_tx, parked_rx) = green::sync::channel();
            let (lock2, done2) = (lock.clone(), done.clone());
            let victim = green::spawn(move || {
                let _cleanup = Cleanup(lock2, done2);
                parked_tx.send(()).unwrap();
                green::sleep(Duration::from_secs(3600));
            });
            parked_rx.recv().unwrap();
            let guard = lock.lock().unwrap();
            victim.abort();
            green::sleep(Duration::from_millis(5)); // let the victim reach the lock
            drop(guard);
            let error = victim.join().unwrap_err();
            assert!(error.is_cancelled());
            (done.load(Ordering::SeqCst), *lock.lock().unwrap())
        })
    });
    assert_eq!(finished, (1, 1));
}

#[test]
fn a_destructor_that_blocks_at_shutdown_runs_to_its_end() {
    let done = Arc::new(AtomicUsize::new(0));
    let done2 = done.clone();
    let handle = within(
        60,
        "a shutdown whose fibers block in destructors",
        move || {
            let runtime = green::Runtime::new().unwrap();
            let (entered_tx, entered_rx) = green::sync::channel();
            let (proceed_tx, proceed_rx) = green::sync::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            // The one that blocks, and the one that lets it go on from its own destructor.
            let blocked = runtime.spawn(move || {
                let _blocks = BlocksWhenDropped {
                    entered: entered_tx,
                    proceed: proceed_rx,
                    done: done2,
                };
                ready_tx.send(()).unwrap();
                green::sleep(Duration::from_secs(3600));
            });
            ready_rx.recv().unwrap();
            let (started_tx, started_rx) = mpsc::channel();
            let releaser = runtime.spawn(move || {
                struct Release(green::sync::Sender<()>, green::sync::Receiver<()>);
                impl Drop for Release {
                    fn drop(&mut self) {
                        // Only once the other destructor waits: a message across workers
                        // (or to a fiber of this one) while both unwind.
                        let _ = self.1.recv();
                        let _ = self.0.send(());
                    }
                }
                let _release = Release(proceed_tx, entered_rx);
                started_tx.send(()).unwrap();
                green::sleep(Duration::from_secs(3600));
            });
            started_rx.recv().unwrap();
            drop(runtime);
            (blocked, releaser)
        },
    );
    assert_eq!(
        done.load(Ordering::SeqCst),
        1,
        "the destructor ran to its end"
    );
    assert!(handle.0.join().unwrap_err().is_cancelled());
    assert!(handle.1.join().unwrap_err().is_cancelled());
}

#[test]
fn a_fiber_spawned_from_a_destructor_at_shutdown_is_cancelled_not_lost() {
    let outcome = within(60, "spawn_local from a destructor at shutdown", || {
        let runtime = one_worker();
        let (outcome_tx, outcome_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        runtime.spawn(move || {
            struct SpawnsWhenDropped(mpsc::Sender<(bool, bool)>);
            impl Drop for SpawnsWhenDropped {
                fn drop(&mut self) {
                    let local = green::spawn_local(|| 1).join();
                    let shared = green::spawn(|| 2).join();
                    let _ = self.0.send((
                        local.is_err_and(|e| e.is_cancelled()),
                        shared.is_err_and(|e| e.is_cancelled()),
                    ));
                }
            }
            let _spawns = SpawnsWhenDropped(outcome_tx);
            ready_tx.send(()).unwrap();
            green::sleep(Duration::from_secs(3600));
        });
        ready_rx.recv().unwrap();
        drop(runtime);
        outcome_rx.recv().unwrap()
    });
    assert_eq!(outcome, (true, true));
}

#[test]
fn shutdown_timeout_abandons_a_destructor_that_never_returns_and_resolves_its_handle() {
    let (handle, in_time) = within(60, "shutdown_timeout with a stuck destructor", || {
        let runtime = one_worker();
        let (entered_tx, entered_rx) = green::sync::channel();
        let (proceed_tx, proceed_rx) = green::sync::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let handle = runtime.spawn(move || {
            let _blocks = BlocksWhenDropped {
                entered: entered_tx,
                proceed: proceed_rx,
                done: Arc::new(AtomicUsize::new(0)),
            };
            ready_tx.send(()).unwrap();
            green::sleep(Duration::from_secs(3600));
        });
        ready_rx.recv().unwrap();
        // `proceed_tx` is kept past the shutdown: the destructor waits for ever (if the
        // fiber reaches it before the deadline; if not, it is abandoned all the same).
        let in_time = runtime.shutdown_timeout(Duration::from_millis(200));
        drop((proceed_tx, entered_rx));
        (handle, in_time)
    });
    assert!(!in_time, "a fiber was abandoned: not everything stopped");
    assert!(handle.join().unwrap_err().is_cancelled());
}

thread_local! {
    /// What a fiber lends out in `a_worker_that_abandons_fibers_...`.
    static LENT: Vec<u64> = vec![7; 1024];
}

/// Whether a thread of this process is named `name`.
fn thread_named(name: &str) -> bool {
    std::fs::read_dir("/proc/self/task").unwrap().any(|task| {
        let comm = task.unwrap().path().join("comm");
        std::fs::read_to_string(comm).is_ok_and(|comm| comm.trim_end() == name)
    })
}

#[test]
fn a_worker_that_abandons_fibers_keeps_its_thread_and_the_thread_locals_they_lend() {
    struct SleepsWhenDropped;
    impl Drop for SleepsWhenDropped {
        fn drop(&mut self) {
            green::sleep(Duration::from_secs(3600));
        }
    }
    let (read_tx, read_rx) = mpsc::channel::<()>();
    let (sum_tx, sum_rx) = mpsc::channel();
    within(
        60,
        "a fiber that lends a thread-local, abandoned",
        move || {
            let runtime = green::Runtime::builder()
                .workers(1)
                .name("lender")
                .build()
                .unwrap();
            let (ready_tx, ready_rx) = mpsc::channel();
            // The fiber lends its worker thread's `LENT` to a scoped thread, then blocks for
            // good in a destructor as it unwinds: the scope never ends.
            runtime.spawn(move || {
                LENT.with(|lent| {
                    std::thread::scope(|threads| {
                        threads.spawn(move || {
                            while read_rx.recv().is_ok() {
                                sum_tx.send(lent.iter().sum::<u64>()).unwrap();
                            }
                        });
                        let _sleeps = SleepsWhenDropped;
                        ready_tx.send(()).unwrap();
                        green::sleep(Duration::from_secs(3600));
                    })
                })
            });
            ready_rx.recv().unwrap();
            assert!(!runtime.shutdown_timeout(Duration::from_millis(100)));
        },
    );
    // The worker's thread did not exit: `LENT` is still alive for the scoped thread.
    assert!(thread_named("lender-0"));
    let churn: Vec<Vec<u64>> = (0..256).map(|i| vec![i; 1024]).collect();
    read_tx.send(()).unwrap();
    assert_eq!(sum_rx.recv().unwrap(), 7 * 1024);
    drop(churn);
}

#[test]
fn shutdown_timeout_does_not_wait_for_a_blocking_job_past_its_timeout() {
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let (started_tx, started_rx) = mpsc::channel();
    let in_time = within(
        60,
        "shutdown_timeout with a blocking job that runs on",
        move || {
            let runtime = green::Runtime::new().unwrap();
            runtime.spawn(move || {
                green::unblock(move || {
                    started_tx.send(()).unwrap();
                    let _ = release_rx.recv(); // an hour, as far as the runtime knows
                })
            });
            started_rx.recv().unwrap();
            runtime.shutdown_timeout(Duration::from_millis(100))
        },
    );
    assert!(!in_time);
    drop(release_tx); // the job returns and its thread exits
}

#[test]
fn cancelled_fibers_end_when_the_runtime_drops_even_if_they_were_never_resumed() {
    let drops = Arc::new(AtomicUsize::new(0));
    let count = drops.clone();
    within(
        60,
        "dropping a runtime with unstarted and parked fibers",
        move || {
            let runtime = green::Runtime::builder().workers(2).build().unwrap();
            let (ready_tx, ready_rx) = mpsc::channel();
            runtime.spawn(move || {
                struct Counted(Arc<AtomicUsize>);
                impl Drop for Counted {
                    fn drop(&mut self) {
                        self.0.fetch_add(1, Ordering::SeqCst);
                    }
                }
                for _ in 0..20 {
                    // Some start, some wait to start when the runtime drops: either way the
                    // closure, and what it holds, is dropped.
                    let counted = Counted(count.clone());
                    green::spawn(move || {
                        let _counted = counted;
                        green::sleep(Duration::from_secs(3600));
                    });
                }
                ready_tx.send(()).unwrap();
                green::sleep(Duration::from_secs(3600));
            });
            ready_rx.recv().unwrap();
            drop(runtime);
        },
    );
    assert_eq!(drops.load(Ordering::SeqCst), 20);
}

/// An hour: a sleep that a test only gets past by being cancelled.
const FOREVER: Duration = Duration::from_secs(3600);

#[test]
fn a_fiber_that_catches_its_cancellation_unwinds_again_at_its_next_suspension() {
    // The cancellation comes with one wake. A fiber that catches its unwinding and parks
    // again must unwind there, before it parks: nothing would wake it a second time.
    let (caught, went_on, cancelled) = within(60, "a caught cancellation", || {
        one_worker().run(|| {
            let caught = Arc::new(AtomicUsize::new(0));
            let went_on = Arc::new(AtomicUsize::new(0));
            let task = {
                let (caught, went_on) = (caught.clone(), went_on.clone());
                green::spawn(move || {
                    let first = std::panic::catch_unwind(|| green::sleep(FOREVER));
                    if first.is_err() {
                        caught.fetch_add(1, Ordering::SeqCst);
                    }
                    drop(first); // the payload: the cancellation is requested again
                    green::sleep(FOREVER);
                    went_on.fetch_add(1, Ordering::SeqCst);
                })
            };
            green::yield_now(); // the task parks in its first sleep
            task.abort();
            let cancelled = task.join().unwrap_err().is_cancelled();
            (
                caught.load(Ordering::SeqCst),
                went_on.load(Ordering::SeqCst),
                cancelled,
            )
        })
    });
    assert_eq!((caught, went_on, cancelled), (1, 0, true));
}

#[test]
fn a_cancellation_delivered_in_a_fiber_of_the_task_s_own_unwinds_the_task_at_its_next_park() {
    // The cancellation unwinds the user's `Fiber` in which the task slept; the fiber hands
    // the payload back as `Panicked`. The task, which goes on, is cancelled at its next
    // suspension: joining it gives a cancelled error, not the value it would return.
    let (panicked, joined_cancelled) = within(60, "a cancellation caught by a Fiber", || {
        one_worker().run(|| {
            let (tx, rx) = mpsc::channel();
            let task = green::spawn(move || {
                // SAFETY: the fiber is not leaked while started.
                let mut fiber = unsafe {
                    green::fiber::Fiber::new(|_: &green::fiber::Suspender| green::sleep(FOREVER))
                }
                .unwrap();
                let panicked = matches!(fiber.resume(), green::fiber::Resume::Panicked(_));
                tx.send(panicked).unwrap();
                green::sleep(FOREVER);
                7
            });
            green::yield_now(); // the task's fiber parks in its sleep
            task.abort();
            let joined = task.join();
            (rx.recv().unwrap(), joined.is_err_and(|e| e.is_cancelled()))
        })
    });
    assert_eq!((panicked, joined_cancelled), (true, true));
}

#[test]
fn dropping_a_runtime_ends_a_fiber_that_caught_its_cancellation_and_parked_again() {
    // A server loop: it parks for the next request outside its `catch_unwind`, and its
    // request handler, inside, parks too. The shutdown's cancellation, delivered in the
    // handler, is caught there; the loop parks again for the next request and must unwind
    // there, or the runtime's drop would wait for ever.
    let caught = within(60, "dropping the runtime", || {
        let runtime = one_worker();
        let (handling_tx, handling_rx) = mpsc::channel();
        let (caught_tx, caught_rx) = mpsc::channel();
        runtime.spawn(move || {
            let (requests_tx, requests) = green::sync::channel::<()>();
            requests_tx.send(()).unwrap();
            while requests.recv().is_ok() {
                let handled = std::panic::catch_unwind(|| {
                    handling_tx.send(()).unwrap();
                    green::sleep(FOREVER);
                });
                caught_tx.send(handled.is_err()).unwrap();
            }
        });
        handling_rx.recv().unwrap();
        drop(runtime);
        caught_rx.try_iter().collect::<Vec<_>>()
    });
    assert_eq!(
        caught,
        [true],
        "the handler caught the cancellation once, then the loop ended"
    );
}

#[test]
fn a_supervisor_that_re_raises_cancellations_ends_when_its_runtime_drops() {
    // The pattern the docs of `is_cancellation` give: panics restart the service, a
    // cancellation goes through.
    let (restarts, cancellations) = within(60, "a supervisor at shutdown", || {
        let runtime = one_worker();
        let restarts = Arc::new(AtomicUsize::new(0));
        let (serving_tx, serving_rx) = mpsc::channel();
        let (seen_tx, seen_rx) = mpsc::channel();
        {
            let restarts = restarts.clone();
            runtime.spawn(move || {
                let mut first = true;
                loop {
                    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if std::mem::take(&mut first) {
                            panic!("the service fails once");
                        }
                        serving_tx.send(()).unwrap();
                        green::sleep(FOREVER);
                    }));
                    match served {
                        Err(payload) if green::is_cancellation(&*payload) => {
                            seen_tx.send(()).unwrap();
                            std::panic::resume_unwind(payload);
                        }
                        Err(_) => restarts.fetch_add(1, Ordering::SeqCst),
                        Ok(()) => return,
                    };
                }
            });
        }
        serving_rx.recv().unwrap();
        drop(runtime);
        (restarts.load(Ordering::SeqCst), seen_rx.try_iter().count())
    });
    assert_eq!((restarts, cancellations), (1, 1));
}
