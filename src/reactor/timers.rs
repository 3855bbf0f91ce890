//! The reactor's timers: deadlines in a queue (or, out of order, a heap) over a slab of
//! wakers.
//!
//! Most timers are removed before they fire (an I/O timeout whose socket became ready
//! first), and most are added with one delay, so in increasing order of deadline. Those go
//! to the back of a FIFO queue, which then stays sorted; a deadline earlier than the
//! queue's last goes to a binary heap. A removal only frees the timer's slab entry: its
//! queue or heap entry stays, stale, until it reaches the front (where dropping it from
//! the queue costs O(1)) or until stale entries outnumber live ones, when one pass drops
//! them all, so memory stays within about twice the live timers and a removal costs O(1)
//! amortized. A `BTreeMap` keyed by (deadline, id), as before, searched each node's keys
//! linearly and moved entries around on every insertion and removal.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::task::Waker;
use std::time::{Duration, Instant};

use slab::Slab;

/// Names a timer, for its removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TimerId {
    /// Its entry in the slab.
    key: usize,
    /// Its sequence number: a slab entry reused by a later timer has another.
    seq: u64,
}

/// A timer's place in the queue or the heap: ordered by deadline, then by sequence number
/// (so timers with one deadline fire in the order they were added).
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Due {
    deadline: Instant,
    seq: u64,
    key: usize,
}

/// Pending timers.
#[derive(Default)]
pub(super) struct Timers {
    /// Timers added in order of deadline, earliest first; may hold removed ones.
    queue: VecDeque<Due>,
    /// Timers whose deadline came before the queue's last, earliest on top; may hold
    /// removed ones.
    heap: BinaryHeap<Reverse<Due>>,
    /// Each live timer's sequence number and waker.
    live: Slab<(u64, Waker)>,
    /// The sequence number of the next timer.
    next_seq: u64,
}

/// Stale entries tolerated beyond the live timers before a purge.
const STALE_SLACK: usize = 64;

impl Timers {
    /// Adds a timer.
    pub(super) fn insert(&mut self, deadline: Instant, waker: Waker) -> TimerId {
        let seq = self.next_seq;
        self.next_seq += 1;
        let key = self.live.insert((seq, waker));
        let due = Due { deadline, seq, key };
        match self.queue.back() {
            Some(last) if deadline < last.deadline => self.heap.push(Reverse(due)),
            _ => self.queue.push_back(due),
        }
        TimerId { key, seq }
    }

    /// Removes a timer; returns its waker, to drop after unlocking (`None` if it fired or
    /// was removed already).
    pub(super) fn remove(&mut self, id: TimerId) -> Option<Waker> {
        match self.live.get(id.key) {
            Some(&(seq, _)) if seq == id.seq => {}
            _ => return None,
        }
        let (_, waker) = self.live.remove(id.key);
        if self.queue.len() + self.heap.len() > 2 * self.live.len() + STALE_SLACK {
            let live = &self.live;
            self.queue.retain(|due| is_live(live, due));
            self.heap.retain(|Reverse(due)| is_live(live, due));
        }
        Some(waker)
    }

    /// Moves the wakers of the timers due at `now` into `wakers`, earliest first; returns
    /// the time from `now` to the next deadline, if any timer is left.
    pub(super) fn fire(&mut self, now: Instant, wakers: &mut Vec<Waker>) -> Option<Duration> {
        loop {
            while let Some(first) = self.queue.front()
                && !is_live(&self.live, first)
            {
                self.queue.pop_front();
            }
            while let Some(Reverse(top)) = self.heap.peek()
                && !is_live(&self.live, top)
            {
                self.heap.pop();
            }
            let (next, in_queue) = match (self.queue.front(), self.heap.peek()) {
                (None, None) => return None,
                (Some(first), Some(Reverse(top))) if top < first => (top, false),
                (Some(first), _) => (first, true),
                (None, Some(Reverse(top))) => (top, false),
            };
            if next.deadline > now {
                return Some(next.deadline.saturating_duration_since(now));
            }
            let key = next.key;
            if in_queue {
                self.queue.pop_front();
            } else {
                self.heap.pop();
            }
            wakers.push(self.live.remove(key).1);
        }
    }

    /// Whether no timer is pending.
    pub(super) fn is_empty(&self) -> bool {
        self.live.is_empty()
    }

    /// How many timers are pending.
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.live.len()
    }

    /// How many timers were ever added.
    #[cfg(test)]
    pub(super) fn registered(&self) -> u64 {
        self.next_seq
    }

    /// Removes every timer; returns their wakers.
    pub(super) fn take_all(&mut self) -> Vec<Waker> {
        self.queue.clear();
        self.heap.clear();
        self.live.drain().map(|(_, waker)| waker).collect()
    }
}

/// Whether an entry is a live timer's, not one left by a removal.
fn is_live(live: &Slab<(u64, Waker)>, due: &Due) -> bool {
    live.get(due.key).is_some_and(|&(seq, _)| seq == due.seq)
}

