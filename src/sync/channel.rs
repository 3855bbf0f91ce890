//! Multi-producer multi-consumer channels: [`channel`] and [`bounded`].

use std::collections::VecDeque;
use std::fmt;
use std::future::poll_fn;
use std::task::Poll;

use super::spin::{SpinGuard, SpinLock};
use super::wait_queue::{Registration, Removed, Waiters, wake_all};
use crate::task::{PendingWake, Wait};
use crate::worker::{self, Current};

/// A channel's shared state.
///
/// One lock guards the values and both sides' waiters, so that an operation checks the
/// queue, registers or wakes a waiter, in one critical section: no notification can fall
/// between a check and a registration, and one with nobody waiting costs nothing. No user
/// code runs under it (see [`Waiters`]): wakers are cloned before it is taken, and woken
/// or dropped after it is released.
pub(super) struct Channel<T> {
    /// Values, waiters, and who is still connected.
    pub(super) state: SpinLock<ChannelState<T>>,
    /// Most values queued; `usize::MAX` for unbounded.
    pub(super) capacity: usize,
}

/// What a channel's lock guards.
pub(super) struct ChannelState<T> {
    /// Queued values.
    pub(super) queue: VecDeque<T>,
    /// Live `Sender`s.
    pub(super) sender_count: usize,
    /// Live `Receiver`s.
    pub(super) receiver_count: usize,
    /// Receivers waiting for a value.
    pub(super) receivers: Waiters,
    /// Senders waiting for room.
    pub(super) senders: Waiters,
}

/// Why [`Channel::put`] handed a value back.
enum Refused<T> {
    /// Every receiver is gone.
    Disconnected(T),
    /// A bounded channel is full.
    Full(T),
}

/// Which side of a channel a waiter waits on.
#[derive(Clone, Copy)]
pub(super) enum Side {
    /// A receiver, waiting for a value.
    Receiver,
    /// A sender, waiting for room.
    Sender,
}

impl<T> ChannelState<T> {
    pub(super) fn waiters(&mut self, side: Side) -> &mut Waiters {
        match side {
            Side::Receiver => &mut self.receivers,
            Side::Sender => &mut self.senders,
        }
    }
}

impl<T> Channel<T> {
    /// A send under the lock: queues `value` and returns the receiver's waker to wake, or
    /// hands `value` back, saying whether every receiver is gone or the channel is full.
    #[inline]
    fn put(
        &self,
        state: &mut ChannelState<T>,
        value: T,
    ) -> Result<Option<PendingWake>, Refused<T>> {
        if state.receiver_count == 0 {
            return Err(Refused::Disconnected(value));
        }
        if state.queue.len() < self.capacity {
            state.queue.push_back(value);
            return Ok(state.receivers.notify_one());
        }
        Err(Refused::Full(value))
    }

    /// `put` for a waiting send (`Channel::wait`): `Some(true)` and the receiver's waker
    /// to wake if `value` was queued, `Some(false)` if every receiver is gone (the value
    /// stays), `None` if the channel is full (the value stays).
    fn try_put(
        &self,
        state: &mut ChannelState<T>,
        value: &mut Option<T>,
    ) -> Option<(bool, Option<PendingWake>)> {
        match self.put(state, value.take().expect("sent once")) {
            Ok(wakeup) => Some((true, wakeup)),
            Err(Refused::Disconnected(back)) => {
                *value = Some(back);
                Some((false, None))
            }
            Err(Refused::Full(back)) => {
                *value = Some(back);
                None
            }
        }
    }

    /// Waits on `side` until `attempt` (run under the channel's lock) gives a result and,
    /// maybe, a waker to wake once the lock is released.
    async fn wait<R>(
        &self,
        side: Side,
        mut attempt: impl FnMut(&mut ChannelState<T>) -> Option<(R, Option<PendingWake>)>,
    ) -> R {
        let mut waiter = ChannelWaiter::new(self, side);
        poll_fn(|cx| {
            // Our clone of the waker, made with the lock released when the registration
            // needs one; then the attempt runs again, as the lock was let go.
            let mut clone = None;
            loop {
                let mut state = match waiter.attempt(&mut attempt) {
                    Ok(value) => return Poll::Ready(value),
                    Err(state) => state,
                };
                match state
                    .waiters(side)
                    .register(&mut waiter.key, cx.waker(), &mut clone)
                {
                    Registration::Done(displaced) => {
                        drop(state);
                        drop(displaced);
                        return Poll::Pending;
                    }
                    Registration::NeedsWaker => {
                        drop(state);
                        clone = Some(cx.waker().clone());
                    }
                }
            }
        })
        .await
    }
}

