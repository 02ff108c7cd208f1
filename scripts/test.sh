#!/usr/bin/env bash
# Installs what is missing, then runs every check and test: formatting, clippy, unit tests,
# GStreamer pipeline tests, socket-mode tests with gst-launch-1.0, end-to-end tests with real
# spice-gtk clients (spicy-screenshot, remote-viewer under Xvfb), the C embedding test (also under
# valgrind), the local GL client tests, and a smoke run of every benchmark.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --release --workspace
# A hung test fails the run after 25 minutes instead of holding CI until its limit.
timeout --kill-after=30 1500 cargo test --release --workspace -- --test-threads=2
# A smoke run of every benchmark (cli/benches/*.rs): run without `--bench`, each one takes its
# quick mode and fails only when a figure was not produced or a cookie did not come back.
timeout --kill-after=30 900 cargo test --release -p spice-shim-cli --benches
