//! Parks many fibers at once and reports what each costs: creation time and resident
//! memory.
//!
//! ```sh
//! cargo run --release --example park_many -- 100000
//! # a million needs about 2 million memory mappings (two per guarded stack):
//! sudo sysctl -w vm.max_map_count=2200000
//! cargo run --release --example park_many -- 1000000
//! ```
//!
//! Every fiber counts itself in, then waits on one shared channel; closing the channel
//! releases them all. Past `vm.max_map_count`, the fibers that cannot get a stack end with
//! a `JoinError` that names the limit, and the example says so (and exits with status 1)
//! instead of crashing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Resident memory of this process in bytes, from /proc/self/statm.
fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn main() {
    let count: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(100_000);
    let runtime = green::Runtime::new().expect("cannot start the runtime");
    let (release, gate) = green::sync::channel::<()>();
    let parked = Arc::new(AtomicUsize::new(0));

    let before = resident_bytes();
    let start = Instant::now();
    let handles: Vec<_> = (0..count)
        .map(|_| {
            let (gate, parked) = (gate.clone(), parked.clone());
            runtime.spawn(move || {
                parked.fetch_add(1, Ordering::Relaxed);
                let _ = gate.recv(); // parks until the channel closes
            })
        })
        .collect();
    drop(gate);

    // Wait until every fiber has counted itself in (or failed to start).
    let mut failed_early = 0;
    while parked.load(Ordering::Relaxed) + failed_early < count {
        std::thread::sleep(Duration::from_millis(10));
        failed_early = handles.iter().filter(|h| h.is_finished()).count();
    }
    let created = start.elapsed();
    std::thread::sleep(Duration::from_millis(100)); // let the last ones reach their park
    let during = resident_bytes();
    let live = parked.load(Ordering::Relaxed);

    drop(release);
    let mut errors = 0;
    let mut first_error = None;
    for handle in handles {
        if let Err(error) = handle.join() {
            errors += 1;
            first_error.get_or_insert_with(|| error.to_string());
        }
    }
    println!("fibers parked at once: {live} of {count}");
    println!(
        "create + park: {:.0} ns per fiber",
        created.as_nanos() as f64 / count as f64
    );
    if live > 0 {
        let per_fiber = during.saturating_sub(before) as f64 / live as f64;
        println!(
            "resident memory: {:.2} KiB per parked fiber",
            per_fiber / 1024.0
        );
    }
    if let Some(error) = first_error {
        println!("{errors} fibers could not start: {error}");
        std::process::exit(1);
    }
}
