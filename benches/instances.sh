#!/usr/bin/env bash
# Several instances on one database (issue 15), release build, on the 3,000,000 generated
# entries of benches/search.sh (copied, so that the writes here leave that database as it was):
#   1. a new instance's first answer by words (its text index built from the database), then
#      start to first answer of an instance restarted on its data directory;
#   2. a write through one instance's API, searchable by its name on the other: p50 and p99;
#   3. HTTP throughput of search (a), the 10 nearest pharmacies (benches/wrk-nearest.lua), under
#      wrk: one instance alone, then two behind nginx configured by deploy/nginx.conf.
# All on this machine: wrk, nginx and both instances share its cores.
#
#   BIN=target/release/proximites [DATABASE=postgres://…] benches/instances.sh [WRITES] [JSON]
# (DATABASE: another database holding the same entries, used as it is: benches/postgres.sh.)
set -euo pipefail
cd "$(dirname "$0")/.."
writes=${1:-100}
json_out=${2:-}
rows=3000000
seed=1
wrk_seconds=${WRK_SECONDS:-20}
connections=${WRK_CONNECTIONS:-32}
src="target/bench/search-${rows}-${seed}.db"
[ -n "${DATABASE:-}" ] || [ -f "$src" ] || benches/search.sh "$rows" "$seed"
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/proximites
fi
nginx_bin=$(command -v nginx || echo /usr/sbin/nginx)
for tool in wrk curl python3 "$nginx_bin"; do
    command -v "$tool" >/dev/null || { echo "instances.sh: $tool missing (apt-get install wrk curl python3 nginx-light)" >&2; exit 69; }
done

work=$(mktemp -d "$PWD/target/bench/instances.XXXXXX")
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    # The instances' logs stay for a look: target/bench/instances-a.log, -b.log.
    cp "$work/a.log" target/bench/instances-a.log 2>/dev/null || true
    cp "$work/b.log" target/bench/instances-b.log 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
if [ -n "${DATABASE:-}" ]; then
    # Another database holding the same entries (benches/postgres.sh: a PostgreSQL copy).
    url=$DATABASE
else
    echo "== copying the ${rows}-entry database" >&2
    cp "$src" "$work/shared.db"
    # Written back before any timing: a restart does not coincide with 2 GB of copies in flight.
    sync
    url="sqlite://$work/shared.db"
fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }
elapsed() { python3 -c "import sys; print(round($(now) - $1, 2))"; }

start() { # name port: starts an instance, prints nothing; its pid goes to pids
    "$BIN" --database-url "$url" serve --listen "127.0.0.1:$2" --no-demo \
        --data-dir "$work/$1" --trusted-proxy 127.0.0.1/32 >"$work/$1.log" 2>&1 &
    pids+=($!)
}
port_a=$(free_port)
port_b=$(free_port)
first_answer() { # port: waits for the first answer to a search by words
    until curl -sf "http://127.0.0.1:$1/api/v1/services?q=mairie&limit=1" >/dev/null; do sleep 0.02; done
}
echo "== a new instance: its indexes built from the database" >&2
started=$(now)
start a "$port_a"
first_answer "$port_a"
built_s=$(elapsed "$started")
until curl -sf "http://127.0.0.1:$port_a/readyz" >/dev/null; do sleep 0.05; done
echo "   first answer by words after ${built_s} s" >&2
# Stopped as systemd stops it (SIGTERM): the indexes stay in its data directory, at a position
# of the change log, and the second instance starts from a copy of them.
kill -TERM "${pids[-1]}"
wait "${pids[-1]}" || true
cp -r "$work/a" "$work/b"
sync
echo "== start to first answer: an instance restarted on its data directory" >&2
started=$(now)
start a "$port_a"
first_answer "$port_a"
first_answer_s=$(elapsed "$started")
until curl -sf "http://127.0.0.1:$port_a/readyz" >/dev/null; do sleep 0.02; done
ready_s=$(elapsed "$started")
echo "   first answer after ${first_answer_s} s, ready after ${ready_s} s" >&2
start b "$port_b"
until curl -sf "http://127.0.0.1:$port_b/readyz" >/dev/null; do sleep 0.05; done

echo "== $writes writes through one instance, searched on the other" >&2
token=$("$BIN" --database-url "$url" admin create-token --operator --name instances)
if [ -n "${DATABASE:-}" ]; then
    psql=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)/psql
    organisation=$("$psql" "$url" -Atc 'SELECT id FROM organisations ORDER BY id LIMIT 1')
