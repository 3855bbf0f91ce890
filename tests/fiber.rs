//! Behaviour of `Fiber`: resume and suspend, results, panics, forced unwinding, nesting,
//! deep recursion, alignment, backtraces, stack reuse, and the options of `Builder`.

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::panic::{self, AssertUnwindSafe};
use std::rc::Rc;

use green::fiber::{Builder, Fiber, FloatControl, ForcedUnwind, Resume};

/// Loop counts are scaled down under QEMU, where a switch costs ~100x more.
const NATIVE: bool = cfg!(target_arch = "x86_64");

/// Counts how many times values of this type were dropped.
struct Counted(Rc<Cell<usize>>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.set(self.0.get() + 1);
    }
}

fn expect_yield<T>(resume: Resume<T>) {
    assert!(
        matches!(resume, Resume::Yielded),
        "expected the fiber to yield"
    );
}

fn expect_finished<T>(resume: Resume<T>) -> T {
    match resume {
        Resume::Finished(value) => value,
        Resume::Yielded => panic!("expected the fiber to finish, it yielded"),
        Resume::Panicked(payload) => panic::resume_unwind(payload),
    }
}

#[test]
fn nothing_runs_before_the_first_resume() {
    let ran = Rc::new(Cell::new(false));
    let flag = ran.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe { Fiber::new(move |_| flag.set(true)) }.unwrap();
    assert!(!ran.get());
    assert!(!fiber.is_started());
    expect_finished(fiber.resume());
    assert!(ran.get());
    assert!(fiber.is_finished());
}

#[test]
fn resume_runs_until_each_suspend_then_returns_the_value() {
    let log = Rc::new(RefCell::new(Vec::new()));
    let inner = log.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |suspender| {
            for step in 0..3 {
                inner.borrow_mut().push(format!("fiber {step}"));
                suspender.suspend();
            }
            String::from("result")
        })
    }
    .unwrap();
    for step in 0..3 {
        expect_yield(fiber.resume());
        log.borrow_mut().push(format!("main {step}"));
    }
    assert_eq!(expect_finished(fiber.resume()), "result");
    let expected = [
        "fiber 0", "main 0", "fiber 1", "main 1", "fiber 2", "main 2",
    ];
    assert_eq!(*log.borrow(), expected);
}

#[test]
fn a_panic_in_the_fiber_comes_back_as_its_payload() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::<()>::new(|suspender| {
            suspender.suspend();
            panic!("fiber failed with code {}", black_box(7));
        })
    }
    .unwrap();
    expect_yield(fiber.resume());
    match fiber.resume() {
        Resume::Panicked(payload) => {
            assert_eq!(
                payload.downcast_ref::<String>().unwrap(),
                "fiber failed with code 7"
            );
        }
        other => panic!("expected a panic, got {other:?}"),
    }
    assert!(fiber.is_finished());
}

#[test]
fn the_resumer_keeps_running_after_a_fiber_panics() {
    for round in 0..10 {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe { Fiber::<u32>::new(move |_| panic!("round {round}")) }.unwrap();
        assert!(matches!(fiber.resume(), Resume::Panicked(_)));
        // SAFETY: the fiber is not leaked while started.
        let mut healthy = unsafe { Fiber::new(move |_| round * 2) }.unwrap();
        assert_eq!(expect_finished(healthy.resume()), round * 2);
    }
}

#[test]
#[should_panic(expected = "resumed a fiber that has finished")]
fn resuming_a_finished_fiber_panics_with_a_clear_message() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe { Fiber::new(|_| ()) }.unwrap();
    expect_finished(fiber.resume());
    let _ = fiber.resume();
}

#[test]
fn dropping_a_suspended_fiber_runs_every_destructor_on_its_stack() {
    let drops = Rc::new(Cell::new(0));
    let after_suspend = Rc::new(Cell::new(false));
    let (count, flag) = (drops.clone(), after_suspend.clone());
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |suspender| {
            let _outer = Counted(count.clone());
            nested_frames(3, &count, suspender);
            flag.set(true);
        })
    }
    .unwrap();
    expect_yield(fiber.resume());
    assert_eq!(drops.get(), 0);
    drop(fiber);
    // One in the closure, two in each of the four frames of `nested_frames`.
    assert_eq!(drops.get(), 9);
    assert!(
        !after_suspend.get(),
        "code after the suspension point must not run"
    );
}

