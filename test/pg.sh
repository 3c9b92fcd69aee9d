#!/usr/bin/env bash
# test/pg.sh - a private PostgreSQL server for the tests, `make run` and
# `make bench`: data, unix socket and log all inside one directory, no TCP.
#
#   test/pg.sh init DIR [fast] [tls|tcp]
#                                initdb into DIR (fast: fsync off, for tests;
#                                tls: a test CA, server and client certificates
#                                in DIR, TCP on 127.0.0.1 with TLS only;
#                                tcp: also TCP on 127.0.0.1, password (SCRAM)
#                                required there; the port in DIR/port;
#                                nocitus: a server that has no Citus, run
#                                from DIR/tree: a copy of this PostgreSQL's
#                                programs beside links to its files, the
#                                Citus ones left out;
#                                citus: a node of a Citus cluster: Citus
#                                preloaded, TCP on 127.0.0.1 (the port in
#                                DIR/port) trusted, as the nodes connect
#                                to each other there)
#   test/pg.sh start DIR         start and wait until it accepts connections
#   test/pg.sh stop DIR          fast shutdown, waits
#   test/pg.sh kill DIR          kill -9 the postmaster (fault tests)
#   test/pg.sh freeze DIR        SIGSTOP the postmaster and every backend (a hung server)
#   test/pg.sh thaw DIR          SIGCONT them
#   test/pg.sh dsn DIR           print the libpq connection string
#   test/pg.sh psql DIR ARGS...  psql connected to it
#
# PostgreSQL refuses to run as root: as root, the server runs as the
# 'postgres' user (made by Debian's postgresql package), which owns DIR.
set -euo pipefail

cmd=${1:?usage: pg.sh init|start|stop|kill|dsn|psql DIR}
dir=${2:?usage: pg.sh $cmd DIR}
shift 2

pg_bin() {
    if [ -f "$dir/pg_bin" ]; then cat "$dir/pg_bin"; return; fi
    if [ -n "${PG_BIN:-}" ]; then echo "$PG_BIN"; return; fi
    if command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/initdb" ]; then
        pg_config --bindir; return
    fi
    ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1
}
BIN=$(pg_bin)
[ -x "$BIN/initdb" ] || { echo "pg.sh: PostgreSQL server binaries not found (apt-get install postgresql, or set PG_BIN)" >&2; exit 1; }

as_owner() {
    if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}
superuser() {
    if [ "$(id -u)" = 0 ]; then echo postgres; else id -un; fi
}
port() {
    if [ -f "$dir/port" ]; then cat "$dir/port"; else echo 5432; fi
}

# test certificates: CA, server (localhost, 127.0.0.1), client (CN=vmq_cert)
make_certs() {
    local d=$1
    openssl req -new -x509 -days 2 -nodes -subj "/CN=vmq_pgevents test CA" \
        -keyout "$d/ca.key" -out "$d/ca.crt" 2>/dev/null
    openssl req -new -nodes -subj "/CN=localhost" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$d/san.ext"
    openssl x509 -req -in "$d/server.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -extfile "$d/san.ext" -out "$d/server.crt" 2>/dev/null
    openssl req -new -nodes -subj "/CN=vmq_cert" -keyout "$d/client.key" -out "$d/client.csr" 2>/dev/null
    openssl x509 -req -in "$d/client.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" -CAcreateserial \
        -days 2 -out "$d/client.crt" 2>/dev/null
    # a second CA the server's certificate does not chain to
    openssl req -new -x509 -days 2 -nodes -subj "/CN=other CA" \
        -keyout "$d/other_ca.key" -out "$d/other_ca.crt" 2>/dev/null
    chmod 600 "$d"/*.key
}

# a TCP port on 127.0.0.1 that nothing listens on, kept in DIR/port
# (below Linux's ephemeral range, 32768-60999, where a client's own end of
# a connection may sit on the port found free a moment before)
free_port() {
    local p=$(( (RANDOM % 10000) + 20000 ))
    while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
    echo "$p" >"$dir/port"
    echo "$p"
}

# DIR/tree: this PostgreSQL without Citus. Its programs are copied (they
# find their libraries and share files relative to where they are, not
# through links), everything else is linked, citus* left out.
tree_without_citus() {
    local t=$dir/tree lib share f
    lib=$(cd "$BIN/.." && pwd)                       # /usr/lib/postgresql/15
    share=$("$BIN/pg_config" --sharedir 2>/dev/null || echo "/usr/share/postgresql/${lib##*/}")
    mkdir -p "$t$lib/lib" "$t$share/extension"
    cp -a "$BIN" "$t$lib/"
    for f in "$lib"/lib/*; do case "${f##*/}" in citus*) ;; *) ln -s "$f" "$t$lib/lib/" ;; esac; done
    for f in "$share"/*; do [ "${f##*/}" = extension ] || ln -s "$f" "$t$share/"; done
    for f in "$share"/extension/*; do case "${f##*/}" in citus*) ;; *) ln -s "$f" "$t$share/extension/" ;; esac; done
    echo "$t$lib/bin" >"$dir/pg_bin"
    BIN=$t$lib/bin
}

