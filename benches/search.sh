#!/usr/bin/env bash
# The whole search benchmark in one command, for the README's figures (issue 3):
#   1. `proximites bench search`: in-process p50/p99 of queries (a)-(d), index build times,
#      resident bytes per entry;
#   2. the server on the same database: seconds from process start to the first answer of an
#      (a) query, its RSS, and HTTP throughput of (a) under wrk at 16 and 64 connections;
#   3. benches/postgis.sh: the same four queries in PostgreSQL 15 + PostGIS 3 on the same CSV;
# then a markdown table of both, printed and written to target/bench/search.md (the merged
# figures go to target/bench/search.json).
#
# Usage: benches/search.sh [ROWS] [SEED]          (defaults 3000000 and 1)
# Environment: QUERIES timed queries per kind on both sides (default 1000), WRK_SECONDS
#   (default 20) and WRK_WARMUP_SECONDS (default 5) per connection count.
# Everything lands in target/bench/; the generated CSV and the SQLite database are named after
# ROWS and SEED and reused by the next run with the same ones (delete them to start afresh).
#
# Note: wrk, the server and PostgreSQL share the machine; on 2 cores wrk takes part of the CPU
# the server would otherwise have, so the HTTP figures are a floor.
set -euo pipefail
export LC_ALL=C

rows=${1:-3000000}
seed=${2:-1}
queries=${QUERIES:-1000}
wrk_seconds=${WRK_SECONDS:-20}
wrk_warmup=${WRK_WARMUP_SECONDS:-5}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
benches=$root/benches
out=$root/target/bench
bin=$root/target/release/proximites
csv=$out/synth-$rows-$seed.csv
db=$out/search-$rows-$seed.db

# wrk and curl drive the server, python3 merges the figures; postgis.sh installs PostgreSQL.
missing=()
for tool in wrk curl python3; do
    command -v "$tool" >/dev/null || missing+=("$tool")
