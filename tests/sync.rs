//! Behaviour of `green::sync` under contention from fibers on several workers and from
//! plain threads.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;

use green::sync::{self, Barrier, Condvar, Mutex, RecvError, TryRecvError};

/// Loop counts are scaled down under QEMU (riscv64, aarch64).
const NATIVE: bool = cfg!(target_arch = "x86_64");

fn two_workers() -> green::Runtime {
    green::Runtime::builder().workers(2).build().unwrap()
}

#[test]
fn a_mutex_counts_exactly_under_fibers_and_threads() {
    let rounds = if NATIVE { 1000 } else { 100 };
    let runtime = two_workers();
    let counter = Arc::new(Mutex::new(0usize));
    let fibers: Vec<_> = (0..20)
        .map(|_| {
            let counter = counter.clone();
            runtime.spawn(move || {
                for _ in 0..rounds {
                    let mut value = counter.lock().unwrap();
                    let seen = *value;
                    green::yield_now(); // hold the lock across a switch
                    *value = seen + 1;
                }
            })
        })
        .collect();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let counter = counter.clone();
            thread::spawn(move || {
                for _ in 0..rounds {
                    *counter.lock().unwrap() += 1;
                }
            })
        })
        .collect();
    fibers.into_iter().for_each(|f| f.join().unwrap());
    threads.into_iter().for_each(|t| t.join().unwrap());
    assert_eq!(*counter.lock().unwrap(), 24 * rounds);
}

#[test]
fn a_mutex_held_by_a_panicking_fiber_is_poisoned() {
    let mutex = Arc::new(Mutex::new(5));
    let holder = mutex.clone();
    let result = green::spawn(move || {
        let _guard = holder.lock().unwrap();
        panic!("holder failed");
    })
    .join();
    assert!(result.unwrap_err().is_panic());
    assert!(mutex.is_poisoned());
    let error = mutex.lock().unwrap_err();
    assert_eq!(**error.get_ref(), 5, "the data is still reachable");
    drop(error);
    mutex.clear_poison();
    assert_eq!(*mutex.lock().unwrap(), 5);
}

#[test]
fn a_mutex_held_by_a_fiber_cancelled_in_its_critical_section_is_poisoned() {
    // The cancellation unwinds the holder from a suspension point inside the critical
    // section, which may have left the data half updated: as a panic would.
    let poisoned = green::Runtime::builder()
        .workers(1)
        .build()
        .unwrap()
        .run(|| {
            let mutex = Arc::new(Mutex::new(5));
            let holder = {
                let mutex = mutex.clone();
                green::spawn(move || {
                    let _guard = mutex.lock().unwrap();
                    green::sleep(std::time::Duration::from_secs(3600));
                })
            };
            green::yield_now(); // the holder sleeps with the lock
            holder.abort();
            assert!(holder.join().unwrap_err().is_cancelled());
            mutex.is_poisoned()
        });
    assert!(poisoned);
}

#[test]
fn try_lock_fails_while_the_mutex_is_held() {
    let mutex = Mutex::new(());
    let guard = mutex.try_lock().unwrap();
    assert!(matches!(
        mutex.try_lock(),
        Err(std::sync::TryLockError::WouldBlock)
    ));
    drop(guard);
    assert!(mutex.try_lock().is_ok());
}

#[test]
fn a_condvar_hands_work_from_threads_to_fibers_on_several_workers() {
    let items = if NATIVE { 2000 } else { 200 };
    let runtime = two_workers();
    let queue = Arc::new((Mutex::new((Vec::<usize>::new(), false)), Condvar::new()));
    let consumed = Arc::new(AtomicUsize::new(0));
    let consumers: Vec<_> = (0..6)
        .map(|_| {
            let (queue, consumed) = (queue.clone(), consumed.clone());
            runtime.spawn(move || {
                let (lock, ready) = &*queue;
                let mut state = lock.lock().unwrap();
                loop {
                    if let Some(item) = state.0.pop() {
                        consumed.fetch_add(item, Ordering::SeqCst);
                    } else if state.1 {
                        return;
                    } else {
                        state = ready.wait(state).unwrap();
                    }
                }
            })
        })
        .collect();
    let producers: Vec<_> = (0..2)
        .map(|p| {
            let queue = queue.clone();
            thread::spawn(move || {
                for i in 0..items {
                    queue.0.lock().unwrap().0.push(p * items + i);
                    queue.1.notify_one();
                }
            })
        })
        .collect();
    producers.into_iter().for_each(|p| p.join().unwrap());
    queue.0.lock().unwrap().1 = true;
    queue.1.notify_all();
    consumers.into_iter().for_each(|c| c.join().unwrap());
    assert_eq!(consumed.load(Ordering::SeqCst), (0..2 * items).sum());
}

