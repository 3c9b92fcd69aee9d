#!/usr/bin/env bash
# bench/run_bench_query.sh - what `make bench-query` runs: a private
# PostgreSQL (default settings, plus max_wal_size for the load), the events
# table of priv/schema.sql partitioned by day, filled with ROWS generated
# rows (bench/gen_events.c: DEVICES devices over DAYS days ending now);
# then the questions the views of docs/queries.md answer, each timed, and what the
# table costs on disk per event, heap and each index. Then every partition
# is compressed (vmq_pgevents_compress, Citus columnar), timed, and the
# same questions and sizes are measured again. Once per payload kind in
# PAYLOADS (gen_events' GEN_PAYLOAD: json, random, fill).
#
#   ROWS=100000000 DAYS=2 DEVICES=100000 RUNS=7 PAYLOADS="json random" make bench-query
#   KEEP=DIR: keep the server in DIR (one payload kind only); when DIR
#   already holds ROWS rows, the queries are timed again without loading.
# Output: tables on stdout and _build/bench/query.json.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
OUT=_build/bench
mkdir -p "$OUT"
ROWS=${ROWS:-100000000}
DAYS=${DAYS:-2}
DEVICES=${DEVICES:-100000}
RUNS=${RUNS:-7}
PAYLOADS=${PAYLOADS:-json random}
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

# load KIND: the table filled with ROWS rows of that payload kind
load() {
    local have=0 t0
    if [ "$(sql "SELECT to_regclass('$T') IS NOT NULL")" == t ]; then have=$(sql "SELECT count(*) FROM $T"); fi
    if [ -n "${KEEP:-}" ] && [ "$have" == "$ROWS" ]; then
        echo "== $T already holds $ROWS rows (KEEP=$PGDIR)"
        load_s=null index_s=null
        return
    fi
    echo "== loading $ROWS rows ($DEVICES devices, $DAYS days, $1 payloads) into $T"
    sql "ALTER SYSTEM SET max_wal_size = '8GB'" -c "SELECT pg_reload_conf()" >/dev/null
    sql "DROP TABLE IF EXISTS $T, ${T}_dead CASCADE" >/dev/null
    schema
    # the partitions back to the first day, then the load without their
    # keys and indexes (made afterwards, as for any bulk load)
    sql "SELECT vmq_pgevents_partitions('$T', 'day', 2, 0, now(), now() - interval '$DAYS days')" >/dev/null
    sql "DO \$\$ DECLARE r record; BEGIN
           FOR r IN SELECT l.name, c.conname FROM vmq_pgevents_partition_list('$T') l
                    JOIN pg_constraint c ON c.conrelid = l.name::regclass AND c.contype IN ('p', 'u') LOOP
             EXECUTE format('ALTER TABLE %I DROP CONSTRAINT %I', r.name, r.conname);
           END LOOP;
           FOR r IN SELECT i.indexrelid::regclass::text AS idx FROM vmq_pgevents_partition_list('$T') l
                    JOIN pg_index i ON i.indrelid = l.name::regclass LOOP
             EXECUTE 'DROP INDEX ' || r.idx;
           END LOOP; END \$\$" >/dev/null
    t0=$(now_s)
    GEN_PAYLOAD=$1 "$BUILD/gen_events" "$DSN" "$T" "$ROWS" "$DAYS" "$DEVICES"
    load_s=$(took "$t0")
    t0=$(now_s)
    PGOPTIONS="-c maintenance_work_mem=1GB" bash test/pg.sh psql "$PGDIR" -X -q -v ON_ERROR_STOP=1 -c \
        "SELECT vmq_pgevents_hot_indexes(name) FROM vmq_pgevents_partition_list('$T')" >/dev/null
    sql "VACUUM (ANALYZE) $T" >/dev/null
    index_s=$(took "$t0")
    echo "loaded in ${load_s} s (COPY), keys, indexes and VACUUM ANALYZE in ${index_s} s"
}

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

