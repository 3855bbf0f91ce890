//! User wakers never run under green's locks: a waker whose `clone`, `drop` or `wake`
//! re-enters the channel, condition variable, timer or I/O source that called it does not
//! deadlock, and one that panics there reaches the caller of `poll` (or of the notifying
//! call) and leaves the type working for its other users.

mod common;

use common::within;
use std::future::Future;
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::panic::{self, AssertUnwindSafe};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::task::{Context, Poll, RawWaker, RawWakerVTable, Waker};
use std::time::Duration;

use green::io::Async;
use green::sync::{self, Condvar, Mutex, TryRecvError};
use green::time::Timer;

/// What a [`hooked`] waker does besides counting its wakes.
#[derive(Default)]
struct Hooks {
    /// Runs in `clone`, before the clone exists.
    on_clone: Option<Box<dyn Fn() + Send + Sync>>,
    /// Runs in `drop`.
    on_drop: Option<Box<dyn Fn() + Send + Sync>>,
    /// Runs in `wake` and `wake_by_ref`, after counting the wake.
    on_wake: Option<Box<dyn Fn() + Send + Sync>>,
    /// Wakes so far.
    wakes: AtomicUsize,
}

impl Hooks {
    /// Counts a wake and runs `on_wake`.
    fn woken(&self) {
        self.wakes.fetch_add(1, Ordering::SeqCst);
        if let Some(hook) = &self.on_wake {
            hook();
        }
    }

    /// Wakes so far.
    fn wakes(&self) -> usize {
        self.wakes.load(Ordering::SeqCst)
    }
}

/// The vtable of [`hooked`] wakers: the data pointer is an `Arc<Hooks>` from
/// `Arc::into_raw`, and each waker owns one count of it.
static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

/// A waker that runs `hooks`.
fn hooked(hooks: &Arc<Hooks>) -> Waker {
    let data = Arc::into_raw(hooks.clone()).cast::<()>();
    // SAFETY: the vtable's functions treat `data` as VTABLE says, and it is such a count.
    unsafe { Waker::from_raw(RawWaker::new(data, &VTABLE)) }
}

/// The vtable's `clone`: runs `on_clone`, then takes a count.
unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is a live `Arc<Hooks>` (see VTABLE), borrowed for this call.
    let hooks = unsafe { &*data.cast::<Hooks>() };
    if let Some(hook) = &hooks.on_clone {
        hook();
    }
    // SAFETY: as above; the new count belongs to the new waker.
    unsafe { Arc::increment_strong_count(data.cast::<Hooks>()) };
    RawWaker::new(data, &VTABLE)
}

/// The vtable's `wake`: counts the wake and gives the waker's count back.
unsafe fn wake(data: *const ()) {
    // SAFETY: `data` is a count owned by the waker being consumed (see VTABLE).
    let hooks = unsafe { Arc::from_raw(data.cast::<Hooks>()) };
    hooks.woken();
}

/// The vtable's `wake_by_ref`: counts the wake.
unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: `data` is a live `Arc<Hooks>` (see VTABLE), borrowed for this call.
    unsafe { &*data.cast::<Hooks>() }.woken();
}

/// The vtable's `drop`: runs `on_drop` and gives the waker's count back (also if the
/// hook panics).
unsafe fn drop_waker(data: *const ()) {
    // SAFETY: `data` is a count owned by the waker being dropped (see VTABLE).
    let hooks = unsafe { Arc::from_raw(data.cast::<Hooks>()) };
    if let Some(hook) = &hooks.on_drop {
        hook();
    }
}

/// A hook that panics while `armed` is set.
fn panics_while(
    armed: &Arc<AtomicBool>,
    what: &'static str,
) -> Option<Box<dyn Fn() + Send + Sync>> {
    let armed = armed.clone();
    Some(Box::new(move || {
        if armed.load(Ordering::SeqCst) {
            panic!("{what}");
        }
    }))
}

/// Polls `future` once with `waker`.
fn poll_with<F: Future + ?Sized>(future: Pin<&mut F>, waker: &Waker) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(waker))
}

