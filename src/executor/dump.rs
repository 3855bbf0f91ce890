//! Fiber dumps: every fiber of a runtime with what it waits on and its backtrace, as Go
//! prints every goroutine's stack on SIGQUIT ([`Runtime::dump`](super::Runtime::dump)).
//!
//! 1. The caller, if it is a fiber of the runtime, captures its own backtrace, running.
//! 2. Every worker gets an order through its injector (`worker::dump`), takes it between
//!    two turns, captures each of its fibers on the fiber's own stack, and answers.
//! 3. The caller waits for the answers (parking, if it is a fiber: its own worker answers
//!    meanwhile) until the timeout; a worker that has not taken its order by then is
//!    running one fiber without suspending, and is reported as busy in it. A worker that
//!    has begun to capture is waited for.
//! 4. The frames are resolved to names when the dump is printed, on the printing thread.

use std::backtrace::Backtrace;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use super::frames;
use super::task::Id;
use crate::block_on::await_blocking_on;
use crate::fiber::{CAPTURE_ROOM, NoBacktrace};
use crate::task::Wait;
use crate::time::Timer;
use crate::worker::{self, Answer, DumpRequest, FiberReport, NOT_RUNNING, RuntimeShared};

/// How long [`Runtime::dump`](super::Runtime::dump) waits for a worker to take its order.
pub(crate) const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1);

/// Every fiber of a runtime at one moment: what [`Runtime::dump`](super::Runtime::dump)
/// returns.
///
/// Its [`Display`](fmt::Display) prints one block per fiber, as Go prints goroutines: a
/// header with the fiber's id, name, state and worker, then its frames, innermost first, without
/// the runtime's own frames for switching and starting fibers (`{:#}` keeps them). Frames
/// are resolved to function names, files and lines when printed, which needs the
/// program's symbols (and, for files, lines and inlined functions, its debug info: see
/// the README's "Fiber dump").
///
/// # Examples
///
/// ```
/// use green::FiberState;
///
/// let runtime = green::Runtime::builder().workers(1).build().unwrap();
/// let (sender, receiver) = green::sync::channel::<u32>();
/// let waiter = runtime.spawn(move || receiver.recv().unwrap());
/// let handle = runtime.handle();
/// // Taken by a fiber, which the dump lists first, running; the waiter started before it.
/// let dump = runtime.run(move || handle.dump());
/// assert_eq!(dump.fibers()[0].state(), FiberState::Running);
/// assert_eq!(dump.fibers()[1].state(), FiberState::Parked("channel recv"));
/// println!("{dump}");
/// sender.send(7).unwrap();
/// assert_eq!(waiter.join().unwrap(), 7);
/// ```
#[derive(Debug)]
pub struct Dump {
    /// The fibers: the caller first, if it is one of the runtime's, then worker by worker.
    fibers: Vec<FiberDump>,
    /// How each worker answered, by index.
    workers: Vec<WorkerState>,
    /// Tasks spawned and not started yet (they have no stack yet) on the workers that
    /// answered.
    unstarted: usize,
    /// How long the dump waited for workers to take their order.
    timeout: Duration,
}

/// One fiber in a [`Dump`].
///
/// Its [`Display`](fmt::Display) is its block of the dump: the header line, then its
/// frames (`{:#}` keeps the runtime's own).
///
/// # Examples
///
/// ```
/// use green::FiberState;
///
/// let runtime = green::Runtime::builder().workers(1).build().unwrap();
/// let handle = runtime.handle();
/// let dump = runtime.run(move || handle.dump());
/// let me = &dump.fibers()[0];
/// assert_eq!(me.state(), FiberState::Running);
/// assert_eq!(me.worker(), 0);
/// assert!(me.backtrace().is_some());
/// // Its block: `fiber 0:1 [running] on worker 0:`, then its frames.
/// let header = me.to_string().lines().next().unwrap().to_owned();
/// assert!(header.ends_with("[running] on worker 0:"), "{header}");
/// ```
#[derive(Debug)]
pub struct FiberDump {
    /// Its (slot, generation) id on its worker, as in a [`StallReport`](crate::StallReport).
    id: u64,
    /// Its worker's index.
    worker: usize,
    /// Its task's id, as [`task::current`](crate::task::current) gives it; `None` only
    /// for the fiber a busy worker was running, if it had never been given one.
    task: Option<Id>,
    /// The name its task was spawned with, if any.
    name: Option<Arc<str>>,
    /// Running, runnable, or parked on what.
    state: FiberState,
    /// Its backtrace, or why there is none.
    trace: Result<Backtrace, String>,
}

