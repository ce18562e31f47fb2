#!/usr/bin/env bash
# The PostGIS side of the export benchmark (issue 6): load a `proximites synth` CSV into a
# private PostgreSQL 15 + PostGIS 3 cluster, then time
#   (1) every row as GeoJSON through ST_AsGeoJSON, streamed out of COPY (MB/s),
#   (2) ogr2ogr from PostGIS to a GeoPackage with its R-tree (seconds),
# the peers of `proximites bench export`'s full GeoJSON download and GeoPackage.
#
# Usage: benches/export-postgis.sh CSV
# Environment: PGBIN (default /usr/lib/postgresql/15/bin).
# The cluster lives in a temporary directory, listens on a unix socket there only, and is
# stopped and deleted on exit, whatever happens.
set -euo pipefail
export LC_ALL=C

if [[ $# -ne 1 ]]; then
    sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
fi
csv=$(realpath "$1")
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
[[ -r $csv ]] || { echo "export-postgis.sh: cannot read $csv" >&2; exit 66; }

missing=()
[[ -x $PGBIN/initdb && -x $PGBIN/psql ]] || missing+=(postgresql-15)
[[ -f /usr/share/postgresql/15/extension/postgis.control ]] || missing+=(postgresql-15-postgis-3)
command -v ogr2ogr >/dev/null || missing+=(gdal-bin)
if ((${#missing[@]})); then
    [[ $EUID -eq 0 ]] || { echo "export-postgis.sh: install ${missing[*]}" >&2; exit 69; }
    apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi

# PostgreSQL refuses to run as root: the server runs as `postgres`, which owns the directory.
if [[ $EUID -eq 0 ]]; then
    id postgres >/dev/null 2>&1 || useradd --system --home-dir /var/lib/postgresql postgres
    as_server() { runuser -u postgres -- "$@"; }
else
    as_server() { "$@"; }
fi
work=$(mktemp -d -t export-postgis.XXXXXX)
data=$work/data
cleanup() {
    if [[ -f $data/postmaster.pid ]]; then
        as_server "$PGBIN/pg_ctl" -D "$data" -m immediate -w stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
if [[ $EUID -eq 0 ]]; then chown postgres: "$work"; chmod 777 "$work"; fi

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.2f", b - a }'; }

as_server "$PGBIN/initdb" -D "$data" -U postgres --auth=trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
# As benches/postgis.sh: sized for the 2-core reference machine, durability off (thrown away).
cat >>"$data/postgresql.conf" <<EOF
listen_addresses = ''
unix_socket_directories = '$work'
shared_buffers = 2GB
work_mem = 64MB
maintenance_work_mem = 2GB
jit = off
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = minimal
max_wal_senders = 0
max_wal_size = 16GB
autovacuum = off
EOF
as_server "$PGBIN/pg_ctl" -D "$data" -l "$work/server.log" -w -t 120 start >/dev/null \
    || { cat "$work/server.log" >&2; exit 1; }
psql_() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$work" -U postgres "$@"; }
psql_ -d postgres -c 'CREATE DATABASE bench'
psql_ -d bench -c 'CREATE EXTENSION postgis'

t=$EPOCHREALTIME
psql_ -d bench -1 -c "CREATE TABLE services (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    source_ref text, typology text NOT NULL, name text NOT NULL, address text,
    postcode text, city text, insee_code text,
    lon double precision NOT NULL, lat double precision NOT NULL,
    phone text, email text, website text, opening_hours text, wheelchair text, description text)" \
    -c "COPY services (source_ref, typology, name, address, postcode, city, insee_code, lon, lat,
                       phone, email, website, opening_hours, wheelchair, description)
        FROM STDIN (FORMAT csv, HEADER true)" <"$csv"
psql_ -d bench -c "ALTER TABLE services ADD COLUMN geom geometry(Point, 4326)
    GENERATED ALWAYS AS (ST_SetSRID(ST_MakePoint(lon, lat), 4326)) STORED" \
    -c "CREATE INDEX services_geom ON services USING gist (geom)" -c "VACUUM (ANALYZE) services"
rows=$(psql_ -d bench -At -c "SELECT count(*) FROM services")
echo "PostGIS: $rows rows loaded and indexed in $(elapsed "$t") s"

# (1) GeoJSON: one Feature per row, 6 decimals, every attribute, streamed by COPY.
t=$EPOCHREALTIME
bytes=$(psql_ -d bench -c "COPY (SELECT ST_AsGeoJSON(s.*, 'geom', 6)
    FROM (SELECT id, typology, name, address, postcode, city, insee_code, phone, email, website,
                 opening_hours, wheelchair, description, geom FROM services) s) TO STDOUT" | wc -c)
s=$(elapsed "$t")
echo "PostGIS ST_AsGeoJSON via COPY: $((bytes / 1000000)) MB in $s s = $(awk -v b="$bytes" -v s="$s" 'BEGIN { printf "%.0f", b / 1e6 / s }') MB/s"

# (2) ogr2ogr from PostGIS to a GeoPackage (with its R-tree, GDAL's default).
t=$EPOCHREALTIME
ogr2ogr -f GPKG "$work/out.gpkg" "PG:host=$work user=postgres dbname=bench" services \
    -nln services -gt 100000
echo "ogr2ogr PostGIS → GeoPackage with R-tree: $rows features in $(elapsed "$t") s"
