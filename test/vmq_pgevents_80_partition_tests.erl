%% @doc Time partitions and retention (priv/schema.sql's
%% vmq_pgevents_partitions and the writer's upkeep): partitions made ahead,
%% old ones dropped under a test clock, rows that find no partition, the
%% upgrade from a plain table. Real NIF, real PostgreSQL.
-module(vmq_pgevents_80_partition_tests).
-include_lib("eunit/include/eunit.hrl").

%% the rows of hooks' events, not the plugin's own (pgevents_start, ...)
-define(HOOKS, " WHERE hook NOT LIKE 'pgevents\\_%'").

-define(S, {"", <<"part">>}).

publish(N) ->
    [ok = vmq_pgevents:on_publish(<<"u">>, ?S, 0, [<<"p">>], integer_to_binary(I), false)
     || I <- lists:seq(1, N)],
    ok.

scalar(Sql) -> pgev_pg:scalar(Sql).

%% the partitions of T, by name
partitions(T) ->
    string:lexemes(pgev_pg:sql("SELECT string_agg(c.relname, ' ' ORDER BY c.relname) FROM pg_inherits i "
                               "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = '" ++ T ++ "'::regclass"),
                   " \n").

%% T made afresh by schema.sql, partitioned by Period (day or hour)
new_table(T, Period) ->
    drop(T),
    pgev_pg:sql("SELECT set_config('vmq_pgevents.table', '" ++ T ++ "', false), "
                "set_config('vmq_pgevents.partition', '" ++ Period ++ "', false); " ++ schema_sql()).

drop(T) ->
    pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ ", " ++ T ++ "_dead, " ++ T ++ "_old, " ++ T ++ "_old_dead CASCADE").

%% The maintenance function under a test clock: from `at' through two
%% periods ahead; retention drops what ended keep_seconds before `at'.
function_test_() ->
    {timeout, 60, fun() ->
        T = "part_fn",
        new_table(T, "hour"),
        Now = partitions(T),
        ?assertEqual(3, length(Now)),                       %% this hour and two ahead
        %% at 10:30, with rows from 08:10: 08 through 12
        ?assertEqual("5|{}", string:trim(pgev_pg:sql(
            "SELECT created, dropped FROM vmq_pgevents_partitions('" ++ T ++ "', 'hour', 2, 0, "
            "'2030-01-01 10:30+00', '2030-01-01 08:10+00')"))),
        ?assert(lists:member("part_fn_p2030010108", partitions(T))),
        ?assert(lists:member("part_fn_p2030010112", partitions(T))),
        ?assertNot(lists:member("part_fn_p2030010113", partitions(T))),
        %% at 15:00 with two hours kept: everything that ended by 13:00 goes
        Dropped = string:trim(pgev_pg:sql(
            "SELECT array_to_string(dropped, ' ') FROM vmq_pgevents_partitions('" ++ T ++ "', 'hour', 2, 7200, "
            "'2030-01-01 15:00+00')")),
        ?assertEqual(Now ++ ["part_fn_p2030010108", "part_fn_p2030010109", "part_fn_p2030010110",
                             "part_fn_p2030010111", "part_fn_p2030010112"],
                     string:lexemes(Dropped, " ")),
        ?assertEqual(["part_fn_p2030010115", "part_fn_p2030010116", "part_fn_p2030010117"], partitions(T)),
        %% bounds in UTC
        ?assertEqual("t", string:trim(pgev_pg:sql(
            "SELECT substring(b from 'FROM \\(''([^'']*)''\\)')::timestamptz = '2030-01-01 15:00+00' "
            "AND substring(b from 'TO \\(''([^'']*)''\\)')::timestamptz = '2030-01-01 16:00+00' "
            "FROM (SELECT pg_get_expr(relpartbound, oid) b FROM pg_class WHERE relname = 'part_fn_p2030010115') x"))),
        %% a row written late (lo), older than the retention: its partition
        %% is made and not dropped in the same call, the row goes in, and
        %% the next upkeep drops it (it was dead-lettered, kept for good)
        ?assertEqual("5|{}", string:trim(pgev_pg:sql(
            "SELECT created, dropped FROM vmq_pgevents_partitions('" ++ T ++ "', 'hour', 2, 7200, "
            "'2030-01-01 15:00+00', '2030-01-01 10:10+00', '2030-01-01 10:20+00')"))),
        pgev_pg:sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook) "
                    "VALUES ('n', 1, 1, '2030-01-01 10:10+00', 'on_publish')"),
        ?assertEqual("part_fn_p2030010110 part_fn_p2030010111 part_fn_p2030010112", string:trim(pgev_pg:sql(
            "SELECT array_to_string(dropped, ' ') FROM vmq_pgevents_partitions('" ++ T ++ "', 'hour', 2, 7200, "
            "'2030-01-01 15:00+00')"))),
        ?assertEqual(["part_fn_p2030010113", "part_fn_p2030010114", "part_fn_p2030010115",
                      "part_fn_p2030010116", "part_fn_p2030010117"], partitions(T)),
        %% a row stamped 1970 (a clock not yet set) would need hundreds of
        %% thousands: refused, nothing made
        {'EXIT', {{command_failed, _, Refused}, _}} =
            (catch pgev_pg:sql("SELECT created FROM vmq_pgevents_partitions('" ++ T ++ "', 'hour', 2, 7200, "
                               "'2030-01-01 15:00+00', '1970-01-01 00:00:01+00')")),
        ?assertNotEqual(nomatch, binary:match(Refused, <<"would need more than 1000 partitions of part_fn at once">>)),
        ?assertEqual(5, length(partitions(T))),
        %% a plain table is left alone
        pgev_pg:sql("CREATE TABLE IF NOT EXISTS part_fn_plain (ts timestamptz)"),
        ?assertEqual("0|{}", string:trim(pgev_pg:sql(
            "SELECT created, dropped FROM vmq_pgevents_partitions('part_fn_plain', 'day', 2, 1)"))),
        pgev_pg:sql("DROP TABLE part_fn_plain CASCADE"),
        drop(T)
    end}.

