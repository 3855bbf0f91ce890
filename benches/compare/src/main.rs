//! green side by side with tokio (multi-thread), may, async-executor and OS threads.
//!
//! ```sh
//! cargo run --release -p green-compare            # the full run, writes RESULTS.md
//! cargo run --release -p green-compare -- --quick # a short smoke run, writes nothing
//! ```
//!
//! Every scenario x runtime runs in a child process (this binary again, with
//! `--child SCENARIO RUNTIME`), so that threads, pools and resident memory never carry
//! over from one measurement to the next. The child prints `@result KEY VALUE` and
//! `@note TEXT` lines; the parent gathers them into a Markdown table. See README.md.

#![warn(clippy::undocumented_unsafe_blocks)]

mod common;
mod rt_async_executor;
mod rt_green;
mod rt_may;
mod rt_threads;
mod rt_tokio;

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::Params;

/// The runtimes: (name on the command line, column header).
const RUNTIMES: [(&str, &str); 5] = [
    ("green", "green"),
    ("tokio", "tokio-mt"),
    ("may", "may"),
    ("async-executor", "async-executor"),
    ("threads", "threads"),
];

/// The scenarios, in order.
const SCENARIOS: [&str; 4] = ["spawn_join", "ping_pong", "park_many", "tcp_echo"];

/// One scenario of one runtime.
type Scenario = fn(&Params) -> Result<(), String>;

fn scenario(name: &str, runtime: &str) -> Option<Scenario> {
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    if args.first().map(String::as_str) == Some("--child") {
        let (Some(name), Some(runtime)) = (args.get(1), args.get(2)) else {
            eprintln!("usage: green-compare --child SCENARIO RUNTIME [--quick]");
            std::process::exit(2);
        };
        let Some(run) = scenario(name, runtime) else {
            eprintln!("no scenario {name} for runtime {runtime}");
            std::process::exit(2);
        };
        match run(&Params::new(quick)) {
            Ok(()) => std::process::exit(0),
            Err(error) => {
                eprintln!("error: {error}");
                std::process::exit(3);
            }
        }
    }
    let mut runs = 1;
    let mut rest = args.iter();
    while let Some(arg) = rest.next() {
        match arg.as_str() {
            "--quick" => {}
            "--runs" => match rest.next().and_then(|n| n.parse().ok()) {
                Some(n) if n > 0 => runs = n,
                _ => usage(),
            },
            _ => usage(),
        }
    }
    parent(quick, runs);
}

fn usage() -> ! {
    eprintln!("usage: green-compare [--quick] [--runs N]");
    std::process::exit(2);
}

/// What a child reported, or the median of several children.
#[derive(Default)]
struct Outcome {
    values: BTreeMap<String, f64>,
    /// Lowest and highest value over the runs, when there were several.
    spread: BTreeMap<String, (f64, f64)>,
    notes: Vec<String>,
    /// Why the child failed: (short, for the table cell; full, for the notes).
    failure: Option<(String, String)>,
    elapsed: Duration,
}

