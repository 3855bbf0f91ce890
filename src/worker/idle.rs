//! An idle worker: stealing tasks that have not started, telling a stuck sibling, a
//! short spin, then sleeping in the reactor (blind, with no timeout, only once every
//! sibling sleeps too).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::placement::BALANCE_SLACK;
use super::queue::StartQueue;
use super::{NOT_RUNNING, Unstarted, Worker, WorkerShared};
use crate::context::stack;

/// Pauses of an idle worker's spin between two looks at the clock and the reactor.
const SPIN_CHECK_EVERY: u32 = 16;

/// How long an idle worker looks for work before it sleeps, when it has sibling workers.
const SPIN: Duration = Duration::from_micros(10);

/// How often, at most, an idle worker looks whether the OS has preempted its thread, and
/// how long spinning stays off after it has (see `Worker::may_spin`).
const CONTENTION_WINDOW: Duration = Duration::from_millis(2);

/// How long a worker may run one fiber without a resume before idle siblings count it as
/// stuck and take the tasks waiting to start on it, pinned ones included.
const STUCK_AFTER: Duration = Duration::from_millis(1);

/// How long a sibling must be stuck before an idle worker takes its tasks even if that
/// leaves this worker with more fibers than the sibling (see `Worker::steal`): one more
/// after `STUCK_LONG`, and the excess doubles (plus one) with each further `STUCK_LONG`,
/// 3, 7, 15... A sibling whose thread the OS preempted for a few milliseconds, and whose
/// tasks are long-lived connections that can never move back, ends a fiber or two
/// heavier, not half its burst; one that a fiber blocks for good has a thousand waiting
/// tasks taken within a tenth of a second.
const STUCK_LONG: Duration = Duration::from_millis(10);

/// How many more fibers than a sibling stuck for `stuck_for` a worker may end with by
/// taking its tasks (see `STUCK_LONG`).
fn stuck_excess(stuck_for: Duration) -> usize {
    let periods = stuck_for.as_nanos() / STUCK_LONG.as_nanos();
    match u32::try_from(periods) {
        Ok(periods) if periods < usize::BITS => (1usize << periods) - 1,
        _ => usize::MAX,
    }
}

/// How long an idle worker sleeps, at most, while a sibling is awake and has no task
/// waiting to start: that sibling may queue one and get stuck before it starts it (see
/// `Worker::wait`).
const WATCH_EVERY: Duration = Duration::from_millis(4);

/// How many fibers a sibling may run while tasks wait in its spawn queue before an idle
/// worker takes them: a spawner that blocks soon (a join, a channel) runs its children
/// within a few turns, and moving them would only turn a conversation between two
/// fibers into one across threads; tasks that wait longer than this wait behind a busy
/// worker, and an idle one serves them sooner.
const LAG_TURNS: u64 = 16;

/// How long an idle worker sleeps, at most, while a sibling has tasks waiting to start:
/// it looks again whether they lag (or the sibling got stuck).
const LOOK_AGAIN: Duration = Duration::from_micros(200);

/// What a worker saw of a sibling at its last look (`Worker::refresh_siblings`).
#[derive(Debug, Clone, Copy)]
pub(super) struct SiblingView {
    /// The sibling's `ticks` last seen.
    ticks: u64,
    /// Since when `ticks` has not changed.
    since: Instant,
    /// The sibling's `ticks` when its spawn queue was first seen not empty, since when it
    /// has stayed so; `None` when it was last seen empty.
    queued_since: Option<u64>,
    /// It has run the same fiber, without a resume, for `STUCK_AFTER`: a fiber computing
    /// or blocking its thread. The tasks waiting to start on it may be stolen, pinned ones
    /// included.
    stuck: bool,
    /// How many more fibers than this sibling a worker may end with by taking its tasks:
    /// 0 until it has been stuck for `STUCK_LONG`, then more the longer it stays stuck.
    excess: usize,
    /// Its spawn queue has held tasks while it ran `LAG_TURNS` fibers or more: the tasks
    /// of that queue may be stolen.
    lagging: bool,
}

