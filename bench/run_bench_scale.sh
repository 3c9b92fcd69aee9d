#!/usr/bin/env bash
# bench/run_bench_scale.sh - what `make bench-scale` runs: the plugin into
# one PostgreSQL against the plugin into a Citus cluster (a coordinator
# and two workers), all on this machine, every server with its default
# settings (fsync on, synchronous_commit on).
#   1. ingest (bench/vmq_pgevents_scale.erl): raw COPY and the plugin into
#      each, a shard written directly, a shard on each worker at once
#   2. a 2-node VerneMQ cluster (the 2.1.2 release in ../shared/vernemq/,
#      or VERNEMQ_HOME) under a closed-loop MQTT load (bench/mqtt_load.c:
#      PUBS publishers on node A, SUBS subscribers on node B, QoS 1,
#      64-byte payloads, every message crossing the cluster), all hooks
#      recorded: the plugin off, recording into one PostgreSQL, recording
#      into the Citus cluster; REPS turns of RUN_SECONDS each, the rows
#      checked against what the load sent and received.
# Output: tables on stdout, _build/bench/scale.json and scale_broker.json.
set -uo pipefail    # not -e: test/e2e/broker.sh's helpers expect plain bash
cd "$(dirname "$0")/.."
ROOT=$PWD
. test/e2e/broker.sh
. test/e2e/citus.sh
BUILD=_build/make
OUT=$ROOT/_build/bench
mkdir -p "$OUT"
ROWS=${ROWS:-1000000}
RUN_SECONDS=${RUN_SECONDS:-15}
REPS=${REPS:-3}
PUBS=${PUBS:-10}
SUBS=${SUBS:-2}
WINDOW=${WINDOW:-10}
PORT=${PORT:-22883}
NODE_A=vmqscale-a@127.0.0.1
NODE_B=vmqscale-b@127.0.0.1

SINGLE=$(mktemp -d /tmp/vmq_pgevents_scale.XXXXXX)
WORKDIR=$ROOT/_build/bench/scale
A=$WORKDIR/a/vernemq
B=$WORKDIR/b/vernemq
cleanup() {
    broker_stop "$A" >/dev/null 2>&1
    broker_stop "$B" >/dev/null 2>&1
    citus_stop
    bash test/pg.sh stop "$SINGLE" >/dev/null 2>&1
    rm -rf "$SINGLE" "${SINGLE}_spool" "${COORD:-/nonexistent}_spool"
}
trap cleanup EXIT
bash test/pg.sh init "$SINGLE" >/dev/null && bash test/pg.sh start "$SINGLE" || exit 1
citus_start "$(mktemp -u /tmp/vmq_pgevents_scale_citus.XXXXXX)" || { echo "bench-scale: the Citus cluster did not start" >&2; exit 1; }
COORD=${CITUS_DIRS[0]}
echo "== $(nproc) cores; one PostgreSQL, and a Citus cluster of a coordinator and two workers, all here"

echo "== ingest: raw COPY and the plugin"
erl -noshell -pa ebin -pa "$BUILD/bench_ebin" -eval "vmq_pgevents_scale:main([\"$SINGLE\", \"$COORD\", \"${CITUS_DIRS[1]}\", \"${CITUS_DIRS[2]}\", \"$ROWS\", \"$OUT/scale.json\"])." ||
    { echo "bench-scale: the ingest part failed" >&2; exit 1; }

echo "== a 2-node VerneMQ cluster under MQTT load: plugin off, into one PostgreSQL, into Citus"
src=${VERNEMQ_HOME:-$(ls ../shared/vernemq/vernemq-2.1.2-*.tar.gz 2>/dev/null | head -n 1)}
[ -n "$src" ] || { echo "bench-scale: no VerneMQ release in ../shared/vernemq/ and no VERNEMQ_HOME" >&2; exit 1; }
PLUGIN=$WORKDIR/plugin/vmq_pgevents
rm -rf "$PLUGIN"
mkdir -p "$PLUGIN"
cp -r ebin priv "$PLUGIN/"
PGUSER=$(if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi)
dsn_of() { echo "host=$1 port=$(cat "$1/port" 2>/dev/null || echo 5432) user=$PGUSER dbname=postgres"; }
sql() { bash test/pg.sh psql "$1" -X -At -v ON_ERROR_STOP=1 -c "$2"; }
broker_unpack "$src" "$WORKDIR/a" && broker_unpack "$src" "$WORKDIR/b" || exit 1
broker_configure "$A" "$NODE_A" "$PORT" "$PLUGIN" "$(dsn_of "$SINGLE")"
broker_configure "$B" "$NODE_B" $((PORT + 100)) "$PLUGIN" "$(dsn_of "$SINGLE")"
for d in "$A" "$B"; do broker_conf "$d" "max_inflight_messages = 0" "max_online_messages = -1"; done
broker_start "$A" && broker_start "$B" || exit 1
broker_admin "$B" cluster join discovery-node="$NODE_A" >/dev/null
for i in $(seq 1 100); do
    [ "$(broker_admin "$B" cluster show | grep -c 'true')" -ge 2 ] && break
    sleep 0.2
done

