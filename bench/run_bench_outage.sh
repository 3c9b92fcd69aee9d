#!/usr/bin/env bash
# bench/run_bench_outage.sh - part of `make bench`: the hook path during a
# long PostgreSQL outage (bench/vmq_pgevents_outage.erl) on a private
# PostgreSQL. BACKLOG: events piled into the journal before the outage
# lines (default 10 million; 50 million needs ~15 GB free in /tmp).
# Output: lines on stdout and _build/bench/outage.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
OUT=_build/bench
BACKLOG=${BACKLOG:-10000000}
mkdir -p "$OUT"

PGDIR=$(mktemp -d /tmp/vmq_pgevents_outage.XXXXXX)
cleanup() { bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR" "${PGDIR}_spool"; }
trap cleanup EXIT
bash test/pg.sh init "$PGDIR"
erl -noshell -pa ebin -pa "$BUILD/bench_ebin" \
    -eval "vmq_pgevents_outage:main([\"$PGDIR\", \"$OUT/outage.json\", \"$BACKLOG\"])."
