//! [`Barrier`]: waits until a number of fibers or threads have arrived.

use std::fmt;

use crate::sys::lock;

use super::wait_queue::{WaitQueue, wait_until};

/// Makes a number of fibers or threads wait until all of them have arrived.
///
/// # Examples
///
/// ```
/// use std::sync::Arc;
///
/// let barrier = Arc::new(green::sync::Barrier::new(3));
/// let handles: Vec<_> = (0..3)
///     .map(|_| {
///         let barrier = barrier.clone();
///         green::spawn(move || barrier.wait().is_leader())
///     })
///     .collect();
/// let leaders = handles.into_iter().map(|h| h.join().unwrap()).filter(|&leader| leader).count();
/// assert_eq!(leaders, 1);
/// ```
pub struct Barrier {
    /// Arrivals in the current round, and the round number.
    pub(super) state: std::sync::Mutex<(usize, u64)>,
    /// Parties per round.
    pub(super) parties: usize,
    /// Waiters of the current round.
    pub(super) waiters: WaitQueue,
}

/// Returned by [`Barrier::wait`]: one waiter per round is the leader.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BarrierWaitResult(bool);

impl BarrierWaitResult {
    /// Whether this waiter was the last to arrive (exactly one per round is).
    pub fn is_leader(&self) -> bool {
        self.0
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Barrier")
            .field("parties", &self.parties)
            .finish_non_exhaustive()
    }
}

impl Barrier {
    /// A barrier for `parties` waiters per round (0 behaves like 1: nobody waits).
    pub fn new(parties: usize) -> Barrier {
        Barrier {
            state: std::sync::Mutex::new((0, 0)),
            parties,
            waiters: WaitQueue::new(),
        }
    }

    /// Waits until `parties` waiters have called `wait` in this round.
    pub fn wait(&self) -> BarrierWaitResult {
        crate::block_on::await_blocking_on(self.wait_async(), crate::task::Wait::Barrier)
    }

    /// The async twin of [`wait`](Barrier::wait).
    pub async fn wait_async(&self) -> BarrierWaitResult {
        let round = {
            let mut state = lock(&self.state);
            state.0 += 1;
            if state.0 >= self.parties {
                *state = (0, state.1.wrapping_add(1));
                drop(state);
                self.waiters.notify_all();
                return BarrierWaitResult(true);
            }
            state.1
        };
        wait_until(&self.waiters, || {
            (lock(&self.state).1 != round).then_some(())
        })
        .await;
        BarrierWaitResult(false)
    }
}