# configure CFG: both nodes booted with the plugin off, or on and pointed
# at one PostgreSQL or at the coordinator; the tables emptied, every
# server checkpointed
configure() {
    local d
    broker_stop "$A"
    broker_stop "$B"
    for d in "$A" "$B"; do
        case $1 in
            none) broker_conf "$d" "plugins.vmq_pgevents = off" ;;
            single) broker_conf "$d" "plugins.vmq_pgevents = on" "vmq_pgevents.hooks = all" "vmq_pgevents.dsn = $(dsn_of "$SINGLE")" ;;
            citus) broker_conf "$d" "plugins.vmq_pgevents = on" "vmq_pgevents.hooks = all" "vmq_pgevents.dsn = $(dsn_of "$COORD")" ;;
        esac
    done
    for d in "$SINGLE" "$COORD"; do
        sql "$d" "DO \$\$ BEGIN IF to_regclass('vmq_events') IS NOT NULL THEN TRUNCATE vmq_events; END IF; END \$\$" >/dev/null
    done
    for d in "$SINGLE" "${CITUS_DIRS[@]}"; do sql "$d" "CHECKPOINT" >/dev/null; done
    local plugins="$([ "$1" = none ] || echo vmq_pgevents) vmq_passwd vmq_acl"
    broker_start "$A" "$plugins" >&2 && broker_start "$B" "$plugins" >&2 || exit 1
    for i in $(seq 1 100); do
        [ "$(broker_admin "$B" cluster show | grep -c 'true')" -ge 2 ] && break
        sleep 0.2
    done
    # a warm-up, repeated until the cluster takes clients (right after a
    # boot VerneMQ refuses CONNECTs until both nodes are in sync)
    for i in $(seq 1 30); do
        MQTT_SUB_PORT=$((PORT + 100)) MQTT_USER=alice MQTT_PASS=alice-pw "$BUILD/mqtt_load" 127.0.0.1 "$PORT" 1 "$PUBS" "$SUBS" "$WINDOW" "warmup$1" >/dev/null 2>&1 && break
        sleep 1
    done
}

results=$OUT/scale_broker.runs
: >"$results"
CONFIGS=(none single citus)
for rep in $(seq 1 "$REPS"); do
    k=$(((rep - 1) % ${#CONFIGS[@]}))
    order=("${CONFIGS[@]:k}" "${CONFIGS[@]:0:k}")
    for cfg in "${order[@]}"; do
        configure "$cfg"
        prefix=s${rep}${cfg}
        load=$(MQTT_SUB_PORT=$((PORT + 100)) MQTT_USER=alice MQTT_PASS=alice-pw "$BUILD/mqtt_load" 127.0.0.1 "$PORT" "$RUN_SECONDS" "$PUBS" "$SUBS" "$WINDOW" "$prefix") ||
            { echo "bench-scale: the load failed" >&2; exit 1; }
        rows_ok=-
        events=0
        if [ "$cfg" != none ]; then
            db=$([ "$cfg" = single ] && echo "$SINGLE" || echo "$COORD")
            broker_admin "$A" pgevents flush >/dev/null
            broker_admin "$B" pgevents flush >/dev/null
            read -r pubs dels auths events < <(sql "$db" "
                SELECT count(*) FILTER (WHERE hook = 'on_publish' AND node = '$NODE_A'),
                       count(*) FILTER (WHERE hook = 'on_deliver' AND node = '$NODE_B'),
                       count(*) FILTER (WHERE hook = 'auth_on_publish' AND node = '$NODE_A'), count(*)
                FROM vmq_events WHERE topic LIKE '$prefix/%'" | tr '|' ' ')
            sent=$(sed 's/.*"sent": \([0-9]*\).*/\1/' <<<"$load")
            recv=$(sed 's/.*"received": \([0-9]*\).*/\1/' <<<"$load")
            if [ "$pubs" = "$sent" ] && [ "$dels" = "$recv" ] && [ "$auths" = "$sent" ]; then rows_ok=yes
            else rows_ok="NO (on_publish $pubs/$sent, on_deliver $dels/$recv, auth_on_publish $auths/$sent)"; fi
        fi
        echo "{\"rep\": $rep, \"config\": \"$cfg\", \"events\": $events, \"rows_ok\": \"$rows_ok\", \"load\": $load}" >>"$results"
        printf '  %-7s run %d: %s  rows %s\n' "$cfg" "$rep" "$load" "$rows_ok"
    done
done

python3 - "$results" "$OUT/scale_broker.json" "$(basename "$src")" "$RUN_SECONDS" "$REPS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
out = {"release": sys.argv[3], "run_seconds": int(sys.argv[4]), "reps": int(sys.argv[5]), "configs": {}}
for cfg in ["none", "single", "citus"]:
    rs = [r for r in runs if r["config"] == cfg]
    out["configs"][cfg] = {"delivered_per_s": med(r["load"]["delivered_per_s"] for r in rs),
                           "events_per_s": med(r["events"] / float(sys.argv[4]) for r in rs),
                           "p50_ms": med(r["load"]["p50_ms"] for r in rs), "p99_ms": med(r["load"]["p99_ms"] for r in rs),
                           "rows_ok": all(r["rows_ok"] in ("yes", "-") for r in rs),
                           "lost": sum(r["load"]["lost"] for r in rs)}
base = out["configs"]["none"]["delivered_per_s"]
for d in out["configs"].values():
    d["ratio"] = d["delivered_per_s"] / base if base else 0
json.dump(out, open(sys.argv[2], "w"), indent=1)
print("\n2-node cluster, publishers on A, subscribers on B, median of %d runs of %s s:" % (int(sys.argv[5]), sys.argv[4]))
print("%-8s %12s %7s %12s %16s %6s" % ("config", "receipts/s", "ratio", "events/s", "p50/p99 ms", "rows"))
for cfg, d in out["configs"].items():
    print("%-8s %12.0f %6.2fx %12s %16s %6s" % (cfg, d["delivered_per_s"], d["ratio"],
          "-" if cfg == "none" else "%.0f" % d["events_per_s"], "%.1f / %.1f" % (d["p50_ms"], d["p99_ms"]),
          "ok" if d["rows_ok"] else "WRONG"))
print("results:", sys.argv[2])
EOF
