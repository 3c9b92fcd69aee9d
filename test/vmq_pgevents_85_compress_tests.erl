%% @doc Compressed history (priv/schema.sql's vmq_pgevents_compress and
%% the plugin's compress_after): partitions rewritten as Citus columnar
%% storage under a test clock, the views' answers the same before and
%% after, late rows, a rewrite killed with the server and run again, the
%% plugin compressing while it writes, an earlier version's table
%% upgraded, and a server without Citus refused once. Real NIF, real
%% PostgreSQL with the Citus build of ../shared/citus (test/deps.sh).
-module(vmq_pgevents_85_compress_tests).
-include_lib("eunit/include/eunit.hrl").

%% the table, the rows and the questions, for the lean-row tests (86) too
-export([make_table/1, apply_schema/1, drop/1, fill/2, answers/1]).

-define(S, {"", <<"cmp">>}).

sql(Sql) -> pgev_pg:sql(Sql).
scalar(Sql) -> pgev_pg:scalar(Sql).
trim(Sql) -> string:trim(sql(Sql)).

schema_sql() -> pgev_pg:schema_sql().

%% the table T as the plugin makes it (partition = day)
make_table(T) ->
    drop(T),
    apply_schema(T).

apply_schema(T) ->
    sql("SELECT set_config('vmq_pgevents.table', '" ++ T ++ "', false), "
        "set_config('vmq_pgevents.partition', 'day', false); " ++ schema_sql()).

%% ... with the partition of the day Day (2030-...) instead of those made
%% for today: the test's clock is in 2030
make_table_2030(T, Day) ->
    make_table(T),
    without_today(T, Day).

without_today(T, Day) ->
    sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 1, '" ++ Day ++ " 00:00+00')").

drop(T) ->
    sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead CASCADE").

%% kinds of T's partitions, oldest first: [{Name, Kind}]
kinds(T) ->
    [list_to_tuple(string:lexemes(L, "|"))
     || L <- string:lexemes(sql("SELECT name, kind FROM vmq_pgevents_partition_list('" ++ T ++ "')"), "\n")].

