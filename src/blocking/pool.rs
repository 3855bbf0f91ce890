//! The thread pool behind [`unblock`](crate::unblock): OS threads for blocking jobs,
//! started on demand. It knows nothing of fibers.
//!
//! Each runtime has its own pool, whose threads run inside the runtime's tokio context
//! (the `tokio` feature; see `tokio_context`). It starts threads on demand, up to 500 (as
//! smol's `blocking` does), and a thread that has been idle for 500 ms exits. A job is
//! handed to an idle thread only while the queue holds no more jobs than there are idle
//! threads, so jobs submitted together each get a thread of their own; they wait in a
//! FIFO queue only when the pool is at its limit and every thread is busy. Shutting the
//! runtime down waits for the pool's jobs, not for its threads' exit.
//!
//! # Shutdown
//!
//! A pool thread counts itself in for as long as it takes jobs, whatever its jobs do
//! (`Counted`), and out once it has taken its last: `shut_down` waits for that, not for
//! the thread to exit, so the thread's tokio context and thread-locals are dropped after
//! (a join would wait for them, but a runtime dropped from its own job cannot join the
//! thread it runs on, and nothing green owns needs the threads gone).
//! A runtime dropped from one of its own `unblock` jobs waits for the pool's other threads,
//! not for the thread that drops it, which exits once its job returns.

use std::cell::Cell;
use std::collections::VecDeque;
use std::ptr;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::sys::lock;
use crate::tokio_context::TokioContext;

/// Most threads the pool runs at once.
const MAX_THREADS: usize = 500;

/// How long an idle pool thread waits for work before it exits.
const IDLE_TIMEOUT: Duration = Duration::from_millis(500);

/// A job for the pool. It must not panic: [`unblock`](crate::unblock)'s wrapper catches the job's panics
/// and those of the destructors it runs.
pub(crate) type Job = Box<dyn FnOnce() + Send>;

thread_local! {
    /// The pool the calling thread works for, if it is a pool thread; null otherwise. A
    /// pool shut down from one of its own threads does not wait for that thread.
    static CURRENT_POOL: Cell<*const Pool> = const { Cell::new(ptr::null()) };
}

/// A runtime's pool of threads for blocking jobs.
pub(crate) struct Pool {
    /// Jobs and thread counts.
    state: Mutex<PoolState>,
    /// Signalled when a job is queued or the pool shuts down.
    available: Condvar,
    /// Signalled when a thread has counted itself out (its thread-local destructors may
    /// still run after that).
    exited: Condvar,
    /// The CPUs the pool's threads run on, set when the workers are pinned (the threads,
    /// started from a worker, would otherwise inherit its one CPU); empty: inherited.
    cpus: Vec<usize>,
    /// The time slice the pool's threads ask the kernel for, set when the workers ask for
    /// one of their own (the threads would otherwise inherit it); `None`: inherited.
    slice: Option<Duration>,
    /// The tokio runtime the pool's threads enter for their whole life.
    tokio: TokioContext,
}

/// What the pool's lock guards.
struct PoolState {
    /// Jobs not yet taken by a thread.
    queue: VecDeque<Job>,
    /// Threads alive: counted in by `submit` before the thread starts, out by the
    /// thread under the lock that decides it exits (or by its [`Counted`] guard if it
    /// ends otherwise, by a panic).
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Set at shutdown: idle threads exit at once.
    closed: bool,
}

impl Pool {
    /// An empty pool; threads start on demand, on `cpus` (see `Pool::cpus`) with `slice`
    /// (see `Pool::slice`), inside the context of `tokio`.
    pub(crate) fn new(cpus: Vec<usize>, slice: Option<Duration>, tokio: TokioContext) -> Arc<Pool> {
        Arc::new(Pool {
            state: Mutex::new(PoolState {
                queue: VecDeque::new(),
                threads: 0,
                idle: 0,
                closed: false,
            }),
            available: Condvar::new(),
            exited: Condvar::new(),
            cpus,
            slice,
            tokio,
        })
    }

