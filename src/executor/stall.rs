//! The stall monitor: a thread that reports a fiber running too long without suspending
//! (see `Builder::stall_warning`).

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::sys::{catch_and_report, lock};
use crate::worker::{NOT_RUNNING, RuntimeShared};

/// What the stall monitor reports: a fiber that ran too long without suspending.
///
/// Its `Display` is the line the monitor prints on stderr when no hook is set
/// ([`Builder::on_stall`](crate::Builder::on_stall)):
///
/// ```text
/// green: fiber 'conn-42' (3:17) has run on worker 1 for 102ms without suspending; ...
/// ```
///
/// # Examples
///
/// ```
/// use std::sync::mpsc;
/// use std::time::Duration;
///
/// let (reports, reported) = mpsc::channel();
/// let runtime = green::Runtime::builder()
///     .stall_warning(Duration::from_millis(20))
///     .on_stall(move |report| drop(reports.send(report.clone())))
///     .build()
///     .unwrap();
/// runtime.run(move || {
///     let hog = green::task::Builder::new().name("hog").spawn(move || {
///         // Blocks its worker's thread until the monitor has reported it. (On a slow
///         // machine the fiber that spawned it, which has no name, may be reported first.)
///         loop {
///             let report = reported.recv_timeout(Duration::from_secs(10)).unwrap();
///             if report.name.is_some() {
///                 break report;
///             }
///         }
///     });
///     let report = hog.unwrap().join().unwrap();
///     assert_eq!(report.name.as_deref(), Some("hog"));
///     assert!(report.to_string().starts_with("green: fiber 'hog' ("));
/// });
/// ```
#[derive(Debug, Clone)]
pub struct StallReport {
    /// The fiber's id on its worker (slot and generation).
    pub fiber: u64,
    /// The name its task was spawned with ([`task::Builder::name`](crate::task::Builder::name)),
    /// if any, and if the fiber had not ended when the monitor looked it up.
    pub name: Option<Arc<str>>,
    /// The worker's index in its runtime.
    pub worker: usize,
    /// How long the fiber has run so far without suspending (at least).
    pub running_for: Duration,
}

impl fmt::Display for StallReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (slot, generation) = (self.fiber & 0xFFFF_FFFF, self.fiber >> 32);
        match &self.name {
            Some(name) => write!(f, "green: fiber '{name}' ({slot}:{generation})")?,
            None => write!(f, "green: fiber {slot}:{generation}")?,
        }
        write!(
            f,
            " has run on worker {} for {:?} without suspending; it blocks every other fiber \
             of that worker (move blocking work into green::unblock)",
            self.worker, self.running_for,
        )
    }
}

/// The stall monitor's view of one worker: the resume count and running fiber last
/// seen, when they were first seen, and whether that stall was reported.
#[derive(Debug, Clone, Copy)]
struct Watched {
    ticks: u64,
    running: u64,
    since: Instant,
    reported: bool,
}

impl Watched {
    fn new(now: Instant) -> Watched {
        Watched {
            ticks: u64::MAX,
            running: NOT_RUNNING,
            since: now,
            reported: false,
        }
    }

    /// Takes a look at a worker that has made `ticks` resumes and runs `running` at
    /// `now`: how long that fiber has run without suspending, if that is `threshold` or
    /// more and was not reported yet. A resume (or a change of fiber) starts the clock
    /// again; a worker between fibers is never reported.
    fn look(
        &mut self,
        ticks: u64,
        running: u64,
        now: Instant,
        threshold: Duration,
    ) -> Option<Duration> {
        if (ticks, running) != (self.ticks, self.running) {
            *self = Watched {
                ticks,
                running,
                since: now,
                reported: false,
            };
            return None;
        }
        let running_for = now - self.since;
        if running == NOT_RUNNING || self.reported || running_for < threshold {
            return None;
        }
        self.reported = true;
        Some(running_for)
    }
}

/// Watches the workers of a runtime and reports fibers that hog one (see
/// `Builder::stall_warning`).
pub(crate) fn monitor_stalls(
    runtime: Arc<RuntimeShared>,
    threshold: Duration,
    report: Arc<dyn Fn(&StallReport) + Send + Sync>,
    stop: &Mutex<bool>,
    wakeup: &std::sync::Condvar,
) {
    let period = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(100));
    let mut seen = vec![Watched::new(Instant::now()); runtime.workers.len()];
    let mut stopped = lock(stop);
    while !*stopped {
        stopped = wakeup
            .wait_timeout(stopped, period)
            .unwrap_or_else(|e| e.into_inner())
            .0;
        if *stopped {
            break;
        }
        // Not under the lock: the hook is user code, and the runtime's shutdown takes the
        // lock to stop the monitor (a hook that waits for that shutdown would deadlock).
        drop(stopped);
        let now = Instant::now();
        for (worker, watched) in runtime.workers.iter().zip(&mut seen) {
            let ticks = worker.ticks.load(Ordering::Relaxed);
            let running = worker.running.load(Ordering::Relaxed);
            if let Some(running_for) = watched.look(ticks, running, now, threshold) {
                let stall = StallReport {
                    fiber: running,
                    name: worker.name_of(running),
                    worker: worker.index,
                    running_for,
                };
                // A hook that panics must not end the monitor: later stalls would go
                // unreported, without a word.
                catch_and_report("the stall hook (Builder::on_stall)", || report(&stall));
            }
        }
        stopped = lock(stop);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stall_monitor_reports_a_fiber_once_per_stall() {
        let (threshold, start) = (Duration::from_millis(20), Instant::now());
        let at = |ms| start + Duration::from_millis(ms);
        let mut watched = Watched::new(start);
        assert_eq!(watched.look(5, 7, at(0), threshold), None); // first seen
        assert_eq!(watched.look(5, 7, at(19), threshold), None);
        assert_eq!(
            watched.look(5, 7, at(25), threshold),
            Some(Duration::from_millis(25))
        );
        assert_eq!(watched.look(5, 7, at(500), threshold), None); // once
        // Suspended and resumed: a new stall, reported again.
        assert_eq!(watched.look(6, 7, at(501), threshold), None);
        assert_eq!(
            watched.look(6, 7, at(530), threshold),
            Some(Duration::from_millis(29))
        );
    }

    #[test]
    fn the_stall_monitor_spares_fibers_that_suspend_and_idle_workers() {
        let (threshold, start) = (Duration::from_millis(20), Instant::now());
        let mut watched = Watched::new(start);
        // One fiber resumed every 15 ms for a second: never 20 ms without a resume.
        for (i, ms) in (0..1000).step_by(15).enumerate() {
            let now = start + Duration::from_millis(ms);
            assert_eq!(
                watched.look(i as u64, 7, now, threshold),
                None,
                "at {ms} ms"
            );
        }
        // A worker between fibers for a second.
        let mut idle = Watched::new(start);
        for ms in (0..1000).step_by(15) {
            let now = start + Duration::from_millis(ms);
            assert_eq!(
                idle.look(3, NOT_RUNNING, now, threshold),
                None,
                "at {ms} ms"
            );
        }
    }
}
