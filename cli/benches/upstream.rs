//! Placeholder: filled in by the upstream benchmark.

fn main() {}