#[test]
fn a_barrier_releases_fibers_and_threads_together_with_one_leader() {
    let rounds = 5;
    let runtime = two_workers();
    let barrier = Arc::new(Barrier::new(6));
    let arrived = Arc::new(AtomicUsize::new(0));
    let check = move |barrier: &Barrier, arrived: &AtomicUsize| {
        let mut leaders = 0;
        for round in 0..rounds {
            arrived.fetch_add(1, Ordering::SeqCst);
            leaders += usize::from(barrier.wait().is_leader());
            // Nobody passes a round before all six arrived at it.
            assert!(arrived.load(Ordering::SeqCst) >= 6 * (round + 1));
            barrier.wait();
        }
        leaders
    };
    let fibers: Vec<_> = (0..3)
        .map(|_| {
            let (barrier, arrived) = (barrier.clone(), arrived.clone());
            runtime.spawn(move || check(&barrier, &arrived))
        })
        .collect();
    let threads: Vec<_> = (0..3)
        .map(|_| {
            let (barrier, arrived) = (barrier.clone(), arrived.clone());
            thread::spawn(move || check(&barrier, &arrived))
        })
        .collect();
    let leaders: usize = fibers.into_iter().map(|f| f.join().unwrap()).sum::<usize>()
        + threads
            .into_iter()
            .map(|t| t.join().unwrap())
            .sum::<usize>();
    assert_eq!(leaders, rounds);
}

#[test]
fn a_channel_delivers_every_value_once_to_many_consumers() {
    let per_producer = if NATIVE { 5000 } else { 300 };
    let runtime = two_workers();
    let (sender, receiver) = sync::channel::<usize>();
    let consumers: Vec<_> = (0..4)
        .map(|_| {
            let receiver = receiver.clone();
            runtime.spawn(move || receiver.iter().sum::<usize>())
        })
        .collect();
    let thread_consumer = {
        let receiver = receiver.clone();
        thread::spawn(move || receiver.iter().sum::<usize>())
    };
    drop(receiver);
    let fiber_producers: Vec<_> = (0..2)
        .map(|p| {
            let sender = sender.clone();
            runtime.spawn(move || {
                (0..per_producer).for_each(|i| sender.send(p * per_producer + i).unwrap())
            })
        })
        .collect();
    let thread_producer = {
        let sender = sender.clone();
        thread::spawn(move || {
            (0..per_producer).for_each(|i| sender.send(2 * per_producer + i).unwrap())
        })
    };
    drop(sender);
    fiber_producers.into_iter().for_each(|p| p.join().unwrap());
    thread_producer.join().unwrap();
    let total: usize = consumers
        .into_iter()
        .map(|c| c.join().unwrap())
        .sum::<usize>()
        + thread_consumer.join().unwrap();
    assert_eq!(total, (0..3 * per_producer).sum());
}

#[test]
fn a_bounded_channel_makes_senders_wait_for_room() {
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let log = runtime.run(|| {
        let (sender, receiver) = sync::bounded::<u32>(2);
        let log = Arc::new(std::sync::Mutex::new(Vec::new()));
        let producer_log = log.clone();
        let producer = green::spawn(move || {
            for i in 0..4 {
                sender.send(i).unwrap();
                producer_log.lock().unwrap().push(format!("sent {i}"));
            }
        });
        green::yield_now(); // the producer fills the channel and waits
        log.lock().unwrap().push("receiving".into());
        let received: Vec<u32> = receiver.iter().collect();
        producer.join().unwrap();
        assert_eq!(received, [0, 1, 2, 3]);
        Arc::try_unwrap(log).unwrap().into_inner().unwrap()
    });
    assert_eq!(log[..3], ["sent 0", "sent 1", "receiving"]);
}

#[test]
fn channels_report_disconnection() {
    let (sender, receiver) = sync::channel::<u8>();
    sender.send(1).unwrap();
    drop(sender);
    assert_eq!(receiver.recv(), Ok(1));
    assert_eq!(receiver.recv(), Err(RecvError));
    assert_eq!(receiver.try_recv(), Err(TryRecvError::Disconnected));

    let (sender, receiver) = sync::bounded::<u8>(1);
    drop(receiver);
    assert_eq!(sender.send(7).unwrap_err().0, 7);
}

#[test]
fn async_twins_work_in_any_executor() {
    let (sender, receiver) = sync::bounded::<u32>(1);
    let mutex = Mutex::new(1);
    let value = green::block_on(async {
        let producer = green::spawn(move || green::block_on(sender.send_async(41)).unwrap());
        let received = receiver.recv_async().await.unwrap();
        producer.await.unwrap();
        *mutex.lock_async().await.unwrap() + received
    });
    assert_eq!(value, 42);
}

