//! The tests (`tests/`) and the example (`examples/tokio_bridge.rs` at the workspace
//! root) of green's `tokio` feature, in a crate of their own so that their dependencies
//! (tokio with its drivers, hyper) are built only when the feature is on: `cargo test
//! --features tokio` at the workspace root runs them, `cargo test` builds nothing here.
