//! [`Async`]: any nonblocking file descriptor, usable from fibers and from async code.
//!
//! Blocking-style methods ([`Async::read_with`], `Read`, `Write`) try the operation and, on
//! `WouldBlock`, wait for readiness: inside a fiber by parking the fiber until the reactor
//! reports the descriptor ready, elsewhere by blocking the thread in `poll(2)`. The same
//! value implements `futures_io::AsyncRead` and `AsyncWrite` for async code.
//!
//! The descriptor is registered with the reactor of the worker where it is first waited
//! on (outside fibers, with the plain-thread reactor, driven by a thread of its own that
//! runs no fibers), under its number, and deregistered before it is closed. That is why
//! the object cannot be swapped while it is wrapped: [`Async::get_mut`] is `unsafe`, and
//! [`Async::into_inner`] deregisters before it hands the object back.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSlice, IoSliceMut, Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, RawFd};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use crate::block_on::await_blocking_on;
use crate::reactor::{READ, Source, WRITE};
use crate::task::Wait;
use crate::time::Timer;

/// A nonblocking I/O object registered with a green reactor.
///
/// # Examples
///
/// ```
/// use std::io::{Read, Write};
/// use std::os::unix::net::UnixStream;
/// use green::io::Async;
///
/// let (a, b) = UnixStream::pair().unwrap();
/// let (mut a, mut b) = (Async::new(a).unwrap(), Async::new(b).unwrap());
/// green::run(move || {
///     let reader = green::spawn(move || {
///         let mut buf = [0; 5];
///         b.read_exact(&mut buf).unwrap(); // parks this fiber until the bytes arrive
///         buf
///     });
///     a.write_all(b"hello").unwrap();
///     assert_eq!(&reader.join().unwrap(), b"hello");
/// });
/// ```
pub struct Async<T: AsFd> {
    /// The reactor registration, made at the first wait; removed before `io` is dropped.
    source: Registration,
    /// The I/O object; `None` only inside `into_inner` and `drop`.
    io: Option<T>,
    /// Per direction, the timer of the last wait with a timeout, kept registered for the
    /// next one (see `Timer::extend`).
    timers: [Mutex<Option<Timer>>; 2],
}

impl<T: AsFd> Async<T> {
    /// Puts `io` in nonblocking mode and registers it.
    ///
    /// # Errors
    ///
    /// What `fcntl` or `epoll_ctl` return: `EBADF` for a closed descriptor, `EPERM` for one
    /// epoll cannot watch (a regular file).
    pub fn new(io: T) -> io::Result<Async<T>> {
        set_nonblocking(io.as_fd())?;
        Ok(Async {
            source: Registration {
                source: OnceLock::new(),
                first: Mutex::new(()),
                fd: io.as_fd().as_raw_fd(),
            },
            io: Some(io),
            timers: [Mutex::new(None), Mutex::new(None)],
        })
    }

    /// The I/O object.
    pub fn get_ref(&self) -> &T {
        self.io.as_ref().expect("io is present until drop")
    }

    /// The I/O object, mutably.
    ///
    /// # Safety
    ///
    /// The caller must not replace the I/O object (`std::mem::replace`, `*io = other`,
    /// `std::mem::swap`) nor close its descriptor. The object's descriptor is registered
    /// with a reactor under its number, and that number is deregistered when the `Async`
    /// drops: had it changed hands meanwhile, the deregistration would remove another
    /// `Async`'s registration instead, whose waits would then hang, and the new object
    /// would never be deregistered. async-io's `Async::get_mut` is `unsafe` for the same
    /// reason. To swap the object, take it back with [`into_inner`](Async::into_inner)
    /// and wrap the new one with [`Async::new`].
    ///
    /// # Examples
    ///
    /// Calls that keep the descriptor are fine:
    ///
    /// ```
    /// use std::os::unix::net::UnixStream;
    /// use green::io::Async;
    ///
    /// let (a, _b) = UnixStream::pair().unwrap();
    /// let mut a = Async::new(a).unwrap();
    /// // SAFETY: shutting the stream down neither replaces nor closes it.
    /// unsafe { a.get_mut() }.shutdown(std::net::Shutdown::Write).unwrap();
    /// ```
    ///
    /// Safe code cannot call it, so it cannot swap the descriptor out from under the
    /// registration:
    ///
    /// ```compile_fail,E0133
    /// use std::os::unix::net::UnixStream;
    /// use green::io::Async;
    ///
    /// let (a, other) = UnixStream::pair().unwrap();
    /// let mut a = Async::new(a).unwrap();
    /// drop(std::mem::replace(a.get_mut(), other)); // error: call to unsafe function
    /// ```
    pub unsafe fn get_mut(&mut self) -> &mut T {
        self.io.as_mut().expect("io is present until drop")
    }

