//! `green::fiber::scope`: fibers made without `unsafe`, which may borrow from the caller,
//! and which the scope drops, unwinding them, before it returns, even when their handles
//! were leaked.

mod common;

use std::cell::{Cell, RefCell};
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use common::{one_worker, within};
use green::fiber::{self, Builder, Resume, ScopedFiber};

/// Pushes its name to a log when dropped.
struct Logs<'a>(&'a RefCell<Vec<&'static str>>, &'static str);

impl Drop for Logs<'_> {
    fn drop(&mut self) {
        self.0.borrow_mut().push(self.1);
    }
}

/// Makes a fiber in `scope` that pushes `name` to `log` when it unwinds, and resumes it
/// to its one suspension.
fn suspended<'scope>(
    scope: &'scope fiber::Scope<'scope, '_>,
    log: &'scope RefCell<Vec<&'static str>>,
    name: &'static str,
) -> ScopedFiber<'scope, ()> {
    let mut fiber = scope
        .fiber(move |suspender| {
            let _guard = Logs(log, name);
            suspender.suspend();
        })
        .unwrap();
    assert!(matches!(fiber.resume(), Resume::Yielded));
    fiber
}

#[test]
fn fibers_borrow_mutably_from_the_caller_and_return_values() {
    let mut counter = 0;
    let total = Cell::new(0);
    fiber::scope(|scope| {
        let counter = &mut counter;
        let mut a = scope
            .fiber(|suspender| {
                for _ in 0..3 {
                    *counter += 1;
                    suspender.suspend();
                }
                "a"
            })
            .unwrap();
        let mut b = scope
            .fiber(|suspender| {
                for i in 0..3 {
                    total.set(total.get() + i);
                    suspender.suspend();
                }
                "b"
            })
            .unwrap();
        for _ in 0..3 {
            assert!(matches!(a.resume(), Resume::Yielded));
            assert!(matches!(b.resume(), Resume::Yielded));
        }
        assert!(matches!(a.resume(), Resume::Finished("a")));
        assert!(matches!(b.resume(), Resume::Finished("b")));
        assert!(a.is_finished() && b.is_finished());
    });
    assert_eq!(counter, 3);
    assert_eq!(total.get(), 3);
}

#[test]
fn dropping_a_handle_unwinds_its_fiber_at_once() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        let mut fiber = scope
            .fiber(|suspender| {
                let _guard = Logs(&log, "unwound");
                suspender.suspend();
                unreachable!("resumed after its handle was dropped");
            })
            .unwrap();
        assert!(matches!(fiber.resume(), Resume::Yielded));
        drop(fiber);
        log.borrow_mut().push("dropped");
    });
    assert_eq!(*log.borrow(), ["unwound", "dropped"]);
}

#[test]
fn a_leaked_handle_is_unwound_when_the_scope_ends_and_before_it_returns() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        std::mem::forget(suspended(scope, &log, "unwound"));
        log.borrow_mut().push("scope's closure returns");
    });
    log.borrow_mut().push("scope returned");
    assert_eq!(
        *log.borrow(),
        ["scope's closure returns", "unwound", "scope returned"]
    );
}

#[test]
fn leaked_fibers_are_unwound_newest_first() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        for name in ["first", "second", "third"] {
            std::mem::forget(suspended(scope, &log, name));
        }
    });
    assert_eq!(*log.borrow(), ["third", "second", "first"]);
}

#[test]
fn a_leaked_fiber_that_never_started_has_its_closure_dropped() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        let guard = Logs(&log, "closure dropped");
        let fiber = scope
            .fiber(move |_| {
                let _guard = guard;
                unreachable!("never resumed");
            })
            .unwrap();
        assert!(!fiber.is_started());
        std::mem::forget(fiber);
        assert!(log.borrow().is_empty());
    });
    assert_eq!(*log.borrow(), ["closure dropped"]);
}

