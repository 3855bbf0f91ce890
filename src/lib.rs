//! # green
//!
//! A stackful async executor: green threads on guarded stacks that can block on futures.
//!
//! Every spawned fiber runs on a stack of its own. Plain synchronous code in a fiber
//! (`stream.read(&mut buf)?`, [`sleep`], [`JoinHandle::join`]) parks only that fiber while
//! the worker runs the others, and [`await_blocking`] waits for any
//! [`std::future::Future`] from a normal function.
//!
//! ```
//! use std::io::{Read, Write};
//! use green::net::{TcpListener, TcpStream};
//!
//! let echoed = green::run(|| {
//!     let listener = TcpListener::bind("127.0.0.1:0").unwrap();
//!     let address = listener.local_addr().unwrap();
//!     // One fiber per connection, written as blocking code.
//!     let server = green::spawn(move || {
//!         let (mut stream, _) = listener.accept().unwrap();
//!         let mut buf = [0; 5];
//!         stream.read_exact(&mut buf).unwrap();
//!         stream.write_all(&buf).unwrap();
//!     });
//!     let mut client = TcpStream::connect(address).unwrap();
//!     client.write_all(b"hello").unwrap();
//!     let mut reply = [0; 5];
//!     client.read_exact(&mut reply).unwrap();
//!     server.join().unwrap();
//!     reply
//! });
//! assert_eq!(&echoed, b"hello");
//! ```
//!
//! # Platforms
//!
//! | target                        | switch      | tested                  |
//! |-------------------------------|-------------|-------------------------|
//! | `x86_64-unknown-linux-gnu`    | SysV        | native, Valgrind        |
//! | `riscv64gc-unknown-linux-gnu` | LP64D       | QEMU user mode          |
//! | `aarch64-unknown-linux-gnu`   | AAPCS64     | QEMU user mode          |
//!
//! # Tokio
//!
//! With the `tokio` feature, fibers run inside a tokio runtime's context, so futures of
//! tokio and of the crates built on it (hyper, reqwest, tonic) can be made and awaited
//! from plain functions in fibers:
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! use std::time::{Duration, Instant};
//!
//! let slept = green::run(|| {
//!     let start = Instant::now();
//!     green::await_blocking(tokio::time::sleep(Duration::from_millis(5)));
//!     start.elapsed()
//! });
//! assert!(slept >= Duration::from_millis(5));
//! # }
//! ```
//!
//! Each worker thread enters the runtime's handle (`tokio::runtime::Handle::enter`) once,
//! for its whole life, so every fiber on it has the context; so does each thread of the
//! blocking pool ([`unblock`]), and [`block_on`] on a plain thread that has no tokio
//! context of its own enters it for the length of the call. The runtime is the one given
//! to `Builder::tokio_handle`, or else one that green starts for the whole process on
//! first use: a current-thread tokio runtime on a thread of its own ("green-tokio"),
//! which drives tokio's I/O and timers while green polls the futures in the fibers that
//! wait for them. Tasks spawned with `tokio::spawn` run on that thread, so they must not
//! block it: they `.await` green's futures and `JoinHandle`s, and [`block_on`] there
//! panics (as tokio's own `block_on` does inside a runtime) rather than stop tokio's
//! timers and sockets for the whole process.
//!
//! ## Entering another tokio runtime in a fiber
//!
//! A fiber may enter another runtime (`other.enter()`, or `other.block_on(..)`), but must
//! leave it before it blocks (parks in a green call, or yields): the worker's other fibers
//! run on the same thread meanwhile and would run in that context, and tokio requires the
//! guards of one thread to be dropped in the reverse order of entering, which fibers that
//! interleave would break. So a fiber that blocks inside another runtime's context panics,
//! with a message from green that says so, before any other fiber runs; the panic drops
//! its guard as it unwinds and the worker goes on in its own context. (If the fiber is
//! unwinding already, a destructor that blocks during a panic, the process aborts with
//! that message, as for any panic during a panic.)
//!
//! What works instead: make tokio's objects inside a short `enter` and wait outside it
//! (a timer or a socket belongs to the runtime it was made in), spawn the work onto the
//! other runtime and wait for its `JoinHandle`, or enter the runtime around each poll:
//!
//! ```
//! # #[cfg(feature = "tokio")] {
//! use std::future::Future;
//! use std::pin::pin;
//! use std::task::Poll;
//! use std::time::Duration;
//!
//! /// `fut`, polled inside `handle`'s context.
//! fn polled_in<F: Future>(handle: tokio::runtime::Handle, fut: F) -> F::Output {
//!     let mut fut = pin!(fut);
//!     green::await_blocking(std::future::poll_fn(|cx| {
//!         let _guard = handle.enter(); // dropped before await_blocking parks
//!         fut.as_mut().poll(cx)
//!     }))
//! }
//!
//! let other = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
//! let handle = other.handle().clone();
//! std::thread::spawn(move || other.block_on(std::future::pending::<()>()));
//!
//! green::run(move || {
//!     let sleep = {
//!         let _guard = handle.enter();
//!         tokio::time::sleep(Duration::from_millis(1)) // on `other`'s timer
//!     };
//!     green::await_blocking(sleep);
//!     polled_in(handle, async {
//!         tokio::time::sleep(Duration::from_millis(1)).await; // made inside the poll
//!     });
//! });
//! # }
//! ```
//!
//! The check compares runtime ids: entering the worker's own runtime a second time is not
//! seen. That context is the right one for every fiber, but two such guards held across
//! parks by two fibers and dropped out of order still meet tokio's own panic ("`EnterGuard`
//! values dropped out of order").
//!
//! ## Which runtime outlives which, and panics
//!
//! - A tokio object (a timer, a socket, a `tokio::spawn`ed task) belongs to the runtime
//!   it was made in. The process-wide runtime never shuts down, so objects made in fibers
//!   keep working after their green runtime is dropped ([`block_on`] them on a plain
//!   thread, or in another runtime's fibers).
//! - A runtime given to `Builder::tokio_handle` must outlive the green runtime:
//!   [`Builder::build`] refuses the handle of one that has shut down already, and after
//!   it shuts down tokio's objects fail as tokio says (see that method's `# Shutdown`).
//! - Dropping a green runtime unwinds the fibers that wait on tokio futures, which drops
//!   those futures, as for any other.
//! - On a plain thread, [`block_on`] enters the context for the call only, around the
//!   poll: a tokio future made *before* the call, outside any context, panics in tokio's
//!   constructor ("there is no reactor running"), as it does before tokio's own
//!   `Runtime::block_on`. Make it inside the future: `green::block_on(async {
//!   tokio::time::sleep(d).await })`.
//! - A panic inside a tokio-bound future goes where any panic in a fiber goes, to its
//!   `JoinHandle` (or [`block_on`]'s caller, which is left outside the context); a
//!   panic in a `tokio::spawn`ed task is tokio's `JoinError`, and the process-wide
//!   runtime goes on.
//!
//! # Implementation
//!
//! The modules, in the order data flows through them. A spawn goes down: `spawn` →
//! `task` → `worker` → `fiber` → `context`. A wait comes back up: `await_blocking` →
//! `task` (its waker) → `reactor` (or any other waker) → `task` (the wake) → `worker`
//! (the resume). No module imports one above it.
//!
//! ```text
//!   context/      the machine: guarded mmap'd stacks and their process-wide pool (stack/),
//!                 the switch per architecture (x86_64.rs, riscv64.rs, aarch64.rs: inline
//!                 assembly, a naked entry trampoline with hand-written unwind info), and
//!                 the SIGSEGV handler that names a fiber overflowing its stack
//!   fiber         Fiber<T>: a closure on a stack; resume, suspend, panics caught at its
//!                 entry, forced unwinding when dropped; fiber/builder.rs its options,
//!                 fiber/capture.rs a backtrace taken on a suspended fiber's own stack
//!   task/         what a spawned fiber shares with its wakers and its JoinHandle: the
//!                 header and reference count (mod.rs), the park and cancel words with
//!                 every transition (state.rs), the waker vtable (waker.rs), wait-list
//!                 registrations (waiter.rs), the join cell and JoinHandle (join.rs),
//!                 JoinError (error.rs), what a parked fiber waits on (wait.rs); it
//!                 reaches its scheduler through `Schedule`.
//!                 public.rs is `green::task`, the layer's public face, which mounts it
//!   reactor       a polling::Poller per worker: I/O sources, per-direction waiters, timers;
//!                 and one for waits outside fibers, driven by a thread of its own
//!   blocking/     the thread pool (pool.rs) and `unblock` on it (mod.rs)
//!   worker/       one OS thread: the loop and resume (mod.rs), the running fiber's park
//!                 and yield (current.rs), the typed run queue (queue.rs), what other
//!                 threads touch (shared.rs), tasks waiting to start (unstarted.rs),
//!                 the names, ids and stack sizes of the fibers that have them (info.rs),
//!                 placement, idling and stealing, shutdown, a worker's part of a fiber
//!                 dump (dump.rs)
//!   executor      Runtime, Handle, spawn, run, yield_now; executor/builder.rs Builder,
//!                 executor/stall.rs the stall monitor, executor/task.rs task::Builder
//!                 and task::current, executor/dump.rs fiber dumps (frames.rs how they
//!                 print, signal.rs Builder::dump_on_signal)
//!   block_on      the blocking calls: await_blocking, block_on, JoinHandle::join
//!   scope         scoped fibers, which borrow from their caller: scope, Scope,
//!                 ScopedJoinHandle, on top of spawn and join
//!   io, net/, time, sync/   what users call, built on the layers above
//!   sys           a lock that ignores poison, catching user panics, CPU system calls,
//!                 Valgrind client requests, the recycled memory of small tasks (blocks.rs)
//!   tokio_context the tokio runtime context that worker, pool and block_on threads enter
//!                 (the `tokio` feature), and the check that a fiber left any other one
//!                 before it parks
//!   loom          the atomics, locks and cells of the state machines above: std's, or
//!                 loom's under `--cfg loom`, for the models in tests/loom_*.rs
//! ```

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::undocumented_unsafe_blocks
)]

