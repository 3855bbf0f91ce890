//! may: stackful coroutines on 2 workers (`may::config().set_workers(2)`).

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use may::coroutine::JoinHandle;
use may::net::{TcpListener, TcpStream};

use crate::common::{self, Latencies, Params, ParkMeter, Seen, Window};

/// Configures may's scheduler; must come before its first use in the process.
fn configure() {
    may::config().set_workers(2);
}

/// Spawns a coroutine (also for the burst table's may column).
pub(crate) fn go<F, T>(f: F) -> JoinHandle<T>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    // SAFETY: may's spawn is unsafe because a coroutine may resume on another worker
    // thread (a thread-local address cached across a suspension would then be another
    // thread's) and because its stack (32 KiB by default) has no overflow check of its
    // own. The closures given here (and by `burst::may`) touch Rust thread-locals only
    // in `common::thread_name` and `Seen::note`, which are not inlined and do not suspend
    // (and in a panic's unwinding, which ends the benchmark), and need far less than
    // 32 KiB of stack.
    unsafe { may::coroutine::spawn(f) }
}

/// Joins a coroutine, turning its panic into an error message.
pub(crate) fn join<T>(handle: JoinHandle<T>) -> Result<T, String> {
    handle.join().map_err(|payload| {
        payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a coroutine panicked".into())
    })
}

pub fn spawn_join(params: &Params) -> Result<(), String> {
    configure();
    let n = params.spawn_tasks;
    let elapsed = join(go(move || {
        for i in 0..common::SPAWN_WARMUP {
            black_box(go(move || i).join().unwrap());
        }
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..n {
            sum += go(move || i).join().unwrap();
        }
        black_box(sum);
        start.elapsed()
    }))?;
    common::report_per_op("ns_per_spawn_join", elapsed, n as u64);
    Ok(())
}

pub fn ping_pong(params: &Params) -> Result<(), String> {
    configure();
    let round_trips = params.round_trips;
    // may's channels are unbounded; with one message in flight that is the same thing.
    let (to_pong, pong_inbox) = may::sync::mpsc::channel::<u64>();
    let (to_ping, ping_inbox) = may::sync::mpsc::channel::<u64>();
    let pinger = go(move || {
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
    let ponger = go(move || {
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
    let (elapsed, ping) = join(pinger)?;
    let pong = join(ponger)?;
    common::report_ping_pong(elapsed, round_trips, &ping, &pong);
    Ok(())
}

pub fn park_many(params: &Params) -> Result<(), String> {
    configure();
    let n = params.park_tasks;
    for _ in 0..100 {
        join(go(may::coroutine::yield_now))?;
    }
    // `recv` fails once every sender is dropped: that releases everyone.
    let (release, gate) = may::sync::mpmc::channel::<()>();
    let parked = Arc::new(AtomicUsize::new(0));
    let mut meter = ParkMeter::start();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (gate, parked) = (gate.clone(), parked.clone());
            go(move || {
                parked.fetch_add(1, Ordering::Relaxed);
                let _ = gate.recv();
            })
        })
        .collect();
    drop(gate);
    common::wait_for(
        n,
        || parked.load(Ordering::Relaxed),
        || handles.iter().any(|h| h.is_done()),
    )?;
    meter.all_parked();
    meter.report(n);
    drop(release);
    for handle in handles {
        join(handle)?;
    }
    Ok(())
}

pub fn tcp_echo(params: &Params) -> Result<(), String> {
    configure();
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = params.connections;
    let acceptor = go(move || {
        let mut servers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            servers.push(go(move || {
                let mut buf = [0; common::MESSAGE];
                while let Ok(n @ 1..) = stream.read(&mut buf) {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }));
        }
        servers
    });
    let window = Window::new(params);
    let clients: Vec<_> = (0..connections)
        .map(|_| {
            go(move || {
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
                latencies
            })
        })
        .collect();
    let mut all = Vec::with_capacity(connections);
    for client in clients {
        all.push(join(client)?);
    }
    for server in join(acceptor)? {
        join(server)?;
    }
    common::report_tcp(
        params,
        all,
        "coroutines migrate between workers (work stealing)",
    );
    Ok(())
}
