#!/usr/bin/env bash
# Printed directories benchmark: the 1,283 Auvergne town halls (the demo) and 20,000 generated
# entries in one département, each laid out as an A5 booklet; time and peak memory of the
# whole `proximites directory` command measured by /usr/bin/time -v, the in-process figures by
# `proximites bench directory`. Writes target/bench/directory.md.
#
#   [BIN=path/to/proximites] benches/directory.sh [ROWS] [SEED]      # defaults 20000 1
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS="${1:-20000}"
SEED="${2:-1}"
OUT=target/bench
mkdir -p "$OUT"
command -v /usr/bin/time >/dev/null 2>&1 || apt-get install -y -qq time >/dev/null

# BIN=path uses a binary already built instead of building the release one.
if [ -z "${BIN:-}" ]; then
    cargo build --release --locked
    BIN=target/release/proximites
fi
export RUST_LOG=warn

measure() { # label, then the command: prints "label: wall s, peak RSS MiB"
    local label="$1"; shift
    /usr/bin/time -v "$@" >"$OUT/directory-last.out" 2>"$OUT/directory-last.time"
    local wall rss
    wall=$(grep "Elapsed (wall clock)" "$OUT/directory-last.time" | awk '{print $NF}')
    rss=$(grep "Maximum resident set size" "$OUT/directory-last.time" | awk '{print $NF}')
    echo "| $label | $wall | $((rss / 1024)) MiB | $(cat "$OUT/directory-last.out") |"
}

DEMO="$OUT/directory-demo.db"
[ -f "$DEMO" ] || "$BIN" --database-url "$DEMO" bench directory --demo --runs 1 >/dev/null
DENSE="$OUT/directory-$ROWS.db"
if [ ! -f "$DENSE" ]; then
    "$BIN" synth --count "$ROWS" --seed "$SEED" --departement 63 -o "$OUT/directory-$ROWS.csv"
    "$BIN" --database-url "$DENSE" import "$OUT/directory-$ROWS.csv" --source "Bench"
fi

{
    echo "#### Printed directories, $(date -u +%F), $(nproc) cores"
    echo
    echo "| guide | wall clock (whole command) | peak RSS | output |"
    echo "|---|---|---|---|"
    measure "1,283 town halls, region:84, A5" "$BIN" --database-url "$DEMO" directory --in region:84 --typology mairie --date 2026-11-24 -o "$OUT/mairies-auvergne.pdf"
    measure "1,283 town halls, region:84, A4 by commune" "$BIN" --database-url "$DEMO" directory --in region:84 --typology mairie --group commune --format a4 --date 2026-11-24 -o "$OUT/mairies-auvergne-a4.pdf"
    measure "$ROWS generated entries, departement:63, A5" "$BIN" --database-url "$DENSE" directory --in departement:63 --date 2026-11-24 -o "$OUT/directory-$ROWS.pdf"
    echo
    echo '```'
    "$BIN" --database-url "$DEMO" bench directory --in region:84 --typology mairie --runs 3
    echo '```'
} | tee "$OUT/directory.md"
