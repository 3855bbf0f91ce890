//! green as a new user runs it: `green::run` (`Runtime::new()`: one worker per CPU,
//! unpinned), `green::spawn`, blocking code. No `workers(n)`, no `pin_workers`, no
//! `spawn_local`.

use std::hint::black_box;
use std::io::{Read, Write};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use green::net::TcpListener;

use super::echo;
use super::turns::{self, Transcript};
use super::wrk;
use crate::common::{self, Params, Seen};

/// S1: two fibers count and yield while the main fiber joins them.
pub fn turns(params: &Params) -> Result<(), String> {
    let transcripts: Vec<Vec<String>> = (0..params.turns_runs)
        .map(|_| {
            let transcript = Transcript::default();
            let written = transcript.clone();
            green::run(move || {
                let counters: Vec<_> = turns::TASKS
                    .into_iter()
                    .map(|(task, turns)| {
                        let transcript = written.clone();
                        green::spawn(move || count(&transcript, task, turns))
                    })
                    .collect();
                for counter in counters {
                    counter.join().unwrap();
                }
            });
            transcript.lines()
        })
        .collect();
    turns::report(&transcripts);
    Ok(())
}

fn count(transcript: &Transcript, task: usize, turns: usize) {
    transcript.starting(task);
    for counter in 0..turns {
        transcript.counter(task, counter);
        green::yield_now();
    }
    transcript.finished(task);
}

/// S2: the main fiber spawns B, then A; A sends to B, B answers `v + 1`.
pub fn ping_pong(params: &Params) -> Result<(), String> {
    let round_trips = params.default_round_trips;
    let (elapsed, a_seen, b_seen) = green::run(move || {
        let (to_b, b_inbox) = green::sync::channel::<u64>();
        let (to_a, a_inbox) = green::sync::channel::<u64>();
        let b = green::spawn(move || {
            let mut seen = Seen::default();
            let mut count = 0u64;
            while let Ok(value) = b_inbox.recv() {
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
        let a = green::spawn(move || {
            let mut seen = Seen::default();
            let start = Instant::now();
            for i in 0..round_trips {
                to_b.send(i).unwrap();
                black_box(a_inbox.recv().unwrap());
                if i.is_multiple_of(common::SAMPLE_EVERY) {
                    seen.note_with_id();
                }
            }
            (start.elapsed(), seen)
        });
        let (elapsed, a_seen) = a.join().unwrap();
        (elapsed, a_seen, b.join().unwrap())
    });
    super::report_ping_pong(elapsed, round_trips, &a_seen, &b_seen);
    Ok(())
}

/// S3: the main fiber spawns every task, then joins them in order.
pub fn spawn_then_join(params: &Params) -> Result<(), String> {
    let tasks = params.spawn_then_join_tasks;
    let times: Vec<Duration> = (0..params.spawn_then_join_runs)
        .map(|_| {
            green::run(move || {
                let start = Instant::now();
                let handles: Vec<_> = (0..tasks).map(|i| green::spawn(move || i * 2)).collect();
                let mut sum = 0;
                for handle in handles {
                    sum += handle.join().unwrap();
                }
                black_box(sum);
                start.elapsed()
            })
        })
        .collect();
    super::report_spawn_then_join(&times, tasks);
    Ok(())
}

/// S4: a `green::run` server whose main fiber accepts and spawns a fiber per connection.
pub fn tcp_echo(params: &Params) -> Result<(), String> {
    let connections = echo::connections(params);
    let (send_address, address) = mpsc::channel();
    let server = thread::spawn(move || {
        green::run(move || -> std::io::Result<Vec<String>> {
            let listener = TcpListener::bind("127.0.0.1:0")?;
            let _ = send_address.send(listener.local_addr()?);
            let mut handlers = Vec::with_capacity(connections);
            for _ in 0..connections {
                let (mut stream, _) = listener.accept()?;
                stream.set_nodelay(true)?;
                handlers.push(green::spawn(move || {
                    let mut buf = [0; common::MESSAGE];
                    while let Ok(n @ 1..) = stream.read(&mut buf) {
                        if stream.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                    common::thread_name()
                }));
            }
            Ok(handlers.into_iter().map(|h| h.join().unwrap()).collect())
        })
    });
    let Ok(address) = address.recv() else {
        return Err(format!("the server did not start: {:?}", server.join()));
    };
    echo::run_clients(params, address)?;
    let threads = server
        .join()
        .map_err(|_| "the server panicked".to_string())?
        .map_err(|e| format!("server: {e}"))?;
    common::note(&common::placement("server fibers", &threads));
    Ok(())
}

/// S5: `examples/http_server`, in a process of its own, under wrk.
pub fn http_wrk(params: &Params) -> Result<(), String> {
    let (mut server, address, stderr) = wrk::start_http_server()?;
    let outcome = wrk::probe(address).and_then(|answer| {
        wrk::check_answer(&answer);
        wrk::run(params, address)
    });
    let _ = server.kill();
    let _ = server.wait();
    let stderr = stderr.join().unwrap_or_default();
    let complaints = stderr.lines().filter(|l| !l.trim().is_empty()).count();
    if complaints > 0 {
        let first = stderr.lines().next().unwrap_or_default();
        common::note(&format!(
            "examples/http_server wrote {complaints} lines to stderr, the first: {first}"
        ));
    }
    outcome
}
