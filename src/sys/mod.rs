//! Small helpers the whole crate shares: a lock that ignores poison, catching the panics
//! of user code, the thin system calls for CPUs, Valgrind's client requests
//! (`valgrind.rs`), and the recycled memory of small tasks (`blocks.rs`).

pub(crate) mod blocks;
pub(crate) mod epoll;
pub(crate) mod socket;
pub(crate) mod valgrind;
use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

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

/// `struct sched_attr` of `sched_setattr(2)`, its first version (`SCHED_ATTR_SIZE_VER0`,
/// 48 bytes): enough for a policy, a nice value and the slice request.
#[repr(C)]
#[derive(Default)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// `SCHED_FLAG_RESET_ON_FORK` of `sched_setattr(2)`, the one flag kept when a slice is set.
const SCHED_FLAG_RESET_ON_FORK: u64 = 0x01;

/// The calling thread's scheduling attributes, if a fair-class thread (`SCHED_OTHER`,
/// `SCHED_BATCH` or `SCHED_IDLE`), the only class whose slice can be asked for.
fn fair_sched_attr() -> Option<SchedAttr> {
    let mut attr = SchedAttr::default();
    // SAFETY: `attr` is a writable `sched_attr` of the size passed, alive for the call;
    // pid 0 is the calling thread and flags must be 0.
    let result = unsafe {
        libc::syscall(
            libc::SYS_sched_getattr,
            0,
            &mut attr as *mut SchedAttr,
            size_of::<SchedAttr>() as libc::c_uint,
            0,
        )
    };
    let fair = [libc::SCHED_OTHER, libc::SCHED_BATCH, libc::SCHED_IDLE];
    (result == 0 && fair.contains(&(attr.policy as i32))).then_some(attr)
}

/// The calling thread's time slice as the kernel reports it (`sched_runtime` of
/// `sched_getattr`): the slice it runs with on Linux 6.12 and later, zero on older
/// kernels; `None` for a thread outside the fair class or when the call fails.
pub(crate) fn thread_slice() -> Option<Duration> {
    fair_sched_attr().map(|attr| Duration::from_nanos(attr.runtime))
}

/// Asks the kernel for time slices of `slice` for the calling thread, keeping its policy,
/// nice value and reset-on-fork flag: `sched_setattr` with `sched_runtime`, which Linux
/// 6.12 and later take as the thread's slice request under EEVDF (clamped to 0.1-100 ms;
/// zero asks for the default) and older kernels ignore. A shorter slice gives no more CPU
/// time, only an earlier deadline: the thread runs sooner when it wakes, for less long.
/// Needs no privilege. Returns whether the kernel took the request; best effort (a thread
/// outside the fair class is left as it is).
pub(crate) fn set_thread_slice(slice: Duration) -> bool {
    let Some(mut attr) = fair_sched_attr() else {
        return false;
    };
    attr.size = size_of::<SchedAttr>() as u32;
    attr.flags &= SCHED_FLAG_RESET_ON_FORK;
    attr.runtime = u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX);
    // SAFETY: `attr` is a valid `sched_attr` of the size it states, alive for the call;
    // pid 0 is the calling thread and flags must be 0.
    let result = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    result == 0
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