#[test]
fn a_panic_in_the_scope_unwinds_its_fibers_and_then_goes_on() {
    let log = RefCell::new(Vec::new());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        fiber::scope(|scope| {
            let _kept = suspended(scope, &log, "kept");
            std::mem::forget(suspended(scope, &log, "leaked"));
            panic::panic_any("the scope's own panic");
        })
    }));
    let payload = outcome.expect_err("the scope's panic goes on");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the scope's own panic")
    );
    // `kept` is a local of the closure, dropped as it unwinds; the leaked one after.
    assert_eq!(*log.borrow(), ["kept", "leaked"]);
}

#[test]
fn fibers_made_while_the_scope_ends_are_dropped_too() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        let log = &log;
        /// Makes, resumes and leaks one more fiber of the scope when dropped.
        struct MakesAnother<'scope, 'env>(
            &'scope fiber::Scope<'scope, 'env>,
            &'scope RefCell<Vec<&'static str>>,
        );
        impl Drop for MakesAnother<'_, '_> {
            fn drop(&mut self) {
                std::mem::forget(suspended(self.0, self.1, "made during the end"));
                self.1.borrow_mut().push("made another");
            }
        }
        let mut fiber = scope
            .fiber(move |suspender| {
                let _guard = MakesAnother(scope, log);
                suspender.suspend();
            })
            .unwrap();
        assert!(matches!(fiber.resume(), Resume::Yielded));
        std::mem::forget(fiber);
    });
    assert_eq!(*log.borrow(), ["made another", "made during the end"]);
}

#[test]
fn a_fiber_that_owns_its_own_handle_is_unwound() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        let slot: Rc<RefCell<Option<ScopedFiber<'_, ()>>>> = Rc::new(RefCell::new(None));
        let kept = Rc::clone(&slot);
        let log = &log;
        let mut fiber = scope
            .fiber(move |suspender| {
                let _slot = kept;
                let _guard = Logs(log, "unwound");
                suspender.suspend();
            })
            .unwrap();
        assert!(matches!(fiber.resume(), Resume::Yielded));
        // A cycle: the handle is reachable only from the fiber's own stack.
        *slot.borrow_mut() = Some(fiber);
        drop(slot);
    });
    assert_eq!(*log.borrow(), ["unwound"]);
}

thread_local! {
    static LENT: Box<[u64; 4]> = Box::new([7; 4]);
}

#[test]
fn a_thread_local_lent_by_a_leaked_fiber_stays_valid_until_its_borrower_ends() {
    // The fiber lends a thread-local of its thread to a scoped thread, suspends, and its
    // handle is leaked. The scope unwinds the fiber before returning, which ends the
    // scoped thread's borrow before the fiber's thread can exit and free the thread-local.
    let borrower_done = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|threads| {
        threads.spawn(|| {
            fiber::scope(|scope| {
                let mut fiber = scope
                    .fiber(|suspender| {
                        LENT.with(|lent| {
                            let stop = AtomicBool::new(false);
                            std::thread::scope(|inner| {
                                /// Tells the borrower to stop, as the fiber unwinds.
                                struct Stop<'a>(&'a AtomicBool);
                                impl Drop for Stop<'_> {
                                    fn drop(&mut self) {
                                        self.0.store(true, Ordering::Release);
                                    }
                                }
                                let _stop = Stop(&stop);
                                inner.spawn(|| {
                                    while !stop.load(Ordering::Acquire) {
                                        assert_eq!(**lent, [7; 4]);
                                        reads.fetch_add(1, Ordering::Relaxed);
                                        std::thread::yield_now();
                                    }
                                    borrower_done.store(true, Ordering::Release);
                                });
                                suspender.suspend();
                            });
                        });
                    })
                    .unwrap();
                assert!(matches!(fiber.resume(), Resume::Yielded));
                std::mem::forget(fiber);
            });
            // The borrower has ended: the scope joined it while unwinding the fiber.
            assert!(borrower_done.load(Ordering::Acquire));
        });
    });
    assert!(borrower_done.load(Ordering::Acquire));
}

