//! The first table: spawn_join, ping_pong, park_many and tcp_echo, every runtime with two
//! workers (green, tokio-mt, may, async-executor) or plain OS threads.

use crate::child::Outcomes;
use crate::common::{self, Params};
use crate::table::{self, Columns, Row, format_value, thousands};
use crate::{Scenario, rt_async_executor, rt_green, rt_may, rt_threads, rt_tokio};

/// The runtimes: (name on the command line, column header).
pub const RUNTIMES: [(&str, &str); 5] = [
    ("green", "green"),
    ("tokio", "tokio-mt"),
    ("may", "may"),
    ("async-executor", "async-executor"),
    ("threads", "threads"),
];

/// The scenarios, in order.
pub const SCENARIOS: [&str; 4] = ["spawn_join", "ping_pong", "park_many", "tcp_echo"];

pub fn scenario(name: &str, runtime: &str) -> Option<Scenario> {
    let table: [(&str, [Scenario; 4]); 5] = [
        (
            "green",
            [
                rt_green::spawn_join,
                rt_green::ping_pong,
                rt_green::park_many,
                rt_green::tcp_echo,
            ],
        ),
        (
            "tokio",
            [
                rt_tokio::spawn_join,
                rt_tokio::ping_pong,
                rt_tokio::park_many,
                rt_tokio::tcp_echo,
            ],
        ),
        (
            "may",
            [
                rt_may::spawn_join,
                rt_may::ping_pong,
                rt_may::park_many,
                rt_may::tcp_echo,
            ],
        ),
        (
            "async-executor",
            [
                rt_async_executor::spawn_join,
                rt_async_executor::ping_pong,
                rt_async_executor::park_many,
                rt_async_executor::tcp_echo,
            ],
        ),
        (
            "threads",
            [
                rt_threads::spawn_join,
                rt_threads::ping_pong,
                rt_threads::park_many,
                rt_threads::tcp_echo,
            ],
        ),
    ];
    let index = SCENARIOS.iter().position(|s| *s == name)?;
    table
        .iter()
        .find(|(r, _)| *r == runtime)
        .map(|(_, scenarios)| scenarios[index])
}

fn rows(params: &Params) -> Vec<Row> {
    vec![
        Row::new(
            "spawn_join",
            "ns_per_spawn_join",
            format!(
                "spawn + join, ns ({} sequential; threads {}) ↓",
                thousands(params.spawn_tasks as f64),
                thousands(params.spawn_threads as f64)
            ),
        ),
        Row::new(
            "ping_pong",
            "ns_per_round_trip",
            format!(
                "ping-pong across workers, ns per round trip ({}) ↓",
                thousands(params.round_trips as f64)
            ),
        ),
        Row::new(
            "park_many",
            "us_per_task",
            format!(
                "park_many: create + park, µs per task ({}; threads {}) ↓",
                thousands(params.park_tasks as f64),
                thousands(params.park_threads as f64)
            ),
        ),
        Row::new(
            "park_many",
            "kib_per_task",
            "park_many: RSS, KiB per parked task ↓".into(),
        ),
        Row::new(
            "tcp_echo",
            "round_trips_per_s",
            format!(
                "tcp_echo: round trips/s ({} conns, {} s) ↑",
                params.connections,
                params.tcp_duration.as_secs()
            ),
        ),
        Row::new("tcp_echo", "p50_us", "tcp_echo: p50 latency, µs ↓".into()),
        Row::new("tcp_echo", "p99_us", "tcp_echo: p99 latency, µs ↓".into()),
        Row::green_only(
            "tcp_echo",
            "unpinned_round_trips_per_s",
            "round_trips_per_s",
            "tcp_echo, green workers unpinned: round trips/s ↑".into(),
        ),
        Row::green_only(
            "tcp_echo",
            "unpinned_p99_us",
            "p99_us",
            "tcp_echo, green workers unpinned: p99 latency, µs ↓".into(),
        ),
    ]
}

/// The table, its notes and (with several runs) the spread of every cell.
pub fn render(params: &Params, runs: usize, outcomes: &Outcomes) -> String {
    let columns = Columns {
        runtimes: &RUNTIMES,
        ratios: &[("tokio", "tokio-mt")],
    };
    let rows = rows(params);
    let mut out = String::new();
    table::table(&mut out, &columns, &rows, outcomes);
    out.push_str("\nNotes:\n\n");
    if params.park_capped {
        out.push_str(&format!(
            "* park_many runs {} tasks, not 100 000: vm.max_map_count is {} here and every \
             guarded stack (green, may) is two mappings. `sysctl -w vm.max_map_count=262144` \
             (as root) allows the full count.\n",
            thousands(params.park_tasks as f64),
            common::max_map_count()
        ));
    }
    ping_pong_notes(&mut out, outcomes);
    table::child_notes(&mut out, &SCENARIOS, &RUNTIMES, outcomes, |name, text| {
        name == "park_many" && text.ends_with("parked at once")
    });
    if outcomes.keys().any(|(name, _)| *name == "ping_pong") {
        out.push_str(
            "* may's channels are unbounded (it has no bounded one); ping_pong keeps one \
             message in flight, so that is equivalent. async-executor's threads run \
             `async_io::block_on(executor.run(..))`, as smol does.\n",
        );
    }
    if runs > 1 {
        table::spread_table(&mut out, &columns, &rows, runs, outcomes);
    }
    out
}

/// Whether each runtime's two ping_pong tasks really ran on different threads.
fn ping_pong_notes(out: &mut String, outcomes: &Outcomes) {
    if let Some(green) = outcomes.get(&("ping_pong", "green")) {
        match green.values.get("separate_threads") {
            Some(&v) if v > 0.5 => out.push_str(
                "* ping_pong: green's two fibers ran on different workers (verified), as the \
                 row asks.",
            ),
            Some(_) => out.push_str(
                "* ping_pong: **green's two fibers shared a worker**: not a cross-worker figure.",
            ),
            None => {}
        }
        if let Some(ns) = green.values.get("same_worker_ns_per_round_trip") {
            out.push_str(&format!(
                " For comparison, two green fibers on one worker (`spawn_local`): {} ns per \
                 round trip.",
                format_value(*ns)
            ));
        }
        out.push('\n');
    }
    let shared: Vec<&str> = RUNTIMES
        .iter()
        .filter(|(runtime, _)| {
            outcomes
                .get(&("ping_pong", *runtime))
                .and_then(|o| o.values.get("separate_threads"))
                .is_some_and(|&v| v < 0.5)
        })
        .map(|(_, header)| *header)
        .collect();
    if !shared.is_empty() {
        out.push_str(&format!(
            "* ping_pong: {} cannot pin a task to a worker; their two tasks were seen on a \
             common thread (the scheduler moves a woken task next to its waker), so their \
             figure is mostly a same-thread exchange.\n",
            shared.join(", ")
        ));
    }
}
