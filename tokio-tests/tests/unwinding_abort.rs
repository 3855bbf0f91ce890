//! A fiber that blocks inside another tokio runtime's context while it unwinds already (a
//! destructor that blocks during a panic) cannot take green's refusal as a second panic:
//! the process aborts, with both messages on stderr.
//!
//! The case runs in a `fork`ed child whose stderr goes to a pipe, rather than in a re-run
//! of the test binary, which the QEMU user-mode runner used for riscv64 and aarch64 cannot
//! start. This file has its own `main` (`harness = false`) so that the child is forked from
//! a single-threaded process, as in the workspace root's tests/process.rs.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::panic;
use std::time::Duration;

/// What green's refusal says.
const REFUSAL: &str =
    "green: a fiber parked or yielded inside the context of another tokio runtime";

/// Runs `body` in a forked child; returns the signal that ended it, if one did, and what
/// it wrote to stderr.
fn in_child(body: fn()) -> (Option<i32>, String) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors pipe(2) returns.
    assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
    // SAFETY: this process is single-threaded (harness = false, nothing started yet), so
    // the child may run any code.
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
    let signal = libc::WIFSIGNALED(status).then(|| libc::WTERMSIG(status));
    (signal, stderr)
}

/// A value whose destructor blocks in green, long enough that it must park.
struct SleepsOnDrop;

impl Drop for SleepsOnDrop {
    fn drop(&mut self) {
        green::sleep(Duration::from_secs(10));
    }
}

fn blocking_while_unwinding_inside_another_runtimes_context_aborts() {
    let (signal, stderr) = in_child(|| {
        green::run(|| {
            let other = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let _guard = other.enter();
            let _sleeps = SleepsOnDrop; // dropped first, while `_guard` still holds
            panic!("the fiber's own panic");
        });
    });
    assert_eq!(signal, Some(libc::SIGABRT), "{stderr}");
    assert!(stderr.contains("the fiber's own panic"), "{stderr}");
    assert!(stderr.contains(REFUSAL), "{stderr}");
}

fn main() {
    blocking_while_unwinding_inside_another_runtimes_context_aborts();
    println!("test blocking_while_unwinding_inside_another_runtimes_context_aborts ... ok");
}
