//! # green
//!
//! A stackful async executor: green threads on guarded stacks that can block on futures.
//!
//! This release provides the machine layer: [`fiber::Fiber`], a closure running on a
//! stack of its own, switched by hand-written assembly on x86_64, riscv64 and aarch64
//! Linux, with guard pages, pooled stacks, stack-overflow reports, panic capture and forced
//! unwinding.
//!
//! ```
//! use green::fiber::{Fiber, Resume};
//!
//! let mut counter = Fiber::new(|suspender| {
//!     for _ in 0..2 {
//!         suspender.suspend();
//!     }
//!     42
//! })
//! .unwrap();
//! assert!(matches!(counter.resume(), Resume::Yielded));
//! assert!(matches!(counter.resume(), Resume::Yielded));
//! assert!(matches!(counter.resume(), Resume::Finished(42)));
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
//! * `context`: the stack switch (one naked function per architecture, with hand-written
//!   unwind information so backtraces walk from a fiber into its resumer), `mmap`'d stacks
//!   with a guard page and a per-thread pool ([`stack`]), and the SIGSEGV handler that
//!   reports a fiber overflowing its stack.
//! * [`fiber`]: `Fiber<T>` on top of it: resume and suspend, panics caught at the fiber's
//!   entry, forced unwinding of a fiber dropped while suspended.

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
mod reactor;
pub mod sync;
mod task;
pub mod time;
mod worker;

pub use block_on::{await_blocking, block_on};
pub use blocking::unblock;
pub use context::stack;
pub use executor::{
    Builder, Handle, Runtime, in_fiber, run, spawn, spawn_local, try_spawn, yield_now,
};
pub use task::{JoinError, JoinHandle};
pub use time::{sleep, sleep_until};
pub use worker::StallReport;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
