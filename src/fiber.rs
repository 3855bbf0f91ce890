//! Fibers: a closure running on a stack of its own, resumed and suspended by hand.
//!
//! A [`Fiber`] is the building block under green's scheduler, and usable on its own as a
//! stackful coroutine. Made in a [`scope`], as a [`ScopedFiber`], it needs no `unsafe` and
//! may borrow from the caller's stack; the scope drops it before returning:
//!
//! ```
//! use green::fiber::{self, Resume};
//!
//! let names = ["a", "b", "c"];
//! let mut seen = Vec::new();
//! fiber::scope(|scope| {
//!     let mut fiber = scope
//!         .fiber(|suspender| {
//!             for name in &names {
//!                 println!("fiber: {name}");
//!                 suspender.suspend();
//!             }
//!             names.len()
//!         })
//!         .unwrap();
//!     loop {
//!         match fiber.resume() {
//!             Resume::Yielded => seen.push(seen.len()),
//!             Resume::Finished(count) => break assert_eq!(count, 3),
//!             Resume::Panicked(payload) => std::panic::resume_unwind(payload),
//!         }
//!     }
//! });
//! assert_eq!(seen, [0, 1, 2]);
//! ```
//!
//! A plain [`Fiber`] is owned by no scope, and needs `'static` closures and `unsafe` (see
//! [Leaking a started fiber](#leaking-a-started-fiber)):
//!
//! ```
//! use green::fiber::{Fiber, Resume};
//!
//! // SAFETY: the fiber is not leaked (see "Leaking a started fiber").
//! let mut fiber = unsafe {
//!     Fiber::new(|suspender| {
//!         for i in 0..3 {
//!             println!("fiber: step {i}");
//!             suspender.suspend();
//!         }
//!         "done"
//!     })
//! }
//! .unwrap();
//!
//! let mut steps = 0;
//! loop {
//!     match fiber.resume() {
//!         Resume::Yielded => steps += 1,
//!         Resume::Finished(value) => break assert_eq!(value, "done"),
//!         Resume::Panicked(payload) => std::panic::resume_unwind(payload),
//!     }
//! }
//! assert_eq!(steps, 3);
//! ```
//!
//! # Panics and unwinding
//!
//! A panic inside the fiber is caught at its entry and handed to whoever resumed it as
//! [`Resume::Panicked`]; no unwind ever crosses the assembly that switches stacks.
//!
//! Dropping a fiber that is suspended unwinds its stack: [`Suspender::suspend`] panics with
//! a [`ForcedUnwind`] payload, so every destructor on the fiber's stack runs. Code that
//! catches panics inside a fiber should let a `ForcedUnwind` go on (resume it with
//! [`std::panic::resume_unwind`]); if it swallows it and suspends again, the fiber is
//! unwound again, and if it keeps doing so the process aborts with a message, since the
//! fiber's destructors can then never complete. What the fiber ends with while it is
//! dropped (a value, or a panic of its own after it swallowed the `ForcedUnwind`) is
//! dropped with it, and a panic of that drop is dropped in turn: the drop of a suspended
//! fiber does not panic.
//!
//! A fiber suspended in the middle of unwinding a panic of its own (a destructor that
//! suspends) is not unwound again when dropped, since no panic may leave a destructor
//! during an unwinding: it is resumed instead (its `suspend` returns) and goes on with
//! its own unwinding. While it is suspended so, `std::thread::panicking()` is true on its
//! whole thread: std counts panics per thread, not per stack, and so a fiber that begins
//! to unwind while its resumer is unwinding too, or while another fiber of the thread (a
//! runtime's task included) is suspended in the middle of unwinding, cannot be told
//! apart; dropping it suspended in a destructor then aborts the process, as any panic
//! that leaves a destructor during an unwinding does.
//!
//! # Leaking a started fiber
//!
//! Making a fiber is `unsafe`, for one rule its caller keeps: **once a fiber has started,
//! it must have finished or been dropped before its thread begins to exit**: not leaked
//! (`mem::forget`, a reference cycle, `Box::leak`), unless the thread never exits, and not
//! owned by a thread-local (or anything a thread-local's destructor drops), which the
//! thread's exit would drop after other thread-locals may have been freed. Dropping it
//! before then is always fine (the drop unwinds it), and so is leaking one that never
//! started or has finished.
//!
//! A leaked fiber keeps the frames on its stack for good, never run again and never
//! unwound, and its stack stays mapped: data those frames own stays valid. The thread's
//! thread-locals do not stay: they are freed when the thread exits. A frame inside
//! `LocalKey::with` may have lent one to another thread (through `std::thread::scope`,
//! whose scope never ends while its frame is kept), which would then read freed memory
//! once the fiber's thread has exited. Rust cannot forbid the leak, nor can green stop
//! the thread's exit in time, so the rule falls to the caller. green's runtimes keep it
//! for the fibers of their tasks: they unwind every fiber at shutdown, and a worker
//! thread that has to abandon fibers at a deadline never exits.
//!
//! [`scope`] keeps the rule for the caller, without `unsafe`: it drops every fiber made
//! in it, leaked handles included, before it returns, on the thread's own stack (see
//! [`ScopedFiber`]). It costs an allocation per fiber and a `RefCell` borrow per resume.
//!
//! Without `unsafe`, no plain fiber is made:
//!
//! ```compile_fail,E0133
//! let fiber = green::fiber::Fiber::new(|_| ());
//! ```
//!
//! # Threads
//!
//! A fiber is `!Send`: once it has run, its stack may hold addresses of the thread's
//! thread-local variables (compilers cache them), so it must stay on the thread that
//! started it.
//!
//! # Inside a task
//!
//! A fiber resumed by a runtime's task may block in green (`green::sleep`, I/O, a
//! `join`): that parks the task, with the fiber's stack where it stopped. If the task is
//! cancelled meanwhile ([`JoinHandle::abort`](crate::JoinHandle::abort), the runtime's
//! shutdown), the cancellation unwinds the fiber's stack, and its resumer receives it as
//! [`Resume::Panicked`]. Re-raise such a payload ([`crate::is_cancellation`] tells it)
//! with [`std::panic::resume_unwind`]: a resumer that ignores it lets the task go on after
//! its cancellation, as a `catch_unwind` that swallows it would.

