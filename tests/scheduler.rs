//! The scheduler: placement, stealing, idle workers and stuck siblings, fibers staying on
//! their thread, the join shortcut, I/O across workers, shutdown and the stall warning
//! (which outlives a hook that panics).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::Duration;

use green::io::Async;
use green::test_support;

/// Loop counts are scaled down under QEMU (riscv64, aarch64).
const NATIVE: bool = cfg!(target_arch = "x86_64");

/// Runs `f` on a fresh one-worker runtime (so that the order in which fibers run is
/// defined), failing the test if it does not finish within a minute (a lost wake would
/// otherwise hang the test forever).
fn one_worker_with_watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    common::within(60, "a one-worker runtime (a wake was lost?)", move || {
        common::one_worker().run(f)
    })
}

fn two_workers() -> green::Runtime {
    green::Runtime::builder().workers(2).build().unwrap()
}

fn thread_name() -> String {
    thread::current().name().unwrap_or("?").to_owned()
}

#[test]
fn a_runtime_has_the_workers_it_was_built_with() {
    assert_eq!(
        green::Runtime::builder()
            .workers(3)
            .build()
            .unwrap()
            .workers(),
        3
    );
    let default = thread::available_parallelism().unwrap().get();
    assert_eq!(green::Runtime::new().unwrap().workers(), default);
    let error = green::Runtime::builder().workers(0).build().unwrap_err();
    assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
}

#[test]
fn spawns_from_a_plain_thread_go_to_every_worker() {
    let runtime = two_workers();
    let names: Vec<String> = (0..20)
        .map(|_| runtime.spawn(thread_name))
        .map(|h| h.join().unwrap())
        .collect();
    assert!(names.iter().any(|n| n.ends_with("-0")), "{names:?}");
    assert!(names.iter().any(|n| n.ends_with("-1")), "{names:?}");
}

#[test]
fn an_idle_worker_steals_fibers_that_have_not_started() {
    let runtime = two_workers();
    let tasks = if NATIVE { 40 } else { 20 };
    let (handles_tx, handles_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    // The hog spawns every task, then blocks its worker's thread (without suspending)
    // until they have all been joined: those placed on its own worker can only run if the
    // other worker steals them.
    let hog = runtime.spawn(move || {
        let handles: Vec<_> = (0..tasks).map(|_| green::spawn(thread_name)).collect();
        handles_tx.send(handles).unwrap();
        // Bounded, so that a failure to steal fails the test rather than hanging it.
        let _ = release_rx.recv_timeout(Duration::from_secs(20));
        thread_name()
    });
    let names: Vec<String> = handles_rx
        .recv()
        .unwrap()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    release_tx.send(()).unwrap();
    let hog_worker = hog.join().unwrap();
    assert!(
        names.iter().all(|n| *n != hog_worker),
        "a task waited for the blocked worker {hog_worker}: {names:?}"
    );
}

#[test]
fn a_worker_with_parked_fibers_takes_the_tasks_of_a_stuck_worker() {
    // The idle worker has more fibers than the stuck one, and the stuck one's queue does
    // not lag (it runs nothing): it must see that the worker is stuck.
    let runtime = two_workers();
    let (done_tx, done_rx) = mpsc::channel::<String>();
    let (hog_ready_tx, hog_ready_rx) = mpsc::channel();
    // Each task also tells the main fiber, which keeps its worker's parked fibers until
    // both ran.
    let (ran_tx, ran_rx) = green::sync::channel::<()>();
    let (stealable, stealable_ran) = (done_tx.clone(), ran_tx.clone());
    // Spawned from this thread, the hog goes to worker 0 and the main fiber below to
    // worker 1 (the workers in turn).
    let hog = runtime.spawn(move || {
        // On the hog's own worker, stealable only by a worker that sees it stuck.
        drop(green::spawn(move || {
            stealable.send(thread_name()).unwrap();
            stealable_ran.send(()).unwrap();
        }));
        hog_ready_tx.send(()).unwrap();
        // Blocks the thread, without suspending, until both tasks ran elsewhere;
        // bounded, so that a failure fails the test instead of hanging it.
        let names: Vec<String> = (0..2)
            .map(|_| done_rx.recv_timeout(Duration::from_secs(10)))
            .collect::<Result<_, _>>()
            .unwrap_or_default();
        (thread_name(), names)
    });
    let here = runtime.run(move || {
        // Three fibers parked on this worker for the whole test: with this one, 4.
        let (release_tx, release_rx) = green::sync::channel::<()>();
        let parked: Vec<_> = (0..3)
            .map(|_| {
                let release = release_rx.clone();
                green::spawn_local(move || {
                    let _ = release.recv();
                })
            })
            .collect();
        hog_ready_rx.recv().unwrap();
        // Placed on the hog's worker (awake, with fewer fibers), where it waits behind
        // the hog: pinned, so only a worker that sees the hog stuck may take it.
        let pinned = done_tx;
        drop(green::spawn(move || {
            pinned.send(thread_name()).unwrap();
            ran_tx.send(()).unwrap();
        }));
        // Idle now: this worker looks at the hog's, and takes both tasks.
        for _ in 0..2 {
            ran_rx.recv().unwrap();
        }
        drop(release_tx);
        parked.into_iter().for_each(|p| p.join().unwrap());
        thread_name()
    });
    let (hog_worker, names) = hog.join().unwrap();
    assert_ne!(here, hog_worker, "the hog did not go to the other worker");
    assert_eq!(
        names.len(),
        2,
        "a task waited for the stuck worker: {names:?}"
    );
    assert!(
        names.iter().all(|n| *n == here),
        "{names:?} ran on the stuck worker {hog_worker}"
    );
}

/// Starts a fiber on each of `runtime`'s `n` workers that yields until `stop` is set, so
/// that no worker is ever idle, and none ever steals: where a fiber runs is then decided
/// by placement alone. Spawns from a plain thread go to the workers in turn, and a task
/// that has not started cannot be taken from a worker that runs no fiber yet.
fn keep_workers_busy(
    runtime: &green::Runtime,
    n: usize,
    stop: &Arc<AtomicBool>,
) -> Vec<green::JoinHandle<String>> {
    (0..n)
        .map(|_| {
            let stop = stop.clone();
            runtime.spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    green::yield_now();
                }
                thread_name()
            })
        })
        .collect()
}

