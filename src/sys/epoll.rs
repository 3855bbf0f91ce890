//! A reactor's wait, made directly on the poller's epoll descriptor: one system call.
//!
//! `polling::Poller::wait` makes five on Linux for every wait: it arms a timerfd for the
//! timeout, re-arms it and its notifier with two `epoll_ctl`, waits, and reads its
//! notifier. A busy worker polls its reactor on every turn budget and every time it runs
//! out of work, so green keeps `polling` for what it does once per descriptor (add,
//! modify, delete) and waits itself:
//!
//! * `epoll_pwait2` takes the timeout in nanoseconds, so timers keep their precision
//!   without a timerfd; where the kernel or an emulator lacks it (`ENOSYS`, Linux before
//!   5.11, QEMU's user mode), `epoll_wait` with the timeout rounded *up* to a millisecond,
//!   so that a timer never fires early.
//! * [`Notifier`] interrupts a wait with an `eventfd` registered edge-triggered: every
//!   write is an edge, so its counter never needs reading, and writes are coalesced (one
//!   per wait, whatever the number of notifications).
//!
//! An event's key is the `u64` that `polling` stores at registration: `key as u64`.
//! Sources are added here too ([`add_source`]), for the one flag `polling` does not ask
//! for, `EPOLLRDHUP`; `polling` deletes them.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::time::Duration;

/// Events one wait returns at most (more wait for the next).
const CAPACITY: usize = 1024;

/// The events of one wait.
pub(crate) struct Events {
    /// Filled by the kernel up to `len`.
    list: Vec<libc::epoll_event>,
    /// Events the last wait returned.
    len: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len).finish()
    }
}

/// One event: the key a descriptor was registered with, and which directions are ready
/// (errors and hang-ups count as both, as in `polling`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Ready {
    /// The registration's key.
    pub(crate) key: usize,
    /// A read would not block (or fail at once).
    pub(crate) readable: bool,
    /// A write would not block (or fail at once).
    pub(crate) writable: bool,
    /// The peer closed its side, an error is pending, or urgent data came: after these,
    /// a read that fills less than its buffer no longer shows the receive queue empty
    /// (see `Source::quiet_since`).
    pub(crate) hung_up: bool,
}

impl Ready {
    /// Decodes the kernel's event: `data` is the key, `flags` the readiness bits.
    pub(crate) fn decode(flags: u32, data: u64) -> Ready {
        let flag = |bits: libc::c_int| flags & bits as u32 != 0;
        Ready {
            key: data as usize,
            readable: flag(libc::EPOLLIN | libc::EPOLLPRI | libc::EPOLLHUP | libc::EPOLLERR),
            writable: flag(libc::EPOLLOUT | libc::EPOLLHUP | libc::EPOLLERR),
            hung_up: flag(libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR | libc::EPOLLPRI),
        }
    }
}

impl Events {
    /// Room for [`CAPACITY`] events.
    pub(crate) fn new() -> Events {
        Events {
            list: vec![libc::epoll_event { events: 0, u64: 0 }; CAPACITY],
            len: 0,
        }
    }

    /// The events of the last wait.
    pub(crate) fn iter(&self) -> impl Iterator<Item = Ready> + '_ {
        self.list[..self.len].iter().map(|event| {
            // Copies: the struct is packed on x86_64.
            let (flags, data) = (event.events, event.u64);
            Ready::decode(flags, data)
        })
    }
}

