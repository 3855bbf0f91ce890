//! The fiber running on this thread: the fiber side of a task's state machine (park,
//! yield, cancellation) and its own panic state.

use std::cell::Cell;
use std::panic;
use std::ptr;
use std::sync::atomic::Ordering;
use std::task::{RawWaker, Waker};

use super::with_worker;
use crate::fiber::{self, ForbidSuspend, Suspender};
use crate::task::waker::WAKER_VTABLE;
use crate::task::{BlockedFiber, Header, NO_CPU, State, Wait};

/// Panic payload that unwinds a fiber cancelled by `JoinHandle::abort` or a shutdown.
///
/// Dropped on the fiber it unwound, unless the task's own catch disarmed it: user code
/// caught the unwinding (`catch_unwind`, or a `Fiber` of its own in which the
/// cancellation was delivered, which hands the payload back) and drops the payload. The
/// cancellation is then requested again, so that the fiber unwinds at its next
/// suspension point instead of running on as if it had not been cancelled.
pub(crate) struct Cancelled {
    /// The address of the header of the fiber it unwinds: compared with the running
    /// fiber's at drop, never dereferenced.
    header: usize,
    /// Set by the task's own catch, where the cancellation ends the task as it should.
    pub(super) disarmed: bool,
}

impl Drop for Cancelled {
    fn drop(&mut self) {
        if self.disarmed {
            return;
        }
        // Dropped elsewhere (sent to another thread, or dropped by the worker's loop), the
        // payload tells nothing about the fiber it came from, which may have ended.
        if let Some(current) = current()
            && current.header as usize == self.header
        {
            current.header().state.rearm_cancel();
        }
    }
}

/// Unwinds the running fiber, cancelled by `JoinHandle::abort` or a shutdown.
#[cold]
#[inline(never)]
fn unwind_cancelled(header: *const Header) -> ! {
    panic::resume_unwind(Box::new(Cancelled {
        header: header as usize,
        disarmed: false,
    }))
}

/// The fiber running on this thread, if any.
#[derive(Clone, Copy)]
pub(crate) struct Current {
    /// Its task header.
    pub(super) header: *const Header,
    /// Its stack top, to suspend it.
    pub(super) stack_top: *mut u8,
}

thread_local! {
    /// The fiber running on this thread; a null header outside fibers.
    pub(super) static CURRENT: Cell<Current> = const {
        Cell::new(Current { header: ptr::null(), stack_top: ptr::null_mut() })
    };
}

/// Records, as a fiber suspends with a panic in flight on its thread, whether it is its
/// own: the thread's count is then the fiber's alone if no other fiber of the thread is
/// suspended mid-unwind; else the fiber keeps what it knew of itself at its last
/// suspension.
#[cold]
#[inline(never)]
fn note_unwinding_at_suspend(header: &Header) {
    let known = header.state.unwinding();
    let unwinding = std::thread::panicking() && (fiber::suspended_unwinding() == 0 || known);
    header.state.set_unwinding(unwinding);
    if unwinding {
        fiber::count_suspended_unwinding(true);
    }
}

/// Whether the calling fiber is unwinding (a panic in flight on its own stack), for the
/// decisions green makes on it (poisoning a `green::sync::Mutex`, delivering a
/// cancellation); outside fibers, `std::thread::panicking()`.
///
/// std counts panics per OS thread: while one fiber is suspended in the middle of
/// unwinding (a destructor that sleeps), `std::thread::panicking()` is true in every other
/// fiber of its worker. This tells them apart. It is exact unless a fiber starts to
/// unwind, or stops (catching its panic), while another fiber of its thread is suspended
/// mid-unwind; it then answers with what the fiber was at its last suspension.
pub(crate) fn panicking() -> bool {
    if !std::thread::panicking() {
        return false;
    }
    if fiber::suspended_unwinding() == 0 {
        return true;
    }
    current().is_some_and(|current| current.header().state.unwinding())
}

/// Whether the caller runs in a fiber of a green runtime: the one way the crate asks
/// (on a worker's thread, outside fibers, the answer is no).
#[inline]
pub(crate) fn in_fiber() -> bool {
    current().is_some()
}

/// I/O operations a fiber may complete in one turn, without waiting, before the next one
/// yields first (see `spend_io_budget`).
pub(crate) const IO_BUDGET: u32 = 128;

thread_local! {
    /// How many I/O operations the running fiber has made in its turn (see
    /// `spend_io_budget`): the worker sets it to 0 as it resumes a fiber (`new_turn`).
    static IO_SPENT: Cell<u32> = const { Cell::new(0) };
}

