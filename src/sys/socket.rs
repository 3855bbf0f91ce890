//! The socket system calls std makes only in blocking form or not at all: a nonblocking
//! `socket(2)` and `connect(2)`, the C form of the address `connect` takes, raising a
//! listener's backlog, and `SO_INCOMING_CPU`.

use std::io;
use std::mem;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// A socket address in the C layout `connect(2)` takes.
pub(crate) enum RawAddr {
    /// An IPv4 address.
    V4(libc::sockaddr_in),
    /// An IPv6 address.
    V6(libc::sockaddr_in6),
    /// A Unix-domain path, with the length that covers it and its terminating NUL.
    Unix(libc::sockaddr_un, libc::socklen_t),
}

impl RawAddr {
    /// The C form of an IP socket address.
    pub(crate) fn inet(addr: &SocketAddr) -> RawAddr {
        match addr {
            SocketAddr::V4(addr) => RawAddr::V4(libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: addr.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(addr.ip().octets()),
                },
                sin_zero: [0; 8],
            }),
            SocketAddr::V6(addr) => RawAddr::V6(libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: addr.port().to_be(),
                sin6_flowinfo: addr.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: addr.ip().octets(),
                },
                sin6_scope_id: addr.scope_id(),
            }),
        }
    }

    /// The C form of a Unix-domain socket path.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a path with a NUL byte or one longer than
    /// `sun_path` holds (107 bytes on Linux).
    pub(crate) fn unix(path: &Path) -> io::Result<RawAddr> {
        let bytes = path.as_os_str().as_bytes();
        let mut addr = libc::sockaddr_un {
            sun_family: libc::AF_UNIX as libc::sa_family_t,
            sun_path: [0; 108],
        };
        if bytes.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "paths must not contain interior null bytes",
            ));
        }
        // Keep one byte for the terminating NUL.
        if bytes.len() >= addr.sun_path.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "path must be shorter than SUN_LEN",
            ));
        }
        for (to, &from) in addr.sun_path.iter_mut().zip(bytes) {
            *to = from as libc::c_char;
        }
        let len = mem::offset_of!(libc::sockaddr_un, sun_path) + bytes.len() + 1;
        Ok(RawAddr::Unix(addr, len as libc::socklen_t))
    }

    /// The address family (`AF_INET`, `AF_INET6` or `AF_UNIX`).
    pub(crate) fn family(&self) -> libc::c_int {
        match self {
            RawAddr::V4(_) => libc::AF_INET,
            RawAddr::V6(_) => libc::AF_INET6,
            RawAddr::Unix(..) => libc::AF_UNIX,
        }
    }

    /// The pointer and length to pass to `connect(2)`.
    fn as_ptr(&self) -> (*const libc::sockaddr, libc::socklen_t) {
        match self {
            RawAddr::V4(addr) => (
                (addr as *const libc::sockaddr_in).cast(),
                mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ),
            RawAddr::V6(addr) => (
                (addr as *const libc::sockaddr_in6).cast(),
                mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
            ),
            RawAddr::Unix(addr, len) => ((addr as *const libc::sockaddr_un).cast(), *len),
        }
    }
}

/// A new nonblocking, close-on-exec stream socket of `family`.
///
/// # Errors
///
/// What `socket(2)` returns, e.g. `EMFILE` when out of descriptors.
pub(crate) fn stream_socket(family: libc::c_int) -> io::Result<OwnedFd> {
    let kind = libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC;
    // SAFETY: plain system call with no pointer arguments.
    let fd = unsafe { libc::socket(family, kind, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `socket` just returned this descriptor, and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Starts connecting a nonblocking socket: `Ok(false)` if it connected at once, `Ok(true)`
/// if the connection is in progress (wait for writability, then check `SO_ERROR`).
///
/// # Errors
///
/// What `connect(2)` returns; `WouldBlock` (`EAGAIN`) from a Unix-domain socket means the
/// listener's backlog is full.
pub(crate) fn start_connect(socket: BorrowedFd<'_>, addr: &RawAddr) -> io::Result<bool> {
    let (addr, len) = addr.as_ptr();
    // SAFETY: `addr` points at a live socket address of `len` bytes, borrowed from `addr`.
    if unsafe { libc::connect(socket.as_raw_fd(), addr, len) } == 0 {
        return Ok(false);
    }
    let error = io::Error::last_os_error();
    match error.raw_os_error() {
        // EINTR: the connection still proceeds in the background, as with EINPROGRESS.
        Some(libc::EINPROGRESS | libc::EINTR) => Ok(true),
        _ => Err(error),
    }
}

/// Raises the backlog of a listening socket from std's 128 to `SOMAXCONN` (the kernel
/// clamps it to `net.core.somaxconn`), so that a burst of connections from fibers is
/// queued rather than dropped and retried a second later.
///
/// Linux lets `listen(2)` be called again on a listening socket to change its backlog.
///
/// # Errors
///
/// What `listen(2)` returns.
pub(crate) fn raise_backlog(listener: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: plain system call on a borrowed, open descriptor.
    if unsafe { libc::listen(listener.as_raw_fd(), libc::SOMAXCONN) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The CPU that last handled packets received by `socket` (`SO_INCOMING_CPU`), if the
/// kernel knows one.
pub(crate) fn incoming_cpu(socket: BorrowedFd<'_>) -> Option<usize> {
    let mut cpu: libc::c_int = -1;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `cpu` and `len` are valid for writes and `len` is the size of `cpu`.
    let result = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_INCOMING_CPU,
            (&raw mut cpu).cast(),
            &mut len,
        )
    };
    if result == 0 {
        usize::try_from(cpu).ok()
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unix_paths_too_long_are_refused() {
        let long = "x".repeat(200);
        let error = RawAddr::unix(Path::new(&long)).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }
}
