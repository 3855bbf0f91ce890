//! [`scope`]: fibers made without `unsafe`, which may borrow from the caller's stack.
//!
//! A [`Fiber`] is `unsafe` to make because nothing stops its owner from leaking it while
//! it is suspended (see [Leaking a started fiber](super#leaking-a-started-fiber)). A
//! scope closes that hole the way `std::thread::scope` closes the one of borrowing
//! threads: every fiber made in it is dropped, and so unwound if it is suspended, before
//! `scope` returns, even one whose [`ScopedFiber`] handle was leaked. `scope` runs on its
//! thread's stack, so this happens before the thread can exit; and since the scope
//! outlives the fibers, they may borrow what outlives the scope.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::marker::PhantomData;
use std::panic::{self, AssertUnwindSafe};
use std::rc::{Rc, Weak};

use super::{Builder, Fiber, Payload, Resume, Suspender};
use crate::sys::drop_quietly;

/// Runs `f` with a [`Scope`] in which to make fibers that may borrow from outside it, and
/// drops every fiber made in it before returning.
///
/// A fiber is dropped with its [`ScopedFiber`] handle, as a [`Fiber`] is: a suspended one
/// is unwound, so every destructor on its stack runs. A handle that was leaked
/// (`mem::forget`, a reference cycle, a fiber that owns its own handle) does not escape
/// the scope: when `f` returns, or unwinds, the scope drops the fibers of the handles still
/// alive, newest first, fibers made meanwhile (by their destructors) included, and only
/// then returns, or goes on unwinding.
///
/// ```
/// use green::fiber::{self, Resume};
///
/// let mut log = Vec::new();
/// let total = fiber::scope(|scope| {
///     let log = &mut log;
///     let mut summer = scope
///         .fiber(move |suspender| {
///             let mut total = 0;
///             for i in 1..=3 {
///                 total += i;
///                 log.push(total);
///                 suspender.suspend();
///             }
///             total
///         })
///         .unwrap();
///     loop {
///         match summer.resume() {
///             Resume::Yielded => {}
///             Resume::Finished(total) => break total,
///             Resume::Panicked(payload) => std::panic::resume_unwind(payload),
///         }
///     }
/// });
/// assert_eq!(total, 6);
/// assert_eq!(log, [1, 3, 6]);
/// ```
///
/// A leaked handle does not keep its fiber past the scope:
///
/// ```
/// use green::fiber::{self, Resume};
/// use std::cell::Cell;
///
/// struct Unwound<'a>(&'a Cell<bool>);
/// impl Drop for Unwound<'_> {
///     fn drop(&mut self) {
///         self.0.set(true);
///     }
/// }
///
/// let unwound = Cell::new(false);
/// fiber::scope(|scope| {
///     let mut fiber = scope
///         .fiber(|suspender| {
///             let _guard = Unwound(&unwound);
///             suspender.suspend();
///         })
///         .unwrap();
///     assert!(matches!(fiber.resume(), Resume::Yielded));
///     std::mem::forget(fiber);
///     assert!(!unwound.get());
/// });
/// assert!(unwound.get());
/// ```
///
/// A handle cannot leave its scope:
///
/// ```compile_fail
/// let fiber = green::fiber::scope(|scope| scope.fiber(|_| ()).unwrap());
/// ```
///
/// # Panics
///
/// A panic of `f` goes on once the scope's fibers are dropped. A panic inside a fiber is
/// its resumer's [`Resume::Panicked`], as for any [`Fiber`]; one raised on a fiber's stack
/// while the scope unwinds it (by a destructor there) is dropped there, as [`Fiber`]'s
/// `Drop` does. A panic out of dropping a fiber that never started (a destructor of a
/// value its closure captured) waits until every fiber of the scope is dropped, then goes
/// on: the first one, and none while `f` unwinds already, as a second panic would abort.
/// The payloads of the others are dropped, and so are any panics of those drops.
///
/// Three things abort the process while the scope drops its fibers, as they would for
/// any destructor: while `f` unwinds, a fiber whose destructor suspends as it is unwound;
/// a fiber suspended in a destructor while it unwinds a panic of its own that began while
/// another fiber of the thread was suspended mid-unwind, which cannot be told apart from
/// one suspended plainly (both: see [the module docs](super#panics-and-unwinding)); and a
/// destructor that resumes a handle the scope has dropped already (it drops newest
/// first), which panics during an unwind.
pub fn scope<'env, F, R>(f: F) -> R
where
    F: for<'scope> FnOnce(&'scope Scope<'scope, 'env>) -> R,
{
    let scope = Scope {
        fibers: RefCell::new(Vec::new()),
        _scope: PhantomData,
        _env: PhantomData,
    };
    // Declared after `scope`, so dropped before it: also when `f` unwinds.
    let mut end = EndOfScope {
        scope: &scope,
        returned: false,
    };
    let result = f(&scope);
    end.returned = true;
    result
}