#[test]
fn a_builder_names_and_sizes_a_scoped_fiber() {
    fiber::scope(|scope| {
        let mut fiber = Builder::new()
            .name("scoped")
            .stack_size(512 * 1024)
            .build_scoped(scope, |_| 5)
            .unwrap();
        assert_eq!(fiber.name().as_deref(), Some("scoped"));
        assert!(fiber.stack_size() >= 512 * 1024);
        fiber.set_name("renamed");
        assert_eq!(fiber.name().as_deref(), Some("renamed"));
        assert!(matches!(fiber.resume(), Resume::Finished(5)));
    });
}

#[test]
fn a_fiber_cannot_suspend_through_another_fibers_suspender() {
    // A nested scope lets a fiber's closure borrow its parent's suspender; using it from
    // the nested fiber's stack is refused with a panic, not a switch to the wrong stack.
    let message = fiber::scope(|scope| {
        let mut outer = scope
            .fiber(|suspender| {
                fiber::scope(|inner_scope| {
                    let mut inner = inner_scope.fiber(|_| suspender.suspend()).unwrap();
                    match inner.resume() {
                        Resume::Panicked(payload) => payload
                            .downcast_ref::<&str>()
                            .map(|message| message.to_string())
                            .unwrap_or_default(),
                        _ => "not refused".to_string(),
                    }
                })
            })
            .unwrap();
        match outer.resume() {
            Resume::Finished(message) => message,
            _ => "the outer fiber did not finish".to_string(),
        }
    });
    assert!(message.contains("not on its own stack"), "{message}");
}

#[test]
fn a_scoped_fiber_inside_a_task_may_block_in_green() {
    let outcome = within(30, "a scoped fiber that blocks inside a task", || {
        one_worker().run(|| {
            fiber::scope(|scope| {
                let mut fiber = scope
                    .fiber(|suspender| {
                        // Parks the task that resumed the fiber, with the fiber's stack.
                        green::sleep(Duration::from_millis(1));
                        suspender.suspend();
                        green::sleep(Duration::from_millis(1));
                        "slept twice"
                    })
                    .unwrap();
                assert!(matches!(fiber.resume(), Resume::Yielded));
                green::yield_now();
                match fiber.resume() {
                    Resume::Finished(outcome) => outcome,
                    _ => "not finished",
                }
            })
        })
    });
    assert_eq!(outcome, "slept twice");
}

#[test]
fn a_task_parked_inside_a_scoped_fiber_is_unwound_through_it_at_shutdown() {
    let unwound = within(30, "a runtime dropped under a scoped fiber", || {
        static FIBER_UNWOUND: AtomicBool = AtomicBool::new(false);
        static SCOPE_SAW_CANCELLATION: AtomicBool = AtomicBool::new(false);
        let runtime = one_worker();
        let (parked, is_parked) = std::sync::mpsc::channel();
        let (_never, receiver) = green::sync::channel::<()>();
        runtime.spawn(move || {
            fiber::scope(|scope| {
                let mut fiber = scope
                    .fiber(|_| {
                        /// Notes that the fiber's stack was unwound.
                        struct Unwound;
                        impl Drop for Unwound {
                            fn drop(&mut self) {
                                FIBER_UNWOUND.store(true, Ordering::SeqCst);
                            }
                        }
                        let _unwound = Unwound;
                        parked.send(()).unwrap();
                        // Parks the task for good: nothing is ever sent.
                        let _ = receiver.recv();
                    })
                    .unwrap();
                if let Resume::Panicked(payload) = fiber.resume() {
                    SCOPE_SAW_CANCELLATION
                        .store(green::is_cancellation(&*payload), Ordering::SeqCst);
                    panic::resume_unwind(payload);
                }
            });
        });
        is_parked.recv().unwrap();
        drop(runtime);
        (
            FIBER_UNWOUND.load(Ordering::SeqCst),
            SCOPE_SAW_CANCELLATION.load(Ordering::SeqCst),
        )
    });
    assert_eq!(unwound, (true, true));
}