#[inline(never)]
fn nested_frames(depth: usize, count: &Rc<Cell<usize>>, suspender: &green::fiber::Suspender) {
    let _a = Counted(count.clone());
    let _b = Counted(count.clone());
    if depth == 0 {
        suspender.suspend();
    } else {
        nested_frames(depth - 1, count, suspender);
    }
}

/// Suspends its fiber when dropped (as the fiber unwinds, in the tests below).
struct SuspendsWhenDropped<'a> {
    suspender: &'a green::fiber::Suspender,
    _count: Counted,
}

impl Drop for SuspendsWhenDropped<'_> {
    fn drop(&mut self) {
        self.suspender.suspend();
    }
}

#[test]
fn dropping_a_fiber_suspended_as_it_unwinds_lets_it_unwind_on() {
    // A destructor that suspends as its fiber unwinds from a panic: the fiber cannot take
    // a forced unwind there (the process would abort); dropping it goes on with its own.
    let drops = Rc::new(Cell::new(0));
    let count = drops.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |suspender| {
            let _outer = Counted(count.clone());
            let _suspends = SuspendsWhenDropped {
                suspender,
                _count: Counted(count.clone()),
            };
            panic!("the fiber's own panic");
        })
    }
    .unwrap();
    expect_yield(fiber.resume());
    assert_eq!(drops.get(), 0);
    drop(fiber);
    assert_eq!(drops.get(), 2, "both destructors ran");
    assert!(!std::thread::panicking());
}

#[test]
fn a_fiber_whose_nested_fiber_is_suspended_as_it_unwinds_is_still_unwound_when_dropped() {
    // The nested fiber's panic keeps the thread's panic count raised while the outer
    // fiber suspends plainly: the outer one is unwound when dropped, not resumed.
    let drops = Rc::new(Cell::new(0));
    let after_suspend = Rc::new(Cell::new(false));
    let (count, flag) = (drops.clone(), after_suspend.clone());
    let outer_body = move |suspender: &green::fiber::Suspender| {
        let _outer = Counted(count.clone());
        let inner_count = count.clone();
        let inner_body = move |suspender: &green::fiber::Suspender| {
            let _suspends = SuspendsWhenDropped {
                suspender,
                _count: Counted(inner_count),
            };
            panic!("the nested fiber's own panic");
        };
        // SAFETY: the fiber is not leaked while started.
        let mut inner = unsafe { Fiber::<()>::new(inner_body) }.unwrap();
        expect_yield(inner.resume());
        suspender.suspend();
        flag.set(true);
        drop(inner);
    };
    // SAFETY: the fiber is not leaked while started.
    let mut outer = unsafe { Fiber::new(outer_body) }.unwrap();
    expect_yield(outer.resume());
    assert!(std::thread::panicking(), "the nested fiber is mid-unwind");
    drop(outer);
    assert!(
        !after_suspend.get(),
        "the outer fiber was resumed, not unwound"
    );
    assert_eq!(drops.get(), 2, "both fibers' destructors ran");
    assert!(!std::thread::panicking());
}

#[test]
fn dropping_an_unstarted_fiber_drops_its_closure_once() {
    let drops = Rc::new(Cell::new(0));
    let captured = Counted(drops.clone());
    // SAFETY: the fiber is not leaked while started.
    let fiber = unsafe { Fiber::new(move |_| drop(captured)) }.unwrap();
    assert_eq!(drops.get(), 0);
    drop(fiber);
    assert_eq!(drops.get(), 1);
}

#[test]
fn an_unstarted_fiber_whose_closure_panics_as_it_drops_still_gives_its_stack_back() {
    /// Panics when dropped.
    struct PanicsOnDrop;
    impl Drop for PanicsOnDrop {
        fn drop(&mut self) {
            panic::panic_any("a captured value's drop");
        }
    }
    // A size of its own: the pool is the process's, shared with the other tests.
    const SIZE: usize = 88 * 1024;
    let drops = Rc::new(Cell::new(0));
    let (bomb, other) = (PanicsOnDrop, Counted(drops.clone()));
    // SAFETY: the fiber never starts.
    let fiber = unsafe {
        Fiber::with_stack_size(SIZE, move |_| {
            drop(bomb);
            drop(other);
        })
    }
    .unwrap();
    let idle_before = green::stack::pool_stats(SIZE).idle();
    let outcome = panic::catch_unwind(AssertUnwindSafe(move || drop(fiber)));
    let payload = outcome.expect_err("the drop's panic goes on");
    assert_eq!(
        payload.downcast_ref::<&str>(),
        Some(&"a captured value's drop")
    );
    // The other capture was dropped, and the stack went back to the pool.
    assert_eq!(drops.get(), 1);
    assert_eq!(green::stack::pool_stats(SIZE).idle(), idle_before + 1);
}

