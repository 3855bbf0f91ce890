//! green side by side with tokio, may, async-executor and OS threads, in three tables:
//! every runtime with two workers (`two_workers`), issue 13's S1-S5 on each system's
//! default runtime (`defaults`), and issue 14's burst of 30 000 tasks on each system's
//! default runtime (`burst`).
//!
//! ```sh
//! cargo run --release -p green-compare                        # all tables; writes RESULTS*.md
//! cargo run --release -p green-compare -- --quick             # a short smoke run, writes nothing
//! cargo run --release -p green-compare -- --default-runtimes  # S1-S5 and the burst
//! cargo run --release -p green-compare -- --only s2,tcp_echo  # some scenarios
//! cargo run --release -p green-compare -- --default-runtimes --only burst  # the burst alone
//! ```
//!
//! Every scenario x runtime runs in a child process (this binary again, with
//! `--child SCENARIO RUNTIME`), so that threads, pools and resident memory never carry
//! over from one measurement to the next. The child prints `@result KEY VALUE` and
//! `@note TEXT` lines; the parent gathers them into Markdown tables. A table's file is
//! written when every scenario of the table ran (not with `--quick`). See README.md.

#![warn(clippy::undocumented_unsafe_blocks)]

mod burst;
mod child;
mod common;
mod defaults;
mod rt_async_executor;
mod rt_green;
mod rt_may;
mod rt_threads;
mod rt_tokio;
mod table;
mod two_workers;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use child::{Outcome, Outcomes};
use common::Params;

/// One scenario of one runtime, run in a child process.
pub type Scenario = fn(&Params) -> Result<(), String>;

/// What the command line asked for.
struct Options {
    quick: bool,
    runs: usize,
    /// `--default-runtimes`: the scenarios on each system's default runtime only (S1-S5
    /// and the burst).
    default_runtimes: bool,
    /// `--only`: scenario names or ids (`s1` ... `s5`); empty for all.
    only: Vec<String>,
}

impl Options {
    fn parse(args: &[String]) -> Options {
        let mut options = Options {
            quick: false,
            runs: 1,
            default_runtimes: false,
            only: Vec::new(),
        };
        let mut rest = args.iter();
        while let Some(arg) = rest.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--default-runtimes" => options.default_runtimes = true,
                "--runs" => match rest.next().and_then(|n| n.parse().ok()) {
                    Some(n) if n > 0 => options.runs = n,
                    _ => usage(),
                },
                "--only" => match rest.next() {
                    Some(list) => options
                        .only
                        .extend(list.split(',').map(|s| s.trim().to_lowercase())),
                    None => usage(),
                },
                _ => usage(),
            }
        }
        options
    }

    /// Whether scenario `name` (also called `id`, `s1` ... `s5` for S1-S5) is to run;
    /// `on_default_runtimes`: whether it runs on each system's default runtime (S1-S5, the
    /// burst), which `--default-runtimes` keeps.
    fn selects(&self, name: &str, id: Option<&str>, on_default_runtimes: bool) -> bool {
        if self.default_runtimes && !on_default_runtimes {
            return false;
        }
        self.only.is_empty()
            || self
                .only
                .iter()
                .any(|wanted| wanted == name || Some(wanted.as_str()) == id)
    }

    /// The command that makes this run, for the tables' header.
    fn command(&self) -> String {
        let mut flags = String::new();
        if self.quick {
            flags.push_str(" --quick");
        }
        if self.default_runtimes {
            flags.push_str(" --default-runtimes");
        }
        if !self.only.is_empty() {
            flags.push_str(&format!(" --only {}", self.only.join(",")));
        }
        if self.runs > 1 {
            flags.push_str(&format!(" --runs {}", self.runs));
        }
        match flags.is_empty() {
            true => "cargo run --release -p green-compare".into(),
            false => format!("cargo run --release -p green-compare --{flags}"),
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--child") {
        child(&args[1..]);
    }
    parent(&Options::parse(&args));
}

