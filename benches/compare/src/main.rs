//! Placeholder; see benches/compare/README.md.
fn main() {}