/// Adds `fd` to `epoll`, edge-triggered, for reading and writing, with the peer's
/// half-close (`EPOLLRDHUP`) and urgent data (`EPOLLPRI`) reported as such, under `key`
/// (as `polling` would store it: the event's data is `key as u64`).
///
/// # Errors
///
/// What `epoll_ctl(ADD)` returns: `EBADF` for a closed descriptor, `EPERM` for a regular
/// file, `EEXIST` if it is there already.
pub(crate) fn add_source(epoll: RawFd, fd: RawFd, key: usize) -> io::Result<()> {
    let flags = libc::EPOLLIN
        | libc::EPOLLOUT
        | libc::EPOLLRDHUP
        | libc::EPOLLPRI
        | libc::EPOLLHUP
        | libc::EPOLLERR
        | libc::EPOLLET;
    let mut event = libc::epoll_event {
        events: flags as u32,
        u64: key as u64,
    };
    // SAFETY: `event` is a valid epoll_event that the kernel only reads; bad descriptors
    // are errors, not undefined behaviour.
    if unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut event) } == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether `epoll_pwait2` works here: 0 not tried yet, 1 yes, 2 no.
static PWAIT2: AtomicU8 = AtomicU8::new(0);

/// Waits on the epoll descriptor `epoll` for at most `timeout` (`None`: no limit) and
/// fills `events`. A signal ends the wait early with no events, as a spurious wake-up
/// (the callers loop).
///
/// # Errors
///
/// What `epoll_pwait2`/`epoll_wait` return other than `EINTR` (`EBADF` for a closed
/// descriptor, say).
pub(crate) fn wait(epoll: RawFd, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
    events.len = 0;
    let max = events.list.len() as libc::c_int;
    let buffer = events.list.as_mut_ptr();
    let mut result = -1;
    if PWAIT2.load(Ordering::Relaxed) != 2 {
        let spec = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs().min(i64::MAX as u64) as libc::time_t,
            tv_nsec: t.subsec_nanos().into(),
        });
        let spec_ptr = spec
            .as_ref()
            .map_or(std::ptr::null(), |s| s as *const libc::timespec);
        // SAFETY: `buffer` has room for `max` events; `spec_ptr` is null or points at a
        // timespec that lives across the call; no signal mask is passed (null, size 0).
        result = unsafe {
            libc::syscall(
                libc::SYS_epoll_pwait2,
                epoll,
                buffer,
                max,
                spec_ptr,
                0usize,
                0usize,
            )
        } as libc::c_int;
        if result < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::ENOSYS) {
            PWAIT2.store(2, Ordering::Relaxed);
        } else {
            PWAIT2.store(1, Ordering::Relaxed);
        }
    }
    if PWAIT2.load(Ordering::Relaxed) == 2 {
        let millis = timeout.map_or(-1, |t| {
            // Rounded up: a timer must not fire before its deadline.
            let micros = t.as_micros().div_ceil(1000);
            micros.min(libc::c_int::MAX as u128) as libc::c_int
        });
        // SAFETY: `buffer` has room for `max` events.
        result = unsafe { libc::epoll_wait(epoll, buffer, max, millis) };
    }
    if result < 0 {
        let error = io::Error::last_os_error();
        return match error.raw_os_error() {
            Some(libc::EINTR) => Ok(()),
            _ => Err(error),
        };
    }
    events.len = result as usize;
    Ok(())
}

/// Interrupts a reactor's wait from any thread.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// The eventfd, non-blocking.
    fd: OwnedFd,
    /// Set by a notification, cleared after each wait: later notifications before the
    /// clear write nothing (the waiter is awake and looks at its queues anyway).
    notified: AtomicBool,
}

