//! green's fibers side by side with corosensei's coroutines.
//!
//! Run with `cargo bench -p green-benches --bench fiber`; see `benches/README.md` for what
//! each group measures.

use std::hint::black_box;
use std::time::Duration;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult, ScopedCoroutine};
use criterion::{Criterion, criterion_group, criterion_main};
use green::fiber::{self, Fiber, FloatControl, Resume};
use green_benches::{suspending_coroutine, suspending_fiber};

/// One resume plus one suspend of a fiber that is already running and yields forever.
///
/// Each iteration hands `black_box` whether the fiber yielded, as a caller that matches on
/// the outcome would use it. Handing it the whole outcome would force green's `Resume`
/// (24 bytes: it has room for a panic payload) to memory each time, against one byte for
/// corosensei's result, and measure the enum's size rather than the switch.
fn round_trip(c: &mut Criterion) {
    let mut group = c.benchmark_group("round_trip");

    // `green` keeps each side's floating-point control state, as the x86_64 ABI asks;
    // `green/shared_float_control` leaves it to the thread, as corosensei does.
    for (name, float_control) in [
        ("green", FloatControl::Saved),
        ("green/shared_float_control", FloatControl::Shared),
    ] {
        group.bench_function(name, |b| {
            let mut fiber = suspending_fiber(float_control);
            b.iter(|| black_box(matches!(fiber.resume(), Resume::Yielded)));
        });
    }

    // The same fiber made safely in a `fiber::scope`: its handle borrows a `RefCell`
    // around the fiber for each resume.
    group.bench_function("green/scoped", |b| {
        fiber::scope(|scope| {
            let mut fiber = scope
                .fiber(|suspender| {
                    loop {
                        suspender.suspend();
                    }
                })
                .expect("cannot create a fiber");
            b.iter(|| black_box(matches!(fiber.resume(), Resume::Yielded)));
        });
    });

    group.bench_function("corosensei", |b| {
        let mut coroutine = suspending_coroutine();
        b.iter(|| black_box(matches!(coroutine.resume(()), CoroutineResult::Yield(()))));
    });

    group.finish();
}

/// Create a fiber whose closure returns at once, run it to completion, drop it.
fn create_run_drop(c: &mut Criterion) {
    let mut group = c.benchmark_group("create_run_drop");

    // The stack comes from the thread's pool; after the first iteration it is the one the
    // previous fiber gave back.
    group.bench_function("green", |b| {
        b.iter(|| {
            // SAFETY: the fiber is not leaked while started.
            let mut fiber =
                unsafe { Fiber::new(|_| black_box(1usize)) }.expect("cannot create a fiber");
            match fiber.resume() {
                Resume::Finished(value) => black_box(value),
                _ => unreachable!("the fiber returns at once"),
            };
            drop(fiber);
        });
    });

    // A scope for each fiber, as `corosensei/reused_stack` below: the scope's list and
    // the handle's `Rc` are allocated each time.
    group.bench_function("green/scoped", |b| {
        b.iter(|| {
            fiber::scope(|scope| {
                let mut fiber = scope
                    .fiber(|_| black_box(1usize))
                    .expect("cannot create a fiber");
                match fiber.resume() {
                    Resume::Finished(value) => black_box(value),
                    _ => unreachable!("the fiber returns at once"),
                }
            })
        });
    });

    // `Coroutine::new` maps a new `DefaultStack` (1 MiB) every time and unmaps it on drop.
    group.bench_function("corosensei/fresh_stack", |b| {
        b.iter(|| {
            let mut coroutine: Coroutine<(), (), usize> = Coroutine::new(|_, ()| black_box(1));
            match coroutine.resume(()) {
                CoroutineResult::Return(value) => black_box(value),
                CoroutineResult::Yield(()) => unreachable!("the coroutine returns at once"),
            };
            drop(coroutine);
        });
    });

    // One stack, lent to each coroutine. `Coroutine::with_stack(&mut stack, ..)` would need
    // a `&'static mut`, so borrowing a stack goes through `ScopedCoroutine` (as corosensei's
    // own benchmark does).
    group.bench_function("corosensei/reused_stack", |b| {
        let mut stack = DefaultStack::default();
        b.iter(|| {
            let coroutine =
                ScopedCoroutine::<(), (), usize, _>::with_stack(&mut stack, |_, ()| black_box(1));
            coroutine.scope(|mut coroutine| match coroutine.resume(()) {
                CoroutineResult::Return(value) => black_box(value),
                CoroutineResult::Yield(()) => unreachable!("the coroutine returns at once"),
            });
        });
    });

    // One stack, moved into a `'static` `Coroutine` and taken back with `into_stack`: the
    // closest match to green's `'static` fibers and its pool.
    group.bench_function("corosensei/reused_stack_owned", |b| {
        let mut slot = Some(DefaultStack::default());
        b.iter(|| {
            let stack = slot.take().expect("the stack is back in its slot");
            let mut coroutine: Coroutine<(), (), usize> =
                Coroutine::with_stack(stack, |_, ()| black_box(1));
            match coroutine.resume(()) {
                CoroutineResult::Return(value) => black_box(value),
                CoroutineResult::Yield(()) => unreachable!("the coroutine returns at once"),
            };
            slot = Some(coroutine.into_stack());
        });
    });

    group.finish();
}

/// Short enough that the whole run stays well under two minutes.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = round_trip, create_run_drop
}
criterion_main!(benches);