fn parent(quick: bool, runs: usize) {
    let params = Params::new(quick);
    let mut options = String::new();
    if quick {
        options.push_str(" --quick");
    }
    if runs > 1 {
        options.push_str(&format!(" --runs {runs}"));
    }
    let command = format!(
        "cargo run --release -p green-compare{}",
        if options.is_empty() {
            String::new()
        } else {
            format!(" --{options}")
        }
    );
    let load_before = load_average();
    let started = Instant::now();
    let mut outcomes: BTreeMap<(&str, &str), Vec<Outcome>> = BTreeMap::new();
    // Run after run, so that a noisy minute spreads over every runtime alike.
    for run in 1..=runs {
        for name in SCENARIOS {
            for (runtime, _) in RUNTIMES {
                if runs > 1 {
                    eprint!("run {run}/{runs} ");
                }
                eprint!("{name:>10} / {runtime:<15}");
                let timeout = match name {
                    "tcp_echo" => params.tcp_warmup + params.tcp_duration + Duration::from_secs(60),
                    _ => Duration::from_secs(180),
                };
                let outcome = run_child(name, runtime, quick, timeout);
                match &outcome.failure {
                    Some((_, full)) => eprintln!(" failed: {full}"),
                    None => eprintln!(
                        " {:5.1} s  {}",
                        outcome.elapsed.as_secs_f64(),
                        outcome
                            .values
                            .iter()
                            .map(|(k, v)| format!("{k}={}", format_value(*v)))
                            .collect::<Vec<_>>()
                            .join("  ")
                    ),
                }
                outcomes.entry((name, runtime)).or_default().push(outcome);
            }
        }
    }
    let outcomes: BTreeMap<(&str, &str), Outcome> = outcomes
        .into_iter()
        .map(|(key, runs)| (key, combine(runs)))
        .collect();
    let load_after = load_average();
    let report = render(
        &params,
        runs,
        &outcomes,
        &command,
        &load_before,
        &load_after,
        started.elapsed(),
    );
    println!("{report}");
    if quick {
        eprintln!("(--quick: RESULTS.md left as it was)");
    } else {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md");
        let document = format!(
            "# green compared with tokio, may, async-executor and OS threads\n\n\
             Written by `{command}`; see README.md for what each row measures.\n\n{report}"
        );
        match std::fs::write(path, document) {
            Ok(()) => eprintln!("written to {path}"),
            Err(error) => eprintln!("cannot write {path}: {error}"),
        }
    }
}

/// The median of each value over the runs that succeeded (the lowest, for
/// `separate_threads`: it must hold in every run), with the spread; the notes of the first
/// of them; a failure only if every run failed, else a note per failed run.
fn combine(mut runs: Vec<Outcome>) -> Outcome {
    if runs.len() == 1 {
        return runs.pop().expect("one run");
    }
    let total = runs.len();
    let (ok, failed): (Vec<Outcome>, Vec<Outcome>) =
        runs.into_iter().partition(|o| o.failure.is_none());
    let Some(first) = ok.first() else {
        return failed.into_iter().next().expect("at least one run");
    };
    let mut combined = Outcome {
        notes: first.notes.clone(),
        elapsed: ok.iter().map(|o| o.elapsed).sum(),
        ..Outcome::default()
    };
    for key in first.values.keys() {
        let mut values: Vec<f64> = ok
            .iter()
            .filter_map(|o| o.values.get(key))
            .copied()
            .collect();
        values.sort_by(f64::total_cmp);
        let (low, high) = (values[0], values[values.len() - 1]);
        let mid = values.len() / 2;
        let median = if key == "separate_threads" {
            low
        } else if values.len() % 2 == 1 {
            values[mid]
        } else {
            (values[mid - 1] + values[mid]) / 2.0
        };
        combined.values.insert(key.clone(), median);
        combined.spread.insert(key.clone(), (low, high));
    }
    for outcome in failed {
        if let Some((_, full)) = outcome.failure {
            combined.notes.push(format!(
                "**failed** in one of {total} runs (median of the others shown): {full}"
            ));
        }
    }
    combined
}

/// Runs one scenario x runtime in a child process.
fn run_child(name: &str, runtime: &str, quick: bool, timeout: Duration) -> Outcome {
    let mut outcome = Outcome::default();
    let exe = match std::env::current_exe() {
        Ok(exe) => exe,
        Err(error) => {
            outcome.failure = Some(("no executable".into(), error.to_string()));
            return outcome;
        }
    };
    let mut command = Command::new(exe);
    command.args(["--child", name, runtime]);
    if quick {
        command.arg("--quick");
    }
    let start = Instant::now();
    let mut child = match command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(error) => {
            outcome.failure = Some(("cannot start".into(), error.to_string()));
            return outcome;
        }
    };
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if start.elapsed() > timeout => {
                let _ = child.kill();
                timed_out = true;
                break child.wait().ok();
            }
            Ok(None) => thread::sleep(Duration::from_millis(20)),
            Err(_) => break None,
        }
    };
    outcome.elapsed = start.elapsed();
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    for line in stdout.lines() {
        if let Some(rest) = line.strip_prefix("@result ") {
            let mut parts = rest.split_whitespace();
            if let (Some(key), Some(Ok(value))) = (parts.next(), parts.next().map(str::parse)) {
                outcome.values.insert(key.to_string(), value);
            }
        } else if let Some(text) = line.strip_prefix("@note ") {
            outcome.notes.push(text.to_string());
        }
    }
    if timed_out {
        let secs = timeout.as_secs();
        outcome.failure = Some((
            format!("timed out after {secs} s"),
            format!(
                "no result after {secs} s; killed. stderr: {}",
                last_words(&stderr)
            ),
        ));
    } else if let Some(status) = status.filter(|s| !s.success()) {
        outcome.failure = Some((short_status(status, &stderr), describe(status, &stderr)));
    } else if status.is_none() {
        outcome.failure = Some(("lost".into(), "could not wait for the child".into()));
    }
    outcome
}

