#!/usr/bin/env bash
# bench/run_bench_broker.sh - what `make bench-broker` runs: a real VerneMQ
# (the 2.1.2 release in ../shared/vernemq/, or VERNEMQ_HOME) with the plugin
# enabled as docs/install.md says, a private PostgreSQL with default settings on
# the same machine, and a closed-loop MQTT load (bench/mqtt_load.c:
# PUBS publishers, SUBS subscribers, QoS 1, 64-byte payloads, each
# publisher keeping at most WINDOW messages not yet received by every
# subscriber) for RUN_SECONDS, in three configurations taking turns REPS
# times in one run (the broker restarted before every run):
#   none     the plugin off (plugins.vmq_pgevents = off)
#   all      every hook recorded (4 events per message: auth_on_publish,
#            on_publish, one on_deliver per subscriber)
#   pubdel   vmq_pgevents.hooks = on_publish,on_deliver (3 events per message)
#   none_pin, all_pin   none and all with PostgreSQL pinned to core 0 and
#            the broker with its load to core 1 (taskset): the broker's own
#            cost when the database does not share its CPU, as in production
#            (their ratio is all_pin against none_pin)
# Per run: receipts per second, publish->receipt latency, the CPU time of
# the broker's threads (schedulers, the writer thread "vmq_pgevents", the
# journal's threads) and of PostgreSQL, and the rows checked against what
# the load sent and received. Medians over the runs, printed as a table and
# written to _build/bench/broker.json. Before each run the table is emptied
# and PostgreSQL checkpoints, so every run starts from the same state.
# PERF=1: also the writer thread's CPU by perf stat and a profile of the
# PostgreSQL backend (first all run).
set -uo pipefail    # not -e: test/e2e/broker.sh's helpers expect plain bash
cd "$(dirname "$0")/.."
ROOT=$PWD
. test/e2e/broker.sh
BUILD=_build/make
OUT=$ROOT/_build/bench
mkdir -p "$OUT"
RUN_SECONDS=${RUN_SECONDS:-20}
REPS=${REPS:-5}
PUBS=${PUBS:-10}
SUBS=${SUBS:-2}
WINDOW=${WINDOW:-10}
PORT=${PORT:-21883}
NODE=vmqbench@127.0.0.1


src=${VERNEMQ_HOME:-$(ls ../shared/vernemq/vernemq-2.1.2-*.tar.gz 2>/dev/null | head -n 1)}
[ -n "$src" ] || src=$(ls ../shared/vernemq/vernemq-*.tar.gz 2>/dev/null | head -n 1)
[ -n "$src" ] || { echo "bench-broker: no VerneMQ release in ../shared/vernemq/ and no VERNEMQ_HOME" >&2; exit 1; }

WORKDIR=$ROOT/_build/bench/broker
PLUGIN=$WORKDIR/plugin/vmq_pgevents
PGDIR=$(mktemp -d /tmp/vmq_pgevents_benchb.XXXXXX)
BROKER=$WORKDIR/release/vernemq
cleanup() {
    broker_stop "$BROKER" >/dev/null 2>&1 || true
    bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1
    rm -rf "$PGDIR"
}
trap cleanup EXIT
rm -rf "$PLUGIN"
mkdir -p "$PLUGIN"
cp -r ebin priv "$PLUGIN/"
bash test/pg.sh init "$PGDIR" >/dev/null && bash test/pg.sh start "$PGDIR" >/dev/null || exit 1
PGUSER=$(if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi)
DSN="host=$PGDIR port=5432 user=$PGUSER dbname=postgres"
sql() { bash test/pg.sh psql "$PGDIR" -X -At -v ON_ERROR_STOP=1 -c "$1"; }

broker_unpack "$src" "$WORKDIR/release" || { echo "bench-broker: cannot unpack $src" >&2; exit 1; }
broker_configure "$BROKER" "$NODE" "$PORT" "$PLUGIN" "$DSN"
broker_conf "$BROKER" "max_inflight_messages = 0" "max_online_messages = -1"
CONFIGS=(none all pubdel none_pin all_pin)
echo "== $(basename "$src"), PostgreSQL $(sql "SHOW server_version"), $(nproc) cores; ${REPS}x ${CONFIGS[*]}, ${RUN_SECONDS} s each, $PUBS publishers, $SUBS subscribers, window $WINDOW"
PGMAIN=$(head -n 1 "$PGDIR/data/postmaster.pid")

# pin CPUS: PostgreSQL (the postmaster and every process it has, and so
# every backend it forks later) to these cores
pin_postgres() {
    local t
    for t in $PGMAIN $(pgrep -P "$PGMAIN"); do taskset -a -p -c "$1" "$t" >/dev/null 2>&1; done
}
LOADPIN=()