/// Panics when dropped.
struct PanicsOnDrop(&'static str);

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic::panic_any(self.0);
    }
}

#[test]
fn a_panic_out_of_dropping_one_fiber_waits_until_the_older_ones_are_dropped() {
    // The newest fiber never started, and a value its closure captured panics when the
    // scope drops it: the older leaked fiber is still unwound before the panic goes on.
    let log = RefCell::new(Vec::new());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        fiber::scope(|scope| {
            std::mem::forget(suspended(scope, &log, "older unwound"));
            let bomb = PanicsOnDrop("a captured value's drop");
            std::mem::forget(scope.fiber(move |_| drop(bomb)).unwrap());
            log.borrow_mut().push("scope's closure returns");
        })
    }));
    let payload = outcome.expect_err("the drop's panic goes on");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"a captured value's drop")
    );
    assert_eq!(*log.borrow(), ["scope's closure returns", "older unwound"]);
}

#[test]
fn a_panic_out_of_dropping_a_fiber_while_the_scope_unwinds_is_dropped() {
    let log = RefCell::new(Vec::new());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        fiber::scope(|scope| {
            std::mem::forget(suspended(scope, &log, "older unwound"));
            let bomb = PanicsOnDrop("a captured value's drop");
            std::mem::forget(scope.fiber(move |_| drop(bomb)).unwrap());
            panic::panic_any("the scope's own panic");
        })
    }));
    // The scope's own panic goes on; the second one did not abort the process.
    let payload = outcome.expect_err("the scope's panic goes on");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"the scope's own panic")
    );
    assert_eq!(*log.borrow(), ["older unwound"]);
}

#[test]
fn the_name_of_a_scoped_fiber_is_a_copy_that_holds_no_borrow() {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        let mut fiber = Builder::new()
            .name("named")
            .build_scoped(scope, |suspender| {
                let _guard = Logs(&log, "unwound");
                suspender.suspend();
            })
            .unwrap();
        assert!(matches!(fiber.resume(), Resume::Yielded));
        // Forgetting the name keeps nothing borrowed: the scope still drops the fiber.
        std::mem::forget(fiber.name());
        std::mem::forget(fiber);
    });
    assert_eq!(*log.borrow(), ["unwound"]);
}

/// A panic payload that panics, when dropped, with a payload that panics when dropped.
struct PayloadWhosePayloadPanics;

impl Drop for PayloadWhosePayloadPanics {
    fn drop(&mut self) {
        panic::panic_any(PanicsOnDrop("a payload's payload's drop"));
    }
}

/// Panics, when dropped, with a payload whose payload panics when dropped.
struct PanicsWithAChain;

impl Drop for PanicsWithAChain {
    fn drop(&mut self) {
        panic::panic_any(PayloadWhosePayloadPanics);
    }
}

#[test]
fn a_panic_whose_payload_panics_twice_as_it_drops_does_not_stop_the_end_of_the_scope() {
    // Two never-started fibers whose captured values panic as the scope drops them: the
    // second panic's payload is dropped, and panics with a payload that panics in turn.
    // The oldest leaked fiber is still unwound, and the first panic goes on.
    let log = RefCell::new(Vec::new());
    let outcome = panic::catch_unwind(AssertUnwindSafe(|| {
        fiber::scope(|scope| {
            std::mem::forget(suspended(scope, &log, "older unwound"));
            let second = PanicsWithAChain;
            std::mem::forget(scope.fiber(move |_| drop(second)).unwrap());
            let first = PanicsOnDrop("the first panic");
            std::mem::forget(scope.fiber(move |_| drop(first)).unwrap());
        })
    }));
    let payload = outcome.expect_err("the first panic goes on");
    assert_eq!(payload.downcast_ref::<&str>(), Some(&"the first panic"));
    assert_eq!(*log.borrow(), ["older unwound"]);
}