use std::any::Any;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::mem::{self, ManuallyDrop};
use std::panic::{self, AssertUnwindSafe};
use std::ptr::{self, NonNull};

mod builder;
mod capture;
mod scope;

pub use builder::{Builder, FloatControl};
pub(crate) use capture::{CAPTURE_ROOM, NoBacktrace};
pub use scope::{Scope, ScopedFiber, scope};

use crate::context::overflow::{self, Guard};
use crate::context::stack::{self, DEFAULT_STACK_SIZE, Stack};
use crate::context::{self, Context, HEADER_SIZE, INITIAL_FRAME_SIZE};

/// Message to the fiber: go on.
const MSG_RESUME: usize = 0;
/// Message to the fiber: unwind your stack.
const MSG_UNWIND: usize = 1;
// Any other message to the fiber: capture your backtrace into the slot at this address
// (see `capture`).
/// Message from the fiber: suspended. Any other value points at its result.
const MSG_YIELDED: usize = 0;

/// Bytes of the stack header that hold the fiber's [`Guard`]: its size rounded up to 16,
/// so that what lies below stays 16-byte aligned.
const GUARD_SIZE: usize = mem::size_of::<Guard>().next_multiple_of(16);

/// Times a dropped fiber is unwound again after it swallowed the unwind and suspended,
/// before we give up and abort.
const MAX_UNWIND_ATTEMPTS: usize = 64;

/// A panic payload.
type Payload = Box<dyn Any + Send + 'static>;

/// The outcome of [`Fiber::resume`].
pub enum Resume<T> {
    /// The fiber called [`Suspender::suspend`]; resume it to go on.
    Yielded,
    /// The fiber's closure returned this value. The fiber is finished.
    Finished(T),
    /// The fiber's closure panicked with this payload. The fiber is finished.
    Panicked(Payload),
}

impl<T: fmt::Debug> fmt::Debug for Resume<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Resume::Yielded => f.write_str("Yielded"),
            Resume::Finished(value) => f.debug_tuple("Finished").field(value).finish(),
            Resume::Panicked(_) => f.write_str("Panicked(..)"),
        }
    }
}

/// The panic payload that unwinds a fiber dropped while suspended.
///
/// Code that catches panics inside a fiber should pass this one on with
/// [`std::panic::resume_unwind`].
#[derive(Debug)]
pub struct ForcedUnwind(());

/// Where a fiber is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Never resumed: the closure sits, unread, at the top of the stack.
    Unstarted,
    /// Started and now suspended inside [`Suspender::suspend`].
    Suspended,
    /// Returned or panicked; the stack holds nothing live.
    Finished,
    /// Running, resumed through [`Fiber::begin_resume`]: its [`Running`] holds the context
    /// until [`Fiber::end_resume`] gives it back.
    Running,
}

/// A closure running on its own stack.
///
/// See the [module docs](self) for an example.
pub struct Fiber<T> {
    /// The stack; taken back to the thread's pool when the fiber drops.
    stack: ManuallyDrop<Stack>,
    /// Where the stack's top is and where the fiber stopped, for the switch.
    context: Context,
    /// Where the fiber is in its life.
    state: State,
    /// The closure, on the fiber's stack, while `state` is `Unstarted`.
    closure: *mut u8,
    /// Drops the closure at `closure` in place, for a fiber dropped before it started.
    drop_closure: unsafe fn(*mut u8),
    /// The guard page's description for the overflow handler: in the stack's header,
    /// registered on this thread from `with_stack` until the fiber drops.
    guard: NonNull<Guard>,
    /// It suspended in the middle of unwinding a panic of its own (a destructor that
    /// suspends), as far as [`resume`](Fiber::resume) can tell (see `switch_noting`).
    unwinding: bool,
    /// `T` comes out of the fiber; `*mut` makes the fiber `!Send` and `!Sync`.
    _marker: PhantomData<*mut T>,
}

