//! Stack overflow detection for fibers.
//!
//! A fiber that runs off the bottom of its stack touches the `PROT_NONE` guard below it (a
//! page, deeper on riscv64, which has no stack probes: see `stack::GUARD_SIZE`) and the
//! kernel sends SIGSEGV (SIGBUS on some kernels). std's handler only knows std threads'
//! guard pages, so without help the process would die with a bare "Segmentation fault".
//!
//! We install a handler for both signals, once per process, with `SA_ONSTACK` so that it
//! runs on the thread's alternate signal stack (the fiber stack is full: the handler could
//! not run there). Each thread that runs fibers gets an alternate stack if it has none:
//! std gives one to the threads it starts, so that is usually only the case on threads
//! started some other way. Each fiber registers its [`Guard`] with its thread for as long
//! as it lives.
//!
//! The handler looks the faulting address up among the guard pages registered on the
//! faulting thread (a fault is rare, so a walk of the list is cheap enough). A guard page is
//! `PROT_NONE` and only its own fiber's stack grows into it, so a hit means that fiber
//! overflowed: the handler prints which fiber, its stack size and how to raise it, then
//! aborts, as std does for threads. Anything else goes to the handler that was
//! installed before ours, std's included, so "thread 'main' has overflowed its stack" keeps
//! working; if that was the default action, we restore it and return, and the fault
//! happens again and kills the process the usual way.
//!
//! # Why a list, and not a pointer to the running fiber's guard
//!
//! Registering once per fiber costs nothing per switch. A thread-local "running fiber"
//! pointer has to be set and put back around every resume, and on x86_64 those two stores
//! cost 1 ns of a 3.7 ns round trip (measured without the floating-point control state):
//! the compiler keeps the thread-local's offset in a register that the switch saves and
//! restores through memory, so the stores wait for the switch back.

use std::cell::Cell;
use std::fmt::Write as _;
use std::io;
use std::mem;
use std::ptr;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicPtr, Ordering};

use super::stack::page_size;

/// A fiber's guard page, as the handler needs to know it.
///
/// A fiber keeps its guard in the header of its own stack, where the address stays put
/// however the `Fiber` moves, and registers it on its thread with [`register`].
#[derive(Debug)]
pub(crate) struct Guard {
    /// First byte of the guard.
    low: usize,
    /// One past the last byte of the guard: the lowest usable stack address.
    high: usize,
    /// Usable size of the stack, for the message.
    stack_size: usize,
    /// The fiber's name, if it has one: `Fiber::set_name`'s, which a runtime's worker sets
    /// to its task's name (`green::task::Builder::name`).
    pub(crate) name: Option<Box<str>>,
    /// The guard registered on this thread before this one, or null: the handler walks the
    /// list through this link.
    next: AtomicPtr<Guard>,
    /// The guard registered after this one, or null if this one is the list's head.
    previous: *mut Guard,
}

impl Guard {
    /// The guard of a stack whose guard page spans `low..high` and whose usable size is
    /// `stack_size` bytes; not registered yet.
    pub(crate) fn new(low: usize, high: usize, stack_size: usize) -> Guard {
        Guard {
            low,
            high,
            stack_size,
            name: None,
            next: AtomicPtr::new(ptr::null_mut()),
            previous: ptr::null_mut(),
        }
    }

    /// The lowest usable address of the stack: one past the guard page.
    pub(crate) fn stack_low(&self) -> usize {
        self.high
    }
}

thread_local! {
    /// The guards of the fibers living on this thread, most recent first, linked through
    /// `Guard::next`. Read by the signal handler: a `const` thread-local without a
    /// destructor needs no lazy initialisation, so reading it is async-signal-safe. Each
    /// change to the list takes effect with one store of a link, so a handler that
    /// interrupts the change walks a well-formed list of guards that are all in place.
    static GUARDS: AtomicPtr<Guard> = const { AtomicPtr::new(ptr::null_mut()) };

    /// Whether this thread is known to have an alternate signal stack.
    static ALT_STACK_READY: Cell<bool> = const { Cell::new(false) };

    /// An alternate signal stack we installed on this thread, freed at thread exit.
    static OWN_ALT_STACK: Cell<Option<AltStack>> = const { Cell::new(None) };
}

/// Adds `guard` to this thread's list, where the handler finds it.
///
/// # Safety
///
/// `guard` must point at a valid, unregistered [`Guard`] that stays in place and valid
/// until [`unregister`] removes it, on this same thread.
pub(crate) unsafe fn register(guard: *mut Guard) {
    GUARDS.with(|head| {
        let first = head.load(Ordering::Relaxed);
        // SAFETY: `guard` is valid as the caller guarantees; `first`, if not null, is a
        // registered guard, valid until it is unregistered on this thread, which cannot
        // happen during this call.
        unsafe {
            (*guard).next.store(first, Ordering::Relaxed);
            (*guard).previous = ptr::null_mut();
            if !first.is_null() {
                (*first).previous = guard;
            }
        }
        // Publish: the handler sees either the old list or the new one, complete.
        head.store(guard, Ordering::Release);
    });
}

