//! Telling AddressSanitizer and ThreadSanitizer about fiber switches.
//!
//! Both sanitizers assume that a thread runs on one stack. A switch to a fiber breaks that:
//! ASan takes the fiber's frames for wild writes below the thread's stack (its
//! `__asan_handle_no_return`, called before every panic, then warns that it "is ignoring"
//! the request and leaves stale poison behind, which later reads as a stack-buffer-overflow),
//! and TSan takes accesses made by two fibers on one thread for one thread's program order.
//! Each sanitizer has an interface to be told; this module calls it at every switch, and
//! is empty unless the crate is built with `--cfg green_asan` or `--cfg green_tsan`.
//!
//! # Building with a sanitizer
//!
//! ```text
//! RUSTFLAGS="-Zsanitizer=address --cfg green_asan" ASAN_OPTIONS=detect_leaks=0 \
//!     cargo +nightly test --target x86_64-unknown-linux-gnu --tests
//! RUSTFLAGS="-Zsanitizer=thread --cfg green_tsan" \
//!     cargo +nightly test -Zbuild-std --release --target x86_64-unknown-linux-gnu --tests
//! ```
//!
//! `--target` keeps the flags off build scripts and proc macros. TSan needs std
//! instrumented as well (`-Zbuild-std`, from the rust-src component): it takes the locks
//! and reference counts of a prebuilt std for races.
//!
//! The cfg is ours and not rustc's `cfg(sanitize = "address")`, which is unstable: a
//! normal build on stable compiles none of this, and every hook is an empty inline
//! function. The cfg without its sanitizer fails to link (the hooks are in the sanitizer's
//! runtime); the sanitizer without the cfg runs, with the false reports described above.
//! `.ci/run` passes both together.
//!
//! # The protocol
//!
//! Every switch is a pair of calls, one on each side:
//!
//! ```text
//!   resumer (thread or fiber)                fiber
//!   -------------------------                -----
//!   before_resume: ASan start_switch(&save,
//!     the fiber's bottom and size); TSan
//!     switch_to_fiber(the fiber's), after
//!     noting the resumer's own
//!   ==== arch::resume =====================> entered (first run) or after_suspend:
//!                                              ASan finish_switch(the fiber's save,
//!                                              &the resumer's bottom and size)
//!                                            ... runs ...
//!                                            before_suspend: ASan start_switch(
//!                                              &the fiber's save, the resumer's bottom
//!                                              and size); TSan switch_to_fiber(resumer's)
//!   after_resume: ASan finish_switch(save) <==== arch::suspend ====================
//! ```
//!
//! * **The fake-stack save slot.** With `detect_stack_use_after_return` (on by default),
//!   ASan puts frames whose locals have their address taken on a *fake stack*, one per
//!   thread, and a fiber needs its own. `start_switch` stores the leaving side's fake
//!   stack in the slot it is given and detaches it; `finish_switch` reattaches the one
//!   saved in the arriving side's slot. The resumer's slot is a local of its
//!   [`resume`](super::resume), which waits on its stack; the fiber's is in its
//!   [`FiberState`]. At a fiber's first entry its slot is null, and ASan gives it a fresh
//!   fake stack when it first needs one.
//! * **Bottom and size of the target stack.** `start_switch` is told the stack about to
//!   run, so that ASan checks accesses against it. The fiber's own bounds are written by
//!   [`prepare`]; the resumer's, which the fiber needs when it suspends, are what
//!   `finish_switch` reports as the stack left behind, kept in the fiber's state until its
//!   next suspension. They land in the resumed fiber's own state, never in a
//!   thread-local, so fibers that resume fibers need no care.
//! * **A task that parks from a user's fiber.** A task that resumed a
//!   [`Fiber`](crate::fiber::Fiber) which then blocks in green (a `green::sleep` in its
//!   closure) suspends *from the user fiber's stack*: its next resume lands there, not on
//!   the task's stack. Each suspension therefore records in the suspending fiber's state
//!   which stack was running (`running`, kept per thread in `RUNNING` by every resume),
//!   and the next resume tells the sanitizers about that stack: its bounds to ASan, its
//!   TSan fiber to TSan. With the task's own instead, TSan popped the user fiber's frames
//!   off the task's shadow call stack until it ran below its start and crashed (SIGSEGV
//!   in about one run in ten of `tests/user_fibers_in_tasks.rs`).
//! * **A fiber's exit.** The last switch out of a finished fiber ([`before_exit`]) passes a
//!   null save slot: ASan then frees the fiber's fake stack, which nothing will reattach.
//!   The resumer still reads the fiber's result from its entry's frame after that: the
//!   frame is on the real stack, as ASan gives no fake frame to a function with inline
//!   assembly, and the entry holds the switch (inlined). The frames left on the real stack
//!   (the fiber's entry never returns) keep their poison; [`prepare`] clears a stack's
//!   poison before the next fiber is laid out on it. TSan's fiber is destroyed by
//!   [`release`], when the `Fiber` drops on its resumer's side: TSan does not let a fiber
//!   destroy itself.
//! * **Leaks are not looked for.** LeakSanitizer scans each thread's *current* stack and
//!   fake stack only: not the stacks and fake stacks of suspended fibers, nor the thread's
//!   own stack while it runs a fiber. What only those hold looks leaked (the worker loop's
//!   state, if the process exits while a fiber runs; whatever a parked fiber owns), so
//!   `.ci/run` runs ASan with `detect_leaks=0`. No interface tells LeakSanitizer about a
//!   detached fake stack.
//! * **TSan's synchronisation.** `switch_to_fiber` with flags 0 makes each switch a
//!   synchronisation point (what one side did before the switch happens before what the
//!   other does after), which is what a switch on one thread is. A new TSan fiber also
//!   starts after what its creator did.

