//! [`Builder::dump_on_signal`](super::Builder::dump_on_signal): a fiber dump printed to
//! stderr when the process receives a signal, as Go prints its goroutines on SIGQUIT.
//!
//! A signal handler may only make async-signal-safe calls: no allocation, no lock, nothing
//! that waits for a worker. Ours writes one byte, the signal's number, to a pipe
//! (`write(2)` is async-signal-safe; the pipe's write end does not block, so a full pipe
//! drops the byte: a dump is on its way anyway), keeping `errno` as it found it, and
//! returns. A thread of green's, `green-dump`, started when a runtime first asks for a
//! signal, blocks reading the pipe: for each byte it dumps every live runtime that asked
//! for that signal and prints the dumps to stderr. The dump runs on that ordinary thread,
//! which may allocate, lock and wait for the workers like any other caller of
//! `Runtime::dump`.
//!
//! ```text
//!   kill -QUIT pid ──► on_signal (any thread): write(pipe, SIGQUIT) ──► green-dump thread:
//!                                                                    read(pipe), dump the
//!                                                                    runtimes, eprint
//! ```
//!
//! The handler replaces the signal's action while a runtime asks for the signal; the
//! action it replaced comes back when the last such runtime shuts down. It is installed
//! with `SA_RESTART` (an interrupted system call goes on where it can; green's own waits
//! retry `EINTR`) and `SA_ONSTACK` (on a worker's thread it runs on the alternate stack of
//! green's overflow handler, not on a fiber's small stack).

use std::ffi::c_int;
use std::io::{self, Write};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::thread;

use super::dump::{self, DEFAULT_TIMEOUT};
use crate::sys::lock;
use crate::worker::RuntimeShared;

/// The pipe's write end, for the handler; -1 until the watcher thread has started.
static PIPE: AtomicI32 = AtomicI32::new(-1);

/// The runtimes that asked for a signal, and the actions our handler replaced.
static REGISTRY: Mutex<Registry> = Mutex::new(Registry {
    runtimes: Vec::new(),
    replaced: Vec::new(),
    next_key: 0,
});

/// What [`REGISTRY`] holds.
struct Registry {
    /// (signal, key, runtime) for each runtime that asked; weak, so that a runtime's
    /// shutdown is never delayed by the dump thread.
    runtimes: Vec<(c_int, u64, Weak<RuntimeShared>)>,
    /// The action each signal had before our handler, while it is installed.
    replaced: Vec<(c_int, libc::sigaction)>,
    /// The key of the next registration.
    next_key: u64,
}

// SAFETY: `libc::sigaction` is plain data (a handler address, flags, a mask): moving it
// between threads is harmless.
unsafe impl Send for Registry {}

/// A runtime's request for dumps on a signal; dropping it withdraws the request.
#[derive(Debug)]
pub(crate) struct SignalDumps {
    /// The signal.
    signal: c_int,
    /// The registration's key in the registry.
    key: u64,
}

/// Signals that cannot be caught, or that report a fault of the thread that receives
/// them (green's overflow handler owns SIGSEGV and SIGBUS): a handler that returns from
/// those would run again at once.
const REFUSED: &[c_int] = &[
    libc::SIGKILL,
    libc::SIGSTOP,
    libc::SIGSEGV,
    libc::SIGBUS,
    libc::SIGILL,
    libc::SIGFPE,
    libc::SIGTRAP,
    libc::SIGABRT,
];

/// Prints a dump of `runtime` to stderr whenever the process receives `signal`, until the
/// returned registration drops.
pub(crate) fn dump_on_signal(
    signal: c_int,
    runtime: &Arc<RuntimeShared>,
) -> io::Result<SignalDumps> {
    if signal <= 0 || signal > libc::SIGRTMAX() || REFUSED.contains(&signal) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "cannot dump fibers on signal {signal}: it cannot be caught, or reports a \
                 fault (SIGQUIT or SIGUSR1, say, can)"
            ),
        ));
    }
    start_watcher()?;
    let mut registry = lock(&REGISTRY);
    if !registry.replaced.iter().any(|&(s, _)| s == signal) {
        let replaced = install(signal)?;
        registry.replaced.push((signal, replaced));
    }
    let key = registry.next_key;
    registry.next_key += 1;
    registry
        .runtimes
        .push((signal, key, Arc::downgrade(runtime)));
    Ok(SignalDumps { signal, key })
}

