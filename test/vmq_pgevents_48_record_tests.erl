%% @doc The plugin's own rows and what they let the record say of itself:
%% pgevents_start (the version and the settings that change what is
%% recorded), pgevents_stop (the last row before a stop), pgevents_crashed
%% (an earlier incarnation that ended without a stop), pgevents_dropped
%% (the seq range, count, reasons and hooks of drops), and
%% <table>_completeness over them. Real NIF, real PostgreSQL.
-module(vmq_pgevents_48_record_tests).
-include_lib("eunit/include/eunit.hrl").

publish(N) ->
    [ok = vmq_pgevents:on_publish(<<"u">>, {"", <<"rec-1">>}, 0, [<<"a">>, <<"b">>],
                                  integer_to_binary(I), false) || I <- lists:seq(1, N)],
    ok.

%% since the table's first row (the tests share one incarnation, the VM's:
%% from its start on, the other tests' rows would be missing here)
completeness(T) ->
    pgev_pg:rows("SELECT ended, first_seq, last_seq, rows_written, rows_dead, missing, missing_ranges "
                 "FROM " ++ T ++ "_completeness((SELECT min(ts) FROM " ++ T ++ "))").

%% a start and a clean stop: the first and the last row of the start,
%% what the start row says, and a record complete from seq 1 to the stop
start_stop_test_() ->
    {timeout, 120, fun() ->
        T = "record_start_stop",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{hooks, "on_publish,on_deliver"}, {payload_topics, "secret/#:none"},
                           {peer_addr, network}, {topic_include, "a/#"}]),
        publish(10),
        pgev_app:stop(),
        {ok, Vsn} = file:consult("ebin/vmq_pgevents.app"),
        [{application, vmq_pgevents, Props}] = Vsn,
        V = list_to_binary(proplists:get_value(vsn, Props)),
        [#{<<"hook">> := <<"pgevents_start">>, <<"seq">> := S, <<"client_id">> := null,
           <<"conn_id">> := null, <<"extra">> := Extra},
         #{<<"hook">> := <<"pgevents_stop">>, <<"seq">> := Stop, <<"extra">> := null}] = pgev_app:plugin_rows(T),
        ?assertEqual(S + 11, Stop),
        ?assertEqual(#{<<"version">> => V, <<"hooks">> => [<<"on_publish">>, <<"on_deliver">>],
                       <<"payload_modes">> => #{}, <<"payload_max_bytes">> => 65536,
                       <<"payload_topics">> => <<"secret/#:none">>, <<"topic_include">> => <<"a/#">>,
                       <<"topic_exclude">> => <<"$SYS/#">>, <<"peer_addr">> => <<"network">>,
                       <<"journal">> => true}, Extra),
        ?assertEqual(Stop, pgev_pg:scalar("SELECT max(seq) FROM " ++ T)),
        ?assertEqual(S, pgev_pg:scalar("SELECT min(seq) FROM " ++ T)),
        ?assertEqual([#{<<"ended">> => <<"stopped">>, <<"first_seq">> => S, <<"last_seq">> => Stop,
                        <<"rows_written">> => 12, <<"rows_dead">> => 0, <<"missing">> => 0,
                        <<"missing_ranges">> => []}], completeness(T))
    end}.

