# test/e2e/check.sh - sourced by test/e2e/run.sh: assertions on the rows,
# read back with psql as a user would. Counts into E2E_PASS / E2E_FAIL.
#
# Needs PGDIR (the private server's socket directory), PGUSER and DB, and
# BROKER (the release directory whose `vmq-admin pgevents flush` is used
# to write what is queued before a check reads the table).

E2E_PASS=0
E2E_FAIL=0

ok() {
    E2E_PASS=$((E2E_PASS + 1))
    echo "   ok   $1"
}

bad() {
    local what=$1 line
    shift
    E2E_FAIL=$((E2E_FAIL + 1))
    echo "   FAIL $what"
    for line in "$@"; do echo "          $line"; done
}

# check DESCRIPTION EXPECTED ACTUAL
check() {
    if [ "$2" == "$3" ]; then ok "$1"; else bad "$1" "expected: $2" "actual:   $3"; fi
}

# check_re DESCRIPTION REGEX ACTUAL
check_re() {
    if [[ $3 =~ $2 ]]; then ok "$1"; else bad "$1" "expected to match: $2" "actual: $3"; fi
}

# one SQL query against the test database, rows as lines, fields with |
q() {
    psql -X -At -v ON_ERROR_STOP=1 -h "$PGDIR" -U "$PGUSER" -d "$DB" -c "$1" 2>&1
}

# a client's connections, in order, each as its hooks in seq order (or
# sorted by name with ORDER=hook, where the broker's order is a race);
# connections separated by " | "
conns() {
    q "SELECT string_agg(hook, ' ' ORDER BY ${ORDER:-seq}) FROM vmq_events
       WHERE client_id = '$1' GROUP BY node, conn_id ORDER BY min(incarnation), min(seq)" |
        sed ':a;N;$!ba;s/\n/ | /g'
}

# conn_n CLIENT_ID N: the client's Nth connection alone, as conns shows it
conn_n() {
    conns "$1" | awk -F' [|] ' -v n="$2" '{print $n}'
}

flush() {
    broker_admin "$BROKER" pgevents flush >/dev/null
}

# settle SQL EXPECTED [SECONDS]: flushes and re-reads until SQL gives
# EXPECTED (queue-process hooks such as on_client_offline run after the
# client has gone); prints the last answer
settle() {
    local sql=$1 want=$2 secs=${3:-10} got i
    for i in $(seq 1 $((secs * 5))); do
        flush
        got=$(q "$sql")
        [ "$got" == "$want" ] && break
        sleep 0.2
    done
    printf '%s' "$got"
}

# check_conns DESCRIPTION CLIENT_ID EXPECTED: the client's connections and
# their hooks are exactly EXPECTED (waits for late queue-process hooks)
check_conns() {
    local want=$3 got i
    for i in $(seq 1 50); do
        flush
        got=$(conns "$2")
        [ "$got" == "$want" ] && break
        sleep 0.2
    done
    check "$1" "$want" "$got"
    [ "$got" == "$want" ] || dump "$2"
}

# dump CLIENT_ID: the client's rows, for a failed check's report
dump() {
    q "SELECT seq, hook, conn_id, topic, qos FROM vmq_events WHERE client_id = '$1' ORDER BY seq" | sed 's/^/          | /'
}

# status_value NAME: a value from `vmq-admin pgevents status`
status_value() {
    broker_admin "$BROKER" pgevents status |
        awk -F'|' -v k="$1" '{n=$2; gsub(/^ +| +$/, "", n); if (n == k) {v=$3; gsub(/^ +| +$/, "", v); print v}}'
}
