//! The burst on async-executor with one thread: a `LocalExecutor` run by one `block_on`,
//! its main task the future given to `run`, on `async_channel`.

use async_executor::LocalExecutor;
use futures_lite::future::block_on;

use super::BurstMeter;
use crate::common::Params;

pub fn burst(params: &Params) -> Result<(), String> {
    let tasks = params.burst_tasks;
    let executor = LocalExecutor::new();
    block_on(executor.run(async {
        let (announce, announcements) = async_channel::unbounded::<()>();
        let mut wakes = Vec::with_capacity(tasks);
        let mut handles = Vec::with_capacity(tasks);
        let mut meter = BurstMeter::start(tasks);
        for _ in 0..tasks {
            let (wake, parked) = async_channel::bounded::<()>(1);
            let announce = announce.clone();
            wakes.push(wake);
            handles.push(executor.spawn(async move {
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
            handle.await?;
        }
        meter.all_joined();
        Ok(())
    }))
}
