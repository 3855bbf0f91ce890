//! Small helpers the whole crate shares.

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poison: green's own locks guard plain data, never left half
/// changed by a panic, because user code (wakers, destructors) runs only after they are
/// released.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs user code that green calls on a thread where a panic must not unwind further (a
/// worker's loop, a completion that must finish): a waker's `wake`, a destructor. A panic
/// is caught, reported once on stderr with `what` (for example "a waker's wake()"), and
/// its payload dropped, inside `catch_unwind` too, since a payload's own destructor may
/// panic.
pub(crate) fn catch_and_report(what: &str, f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        let message = message_of(&*payload).unwrap_or("a payload that is not a string");
        eprintln!(
            "green: {what} panicked ({message}); the panic was caught and the runtime goes on"
        );
        drop_quietly(payload);
    }
}

/// Drops a panic payload; a panic from its destructor is dropped in turn, without a word.
pub(crate) fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // A payload whose destructor panics with a payload whose destructor panics:
        // leaked, rather than loop.
        std::mem::forget(again);
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}