impl Drop for SignalDumps {
    fn drop(&mut self) {
        let mut registry = lock(&REGISTRY);
        registry.runtimes.retain(|&(_, key, _)| key != self.key);
        if registry.runtimes.iter().any(|&(s, _, _)| s == self.signal) {
            return;
        }
        if let Some(index) = registry
            .replaced
            .iter()
            .position(|&(s, _)| s == self.signal)
        {
            let (_, replaced) = registry.replaced.swap_remove(index);
            // SAFETY: `replaced` is the action `sigaction` gave back when ours went in.
            unsafe { libc::sigaction(self.signal, &replaced, std::ptr::null_mut()) };
        }
    }
}

/// Installs [`on_signal`] for `signal`; returns the action it replaces.
fn install(signal: c_int) -> io::Result<libc::sigaction> {
    // SAFETY: all-zero is a valid `sigaction` (no handler, no flags, an empty mask).
    let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
    action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
    action.sa_flags = libc::SA_RESTART | libc::SA_ONSTACK;
    // SAFETY: as above.
    let mut replaced: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: `action` is initialised, with a mask emptied by `sigemptyset` and a handler
    // that makes only async-signal-safe calls; `replaced` is writable.
    let result = unsafe {
        libc::sigemptyset(&mut action.sa_mask);
        libc::sigaction(signal, &action, &mut replaced)
    };
    if result != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(replaced)
}

/// The signal handler: writes the signal's number to the pipe, and nothing else.
extern "C" fn on_signal(signal: c_int) {
    // SAFETY: `__errno_location` gives this thread's errno, which the interrupted code may
    // be about to read: saved here, put back below.
    let errno = unsafe { *libc::__errno_location() };
    let pipe = PIPE.load(Ordering::Relaxed);
    if pipe >= 0 {
        let byte = signal as u8;
        // SAFETY: `write(2)` is async-signal-safe, and `byte` is readable for one byte.
        unsafe { libc::write(pipe, (&raw const byte).cast(), 1) };
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
}

/// Starts the `green-dump` thread and its pipe, once per process.
fn start_watcher() -> io::Result<()> {
    static STARTED: OnceLock<Result<(), io::ErrorKind>> = OnceLock::new();
    let started = STARTED.get_or_init(|| {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors pipe2(2) returns.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error().kind());
        }
        let [read, write] = fds;
        // A full pipe drops the handler's byte rather than block it.
        // SAFETY: `write` is the pipe's write end, ours.
        unsafe { libc::fcntl(write, libc::F_SETFL, libc::O_NONBLOCK) };
        thread::Builder::new()
            .name("green-dump".into())
            .spawn(move || watch(read))
            .map_err(|error| error.kind())?;
        PIPE.store(write, Ordering::Relaxed);
        Ok(())
    });
    started.map_err(|kind| io::Error::new(kind, "cannot start green's fiber dump thread"))
}

/// The `green-dump` thread: reads signal numbers from the pipe's read end `pipe`, and
/// prints a dump of every runtime that asked for each.
fn watch(pipe: c_int) {
    let mut signals = [0u8; 64];
    loop {
        // SAFETY: `signals` is writable for its length; `pipe` is ours, open for good.
        let read = unsafe { libc::read(pipe, signals.as_mut_ptr().cast(), signals.len()) };
        let Ok(read) = usize::try_from(read) else {
            if io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return;
        };
        // A burst of the same signal makes one dump.
        let signals = &mut signals[..read];
        signals.sort_unstable();
        let mut previous = None;
        for &mut signal in signals {
            if previous.replace(signal) == Some(signal) {
                continue;
            }
            let runtimes: Vec<Arc<RuntimeShared>> = lock(&REGISTRY)
                .runtimes
                .iter()
                .filter(|&&(s, _, _)| s == c_int::from(signal))
                .filter_map(|(_, _, runtime)| runtime.upgrade())
                .collect();
            for runtime in runtimes {
                let dump = dump::dump(&runtime, DEFAULT_TIMEOUT);
                let _ = write!(io::stderr().lock(), "{dump}");
            }
        }
    }
}
