//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::mpsc;
use std::time::Duration;

/// Runs `f` on a thread of its own and returns its value, failing the test with `what`
/// if it has not finished after `seconds` (a hang would otherwise stop the suite), or
/// re-raising its panic.
pub fn within<T: Send + 'static>(
    seconds: u64,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (sender, receiver) = mpsc::channel();
    let thread = std::thread::spawn(move || {
        let _ = sender.send(f());
    });
    match receiver.recv_timeout(Duration::from_secs(seconds)) {
        Ok(value) => value,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("hung for {seconds} s: {what}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => match thread.join() {
            Err(payload) => std::panic::resume_unwind(payload),
            Ok(()) => unreachable!("the thread sends before it ends"),
        },
    }
}

/// A one-worker runtime, so that the order in which fibers run is defined.
pub fn one_worker() -> green::Runtime {
    green::Runtime::builder().workers(1).build().unwrap()
}

/// A connected pair of TCP streams on loopback: (client, server).
pub fn tcp_pair() -> (green::net::TcpStream, green::net::TcpStream) {
    let listener = green::net::TcpListener::bind("127.0.0.1:0").unwrap();
    // The kernel completes the handshake on its own, so one fiber can connect, then accept.
    let client = green::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server, _) = listener.accept().unwrap();
    (client, server)
}
