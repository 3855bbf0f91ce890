//! Behaviour of the runtime: spawning and joining, waking, parking, timers, `unblock`,
//! panics, cancellation and bad input.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use futures::channel::oneshot;
use green::stack;

/// Loop counts are scaled down under QEMU (riscv64, aarch64), where everything is slower.
const NATIVE: bool = cfg!(target_arch = "x86_64");

/// Runs `f` on a fresh one-worker runtime (so that the order in which fibers run is
/// defined), failing the test if it does not finish within a minute (a lost wake would
/// otherwise hang the test forever).
fn run_with_watchdog<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    common::within(60, "a one-worker runtime (a wake was lost?)", move || {
        common::one_worker().run(f)
    })
}

/// Counts its drops in the shared counter.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

/// A future that is pending until `flag` is set, counting its polls and exposing its waker.
struct Gate {
    flag: Arc<AtomicBool>,
    polls: Arc<AtomicUsize>,
    waker: Arc<Mutex<Option<Waker>>>,
}

impl Future for Gate {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.flag.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn run_returns_the_value_of_the_main_fiber() {
    assert_eq!(green::run(|| 6 * 7), 42);
}

#[test]
fn spawned_fibers_are_joined_with_their_values() {
    let sum = run_with_watchdog(|| {
        let handles: Vec<_> = (0..100u64).map(|i| green::spawn(move || i * i)).collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
    });
    assert_eq!(sum, (0..100u64).map(|i| i * i).sum());
}

/// A closure capturing `N` bytes and a drop counter, returning their sum.
fn sized_task<const N: usize>(
    bytes: [u8; N],
    drops: &Arc<AtomicUsize>,
) -> impl FnOnce() -> u64 + Send + 'static {
    let counted = Counted(drops.clone());
    move || {
        let _counted = counted;
        bytes.iter().map(|&b| u64::from(b)).sum()
    }
}

#[test]
fn tasks_of_every_size_run_and_drop_their_captures_once() {
    // On x86_64, the tasks of the closures below take 112 bytes (a recycled block of the
    // smallest class), 208, 168 and 144 (16-byte aligned; larger classes) and over 400 (a
    // box of their own): each many times over (blocks go round), joined and detached, on one
    // worker and then on the default runtime's (blocks freed on other threads), whose
    // threads exit.
    let drops = Arc::new(AtomicUsize::new(0));
    let rounds = 300;
    for runtime in [common::one_worker(), green::Runtime::new().unwrap()] {
        let drops = drops.clone();
        common::within(60, "spawning tasks of every size", move || {
            runtime.run(move || {
                let mut small = Vec::new();
                let mut wide = Vec::new();
                for i in 0..rounds {
                    let b = (i % 200) as u8;
                    small.push(green::spawn(sized_task([b; 1], &drops)));
                    small.push(green::spawn(sized_task([b; 100], &drops)));
                    small.push(green::spawn(sized_task([b; 400], &drops)));
                    drop(green::spawn(sized_task([b; 60], &drops)));
                    let counted = Counted(drops.clone());
                    wide.push(green::spawn(move || {
                        let _counted = counted;
                        u128::MAX - u128::from(b)
                    }));
                }
                for (n, handle) in small.into_iter().enumerate() {
                    let (i, len) = (n / 3, [1u64, 100, 400][n % 3]);
                    assert_eq!(handle.join().unwrap(), (i % 200) as u64 * len);
                }
                for (i, handle) in wide.into_iter().enumerate() {
                    assert_eq!(handle.join().unwrap(), u128::MAX - (i % 200) as u128);
                }
            })
        });
    }
    // Every closure was dropped once (by its fiber, or unstarted at shutdown) by the time
    // its runtime was dropped.
    assert_eq!(drops.load(Ordering::SeqCst), 2 * rounds * 5);
}

#[test]
fn releasing_the_pools_while_fibers_spawn_and_end_loses_nothing() {
    // `stack::release_pools` gives the free task blocks back to the allocator while the
    // runtime takes and gives back blocks on its own threads (under Valgrind, Memcheck
    // checks that no block is used once given up).
    let rounds = if std::env::var_os("GREEN_UNDER_VALGRIND").is_some() {
        20
    } else {
        300
    };
    let stop = Arc::new(AtomicBool::new(false));
    let releaser = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut releases = 0u64;
            while !stop.load(Ordering::SeqCst) || releases == 0 {
                stack::release_pools();
                releases += 1;
                std::thread::yield_now();
            }
            releases
        })
    };
    let sum = common::within(60, "spawning while the pools are released", move || {
        green::Runtime::new().unwrap().run(move || {
            (0..rounds)
                .map(|_| {
                    let handles: Vec<_> = (0..64u64).map(|i| green::spawn(move || i)).collect();
                    handles.into_iter().map(|h| h.join().unwrap()).sum::<u64>()
                })
                .sum::<u64>()
        })
    });
    stop.store(true, Ordering::SeqCst);
    assert!(releaser.join().unwrap() > 0);
    assert_eq!(sum, rounds * (0..64u64).sum::<u64>());
}

