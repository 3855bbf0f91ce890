//! Waits made outside fibers (a plain thread's `green::block_on`, or another executor
//! polling green's futures) complete while every fiber of a runtime computes without
//! yielding: they never depend on a worker reaching its reactor.
//!
//! Each test keeps a runtime's workers busy with fibers that spin until the waiting thread,
//! once its wait has returned, tells them to stop (or until a generous cap). The assertion
//! is about order, not time: the wait completed while the fibers still computed, so its
//! flag, not the cap, ended them. Issue 15 saw a plain thread's 20 ms timer take 1.44 s
//! while a fiber computed on the global runtime's first worker, whose reactor held it.

mod common;

use std::future::Future;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::pin::pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use futures::AsyncReadExt;
use green::io::Async;
use green::time::Timer;

/// How long a computing fiber spins at most: far beyond any wait here, so that a fiber
/// that stops at the cap means the wait waited for it.
const CAP: Duration = Duration::from_secs(10);

/// Fibers that compute without yielding, and the flag that stops them.
struct Computing {
    /// Set by the waiting thread once its wait has returned.
    stop: Arc<AtomicBool>,
    /// Fibers that have started spinning.
    started: Arc<AtomicUsize>,
    /// One handle per fiber: `true` if the flag stopped it, `false` if the cap did.
    fibers: Vec<green::JoinHandle<bool>>,
}

impl Computing {
    /// Starts `count` spinning fibers with `spawn` and waits until all of them spin.
    fn start(
        count: usize,
        spawn: impl Fn(Box<dyn FnOnce() -> bool + Send>) -> green::JoinHandle<bool>,
    ) -> Computing {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Arc::new(AtomicUsize::new(0));
        let fibers = (0..count)
            .map(|_| {
                let (stop, started) = (stop.clone(), started.clone());
                spawn(Box::new(move || spin_until(&stop, &started)))
            })
            .collect();
        let computing = Computing {
            stop,
            started,
            fibers,
        };
        let begun = Instant::now();
        while computing.started.load(Ordering::Acquire) < count {
            assert!(
                begun.elapsed() < CAP,
                "the computing fibers never all started"
            );
            thread::yield_now();
        }
        computing
    }

    /// Tells the fibers to stop, then asserts that each was still computing: the flag,
    /// set after the wait returned, ended it, not the cap.
    fn stop_and_check(self, what: &str) {
        self.stop.store(true, Ordering::Release);
        for fiber in self.fibers {
            assert!(
                fiber.join().unwrap(),
                "{what} completed only after the computing fibers gave up at the cap"
            );
        }
    }
}

/// Spins, never yielding, until `stop` is set (`true`) or `CAP` has passed (`false`).
fn spin_until(stop: &AtomicBool, started: &AtomicUsize) -> bool {
    started.fetch_add(1, Ordering::AcqRel);
    let begun = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if begun.elapsed() > CAP {
            return false;
        }
        std::hint::spin_loop();
    }
    true
}

/// A one-worker runtime's only worker computes.
fn with_the_one_worker_computing(what: &str, wait: impl FnOnce() + Send + 'static) {
    let what = what.to_owned();
    common::within(60, &what.clone(), move || {
        let runtime = common::one_worker();
        let computing = Computing::start(1, |f| runtime.spawn(f));
        wait();
        computing.stop_and_check(&what);
    });
}

/// Every worker of the global runtime (`green::spawn` from a plain thread) computes: the
/// one whose reactor served plain threads before issue 15 included.
fn with_the_global_runtime_computing(what: &str, wait: impl FnOnce() + Send + 'static) {
    // One test at a time: two tests' spawns, interleaved, could put two spinning fibers on
    // one worker, where the second would wait for the first to stop.
    static GLOBAL: Mutex<()> = Mutex::new(());
    let what = what.to_owned();
    common::within(60, &what.clone(), move || {
        let _alone = GLOBAL.lock().unwrap_or_else(|e| e.into_inner());
        // Spawns from a plain thread go to the workers in turn, one fiber each, and the
        // global runtime has a worker per CPU.
        let workers = thread::available_parallelism().map_or(1, |n| n.get());
        let computing = Computing::start(workers, green::spawn);
        wait();
        computing.stop_and_check(&what);
    });
}

/// A plain thread's `block_on` of a 20 ms timer.
fn block_on_a_timer() {
    let deadline = green::block_on(Timer::after(Duration::from_millis(20)));
    assert!(Instant::now() >= deadline);
}

/// A plain thread's `block_on` of an `AsyncRead` read on a socket whose peer, another
/// plain thread, writes only once the read has found nothing and registered its waker.
fn block_on_a_socket_read() {
    let (reader, mut writer) = UnixStream::pair().unwrap();
    let mut reader = Async::new(reader).unwrap();
    let (pending, wrote) = std::sync::mpsc::channel::<()>();
    let peer = thread::spawn(move || {
        wrote.recv().unwrap();
        writer.write_all(b"x").unwrap();
    });
    let mut byte = [0];
    let mut read = pin!(reader.read(&mut byte));
    let mut pending = Some(pending);
    let n = green::block_on(std::future::poll_fn(|cx| {
        let poll = read.as_mut().poll(cx);
        if poll.is_pending() {
            // The read waits in the reactor: now let the peer write.
            if let Some(pending) = pending.take() {
                pending.send(()).unwrap();
            }
        }
        poll
    }))
    .unwrap();
    assert_eq!((n, byte[0]), (1, b'x'));
    peer.join().unwrap();
}

/// Another executor (not green's `block_on`) polling a green timer on a plain thread.
fn another_executor_awaits_a_timer() {
    let deadline = futures::executor::block_on(Timer::after(Duration::from_millis(20)));
    assert!(Instant::now() >= deadline);
}

#[test]
fn a_plain_threads_timer_fires_while_a_one_worker_runtime_computes() {
    with_the_one_worker_computing("a plain thread's timer", block_on_a_timer);
}

#[test]
fn a_plain_threads_socket_read_completes_while_a_one_worker_runtime_computes() {
    with_the_one_worker_computing("a plain thread's socket read", block_on_a_socket_read);
}

#[test]
fn a_plain_threads_timer_fires_while_the_global_runtime_computes() {
    with_the_global_runtime_computing("a plain thread's timer", block_on_a_timer);
}

#[test]
fn a_plain_threads_socket_read_completes_while_the_global_runtime_computes() {
    with_the_global_runtime_computing("a plain thread's socket read", block_on_a_socket_read);
}

#[test]
fn a_timer_polled_by_another_executor_fires_while_a_runtime_computes() {
    with_the_one_worker_computing(
        "a timer under futures::executor::block_on",
        another_executor_awaits_a_timer,
    );
}
