//! `green::task::Builder` and `green::task::current`: names, ids and stack sizes of
//! fibers. The stack overflow message and the stall warning on stderr, which need a child
//! process, are in tests/process.rs.

mod common;

use std::hint::black_box;
use std::io::ErrorKind;
use std::rc::Rc;
use std::sync::{Arc, mpsc};
use std::thread;
use std::time::Duration;

use green::task::{self, Builder};
use green::test_support;

/// Loop counts are scaled down under QEMU (riscv64, aarch64).
const NATIVE: bool = cfg!(target_arch = "x86_64");

fn two_workers() -> green::Runtime {
    green::Runtime::builder().workers(2).build().unwrap()
}

/// The calling task's name, owned.
fn my_name() -> Option<String> {
    task::current().name().map(str::to_owned)
}

/// Recurses with 1 KiB frames until the deepest lies `bytes` below `top` (an address on
/// the caller's stack); returns how far below `top` it lies. The depth follows the frame
/// size, so that a debug build, whose frames are larger, uses the same stack.
#[inline(never)]
fn use_stack(top: usize, bytes: usize) -> usize {
    let frame = black_box([0u8; 1024]);
    let used = top - frame.as_ptr() as usize;
    let deepest = if used >= bytes {
        used
    } else {
        use_stack(top, bytes)
    };
    black_box(&frame); // lives across the call: no tail call
    deepest
}

/// `use_stack` from the calling fiber's current depth.
fn use_stack_here(bytes: usize) -> usize {
    let top = black_box(0u8);
    use_stack(&top as *const u8 as usize, bytes)
}