#[test]
fn a_waker_cloned_by_a_channel_may_use_that_channel() {
    within(10, "registering a receiver", || {
        let (sender, receiver) = sync::channel::<u32>();
        let other = receiver.clone();
        let hooks = Arc::new(Hooks {
            on_clone: Some(Box::new(move || {
                let _ = other.try_recv();
            })),
            ..Hooks::default()
        });
        let waker = hooked(&hooks);
        let mut receive = pin!(receiver.recv_async());
        assert!(poll_with(receive.as_mut(), &waker).is_pending());
        sender.send(7).unwrap();
        assert_eq!(hooks.wakes(), 1);
        assert_eq!(poll_with(receive.as_mut(), &waker), Poll::Ready(Ok(7)));
    });
}

#[test]
fn a_waker_dropped_by_a_channel_may_use_that_channel() {
    within(10, "replacing and removing a receiver's waker", || {
        let (sender, receiver) = sync::channel::<u32>();
        let other = receiver.clone();
        let dropped = Arc::new(AtomicUsize::new(0));
        let count = dropped.clone();
        let hooks = Arc::new(Hooks {
            on_drop: Some(Box::new(move || {
                count.fetch_add(1, Ordering::SeqCst);
                assert_eq!(other.try_recv(), Err(TryRecvError::Empty));
            })),
            ..Hooks::default()
        });
        let plain = Arc::new(Hooks::default());
        let mut receive = Box::pin(receiver.recv_async());
        // The channel's clone of the first waker is displaced by the second, then the
        // second's clone by the first again, which is removed when the future is dropped.
        assert!(poll_with(receive.as_mut(), &hooked(&hooks)).is_pending());
        assert!(poll_with(receive.as_mut(), &hooked(&plain)).is_pending());
        assert!(poll_with(receive.as_mut(), &hooked(&hooks)).is_pending());
        let before = dropped.load(Ordering::SeqCst);
        drop(receive);
        assert!(dropped.load(Ordering::SeqCst) > before);
        sender.send(1).unwrap();
        assert_eq!(receiver.try_recv(), Ok(1));
    });
}

#[test]
fn a_waker_that_panics_when_cloned_by_a_channel_leaves_it_working() {
    within(10, "the channel after a panicking clone", || {
        let (sender, receiver) = sync::channel::<u32>();
        let armed = Arc::new(AtomicBool::new(true));
        let hooks = Arc::new(Hooks {
            on_clone: panics_while(&armed, "clone refused"),
            ..Hooks::default()
        });
        let waker = hooked(&hooks);
        let mut receive = Box::pin(receiver.recv_async());
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            poll_with(receive.as_mut(), &waker).is_pending()
        }));
        assert!(
            polled.is_err(),
            "the clone's panic reaches the caller of poll"
        );
        drop(receive);
        // Another receiver, on another thread, waits and is woken by the next send.
        let (ready_tx, ready_rx) = mpsc::channel();
        let other = receiver.clone();
        let waiter = std::thread::spawn(move || {
            ready_tx.send(()).unwrap();
            other.recv()
        });
        ready_rx.recv().unwrap();
        sender.send(2).unwrap();
        assert_eq!(waiter.join().unwrap(), Ok(2));
    });
}

#[test]
fn a_waker_that_panics_when_dropped_by_a_channel_leaves_it_working() {
    within(10, "the channel after a panicking drop", || {
        let (sender, receiver) = sync::channel::<u32>();
        let armed = Arc::new(AtomicBool::new(true));
        let hooks = Arc::new(Hooks {
            on_drop: panics_while(&armed, "drop refused"),
            ..Hooks::default()
        });
        let plain = Arc::new(Hooks::default());
        let mut receive = Box::pin(receiver.recv_async());
        let first = hooked(&hooks);
        assert!(poll_with(receive.as_mut(), &first).is_pending());
        // The second waker displaces the channel's clone of the first, which panics.
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            poll_with(receive.as_mut(), &hooked(&plain)).is_pending()
        }));
        assert!(
            polled.is_err(),
            "the drop's panic reaches the caller of poll"
        );
        armed.store(false, Ordering::SeqCst);
        // A future that panicked is done with; another receiver waits and is woken.
        drop(receive);
        let mut receive = Box::pin(receiver.recv_async());
        assert!(poll_with(receive.as_mut(), &hooked(&plain)).is_pending());
        sender.send(3).unwrap();
        assert_eq!(plain.wakes(), 1);
        assert_eq!(
            poll_with(receive.as_mut(), &hooked(&plain)),
            Poll::Ready(Ok(3))
        );
        sender.send(4).unwrap();
        assert_eq!(receiver.recv(), Ok(4));
    });
}

