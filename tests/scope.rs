//! Scoped fibers (`green::scope`): borrowing from the caller, waiting from a fiber or a
//! thread, panics in the fibers and in the scope's closure, nesting, and what a runtime's
//! shutdown does to a scope.

mod common;

use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use common::{one_worker, within};

/// How many fibers the tests that want many spawn: fewer under QEMU, where a switch costs
/// fifty times more.
fn many() -> usize {
    if cfg!(target_arch = "x86_64") {
        1000
    } else {
        200
    }
}

/// The message of a panic payload that is a string.
fn message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

/// Pushes an event to a log borrowed from the caller when dropped.
struct PushOnDrop<'a>(&'a Mutex<Vec<&'static str>>, &'static str);

impl Drop for PushOnDrop<'_> {
    fn drop(&mut self) {
        self.0.lock().unwrap().push(self.1);
    }
}

#[test]
fn fibers_modify_disjoint_parts_of_a_borrowed_vec_and_the_caller_sees_it_after() {
    let numbers = within(60, "a scope over split_at_mut", || {
        let mut numbers: Vec<u64> = (0..16).collect();
        let (left, right) = numbers.split_at_mut(8);
        green::scope(|s| {
            let (a, b) = left.split_at_mut(4);
            let (c, d) = right.split_at_mut(4);
            for (factor, part) in [(10, a), (100, b), (1000, c), (10000, d)] {
                s.spawn(move || {
                    for n in part.iter_mut() {
                        *n *= factor;
                        green::yield_now(); // the fibers interleave
                    }
                });
            }
        });
        numbers
    });
    let expected: Vec<u64> = (0..16)
        .map(|n| n * [10, 100, 1000, 10000][n as usize / 4])
        .collect();
    assert_eq!(numbers, expected);
}

