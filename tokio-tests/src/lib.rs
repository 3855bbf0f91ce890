//! The tests (`tests/`) and the example (`examples/tokio_bridge.rs` at the workspace
//! root) of green's `tokio` feature, in a crate of their own so that their dependencies
//! (tokio with its drivers, hyper) are built only when the feature is on: `cargo test
//! --features tokio` at the workspace root runs them, `cargo test` builds nothing here.

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

/// The message of a panic's `payload` (a `&str` or a `String`).
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<&str>() {
        Ok(message) => (*message).to_owned(),
        Err(payload) => payload
            .downcast::<String>()
            .map_or_else(|_| "not a string".to_owned(), |message| *message),
    }
}
