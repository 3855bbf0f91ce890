//! Shared helpers for the benchmarks.

use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use green::fiber::{Builder, Fiber, FloatControl, Resume};

/// A green fiber that suspends for ever, already started, so that every resume of it is
/// the same switch pair. Dropping it unwinds its stack.
pub fn suspending_fiber(float_control: FloatControl) -> Fiber<()> {
    // SAFETY: the fiber's frames borrow nothing (no thread-local either), so even a caller
    // that leaked it would leave nothing to be freed under a borrower.
    let mut fiber = unsafe {
        Builder::new().float_control(float_control).build(|s| {
            loop {
                s.suspend();
            }
        })
    }
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

/// A one-bit event with one waiter: the smallest future another task can complete, so
/// that the benchmarks measure the executors' park and wake paths and no channel.
#[derive(Default)]
pub struct Signal {
    /// Set by `notify`, consumed by `wait`.
    set: AtomicBool,
    /// The waiter's waker; kept after a wake, so waiting again does not clone it.
    waker: Mutex<Option<Waker>>,
}

impl Signal {
    /// Sets the signal and wakes the waiter, if any.
    pub fn notify(&self) {
        self.set.store(true, Ordering::Release);
        if let Some(waker) = &*self.waker.lock().unwrap() {
            waker.wake_by_ref();
        }
    }

    /// Waits until the signal is set, and clears it.
    pub fn wait(&self) -> impl Future<Output = ()> + '_ {
        poll_fn(move |cx| {
            if self.set.swap(false, Ordering::Acquire) {
                return Poll::Ready(());
            }
            {
                let mut slot = self.waker.lock().unwrap();
                match &*slot {
                    Some(waker) if waker.will_wake(cx.waker()) => {}
                    _ => *slot = Some(cx.waker().clone()),
                }
            }
            // A notify that came before the waker was stored is seen here.
            if self.set.swap(false, Ordering::Acquire) {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
    }
}

/// A future that wakes itself and returns `Pending` at its first poll, and returns its
/// value at its second (as `tokio::task::yield_now` does outside a tokio worker).
pub struct ReadyAfterOneWake<T> {
    /// Given back at the second poll; `None` after.
    value: Option<T>,
    /// Whether the first poll has been.
    woken: bool,
}

impl<T> ReadyAfterOneWake<T> {
    pub fn new(value: T) -> Self {
        ReadyAfterOneWake {
            value: Some(value),
            woken: false,
        }
    }
}

impl<T: Unpin> Future for ReadyAfterOneWake<T> {
    type Output = T;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<T> {
        if !self.woken {
            self.woken = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        Poll::Ready(self.value.take().expect("polled after it returned"))
    }
}
