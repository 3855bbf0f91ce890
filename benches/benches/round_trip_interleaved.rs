//! The fiber round trip of `benches/fiber.rs`, measured in short interleaved slices.
//!
//! Run with `cargo bench -p green-benches --bench round_trip_interleaved`.
//!
//! A 2-vCPU virtual machine switches between a fast and a slow phase every few seconds, so
//! two criterion measurements taken one after the other can land in different phases and
//! their ratio then says little. Here each slice times 2 million round trips of green
//! (both `FloatControl` settings) and of corosensei back to back, the order rotating from
//! slice to slice, and the ratio is taken within each slice. The medians over all slices
//! are printed.

use std::hint::black_box;
use std::time::Instant;

use corosensei::stack::DefaultStack;
use corosensei::{Coroutine, CoroutineResult};
use green::fiber::{Fiber, FloatControl, Resume};
use green_benches::{suspending_coroutine, suspending_fiber};

/// Round trips per slice.
const PER_SLICE: u32 = 2_000_000;
/// Slices measured.
const SLICES: usize = 90;

/// Nanoseconds per round trip of `PER_SLICE` resumes of a green fiber.
#[inline(never)]
fn time_green(fiber: &mut Fiber<()>) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_SLICE {
        black_box(matches!(fiber.resume(), Resume::Yielded));
    }
    start.elapsed().as_nanos() as f64 / f64::from(PER_SLICE)
}

/// Nanoseconds per round trip of `PER_SLICE` resumes of a corosensei coroutine.
#[inline(never)]
fn time_corosensei(coroutine: &mut Coroutine<(), (), (), DefaultStack>) -> f64 {
    let start = Instant::now();
    for _ in 0..PER_SLICE {
        black_box(matches!(coroutine.resume(()), CoroutineResult::Yield(())));
    }
    start.elapsed().as_nanos() as f64 / f64::from(PER_SLICE)
}

/// The median of `values`.
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` runs this without it, and
    // then one short slice is enough to show it works.
    let slices = if std::env::args().any(|a| a == "--bench") {
        SLICES
    } else {
        1
    };
    let mut saved = suspending_fiber(FloatControl::Saved);
    let mut shared = suspending_fiber(FloatControl::Shared);
    let mut coroutine = suspending_coroutine();

    let mut times = [Vec::new(), Vec::new(), Vec::new()];
    for slice in 0..slices {
        let mut slice_times = [0.0; 3];
        for k in 0..3 {
            let which = (slice + k) % 3;
            slice_times[which] = match which {
                0 => time_green(&mut saved),
                1 => time_green(&mut shared),
                _ => time_corosensei(&mut coroutine),
            };
        }
        for (all, one) in times.iter_mut().zip(slice_times) {
            all.push(one);
        }
    }
    let ratios = |i: usize| -> Vec<f64> {
        times[i]
            .iter()
            .zip(&times[2])
            .map(|(green, coro)| green / coro)
            .collect()
    };
    let (saved_ratio, shared_ratio) = (median(ratios(0)), median(ratios(1)));
    let [saved_ns, shared_ns, coro_ns] = times.map(median);
    println!("round trip, median of {slices} slices of {PER_SLICE}:");
    println!("  green (FloatControl::Saved)   {saved_ns:6.2} ns  {saved_ratio:.2}x corosensei");
    println!("  green (FloatControl::Shared)  {shared_ns:6.2} ns  {shared_ratio:.2}x corosensei");
    println!("  corosensei                    {coro_ns:6.2} ns");
}
