#!/usr/bin/env bash
# bench/run_bench.sh - what `make bench` runs: a private PostgreSQL with
# default settings (fsync on, synchronous_commit on), the INSERT baseline
# (bench/pg_baseline.c: one INSERT per event), then the plugin in a real VM
# (bench/vmq_pgevents_bench.erl), which runs the raw COPY baseline (rows
# COPY BINARY-encoded before the clock starts) in turns with its ingest.
# Output: a table on stdout and _build/bench/results.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
OUT=_build/bench
mkdir -p "$OUT"

PGDIR=$(mktemp -d /tmp/vmq_pgevents_bench.XXXXXX)
cleanup() { bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR" "${PGDIR}_spool"; }
trap cleanup EXIT
bash test/pg.sh init "$PGDIR"
bash test/pg.sh start "$PGDIR"
DSN=$(bash test/pg.sh dsn "$PGDIR")

table() {  # the plugin's own schema.sql, applied the way a DBA would; then a checkpoint
    bash test/pg.sh psql "$PGDIR" -q -c "DROP TABLE IF EXISTS bench_insert CASCADE"
    PGOPTIONS="-c vmq_pgevents.table=$1" bash test/pg.sh psql "$PGDIR" -q -f priv/schema.sql -c CHECKPOINT
}
baseline() {  # name table mode rows payload
    table "$2"
    read -r _ _ secs rate < <("$BUILD/pg_baseline" "$DSN" "$2" "$3" "$4" "$5" 10000)
    echo "baseline $1: $4 rows in $secs s = $rate rows/s" >&2
    echo "$1=$rate"
}

echo "== baselines (same PostgreSQL, same table shape)"
b=()
b+=("$(baseline insert64 bench_insert insert 20000 64)")
b+=("$(baseline insert1024 bench_insert insert 20000 1024)")
baselines=$(IFS=,; echo "${b[*]}")

echo "== the plugin"
erl -noshell -pa ebin -pa "$BUILD/bench_ebin" -eval "vmq_pgevents_bench:main([\"$PGDIR\", \"$OUT/results.json\", \"$baselines\"])."

echo "== instructions per hook call (callgrind)"
bash bench/run_bench_icount.sh

echo "== read back after kill -9, against written live (${EVENTS:-1500000} events)"
bash bench/run_bench_readback.sh

echo "== the hook path during a long PostgreSQL outage (a backlog of ${BACKLOG:-10000000} events)"
bash bench/run_bench_outage.sh