/// The handle a fiber's closure receives, to suspend the fiber.
///
/// It cannot leave the closure: it is only lent to it, and it is neither `Send` nor `Sync`.
pub struct Suspender {
    /// Top of the fiber's stack, where the switch header is.
    stack_top: *mut u8,
    /// Lowest usable address of the fiber's stack: `suspend` checks that it runs between
    /// this and `stack_top`.
    stack_low: usize,
    /// `stack_top - stack_low`, so that the check is one subtraction and one comparison.
    stack_span: usize,
    /// Whether the fiber shares its thread's floating-point control state (the flag in
    /// its header; a constant where the fiber's closure is compiled into its entry).
    shared_float_control: bool,
}

impl fmt::Debug for Suspender {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Suspender")
            .field("stack_top", &self.stack_top)
            .field("stack_low", &(self.stack_low as *const u8))
            .field("stack_span", &self.stack_span)
            .field("shared_float_control", &self.shared_float_control)
            .finish()
    }
}

impl Suspender {
    /// Suspends the fiber: [`Fiber::resume`] returns [`Resume::Yielded`] to the code that
    /// resumed it, and this call returns when the fiber is resumed again.
    ///
    /// # Panics
    ///
    /// Panics with a [`ForcedUnwind`] payload when the fiber is being dropped, to unwind
    /// its stack.
    ///
    /// Panics, without suspending, when called where the fiber must not suspend:
    ///
    /// * not on the fiber's own stack: from another fiber that runs nested inside this
    ///   one (which reached this `Suspender` through a scoped thread-local, say);
    /// * while [`await_blocking`](crate::await_blocking) (or `block_on`) runs on this
    ///   fiber's stack inside a fiber of a green runtime, that is, from the poll of the
    ///   future it waits for. The runtime parks the task that runs this fiber while the
    ///   future is pending; suspending the fiber under it would let the task end, and the
    ///   poll then go on in another task's name. Suspend before or after
    ///   `await_blocking`, not inside it.
    // Always inlined: the switch back to the resumer is a `ret` that matches the resumer's
    // `call` only if no call of ours lies in between (see `context`).
    #[inline(always)]
    pub fn suspend(&self) {
        // Both refusals are rare, and handled out of line.
        let here = context::stack_pointer();
        if here.wrapping_sub(self.stack_low) >= self.stack_span {
            refuse_suspend_off_stack();
        }
        if NO_SUSPEND_COUNT.with(Cell::get) != 0 {
            self.check_suspend(here);
        }
        self.switch_out();
    }

    /// Panics if a runtime blocking call lies on the fiber's stack above `here`.
    #[cold]
    #[inline(never)]
    fn check_suspend(&self, here: usize) {
        if suspend_forbidden(here, self.stack_top as usize) {
            panic!(
                "green: Suspender::suspend called from inside green::await_blocking (or \
                 block_on) running on its own stack: suspend before or after the call, not \
                 in the poll of its future"
            );
        }
    }

    /// The switch of `suspend`, without its checks, for the runtime's own fibers (which
    /// never hand out their `Suspender`).
    #[inline(always)]
    pub(crate) fn switch_out(&self) {
        // A `Suspender` exists only inside its fiber's closure (or, from `for_running`, for
        // the fiber running now), and `suspend` checked that it runs on that fiber's stack.
        // SAFETY: so this runs on the fiber whose stack top this is.
        let message =
            unsafe { context::suspend(MSG_YIELDED, self.stack_top, self.shared_float_control) };
        // One test for both rare messages, an unwind and a capture (see `capture`); the
        // cold path needs nothing but the message.
        if message != MSG_RESUME {
            capture::on_message(message);
        }
    }
}

/// Panics for a `Suspender::suspend` called on another stack than its fiber's.
#[cold]
#[inline(never)]
fn refuse_suspend_off_stack() -> ! {
    panic!(
        "green: Suspender::suspend called not on its own stack (from a fiber running nested \
         inside it)"
    );
}

thread_local! {
    /// How many fibers of this thread are suspended in the middle of unwinding a panic of
    /// their own, as far as they can be told apart: a user's [`Fiber`]s (see
    /// `switch_noting`) and a runtime's (see `worker::current`). std counts panics per
    /// thread, so while one is, `std::thread::panicking()` is true everywhere on the
    /// thread.
    static SUSPENDED_UNWINDING: Cell<usize> = const { Cell::new(0) };
}

/// How many fibers of this thread are suspended in the middle of unwinding (see
/// `SUSPENDED_UNWINDING`).
#[inline]
pub(crate) fn suspended_unwinding() -> usize {
    SUSPENDED_UNWINDING.with(Cell::get)
}

