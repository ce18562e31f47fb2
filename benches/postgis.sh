#!/usr/bin/env bash
# The PostGIS side of the search benchmark: load a `proximites synth` CSV into a private
# PostgreSQL 15 + PostGIS 3 cluster, index it the way a PostGIS deployment would, and time the
# four queries `proximites bench search` times in-process:
#   (a) the 10 nearest `pharmacie` (KNN on geography),
#   (b) everything within 5 km: first page of 100 nearest first, plus the total,
#   (c) the words « pharmacie » within 5 km: first page of 20 nearest first, plus the total,
#   (d) the words « piscine municipale » alone: first page of 20 by rank, plus the total.
# Indexes: GiST on geog, btree on typology_code, GIN on the French tsvector; then (a) and (b)
# once more with a btree_gist GiST on (typology_code, geog) added, reported as *_typology_gist.
#
# Usage: benches/postgis.sh CSV OUT.json [QUERIES] [SEED]
#   QUERIES timed executions of each query (default 1000), after WARMUP (env, default 100)
#   untimed ones at other points; SEED seeds pgbench's random points (default 1).
# Environment: PGBIN (default /usr/lib/postgresql/15/bin), WARMUP, PGBENCH_MODE (simple,
#   extended or prepared; default prepared), TAXONOMY (typologies.toml, for the typology words).
#
# The cluster lives in a temporary directory, listens on 127.0.0.1 only (plus a unix socket in
# that directory, which the clients use) and is stopped and deleted on exit, whatever happens.
# Besides OUT.json it writes OUT.plans.txt: the EXPLAIN ANALYZE of each query at two points.
set -euo pipefail
# EPOCHREALTIME and printf must use a decimal point whatever the caller's locale.
export LC_ALL=C

