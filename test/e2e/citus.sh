# test/e2e/citus.sh - sourced by test/e2e/run.sh: the two clustered
# VerneMQ nodes of scenario_cluster writing into a Citus cluster (a
# coordinator and two workers: three PostgreSQL servers made by
# test/pg.sh with Citus preloaded, on 127.0.0.1), configured as the
# docs/scale-out.md says: vmq_pgevents.dsn names the
# coordinator, distribute is left at auto. Same conventions as
# scenarios.sh.

CITUS_DIRS=()

# citus_start BASE [fast]: the coordinator BASE_c and the workers BASE_w1,
# BASE_w2 (fast: fsync off, as the tests' servers; without: the defaults,
# as make bench-scale measures them)
citus_start() {
    local base=$1 fast=${2:-} d
    CITUS_DIRS=("${base}_c" "${base}_w1" "${base}_w2")
    for d in "${CITUS_DIRS[@]}"; do
        rm -rf "$d"
        bash test/pg.sh init "$d" $fast citus >/dev/null && bash test/pg.sh start "$d" &&
            bash test/pg.sh psql "$d" -q -c "CREATE EXTENSION citus" >/dev/null || return 1
    done
    bash test/pg.sh psql "${base}_c" -q \
        -c "SELECT citus_set_coordinator_host('127.0.0.1', $(cat "${base}_c/port"))" \
        -c "SELECT citus_add_node('127.0.0.1', $(cat "${base}_w1/port"))" \
        -c "SELECT citus_add_node('127.0.0.1', $(cat "${base}_w2/port"))" >/dev/null
}

citus_stop() {
    local d
    for d in "${CITUS_DIRS[@]}"; do
        bash test/pg.sh thaw "$d" >/dev/null 2>&1
        bash test/pg.sh stop "$d" >/dev/null 2>&1
        rm -rf "$d"
    done
    CITUS_DIRS=()
}