#[test]
fn a_fiber_that_swallows_its_unwind_and_panics_with_a_panicking_payload_gives_its_stack_back() {
    /// A panic payload whose drop panics with a payload whose drop panics.
    struct Chain;
    impl Drop for Chain {
        fn drop(&mut self) {
            panic::panic_any(Last);
        }
    }
    /// A panic payload whose drop panics.
    struct Last;
    impl Drop for Last {
        fn drop(&mut self) {
            panic::panic_any("the last payload's drop");
        }
    }
    // A size of its own: the pool is the process's, shared with the other tests.
    const SIZE: usize = 92 * 1024;
    // SAFETY: the fiber is dropped, not leaked.
    let mut fiber = unsafe {
        Fiber::with_stack_size(SIZE, |suspender| {
            // Swallows the drop's unwind, then ends with a panic of its own.
            let _ = panic::catch_unwind(AssertUnwindSafe(|| suspender.suspend()));
            panic::panic_any(Chain);
        })
    }
    .unwrap();
    expect_yield(fiber.resume());
    let idle_before = green::stack::pool_stats(SIZE).idle();
    let outcome = panic::catch_unwind(AssertUnwindSafe(move || drop(fiber)));
    assert!(outcome.is_ok(), "the payload's panics stay inside the drop");
    assert_eq!(green::stack::pool_stats(SIZE).idle(), idle_before + 1);
}

#[test]
fn a_finished_fiber_drops_its_captures_and_result_exactly_once() {
    let drops = Rc::new(Cell::new(0));
    let captured = Counted(drops.clone());
    let result_count = drops.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |_| {
            let _keep = captured;
            Counted(result_count)
        })
    }
    .unwrap();
    let result = expect_finished(fiber.resume());
    assert_eq!(
        drops.get(),
        1,
        "the capture is dropped when the closure returns"
    );
    drop(fiber);
    assert_eq!(
        drops.get(),
        1,
        "dropping a finished fiber drops nothing more"
    );
    drop(result);
    assert_eq!(drops.get(), 2);
}

#[test]
fn the_forced_unwind_carries_a_forced_unwind_payload() {
    let seen = Rc::new(Cell::new(false));
    let flag = seen.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |suspender| {
            let caught = panic::catch_unwind(AssertUnwindSafe(|| suspender.suspend()));
            let payload = caught.expect_err("the suspension must unwind");
            flag.set(payload.is::<ForcedUnwind>());
            panic::resume_unwind(payload);
        })
    }
    .unwrap();
    expect_yield(fiber.resume());
    drop(fiber);
    assert!(seen.get());
}

#[test]
fn a_fiber_that_swallows_the_unwind_and_suspends_again_is_unwound_again() {
    let unwinds = Rc::new(Cell::new(0));
    let drops = Rc::new(Cell::new(0));
    let (seen, count) = (unwinds.clone(), drops.clone());
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |suspender| {
            let _guard = Counted(count.clone());
            for _ in 0..3 {
                let _inner = Counted(count.clone());
                if panic::catch_unwind(AssertUnwindSafe(|| suspender.suspend())).is_err() {
                    seen.set(seen.get() + 1);
                }
            }
        })
    }
    .unwrap();
    expect_yield(fiber.resume());
    drop(fiber);
    assert_eq!(
        unwinds.get(),
        3,
        "each suspension during the drop is unwound"
    );
    assert_eq!(drops.get(), 4, "three loop guards and the outer guard");
}

