//! Placeholder: filled in by the scaling benchmark.

fn main() {}
