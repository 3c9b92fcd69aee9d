%% @doc The lean hot row (priv/schema.sql's vmq_pgevents_lean_columns and
%% vmq_pgevents_hot_indexes): a partition made by this version has its
%% columns in the order that wastes no bytes on alignment, the key
%% (incarnation, seq, hashtext(node)) and a (client_id) index; a replayed
%% event still collides with its row; a DBA's CHECK on the table is on
%% every new partition; a table made by the previous version (the key
%% (node, incarnation, seq, ts) and (client_id, ts) on each partition)
%% takes the new partitions beside its old ones, and the views answer the
%% same, field by field, as on a table all of the old layout. Real
%% PostgreSQL; the writer's own replays are in the lifecycle tests, which
%% write into partitions of this layout.
-module(vmq_pgevents_86_lean_tests).
-include_lib("eunit/include/eunit.hrl").

sql(Sql) -> pgev_pg:sql(Sql).
scalar(Sql) -> pgev_pg:scalar(Sql).
trim(Sql) -> string:trim(sql(Sql)).

make_table(T) -> vmq_pgevents_85_compress_tests:make_table(T).
drop(T) -> vmq_pgevents_85_compress_tests:drop(T).
%% schema.sql applied again (an upgrade)
make_table_again(T) -> vmq_pgevents_85_compress_tests:apply_schema(T).

