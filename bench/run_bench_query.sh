#!/usr/bin/env bash
# bench/run_bench_query.sh - what `make bench-query` runs: a private
# PostgreSQL (default settings, plus max_wal_size for the load), the events
# table of priv/schema.sql partitioned by day, filled with ROWS generated
# rows (bench/gen_events.c: DEVICES devices over DAYS days ending now);
# then the questions the README's views answer, each timed, and what the
# table costs on disk per event, heap and each index.
#
#   ROWS=100000000 DAYS=2 DEVICES=100000 RUNS=7 make bench-query
#   KEEP=DIR: keep the server and its data in DIR and, when DIR already
#   holds ROWS rows, time the queries again without loading (the load of
#   100 million rows takes ~25 minutes on 2 cores).
# Output: a table on stdout and _build/bench/query.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
OUT=_build/bench
mkdir -p "$OUT"
ROWS=${ROWS:-100000000}
DAYS=${DAYS:-2}
DEVICES=${DEVICES:-100000}
RUNS=${RUNS:-7}
T=bench_events

if [ -n "${KEEP:-}" ]; then
    PGDIR=$KEEP
    mkdir -p "$PGDIR"
    [ -d "$PGDIR/data" ] || bash test/pg.sh init "$PGDIR"
    trap 'bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1' EXIT
else
    PGDIR=$(mktemp -d /tmp/vmq_pgevents_benchq.XXXXXX)
    bash test/pg.sh init "$PGDIR"
    trap 'bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR"' EXIT
fi
bash test/pg.sh start "$PGDIR"
DSN=$(bash test/pg.sh dsn "$PGDIR")
sql() { bash test/pg.sh psql "$PGDIR" -X -At -v ON_ERROR_STOP=1 -c "$@"; }
schema() { PGOPTIONS="-c vmq_pgevents.table=$T" bash test/pg.sh psql "$PGDIR" -X -q -v ON_ERROR_STOP=1 -f priv/schema.sql 2>&1 | grep -v NOTICE || true; }
now_s() { date +%s.%N; }
took() { awk -v a="$1" -v b="$(now_s)" 'BEGIN { printf "%.0f", b - a }'; }

have=0
if [ "$(sql "SELECT to_regclass('$T') IS NOT NULL")" == t ]; then have=$(sql "SELECT count(*) FROM $T"); fi
if [ "$have" != "$ROWS" ]; then
    echo "== loading $ROWS rows ($DEVICES devices, $DAYS days) into $T"
    sql "ALTER SYSTEM SET max_wal_size = '8GB'" -c "SELECT pg_reload_conf()" >/dev/null
    sql "DROP TABLE IF EXISTS $T, ${T}_dead CASCADE" >/dev/null
    schema
    # the partitions back to the first day, then the load without the key
    # and indexes (made afterwards, as for any bulk load)
    sql "SELECT vmq_pgevents_partitions('$T', 'day', 2, 0, now(), now() - interval '$DAYS days')" >/dev/null
    sql "ALTER TABLE $T DROP CONSTRAINT ${T}_pkey" -c "DROP INDEX ${T}_client_ts_idx, ${T}_ts_idx, ${T}_login_idx, ${T}_payload_hash_idx" >/dev/null
    t0=$(now_s)
    "$BUILD/gen_events" "$DSN" "$T" "$ROWS" "$DAYS" "$DEVICES"
    load_s=$(took "$t0")
    t0=$(now_s)
    sql "SET maintenance_work_mem = '1GB'; ALTER TABLE $T ADD CONSTRAINT ${T}_pkey PRIMARY KEY (node, incarnation, seq, ts)" >/dev/null
    PGOPTIONS="-c maintenance_work_mem=1GB" schema
    sql "VACUUM (ANALYZE) $T" >/dev/null
    index_s=$(took "$t0")
    echo "loaded in ${load_s} s (COPY), key, indexes and VACUUM ANALYZE in ${index_s} s"
else
    echo "== $T already holds $ROWS rows (KEEP=$PGDIR)"
    load_s=null index_s=null
fi