/// A scope to make fibers in; see [`scope`].
pub struct Scope<'scope, 'env: 'scope> {
    /// The fibers made in the scope whose handles may still be alive, oldest first. A
    /// handle's `Drop` leaves its entry dead (`Weak::strong_count` zero), and dead entries
    /// are cleared out whenever the vector would grow, so it stays as long as the number
    /// of live handles, amortised.
    fibers: RefCell<Vec<Weak<dyn Unwind + 'scope>>>,
    /// Invariant in `'scope`, as `std::thread::Scope`, so that the lifetime cannot be
    /// shortened or lengthened to let a handle out.
    _scope: PhantomData<&'scope mut &'scope ()>,
    /// Invariant in `'env`.
    _env: PhantomData<&'env mut &'env ()>,
}

impl<'scope> Scope<'scope, '_> {
    /// A fiber that will run `f` on a stack of [`DEFAULT_STACK_SIZE`] bytes from the pool;
    /// nothing runs until its first [`resume`](ScopedFiber::resume). [`Builder::build_scoped`]
    /// takes a stack size, a name or a [`FloatControl`].
    ///
    /// [`DEFAULT_STACK_SIZE`]: crate::stack::DEFAULT_STACK_SIZE
    /// [`FloatControl`]: super::FloatControl
    ///
    /// # Errors
    ///
    /// As [`Fiber::new`].
    pub fn fiber<F, T>(&'scope self, f: F) -> io::Result<ScopedFiber<'scope, T>>
    where
        F: FnOnce(&Suspender) -> T + 'scope,
        T: 'scope,
    {
        Builder::new().build_scoped(self, f)
    }

    /// Takes `fiber` into the scope: the scope drops it, at the latest, when it ends.
    pub(super) fn adopt<T: 'scope>(&'scope self, fiber: Fiber<T>) -> ScopedFiber<'scope, T> {
        let fiber = Rc::new(RefCell::new(Some(fiber)));
        let entry: Weak<RefCell<Option<Fiber<T>>>> = Rc::downgrade(&fiber);
        let entry: Weak<dyn Unwind + 'scope> = entry;
        let mut fibers = self.fibers.borrow_mut();
        if fibers.len() == fibers.capacity() {
            fibers.retain(|entry| entry.strong_count() > 0);
        }
        fibers.push(entry);
        ScopedFiber {
            fiber,
            _scope: PhantomData,
        }
    }
}

impl fmt::Debug for Scope<'_, '_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fibers = self.fibers.borrow();
        let alive = fibers.iter().filter(|entry| entry.strong_count() > 0);
        f.debug_struct("Scope")
            .field("fibers", &alive.count())
            .finish()
    }
}

/// Drops, at the end of a scope, the fibers whose handles are still alive.
struct EndOfScope<'a, 'scope, 'env> {
    /// The scope.
    scope: &'a Scope<'scope, 'env>,
    /// Whether the scope's closure returned; if not, it unwinds. (Not
    /// `std::thread::panicking()`: that is also true while another fiber of the thread is
    /// suspended in the middle of unwinding.)
    returned: bool,
}

impl Drop for EndOfScope<'_, '_, '_> {
    fn drop(&mut self) {
        // Newest first, one at a time with the list unborrowed: unwinding a fiber may make
        // more fibers in the scope, or drop the handles of others. A panic out of one drop
        // (a captured value's destructor, in a fiber that never started) must not leave
        // the older ones behind: it waits until all are dropped. Nothing in this loop
        // unwinds: `keep_first` drops a later payload quietly, even one whose destructor
        // panics with a payload whose destructor panics.
        let mut first_panic = None;
        loop {
            let Some(entry) = self.scope.fibers.borrow_mut().pop() else {
                break;
            };
            let Some(fiber) = entry.upgrade() else {
                continue; // Its handle was dropped, and the fiber with it.
            };
            if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(|| fiber.unwind())) {
                keep_first(&mut first_panic, payload);
            }
        }
        if let Some(payload) = first_panic {
            if self.returned {
                panic::resume_unwind(payload);
            }
            // `f` unwinds: a second panic out of this drop would abort.
            drop_quietly(payload);
        }
    }
}

/// Keeps `payload` if it is the first, dropping a later one (and any panic of its drop).
fn keep_first(first: &mut Option<Payload>, payload: Payload) {
    if first.is_none() {
        *first = Some(payload);
    } else {
        drop_quietly(payload);
    }
}

/// A fiber that its scope can drop without knowing its result type.
trait Unwind {
    /// Drops the fiber, unwinding it if it is suspended; its handle, if alive, is then
    /// empty.
    fn unwind(&self);
}

impl<T> Unwind for RefCell<Option<Fiber<T>>> {
    fn unwind(&self) {
        // Dropped with the cell unborrowed.
        drop(take_fiber(self));
    }
}

