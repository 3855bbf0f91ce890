//! Fiber dumps (`Runtime::dump`): what they show of fibers parked in sleeps, channels and
//! socket reads, of runnable and running fibers and of busy workers, and that taking one
//! disturbs no fiber: each goes on as if nothing had happened, and no wake is lost or
//! made up.
//!
//! Backtraces are matched on the names of `#[inline(never)]` helpers of this file, each
//! doing some work after its blocking call so that the call is not a tail call (which
//! would take the helper's frame off the stack). Their names are in the symbol table of
//! every build, debug info or not, and resolve under QEMU too (riscv64, aarch64).
//! `dump_on_signal` is tested in `process.rs`, in a forked child.

mod common;

use std::future::Future;
use std::hint::black_box;
use std::io::{Read, Write};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use common::within;
use green::net::{TcpListener, TcpStream};
use green::task::Builder;
use green::{Dump, FiberDump, FiberState, JoinHandle, Runtime, WorkerState};

/// Counts are scaled down under QEMU (riscv64, aarch64), where everything is ~100x slower.
const NATIVE: bool = cfg!(target_arch = "x86_64");

/// A runtime of `workers` workers.
fn runtime(workers: usize) -> Runtime {
    Runtime::builder().workers(workers).build().unwrap()
}

/// Spawns `f` on `runtime` in a fiber named `name`.
fn spawn_named<T: Send + 'static>(
    runtime: &Runtime,
    name: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> JoinHandle<T> {
    Builder::new()
        .name(name)
        .spawn_on(&runtime.handle(), f)
        .unwrap()
}

/// The fiber named `name` in `dump`, if there is one.
fn named<'d>(dump: &'d Dump, name: &str) -> Option<&'d FiberDump> {
    dump.fibers()
        .iter()
        .find(|fiber| fiber.name() == Some(name))
}