#[test]
fn nested_fibers_switch_in_the_expected_order() {
    let log = Rc::new(RefCell::new(Vec::<&'static str>::new()));
    let outer_log = log.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut outer = unsafe {
        Fiber::new(move |outer_suspender| {
            let inner_log = outer_log.clone();
            let mut inner = Fiber::new(move |inner_suspender| {
                inner_log.borrow_mut().push("inner 1");
                inner_suspender.suspend();
                inner_log.borrow_mut().push("inner 2");
                10
            })
            .unwrap();
            outer_log.borrow_mut().push("outer 1");
            expect_yield(inner.resume());
            outer_log.borrow_mut().push("outer 2");
            outer_suspender.suspend();
            outer_log.borrow_mut().push("outer 3");
            expect_finished(inner.resume()) + 1
        })
    }
    .unwrap();
    expect_yield(outer.resume());
    log.borrow_mut().push("main");
    assert_eq!(expect_finished(outer.resume()), 11);
    let expected = [
        "outer 1", "inner 1", "outer 2", "main", "outer 3", "inner 2",
    ];
    assert_eq!(*log.borrow(), expected);
}

#[test]
fn many_fibers_interleave_round_robin() {
    let fibers_count = if NATIVE { 100 } else { 20 };
    let steps = 20;
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut fibers: Vec<_> = (0..fibers_count)
        .map(|id| {
            let log = log.clone();
            // SAFETY: the fiber is not leaked while started.
            unsafe {
                Fiber::new(move |suspender| {
                    for step in 0..steps {
                        log.borrow_mut().push((step, id));
                        suspender.suspend();
                    }
                    id
                })
            }
            .unwrap()
        })
        .collect();
    for _ in 0..steps {
        for fiber in &mut fibers {
            expect_yield(fiber.resume());
        }
    }
    for (id, fiber) in fibers.iter_mut().enumerate() {
        assert_eq!(expect_finished(fiber.resume()), id);
    }
    let expected: Vec<_> = (0..steps)
        .flat_map(|s| (0..fibers_count).map(move |id| (s, id)))
        .collect();
    assert_eq!(*log.borrow(), expected);
}

/// Recurses `depth` times with a 1 KiB frame; returns a checksum that depends on every frame.
#[inline(never)]
fn recurse(depth: u64) -> u64 {
    let frame = black_box([depth; 128]);
    if depth == 0 {
        frame[5]
    } else {
        recurse(depth - 1).wrapping_mul(31).wrapping_add(frame[100])
    }
}

#[test]
fn deep_but_legal_recursion_completes() {
    // 60 frames of over 1 KiB each (about 3 KiB in debug builds) on the default stack.
    let depth = 60;
    let expected = recurse(depth);
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe { Fiber::new(move |_| recurse(depth)) }.unwrap();
    assert_eq!(expect_finished(fiber.resume()), expected);
}

#[test]
fn recursion_close_to_a_custom_stack_size_completes() {
    let depth = 400; // ~400 KiB of frames
    let expected = recurse(depth);
    // SAFETY: the fiber is not leaked while started.
    let mut fiber =
        unsafe { Fiber::with_stack_size(2 * 1024 * 1024, move |_| recurse(depth)) }.unwrap();
    assert_eq!(fiber.stack_size(), 2 * 1024 * 1024);
    assert_eq!(expect_finished(fiber.resume()), expected);
}

#[repr(align(16))]
struct Aligned16([u8; 16]);

#[repr(align(64))]
struct Aligned64([u8; 64]);

#[inline(never)]
fn aligned_locals_at_depth(depth: u32) -> (usize, usize) {
    let a = black_box(Aligned16([1; 16]));
    let b = black_box(Aligned64([2; 64]));
    if depth == 0 {
        (
            &a as *const Aligned16 as usize,
            &b as *const Aligned64 as usize,
        )
    } else {
        let inner = aligned_locals_at_depth(depth - 1);
        black_box((&a.0, &b.0));
        inner
    }
}

#[test]
fn aligned_locals_are_aligned_inside_a_fiber() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(|suspender| {
            let mut addresses = Vec::new();
            for depth in 0..4 {
                addresses.push(aligned_locals_at_depth(depth));
                suspender.suspend();
                let local = Aligned16([3; 16]);
                addresses.push((black_box(&local) as *const Aligned16 as usize, 0));
            }
            addresses
        })
    }
    .unwrap();
    let addresses = loop {
        match fiber.resume() {
            Resume::Yielded => continue,
            finished => break expect_finished(finished),
        }
    };
    assert_eq!(addresses.len(), 8);
    for (a16, a64) in addresses {
        assert_eq!(a16 % 16, 0, "align(16) local at {a16:#x}");
        assert_eq!(a64 % 64, 0, "align(64) local at {a64:#x}");
    }
}