#[test]
fn a_waker_that_panics_when_woken_by_a_channel_does_not_cost_other_receivers_their_wake() {
    within(10, "disconnecting the channel", || {
        let (sender, receiver) = sync::channel::<u32>();
        let armed = Arc::new(AtomicBool::new(true));
        let panicking = Arc::new(Hooks {
            on_wake: panics_while(&armed, "wake refused"),
            ..Hooks::default()
        });
        let plain = Arc::new(Hooks::default());
        let mut first = Box::pin(receiver.recv_async());
        let mut second = Box::pin(receiver.recv_async());
        assert!(poll_with(first.as_mut(), &hooked(&panicking)).is_pending());
        assert!(poll_with(second.as_mut(), &hooked(&plain)).is_pending());
        // The last sender's drop wakes every receiver: the first waker panics.
        let dropped = panic::catch_unwind(AssertUnwindSafe(|| drop(sender)));
        assert!(dropped.is_err(), "the wake's panic reaches the notifier");
        assert_eq!(plain.wakes(), 1, "the second receiver was not woken");
        assert_eq!(
            poll_with(second.as_mut(), &hooked(&plain)),
            Poll::Ready(Err(sync::RecvError))
        );
    });
}

#[test]
fn a_waker_cloned_by_a_condvar_may_notify_that_condvar() {
    within(10, "refreshing a condvar waiter's waker", || {
        let pair = Arc::new((Mutex::new(()), Condvar::new()));
        let notifier = pair.clone();
        let hooks = Arc::new(Hooks {
            on_clone: Some(Box::new(move || notifier.1.notify_one())),
            ..Hooks::default()
        });
        let plain = Arc::new(Hooks::default());
        let (mutex, condvar) = &*pair;
        let mut wait = Box::pin(condvar.wait_async(mutex.lock().unwrap()));
        assert!(poll_with(wait.as_mut(), &hooked(&plain)).is_pending());
        // A new waker to register: its clone notifies the very waiter it is made for,
        // which then finds itself notified and takes the (free) mutex.
        match poll_with(wait.as_mut(), &hooked(&hooks)) {
            Poll::Ready(guard) => drop(guard.unwrap()),
            Poll::Pending => panic!("the waiter was notified and the mutex is free"),
        }
        assert_eq!(
            plain.wakes(),
            1,
            "the notification woke the registered waker"
        );
        drop(wait);
        assert!(mutex.try_lock().is_ok());
    });
}

#[test]
fn a_waker_that_panics_when_woken_by_a_condvar_does_not_cost_other_waiters_their_wake() {
    within(10, "notifying every waiter", || {
        let mutex = Mutex::new(());
        let condvar = Condvar::new();
        let armed = Arc::new(AtomicBool::new(true));
        let panicking = Arc::new(Hooks {
            on_wake: panics_while(&armed, "wake refused"),
            ..Hooks::default()
        });
        let plain = Arc::new(Hooks::default());
        let mut first = Box::pin(condvar.wait_async(mutex.lock().unwrap()));
        assert!(poll_with(first.as_mut(), &hooked(&panicking)).is_pending());
        let mut second = Box::pin(condvar.wait_async(mutex.lock().unwrap()));
        assert!(poll_with(second.as_mut(), &hooked(&plain)).is_pending());
        let notified = panic::catch_unwind(AssertUnwindSafe(|| condvar.notify_all()));
        assert!(notified.is_err(), "the wake's panic reaches the notifier");
        assert_eq!(plain.wakes(), 1, "the second waiter was not woken");
        match poll_with(second.as_mut(), &hooked(&plain)) {
            Poll::Ready(guard) => drop(guard.unwrap()),
            Poll::Pending => panic!("the second waiter was notified and the mutex is free"),
        }
    });
}

