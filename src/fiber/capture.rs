//! A backtrace of a suspended fiber, captured on its own stack (for the runtime's fiber
//! dumps).
//!
//! An unwinder walks the stack it runs on, so a suspended fiber's frames can only be read
//! from inside it. [`Fiber::capture_backtrace`] switches into the fiber with a message
//! that is neither a resume nor an unwind: the address of a `CaptureRequest` in the
//! resumer's frame (aligned, so never 0 or 1). The fiber, inside the
//! `Suspender::switch_out` where it suspended, checks its message as it always does:
//! anything but a resume goes to [`on_message`], out of line, which captures the
//! backtrace with `Backtrace::force_capture` on the fiber's stack, writes it into the
//! request and suspends again at once, before any code of its caller runs. So the
//! fiber's code after its suspension point (a park re-checking its condition, a yield)
//! never learns that it ran: a capture is no wake, spurious or otherwise, and changes no
//! state the fiber shares with wakers. The resumer gets `Yielded` back and finds the
//! request answered.
//!
//! The request also says where the fiber's stack is and how it switches, so that
//! `switch_out` keeps nothing alive across its switch for this rare case: it passes the
//! message alone (keeping its `Suspender` for it cost 6.5 instructions per switch).
//!
//! The frames are resolved to names later, when the backtrace is printed, on whatever
//! thread prints it: the fiber only walks its stack. That walk needs some stack of its
//! own ([`CAPTURE_ROOM`]); a fiber suspended with less left is not captured rather than
//! overflowed.
//!
//! ```text
//!   resumer                                  fiber, suspended in switch_out
//!   capture_backtrace
//!     switch_in(&request) ─────────────────►  message != RESUME: on_message
//!                                               Backtrace::force_capture()
//!                                               request.captured = backtrace
//!     Yielded           ◄───────────────────    suspend(YIELDED)
//!   ...
//!   resume()            ───────────────────►    message == RESUME: back in switch_out,
//!                                               which returns as if resumed once
//! ```

use std::backtrace::Backtrace;
use std::fmt;
use std::mem::MaybeUninit;
use std::panic::{self, AssertUnwindSafe};

use super::{Fiber, MSG_RESUME, MSG_UNWIND, MSG_YIELDED, State, guard_of};
use crate::context;

/// Free stack below the suspended fiber's stack pointer that a capture needs. Measured:
/// the first capture of a process (which sets up the unwinder) took 4.9 KiB on x86_64,
/// 6.7 KiB on aarch64 and 4.6 KiB on riscv64 (both under QEMU), later ones under 2 KiB on
/// x86_64; this leaves more than twice the most.
pub(crate) const CAPTURE_ROOM: usize = 16 * 1024;

/// Why a fiber has no backtrace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoBacktrace {
    /// It has never run: it has no frames yet.
    NotStarted,
    /// It has finished.
    Finished,
    /// It is running (its worker never asks this of its own fibers: it answers dumps
    /// between turns).
    Running,
    /// It is suspended with only this many bytes of its stack left, fewer than
    /// [`CAPTURE_ROOM`].
    LowStack(usize),
    /// It is suspended on a stack other than its own (a [`Fiber`] it resumed, which
    /// blocks in the runtime), whose room is unknown.
    OtherStack,
    /// The capture panicked.
    Failed,
}

impl fmt::Display for NoBacktrace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NoBacktrace::NotStarted => f.write_str("not started yet"),
            NoBacktrace::Finished => f.write_str("finished"),
            NoBacktrace::Running => f.write_str("running"),
            NoBacktrace::LowStack(free) => write!(
                f,
                "only {free} bytes of its stack left, a capture needs {CAPTURE_ROOM}"
            ),
            NoBacktrace::OtherStack => f.write_str("suspended on a stack not its own"),
            NoBacktrace::Failed => f.write_str("the capture failed"),
        }
    }
}

/// What a capture gives back.
type Captured = Result<Backtrace, NoBacktrace>;

/// A capture's message to the fiber, in the resumer's frame.
struct CaptureRequest {
    /// The fiber's stack top, for its switch back.
    stack_top: *mut u8,
    /// Whether the fiber shares its thread's floating-point control state, for its
    /// switch back.
    shared_float_control: bool,
    /// Written by the fiber.
    captured: MaybeUninit<Captured>,
}

impl<T> Fiber<T> {
    /// A backtrace of the fiber's stack, captured on that stack, from the point where it
    /// is suspended; the fiber stays suspended there, as if never resumed (see the
    /// module docs).
    ///
    /// # Errors
    ///
    /// Why there is none: the fiber has not started or has finished, or too little of its
    /// stack is left for the capture.
    pub(crate) fn capture_backtrace(&mut self) -> Captured {
        match self.state {
            State::Unstarted => return Err(NoBacktrace::NotStarted),
            State::Finished => return Err(NoBacktrace::Finished),
            State::Running => return Err(NoBacktrace::Running),
            State::Suspended => {}
        }
        let stack_top = self.stack_top();
        let mut request = CaptureRequest {
            stack_top,
            // SAFETY: the fiber's stack was prepared by `context::init` and is mapped.
            shared_float_control: unsafe { context::shares_float_control(stack_top) },
            captured: MaybeUninit::uninit(),
        };
        let reply = self.switch_in(&raw mut request as usize);
        // `on_message` answers the request and suspends: it never returns into the
        // fiber's code, so the fiber cannot have finished.
        debug_assert_eq!(reply, MSG_YIELDED);
        // SAFETY: the fiber wrote `captured` before it suspended (see `on_message`).
        unsafe { request.captured.assume_init() }
    }
}

/// Handles a message other than a resume, received in `Suspender::switch_out`: an
/// unwind, or a capture (then suspends again, until a message that is a resume or an
/// unwind).
#[cold]
#[inline(never)]
pub(super) fn on_message(mut message: usize) {
    loop {
        if message == MSG_UNWIND {
            super::unwind_dropped_fiber();
        }
        let request = message as *mut CaptureRequest;
        // SAFETY: any message but a resume or an unwind comes from `capture_backtrace`,
        // whose frame holds the request at that address until we suspend below.
        let (stack_top, shared_float_control) =
            unsafe { ((*request).stack_top, (*request).shared_float_control) };
        let captured = capture(stack_top);
        // SAFETY: as above; the request is not touched after this write.
        unsafe { (*request).captured.write(captured) };
        // SAFETY: `capture_backtrace` resumed the fiber whose stack top it gave us, so we
        // run on it, with its flag.
        message = unsafe { context::suspend(MSG_YIELDED, stack_top, shared_float_control) };
        if message == MSG_RESUME {
            return;
        }
    }
}

/// Captures a backtrace here, on the fiber whose stack top is `stack_top`, if its stack
/// has room for it.
fn capture(stack_top: *mut u8) -> Captured {
    let here = context::stack_pointer();
    // SAFETY: the fiber is live (it runs this), and its guard lies in its stack header.
    let low = unsafe { (*guard_of(stack_top)).stack_low() };
    if !(low..stack_top as usize).contains(&here) {
        return Err(NoBacktrace::OtherStack);
    }
    if here - low < CAPTURE_ROOM {
        return Err(NoBacktrace::LowStack(here - low));
    }
    panic::catch_unwind(AssertUnwindSafe(Backtrace::force_capture)).map_err(|payload| {
        crate::sys::drop_quietly(payload);
        NoBacktrace::Failed
    })
}
