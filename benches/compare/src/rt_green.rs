//! green: fibers on 2 workers, written as blocking code.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use green::net::{TcpListener, TcpStream};

use crate::common::{self, Latencies, Params, ParkMeter, Seen, Window};

fn runtime() -> green::Runtime {
    runtime_pinned(false)
}

/// Two workers, pinned to CPUs or not (see `Builder::pin_workers`).
fn runtime_pinned(pin: bool) -> green::Runtime {
    green::Runtime::builder()
        .workers(2)
        .pin_workers(pin)
        .build()
        .expect("cannot start a green runtime")
}

pub fn spawn_join(params: &Params) -> Result<(), String> {
    let n = params.spawn_tasks;
    let elapsed = runtime().run(move || {
        for i in 0..common::SPAWN_WARMUP {
            black_box(green::spawn(move || i).join().unwrap());
        }
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..n {
            sum += green::spawn(move || i).join().unwrap();
        }
        black_box(sum);
        start.elapsed()
    });
    common::report_per_op("ns_per_spawn_join", elapsed, n as u64);
    Ok(())
}

pub fn ping_pong(params: &Params) -> Result<(), String> {
    // Spawns from a plain thread go to the workers in turn, so the two fibers start on
    // different workers, where they stay; an idle worker may steal a fiber that has not
    // started yet, though, so check and try again if that happened.
    for attempt in 1..=3 {
        let (elapsed, ping, pong) = ping_pong_once(params.round_trips);
        if ping.0.is_disjoint(&pong.0) || attempt == 3 {
            if attempt > 1 {
                common::note(&format!(
                    "green: attempt {attempt} (the fibers shared a worker before)"
                ));
            }
            common::report_ping_pong(elapsed, params.round_trips, &ping, &pong);
            same_worker(params.round_trips);
            return Ok(());
        }
    }
    unreachable!()
}

/// For comparison, the same exchange between two fibers of one worker (`spawn_local`
/// keeps them there), reported as a note.
fn same_worker(round_trips: u64) {
    let elapsed = runtime().run(move || {
        let (to_pong, pong_inbox) = green::sync::bounded::<u64>(1);
        let (to_ping, ping_inbox) = green::sync::bounded::<u64>(1);
        let ponger = green::spawn_local(move || {
            while let Ok(value) = pong_inbox.recv() {
                if to_ping.send(value + 1).is_err() {
                    break;
                }
            }
        });
        let pinger = green::spawn_local(move || {
            for i in 0..common::PING_PONG_WARMUP {
                to_pong.send(i).unwrap();
                ping_inbox.recv().unwrap();
            }
            let start = Instant::now();
            for i in 0..round_trips {
                to_pong.send(i).unwrap();
                black_box(ping_inbox.recv().unwrap());
            }
            start.elapsed()
        });
        let elapsed = pinger.join().unwrap();
        ponger.join().unwrap();
        elapsed
    });
    common::report_per_op("same_worker_ns_per_round_trip", elapsed, round_trips);
}

fn ping_pong_once(round_trips: u64) -> (std::time::Duration, Seen, Seen) {
    let rt = runtime();
    let (to_pong, pong_inbox) = green::sync::bounded::<u64>(1);
    let (to_ping, ping_inbox) = green::sync::bounded::<u64>(1);
    let pinger = rt.spawn(move || {
        let mut seen = Seen::default();
        seen.note();
        for i in 0..common::PING_PONG_WARMUP {
            to_pong.send(i).unwrap();
            ping_inbox.recv().unwrap();
        }
        let start = Instant::now();
        for i in 0..round_trips {
            to_pong.send(i).unwrap();
            black_box(ping_inbox.recv().unwrap());
            if i.is_multiple_of(common::SAMPLE_EVERY) {
                seen.note();
            }
        }
        let elapsed = start.elapsed();
        seen.note();
        (elapsed, seen)
    });
    let ponger = rt.spawn(move || {
        let mut seen = Seen::default();
        let mut count = 0u64;
        while let Ok(value) = pong_inbox.recv() {
            if count.is_multiple_of(common::SAMPLE_EVERY) {
                seen.note();
            }
            count += 1;
            if to_ping.send(value + 1).is_err() {
                break;
            }
        }
        seen.note();
        seen
    });
    let (elapsed, ping) = pinger.join().unwrap();
    let pong = ponger.join().unwrap();
    (elapsed, ping, pong)
}