#[test]
fn a_panic_of_the_scope_is_not_lost_while_another_fiber_is_suspended_mid_unwind() {
    /// Suspends its fiber when dropped.
    struct SuspendsOnDrop<'a>(&'a fiber::Suspender);
    impl Drop for SuspendsOnDrop<'_> {
        fn drop(&mut self) {
            self.0.suspend();
        }
    }
    fiber::scope(|outer| {
        let mut unwinding = outer
            .fiber(|suspender| {
                let _guard = SuspendsOnDrop(suspender);
                panic::panic_any("the outer fiber's panic");
            })
            .unwrap();
        // Suspended in a destructor while its panic unwinds: `thread::panicking()` is now
        // true on the whole thread.
        assert!(matches!(unwinding.resume(), Resume::Yielded));
        assert!(std::thread::panicking());
        let inner = panic::catch_unwind(|| {
            fiber::scope(|scope| {
                let bomb = PanicsOnDrop("a captured value's drop");
                std::mem::forget(scope.fiber(move |_| drop(bomb)).unwrap());
            })
        });
        let payload = inner.expect_err("the inner scope's panic goes on");
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"a captured value's drop")
        );
        match unwinding.resume() {
            Resume::Panicked(payload) => assert_eq!(
                payload.downcast_ref::<&str>(),
                Some(&"the outer fiber's panic")
            ),
            _ => panic!("the outer fiber goes on unwinding"),
        }
    });
}

/// A fiber that takes the handle in `slot`, calls `use_it` on it, and so suspends in the
/// middle of the handle's method; it is then leaked, newer than the handle's fiber. The
/// scope ends with both: the handle's cell must not be borrowed then.
fn suspend_inside_a_method_of_a_handle(
    use_it: impl FnOnce(&mut ScopedFiber<'_, ()>, &fiber::Suspender),
) -> Vec<&'static str> {
    let log = RefCell::new(Vec::new());
    fiber::scope(|scope| {
        let slot = Rc::new(RefCell::new(None));
        let taken = Rc::clone(&slot);
        let log = &log;
        let mut user = scope
            .fiber(move |suspender| {
                let _guard = Logs(log, "user unwound");
                let mut handle: ScopedFiber<'_, ()> = taken.borrow_mut().take().unwrap();
                use_it(&mut handle, suspender);
            })
            .unwrap();
        *slot.borrow_mut() = Some(suspended(scope, log, "handle's fiber unwound"));
        assert!(matches!(user.resume(), Resume::Yielded));
        std::mem::forget(user);
    });
    log.into_inner()
}

#[test]
fn a_name_whose_conversion_suspends_leaves_the_handle_unborrowed() {
    /// Suspends its fiber while it is converted into a name.
    struct SuspendsAsConverted<'a>(&'a fiber::Suspender);
    impl From<SuspendsAsConverted<'_>> for String {
        fn from(name: SuspendsAsConverted<'_>) -> String {
            name.0.suspend();
            "named".to_owned()
        }
    }
    let log = suspend_inside_a_method_of_a_handle(|handle, suspender| {
        handle.set_name(SuspendsAsConverted(suspender));
    });
    assert_eq!(log, ["handle's fiber unwound", "user unwound"]);
}

#[test]
fn a_debug_whose_writer_suspends_leaves_the_handle_unborrowed() {
    /// Suspends its fiber on each write.
    struct SuspendsOnWrite<'a>(&'a fiber::Suspender);
    impl std::fmt::Write for SuspendsOnWrite<'_> {
        fn write_str(&mut self, _: &str) -> std::fmt::Result {
            self.0.suspend();
            Ok(())
        }
    }
    let log = suspend_inside_a_method_of_a_handle(|handle, suspender| {
        let _ =
            std::fmt::Write::write_fmt(&mut SuspendsOnWrite(suspender), format_args!("{handle:?}"));
    });
    assert_eq!(log, ["handle's fiber unwound", "user unwound"]);
}
