#!/usr/bin/env bash
# The ecosystem outputs of issue 18 on ROWS generated entries (the database benches/search.sh
# makes, target/bench/search-ROWS-SEED.db), release server, curl and Python's http.client as the clients:
#   - data·inclusion structures and services in JSON: the first request writes the file of the
#     data version (build throughput), the next ones send it (serve throughput);
#   - HSDS pages of 50 services: first, deep (entry 2,500,000), fully nested, by words; the
#     latency of 5 s of back-to-back requests on one kept-alive connection (first excluded
#     by a request before: it counts the selection once per data version);
#   - the vector tile at zoom 6 over Paris (row 22, column 32): size, and latency the same way;
#     and a tile at zoom 12 in Paris.
#   - OGC pages sorted by name, by update date, within a département: first, next, and the page
#     at entry 2,700,000 by name.
#
# Usage: benches/ecosystem.sh [ROWS] [SEED]      (defaults 3000000 and 1)
# Environment: BIN (default target/release/proximites, built here), PORT (default 18091).
set -euo pipefail
export LC_ALL=C
rows=${1:-3000000}
seed=${2:-1}
cd "$(dirname "$0")/.."
# The data·inclusion files are built again: their first request measures the writing.
rm_di_files() { rm -f "$db.exports"/whole-*data-inclusion-*; }
default_port=18091 before_start=rm_di_files
. benches/bench-server.sh

throughput() { # label url: one download, its size and rate
    curl -s -o /dev/null -w "%{http_code} %{size_download} %{time_total}\n" "$2" |
        awk -v label="$1" '{printf "%s: %s, %.0f MB in %.2f s = %.0f MB/s\n", label, $1, $2/1e6, $3, $2/1e6/$3}'
}
for table in structures services; do
    url="$base/api/v1/export/data-inclusion/$table.json"
    throughput "data·inclusion $table.json, written then sent" "$url"
    for run in 1 2 3; do throughput "data·inclusion $table.json, sent (run $run)" "$url"; done
done

once() { # label url: one request's status, size and time
    curl -s -o /dev/null -w "$1: %{http_code}, %{size_download} bytes in %{time_total} s\n" "$2"
}
latency() { # label url: 5 s of back-to-back requests on one kept-alive connection
    python3 - "$1" "$2" <<'PY'
import http.client, sys, time, urllib.parse
label, url = sys.argv[1], urllib.parse.urlsplit(sys.argv[2])
target = url.path + ("?" + url.query if url.query else "")
connection = http.client.HTTPConnection(url.hostname, url.port)
times, statuses, size = [], set(), 0
ends = time.perf_counter() + 5
while time.perf_counter() < ends:
    started = time.perf_counter()
    connection.request("GET", target)
    answer = connection.getresponse()
    size = len(answer.read())
    times.append((time.perf_counter() - started) * 1000)
    statuses.add(answer.status)
times.sort()
at = lambda q: times[min(len(times) - 1, int(q * len(times)))]
print(f"{label}: {len(times)} requests in 5 s, status {sorted(statuses)}, {size} bytes; "
      f"ms p50 {at(0.5):.2f}, p90 {at(0.9):.2f}, p99 {at(0.99):.2f}, max {times[-1]:.2f}")
PY
}
hsds="$base/hsds/services"
once "HSDS first page of 50 (counts the directory once per data version)" "$hsds?per_page=50"
latency "HSDS first page of 50" "$hsds?per_page=50"
latency "HSDS page 50,001 of 50 (entry 2,500,000)" "$hsds?per_page=50&page=50001"
latency "HSDS first page of 50, fully nested" "$hsds?per_page=50&full=true"
latency "HSDS page of 50 by words (search=mairie)" "$hsds?per_page=50&search=mairie"
latency "HSDS page of 50 of a typology (taxonomy_term_id)" \
    "$hsds?per_page=50&taxonomy_term_id=$(curl -s "$base/hsds/taxonomy_terms?search=pharmacie" | python3 -c 'import json,sys; print(json.load(sys.stdin)["contents"][0]["id"])')"

tiles="$base/ogc/collections/services/tiles/WebMercatorQuad"
once "tile z6 over Paris (6/22/32), first" "$tiles/6/22/32"
latency "tile z6 over Paris (6/22/32)" "$tiles/6/22/32"
latency "tile z6 over Paris, town halls only" "$tiles/6/22/32?typology=mairie"
once "tile z12 in Paris (12/1409/2074)" "$tiles/12/1409/2074"
latency "tile z12 in Paris (12/1409/2074)" "$tiles/12/1409/2074"
items="$base/ogc/collections/services/items"
for q in "limit=100&sortby=name" "limit=100&sortby=-updated_at" \
    "limit=100&departement=63&sortby=name"; do
    page=$(mktemp)
    curl -s -o "$page" -w "OGC $q: %{http_code} in %{time_total} s\n" "$items?$q"
    next=$(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print([l['href'] for l in d['links'] if l['rel']=='next'][0])" "$page")
    curl -s -o /dev/null -w "  its next page: %{http_code} in %{time_total} s\n" "$next"
    rm -f "$page"
done
deep=$(python3 - "$db" <<'PY'
import binascii, json, sqlite3, sys
c = sqlite3.connect(f"file:{sys.argv[1]}?mode=ro", uri=True)
row = c.execute("SELECT name, id FROM services WHERE status = 'published' "
                "ORDER BY name, id LIMIT 1 OFFSET 2700000").fetchone()
print(binascii.hexlify(json.dumps([row[0], row[1]]).encode()).decode())
PY
)
curl -s -o /dev/null -w "sortby=name, page at entry 2,700,000: %{http_code} in %{time_total} s\n" \
    "$items?limit=100&sortby=name&cursor=$deep"
grep -E "ERROR|panicked" "$log" | head -5 || true
