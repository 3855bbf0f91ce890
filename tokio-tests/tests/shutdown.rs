//! Which runtime outlives which: tokio objects made in fibers after their green runtime
//! is gone, a tokio runtime that shuts down under a green one, a handle of a runtime that
//! has shut down already, and a green runtime dropped while fibers wait on tokio futures.

use std::io::ErrorKind;
use std::sync::mpsc;
use std::time::Duration;

use green::await_blocking;
use green_tokio_tests::panic_message;
use tokio::net::TcpListener;

/// A tokio runtime of the caller's, driven by a worker thread of its own.
fn callers_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn tokio_objects_made_in_fibers_work_after_their_green_runtime_is_dropped() {
    // They belong to the process-wide tokio runtime, which lives as long as the process.
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let (sleep, listener) = runtime.run(|| {
        let sleep = Box::pin(tokio::time::sleep(Duration::from_millis(1)));
        (
            sleep,
            await_blocking(TcpListener::bind("127.0.0.1:0")).unwrap(),
        )
    });
    drop(runtime);
    green::block_on(sleep);
    let address = listener.local_addr().unwrap();
    let client = std::thread::spawn(move || std::net::TcpStream::connect(address).unwrap());
    let (_, peer) = green::block_on(listener.accept()).unwrap();
    assert_eq!(peer, client.join().unwrap().local_addr().unwrap());
}

#[test]
fn build_refuses_a_tokio_handle_whose_runtime_has_shut_down() {
    let multi_thread = callers_runtime();
    let current_thread = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    for tokio in [multi_thread, current_thread] {
        let handle = tokio.handle().clone();
        drop(tokio);
        let error = green::Runtime::builder()
            .workers(1)
            .tokio_handle(handle)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), ErrorKind::InvalidInput);
        let message = error.to_string();
        assert!(
            message.starts_with("green::Builder::tokio_handle"),
            "{message}"
        );
        assert!(message.contains("has shut down"), "{message}");
    }
}

#[test]
fn build_accepts_a_current_thread_runtime_that_no_thread_drives_yet() {
    // The check spawns an empty task: on such a runtime it waits in the queue, which
    // must not be taken for a runtime that has shut down.
    let tokio = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let runtime = green::Runtime::builder()
        .workers(1)
        .tokio_handle(tokio.handle().clone())
        .build()
        .unwrap();
    // Driven from now on: its timers fire.
    std::thread::spawn(move || tokio.block_on(std::future::pending::<()>()));
    runtime.run(|| await_blocking(tokio::time::sleep(Duration::from_millis(1))));
}

#[test]
fn a_tokio_runtime_that_shuts_down_under_a_green_runtime_fails_as_tokio_says() {
    let tokio = callers_runtime();
    let runtime = green::Runtime::builder()
        .workers(1)
        .tokio_handle(tokio.handle().clone())
        .build()
        .unwrap();
    let sleep = runtime.run(|| Box::pin(tokio::time::sleep(Duration::from_secs(10))));
    drop(tokio);
    // A timer panics in the fiber that polls it, with tokio's message.
    let polled = runtime.spawn(move || await_blocking(sleep)).join();
    let message = panic_message(polled.unwrap_err().into_panic());
    assert!(message.contains("is being shutdown"), "{message}");
    // A socket returns the same as an error; a spawned task is cancelled.
    let bound = runtime.run(|| await_blocking(TcpListener::bind("127.0.0.1:0")).map(drop));
    assert!(bound.unwrap_err().to_string().contains("is being shutdown"));
    let spawned = runtime.run(|| await_blocking(tokio::spawn(async {})));
    assert!(spawned.unwrap_err().is_cancelled());
    // The green runtime itself goes on.
    assert_eq!(runtime.run(|| 1 + 1), 2);
}

/// Sends on its channel when dropped.
struct Dropped(mpsc::Sender<()>);

impl Drop for Dropped {
    fn drop(&mut self) {
        let _ = self.0.send(());
    }
}

#[test]
fn dropping_a_green_runtime_cancels_fibers_that_wait_on_tokio_futures() {
    const FIBERS: usize = 4;
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let (waiting, waits) = mpsc::channel();
    let (dropped, drops) = mpsc::channel();
    for i in 0..FIBERS {
        let (waiting, dropped) = (waiting.clone(), dropped.clone());
        runtime.spawn(move || {
            let _dropped = Dropped(dropped);
            if i % 2 == 0 {
                let sleep = tokio::time::sleep(Duration::from_secs(3600));
                waiting.send(()).unwrap();
                await_blocking(sleep);
            } else {
                let listener = await_blocking(TcpListener::bind("127.0.0.1:0")).unwrap();
                waiting.send(()).unwrap();
                let _ = await_blocking(listener.accept());
            }
            unreachable!("a wait that never ends");
        });
    }
    drop((waiting, dropped));
    for _ in 0..FIBERS {
        waits.recv().unwrap();
    }
    drop(runtime); // returns: each fiber is unwound, its tokio future dropped
    assert_eq!(drops.iter().count(), FIBERS);
}