/// The end of a child's stderr: the panic message or error it died with.
fn last_words(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked at")) {
        let message = lines.get(i + 1).copied().unwrap_or("");
        return format!("{} {}", lines[i].trim(), message.trim());
    }
    lines
        .last()
        .map_or_else(|| "(nothing)".into(), |l| l.trim().to_string())
}

fn signal_name(signal: i32) -> String {
    match signal {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGABRT => "SIGABRT".into(),
        libc::SIGKILL => "SIGKILL".into(),
        libc::SIGILL => "SIGILL".into(),
        other => format!("signal {other}"),
    }
}

fn short_status(status: ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.signal() {
        Some(signal) => signal_name(signal),
        None if stderr.contains("panicked at") => "panic".into(),
        None => format!("exit {}", status.code().unwrap_or(-1)),
    }
}

fn describe(status: ExitStatus, stderr: &str) -> String {
    use std::os::unix::process::ExitStatusExt;
    let how = match status.signal() {
        Some(signal) => format!("killed by {}", signal_name(signal)),
        None => format!("exit status {}", status.code().unwrap_or(-1)),
    };
    format!("{how}; stderr: {}", last_words(stderr))
}

/// A table row: which result of which scenario.
struct Row {
    scenario: &'static str,
    key: &'static str,
    label: String,
    /// The key of the other runtimes' values, when it differs (green-only rows).
    others: &'static str,
}

fn rows(params: &Params) -> Vec<Row> {
    let row = |scenario, key, label: String| Row {
        scenario,
        key,
        label,
        others: key,
    };
    let green_row = |scenario, key, others, label: String| Row {
        scenario,
        key,
        label,
        others,
    };
    vec![
        row(
            "spawn_join",
            "ns_per_spawn_join",
            format!(
                "spawn + join, ns ({} sequential; threads {}) ↓",
                thousands(params.spawn_tasks as f64),
                thousands(params.spawn_threads as f64)
            ),
        ),
        row(
            "ping_pong",
            "ns_per_round_trip",
            format!(
                "ping-pong across workers, ns per round trip ({}) ↓",
                thousands(params.round_trips as f64)
            ),
        ),
        row(
            "park_many",
            "us_per_task",
            format!(
                "park_many: create + park, µs per task ({}; threads {}) ↓",
                thousands(params.park_tasks as f64),
                thousands(params.park_threads as f64)
            ),
        ),
        row(
            "park_many",
            "kib_per_task",
            "park_many: RSS, KiB per parked task ↓".into(),
        ),
        row(
            "tcp_echo",
            "round_trips_per_s",
            format!(
                "tcp_echo: round trips/s ({} conns, {} s) ↑",
                params.connections,
                params.tcp_duration.as_secs()
            ),
        ),
        row("tcp_echo", "p50_us", "tcp_echo: p50 latency, µs ↓".into()),
        row("tcp_echo", "p99_us", "tcp_echo: p99 latency, µs ↓".into()),
        green_row(
            "tcp_echo",
            "unpinned_round_trips_per_s",
            "round_trips_per_s",
            "tcp_echo, green workers unpinned: round trips/s ↑".into(),
        ),
        green_row(
            "tcp_echo",
            "unpinned_p99_us",
            "p99_us",
            "tcp_echo, green workers unpinned: p99 latency, µs ↓".into(),
        ),
    ]
}

