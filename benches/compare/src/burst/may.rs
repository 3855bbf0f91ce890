//! The burst on may with its default configuration (one worker per CPU), the main task a
//! coroutine. may has no way to wait on a future, so the coroutines block on may's own
//! channels (`may::sync::mpsc`, unbounded: may has no bounded channel; with one value
//! sent per channel that makes no difference).

use super::BurstMeter;
use crate::common::Params;
use crate::rt_may::{go, join};

pub fn burst(params: &Params) -> Result<(), String> {
    let tasks = params.burst_tasks;
    join(go(move || {
        let (announce, announcements) = may::sync::mpsc::channel::<()>();
        let mut wakes = Vec::with_capacity(tasks);
        let mut handles = Vec::with_capacity(tasks);
        let mut meter = BurstMeter::start(tasks);
        for _ in 0..tasks {
            let (wake, parked) = may::sync::mpsc::channel::<()>();
            let announce = announce.clone();
            wakes.push(wake);
            handles.push(go(move || {
                announce.send(()).map_err(|_| "announce")?;
                parked.recv().map_err(|_| "wait")
            }));
        }
        for _ in 0..tasks {
            announcements.recv().map_err(|e| e.to_string())?;
        }
        meter.all_announced();
        for wake in &wakes {
            wake.send(()).map_err(|e| e.to_string())?;
        }
        for handle in handles {
            join(handle)??;
        }
        meter.all_joined();
        Ok(())
    }))?
}
