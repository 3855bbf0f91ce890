//! The second table: issue 13's scenarios S1-S5 on each system's **default** runtime, as a
//! new user runs it: green's `green::run` / `Runtime::new()` (one worker per CPU,
//! unpinned, `green::spawn`), tokio's `Runtime::new()` (multi-thread) and, where the issue
//! gives it, its current-thread runtime, and async-executor on one thread.
//!
//! | id | scenario            | runtimes                                   |
//! |----|---------------------|--------------------------------------------|
//! | S1 | `turns`             | green, tokio-mt                            |
//! | S2 | `ping_pong_default` | green, tokio-mt, tokio-ct                  |
//! | S3 | `spawn_then_join`   | green, tokio-mt, tokio-ct, async-executor-1 |
//! | S4 | `tcp_echo_default`  | green, tokio-mt, tokio-ct                  |
//! | S5 | `http_wrk`          | green (examples/http_server), tokio-mt     |

mod async_executor;
mod echo;
mod green;
mod tokio;
mod turns;
mod wrk;

use std::time::Duration;

use crate::Scenario;
use crate::child::Outcomes;
use crate::common::{self, Params, Seen};
use crate::table::{self, Columns, Row, format_value, thousands};

/// The runtimes: (name on the command line, column header).
pub const RUNTIMES: [(&str, &str); 4] = [
    ("green", "green default"),
    ("tokio-mt", "tokio-mt"),
    ("tokio-ct", "tokio-ct"),
    ("async-executor-1", "async-executor (1 thread)"),
];

/// One of S1-S5.
pub struct DefaultScenario {
    /// `s1` ... `s5`, as `--only` accepts it.
    pub id: &'static str,
    /// The name on the command line and in the notes.
    pub name: &'static str,
    /// The runtimes it runs on, each with its code.
    pub runtimes: &'static [(&'static str, Scenario)],
}

/// The scenarios, in order.
pub const SCENARIOS: [DefaultScenario; 5] = [
    DefaultScenario {
        id: "s1",
        name: "turns",
        runtimes: &[
            ("green", green::turns),
            ("tokio-mt", tokio::turns_multi_thread),
        ],
    },
    DefaultScenario {
        id: "s2",
        name: "ping_pong_default",
        runtimes: &[
            ("green", green::ping_pong),
            ("tokio-mt", tokio::ping_pong_multi_thread),
            ("tokio-ct", tokio::ping_pong_current_thread),
        ],
    },
    DefaultScenario {
        id: "s3",
        name: "spawn_then_join",
        runtimes: &[
            ("green", green::spawn_then_join),
            ("tokio-mt", tokio::spawn_then_join_multi_thread),
            ("tokio-ct", tokio::spawn_then_join_current_thread),
            ("async-executor-1", async_executor::spawn_then_join),
        ],
    },
    DefaultScenario {
        id: "s4",
        name: "tcp_echo_default",
        runtimes: &[
            ("green", green::tcp_echo),
            ("tokio-mt", tokio::tcp_echo_multi_thread),
            ("tokio-ct", tokio::tcp_echo_current_thread),
        ],
    },
    DefaultScenario {
        id: "s5",
        name: "http_wrk",
        runtimes: &[("green", green::http_wrk), ("tokio-mt", tokio::http_wrk)],
    },
];

/// The code of scenario `name` on `runtime`, if it runs there.
pub fn scenario(name: &str, runtime: &str) -> Option<Scenario> {
    let scenario = SCENARIOS.iter().find(|s| s.name == name)?;
    let (_, run) = scenario.runtimes.iter().find(|(r, _)| *r == runtime)?;
    Some(*run)
}

/// How long a child may run before it counts as hung.
pub fn timeout(name: &str, params: &Params) -> Duration {
    match name {
        "http_wrk" => params.wrk_duration + Duration::from_secs(60),
        _ => Duration::from_secs(180),
    }
}

/// What S5 needs before any child runs: wrk, and `examples/http_server` built. Returns
/// notes for the table (what was installed, what failed).
pub fn prepare(names: &[&str]) -> Vec<String> {
    if !names.contains(&"http_wrk") {
        return Vec::new();
    }
    [wrk::install_if_missing(), wrk::build_http_server()]
        .into_iter()
        .flatten()
        .collect()
}

/// Reports S2's figure and where A and B ran.
fn report_ping_pong(elapsed: Duration, round_trips: u64, a: &Seen, b: &Seen) {
    common::report_per_op("ns_per_round_trip", elapsed, round_trips);
    common::note(&format!(
        "A ran on [{}], B on [{}]",
        a.describe(),
        b.describe()
    ));
}