/// Takes the fiber out of its cell.
///
/// The cell is never borrowed here:
/// - a handle borrows it only for the length of one of its methods, lends no borrow out,
///   and runs none of its caller's code under the borrow but the fiber itself, in
///   `resume` (a `set_name` argument is converted, and a `Debug` writes to its formatter,
///   with the cell unborrowed: either may suspend a fiber that is then leaked);
/// - the scope ends only once every resume of its fibers has returned (each runs on a
///   stack above the scope's);
/// - a handle is dropped by its owner, not from inside one of its own methods.
///
/// Should it be, the fiber may be running: neither dropping it nor leaving it to outlive
/// the scope is sound, so the process aborts.
fn take_fiber<T>(cell: &RefCell<Option<Fiber<T>>>) -> Option<Fiber<T>> {
    match cell.try_borrow_mut() {
        Ok(mut fiber) => fiber.take(),
        Err(_) => {
            eprintln!("green: a scoped fiber was dropped while borrowed; aborting");
            std::process::abort();
        }
    }
}

/// A fiber made in a [`scope`]: a [`Fiber`] whose closure may borrow from outside the
/// scope, and which the scope drops at its end if its handle has not. Dropping the handle
/// drops the fiber, unwinding it if it is suspended.
///
/// Neither `Send` nor `Sync`, as a [`Fiber`]:
///
/// ```compile_fail
/// fn send<T: Send>(_: T) {}
/// green::fiber::scope(|scope| send(scope.fiber(|_| ()).unwrap()));
/// ```
pub struct ScopedFiber<'scope, T> {
    /// The fiber, shared with the scope's list (which holds it weakly); `None` once the
    /// scope has dropped it at its end.
    fiber: Rc<RefCell<Option<Fiber<T>>>>,
    /// The handle lives no longer than its scope.
    _scope: PhantomData<&'scope ()>,
}

impl<T> ScopedFiber<'_, T> {
    /// Runs the fiber until it suspends, returns or panics, as [`Fiber::resume`]. Inside a
    /// task, re-raise a cancellation it returns (see
    /// [Inside a task](super#inside-a-task)).
    ///
    /// # Panics
    ///
    /// Panics if the fiber has finished, or if its scope has dropped it already (a handle
    /// reached by a destructor while the scope ends).
    pub fn resume(&mut self) -> Resume<T> {
        let mut fiber = self.fiber.borrow_mut();
        match fiber.as_mut() {
            Some(fiber) => fiber.resume(),
            None => dropped_by_scope(),
        }
    }

    /// Names the fiber; the name appears in the stack overflow message.
    pub fn set_name(&mut self, name: impl Into<String>) {
        // Converted before the borrow: `into` is the caller's code (see `take_fiber`).
        let name = name.into();
        if let Some(fiber) = self.fiber.borrow_mut().as_mut() {
            fiber.set_name(name);
        }
    }

    /// The fiber's name, if it was given one (a copy: the handle lends out no borrow).
    pub fn name(&self) -> Option<String> {
        self.fiber.borrow().as_ref()?.name().map(str::to_owned)
    }

    /// Whether the fiber has returned or panicked (or been dropped by its scope).
    pub fn is_finished(&self) -> bool {
        self.fiber.borrow().as_ref().is_none_or(Fiber::is_finished)
    }

    /// Whether the fiber has been resumed at least once.
    pub fn is_started(&self) -> bool {
        self.fiber.borrow().as_ref().is_none_or(Fiber::is_started)
    }

    /// Usable size of the fiber's stack in bytes (0 once its scope has dropped it).
    pub fn stack_size(&self) -> usize {
        self.fiber.borrow().as_ref().map_or(0, Fiber::stack_size)
    }
}

/// Panics for the resume of a fiber its scope has dropped.
#[cold]
#[inline(never)]
fn dropped_by_scope() -> ! {
    panic!("green: resumed a scoped fiber that its scope has dropped at its end")
}

impl<T> Drop for ScopedFiber<'_, T> {
    fn drop(&mut self) {
        // Taken out first, and dropped with the cell unborrowed.
        drop(take_fiber(&self.fiber));
    }
}

impl<T> fmt::Debug for ScopedFiber<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Formatted into a string under the borrow, then written to `f` (the caller's
        // code, see `take_fiber`) without it.
        let fiber = match self.fiber.try_borrow() {
            Ok(fiber) => format!("{:?}", *fiber),
            Err(_) => "<running>".to_owned(),
        };
        write!(f, "ScopedFiber({fiber})")
    }
}

#[cfg(test)]
mod tests {
    use super::scope;

    #[test]
    fn the_list_of_fibers_does_not_grow_with_fibers_that_were_dropped() {
        scope(|scope| {
            for i in 0..10_000 {
                let mut fiber = scope.fiber(move |_| i).unwrap();
                assert!(matches!(fiber.resume(), super::Resume::Finished(n) if n == i));
            }
            let kept: Vec<_> = (0..3).map(|_| scope.fiber(|_| ()).unwrap()).collect();
            let fibers = scope.fibers.borrow();
            assert!(fibers.capacity() <= 8, "{} entries", fibers.capacity());
            assert_eq!(fibers.iter().filter(|f| f.strong_count() > 0).count(), 3);
            drop(fibers);
            drop(kept);
        });
    }
}