impl SiblingView {
    /// A sibling not looked at yet.
    pub(super) fn new(now: Instant) -> SiblingView {
        SiblingView {
            ticks: u64::MAX,
            since: now,
            queued_since: None,
            stuck: false,
            excess: 0,
            lagging: false,
        }
    }

    /// Looks at `worker` at `now`.
    fn look(&mut self, worker: &WorkerShared, now: Instant) {
        let ticks = worker.ticks.load(Ordering::Relaxed);
        if ticks != self.ticks {
            (self.ticks, self.since) = (ticks, now);
            (self.stuck, self.excess) = (false, 0);
        } else {
            let running = worker.running.load(Ordering::Relaxed) != NOT_RUNNING;
            let stuck_for = now - self.since;
            self.stuck = running && stuck_for >= STUCK_AFTER;
            self.excess = if running { stuck_excess(stuck_for) } else { 0 };
        }
        if worker.spawns.is_empty() {
            self.queued_since = None;
            self.lagging = false;
        } else {
            // Counted in turns, not time: a worker whose thread the OS preempts for a while
            // lags by nothing (and is stolen from once it looks stuck).
            let first_seen = *self.queued_since.get_or_insert(ticks);
            self.lagging = ticks.wrapping_sub(first_seen) >= LAG_TURNS;
        }
    }
}

