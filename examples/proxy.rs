//! The example proxy (being written).
fn main() {}