/// Spawns `fibers` fibers from the calling fiber, all parked until every one has
/// started; returns the names of the threads they ran on.
fn spawn_parked_fibers(fibers: usize) -> Vec<String> {
    let (release_tx, release_rx) = green::sync::channel::<()>();
    let (ready_tx, ready_rx) = green::sync::channel::<()>();
    let handles: Vec<_> = (0..fibers)
        .map(|_| {
            let (release, ready) = (release_rx.clone(), ready_tx.clone());
            green::spawn(move || {
                ready.send(()).unwrap();
                let _ = release.recv(); // all alive at once
                thread_name()
            })
        })
        .collect();
    for _ in 0..fibers {
        ready_rx.recv().unwrap();
    }
    drop(release_tx);
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

#[test]
fn fibers_spawned_by_one_fiber_spread_over_busy_workers() {
    // A busy worker never steals, so long-lived fibers spawned by one fiber (connections
    // from an accept loop) spread only if placement compares the workers' loads.
    let runtime = two_workers();
    let fibers = 20;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_workers_busy(&runtime, 2, &stop);
    let (spawner_worker, names) = runtime.run(move || (thread_name(), spawn_parked_fibers(fibers)));
    stop.store(true, Ordering::Relaxed);
    let busy: Vec<String> = busy.into_iter().map(|h| h.join().unwrap()).collect();
    assert_ne!(busy[0], busy[1], "two busy fibers started on one worker");
    let there = names.iter().filter(|n| **n != spawner_worker).count();
    assert!(
        (fibers / 3..=fibers * 2 / 3).contains(&there),
        "{there} of {fibers} fibers went to the other worker: {names:?}"
    );
}

#[test]
fn fibers_spawned_by_one_fiber_spread_over_four_workers() {
    // With more than three workers, placement compares two siblings picked at random.
    let runtime = green::Runtime::builder().workers(4).build().unwrap();
    let fibers = 40;
    let stop = Arc::new(AtomicBool::new(false));
    let busy = keep_workers_busy(&runtime, 4, &stop);
    let names = runtime.run(move || spawn_parked_fibers(fibers));
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|h| drop(h.join().unwrap()));
    let mut per_worker = std::collections::BTreeMap::<&str, usize>::new();
    for name in &names {
        *per_worker.entry(name.as_str()).or_default() += 1;
    }
    assert_eq!(per_worker.len(), 4, "{per_worker:?}");
    assert!(
        per_worker.values().all(|&count| count <= fibers / 2),
        "{per_worker:?}"
    );
}

#[test]
fn pinned_workers_run_on_one_cpu_each() {
    if !can_pin() {
        eprintln!("skipped: sched_setaffinity is refused here");
        return;
    }
    let cpus = allowed_cpus();
    let runtime = green::Runtime::builder()
        .workers(2)
        .pin_workers(true)
        .build()
        .unwrap();
    // One fiber per worker: the first two spawns from a plain thread go round robin.
    let masks: Vec<(String, Vec<usize>)> = (0..2)
        .map(|_| runtime.spawn(|| (thread_name(), allowed_cpus())))
        .map(|h| h.join().unwrap())
        .collect();
    for (worker, mask) in &masks {
        assert_eq!(mask.len(), 1, "{worker} may run on {mask:?}");
        assert!(cpus.contains(&mask[0]), "{worker} pinned outside {cpus:?}");
    }
    if cpus.len() >= 2 && masks[0].0 != masks[1].0 {
        assert_ne!(masks[0].1, masks[1].1, "two workers pinned to one CPU");
    }
    // The blocking pool's threads, started from a pinned worker, get every CPU back.
    let pool_mask = runtime.run(|| green::unblock(allowed_cpus));
    assert_eq!(pool_mask, cpus, "a blocking-pool thread stayed pinned");
}

#[test]
fn a_connection_is_served_on_the_cpu_that_receives_it() {
    let cpus = allowed_cpus();
    if cpus.len() < 2 || !can_pin() {
        eprintln!("skipped: needs two CPUs and sched_setaffinity, has {cpus:?}");
        return;
    }
    let runtime = green::Runtime::builder()
        .workers(2)
        .pin_workers(true)
        .build()
        .unwrap();
    let listener = runtime
        .run(|| green::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let address = listener.local_addr().unwrap();
    // An idle worker takes a task placed on a sibling that it sees stuck, as a sibling
    // whose thread the OS has not run for a millisecond looks: with a fiber on each
    // worker that never parks, no worker is idle, and a connection's fiber starts where
    // placement put it.
    let stop = Arc::new(AtomicBool::new(false));
    let busy = occupy_every_worker(&runtime, &stop);
    let rounds = 2 * cpus.len().min(2);
    let acceptor = runtime.spawn(move || {
        (0..rounds)
            .map(|_| {
                let (mut stream, _) = listener.accept().unwrap();
                // The fiber spawned right after `accept`: placed near the connection.
                green::spawn(move || {
                    let mut byte = [0];
                    stream.read_exact(&mut byte).unwrap();
                    let cpu = current_cpu();
                    stream.write_all(&[cpu as u8]).unwrap();
                })
                .join()
                .unwrap();
            })
            .count()
    });
    for round in 0..rounds {
        let cpu = cpus[round % 2];
        // The client: a plain thread pinned to `cpu`, so the kernel handles the
        // connection's packets there.
        let served_on = thread::spawn(move || {
            pin_to(cpu);
            let mut stream = std::net::TcpStream::connect(address).unwrap();
            stream.write_all(&[0]).unwrap();
            let mut served_on = [0];
            stream.read_exact(&mut served_on).unwrap();
            usize::from(served_on[0])
        })
        .join()
        .unwrap();
        assert_eq!(served_on, cpu, "round {round}: a client on CPU {cpu}");
    }
    assert_eq!(acceptor.join().unwrap(), rounds);
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|h| h.join().unwrap());
}

