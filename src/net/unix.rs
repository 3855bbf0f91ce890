//! Unix-domain stream sockets: [`UnixListener`] and [`UnixStream`].
//!
//! They behave as their [`std::os::unix::net`] twins, with the blocking calls parking only
//! the calling fiber (see the [parent module](crate::net)).

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::os::unix::net::SocketAddr;
use std::path::Path;

use super::accept::accept_backing_off;
use super::stream::{Stream, stream_impls, stream_methods};
use crate::io::Async;
use crate::sys::socket::{RawAddr, raise_backlog, start_connect, stream_socket};

/// A Unix-domain socket server, listening for connections.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use green::net::unix::{UnixListener, UnixStream};
///
/// let path = std::env::temp_dir().join(format!("green-doc-{}.sock", std::process::id()));
/// let _ = std::fs::remove_file(&path);
/// let listener = UnixListener::bind(&path).unwrap();
/// let client_path = path.clone();
/// green::run(move || {
///     let server = green::spawn(move || {
///         let (mut stream, _) = listener.accept().unwrap();
///         stream.write_all(b"hello").unwrap();
///     });
///     let mut stream = UnixStream::connect(&client_path).unwrap();
///     let mut greeting = String::new();
///     stream.read_to_string(&mut greeting).unwrap();
///     assert_eq!(greeting, "hello");
///     server.join().unwrap();
/// });
/// std::fs::remove_file(&path).unwrap();
/// ```
pub struct UnixListener {
    /// The registered, nonblocking listener.
    io: Async<std::os::unix::net::UnixListener>,
}

impl UnixListener {
    /// Creates a socket file at `path` and listens on it, with a backlog of `SOMAXCONN`
    /// (std uses 128), capped by the `net.core.somaxconn` sysctl.
    ///
    /// # Errors
    ///
    /// What `bind(2)` or `listen(2)` return, e.g. [`io::ErrorKind::AddrInUse`] if the
    /// file exists.
    pub fn bind<P: AsRef<Path>>(path: P) -> io::Result<UnixListener> {
        let listener = std::os::unix::net::UnixListener::bind(path)?;
        raise_backlog(listener.as_fd())?;
        UnixListener::try_from(listener)
    }

    /// Accepts a connection: parks the calling fiber until one arrives.
    ///
    /// When out of descriptors or socket memory, it waits and tries again, as
    /// [`TcpListener::accept`](crate::net::TcpListener::accept) does (see "Out of
    /// descriptors" there).
    ///
    /// # Errors
    ///
    /// What `accept(2)` returns other than `EMFILE`, `ENFILE`, `ENOBUFS` and `ENOMEM`, or
    /// what registering the new socket with the reactor returns.
    pub fn accept(&self) -> io::Result<(UnixStream, SocketAddr)> {
        let (stream, peer) = accept_backing_off(&self.io, |listener| listener.accept())?;
        Ok((UnixStream::try_from(stream)?, peer))
    }

    /// An iterator over incoming connections; it never returns `None`, and waits rather
    /// than fail when out of descriptors (see [`accept`](UnixListener::accept)).
    pub fn incoming(&self) -> Incoming<'_> {
        Incoming { listener: self }
    }

    /// The address the listener is bound to.
    ///
    /// # Errors
    ///
    /// What `getsockname(2)` returns.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// Takes the pending error (`SO_ERROR`) of the socket, if any.
    ///
    /// # Errors
    ///
    /// What `getsockopt(2)` returns.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }
}

impl TryFrom<std::os::unix::net::UnixListener> for UnixListener {
    type Error = io::Error;

    /// Puts the listener in nonblocking mode and registers it with the reactor.
    fn try_from(listener: std::os::unix::net::UnixListener) -> io::Result<UnixListener> {
        Ok(UnixListener {
            io: Async::new(listener)?,
        })
    }
}

registered_socket_impls!(UnixListener, std::os::unix::net::UnixListener);

/// The connections arriving at a [`UnixListener`], from [`UnixListener::incoming`].
///
/// Each `next` parks the calling fiber until a connection arrives; it never returns
/// `None`.
pub struct Incoming<'a> {
    /// The listener.
    listener: &'a UnixListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<UnixStream>;

    fn next(&mut self) -> Option<io::Result<UnixStream>> {
        Some(self.listener.accept().map(|(stream, _)| stream))
    }
}

