//! The waker of every task: its data pointer is the task's header, which owns one
//! reference; the vtable is the same for every task.

use std::ptr::NonNull;
use std::task::{RawWaker, RawWakerVTable};

use super::Header;

/// The waker vtable of every task: the data pointer is its header, which owns one reference.
pub(crate) static WAKER_VTABLE: RawWakerVTable =
    RawWakerVTable::new(clone_waker, wake, wake_by_ref, drop_waker);

/// The header behind a waker's data pointer.
///
/// # Safety
///
/// `ptr` is the data pointer of a waker with [`WAKER_VTABLE`].
unsafe fn header_of(ptr: *const ()) -> NonNull<Header> {
    // SAFETY: such a waker's data pointer is a task header, never null.
    unsafe { NonNull::new_unchecked(ptr.cast_mut().cast()) }
}

/// # Safety
/// `ptr` is the data pointer of a live waker with [`WAKER_VTABLE`].
unsafe fn clone_waker(ptr: *const ()) -> RawWaker {
    // SAFETY: the waker being cloned holds a reference, so the header is alive.
    unsafe { header_of(ptr).as_ref() }.acquire();
    RawWaker::new(ptr, &WAKER_VTABLE)
}

/// # Safety
/// `ptr` is the data pointer of a waker with [`WAKER_VTABLE`]; its reference is consumed.
unsafe fn wake(ptr: *const ()) {
    // SAFETY: as the caller guarantees.
    unsafe {
        wake_by_ref(ptr);
        drop_waker(ptr);
    }
}

/// # Safety
/// `ptr` is the data pointer of a live waker with [`WAKER_VTABLE`].
unsafe fn wake_by_ref(ptr: *const ()) {
    // SAFETY: the waker holds a reference for the duration of the call.
    unsafe { header_of(ptr).as_ref() }.wake();
}

/// # Safety
/// `ptr` is the data pointer of a waker with [`WAKER_VTABLE`]; its reference is released.
unsafe fn drop_waker(ptr: *const ()) {
    // SAFETY: the waker owns one reference.
    unsafe { Header::release(header_of(ptr)) };
}
