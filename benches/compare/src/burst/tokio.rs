//! The burst on tokio's `Runtime::new()`, the main task being `block_on`'s future (as under
//! `#[tokio::main]`), on `async_channel`.

use tokio::runtime::Runtime;

use super::BurstMeter;
use crate::common::Params;

pub fn burst_multi_thread(params: &Params) -> Result<(), String> {
    let tasks = params.burst_tasks;
    let runtime = Runtime::new().map_err(|e| format!("cannot start tokio: {e}"))?;
    runtime.block_on(async move {
        let (announce, announcements) = async_channel::unbounded::<()>();
        let mut wakes = Vec::with_capacity(tasks);
        let mut handles = Vec::with_capacity(tasks);
        let mut meter = BurstMeter::start(tasks);
        for _ in 0..tasks {
            let (wake, parked) = async_channel::bounded::<()>(1);
            let announce = announce.clone();
            wakes.push(wake);
            handles.push(tokio::spawn(async move {
                announce.send(()).await.map_err(|_| "announce")?;
                parked.recv().await.map_err(|_| "wait")
            }));
        }
        for _ in 0..tasks {
            announcements.recv().await.map_err(|e| e.to_string())?;
        }
        meter.all_announced();
        for wake in &wakes {
            wake.send(()).await.map_err(|e| e.to_string())?;
        }
        for handle in handles {
            handle.await.map_err(|e| e.to_string())??;
        }
        meter.all_joined();
        Ok(())
    })
}
