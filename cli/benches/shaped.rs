//! Placeholder: filled in by the shaped benchmark.

fn main() {}
