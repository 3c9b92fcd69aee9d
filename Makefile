# vmq_pgevents - build, test, run, bench.
#
#   make            the plugin directory: priv/vmq_pgevents_nif.so + ebin/
#   make test       C tests, then the Erlang suite against a private PostgreSQL
#   make run        replay a recorded session into a private PostgreSQL and show the rows
#   make dist       the release tarball _build/dist/vmq_pgevents-<vsn>-otp<N>-linux-<arch>.tar.gz
#                   (+ .sha256): the plugin with libpq and jansson inside (docs/install.md)
#   make bench      benchmarks (see docs/performance.md)
#   make bench-query queries on 100 million generated rows (docs/performance.md)
#   make bench-broker a real VerneMQ under MQTT load, with and without the plugin (docs/performance.md)
#   make bench-scale one PostgreSQL against a Citus cluster: ingest, and a 2-node VerneMQ cluster (docs/scale-out.md)
#
# Switches: ERTS_INCLUDE_DIR=... (build against another erts, e.g. a VerneMQ
# release's), DEBUG=1 (no optimisation), SANITIZE=1 (ASan + UBSan).

ERL ?= erl
ERLC ?= erlc
ERTS_INCLUDE_DIR ?= $(shell $(ERL) -noshell -eval 'io:format("~ts/erts-~ts/include", [code:root_dir(), erlang:system_info(version)])' -s init stop 2>/dev/null)
PKGS := libpq jansson
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

CC ?= cc
ifeq ($(DEBUG),1)
OPT := -O0 -g3
else
OPT := -O2 -g
endif
ifeq ($(SANITIZE),1)
SAN := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
endif
WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes
CFLAGS_ALL := -std=gnu11 $(OPT) $(WARN) $(SAN) -fPIC -fvisibility=hidden -pthread $(CFLAGS)

