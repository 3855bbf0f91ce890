//! A `green::fiber::Fiber` of the user's, resumed by a runtime's task, that blocks in
//! green: it may not suspend itself while `await_blocking` runs on its stack, so that no
//! poll or park ever goes on in the name of a task that has ended.

mod common;

use std::cell::RefCell;
use std::future::poll_fn;
use std::task::Poll;

use common::{one_worker, within};
use green::fiber::{Fiber, Resume, Suspender};

thread_local! {
    /// Where the fiber is kept between the two tasks that resume it.
    static KEPT: RefCell<Option<Fiber<()>>> = const { RefCell::new(None) };
}

/// The message of a `Resume::Panicked`, or a description of what came instead.
fn panic_message(outcome: Resume<()>) -> String {
    match outcome {
        Resume::Panicked(payload) => payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default(),
        Resume::Yielded => "yielded".into(),
        Resume::Finished(()) => "finished".into(),
    }
}

#[test]
fn a_user_fiber_cannot_suspend_from_the_poll_of_its_own_await_blocking() {
    let outcome = within(
        30,
        "a user fiber that suspends inside await_blocking",
        || {
            one_worker().run(|| {
                // The first task resumes the fiber, whose poll tries to suspend it, then
                // keeps it for a second task, after the first has ended.
                let first = green::spawn(|| {
                    // SAFETY: the fiber is not leaked while started.
                    let mut fiber = unsafe {
                        Fiber::new(|suspender: &Suspender| {
                            green::await_blocking(poll_fn(|_| {
                                suspender.suspend();
                                Poll::Ready(())
                            }));
                        })
                    }
                    .unwrap();
                    let outcome = fiber.resume();
                    KEPT.with(|kept| *kept.borrow_mut() = Some(fiber));
                    panic_message(outcome)
                });
                let message = first.join().unwrap();
                let second = green::spawn(|| {
                    KEPT.with(|kept| kept.borrow_mut().take().unwrap().is_finished())
                });
                (message, second.join().unwrap())
            })
        },
    );
    let (message, finished) = outcome;
    assert!(
        message.contains("from inside green::await_blocking"),
        "the suspend was refused: {message}"
    );
    assert!(
        finished,
        "the fiber ended with the panic, in the first task"
    );
}

#[test]
fn a_user_fiber_may_suspend_between_its_blocking_calls_and_block_again_in_another_task() {
    let steps = within(30, "a user fiber resumed by two tasks", || {
        one_worker().run(|| {
            let first = green::spawn(|| {
                // SAFETY: the fiber is not leaked while started.
                let mut fiber = unsafe {
                    Fiber::new(|suspender: &Suspender| {
                        green::sleep(std::time::Duration::from_millis(1)); // parks the task
                        suspender.suspend();
                        green::sleep(std::time::Duration::from_millis(1)); // another task now
                    })
                }
                .unwrap();
                let outcome = fiber.resume();
                KEPT.with(|kept| *kept.borrow_mut() = Some(fiber));
                matches!(outcome, Resume::Yielded)
            });
            let yielded = first.join().unwrap();
            let second = green::spawn(|| {
                let mut fiber = KEPT.with(|kept| kept.borrow_mut().take().unwrap());
                matches!(fiber.resume(), Resume::Finished(()))
            });
            (yielded, second.join().unwrap())
        })
    });
    assert_eq!(steps, (true, true));
}

#[test]
fn a_suspender_used_on_another_stack_is_refused() {
    // A fiber nested in the first reaches the first's suspender through a pointer; its
    // suspend would save the nested stack in the first fiber's name.
    let message = within(30, "a suspend from a nested fiber", || {
        let body = |suspender: &Suspender| {
            let suspender: *const Suspender = suspender;
            let nested_body = move |_: &Suspender| {
                // SAFETY (test): the outer fiber, and its suspender, outlive this call.
                unsafe { (*suspender).suspend() };
            };
            // SAFETY: the fiber is not leaked while started.
            let mut nested = unsafe { Fiber::new(nested_body) }.unwrap();
            panic_message(nested.resume())
        };
        // SAFETY: the fiber is not leaked while started.
        let mut outer = unsafe { Fiber::new(body) }.unwrap();
        match outer.resume() {
            Resume::Finished(message) => message,
            _ => String::from("the outer fiber did not finish"),
        }
    });
    assert!(message.contains("not on its own stack"), "{message}");
}
