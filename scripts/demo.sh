#!/usr/bin/env bash
# Installs what is missing, builds, and runs `spice-shim serve` with the built-in test guest
# (colour bars). Connect with:  remote-viewer spice://127.0.0.1:5930
# Extra arguments go to `spice-shim serve` (e.g. --size 1920x1080 --fps 60 --pattern counter).
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh
cargo build --release -p spice-shim-cli --bin spice-shim
echo "demo: connect with: remote-viewer spice://127.0.0.1:5930   (Ctrl-C stops the server)"
exec target/release/spice-shim serve --pattern bars "$@"