%% The plugin with partition = hour: partitions ahead at start, rows land
%% in this hour's; at the next start the retention drops old partitions
%% (counted, logged).
plugin_test_() ->
    {timeout, 120, fun() ->
        T = "part_plugin",
        drop(T),
        pgev_app:start(T, [{partition, hour}, {retention, "2h"}]),
        try
            publish(1000),
            pgev_app:flush(),
            ?assertEqual(1000, scalar("SELECT count(*) FROM " ++ T ++ ?HOOKS)),
            This = string:trim(pgev_pg:sql("SELECT '" ++ T ++ "_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDDHH24')")),
            ?assertEqual(1000, scalar("SELECT count(*) FROM " ++ This ++ ?HOOKS)),
            Ahead = string:trim(pgev_pg:sql("SELECT '" ++ T ++ "_p' || to_char((now() + interval '2 hours') AT TIME ZONE 'UTC', 'YYYYMMDDHH24')")),
            ?assert(lists:member(Ahead, partitions(T))),
            %% partitions of five hours ago (old rows, say)
            pgev_pg:sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'hour', 0, 0, now(), now() - interval '5 hours')"),
            ?assert(length(partitions(T)) >= 8),
            #{partitions_dropped := D0} = vmq_pgevents:status(),
            pgev_app:capture_logs(),
            pgev_app:stop(),
            pgev_app:restart(T, [{partition, hour}, {retention, "2h"}]),
            publish(10),
            pgev_app:flush(),
            #{partitions_dropped := D1} = vmq_pgevents:status(),
            ?assert(D1 - D0 >= 3),                          %% 5, 4 and 3 hours ago at least
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_ | _], [L || L <- Logs, binary:match(L, <<"retention: dropped partition">>) =/= nomatch]),
            ?assertEqual(1010, scalar("SELECT count(*) FROM " ++ T ++ ?HOOKS))
        after
            _ = pgev_app:captured_logs(),
            catch pgev_app:stop()
        end
    end}.

%% Wait until a session whose query carries Tag sleeps in pg_sleep (the
%% statements before it in its transaction done)
sleeping(Tag) -> sleeping(Tag, 500).
sleeping(Tag, 0) -> error({never_sleeping, Tag});
sleeping(Tag, K) ->
    case scalar("SELECT count(*) FROM pg_stat_activity WHERE wait_event = 'PgSleep' "
                "AND query LIKE '%AS " ++ Tag ++ "%' AND pid <> pg_backend_pid()") of
        0 -> timer:sleep(20), sleeping(Tag, K - 1);
        _ -> ok
    end.

