//! [`Builder`]: a fiber's options (stack size, name, [`FloatControl`]).

use std::io;

use super::scope::{Scope, ScopedFiber};
use super::{Fiber, Suspender};
use crate::context::stack::{self, DEFAULT_STACK_SIZE};

/// What the switch does with a fiber's floating-point control state.
///
/// On x86_64 the System V ABI makes the control bits of MXCSR (rounding mode,
/// flush-to-zero, denormals-are-zero, exception masks) and the x87 control word
/// callee-saved: a function gives them back as it found them. Switching fibers is a call
/// as far as each side can tell, so by default each side keeps its own.
///
/// Keeping them costs four reads of the state per round trip, 3.5-4 ns on the Xeon VM
/// this crate is measured on: as much as the whole rest of the switch, which runs twice
/// as fast without them (see the x86_64 context module for figures). Rust code itself
/// always runs with the default state: the standard library documents any change to it
/// as undefined behaviour while Rust code runs. So the saving only matters to a fiber
/// that suspends while foreign code (C, inline assembly) has the state changed, or whose
/// resumer does. A fiber that knows it never does can share the thread's state instead.
///
/// On riscv64 and aarch64 the state is not part of the call contract (`fcsr` and
/// `FPCR` are thread state), the switch never saves it, and both choices behave alike.
///
/// ```
/// use green::fiber::{Builder, FloatControl, Resume};
///
/// // SAFETY: the fiber is not leaked.
/// let mut fiber = unsafe {
///     Builder::new()
///         .float_control(FloatControl::Shared)
///         .build(|suspender| {
///             suspender.suspend();
///             1.5f64 * 2.0
///         })
/// }
/// .unwrap();
/// assert!(matches!(fiber.resume(), Resume::Yielded));
/// assert!(matches!(fiber.resume(), Resume::Finished(3.0)));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FloatControl {
    /// Each side keeps its own control state across every switch, as the ABI says. A new
    /// fiber starts with the state of the thread that made it.
    #[default]
    Saved,
    /// The fiber runs with its thread's control state, whatever it is when the fiber is
    /// resumed, and a change the fiber makes stays in effect after it suspends. The
    /// switch neither reads nor writes the state.
    Shared,
}

/// Options for a new [`Fiber`]: stack size, name and [`FloatControl`].
///
/// ```
/// use green::fiber::{Builder, Resume};
///
/// // SAFETY: the fiber is not leaked.
/// let mut fiber = unsafe {
///     Builder::new()
///         .stack_size(512 * 1024)
///         .name("parser")
///         .build(|_| 42)
/// }
/// .unwrap();
/// assert_eq!(fiber.name(), Some("parser"));
/// assert!(matches!(fiber.resume(), Resume::Finished(42)));
/// ```
#[derive(Debug, Clone, Default)]
pub struct Builder {
    /// Requested stack size; `None` for [`DEFAULT_STACK_SIZE`].
    stack_size: Option<usize>,
    /// The fiber's name, for the overflow message.
    name: Option<String>,
    /// What the switch does with the floating-point control state.
    float_control: FloatControl,
}

impl Builder {
    /// Options with the defaults: a stack of [`DEFAULT_STACK_SIZE`] bytes, no name and
    /// [`FloatControl::Saved`].
    pub fn new() -> Builder {
        Builder::default()
    }

    /// The stack size in bytes, rounded up to pages; see
    /// [`Fiber::with_stack_size`] for the range accepted.
    pub fn stack_size(mut self, size: usize) -> Builder {
        self.stack_size = Some(size);
        self
    }

    /// The fiber's name; it appears in the stack overflow message.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// What the switch does with the fiber's floating-point control state.
    pub fn float_control(mut self, float_control: FloatControl) -> Builder {
        self.float_control = float_control;
        self
    }

    /// A fiber that will run `f` on a stack from the process-wide pool. Nothing runs until
    /// the first [`resume`](Fiber::resume).
    ///
    /// # Errors
    ///
    /// As [`Fiber::with_stack_size`].
    ///
    /// # Safety
    ///
    /// Once started, the fiber must have finished or been dropped before its thread begins
    /// to exit (see [Leaking a started fiber](super#leaking-a-started-fiber)).
    pub unsafe fn build<F, T>(self, f: F) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T + 'static,
        T: 'static,
    {
        // SAFETY: `F` and `T` are 'static; the caller keeps the leak rule.
        unsafe { self.build_unchecked(f) }
    }

    /// A fiber of `scope` that will run `f`, with these options: [`Scope::fiber`] with a
    /// stack size, a name or a [`FloatControl`]. Safe, and `f` may borrow what outlives the
    /// scope.
    ///
    /// ```
    /// use green::fiber::{self, Builder, Resume};
    ///
    /// let words = ["a", "b"];
    /// fiber::scope(|scope| {
    ///     let mut fiber = Builder::new()
    ///         .name("counter")
    ///         .stack_size(256 * 1024)
    ///         .build_scoped(scope, |_| words.len())
    ///         .unwrap();
    ///     assert_eq!(fiber.name().as_deref(), Some("counter"));
    ///     assert!(matches!(fiber.resume(), Resume::Finished(2)));
    /// });
    /// ```
    ///
    /// # Errors
    ///
    /// As [`Fiber::with_stack_size`].
    pub fn build_scoped<'scope, 'env, F, T>(
        self,
        scope: &'scope Scope<'scope, 'env>,
        f: F,
    ) -> io::Result<ScopedFiber<'scope, T>>
    where
        F: FnOnce(&Suspender) -> T + 'scope,
        T: 'scope,
    {
        // SAFETY: `adopt` hands the fiber to the scope, which drops it before `'scope`
        // ends, hence before its thread exits.
        let fiber = unsafe { self.build_unchecked(f)? };
        Ok(scope.adopt(fiber))
    }

    /// `build` without the bounds.
    ///
    /// # Safety
    ///
    /// As [`build`](Builder::build), and if `F` or `T` is not `'static`, the fiber must be
    /// dropped before the shortest of their lifetimes ends.
    unsafe fn build_unchecked<F, T>(self, f: F) -> io::Result<Fiber<T>>
    where
        F: FnOnce(&Suspender) -> T,
    {
        let stack = stack::take(self.stack_size.unwrap_or(DEFAULT_STACK_SIZE))?;
        // SAFETY: as the caller guarantees.
        let mut fiber = unsafe {
            match self.float_control {
                FloatControl::Saved => Fiber::on_stack::<F, false>(stack, f)?,
                FloatControl::Shared => Fiber::on_stack::<F, true>(stack, f)?,
            }
        };
        if let Some(name) = self.name {
            fiber.set_name(name);
        }
        Ok(fiber)
    }
}