# the data's own clock: its last event stands for now
END=$(sql "SELECT max(ts) FROM $T")
CLIENT=device-000042
read -r NODE INC CONN < <(sql "SELECT node, incarnation, conn_id FROM ${T}_connections WHERE client_id = '$CLIENT'
                                ORDER BY events DESC LIMIT 1" | tr '|' ' ')

# time QUERY: RUNS runs with psql's \timing, the median in ms (the first
# run is included: the table has just been read or loaded, as on a live server)
time_query() {
    local f
    f=$(mktemp)
    { echo '\timing on'; echo '\o /dev/null'; for _ in $(seq 1 "$RUNS"); do echo "$1;"; done; } >"$f"
    bash test/pg.sh psql "$PGDIR" -X -q -v ON_ERROR_STOP=1 -f "$f" | awk '/^Time:/ {print $2}' | sort -n |
        awk '{ a[NR] = $1 } END { printf "%.1f", (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
    rm -f "$f"
}

declare -a names queries targets
q() { names+=("$1"); targets+=("$2"); queries+=("$3"); }
q "timeline: one client, all its events" 50 "SELECT * FROM ${T}_timeline('$CLIENT')"
q "timeline: one client, last day" 50 "SELECT * FROM ${T}_timeline('$CLIENT', '$END'::timestamptz - interval '1 day')"
q "connections of one client" 50 "SELECT * FROM ${T}_connections WHERE client_id = '$CLIENT'"
q "one connection's events" 50 "SELECT * FROM ${T}_connection('$NODE', $INC, $CONN)"
q "journey: one client's publishes, last day" 50 "SELECT * FROM ${T}_journey('$CLIENT', '$END'::timestamptz - interval '1 day')"
q "last hour's counts per hook" 1000 "SELECT hook, count(*) FROM $T WHERE ts > '$END'::timestamptz - interval '1 hour' GROUP BY hook"
q "failed logins, last day" "" "SELECT * FROM ${T}_failed_logins('$END'::timestamptz - interval '1 day')"

echo "== queries ($RUNS runs each, median; $CLIENT, connection $CONN)"
printf '%-44s %10s %8s %8s\n' query ms rows target
json_q=""
for i in "${!names[@]}"; do
    n=$(sql "SELECT count(*) FROM (${queries[$i]}) x")
    ms=$(time_query "${queries[$i]}")
    printf '%-44s %10s %8s %8s\n' "${names[$i]}" "$ms" "$n" "${targets[$i]:+≤ ${targets[$i]}}"
    json_q+="${json_q:+,}{\"query\": \"${names[$i]}\", \"ms\": $ms, \"rows\": $n, \"target_ms\": ${targets[$i]:-null}}"
done

echo "== on disk ($ROWS rows)"
# every partition's heap (with TOAST) and each index, summed over the partitions
sizes=$(sql "
    WITH parts AS (SELECT relid FROM pg_partition_tree('$T') WHERE isleaf),
    idx AS (SELECT i.indexrelid, p.relid,
                   (SELECT c.relname FROM pg_inherits h JOIN pg_class c ON c.oid = h.inhparent
                    WHERE h.inhrelid = i.indexrelid) AS parent
            FROM parts p JOIN pg_index i ON i.indrelid = p.relid)
    SELECT 'heap', sum(pg_table_size(relid)) FROM parts
    UNION ALL
    SELECT parent, sum(pg_relation_size(indexrelid)) FROM idx GROUP BY parent
    ORDER BY 2 DESC")
total=0
json_s=""
printf '%-28s %14s %12s\n' part bytes bytes/event
while IFS='|' read -r what bytes; do
    total=$((total + bytes))
    per=$(awk -v b="$bytes" -v r="$ROWS" 'BEGIN { printf "%.1f", b / r }')
    printf '%-28s %14s %12s\n' "$what" "$bytes" "$per"
    json_s+="${json_s:+,}\"$what\": $per"
done <<<"$sizes"
per=$(awk -v b="$total" -v r="$ROWS" 'BEGIN { printf "%.1f", b / r }')
printf '%-28s %14s %12s   (target ≤ 300)\n' total "$total" "$per"
gb_day=$(awk -v p="$per" 'BEGIN { printf "%.1f", p * 1000 * 86400 / 1e9 }')
echo "at 1,000 events/s: $gb_day GB a day"

cat >"$OUT/query.json" <<EOF
{"rows": $ROWS, "days": $DAYS, "devices": $DEVICES, "runs": $RUNS, "load_s": $load_s, "index_s": $index_s,
 "queries": [$json_q],
 "bytes_per_event": {$json_s, "total": $per}}
EOF
echo "results: $OUT/query.json"