/// Starts one fiber on each worker of `runtime` that yields until `stop` is set. A
/// worker with a runnable fiber never steals, so tasks spawned meanwhile start where
/// placement puts them. Returns once every worker has its fiber and has finished
/// what it ran before (the loads that placement reads are then settled).
fn occupy_every_worker(
    runtime: &green::Runtime,
    stop: &Arc<AtomicBool>,
) -> Vec<green::JoinHandle<()>> {
    let occupied = Arc::new(Mutex::new(std::collections::HashSet::new()));
    let (started_tx, started_rx) = mpsc::channel::<Option<Arc<AtomicUsize>>>();
    let mut busy = Vec::new();
    // Spawns from a plain thread go round robin, but an idle worker may steal one
    // before its worker starts it: a fiber that finds its worker taken returns at once.
    for _ in 0..100 {
        if busy.len() == runtime.workers() {
            break;
        }
        let (occupied, started, stop) = (occupied.clone(), started_tx.clone(), stop.clone());
        let handle = runtime.spawn(move || {
            if !occupied.lock().unwrap().insert(thread_name()) {
                return started.send(None).unwrap();
            }
            let yields = Arc::new(AtomicUsize::new(0));
            started.send(Some(yields.clone())).unwrap();
            while !stop.load(Ordering::Relaxed) {
                green::yield_now();
                yields.fetch_add(1, Ordering::Relaxed);
            }
        });
        match started_rx.recv().unwrap() {
            Some(yields) => busy.push((handle, yields)),
            None => handle.join().unwrap(),
        }
    }
    assert_eq!(
        busy.len(),
        runtime.workers(),
        "a worker never started a fiber"
    );
    // A fiber that finished before this is removed (and its worker's load published)
    // before its worker resumes another: wait for each busy fiber to go round twice.
    for (_, yields) in &busy {
        let seen = yields.load(Ordering::Relaxed);
        while yields.load(Ordering::Relaxed) < seen + 2 {
            thread::yield_now();
        }
    }
    busy.into_iter().map(|(handle, _)| handle).collect()
}

/// The CPUs the calling thread may run on.
fn allowed_cpus() -> Vec<usize> {
    // SAFETY: all-zero is an empty `cpu_set_t`, which `sched_getaffinity` fills.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is writable and of the size passed.
    let result =
        unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) };
    assert_eq!(result, 0, "sched_getaffinity failed");
    (0..libc::CPU_SETSIZE as usize)
        // SAFETY: the index is below the set's size in bits.
        .filter(|&cpu| unsafe { libc::CPU_ISSET(cpu, &set) })
        .collect()
}

/// Whether this process may pin a thread to one CPU (containers may refuse); tried on a
/// scratch thread.
fn can_pin() -> bool {
    let cpu = allowed_cpus()[0];
    thread::spawn(move || try_pin_to(cpu)).join().unwrap()
}

/// Pins the calling thread to `cpu`.
fn pin_to(cpu: usize) {
    assert!(try_pin_to(cpu), "sched_setaffinity failed");
}

/// Pins the calling thread to `cpu`; whether that was allowed.
fn try_pin_to(cpu: usize) -> bool {
    // SAFETY: all-zero is an empty `cpu_set_t`.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: `cpu` is below the set's size in bits.
    unsafe { libc::CPU_SET(cpu, &mut set) };
    // SAFETY: `set` is valid and of the size passed.
    unsafe { libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0 }
}

/// The CPU the calling thread runs on.
fn current_cpu() -> usize {
    // SAFETY: no preconditions.
    usize::try_from(unsafe { libc::sched_getcpu() }).expect("sched_getcpu failed")
}

#[test]
fn a_fiber_never_changes_thread_while_stealing_is_busy() {
    let runtime = two_workers();
    let suspensions = if NATIVE { 10_000 } else { 500 };
    let moved = runtime.run(move || {
        let watchers: Vec<_> = (0..8)
            .map(|_| {
                green::spawn(move || {
                    let home = thread::current().id();
                    let mut moved = 0;
                    for i in 0..suspensions {
                        // Keep both workers busy spawning and stealing short fibers.
                        if i % 10 == 0 {
                            drop(green::spawn(green::yield_now));
                        }
                        green::yield_now();
                        moved += usize::from(thread::current().id() != home);
                    }
                    moved
                })
            })
            .collect();
        watchers
            .into_iter()
            .map(|w| w.join().unwrap())
            .sum::<usize>()
    });
    assert_eq!(moved, 0);
}

#[test]
fn a_socket_made_on_one_worker_works_in_a_fiber_on_another() {
    let runtime = two_workers();
    let mut crossed = false;
    for _ in 0..20 {
        let (a, b) = UnixStream::pair().unwrap();
        // A first wait registers the socket with the reactor of the worker that makes it.
        let (maker_name, reader) = runtime.run(move || {
            let reader = Async::new(b).unwrap();
            green::await_blocking(std::future::poll_fn(|cx| {
                assert!(reader.poll_readable(cx).is_pending());
                std::task::Poll::Ready(())
            }));
            (thread_name(), reader)
        });
        let (started, started_rx) = mpsc::channel();
        let read = runtime.spawn(move || {
            let mut reader = reader;
            started.send(thread_name()).unwrap();
            let mut buf = [0; 4];
            reader.read_exact(&mut buf).unwrap();
            buf
        });
        let reader_name = started_rx.recv().unwrap();
        (&a).write_all(b"ping").unwrap();
        assert_eq!(&read.join().unwrap(), b"ping");
        if reader_name != maker_name {
            crossed = true;
            break;
        }
    }
    assert!(
        crossed,
        "the reading fiber never ran on another worker than the socket's"
    );
}

#[test]
fn dropping_a_runtime_unwinds_every_fiber_on_every_worker() {
    struct Counted(Arc<AtomicUsize>);
    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
    let drops = Arc::new(AtomicUsize::new(0));
    let runtime = two_workers();
    let (parked_sender, parked) = mpsc::channel();
    let workers = Arc::new(Mutex::new(Vec::new()));
    let handles: Vec<_> = (0..50)
        .map(|_| {
            let (drops, parked_sender, workers) =
                (drops.clone(), parked_sender.clone(), workers.clone());
            runtime.spawn(move || {
                let _guard = Counted(drops);
                workers.lock().unwrap().push(thread_name());
                parked_sender.send(()).unwrap();
                green::sleep(Duration::from_secs(3600));
            })
        })
        .collect();
    for _ in 0..50 {
        parked.recv().unwrap();
    }
    drop(runtime);
    assert_eq!(drops.load(Ordering::SeqCst), 50);
    for handle in handles {
        assert!(handle.join().unwrap_err().is_cancelled());
    }
    let mut workers = workers.lock().unwrap().clone();
    workers.sort();
    workers.dedup();
    assert_eq!(workers.len(), 2, "fibers were parked on both workers");
}

#[test]
fn shutdown_timeout_reports_a_worker_that_does_not_stop() {
    let runtime = two_workers();
    let (running, started) = mpsc::channel();
    runtime.spawn(move || {
        running.send(()).unwrap();
        thread::sleep(Duration::from_millis(500)); // hogs its worker
    });
    started.recv().unwrap();
    assert!(!runtime.shutdown_timeout(Duration::from_millis(10)));

    let idle = two_workers();
    assert!(idle.shutdown_timeout(Duration::from_secs(10)));
}