# Every run starts from a fresh boot of the broker, configured in
# vernemq.conf as a user would (plugins.vmq_pgevents = off, or on with
# vmq_pgevents.hooks), so no configuration inherits a warmer or more
# worn broker from the one before; a short warm-up (its own topics) is not
# measured. (Enabling the plugin at run time with vmq-admin would also put
# it after vmq_acl in the auth hooks, where it never sees auth_on_publish.)
configure() {
    broker_stop "$BROKER"
    case $1 in
        none|none_pin) broker_conf "$BROKER" "plugins.vmq_pgevents = off" ;;
        all|all_pin) broker_conf "$BROKER" "plugins.vmq_pgevents = on" "vmq_pgevents.hooks = all" ;;
        pubdel) broker_conf "$BROKER" "plugins.vmq_pgevents = on" "vmq_pgevents.hooks = on_publish,on_deliver" ;;
    esac
    broker_start "$BROKER" "$([ "${1%_pin}" = none ] || echo vmq_pgevents) vmq_passwd vmq_acl" >&2 || exit 1
    BEAM=$(broker_pid "$BROKER")
    if [ "${1%_pin}" != "$1" ]; then
        pin_postgres 0
        taskset -a -p -c 1 "$BEAM" >/dev/null
        LOADPIN=(taskset -c 1)
    else
        pin_postgres 0-$(($(nproc) - 1))
        LOADPIN=()
    fi
    MQTT_USER=alice MQTT_PASS=alice-pw "${LOADPIN[@]}" "$BUILD/mqtt_load" 127.0.0.1 "$PORT" 1 "$PUBS" "$SUBS" "$WINDOW" "warmup" >/dev/null
}

# CPU seconds (user + system) of: the broker's threads by group, and every
# PostgreSQL process; and the whole machine's busy time
ticks=$(getconf CLK_TCK)
cpu_snapshot() {
    local t comm f
    for t in /proc/"$BEAM"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null) || continue
        f=$(cut -d' ' -f14,15 "$t/stat" 2>/dev/null) || continue
        case $comm in
            vmq_pgevents) echo "writer $f" ;;
            vmq_pgev_*) echo "journal $f" ;;
            *_scheduler) echo "schedulers $f" ;;
            *_dirty_*) echo "dirty $f" ;;
            *) echo "broker_other $f" ;;
        esac
    done
    for t in $PGMAIN $(pgrep -P "$PGMAIN"); do
        f=$(sed 's/.*) //' "/proc/$t/stat" 2>/dev/null | cut -d' ' -f12,13) || continue
        echo "postgres $f"
    done
    awk '/^cpu / { print "machine", $2 + $3 + $4 + $7 + $8, 0 }' /proc/stat
}
cpu_sum() { awk -v tk="$ticks" '{ s[$1] += ($2 + $3) / tk } END { for (k in s) printf "%s %.3f\n", k, s[k] }'; }

