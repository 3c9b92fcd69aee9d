# test/e2e/docs.sh - sourced by test/e2e/run.sh: the README's quick start
# and docs/uninstalling.md, executed as written. The commands, SQL and
# vernemq.conf lines are taken from the pages themselves (their fenced
# blocks, found by their first line), with only the machine's names put in: db.example is
# the test's PostgreSQL, /opt/vernemq a fresh release unpacked for this,
# the tarball the one `make dist` built. A page that drifts from the code
# fails here.
#
# Needs src and tag (the release being tested), PGDIR, PGUSER, TARBALL,
# E2E, WORK and the helpers of broker.sh and check.sh.

# doc_block FILE FIRST: the fenced block (``` lines) of FILE whose first
# line is FIRST, as written; nothing when the page has none
doc_block() {
    awk -v first="$2" '/^ *```/ { open = !open; if (open) { n = 0; take = 0; ind = index($0, "`") - 1 }
                                   else if (take) exit; next }
                       open { $0 = substr($0, ind + 1); n++; if (n == 1) take = ($0 == first) }
                       open && take' "$1"
}

# the machine's names for the page's: PostgreSQL, the release (the
# tarball's name stays the page's: it must be the one make dist built)
doc_local() {
    sed -e "s#db\.example#$PGDIR#g" -e "s#/opt/vernemq#$QS#g" ${QS_FROM:+-e "s#$QS_FROM#$QS_TO#g"}
}

# The previous version (0.2.0, its last commit) built from this clone's
# history into its release tarball: OLD is its path; its README is
# $E2E/previous-$PREVIOUS_COMMIT/README.md
PREVIOUS_COMMIT=faa9c0d
old_tarball() {
    local dir=$E2E/previous-$PREVIOUS_COMMIT
    OLD=$(ls "$dir"/_build/dist/vmq_pgevents-*.tar.gz 2>/dev/null | head -n 1)
    [ -n "$OLD" ] && return 0
    if ! git -C "$ROOT" cat-file -e "$PREVIOUS_COMMIT^{commit}" 2>/dev/null; then
        echo "   the previous version (commit $PREVIOUS_COMMIT) is not in this clone's history"
        return 1
    fi
    rm -rf "$dir" && mkdir -p "$dir" &&
        git -C "$ROOT" archive "$PREVIOUS_COMMIT" | tar x -C "$dir" &&
        make -C "$dir" --no-print-directory all dist >"$dir.log" 2>&1 ||
        { echo "   building the previous version failed: $(tail -n 3 "$dir.log")"; return 1; }
    OLD=$(ls "$dir"/_build/dist/vmq_pgevents-*.tar.gz | head -n 1)
}

# doc_step DESCRIPTION FILE FIRST RUNNER...: the block of FILE that begins
# with FIRST, with the machine's names, run by RUNNER from stdin
doc_step() {
    local what=$1 file=$2 first=$3 block out
    shift 3
    block=$(doc_block "$file" "$first" | doc_local)
    if [ -z "$block" ]; then
        bad "$what: $file has a block beginning with: $first"
        return 1
    fi
    if out=$(printf '%s\n' "$block" | "$@" 2>&1); then
        ok "$what ($file, as written)"
    else
        bad "$what ($file, as written)" "$out"
        return 1
    fi
}

# psql as the superuser of the test's server (the page: "as a PostgreSQL superuser")
qs_super() { bash test/pg.sh psql "$PGDIR" -X -q -v ON_ERROR_STOP=1 -f - >/dev/null; }
# psql as ROLE into the page's database
qs_as() { psql -X -q -v ON_ERROR_STOP=1 -h "$PGDIR" -U "$1" -d mqtt -f - >/dev/null; }
qs_q() { psql -X -At -v ON_ERROR_STOP=1 -h "$PGDIR" -U "$1" -d mqtt -c "$2" 2>&1; }
# a shell block, in a directory holding the tarball (as the user has it);
# given to bash as its script, not on its standard input, which a command
# of the block (vernemq stop) would read the rest of the block from
qs_sh() {
    local script
    script=$(cat)
    (cd "$QSDL" && ERL_EPMD_ADDRESS=127.0.0.1 WAIT_FOR_ERLANG=60 bash -e -c "$script" </dev/null) >/dev/null
}
# vernemq.conf lines, appended as a user adds them
qs_conf() { cat >>"$QS/etc/vernemq.conf"; }