if [[ $# -lt 2 || $# -gt 4 ]]; then
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
fi
csv=$(realpath "$1")
out=$2
queries=${3:-1000}
seed=${4:-1}
warmup=${WARMUP:-100}
mode=${PGBENCH_MODE:-prepared}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
taxonomy=${TAXONOMY:-$here/../taxonomy/typologies.toml}
[[ -r $csv ]] || { echo "postgis.sh: cannot read $csv" >&2; exit 66; }

# A fresh machine lacks the server and the extension; install them rather than fail half-way.
ensure_packages() {
    local missing=()
    [[ -x $PGBIN/initdb && -x $PGBIN/pgbench && -x $PGBIN/psql ]] || missing+=(postgresql-15)
    [[ -f /usr/share/postgresql/15/extension/postgis.control ]] || missing+=(postgresql-15-postgis-3)
    command -v python3 >/dev/null || missing+=(python3)
    ((${#missing[@]} == 0)) && return
    if [[ $EUID -ne 0 ]]; then
        echo "postgis.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
        exit 69
    fi
    echo "installing ${missing[*]}" >&2
    # Package lists may be absent on a fresh image: update only when the first try fails.
    apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
}
ensure_packages

# PostgreSQL refuses to run as root: the server runs as `postgres`, which owns the directory.
# Clients (psql, pgbench) stay the caller, so the CSV and the logs need no permission changes.
if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    as_server() { runuser -u postgres -- "$@"; }
else
    as_server() { "$@"; }
fi

work=$(mktemp -d -t postgis-bench.XXXXXX)
data=$work/data
cleanup() {
    if [[ -f $data/postmaster.pid ]]; then
        # Immediate: the cluster is thrown away, a shutdown checkpoint would only cost time.
        as_server "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
# Without these a Ctrl-C or kill would skip the EXIT trap and leave a server running.
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ $EUID -eq 0 ]]; then chown postgres: "$work"; fi

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }

as_server "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
# Sized for the 2-core, 24 GB reference machine. Durability is off: the cluster is discarded,
# and it only matters while loading (the timed queries are read-only). autovacuum is off
# because the script runs VACUUM ANALYZE itself and nothing must run beside the timed queries.
cat >>"$data/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$work'
shared_buffers = 2GB
effective_cache_size = 16GB
work_mem = 64MB
maintenance_work_mem = 2GB
max_worker_processes = 4
max_parallel_workers = 2
max_parallel_workers_per_gather = 2
max_parallel_maintenance_workers = 2
random_page_cost = 1.1
effective_io_concurrency = 200
jit = off
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 16GB
checkpoint_timeout = 1h
autovacuum = off
EOF
as_server "$PGBIN/pg_ctl" -D "$data" -l "$work/server.log" -w -t 120 start >/dev/null \
    || { cat "$work/server.log" >&2; exit 1; }

psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres "$@"; }
sql() { psql_ -d bench -At "$@"; }
psql_ -d postgres -c 'CREATE DATABASE bench'

# Our text index knows each typology by its French and English labels and synonyms, not only by
# its code: give PostgreSQL the same words. Analysing them for every row would cost more than
# the rest of the text column (the synonym lists are long), so each typology's words are
# analysed once, here, into a tsvector literal of an immutable function the generated column
# calls. Rows of a typology the taxonomy lacks fall back to the words of their code.
typology_values() {
    python3 - "$taxonomy" <<'EOF'
import sys, tomllib
def lit(s):
    return "'" + s.replace("'", "''") + "'"
try:
    with open(sys.argv[1], "rb") as f:
        typologies = tomllib.load(f)["typology"]
except FileNotFoundError:
    typologies = []
    print(f"postgis.sh: {sys.argv[1]} not found, typologies known by their code only", file=sys.stderr)
rows = [f"({lit(t['code'])}, {lit(' '.join([t['label_fr'], t.get('label_en', '')] + t.get('synonyms', [])))})"
        for t in typologies]
print("(VALUES " + ",\n    ".join(rows or ["(NULL, NULL)"]) + ")")
EOF
}

sql <<EOF
CREATE EXTENSION postgis;
CREATE EXTENSION unaccent;
CREATE TEXT SEARCH CONFIGURATION fr_unaccent (COPY = french);
ALTER TEXT SEARCH CONFIGURATION fr_unaccent
    ALTER MAPPING FOR hword, hword_part, word WITH unaccent, french_stem;
DO \$do\$ BEGIN
EXECUTE (
    SELECT format(\$f\$CREATE FUNCTION typology_tsv(code text) RETURNS tsvector
        LANGUAGE sql IMMUTABLE PARALLEL SAFE
        AS \$b\$ SELECT CASE code %s ELSE to_tsvector('fr_unaccent', replace(code, '-', ' ')) END \$b\$\$f\$,
        coalesce(string_agg(format('WHEN %L THEN %L::tsvector', code, to_tsvector('fr_unaccent', words)), ' '), ''))
    FROM $(typology_values) AS t (code, words)
    WHERE code IS NOT NULL);
END \$do\$;
EOF

rows_in_file=$(($(wc -l <"$csv") - 1))
echo "PostGIS: loading $rows_in_file rows from $csv (cluster on 127.0.0.1:$port, $work)" >&2

# Created in the COPY's transaction so that, with wal_level = minimal, the load writes no WAL.
t=$EPOCHREALTIME
sql -1 -c "CREATE TABLE services (
    id bigint GENERATED ALWAYS AS IDENTITY,
    source_ref text, typology_code text NOT NULL, name text NOT NULL, address text,
    postcode text, city text, insee_code text,
    lon double precision NOT NULL, lat double precision NOT NULL,
    phone text, email text, website text, opening_hours text, wheelchair text, description text)" \
    -c "COPY services (source_ref, typology_code, name, address, postcode, city, insee_code, lon, lat,
                       phone, email, website, opening_hours, wheelchair, description)
        FROM STDIN (FORMAT csv, HEADER true)" <"$csv"
load_s=$(elapsed "$t")

step() {
    local t=$EPOCHREALTIME
    sql -c "$1"
    elapsed "$t"
}
# Each derived column is its own table rewrite, so their costs are reported apart; both come
# before the indexes, which a rewrite would rebuild.
geog_s=$(step "ALTER TABLE services ADD COLUMN geog geography(Point, 4326)
    GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)::geography) STORED")
