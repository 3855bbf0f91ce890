//! S4 `tcp_echo_default`'s clients: plain `std::thread`s with blocking std sockets, the same
//! for every runtime's server, which only has to accept `connections x repetitions`
//! connections and echo what each sends.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use crate::common::{self, Params};

/// How many connections the server accepts in all.
pub fn connections(params: &Params) -> usize {
    params.connections * params.echo_repetitions
}

/// Runs every repetition against the server at `address` and reports round trips per
/// second and the latency percentiles over every round trip of every repetition.
pub fn run_clients(params: &Params, address: SocketAddr) -> Result<(), String> {
    let total = connections(params) * params.echo_round_trips;
    let mut latencies: Vec<u32> = Vec::with_capacity(total);
    let mut walls: Vec<Duration> = Vec::with_capacity(params.echo_repetitions);
    for _ in 0..params.echo_repetitions {
        // Every client connects, then all start together.
        let start_line = Arc::new(Barrier::new(params.connections + 1));
        let round_trips = params.echo_round_trips;
        let clients: Vec<_> = (0..params.connections)
            .map(|_| {
                let start_line = start_line.clone();
                thread::spawn(move || client(address, round_trips, &start_line))
            })
            .collect();
        start_line.wait();
        let start = Instant::now();
        for client in clients {
            let recorded = client
                .join()
                .map_err(|_| "a client thread panicked".to_string())?
                .map_err(|e| format!("client: {e}"))?;
            latencies.extend(recorded);
        }
        walls.push(start.elapsed());
    }
    report(params, latencies, &walls);
    Ok(())
}

/// One client: connects, waits for the others, then does `round_trips` sequential
/// round trips of a 64-byte message; returns each one's latency in nanoseconds.
fn client(address: SocketAddr, round_trips: usize, start_line: &Barrier) -> io::Result<Vec<u32>> {
    // Wait at the start line even when the connection failed, so that no one waits forever.
    let connected = TcpStream::connect(address).and_then(|stream| {
        stream.set_nodelay(true)?;
        Ok(stream)
    });
    start_line.wait();
    let mut stream = connected?;
    let (request, mut reply) = ([7u8; common::MESSAGE], [0u8; common::MESSAGE]);
    let mut latencies = Vec::with_capacity(round_trips);
    for _ in 0..round_trips {
        let began = Instant::now();
        stream.write_all(&request)?;
        stream.read_exact(&mut reply)?;
        let nanos = began.elapsed().as_nanos();
        latencies.push(u32::try_from(nanos).unwrap_or(u32::MAX));
    }
    Ok(latencies)
}

fn report(params: &Params, mut latencies: Vec<u32>, walls: &[Duration]) {
    latencies.sort_unstable();
    let percentile = |p: f64| {
        let index = ((latencies.len() as f64 * p) as usize).min(latencies.len() - 1);
        f64::from(latencies[index]) / 1_000.0
    };
    let wall: Duration = walls.iter().sum();
    common::report(
        "round_trips_per_s",
        latencies.len() as f64 / wall.as_secs_f64(),
    );
    common::report("p50_us", percentile(0.50));
    common::report("p99_us", percentile(0.99));
    common::report("p999_us", percentile(0.999));
    let per_repetition: Vec<String> = walls
        .iter()
        .map(|wall| {
            let rate = (params.connections * params.echo_round_trips) as f64 / wall.as_secs_f64();
            format!("{:.0}k", rate / 1_000.0)
        })
        .collect();
    common::note(&format!(
        "{} clients x {} round trips x {} repetitions; round trips/s per repetition: {}; \
         slowest round trip {:.1} ms",
        params.connections,
        params.echo_round_trips,
        params.echo_repetitions,
        per_repetition.join(", "),
        f64::from(latencies[latencies.len() - 1]) / 1e6
    ));
}
