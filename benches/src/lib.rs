//! Shared helpers for the benchmarks.

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use green::fiber::{Builder, Fiber, FloatControl, Resume};

/// A green fiber that suspends for ever, already started, so that every resume of it is
/// the same switch pair. Dropping it unwinds its stack.
pub fn suspending_fiber(float_control: FloatControl) -> Fiber<()> {
    let mut fiber = Builder::new()
        .float_control(float_control)
        .build(|s| {
            loop {
                s.suspend();
            }
        })
        .expect("cannot create a fiber");
    assert!(matches!(fiber.resume(), Resume::Yielded));
    fiber
}

/// A corosensei coroutine that suspends for ever, already started. Dropping it unwinds its
/// stack.
pub fn suspending_coroutine() -> Coroutine<(), (), (), DefaultStack> {
    let mut coroutine = Coroutine::new(|yielder, ()| {
        loop {
            yielder.suspend(());
        }
    });
    assert!(matches!(coroutine.resume(()), CoroutineResult::Yield(())));
    coroutine
}