# Name weighted A as the brief says; typology words B, place C, description D (ts_rank's
# default weights then count a name match 10 times a description match).
tsv_s=$(step "ALTER TABLE services ADD COLUMN tsv tsvector GENERATED ALWAYS AS (
       setweight(to_tsvector('fr_unaccent', name), 'A')
    || setweight(typology_tsv(typology_code), 'B')
    || setweight(to_tsvector('fr_unaccent', coalesce(city, '') || ' ' || coalesce(address, '')
                                            || ' ' || coalesce(postcode, '')), 'C')
    || setweight(to_tsvector('fr_unaccent', coalesce(description, '')), 'D')) STORED")
gist_s=$(step "CREATE INDEX services_geog ON services USING gist (geog)")
btree_s=$(step "CREATE INDEX services_typology ON services (typology_code)")
gin_s=$(step "CREATE INDEX services_tsv ON services USING gin (tsv)")
# Statistics for the planner, and the visibility map for bitmap scans.
vacuum_s=$(step "VACUUM (ANALYZE) services")
index_s=$(awk -v a="$geog_s" -v b="$tsv_s" -v c="$gist_s" -v d="$btree_s" -v e="$gin_s" -v f="$vacuum_s" \
    'BEGIN { printf "%.3f", a + b + c + d + e + f }')

