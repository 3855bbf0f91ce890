//! Accepting when out of descriptors: the back-off that
//! [`TcpListener::accept`](super::TcpListener::accept) and
//! [`UnixListener::accept`](super::unix::UnixListener::accept) share.
//!
//! `accept(2)` fails with `EMFILE` when the process has used up its `RLIMIT_NOFILE`, with
//! `ENFILE` when the system has used up `fs.file-max`, and with `ENOBUFS` or `ENOMEM` when
//! the kernel is short of socket memory. In each case the connection stays in the
//! listener's backlog, so the listener stays readable:
//!
//! - retried at once, as a readiness loop does, the call fails again at once, and the
//!   accepting fiber keeps a core at 100% while serving nothing (the busy loops of
//!   nanomsg/nanomsg#152 and yesodweb/wai#928);
//! - returned to the caller, the error ends a `for stream in listener.incoming()` loop
//!   that propagates errors, and the server with it.
//!
//! So `accept` keeps these errors to itself. It parks the caller on a timer, for
//! [`FIRST_PAUSE`] after the first failure and twice as long after each next one, up to
//! [`LONGEST_PAUSE`], and tries again. No event says that a descriptor was closed, so a
//! timer is the only way to learn it; the first try after one was accepts the connection
//! that waited. At the longest pause, the wait costs one failing system call every 100 ms
//! and keeps the server from seeing free descriptors for at most that long.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

use crate::io::Async;

/// The pause after the first try that fails for want of resources.
const FIRST_PAUSE: Duration = Duration::from_millis(1);

/// The longest pause between two tries; the pause doubles until it reaches this.
const LONGEST_PAUSE: Duration = Duration::from_millis(100);

/// Runs `accept` on `listener`, waiting for readability as `read_with` does, until it
/// gives a connection or an error other than running out of resources; after each such
/// failure, parks the caller (or sleeps the thread outside fibers) as the module docs say.
///
/// # Errors
///
/// What `accept` returns other than `WouldBlock`, `EMFILE`, `ENFILE`, `ENOBUFS` and
/// `ENOMEM`.
pub(super) fn accept_backing_off<L: AsFd, R>(
    listener: &Async<L>,
    mut accept: impl FnMut(&L) -> io::Result<R>,
) -> io::Result<R> {
    let mut pause = FIRST_PAUSE;
    loop {
        match listener.read_with(&mut accept) {
            Err(error) if is_out_of_resources(&error) => {
                crate::time::sleep(pause);
                pause = next_pause(pause);
            }
            result => return result,
        }
    }
}

/// Whether `error` says the process or the kernel lacks what a new connection needs,
/// which closing descriptors elsewhere in the process (or the system) may give back.
fn is_out_of_resources(error: &io::Error) -> bool {
    matches!(
        error.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The pause after the one of `pause`: twice as long, at most [`LONGEST_PAUSE`].
fn next_pause(pause: Duration) -> Duration {
    (pause * 2).min(LONGEST_PAUSE)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_resource_errors_are_kept_from_the_caller() {
        for errno in [libc::EMFILE, libc::ENFILE, libc::ENOBUFS, libc::ENOMEM] {
            assert!(is_out_of_resources(&io::Error::from_raw_os_error(errno)));
        }
        for errno in [libc::ECONNABORTED, libc::EINVAL, libc::EBADF, libc::EAGAIN] {
            assert!(!is_out_of_resources(&io::Error::from_raw_os_error(errno)));
        }
        assert!(!is_out_of_resources(&io::Error::other("not an OS error")));
    }

    #[test]
    fn the_pause_doubles_from_one_millisecond_up_to_a_tenth_of_a_second() {
        let pauses: Vec<u128> = std::iter::successors(Some(FIRST_PAUSE), |&p| Some(next_pause(p)))
            .take(10)
            .map(|pause| pause.as_millis())
            .collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 64, 100, 100, 100]);
    }
}