#[test]
fn unblock_jobs_finish_before_shutdown_returns() {
    let finished = Arc::new(AtomicUsize::new(0));
    let runtime = two_workers();
    let (started, started_rx) = mpsc::channel();
    let count = finished.clone();
    runtime.spawn(move || {
        green::unblock(move || {
            started.send(()).unwrap();
            thread::sleep(Duration::from_millis(50));
            count.fetch_add(1, Ordering::SeqCst);
        })
    });
    started_rx.recv().unwrap();
    drop(runtime);
    assert_eq!(
        finished.load(Ordering::SeqCst),
        1,
        "the shutdown returned before the blocking pool's job had ended"
    );
}

#[test]
fn a_fiber_that_hogs_its_worker_is_reported_once() {
    // Which fibers the monitor reports depends on time: a fiber whose thread the OS
    // leaves unscheduled is reported too. So this follows the hog's report as an event,
    // and only counts reports of the hog; the rules (a resume starts the clock again,
    // one report per stall, idle workers never) have unit tests in the crate.
    let (reports_tx, reports_rx) = mpsc::channel();
    let threshold = Duration::from_millis(20);
    let runtime = green::Runtime::builder()
        .workers(2)
        .stall_warning(threshold)
        .on_stall(move |report| drop(reports_tx.send(report.clone())))
        .build()
        .unwrap();
    let (worker, first) = runtime.run(move || {
        // Blocks the worker thread until the monitor reports it (bounded, so that a
        // missing report fails the test instead of hanging it)...
        let first = reports_rx.recv_timeout(Duration::from_secs(10));
        // ...and for several more of the monitor's looks (a quarter of the threshold
        // apart), each a chance to report it again.
        thread::sleep(threshold * 3);
        (thread_name(), first.map(|report| (report, reports_rx)))
    });
    let (first, reports_rx) = first.expect("the hog was not reported");
    drop(runtime); // stops the monitor, which drops the hook and its sender
    assert!(worker.ends_with(&format!("-{}", first.worker)), "{first:?}");
    assert!(first.running_for >= threshold, "{first:?}");
    assert!(first.to_string().contains("without suspending"));
    let again: Vec<_> = reports_rx
        .iter()
        .filter(|r| (r.worker, r.fiber) == (first.worker, first.fiber))
        .collect();
    assert!(again.is_empty(), "reported again: {again:?}");
}

// Once lost: the hook's panic ended the monitor thread, silently, and no stall was
// reported again.
#[test]
fn a_stall_hook_that_panicked_is_called_for_the_next_stall() {
    let (reports_tx, reports_rx) = mpsc::channel();
    let calls = AtomicUsize::new(0);
    let runtime = green::Runtime::builder()
        .workers(1)
        .stall_warning(Duration::from_millis(20))
        .on_stall(move |report| {
            drop(reports_tx.send(report.clone()));
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the stall hook panics on its first call");
            }
        })
        .build()
        .unwrap();
    let (first, second) = runtime.run(move || {
        // Two stalls of the one fiber, each blocking the worker thread until reported
        // (bounded, so that a missing report fails the test instead of hanging it),
        // with a suspension between them.
        let first = reports_rx.recv_timeout(Duration::from_secs(10));
        green::yield_now();
        let second = reports_rx.recv_timeout(Duration::from_secs(10));
        (first, second)
    });
    let first = first.expect("the first stall was not reported");
    let second = second.expect("the stall after the hook's panic was not reported");
    assert_eq!((first.worker, second.worker), (0, 0));
    assert_eq!(first.fiber, second.fiber, "one fiber stalled twice");
}

#[test]
fn spawn_local_keeps_a_non_send_fiber_on_its_worker() {
    let runtime = two_workers();
    let same = runtime.run(|| {
        let here = thread::current().id();
        let local = std::rc::Rc::new(thread::current().id());
        green::spawn_local(move || {
            green::yield_now();
            *local == thread::current().id()
        })
        .join()
        .unwrap()
            && here == thread::current().id()
    });
    assert!(same);
}

#[test]
fn spawn_local_outside_a_fiber_panics_with_a_clear_message() {
    let payload = std::panic::catch_unwind(|| green::spawn_local(|| 1)).unwrap_err();
    let message = payload.downcast_ref::<&str>().copied().unwrap_or_default();
    assert!(message.contains("must be called from a fiber"), "{message}");
}

#[inline(never)]
fn marker_frame_joining<T: Send + 'static>(handle: green::JoinHandle<T>) -> T {
    std::hint::black_box(handle.join().unwrap())
}

#[test]
fn a_task_joined_before_it_starts_is_resumed_by_its_joiner_unless_stolen() {
    let runtime = two_workers();
    let rounds = if NATIVE { 50 } else { 10 };
    let mut direct = 0;
    for _ in 0..rounds {
        let (joiner, task, trace) = runtime.run(|| {
            let handle = green::spawn(|| {
                let trace = std::backtrace::Backtrace::force_capture().to_string();
                (thread_name(), trace)
            });
            let (task, trace) = marker_frame_joining(handle);
            (thread_name(), task, trace)
        });
        // An idle sibling may take the task before the join; on the joiner's worker the
        // joiner runs it itself, so the task's backtrace walks into the joiner.
        if task == joiner {
            assert!(
                trace.contains("marker_frame_joining"),
                "the worker loop, not the joiner, ran the task:\n{trace}"
            );
            direct += 1;
        }
    }
    // A steal needs the sibling awake and looking within the microseconds between spawn
    // and join: rare, never every round.
    assert!(direct > 0, "every one of {rounds} tasks was stolen");
}

// Idle workers and stuck siblings: a task queued just before its worker gets stuck in a
// fiber is taken by a sibling, whatever state that sibling sleeps in.

#[test]
fn a_worker_watching_an_awake_sibling_takes_the_task_it_queued_before_getting_stuck() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let (index_tx, index_rx) = std::sync::mpsc::channel();
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    let go_hog = go.clone();
    let hog = runtime.spawn(move || {
        index_tx
            .send(test_support::worker_index().unwrap())
            .unwrap();
        // Awake, so that the sibling sleeps with a timeout rather than blind.
        while !go_hog.load(Ordering::SeqCst) {
            green::yield_now();
        }
        drop(green::spawn(move || {
            let _ = ran_tx.send(std::thread::current().id());
        }));
        let ran_on = ran_rx.recv_timeout(Duration::from_secs(10));
        (std::thread::current().id(), ran_on)
    });
    let sibling = 1 - index_rx.recv().unwrap();
    // Asleep, and not blind: on a timeout.
    while !test_support::is_sleeping(&runtime, sibling) || test_support::is_blind(&runtime, sibling)
    {
        std::thread::yield_now();
    }
    go.store(true, Ordering::SeqCst);
    let (hog_thread, ran_on) = hog.join().unwrap();
    let ran_on = ran_on.expect("the task waited for the stuck worker");
    assert_ne!(ran_on, hog_thread);
}