/// Counts a fiber of this thread in (`true`) or out of those suspended in the middle of
/// unwinding.
#[inline]
pub(crate) fn count_suspended_unwinding(suspended: bool) {
    SUSPENDED_UNWINDING.with(|count| {
        count.set(if suspended {
            count.get() + 1
        } else {
            count.get() - 1
        })
    });
}

thread_local! {
    /// Addresses of the `await_blocking` calls of a green runtime that run on this thread
    /// on a stack other than their task's own (a fiber of this module's, resumed by the
    /// task), in no particular order: none of those fibers may suspend while such a call
    /// lies on its stack (see `Suspender::suspend`).
    static NO_SUSPEND: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };

    /// How many addresses `NO_SUSPEND` holds: a thread-local without a destructor, so
    /// that `suspend`'s check is one load.
    static NO_SUSPEND_COUNT: Cell<usize> = const { Cell::new(0) };
}

/// Whether a runtime blocking call lies on the stack between `here` and `stack_top`.
#[inline(always)]
fn suspend_forbidden(here: usize, stack_top: usize) -> bool {
    NO_SUSPEND.with(|calls| {
        let calls = calls.borrow();
        !calls.is_empty() && calls.iter().any(|&call| (here..stack_top).contains(&call))
    })
}

/// While alive, the fiber whose stack holds `address` may not suspend: see
/// [`forbid_suspend`].
#[derive(Debug)]
pub(crate) struct ForbidSuspend {
    /// The address, as recorded.
    address: usize,
    /// Recorded on this thread, removed on it.
    _not_send: PhantomData<*mut ()>,
}

/// Forbids the fiber (of this module) whose stack holds `address` to suspend until the
/// returned guard drops. For a runtime blocking call that runs on such a fiber's stack
/// rather than its task's own: the task must stay the running one for as long as the
/// call lasts.
#[cold]
pub(crate) fn forbid_suspend(address: usize) -> ForbidSuspend {
    NO_SUSPEND.with(|calls| calls.borrow_mut().push(address));
    NO_SUSPEND_COUNT.with(|count| count.set(count.get() + 1));
    ForbidSuspend {
        address,
        _not_send: PhantomData,
    }
}

impl Drop for ForbidSuspend {
    fn drop(&mut self) {
        NO_SUSPEND.with(|calls| {
            let mut calls = calls.borrow_mut();
            if let Some(index) = calls.iter().rposition(|&call| call == self.address) {
                calls.swap_remove(index);
                NO_SUSPEND_COUNT.with(|count| count.set(count.get() - 1));
            }
        });
    }
}

/// Whether `address` lies on the stack whose top is `stack_top`, between its top and its
/// guard page.
///
/// # Safety
///
/// `stack_top` must be the top of the stack of a live fiber (of this module).
#[inline(always)]
pub(crate) unsafe fn on_stack(stack_top: *mut u8, address: usize) -> bool {
    // SAFETY: as the caller guarantees, the fiber's guard lies in its stack header.
    let low = unsafe { (*guard_of(stack_top)).stack_low() };
    (low..stack_top as usize).contains(&address)
}

/// Where a fiber's overflow guard lies below its stack top (see `Fiber::on_stack`).
#[inline(always)]
fn guard_of(stack_top: *mut u8) -> *mut Guard {
    (stack_top as usize - HEADER_SIZE - GUARD_SIZE) as *mut Guard
}

impl Suspender {
    /// The suspender of the fiber whose stack top is `stack_top`.
    ///
    /// # Safety
    ///
    /// `stack_top` must be the stack top of the fiber running on this thread, and the
    /// suspender must be used only while it runs.
    pub(crate) unsafe fn for_running(stack_top: *mut u8) -> Suspender {
        Suspender {
            stack_top,
            // Unused: the runtime suspends its fibers with `switch_out`, unchecked.
            stack_low: 0,
            stack_span: usize::MAX,
            // SAFETY: the running fiber's stack, prepared by `Fiber::on_stack`.
            shared_float_control: unsafe { context::shares_float_control(stack_top) },
        }
    }
}

/// Unwinds the stack of a fiber that is being dropped, with a [`ForcedUnwind`] payload.
#[cold]
#[inline(never)]
fn unwind_dropped_fiber() -> ! {
    panic::resume_unwind(Box::new(ForcedUnwind(())))
}

