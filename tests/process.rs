//! Behaviours seen from a child process: a fiber overflowing its stack, std's own overflow
//! report, a forced unwind that cannot complete, running out of memory mappings, and a
//! fiber dump printed on a signal.
//!
//! Each case runs in a `fork`ed child whose stderr goes to a pipe, and the parent asserts
//! how the child ended and what it printed. `fork` rather than re-running the test binary,
//! because the QEMU user-mode runner used for riscv64 and aarch64 cannot re-execute it.
//! This file has its own `main` (`harness = false`) so that the children are forked from a
//! single-threaded process.

use std::hint::black_box;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::panic::{self, AssertUnwindSafe};

use green::fiber::{Fiber, Resume};
use green::stack::Stack;

/// How a child ended.
#[derive(Debug, PartialEq, Eq)]
enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

/// Runs `body` in a forked child; returns how it ended and what it wrote to stderr.
fn in_child(body: fn()) -> (Exit, String) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: this process is single-threaded (harness = false), so the child may run any
    // code.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        // SAFETY: in the child: point stderr at the pipe, run the case, exit without
        // running the parent's exit handlers.
        unsafe {
            libc::dup2(fds[1], libc::STDERR_FILENO);
            libc::close(fds[0]);
            libc::close(fds[1]);
        }
        let outcome = panic::catch_unwind(body);
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 101 }) };
    }
    // SAFETY: the parent owns the read end from here on; the write end is the child's.
    let mut reader = unsafe {
        libc::close(fds[1]);
        std::fs::File::from_raw_fd(fds[0])
    };
    let mut stderr = String::new();
    reader.read_to_string(&mut stderr).unwrap();
    let mut status = 0;
    // SAFETY: waiting for our own child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    let exit = if libc::WIFSIGNALED(status) {
        Exit::Signal(libc::WTERMSIG(status))
    } else {
        Exit::Code(libc::WEXITSTATUS(status))
    };
    (exit, stderr)
}

/// A forked child whose stderr the parent reads as it comes, and whose stdin the parent
/// writes to ([`Child::tell`]); killed and reaped on drop.
struct Child {
    /// Its process id.
    pid: libc::pid_t,
    /// The read end of its stderr.
    stderr: std::fs::File,
    /// The write end of its stdin.
    stdin: std::fs::File,
    /// What it has written to stderr so far.
    written: Vec<u8>,
}

impl Child {
    /// Runs `body` in a forked child.
    fn start(body: fn()) -> Child {
        let (mut fds, mut input) = ([0; 2], [0; 2]);
        // SAFETY: `fds` and `input` have room for the two descriptors pipe(2) returns.
        unsafe {
            assert_eq!(libc::pipe(fds.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(input.as_mut_ptr()), 0);
        }
        // SAFETY: this process is single-threaded (harness = false), so the child may run
        // any code.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork failed");
        if pid == 0 {
            // SAFETY: in the child, as in `in_child`.
            unsafe {
                libc::dup2(fds[1], libc::STDERR_FILENO);
                libc::dup2(input[0], libc::STDIN_FILENO);
                for fd in fds.into_iter().chain(input) {
                    libc::close(fd);
                }
            }
            let outcome = panic::catch_unwind(body);
            // SAFETY: _exit ends the child at once.
            unsafe { libc::_exit(if outcome.is_ok() { 0 } else { 101 }) };
        }
        // SAFETY: the parent owns the read end of the child's stderr and the write end of
        // its stdin from here on; the other ends are the child's.
        let (stderr, stdin) = unsafe {
            libc::close(fds[1]);
            libc::close(input[0]);
            (
                std::fs::File::from_raw_fd(fds[0]),
                std::fs::File::from_raw_fd(input[1]),
            )
        };
        Child {
            pid,
            stderr,
            stdin,
            written: Vec::new(),
        }
    }

    /// Writes a byte to the child's stdin, which [`wait_to_be_told`] reads there.
    fn tell(&mut self) {
        self.stdin.write_all(b"!").unwrap();
    }

    /// Reads the child's stderr until what it wrote satisfies `done` (or it closes
    /// stderr, or a minute passes); returns what it wrote.
    fn read_until(&mut self, done: impl Fn(&str) -> bool) -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut chunk = [0; 4096];
        while !done(&String::from_utf8_lossy(&self.written)) && std::time::Instant::now() < deadline
        {
            let mut poll = libc::pollfd {
                fd: self.stderr.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid `pollfd`.
            if unsafe { libc::poll(&mut poll, 1, 100) } <= 0 {
                continue;
            }
            match self.stderr.read(&mut chunk).unwrap() {
                0 => break,
                n => self.written.extend_from_slice(&chunk[..n]),
            }
        }
        String::from_utf8_lossy(&self.written).into_owned()
    }

    /// Whether the child is still running (it has not ended).
    fn running(&self) -> bool {
        let mut status = 0;
        // SAFETY: asks about our own child without waiting.
        unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) == 0 }
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(self.pid, libc::SIGKILL);
            libc::waitpid(self.pid, std::ptr::null_mut(), 0);
        }
    }
}