    /// Queues a job, waking an idle thread for it if there is one to spare, else starting a
    /// thread if the limit allows.
    ///
    /// A thread woken for a job counts as idle until it takes the lock again, so `idle`
    /// alone would count it for every job queued in that moment: those jobs would queue
    /// behind it, and jobs that wait for each other would hang. The idle threads serve
    /// at most one queued job each; a job beyond them gets a new thread.
    pub(crate) fn submit(self: &Arc<Self>, job: Job) {
        let mut state = lock(&self.state);
        state.queue.push_back(job);
        if state.queue.len() <= state.idle {
            self.available.notify_one();
        } else if state.threads < MAX_THREADS {
            state.threads += 1;
            let pool = self.clone();
            let spawned = thread::Builder::new()
                .name("green-blocking".into())
                .spawn(move || pool.tokio.enter_for(|| pool.work()));
            if spawned.is_err() {
                // Run on the threads there are; with none at all, run here rather than hang.
                state.threads -= 1;
                if state.threads == 0 {
                    let job = state.queue.pop_back();
                    drop(state);
                    if let Some(job) = job {
                        job();
                    }
                }
            }
        }
    }

    /// A pool thread: takes jobs until idle for `IDLE_TIMEOUT` or the pool closes.
    fn work(&self) {
        // First: from here on, the thread counts itself out when it ends, even by a panic.
        let mut counted = Counted::new(self);
        if !self.cpus.is_empty() {
            crate::sys::set_thread_affinity(&self.cpus);
        }
        if let Some(slice) = self.slice {
            crate::sys::set_thread_slice(slice);
        }
        let mut state = lock(&self.state);
        loop {
            if let Some(job) = state.queue.pop_front() {
                drop(state);
                job();
                state = lock(&self.state);
                continue;
            }
            if state.closed {
                break;
            }
            state.idle += 1;
            let (next, timeout) = self
                .available
                .wait_timeout(state, IDLE_TIMEOUT)
                .unwrap_or_else(|e| e.into_inner());
            state = next;
            state.idle -= 1;
            if timeout.timed_out() && state.queue.is_empty() {
                break;
            }
        }
        // Count out under the lock that decided to exit: counted on until `counted` drops,
        // the thread could keep a `submit` at the limit from starting a thread for a job
        // that this thread will never take.
        state.threads -= 1;
        counted.counted_out = true;
    }

    /// How many threads the pool has, and how many of them wait for a job (for
    /// `test_support`).
    pub(crate) fn thread_counts(&self) -> (usize, usize) {
        let state = lock(&self.state);
        (state.threads, state.idle)
    }

    /// Whether the calling thread is one of this pool's threads.
    fn is_current(&self) -> bool {
        CURRENT_POOL.with(|pool| ptr::eq(pool.get(), self))
    }

    /// Stops the pool: idle threads exit, busy ones once their jobs (and the queued ones)
    /// are done. Waits until `deadline` (`None`: as long as it takes) for every thread to
    /// count itself out, after its last job and before its thread-local destructors run;
    /// returns whether they all did. Called from one of the pool's own threads (a
    /// runtime dropped in an `unblock` job), it waits for the others: the caller's thread
    /// exits once its job returns, and waiting for it would wait for ever.
    pub(crate) fn shut_down(&self, deadline: Option<Instant>) -> bool {
        let own_thread = usize::from(self.is_current());
        let mut state = lock(&self.state);
        state.closed = true;
        self.available.notify_all();
        while state.threads > own_thread {
            state = match deadline {
                None => self.exited.wait(state).unwrap_or_else(|e| e.into_inner()),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    self.exited
                        .wait_timeout(state, left)
                        .unwrap_or_else(|e| e.into_inner())
                        .0
                }
            };
        }
        true
    }
}

/// A pool thread's place in [`PoolState::threads`], and its mark in [`CURRENT_POOL`]: made
/// as the thread starts, it counts the thread out and wakes `shut_down` when dropped, so
/// that the count follows the thread even if the thread ends by a panic.
struct Counted<'a> {
    /// The pool the thread works for.
    pool: &'a Pool,
    /// Set once the thread counted itself out (as it decides to exit, under the lock that
    /// decided it); dropping then only wakes `shut_down`.
    counted_out: bool,
}

impl<'a> Counted<'a> {
    /// Marks the calling thread as one of `pool`'s; `submit` counted it in already.
    fn new(pool: &'a Pool) -> Counted<'a> {
        CURRENT_POOL.with(|current| current.set(pool));
        Counted {
            pool,
            counted_out: false,
        }
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        CURRENT_POOL.with(|current| current.set(ptr::null()));
        if !self.counted_out {
            lock(&self.pool.state).threads -= 1;
        }
        self.pool.exited.notify_all();
    }
}