/// What a fiber was doing when it was dumped.
///
/// # Examples
///
/// ```
/// use green::FiberState;
///
/// let runtime = green::Runtime::builder().workers(1).build().unwrap();
/// let (sender, receiver) = green::sync::channel::<u32>();
/// let waiter = runtime.spawn(move || receiver.recv().unwrap());
/// // A task that has not started has no fiber yet; once started, it parks at once.
/// let dump = loop {
///     let dump = runtime.dump();
///     if !dump.fibers().is_empty() {
///         break dump;
///     }
/// };
/// for fiber in dump.fibers() {
///     match fiber.state() {
///         FiberState::Parked(on) => assert_eq!(on, "channel recv"),
///         other => panic!("not parked: {other}"),
///     }
/// }
/// sender.send(1).unwrap();
/// waiter.join().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum FiberState {
    /// Running: the fiber that took the dump, or the one a busy worker was running (see
    /// [`WorkerState::Busy`]).
    Running,
    /// Ready to run, waiting for its turn: woken, yielded, or not started yet.
    Runnable,
    /// Parked until a wake, on what the label says: `"sleep"`, `"channel recv"`,
    /// `"channel send"`, `"I/O read"`, `"I/O write"`, `"join"`, `"mutex lock"`,
    /// `"condvar wait"`, `"barrier wait"`, `"blocking pool"` (`unblock`), `"scope"`,
    /// `"fiber dump"`, or `"future"` (`await_blocking` on a future of the user's).
    Parked(&'static str),
}

/// How a worker answered a [`Dump`].
///
/// # Examples
///
/// ```
/// use green::WorkerState;
///
/// let runtime = green::Runtime::builder().workers(2).build().unwrap();
/// let handle = runtime.handle();
/// assert_eq!(runtime.dump().workers(), [WorkerState::Answered; 2]);
/// drop(runtime);
/// assert_eq!(handle.dump().workers(), [WorkerState::ShutDown; 2]);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum WorkerState {
    /// It captured its fibers, between two turns.
    Answered,
    /// It had not taken the dump's order when the dump's timeout passed: it was running
    /// `fiber` (its id, if it ran one then) without suspending. Its fibers are not in the
    /// dump, but for that one, without a backtrace.
    Busy {
        /// The fiber it was running, if any.
        fiber: Option<u64>,
    },
    /// It had shut down.
    ShutDown,
}

impl Dump {
    /// The fibers: the caller first, if it is a fiber of the runtime, then worker by
    /// worker.
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(2).build().unwrap();
    /// let handle = runtime.handle();
    /// let dump = runtime.run(move || handle.dump());
    /// // The fiber that took it; the workers had no other.
    /// assert_eq!(dump.fibers().len(), 1);
    /// ```
    pub fn fibers(&self) -> &[FiberDump] {
        &self.fibers
    }

    /// How each worker answered, indexed by worker.
    ///
    /// # Examples
    ///
    /// ```
    /// use green::WorkerState;
    ///
    /// let runtime = green::Runtime::builder().workers(3).build().unwrap();
    /// assert_eq!(runtime.dump().workers(), [WorkerState::Answered; 3]);
    /// ```
    pub fn workers(&self) -> &[WorkerState] {
        &self.workers
    }

    /// How many tasks were spawned and had not started (they have no stack yet), on the
    /// workers that answered.
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let task = runtime.spawn(|| 1);
    /// assert_eq!(task.join().unwrap(), 1);
    /// // Every task spawned has started (and ended): none waits.
    /// let dump = runtime.dump();
    /// assert_eq!(dump.unstarted(), 0);
    /// assert!(!dump.to_string().contains("not started yet"));
    /// ```
    pub fn unstarted(&self) -> usize {
        self.unstarted
    }
}

