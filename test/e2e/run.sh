#!/usr/bin/env bash
# test/e2e/run.sh - the real-broker suite (run by `make test`).
#
# For every VerneMQ release tarball in ../shared/vernemq/ (or the release
# in VERNEMQ_HOME): unpack it under _build/e2e/, enable the built plugin
# the way docs/install.md tells a user, start a private PostgreSQL, boot the
# broker on 127.0.0.1, drive it with mosquitto_pub / mosquitto_sub, and
# check the rows against what the clients did; last, two clustered nodes
# of it writing into a Citus cluster (test/e2e/citus.sh). Ends with one line
# "N passed, N failed". Without any broker it says so and counts as
# skipped, except under CI (CI set), where that is a failure.
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
VSN=$(sed -n 's/^ *{vsn, *"\([^"]*\)"}.*/\1/p' erl_src/vmq_pgevents.app.src)
. test/e2e/broker.sh
. test/e2e/check.sh
. test/e2e/scenarios.sh
. test/e2e/operate.sh
. test/e2e/record.sh
. test/e2e/citus.sh
. test/e2e/docs.sh

sources=()
if [ -n "${VERNEMQ_HOME:-}" ]; then
    sources=("$VERNEMQ_HOME")
else
    for t in "${VERNEMQ_RELEASES:-../shared/vernemq}"/vernemq-*.tar.gz; do
        [ -f "$t" ] && sources+=("$(cd "$(dirname "$t")" && pwd)/$(basename "$t")")
    done
