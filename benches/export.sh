#!/usr/bin/env bash
# The whole GIS export benchmark in one command, for the README's figures (issue 6): for each
# size, `proximites bench export` (GeoPackage with R-tree, full GeoJSON over HTTP, OGC pages
# first and deep, GDAL reading 100,000 features through the OGC API) and just after it the
# PostGIS peers on the same generated entries (benches/export-postgis.sh).
#
# Usage: benches/export.sh [ROWS...]          (default: 1000000 3000000)
# Environment: SEED (default 1), RUNS timed repetitions of each page request (default 5), BIN
#   a proximites binary to use instead of building target/release/proximites.
# Writes target/bench/export.md (every figure, with the date and the machine's load); the
# generated CSV and database of each size are kept in target/bench/ and reused by the next run.
set -euo pipefail
export LC_ALL=C

sizes=("$@")
((${#sizes[@]})) || sizes=(1000000 3000000)
seed=${SEED:-1}
runs=${RUNS:-5}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out=$root/target/bench
bin=${BIN:-$root/target/release/proximites}
report=$out/export.md
mkdir -p "$out"

command -v ogr2ogr >/dev/null || { echo "export.sh: ogr2ogr missing (apt-get install gdal-bin)" >&2; exit 69; }
[[ -n ${BIN:-} ]] || (cd "$root" && cargo build --release --locked --quiet)

{
    echo "# GIS export benchmark"
    echo
    echo "$(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, $(awk '/MemTotal/ { printf "%.0f GiB", $2 / 1048576 }' /proc/meminfo), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)"
} >"$report"

for rows in "${sizes[@]}"; do
    csv=$out/synth-$rows-$seed.csv
    db=$out/export-$rows-$seed.db
    [[ -s $csv ]] || "$bin" synth --count "$rows" --seed "$seed" -o "$csv"
    {
        echo
        echo "## $rows entries"
        echo
        echo '```'
        "$bin" --log warn bench export --rows "$rows" --seed "$seed" \
            --database "$db" --runs "$runs"
        echo
        "$root/benches/export-postgis.sh" "$csv"
        echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
        echo '```'
    } | tee -a "$report"
done
echo "written: $report"
