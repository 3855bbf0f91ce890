//! The tests (`tests/`) and the example (`examples/tokio_bridge.rs` at the workspace
//! root) of green's `tokio` feature, in a crate of their own so that their dependencies
//! (tokio with its drivers, hyper) are built only when the feature is on: `cargo test
//! --features tokio` at the workspace root runs them, `cargo test` builds nothing here.

// The root crate's test helpers, shared rather than copied.
#[path = "../../tests/common/mod.rs"]
mod common;

pub use common::within;

/// The message of a panic's `payload` (a `&str` or a `String`).
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<&str>() {
        Ok(message) => (*message).to_owned(),
        Err(payload) => payload
            .downcast::<String>()
            .map_or_else(|_| "not a string".to_owned(), |message| *message),
    }
}