impl FiberDump {
    /// The fiber's id on its worker (slot and generation), as in a
    /// [`StallReport`](crate::StallReport); printed as `slot:generation`.
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let handle = runtime.handle();
    /// let dump = runtime.run(move || handle.dump());
    /// let id = dump.fibers()[0].id();
    /// let printed = format!("fiber {}:{} ", id & 0xFFFF_FFFF, id >> 32);
    /// assert!(dump.to_string().contains(&printed));
    /// ```
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Its task's id, the one [`task::current`](crate::task::current) gives the task.
    ///
    /// A task is given its id the first time it asks, or when a dump lists it, whichever
    /// comes first, and keeps it. `None` only for the fiber a busy worker was running
    /// ([`WorkerState::Busy`]), if it had never been given one: only its own worker can
    /// give it one.
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let handle = runtime.handle();
    /// let (dumped, asked) = runtime.run(move || {
    ///     let dump = handle.dump();
    ///     (dump.fibers()[0].task_id(), green::task::current().id())
    /// });
    /// assert_eq!(dumped, Some(asked));
    /// ```
    pub fn task_id(&self) -> Option<Id> {
        self.task
    }

    /// The name its task was spawned with
    /// ([`task::Builder::name`](crate::task::Builder::name)), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let handle = runtime.handle();
    /// let dump = green::task::Builder::new()
    ///     .name("dumper")
    ///     .spawn_on(&runtime.handle(), move || handle.dump())
    ///     .unwrap()
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(dump.fibers()[0].name(), Some("dumper"));
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// The index of the fiber's worker (see [`FiberDump`]'s example).
    pub fn worker(&self) -> usize {
        self.worker
    }

    /// What the fiber was doing (see [`FiberState`]'s example).
    pub fn state(&self) -> FiberState {
        self.state
    }

    /// Its backtrace, captured on its own stack; `None` if it had not started, its worker
    /// was busy, or its stack had too little room left for the capture (see
    /// [`FiberDump`]'s example).
    pub fn backtrace(&self) -> Option<&Backtrace> {
        self.trace.as_ref().ok()
    }
}

impl fmt::Display for FiberState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FiberState::Running => f.write_str("running"),
            FiberState::Runnable => f.write_str("runnable"),
            FiberState::Parked(on) => write!(f, "parked: {on}"),
        }
    }
}

/// Writes a fiber id as `slot:generation`, as stall reports do.
fn write_id(f: &mut fmt::Formatter<'_>, id: u64) -> fmt::Result {
    write!(f, "{}:{}", id & 0xFFFF_FFFF, id >> 32)
}

impl fmt::Display for FiberDump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("fiber ")?;
        write_id(f, self.id)?;
        if let Some(task) = self.task {
            write!(f, " task {task}")?;
        }
        if let Some(name) = &self.name {
            write!(f, " {name:?}")?;
        }
        writeln!(f, " [{}] on worker {}:", self.state, self.worker)?;
        match &self.trace {
            Ok(backtrace) => frames::write(f, backtrace, !f.alternate()),
            Err(reason) => writeln!(f, "    (no backtrace: {reason})"),
        }
    }
}

impl fmt::Display for Dump {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "green: fiber dump: {} fibers on {} workers",
            self.fibers.len(),
            self.workers.len()
        )?;
        if self.unstarted > 0 {
            write!(f, ", {} tasks not started yet", self.unstarted)?;
        }
        writeln!(f)?;
        for (index, state) in self.workers.iter().enumerate() {
            match state {
                WorkerState::Answered => {}
                WorkerState::Busy { fiber } => {
                    write!(
                        f,
                        "\nworker {index} did not answer within {:?}: ",
                        self.timeout
                    )?;
                    match fiber {
                        Some(id) => {
                            f.write_str("it is running fiber ")?;
                            write_id(f, *id)?;
                            writeln!(f, " without suspending; its other fibers are not shown")?;
                        }
                        None => writeln!(f, "its fibers are not shown")?,
                    }
                }
                WorkerState::ShutDown => writeln!(f, "\nworker {index} has shut down")?,
            }
        }
        for fiber in &self.fibers {
            writeln!(f)?;
            if f.alternate() {
                write!(f, "{fiber:#}")?;
            } else {
                write!(f, "{fiber}")?;
            }
        }
        writeln!(f, "\ngreen: end of fiber dump")
    }
}

