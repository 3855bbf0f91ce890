//! UDP: [`UdpSocket`].

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

use super::addr;
use super::stream::Timeout;
use crate::io::Async;
use crate::reactor::{READ, WRITE};

/// A UDP socket.
///
/// Receiving parks the calling fiber until a datagram arrives (and blocks the thread
/// outside fibers); sending parks it while the socket's send buffer is full.
///
/// # Examples
///
/// ```
/// use green::net::UdpSocket;
///
/// green::run(|| {
///     let server = UdpSocket::bind("127.0.0.1:0").unwrap();
///     let address = server.local_addr().unwrap();
///     let echo = green::spawn(move || {
///         let mut buf = [0; 64];
///         let (n, from) = server.recv_from(&mut buf).unwrap();
///         server.send_to(&buf[..n], from).unwrap();
///     });
///     let client = UdpSocket::bind("127.0.0.1:0").unwrap();
///     client.connect(address).unwrap();
///     client.send(b"ping").unwrap();
///     let mut buf = [0; 64];
///     let n = client.recv(&mut buf).unwrap();
///     assert_eq!(&buf[..n], b"ping");
///     echo.join().unwrap();
/// });
/// ```
pub struct UdpSocket {
    /// How long one receive may wait.
    read_timeout: Timeout,
    /// How long one send may wait.
    write_timeout: Timeout,
    /// The registered, nonblocking socket.
    io: Async<std::net::UdpSocket>,
}

impl UdpSocket {
    /// Binds a socket to `addr`, trying each address it resolves to in turn. Port 0 asks
    /// the system for a free port.
    ///
    /// A host name is resolved on the [`unblock`](crate::unblock) pool (see the
    /// [module docs](crate::net#name-resolution)).
    ///
    /// # Errors
    ///
    /// The resolution's error, or the last address's `bind` error.
    pub fn bind<A>(addr: A) -> io::Result<UdpSocket>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let addrs = addr::resolve(addr)?;
        UdpSocket::try_from(std::net::UdpSocket::bind(&addrs[..])?)
    }

    /// Sets the default destination of [`send`](UdpSocket::send) and the only source
    /// [`recv`](UdpSocket::recv) accepts, trying each address `addr` resolves to in turn.
    ///
    /// # Errors
    ///
    /// The resolution's error, or the last address's `connect(2)` error.
    pub fn connect<A>(&self, addr: A) -> io::Result<()>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let addrs = addr::resolve(addr)?;
        self.io.get_ref().connect(&addrs[..])
    }

    /// Sends `buf` as one datagram to `addr` (the first address it resolves to); returns
    /// the number of bytes sent.
    ///
    /// # Errors
    ///
    /// The resolution's error (`InvalidInput` if it gives no address), `TimedOut` after
    /// the write timeout, or what `sendto(2)` returns.
    pub fn send_to<A>(&self, buf: &[u8], addr: A) -> io::Result<usize>
    where
        A: ToSocketAddrs + Send + 'static,
    {
        let addr = addr::resolve(addr)?.into_iter().next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::InvalidInput, "no addresses to send data to")
        })?;
        self.write_with(|socket| socket.send_to(buf, addr))
    }

    /// Receives one datagram into `buf` (the excess of a longer one is discarded); returns
    /// its length and its source.
    ///
    /// # Errors
    ///
    /// `TimedOut` after the read timeout, or what `recvfrom(2)` returns.
    pub fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_with(|socket| socket.recv_from(buf))
    }

    /// As [`recv_from`](UdpSocket::recv_from), without removing the datagram from the
    /// queue.
    ///
    /// # Errors
    ///
    /// As [`recv_from`](UdpSocket::recv_from).
    pub fn peek_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        self.read_with(|socket| socket.peek_from(buf))
    }

    /// Sends `buf` as one datagram to the connected address.
    ///
    /// # Errors
    ///
    /// `TimedOut` after the write timeout, or what `send(2)` returns, e.g.
    /// `NotConnected` or, after an ICMP error from the peer, `ConnectionRefused`.
    pub fn send(&self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|socket| socket.send(buf))
    }

    /// Receives one datagram from the connected address.
    ///
    /// # Errors
    ///
    /// `TimedOut` after the read timeout, or what `recv(2)` returns.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|socket| socket.recv(buf))
    }

    /// As [`recv`](UdpSocket::recv), without removing the datagram from the queue.
    ///
    /// # Errors
    ///
    /// As [`recv`](UdpSocket::recv).
    pub fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|socket| socket.peek(buf))
    }

    /// The address the socket is bound to.
    ///
    /// # Errors
    ///
    /// What `getsockname(2)` returns.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().local_addr()
    }

    /// The connected address.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::NotConnected`] if [`connect`](UdpSocket::connect) was not called.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.io.get_ref().peer_addr()
    }

    /// Sets how long one receive may wait; `None` waits without limit. A receive that
    /// times out fails with [`io::ErrorKind::TimedOut`], never before the timeout elapsed.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a zero duration, as std.
    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.read_timeout.set(timeout)
    }

    /// Sets how long one send may wait; as [`set_read_timeout`](UdpSocket::set_read_timeout).
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a zero duration, as std.
    pub fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.write_timeout.set(timeout)
    }

    /// The read timeout, if any.
    ///
    /// # Errors
    ///
    /// None: the `Result` mirrors std.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.read_timeout.get())
    }

    /// The write timeout, if any.
    ///
    /// # Errors
    ///
    /// None: the `Result` mirrors std.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        Ok(self.write_timeout.get())
    }

    /// Takes the pending error (`SO_ERROR`) of the socket, if any.
    ///
    /// # Errors
    ///
    /// What `getsockopt(2)` returns.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        self.io.get_ref().take_error()
    }

    /// A second handle to the same socket (a duplicated descriptor, registered on its
    /// own), starting with this one's timeouts.
    ///
    /// # Errors
    ///
    /// What `dup(2)` or registering the copy returns.
    pub fn try_clone(&self) -> io::Result<UdpSocket> {
        let clone = UdpSocket::try_from(self.io.get_ref().try_clone()?)?;
        clone.read_timeout.set(self.read_timeout.get())?;
        clone.write_timeout.set(self.write_timeout.get())?;
        Ok(clone)
    }

    /// The std socket, for options this type does not wrap (`set_broadcast`,
    /// `join_multicast_v4`, ...). It is in nonblocking mode: send and receive through
    /// this type, not through it.
    pub fn get_ref(&self) -> &std::net::UdpSocket {
        self.io.get_ref()
    }

    /// Runs a receiving `op`, parking until readable, for at most the read timeout.
    fn read_with<R>(&self, op: impl FnMut(&std::net::UdpSocket) -> io::Result<R>) -> io::Result<R> {
        self.io.op_with(READ, self.read_timeout.get(), op)
    }

    /// Runs a sending `op`, parking until writable, for at most the write timeout.
    fn write_with<R>(
        &self,
        op: impl FnMut(&std::net::UdpSocket) -> io::Result<R>,
    ) -> io::Result<R> {
        self.io.op_with(WRITE, self.write_timeout.get(), op)
    }
}

impl TryFrom<std::net::UdpSocket> for UdpSocket {
    type Error = io::Error;

    /// Puts the socket in nonblocking mode and registers it with the reactor.
    fn try_from(socket: std::net::UdpSocket) -> io::Result<UdpSocket> {
        Ok(UdpSocket {
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
            io: Async::new(socket)?,
        })
    }
}

registered_socket_impls!(UdpSocket, std::net::UdpSocket);