#[test]
fn a_waker_cloned_and_dropped_by_a_timer_may_register_timers() {
    within(10, "registering, removing and firing a timer", || {
        let poll_a_timer = || {
            let mut timer = pin!(Timer::after(Duration::from_secs(3600)));
            assert!(poll_with(timer.as_mut(), Waker::noop()).is_pending());
        };
        let (fired_tx, fired_rx) = mpsc::channel();
        let hooks = Arc::new(Hooks {
            on_clone: Some(Box::new(poll_a_timer)),
            on_drop: Some(Box::new(poll_a_timer)),
            on_wake: Some(Box::new(move || {
                let _ = fired_tx.send(());
            })),
            ..Hooks::default()
        });
        // Registered, then removed before it fires.
        let mut timer = Box::pin(Timer::after(Duration::from_secs(3600)));
        assert!(poll_with(timer.as_mut(), &hooked(&hooks)).is_pending());
        drop(timer);
        // Registered, then fired: the reactor takes its clone out and wakes it.
        let mut timer = Box::pin(Timer::after(Duration::from_millis(1)));
        if poll_with(timer.as_mut(), &hooked(&hooks)).is_pending() {
            fired_rx.recv().unwrap();
            assert!(poll_with(timer.as_mut(), &hooked(&hooks)).is_ready());
        }
    });
}

#[test]
fn a_waker_that_panics_when_cloned_by_a_timer_leaves_the_reactor_working() {
    within(10, "a timer after a panicking clone", || {
        let armed = Arc::new(AtomicBool::new(true));
        let hooks = Arc::new(Hooks {
            on_clone: panics_while(&armed, "clone refused"),
            ..Hooks::default()
        });
        let mut timer = Box::pin(Timer::after(Duration::from_secs(3600)));
        let polled = panic::catch_unwind(AssertUnwindSafe(|| {
            poll_with(timer.as_mut(), &hooked(&hooks)).is_pending()
        }));
        assert!(
            polled.is_err(),
            "the clone's panic reaches the caller of poll"
        );
        drop(timer);
        green::block_on(Timer::after(Duration::from_millis(1)));
    });
}

#[test]
fn a_waker_cloned_and_dropped_by_an_io_source_may_poll_that_source() {
    within(10, "registering a readiness waiter", || {
        let (reader, mut writer) = UnixStream::pair().unwrap();
        let reader = Arc::new(Async::new(reader).unwrap());
        let poll_the_source = {
            let reader = reader.clone();
            move || {
                let mut cx = Context::from_waker(Waker::noop());
                let _ = reader.poll_readable(&mut cx);
                let _ = poll_with(pin!(reader.readable()), Waker::noop());
            }
        };
        let hooks = Arc::new(Hooks {
            on_clone: Some(Box::new(poll_the_source.clone())),
            on_drop: Some(Box::new(poll_the_source)),
            ..Hooks::default()
        });
        let plain = Arc::new(Hooks::default());
        // `poll_readable`: the source keeps one waker per direction.
        let (first, second) = (hooked(&hooks), hooked(&plain));
        assert!(
            reader
                .poll_readable(&mut Context::from_waker(&first))
                .is_pending()
        );
        assert!(
            reader
                .poll_readable(&mut Context::from_waker(&second))
                .is_pending()
        );
        // A readiness future: registered, refreshed with another waker, removed.
        let mut readable = Box::pin(reader.readable());
        assert!(poll_with(readable.as_mut(), &hooked(&hooks)).is_pending());
        assert!(poll_with(readable.as_mut(), &hooked(&plain)).is_pending());
        assert!(poll_with(readable.as_mut(), &hooked(&hooks)).is_pending());
        drop(readable);
        writer.write_all(b"x").unwrap();
        green::block_on(reader.readable()).unwrap();
    });
}
