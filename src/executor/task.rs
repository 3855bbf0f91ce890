//! The public task API, as `green::task` shows it: [`Builder`] (spawning with a name and
//! a stack size), and [`current`] with [`Current`] and [`Id`] (what a fiber knows of
//! itself). Names and ids live with the worker (`worker::info`), only for the tasks that
//! have one.

use std::fmt;
use std::io;
use std::num::NonZeroU64;
use std::sync::Arc;

use super::{Handle, try_spawn_current, try_spawn_on};
use crate::context::stack;
use crate::task::{JoinHandle, Task};
use crate::worker::{self, SpawnOptions, check_task_fits};

/// Options for a new fiber: a name and a stack size. Like
/// [`std::thread::Builder`], for fibers.
///
/// The name appears where green speaks of the fiber: the stack overflow message, the stall
/// warning ([`StallReport`](crate::StallReport)), and [`current`] in the fiber itself. A
/// stack size replaces the runtime's ([`crate::Builder::stack_size`]) for this fiber only;
/// stacks of every size come from the same process-wide pool.
///
/// A plain [`green::spawn`](crate::spawn) costs nothing of this: a task spawned without a
/// name or a stack size carries neither.
///
/// # Examples
///
/// ```
/// use green::task;
///
/// let handle = task::Builder::new()
///     .name("conn-42")
///     .stack_size(1024 * 1024)
///     .spawn(|| task::current().name().map(str::to_owned))
///     .unwrap();
/// assert_eq!(handle.join().unwrap().as_deref(), Some("conn-42"));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    /// The fiber's name.
    name: Option<Arc<str>>,
    /// The fiber's stack size, unchecked; `None` for the runtime's.
    stack_size: Option<usize>,
}

impl Builder {
    /// Options with the defaults: no name, and the runtime's stack size.
    ///
    /// # Examples
    ///
    /// ```
    /// let handle = green::task::Builder::new().spawn(|| 1 + 1).unwrap();
    /// assert_eq!(handle.join().unwrap(), 2);
    /// ```
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Names the fiber. Any string will do; names need not be unique. An `Arc<str>`
    /// is taken as it is, so one name shared by many fibers is not copied for each.
    ///
    /// # Examples
    ///
    /// ```
    /// let name = green::task::Builder::new()
    ///     .name("parser")
    ///     .spawn(|| green::task::current().name().unwrap().to_owned())
    ///     .unwrap()
    ///     .join()
    ///     .unwrap();
    /// assert_eq!(name, "parser");
    /// ```
    pub fn name(mut self, name: impl Into<Arc<str>>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// The usable size of the fiber's stack in bytes, rounded up to pages, instead of the
    /// runtime's: from [`MIN_STACK_SIZE`](crate::stack::MIN_STACK_SIZE) (16 KiB) to
    /// [`MAX_STACK_SIZE`](crate::stack::MAX_STACK_SIZE). Checked when spawning.
    ///
    /// # Examples
    ///
    /// ```
    /// // Deep recursion needs a deep stack: at least 500 KiB of frames here, more than
    /// // the default stack of 256 KiB holds.
    /// fn depth(n: u32) -> u32 {
    ///     let frame = std::hint::black_box([n; 256]); // 1 KiB per call, at least
    ///     if n == 0 { frame[0] } else { depth(n - 1) + 1 }
    /// }
    /// let handle = green::task::Builder::new()
    ///     .stack_size(4 * 1024 * 1024)
    ///     .spawn(|| depth(500))
    ///     .unwrap();
    /// assert_eq!(handle.join().unwrap(), 500);
    /// ```
    pub fn stack_size(mut self, bytes: usize) -> Builder {
        self.stack_size = Some(bytes);
        self
    }

    /// Spawns a fiber running `f` with these options: on the calling fiber's runtime, or,
    /// outside any runtime, on the global one, as [`green::spawn`](crate::spawn) does.
    ///
    /// # Errors
    ///
    /// * [`io::ErrorKind::InvalidInput`] for a stack size out of range, or one too small
    ///   for the closure `f` itself (it must fit in a quarter of the stack);
    /// * as [`Handle::try_spawn`]: no stack can be had (past `vm.max_map_count`, an error
    ///   that names that limit and how to raise it).
    ///
    /// # Examples
    ///
    /// ```
    /// use std::io::ErrorKind;
    ///
    /// let too_small = green::task::Builder::new().stack_size(4096).spawn(|| ());
    /// assert_eq!(too_small.unwrap_err().kind(), ErrorKind::InvalidInput);
    /// ```
    pub fn spawn<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let options = self.options()?;
        check_task_fits_options::<T, F>(&options)?;
        try_spawn_current(Task::spawned(Some(f)), options)
    }

    /// Spawns a fiber running `f` with these options on the runtime of `handle`, as
    /// [`Handle::try_spawn`] does.
    ///
    /// # Errors
    ///
    /// As [`Builder::spawn`].
    ///
    /// # Examples
    ///
    /// ```
    /// let runtime = green::Runtime::builder().workers(1).build().unwrap();
    /// let handle = green::task::Builder::new()
    ///     .name("on-a-runtime")
    ///     .spawn_on(&runtime.handle(), || green::task::current().name().map(str::len))
    ///     .unwrap();
    /// assert_eq!(handle.join().unwrap(), Some(12));
    /// ```
    pub fn spawn_on<F, T>(self, handle: &Handle, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        let options = self.options()?;
        check_task_fits_options::<T, F>(&options)?;
        try_spawn_on(&handle.shared, Task::spawned(Some(f)), options)
    }

