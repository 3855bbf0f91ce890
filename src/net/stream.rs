//! What the stream sockets share: [`Stream`], a registered descriptor with its timeouts;
//! [`Timeout`]; and the code `TcpStream` and `UnixStream` would otherwise both write out,
//! in two macros: [`stream_methods!`] (their timeout, `take_error` and `try_clone`
//! methods) and [`stream_impls!`] (their trait impls).

use std::io;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::io::Async;
use crate::reactor::{READ, WRITE};

/// A read or write timeout, shared through `&self` as std's setters are.
#[derive(Debug, Default)]
pub(crate) struct Timeout {
    /// The timeout in nanoseconds, `0` for none (std refuses a zero timeout); longer
    /// timeouts than `u64::MAX` nanoseconds (584 years) are clamped to it.
    nanos: AtomicU64,
}

impl Timeout {
    /// The timeout, if one is set.
    pub(crate) fn get(&self) -> Option<Duration> {
        match self.nanos.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(Duration::from_nanos(nanos)),
        }
    }

    /// Sets or clears the timeout.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for `Some(Duration::ZERO)`, as std.
    pub(crate) fn set(&self, timeout: Option<Duration>) -> io::Result<()> {
        let nanos = match timeout {
            None => 0,
            Some(timeout) if timeout.is_zero() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "cannot set a 0 duration timeout",
                ));
            }
            Some(timeout) => u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX),
        };
        self.nanos.store(nanos, Ordering::Relaxed);
        Ok(())
    }
}

/// A std stream socket that can be duplicated, as [`Stream::try_clone`] needs: std has the
/// method on each type but in no trait.
pub(crate) trait TryClone: Sized {
    /// A second handle to the same socket: a duplicated descriptor (`dup(2)`).
    fn try_clone(&self) -> io::Result<Self>;
}

impl TryClone for std::net::TcpStream {
    fn try_clone(&self) -> io::Result<Self> {
        std::net::TcpStream::try_clone(self)
    }
}

impl TryClone for std::os::unix::net::UnixStream {
    fn try_clone(&self) -> io::Result<Self> {
        std::os::unix::net::UnixStream::try_clone(self)
    }
}

/// Whether a read that fills less than its buffer shows the socket's receive queue empty
/// (see `Async::read_drained_with`): true for TCP, whose reads stop only there (or at
/// urgent data, which the reactor reports); false for Unix stream sockets, whose reads
/// also stop where the sender's credentials change or descriptors were passed.
pub(crate) trait ShortReadDrains {
    /// The answer for this socket type.
    const SHORT_READ_DRAINS: bool;
}

impl ShortReadDrains for std::net::TcpStream {
    const SHORT_READ_DRAINS: bool = true;
}

impl ShortReadDrains for std::os::unix::net::UnixStream {
    const SHORT_READ_DRAINS: bool = false;
}

/// A stream socket: a registered nonblocking descriptor and its timeouts.
pub(crate) struct Stream<T: AsFd> {
    /// Timeout of the blocking-style reads.
    read_timeout: Timeout,
    /// Timeout of the blocking-style writes.
    write_timeout: Timeout,
    /// Where the last blocking-style read left the receive queue, for
    /// `Async::read_drained_with`.
    drained: AtomicU64,
    /// The registered descriptor.
    io: Async<T>,
}

impl<T: AsFd> Stream<T> {
    /// Puts `io` in nonblocking mode and registers it, with no timeouts.
    ///
    /// # Errors
    ///
    /// As [`Async::new`].
    pub(crate) fn new(io: T) -> io::Result<Stream<T>> {
        Ok(Stream {
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
            drained: AtomicU64::new(0),
            io: Async::new(io)?,
        })
    }

    /// The std socket, in nonblocking mode.
    pub(crate) fn get_ref(&self) -> &T {
        self.io.get_ref()
    }

    /// Deregisters the socket and returns it, still in nonblocking mode.
    ///
    /// # Errors
    ///
    /// As [`Async::into_inner`].
    pub(crate) fn into_inner(self) -> io::Result<T> {
        self.io.into_inner()
    }