mod block_on;
mod blocking;
mod context;
mod executor;
pub mod fiber;
pub mod io;
#[cfg(loom)]
#[doc(hidden)]
pub mod loom;
#[cfg(not(loom))]
mod loom;
pub mod net;
mod reactor;
mod scope;
pub mod sync;
mod sys;
// `green::task` is the task layer's public face (src/task/public.rs), which mounts the
// layer itself (src/task/mod.rs) and passes its items on to the crate.
#[path = "task/public.rs"]
pub mod task;
#[doc(hidden)]
pub mod test_support;
pub mod time;
mod tokio_context;
mod worker;

pub use block_on::{await_blocking, block_on};
pub use blocking::unblock;
pub use context::stack;
pub use executor::StallReport;
pub use executor::{
    Builder, Handle, Runtime, in_fiber, run, spawn, spawn_local, try_spawn, yield_now,
};
pub use executor::{Dump, FiberDump, FiberState, WorkerState};
pub use scope::{Scope, ScopedJoinHandle, scope};
pub use task::{JoinError, JoinHandle, is_cancellation};
pub use time::{sleep, sleep_until};

/// Runs `fn main`'s body as the main fiber of a green runtime, and returns what it
/// returns.
///
/// Without settings the body runs under [`run`] (the default runtime: one worker per
/// CPU). `workers = N` and `stack_size = BYTES` (any expressions) build a runtime with
/// [`Runtime::builder`] instead. The function takes no parameters and is not `async`:
/// its body is plain synchronous code that may block (call [`await_blocking`] to wait for
/// a future). Behind the `macros` feature, on by default.
///
/// # Panics
///
/// If the runtime cannot be built (a stack size out of range, no threads left).
///
/// # Examples
///
/// ```
/// #[green::main]
/// fn main() -> std::io::Result<()> {
///     let answer = green::spawn(|| 6 * 7).join().unwrap();
///     assert_eq!(answer, 42);
///     Ok(())
/// }
/// ```
///
/// ```
/// #[green::main(workers = 1, stack_size = 64 * 1024)]
/// fn main() {
///     green::sleep(std::time::Duration::from_millis(1));
/// }
/// ```
///
/// An `async fn` is refused, with a message that says what to write instead:
///
/// ```compile_fail
/// #[green::main]
/// async fn main() {}
/// ```
#[cfg(feature = "macros")]
pub use green_macros::main;

/// Runs a test's body as the main fiber of a runtime of its own, built for the test and
/// shut down after it (tests run in parallel, each with its own runtime).
///
/// Takes `workers = N` and `stack_size = BYTES` as [`macro@main`] does; other attributes
/// on the test (`#[should_panic]`, `#[ignore]`) stay. Behind the `macros` feature, on by
/// default.
///
/// # Examples
///
/// ```
/// #[green::test(workers = 1)]
/// fn two_fibers_share_a_channel() {
///     let (tx, rx) = green::sync::channel();
///     green::spawn(move || tx.send(7).unwrap());
///     assert_eq!(rx.recv().unwrap(), 7);
/// }
/// # fn main() {}
/// ```
#[cfg(feature = "macros")]
pub use green_macros::test;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
