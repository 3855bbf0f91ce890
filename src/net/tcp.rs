//! TCP: [`TcpListener`] and [`TcpStream`].

use std::fmt;
use std::io;
use std::net::{Shutdown, SocketAddr, ToSocketAddrs};
use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use super::accept::accept_backing_off;
use super::addr;
use super::stream::{Stream, stream_impls, stream_methods};
use crate::io::Async;
use crate::sys::socket::{RawAddr, incoming_cpu, raise_backlog, start_connect, stream_socket};

/// A TCP socket server, listening for connections.
///
/// [`accept`](TcpListener::accept) parks the calling fiber until a connection arrives (and
/// blocks the thread outside fibers); several fibers may accept on one listener at once.
///
/// # Examples
///
/// An echo server with a fiber per connection:
///
/// ```
/// use std::io::{Read, Write};
/// use green::net::{TcpListener, TcpStream};
///
/// green::run(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let address = listener.local_addr().unwrap();
///     green::spawn(move || {
///         for stream in listener.incoming() {
///             let mut stream = stream.unwrap();
///             green::spawn(move || {
///                 let mut buf = [0; 1024];
///                 while let Ok(n @ 1..) = stream.read(&mut buf) {
///                     stream.write_all(&buf[..n]).unwrap();
///                 }
///             });
///         }
///     });
///     let mut client = TcpStream::connect(address).unwrap();
///     client.write_all(b"echo").unwrap();
///     let mut reply = [0; 4];
///     client.read_exact(&mut reply).unwrap();
///     assert_eq!(&reply, b"echo");
/// });
/// ```
pub struct TcpListener {
    /// The registered, nonblocking listener.
    io: Async<std::net::TcpListener>,
}

impl TcpListener {
    /// Binds a listener to `addr`, trying each address it resolves to in turn. Port 0 asks
    /// the system for a free port; [`local_addr`](TcpListener::local_addr) tells which.
    ///
    /// The backlog of connections waiting for `accept` is `SOMAXCONN` (std uses 128),
    /// capped by the `net.core.somaxconn` sysctl.
    ///
    /// A host name is resolved on the [`unblock`](crate::unblock) pool (see the
    /// [module docs](crate::net#name-resolution)).
    ///
    /// # Errors
    ///
    /// The resolution's error, or the last address's `bind`/`listen` error, e.g.
    /// [`io::ErrorKind::AddrInUse`].
    pub fn bind<A>(addr: A) -> io::Result<TcpListener>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let addrs = addr::resolve(addr)?;
        let listener = std::net::TcpListener::bind(&addrs[..])?;
        raise_backlog(listener.as_fd())?;
        TcpListener::try_from(listener)
    }

    /// Accepts a connection: parks the calling fiber until one arrives.
    ///
    /// The next fiber the calling fiber spawns is placed near the connection: on the
    /// worker running on the CPU that handled its packets (`SO_INCOMING_CPU`), unless that
    /// worker is much busier than the others (see [Placement](crate::Runtime#placement)).
    /// Serving the connection from that fiber keeps its socket buffers in that CPU's cache.
    ///
    /// # Out of descriptors
    ///
    /// When the process or the system is out of descriptors (`EMFILE`, `ENFILE`) or the
    /// kernel short of socket memory (`ENOBUFS`, `ENOMEM`), `accept` does not return the
    /// error. The connection waits in the listener's backlog, and `accept` parks the fiber
    /// on a timer and tries again: 1 ms after the first failure, then after a pause that
    /// doubles each time, up to 100 ms. So a server loop such as
    /// `for stream in listener.incoming()` neither ends nor spins while the process is at
    /// its limit, and serves the waiting clients about 100 ms at most after descriptors
    /// are closed. Nothing reports the wait: to see it, watch the process's descriptors
    /// (`/proc/self/fd`) against its `RLIMIT_NOFILE`.
    ///
    /// # Errors
    ///
    /// What `accept(2)` returns other than the errors above, e.g. `ECONNABORTED`, or what
    /// registering the new socket with the reactor returns.
    pub fn accept(&self) -> io::Result<(TcpStream, SocketAddr)> {
        let (stream, peer) = accept_backing_off(&self.io, |listener| listener.accept())?;
        if let Some(cpu) = incoming_cpu(stream.as_fd()) {
            crate::worker::spawn_near_cpu(cpu);
        }
        Ok((TcpStream::try_from(stream)?, peer))
    }

    /// An iterator over incoming connections; it never returns `None`, and waits rather
    /// than fail when out of descriptors (see [`accept`](TcpListener::accept)).
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

    /// The std listener, for options this type does not wrap (`set_ttl`, ...). It is in
    /// nonblocking mode: accept through this type, not through it.
    pub fn get_ref(&self) -> &std::net::TcpListener {
        self.io.get_ref()
    }
}