%% the partitions of 2030-01-01 (and on, `ahead' days) only
only_2030(T, Ahead) ->
    sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', " ++ integer_to_list(Ahead) ++
        ", 1, '2030-01-01 00:00+00')").

%% a day's partition as the previous version made it
old_partition(T, Day) ->
    P = T ++ "_p" ++ lists:filter(fun(C) -> C =/= $- end, Day),
    sql("CREATE TABLE " ++ P ++ " PARTITION OF " ++ T ++ " FOR VALUES FROM ('" ++ Day ++ " 00:00+00') "
        "TO ('" ++ Day ++ " 00:00+00'::timestamptz + interval '1 day'); "
        "ALTER TABLE " ++ P ++ " ADD PRIMARY KEY (node, incarnation, seq, ts); "
        "CREATE INDEX ON " ++ P ++ " (client_id, ts); "
        "CREATE INDEX ON " ++ P ++ " (conn_id, incarnation, node) INCLUDE (hook, ts, client_id) "
        "WHERE hook IN ('auth_on_register', 'auth_on_register_m5', 'on_register', 'on_register_m5'); "
        "CREATE INDEX ON " ++ P ++ " USING brin (ts); "
        "CREATE INDEX ON " ++ P ++ " (payload_hash, ts) WHERE payload_hash IS NOT NULL "
        "AND hook IN ('on_publish', 'on_publish_m5', 'on_deliver', 'on_deliver_m5')"),
    P.

columns(P) ->
    trim("SELECT string_agg(attname, ',' ORDER BY attnum) FROM pg_attribute "
         "WHERE attrelid = '" ++ P ++ "'::regclass AND attnum > 0 AND NOT attisdropped").

indexes(P) ->
    string:lexemes(sql("SELECT regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '') FROM pg_index "
                       "WHERE indrelid = '" ++ P ++ "'::regclass ORDER BY 1"), "\n").

insert(T, Node, Inc, Seq) ->
    catch sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, client_id) VALUES ('" ++ Node ++ "', " ++
              integer_to_list(Inc) ++ ", " ++ integer_to_list(Seq) ++ ", '2030-01-01 10:00+00', 'on_publish', 'c')").

layout_test_() ->
    {timeout, 60, fun() ->
        T = "lean_l",
        make_table(T),
        only_2030(T, 0),
        P = "lean_l_p20300101",
        ?assertEqual("incarnation,seq,ts,conn_id,payload_hash,peer_port,payload_size,qos,retain,clean_session,"
                     "payload_truncated,node,hook,mountpoint,client_id,username,peer_addr,topic,topics,payload,"
                     "payload_json,properties,reason,extra", columns(P)),
        %% the table keeps its own order (what SELECT * shows)
        ?assertMatch("node,incarnation,seq,ts,hook," ++ _, columns(T)),
        ?assertEqual(["brin (ts)",
                      "btree (client_id)",
                      "btree (conn_id, incarnation, node) INCLUDE (hook, ts, client_id) WHERE (hook = ANY "
                      "(ARRAY['auth_on_register'::text, 'auth_on_register_m5'::text, 'on_register'::text, "
                      "'on_register_m5'::text]))",
                      "btree (incarnation, node, seq) INCLUDE (hook, ts) WHERE (hook = ANY (ARRAY["
                      "'pgevents_start'::text, 'pgevents_stop'::text, 'pgevents_crashed'::text, "
                      "'pgevents_dropped'::text, 'pgevents_running'::text]))",
                      "btree (incarnation, seq, hashtext(node)) WITH (fillfactor='100')",
                      "btree (payload_hash, ts) WHERE ((payload_hash IS NOT NULL) AND (hook = ANY "
                      "(ARRAY['on_publish'::text, 'on_publish_m5'::text, 'on_deliver'::text, 'on_deliver_m5'::text])))"],
                     indexes(P)),
        ?assertEqual("t", trim("SELECT indisunique FROM pg_index WHERE indexrelid = "
                               "'lean_l_p20300101_incarnation_seq_hashtext_idx'::regclass")),
        %% 0.4.0's plugin index (no pgevents_running) is made again, with its name
        Plugin = trim("SELECT indexrelid::regclass FROM pg_index WHERE indrelid = '" ++ P ++ "'::regclass "
                      "AND pg_get_expr(indpred, indrelid) LIKE '%pgevents_start%'"),
        sql("DROP INDEX " ++ Plugin ++ "; CREATE INDEX " ++ Plugin ++ " ON " ++ P ++
            " (incarnation, node, seq) INCLUDE (hook, ts) WHERE hook IN "
            "('pgevents_start', 'pgevents_stop', 'pgevents_crashed', 'pgevents_dropped')"),
        ?assertEqual("1", trim("SELECT vmq_pgevents_plugin_indexes('" ++ T ++ "')")),
        ?assertEqual("0", trim("SELECT vmq_pgevents_plugin_indexes('" ++ T ++ "')")),
        ?assertEqual(Plugin, trim("SELECT indexrelid::regclass FROM pg_index WHERE indrelid = '" ++ P ++ "'::regclass "
                                  "AND pg_get_expr(indpred, indrelid) LIKE '%pgevents_running%'")),
        %% a replay collides; another node's event of the same incarnation
        %% and seq does not
        ?assertEqual("INSERT 0 1", string:trim(insert(T, "n1", 1, 1))),
        {'EXIT', {{command_failed, _, Dup}, _}} = insert(T, "n1", 1, 1),
        ?assertNotEqual(nomatch, binary:match(Dup, <<"duplicate key value violates unique constraint">>)),
        ?assertEqual("INSERT 0 1", string:trim(insert(T, "n2", 1, 1))),
        ?assertEqual(2, scalar("SELECT count(*) FROM " ++ T)),
        %% a DBA's CHECK on the table: on the partitions made afterwards too
        sql("ALTER TABLE " ++ T ++ " ADD CONSTRAINT no_zz CHECK (topic IS DISTINCT FROM 'zz')"),
        sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 1, 0, '2030-01-01 00:00+00')"),
        ?assertEqual("no_zz", trim("SELECT string_agg(conname, ',') FROM pg_constraint "
                                   "WHERE conrelid = 'lean_l_p20300102'::regclass AND contype = 'c'")),
        {'EXIT', {{command_failed, _, Refused}, _}} =
            (catch sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, topic) "
                       "VALUES ('n1', 1, 9, '2030-01-02 10:00+00', 'on_publish', 'zz')")),
        ?assertNotEqual(nomatch, binary:match(Refused, <<"no_zz">>)),
        drop(T)
    end}.

%% The previous version's table: its partitions keep their layout and key
%% (a replay collides there too), the next ones are lean, and the views
%% answer the same as on a table all of the old layout.
%% vmq_pgevents_plugin_indexes on 0.4.0's plugin index on a table itself
%% (partitioned before 0.1.0: one index for every partition; a plain
%% table), names that need quoting
plugin_indexes_test() ->
    Pred = "WHERE hook IN ('pgevents_start', 'pgevents_stop', 'pgevents_crashed', 'pgevents_dropped')",
    sql("DROP TABLE IF EXISTS \"Lean_Parent\", \"Lean_Plain\"; "
        "CREATE TABLE \"Lean_Parent\" (node text, incarnation bigint, seq bigint, ts timestamptz, hook text) "
        "PARTITION BY RANGE (ts); "
        "CREATE TABLE \"Lean_Parent_p1\" PARTITION OF \"Lean_Parent\" FOR VALUES FROM ('2030-01-01') TO ('2030-01-02'); "
        "CREATE TABLE \"Lean_Parent_p2\" PARTITION OF \"Lean_Parent\" FOR VALUES FROM ('2030-01-02') TO ('2030-01-03'); "
        "CREATE INDEX \"Lean_Parent_plugin_idx\" ON \"Lean_Parent\" (incarnation, node, seq) INCLUDE (hook, ts) " ++ Pred ++ "; "
        "CREATE TABLE \"Lean_Plain\" (node text, incarnation bigint, seq bigint, ts timestamptz, hook text); "
        "CREATE INDEX \"Lean_Plain_plugin_idx\" ON \"Lean_Plain\" (incarnation, node, seq) INCLUDE (hook, ts) " ++ Pred),
    ?assertEqual(["1", "0", "1", "0"],
                 [trim("SELECT vmq_pgevents_plugin_indexes('" ++ T ++ "')") || T <- ["Lean_Parent", "Lean_Parent", "Lean_Plain", "Lean_Plain"]]),
    %% every partition and both tables: the new condition, the names kept
    ?assertEqual("Lean_Parent:true,Lean_Parent_p1:true,Lean_Parent_p2:true,Lean_Plain:true",
                 trim("SELECT string_agg(c.relname || ':' || (pg_get_expr(i.indpred, i.indrelid) LIKE '%pgevents_running%'), ',' "
                      "ORDER BY c.relname COLLATE \"C\") FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid "
                      "WHERE c.relname LIKE 'Lean\\_P%'")),
    ?assertEqual("\"Lean_Parent_plugin_idx\",\"Lean_Plain_plugin_idx\"",
                 trim("SELECT string_agg(i.indexrelid::regclass::text, ',' ORDER BY 1) FROM pg_index i "
                      "WHERE i.indrelid IN ('\"Lean_Parent\"'::regclass, '\"Lean_Plain\"'::regclass)")),
    sql("DROP TABLE \"Lean_Parent\", \"Lean_Plain\"").

upgrade_test_() ->
    {timeout, 120, fun() ->
        Old = "lean_old", Mix = "lean_mix",
        make_table(Old),
        old_partition(Old, "2030-01-01"),
        old_partition(Old, "2030-01-02"),
        only_2030(Old, 0),
        make_table(Mix),
        old_partition(Mix, "2030-01-01"),
        only_2030(Mix, 0),
        %% this version's schema.sql again (the plugin at its next
        %% connect), then its upkeep makes the next day
        make_table_again(Mix),
        only_2030(Mix, 1),
        ?assertMatch("node,incarnation,seq,ts," ++ _, columns("lean_mix_p20300101")),
        ?assertMatch("incarnation,seq,ts,conn_id," ++ _, columns("lean_mix_p20300102")),
        ?assertEqual([{"lean_mix_p20300101", "heap"}, {"lean_mix_p20300102", "heap"}],
                     [list_to_tuple(string:lexemes(L, "|")) || L <- string:lexemes(
                         sql("SELECT name, kind FROM vmq_pgevents_partition_list('" ++ Mix ++ "')"), "\n")]),
        vmq_pgevents_85_compress_tests:fill(Old, 40),
        vmq_pgevents_85_compress_tests:fill(Mix, 40),
        N = scalar("SELECT count(*) FROM " ++ Old),
        ?assertEqual(N, scalar("SELECT count(*) FROM " ++ Mix)),
        ?assert(scalar("SELECT count(*) FROM lean_mix_p20300101") > 100),
        ?assert(scalar("SELECT count(*) FROM lean_mix_p20300102") > 100),
        Answers = vmq_pgevents_85_compress_tests:answers(Old),
        [?assertNotEqual({Q, ""}, {Q, A}) || {Q, A} <- Answers],
        ?assertEqual([A || {_, A} <- Answers], [A || {_, A} <- vmq_pgevents_85_compress_tests:answers(Mix)]),
        %% a replay collides in both layouts
        [begin
             {'EXIT', {{command_failed, _, Dup}, _}} =
                 (catch sql("INSERT INTO " ++ Mix ++ " SELECT * FROM " ++ Mix ++ " WHERE tableoid = '" ++ P ++
                            "'::regclass ORDER BY seq LIMIT 1")),
             ?assertNotEqual(nomatch, binary:match(Dup, <<"duplicate key value violates unique constraint">>))
         end || P <- ["lean_mix_p20300101", "lean_mix_p20300102"]],
        ?assertEqual(N, scalar("SELECT count(*) FROM " ++ Mix)),
        drop(Old),
        drop(Mix)
    end}.