#[cfg(test)]
mod tests {
    use super::Timers;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Wake, Waker};
    use std::time::{Duration, Instant};

    /// Records the order of wakes by index.
    struct Logs(usize, Arc<std::sync::Mutex<Vec<usize>>>);

    impl Wake for Logs {
        fn wake(self: Arc<Self>) {
            self.1.lock().unwrap().push(self.0);
        }
    }

    fn wakers(n: usize) -> (Vec<Waker>, Arc<std::sync::Mutex<Vec<usize>>>) {
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let wakers = (0..n)
            .map(|i| Waker::from(Arc::new(Logs(i, log.clone()))))
            .collect();
        (wakers, log)
    }

    #[test]
    fn timers_fire_by_deadline_then_by_insertion_and_removed_ones_never() {
        let (wakers, log) = wakers(5);
        let mut timers = Timers::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let _a = timers.insert(t0 + ms(30), wakers[0].clone());
        let b = timers.insert(t0 + ms(10), wakers[1].clone());
        let _c = timers.insert(t0 + ms(20), wakers[2].clone());
        let _d = timers.insert(t0 + ms(20), wakers[3].clone());
        let _e = timers.insert(t0 + ms(40), wakers[4].clone());
        assert!(timers.remove(b).is_some());
        assert!(timers.remove(b).is_none(), "removed twice");
        let mut due = Vec::new();
        assert_eq!(timers.fire(t0 + ms(5), &mut due), Some(ms(15)));
        assert!(due.is_empty());
        assert_eq!(timers.fire(t0 + ms(30), &mut due), Some(ms(10)));
        due.drain(..).for_each(Waker::wake);
        assert_eq!(*log.lock().unwrap(), [2, 3, 0]);
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.take_all().len(), 1);
        assert!(timers.is_empty());
        assert_eq!(timers.fire(t0 + ms(100), &mut due), None);
    }

    #[test]
    fn random_inserts_removals_and_fires_match_a_sorted_list() {
        let (wakers, log) = wakers(1);
        let _ = wakers;
        let mut timers = Timers::default();
        let t0 = Instant::now();
        // The reference: (deadline in ms, sequence number) of live timers.
        let mut reference: Vec<(u64, usize)> = Vec::new();
        let mut ids = Vec::new();
        let mut random = 0x2545_F491_u64;
        let mut next = || {
            random ^= random << 13;
            random ^= random >> 7;
            random ^= random << 17;
            random
        };
        let mut now = 0;
        for n in 0..20_000usize {
            match next() % 8 {
                // Mostly in order (one delay), sometimes earlier, often equal.
                0..=3 => {
                    let deadline = now + 50 + [0, 0, 3, 17][(next() % 4) as usize];
                    let waker = Waker::from(Arc::new(Logs(n, log.clone())));
                    ids.push((
                        timers.insert(t0 + Duration::from_millis(deadline), waker),
                        n,
                    ));
                    reference.push((deadline, n));
                }
                4..=5 if !ids.is_empty() => {
                    let (id, n) = ids.swap_remove((next() % ids.len() as u64) as usize);
                    let was_live = reference.iter().any(|&(_, m)| m == n);
                    assert_eq!(timers.remove(id).is_some(), was_live);
                    reference.retain(|&(_, m)| m != n);
                }
                _ => {
                    now += next() % 20;
                    let mut due = Vec::new();
                    let left = timers.fire(t0 + Duration::from_millis(now), &mut due);
                    due.into_iter().for_each(Waker::wake);
                    reference.sort();
                    let split = reference.partition_point(|&(deadline, _)| deadline <= now);
                    let expected: Vec<usize> = reference.drain(..split).map(|(_, n)| n).collect();
                    assert_eq!(std::mem::take(&mut *log.lock().unwrap()), expected);
                    assert_eq!(
                        left,
                        reference
                            .first()
                            .map(|&(deadline, _)| Duration::from_millis(deadline - now))
                    );
                }
            }
            assert_eq!(timers.len(), reference.len());
        }
    }

    #[test]
    fn removals_keep_the_heap_within_twice_the_live_timers() {
        let count = Arc::new(AtomicUsize::new(0));
        struct Counts(Arc<AtomicUsize>);
        impl Wake for Counts {
            fn wake(self: Arc<Self>) {
                self.0.fetch_add(1, Ordering::SeqCst);
            }
        }
        let waker = Waker::from(Arc::new(Counts(count.clone())));
        let mut timers = Timers::default();
        let t0 = Instant::now();
        // 100 long-lived timers, and 100,000 short ones added and removed, as I/O
        // timeouts are: slab keys are reused, the stale heap entries purged.
        let kept: Vec<_> = (0..100)
            .map(|i| timers.insert(t0 + Duration::from_secs(60 + i), waker.clone()))
            .collect();
        for i in 0..100_000u64 {
            let id = timers.insert(t0 + Duration::from_millis(i), waker.clone());
            assert!(timers.remove(id).is_some());
            let entries = timers.queue.len() + timers.heap.len();
            assert!(entries <= 2 * timers.len() + super::STALE_SLACK + 1);
        }
        assert_eq!(timers.len(), 100);
        // A removed timer's reused slab entry is not removed by its old id.
        let old = timers.insert(t0, waker.clone());
        assert!(timers.remove(old).is_some());
        let new = timers.insert(t0, waker.clone());
        assert!(timers.remove(old).is_none());
        assert!(timers.remove(new).is_some());
        let mut due = Vec::new();
        assert!(
            timers
                .fire(t0 + Duration::from_secs(59), &mut due)
                .is_some()
        );
        assert!(due.is_empty());
        assert_eq!(timers.fire(t0 + Duration::from_secs(1000), &mut due), None);
        assert_eq!(due.len(), kept.len());
        due.drain(..).for_each(Waker::wake);
        assert_eq!(count.load(Ordering::SeqCst), 100);
    }
}