%% What devices do over two days from 2030-01-01 00:00 UTC, as rows of
%% node n1, incarnation 1: for each of Clients devices three connections,
%% each a login (1 in 5 refused: auth_on_register alone), a subscribe,
%% three publishes to devices/<c>/t each delivered to a backend, and an
%% offline; seq in ts order.
fill(T, Clients) ->
    sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, "
        "username, peer_addr, peer_port, qos, topic, topics, retain, clean_session, payload, payload_size, "
        "payload_truncated, payload_json, payload_hash) "
        "SELECT 'n1', 1, row_number() OVER (ORDER BY ts, conn_id, k), ts, hook, conn_id, '', client_id, "
        "       username, peer, port, qos, topic, topics, retain, clean, payload, length(payload), false, "
        "       CASE WHEN payload IS NOT NULL THEN convert_from(payload, 'UTF8')::jsonb END, "
        "       CASE WHEN payload IS NOT NULL THEN hashtextextended(encode(payload, 'hex'), 0) END "
        "FROM (SELECT c, n, c * 10 + n AS cid, (c + n) % 5 = 0 AS refused, "
        "             timestamptz '2030-01-01 00:00+00' + make_interval(hours => (c * 7 + n * 13) % 47, mins => c) AS t0 "
        "      FROM generate_series(1, " ++ integer_to_list(Clients) ++ ") c, generate_series(1, 3) n) x "
        "CROSS JOIN LATERAL (VALUES "
        "  (0, t0, 'auth_on_register', cid, 'device-' || c, 'u' || c, ('10.0.0.' || c)::inet, 1000 + n, NULL::smallint, NULL, NULL::jsonb, NULL::boolean, true, NULL::bytea),"
        "  (1, t0 + interval '1 ms', 'on_register', cid, 'device-' || c, 'u' || c, ('10.0.0.' || c)::inet, 1000 + n, NULL, NULL, NULL, NULL, NULL, NULL),"
        "  (2, t0 + interval '2 ms', 'on_subscribe', cid, 'device-' || c, 'u' || c, NULL, NULL, NULL, NULL, jsonb_build_array(jsonb_build_array('devices/' || c || '/cmd', 1)), NULL, NULL, NULL),"
        "  (3, t0 + interval '1 s', 'on_publish', cid, 'device-' || c, 'u' || c, NULL, NULL, 1, 'devices/' || c || '/t', NULL, false, NULL, convert_to('{\"t\":' || (20 + c % 7) || '.5,\"n\":' || n || ',\"i\":1}', 'UTF8')),"
        "  (4, t0 + interval '1.005 s', 'on_deliver', 9999, 'backend', 'b', NULL, NULL, 1, 'devices/' || c || '/t', NULL, false, NULL, convert_to('{\"t\":' || (20 + c % 7) || '.5,\"n\":' || n || ',\"i\":1}', 'UTF8')),"
        "  (5, t0 + interval '2 s', 'on_publish', cid, 'device-' || c, 'u' || c, NULL, NULL, 1, 'devices/' || c || '/t', NULL, false, NULL, convert_to('{\"t\":' || (20 + c % 7) || '.5,\"n\":' || n || ',\"i\":2}', 'UTF8')),"
        "  (6, t0 + interval '2.005 s', 'on_deliver', 9999, 'backend', 'b', NULL, NULL, 1, 'devices/' || c || '/t', NULL, false, NULL, convert_to('{\"t\":' || (20 + c % 7) || '.5,\"n\":' || n || ',\"i\":2}', 'UTF8')),"
        "  (7, t0 + interval '3 s', 'on_publish', cid, 'device-' || c, 'u' || c, NULL, NULL, 0, 'devices/' || c || '/t', NULL, true, NULL, convert_to('{\"t\":' || (20 + c % 7) || '.5,\"n\":' || n || ',\"i\":3}', 'UTF8')),"
        "  (8, t0 + interval '3.005 s', 'on_deliver', 9999, 'backend', 'b', NULL, NULL, 0, 'devices/' || c || '/t', NULL, false, NULL, convert_to('{\"t\":' || (20 + c % 7) || '.5,\"n\":' || n || ',\"i\":3}', 'UTF8')),"
        "  (9, t0 + interval '10 s', 'on_client_offline', cid, 'device-' || c, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL)"
        ") e(k, ts, hook, conn_id, client_id, username, peer, port, qos, topic, topics, retain, clean, payload) "
        "WHERE NOT refused OR k = 0").

%% what the README's questions answer for T, as text, every column
answers(T) ->
    Qs = ["SELECT * FROM " ++ T ++ "_connections ORDER BY node, incarnation, conn_id",
          "SELECT * FROM " ++ T ++ "_failed_logins('-infinity')",
          "SELECT * FROM " ++ T ++ "_failed_logins('2030-01-02 00:00+00')",
          "SELECT * FROM " ++ T ++ "_timeline('device-7')",
          "SELECT * FROM " ++ T ++ "_timeline('device-20', '2030-01-01 12:00+00')",
          "SELECT * FROM " ++ T ++ "_connection('n1', 1, 72)",
          "SELECT * FROM " ++ T ++ "_connection('n1', 1, 203)",
          "SELECT * FROM " ++ T ++ "_journey('device-7', '-infinity', '1 hour')",
          "SELECT * FROM " ++ T ++ "_journey('device-31', '-infinity', '1 hour')",
          "SELECT hook, count(*) FROM " ++ T ++ " WHERE ts >= '2030-01-01 06:00+00' "
          "AND ts < '2030-01-01 20:00+00' GROUP BY hook ORDER BY hook",
          "SELECT count(*), count(DISTINCT (node, incarnation, seq)), sum(seq) FROM " ++ T],
    [{Q, sql(Q)} || Q <- Qs].

