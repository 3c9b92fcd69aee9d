#!/usr/bin/env bash
# bench/run_bench_icount.sh - what `make bench` runs last: the instructions
# of one hook call, counted (not timed) by valgrind's callgrind. A count is
# the same for the same code and arguments on any x86-64 machine, busy or
# not, so a change of the hook path can be told from a slower day.
#
# The plugin runs in the Erlang runtime of the VerneMQ 2.2.0 release in
# ../shared/vernemq (OTP 27: its JIT can keep its code in one mapping,
# +JMsingle, which valgrind needs; Debian's OTP 25 cannot), with no
# PostgreSQL to reach (the writer waits, every event goes into the
# journal; the hook path is the same with PostgreSQL up). For each hook,
# CALLS calls from one process; callgrind counts what runs inside the
# NIF's entry, nif_event, and all it calls: term decoding, the filter, the
# row, the journal record and its CRC (the Erlang shim around it, JIT
# code, is not counted). Stages by source file. Output: a table on stdout
# and _build/bench/icount.json.
#
#   CALLS=20000 RELEASE=../shared/vernemq/vernemq-2.2.0-otp27-debian12-amd64.tar.gz
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=_build/make
OUT=_build/bench
CALLS=${CALLS:-20000}
RELEASE=${RELEASE:-../shared/vernemq/vernemq-2.2.0-otp27-debian12-amd64.tar.gz}
HOOKS="disabled on_publish on_deliver auth_on_register"
mkdir -p "$OUT"
command -v valgrind >/dev/null || { echo "run_bench_icount: valgrind missing (apt-get install valgrind)" >&2; exit 1; }

VM=$OUT/icount_vm
if [ ! -d "$VM/vernemq" ]; then
    rm -rf "$VM"
    mkdir -p "$VM"
    tar xzf "$RELEASE" -C "$VM"
fi
ROOT=$(cd "$VM/vernemq" && pwd)
ERTS=$(ls -d "$ROOT"/erts-* | sort -V | tail -n 1)
BOOT=$(ls "$ROOT"/releases/*/start_clean.boot | sort -V | tail -n 1)
export ROOTDIR=$ROOT BINDIR=$ERTS/bin EMU=beam PROGNAME=erl

WORK=$(mktemp -d /tmp/vmq_pgevents_icount.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

# stage SOURCEFILE:FUNCTION: which part of the hook path an entry is
stage() {
    case "$1" in
        c_src/nif_hook.c:*|c_src/nif_priv.h:*) echo entry ;;
        c_src/terms.c:*|c_src/terms_json.c:*|c_src/terms_int.h:*|c_src/text.c:*|*/erl_nif.c:*|*/big.c:*) echo decode ;;
        c_src/filter.c:*) echo filter ;;
        c_src/event.c:*|c_src/buf.c:*|c_src/buf.h:*|*memmove*|*memcpy*|*memset*) echo row ;;
        c_src/crc32c.c:*) echo crc ;;
        c_src/queue.c:*|c_src/journal.c:*|c_src/journal_int.h:*|c_src/record.[ch]:*|c_src/be32.h:*|*pthread_mutex*) echo journal ;;
        *) echo other ;;
    esac
}

STAGES="entry decode filter row journal crc other"
pc() { awk -v a="$1" -v c="$CALLS" 'BEGIN { printf "%.0f", a / c }'; }
printf '%-18s %12s' hook "instr/call"; printf ' %8s' $STAGES; echo
json=""
for h in $HOOKS; do
    rm -rf "$WORK/spool" "$WORK/cg.out"
    valgrind --tool=callgrind --collect-atstart=no --toggle-collect=nif_event \
        --callgrind-out-file="$WORK/cg.out" \
        "$BINDIR/beam.smp" -JMsingle true -S 1 -- -root "$ROOT" -bindir "$BINDIR" -progname erl \
        -boot "${BOOT%.boot}" -- -home "$WORK" -noshell -pa ebin -pa "$BUILD/bench_ebin" \
        -run vmq_pgevents_icount main "$WORK/spool" "$h" "$CALLS" >"$WORK/out" 2>&1 ||
        { cat "$WORK/out" >&2; exit 1; }
    want=$([ "$h" = disabled ] && echo 0 || echo "$CALLS")
    grep -q "^recorded $want\$" "$WORK/out" || { echo "run_bench_icount: $h: not $want events recorded" >&2; cat "$WORK/out" >&2; exit 1; }
    declare -A per=()
    for s in $STAGES; do per[$s]=0; done
    total=0
    while read -r n fn; do
        n=${n//,/}
        s=$(stage "$fn")
        per[$s]=$(( ${per[$s]} + n ))
        total=$((total + n))
    done < <(callgrind_annotate --threshold=100 --auto=no "$WORK/cg.out" 2>/dev/null |
             awk '/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ { n = $1; sub(/^ *[0-9,]+ +\( *[0-9.]+%\) +/, ""); print n, $1 }')
    printf '%-18s %12s' "$h" "$(pc $total)"
    stages_json=""
    for s in $STAGES; do
        printf ' %8s' "$(pc ${per[$s]})"
        stages_json+="${stages_json:+, }\"$s\": $(pc ${per[$s]})"
    done
    echo
    json+="${json:+,}
 {\"hook\": \"$h\", \"calls\": $CALLS, \"instructions_per_call\": $(pc $total), \"stages\": {$stages_json}}"
    unset per
done
echo "(instructions inside the NIF per call, callgrind; $CALLS calls each; $(basename "$ERTS"))"
echo "[$json]" >"$OUT/icount.json"
echo "results: $OUT/icount.json"
