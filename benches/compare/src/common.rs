//! What every runtime's scenarios share: sizes, measurements and the result protocol.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

/// Spawns and joins before the timed loop of `spawn_join`.
pub const SPAWN_WARMUP: usize = 1_000;

/// Round trips before the timed loop of `ping_pong`.
pub const PING_PONG_WARMUP: u64 = 1_000;

/// Every `ping_pong` task notes the thread it runs on once per this many round trips.
pub const SAMPLE_EVERY: u64 = 4_096;

/// Bytes of every TCP request and response.
pub const MESSAGE: usize = 64;

/// How long to wait for tasks to count themselves in before giving up.
pub const PARK_TIMEOUT: Duration = Duration::from_secs(120);

/// The sizes of one run, the same in the parent and in every child.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    /// Sequential spawn + join pairs, for the task runtimes.
    pub spawn_tasks: usize,
    /// The same for OS threads.
    pub spawn_threads: usize,
    /// Ping-pong round trips.
    pub round_trips: u64,
    /// Tasks parked at once, for the task runtimes.
    pub park_tasks: usize,
    /// Whether `park_tasks` was lowered to fit `vm.max_map_count`.
    pub park_capped: bool,
    /// Threads parked at once.
    pub park_threads: usize,
    /// TCP client connections.
    pub connections: usize,
    /// Round trips before `tcp_warmup` are not recorded.
    pub tcp_warmup: Duration,
    /// How long the clients record round trips.
    pub tcp_duration: Duration,
    /// S1 `turns`: fresh runtimes, each running the two counting tasks once.
    pub turns_runs: usize,
    /// S2 `ping_pong_default`: round trips.
    pub default_round_trips: u64,
    /// S3 `spawn_then_join`: tasks spawned before the first join.
    pub spawn_then_join_tasks: usize,
    /// S3: fresh runtimes, each spawning and joining `spawn_then_join_tasks`; the median counts.
    pub spawn_then_join_runs: usize,
    /// S4 `tcp_echo_default`: round trips per client thread, per repetition.
    pub echo_round_trips: usize,
    /// S4: repetitions, each with new connections (and the same server).
    pub echo_repetitions: usize,
    /// S5 `http_wrk`: wrk's `-d`.
    pub wrk_duration: Duration,
    /// `burst`: tasks created and parked at once.
    pub burst_tasks: usize,
    /// Whether `burst_tasks` was lowered to fit `vm.max_map_count`.
    pub burst_capped: bool,
    /// `burst_1m`: tasks created and parked at once.
    pub burst_million_tasks: usize,
    /// `burst`: processes per runtime (at least; `--runs` may ask for more), each one
    /// fresh runtime and one burst; the median counts.
    pub burst_runs: usize,
}

impl Params {
    pub fn new(quick: bool) -> Params {
        let wanted_park = if quick { 10_000 } else { 100_000 };
        // A guarded stack is two mappings (green and may alike); leave room for the rest
        // of the process (green itself keeps 4096 mappings aside).
        let fits = max_map_count().saturating_sub(12_000) / 2 / 5_000 * 5_000;
        let park_tasks = wanted_park.min(fits.max(5_000));
        // The burst is issue 14's 30 000 tasks, which fit the default limit (65 530): 2
        // mappings per guarded stack plus the 4096 green keeps aside, and a little more
        // for the rest of the process. A lower limit gets a multiple of 5 000 that fits.
        let wanted_burst = if quick { 10_000 } else { 30_000 };
        let burst_fits = max_map_count().saturating_sub(5_000) / 2 / 5_000 * 5_000;
        let burst_tasks = wanted_burst.min(burst_fits.max(5_000));
        Params {
            spawn_tasks: if quick { 10_000 } else { 100_000 },
            spawn_threads: if quick { 500 } else { 2_000 },
            round_trips: if quick { 10_000 } else { 100_000 },
            park_tasks,
            park_capped: park_tasks < wanted_park,
            park_threads: if quick { 500 } else { 2_000 },
            connections: 64,
            tcp_warmup: Duration::from_millis(if quick { 200 } else { 500 }),
            tcp_duration: Duration::from_secs(if quick { 1 } else { 5 }),
            turns_runs: if quick { 5 } else { 20 },
            default_round_trips: if quick { 50_000 } else { 1_000_000 },
            spawn_then_join_tasks: 30_000,
            spawn_then_join_runs: if quick { 3 } else { 5 },
            echo_round_trips: if quick { 200 } else { 2_000 },
            echo_repetitions: if quick { 2 } else { 5 },
            wrk_duration: Duration::from_secs(if quick { 1 } else { 5 }),
            burst_tasks,
            burst_capped: burst_tasks < wanted_burst,
            burst_million_tasks: if quick { 100_000 } else { 1_000_000 },
            burst_runs: 3,
        }
    }
}

/// `vm.max_map_count`, or the kernel's default if it cannot be read.
pub fn max_map_count() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(65_530)
}

/// Resident memory of this process in bytes, from /proc/self/statm.
pub fn resident_bytes() -> usize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: usize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf only reads a system constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * usize::try_from(page).unwrap_or(4096)
}

/// The calling thread's name (or id). Not inlined, so that a coroutine runtime that moves
/// tasks between threads (may) never reuses a thread-local address across a yield here.
#[inline(never)]
pub fn thread_name() -> String {
    let thread = std::thread::current();
    match thread.name() {
        Some(name) => name.to_string(),
        None => format!("{:?}", thread.id()),
    }
}

/// The threads a task was seen running on.
#[derive(Default, Debug)]
pub struct Seen(pub BTreeSet<String>);

impl Seen {
    #[inline(never)]
    pub fn note(&mut self) {
        self.0.insert(thread_name());
    }

