//! async-executor: one `Executor` run by 2 threads, with async-io's reactor
//! (`async_io::block_on` on each thread, as smol does, so the threads drive the reactor
//! themselves when idle) and async-net for TCP.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use async_executor::Executor;
use async_net::{TcpListener, TcpStream};
use futures_lite::future::block_on;
use futures_lite::{AsyncReadExt, AsyncWriteExt};

use crate::common::{self, Latencies, Params, ParkMeter, Seen, Window};

/// The executor; each child process runs one scenario, so one is enough.
static EX: Executor<'static> = Executor::new();

/// The 2 threads that run [`EX`]; dropping this stops and joins them.
struct Threads {
    stop: Option<async_channel::Sender<()>>,
    threads: Vec<thread::JoinHandle<()>>,
}

fn runtime() -> Threads {
    let (stop, stopped) = async_channel::bounded::<()>(1);
    let threads = (0..2)
        .map(|i| {
            let stopped = stopped.clone();
            thread::Builder::new()
                .name(format!("async-executor-{i}"))
                .spawn(move || {
                    let _ = async_io::block_on(EX.run(stopped.recv()));
                })
                .expect("cannot start an executor thread")
        })
        .collect();
    Threads {
        stop: Some(stop),
        threads,
    }
}

impl Drop for Threads {
    fn drop(&mut self) {
        drop(self.stop.take());
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

pub fn spawn_join(params: &Params) -> Result<(), String> {
    let n = params.spawn_tasks;
    let _threads = runtime();
    let elapsed = block_on(EX.spawn(async move {
        for i in 0..common::SPAWN_WARMUP {
            black_box(EX.spawn(async move { i }).await);
        }
        let start = Instant::now();
        let mut sum = 0;
        for i in 0..n {
            sum += EX.spawn(async move { i }).await;
        }
        black_box(sum);
        start.elapsed()
    }));
    common::report_per_op("ns_per_spawn_join", elapsed, n as u64);
    Ok(())
}

pub fn ping_pong(params: &Params) -> Result<(), String> {
    let round_trips = params.round_trips;
    let _threads = runtime();
    let (to_pong, pong_inbox) = async_channel::bounded::<u64>(1);
    let (to_ping, ping_inbox) = async_channel::bounded::<u64>(1);
    let pinger = EX.spawn(async move {
        let mut seen = Seen::default();
        seen.note();
        for i in 0..common::PING_PONG_WARMUP {
            to_pong.send(i).await.unwrap();
            ping_inbox.recv().await.unwrap();
        }
        let start = Instant::now();
        for i in 0..round_trips {
            to_pong.send(i).await.unwrap();
            black_box(ping_inbox.recv().await.unwrap());
            if i.is_multiple_of(common::SAMPLE_EVERY) {
                seen.note();
            }
        }
        let elapsed = start.elapsed();
        seen.note();
        (elapsed, seen)
    });
    let ponger = EX.spawn(async move {
        let mut seen = Seen::default();
        let mut count = 0u64;
        while let Ok(value) = pong_inbox.recv().await {
            if count.is_multiple_of(common::SAMPLE_EVERY) {
                seen.note();
            }
            count += 1;
            if to_ping.send(value + 1).await.is_err() {
                break;
            }
        }
        seen.note();
        seen
    });
    let (elapsed, ping) = block_on(pinger);
    let pong = block_on(ponger);
    common::report_ping_pong(elapsed, round_trips, &ping, &pong);
    Ok(())
}

pub fn park_many(params: &Params) -> Result<(), String> {
    let n = params.park_tasks;
    let _threads = runtime();
    for _ in 0..100 {
        block_on(EX.spawn(futures_lite::future::yield_now()));
    }
    // `recv` fails once the channel closes: that releases everyone.
    let (release, gate) = async_channel::unbounded::<()>();
    let parked = Arc::new(AtomicUsize::new(0));
    let mut meter = ParkMeter::start();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (gate, parked) = (gate.clone(), parked.clone());
            EX.spawn(async move {
                parked.fetch_add(1, Ordering::Relaxed);
                let _ = gate.recv().await;
            })
        })
        .collect();
    drop(gate);
    common::wait_for(
        n,
        || parked.load(Ordering::Relaxed),
        || handles.iter().any(|h| h.is_finished()),
    )?;
    meter.all_parked();
    meter.report(n);
    drop(release);
    block_on(async {
        for handle in handles {
            handle.await;
        }
    });
    Ok(())
}

pub fn tcp_echo(params: &Params) -> Result<(), String> {
    let _threads = runtime();
    let listener = block_on(TcpListener::bind("127.0.0.1:0")).map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = params.connections;
    let acceptor = EX.spawn(async move {
        let mut servers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            servers.push(EX.spawn(async move {
                let mut buf = [0; common::MESSAGE];
                while let Ok(n @ 1..) = stream.read(&mut buf).await {
                    if stream.write_all(&buf[..n]).await.is_err() {
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
            EX.spawn(async move {
                let mut stream = TcpStream::connect(address).await.unwrap();
                stream.set_nodelay(true).unwrap();
                let mut latencies = Latencies::with_capacity();
                let (request, mut reply) = ([7u8; common::MESSAGE], [0u8; common::MESSAGE]);
                loop {
                    let began = Instant::now();
                    if began >= window.end {
                        break;
                    }
                    stream.write_all(&request).await.unwrap();
                    stream.read_exact(&mut reply).await.unwrap();
                    latencies.record(&window, began);
                }
                latencies
            })
        })
        .collect();
    let all = block_on(async {
        let mut all = Vec::with_capacity(connections);
        for client in clients {
            all.push(client.await);
        }
        for server in acceptor.await {
            server.await;
        }
        all
    });
    common::report_tcp(
        params,
        all,
        "one shared executor: tasks run on either thread",
    );
    Ok(())
}