#[test]
fn a_fiber_keeps_floating_point_values_across_suspensions() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(|suspender| {
            let mut x = black_box(1.0f64);
            let mut y = black_box(0.5f32);
            for _ in 0..100 {
                x = x * 1.000_001 + 0.25;
                y = y * 0.999 + 0.125;
                suspender.suspend();
            }
            (x, y)
        })
    }
    .unwrap();
    let (mut x, mut y) = (black_box(1.0f64), black_box(0.5f32));
    for _ in 0..100 {
        x = x * 1.000_001 + 0.25;
        y = y * 0.999 + 0.125;
        expect_yield(fiber.resume());
    }
    let (fx, fy) = expect_finished(fiber.resume());
    assert_eq!(fx.to_bits(), x.to_bits());
    assert_eq!(fy.to_bits(), y.to_bits());
}

#[inline(never)]
fn marker_frame_inside_fiber() -> String {
    let trace = std::backtrace::Backtrace::force_capture();
    black_box(trace.to_string())
}

#[inline(never)]
fn marker_frame_resuming_fiber(fiber: &mut Fiber<String>) -> String {
    let trace = expect_finished(fiber.resume());
    black_box(trace)
}

#[test]
fn a_backtrace_inside_a_fiber_walks_into_the_resumer() {
    // SAFETY: the fiber is not leaked while started.
    assert_backtrace_walks_into_the_resumer(
        unsafe { Fiber::new(|_| marker_frame_inside_fiber()) }.unwrap(),
    );
}

/// Runs `fiber`, which returns a backtrace taken inside it, and checks that the backtrace
/// goes from the fiber's frames through the trampoline into the resumer and the test.
fn assert_backtrace_walks_into_the_resumer(mut fiber: Fiber<String>) {
    let trace = marker_frame_resuming_fiber(&mut fiber);
    let inside = trace.find("marker_frame_inside_fiber");
    let trampoline = trace.find("trampoline");
    let resumer = trace.find("marker_frame_resuming_fiber");
    // libtest's frame, below every test function (which release builds may inline).
    let test = trace.find("__rust_begin_short_backtrace");
    assert!(inside.is_some(), "no fiber frame in:\n{trace}");
    assert!(
        inside < trampoline,
        "fiber frame, then trampoline:\n{trace}"
    );
    assert!(
        trampoline < resumer,
        "trampoline, then the resumer:\n{trace}"
    );
    assert!(resumer < test, "the resumer, then the test:\n{trace}");
}

#[test]
fn a_backtrace_walks_out_of_nested_fibers() {
    // SAFETY: the fiber is not leaked while started.
    let mut outer = unsafe {
        Fiber::new(|_| {
            let mut inner = Fiber::new(|_| marker_frame_inside_fiber()).unwrap();
            marker_frame_resuming_fiber(&mut inner)
        })
    }
    .unwrap();
    let trace = expect_finished(outer.resume());
    assert_eq!(
        trace.matches("trampoline").count(),
        2,
        "two trampolines in:\n{trace}"
    );
    let second = trace.rfind("trampoline");
    let test = trace.find("__rust_begin_short_backtrace");
    assert!(second < test, "the walk reaches the test harness:\n{trace}");
}

#[test]
fn a_fiber_has_its_name() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe { Fiber::new(|_| ()) }.unwrap();
    assert_eq!(fiber.name(), None);
    fiber.set_name("worker-7");
    assert_eq!(fiber.name(), Some("worker-7"));
    assert!(format!("{fiber:?}").contains("worker-7"));
}

#[test]
// Under ASan a local whose address is taken lives on the fiber's fake stack, which is
// freed with the fiber: the two addresses say nothing about the stacks.
#[cfg_attr(
    green_asan,
    ignore = "ASan puts the local on each fiber's own fake stack, not on its stack"
)]
fn a_dropped_fiber_stack_is_reused_by_the_next_fiber() {
    fn local_address() -> usize {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe {
            Fiber::new(|_| {
                let local = black_box(0u8);
                &local as *const u8 as usize
            })
        }
        .unwrap();
        expect_finished(fiber.resume())
    }
    let first = local_address();
    let second = local_address();
    assert_eq!(
        first, second,
        "the second fiber runs on the first one's stack"
    );
}

#[test]
fn stack_sizes_out_of_range_are_refused_with_a_clear_error() {
    for size in [0, 1, 4096, 16 * 1024 - 1, usize::MAX] {
        // SAFETY: the fiber is not leaked while started.
        let error = unsafe { Fiber::with_stack_size(size, |_| ()) }.unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        let message = error.to_string();
        assert!(message.contains(&size.to_string()), "{message}");
        assert!(
            message.contains("too small") || message.contains("too large"),
            "{message}"
        );
    }
}

