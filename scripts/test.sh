#!/usr/bin/env bash
# Installs what is missing, then runs every check and test: formatting, clippy, unit tests,
# GStreamer pipeline tests, socket-mode tests with gst-launch-1.0, end-to-end tests with real
# spice-gtk clients (spicy-screenshot, remote-viewer under Xvfb), the C embedding test (also under
# valgrind) and the local GL client tests.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --release --workspace
cargo test --release --workspace -- --test-threads=2