/// Spawns a fiber that parks in a read until every worker of `runtime` sleeps blind,
/// is then woken by its own reactor (no sibling is told), and runs `then`.
fn when_every_worker_sleeps_blind<T: Send + 'static>(
    runtime: &green::Runtime,
    then: impl FnOnce() -> T + Send + 'static,
) -> green::JoinHandle<T> {
    use std::io::{Read, Write};
    let (mut poke, hog_side) = std::os::unix::net::UnixStream::pair().unwrap();
    let (parked_tx, parked_rx) = std::sync::mpsc::channel();
    let hog = runtime.spawn(move || {
        let mut hog_side = green::io::Async::new(hog_side).unwrap();
        parked_tx.send(()).unwrap();
        hog_side.read_exact(&mut [0]).unwrap();
        then()
    });
    // Counted once the hog has started (it then parks in its read): not a count from
    // before the spawn woke a worker.
    parked_rx.recv().unwrap();
    while test_support::blind_sleepers(runtime) < runtime.workers() {
        std::thread::yield_now();
    }
    poke.write_all(&[1]).unwrap();
    hog
}

/// From a fiber: spawns a task that sends the id of its thread to `also` (if given)
/// and back, then blocks this worker's thread until it did (10 s at most). Returns
/// this thread's id and the task's.
fn spawn_then_get_stuck(
    also: Option<std::sync::mpsc::Sender<std::thread::ThreadId>>,
) -> (
    std::thread::ThreadId,
    Result<std::thread::ThreadId, std::sync::mpsc::RecvTimeoutError>,
) {
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    drop(green::spawn(move || {
        let me = std::thread::current().id();
        let _ = ran_tx.send(me);
        if let Some(also) = also {
            let _ = also.send(me);
        }
    }));
    let ran_on = ran_rx.recv_timeout(Duration::from_secs(10));
    (std::thread::current().id(), ran_on)
}

#[test]
fn a_task_queued_just_before_its_worker_gets_stuck_is_taken_by_a_blind_sleeper() {
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    // Only the hog's spawn can tell the other worker to look again.
    let hog = when_every_worker_sleeps_blind(&runtime, || spawn_then_get_stuck(None));
    let (hog_thread, ran_on) = hog.join().unwrap();
    let ran_on = ran_on.expect("the task waited for the stuck worker");
    assert_ne!(ran_on, hog_thread);
}

#[test]
fn a_task_pinned_to_its_spawner_just_before_it_gets_stuck_is_taken_by_a_blind_sleeper() {
    let runtime = green::Runtime::builder()
        .workers(2)
        .pin_workers(true)
        .build()
        .unwrap();
    let cpus = || {
        (0..2)
            .map(|i| test_support::worker_cpu(&runtime, i))
            .collect::<Vec<_>>()
    };
    while cpus().contains(&None) {
        std::thread::yield_now();
    }
    if cpus()[0] == cpus()[1] {
        eprintln!("skipped: the workers could not be pinned to two CPUs");
        return;
    }
    let hog = when_every_worker_sleeps_blind(&runtime, || {
        // As after `accept` on this worker's CPU: the task is pinned here.
        let cpu = test_support::current_worker_cpu().unwrap();
        let here = test_support::worker_index().unwrap();
        test_support::spawn_near_cpu(cpu);
        let placement = test_support::next_placement();
        test_support::spawn_near_cpu(cpu);
        (spawn_then_get_stuck(None), placement, here)
    });
    let ((hog_thread, ran_on), placement, here) = hog.join().unwrap();
    assert_eq!(placement, Some(here), "the task is pinned to its spawner");
    let ran_on = ran_on.expect("the task waited for the stuck worker");
    assert_ne!(ran_on, hog_thread);
}

#[test]
fn a_blind_sleeper_woken_for_a_task_passes_the_alert_on_if_it_leaves_for_its_own_work() {
    // Spawns from a plain thread go round robin: `waiter` to worker 0, the hog to 1;
    // worker 2 stays idle. The hog's alert goes to the first blind worker: 0.
    let runtime = green::Runtime::builder().workers(3).build().unwrap();
    let (wake_waiter, waiter_rx) = green::sync::channel::<()>();
    let (parked_tx, parked_rx) = std::sync::mpsc::channel();
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    let waiter = runtime.spawn(move || {
        parked_tx.send(()).unwrap();
        waiter_rx.recv().unwrap();
        // Woken by a message: blocks its thread until the task ran.
        let ran_on = ran_rx.recv_timeout(Duration::from_secs(10));
        (std::thread::current().id(), ran_on)
    });
    parked_rx.recv().unwrap();
    let hog = when_every_worker_sleeps_blind(&runtime, move || {
        // Wakes the waiter's worker with work of its own, then queues a task here:
        // its alert most likely finds that worker still counted blind.
        wake_waiter.send(()).unwrap();
        spawn_then_get_stuck(Some(ran_tx))
    });
    let (hog_thread, ran_on) = hog.join().unwrap();
    let (waiter_thread, waiter_saw) = waiter.join().unwrap();
    let ran_on = ran_on.expect("the task waited for the stuck workers");
    assert_eq!(waiter_saw, Ok(ran_on));
    assert_ne!(ran_on, hog_thread);
    assert_ne!(ran_on, waiter_thread);
}

// The join shortcut: a task due next runs nested in its joiner, on its own stack.

/// The address of a local of the calling frame, to tell which stack it runs on.
#[inline(never)]
fn stack_address() -> usize {
    let local = 0u8;
    std::hint::black_box(&local as *const u8 as usize)
}

#[test]
fn join_runs_a_task_due_next_on_its_own_stack_resumed_by_the_joiner() {
    let (trace, joiner, task) = one_worker_with_watchdog(|| {
        let handle = green::spawn(|| {
            let trace = std::backtrace::Backtrace::force_capture().to_string();
            (trace, stack_address())
        });
        // The task is the only one waiting to run: `join` switches to it directly.
        let (trace, task) = marker_frame_joining(handle);
        (trace, stack_address(), task)
    });
    // Its own fiber, not a call on the joiner's stack: the stacks are separate mappings
    // of 256 KiB each, so the two frames lie far apart.
    assert!(
        joiner.abs_diff(task) > 64 * 1024,
        "the task ran on the joiner's stack: {joiner:#x} and {task:#x}"
    );
    // Its resumer was the joiner, not the worker loop: the backtrace walks into it.
    assert!(
        trace.contains("marker_frame_joining"),
        "the joiner does not resume the task:\n{trace}"
    );
}

