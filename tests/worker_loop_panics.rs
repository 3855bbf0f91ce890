//! User code that green runs on a worker's loop, outside fibers, panics: the panic is
//! caught and reported, and the worker goes on (it used to unwind out of the loop and
//! leave the runtime hanging, or read freed memory).

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use common::{one_worker, within};

/// Panics when dropped.
struct PanicsOnDrop;

impl Drop for PanicsOnDrop {
    fn drop(&mut self) {
        panic!("a destructor that panics");
    }
}

#[test]
fn a_task_dropped_unstarted_at_shutdown_whose_closure_panics_on_drop() {
    let handle = within(30, "shutdown dropping a closure that panics", || {
        let runtime = one_worker();
        let runtime_handle = runtime.handle();
        let (spawned_tx, spawned_rx) = std::sync::mpsc::channel();
        let (parked_tx, parked_rx) = std::sync::mpsc::channel();
        let (outcome_tx, outcome_rx) = std::sync::mpsc::channel();
        // A parked fiber whose destructor spawns on its worker while it shuts down.
        runtime.spawn(move || {
            struct SpawnsWhenDropped(std::sync::mpsc::Sender<bool>);
            impl Drop for SpawnsWhenDropped {
                fn drop(&mut self) {
                    let joined = green::spawn_local(|| ()).join();
                    let _ = self.0.send(joined.is_err_and(|e| e.is_cancelled()));
                }
            }
            let _spawns = SpawnsWhenDropped(outcome_tx);
            parked_tx.send(()).unwrap();
            green::sleep(std::time::Duration::from_secs(3600));
        });
        parked_rx.recv().unwrap();
        runtime.spawn(move || {
            let doomed = PanicsOnDrop;
            let unstarted = green::spawn(move || drop(doomed));
            spawned_tx.send(unstarted).unwrap();
            // Keep the worker's thread until the runtime shuts down, so that the task
            // is still waiting to start then: a spawn after shutdown resolves at once.
            while !runtime_handle.spawn(|| ()).is_finished() {
                std::thread::yield_now();
            }
        });
        let unstarted = spawned_rx.recv().unwrap();
        drop(runtime);
        (unstarted, outcome_rx.recv().unwrap())
    });
    assert!(handle.0.join().unwrap_err().is_cancelled());
    assert!(
        handle.1,
        "the fiber spawned by a destructor at shutdown was cancelled"
    );
}

/// A waker whose `wake` says so, then panics with a payload that panics when dropped.
struct WakePanics(std::sync::Mutex<std::sync::mpsc::Sender<()>>);

impl Wake for WakePanics {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let _ = self.0.lock().unwrap().send(());
        std::panic::panic_any(PanicsOnDrop);
    }
}

#[test]
fn a_join_waker_that_panics_does_not_stop_the_worker() {
    let after = within(30, "a panicking JoinHandle waker", || {
        let runtime = one_worker();
        let (go_tx, go_rx) = green::sync::channel::<()>();
        let mut handle = runtime.spawn(move || go_rx.recv().unwrap());
        // Polled from this thread with the panicking waker, which the completion wakes.
        let (woken_tx, woken_rx) = std::sync::mpsc::channel();
        let waker = Waker::from(Arc::new(WakePanics(std::sync::Mutex::new(woken_tx))));
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut handle).poll(&mut cx).is_pending());
        go_tx.send(()).unwrap();
        woken_rx.recv().unwrap();
        assert!(matches!(
            Pin::new(&mut handle).poll(&mut cx),
            Poll::Ready(Ok(()))
        ));
        // The worker that ran the completion still runs fibers.
        runtime.spawn(|| 41 + 1).join().unwrap()
    });
    assert_eq!(after, 42);
}