impl<T: 'static> Fiber<T> {
    /// A fiber that will run `f` on a stack of [`DEFAULT_STACK_SIZE`] bytes taken from this
    /// thread's pool. Nothing runs until the first [`resume`](Fiber::resume).
    ///
    /// # Errors
    ///
    /// As [`Stack::new`], if the pool is empty and a new stack cannot be mapped (for example
    /// past `vm.max_map_count`).
    ///
    /// # Safety
    ///
    /// Once started, the fiber must have finished or been dropped before its thread begins
    /// to exit (see [Leaking a started fiber](self#leaking-a-started-fiber)). A fiber made
    /// in a [`scope`] keeps the rule without `unsafe`.
    pub unsafe fn new<F>(f: F) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T + 'static,
    {
        // SAFETY: `F` and `T` are 'static; the caller keeps the leak rule.
        unsafe { Fiber::on_stack::<F, false>(stack::take(DEFAULT_STACK_SIZE)?, f) }
    }

    /// A fiber with a stack of `size` bytes (rounded up to pages) from this thread's pool.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] for a size out of range, otherwise as
    /// [`Stack::new`].
    ///
    /// # Safety
    ///
    /// Once started, the fiber must have finished or been dropped before its thread begins
    /// to exit (see [Leaking a started fiber](self#leaking-a-started-fiber)). A fiber made
    /// in a [`scope`] keeps the rule without `unsafe`.
    pub unsafe fn with_stack_size<F>(size: usize, f: F) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T + 'static,
    {
        // SAFETY: `F` and `T` are 'static; the caller keeps the leak rule.
        unsafe { Fiber::on_stack::<F, false>(stack::take(size)?, f) }
    }

    /// A fiber on the given stack. When the fiber drops, the stack goes to this thread's
    /// pool.
    ///
    /// # Errors
    ///
    /// [`io::ErrorKind::InvalidInput`] if the closure is too large to fit in a quarter of
    /// the stack.
    ///
    /// # Safety
    ///
    /// Once started, the fiber must have finished or been dropped before its thread begins
    /// to exit (see [Leaking a started fiber](self#leaking-a-started-fiber)). A fiber made
    /// in a [`scope`] keeps the rule without `unsafe`.
    pub unsafe fn with_stack<F>(stack: Stack, f: F) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T + 'static,
    {
        // SAFETY: `F` and `T` are 'static; the caller keeps the leak rule.
        unsafe { Fiber::on_stack::<F, false>(stack, f) }
    }

    /// `with_stack` for the runtime's own fibers, which keep the rule of
    /// [Leaking a started fiber](self#leaking-a-started-fiber): a worker unwinds every
    /// fiber it holds before its thread exits, or never exits (see
    /// `Worker::abandon_fibers`).
    pub(crate) fn for_task<F>(stack: Stack, f: F) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T + 'static,
    {
        // SAFETY: `F` and `T` are 'static, and the runtime keeps the leak rule (above).
        unsafe { Fiber::on_stack::<F, false>(stack, f) }
    }
}

/// Whether a closure of `size` bytes aligned to `align` fits a stack of `stack_size`
/// bytes: with the switch header, the guard and the initial frame, in a quarter of it.
pub(crate) fn closure_fits(size: usize, align: usize, stack_size: usize) -> bool {
    let needed = HEADER_SIZE + GUARD_SIZE + size + align.max(16) + INITIAL_FRAME_SIZE;
    needed <= stack_size / 4
}