results=$OUT/broker.runs
: >"$results"
for rep in $(seq 1 "$REPS"); do
    # the order turns between reps
    k=$(((rep - 1) % ${#CONFIGS[@]}))
    order=("${CONFIGS[@]:k}" "${CONFIGS[@]:0:k}")
    for cfg in "${order[@]}"; do
        configure "$cfg"
        prefix=b${rep}${cfg}
        profiling=0
        if [ "${PERF:-0}" = 1 ] && [ "$rep" = 1 ] && [ "$cfg" = all ] && command -v perf >/dev/null; then
            # the writer thread's CPU by perf, and where the PostgreSQL
            # backend that takes the plugin's COPY spends its time
            profiling=1
            wtid=$(grep -lx vmq_pgevents /proc/"$BEAM"/task/*/comm | head -n 1 | cut -d/ -f5)
            bpid=$(sql "SELECT pid FROM pg_stat_activity WHERE application_name = 'vmq_pgevents' LIMIT 1")
            perf stat -e task-clock -t "$wtid" -x, -o "$OUT/writer.perfstat" -- sleep "$RUN_SECONDS" 2>/dev/null &
            perf record -q -F 999 -g -p "$bpid" -o "$OUT/pg_backend.perf" -- sleep "$RUN_SECONDS" >/dev/null 2>&1 &
        fi
        # every run starts alike: the rows of the runs before are gone and
        # their dirty pages written (no checkpoint, no autovacuum, no bigger
        # index left to one configuration by the runs before it)
        sql "DO \$\$ BEGIN IF to_regclass('vmq_events') IS NOT NULL THEN TRUNCATE vmq_events; END IF; END \$\$" >/dev/null
        sql "CHECKPOINT" >/dev/null
        before=$(cpu_snapshot | cpu_sum)
        load=$(MQTT_USER=alice MQTT_PASS=alice-pw "${LOADPIN[@]}" "$BUILD/mqtt_load" 127.0.0.1 "$PORT" "$RUN_SECONDS" "$PUBS" "$SUBS" "$WINDOW" "$prefix") ||
            { echo "bench-broker: the load failed" >&2; exit 1; }
        after=$(cpu_snapshot | cpu_sum)
        rows_ok=-
        events=0
        if [ "${cfg%_pin}" != none ]; then
            broker_admin "$BROKER" pgevents flush >/dev/null
            read -r pubs dels auths events < <(sql "
                SELECT count(*) FILTER (WHERE hook = 'on_publish'), count(*) FILTER (WHERE hook = 'on_deliver'),
                       count(*) FILTER (WHERE hook = 'auth_on_publish'), count(*)
                FROM vmq_events WHERE topic LIKE '$prefix/%'" | tr '|' ' ')
            sent=$(sed 's/.*"sent": \([0-9]*\).*/\1/' <<<"$load")
            recv=$(sed 's/.*"received": \([0-9]*\).*/\1/' <<<"$load")
            want_auth=$([ "${cfg%_pin}" = all ] && echo "$sent" || echo 0)
            if [ "$pubs" = "$sent" ] && [ "$dels" = "$recv" ] && [ "$auths" = "$want_auth" ]; then rows_ok=yes
            else rows_ok="NO (on_publish $pubs/$sent, on_deliver $dels/$recv, auth_on_publish $auths/$want_auth)"; fi
        fi
        if [ $profiling = 1 ]; then
            wait
            wms=$(awk -F, '/task-clock/ { print $1 }' "$OUT/writer.perfstat")
            echo "  perf: the writer thread ran $wms ms for $events events: $(awk -v m="$wms" -v e="$events" 'BEGIN { printf "%.2f", m * 1000 / e }') µs per event"
            perf report -i "$OUT/pg_backend.perf" --stdio --no-children -g none --sort dso,symbol 2>/dev/null |
                grep -E '^ +[0-9]' | head -n 25 >"$OUT/pg_backend.txt"
            echo "  perf: the PostgreSQL backend's top symbols in $OUT/pg_backend.txt"
        fi
        cpu=$(join <(sort <<<"$before") <(sort <<<"$after") | awk '{ printf "\"%s\": %.3f, ", $1, $3 - $2 }')
        echo "{\"rep\": $rep, \"config\": \"$cfg\", \"events\": $events, \"rows_ok\": \"$rows_ok\", \"cpu_s\": {${cpu%, }}, \"load\": $load}" >>"$results"
        printf '  %-7s run %d: %s  rows %s\n' "$cfg" "$rep" "$load" "$rows_ok"
    done
done

# the summary: medians per configuration, ratios to none, CPU per event
python3 - "$results" "$OUT/broker.json" "$(basename "$src")" "$RUN_SECONDS" "$REPS" <<'EOF'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = statistics.median
out = {"release": sys.argv[3], "run_seconds": int(sys.argv[4]), "reps": int(sys.argv[5]), "configs": {}}
for cfg in ["none", "all", "pubdel", "none_pin", "all_pin"]:
    rs = [r for r in runs if r["config"] == cfg]
    d = {"delivered_per_s": med(r["load"]["delivered_per_s"] for r in rs),
         "p50_ms": med(r["load"]["p50_ms"] for r in rs), "p99_ms": med(r["load"]["p99_ms"] for r in rs),
         "rows_ok": all(r["rows_ok"] in ("yes", "-") for r in rs),
         "lost": sum(r["load"]["lost"] for r in rs)}
    # CPU per delivered message, and per recorded event for the writer and PostgreSQL
    for k in ["schedulers", "writer", "journal", "postgres", "machine"]:
        d["cpu_us_per_msg_" + k] = med(r["cpu_s"].get(k, 0) * 1e6 / max(1, r["load"]["received"]) for r in rs)
        if not cfg.startswith("none"):
            d["cpu_us_per_event_" + k] = med(r["cpu_s"].get(k, 0) * 1e6 / max(1, r["events"]) for r in rs)
    out["configs"][cfg] = d
for cfg, d in out["configs"].items():
    base = out["configs"]["none_pin" if cfg.endswith("_pin") else "none"]["delivered_per_s"]
    d["ratio"] = d["delivered_per_s"] / base if base else 0
json.dump(out, open(sys.argv[2], "w"), indent=1)
print("\n%-8s %14s %6s %16s %12s %12s %12s %12s %8s" % ("config", "receipts/s", "ratio", "p50/p99 ms",
      "sched µs/msg", "writer µs/ev", "jrnl µs/ev", "pg µs/ev", "rows"))
for cfg, d in out["configs"].items():
    ev = lambda k: ("%.2f" % d["cpu_us_per_event_" + k]) if not cfg.startswith("none") else "-"
    print("%-8s %14.0f %5.2fx %16s %12.1f %12s %12s %12s %8s" % (cfg, d["delivered_per_s"], d["ratio"],
          "%.1f / %.1f" % (d["p50_ms"], d["p99_ms"]), d["cpu_us_per_msg_schedulers"], ev("writer"),
          ev("journal"), ev("postgres"), "ok" if d["rows_ok"] else "WRONG"))
print("(ratio: against none; the _pin lines against none_pin)")
print("results:", sys.argv[2])
EOF
