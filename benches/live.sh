#!/usr/bin/env bash
# The live-indexes benchmark (issue 14) in one command, for the README's figures:
#   1. the release build, and the database of ROWS generated entries that benches/search.sh
#      uses (target/bench/search-ROWS-SEED.db, made here when missing, from the same CSV);
#   2. `proximites bench live` on it: the server's start, single PATCHes over HTTP under a
#      search load (and that load's latencies without and with them), 64 clients confirming
#      entries, command-line imports of 1,000 and 100,000 rows while the server serves, and a
#      full text index build;
#   3. the PostgreSQL peer on the same CSV (benches/postgis.sh with few queries): the tsvector
#      column and its GIN index, the build the text index is compared with.
#
# Usage: benches/live.sh [ROWS] [SEED]          (defaults 3000000 and 1)
# Environment: BIN (default target/release/proximites, built here), LIVE_ARGS (more options
#   of `bench live`), NO_POSTGRES=1 to skip the peer.
# Note: the load generator, the server and PostgreSQL share the machine's two cores.
set -euo pipefail
export LC_ALL=C

rows=${1:-3000000}
seed=${2:-1}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/target/bench
csv=$out/synth-$rows-$seed.csv
db=$out/search-$rows-$seed.db
if [[ -z ${BIN:-} ]]; then
    (cd "$root" && cargo build --release)
    BIN=$root/target/release/proximites
fi
mkdir -p "$out"

if [[ ! -s $csv ]]; then
    echo "== generating $rows entries (seed $seed) into $csv" >&2
    "$BIN" synth --count "$rows" --seed "$seed" -o "$csv.partial"
    mv "$csv.partial" "$csv"
fi
if [[ ! -s $db ]]; then
    echo "== importing $csv into $db" >&2
    # Into a temporary name first: an interrupted import must not leave a half database to reuse.
    rm -f "$db.partial" "$db.partial-wal" "$db.partial-shm"
    "$BIN" --database-url "sqlite://$db.partial" import "$csv"
    mv "$db.partial" "$db"
fi

echo "== proximites bench live" >&2
# shellcheck disable=SC2086
"$BIN" --database-url "sqlite://$db" --log warn bench live ${LIVE_ARGS:-} | tee "$out/live.txt"

if [[ -z ${NO_POSTGRES:-} ]]; then
    echo "== PostgreSQL peer: tsvector column and GIN index on the same CSV" >&2
    WARMUP=1 "$root/benches/postgis.sh" "$csv" "$out/live-postgis.json" 10 "$seed" >/dev/null
    python3 - "$out/live-postgis.json" <<'EOF' | tee -a "$out/live.txt"
import json, sys
r = json.load(open(sys.argv[1]))
s = r["steps_s"]
print(f"PostgreSQL {r['postgres']}: tsvector column {s['tsv']:.1f} s + GIN index {s['gin']:.1f} s"
      f" = {s['tsv'] + s['gin']:.1f} s for {r['rows']:,} rows")
EOF
fi
