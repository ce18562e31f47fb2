# Sourced by the benchmarks that measure a running server (hardening.sh, ecosystem.sh): the
# release server on the database of ROWS generated entries that benches/search.sh makes
# (target/bench/search-ROWS-SEED.db), started and waited for. Before sourcing, set `rows`,
# `seed` and `default_port`, and optionally `before_start` (a command run before the server
# starts). Sets `db`, `BIN`, `port`, `base`, `log` and `server`; the server stops with the script.
db="target/bench/search-${rows}-${seed}.db"
[ -f "$db" ] || benches/search.sh "$rows" "$seed"
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/proximites
fi
port=${PORT:-$default_port}
base="http://127.0.0.1:$port"
log=$(mktemp)
${before_start:-true}
"$BIN" --database-url "sqlite://$PWD/$db" serve --listen "127.0.0.1:$port" --no-demo >"$log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 1 300); do curl -sf "$base/healthz" >/dev/null && break; sleep 1; done