#[cfg(any(green_asan, green_tsan))]
use std::ffi::c_void;
#[cfg(green_asan)]
use std::ptr;

/// What the sanitizers need to know of one fiber, kept in its stack header (see the
/// [context module](super)); empty, and taking no room, without a sanitizer cfg.
#[repr(C)]
pub(crate) struct FiberState {
    /// The fiber's fake stack while it is switched out; null until its first suspension.
    #[cfg(green_asan)]
    fake_stack: *mut c_void,
    /// Lowest usable address of the fiber's stack.
    #[cfg(green_asan)]
    bottom: *const c_void,
    /// Bytes from `bottom` to the stack top.
    #[cfg(green_asan)]
    size: usize,
    /// Lowest address of the resumer's stack, as ASan reported it at the fiber's last
    /// switch in; the target of its next switch out.
    #[cfg(green_asan)]
    resumer_bottom: *const c_void,
    /// Size of the resumer's stack, reported with `resumer_bottom`.
    #[cfg(green_asan)]
    resumer_size: usize,
    /// TSan's handle of this fiber, created by `prepare`, destroyed by `release`.
    #[cfg(green_tsan)]
    fiber: *mut c_void,
    /// TSan's handle of the resumer, written at each resume; the target of the next switch
    /// out.
    #[cfg(green_tsan)]
    resumer: *mut c_void,
    /// The state of the stack the fiber was running on when it last suspended: its own,
    /// or that of a user's [`Fiber`](crate::fiber::Fiber) which it had resumed and which
    /// blocked in green, so that the task parked from that fiber's stack. Its next resume
    /// lands on that stack, and the sanitizers must be told so. Written by `prepare` (its
    /// own) and by every suspension.
    #[cfg(any(green_asan, green_tsan))]
    running: *mut FiberState,
}

#[cfg(any(green_asan, green_tsan))]
thread_local! {
    /// The state of the fiber stack this thread runs on, null on the thread's own stack:
    /// set by each resume, put back when the fiber switches back to its resumer.
    static RUNNING: std::cell::Cell<*mut FiberState> =
        const { std::cell::Cell::new(std::ptr::null_mut()) };
}

/// Bytes of the stack header that hold the [`FiberState`]: its size rounded up to 16, so
/// that what lies below stays 16-byte aligned. Zero without a sanitizer cfg.
pub(crate) const STATE_SIZE: usize = size_of::<FiberState>().next_multiple_of(16);

/// What the resumer keeps on its own stack across a resume.
pub(crate) struct Resumer {
    /// The resumer's fake stack, detached by `start_switch` and reattached after.
    #[cfg(green_asan)]
    fake_stack: *mut c_void,
    /// The state of the resumer's own stack (null: the thread's), which runs again after
    /// the switch back.
    #[cfg(any(green_asan, green_tsan))]
    running: *mut FiberState,
}

