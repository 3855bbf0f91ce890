//! async-executor on one thread: a `LocalExecutor` run by one `block_on`, its main task
//! being the future given to `run`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use async_executor::LocalExecutor;
use futures_lite::future::block_on;

use crate::common::Params;

/// S3: the main task spawns every task, then awaits them in order.
pub fn spawn_then_join(params: &Params) -> Result<(), String> {
    let tasks = params.spawn_then_join_tasks;
    let times: Vec<Duration> = (0..params.spawn_then_join_runs)
        .map(|_| {
            let executor = LocalExecutor::new();
            block_on(executor.run(async {
                let start = Instant::now();
                let handles: Vec<_> = (0..tasks)
                    .map(|i| executor.spawn(async move { i * 2 }))
                    .collect();
                let mut sum = 0;
                for handle in handles {
                    sum += handle.await;
                }
                black_box(sum);
                start.elapsed()
            }))
        })
        .collect();
    super::report_spawn_then_join(&times, tasks);
    Ok(())
}
