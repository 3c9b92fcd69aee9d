# test/e2e/operate.sh - sourced by test/e2e/run.sh: operating the plugin in
# the real broker (vmq-admin, Prometheus, plugin disable/enable, a stop
# while PostgreSQL is down, connection options, a cluster), and checks
# over all of one broker's rows. Same conventions as scenarios.sh.

# a value from `vmq-admin pgevents show`: show_value HOOK COLUMN(2..)
show_value() {
    broker_admin "$BROKER" pgevents show |
        awk -F'|' -v h="$1" -v c="$2" '{k=$2; gsub(/ /, "", k); if (k == h) {v=$(c + 1); gsub(/^ +| +$/, "", v); print v}}'
}

# a series from the broker's Prometheus endpoint: prom NAME HOOK
prom() {
    curl -s "http://127.0.0.1:$HTTP/metrics" |
        awk -v n="vernemq_$1" -v h="hook=\"$2\"" 'index($0, n "{") == 1 && index($0, h) {print $NF}'
}

# the writer threads in the broker (named vmq_pgevents)
writer_threads() {
    grep -lx vmq_pgevents /proc/"$(broker_pid "$BROKER")"/task/*/comm 2>/dev/null | wc -l
}

# 3. vmq-admin pgevents status|show|flush|disable|enable, vmq-admin set,
#    and the Prometheus series, against the rows
scenario_operate() {
    echo " - vmq-admin pgevents, vmq-admin set, Prometheus"
    local out got i
    out=$(broker_admin "$BROKER" pgevents flush)
    check_re "vmq-admin pgevents flush" '^wrote [0-9]+ rows' "$out"
    check "status: written = rows in the table" "$(q "SELECT count(*) FROM vmq_events")" "$(status_value written)"
    check "status: nothing dropped, nothing queued" "0|0" "$(status_value 'dropped (no room: journal, disk limit or queue)')|$(status_value 'queued events')"
    check "show: on_publish written = its rows" "$(q "SELECT count(*) FROM vmq_events WHERE hook = 'on_publish'")" \
        "$(show_value on_publish 3)"
    check "Prometheus: vernemq_pgevents_written{hook=on_publish} = its rows" \
        "$(q "SELECT count(*) FROM vmq_events WHERE hook = 'on_publish'")" "$(prom pgevents_written on_publish)"
    check "Prometheus: vernemq_pgevents_written{hook=on_deliver} = its rows" \
        "$(q "SELECT count(*) FROM vmq_events WHERE hook = 'on_deliver'")" "$(prom pgevents_written on_deliver)"
    # the alert rules' runbook SQL, as an operator pastes it
    local sql
    sql=$(sed -n 's/^ *runbook_hint: \(SELECT .*\)$/\1/p' "$PLUGIN/priv/vmq_pgevents.rules.yml" | sed 's/<table>/vmq_events/g')
    if [ -n "$sql" ] && out=$(q "$sql"); then ok "the alert rules' runbook SQL runs against the table"
    else bad "the alert rules' runbook SQL runs against the table" "$sql" "$out"; fi
    check "Prometheus: vernemq_pgevents_connected" 1 \
        "$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk 'index($0, "vernemq_pgevents_connected") == 1 {print $NF}')"

    out=$(broker_admin "$BROKER" pgevents disable hook=on_deliver)
    check_re "vmq-admin pgevents disable hook=on_deliver" '^on_deliver: not recording' "$out"
    check "show: on_deliver off (run-time)" "off (run-time)" "$(show_value on_deliver 2)"
    bg_sub -i e2e-dis-sub -q 1 -t e2e/dis "${ALICE[@]}" -C 1 -W 10 >/dev/null
    local s=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-dis-sub' AND hook = 'on_subscribe'" 1 >/dev/null
    pub -i e2e-dis-pub -q 1 -t e2e/dis -m while-off "${ALICE[@]}"
    wait "$s"
    out=$(broker_admin "$BROKER" pgevents enable hook=on_deliver)
    check_re "vmq-admin pgevents enable hook=on_deliver" '^on_deliver: recording' "$out"
    pub -i e2e-en-pub -q 1 -r -t e2e/en -m on-again "${ALICE[@]}"
    got=$(sub -i e2e-en-sub -q 1 -t e2e/en "${ALICE[@]}" -C 1 -W 10)
    check "a delivery while on_deliver was disabled is not recorded; its publish is" "1|0" \
        "$(settle "SELECT (SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-dis-pub' AND hook = 'on_publish'),
                          (SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-dis-sub' AND hook = 'on_deliver')" "1|0")"
    check "after enable, deliveries are recorded again" "on-again|1" \
        "$(settle "SELECT '$got', count(*) FROM vmq_events WHERE client_id = 'e2e-en-sub' AND hook = 'on_deliver' AND topic = 'e2e/en'" "on-again|1")"
    pub -i e2e-en-pub -q 1 -r -n -t e2e/en "${ALICE[@]}"

    out=$(broker_admin "$BROKER" set vmq_pgevents.batch_size=250)
    check "vmq-admin set vmq_pgevents.batch_size=250" "" "$(echo "$out" | grep -iE 'error|invalid|unknown')"
    check "vmq-admin show vmq_pgevents.batch_size" 250 \
        "$(broker_admin "$BROKER" show vmq_pgevents.batch_size | awk -F'|' -v n="$NODE" '$2 ~ n {v=$3; gsub(/ /, "", v); print v}')"
    broker_admin "$BROKER" set 'vmq_pgevents.topic_exclude=a/#/b' >/dev/null
    local said='vmq_pgevents: vmq-admin set vmq_pgevents.topic_exclude="a/#/b": not applied: not a valid MQTT topic filter: a/#/b (the value before stays in use)'
    for i in $(seq 1 50); do   # (the log is written a moment later)
        grep -qF "$said" "$BROKER/log/console.log" && break
        sleep 0.1
    done
    check "vmq-admin set of a bad filter: not applied, the log says why" 1 "$(grep -cF "$said" "$BROKER/log/console.log")"
    check "... the value in use is put back (vmq-admin show)" '$SYS/#' \
        "$(broker_admin "$BROKER" show vmq_pgevents.topic_exclude | awk -F'|' -v n="$NODE" '$2 ~ n {v=$3; gsub(/ /, "", v); print v}')"
    out=$(broker_admin "$BROKER" set vmq_pgevents.batch_size=300 2>&1)
    check "... and a later set of another key takes" "" "$(echo "$out" | grep -iE 'error|invalid|unknown|not applied')"
    out=$(broker_admin "$BROKER" show vmq_pgevents.dsn)
    check "vmq-admin show vmq_pgevents.dsn: the password as ****, nowhere in clear" "1|0" \
        "$(grep -c " password=\*\*\*\* " <<<"$out")|$(grep -c e2e-dsn-pw <<<"$out")"
    out=$({ broker_admin "$BROKER" pgevents show; broker_admin "$BROKER" pgevents status; } 2>&1)
    check "the dsn's password in neither pgevents show nor status, nor in the logs" "0|0" \
        "$(grep -c e2e-dsn-pw <<<"$out")|$(cat "$BROKER"/log/*.log | grep -c e2e-dsn-pw)"
    pub -i e2e-set-pub -q 0 -t e2e/set -m after-set "${ALICE[@]}"
    check "recording goes on after vmq-admin set" 1 \
        "$(settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-set-pub' AND hook = 'on_publish'" 1)"
}

# 4. vmq-admin plugin disable / enable --path with a client connected
scenario_plugin_reenable() {
    echo " - vmq-admin plugin disable / enable --path, a subscriber connected throughout"
    local written out
    bg_sub -i e2e-re-sub -q 1 -t e2e/re "${ALICE[@]}" -C 2 -W 30 >"$WORK/re.out"
    local s=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-re-sub' AND hook = 'on_subscribe'" 1 >/dev/null
    written=$(status_value written)
    out=$(broker_admin "$BROKER" plugin disable --name vmq_pgevents)
    check "vmq-admin plugin disable" Done "$out"
    pub -i e2e-re-pub1 -q 1 -t e2e/re -m while-disabled "${ALICE[@]}"
    out=$({ broker_admin "$BROKER" pgevents status; broker_admin "$BROKER" pgevents disable hook=on_deliver; } 2>&1)
    check "while disabled: vmq-admin pgevents status and disable say the plugin is not running" "2|0" \
        "$(grep -c 'vmq_pgevents is not running' <<<"$out")|$(grep -ciE 'crash|error|exception' <<<"$out")"
    out=$(broker_admin "$BROKER" plugin enable --name vmq_pgevents --path "$PLUGIN")
    check "vmq-admin plugin enable --path" Done "$out"
    pub -i e2e-re-pub2 -q 1 -t e2e/re -m re-enabled "${ALICE[@]}"
    wait "$s"
    check "the subscriber got both messages" "while-disabled|re-enabled" "$(paste -sd '|' "$WORK/re.out")"
    # enabled at run time, the plugin comes after vmq_passwd and vmq_acl:
    # no auth_on_* rows (docs/install.md, "Enabling it in VerneMQ")
    check "after enable: the publisher's events (no auth_on_*)" \
        "on_client_gone on_client_wakeup on_publish on_register on_topic_unsubscribed" \
        "$(settle "SELECT string_agg(hook, ' ' ORDER BY hook) FROM vmq_events WHERE client_id = 'e2e-re-pub2'" \
                  "on_client_gone on_client_wakeup on_publish on_register on_topic_unsubscribed")"
    check "nothing recorded while disabled" 0 "$(q "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-re-pub1'")"
    check "after enable: the delivery carries the subscriber's connection from before" "1|1" \
        "$(settle "SELECT count(*), count(*) FILTER (WHERE conn_id = (SELECT conn_id FROM vmq_events WHERE client_id = 'e2e-re-sub' AND hook = 'on_register'))
                   FROM vmq_events WHERE client_id = 'e2e-re-sub' AND hook = 'on_deliver'" "1|1")"
    check "status counters carry on across the restart of the plugin" 1 \
        "$(( $(status_value written) > written ))"
    check "one writer thread in the broker" 1 "$(writer_threads)"
}

# 5. `vernemq stop` while PostgreSQL is down with events queued; start
#    again with PostgreSQL up: every event written once
scenario_stop_pg_down() {
    echo " - vernemq stop while PostgreSQL is down, start with it up"
    local held
    # a client connected through the stop: VerneMQ calls no hook for it
    bg_sub -i e2e-held-stop -q 1 -t e2e/held "${ALICE[@]}" >/dev/null
    held=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-held-stop' AND hook = 'on_subscribe'" 1 >/dev/null
    bash test/pg.sh stop "$PGDIR"
    seq 1 300 | pub -i e2e-stop-pub -q 1 -t e2e/stop -l "${ALICE[@]}"
    sleep 1
    check_re "status: the events wait while PostgreSQL is down" '^[1-9][0-9]*$' "$(status_value 'queued events')"
    stop_checked "$BROKER" "vernemq stop ends the node with PostgreSQL down"
    kill "$held" 2>/dev/null
    wait "$held" 2>/dev/null
    check_re "the stop leaves the queued events on disk (the journal's files)" '[1-9]' \
        "$(ls "$BROKER"/data/vmq_pgevents/ 2>/dev/null | grep -c '^journal-')"
    bash test/pg.sh start "$PGDIR"
    broker_start "$BROKER" || { bad "broker starts again"; return 1; }
    check "every event of the stopped run written once" "300|300|1|300|1" \
        "$(settle "SELECT count(*), count(DISTINCT convert_from(payload, 'UTF8')),
                          min(convert_from(payload, 'UTF8')::int), max(convert_from(payload, 'UTF8')::int),
                          count(DISTINCT incarnation)
                   FROM vmq_events WHERE client_id = 'e2e-stop-pub' AND hook = 'on_publish'" "300|300|1|300|1" 20)"
    check_conns "the stopped run's publisher: all its events" e2e-stop-pub \
        "auth_on_register on_client_wakeup on_register $(printf 'auth_on_publish on_publish %.0s' $(seq 1 300))on_topic_unsubscribed on_client_gone"
    pub -i e2e-after-restart -q 1 -t e2e/x -m after "${ALICE[@]}"
    check "recording after the restart" 1 \
        "$(settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-after-restart' AND hook = 'on_publish'" 1)"
    check "the connection held through the clean stop: no end row, ended_how 'node stopped'" "|node stopped" \
        "$(q "SELECT ended_at, ended_how FROM vmq_events_connections WHERE client_id = 'e2e-held-stop'")"
    check "the stopped incarnation's last row is its pgevents_stop" pgevents_stop \
        "$(q "SELECT hook FROM vmq_events WHERE (node, incarnation) IN (SELECT node, incarnation FROM vmq_events
              WHERE client_id = 'e2e-held-stop') ORDER BY seq DESC LIMIT 1")"
}

# over all rows of the broker so far
scenario_whole_run() {
    echo " - all rows of this broker"
    flush
    check "every row carries the node" "$NODE" "$(q "SELECT string_agg(DISTINCT node, ',') FROM vmq_events")"
    check "one incarnation per broker start (2), reloads included" 2 "$(q "SELECT count(DISTINCT incarnation) FROM vmq_events")"
    check "seq is 1..n without gaps in each incarnation (nothing lost, nothing twice)" 0 \
        "$(q "SELECT count(*) FROM (SELECT count(*) n, min(seq) lo, max(seq) hi FROM vmq_events GROUP BY node, incarnation) s
              WHERE lo <> 1 OR n <> hi - lo + 1")"
    check "no row marked malformed" 0 "$(q "SELECT count(*) FROM vmq_events WHERE extra ? 'malformed'")"
    check "completeness: the first start stopped, the second runs, nothing missing in either" \
        "stopped|0|[] running|0|[]" \
        "$(q "SELECT ended, missing, missing_ranges FROM vmq_events_completeness('-infinity') ORDER BY incarnation" | paste -sd ' ')"
    check "each start's first row is its pgevents_start, with the plugin's version" "2|$VSN" \
        "$(q "SELECT count(*), string_agg(DISTINCT extra->>'version', ',') FROM vmq_events WHERE seq = 1 AND hook = 'pgevents_start'")"
    check "the table is partitioned by day: today's partition and the next two exist" 3 \
        "$(q "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
              WHERE i.inhparent = 'vmq_events'::regclass AND c.relname IN (
                SELECT 'vmq_events_p' || to_char((now() + d * interval '1 day') AT TIME ZONE 'UTC', 'YYYYMMDD')
                FROM generate_series(0, 2) d)")"
    check "every row in its day's partition" 0 \
        "$(q "SELECT count(*) FROM vmq_events WHERE tableoid::regclass::text <>
              'vmq_events_p' || to_char(ts AT TIME ZONE 'UTC', 'YYYYMMDD')")"
    check "no password anywhere in the table" 0 \
        "$(q "SELECT count(*) FROM vmq_events t WHERE t::text LIKE '%alice-pw%' OR t::text LIKE '%bob-pw%'
              OR encode(payload, 'hex') LIKE '%616c6963652d7077%'")"
}

# 11. VerneMQ keeps calling a plugin's hooks after the plugin's
#     application stopped (by itself, by `vmq-admin node stop`, or, for a
#     plugin enabled at run time, first in a `vernemq stop`): nothing
#     records them; they are counted and the next start says how many
scenario_stopped_plugin() {
    echo " - hooks called after the plugin's application stopped"
    local out a0 logged0 i
    flush
    a0=$(broker_rpc "$BROKER" "$NODE" vmq_pgevents_nif status '' | tr -d ' \n' | grep -o 'dropped_after_stop=>[0-9]*' | cut -d'>' -f2)
    logged0=$(grep -c 'were not recorded' "$BROKER/log/console.log")
    out=$(broker_rpc "$BROKER" "$NODE" application stop vmq_pgevents.)
    check "the plugin's application stopped (its hooks stay registered)" ok "$out"
    pub -i e2e-after-stop -q 1 -t e2e/after -m after-stop "${ALICE[@]}"
    # (vmq-admin pgevents is the application's: asked of the NIF directly)
    out=$(broker_rpc "$BROKER" "$NODE" vmq_pgevents_nif status '' | tr -d ' \n' | grep -o 'dropped_after_stop=>[0-9]*' | cut -d'>' -f2)
    check "the publisher's 7 hook calls counted (dropped_after_stop)" 7 "$((out - a0))"
    out=$(broker_rpc "$BROKER" "$NODE" application start vmq_pgevents.)
    check "the plugin's application started again" ok "$out"
    for i in $(seq 1 50); do
        [ "$(grep -c 'were not recorded' "$BROKER/log/console.log")" -gt "$logged0" ] && break
        sleep 0.2
    done
    check_re "its start says how many were not recorded" \
        '7 events of hooks called while the plugin was stopped were not recorded' \
        "$(grep 'were not recorded' "$BROKER/log/console.log" | tail -n 1)"
    pub -i e2e-after-start -q 1 -t e2e/after -m after-start "${ALICE[@]}"
    check "recording again after the start; nothing of the stopped time" "0|7" \
        "$(settle "SELECT count(*) FILTER (WHERE client_id = 'e2e-after-stop'), count(*) FILTER (WHERE client_id = 'e2e-after-start')
                   FROM vmq_events" "0|7")"
}

# 10. kill -9 of the broker during MQTT traffic, PostgreSQL healthy; then
#     `vernemq start`: every message a subscriber received (so its
#     on_publish and on_deliver calls had returned) has both rows, once
scenario_broker_killed() {
    echo " - kill -9 of the broker during MQTT traffic (the journal)"
    local out=$WORK/kill-sub.out pubpid subpid got set i
    bg_sub -i e2e-kill-sub -q 1 -t e2e/kill "${ALICE[@]}" >"$out"
    subpid=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-kill-sub' AND hook = 'on_subscribe'" 1 >/dev/null
    # (mosquitto_pub itself as the pipeline's last command, so that $! is
    # its PID: the pub function would run in a subshell, and killing that
    # left the client publishing on into the next scenarios)
    seq 1 1000000 | mosquitto_pub -h 127.0.0.1 -p "$PORT" -i e2e-kill-pub -q 1 -t e2e/kill -l "${ALICE[@]}" &
    pubpid=$!
    # killed while the stream runs: once the subscriber has 100 messages
    for i in $(seq 1 300); do
        [ "$(wc -l <"$out")" -ge 100 ] && break
        sleep 0.1
    done
    kill -9 "$(broker_pid "$BROKER")"
    sleep 1
    kill "$pubpid" "$subpid" 2>/dev/null
    wait "$pubpid" "$subpid" 2>/dev/null
    got=$(wc -l <"$out")
    # (not 1..n: VerneMQ drops what a slow subscriber's queue cannot hold,
    # max_online_messages; those drops are on_message_drop rows)
    set=$(paste -sd, "$out")
    check_re "the subscriber got messages before the kill (100 or more)" '^([1-9][0-9]{2,})$' "$got"
    check "... none twice" "" "$(sort "$out" | uniq -d | head -n 3)"
    check_re "the killed broker left the journal's files" '[1-9]' \
        "$(ls "$BROKER"/data/vmq_pgevents/ 2>/dev/null | grep -c '^journal-')"
    broker_start "$BROKER" || { bad "broker starts again after kill -9"; return 1; }
    check "every message the subscriber got: its on_publish row, once" "$got|$got" \
        "$(settle "SELECT count(*), count(DISTINCT payload) FROM vmq_events WHERE client_id = 'e2e-kill-pub'
                   AND hook = 'on_publish' AND convert_from(payload, 'UTF8')::int = ANY('{$set}'::int[])" "$got|$got" 30)"
    check "every message the subscriber got: its on_deliver row, once" "$got|$got" \
        "$(settle "SELECT count(*), count(DISTINCT payload) FROM vmq_events WHERE client_id = 'e2e-kill-sub'
                   AND hook = 'on_deliver' AND convert_from(payload, 'UTF8')::int = ANY('{$set}'::int[])" "$got|$got" 30)"
    check "no event twice in the killed run" 0 \
        "$(q "SELECT count(*) - count(DISTINCT (incarnation, seq)) FROM vmq_events WHERE client_id LIKE 'e2e-kill-%'")"
    local killed
    killed=$(q "SELECT DISTINCT incarnation FROM vmq_events WHERE client_id = 'e2e-kill-sub'")
    check "the subscriber connected during the kill: no end row, ended_how 'node crashed'" "|node crashed" \
        "$(q "SELECT ended_at, ended_how FROM vmq_events_connections WHERE client_id = 'e2e-kill-sub'")"
    check "the next start's pgevents_crashed names the killed incarnation" 1 \
        "$(settle "SELECT count(*) FROM vmq_events WHERE hook = 'pgevents_crashed'
                   AND extra->>'incarnation' = '$killed' AND incarnation > $killed" 1)"
    check "the killed incarnation: crashed, nothing missing" "crashed|0" \
        "$(q "SELECT ended, missing FROM vmq_events_completeness() WHERE incarnation = $killed")"
    echo "   (the subscriber had $got messages when the broker was killed)"
}

# 6. (VerneMQ 2.2+) a listener that forwards connection options
scenario_connection_opts() {
    echo " - connection options forwarded to auth_on_register (listener fwd)"
    local p=$((PORT + 3))
    mosquitto_pub -h 127.0.0.1 -p $p -i e2e-opts -q 0 -t e2e/o -m x "${ALICE[@]}" >/dev/null 2>&1
    mosquitto_pub -V mqttv5 -h 127.0.0.1 -p $p -i e2e-opts5 -q 0 -t e2e/o -m x "${ALICE[@]}" >/dev/null 2>&1
    check "auth_on_register/6 and auth_on_register_m5/7 with the listener's metadata in extra.opts" \
        "auth_on_register|127.0.0.1|$p|mqtt|f auth_on_register_m5|127.0.0.1|$p|mqtt|f" \
        "$(settle "SELECT hook, extra->'opts'->>'listener_addr', extra->'opts'->>'listener_port', extra->'opts'->>'listener_type', extra ? 'malformed'
                   FROM vmq_events WHERE client_id IN ('e2e-opts', 'e2e-opts5') ORDER BY seq" \
                  "auth_on_register|127.0.0.1|$p|mqtt|f
auth_on_register_m5|127.0.0.1|$p|mqtt|f" | paste -sd ' ')"
}

# 6b. VerneMQ 2.2's per-listener plugin chains, with listeners started at
#     run time (2.2.0 refuses them in vernemq.conf at boot): a chain that
#     leaves the plugin out is warned about (log, status) and its logins go
#     unrecorded; one that names it first records everything
scenario_listener_chains() {
    echo " - per-listener plugin chains (vmq-admin listener start --auth_plugins/--authz_plugins)"
    local out=$((PORT + 5)) in=$((PORT + 6)) i w
    check "listener start with auth_plugins=[vmq_passwd], authz_plugins=[vmq_acl]" Done \
        "$(broker_admin "$BROKER" listener start address=127.0.0.1 port=$out \
               '--auth_plugins=[vmq_passwd]' '--authz_plugins=[vmq_acl]' --allowed_protocol_versions=3,4,5 | tr -d ' \n')"
    check "listener start with vmq_pgevents first in both chains" Done \
        "$(broker_admin "$BROKER" listener start address=127.0.0.1 port=$in \
               '--auth_plugins=[vmq_pgevents,vmq_passwd]' '--authz_plugins=[vmq_pgevents,vmq_acl]' --allowed_protocol_versions=3,4,5 | tr -d ' \n')"
    w="logins on 127.0.0.1:$out are not recorded: vmq_pgevents is not in its auth_plugins"
    check "status warns about the chain that leaves the plugin out (logins, authorizations), only that one" \
        "$w|publish and subscribe authorizations on 127.0.0.1:$out are not recorded: vmq_pgevents is not in its authz_plugins" \
        "$(status_value warning | paste -sd '|')"
    for i in $(seq 1 50); do
        grep -qF "$w" "$BROKER/log/console.log" && break
        sleep 0.2
    done
    check "the log warns once about that listener's logins" 1 "$(grep -cF "$w" "$BROKER/log/console.log")"
    for p in $out $in; do
        mosquitto_sub -V mqttv5 -h 127.0.0.1 -p $p -i e2e-chain-sub-$p -q 1 -t e2e/chain/$p "${ALICE[@]}" -C 1 -W 10 >/dev/null &
        local s=$!
        sleep 0.5
        mosquitto_pub -V mqttv5 -h 127.0.0.1 -p $p -i e2e-chain-pub-$p -q 1 -t e2e/chain/$p -m x "${ALICE[@]}"
        wait $s
    done
    check_conns "chain with vmq_pgevents first: login, authorization and publish recorded" e2e-chain-pub-$in \
        "auth_on_register_m5 on_client_wakeup on_register_m5 auth_on_publish_m5 on_publish_m5 on_topic_unsubscribed on_client_gone"
    check "chain with vmq_pgevents first: the subscriber's login and subscribe recorded" "auth_on_register_m5 auth_on_subscribe_m5" \
        "$(q "SELECT string_agg(hook, ' ' ORDER BY seq) FROM vmq_events WHERE client_id = 'e2e-chain-sub-$in'
              AND hook IN ('auth_on_register_m5', 'auth_on_subscribe_m5')")"
    # without its login the wake-up has no connection id (it is the login
    # that opens one): the wake-up stands apart
    check_conns "chain without it: no login or authorization rows, a wake-up without conn_id (as the warning says)" \
        e2e-chain-pub-$out "on_client_wakeup | on_register_m5 on_publish_m5 on_topic_unsubscribed on_client_gone"
    check "chain without it: the wake-up's conn_id is empty" "on_client_wakeup|t" \
        "$(q "SELECT hook, conn_id IS NULL FROM vmq_events WHERE client_id = 'e2e-chain-pub-$out' ORDER BY seq LIMIT 1")"
    broker_admin "$BROKER" listener stop address=127.0.0.1 port=$out >/dev/null
    broker_admin "$BROKER" listener delete address=127.0.0.1 port=$out >/dev/null
    broker_admin "$BROKER" listener stop address=127.0.0.1 port=$in >/dev/null
    broker_admin "$BROKER" listener delete address=127.0.0.1 port=$in >/dev/null
}

# 7. two brokers clustered on loopback: publisher on A, subscriber on B
scenario_cluster() {
    local src=${1:-$src} tag=${2:-$tag}
    echo " - two nodes in a cluster (B's plugin directory is named vmq_pgevents)"
    local B=$E2E/$tag/b/vernemq NODE_B=VerneMQ-b@127.0.0.1 out
    broker_unpack "$src" "$E2E/$tag/b" || { bad "unpack node B"; return 1; }
    broker_configure "$B" "$NODE_B" $((PORT + 100)) "$PLUGIN2" "$DSN"
    # a spool directory that cannot be made: B records all the same
    broker_conf "$B" "vmq_pgevents.spool_dir = /dev/null/spool"
    STARTED+=("$B")
    broker_start "$BROKER" || { bad "node A starts again"; return 1; }
    broker_start "$B" || { bad "node B starts"; return 1; }
    out=$(broker_admin "$B" cluster join discovery-node="$NODE")
    check "vmq-admin cluster join" Done "$out"
    local i
    for i in $(seq 1 100); do
        [ "$(broker_admin "$B" cluster show | grep -c 'true')" -ge 2 ] && break
        sleep 0.2
    done
    local subs0
    subs0=$(router_subs "$BROKER")
    mosquitto_sub -h 127.0.0.1 -p $((PORT + 100)) -i e2e-cl-sub -q 1 -t e2e/cl "${ALICE[@]}" -C 1 -W 30 >"$WORK/cl.out" &
    local s=$!
    # the subscription must be in node A's routing table before the publish
    routed "$BROKER" "$subs0" || bad "node A routes the subscription made on node B"
    # and node A's connection to B up: VerneMQ drops what it routes to a
    # node it has no connection to yet ("can't publish to remote node ...
    # due to 'not_found'"), and 2.2 may close a new one while B still
    # joins; so published until the subscriber has it, at most 20 s
    for i in $(seq 1 150); do
        grep -q "successfully connected to cluster node '$NODE_B'" "$BROKER/log/console.log" && break
        sleep 0.2
    done
    for i in $(seq 1 40); do
        kill -0 "$s" 2>/dev/null || break
        pub -i e2e-cl-pub -q 1 -t e2e/cl -m across "${ALICE[@]}"
        sleep 0.5
    done
    wait "$s"
    check "the subscriber on B got the message published on A" across "$(cat "$WORK/cl.out")"
    BROKER=$B flush
    check "publish row from node A, delivery row from node B, one table" \
        "on_publish|e2e-cl-pub|$NODE on_deliver|e2e-cl-sub|$NODE_B" \
        "$(settle "SELECT DISTINCT hook, client_id, node FROM vmq_events WHERE client_id LIKE 'e2e-cl-%' AND hook IN ('on_publish', 'on_deliver') ORDER BY hook DESC" \
                  "on_publish|e2e-cl-pub|$NODE
on_deliver|e2e-cl-sub|$NODE_B" | paste -sd ' ')"
    check "node B without a usable spool_dir: records, says so in its log and its status" \
        "connected|1|unusable: cannot make spool directory /dev/null/spool: Not a directory" \
        "$(BROKER=$B status_value connection)|$(grep -c 'no journal: cannot make spool directory /dev/null/spool' "$B/log/console.log")|$(BROKER=$B status_value spool_dir)"
    check "node B's seq is its own, 1..n without gaps" 0 \
        "$(BROKER=$B settle "SELECT count(*) FROM (SELECT count(*) n, min(seq) lo, max(seq) hi FROM vmq_events WHERE node = '$NODE_B' GROUP BY incarnation) s
              WHERE lo <> 1 OR n <> hi - lo + 1" 0)"
    broker_stop "$B"
}

# 8. a value the plugin cannot use, set in advanced.config (which no schema
#    checks): the broker boots and serves MQTT, the plugin says why it
#    records nothing
scenario_bad_config() {
    echo " - a bad value in vernemq.conf, then in advanced.config"
    # vernemq.conf: refused by VerneMQ itself, naming the key (the schema)
    cp "$BROKER/etc/vernemq.conf" "$WORK/vernemq.conf.good"
    broker_conf "$BROKER" "vmq_pgevents.batch_size = notanumber"
    check_re "vernemq.conf: vernemq config generate names the key" \
        'Error transforming datatype for: vmq_pgevents.batch_size' \
        "$(ERL_EPMD_ADDRESS=127.0.0.1 "$BROKER/bin/vernemq" config generate 2>&1)"
    # values of the right type that the plugin cannot use: refused too
    local bad want
    while IFS='|' read -r bad want; do
        cp "$WORK/vernemq.conf.good" "$BROKER/etc/vernemq.conf"
        printf '%b\n' "$bad" >>"$BROKER/etc/vernemq.conf"
        check_re "vernemq.conf: $bad is refused, naming the key" "$want" \
            "$(ERL_EPMD_ADDRESS=127.0.0.1 "$BROKER/bin/vernemq" config generate 2>&1 </dev/null)"
    done <<'EOF2'
vmq_pgevents.batch_size = 0|vmq_pgevents.batch_size invalid, must be an integer from 1 to 1000000
vmq_pgevents.stop_timeout_ms = 2147483648|vmq_pgevents.stop_timeout_ms invalid, must be an integer from 0 to 3600000 .an hour.
vmq_pgevents.table = events_of_the_broker_in_the_basement_of_building_7|vmq_pgevents.table invalid, must be a name of 1 to 49 bytes
vmq_pgevents.retention = 30 days|vmq_pgevents.retention invalid, must be off, <N>d or <N>h
vmq_pgevents.pg_timeout_ms = 50|vmq_pgevents.pg_timeout_ms invalid, must be an integer from 100 to 3600000 .an hour.
vmq_pgevents.partition = none\nvmq_pgevents.compress_after = 1d|vmq_pgevents.compress_after needs vmq_pgevents.partition = day or hour
EOF2
    cp "$WORK/vernemq.conf.good" "$BROKER/etc/vernemq.conf"
    printf '[{vmq_pgevents, [{batch_size, 0}]}].\n' >"$BROKER/etc/advanced.config"
    if broker_start "$BROKER"; then
        ok "broker boots with vmq_pgevents batch_size 0 in advanced.config"
        bg_sub -i e2e-bad-sub -q 1 -t e2e/bad "${ALICE[@]}" -C 1 -W 30 >"$WORK/bad.out"
        local s=$BG i
        # (nothing is recorded, so no row tells that the subscription is
        # in place, and VerneMQ routes to it a moment after its SUBACK:
        # published until the subscriber has it, at most 20 s)
        for i in $(seq 1 40); do
            kill -0 "$s" 2>/dev/null || break
            pub -i e2e-bad-pub -q 1 -t e2e/bad -m still-serving "${ALICE[@]}"
            sleep 0.5
        done
        wait "$s"
        check "MQTT is served" still-serving "$(cat "$WORK/bad.out")"
        check "status: not_recording" not_recording "$(status_value connection)"
        check_re "status: the last error names the key" 'batch_size' "$(status_value 'last error')"
        check "nothing recorded" 0 "$(q "SELECT count(*) FROM vmq_events WHERE client_id LIKE 'e2e-bad-%'")"
        check "logged once" 1 "$(grep -c 'vmq_pgevents: not recording: bad configuration: batch_size' "$BROKER/log/console.log")"
    else
        bad "broker boots with vmq_pgevents batch_size 0 in advanced.config"
    fi
    broker_stop "$BROKER"
    rm -f "$BROKER/etc/advanced.config"
}

# 9. PostgreSQL frozen (SIGSTOP of the server and its backends) for 15 s
#    while publishers keep going: nothing dropped, MQTT unaffected, every
#    event written once after SIGCONT
scenario_frozen_pg() {
    echo " - PostgreSQL frozen for 15 s during MQTT traffic"
    local dropped0 i t0 sent=0
    dropped0=$(status_value 'dropped (no room: journal, disk limit or queue)')
    bash test/pg.sh freeze "$PGDIR"
    t0=$SECONDS
    for i in $(seq 1 200); do
        seq 1 1000 | pub -i e2e-frozen-$((i % 4)) -q 0 -t e2e/frozen -l "${ALICE[@]}" || break
        sent=$((sent + 1000))
        [ $((SECONDS - t0)) -ge 15 ] && break
    done
    check_re "status while frozen: events wait (in the journal)" '^[1-9]' \
        "$(( $(status_value 'queued events') + $(status_value "earlier starts' files (bytes)") ))"
    bash test/pg.sh thaw "$PGDIR"
    check "every publish made while PostgreSQL was frozen is written once" "$sent|$sent" \
        "$(settle "SELECT count(*), count(DISTINCT (incarnation, seq)) FROM vmq_events
                   WHERE client_id LIKE 'e2e-frozen-%' AND hook = 'on_publish'" "$sent|$sent" 60)"
    check "nothing dropped" "$dropped0" "$(status_value 'dropped (no room: journal, disk limit or queue)')"
    echo "   ($sent messages published in $((SECONDS - t0)) s while frozen)"
}

# 11. compress_after in vernemq.conf: a day partition of three days ago
#     (rows put there by SQL, as an older run would have) is rewritten as
#     Citus columnar storage by the plugin's own thread while the broker
#     records MQTT traffic; the rows are all still there, the metric counts it
scenario_compress() {
    local old
    echo " - compress_after = 1d: a partition of three days ago compressed"
    q "SELECT vmq_pgevents_partitions('vmq_events', 'day', 0, 0, now(), now() - interval '3 days')" >/dev/null
    old=$(q "SELECT name FROM vmq_pgevents_partition_list('vmq_events') WHERE kind = 'heap' ORDER BY lo LIMIT 1")
    q "INSERT INTO vmq_events (node, incarnation, seq, ts, hook, client_id)
       SELECT 'VerneMQ@old', 1, g, date_trunc('day', now() - interval '3 days') + g * interval '1 s',
              'on_client_offline', 'e2e-old-' || g FROM generate_series(1, 3000) g" >/dev/null
    cp "$BROKER/etc/vernemq.conf" "$WORK/vernemq.conf.good"
    broker_conf "$BROKER" "vmq_pgevents.compress_after = 1d" "vmq_pgevents.compress_every_ms = 500"
    if broker_start "$BROKER"; then
        local i
        for i in $(seq 1 10); do pub -i e2e-cmp-pub -q 1 -t e2e/cmp -m "m$i" "${ALICE[@]}"; done
        for i in $(seq 1 60); do
            grep -q "compressed partition $old" "$BROKER/log/console.log" && break
            sleep 0.5
        done
        check_re "logged: compressed partition $old" "compressed partition $old: 3000 rows" \
            "$(grep -o "compressed partition $old: [0-9]* rows" "$BROKER/log/console.log" | head -n 1)"
        check "the partition is compressed" compressed \
            "$(q "SELECT kind FROM vmq_pgevents_partition_list('vmq_events') WHERE name = '$old'")"
        check "its rows all there, in the columnar part" "3000|3000" \
            "$(q "SELECT (SELECT count(*) FROM vmq_events WHERE node = 'VerneMQ@old'), (SELECT count(*) FROM ${old}_c)")"
        check "MQTT recorded meanwhile" 10 "$(settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-cmp-pub' AND hook = 'on_publish'" 10)"
        check_re "metric pgevents_partitions_compressed" '^[1-9]' \
            "$(curl -s "http://127.0.0.1:$HTTP/metrics" | awk 'index($0, "vernemq_pgevents_partitions_compressed") == 1 {print $NF}')"
    else
        bad "broker boots with compress_after = 1d"
    fi
    broker_stop "$BROKER"
    cp "$WORK/vernemq.conf.good" "$BROKER/etc/vernemq.conf"
    q "DROP TABLE $old" >/dev/null   # not this run's rows: out of the checks that follow
}