#[cfg(green_asan)]
unsafe extern "C" {
    fn __sanitizer_start_switch_fiber(
        fake_stack_save: *mut *mut c_void,
        bottom: *const c_void,
        size: usize,
    );
    fn __sanitizer_finish_switch_fiber(
        fake_stack_save: *mut c_void,
        bottom_old: *mut *const c_void,
        size_old: *mut usize,
    );
    fn __asan_unpoison_memory_region(address: *const c_void, size: usize);
}

#[cfg(green_tsan)]
unsafe extern "C" {
    fn __tsan_get_current_fiber() -> *mut c_void;
    fn __tsan_create_fiber(flags: u32) -> *mut c_void;
    fn __tsan_destroy_fiber(fiber: *mut c_void);
    fn __tsan_switch_to_fiber(fiber: *mut c_void, flags: u32);
}

/// The fiber state in the header of the stack whose top is `stack_top`.
#[cfg(any(green_asan, green_tsan))]
#[inline(always)]
fn state(stack_top: *mut u8) -> *mut FiberState {
    stack_top.wrapping_sub(super::HEADER_SIZE).cast()
}

/// Makes the stack from `bottom` to `top` ready for a new fiber: clears the poison an
/// earlier fiber's frames left on it, creates its TSan fiber, and writes the fiber's
/// state. Called before anything else is written to the stack.
///
/// # Safety
///
/// `bottom..top` must be a writable stack that no fiber uses, `top` 16-byte aligned with
/// at least `HEADER_SIZE` bytes below it; [`release`] must be called before it is prepared
/// again.
#[inline(always)]
pub(crate) unsafe fn prepare(bottom: *mut u8, top: *mut u8) {
    #[cfg(green_asan)]
    {
        let size = top as usize - bottom as usize;
        // SAFETY: the caller guarantees that the range is one stack that no frame uses;
        // ASan only rewrites its shadow.
        unsafe { __asan_unpoison_memory_region(bottom.cast(), size) };
        // SAFETY: the state lies in the header, inside the stack, aligned (the top is
        // 16-byte aligned and the state's size a multiple of 16).
        unsafe {
            let state = state(top);
            (*state).fake_stack = ptr::null_mut();
            (*state).bottom = bottom.cast();
            (*state).size = size;
            (*state).resumer_bottom = ptr::null();
            (*state).resumer_size = 0;
        }
    }
    #[cfg(green_tsan)]
    // SAFETY: as above for the state; TSan's create takes no pointer.
    unsafe {
        let state = state(top);
        (*state).fiber = __tsan_create_fiber(0);
        (*state).resumer = std::ptr::null_mut();
    }
    #[cfg(any(green_asan, green_tsan))]
    // SAFETY: as above for the state.
    unsafe {
        let state = state(top);
        (*state).running = state;
    }
    let _ = (bottom, top);
}

/// The fiber of `stack_top` is gone: destroys its TSan fiber.
///
/// # Safety
///
/// `stack_top` must be the top of a stack given to [`prepare`], not released since, whose
/// fiber is not running (it has finished, or it is never resumed again).
#[inline(always)]
pub(crate) unsafe fn release(stack_top: *mut u8) {
    #[cfg(green_tsan)]
    // SAFETY: `prepare` created the fiber; it is not the one running.
    unsafe {
        __tsan_destroy_fiber((*state(stack_top)).fiber)
    };
    let _ = stack_top;
}

/// On the resumer, right before the switch into the fiber of `stack_top`.
///
/// # Safety
///
/// `stack_top` must be the top of a prepared stack whose fiber is about to be resumed by
/// this thread; [`after_resume`] must follow the switch back.
#[inline(always)]
pub(crate) unsafe fn before_resume(stack_top: *mut u8) -> Resumer {
    // The stack that runs after the switch: the fiber's own, or the user fiber's it
    // suspended from (see `FiberState::running`).
    #[cfg(any(green_asan, green_tsan))]
    // SAFETY: the fiber is not running, so its state is ours to read; `running` points to
    // a prepared state whose stack holds the fiber's suspended frames, alive until they
    // run again.
    let (target, resumer_running) = unsafe {
        let target = (*state(stack_top)).running;
        (target, RUNNING.replace(target))
    };
    #[cfg(green_asan)]
    let mut fake_stack = ptr::null_mut();
    #[cfg(green_asan)]
    // SAFETY: `prepare` wrote the target stack's bounds; `fake_stack` outlives the call.
    unsafe {
        __sanitizer_start_switch_fiber(&mut fake_stack, (*target).bottom, (*target).size);
    }
    #[cfg(green_tsan)]
    // SAFETY: the fiber is not running, so its state is ours to write; `prepare` created
    // the target stack's TSan fiber.
    unsafe {
        (*state(stack_top)).resumer = __tsan_get_current_fiber();
        __tsan_switch_to_fiber((*target).fiber, 0);
    }
    let _ = stack_top;
    Resumer {
        #[cfg(green_asan)]
        fake_stack,
        #[cfg(any(green_asan, green_tsan))]
        running: resumer_running,
    }
}