/// Starts a new turn as far as the I/O budget goes: the worker calls this as it resumes a
/// fiber. A fiber that ran another nested (see `run_next_now`) goes on with what that one
/// left: it may yield sooner, never later.
#[inline(always)]
pub(super) fn new_turn() {
    IO_SPENT.with(|spent| spent.set(0));
}

/// Counts an I/O operation of the running fiber (or a poll in `await_blocking` after which
/// the future had woken itself), and yields first if the fiber has already made
/// `IO_BUDGET` of them in this turn: a fiber whose sockets are always ready (a fast peer,
/// a listener with a backlog) would otherwise keep its worker, and the other fibers and
/// the reactor waiting, for as long as that lasts. Any resume on the worker starts a new
/// turn. Outside fibers, does nothing.
#[inline]
pub(crate) fn spend_io_budget() {
    if let Some(current) = current() {
        current.spend_io_budget();
    }
}

/// The fiber running on this thread, if any.
#[inline]
pub(crate) fn current() -> Option<Current> {
    let current = CURRENT.with(Cell::get);
    (!current.header.is_null()).then_some(current)
}

impl Current {
    /// The task header.
    pub(super) fn header(&self) -> &Header {
        // A `Current` names the fiber that runs on this thread: `resume` sets `CURRENT` for
        // the fiber it resumes and restores its resumer's after, and a copy kept across
        // user code stays the running fiber's, because a fiber of the user's cannot suspend
        // under a blocking call of ours (`pin_running`) nor from another stack
        // (`Suspender::suspend`).
        // SAFETY: the running fiber's closure owns a reference to its task until the
        // fiber ends, so the header is alive.
        unsafe { &*self.header }
    }

    /// Switches to the fiber's resumer (the worker loop, or a fiber that runs it directly
    /// from `join`); unwinds if the fiber is dropped or cancelled meanwhile.
    ///
    /// Keeps the fiber's own panic state across the switch (see [`panicking`]).
    #[inline(always)]
    fn suspend(&self) {
        // Before anything else of the thread runs: no other fiber may run inside a tokio
        // context that this one entered.
        crate::tokio_context::check_before_park();
        let header = self.header();
        if std::thread::panicking() || header.state.unwinding() {
            note_unwinding_at_suspend(header);
        }
        // `stack_top` is the running fiber's (see `header`). We run on that stack, or on a
        // stack of the user's that this fiber resumed and that may not suspend meanwhile.
        // SAFETY: either way the switch frame lands on the stack we run on, and the parent
        // link is the running fiber's.
        unsafe { Suspender::for_running(self.stack_top) }.switch_out();
        if header.state.unwinding() {
            fiber::count_suspended_unwinding(false);
        }
        self.check_cancel();
    }

    /// Unwinds the fiber if a cancellation waits for it, unless it is unwinding already
    /// (a destructor that blocks, during a panic or a cancellation: its suspensions are
    /// plain ones, and the cancellation waits for the panic to be caught). Called after
    /// every suspension, and before every park and yield: a cancellation requested again
    /// (its payload dropped by user code that caught it, see `Cancelled`) has no wake to
    /// come with it.
    #[inline(always)]
    fn check_cancel(&self) {
        if self.header().state.cancel_pending() {
            self.deliver_cancel();
        }
    }

    #[cold]
    #[inline(never)]
    fn deliver_cancel(&self) {
        if panicking() {
            return;
        }
        self.header().state.cancel_delivered();
        unwind_cancelled(self.header);
    }

    /// The fiber's (slot, generation) id on its worker.
    pub(crate) fn id(&self) -> u64 {
        self.header().id.load(Ordering::Relaxed)
    }

    /// How many times the fiber has parked so far.
    #[inline(always)]
    pub(crate) fn parks(&self) -> u32 {
        self.header().state.parks()
    }

    /// For a blocking call that runs user code (a poll) between its parks: if the caller
    /// runs on another stack than the fiber's own (a [`Fiber`] of the user's, resumed by
    /// this fiber), forbids that stack's fiber to suspend while the guard lives (see
    /// `Suspender::suspend`), so that this fiber stays the running one, and its task
    /// alive, for as long as the call lasts.
    #[inline(always)]
    pub(crate) fn pin_running(&self) -> Option<ForbidSuspend> {
        let here = crate::context::stack_pointer();
        // SAFETY: `stack_top` is the running fiber's (see `suspend`), which is alive.
        if unsafe { fiber::on_stack(self.stack_top, here) } {
            None
        } else {
            Some(fiber::forbid_suspend(here))
        }
    }

    /// Whether `header` is this fiber's task.
    pub(crate) fn is_task(&self, header: &Header) -> bool {
        ptr::eq(self.header, header)
    }

