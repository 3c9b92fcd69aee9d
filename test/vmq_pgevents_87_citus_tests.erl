%% @doc The plugin writing into a Citus cluster (docs/scale-out.md,
%% a Citus cluster): a coordinator and two workers, three real PostgreSQL servers
%% on loopback with the Citus build of ../shared/citus (test/pgev_citus).
%% The schema distributed on client_id (distribute = auto), its key and
%% partitions, retention; a local table refused with distribute = on and
%% upgraded by vmq_pgevents_distribute, the views' answers the same before
%% and after; the recorded traces row by row and view by view; a stream
%% spread over both workers, a client's questions on one shard; tenants
%% (readers limited by row-level security, the plugin as a writer role,
%% a client erased: vmq_pgevents_88_access_tests); and the
%% faults: a worker frozen (SIGSTOP), a worker stopped, the coordinator
%% restarted, during a stream: every event once, nothing dead-lettered,
%% each outage logged once down and once up.
%%
%% While these tests run, VMQ_PGEVENTS_TEST_PG names the coordinator, so
%% that pgev_pg and pgev_app (and the trace and compress tests' helpers)
%% work on it.
-module(vmq_pgevents_87_citus_tests).
-include_lib("eunit/include/eunit.hrl").

sql(Sql) -> pgev_pg:sql(Sql).
scalar(Sql) -> pgev_pg:scalar(Sql).
trim(Sql) -> string:trim(sql(Sql)).

cluster_test_() ->
    {setup, fun setup/0, fun cleanup/1,
     fun({C, Main}) ->
             [{"schema distributed", {timeout, 120, fun() -> schema(C, Main) end}},
              {"a local table upgraded", {timeout, 120, fun() -> upgrade(C) end}}]
             ++ [{"trace " ++ S ++ " on the cluster",
                  {timeout, 120, fun() -> vmq_pgevents_30_trace_tests:scenario(S, distributed) end}}
                 || S <- ["a", "b", "c", "d", "e"]]
             ++ [{"tenants: readers limited to mountpoints", {timeout, 120,
                  fun() -> vmq_pgevents_88_access_tests:readers(distributed) end}},
                 {"tenants: the plugin as a writer role", {timeout, 180,
                  fun() -> vmq_pgevents_88_access_tests:writer(distributed) end}},
                 {"tenants: a client erased", {timeout, 120,
                  fun() -> vmq_pgevents_88_access_tests:forget(distributed) end}}]
             ++ [{"a stream over both workers", {timeout, 120, fun() -> spread(C) end}},
                 {"faults: worker frozen, worker stopped, coordinator restarted",
                  {timeout, 300, fun() -> faults(C) end}}]
     end}.

setup() ->
    Main = pgev_pg:dir(),
    C = pgev_citus:start(),
    os:putenv("VMQ_PGEVENTS_TEST_PG", pgev_citus:dir(C, coordinator)),
    {C, Main}.

cleanup({C, Main}) ->
    catch pgev_app:stop(),
    os:putenv("VMQ_PGEVENTS_TEST_PG", Main),
    pgev_citus:stop(C).

apply_schema(T, Distribute) ->
    sql("SELECT set_config('vmq_pgevents.table', '" ++ T ++ "', false), "
        "set_config('vmq_pgevents.partition', 'day', false), "
        "set_config('vmq_pgevents.distribute', '" ++ Distribute ++ "', false); " ++ pgev_pg:schema_sql()).

drop(T) -> sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE").

%% how Citus keeps a table: "h" distributed (hash), "n" reference, "" local
method(T) ->
    trim("SELECT coalesce((SELECT partmethod::text FROM pg_dist_partition "
         "WHERE logicalrelid = to_regclass('" ++ T ++ "')), '')").

partitions(T) ->
    string:lexemes(sql("SELECT name FROM vmq_pgevents_partition_list('" ++ T ++ "')"), "\n").

%% the error text of a statement that must fail
error_of(Sql) ->
    try sql(Sql) of
        Out -> error({no_error, Out})
    catch error:{command_failed, _, Msg} -> binary_to_list(Msg)
    end.

contains(Text, Part) -> string:find(Text, Part) =/= nomatch.

%% rows of T on each worker (per TCP port), from the workers' own shards
per_worker(C, T) ->
    Lines = string:lexemes(sql("SELECT s.nodeport, sum(r.result::bigint) "
                               "FROM run_command_on_shards('" ++ T ++ "', 'SELECT count(*) FROM %s') r "
                               "JOIN citus_shards s USING (shardid) GROUP BY 1 ORDER BY 1"), "\n"),
    Got = maps:from_list([begin [P, N] = string:lexemes(L, "|"), {list_to_integer(P), list_to_integer(N)} end
                          || L <- Lines]),
    [maps:get(pgev_citus:port(C, W), Got, 0) || W <- [w1, w2]].

%% The events table made by schema.sql on a coordinator with workers
%% (distribute = auto): distributed on client_id, each partition too, in
%% the same colocation, with client_id in its key; <t>_dead a reference
%% table; shards on both workers. Applied again, nothing changes.
%% distribute = off makes a local table, which distribute = on refuses
%% with the steps; a server without Citus refuses distribute = on;
%% compress refuses a distributed table; retention drops distributed
%% partitions.
schema(_C, Main) ->
    T = "cit_sch",
    drop(T),
    apply_schema(T, "auto"),
    ?assertEqual("h", method(T)),
    ?assertEqual("client_id", trim("SELECT column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition "
                                   "WHERE logicalrelid = '" ++ T ++ "'::regclass")),
    Parts = partitions(T),
    ?assertEqual(3, length(Parts)),     %% today and two ahead
    [begin
         ?assertEqual({P, "h"}, {P, method(P)}),
         ?assertEqual({P, 1}, {P, scalar("SELECT count(*) FROM pg_index x WHERE x.indrelid = '" ++ P ++
                                         "'::regclass AND x.indisunique AND pg_get_indexdef(x.indexrelid) "
                                         "LIKE '%(incarnation, seq, hashtext(node), client_id)%'")})
     end || P <- Parts],
    ?assertEqual(1, scalar("SELECT count(DISTINCT colocationid) FROM pg_dist_partition "
                           "WHERE logicalrelid::text LIKE '" ++ T ++ "%' AND partmethod = 'h'")),
    ?assertEqual("n", method(T ++ "_dead")),
    ?assertEqual(2, scalar("SELECT count(DISTINCT nodeport) FROM citus_shards WHERE table_name = '" ++ T ++
                           "'::regclass")),
    %% as a DBA applies it (README): psql -f, each statement on its own
    F = "cit_dba",
    drop(F),
    %% (not with the sanitizer runtime that SANITIZE=1 preloads into the VM)
    ?assertEqual("", string:trim(os:cmd("env -u LD_PRELOAD PGOPTIONS='-c vmq_pgevents.table=" ++ F ++
                                        " -c client_min_messages=warning' bash test/pg.sh psql " ++ pgev_pg:dir() ++
                                        " -q -v ON_ERROR_STOP=1 -f priv/schema.sql 2>&1"))),
    ?assertEqual("h", method(F)),
    ?assertEqual("n", method(F ++ "_dead")),
    drop(F),
    Shards = scalar("SELECT count(*) FROM pg_dist_shard"),
    apply_schema(T, "auto"),
    apply_schema(T, "on"),
    ?assertEqual(Shards, scalar("SELECT count(*) FROM pg_dist_shard")),

    L = "cit_loc",
    drop(L),
    apply_schema(L, "off"),
    ?assertEqual("", method(L)),
    ?assertEqual("", method(L ++ "_dead")),
    apply_schema(L, "auto"),            %% an existing local table stays local
    ?assertEqual("", method(L)),
    E1 = error_of("SELECT set_config('vmq_pgevents.table', '" ++ L ++ "', false), "
                  "set_config('vmq_pgevents.distribute', 'on', false); " ++ pgev_pg:schema_sql()),
    ?assert(contains(E1, "distribute = on, but cit_loc is a local table")),
    ?assert(contains(E1, "SELECT vmq_pgevents_distribute('cit_loc');")),
    %% PostgreSQL without Citus (the suite's own server)
    E2 = error_of_on(Main, "SELECT set_config('vmq_pgevents.table', 'cit_none', false), "
                           "set_config('vmq_pgevents.distribute', 'on', false); " ++ pgev_pg:schema_sql()),
    ?assert(contains(E2, "distribute = on, but this database has no Citus")),
    ?assertEqual("", trim_on(Main, "SELECT coalesce(to_regclass('cit_none')::text, '')")),
    E3 = error_of("SELECT * FROM vmq_pgevents_compress('" ++ T ++ "', '1 day')"),
    ?assert(contains(E3, "cit_sch is a Citus distributed table")),

    %% retention under a test clock: the partitions of 2030-01-01 to 05,
    %% then those that ended two days before 2030-01-05 12:00 dropped
    sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 0, '2030-01-05 12:00+00', '2030-01-01 00:00+00')"),
    ?assertEqual("h", method(T ++ "_p20300101")),
    Dropped = trim("SELECT array_to_string(dropped, ' ') FROM vmq_pgevents_partitions('" ++ T ++
                   "', 'day', 0, 172800, '2030-01-05 12:00+00')"),
    ?assert(contains(Dropped, "cit_sch_p20300101")),
    ?assert(contains(Dropped, "cit_sch_p20300102")),
    ?assertNot(contains(Dropped, "cit_sch_p20300103")),
    ?assertEqual(["cit_sch_p20300103", "cit_sch_p20300104", "cit_sch_p20300105"], partitions(T)),
    ?assertEqual(0, scalar("SELECT count(*) FROM pg_dist_partition WHERE logicalrelid::text IN "
                           "('cit_sch_p20300101', 'cit_sch_p20300102')")),
    drop(T),
    drop(L).

error_of_on(Dir, Sql) ->
    try pgev_pg:sql(Dir, Sql) of
        Out -> error({no_error, Out})
    catch error:{command_failed, _, Msg} -> binary_to_list(Msg)
    end.

trim_on(Dir, Sql) -> string:trim(pgev_pg:sql(Dir, Sql)).

%% A local table with two days of rows (and one with no client_id, which
%% no distributed table takes), distributed by vmq_pgevents_distribute:
%% every row on the workers, both of them, the one without client_id with
%% client_id ''; the coordinator's local copy emptied; the views and
%% functions answer exactly as before, column by column; then
%% distribute = on takes the table.
upgrade(C) ->
    T = "cit_up",
    drop(T),
    apply_schema(T, "off"),
    sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 1, 0, '2030-01-02 12:00+00', '2030-01-01 00:00+00')"),
    vmq_pgevents_85_compress_tests:fill(T, 40),
    sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook) VALUES ('n1', 2, 1, '2030-01-01 05:00+00', "
        "'on_client_offline')"),
    N = scalar("SELECT count(*) FROM " ++ T),
    ?assert(N > 900),
    Before = vmq_pgevents_85_compress_tests:answers(T),
    [?assertNotEqual({Q, ""}, {Q, A}) || {Q, A} <- Before],
    ?assertEqual(N, scalar("SELECT vmq_pgevents_distribute('" ++ T ++ "')")),
    ?assertEqual("h", method(T)),
    ?assertEqual("n", method(T ++ "_dead")),
    [?assertEqual({P, "h"}, {P, method(P)}) || P <- partitions(T)],
    ?assertEqual(N, scalar("SELECT count(*) FROM " ++ T)),
    [W1, W2] = per_worker(C, T),
    ?assertEqual(N, W1 + W2),
    ?assert(W1 > 0 andalso W2 > 0),
    %% the row without a client id: '' (as the plugin writes it)
    ?assertEqual("2|1|", trim("SELECT incarnation, seq, client_id FROM " ++ T ++ " WHERE incarnation = 2")),
    ?assertEqual(0, scalar("SELECT count(*) FROM " ++ T ++ "_dead")),
    ?assertEqual(0, scalar("SELECT sum(pg_relation_size(c.oid)) FROM pg_class c "
                           "WHERE c.relname LIKE 'cit_up_p2030%' AND c.relkind = 'r'")),
    After = vmq_pgevents_85_compress_tests:answers(T),
    [?assertEqual({Q, A}, {Q, B}) || {{Q, A}, {Q, B}} <- lists:zip(Before, After)],
    apply_schema(T, "on"),
    ?assertEqual(0, scalar("SELECT vmq_pgevents_distribute('" ++ T ++ "')")),   %% done already
    drop(T).