impl<T> Fiber<T> {
    /// A fiber on the given stack that shares its thread's floating-point control state if
    /// `SHARED_FLOAT_CONTROL`, or keeps its own. A parameter of the type, not a value, so
    /// that the fiber's entry knows it as a constant.
    ///
    /// # Safety
    ///
    /// The fiber must keep the rule of [Leaking a started fiber](self#leaking-a-started-fiber);
    /// and if `F` or `T` is not `'static`, it must be dropped before the shortest of their
    /// lifetimes ends (the `Fiber` type does not carry `F`'s lifetime).
    unsafe fn on_stack<F, const SHARED_FLOAT_CONTROL: bool>(
        stack: Stack,
        f: F,
    ) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T,
    {
        overflow::ensure_handler();
        let top = stack.top();
        let align = mem::align_of::<F>().max(16);
        if !closure_fits(mem::size_of::<F>(), mem::align_of::<F>(), stack.size()) {
            stack::give_back(stack);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a fiber closure of {} bytes does not fit its stack",
                    mem::size_of::<F>()
                ),
            ));
        }
        // Below the switch header: the guard, then the closure, aligned, then the initial
        // frame.
        let guard = guard_of(top);
        let closure = (guard as usize - mem::size_of::<F>()) & !(align - 1);
        let closure = closure as *mut u8;
        // SAFETY: the guard's and the closure's places lie inside the stack below the
        // header, apart and aligned (GUARD_SIZE is a multiple of 16); the initial frame fits
        // below them (checked above). `init` comes first, before anything is written to the
        // stack, and `drop` releases the context. The guard stays in place until `drop`
        // unregisters it.
        let context = unsafe {
            let context = context::init(
                stack.bottom(),
                top,
                closure,
                entry::<F, T, SHARED_FLOAT_CONTROL>,
                closure,
                SHARED_FLOAT_CONTROL,
            );
            guard.write(Guard::new(
                stack.guard().start,
                stack.guard().end,
                stack.size(),
            ));
            overflow::register(guard);
            closure.cast::<F>().write(f);
            context
        };
        // SAFETY: `guard` lies inside the stack, so it is not null.
        let guard = unsafe { NonNull::new_unchecked(guard) };
        Ok(Fiber {
            stack: ManuallyDrop::new(stack),
            context,
            state: State::Unstarted,
            closure,
            drop_closure: drop_closure::<F>,
            guard,
            unwinding: false,
            _marker: PhantomData,
        })
    }

    /// Runs the fiber until it suspends, returns or panics.
    ///
    /// # Panics
    ///
    /// Panics if the fiber has finished.
    #[inline]
    pub fn resume(&mut self) -> Resume<T> {
        if self.state != State::Suspended {
            self.start();
        }
        let message = self.switch_noting(MSG_RESUME);
        self.outcome(message)
    }

    /// `switch_in`, noting whether the fiber suspends in the middle of unwinding a panic
    /// of its own. std counts panics per thread: such a fiber leaves the count raised
    /// after it suspends. So the fiber is taken to be unwinding if it suspends with the
    /// count raised, no other fiber of the thread was noted as suspended mid-unwind
    /// meanwhile (fibers it resumed, or, inside a runtime's task, the runtime's), and the
    /// count was not raised before the switch, or was by this fiber's own unwinding. A
    /// fiber that begins to unwind while its resumer unwinds is not told apart (dropping
    /// it then aborts, see the module docs), nor one that catches its panic and suspends
    /// again while its resumer unwinds (dropping it then resumes it rather than unwinding
    /// it).
    #[inline]
    fn switch_noting(&mut self, message: usize) -> usize {
        let was_unwinding = mem::replace(&mut self.unwinding, false);
        if was_unwinding {
            count_suspended_unwinding(false);
        }
        let panicking_before = std::thread::panicking();
        let noted_before = suspended_unwinding();
        let reply = self.switch_in(message);
        if reply == MSG_YIELDED
            && std::thread::panicking()
            && suspended_unwinding() == noted_before
            && (was_unwinding || !panicking_before)
        {
            self.unwinding = true;
            count_suspended_unwinding(true);
        }
        reply
    }

    /// Marks an unstarted fiber as started, out of the path of every later resume;
    /// panics for a finished or running one.
    #[cold]
    fn start(&mut self) {
        assert!(
            self.state != State::Finished,
            "resumed a fiber that has finished"
        );
        assert!(self.state != State::Running, "resumed a running fiber");
        self.state = State::Suspended;
    }

    /// The first half of a resume that leaves the `Fiber` where it is, for an owner that
    /// cannot lend `&mut self` across the switch (a slab of fibers, which may move while
    /// one of them runs): marks the fiber running and hands out a copy of its context to
    /// switch with ([`Running::switch`]); [`end_resume`](Fiber::end_resume) takes the
    /// outcome back. Saves moving the whole `Fiber` out of its place and back around each
    /// resume. `None` if the fiber is running already.
    ///
    /// Dropping a running fiber aborts the process (its stack is in use), and so does
    /// dropping the [`Running`] unswitched, if the fiber is then dropped.
    ///
    /// # Panics
    ///
    /// Panics if the fiber has finished.
    #[inline(always)]
    pub(crate) fn begin_resume(&mut self) -> Option<Running> {
        match self.state {
            State::Suspended => {}
            State::Running => return None,
            _ => self.start(),
        }
        self.state = State::Running;
        Some(Running {
            context: self.context.clone(),
        })
    }

    /// The second half of a resume begun by [`begin_resume`](Fiber::begin_resume): takes
    /// back the context where the fiber stopped and turns its reply into a [`Resume`].
    ///
    /// # Panics
    ///
    /// Panics if `switched` comes from another fiber's resume (its reply would be read as
    /// this fiber's result).
    #[inline(always)]
    pub(crate) fn end_resume(&mut self, switched: Switched) -> Resume<T> {
        assert!(
            self.state == State::Running
                && switched.context.stack_top() == self.context.stack_top(),
            "end_resume given another fiber's switch"
        );
        self.context = switched.context;
        self.state = State::Suspended;
        self.outcome(switched.reply)
    }

    /// Names the fiber; the name appears in the stack overflow message.
    pub fn set_name(&mut self, name: impl Into<String>) {
        let name = Some(name.into().into_boxed_str());
        // SAFETY: the guard lives in our stack's header until we drop; the handler reads
        // a name only for a fault in its guard page, and this fiber is not running.
        unsafe { (*self.guard.as_ptr()).name = name };
    }

    /// The fiber's name, if it was given one.
    pub fn name(&self) -> Option<&str> {
        // SAFETY: the guard lives in our stack's header until we drop; only `set_name`
        // changes the name, and it needs `&mut self`.
        unsafe { (*self.guard.as_ptr()).name.as_deref() }
    }

    /// Whether the fiber runs, resumed by [`begin_resume`](Fiber::begin_resume).
    pub(crate) fn is_running(&self) -> bool {
        self.state == State::Running
    }

    /// Whether the fiber has returned or panicked.
    pub fn is_finished(&self) -> bool {
        self.state == State::Finished
    }

    /// Whether the fiber has been resumed at least once.
    pub fn is_started(&self) -> bool {
        self.state != State::Unstarted
    }

    /// The top of the fiber's stack, which identifies it to [`Suspender::for_running`].
    pub(crate) fn stack_top(&self) -> *mut u8 {
        self.stack.top()
    }

    /// Usable size of the fiber's stack in bytes.
    pub fn stack_size(&self) -> usize {
        self.stack.size()
    }

    /// Switches into the fiber with `message`; returns what it hands back. The caller has
    /// made sure the fiber has not finished, and set `state` to `Suspended`.
    #[inline(always)]
    fn switch_in(&mut self, message: usize) -> usize {
        debug_assert_eq!(self.state, State::Suspended);
        // SAFETY: the stack was prepared by `context::init` and the fiber is not running:
        // `&mut self` shows nobody else is inside `resume`, and so that the fiber, which
        // could reach its own `Fiber` only through shared state made after it (a `RefCell`,
        // a scope's handle), cannot get a second `&mut` to it while it runs.
        unsafe { context::resume(&mut self.context, message) }
    }

    /// Turns the fiber's reply into a [`Resume`].
    #[inline(always)]
    fn outcome(&mut self, reply: usize) -> Resume<T> {
        if reply == MSG_YIELDED {
            return Resume::Yielded;
        }
        self.state = State::Finished;
        // SAFETY: a reply other than MSG_YIELDED is the address of the result in `entry`'s
        // frame, written once and never touched again by the fiber, which has ended.
        match unsafe { ptr::read(reply as *const Result<T, Payload>) } {
            Ok(value) => Resume::Finished(value),
            Err(payload) => Resume::Panicked(payload),
        }
    }

    /// Unwinds a suspended fiber's stack so its destructors run.
    fn force_unwind(&mut self) {
        for _ in 0..MAX_UNWIND_ATTEMPTS {
            // One that suspended in the middle of unwinding (in a destructor) cannot take
            // another unwind there: it would leave a destructor during an unwinding, which
            // aborts the process. Resumed plainly, it goes on with its own.
            let message = if self.unwinding {
                MSG_RESUME
            } else {
                MSG_UNWIND
            };
            let reply = self.switch_noting(message);
            if reply != MSG_YIELDED {
                // The value or payload (normally our own `ForcedUnwind`) is dropped here; a
                // panic from its destructor is not ours to report, nor may it leave before
                // `drop` has given the stack back.
                let outcome = self.outcome(reply);
                if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(move || drop(outcome))) {
                    crate::sys::drop_quietly(payload);
                }
                return;
            }
        }
        eprintln!(
            "green: a dropped fiber swallowed the unwind of its stack and suspended again \
             {MAX_UNWIND_ATTEMPTS} times; its destructors cannot complete, aborting"
        );
        std::process::abort();
    }
}