#[test]
fn stack_sizes_round_up_to_whole_pages() {
    // SAFETY: the fiber is not leaked while started.
    let fiber = unsafe { Fiber::with_stack_size(20_000, |_| ()) }.unwrap();
    let page = 4096;
    assert_eq!(fiber.stack_size(), 20_000usize.div_ceil(page) * page);
}

#[test]
fn thousands_of_switches_keep_state_on_both_sides() {
    let rounds: u64 = if NATIVE { 100_000 } else { 5_000 };
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Fiber::new(move |suspender| {
            let mut sum = 0u64;
            for i in 0..rounds {
                sum = sum.wrapping_add(i * i);
                suspender.suspend();
            }
            sum
        })
    }
    .unwrap();
    let mut expected = 0u64;
    for i in 0..rounds {
        expected = expected.wrapping_add(i * i);
        expect_yield(fiber.resume());
    }
    assert_eq!(expect_finished(fiber.resume()), expected);
}

/// A fiber that shares its thread's floating-point control state, with the default stack.
fn shared_fiber<T: 'static>(f: impl FnOnce(&green::fiber::Suspender) -> T + 'static) -> Fiber<T> {
    // SAFETY: the tests do not leak their fibers while started, and their closures lend out
    // no thread-local.
    unsafe { Builder::new().float_control(FloatControl::Shared).build(f) }.unwrap()
}

#[test]
fn a_fiber_that_shares_float_control_keeps_state_across_thousands_of_switches() {
    let rounds: u64 = if NATIVE { 100_000 } else { 5_000 };
    let mut fiber = shared_fiber(move |suspender| {
        let mut sum = 0.0f64;
        for i in 0..rounds {
            sum += black_box(i as f64) * 0.5;
            suspender.suspend();
        }
        sum
    });
    let mut expected = 0.0f64;
    for i in 0..rounds {
        expected += i as f64 * 0.5;
        expect_yield(fiber.resume());
    }
    assert_eq!(
        expect_finished(fiber.resume()).to_bits(),
        expected.to_bits()
    );
}

#[test]
fn dropping_a_suspended_fiber_that_shares_float_control_unwinds_it() {
    let drops = Rc::new(Cell::new(0));
    let count = drops.clone();
    let mut fiber = shared_fiber(move |suspender| {
        let _outer = Counted(count.clone());
        nested_frames(3, &count, suspender);
    });
    expect_yield(fiber.resume());
    drop(fiber);
    assert_eq!(drops.get(), 9);
}

#[test]
fn a_backtrace_walks_out_of_a_fiber_that_shares_float_control() {
    assert_backtrace_walks_into_the_resumer(shared_fiber(|_| marker_frame_inside_fiber()));
}

#[test]
fn fibers_of_both_float_controls_nest_inside_each_other() {
    // Each fiber resumes one of the other kind, so every pairing of switch variants runs.
    let mut outer = shared_fiber(|suspender| {
        // SAFETY: the fiber is not leaked while started.
        let mut inner = unsafe {
            Fiber::new(|suspender| {
                let mut innermost = shared_fiber(|suspender| {
                    suspender.suspend();
                    3
                });
                expect_yield(innermost.resume());
                suspender.suspend();
                expect_finished(innermost.resume()) * 2
            })
        }
        .unwrap();
        expect_yield(inner.resume());
        suspender.suspend();
        expect_finished(inner.resume()) + 1
    });
    expect_yield(outer.resume());
    assert_eq!(expect_finished(outer.resume()), 7);
}

#[test]
fn the_builder_sets_stack_size_and_name() {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Builder::new()
            .stack_size(300_000)
            .name("parser")
            .build(|_| recurse(40))
    }
    .unwrap();
    assert_eq!(fiber.stack_size(), 300_000usize.div_ceil(4096) * 4096);
    assert_eq!(fiber.name(), Some("parser"));
    assert_eq!(expect_finished(fiber.resume()), recurse(40));
}

#[test]
fn the_builder_refuses_a_stack_size_out_of_range() {
    // SAFETY: no fiber is made.
    let error = unsafe { Builder::new().stack_size(4096).build(|_| ()) }.unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    assert!(error.to_string().contains("too small"), "{error}");
}