    /// Deregisters the I/O object and returns it (still in nonblocking mode).
    ///
    /// # Errors
    ///
    /// What `epoll_ctl(DEL)` returns.
    pub fn into_inner(mut self) -> io::Result<T> {
        // Deregister before handing the descriptor back; a failure to deregister (the
        // poller already gone) must not cost the caller the descriptor.
        self.source.deregister();
        Ok(self.io.take().expect("io is present until drop"))
    }

    /// Polls for readability: `Ready` once the descriptor may be readable (try the
    /// operation; on `WouldBlock` poll again). For `AsyncRead`-style code over `&self`.
    ///
    /// `Ready` at once if the descriptor is readable now (checked with a zero-timeout
    /// `poll(2)`, as the reactor is edge-triggered), or if an event came since the
    /// previous `Pending`.
    ///
    /// One waker per direction is kept: when two tasks poll the same direction, they take
    /// turns.
    ///
    /// # Errors
    ///
    /// What registering with the reactor returns, or an error if its runtime shut down.
    pub fn poll_readable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.source.get()?.poll_ready(READ, None, cx)
    }

    /// Polls for writability, as [`poll_readable`](Async::poll_readable).
    ///
    /// # Errors
    ///
    /// As [`poll_readable`](Async::poll_readable).
    pub fn poll_writable(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.source.get()?.poll_ready(WRITE, None, cx)
    }

    /// Waits until the descriptor is readable: completes at once if it is readable now
    /// (checked with a zero-timeout `poll(2)`), else at the next readiness event.
    ///
    /// # Errors
    ///
    /// What registering with the reactor returns.
    pub fn readable(&self) -> Ready<'_> {
        self.ready(READ, None)
    }

    /// Waits until the descriptor is writable, as [`readable`](Async::readable).
    ///
    /// # Errors
    ///
    /// What registering with the reactor returns.
    pub fn writable(&self) -> Ready<'_> {
        self.ready(WRITE, None)
    }

    /// Runs `op` until it does not fail with `WouldBlock`, waiting for readability in
    /// between: parks the fiber, or blocks the thread outside fibers.
    ///
    /// # Errors
    ///
    /// Whatever `op` returns other than `WouldBlock`.
    pub fn read_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.op_with(READ, None, op)
    }

    /// As [`read_with`](Async::read_with), for writing.
    ///
    /// # Errors
    ///
    /// Whatever `op` returns other than `WouldBlock`.
    pub fn write_with<R>(&self, op: impl FnMut(&T) -> io::Result<R>) -> io::Result<R> {
        self.op_with(WRITE, None, op)
    }

    /// `op_with` for reading, where `op` reads at most `len` bytes from a TCP socket:
    /// skips the read that would fail with `WouldBlock` after one that drained the socket.
    ///
    /// `drained` holds, from one call to the next, one plus the tick read before the last
    /// read that filled less than its `len` (0: the last read filled it, or none yet). That
    /// read emptied the socket's receive queue, and data that came after it raises an edge
    /// and moves the tick. So while the tick has not moved (and no hang-up came: see
    /// `Source::quiet_since`), a read would fail: this call waits for the next event first,
    /// and saves the system call. Only where a short read shows the queue empty, as TCP's
    /// does; not for Unix stream sockets, whose reads stop early at a change of sender
    /// credentials or at passed descriptors.
    pub(crate) fn read_drained_with(
        &self,
        len: usize,
        timeout: Option<Duration>,
        drained: &AtomicU64,
        mut op: impl FnMut(&T) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let wait_first = |source: &Registration| match drained.load(Ordering::Relaxed) {
            0 => None,
            mark => Some(mark - 1).filter(|&tick| source.quiet_since(tick)),
        };
        self.op_from(READ, timeout, wait_first, |io, tick| {
            let n = op(io)?;
            // Outside fibers (no tick) a plain thread blocks in `poll(2)`, which looks at
            // the socket itself: no mark.
            if let Some(tick) = tick {
                let mark = if 0 < n && n < len {
                    tick.wrapping_add(1) // at `u64::MAX`, 0: no mark, no harm
                } else {
                    0
                };
                if drained.load(Ordering::Relaxed) != mark {
                    drained.store(mark, Ordering::Relaxed);
                }
            }
            Ok(n)
        })
    }

    /// Runs `op` until it does not fail with `WouldBlock`, waiting for `direction` in
    /// between, until `timeout` has passed since the call (then `TimedOut`).
    pub(crate) fn op_with<R>(
        &self,
        direction: usize,
        timeout: Option<Duration>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> io::Result<R> {
        self.op_from(direction, timeout, |_| None, |io, _| op(io))
    }

    /// [`op_with`](Async::op_with), where in a fiber `wait_first` may name a tick to wait
    /// from (for an event since it) before the first try, and `op` gets the tick read just
    /// before it runs (`None` outside fibers).
    fn op_from<R>(
        &self,
        direction: usize,
        timeout: Option<Duration>,
        wait_first: impl FnOnce(&Registration) -> Option<u64>,
        mut op: impl FnMut(&T, Option<u64>) -> io::Result<R>,
    ) -> io::Result<R> {
        let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
        let in_fiber = crate::worker::in_fiber();
        if in_fiber {
            crate::worker::spend_io_budget();
            if let Some(tick) = wait_first(&self.source) {
                self.wait_since(direction, Some(tick), deadline)?;
            }
        }
        loop {
            // The tick before the operation: an edge after it failed is not lost.
            let tick = in_fiber.then(|| self.source.tick(direction));
            match op(self.get_ref(), tick) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return result,
            }
            self.wait_since(direction, tick, deadline)?;
        }
    }

    /// Waits for `direction` until `deadline`: parks the fiber, or blocks in `poll(2)`.
    /// Follows no operation: completes at once if the descriptor is ready now.
    pub(crate) fn wait(&self, direction: usize, deadline: Option<Instant>) -> io::Result<()> {
        self.wait_since(direction, None, deadline)
    }

    /// Waits for `direction` until `deadline`. With `tick` (read from the source before
    /// an operation that would block), completes at once if an event came since;
    /// without, if the descriptor is ready now.
    fn wait_since(
        &self,
        direction: usize,
        tick: Option<u64>,
        deadline: Option<Instant>,
    ) -> io::Result<()> {
        if !crate::worker::in_fiber() {
            return poll_fd(self.get_ref().as_fd(), direction, deadline);
        }
        let ready = self.ready(direction, tick);
        let wait = if direction == READ {
            Wait::Read
        } else {
            Wait::Write
        };
        let Some(deadline) = deadline else {
            return await_blocking_on(ready, wait);
        };
        // The direction's timer from the last wait, still registered for its deadline,
        // which comes before ours: it is moved, not registered again, unless it fires
        // first (once per timeout, for a connection whose reads each wait a little). A
        // wait on the same direction at the same time on another fiber makes its own.
        let slot = &self.timers[direction];
        let kept = slot.try_lock().ok().and_then(|mut kept| kept.take());
        let mut timer = match kept {
            Some(mut timer) => {
                timer.extend(deadline);
                timer
            }
            None => Timer::at(deadline),
        };
        let waited = await_blocking_on(
            WithDeadline {
                ready,
                timer: &mut timer,
            },
            wait,
        );
        if let Ok(mut kept) = slot.try_lock()
            && kept.is_none()
        {
            *kept = Some(timer);
        }
        waited
    }

    /// A readiness wait for `direction`; see [`Ready`] for `tick`.
    fn ready(&self, direction: usize, tick: Option<u64>) -> Ready<'_> {
        Ready {
            source: &self.source,
            direction,
            tick,
            slot: None,
        }
    }

    /// `AsyncRead`/`AsyncWrite` style: runs `op`, registering for `direction` on
    /// `WouldBlock`.
    pub(crate) fn poll_op<R>(
        &self,
        direction: usize,
        cx: &mut Context<'_>,
        mut op: impl FnMut(&T) -> io::Result<R>,
    ) -> Poll<io::Result<R>> {
        loop {
            // The tick before the operation: an edge after it failed is not lost.
            let tick = self.source.tick(direction);
            match op(self.get_ref()) {
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {}
                result => return Poll::Ready(result),
            }
            match self.source.get()?.poll_ready(direction, Some(tick), cx) {
                Poll::Ready(Ok(())) => continue,
                Poll::Ready(Err(error)) => return Poll::Ready(Err(error)),
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<T: AsFd> Drop for Async<T> {
    fn drop(&mut self) {
        if self.io.is_some() {
            // Deregister before the descriptor closes (when `io` drops after this).
            self.source.deregister();
        }
    }
}

impl<T: AsFd + fmt::Debug> fmt::Debug for Async<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Async").field("io", &self.io).finish()
    }
}

impl<T: AsFd> AsFd for Async<T> {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.get_ref().as_fd()
    }
}

