//! Running one scenario x runtime in a child process, and reading what it reported.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// What a child reported, or the median of several children.
#[derive(Default)]
pub struct Outcome {
    /// Every `@result KEY VALUE` line, by key (the median, once combined).
    pub values: BTreeMap<String, f64>,
    /// Lowest and highest value over the runs, when there were several.
    pub spread: BTreeMap<String, (f64, f64)>,
    /// Every `@note TEXT` line, in order.
    pub notes: Vec<String>,
    /// Why the child failed: (short, for the table cell; full, for the notes).
    pub failure: Option<(String, String)>,
    /// Wall time of the child (the sum over runs, once combined).
    pub elapsed: Duration,
}

/// The median of each value over the runs that succeeded (the lowest, for
/// `separate_threads`: it must hold in every run), with the spread; the notes of the first
/// of them; a failure only if every run failed, else a note per failed run.
pub fn combine(mut runs: Vec<Outcome>) -> Outcome {
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
pub fn run_child(name: &str, runtime: &str, quick: bool, timeout: Duration) -> Outcome {
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

/// Every child's outcome, by (scenario, runtime).
pub type Outcomes = BTreeMap<(&'static str, &'static str), Outcome>;