CORE_SRC := c_src/buf.c c_src/text.c c_src/jsonw.c c_src/event.c c_src/crc32c.c c_src/record.c c_src/journal.c c_src/journal_disk.c c_src/journal_ram.c c_src/queue.c c_src/copy.c c_src/pgio.c c_src/compress.c c_src/recover.c c_src/session.c c_src/copyout.c c_src/writer.c c_src/filter.c c_src/sha256.c c_src/plugin_rows.c c_src/wlog.c
NIF_SRC := $(CORE_SRC) c_src/terms.c c_src/terms_json.c c_src/nif.c c_src/nif_hook.c c_src/nif_config.c c_src/nif_status.c c_src/nif_query.c
HDRS := $(wildcard c_src/*.h)
NIF_SO := priv/vmq_pgevents_nif.so
# the NIF looks for its libraries in priv/lib/ first (where the release
# tarball puts libpq and jansson), then where the system keeps them
NIF_LDFLAGS := -Wl,--enable-new-dtags,-rpath,'$$ORIGIN/lib'
# identifies this build of the NIF: a reload adopts the running state only
# from a library of the same build (see c_src/nif.c, "Reloads")
BUILD_ID = $(shell cat $(NIF_SRC) $(HDRS) | cksum | cut -d' ' -f1)-$(shell echo '$(CC) $(CFLAGS_ALL)' | cksum | cut -d' ' -f1)
BUILD := _build/make
# rebuild everything C when the flags change (e.g. SANITIZE=1 and back)
FLAGS_STAMP := $(BUILD)/cflags-$(shell echo '$(CC) $(CFLAGS_ALL) $(NIF_LDFLAGS) $(LDFLAGS)' | cksum | cut -d' ' -f1)

ERL_SRC := $(wildcard erl_src/*.erl)
BEAMS := $(patsubst erl_src/%.erl,ebin/%.beam,$(ERL_SRC))
TEST_ERL := $(wildcard test/*.erl)

.PHONY: all nif ebin dist deps test test-run test-c run run-demo bench bench-run bench-query bench-query-run bench-broker bench-broker-run bench-scale bench-scale-run fuzz valgrind clean

all: nif ebin

nif: $(NIF_SO)

$(FLAGS_STAMP):
	@mkdir -p $(BUILD)
	@rm -f $(BUILD)/cflags-*
	@touch $@

$(NIF_SO): $(NIF_SRC) $(HDRS) $(FLAGS_STAMP)
	@test -f "$(ERTS_INCLUDE_DIR)/erl_nif.h" || { echo "erl_nif.h not found in '$(ERTS_INCLUDE_DIR)': install erlang-dev or set ERTS_INCLUDE_DIR" >&2; exit 1; }
	@pkg-config --exists $(PKGS) || { echo "pkg-config cannot find $(PKGS): install libpq-dev libjansson-dev" >&2; exit 1; }
	@mkdir -p priv
	$(CC) $(CFLAGS_ALL) -DPGEV_BUILD_ID='"$(BUILD_ID)"' -DPGEV_VERSION='"$(VSN)"' -I"$(ERTS_INCLUDE_DIR)" $(PKG_CFLAGS) -shared -o $@ $(NIF_SRC) $(PKG_LIBS) -ldl $(NIF_LDFLAGS) $(LDFLAGS)

ebin: $(BEAMS) ebin/vmq_pgevents.app

ebin/%.beam: erl_src/%.erl
	@mkdir -p ebin
	$(ERLC) +debug_info -Werror -o ebin $<

ebin/vmq_pgevents.app: erl_src/vmq_pgevents.app.src $(ERL_SRC)
	@mkdir -p ebin
	$(ERL) -noshell -eval '{ok, [{application, A, P}]} = file:consult("erl_src/vmq_pgevents.app.src"), Mods = lists:sort([list_to_atom(filename:basename(F, ".erl")) || F <- filelib:wildcard("erl_src/*.erl")]), ok = file:write_file("$@", io_lib:format("~p.~n", [{application, A, lists:keystore(modules, 1, P, {modules, Mods})}])), halt().'

# ---- the release tarball -------------------------------------------------
# ebin/, priv/ (the NIF, libpq.so.5 and libjansson.so.4 of this machine in
# priv/lib/ with their copyright files, schema.sql, the cuttlefish schema,
# the Prometheus rules) and INSTALL, under one directory vmq_pgevents/.
VSN = $(shell sed -n 's/^ *{vsn, *"\([^"]*\)"}.*/\1/p' erl_src/vmq_pgevents.app.src)
OTP_RELEASE = $(shell $(ERL) -noshell -eval 'io:format("~ts", [erlang:system_info(otp_release)]), halt().' 2>/dev/null)
DIST_NAME = vmq_pgevents-$(VSN)-otp$(OTP_RELEASE)-linux-$(shell uname -m)
DIST := _build/dist

dist: all
	@bash docker/dist.sh "$(DIST)" "$(DIST_NAME)"

# ---- tests ---------------------------------------------------------------

$(BUILD)/test_core: test/c/test_core.c $(CORE_SRC) $(HDRS) $(FLAGS_STAMP)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -Ic_src $(PKG_CFLAGS) -o $@ test/c/test_core.c $(CORE_SRC) $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/fuzz_regress: test/fuzz/fuzz_core.c test/fuzz/regress.c $(CORE_SRC) $(HDRS) $(FLAGS_STAMP)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -DFUZZ_REGRESS -Ic_src $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_core.c test/fuzz/regress.c $(CORE_SRC) $(PKG_LIBS) $(LDFLAGS)

# libFuzzer over the C core (clang and its runtime: apt-get install clang libclang-rt-14-dev)
FUZZ_SECONDS ?= 60
$(BUILD)/fuzz_core: test/fuzz/fuzz_core.c $(CORE_SRC) $(HDRS)
	@mkdir -p $(BUILD)
	clang -g -O1 -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined -Ic_src $(PKG_CFLAGS) -o $@ test/fuzz/fuzz_core.c $(CORE_SRC) $(PKG_LIBS)

fuzz: deps $(BUILD)/fuzz_core
	@mkdir -p $(BUILD)/fuzz_corpus
	@rm -f $(BUILD)/crash-* $(BUILD)/leak-* $(BUILD)/timeout-* $(BUILD)/oom-*
	$(BUILD)/fuzz_core -max_total_time=$(FUZZ_SECONDS) -max_len=4096 -print_final_stats=1 -artifact_prefix=$(BUILD)/ $(BUILD)/fuzz_corpus test/fuzz/corpus; \
	rc=$$?; for f in $(BUILD)/crash-* $(BUILD)/leak-* $(BUILD)/timeout-* $(BUILD)/oom-*; do \
	    [ -f "$$f" ] || continue; cp "$$f" test/fuzz/corpus/; \
	    echo "fuzz: $$f found; copied to test/fuzz/corpus/$$(basename $$f) (commit it with the fix)"; rc=1; done; \
	exit $$rc

# the C tests under valgrind memcheck
valgrind: $(BUILD)/test_core $(BUILD)/fuzz_regress
	valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite $(BUILD)/test_core
	valgrind -q --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite $(BUILD)/fuzz_regress test/fuzz/corpus

# the NIF as another build (for the test that a reload refuses it)
$(BUILD)/other_build/priv/vmq_pgevents_nif.so: $(NIF_SRC) $(HDRS) $(FLAGS_STAMP)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -DPGEV_BUILD_ID='"other"' -I"$(ERTS_INCLUDE_DIR)" $(PKG_CFLAGS) -shared -o $@ $(NIF_SRC) $(PKG_LIBS) -ldl $(LDFLAGS)

$(BUILD)/test_ebin/.built: $(TEST_ERL) $(BEAMS)
	@mkdir -p $(BUILD)/test_ebin
	$(ERLC) +debug_info -I erl_src -o $(BUILD)/test_ebin $(TEST_ERL)
	@touch $@

# test, run and bench first make sure the machine has what they need
# (test/deps.sh), then build in a fresh make so the ERTS path is found.
deps:
	@bash test/deps.sh

test: deps
	@$(MAKE) --no-print-directory test-run

test-run: all dist $(BUILD)/test_core $(BUILD)/fuzz_regress $(BUILD)/test_ebin/.built $(BUILD)/other_build/priv/vmq_pgevents_nif.so
	@bash test/run_tests.sh

test-c: $(BUILD)/test_core
	$(BUILD)/test_core

run: deps
	@$(MAKE) --no-print-directory run-demo

run-demo: all $(BUILD)/test_ebin/.built
	@bash test/run_demo.sh

bench: deps
	@$(MAKE) --no-print-directory bench-run

bench-run: all $(BUILD)/test_ebin/.built $(BUILD)/pg_baseline $(BUILD)/bench_ebin/.built
	@bash bench/run_bench.sh

$(BUILD)/pg_baseline: bench/pg_baseline.c $(CORE_SRC) $(HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -Ic_src $(PKG_CFLAGS) -o $@ bench/pg_baseline.c $(CORE_SRC) $(PKG_LIBS) $(LDFLAGS)

# the real-broker benchmark: VerneMQ + the plugin + PostgreSQL under MQTT load
bench-broker: deps
	@$(MAKE) --no-print-directory bench-broker-run

bench-broker-run: all $(BUILD)/mqtt_load
	@bash bench/run_bench_broker.sh

$(BUILD)/mqtt_load: bench/mqtt_load.c
	@mkdir -p $(BUILD)
	@pkg-config --exists libmosquitto || { echo "libmosquitto not found: apt-get install libmosquitto-dev" >&2; exit 1; }
	$(CC) -std=gnu11 -O2 $(WARN) -pthread $(shell pkg-config --cflags libmosquitto 2>/dev/null) -o $@ bench/mqtt_load.c $(shell pkg-config --libs libmosquitto 2>/dev/null)

# one PostgreSQL against a Citus cluster of three servers on this machine
bench-scale: deps
	@$(MAKE) --no-print-directory bench-scale-run

bench-scale-run: all $(BUILD)/pg_baseline $(BUILD)/mqtt_load $(BUILD)/bench_ebin/.built
	@bash bench/run_bench_scale.sh

# the query benchmark: a table of ROWS generated rows (default 100 million)
bench-query: deps
	@$(MAKE) --no-print-directory bench-query-run

bench-query-run: all $(BUILD)/gen_events
	@bash bench/run_bench_query.sh

$(BUILD)/gen_events: bench/gen_events.c $(CORE_SRC) $(HDRS)
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS_ALL) -Ic_src $(PKG_CFLAGS) -o $@ bench/gen_events.c $(CORE_SRC) $(PKG_LIBS) $(LDFLAGS)

$(BUILD)/bench_ebin/.built: $(wildcard bench/*.erl) $(BEAMS)
	@mkdir -p $(BUILD)/bench_ebin
	$(ERLC) +debug_info -o $(BUILD)/bench_ebin $(wildcard bench/*.erl)
	@touch $@

clean:
	rm -rf ebin $(NIF_SO) _build