    /// `spend_io_budget` for the running fiber.
    #[inline(always)]
    pub(crate) fn spend_io_budget(&self) {
        let spent = IO_SPENT.with(Cell::get);
        if spent < IO_BUDGET {
            IO_SPENT.with(|c| c.set(spent + 1));
        } else {
            self.yield_now(); // the turn that follows counts this operation
            IO_SPENT.with(|c| c.set(1));
        }
    }

    /// Parks the fiber until its waker is woken (returns at once if it already was), then
    /// forgets the notification before the caller checks its condition again
    /// (`State::reset_after_park`), and unwinds if the fiber was cancelled. `wait` says
    /// what it waits for, for fiber dumps. Returns whether the fiber suspended (`false`:
    /// the wake came first).
    #[inline(always)]
    pub(crate) fn park(&self, wait: Wait) -> bool {
        self.park_then_reset(wait, State::reset_after_park)
    }

    /// `park`, for a caller that checks its condition again under a lock which its
    /// notifier holds while it wakes the fiber (`State::reset_after_park_locked`).
    #[inline(always)]
    pub(crate) fn park_locked(&self, wait: Wait) {
        self.park_then_reset(wait, State::reset_after_park_locked);
    }

    /// Parks unless notified, then resets with `reset`; returns whether it suspended.
    #[inline(always)]
    fn park_then_reset(&self, wait: Wait, reset: impl FnOnce(&State)) -> bool {
        self.check_cancel();
        let header = self.header();
        header.state.set_wait(wait);
        // The wake that finds us PARKED needs our scheduler.
        header.scheduler.set_once(|| {
            with_worker(|worker| {
                worker
                    .expect("a fiber runs on its worker's thread")
                    .shared
                    .clone()
            })
        });
        let suspends = header.state.transition_to_parked();
        if suspends {
            self.suspend();
        }
        reset(&header.state);
        self.check_cancel();
        suspends
    }

    /// Queues the fiber behind the others and switches to its resumer.
    #[inline(always)]
    pub(crate) fn yield_now(&self) {
        self.check_cancel();
        let id = self.header().id.load(Ordering::Relaxed);
        with_worker(|worker| {
            worker
                .expect("a fiber runs on its worker's thread")
                .queue
                .borrow_mut()
                .push_fiber(id)
        });
        self.suspend();
    }

    /// The fiber as a [`BlockedFiber`], to register with a wait list before parking.
    pub(crate) fn blocked(&self) -> BlockedFiber {
        BlockedFiber::new(self.header)
    }

    /// A waker for the fiber that borrows the task's reference count: valid while the
    /// fiber has not ended, so it must not be dropped (it is `ManuallyDrop`) and must not
    /// outlive the blocking call that made it (`await_blocking`, whose poll cannot outlast
    /// the task: see `pin_running`); clones own a count.
    pub(crate) fn waker(&self) -> std::mem::ManuallyDrop<Waker> {
        let raw = RawWaker::new(self.header.cast(), &WAKER_VTABLE);
        // SAFETY: the header heads a live task (see `header`), and the vtable is the
        // tasks' waker vtable, whose data pointer is a header.
        std::mem::ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
    }
}

thread_local! {
    /// A CPU that the next spawn of one fiber of this thread should run near (see
    /// `Worker::placement`): that fiber's (slot, generation) id, and the CPU (`NO_CPU`
    /// for none). One per thread, not a field of every task: a fiber sets it right after
    /// `accept` and takes it at its next spawn, and should another fiber of the thread
    /// set its own in between, the first one's hint is lost, which only makes its spawn
    /// placed by load. Tasks stay 8 bytes smaller (see `task::Task`).
    static NEAR_CPU: Cell<(u64, usize)> = const { Cell::new((u64::MAX, NO_CPU)) };
}

/// Asks that the next fiber the calling fiber spawns run near `cpu` (see
/// `Worker::placement`). No effect outside fibers.
pub(crate) fn spawn_near_cpu(cpu: usize) {
    if let Some(current) = current() {
        let fiber = current.header().id.load(Ordering::Relaxed);
        NEAR_CPU.with(|near| near.set((fiber, cpu)));
    }
}

/// Takes the calling fiber's CPU hint for its next spawn (`NO_CPU` if none).
pub(super) fn take_near_cpu() -> usize {
    let Some(current) = current() else {
        return NO_CPU;
    };
    NEAR_CPU.with(|near| {
        let (fiber, cpu) = near.get();
        if cpu == NO_CPU || fiber != current.header().id.load(Ordering::Relaxed) {
            return NO_CPU;
        }
        near.set((u64::MAX, NO_CPU));
        cpu
    })
}
