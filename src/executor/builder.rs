//! [`Builder`]: a runtime's configuration, and starting its threads.

use std::ffi::c_int;
use std::io;
use std::sync::{Arc, Condvar, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use super::{Runtime, StallReport, signal, stall};
use crate::blocking::pool::Pool;
use crate::context::stack::{self, DEFAULT_STACK_SIZE};
use crate::sys;
use crate::tokio_context::TokioContext;
use crate::worker::{RuntimeShared, Worker, WorkerShared};

/// The hook that receives stall reports.
type StallHook = Arc<dyn Fn(&StallReport) + Send + Sync>;

/// The stall monitor's stop flag, with the condition variable that interrupts its sleep.
pub(super) type StopSignal = Arc<(Mutex<bool>, Condvar)>;

/// The time slice worker threads ask the kernel for unless told otherwise (see
/// [`Builder::worker_slice`]).
const DEFAULT_WORKER_SLICE: Duration = Duration::from_micros(200);

/// Configures a [`Runtime`].
///
/// # Examples
///
/// ```
/// let runtime = green::Runtime::builder().workers(2).stack_size(64 * 1024).build().unwrap();
/// assert_eq!(runtime.run(|| 1 + 1), 2);
/// ```
#[derive(Clone)]
pub struct Builder {
    /// Stack size of every fiber.
    stack_size: usize,
    /// Number of workers; `None`: the available parallelism.
    workers: Option<usize>,
    /// Name of the worker threads.
    name: String,
    /// Report fibers that run longer than this without suspending.
    stall_warning: Option<Duration>,
    /// Where stall reports go; stderr when `None`.
    stall_hook: Option<StallHook>,
    /// Pin each worker thread to one CPU.
    pin_workers: bool,
    /// The time slice the worker threads ask the kernel for; `None`: inherited.
    worker_slice: Option<Duration>,
    /// The tokio runtime whose context the runtime's threads enter; `None`: the
    /// process-wide one green starts.
    #[cfg(feature = "tokio")]
    tokio_handle: Option<tokio::runtime::Handle>,
    /// Print a fiber dump to stderr on this signal.
    dump_signal: Option<c_int>,
}

impl std::fmt::Debug for Builder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut debug = f.debug_struct("Builder");
        debug
            .field("stack_size", &self.stack_size)
            .field("workers", &self.workers)
            .field("name", &self.name)
            .field("stall_warning", &self.stall_warning)
            .field("pin_workers", &self.pin_workers)
            .field("worker_slice", &self.worker_slice)
            .field("dump_signal", &self.dump_signal);
        #[cfg(feature = "tokio")]
        debug.field("tokio_handle", &self.tokio_handle);
        debug.finish_non_exhaustive()
    }
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            stack_size: DEFAULT_STACK_SIZE,
            workers: None,
            name: "green-worker".into(),
            stall_warning: None,
            stall_hook: None,
            pin_workers: false,
            worker_slice: Some(DEFAULT_WORKER_SLICE),
            #[cfg(feature = "tokio")]
            tokio_handle: None,
            dump_signal: None,
        }
    }
}