done
if ((${#missing[@]})); then
    if [[ $EUID -ne 0 ]]; then
        echo "search.sh: missing ${missing[*]}; install them (apt-get install ${missing[*]}) or run as root" >&2
        exit 69
    fi
    # Package lists may be absent on a fresh image: update only when the first try fails.
    apt-get install -y "${missing[@]}" || { apt-get update && apt-get install -y "${missing[@]}"; }
fi
command -v cargo >/dev/null || { echo "search.sh: cargo not found (Rust stable is needed)" >&2; exit 69; }

elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.3f", b - a }'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

server_pid=
stop_server() {
    [[ -n $server_pid ]] || return 0
    kill -TERM "$server_pid" 2>/dev/null || true
    # A graceful stop drains the connections; do not wait for it forever.
    for _ in $(seq 300); do
        kill -0 "$server_pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
    server_pid=
}
trap stop_server EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

(cd "$root" && cargo build --release)
mkdir -p "$out"

if [[ -s $csv ]]; then
    echo "== reusing $csv" >&2
else
    echo "== generating $rows entries (seed $seed) into $csv" >&2
    # Into a temporary name first: an interrupted run must not leave a truncated file to reuse.
    "$bin" synth --count "$rows" --seed "$seed" -o "$csv.partial"
    mv "$csv.partial" "$csv"
fi

echo "== in-process search (proximites bench search)" >&2
"$bin" bench search --rows "$rows" --seed "$seed" --queries "$queries" \
    --database "$db" --csv "$csv" --json "$out/inproc.json" | tee "$out/inproc.txt"

echo "== HTTP server on the same database" >&2
port=$(free_port)
query_a="http://127.0.0.1:$port/api/v1/services?near=3.0870,45.7772&typology=pharmacie&limit=10"
started=$EPOCHREALTIME
"$bin" --database-url "sqlite://$db" serve --no-demo --listen "127.0.0.1:$port" >"$out/serve.log" 2>&1 &
server_pid=$!
# The time to the first answer of a real query, not to the open port: the server may listen
# before its indexes are loaded.
until curl -fsS -o /dev/null "$query_a" 2>/dev/null; do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "search.sh: the server died, see $out/serve.log" >&2
        tail -n 20 "$out/serve.log" >&2
        exit 1
    fi
    if awk -v a="$started" -v b="$EPOCHREALTIME" 'BEGIN { exit !(b - a > 900) }'; then
        echo "search.sh: no answer after 900 s, see $out/serve.log" >&2
        exit 1
    fi
    sleep 0.05
done
first_answer_s=$(elapsed "$started")
# Anonymous memory: what the process owns. The SQLite file it maps (mmap) counts in VmRSS too,
# but those pages are the OS page cache, shared and given back under pressure.
rss_start_kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$server_pid/status")
echo "   first answer after ${first_answer_s} s, anonymous RSS $((rss_start_kb / 1024)) MiB" >&2

for connections in 16 64; do
    echo "== wrk, $connections connections: ${wrk_warmup} s warm-up, ${wrk_seconds} s timed" >&2
    wrk -t2 -c"$connections" -d"${wrk_warmup}s" -s "$benches/wrk-nearest.lua" "http://127.0.0.1:$port" >/dev/null
    wrk -t2 -c"$connections" -d"${wrk_seconds}s" -s "$benches/wrk-nearest.lua" "http://127.0.0.1:$port" \
        >"$out/wrk-$connections.txt"
    grep '^{' "$out/wrk-$connections.txt" | tail -n1 >"$out/wrk-$connections.json"
    cat "$out/wrk-$connections.json" >&2
done
rss_end_kb=$(awk '/^RssAnon:/ { print $2 }' "/proc/$server_pid/status")
hwm_kb=$(awk '/^VmHWM:/ { print $2 }' "/proc/$server_pid/status")
stop_server

echo "== PostgreSQL + PostGIS on the same CSV" >&2
"$benches/postgis.sh" "$csv" "$out/postgis.json" "$queries" "$seed"

# The figures reach Python through the environment, so its code needs no shell quoting.
OUT=$out ROWS=$rows SEED=$seed QUERIES=$queries FIRST_ANSWER_S=$first_answer_s \
    RSS_START_KB=$rss_start_kb RSS_END_KB=$rss_end_kb HWM_KB=$hwm_kb python3 - <<'EOF'
import json, os, datetime
env = os.environ
out, seed, queries = env["OUT"], int(env["SEED"]), int(env["QUERIES"])
def load(name):
    with open(os.path.join(out, name)) as f:
        return json.load(f)
ours, pg = load("inproc.json"), load("postgis.json")
wrk = {c: load(f"wrk-{c}.json") for c in (16, 64)}
rows = ours.get("rows") or int(env["ROWS"])
server = {"first_answer_s": float(env["FIRST_ANSWER_S"]), "rss_start_bytes": int(env["RSS_START_KB"]) * 1024,
          "rss_end_bytes": int(env["RSS_END_KB"]) * 1024, "rss_peak_bytes": int(env["HWM_KB"]) * 1024}
with open(os.path.join(out, "search.json"), "w") as f:
    json.dump({"rows": rows, "seed": seed, "queries": queries, "proximites": ours,
               "server": server, "wrk": wrk, "postgis": pg}, f, indent=2)
    f.write("\n")

def dur(us):
    if us is None:
        return "—"
    if us < 1000:
        return f"{us:.3g} µs" if us < 100 else f"{us:.0f} µs"
    if us < 1_000_000:
        return f"{us / 1000:.3g} ms" if us < 100_000 else f"{us / 1000:.0f} ms"
    return f"{us / 1e6:.2f} s"
def ratio(theirs, mine):
    if not theirs or not mine:
        return "—"
    r = theirs / mine
    if r >= 10:
        return f"{r:.0f}×"
    # Below 1 PostGIS is the faster: say by how much, rather than print 0.0×.
    return f"{r:.2g}×" if r >= 1 else f"{r:.2g}× (ours {1 / r:.2g}× slower)"
def secs(s):
    return "—" if s is None else f"{s:.1f} s"

labels = {"a": "(a) 10 nearest `pharmacie`",
          "b": "(b) everything within 5 km (page of 100 + total)",
          "c": "(c) « pharmacie » within 5 km (page of 20 + total)",
          "d": "(d) « piscine municipale » (page of 20 + total)"}
lines = [f"## Search: Proximités vs PostgreSQL {pg['postgres']} + PostGIS {pg['postgis']}, "
         f"{rows:,} entries (seed {seed})", "",
         f"{datetime.date.today()}, {os.cpu_count()} cores, "
         f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB; "
         f"{queries} queries of each kind at uniform random points of metropolitan France, single "
         f"client; ours in-process, PostGIS through pgbench -M {pg['pgbench_mode']} on a unix socket "
         f"after {pg['warmup']} warm-up queries (a round trip alone, `SELECT 1`, takes "
         f"{dur(pg['select_1']['p50_us'])} p50, {dur(pg['select_1']['p99_us'])} p99).", "",
         "| query | Proximités p50 / p99 | PostGIS p50 / p99 | ratio p50 / p99 (PostGIS / ours) |",
         "|---|---|---|---|"]
def row(label, mine, theirs):
    mine, theirs = mine or {}, theirs or {}
    return (f"| {label} | {dur(mine.get('p50_us'))} / {dur(mine.get('p99_us'))} "
            f"| {dur(theirs.get('p50_us'))} / {dur(theirs.get('p99_us'))} "
            f"| {ratio(theirs.get('p50_us'), mine.get('p50_us'))} / {ratio(theirs.get('p99_us'), mine.get('p99_us'))} |")
for q, label in labels.items():
    lines.append(row(label, ours.get(q), pg.get(q)))
lines.append(row("(a) with a GiST on (typology_code, geog) for PostGIS", ours.get("a"), pg.get("a_typology_gist")))
lines.append(row("(b) with that index present (the planner uses it)", ours.get("b"), pg.get("b_typology_gist")))
lines += ["", "| HTTP, (a) at a random point per request (wrk, 2 threads, same machine) | requests/s | p50 | p99 | errors |",
          "|---|---|---|---|---|"]
for c, w in wrk.items():
    lines.append(f"| {c} connections, {w['duration_s']:.0f} s | {w['rps']:,.0f} | {w['p50_ms']:.2f} ms "
                 f"| {w['p99_ms']:.2f} ms | {w['errors']} |")
s = pg["steps_s"]
lines += ["",
          f"- start to first answer of (a): **{server['first_answer_s']:.1f} s** (target ≤ 3 s)",
          f"- server anonymous RSS (the mapped database file aside) at first answer: {server['rss_start_bytes'] / 2**20:,.0f} MiB, "
          f"**{server['rss_start_bytes'] / rows:.0f} B/entry**; after wrk {server['rss_end_bytes'] / 2**20:,.0f} MiB "
          f"({server['rss_end_bytes'] / rows:.0f} B/entry, peak VmHWM with the mapped file {server['rss_peak_bytes'] / 2**20:,.0f} MiB)",
          f"- spatial index, in-process: {ours.get('bytes_per_entry', 0):.0f} B/entry resident (target ≤ 500)",
          f"- index builds, ours: spatial {secs(ours.get('build_s'))}, text {secs(ours.get('text_build_s'))}",
          f"- index builds, PostGIS: COPY {secs(pg['load_s'])}; geography column + GiST {secs(pg['spatial_build_s'])}; "
          f"tsvector column + GIN {secs(pg['text_build_s'])}; btree {secs(s['btree'])}, VACUUM ANALYZE "
          f"{secs(s['vacuum_analyze'])} (total after COPY {secs(pg['index_s'])}); GiST (typology_code, geog) "
          f"{secs(s['typology_gist'])}",
          f"- PostGIS sizes: table {pg['table_bytes'] / rows:.0f} B/entry, indexes {pg['indexes_bytes'] / rows:.0f} B/entry "
          f"(GiST {pg['index_bytes']['gist'] / rows:.0f}, GIN {pg['index_bytes']['gin'] / rows:.0f}, "
          f"GiST (typology_code, geog) {pg['index_bytes']['typology_gist'] / rows:.0f})"]
text = "\n".join(lines) + "\n"
with open(os.path.join(out, "search.md"), "w") as f:
    f.write(text)
print()
print(text, end="")
EOF
echo "written to $out/search.md and $out/search.json" >&2
