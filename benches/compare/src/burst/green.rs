//! The burst on `green::run`, as a new user writes it: `green::spawn`, and
//! `green::await_blocking` on `async_channel`.

use super::BurstMeter;
use crate::common::{self, Params};

pub fn burst(params: &Params) -> Result<(), String> {
    run(params.burst_tasks)
}

/// The burst with a million fibers, if `vm.max_map_count` allows that many stacks.
pub fn burst_million(params: &Params) -> Result<(), String> {
    let tasks = params.burst_million_tasks;
    // One mapping a stack with guard regions, two without (see `green::stack`), the 4096
    // green leaves to the rest of the process, and a margin for that rest.
    let per_stack = if green::stack::guard_regions() { 1 } else { 2 };
    let needed = per_stack * tasks + green::stack::RESERVED_MAPPINGS + 1_000;
    let limit = common::max_map_count();
    if limit < needed {
        return Err(format!(
            "{tasks} fibers need vm.max_map_count >= {needed} (now {limit}): \
             `sysctl -w vm.max_map_count={}` as root",
            needed.next_multiple_of(100_000)
        ));
    }
    run(tasks)
}

fn run(tasks: usize) -> Result<(), String> {
    green::run(move || {
        let (announce, announcements) = async_channel::unbounded::<()>();
        let mut wakes = Vec::with_capacity(tasks);
        let mut handles = Vec::with_capacity(tasks);
        let mut meter = BurstMeter::start(tasks);
        for _ in 0..tasks {
            let (wake, parked) = async_channel::bounded::<()>(1);
            let announce = announce.clone();
            wakes.push(wake);
            handles.push(green::spawn(move || {
                green::await_blocking(announce.send(())).map_err(|_| "announce")?;
                green::await_blocking(parked.recv()).map_err(|_| "wait")
            }));
        }
        for _ in 0..tasks {
            green::await_blocking(announcements.recv()).map_err(|e| e.to_string())?;
        }
        meter.all_announced();
        for wake in &wakes {
            green::await_blocking(wake.send(())).map_err(|e| e.to_string())?;
        }
        for handle in handles {
            handle.join().map_err(|e| e.to_string())??;
        }
        meter.all_joined();
        Ok(())
    })
}