/// Sets `O_NONBLOCK` on a descriptor.
fn set_nonblocking(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: fcntl on a borrowed, open descriptor.
    let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, flags | libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Blocks the thread until `fd` is ready for `direction` or `deadline` passes.
fn poll_fd(fd: BorrowedFd<'_>, direction: usize, deadline: Option<Instant>) -> io::Result<()> {
    let events = if direction == READ {
        libc::POLLIN
    } else {
        libc::POLLOUT
    };
    loop {
        let timeout = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(timed_out());
                }
                // Round up, so that we never wake before the deadline.
                left.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
            }
        };
        let mut pollfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pollfd, 1, timeout) };
        match n {
            n if n > 0 => return Ok(()),
            0 => {}
            _ => {
                let error = io::Error::last_os_error();
                if error.kind() != io::ErrorKind::Interrupted {
                    return Err(error);
                }
            }
        }
    }
}

/// The error a read or write timeout gives.
pub(crate) fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "the I/O operation timed out")
}

/// Where an [`Async`] is registered: with the reactor of the worker where it is first
/// waited on, so that a socket accepted by one fiber and served by another, on another
/// worker, gets its readiness from the serving worker's own reactor.
struct Registration {
    /// The source, once registered.
    source: OnceLock<Arc<Source>>,
    /// Serializes the first registration: two threads adding the same descriptor to one
    /// poller at once would make the second fail with `EEXIST`.
    first: Mutex<()>,
    /// The descriptor, open while the `Async` lives and the one its object holds: only
    /// `unsafe` code (`Async::get_mut`) could swap the object for another.
    fd: RawFd,
}

