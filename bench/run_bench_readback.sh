#!/usr/bin/env bash
# bench/run_bench_readback.sh - part of `make bench`: EVENTS on_publish
# events (default 1,500,000) written live, against the same number left in
# the journal by a broker killed with kill -9 while PostgreSQL was down and
# read back by the next start (bench/vmq_pgevents_readback.erl). Both
# rates come from PostgreSQL: rows between the commit timestamps of the
# first and the last batch. Output: lines on stdout and
# _build/bench/readback.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
OUT=_build/bench
EVENTS=$(( ${EVENTS:-1500000} / 4 * 4 ))   # 4 publishing processes, as many each
mkdir -p "$OUT"

PGDIR=$(mktemp -d /tmp/vmq_pgevents_readback.XXXXXX)
VMPID=
bg=
cleanup() {
    [ -n "$VMPID" ] && kill -9 "$VMPID" 2>/dev/null || true
    [ -n "$bg" ] && kill -9 "$bg" 2>/dev/null || true
    bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR" "${PGDIR}_spool"
}
trap cleanup EXIT
bash test/pg.sh init "$PGDIR" >/dev/null
echo "track_commit_timestamp = on" >>"$PGDIR/data/postgresql.conf"
bash test/pg.sh start "$PGDIR" >/dev/null
psql() { PGOPTIONS='-c client_min_messages=warning' bash test/pg.sh psql "$PGDIR" -Atq "$@"; }
vm() { erl -noshell -pa ebin -pa "$BUILD/bench_ebin" -eval "vmq_pgevents_readback:$1."; }

# rows of the events, and the rate of those committed after the first
# commit, between it and the last
rate() {
    psql -F ' ' -c "SELECT count(*), coalesce(round((count(*) - count(*) FILTER (WHERE c = f))
                                             / nullif(extract(epoch FROM max(c) - f), 0)), 0)
                    FROM (SELECT c, min(c) OVER () AS f
                          FROM (SELECT pg_xact_commit_timestamp(xmin) AS c FROM $1
                                WHERE hook = 'on_publish') r) s GROUP BY f"
}

vm "live(\"$PGDIR\", \"rb_live\", $EVENTS)"
read -r live_rows live_rate < <(rate rb_live)
psql -c "DROP TABLE rb_live CASCADE" -c CHECKPOINT

# the schema first, so the reading start does not make the table
PGOPTIONS='-c vmq_pgevents.table=rb_back -c client_min_messages=warning' \
    bash test/pg.sh psql "$PGDIR" -Atq -f priv/schema.sql -c CHECKPOINT >/dev/null
bash test/pg.sh stop "$PGDIR" >/dev/null
vm "leave(\"$PGDIR\", \"rb_back\", $EVENTS)" >"$PGDIR/leave.out" 2>&1 &
bg=$!
disown
for ((t = 0; t < 3000; t++)); do   # 10 minutes at most
    grep -q '^left ' "$PGDIR/leave.out" && break
    kill -0 "$bg" 2>/dev/null || { cat "$PGDIR/leave.out" >&2; exit 1; }
    sleep 0.2
done
grep -q '^left ' "$PGDIR/leave.out" || { echo "run_bench_readback: the leaving VM never got ready" >&2; exit 1; }
read -r _ left VMPID < <(grep '^left ' "$PGDIR/leave.out")
kill -9 "$VMPID"
while kill -0 "$VMPID" 2>/dev/null; do sleep 0.1; done
VMPID=
bash test/pg.sh start "$PGDIR" >/dev/null
vm "back(\"$PGDIR\", \"rb_back\")"
read -r back_rows back_rate < <(rate rb_back)

ratio=$(awk -v a="$back_rate" -v b="$live_rate" 'BEGIN { printf "%.2f", b ? a / b : 0 }')
echo "read back after kill -9: $left events left; written live $live_rate rows/s ($live_rows rows), read back $back_rate rows/s ($back_rows rows) = ${ratio}x (PostgreSQL's commit timestamps)"
printf '{"events": %s, "left": %s, "live_rows": %s, "live_rows_per_s": %s, "back_rows": %s, "back_rows_per_s": %s, "ratio": %s}\n' \
    "$EVENTS" "$left" "$live_rows" "$live_rate" "$back_rows" "$back_rate" "$ratio" >"$OUT/readback.json"
[ "$back_rows" = "$EVENTS" ] && [ "$live_rows" = "$EVENTS" ] || { echo "run_bench_readback: rows missing" >&2; exit 1; }