case "$cmd" in
init)
    fast=0 tls=0 tcp=0 nocitus=0 citus=0
    for o in "$@"; do
        case "$o" in fast) fast=1 ;; tls) tls=1 ;; tcp) tcp=1 ;; nocitus) nocitus=1 ;; citus) citus=1 ;; esac
    done
    mkdir -p "$dir"
    [ $nocitus = 1 ] && tree_without_citus
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    as_owner "$BIN/initdb" -D "$dir/data" -U "$(superuser)" --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; exit 1; }
    {
        echo "listen_addresses = ''"
        echo "unix_socket_directories = '$dir'"
        echo "max_connections = 30"
        echo "shared_buffers = 128MB"
        # fast (tests): fsync off survives a killed server, not a machine crash.
        # Never synchronous_commit = off: a killed server would lose acknowledged rows.
        if [ $fast = 1 ]; then echo "fsync = off"; fi
    } | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
    if [ $tcp = 1 ]; then
        p=$(free_port)
        printf "listen_addresses = '127.0.0.1'\nport = %s\n" "$p" | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
        { echo "host all all 127.0.0.1/32 scram-sha-256"; cat "$dir/data/pg_hba.conf"; } >"$dir/hba.new"
        as_owner cp "$dir/hba.new" "$dir/data/pg_hba.conf"
    fi
    if [ $citus = 1 ]; then
        p=$(free_port)
        { printf "listen_addresses = '127.0.0.1'\nport = %s\n" "$p"
          echo "shared_preload_libraries = 'citus'"
          echo "max_connections = 100"; } | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
        { echo "host all all 127.0.0.1/32 trust"; cat "$dir/data/pg_hba.conf"; } >"$dir/hba.new"
        as_owner cp "$dir/hba.new" "$dir/data/pg_hba.conf"
    fi
    if [ $tls = 1 ]; then
        p=$(free_port)
        make_certs "$dir"
        cp "$dir/server.key" "$dir/server.crt" "$dir/ca.crt" "$dir/data/"
        [ "$(id -u)" = 0 ] && chown postgres: "$dir"/data/server.* "$dir"/data/ca.crt
        {
            echo "listen_addresses = '127.0.0.1'"
            echo "port = $p"
            echo "ssl = on"
            echo "ssl_cert_file = 'server.crt'"
            echo "ssl_key_file = 'server.key'"
            echo "ssl_ca_file = 'ca.crt'"
        } | as_owner tee -a "$dir/data/postgresql.conf" >/dev/null
        # TLS only over TCP; the role vmq_cert must present its client certificate
        { echo "hostssl all vmq_cert 127.0.0.1/32 cert"
          echo "hostssl all all 127.0.0.1/32 trust"
          echo "hostnossl all all 127.0.0.1/32 reject"
          cat "$dir/data/pg_hba.conf"; } >"$dir/hba.new"
        as_owner cp "$dir/hba.new" "$dir/data/pg_hba.conf"
    fi
    ;;
start)
    if "$BIN/pg_isready" -q -h "$dir" -p "$(port)"; then exit 0; fi
    as_owner "$BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null \
        || { tail -n 20 "$dir/server.log" >&2; exit 1; }
    ;;
stop)
    as_owner "$BIN/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 || true
    ;;
kill)
    if [ -f "$dir/data/postmaster.pid" ]; then
        pid=$(head -n 1 "$dir/data/postmaster.pid")
        children=$(pgrep -P "$pid" || true)
        kill -9 "$pid" 2>/dev/null || true
        # the backends notice the postmaster's death and exit; wait for them
        for _ in $(seq 1 200); do
            alive=0
            for c in $pid $children; do
                st=$(awk '/^State:/ {print $2}' "/proc/$c/status" 2>/dev/null || true)
                [ -n "$st" ] && [ "$st" != Z ] && alive=1
            done
            [ $alive = 0 ] && break
            sleep 0.05
        done
        # a dead (or zombie, where nothing reaps it) postmaster leaves its lock
        rm -f "$dir/data/postmaster.pid" "$dir/.s.PGSQL.$(port)" "$dir/.s.PGSQL.$(port).lock"
    fi
    ;;
freeze|thaw)
    sig=$([ "$cmd" = freeze ] && echo STOP || echo CONT)
    pid=$(head -n 1 "$dir/data/postmaster.pid")
    kill -$sig "$pid" $(pgrep -P "$pid") 2>/dev/null || true
    ;;
dsn)
    echo "host=$dir port=$(port) user=$(superuser) dbname=postgres"
    ;;
psql)
    psql -X -v ON_ERROR_STOP=1 -h "$dir" -p "$(port)" -U "$(superuser)" -d postgres "$@"
    ;;
*)
    echo "pg.sh: unknown command $cmd" >&2; exit 2
    ;;
esac