    /// The read timeout.
    pub(crate) fn read_timeout(&self) -> &Timeout {
        &self.read_timeout
    }

    /// The write timeout.
    pub(crate) fn write_timeout(&self) -> &Timeout {
        &self.write_timeout
    }

    /// A second handle to the same socket (a duplicated descriptor, registered on its own),
    /// starting with this one's timeouts.
    ///
    /// # Errors
    ///
    /// What `dup(2)` or registering the copy returns.
    pub(crate) fn try_clone(&self) -> io::Result<Stream<T>>
    where
        T: TryClone,
    {
        let clone = Stream::new(self.get_ref().try_clone()?)?;
        clone.read_timeout.set(self.read_timeout.get())?;
        clone.write_timeout.set(self.write_timeout.get())?;
        Ok(clone)
    }

    /// Runs `op` until it does not fail with `WouldBlock`, waiting for readability in
    /// between, for at most the read timeout.
    ///
    /// # Errors
    ///
    /// What `op` returns; `TimedOut` once the read timeout has elapsed.
    pub(crate) fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io.op_with(READ, self.read_timeout.get(), op)
    }

    /// Reads into a buffer of `len` bytes with `op`, as [`read_with`](Stream::read_with),
    /// skipping the read that would fail after one that drained a TCP socket.
    ///
    /// # Errors
    ///
    /// As [`read_with`](Stream::read_with).
    pub(crate) fn read_into(
        &self,
        len: usize,
        op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize>
    where
        T: ShortReadDrains,
    {
        if T::SHORT_READ_DRAINS {
            self.io
                .read_drained_with(len, self.read_timeout.get(), &self.drained, op)
        } else {
            self.read_with(op)
        }
    }

    /// As [`read_with`](Stream::read_with), for writing, with the write timeout.
    ///
    /// # Errors
    ///
    /// What `op` returns; `TimedOut` once the write timeout has elapsed.
    pub(crate) fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.io.op_with(WRITE, self.write_timeout.get(), op)
    }

    /// Waits until the socket is writable or `deadline` passes (then `TimedOut`).
    pub(crate) fn wait_writable(&self, deadline: Option<Instant>) -> io::Result<()> {
        self.io.wait(WRITE, deadline)
    }

    /// `AsyncRead`/`AsyncWrite` style: runs `op`, and on `WouldBlock` registers `cx` to be
    /// woken when the socket is ready for `direction`.
    ///
    /// One task per direction waits at a time. A second task polling the same direction
    /// takes the wait over and wakes the first, which polls again: tasks sharing a
    /// direction take turns (and spin) rather than hang. Split a stream into one reader
    /// and one writer to avoid that.
    pub(crate) fn poll_with<R>(
        &self,
        direction: usize,
        cx: &mut Context<'_>,
        op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        self.io.poll_op(direction, cx, op)
    }
}