impl Builder {
    /// The usable stack size of every fiber, in bytes (rounded up to pages). The default
    /// is [`DEFAULT_STACK_SIZE`](crate::stack::DEFAULT_STACK_SIZE), 256 KiB.
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = bytes;
        self
    }

    /// The number of workers (OS threads running fibers). The default is
    /// `std::thread::available_parallelism()`.
    pub fn workers(mut self, workers: usize) -> Builder {
        self.workers = Some(workers);
        self
    }

    /// The name of the worker threads.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = name.into();
        self
    }

    /// Pins worker `i` to the `i`-th CPU the process may run on (round robin when there
    /// are more workers than CPUs). Off by default.
    ///
    /// A started fiber never leaves its worker, so a pinned worker is a CPU: a connection
    /// accepted with [`TcpListener::accept`](crate::net::TcpListener::accept) is then
    /// served on the CPU that handles its packets (see [Placement](Runtime#placement)),
    /// with its socket buffers in that CPU's cache. This is the thread-per-core layout of
    /// a dedicated server. Leave it off when the runtime shares the machine: a pinned
    /// worker cannot move to an idle CPU when another process (or another runtime, which
    /// pins to the same CPUs) keeps its own CPU busy.
    ///
    /// Pinning is best effort: where `sched_setaffinity` is refused, workers run unpinned.
    /// The CPUs are those the thread calling `build` may run on. The threads of the
    /// blocking pool ([`unblock`](crate::unblock)) run on all of them; a thread started
    /// with `std::thread::spawn` from a fiber inherits its worker's CPU.
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(2).pin_workers(true).build().unwrap();
    /// assert_eq!(runtime.run(|| 1 + 1), 2);
    /// ```
    pub fn pin_workers(mut self, pin: bool) -> Builder {
        self.pin_workers = pin;
        self
    }

    /// The time slice each worker thread asks the kernel for; 200 µs by default, `None`
    /// to leave the workers with the slice of the thread that calls `build`.
    ///
    /// A worker runs many fibers, each for a few microseconds between two waits, and
    /// sleeps in its reactor when none is ready. What delays a fiber woken by I/O is the
    /// time its worker spends waiting for a CPU that other threads hold. Linux (6.12 and
    /// later, under its EEVDF scheduler) lets a thread ask for a shorter slice: the thread
    /// gets no more CPU time than before, but an earlier deadline, so it runs sooner when
    /// it wakes, for less long at a time. The runtime asks with `sched_setattr` (no
    /// privilege needed), keeping the thread's policy and nice value. The kernel clamps
    /// the request to 0.1-100 ms; zero asks for its default slice. Best effort: older
    /// kernels ignore the request, and threads outside the normal (fair) classes, such
    /// as real-time ones, are left as they are.
    ///
    /// Measured on two CPUs with 64 client threads talking to the runtime's two workers
    /// (scenario S4 of the README's "Performance"), 200 µs cut the 99th percentile of a
    /// round trip from 11 ms to 3.4 ms at the same throughput, while the median rose from
    /// 25-35 µs to 50-85 µs: shorter turns trade a little median for much less tail.
    ///
    /// The threads of the blocking pool ([`unblock`](crate::unblock)) run with the slice
    /// of the thread that called `build`; a thread started with `std::thread::spawn` from
    /// a fiber inherits its worker's.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let runtime = green::Runtime::builder()
    ///     .worker_slice(Some(Duration::from_millis(1)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(runtime.run(|| 1 + 1), 2);
    /// ```
    pub fn worker_slice(mut self, slice: Option<Duration>) -> Builder {
        self.worker_slice = slice;
        self
    }

    /// The tokio runtime whose context the runtime's fibers run in (the `tokio` feature):
    /// tokio-bound futures made or polled in a fiber register their timers and sockets
    /// with it. Without this setting, every green runtime of the process shares one tokio
    /// runtime that green starts on first use (a current-thread runtime on a thread of its
    /// own).
    ///
    /// The worker threads enter the handle (`Handle::enter`) for their whole life, and so
    /// do the threads of the blocking pool ([`unblock`](crate::unblock)). The futures
    /// are still polled by green, in the fibers that wait for them: the tokio runtime
    /// must only drive its I/O and timers, which a multi-thread runtime's workers do, and
    /// a current-thread runtime only while some thread blocks on it.
    ///
    /// A fiber may enter another runtime itself, but must leave it before it blocks: see
    /// [Tokio](crate#tokio).
    ///
    /// # Shutdown
    ///
    /// The tokio runtime must outlive the green runtime, and every tokio object made in
    /// its fibers. [`Builder::build`] refuses a handle whose runtime has shut down
    /// already; one that shuts down later fails as tokio fails for any of its objects
    /// whose runtime is gone: a timer panics in the fiber that polls it ("A Tokio 1.x
    /// context was found, but it is being shutdown."), a socket returns that as an
    /// error, and `tokio::spawn` gives a `JoinHandle` that returns a cancelled
    /// `JoinError`. The process-wide runtime used without this setting never shuts
    /// down: tokio objects made in fibers work after their green runtime is dropped.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::time::Duration;
    ///
    /// let tokio = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    /// let handle = tokio.handle().clone();
    /// // A current-thread runtime runs its timers while a thread blocks on it.
    /// std::thread::spawn(move || tokio.block_on(std::future::pending::<()>()));
    ///
    /// let runtime = green::Runtime::builder().tokio_handle(handle.clone()).build().unwrap();
    /// let id = runtime.run(|| {
    ///     green::await_blocking(tokio::time::sleep(Duration::from_millis(1)));
    ///     tokio::runtime::Handle::current().id()
    /// });
    /// assert_eq!(id, handle.id());
    /// ```
    #[cfg(feature = "tokio")]
    pub fn tokio_handle(mut self, handle: tokio::runtime::Handle) -> Builder {
        self.tokio_handle = Some(handle);
        self
    }

    /// Reports, once per occurrence, a fiber that runs longer than `threshold` without
    /// suspending: such a fiber blocks every other fiber of its worker, the most common bug
    /// of cooperative runtimes. Reports go to stderr, or to [`Builder::on_stall`]'s hook.
    ///
    /// A monitor thread samples each worker a few times per `threshold` (at most every
    /// 100 ms); the workers themselves only bump a counter per resume.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::sync::{Arc, Mutex};
    /// use std::time::Duration;
    ///
    /// let reports = Arc::new(Mutex::new(Vec::new()));
    /// let sink = reports.clone();
    /// let runtime = green::Runtime::builder()
    ///     .stall_warning(Duration::from_millis(20))
    ///     .on_stall(move |report| sink.lock().unwrap().push(report.worker))
    ///     .build()
    ///     .unwrap();
    /// // Hogs its worker: std's sleep blocks the thread, green::sleep would park the fiber.
    /// runtime.run(|| std::thread::sleep(Duration::from_millis(200)));
    /// assert_eq!(reports.lock().unwrap().len(), 1);
    /// ```
    pub fn stall_warning(mut self, threshold: Duration) -> Builder {
        self.stall_warning = Some(threshold);
        self
    }

    /// Where stall reports go (see [`Builder::stall_warning`]), instead of stderr.
    ///
    /// The hook runs on the stall monitor's thread. A panic in it is caught and reported
    /// on stderr, and the hook is called again for the next stall. The runtime's shutdown
    /// waits for a hook that is running: one that blocks (until the runtime has shut
    /// down, say) holds the shutdown up.
    pub fn on_stall(mut self, hook: impl Fn(&StallReport) + Send + Sync + 'static) -> Builder {
        self.stall_hook = Some(Arc::new(hook));
        self
    }

    /// Prints a fiber dump of the runtime ([`Runtime::dump`]) to stderr each time the
    /// process receives `signal`, as Go prints every goroutine's stack on `SIGQUIT`:
    /// `kill -QUIT <pid>` then shows what every fiber is doing, without stopping the
    /// process. Off by default.
    ///
    /// The signal's handler only writes the signal's number to a pipe (an
    /// async-signal-safe call); a thread of green's, `green-dump`, reads it, takes the
    /// dump and prints it. The handler replaces the signal's previous action (for
    /// `SIGQUIT`, ending the process with a core dump) until the runtime shuts down.
    /// Several runtimes may ask for the same signal: each is dumped.
    ///
    /// # Errors
    ///
    /// [`build`](Builder::build) fails with [`io::ErrorKind::InvalidInput`] for a signal
    /// that cannot be caught (`SIGKILL`, `SIGSTOP`) or that reports a fault (`SIGSEGV`,
    /// `SIGBUS`, `SIGILL`, `SIGFPE`, `SIGTRAP`, `SIGABRT`).
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder()
    ///     .dump_on_signal(libc::SIGQUIT)
    ///     .build()
    ///     .unwrap();
    /// // From another terminal, `kill -QUIT <pid>` prints every fiber's stack to stderr.
    /// assert_eq!(runtime.run(|| 6 * 7), 42);
    /// ```
    pub fn dump_on_signal(mut self, signal: c_int) -> Builder {
        self.dump_signal = Some(signal);
        self
    }

    /// Starts the runtime.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a stack size out of range (below 16 KiB or above
    /// 16 GiB), zero workers, a signal [`dump_on_signal`](Builder::dump_on_signal) cannot
    /// use, or (the `tokio` feature) a `Builder::tokio_handle` whose runtime has shut
    /// down; otherwise what creating a poller, a thread or a signal handler returns (or,
    /// with the `tokio` feature, starting the process-wide tokio runtime).
    pub fn build(self) -> io::Result<Runtime> {
        // Check the size now rather than at the first spawn; it is the runtime's fibers'
        // default, so the stack pool reserves full batches of it from the start.
        stack::make_common(self.stack_size)?;
        let count = match self.workers {
            Some(0) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "a runtime needs at least one worker",
                ));
            }
            Some(n) => n,
            None => thread::available_parallelism().map_or(1, |n| n.get()),
        };
        let workers = (0..count)
            .map(|i| WorkerShared::new(i).map(Arc::new))
            .collect::<io::Result<Vec<_>>>()?;
        let cpus = if self.pin_workers {
            sys::allowed_cpus()
        } else {
            Vec::new()
        };
        #[cfg(feature = "tokio")]
        let tokio = TokioContext::for_runtime(self.tokio_handle.clone())?;
        #[cfg(not(feature = "tokio"))]
        let tokio = TokioContext::default();
        // Pool threads are started by workers and would inherit their pinning and slice:
        // they get the whole mask and this thread's slice back.
        let inherited_slice = self.worker_slice.and(sys::thread_slice());
        let shared = Arc::new(RuntimeShared::new(
            workers,
            self.stack_size,
            Pool::new(cpus.clone(), inherited_slice, tokio.clone()),
            !cpus.is_empty(),
        ));
        let (exited_sender, exited) = mpsc::channel();
        let mut runtime = Runtime {
            shared: shared.clone(),
            threads: Vec::new(),
            exited: Mutex::new(exited),
            monitor: None,
            shut_down: false,
            dump_signal: None,
        };
        for worker_shared in &shared.workers {
            let (runtime_shared, worker_shared, exited_sender, tokio) = (
                shared.clone(),
                worker_shared.clone(),
                exited_sender.clone(),
                tokio.clone(),
            );
            let name = format!("{}-{}", self.name, worker_shared.index);
            let cpu = (!cpus.is_empty()).then(|| cpus[worker_shared.index % cpus.len()]);
            let slice = self.worker_slice;
            // On error, `runtime` drops here and stops the workers already started.
            let thread = thread::Builder::new().name(name).spawn(move || {
                if let Some(cpu) = cpu {
                    sys::set_thread_affinity(&[cpu]); // best effort
                }
                if let Some(slice) = slice {
                    sys::set_thread_slice(slice); // best effort
                }
                let abandoned =
                    tokio.enter_for(|| Worker::new(runtime_shared, worker_shared).run());
                let _ = exited_sender.send((thread::current().id(), abandoned));
                if abandoned {
                    // Fibers left suspended here may lend out this thread's thread-locals:
                    // it must never exit and free them (see `Worker::abandon_fibers`). What
                    // it holds for the runtime goes first, and its idle stacks go to the
                    // process-wide pool, as they would if it exited.
                    drop((exited_sender, tokio));
                    stack::trim_pools();
                    loop {
                        thread::park();
                    }
                }
            })?;
            runtime.threads.push(thread);
        }
        if let Some(threshold) = self.stall_warning {
            let hook = self
                .stall_hook
                .unwrap_or_else(|| Arc::new(|report: &StallReport| eprintln!("{report}")));
            let stop = Arc::new((Mutex::new(false), Condvar::new()));
            let (monitor_shared, monitor_stop) = (shared.clone(), stop.clone());
            let thread = thread::Builder::new()
                .name(format!("{}-monitor", self.name))
                .spawn(move || {
                    stall::monitor_stalls(
                        monitor_shared,
                        threshold,
                        hook,
                        &monitor_stop.0,
                        &monitor_stop.1,
                    )
                })?;
            runtime.monitor = Some((thread, stop));
        }
        if let Some(signal) = self.dump_signal {
            runtime.dump_signal = Some(signal::dump_on_signal(signal, &shared)?);
        }
        Ok(runtime)
    }
}
