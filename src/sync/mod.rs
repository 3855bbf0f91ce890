//! Fiber-aware synchronisation: [`Mutex`], [`Condvar`], [`Barrier`], and multi-producer
//! multi-consumer channels ([`channel`], [`bounded`]).
//!
//! Their blocking operations park only the calling fiber (other fibers of its worker run
//! meanwhile) and block the thread when called outside fibers, so fibers and plain threads
//! can share them. Each also has an async twin (`lock_async`, `recv_async`, ...) for
//! futures code. Poisoning follows std: a `Mutex` whose guard was dropped during a panic
//! reports it to every later `lock`.
//!
//! ```
//! use std::sync::Arc;
//!
//! let counter = Arc::new(green::sync::Mutex::new(0));
//! let handles: Vec<_> = (0..10)
//!     .map(|_| {
//!         let counter = counter.clone();
//!         green::spawn(move || {
//!             for _ in 0..100 {
//!                 *counter.lock().unwrap() += 1;
//!                 green::yield_now(); // another fiber may take the lock meanwhile
//!             }
//!         })
//!     })
//!     .collect();
//! handles.into_iter().for_each(|h| h.join().unwrap());
//! assert_eq!(*counter.lock().unwrap(), 1000);
//! ```

mod barrier;
mod channel;
mod condvar;
mod mutex;
mod spin;
mod wait_queue;

pub use barrier::{Barrier, BarrierWaitResult};
pub use channel::{Receiver, RecvError, SendError, Sender, TryRecvError, bounded, channel};
pub use condvar::Condvar;
pub use mutex::{Mutex, MutexGuard};
