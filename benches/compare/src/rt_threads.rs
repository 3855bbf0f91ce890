//! OS threads: `std::thread` and std's blocking primitives, a thread per task.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Instant;

use crate::common::{self, Latencies, Params, ParkMeter, Seen, Window};

fn named(name: &str) -> thread::Builder {
    thread::Builder::new().name(name.into())
}

pub fn spawn_join(params: &Params) -> Result<(), String> {
    let n = params.spawn_threads;
    for i in 0..100 {
        black_box(thread::spawn(move || i).join().unwrap());
    }
    let start = Instant::now();
    let mut sum = 0;
    for i in 0..n {
        sum += thread::spawn(move || i).join().unwrap();
    }
    black_box(sum);
    common::report_per_op("ns_per_spawn_join", start.elapsed(), n as u64);
    Ok(())
}

pub fn ping_pong(params: &Params) -> Result<(), String> {
    let round_trips = params.round_trips;
    let (to_pong, pong_inbox) = std::sync::mpsc::sync_channel::<u64>(1);
    let (to_ping, ping_inbox) = std::sync::mpsc::sync_channel::<u64>(1);
    let pinger = named("ping")
        .spawn(move || {
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
            }
            (start.elapsed(), seen)
        })
        .map_err(|e| e.to_string())?;
    let ponger = named("pong")
        .spawn(move || {
            let mut seen = Seen::default();
            seen.note();
            while let Ok(value) = pong_inbox.recv() {
                if to_ping.send(value + 1).is_err() {
                    break;
                }
            }
            seen
        })
        .map_err(|e| e.to_string())?;
    let (elapsed, ping) = pinger.join().map_err(|_| "ping thread panicked")?;
    let pong = ponger.join().map_err(|_| "pong thread panicked")?;
    common::report_ping_pong(elapsed, round_trips, &ping, &pong);
    Ok(())
}

pub fn park_many(params: &Params) -> Result<(), String> {
    let n = params.park_threads;
    for _ in 0..100 {
        thread::spawn(|| ()).join().unwrap();
    }
    let gate = Arc::new((Mutex::new(false), Condvar::new()));
    let parked = Arc::new(AtomicUsize::new(0));
    let mut meter = ParkMeter::start();
    let handles = (0..n)
        .map(|_| {
            let (gate, parked) = (gate.clone(), parked.clone());
            thread::Builder::new().spawn(move || {
                parked.fetch_add(1, Ordering::Relaxed);
                let mut released = gate.0.lock().unwrap();
                while !*released {
                    released = gate.1.wait(released).unwrap();
                }
            })
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    common::wait_for(
        n,
        || parked.load(Ordering::Relaxed),
        || handles.iter().any(|h| h.is_finished()),
    )?;
    meter.all_parked();
    meter.report(n);
    *gate.0.lock().unwrap() = true;
    gate.1.notify_all();
    for handle in handles {
        handle.join().map_err(|_| "a parked thread panicked")?;
    }
    Ok(())
}

pub fn tcp_echo(params: &Params) -> Result<(), String> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = params.connections;
    let acceptor = thread::spawn(move || {
        let mut servers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().unwrap();
            stream.set_nodelay(true).unwrap();
            servers.push(thread::spawn(move || {
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
            thread::spawn(move || {
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
        all.push(client.join().map_err(|_| "a client thread panicked")?);
    }
    for server in acceptor.join().map_err(|_| "the acceptor panicked")? {
        server.join().map_err(|_| "a server thread panicked")?;
    }
    common::report_tcp(params, all, "a thread per connection on both sides");
    Ok(())
}