#[test]
fn a_named_task_sees_its_name() {
    let runtime = two_workers();
    let name = runtime.run(|| {
        Builder::new()
            .name("conn-42")
            .spawn(my_name)
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(name.as_deref(), Some("conn-42"));
}

#[test]
fn an_unnamed_task_has_no_name() {
    let runtime = two_workers();
    let names = runtime.run(|| {
        let plain = green::spawn(my_name).join().unwrap();
        let built = Builder::new().spawn(my_name).unwrap().join().unwrap();
        let sized = Builder::new()
            .stack_size(128 * 1024)
            .spawn(my_name)
            .unwrap()
            .join()
            .unwrap();
        (my_name(), plain, built, sized)
    });
    assert_eq!(names, (None, None, None, None));
}

#[test]
fn ids_differ_between_tasks_and_stay_the_same_within_one() {
    let count = if NATIVE { 200 } else { 40 };
    let runtime = two_workers();
    let ids = runtime.run(move || {
        let handles: Vec<_> = (0..count)
            .map(|i| {
                let builder = if i % 2 == 0 {
                    Builder::new().name(format!("task-{i}"))
                } else {
                    Builder::new()
                };
                builder
                    .spawn(|| {
                        let first = task::current().id();
                        green::sleep(Duration::from_millis(1));
                        green::yield_now();
                        (first, task::current().id())
                    })
                    .unwrap()
            })
            .collect();
        let mut ids: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        ids.push((task::current().id(), task::current().id()));
        ids
    });
    for (first, again) in &ids {
        assert_eq!(first, again, "an id changed within its task");
    }
    let mut distinct: Vec<_> = ids.iter().map(|(id, _)| id.as_u64()).collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len(), ids.len(), "two tasks shared an id");
}

#[test]
fn ids_differ_between_runtimes() {
    let (a, b) = (two_workers(), two_workers());
    let id_a = a.run(|| task::current().id());
    let id_b = b.run(|| task::current().id());
    assert_ne!(id_a, id_b);
}

#[test]
fn current_outside_a_fiber_is_none_or_panics() {
    assert!(task::try_current().is_none());
    let panic = std::panic::catch_unwind(task::current).unwrap_err();
    let message = (panic.downcast_ref::<String>().map(String::as_str))
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or_default();
    assert!(
        message.contains("from a fiber of a green runtime"),
        "{message}"
    );
}

#[test]
fn a_task_with_a_larger_stack_can_use_it() {
    // 400 KiB of frames: more than the default stack of 256 KiB holds.
    let runtime = two_workers();
    let (size, used) = runtime.run(|| {
        Builder::new()
            .stack_size(600 * 1024)
            .spawn(|| (test_support::stack_size(), use_stack_here(400 * 1024)))
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(size, Some(600 * 1024));
    assert!(used >= 400 * 1024, "{used}");
    // The runtime's other fibers keep its size.
    let size = runtime.run(|| green::spawn(test_support::stack_size).join().unwrap());
    assert_eq!(size, Some(green::stack::DEFAULT_STACK_SIZE));
}

#[test]
fn a_task_with_a_smaller_stack_gets_it() {
    let runtime = two_workers();
    let size = runtime.run(|| {
        Builder::new()
            .stack_size(32 * 1024)
            .spawn(test_support::stack_size)
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(size, Some(32 * 1024));
}

#[test]
fn a_stack_size_out_of_range_is_invalid_input() {
    let runtime = two_workers();
    let other = green::Runtime::builder().workers(1).build().unwrap();
    let elsewhere = other.handle();
    let kinds = runtime.run(move || {
        let small = Builder::new().stack_size(4096);
        let large = Builder::new().stack_size(usize::MAX);
        [
            small.clone().spawn(|| ()).map(drop),
            large.clone().spawn(|| ()).map(drop),
            small.clone().spawn_local(|| ()).map(drop),
            large.spawn_local(|| ()).map(drop),
            small.spawn_on(&elsewhere, || ()).map(drop),
        ]
        .map(|result| result.unwrap_err().kind())
    });
    assert_eq!(kinds, [ErrorKind::InvalidInput; 5]);
    // From a plain thread too, before the task is queued anywhere.
    let error = Builder::new().stack_size(1).spawn(|| ()).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidInput);
    assert!(error.to_string().contains("too small"), "{error}");
}

#[test]
fn a_closure_too_large_for_its_stack_is_invalid_input() {
    // A closure must fit in a quarter of its stack: 8 KiB does not fit 16 KiB.
    let big = [1u8; 8 * 1024];
    let runtime = two_workers();
    let (spawned, local, fits) = runtime.run(move || {
        let builder = Builder::new().stack_size(16 * 1024);
        let spawned = builder.clone().spawn(move || big[0]).map(drop);
        let local = builder.spawn_local(move || big[1]).map(drop);
        let fits = Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || big.iter().map(|&b| b as usize).sum::<usize>())
            .unwrap()
            .join()
            .unwrap();
        (spawned, local, fits)
    });
    assert_eq!(spawned.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(local.unwrap_err().kind(), ErrorKind::InvalidInput);
    assert_eq!(fits, 8 * 1024);
}

#[test]
fn spawn_local_from_a_fiber_names_a_task_that_stays_on_its_worker() {
    let runtime = two_workers();
    let (name, same_thread) = runtime.run(|| {
        let here = thread::current().id();
        let local = Rc::new(here); // not Send
        Builder::new()
            .name("local")
            .stack_size(64 * 1024)
            .spawn_local(move || {
                green::yield_now();
                (my_name(), *local == thread::current().id())
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(name.as_deref(), Some("local"));
    assert!(same_thread);
}

#[test]
#[should_panic(expected = "must be called from a fiber")]
fn spawn_local_outside_a_fiber_panics() {
    let _ = Builder::new().name("nowhere").spawn_local(|| ());
}

#[test]
fn spawn_from_a_plain_thread_goes_to_the_global_runtime() {
    let (name, in_fiber, size, used) = common::within(60, "a spawn on the global runtime", || {
        Builder::new()
            .name("from-a-thread")
            .stack_size(600 * 1024)
            .spawn(|| {
                let used = use_stack_here(400 * 1024);
                (
                    my_name(),
                    green::in_fiber(),
                    test_support::stack_size(),
                    used,
                )
            })
            .unwrap()
            .join()
            .unwrap()
    });
    assert_eq!(name.as_deref(), Some("from-a-thread"));
    assert!(in_fiber);
    assert_eq!(size, Some(600 * 1024));
    assert!(used >= 400 * 1024);
}

#[test]
fn spawn_on_runs_the_task_on_the_handles_runtime() {
    let runtime = green::Runtime::builder()
        .workers(1)
        .name("elsewhere")
        .build()
        .unwrap();
    let handle = runtime.handle();
    // From a plain thread, and from a fiber of another runtime.
    let from_thread = Builder::new()
        .name("on-handle")
        .spawn_on(&handle, || {
            (my_name(), thread::current().name().map(str::to_owned))
        })
        .unwrap()
        .join()
        .unwrap();
    let from_fiber = two_workers().run(move || {
        Builder::new()
            .name("on-handle")
            .spawn_on(&handle, || {
                (my_name(), thread::current().name().map(str::to_owned))
            })
            .unwrap()
            .join()
            .unwrap()
    });
    for (name, thread) in [from_thread, from_fiber] {
        assert_eq!(name.as_deref(), Some("on-handle"));
        assert_eq!(thread.as_deref(), Some("elsewhere-0"));
    }
}

#[test]
fn spawning_on_a_runtime_that_shut_down_resolves_to_cancelled() {
    let runtime = two_workers();
    let handle = runtime.handle();
    drop(runtime);
    let task = Builder::new()
        .name("too-late")
        .stack_size(64 * 1024)
        .spawn_on(&handle, || ())
        .unwrap();
    assert!(task.join().unwrap_err().is_cancelled());
}

#[test]
fn one_name_can_be_shared_by_many_tasks() {
    let name: Arc<str> = Arc::from("pool");
    let runtime = two_workers();
    let names = runtime.run(move || {
        let handles: Vec<_> = (0..8)
            .map(|_| Builder::new().name(name.clone()).spawn(my_name).unwrap())
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(names.iter().all(|name| name.as_deref() == Some("pool")));
}

#[test]
fn ended_tasks_leave_nothing_listed() {
    let count = if NATIVE { 500 } else { 50 };
    let runtime = two_workers();
    runtime.run(move || {
        let handles: Vec<_> = (0..count)
            .map(|i| {
                let builder = match i % 3 {
                    0 => Builder::new().name(format!("task-{i}")),
                    1 => Builder::new().stack_size(32 * 1024),
                    _ => Builder::new(),
                };
                builder
                    .spawn(move || {
                        if i % 5 == 0 {
                            panic!("task {i} panics"); // ends by unwinding
                        }
                        task::current().id() // lists a plain task too
                    })
                    .unwrap()
            })
            .collect();
        for handle in handles {
            let _ = handle.join();
        }
    });
    // A join returns once the task's result is in, which its fiber stores before it
    // ends; its worker unlists it right after. Wait for that (bounded), then check.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while test_support::listed_fibers(&runtime) != 0 && std::time::Instant::now() < deadline {
        std::thread::yield_now();
    }
    assert_eq!(test_support::listed_fibers(&runtime), 0);
}

#[test]
fn a_stall_report_names_its_task() {
    let (reports_tx, reports_rx) = mpsc::channel();
    let runtime = green::Runtime::builder()
        .workers(2)
        .stall_warning(Duration::from_millis(20))
        .on_stall(move |report| drop(reports_tx.send(report.clone())))
        .build()
        .unwrap();
    let report = runtime.run(move || {
        Builder::new()
            .name("hog")
            .spawn(move || {
                // Blocks its worker's thread until the monitor has reported it (other
                // fibers may be reported too, when the OS leaves their thread waiting).
                loop {
                    let report = reports_rx.recv_timeout(Duration::from_secs(10));
                    match report {
                        Ok(report) if report.name.as_deref() == Some("hog") => break Some(report),
                        Ok(_) => continue,
                        Err(_) => break None,
                    }
                }
            })
            .unwrap()
            .join()
            .unwrap()
    });
    let report = report.expect("the hog was not reported");
    let line = report.to_string();
    assert!(line.starts_with("green: fiber 'hog' ("), "{line}");
    assert!(line.contains("without suspending"), "{line}");
}