#[test]
fn a_task_run_by_join_that_blocks_hands_control_back_and_completes_later() {
    let value = one_worker_with_watchdog(|| {
        let handle = green::spawn(|| {
            let (sender, receiver) = green::sync::channel::<u32>();
            // `sender` runs only once the worker loop runs again: `recv` parks this
            // task, the joiner must then park in turn and give the loop control.
            green::spawn(move || sender.send(41).unwrap());
            receiver.recv().unwrap() + 1
        });
        marker_frame_joining(handle)
    });
    assert_eq!(value, 42);
}

#[test]
fn joins_nested_hundreds_deep_run_each_task_on_a_stack_of_its_own() {
    /// The stack addresses of `n` nested tasks, most run directly by their joiner (the
    /// loop starts one when its periodic reactor poll is due).
    fn depth(n: u32) -> Vec<usize> {
        let mut addresses = match n {
            0 => Vec::new(),
            _ => green::spawn(move || depth(n - 1)).join().unwrap(),
        };
        addresses.push(stack_address());
        addresses
    }
    let levels = if NATIVE { 300 } else { 60 };
    let addresses = one_worker_with_watchdog(move || depth(levels));
    assert_eq!(addresses.len(), levels as usize + 1);
    for pair in addresses.windows(2) {
        assert!(
            pair[0].abs_diff(pair[1]) > 64 * 1024,
            "a task ran on its joiner's stack: {:#x} and {:#x}",
            pair[0],
            pair[1]
        );
    }
}

// Placement on a runtime with several workers, as it comes: what a new user writes.

/// Runs `f` as the main fiber of a two-worker runtime whose other worker runs a fiber
/// that yields until `f` returns: that worker is never idle, and never steals.
fn with_the_other_worker_busy<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let runtime = two_workers();
    let stop = Arc::new(AtomicBool::new(false));
    // From a plain thread, the workers in turn: the busy fiber to one, `f` to the other.
    let busy = keep_workers_busy(&runtime, 1, &stop);
    let value = runtime.run(f);
    stop.store(true, Ordering::Relaxed);
    busy.into_iter().for_each(|h| drop(h.join().unwrap()));
    value
}

#[test]
fn two_fibers_spawned_then_joined_take_turns() {
    // The README's first program, with plain `spawn`: both start on the main fiber's
    // worker, which is not busy (the main fiber parks in `join`), and take turns there.
    // The other worker is kept busy, so that it never steals: were this worker's thread
    // off the CPU for a millisecond (a loaded machine), the other would take the tasks of
    // a worker that looks stuck, rightly, and blur what placement decided.
    let order = common::within(60, "two counting fibers", || {
        with_the_other_worker_busy(|| {
            let order = Arc::new(Mutex::new(Vec::new()));
            let counters: Vec<_> = [1, 2]
                .into_iter()
                .map(|task| {
                    let order = order.clone();
                    green::spawn(move || {
                        for _ in 0..3 {
                            order.lock().unwrap().push(task);
                            green::yield_now();
                        }
                    })
                })
                .collect();
            for counter in counters {
                counter.join().unwrap();
            }
            Arc::try_unwrap(order).unwrap().into_inner().unwrap()
        })
    });
    assert_eq!(order, [1, 2, 1, 2, 1, 2]);
}

#[test]
fn a_spawned_pair_that_talks_stays_on_its_spawners_worker() {
    let (main, b, a) = common::within(60, "a ping-pong pair", || {
        with_the_other_worker_busy(|| {
            let (to_b, from_a) = green::sync::channel::<u64>();
            let (to_a, from_b) = green::sync::channel::<u64>();
            let rounds = if NATIVE { 1000 } else { 100 };
            let b = green::spawn(move || {
                while let Ok(v) = from_a.recv() {
                    to_a.send(v + 1).unwrap();
                }
                thread_name()
            });
            let a = green::spawn(move || {
                let mut v = 0;
                for _ in 0..rounds {
                    to_b.send(v).unwrap();
                    v = from_b.recv().unwrap();
                }
                assert_eq!(v, rounds);
                thread_name()
            });
            let a = a.join().unwrap();
            (thread_name(), b.join().unwrap(), a)
        })
    });
    assert_eq!(
        (&b, &a),
        (&main, &main),
        "the pair was split across workers"
    );
}

#[test]
fn a_fiber_yielding_in_a_loop_delays_a_ready_socket_by_at_most_the_poll_budget() {
    // The bound the worker docs state: while fibers keep a worker busy it polls its
    // reactor every 64 resumes, and a fiber woken then runs after one turn of each fiber
    // queued before it: here, the one yielding fiber.
    const POLL_BUDGET: usize = 64;
    let turns = common::within(60, "a ready socket behind a yielding fiber", || {
        common::one_worker().run(|| {
            let (mut ours, theirs) = UnixStream::pair().unwrap();
            let mut theirs = Async::new(theirs).unwrap();
            let got = Arc::new(AtomicBool::new(false));
            let got_it = got.clone();
            let reader = green::spawn(move || {
                theirs.read_exact(&mut [0]).unwrap();
                got_it.store(true, Ordering::SeqCst);
            });
            // One worker: the reader runs now, and parks in its read.
            green::yield_now();
            ours.write_all(&[1]).unwrap();
            let mut turns = 0;
            while !got.load(Ordering::SeqCst) && turns < 100 * POLL_BUDGET {
                green::yield_now();
                turns += 1;
            }
            reader.join().unwrap();
            turns
        })
    });
    assert!(
        turns <= POLL_BUDGET + 1,
        "the ready socket waited {turns} turns of a yielding fiber"
    );
}

/// Spins (without suspending) for `duration`: a fiber's turn of real work.
fn work_for(duration: Duration) {
    let start = std::time::Instant::now();
    while start.elapsed() < duration {
        std::hint::spin_loop();
    }
}

/// Runs `f` in a fiber of `runtime` on worker `index`, resubmitting it until a spawn from
/// outside lands there (another worker may take it before it starts).
fn on_worker<T: Send + 'static>(
    runtime: &green::Runtime,
    index: usize,
    f: impl FnOnce() -> T + Send + Clone + 'static,
) -> green::JoinHandle<Option<T>> {
    loop {
        let f = f.clone();
        let (placed_tx, placed_rx) = mpsc::channel();
        let handle = runtime.spawn(move || {
            let here = test_support::worker_index() == Some(index);
            placed_tx.send(here).unwrap();
            here.then(f)
        });
        if placed_rx.recv().unwrap() {
            return handle;
        }
        handle.join().unwrap();
    }
}