/// Removes `guard` from this thread's list.
///
/// # Safety
///
/// `guard` must have been registered with [`register`] on this thread, and not removed.
pub(crate) unsafe fn unregister(guard: *mut Guard) {
    GUARDS.with(|head| {
        // SAFETY: `guard` and its neighbours are registered on this thread, so valid until
        // each is unregistered here, which cannot happen during this call.
        unsafe {
            let next = (*guard).next.load(Ordering::Relaxed);
            let previous = (*guard).previous;
            // Unlink: from here the handler no longer reaches `guard`.
            if previous.is_null() {
                head.store(next, Ordering::Release);
            } else {
                (*previous).next.store(next, Ordering::Release);
            }
            if !next.is_null() {
                (*next).previous = previous;
            }
        }
    });
}

/// The handlers that were installed before ours, for SIGSEGV and SIGBUS.
static PREVIOUS: OnceLock<[libc::sigaction; 2]> = OnceLock::new();

/// Makes sure the handler is installed and this thread has an alternate signal stack.
///
/// Cheap after the first call on a thread.
#[inline]
pub(crate) fn ensure_handler() {
    if !ALT_STACK_READY.with(Cell::get) {
        install_slow();
    }
}

#[cold]
fn install_slow() {
    // Record the actions installed before ours first, so the handler can chain from its
    // very first run.
    // SAFETY: SIGSEGV and SIGBUS are valid signal numbers.
    PREVIOUS
        .get_or_init(|| unsafe { [current_action(libc::SIGSEGV), current_action(libc::SIGBUS)] });
    install_handlers();
    if ensure_alt_stack().is_ok() {
        ALT_STACK_READY.with(|ready| ready.set(true));
    }
}

/// Reads the action currently installed for `signal`.
///
/// # Safety
///
/// `signal` must be a valid signal number.
unsafe fn current_action(signal: libc::c_int) -> libc::sigaction {
    // SAFETY: an all-zero sigaction is a valid value to be overwritten.
    let mut action: libc::sigaction = unsafe { mem::zeroed() };
    // SAFETY: a null new action makes sigaction only report the current one.
    unsafe { libc::sigaction(signal, ptr::null(), &mut action) };
    action
}

/// Installs our handler for SIGSEGV and SIGBUS, once per process.
fn install_handlers() {
    static INSTALLED: std::sync::Once = std::sync::Once::new();
    INSTALLED.call_once(|| {
        for signal in [libc::SIGSEGV, libc::SIGBUS] {
            // SAFETY: an all-zero sigaction is valid; we fill in the handler and flags.
            let mut action: libc::sigaction = unsafe { mem::zeroed() };
            action.sa_sigaction = handler as *const () as usize;
            action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
            // SAFETY: `action` is a valid handler for a synchronous fault signal, and
            // PREVIOUS was filled in before, so the handler can chain from its first run.
            unsafe {
                libc::sigemptyset(&mut action.sa_mask);
                libc::sigaction(signal, &action, ptr::null_mut());
            }
        }
    });
}

/// An alternate signal stack we mapped, with a guard page below it.
struct AltStack {
    /// Start of the mapping (the guard page).
    base: *mut libc::c_void,
    /// Length of the mapping.
    len: usize,
}

impl Drop for AltStack {
    fn drop(&mut self) {
        // SAFETY: disabling the alternate stack before unmapping it, on the thread that
        // installed it (thread-local destructors run on their own thread).
        unsafe {
            let disable = libc::stack_t {
                ss_sp: ptr::null_mut(),
                ss_flags: libc::SS_DISABLE,
                ss_size: 0,
            };
            libc::sigaltstack(&disable, ptr::null_mut());
            libc::munmap(self.base, self.len);
        }
    }
}