impl Worker {
    /// Takes an unstarted task from another worker: from its stealable queue if that queue
    /// lags (see `LAG_TURNS`), or from either queue if that worker is stuck in one fiber.
    /// The task's fiber will live here for good.
    ///
    /// It takes a task only while that evens the loads (the victim's is higher than its
    /// own by more than `BALANCE_SLACK`): a started fiber never moves, and a burst of
    /// connections accepted by a fiber that ran a millisecond (or whose thread the OS
    /// preempted that long) would otherwise all end up here for good. A victim stuck for
    /// `STUCK_LONG` or more may be left lighter than this worker, by an excess that grows
    /// with the time it stays stuck, until a fiber that never lets its worker go has had
    /// all of its waiting tasks taken.
    pub(super) fn steal(&self) -> Option<Unstarted> {
        let workers = &self.runtime.workers;
        let n = workers.len();
        (1..n)
            .map(|offset| &workers[(self.shared.index + offset) % n])
            .find_map(|victim| {
                let view = self.siblings.borrow()[victim.index];
                if !self.worth_stealing(victim, &view) {
                    return None;
                }
                let (task, queued) = if view.stuck || view.lagging {
                    // Half the difference of the loads: both end even.
                    let own = self.shared.load.load(Ordering::Relaxed);
                    let theirs = victim.load.load(Ordering::Relaxed);
                    let half = theirs.saturating_sub(own) / 2;
                    victim.spawns.steal_into(&self.shared.spawns, half.max(1))
                } else {
                    (None, 0)
                };
                let task = task.or_else(|| view.stuck.then(|| victim.pinned.pop()).flatten());
                let taken = usize::from(task.is_some()) + queued;
                if taken > 0 {
                    // Until the victim publishes its load again: the next steal sees this
                    // one.
                    let _ = victim
                        .load
                        .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| {
                            Some(l.saturating_sub(taken))
                        });
                }
                for _ in 0..queued {
                    self.mark_start(StartQueue::Spawns);
                }
                if queued > 0 {
                    self.runtime.alert_blind_sleepers(self.shared.index);
                }
                task
            })
    }

    /// Whether taking a task from `victim` is worth it, as far as loads go (see `steal`).
    #[inline]
    fn worth_stealing(&self, victim: &WorkerShared, view: &SiblingView) -> bool {
        let own = self.shared.load.load(Ordering::Relaxed);
        let theirs = victim.load.load(Ordering::Relaxed);
        theirs.saturating_add(view.excess) > own.saturating_add(BALANCE_SLACK)
    }

    /// Whether `steal` would find something in `victim`'s queues, as of the last look.
    #[inline]
    pub(super) fn may_steal_from(&self, victim: &WorkerShared) -> bool {
        let view = self.siblings.borrow()[victim.index];
        ((!victim.spawns.is_empty() && (view.stuck || view.lagging))
            || (view.stuck && !victim.pinned.is_empty()))
            && self.worth_stealing(victim, &view)
    }

    /// Whether anything waits for this worker: a message, shutdown, or a task to steal.
    pub(super) fn has_work(&self) -> bool {
        !self.shared.injector.is_empty()
            || self.runtime.shutdown.load(Ordering::SeqCst)
            || self
                .runtime
                .workers
                .iter()
                .any(|w| w.index != self.shared.index && self.may_steal_from(w))
    }

    /// Whether a sibling has tasks waiting to start that `steal` leaves alone for now:
    /// this worker then sleeps no longer than `LOOK_AGAIN`, to look again.
    pub(super) fn work_left_elsewhere(&self) -> bool {
        self.runtime
            .workers
            .iter()
            .any(|w| w.index != self.shared.index && !(w.spawns.is_empty() && w.pinned.is_empty()))
    }

    /// Looks at every sibling's resume counter and spawn queue (see `SiblingView`).
    pub(super) fn refresh_siblings(&self) {
        let now = Instant::now();
        let mut siblings = self.siblings.borrow_mut();
        for worker in self.runtime.workers.iter() {
            if worker.index != self.shared.index {
                siblings[worker.index].look(worker, now);
            }
        }
    }

    /// Waits in the reactor for I/O, a timer or a message.
    pub(super) fn wait(&self) {
        // 1. With other workers, look for work for a few microseconds before sleeping, if
        //    spinning is worth its CPU (see `may_spin`).
        if self.runtime.workers.len() > 1 {
            self.refresh_siblings();
            if self.may_spin() {
                let found = self.spin();
                self.runtime.spinners.fetch_sub(1, Ordering::SeqCst);
                if found {
                    return;
                }
            }
        }
        // 2. Idle stacks beyond the pool's keep limits (after a burst of fibers ended)
        //    are given back here, off the fibers' path, a bounded step at a time; then
        //    the loop looks at the queues again.
        if stack::trim_step() {
            return;
        }
        //    So is the buffer of a spawn queue that a burst grew, once it is empty.
        self.shared.spawns.trim();
        self.shared.pinned.trim();
        // 3. Sleep in the reactor until an event, a timer or a notification.
        self.runtime.sleepers.fetch_add(1, Ordering::SeqCst);
        self.shared.sleeping.store(true, Ordering::SeqCst);
        let was_blind = loop {
            let timeout = self.sleep_timeout();
            let slept_at = Instant::now();
            let _ = self.shared.reactor.react(timeout);
            let blind = timeout.is_none() && self.runtime.workers.len() > 1;
            if blind {
                self.set_blind(false);
            }
            // 4. A bounded sleep that ran out with nothing for this worker is a look at
            //    the siblings, not a wake: back to the loop only if one is stuck, or its
            //    spawn queue lags. Tasks a sibling will start soon are not worth taking
            //    (the spawner often starts one directly from `join`, and stealing it
            //    would make that join wait, and two fibers that talk talk across threads).
            let ran_out = timeout.is_some_and(|t| !t.is_zero() && slept_at.elapsed() >= t);
            if !ran_out || !self.queue.borrow().is_empty() {
                break blind;
            }
            self.refresh_siblings();
            if self.has_work() {
                break blind;
            }
        };
        // Woken from a blind sleep (perhaps by an alert meant to make some worker look at
        // a task that may never start where it is), this worker goes back to running
        // fibers and may get stuck in one too: pass the alert on while tasks wait.
        if was_blind && self.work_left_elsewhere() {
            self.runtime.alert_blind_sleepers(self.shared.index);
        }
        self.note_cpu();
        if self.runtime.workers.len() > 1 {
            self.refresh_siblings();
        }
        self.shared.sleeping.store(false, Ordering::SeqCst);
        self.runtime.sleepers.fetch_sub(1, Ordering::SeqCst);
    }

    /// Whether this idle worker may spin before it sleeps; if so, it counts itself among
    /// the spinners, and must uncount itself when it stops.
    ///
    /// Spinning pays when the work it waits for comes from a thread that runs meanwhile
    /// on another CPU (a sibling answering a conversation): the wake then costs no
    /// system call on either side. It costs when it takes a CPU from a thread that could
    /// run: the thread that would send the next request, or a sibling. So a worker
    /// spins only if
    ///
    /// 1. a sibling is awake: one that sleeps sends nothing;
    /// 2. fewer than half of the workers (at least one) spin already (as Go's scheduler
    ///    allows): more would only burn CPUs;
    /// 3. the OS has not preempted this worker's thread within the last
    ///    `CONTENTION_WINDOW` or so: the CPUs then have more threads that can run than
    ///    they can run, and a spinning worker would take a CPU from one of them.
    fn may_spin(&self) -> bool {
        if !self.a_sibling_is_awake() || self.cpu_contended() {
            return false;
        }
        let most = (self.runtime.workers.len() / 2).max(1);
        self.runtime
            .spinners
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |spinning| {
                (spinning < most).then_some(spinning + 1)
            })
            .is_ok()
    }

    /// Looks for work for up to `SPIN`; returns whether some came. I/O events that come
    /// meanwhile end the spin, unfound: the reactor's wait returns them at once. The
    /// cheap checks run every pause (about 60 ns); the clock and the reactor (a system
    /// call) every `SPIN_CHECK_EVERY` pauses.
    fn spin(&self) -> bool {
        let start = Instant::now();
        for round in 1u32.. {
            if self.has_work() {
                return true;
            }
            if round.is_multiple_of(SPIN_CHECK_EVERY) {
                if start.elapsed() >= SPIN || self.shared.reactor.has_events() {
                    return false;
                }
                self.refresh_siblings();
            }
            std::hint::spin_loop();
        }
        false
    }

    /// Whether the OS preempted this worker's thread lately (see `may_spin`): looks at
    /// the thread's count of involuntary switches at most once per `CONTENTION_WINDOW`.
    fn cpu_contended(&self) -> bool {
        let now = Instant::now();
        let (looked_at, switches, contended) = self.contention.get();
        if now.saturating_duration_since(looked_at) < CONTENTION_WINDOW {
            return contended;
        }
        let Some(now_switches) = crate::sys::involuntary_switches() else {
            return false;
        };
        let contended = now_switches != switches;
        self.contention.set((now, now_switches, contended));
        contended
    }

    /// How long `wait` sleeps, once `sleeping` is set:
    ///
    /// 1. not at all if work came meanwhile (it must not wait for the next event);
    /// 2. `LOOK_AGAIN` if a sibling has tasks waiting to start, to look again whether they
    ///    lag or the sibling got stuck;
    /// 3. `WATCH_EVERY` if a sibling is awake: it may queue a task and get stuck in a
    ///    fiber before starting it, and nothing would tell this worker;
    /// 4. with no timeout otherwise, as a "blind" sleeper: counted first, then the above
    ///    are checked once more, so that a task queued meanwhile is either seen here or
    ///    sees the count and wakes this worker (`RuntimeShared::alert_blind_sleepers`).
    ///    A sibling that wakes later and queues a task before it gets stuck wakes it
    ///    the same way.
    pub(super) fn sleep_timeout(&self) -> Option<Duration> {
        if self.runtime.workers.len() == 1 {
            return self.has_work().then_some(Duration::ZERO);
        }
        let bounded = || {
            if self.has_work() {
                Some(Duration::ZERO)
            } else if self.work_left_elsewhere() {
                Some(LOOK_AGAIN)
            } else if self.a_sibling_is_awake() {
                Some(WATCH_EVERY)
            } else {
                None
            }
        };
        if let Some(timeout) = bounded() {
            return Some(timeout);
        }
        self.set_blind(true);
        let timeout = bounded();
        if timeout.is_some() {
            self.set_blind(false);
        }
        timeout
    }

    /// Counts this worker in or out of the blind sleepers (flag first in, last out, so
    /// that an alert that sees the count finds the flag).
    pub(super) fn set_blind(&self, blind: bool) {
        if blind {
            self.shared.blind.store(true, Ordering::SeqCst);
            self.runtime.blind_sleepers.fetch_add(1, Ordering::SeqCst);
        } else {
            self.runtime.blind_sleepers.fetch_sub(1, Ordering::SeqCst);
            self.shared.blind.store(false, Ordering::SeqCst);
        }
    }

    /// Whether a sibling is out of its reactor: running fibers, or about to.
    pub(super) fn a_sibling_is_awake(&self) -> bool {
        self.runtime
            .workers
            .iter()
            .any(|w| w.index != self.shared.index && !w.sleeping.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::blocking::pool::Pool;
    use crate::task::Task;
    use crate::tokio_context::TokioContext;
    use crate::worker::RuntimeShared;

    /// A task that nobody joins.
    fn task() -> Unstarted {
        let (_handle, task) = Task::spawned(Some(|| ()));
        Unstarted::new(task, None)
    }

    /// A sibling as a worker sees it: `ticks` resumes so far, `running` a fiber or not,
    /// `queued` tasks waiting in its spawn queue.
    fn sibling(ticks: u64, running: bool, queued: usize) -> WorkerShared {
        let worker = WorkerShared::new(1).unwrap();
        worker.ticks.store(ticks, Ordering::Relaxed);
        let running = if running { 7 } else { NOT_RUNNING };
        worker.running.store(running, Ordering::Relaxed);
        for _ in 0..queued {
            worker.spawns.push(task());
        }
        worker
    }

    #[test]
    fn a_spawn_queue_lags_once_its_worker_has_run_lag_turns_fibers_since_it_filled() {
        let start = Instant::now();
        let mut view = SiblingView::new(start);
        view.look(&sibling(100, true, 1), start);
        assert!(!view.lagging, "just seen filled");
        view.look(&sibling(100 + LAG_TURNS - 1, true, 1), start);
        assert!(!view.lagging, "one turn short");
        view.look(&sibling(100 + LAG_TURNS, true, 1), start);
        assert!(view.lagging);
        view.look(&sibling(100 + LAG_TURNS + 1, true, 0), start);
        assert!(!view.lagging, "emptied");
        assert!(!view.stuck, "its ticks move");
    }

    #[test]
    fn a_sibling_is_stuck_after_stuck_after_and_may_be_left_lighter_after_stuck_long() {
        let start = Instant::now();
        let mut view = SiblingView::new(start);
        view.look(&sibling(5, true, 0), start);
        view.look(&sibling(5, true, 0), start + STUCK_AFTER / 2);
        assert!(!view.stuck);
        view.look(&sibling(5, true, 0), start + STUCK_AFTER);
        assert!(view.stuck && view.excess == 0);
        view.look(&sibling(5, true, 0), start + STUCK_LONG);
        assert!(view.stuck && view.excess == 1);
        view.look(&sibling(5, true, 0), start + STUCK_LONG * 3);
        assert_eq!(view.excess, 7, "the excess grows with the time stuck");
        view.look(&sibling(5, true, 0), start + STUCK_LONG * 200);
        assert_eq!(
            view.excess,
            usize::MAX,
            "stuck for good: every task is taken"
        );
        // Same ticks, but no fiber runs: asleep, not stuck.
        view.look(&sibling(5, false, 0), start + STUCK_LONG * 201);
        assert!(!view.stuck && view.excess == 0);
        view.look(&sibling(6, true, 0), start + STUCK_LONG * 3);
        assert!(!view.stuck, "a resume ends it");
    }

    /// Worker 0 of a two-worker runtime (not running), and what it sees of worker 1.
    fn thief_and_victim() -> (Worker, Arc<WorkerShared>) {
        let workers = vec![
            Arc::new(WorkerShared::new(0).unwrap()),
            Arc::new(WorkerShared::new(1).unwrap()),
        ];
        let runtime = Arc::new(RuntimeShared::new(
            workers.clone(),
            64 * 1024,
            Pool::new(Vec::new(), None, TokioContext::default()),
            false,
        ));
        (Worker::new(runtime, workers[0].clone()), workers[1].clone())
    }

    #[test]
    fn a_worker_whose_spawns_were_stolen_drops_their_starts_at_the_first_it_pops() {
        let (thief, victim) = thief_and_victim();
        let victim = Worker::new(thief.runtime.clone(), victim);
        let handles: Vec<_> = (0..100)
            .map(|_| {
                let (handle, task) = Task::spawned(Some(|| ()));
                victim.place(Unstarted::new(task, None));
                handle
            })
            .collect();
        assert_eq!(victim.queue.borrow().starts(), 100);
        while victim.shared.spawns.pop().is_some() {} // taken elsewhere (and dropped)
        let Some(super::super::queue::Runnable::Start(queue)) = victim.queue.borrow_mut().pop()
        else {
            panic!("a start first");
        };
        assert!(victim.take_marked(queue).is_none());
        assert!(
            victim.queue.borrow().is_empty(),
            "the other 99 starts went too"
        );
        assert_eq!(victim.queue.borrow().starts(), 0);
        assert!(handles.iter().all(|handle| handle.is_finished()));
    }

    #[test]
    fn an_idle_worker_steals_half_the_difference_of_the_loads_at_once() {
        let (thief, victim) = thief_and_victim();
        for _ in 0..12 {
            victim.spawns.push(task());
        }
        // The victim's queue lags: 12 tasks and a fiber against none here.
        let lagging = SiblingView {
            lagging: true,
            ..SiblingView::new(Instant::now())
        };
        thief.siblings.borrow_mut()[1] = lagging;
        victim.load.store(13, Ordering::Relaxed);
        let first = thief.steal();
        assert!(first.is_some());
        // 13 - 0 = 13, half is 6: one to start now, five queued here with their starts.
        assert_eq!(thief.queue.borrow().starts(), 5);
        assert_eq!(thief.shared.load.load(Ordering::Relaxed), 5);
        assert_eq!(victim.load.load(Ordering::Relaxed), 7);
        let mut here = 0;
        while thief.shared.spawns.pop().is_some() {
            here += 1;
        }
        assert_eq!(here, 5);
        let mut left = 0;
        while victim.spawns.pop().is_some() {
            left += 1;
        }
        assert_eq!(left, 6);
    }

    #[test]
    fn an_idle_worker_steals_only_to_even_the_loads_or_within_a_stuck_sibling_s_excess() {
        let (thief, victim) = thief_and_victim();
        for _ in 0..4 {
            victim.spawns.push(task());
        }
        // The victim is stuck (briefly): its tasks may be taken, while loads allow.
        let stuck = SiblingView {
            stuck: true,
            ..SiblingView::new(Instant::now())
        };
        thief.siblings.borrow_mut()[1] = stuck;
        thief.shared.load.store(3, Ordering::Relaxed);
        victim.load.store(5, Ordering::Relaxed);
        assert!(thief.may_steal_from(&victim));
        assert!(thief.steal().is_some());
        assert_eq!(
            victim.load.load(Ordering::Relaxed),
            4,
            "the steal counts at once"
        );
        assert_eq!(
            thief.shared.spawns.pop().map(|_| ()),
            None,
            "1 of 2: none queued"
        );
        thief.shared.load.store(4, Ordering::Relaxed); // the thief started the task
        assert!(!thief.may_steal_from(&victim), "4 and 4: nothing to even");
        assert!(thief.steal().is_none());
        // Stuck a while: the thief may end two fibers heavier, not more (one steal moves
        // the difference by two).
        thief.siblings.borrow_mut()[1].excess = 1;
        assert!(!thief.may_steal_from(&victim), "4 and 4 would end 5 and 3");
        thief.siblings.borrow_mut()[1].excess = 2;
        assert!(thief.may_steal_from(&victim), "4 and 4: may end 5 and 3");
        assert!(thief.steal().is_some());
        thief.shared.load.store(5, Ordering::Relaxed);
        assert_eq!(victim.load.load(Ordering::Relaxed), 3);
        assert!(
            !thief.may_steal_from(&victim),
            "5 and 3: the excess is used"
        );
        assert!(thief.steal().is_none());
        // Stuck for good: taken whatever the loads.
        thief.siblings.borrow_mut()[1].excess = usize::MAX;
        assert!(thief.may_steal_from(&victim));
        assert!(thief.steal().is_some());
    }
}
