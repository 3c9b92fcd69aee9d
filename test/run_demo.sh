#!/usr/bin/env bash
# test/run_demo.sh - what `make run` does: record a real recorded VerneMQ
# session (test/traces/scenario_a.trace) into PostgreSQL through the
# plugin, and show the rows.
#
# PostgreSQL: the one named by DSN=... (make run DSN='postgresql://...'),
# else a private server under _build/pg, started here and left running
# (stop it with: test/pg.sh stop _build/pg).
set -euo pipefail
cd "$(dirname "$0")/.."

TABLE=${TABLE:-vmq_events}
if [ -n "${DSN:-}" ]; then
    dsn=$DSN
    psql_run() { psql -X -v ON_ERROR_STOP=1 "$dsn" "$@"; }
else
    pgdir=$PWD/_build/pg
    # the socket path must stay short (108 bytes) and reachable by the
    # server's user: fall back to a directory under /tmp when it is not
    if [ ${#pgdir} -gt 80 ] || { [ "$(id -u)" = 0 ] && ! runuser -u postgres -- test -x "$PWD/_build"; }; then
        pgdir=/tmp/vmq_pgevents_run
    fi
    if [ ! -d "$pgdir/data" ]; then
        echo "== initializing a private PostgreSQL in $pgdir"
        mkdir -p _build
        bash test/pg.sh init "$pgdir"
    fi
    bash test/pg.sh start "$pgdir"
    dsn=$(bash test/pg.sh dsn "$pgdir")
    psql_run() { bash test/pg.sh psql "$pgdir" "$@"; }
fi

if [ -z "${DSN:-}" ] && [ "$(psql_run -Atc "SELECT c.relkind FROM pg_class c WHERE c.oid = to_regclass('$TABLE')")" = r ]; then
    # the private server's table from an earlier version is a plain one;
    # the plugin now partitions it by day (docs/months-of-data.md)
    echo "== the demo's $TABLE of an earlier version is not partitioned: dropped"
    psql_run -qc "DROP TABLE $TABLE, ${TABLE}_dead CASCADE"
fi

echo "== replaying test/traces/scenario_a.trace (MQTT 3.1.1: subscribe, publish, reconnect, unsubscribe)"
inc=$(erl -noshell -pa ebin -pa _build/make/test_ebin -eval "
    logger:set_primary_config(level, warning),
    application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, dsn, \"$dsn\"),
    application:set_env(vmq_pgevents, table, \"$TABLE\"),
    application:set_env(vmq_pgevents, spool_dir, \"_build/spool\"),
    {ok, _} = application:ensure_all_started(vmq_pgevents),
    Calls = pgev_broker:replay(\"test/traces/scenario_a.trace\"),
    N = case vmq_pgevents:flush(30000) of
            {ok, W} -> W;
            {error, timeout} ->
                #{last_error := Why} = vmq_pgevents:status(),
                io:format(standard_error, \"nothing written within 30 s: ~ts~n\", [Why]),
                halt(1)
        end,
    #{incarnation := Inc} = vmq_pgevents:status(),
    io:format(standard_error, \"~b hook calls, ~b rows written~n\", [length(Calls), N]),
    io:format(\"~b\", [Inc]),
    application:stop(vmq_pgevents),
    halt().")

echo
echo "== the rows (psql), this run only"
psql_run -P pager=off -c "
SELECT seq, to_char(ts, 'HH24:MI:SS.US') AS time, conn_id AS conn, hook, client_id,
       host(peer_addr) || ':' || peer_port AS peer, topic, qos, retain,
       coalesce(payload_json::text, encode(payload, 'escape')) AS payload,
       coalesce(topics::text, reason) AS topics
FROM $TABLE WHERE incarnation = $inc ORDER BY seq"

echo "== the connections (the view ${TABLE}_connections), this run only"
psql_run -P pager=off -c "
SELECT conn_id, client_id, username, host(peer_addr) AS peer, mqtt_version AS mqtt, clean_session AS clean,
       login, to_char(connected_at, 'HH24:MI:SS.MS') AS connected, ended_how,
       publishes, deliveries, subscribes, events
FROM ${TABLE}_connections WHERE incarnation = $inc ORDER BY connected_at"

echo "== what became of 1528366636-pub's messages (${TABLE}_journey)"
psql_run -P pager=off -c "
SELECT to_char(published_at, 'HH24:MI:SS.MS') AS published, topic, qos, payload_size AS bytes,
       to_client_id, to_conn_id, round(latency_ms::numeric, 3) AS latency_ms, candidates
FROM ${TABLE}_journey('1528366636-pub', now() - interval '1 minute') WHERE incarnation = $inc"

echo "Explore: psql '$dsn'   (table $TABLE; docs/queries.md has more queries)"
if command -v vmq-admin >/dev/null 2>&1; then
    echo
    echo "VerneMQ found. To record its hooks, add to vernemq.conf (priority 1 so auth attempts are seen):"
    echo "  plugins.vmq_pgevents = on"
    echo "  plugins.vmq_pgevents.path = $PWD"
    echo "  plugins.vmq_pgevents.priority = 1"
    echo "and copy priv/vmq_pgevents.schema into VerneMQ's share/schema/ to set vmq_pgevents.dsn there."
fi
