//! Placeholder: filled in by the workloads benchmark.

fn main() {}
