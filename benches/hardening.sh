#!/usr/bin/env bash
# The hostile-client figures of issue 17, for the README and
# SECURITY.md: the release server on the database of ROWS generated entries that
# benches/search.sh makes (target/bench/search-ROWS-SEED.db), then, with curl and a few lines of
# Python as the clients:
#   - a 20 KB CQL2 filter of ORed LIKE '%a%e%…' (refused at its time budget), ordinary filters
#     narrowed in SQL, a text query of 6,000 words;
#   - eight slow readers of a large selection, then /healthz, a search and one more export timed;
#
# Usage: benches/hardening.sh [ROWS] [SEED]      (defaults 3000000 and 1)
# Environment: BIN (default target/release/proximites, built here), PORT (default 18090).
set -euo pipefail
export LC_ALL=C
rows=${1:-3000000}
seed=${2:-1}
cd "$(dirname "$0")/.."
default_port=18090
. benches/bench-server.sh
items="$base/ogc/collections/services/items"

like="name LIKE '%a%e%i%o%u%a%e%i%o%u%y'"
filter="$like"
while [ ${#filter} -lt 19000 ]; do filter="$filter OR $like"; done
for _ in 1 2 3; do
    curl -s -o /dev/null -w "20 KB filter: %{http_code} in %{time_total} s\n" -G \
        --data-urlencode "filter=$filter" --data-urlencode "limit=10" "$items"
done
for f in "commune = '63113'" "typology = 'mairie' AND name LIKE '%Saint%'" \
    "departement = '63' AND name LIKE '%mairie%'"; do
    curl -s -o /dev/null -w "filter [$f]: %{http_code} in %{time_total} s\n" -G \
        --data-urlencode "filter=$f" --data-urlencode "limit=100" "$items"
done
words=$(python3 -c "print('+'.join(['mairie'] * 6000))")
curl -s -o /dev/null -w "q of 6,000 words: %{http_code} in %{time_total} s\n" \
    "$base/api/v1/services?q=$words"

python3 - "$port" <<'PY'
import socket, sys, time, urllib.error, urllib.request
port = int(sys.argv[1])
readers = []
for _ in range(8):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(b"GET /api/v1/export/services.geojson?in=region:84 HTTP/1.1\r\nHost: x\r\n\r\n")
    readers.append(s)
time.sleep(3)
for path in ["/healthz", "/api/v1/services?q=mairie&near=3.08,45.77",
             "/api/v1/export/services.geojson?in=region:84"]:
    started = time.time()
    try:
        answer = urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=60)
        code = answer.status
        answer.read(100)
    except urllib.error.HTTPError as error:
        code = error.code
    print(f"beside 8 slow readers: {path} -> {code} in {(time.time() - started) * 1000:.1f} ms")
PY

grep -E "ERROR|panicked" "$log" | head -5 || true
