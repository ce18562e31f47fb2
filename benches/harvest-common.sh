# Sourced by the harvest benchmarks (harvest.sh, harvest-bpe.sh): the generated entries of
# benches/search.sh as input (`synth`), the release binary (`BIN`), a work directory removed
# at exit (`work`), and the steps each one times. Set `default_port` before sourcing.
synth=target/bench/synth-3000000-1.csv
[ -f "$synth" ] || benches/search.sh 3000000 1
if [ -z "${BIN:-}" ]; then
    cargo build --release --quiet
    BIN=target/release/proximites
fi
work=$(mktemp -d)
trap 'kill ${server:-} 2>/dev/null || true; rm -rf "$work"' EXIT
port=${PORT:-$default_port}
# HARVEST_DB: harvest into this database instead of a new one (harvest-bpe.sh's WITH_DILA).
db=${HARVEST_DB:-$work/harvest.db}

# Seconds since the instant $1 (from `date +%s.%N`).
since() {
    python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.1f}')" "$1"
}

# harvest SOURCE FILE: `proximites harvest SOURCE FILE` into $db, its summary printed.
harvest() {
    "$BIN" --database-url "sqlite://$db" harvest "$1" "$2" | grep -v "journal des changements" | tail -5
}

# start_server: the server on $db, in the background (`server`).
start_server() {
    "$BIN" --database-url "sqlite://$db" serve --listen "127.0.0.1:$port" --no-demo >"$work/serve.log" 2>&1 &
    server=$!
}

# until_found ARG...: waits until the search API finds something for the query ARG...
# (`name=value` pairs).
until_found() {
    local args=()
    for pair in "$@"; do args+=(--data-urlencode "$pair"); done
    until curl -sfG "http://127.0.0.1:$port/api/v1/services" "${args[@]}" 2>/dev/null |
        grep -q '"total":[1-9]'; do sleep 0.2; done
}

# stop_server: stops the server started by start_server.
stop_server() {
    kill "$server"
    wait "$server" 2>/dev/null || true
}