/// In a child, waits until the parent [`Child::tell`]s it.
fn wait_to_be_told() {
    let mut byte = [0];
    std::io::stdin().read_exact(&mut byte).unwrap();
}

/// Runs `body` in a forked child and reads its stderr until it holds `marker` (or the
/// child closes it, or a minute passes), then kills the child; returns what it read.
fn in_child_until(body: fn(), marker: &str) -> String {
    Child::start(body).read_until(|written| written.contains(marker))
}

/// Blocks on `receiver`, in a frame of its own that the dump shows.
#[inline(never)]
fn waits_for_the_signal_dump(receiver: green::sync::Receiver<u32>) -> u32 {
    let value = receiver.recv().unwrap_or(0);
    black_box(value) + 1
}

fn dump_on_signal_prints_every_fiber_to_stderr() {
    let stderr = in_child_until(
        || {
            let runtime = green::Runtime::builder()
                .workers(1)
                .dump_on_signal(libc::SIGUSR1)
                .build()
                .unwrap();
            let (_sender, receiver) = green::sync::channel();
            let _waiter = green::task::Builder::new()
                .name("signal-waiter")
                .spawn_on(&runtime.handle(), move || {
                    waits_for_the_signal_dump(receiver)
                })
                .unwrap();
            let parked = green::FiberState::Parked("channel recv");
            while !runtime.dump().fibers().iter().any(|f| f.state() == parked) {
                std::thread::yield_now();
            }
            // SAFETY: sends a signal to this thread, whose handler is green's (`raise`, not
            // `kill`: see `two_quick_signals_then_wait`).
            unsafe { libc::raise(libc::SIGUSR1) };
            loop {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
        },
        "green: end of fiber dump",
    );
    assert!(
        stderr.contains("green: fiber dump: 1 fibers on 1 workers"),
        "{stderr}"
    );
    assert!(
        stderr.contains("\"signal-waiter\" [parked: channel recv] on worker 0:"),
        "{stderr}"
    );
    assert!(stderr.contains("waits_for_the_signal_dump"), "{stderr}");
    assert!(stderr.contains("green: end of fiber dump"), "{stderr}");
}

fn a_signal_gets_its_previous_action_back_when_its_runtime_shuts_down() {
    let (exit, stderr) = in_child(|| {
        let runtime = green::Runtime::builder()
            .dump_on_signal(libc::SIGUSR1)
            .build()
            .unwrap();
        drop(runtime);
        // SAFETY: sends a signal to this process; its default action ends it.
        unsafe { libc::kill(libc::getpid(), libc::SIGUSR1) };
        std::thread::sleep(std::time::Duration::from_secs(60));
    });
    assert_eq!(exit, Exit::Signal(libc::SIGUSR1), "stderr: {stderr}");
    assert!(!stderr.contains("fiber dump"), "{stderr}");
}

/// A runtime that dumps on SIGUSR1, with a fiber named `burst-waiter` parked in a channel
/// recv, and one that dumps on SIGUSR2 with `after-the-burst`; the child sends itself
/// SIGUSR1 twice in a row (`raise`: each handler has run when it returns), says so on
/// stderr, waits to be told, sends itself SIGUSR2, then waits to be killed.
///
/// `raise` rather than `kill` from the parent: a signal sent to the process may land on a
/// worker's thread, and ThreadSanitizer delivers it there only when that thread next makes
/// a call it intercepts, which a worker idle in its reactor may never do.
fn two_quick_signals_then_wait() {
    let first = green::Runtime::builder()
        .workers(1)
        .dump_on_signal(libc::SIGUSR1)
        .build()
        .unwrap();
    let second = green::Runtime::builder()
        .workers(1)
        .dump_on_signal(libc::SIGUSR2)
        .build()
        .unwrap();
    let (_senders, receivers): (Vec<_>, Vec<_>) = (0..2).map(|_| green::sync::channel()).unzip();
    let parked = green::FiberState::Parked("channel recv");
    for ((runtime, name), receiver) in [(&first, "burst-waiter"), (&second, "after-the-burst")]
        .into_iter()
        .zip(receivers)
    {
        let _waiter = green::task::Builder::new()
            .name(name)
            .spawn_on(&runtime.handle(), move || {
                waits_for_the_signal_dump(receiver)
            })
            .unwrap();
        while !runtime.dump().fibers().iter().any(|f| f.state() == parked) {
            std::thread::yield_now();
        }
    }
    // SAFETY: sends signals to this thread, whose handler for them is green's.
    unsafe {
        libc::raise(libc::SIGUSR1);
        libc::raise(libc::SIGUSR1);
    }
    eprintln!("burst sent");
    wait_to_be_told();
    // SAFETY: as above.
    unsafe { libc::raise(libc::SIGUSR2) };
    loop {
        std::thread::sleep(std::time::Duration::from_secs(1));
    }
}

fn a_signal_sent_twice_in_a_row_prints_whole_dumps_and_the_process_runs_on() {
    let mut child = Child::start(two_quick_signals_then_wait);
    child.read_until(|written| {
        written.contains("burst sent") && written.contains("green: end of fiber dump")
    });
    // Both SIGUSR1s are in the dump thread's pipe by now, so the SIGUSR2 dump comes after
    // every dump the burst made: the thread takes signals in the order they came (those
    // it reads at once by number, lowest first), and two SIGUSR1s read at once make one
    // dump.
    child.tell();
    let stderr = child.read_until(|written| {
        written
            .split_once("\"after-the-burst\"")
            .is_some_and(|(_, after)| after.contains("green: end of fiber dump"))
    });
    assert!(child.running(), "the child ended:\n{stderr}");
    // One or two dumps of the first runtime, then one of the second, each whole: a header,
    // its fiber, an end, never interleaved.
    let dumps: Vec<&str> = stderr
        .split_inclusive("green: end of fiber dump\n")
        .filter(|dump| dump.contains("green: fiber dump:"))
        .collect();
    assert!((2..=3).contains(&dumps.len()), "{stderr}");
    for (index, dump) in dumps.iter().enumerate() {
        let name = if index + 1 == dumps.len() {
            "after-the-burst"
        } else {
            "burst-waiter"
        };
        assert_eq!(dump.matches("green: fiber dump:").count(), 1, "{stderr}");
        assert!(
            dump.contains(&format!("\"{name}\" [parked: channel recv]")),
            "{stderr}"
        );
        assert!(dump.contains("waits_for_the_signal_dump"), "{stderr}");
    }
}

/// Recurses without end, with a frame that cannot be optimised away.
#[inline(never)]
#[allow(unconditional_recursion)]
fn recurse_forever(depth: u64) -> u64 {
    let frame = black_box([depth; 32]);
    recurse_forever(depth + 1).wrapping_add(frame[depth as usize % 32])
}

fn fiber_overflow_is_reported_and_aborts() {
    let (exit, stderr) = in_child(|| {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber =
            unsafe { Fiber::with_stack_size(64 * 1024, |_| recurse_forever(0)) }.unwrap();
        fiber.set_name("deep-recursion");
        let _ = fiber.resume();
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("fiber 'deep-recursion' has overflowed its stack"),
        "{stderr}"
    );
    assert!(stderr.contains("65536 bytes (64 KiB)"), "{stderr}");
    assert!(stderr.contains("help: give it a larger stack"), "{stderr}");
}

fn a_task_overflowing_its_stack_is_reported_by_its_name() {
    let (exit, stderr) = in_child(|| {
        let runtime = green::Runtime::builder().workers(1).build().unwrap();
        runtime.run(|| {
            let task = green::task::Builder::new()
                .name("conn-42")
                .stack_size(64 * 1024)
                .spawn(|| recurse_forever(0))
                .unwrap();
            let _ = task.join();
        });
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("fiber 'conn-42' has overflowed its stack of 65536 bytes (64 KiB)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("green::task::Builder::stack_size for one task"),
        "{stderr}"
    );
}

fn a_stall_warning_names_its_task() {
    let (exit, stderr) = in_child(|| {
        let runtime = green::Runtime::builder()
            .workers(1)
            .stall_warning(std::time::Duration::from_millis(20))
            .build()
            .unwrap();
        runtime.run(|| {
            let hog = green::task::Builder::new()
                .name("hog")
                .spawn(|| std::thread::sleep(std::time::Duration::from_millis(300)))
                .unwrap();
            hog.join().unwrap();
        });
    });
    assert_eq!(exit, Exit::Code(0), "stderr: {stderr}");
    assert!(stderr.contains("green: fiber 'hog' ("), "{stderr}");
    assert!(stderr.contains("without suspending"), "{stderr}");
}

fn unnamed_fiber_overflow_names_its_stack() {
    let (exit, stderr) = in_child(|| {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe { Fiber::new(|_| recurse_forever(0)) }.unwrap();
        let _ = fiber.resume();
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(stderr.contains("fiber with stack at 0x"), "{stderr}");
    assert!(stderr.contains("262144 bytes (256 KiB)"), "{stderr}");
}

fn overflow_in_a_nested_fiber_is_reported_for_that_fiber() {
    let (exit, stderr) = in_child(|| {
        let body = |_: &green::fiber::Suspender| {
            // SAFETY: the fiber is not leaked while started.
            let mut inner =
                unsafe { Fiber::with_stack_size(32 * 1024, |_| recurse_forever(0)) }.unwrap();
            inner.set_name("inner");
            let _ = inner.resume();
        };
        // SAFETY: the fiber is not leaked while started.
        let mut outer = unsafe { Fiber::new(body) }.unwrap();
        outer.set_name("outer");
        let _ = outer.resume();
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("fiber 'inner' has overflowed its stack of 32768 bytes"),
        "{stderr}"
    );
}

/// Bytes of the local array in `large_frame`: eight pages, so that without stack probes
/// (riscv64) the frame's first write lies far below the stack pointer of its caller.
const LARGE_FRAME: usize = 32 * 1024;

/// A frame holding a `LARGE_FRAME`-byte array, zeroed from its lowest byte up.
#[inline(never)]
fn large_frame() -> u8 {
    let mut array = [0u8; LARGE_FRAME];
    black_box(&mut array);
    array[LARGE_FRAME - 1]
}

/// On riscv64, where rustc emits no stack probes, this frame steps over a one-page guard:
/// the deeper guard there (`GUARD_SIZE`) catches it.
fn a_32_kib_frame_overflowing_its_stack_is_reported() {
    let (exit, stderr) = in_child(|| {
        let stack = Stack::new(64 * 1024).unwrap();
        let bottom = stack.bottom() as usize;
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe {
            Fiber::with_stack(stack, move |_| {
                // A few hundred bytes above the bottom, then a frame of 32 KiB.
                descend_to(bottom + 2048, &mut || {
                    black_box(large_frame());
                });
            })
        }
        .unwrap();
        fiber.set_name("large-frame");
        let _ = fiber.resume();
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(
        stderr.contains("fiber 'large-frame' has overflowed its stack of 65536 bytes"),
        "{stderr}"
    );
}

fn main_thread_overflow_still_gets_std_report() {
    let (exit, stderr) = in_child(|| {
        // Install green's handler first, as any program using fibers does.
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe { Fiber::new(|_| ()) }.unwrap();
        let _ = fiber.resume();
        recurse_forever(0);
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    // std prints "thread 'main' (<tid>) has overflowed its stack".
    assert!(stderr.contains("thread 'main'"), "{stderr}");
    assert!(stderr.contains("has overflowed its stack"), "{stderr}");
    assert!(!stderr.contains("fiber"), "{stderr}");
}

fn other_faults_keep_their_default_action() {
    let (exit, stderr) = in_child(|| {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe { Fiber::new(|_| ()) }.unwrap();
        let _ = fiber.resume();
        let stack = Stack::new(64 * 1024).unwrap();
        // SAFETY: not safe, on purpose: the child writes to the guard page of a stack no
        // fiber runs on and must die of SIGSEGV, not be reported as a fiber overflow.
        unsafe { std::ptr::write_volatile(stack.guard().start as *mut u8, 1) };
    });
    assert_eq!(exit, Exit::Signal(libc::SIGSEGV), "stderr: {stderr}");
    assert!(!stderr.contains("overflowed"), "{stderr}");
}

fn a_fiber_that_never_lets_its_unwind_finish_aborts_with_a_message() {
    let (exit, stderr) = in_child(|| {
        // SAFETY: the fiber is not leaked while started.
        let mut fiber = unsafe {
            Fiber::new(|suspender| {
                loop {
                    let _ = panic::catch_unwind(AssertUnwindSafe(|| suspender.suspend()));
                }
            })
        }
        .unwrap();
        assert!(matches!(fiber.resume(), Resume::<()>::Yielded));
        drop(fiber);
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(stderr.contains("swallowed the unwind"), "{stderr}");
    assert!(stderr.contains("destructors cannot complete"), "{stderr}");
}

/// A value whose clean-up fails by panicking, as a careless destructor might.
struct FailingCleanup;

impl Drop for FailingCleanup {
    fn drop(&mut self) {
        panic!("the clean-up failed");
    }
}

/// Spawns a fiber holding `guard` that parks for good, waits until it has parked, aborts it
/// and joins it; returns whether the join reported a cancellation.
fn cancel_a_parked_fiber_holding<G: Send + 'static>(guard: G) -> bool {
    green::run(move || {
        let (parked_tx, parked_rx) = green::sync::channel::<()>();
        let (_never_tx, never_rx) = green::sync::channel::<()>();
        let fiber = green::spawn(move || {
            let _guard = guard;
            parked_tx.send(()).unwrap();
            let _ = never_rx.recv();
        });
        parked_rx.recv().unwrap();
        fiber.abort();
        fiber.join().unwrap_err().is_cancelled()
    })
}

fn a_destructor_that_panics_while_its_fiber_is_cancelled_aborts_the_process() {
    // Cancellation unwinds the fiber's stack, and Rust lets no panic leave a destructor
    // during unwinding: the documented outcome is std's abort, with the panic's message.
    let (exit, stderr) = in_child(|| {
        cancel_a_parked_fiber_holding(FailingCleanup);
    });
    assert_eq!(exit, Exit::Signal(libc::SIGABRT), "stderr: {stderr}");
    assert!(stderr.contains("the clean-up failed"), "{stderr}");
}

fn a_destructor_that_catches_its_own_panic_is_cancelled_cleanly() {
    // What the docs say to do instead: catch the failure inside the destructor.
    struct CarefulCleanup;
    impl Drop for CarefulCleanup {
        fn drop(&mut self) {
            if panic::catch_unwind(|| drop(FailingCleanup)).is_err() {
                eprintln!("clean-up failed; reported, not raised");
            }
        }
    }
    let (exit, stderr) = in_child(|| {
        assert!(cancel_a_parked_fiber_holding(CarefulCleanup));
    });
    assert_eq!(exit, Exit::Code(0), "stderr: {stderr}");
    assert!(stderr.contains("reported, not raised"), "{stderr}");
}

/// Number of lines (mappings) in /proc/self/maps, read through `buffer`: at the mapping
/// limit even `malloc` may fail, so nothing may allocate here.
fn mapping_count(buffer: &mut [u8]) -> usize {
    let mut maps = std::fs::File::open("/proc/self/maps").unwrap();
    let mut lines = 0;
    loop {
        match maps.read(buffer).unwrap() {
            0 => return lines,
            n => lines += buffer[..n].iter().filter(|&&b| b == b'\n').count(),
        }
    }
}

fn running_out_of_mappings_gives_a_clear_error_and_leaks_nothing() {
    let (exit, stderr) = in_child(|| {
        let mut buffer = vec![0u8; 64 * 1024];
        let start = mapping_count(&mut buffer);
        let mut stacks = Vec::with_capacity(1 << 20);
        let error = loop {
            match Stack::new(16 * 1024) {
                Ok(stack) => stacks.push(stack),
                Err(error) => break error,
            }
            assert!(stacks.len() < 10_000_000, "mapping never failed");
        };
        let at_failure = mapping_count(&mut buffer);
        // The failed call left nothing behind: one more attempt changes nothing either.
        assert!(Stack::new(16 * 1024).is_err());
        assert_eq!(mapping_count(&mut buffer), at_failure);
        let message = error.to_string();
        assert_eq!(error.kind(), std::io::ErrorKind::OutOfMemory, "{message}");
        assert!(message.contains("vm.max_map_count"), "{message}");
        assert!(message.contains("sysctl -w vm.max_map_count="), "{message}");
        assert!(stacks.len() > 1000, "only {} stacks fit", stacks.len());
        drop(stacks);
        assert!(
            mapping_count(&mut buffer) <= start + 2,
            "{} mappings left of {start}",
            mapping_count(&mut buffer)
        );
        eprintln!("ok after {} stacks: {message}", at_failure);
    });
    assert_eq!(exit, Exit::Code(0), "stderr: {stderr}");
    assert!(stderr.contains("ok after"), "{stderr}");
}

/// `vm.max_map_count`, if readable.
fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65530)
}

fn spawning_past_the_mapping_limit_gives_a_clear_error_and_no_crash() {
    if max_map_count() > 300_000 {
        println!(
            "(skipped: vm.max_map_count is raised to {}, the limit is far)",
            max_map_count()
        );
        return;
    }
    let (exit, stderr) = in_child(|| {
        let runtime = green::Runtime::builder().workers(1).build().unwrap();
        let (live, message, panic_message) = runtime.run(|| {
            let (release, gate) = green::sync::channel::<()>();
            let mut handles = Vec::new();
            let error = loop {
                let gate = gate.clone();
                match green::try_spawn(move || {
                    let _ = gate.recv();
                }) {
                    Ok(handle) => handles.push(handle),
                    Err(error) => break error,
                }
                green::yield_now(); // let it start and take its stack
            };
            let panic = std::panic::catch_unwind(|| green::spawn(|| ())).unwrap_err();
            let panic_message = panic.downcast_ref::<String>().cloned().unwrap_or_default();
            drop(release);
            let live = handles.len();
            for handle in handles {
                handle.join().unwrap();
            }
            (live, error.to_string(), panic_message)
        });
        // Batches shrink near the limit: no more than a batch of capacity is lost (one
        // mapping a stack with guard regions, two without).
        let per_stack = if green::stack::guard_regions() { 1 } else { 2 };
        let capacity = (max_map_count() - green::stack::RESERVED_MAPPINGS) / per_stack;
        assert!(
            live + green::stack::BATCH_SIZE >= capacity,
            "only {live} fibers of about {capacity}"
        );
        assert!(message.contains("vm.max_map_count"), "{message}");
        assert!(message.contains("sysctl -w vm.max_map_count="), "{message}");
        assert!(
            panic_message.contains("vm.max_map_count"),
            "{panic_message}"
        );
        eprintln!("ok: {live} live fibers, then: {message}");
    });
    assert_eq!(exit, Exit::Code(0), "stderr: {stderr}");
    assert!(stderr.contains("ok: "), "{stderr}");
}

fn a_spawn_at_the_mapping_limit_unmaps_idle_stacks_of_other_sizes_first() {
    let (exit, stderr) = in_child(|| {
        // A size whose stacks lie idle, and the size of the task spawned at the limit.
        const IDLE_SIZE: usize = 64 * 1024;
        const NEW_SIZE: usize = 72 * 1024;
        /// Stacks of their own (two mappings each) made until green refuses one: every
        /// mapping it may take is taken, by them or by the pool.
        fn take_every_mapping(live: &mut Vec<Stack>) -> std::io::Error {
            loop {
                match Stack::new(16 * 1024) {
                    Ok(stack) => live.push(stack),
                    Err(error) => return error,
                }
            }
        }
        let runtime = green::Runtime::builder().workers(1).build().unwrap();
        let (idle_before, idle_after, message) = runtime.run(|| {
            // 1. Take every mapping, then give back room for 64 mappings.
            let mut live = Vec::new();
            take_every_mapping(&mut live);
            live.truncate(live.len() - 32);
            // 2. Fill that room with stacks of IDLE_SIZE, then leave them idle in the
            //    pool's shared part (where the thread's cache goes when it exits).
            std::thread::spawn(|| {
                let mut fibers = Vec::new();
                // SAFETY: the fibers never start.
                while let Ok(fiber) = unsafe { Fiber::with_stack_size(IDLE_SIZE, |_| ()) } {
                    fibers.push(fiber);
                }
                assert!(fibers.len() >= 32, "only {} fibers fit", fibers.len());
            })
            .join()
            .unwrap();
            let idle_before = green::stack::pool_stats(IDLE_SIZE).idle();
            // 3. A task of a new size: no mapping is free, but idle stacks are.
            let task = green::task::Builder::new().stack_size(NEW_SIZE);
            let joined = task.spawn(|| 7).map(|handle| handle.join().unwrap());
            assert_eq!(joined.ok(), Some(7), "spawning at the limit failed");
            let idle_after = green::stack::pool_stats(IDLE_SIZE).idle();
            // 4. Past every idle stack of other sizes, the limit is an error that says
            //    what it counts.
            let error = take_every_mapping(&mut live);
            assert_eq!(green::stack::pool_stats(IDLE_SIZE).idle(), 0);
            (idle_before, idle_after, error.to_string())
        });
        assert!(
            idle_after < idle_before,
            "{idle_before} idle, then {idle_after}"
        );
        assert!(message.contains("live or idle in its pool"), "{message}");
        assert!(message.contains("vm.max_map_count"), "{message}");
        eprintln!("ok: {idle_before} idle stacks, {idle_after} after the spawn; {message}");
    });
    assert_eq!(exit, Exit::Code(0), "stderr: {stderr}");
    assert!(stderr.contains("ok: "), "{stderr}");
}

/// The address of a local of the calling frame.
#[inline(never)]
fn stack_address() -> usize {
    let local = 0u8;
    black_box(&local as *const u8 as usize)
}

/// Recurses until the stack pointer is below `until`, then calls `f`.
#[inline(never)]
fn descend_to(until: usize, f: &mut dyn FnMut()) {
    if stack_address() <= until {
        return f();
    }
    let frame = black_box([0u8; 256]);
    descend_to(until, f);
    black_box(&frame);
}

/// Bytes of the closure in `spawn_with_large_closure`.
const CLOSURE: usize = 48 * 1024;

/// Stack size of the runtime in that test: room for the copies of the closure that
/// `spawn` still makes in debug builds (into the task's fields).
const STACK: usize = 512 * 1024;

/// Spawns a task whose closure holds `CLOSURE` bytes (in a frame of its own, gone by the
/// time of the join).
#[inline(never)]
fn spawn_with_large_closure() -> green::JoinHandle<u32> {
    let data = black_box([1u8; CLOSURE]);
    green::spawn(move || data.iter().map(|&byte| u32::from(byte)).sum())
}

/// `join` that runs a task directly (it is due next) with half the size of the task's
/// closure left on the joiner's stack: the closure must go from the task to the new
/// fiber's stack without a copy on the joiner's.
fn joining_a_task_directly_needs_no_room_for_its_closure_on_the_joiner() {
    let (exit, stderr) = in_child(|| {
        let runtime = green::Runtime::builder()
            .workers(1)
            .stack_size(STACK)
            .build()
            .unwrap();
        let size = STACK;
        let sum: u32 = runtime.run(move || {
            // The stack's lowest usable byte lies at most this far below: this frame sits a
            // little below the top.
            let bottom = stack_address() - size;
            let mut handle = Some(spawn_with_large_closure());
            let mut sum = 0;
            descend_to(bottom + CLOSURE / 2, &mut || {
                sum = handle.take().unwrap().join().unwrap();
            });
            sum
        });
        assert_eq!(sum as usize, CLOSURE);
    });
    assert_eq!(exit, Exit::Code(0), "stderr: {stderr}");
}

/// Why the case `name` cannot hold in this build for a sanitizer, if it cannot.
fn skipped_under_a_sanitizer(name: &str) -> Option<&'static str> {
    let asan = cfg!(green_asan);
    Some(match name {
        "joining_a_task_directly_needs_no_room_for_its_closure_on_the_joiner" if asan => {
            "it measures stack room, and ASan's frames are larger (red zones)"
        }
        "a_32_kib_frame_overflowing_its_stack_is_reported" if asan => {
            "ASan moves the array to the fiber's fake stack: the frame never reaches the guard"
        }
        "a_32_kib_frame_overflowing_its_stack_is_reported" => {
            "TSan's SIGSEGV handler takes this fault for its own in about half the runs"
        }
        "running_out_of_mappings_gives_a_clear_error_and_leaks_nothing" => {
            "the sanitizer maps memory of its own (shadow, allocator), which the case counts"
        }
        "spawning_past_the_mapping_limit_gives_a_clear_error_and_no_crash"
        | "a_spawn_at_the_mapping_limit_unmaps_idle_stacks_of_other_sizes_first" => {
            "the sanitizer's runtime needs mappings of its own and dies at the limit first"
        }
        "main_thread_overflow_still_gets_std_report" | "other_faults_keep_their_default_action" => {
            "the sanitizer's own SIGSEGV handler reports the fault, and ends the process its way"
        }
        _ => return None,
    })
}

fn main() {
    let mut cases: Vec<(&str, fn())> = vec![
        (
            "joining_a_task_directly_needs_no_room_for_its_closure_on_the_joiner",
            joining_a_task_directly_needs_no_room_for_its_closure_on_the_joiner,
        ),
        (
            "fiber_overflow_is_reported_and_aborts",
            fiber_overflow_is_reported_and_aborts,
        ),
        (
            "a_task_overflowing_its_stack_is_reported_by_its_name",
            a_task_overflowing_its_stack_is_reported_by_its_name,
        ),
        (
            "a_stall_warning_names_its_task",
            a_stall_warning_names_its_task,
        ),
        (
            "unnamed_fiber_overflow_names_its_stack",
            unnamed_fiber_overflow_names_its_stack,
        ),
        (
            "overflow_in_a_nested_fiber_is_reported_for_that_fiber",
            overflow_in_a_nested_fiber_is_reported_for_that_fiber,
        ),
        (
            "a_32_kib_frame_overflowing_its_stack_is_reported",
            a_32_kib_frame_overflowing_its_stack_is_reported,
        ),
        (
            "main_thread_overflow_still_gets_std_report",
            main_thread_overflow_still_gets_std_report,
        ),
        (
            "other_faults_keep_their_default_action",
            other_faults_keep_their_default_action,
        ),
        (
            "a_fiber_that_never_lets_its_unwind_finish_aborts_with_a_message",
            a_fiber_that_never_lets_its_unwind_finish_aborts_with_a_message,
        ),
        (
            "a_destructor_that_panics_while_its_fiber_is_cancelled_aborts_the_process",
            a_destructor_that_panics_while_its_fiber_is_cancelled_aborts_the_process,
        ),
        (
            "a_destructor_that_catches_its_own_panic_is_cancelled_cleanly",
            a_destructor_that_catches_its_own_panic_is_cancelled_cleanly,
        ),
        (
            "dump_on_signal_prints_every_fiber_to_stderr",
            dump_on_signal_prints_every_fiber_to_stderr,
        ),
        (
            "a_signal_gets_its_previous_action_back_when_its_runtime_shuts_down",
            a_signal_gets_its_previous_action_back_when_its_runtime_shuts_down,
        ),
        (
            "a_signal_sent_twice_in_a_row_prints_whole_dumps_and_the_process_runs_on",
            a_signal_sent_twice_in_a_row_prints_whole_dumps_and_the_process_runs_on,
        ),
    ];
    // Under QEMU the emulator itself needs mappings and dies at the limit before the
    // guest sees an error, so this case runs natively only.
    if cfg!(target_arch = "x86_64") {
        cases.push((
            "running_out_of_mappings_gives_a_clear_error_and_leaks_nothing",
            running_out_of_mappings_gives_a_clear_error_and_leaks_nothing,
        ));
        cases.push((
            "spawning_past_the_mapping_limit_gives_a_clear_error_and_no_crash",
            spawning_past_the_mapping_limit_gives_a_clear_error_and_no_crash,
        ));
        cases.push((
            "a_spawn_at_the_mapping_limit_unmaps_idle_stacks_of_other_sizes_first",
            a_spawn_at_the_mapping_limit_unmaps_idle_stacks_of_other_sizes_first,
        ));
    }
    // Built for AddressSanitizer or ThreadSanitizer (`--cfg green_asan`, `--cfg green_tsan`:
    // see src/context/sanitizer.rs), these cases measure what the sanitizer changes, so
    // they are skipped with the reason.
    if cfg!(any(green_asan, green_tsan)) {
        cases.retain(|(name, _)| match skipped_under_a_sanitizer(name) {
            Some(reason) => {
                println!("(skipped under the sanitizer: {name}: {reason})");
                false
            }
            None => true,
        });
    }
    let filter = std::env::args().nth(1).filter(|arg| !arg.starts_with('-'));
    let cases: Vec<_> = cases
        .into_iter()
        .filter(|(name, _)| filter.as_deref().is_none_or(|f| name.contains(f)))
        .collect();
    println!("\nrunning {} tests", cases.len());
    let mut failed = Vec::new();
    for (name, case) in &cases {
        let outcome = panic::catch_unwind(case);
        println!(
            "test {name} ... {}",
            if outcome.is_ok() { "ok" } else { "FAILED" }
        );
        if outcome.is_err() {
            failed.push(*name);
        }
    }
    let passed = cases.len() - failed.len();
    let verdict = if failed.is_empty() { "ok" } else { "FAILED" };
    println!(
        "\ntest result: {verdict}. {passed} passed; {} failed; 0 ignored\n",
        failed.len()
    );
    if !failed.is_empty() {
        std::process::exit(1);
    }
}
