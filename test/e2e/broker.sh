# test/e2e/broker.sh - sourced by test/e2e/run.sh: a real VerneMQ release
# unpacked under _build/e2e, configured the way docs/install.md tells a user
# (lines appended to etc/vernemq.conf, the schema copied into
# share/schema/), started and stopped, all on 127.0.0.1.
#
# A broker is named by its release directory (…/vernemq); the functions
# take that directory as their first argument.

# broker_unpack SOURCE DEST: SOURCE is a release tarball or an installed
# release directory (VERNEMQ_HOME); DEST/vernemq is made from it, fresh.
broker_unpack() {
    local src=$1 dest=$2
    [ -d "$dest/vernemq" ] && broker_stop "$dest/vernemq"   # left by an interrupted run
    rm -rf "$dest"
    mkdir -p "$dest"
    if [ -d "$src" ]; then
        cp -a "$src" "$dest/vernemq"
    else
        tar xzf "$src" -C "$dest"
    fi
    [ -x "$dest/vernemq/bin/vernemq" ]
}

# the VerneMQ version of a release directory (releases/<vsn>/)
broker_version() {
    ls "$1/releases" | grep -E '^[0-9]+\.[0-9]+' | sort -V | tail -n 1
}

# broker_configure DIR NODE PORTBASE PLUGIN_DIR DSN: the listeners on
# 127.0.0.1 (MQTT PORTBASE, HTTP PORTBASE+1, cluster PORTBASE+2,
# distribution PORTBASE+10..+19), two users and an ACL, and the plugin
# enabled as docs/install.md says.
broker_configure() {
    local dir=$1 node=$2 base=$3 plugin=$4 dsn=$5
    cp "$plugin/priv/vmq_pgevents.schema" "$dir/share/schema/"
    cat >>"$dir/etc/vernemq.conf" <<EOF

## test/e2e: everything on the loopback interface
listener.tcp.default = 127.0.0.1:$base
listener.http.default = 127.0.0.1:$((base + 1))
listener.vmq.clustering = 127.0.0.1:$((base + 2))
erlang.distribution.port_range.minimum = $((base + 10))
erlang.distribution.port_range.maximum = $((base + 19))
nodename = $node
## vmq_pgevents, as docs/install.md says
plugins.vmq_pgevents = on
plugins.vmq_pgevents.path = $plugin
plugins.vmq_pgevents.priority = 1
vmq_pgevents.dsn = $dsn
EOF
    printf 'alice-pw\nalice-pw\n' | "$dir/bin/vmq-passwd" -c "$dir/etc/vmq.passwd" alice >/dev/null 2>&1
    printf 'bob-pw\nbob-pw\n' | "$dir/bin/vmq-passwd" "$dir/etc/vmq.passwd" bob >/dev/null 2>&1
    printf 'user alice\ntopic #\nuser bob\ntopic e2e/#\n' >"$dir/etc/vmq.acl"
}

# append more lines to vernemq.conf (the last occurrence of a key wins)
broker_conf() {
    local dir=$1
    shift
    printf '%s\n' "$@" >>"$dir/etc/vernemq.conf"
}

broker_admin() {
    local dir=$1
    shift
    ERL_EPMD_ADDRESS=127.0.0.1 "$dir/bin/vmq-admin" "$@" 2>&1
}

# the beam process of a release (its pid file is kept in tmp/ by this build)
broker_pid() {
    pgrep -f "$1/.*beam.smp" | head -n 1
}

# broker_start DIR [PLUGINS]: boots the node and waits until the plugins
# are up (VerneMQ starts them a moment after the node answers); PLUGINS:
# the ones to wait for, default "vmq_pgevents vmq_passwd vmq_acl"
broker_start() {
    local dir=$1 plugins=${2:-vmq_pgevents vmq_passwd vmq_acl} i want
    if ! ERL_EPMD_ADDRESS=127.0.0.1 WAIT_FOR_ERLANG=60 "$dir/bin/vernemq" start >"$dir/start.out" 2>&1; then
        echo "   broker did not start: $(tail -n 3 "$dir/start.out" | tr '\n' ' ')"
        grep -E '\[error\]' "$dir/log/console.log" 2>/dev/null | tail -n 3 | cut -c1-400
        return 1
    fi
    broker_plugins_up "$dir" "$plugins"
}

# broker_plugins_up DIR [PLUGINS]: waits (at most 30 s) until the node's
# plugins are up (broker_start's wait, for a node started otherwise)
broker_plugins_up() {
    local dir=$1 plugins=${2:-vmq_pgevents vmq_passwd vmq_acl} i want
    plugins=$(echo $plugins)   # one space between names
    want=$(wc -w <<<"$plugins")
    for i in $(seq 1 150); do
        if [ "$(broker_admin "$dir" plugin show 2>/dev/null | grep -cE "^\| (${plugins// /|}) ")" = "$want" ]; then
            return 0
        fi
        sleep 0.2
    done
    echo "   the plugins did not come up within 30 s"
    return 1
}

# router_subs DIR: the subscriptions in the node's routing table (its
# metric router_subscriptions; a cluster's remote ones included)
router_subs() {
    broker_admin "$1" metrics show 2>/dev/null | awk -F' = ' '/router_subscriptions/ {print $2; exit}'
}

# routed DIR BEFORE: waits (at most 30 s) until the node routes more
# subscriptions than BEFORE: a subscription made on another node of the
# cluster is in its routing table
routed() {
    local i
    for i in $(seq 1 150); do
        [ "$(router_subs "$1")" -gt "$2" ] 2>/dev/null && return 0
        sleep 0.2
    done
    echo "   node $1 did not route the new subscription within 30 s"
    return 1
}

# broker_rpc DIR NODE MODULE FUNCTION ARGS: a call on the running node
# through the release's own nodetool (as its bin/vernemq calls it); ARGS
# as Erlang terms, each ended by a dot. Prints the result.
broker_rpc() {
    local dir=$1 node=$2 erts cookie
    shift 2
    erts=$(ls -d "$dir"/erts-*/bin | head -n 1)
    cookie=$(grep -E '^[[:space:]]*distributed_cookie[[:space:]]*=' "$dir/etc/vernemq.conf" | tail -n 1 | cut -d= -f2 | tr -d ' ')
    ERL_EPMD_ADDRESS=127.0.0.1 "$erts/escript" "$erts/nodetool" -name "$node" -setcookie "$cookie" rpcterms "$@" 2>&1
}

# broker_stop DIR: `vernemq stop`, then the beam by PID if it is still
# there after 30 s: then it says so and fails (a stop that hangs)
broker_stop() {
    local dir=$1 pid
    pid=$(broker_pid "$dir")
    [ -n "$pid" ] || return 0
    ERL_EPMD_ADDRESS=127.0.0.1 "$dir/bin/vernemq" stop >/dev/null 2>&1
    for _ in $(seq 1 150); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.2
    done
    echo "   vernemq stop did not end the node within 30 s: killed (kill -9)"
    kill -9 "$pid" 2>/dev/null
    return 1
}

# stop_checked DIR DESCRIPTION: broker_stop as a check
stop_checked() {
    if broker_stop "$1"; then ok "$2"; else bad "$2"; fi
}