%% hooks called while the plugin is stopped: their numbers come after the
%% stop row, and the next start says so in a pgevents_dropped row; the
%% completeness names the range and the reason
stopped_drops_test_() ->
    {timeout, 120, fun() ->
        T = "record_stopped",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, []),
        publish(3),
        pgev_app:stop(),
        publish(5),
        %% a hook of two arities: told under its name (VerneMQ 2 calls /7)
        [next = vmq_pgevents:on_deliver(<<"u">>, {"", <<"rec-2">>}, 0, [<<"a">>], <<"d">>, false, #{})
         || _ <- [1, 2]],
        pgev_app:restart(T, []),
        publish(2),
        %% the writer says what was dropped a second after the start
        pgev_app:wait_for(drop_row, fun() ->
            pgev_app:flush(),
            [R || #{<<"hook">> := <<"pgevents_dropped">>} = R <- pgev_app:plugin_rows(T)] =/= []
        end),
        [#{<<"seq">> := S} | _] = Plugin = pgev_app:plugin_rows(T),
        [DroppedSeq] = [Q || #{<<"hook">> := <<"pgevents_dropped">>, <<"seq">> := Q} <- Plugin],
        ?assert(DroppedSeq > S + 12 andalso DroppedSeq =< S + 15),
        ?assertEqual([{<<"pgevents_start">>, S, null}, {<<"pgevents_stop">>, S + 4, null},
                      {<<"pgevents_start">>, S + 12, null},
                      {<<"pgevents_dropped">>, DroppedSeq,
                       #{<<"first_seq">> => S + 5, <<"last_seq">> => S + 11, <<"dropped">> => 7,
                         <<"reasons">> => #{<<"stopped">> => 7},
                         <<"hooks">> => #{<<"on_publish">> => 5, <<"on_deliver">> => 2}}}],
                     [{H, Q, case H of <<"pgevents_dropped">> -> E; _ -> null end}
                      || #{<<"hook">> := H, <<"seq">> := Q, <<"extra">> := E} <- Plugin]),
        ?assertEqual([#{<<"ended">> => <<"running">>, <<"first_seq">> => S, <<"last_seq">> => S + 15,
                        <<"rows_written">> => 9, <<"rows_dead">> => 0, <<"missing">> => 7,
                        <<"missing_ranges">> => [#{<<"from">> => S + 5, <<"to">> => S + 11, <<"count">> => 7,
                                                   <<"why">> => <<"dropped: stopped">>}]}],
                     completeness(T)),
        pgev_app:stop()
    end}.

%% a running marker of another incarnation in the journal's directory (a
%% start that never stopped) gives a pgevents_crashed row naming it
crashed_test_() ->
    {timeout, 120, fun() ->
        T = "record_crashed",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        Dir = pgev_app:spool_dir(T),
        os:cmd("rm -rf '" ++ Dir ++ "'"),
        ok = filelib:ensure_dir(filename:join(Dir, "x")),
        ok = file:write_file(filename:join(Dir, "running"), <<"1700000000000000\n">>),
        pgev_app:restart(T, []),
        {ok, Marker} = file:read_file(filename:join(Dir, "running")),
        #{incarnation := Inc} = vmq_pgevents:status(),
        ?assertEqual(integer_to_binary(Inc), string:trim(Marker)),
        pgev_app:flush(),
        [#{<<"hook">> := <<"pgevents_start">>, <<"seq">> := S},
         #{<<"hook">> := <<"pgevents_crashed">>, <<"seq">> := S2,
           <<"extra">> := #{<<"incarnation">> := 1700000000000000}}] = pgev_app:plugin_rows(T),
        ?assertEqual(S + 1, S2),
        pgev_app:stop(),
        %% a clean stop takes the marker away
        ?assertEqual({error, enoent}, file:read_file(filename:join(Dir, "running")))
    end}.

%% a pgevents_running row every running_row_every_ms: once retention has
%% taken the start row, a connection without an end row is still known to
%% be open and its incarnation to run
running_test_() ->
    {timeout, 120, fun() ->
        T = "record_running",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, [{running_row_every_ms, 1000}]),
        S = {"", <<"rec-open">>},
        next = vmq_pgevents:auth_on_register({{127, 0, 0, 1}, 1}, S, <<"u">>, <<"pw">>, true),
        ok = vmq_pgevents:on_register({{127, 0, 0, 1}, 1}, S, <<"u">>),
        Running = fun() -> [R || #{<<"hook">> := <<"pgevents_running">>} = R <- pgev_app:plugin_rows(T)] end,
        pgev_app:wait_for(running_rows, fun() -> pgev_app:flush(), length(Running()) >= 2 end),
        [#{<<"extra">> := E, <<"client_id">> := null, <<"conn_id">> := null, <<"mountpoint">> := null} | _] = Running(),
        ?assertEqual(#{<<"every_ms">> => 1000}, E),
        Ended = fun() -> string:trim(pgev_pg:sql(
                             "SELECT ended_how || ' ' || (SELECT ended FROM " ++ T ++ "_completeness(now() - interval '1 hour')) "
                             "FROM " ++ T ++ "_connections WHERE client_id = 'rec-open'"))
                end,
        ?assertEqual("open running", Ended()),
        %% retention drops the partition that held the start row
        pgev_pg:sql("DELETE FROM " ++ T ++ " WHERE hook = 'pgevents_start'"),
        ?assertEqual("open running", Ended()),
        pgev_app:stop(),
        ?assertEqual("node stopped stopped", Ended()),
        %% none after the stop row
        ?assertEqual("t", string:trim(pgev_pg:sql(
                              "SELECT max(seq) FILTER (WHERE hook = 'pgevents_running') < "
                              "max(seq) FILTER (WHERE hook = 'pgevents_stop') FROM " ++ T)))
    end}.

%% ts is taken as a hook is called, the number as its event is queued: a
%% row numbered after the first one since `since' may have a ts just
%% before it, and is no gap
boundary_test_() ->
    {timeout, 60, fun() ->
        T = "record_boundary",
        pgev_pg:sql("DROP TABLE IF EXISTS " ++ T ++ " CASCADE"),
        pgev_app:start(T, []),
        pgev_app:wait_for(start_row, fun() ->
            pgev_app:flush(),
            case catch pgev_app:plugin_rows(T) of [_ | _] -> true; _ -> false end
        end),
        pgev_app:stop(),
        %% a minute of today (UTC: the partitions' days), taken once
        Since = "'" ++ string:trim(pgev_pg:sql(
                           "SELECT greatest(date_trunc('minute', now()), "
                           "(date_trunc('day', now() AT TIME ZONE 'UTC') + interval '1 minute') AT TIME ZONE 'UTC')"))
                ++ "'::timestamptz",
        pgev_pg:sql("INSERT INTO " ++ T ++ " (node, incarnation, seq, ts, hook, client_id) VALUES "
                    "('b', 1, 1, " ++ Since ++ " - interval '1 s', 'on_publish', 'c'), "
                    "('b', 1, 2, " ++ Since ++ ", 'on_publish', 'c'), "
                    "('b', 1, 3, " ++ Since ++ " - interval '1 ms', 'on_publish', 'c'), "
                    "('b', 1, 4, " ++ Since ++ " + interval '1 ms', 'on_publish', 'c'), "
                    "('b', 1, 6, " ++ Since ++ " + interval '2 ms', 'on_publish', 'c'), "
                    %% (not possible from the plugin: past the last row since then)
                    "('b', 1, 8, " ++ Since ++ " - interval '30 s', 'on_publish', 'c')"),
        ?assertEqual([#{<<"first_seq">> => 2, <<"last_seq">> => 6, <<"rows_written">> => 3, <<"missing">> => 1,
                        <<"missing_ranges">> => [#{<<"from">> => 5, <<"to">> => 5, <<"count">> => 1,
                                                   <<"why">> => <<"not yet written">>}]}],
                     pgev_pg:rows("SELECT first_seq, last_seq, rows_written, missing, missing_ranges FROM " ++ T ++
                                  "_completeness(" ++ Since ++ ") WHERE node = 'b'"))
    end}.
