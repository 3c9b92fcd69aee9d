#!/usr/bin/env bash
# test/image/run.sh - the plugin in the official VerneMQ Docker image's
# runtime, without Docker (run by `make test`, after the real-broker suite).
#
# For every VerneMQ release in ../shared/vernemq/:
#   - the image's root: Debian bookworm minbase + its Dockerfile's packages
#     (test/image/root.sh, cached under _build/image/), no libpq5, no
#     libjansson4; the release at /vernemq and the image's own files
#     (../shared/docker-vernemq: bin/vernemq.sh as /usr/sbin/start_vernemq,
#     files/vm.args), owned by uid 10000, as its Dockerfile does;
#   - the plugin added as docker/Dockerfile adds it: the release tarball
#     (`make dist`) and docker/install.sh, run as uid 10000;
#   - the "container": the image's start script as uid 10000 in a chroot in
#     a mount namespace of its own (/proc, /dev), configured only by the
#     variables of both Dockerfiles' ENV lines plus DOCKER_VERNEMQ_* ones a
#     user sets, PostgreSQL on the host over TCP with its password in a
#     PGPASSFILE, real mosquitto clients on 127.0.0.1;
#   - rows checked; PostgreSQL stopped, events published, the container
#     stopped (SIGTERM, as docker stop does) and started again with the same
#     /vernemq/data: what the journal held is written once; the plugin
#     without its priv/lib/: the broker runs, and the log and status name
#     the missing library.
# Ends with one line "N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
. test/e2e/check.sh
SHARED=${SHARED_DIR:-$ROOT/../shared}
IMG=$ROOT/_build/image

skip_or_fail() {
    if [ -n "${CI:-}" ]; then
        echo "image test: $1 (required under CI)"; echo "0 passed, 1 failed"; exit 1
    fi
    echo "image test skipped: $1"; echo "0 passed, 0 failed, 1 skipped"; exit 0
}
[ "$(id -u)" = 0 ] || skip_or_fail "needs root (chroot, a mount namespace)"
[ -f "$SHARED/docker-vernemq/bin/vernemq.sh" ] || skip_or_fail "no ../shared/docker-vernemq"
releases=("$SHARED"/vernemq/vernemq-*.tar.gz)
[ -f "${releases[0]}" ] || skip_or_fail "no VerneMQ release in ../shared/vernemq"
for tool in unshare nsenter chroot mosquitto_pub mosquitto_sub psql; do
    command -v $tool >/dev/null || skip_or_fail "$tool missing"
done
TARBALL=$(ls -t _build/dist/vmq_pgevents-*.tar.gz 2>/dev/null | head -n 1)
[ -n "$TARBALL" ] || { echo "image test: no release tarball (make dist)"; echo "0 passed, 1 failed"; exit 1; }

echo "== the official image's root (debootstrap, cached in _build/image/root)"
DOCKERFILE=$SHARED/docker-vernemq/Dockerfile bash test/image/root.sh "$IMG/root" ||
    { echo "image test: could not make the image root"; echo "0 passed, 1 failed"; exit 1; }
check "image root: no libpq5 and no libjansson4 (as in the official image)" "" \
    "$(ls "$IMG"/root/usr/lib/*/libpq.so.5 "$IMG"/root/usr/lib/*/libjansson.so.4 2>/dev/null)"

# PostgreSQL on the host, over TCP with a password (the role vmq)
PGDIR=$(mktemp -d /tmp/vmq_pgevents_image.XXXXXX)
PGUSER=$(if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi)
R=$IMG/ctr
CTR_PID=
cleanup() {
    ctr_stop
    bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1
    rm -rf "$PGDIR"
}
trap cleanup EXIT
bash test/pg.sh init "$PGDIR" fast tcp >/dev/null && bash test/pg.sh start "$PGDIR" ||
    { echo "could not start PostgreSQL"; echo "0 passed, 1 failed"; exit 1; }
export PGPORT=$(cat "$PGDIR/port")   # for psql in check.sh
PGPW="img-$RANDOM$RANDOM-secret"
bash test/pg.sh psql "$PGDIR" -q -c "CREATE ROLE vmq LOGIN PASSWORD '$PGPW'" >/dev/null
BROKER=image   # for check.sh (its flush and status go through broker_admin below)

