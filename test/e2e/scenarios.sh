# test/e2e/scenarios.sh - sourced by test/e2e/run.sh: what real MQTT
# clients (mosquitto_pub / mosquitto_sub) do against the broker, and the
# rows that must come of it. Expected hook sequences follow the hook
# contract observed on VerneMQ (../shared/vernemq-hooks.md): per client,
# per connection, in the order the broker calls them.
#
# Needs BROKER, PORT (its MQTT listener), NODE and the helpers of
# broker.sh and check.sh.

# a client that hangs is ended (it would reconnect to the next broker on
# the same port and publish into its scenario)
pub() { timeout 300 mosquitto_pub -h 127.0.0.1 -p "$PORT" "$@"; }
sub() { timeout 300 mosquitto_sub -h 127.0.0.1 -p "$PORT" "$@"; }
# a subscriber in the background; its PID in BG (killed by that PID)
bg_sub() { mosquitto_sub -h 127.0.0.1 -p "$PORT" "$@" & BG=$!; }
ALICE=(-u alice -P alice-pw)

# 1. PostgreSQL is down when the broker boots; clients connect, log in
#    (and fail to), subscribe persistently and get an offline message;
#    PostgreSQL comes up later and every event is written.
scenario_boot_pg_down() {
    echo " - PostgreSQL down at boot, started later"
    bash test/pg.sh stop "$PGDIR"
    broker_start "$BROKER" || { bad "broker boots with the plugin (PostgreSQL down)"; return 1; }
    ok "broker boots with the plugin from a directory named $(basename "$PLUGIN") (PostgreSQL down)"
    check_re "status: not connected while PostgreSQL is down" '^(disconnected|starting)$' "$(status_value connection)"

    pub -i e2e-refused -u alice -P wrong -t e2e/x -m x >/dev/null 2>&1
    sub -V mqttv311 -i e2e-sub -c -q 1 -t e2e/offline "${ALICE[@]}" -E
    sleep 0.5
    pub -V mqttv311 -i e2e-pub1 -q 1 -t e2e/offline -m offline-msg "${ALICE[@]}"
    sleep 0.5
    local got
    got=$(sub -V mqttv311 -i e2e-sub -c -q 1 -t e2e/offline "${ALICE[@]}" -C 1 -W 10)
    check "the persistent subscriber gets the offline message" "offline-msg" "$got"

    bash test/pg.sh start "$PGDIR"
    local i
    for i in $(seq 1 100); do
        [ "$(status_value connection)" == connected ] && break
        sleep 0.2
    done
    check "status: connected once PostgreSQL is up" connected "$(status_value connection)"

    check_conns "refused login: auth_on_register only" e2e-refused "auth_on_register"
    check "refused login: username, peer, clean session" "alice|127.0.0.1|t" \
        "$(q "SELECT username, host(peer_addr), clean_session FROM vmq_events WHERE client_id = 'e2e-refused'")"
    check "persistent session: 14 events on two connections" "14|2" \
        "$(settle "SELECT count(*), count(DISTINCT conn_id) FROM vmq_events WHERE client_id = 'e2e-sub'" "14|2")"
    check "persistent session: the first connection, then the offline message queued for it" \
        "auth_on_register on_client_wakeup on_register auth_on_subscribe on_subscribe on_client_offline on_offline_message" \
        "$(conn_n e2e-sub 1)"
    # the queued message and the re-subscription race on the second connection
    check "persistent session: the second connection gets the delivery" \
        "auth_on_register auth_on_subscribe on_client_offline on_client_wakeup on_deliver on_register on_subscribe" \
        "$(ORDER=hook conn_n e2e-sub 2)"
    check "persistent session: clean_session false on both logins" "f f" \
        "$(q "SELECT clean_session FROM vmq_events WHERE client_id = 'e2e-sub' AND hook = 'auth_on_register' ORDER BY seq" | paste -sd ' ')"
    check "persistent session: subscribe row" '[{"qos": 1, "topic": "e2e/offline"}]' \
        "$(q "SELECT topics FROM vmq_events WHERE client_id = 'e2e-sub' AND hook = 'on_subscribe' ORDER BY seq LIMIT 1")"
    check "offline message and its delivery: topic, qos, payload" "on_offline_message|e2e/offline|1|offline-msg|on_deliver|e2e/offline|1|offline-msg" \
        "$(q "SELECT string_agg(hook || '|' || topic || '|' || qos || '|' || convert_from(payload, 'UTF8'), '|' ORDER BY seq)
              FROM vmq_events WHERE client_id = 'e2e-sub' AND hook IN ('on_offline_message', 'on_deliver')")"
    check_conns "publisher: one clean connection" e2e-pub1 \
        "auth_on_register on_client_wakeup on_register auth_on_publish on_publish on_topic_unsubscribed on_client_gone"

    # the views of priv/schema.sql, as docs/queries.md shows them
    check "failed logins view: the refused login (client, user, peer, clean session)" "e2e-refused|alice|127.0.0.1|t" \
        "$(q "SELECT client_id, username, host(peer_addr), clean_session FROM vmq_events_failed_logins('-infinity')")"
    check "connections view: the persistent subscriber's two connections" \
        "registered|offline|3|f|1|0|alice registered|offline|3|f|1|1|alice" \
        "$(q "SELECT login, ended_how, mqtt_version, clean_session, subscribes, deliveries, username
              FROM vmq_events_connections WHERE client_id = 'e2e-sub' ORDER BY connected_at" | paste -sd ' ')"
    check "journey: the offline message, delivered at the next connection" "offline-msg|e2e-sub|1|t" \
        "$(q "SELECT convert_from(e.payload, 'UTF8'), j.to_client_id, j.candidates, j.to_conn_id = c.conn_id
              FROM vmq_events_journey('e2e-pub1', '-infinity') j
              JOIN vmq_events e ON e.node = j.node AND e.incarnation = j.incarnation AND e.seq = j.seq
              JOIN (SELECT conn_id FROM vmq_events_connections WHERE client_id = 'e2e-sub'
                    ORDER BY connected_at OFFSET 1) c ON true")"
}

