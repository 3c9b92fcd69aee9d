#!/usr/bin/env bash
# test/run_tests.sh - what `make test` runs (after building):
#   1. the plain C tests of the core (no VM, no server)
#   2. a private PostgreSQL in a temporary directory (test/pg.sh)
#   3. the EUnit suite in a real Erlang VM with the real NIF
#   4. the real-broker suite (test/e2e/run.sh): every VerneMQ release in
#      ../shared/vernemq/ (or VERNEMQ_HOME) with the plugin installed from
#      the release tarball and enabled as the README says, driven by
#      mosquitto clients
#   5. the official Docker image's runtime (test/image/run.sh)
#   6. the Prometheus alert rules (promtool)
# and ends with one line "N passed, N failed" over all of them. Every
# stage has a time limit: a stage that hangs is ended and counted failed.
# Under CI (CI set) a stage that cannot run (no broker release, no
# promtool, ...) is a failure, never a skip.
set -uo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
pass=0 fail=0
# limit SECONDS CMD...: CMD, ended (TERM, then KILL 5 min later: time for
# its own clean-up, e.g. the brokers the real-broker suite stops) past its
# limit, which it says; its exit status (124 or 137 when ended)
limit() {
    local secs=$1 rc
    shift
    timeout -k 300 "$secs" "$@"; rc=$?
    if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then echo "TIMED OUT after $secs s: $*"; fi
    return $rc
}

echo "== C core tests"
out=$(limit 900 "$BUILD/test_core" 2>&1); rc=$?
echo "$out"
if [[ $out =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
    pass=$((pass + BASH_REMATCH[1])); fail=$((fail + BASH_REMATCH[2]))
fi
# a failing exit with "0 failed" counted (e.g. a sanitizer's report after it)
[ $rc -eq 0 ] || [[ $out =~ [1-9][0-9]*\ failed ]] || fail=$((fail + 1))

echo "== fuzz corpus replay (test/fuzz/corpus: seeds and every crash found)"
out=$(limit 600 "$BUILD/fuzz_regress" test/fuzz/corpus 2>&1); rc=$?
echo "$out"
if [ $rc -eq 0 ] && [[ $out =~ ([0-9]+)\ passed ]]; then pass=$((pass + BASH_REMATCH[1])); else fail=$((fail + 1)); fi

echo "== PostgreSQL for the tests"
PGDIR=$(mktemp -d /tmp/vmq_pgevents_test.XXXXXX)
cleanup() { bash test/pg.sh stop "$PGDIR" >/dev/null 2>&1; rm -rf "$PGDIR" "${PGDIR}_spool"; }
trap cleanup EXIT
bash test/pg.sh init "$PGDIR" fast && bash test/pg.sh start "$PGDIR" || { echo "could not start PostgreSQL"; echo "$pass passed, $((fail + 1)) failed"; exit 1; }
export VMQ_PGEVENTS_TEST_PG=$PGDIR

echo "== EUnit (real VM, real NIF, real PostgreSQL)"
mods=$(ls "$BUILD"/test_ebin/*_tests.beam | xargs -n1 basename | sed 's/\.beam$//' | sort | paste -sd, -)
# SANITIZE=1: the NIF is built with ASan/UBSan; their runtime must be the
# first library in the VM
if [ "${SANITIZE:-}" = 1 ]; then
    export LD_PRELOAD=$(${CC:-cc} -print-file-name=libasan.so)
    export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1
    export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
    echo "   (sanitizers: LD_PRELOAD=$LD_PRELOAD)"
fi
f0=$fail
limit 3000 erl -noshell -pa ebin -pa "$BUILD/test_ebin" -eval "
    logger:set_primary_config(level, warning),
    R = eunit:test([$mods], [verbose]),
    halt(case R of ok -> 0; _ -> 1 end)." 2>&1 | tee "$BUILD/eunit.log"
rc=${PIPESTATUS[0]}
log=$(cat "$BUILD/eunit.log")
if [[ $log =~ All\ ([0-9]+)\ tests\ passed ]]; then
    pass=$((pass + BASH_REMATCH[1]))
elif [[ $log =~ Failed:\ ([0-9]+)\.\ +Skipped:\ ([0-9]+)\.\ +Passed:\ ([0-9]+) ]]; then
    # skipped: tests cancelled (their setup failed): failures too
    fail=$((fail + BASH_REMATCH[1] + BASH_REMATCH[2])); pass=$((pass + BASH_REMATCH[3]))
elif [ $rc -ne 0 ]; then
    fail=$((fail + 1))
fi
[ $rc -eq 0 ] || [ $fail -gt $f0 ] || fail=$((fail + 1))

# add_counts LOG RC: the last "N passed, N failed" line of a stage's log
add_counts() {
    local last
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
    if [[ $last =~ ([0-9]+)\ passed,\ ([0-9]+)\ failed ]]; then
        pass=$((pass + BASH_REMATCH[1])); fail=$((fail + BASH_REMATCH[2]))
    fi
    [ "$2" -eq 0 ] || [[ $last =~ [1-9][0-9]*\ failed ]] || fail=$((fail + 1))
}

echo "== real VerneMQ brokers (test/e2e/run.sh)"
if [ "${SANITIZE:-}" = 1 ]; then
    # the brokers bring their own VM, which cannot preload the sanitizer runtime
    echo "   not under SANITIZE=1 (the plain make test runs it)"
else
    unset LD_PRELOAD
    limit 3000 bash test/e2e/run.sh 2>&1 | tee "$BUILD/e2e.log"; add_counts "$BUILD/e2e.log" "${PIPESTATUS[0]}"
fi

echo "== the official Docker image's runtime (test/image/run.sh)"
if [ "${SANITIZE:-}" = 1 ]; then
    echo "   not under SANITIZE=1 (the plain make test runs it)"
else
    limit 1500 bash test/image/run.sh 2>&1 | tee "$BUILD/image.log"; add_counts "$BUILD/image.log" "${PIPESTATUS[0]}"
fi

echo "== Prometheus alert rules (promtool check rules, promtool test rules)"
if command -v promtool >/dev/null; then
    if promtool check rules priv/vmq_pgevents.rules.yml && (cd test/prometheus && promtool test rules vmq_pgevents.rules.test.yml); then
        echo "alert rules: 1 passed, 0 failed"; pass=$((pass + 1))
    else
        echo "alert rules: 0 passed, 1 failed"; fail=$((fail + 1))
    fi
else
    echo "promtool missing (apt-get install prometheus; test/deps.sh installs it)"; fail=$((fail + 1))
fi

echo "$pass passed, $fail failed"
[ $fail -eq 0 ]