# KEY=VALUE of a Dockerfile's ENV instructions (continuation lines joined,
# quotes taken off)
dockerfile_env() {
    sed -e ':a' -e '/\\$/N; s/\\\n//; ta' "$1" | grep -E '^ENV ' | sed 's/^ENV //' |
        grep -oE '[A-Za-z_][A-Za-z0-9_]*=("[^"]*"|[^ ]*)' | sed -E 's/^([^=]*)="(.*)"$/\1=\2/'
}

# the container's environment: both Dockerfiles' ENV, then the user's
ctr_env() {
    local line
    {
        dockerfile_env "$SHARED/docker-vernemq/Dockerfile"
        dockerfile_env docker/Dockerfile
    } | while IFS= read -r line; do
        case "$line" in
            PATH=*) echo "PATH=/vernemq/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin" ;;
            *) echo "$line" ;;
        esac
    done
    echo "HOME=/vernemq"
    printf '%s\n' "${USER_ENV[@]}"
}

# a command inside the image root as uid 10000, like `docker exec`
ctr_exec() {
    local ns=()
    [ -n "$CTR_PID" ] && kill -0 "$CTR_PID" 2>/dev/null && ns=(nsenter -t "$CTR_PID" -m --)
    "${ns[@]}" chroot --userspec=10000:10000 "$R" /usr/bin/env -i HOME=/vernemq \
        PATH=/vernemq/bin:/usr/sbin:/usr/bin:/sbin:/bin ERL_EPMD_ADDRESS=127.0.0.1 \
        /bin/bash -c 'cd /vernemq && exec "$@"' _ "$@"
}

# start the container: the image's CMD (start_vernemq) as uid 10000, in a
# mount namespace whose /proc and /dev vanish with it; its output in LOG
ctr_start() {
    local envfile=$R/.ctr.env
    ctr_env >"$envfile"
    CTR_LOG=$IMG/container-$1.log
    unshare --mount --propagation private -- /bin/bash -c '
        R=$1 envfile=$2
        mount -t proc proc "$R/proc" && mount --rbind /dev "$R/dev" || exit 1
        mapfile -t vars <"$envfile"
        exec chroot --userspec=10000:10000 "$R" /usr/bin/env -i "${vars[@]}" \
            /bin/bash -c "cd /vernemq && exec /usr/sbin/start_vernemq"' _ "$R" "$envfile" >"$CTR_LOG" 2>&1 &
    CTR_PID=$!
}