%% Sql run by a process of its own; await/1 waits for it to end
session(Sql) ->
    Self = self(),
    spawn_link(fun() -> Self ! {session, catch pgev_pg:sql(Sql)} end),
    ok.
await() ->
    receive {session, R} -> R after 30000 -> error(session_never_ended) end.

%% Two upkeeps at once (two brokers making the same missing partitions
%% after an outage): one waits for the other and both succeed; the one
%% that lost failed on a partition the other had just made, and the rows
%% that needed it were dead-lettered.
concurrent_upkeep_test_() ->
    {timeout, 60, fun() ->
        T = "part_conc",
        new_table(T, "day"),
        Call = "SELECT created FROM vmq_pgevents_partitions('" ++ T ++ "', 'day', 2, 0, '2030-06-01 12:00+00', "
               "'2030-05-22 12:00+00')",
        %% the first has made its 13 (uncommitted) when the second starts
        session("BEGIN; " ++ Call ++ "; SELECT pg_sleep(1.5) AS part_conc; COMMIT"),
        sleeping("part_conc"),
        Second = (catch string:trim(pgev_pg:sql(Call))),
        First = await(),
        ?assertNotMatch({'EXIT', _}, First),
        ?assertEqual("0", Second),
        ?assertEqual(3 + 13, length(partitions(T)))
    end}.

%% Retention waits for nobody (a DROP of a partition takes the whole table
%% first: every write and read queued behind it while it waited): not
%% while a compression runs on the table (its advisory lock, its SHARE
%% lock on the partition it copies), nor more than 500 ms behind a long
%% query. What it leaves goes at the next upkeep.
retention_waits_for_nobody_test_() ->
    {timeout, 60, fun() ->
        T = "part_held",
        new_table(T, "hour"),
        "5|{}" = string:trim(pgev_pg:sql("SELECT created, dropped FROM vmq_pgevents_partitions('" ++ T ++
                                         "', 'hour', 0, 0, '2030-01-01 13:30+00', '2030-01-01 09:10+00')")),
        Retention = "SELECT 'dropped:' || array_to_string(dropped, ' ') FROM vmq_pgevents_partitions('" ++ T ++
                    "', 'hour', 0, 3600, '2030-01-01 13:30+00')",
        Old = fun() -> [P || P <- partitions(T), lists:prefix("part_held_p2030", P)] end,
        %% what it dropped, and its notices
        Run = fun() ->
                      Lines = string:lexemes(pgev_pg:sql(Retention), "\n"),
                      [Line] = [L || "dropped:" ++ L <- Lines],
                      {[P || P <- string:lexemes(Line, " "), lists:prefix("part_held_p2030", P)],
                       [N || "NOTICE:  vmq_pgevents_partitions: " ++ N <- Lines]}
              end,
        %% a compression, as vmq_pgevents_compress holds the table
        session("BEGIN; SELECT pg_advisory_xact_lock(hashtext('vmq_pgevents compress " ++ T ++ "')); "
                "LOCK TABLE part_held_p2030010109 IN SHARE MODE; SELECT count(*) FROM " ++ T ++ "; "
                "SELECT pg_sleep(2) AS part_held_c; COMMIT"),
        sleeping("part_held_c"),
        ?assertEqual({[], ["part_held is being compressed or erased: retention at a later upkeep"]}, Run()),
        await(),
        %% a long query on the table
        session("BEGIN; SELECT count(*) FROM " ++ T ++ "; SELECT pg_sleep(2) AS part_held_q; COMMIT"),
        sleeping("part_held_q"),
        ?assertEqual(["part_held_p2030010109", "part_held_p2030010110", "part_held_p2030010111",
                      "part_held_p2030010112", "part_held_p2030010113"], Old()),
        {[], [InUse]} = Run(),          %% one wait of 500 ms, not one per partition
        ?assertMatch({match, _}, re:run(InUse, "^part_held_p[0-9]+ is in use \\(a long query\\?\\): it and the "
                                               "ones after it at a later upkeep$")),
        await(),
        ?assertEqual({["part_held_p2030010109", "part_held_p2030010110", "part_held_p2030010111"], []}, Run()),
        ?assertEqual(["part_held_p2030010112", "part_held_p2030010113"], Old()),
        %% the caller's lock_timeout is as it was
        ?assertEqual("0", string:trim(pgev_pg:sql("SELECT current_setting('lock_timeout') FROM "
                                                   "vmq_pgevents_partitions('" ++ T ++ "', 'hour', 0, 3600, "
                                                   "'2030-01-01 13:30+00')"))),
        drop(T)
    end}.