%% Under a test clock: a day's partition is compressed once its period
%% ended older_than before `at', the next one only later; the rows, the
%% views and the functions answer the same, field by field; a second run
%% does nothing; rows that come late for a compressed day land there and
%% are found; retention drops compressed partitions like the others.
function_test_() ->
    {timeout, 120, fun() ->
        T = "cmp_fn",
        make_table_2030(T, "2030-01-01"),
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 1, 0, '2030-01-02 12:00+00', '2030-01-01 00:00+00')"),
        fill(T, 40),
        N = scalar("SELECT count(*) FROM " ++ T),
        ?assert(N > 900),
        Before = answers(T),
        [?assertNotEqual({Q, ""}, {Q, A}) || {Q, A} <- Before],    %% each question has an answer
        %% a DBA's CHECK constraint on the table: the compressed copy has it
        %% too (ATTACH needs it; without it every compression failed)
        sql("ALTER TABLE " ++ T ++ " ADD CONSTRAINT cmp_fn_dba CHECK (coalesce(length(topic), 0) < 10000)"),
        %% at 2030-01-03 06:00, one day old: only the 1st's period ended by
        %% then; its columnar part split into tables of at most 30 rows
        %% (2 million unless set), so 16 of them (at most 16)
        Rows1 = scalar("SELECT count(*) FROM cmp_fn_p20300101"),
        ?assert(Rows1 > 16 * 30),
        ?assertEqual("cmp_fn_p20300101|" ++ integer_to_list(Rows1),
                     lists:last(string:lexemes(sql(
                         "SELECT set_config('vmq_pgevents.compress_leaf_rows', '30', false); "
                         "SELECT partition || '|' || rows FROM vmq_pgevents_compress('" ++ T ++
                         "', '1 day', '2030-01-03 06:00+00')"), "\n"))),
        ?assertMatch([{"cmp_fn_p20300101", "compressed"}, {"cmp_fn_p20300102", "heap"} | _], kinds(T)),
        %% its rows: logins on the heap, the rest columnar, in 16 tables
        %% named after it, each client's rows in one of them
        ?assertEqual("heap|columnar|16|cmp_fn_p20300101_c0|cmp_fn_p20300101_cf", trim(
            "SELECT (SELECT amname FROM pg_am a JOIN pg_class c ON c.relam = a.oid WHERE c.relname = 'cmp_fn_p20300101_l') "
            "|| '|' || string_agg(DISTINCT a.amname, ',') || '|' || count(*) || '|' || min(c.relname) || '|' || max(c.relname) "
            "FROM pg_partition_tree('cmp_fn_p20300101_c') t JOIN pg_class c ON c.oid = t.relid "
            "JOIN pg_am a ON a.oid = c.relam WHERE t.isleaf")),
        ?assertEqual("5000", trim("SELECT string_agg(DISTINCT chunk_group_row_limit::text, ',') FROM columnar.options "
                                  "WHERE relation::text LIKE 'cmp\\_fn\\_p20300101\\_c_%'")),
        Leaves = ["cmp_fn_p20300101_c" ++ string:lowercase(integer_to_list(K, 16)) || K <- lists:seq(0, 15)],
        Clients = [string:lexemes(sql("SELECT DISTINCT client_id FROM " ++ L), "\n") || L <- Leaves],
        ?assertEqual(length(lists:append(Clients)), length(lists:usort(lists:append(Clients)))),
        ?assertEqual(scalar("SELECT count(DISTINCT client_id) FROM cmp_fn_p20300101_c"), length(lists:append(Clients))),
        %% ... each stored by quarter of a day (UTC), then client and time
        [?assertEqual({L, "t"}, {L, trim("SELECT array_agg(seq ORDER BY pos) IS NOT DISTINCT FROM array_agg(seq ORDER BY "
                                         "date_bin('6 hours', ts, '2000-01-01 00:00+00'), client_id, ts, seq) "
                                         "FROM (SELECT seq, ts, client_id, row_number() OVER () AS pos FROM " ++ L ++ ") r")})
         || L <- Leaves],
        ?assertEqual(0, scalar("SELECT count(*) FROM cmp_fn_p20300101_c WHERE hook IN "
                               "('auth_on_register', 'on_register')")),
        ?assertEqual("t", trim("SELECT count(*) = 1 FROM pg_constraint WHERE conname = 'cmp_fn_dba' "
                               "AND conrelid = 'cmp_fn_p20300101'::regclass")),
        ?assert(scalar("SELECT count(*) FROM cmp_fn_p20300101_l") > 0),
        ?assertEqual(Before, answers(T)),
        %% a client and a time range: one of the 16 tables read, its chunks
        %% skipped by both (statistics or not)
        sql("ANALYZE " ++ T),
        Plan = sql("EXPLAIN SELECT * FROM " ++ T ++ " WHERE client_id = 'device-7' AND ts >= '2030-01-01 06:00+00' "
                   "AND ts < '2030-01-02 00:00+00'"),
        ?assertMatch({1, _}, {length(string:split(Plan, "ColumnarScan", all)) - 1, Plan}),
        ?assertMatch({{match, _}, _}, {re:run(Plan, "Chunk Group Filters: .*ts >= .*client_id = "), Plan}),
        %% later: the 2nd too, at most one per call
        ?assertEqual("cmp_fn_p20300102", trim("SELECT partition FROM vmq_pgevents_compress('" ++ T ++
                                              "', '1 day', '2030-01-05 00:00+00', 1)")),
        ?assertEqual(Before, answers(T)),
        ?assertEqual("", trim("SELECT partition FROM vmq_pgevents_compress('" ++ T ++
                              "', '1 day', '2030-01-04 00:00+00')")),
        ?assertEqual(N, scalar("SELECT count(*) FROM " ++ T)),
        %% late rows for a compressed day (a journal read back after a long
        %% outage): a login and its publish, once each, found by the views
        sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, username, "
            "peer_addr, peer_port, clean_session) VALUES ('n2', 5, 1, '2030-01-01 08:00+00', 'auth_on_register', 1, '', "
            "'late-1', 'late', '10.1.1.1', 4000, true), ('n2', 5, 2, '2030-01-01 08:00:00.001+00', 'on_register', "
            "1, '', 'late-1', 'late', '10.1.1.1', 4000, NULL)"),
        sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, qos, topic, "
            "payload, payload_size) VALUES ('n2', 5, 3, '2030-01-01 08:00:01+00', 'on_publish', 1, '', 'late-1', 1, "
            "'late/t', '\\x01', 1)"),
        ?assertEqual("2|1", trim("SELECT (SELECT count(*) FROM cmp_fn_p20300101_l WHERE client_id = 'late-1') || '|' || "
                                 "(SELECT count(*) FROM cmp_fn_p20300101_c WHERE client_id = 'late-1')")),
        ?assertEqual("registered|1|3", trim("SELECT login || '|' || publishes || '|' || events FROM " ++ T ++
                                            "_connections WHERE client_id = 'late-1'")),
        ?assertEqual("auth_on_register,on_register,on_publish",
                     trim("SELECT string_agg(hook, ',' ORDER BY seq) FROM " ++ T ++ "_timeline('late-1')")),
        ?assertEqual("3", trim("SELECT count(*) FROM " ++ T ++ "_connection('n2', 5, 1)")),
        %% retention: a compressed partition goes as a whole
        ?assertEqual("{cmp_fn_p20300101}", trim("SELECT dropped FROM vmq_pgevents_partitions('" ++ T ++
                                                "', 'day', 0, 86400, '2030-01-03 00:00+00')")),
        ?assertEqual(0, scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'cmp_fn_p20300101%'")),
        drop(T)
    end}.

%% The server killed with kill -9 in the middle of a rewrite (its copy
%% made, waiting to swap it in while a reader holds the table): the heap
%% partition is there as it was, whole, nothing half made; a rerun
%% compresses it with every row once.
interrupted_test_() ->
    {timeout, 240, fun() ->
        T = "cmp_kill",
        make_table_2030(T, "2030-02-01"),
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 0, '2030-02-01 12:00+00')"),
        sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, conn_id, mountpoint, client_id, qos, topic, "
            "payload, payload_size, payload_hash) SELECT 'n1', 1, g, timestamptz '2030-02-01 00:00+00' + g * interval '100 ms', "
            "'on_publish', g % 1000, '', 'device-' || (g % 1000), 1, 'devices/' || (g % 1000) || '/t', "
            "convert_to('{\"seq\":' || g || '}', 'UTF8'), 12, g FROM generate_series(1, 400000) g"),
        Sum = trim("SELECT count(*) || '|' || sum(seq) || '|' || sum(length(payload)) FROM " ++ T),
        Self = self(),
        %% a reader that keeps the table: the rewrite makes its copy, then
        %% waits for its moment to swap it in
        spawn(fun() -> catch sql("BEGIN; LOCK TABLE " ++ T ++ " IN ACCESS SHARE MODE; SELECT pg_sleep(120)") end),
        ?assert(wait_until(fun() -> waiting("AccessShareLock", "true") > 0 end, 200)),
        spawn(fun() ->
                  R = (catch sql("SELECT * FROM vmq_pgevents_compress('" ++ T ++ "', '1 day', '2030-02-03 00:00+00')")),
                  Self ! {compress_done, R}
              end),
        ?assert(wait_until(fun() -> waiting("AccessExclusiveLock", "false") > 0 end, 2400)),
        pgev_pg:kill(),
        receive
            {compress_done, R} -> ?assertMatch({'EXIT', {{command_failed, _, _}, _}}, R)
        after 30000 -> error(compress_call_never_ended)
        end,
        pgev_pg:start(),
        ?assertMatch([{"cmp_kill_p20300201", "heap"}], kinds(T)),
        ?assertEqual(Sum, trim("SELECT count(*) || '|' || sum(seq) || '|' || sum(length(payload)) FROM " ++ T)),
        ?assertEqual(0, scalar("SELECT count(*) FROM pg_class WHERE relname LIKE 'vmq_pgev_c%'")),
        ?assertEqual("cmp_kill_p20300201|400000",
                     trim("SELECT partition || '|' || rows FROM vmq_pgevents_compress('" ++ T ++
                          "', '1 day', '2030-02-03 00:00+00')")),
        ?assertMatch([{"cmp_kill_p20300201", "compressed"}], kinds(T)),
        ?assertEqual(Sum, trim("SELECT count(*) || '|' || sum(seq) || '|' || sum(length(payload)) FROM " ++ T)),
        drop(T)
    end}.

%% locks of mode Mode on cmp_kill held (Granted "true") or waited for
waiting(Mode, Granted) ->
    scalar("SELECT count(*) FROM pg_locks WHERE relation = 'cmp_kill'::regclass AND mode = '" ++ Mode ++
           "' AND granted = " ++ Granted).

wait_until(_, 0) -> false;
wait_until(F, N) ->
    case F() of
        true -> true;
        false -> timer:sleep(25), wait_until(F, N - 1)
    end.

publish(From, To) ->
    [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 1, [<<"cmp">>, <<"t">>], integer_to_binary(I), false)
     || I <- lists:seq(From, To)],
    ok.

%% The plugin with compress_after: a partition of three days ago is
%% compressed by its own thread (counted, logged) while events go on
%% being written into today's. Then today's partition is compressed under
%% the plugin's feet (a test clock two days ahead): what it writes next
%% lands in compressed storage, and a server killed in the middle of that
%% stream costs no event and doubles none (the resume point is read from
%% the compressed partition).
plugin_test_() ->
    {timeout, 240, fun() ->
        T = "cmp_plugin",
        make_table(T),
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 0, now(), now() - interval '3 days')"),
        sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, client_id) SELECT 'old', 1, g, "
            "date_trunc('day', now() - interval '3 days') + g * interval '1 s', 'on_client_offline', 'c' || g "
            "FROM generate_series(1, 5000) g"),
        Old = trim("SELECT name FROM vmq_pgevents_partition_list('" ++ T ++ "') ORDER BY lo LIMIT 1"),
        pgev_app:capture_logs(),
        pgev_app:start(T, [{partition, day}, {compress_after, "1d"}, {compress_every_ms, 200}]),
        try
            publish(1, 2000),
            ?assert(wait_until(fun() -> proplists:get_value(Old, kinds(T)) =:= "compressed" end, 600)),
            ?assert(maps:get(partitions_compressed, vmq_pgevents:status()) >= 1),
            publish(2001, 4000),
            pgev_app:flush(),
            ?assertEqual("compressed", proplists:get_value(Old, kinds(T))),
            ?assertEqual(5000, scalar("SELECT count(*) FROM " ++ T ++ " WHERE node = 'old'")),
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_ | _], [L || L <- Logs, binary:match(L, <<"compressed partition ", (list_to_binary(Old))/binary>>) =/= nomatch]),
            #{compress_refused := false, compress_error := <<>>} = vmq_pgevents:status(),
            %% today's partition compressed as the plugin writes into it
            %% (the plugin's own compressor may hold the table's turn for a moment)
            ?assert(wait_until(fun() -> trim("SELECT count(*) FROM vmq_pgevents_compress('" ++ T ++
                                             "', '0', now() + interval '2 days')") =/= "0" end, 200)),
            Today = trim("SELECT name FROM vmq_pgevents_partition_list('" ++ T ++ "') WHERE now() >= lo AND now() < hi"),
            ?assertEqual("compressed", proplists:get_value(Today, kinds(T))),
            %% the publisher kills the server itself when half of its
            %% 36,000 events were sent, and starts it again 9,000 later
            Writer = spawn_link(fun() ->
                                        publish(4001, 22000),
                                        pgev_pg:kill(),
                                        publish(22001, 31000),
                                        pgev_pg:start(),
                                        publish(31001, 40000)
                                end),
            wait_dead(Writer),
            pgev_app:flush(),
            Inc = integer_to_list(maps:get(incarnation, vmq_pgevents:status())),
            %% (the 40,000 publishes after the start's pgevents_start row)
            ?assertEqual("40001|40001|40001", trim(
                "SELECT count(*) || '|' || count(DISTINCT seq) || '|' || (max(seq) - min(seq) + 1) FROM " ++ T ++
                " WHERE incarnation = " ++ Inc)),
            %% in order: the K-th event published has the K-th seq
            ?assertEqual(0, scalar("SELECT count(*) FROM " ++ T ++ " t, (SELECT min(seq) AS lo FROM " ++ T ++
                                   " WHERE incarnation = " ++ Inc ++ " AND hook = 'on_publish') m "
                                   "WHERE incarnation = " ++ Inc ++ " AND hook = 'on_publish'"
                                   " AND payload IS DISTINCT FROM convert_to((seq - lo + 1)::text, 'UTF8')")),
            ?assert(scalar("SELECT count(*) FROM " ++ Today ++ "_c WHERE incarnation = " ++ Inc) > 30000)
        after
            _ = pgev_app:captured_logs(),
            pgev_pg:start(),
            catch pgev_app:stop(),
            drop(T)
        end
    end}.

wait_dead(Pid) ->
    Ref = monitor(process, Pid),
    receive {'DOWN', Ref, _, _, _} -> ok after 120000 -> error(publisher_stuck) end.

%% A table partitioned by an earlier version (key and indexes on the table
%% itself): compressing it is refused with what to run; that upgrade keeps
%% every partition's indexes as its own, new partitions get theirs, and
%% then compression works and the answers stay the same.
upgrade_test_() ->
    {timeout, 120, fun() ->
        T = "cmp_up",
        drop(T),
        make_table("cmp_up_like"),
        sql("CREATE TABLE " ++ T ++ " (LIKE cmp_up_like, PRIMARY KEY (node, incarnation, seq, ts)) PARTITION BY RANGE (ts); "
            "CREATE INDEX " ++ T ++ "_client_ts_idx ON " ++ T ++ " (client_id, ts); "
            "CREATE INDEX " ++ T ++ "_ts_idx ON " ++ T ++ " USING brin (ts); "
            "CREATE INDEX " ++ T ++ "_login_idx ON " ++ T ++ " (conn_id, incarnation, node) INCLUDE (hook, ts, client_id) "
            "WHERE hook IN ('auth_on_register', 'auth_on_register_m5', 'on_register', 'on_register_m5'); "
            "CREATE INDEX " ++ T ++ "_payload_hash_idx ON " ++ T ++ " (payload_hash, ts) WHERE payload_hash IS NOT NULL "
            "AND hook IN ('on_publish', 'on_publish_m5', 'on_deliver', 'on_deliver_m5')"),
        drop("cmp_up_like"),
        %% the plugin's schema.sql at connect leaves it as it is
        apply_schema(T),
        without_today(T, "2030-01-01"),
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 1, 0, '2030-01-02 12:00+00', '2030-01-01 00:00+00')"),
        fill(T, 40),
        Before = answers(T),
        {'EXIT', {{command_failed, _, Refusal}, _}} =
            (catch sql("SELECT * FROM vmq_pgevents_compress('" ++ T ++ "', '1 day', '2030-01-05 00:00+00')")),
        ?assertNotEqual(nomatch, binary:match(Refusal, <<"vmq_pgevents_split_indexes('cmp_up')">>)),
        Parts = length(kinds(T)),
        ?assertEqual(integer_to_list(Parts), trim("SELECT vmq_pgevents_split_indexes('" ++ T ++ "')")),
        ?assertEqual(0, scalar("SELECT count(*) FROM pg_index WHERE indrelid = '" ++ T ++ "'::regclass")),
        %% every partition keeps its key and five indexes
        ?assertEqual(Parts, scalar("SELECT count(*) FROM vmq_pgevents_partition_list('" ++ T ++ "') l WHERE "
                                   "(SELECT count(*) FROM pg_index WHERE indrelid = l.name::regclass) = 6 AND "
                                   "EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = l.name::regclass AND contype = 'p')")),
        ?assertEqual(Before, answers(T)),
        %% a partition made now has its own
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 0, 0, '2030-01-06 12:00+00')"),
        ?assertEqual(6, scalar("SELECT count(*) FROM pg_index WHERE indrelid = 'cmp_up_p20300106'::regclass")),
        ?assertEqual("cmp_up_p20300101 cmp_up_p20300102",
                     trim("SELECT string_agg(partition, ' ' ORDER BY partition) FROM vmq_pgevents_compress('" ++ T ++
                          "', '1 day', '2030-01-04 00:00+00')")),
        ?assertEqual(Before, answers(T)),
        drop(T)
    end}.

%% A server without Citus: compress_after is refused once, with the log
%% line and the status naming what is missing; events are written as
%% without the setting. The SQL function says the same.
no_citus_test_() ->
    {timeout, 180, fun() ->
        Dir = pgev_pg:dir() ++ "_nocitus",
        os:cmd("rm -rf '" ++ Dir ++ "'"),
        pgev_pg:pg("init", [Dir, "fast", "nocitus"]),
        pgev_pg:pg("start", [Dir]),
        T = "cmp_none",
        Dsn = string:trim(pgev_pg:pg("dsn", [Dir])),
        pgev_app:capture_logs(),
        Compressed0 = maps:get(partitions_compressed, vmq_pgevents:status()),
        pgev_app:start(T, [{dsn, Dsn}, {partition, day}, {compress_after, "7d"}, {compress_every_ms, 100}]),
        try
            ?assert(wait_until(fun() -> maps:get(compress_refused, vmq_pgevents:status()) end, 400)),
            #{compress_error := Err} = vmq_pgevents:status(),
            ?assertNotEqual(nomatch, binary:match(Err, <<"no columnar storage: install Citus">>)),
            publish(1, 100),
            pgev_app:flush(),
            timer:sleep(500),   %% five more looks, had it not given up
            ?assertEqual("100", string:trim(pgev_pg:sql(Dir, "SELECT count(*) FROM " ++ T ++
                                                        " WHERE hook = 'on_publish'"))),
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"compress_after = 604800 s is refused">>) =/= nomatch]),
            ?assertEqual(Compressed0, maps:get(partitions_compressed, vmq_pgevents:status())),
            {'EXIT', {{command_failed, _, Out}, _}} =
                (catch pgev_pg:sql(Dir, "SELECT * FROM vmq_pgevents_compress('" ++ T ++ "', '1 day')")),
            ?assertNotEqual(nomatch, binary:match(Out, <<"no columnar storage: install Citus">>))
        after
            _ = pgev_app:captured_logs(),
            catch pgev_app:stop(),
            pgev_pg:pg("stop", [Dir]),
            os:cmd("rm -rf '" ++ Dir ++ "'")
        end
    end}.

%% partition = none cannot be compressed: a clear configuration error
config_test() ->
    _ = application:load(vmq_pgevents),
    application:set_env(vmq_pgevents, partition, none),
    application:set_env(vmq_pgevents, compress_after, "7d"),
    try
        ?assertMatch({error, <<"compress_after needs partition = day or hour", _/binary>>},
                     vmq_pgevents_config:read())
    after
        application:unset_env(vmq_pgevents, partition),
        application:unset_env(vmq_pgevents, compress_after)
    end.