# queries STATE: the questions of docs/queries.md timed; JSON in json_q
queries() {
    local END DAY_AGO HOUR_AGO CLIENT NODE INC CONN i n ms
    END=$(sql "SELECT max(ts) FROM $T")    # the data's own clock: its last event stands for now
    # time bounds as literals, as a DBA types them for a past period:
    # columnar skips chunks by constants, not by expressions (docs/months-of-data.md)
    DAY_AGO=$(sql "SELECT '$END'::timestamptz - interval '1 day'")
    HOUR_AGO=$(sql "SELECT '$END'::timestamptz - interval '1 hour'")
    CLIENT=device-000042
    read -r NODE INC CONN < <(sql "SELECT node, incarnation, conn_id FROM ${T}_connections WHERE client_id = '$CLIENT'
                                    ORDER BY events DESC LIMIT 1" | tr '|' ' ')
    names=() queries=() targets=()
    q() { names+=("$1"); targets+=("$2"); queries+=("$3"); }
    q "timeline: one client, all its events" 50 "SELECT * FROM ${T}_timeline('$CLIENT')"
    q "timeline: one client, last day" 50 "SELECT * FROM ${T}_timeline('$CLIENT', '$DAY_AGO')"
    q "connections of one client" 50 "SELECT * FROM ${T}_connections WHERE client_id = '$CLIENT'"
    q "one connection's events" 50 "SELECT * FROM ${T}_connection('$NODE', $INC, $CONN)"
    # a journey over compressed rows scans them per publish (README): hot only
    [ "$1" = hot ] && q "journey: one client's publishes, last day" "" "SELECT * FROM ${T}_journey('$CLIENT', '$DAY_AGO')"
    q "last hour's counts per hook" 1000 "SELECT hook, count(*) FROM $T WHERE ts > '$HOUR_AGO' GROUP BY hook"
    q "failed logins, last day" 1000 "SELECT * FROM ${T}_failed_logins('$DAY_AGO')"
    echo "== queries on $1 partitions ($RUNS runs each, median; $CLIENT, connection $CONN)"
    printf '%-44s %10s %8s %8s\n' query ms rows target
    json_q=""
    for i in "${!names[@]}"; do
        n=$(sql "SELECT count(*) FROM (${queries[$i]}) x")
        ms=$(time_query "${queries[$i]}")
        printf '%-44s %10s %8s %8s\n' "${names[$i]}" "$ms" "$n" "${targets[$i]:+≤ ${targets[$i]}}"
        json_q+="${json_q:+,}{\"query\": \"${names[$i]}\", \"ms\": $ms, \"rows\": $n, \"target_ms\": ${targets[$i]:-null}}"
    done
}

# sizes STATE TARGET: bytes on disk per event, each part summed over the
# partitions (hot: the heap with TOAST and each index; compressed: the
# columnar part, the heap part that keeps the logins, and its indexes);
# JSON in json_s, the total in per
sizes() {
    local what bytes total=0
    echo "== on disk, $1 ($ROWS rows)"
    printf '%-40s %14s %12s\n' part bytes bytes/event
    json_s=""
    while IFS='|' read -r what bytes; do
        total=$((total + bytes))
        per=$(awk -v b="$bytes" -v r="$ROWS" 'BEGIN { printf "%.1f", b / r }')
        printf '%-40s %14s %12s\n' "$what" "$bytes" "$per"
        json_s+="${json_s:+,}\"$what\": $per"
    done < <(sql "
        WITH leaves AS (SELECT relid, CASE WHEN am.amname = 'columnar' THEN 'columnar' WHEN relid::regclass::text ~ '_p[0-9]+_l$'
                                           THEN 'logins heap' ELSE 'heap' END AS part
                        FROM pg_partition_tree('$T') t JOIN pg_class c ON c.oid = t.relid
                        LEFT JOIN pg_am am ON am.oid = c.relam WHERE t.isleaf)
        SELECT part, sum(pg_table_size(relid)) FROM leaves GROUP BY part
        UNION ALL
        SELECT l.part || ' index ' || regexp_replace(regexp_replace(pg_get_indexdef(i.indexrelid), ' (INCLUDE|WITH|WHERE) .*$', ''), '^.* USING ', ''),
               sum(pg_relation_size(i.indexrelid))
        FROM leaves l JOIN pg_index i ON i.indrelid = l.relid GROUP BY 1
        ORDER BY 2 DESC")
    per=$(awk -v b="$total" -v r="$ROWS" 'BEGIN { printf "%.1f", b / r }')
    printf '%-40s %14s %12s   (target ≤ %s)\n' total "$total" "$per" "$2"
}

json_all=""
for kind in $PAYLOADS; do
    load "$kind"
    queries hot
    hot_q=$json_q
    sizes hot 300
    hot_s=$json_s hot_per=$per
    echo "== compressing every partition (vmq_pgevents_compress, one at a time)"
    t0=$(now_s)
    compressed=""
    while :; do
        p=$(sql "SELECT partition || ' ' || rows || ' rows, ' || round(extract(epoch FROM clock_timestamp() - now())::numeric, 1) || ' s'
                 FROM vmq_pgevents_compress('$T', '0', now() + interval '3 days', 1)")
        [ -n "$p" ] || break
        echo "   $p"
        compressed+="${compressed:+,}\"$p\""
    done
    compress_s=$(took "$t0")
    sql "ANALYZE $T" >/dev/null
    queries compressed
    cold_q=$json_q
    target=$([ "$kind" = random ] && echo 120 || echo 60)
    sizes compressed "$target"
    json_all+="${json_all:+,}
 {\"payload\": \"$kind\", \"rows\": $ROWS, \"days\": $DAYS, \"devices\": $DEVICES, \"runs\": $RUNS,
  \"load_s\": $load_s, \"index_s\": $index_s, \"compress_s\": $compress_s, \"partitions_compressed\": [$compressed],
  \"hot\": {\"queries\": [$hot_q], \"bytes_per_event\": {$hot_s, \"total\": $hot_per}},
  \"compressed\": {\"queries\": [$cold_q], \"bytes_per_event\": {$json_s, \"total\": $per}, \"target_total\": $target}}"
done

echo "[$json_all]" >"$OUT/query.json"
echo "results: $OUT/query.json"
