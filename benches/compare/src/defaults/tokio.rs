//! tokio as its documentation starts: `Runtime::new()` (the multi-thread runtime, one worker
//! per CPU), or the current-thread runtime (`Builder::new_current_thread()`), with the
//! main task being `block_on`'s future, as under `#[tokio::main]`.

use std::hint::black_box;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::{Builder, Runtime};

use super::echo;
use super::turns::{self, Transcript};
use super::wrk;
use crate::common::{self, Params, Seen};

/// The two runtimes a tokio user starts with.
#[derive(Clone, Copy)]
enum Flavor {
    /// `Runtime::new()`.
    MultiThread,
    /// `Builder::new_current_thread().enable_all()`.
    CurrentThread,
}

fn runtime(flavor: Flavor) -> Runtime {
    match flavor {
        Flavor::MultiThread => Runtime::new(),
        Flavor::CurrentThread => Builder::new_current_thread().enable_all().build(),
    }
    .expect("cannot start a tokio runtime")
}

/// S1 on the multi-thread runtime: two tasks count and yield while the main task joins.
pub fn turns_multi_thread(params: &Params) -> Result<(), String> {
    let transcripts: Vec<Vec<String>> = (0..params.turns_runs)
        .map(|_| {
            let transcript = Transcript::default();
            let written = transcript.clone();
            runtime(Flavor::MultiThread).block_on(async move {
                let counters: Vec<_> = turns::TASKS
                    .into_iter()
                    .map(|(task, turns)| tokio::spawn(count(written.clone(), task, turns)))
                    .collect();
                for counter in counters {
                    counter.await.unwrap();
                }
            });
            transcript.lines()
        })
        .collect();
    turns::report(&transcripts);
    Ok(())
}

async fn count(transcript: Transcript, task: usize, turns: usize) {
    transcript.starting(task);
    for counter in 0..turns {
        transcript.counter(task, counter);
        tokio::task::yield_now().await;
    }
    transcript.finished(task);
}

pub fn ping_pong_multi_thread(params: &Params) -> Result<(), String> {
    ping_pong(params, Flavor::MultiThread)
}

pub fn ping_pong_current_thread(params: &Params) -> Result<(), String> {
    ping_pong(params, Flavor::CurrentThread)
}

/// S2: the main task spawns B, then A; A sends to B over an unbounded channel, B answers
/// `v + 1` over another.
fn ping_pong(params: &Params, flavor: Flavor) -> Result<(), String> {
    let round_trips = params.default_round_trips;
    let (elapsed, a_seen, b_seen) = runtime(flavor).block_on(async move {
        let (to_b, mut b_inbox) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let (to_a, mut a_inbox) = tokio::sync::mpsc::unbounded_channel::<u64>();
        let b = tokio::spawn(async move {
            let mut seen = Seen::default();
            let mut count = 0u64;
            while let Some(value) = b_inbox.recv().await {
                if count.is_multiple_of(common::SAMPLE_EVERY) {
                    seen.note_with_id();
                }
                count += 1;
                if to_a.send(value + 1).is_err() {
                    break;
                }
            }
            seen
        });
        let a = tokio::spawn(async move {
            let mut seen = Seen::default();
            let start = Instant::now();
            for i in 0..round_trips {
                to_b.send(i).unwrap();
                black_box(a_inbox.recv().await.unwrap());
                if i.is_multiple_of(common::SAMPLE_EVERY) {
                    seen.note_with_id();
                }
            }
            (start.elapsed(), seen)
        });
        let (elapsed, a_seen) = a.await.unwrap();
        (elapsed, a_seen, b.await.unwrap())
    });
    super::report_ping_pong(elapsed, round_trips, &a_seen, &b_seen);
    Ok(())
}

pub fn spawn_then_join_multi_thread(params: &Params) -> Result<(), String> {
    spawn_then_join(params, Flavor::MultiThread)
}

pub fn spawn_then_join_current_thread(params: &Params) -> Result<(), String> {
    spawn_then_join(params, Flavor::CurrentThread)
}

/// S3: the main task spawns every task, then awaits them in order.
fn spawn_then_join(params: &Params, flavor: Flavor) -> Result<(), String> {
    let tasks = params.spawn_then_join_tasks;
    let times: Vec<Duration> = (0..params.spawn_then_join_runs)
        .map(|_| {
            runtime(flavor).block_on(async move {
                let start = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|i| tokio::spawn(async move { i * 2 }))
                    .collect();
                let mut sum = 0;
                for handle in handles {
                    sum += handle.await.unwrap();
                }
                black_box(sum);
                start.elapsed()
            })
        })
        .collect();
    super::report_spawn_then_join(&times, tasks);
    Ok(())
}

pub fn tcp_echo_multi_thread(params: &Params) -> Result<(), String> {
    tcp_echo(params, Flavor::MultiThread)
}

pub fn tcp_echo_current_thread(params: &Params) -> Result<(), String> {
    tcp_echo(params, Flavor::CurrentThread)
}

/// S4: the main task accepts and spawns a task per connection.
fn tcp_echo(params: &Params, flavor: Flavor) -> Result<(), String> {
    let connections = echo::connections(params);
    let (send_address, address) = mpsc::channel();
    let server = thread::spawn(move || {
        runtime(flavor).block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let _ = send_address.send(listener.local_addr()?);
            let mut handlers = Vec::with_capacity(connections);
            for _ in 0..connections {
                let (stream, _) = listener.accept().await?;
                stream.set_nodelay(true)?;
                handlers.push(tokio::spawn(echo_connection(stream)));
            }
            for handler in handlers {
                handler.await?;
            }
            std::io::Result::Ok(())
        })
    });
    let Ok(address) = address.recv() else {
        return Err(format!("the server did not start: {:?}", server.join()));
    };
    echo::run_clients(params, address)?;
    server
        .join()
        .map_err(|_| "the server panicked".to_string())?
        .map_err(|e| format!("server: {e}"))
}

async fn echo_connection(mut stream: TcpStream) {
    let mut buf = [0; common::MESSAGE];
    while let Ok(n @ 1..) = stream.read(&mut buf).await {
        if stream.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
}

/// S5: a minimal HTTP server on the multi-thread runtime, answering what
/// `examples/http_server` answers, under wrk.
pub fn http_wrk(params: &Params) -> Result<(), String> {
    let (send_address, address) = mpsc::channel();
    // The server runs until this process exits.
    thread::spawn(move || {
        runtime(Flavor::MultiThread).block_on(async move {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            let _ = send_address.send(listener.local_addr()?);
            accept_forever(listener).await
        })
    });
    let address = address
        .recv()
        .map_err(|_| "the tokio HTTP server did not start".to_string())?;
    wrk::check_answer(&wrk::probe(address)?);
    wrk::run(params, address)
}

/// The accept loop of `#[tokio::main]` servers: a task per connection.
async fn accept_forever(listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(serve_http(stream));
    }
}

/// Answers every request head (up to its blank line) with [`wrk::RESPONSE`], keeping the
/// connection open until the client closes it.
async fn serve_http(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buffer = Vec::with_capacity(1024);
    let mut chunk = [0; 4096];
    loop {
        while let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            buffer.drain(..end + 4);
            stream.write_all(wrk::RESPONSE).await?;
        }
        match stream.read(&mut chunk).await? {
            0 => return Ok(()),
            n => buffer.extend_from_slice(&chunk[..n]),
        }
    }
}
