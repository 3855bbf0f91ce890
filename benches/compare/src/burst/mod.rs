//! The third table: issue 14's burst on each system's default runtime, a process per
//! repetition.
//!
//! The main task spawns `Params::burst_tasks` tasks (30 000); each announces itself on a
//! shared unbounded channel, then parks on a channel of its own. Once every announcement
//! is in, the main task reads the resident memory, then sends each task one value and
//! joins them all. Three figures per task: create + park (from the first spawn to the
//! last announcement), wake + finish + join (from the first send to the last join) and
//! resident memory per parked task (its stack, its task and its channel).
//!
//! | runtime            | main task                          | channels                       |
//! |--------------------|------------------------------------|--------------------------------|
//! | `green`            | `green::run`'s fiber               | `async_channel`, `await_blocking` |
//! | `may`              | a coroutine, may's default config  | `may::sync::mpsc` (blocking)   |
//! | `tokio-mt`         | `Runtime::new()`'s `block_on`      | `async_channel`, `.await`      |
//! | `async-executor-1` | a `LocalExecutor`'s `run`          | `async_channel`, `.await`      |

mod async_executor;
mod green;
mod may;
mod tokio;

use std::time::{Duration, Instant};

use crate::Scenario;
use crate::child::Outcomes;
use crate::common::{self, Params};
use crate::table::{self, Columns, Row, thousands};

/// The name on the command line and in the tables.
pub const NAME: &str = "burst";

/// The burst with a million fibers, green only: run only when named (`--only burst_1m`),
/// and only where `vm.max_map_count` allows that many stacks.
pub const MILLION: &str = "burst_1m";

/// The runtimes: (name on the command line, column header).
pub const RUNTIMES: [(&str, &str); 4] = [
    ("green", "green default"),
    ("may", "may default"),
    ("tokio-mt", "tokio-mt"),
    ("async-executor-1", "async-executor (1 thread)"),
];

/// The code of the burst on `runtime`.
pub fn scenario(name: &str, runtime: &str) -> Option<Scenario> {
    if name == MILLION {
        return (runtime == "green").then_some(green::burst_million as Scenario);
    }
    if name != NAME {
        return None;
    }
    let runs: [(&str, Scenario); 4] = [
        ("green", green::burst),
        ("may", may::burst),
        ("tokio-mt", tokio::burst_multi_thread),
        ("async-executor-1", async_executor::burst),
    ];
    runs.iter()
        .find(|(r, _)| *r == runtime)
        .map(|(_, run)| *run)
}

/// How long a child may run before it counts as hung.
pub const TIMEOUT: Duration = Duration::from_secs(180);

/// The burst's clock and resident-memory readings, taken by the main task.
pub struct BurstMeter {
    /// Tasks spawned.
    tasks: usize,
    /// Resident bytes before the first spawn.
    resident_before: usize,
    /// Start of the phase being timed.
    start: Instant,
    /// First spawn to last announcement.
    created: Duration,
    /// Resident bytes once every task announced itself.
    resident_parked: usize,
}

impl BurstMeter {
    /// Call right before the first spawn.
    pub fn start(tasks: usize) -> BurstMeter {
        let resident_before = common::resident_bytes();
        BurstMeter {
            tasks,
            resident_before,
            start: Instant::now(),
            created: Duration::ZERO,
            resident_parked: 0,
        }
    }

    /// Call once every task announced itself, before the first send.
    pub fn all_announced(&mut self) {
        self.created = self.start.elapsed();
        self.resident_parked = common::resident_bytes();
        self.start = Instant::now();
    }

    /// Call once every task was joined; prints the three figures.
    pub fn all_joined(self) {
        let ended = self.start.elapsed();
        let per_task = |d: Duration| d.as_nanos() as f64 / 1_000.0 / self.tasks as f64;
        let grown = self.resident_parked.saturating_sub(self.resident_before);
        common::report("create_us", per_task(self.created));
        common::report("wake_us", per_task(ended));
        common::report("kib_per_task", grown as f64 / 1024.0 / self.tasks as f64);
    }
}

fn rows(params: &Params) -> Vec<Row> {
    let tasks = thousands(params.burst_tasks as f64);
    let million = thousands(params.burst_million_tasks as f64);
    let green_only = |key, label: String| Row::new(MILLION, key, label).without_ratio();
    vec![
        Row::new(
            NAME,
            "create_us",
            format!("burst: create + park, µs per task ({tasks} at once) ↓"),
        ),
        Row::new(
            NAME,
            "wake_us",
            "burst: wake + finish + join, µs per task ↓".into(),
        ),
        Row::new(
            NAME,
            "kib_per_task",
            "burst: resident memory per parked task (its channel included), KiB ↓".into(),
        ),
        green_only(
            "create_us",
            format!("burst_1m: create + park, µs per task ({million} at once) ↓"),
        ),
        green_only(
            "wake_us",
            "burst_1m: wake + finish + join, µs per task ↓".into(),
        ),
        green_only(
            "kib_per_task",
            "burst_1m: resident memory per parked task, KiB ↓".into(),
        ),
    ]
}

/// The table, its notes and the spread of every cell over the processes.
pub fn render(params: &Params, runs: usize, outcomes: &Outcomes) -> String {
    let columns = Columns {
        runtimes: &RUNTIMES,
        ratios: &[
            ("may", "may"),
            ("tokio-mt", "tokio-mt"),
            ("async-executor-1", "async-executor"),
        ],
    };
    let rows = rows(params);
    let mut out = String::new();
    table::table(&mut out, &columns, &rows, outcomes);
    out.push_str("\nNotes:\n\n");
    out.push_str(&format!(
        "* Every cell is the median of {runs} processes, each one fresh runtime and one \
         burst (the lowest and highest are below). green default: `green::run(..)`, \
         `green::spawn`, `green::await_blocking` on `async_channel`; may default: \
         `may::coroutine::spawn` with may's default configuration (one pinned worker per CPU, \
         32 KiB stacks), its main task a coroutine, and may's own blocking channels \
         (`may::sync::mpsc`: unbounded, as may has no bounded one) since may cannot wait \
         on a future; tokio-mt: `Runtime::new()`, the main task `block_on`'s future; \
         async-executor (1 thread): a `LocalExecutor` run by one `block_on`. The \
         async runtimes use `async_channel` as green does.\n"
    ));
    if params.burst_capped {
        out.push_str(&format!(
            "* vm.max_map_count ({}) is too low for 30,000 guarded stacks: {} tasks. \
             `sysctl -w vm.max_map_count=262144` (as root) allows the full count.\n",
            thousands(common::max_map_count() as f64),
            thousands(params.burst_tasks as f64)
        ));
    }
    table::child_notes(&mut out, &[NAME, MILLION], &RUNTIMES, outcomes, |_, _| {
        false
    });
    table::spread_table(&mut out, &columns, &rows, runs, outcomes);
    out
}
