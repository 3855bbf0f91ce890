//! green's executor side by side with tokio's current-thread runtime and async-executor.
//!
//! Run with `cargo bench -p green-benches --bench executor`; see `benches/README.md` for
//! what each group measures. After the criterion groups, `main` measures timer lateness
//! (not a criterion timing) and prints it.
//!
//! Every measured loop runs inside a task of the executor under test (for green, a fiber
//! started by `Runtime::run`), and times itself with `iter_custom`, so that starting the
//! runtime, entering it from the benchmark thread and leaving it are not measured. green
//! runs with one worker (`Builder::workers(1)`), the counterpart of tokio's current-thread
//! runtime and of a `LocalExecutor` driven by one thread.

use green_benches::Signal;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_executor::{Executor, LocalExecutor};
use criterion::{Criterion, criterion_group};
use futures_lite::future;

/// A green runtime with one worker: the counterpart of tokio's current-thread runtime.
fn green_runtime() -> green::Runtime {
    green::Runtime::builder()
        .workers(1)
        .build()
        .expect("cannot start a green runtime")
}

/// A current-thread tokio runtime with its timer enabled (green always has its reactor).
fn tokio_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("cannot build a tokio runtime")
}

/// Runs `fut` as a task spawned on `rt` and returns its output.
fn tokio_task<F>(rt: &tokio::runtime::Runtime, fut: F) -> F::Output
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    rt.block_on(async { tokio::spawn(fut).await.expect("the task panicked") })
}

/// A `LocalExecutor` that lives for the rest of the process, so tasks can spawn on it.
fn local_executor() -> &'static LocalExecutor<'static> {
    Box::leak(Box::new(LocalExecutor::new()))
}

/// Runs `fut` as a task spawned on `ex`, driven on this thread, and returns its output.
fn local_task<F>(ex: &'static LocalExecutor<'static>, fut: F) -> F::Output
where
    F: Future + 'static,
    F::Output: 'static,
{
    future::block_on(ex.run(ex.spawn(fut)))
}

/// Spawn a task that returns a value, and join it: one spawn + run + join per iteration.
fn spawn_join(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_join");

    group.bench_function("green", |b| {
        let rt = green_runtime();
        b.iter_custom(|iters| {
            rt.run(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(green::spawn(|| black_box(1u64)).join().unwrap());
                }
                start.elapsed()
            })
        });
    });

    // `Runtime::new()`: one worker per core, idle workers steal tasks that have not started.
    group.bench_function("green/default_runtime", |b| {
        let rt = green::Runtime::new().expect("cannot start a green runtime");
        b.iter_custom(|iters| {
            rt.run(move || {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(green::spawn(|| black_box(1u64)).join().unwrap());
                }
                start.elapsed()
            })
        });
    });

    // The loop in a task spawned on the runtime, as green's loop is in a fiber.
    group.bench_function("tokio/task", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(tokio::spawn(async { black_box(1u64) }).await.unwrap());
                }
                start.elapsed()
            })
        });
    });

    // tokio's multi-thread runtime, one worker per core: the counterpart of
    // `green/default_runtime`.
    group.bench_function("tokio/multi_thread", |b| {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .expect("cannot build a tokio runtime");
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(tokio::spawn(async { black_box(1u64) }).await.unwrap());
                }
                start.elapsed()
            })
        });
    });

    // The loop in the `block_on` future itself, as in `#[tokio::main]`.
    group.bench_function("tokio/block_on", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            rt.block_on(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(tokio::spawn(async { black_box(1u64) }).await.unwrap());
                }
                start.elapsed()
            })
        });
    });

    group.bench_function("async-executor/task", |b| {
        let ex = local_executor();
        b.iter_custom(|iters| {
            local_task(ex, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(ex.spawn(async { black_box(1u64) }).await);
                }
                start.elapsed()
            })
        });
    });

    // The loop in the future handed to `LocalExecutor::run`, polled by `block_on` itself.
    group.bench_function("async-executor/block_on", |b| {
        let ex = local_executor();
        b.iter_custom(|iters| {
            future::block_on(ex.run(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(ex.spawn(async { black_box(1u64) }).await);
                }
                start.elapsed()
            }))
        });
    });

    // The `Send` executor, whose spawns are `Send` like green's, driven by one thread.
    group.bench_function("async-executor/executor_task", |b| {
        let ex: &'static Executor<'static> = Box::leak(Box::new(Executor::new()));
        b.iter_custom(|iters| {
            future::block_on(ex.run(ex.spawn(async move {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(ex.spawn(async { black_box(1u64) }).await);
                }
                start.elapsed()
            })))
        });
    });

    group.finish();
}

