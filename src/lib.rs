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
//! * `context`: the stack switch (per architecture, inline assembly that splits a call and
//!   its matching return across the two stacks, so the CPU predicts every switch, and a
//!   naked entry trampoline with hand-written unwind information so backtraces walk from a
//!   fiber into its resumer), `mmap`'d stacks with a guard page and a per-thread pool
//!   ([`stack`]), and the SIGSEGV handler that reports a fiber overflowing its stack.
//! * [`fiber`]: `Fiber<T>` on top of it: resume and suspend, panics caught at the fiber's
//!   entry, forced unwinding of a fiber dropped while suspended.

#![deny(unsafe_op_in_unsafe_fn)]
#![warn(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    clippy::undocumented_unsafe_blocks
)]

mod context;
pub mod fiber;

pub use context::stack;

/// The README's examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