# 11. node A and node B (joined by scenario_cluster) pointed at the Citus
#     coordinator: the events table distributed on client_id; a publisher
#     on A, a subscriber on B and twenty more clients: each publish and
#     each delivery one row, rows on both workers, the publisher's rows on
#     one worker and the subscriber's on the other, and the message
#     journey found across them
scenario_citus() {
    local tag=${1:-$tag}
    echo " - the two nodes writing into a Citus cluster (a coordinator, two workers)"
    local B=$E2E/$tag/b/vernemq NODE_B=VerneMQ-b@127.0.0.1 i s out d subs0
    local PGDIR DB=postgres
    citus_start "$(mktemp -u /tmp/vmq_pgevents_e2e_citus.XXXXXX)" fast || { bad "the Citus cluster starts"; citus_stop; return 1; }
    PGDIR=${CITUS_DIRS[0]}
    local -x PGPORT
    PGPORT=$(cat "$PGDIR/port")
    broker_stop "$BROKER"
    broker_stop "$B"
    for d in "$BROKER" "$B"; do
        broker_conf "$d" "vmq_pgevents.dsn = host=$PGDIR port=$PGPORT user=$PGUSER dbname=$DB"
    done
    if ! broker_start "$BROKER" || ! broker_start "$B"; then
        bad "both nodes start with the coordinator's DSN"
        citus_stop
        return 1
    fi
    for i in $(seq 1 100); do
        [ "$(broker_admin "$B" cluster show | grep -c 'true')" -ge 2 ] && break
        sleep 0.2
    done
    check "the events table: distributed on client_id (distribute = auto)" "h|client_id" \
        "$(settle "SELECT partmethod, column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition
                   WHERE logicalrelid = to_regclass('vmq_events')" "h|client_id")"
    subs0=$(router_subs "$BROKER")
    # connected to B (a node just started may answer "server unavailable"
    # until the cluster is ready: connected again then), then in node A's
    # routing table
    s=
    for i in $(seq 1 60); do
        if [ -z "$s" ] || ! kill -0 "$s" 2>/dev/null; then
            mosquitto_sub -h 127.0.0.1 -p $((PORT + 100)) -i e2e-ct-sub -q 1 -t e2e/ct "${ALICE[@]}" -C 5 -W 60 >"$WORK/ct.out" 2>/dev/null &
            s=$!
        fi
        broker_admin "$B" session show --client_id=e2e-ct-sub 2>/dev/null | grep -q e2e-ct-sub && break
        sleep 0.5
    done
    routed "$BROKER" "$subs0" || bad "node A routes the subscription made on node B"
    # (node A too may refuse a CONNECT with "server unavailable" until the
    # cluster is ready: refused at CONNECT, nothing was published; again)
    for i in $(seq 1 60); do
        printf 'm1\nm2\nm3\nm4\nm5\n' | pub -i e2e-ct-pub -q 1 -t e2e/ct -l "${ALICE[@]}" 2>/dev/null && break
        sleep 0.5
    done
    wait "$s"
    check "the subscriber on B got the five messages published on A" "m1 m2 m3 m4 m5" "$(paste -sd ' ' "$WORK/ct.out")"
    for i in $(seq 0 19); do
        pub -i "e2e-ct-$i" -q 0 -t e2e/ct-other -m "x$i" "${ALICE[@]}"
    done
    BROKER=$B flush
    check "publish rows from node A, delivery rows from node B, each once" \
        "on_publish|$NODE|5|5 on_deliver|$NODE_B|5|5" \
        "$(settle "SELECT hook, node, count(*), count(DISTINCT payload) FROM vmq_events
                   WHERE client_id IN ('e2e-ct-pub', 'e2e-ct-sub') AND hook IN ('on_publish', 'on_deliver')
                   GROUP BY 1, 2 ORDER BY 1 DESC" "on_publish|$NODE|5|5
on_deliver|$NODE_B|5|5" | paste -sd ' ')"
    check "the twenty other clients: each connection's rows there, once" 20 \
        "$(settle "SELECT count(DISTINCT client_id) FROM vmq_events WHERE client_id LIKE 'e2e-ct-%' AND hook = 'on_publish'
                   AND client_id <> 'e2e-ct-pub'" 20)"
    check "every row once (node, incarnation, seq)" 0 \
        "$(q "SELECT count(*) - count(DISTINCT (node, incarnation, seq)) FROM vmq_events")"
    check "each node's seq 1..n without gaps" 0 \
        "$(q "SELECT count(*) FROM (SELECT count(*) n, min(seq) lo, max(seq) hi FROM vmq_events GROUP BY node, incarnation) s
              WHERE lo <> 1 OR n <> hi - lo + 1")"
    out=$(q "SELECT count(*) FILTER (WHERE n > 0) FROM (SELECT s.nodeport, sum(r.result::bigint) n
             FROM run_command_on_shards('vmq_events', 'SELECT count(*) FROM %s') r JOIN citus_shards s USING (shardid)
             GROUP BY 1) w")
    check "rows on both workers" 2 "$out"
    check "the publisher's rows on one worker, the subscriber's on the other" 2 \
        "$(q "SELECT count(DISTINCT s.nodeport) FROM (VALUES ('e2e-ct-pub'), ('e2e-ct-sub')) v(c)
              JOIN citus_shards s ON s.shardid = get_shard_id_for_distribution_column('vmq_events', v.c)")"
    check "the journey of each message: published on A, delivered on B, across the shards" \
        "e2e-ct-sub|$NODE_B|1 e2e-ct-sub|$NODE_B|1 e2e-ct-sub|$NODE_B|1 e2e-ct-sub|$NODE_B|1 e2e-ct-sub|$NODE_B|1" \
        "$(q "SELECT to_client_id, to_node, candidates FROM vmq_events_journey('e2e-ct-pub', '-infinity')" | paste -sd ' ')"
    check "the subscriber's connection, from its timeline on one shard" "on_deliver 5" \
        "$(q "SELECT hook, count(*) FROM vmq_events_timeline('e2e-ct-sub') WHERE hook = 'on_deliver' GROUP BY 1" | tr '|' ' ')"
    broker_stop "$B"
    broker_stop "$BROKER"
    citus_stop
}