else
    organisation=$(python3 -c "import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT id FROM organisations ORDER BY id LIMIT 1').fetchone()[0])" "$work/shared.db")
fi
visibility=$(WRITER="http://127.0.0.1:$port_a" READER="http://127.0.0.1:$port_b" TOKEN=$token \
    ORGANISATION=$organisation WRITES=$writes python3 - <<'EOF'
import json, os, time, urllib.request
env = os.environ
latencies = []
import random
random.seed(1)
for n in range(int(env["WRITES"])):
    # A made-up word far from every other (no typo of another matches it).
    word = "zq" + "".join(random.choice("bcdfghjklmnpqrstvwxz") for _ in range(10))
    body = json.dumps({"organisation_id": env["ORGANISATION"], "typology": "piscine",
                       "name": f"Bassin {word}", "lon": 3.08, "lat": 45.77}).encode()
    request = urllib.request.Request(env["WRITER"] + "/api/v1/services", data=body, method="POST",
        headers={"Authorization": "Bearer " + env["TOKEN"], "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as answer:
        assert answer.status == 201
    written = time.monotonic()
    while True:
        with urllib.request.urlopen(env["READER"] + f"/api/v1/services?q={word}&limit=5") as answer:
            if any(item["name"] == f"Bassin {word}" for item in json.load(answer)["items"]):
                break
        if time.monotonic() - written > 10:
            raise SystemExit(f"{word} not searchable on the other instance after 10 s")
        time.sleep(0.005)
    latencies.append(time.monotonic() - written)
latencies.sort()
pick = lambda q: round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 1)
print(json.dumps({"writes": len(latencies), "p50_ms": pick(0.5), "p99_ms": pick(0.99),
                  "max_ms": round(latencies[-1] * 1000, 1)}))
EOF
)
echo "   $visibility" >&2

run_wrk() { # base: warm-up, then the timed run; prints wrk-nearest.lua's JSON line
    wrk -t2 -c"$connections" -d5s -s benches/wrk-nearest.lua "$1" >/dev/null
    wrk -t2 -c"$connections" -d"${wrk_seconds}s" -s benches/wrk-nearest.lua "$1" | grep '^{' | tail -n1
}
echo "== wrk, $connections connections, ${wrk_seconds} s: one instance" >&2
one=$(run_wrk "http://127.0.0.1:$port_a")
echo "   $one" >&2

front=$(free_port)
mkdir -p "$work/nginx/logs"
shipped=$(sed -e "s/127.0.0.1:8081/127.0.0.1:$port_a/" -e "s/127.0.0.1:8082/127.0.0.1:$port_b/" \
    -e "s/listen 80;/listen 127.0.0.1:$front;/" deploy/nginx.conf)
cat >"$work/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $work/nginx/nginx.pid;
error_log $work/nginx/logs/error.log;
events { worker_connections 1024; }
http {
 access_log off;
 client_body_temp_path $work/nginx/body;
 proxy_temp_path $work/nginx/proxy;
 fastcgi_temp_path $work/nginx/fastcgi;
 uwsgi_temp_path $work/nginx/uwsgi;
 scgi_temp_path $work/nginx/scgi;
$shipped
}
EOF
"$nginx_bin" -p "$work/nginx" -c "$work/nginx/nginx.conf" &
pids+=($!)
until curl -sf "http://127.0.0.1:$front/healthz" >/dev/null; do sleep 0.05; done
echo "== wrk, $connections connections, ${wrk_seconds} s: two instances behind nginx" >&2
two=$(run_wrk "http://127.0.0.1:$front")
echo "   $two" >&2

report=$(ROWS=$rows BUILT=$built_s FIRST=$first_answer_s READY=$ready_s VISIBILITY=$visibility ONE=$one TWO=$two \
    CONNECTIONS=$connections python3 - <<'EOF'
import json, os, datetime
env = os.environ
print(json.dumps({
    "date": datetime.date.today().isoformat(), "entries": int(env["ROWS"]),
    "new_instance_first_answer_s": float(env["BUILT"]),
    "start_to_first_answer_s": float(env["FIRST"]), "start_to_ready_s": float(env["READY"]),
    "write_visible_on_other_instance": json.loads(env["VISIBILITY"]),
    "wrk_connections": int(env["CONNECTIONS"]),
    "one_instance": json.loads(env["ONE"]), "two_instances_behind_nginx": json.loads(env["TWO"]),
}, indent=1))
EOF
)
echo "$report"
[ -z "$json_out" ] || echo "$report" >"$json_out"