# wait for the plugins to be up (VerneMQ starts them after the node)
ctr_ready() {
    local i
    for i in $(seq 1 300); do
        kill -0 "$CTR_PID" 2>/dev/null || return 1
        if [ "$(ctr_exec vmq-admin plugin show 2>/dev/null | grep -cE '^\| (vmq_pgevents|vmq_passwd|vmq_acl) ')" = 3 ]; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# the processes whose root is the container's
ctr_pids() {
    local p
    for p in $(ls /proc | grep -E '^[0-9]+$'); do
        [ "$(readlink "/proc/$p/root" 2>/dev/null)" = "$R" ] && echo "$p"
    done
}

# docker stop: SIGTERM to the start script (it stops the node), then
# SIGKILL to whatever is left in the root after 60 s; epmd too. Fails
# when the start script had not ended by then.
ctr_stop() {
    local p i rc=0
    if [ -n "$CTR_PID" ]; then
        kill -TERM "$CTR_PID" 2>/dev/null
        for i in $(seq 1 300); do
            kill -0 "$CTR_PID" 2>/dev/null || break
            sleep 0.2
        done
        kill -0 "$CTR_PID" 2>/dev/null && rc=1
        CTR_PID=
    fi
    for p in $(ctr_pids); do kill -9 "$p" 2>/dev/null; done
    return $rc
}

# the broker as the checks' flush and status see it
broker_admin() {
    shift
    ctr_exec vmq-admin "$@" 2>&1
}

pub() { mosquitto_pub -h 127.0.0.1 -p "$MQTT" "$@"; }

t0=$SECONDS
for rel in "${releases[@]}"; do
    tag=$(basename "$rel" .tar.gz)
    echo "== $tag in the official image's runtime"
    ctr_stop
    rm -rf "$R"
    cp -a "$IMG/root" "$R"
    # the official Dockerfile: its scripts, the release at /vernemq, uid 10000
    install -m 0755 -o 10000 -g 10000 "$SHARED/docker-vernemq/bin/vernemq.sh" "$R/usr/sbin/start_vernemq"
    install -m 0755 -o 10000 -g 10000 "$SHARED/docker-vernemq/bin/join_cluster.sh" "$R/usr/sbin/join_cluster"
    tar xzf "$rel" -C "$R/"
    install -m 0644 "$SHARED/docker-vernemq/files/vm.args" "$R/vernemq/etc/vm.args"
    chown -R 10000:10000 "$R/vernemq"
    ln -s /vernemq/etc "$R/etc/vernemq"
    ln -s /vernemq/data "$R/var/lib/vernemq"
    ln -s /vernemq/log "$R/var/log/vernemq"
    # docker/Dockerfile: COPY --chown=10000:10000 the tarball, its SHA-256
    # and install.sh; RUN install.sh as the image's user
    mkdir -p "$R/tmp/vmq_pgevents"
    cp "$TARBALL" "$TARBALL.sha256" docker/install.sh "$R/tmp/vmq_pgevents/"
    chown -R 10000:10000 "$R/tmp/vmq_pgevents"
    out=$(ctr_exec bash /tmp/vmq_pgevents/install.sh "/tmp/vmq_pgevents/$(basename "$TARBALL")" /vernemq 2>&1)
    check "install.sh as uid 10000 (checks the SHA-256)" "vmq_pgevents installed in /vernemq/plugins/vmq_pgevents" "$out"
    rm -rf "$R/tmp/vmq_pgevents"
    check "the plugin and its schema are owned by uid 10000" "10000 10000" \
        "$(stat -c %u "$R/vernemq/plugins/vmq_pgevents/priv/vmq_pgevents_nif.so") $(stat -c %u "$R/vernemq/share/schema/vmq_pgevents.schema")"
    # the PostgreSQL password, as a mounted secret: a PGPASSFILE of mode 0600
    mkdir -p "$R/vernemq/secrets"
    echo "127.0.0.1:$PGPORT:*:vmq:$PGPW" >"$R/vernemq/secrets/pgpass"
    chown -R 10000:10000 "$R/vernemq/secrets"
    chmod 600 "$R/vernemq/secrets/pgpass"

    DB=image_$(echo "$tag" | tr -c '0-9a-z\n' _)
    bash test/pg.sh psql "$PGDIR" -q -c "DROP DATABASE IF EXISTS $DB" -c "CREATE DATABASE $DB OWNER vmq" >/dev/null 2>&1
    MQTT=18930
    USER_ENV=(
        DOCKER_NET_INTERFACE=lo DOCKER_IP_ADDRESS=127.0.0.1 DOCKER_VERNEMQ_NODENAME=127.0.0.1
        ERL_EPMD_ADDRESS=127.0.0.1
        DOCKER_VERNEMQ_LISTENER__TCP__DEFAULT=127.0.0.1:$MQTT
        DOCKER_VERNEMQ_LISTENER__WS__DEFAULT=127.0.0.1:$((MQTT + 1))
        DOCKER_VERNEMQ_LISTENER__VMQ__CLUSTERING=127.0.0.1:$((MQTT + 2))
        DOCKER_VERNEMQ_LISTENER__HTTP__METRICS=127.0.0.1:$((MQTT + 3))
        DOCKER_VERNEMQ_LISTENER__HTTP__DEFAULT=127.0.0.1:$((MQTT + 4))
        DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MINIMUM=$((MQTT + 10))
        DOCKER_VERNEMQ_ERLANG__DISTRIBUTION__PORT_RANGE__MAXIMUM=$((MQTT + 19))
        DOCKER_VERNEMQ_USER_ALICE=alice-pw
        "DOCKER_VERNEMQ_VMQ_PGEVENTS__DSN=host=127.0.0.1 port=$PGPORT user=vmq dbname=$DB"
        PGPASSFILE=/vernemq/secrets/pgpass
    )

    echo " - first start: a key=value DSN with spaces, the password in PGPASSFILE"
    ctr_start 1
    if ! ctr_ready; then
        bad "the container starts with the plugin" "$(tail -n 15 "$CTR_LOG")"
        ctr_stop
        continue
    fi
    ok "the container starts with the plugin (start_vernemq, uid 10000, variables only)"
    check "vernemq.conf: the DSN line as the start script wrote it" \
        "vmq_pgevents.dsn=host=127.0.0.1 port=$PGPORT user=vmq dbname=$DB" \
        "$(grep '^vmq_pgevents.dsn' "$R/vernemq/etc/vernemq.conf")"
    check "the NIF loaded (no 'Failed to load NIF' in the log)" 0 "$(grep -c 'Failed to load NIF' "$CTR_LOG")"
    beam=$(ctr_pids | while read -r p; do grep -qa beam.smp "/proc/$p/cmdline" && echo "$p"; done | head -n 1)
    check "libpq and jansson come from the plugin's priv/lib" 2 \
        "$(grep -oE '/vernemq/plugins/vmq_pgevents/priv/lib/(libpq.so.5|libjansson.so.4)$' "/proc/$beam/maps" 2>/dev/null | sort -u | wc -l)"
    # connect at start: status connected and the table there before any client
    for _ in $(seq 1 100); do [ "$(status_value connection)" = connected ] && break; sleep 0.1; done
    check "status: connected before the first event" connected "$(status_value connection)"
    check "the table and its views exist before the first event" "vmq_events|vmq_events_connections" \
        "$(q "SELECT to_regclass('vmq_events'), to_regclass('vmq_events_connections')" 2>&1)"
    check_re "status shows the DSN, without a password" "^[^*]*user='vmq'.*dbname='$DB'.*host='127.0.0.1'" \
        "$(status_value dsn)"

    mosquitto_sub -h 127.0.0.1 -p $MQTT -i img-sub -q 1 -t img/t -u alice -P alice-pw -C 1 -W 20 >"$IMG/sub.out" &
    s=$!
    settle "SELECT count(*) FROM vmq_events WHERE client_id = 'img-sub' AND hook = 'on_subscribe'" 1 >/dev/null
    pub -i img-pub -q 1 -t img/t -m image-msg-1 -u alice -P alice-pw
    wait $s
    check "the subscriber gets the message" image-msg-1 "$(cat "$IMG/sub.out")"
    check "rows: the publisher's connection" \
        "auth_on_register|alice auth_on_publish|alice on_publish|alice" \
        "$(settle "SELECT string_agg(hook || '|' || username, ' ' ORDER BY seq) FROM vmq_events
                   WHERE client_id = 'img-pub' AND hook IN ('auth_on_register', 'auth_on_publish', 'on_publish')" \
                  "auth_on_register|alice auth_on_publish|alice on_publish|alice")"
    check "rows: publish and delivery of the message" "on_publish|img-pub|img/t|1|image-msg-1 on_deliver|img-sub|img/t|1|image-msg-1" \
        "$(q "SELECT string_agg(hook || '|' || client_id || '|' || topic || '|' || qos || '|' || convert_from(payload, 'UTF8'), ' ' ORDER BY hook DESC)
              FROM vmq_events WHERE hook IN ('on_publish', 'on_deliver') AND topic = 'img/t'")"
    check "no password in any row, log or config" "0 0 0" \
        "$(q "SELECT count(*) FROM vmq_events e WHERE row_to_json(e)::text LIKE '%alice-pw%' OR row_to_json(e)::text LIKE '%$PGPW%'") $(grep -c "$PGPW" "$CTR_LOG") $(grep -c "$PGPW" "$R/vernemq/etc/vernemq.conf")"

    # PostgreSQL down: events go to the journal on /vernemq/data; docker stop
    bash test/pg.sh stop "$PGDIR"
    for i in 1 2 3; do pub -i img-jpub -q 1 -t img/j -m "journal-$i" -u alice -P alice-pw; done
    sleep 0.5
    if ctr_stop; then ok "docker stop (SIGTERM): the container's start script ends the node and exits"
    else bad "docker stop (SIGTERM): the container's start script ends the node and exits" "still running after 60 s"; fi
    check_re "the journal is on the data volume (/vernemq/data/vmq_pgevents)" '[a-z]' \
        "$(ls "$R/vernemq/data/vmq_pgevents" 2>/dev/null)"

    echo " - second start, same data volume: a URI DSN, the password in PGPASSWORD (as from a Kubernetes secret), PostgreSQL back"
    bash test/pg.sh start "$PGDIR"
    USER_ENV=("${USER_ENV[@]/DOCKER_VERNEMQ_VMQ_PGEVENTS__DSN=*/DOCKER_VERNEMQ_VMQ_PGEVENTS__DSN=postgresql://vmq@127.0.0.1:$PGPORT/$DB}")
    USER_ENV=("${USER_ENV[@]/PGPASSFILE=*/PGPASSWORD=$PGPW}")
    ctr_start 2
    if ctr_ready; then
        ok "the container starts again"
        check "vernemq.conf: the URI DSN as the start script wrote it" \
            "vmq_pgevents.dsn=postgresql://vmq@127.0.0.1:$PGPORT/$DB" \
            "$(grep '^vmq_pgevents.dsn' "$R/vernemq/etc/vernemq.conf")"
        check "what the journal held is written once, in order" "journal-1 journal-2 journal-3" \
            "$(settle "SELECT string_agg(convert_from(payload, 'UTF8'), ' ' ORDER BY seq) FROM vmq_events
                       WHERE client_id = 'img-jpub' AND hook = 'on_publish'" "journal-1 journal-2 journal-3" 20)"
        check "the journal's connections are whole (3 logins, 3 publishes)" "3|3" \
            "$(q "SELECT count(*) FILTER (WHERE hook = 'auth_on_register'), count(*) FILTER (WHERE hook = 'on_publish')
                  FROM vmq_events WHERE client_id = 'img-jpub'")"
        check "status: nothing dropped, nothing left" "0|0" "$(status_value 'dropped (no room: journal, disk limit or queue)')|$(status_value 'queued events')"
        check "the password in neither the log, vernemq.conf nor status" "0 0 0" \
            "$(grep -c "$PGPW" "$CTR_LOG") $(grep -c "$PGPW" "$R/vernemq/etc/vernemq.conf") $(broker_admin x pgevents status | grep -c "$PGPW")"
    else
        bad "the container starts again" "$(tail -n 15 "$CTR_LOG")"
    fi
    ctr_stop

    echo " - the plugin without its priv/lib: the NIF cannot load"
    rm -rf "$R/vernemq/plugins/vmq_pgevents/priv/lib"
    ctr_start 3
    if ctr_ready; then
        ok "the broker starts and the plugin is listed"
        pub -i img-nolib -q 1 -t img/n -m n -u alice -P alice-pw
        check "MQTT still works" 0 $?
        check_re "the log names the missing library and docs/install.md" \
            "not recording: the NIF library cannot load: .*libpq\.so\.5: cannot open shared object file.*docs/install\.md" \
            "$(grep 'vmq_pgevents: not recording' "$CTR_LOG" | head -n 1)"
        check_re "status says the same" "^not_recording$" "$(status_value connection)"
        check_re "status: last error names libpq.so.5" "libpq\.so\.5.*docs/install\.md" "$(status_value 'last error')"
        check "the log does not blame the configuration" 0 "$(grep -c 'fix the configuration' "$CTR_LOG")"
    else
        bad "the broker starts with a plugin whose NIF cannot load" "$(tail -n 15 "$CTR_LOG")"
    fi
    ctr_stop
    echo "   ($((SECONDS - t0)) s so far)"
done

echo "image test: ${#releases[@]} release(s) in $((SECONDS - t0)) s"
echo "$E2E_PASS passed, $E2E_FAIL failed"
[ "$E2E_FAIL" -eq 0 ]