impl TryFrom<std::net::TcpListener> for TcpListener {
    type Error = io::Error;

    /// Puts the listener in nonblocking mode and registers it with the reactor.
    fn try_from(listener: std::net::TcpListener) -> io::Result<TcpListener> {
        Ok(TcpListener {
            io: Async::new(listener)?,
        })
    }
}

registered_socket_impls!(TcpListener, std::net::TcpListener);

/// The connections arriving at a [`TcpListener`], from [`TcpListener::incoming`].
///
/// Each `next` parks the calling fiber until a connection arrives; it never returns
/// `None`.
pub struct Incoming<'a> {
    /// The listener.
    listener: &'a TcpListener,
}

impl Iterator for Incoming<'_> {
    type Item = io::Result<TcpStream>;

    fn next(&mut self) -> Option<io::Result<TcpStream>> {
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

/// A TCP connection.
///
/// Reads and writes (`std::io::Read`/`Write`, on the stream or on `&TcpStream`) park the
/// calling fiber until the socket is ready, and block the thread outside fibers. The same
/// stream implements `futures_io::AsyncRead`/`AsyncWrite` for async code.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use green::net::{TcpListener, TcpStream};
///
/// green::run(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let address = listener.local_addr().unwrap();
///     let server = green::spawn(move || {
///         let (mut stream, _) = listener.accept().unwrap();
///         stream.write_all(b"hello").unwrap();
///     });
///     let mut stream = TcpStream::connect(address).unwrap();
///     let mut greeting = String::new();
///     stream.read_to_string(&mut greeting).unwrap(); // until the server closes
///     assert_eq!(greeting, "hello");
///     server.join().unwrap();
/// });
/// ```
///
/// Reading and writing at once from two fibers through shared references:
///
/// ```
/// use std::io::{Read, Write};
/// use std::sync::Arc;
/// use green::net::{TcpListener, TcpStream};
///
/// green::run(|| {
///     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
///     let address = listener.local_addr().unwrap();
///     green::spawn(move || {
///         let (stream, _) = listener.accept().unwrap();
///         std::io::copy(&mut &stream, &mut &stream).unwrap(); // echo
///     });
///     let stream = Arc::new(TcpStream::connect(address).unwrap());
///     let writer = stream.clone();
///     let writing = green::spawn(move || (&*writer).write_all(&[7; 100_000]).unwrap());
///     let mut echoed = vec![0; 100_000];
///     (&*stream).read_exact(&mut echoed).unwrap();
///     writing.join().unwrap();
///     assert!(echoed.iter().all(|&byte| byte == 7));
/// });
/// ```
///
/// # System calls per read
///
/// In a fiber, a read that fills less than its buffer has emptied the socket's receive
/// queue, so the next read parks until the reactor reports new data before it calls
/// `recv`, rather than making a call that fails with `WouldBlock`. A request-response
/// server with a buffer larger than its requests makes one `recv` per request. Once the
/// peer has closed its side, or an error or urgent data was reported, every read calls
/// `recv`. Nothing changes for the caller: the same bytes, end of file and errors.
pub struct TcpStream {
    /// The registered socket with its timeouts.
    inner: Stream<std::net::TcpStream>,
}

stream_impls!(TcpStream, std::net::TcpStream);

impl TcpStream {
    /// Connects to `addr`, trying each address it resolves to in turn until one accepts.
    ///
    /// A host name is resolved on the [`unblock`](crate::unblock) pool (see the
    /// [module docs](crate::net#name-resolution)); the connection itself is made with a
    /// nonblocking `connect(2)` while the fiber is parked.
    ///
    /// # Errors
    ///
    /// The resolution's error, or the last address's connection error, e.g.
    /// [`io::ErrorKind::ConnectionRefused`].
    pub fn connect<A>(addr: A) -> io::Result<TcpStream>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        addr::each_addr(addr::resolve(addr)?, |addr| {
            TcpStream::connect_addr(&addr, None)
        })
    }

    /// Connects to `addr`, giving up after `timeout`.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::TimedOut`] once `timeout` has elapsed;
    /// [`io::ErrorKind::InvalidInput`] for a zero timeout (as std); else as
    /// [`connect`](TcpStream::connect).
    pub fn connect_timeout(addr: &SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
        if timeout.is_zero() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot set a 0 duration timeout",
            ));
        }
        TcpStream::connect_addr(addr, Instant::now().checked_add(timeout))
    }

    /// Connects to one address, waiting at most until `deadline`.
    fn connect_addr(addr: &SocketAddr, deadline: Option<Instant>) -> io::Result<TcpStream> {
        let addr = RawAddr::inet(addr);
        let socket = stream_socket(addr.family())?;
        let in_progress = start_connect(socket.as_fd(), &addr)?;
        let stream = TcpStream::try_from(std::net::TcpStream::from(socket))?;
        if in_progress {
            stream.finish_connect(deadline)?;
        }
        Ok(stream)
    }

    /// Waits for a connection in progress to be established or to fail.
    fn finish_connect(&self, deadline: Option<Instant>) -> io::Result<()> {
        loop {
            // 1. Writability means the handshake ended, one way or the other.
            self.inner.wait_writable(deadline)?;
            // 2. A failed connection leaves its error in SO_ERROR.
            if let Some(error) = self.take_error()? {
                return Err(error);
            }
            // 3. A wake with neither an error nor a peer was spurious: wait again.
            match self.peer_addr() {
                Err(error) if error.kind() == io::ErrorKind::NotConnected => {}
                result => return result.map(drop),
            }
        }
    }

    /// Shuts down the reading half, the writing half, or both. A fiber blocked reading
    /// this stream then reads end-of-stream.
    ///
    /// # Errors
    ///
    /// What `shutdown(2)` returns, e.g. [`io::ErrorKind::NotConnected`].
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.inner.get_ref().shutdown(how)
    }

    /// Reads without consuming: the next read returns the same bytes. Parks the fiber
    /// until data arrive, for at most the read timeout.
    ///
    /// # Errors
    ///
    /// As [`Read::read`](std::io::Read::read).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read_with(|stream| stream.peek(buf))
    }

    /// The address of the remote peer.
    ///
    /// # Errors
    ///
    /// What `getpeername(2)` returns, e.g. [`io::ErrorKind::NotConnected`].
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().peer_addr()
    }

    /// The local address of the connection.
    ///
    /// # Errors
    ///
    /// What `getsockname(2)` returns.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.get_ref().local_addr()
    }

    /// Sets `TCP_NODELAY`: with `true`, small writes are sent at once rather than
    /// coalesced (Nagle's algorithm off).
    ///
    /// # Errors
    ///
    /// What `setsockopt(2)` returns.
    pub fn set_nodelay(&self, nodelay: bool) -> io::Result<()> {
        self.inner.get_ref().set_nodelay(nodelay)
    }

    /// Whether `TCP_NODELAY` is set.
    ///
    /// # Errors
    ///
    /// What `getsockopt(2)` returns.
    pub fn nodelay(&self) -> io::Result<bool> {
        self.inner.get_ref().nodelay()
    }

    stream_methods! {
        TcpStream;

        /// Sets how long one blocking-style read (or [`peek`](TcpStream::peek)) may wait;
        /// `None` waits without limit. A read that times out fails with
        /// [`io::ErrorKind::TimedOut`], never before the timeout elapsed.
        ///
        /// # Errors
        ///
        /// [`io::ErrorKind::InvalidInput`] for a zero duration, as std.
        ///
        /// # Examples
        ///
        /// ```
        /// use std::io::Read;
        /// use std::time::Duration;
        /// use green::net::{TcpListener, TcpStream};
        ///
        /// let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        /// let mut stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        /// stream.set_read_timeout(Some(Duration::from_millis(10))).unwrap();
        /// let error = stream.read(&mut [0; 1]).unwrap_err(); // nobody writes
        /// assert_eq!(error.kind(), std::io::ErrorKind::TimedOut);
        /// ```
        fn set_read_timeout;

        /// A second handle to the same connection (a duplicated descriptor, registered
        /// on its own). It starts with this stream's timeouts; later changes to either
        /// apply to that one only.
        ///
        /// # Errors
        ///
        /// What `dup(2)` or registering the copy returns.
        fn try_clone;
    }

    /// The std stream, for options this type does not wrap (`set_ttl`, `set_linger`,
    /// ...). It is in nonblocking mode: read and write through this type, not through it.
    pub fn get_ref(&self) -> &std::net::TcpStream {
        self.inner.get_ref()
    }
}