pub fn park_many(params: &Params) -> Result<(), String> {
    let n = params.park_tasks;
    let rt = runtime();
    // Warm the runtime up: workers started, first stacks mapped.
    for _ in 0..100 {
        rt.spawn(green::yield_now).join().unwrap();
    }
    let (release, gate) = green::sync::channel::<()>();
    let parked = Arc::new(AtomicUsize::new(0));
    let mut meter = ParkMeter::start();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (gate, parked) = (gate.clone(), parked.clone());
            rt.spawn(move || {
                parked.fetch_add(1, Ordering::Relaxed);
                let _ = gate.recv(); // parks until the channel closes
            })
        })
        .collect();
    drop(gate);
    let waited = common::wait_for(
        n,
        || parked.load(Ordering::Relaxed),
        || handles.iter().any(|h| h.is_finished()),
    );
    if let Err(why) = waited {
        drop(release);
        // A fiber that could not get a stack ends with an error that says why.
        let error = handles.into_iter().find_map(|h| h.join().err());
        return Err(error.map_or(why, |e| e.to_string()));
    }
    meter.all_parked();
    meter.report(n);
    drop(release);
    for handle in handles {
        handle.join().map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// The echo with pinned workers, as for a dedicated server (the table's main rows), then
/// with unpinned workers, the default (the rows marked "unpinned").
pub fn tcp_echo(params: &Params) -> Result<(), String> {
    tcp_echo_with(params, true, "")?;
    tcp_echo_with(params, false, "unpinned_")
}

fn tcp_echo_with(params: &Params, pin: bool, prefix: &str) -> Result<(), String> {
    let rt = runtime_pinned(pin);
    let listener = rt
        .run(|| TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = params.connections;
    // The acceptor spawns a fiber per connection, from a fiber: green places each near the
    // CPU that handled the connection's packets (`TcpListener::accept`), or by load.
    let acceptor = rt.spawn(move || {
        let mut servers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            servers.push(green::spawn(move || {
                let worker = common::thread_name();
                let mut buf = [0; common::MESSAGE];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                worker
            }));
        }
        servers
    });
    let window = Window::new(params);
    // Clients are spawned from this thread: round robin over the workers.
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            rt.spawn(move || {
                let mut stream = TcpStream::connect(address).unwrap();
                stream.set_nodelay(true).unwrap();
                let mut latencies = Latencies::with_capacity();
                let (request, mut reply) = ([7u8; common::MESSAGE], [0u8; common::MESSAGE]);
                loop {
                    let began = Instant::now();
                    if began >= window.end {
                        break;
                    }
                    stream.write_all(&request).unwrap();
                    stream.read_exact(&mut reply).unwrap();
                    latencies.record(&window, began);
                }
                (latencies, common::thread_name())
            })
        })
        .collect();
    let mut all = Vec::with_capacity(connections);
    let mut client_threads = Vec::with_capacity(connections);
    for client in clients {
        let (latencies, thread) = client.join().map_err(|e| e.to_string())?;
        all.push(latencies);
        client_threads.push(thread);
    }
    let servers = acceptor.join().map_err(|e| e.to_string())?;
    let server_threads: Vec<String> = servers
        .into_iter()
        .map(|s| s.join().map_err(|e| e.to_string()))
        .collect::<Result<_, _>>()?;
    let placement = format!(
        "{} workers; {}; {}",
        if pin { "pinned" } else { "unpinned" },
        common::placement("clients", &client_threads),
        common::placement("server fibers", &server_threads)
    );
    common::report_tcp_as(params, all, &placement, prefix);
    Ok(())
}
