//! A tour of green in one screen: fibers taking turns, sync-style TCP, a sleep, and a
//! future awaited from plain code.
//!
//! Run it with `cargo run --example tour`.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use green::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    green::run(|| -> std::io::Result<()> {
        // 1. The classic green-threads demo: two fibers counting, yielding in turn. Both
        //    start on this fiber's worker, which is not busy: the main fiber parks in
        //    `join` right away, and the two take turns on one thread.
        let counters: Vec<_> = ["ping", "pong"]
            .into_iter()
            .map(|name| {
                green::spawn(move || {
                    for count in 1..=3 {
                        println!("{name} {count}");
                        green::yield_now();
                    }
                })
            })
            .collect();
        for counter in counters {
            counter.join().expect("the counter fiber panicked");
        }

        // 2. A TCP echo exchange in plain Read/Write: each blocking call parks only its fiber.
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let address = listener.local_addr()?;
        let server = green::spawn(move || -> std::io::Result<()> {
            let (mut stream, _) = listener.accept()?;
            let mut buf = [0; 64];
            let n = stream.read(&mut buf)?;
            stream.write_all(&buf[..n])
        });
        let mut client = TcpStream::connect(address)?;
        client.write_all(b"hello, fibers")?;
        let mut reply = [0; 13];
        client.read_exact(&mut reply)?;
        println!("echoed: {}", String::from_utf8_lossy(&reply));
        server.join().expect("the server fiber panicked")?;

        // 3. A sleep parks the fiber; the worker runs others (or waits) meanwhile.
        let start = Instant::now();
        green::sleep(Duration::from_millis(50));
        println!("slept {:?}", start.elapsed());

        // 4. Any future, from plain code: a futures channel fed by an OS thread.
        let (sender, receiver) = futures::channel::oneshot::channel();
        std::thread::spawn(move || sender.send("a message from an OS thread"));
        let message = green::await_blocking(receiver).expect("the sender was dropped");
        println!("received: {message}");
        Ok(())
    })
}
