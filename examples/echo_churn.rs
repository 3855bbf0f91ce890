//! A load generator for `echo_server` that churns connections: each client thread connects,
//! makes a few round trips of pseudo-random bytes, checks that each echo has the checksum of
//! what it sent, closes its half, waits for the server to close the other, and starts again,
//! until the time is up. `scripts/soak.sh` runs it.
//!
//! ```sh
//! cargo run --release --example echo_server 127.0.0.1:7878 &
//! cargo run --release --example echo_churn -- 127.0.0.1:7878 30 4   # address, seconds, threads
//! ```
//!
//! It prints `connections C round_trips R failures F` and exits with status 1 if any
//! connection failed: refused, reset, timed out, a short or wrong echo, or no close from the
//! server. The clients are plain threads on std's blocking sockets, so that only the server
//! is under test. Each connection leaves a socket in TIME_WAIT on the client side; on
//! loopback Linux reuses those (`net.ipv4.tcp_tw_reuse`, 2 by default), so the ephemeral
//! ports do not run out.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

/// The most round trips one connection makes.
const MAX_ROUND_TRIPS: u64 = 4;

/// The largest message, small enough that the echo fits the socket buffers while the whole
/// message is still being written (the client reads only after writing).
const MAX_MESSAGE: usize = 8 * 1024;

/// How long a connect, read or write may take before it counts as a failure.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// How many failures are described on stderr; the rest are only counted.
const FAILURES_SHOWN: u64 = 10;

/// What all client threads count together.
#[derive(Default)]
struct Totals {
    /// Connections that made all their round trips and saw the server close.
    connections: AtomicU64,
    /// Round trips whose echo matched.
    round_trips: AtomicU64,
    /// Connections that failed at any step.
    failures: AtomicU64,
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let address = args.next().unwrap_or_else(|| "127.0.0.1:7878".into());
    let seconds = number(args.next(), 10, "seconds");
    let threads = number(args.next(), 4, "threads");
    let Some(address) = address.to_socket_addrs().ok().and_then(|mut a| a.next()) else {
        eprintln!("echo_churn: cannot resolve {address}");
        return ExitCode::from(2);
    };

    let deadline = Instant::now() + Duration::from_secs(seconds);
    let totals = Totals::default();
    thread::scope(|scope| {
        for id in 0..threads {
            let totals = &totals;
            scope.spawn(move || churn(address, deadline, id, totals));
        }
    });

    let failures = totals.failures.load(Ordering::Relaxed);
    println!(
        "connections {} round_trips {} failures {}",
        totals.connections.load(Ordering::Relaxed),
        totals.round_trips.load(Ordering::Relaxed),
        failures,
    );
    if failures > 0 {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One client thread: connections one after another until `deadline`.
fn churn(address: SocketAddr, deadline: Instant, id: u64, totals: &Totals) {
    // A different sequence per thread, the same on every run.
    let mut random = Random(0x9E37_79B9_7F4A_7C15 ^ (id + 1));
    let mut sent = vec![0; MAX_MESSAGE];
    let mut received = vec![0; MAX_MESSAGE];
    while Instant::now() < deadline {
        let round_trips = 1 + random.next() % MAX_ROUND_TRIPS;
        match connection(address, round_trips, &mut random, &mut sent, &mut received) {
            Ok(()) => {
                totals.connections.fetch_add(1, Ordering::Relaxed);
                totals.round_trips.fetch_add(round_trips, Ordering::Relaxed);
            }
            Err(error) => {
                if totals.failures.fetch_add(1, Ordering::Relaxed) < FAILURES_SHOWN {
                    eprintln!("echo_churn: client {id}: {error}");
                }
                // Do not spin on a refused connect.
                thread::sleep(Duration::from_millis(10));
            }
        }
    }
}

/// Connects, makes `round_trips` checked round trips, then closes in order: our half
/// first, then we wait to read the server's end of stream.
fn connection(
    address: SocketAddr,
    round_trips: u64,
    random: &mut Random,
    sent: &mut [u8],
    received: &mut [u8],
) -> io::Result<()> {
    let mut stream = TcpStream::connect_timeout(&address, IO_TIMEOUT).map_err(at("connect"))?;
    stream.set_nodelay(true)?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    for _ in 0..round_trips {
        let len = 1 + (random.next() as usize) % MAX_MESSAGE;
        random.fill(&mut sent[..len]);
        stream.write_all(&sent[..len]).map_err(at("write"))?;
        stream
            .read_exact(&mut received[..len])
            .map_err(at("read the echo"))?;
        let (want, got) = (checksum(&sent[..len]), checksum(&received[..len]));
        if want != got {
            return Err(io::Error::other(format!(
                "echo of {len} bytes has checksum {got:#018x}, sent {want:#018x}"
            )));
        }
    }
    stream.shutdown(Shutdown::Write).map_err(at("shutdown"))?;
    let extra = stream
        .read(&mut received[..1])
        .map_err(at("wait for the server's close"))?;
    if extra > 0 {
        return Err(io::Error::other("bytes after the last echo"));
    }
    Ok(())
}

/// Prefixes an error with the step that failed.
fn at(step: &'static str) -> impl Fn(io::Error) -> io::Error {
    move |error| io::Error::new(error.kind(), format!("{step}: {error}"))
}

/// A command-line number, or `default` when the argument is absent.
fn number(arg: Option<String>, default: u64, what: &str) -> u64 {
    arg.map_or(default, |arg| {
        arg.parse()
            .unwrap_or_else(|_| panic!("{what}: expected a number, got {arg:?}"))
    })
}

/// FNV-1a, 64 bits.
fn checksum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// xorshift64: message sizes, contents and round-trip counts.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn fill(&mut self, bytes: &mut [u8]) {
        for chunk in bytes.chunks_mut(8) {
            let word = self.next().to_le_bytes();
            chunk.copy_from_slice(&word[..chunk.len()]);
        }
    }
}