rows=$(sql -c "SELECT count(*) FROM services")
sizes=$(sql -F ' ' -c "SELECT pg_table_size('services'), pg_indexes_size('services'),
    pg_relation_size('services_geog'), pg_relation_size('services_typology'), pg_relation_size('services_tsv')")
read -r table_bytes indexes_bytes gist_bytes btree_bytes gin_bytes <<<"$sizes"
pg_version=$(sql -c "SHOW server_version" | cut -d' ' -f1)
postgis_version=$(sql -c "SELECT postgis_lib_version()")
echo "PostGIS: $rows rows loaded in ${load_s} s, columns + indexes + VACUUM ANALYZE in ${index_s} s" >&2

# The four queries. psql and pgbench share the :lon / :lat syntax, so the same SQL serves the
# sanity check (psql -v) and the timing (pgbench \set). Distances are on the sphere
# (use_spheroid false), like `<->` on geography and like our index, so the distances returned
# agree with the order. The total comes with the page through count(*) OVER (), over every match
# before the LIMIT, in the same statement: one round trip, one snapshot, as our API.
# (b) and (c) sort the matches by their computed distance instead of `ORDER BY geog <->`: every
# match is fetched for the total anyway, and walking the GiST index in distance order to do so
# was slower (p50 and p99, 300,000 rows).
qdir=$work/queries
mkdir -p "$qdir"
point="ST_SetSRID(ST_MakePoint(:lon, :lat), 4326)::geography"
cat >"$qdir/a.sql" <<EOF
SELECT id, ST_Distance(geog, $point, false) AS distance_m
FROM services
WHERE typology_code = 'pharmacie'
ORDER BY geog <-> $point
LIMIT 10;
EOF
cat >"$qdir/b.sql" <<EOF
SELECT id, distance_m, count(*) OVER () AS total
FROM (SELECT id, ST_Distance(geog, $point, false) AS distance_m
      FROM services
      WHERE ST_DWithin(geog, $point, 5000, false)) AS m
ORDER BY distance_m, id
LIMIT 100;
EOF
cat >"$qdir/c.sql" <<EOF
SELECT id, distance_m, count(*) OVER () AS total
FROM (SELECT id, ST_Distance(geog, $point, false) AS distance_m
      FROM services
      WHERE tsv @@ plainto_tsquery('fr_unaccent', 'pharmacie')
        AND ST_DWithin(geog, $point, 5000, false)) AS m
ORDER BY distance_m, id
LIMIT 20;
EOF
# (d) ignores the point; pgbench sets it anyway, so the four scripts have the same shape.
cat >"$qdir/d.sql" <<EOF
SELECT id, ts_rank(tsv, q) AS rank, count(*) OVER () AS total
FROM services, plainto_tsquery('fr_unaccent', 'piscine municipale') AS q
WHERE tsv @@ q
ORDER BY rank DESC, id
LIMIT 20;
EOF
# The floor under every figure: one round trip of the protocol, nothing to compute.
echo 'SELECT 1;' >"$qdir/select_1.sql"
# The plain counts the totals must equal.
cat >"$qdir/a.count.sql" <<EOF
SELECT least(10, count(*)) FROM services WHERE typology_code = 'pharmacie';
EOF
cat >"$qdir/b.count.sql" <<EOF
SELECT count(*) FROM services WHERE ST_DWithin(geog, $point, 5000, false);
EOF
cat >"$qdir/c.count.sql" <<EOF
SELECT count(*) FROM services
WHERE tsv @@ plainto_tsquery('fr_unaccent', 'pharmacie') AND ST_DWithin(geog, $point, 5000, false);
EOF
cat >"$qdir/d.count.sql" <<EOF
SELECT count(*) FROM services WHERE tsv @@ plainto_tsquery('fr_unaccent', 'piscine municipale');
EOF
# pgbench's random() gives integers: draw micro-degrees and scale them.
for q in a b c d select_1; do
    {
        echo '\set lon -1.5 + random(0, 9000000) / 1000000.0'
        echo '\set lat 43.5 + random(0, 6000000) / 1000000.0'
        cat "$qdir/$q.sql"
    } >"$qdir/$q.pgbench"
done

plans=${out%.json}.plans.txt
: >"$plans"
sanity_ok=true
# Each query once at Clermont-Ferrand (dense) and once in the Creuse countryside: the rows, the
# total against a plain count, and the plan (EXPLAIN ANALYZE, into $plans).
sanity() {
    local title=$1 place name lon lat q result n total expect ok
    shift
    for place in "Clermont-Ferrand 3.0870 45.7772" "Creuse 2.0500 46.1000"; do
        read -r name lon lat <<<"$place"
        for q in "$@"; do
            result=$(sql -F ' ' -v lon="$lon" -v lat="$lat" -f "$qdir/$q.sql")
            n=$(grep -c . <<<"$result" || true)
            expect=$(sql -v lon="$lon" -v lat="$lat" -f "$qdir/$q.count.sql")
            if [[ $q == a ]]; then
                ok=$([[ $n == "$expect" ]] && echo ok || echo MISMATCH)
                printf '  sanity %-16s (a) %s rows (expected %s), %s: %s\n' "$name" "$n" "$expect" \
                    "$(awk 'NR == 1 { a = $2 } { b = $2 } END { if (NR) printf "%.0f to %.0f m", a, b }' <<<"$result")" "$ok" >&2
            else
                total=$(head -n1 <<<"$result" | awk '{ print $3 }')
                total=${total:-0}
                ok=$([[ $total == "$expect" && $n -le $total ]] && echo ok || echo MISMATCH)
                printf '  sanity %-16s (%s) %s rows, total %s (plain count %s): %s\n' "$name" "$q" "$n" "$total" "$expect" "$ok" >&2
            fi
            [[ $ok == ok ]] || sanity_ok=false
            {
                echo "=== ($q) $title, at $name ($lon, $lat)"
                # psql interpolates :lon only in what it reads, not in -c.
                { echo 'EXPLAIN (ANALYZE, BUFFERS)'; cat "$qdir/$q.sql"; } | sql -v lon="$lon" -v lat="$lat"
                echo
            } >>"$plans"
        done
    done
}
# Whether the plans of (a) under the sanity TITLE contain PATTERN.
plan_of_a_has() {
    awk -v t="=== (a) $1," 'index($0, t) == 1 { f = 1; next } /^===/ { f = 0 } f' "$plans" | grep -q "$2"
}

# One single-client pgbench run per query, -M prepared by default like an application's
# driver. The warm-up draws other points (seed + 1) so the timed run does not replay cached ones.
bench() {
    "$PGBIN/pgbench" -n -h "$work" -p "$port" -U postgres -M "$mode" -c 1 -j 1 "$@" bench \
        >"$work/pgbench.out" 2>&1 || { cat "$work/pgbench.out" >&2; exit 1; }
}
mkdir -p "$work/log"
timed() {
    local name=$1 q=$2
    bench -t "$warmup" --random-seed=$((seed + 1)) -f "$qdir/$q.pgbench"
    bench -t "$queries" --random-seed="$seed" --log --log-prefix="$work/log/$name" -f "$qdir/$q.pgbench"
}

echo "PostGIS: the indexes above (GiST on geog, btree on typology_code, GIN on tsv)" >&2
sanity "GiST on geog" a b c d
if plan_of_a_has "GiST on geog" 'Order By: (geog <->'; then
    echo "  (a) walks the GiST index of geog in distance order (KNN), filtering on the typology" >&2
else
    echo "  note: (a) does not walk the GiST index in distance order (see $plans)" >&2
fi
for q in select_1 a b c d; do timed "$q" "$q"; done

# The usual PostGIS answer to a KNN filtered by an equality is one GiST over both columns
# (btree_gist), which plays the part of our R-tree per typology. It is timed apart: once it
# exists the planner also picks it for (b), which has no typology (wrongly: it has to visit
# every typology's subtree), so (b) is timed again with it.
typology_gist_s=$(step "CREATE EXTENSION btree_gist;
    CREATE INDEX services_typology_geog ON services USING gist (typology_code, geog); ANALYZE services")
typology_gist_bytes=$(sql -c "SELECT pg_relation_size('services_typology_geog')")
echo "PostGIS: GiST (typology_code, geog) built in ${typology_gist_s} s" >&2
sanity "GiST on (typology_code, geog)" a b
if plan_of_a_has "GiST on (typology_code, geog)" 'Index Scan using services_typology_geog'; then
    echo "  (a) walks the GiST index of (typology_code, geog) in distance order" >&2
else
    echo "  note: (a) does not use the GiST index of (typology_code, geog) (see $plans)" >&2
fi
timed a_typology_gist a
timed b_typology_gist b

# Per-transaction logs: "client transaction latency_us script epoch_s epoch_us"; percentiles
# picked like bench.rs does (index round((n - 1) q) of the sorted latencies).
# The figures reach Python through the environment, so its code needs no shell quoting.
LOGS=$work/log OUT=$out PLANS=$plans ROWS=$rows LOAD_S=$load_s INDEX_S=$index_s \
    GEOG_S=$geog_s TSV_S=$tsv_s GIST_S=$gist_s BTREE_S=$btree_s GIN_S=$gin_s \
    VACUUM_S=$vacuum_s TYPOLOGY_GIST_S=$typology_gist_s TABLE_BYTES=$table_bytes \
    INDEXES_BYTES=$indexes_bytes GIST_BYTES=$gist_bytes BTREE_BYTES=$btree_bytes \
    GIN_BYTES=$gin_bytes TYPOLOGY_GIST_BYTES=$typology_gist_bytes QUERIES=$queries \
    WARMUP=$warmup SEED=$seed MODE=$mode SANITY_OK=$sanity_ok PG_VERSION=$pg_version \
    POSTGIS_VERSION=$postgis_version python3 - <<'EOF'
import glob, json, os, sys
env = os.environ
i = lambda k: int(env[k])
f_ = lambda k: float(env[k])
logs, out, queries = env["LOGS"], env["OUT"], i("QUERIES")
result = {
    "rows": i("ROWS"), "load_s": f_("LOAD_S"), "index_s": f_("INDEX_S"),
    "steps_s": {"geog": f_("GEOG_S"), "tsv": f_("TSV_S"), "gist": f_("GIST_S"), "btree": f_("BTREE_S"),
                "gin": f_("GIN_S"), "vacuum_analyze": f_("VACUUM_S"), "typology_gist": f_("TYPOLOGY_GIST_S")},
    "spatial_build_s": round(f_("GEOG_S") + f_("GIST_S"), 3),
    "text_build_s": round(f_("TSV_S") + f_("GIN_S"), 3),
    "table_bytes": i("TABLE_BYTES"), "indexes_bytes": i("INDEXES_BYTES"),
    "index_bytes": {"gist": i("GIST_BYTES"), "btree": i("BTREE_BYTES"), "gin": i("GIN_BYTES"),
                    "typology_gist": i("TYPOLOGY_GIST_BYTES")},
    "queries": queries, "warmup": i("WARMUP"), "seed": i("SEED"), "pgbench_mode": env["MODE"],
    "sanity_ok": env["SANITY_OK"] == "true",
    "postgres": env["PG_VERSION"], "postgis": env["POSTGIS_VERSION"],
}
for name in ["select_1", "a", "b", "c", "d", "a_typology_gist", "b_typology_gist"]:
    micros = []
    for path in glob.glob(os.path.join(logs, name + ".[0-9]*")):
        with open(path) as f:
            micros += [int(line.split()[2]) for line in f if line.strip()]
    if len(micros) != queries:
        sys.exit(f"postgis.sh: ({name}) logged {len(micros)} transactions, expected {queries}")
    micros.sort()
    at = lambda p: micros[int((len(micros) - 1) * p + 0.5)]
    result[name] = {"p50_us": at(0.5), "p99_us": at(0.99), "mean_us": round(sum(micros) / len(micros), 1)}
os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
with open(out, "w") as f:
    json.dump(result, f, indent=2)
    f.write("\n")
labels = {"a": "10 nearest pharmacie", "b": "all within 5 km (100 + total)",
          "c": "« pharmacie » within 5 km (20 + total)", "d": "« piscine municipale » (20 + total)",
          "a_typology_gist": "10 nearest pharmacie, GiST (typology, geog)",
          "b_typology_gist": "all within 5 km, GiST (typology, geog) too",
          "select_1": "SELECT 1 (the round trip alone)"}
s, n = result["steps_s"], result["rows"]
print(f"PostgreSQL {result['postgres']} + PostGIS {result['postgis']}, {n:,} rows")
print(f"  load (COPY) {result['load_s']:.1f} s; geography column {s['geog']:.1f} s, tsvector column {s['tsv']:.1f} s,")
print(f"  GiST {s['gist']:.1f} s, btree {s['btree']:.1f} s, GIN {s['gin']:.1f} s, VACUUM ANALYZE {s['vacuum_analyze']:.1f} s"
      f" (total {result['index_s']:.1f} s); GiST (typology, geog) {s['typology_gist']:.1f} s")
print(f"  table {result['table_bytes'] / n:.0f} B/row, indexes {result['indexes_bytes'] / n:.0f} B/row"
      f" (GiST {result['index_bytes']['gist'] / n:.0f}, GIN {result['index_bytes']['gin'] / n:.0f})")
print(f"  {result['queries']} queries each, single client, pgbench -M {result['pgbench_mode']}:")
for name, label in labels.items():
    r = result[name]
    print(f"  {'(' + name[0] + ')' if len(name) == 1 or name[1] == '_' else '':<4}{label:<46} p50 {r['p50_us']:>7} µs  p99 {r['p99_us']:>7} µs  mean {r['mean_us']:>9} µs")
print(f"  written to {out}, plans in {env['PLANS']}")
EOF
$sanity_ok || { echo "postgis.sh: a sanity check failed (see above)" >&2; exit 1; }