impl<T> Channel<T> {
    /// `wait` for a blocking call on a fiber: registers the fiber itself, not a waker, and
    /// parks it. Saves a reference-count increment and decrement per wait (see
    /// [`BlockedFiber`](crate::task::BlockedFiber)).
    fn wait_in_fiber<R>(
        &self,
        fiber: Current,
        side: Side,
        mut attempt: impl FnMut(&mut ChannelState<T>) -> Option<(R, Option<PendingWake>)>,
    ) -> R {
        // Removes the registration under the lock if we unwind (cancelled, or the fiber
        // dropped while parked).
        let mut waiter = ChannelWaiter::new(self, side);
        loop {
            let mut state = match waiter.attempt(&mut attempt) {
                Ok(value) => return value,
                Err(state) => state,
            };
            // SAFETY: we run on `fiber`, and the registration is removed under this lock
            // before this call returns (just above) or unwinds (`ChannelWaiter::drop`).
            let displaced = unsafe {
                state
                    .waiters(side)
                    .register_fiber(&mut waiter.key, fiber.blocked())
            };
            drop(state);
            drop(displaced);
            // Our re-check runs under the lock that the notifier holds while waking us.
            fiber.park_locked(match side {
                Side::Receiver => Wait::ChannelRecv,
                Side::Sender => Wait::ChannelSend,
            });
        }
    }
}

/// A channel waiter's registration, removed when its future completes or is dropped.
pub(super) struct ChannelWaiter<'a, T> {
    /// The channel.
    pub(super) channel: &'a Channel<T>,
    /// The side it waits on.
    pub(super) side: Side,
    /// Its key among that side's waiters, while registered.
    pub(super) key: Option<usize>,
}

impl<'a, T> ChannelWaiter<'a, T> {
    /// A waiter on `side` of `channel`, not registered yet.
    fn new(channel: &'a Channel<T>, side: Side) -> ChannelWaiter<'a, T> {
        ChannelWaiter {
            channel,
            side,
            key: None,
        }
    }

    /// Runs `attempt` under the channel's lock. When it gives a result: forgets the
    /// registration (a notification received meanwhile is consumed), unlocks, does the
    /// wake it asked for, drops the registration's waker and returns the result.
    /// Otherwise hands back the lock, for the caller to register.
    fn attempt<R>(
        &mut self,
        attempt: &mut impl FnMut(&mut ChannelState<T>) -> Option<(R, Option<PendingWake>)>,
    ) -> Result<R, SpinGuard<'a, ChannelState<T>>> {
        let mut state = self.channel.state.lock();
        let Some((value, wakeup)) = attempt(&mut state) else {
            return Err(state);
        };
        let removed = state.waiters(self.side).remove(&mut self.key);
        drop(state);
        // The wake first: it is owed to another waiter, whatever our waker's drop does.
        if let Some(wakeup) = wakeup {
            wakeup.wake();
        }
        drop(removed);
        Ok(value)
    }
}

impl<T> Drop for ChannelWaiter<'_, T> {
    // The check inline (most waiters end unregistered), the rest out of line.
    #[inline]
    fn drop(&mut self) {
        if self.key.is_some() {
            self.deregister();
        }
    }
}

impl<T> ChannelWaiter<'_, T> {
    /// Removes the registration of a waiter that gives up, passing on a notification it
    /// had not consumed.
    #[inline(never)]
    fn deregister(&mut self) {
        let (removed, wakeup) = {
            let mut state = self.channel.state.lock();
            let waiters = state.waiters(self.side);
            let removed = waiters.remove(&mut self.key);
            // Notified but giving up: pass the notification on.
            let wakeup = match removed {
                Removed::Notified => waiters.notify_one(),
                _ => None,
            };
            (removed, wakeup)
        };
        if let Some(wakeup) = wakeup {
            wakeup.wake();
        }
        drop(removed);
    }
}

