#!/usr/bin/env bash
# PostgreSQL as the engine (issue 15), release build, both engines in one run, on the 3,000,000
# generated entries (seed 1) of benches/search.sh:
#   1. `proximites import` of the generated CSV into a new SQLite file, then into a new database
#      of a private PostgreSQL cluster (COPY): rows per second, then the time until a server
#      started on it answers a search by words (its spatial and text indexes built from the
#      database: « searchable »); then two re-harvests: the same file again (every record
#      unchanged), and the file with one record in ten renamed (300,000 updates); then the
#      same first harvest into a directory that already holds an entry of another source
#      (no empty table to load the fast way: every row checked against the keys as it goes);
#   2. `proximites bench search` on SQLite (the database of benches/search.sh), then on the
#      PostgreSQL database: the in-process latencies (the indexes are in memory either way);
#   3. benches/instances.sh on the PostgreSQL database: start to first answer, a write on one
#      instance visible on the other, HTTP throughput of one instance and of two behind nginx.
# The cluster (Debian's postgresql, a unix socket, no TCP port) lives in target/bench/postgres
# and is stopped at the end; its data stays for a rerun of steps 2 and 3 (SKIP_IMPORT=1).
#
#   BIN=target/release/proximites benches/postgres.sh [JSON]
set -euo pipefail
cd "$(dirname "$0")/.."
json_out=${1:+$(realpath -m "$1")}
rows=3000000
seed=1
csv="target/bench/synth-${rows}-${seed}.csv"
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/proximites
fi
[ -f "$csv" ] || "$BIN" synth --count "$rows" --seed "$seed" -o "$csv"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -x "$pg_bin/initdb" ] || { echo "postgres.sh: PostgreSQL missing (apt-get install postgresql)" >&2; exit 69; }

cluster="$PWD/target/bench/postgres"
run_as=()
[ "$(id -u)" -eq 0 ] && run_as=(runuser -u postgres --)
pg() { "${run_as[@]}" "$pg_bin/$1" "${@:2}"; }
if [ ! -d "$cluster/data" ]; then
    mkdir -p "$cluster"
    [ "$(id -u)" -eq 0 ] && chown postgres "$cluster"
    pg initdb -D "$cluster/data" -U proximites --auth=trust --encoding=UTF8 --locale=C.UTF-8 >/dev/null
fi
# A server sized for this machine (24 GB): what a DBA would set for a bulk load, durability kept.
pg pg_ctl -D "$cluster/data" -l "$cluster/server.log" -w start -o "-k $cluster \
    -c listen_addresses='' -c shared_buffers=2GB -c maintenance_work_mem=1GB \
    -c max_wal_size=16GB -c checkpoint_timeout=30min -c wal_compression=lz4 -c max_connections=60" >/dev/null
stop() { pg pg_ctl -D "$cluster/data" -m fast -w stop >/dev/null 2>&1 || true; }
trap stop EXIT
url="postgres://proximites@localhost/bench?host=$cluster"
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round($(now) - $1, 2))"; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

searchable() { # url work-dir: seconds from start until a search by words answers
    local port started pid
    port=$(free_port)
    started=$(now)
    "$BIN" --database-url "$1" serve --listen "127.0.0.1:$port" --no-demo --data-dir "$2" \
        >"$2.log" 2>&1 &
    pid=$!
    until curl -sf "http://127.0.0.1:$port/api/v1/services?q=mairie&limit=1" >/dev/null; do
        kill -0 "$pid" 2>/dev/null || { cat "$2.log" >&2; exit 1; }
        sleep 0.05
    done
    elapsed "$started"
    kill "$pid"
    wait "$pid" 2>/dev/null || true
}

# The generated file with one record in ten renamed, for the second re-harvest.
renamed="target/bench/synth-${rows}-${seed}-renamed.csv"
rename_one_in_ten() {
    python3 - "$csv" "$renamed" <<'PY'
import csv, sys
with open(sys.argv[1], newline="") as f, open(sys.argv[2], "w", newline="") as g:
    rows, out = csv.reader(f), csv.writer(g)
    out.writerow(next(rows))
    for i, row in enumerate(rows):
        if i % 10 == 0:
            row[2] += " (nouveau nom)"
        out.writerow(row)
PY
}
reharvests() { # url: seconds to import the same file again, then the renamed one
    local started same
    started=$(now)
    "$BIN" --database-url "$1" import "$csv" --source Synth >/dev/null
    same=$(elapsed "$started")
    started=$(now)
    "$BIN" --database-url "$1" import "$renamed" --source Synth >/dev/null
    echo "$same $(elapsed "$started")"
}

