//! A user waker that panics in `wake` when the reactor wakes it (a timer fired, an I/O
//! event, the reactor closing at shutdown) does not unwind out of the worker loop: the
//! worker reports it and goes on, so its other fibers keep running and the runtime still
//! shuts down.

mod common;

use common::within;
use std::future::{Future, poll_fn};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use green::io::Async;
use green::time::Timer;

/// A waker that counts its wakes and panics in each.
#[derive(Default)]
struct PanicOnWake {
    /// Wakes so far.
    wakes: AtomicUsize,
}

impl Wake for PanicOnWake {
    fn wake(self: Arc<Self>) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        panic!("this waker refuses to wake");
    }
}

/// A one-worker runtime: the fibers that must go on run on the worker that met the panic.
fn one_worker() -> green::Runtime {
    green::Runtime::builder().workers(1).build().unwrap()
}

/// Spawns a fiber, joins it, then drops the runtime: the worker still runs fibers and
/// shuts down.
fn worker_goes_on(runtime: green::Runtime) {
    assert_eq!(runtime.spawn(|| 6 * 7).join().unwrap(), 42);
    drop(runtime);
}

#[test]
fn a_timer_waker_that_panics_in_wake_leaves_the_worker_running() {
    within(10, "the runtime after a panicking timer waker", || {
        let runtime = one_worker();
        let panicking = Arc::new(PanicOnWake::default());
        let waker = Waker::from(panicking.clone());
        runtime.run(move || {
            // Both due at once, the panicking one first (registered first): the same
            // round of the reactor wakes both. Made and registered in the first poll,
            // both before their deadline: again if a slow machine let it pass before
            // either poll (a timer polled late completes at once, unregistered, and
            // `ours` done early would leave the trap unwoken; dropped, it deregisters).
            let mut timers: Option<(Timer, Timer)> = None;
            green::await_blocking(poll_fn(|cx| {
                if let Some((_trap, ours)) = &mut timers {
                    return Pin::new(ours).poll(cx).map(drop);
                }
                timers = Some(loop {
                    let deadline = Instant::now() + Duration::from_millis(20);
                    let (mut trap, mut ours) = (Timer::at(deadline), Timer::at(deadline));
                    let mut trap_cx = Context::from_waker(&waker);
                    if Pin::new(&mut trap).poll(&mut trap_cx).is_pending()
                        && Pin::new(&mut ours).poll(cx).is_pending()
                    {
                        break (trap, ours);
                    }
                });
                Poll::Pending
            }));
        });
        assert_eq!(panicking.wakes.load(Ordering::SeqCst), 1);
        worker_goes_on(runtime);
    });
}

#[test]
fn an_io_waker_that_panics_in_wake_leaves_the_worker_running() {
    within(10, "the runtime after a panicking I/O waker", || {
        let runtime = one_worker();
        let panicking = Arc::new(PanicOnWake::default());
        let waker = Waker::from(panicking.clone());
        runtime.run(move || {
            let (reader, writer) = UnixStream::pair().unwrap();
            let reader = Async::new(reader).unwrap();
            // The panicking waker holds the read direction's `poll_readable` slot; this
            // fiber waits on the same direction with a readiness future.
            let mut trap_cx = Context::from_waker(&waker);
            assert!(reader.poll_readable(&mut trap_cx).is_pending());
            let mut readable = Box::pin(reader.readable());
            let mut writing = None;
            green::await_blocking(poll_fn(|cx| {
                let ready = readable.as_mut().poll(cx);
                if ready.is_pending() && writing.is_none() {
                    let mut writer = writer.try_clone().unwrap();
                    writing = Some(green::spawn(move || writer.write_all(b"x").unwrap()));
                }
                ready
            }))
            .unwrap();
            writing.unwrap().join().unwrap();
        });
        assert_eq!(panicking.wakes.load(Ordering::SeqCst), 1);
        worker_goes_on(runtime);
    });
}

#[test]
fn a_waker_that_panics_when_the_reactor_closes_leaves_the_shutdown_to_finish() {
    within(10, "dropping the runtime", || {
        let runtime = one_worker();
        let panicking = Arc::new(PanicOnWake::default());
        let waker = Waker::from(panicking.clone());
        runtime.run(move || {
            // Registered for an hour and never deregistered: the reactor's closing at
            // shutdown is what wakes it.
            let mut timer = Box::pin(Timer::after(Duration::from_secs(3600)));
            assert!(
                timer
                    .as_mut()
                    .poll(&mut Context::from_waker(&waker))
                    .is_pending()
            );
            std::mem::forget(timer);
        });
        drop(runtime);
        assert_eq!(panicking.wakes.load(Ordering::SeqCst), 1);
    });
}

#[test]
fn a_displaced_waker_that_panics_in_wake_does_not_fail_the_poll_that_displaced_it() {
    within(
        10,
        "polling readiness after a panicking displaced waker",
        || {
            let runtime = one_worker();
            let panicking = Arc::new(PanicOnWake::default());
            let waker = Waker::from(panicking.clone());
            runtime.run(move || {
                let (reader, _writer) = UnixStream::pair().unwrap();
                let reader = Async::new(reader).unwrap();
                assert!(
                    reader
                        .poll_readable(&mut Context::from_waker(&waker))
                        .is_pending()
                );
                // Another waker takes the slot over and wakes the first, which panics: the
                // poll goes on, as on the worker loop.
                let mut polled = Poll::Ready(Ok(()));
                green::await_blocking(poll_fn(|cx| {
                    polled = reader.poll_readable(cx);
                    Poll::Ready(())
                }));
                assert!(polled.is_pending());
            });
            assert_eq!(panicking.wakes.load(Ordering::SeqCst), 1);
            worker_goes_on(runtime);
        },
    );
}