%% The plugin (distribute = auto) writing 20 clients' streams: every
%% event once, the rows on both workers; a client's timeline and a
%% connection's client are questions for one shard (one task).
spread(C) ->
    T = "cit_stream",
    drop(T),
    pgev_app:start(T, []),
    Before = vmq_pgevents:status(),
    try
        N = vmq_pgevents_45_journal_files_tests:stream(20, 500, 2000),
        ?assertEqual(20000, N),
        pgev_app:flush(),
        %% every event sent, once
        ok = pgev_pg:exactly_once(T, N),
        ?assertEqual("h", method(T)),
        [W1, W2] = per_worker(C, T),
        %% (and the plugin's own rows, client_id '' on a distributed table)
        Own = scalar("SELECT count(*) FROM " ++ T ++ " WHERE hook LIKE 'pgevents\\_%'"),
        ?assertEqual(N + Own, W1 + W2),
        ?assert(W1 > 0 andalso W2 > 0),
        ?assertEqual(20, scalar("SELECT count(DISTINCT client_id) FROM " ++ T ++ " WHERE client_id <> ''")),
        %% the completeness over the distributed table: nothing missing
        %% since this test's first row (the VM's incarnation is older)
        ?assertEqual([#{<<"ended">> => <<"running">>, <<"rows_written">> => N + Own, <<"missing">> => 0}],
                     pgev_pg:rows("SELECT ended, rows_written, missing FROM " ++ T ++ "_completeness("
                                  "(SELECT min(ts) FROM " ++ T ++ "))")),
        Plan = sql("EXPLAIN (COSTS OFF) SELECT * FROM " ++ T ++ " WHERE client_id = 'frozen-7' "
                   "ORDER BY ts, node, incarnation, seq"),
        ?assert(contains(Plan, "Task Count: 1")),
        ?assertEqual(scalar("SELECT count(*) FROM " ++ T ++ " WHERE client_id = 'frozen-7'"),
                     scalar("SELECT count(*) FROM " ++ T ++ "_timeline('frozen-7')")),
        no_drops(Before)
    after
        pgev_app:stop()
    end,
    drop(T).

%% nothing dropped or dead-lettered since Before (the counters are the
%% NIF's, across the suite's tests)
no_drops(Before) ->
    After = vmq_pgevents:status(),
    [?assertEqual({K, 0}, {K, maps:get(K, After) - maps:get(K, Before)}) || K <- [dropped, dead_lettered]].

%% Faults during a stream of 250,000 events (5,000 events/s, 50 s) into
%% the cluster, pg_timeout_ms = 3000: worker 1 frozen (SIGSTOP of the
%% server and its backends) for 10 s; worker 2 stopped for 6 s; the
%% coordinator stopped and started again; all while the stream runs. Events wait in the journal and are written once
%% each, in order, when the cluster is whole again; nothing dead-lettered;
%% no prepared transaction left on a worker; each outage logged once as
%% down and once as up (two faults with no batch written between them are
%% one outage).
faults(C) ->
    T = "cit_faults",
    drop(T),
    pgev_app:start(T, [{pg_timeout_ms, 3000}]),
    Before = vmq_pgevents:status(),
    pgev_app:capture_logs(),
    Self = self(),
    try
        Sent = counters:new(1, [write_concurrency]),
        Total = 20 * 250 * 50,
        Pub = spawn_link(fun() -> Total = vmq_pgevents_45_journal_files_tests:stream(20, 250, 50000, Sent),
                                  Self ! published end),
        W1 = pgev_citus:dir(C, w1),
        W2 = pgev_citus:dir(C, w2),
        timer:sleep(4000),
        pgev_pg:pg("freeze", [W1]),
        timer:sleep(10000),
        pgev_pg:pg("thaw", [W1]),
        timer:sleep(6000),
        pgev_pg:pg("stop", [W2]),
        timer:sleep(6000),
        pgev_pg:pg("start", [W2]),
        timer:sleep(6000),
        pgev_pg:stop(),                        %% the coordinator
        timer:sleep(4000),
        pgev_pg:start(),
        %% the last fault ended while the stream still ran (a paced stream
        %% of a fixed count: on a slow machine it only takes longer)
        ?assert(counters:get(Sent, 1) < Total),
        receive published -> ok after 120000 -> error({publisher_stuck, Pub}) end,
        pgev_app:flush(),
        Logs = pgev_app:captured_logs(),
        %% every event sent, once, in order
        N = Total,
        ok = pgev_pg:exactly_once(T, N),
        ok = pgev_pg:in_order(T),
        ?assertEqual(0, scalar("SELECT count(*) FROM " ++ T ++ "_dead")),
        no_drops(Before),
        %% no prepared transaction left on a worker (nothing recovered first)
        [?assertEqual({W, "0"}, {W, string:trim(pgev_pg:sql(pgev_citus:dir(C, W),
                                                            "SELECT count(*) FROM pg_prepared_xacts"))})
         || W <- [w1, w2]],
        Down = [Line || Line <- Logs, contains(binary_to_list(Line), "postgresql unavailable")],
        Up = [Line || Line <- Logs, contains(binary_to_list(Line), "postgresql available again")],
        io:format(user, "~n    cluster faults: ~b events; logged down ~b, up ~b~n",
                  [N, length(Down), length(Up)]),
        %% three faults, each logged once as down and once as up; when the
        %% writer gets no batch through between two of them (a slow
        %% machine, the sanitizer build), they are one outage to it
        ?assertEqual(length(Down), length(Up)),
        ?assert(lists:member(length(Down), [2, 3]))
    after
        [catch pgev_pg:pg("thaw", [pgev_citus:dir(C, W)]) || W <- [w1, w2]],
        catch pgev_pg:pg("start", [pgev_citus:dir(C, w2)]),
        catch pgev_pg:start(),
        pgev_app:stop()
    end,
    drop(T).