#[test]
fn an_idle_worker_takes_a_task_that_waited_behind_lag_turns_of_its_busy_sibling() {
    // Worker 0 has TURNERS runnable fibers that each work TURN a turn, and a task
    // placed behind them on its own (stealable) queue: the task's turn comes after
    // TURNERS turns, far more than `LAG_TURNS` (16). Worker 1 goes idle. Worker 0 is
    // never stuck (a resume every TURN, below `STUCK_AFTER`), so only the lag rule lets
    // worker 1 take the task. Worker 1 must end its own fibers and look at worker 0 twice
    // within the TURNERS turns (160 ms): room for a thread the OS or an emulator
    // schedules late (12 ms once proved too little under QEMU with the other core busy).
    // Under such load the OS may also preempt worker 0 for longer than `STUCK_AFTER`, and
    // the stuck rule then takes the task first: the lag rule alone shows on a quiet
    // machine.
    const TURNERS: usize = 400;
    const TURN: Duration = Duration::from_micros(400);
    const PARKED: usize = TURNERS + 4;
    common::within(120, "the lag test", || {
        let runtime = two_workers();
        let (release, released) = green::sync::channel::<()>();
        let released = Arc::new(Mutex::new(Some(released)));
        let (parked_tx, parked_rx) = mpsc::channel();
        // Worker 1: enough parked fibers that placement keeps the task on worker 0.
        let parked = on_worker(&runtime, 1, move || {
            let released = released.lock().unwrap().take().unwrap();
            let released = Arc::new(released);
            let fibers: Vec<_> = (0..PARKED)
                .map(|_| {
                    let released = released.clone();
                    green::spawn_local(move || while released.recv().is_ok() {})
                })
                .collect();
            green::yield_now(); // every one of them parks
            parked_tx.send(()).unwrap();
            fibers.into_iter().for_each(|f| f.join().unwrap());
        });
        parked_rx.recv().unwrap();
        let ran_on = on_worker(&runtime, 0, move || {
            let started = Arc::new(AtomicBool::new(false));
            let (go_tx, go_rx) = green::sync::channel::<()>();
            let go_rx = Arc::new(go_rx);
            let turners: Vec<_> = (0..TURNERS)
                .map(|_| {
                    let (go_rx, started) = (go_rx.clone(), started.clone());
                    green::spawn_local(move || {
                        go_rx.recv().unwrap();
                        // Bounded: should the task never start elsewhere, it starts here
                        // after one turn of each, and the assertion below fails.
                        for _ in 0..1000 {
                            if started.load(Ordering::SeqCst) {
                                break;
                            }
                            work_for(TURN);
                            green::yield_now();
                        }
                    })
                })
                .collect();
            green::yield_now(); // every turner parks on `go`
            (0..TURNERS).for_each(|_| go_tx.send(()).unwrap());
            assert_eq!(
                test_support::next_placement(),
                None,
                "the task must wait on worker 0's own queue for the test to mean anything"
            );
            let task = {
                let started = started.clone();
                green::spawn(move || {
                    started.store(true, Ordering::SeqCst);
                    test_support::worker_index()
                })
            };
            drop(release); // worker 1's fibers end: it goes idle
            let ran_on = task.join().unwrap();
            turners.into_iter().for_each(|t| t.join().unwrap());
            ran_on
        });
        parked.join().unwrap();
        let ran_on = ran_on.join().unwrap().unwrap();
        assert_eq!(ran_on, Some(1), "the task waited for its busy worker");
    });
}

#[test]
fn a_fiber_whose_socket_is_always_ready_yields_after_its_io_budget() {
    // The main fiber reads one byte at a time from a socket that holds more bytes than
    // it reads: no read ever waits. A task spawned before the loop runs when the main
    // fiber yields: after at most 128 reads (the I/O budget of a turn), not after all.
    const READS: usize = 2_000;
    let reads_when_it_ran = one_worker_with_watchdog(|| {
        let (mut reader, mut writer) = green::net::unix::UnixStream::pair().unwrap();
        writer.write_all(&[1; READS]).unwrap();
        let reads = Arc::new(AtomicUsize::new(0));
        let other = {
            let reads = reads.clone();
            green::spawn(move || reads.load(Ordering::SeqCst))
        };
        let mut byte = [0];
        for _ in 0..READS {
            reader.read_exact(&mut byte).unwrap();
            reads.fetch_add(1, Ordering::SeqCst);
        }
        other.join().unwrap()
    });
    assert!(
        (1..=128).contains(&reads_when_it_ran),
        "the other task ran after {reads_when_it_ran} reads"
    );
}

/// An async `yield_now`: pending once, after waking itself.
async fn async_yield() {
    let mut woke = false;
    std::future::poll_fn(|cx| {
        if woke {
            return std::task::Poll::Ready(());
        }
        woke = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    })
    .await
}

/// In `await_blocking` on one worker, polls a future that yields (wakes itself) until
/// `done` is set, at most `limit` times; returns how many polls it took.
fn yield_in_await_blocking_until(done: &AtomicBool, limit: usize) -> usize {
    green::await_blocking(async {
        let mut polls = 0;
        while !done.load(Ordering::SeqCst) && polls < limit {
            async_yield().await;
            polls += 1;
        }
        polls
    })
}

#[test]
fn a_future_that_keeps_waking_itself_gives_way_after_the_io_budget() {
    // A self-wake during the poll needs no park: `await_blocking` polls again at once,
    // but as one I/O operation of the fiber's turn, so the fiber yields before its 129th
    // (before, it polled for as long as the future kept waking itself: a livelock when
    // the future waits for another fiber of the worker).
    const LIMIT: usize = 100_000;
    let polls = one_worker_with_watchdog(|| {
        let done = Arc::new(AtomicBool::new(false));
        let other = {
            let done = done.clone();
            green::spawn(move || done.store(true, Ordering::SeqCst))
        };
        let polls = yield_in_await_blocking_until(&done, LIMIT);
        other.join().unwrap();
        polls
    });
    // The yield pending when the fiber gave way completes (and counts) before the loop
    // sees `done`: 128 + 1.
    assert!(
        (1..=129).contains(&polls),
        "the other fiber ran after {polls} polls of a future that yields"
    );
}