# 2. PostgreSQL up: QoS 0/1/2, retained, an ACL denial, a will, a
#    takeover, unsubscribe, MQTT 5 with session expiry.
scenario_traffic() {
    echo " - QoS 0/1/2, retained, ACL denial, will, takeover, unsubscribe, MQTT 5 expiry"
    local out=$WORK/q-sub.out got i
    bg_sub -i e2e-q-sub -q 2 -t 'e2e/q/#' "${ALICE[@]}" -C 4 -F '%t %q %p' -W 20 >"$out"
    local subpid=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-q-sub' AND hook = 'on_subscribe'" 1 >/dev/null
    pub -i e2e-q0 -q 0 -t e2e/q/0 -m m0 "${ALICE[@]}"
    pub -i e2e-q1 -q 1 -t e2e/q/1 -m m1 "${ALICE[@]}"
    pub -i e2e-q2 -q 2 -t e2e/q/2 -m m2 "${ALICE[@]}"
    pub -i e2e-qr -q 1 -r -t e2e/q/r -m '{"r":1}' "${ALICE[@]}"
    wait "$subpid"
    # (in any order: a QoS 2 delivery can overtake or be overtaken)
    check "subscriber got the four messages (topic, QoS on the wire, payload)" "e2e/q/0 0 m0|e2e/q/1 1 m1|e2e/q/2 2 m2|e2e/q/r 1 {\"r\":1}" "$(sort "$out" | paste -sd '|')"
    check_conns "subscriber: one connection, four deliveries" e2e-q-sub \
        "auth_on_register on_client_wakeup on_register auth_on_subscribe on_subscribe on_deliver on_deliver on_deliver on_deliver on_topic_unsubscribed on_client_gone"
    check "publish rows: client, topic, qos, retain, payload, json" \
        "e2e-q0|e2e/q/0|0|f|m0||alice|$NODE e2e-q1|e2e/q/1|1|f|m1||alice|$NODE e2e-q2|e2e/q/2|2|f|m2||alice|$NODE e2e-qr|e2e/q/r|1|t|{\"r\":1}|{\"r\": 1}|alice|$NODE" \
        "$(q "SELECT client_id, topic, qos, retain, convert_from(payload, 'UTF8'), payload_json, username, node FROM vmq_events
              WHERE hook = 'on_publish' AND client_id LIKE 'e2e-q_' ORDER BY seq" | paste -sd ' ')"
    # VerneMQ hands on_deliver the subscription's QoS (2 here), not the
    # QoS on the wire (the lower of publish and subscription): see docs/queries.md
    check "journey: each QoS publish delivered once to the subscriber" "e2e-q0|e2e-q-sub|1 e2e-q1|e2e-q-sub|1 e2e-q2|e2e-q-sub|1" \
        "$(q "SELECT c, j.to_client_id, j.candidates FROM unnest(ARRAY['e2e-q0', 'e2e-q1', 'e2e-q2']) c,
              vmq_events_journey(c, '-infinity') j ORDER BY c" | paste -sd ' ')"
    check "delivery rows: topic, qos (the subscription's), payload, the subscriber's connection" "e2e/q/0|2|m0|1 e2e/q/1|2|m1|1 e2e/q/2|2|m2|1 e2e/q/r|2|{\"r\":1}|1" \
        "$(q "SELECT d.topic, d.qos, convert_from(d.payload, 'UTF8'),
                     (SELECT count(*) FROM vmq_events r WHERE r.hook = 'on_register' AND r.conn_id = d.conn_id AND r.client_id = 'e2e-q-sub')
              FROM vmq_events d WHERE d.hook = 'on_deliver' AND d.client_id = 'e2e-q-sub' ORDER BY d.seq" | paste -sd ' ')"

    got=$(sub -i e2e-r-sub -q 1 -t e2e/q/r "${ALICE[@]}" -C 1 -W 10)
    check "a new subscriber gets the retained message" '{"r":1}' "$got"
    check "its delivery row: retain true" "e2e/q/r|t|{\"r\": 1}" \
        "$(settle "SELECT topic, retain, payload_json FROM vmq_events WHERE client_id = 'e2e-r-sub' AND hook = 'on_deliver'" "e2e/q/r|t|{\"r\": 1}")"
    pub -i e2e-qr-clear -q 1 -r -n -t e2e/q/r "${ALICE[@]}"
    check "clearing the retained message: empty payload, retain true" "t|0|" \
        "$(settle "SELECT retain, payload_size, encode(payload, 'hex') FROM vmq_events WHERE client_id = 'e2e-qr-clear' AND hook = 'on_publish'" "t|0|")"

    # ACL: bob may use e2e/# only
    sub -i e2e-bob-sub -u bob -P bob-pw -q 1 -t secret/x -E >/dev/null 2>&1
    pub -i e2e-bob-pub -u bob -P bob-pw -q 0 -t secret/x -m no >/dev/null 2>&1
    check "ACL denial: the subscribe attempt is recorded, no subscription" "1|0|[{\"qos\": 1, \"topic\": \"secret/x\"}]" \
        "$(settle "SELECT count(*) FILTER (WHERE hook = 'auth_on_subscribe'), count(*) FILTER (WHERE hook = 'on_subscribe'),
                          max(topics::text) FILTER (WHERE hook = 'auth_on_subscribe')
                   FROM vmq_events WHERE client_id = 'e2e-bob-sub'" "1|0|[{\"qos\": 1, \"topic\": \"secret/x\"}]")"
    check "ACL denial: the publish attempt is recorded, no publish" "1|0|secret/x|bob" \
        "$(settle "SELECT count(*) FILTER (WHERE hook = 'auth_on_publish'), count(*) FILTER (WHERE hook = 'on_publish'),
                          max(topic) FILTER (WHERE hook = 'auth_on_publish'), max(username)
                   FROM vmq_events WHERE client_id = 'e2e-bob-pub'" "1|0|secret/x|bob")"

    # a will: the client dies (kill -9), the broker publishes its will
    bg_sub -i e2e-will-watch -q 1 -t e2e/will "${ALICE[@]}" -C 1 -W 20 >"$WORK/will.out"
    local watch=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-will-watch' AND hook = 'on_subscribe'" 1 >/dev/null
    bg_sub -i e2e-will -q 1 -t e2e/nothing --will-topic e2e/will --will-payload gone --will-qos 1 "${ALICE[@]}"
    local victim=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-will' AND hook = 'on_subscribe'" 1 >/dev/null
    kill -9 "$victim"
    wait "$watch"
    check "the will is delivered" "gone" "$(cat "$WORK/will.out")"
    check_conns "will: checked at CONNECT, published when the client dies" e2e-will \
        "auth_on_register on_client_wakeup on_register auth_on_publish auth_on_subscribe on_subscribe on_publish on_topic_unsubscribed on_client_gone"
    check "will: publish row" "e2e/will|1|gone" \
        "$(q "SELECT topic, qos, convert_from(payload, 'UTF8') FROM vmq_events WHERE client_id = 'e2e-will' AND hook = 'on_publish'")"

    # takeover: a second connection with the same client id
    bg_sub -i e2e-take -q 1 -t e2e/take "${ALICE[@]}" >/dev/null 2>&1
    local first=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-take' AND hook = 'on_subscribe'" 1 >/dev/null
    sub -i e2e-take -q 1 -t e2e/take "${ALICE[@]}" -E
    kill -9 "$first" 2>/dev/null
    wait "$first" 2>/dev/null
    check "takeover: two connections, each its own registration" "2|2|2" \
        "$(settle "SELECT count(DISTINCT conn_id), count(*) FILTER (WHERE hook = 'auth_on_register'), count(*) FILTER (WHERE hook = 'on_register')
                   FROM vmq_events WHERE client_id = 'e2e-take'" "2|2|2")"
    check "takeover: the first connection ends when the second logs in" \
        "auth_on_register on_client_wakeup on_register auth_on_subscribe on_subscribe on_client_gone" "$(conn_n e2e-take 1)"
    check "takeover: the second connection, its wake-up included" \
        "auth_on_register on_client_wakeup on_register auth_on_subscribe on_subscribe on_topic_unsubscribed on_client_gone" \
        "$(conn_n e2e-take 2)"
    check "connections view: the first connection taken over, the second gone" "taken over gone" \
        "$(q "SELECT ended_how FROM vmq_events_connections WHERE client_id = 'e2e-take' ORDER BY connected_at" | paste -sd ' ')"
    check "timeline: the client's events in order across both connections" \
        "$(q "SELECT string_agg(hook, ' ' ORDER BY seq) FROM vmq_events WHERE client_id = 'e2e-take'")" \
        "$(q "SELECT string_agg(hook, ' ') FROM vmq_events_timeline('e2e-take')")"
    check "one connection's events: the first connection" "$(conn_n e2e-take 1)" \
        "$(q "SELECT string_agg(e.hook, ' ') FROM (SELECT node, incarnation, conn_id FROM vmq_events_connections
              WHERE client_id = 'e2e-take' ORDER BY connected_at LIMIT 1) c, vmq_events_connection(c.node, c.incarnation, c.conn_id) e")"

    # unsubscribe
    sub -i e2e-unsub -q 1 -t e2e/u -U e2e/u "${ALICE[@]}" -W 1 >/dev/null 2>&1
    check "unsubscribe: the filter list" '["e2e/u"]|["e2e/u"]' \
        "$(settle "SELECT string_agg(topics::text, '|' ORDER BY seq) FROM vmq_events WHERE client_id = 'e2e-unsub' AND hook IN ('on_unsubscribe', 'on_topic_unsubscribed') AND topics IS NOT NULL" '["e2e/u"]|["e2e/u"]')"
    check_conns "unsubscribe: hooks" e2e-unsub \
        "auth_on_register on_client_wakeup on_register auth_on_subscribe on_subscribe on_unsubscribe on_topic_unsubscribed on_topic_unsubscribed on_client_gone"

    # MQTT 5: a session that expires 2 s after the client leaves
    bg_sub -V mqttv5 -i e2e-v5 -c -x 2 -q 1 -t e2e/v5 "${ALICE[@]}" -C 1 -W 20 >"$WORK/v5.out"
    local v5=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-v5' AND hook = 'on_subscribe_m5'" 1 >/dev/null
    pub -V mqttv5 -i e2e-v5-pub -q 1 -t e2e/v5 -m v5msg -D publish user-property k1 v1 "${ALICE[@]}"
    wait "$v5"
    check "MQTT 5 subscriber got the message" "v5msg" "$(cat "$WORK/v5.out")"
    check_conns "MQTT 5: one delivery row (not /5 and /7), then offline and session expiry" e2e-v5 \
        "auth_on_register_m5 on_client_wakeup on_register_m5 auth_on_subscribe_m5 on_subscribe_m5 on_deliver_m5 on_client_offline on_topic_unsubscribed on_session_expired"
    check "MQTT 5 delivery row: qos, topic, user property" 'e2e/v5|1|[{"key": "k1", "val": "v1"}]' \
        "$(q "SELECT topic, qos, properties->'p_user_property' FROM vmq_events WHERE client_id = 'e2e-v5' AND hook = 'on_deliver_m5'")"
    check "connections view: MQTT 5, the session expired" "5|session expired|1" \
        "$(q "SELECT mqtt_version, ended_how, deliveries FROM vmq_events_connections WHERE client_id = 'e2e-v5'")"
    check "journey: the MQTT 5 publish, delivered once, with its latency" "e2e-v5|1|t" \
        "$(q "SELECT to_client_id, candidates, latency_ms >= 0 FROM vmq_events_journey('e2e-v5-pub', '-infinity')")"
    check "MQTT 5 login: clean start false, session expiry property" "f|2" \
        "$(q "SELECT clean_session, properties->>'p_session_expiry_interval' FROM vmq_events WHERE client_id = 'e2e-v5' AND hook = 'auth_on_register_m5'")"

    # MQTT 5: one PUBLISH with 20,000 empty user properties (~100 KB on
    # the wire; ~400 KB as JSON): recorded with the properties summarized
    # at the JSON limit, the broker and the delivery unharmed
    local props=() k
    for k in $(seq 1 20000); do props+=(-D publish user-property '' ''); done
    bg_sub -V mqttv5 -i e2e-props-sub -q 1 -t e2e/props "${ALICE[@]}" -C 1 -W 20 >"$WORK/props.out"
    local psub=$BG
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-props-sub' AND hook = 'on_subscribe_m5'" 1 >/dev/null
    pub -V mqttv5 -i e2e-props -q 1 -t e2e/props -m many-props "${props[@]}" "${ALICE[@]}"
    wait "$psub"
    check "many user properties: the subscriber got the message" "many-props" "$(cat "$WORK/props.out")"
    check "many user properties: publish and delivery rows, properties summarized at 256 KiB" \
        "auth_on_publish_m5|true|true on_publish_m5|true|true on_deliver_m5|true|true" \
        "$(settle "SELECT string_agg(hook || '|' || (properties->>'\$too_large') || '|' ||
                                     ((properties->>'bytes')::int BETWEEN 262144 AND 262144 + 64), ' ' ORDER BY seq)
                   FROM vmq_events WHERE hook IN ('auth_on_publish_m5', 'on_publish_m5', 'on_deliver_m5')
                   AND (client_id = 'e2e-props' OR (client_id = 'e2e-props-sub' AND topic = 'e2e/props'))" \
                  "auth_on_publish_m5|true|true on_publish_m5|true|true on_deliver_m5|true|true")"
}

# 12. payload_topics and peer_addr in vernemq.conf, written as
#     docs/personal-data.md writes them: a none topic's payload empty, a
#     hash topic's its SHA-256, the others' bytes; addresses cut to their
#     /24 without a port. The none and hash payloads' bytes are nowhere:
#     not in the journal's files (spool_dir, its memory files in
#     /dev/shm), not in PostgreSQL's data directory; the other topic's
#     are found there (the search finds what is written). Then both
#     changed with vmq-admin set. Ends with the broker stopped and
#     vernemq.conf as it was.
scenario_privacy() {
    echo " - payload_topics and peer_addr (vernemq.conf as docs/personal-data.md writes them)"
    local tag cred health other later sha spool ram out s i
    tag=$(echo "$VERSION" | tr -c '0-9a-z\n' _)-$$-$RANDOM
    cred=CRED-SECRET-$tag health=HEALTH-SECRET-$tag other=OTHER-MARKER-$tag later=LATER-MARKER-$tag
    broker_stop "$BROKER"
    cp "$BROKER/etc/vernemq.conf" "$WORK/vernemq.conf.good"
    # without the quotes the value ends at the first '#' (a comment): refused
    broker_conf "$BROKER" "vmq_pgevents.payload_topics = +/credentials/#:none, health/#:hash, #:truncated"
    check_re "payload_topics with an unquoted #: refused by vernemq config generate, naming the item" \
        "vmq_pgevents.payload_topics: '\+/credentials/' is not FILTER:MODE" \
        "$(ERL_EPMD_ADDRESS=127.0.0.1 "$BROKER/bin/vernemq" config generate 2>&1 </dev/null)"
    cp "$WORK/vernemq.conf.good" "$BROKER/etc/vernemq.conf"
    broker_conf "$BROKER" "$(grep -o "^vmq_pgevents.payload_topics = '.*'$" docs/personal-data.md)" \
                          "$(grep -o '^vmq_pgevents.peer_addr = network$' docs/personal-data.md)"
    if broker_start "$BROKER"; then
        check "status: payload_topics" "+/credentials/#:none, health/#:hash, #:truncated" "$(status_value payload_topics)"
        check "status: peer_addr" network "$(status_value peer_addr)"
        bg_sub -i e2e-priv-sub -q 1 -t 'dev/#' -t 'health/#' -t 'other/#' "${ALICE[@]}" -C 3 -W 20 >"$WORK/priv.out"
        s=$BG
        settle "SELECT count(*) FROM vmq_events WHERE client_id = 'e2e-priv-sub' AND hook = 'on_subscribe'" 1 >/dev/null
        pub -i e2e-priv-cred -q 1 -t dev/credentials/x -m "$cred" "${ALICE[@]}"
        pub -i e2e-priv-health -q 1 -t health/x -m "$health" "${ALICE[@]}"
        pub -i e2e-priv-other -q 1 -t other/x -m "$other" "${ALICE[@]}"
        wait "$s"
        check "the subscriber got the three payloads whole" "$cred|$health|$other" "$(sort "$WORK/priv.out" | paste -sd '|')"
        sha=$(printf '%s' "$health" | sha256sum | cut -d' ' -f1)
        # hook | payload (hex) | payload_size | payload_truncated | extra's payload mark | payload_json
        local row="hook || '|' || encode(payload, 'hex') || '|' || payload_size || '|' || payload_truncated
                   || '|' || coalesce(extra->>'payload', '-') || '|' || coalesce(payload_json::text, '-')"
        local hooks="hook IN ('auth_on_publish', 'on_publish', 'on_deliver')"
        local want
        want="auth_on_publish||${#cred}|true|-|- on_deliver||${#cred}|true|-|- on_publish||${#cred}|true|-|-"
        check "none topic (dev/credentials/x): payload empty, its size, no JSON" "$want" \
            "$(settle "SELECT string_agg($row, ' ' ORDER BY hook) FROM vmq_events WHERE topic = 'dev/credentials/x' AND $hooks" "$want")"
        want="auth_on_publish|$sha|${#health}|true|sha256|- on_deliver|$sha|${#health}|true|sha256|- on_publish|$sha|${#health}|true|sha256|-"
        check "hash topic (health/x): payload = sha256sum of the message, its size, marked sha256" "$want" \
            "$(settle "SELECT string_agg($row, ' ' ORDER BY hook) FROM vmq_events WHERE topic = 'health/x' AND $hooks" "$want")"
        local hex
        hex=$(printf '%s' "$other" | od -An -tx1 | tr -d ' \n')
        want="auth_on_publish|$hex|${#other}|false|-|- on_deliver|$hex|${#other}|false|-|- on_publish|$hex|${#other}|false|-|-"
        check "other topic (other/x, #:truncated): the payload's bytes" "$want" \
            "$(settle "SELECT string_agg($row, ' ' ORDER BY hook) FROM vmq_events WHERE topic = 'other/x' AND $hooks" "$want")"
        check "peer_addr = network: the logins' addresses end in .0, no port (4 clients, 2 rows each)" "8|127.0.0.0|0" \
            "$(q "SELECT count(*), string_agg(DISTINCT host(peer_addr), ','), count(peer_port) FROM vmq_events
                  WHERE client_id LIKE 'e2e-priv-%' AND hook IN ('auth_on_register', 'on_register')")"
        # the journal's files: in spool_dir once synced, and its memory files
        spool=$BROKER/data/vmq_pgevents
        ram=$(grep -o 'hooks write into memory files in [^ ]*' "$BROKER/log/console.log" | tail -n 1 | cut -d' ' -f7)
        for i in $(seq 1 50); do
            grep -rqaF "$other" "$spool" && break
            sleep 0.2
        done
        ram=${ram:-/dev/shm/no-memory-files-logged}
        check "journal: the other topic's payload is in the files in spool_dir" 1 \
            "$(grep -rlaF "$other" "$spool" | head -n 1 | wc -l)"
        check_re "journal: its memory files in /dev/shm (named by the log) hold it too" '^/dev/shm/vmq_pgevents-[0-9a-f]{16}: 1$' \
            "$ram: $(grep -rlaF "$other" "$ram" 2>/dev/null | head -n 1 | wc -l)"
        check "journal: the none and hash payloads are in none of its files" "0|0" \
            "$(grep -rlaF "$cred" "$spool" "$ram" 2>/dev/null | wc -l)|$(grep -rlaF "$health" "$spool" "$ram" 2>/dev/null | wc -l)"
        bash test/pg.sh psql "$PGDIR" -X -q -c CHECKPOINT >/dev/null
        check "PostgreSQL's data directory (after CHECKPOINT): the other payload there, the none and hash ones not" "1|0|0" \
            "$(grep -rlaF "$other" "$PGDIR/data" | head -n 1 | wc -l)|$(grep -rlaF "$cred" "$PGDIR/data" | wc -l)|$(grep -rlaF "$health" "$PGDIR/data" | wc -l)"
        # at run time, as docs/personal-data.md shows it
        out=$(broker_admin "$BROKER" set 'vmq_pgevents.payload_topics=+/credentials/#:none,#:truncated')
        check "vmq-admin set payload_topics: applied" "+/credentials/#:none,#:truncated" "$(status_value payload_topics)"
        out="$out $(broker_admin "$BROKER" set vmq_pgevents.peer_addr=none)"
        check "vmq-admin set peer_addr: applied" none "$(status_value peer_addr)"
        check_re "vmq-admin set: a bad value is refused (by the schema's check, or by the plugin: not applied), naming the item" \
            "not applied: payload_topics: 'a/#/b' is not a valid MQTT topic filter|vmq_pgevents.payload_topics: 'a/#/b:none' is not a valid MQTT topic filter" \
            "$(broker_admin "$BROKER" set 'vmq_pgevents.payload_topics=a/#/b:none')"
        check "... and the rules in use stay" "+/credentials/#:none,#:truncated" "$(status_value payload_topics)"
        pub -i e2e-priv-later -q 1 -t health/x -m "$later" "${ALICE[@]}"
        hex=$(printf '%s' "$later" | od -An -tx1 | tr -d ' \n')
        want="$hex|-|0|0"
        check "after the change: health/x kept whole, the login without address or port" "$want" \
            "$(settle "SELECT max(encode(payload, 'hex')) FILTER (WHERE hook = 'on_publish') || '|' ||
                              coalesce(max(extra->>'payload'), '-') || '|' || count(peer_addr) || '|' || count(peer_port)
                       FROM vmq_events WHERE client_id = 'e2e-priv-later'" "$want")"
        echo "   (vmq-admin set said: $(echo $out))"
    else
        bad "broker boots with payload_topics and peer_addr in vernemq.conf"
    fi
    broker_stop "$BROKER"
    cp "$WORK/vernemq.conf.good" "$BROKER/etc/vernemq.conf"
}
