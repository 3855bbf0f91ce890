//! What the stream sockets share: [`Stream`], a registered descriptor with timeouts and the
//! readiness waits of its `AsyncRead`/`AsyncWrite` impls, and [`Timeout`].
//!
//! # Why the readiness waits are kept here
//!
//! `AsyncRead` for `&TcpStream` must wait for readiness through a shared reference, and a
//! wait must stay registered between two polls or its wake is lost. [`Async`] implements
//! `AsyncRead` only for `Pin<&mut Async>`, and offers `&self` readiness only as the
//! [`Ready`] future, which borrows it; so `Stream` keeps one `Ready` per direction in a
//! slot, next to the `Async` it borrows. The `Async` lives in an `Arc` that is never
//! cloned nor borrowed mutably, so it does not move when the `Stream` does, and the slots
//! are dropped before it. (A `poll_readable(&self, cx)` on `Async` would make this
//! unnecessary.)

use std::future::Future;
use std::io;
use std::mem;
use std::os::fd::AsFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use crate::io::{Async, Ready};
use crate::reactor::{READ, WRITE, lock};

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

/// A readiness wait kept between two polls of an async read or write.
struct PollWait {
    /// The wait; it borrows the `Async` of the `Stream` that holds it.
    ready: Ready<'static>,
    /// The waker of the task that polled it last.
    waker: Waker,
}

/// A stream socket: a registered nonblocking descriptor, its timeouts, and the readiness
/// waits of the async impls.
pub(crate) struct Stream<T: AsFd> {
    /// The pending readiness wait of the async reader (index [`READ`]) and writer
    /// ([`WRITE`]), kept between polls. They borrow `*io`, so they are declared before it
    /// and dropped first; nothing else ever holds them.
    polls: [Mutex<Option<PollWait>>; 2],
    /// How long a blocking-style read may wait.
    read_timeout: Timeout,
    /// How long a blocking-style write may wait.
    write_timeout: Timeout,
    /// The registered socket. The `Arc` is never cloned and never borrowed mutably, so the
    /// `Async` stays at one address, shared, for as long as this `Stream` lives.
    io: Arc<Async<T>>,
}

impl<T: AsFd> Stream<T> {
    /// Registers `io`, putting it in nonblocking mode.
    ///
    /// # Errors
    ///
    /// As [`Async::new`].
    pub(crate) fn new(io: T) -> io::Result<Stream<T>> {
        Ok(Stream {
            polls: [Mutex::new(None), Mutex::new(None)],
            read_timeout: Timeout::default(),
            write_timeout: Timeout::default(),
            io: Arc::new(Async::new(io)?),
        })
    }

    /// The socket.
    pub(crate) fn get_ref(&self) -> &T {
        self.io.get_ref()
    }

    /// Deregisters the socket and returns it, still nonblocking.
    ///
    /// # Errors
    ///
    /// As [`Async::into_inner`].
    pub(crate) fn into_inner(self) -> io::Result<T> {
        let Stream { polls, io, .. } = self;
        // The waits borrow `*io`: end them first.
        drop(polls);
        let io = Arc::into_inner(io).expect("the Arc of a Stream is never cloned");
        io.into_inner()
    }

    /// The read timeout.
    pub(crate) fn read_timeout(&self) -> &Timeout {
        &self.read_timeout
    }

    /// The write timeout.
    pub(crate) fn write_timeout(&self) -> &Timeout {
        &self.write_timeout
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
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            match op(self.io.get_ref()) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            let mut slot = lock(&self.polls[direction]);
            // 1. Reuse the wait an earlier poll registered (taking it over from another
            //    task if need be), or start one.
            let mut displaced = None;
            let wait = match &mut *slot {
                Some(wait) => {
                    if !wait.waker.will_wake(cx.waker()) {
                        displaced = Some(mem::replace(&mut wait.waker, cx.waker().clone()));
                    }
                    wait
                }
                empty => empty.insert(PollWait {
                    ready: self.ready(direction),
                    waker: cx.waker().clone(),
                }),
            };
            // 2. Poll it: pending, it stays registered with this task's waker; ready (or
            //    failed), it ends.
            let poll = Pin::new(&mut wait.ready).poll(cx);
            if poll.is_ready() {
                *slot = None;
            }
            // 3. Wake the displaced task with no lock held.
            drop(slot);
            if let Some(waker) = displaced {
                waker.wake();
            }
            match poll {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(result) => result?, // ready: try the operation again
            }
        }
    }

    /// A readiness wait for `direction` that may be kept in `self.polls`.
    fn ready(&self, direction: usize) -> Ready<'static> {
        let ready = if direction == READ {
            self.io.readable()
        } else {
            self.io.writable()
        };
        // SAFETY: the `Ready` borrows `*self.io`, an `Async` in an `Arc` that this `Stream`
        // owns alone, never clones and never borrows mutably, so the `Async` neither moves
        // nor changes while the `Stream` lives. The extended borrow is stored only in
        // `self.polls`, which is dropped before `self.io` (field order, and explicitly in
        // `into_inner`), so it never outlives the `Async`.
        unsafe { mem::transmute::<Ready<'_>, Ready<'static>>(ready) }
    }
}

/// Implements `Read`, `Write`, `AsyncRead` and `AsyncWrite` (for the type and for shared
/// references to it), `AsFd`, `AsRawFd` and `Debug` for a stream type with a
/// `inner: Stream<T>` field, where `T` has std's `shutdown`.
macro_rules! stream_impls {
    ($stream:ty) => {
        impl ::std::io::Read for &$stream {
            fn read(&mut self, buf: &mut [u8]) -> ::std::io::Result<usize> {
                self.inner
                    .read_with(|mut io| ::std::io::Read::read(&mut io, buf))
            }

            fn read_vectored(
                &mut self,
                bufs: &mut [::std::io::IoSliceMut<'_>],
            ) -> ::std::io::Result<usize> {
                self.inner
                    .read_with(|mut io| ::std::io::Read::read_vectored(&mut io, bufs))
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

pub(crate) use stream_impls;