impl Notifier {
    /// A new eventfd; register its descriptor ([`as_raw_fd`](Notifier::as_raw_fd))
    /// edge-triggered for reading.
    pub(crate) fn new() -> io::Result<Notifier> {
        // SAFETY: eventfd has no preconditions.
        let fd = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Notifier {
            // SAFETY: `fd` was just opened and is owned by nothing else.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            notified: AtomicBool::new(false),
        })
    }

    /// The descriptor to register.
    pub(crate) fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// Makes the current or next wait return.
    pub(crate) fn notify(&self) {
        if !self.notified.swap(true, Ordering::SeqCst) {
            let one = 1u64.to_ne_bytes();
            // SAFETY: writes 8 bytes from a local buffer to our eventfd. Failure (the
            // counter full after 2^64 - 2 unread writes) leaves an edge pending anyway.
            let _ = unsafe { libc::write(self.fd.as_raw_fd(), one.as_ptr().cast(), 8) };
        }
    }

    /// After a wait: the next notification writes again.
    pub(crate) fn clear(&self) {
        self.notified.store(false, Ordering::SeqCst);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_decodes_to_its_key_and_directions() {
        let (input, output) = (libc::EPOLLIN as u32, libc::EPOLLOUT as u32);
        assert_eq!(
            Ready::decode(input, 7),
            Ready {
                key: 7,
                readable: true,
                writable: false,
                hung_up: false
            }
        );
        assert_eq!(
            Ready::decode(output, u64::from(u32::MAX) + 5),
            Ready {
                key: (u64::from(u32::MAX) + 5) as usize,
                readable: false,
                writable: true,
                hung_up: false
            }
        );
        for both in [libc::EPOLLHUP, libc::EPOLLERR] {
            let ready = Ready::decode(both as u32, 1);
            assert!(ready.readable && ready.writable, "{both:#x}");
        }
        assert!(!Ready::decode(libc::EPOLLRDHUP as u32, 1).readable);
        for hang_up in [
            libc::EPOLLRDHUP,
            libc::EPOLLHUP,
            libc::EPOLLERR,
            libc::EPOLLPRI,
        ] {
            assert!(Ready::decode(hang_up as u32, 1).hung_up, "{hang_up:#x}");
        }
        assert!(!Ready::decode((libc::EPOLLIN | libc::EPOLLOUT) as u32, 1).hung_up);
    }

    /// An epoll descriptor with `notifier` registered edge-triggered under `key`.
    fn epoll_with(notifier: &Notifier, key: u64) -> OwnedFd {
        // SAFETY: epoll_create1 has no preconditions.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0);
        let mut event = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLET) as u32,
            u64: key,
        };
        // SAFETY: both descriptors are open; `event` is a valid epoll_event.
        let rc = unsafe {
            libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, notifier.as_raw_fd(), &mut event)
        };
        assert_eq!(rc, 0);
        // SAFETY: `epoll` was just opened and is owned by nothing else.
        unsafe { OwnedFd::from_raw_fd(epoll) }
    }

    #[test]
    fn a_notification_ends_one_wait_and_only_one() {
        let notifier = Notifier::new().unwrap();
        let epoll = epoll_with(&notifier, 42);
        let mut events = Events::new();
        notifier.notify();
        notifier.notify(); // coalesced
        wait(epoll.as_raw_fd(), &mut events, None).unwrap();
        let ready: Vec<_> = events.iter().collect();
        assert_eq!(ready.len(), 1);
        assert_eq!((ready[0].key, ready[0].readable), (42, true));
        notifier.clear();
        // Edge-triggered and never read: no event until the next notification.
        wait(epoll.as_raw_fd(), &mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), 0);
        notifier.notify();
        wait(
            epoll.as_raw_fd(),
            &mut events,
            Some(Duration::from_secs(10)),
        )
        .unwrap();
        assert_eq!(events.iter().count(), 1);
    }

    #[test]
    fn a_timed_wait_with_nothing_ready_returns_no_events_no_earlier_than_its_timeout() {
        let notifier = Notifier::new().unwrap();
        let epoll = epoll_with(&notifier, 1);
        let mut events = Events::new();
        let timeout = Duration::from_micros(1500);
        let start = std::time::Instant::now();
        wait(epoll.as_raw_fd(), &mut events, Some(timeout)).unwrap();
        assert_eq!(events.iter().count(), 0);
        assert!(start.elapsed() >= timeout, "{:?}", start.elapsed());
    }

    #[test]
    fn waiting_on_a_closed_descriptor_is_an_error() {
        let mut events = Events::new();
        let error = wait(-1, &mut events, Some(Duration::ZERO)).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::EBADF));
    }
}