/// The sending side of a channel; clone it for more producers.
pub struct Sender<T> {
    /// The channel.
    pub(super) channel: std::sync::Arc<Channel<T>>,
}

/// The receiving side of a channel; clone it for more consumers (each value goes to one).
pub struct Receiver<T> {
    /// The channel.
    pub(super) channel: std::sync::Arc<Channel<T>>,
}

/// An unbounded multi-producer multi-consumer channel.
///
/// # Examples
///
/// ```
/// let (sender, receiver) = green::sync::channel();
/// let producer = green::spawn(move || (0..5).for_each(|i| sender.send(i).unwrap()));
/// let received: Vec<i32> = receiver.iter().collect(); // ends when every sender is dropped
/// producer.join().unwrap();
/// assert_eq!(received, [0, 1, 2, 3, 4]);
/// ```
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    make_channel(usize::MAX)
}

/// A multi-producer multi-consumer channel holding at most `capacity` values: `send` waits
/// while it is full.
///
/// # Panics
///
/// Panics if `capacity` is 0 (rendezvous channels are not supported).
pub fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    assert!(
        capacity > 0,
        "green::sync::bounded: the capacity must be at least 1"
    );
    make_channel(capacity)
}

pub(super) fn make_channel<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let channel = std::sync::Arc::new(Channel {
        state: SpinLock::new(ChannelState {
            queue: VecDeque::new(),
            sender_count: 1,
            receiver_count: 1,
            receivers: Waiters::new(),
            senders: Waiters::new(),
        }),
        capacity,
    });
    (
        Sender {
            channel: channel.clone(),
        },
        Receiver { channel },
    )
}

/// The value could not be sent: every receiver is gone.
#[derive(PartialEq, Eq, Clone, Copy)]
pub struct SendError<T>(pub T);

/// Nothing can be received: the channel is empty and every sender is gone.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub struct RecvError;

/// Why `try_recv` gave nothing.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum TryRecvError {
    /// The channel is empty.
    Empty,
    /// The channel is empty and every sender is gone.
    Disconnected,
}

impl<T> fmt::Debug for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SendError(..)")
    }
}

impl<T> fmt::Display for SendError<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sending on a channel whose receivers are all gone")
    }
}

impl fmt::Display for RecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("receiving on an empty channel whose senders are all gone")
    }
}

impl fmt::Display for TryRecvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TryRecvError::Empty => f.write_str("the channel is empty"),
            TryRecvError::Disconnected => RecvError.fmt(f),
        }
    }
}

impl<T> std::error::Error for SendError<T> {}
impl std::error::Error for RecvError {}
impl std::error::Error for TryRecvError {}

impl<T> Sender<T> {
    /// Sends a value, waiting (parking the fiber or blocking the thread) while a bounded
    /// channel is full.
    ///
    /// # Errors
    ///
    /// [`SendError`] with the value if every receiver is gone.
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let channel = &*self.channel;
        // With room (an unbounded channel always has some), a send never waits: one
        // critical section, and no waiter to set up in any context.
        let put = channel.put(&mut channel.state.lock(), value);
        match put {
            Ok(wakeup) => {
                if let Some(wakeup) = wakeup {
                    wakeup.wake();
                }
                Ok(())
            }
            Err(Refused::Disconnected(value)) => Err(SendError(value)),
            Err(Refused::Full(value)) => self.send_full(value),
        }
    }

    /// `send` on a full channel: waits for room.
    #[inline(never)]
    fn send_full(&self, value: T) -> Result<(), SendError<T>> {
        let Some(fiber) = worker::current() else {
            return crate::await_blocking(self.send_async(value));
        };
        let channel = &*self.channel;
        let mut value = Some(value);
        if channel.wait_in_fiber(fiber, Side::Sender, |state| {
            channel.try_put(state, &mut value)
        }) {
            Ok(())
        } else {
            Err(SendError(value.take().expect("not sent")))
        }
    }

    /// The async twin of [`send`](Sender::send).
    ///
    /// # Errors
    ///
    /// As [`send`](Sender::send).
    pub async fn send_async(&self, value: T) -> Result<(), SendError<T>> {
        let channel = &*self.channel;
        let mut value = Some(value);
        let sent = channel
            .wait(Side::Sender, |state| channel.try_put(state, &mut value))
            .await;
        if sent {
            Ok(())
        } else {
            Err(SendError(value.take().expect("not sent")))
        }
    }
}