#[test]
fn a_scope_on_a_plain_thread_runs_its_fibers_on_the_global_runtime() {
    let (caller_in_fiber, fibers_in_fiber, sum) = within(60, "a scope on a plain thread", || {
        let caller_in_fiber = green::in_fiber();
        let values = [1, 2, 3, 4];
        let in_fiber = AtomicUsize::new(0);
        let sum = green::scope(|s| {
            let handles: Vec<_> = values
                .iter()
                .map(|v| {
                    let in_fiber = &in_fiber;
                    s.spawn(move || {
                        if green::in_fiber() {
                            in_fiber.fetch_add(1, Ordering::SeqCst);
                        }
                        *v * 10
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum::<i32>()
        });
        (caller_in_fiber, in_fiber.into_inner(), sum)
    });
    assert!(!caller_in_fiber);
    assert_eq!(fibers_in_fiber, 4);
    assert_eq!(sum, 100);
}

#[test]
fn a_scope_in_a_fiber_parks_it_while_its_worker_runs_other_fibers() {
    // One worker: the scoped fiber waits for a fiber outside the scope, which only runs
    // if the caller's wait parks the caller instead of blocking the worker's thread.
    let (received, outsider_ran_first) = within(60, "a scope in a one-worker runtime", || {
        one_worker().run(|| {
            let (to_scoped, from_outsider) = green::sync::channel();
            let outsider_ran = Arc::new(AtomicBool::new(false));
            let ran = outsider_ran.clone();
            let outsider = green::spawn(move || {
                ran.store(true, Ordering::SeqCst);
                to_scoped.send(42).unwrap();
            });
            let mut received = 0;
            green::scope(|s| {
                s.spawn(|| received = from_outsider.recv().unwrap());
                // The closure returns at once: the caller then waits in `scope`.
            });
            let seen = (received, outsider_ran.load(Ordering::SeqCst));
            outsider.join().unwrap();
            seen
        })
    });
    assert_eq!(received, 42);
    assert!(outsider_ran_first);
}

#[test]
fn a_panic_in_a_scoped_fiber_is_re_raised_after_the_others_finished() {
    let (payload, finished) = within(60, "a scope with a panicking fiber", || {
        let finished = AtomicUsize::new(0);
        let (panicked_tx, panicked_rx) = green::sync::channel::<()>();
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            green::scope(|s| {
                // The others start their work only once the panic is under way.
                for _ in 0..4 {
                    let panicked_rx = panicked_rx.clone();
                    let finished = &finished;
                    s.spawn(move || {
                        let _ = panicked_rx.recv(); // Err once the panicking fiber is gone
                        for _ in 0..10 {
                            green::yield_now();
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
                drop(panicked_rx);
                s.spawn(move || {
                    let _announce = panicked_tx; // dropped as this fiber unwinds
                    panic!("scoped fiber failed");
                });
            })
        }));
        (result.unwrap_err(), finished.into_inner())
    });
    assert_eq!(message(&*payload), "scoped fiber failed");
    assert_eq!(
        finished, 4,
        "scope re-raised the panic before the others finished"
    );
}

#[test]
fn scope_re_raises_the_panic_of_the_earliest_spawned_unjoined_fiber() {
    let payload = within(60, "a scope with two panicking fibers", || {
        panic::catch_unwind(|| {
            green::scope(|s| {
                let (second_panicked_tx, second_panicked_rx) = green::sync::channel::<()>();
                s.spawn(move || {
                    let _ = second_panicked_rx.recv(); // the other panics first
                    panic!("first spawned");
                });
                s.spawn(move || {
                    let _announce = second_panicked_tx;
                    panic!("second spawned");
                });
            })
        })
        .unwrap_err()
    });
    assert_eq!(message(&*payload), "first spawned");
}

#[test]
fn a_panic_in_the_scope_closure_waits_for_its_fibers_before_it_goes_on() {
    let (payload, finished) = within(60, "a scope whose closure panics", || {
        let finished = AtomicUsize::new(0);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            green::scope(|s| {
                let (release_tx, release_rx) = green::sync::channel::<()>();
                for _ in 0..4 {
                    let release_rx = release_rx.clone();
                    let finished = &finished;
                    s.spawn(move || {
                        // Err once the closure's locals are dropped by its panic.
                        let _ = release_rx.recv();
                        for _ in 0..10 {
                            green::yield_now();
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                }
                let _release = release_tx;
                panic!("the scope's closure failed");
            })
        }));
        (result.unwrap_err(), finished.into_inner())
    });
    assert_eq!(message(&*payload), "the scope's closure failed");
    assert_eq!(finished, 4, "the panic went on before the fibers finished");
}

#[test]
fn the_scope_closure_panic_wins_over_a_fiber_panic() {
    let payload = within(60, "a scope where both panic", || {
        panic::catch_unwind(|| {
            green::scope(|s| {
                s.spawn(|| panic!("fiber"));
                panic!("closure");
            })
        })
        .unwrap_err()
    });
    assert_eq!(message(&*payload), "closure");
}

#[test]
fn a_joined_handle_gives_the_value_or_the_panic_which_scope_does_not_re_raise() {
    let (value, panicked, after) = within(60, "joining in a scope", || {
        let text = String::from("borrowed text");
        let mut after = 0;
        let (value, panicked) = green::scope(|s| {
            let length = s.spawn(|| text.len());
            let failing = s.spawn(|| -> usize { panic!("seen by the joiner") });
            let error = failing.join().unwrap_err();
            let panicked =
                error.is_panic() && message(&*error.into_panic()) == "seen by the joiner";
            (length.join().unwrap(), panicked)
        });
        after += 1;
        (value, panicked, after)
    });
    assert_eq!(value, 13);
    assert!(panicked);
    assert_eq!(after, 1, "scope returned normally");
}

#[test]
fn a_scoped_fiber_may_return_a_borrow_of_the_callers_data() {
    let slice_sum = within(60, "a scoped fiber returning a borrow", || {
        let data: Vec<i32> = (1..=5).collect();
        green::scope(|s| {
            let middle: &[i32] = s.spawn(|| &data[1..4]).join().unwrap();
            middle.iter().sum::<i32>()
        })
    });
    assert_eq!(slice_sum, 9);
}

#[test]
fn scoped_fibers_spawn_into_their_own_scope_and_nested_scopes_borrow_from_both() {
    let (totals, inner) = within(60, "nested spawns and scopes", || {
        green::run(|| {
            let totals: Vec<AtomicUsize> = (0..4).map(|_| AtomicUsize::new(0)).collect();
            let mut inner = vec![0; 4];
            green::scope(|s| {
                let totals = &totals;
                s.spawn(move || {
                    // Spawns into the same scope, from inside one of its fibers.
                    for (i, total) in totals.iter().enumerate() {
                        s.spawn(move || total.fetch_add(i + 1, Ordering::SeqCst));
                    }
                });
                let inner = &mut inner;
                s.spawn(move || {
                    let local = [10, 20, 30, 40];
                    // A scope inside a scoped fiber: borrows the fiber's own stack and
                    // the outer caller's data at once.
                    green::scope(|t| {
                        for (slot, value) in inner.iter_mut().zip(&local) {
                            t.spawn(move || *slot = *value + 1);
                        }
                    });
                });
            });
            let totals: Vec<usize> = totals.iter().map(|t| t.load(Ordering::SeqCst)).collect();
            (totals, inner)
        })
    });
    assert_eq!(totals, [1, 2, 3, 4]);
    assert_eq!(inner, [11, 21, 31, 41]);
}

#[test]
fn many_scoped_fibers_each_write_their_own_slot() {
    let n = many();
    let (slots, count) = within(120, "many scoped fibers", move || {
        let mut slots = vec![0usize; n];
        let count = AtomicUsize::new(0);
        green::scope(|s| {
            for (i, slot) in slots.iter_mut().enumerate() {
                let count = &count;
                s.spawn(move || {
                    green::yield_now();
                    *slot = i * 2;
                    count.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        (slots, count.into_inner())
    });
    assert_eq!(count, n);
    assert!(slots.iter().enumerate().all(|(i, &slot)| slot == i * 2));
}

#[test]
fn a_panic_among_many_unjoined_fibers_is_re_raised() {
    // More fibers than one sweep of the unjoined handles holds: the panicking fiber's
    // handle may be swept out before the scope ends.
    let n = many();
    let (payload, finished) = within(120, "many unjoined fibers, one panicking", move || {
        let finished = AtomicUsize::new(0);
        let result = panic::catch_unwind(AssertUnwindSafe(|| {
            green::scope(|s| {
                for i in 0..n {
                    let finished = &finished;
                    s.spawn(move || {
                        if i == 3 {
                            panic!("fiber 3");
                        }
                        finished.fetch_add(1, Ordering::SeqCst);
                    });
                    if i % 16 == 0 {
                        green::yield_now(); // lets fibers end while others are spawned
                    }
                }
            })
        }));
        (result.unwrap_err(), finished.into_inner())
    });
    assert_eq!(message(&*payload), "fiber 3");
    assert_eq!(finished, n - 1);
}

/// Joins a scoped fiber's handle when dropped, logs whether it was cancelled, and tells
/// another fiber it is done.
struct JoinWhenDropped<'scope, 'a> {
    handle: Option<green::ScopedJoinHandle<'scope, ()>>,
    log: &'a Mutex<Vec<&'static str>>,
    joined: green::sync::Sender<()>,
}

impl Drop for JoinWhenDropped<'_, '_> {
    fn drop(&mut self) {
        let cancelled = self
            .handle
            .take()
            .unwrap()
            .join()
            .unwrap_err()
            .is_cancelled();
        self.log.lock().unwrap().push(if cancelled {
            "its handle joined: cancelled"
        } else {
            "its handle joined: not cancelled"
        });
        let _ = self.joined.send(());
    }
}

/// Sends the log, having added the last event, when dropped.
struct SendLogWhenDropped<'a>(
    &'a Mutex<Vec<&'static str>>,
    mpsc::Sender<Vec<&'static str>>,
);

impl Drop for SendLogWhenDropped<'_> {
    fn drop(&mut self) {
        let mut log = self.0.lock().unwrap();
        log.push("the caller left scope");
        let _ = self.1.send(log.clone());
    }
}

#[test]
fn a_shutdown_cancels_scoped_fibers_and_their_caller_leaves_scope_only_after_them() {
    let log = within(60, "a runtime dropped while a scope waits", || {
        let runtime = green::Runtime::new().unwrap();
        let (log_tx, log_rx) = mpsc::channel();
        let (ready_tx, ready_rx) = mpsc::channel();
        runtime.spawn(move || {
            let log = Mutex::new(Vec::new());
            let _send = SendLogWhenDropped(&log, log_tx);
            let log = &log;
            green::scope(|s| {
                let (joined_tx, joined_rx) = green::sync::channel::<()>();
                let first_ready = ready_tx.clone();
                let first = s.spawn(move || {
                    let _unwound = PushOnDrop(log, "the joined fiber unwound");
                    first_ready.send(()).unwrap();
                    green::sleep(Duration::from_secs(3600));
                });
                // Not joined by hand: its destructor waits until the caller's has joined
                // the other one, so it ends last; `scope` must wait for it all the same.
                s.spawn(move || {
                    struct Last<'a>(&'a Mutex<Vec<&'static str>>, green::sync::Receiver<()>);
                    impl Drop for Last<'_> {
                        fn drop(&mut self) {
                            let _ = self.1.recv();
                            self.0.lock().unwrap().push("the unjoined fiber unwound");
                        }
                    }
                    let _last = Last(log, joined_rx);
                    ready_tx.send(()).unwrap();
                    green::sleep(Duration::from_secs(3600));
                });
                let _join = JoinWhenDropped {
                    handle: Some(first),
                    log,
                    joined: joined_tx,
                };
                green::sleep(Duration::from_secs(3600));
            });
            log.lock().unwrap().push("scope returned"); // never: the caller is cancelled
        });
        ready_rx.recv().unwrap();
        ready_rx.recv().unwrap();
        drop(runtime);
        log_rx.recv().unwrap()
    });
    assert_eq!(
        log,
        [
            "the joined fiber unwound",
            "its handle joined: cancelled",
            "the unjoined fiber unwound",
            "the caller left scope",
        ]
    );
}

#[test]
fn a_shutdown_that_cancels_the_caller_as_it_waits_in_scope_still_waits_for_the_fibers() {
    // The scope's closure has returned: the cancellation reaches the caller in `scope`'s
    // own wait, which must wait again before the caller unwinds.
    let log = within(
        60,
        "a runtime dropped while its caller waits in scope",
        || {
            let runtime = one_worker();
            let (log_tx, log_rx) = mpsc::channel();
            let (ready_tx, ready_rx) = mpsc::channel();
            runtime.spawn(move || {
                let log = Mutex::new(Vec::new());
                let _send = SendLogWhenDropped(&log, log_tx);
                let log = &log;
                green::scope(|s| {
                    s.spawn(move || {
                        struct SlowToUnwind<'a>(&'a Mutex<Vec<&'static str>>);
                        impl Drop for SlowToUnwind<'_> {
                            fn drop(&mut self) {
                                // The caller, cancelled too, runs meanwhile.
                                green::sleep(Duration::from_millis(1));
                                self.0.lock().unwrap().push("the scoped fiber unwound");
                            }
                        }
                        let _slow = SlowToUnwind(log);
                        ready_tx.send(()).unwrap();
                        green::sleep(Duration::from_secs(3600));
                    });
                });
                log.lock().unwrap().push("scope returned"); // never: the caller is cancelled
            });
            ready_rx.recv().unwrap();
            drop(runtime);
            log_rx.recv().unwrap()
        },
    );
    assert_eq!(log, ["the scoped fiber unwound", "the caller left scope"]);
}

#[test]
fn a_scoped_fiber_abandoned_at_the_shutdown_deadline_keeps_its_scope_waiting_for_good() {
    let (in_time, returned, data_dropped, other_worker) =
        within(60, "shutdown_timeout with a stuck scoped fiber", || {
            let runtime = green::Runtime::builder().workers(2).build().unwrap();
            let returned = Arc::new(AtomicBool::new(false));
            let data_dropped = Arc::new(AtomicBool::new(false));
            let (ready_tx, ready_rx) = mpsc::channel();
            // Never sent on: the scoped fiber's destructor waits for good.
            let (stuck_tx, stuck_rx) = green::sync::channel::<()>();
            let (returned2, dropped2) = (returned.clone(), data_dropped.clone());
            runtime.spawn(move || {
                struct Data(Arc<AtomicBool>);
                impl Drop for Data {
                    fn drop(&mut self) {
                        self.0.store(true, Ordering::SeqCst);
                    }
                }
                struct StuckWhenDropped<'a>(&'a Data, green::sync::Receiver<()>);
                impl Drop for StuckWhenDropped<'_> {
                    fn drop(&mut self) {
                        let _ = self.1.recv();
                        assert!(!self.0.0.load(Ordering::SeqCst)); // still borrowed
                    }
                }
                let data = Data(dropped2);
                let here = green::test_support::worker_index();
                let (started_tx, started_rx) = mpsc::channel();
                green::scope(|s| {
                    let data = &data;
                    s.spawn(move || {
                        let _stuck = StuckWhenDropped(data, stuck_rx);
                        started_tx
                            .send(green::test_support::worker_index())
                            .unwrap();
                        green::sleep(Duration::from_secs(3600));
                    });
                    // Holds this worker's thread until the scoped fiber started: an idle
                    // sibling takes it, so the two wait on different workers, and the
                    // abandonment of one is not the other's.
                    let there = started_rx.recv().unwrap();
                    ready_tx.send(there != here).unwrap();
                });
                returned2.store(true, Ordering::SeqCst);
            });
            let other_worker = ready_rx.recv().unwrap();
            let in_time = runtime.shutdown_timeout(Duration::from_millis(300));
            // Read before the scoped fiber can be woken: a worker that has not yet seen
            // the deadline when `shutdown_timeout` returns may still run a fiber woken
            // then, and this one would finish, end the scope and drop the data (in 1 of
            // 10 loaded runs under QEMU).
            let outcome = (
                in_time,
                returned.load(Ordering::SeqCst),
                data_dropped.load(Ordering::SeqCst),
                other_worker,
            );
            drop(stuck_tx);
            outcome
        });
    assert!(other_worker, "the scoped fiber ran on the other worker");
    assert!(!in_time, "fibers were abandoned");
    assert!(!returned, "scope returned while its fiber was abandoned");
    assert!(!data_dropped, "the borrowed data was dropped");
}
