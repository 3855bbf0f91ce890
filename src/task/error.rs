//! [`JoinError`]: why joining a fiber gave no value.

use std::any::Any;
use std::fmt;

/// Whether a payload caught with [`std::panic::catch_unwind`] is green unwinding a
/// cancelled fiber ([`JoinHandle::abort`](crate::JoinHandle::abort), a runtime's
/// shutdown) or a suspended [`Fiber`](crate::fiber::Fiber) being dropped, rather than a
/// panic.
///
/// A fiber that catches its cancellation and runs on is cancelled again at its next
/// suspension point. Code that catches panics in a loop that suspends (a supervisor that
/// restarts a service) should re-raise a cancellation, or the loop never ends: each
/// restart is unwound at its first suspension, and caught again.
///
/// # Examples
///
/// ```
/// use std::panic::{self, AssertUnwindSafe};
/// use std::time::Duration;
///
/// fn serve() {
///     green::sleep(Duration::from_secs(3600)); // waits for requests
/// }
///
/// green::run(|| {
///     let supervisor = green::spawn(|| loop {
///         match panic::catch_unwind(AssertUnwindSafe(serve)) {
///             Err(payload) if green::is_cancellation(&*payload) => panic::resume_unwind(payload),
///             Err(_) => eprintln!("the service panicked; restarting it"),
///             Ok(()) => return,
///         }
///     });
///     green::yield_now();
///     supervisor.abort();
///     assert!(supervisor.join().unwrap_err().is_cancelled());
/// });
/// ```
pub fn is_cancellation(payload: &(dyn Any + Send)) -> bool {
    payload.is::<crate::worker::Cancelled>() || payload.is::<crate::fiber::ForcedUnwind>()
}

/// Why joining a fiber gave no value.
pub struct JoinError {
    /// What happened. Boxed: a `JoinError` is one pointer, so every task's result slot
    /// (`Option<Result<T, JoinError>>`) is 8 bytes smaller; errors are rare, values are
    /// not.
    kind: Box<JoinErrorKind>,
}

/// What happened to a fiber that gave no value.
enum JoinErrorKind {
    /// It panicked with this payload.
    Panic(Box<dyn Any + Send + 'static>),
    /// It was aborted, or its runtime shut down first.
    Cancelled,
    /// The result was already taken (a `JoinHandle` polled after it completed).
    Taken,
    /// The fiber could not be started: no stack could be mapped for it.
    NotStarted(std::io::Error),
}

impl JoinError {
    fn new(kind: JoinErrorKind) -> JoinError {
        JoinError {
            kind: Box::new(kind),
        }
    }

    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError::new(JoinErrorKind::Panic(payload))
    }

    pub(crate) fn cancelled() -> JoinError {
        JoinError::new(JoinErrorKind::Cancelled)
    }

    pub(crate) fn not_started(error: std::io::Error) -> JoinError {
        JoinError::new(JoinErrorKind::NotStarted(error))
    }

    /// Why the fiber could not be started, if it could not: the error of mapping its stack
    /// (for example past `vm.max_map_count`).
    pub fn start_error(&self) -> Option<&std::io::Error> {
        match &*self.kind {
            JoinErrorKind::NotStarted(error) => Some(error),
            _ => None,
        }
    }

    pub(crate) fn taken() -> JoinError {
        JoinError::new(JoinErrorKind::Taken)
    }

    /// Whether the fiber panicked.
    pub fn is_panic(&self) -> bool {
        matches!(*self.kind, JoinErrorKind::Panic(_))
    }

    /// Whether the fiber was cancelled: aborted, or its runtime shut down before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(*self.kind, JoinErrorKind::Cancelled)
    }

    /// The panic payload, to re-raise with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// Panics if the error is not a panic; check with [`is_panic`](JoinError::is_panic).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match *self.kind {
            JoinErrorKind::Panic(payload) => payload,
            kind => panic!(
                "JoinError::into_panic on an error that is not a panic: {}",
                JoinError::new(kind)
            ),
        }
    }

    /// The panic message, when the payload is a string.
    fn message(&self) -> Option<&str> {
        match &*self.kind {
            JoinErrorKind::Panic(payload) => crate::sys::message_of(&**payload),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&*self.kind, self.message()) {
            (JoinErrorKind::Panic(_), Some(message)) => write!(f, "the fiber panicked: {message}"),
            (JoinErrorKind::Panic(_), None) => f.write_str("the fiber panicked"),
            (JoinErrorKind::Cancelled, _) => {
                f.write_str("the fiber was cancelled (aborted, or its runtime shut down)")
            }
            (JoinErrorKind::Taken, _) => f.write_str("the fiber's result was already taken"),
            (JoinErrorKind::NotStarted(error), _) => {
                write!(f, "the fiber could not start: {error}")
            }
        }
    }
}

impl fmt::Debug for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JoinError({self})")
    }
}

impl std::error::Error for JoinError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_join_error_is_one_pointer_so_a_result_slot_stays_small() {
        assert_eq!(size_of::<JoinError>(), size_of::<usize>());
        assert_eq!(size_of::<Option<Result<u64, JoinError>>>(), 16);
    }

    #[test]
    fn each_kind_says_what_happened() {
        let panic = JoinError::panic(Box::new("boom"));
        assert!(panic.is_panic() && !panic.is_cancelled());
        assert_eq!(panic.to_string(), "the fiber panicked: boom");
        assert_eq!(*panic.into_panic().downcast::<&str>().unwrap(), "boom");
        let cancelled = JoinError::cancelled();
        assert!(cancelled.is_cancelled() && !cancelled.is_panic());
        assert!(cancelled.start_error().is_none());
        let not_started = JoinError::not_started(std::io::Error::from_raw_os_error(12));
        assert_eq!(
            not_started.start_error().and_then(|e| e.raw_os_error()),
            Some(12)
        );
        assert!(JoinError::taken().to_string().contains("already taken"));
    }

    #[test]
    #[should_panic(expected = "not a panic: the fiber was cancelled")]
    fn into_panic_on_another_error_panics_saying_which() {
        let _ = JoinError::cancelled().into_panic();
    }
}
