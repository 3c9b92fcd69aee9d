#!/usr/bin/env bash
# test/deps.sh - checks what building, testing and `make run` need from
# Debian 12, and installs what is missing when run as root (as CI and a
# fresh machine are); otherwise names the exact apt-get command.
set -euo pipefail

need=()
command -v erl >/dev/null || need+=(erlang-nox)
command -v erlc >/dev/null || need+=(erlang-dev)
ls /usr/lib/erlang/erts-*/include/erl_nif.h >/dev/null 2>&1 || need+=(erlang-dev)
ls -d /usr/lib/erlang/lib/eunit-* >/dev/null 2>&1 || need+=(erlang-eunit)
command -v pkg-config >/dev/null || need+=(pkg-config)
command -v cc >/dev/null || need+=(gcc)
pkg-config --exists jansson 2>/dev/null || need+=(libjansson-dev)
pkg-config --exists libpq 2>/dev/null || need+=(libpq-dev)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
id postgres >/dev/null 2>&1 || need+=(postgresql)
# the real-broker suite: MQTT clients, the Prometheus endpoint, and what the
# VerneMQ releases need at run time (eleveldb links libsnappy)
command -v mosquitto_pub >/dev/null || need+=(mosquitto-clients)
command -v curl >/dev/null || need+=(curl)
ldconfig -p 2>/dev/null | grep 'libsnappy.so.1 ' >/dev/null || need+=(libsnappy1v5)   # not -q: no SIGPIPE under pipefail
# the image test (test/image/run.sh): the image's root by debootstrap, run
# with unshare/nsenter/chroot; the alert rules' tests: promtool
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v unshare >/dev/null || need+=(util-linux)
command -v promtool >/dev/null || need+=(prometheus)
# make bench-broker's load generator
pkg-config --exists libmosquitto 2>/dev/null || need+=(libmosquitto-dev)
# `test/deps.sh ci`: also what .ci/run's checks use
if [ "${1:-}" = ci ]; then
    command -v valgrind >/dev/null || need+=(valgrind)
    command -v clang >/dev/null || need+=(clang)
    ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a >/dev/null 2>&1 || need+=(libclang-rt-14-dev)
fi

# Citus (columnar storage for compress_after): not packaged by Debian; the
# build in ../shared/citus needs postgresql-15 15.20 or later (older
# servers cannot load citus.so). Installed after the packages, below.
CITUS_TGZ=${VMQ_CITUS_TGZ:-$(ls "$(dirname "$0")"/../../shared/citus/citus-*-pg15-debian12-amd64.tar.gz 2>/dev/null | tail -n 1 || true)}
citus_ok() { [ -f /usr/lib/postgresql/15/lib/citus_columnar.so ] && pg15_new_enough; }
pg15_new_enough() {
    local v
    v=$(dpkg-query -W -f '${Version}' postgresql-15 2>/dev/null) || return 1
    dpkg --compare-versions "$v" ge 15.20
}
install_citus() {
    if citus_ok; then return 0; fi
    if [ -z "$CITUS_TGZ" ]; then
        echo "Citus: no citus-*-pg15-debian12-amd64.tar.gz in ../shared/citus (set VMQ_CITUS_TGZ); the compression tests need it" >&2
        return 1
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "missing: Citus for PostgreSQL 15; install it with: sudo apt-get install postgresql-15 && sudo tar xzf $CITUS_TGZ -C /" >&2
        return 1
    fi
    if ! pg15_new_enough; then
        echo "installing: postgresql-15 (15.20 or later, for Citus)"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
    fi
    echo "installing: Citus from $CITUS_TGZ"
    tar xzf "$CITUS_TGZ" -C /
}

if [ ${#need[@]} -eq 0 ]; then install_citus; exit $?; fi
mapfile -t need < <(printf '%s\n' "${need[@]}" | sort -u)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing: ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
    install_citus
else
    echo "missing: ${need[*]}" >&2
    echo "install them with: sudo apt-get install ${need[*]}" >&2
    exit 1
fi