impl<T> Drop for Fiber<T> {
    fn drop(&mut self) {
        // A panic of the closure's drop (a captured value's destructor) goes on once the
        // stack is given back; the drop glue has dropped the other captures meanwhile.
        let mut closure_panic = None;
        match self.state {
            State::Unstarted => {
                let (drop_closure, closure) = (self.drop_closure, self.closure);
                // SAFETY: the closure was written by `with_stack` and, the fiber never
                // having started, not read; it is dropped once, here.
                let dropped = panic::catch_unwind(|| unsafe { drop_closure(closure) });
                closure_panic = dropped.err();
            }
            State::Suspended => self.force_unwind(),
            State::Finished => {}
            State::Running => {
                // Its stack is in use (or its `Running` was lost): freeing it is not an
                // option, nor is unwinding a process whose fiber we cannot account for.
                eprintln!("green: a running fiber was dropped; aborting");
                std::process::abort();
            }
        }
        // SAFETY: registered by `with_stack` on this thread (a `Fiber` never leaves it) and
        // not since; the guard is not used after this point. The fiber has finished or never
        // started, so it is not resumed again.
        unsafe {
            overflow::unregister(self.guard.as_ptr());
            ptr::drop_in_place(self.guard.as_ptr());
            context::release(&self.context);
        }
        // SAFETY: `stack` is not used after this point.
        let stack = unsafe { ManuallyDrop::take(&mut self.stack) };
        stack::give_back(stack);
        if let Some(payload) = closure_panic {
            panic::resume_unwind(payload);
        }
    }
}

impl<T> fmt::Debug for Fiber<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fiber")
            .field("name", &self.name())
            .field("state", &self.state)
            .field("stack", &*self.stack)
            .finish()
    }
}

/// A fiber being resumed by [`Fiber::begin_resume`]: its context, to switch into it once.
#[derive(Debug)]
pub(crate) struct Running {
    /// A copy of the fiber's context; the `Fiber`'s own is stale until `end_resume`.
    context: Context,
}