if [ -z "${SKIP_IMPORT:-}" ]; then
    [ -f "$renamed" ] || rename_one_in_ten
    work=$(mktemp -d "$PWD/target/bench/postgres-import.XXXXXX")
    echo "== import into SQLite" >&2
    started=$(now)
    "$BIN" --database-url "sqlite://$work/import.db" import "$csv" --source Synth >/dev/null
    sqlite_import=$(elapsed "$started")
    sqlite_searchable=$(searchable "sqlite://$work/import.db" "$work/sqlite-data")
    echo "== re-harvests into SQLite" >&2
    read -r sqlite_same sqlite_renamed < <(reharvests "sqlite://$work/import.db")
    rm -rf "$work"

    echo "== import into PostgreSQL (COPY)" >&2
    pg dropdb -h "$cluster" -U proximites --if-exists bench
    pg createdb -h "$cluster" -U proximites bench
    "$BIN" --database-url "$url" migrate >/dev/null
    started=$(now)
    "$BIN" --database-url "$url" import "$csv" --source Synth >/dev/null
    pg_import=$(elapsed "$started")
    rm -rf target/bench/postgres-data
    pg_searchable=$(searchable "$url" "$PWD/target/bench/postgres-data")
    echo "== re-harvests into PostgreSQL (on a copy: the bench database stays as loaded)" >&2
    pg dropdb -h "$cluster" -U proximites --if-exists bench_reharvest
    pg createdb -h "$cluster" -U proximites -T bench bench_reharvest
    read -r pg_same pg_renamed < <(reharvests "postgres://proximites@localhost/bench_reharvest?host=$cluster")
    pg dropdb -h "$cluster" -U proximites bench_reharvest
    echo "== the first harvest into a directory that holds an entry already" >&2
    one_entry="target/bench/one-entry.csv"
    head -2 "$csv" | sed 's/^synth-1-0,/one-entry,/' >"$one_entry"
    held() { # url: seconds to import the file after one entry of another source
        "$BIN" --database-url "$1" import "$one_entry" --source Commune >/dev/null
        local started
        started=$(now)
        "$BIN" --database-url "$1" import "$csv" --source Synth >/dev/null
        elapsed "$started"
    }
    work=$(mktemp -d "$PWD/target/bench/postgres-import.XXXXXX")
    sqlite_held=$(held "sqlite://$work/held.db")
    rm -rf "$work"
    pg dropdb -h "$cluster" -U proximites --if-exists bench_held
    pg createdb -h "$cluster" -U proximites bench_held
    "$BIN" --database-url "postgres://proximites@localhost/bench_held?host=$cluster" migrate >/dev/null
    pg_held=$(held "postgres://proximites@localhost/bench_held?host=$cluster")
    pg dropdb -h "$cluster" -U proximites bench_held
    rm -f "$one_entry"
    rate() { python3 -c "print(round($rows / $1))"; }
    echo "import of $rows rows: SQLite ${sqlite_import} s ($(rate "$sqlite_import") rows/s), searchable by words ${sqlite_searchable} s after its start"
    echo "import of $rows rows: PostgreSQL ${pg_import} s ($(rate "$pg_import") rows/s, COPY), searchable by words ${pg_searchable} s after its start"
    echo "re-harvest, every record unchanged: SQLite ${sqlite_same} s ($(rate "$sqlite_same") rows/s), PostgreSQL ${pg_same} s ($(rate "$pg_same") rows/s)"
    echo "re-harvest, one record in ten renamed: SQLite ${sqlite_renamed} s ($(rate "$sqlite_renamed") rows/s), PostgreSQL ${pg_renamed} s ($(rate "$pg_renamed") rows/s)"
    echo "first harvest beside an entry of another source: SQLite ${sqlite_held} s ($(rate "$sqlite_held") rows/s), PostgreSQL ${pg_held} s ($(rate "$pg_held") rows/s)"
fi

echo "== bench search on SQLite, the peer" >&2
[ -f "target/bench/search-${rows}-${seed}.db" ] || benches/search.sh "$rows" "$seed"
"$BIN" bench search --rows "$rows" --seed "$seed" --database "target/bench/search-${rows}-${seed}.db" \
    ${json_out:+--json "$json_out.search-sqlite.json"}

echo "== bench search on PostgreSQL" >&2
(cd target/bench && "../../$BIN" bench search --rows "$rows" --seed "$seed" --database "$url" \
    ${json_out:+--json "$json_out.search.json"})

echo "== several instances on PostgreSQL" >&2
# On a copy, so that their writes leave the bench database as it was.
pg dropdb -h "$cluster" -U proximites --if-exists bench_instances
pg createdb -h "$cluster" -U proximites -T bench bench_instances
DATABASE="postgres://proximites@localhost/bench_instances?host=$cluster" \
    benches/instances.sh 100 ${json_out:+"$json_out.instances.json"}