#[test]
fn a_future_that_keeps_waking_itself_delays_a_ready_socket_by_a_bounded_number_of_polls() {
    // The reader parks in the reactor; the reactor is polled every 64 resumes, and each
    // turn of the yielding fiber is at most 128 polls: the reader runs within about
    // 64 x 128 polls, not never.
    const BOUND: usize = 65 * 128;
    let polls = one_worker_with_watchdog(|| {
        let (mut ours, theirs) = UnixStream::pair().unwrap();
        let mut theirs = Async::new(theirs).unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let reader = {
            let done = done.clone();
            green::spawn(move || {
                theirs.read_exact(&mut [0]).unwrap();
                done.store(true, Ordering::SeqCst);
            })
        };
        green::yield_now(); // the reader parks in its read
        ours.write_all(&[1]).unwrap();
        let polls = yield_in_await_blocking_until(&done, 100 * BOUND);
        reader.join().unwrap();
        polls
    });
    assert!(
        polls <= BOUND,
        "the ready socket waited {polls} polls of a future that yields"
    );
}

/// The time slice a worker asks the kernel for (`Builder::worker_slice`), read back with
/// `sched_getattr`.
mod worker_slice {
    use std::thread;
    use std::time::Duration;

    /// `struct sched_attr`, its first version (48 bytes).
    #[repr(C)]
    #[derive(Default, Debug)]
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

    /// The calling thread's scheduling attributes.
    fn attr() -> SchedAttr {
        let mut attr = SchedAttr::default();
        // SAFETY: `attr` is a writable `sched_attr` of the size passed; pid 0 is this
        // thread.
        let result = unsafe {
            libc::syscall(
                libc::SYS_sched_getattr,
                0,
                &mut attr as *mut SchedAttr,
                size_of::<SchedAttr>() as libc::c_uint,
                0,
            )
        };
        assert_eq!(
            result,
            0,
            "sched_getattr: {}",
            std::io::Error::last_os_error()
        );
        attr
    }

    /// The calling thread's slice, in nanoseconds.
    fn slice_here() -> u64 {
        attr().runtime
    }

    /// Asks for a slice of `nanos` for the calling thread, as a user would.
    fn set_slice_here(nanos: u64) {
        let mut attr = attr();
        attr.size = size_of::<SchedAttr>() as u32;
        attr.flags = 0;
        attr.runtime = nanos;
        // SAFETY: `attr` is a valid `sched_attr` of the size it states; pid 0 is this
        // thread.
        let result =
            unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
        assert_eq!(
            result,
            0,
            "sched_setattr: {}",
            std::io::Error::last_os_error()
        );
    }

    /// Whether this kernel takes a thread's slice request (Linux 6.12 and later; older
    /// ones ignore it, and then there is nothing to check): asks on a scratch thread and
    /// reads the slice back.
    fn kernel_takes_slices() -> bool {
        let takes = thread::spawn(|| {
            let mut attr = SchedAttr {
                size: size_of::<SchedAttr>() as u32,
                runtime: 300_000,
                ..SchedAttr::default()
            };
            // SAFETY: `attr` is a valid `sched_attr` of the size it states (the default
            // policy, nice 0); pid 0 is this scratch thread.
            let set =
                unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
            // SAFETY: as above, writable.
            let got = unsafe {
                libc::syscall(
                    libc::SYS_sched_getattr,
                    0,
                    &mut attr as *mut SchedAttr,
                    48,
                    0,
                )
            };
            set == 0 && got == 0 && attr.runtime == 300_000
        })
        .join()
        .unwrap();
        if !takes {
            eprintln!("skipped: this kernel does not take a thread's slice request");
        }
        takes
    }

    /// Runs `f` on a thread of its own, whose scheduling attributes it may change.
    fn on_a_thread<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        thread::spawn(f).join().unwrap()
    }

    #[test]
    fn workers_ask_for_200_microseconds_by_default_and_for_the_slice_set() {
        if !kernel_takes_slices() {
            return;
        }
        on_a_thread(|| {
            set_slice_here(3_000_000);
            let runtime = green::Runtime::builder().workers(2).build().unwrap();
            // Each fiber reads the slice of the worker it runs on; two parked at once are
            // on two workers or one, either way each reads a worker's.
            let slices = runtime.run(|| {
                let handles: Vec<_> = (0..4).map(|_| green::spawn(slice_here)).collect();
                handles
                    .into_iter()
                    .map(|h| h.join().unwrap())
                    .collect::<Vec<_>>()
            });
            assert_eq!(slices, [200_000; 4]);
            let runtime = green::Runtime::builder()
                .workers(2)
                .worker_slice(Some(Duration::from_micros(1500)))
                .build()
                .unwrap();
            assert_eq!(runtime.run(slice_here), 1_500_000);
            // The thread that built them keeps its own.
            assert_eq!(slice_here(), 3_000_000);
        });
    }

    #[test]
    fn without_a_worker_slice_workers_keep_the_builders() {
        if !kernel_takes_slices() {
            return;
        }
        on_a_thread(|| {
            set_slice_here(700_000);
            let runtime = green::Runtime::builder()
                .worker_slice(None)
                .build()
                .unwrap();
            assert_eq!(runtime.run(slice_here), 700_000);
        });
    }

    #[test]
    fn blocking_pool_threads_get_the_builders_slice_back() {
        if !kernel_takes_slices() {
            return;
        }
        on_a_thread(|| {
            set_slice_here(700_000);
            let runtime = green::Runtime::builder().workers(1).build().unwrap();
            let (worker, pool) = runtime.run(|| (slice_here(), green::unblock(slice_here)));
            assert_eq!((worker, pool), (200_000, 700_000));
        });
    }

    #[test]
    fn the_slice_keeps_the_builders_policy_and_nice_value() {
        if !kernel_takes_slices() {
            return;
        }
        on_a_thread(|| {
            // Both need no privilege: a batch policy, and a nice value raised.
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid `sched_param`; pid 0 is this thread.
            assert_eq!(
                unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) },
                0
            );
            // SAFETY: `gettid` has no preconditions.
            let tid = unsafe { libc::gettid() };
            // SAFETY: `setpriority` on this thread's id.
            assert_eq!(
                unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as u32, 3) },
                0
            );
            let runtime = green::Runtime::builder().workers(1).build().unwrap();
            let worker = runtime.run(attr);
            assert_eq!(
                (worker.policy as i32, worker.nice, worker.runtime),
                (libc::SCHED_BATCH, 3, 200_000),
                "{worker:?}"
            );
        });
    }
}