/// On the resumer, right after the fiber switched back to it.
#[inline(always)]
pub(crate) fn after_resume(resumer: Resumer) {
    #[cfg(any(green_asan, green_tsan))]
    RUNNING.set(resumer.running);
    #[cfg(green_asan)]
    // SAFETY: `before_resume` started this switch and saved the resumer's fake stack.
    unsafe {
        __sanitizer_finish_switch_fiber(resumer.fake_stack, ptr::null_mut(), ptr::null_mut())
    };
    let _ = resumer;
}

/// On the fiber of `stack_top`, first thing at its entry: the switch into it is complete.
///
/// # Safety
///
/// As [`after_suspend`].
#[inline(always)]
pub(crate) unsafe fn entered(stack_top: *mut u8) {
    // SAFETY: as the caller guarantees; the save slot is still null from `prepare`.
    unsafe { after_suspend(stack_top) }
}

/// On the fiber of `stack_top`, right after it was switched back into.
///
/// # Safety
///
/// Must run on that fiber, right after a switch into it that [`before_resume`] started.
#[inline(always)]
pub(crate) unsafe fn after_suspend(stack_top: *mut u8) {
    #[cfg(green_asan)]
    // SAFETY: the state is the running fiber's own; ASan writes the bounds of the stack
    // that was left, the resumer's, into it.
    unsafe {
        let state = state(stack_top);
        __sanitizer_finish_switch_fiber(
            (*state).fake_stack,
            &mut (*state).resumer_bottom,
            &mut (*state).resumer_size,
        );
    }
    let _ = stack_top;
}

/// On the fiber of `stack_top`, right before it switches out to its resumer.
///
/// # Safety
///
/// Must run on that fiber, which [`after_suspend`] (or [`entered`]) last told about its
/// resumer.
#[inline(always)]
pub(crate) unsafe fn before_suspend(stack_top: *mut u8) {
    #[cfg(any(green_asan, green_tsan))]
    // SAFETY: the state is the running fiber's own. The stack this thread runs on is the
    // one its next resume lands on.
    unsafe {
        (*state(stack_top)).running = RUNNING.get()
    };
    #[cfg(green_asan)]
    // SAFETY: the state is the running fiber's own, the resumer's bounds as ASan gave them.
    unsafe {
        let state = state(stack_top);
        __sanitizer_start_switch_fiber(
            &mut (*state).fake_stack,
            (*state).resumer_bottom,
            (*state).resumer_size,
        );
    }
    #[cfg(green_tsan)]
    // SAFETY: the resumer wrote its TSan fiber before it switched in.
    unsafe {
        __tsan_switch_to_fiber((*state(stack_top)).resumer, 0)
    };
    let _ = stack_top;
}

/// On the fiber of `stack_top`, right before its last switch out: as [`before_suspend`],
/// but ASan frees the fiber's fake stack.
///
/// # Safety
///
/// As [`before_suspend`], and the fiber must never run again.
#[inline(always)]
pub(crate) unsafe fn before_exit(stack_top: *mut u8) {
    #[cfg(green_asan)]
    // SAFETY: as in `before_suspend`; a null save slot tells ASan that this stack's fake
    // stack will not be reattached.
    unsafe {
        let state = state(stack_top);
        __sanitizer_start_switch_fiber(
            ptr::null_mut(),
            (*state).resumer_bottom,
            (*state).resumer_size,
        );
    }
    #[cfg(green_tsan)]
    // SAFETY: as in `before_suspend`.
    unsafe {
        __tsan_switch_to_fiber((*state(stack_top)).resumer, 0)
    };
    let _ = stack_top;
}
