//! tokio: the multi-thread runtime with 2 workers.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::{self, Latencies, Params, ParkMeter, Seen, Window};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name_fn(|| {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            format!("tokio-worker-{}", NEXT.fetch_add(1, Ordering::Relaxed))
        })
        .enable_all()
        .build()
        .expect("cannot start a tokio runtime")
}

pub fn spawn_join(params: &Params) -> Result<(), String> {
    let n = params.spawn_tasks;
    let rt = runtime();
    // The loop runs in a task on a worker, as green's runs in a fiber.
    let elapsed = rt
        .block_on(rt.spawn(async move {
            for i in 0..common::SPAWN_WARMUP {
                black_box(tokio::spawn(async move { i }).await.unwrap());
            }
            let start = Instant::now();
            let mut sum = 0;
            for i in 0..n {
                sum += tokio::spawn(async move { i }).await.unwrap();
            }
            black_box(sum);
            start.elapsed()
        }))
        .map_err(|e| e.to_string())?;
    common::report_per_op("ns_per_spawn_join", elapsed, n as u64);
    Ok(())
}

pub fn ping_pong(params: &Params) -> Result<(), String> {
    let round_trips = params.round_trips;
    let rt = runtime();
    let (to_pong, mut pong_inbox) = tokio::sync::mpsc::channel::<u64>(1);
    let (to_ping, mut ping_inbox) = tokio::sync::mpsc::channel::<u64>(1);
    let pinger = rt.spawn(async move {
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
    let ponger = rt.spawn(async move {
        let mut seen = Seen::default();
        let mut count = 0u64;
        while let Some(value) = pong_inbox.recv().await {
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
    let (elapsed, ping) = rt.block_on(pinger).map_err(|e| e.to_string())?;
    let pong = rt.block_on(ponger).map_err(|e| e.to_string())?;
    common::report_ping_pong(elapsed, round_trips, &ping, &pong);
    Ok(())
}

pub fn park_many(params: &Params) -> Result<(), String> {
    let n = params.park_tasks;
    let rt = runtime();
    for _ in 0..100 {
        rt.block_on(rt.spawn(tokio::task::yield_now())).unwrap();
    }
    // `changed()` fails once the sender is dropped: that releases everyone.
    let (release, gate) = tokio::sync::watch::channel(());
    let parked = Arc::new(AtomicUsize::new(0));
    let mut meter = ParkMeter::start();
    let handles: Vec<_> = (0..n)
        .map(|_| {
            let (mut gate, parked) = (gate.clone(), parked.clone());
            rt.spawn(async move {
                parked.fetch_add(1, Ordering::Relaxed);
                let _ = gate.changed().await;
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
    rt.block_on(async {
        for handle in handles {
            handle.await.map_err(|e| e.to_string())?;
        }
        Ok(())
    })
}

pub fn tcp_echo(params: &Params) -> Result<(), String> {
    let rt = runtime();
    let listener = rt
        .block_on(TcpListener::bind("127.0.0.1:0"))
        .map_err(|e| e.to_string())?;
    let address = listener.local_addr().map_err(|e| e.to_string())?;
    let connections = params.connections;
    let acceptor = rt.spawn(async move {
        let mut servers = Vec::with_capacity(connections);
        for _ in 0..connections {
            let (mut stream, _) = listener.accept().await.unwrap();
            stream.set_nodelay(true).unwrap();
            servers.push(tokio::spawn(async move {
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
            rt.spawn(async move {
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
    let all = rt.block_on(async {
        let mut all = Vec::with_capacity(connections);
        for client in clients {
            all.push(client.await.map_err(|e| e.to_string())?);
        }
        for server in acceptor.await.map_err(|e| e.to_string())? {
            server.await.map_err(|e| e.to_string())?;
        }
        Ok::<_, String>(all)
    })?;
    common::report_tcp(params, all, "tasks migrate between workers (work stealing)");
    Ok(())
}