%% A row whose partition is missing (dropped by hand here; old events from
%% a journal would be the same): the writer makes it and writes the row;
%% nothing dead-lettered, nothing lost.
missing_partition_test_() ->
    {timeout, 120, fun() ->
        T = "part_missing",
        drop(T),
        pgev_app:start(T, [{partition, hour}]),
        try
            publish(10),
            pgev_app:flush(),
            This = string:trim(pgev_pg:sql("SELECT '" ++ T ++ "_p' || to_char(now() AT TIME ZONE 'UTC', 'YYYYMMDDHH24')")),
            pgev_pg:sql("DROP TABLE " ++ This ++ " CASCADE"),
            #{dead_lettered := Dead0} = vmq_pgevents:status(),
            publish(500),
            pgev_app:flush(),
            ?assertEqual(500, scalar("SELECT count(*) FROM " ++ T ++ ?HOOKS)),
            #{dead_lettered := Dead1} = vmq_pgevents:status(),
            ?assertEqual(Dead0, Dead1)
        after
            pgev_app:stop()
        end
    end}.

%% A plain table from an earlier version: with partition = day nothing is
%% written (one log line with the SQL; events wait), nothing lost; after
%% the README's steps every event is in the partitioned table.
upgrade_from_plain_test_() ->
    {timeout, 180, fun() ->
        T = "part_upgrade",
        drop(T),
        pgev_app:start(T, [{partition, none}]),
        publish(100),
        pgev_app:flush(),
        pgev_app:stop(),
        ?assertEqual(100, scalar("SELECT count(*) FROM " ++ T ++ ?HOOKS)),
        pgev_app:capture_logs(),
        #{write_errors := E0} = vmq_pgevents:status(),       %% the NIF's, so far
        pgev_app:restart(T, []),                             %% partition = day, the default
        try
            publish(50),
            %% refused, and tried again several times (logged once all the same)
            pgev_app:wait_for(plain_table_refused_4_times, fun() ->
                #{write_errors := E, last_error := Err} = vmq_pgevents:status(),
                E - E0 >= 4 andalso binary:match(Err, <<"is a plain table">>) =/= nomatch
            end),
            S = vmq_pgevents:status(),
            ?assertMatch(#{pending := 51, written := _}, S),   %% and the start's row
            ?assertNotEqual(nomatch, binary:match(maps:get(last_error, S), <<"is a plain table">>)),
            Logs = pgev_app:captured_logs(),
            ?assertMatch([_], [L || L <- Logs, binary:match(L, <<"is a plain table">>) =/= nomatch]),
            %% the README's steps: rename; the plugin makes the partitioned
            %% table and writes what waited; then the old rows are moved
            pgev_pg:sql("ALTER TABLE " ++ T ++ " RENAME TO " ++ T ++ "_old; "
                        "ALTER TABLE " ++ T ++ "_dead RENAME TO " ++ T ++ "_old_dead"),
            pgev_app:flush(),
            ?assertEqual(50, scalar("SELECT count(*) FROM " ++ T ++ ?HOOKS)),
            pgev_pg:sql("SELECT vmq_pgevents_partitions('" ++ T ++ "', 'day', 2, 0, now(), "
                        "(SELECT min(ts) FROM " ++ T ++ "_old)); "
                        "INSERT INTO " ++ T ++ " SELECT * FROM " ++ T ++ "_old; "
                        "DROP TABLE " ++ T ++ "_old; DROP TABLE " ++ T ++ "_old_dead"),
            ?assertEqual(150, scalar("SELECT count(*) FROM " ++ T ++ ?HOOKS)),
            ?assertEqual(150, scalar("SELECT count(DISTINCT (incarnation, seq)) FROM " ++ T ++ ?HOOKS))
        after
            _ = pgev_app:captured_logs(),
            catch pgev_app:stop(),
            drop(T)
        end
    end}.

schema_sql() -> pgev_pg:schema_sql().