fn usage() -> ! {
    eprintln!(
        "usage: green-compare [--quick] [--runs N] [--default-runtimes] [--only NAME,...]\n\
         NAME: spawn_join, ping_pong, park_many, tcp_echo, or s1..s5 / turns, \
         ping_pong_default, spawn_then_join, tcp_echo_default, http_wrk, or burst, \
         burst_1m (green only, run only when named)"
    );
    std::process::exit(2);
}

/// `--child SCENARIO RUNTIME [--quick]`: runs one scenario and exits.
fn child(args: &[String]) -> ! {
    let quick = args.iter().any(|a| a == "--quick");
    let (Some(name), Some(runtime)) = (args.first(), args.get(1)) else {
        eprintln!("usage: green-compare --child SCENARIO RUNTIME [--quick]");
        std::process::exit(2);
    };
    let Some(run) = two_workers::scenario(name, runtime)
        .or_else(|| defaults::scenario(name, runtime))
        .or_else(|| burst::scenario(name, runtime))
    else {
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

/// One child to run: a scenario on a runtime, killed after `timeout`.
struct Job {
    scenario: &'static str,
    runtime: &'static str,
    timeout: Duration,
    /// Children run at least (the burst: a process per repetition), whatever `--runs`.
    min_runs: usize,
}

impl Job {
    /// How many times the job runs when `--runs` asks for `runs`.
    fn runs(&self, runs: usize) -> usize {
        runs.max(self.min_runs)
    }
}

/// The selected jobs of each table.
struct Jobs {
    two_workers: Vec<Job>,
    defaults: Vec<Job>,
    burst: Vec<Job>,
}

/// The selected scenarios of every table, every runtime of each.
fn jobs(options: &Options, params: &Params) -> Jobs {
    let mut two_workers = Vec::new();
    for name in two_workers::SCENARIOS {
        if !options.selects(name, None, false) {
            continue;
        }
        let timeout = match name {
            "tcp_echo" => params.tcp_warmup + params.tcp_duration + Duration::from_secs(60),
            _ => Duration::from_secs(180),
        };
        for (runtime, _) in two_workers::RUNTIMES {
            two_workers.push(Job {
                scenario: name,
                runtime,
                timeout,
                min_runs: 1,
            });
        }
    }
    let mut defaults = Vec::new();
    for scenario in &defaults::SCENARIOS {
        if !options.selects(scenario.name, Some(scenario.id), true) {
            continue;
        }
        for (runtime, _) in scenario.runtimes {
            defaults.push(Job {
                scenario: scenario.name,
                runtime,
                timeout: defaults::timeout(scenario.name, params),
                min_runs: 1,
            });
        }
    }
    let mut burst = Vec::new();
    if options.selects(burst::NAME, None, true) {
        for (runtime, _) in burst::RUNTIMES {
            burst.push(Job {
                scenario: burst::NAME,
                runtime,
                timeout: burst::TIMEOUT,
                min_runs: params.burst_runs,
            });
        }
    }
    // A million stacks need a raised vm.max_map_count and several GiB: only when named.
    if options.only.iter().any(|name| name == burst::MILLION) {
        burst.push(Job {
            scenario: burst::MILLION,
            runtime: "green",
            timeout: burst::TIMEOUT,
            min_runs: params.burst_runs,
        });
    }
    Jobs {
        two_workers,
        defaults,
        burst,
    }
}

fn parent(options: &Options) {
    let params = Params::new(options.quick);
    let command = options.command();
    let Jobs {
        two_workers,
        defaults,
        burst,
    } = jobs(options, &params);
    if two_workers.is_empty() && defaults.is_empty() && burst.is_empty() {
        eprintln!("no scenario selected");
        usage();
    }
    let selected: Vec<&str> = defaults.iter().map(|job| job.scenario).collect();
    let preparation = defaults::prepare(&selected);
    let load_before = table::load_average();
    let started = Instant::now();
    let outcomes = run_all(options, two_workers.iter().chain(&defaults).chain(&burst));
    let header = table::header_line(
        &command,
        &load_before,
        &table::load_average(),
        started.elapsed(),
    );
    // A file holds the last run of its table in which every scenario of the table ran.
    let complete = |jobs: &[Job], names: &[&str]| {
        !options.quick && names.iter().all(|n| jobs.iter().any(|j| j.scenario == *n))
    };
    let mut left_alone = false;
    if !two_workers.is_empty() {
        let report = header.clone() + &two_workers::render(&params, options.runs, &outcomes);
        println!("{report}");
        match complete(&two_workers, &two_workers::SCENARIOS) {
            true => write(
                "RESULTS.md",
                "green compared with tokio, may, async-executor and OS threads",
                &command,
                &report,
            ),
            false => left_alone = true,
        }
    }
    if !defaults.is_empty() {
        let report =
            header.clone() + &defaults::render(&params, options.runs, &outcomes, &preparation);
        println!("{report}");
        let names: Vec<&str> = defaults::SCENARIOS.iter().map(|s| s.name).collect();
        match complete(&defaults, &names) {
            true => write(
                "RESULTS-default-runtimes.md",
                "Issue 13's S1-S5: green's default runtime compared with tokio's",
                &command,
                &report,
            ),
            false => left_alone = true,
        }
    }
    if let Some(job) = burst.first() {
        let report = header + &burst::render(&params, job.runs(options.runs), &outcomes);
        println!("{report}");
        match complete(&burst, &[burst::NAME]) {
            true => write(
                "RESULTS-burst.md",
                "Issue 14's burst: green's default runtime compared with may's, tokio's and \
                 async-executor's",
                &command,
                &report,
            ),
            false => left_alone = true,
        }
    }
    if left_alone {
        eprintln!("(--quick, or a table not run in full: its RESULTS file is left as it was)");
    }
}

/// Runs every job `options.runs` times (or its own minimum, if higher), run after run,
/// so that a noisy minute spreads over every runtime alike; combines each job's runs.
/// Within each scenario the runtimes take turns going first (run 2 starts with the
/// second, ...), so that none always follows the same neighbour (the heaviest scenario
/// before it, say, whose closed sockets and busy CPUs linger for a moment).
fn run_all<'a>(options: &Options, jobs: impl Iterator<Item = &'a Job> + Clone) -> Outcomes {
    let job_runs = |job: &Job| job.runs(options.runs);
    let rounds = jobs.clone().map(job_runs).max().unwrap_or(1);
    let mut outcomes: BTreeMap<(&'static str, &'static str), Vec<Outcome>> = BTreeMap::new();
    for run in 1..=rounds {
        let mut order: Vec<&Job> = jobs.clone().filter(|job| run <= job_runs(job)).collect();
        for group in order.chunk_by_mut(|a, b| a.scenario == b.scenario) {
            let len = group.len();
            group.rotate_left((run - 1) % len);
        }
        for job in order {
            let runs = job_runs(job);
            if runs > 1 {
                eprint!("run {run}/{runs} ");
            }
            eprint!("{:>17} / {:<16}", job.scenario, job.runtime);
            let outcome = child::run_child(job.scenario, job.runtime, options.quick, job.timeout);
            match &outcome.failure {
                Some((_, full)) => eprintln!(" failed: {full}"),
                None => eprintln!(
                    " {:5.1} s  {}",
                    outcome.elapsed.as_secs_f64(),
                    outcome
                        .values
                        .iter()
                        .map(|(k, v)| format!("{k}={}", table::format_value(*v)))
                        .collect::<Vec<_>>()
                        .join("  ")
                ),
            }
            outcomes
                .entry((job.scenario, job.runtime))
                .or_default()
                .push(outcome);
        }
    }
    outcomes
        .into_iter()
        .map(|(key, runs)| (key, child::combine(runs)))
        .collect()
}

/// Writes a table to `file` beside Cargo.toml, under a title.
fn write(file: &str, title: &str, command: &str, report: &str) {
    let path = format!("{}/{file}", env!("CARGO_MANIFEST_DIR"));
    let document = format!(
        "# {title}\n\nWritten by `{command}`; see README.md for what each row measures.\n\n{report}"
    );
    match std::fs::write(&path, document) {
        Ok(()) => eprintln!("written to {path}"),
        Err(error) => eprintln!("cannot write {path}: {error}"),
    }
}