impl fmt::Debug for Incoming<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Incoming")
            .field("listener", self.listener)
            .finish()
    }
}

/// A Unix-domain stream connection.
///
/// Reads and writes (`std::io::Read`/`Write`, on the stream or on `&UnixStream`) park the
/// calling fiber until the socket is ready, and block the thread outside fibers. The same
/// stream implements `futures_io::AsyncRead`/`AsyncWrite` for async code.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use green::net::unix::UnixStream;
///
/// let (mut a, mut b) = UnixStream::pair().unwrap();
/// green::run(move || {
///     let echo = green::spawn(move || {
///         let mut buf = [0; 4];
///         b.read_exact(&mut buf).unwrap(); // parks this fiber until the bytes arrive
///         b.write_all(&buf).unwrap();
///     });
///     a.write_all(b"ping").unwrap();
///     let mut reply = [0; 4];
///     a.read_exact(&mut reply).unwrap();
///     assert_eq!(&reply, b"ping");
///     echo.join().unwrap();
/// });
/// ```
pub struct UnixStream {
    /// The registered socket with its timeouts.
    inner: Stream<std::os::unix::net::UnixStream>,
}

stream_impls!(UnixStream, std::os::unix::net::UnixStream);

impl UnixStream {
    /// Connects to the socket at `path`.
    ///
    /// The connection is made with a nonblocking `connect(2)`. Only when the listener's
    /// backlog is full (`EAGAIN`, where std would block) does the connection wait on the
    /// [`unblock`](crate::unblock) pool, while the fiber is parked.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a path too long for a socket address, or what
    /// `connect(2)` returns, e.g. [`io::ErrorKind::NotFound`] or
    /// [`io::ErrorKind::ConnectionRefused`] when nobody listens there.
    pub fn connect<P: AsRef<Path>>(path: P) -> io::Result<UnixStream> {
        let path = path.as_ref();
        let addr = RawAddr::unix(path)?;
        let socket = stream_socket(addr.family())?;
        match start_connect(socket.as_fd(), &addr) {
            Ok(in_progress) => {
                let stream = UnixStream::try_from(std::os::unix::net::UnixStream::from(socket))?;
                if in_progress {
                    stream.inner.wait_writable(None)?;
                    if let Some(error) = stream.take_error()? {
                        return Err(error);
                    }
                }
                Ok(stream)
            }
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                // The backlog is full; only a blocking connect waits for room in it.
                let path = path.to_owned();
                let stream = crate::unblock(move || std::os::unix::net::UnixStream::connect(path))?;
                UnixStream::try_from(stream)
            }
            Err(error) => Err(error),
        }
    }

    /// A pair of connected sockets.
    ///
    /// # Errors
    ///
    /// What `socketpair(2)` returns, or registering the sockets with the reactor.
    pub fn pair() -> io::Result<(UnixStream, UnixStream)> {
        let (a, b) = std::os::unix::net::UnixStream::pair()?;
        Ok((UnixStream::try_from(a)?, UnixStream::try_from(b)?))
    }

    /// Shuts down the reading half, the writing half, or both. A fiber blocked reading
    /// this stream then reads end-of-stream.
    ///
    /// # Errors
    ///
    /// What `shutdown(2)` returns.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// The address of the remote peer.
    ///
    /// # Errors
    ///
    /// What `getpeername(2)` returns.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address of the socket.
    ///
    /// # Errors
    ///
    /// What `getsockname(2)` returns.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    stream_methods! {
        UnixStream;

        /// Sets how long one blocking-style read may wait; `None` waits without limit. A
        /// read that times out fails with [`io::ErrorKind::TimedOut`], never before the
        /// timeout elapsed.
        ///
        /// # Errors
        ///
        /// [`io::ErrorKind::InvalidInput`] for a zero duration, as std.
        fn set_read_timeout;

        /// A second handle to the same connection (a duplicated descriptor, registered
        /// on its own), starting with this stream's timeouts.
        ///
        /// # Errors
        ///
        /// What `dup(2)` or registering the copy returns.
        fn try_clone;
    }
}
