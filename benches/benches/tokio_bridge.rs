//! What the `tokio` feature costs green's blocking calls: run once as it is and once with
//! `--features tokio`, and compare the two rows of each benchmark.
//!
//! ```sh
//! cargo bench -p green-benches --bench tokio_bridge
//! cargo bench -p green-benches --bench tokio_bridge --features tokio
//! ```
//!
//! The benchmark ids end in `/plain` or `/tokio_feature`, so criterion keeps both runs.
//! With the feature, a worker thread enters the tokio handle once, for its whole life:
//! nothing is added to a poll. What each switch out of a fiber adds is the check that
//! the fiber left any other tokio runtime it entered (`tokio::runtime::Handle::try_current`
//! and a comparison of runtime ids), so the figures to compare are those that park.

use green_benches::{ReadyAfterOneWake, Signal};
use std::hint::black_box;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};

/// Which build this is, for the benchmark ids.
const BUILD: &str = if cfg!(feature = "tokio") {
    "tokio_feature"
} else {
    "plain"
};

/// A runtime of `workers` workers.
fn runtime(workers: usize) -> green::Runtime {
    green::Runtime::builder()
        .workers(workers)
        .build()
        .expect("cannot start a green runtime")
}

fn await_blocking(c: &mut Criterion) {
    let mut group = c.benchmark_group("await_blocking");

    // A future that is ready at once: a poll and no switch.
    group.bench_function(format!("ready/{BUILD}"), |b| {
        let rt = runtime(1);
        b.iter_custom(|iters| {
            rt.run(move || {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(green::await_blocking(std::future::ready(black_box(i))));
                }
                start.elapsed()
            })
        });
    });

    // A future that is ready after one wake: its first poll wakes it and returns
    // `Pending`, its second returns `Ready`. The wake comes before the park, so the
    // fiber does not switch out: a pending poll, a park that finds the wake, a ready poll.
    group.bench_function(format!("ready_after_one_wake/{BUILD}"), |b| {
        let rt = runtime(1);
        b.iter_custom(|iters| {
            rt.run(move || {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(green::await_blocking(ReadyAfterOneWake::new(black_box(i))));
                }
                start.elapsed()
            })
        });
    });

    // A future that another fiber completes: a pending poll, a park (the switch out),
    // a wake, a resume and a ready poll. Two fibers take turns; the time is per wait.
    group.bench_function(format!("woken_by_another_fiber/{BUILD}"), |b| {
        let rt = runtime(1);
        b.iter_custom(|iters| {
            rt.run(move || {
                let (mine, theirs) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
                let (mine2, theirs2) = (mine.clone(), theirs.clone());
                let other = green::spawn(move || {
                    for _ in 0..iters {
                        green::await_blocking(theirs2.wait());
                        mine2.notify();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    theirs.notify();
                    green::await_blocking(mine.wait());
                }
                let elapsed = start.elapsed();
                other.join().unwrap();
                elapsed / 2
            })
        });
    });
    group.finish();
}

fn yield_now(c: &mut Criterion) {
    let mut group = c.benchmark_group("yield_now");

    // The cheapest switch out: no other fiber is runnable, so the worker resumes the
    // same one at once.
    group.bench_function(format!("one_worker/{BUILD}"), |b| {
        let rt = runtime(1);
        b.iter_custom(|iters| {
            rt.run(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    green::yield_now();
                }
                start.elapsed()
            })
        });
    });

    // The same on two workers at once, a fiber each: every check takes and drops a
    // reference to the one tokio handle both workers share.
    group.bench_function(format!("two_workers_at_once/{BUILD}"), |b| {
        let rt = runtime(2);
        b.iter_custom(|iters| {
            let barrier = Arc::new(Barrier::new(2));
            // Spawned from this thread: one on each worker, in turn.
            let fibers: Vec<_> = (0..2)
                .map(|_| {
                    let barrier = barrier.clone();
                    rt.spawn(move || {
                        green::unblock(move || barrier.wait());
                        let start = Instant::now();
                        for _ in 0..iters {
                            green::yield_now();
                        }
                        start.elapsed()
                    })
                })
                .collect();
            fibers
                .into_iter()
                .map(|fiber| fiber.join().unwrap())
                .max()
                .unwrap()
        });
    });
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = await_blocking, yield_now
}
criterion_main!(benches);