/// One yield with one task running (`one`), and with two tasks yielding in turn (`two`:
/// an iteration is one yield by each of them).
fn yield_now(c: &mut Criterion) {
    let mut group = c.benchmark_group("yield_now");

    group.bench_function("one/green", |b| {
        let rt = green_runtime();
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

    group.bench_function("one/tokio", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    tokio::task::yield_now().await;
                }
                start.elapsed()
            })
        });
    });

    group.bench_function("one/async-executor", |b| {
        let ex = local_executor();
        b.iter_custom(|iters| {
            local_task(ex, async move {
                let start = Instant::now();
                for _ in 0..iters {
                    future::yield_now().await;
                }
                start.elapsed()
            })
        });
    });

    group.bench_function("two/green", |b| {
        let rt = green_runtime();
        b.iter_custom(|iters| {
            rt.run(move || {
                let other = green::spawn(move || {
                    for _ in 0..iters {
                        green::yield_now();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    green::yield_now();
                }
                other.join().unwrap();
                start.elapsed()
            })
        });
    });

    group.bench_function("two/tokio", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let other = tokio::spawn(async move {
                    for _ in 0..iters {
                        tokio::task::yield_now().await;
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    tokio::task::yield_now().await;
                }
                other.await.unwrap();
                start.elapsed()
            })
        });
    });

    group.bench_function("two/async-executor", |b| {
        let ex = local_executor();
        b.iter_custom(|iters| {
            local_task(ex, async move {
                let other = ex.spawn(async move {
                    for _ in 0..iters {
                        future::yield_now().await;
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    future::yield_now().await;
                }
                other.await;
                start.elapsed()
            })
        });
    });

    group.finish();
}

/// Two tasks pass a message back and forth over two channels of capacity 1: one round
/// trip per iteration.
fn ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("ping_pong");

    group.bench_function("green/async-channel", |b| {
        let rt = green_runtime();
        b.iter_custom(|iters| {
            rt.run(move || {
                let (ping_tx, ping_rx) = async_channel::bounded::<u64>(1);
                let (pong_tx, pong_rx) = async_channel::bounded::<u64>(1);
                let echo = green::spawn(move || {
                    while let Ok(value) = green::await_blocking(ping_rx.recv()) {
                        green::await_blocking(pong_tx.send(value)).unwrap();
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    green::await_blocking(ping_tx.send(i)).unwrap();
                    black_box(green::await_blocking(pong_rx.recv()).unwrap());
                }
                let elapsed = start.elapsed();
                drop(ping_tx);
                echo.join().unwrap();
                elapsed
            })
        });
    });

    group.bench_function("green/green-sync", |b| {
        let rt = green_runtime();
        b.iter_custom(|iters| {
            rt.run(move || {
                let (ping_tx, ping_rx) = green::sync::bounded::<u64>(1);
                let (pong_tx, pong_rx) = green::sync::bounded::<u64>(1);
                let echo = green::spawn(move || {
                    while let Ok(value) = ping_rx.recv() {
                        pong_tx.send(value).unwrap();
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    ping_tx.send(i).unwrap();
                    black_box(pong_rx.recv().unwrap());
                }
                let elapsed = start.elapsed();
                drop(ping_tx);
                echo.join().unwrap();
                elapsed
            })
        });
    });

    group.bench_function("tokio/mpsc", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let (ping_tx, mut ping_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let (pong_tx, mut pong_rx) = tokio::sync::mpsc::channel::<u64>(1);
                let echo = tokio::spawn(async move {
                    while let Some(value) = ping_rx.recv().await {
                        pong_tx.send(value).await.unwrap();
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    ping_tx.send(i).await.unwrap();
                    black_box(pong_rx.recv().await.unwrap());
                }
                let elapsed = start.elapsed();
                drop(ping_tx);
                echo.await.unwrap();
                elapsed
            })
        });
    });

    group.bench_function("tokio/async-channel", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let (ping_tx, ping_rx) = async_channel::bounded::<u64>(1);
                let (pong_tx, pong_rx) = async_channel::bounded::<u64>(1);
                let echo = tokio::spawn(async move {
                    while let Ok(value) = ping_rx.recv().await {
                        pong_tx.send(value).await.unwrap();
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    ping_tx.send(i).await.unwrap();
                    black_box(pong_rx.recv().await.unwrap());
                }
                let elapsed = start.elapsed();
                drop(ping_tx);
                echo.await.unwrap();
                elapsed
            })
        });
    });

    group.bench_function("async-executor/async-channel", |b| {
        let ex = local_executor();
        b.iter_custom(|iters| {
            local_task(ex, async move {
                let (ping_tx, ping_rx) = async_channel::bounded::<u64>(1);
                let (pong_tx, pong_rx) = async_channel::bounded::<u64>(1);
                let echo = ex.spawn(async move {
                    while let Ok(value) = ping_rx.recv().await {
                        pong_tx.send(value).await.unwrap();
                    }
                });
                let start = Instant::now();
                for i in 0..iters {
                    ping_tx.send(i).await.unwrap();
                    black_box(pong_rx.recv().await.unwrap());
                }
                let elapsed = start.elapsed();
                drop(ping_tx);
                echo.await;
                elapsed
            })
        });
    });

    group.finish();
}

