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
//! # Implementation
//!
//! The modules, from the machine up:
//!
//! * `context`: the stack switch (per architecture, inline assembly that splits a call and
//!   its matching return across the two stacks, so the CPU predicts every switch, and a
//!   naked entry trampoline with hand-written unwind information so backtraces walk from a
//!   fiber into its resumer), `mmap`'d stacks with a guard page and a per-thread pool
//!   ([`stack`]), and the SIGSEGV handler that reports a fiber overflowing its stack.
//! * [`fiber`]: `Fiber<T>`: resume and suspend, panics caught at the fiber's entry, forced
//!   unwinding of a fiber dropped while suspended. Usable on its own as a coroutine.
//! * `executor` ([`Runtime`], [`spawn`]): a worker thread per runtime that runs fibers
//!   round robin from a slab; wakes from other threads arrive through a lock-free injector.
//! * `reactor`: a `polling::Poller` per worker, with I/O sources and timers.
//! * `block_on` ([`await_blocking`], [`block_on`]): polls a future on the fiber's stack and
//!   parks the fiber while it is pending.
//! * [`io`], [`net`], [`time`], [`unblock`]: what users call, built on the three above.

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
pub mod net;
mod reactor;
pub mod sync;
mod sys;
mod task;
#[doc(hidden)]
pub mod test_support;
pub mod time;
mod worker;

pub use block_on::{await_blocking, block_on};
pub use blocking::unblock;
pub use context::stack;
pub use executor::StallReport;
pub use executor::{
    Builder, Handle, Runtime, in_fiber, run, spawn, spawn_local, try_spawn, yield_now,
};
pub use task::{JoinError, JoinHandle};
pub use time::{sleep, sleep_until};

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
