//! Small helpers the whole crate shares: a lock that ignores poison, catching the panics
//! of user code, and the thin system calls for CPUs.

pub(crate) mod epoll;
pub(crate) mod socket;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// Locks `mutex`, ignoring poison: green's own locks guard plain data, never left half
/// changed by a panic, because user code (wakers, destructors) runs only after they are
/// released.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// Runs user code that green calls on a thread where a panic must not unwind further (a
/// worker's loop, a completion that must finish): a waker's `wake`, a destructor. A panic
/// is caught, reported once on stderr with `what` (for example "a waker's wake()"), and
/// its payload dropped, inside `catch_unwind` too, since a payload's own destructor may
/// panic.
pub(crate) fn catch_and_report(what: &str, f: impl FnOnce()) {
    if let Err(payload) = panic::catch_unwind(AssertUnwindSafe(f)) {
        let message = message_of(&*payload).unwrap_or("a payload that is not a string");
        eprintln!(
            "green: {what} panicked ({message}); the panic was caught and the runtime goes on"
        );
        drop_quietly(payload);
    }
}

/// Drops a panic payload; a panic from its destructor is dropped in turn, without a word.
pub(crate) fn drop_quietly(payload: Box<dyn Any + Send>) {
    if let Err(again) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        // A payload whose destructor panics with a payload whose destructor panics:
        // leaked, rather than loop.
        std::mem::forget(again);
    }
}

/// The message of a panic payload, when it is a string.
pub(crate) fn message_of(payload: &(dyn Any + Send)) -> Option<&str> {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
}

/// The CPUs the calling thread may run on; empty if that cannot be read.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    // SAFETY: `cpu_set_t` is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid, writable `cpu_set_t` of the size passed.
    let result =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    if result != 0 {
        return Vec::new();
    }
    let bits = 8 * std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: `CPU_ISSET` reads the set for an index below its size in bits.
    (0..bits)
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Lets the calling thread run on `cpus` (from `allowed_cpus`); best effort.
pub(crate) fn set_thread_affinity(cpus: &[usize]) {
    // SAFETY: `cpu_set_t` is plain bits; all-zero is the empty set.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    for &cpu in cpus {
        // SAFETY: the CPUs came from `allowed_cpus`, so each is below the set's size in
        // bits.
        unsafe { libc::CPU_SET(cpu, &mut set) };
    }
    // SAFETY: `set` is a valid `cpu_set_t` of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) };
}

/// How many times the OS has preempted the calling thread (taken its CPU while it could
/// still run: `ru_nivcsw` of `getrusage(RUSAGE_THREAD)`), one system call; `None` if the
/// call fails.
pub(crate) fn involuntary_switches() -> Option<libc::c_long> {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: `usage` is valid for writes of a `rusage`; RUSAGE_THREAD is a valid target.
    let result = unsafe { libc::getrusage(libc::RUSAGE_THREAD, usage.as_mut_ptr()) };
    // SAFETY: on success the kernel filled it; it was zeroed anyway.
    (result == 0).then(|| unsafe { usage.assume_init() }.ru_nivcsw)
}

/// The CPU the calling thread runs on, if known (a read of the thread's `rseq` area in
/// glibc, no system call).
pub(crate) fn current_cpu() -> Option<usize> {
    // SAFETY: `sched_getcpu` has no preconditions.
    let cpu = unsafe { libc::sched_getcpu() };
    usize::try_from(cpu).ok()
}