/// Gives this thread an alternate signal stack unless it has one.
fn ensure_alt_stack() -> io::Result<()> {
    // SAFETY: an all-zero stack_t is valid to be overwritten; a null new stack only queries.
    let mut current: libc::stack_t = unsafe { mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::sigaltstack(ptr::null(), &mut current) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if current.ss_flags & libc::SS_DISABLE == 0 {
        return Ok(());
    }
    let page = page_size();
    // SAFETY: getauxval has no preconditions; 0 means "not known".
    let minimum = unsafe { libc::getauxval(libc::AT_MINSIGSTKSZ) } as usize;
    let size = (minimum.max(libc::SIGSTKSZ) + 16 * 1024).div_ceil(page) * page;
    let len = size + page;
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let base = unsafe {
        libc::mmap(
            ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let alt = AltStack { base, len };
    // SAFETY: the first page is inside the mapping; the rest becomes the signal stack,
    // kept alive (in OWN_ALT_STACK) until the thread exits.
    unsafe {
        libc::mprotect(base, page, libc::PROT_NONE);
        let stack = libc::stack_t {
            ss_sp: base.cast::<u8>().add(page).cast(),
            ss_flags: 0,
            ss_size: size,
        };
        if libc::sigaltstack(&stack, ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    OWN_ALT_STACK.with(|own| own.set(Some(alt)));
    Ok(())
}

/// The SIGSEGV/SIGBUS handler.
extern "C" fn handler(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo for a fault signal with SA_SIGINFO.
    let address = unsafe { (*info).si_addr() } as usize;
    let mut guard = GUARDS.with(|head| head.load(Ordering::Acquire));
    while !guard.is_null() {
        // SAFETY: every guard in the list is registered on this thread, so it is valid and
        // in place; the fields read here do not change while it is registered.
        let (low, high) = unsafe { ((*guard).low, (*guard).high) };
        if (low..high).contains(&address) {
            // SAFETY: as above.
            report_overflow(unsafe { &*guard });
        }
        // SAFETY: as above.
        guard = unsafe { (*guard).next.load(Ordering::Acquire) };
    }
    // SAFETY: we only arrive here for a fault that is not ours, with the kernel's arguments.
    unsafe { chain(signal, info, context) };
}

/// Prints the overflow message and aborts. Async-signal-safe: formats into a buffer on the
/// (alternate) stack and writes it with `write(2)`.
fn report_overflow(guard: &Guard) -> ! {
    let mut message = Buffer {
        bytes: [0; 1024],
        len: 0,
    };
    let mut thread = [0u8; 17];
    // SAFETY: PR_GET_NAME writes at most 16 bytes including the NUL.
    unsafe { libc::prctl(libc::PR_GET_NAME, thread.as_mut_ptr()) };
    let thread_len = thread.iter().position(|&b| b == 0).unwrap_or(16);
    let thread = std::str::from_utf8(&thread[..thread_len]).unwrap_or("?");
    let _ = write!(message, "\nthread '{thread}': fiber ");
    let _ = match &guard.name {
        Some(name) => write!(message, "'{name}'"),
        None => write!(message, "with stack at {:#x}", guard.high),
    };
    let _ = write!(
        message,
        " has overflowed its stack of {} bytes ({} KiB)\n\
         help: give it a larger stack: green::task::Builder::stack_size for one task, \
         green::Builder::stack_size for a runtime's, green::fiber::Builder::stack_size for a \
         fiber of your own; the default is 256 KiB\n\
         fatal runtime error: fiber stack overflow, aborting\n",
        guard.stack_size,
        guard.stack_size / 1024,
    );
    // SAFETY: writing our own buffer to stderr; abort is async-signal-safe.
    unsafe {
        libc::write(
            libc::STDERR_FILENO,
            message.bytes.as_ptr().cast(),
            message.len,
        );
        libc::abort();
    }
}

/// A fixed buffer that `write!` fills without allocating; output past its end is dropped.
struct Buffer {
    /// The bytes written so far, then zeros.
    bytes: [u8; 1024],
    /// How many bytes are written.
    len: usize,
}

impl std::fmt::Write for Buffer {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Hands a fault that is not a fiber overflow to the handler installed before ours.
///
/// # Safety
///
/// Must be called from the signal handler with its arguments.
unsafe fn chain(signal: libc::c_int, info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    let index = usize::from(signal != libc::SIGSEGV);
    let previous = PREVIOUS.get().map(|p| p[index].sa_sigaction);
    let flags = PREVIOUS.get().map_or(0, |p| p[index].sa_flags);
    match previous {
        Some(action) if action != libc::SIG_DFL && action != libc::SIG_IGN => {
            if flags & libc::SA_SIGINFO != 0 {
                // SAFETY: with SA_SIGINFO, `sa_sigaction` is a three-argument handler.
                let action: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { mem::transmute(action) };
                action(signal, info, context);
            } else {
                // SAFETY: without SA_SIGINFO, `sa_sigaction` is a one-argument handler.
                let action: extern "C" fn(libc::c_int) = unsafe { mem::transmute(action) };
                action(signal);
            }
        }
        _ => {
            // Restore the default action and return: the faulting instruction runs again and
            // the kernel applies it (a core dump for SIGSEGV and SIGBUS).
            // SAFETY: an all-zero sigaction with SIG_DFL is the default action.
            unsafe {
                let mut action: libc::sigaction = mem::zeroed();
                action.sa_sigaction = libc::SIG_DFL;
                libc::sigaction(signal, &action, ptr::null_mut());
            }
        }
    }
}
