//! `#[green::main]` and `#[green::test]`: the body runs in a fiber of a runtime built with
//! the attribute's settings.

use green::test_support;

#[green::test]
fn a_test_body_runs_in_a_fiber() {
    assert!(green::in_fiber());
    assert_eq!(green::spawn(|| 6 * 7).join().unwrap(), 42);
}

#[green::test(workers = 1)]
fn workers_sets_the_number_of_workers() {
    assert_eq!(test_support::worker_count(), Some(1));
    assert_eq!(test_support::worker_index(), Some(0));
}

#[green::test(workers = 3)]
fn each_test_gets_a_runtime_of_its_own() {
    assert_eq!(test_support::worker_count(), Some(3));
}

#[green::test(stack_size = 128 * 1024, workers = 2)]
fn stack_size_sets_the_fibers_stack_size() {
    assert_eq!(test_support::stack_size(), Some(128 * 1024));
    let child = green::spawn(test_support::stack_size).join().unwrap();
    assert_eq!(child, Some(128 * 1024));
}

#[green::test]
fn a_test_may_return_a_result() -> Result<(), String> {
    let value: u32 = "42".parse().map_err(|e| format!("{e}"))?;
    assert_eq!(value, 42);
    Ok(())
}

#[green::test]
#[should_panic(expected = "the body's own panic")]
fn a_panic_in_the_body_fails_the_test_with_its_message() {
    panic!("the body's own panic");
}

#[green::test]
fn blocking_calls_park_the_fiber_not_the_thread() {
    let (tx, rx) = green::sync::channel();
    let sender = green::spawn(move || {
        green::sleep(std::time::Duration::from_millis(1));
        tx.send("after the sleep").unwrap();
    });
    assert_eq!(rx.recv().unwrap(), "after the sleep");
    sender.join().unwrap();
}