#[test]
fn spawn_outside_a_runtime_uses_the_global_runtime() {
    let handle = green::spawn(|| {
        (
            green::in_fiber(),
            std::thread::current().name().map(str::to_owned),
        )
    });
    let (in_fiber, thread) = handle.join().unwrap();
    assert!(in_fiber);
    assert!(thread.unwrap().starts_with("green-global"));
}

#[test]
fn a_thousand_os_threads_wake_fibers() {
    let count = if NATIVE { 1000 } else { 100 };
    let total = run_with_watchdog(move || {
        let mut fibers = Vec::new();
        let mut threads = Vec::new();
        for i in 0..count {
            let (sender, receiver) = oneshot::channel::<usize>();
            fibers.push(green::spawn(move || {
                green::await_blocking(receiver).unwrap()
            }));
            threads.push(std::thread::spawn(move || sender.send(i).unwrap()));
        }
        let total: usize = fibers.into_iter().map(|f| f.join().unwrap()).sum();
        for thread in threads {
            thread.join().unwrap();
        }
        total
    });
    assert_eq!(total, (0..count).sum());
}

#[test]
fn a_wake_racing_with_the_park_is_never_lost() {
    let rounds = if NATIVE { 20_000 } else { 1_000 };
    let completed = run_with_watchdog(move || {
        // Another thread completes each oneshot right as the fiber polls and parks.
        let (senders, receivers) = mpsc::channel::<oneshot::Sender<usize>>();
        let waker_thread = std::thread::spawn(move || {
            for sender in receivers {
                let _ = sender.send(1);
            }
        });
        let mut completed = 0;
        for _ in 0..rounds {
            let (sender, receiver) = oneshot::channel();
            senders.send(sender).unwrap();
            completed += green::await_blocking(receiver).unwrap();
        }
        drop(senders);
        waker_thread.join().unwrap();
        completed
    });
    assert_eq!(completed, rounds);
}