impl<T> Receiver<T> {
    /// Receives a value, waiting (parking the fiber or blocking the thread) while the
    /// channel is empty.
    ///
    /// # Errors
    ///
    /// [`RecvError`] once the channel is empty and every sender is gone.
    pub fn recv(&self) -> Result<T, RecvError> {
        match worker::current() {
            Some(fiber) => self
                .channel
                .wait_in_fiber(fiber, Side::Receiver, Self::attempt_recv),
            None => crate::await_blocking(self.recv_async()),
        }
    }

    /// The async twin of [`recv`](Receiver::recv).
    ///
    /// # Errors
    ///
    /// As [`recv`](Receiver::recv).
    pub async fn recv_async(&self) -> Result<T, RecvError> {
        self.channel.wait(Side::Receiver, Self::attempt_recv).await
    }

    /// A receive attempt under the lock, for `Channel::wait`: the value (or the
    /// disconnection) and a sender's waker to wake, or `None` if the channel is empty.
    #[allow(clippy::type_complexity)]
    fn attempt_recv(
        state: &mut ChannelState<T>,
    ) -> Option<(Result<T, RecvError>, Option<PendingWake>)> {
        match Self::take(state) {
            Ok((value, waker)) => Some((Ok(value), waker)),
            Err(TryRecvError::Disconnected) => Some((Err(RecvError), None)),
            Err(TryRecvError::Empty) => None,
        }
    }

    /// Takes a value under the channel's lock, with the waker of a sender to wake for the
    /// room it made.
    pub(super) fn take(
        state: &mut ChannelState<T>,
    ) -> Result<(T, Option<PendingWake>), TryRecvError> {
        match state.queue.pop_front() {
            Some(value) => Ok((value, state.senders.notify_one())),
            None if state.sender_count == 0 => Err(TryRecvError::Disconnected),
            None => Err(TryRecvError::Empty),
        }
    }

    /// Receives a value if one is queued.
    ///
    /// # Errors
    ///
    /// [`TryRecvError::Empty`] or, with every sender gone, [`TryRecvError::Disconnected`].
    pub fn try_recv(&self) -> Result<T, TryRecvError> {
        let taken = Self::take(&mut self.channel.state.lock());
        let (value, waker) = taken?;
        if let Some(waker) = waker {
            waker.wake();
        }
        Ok(value)
    }

    /// An iterator that receives until the channel is empty and every sender is gone.
    pub fn iter(&self) -> impl Iterator<Item = T> + '_ {
        std::iter::from_fn(|| self.recv().ok())
    }
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        self.channel.state.lock().sender_count += 1;
        Sender {
            channel: self.channel.clone(),
        }
    }
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        self.channel.state.lock().receiver_count += 1;
        Receiver {
            channel: self.channel.clone(),
        }
    }
}

impl<T> Drop for Sender<T> {
    fn drop(&mut self) {
        let wakers = {
            let mut state = self.channel.state.lock();
            state.sender_count -= 1;
            if state.sender_count == 0 {
                state.receivers.notify_all()
            } else {
                Vec::new()
            }
        };
        wake_all(wakers);
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        let wakers = {
            let mut state = self.channel.state.lock();
            state.receiver_count -= 1;
            if state.receiver_count == 0 {
                state.senders.notify_all()
            } else {
                Vec::new()
            }
        };
        wake_all(wakers);
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender").finish_non_exhaustive()
    }
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver").finish_non_exhaustive()
    }
}
