//! [`JoinError`]: why joining a fiber gave no value.

use std::any::Any;
use std::fmt;

/// Why joining a fiber gave no value.
pub struct JoinError {
    /// What happened.
    kind: JoinErrorKind,
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
    pub(crate) fn panic(payload: Box<dyn Any + Send + 'static>) -> JoinError {
        JoinError {
            kind: JoinErrorKind::Panic(payload),
        }
    }

    pub(crate) fn cancelled() -> JoinError {
        JoinError {
            kind: JoinErrorKind::Cancelled,
        }
    }

    pub(crate) fn not_started(error: std::io::Error) -> JoinError {
        JoinError {
            kind: JoinErrorKind::NotStarted(error),
        }
    }

    /// Why the fiber could not be started, if it could not: the error of mapping its stack
    /// (for example past `vm.max_map_count`).
    pub fn start_error(&self) -> Option<&std::io::Error> {
        match &self.kind {
            JoinErrorKind::NotStarted(error) => Some(error),
            _ => None,
        }
    }

    pub(crate) fn taken() -> JoinError {
        JoinError {
            kind: JoinErrorKind::Taken,
        }
    }

    /// Whether the fiber panicked.
    pub fn is_panic(&self) -> bool {
        matches!(self.kind, JoinErrorKind::Panic(_))
    }

    /// Whether the fiber was cancelled: aborted, or its runtime shut down before it finished.
    pub fn is_cancelled(&self) -> bool {
        matches!(self.kind, JoinErrorKind::Cancelled)
    }

    /// The panic payload, to re-raise with [`std::panic::resume_unwind`].
    ///
    /// # Panics
    ///
    /// Panics if the error is not a panic; check with [`is_panic`](JoinError::is_panic).
    pub fn into_panic(self) -> Box<dyn Any + Send + 'static> {
        match self.kind {
            JoinErrorKind::Panic(payload) => payload,
            _ => panic!("JoinError::into_panic on an error that is not a panic: {self}"),
        }
    }

    /// The panic message, when the payload is a string.
    fn message(&self) -> Option<&str> {
        match &self.kind {
            JoinErrorKind::Panic(payload) => crate::sys::message_of(&**payload),
            _ => None,
        }
    }
}

impl fmt::Display for JoinError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.kind, self.message()) {
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