# 12. The README's quick start on a fresh release, with a least-privilege
#     writer role and auto_create off: on VerneMQ 2.2 the previous
#     version's (0.2.0: its tarball and its README), which
#     docs/upgrading.md then upgrades to this one; on 2.1 this version's
#     directly. Then docs/personal-data.md on two tenants' dev-1 (listeners
#     with mountpoints): a reader of one tenant, the client erased. Then
#     docs/uninstalling.md, after which nothing of the plugin is left.
#     (Not checked: passwords and the ~/.pgpass line; the test's
#     PostgreSQL trusts its unix socket.)
scenario_quick_start() {
    local rc
    QS=$E2E/$tag/qs/vernemq
    QSDL=$E2E/$tag/qs/download
    quick_start_run
    rc=$?
    broker_stop "$QS" >/dev/null 2>&1   # also after a failed step: the next release uses its ports
    printf '%s\n' "DROP DATABASE IF EXISTS mqtt;" "DROP ROLE IF EXISTS vmq_writer, vmq_reader, vmq_owner, analyst_a;" |
        qs_super 2>/dev/null
    return $rc
}

quick_start_run() {
    local R=README.md UP=docs/upgrading.md U=docs/uninstalling.md P=docs/personal-data.md out vsn OLD= upgrade= ram
    case "$VERSION" in 2.1.*) ;; *) upgrade=1 ;; esac
    if [ -n "$upgrade" ]; then
        echo " - the previous version by the README's quick start, upgraded by docs/upgrading.md, then docs/uninstalling.md"
        old_tarball || { bad "the previous version's tarball"; return 1; }
    else
        echo " - the README's quick start, as written, then docs/uninstalling.md"
    fi
    vsn=$(basename "$TARBALL" | sed 's/^vmq_pgevents-\([0-9.]*\)-.*/\1/')
    broker_unpack "$src" "$E2E/$tag/qs" || { bad "unpack $src for the quick start"; return 1; }
    # the broker itself, as ../shared/vernemq/README.md runs one (not the plugin's part)
    broker_conf "$QS" "listener.tcp.default = 127.0.0.1:18960" "listener.http.default = 127.0.0.1:18961" \
        "listener.vmq.clustering = 127.0.0.1:18962" "erlang.distribution.port_range.minimum = 18970" \
        "erlang.distribution.port_range.maximum = 18979" "nodename = QuickStart@127.0.0.1" \
        "listener.tcp.tenant_a = 127.0.0.1:18963" "listener.tcp.tenant_a.mountpoint = tenant-a" \
        "listener.tcp.tenant_b = 127.0.0.1:18964" "listener.tcp.tenant_b.mountpoint = tenant-b"
    printf 'alice-pw\nalice-pw\n' | "$QS/bin/vmq-passwd" -c "$QS/etc/vmq.passwd" alice >/dev/null 2>&1
    printf 'user alice\ntopic #\n' >"$QS/etc/vmq.acl"
    mkdir -p "$QSDL" && cp "$TARBALL" ${OLD:+"$OLD"} "$QSDL/"
    # left by an earlier run that stopped half-way
    printf '%s\n' "DROP DATABASE IF EXISTS mqtt;" "DROP ROLE IF EXISTS vmq_writer, vmq_reader, vmq_owner, analyst_a;" |
        qs_super 2>/dev/null

    # the previous version: as its own README said
    if [ -n "$upgrade" ]; then
        R=$E2E/previous-$PREVIOUS_COMMIT/README.md
        git -C "$ROOT" show "$PREVIOUS_COMMIT:README.md" >"$R" || { bad "the previous version's README"; return 1; }
    fi
    doc_step "quick start 2: roles and database" $R "CREATE ROLE vmq_owner LOGIN PASSWORD 'owner-secret';" qs_super || return 1
    doc_step "quick start 2: the schema as the owner, from the tarball${upgrade:+ of the previous version}" $R \
        "tar xzf $(basename "${OLD:-$TARBALL}")" qs_sh || return 1
    if [ -n "$upgrade" ]; then
        doc_step "quick start 2: the grants as the owner (0.2.0: by hand)" $R \
            "GRANT INSERT ON vmq_events, vmq_events_dead TO vmq_writer;" qs_as vmq_owner || return 1
        doc_step "quick start 2: the partitions ahead, as the owner (0.2.0: cron)" $R \
            "psql -h db.example -U vmq_owner -d mqtt -c \"SELECT * FROM vmq_pgevents_partitions('vmq_events', 'day', 2, 30 * 86400);\"" qs_sh || return 1
    else
        doc_step "quick start 2: the grants as the owner" $R \
            "SELECT vmq_pgevents_grant('vmq_events', 'vmq_writer', 'writer', retention => interval '30 days');" qs_as vmq_owner || return 1
        # (not the page's: days for the writer role to keep) partitions
        # from 40 days ago, a row in the oldest and one 10 days ago, none
        # ahead of today; columnar storage in the database for
        # compress_after (months-of-data.md: a superuser makes it)
        qs_q vmq_owner "SELECT vmq_pgevents_partitions('vmq_events', 'day', 0, 0, now(), now() - interval '40 days');
                        INSERT INTO vmq_events (node, incarnation, seq, ts, hook) VALUES
                          ('old', 1, 1, now() - interval '40 days', 'on_publish'), ('old', 1, 2, now() - interval '10 days', 'on_publish');
                        DROP TABLE vmq_events_p$(date -u -d '+1 day' +%Y%m%d), vmq_events_p$(date -u -d '+2 days' +%Y%m%d);" >/dev/null
        printf '%s\n' '\c mqtt' 'CREATE EXTENSION citus_columnar;' | qs_super
    fi
    doc_step "quick start 3: the plugin into the broker" $R "mkdir -p /opt/vernemq/plugins" qs_sh || return 1
    doc_step "quick start 4: vernemq.conf" $R "plugins.vmq_pgevents = on" qs_conf || return 1
    # (not the page's) compression by the writer role, looked for every second
    [ -n "$upgrade" ] || printf '%s\n' "vmq_pgevents.compress_after = 7d" "vmq_pgevents.compress_every_ms = 1000" | qs_conf
    broker_start "$QS" || { bad "quick start 5: the broker starts"; return 1; }
    STARTED+=("$QS")
    local BROKER=$QS PORT=18960
    for _ in $(seq 1 100); do [ "$(status_value connection)" = connected ] && break; sleep 0.1; done
    check "verify: status connected as the writer role, last error -" "connected|-|user='vmq_writer'" \
        "$(status_value connection)|$(status_value 'last error')|$(status_value dsn | grep -o "user='vmq_writer'")"
    if [ -z "$upgrade" ]; then
        check "the writer role's upkeep (retention = 30d, compress_after = 7d): the next two days made, the days past 30 dropped, the day of 10 days ago compressed" \
            "2|0|1|compressed" "$(for _ in $(seq 1 100); do
                n=$(qs_q vmq_owner "SELECT (SELECT count(*) FROM vmq_pgevents_partition_list('vmq_events') WHERE lo > now()) || '|' ||
                                           (SELECT count(*) FROM vmq_pgevents_partition_list('vmq_events') WHERE hi <= now() - interval '30 days') || '|' ||
                                           (SELECT count(*) FROM vmq_events WHERE node = 'old') || '|' ||
                                           (SELECT kind FROM vmq_pgevents_partition_list('vmq_events') WHERE lo <= now() - interval '10 days' AND hi > now() - interval '10 days')")
                [ "$n" = "2|0|1|compressed" ] && break; sleep 0.2; done; echo "$n")"
    fi
    mosquitto_pub -h 127.0.0.1 -p 18960 -i client-id -u alice -P alice-pw -q 1 -t qs/t -m hello
    # the client's 7 rows (and, fresh, the test's row of 10 days ago and
    # the plugin's pgevents_start; 0.2.0 of the upgrade writes none)
    local rows=$((upgrade ? 7 : 9))
    check "verify: the reader's first query (README)" $rows \
        "$(for _ in $(seq 1 50); do flush; n=$(qs_q vmq_reader "$(doc_block $R 'SELECT count(*) FROM vmq_events;')"); [ "$n" = $rows ] && break; sleep 0.2; done; echo "$n")"
    local timeline hooks='auth_on_register on_client_wakeup on_register auth_on_publish on_publish on_topic_unsubscribed on_client_gone '
    timeline="SELECT string_agg(hook, ' ' ORDER BY rn) || ' |' || string_agg(p, ' ' ORDER BY rn) FILTER (WHERE p <> '')
              FROM (SELECT row_number() OVER () rn, * FROM ($(doc_block $R "SELECT ts, conn_id, hook, topic, qos, coalesce(payload_json::text, encode(payload, 'escape'))" | tr -d ';'))
                    t(ts, conn_id, hook, topic, qos, p)) o"
    # (the payload is in auth_on_publish's row and on_publish's)
    check "one client's timeline, as the reader (README)" "$hooks|hello hello" "$(qs_q vmq_reader "$timeline")"

    if [ -n "$upgrade" ]; then
        # docs/upgrading.md, to this version
        QS_FROM=
        doc_step "upgrade 2: the new schema.sql as the owner, the old plugin running" $UP \
            "tar xzf $(basename "$TARBALL")" qs_sh || return 1
        doc_step "upgrade 3: the plugin replaced, VerneMQ restarted" $UP "/opt/vernemq/bin/vernemq stop" qs_sh || return 1
        broker_plugins_up "$QS" || bad "upgrade 3: the plugins come up"
        for _ in $(seq 1 100); do [ "$(status_value connection)" = connected ] && break; sleep 0.1; done
        check "upgrade 4: connected, last error -, the new schema's dead-letter key there" "connected|-|t" \
            "$(status_value connection)|$(status_value 'last error')|$(qs_q vmq_owner "SELECT indisunique FROM pg_index WHERE indexrelid = 'vmq_events_dead_key'::regclass")"
        mosquitto_pub -h 127.0.0.1 -p 18960 -i client-id -u alice -P alice-pw -q 1 -t qs/t -m again
        check "after the upgrade: the client's rows of both versions, once" "14|2" \
            "$(for _ in $(seq 1 50); do flush; n=$(qs_q vmq_reader "SELECT count(*), count(DISTINCT incarnation) FROM vmq_events WHERE client_id = 'client-id'"); [ "$n" = "14|2" ] && break; sleep 0.2; done; echo "$n")"
        check "after the upgrade: the new version's start row, the old version's none" "1|$VSN" \
            "$(qs_q vmq_reader "SELECT count(*), string_agg(extra->>'version', ',') FROM vmq_events WHERE hook = 'pgevents_start'")"
        check "one client's timeline, as the reader (README): both connections, in order" \
            "$hooks$hooks|hello hello again again" "$(qs_q vmq_reader "$timeline")"
    fi
    personal_data || return 1
    check "the writer role reads no row's data" "permission denied" \
        "$(qs_q vmq_writer "SELECT payload FROM vmq_events LIMIT 1" | grep -o 'permission denied')"

    # docs/uninstalling.md, in its order
    ram=$(grep -o 'hooks write into memory files in [^ ]*' "$QS/log/console.log" | tail -n 1 | cut -d' ' -f7)
    sed -i -e '/^vmq_pgevents\./d' -e '/^plugins\.vmq_pgevents/d' "$QS/etc/vernemq.conf"
    broker_stop "$QS"
    broker_start "$QS" "vmq_passwd vmq_acl" || { bad "uninstall 3: the broker starts without the plugin"; return 1; }
    out=$(broker_admin "$QS" plugin show)
    check "uninstall 3: the plugin is not listed (vmq_passwd is)" "0|1" \
        "$(grep -c vmq_pgevents <<<"$out")|$(grep -c '| vmq_passwd ' <<<"$out")"
    stop_checked "$QS" "uninstall 3: the broker stops"
    doc_step "uninstall 4: the files" $U "rm /opt/vernemq/share/schema/vmq_pgevents.schema" qs_sh
    doc_step "uninstall 5: the database objects, as the owner" $U "BEGIN;" qs_as vmq_owner
    check "uninstall 5: nothing of schema.sql left in the database" "0|0" \
        "$(qs_q "$PGUSER" "SELECT (SELECT count(*) FROM pg_class WHERE relname LIKE 'vmq%'), (SELECT count(*) FROM pg_proc WHERE proname LIKE 'vmq%')")"
    out=$(grep -o 'DROP DATABASE mqtt; DROP ROLE vmq_writer, vmq_reader, vmq_owner;\|DROP ROLE analyst_a;' $U | tr '\n' ' ')
    check "uninstall 5: the roles and the database (its text)" "DROP DATABASE mqtt; DROP ROLE vmq_writer, vmq_reader, vmq_owner; DROP ROLE analyst_a; " "$out"
    printf '%s\n' "DROP DATABASE mqtt;" "DROP ROLE vmq_writer, vmq_reader, vmq_owner;" "DROP ROLE analyst_a;" | qs_super
    check "nothing of the plugin left: files, its memory files ($ram), roles, database" "0|0|0|0|0|0" \
        "$(ls "$QS/share/schema" | grep -c vmq_pgevents)|$(ls "$QS/plugins" 2>/dev/null | wc -l)|$(ls -d "$QS/data/vmq_pgevents" 2>/dev/null | wc -l)|$(if [ -z "$ram" ]; then echo none; elif [ -e "$ram" ]; then echo 1; else echo 0; fi)|$(bash test/pg.sh psql "$PGDIR" -X -At -c "SELECT count(*) FROM pg_roles WHERE rolname LIKE 'vmq%' OR rolname = 'analyst_a'")|$(bash test/pg.sh psql "$PGDIR" -X -At -c "SELECT count(*) FROM pg_database WHERE datname = 'mqtt'")"
}

