#!/usr/bin/env bash
# The citizen pages' budgets: builds the release binary, serves the demo territory on a
# loopback port, and measures script sizes and first paint of results in Debian's Chromium.
# Usage: benches/frontend.sh [RUNS]   → prints a Markdown table (also in target/bench/frontend.md)
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-20}"
cargo build --release --quiet
work="$(mktemp -d)"
trap 'kill "$server" 2>/dev/null || true; rm -rf "$work"' EXIT
./target/release/proximites --database-url "sqlite://$work/demo.db" --log warn serve --listen 127.0.0.1:18081 &
server=$!
for _ in $(seq 1 100); do
    curl -sf http://127.0.0.1:18081/healthz >/dev/null && break
    sleep 0.2
done
mkdir -p target/bench
(cd frontend && node tests/budgets.mjs http://127.0.0.1:18081 "$runs") | tee target/bench/frontend.md
