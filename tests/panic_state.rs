//! Panic state is per fiber for what green decides: a fiber suspended in the middle of
//! unwinding (a destructor that blocks) changes nothing for the other fibers of its
//! worker, although std's `thread::panicking()` is then true on the whole thread.

mod common;

use std::sync::Arc;

use common::{one_worker, within};

/// Blocks in its destructor until told to go on.
struct BlocksWhileUnwinding {
    entered: green::sync::Sender<()>,
    proceed: green::sync::Receiver<()>,
}

impl Drop for BlocksWhileUnwinding {
    fn drop(&mut self) {
        let _ = self.entered.send(());
        let _ = self.proceed.recv();
    }
}

/// Runs `scenario` in the main fiber, with another fiber of the same worker that, once
/// `scenario` calls the function it is given, panics and suspends in the middle of its
/// unwinding (that function returns then). Returns the scenario's value, whether the
/// unwinding fiber's own mutex was poisoned, and the unwinding fiber's join result.
fn with_a_fiber_suspended_mid_unwind<T: Send + 'static>(
    scenario: impl FnOnce(&dyn Fn(), &green::JoinHandle<()>) -> T + Send + 'static,
) -> (T, bool, Result<(), green::JoinError>) {
    within(30, "a fiber suspended mid-unwind", move || {
        one_worker().run(move || {
            let (go_tx, go_rx) = green::sync::channel();
            let (entered_tx, entered_rx) = green::sync::channel();
            let (proceed_tx, proceed_rx) = green::sync::channel();
            let held = Arc::new(green::sync::Mutex::new(0));
            let blocks = BlocksWhileUnwinding {
                entered: entered_tx,
                proceed: proceed_rx,
            };
            let its_own = held.clone();
            let unwinding = green::spawn(move || {
                go_rx.recv().unwrap();
                // Taken before the panic, dropped during it: `held` is poisoned.
                let _guard = its_own.lock().unwrap();
                let _blocks = blocks;
                panic!("the unwinding fiber's own panic");
            });
            let suspend_it_mid_unwind = || {
                go_tx.send(()).unwrap();
                entered_rx.recv().unwrap();
                assert!(
                    std::thread::panicking(),
                    "std sees the panic on the whole thread"
                );
            };
            let value = scenario(&suspend_it_mid_unwind, &unwinding);
            proceed_tx.send(()).unwrap();
            let result = unwinding.join();
            (value, held.is_poisoned(), result)
        })
    })
}

#[test]
fn a_guard_dropped_by_a_fiber_that_never_panicked_does_not_poison_its_mutex() {
    let (poisoned, held_poisoned, result) = with_a_fiber_suspended_mid_unwind(|suspend, _| {
        let lock = green::sync::Mutex::new(1);
        let mut guard = lock.lock().unwrap();
        suspend(); // another fiber now unwinds, suspended, while we hold the guard
        *guard += 1;
        drop(guard);
        lock.is_poisoned()
    });
    assert!(
        !poisoned,
        "the mutex of a fiber that never panicked was poisoned"
    );
    assert!(
        held_poisoned,
        "the unwinding fiber's own guard still poisons"
    );
    assert!(result.unwrap_err().is_panic());
}

#[test]
fn aborting_a_fiber_suspended_mid_unwind_lets_its_panic_finish() {
    // A cancellation delivered into a destructor that runs during a panic would abort the
    // process; it waits instead, and the fiber ends with its own panic.
    let ((), _, result) = with_a_fiber_suspended_mid_unwind(|suspend, unwinding| {
        suspend();
        unwinding.abort();
    });
    assert!(result.unwrap_err().is_panic());
}