impl Registration {
    /// The source, registering it with the current reactor on first use.
    fn get(&self) -> io::Result<&Source> {
        if let Some(source) = self.source.get() {
            return Ok(source);
        }
        let _first = self.first.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(source) = self.source.get() {
            return Ok(source); // another thread registered it meanwhile
        }
        let (reactor, _) = crate::executor::current_reactor();
        // SAFETY: the descriptor stays open while the `Async` owning this registration
        // lives, and the registration is removed before it closes.
        let fd = unsafe { BorrowedFd::borrow_raw(self.fd) };
        let source = reactor.insert_source(fd)?;
        Ok(self.source.get_or_init(|| source))
    }

    /// The current tick of `direction` (see [`Source::tick`]); 0 if not registered yet.
    /// That is a correct baseline: a source registered later starts at tick 0, and adding
    /// a descriptor that is already ready queues an event, so readiness that comes after
    /// this call is counted either way (at worst as a spurious wake).
    fn tick(&self, direction: usize) -> u64 {
        self.source.get().map_or(0, |source| source.tick(direction))
    }

    /// Whether a read may be skipped (see [`Source::quiet_since`]); never before the
    /// source is registered.
    fn quiet_since(&self, tick: u64) -> bool {
        self.source
            .get()
            .is_some_and(|source| source.quiet_since(tick))
    }

    /// Removes the registration, if there is one.
    fn deregister(&mut self) {
        if let Some(source) = self.source.take() {
            let _ = source.reactor.remove_source(&source);
        }
    }
}

/// Waits for one readiness event on a source.
#[must_use = "futures do nothing unless you .await or poll them"]
pub struct Ready<'a> {
    /// The registration.
    source: &'a Registration,
    /// READ or WRITE.
    direction: usize,
    /// The source's tick read before the operation that would block, if any: an event
    /// since completes the wait at once. `None`: check the descriptor's readiness instead.
    tick: Option<u64>,
    /// Our waiter slot, once registered.
    slot: Option<usize>,
}