fi
if [ ${#sources[@]} -eq 0 ]; then
    if [ -n "${CI:-}" ]; then
        echo "real-broker suite: no VerneMQ release in ../shared/vernemq/ and no VERNEMQ_HOME (required under CI)"
        echo "0 passed, 1 failed"
        exit 1
    fi
    echo "real-broker suite skipped: no VerneMQ release tarball in ../shared/vernemq/ and no VERNEMQ_HOME"
    echo "0 passed, 0 failed, 1 skipped"
    exit 0
fi
# under CI both release lines are required: the 2.2-only scenarios (the
# listener chains) must not quietly never run
if [ -n "${CI:-}" ] && [ -z "${VERNEMQ_HOME:-}" ]; then
    for want in 2.1 2.2; do
        printf '%s\n' "${sources[@]}" | grep -q "/vernemq-$want\.[0-9]*-" ||
            { echo "real-broker suite: no VerneMQ $want release in ../shared/vernemq/ (required under CI)"; echo "0 passed, 1 failed"; exit 1; }
    done
fi
for tool in mosquitto_pub mosquitto_sub curl psql; do
    command -v $tool >/dev/null || { echo "real-broker suite: $tool missing (test/deps.sh installs it)"; echo "0 passed, 1 failed"; exit 1; }
done

E2E=$ROOT/_build/e2e
WORK=$E2E/work
mkdir -p "$WORK"
# the plugin as a user installs it: the release tarball (`make dist`)
# unpacked into a directory. PLUGIN's name is not the application's
# (VerneMQ must cope with that).
TARBALL=$(ls -t _build/dist/vmq_pgevents-*.tar.gz 2>/dev/null | head -n 1)
[ -n "$TARBALL" ] || { echo "real-broker suite: no release tarball in _build/dist (make dist)"; echo "0 passed, 1 failed"; exit 1; }
PLUGIN=$E2E/plugin/pgevents-build
PLUGIN2=$E2E/plugin/vmq_pgevents
for d in "$PLUGIN" "$PLUGIN2"; do
    rm -rf "$d" "$d.unpack"
    mkdir -p "$d.unpack"
    tar xzf "$TARBALL" -C "$d.unpack"
    mv "$d.unpack/vmq_pgevents" "$d"
    rmdir "$d.unpack"
done

PGDIR=$(mktemp -d /tmp/vmq_pgevents_e2e.XXXXXX)
PGUSER=$(if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi)
epmd_before=$(pgrep -x epmd || true)
STARTED=()
cleanup() {
    local b
    for b in "${STARTED[@]}"; do broker_stop "$b"; done
    citus_stop
    jobs -p | xargs -r kill -9 2>/dev/null
    # clients of this suite still running (a hung one would reconnect to a
    # later run's broker on the same port)
    pkill -9 -f "^mosquitto_(pub|sub) -h 127\.0\.0\.1 -p 18[0-9]{3}( |$)" 2>/dev/null
    if [ -z "$epmd_before" ]; then pkill -x epmd 2>/dev/null; fi
    bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1
    rm -rf "$PGDIR"
}
trap cleanup EXIT
bash test/pg.sh init "$PGDIR" fast >/dev/null && bash test/pg.sh start "$PGDIR" ||
    { echo "could not start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }

t0=$SECONDS
for src in "${sources[@]}"; do
    tag=$(basename "$src" .tar.gz)
    echo "== $tag"
    A=$E2E/$tag/a/vernemq
    broker_unpack "$src" "$E2E/$tag/a" || { bad "unpack $src"; continue; }
    VERSION=$(broker_version "$A")
    DB=e2e_$(echo "$VERSION" | tr -c '0-9a-z\n' _)
    bash test/pg.sh psql "$PGDIR" -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB" >/dev/null
    # (the socket's trust authentication sends no password: this one is
    # there to be found nowhere, scenario_admin)
    DSN="host=$PGDIR port=5432 user=$PGUSER dbname=$DB password=e2e-dsn-pw"
    NODE=VerneMQ@127.0.0.1
    PORT=18830
    HTTP=18831
    broker_configure "$A" "$NODE" "$PORT" "$PLUGIN" "$DSN"
    case "$VERSION" in
        2.1.*) ;;   # forwards connection options on TLS listeners only
        *) broker_conf "$A" "listener.tcp.fwd = 127.0.0.1:$((PORT + 3))" \
                       "listener.tcp.fwd.forward_connection_opts = on" ;;
    esac
    BROKER=$A
    STARTED+=("$A")
    echo "   VerneMQ $VERSION, plugin directory $(basename "$PLUGIN")"
    if [ -n "${E2E_ONLY:-}" ]; then
        # a developer's run of some scenarios only (never under CI):
        # E2E_ONLY="scenario_traffic scenario_stopped_plugin"
        [ -z "${CI:-}" ] || { bad "E2E_ONLY is not for CI"; continue; }
        if broker_start "$A"; then
            for s in $E2E_ONLY; do "$s"; done
        else
            bad "broker starts"
        fi
        broker_stop "$A"
        continue
    fi
    if scenario_boot_pg_down; then
        scenario_traffic
        scenario_operate
        scenario_frozen_pg
        case "$VERSION" in
            2.1.*) ;;
            *) scenario_connection_opts
               scenario_listener_chains ;;
        esac
        scenario_stop_pg_down
        # last: enabled at run time, the plugin comes after vmq_passwd/vmq_acl
        scenario_plugin_reenable
        scenario_whole_run
        stop_checked "$A" "vernemq stop ends the node"
        check "a clean stop leaves no spool or journal file" "" "$(ls "$A/data/vmq_pgevents" 2>/dev/null)"
        if broker_start "$A"; then
            scenario_broker_killed
            scenario_stopped_plugin
        else
            bad "broker starts again"
        fi
        broker_stop "$A"
        scenario_bad_config
        scenario_record_drops
        scenario_cli_record
        scenario_compress
        scenario_privacy
        scenario_cluster "$src" "$tag"
        scenario_citus "$tag"
        scenario_quick_start
    fi
    broker_stop "$A"
    echo "   ($((SECONDS - t0)) s so far)"
done

echo "real-broker suite: ${#sources[@]} broker release(s) in $((SECONDS - t0)) s"
echo "$E2E_PASS passed, $E2E_FAIL failed"
[ "$E2E_FAIL" -eq 0 ]