    /// As `note`, with the thread's id beside its name, for runtimes that give all their
    /// workers one name (tokio's `Runtime::new()`).
    #[inline(never)]
    pub fn note_with_id(&mut self) {
        let id = format!("{:?}", std::thread::current().id());
        let number = id.trim_start_matches("ThreadId(").trim_end_matches(')');
        self.0.insert(format!("{} #{number}", thread_name()));
    }

    pub fn describe(&self) -> String {
        self.0.iter().cloned().collect::<Vec<_>>().join(", ")
    }
}

/// Prints one result for the parent.
pub fn report(key: &str, value: f64) {
    println!("@result {key} {value}");
}

/// Prints one note for the parent (shown under the table).
pub fn note(text: &str) {
    println!("@note {text}");
}

/// Reports nanoseconds per operation.
pub fn report_per_op(key: &str, elapsed: Duration, ops: u64) {
    report(key, elapsed.as_nanos() as f64 / ops as f64);
}

/// Reports the two ping-pong tasks' threads, and whether they ever shared one.
pub fn report_ping_pong(elapsed: Duration, round_trips: u64, ping: &Seen, pong: &Seen) {
    report_per_op("ns_per_round_trip", elapsed, round_trips);
    let disjoint = ping.0.is_disjoint(&pong.0);
    report("separate_threads", if disjoint { 1.0 } else { 0.0 });
    note(&format!(
        "ping task ran on [{}], pong task on [{}]",
        ping.describe(),
        pong.describe()
    ));
}

/// Waits until `count()` reaches `target`. `Err` after [`PARK_TIMEOUT`], or when
/// `failed()` (checked every 50 ms) says that some task ended without parking.
pub fn wait_for(
    target: usize,
    count: impl Fn() -> usize,
    failed: impl Fn() -> bool,
) -> Result<(), String> {
    let deadline = Instant::now() + PARK_TIMEOUT;
    let mut polls = 0u32;
    while count() < target {
        polls += 1;
        if polls.is_multiple_of(50) && failed() {
            return Err(format!(
                "a task ended early; {} of {target} parked",
                count()
            ));
        }
        if Instant::now() > deadline {
            return Err(format!("only {} of {target} tasks parked", count()));
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    Ok(())
}

/// The park_many measurement: resident memory before, then once everything parked.
pub struct ParkMeter {
    before: usize,
    start: Instant,
    created: Duration,
}

impl ParkMeter {
    /// Call right before creating the tasks.
    pub fn start() -> ParkMeter {
        let before = resident_bytes();
        ParkMeter {
            before,
            start: Instant::now(),
            created: Duration::ZERO,
        }
    }

    /// Call once every task counted itself in.
    pub fn all_parked(&mut self) {
        self.created = self.start.elapsed();
        // Let the last tasks get from their count to their park.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Reports creation time and memory per task, from `during` (resident bytes).
    pub fn report(&self, tasks: usize) {
        let during = resident_bytes();
        report(
            "us_per_task",
            self.created.as_nanos() as f64 / 1_000.0 / tasks as f64,
        );
        report(
            "kib_per_task",
            during.saturating_sub(self.before) as f64 / 1024.0 / tasks as f64,
        );
        note(&format!("{tasks} parked at once"));
    }
}

/// When TCP clients record round trips: from `start` to `end`.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    pub start: Instant,
    pub end: Instant,
}

impl Window {
    pub fn new(params: &Params) -> Window {
        let start = Instant::now() + params.tcp_warmup;
        Window {
            start,
            end: start + params.tcp_duration,
        }
    }
}

/// One client's round-trip latencies in nanoseconds.
#[derive(Default)]
pub struct Latencies(pub Vec<u32>);

impl Latencies {
    pub fn with_capacity() -> Latencies {
        Latencies(Vec::with_capacity(1 << 16))
    }

    /// Records a round trip that began at `began`, if inside the window.
    #[inline]
    pub fn record(&mut self, window: &Window, began: Instant) {
        let now = Instant::now();
        if began >= window.start {
            let nanos = now.duration_since(began).as_nanos();
            self.0.push(u32::try_from(nanos).unwrap_or(u32::MAX));
        }
    }
}

/// Reports throughput and percentiles from every client's latencies.
pub fn report_tcp(params: &Params, clients: Vec<Latencies>, placement: &str) {
    report_tcp_as(params, clients, placement, "");
}

/// As `report_tcp`, with `prefix` before each result key (for a second configuration).
pub fn report_tcp_as(params: &Params, clients: Vec<Latencies>, placement: &str, prefix: &str) {
    let mut all: Vec<u32> = clients.into_iter().flat_map(|l| l.0).collect();
    if all.is_empty() {
        note("no round trip completed in the window");
        return;
    }
    all.sort_unstable();
    let percentile = |p: f64| {
        let index = ((all.len() as f64 * p) as usize).min(all.len() - 1);
        f64::from(all[index]) / 1_000.0
    };
    report(
        &format!("{prefix}round_trips_per_s"),
        all.len() as f64 / params.tcp_duration.as_secs_f64(),
    );
    report(&format!("{prefix}p50_us"), percentile(0.50));
    report(&format!("{prefix}p99_us"), percentile(0.99));
    note(&format!(
        "{} connections, {} round trips recorded; {placement}",
        params.connections,
        all.len()
    ));
}

/// "name: count" for the threads a set of tasks ran on.
pub fn placement(label: &str, names: &[String]) -> String {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for name in names {
        *counts.entry(name.as_str()).or_default() += 1;
    }
    let list: Vec<String> = counts.iter().map(|(k, v)| format!("{k}: {v}")).collect();
    format!("{label} by thread: {}", list.join(", "))
}
