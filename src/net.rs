//! Networking: TCP, UDP and Unix-domain sockets that park only the calling fiber.
//!
//! Every type here has the methods of its `std::net` (or `std::os::unix::net`) twin, in
//! blocking style: a call that cannot complete yet parks the calling fiber until the
//! reactor reports the socket ready, and the worker runs other fibers meanwhile. Outside
//! fibers the same call blocks the thread in `poll(2)`, as std would. So plain synchronous
//! code (`Read`, `Write`, `BufReader`, `read_exact`) serves thousands of connections on one
//! worker thread.
//!
//! The stream types also implement `futures_io::AsyncRead` and `AsyncWrite`, for owned
//! values and for shared references, so the same socket can be driven by async code
//! ([`block_on`](crate::block_on) or any other executor).
//!
//! ```
//! use std::io::{Read, Write};
//! use green::net::{TcpListener, TcpStream};
//!
//! green::run(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let address = listener.local_addr().unwrap();
//!     // One fiber per connection, written as plain blocking code.
//!     let server = green::spawn(move || {
//!         let (mut stream, _) = listener.accept().unwrap();
//!         let mut request = [0; 4];
//!         stream.read_exact(&mut request).unwrap();
//!         stream.write_all(b"pong").unwrap();
//!     });
//!     let mut stream = TcpStream::connect(address).unwrap();
//!     stream.write_all(b"ping").unwrap();
//!     let mut reply = String::new();
//!     stream.read_to_string(&mut reply).unwrap();
//!     assert_eq!(reply, "pong");
//!     server.join().unwrap();
//! });
//! ```
//!
//! # Name resolution
//!
//! `getaddrinfo` blocks, so an address that must be looked up (`"example.com:80"`) is
//! resolved on the [`unblock`](crate::unblock) pool while the fiber waits. Literal
//! addresses (a `SocketAddr`, `"127.0.0.1:80"`, `(IpAddr, u16)`, ...) skip the pool. That
//! is why the functions taking an address want `A: ToSocketAddrs + Send + 'static`: pass
//! an owned `String` rather than a borrowed `&str` built at run time.
//!
//! # Timeouts
//!
//! `set_read_timeout` and `set_write_timeout` bound how long one blocking-style call waits,
//! as in std; such a call then fails with [`io::ErrorKind::TimedOut`](std::io::ErrorKind),
//! never before the timeout has elapsed. The timeouts live in the wrapper, not in the
//! socket, and do not apply to the `AsyncRead`/`AsyncWrite` impls (async code races a
//! [`Timer`](crate::time::Timer) instead).
//!
//! # Reads into an empty buffer
//!
//! As with std's blocking sockets on Linux, a read, vectored read or peek into an empty
//! buffer does not return at once: on a stream socket it waits until the socket is
//! readable (data, end of stream, an error), then returns `Ok(0)` and leaves the data for
//! the next read; on a [`UdpSocket`] a receive waits for a datagram, takes it and discards
//! it, and a peek leaves it queued. With data already there, none of them waits. Code that
//! must not wait checks for an empty buffer first (as `read_exact` does). The `AsyncRead`
//! impls likewise stay pending until the socket is readable, as async-io's and tokio's do.
//!
//! # Implementation
//!
//! Each socket is a nonblocking descriptor in an [`Async`](crate::io::Async), registered
//! with the reactor of the worker where it is first waited on, or outside fibers with the
//! plain-thread reactor (see [`crate::io`]). `connect` is the only call std cannot
//! make nonblocking, so it is done here with `socket(SOCK_NONBLOCK)` and `connect(2)`
//! (`EINPROGRESS`, then wait for writability and read `SO_ERROR`).

/// The impls every socket type that holds its std socket in `io: Async<_>` shares:
/// `AsFd`, `AsRawFd`, `Debug` (the std socket's), and the conversion back to the std
/// type (deregistered, in blocking mode again).
macro_rules! registered_socket_impls {
    ($socket:ty, $std:ty) => {
        impl TryFrom<$socket> for $std {
            type Error = ::std::io::Error;

            /// Deregisters the socket and puts it back in blocking mode.
            fn try_from(socket: $socket) -> ::std::io::Result<$std> {
                let socket = socket.io.into_inner()?;
                socket.set_nonblocking(false)?;
                Ok(socket)
            }
        }

        impl ::std::os::fd::AsFd for $socket {
            fn as_fd(&self) -> ::std::os::fd::BorrowedFd<'_> {
                ::std::os::fd::AsFd::as_fd(self.io.get_ref())
            }
        }

        impl ::std::os::fd::AsRawFd for $socket {
            fn as_raw_fd(&self) -> ::std::os::fd::RawFd {
                ::std::os::fd::AsRawFd::as_raw_fd(self.io.get_ref())
            }
        }

        impl ::std::fmt::Debug for $socket {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(self.io.get_ref(), f)
            }
        }
    };
}

mod accept;
mod addr;
mod stream;
mod tcp;
mod udp;
pub mod unix;

pub use tcp::{Incoming, TcpListener, TcpStream};
pub use udp::UdpSocket;
