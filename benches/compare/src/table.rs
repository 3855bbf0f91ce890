//! The Markdown tables: a row per result, a column per runtime, ratios of green's figure
//! to other runtimes' figures, and the line that says where and how they were measured.

use std::process::Command;
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::child::Outcomes;

/// A table row: which result of which scenario.
pub struct Row {
    pub scenario: &'static str,
    pub key: &'static str,
    pub label: String,
    /// The key of the other runtimes' values, when it differs (green-only rows).
    pub others: &'static str,
    /// Whether the ratio columns apply (not for counts and fractions).
    pub ratio: bool,
}

impl Row {
    /// A row of one result, the same key for every runtime.
    pub fn new(scenario: &'static str, key: &'static str, label: String) -> Row {
        Row {
            scenario,
            key,
            label,
            others: key,
            ratio: true,
        }
    }

    /// A green-only row, compared with the other runtimes' `others` figure.
    pub fn green_only(
        scenario: &'static str,
        key: &'static str,
        others: &'static str,
        label: String,
    ) -> Row {
        Row {
            others,
            ..Row::new(scenario, key, label)
        }
    }

    /// A row without ratio columns.
    pub fn without_ratio(self) -> Row {
        Row {
            ratio: false,
            ..self
        }
    }
}

/// The columns of a table.
pub struct Columns<'a> {
    /// (runtime name, column header), one column each.
    pub runtimes: &'a [(&'static str, &'static str)],
    /// (runtime name, column header) of each "green ÷ runtime" column.
    pub ratios: &'a [(&'static str, &'static str)],
}

/// The first line under a table's title: machine, date, command, load and duration.
pub fn header_line(command: &str, load_before: &str, load_after: &str, took: Duration) -> String {
    format!(
        "Machine: {}, {} cores; {}; {}`{command}`; load average {load_before} before, \
         {load_after} after; {:.0} s in all.\n\n",
        cpu_model(),
        cores(),
        utc_now(),
        green_version().map_or_else(String::new, |v| format!("{v}; ")),
        took.as_secs_f64()
    )
}

/// `green at abc1234`, and whether `src/` differed from that commit when the run began
/// (the binary was built from the tree as it was then).
fn green_version() -> Option<String> {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
    let git = |args: &[&str]| {
        let output = Command::new("git")
            .current_dir(workspace)
            .args(args)
            .output()
            .ok()?;
        output
            .status
            .success()
            .then(|| String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let changed = git(&["status", "--porcelain", "--", "src"])?;
    Some(match changed.is_empty() {
        true => format!("green at {commit}"),
        false => format!("green at {commit} with uncommitted changes in src/"),
    })
}

/// The table of results: each cell the (median) value, or why its child failed.
pub fn table(out: &mut String, columns: &Columns, rows: &[Row], outcomes: &Outcomes) {
    out.push_str("| scenario (↓ lower is better, ↑ higher) |");
    for (_, header) in columns.runtimes {
        out.push_str(&format!(" {header} |"));
    }
    for (_, header) in columns.ratios {
        out.push_str(&format!(" green ÷ {header} |"));
    }
    out.push_str("\n|---|");
    for _ in 0..columns.runtimes.len() + columns.ratios.len() {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in rows.iter().filter(|row| ran(row, columns, outcomes)) {
        out.push_str(&format!("| {} |", row.label));
        let value_of = |runtime: &str, key: &str| {
            outcomes
                .get(&(row.scenario, runtime))
                .and_then(|o| o.values.get(key).copied())
        };
        for (runtime, _) in columns.runtimes {
            let cell = match outcomes.get(&(row.scenario, *runtime)) {
                Some(outcome) => match &outcome.failure {
                    Some((short, _)) => format!("failed ({short})"),
                    None => value_of(runtime, row.key).map_or_else(|| "–".into(), format_value),
                },
                None => "–".into(),
            };
            out.push_str(&format!(" {cell} |"));
        }
        // A green-only row compares with the other runtime's figure for the same measure.
        for (runtime, _) in columns.ratios {
            let ratio = match (value_of("green", row.key), value_of(runtime, row.others)) {
                (Some(g), Some(t)) if row.ratio && t > 0.0 => format!("{:.2}x", g / t),
                _ => "–".into(),
            };
            out.push_str(&format!(" {ratio} |"));
        }
        out.push('\n');
    }
}

/// Whether the row's scenario ran at all (`--only` leaves some out).
fn ran(row: &Row, columns: &Columns, outcomes: &Outcomes) -> bool {
    columns
        .runtimes
        .iter()
        .any(|(runtime, _)| outcomes.contains_key(&(row.scenario, *runtime)))
}

/// The lowest and highest value of each cell over the runs.
pub fn spread_table(
    out: &mut String,
    columns: &Columns,
    rows: &[Row],
    runs: usize,
    outcomes: &Outcomes,
) {
    out.push_str(&format!(
        "\nLowest – highest over the {runs} runs:\n\n| scenario |"
    ));
    for (_, header) in columns.runtimes {
        out.push_str(&format!(" {header} |"));
    }
    out.push_str("\n|---|");
    for _ in columns.runtimes {
        out.push_str("---:|");
    }
    out.push('\n');
    for row in rows.iter().filter(|row| ran(row, columns, outcomes)) {
        out.push_str(&format!("| {} |", row.label));
        for (runtime, _) in columns.runtimes {
            let cell = outcomes
                .get(&(row.scenario, *runtime))
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

/// The notes every child printed, and every failure in full, as list items.
pub fn child_notes(
    out: &mut String,
    scenarios: &[&'static str],
    runtimes: &[(&'static str, &'static str)],
    outcomes: &Outcomes,
    skip: impl Fn(&str, &str) -> bool,
) {
    for name in scenarios {
        for (runtime, header) in runtimes {
            let Some(outcome) = outcomes.get(&(*name, *runtime)) else {
                continue;
            };
            for text in &outcome.notes {
                if skip(name, text) {
                    continue;
                }
                out.push_str(&format!("* {name} / {header}: {text}\n"));
            }
            if let Some((_, full)) = &outcome.failure {
                out.push_str(&format!("* {name} / {header}: **failed**: {full}\n"));
            }
        }
    }
}

/// `12,345` for large values; 3 significant digits or so for small ones; whole numbers
/// (counts) without decimals.
pub fn format_value(value: f64) -> String {
    if value >= 1000.0 {
        thousands(value)
    } else if value >= 100.0 || value.fract() == 0.0 {
        format!("{value:.0}")
    } else if value >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

pub fn thousands(value: f64) -> String {
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
pub fn load_average() -> String {
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
