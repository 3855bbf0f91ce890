//! Tasks: the fibers a runtime runs, and what they know of themselves.
//!
//! [`green::spawn`](crate::spawn) is all most fibers need. This module holds the rest:
//!
//! * [`Builder`] spawns a fiber with a name and a stack size of its own, as
//!   `std::thread::Builder` does for threads;
//! * [`current`] tells the running task its [`Id`] and name ([`Current`]);
//! * [`JoinHandle`] and [`JoinError`] (also at the crate's root) wait for a fiber's result.
//! * [`is_cancellation`] (also at the root) tells a caught cancellation from a panic.
//!
//! A name shows where green speaks of a fiber: the stack overflow message, the stall
//! warning ([`crate::Builder::stall_warning`]), the fiber dump ([`crate::Runtime::dump`],
//! with the task's [`Id`]), and [`current`].
//!
//! ```
//! use green::task;
//!
//! let greeting = green::run(|| {
//!     let handle = task::Builder::new()
//!         .name("greeter")
//!         .spawn(|| format!("hello from {}", task::current().name().unwrap()))
//!         .unwrap();
//!     handle.join().unwrap()
//! });
//! assert_eq!(greeting, "hello from greeter");
//! ```

// The task layer itself (header, state words, wakers, join cell: see its docs in mod.rs),
// mounted here so that `green::task` can be its public face; its items reach the crate as
// `crate::task::*`. The API above it lives where it needs to: `Builder` and `current` with
// the executor, which spawns and knows the running fiber.
#[path = "mod.rs"]
mod layer;

pub(crate) use layer::*;
pub use layer::{JoinError, JoinHandle, is_cancellation};

pub use crate::executor::task::{Builder, Current, Id, current, try_current};