/// A task waits on a pending future (a [`Signal`]) that another task completes. The two
/// take turns: each notifies the other, then waits. An iteration is one round (two
/// wake + resume), and the reported time is halved: it is the cost of one pending poll,
/// park, wake by another task, resume and ready poll.
fn await_pending(c: &mut Criterion) {
    let mut group = c.benchmark_group("await_pending");

    group.bench_function("green", |b| {
        let rt = green_runtime();
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

    group.bench_function("tokio", |b| {
        let rt = tokio_runtime();
        b.iter_custom(|iters| {
            tokio_task(&rt, async move {
                let (mine, theirs) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
                let (mine2, theirs2) = (mine.clone(), theirs.clone());
                let other = tokio::spawn(async move {
                    for _ in 0..iters {
                        theirs2.wait().await;
                        mine2.notify();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    theirs.notify();
                    mine.wait().await;
                }
                let elapsed = start.elapsed();
                other.await.unwrap();
                elapsed / 2
            })
        });
    });

    group.bench_function("async-executor", |b| {
        let ex = local_executor();
        b.iter_custom(|iters| {
            local_task(ex, async move {
                let (mine, theirs) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
                let (mine2, theirs2) = (mine.clone(), theirs.clone());
                let other = ex.spawn(async move {
                    for _ in 0..iters {
                        theirs2.wait().await;
                        mine2.notify();
                    }
                });
                let start = Instant::now();
                for _ in 0..iters {
                    theirs.notify();
                    mine.wait().await;
                }
                let elapsed = start.elapsed();
                other.await;
                elapsed / 2
            })
        });
    });

    group.finish();
}

/// Sleeps measured for timer lateness, and how long each asks for.
const SLEEPS: usize = 200;
/// The duration each sleep asks for.
const SLEEP: Duration = Duration::from_millis(1);

/// Sleeps `SLEEPS` times for `SLEEP` in a green fiber, a tokio task and on the plain
/// thread, and prints the median, p99 and maximum of (actual - requested) for each.
fn timer_lateness() {
    let green = green_runtime().run(|| {
        (0..SLEEPS)
            .map(|_| {
                let start = Instant::now();
                green::sleep(SLEEP);
                start.elapsed()
            })
            .collect::<Vec<_>>()
    });

    let tokio = tokio_task(&tokio_runtime(), async {
        let mut samples = Vec::with_capacity(SLEEPS);
        for _ in 0..SLEEPS {
            let start = Instant::now();
            tokio::time::sleep(SLEEP).await;
            samples.push(start.elapsed());
        }
        samples
    });

    let thread = (0..SLEEPS)
        .map(|_| {
            let start = Instant::now();
            std::thread::sleep(SLEEP);
            start.elapsed()
        })
        .collect::<Vec<_>>();

    println!();
    println!(
        "timer_lateness: {SLEEPS} sleeps of {} ms each, lateness = actual - requested",
        SLEEP.as_millis()
    );
    println!("  {:<26} {:>12} {:>12} {:>12}", "", "median", "p99", "max");
    for (name, samples) in [
        ("green::sleep (fiber)", green),
        ("tokio::time::sleep (task)", tokio),
        ("std::thread::sleep", thread),
    ] {
        let (median, p99, max) = lateness(samples);
        println!(
            "  {name:<26} {:>9.1} µs {:>9.1} µs {:>9.1} µs",
            micros(median),
            micros(p99),
            micros(max)
        );
    }
}

/// Median, 99th percentile and maximum lateness of sleeps of `SLEEP`.
fn lateness(samples: Vec<Duration>) -> (Duration, Duration, Duration) {
    let mut late: Vec<Duration> = samples
        .into_iter()
        .map(|d| d.saturating_sub(SLEEP))
        .collect();
    late.sort_unstable();
    let at = |q: f64| late[((late.len() as f64 * q).ceil() as usize).clamp(1, late.len()) - 1];
    (at(0.5), at(0.99), at(1.0))
}

/// A duration in microseconds.
fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Short enough that the whole run, with the lateness report, stays near two minutes.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_millis(2500))
        .sample_size(50)
}

criterion_group! {
    name = benches;
    config = config();
    targets = spawn_join, yield_now, ping_pong, await_pending
}

/// `criterion_main!` plus the lateness report, which runs unless the command line lists
/// benchmarks (`--list`) or has a filter that `timer_lateness` does not match.
fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();

    let args: Vec<String> = std::env::args().skip(1).collect();
    let listing = args.iter().any(|a| a == "--list");
    let filtered_out = args
        .iter()
        .filter(|a| !a.starts_with('-'))
        .any(|filter| !"timer_lateness".contains(filter.as_str()));
    if !listing && !filtered_out {
        timer_lateness();
    }
}
