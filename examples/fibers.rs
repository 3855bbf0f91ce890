//! Two fibers counting in turn, a generator, and a panic caught at a fiber's edge.
//!
//! Run it with `cargo run --example fibers`.

use std::cell::RefCell;
use std::rc::Rc;

use green::fiber::{Fiber, Resume};

fn main() -> std::io::Result<()> {
    // 1. Two fibers take turns, each suspending after every step, under a round-robin loop.
    let log = Rc::new(RefCell::new(Vec::new()));
    let mut fibers = Vec::new();
    for name in ["ping", "pong"] {
        let log = log.clone();
        // SAFETY: the fiber is not leaked while started.
        fibers.push(unsafe {
            Fiber::new(move |suspender| {
                for count in 1..=3 {
                    log.borrow_mut().push(format!("{name} {count}"));
                    suspender.suspend();
                }
            })
        }?);
    }
    while fibers.iter().any(|fiber| !fiber.is_finished()) {
        for fiber in fibers.iter_mut().filter(|fiber| !fiber.is_finished()) {
            if let Resume::Panicked(payload) = fiber.resume() {
                std::panic::resume_unwind(payload);
            }
        }
    }
    println!("round robin: {}", log.borrow().join(", "));

    // 2. A generator: the fiber hands out values through shared state, one per resume.
    let next = Rc::new(RefCell::new(None));
    let slot = next.clone();
    // SAFETY: the fiber is not leaked while started.
    let mut fibonacci = unsafe {
        Fiber::new(move |suspender| {
            let (mut a, mut b) = (0u64, 1u64);
            loop {
                *slot.borrow_mut() = Some(a);
                suspender.suspend();
                (a, b) = (b, a + b);
            }
        })
    }?;
    let mut values = Vec::new();
    for _ in 0..10 {
        let _: Resume<()> = fibonacci.resume();
        values.extend(next.borrow_mut().take());
    }
    println!("fibonacci: {values:?}");
    // Dropping the suspended generator unwinds its stack.
    drop(fibonacci);

    // 3. A panic stays inside its fiber and comes back as a value.
    std::panic::set_hook(Box::new(|_| {}));
    // SAFETY: the fiber is not leaked while started.
    let mut failing = unsafe { Fiber::<()>::new(|_| panic!("something went wrong")) }?;
    if let Resume::Panicked(payload) = failing.resume() {
        println!("caught: {}", payload.downcast_ref::<&str>().unwrap_or(&"?"));
    }
    Ok(())
}
