//! gdb's `bt`, stopped inside a fiber, walks through the trampoline into the code that
//! resumed the fiber, for both treatments of the floating-point control state.
//!
//! The test runs gdb on this very test binary, asking it to run one ignored test that
//! stops at a breakpoint instruction inside a fiber, then checks the order of the frames
//! `bt` prints. x86_64 only: under QEMU user mode there is no ptrace for gdb.
//!
//! Without gdb on the PATH the test says so and passes, unless `GREEN_REQUIRE_GDB` is set,
//! as `.ci/run` sets it after installing gdb.

#![cfg(target_arch = "x86_64")]

use std::hint::black_box;
use std::process::Command;

use green::fiber::{Builder, Fiber, FloatControl, Resume};

/// Stops the process with a breakpoint trap, as if gdb had set a breakpoint here.
#[inline(never)]
fn gdb_marker_inside_fiber() -> u32 {
    // SAFETY: `int3` only raises SIGTRAP, which gdb catches; it touches no register or
    // memory.
    unsafe { core::arch::asm!("int3", options(nomem, nostack)) };
    black_box(7)
}

/// Resumes `fiber` from a frame of its own, so that `bt` can be checked for it.
#[inline(never)]
fn gdb_marker_resuming_fiber(fiber: &mut Fiber<u32>) -> u32 {
    match fiber.resume() {
        Resume::Finished(value) => black_box(value),
        other => panic!("the fiber returns at once, not {other:?}"),
    }
}

/// Runs a fiber with the given control-state treatment that stops at a breakpoint trap.
fn stop_inside_a_fiber(float_control: FloatControl) {
    // SAFETY: the fiber is not leaked while started.
    let mut fiber = unsafe {
        Builder::new()
            .float_control(float_control)
            .build(|_| gdb_marker_inside_fiber())
    }
    .unwrap();
    assert_eq!(gdb_marker_resuming_fiber(&mut fiber), 7);
}

#[test]
#[ignore = "run by gdb_bt_walks_out_of_a_fiber, under gdb"]
fn gdb_target_saved_float_control() {
    stop_inside_a_fiber(FloatControl::Saved);
}

#[test]
#[ignore = "run by gdb_bt_walks_out_of_a_fiber, under gdb"]
fn gdb_target_shared_float_control() {
    stop_inside_a_fiber(FloatControl::Shared);
}

/// Runs the ignored test `target` under gdb and returns what `bt` printed, or `None` if
/// there is no gdb.
fn backtrace_under_gdb(target: &str) -> Option<String> {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new("gdb")
        .args(["-q", "-batch", "-nx", "-ex", "run", "-ex", "bt", "--args"])
        .arg(exe)
        .args([target, "--exact", "--ignored", "--test-threads=1"])
        .output();
    match output {
        Ok(output) => Some(String::from_utf8_lossy(&output.stdout).into_owned()),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => None,
        Err(error) => panic!("cannot run gdb: {error}"),
    }
}

#[test]
fn gdb_bt_walks_out_of_a_fiber() {
    for target in [
        "gdb_target_saved_float_control",
        "gdb_target_shared_float_control",
    ] {
        let Some(bt) = backtrace_under_gdb(target) else {
            assert!(
                std::env::var_os("GREEN_REQUIRE_GDB").is_none(),
                "GREEN_REQUIRE_GDB is set but gdb is not on the PATH"
            );
            eprintln!("gdb is not on the PATH: skipping the gdb backtrace check");
            return;
        };
        // Only the frame lines of `bt`, in order from the innermost.
        let frames: Vec<&str> = bt.lines().filter(|line| line.starts_with('#')).collect();
        let position = |name: &str| {
            frames
                .iter()
                .position(|frame| frame.contains(name))
                .unwrap_or_else(|| panic!("{target}: no frame `{name}` in:\n{bt}"))
        };
        let inside = position("gdb_marker_inside_fiber");
        let trampoline = position("trampoline");
        let resumer = position("gdb_marker_resuming_fiber");
        // libtest's frame below every test function (which release builds may inline).
        let test = position("__rust_begin_short_backtrace");
        assert!(
            inside < trampoline && trampoline < resumer && resumer < test,
            "{target}: expected the fiber, the trampoline, the resumer and the test, in \
             that order:\n{bt}"
        );
    }
}