fn render(
    params: &Params,
    runs: usize,
    outcomes: &BTreeMap<(&str, &str), Outcome>,
    command: &str,
    load_before: &str,
    load_after: &str,
    took: Duration,
) -> String {
    let mut out = String::new();
    out.push_str(&format!(
        "Machine: {}, {} cores; {}; `{command}`; load average {load_before} before, \
         {load_after} after; {:.0} s in all.\n\n",
        cpu_model(),
        cores(),
        utc_now(),
        took.as_secs_f64()
    ));
    if runs > 1 {
        out.push_str(&format!(
            "Each cell is the median of {runs} runs, made one after the other; their lowest \
             and highest values follow the notes, which come from the first run.\n\n"
        ));
    }
    out.push_str("| scenario (↓ lower is better, ↑ higher) |");
    for (_, header) in RUNTIMES {
        out.push_str(&format!(" {header} |"));
    }
    out.push_str(" green ÷ tokio-mt |\n|---|");
    for _ in 0..=RUNTIMES.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in rows(params) {
        out.push_str(&format!("| {} |", row.label));
        let value_of = |runtime: &str, key: &str| {
            outcomes
                .get(&(row.scenario, runtime))
                .and_then(|o| o.values.get(key).copied())
        };
        let value = |runtime: &str| value_of(runtime, row.key);
        for (runtime, _) in RUNTIMES {
            let cell = match outcomes.get(&(row.scenario, runtime)) {
                Some(Outcome {
                    failure: Some((short, _)),
                    ..
                }) => format!("failed ({short})"),
                _ => value(runtime).map_or_else(|| "–".into(), format_value),
            };
            out.push_str(&format!(" {cell} |"));
        }
        // A green-only row compares with tokio's figure for the same measure.
        let ratio = match (value("green"), value_of("tokio", row.others)) {
            (Some(g), Some(t)) if t > 0.0 => format!("{:.2}x", g / t),
            _ => "–".into(),
        };
        out.push_str(&format!(" {ratio} |\n"));
    }
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
    for name in SCENARIOS {
        for (runtime, header) in RUNTIMES {
            let Some(outcome) = outcomes.get(&(name, runtime)) else {
                continue;
            };
            for text in &outcome.notes {
                if name == "park_many" && text.ends_with("parked at once") {
                    continue;
                }
                out.push_str(&format!("* {name} / {header}: {text}\n"));
            }
            if let Some((_, full)) = &outcome.failure {
                out.push_str(&format!("* {name} / {header}: **failed**: {full}\n"));
            }
        }
    }
    out.push_str(
        "* may's channels are unbounded (it has no bounded one); ping_pong keeps one message \
         in flight, so that is equivalent. async-executor's threads run \
         `async_io::block_on(executor.run(..))`, as smol does.\n",
    );
    if runs > 1 {
        spread_table(&mut out, params, runs, outcomes);
    }
    out
}

/// The lowest and highest value of each cell over the runs.
fn spread_table(
    out: &mut String,
    params: &Params,
    runs: usize,
    outcomes: &BTreeMap<(&str, &str), Outcome>,
) {
    out.push_str(&format!(
        "\nLowest – highest over the {runs} runs:\n\n| scenario |"
    ));
    for (_, header) in RUNTIMES {
        out.push_str(&format!(" {header} |"));
    }
    out.push_str("\n|---|");
    for _ in RUNTIMES {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in rows(params) {
        out.push_str(&format!("| {} |", row.label));
        for (runtime, _) in RUNTIMES {
            let cell = outcomes
                .get(&(row.scenario, runtime))
                .and_then(|o| o.spread.get(row.key))
                .map_or_else(
                    || "–".into(),
                    |(low, high)| format!("{} – {}", format_value(*low), format_value(*high)),
                );
            out.push_str(&format!(" {cell} |"));
        }
        out.push('\n');
    }
}

/// `12,345` for large values; 3 significant digits or so for small ones.
fn format_value(value: f64) -> String {
    if value >= 1000.0 {
        thousands(value)
    } else if value >= 100.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.round());
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

fn cores() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
}

/// The 1, 5 and 15 minute load averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

/// Now, as `YYYY-MM-DD HH:MM UTC`.
fn utc_now() -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = ((secs / 86_400) as i64, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3600,
        rest % 3600 / 60
    )
}