#[test]
fn a_stale_wake_after_the_fiber_finished_does_nothing() {
    run_with_watchdog(|| {
        // Fiber A parks on a gate, hands out its waker, is released and finishes.
        let gate_flag = Arc::new(AtomicBool::new(false));
        let waker_slot = Arc::new(Mutex::new(None));
        let gate = Gate {
            flag: gate_flag.clone(),
            polls: Arc::new(AtomicUsize::new(0)),
            waker: waker_slot.clone(),
        };
        let a = green::spawn(move || green::await_blocking(gate));
        green::yield_now(); // A runs and parks
        let stale: Waker = waker_slot.lock().unwrap().clone().unwrap();
        gate_flag.store(true, Ordering::SeqCst);
        stale.wake_by_ref();
        a.join().unwrap();

        // Fiber B takes A's slot and parks on a gate of its own.
        let b_polls = Arc::new(AtomicUsize::new(0));
        let b_gate = Gate {
            flag: Arc::new(AtomicBool::new(false)),
            polls: b_polls.clone(),
            waker: Arc::new(Mutex::new(None)),
        };
        let b = green::spawn(move || green::await_blocking(b_gate));
        green::yield_now();
        assert_eq!(b_polls.load(Ordering::SeqCst), 1);

        // A's old waker, woken here and from another thread, must not resume B.
        stale.wake_by_ref();
        let remote = stale.clone();
        std::thread::spawn(move || remote.wake()).join().unwrap();
        green::yield_now();
        green::yield_now();
        assert_eq!(
            b_polls.load(Ordering::SeqCst),
            1,
            "a stale wake resumed another fiber"
        );

        b.abort();
        assert!(b.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn awaiting_a_ready_future_does_not_switch() {
    run_with_watchdog(|| {
        let other = green::spawn(|| ());
        let value = green::await_blocking(async { 5 });
        assert_eq!(value, 5);
        assert!(
            !other.is_finished(),
            "a ready future must not let another fiber run"
        );
        other.join().unwrap();
    });
}

#[test]
fn awaiting_a_pending_future_lets_other_fibers_run_until_it_is_woken() {
    let order = run_with_watchdog(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let (sender, receiver) = oneshot::channel();
        let waiter_log = log.clone();
        let waiter = green::spawn(move || {
            waiter_log.lock().unwrap().push("waiter parks");
            let value = green::await_blocking(receiver).unwrap();
            waiter_log.lock().unwrap().push(value);
        });
        green::yield_now();
        log.lock().unwrap().push("sender runs");
        sender.send("waiter woken").unwrap();
        waiter.join().unwrap();
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(order, ["waiter parks", "sender runs", "waiter woken"]);
}

#[test]
fn block_on_inside_a_fiber_parks_the_fiber_not_the_worker() {
    // The channel is fed by another fiber of the same worker: blocking the worker thread
    // would deadlock.
    let value = run_with_watchdog(|| {
        let (sender, receiver) = oneshot::channel();
        let feeder = green::spawn(move || sender.send(7).unwrap());
        let value = green::block_on(receiver).unwrap();
        feeder.join().unwrap();
        value
    });
    assert_eq!(value, 7);
}

#[test]
fn block_on_a_plain_thread_drives_green_timers() {
    let start = Instant::now();
    let deadline = green::block_on(green::time::Timer::after(Duration::from_millis(20)));
    assert!(Instant::now() >= deadline);
    assert!(start.elapsed() >= Duration::from_millis(20));
}

#[test]
fn a_join_handle_is_a_future() {
    let handle = green::spawn(|| "from a fiber");
    assert_eq!(
        green::block_on(async move { handle.await.unwrap() }),
        "from a fiber"
    );
}

#[test]
fn a_fiber_yielding_in_a_loop_does_not_starve_new_fibers() {
    let spins = run_with_watchdog(|| {
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let spinner = green::spawn(move || {
            let mut spins = 0u64;
            while !flag.load(Ordering::SeqCst) {
                spins += 1;
                green::yield_now();
            }
            spins
        });
        green::yield_now();
        // Spawned while the spinner is busy: must still get its turn.
        let late = green::spawn(move || done.store(true, Ordering::SeqCst));
        late.join().unwrap();
        spinner.join().unwrap()
    });
    assert!(spins >= 1);
}

#[test]
fn yield_now_runs_fibers_round_robin() {
    let order = run_with_watchdog(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let handles: Vec<_> = (0..3)
            .map(|id| {
                let log = log.clone();
                green::spawn(move || {
                    for step in 0..3 {
                        log.lock().unwrap().push((step, id));
                        green::yield_now();
                    }
                })
            })
            .collect();
        handles.into_iter().for_each(|h| h.join().unwrap());
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    let expected: Vec<_> = (0..3)
        .flat_map(|step| (0..3).map(move |id| (step, id)))
        .collect();
    assert_eq!(order, expected);
}

#[test]
fn timers_fire_in_deadline_order() {
    // The order is defined only if every fiber has started its sleep before the first
    // deadline. Under emulation, on a loaded machine, starting five fibers can take
    // longer than a few milliseconds: then the attempt says so and the spacing grows.
    for spacing in [5u64, 20, 80, 320, 1280].map(Duration::from_millis) {
        let (order, late) = run_with_watchdog(move || {
            let log = Arc::new(Mutex::new(Vec::new()));
            let late = Arc::new(AtomicBool::new(false));
            let start = Instant::now();
            // Spawned in scrambled order; each sleeps until its own deadline.
            let handles: Vec<_> = [5u32, 1, 4, 2, 3]
                .into_iter()
                .map(|n| {
                    let (log, late) = (log.clone(), late.clone());
                    green::spawn(move || {
                        // Half the spacing before the first deadline, at the latest.
                        if start.elapsed() >= spacing / 2 {
                            late.store(true, Ordering::SeqCst);
                        }
                        green::sleep_until(start + spacing * n);
                        log.lock().unwrap().push(n);
                    })
                })
                .collect();
            handles.into_iter().for_each(|h| h.join().unwrap());
            let order = Arc::try_unwrap(log).unwrap().into_inner().unwrap();
            (order, late.load(Ordering::SeqCst))
        });
        if !late {
            assert_eq!(order, [1, 2, 3, 4, 5], "spacing {spacing:?}");
            return;
        }
    }
    panic!("the five fibers never all started within half the spacing, even 640 ms");
}

#[test]
fn sleeps_are_never_early() {
    run_with_watchdog(|| {
        for millis in [0u64, 1, 2, 5, 10] {
            let requested = Duration::from_millis(millis);
            let start = Instant::now();
            green::sleep(requested);
            assert!(
                start.elapsed() >= requested,
                "slept {:?} of {requested:?}",
                start.elapsed()
            );
        }
        let start = Instant::now();
        let deadline = start + Duration::from_millis(3);
        green::sleep_until(deadline);
        assert!(Instant::now() >= deadline);
    });
    // Outside fibers too.
    let start = Instant::now();
    green::sleep(Duration::from_millis(2));
    assert!(start.elapsed() >= Duration::from_millis(2));
}

#[test]
fn a_sleeping_fiber_does_not_block_the_others() {
    let order = run_with_watchdog(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sleeper_log = log.clone();
        // The sleeper sleeps until the other fiber has run (a fixed sleep would race a
        // slow machine); were a sleeping fiber to block the others, the watchdog fires.
        let busy_done = Arc::new(AtomicBool::new(false));
        let sleeper_sees = busy_done.clone();
        let sleeper = green::spawn(move || {
            while !sleeper_sees.load(Ordering::SeqCst) {
                green::sleep(Duration::from_millis(1));
            }
            sleeper_log.lock().unwrap().push("sleeper");
        });
        let busy_log = log.clone();
        let busy = green::spawn(move || {
            busy_log.lock().unwrap().push("busy");
            busy_done.store(true, Ordering::SeqCst);
        });
        busy.join().unwrap();
        sleeper.join().unwrap();
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(order, ["busy", "sleeper"]);
}

#[test]
fn a_panicking_fiber_gives_a_join_error_and_the_runtime_keeps_going() {
    let (message, after) = run_with_watchdog(|| {
        let failing =
            green::spawn(|| -> u32 { panic!("fiber failure {}", std::hint::black_box(3)) });
        let error = failing.join().unwrap_err();
        assert!(error.is_panic());
        assert!(!error.is_cancelled());
        assert!(error.to_string().contains("fiber failure 3"), "{error}");
        let message = *error.into_panic().downcast::<String>().unwrap();
        let after = green::spawn(|| 1).join().unwrap();
        (message, after)
    });
    assert_eq!(message, "fiber failure 3");
    assert_eq!(after, 1);
}

#[test]
fn run_re_raises_the_panic_of_its_fiber() {
    let caught = std::panic::catch_unwind(|| green::run(|| panic!("main fiber failed")));
    let payload = caught.unwrap_err();
    assert_eq!(*payload.downcast::<&str>().unwrap(), "main fiber failed");
}

#[test]
fn unblock_runs_on_another_thread_while_other_fibers_run() {
    run_with_watchdog(|| {
        let worker = std::thread::current().id();
        let (release, wait) = mpsc::channel::<()>();
        // The blocking closure waits for a fiber to release it: possible only if the
        // worker keeps running fibers while the closure blocks its pool thread.
        let blocked = green::spawn(move || {
            green::unblock(move || (wait.recv().unwrap(), std::thread::current().id()).1)
        });
        let releaser = green::spawn(move || release.send(()).unwrap());
        releaser.join().unwrap();
        assert_ne!(blocked.join().unwrap(), worker);
    });
}

#[test]
fn a_panic_in_unblock_is_raised_in_the_fiber() {
    let error = run_with_watchdog(|| {
        green::spawn(|| green::unblock(|| -> u8 { panic!("pool job failed") })).join()
    });
    assert!(error.unwrap_err().to_string().contains("pool job failed"));
}

#[test]
fn abort_cancels_a_parked_fiber_and_runs_its_destructors() {
    struct Flag(Arc<AtomicBool>);
    impl Drop for Flag {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let error = run_with_watchdog(move || {
        let (_sender, receiver) = oneshot::channel::<()>();
        let parked = green::spawn(move || {
            let _flag = Flag(flag);
            green::await_blocking(receiver).ok();
        });
        green::yield_now();
        parked.abort();
        parked.join()
    });
    assert!(error.unwrap_err().is_cancelled());
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn dropping_the_runtime_unwinds_parked_fibers_and_cancels_their_handles() {
    let drops = Arc::new(AtomicUsize::new(0));
    let runtime = green::Runtime::new().unwrap();
    let (parked_sender, parked) = mpsc::channel();
    let handles: Vec<_> = (0..10)
        .map(|_| {
            let (count, parked_sender) = (drops.clone(), parked_sender.clone());
            runtime.spawn(move || {
                let _guard = Counted(count);
                parked_sender.send(()).unwrap();
                green::sleep(Duration::from_secs(3600));
            })
        })
        .collect();
    for _ in 0..10 {
        parked.recv().unwrap();
    }
    drop(runtime);
    assert_eq!(
        drops.load(Ordering::SeqCst),
        10,
        "every destructor on a fiber stack ran"
    );
    for handle in handles {
        assert!(handle.join().unwrap_err().is_cancelled());
    }
}

#[test]
fn spawning_after_shutdown_gives_a_cancelled_join_error() {
    let runtime = green::Runtime::new().unwrap();
    let handle = runtime.handle().clone();
    assert_eq!(handle.spawn(|| 1).join().unwrap(), 1);
    drop(runtime);
    let error = handle.spawn(|| 2).join().unwrap_err();
    assert!(error.is_cancelled());
    assert!(error.to_string().contains("cancelled"), "{error}");
}

#[test]
fn zero_and_absurd_stack_sizes_are_refused_with_a_clear_error() {
    for size in [0, 100, usize::MAX] {
        let error = green::Runtime::builder()
            .stack_size(size)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains(&size.to_string()), "{error}");
    }
}

#[test]
fn a_closure_too_large_for_the_stack_gives_a_start_error() {
    let runtime = green::Runtime::builder()
        .workers(1)
        .stack_size(16 * 1024)
        .build()
        .unwrap();
    // Made on this thread's stack: a 16 KiB fiber could not even build it.
    let big = [7u8; 8 * 1024];
    let error = runtime.spawn(move || big[0]).join().unwrap_err();
    let start = error.start_error().expect("a start error");
    assert_eq!(start.kind(), std::io::ErrorKind::InvalidInput);
    assert!(start.to_string().contains("does not fit"), "{start}");
    // The runtime is unharmed.
    assert_eq!(runtime.run(|| 1 + 1), 2);
}

#[test]
fn a_custom_stack_size_holds_deep_recursion() {
    fn depth(n: u32) -> u32 {
        let frame = std::hint::black_box([n; 256]);
        if n == 0 {
            0
        } else {
            1 + depth(n - 1) + frame[3] - n
        }
    }
    let runtime = green::Runtime::builder()
        .stack_size(8 * 1024 * 1024)
        .build()
        .unwrap();
    assert_eq!(runtime.run(|| depth(2000)), 2000);
}

#[test]
fn runtime_block_on_runs_a_future_in_a_fiber() {
    let runtime = green::Runtime::new().unwrap();
    let value = runtime.block_on(async {
        green::time::Timer::after(Duration::from_millis(1)).await;
        green::in_fiber()
    });
    assert!(value);
}

/// A waker that counts its wakes.
struct CountingWaker(AtomicUsize);

impl std::task::Wake for CountingWaker {
    fn wake(self: Arc<Self>) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn join_after_polling_the_handle_takes_the_slot_back() {
    let woken = run_with_watchdog(|| {
        let (sender, receiver) = oneshot::channel::<u32>();
        let mut handle = green::spawn(move || green::await_blocking(receiver).unwrap() + 1);
        let counter = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let waker = Waker::from(counter.clone());
        // The spawned fiber waits for the oneshot, which nobody has sent yet.
        assert!(
            Pin::new(&mut handle)
                .poll(&mut Context::from_waker(&waker))
                .is_pending()
        );
        sender.send(41).unwrap();
        assert_eq!(handle.join().unwrap(), 42);
        counter.0.load(Ordering::SeqCst)
    });
    assert_eq!(
        woken, 0,
        "the waker of the earlier poll was woken, not the joiner"
    );
}

#[test]
fn aborting_a_fiber_blocked_in_join_leaves_the_joined_fiber_running() {
    run_with_watchdog(|| {
        let (sender, receiver) = green::sync::channel::<u32>();
        let (done_sender, done_receiver) = green::sync::channel::<u32>();
        let inner = green::spawn(move || {
            let value = receiver.recv().unwrap();
            done_sender.send(value).unwrap();
            value
        });
        let joiner = green::spawn(move || inner.join().unwrap());
        green::yield_now(); // `inner` waits for a value, `joiner` for `inner`
        assert!(!joiner.is_finished());
        joiner.abort();
        assert!(joiner.join().unwrap_err().is_cancelled());
        // `inner` completes with nobody joining: it must not wake the fiber that left.
        sender.send(5).unwrap();
        assert_eq!(done_receiver.recv().unwrap(), 5);
    });
}

#[test]
fn a_joiner_aborted_after_the_completion_woke_it_still_unwinds() {
    run_with_watchdog(|| {
        let (sender, receiver) = green::sync::channel::<u32>();
        let inner = green::spawn(move || receiver.recv().unwrap());
        let joiner = green::spawn(move || inner.join().unwrap());
        green::yield_now(); // `joiner` blocks in `join`
        sender.send(9).unwrap(); // wakes `inner`, which runs before us
        green::yield_now(); // `inner` completes and wakes `joiner`, queued behind us
        joiner.abort(); // before `joiner` runs: it unwinds instead of returning 9
        assert!(joiner.join().unwrap_err().is_cancelled());
    });
}

#[test]
fn joins_race_with_completions_on_other_workers() {
    let rounds = if NATIVE { 2000 } else { 200 };
    let runtime = green::Runtime::builder().workers(2).build().unwrap();
    let total = runtime.run(move || {
        // Joiners on both workers; the joined fibers wait for a thread, so they complete
        // on whichever worker they live on while their joiners park or are just parking.
        let joiners: Vec<_> = (0..8)
            .map(|j| {
                green::spawn(move || {
                    (0..rounds / 8)
                        .map(|i| {
                            let (sender, receiver) = oneshot::channel::<usize>();
                            let value = j * rounds + i;
                            std::thread::spawn(move || sender.send(value).unwrap());
                            green::spawn(move || green::await_blocking(receiver).unwrap())
                                .join()
                                .unwrap()
                        })
                        .sum::<usize>()
                })
            })
            .collect();
        joiners
            .into_iter()
            .map(|j| j.join().unwrap())
            .sum::<usize>()
    });
    let expected: usize = (0..8)
        .flat_map(|j| (0..rounds / 8).map(move |i| j * rounds + i))
        .sum();
    assert_eq!(total, expected);
}

#[test]
fn a_join_completed_on_another_worker_is_never_lost_after_a_stale_wake() {
    // The joiner enters every `join` with a wake left over (NOTIFIED), and the joined
    // fiber completes on the other worker at that very moment: the joiner's reset of its
    // park state and the completer's wake race, and the wake must not be lost.
    // Valgrind runs one thread at a time, so the race is rare there anyway; what it looks
    // for (a completer touching a joiner that left) shows in fewer rounds.
    let rounds = if std::env::var_os("GREEN_UNDER_VALGRIND").is_some() {
        5_000
    } else if NATIVE {
        50_000
    } else {
        2_000
    };
    let (done_sender, done_receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let runtime = green::Runtime::builder().workers(2).build().unwrap();
        let thread_name = || std::thread::current().name().map(str::to_owned);
        // A server fiber that spawns each joined fiber on its own worker.
        let (requests, inbox) = green::sync::channel::<Arc<AtomicBool>>();
        let (replies, handles) = green::sync::channel::<green::JoinHandle<u32>>();
        let (server_started, server_thread) = green::sync::channel();
        let server = runtime.spawn(move || {
            server_started.send(thread_name()).unwrap();
            while let Ok(go) = inbox.recv() {
                let handle = green::spawn_local(move || {
                    while !go.load(Ordering::Acquire) {
                        std::hint::spin_loop();
                    }
                    1
                });
                replies.send(handle).unwrap();
            }
        });
        let server_thread = server_thread.recv().unwrap();
        // A joiner on the other worker: spawns from outside go to the workers in turn.
        let sum = loop {
            let (requests, handles) = (requests.clone(), handles.clone());
            let server_thread = server_thread.clone();
            let candidate = runtime.spawn(move || {
                if thread_name() == server_thread {
                    return None; // same worker: try the next one
                }
                let mut sum = 0;
                for _ in 0..rounds {
                    let go = Arc::new(AtomicBool::new(false));
                    requests.send(go.clone()).unwrap();
                    let handle = handles.recv().unwrap();
                    // Leave a wake behind: our own waker, woken while we run.
                    let waker = green::await_blocking(std::future::poll_fn(|cx| {
                        Poll::Ready(cx.waker().clone())
                    }));
                    waker.wake();
                    go.store(true, Ordering::Release);
                    sum += handle.join().unwrap();
                }
                Some(sum)
            });
            if let Some(sum) = candidate.join().unwrap() {
                break sum;
            }
        };
        drop(requests);
        server.join().unwrap();
        let _ = done_sender.send(sum);
    });
    let sum = done_receiver
        .recv_timeout(Duration::from_secs(120))
        .expect("a joiner hung: the completion's wake was lost");
    assert_eq!(sum, rounds);
}

#[test]
fn an_unjoined_result_is_dropped_with_the_last_reference_to_its_task() {
    let drops = Arc::new(AtomicUsize::new(0));
    let (count, seen) = (drops.clone(), drops.clone());
    let (after_handle, after_waker) = run_with_watchdog(move || {
        let kept: Arc<Mutex<Option<Waker>>> = Arc::default();
        let slot = kept.clone();
        let handle = green::spawn(move || {
            // A waker of this task, which outlives it.
            green::await_blocking(futures::future::poll_fn(|cx| {
                *slot.lock().unwrap() = Some(cx.waker().clone());
                Poll::Ready(())
            }));
            Counted(count)
        });
        while !handle.is_finished() {
            green::yield_now();
        }
        drop(handle); // detached after the end: the result stays with the task
        let after_handle = seen.load(Ordering::SeqCst);
        drop(kept.lock().unwrap().take()); // the last reference
        (after_handle, seen.load(Ordering::SeqCst))
    });
    assert_eq!(after_handle, 0, "the task was freed while a waker held it");
    assert_eq!(after_waker, 1, "the last reference did not free the task");
    assert_eq!(drops.load(Ordering::SeqCst), 1);
}

#[test]
fn a_fiber_joining_tasks_in_a_loop_does_not_starve_io() {
    use std::io::{Read, Write};
    let rounds = run_with_watchdog(|| {
        let (mut writer, mut reader) = green::net::unix::UnixStream::pair().unwrap();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        green::spawn(move || {
            let mut byte = [0u8];
            reader.read_exact(&mut byte).unwrap();
            flag.store(true, Ordering::SeqCst);
        });
        green::yield_now(); // the reader parks in `read`
        std::thread::spawn(move || writer.write_all(b"x").unwrap())
            .join()
            .unwrap();
        // Each join runs its task directly; the reader's readiness reaches the run queue
        // only through a poll of the reactor, which must still come.
        let mut rounds = 0u64;
        while !done.load(Ordering::SeqCst) {
            green::spawn(|| ()).join().unwrap();
            rounds += 1;
        }
        rounds
    });
    assert!(rounds > 0);
}

#[test]
fn a_task_aborted_before_it_starts_drops_its_closure_while_the_handle_lives() {
    let disconnected = run_with_watchdog(|| {
        let (sender, receiver) = mpsc::channel::<()>();
        let handle = green::spawn(move || {
            let _sender = sender;
        });
        handle.abort();
        // The worker starts the task, which finds itself aborted and never runs its closure.
        while !handle.is_finished() {
            green::yield_now();
        }
        let disconnected = receiver.try_recv() == Err(mpsc::TryRecvError::Disconnected);
        assert!(handle.join().unwrap_err().is_cancelled());
        disconnected
    });
    assert!(disconnected, "the closure outlived the task's end");
}

#[test]
fn a_task_that_cannot_start_drops_its_closure_while_the_handle_lives() {
    let runtime = green::Runtime::builder()
        .workers(1)
        .stack_size(64 * 1024)
        .build()
        .unwrap();
    let (sender, receiver) = mpsc::channel::<()>();
    // Bigger than a quarter of the stack: refused when the worker tries to start it.
    let data = [1u8; 20 * 1024];
    let handle = runtime.spawn(move || {
        let _sender = sender;
        data.len()
    });
    // Returns once the closure (holding the sender) is dropped, the handle still alive.
    assert_eq!(
        receiver.recv_timeout(Duration::from_secs(60)),
        Err(mpsc::RecvTimeoutError::Disconnected),
        "the closure outlived the failed start"
    );
    let error = handle.join().unwrap_err();
    assert!(error.start_error().is_some(), "{error}");
}

#[test]
fn an_aborted_task_whose_closure_panics_on_drop_still_resolves_its_handle() {
    struct PanicOnDrop;
    impl Drop for PanicOnDrop {
        fn drop(&mut self) {
            panic!("the closure's destructor panics");
        }
    }
    let cancelled = run_with_watchdog(|| {
        let guard = PanicOnDrop;
        let handle = green::spawn(move || {
            let _guard = &guard;
        });
        handle.abort();
        // The task never runs its closure; dropping it panics on the task's fiber.
        handle.join().unwrap_err().is_cancelled()
    });
    assert!(cancelled);
}

#[test]
fn the_stacks_of_a_burst_are_trimmed_by_the_time_the_runtime_has_shut_down() {
    // A size of its own: other tests' fibers do not count in its pool.
    const SIZE: usize = 112 * 1024;
    let count = stack::KEEP_IDLE + stack::BATCH_SIZE;
    let runtime = green::Runtime::builder().stack_size(SIZE).build().unwrap();
    runtime.run(move || {
        let (release, gate) = green::sync::channel::<()>();
        let fibers: Vec<_> = (0..count)
            .map(|_| {
                let gate = gate.clone();
                green::spawn(move || {
                    let _ = gate.recv();
                })
            })
            .collect();
        drop(release);
        for fiber in fibers {
            fiber.join().unwrap();
        }
    });
    drop(runtime);
    // Idle workers trim after the burst; the workers' caches went to the shared pool as
    // their threads exited, and the shutdown trimmed it again.
    let stats = stack::pool_stats(SIZE);
    assert!(stats.warm <= stack::KEEP_WARM, "{stats:?}");
    assert!(stats.idle() <= stack::KEEP_IDLE, "{stats:?}");
}

#[test]
fn a_fiber_that_parks_right_after_it_starts_touches_one_page_of_its_stack() {
    // The start and park paths (from the fiber's entry to the switch, the task's
    // bookkeeping included) fit the stack's top page, so that a million parked fibers
    // cost a page of stack each, in debug builds too.
    const FIBERS: usize = 100;
    // A stack size of its own: the pool hands out warm stacks, and a stack that served
    // another test's deeper fiber would still hold its pages.
    let runtime = green::Runtime::builder()
        .workers(1)
        .stack_size(136 * 1024)
        .build()
        .unwrap();
    let resident = runtime.run(|| {
        let parked = Arc::new(AtomicUsize::new(0));
        let (senders, fibers): (Vec<_>, Vec<_>) = (0..FIBERS)
            .map(|_| {
                let (tx, rx) = oneshot::channel::<u32>();
                let parked = parked.clone();
                let fiber = green::spawn(move || {
                    // One worker: nothing runs between this and the park.
                    parked.fetch_add(1, Ordering::SeqCst);
                    let value = green::await_blocking(rx).unwrap();
                    (value, green::test_support::stack_resident_bytes().unwrap())
                });
                (tx, fiber)
            })
            .unzip();
        while parked.load(Ordering::SeqCst) < FIBERS {
            green::yield_now();
        }
        for (i, tx) in senders.into_iter().enumerate() {
            tx.send(i as u32).unwrap();
        }
        let results: Vec<_> = fibers.into_iter().map(|f| f.join().unwrap()).collect();
        for (i, &(value, _)) in results.iter().enumerate() {
            assert_eq!(value, i as u32);
        }
        results.iter().map(|&(_, bytes)| bytes).max().unwrap()
    });
    println!("the deepest of {FIBERS} fibers touched {resident} bytes of stack");
    // QEMU's user mode does not report residency as a kernel does.
    if cfg!(target_arch = "x86_64") {
        assert_eq!(resident, 4096, "pages touched by the start and park paths");
    }
}

#[test]
fn a_detached_fiber_s_result_is_dropped_when_it_ends_though_a_waker_of_it_is_kept() {
    // A waker of the task kept elsewhere (a timer's, a channel's, a user's) holds the
    // task: a result nobody can take must not live as long as that waker.
    struct Signals(Option<green::sync::Sender<()>>);
    impl Drop for Signals {
        fn drop(&mut self) {
            let _ = self.0.take().unwrap().send(());
        }
    }
    let waker_kept = common::within(60, "a detached result", || {
        common::one_worker().run(|| {
            let kept: Arc<Mutex<Option<Waker>>> = Arc::default();
            let (go_tx, go_rx) = green::sync::channel::<()>();
            let (dropped_tx, dropped_rx) = green::sync::channel::<()>();
            let handle = {
                let kept = kept.clone();
                green::spawn(move || {
                    go_rx.recv().unwrap();
                    green::await_blocking(std::future::poll_fn(|cx| {
                        *kept.lock().unwrap() = Some(cx.waker().clone());
                        Poll::Ready(())
                    }));
                    Signals(Some(dropped_tx))
                })
            };
            drop(handle); // detached before it ends
            go_tx.send(()).unwrap();
            dropped_rx.recv().unwrap(); // the result went as the fiber ended
            kept.lock().unwrap().is_some()
        })
    });
    assert!(
        waker_kept,
        "the test needs the waker kept while the result is dropped"
    );
}

#[test]
fn a_fiber_that_joins_itself_panics_with_a_clear_message() {
    // As std's `JoinHandle::join` on its own thread: a deadlock made into a panic.
    let message = common::within(60, "a fiber joining itself", || {
        common::one_worker().run(|| {
            let (handle_tx, handle_rx) = green::sync::channel::<green::JoinHandle<()>>();
            let (message_tx, message_rx) = green::sync::channel::<String>();
            let me = green::spawn(move || {
                let me = handle_rx.recv().unwrap();
                let payload = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    let _ = me.join();
                }))
                .unwrap_err();
                let message = payload.downcast_ref::<&str>().map(|s| s.to_string());
                message_tx.send(message.unwrap_or_default()).unwrap();
            });
            handle_tx.send(me).unwrap();
            message_rx.recv().unwrap()
        })
    });
    assert!(message.contains("cannot join itself"), "{message}");
}