/// The methods a stream type holding a [`Stream`] in `inner` has beside std's twin's:
/// `set_read_timeout`, `set_write_timeout`, `read_timeout`, `write_timeout`, `take_error`
/// and `try_clone`, written once for `TcpStream` and `UnixStream`.
///
/// Called inside the type's `impl` block, with the type's name and the docs of the two
/// methods whose docs differ from type to type (the others are written here):
///
/// ```text
/// impl TcpStream {
///     stream_methods! {
///         TcpStream;
///         /// Sets how long one blocking-style read ...
///         fn set_read_timeout;
///         /// A second handle to the same connection ...
///         fn try_clone;
///     }
/// }
/// ```
macro_rules! stream_methods {
    (
        $stream:ident;
        $(#[$set_read_timeout_doc:meta])*
        fn set_read_timeout;
        $(#[$try_clone_doc:meta])*
        fn try_clone;
    ) => {
        $(#[$set_read_timeout_doc])*
        pub fn set_read_timeout(
            &self,
            timeout: Option<::std::time::Duration>,
        ) -> ::std::io::Result<()> {
            self.inner.read_timeout().set(timeout)
        }

        /// Sets how long one blocking-style write may wait; as
        /// [`set_read_timeout`](Self::set_read_timeout).
        ///
        /// # Errors
        ///
        /// [`io::ErrorKind::InvalidInput`](std::io::ErrorKind::InvalidInput) for a zero
        /// duration, as std.
        pub fn set_write_timeout(
            &self,
            timeout: Option<::std::time::Duration>,
        ) -> ::std::io::Result<()> {
            self.inner.write_timeout().set(timeout)
        }

        /// The read timeout, if any.
        ///
        /// # Errors
        ///
        /// None: the `Result` mirrors std.
        pub fn read_timeout(&self) -> ::std::io::Result<Option<::std::time::Duration>> {
            Ok(self.inner.read_timeout().get())
        }

        /// The write timeout, if any.
        ///
        /// # Errors
        ///
        /// None: the `Result` mirrors std.
        pub fn write_timeout(&self) -> ::std::io::Result<Option<::std::time::Duration>> {
            Ok(self.inner.write_timeout().get())
        }

        /// Takes the pending error (`SO_ERROR`) of the socket, if any.
        ///
        /// # Errors
        ///
        /// What `getsockopt(2)` returns.
        pub fn take_error(&self) -> ::std::io::Result<Option<::std::io::Error>> {
            self.inner.get_ref().take_error()
        }

        $(#[$try_clone_doc])*
        pub fn try_clone(&self) -> ::std::io::Result<$stream> {
            Ok($stream {
                inner: self.inner.try_clone()?,
            })
        }
    };
}

/// The trait impls of a stream type holding a [`Stream`] in `inner`, whose std twin is
/// `$std`: `Read`, `Write`, `AsyncRead` and `AsyncWrite` (each for the type and for a
/// shared reference to it), `AsFd`, `AsRawFd`, `Debug` (the std stream's), and the
/// conversions from and to `$std`.
macro_rules! stream_impls {
    ($stream:ident, $std:ty) => {
        impl TryFrom<$std> for $stream {
            type Error = ::std::io::Error;

            /// Puts the stream in nonblocking mode and registers it with the reactor.
            fn try_from(stream: $std) -> ::std::io::Result<$stream> {
                Ok($stream {
                    inner: crate::net::stream::Stream::new(stream)?,
                })
            }
        }

        impl TryFrom<$stream> for $std {
            type Error = ::std::io::Error;

            /// Deregisters the stream and puts it back in blocking mode. The timeouts are
            /// not carried over.
            fn try_from(stream: $stream) -> ::std::io::Result<$std> {
                let stream = stream.inner.into_inner()?;
                stream.set_nonblocking(false)?;
                Ok(stream)
            }
        }

        impl ::std::io::Read for &$stream {
            fn read(&mut self, buf: &mut [u8]) -> ::std::io::Result<usize> {
                self.inner
                    .read_into(buf.len(), |mut io| ::std::io::Read::read(&mut io, buf))
            }

            fn read_vectored(
                &mut self,
                bufs: &mut [::std::io::IoSliceMut<'_>],
            ) -> ::std::io::Result<usize> {
                let len = bufs.iter().map(|buf| buf.len()).sum();
                self.inner
                    .read_into(len, |mut io| ::std::io::Read::read_vectored(&mut io, bufs))
            }
        }

        impl ::std::io::Read for $stream {
            fn read(&mut self, buf: &mut [u8]) -> ::std::io::Result<usize> {
                ::std::io::Read::read(&mut &*self, buf)
            }

            fn read_vectored(
                &mut self,
                bufs: &mut [::std::io::IoSliceMut<'_>],
            ) -> ::std::io::Result<usize> {
                ::std::io::Read::read_vectored(&mut &*self, bufs)
            }
        }

        impl ::std::io::Write for &$stream {
            fn write(&mut self, buf: &[u8]) -> ::std::io::Result<usize> {
                self.inner
                    .write_with(|mut io| ::std::io::Write::write(&mut io, buf))
            }

            fn write_vectored(
                &mut self,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::io::Result<usize> {
                self.inner
                    .write_with(|mut io| ::std::io::Write::write_vectored(&mut io, bufs))
            }

            /// Sockets have no user-space buffer: a no-op.
            fn flush(&mut self) -> ::std::io::Result<()> {
                Ok(())
            }
        }

        impl ::std::io::Write for $stream {
            fn write(&mut self, buf: &[u8]) -> ::std::io::Result<usize> {
                ::std::io::Write::write(&mut &*self, buf)
            }

            fn write_vectored(
                &mut self,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::io::Result<usize> {
                ::std::io::Write::write_vectored(&mut &*self, bufs)
            }

            /// Sockets have no user-space buffer: a no-op.
            fn flush(&mut self) -> ::std::io::Result<()> {
                Ok(())
            }
        }

        impl ::futures_io::AsyncRead for &$stream {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut [u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.inner.poll_with(crate::reactor::READ, cx, |mut io| {
                    ::std::io::Read::read(&mut io, buf)
                })
            }

            fn poll_read_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &mut [::std::io::IoSliceMut<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.inner.poll_with(crate::reactor::READ, cx, |mut io| {
                    ::std::io::Read::read_vectored(&mut io, bufs)
                })
            }
        }

        impl ::futures_io::AsyncRead for $stream {
            fn poll_read(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &mut [u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::futures_io::AsyncRead::poll_read(::std::pin::Pin::new(&mut &*self), cx, buf)
            }

            fn poll_read_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &mut [::std::io::IoSliceMut<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::futures_io::AsyncRead::poll_read_vectored(
                    ::std::pin::Pin::new(&mut &*self),
                    cx,
                    bufs,
                )
            }
        }

        impl ::futures_io::AsyncWrite for &$stream {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.inner.poll_with(crate::reactor::WRITE, cx, |mut io| {
                    ::std::io::Write::write(&mut io, buf)
                })
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                self.inner.poll_with(crate::reactor::WRITE, cx, |mut io| {
                    ::std::io::Write::write_vectored(&mut io, bufs)
                })
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                _: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::task::Poll::Ready(Ok(()))
            }

            /// Shuts down the writing half, so that the peer reads end-of-stream.
            fn poll_close(
                self: ::std::pin::Pin<&mut Self>,
                _: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::std::task::Poll::Ready(self.inner.get_ref().shutdown(::std::net::Shutdown::Write))
            }
        }

        impl ::futures_io::AsyncWrite for $stream {
            fn poll_write(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                buf: &[u8],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::futures_io::AsyncWrite::poll_write(::std::pin::Pin::new(&mut &*self), cx, buf)
            }

            fn poll_write_vectored(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
                bufs: &[::std::io::IoSlice<'_>],
            ) -> ::std::task::Poll<::std::io::Result<usize>> {
                ::futures_io::AsyncWrite::poll_write_vectored(
                    ::std::pin::Pin::new(&mut &*self),
                    cx,
                    bufs,
                )
            }

            fn poll_flush(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::futures_io::AsyncWrite::poll_flush(::std::pin::Pin::new(&mut &*self), cx)
            }

            /// Shuts down the writing half, so that the peer reads end-of-stream.
            fn poll_close(
                self: ::std::pin::Pin<&mut Self>,
                cx: &mut ::std::task::Context<'_>,
            ) -> ::std::task::Poll<::std::io::Result<()>> {
                ::futures_io::AsyncWrite::poll_close(::std::pin::Pin::new(&mut &*self), cx)
            }
        }

        impl ::std::os::fd::AsFd for $stream {
            fn as_fd(&self) -> ::std::os::fd::BorrowedFd<'_> {
                self.inner.get_ref().as_fd()
            }
        }

        impl ::std::os::fd::AsRawFd for $stream {
            fn as_raw_fd(&self) -> ::std::os::fd::RawFd {
                self.inner.get_ref().as_raw_fd()
            }
        }

        impl ::std::fmt::Debug for $stream {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                ::std::fmt::Debug::fmt(self.inner.get_ref(), f)
            }
        }
    };
}

pub(crate) use {stream_impls, stream_methods};