/// Reports the median of S3's runs, in ns per task, and every run's figure.
fn report_spawn_then_join(times: &[Duration], tasks: usize) {
    let mut per_task: Vec<f64> = times
        .iter()
        .map(|t| t.as_nanos() as f64 / tasks as f64)
        .collect();
    let all: Vec<String> = per_task.iter().map(|ns| format!("{ns:.0}")).collect();
    per_task.sort_by(f64::total_cmp);
    common::report("ns_per_task", per_task[per_task.len() / 2]);
    common::note(&format!(
        "ns per task in each of {} fresh runtimes: {}",
        times.len(),
        all.join(", ")
    ));
}

fn rows(params: &Params) -> Vec<Row> {
    vec![
        Row::new(
            "turns",
            "s1_interleaved",
            format!(
                "S1 turns: share of {} runs in which task 2 starts before task 1 finishes ↑",
                params.turns_runs
            ),
        )
        .without_ratio(),
        Row::new(
            "ping_pong_default",
            "ns_per_round_trip",
            format!(
                "S2 ping_pong_default: ns per round trip ({}, unbounded channels) ↓",
                thousands(params.default_round_trips as f64)
            ),
        ),
        Row::new(
            "spawn_then_join",
            "ns_per_task",
            format!(
                "S3 spawn_then_join: ns per task ({} spawned, then joined; median of {} \
                 runtimes) ↓",
                thousands(params.spawn_then_join_tasks as f64),
                params.spawn_then_join_runs
            ),
        ),
        Row::new(
            "tcp_echo_default",
            "round_trips_per_s",
            format!(
                "S4 tcp_echo_default: round trips/s ({} std-thread clients x {} x {}) ↑",
                params.connections,
                thousands(params.echo_round_trips as f64),
                params.echo_repetitions
            ),
        ),
        Row::new("tcp_echo_default", "p50_us", "S4: p50 latency, µs ↓".into()),
        Row::new("tcp_echo_default", "p99_us", "S4: p99 latency, µs ↓".into()),
        Row::new(
            "tcp_echo_default",
            "p999_us",
            "S4: p99.9 latency, µs ↓".into(),
        ),
        Row::new(
            "http_wrk",
            "requests_per_s",
            format!(
                "S5 http_wrk: requests/s (wrk -t2 -c256 -d{}s) ↑",
                params.wrk_duration.as_secs()
            ),
        ),
        Row::new("http_wrk", "p50_ms", "S5: p50 latency, ms ↓".into()),
        Row::new("http_wrk", "p99_ms", "S5: p99 latency, ms ↓".into()),
        Row::new("http_wrk", "socket_errors", "S5: socket errors ↓".into()).without_ratio(),
    ]
}

/// The table, its notes and (with several runs) the spread of every cell.
pub fn render(params: &Params, runs: usize, outcomes: &Outcomes, preparation: &[String]) -> String {
    let columns = Columns {
        runtimes: &RUNTIMES,
        ratios: &[
            ("tokio-mt", "tokio-mt"),
            ("tokio-ct", "tokio-ct"),
            ("async-executor-1", "async-executor"),
        ],
    };
    let rows = rows(params);
    let mut out = String::new();
    table::table(&mut out, &columns, &rows, outcomes);
    out.push_str("\nNotes:\n\n");
    out.push_str(
        "* green default: `green::run(..)` (`Runtime::new()`: one worker per CPU, unpinned), \
         `green::spawn`; tokio-mt: `tokio::runtime::Runtime::new()`; tokio-ct: \
         `Builder::new_current_thread().enable_all()`; async-executor (1 thread): a \
         `LocalExecutor` run by one `block_on`. The main task is `green::run`'s fiber, \
         tokio's `block_on` future, the executor's `run` future. A cell `–`: the scenario \
         does not run there.\n",
    );
    for text in preparation {
        out.push_str(&format!("* http_wrk: {text}\n"));
    }
    let names: Vec<&'static str> = SCENARIOS.iter().map(|s| s.name).collect();
    table::child_notes(&mut out, &names, &RUNTIMES, outcomes, |_, _| false);
    for ((name, runtime), outcome) in outcomes {
        if *name == "http_wrk" && outcome.values.get("non_2xx").is_some_and(|&n| n > 0.0) {
            out.push_str(&format!(
                "* http_wrk / {runtime}: **{} responses were not 2xx/3xx**\n",
                format_value(outcome.values["non_2xx"])
            ));
        }
    }
    if runs > 1 {
        table::spread_table(&mut out, &columns, &rows, runs, outcomes);
    }
    out
}
