//! A fixed number of green blocking calls, for counting their instructions with
//! callgrind, once as green is and once with its `tokio` feature (see `benches/README.md`,
//! `tokio_bridge`). Machine load does not change an instruction count, as it does a time.
//!
//! ```sh
//! cargo build -p green-benches --release --example await_blocking_loop [--features tokio]
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/await_blocking_loop woken 100000
//! ```
//!
//! Cases: `ready` (await_blocking of a ready future), `wake_once` (of a future that wakes
//! itself at its first poll and is ready at its second: the park finds the wake and does
//! not switch), `woken` (of a future that another fiber completes: a park, a wake, a
//! resume), `yield` (yield_now with no other fiber runnable). Run each with two counts and divide the difference in
//! instructions by the difference in counts: the runtime's start and end cancel out.

use green_benches::{ReadyAfterOneWake, Signal};
use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let mut args = std::env::args().skip(1);
    let case = args.next().unwrap_or_else(|| "woken".into());
    let count: u64 = args.next().map_or(100_000, |n| n.parse().expect("a count"));
    let runtime = green::Runtime::builder().workers(1).build().unwrap();
    let elapsed = runtime.run(move || {
        let start = Instant::now();
        match case.as_str() {
            "ready" => {
                for i in 0..count {
                    black_box(green::await_blocking(std::future::ready(black_box(i))));
                }
            }
            "wake_once" => {
                for i in 0..count {
                    black_box(green::await_blocking(ReadyAfterOneWake::new(black_box(i))));
                }
            }
            "woken" => {
                let (mine, theirs) = (Arc::new(Signal::default()), Arc::new(Signal::default()));
                let (mine2, theirs2) = (mine.clone(), theirs.clone());
                let other = green::spawn(move || {
                    for _ in 0..count {
                        green::await_blocking(theirs2.wait());
                        mine2.notify();
                    }
                });
                for _ in 0..count {
                    theirs.notify();
                    green::await_blocking(mine.wait());
                }
                other.join().unwrap();
            }
            "yield" => {
                for _ in 0..count {
                    green::yield_now();
                }
            }
            other => panic!("unknown case {other}: ready, wake_once, woken or yield"),
        }
        start.elapsed()
    });
    let feature = if cfg!(feature = "tokio") {
        "with the tokio feature"
    } else {
        "plain"
    };
    println!(
        "{count} iterations in {elapsed:?} ({:.1} ns each), {feature}",
        elapsed.as_nanos() as f64 / count.max(1) as f64
    );
}