impl Future for Ready<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.slot {
            None => {
                let tick = self.tick.take();
                match self
                    .source
                    .get()?
                    .add_waiter(self.direction, tick, cx.waker())?
                {
                    None => Poll::Ready(Ok(())),
                    Some(slot) => {
                        self.slot = Some(slot);
                        Poll::Pending
                    }
                }
            }
            Some(slot) => {
                if self
                    .source
                    .get()?
                    .check_waiter(self.direction, slot, cx.waker())
                {
                    self.slot = None;
                    Poll::Ready(Ok(()))
                } else {
                    Poll::Pending
                }
            }
        }
    }
}

impl Drop for Ready<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot
            && let Some(source) = self.source.source.get()
        {
            source.remove_waiter(self.direction, slot);
        }
    }
}

impl fmt::Debug for Ready<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ready")
            .field("fd", &self.source.fd)
            .field("direction", &self.direction)
            .finish()
    }
}

/// Readiness or a timeout, whichever comes first.
struct WithDeadline<'a> {
    /// The readiness wait.
    ready: Ready<'a>,
    /// The deadline.
    timer: &'a mut Timer,
}

impl Future for WithDeadline<'_> {
    type Output = io::Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Poll::Ready(result) = Pin::new(&mut self.ready).poll(cx) {
            return Poll::Ready(result);
        }
        match Pin::new(&mut *self.timer).poll(cx) {
            Poll::Ready(_) => Poll::Ready(Err(timed_out())),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsFd> Read for Async<T>
where
    for<'a> &'a T: Read,
{
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.read_with(|mut io| io.read(buf))
    }

    fn read_vectored(&mut self, bufs: &mut [IoSliceMut<'_>]) -> io::Result<usize> {
        self.read_with(|mut io| io.read_vectored(bufs))
    }
}

impl<T: AsFd> Write for Async<T>
where
    for<'a> &'a T: Write,
{
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_with(|mut io| io.write(buf))
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        self.write_with(|mut io| io.write_vectored(bufs))
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_with(|mut io| io.flush())
    }
}

impl<T: AsFd> futures_io::AsyncRead for Async<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_op(READ, cx, |mut io| io.read(buf))
    }
}

impl<T: AsFd> futures_io::AsyncWrite for Async<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_op(WRITE, cx, |mut io| io.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_op(WRITE, cx, |mut io| io.flush())
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

impl<T: AsFd> futures_io::AsyncRead for &Async<T>
where
    for<'a> &'a T: Read,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_op(READ, cx, |mut io| io.read(buf))
    }
}

impl<T: AsFd> futures_io::AsyncWrite for &Async<T>
where
    for<'a> &'a T: Write,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_op(WRITE, cx, |mut io| io.write(buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_op(WRITE, cx, |mut io| io.flush())
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::Async;
    use crate::reactor::READ;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn waits_with_a_timeout_on_one_object_register_one_timer() {
        let runtime = crate::Runtime::builder().workers(1).build().unwrap();
        let (registered, read) = runtime.run(|| {
            let (a, b) = UnixStream::pair().unwrap();
            let (a, b) = (Async::new(a).unwrap(), Async::new(b).unwrap());
            let (reactor, _) = crate::executor::current_reactor();
            let before = reactor.timers_registered();
            // The reader says when it is about to wait; on one worker the writer runs only
            // once the reader has parked, its timer registered or extended. No timer of
            // the writer's own: the count is the reader's alone, whatever the emulation's
            // pace (a writer that slept between writes once made it depend on that).
            let (about_to_wait, waits) = crate::sync::channel::<()>();
            let writer = crate::spawn(move || {
                while waits.recv().is_ok() {
                    b.get_ref().write_all(b"x").unwrap();
                }
            });
            let mut read = 0;
            for _ in 0..20 {
                about_to_wait.send(()).unwrap();
                let mut byte = [0; 1];
                read += a
                    .op_with(READ, Some(Duration::from_secs(60)), |mut io| {
                        io.read(&mut byte)
                    })
                    .unwrap();
            }
            drop(about_to_wait);
            writer.join().unwrap();
            (reactor.timers_registered() - before, read)
        });
        assert_eq!(read, 20);
        // One registration for the reader, extended by each later wait (without: one per
        // wait, 20 in all).
        assert_eq!(registered, 1);
    }
}
