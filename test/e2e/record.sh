# test/e2e/record.sh - sourced by test/e2e/run.sh: what the record says of
# itself in a real broker: drops told by pgevents_dropped rows and
# <table>_completeness, an administrator's disconnect, and
# `vmq-admin pgevents client` and `check` (also with PostgreSQL frozen).
# Same conventions as scenarios.sh. Starts and stops the broker itself.

# 12. a journal limited to 4 MiB with PostgreSQL down, and 20,000 QoS 1
#     publishes of 200 bytes: the events that do not fit are dropped; once
#     PostgreSQL is back, completeness names exactly those numbers, as
#     dropped for no room
scenario_record_drops() {
    echo " - drops told by the record itself (spool_max_bytes = 4 MiB, PostgreSQL down)"
    local inc dropped
    cp "$BROKER/etc/vernemq.conf" "$WORK/vernemq.conf.record"
    broker_conf "$BROKER" "vmq_pgevents.spool_max_bytes = 4194304"
    bash test/pg.sh stop "$PGDIR"
    if ! broker_start "$BROKER"; then
        bad "broker starts with spool_max_bytes = 4194304"
        bash test/pg.sh start "$PGDIR"
        cp "$WORK/vernemq.conf.record" "$BROKER/etc/vernemq.conf"
        return 1
    fi
    yes "$(head -c 200 /dev/zero | tr '\0' d)" | head -n 20000 | pub -i e2e-drop-pub -q 1 -t e2e/drop -l "${ALICE[@]}"
    dropped=$(status_value 'dropped (no room: journal, disk limit or queue)')
    check_re "status: events dropped for no room" '^[1-9][0-9]*$' "$dropped"
    bash test/pg.sh start "$PGDIR"
    inc=$(broker_rpc "$BROKER" "$NODE" vmq_pgevents_nif status '' | tr -d ' \n' | grep -o 'incarnation=>[0-9]*' | cut -d'>' -f2)
    # written, and the last drop row with them (drops are told at most
    # every second)
    settle "SELECT count(*) > 0 FROM vmq_events WHERE client_id = 'e2e-drop-pub' AND hook = 'on_publish'" t 60 >/dev/null
    sleep 2
    pub -i e2e-drop-after -q 1 -t e2e/drop -m after "${ALICE[@]}"
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-drop-after' AND hook = 'on_publish'" 1 30 >/dev/null
    dropped=$(status_value 'dropped (no room: journal, disk limit or queue)')
    check "completeness: missing = the drops status counted = the drop rows' count" "$dropped|$dropped" \
        "$(q "SELECT c.missing || '|' || (SELECT sum((extra->>'dropped')::bigint) FROM vmq_events
              WHERE hook = 'pgevents_dropped' AND incarnation = $inc)
              FROM vmq_events_completeness() c WHERE c.incarnation = $inc")"
    check "every missing range: dropped, for no room" "dropped: no_room" \
        "$(q "SELECT string_agg(DISTINCT r->>'why', ',') FROM vmq_events_completeness() c,
              jsonb_array_elements(c.missing_ranges) r WHERE c.incarnation = $inc")"
    check "the ranges are exactly the gaps in seq" "" \
        "$(q "SELECT (r->>'from') || '-' || (r->>'to') FROM vmq_events_completeness() c,
                     jsonb_array_elements(c.missing_ranges) r WHERE c.incarnation = $inc
              EXCEPT
              SELECT (seq + 1) || '-' || (next - 1) FROM (SELECT seq, lead(seq) OVER (ORDER BY seq) AS next
                     FROM vmq_events WHERE incarnation = $inc) s WHERE next > seq + 1" | head -n 3)"
    echo "   ($dropped events dropped; completeness: $(q "SELECT missing || ' missing in ' || jsonb_array_length(missing_ranges)
          || ' ranges' FROM vmq_events_completeness() WHERE incarnation = $inc"))"
    broker_stop "$BROKER"
    cp "$WORK/vernemq.conf.record" "$BROKER/etc/vernemq.conf"
    rm -rf "$BROKER/data/vmq_pgevents"   # the dropped run's journal: nothing else in it
}

