//! S1 `turns`: the README's first program without `spawn_local`. Two tasks count, yielding
//! after every line, while the main task joins them; do they take turns?
//!
//! Each task writes its lines to a [`Transcript`] (a `Vec` under a std `Mutex`, in place of
//! stdout), so that the order can be checked afterwards.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use crate::common;

/// The two tasks: (task number, lines counted, each followed by a yield).
pub const TASKS: [(usize, usize); 2] = [(1, 10), (2, 15)];

/// The lines the tasks wrote, in the order they wrote them.
#[derive(Clone, Default)]
pub struct Transcript(Arc<Mutex<Vec<String>>>);

impl Transcript {
    fn line(&self, text: String) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(text);
    }

    /// `TASK N STARTING`, a task's first line.
    pub fn starting(&self, task: usize) {
        self.line(format!("TASK {task} STARTING"));
    }

    /// `task: N counter: i`, written before each yield.
    pub fn counter(&self, task: usize, counter: usize) {
        self.line(format!("task: {task} counter: {counter}"));
    }

    /// `TASK N FINISHED`, a task's last line.
    pub fn finished(&self, task: usize) {
        self.line(format!("TASK {task} FINISHED"));
    }

    /// The lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Whether task 2's first line comes before task 1's last: the two took turns.
fn interleaved(lines: &[String]) -> bool {
    let at = |wanted: &str| lines.iter().position(|l| l == wanted);
    match (at("TASK 2 STARTING"), at("TASK 1 FINISHED")) {
        (Some(second_starts), Some(first_ends)) => second_starts < first_ends,
        _ => false,
    }
}

/// A transcript in short: `S1` and `F1` for task 1's first and last lines, `1` for its
/// counter lines, repeats counted: `S1 1×10 F1 S2 2×15 F2` means no turns at all.
fn shape(lines: &[String]) -> String {
    let tokens = lines.iter().map(|line| {
        let task = line
            .split(|c: char| !c.is_ascii_digit())
            .find(|part| !part.is_empty())
            .unwrap_or("?");
        if line.ends_with("STARTING") {
            format!("S{task}")
        } else if line.ends_with("FINISHED") {
            format!("F{task}")
        } else {
            task.to_string()
        }
    });
    let mut runs: Vec<(String, usize)> = Vec::new();
    for token in tokens {
        match runs.last_mut() {
            Some((last, count)) if *last == token => *count += 1,
            _ => runs.push((token, 1)),
        }
    }
    runs.iter()
        .map(|(token, count)| match count {
            1 => token.clone(),
            _ => format!("{token}×{count}"),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reports the share of runs in which the tasks took turns, and each order seen.
pub fn report(transcripts: &[Vec<String>]) {
    let turns = transcripts.iter().filter(|t| interleaved(t)).count();
    common::report("s1_interleaved", turns as f64 / transcripts.len() as f64);
    common::note(&format!(
        "task 2 started before task 1 finished in {turns} of {} runs",
        transcripts.len()
    ));
    let mut shapes = BTreeMap::<String, usize>::new();
    for transcript in transcripts {
        *shapes.entry(shape(transcript)).or_default() += 1;
    }
    for (shape, count) in shapes {
        let runs = if count == 1 { "run" } else { "runs" };
        common::note(&format!("order `{shape}` in {count} {runs}"));
    }
}