/// Dumps `runtime` until the fiber named `name` is in `state`; returns that dump.
fn dump_when(runtime: &Runtime, name: &str, state: FiberState) -> Dump {
    let start = Instant::now();
    loop {
        let dump = runtime.dump();
        if named(&dump, name).is_some_and(|fiber| fiber.state() == state) {
            return dump;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no fiber {name:?} {state} after 30 s:\n{dump}"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The fiber named `name` of a dump taken by `dump_when`.
fn the_fiber<'d>(dump: &'d Dump, name: &str) -> &'d FiberDump {
    named(dump, name).unwrap_or_else(|| panic!("no fiber {name:?} in:\n{dump}"))
}

/// Asserts that `fiber`'s backtrace, and its block in the dump, name `function`.
fn assert_shows(fiber: &FiberDump, function: &str) {
    let backtrace = fiber.backtrace().expect("a backtrace").to_string();
    assert!(
        backtrace.contains(function),
        "{function} not in the backtrace:\n{backtrace}"
    );
    let block = fiber.to_string();
    assert!(block.contains(function), "{function} not in:\n{block}");
}

#[inline(never)]
fn sleeps_for_the_dump(duration: Duration) -> u32 {
    green::sleep(duration);
    black_box(7)
}

#[inline(never)]
fn receives_for_the_dump(receiver: green::sync::Receiver<u32>) -> u32 {
    let value = receiver.recv().unwrap();
    black_box(value) + 1
}

#[inline(never)]
fn reads_for_the_dump(mut stream: TcpStream) -> [u8; 4] {
    let mut buf = [0; 4];
    stream.read_exact(&mut buf).unwrap();
    black_box(buf)
}

#[inline(never)]
fn dumps_itself(handle: green::Handle) -> Dump {
    let dump = handle.dump();
    black_box(dump)
}

#[inline(never)]
fn yields_for_the_dump(stop: Arc<AtomicBool>) -> u32 {
    let mut turns = 0;
    while !stop.load(Ordering::Acquire) {
        green::yield_now();
        turns += 1;
    }
    black_box(turns)
}

#[test]
fn a_fiber_parked_in_sleep_shows_the_sleep_and_wakes_on_time() {
    within(60, "a dump of a sleeping fiber", || {
        let runtime = runtime(2);
        let start = Instant::now();
        let sleeper = spawn_named(&runtime, "sleeper", || {
            sleeps_for_the_dump(Duration::from_millis(500))
        });
        let dump = dump_when(&runtime, "sleeper", FiberState::Parked("sleep"));
        let fiber = the_fiber(&dump, "sleeper");
        assert_shows(fiber, "sleeps_for_the_dump");
        assert_eq!(sleeper.join().unwrap(), 7);
        assert!(start.elapsed() >= Duration::from_millis(500));
    });
}

#[test]
fn a_fiber_parked_in_a_channel_recv_shows_the_recv_and_gets_its_value() {
    within(60, "a dump of a receiving fiber", || {
        let runtime = runtime(2);
        let (sender, receiver) = green::sync::channel();
        let waiter = spawn_named(&runtime, "receiver", move || {
            receives_for_the_dump(receiver)
        });
        let dump = dump_when(&runtime, "receiver", FiberState::Parked("channel recv"));
        let fiber = the_fiber(&dump, "receiver");
        assert_shows(fiber, "receives_for_the_dump");
        assert_shows(fiber, "recv");
        sender.send(41).unwrap();
        assert_eq!(waiter.join().unwrap(), 42);
    });
}

#[test]
fn a_fiber_parked_in_a_tcp_read_shows_the_read_and_reads_its_bytes() {
    within(60, "a dump of a reading fiber", || {
        let runtime = runtime(2);
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let reader = spawn_named(&runtime, "reader", move || {
            reads_for_the_dump(TcpStream::connect(address).unwrap())
        });
        let (mut peer, _) = listener.accept().unwrap();
        let dump = dump_when(&runtime, "reader", FiberState::Parked("I/O read"));
        let fiber = the_fiber(&dump, "reader");
        assert_shows(fiber, "reads_for_the_dump");
        peer.write_all(b"ping").unwrap();
        assert_eq!(&reader.join().unwrap(), b"ping");
    });
}

#[test]
fn a_listener_waiting_for_a_connection_is_parked_on_a_read() {
    within(60, "a dump of an accepting fiber", || {
        let runtime = runtime(1);
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let acceptor = spawn_named(&runtime, "acceptor", move || {
            listener.accept().map(|_| ()).unwrap()
        });
        let dump = dump_when(&runtime, "acceptor", FiberState::Parked("I/O read"));
        assert_shows(the_fiber(&dump, "acceptor"), "accept");
        let _client = std::net::TcpStream::connect(address).unwrap();
        acceptor.join().unwrap();
    });
}

#[test]
fn the_fiber_that_takes_a_dump_comes_first_running_with_its_own_backtrace() {
    within(60, "a dump taken by a fiber", || {
        let runtime = runtime(2);
        let handle = runtime.handle();
        let dumper = spawn_named(&runtime, "dumper", move || dumps_itself(handle));
        let dump = dumper.join().unwrap();
        let first = &dump.fibers()[0];
        assert_eq!(first.name(), Some("dumper"));
        assert_eq!(first.state(), FiberState::Running);
        assert_shows(first, "dumps_itself");
        assert_eq!(dump.workers(), [WorkerState::Answered; 2]);
    });
}

#[test]
fn a_yielding_fiber_is_runnable_and_keeps_taking_turns() {
    within(60, "a dump of a yielding fiber", || {
        let runtime = runtime(1);
        let stop = Arc::new(AtomicBool::new(false));
        let yielder = spawn_named(&runtime, "yielder", {
            let stop = stop.clone();
            move || yields_for_the_dump(stop)
        });
        let handle = runtime.handle();
        // On the yielder's worker: the yielder is queued behind this fiber as it dumps.
        let dump = runtime.run(move || {
            green::yield_now();
            dumps_itself(handle)
        });
        assert_eq!(dump.fibers()[0].state(), FiberState::Running);
        let fiber = the_fiber(&dump, "yielder");
        assert_eq!(fiber.state(), FiberState::Runnable);
        assert_shows(fiber, "yields_for_the_dump");
        stop.store(true, Ordering::Release);
        assert!(yielder.join().unwrap() > 0);
    });
}

#[test]
fn a_dump_prints_a_header_per_fiber_and_trims_the_runtimes_frames() {
    within(60, "a printed dump", || {
        let runtime = runtime(1);
        let (sender, receiver) = green::sync::channel();
        let waiter = spawn_named(&runtime, "conn-42", move || receives_for_the_dump(receiver));
        let dump = dump_when(&runtime, "conn-42", FiberState::Parked("channel recv"));
        let fiber = the_fiber(&dump, "conn-42");
        let (id, task) = (fiber.id(), fiber.task_id().unwrap());
        let header = format!(
            "fiber {}:{} task {task} \"conn-42\" [parked: channel recv] on worker 0:",
            id & 0xFFFF_FFFF,
            id >> 32
        );
        let printed = dump.to_string();
        assert!(
            printed.starts_with("green: fiber dump: 1 fibers on 1 workers\n"),
            "{printed}"
        );
        assert!(printed.contains(&header), "{printed}");
        assert!(printed.ends_with("green: end of fiber dump\n"), "{printed}");
        // The switch, the capture and the fiber's entry are left out; `{:#}` keeps them.
        for runtime_frame in ["green::fiber::", "trampoline", "std::panicking"] {
            assert!(
                !printed.contains(runtime_frame),
                "{runtime_frame} in:\n{printed}"
            );
        }
        assert!(format!("{dump:#}").contains("trampoline"), "{dump:#}");
        sender.send(1).unwrap();
        assert_eq!(waiter.join().unwrap(), 2);
    });
}

/// A future that counts its polls, and completes once `ready` is set and it is woken.
struct CountPolls {
    polls: Arc<AtomicUsize>,
    ready: Arc<AtomicBool>,
    waker: Arc<std::sync::Mutex<Option<Waker>>>,
}

impl Future for CountPolls {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        if self.ready.load(Ordering::SeqCst) {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

#[test]
fn a_dump_neither_wakes_nor_runs_the_fibers_it_captures() {
    within(60, "dumps of a parked fiber", || {
        let runtime = runtime(2);
        let (polls, ready) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicBool::new(false)),
        );
        let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
        let future = CountPolls {
            polls: polls.clone(),
            ready: ready.clone(),
            waker: waker.clone(),
        };
        let waiter = spawn_named(&runtime, "waiter", move || green::await_blocking(future));
        dump_when(&runtime, "waiter", FiberState::Parked("future"));
        for _ in 0..20 {
            let dump = runtime.dump();
            assert_eq!(
                the_fiber(&dump, "waiter").state(),
                FiberState::Parked("future")
            );
        }
        // Polled once, parked since: twenty captures were no wake.
        assert_eq!(polls.load(Ordering::SeqCst), 1);
        ready.store(true, Ordering::SeqCst);
        waker.lock().unwrap().take().unwrap().wake();
        waiter.join().unwrap();
        assert_eq!(polls.load(Ordering::SeqCst), 2);
    });
}

#[test]
fn dumps_taken_while_fibers_are_woken_lose_no_wakeup() {
    let rounds = if NATIVE { 2000 } else { 100 };
    within(
        120,
        "dumps during ping-pong, sleeps and remote wakes",
        move || {
            let runtime = runtime(2);
            let handle = runtime.handle();
            let stop = Arc::new(AtomicBool::new(false));
            let dumps = Arc::new(AtomicUsize::new(0));
            // Dumps from a plain thread and from a fiber, back to back, until the end.
            let dumper = std::thread::spawn({
                let (handle, stop, dumps) = (handle.clone(), stop.clone(), dumps.clone());
                move || {
                    while !stop.load(Ordering::Acquire) {
                        handle.dump();
                        dumps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            let fiber_dumper = runtime.spawn({
                let (handle, stop, dumps) = (handle.clone(), stop.clone(), dumps.clone());
                move || {
                    while !stop.load(Ordering::Acquire) {
                        dumps_itself(handle.clone());
                        dumps.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
            // Four ping-pong pairs: each round a park and a wake on each side, often across
            // workers.
            let mut pairs = Vec::new();
            for _ in 0..4 {
                let (ping, pinged) = green::sync::channel::<u64>();
                let (pong, ponged) = green::sync::channel::<u64>();
                pairs.push(runtime.spawn(move || {
                    let mut sum = 0;
                    for _ in 0..rounds {
                        let value = pinged.recv().unwrap();
                        sum += value;
                        pong.send(value + 1).unwrap();
                    }
                    sum
                }));
                pairs.push(runtime.spawn(move || {
                    let mut value = 0;
                    for _ in 0..rounds {
                        ping.send(value).unwrap();
                        value = ponged.recv().unwrap();
                    }
                    value
                }));
            }
            // Fibers woken by their timers.
            let sleepers: Vec<_> = (0..4)
                .map(|_| {
                    runtime.spawn(move || {
                        for _ in 0..rounds / 20 {
                            green::sleep(Duration::from_micros(200));
                        }
                    })
                })
                .collect();
            // Fibers woken from a plain thread.
            let (to_fiber, from_thread) = green::sync::channel::<u64>();
            let summer = runtime.spawn(move || from_thread.iter().sum::<u64>());
            let sender = std::thread::spawn(move || {
                for i in 0..rounds {
                    to_fiber.send(i).unwrap();
                    if i % 16 == 0 {
                        std::thread::sleep(Duration::from_micros(50));
                    }
                }
            });
            let results: Vec<u64> = pairs.into_iter().map(|p| p.join().unwrap()).collect();
            for pair in results.chunks(2) {
                // The ponger saw 0, 1, 2, ... and the pinger ends with `rounds`.
                assert_eq!(pair[0], rounds * (rounds - 1) / 2);
                assert_eq!(pair[1], rounds);
            }
            for sleeper in sleepers {
                sleeper.join().unwrap();
            }
            sender.join().unwrap();
            assert_eq!(summer.join().unwrap(), rounds * (rounds - 1) / 2);
            stop.store(true, Ordering::Release);
            dumper.join().unwrap();
            fiber_dumper.join().unwrap();
            assert!(dumps.load(Ordering::Relaxed) > 0);
        },
    );
}

#[test]
fn a_worker_stuck_in_a_fiber_is_reported_busy_after_the_timeout() {
    within(60, "a dump with a stuck worker", || {
        let runtime = runtime(2);
        let (started, hogging) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let hog = spawn_named(&runtime, "hog", move || {
            started.send(()).unwrap();
            // Blocks its worker's thread until the dump has returned: std's channel,
            // not green's.
            released.recv().unwrap();
        });
        hogging.recv().unwrap();
        // Returns while the hog still blocks its worker (`within` fails a hang).
        let dump = runtime.dump_timeout(Duration::from_millis(200));
        release.send(()).unwrap();
        let busy: Vec<_> = dump
            .workers()
            .iter()
            .filter_map(|state| match state {
                WorkerState::Busy { fiber } => Some(*fiber),
                _ => None,
            })
            .collect();
        assert_eq!(busy.len(), 1, "{dump}");
        let stuck = the_fiber(&dump, "hog");
        assert_eq!(stuck.state(), FiberState::Running);
        assert_eq!(busy[0], Some(stuck.id()));
        assert!(stuck.backtrace().is_none());
        assert!(
            dump.to_string().contains("did not answer within 200ms"),
            "{dump}"
        );
        hog.join().unwrap();
    });
}

#[test]
fn a_dump_of_a_runtime_that_has_shut_down_says_so() {
    within(60, "a dump after shutdown", || {
        let runtime = runtime(2);
        let handle = runtime.handle();
        drop(runtime);
        let dump = handle.dump();
        assert!(dump.fibers().is_empty());
        assert_eq!(dump.workers(), [WorkerState::ShutDown; 2]);
    });
}

#[test]
fn dump_on_signal_refuses_signals_that_report_faults() {
    for signal in [libc::SIGSEGV, libc::SIGKILL, 0] {
        let error = Runtime::builder()
            .workers(1)
            .dump_on_signal(signal)
            .build()
            .unwrap_err();
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
    }
}

#[test]
fn a_dumped_fiber_has_the_task_id_that_task_current_gives_it() {
    within(60, "task ids in a dump", || {
        let runtime = runtime(2);
        let (asked_sender, asked) = std::sync::mpsc::channel();
        let (go, gone) = green::sync::channel::<u32>();
        // One task asks for its id before the dump, the other only after it.
        let early = spawn_named(&runtime, "asks-first", {
            let asked_sender = asked_sender.clone();
            let gone = gone.clone();
            move || {
                asked_sender.send(green::task::current().id()).unwrap();
                receives_for_the_dump(gone);
                green::task::current().id()
            }
        });
        let late = spawn_named(&runtime, "asks-after", move || {
            receives_for_the_dump(gone);
            green::task::current().id()
        });
        let early_id = asked.recv().unwrap();
        dump_when(&runtime, "asks-first", FiberState::Parked("channel recv"));
        let dump = dump_when(&runtime, "asks-after", FiberState::Parked("channel recv"));
        let dumped_early = the_fiber(&dump, "asks-first").task_id();
        let dumped_late = the_fiber(&dump, "asks-after").task_id();
        assert_eq!(dumped_early, Some(early_id), "{dump}");
        assert!(
            dumped_late.is_some() && dumped_late != dumped_early,
            "{dump}"
        );
        // A second dump gives the same ids.
        let again = runtime.dump();
        assert_eq!(the_fiber(&again, "asks-after").task_id(), dumped_late);
        // Every fiber a worker answered for has an id, shown in its header.
        for fiber in dump.fibers() {
            let task = fiber.task_id().expect("an id");
            let header = fiber.to_string().lines().next().unwrap().to_owned();
            assert!(header.contains(&format!(" task {task} ")), "{header}");
        }
        go.send(1).unwrap();
        go.send(2).unwrap();
        assert_eq!(Some(early.join().unwrap()), dumped_early);
        assert_eq!(Some(late.join().unwrap()), dumped_late);
    });
}

#[test]
fn dumps_taken_while_fibers_start_and_end_neither_crash_nor_hang() {
    let rounds = if NATIVE { 200 } else { 20 };
    within(120, "dumps during spawn and exit churn", move || {
        let runtime = runtime(2);
        let handle = runtime.handle();
        let stop = Arc::new(AtomicBool::new(false));
        let dumper = std::thread::spawn({
            let (handle, stop) = (handle.clone(), stop.clone());
            move || {
                let mut dumps = 0;
                while !stop.load(Ordering::Acquire) {
                    let dump = handle.dump();
                    assert_eq!(dump.workers(), [WorkerState::Answered; 2], "{dump}");
                    // Printing resolves every frame captured, of fibers since ended too.
                    black_box(dump.to_string());
                    dumps += 1;
                }
                dumps
            }
        });
        // Spawners on both workers start fibers that end at once, park briefly or spawn
        // fibers of their own, from fibers and from this thread.
        let spawners: Vec<_> = (0..4)
            .map(|spawner| {
                runtime.spawn(move || {
                    let mut sum = 0;
                    for round in 0..rounds {
                        let children: Vec<_> = (0..8u64)
                            .map(|child| {
                                Builder::new()
                                    .name(format!("child-{spawner}-{round}-{child}"))
                                    .spawn(move || {
                                        if child % 2 == 0 {
                                            green::yield_now();
                                        }
                                        if child % 4 == 0 {
                                            green::spawn(move || child).join().unwrap()
                                        } else {
                                            child
                                        }
                                    })
                                    .unwrap()
                            })
                            .collect();
                        sum += children.into_iter().map(|c| c.join().unwrap()).sum::<u64>();
                    }
                    sum
                })
            })
            .collect();
        for _ in 0..rounds {
            runtime.spawn(|| black_box(1)).join().unwrap();
        }
        for spawner in spawners {
            assert_eq!(spawner.join().unwrap(), rounds * 28);
        }
        stop.store(true, Ordering::Release);
        assert!(dumper.join().unwrap() > 0);
    });
}

#[test]
fn dumps_taken_while_the_runtime_shuts_down_return_and_say_which_workers_closed() {
    within(120, "dumps during shutdown", || {
        let runtime = runtime(2);
        let handle = runtime.handle();
        // Parked fibers that the shutdown cancels; their destructors park too.
        struct ParksOnDrop;
        impl Drop for ParksOnDrop {
            fn drop(&mut self) {
                green::sleep(Duration::from_millis(1));
            }
        }
        let (_keep, receiver) = green::sync::channel::<u32>();
        for index in 0..16 {
            let receiver = receiver.clone();
            spawn_named(&runtime, &format!("cancelled-{index}"), move || {
                let _guard = ParksOnDrop;
                receives_for_the_dump(receiver)
            });
        }
        dump_when(&runtime, "cancelled-15", FiberState::Parked("channel recv"));
        let started = Arc::new(AtomicBool::new(false));
        let dumpers: Vec<_> = (0..2)
            .map(|_| {
                let (handle, started) = (handle.clone(), started.clone());
                std::thread::spawn(move || {
                    let mut last = Vec::new();
                    while last != [WorkerState::ShutDown; 2] {
                        let dump = handle.dump();
                        started.store(true, Ordering::Release);
                        black_box(dump.to_string());
                        last = dump.workers().to_vec();
                    }
                })
            })
            .collect();
        while !started.load(Ordering::Acquire) {
            std::thread::yield_now();
        }
        drop(runtime);
        for dumper in dumpers {
            dumper.join().unwrap();
        }
        let after = handle.dump();
        assert!(after.fibers().is_empty(), "{after}");
        assert_eq!(after.workers(), [WorkerState::ShutDown; 2]);
    });
}

/// A future that panics when it is polled after a wake.
struct PanicsWhenWoken {
    polled: bool,
    waker: Arc<std::sync::Mutex<Option<Waker>>>,
}

impl Future for PanicsWhenWoken {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.polled {
            panic!("woken, as it should never be");
        }
        self.polled = true;
        *self.waker.lock().unwrap() = Some(cx.waker().clone());
        Poll::Pending
    }
}

#[inline(never)]
fn awaits_a_future_that_panics_when_woken(waker: Arc<std::sync::Mutex<Option<Waker>>>) {
    green::await_blocking(PanicsWhenWoken {
        polled: false,
        waker,
    });
    black_box(());
}

#[test]
fn a_fiber_parked_in_a_future_that_panics_when_woken_is_dumped_without_a_poll() {
    within(
        60,
        "a dump of a fiber whose future panics when woken",
        || {
            let runtime = runtime(2);
            let waker = Arc::new(std::sync::Mutex::new(None::<Waker>));
            let fragile = spawn_named(&runtime, "fragile", {
                let waker = waker.clone();
                move || awaits_a_future_that_panics_when_woken(waker)
            });
            // Twenty dumps capture it without a poll: a poll would panic.
            let dump = dump_when(&runtime, "fragile", FiberState::Parked("future"));
            assert_shows(
                the_fiber(&dump, "fragile"),
                "awaits_a_future_that_panics_when_woken",
            );
            for _ in 0..20 {
                let dump = runtime.dump();
                assert_eq!(
                    the_fiber(&dump, "fragile").state(),
                    FiberState::Parked("future")
                );
            }
            // Woken while dumps go on: the panic goes to its JoinHandle, as without dumps.
            let stop = Arc::new(AtomicBool::new(false));
            let dumper = std::thread::spawn({
                let (handle, stop) = (runtime.handle(), stop.clone());
                move || {
                    while !stop.load(Ordering::Acquire) {
                        black_box(handle.dump().to_string());
                    }
                }
            });
            waker.lock().unwrap().take().unwrap().wake();
            let error = fragile.join().unwrap_err();
            assert!(error.is_panic());
            stop.store(true, Ordering::Release);
            dumper.join().unwrap();
            // Gone from the next dump, and the runtime runs on.
            assert!(named(&runtime.dump(), "fragile").is_none());
            assert_eq!(runtime.spawn(|| 5).join().unwrap(), 5);
        },
    );
}

/// A future that takes a fiber dump from inside its own poll, then completes.
struct DumpsInItsPoll {
    handle: green::Handle,
}

impl Future for DumpsInItsPoll {
    type Output = Dump;

    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Dump> {
        Poll::Ready(dumps_itself(self.handle.clone()))
    }
}

#[test]
fn a_dump_taken_inside_a_poll_in_a_fiber_lists_that_fiber_running() {
    within(60, "a dump from a poll", || {
        let runtime = runtime(1);
        let handle = runtime.handle();
        let (_keep, receiver) = green::sync::channel::<u32>();
        spawn_named(&runtime, "bystander", move || {
            receives_for_the_dump(receiver)
        });
        let dump = spawn_named(&runtime, "poller", move || {
            green::await_blocking(DumpsInItsPoll { handle })
        })
        .join()
        .unwrap();
        let first = &dump.fibers()[0];
        assert_eq!(first.name(), Some("poller"));
        assert_eq!(first.state(), FiberState::Running);
        assert_shows(first, "dumps_itself");
        assert_eq!(
            the_fiber(&dump, "bystander").state(),
            FiberState::Parked("channel recv")
        );
    });
}