/// Dumps the fibers of `runtime`, waiting at most `timeout` for each worker to take its
/// order (see the module docs).
pub(crate) fn dump(runtime: &Arc<RuntimeShared>, timeout: Duration) -> Dump {
    // 1. The caller captures itself, if it is a fiber of this runtime.
    let requester = worker::requester_in(runtime);
    let mut own = None;
    if let Some((worker, id)) = requester {
        let (task, name) = worker::current_task()
            .map(|(task, name)| (Some(task), name))
            .unwrap_or_default();
        own = Some(FiberReport {
            id,
            worker,
            task,
            name,
            parked: None,
            trace: capture_here(),
        });
    }
    // 2. An order for every worker.
    let request = runtime.request_dump(requester);
    // 3. Their answers, up to the deadline for those that have not begun.
    let deadline = Instant::now().checked_add(timeout);
    let answers = WaitForAnswers {
        request: &request,
        timer: deadline.map_or_else(Timer::never, Timer::at),
        late: false,
    };
    await_blocking_on(answers, Wait::Dump);
    let answers = request.take_answers();
    // 4. The dump, the caller first.
    let mut dump = Dump {
        fibers: own.into_iter().map(FiberDump::running).collect(),
        workers: Vec::with_capacity(answers.len()),
        unstarted: 0,
        timeout,
    };
    for (index, answer) in answers.into_iter().enumerate() {
        let state = match answer {
            Some(Answer::Fibers { fibers, unstarted }) => {
                dump.fibers.extend(fibers.into_iter().map(FiberDump::from));
                dump.unstarted += unstarted;
                WorkerState::Answered
            }
            Some(Answer::Closed) => WorkerState::ShutDown,
            None => {
                let running = runtime.workers[index].running.load(Ordering::Relaxed);
                let fiber = (running != NOT_RUNNING).then_some(running);
                if let Some(id) = fiber {
                    let (task, name) = runtime.workers[index].listed_task_of(id);
                    dump.fibers.push(FiberDump {
                        id,
                        worker: index,
                        task: task.map(Id::new),
                        name,
                        state: FiberState::Running,
                        trace: Err("its worker is busy running it".into()),
                    });
                }
                WorkerState::Busy { fiber }
            }
        };
        dump.workers.push(state);
    }
    dump
}

/// A backtrace of the caller, a fiber, if its stack has room for the capture.
fn capture_here() -> Result<Backtrace, NoBacktrace> {
    let here = crate::context::stack_pointer();
    match worker::current_stack() {
        Some(stack) if !stack.contains(&here) => Err(NoBacktrace::OtherStack),
        Some(stack) if here - stack.start < CAPTURE_ROOM => {
            Err(NoBacktrace::LowStack(here - stack.start))
        }
        _ => Ok(Backtrace::force_capture()),
    }
}

impl FiberDump {
    /// The caller's own report: running.
    fn running(report: FiberReport) -> FiberDump {
        FiberDump {
            state: FiberState::Running,
            ..FiberDump::from(report)
        }
    }
}

impl From<FiberReport> for FiberDump {
    fn from(report: FiberReport) -> FiberDump {
        FiberDump {
            id: report.id,
            worker: report.worker,
            task: report.task.map(Id::new),
            name: report.name,
            state: match report.parked {
                Some(wait) => FiberState::Parked(wait.label()),
                None => FiberState::Runnable,
            },
            trace: report.trace.map_err(|reason| reason.to_string()),
        }
    }
}

/// Waits for a dump's answers: for all of them until the timer fires, then for those of
/// the workers that have begun to capture.
struct WaitForAnswers<'a> {
    /// The dump.
    request: &'a DumpRequest,
    /// Fires at the deadline.
    timer: Timer,
    /// Set once the timer has fired.
    late: bool,
}

impl Future for WaitForAnswers<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.late && Pin::new(&mut self.timer).poll(cx).is_ready() {
            self.late = true;
        }
        self.request.poll_answers(cx, !self.late)
    }
}