# 13. vmq-admin pgevents client and check, from a running broker, on a
#     connection of their own; with PostgreSQL frozen they answer "no
#     answer" and the hooks go on. An administrator's disconnect
#     (vmq-admin session disconnect, what VerneMQ's HTTP API runs).
scenario_cli_record() {
    echo " - vmq-admin pgevents client / check; vmq-admin session disconnect; pgevents_running every second"
    local out t0 held
    cp "$BROKER/etc/vernemq.conf" "$WORK/vernemq.conf.cli"
    broker_conf "$BROKER" "vmq_pgevents.running_row_every_ms = 1000"
    broker_start "$BROKER" || { bad "broker starts"; cp "$WORK/vernemq.conf.cli" "$BROKER/etc/vernemq.conf"; return 1; }
    pub -i e2e-cli -q 1 -t e2e/cli/a -m hello "${ALICE[@]}"
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-cli' AND hook = 'on_client_gone'" 1 >/dev/null
    out=$(broker_admin "$BROKER" pgevents client client-id=e2e-cli)
    check "client: the client's events in order" \
        "auth_on_register on_client_wakeup on_register auth_on_publish on_publish on_topic_unsubscribed on_client_gone" \
        "$(echo "$out" | awk -F'|' 'NF > 3 {h=$3; gsub(/ /, "", h); if (h !~ /hook/) print h}' | paste -sd ' ')"
    check "client: the publish's topic, qos and size" "e2e/cli/a|1|5" \
        "$(echo "$out" | awk -F'|' '{h=$3; gsub(/ /, "", h); if (h == "on_publish") {t=$4; q=$5; s=$6; gsub(/ /, "", t); gsub(/ /, "", q); gsub(/ /, "", s); print t "|" q "|" s}}')"
    check "client limit=2: the last two" "on_topic_unsubscribed on_client_gone" \
        "$(broker_admin "$BROKER" pgevents client client-id=e2e-cli limit=2 |
           awk -F'|' 'NF > 3 {h=$3; gsub(/ /, "", h); if (h !~ /hook/) print h}' | paste -sd ' ')"
    check "client of another mountpoint: none" "no events of that client" \
        "$(broker_admin "$BROKER" pgevents client client-id=e2e-cli mountpoint=other | tr -d '\n')"
    out=$(broker_admin "$BROKER" pgevents check)
    echo "$out" | sed 's/^/     /'
    check_re "check: the database answers" 'database +\| +answers' "$out"
    check_re "check: the schema's views" 'vmq_pgevents views 6' "$out"
    check_re "check: partitions made ahead" 'partitions made ahead +\| +[1-9]' "$out"
    check_re "check: this start's completeness" 'running; [0-9]+ rows, 0 dead-lettered, 0 missing' "$out"
    # an administrator's disconnect: the client's end is recorded as any
    # other (mosquitto_sub's clean session: gone)
    bg_sub -i e2e-admin-dc -q 1 -t e2e/dc "${ALICE[@]}" >/dev/null
    held=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-admin-dc' AND hook = 'on_subscribe'" 1 >/dev/null
    broker_admin "$BROKER" session disconnect client-id=e2e-admin-dc >/dev/null
    check "vmq-admin session disconnect: the connection ends, gone" "gone" \
        "$(settle "SELECT ended_how FROM vmq_events_connections WHERE client_id = 'e2e-admin-dc' ORDER BY connected_at LIMIT 1" gone)"
    kill "$held" 2>/dev/null
    wait "$held" 2>/dev/null
    # PostgreSQL frozen: both give up with a message (3 s), MQTT goes on
    bash test/pg.sh freeze "$PGDIR"
    t0=$SECONDS
    check_re "client with PostgreSQL frozen: no answer, said" 'no answer from the server' \
        "$(timeout 60 "$BROKER/bin/vmq-admin" pgevents client client-id=e2e-cli 2>&1)"
    check_re "check with PostgreSQL frozen: no answer, said" 'database +\| +no answer' \
        "$(timeout 60 "$BROKER/bin/vmq-admin" pgevents check 2>&1)"
    pub -i e2e-cli-frozen -q 1 -t e2e/cli/b -m during "${ALICE[@]}"
    check "a publish while frozen and asked" 0 "$?"
    bash test/pg.sh thaw "$PGDIR"
    check "... written after the thaw" 1 \
        "$(settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-cli-frozen' AND hook = 'on_publish'" 1 30)"
    echo "   (both questions with PostgreSQL frozen took $((SECONDS - t0)) s together)"
    # running_row_every_ms = 1000: rows of this start, a second apart at
    # most (the frozen seconds too: queued meanwhile)
    check "pgevents_running rows every second, every_ms 1000" "t|1000" \
        "$(settle "SELECT count(*) >= 3 AND max(gap) < interval '2 s', min(extra->>'every_ms') FROM
                     (SELECT extra, ts - lag(ts) OVER (ORDER BY seq) AS gap FROM vmq_events
                      WHERE hook = 'pgevents_running' AND incarnation = (SELECT max(incarnation) FROM vmq_events
                                                                        WHERE hook = 'pgevents_start')) r" "t|1000" 20)"
    broker_stop "$BROKER"
    cp "$WORK/vernemq.conf.cli" "$BROKER/etc/vernemq.conf"
}