#[test]
fn a_receiver_aborted_after_its_wake_passes_the_value_on() {
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    runtime.run(|| {
        let (sender, receiver) = sync::channel::<u32>();
        let other_receiver = receiver.clone();
        // One worker runs fibers in FIFO order: each yield lets the new fiber run until
        // it blocks in `recv`.
        let first = green::spawn(move || receiver.recv());
        green::yield_now();
        let second = green::spawn(move || other_receiver.recv());
        green::yield_now();
        assert!(!first.is_finished() && !second.is_finished());
        sender.send(7).unwrap(); // wakes `first`, the older waiter
        first.abort(); // before it runs: it unwinds instead of taking the value
        assert!(first.join().unwrap_err().is_cancelled());
        green::yield_now(); // `second`, woken by the abandoned notification, takes it
        assert!(
            second.is_finished(),
            "the notification was lost with the aborted fiber"
        );
        assert_eq!(second.join().unwrap(), Ok(7));
    });
}

#[test]
fn fibers_blocked_in_channels_unwind_at_shutdown_while_threads_use_them() {
    let rounds = if NATIVE { 20 } else { 4 };
    for _ in 0..rounds {
        let runtime = two_workers();
        let (sender, receiver) = sync::bounded::<usize>(2);
        let (sent, received) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        // Counted right after each call returns, with no suspension point between: a
        // fiber unwound inside `send` or `recv` has neither sent nor received.
        let ready = Arc::new(Barrier::new(9));
        for _ in 0..4 {
            let (receiver, received, ready) = (receiver.clone(), received.clone(), ready.clone());
            runtime.spawn(move || {
                ready.wait();
                while let Ok(value) = receiver.recv() {
                    received.fetch_add(value, Ordering::Relaxed);
                }
            });
        }
        for _ in 0..4 {
            let (sender, sent, ready) = (sender.clone(), sent.clone(), ready.clone());
            runtime.spawn(move || {
                ready.wait();
                while sender.send(3).is_ok() {
                    sent.fetch_add(3, Ordering::Relaxed);
                }
            });
        }
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let (sender, sent, stop) = (sender.clone(), sent.clone(), stop.clone());
                thread::spawn(move || {
                    while !stop.load(Ordering::Relaxed) && sender.send(5).is_ok() {
                        sent.fetch_add(5, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        drop(sender);
        ready.wait();
        // Unwinds the fibers, parked in `send` or `recv` or just woken, while the threads
        // send and wake them.
        drop(runtime);
        stop.store(true, Ordering::Relaxed);
        let drain = || {
            while let Ok(value) = receiver.try_recv() {
                received.fetch_add(value, Ordering::Relaxed);
            }
        };
        while !threads.iter().all(thread::JoinHandle::is_finished) {
            drain(); // makes room for a thread blocked in `send`
            thread::yield_now();
        }
        threads.into_iter().for_each(|t| t.join().unwrap());
        drain();
        assert_eq!(
            received.load(Ordering::Relaxed),
            sent.load(Ordering::Relaxed)
        );
    }
}

#[test]
fn a_bounded_channel_passes_a_fiber_and_a_threads_values_in_order() {
    let runtime = two_workers();
    let (sender, receiver) = sync::bounded::<usize>(2);
    let sent = Arc::new(AtomicUsize::new(0));
    // A fiber and a plain thread send 50 values each into room for 2.
    let fiber = {
        let (sender, sent) = (sender.clone(), sent.clone());
        runtime.spawn(move || {
            for i in 0..50 {
                sender.send(i).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    let thread = {
        let (sender, sent) = (sender.clone(), sent.clone());
        thread::spawn(move || {
            for i in 100..150 {
                sender.send(i).unwrap();
                sent.fetch_add(1, Ordering::SeqCst);
            }
        })
    };
    drop(sender);
    let mut received = Vec::new();
    // Nobody receives until the senders have filled the channel.
    while sent.load(Ordering::SeqCst) < 2 {
        thread::yield_now();
    }
    // Nothing received yet: no more than the capacity went through.
    assert_eq!(sent.load(Ordering::SeqCst), 2);
    while let Ok(value) = receiver.recv() {
        received.push(value);
    }
    fiber.join().unwrap();
    thread.join().unwrap();
    // Each sender's values arrive in order, all of them.
    let (from_fiber, from_thread): (Vec<usize>, Vec<usize>) =
        received.iter().partition(|&&value| value < 100);
    assert_eq!(from_fiber, (0..50).collect::<Vec<_>>());
    assert_eq!(from_thread, (100..150).collect::<Vec<_>>());
}

#[test]
fn a_sender_waiting_for_room_fails_when_the_receivers_go() {
    let runtime = two_workers();
    let (sender, receiver) = sync::bounded::<u32>(1);
    sender.send(1).unwrap();
    let waiting = runtime.spawn(move || sender.send(2));
    // The fiber waits for room: once a dump shows it parked there, the receiver goes.
    while runtime
        .dump()
        .fibers()
        .iter()
        .all(|fiber| fiber.state() != green::FiberState::Parked("channel send"))
    {
        thread::yield_now();
    }
    drop(receiver);
    let error = waiting.join().unwrap().unwrap_err();
    assert_eq!(error.0, 2);
}