    /// Spawns a fiber running `f`, which need not be `Send`, with these options, on the
    /// calling fiber's worker, where it stays, as [`green::spawn_local`](crate::spawn_local)
    /// does.
    ///
    /// # Errors
    ///
    /// As [`Builder::spawn`]; the stack is taken at once, so an error to map one comes
    /// back here too.
    ///
    /// # Panics
    ///
    /// When called outside a fiber of a green runtime.
    ///
    /// # Examples
    ///
    /// ```
    /// use std::rc::Rc;
    ///
    /// let sum = green::run(|| {
    ///     let shared = Rc::new(20);
    ///     let local = shared.clone();
    ///     let handle = green::task::Builder::new()
    ///         .name("local")
    ///         .spawn_local(move || *local + 1)
    ///         .unwrap();
    ///     handle.join().unwrap() + *shared
    /// });
    /// assert_eq!(sum, 41);
    /// ```
    pub fn spawn_local<F, T>(self, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + 'static,
        T: Send + 'static,
    {
        let options = self.options()?;
        worker::with_worker(|worker| {
            let Some(worker) = worker else {
                panic!(
                    "green::task::Builder::spawn_local must be called from a fiber of a green \
                     runtime"
                );
            };
            let (handle, task) = Task::<T, ()>::spawned(None);
            worker.start_queued(task, f, options)?;
            Ok(handle)
        })
    }

    /// The options as the worker takes them, the stack size checked and page-rounded;
    /// `None` when there are none, so that the task carries nothing.
    fn options(self) -> io::Result<Option<Box<SpawnOptions>>> {
        let stack_size = self.stack_size.map(stack::checked_size).transpose()?;
        if self.name.is_none() && stack_size.is_none() {
            return Ok(None);
        }
        Ok(Some(Box::new(SpawnOptions {
            name: self.name,
            stack_size,
        })))
    }
}

/// With a stack size of its own, checks that the task's closure fits it, as the worker will
/// when it starts the task: an error now rather than a `JoinError` then.
fn check_task_fits_options<T, F>(options: &Option<Box<SpawnOptions>>) -> io::Result<()>
where
    F: Send + 'static,
    T: Send + 'static,
{
    match options.as_ref().and_then(|options| options.stack_size) {
        Some(stack_size) => check_task_fits::<T, F>(stack_size),
        None => Ok(()),
    }
}

/// A task's id: unique among all the tasks of the process, for as long as it runs.
///
/// Given out by [`current`] the first time a task asks, or by the first fiber dump that
/// lists the task ([`FiberDump::task_id`](crate::FiberDump::task_id)), so a task that
/// never asks costs nothing; ids are never reused.
///
/// # Examples
///
/// ```
/// let (a, b) = green::run(|| {
///     let other = green::spawn(|| green::task::current().id()).join().unwrap();
///     (green::task::current().id(), other)
/// });
/// assert_ne!(a, b);
/// println!("task {a} spawned task {b}");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Id(NonZeroU64);

impl Id {
    /// The id given out as `id` (by `worker::current_task`, or to a fiber in a dump).
    pub(crate) fn new(id: NonZeroU64) -> Id {
        Id(id)
    }

    /// The id as a number, never zero.
    ///
    /// # Examples
    ///
    /// ```
    /// let id = green::run(|| green::task::current().id());
    /// assert_ne!(id.as_u64(), 0);
    /// ```
    pub fn as_u64(self) -> u64 {
        self.0.get()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// What the running task knows of itself: its [`Id`] and name. Made by [`current`].
///
/// # Examples
///
/// ```
/// green::run(|| {
///     let me = green::task::current();
///     assert_eq!(me.name(), None); // spawned by green::run, without a name
///     assert_eq!(me.id(), green::task::current().id()); // the same task
/// });
/// ```
#[derive(Debug, Clone)]
pub struct Current {
    /// The task's id.
    id: Id,
    /// The task's name, shared with its worker's list.
    name: Option<Arc<str>>,
}

impl Current {
    /// The task's id, the same for every call of [`current`] in one task.
    ///
    /// # Examples
    ///
    /// ```
    /// let same = green::run(|| {
    ///     let first = green::task::current().id();
    ///     green::yield_now();
    ///     first == green::task::current().id()
    /// });
    /// assert!(same);
    /// ```
    pub fn id(&self) -> Id {
        self.id
    }

    /// The name the task was spawned with ([`Builder::name`]), if any.
    ///
    /// # Examples
    ///
    /// ```
    /// let handle = green::task::Builder::new()
    ///     .name("worker-7")
    ///     .spawn(|| green::task::current().name() == Some("worker-7"))
    ///     .unwrap();
    /// assert!(handle.join().unwrap());
    /// ```
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }
}

/// The task whose fiber calls this: its id and name.
///
/// Unlike `std::thread::current`, which every thread can answer, this needs a task: outside
/// a fiber of a green runtime there is none, and it panics; [`try_current`] asks without
/// panicking.
///
/// # Panics
///
/// When called outside a fiber of a green runtime (on a plain thread, or on a worker's
/// thread outside its fibers, in a waker the reactor runs).
///
/// # Examples
///
/// ```
/// let handle = green::task::Builder::new()
///     .name("conn-42")
///     .spawn(|| {
///         let me = green::task::current();
///         format!("task {} ({})", me.id(), me.name().unwrap_or("unnamed"))
///     })
///     .unwrap();
/// assert!(handle.join().unwrap().ends_with("(conn-42)"));
/// ```
pub fn current() -> Current {
    try_current().expect("green::task::current must be called from a fiber of a green runtime")
}

/// The task whose fiber calls this, or `None` outside a fiber of a green runtime.
///
/// # Examples
///
/// ```
/// assert!(green::task::try_current().is_none());
/// assert!(green::run(|| green::task::try_current().is_some()));
/// ```
pub fn try_current() -> Option<Current> {
    let (id, name) = worker::current_task()?;
    Some(Current { id: Id(id), name })
}