# docs/personal-data.md on the quick start's broker and database: dev-1 of
# tenant-a and of tenant-b (the listeners with those mountpoints), a reader
# of tenant-a (the writer given BYPASSRLS, as the page says), tenant-a's
# dev-1 erased
personal_data() {
    local port a b tl
    for port in 18963 18964; do
        mosquitto_pub -h 127.0.0.1 -p $port -i dev-1 -u alice -P alice-pw -q 1 -t t -m "to $port"
    done
    doc_step "personal data: a reader's role, BYPASSRLS for the writer, as a superuser" $P \
        "CREATE ROLE analyst_a LOGIN PASSWORD 'analyst-secret';" qs_super || return 1
    doc_step "personal data: a reader of tenant-a, as the owner" $P \
        "SELECT vmq_pgevents_grant('vmq_events', 'analyst_a', 'reader', ARRAY['tenant-a']);" qs_as vmq_owner || return 1
    # the writer goes on writing into the table with row-level security on
    for port in 18963 18964; do
        mosquitto_pub -h 127.0.0.1 -p $port -i dev-1 -u alice -P alice-pw -q 1 -t t -m "again $port"
    done
    check "personal data: both tenants' dev-1 recorded after the reader's grant (row-level security on)" "tenant-a tenant-b" \
        "$(for _ in $(seq 1 50); do flush; n=$(qs_q vmq_owner "SELECT string_agg(DISTINCT mountpoint, ' ') FROM vmq_events WHERE client_id = 'dev-1' AND payload = convert_to('again ' || CASE mountpoint WHEN 'tenant-a' THEN '18963' ELSE '18964' END, 'UTF8')"); [ "$n" = "tenant-a tenant-b" ] && break; sleep 0.2; done; echo "$n")"
    a=$(qs_q vmq_owner "SELECT count(*) FROM vmq_events WHERE mountpoint = 'tenant-a' AND client_id = 'dev-1'")
    b=$(qs_q vmq_owner "SELECT count(*) FROM vmq_events WHERE mountpoint = 'tenant-b' AND client_id = 'dev-1'")
    tl=$(doc_block $P "SELECT ts, hook, topic FROM vmq_events_timeline('dev-1', mountpoint => 'tenant-a');")
    check "personal data: the reader's timeline of tenant-a's dev-1 (the page's query): its rows ($a, of $b for tenant-b)" \
        "$a" "$(qs_q analyst_a "SELECT count(*) FROM (${tl%;}) t")"
    check "personal data: the reader sees no other tenant's row: table, view, timeline, journey" "0|0|0|0" \
        "$(qs_q analyst_a "SELECT (SELECT count(*) FROM vmq_events WHERE mountpoint <> 'tenant-a'), (SELECT count(*) FROM vmq_events_connections WHERE mountpoint <> 'tenant-a'), (SELECT count(*) FROM vmq_events_timeline('dev-1', mountpoint => 'tenant-b')), (SELECT count(*) FROM vmq_events_journey('dev-1', '-infinity', mountpoint => 'tenant-b'))")"
    doc_step "personal data: tenant-a's dev-1 erased, as the owner" $P \
        "SELECT vmq_pgevents_forget('vmq_events', 'tenant-a', 'dev-1');" qs_as vmq_owner || return 1
    check "personal data: no row of tenant-a's dev-1 left, tenant-b's untouched, the erasure recorded (the page's query)" \
        "0|$b|tenant-a|dev-1|$a|vmq_owner" \
        "$(qs_q vmq_owner "SELECT (SELECT count(*) FROM vmq_events WHERE mountpoint = 'tenant-a' AND client_id = 'dev-1') || '|' || (SELECT count(*) FROM vmq_events WHERE mountpoint = 'tenant-b' AND client_id = 'dev-1') || '|' || (SELECT mountpoint || '|' || client_id || '|' || rows || '|' || asked_by FROM ($(doc_block $P "SELECT erased_at, asked_by, mountpoint, client_id, rows, rows_later, later_at FROM vmq_events_erased ORDER BY id;" | tr -d ';')) e)")"
}