/// A [`Running`] fiber that has switched back: where it stopped, and what it replied.
#[derive(Debug)]
#[must_use = "the fiber stays marked running until `end_resume` takes this"]
pub(crate) struct Switched {
    /// The fiber's context, with the stack pointer it left.
    context: Context,
    /// Its reply: `MSG_YIELDED`, or the address of its result.
    reply: usize,
}

impl Running {
    /// Top of the fiber's stack.
    #[inline(always)]
    pub(crate) fn stack_top(&self) -> *mut u8 {
        self.context.stack_top()
    }

    /// Switches into the fiber until it suspends, returns or panics.
    #[inline(always)]
    pub(crate) fn switch(mut self) -> Switched {
        // SAFETY: `begin_resume` copied this context from a suspended or unstarted fiber
        // and marked it running (nothing resumes it, nor drops it, until `end_resume`);
        // `self` is consumed, so the switch happens once.
        let reply = unsafe { context::resume(&mut self.context, MSG_RESUME) };
        Switched {
            context: self.context,
            reply,
        }
    }
}

/// Drops an `F` in place.
///
/// # Safety
///
/// `data` must point at a live, aligned `F` that nobody uses afterwards.
unsafe fn drop_closure<F>(data: *mut u8) {
    // SAFETY: as the caller guarantees.
    unsafe { ptr::drop_in_place(data.cast::<F>()) }
}

/// The fiber's first and last Rust frame, entered from the trampoline.
///
/// Runs the closure under `catch_unwind`, then hands the address of the result to the
/// resumer in a final switch and is never resumed again.
///
/// # Safety
///
/// Entered only by the trampoline of a stack prepared by [`Fiber::with_stack`], with `data`
/// pointing at the closure placed there.
unsafe extern "C" fn entry<F, T, const SHARED_FLOAT_CONTROL: bool>(
    message: usize,
    stack_top: *mut u8,
    data: *mut u8,
) -> !
where
    F: FnOnce(&Suspender) -> T,
{
    // SAFETY: we are the entry of the fiber of `stack_top`, and nothing ran before.
    unsafe { context::entered(stack_top) };
    debug_assert_eq!(message, MSG_RESUME);
    // SAFETY: the closure was written at `data` by `with_stack` and is read exactly once.
    let f = unsafe { data.cast::<F>().read() };
    // SAFETY: `with_stack` placed the fiber's guard in its stack header.
    let stack_low = unsafe { (*guard_of(stack_top)).stack_low() };
    // The flag is a constant here, so the closure's suspensions compile to one switch.
    let suspender = Suspender {
        stack_top,
        stack_low,
        stack_span: stack_top as usize - stack_low,
        shared_float_control: SHARED_FLOAT_CONTROL,
    };
    let result: Result<T, Payload> = panic::catch_unwind(AssertUnwindSafe(|| f(&suspender)));
    let result = ManuallyDrop::new(result);
    // SAFETY: we run on the fiber of `stack_top`. The resumer moves the result out of this
    // frame, which stays intact because the fiber is never resumed again: `resume` refuses
    // to resume a finished fiber.
    unsafe {
        context::exit(
            &*result as *const Result<T, Payload> as usize,
            stack_top,
            SHARED_FLOAT_CONTROL,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{Fiber, Resume};

    #[test]
    fn a_split_resume_runs_the_fiber_as_resume_does() {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe {
            Fiber::new(|suspender| {
                suspender.suspend();
                7
            })
        }
        .unwrap();
        let running = fiber.begin_resume().expect("suspended");
        assert!(fiber.is_running());
        // Running: a second resume is refused, not nested.
        assert!(fiber.begin_resume().is_none());
        let switched = running.switch();
        assert!(matches!(fiber.end_resume(switched), Resume::Yielded));
        assert!(!fiber.is_running());
        // The context came back: the plain resume goes on from the same point.
        assert!(matches!(fiber.resume(), Resume::Finished(7)));
    }

    #[test]
    fn another_fibers_switch_is_refused() {
        // SAFETY: `a` is dropped; `b` is leaked while started (below), but its frames lend
        // out no thread-local.
        let (mut a, mut b) = unsafe {
            (
                Fiber::new(|suspender| suspender.suspend()).unwrap(),
                Fiber::new(|suspender| suspender.suspend()).unwrap(),
            )
        };
        let switched_b = b.begin_resume().unwrap().switch();
        let switched_a = a.begin_resume().unwrap().switch();
        let wrong = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _ = a.end_resume(switched_b);
        }));
        assert!(wrong.is_err());
        // `a` is still marked running: its own switch is taken.
        assert!(matches!(a.end_resume(switched_a), Resume::Yielded));
        drop(a);
        // `b`'s switch was lost with the panic: it stays running, and dropping it would
        // abort (its saved stack pointer is gone). Leaked, stack and all.
        assert!(b.is_running());
        std::mem::forget(b);
    }
}
